//! `flowsense synth`: a seeded synthetic market into the lake.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use flowsense_sources::synth::SynthConfig;

use crate::lake_args::LakeArgs;

/// `flowsense synth`'s arguments.
#[derive(Args, Debug)]
pub struct SynthArgs {
    /// Lake location and credentials.
    #[command(flatten)]
    pub lake: LakeArgs,
    /// Number of symbols.
    #[arg(long, default_value_t = 3)]
    pub symbols: usize,
    /// Number of trading days.
    #[arg(long, default_value_t = 2)]
    pub days: usize,
    /// The seed: the same seed makes the same market.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Mean order messages per symbol per day.
    #[arg(long, default_value_t = 200_000)]
    pub events_per_day: u64,
    /// Also write LOBSTER message/orderbook files (10 levels) into this folder.
    #[arg(long)]
    pub lobster: Option<PathBuf>,
    /// Symbols generated at once (each seeded on its own: the lake is the same whatever
    /// this is). Default: one per core, at most 8.
    #[arg(long, short = 'j', value_parser = clap::value_parser!(u16).range(1..))]
    pub parallel: Option<u16>,
    /// No progress bar.
    #[arg(long, short)]
    pub quiet: bool,
}

impl SynthArgs {
    /// Generates the market into the lake and prints the run's summary.
    pub fn execute(self) -> anyhow::Result<ExitCode> {
        let lake = self.lake.open()?;
        let cfg = SynthConfig {
            symbols: self.symbols,
            days: self.days,
            seed: self.seed,
            events_per_day: self.events_per_day,
            ..Default::default()
        };
        let parallel = self.parallel.map_or_else(
            flowsense_dataflows::ingest::default_parallelism,
            usize::from,
        );
        let report = crate::runtime()?.block_on(flowsense_dataflows::synth::synth_parallel(
            &lake,
            &cfg,
            self.lobster.as_deref(),
            !self.quiet,
            parallel,
        ))?;
        eprint!("{}", report.summary(lake.url().as_str()));
        Ok(ExitCode::SUCCESS)
    }
}
