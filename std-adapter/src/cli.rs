//! The `stepembed` command line: argument parsing and the subcommands.
//!
//! Every failure is one line on stderr and exit code 1.

use std::ffi::OsString;
use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use serde_json::json;
use stepembed_core::engine::{Input, PlanKind, Step};

use crate::embedder::{Embedder, EmbedderOptions};
use crate::inspect;

/// Why a command stopped.
#[derive(Debug)]
pub enum CliError {
    /// A failure, as the one line the user sees.
    Message(String),
    /// Standard output was closed by its reader (`stepembed … | head`): not a failure.
    ClosedOutput,
}

impl From<String> for CliError {
    fn from(msg: String) -> Self {
        CliError::Message(msg)
    }
}

impl From<std::io::Error> for CliError {
    fn from(e: std::io::Error) -> Self {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            CliError::ClosedOutput
        } else {
            CliError::Message(e.to_string())
        }
    }
}

impl From<serde_json::Error> for CliError {
    fn from(e: serde_json::Error) -> Self {
        if e.io_error_kind() == Some(std::io::ErrorKind::BrokenPipe) {
            CliError::ClosedOutput
        } else {
            CliError::Message(e.to_string())
        }
    }
}

const USAGE: &str = "usage: stepembed <command> ...
commands:
  embed MODEL.gguf (TEXT... | --input FILE.jsonl) [--output FILE] [--max-tokens N]
        [--plan fast|lean|smallest] [--arena-bytes N] [--no-truncate] [--stats]
                                   one JSON line {\"text\",\"embedding\"} per text; --stats
                                   adds one JSON line of measurements on stderr;
                                   --arena-bytes picks the fastest plan that fits
  tokenize MODEL.gguf (TEXT... | --input FILE.jsonl) [--max-tokens N | --no-truncate]
                                   one JSON line {\"text\",\"ids\"} per text ([CLS]/[SEP]
                                   included; truncated at the model's context by default)
  inspect MODEL.gguf [--json] [--dequant-stats]
                                   validated listing of metadata and tensors; with
                                   --dequant-stats, each tensor's sum, abs_sum and first
                                   values (dequantized, streamed through a fixed buffer)
  help                             this text";

/// Runs the command line `args` (without the program name); returns the exit code.
pub fn run(args: Vec<OsString>) -> i32 {
    match dispatch(args) {
        Ok(()) | Err(CliError::ClosedOutput) => 0,
        Err(CliError::Message(msg)) => {
            let _ = writeln!(std::io::stderr(), "stepembed: error: {msg}");
            1
        }
    }
}

fn dispatch(args: Vec<OsString>) -> Result<(), CliError> {
    let mut args = Args::new(args);
    match args.command()?.as_str() {
        "inspect" => cmd_inspect(args),
        "embed" => cmd_embed(args),
        "tokenize" => cmd_tokenize(args),
        "help" | "--help" | "-h" => {
            println!("{USAGE}");
            Ok(())
        }
        other => Err(CliError::Message(format!("unknown command {other:?} (try `stepembed help`)"))),
    }
}

fn cmd_inspect(mut args: Args) -> Result<(), CliError> {
    let json = args.flag("--json");
    let stats = args.flag("--dequant-stats");
    let path = args.path("MODEL.gguf")?;
    args.finish()?;
    if stats && !json {
        return Err(CliError::Message("--dequant-stats needs --json".into()));
    }
    let mut file =
        crate::io::open(&path).map_err(|e| CliError::Message(format!("{}: {e}", path.display())))?;
    let listing =
        inspect::list(&mut file).map_err(|e| CliError::Message(format!("{}: {e}", path.display())))?;
    let mut out = std::io::stdout().lock();
    if json {
        let mut doc = listing.to_json();
        if stats {
            listing
                .add_dequant_stats(&mut file, &mut doc)
                .map_err(|e| CliError::Message(format!("{}: {e}", path.display())))?;
        }
        serde_json::to_writer_pretty(&mut out, &doc)?;
        writeln!(out)?;
    } else {
        write!(out, "{}", listing.to_text())?;
    }
    Ok(())
}

/// Texts from the positional arguments or from `--input FILE.jsonl` (one `{"text": …}` per line).
fn texts(args: &mut Args) -> Result<Vec<String>, CliError> {
    let input = args.value("--input")?;
    let mut texts = Vec::new();
    while let Some(t) = args.positional() {
        texts.push(t);
    }
    match input {
        Some(path) if texts.is_empty() => {
            let data =
                std::fs::read_to_string(&path).map_err(|e| CliError::Message(format!("{path}: {e}")))?;
            for (i, line) in data.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
                let v: serde_json::Value = serde_json::from_str(line)
                    .map_err(|e| CliError::Message(format!("{path}:{}: {e}", i + 1)))?;
                let t = v.get("text").and_then(serde_json::Value::as_str);
                let t =
                    t.ok_or_else(|| CliError::Message(format!("{path}:{}: no \"text\" string", i + 1)))?;
                texts.push(t.to_owned());
            }
            Ok(texts)
        }
        Some(_) => Err(CliError::Message("give texts as arguments or with --input, not both".into())),
        None if texts.is_empty() => {
            Err(CliError::Message("no text given (arguments or --input FILE.jsonl)".into()))
        }
        None => Ok(texts),
    }
}

/// Opens the model named by the first positional, with the CLI's memory options.
fn open_model(args: &mut Args) -> Result<(PathBuf, EmbedderOptions), CliError> {
    let plan = match args.value("--plan")?.as_deref() {
        None | Some("fast") => PlanKind::Fast,
        Some("lean") => PlanKind::Lean,
        Some("smallest") => PlanKind::Smallest,
        Some(other) => {
            return Err(CliError::Message(format!("--plan must be fast, lean or smallest, not {other:?}")))
        }
    };
    let options = EmbedderOptions {
        max_tokens: args.number("--max-tokens")?,
        plan,
        memory: args.number("--arena-bytes")?,
        truncate: !args.flag("--no-truncate"),
        ..EmbedderOptions::default()
    };
    let path = args.path("MODEL.gguf")?;
    Ok((path, options))
}

fn cmd_embed(mut args: Args) -> Result<(), CliError> {
    let started = Instant::now();
    let stats = args.flag("--stats");
    let output = args.value("--output")?;
    let (path, options) = open_model(&mut args)?;
    let texts = texts(&mut args)?;
    args.finish()?;
    let mut embedder = Embedder::open_with(&path, options)
        .map_err(|e| CliError::Message(format!("{}: {e}", path.display())))?;
    let mut out: Box<dyn Write> = match &output {
        Some(p) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(p).map_err(|e| CliError::Message(format!("{p}: {e}")))?,
        )),
        None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
    };
    let mut steps_us: Vec<u64> = Vec::new();
    let mut tokens = 0usize;
    // Texts are tokenized first, then embedded several per job (each weight chunk read once for
    // all of them).
    let mut ids = Vec::with_capacity(texts.len());
    for text in &texts {
        ids.push(
            embedder.tokenize(text).map_err(|e| CliError::Message(format!("{}: {e}", short_text(text))))?,
        );
    }
    let e = embedder.embedding_len();
    for range in embedder.batches(&ids) {
        let batch: Vec<&[u32]> = ids[range.clone()].iter().map(Vec::as_slice).collect();
        let mut job = embedder.job(Input::IdBatch(&batch)).map_err(|e| CliError::Message(e.to_string()))?;
        let embeddings = loop {
            let t0 = Instant::now();
            let step = job.step().map_err(|e| CliError::Message(e.to_string()))?;
            steps_us.push(t0.elapsed().as_micros() as u64);
            if let Step::Done(v) = step {
                break v.to_vec();
            }
        };
        tokens += job.n_tokens();
        for (text, embedding) in texts[range].iter().zip(embeddings.chunks_exact(e)) {
            serde_json::to_writer(&mut out, &json!({ "text": text, "embedding": embedding }))?;
            writeln!(out)?;
        }
    }
    out.flush()?;
    if stats {
        let mut sorted = steps_us.clone();
        sorted.sort_unstable();
        let p99 = sorted.get((sorted.len() * 99).div_ceil(100).saturating_sub(1)).copied().unwrap_or(0);
        let line = json!({
            "texts": texts.len(),
            "tokens": tokens,
            "steps": steps_us.len(),
            "max_step_us": sorted.last().copied().unwrap_or(0),
            "p99_step_us": p99,
            "arena_bytes": embedder.plan().arena_bytes(),
            "index_bytes": embedder.plan().index_bytes(),
            "peak_rss_kib": peak_rss_kib(),
            "wall_ms": started.elapsed().as_millis() as u64,
        });
        eprintln!("{line}");
    }
    Ok(())
}

