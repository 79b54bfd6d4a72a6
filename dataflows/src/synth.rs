//! `flowsense synth`: the seeded synthetic market into the lake (and optionally LOBSTER files).

use std::path::Path;

use anyhow::Context;
use flowsense_sinks::Lake;
use flowsense_sources::synth::{SynthConfig, SyntheticMarket, write_lobster};

use crate::ingest::{IngestReport, default_parallelism, ingest_readers};

/// Generates the market of `cfg` into the lake, one symbol per core at once; with `lobster`,
/// also writes LOBSTER files there.
pub async fn synth(
    lake: &Lake,
    cfg: &SynthConfig,
    lobster: Option<&Path>,
    progress: bool,
) -> anyhow::Result<IngestReport> {
    synth_parallel(lake, cfg, lobster, progress, default_parallelism()).await
}

/// [`synth`] with up to `parallel` symbols generated at once. Each symbol's market is seeded
/// on its own ([`SyntheticMarket::for_symbol`]) and its files are named for its symbol-days, so
/// the lake is the same whatever `parallel` is.
pub async fn synth_parallel(
    lake: &Lake,
    cfg: &SynthConfig,
    lobster: Option<&Path>,
    progress: bool,
    parallel: usize,
) -> anyhow::Result<IngestReport> {
    if let Some(dir) = lobster {
        let files = write_lobster(cfg, dir, 10)
            .with_context(|| format!("writing LOBSTER files into {}", dir.display()))?;
        eprintln!(
            "wrote {} LOBSTER message files (and their orderbook files) into {}",
            files.len(),
            dir.display()
        );
    }
    let names = cfg.symbol_names();
    let markets = (0..cfg.symbols).map(|i| {
        let label = format!("the synthetic market of {}", names[i]);
        (label, SyntheticMarket::for_symbol(cfg.clone(), i).map(Ok))
    });
    ingest_readers(lake, markets, progress, parallel).await
}
