//! The `stepembed` command line: arguments (parsed by clap) and the subcommands.
//!
//! Exit codes: 0 on success (also when standard output is closed by its reader, as in
//! `stepembed … | head`); 2 for a usage error, reported by clap with a hint; 1 for every other
//! failure, reported as one line `stepembed: error: …` on stderr.

mod formats;
mod output;
mod progress;
mod step_times;

use std::ffi::OsString;
use std::fs::File;
use std::io::{BufRead, BufReader, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use clap::{Args, Parser, Subcommand, ValueEnum};
use futures_lite::future::block_on;
use serde_json::json;
use stepembed_core::engine::{Mode, PlanKind};
use stepembed_core::model::Pooling;
use stepembed_core::tokenizer;

use crate::breaker::Deadline;
use crate::embedder::{Embedder, EmbedderOptions};
use crate::inspect;
use crate::jsonl::{LineFormat, Records};
use crate::threads::Threads;
pub use formats::Format;
use formats::{Row, RowWriter};
use output::Output;
use progress::{Reporter, Total};
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
    /// Token ids of texts: one JSON line {"id"?,"text","ids"} per text
    ///
    /// [CLS] and [SEP] included; texts are truncated at the model's context (or --max-tokens)
    /// unless --no-truncate is given.
    Tokenize(TokenizeArgs),
    /// Embeddings of texts: one JSON line {"index","tokens","truncated","embedding"} per text
    ///
    /// Texts are read, tokenized, embedded (several per job: each weight chunk is read once for
    /// all of them) and written a window at a time, in input order, so memory does not grow with
    /// the number of texts. Texts given as arguments are tokenized first and the memory is
    /// planned for the longest of them. "truncated" tells whether a text had more tokens than
    /// the limit ("tokens" counts those embedded, [CLS] and [SEP] included).
    Embed(EmbedArgs),
    /// Check every weight of a model for NaN and infinity
    ///
    /// Streams every tensor of the file through a fixed buffer and fails at the first non-finite
    /// value or block scale, naming its tensor and block; prints one summary line on success.
    Validate(ValidateArgs),
    /// OpenAI-compatible embedding server (also TEI's /embed and Ollama's /api/embed)
    ///
    /// Loopback only by default; ctrl-C or SIGTERM finishes the requests in flight, then exits.
    Serve(crate::server::ServeArgs),
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
    /// Read the texts from FILE ('-': standard input), one {"text": …, "id": …} per line
    ///
    /// "id" (a string or a number) is optional and passed through to the output. Blank lines
    /// are skipped; errors name the line as FILE:LINE.
    #[arg(long, value_name = "FILE", conflicts_with = "texts")]
    pub input: Option<PathBuf>,
    /// With --input: one text per line of plain text instead of JSONL
    #[arg(long)]
    pub lines: bool,
    /// Prepend TEXT to every text before tokenizing (e.g. "query: ")
    ///
    /// The output's "text" (embed --echo-text, tokenize) is the text without it.
    #[arg(long, value_name = "TEXT")]
    pub prefix: Option<String>,
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
    #[arg(long, value_enum, default_value_t = PlanArg::Indexed)]
    pub plan: PlanArg,
    /// Use the fastest plan whose arena and vocab index fit BYTES (instead of --plan)
    #[arg(long, visible_alias = "arena-bytes", value_name = "BYTES", value_parser = positive)]
    pub memory: Option<usize>,
}

/// `--pooling`: [`Pooling`] on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PoolingArg {
    /// The mean of every token's vector ([CLS] and [SEP] included)
    Mean,
    /// The [CLS] token's vector
    Cls,
}

/// `--mode`: [`Mode`] on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum ModeArg {
    /// f32 arithmetic throughout
    #[default]
    Exact,
    /// int8 activations in the weight matrix products of quantized types: faster on long
    /// texts, a larger arena, slightly less exact (README: Numeric modes)
    Fast,
}

