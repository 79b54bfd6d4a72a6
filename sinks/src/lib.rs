//! Where FlowSense writes: the Parquet lake on object storage, the results of trading runs, and
//! the live brokers' sinks ([`ibkr`]: Interactive Brokers).
//!
//! [`Lake`] opens `file://` paths (the embedded default, `./lake`) and `s3://bucket/prefix` URLs
//! through `object_store`. [`LakeWriter`] turns market events and dead letters into Hive-partitioned
//! Parquet (`<table>/date=YYYY-MM-DD/symbol=SYM/<source>-<chunk>.parquet`).
//!
//! # Atomic and idempotent
//! Every file is written with one `put`: the local store writes a temporary file and renames it,
//! and S3 makes an object visible only when its upload completes, so no reader ever sees half a
//! file. File names are a function of the input (the source's id and a chunk counter), so
//! ingesting the same input again overwrites the same files; when a source is finished, files of
//! that source that this run did not write (left by an earlier, longer run) are deleted. The same
//! input ingested twice therefore leaves the same rows.

#![forbid(missing_docs)]

mod chunk;
pub mod dead;
pub mod error;
pub mod features;
pub mod ibkr;
pub mod results;
pub mod writer;

pub use error::{Error, Result};
pub use features::FeatureWriter;
pub use flowsense_core::{Lake, S3Options};
pub use results::{RunRow, RunWriter};
pub use writer::{LakeOutput, LakeWriter, Output, SourceFiles, WriteStats, encode_parquet};
