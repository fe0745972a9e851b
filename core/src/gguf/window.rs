//! A read window over a [`Source`]: the caller's scratch buffer holding a run of file bytes, so
//! that small fields are parsed from memory and the file is read in large sequential pieces.

use crate::error::{Error, Malformed, Result};
use crate::io::{read_at_most, Source};

/// Bytes `[start, start + len)` of the file, held in a caller buffer.
#[derive(Debug)]
pub(crate) struct Window<'s> {
    buf: &'s mut [u8],
    start: u64,
    len: usize,
}

impl<'s> Window<'s> {
    /// An empty window over `buf`.
    pub(crate) fn new(buf: &'s mut [u8]) -> Self {
        Window { buf, start: 0, len: 0 }
    }

    /// The most bytes one [`Window::bytes`] call can return.
    pub(crate) fn capacity(&self) -> usize {
        self.buf.len()
    }

    /// File bytes `[pos, pos + n)` if they are already buffered; never reads.
    pub(crate) fn buffered(&self, pos: u64, n: usize) -> Option<&[u8]> {
        if !self.holds(pos, n) {
            return None;
        }
        let from = usize::try_from(pos.checked_sub(self.start)?).ok()?;
        self.buf.get(from..from.checked_add(n)?)
    }

    /// Makes file bytes `[pos, pos + n)` available and returns them.
    ///
    /// Reads at most one buffer's worth from the source. `n` larger than the buffer is
    /// [`Error::BufferTooSmall`]; a file ending before `pos + n` is [`Malformed::Truncated`] at `pos`.
    pub(crate) fn bytes<S: Source + ?Sized>(&mut self, io: &mut S, pos: u64, n: usize) -> Result<&[u8]> {
        if n > self.buf.len() {
            return Err(Error::BufferTooSmall { needed: n, given: self.buf.len() });
        }
        if !self.holds(pos, n) {
            self.len = read_at_most(io, pos, self.buf)?;
            self.start = pos;
            if self.len < n {
                return Err(Error::malformed(Malformed::Truncated, pos));
            }
        }
        let from = usize::try_from(pos.saturating_sub(self.start)).unwrap_or(usize::MAX);
        let to = from.saturating_add(n);
        // `holds` (or the refill) guarantees the range is inside the buffered bytes.
        self.buf.get(from..to).ok_or(Error::malformed(Malformed::Truncated, pos))
    }

    /// Whether `[pos, pos + n)` is already buffered.
    fn holds(&self, pos: u64, n: usize) -> bool {
        let end = self.start.saturating_add(self.len as u64);
        pos >= self.start && pos.checked_add(n as u64).is_some_and(|e| e <= end)
    }

    /// The little-endian u32 at `pos`.
    pub(crate) fn u32<S: Source + ?Sized>(&mut self, io: &mut S, pos: u64) -> Result<u32> {
        let b = self.bytes(io, pos, 4)?;
        let b = <[u8; 4]>::try_from(b).map_err(|_| Error::malformed(Malformed::Truncated, pos))?;
        Ok(u32::from_le_bytes(b))
    }

    /// The little-endian u64 at `pos`.
    pub(crate) fn u64<S: Source + ?Sized>(&mut self, io: &mut S, pos: u64) -> Result<u64> {
        let b = self.bytes(io, pos, 8)?;
        let b = <[u8; 8]>::try_from(b).map_err(|_| Error::malformed(Malformed::Truncated, pos))?;
        Ok(u64::from_le_bytes(b))
    }
}
