//! # stepembed
//!
//! The std adapter over [`stepembed_core`]: file-backed sources, the blocking and async
//! [`Embedder`], and the `stepembed` command-line tool.
//!
//! ```no_run
//! let mut embedder = stepembed::Embedder::open("model.gguf")?;
//! let v = embedder.embed("Hello world")?;
//! # Ok::<(), stepembed::Error>(())
//! ```

pub mod breaker;
pub mod cli;
pub mod embedder;
pub mod error;
pub mod inspect;
pub mod io;
pub mod jsonl;
pub mod server;
pub mod service;
pub mod validate;

pub use embedder::{Embedder, EmbedderOptions, Running, StepStats, Tokens};
pub use error::{Error, Result};

pub use stepembed_core as core;
