//! dbn (in progress)
