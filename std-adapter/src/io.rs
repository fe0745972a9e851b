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
