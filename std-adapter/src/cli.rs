//! The `stepembed` command line: arguments (parsed by clap) and the subcommands.
//!
//! Exit codes: 0 on success (also when standard output is closed by its reader, as in
//! `stepembed … | head`); 2 for a usage error, reported by clap with a hint; 1 for every other
//! failure, reported as one line `stepembed: error: …` on stderr.

mod output;
mod step_times;

use std::ffi::OsString;
use std::fs::File;
use std::io::{BufReader, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use clap::{Args, Parser, Subcommand, ValueEnum};
use serde_json::json;
use stepembed_core::engine::{Input, PlanKind, Step};
use stepembed_core::tokenizer;

use crate::embedder::{Embedder, EmbedderOptions};
use crate::inspect;
use crate::jsonl::TextLines;
use output::Output;
use step_times::StepTimes;

/// Text embeddings from GGUF models (bert, nomic-bert), with the weights streamed from the file,
/// never loaded.
#[derive(Debug, Parser)]
#[command(name = "stepembed", version, arg_required_else_help = true)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Validated listing of a GGUF file's metadata and tensors
    ///
    /// Refuses (exit code 1, one line on stderr) any file it cannot fully validate.
    Inspect(InspectArgs),
    /// Token ids of texts: one JSON line {"text","ids"} per text
    ///
    /// [CLS] and [SEP] included; texts are truncated at the model's context (or --max-tokens)
    /// unless --no-truncate is given.
    Tokenize(TokenizeArgs),
    /// Embeddings of texts: one JSON line {"text","embedding"} per text
    ///
    /// Texts are read, tokenized, embedded (several per job: each weight chunk is read once for
    /// all of them) and written a window at a time, in input order, so memory does not grow with
    /// the number of texts.
    Embed(EmbedArgs),
    /// Check every weight of a model for NaN and infinity
    ///
    /// Streams every tensor of the file through a fixed buffer and fails at the first non-finite
    /// value or block scale, naming its tensor and block; prints one summary line on success.
    Validate(ValidateArgs),
}

/// The model file, first positional argument of every command.
#[derive(Debug, Args)]
pub struct ModelArg {
    /// The GGUF model file
    #[arg(value_name = "MODEL.gguf")]
    pub model: PathBuf,
}

/// `stepembed inspect`.
#[derive(Debug, Args)]
pub struct InspectArgs {
    #[command(flatten)]
    pub model: ModelArg,
    /// Print JSON in the conventions of gguf-py's listings instead of text
    #[arg(long)]
    pub json: bool,
    /// With --json: each tensor's sum, abs_sum and first values
    ///
    /// Dequantized, streamed through a fixed buffer; a NaN or infinity is an error naming the
    /// tensor and block.
    #[arg(long, requires = "json")]
    pub dequant_stats: bool,
}

/// Where the texts of `tokenize` and `embed` come from.
#[derive(Debug, Args)]
pub struct TextArgs {
    /// The texts (after `--` if one starts with '-')
    #[arg(value_name = "TEXT", required_unless_present = "input")]
    pub texts: Vec<String>,
    /// Read the texts from a JSONL file, one {"text": …} per line
    #[arg(long, value_name = "FILE.jsonl", conflicts_with = "texts")]
    pub input: Option<PathBuf>,
}

/// How many tokens a text may have.
#[derive(Debug, Args)]
pub struct TokenLimitArgs {
    /// Most tokens per text, [CLS] and [SEP] included [default: the model's context]
    #[arg(long, value_name = "N", value_parser = positive)]
    pub max_tokens: Option<usize>,
    /// Fail on a text longer than the limit instead of truncating it
    #[arg(long)]
    pub no_truncate: bool,
}

/// How the embedder plans its memory.
#[derive(Debug, Args)]
pub struct MemoryArgs {
    /// The memory plan
    #[arg(long, value_enum, default_value_t = PlanArg::Fast)]
    pub plan: PlanArg,
    /// Use the fastest plan whose arena and vocab index fit N bytes (instead of --plan)
    #[arg(long, value_name = "N", value_parser = positive)]
    pub arena_bytes: Option<usize>,
}

