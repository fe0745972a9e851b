//! `stepembed embed`'s output formats and options, checked against the library: JSON lines
//! equal to `Embedder` of the same text, floats that round-trip as f32, the OpenAI response, a
//! `.npy` matrix, --prefix, --dims, --no-normalize, ids, --lines, stdin, --skip-errors,
//! truncation, a small --memory for argument texts.

mod common;

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use serde_json::Value as Json;
use stepembed::{Embedder, EmbedderOptions};

fn model(name: &str) -> String {
    common::fixture(&format!("models/{name}.gguf")).to_str().unwrap().to_owned()
}

fn stepembed(args: &[&str]) -> Output {
    stepembed_with_stdin(args, b"")
}

fn stepembed_with_stdin(args: &[&str], stdin: &[u8]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_stepembed"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run stepembed");
    // A run that fails before reading its input closes the pipe: not the test's concern.
    match child.stdin.take().unwrap().write_all(stdin) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
        other => other.unwrap(),
    }
    child.wait_with_output().unwrap()
}

/// The JSON lines of a successful run (its stderr empty unless `stderr_ok`).
fn ok_lines(out: &Output) -> Vec<Json> {
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout.clone()).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

fn floats(v: &Json) -> Vec<f32> {
    v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect()
}

fn norm(v: &[f32]) -> f64 {
    v.iter().map(|&x| f64::from(x) * f64::from(x)).sum::<f64>().sqrt()
}

/// A scratch file path for one test.
fn scratch(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("stepembed-cli-formats-{}-{name}", std::process::id()))
}

/// What the library gives for `text` with the plan the CLI uses for argument texts (sized for
/// the longest of them, `tokens`).
fn library_embedding(m: &str, text: &str, tokens: usize, normalize: bool) -> Vec<f32> {
    let options = EmbedderOptions { max_tokens: Some(tokens), normalize, ..EmbedderOptions::default() };
    Embedder::open_with(m, options).unwrap().embed(text).unwrap()
}

#[test]
fn jsonl_rows_equal_the_library_and_print_f32_exactly() {
    let m = model("minilm-l6-Q4_K_M");
    let out = stepembed(&["embed", &m, "Hello world"]);
    let rows = ok_lines(&out);
    assert_eq!(rows.len(), 1);
    let keys: Vec<&str> = rows[0].as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(keys, ["index", "tokens", "truncated", "embedding"]);
    assert_eq!(rows[0]["index"], 0);
    assert_eq!(rows[0]["tokens"], 4);
    assert_eq!(rows[0]["truncated"], false);
    let expected = library_embedding(&m, "Hello world", 4, true);
    // Every printed number parses back, as an f32, to the very bits of the library's value,
    // and is short: f32 digits (at most 9 significant), not an f64 widening of them.
    let text = String::from_utf8(out.stdout).unwrap();
    let list = text.split("\"embedding\":[").nth(1).unwrap().split(']').next().unwrap();
    let printed: Vec<&str> = list.split(',').collect();
    assert_eq!(printed.len(), expected.len());
    for (p, e) in printed.iter().zip(&expected) {
        assert_eq!(p.parse::<f32>().unwrap().to_bits(), e.to_bits(), "{p} vs {e}");
        let digits = p.trim_start_matches('-').split('e').next().unwrap();
        let significant = digits.replace('.', "").trim_start_matches('0').len();
        assert!(significant <= 9, "{p} has {significant} significant digits");
    }
    // --echo-text adds the text after the id.
    let rows = ok_lines(&stepembed(&["embed", &m, "--echo-text", "Hello world"]));
    let keys: Vec<&str> = rows[0].as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(keys, ["index", "text", "tokens", "truncated", "embedding"]);
    assert_eq!(rows[0]["text"], "Hello world");
}

