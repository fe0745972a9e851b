//! File-backed byte sources for the core.

use std::fs::File;
use std::io::{Error, ErrorKind};
use std::path::Path;

use embedded_io_adapters::std::FromStd;

/// A file as a core [`stepembed_core::io::Source`] (`embedded_io::{Read, Seek}`).
///
/// Unbuffered on purpose: the core reads in large chunks at explicit offsets and buffers small
/// fields itself, so a `BufReader` would only add a copy.
pub type FileSource = FromStd<File>;

/// Opens `path` for reading as a core source.
///
/// The core seeks, so only a regular file (or, on unix, a block device such as a flash
/// partition) will do: a directory is an error saying "is a directory", a pipe, socket or
/// character device one saying "not a regular, seekable file" — instead of an I/O error at the
/// first read. The type is checked before opening, so a named pipe without a writer is refused
/// rather than waited on.
pub fn open(path: impl AsRef<Path>) -> std::io::Result<FileSource> {
    let path = path.as_ref();
    let ty = std::fs::metadata(path)?.file_type();
    if ty.is_dir() {
        return Err(Error::new(ErrorKind::IsADirectory, "is a directory"));
    }
    if !ty.is_file() && !is_block_device(ty) {
        return Err(Error::new(ErrorKind::InvalidInput, "not a regular, seekable file"));
    }
    File::open(path).map(FromStd::new)
}

#[cfg(unix)]
fn is_block_device(ty: std::fs::FileType) -> bool {
    std::os::unix::fs::FileTypeExt::is_block_device(&ty)
}

#[cfg(not(unix))]
fn is_block_device(_: std::fs::FileType) -> bool {
    false
}

/// Another reader of a file already open, with a position of its own: it reads at its position
/// (`pread`), so that it and the file's first reader (a [`FileSource`]) can read at the same
/// time on different threads. It reads the file that is open — the same one even if its path
/// now names another — which reopening the path would not promise.
#[cfg(unix)]
#[derive(Debug)]
pub(crate) struct FileReader {
    file: File,
    pos: u64,
}

#[cfg(unix)]
impl FileReader {
    /// A reader of `file` (a new handle on it) at offset 0.
    pub(crate) fn new(file: &File) -> std::io::Result<Self> {
        Ok(FileReader { file: file.try_clone()?, pos: 0 })
    }
}

#[cfg(unix)]
impl embedded_io::ErrorType for FileReader {
    type Error = Error;
}

#[cfg(unix)]
impl embedded_io::Read for FileReader {
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, Error> {
        let n = std::os::unix::fs::FileExt::read_at(&self.file, buf, self.pos)?;
        self.pos = self.pos.saturating_add(n as u64);
        Ok(n)
    }
}

#[cfg(unix)]
impl embedded_io::Seek for FileReader {
    fn seek(&mut self, pos: embedded_io::SeekFrom) -> Result<u64, Error> {
        let invalid = || Error::new(ErrorKind::InvalidInput, "seek before the start or past u64::MAX");
        self.pos = match pos {
            embedded_io::SeekFrom::Start(at) => at,
            embedded_io::SeekFrom::Current(by) => self.pos.checked_add_signed(by).ok_or_else(invalid)?,
            embedded_io::SeekFrom::End(by) => {
                self.file.metadata()?.len().checked_add_signed(by).ok_or_else(invalid)?
            }
        };
        Ok(self.pos)
    }
}

/// Not available off unix (no positional reads that leave a shared cursor alone): batch calls
/// split rows there instead of spreading jobs over readers of their own.
#[cfg(not(unix))]
#[derive(Debug)]
pub(crate) enum FileReader {}

#[cfg(not(unix))]
impl FileReader {
    /// Always [`ErrorKind::Unsupported`].
    pub(crate) fn new(_: &File) -> std::io::Result<Self> {
        Err(Error::new(ErrorKind::Unsupported, "a second reader of an open file needs unix"))
    }
}

#[cfg(not(unix))]
impl embedded_io::ErrorType for FileReader {
    type Error = Error;
}

#[cfg(not(unix))]
impl embedded_io::Read for FileReader {
    fn read(&mut self, _: &mut [u8]) -> Result<usize, Error> {
        match *self {}
    }
}

#[cfg(not(unix))]
impl embedded_io::Seek for FileReader {
    fn seek(&mut self, _: embedded_io::SeekFrom) -> Result<u64, Error> {
        match *self {}
    }
}
