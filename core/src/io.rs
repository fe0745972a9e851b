//! The byte source the core reads models from, and small helpers over it.
//!
//! Any [`embedded_io::Read`] + [`embedded_io::Seek`] works: a file (through the std adapter), a
//! flash partition, or a byte slice ([`SliceSource`]). The core only ever reads at explicit
//! absolute offsets, so it never depends on where a previous operation left the cursor.

use embedded_io::{Error as _, ErrorKind, Read, ReadExactError, Seek, SeekFrom};

use crate::error::{Error, Malformed, Result};

/// A readable, seekable byte source. Blanket-implemented for every `Read + Seek`.
pub trait Source: Read + Seek {}

impl<T: Read + Seek + ?Sized> Source for T {}

/// Turns a source error at `offset` into a core [`Error`].
pub(crate) fn io_error<E: embedded_io::Error>(e: E, offset: u64) -> Error {
    Error::Io { kind: e.kind(), offset }
}

/// The total length of the source, in bytes. Leaves the cursor at the end.
pub fn source_len<S: Source + ?Sized>(io: &mut S) -> Result<u64> {
    io.seek(SeekFrom::End(0)).map_err(|e| io_error(e, 0))
}

/// Fills `buf` with the bytes at absolute `offset`.
///
/// A source that ends first yields [`Malformed::Truncated`] at the offset where data ran out.
pub fn read_exact_at<S: Source + ?Sized>(io: &mut S, offset: u64, buf: &mut [u8]) -> Result<()> {
    let pos = io.seek(SeekFrom::Start(offset)).map_err(|e| io_error(e, offset))?;
    if pos != offset {
        return Err(Error::Io { kind: ErrorKind::Other, offset });
    }
    io.read_exact(buf).map_err(|e| match e {
        ReadExactError::UnexpectedEof => Error::malformed(Malformed::Truncated, offset),
        ReadExactError::Other(e) => io_error(e, offset),
    })
}

/// Reads as many bytes as the source has at `offset`, up to `buf.len()`; returns how many.
///
/// Stops early only at the end of the source.
pub fn read_at_most<S: Source + ?Sized>(io: &mut S, offset: u64, buf: &mut [u8]) -> Result<usize> {
    io.seek(SeekFrom::Start(offset)).map_err(|e| io_error(e, offset))?;
    let mut filled = 0usize;
    while let Some(rest) = buf.get_mut(filled..) {
        if rest.is_empty() {
            break;
        }
        match io.read(rest) {
            Ok(0) => break,
            // `read` never returns more than `rest.len()`, so this stays within `buf.len()`.
            Ok(n) => filled = filled.saturating_add(n.min(rest.len())),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(io_error(e, offset.saturating_add(filled as u64))),
        }
    }
    Ok(filled)
}

/// A byte slice as a [`Source`]: a model embedded with `include_bytes!`, a memory-mapped file, or
/// a fuzzer's input.
#[derive(Debug, Clone)]
pub struct SliceSource<'a> {
    data: &'a [u8],
    pos: u64,
}

impl<'a> SliceSource<'a> {
    /// A source reading `data`, positioned at its start.
    pub const fn new(data: &'a [u8]) -> Self {
        SliceSource { data, pos: 0 }
    }

    /// The underlying bytes.
    pub const fn bytes(&self) -> &'a [u8] {
        self.data
    }
}

/// The only error a [`SliceSource`] reports: a seek before the start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SliceSourceError;

impl core::fmt::Display for SliceSourceError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("seek before the start of the slice")
    }
}

impl core::error::Error for SliceSourceError {}

impl embedded_io::Error for SliceSourceError {
    fn kind(&self) -> ErrorKind {
        ErrorKind::InvalidInput
    }
}

impl embedded_io::ErrorType for SliceSource<'_> {
    type Error = SliceSourceError;
}

impl Read for SliceSource<'_> {
    fn read(&mut self, buf: &mut [u8]) -> core::result::Result<usize, Self::Error> {
        let start = usize::try_from(self.pos).unwrap_or(usize::MAX);
        let rest = self.data.get(start..).unwrap_or_default();
        let n = rest.len().min(buf.len());
        if let (Some(dst), Some(src)) = (buf.get_mut(..n), rest.get(..n)) {
            dst.copy_from_slice(src);
        }
        self.pos = self.pos.saturating_add(n as u64);
        Ok(n)
    }
}

impl Seek for SliceSource<'_> {
    fn seek(&mut self, pos: SeekFrom) -> core::result::Result<u64, Self::Error> {
        let len = self.data.len() as u64;
        let target = match pos {
            SeekFrom::Start(p) => Some(p),
            SeekFrom::End(d) => len.checked_add_signed(d),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        self.pos = target.ok_or(SliceSourceError)?;
        Ok(self.pos)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slice_source_reads_and_seeks() {
        let mut s = SliceSource::new(b"hello world");
        let mut buf = [0u8; 5];
        read_exact_at(&mut s, 6, &mut buf).unwrap();
        assert_eq!(&buf, b"world");
        assert_eq!(source_len(&mut s).unwrap(), 11);
        assert_eq!(read_exact_at(&mut s, 8, &mut buf), Err(Error::malformed(Malformed::Truncated, 8)));
        assert_eq!(read_at_most(&mut s, 8, &mut buf).unwrap(), 3);
        assert_eq!(&buf[..3], b"rld");
        assert_eq!(read_at_most(&mut s, 100, &mut buf).unwrap(), 0);
        assert!(s.seek(SeekFrom::Current(-1000)).is_err());
    }
}
