//! The command line: subcommands, their flags, and dispatch.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Parser, Subcommand, ValueEnum};
use flowsense_sinks::{Lake, S3Options};

use crate::output::OutputFormat;

/// FlowSense: order-flow analytics and trading on a timely dataflow graph.
#[derive(Parser, Debug)]
#[command(name = "flowsense", version, about, long_about = None)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Where the lake is, and how to reach S3.
#[derive(Args, Debug, Clone)]
pub struct LakeArgs {
    /// The lake: a local path, `file:///abs/path` or `s3://bucket/prefix`.
    #[arg(long, env = "FLOWSENSE_LAKE", default_value = "./lake")]
    pub lake: String,
    /// S3 endpoint (else `AWS_ENDPOINT_URL`).
    #[arg(long)]
    pub s3_endpoint: Option<String>,
    /// S3 access key id (else `AWS_ACCESS_KEY_ID`).
    #[arg(long)]
    pub s3_access_key_id: Option<String>,
    /// S3 secret access key (else `AWS_SECRET_ACCESS_KEY`).
    #[arg(long)]
    pub s3_secret_access_key: Option<String>,
    /// S3 region (else `AWS_REGION`, else us-east-1).
    #[arg(long)]
    pub s3_region: Option<String>,
}

impl LakeArgs {
    /// Opens the lake.
    pub fn open(&self) -> anyhow::Result<Lake> {
        let s3 = S3Options {
            endpoint: self.s3_endpoint.clone(),
            access_key_id: self.s3_access_key_id.clone(),
            secret_access_key: self.s3_secret_access_key.clone(),
            region: self.s3_region.clone(),
        };
        Lake::open(&self.lake, &s3).with_context(|| format!("opening the lake at {}", self.lake))
    }
}

/// Input formats for `ingest`.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum FormatArg {
    /// Guess from each file's name and first bytes.
    Auto,
    /// Binance raw websocket captures.
    Binance,
    /// LOBSTER message/orderbook CSV.
    Lobster,
    /// Databento DBN.
    Dbn,
    /// OHLCV bars in CSV (with a header naming the columns, or Binance kline files).
    Bars,
}

