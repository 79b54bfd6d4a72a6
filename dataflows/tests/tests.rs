//! FlowSense integration tests, all in one binary (each test binary links DataFusion).

mod backtest;
mod books;
mod cli;
mod common;
mod dead_letters;
mod graph;
mod lake;
mod s3;
