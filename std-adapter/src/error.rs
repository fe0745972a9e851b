//! The std adapter's error: the core's, or a failure to open a file.

use std::fmt;
use std::path::PathBuf;

/// What can go wrong in the std adapter.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// A file could not be opened.
    Open {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The core failed (malformed model, unsupported type, input beyond limits, I/O, …).
    Core(stepembed_core::Error),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Open { path, source } => write!(f, "{}: {source}", path.display()),
            Error::Core(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Open { source, .. } => Some(source),
            Error::Core(e) => Some(e),
        }
    }
}

impl From<stepembed_core::Error> for Error {
    fn from(e: stepembed_core::Error) -> Self {
        Error::Core(e)
    }
}

/// The adapter's result type.
pub type Result<T> = std::result::Result<T, Error>;
