//! The circuit breakers of `stepembed::breaker` (memory cap, deadline, bounded queue, step-time
//! target, partial batches) and the async batch API on two executors, each one tripped.

mod common;

use std::cell::Cell;
use std::future::Future;
use std::pin::pin;
use std::task::{Context, Waker};
use std::time::Duration;

use stepembed::breaker::{QueueLimit, StepTuner};
use stepembed::{Embedder, EmbedderOptions, Error};

const TEXTS: [&str; 3] = ["Hello world", "The quick brown fox jumps over the lazy dog.", "naïve café"];

fn model(name: &str) -> std::path::PathBuf {
    common::fixture(&format!("models/{name}.gguf"))
}

fn open(options: EmbedderOptions) -> Embedder {
    Embedder::open_with(model("minilm-l6-Q4_K_M"), options).unwrap()
}

fn long_text() -> String {
    "word ".repeat(600)
}

#[test]
fn a_memory_cap_too_small_is_a_typed_error() {
    let err = Embedder::open_with(
        model("minilm-l6-Q4_K_M"),
        EmbedderOptions { memory: Some(1000), ..Default::default() },
    )
    .unwrap_err();
    assert_eq!(err.code(), "MEMORY", "{err}");
    let fits = open(EmbedderOptions { memory: Some(2_000_000), max_tokens: Some(64), ..Default::default() });
    assert!(fits.memory_bytes() <= 2_000_000, "{}", fits.memory_bytes());
}

#[test]
fn a_passed_deadline_times_out_and_the_embedder_stays_usable() {
    let mut e = open(EmbedderOptions { timeout: Some(Duration::from_nanos(1)), ..Default::default() });
    for err in [e.embed(&long_text()).unwrap_err(), e.embed_batch(&TEXTS).unwrap_err()] {
        assert!(matches!(err, Error::Timeout), "{err}");
        assert_eq!(err.code(), "TIMEOUT");
    }
    let mut unlimited = open(EmbedderOptions::default());
    let expected = unlimited.embed(TEXTS[0]).unwrap();
    // A job stepped by the host times out too; afterwards the embedder still embeds.
    let mut job = e.job(stepembed::core::engine::Input::Text(TEXTS[0])).unwrap();
    assert!(matches!(job.step(), Err(Error::Timeout)));
    let mut relaxed = open(EmbedderOptions { timeout: Some(Duration::from_secs(600)), ..Default::default() });
    assert_eq!(relaxed.embed(TEXTS[0]).unwrap(), expected);
}

#[test]
fn a_full_queue_is_busy_at_once() {
    let mut limit = QueueLimit::new(2);
    limit.admit().unwrap();
    limit.admit().unwrap();
    let err = limit.admit().unwrap_err();
    assert!(matches!(err, Error::Busy { max_queue: 2 }), "{err}");
    assert_eq!(err.code(), "BUSY");
    limit.release();
    limit.admit().unwrap();
    assert_eq!(limit.outstanding(), 2);
}

#[test]
fn the_step_tuner_scales_the_budget_toward_the_target() {
    let target = Duration::from_millis(1);
    let mut t = StepTuner::new(target, 8_000_000);
    // The first step recalibrates at once: 4 ms measured → a quarter of the budget.
    t.record(Duration::from_millis(4));
    assert_eq!(t.budget(), 2_000_000);
    // Then windows of WINDOW steps, by their median.
    for i in 0..StepTuner::WINDOW - 1 {
        t.record(Duration::from_micros(if i % 5 == 0 { 9000 } else { 500 }));
        assert_eq!(t.budget(), 2_000_000);
    }
    t.record(Duration::from_micros(500));
    assert_eq!(t.budget(), 4_000_000);
    // At most MAX_FACTOR per adjustment, and never outside the bounds.
    for _ in 0..StepTuner::WINDOW {
        t.record(Duration::from_nanos(1));
    }
    assert_eq!(t.budget(), 32_000_000);
    for _ in 0..10 * StepTuner::WINDOW {
        t.record(Duration::from_secs(1));
    }
    assert_eq!(t.budget(), StepTuner::MIN_BUDGET);
}

fn tuned_options() -> EmbedderOptions {
    EmbedderOptions { step_target: Some(Duration::from_micros(200)), ..Default::default() }
}