/// `--plan`: [`PlanKind`] on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PlanArg {
    /// Vocab index and large reads: the fastest, and the most memory
    Fast,
    /// No vocab index (the vocab is streamed): less memory, nearly as fast on long texts
    Lean,
    /// The least memory: one weight row per read, slower
    Smallest,
}

/// `stepembed tokenize`.
#[derive(Debug, Args)]
#[command(mut_arg("no_truncate", |a| a.conflicts_with("max_tokens")))]
pub struct TokenizeArgs {
    #[command(flatten)]
    pub model: ModelArg,
    #[command(flatten)]
    pub texts: TextArgs,
    #[command(flatten)]
    pub limit: TokenLimitArgs,
    #[command(flatten)]
    pub memory: MemoryArgs,
}

/// `stepembed embed`.
#[derive(Debug, Args)]
pub struct EmbedArgs {
    #[command(flatten)]
    pub model: ModelArg,
    #[command(flatten)]
    pub texts: TextArgs,
    /// Write the JSON lines to FILE instead of stdout
    ///
    /// FILE is replaced only once every text is embedded (a failure leaves it as it was), and
    /// never when it is the model or the --input file.
    #[arg(long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    #[command(flatten)]
    pub limit: TokenLimitArgs,
    #[command(flatten)]
    pub memory: MemoryArgs,
    /// Then print one JSON line of measurements on stderr
    ///
    /// Its keys: texts, tokens, steps, max_step_us, p99_step_us, arena_bytes, index_bytes,
    /// peak_rss_kib, wall_ms.
    #[arg(long)]
    pub stats: bool,
}

/// `stepembed validate`.
#[derive(Debug, Args)]
pub struct ValidateArgs {
    #[command(flatten)]
    pub model: ModelArg,
}

/// A positive integer argument.
fn positive(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err("must be a positive integer".into()),
    }
}

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

/// Runs the command line `args` (without the program name); returns the exit code.
pub fn run(args: Vec<OsString>) -> i32 {
    let cli = match Cli::try_parse_from(std::iter::once(OsString::from("stepembed")).chain(args)) {
        Ok(cli) => cli,
        // --help and --version (exit code 0) or a usage error (2), printed as clap does.
        Err(e) => {
            return match e.print() {
                Ok(()) => e.exit_code(),
                Err(w) if w.kind() == std::io::ErrorKind::BrokenPipe && !e.use_stderr() => e.exit_code(),
                Err(w) => report(&format!("stdout: {w}")),
            }
        }
    };
    let result = match cli.command {
        Command::Inspect(a) => cmd_inspect(a),
        Command::Tokenize(a) => cmd_tokenize(a),
        Command::Embed(a) => cmd_embed(a),
        Command::Validate(a) => cmd_validate(a),
    };
    match result {
        Ok(()) | Err(CliError::ClosedOutput) => 0,
        Err(CliError::Message(msg)) => report(&msg),
    }
}

/// Reports a failure as one line on stderr (if stderr can take it) and returns exit code 1.
fn report(msg: &str) -> i32 {
    let _ = writeln!(std::io::stderr(), "stepembed: error: {msg}");
    1
}

/// `msg` prefixed with `path`, the usual form of a file's error.
fn at(path: &Path, msg: impl std::fmt::Display) -> CliError {
    CliError::Message(format!("{}: {msg}", path.display()))
}

fn cmd_inspect(args: InspectArgs) -> Result<(), CliError> {
    let path = &args.model.model;
    let mut file = crate::io::open(path).map_err(|e| at(path, e))?;
    let listing = inspect::list(&mut file).map_err(|e| at(path, e))?;
    let mut out = Output::stdout();
    if args.json {
        let mut doc = listing.to_json();
        if args.dequant_stats {
            listing.add_dequant_stats(&mut file, &mut doc).map_err(|e| at(path, e))?;
        }
        let mut text = serde_json::to_string_pretty(&doc).map_err(|e| at(path, e))?;
        text.push('\n');
        out.write_str(&text)?;
    } else {
        out.write_str(&listing.to_text())?;
    }
    out.finish()
}

