//! `flowsense run`: a dataflow job on timely workers and processes.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use clap::Args;
use flowsense_core::job::{JobSpec, Source};
use flowsense_dataflows::backtest::{TradingOptions, new_run_id, run_trading};
use flowsense_dataflows::run::{RunOptions, run_job, spec_sinks};

use crate::lake_args::LakeArgs;

/// `flowsense run`'s arguments (`-h` is the hostfile, as timely takes it; help is `--help`).
#[derive(Args, Debug)]
pub struct RunArgs {
    /// The job spec (TOML); see `examples/`.
    pub job: PathBuf,
    /// Lake location and credentials (the source when the job reads the lake, and where
    /// the `features` table goes).
    #[command(flatten)]
    pub lake: LakeArgs,
    /// Worker threads per process.
    #[arg(short = 'w', long, default_value_t = 1)]
    pub workers: usize,
    /// Number of processes.
    #[arg(short = 'n', long, default_value_t = 1)]
    pub processes: usize,
    /// This process's index.
    #[arg(short = 'p', long, default_value_t = 0)]
    pub process: usize,
    /// Hostfile: one `host:port` line per process.
    #[arg(short = 'h', long)]
    pub hostfile: Option<PathBuf>,
    /// No summary on stderr.
    #[arg(long, short)]
    pub quiet: bool,
    /// Print per-operator and per-channel figures at the end (also in the lake as
    /// `flowsense_operators` and `flowsense_channels`).
    #[arg(long)]
    pub stats: bool,
    /// Print help.
    #[arg(long, action = clap::ArgAction::Help)]
    pub help: Option<bool>,
    /// For a job with a `[strategy]`: the run's id in the lake (default `<job>-<UTC time>`).
    #[arg(long)]
    pub run_id: Option<String>,
}

impl RunArgs {
    /// Runs the job to its end: features into the lake, or, with a `[strategy]`, the paced
    /// trading run with its results.
    pub fn execute(self) -> anyhow::Result<ExitCode> {
        let spec = JobSpec::from_file(&self.job)?;
        let lake = self.lake.open()?;
        let live = matches!(spec.source, Source::Live(_));
        let opts = RunOptions {
            workers: self.workers,
            processes: self.processes,
            process: self.process,
            hostfile: self.hostfile,
            // A live job runs until its feed ends or Ctrl-C, which ends it as its source would:
            // the graph drains and everything it made is written.
            stop: live.then(stop_on_ctrl_c).transpose()?,
            ..Default::default()
        };
        if live && !self.quiet {
            eprintln!(
                "job {}: live; Ctrl-C stops it and writes what it has",
                spec.name
            );
        }
        if spec.strategy.is_some() {
            let opts = TradingOptions {
                run: opts,
                run_id: self.run_id.unwrap_or_else(|| new_run_id(&spec.name)),
                write: spec.sinks.lake,
                collect: false,
                paced: true,
                fold: None,
                progress: !self.quiet,
            };
            let report = run_trading(&spec, &lake, &opts)?;
            if !self.quiet {
                eprint!("{}", report.summary());
            }
            return Ok(ExitCode::SUCCESS);
        }
        let sinks = spec_sinks(&spec, &lake);
        let report = run_job(&spec, &lake, &opts, sinks)?;
        if self.stats {
            eprint!("{}", report.stats());
        }
        if !self.quiet {
            eprint!("{}", report.summary(&spec));
        }
        Ok(ExitCode::SUCCESS)
    }
}

/// A flag set by the first Ctrl-C (a second one kills the process as usual).
fn stop_on_ctrl_c() -> anyhow::Result<Arc<AtomicBool>> {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    std::thread::Builder::new()
        .name("flowsense-ctrl-c".into())
        .spawn(move || {
            rt.block_on(async {
                if tokio::signal::ctrl_c().await.is_ok() {
                    eprintln!(
                        "stopping: the graph drains and writes what it has (Ctrl-C again quits)"
                    );
                    flag.store(true, Ordering::Relaxed);
                }
                if tokio::signal::ctrl_c().await.is_ok() {
                    std::process::exit(130);
                }
            });
        })?;
    Ok(stop)
}
