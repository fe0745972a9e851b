//! The `stepembed` binary under hostile use: outputs that would overwrite inputs, full devices and
//! closed pipes, odd arguments, texts that NFD expands, many texts through `--input`, and
//! `validate` on patched weights.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Mutex, OnceLock};

use serde_json::Value as Json;
use stepembed::core::gguf::{GgmlType, TensorInfo};
use stepembed::core::io::SliceSource;
use stepembed::core::tokenizer;
use stepembed::{inspect, Embedder};

fn stepembed(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_stepembed")).args(args).output().expect("run stepembed")
}

fn model(name: &str) -> String {
    common::fixture(&format!("models/{name}.gguf")).to_str().unwrap().to_owned()
}

/// A fresh scratch directory for one test, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(test: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("stepembed-cli-{test}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    /// The names of the files in the directory, sorted.
    fn files(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(&self.0)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Asserts a runtime failure: exit code 1 and exactly one line `stepembed: error: …` on stderr,
/// which contains every one of `needles`.
fn assert_one_line_error(out: &Output, needles: &[&str]) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stderr: {err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.starts_with("stepembed: error: "), "{err}");
    for n in needles {
        assert!(err.contains(n), "{n:?} not in {err}");
    }
}

/// Asserts a usage error as clap reports it: exit code 2, `error:` first, a hint, no stdout.
fn assert_usage_error(out: &Output, needle: &str) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "stderr: {err}");
    assert!(err.starts_with("error: "), "{err}");
    assert!(err.contains(needle), "{needle:?} not in {err}");
    assert!(err.contains("--help"), "no hint in {err}");
    assert!(out.stdout.is_empty());
}

fn jsonl(texts: &[String]) -> String {
    texts.iter().map(|t| format!("{}\n", serde_json::json!({ "text": t }))).collect()
}