impl From<ModeArg> for Mode {
    fn from(mode: ModeArg) -> Mode {
        match mode {
            ModeArg::Exact => Mode::Exact,
            ModeArg::Fast => Mode::Fast,
        }
    }
}

/// `--plan`: [`PlanKind`] on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PlanArg {
    /// Vocab index and large reads: the fastest, and the most memory
    #[value(alias = "fast")]
    Indexed,
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
    /// The output format
    #[arg(long, value_enum, default_value_t = Format::Jsonl)]
    pub format: Format,
    /// With --format jsonl: add each input text as "text"
    #[arg(long)]
    pub echo_text: bool,
    /// Write the output to FILE instead of stdout (required by --format npy)
    ///
    /// FILE is replaced only once every text is embedded (a failure leaves it as it was), and
    /// never when it is the model or the --input file.
    #[arg(long, value_name = "FILE", required_if_eq("format", "npy"))]
    pub output: Option<PathBuf>,
    /// Keep the first N dimensions (Matryoshka), then scale to unit length
    ///
    /// N is at most the model's dimensions. A warning is printed when the model does not
    /// declare Matryoshka dimensions (no bert or nomic-bert GGUF does).
    #[arg(long, value_name = "N", value_parser = positive)]
    pub dims: Option<usize>,
    /// Do not scale embeddings to unit length (with --dims: only cut them)
    #[arg(long)]
    pub no_normalize: bool,
    /// How token vectors become the embedding [default: the model's pooling_type]
    #[arg(long, value_enum)]
    pub pooling: Option<PoolingArg>,
    /// How the weight matrix products are computed
    #[arg(long, value_enum, default_value_t = ModeArg::Exact)]
    pub mode: ModeArg,
    /// Threads to embed on, this one included [default: the available cores]
    ///
    /// Jobs of several texts (16 per job) are spread over them, one job per thread, each with
    /// an arena of its own (the vocab index is shared); a single job has each weight matrix
    /// product split by rows over them (with --memory, always). The embeddings are the same
    /// bits for any count.
    #[arg(long, value_name = "N", value_parser = positive)]
    pub threads: Option<usize>,
    #[command(flatten)]
    pub limit: TokenLimitArgs,
    #[command(flatten)]
    pub memory: MemoryArgs,
    /// Report a text that cannot be read or tokenized on stderr and go on without it
    ///
    /// The exit code is 0 unless every text failed. An embedding failure is still fatal.
    #[arg(long)]
    pub skip_errors: bool,
    /// No progress and no warnings on stderr (errors are still reported)
    #[arg(long, short)]
    pub quiet: bool,
    /// Then print one JSON line of measurements on stderr
    ///
    /// Its keys: texts, tokens, steps, max_step_us, p99_step_us, arena_bytes, index_bytes,
    /// threads, peak_rss_kib, wall_ms.
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
    /// An argument of the named subcommand that the model cannot take, found once it is open:
    /// reported as clap reports a usage error (exit code 2).
    Usage { command: &'static str, msg: String },
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
        Command::Serve(a) => cmd_serve(a),
    };
    match result {
        Ok(()) | Err(CliError::ClosedOutput) => 0,
        Err(CliError::Message(msg)) => report(&msg),
        Err(CliError::Usage { command, msg }) => {
            let mut cli = <Cli as clap::CommandFactory>::command();
            cli.build();
            let e = match cli.find_subcommand_mut(command) {
                Some(sub) => sub.error(clap::error::ErrorKind::ValueValidation, msg),
                None => cli.error(clap::error::ErrorKind::ValueValidation, msg),
            };
            let _ = e.print();
            e.exit_code()
        }
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

/// `serve`: runs the HTTP server until ctrl-C or SIGTERM.
fn cmd_serve(args: crate::server::ServeArgs) -> Result<(), CliError> {
    crate::server::ServerConfig::try_from(args)
        .and_then(crate::server::run)
        .map_err(|e| CliError::Message(e.to_string()))
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
    /// Its position among the command's texts, from 0.
    index: usize,
    /// `FILE:LINE` for a text of a file, its start for an argument.
    label: String,
    /// The input's `"id"`.
    id: Option<serde_json::Value>,
    text: String,
}

/// The texts of a command, one at a time (an `--input` stream is read as they are needed).
enum Texts {
    Args(std::iter::Enumerate<std::vec::IntoIter<String>>),
    Stream { records: Records<Box<dyn BufRead>>, name: String, read: usize },
}

impl Texts {
    /// The texts of `args`, for the subcommand `command`.
    fn open(args: &TextArgs, command: &'static str) -> Result<Self, CliError> {
        // (clap's `requires` is not enforced on this flag, so it is checked here.)
        if args.lines && args.input.is_none() {
            return Err(CliError::Usage { command, msg: "--lines needs --input <FILE>".into() });
        }
        let format = if args.lines { LineFormat::Plain } else { LineFormat::Jsonl };
        match &args.input {
            Some(path) if path.as_os_str() == "-" => {
                let reader: Box<dyn BufRead> = Box::new(std::io::stdin().lock());
                Ok(Texts::Stream {
                    records: Records::new(reader, "stdin", format),
                    name: "stdin".into(),
                    read: 0,
                })
            }
            Some(path) => {
                let file = File::open(path).map_err(|e| at(path, e))?;
                let name = path.display().to_string();
                let reader: Box<dyn BufRead> = Box::new(BufReader::new(file));
                Ok(Texts::Stream { records: Records::new(reader, name.clone(), format), name, read: 0 })
            }
            None => Ok(Texts::Args(args.texts.clone().into_iter().enumerate())),
        }
    }

    /// The next text; `Err` is a bad line (the stream goes on after it).
    fn next(&mut self) -> Option<Result<Text, String>> {
        match self {
            Texts::Args(texts) => {
                texts.next().map(|(index, text)| Ok(Text { index, label: short_text(&text), id: None, text }))
            }
            Texts::Stream { records, name, read } => {
                let item = records.next()?;
                let index = *read;
                *read += 1;
                Some(match item {
                    Err(e) => Err(e.to_string()),
                    Ok(r) => Ok(Text { index, label: format!("{name}:{}", r.line), id: r.id, text: r.text }),
                })
            }
        }
    }
}

/// The input file of `args` that `--output` must not replace (none for arguments and stdin).
fn input_file(args: &TextArgs) -> Option<&Path> {
    args.input.as_deref().filter(|p| p.as_os_str() != "-")
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
        PlanArg::Indexed => PlanKind::Fast,
        PlanArg::Lean => PlanKind::Lean,
        PlanArg::Smallest => PlanKind::Smallest,
    };
    EmbedderOptions {
        max_tokens: limit.max_tokens,
        plan,
        memory: memory.memory,
        truncate: !limit.no_truncate,
        ..EmbedderOptions::default()
    }
}