#[test]
fn openai_format_is_the_embeddings_response() {
    let m = model("bert-tiny-F16");
    let out = stepembed(&["embed", &m, "--format", "openai", "one", "two words"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let doc: Json = serde_json::from_slice(&out.stdout).unwrap();
    let keys: Vec<&str> = doc.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(keys, ["object", "data", "model", "usage"]);
    assert_eq!(doc["object"], "list");
    assert_eq!(doc["model"], "bert-tiny-F16");
    let jsonl = ok_lines(&stepembed(&["embed", &m, "one", "two words"]));
    let data = doc["data"].as_array().unwrap();
    assert_eq!(data.len(), 2);
    for (i, (entry, row)) in data.iter().zip(&jsonl).enumerate() {
        let keys: Vec<&str> = entry.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(keys, ["object", "index", "embedding"]);
        assert_eq!(entry["object"], "embedding");
        assert_eq!(entry["index"], i);
        assert_eq!(entry["embedding"], row["embedding"]);
    }
    let tokens = jsonl[0]["tokens"].as_u64().unwrap() + jsonl[1]["tokens"].as_u64().unwrap();
    assert_eq!(doc["usage"], serde_json::json!({ "prompt_tokens": tokens, "total_tokens": tokens }));
    // No text at all is still one document.
    let out = stepembed_with_stdin(&["embed", &m, "--format", "openai", "--input", "-"], b"");
    let doc: Json = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["data"], serde_json::json!([]));
    assert_eq!(doc["usage"]["total_tokens"], 0);
}

#[test]
fn npy_is_a_float32_matrix_of_the_embeddings() {
    let m = model("bert-tiny-F16");
    let path = scratch("out.npy");
    let texts = ["alpha", "beta gamma", "delta"];
    let mut args = vec!["embed", m.as_str(), "--format", "npy", "--output", path.to_str().unwrap()];
    args.extend(texts);
    let out = stepembed(&args);
    assert!(out.status.success() && out.stdout.is_empty(), "{}", String::from_utf8_lossy(&out.stderr));
    let bytes = std::fs::read(&path).unwrap();
    std::fs::remove_file(&path).unwrap();
    assert_eq!(&bytes[..8], b"\x93NUMPY\x01\x00");
    let header_len = usize::from(u16::from_le_bytes([bytes[8], bytes[9]]));
    assert_eq!((10 + header_len) % 64, 0, "data aligned as the format asks");
    let header = std::str::from_utf8(&bytes[10..10 + header_len]).unwrap();
    assert_eq!(header.trim_end(), "{'descr': '<f4', 'fortran_order': False, 'shape': (3, 64), }");
    assert!(header.ends_with('\n'));
    let data: Vec<f32> =
        bytes[10 + header_len..].chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect();
    let mut args = vec!["embed", m.as_str()];
    args.extend(texts);
    let expected: Vec<f32> =
        ok_lines(&stepembed(&args)).iter().flat_map(|r| floats(&r["embedding"])).collect();
    assert_eq!(data.len(), 3 * 64);
    assert_eq!(
        data.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
        expected.iter().map(|x| x.to_bits()).collect::<Vec<_>>()
    );
}

#[test]
fn prefix_is_embedding_the_prefixed_text() {
    let m = model("bert-tiny-F16");
    let with = ok_lines(&stepembed(&["embed", &m, "--prefix", "query: ", "what is rust"]));
    let prefixed = ok_lines(&stepembed(&["embed", &m, "query: what is rust"]));
    let plain = ok_lines(&stepembed(&["embed", &m, "what is rust"]));
    assert_eq!(with, prefixed);
    assert_ne!(with[0]["embedding"], plain[0]["embedding"]);
    let echoed = ok_lines(&stepembed(&["embed", &m, "--prefix", "query: ", "--echo-text", "what is rust"]));
    assert_eq!(echoed[0]["text"], "what is rust", "the input text is echoed, without the prefix");
    let tokens = ok_lines(&stepembed(&["tokenize", &m, "--prefix", "query: ", "what is rust"]));
    let direct = ok_lines(&stepembed(&["tokenize", &m, "query: what is rust"]));
    assert_eq!(tokens[0]["ids"], direct[0]["ids"]);
}

#[test]
fn dims_cut_then_normalize_and_no_normalize_keeps_the_raw_vector() {
    let m = model("bert-tiny-F16");
    let raw = ok_lines(&stepembed(&["embed", &m, "--no-normalize", "a raw vector"]));
    let raw = floats(&raw[0]["embedding"]);
    assert_eq!(raw, library_embedding(&m, "a raw vector", 5, false));
    assert!((norm(&raw) - 1.0).abs() > 1e-3, "norm {}", norm(&raw));
    let unit = floats(&ok_lines(&stepembed(&["embed", &m, "a raw vector"]))[0]["embedding"]);
    assert!((norm(&unit) - 1.0).abs() < 1e-5, "norm {}", norm(&unit));

    let out = stepembed(&["embed", &m, "--dims", "16", "a raw vector"]);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.starts_with("stepembed: warning: ") && err.contains("Matryoshka"), "{err}");
    let cut = floats(&ok_lines(&out)[0]["embedding"]);
    let n = norm(&raw[..16]);
    let expected: Vec<f32> = raw[..16].iter().map(|&x| (f64::from(x) / n) as f32).collect();
    assert_eq!(cut, expected);
    // --quiet silences the warning; with --no-normalize the cut is all.
    let out = stepembed(&["embed", &m, "--dims", "16", "--no-normalize", "--quiet", "a raw vector"]);
    assert!(out.stderr.is_empty(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(floats(&ok_lines(&out)[0]["embedding"]), raw[..16]);
}

#[test]
fn ids_lines_and_stdin() {
    let m = model("bert-tiny-F16");
    let input = b"{\"id\": \"doc-1\", \"text\": \"first\"}\n\n{\"text\": \"second\"}\n{\"id\": 42, \"text\": \"third\"}\n";
    let rows = ok_lines(&stepembed_with_stdin(&["embed", &m, "--input", "-", "--echo-text"], input));
    let summary: Vec<(Json, Json, Json)> = rows
        .iter()
        .map(|r| (r["index"].clone(), r.get("id").cloned().unwrap_or(Json::Null), r["text"].clone()))
        .collect();
    assert_eq!(
        summary,
        [
            (0.into(), "doc-1".into(), "first".into()),
            (1.into(), Json::Null, "second".into()),
            (2.into(), 42.into(), "third".into()),
        ]
    );
    let keys: Vec<&str> = rows[0].as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(keys, ["index", "id", "text", "tokens", "truncated", "embedding"]);
    let args = ok_lines(&stepembed(&["embed", &m, "first", "second", "third"]));
    for (r, a) in rows.iter().zip(&args) {
        assert_eq!(r["embedding"], a["embedding"]);
    }
    // --lines: plain text, one text per line, from a file.
    let path = scratch("texts.txt");
    std::fs::write(&path, "first\r\nsecond\n\nthird").unwrap();
    let plain = ok_lines(&stepembed(&["embed", &m, "--input", path.to_str().unwrap(), "--lines"]));
    std::fs::remove_file(&path).unwrap();
    assert_eq!(plain.len(), 3);
    for (p, a) in plain.iter().zip(&args) {
        assert_eq!(p["embedding"], a["embedding"]);
    }
    // tokenize passes ids through too.
    let tokens = ok_lines(&stepembed_with_stdin(&["tokenize", &m, "--input", "-"], input));
    assert_eq!(tokens[2]["id"], 42);
}

#[test]
fn skip_errors_reports_bad_lines_and_goes_on() {
    let m = model("bert-tiny-F16");
    let input = b"{\"text\": \"good\"}\n{\"txt\": \"bad\"}\n{\"text\": \"also good\"}\n";
    let out = stepembed_with_stdin(&["embed", &m, "--input", "-"], input);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(String::from_utf8_lossy(&out.stderr), "stepembed: error: stdin:2: no \"text\" string\n");
    let out = stepembed_with_stdin(&["embed", &m, "--input", "-", "--skip-errors"], input);
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "stepembed: warning: stdin:2: no \"text\" string (skipped)\n"
    );
    let rows = ok_lines(&out);
    assert_eq!(rows.iter().map(|r| r["index"].as_u64().unwrap()).collect::<Vec<_>>(), [0, 2]);
    // --quiet hides the warning, not the skipping.
    let out = stepembed_with_stdin(&["embed", &m, "--input", "-", "--skip-errors", "--quiet"], input);
    assert!(out.stderr.is_empty());
    assert_eq!(ok_lines(&out).len(), 2);
    // A text too long for --no-truncate is skipped the same way.
    let long = "word ".repeat(600);
    let out = stepembed(&["embed", &m, "--no-truncate", "--skip-errors", "short", &long]);
    assert_eq!(ok_lines(&out).len(), 1);
    assert!(String::from_utf8_lossy(&out.stderr).contains("more than the limit of 512"));
    // Every text failed: exit 1 (and nothing written).
    let out = stepembed_with_stdin(&["embed", &m, "--input", "-", "--skip-errors"], b"[1]\n{}\n");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.ends_with("stepembed: error: every text failed (2 skipped)\n"), "{err}");
    assert!(out.stdout.is_empty());
}

