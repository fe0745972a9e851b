//! Threads: a step's matrix products split by weight rows over several threads give the same
//! bits as one thread, for every fixture model, both numeric modes, any thread count and any
//! budget, one text or a batch; a host that leaves a part unrun fails the step.

mod common;

use common::engine::load;
use stepembed::core::engine::{Input, Job, JobOptions, Limits, Mode, Parallel, Part, Plan, Sequential, Step};
use stepembed::core::io::SliceSource;
use stepembed::core::model::Model;
use stepembed::core::tokenizer::Lookup;
use stepembed::core::Error;
use stepembed::{Embedder, EmbedderOptions, Threads};

/// Every committed model, encoders and decoders.
const ALL_MODELS: &[&str] = &[
    "minilm-l6-Q4_K_M",
    "bert-tiny-F16",
    "bert-tiny-Q8_0",
    "bert-synth-2L-Q4_K_M",
    "nomic-small-2L-Q4_K_M",
    "gemma-emb-tiny-3L-Q4_K_M",
    "gemma-emb-tiny-2L-Q8_0",
    "qwen3-tiny-2L-Q4_K_M",
    "qwen2-tiny-2L-Q4_K_M",
];

/// Runs the parts last to first on the calling thread (a split must not depend on the order).
struct Reversed;