/// Subcommands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Read market data files into the lake.
    Ingest {
        /// Lake location and credentials.
        #[command(flatten)]
        lake: LakeArgs,
        /// Input format.
        #[arg(long, value_enum, default_value_t = FormatArg::Auto)]
        format: FormatArg,
        /// Files or folders to read.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// LOBSTER files keep local exchange time: seconds to add to get UTC
        /// (New York summer time: 14400, winter: 18000).
        #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
        lobster_utc_offset_seconds: i64,
        /// How far exchange time may go back within a Binance stream before a message is
        /// refused, in milliseconds.
        #[arg(long, default_value_t = 1000)]
        time_tolerance_ms: i64,
        /// Bars: the symbol of files without a symbol column (default: the file name up to its
        /// first `-` or `_`).
        #[arg(long)]
        symbol: Option<String>,
        /// Bars: the bar length, e.g. `1m` (default: from the file name, else the gap between
        /// the first two bars).
        #[arg(long)]
        interval: Option<flowsense_core::job::Span>,
        /// Bars: which column holds what, for headers the usual names do not cover:
        /// `time=Date,close=Adj Close` (roles: time, clock, open, high, low, close, volume,
        /// symbol, trades; a number is a column's position, from 1).
        #[arg(long)]
        columns: Option<flowsense_sources::bars::ColumnMap>,
        /// Sources ingested at once, each on its own reader thread and writer task (a source is
        /// a file, or one symbol's chain of daily Binance files). Default: one per core, at most 8.
        #[arg(long, short = 'j', value_parser = clap::value_parser!(u16).range(1..))]
        parallel: Option<u16>,
        /// No progress bar.
        #[arg(long, short)]
        quiet: bool,
    },
    /// Generate a seeded synthetic market into the lake.
    Synth {
        /// Lake location and credentials.
        #[command(flatten)]
        lake: LakeArgs,
        /// Number of symbols.
        #[arg(long, default_value_t = 3)]
        symbols: usize,
        /// Number of trading days.
        #[arg(long, default_value_t = 2)]
        days: usize,
        /// The seed: the same seed makes the same market.
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// Mean order messages per symbol per day.
        #[arg(long, default_value_t = 200_000)]
        events_per_day: u64,
        /// Also write LOBSTER message/orderbook files (10 levels) into this folder.
        #[arg(long)]
        lobster: Option<PathBuf>,
        /// Symbols generated at once (each seeded on its own: the lake is the same whatever
        /// this is). Default: one per core, at most 8.
        #[arg(long, short = 'j', value_parser = clap::value_parser!(u16).range(1..))]
        parallel: Option<u16>,
        /// No progress bar.
        #[arg(long, short)]
        quiet: bool,
    },
    /// Run SQL over the lake: one query, or an interactive prompt when none is given.
    Sql {
        /// Lake location and credentials.
        #[command(flatten)]
        lake: LakeArgs,
        /// Output format.
        #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
        format: OutputFormat,
        /// Write the result here instead of stdout.
        #[arg(long, short)]
        output: Option<PathBuf>,
        /// The query; omit for the interactive prompt.
        query: Option<String>,
    },
    /// The main job on embedded defaults: ingest the bundled real Binance captures and a small
    /// synthetic market into the lake, then query them.
    Demo {
        /// Lake location and credentials.
        #[command(flatten)]
        lake: LakeArgs,
        /// The bundled data folder (default: `data/binance` of this checkout).
        #[arg(long)]
        data: Option<PathBuf>,
    },
    /// Run a dataflow job: features from the lake, capture files or the synthetic market, on
    /// timely workers (`-w`) and processes (`-n`, `-p`, `-h` as timely takes them). A job with
    /// a `[strategy]` trades it against the simulated exchange, paced as its `[replay]` says,
    /// exactly as `flowsense backtest` does in batch.
    #[command(disable_help_flag = true)]
    Run {
        /// The job spec (TOML); see `examples/`.
        job: PathBuf,
        /// Lake location and credentials (the source when the job reads the lake, and where
        /// the `features` table goes).
        #[command(flatten)]
        lake: LakeArgs,
        /// Worker threads per process.
        #[arg(short = 'w', long, default_value_t = 1)]
        workers: usize,
        /// Number of processes.
        #[arg(short = 'n', long, default_value_t = 1)]
        processes: usize,
        /// This process's index.
        #[arg(short = 'p', long, default_value_t = 0)]
        process: usize,
        /// Hostfile: one `host:port` line per process.
        #[arg(short = 'h', long)]
        hostfile: Option<PathBuf>,
        /// No summary on stderr.
        #[arg(long, short)]
        quiet: bool,
        /// Print per-operator and per-channel figures at the end (also in the lake as
        /// `flowsense_operators` and `flowsense_channels`).
        #[arg(long)]
        stats: bool,
        /// Print help.
        #[arg(long, action = clap::ArgAction::Help)]
        help: Option<bool>,
        /// For a job with a `[strategy]`: the run's id in the lake (default `<job>-<UTC time>`).
        #[arg(long)]
        run_id: Option<String>,
    },
    /// Backtest a job's `[strategy]` over its source (usually the lake) as fast as it goes,
    /// through the simulated exchange of its `[execution]`; results into the lake's `orders`,
    /// `fills`, `equity`, `risk_events`, `positions`, `runs` and `metrics` tables.
    Backtest {
        /// The job spec (TOML) with a `[strategy]`; see `examples/`.
        job: PathBuf,
        /// Lake location and credentials.
        #[command(flatten)]
        lake: LakeArgs,
        /// First instant, inclusive (`YYYY-MM-DD` or `YYYY-MM-DDTHH:MM:SS`, UTC); overrides
        /// the job's `source.lake.from`.
        #[arg(long)]
        from: Option<String>,
        /// Last instant, exclusive; overrides `source.lake.to`.
        #[arg(long)]
        to: Option<String>,
        /// The run's id in the lake (default `<job>-<UTC time>`); a second run with the same id
        /// replaces the first.
        #[arg(long)]
        run_id: Option<String>,
        /// Worker threads.
        #[arg(short = 'w', long, default_value_t = 1)]
        workers: usize,
        /// Do not write results into the lake (print the metrics only).
        #[arg(long)]
        no_write: bool,
        /// Walk forward: `train=60d,test=7d` (scaled down on short data, e.g. `train=3m,test=1m`):
        /// the strategy's `entry` is chosen on each train window from a grid around the spec's
        /// value and traded on the test window after it; metrics per fold and chained.
        #[arg(long)]
        walk_forward: Option<crate::walk_forward::WalkForward>,
        /// No summary on stderr.
        #[arg(long, short)]
        quiet: bool,
    },
    /// Write a run's report: one HTML page with its metrics, plots (equity, drawdown, position,
    /// fills on the price), risk events and round trips, read from the lake; `--pdf` also
    /// prints it to PDF with headless Chromium.
    Report {
        /// The run's id (see `flowsense sql "SELECT run_id, job, started FROM runs"`).
        run_id: String,
        /// Lake location and credentials.
        #[command(flatten)]
        lake: LakeArgs,
        /// Where to write the HTML (default `reports/<run_id>.html`).
        #[arg(long, short)]
        out: Option<PathBuf>,
        /// Also write a PDF beside it (needs Chromium: `$FLOWSENSE_CHROMIUM` or on `PATH`).
        #[arg(long)]
        pdf: bool,
    },
    /// Measure ingest, generation, lake writes and SQL against same-run baselines.
    Bench {
        /// Which benchmark.
        #[command(subcommand)]
        which: crate::bench::BenchCommand,
    },
}

