//! # stepembed
//!
//! The std adapter over [`stepembed_core`]: file-backed sources, the blocking and async
//! [`Embedder`], the request [`service`] every host shares, and — with the default `cli` feature —
//! the `stepembed` command-line tool and its HTTP server.
//!
//! ```no_run
//! let mut embedder = stepembed::Embedder::open("model.gguf")?;
//! let v = embedder.embed("Hello world")?;
//! # Ok::<(), stepembed::Error>(())
//! ```

pub mod breaker;
#[cfg(feature = "cli")]
pub mod cli;
pub mod embedder;
pub mod error;
#[cfg(feature = "cli")]
pub mod inspect;
pub mod io;
#[cfg(feature = "cli")]
pub mod jsonl;
#[cfg(feature = "cli")]
pub mod server;
pub mod service;
mod spread;
pub mod threads;
#[cfg(feature = "cli")]
pub mod validate;

pub use embedder::{Embedder, EmbedderOptions, Running, StepStats, Tokens};
pub use error::{Error, Result};
pub use threads::Threads;

pub use stepembed_core as core;