fn cmd_tokenize(mut args: Args) -> Result<(), CliError> {
    let (path, mut options) = open_model(&mut args)?;
    let texts = texts(&mut args)?;
    args.finish()?;
    if !options.truncate && options.max_tokens.is_some() {
        return Err(CliError::Message("--max-tokens and --no-truncate exclude each other".into()));
    }
    // The embedder's arena is allocated but never touched here (zeroed pages cost no memory
    // until written); its vocab index is what makes tokenizing fast.
    options.max_texts = 1;
    let mut embedder = Embedder::open_with(&path, options)
        .map_err(|e| CliError::Message(format!("{}: {e}", path.display())))?;
    let limit = options.max_tokens.unwrap_or(embedder.meta().hparams.n_ctx);
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    for text in &texts {
        let ids = if options.truncate {
            embedder.tokenize_with(text, limit, true)
        } else {
            // Every piece takes at least one char: this bound is never reached.
            embedder.tokenize_with(text, text.chars().count() + 2, false)
        }
        .map_err(|e| CliError::Message(format!("{}: {e}", short_text(text))))?;
        serde_json::to_writer(&mut out, &json!({ "text": text, "ids": ids }))?;
        writeln!(out)?;
    }
    out.flush()?;
    Ok(())
}

/// The start of a text, for error messages.
fn short_text(text: &str) -> String {
    let cut: String = text.chars().take(40).collect();
    if cut.len() < text.len() {
        format!("{cut:?}…")
    } else {
        format!("{cut:?}")
    }
}