#[test]
fn a_step_target_recalibrates_without_changing_results() {
    let mut plain = open(EmbedderOptions::default());
    let mut tuned =
        open(EmbedderOptions { step_target: Some(Duration::from_micros(200)), ..Default::default() });
    for text in TEXTS {
        assert_eq!(tuned.embed(text).unwrap(), plain.embed(text).unwrap());
    }
    assert_ne!(tuned.options().budget, plain.options().budget, "the first step recalibrates");
    // Within a job too: one long text's job is not stepped at the starting budget throughout.
    let long = long_text();
    let steps = |e: &mut Embedder| {
        let before = e.step_stats().steps();
        let v = e.embed(&long).unwrap();
        (v, e.step_stats().steps() - before)
    };
    let (fresh_tuned, fresh_plain) = (&mut open(tuned_options()), &mut open(EmbedderOptions::default()));
    let ((v_tuned, steps_tuned), (v_plain, steps_plain)) = (steps(fresh_tuned), steps(fresh_plain));
    assert_eq!(v_tuned, v_plain);
    assert_ne!(steps_tuned, steps_plain);
    assert!(tuned.step_stats().steps() > 0 && tuned.step_stats().max() >= tuned.step_stats().p99());
}

#[test]
fn one_failing_text_does_not_lose_the_others_unless_failing_fast() {
    let mut e = open(EmbedderOptions { truncate: false, max_tokens: Some(64), ..Default::default() });
    let long = long_text();
    let texts = [TEXTS[0], long.as_str(), TEXTS[1]];
    let each = e.embed_batch_each(&texts).unwrap();
    assert_eq!(each.len(), 3);
    assert_eq!(each[0].as_ref().unwrap(), &e.embed(TEXTS[0]).unwrap());
    assert_eq!(each[1].as_ref().unwrap_err().code(), "TOO_LONG");
    assert_eq!(each[2].as_ref().unwrap(), &e.embed(TEXTS[1]).unwrap());
    assert_eq!(e.embed_batch(&texts).unwrap_err().code(), "TOO_LONG");
}

#[test]
fn batch_async_matches_blocking_on_two_executors() {
    let mut e = open(EmbedderOptions::default());
    let blocking = e.embed_batch(&TEXTS).unwrap();
    assert_eq!(futures_lite::future::block_on(e.embed_batch_async(&TEXTS)).unwrap(), blocking);
    let tokio = tokio::runtime::Builder::new_current_thread().build().unwrap();
    assert_eq!(tokio.block_on(e.embed_batch_async(&TEXTS)).unwrap(), blocking);
}

/// `future`, counting its polls in `polls`.
async fn counted<F: Future>(future: F, polls: &Cell<u32>) -> F::Output {
    let mut future = pin!(future);
    std::future::poll_fn(|cx| {
        polls.set(polls.get() + 1);
        future.as_mut().poll(cx)
    })
    .await
}

#[test]
fn two_batch_futures_interleave_on_one_thread() {
    let mut a = open(EmbedderOptions { budget: 200_000, ..Default::default() });
    let mut b = open(EmbedderOptions { budget: 200_000, ..Default::default() });
    let expected = a.embed_batch(&TEXTS).unwrap();
    let (polls_a, polls_b) = (Cell::new(0), Cell::new(0));
    let b_polls_when_a_done = Cell::new(0);
    let first = async {
        let v = counted(a.embed_batch_async(&TEXTS), &polls_a).await;
        b_polls_when_a_done.set(polls_b.get());
        v
    };
    let second = counted(b.embed_batch_async(&TEXTS), &polls_b);
    let tokio = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let (va, vb) = tokio.block_on(async { futures_lite::future::zip(first, second).await });
    assert_eq!(va.unwrap(), expected);
    assert_eq!(vb.unwrap(), expected);
    // Both made progress before either finished.
    assert!(polls_a.get() > 10 && b_polls_when_a_done.get() > 10, "{polls_a:?} {b_polls_when_a_done:?}");
}

#[test]
fn dropping_a_batch_future_mid_job_leaves_the_embedder_usable() {
    let mut e = open(EmbedderOptions { budget: 200_000, ..Default::default() });
    let expected = e.embed_batch(&TEXTS).unwrap();
    {
        let mut future = pin!(e.embed_batch_async(&TEXTS));
        let mut cx = Context::from_waker(Waker::noop());
        for _ in 0..20 {
            assert!(future.as_mut().poll(&mut cx).is_pending(), "finished within 20 steps");
        }
    }
    assert_eq!(e.embed_batch(&TEXTS).unwrap(), expected);
    assert_eq!(futures_lite::future::block_on(e.embed_batch_async(&TEXTS)).unwrap(), expected);
}
