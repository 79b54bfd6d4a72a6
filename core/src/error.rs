//! The error type of `flowsense-core`.

/// Errors raised by the core vocabulary: parsing identifiers, numbers and job specs, opening the lake.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A decimal number could not be read as a fixed-point price or size.
    #[error("invalid decimal {text:?}: {why}")]
    InvalidDecimal {
        /// The text that failed to parse.
        text: String,
        /// What was wrong with it.
        why: &'static str,
    },
    /// A side was neither buy nor sell.
    #[error("invalid side {0:?}: expected 'buy' or 'sell'")]
    InvalidSide(String),
    /// An identifier was empty or held characters a lake path cannot carry.
    #[error("invalid identifier {0:?}")]
    InvalidIdentifier(String),
    /// The lake URL could not be understood.
    #[error("invalid lake URL {url:?}: {why}")]
    InvalidLakeUrl {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        why: String,
    },
    /// The object store failed.
    #[error("object store: {0}")]
    ObjectStore(#[from] object_store::Error),
    /// Local I/O failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// An expression (a signal, a sizing input) could not be parsed.
    #[error("expression {expr:?}: {why}")]
    InvalidExpr {
        /// The expression as written.
        expr: String,
        /// What is wrong with it, and where.
        why: String,
    },
    /// A job spec is not valid.
    #[error("job spec: {0}")]
    InvalidJob(String),
}

/// `Result` with [`Error`] as the default error.
pub type Result<T, E = Error> = std::result::Result<T, E>;