impl Parallel for Reversed {
    fn run(&self, parts: &mut [Part<'_>]) {
        parts.iter_mut().rev().for_each(Part::run);
    }
}

/// A broken host: never runs the last part.
struct SkipsOne;

impl Parallel for SkipsOne {
    fn run(&self, parts: &mut [Part<'_>]) {
        let n = parts.len().saturating_sub(1);
        parts.iter_mut().take(n).for_each(Part::run);
    }
}

/// Runs a job on `input` to the end with `par`; the embeddings and how many steps split a
/// product (seen as the runner being handed more than one part).
fn run(
    model: Model<'_>,
    plan: &Plan,
    bytes: &[u8],
    input: Input<'_>,
    options: JobOptions,
    par: &dyn Parallel,
) -> Result<Vec<f32>, Error> {
    let mut arena = vec![0u8; plan.arena_bytes()];
    let mut job = Job::new(model, plan, &mut arena, input, Lookup::Scan, options)?;
    let mut io = SliceSource::new(bytes);
    loop {
        if let Step::Done(e) = job.step_parallel(&mut io, par)? {
            return Ok(e.to_vec());
        }
    }
}

/// Counts the parts it is handed (and runs them in order).
struct Counting(std::sync::atomic::AtomicUsize);

impl Parallel for Counting {
    fn run(&self, parts: &mut [Part<'_>]) {
        self.0.fetch_max(parts.len(), std::sync::atomic::Ordering::Relaxed);
        Sequential.run(parts);
    }
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

#[test]
fn any_thread_count_and_budget_gives_the_same_bits() {
    let texts = common::texts();
    let long = texts.iter().max_by_key(|t| t.len()).unwrap().as_str();
    let batch: Vec<&str> = texts.iter().take(4).map(String::as_str).collect();
    // Products too small to pay for a hand-over run whole (bert-tiny's 128-wide ones): the
    // larger models must have been split.
    let mut split_seen = std::collections::HashSet::new();
    for model in common::MODELS {
        let bytes = common::read(&format!("models/{model}.gguf"));
        let (meta, layers) = load(&bytes);
        let m = Model::new(meta, &layers).unwrap();
        for mode in [Mode::Exact, Mode::Fast] {
            let limits = Limits { max_tokens: meta.hparams.n_ctx.min(512), max_texts: 4 };
            let plan = Plan::lean(&m, limits).unwrap().with_mode(mode).unwrap();
            let options = JobOptions { mode, ..JobOptions::default() };
            for input in [Input::Text(long), Input::Texts(&batch)] {
                let one = run(m, &plan, &bytes, input, options, &Sequential).unwrap();
                for n in [2, 3] {
                    let threads = Threads::new(n).unwrap();
                    let split = plan.with_threads(n).unwrap();
                    assert_eq!(split.threads(), n);
                    assert!(split.arena_bytes() > plan.arena_bytes());
                    for budget in [JobOptions::default().budget, 300_000, u64::MAX] {
                        let small = budget == 300_000;
                        let options = JobOptions { budget, ..options };
                        let counted = Counting(0.into());
                        let runners = [&threads as &dyn Parallel, &Reversed, &counted];
                        // Tiny steps (a row or two each) through the thread pool only.
                        for par in runners.into_iter().take(if small { 1 } else { 3 }) {
                            let got = run(m, &split, &bytes, input, options, par).unwrap();
                            assert_eq!(
                                bits(&got),
                                bits(&one),
                                "{model} {mode:?} {n} threads, budget {budget}"
                            );
                        }
                        // A budget of a row or two per step leaves nothing to split.
                        if !small && counted.0.into_inner() >= 2 {
                            split_seen.insert((*model, mode));
                        }
                    }
                }
            }
        }
    }
    for model in ["minilm-l6-Q4_K_M", "nomic-small-2L-Q4_K_M"] {
        for mode in [Mode::Exact, Mode::Fast] {
            assert!(split_seen.contains(&(model, mode)), "{model} {mode:?}: no product was split");
        }
    }
}

#[test]
fn a_part_left_unrun_fails_the_step() {
    let bytes = common::read("models/minilm-l6-Q4_K_M.gguf");
    let (meta, layers) = load(&bytes);
    let m = Model::new(meta, &layers).unwrap();
    let plan = Plan::lean(&m, Limits::tokens(128)).unwrap().with_threads(2).unwrap();
    // Long enough for its products to be split.
    let text = "a man is playing a guitar on stage ".repeat(12);
    let got = run(m, &plan, &bytes, Input::Text(&text), JobOptions::default(), &SkipsOne);
    assert_eq!(got, Err(Error::InvalidState));
}

#[test]
fn plans_for_one_thread_are_unchanged_and_threads_are_clamped() {
    let bytes = common::read("models/minilm-l6-Q4_K_M.gguf");
    let (meta, layers) = load(&bytes);
    let m = Model::new(meta, &layers).unwrap();
    let plan = Plan::new(&m, Limits::tokens(128)).unwrap();
    assert_eq!(plan.threads(), 1);
    assert_eq!(plan.with_threads(1).unwrap(), plan);
    assert_eq!(plan.with_threads(0).unwrap(), plan);
    let most = plan.with_threads(1000).unwrap();
    assert_eq!(most.threads(), stepembed::core::engine::MAX_PARTS);
    // The extra room is exact: one 64 KiB tile and one decode scratch per extra part.
    let two = plan.with_threads(2).unwrap();
    let three = plan.with_threads(3).unwrap();
    let per_part = three.arena_bytes() - two.arena_bytes();
    assert_eq!(two.arena_bytes() - plan.arena_bytes(), per_part);
    assert!(per_part >= 64 * 1024);
}

#[test]
fn embedders_with_any_thread_count_agree_bit_for_bit() {
    let texts = common::texts();
    // Texts the fixtures can embed (the empty text has no tokens with the decoders' files).
    let texts: Vec<&str> = texts.iter().map(String::as_str).filter(|t| !t.trim().is_empty()).collect();
    for model in ALL_MODELS {
        let path = common::fixture(&format!("models/{model}.gguf"));
        for mode in [Mode::Exact, Mode::Fast] {
            let embed = |threads| {
                let options =
                    EmbedderOptions { mode, threads, max_tokens: Some(256), ..EmbedderOptions::default() };
                let mut e = Embedder::open_with(&path, options).unwrap();
                assert_eq!(e.plan().threads(), threads.max(1));
                e.embed_batch(&texts).unwrap()
            };
            let one = embed(1);
            for n in [2, 3] {
                let got = embed(n);
                for (a, b) in one.iter().zip(&got) {
                    assert_eq!(bits(a), bits(b), "{model} {mode:?} {n} threads");
                }
            }
        }
    }
}

/// `embed_batch` with several threads runs its jobs (here 3 texts each) in rounds, one job per
/// thread, each on an arena of its own: the same bits as one thread, every job's steps counted,
/// the workers' arenas in `memory_bytes` from the start. An embedder made from a source it cannot reopen splits
/// rows only.
#[test]
fn batch_calls_spread_their_jobs_over_the_threads_with_the_same_bits() {
    let texts = common::texts();
    let texts: Vec<&str> = texts.iter().map(String::as_str).filter(|t| !t.trim().is_empty()).collect();
    for model in ["minilm-l6-Q4_K_M", "qwen3-tiny-2L-Q4_K_M"] {
        let path = common::fixture(&format!("models/{model}.gguf"));
        for mode in [Mode::Exact, Mode::Fast] {
            let options = |threads| EmbedderOptions {
                mode,
                threads,
                max_texts: 3,
                max_tokens: Some(256),
                ..EmbedderOptions::default()
            };
            let mut one = Embedder::open_with(&path, options(1)).unwrap();
            assert_eq!(one.texts_at_once(), 3);
            let want = one.embed_batch(&texts).unwrap();
            // Jobs of at most 3 texts and 256 tokens.
            let jobs = one.step_stats().jobs();
            assert!(jobs >= texts.len().div_ceil(3) as u64);
            for n in [2, 3] {
                let mut e = Embedder::open_with(&path, options(n)).unwrap();
                assert_eq!(e.texts_at_once(), 3 * n, "{model} {mode:?} {n} threads");
                let got = e.embed_batch(&texts).unwrap();
                assert_eq!(got.len(), want.len());
                for (i, (a, b)) in want.iter().zip(&got).enumerate() {
                    assert_eq!(bits(a), bits(b), "{model} {mode:?} {n} threads, text {i}");
                }
                // An arena per thread, planned for one thread, and one vocab index.
                assert_eq!(
                    e.memory_bytes(),
                    e.plan().arena_bytes() + e.plan().index_bytes() + (n - 1) * one.plan().arena_bytes()
                );
                // Every job counted.
                let ids: Vec<Vec<u32>> = texts.iter().map(|t| e.tokenize(t).unwrap()).collect();
                assert_eq!(e.step_stats().jobs(), e.batches(&ids).len() as u64);
                // Again on the workers started: the same.
                assert_eq!(e.embed_batch(&texts).unwrap(), want);
            }
            let source = stepembed::io::open(&path).unwrap();
            let rows = Embedder::from_source(source, options(2)).unwrap();
            assert_eq!(rows.texts_at_once(), 3);
        }
    }
}

#[test]
fn the_default_is_the_available_cores() {
    assert_eq!(EmbedderOptions::default().threads, Threads::available());
    assert!(Threads::available() >= 1);
    assert_eq!(Threads::new(0).unwrap().count(), 1);
}

#[test]
fn the_cli_gives_the_same_output_for_any_thread_count() {
    let model = common::fixture("models/minilm-l6-Q4_K_M.gguf");
    let text = common::texts().into_iter().max_by_key(String::len).unwrap();
    let embed = |threads: &str, mode: &str| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_stepembed"))
            .args([
                "embed",
                model.to_str().unwrap(),
                &text,
                "a short one",
                "--threads",
                threads,
                "--mode",
                mode,
            ])
            .args(["--stats"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let stderr = String::from_utf8(out.stderr).unwrap();
        let stats: serde_json::Value = serde_json::from_str(stderr.lines().last().unwrap()).unwrap();
        assert_eq!(stats["threads"], threads.parse::<u64>().unwrap(), "{stderr}");
        out.stdout
    };
    for mode in ["exact", "fast"] {
        let one = embed("1", mode);
        assert!(!one.is_empty());
        assert_eq!(embed("2", mode), one, "{mode}");
        assert_eq!(embed("3", mode), one, "{mode}");
    }
    let bad = std::process::Command::new(env!("CARGO_BIN_EXE_stepembed"))
        .args(["embed", model.to_str().unwrap(), "x", "--threads", "0"])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2), "--threads 0 is a usage error");
}

/// `embed` spreads a window's batches (16 texts each by default) over as many embedders as
/// threads, one job per thread: the same rows, in the same order, as one thread.
#[test]
fn the_cli_spreads_batches_over_threads_with_the_same_bits() {
    let dir = std::env::temp_dir().join(format!("stepembed-threads-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let input = dir.join("texts.jsonl");
    let texts = common::texts();
    // 45 texts of mixed lengths: three batches and a part.
    let lines: String = (0..45)
        .map(|i| serde_json::json!({ "text": texts[i % texts.len()], "id": i }).to_string() + "\n")
        .collect();
    std::fs::write(&input, lines).unwrap();
    for model in ["minilm-l6-Q4_K_M", "qwen3-tiny-2L-Q4_K_M"] {
        let path = common::fixture(&format!("models/{model}.gguf"));
        let embed = |threads: &str, mode: &str| {
            let out = std::process::Command::new(env!("CARGO_BIN_EXE_stepembed"))
                .args(["embed", path.to_str().unwrap(), "--input", input.to_str().unwrap()])
                .args(["--threads", threads, "--mode", mode, "--stats"])
                .output()
                .unwrap();
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
            let stderr = String::from_utf8(out.stderr).unwrap();
            let stats: serde_json::Value = serde_json::from_str(stderr.lines().last().unwrap()).unwrap();
            assert_eq!(stats["texts"], 45, "{stderr}");
            out.stdout
        };
        for mode in ["exact", "fast"] {
            let one = embed("1", mode);
            let ids: Vec<u64> = String::from_utf8(one.clone())
                .unwrap()
                .lines()
                .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["id"].as_u64().unwrap())
                .collect();
            assert_eq!(ids, (0..45).collect::<Vec<u64>>(), "{model} {mode}: rows in input order");
            assert_eq!(embed("2", mode), one, "{model} {mode}, 2 threads");
            assert_eq!(embed("3", mode), one, "{model} {mode}, 3 threads");
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
