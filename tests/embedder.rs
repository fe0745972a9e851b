//! The std adapter: `Embedder` (blocking, batch, async, step-wise) and the `embed` / `tokenize`
//! commands.

mod common;

use std::cell::Cell;
use std::process::Command;

use common::engine::{cases, compare};
use stepembed::core::engine::{Input, Step};
use stepembed::{Embedder, EmbedderOptions};

fn model(name: &str) -> std::path::PathBuf {
    common::fixture(&format!("models/{name}.gguf"))
}

#[test]
fn embed_and_batch_match_the_reference() {
    let mut e = Embedder::open(model("minilm-l6-Q4_K_M")).unwrap();
    let all = cases(&common::fixture("reference/minilm-l6-Q4_K_M.jsonl"));
    for case in &all {
        let v = e.embed(&case.text).unwrap();
        let (cos, max) = compare(&v, &case.embedding);
        assert!(cos >= 0.99999 && max <= 1e-4, "{:?}: cos {cos} max {max}", case.text);
        assert_eq!(e.tokenize(&case.text).unwrap(), case.ids, "{:?}", case.text);
    }
    let texts: Vec<&str> = all.iter().map(|c| c.text.as_str()).collect();
    let batch = e.embed_batch(&texts).unwrap();
    assert_eq!(batch.len(), texts.len());
    for (v, case) in batch.iter().zip(&all) {
        let (cos, max) = compare(v, &case.embedding);
        assert!(cos >= 0.99999 && max <= 1e-4, "batch {:?}: cos {cos} max {max}", case.text);
    }
}

#[test]
fn a_small_memory_budget_picks_the_small_plan() {
    let fast = Embedder::open(model("nomic-small-2L-Q4_K_M")).unwrap();
    let options = EmbedderOptions { memory: Some(400_000), max_tokens: Some(64), ..Default::default() };
    let mut small = Embedder::open_with(model("nomic-small-2L-Q4_K_M"), options).unwrap();
    assert!(small.memory_bytes() <= 400_000, "{}", small.memory_bytes());
    assert_eq!(small.plan().index_bytes(), 0, "the small plan streams the vocab");
    assert!(small.memory_bytes() < fast.memory_bytes());
    let case = &cases(&common::fixture("reference/nomic-small-2L-Q4_K_M.jsonl"))[1];
    let (cos, max) = compare(&small.embed(&case.text).unwrap(), &case.embedding);
    assert!(cos >= 0.99999 && max <= 1e-4);
    let err = Embedder::open_with(
        model("nomic-small-2L-Q4_K_M"),
        EmbedderOptions { memory: Some(1000), ..Default::default() },
    )
    .unwrap_err();
    assert!(err.to_string().contains("arena too small"), "{err}");
    // Limits no plan can be made for are a typed error, never a panic.
    for max_tokens in [0, 1] {
        let options = EmbedderOptions { max_tokens: Some(max_tokens), ..Default::default() };
        let err = Embedder::open_with(model("nomic-small-2L-Q4_K_M"), options).unwrap_err();
        assert!(err.to_string().contains("at least 2 tokens"), "{err}");
    }
}

#[test]
fn async_embedding_yields_between_steps() {
    let mut e = Embedder::open_with(
        model("bert-tiny-Q8_0"),
        EmbedderOptions { budget: 20_000, ..Default::default() },
    )
    .unwrap();
    let blocking = e.embed("The quick brown fox jumps over the lazy dog.").unwrap();
    let ticks = Cell::new(0u32);
    let done = Cell::new(false);
    let embedding = async {
        let v = e.embed_async("The quick brown fox jumps over the lazy dog.").await;
        done.set(true);
        v
    };
    // Another task on the same single-threaded executor keeps running while the embedding does.
    let other = async {
        while !done.get() {
            ticks.set(ticks.get() + 1);
            futures_lite::future::yield_now().await;
        }
    };
    let (v, ()) = futures_lite::future::block_on(futures_lite::future::zip(embedding, other));
    assert_eq!(v.unwrap(), blocking);
    assert!(ticks.get() > 10, "the other task ran only {} times", ticks.get());
}

