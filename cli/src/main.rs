//! The `flowsense` binary: parses the command line and runs the subcommand's `execute`. Each
//! subcommand is one module here (its flags and its `execute`); what they run is the
//! `flowsense-dataflows` library, and the benchmarks are `flowsense-bench`.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod backtest;
mod bench;
mod demo;
mod ingest;
mod jobs;
mod lake_args;
mod record;
mod report;
mod run;
mod serve;
mod sql;
mod synth;
mod tws;
mod venue;

// mimalloc: the ingest's reader and writer threads free each other's buffers, which glibc's
// allocator serialises on a lock, and DataFusion's hash tables allocate heavily (BENCHMARKS.md).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `mi_option_purge_delay` in mimalloc v3's `mimalloc.h` (the `-sys` crate names no constant).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// mimalloc hands freed memory back to the OS after 1 s by default; timely's channel buffers and
/// DataFusion's batches are then faulted in and zeroed again and again (the in-memory feature
/// graph ran 20 % slower, BENCHMARKS.md). Ten seconds keeps a busy process's memory while still
/// returning an idle one's.
#[allow(unsafe_code)]
fn tune_allocator() {
    // SAFETY: `mi_option_set` stores one integer option; it is called first thing in `main`,
    // before any other thread exists.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 10_000) };
}

/// FlowSense: order-flow analytics and trading on a timely dataflow graph.
#[derive(Parser, Debug)]
#[command(name = "flowsense", version, long_about = None)]
struct Cli {
    /// What to do.
    #[command(subcommand)]
    command: Command,
}

/// Subcommands.
#[derive(Subcommand, Debug)]
enum Command {
    /// Read market data files into the lake.
    Ingest(ingest::IngestArgs),
    /// Record a live feed (Binance spot, USD-M or COIN-M websockets with depth snapshots) into
    /// files `flowsense ingest` reads.
    Record(record::RecordArgs),
    /// A local Binance USD-M on loopback replaying a capture (stamps moved to now), for trying
    /// a live job with no network: `flowsense run examples/live-paper-local.toml`.
    Venue(venue::VenueArgs),
    /// A scripted TWS on loopback speaking the IB API, for trying `[broker] kind = "ibkr"` with
    /// no IB account: `flowsense run examples/live-ibkr-local.toml`.
    Tws(tws::TwsArgs),
    /// Generate a seeded synthetic market into the lake.
    Synth(synth::SynthArgs),
    /// Run SQL over the lake: one query, or an interactive prompt when none is given.
    Sql(sql::SqlArgs),
    /// The main job on embedded defaults: ingest the bundled real Binance captures and a small
    /// synthetic market into the lake, then query them.
    Demo(demo::DemoArgs),
    /// Run a dataflow job: features from the lake, capture files or the synthetic market, on
    /// timely workers (`-w`) and processes (`-n`, `-p`, `-h` as timely takes them). A job with
    /// a `[strategy]` trades it against the simulated exchange, paced as its `[replay]` says,
    /// exactly as `flowsense backtest` does in batch.
    #[command(disable_help_flag = true)]
    Run(run::RunArgs),
    /// Backtest a job's `[strategy]` over its source (usually the lake) as fast as it goes,
    /// through the simulated exchange of its `[execution]`; results into the lake's `orders`,
    /// `fills`, `equity`, `risk_events`, `positions`, `runs` and `metrics` tables.
    Backtest(backtest::BacktestArgs),
    /// Write a run's report: one HTML page with its metrics, plots (equity, drawdown, position,
    /// fills on the price), risk events and round trips, read from the lake; `--pdf` also
    /// prints it to PDF with headless Chromium.
    Report(report::ReportArgs),
    /// Start the service: a long-running cluster that takes dataflow jobs over HTTP
    /// (`/api/v1`; `-w`, `-n`, `-p`, `-h` as `flowsense run` takes them; process 0 listens).
    #[command(disable_help_flag = true)]
    Serve(serve::ServeArgs),
    /// Submit a job spec to a running service; prints the job's id.
    Submit(jobs::SubmitArgs),
    /// List the service's jobs.
    Jobs(jobs::JobsArgs),
    /// Show one job of the service: its state, its graph's figures and its errors.
    Job(jobs::JobArgs),
    /// Stop a job of the service (gracefully, or `--immediate`).
    Stop(jobs::StopArgs),
    /// The service's kill switch: every trading job halts its strategies and cancels every open
    /// order at its broker; `--flatten` also closes the positions. Audited in `risk_events`.
    Kill(jobs::KillArgs),
    /// Print the service's OpenAPI 3.1 document (what `GET /api/v1/openapi.json` serves),
    /// for client generators; the web UI's types are generated from it.
    Openapi,
    /// Measure ingest, generation, lake writes and SQL against same-run baselines.
    Bench {
        /// Which benchmark.
        #[command(subcommand)]
        which: bench::BenchCommand,
    },
}

fn main() -> ExitCode {
    tune_allocator();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Ingest(args) => args.execute(),
        Command::Record(args) => args.execute(),
        Command::Venue(args) => args.execute(),
        Command::Tws(args) => args.execute(),
        Command::Synth(args) => args.execute(),
        Command::Sql(args) => args.execute(),
        Command::Demo(args) => args.execute(),
        Command::Run(args) => args.execute(),
        Command::Backtest(args) => args.execute(),
        Command::Report(args) => args.execute(),
        Command::Serve(args) => args.execute(),
        Command::Submit(args) => args.execute(),
        Command::Jobs(args) => args.execute(),
        Command::Kill(args) => args.execute(),
        Command::Job(args) => args.execute(),
        Command::Stop(args) => args.execute(),
        Command::Openapi => flowsense_service::api::openapi()
            .to_pretty_json()
            .map(|doc| {
                println!("{doc}");
                ExitCode::SUCCESS
            })
            .map_err(anyhow::Error::from),
        Command::Bench { which } => which.execute(),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", chain(&e));
            ExitCode::FAILURE
        }
    }
}

/// The tokio runtime of the subcommands that read or write the lake: one worker per core (at
/// least two), since ingest runs a writer task per source at once. Trading runs and the graph
/// benchmarks run timely's own threads instead, outside any runtime.
fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get().max(2));
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()?)
}

/// The error and its causes joined by `: `, leaving out a cause whose text the message already
/// holds (many errors print their source in their own message too).
fn chain(e: &anyhow::Error) -> String {
    let mut msg = e.to_string();
    for cause in e.chain().skip(1) {
        let text = cause.to_string();
        if !msg.contains(&text) {
            msg.push_str(": ");
            msg.push_str(&text);
        }
    }
    msg
}