fn cmd_validate(args: ValidateArgs) -> Result<(), CliError> {
    let path = &args.model.model;
    // The scan needs no arena and no vocab index: the smallest plan allocates least.
    let options = EmbedderOptions { max_texts: 1, plan: PlanKind::Smallest, ..EmbedderOptions::default() };
    let mut embedder = open_embedder(path, options)?;
    let summary = embedder.validate().map_err(|e| at(path, e))?;
    let skipped = match summary.skipped {
        0 => String::new(),
        n => format!("; {n} tensors of other types (integers, or not decodable) not checked"),
    };
    let mut out = Output::stdout();
    out.write_str(&format!(
        "{}: {} tensors ({} bytes) checked, every value finite{skipped}\n",
        path.display(),
        summary.tensors,
        summary.bytes
    ))?;
    out.finish()
}

/// One text and how its errors name it.
struct Text {
    /// `FILE:LINE` for a text of a JSONL file, its start for an argument.
    label: String,
    text: String,
}

/// The texts of a command, one at a time (an `--input` file is read as they are needed).
enum Texts {
    Args(std::vec::IntoIter<String>),
    File { reader: TextLines<BufReader<File>>, path: PathBuf },
}

impl Texts {
    fn open(args: TextArgs) -> Result<Self, CliError> {
        match args.input {
            Some(path) => {
                let file = File::open(&path).map_err(|e| at(&path, e))?;
                let reader = TextLines::new(BufReader::new(file), path.display().to_string());
                Ok(Texts::File { reader, path })
            }
            None => Ok(Texts::Args(args.texts.into_iter())),
        }
    }

    /// The `--input` file, if the texts come from one.
    fn path(&self) -> Option<&Path> {
        match self {
            Texts::Args(_) => None,
            Texts::File { path, .. } => Some(path),
        }
    }

    fn next(&mut self) -> Result<Option<Text>, CliError> {
        match self {
            Texts::Args(texts) => Ok(texts.next().map(|text| Text { label: short_text(&text), text })),
            Texts::File { reader, path } => match reader.next() {
                None => Ok(None),
                Some(Err(e)) => Err(CliError::Message(e.to_string())),
                Some(Ok(text)) => {
                    Ok(Some(Text { label: format!("{}:{}", path.display(), reader.line()), text }))
                }
            },
        }
    }
}

/// Opens the model `path` as an embedder; errors start with the path.
fn open_embedder(path: &Path, options: EmbedderOptions) -> Result<Embedder, CliError> {
    Embedder::open_with(path, options).map_err(|e| match e {
        // Its message already starts with the path.
        crate::Error::Open { .. } => CliError::Message(e.to_string()),
        e => at(path, e),
    })
}

/// Embedder options from the command line's limit and memory arguments.
fn embedder_options(limit: &TokenLimitArgs, memory: &MemoryArgs) -> EmbedderOptions {
    let plan = match memory.plan {
        PlanArg::Fast => PlanKind::Fast,
        PlanArg::Lean => PlanKind::Lean,
        PlanArg::Smallest => PlanKind::Smallest,
    };
    EmbedderOptions {
        max_tokens: limit.max_tokens,
        plan,
        memory: memory.arena_bytes,
        truncate: !limit.no_truncate,
        ..EmbedderOptions::default()
    }
}

/// Most texts `embed` holds at a time (read, tokenized, embedded, written, then the next ones):
/// with [`WINDOW_BYTES`], what bounds its memory whatever the number of texts.
const WINDOW_TEXTS: usize = 256;

