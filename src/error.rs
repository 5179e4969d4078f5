//! The library's error type.
//!
//! Every variant carries the path (or source name) it is about and the offending value, so the
//! rendered message can be shown to a user as it is.

use std::path::PathBuf;

/// Shorthand for results whose error is [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in chunkheap.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An operating-system I/O error while touching `path`.
    #[error("{path}: {op}: {source}")]
    Io {
        /// The file or directory involved.
        path: PathBuf,
        /// What we were doing ("open", "read", "write", "rename", ...).
        op: &'static str,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The file's bytes do not follow its format.
    #[error("{path}: {what}")]
    Corrupt {
        /// The file or store.
        path: PathBuf,
        /// What is wrong, with the offset or expected-vs-found values.
        what: String,
    },
    /// The file is shorter than its header promises.
    #[error(
        "{path}: truncated: expected {expected} bytes of data at offset {offset}, found {found}"
    )]
    Truncated {
        /// The file.
        path: PathBuf,
        /// Where the data starts.
        offset: u64,
        /// Bytes the header promises.
        expected: u64,
        /// Bytes present.
        found: u64,
    },
    /// A format or feature we recognise but do not handle.
    #[error("{path}: unsupported: {what}")]
    Unsupported {
        /// The file or store.
        path: PathBuf,
        /// What is not supported.
        what: String,
    },
    /// A dtype name we do not know.
    #[error(
        "unknown dtype {0:?} (expected one of bool, i8, i16, i32, i64, u8, u16, u32, u64, f32, f64)"
    )]
    UnknownDType(String),
    /// The source's format could not be told from its name or bytes.
    #[error(
        "{path}: unknown format (expected a .npy file, a .zarr directory or an Arrow IPC .arrow/.ipc/.feather file)"
    )]
    UnknownFormat {
        /// The path given.
        path: PathBuf,
    },
    /// `PATH#COLUMN` names a column that is not there, or is not numeric.
    #[error("{path}: {what}")]
    Column {
        /// The file.
        path: PathBuf,
        /// Which column and what is wrong (with the available columns).
        what: String,
    },
    /// A memory reservation that cannot be granted within the budget.
    #[error(
        "memory budget of {} exceeded: {what} asked for {} with {} in use ({why}); largest holders: {holders}",
        crate::memory::human_bytes(*limit), crate::memory::human_bytes(*asked), crate::memory::human_bytes(*used)
    )]
    OutOfMemoryBudget {
        /// The budget's limit in bytes.
        limit: u64,
        /// Bytes reserved when the request failed.
        used: u64,
        /// Bytes asked for.
        asked: u64,
        /// What asked ("mapped chunk", "chunk buffer", ...).
        what: String,
        /// Why it could not wait for more room.
        why: String,
        /// The largest holders by category.
        holders: String,
    },
    /// Shapes, chunkings or arguments that do not fit together.
    #[error("{0}")]
    Invalid(String),
}

impl Error {
    /// An [`Error::Io`] for `path`.
    pub fn io(path: impl Into<PathBuf>, op: &'static str, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            op,
            source,
        }
    }

    /// An [`Error::Corrupt`] for `path`.
    pub fn corrupt(path: impl Into<PathBuf>, what: impl Into<String>) -> Self {
        Error::Corrupt {
            path: path.into(),
            what: what.into(),
        }
    }

    /// An [`Error::Unsupported`] for `path`.
    pub fn unsupported(path: impl Into<PathBuf>, what: impl Into<String>) -> Self {
        Error::Unsupported {
            path: path.into(),
            what: what.into(),
        }
    }
}