/// `prefix` + `text`, what is tokenized.
fn with_prefix(prefix: Option<&str>, text: &str) -> String {
    match prefix {
        Some(p) => format!("{p}{text}"),
        None => text.to_owned(),
    }
}

/// Texts tokenized for embedding, their ids apart (as [`Embedder::batches`] takes them).
#[derive(Default)]
struct Window {
    /// Each text, and whether it had more tokens than its ids.
    texts: Vec<(Text, bool)>,
    ids: Vec<Vec<u32>>,
    /// Bytes of the texts.
    bytes: usize,
}

impl Window {
    /// Whether the window holds [`WINDOW_TEXTS`] texts or [`WINDOW_BYTES`] bytes.
    fn is_full(&self) -> bool {
        self.texts.len() >= WINDOW_TEXTS || self.bytes >= WINDOW_BYTES
    }

    /// Tokenizes `prefix` + `text` at `limit` tokens and adds it; a text that cannot be
    /// tokenized goes to `errors` instead.
    fn push(
        &mut self,
        embedder: &mut Embedder,
        text: Text,
        prefix: Option<&str>,
        (limit, truncate): (usize, bool),
        (errors, reporter): (&mut Skipped, &Reporter),
    ) -> Result<(), CliError> {
        match tokenize_counted(embedder, &with_prefix(prefix, &text.text), limit, truncate) {
            Ok((ids, truncated)) => {
                self.bytes += text.text.len();
                self.texts.push((text, truncated));
                self.ids.push(ids);
                Ok(())
            }
            Err(e) => errors.skip(reporter, format!("{}: {e}", text.label)),
        }
    }
}

