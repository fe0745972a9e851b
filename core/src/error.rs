//! The one error type of the core.
//!
//! Every failure is a small `Copy` value: a job that fails keeps its error and hands the same value
//! back on every later step (the job is poisoned), and nothing has to be allocated to report it.
//! Errors from the byte source are kept as their [`embedded_io::ErrorKind`] (the source's own error
//! type need not be `Copy`), together with the offset the core was reading at.

use core::fmt;

use crate::gguf::GgmlType;

/// Everything that can go wrong in the core.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// The byte source failed while the core read or sought at `offset`.
    Io {
        /// What the source reported.
        kind: embedded_io::ErrorKind,
        /// The absolute file offset the core was accessing.
        offset: u64,
    },
    /// The file is not a well-formed GGUF file (or not a well-formed model): what is wrong, and
    /// the absolute byte offset where it was found.
    Malformed {
        /// What is wrong.
        what: Malformed,
        /// Where in the file it was found.
        offset: u64,
    },
    /// The file is well-formed but asks for something this library does not compute.
    Unsupported(Unsupported),
    /// A caller-supplied buffer is smaller than the operation needs.
    BufferTooSmall {
        /// Bytes (or elements, as the operation documents) needed.
        needed: usize,
        /// Bytes (or elements) given.
        given: usize,
    },
    /// The arena given to a job is smaller than its plan.
    ArenaTooSmall {
        /// Bytes the plan needs.
        needed: usize,
        /// Bytes given.
        given: usize,
    },
    /// The input (text or token ids) is outside what the job was planned for.
    Input(InputError),
    /// A value computed by the forward pass is NaN or infinite: the model's weights are corrupt
    /// (a NaN or infinite scale, norm or bias, or values large enough to overflow f32). Nothing
    /// non-finite ever becomes an embedding.
    NonFinite {
        /// The stage that produced it (a [`crate::engine::Progress::stage`] name).
        stage: &'static str,
        /// The layer, for stages inside one.
        layer: Option<u16>,
    },
    /// A plan, index or lookup made for another model (or another tokenizer or numeric mode) was
    /// given to a job.
    PlanMismatch,
    /// A result was asked for before it existed (e.g. a builder finished early), or an internal
    /// invariant does not hold (a bug: please report it). A state machine that returns it is
    /// poisoned.
    InvalidState,
}

/// What makes a file malformed. Paired with a byte offset in [`Error::Malformed`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Malformed {
    /// The file does not start with `GGUF`.
    BadMagic,
    /// The magic is right but the version reads as a byte-swapped small number: a big-endian file.
    BigEndian,
    /// GGUF version 1 (32-bit counts) or a version newer than 3.
    UnsupportedVersion(u32),
    /// The file ends before the structure being read.
    Truncated,
    /// A tensor or KV count larger than the rest of the file could possibly hold.
    CountTooLarge(u64),
    /// A string or array length larger than the rest of the file.
    LengthTooLarge(u64),
    /// A metadata value type id outside 0..=12.
    UnknownValueType(u32),
    /// An array of arrays of arrays: GGUF readers accept one level of nesting at most.
    NestingTooDeep,
    /// A metadata key longer than the reader accepts (see [`crate::gguf::MAX_KEY_LEN`]).
    KeyTooLong(u64),
    /// A metadata key or tensor name that is not UTF-8.
    InvalidUtf8,
    /// The same metadata key twice.
    DuplicateKey,
    /// A tensor name of 64 bytes or more (llama.cpp's limit).
    NameTooLong(u64),
    /// The same tensor name twice.
    DuplicateTensor,
    /// A tensor with a number of dimensions outside 1..=4.
    BadDimensionCount(u32),
    /// A tensor dimension ggml cannot represent (above `i64::MAX`).
    BadDimension(u64),
    /// A ggml type id this reader does not know.
    UnknownGgmlType(u32),
    /// A tensor whose row length (ne0) is not a multiple of its type's block size.
    RowNotBlockMultiple {
        /// The tensor's type.
        ty: GgmlType,
        /// Its row length.
        ne0: u64,
    },
    /// A size computation overflowed 64 bits.
    Overflow,
    /// `general.alignment` is zero, not a power of two, or not a u32.
    BadAlignment(u64),
    /// A tensor's data offset is not a multiple of the alignment.
    Misaligned(u64),
    /// A tensor extends past the end of the file.
    OutOfBounds,
    /// Two tensors share bytes.
    Overlap,
    /// A tensor's data does not start where the previous one's (rounded up to the alignment)
    /// ends: tensors are stored one after another in table order, as ggml writes and requires
    /// them. A patched offset, type or shape breaks this chain.
    UnexpectedOffset {
        /// Where the data should start, relative to the data section.
        expected: u64,
    },
    /// The file goes on past the end of the last tensor's data and its alignment padding: the
    /// tensor table does not describe the file (a shrunken type or dimension, or bytes appended).
    DataSizeMismatch {
        /// Bytes the tensor table accounts for after the data section's start, padding included.
        expected: u64,
    },
    /// A known metadata key has a value of the wrong type.
    WrongValueType,
    /// A required metadata key is absent.
    MissingKey(&'static str),
    /// A tensor the architecture needs is absent.
    MissingTensor(Name),
    /// A tensor the architecture does not have (e.g. a gated FFN in a bert file): the file is
    /// of a variant the engine would compute wrongly.
    UnexpectedTensor(Name),
    /// A tensor has a shape that does not fit the model's hyper-parameters.
    BadShape(Name),
    /// A hyper-parameter is zero, inconsistent or unreasonably large.
    BadHyperParameter(&'static str),
    /// A float tensor holds a NaN or an infinity.
    NonFinite(Name),
    /// A vocab entry or special token id that does not fit the vocab.
    BadVocab,
}

/// Well-formed input that this library does not handle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Unsupported {
    /// An architecture other than `bert`, `nomic-bert`, `gemma-embedding`, `qwen2` and `qwen3`.
    Architecture(Name),
    /// A tensor stored in a ggml type the engine cannot compute with.
    TensorType {
        /// The tensor.
        tensor: Name,
        /// Its type.
        ty: GgmlType,
    },
    /// A tokenizer model the library does not know, or text input for a model whose tokenizer
    /// is not wired to jobs yet (SentencePiece `"llama"`, BPE `"gpt2"`: give token ids).
    TokenizerModel(Name),
    /// A pooling type other than mean (1), CLS (2) and, for the decoders, last (3).
    PoolingType(u32),
    /// A RoPE scaling type other than linear (`rope.scaling.type`, e.g. `yarn`).
    RopeScaling(Name),
}