/// Most bytes of text `embed` holds at a time (a window holds at least one text).
const WINDOW_BYTES: usize = 1 << 20;

fn cmd_embed(args: EmbedArgs) -> Result<(), CliError> {
    let started = Instant::now();
    let path = &args.model.model;
    let mut texts = Texts::open(args.texts)?;
    let output = match &args.output {
        Some(out) => {
            let inputs: Vec<&Path> = std::iter::once(path.as_path()).chain(texts.path()).collect();
            Some(Output::file(out, &inputs)?)
        }
        None => None,
    };
    let options = embedder_options(&args.limit, &args.memory);
    let mut embedder = open_embedder(path, options)?;
    let mut out = output.unwrap_or_else(Output::stdout);
    let mut steps = StepTimes::new();
    let (mut n_texts, mut n_tokens) = (0usize, 0usize);
    let mut window: Vec<Text> = Vec::with_capacity(WINDOW_TEXTS);
    let e = embedder.embedding_len();
    loop {
        window.clear();
        let mut bytes = 0;
        while window.len() < WINDOW_TEXTS && bytes < WINDOW_BYTES {
            let Some(text) = texts.next()? else { break };
            bytes += text.text.len();
            window.push(text);
        }
        if window.is_empty() {
            break;
        }
        let ids = window
            .iter()
            .map(|t| embedder.tokenize(&t.text).map_err(|e| CliError::Message(format!("{}: {e}", t.label))))
            .collect::<Result<Vec<_>, _>>()?;
        for range in embedder.batches(&ids) {
            let batch: Vec<&[u32]> = ids[range.clone()].iter().map(Vec::as_slice).collect();
            let mut job =
                embedder.job(Input::IdBatch(&batch)).map_err(|e| CliError::Message(e.to_string()))?;
            let embeddings = loop {
                let t0 = Instant::now();
                let step = job.step().map_err(|e| CliError::Message(e.to_string()))?;
                steps.record(t0.elapsed().as_micros() as u64);
                if let Step::Done(v) = step {
                    break v.to_vec();
                }
            };
            n_tokens += job.n_tokens();
            for (t, embedding) in window[range].iter().zip(embeddings.chunks_exact(e)) {
                out.json_line(&json!({ "text": t.text, "embedding": embedding }))?;
            }
        }
        n_texts += window.len();
    }
    out.finish()?;
    if args.stats {
        let line = json!({
            "texts": n_texts,
            "tokens": n_tokens,
            "steps": steps.count(),
            "max_step_us": steps.max(),
            "p99_step_us": steps.p99(),
            "arena_bytes": embedder.plan().arena_bytes(),
            "index_bytes": embedder.plan().index_bytes(),
            "peak_rss_kib": peak_rss_kib(),
            "wall_ms": started.elapsed().as_millis() as u64,
        });
        writeln!(std::io::stderr(), "{line}").map_err(|e| CliError::Message(format!("stderr: {e}")))?;
    }
    Ok(())
}

fn cmd_tokenize(args: TokenizeArgs) -> Result<(), CliError> {
    let path = &args.model.model;
    let mut texts = Texts::open(args.texts)?;
    // The embedder's arena is allocated but never touched here (zeroed pages cost no memory
    // until written); its vocab index is what makes tokenizing fast.
    let options = EmbedderOptions { max_texts: 1, ..embedder_options(&args.limit, &args.memory) };
    let mut embedder = open_embedder(path, options)?;
    let limit = options.max_tokens.unwrap_or(embedder.meta().hparams.n_ctx);
    let mut out = Output::stdout();
    while let Some(t) = texts.next()? {
        let ids = if options.truncate {
            embedder.tokenize_with(&t.text, limit, true)
        } else {
            embedder.tokenize_with(&t.text, tokenizer::max_ids(&t.text), false)
        }
        .map_err(|e| CliError::Message(format!("{}: {e}", t.label)))?;
        out.json_line(&json!({ "text": t.text, "ids": ids }))?;
    }
    out.finish()
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