/// The ids of `text` cut at `limit` tokens (an error beyond it unless `truncate`), and whether
/// it was cut: a text of exactly `limit` tokens is tokenized again without a limit (with room
/// for [`tokenizer::max_ids`], a bound on any text's count) to tell.
fn tokenize_counted(
    embedder: &mut Embedder,
    text: &str,
    limit: usize,
    truncate: bool,
) -> crate::Result<(Vec<u32>, bool)> {
    let ids = embedder.tokenize_with(text, limit, truncate)?;
    let truncated = truncate
        && ids.len() >= limit
        && embedder.tokenize_with(text, tokenizer::max_ids(text), false)?.len() > ids.len();
    Ok((ids, truncated))
}

/// Most texts `embed` holds at a time (read, tokenized, embedded, written, then the next ones):
/// with [`WINDOW_BYTES`], what bounds its memory whatever the number of texts.
const WINDOW_TEXTS: usize = 256;

/// Most bytes of text `embed` holds at a time (a window holds at least one text).
const WINDOW_BYTES: usize = 1 << 20;

/// `--skip-errors`: whether a text that cannot be read or tokenized is skipped, and how many were.
struct Skipped {
    skip: bool,
    count: usize,
}

impl Skipped {
    /// `msg` as the command's error, or (skipping) as a warning.
    fn skip(&mut self, reporter: &Reporter, msg: String) -> Result<(), CliError> {
        if !self.skip {
            return Err(CliError::Message(msg));
        }
        self.count += 1;
        reporter.warn(&format!("{msg} (skipped)"));
        Ok(())
    }
}

/// What `embed` does with each text after embedding it, and its counts.
struct Sink {
    out: Output,
    rows: RowWriter,
    reporter: Reporter,
    steps: StepTimes,
    /// `--dims`, and whether to scale the cut vector to unit length.
    dims: Option<usize>,
    normalize_cut: bool,
    echo_text: bool,
    texts: usize,
    tokens: usize,
}

impl Sink {
    /// Embeds `window` (in jobs of several texts, spread over the embedder's threads when it
    /// has several) and writes its rows in order.
    fn embed(&mut self, embedder: &mut Embedder, window: &Window) -> Result<(), CliError> {
        let e = embedder.embedding_len();
        let ids: Vec<&[u32]> = window.ids.iter().map(Vec::as_slice).collect();
        let batches = embedder.batches(&window.ids);
        let failed = |e: crate::Error| CliError::Message(e.to_string());
        let finished = block_on(embedder.run_jobs(&ids, &batches, Deadline::NONE, &mut || Ok(()), true))
            .map_err(failed)?;
        // A failed job stops the window: its error is the error, before any row is written.
        let finished: Vec<_> = finished.into_iter().collect::<Result<_, _>>().map_err(failed)?;
        if finished.len() != batches.len() {
            return Err(CliError::Message("a job of the window did not run".into()));
        }
        for (range, done) in batches.iter().zip(finished) {
            done.steps.iter().for_each(|took| self.steps.record(took.as_micros() as u64));
            let texts = window.texts[range.clone()].iter().zip(&ids[range.clone()]);
            for (((text, truncated), ids), embedding) in texts.zip(done.embeddings.chunks_exact(e)) {
                let mut vector = embedding[..self.dims.unwrap_or(e).min(e)].to_vec();
                if self.normalize_cut {
                    stepembed_core::engine::l2_normalize(&mut vector);
                }
                let row = Row {
                    index: text.index,
                    id: text.id.as_ref(),
                    text: self.echo_text.then_some(text.text.as_str()),
                    tokens: ids.len(),
                    truncated: *truncated,
                    embedding: &vector,
                };
                self.rows.row(&mut self.out, &row)?;
            }
            self.texts += range.len();
            let n_tokens: usize = ids[range.clone()].iter().map(|ids| ids.len()).sum();
            self.tokens += n_tokens;
            self.reporter.advance(range.len(), n_tokens);
        }
        Ok(())
    }
}

