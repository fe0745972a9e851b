//! The std adapter's error: the core's, a failure to open a file, or a circuit breaker that
//! tripped (see [`crate::breaker`]). [`Error::code`] names each kind with a stable string that
//! bindings expose (Node: `ERR_` + the code).

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
    /// The call's deadline passed before it finished; its work was dropped.
    Timeout,
    /// The queue already holds its limit of unfinished calls.
    Busy {
        /// The limit.
        max_queue: usize,
    },
    /// The caller cancelled the call.
    Aborted,
    /// The embedder was closed before the call finished.
    Closed,
    /// A caller-supplied option or argument is out of range.
    InvalidArgument(String),
}

impl Error {
    /// A stable name of the error's kind, one of `IO`, `MALFORMED`, `UNSUPPORTED`, `TOO_LONG`,
    /// `MEMORY`, `NON_FINITE`, `TIMEOUT`, `BUSY`, `ABORTED`, `CLOSED`, `INVALID_ARG` and
    /// `INTERNAL` (a bug).
    pub fn code(&self) -> &'static str {
        use stepembed_core::error::InputError;
        use stepembed_core::Error as Core;
        match self {
            Error::Open { .. } | Error::Core(Core::Io { .. }) => "IO",
            Error::Core(Core::Malformed { .. }) => "MALFORMED",
            Error::Core(Core::Unsupported(_)) => "UNSUPPORTED",
            Error::Core(Core::Input(InputError::TooManyTokens { .. })) => "TOO_LONG",
            Error::Core(Core::Input(_)) | Error::InvalidArgument(_) => "INVALID_ARG",
            Error::Core(Core::ArenaTooSmall { .. }) => "MEMORY",
            Error::Core(Core::NonFinite { .. }) => "NON_FINITE",
            Error::Core(_) => "INTERNAL",
            Error::Timeout => "TIMEOUT",
            Error::Busy { .. } => "BUSY",
            Error::Aborted => "ABORTED",
            Error::Closed => "CLOSED",
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Open { path, source } => write!(f, "{}: {source}", path.display()),
            Error::Core(e) => write!(f, "{e}"),
            Error::Timeout => f.write_str("the call's deadline passed"),
            Error::Busy { max_queue } => write!(f, "busy: {max_queue} calls are already queued"),
            Error::Aborted => f.write_str("the call was aborted"),
            Error::Closed => f.write_str("the embedder is closed"),
            Error::InvalidArgument(what) => write!(f, "invalid argument: {what}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Open { source, .. } => Some(source),
            Error::Core(e) => Some(e),
            _ => None,
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
