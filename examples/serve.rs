//! The embedding server of [`stepembed::server`] on the command line, with the options of
//! `stepembed serve`:
//!
//! ```sh
//! cargo run --release --example serve -- tests/fixtures/models/minilm-l6-Q4_K_M.gguf --port 8080
//! ```
//!
//! It prints `stepembed: listening on http://ADDR` on stderr and serves until ctrl-C or SIGTERM.

use std::process::ExitCode;

use clap::Parser;
use stepembed::server::{self, ServeArgs, ServerConfig};

/// An OpenAI-compatible embedding server.
#[derive(Debug, Parser)]
struct Cli {
    #[command(flatten)]
    args: ServeArgs,
}

fn main() -> ExitCode {
    let started = ServerConfig::try_from(Cli::parse().args).and_then(server::run);
    match started {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("stepembed: {e}");
            ExitCode::FAILURE
        }
    }
}
