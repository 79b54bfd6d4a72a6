//! FlowSense integration tests, all in one binary (each test binary links DataFusion).

// Tests and their helpers: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

mod backtest;
mod books;
mod cli;
mod common;
mod dead_letters;
mod graph;
mod ibkr;
mod lake;
mod live;
mod record;
mod s3;
mod service;
mod venue;