/// Peak resident set size of this process in KiB (VmHWM), 0 where /proc is unavailable.
fn peak_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// A tiny argument parser: flags may come anywhere; the rest are positionals, in order.
struct Args {
    items: Vec<Option<String>>,
}

impl Args {
    fn new(args: Vec<OsString>) -> Self {
        let items = args.into_iter().map(|a| Some(a.to_string_lossy().into_owned())).collect();
        Args { items }
    }

    /// Takes the first positional as the command name.
    fn command(&mut self) -> Result<String, CliError> {
        self.positional().ok_or_else(|| CliError::Message(format!("no command given\n{USAGE}")))
    }

    fn positional(&mut self) -> Option<String> {
        let mut only_positionals = false;
        for item in &mut self.items {
            match item.as_deref() {
                Some("--") if !only_positionals => {
                    only_positionals = true;
                    *item = None;
                }
                Some(s) if only_positionals || !s.starts_with("--") || s == "-" => return item.take(),
                _ => {}
            }
        }
        None
    }

    /// Whether boolean `--flag` is present (removes it).
    fn flag(&mut self, name: &str) -> bool {
        let mut found = false;
        for item in &mut self.items {
            if item.as_deref() == Some(name) {
                *item = None;
                found = true;
            }
        }
        found
    }

    /// The value of `--name VALUE` (or `--name=VALUE`), removed; an error when the value is
    /// missing.
    fn value(&mut self, name: &str) -> Result<Option<String>, CliError> {
        let prefix = format!("{name}=");
        let mut i = 0;
        while i < self.items.len() {
            match self.items[i].as_deref() {
                Some(a) if a == name => {
                    self.items[i] = None;
                    let v = self.items.get_mut(i + 1).and_then(Option::take);
                    return v.map(Some).ok_or_else(|| CliError::Message(format!("{name} needs a value")));
                }
                Some(a) if a.starts_with(&prefix) => {
                    let v = a[prefix.len()..].to_owned();
                    self.items[i] = None;
                    return Ok(Some(v));
                }
                _ => i += 1,
            }
        }
        Ok(None)
    }

    /// The value of `--name N` as a positive integer.
    fn number(&mut self, name: &str) -> Result<Option<usize>, CliError> {
        match self.value(name)? {
            None => Ok(None),
            Some(v) => match v.parse::<usize>() {
                Ok(n) if n > 0 => Ok(Some(n)),
                _ => Err(CliError::Message(format!("{name} needs a positive integer, not {v:?}"))),
            },
        }
    }

    /// A required positional path.
    fn path(&mut self, what: &str) -> Result<PathBuf, CliError> {
        self.positional().map(PathBuf::from).ok_or_else(|| CliError::Message(format!("missing {what}")))
    }

    /// Fails on anything not consumed (an unknown flag or an extra argument).
    fn finish(self) -> Result<(), CliError> {
        match self.items.into_iter().flatten().next() {
            None => Ok(()),
            Some(a) if a.starts_with("--") => Err(CliError::Message(format!("unknown option {a}"))),
            Some(a) => Err(CliError::Message(format!("unexpected argument {a:?}"))),
        }
    }
}
