//! GGUF files, read without loading them.
//!
//! * [`Reader`] — the streaming state machine over header, metadata and tensor table.
//! * [`ArrayReader`] — the elements of an array left in the file (e.g. the vocab).
//! * [`TensorStream`] — a tensor's bytes in caller-sized chunks of whole blocks.
//! * [`validate`], [`find_tensor`] — whole-file helpers built on those.

mod ggml_type;
mod reader;
mod value;
mod window;

pub use ggml_type::GgmlType;
pub use reader::{
    Event, Header, Layout, Reader, TensorInfo, DEFAULT_ALIGNMENT, DEFAULT_SCRATCH, MAX_KEY_LEN, MAX_NAME_LEN,
    MIN_SCRATCH,
};
pub use value::{ArrayRef, Str, Value, ValueType};

use crate::error::{Error, Malformed, Result};
use crate::io::{read_exact_at, Source};
use value::decode_scalar;
use window::Window;

/// Reads the elements of an array in order, through a caller's scratch buffer.
///
/// Each [`ArrayReader::next`] reads at most one scratch buffer's worth of the file. A string
/// longer than the scratch buffer comes back with only its head (see [`Str::is_complete`]).
/// Nested arrays come back as [`Value::Array`] (finding the end of an inner array of strings
/// walks it).
#[derive(Debug)]
pub struct ArrayReader<'s> {
    window: Window<'s>,
    array: ArrayRef,
    index: u64,
    pos: u64,
}

impl<'s> ArrayReader<'s> {
    /// A reader of `array`'s elements, starting at the first.
    pub fn new(array: ArrayRef, scratch: &'s mut [u8]) -> Self {
        ArrayReader { window: Window::new(scratch), array, index: 0, pos: array.offset }
    }

    /// Index of the element the next call returns.
    pub fn index(&self) -> u64 {
        self.index
    }

    /// The array being read.
    pub fn array(&self) -> ArrayRef {
        self.array
    }

    /// Absolute end of the array's bytes.
    fn end(&self) -> u64 {
        self.array.offset.saturating_add(self.array.byte_len)
    }

    /// The next element, or `None` after the last.
    pub fn next<S: Source + ?Sized>(&mut self, io: &mut S) -> Result<Option<Value<'_>>> {
        if self.index >= self.array.count {
            return Ok(None);
        }
        let at = self.pos;
        let end = self.end();
        let value = match self.array.elem {
            ValueType::String => {
                let len = self.window.u64(io, at)?;
                let offset = at.saturating_add(8);
                if len > end.saturating_sub(offset) {
                    return Err(Error::malformed(Malformed::LengthTooLarge(len), at));
                }
                self.pos = offset.saturating_add(len);
                self.index = self.index.saturating_add(1);
                let n = usize::try_from(len).unwrap_or(usize::MAX).min(self.window.capacity());
                let head = self.window.bytes(io, offset, n)?;
                return Ok(Some(Value::String(Str { offset, len, head })));
            }
            ValueType::Array => {
                let ty = ValueType::parse(self.window.u32(io, at)?, at)?;
                let count = self.window.u64(io, at.saturating_add(4))?;
                let offset = at.saturating_add(12);
                let byte_len = self.inner_len(io, ty, count, offset)?;
                self.pos = offset.saturating_add(byte_len);
                Value::Array(ArrayRef { elem: ty, count, offset, byte_len })
            }
            ty => {
                let size = ty.fixed_size().unwrap_or(0);
                if size > end.saturating_sub(at) {
                    return Err(Error::malformed(Malformed::Truncated, at));
                }
                let bytes = self.window.bytes(io, at, size as usize)?;
                let v = decode_scalar(ty, bytes).ok_or(Error::malformed(Malformed::Truncated, at))?;
                self.pos = at.saturating_add(size);
                v
            }
        };
        self.index = self.index.saturating_add(1);
        Ok(Some(value))
    }

    /// Bytes of an inner array of `count` elements of `ty` starting at `offset`.
    fn inner_len<S: Source + ?Sized>(
        &mut self,
        io: &mut S,
        ty: ValueType,
        count: u64,
        offset: u64,
    ) -> Result<u64> {
        let end = self.end();
        let too_long = Error::malformed(Malformed::LengthTooLarge(count), offset);
        if let Some(size) = ty.fixed_size() {
            let len = count.checked_mul(size).ok_or(too_long)?;
            return if len > end.saturating_sub(offset) { Err(too_long) } else { Ok(len) };
        }
        if ty != ValueType::String {
            return Err(Error::malformed(Malformed::NestingTooDeep, offset));
        }
        let mut p = offset;
        for _ in 0..count {
            let len = self.window.u64(io, p)?;
            p = p.checked_add(8).and_then(|q| q.checked_add(len)).filter(|&q| q <= end).ok_or(too_long)?;
        }
        Ok(p.saturating_sub(offset))
    }
}

