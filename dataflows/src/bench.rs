//! `flowsense bench`: benchmarks that print a ratio against a baseline run in the same process.

use clap::Subcommand;

/// Benchmarks.
#[derive(Subcommand, Debug)]
pub enum BenchCommand {
    /// Capture ingest end to end against gzip + JSON parsing alone.
    Ingest,
}

/// Runs a benchmark.
pub async fn run(_which: BenchCommand) -> anyhow::Result<()> {
    anyhow::bail!("not built yet")
}