/// Runs a parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    // One worker per core (at least two): ingest runs a writer task per source at once.
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get().max(2));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()?;
    match cli.command {
        Command::Ingest {
            lake,
            format,
            paths,
            lobster_utc_offset_seconds,
            time_tolerance_ms,
            symbol,
            interval,
            columns,
            parallel,
            quiet,
        } => {
            let lake = lake.open()?;
            let format = match format {
                FormatArg::Auto => None,
                FormatArg::Binance => Some(flowsense_sources::detect::Format::Binance),
                FormatArg::Lobster => Some(flowsense_sources::detect::Format::Lobster),
                FormatArg::Dbn => Some(flowsense_sources::detect::Format::Dbn),
                FormatArg::Bars => Some(flowsense_sources::detect::Format::Bars),
            };
            let mut options = flowsense_sources::detect::InputOptions::default();
            options.lobster.utc_offset_seconds = lobster_utc_offset_seconds;
            options.binance.time_tolerance_ns = time_tolerance_ms.saturating_mul(1_000_000);
            options.bars.symbol = symbol;
            options.bars.interval = interval;
            options.bars.columns = columns.unwrap_or_default();
            let parallel = parallel.map_or_else(crate::ingest::default_parallelism, usize::from);
            let report = rt.block_on(crate::ingest::ingest_sources(
                &lake, &paths, format, &options, !quiet, parallel,
            ))?;
            eprint!("{}", report.summary(lake.url().as_str()));
            if !report.nothing_read.is_empty() {
                anyhow::bail!(
                    "no record of {} landed in a table; they are in dead_letters as \
                     unsupported_record",
                    report.nothing_read.join("; ")
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Synth {
            lake,
            symbols,
            days,
            seed,
            events_per_day,
            lobster,
            parallel,
            quiet,
        } => {
            let lake = lake.open()?;
            let cfg = flowsense_sources::synth::SynthConfig {
                symbols,
                days,
                seed,
                events_per_day,
                ..Default::default()
            };
            let parallel = parallel.map_or_else(crate::ingest::default_parallelism, usize::from);
            let report = rt.block_on(crate::synth::synth_parallel(
                &lake,
                &cfg,
                lobster.as_deref(),
                !quiet,
                parallel,
            ))?;
            eprint!("{}", report.summary(lake.url().as_str()));
            Ok(ExitCode::SUCCESS)
        }
        Command::Sql {
            lake,
            format,
            output,
            query,
        } => {
            let lake = lake.open()?;
            rt.block_on(crate::sql::run(
                &lake,
                format,
                output.as_deref(),
                query.as_deref(),
            ))
        }
        Command::Demo { lake, data } => {
            let lake = lake.open()?;
            rt.block_on(crate::demo::run(&lake, data))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Run {
            job,
            lake,
            workers,
            processes,
            process,
            hostfile,
            quiet,
            stats,
            help: _,
            run_id,
        } => {
            let spec = flowsense_core::job::JobSpec::from_file(&job)?;
            let lake = lake.open()?;
            let opts = crate::run::RunOptions {
                workers,
                processes,
                process,
                hostfile,
                ..Default::default()
            };
            if spec.strategy.is_some() {
                drop(rt);
                let opts = crate::backtest::TradingOptions {
                    run: opts,
                    run_id: run_id.unwrap_or_else(|| crate::backtest::new_run_id(&spec.name)),
                    write: spec.sinks.lake,
                    collect: false,
                    paced: true,
                    fold: None,
                    progress: !quiet,
                };
                let report = crate::backtest::run_trading(&spec, &lake, &opts)?;
                if !quiet {
                    eprint!("{}", report.summary());
                }
                return Ok(ExitCode::SUCCESS);
            }
            let sinks = crate::run::spec_sinks(&spec, &lake);
            let report = crate::run::run_job(&spec, &lake, &opts, sinks)?;
            if stats {
                eprint!("{}", report.stats());
            }
            if !quiet {
                eprint!("{}", report.summary(&spec));
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Backtest {
            job,
            lake,
            from,
            to,
            run_id,
            workers,
            no_write,
            walk_forward,
            quiet,
        } => {
            let mut spec = flowsense_core::job::JobSpec::from_file(&job)?;
            if from.is_some() || to.is_some() {
                let flowsense_core::job::Source::Lake(l) = &mut spec.source else {
                    anyhow::bail!(
                        "--from and --to select from the lake; this job reads another source"
                    );
                };
                if from.is_some() {
                    l.from = from;
                }
                if to.is_some() {
                    l.to = to;
                }
            }
            let lake = lake.open()?;
            let run_id = run_id.unwrap_or_else(|| crate::backtest::new_run_id(&spec.name));
            if let Some(wf) = walk_forward {
                if no_write {
                    anyhow::bail!("--walk-forward writes its folds to the lake; drop --no-write");
                }
                let report = crate::walk_forward::run(&spec, &lake, wf, &run_id, workers, &rt)?;
                if !quiet {
                    eprintln!(
                        "run {run_id}: walk-forward over {} folds, {} test events in {:.2} s",
                        report.folds.len(),
                        report.events,
                        report.seconds
                    );
                    eprint!("{}", crate::backtest::metrics_table(&report.metrics));
                }
                return Ok(ExitCode::SUCCESS);
            }
            drop(rt);
            let opts = crate::backtest::TradingOptions {
                run: crate::run::RunOptions {
                    workers,
                    ..Default::default()
                },
                run_id,
                write: !no_write,
                collect: false,
                paced: false,
                fold: None,
                progress: !quiet,
            };
            let report = crate::backtest::run_trading(&spec, &lake, &opts)?;
            if !quiet {
                eprint!("{}", report.summary());
                if !no_write {
                    eprintln!(
                        "results in the lake: flowsense sql \"SELECT * FROM metrics WHERE run_id = '{}'\"",
                        report.run_id
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Report {
            run_id,
            lake,
            out,
            pdf,
        } => {
            let lake = lake.open()?;
            let html = rt.block_on(crate::report::build(&lake, &run_id))?;
            let out =
                out.unwrap_or_else(|| PathBuf::from("reports").join(format!("{run_id}.html")));
            if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("creating {}", dir.display()))?;
            }
            std::fs::write(&out, html).with_context(|| format!("writing {}", out.display()))?;
            eprintln!("report: {}", out.display());
            if pdf {
                let chromium = crate::report::find_chromium().context(
                    "--pdf needs Chromium or Chrome: install it (apt-get install chromium) or set FLOWSENSE_CHROMIUM",
                )?;
                let pdf_path = out.with_extension("pdf");
                crate::report::print_pdf(&chromium, &out, &pdf_path)?;
                eprintln!("report: {}", pdf_path.display());
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Bench {
            which:
                crate::bench::BenchCommand::MarketMaking {
                    inputs,
                    symbol,
                    qty,
                    max_position,
                    interval,
                    order_latency,
                    response_latency,
                    queue_power,
                    maker_fee,
                    taker_fee,
                    lot_size,
                    queue_fills,
                    queue_cancels,
                },
        } => {
            use flowsense_core::strategy::{QueueCancels, QueueFills};
            drop(rt);
            let mm = crate::bench_mm::MarketMaking {
                inputs,
                symbol,
                qty,
                max_position,
                interval,
                execution: flowsense_core::strategy::ExecutionSpec {
                    order_latency,
                    response_latency,
                    queue_power,
                    maker_fee,
                    taker_fee,
                    slippage_bps: 0.0,
                    lot_size: (lot_size > 0.0).then_some(lot_size),
                    queue_fills: if queue_fills == "whole" {
                        QueueFills::Whole
                    } else {
                        QueueFills::Partial
                    },
                    queue_cancels: if queue_cancels == "gross" {
                        QueueCancels::Gross
                    } else {
                        QueueCancels::Net
                    },
                    ..Default::default()
                },
            };
            let stdout = std::io::stdout();
            let mut out = std::io::BufWriter::new(stdout.lock());
            crate::bench_mm::run(&mm, &mut out)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Bench {
            which:
                crate::bench::BenchCommand::Backtest {
                    events,
                    symbols,
                    workers,
                    repeat,
                },
        } => {
            drop(rt);
            crate::bench_backtest::run(crate::bench_backtest::BacktestBench {
                events,
                symbols,
                workers,
                repeat,
            })?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Bench {
            which:
                crate::bench::BenchCommand::Graph {
                    lake,
                    repeat,
                    memory_events,
                    buckets,
                },
        } => {
            // Timely workers and the lake reader run their own threads and runtimes.
            drop(rt);
            let lake = Lake::open(&lake, &S3Options::default())?;
            crate::bench_graph::run(crate::bench_graph::GraphBench {
                lake,
                repeat,
                memory_events,
                buckets,
            })?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Bench { which } => rt
            .block_on(crate::bench::run(which))
            .map(|_| ExitCode::SUCCESS),
    }
}
