//! `flowsense backtest`: a job's strategy over its source as fast as it goes.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use flowsense_core::job::{JobSpec, Source};
use flowsense_dataflows::backtest::{TradingOptions, metrics_table, new_run_id, run_trading};
use flowsense_dataflows::run::RunOptions;
use flowsense_dataflows::walk_forward::{self, WalkForward};

use crate::lake_args::LakeArgs;

/// `flowsense backtest`'s arguments.
#[derive(Args, Debug)]
pub struct BacktestArgs {
    /// The job spec (TOML) with a `[strategy]`; see `examples/`.
    pub job: PathBuf,
    /// Lake location and credentials.
    #[command(flatten)]
    pub lake: LakeArgs,
    /// First instant, inclusive (`YYYY-MM-DD` or `YYYY-MM-DDTHH:MM:SS`, UTC); overrides
    /// the job's `source.lake.from`.
    #[arg(long)]
    pub from: Option<String>,
    /// Last instant, exclusive; overrides `source.lake.to`.
    #[arg(long)]
    pub to: Option<String>,
    /// The run's id in the lake (default `<job>-<UTC time>`); a second run with the same id
    /// replaces the first.
    #[arg(long)]
    pub run_id: Option<String>,
    /// Worker threads.
    #[arg(short = 'w', long, default_value_t = 1)]
    pub workers: usize,
    /// Do not write results into the lake (print the metrics only).
    #[arg(long)]
    pub no_write: bool,
    /// Walk forward: `train=60d,test=7d` (scaled down on short data, e.g. `train=3m,test=1m`):
    /// the strategy's `entry` is chosen on each train window from a grid around the spec's
    /// value and traded on the test window after it; metrics per fold and chained.
    #[arg(long)]
    pub walk_forward: Option<WalkForward>,
    /// No summary on stderr.
    #[arg(long, short)]
    pub quiet: bool,
}

impl BacktestArgs {
    /// Runs the backtest (or the walk-forward folds) and prints its metrics.
    pub fn execute(self) -> anyhow::Result<ExitCode> {
        let mut spec = JobSpec::from_file(&self.job)?;
        if self.from.is_some() || self.to.is_some() {
            let Source::Lake(l) = &mut spec.source else {
                anyhow::bail!(
                    "--from and --to select from the lake; this job reads another source"
                );
            };
            if self.from.is_some() {
                l.from = self.from;
            }
            if self.to.is_some() {
                l.to = self.to;
            }
        }
        let lake = self.lake.open()?;
        let run_id = self.run_id.unwrap_or_else(|| new_run_id(&spec.name));
        if let Some(wf) = self.walk_forward {
            if self.no_write {
                anyhow::bail!("--walk-forward writes its folds to the lake; drop --no-write");
            }
            let rt = crate::runtime()?;
            let report = walk_forward::run(&spec, &lake, wf, &run_id, self.workers, &rt)?;
            if !self.quiet {
                eprintln!(
                    "run {run_id}: walk-forward over {} folds, {} test events in {:.2} s",
                    report.folds.len(),
                    report.events,
                    report.seconds
                );
                eprint!("{}", metrics_table(&report.metrics));
            }
            return Ok(ExitCode::SUCCESS);
        }
        let opts = TradingOptions {
            run: RunOptions {
                workers: self.workers,
                ..Default::default()
            },
            run_id,
            write: !self.no_write,
            collect: false,
            paced: false,
            fold: None,
            progress: !self.quiet,
        };
        let report = run_trading(&spec, &lake, &opts)?;
        if !self.quiet {
            eprint!("{}", report.summary());
            if !self.no_write {
                eprintln!(
                    "results in the lake: flowsense sql \"SELECT * FROM metrics WHERE run_id = '{}'\"",
                    report.run_id
                );
            }
        }
        Ok(ExitCode::SUCCESS)
    }
}
