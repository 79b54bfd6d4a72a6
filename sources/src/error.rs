//! The error type of `flowsense-sources`: failures that stop a reader (I/O, a file that is not of
//! the format at all). Bad rows are not errors; they become dead letters.

use std::path::PathBuf;

/// Errors that stop a reader.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Reading a file failed.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The input is not of the expected format (as a whole, not one bad row).
    #[error("{path}: {why}")]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
    /// A core value was invalid (a symbol in a file name, say).
    #[error(transparent)]
    Core(#[from] flowsense_core::Error),
    /// Reading the lake's object store failed.
    #[error("lake: {0}")]
    ObjectStore(#[from] object_store::Error),
    /// A lake file is not Parquet of the table's schema.
    #[error("lake file {path}: {why}")]
    LakeFile {
        /// The object's path.
        path: String,
        /// What is wrong.
        why: String,
    },
}

/// `Result` with [`Error`] as the default error.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An I/O error on a path.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    /// A format error on a path.
    pub fn format(path: impl Into<PathBuf>, why: impl Into<String>) -> Self {
        Error::Format {
            path: path.into(),
            why: why.into(),
        }
    }
}