/// A tensor's bytes, handed out in chunks of whole blocks that fit a caller's buffer.
///
/// Each [`TensorStream::next_chunk`] does one read. Chunks hold whole blocks of the tensor's
/// type, so each can be decoded on its own.
#[derive(Debug, Clone)]
pub struct TensorStream {
    info: TensorInfo,
    done: u64,
}

impl TensorStream {
    /// A stream over `info`'s bytes, from the first.
    pub fn new(info: TensorInfo) -> Self {
        TensorStream { info, done: 0 }
    }

    /// Bytes already handed out.
    pub fn position(&self) -> u64 {
        self.done
    }

    /// Reads the next chunk into `buf` and returns it, or `None` when the tensor is finished.
    ///
    /// The chunk is as many whole blocks as fit `buf`; `buf` smaller than one block is
    /// [`Error::BufferTooSmall`].
    pub fn next_chunk<'b, S: Source + ?Sized>(
        &mut self,
        io: &mut S,
        buf: &'b mut [u8],
    ) -> Result<Option<&'b mut [u8]>> {
        let left = self.info.n_bytes.saturating_sub(self.done);
        if left == 0 {
            return Ok(None);
        }
        let block = u64::from(self.info.ty.block_bytes());
        let fit = (buf.len() as u64).checked_div(block).unwrap_or(0).saturating_mul(block);
        if fit == 0 {
            return Err(Error::BufferTooSmall { needed: block as usize, given: buf.len() });
        }
        let n = fit.min(left);
        let chunk = buf.get_mut(..n as usize).ok_or(Error::InvalidState)?;
        read_exact_at(io, self.info.offset.saturating_add(self.done), chunk)?;
        self.done = self.done.saturating_add(n);
        Ok(Some(chunk))
    }
}

/// Streams all of `info`'s bytes through `buf`, calling `handle(offset_in_tensor, chunk)` per
/// chunk of whole blocks. Not bounded: use [`TensorStream`] to interleave other work.
pub fn stream_tensor<S, F>(io: &mut S, info: &TensorInfo, buf: &mut [u8], mut handle: F) -> Result<()>
where
    S: Source + ?Sized,
    F: FnMut(u64, &[u8]) -> Result<()>,
{
    let mut stream = TensorStream::new(*info);
    loop {
        let at = stream.position();
        match stream.next_chunk(io, buf)? {
            Some(chunk) => handle(at, chunk)?,
            None => return Ok(()),
        }
    }
}