fn lines(bytes: &[u8]) -> Vec<Json> {
    std::str::from_utf8(bytes).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

// 1. Outputs never overwrite inputs; a failed run leaves an existing output untouched.

#[test]
fn output_is_never_an_input() {
    let dir = TempDir::new("identity");
    let m = dir.path("model.gguf");
    std::fs::copy(model("bert-tiny-F16"), &m).unwrap();
    let original = std::fs::read(&m).unwrap();
    std::fs::hard_link(&m, dir.path("hard.gguf")).unwrap();
    #[cfg(unix)]
    std::os::unix::fs::symlink(&m, dir.path("link.gguf")).unwrap();
    let texts = dir.path("texts.jsonl");
    std::fs::write(&texts, "{\"text\": \"a\"}\n").unwrap();

    let mut aliases = vec![m.clone(), dir.path("hard.gguf"), dir.0.join(".").join("model.gguf")];
    if cfg!(unix) {
        aliases.push(dir.path("link.gguf"));
    }
    for alias in &aliases {
        let out = stepembed(&["embed", s(&m), "x", "--output", s(alias)]);
        assert_one_line_error(&out, &["is the input file", "refusing to overwrite"]);
        assert!(std::fs::read(&m).unwrap() == original, "{} changed the model", alias.display());
    }
    let out = stepembed(&["embed", s(&m), "--input", s(&texts), "--output", s(&texts)]);
    assert_one_line_error(&out, &["is the input file"]);
    assert_eq!(std::fs::read_to_string(&texts).unwrap(), "{\"text\": \"a\"}\n");
    let mut expected = vec!["hard.gguf", "model.gguf", "texts.jsonl"];
    if cfg!(unix) {
        expected.insert(1, "link.gguf");
    }
    assert_eq!(dir.files(), expected, "no temporary file is left behind");
}

#[test]
fn output_is_replaced_only_on_success() {
    let dir = TempDir::new("replace");
    let m = model("bert-tiny-F16");
    let out_path = dir.path("out.jsonl");
    std::fs::write(&out_path, "old contents\n").unwrap();
    // Fails reading line 301, after a first window of texts was embedded and written.
    let texts = dir.path("texts.jsonl");
    let good: Vec<String> = (0..300).map(|i| format!("text {i}")).collect();
    std::fs::write(&texts, jsonl(&good) + "{\"txt\": \"c\"}\n").unwrap();
    let out = stepembed(&["embed", &m, "--input", s(&texts), "--output", s(&out_path)]);
    assert_one_line_error(&out, &[&format!("{}:301: no \"text\" string", texts.display())]);
    assert_eq!(std::fs::read_to_string(&out_path).unwrap(), "old contents\n");
    // Fails in the first window, on a text too long for --no-truncate.
    let long = "word ".repeat(600);
    let out = stepembed(&["embed", &m, "--no-truncate", "--output", s(&out_path), "short", &long]);
    assert_one_line_error(&out, &["more than the limit of 512"]);
    assert_eq!(std::fs::read_to_string(&out_path).unwrap(), "old contents\n");
    assert_eq!(dir.files(), ["out.jsonl", "texts.jsonl"], "the temporary file is removed");

    let out = stepembed(&["embed", &m, "--echo-text", "--output", s(&out_path), "one", "two"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.stdout.is_empty());
    let written = lines(&std::fs::read(&out_path).unwrap());
    assert_eq!(written.iter().map(|l| l["text"].as_str().unwrap()).collect::<Vec<_>>(), ["one", "two"]);
    let dims = Embedder::open(&m).unwrap().embedding_len();
    assert_eq!(written[0]["embedding"].as_array().unwrap().len(), dims);
    assert_eq!(dir.files(), ["out.jsonl", "texts.jsonl"]);
    // A new file in a directory that does not exist: one line, nothing created.
    let out = stepembed(&["embed", &m, "--output", s(&dir.path("absent/out.jsonl")), "x"]);
    assert_one_line_error(&out, &["absent"]);
}

// 2. Write errors: one line and exit code 1, never a panic; a closed stdout is not an error.

#[cfg(target_os = "linux")]
#[test]
fn writing_to_a_full_device_is_one_error_line() {
    let m = model("bert-tiny-F16");
    let full = || std::fs::OpenOptions::new().write(true).open("/dev/full").unwrap();
    // stderr full: the --stats line cannot be written, nor can the error line; exit code 1.
    let out = Command::new(env!("CARGO_BIN_EXE_stepembed"))
        .args(["embed", &m, "x", "--stats"])
        .stderr(full())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(lines(&out.stdout).len(), 1, "the embedding was written before the stats");
    // stdout full, for every command that writes to it.
    for args in [
        vec!["embed", &m, "x"],
        vec!["tokenize", &m, "x"],
        vec!["inspect", &m],
        vec!["inspect", "--json", &m],
        vec!["validate", &m],
        vec!["--help"],
        vec!["embed", "--help"],
        vec!["--version"],
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_stepembed"))
            .args(&args)
            .stdout(full())
            .stderr(Stdio::piped())
            .output()
            .unwrap();
        assert_one_line_error(&out, &["stdout: No space left on device"]);
    }
    let out = stepembed(&["embed", &m, "x", "--output", "/dev/full"]);
    assert_one_line_error(&out, &["/dev/full: No space left on device"]);
}

#[test]
fn a_closed_stdout_is_a_normal_end() {
    let m = model("bert-tiny-F16");
    let texts: Vec<String> = (0..300).map(|i| format!("text number {i}")).collect();
    let mut args = vec!["embed", m.as_str()];
    args.extend(texts.iter().map(String::as_str));
    let mut child = Command::new(env!("CARGO_BIN_EXE_stepembed"))
        .args(&args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Like `| head -c 100`: read a little, then close the pipe while output is still coming.
    let mut head = [0u8; 100];
    std::io::Read::read_exact(child.stdout.as_mut().unwrap(), &mut head).unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.stderr.is_empty(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(head.starts_with(b"{\"index\":0,\"tokens\":5,\"truncated\":false,\"embedding\":["));
}

// 3. Arguments.

#[test]
fn help_and_version() {
    let out = stepembed(&["--help"]);
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    for command in ["inspect", "tokenize", "embed", "validate"] {
        assert!(help.contains(&format!("  {command}  ")), "{command} in {help}");
    }
    let out = stepembed(&["embed", "--help"]);
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    for flag in [
        "--input <FILE>",
        "--lines",
        "--prefix <TEXT>",
        "--format <FORMAT>",
        "--echo-text",
        "--output <FILE>",
        "--dims <N>",
        "--no-normalize",
        "--max-tokens <N>",
        "--no-truncate",
        "--plan <PLAN>",
        "--memory <BYTES>",
        "[alias: --arena-bytes]",
        "--skip-errors",
        "--quiet",
        "--stats",
        "<MODEL.gguf>",
        "[TEXT]...",
    ] {
        assert!(help.contains(flag), "{flag} in {help}");
    }
    let out = stepembed(&["help", "inspect"]);
    assert!(out.status.success());
    assert!(String::from_utf8(out.stdout).unwrap().contains("--dequant-stats"));
    let out = stepembed(&["--version"]);
    assert!(out.status.success());
    assert_eq!(String::from_utf8(out.stdout).unwrap(), format!("stepembed {}\n", env!("CARGO_PKG_VERSION")));
    // No command at all: the help, as a usage error.
    let out = stepembed(&[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8(out.stderr).unwrap().contains("Usage: stepembed <COMMAND>"));
}

#[test]
fn usage_errors_exit_2_with_a_hint() {
    let dir = TempDir::new("usage");
    let m = model("bert-tiny-F16");
    let o = dir.path("out.jsonl");
    let cases: Vec<(Vec<&str>, &str)> = vec![
        // A single-dash option is not a text.
        (vec!["embed", &m, "-o", s(&o), "x"], "unexpected argument '-o'"),
        (vec!["embed", &m, "--bogus", "x"], "unexpected argument '--bogus'"),
        // An option's value is never the next option.
        (vec!["embed", &m, "x", "--output", "--stats"], "a value is required for '--output <FILE>'"),
        (vec!["embed", &m, "x", "--max-tokens", "--no-truncate"], "a value is required"),
        (vec!["embed", &m, "x", "--stats", "--stats"], "cannot be used multiple times"),
        (vec!["embed", &m, "x", "--output", "a", "--output", "b"], "cannot be used multiple times"),
        (vec!["embed", &m, "--max-tokens", "zero", "x"], "invalid value 'zero' for '--max-tokens <N>'"),
        (vec!["embed", &m, "--max-tokens", "0", "x"], "must be a positive integer"),
        (vec!["embed", &m, "--arena-bytes", "-5", "x"], "unexpected argument '-5'"),
        (vec!["embed", &m, "--plan", "huge", "x"], "possible values: indexed, lean, smallest"),
        (vec!["embed", &m, "--memory", "-5", "x"], "unexpected argument '-5'"),
        (vec!["embed", &m, "--format", "npy", "x"], "--output <FILE>"),
        (vec!["embed", &m, "--format", "csv", "x"], "possible values: jsonl, openai, npy"),
        (vec!["embed", &m, "--lines", "x"], "--input <FILE>"),
        (vec!["embed", &m, "--dims", "0", "x"], "must be a positive integer"),
        (
            vec!["embed", &m, "--format", "openai", "--echo-text", "x"],
            "--echo-text is for --format jsonl only",
        ),
        // Known once the model is open: still reported as a usage error.
        (vec!["embed", &m, "--dims", "65", "x"], "--dims 65: the model's embeddings have 64 dimensions"),
        (vec!["embed", &m], "<TEXT>..."),
        (vec!["embed", &m, "x", "--input", "t.jsonl"], "cannot be used with"),
        (vec!["tokenize", &m, "--max-tokens", "5", "--no-truncate", "x"], "cannot be used with"),
        (vec!["inspect", "--dequant-stats", &m], "--json"),
        (vec!["inspect", &m, "extra"], "unexpected argument 'extra'"),
        (vec!["validate"], "<MODEL.gguf>"),
        (vec!["frobnicate", &m], "unrecognized subcommand 'frobnicate'"),
    ];
    for (args, needle) in cases {
        let out = stepembed(&args);
        assert_usage_error(&out, needle);
    }
    assert!(dir.files().is_empty(), "nothing was written");
}

#[test]
fn the_old_plan_name_and_memory_flag_still_work() {
    let m = model("bert-tiny-F16");
    let indexed = stepembed(&["embed", &m, "--plan", "indexed", "x"]);
    assert!(indexed.status.success(), "{}", String::from_utf8_lossy(&indexed.stderr));
    assert_eq!(stepembed(&["embed", &m, "--plan", "fast", "x"]).stdout, indexed.stdout);
    let memory = stepembed(&["embed", &m, "--memory", "10000000", "x"]);
    assert!(memory.status.success(), "{}", String::from_utf8_lossy(&memory.stderr));
    assert_eq!(stepembed(&["embed", &m, "--arena-bytes", "10000000", "x"]).stdout, memory.stdout);
}

#[test]
fn texts_after_double_dash_may_start_with_a_dash() {
    let m = model("bert-tiny-F16");
    let out = stepembed(&["tokenize", &m, "--", "-o", "--stats", "-"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let got = lines(&out.stdout);
    assert_eq!(got.iter().map(|l| l["text"].as_str().unwrap()).collect::<Vec<_>>(), ["-o", "--stats", "-"]);
    // After `--`, flags are texts: --stats is not honoured.
    let out = stepembed(&["embed", &m, "--echo-text", "x", "--", "--stats"]);
    assert!(out.status.success());
    assert!(out.stderr.is_empty(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(lines(&out.stdout)[1]["text"], "--stats");
    // Flags may come before or after the texts, and `--name=value` works.
    let a = stepembed(&["tokenize", "--max-tokens=4", &m, "hello world again"]);
    let b = stepembed(&["tokenize", &m, "hello world again", "--max-tokens", "4"]);
    assert!(a.status.success() && a.stdout == b.stdout);
    assert_eq!(lines(&a.stdout)[0]["ids"].as_array().unwrap().len(), 4);
}

#[cfg(unix)]
#[test]
fn non_utf8_arguments_are_refused_or_kept_exact() {
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;
    let m = model("bert-tiny-F16");
    let bad = OsStr::from_bytes(b"caf\xe9");
    let out = Command::new(env!("CARGO_BIN_EXE_stepembed")).arg("embed").arg(&m).arg(bad).output().unwrap();
    assert_usage_error(&out, "invalid UTF-8");
    // A path need not be UTF-8: it is opened as it is (and here does not exist).
    let out = Command::new(env!("CARGO_BIN_EXE_stepembed")).arg("inspect").arg(bad).output().unwrap();
    assert_one_line_error(&out, &["No such file or directory"]);
}

#[test]
fn a_model_that_is_not_a_regular_file_is_named_so() {
    let dir = TempDir::new("not-a-file");
    for command in ["embed", "tokenize", "inspect", "validate"] {
        let mut args = vec![command, s(&dir.0)];
        if command == "embed" || command == "tokenize" {
            args.push("x");
        }
        let out = stepembed(&args);
        assert_one_line_error(&out, &[&format!("{}: is a directory", dir.0.display())]);
        if cfg!(unix) {
            args[1] = "/dev/null";
            assert_one_line_error(&stepembed(&args), &["/dev/null: not a regular, seekable file"]);
        }
    }
    // A named pipe is refused without waiting for a writer.
    #[cfg(unix)]
    if Command::new("mkfifo").arg(dir.path("fifo")).status().is_ok_and(|s| s.success()) {
        let fifo = dir.path("fifo");
        assert_one_line_error(&stepembed(&["inspect", s(&fifo)]), &["not a regular, seekable file"]);
    }
}

// 4. tokenize --no-truncate never runs out of room for texts that normalize to more chars.

#[test]
fn no_truncate_fits_texts_that_nfd_expands() {
    let m = model("bert-tiny-F16");
    let long = "word ".repeat(600);
    let hangul = "말".repeat(200);
    for text in ["말", "한국어 문장입니다", "İstanbul İİİ", "ǅ ǈ ﬃ", hangul.as_str(), long.as_str()]
    {
        let untruncated = stepembed(&["tokenize", &m, "--no-truncate", "--", text]);
        assert!(untruncated.status.success(), "{text:?}: {}", String::from_utf8_lossy(&untruncated.stderr));
        let ids = lines(&untruncated.stdout)[0]["ids"].as_array().unwrap().len();
        assert!(ids <= tokenizer::max_ids(text), "{text:?}: {ids} ids");
        if ids <= 512 {
            // Within the context, truncation changes nothing.
            let truncated = stepembed(&["tokenize", &m, "--", text]);
            assert_eq!(truncated.stdout, untruncated.stdout, "{text:?}");
        }
    }
    let out = stepembed(&["tokenize", &m, "--no-truncate", "말"]);
    assert_eq!(lines(&out.stdout)[0]["ids"].as_array().unwrap().len(), 5, "[CLS] 3 jamo [SEP]");
    assert_eq!(
        lines(&stepembed(&["tokenize", &m, "--no-truncate", &long]).stdout)[0]["ids"]
            .as_array()
            .unwrap()
            .len(),
        602
    );
}

#[test]
fn max_ids_bounds_every_random_text() {
    let mut e = Embedder::open(model("bert-tiny-F16")).unwrap();
    let random = std::fs::read_to_string(common::fixture("tokenizer-random.jsonl")).unwrap();
    let mut texts: Vec<String> = random
        .lines()
        .map(|l| serde_json::from_str::<Json>(l).unwrap()["text"].as_str().unwrap().into())
        .collect();
    texts.extend([
        "[CLS][SEP][UNK] [MASK]".to_string(),
        "\u{0}\u{FFFD}\u{200D}".into(),
        "\u{301}".repeat(300),
    ]);
    texts.extend((0x1100..0x1200).chain(0xAC00..0xAD00).filter_map(char::from_u32).map(String::from));
    for text in &texts {
        assert!(fits_max_ids(&mut e, text), "{text:?}");
    }
    fn random_text_fits(text: String) -> bool {
        static EMBEDDER: OnceLock<Mutex<Embedder>> = OnceLock::new();
        let e = EMBEDDER.get_or_init(|| Mutex::new(Embedder::open(model("bert-tiny-F16")).unwrap()));
        fits_max_ids(&mut e.lock().unwrap(), &text)
    }
    quickcheck::QuickCheck::new().tests(1000).quickcheck(random_text_fits as fn(String) -> bool);
}

/// Whether `text` tokenizes untruncated into an output of `max_ids(text)` ids.
fn fits_max_ids(e: &mut Embedder, text: &str) -> bool {
    let bound = tokenizer::max_ids(text);
    e.tokenize_with(text, bound, false).is_ok_and(|ids| ids.len() <= bound)
}

// 5. embed --input works through a window of texts at a time.

/// `peak_rss_kib` of `embed --input` over `n` short texts, checking the output on the way.
fn peak_rss_for(dir: &TempDir, n: usize) -> u64 {
    let texts: Vec<String> = (0..n).map(|i| format!("short text {i} about item {}", i % 97)).collect();
    let input = dir.path(&format!("in-{n}.jsonl"));
    let output = dir.path(&format!("out-{n}.jsonl"));
    std::fs::write(&input, jsonl(&texts)).unwrap();
    let m = model("bert-tiny-F16");
    let out =
        stepembed(&["embed", &m, "--input", s(&input), "--echo-text", "--output", s(&output), "--stats"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stats: Json =
        serde_json::from_str(String::from_utf8(out.stderr).unwrap().lines().last().unwrap()).unwrap();
    assert_eq!(stats["texts"], n);
    let written = std::fs::read_to_string(&output).unwrap();
    let mut count = 0;
    for (line, text) in written.lines().zip(&texts) {
        let v: Json = serde_json::from_str(line).unwrap();
        assert_eq!(v["text"].as_str().unwrap(), text, "output in input order");
        count += 1;
    }
    assert_eq!(count, n);
    assert_eq!(written.lines().count(), n);
    stats["peak_rss_kib"].as_u64().unwrap()
}

#[cfg(target_os = "linux")]
#[test]
fn embed_memory_does_not_grow_with_the_number_of_texts() {
    let dir = TempDir::new("window");
    let few = peak_rss_for(&dir, 200);
    let many = peak_rss_for(&dir, 10_000);
    // Printed for the record (`--nocapture`).
    println!("peak_rss_kib: 200 texts {few}, 10000 texts {many}");
    assert!(few > 0);
    assert!(many.abs_diff(few) < 1024, "200 texts: {few} KiB, 10000 texts: {many} KiB");
}

#[test]
fn embed_input_matches_embedding_each_text() {
    let dir = TempDir::new("order");
    let m = model("minilm-l6-Q4_K_M");
    // More than one window (256 texts), in batches of mixed lengths.
    let texts: Vec<String> = (0..300)
        .map(|i| if i % 7 == 0 { format!("{i} {}", "long ".repeat(i % 50)) } else { format!("t{i}") })
        .collect();
    let input = dir.path("in.jsonl");
    std::fs::write(&input, jsonl(&texts)).unwrap();
    let out = stepembed(&["embed", &m, "--input", s(&input), "--echo-text"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let got = lines(&out.stdout);
    assert_eq!(got.len(), texts.len());
    let mut e = Embedder::open(&m).unwrap();
    for i in [0, 1, 7, 255, 256, 257, 299] {
        assert_eq!(got[i]["text"].as_str().unwrap(), texts[i]);
        let v: Vec<f32> =
            got[i]["embedding"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect();
        let alone: Vec<f64> = e.embed(&texts[i]).unwrap().into_iter().map(f64::from).collect();
        let (cos, _) = common::engine::compare(&v, &alone);
        assert!(cos >= 0.99999, "text {i}: cos {cos}");
    }
    // An empty input file is no texts and no output.
    std::fs::write(&input, "\n  \n").unwrap();
    let out = stepembed(&["embed", &m, "--input", s(&input), "--stats"]);
    assert!(out.status.success() && out.stdout.is_empty());
    let stats: Json = serde_json::from_slice(&out.stderr).unwrap();
    assert_eq!(stats["texts"], 0);
}

// 7. validate: the full weight scan.

/// A copy of fixture `name` with `patch` applied to the bytes of its first tensor that `pick`
/// accepts; returns the bytes and that tensor.
fn patched(
    name: &str,
    pick: impl Fn(&TensorInfo) -> bool,
    patch: impl Fn(&mut [u8]),
) -> (Vec<u8>, TensorInfo) {
    let mut bytes = common::read(&format!("models/{name}.gguf"));
    let listing = inspect::list(&mut SliceSource::new(&bytes)).unwrap();
    let t = *listing.tensors.iter().find(|t| pick(t)).unwrap_or_else(|| panic!("no such tensor in {name}"));
    patch(&mut bytes[t.offset as usize..(t.offset + t.n_bytes) as usize]);
    (bytes, t)
}

#[test]
fn validate_passes_every_clean_fixture() {
    for name in common::MODELS {
        let out = stepembed(&["validate", &model(name)]);
        assert!(out.status.success(), "{name}: {}", String::from_utf8_lossy(&out.stderr));
        let line = String::from_utf8(out.stdout).unwrap();
        let listing = inspect::list(&mut stepembed::io::open(model(name)).unwrap()).unwrap();
        let bytes: u64 = listing.tensors.iter().map(|t| t.n_bytes).sum();
        assert_eq!(
            line,
            format!(
                "{}: {} tensors ({bytes} bytes) checked, every value finite\n",
                model(name),
                listing.tensors.len()
            )
        );
        let mut e = Embedder::open(model(name)).unwrap();
        let summary = e.validate().unwrap();
        assert_eq!((summary.tensors, summary.bytes, summary.skipped), (listing.tensors.len(), bytes, 0));
    }
}

/// A corrupt weight that makes every text non-finite fails `embed` with that error, in a window
/// of several jobs and on any thread count (not a message about jobs that did not run).
#[test]
fn embed_reports_the_error_of_a_failed_job_in_a_window_of_several() {
    let dir = TempDir::new("embed-corrupt");
    let (bytes, _) = patched(
        "bert-tiny-F16",
        |t| t.ty == GgmlType::F32 && t.name.as_str().ends_with("norm.weight"),
        |b| b[4 * 3..4 * 4].copy_from_slice(&f32::INFINITY.to_le_bytes()),
    );
    let model = dir.path("corrupt.gguf");
    std::fs::write(&model, &bytes).unwrap();
    let input = dir.path("texts.jsonl");
    let lines: String = (0..40).map(|i| format!("{{\"text\": \"text number {i}\"}}\n")).collect();
    std::fs::write(&input, lines).unwrap();
    for threads in ["1", "2"] {
        let out = stepembed(&["embed", s(&model), "--input", s(&input), "--threads", threads]);
        assert_one_line_error(&out, &["non-finite values", "the model's weights are corrupt"]);
        assert!(out.stdout.is_empty(), "{threads} threads: no rows");
    }
}

#[test]
fn validate_names_the_tensor_and_block_of_a_non_finite_weight() {
    let dir = TempDir::new("validate");
    let f16_nan = 0x7e00u16.to_le_bytes();
    let cases = [
        // A NaN f16 value (block = value) in an F16 matrix.
        patched(
            "bert-tiny-F16",
            |t| t.ty == GgmlType::F16,
            |b| b[2 * 1234..2 * 1235].copy_from_slice(&f16_nan),
        ),
        // A NaN scale `d` (the block's first 2 bytes) of a Q8_0 block.
        patched(
            "bert-tiny-Q8_0",
            |t| t.ty == GgmlType::Q8_0,
            |b| b[34 * 5..34 * 5 + 2].copy_from_slice(&f16_nan),
        ),
        // An infinity in an F32 norm.
        patched(
            "bert-tiny-F16",
            |t| t.ty == GgmlType::F32 && t.name.as_str().ends_with("norm.weight"),
            |b| b[4 * 3..4 * 4].copy_from_slice(&f32::INFINITY.to_le_bytes()),
        ),
    ];
    for ((bytes, t), block) in cases.into_iter().zip([1234u64, 5, 3]) {
        let offset = t.offset + block * u64::from(t.ty.block_bytes());
        let expected = format!(
            "tensor {} ({}) block {block} (byte {offset}) holds NaN or infinity",
            t.name.as_str(),
            t.ty.name()
        );
        let path = dir.path("patched.gguf");
        std::fs::write(&path, &bytes).unwrap();
        let out = stepembed(&["validate", s(&path)]);
        assert_one_line_error(&out, &[&format!("{}: {expected}", path.display())]);
        assert!(out.stdout.is_empty());
        let out = stepembed(&["inspect", "--json", "--dequant-stats", s(&path)]);
        assert_one_line_error(&out, &[&expected]);
        assert!(out.stdout.is_empty(), "no listing with a NaN sum");
        let mut e = Embedder::from_source(SliceSource::new(&bytes), Default::default()).unwrap();
        assert_eq!(e.validate().unwrap_err().to_string(), expected);
    }
}

#[test]
fn scan_weights_checks_every_decodable_type_and_f64_and_skips_integers() {
    use common::gguf_writer::{file, kv_u32, tensor_info};
    use stepembed::validate::{scan_weights, ScanError};

    // Every computable type (quant-zoo holds one tensor of each): all checked.
    let zoo = common::read("models/quant-zoo.gguf");
    let summary = scan_weights(&mut SliceSource::new(&zoo)).unwrap();
    let listing = inspect::list(&mut SliceSource::new(&zoo)).unwrap();
    assert_eq!((summary.tensors, summary.skipped), (listing.tensors.len(), 0));
    // A K-quant's second scale field (Q4_K's dmin, bytes 2..4 of the block) is checked too.
    let (bytes, t) = patched(
        "quant-zoo",
        |t| t.ty == GgmlType::Q4_K,
        |b| b[144 + 2..144 + 4].copy_from_slice(&0x7c00u16.to_le_bytes()),
    );
    match scan_weights(&mut SliceSource::new(&bytes)) {
        Err(ScanError::NonFinite(b)) => {
            assert_eq!((b.tensor, b.block, b.offset), (t.name, 1, t.offset + 144))
        }
        other => panic!("{other:?}"),
    }

    // An I32 tensor (nothing to check) and an F64 one (checked here, not by the core's kernels).
    let mut data: Vec<u8> = (0..8i32).flat_map(i32::to_le_bytes).collect();
    data.extend([1.0f64, -2.0, f64::NAN, 4.0].iter().flat_map(|v| v.to_le_bytes()));
    let infos = [tensor_info("ints", &[8], 26, 0), tensor_info("wide", &[4], 28, 32)];
    let gguf = file(3, &[kv_u32("general.alignment", 32)], &infos, 32, &data);
    let data_offset = (gguf.len() - data.len()) as u64;
    match scan_weights(&mut SliceSource::new(&gguf)) {
        Err(ScanError::NonFinite(b)) => {
            assert_eq!(
                (b.tensor.as_str(), b.ty, b.block, b.offset),
                ("wide", GgmlType::F64, 2, data_offset + 48)
            )
        }
        other => panic!("{other:?}"),
    }
    let mut clean = gguf.clone();
    clean[data_offset as usize + 48..][..8].copy_from_slice(&3.0f64.to_le_bytes());
    let summary = scan_weights(&mut SliceSource::new(&clean)).unwrap();
    assert_eq!((summary.tensors, summary.bytes, summary.skipped), (1, 32, 1));
}

/// `--mode fast` embeds with the engine's fast mode (the library's result to the bit) and
/// `--mode exact` is the default.
#[test]
fn mode_fast_embeds_like_the_library_in_fast_mode() {
    let m = model("minilm-l6-Q4_K_M");
    let text = "The quick brown fox jumps over the lazy dog.";
    let embedding = |args: &[&str]| -> Vec<f32> {
        let out = stepembed(&[&["embed", m.as_str(), text], args].concat());
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let line: Json = serde_json::from_slice(&out.stdout).unwrap();
        line["embedding"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect()
    };
    let options = stepembed::EmbedderOptions {
        mode: stepembed::core::engine::Mode::Fast,
        max_tokens: Some(12),
        max_texts: 1,
        ..Default::default()
    };
    let library = Embedder::open_with(&m, options).unwrap().embed(text).unwrap();
    let (fast, exact) = (embedding(&["--mode", "fast"]), embedding(&[]));
    assert_eq!(fast, library);
    assert_eq!(exact, embedding(&["--mode", "exact"]));
    assert_ne!(fast, exact);
    let cos: f32 = fast.iter().zip(&exact).map(|(a, b)| a * b).sum();
    assert!(cos >= 0.999, "cosine {cos}");
    let bad = stepembed(&["embed", m.as_str(), text, "--mode", "int8"]);
    assert_eq!(bad.status.code(), Some(2));
}
