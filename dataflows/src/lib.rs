//! FlowSense's runtime and the commands it runs: moving market data into the lake ([`ingest`]), making
//! a synthetic market ([`synth`]), querying the lake ([`sql`]), building and running a job's
//! timely dataflow ([`job`], [`run`]), trading a job's strategy in backtests and replays
//! ([`backtest`]), reporting on a run ([`report`]) and watching it ([`monitor`]). The `flowsense`
//! binary (`cli/`) parses arguments and calls these; the benchmarks are `flowsense-bench`.

#![forbid(missing_docs)]
// The runtime and its commands time whole runs, pace replays and stamp run ids with the wall
// clock; operators, readers and sinks may not (clippy.toml).
#![allow(clippy::disallowed_methods)]

pub mod backtest;
pub mod broker;
pub mod demo;
pub mod feed;
pub mod ingest;
pub mod job;
pub mod monitor;
pub mod output;
pub mod report;
pub mod run;
pub mod sql;
pub mod synth;
pub mod tapped;
pub mod walk_forward;
pub mod wall;

pub use ingest::{IngestReport, Ingestor};
