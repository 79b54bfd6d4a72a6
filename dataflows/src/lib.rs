//! FlowSense's runtime and command line: for now, moving market data into the lake
//! ([`ingest`]), making a synthetic market ([`synth`]), querying the lake ([`sql`]) and
//! measuring all three ([`bench`]). The job builder and the timely graph arrive with the graph
//! issue; the binary's `main.rs` only parses arguments and dispatches here.

#![forbid(missing_docs)]

pub mod bench;
pub mod cli;
pub mod demo;
pub mod ingest;
pub mod sql;
pub mod synth;

pub use ingest::{IngestReport, Ingestor};
