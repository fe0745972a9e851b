//! The full weight scan: every tensor of a model streamed through a fixed buffer and checked for
//! NaN and infinity ([`Embedder::validate`], [`scan_weights`], `stepembed validate`).
//!
//! Loading a model reads only its metadata, so a corrupt weight is otherwise found — if at all —
//! when the forward pass computes with it. This scan is the opt-in check of every weight up front,
//! and names the first bad one: its tensor and its block (for F32, F16, BF16 and F64 a block is
//! one value).

use std::fmt;

use stepembed_core::gguf::{Event, GgmlType, Reader, TensorInfo, TensorStream, DEFAULT_SCRATCH};
use stepembed_core::io::Source;
use stepembed_core::Name;

use crate::embedder::Embedder;

/// Bytes of weights read at a time (rounded down to whole blocks of each tensor's type).
pub const SCAN_BUFFER_BYTES: usize = 1 << 20;

/// What a successful [`scan_weights`] checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ScanSummary {
    /// Tensors whose every value (or block scale) was checked.
    pub tensors: usize,
    /// Their bytes.
    pub bytes: u64,
    /// Tensors of a type with nothing to check (integers) or that the engine cannot decode.
    pub skipped: usize,
}

/// A block of a tensor that decodes to NaN or infinity: a non-finite value (float types) or a
/// non-finite scale or min (quantized types).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NonFiniteBlock {
    /// The tensor.
    pub tensor: Name,
    /// Its type.
    pub ty: GgmlType,
    /// The block's index in the tensor, from 0.
    pub block: u64,
    /// The block's absolute byte offset in the file.
    pub offset: u64,
}

impl fmt::Display for NonFiniteBlock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let NonFiniteBlock { tensor, ty, block, offset } = self;
        write!(f, "tensor {tensor} ({}) block {block} (byte {offset}) holds NaN or infinity", ty.name())
    }
}

/// Why a scan stopped.
#[derive(Debug)]
pub enum ScanError {
    /// A weight is not finite.
    NonFinite(NonFiniteBlock),
    /// The file could not be read, or is malformed.
    Model(crate::Error),
}

impl fmt::Display for ScanError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ScanError::NonFinite(b) => b.fmt(f),
            ScanError::Model(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for ScanError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ScanError::NonFinite(_) => None,
            ScanError::Model(e) => Some(e),
        }
    }
}

impl From<stepembed_core::Error> for ScanError {
    fn from(e: stepembed_core::Error) -> Self {
        ScanError::Model(e.into())
    }
}

impl<S: Source> Embedder<S> {
    /// Streams every tensor of the model's file (not only those the engine uses) through a fixed
    /// buffer and fails at the first NaN or infinity, naming its tensor and block. See
    /// [`scan_weights`]. Reads the whole file once: seconds for a large model.
    pub fn validate(&mut self) -> Result<ScanSummary, ScanError> {
        scan_weights(&mut self.source)
    }
}

/// Reads the tensor table of the GGUF file `io` and streams each tensor, in table order, through
/// a buffer of [`SCAN_BUFFER_BYTES`], failing at the first block that is not finite (see
/// [`first_non_finite`]). Tensors of other types are counted as skipped. Memory: the buffer and
/// the reader's scratch, whatever the file.
pub fn scan_weights<S: Source + ?Sized>(io: &mut S) -> Result<ScanSummary, ScanError> {
    let mut scratch = vec![0u8; DEFAULT_SCRATCH];
    let mut reader = Reader::new(&mut scratch)?;
    let mut buf = vec![0u8; SCAN_BUFFER_BYTES];
    let mut summary = ScanSummary::default();
    loop {
        let tensor = match reader.next_event(io)? {
            Event::Tensor(t) => t,
            Event::Done(_) => return Ok(summary),
            Event::Header(_) | Event::Kv { .. } | Event::Progress => continue,
        };
        if is_checked(tensor.ty) {
            scan_tensor(io, &tensor, &mut buf, |_| Ok(()))?;
            summary.tensors += 1;
            summary.bytes += tensor.n_bytes;
        } else {
            summary.skipped += 1;
        }
    }
}

/// Whether [`first_non_finite`] can check tensors of type `ty`: every type the engine computes
/// with, and F64.
pub fn is_checked(ty: GgmlType) -> bool {
    ty == GgmlType::F64 || stepembed_core::quant::is_computable(ty)
}

/// Streams `tensor` through `buf` (which must hold at least one block), checks each chunk with
/// [`first_non_finite`] and then hands it to `handle`.
pub fn scan_tensor<S, F>(
    io: &mut S,
    tensor: &TensorInfo,
    buf: &mut [u8],
    mut handle: F,
) -> Result<(), ScanError>
where
    S: Source + ?Sized,
    F: FnMut(&[u8]) -> Result<(), stepembed_core::Error>,
{
    let mut stream = TensorStream::new(*tensor);
    loop {
        let at = stream.position();
        let Some(chunk) = stream.next_chunk(io, buf)? else { return Ok(()) };
        if let Some(offset) = first_non_finite(tensor.ty, chunk)? {
            let in_tensor = at + offset as u64;
            return Err(ScanError::NonFinite(NonFiniteBlock {
                tensor: tensor.name,
                ty: tensor.ty,
                block: in_tensor / u64::from(tensor.ty.block_bytes()),
                offset: tensor.offset + in_tensor,
            }));
        }
        handle(chunk)?;
    }
}

/// The byte offset in `chunk` (whole blocks of `ty`) of the first block that decodes to NaN or
/// infinity, or `None`. Types the engine computes with are checked by the core's
/// [`stepembed_core::quant::find_non_finite`]; F64, which it does not compute with, here. Other
/// types are never non-finite (`None`).
pub fn first_non_finite(ty: GgmlType, chunk: &[u8]) -> Result<Option<usize>, stepembed_core::Error> {
    if ty == GgmlType::F64 {
        let values = chunk.as_chunks::<8>().0;
        return Ok(values.iter().position(|b| !f64::from_le_bytes(*b).is_finite()).map(|i| i * 8));
    }
    if !stepembed_core::quant::is_computable(ty) {
        return Ok(None);
    }
    stepembed_core::quant::find_non_finite(ty, chunk)
}