fn cmd_embed(args: EmbedArgs) -> Result<(), CliError> {
    let started = Instant::now();
    let path = &args.model.model;
    if args.echo_text && args.format != Format::Jsonl {
        let msg = "--echo-text is for --format jsonl only".to_owned();
        return Err(CliError::Usage { command: "embed", msg });
    }
    let mut texts = Texts::open(&args.texts, "embed")?;
    let output = match &args.output {
        Some(out) => {
            let inputs: Vec<&Path> = std::iter::once(path.as_path()).chain(input_file(&args.texts)).collect();
            Some(Output::file(out, &inputs)?)
        }
        None => None,
    };
    let total = match &texts {
        Texts::Args(t) => Total::Known(t.len()),
        Texts::Stream { .. } => Total::Unknown,
    };
    let reporter =
        Reporter::new(args.quiet, progress::display(args.quiet, std::io::stderr().is_terminal(), total));
    let mut options = embedder_options(&args.limit, &args.memory);
    options.mode = args.mode.into();
    options.threads = args.threads.unwrap_or_else(Threads::available);
    // With --dims the engine's vector is cut first, then scaled here.
    options.normalize = !args.no_normalize && args.dims.is_none();
    options.pooling = args.pooling.map(|p| match p {
        PoolingArg::Mean => Pooling::Mean,
        PoolingArg::Cls => Pooling::Cls,
    });
    let prefix = args.texts.prefix.as_deref();
    let mut errors = Skipped { skip: args.skip_errors, count: 0 };
    // Texts given as arguments are all known: tokenize them first (scanning the vocab, with the
    // least memory) and plan for the longest.
    let mut known: Option<Vec<Window>> = None;
    if let Texts::Args(_) = texts {
        let scan = EmbedderOptions {
            max_tokens: Some(2),
            max_texts: 1,
            plan: PlanKind::Smallest,
            memory: None,
            threads: 1,
            ..options
        };
        let mut scanner = open_embedder(path, scan)?;
        let n_ctx = scanner.meta().hparams.n_ctx;
        let limit = options.max_tokens.unwrap_or(n_ctx).min(n_ctx);
        let mut windows = vec![Window::default()];
        while let Some(Ok(text)) = texts.next() {
            if windows.last().is_some_and(Window::is_full) {
                windows.push(Window::default());
            }
            if let Some(window) = windows.last_mut() {
                window.push(
                    &mut scanner,
                    text,
                    prefix,
                    (limit, options.truncate),
                    (&mut errors, &reporter),
                )?;
            }
        }
        let longest = windows.iter().flat_map(|w| &w.ids).map(Vec::len).max().unwrap_or(2);
        options.max_tokens = Some(longest.max(2));
        known = Some(windows);
    }
    let mut embedder = open_embedder(path, options)?;
    let e = embedder.embedding_len();
    if let Some(n) = args.dims {
        if n > e {
            let msg = format!("--dims {n}: the model's embeddings have {e} dimensions");
            return Err(CliError::Usage { command: "embed", msg });
        }
        reporter.warn(&format!(
            "{}: the model does not declare Matryoshka dimensions: its first {n} of {e} dimensions may embed poorly",
            path.display()
        ));
    }
    let model_name = path.file_stem().map_or_else(|| "model".into(), |s| s.to_string_lossy().into_owned());
    let dims = args.dims.unwrap_or(e);
    let mut sink = Sink {
        out: output.unwrap_or_else(Output::stdout),
        rows: RowWriter::new(args.format, model_name, dims),
        reporter,
        steps: StepTimes::new(),
        dims: args.dims,
        normalize_cut: args.dims.is_some() && !args.no_normalize,
        echo_text: args.echo_text,
        texts: 0,
        tokens: 0,
    };
    match known {
        Some(windows) => {
            for window in &windows {
                sink.embed(&mut embedder, window)?;
            }
        }
        None => {
            let limit = embedder.plan().limits().max_tokens;
            loop {
                let mut window = Window::default();
                while !window.is_full() {
                    let Some(item) = texts.next() else { break };
                    match item {
                        Ok(text) => window.push(
                            &mut embedder,
                            text,
                            prefix,
                            (limit, options.truncate),
                            (&mut errors, &sink.reporter),
                        )?,
                        Err(msg) => errors.skip(&sink.reporter, msg)?,
                    }
                }
                if window.texts.is_empty() {
                    break;
                }
                sink.embed(&mut embedder, &window)?;
            }
        }
    }
    if errors.count > 0 && sink.texts == 0 {
        return Err(CliError::Message(format!("every text failed ({} skipped)", errors.count)));
    }
    sink.rows.finish(&mut sink.out)?;
    let Sink { out, steps, texts: n_texts, tokens: n_tokens, reporter, .. } = sink;
    out.finish()?;
    reporter.finish();
    if args.stats {
        let line = json!({
            "texts": n_texts,
            "tokens": n_tokens,
            "steps": steps.count(),
            "max_step_us": steps.max(),
            "p99_step_us": steps.p99(),
            "arena_bytes": embedder.plan().arena_bytes(),
            "index_bytes": embedder.plan().index_bytes(),
            "threads": embedder.plan().threads(),
            "peak_rss_kib": peak_rss_kib(),
            "wall_ms": started.elapsed().as_millis() as u64,
        });
        writeln!(std::io::stderr(), "{line}").map_err(|e| CliError::Message(format!("stderr: {e}")))?;
    }
    Ok(())
}

