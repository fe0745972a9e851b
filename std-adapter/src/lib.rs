//! # stepembed
//!
//! The std adapter over [`stepembed_core`]: file-backed sources, the `stepembed` command-line tool,
//! and (to come) the sync and async embedding APIs.

pub mod cli;
pub mod inspect;
pub mod io;

pub use stepembed_core as core;