/// Input outside what a job was planned for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum InputError {
    /// The text tokenizes to more tokens than allowed and truncation is off.
    TooManyTokens {
        /// Tokens the text needs (counted up to the point where the limit was exceeded).
        tokens: usize,
        /// The limit.
        max: usize,
    },
    /// More texts than the plan's limit.
    TooManyTexts {
        /// Texts given.
        texts: usize,
        /// The limit.
        max: usize,
    },
    /// A token id outside the vocab.
    TokenIdOutOfRange(u32),
    /// An empty token sequence, or an empty batch.
    Empty,
    /// Limits a plan cannot be made for: fewer than 2 tokens (room for [CLS] and [SEP]), no
    /// texts, more texts than tokens, or more than [`crate::engine::MAX_TOKENS`] tokens.
    BadLimits,
}

impl Error {
    /// An [`Error::Malformed`] at `offset`.
    pub const fn malformed(what: Malformed, offset: u64) -> Self {
        Error::Malformed { what, offset }
    }
}

/// A short name (a tensor name or an architecture string) kept inline, so that errors stay `Copy`.
///
/// GGUF tensor names are shorter than 64 bytes; longer strings are cut at a character boundary.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Name {
    bytes: [u8; Name::CAPACITY],
    len: u8,
}

impl Name {
    /// The longest name kept whole, in bytes.
    pub const CAPACITY: usize = 63;

    /// `s`, cut to at most [`Name::CAPACITY`] bytes at a character boundary.
    pub fn new(s: &str) -> Self {
        let mut end = s.len().min(Self::CAPACITY);
        while !s.is_char_boundary(end) {
            end = end.saturating_sub(1);
        }
        let mut bytes = [0u8; Self::CAPACITY];
        let src = s.as_bytes().get(..end).unwrap_or_default();
        for (dst, src) in bytes.iter_mut().zip(src) {
            *dst = *src;
        }
        // `end` <= 63, so it fits a u8.
        Name { bytes, len: end as u8 }
    }

    /// The name as a string slice.
    pub fn as_str(&self) -> &str {
        let bytes = self.bytes.get(..usize::from(self.len)).unwrap_or_default();
        // Built from a `&str` cut at a char boundary, so always UTF-8.
        core::str::from_utf8(bytes).unwrap_or_default()
    }
}

impl fmt::Debug for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Io { kind, offset } => write!(f, "I/O error at byte {offset}: {kind:?}"),
            Error::Malformed { what, offset } => {
                write!(f, "malformed file at byte {offset}: {what}")
            }
            Error::Unsupported(u) => write!(f, "unsupported: {u}"),
            Error::BufferTooSmall { needed, given } => {
                write!(f, "buffer too small: {needed} needed, {given} given")
            }
            Error::ArenaTooSmall { needed, given } => {
                write!(f, "arena too small: {needed} bytes needed, {given} given")
            }
            Error::Input(e) => write!(f, "{e}"),
            Error::NonFinite { stage, layer: Some(layer) } => {
                write!(f, "non-finite values (NaN or infinity) computed in layer {layer}, stage {stage}: the model's weights are corrupt")
            }
            Error::NonFinite { stage, layer: None } => {
                write!(f, "non-finite values (NaN or infinity) computed in stage {stage}: the model's weights are corrupt")
            }
            Error::PlanMismatch => {
                f.write_str("the plan, index or lookup was made for another model or mode")
            }
            Error::InvalidState => f.write_str("called out of order, or an internal invariant broke"),
        }
    }
}

