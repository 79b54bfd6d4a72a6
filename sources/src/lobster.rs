//! lobster (in progress)
