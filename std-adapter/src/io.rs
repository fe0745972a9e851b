//! File-backed byte sources for the core.

use std::fs::File;
use std::path::Path;

use embedded_io_adapters::std::FromStd;

/// A file as a core [`stepembed_core::io::Source`] (`embedded_io::{Read, Seek}`).
///
/// Unbuffered on purpose: the core reads in large chunks at explicit offsets and buffers small
/// fields itself, so a `BufReader` would only add a copy.
pub type FileSource = FromStd<File>;

/// Opens `path` for reading as a core source.
pub fn open(path: impl AsRef<Path>) -> std::io::Result<FileSource> {
    File::open(path).map(FromStd::new)
}