impl fmt::Display for Malformed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use Malformed::*;
        match self {
            BadMagic => f.write_str("not a GGUF file (bad magic)"),
            BigEndian => f.write_str("big-endian GGUF files are not supported"),
            UnsupportedVersion(v) => write!(f, "unsupported GGUF version {v} (2 and 3 are read)"),
            Truncated => f.write_str("file truncated"),
            CountTooLarge(n) => write!(f, "count {n} larger than the file could hold"),
            LengthTooLarge(n) => write!(f, "length {n} larger than the rest of the file"),
            UnknownValueType(t) => write!(f, "unknown metadata value type {t}"),
            NestingTooDeep => f.write_str("arrays nested more than one level deep"),
            KeyTooLong(n) => write!(f, "metadata key of {n} bytes is too long"),
            InvalidUtf8 => f.write_str("key or name is not valid UTF-8"),
            DuplicateKey => f.write_str("duplicate metadata key"),
            NameTooLong(n) => write!(f, "tensor name of {n} bytes (must be under 64)"),
            DuplicateTensor => f.write_str("duplicate tensor name"),
            BadDimensionCount(n) => write!(f, "tensor with {n} dimensions (1 to 4 allowed)"),
            BadDimension(n) => write!(f, "tensor dimension {n} out of range"),
            UnknownGgmlType(t) => write!(f, "unknown ggml type id {t}"),
            RowNotBlockMultiple { ty, ne0 } => write!(
                f,
                "row length {ne0} is not a multiple of {}'s block of {}",
                ty.name(),
                ty.block_elems()
            ),
            Overflow => f.write_str("size computation overflows"),
            BadAlignment(a) => write!(f, "alignment {a} is not a power of two"),
            Misaligned(o) => write!(f, "tensor data offset {o} is not aligned"),
            OutOfBounds => f.write_str("tensor data extends past the end of the file"),
            Overlap => f.write_str("tensor data overlaps another tensor"),
            UnexpectedOffset { expected } => {
                write!(f, "tensor data offset is not where the previous tensor ends ({expected} expected)")
            }
            DataSizeMismatch { expected } => {
                write!(f, "file is longer than its tensor table says ({expected} bytes of data expected)")
            }
            WrongValueType => f.write_str("metadata value has the wrong type"),
            MissingKey(k) => write!(f, "missing metadata key {k}"),
            MissingTensor(t) => write!(f, "missing tensor {t}"),
            UnexpectedTensor(t) => write!(f, "tensor {t} is not part of this architecture"),
            BadShape(t) => write!(f, "tensor {t} has the wrong shape for this model"),
            BadHyperParameter(k) => write!(f, "hyper-parameter {k} is out of range"),
            NonFinite(t) => write!(f, "tensor {t} holds NaN or infinity"),
            BadVocab => f.write_str("vocab entry or special token id out of range"),
        }
    }
}

impl fmt::Display for Unsupported {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Unsupported::Architecture(a) => {
                write!(
                    f,
                    "architecture {a:?} (bert, nomic-bert, gemma-embedding, qwen2 and qwen3 are supported)"
                )
            }
            Unsupported::TensorType { tensor, ty } => {
                write!(f, "tensor {tensor} has type {}, which the engine cannot compute with", ty.name())
            }
            Unsupported::TokenizerModel(m) => {
                write!(f, "tokenizer model {m:?} (only bert WordPiece text is tokenized; give token ids)")
            }
            Unsupported::PoolingType(p) => {
                write!(f, "pooling type {p} (1 = mean, 2 = CLS, and 3 = last for decoders are supported)")
            }
            Unsupported::RopeScaling(s) => write!(f, "RoPE scaling {s:?} (only linear)"),
        }
    }
}

impl fmt::Display for InputError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InputError::TooManyTokens { tokens, max } => {
                write!(f, "input has at least {tokens} tokens, more than the limit of {max}")
            }
            InputError::TooManyTexts { texts, max } => {
                write!(f, "{texts} texts, more than the limit of {max}")
            }
            InputError::TokenIdOutOfRange(id) => write!(f, "token id {id} is outside the vocab"),
            InputError::Empty => f.write_str("empty input"),
            InputError::BadLimits => f.write_str(
                "limits need at least 2 tokens and 1 text, no more texts than tokens, at most 2^24 tokens",
            ),
        }
    }
}

impl core::error::Error for Error {}

/// Convenience alias used throughout the core.
pub type Result<T> = core::result::Result<T, Error>;