fn cmd_tokenize(args: TokenizeArgs) -> Result<(), CliError> {
    let path = &args.model.model;
    let mut texts = Texts::open(&args.texts, "tokenize")?;
    // The embedder's arena is allocated but never touched here (zeroed pages cost no memory
    // until written); its vocab index is what makes tokenizing fast.
    let options = EmbedderOptions { max_texts: 1, ..embedder_options(&args.limit, &args.memory) };
    let mut embedder = open_embedder(path, options)?;
    let limit = options.max_tokens.unwrap_or(embedder.meta().hparams.n_ctx);
    let mut out = Output::stdout();
    while let Some(item) = texts.next() {
        let t = item?;
        let text = with_prefix(args.texts.prefix.as_deref(), &t.text);
        let ids = if options.truncate {
            embedder.tokenize_with(&text, limit, true)
        } else {
            embedder.tokenize_with(&text, tokenizer::max_ids(&text), false)
        }
        .map_err(|e| CliError::Message(format!("{}: {e}", t.label)))?;
        let line = match t.id {
            Some(id) => json!({ "id": id, "text": t.text, "ids": ids }),
            None => json!({ "text": t.text, "ids": ids }),
        };
        out.json_line(&line)?;
    }
    out.finish()
}

/// The `--help` of every subcommand, each under a `$ stepembed NAME --help` line and followed
/// by a blank line, trailing spaces removed: the CLI reference the README holds.
pub fn reference() -> String {
    let mut cli = <Cli as clap::CommandFactory>::command();
    cli.build();
    let mut text = String::new();
    for sub in cli.get_subcommands_mut() {
        let name = sub.get_name().to_owned();
        text.push_str(&format!("$ stepembed {name} --help\n"));
        // Without clap's trailing spaces, which editors strip.
        for line in sub.render_long_help().to_string().lines() {
            text.push_str(line.trim_end());
            text.push('\n');
        }
        text.push('\n');
    }
    text
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