/// Reads a whole file's metadata and tensor table, keeping every tensor info in `table`, and
/// checks what the streaming reader alone cannot: no two tensors share a name or a byte.
///
/// On success `table[..n]` holds the `n` tensors sorted by offset and the [`Layout`] is returned.
/// `table` shorter than the file's tensor count is [`Error::BufferTooSmall`] (counted in
/// tensors). Not bounded in time: a tool's whole-file check.
pub fn validate<S: Source + ?Sized>(
    io: &mut S,
    scratch: &mut [u8],
    table: &mut [TensorInfo],
) -> Result<Layout> {
    let mut reader = Reader::new(scratch)?;
    let mut n = 0usize;
    let layout = loop {
        match reader.next_event(io)? {
            Event::Header(h) => {
                if h.tensor_count > table.len() as u64 {
                    let needed = usize::try_from(h.tensor_count).unwrap_or(usize::MAX);
                    return Err(Error::BufferTooSmall { needed, given: table.len() });
                }
            }
            Event::Tensor(t) => {
                let slot = table.get_mut(n).ok_or(Error::InvalidState)?;
                *slot = t;
                n = n.saturating_add(1);
            }
            Event::Done(layout) => break layout,
            Event::Kv { .. } | Event::Progress => {}
        }
    };
    let table = table.get_mut(..n).ok_or(Error::InvalidState)?;
    check_table(table)?;
    Ok(layout)
}

/// Checks that no two tensors of `table` share a name or a byte. Reorders `table` while it
/// checks and leaves it sorted by offset (ties in no particular order).
pub fn check_table(table: &mut [TensorInfo]) -> Result<()> {
    table.sort_unstable_by(|a, b| a.name.as_str().cmp(b.name.as_str()));
    for pair in table.windows(2) {
        if let [a, b] = pair {
            if a.name == b.name {
                return Err(Error::malformed(Malformed::DuplicateTensor, b.offset));
            }
        }
    }
    table.sort_unstable_by_key(|t| (t.offset, t.end()));
    // Each tensor must start at or after the furthest end so far (empty tensors occupy no bytes).
    let mut end = 0u64;
    for t in table.iter().filter(|t| t.n_bytes > 0) {
        if t.offset < end {
            return Err(Error::malformed(Malformed::Overlap, t.offset));
        }
        end = end.max(t.end());
    }
    Ok(())
}

/// Finds the tensor called `name` by streaming the tensor table again (O(1) memory).
///
/// Not bounded in time (walks the table): for tools and for loading, not for a host's hot loop.
pub fn find_tensor<S: Source + ?Sized>(
    io: &mut S,
    layout: &Layout,
    scratch: &mut [u8],
    name: &str,
) -> Result<Option<TensorInfo>> {
    let mut reader = Reader::tensors(layout, scratch)?;
    loop {
        match reader.next_event(io)? {
            Event::Tensor(t) if t.name.as_str() == name => return Ok(Some(t)),
            Event::Done(_) => return Ok(None),
            _ => {}
        }
    }
}

/// Streams a float tensor (F32, F16, BF16, F64) through `buf` and fails with
/// [`Malformed::NonFinite`] at the first NaN or infinity. Other types pass unchecked (their
/// scales are checked where they are decoded). Not bounded in time.
pub fn scan_non_finite<S: Source + ?Sized>(io: &mut S, info: &TensorInfo, buf: &mut [u8]) -> Result<()> {
    fn bits<const N: usize>(b: &[u8]) -> [u8; N] {
        b.try_into().unwrap_or([0; N])
    }
    let non_finite: fn(&[u8]) -> bool = match info.ty {
        GgmlType::F32 => {
            |c| c.chunks_exact(4).any(|b| u32::from_le_bytes(bits(b)) & 0x7f80_0000 == 0x7f80_0000)
        }
        GgmlType::F16 => |c| c.chunks_exact(2).any(|b| u16::from_le_bytes(bits(b)) & 0x7c00 == 0x7c00),
        GgmlType::BF16 => |c| c.chunks_exact(2).any(|b| u16::from_le_bytes(bits(b)) & 0x7f80 == 0x7f80),
        GgmlType::F64 => |c| {
            let exp = 0x7ff0_0000_0000_0000;
            c.chunks_exact(8).any(|b| u64::from_le_bytes(bits(b)) & exp == exp)
        },
        _ => return Ok(()),
    };
    stream_tensor(io, info, buf, |at, chunk| {
        if non_finite(chunk) {
            Err(Error::malformed(Malformed::NonFinite(info.name), info.offset.saturating_add(at)))
        } else {
            Ok(())
        }
    })
}