#[test]
fn truncated_tells_a_cut_text_from_one_that_fits_exactly() {
    let m = model("minilm-l6-Q4_K_M");
    // "hello world again" is 5 tokens with [CLS] and [SEP].
    let rows = ok_lines(&stepembed(&[
        "embed",
        &m,
        "--max-tokens",
        "5",
        "hello world again",
        "hello world again and more",
    ]));
    assert_eq!((rows[0]["tokens"].clone(), rows[0]["truncated"].clone()), (5.into(), false.into()));
    assert_eq!((rows[1]["tokens"].clone(), rows[1]["truncated"].clone()), (5.into(), true.into()));
    let rows = ok_lines(&stepembed(&["embed", &m, "--max-tokens", "4", "hello world again"]));
    assert_eq!((rows[0]["tokens"].clone(), rows[0]["truncated"].clone()), (4.into(), true.into()));
}

#[test]
fn a_small_memory_cap_works_for_short_argument_texts() {
    let m = model("minilm-l6-Q4_K_M");
    let model_context = Embedder::open_with(
        &m,
        EmbedderOptions { plan: stepembed::core::engine::PlanKind::Smallest, ..EmbedderOptions::default() },
    )
    .unwrap();
    let cap = 98_304;
    assert!(model_context.plan().memory_bytes() > cap, "the cap is below the model-context plan");
    let out = stepembed(&["embed", &m, "Hello world", "--memory", &cap.to_string(), "--stats"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stats: Json =
        serde_json::from_str(String::from_utf8_lossy(&out.stderr).lines().last().unwrap()).unwrap();
    let used = stats["arena_bytes"].as_u64().unwrap() + stats["index_bytes"].as_u64().unwrap();
    assert!(used <= cap as u64, "{stats}");
    let row = &String::from_utf8(out.stdout).unwrap();
    let v = floats(&serde_json::from_str::<Json>(row).unwrap()["embedding"]);
    let reference = library_embedding(&m, "Hello world", 4, true);
    let cos: f64 = v.iter().zip(&reference).map(|(&a, &b)| f64::from(a) * f64::from(b)).sum();
    assert!(cos > 0.99999, "cos {cos}");
    // The same text streamed is planned for the model's context, which the cap cannot hold.
    let out = stepembed_with_stdin(
        &["embed", &m, "--input", "-", "--memory", &cap.to_string()],
        b"{\"text\": \"Hello world\"}\n",
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("arena too small"));
    // --arena-bytes is the same option.
    let out = stepembed(&["embed", &m, "Hello world", "--arena-bytes", &cap.to_string()]);
    assert_eq!(ok_lines(&out).len(), 1);
}

#[test]
fn pooling_cls_takes_the_first_tokens_vector() {
    use stepembed::core::engine::{Input, Step};
    use stepembed::core::model::Pooling;
    let m = model("bert-tiny-F16");
    let text = "what is rust";
    let cls = ok_lines(&stepembed(&["embed", &m, "--pooling", "cls", text]));
    let mean = ok_lines(&stepembed(&["embed", &m, "--pooling", "mean", text]));
    let default = ok_lines(&stepembed(&["embed", &m, text]));
    assert_eq!(mean, default, "the file says mean");
    assert_ne!(cls[0]["embedding"], mean[0]["embedding"]);
    let options =
        |pooling| EmbedderOptions { max_tokens: Some(5), pooling: Some(pooling), ..Default::default() };
    let library = Embedder::open_with(&m, options(Pooling::Cls)).unwrap().embed(text).unwrap();
    assert_eq!(floats(&cls[0]["embedding"]), library);
    // A one-token input has one vector: its mean is its [CLS] vector.
    let one = |pooling| {
        let mut e = Embedder::open_with(&m, options(pooling)).unwrap();
        let mut job = e.job(Input::Ids(&[101])).unwrap();
        loop {
            if let Step::Done(v) = job.step().unwrap() {
                return v.to_vec();
            }
        }
    };
    assert_eq!(one(Pooling::Cls), one(Pooling::Mean));
}
