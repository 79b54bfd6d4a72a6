//! FlowSense's runtime and command line: moving market data into the lake ([`ingest`]), making
//! a synthetic market ([`synth`]), querying the lake ([`sql`]), building and running a job's
//! timely dataflow ([`job`], [`run`]), trading a job's strategy in backtests and replays
//! ([`backtest`]), reporting on a run ([`report`]) and measuring all of it ([`mod@bench`]). The binary's
//! `main.rs` only parses arguments and dispatches here.

#![forbid(missing_docs)]
// The runtime and command line time whole runs, pace replays and stamp run ids with the wall
// clock; operators, readers and sinks may not (clippy.toml).
#![allow(clippy::disallowed_methods)]

pub mod backtest;
pub mod bench;
pub mod bench_backtest;
pub mod bench_graph;
pub mod bench_mm;
pub mod cli;
pub mod demo;
pub mod ingest;
pub mod job;
pub mod monitor;
pub mod output;
pub mod report;
pub mod run;
pub mod sql;
pub mod synth;
pub mod walk_forward;

pub use ingest::{IngestReport, Ingestor};
