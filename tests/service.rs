//! `stepembed::service`: requests from many callers coalesced into shared jobs, with the bounded
//! queue, deadlines, cancellation and close.

mod common;

use std::time::Duration;

use stepembed::service::{serve, Completion, Inbox, ServiceOptions, Work};
use stepembed::{Embedder, EmbedderOptions, Error};

fn embedder() -> Embedder {
    Embedder::open(common::fixture("models/minilm-l6-Q4_K_M.gguf")).unwrap()
}

/// Serves `inbox` until `expected` completions arrived; returns them in arrival order.
fn serve_until(embedder: &mut Embedder, inbox: &Inbox, expected: usize) -> Vec<Completion> {
    let mut out = Vec::new();
    futures_lite::future::block_on(serve(embedder, inbox, |c| {
        out.push(c);
        if out.len() == expected {
            inbox.close();
        }
    }));
    out
}

fn texts(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("text number {i}")).collect()
}

#[test]
fn concurrent_requests_share_jobs_and_equal_single_embeddings() {
    let mut e = embedder();
    let expected: Vec<Vec<f32>> = texts(40).iter().map(|t| e.embed(t).unwrap()).collect();
    let jobs_before = e.step_stats().jobs();
    let inbox = Inbox::new(ServiceOptions::default());
    let ids: Vec<u64> = texts(40).into_iter().map(|t| inbox.submit(Work::Embed, vec![t]).unwrap()).collect();
    let done = serve_until(&mut e, &inbox, 40);
    assert_eq!(done.len(), 40);
    for c in done {
        let i = ids.iter().position(|&id| id == c.id).unwrap();
        let texts = c.result.unwrap();
        let v = &texts[0].as_ref().unwrap().embedding;
        let max = v.iter().zip(&expected[i]).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        assert!(max <= 1e-6, "text {i}: {max}");
    }
    // 40 texts, at most 16 per job.
    assert_eq!(e.step_stats().jobs() - jobs_before, 3);
    let stats = inbox.stats();
    assert_eq!((stats.done, stats.outstanding, stats.jobs), (40, 0, e.step_stats().jobs()));
}

#[test]
fn tokenize_requests_and_per_text_failures() {
    let mut e = Embedder::open_with(
        common::fixture("models/minilm-l6-Q4_K_M.gguf"),
        EmbedderOptions { truncate: false, max_tokens: Some(16), ..Default::default() },
    )
    .unwrap();
    let inbox = Inbox::new(ServiceOptions::default());
    let long = "word ".repeat(50);
    inbox.submit(Work::Tokenize, vec!["Hello world".into()]).unwrap();
    inbox.submit(Work::Embed, vec!["Hello world".into(), long]).unwrap();
    let done = serve_until(&mut e, &inbox, 2);
    let tokens = done[0].result.as_ref().unwrap()[0].as_ref().unwrap();
    assert_eq!(tokens.tokens.ids, [101, 7592, 2088, 102]);
    assert!(tokens.embedding.is_empty());
    let batch = done[1].result.as_ref().unwrap();
    assert_eq!(batch[0].as_ref().unwrap().embedding, e.embed("Hello world").unwrap());
    assert_eq!(batch[1].as_ref().unwrap_err().code(), "TOO_LONG");
}

#[test]
fn busy_cancelled_timed_out_and_closed() {
    let mut e = embedder();
    let inbox = Inbox::new(ServiceOptions { max_queue: 2, ..Default::default() });
    let cancelled = inbox.submit(Work::Embed, texts(1)).unwrap();
    let kept = inbox.submit(Work::Embed, texts(1)).unwrap();
    let err = inbox.submit(Work::Embed, texts(1)).unwrap_err();
    assert!(matches!(err, Error::Busy { max_queue: 2 }), "{err}");
    inbox.cancel(cancelled);
    let done = serve_until(&mut e, &inbox, 2);
    let by_id = |id| done.iter().find(|c| c.id == id).unwrap();
    assert!(matches!(by_id(cancelled).result, Err(Error::Aborted)));
    assert!(by_id(kept).result.as_ref().unwrap()[0].is_ok());
    assert!(matches!(inbox.submit(Work::Embed, texts(1)), Err(Error::Closed)));

    let inbox = Inbox::new(ServiceOptions { timeout: Some(Duration::from_nanos(1)), ..Default::default() });
    let id = inbox.submit(Work::Embed, texts(3)).unwrap();
    let done = serve_until(&mut e, &inbox, 1);
    assert_eq!(done[0].id, id);
    assert_eq!(done[0].result.as_ref().unwrap_err().code(), "TIMEOUT");
    assert_eq!(inbox.stats().outstanding, 0);
}
