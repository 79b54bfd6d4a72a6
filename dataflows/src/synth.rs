//! `flowsense synth`: the seeded synthetic market into the lake (and optionally LOBSTER files).

use std::path::Path;

use anyhow::Context;
use flowsense_sinks::Lake;
use flowsense_sources::synth::{SynthConfig, SyntheticMarket, write_lobster};

use crate::ingest::{IngestReport, Ingestor};

/// Generates the market of `cfg` into the lake; with `lobster`, also writes LOBSTER files there.
pub async fn synth(
    lake: &Lake,
    cfg: &SynthConfig,
    lobster: Option<&Path>,
    progress: bool,
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
    let mut ing = Ingestor::new(lake.clone(), progress);
    let market = SyntheticMarket::new(cfg.clone()).map(Ok);
    ing.consume(market).await?;
    ing.finish().await
}
