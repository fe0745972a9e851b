//! # stepembed-core
//!
//! Text embeddings from GGUF models (bert, nomic-bert; from token ids gemma-embedding, qwen3 and
//! qwen2) computed without loading the model: weights are streamed in fixed chunks from an
//! [`embedded_io`] `Read + Seek` source into caller-supplied buffers, and the whole inference is
//! an explicit state machine advanced with `step()`, each step doing a bounded amount of work.
//!
//! `#![no_std]`, no `alloc`, no panics on any input: every malformed file, text or buffer size is
//! a typed [`Error`].
//!
//! Modules mirror the pipeline:
//! * [`gguf`] — the file format: streaming reader, tensor streams, validation;
//! * [`quant`] — ggml block formats, dequantization and fused matrix kernels;
//! * [`io`] — the byte source abstraction;
//! * [`tokenizer`] — BERT WordPiece as Hugging Face does it, from the vocab in the file.
#![no_std]
#![deny(unsafe_code)]
#![warn(missing_docs)]
#![cfg_attr(
    not(test),
    deny(
        clippy::indexing_slicing,
        clippy::arithmetic_side_effects,
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::unreachable,
        clippy::todo,
        clippy::unimplemented
    )
)]
#![deny(clippy::undocumented_unsafe_blocks)]

pub mod engine;
pub mod error;
pub mod gguf;
pub mod io;
pub mod model;
pub mod quant;
pub mod tokenizer;

pub use error::{Error, InputError, Malformed, Name, Result, Unsupported};
