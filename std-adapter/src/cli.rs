//! The `stepembed` command line: argument parsing and the subcommands.
//!
//! Every failure is one line on stderr and exit code 1.

use std::ffi::OsString;
use std::io::Write as _;
use std::path::PathBuf;

use crate::inspect;

/// What went wrong, as the one line the user sees.
#[derive(Debug)]
pub struct CliError(pub String);

impl<E: std::fmt::Display> From<E> for CliError {
    fn from(e: E) -> Self {
        CliError(e.to_string())
    }
}

const USAGE: &str = "usage: stepembed <command> ...
commands:
  inspect MODEL.gguf [--json] [--dequant-stats]
                                   validated listing of metadata and tensors; with
                                   --dequant-stats, each tensor's sum, abs_sum and first
                                   values (dequantized, streamed through a fixed buffer)
  help                             this text";

/// Runs the command line `args` (without the program name); returns the exit code.
pub fn run(args: Vec<OsString>) -> i32 {
    match dispatch(args) {
        Ok(()) => 0,
        // A closed pipe (`stepembed inspect … | head`) is the reader's choice, not a failure.
        Err(CliError(msg)) if msg.contains("Broken pipe") => 0,
        Err(CliError(msg)) => {
            let _ = writeln!(std::io::stderr(), "stepembed: error: {msg}");
            1
        }
    }
}

fn dispatch(args: Vec<OsString>) -> Result<(), CliError> {
    let mut args = Args::new(args);
    match args.command()?.as_str() {
        "inspect" => cmd_inspect(args),
        "help" | "--help" | "-h" => {
            println!("{USAGE}");
            Ok(())
        }
        other => Err(CliError(format!(
            "unknown command {other:?} (try `stepembed help`)"
        ))),
    }
}

fn cmd_inspect(mut args: Args) -> Result<(), CliError> {
    let json = args.flag("--json");
    let stats = args.flag("--dequant-stats");
    let path = args.path("MODEL.gguf")?;
    args.finish()?;
    if stats && !json {
        return Err(CliError("--dequant-stats needs --json".into()));
    }
    let mut file =
        crate::io::open(&path).map_err(|e| CliError(format!("{}: {e}", path.display())))?;
    let listing =
        inspect::list(&mut file).map_err(|e| CliError(format!("{}: {e}", path.display())))?;
    let mut out = std::io::stdout().lock();
    if json {
        let mut doc = listing.to_json();
        if stats {
            listing
                .add_dequant_stats(&mut file, &mut doc)
                .map_err(|e| CliError(format!("{}: {e}", path.display())))?;
        }
        serde_json::to_writer_pretty(&mut out, &doc)?;
        writeln!(out)?;
    } else {
        write!(out, "{}", listing.to_text())?;
    }
    Ok(())
}

/// A tiny argument parser: flags may come anywhere; the rest are positionals, in order.
struct Args {
    items: Vec<Option<String>>,
}

impl Args {
    fn new(args: Vec<OsString>) -> Self {
        let items = args
            .into_iter()
            .map(|a| Some(a.to_string_lossy().into_owned()))
            .collect();
        Args { items }
    }

    /// Takes the first positional as the command name.
    fn command(&mut self) -> Result<String, CliError> {
        self.positional()
            .ok_or_else(|| CliError(format!("no command given\n{USAGE}")))
    }

    fn positional(&mut self) -> Option<String> {
        let mut only_positionals = false;
        for item in &mut self.items {
            match item.as_deref() {
                Some("--") if !only_positionals => {
                    only_positionals = true;
                    *item = None;
                }
                Some(s) if only_positionals || !s.starts_with("--") || s == "-" => {
                    return item.take()
                }
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

    /// A required positional path.
    fn path(&mut self, what: &str) -> Result<PathBuf, CliError> {
        self.positional()
            .map(PathBuf::from)
            .ok_or_else(|| CliError(format!("missing {what}")))
    }

    /// Fails on anything not consumed (an unknown flag or an extra argument).
    fn finish(self) -> Result<(), CliError> {
        match self.items.into_iter().flatten().next() {
            None => Ok(()),
            Some(a) if a.starts_with("--") => Err(CliError(format!("unknown option {a}"))),
            Some(a) => Err(CliError(format!("unexpected argument {a:?}"))),
        }
    }
}