#[test]
fn opening_yields_while_reading_the_header() {
    // The smallest plan builds no vocab index, so every yield counted here is the loader's.
    let options = EmbedderOptions { plan: stepembed::core::engine::PlanKind::Smallest, ..Default::default() };
    let ticks = Cell::new(0u32);
    let done = Cell::new(false);
    let open = async {
        let e = Embedder::open_async(model("minilm-l6-Q4_K_M"), options).await;
        done.set(true);
        e
    };
    let other = async {
        while !done.get() {
            ticks.set(ticks.get() + 1);
            futures_lite::future::yield_now().await;
        }
    };
    let (e, ()) = futures_lite::future::block_on(futures_lite::future::zip(open, other));
    let e = e.unwrap();
    assert_eq!(e.plan().index_bytes(), 0);
    // minilm has 25 metadata entries and 101 tensors: at least one yield per few of them.
    assert!(ticks.get() > 40, "the other task ran only {} times while the header was read", ticks.get());
}

#[test]
fn a_host_can_step_a_job_itself() {
    let options = EmbedderOptions { budget: 10_000, ..Default::default() };
    let mut e = Embedder::open_with(model("bert-tiny-F16"), options).unwrap();
    let expected = e.embed("naïve café").unwrap();
    let mut job = e.job(Input::Text("naïve café")).unwrap();
    let mut stages = Vec::new();
    let got = loop {
        match job.step().unwrap() {
            Step::Pending(p) => {
                assert!(p.done <= p.total);
                stages.push(p.stage);
            }
            Step::Done(v) => break v.to_vec(),
        }
    };
    assert_eq!(got, expected);
    assert!(stages.contains(&"qkv") && stages.contains(&"ffn"), "{stages:?}");
}

fn stepembed(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_stepembed")).args(args).output().expect("run stepembed")
}

#[test]
fn cli_embed_and_tokenize() {
    let m = model("minilm-l6-Q4_K_M");
    let m = m.to_str().unwrap();
    let out = stepembed(&["embed", m, "Hello world", "--stats"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let line: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(line["index"], 0);
    assert_eq!(line["tokens"], 4);
    let v: Vec<f32> =
        line["embedding"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect();
    let reference = &cases(&common::fixture("reference/minilm-l6-Q4_K_M.jsonl"))[0];
    let (cos, _) = compare(&v, &reference.embedding);
    assert!(cos >= 0.99999);
    let stats: serde_json::Value =
        serde_json::from_str(String::from_utf8(out.stderr).unwrap().lines().last().unwrap()).unwrap();
    for key in
        ["texts", "tokens", "steps", "max_step_us", "p99_step_us", "arena_bytes", "peak_rss_kib", "wall_ms"]
    {
        assert!(stats[key].is_u64(), "{key} in {stats}");
    }
    assert_eq!(stats["tokens"], 4);

    // --input FILE.jsonl and --output FILE.
    let dir = std::env::temp_dir().join(format!("stepembed-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let output = dir.join("out.jsonl");
    let texts = common::fixture("texts.jsonl");
    let out =
        stepembed(&["embed", m, "--input", texts.to_str().unwrap(), "--output", output.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let lines = std::fs::read_to_string(&output).unwrap();
    assert_eq!(lines.lines().count(), 25);

    let out = stepembed(&["tokenize", m, "Hello world", "[CLS] x"]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines[0]["ids"], serde_json::json!([101, 7592, 2088, 102]));
    assert_eq!(lines[1]["ids"], serde_json::json!([101, 101, 1060, 102]));

    // Truncation at --max-tokens, and --no-truncate.
    let long = "word ".repeat(600);
    let out = stepembed(&["tokenize", m, &long]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["ids"].as_array().unwrap().len(), 512);
    let out = stepembed(&["tokenize", m, "--max-tokens", "5", &long]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["ids"], serde_json::json!([101, 2773, 2773, 2773, 102]));
    let out = stepembed(&["tokenize", m, "--no-truncate", &long]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["ids"].as_array().unwrap().len(), 602);

    // Errors: one line, exit code 1.
    for args in [
        vec!["embed", "/nonexistent.gguf", "x"],
        vec!["embed", m, "--no-truncate", &long],
        // An error whose message happens to contain "Broken pipe" is still an error.
        vec!["embed", m, "--no-truncate", &format!("Broken pipe {long}")],
    ] {
        let out = stepembed(&args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let err = String::from_utf8(out.stderr).unwrap();
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(err.starts_with("stepembed: error: "), "{err}");
    }
    // Usage errors: clap's message and hint, exit code 2 (tests/cli.rs has more).
    for args in [
        vec!["embed", m, "--bogus", "x"],
        vec!["embed", m],
        vec!["embed", m, "--max-tokens", "zero", "x"],
        vec!["tokenize", m, "--max-tokens", "5", "--no-truncate", "x"],
    ] {
        let out = stepembed(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8(out.stderr).unwrap();
        assert!(err.starts_with("error: ") && err.contains("--help"), "{args:?}: {err}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
