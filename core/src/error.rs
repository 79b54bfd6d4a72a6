//! The error type of `flowsense-core`.

/// Errors raised by the core vocabulary: parsing identifiers and numbers.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
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
}

/// `Result` with [`Error`] as the default error.
pub type Result<T, E = Error> = std::result::Result<T, E>;
