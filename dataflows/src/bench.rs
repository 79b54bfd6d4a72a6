//! `flowsense bench`: benchmarks that print each stage beside a baseline run in the same process,
//! so the ratio shows where the time goes. Medians of `--repeat` runs; figures and commands are
//! recorded in BENCHMARKS.md.

use std::io::BufRead;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Subcommand;
use flowsense_sinks::Lake;
use flowsense_sources::binance::open_text;
use flowsense_sources::detect::open_inputs;
use flowsense_sources::synth::{DayGenerator, SynthConfig, SyntheticMarket};
use flowsense_sql::LakeSession;

/// Benchmarks.
#[derive(Subcommand, Debug)]
pub enum BenchCommand {
    /// Binance capture ingest end to end, beside gzip alone and gzip + JSON parsing alone.
    Ingest {
        /// Capture files or folders (default: the bundled data/binance).
        inputs: Vec<PathBuf>,
        /// Runs per stage; the median is reported.
        #[arg(long, default_value_t = 5)]
        repeat: usize,
    },
    /// Synthetic generation and lake writes, each beside the stage before it.
    Synth {
        /// Symbols.
        #[arg(long, default_value_t = 2)]
        symbols: usize,
        /// Mean messages per symbol-day.
        #[arg(long, default_value_t = 1_000_000)]
        events_per_day: u64,
        /// Runs per stage; the median is reported.
        #[arg(long, default_value_t = 3)]
        repeat: usize,
    },
    /// The feature graph: batch throughput from a lake with 1 and 2 workers, and per-event
    /// latency in replay, each beside a plain single-threaded loop over the same engine.
    Graph {
        /// The lake to read (make one with `flowsense synth`).
        #[arg(long, env = "FLOWSENSE_LAKE", default_value = "./lake")]
        lake: String,
        /// Runs per stage; the median is reported.
        #[arg(long, default_value_t = 3)]
        repeat: usize,
        /// Events held in memory for the in-memory stages and the latency run.
        #[arg(long, default_value_t = 5_000_000)]
        memory_events: usize,
        /// Bucket widths, comma-separated.
        #[arg(long, default_value = "100ms,1s,10s,1m", value_delimiter = ',')]
        buckets: Vec<String>,
    },
    /// Backtests over the synthetic market (generated on the fly), beside the source alone and
    /// the feature graph alone; prints the peak memory.
    Backtest {
        /// Total events (ten symbols at 10 M a day is 100 M).
        #[arg(long, default_value_t = 10_000_000)]
        events: u64,
        /// Symbols.
        #[arg(long, default_value_t = 10)]
        symbols: usize,
        /// Worker threads of the graph stages.
        #[arg(short = 'w', long, default_value_t = 2)]
        workers: usize,
        /// Runs per stage; the median is reported.
        #[arg(long, default_value_t = 1)]
        repeat: usize,
    },
    /// A market maker on a capture through the simulated exchange (fills as CSV on stdout);
    /// `scripts/compare_hftbacktest.py` runs it beside hftbacktest.
    MarketMaking {
        /// Capture files of one symbol.
        #[arg(required = true)]
        inputs: Vec<PathBuf>,
        /// The symbol (default: the first seen).
        #[arg(long)]
        symbol: Option<String>,
        /// Quote size.
        #[arg(long, default_value_t = 0.01)]
        qty: f64,
        /// Largest position either way.
        #[arg(long, default_value_t = 0.05)]
        max_position: f64,
        /// Re-quote interval.
        #[arg(long, default_value = "100ms")]
        interval: flowsense_core::job::Span,
        /// Order entry latency.
        #[arg(long, default_value = "1ms")]
        order_latency: flowsense_core::job::Span,
        /// Response latency.
        #[arg(long, default_value = "1ms")]
        response_latency: flowsense_core::job::Span,
        /// The L2 queue model's power.
        #[arg(long, default_value_t = 2.0)]
        queue_power: f64,
        /// Maker fee (fraction of notional).
        #[arg(long, default_value_t = 0.0002)]
        maker_fee: f64,
        /// Taker fee.
        #[arg(long, default_value_t = 0.0008)]
        taker_fee: f64,
        /// The venue's lot: modelled fills round down to it (0 for none).
        #[arg(long, default_value_t = 0.001)]
        lot_size: f64,
        /// `partial` (the part of a trade past the queue) or `whole` (the whole rest of the
        /// order, as hftbacktest's no-partial-fill exchange).
        #[arg(long, default_value = "partial", value_parser = ["partial", "whole"])]
        queue_fills: String,
        /// `net` (a level's fall less the trades at its price) or `gross` (the whole fall, as
        /// hftbacktest's power queue model) counts as cancels.
        #[arg(long, default_value = "net", value_parser = ["net", "gross"])]
        queue_cancels: String,
    },
    /// Runs named queries (a JSON object `{"name": "SQL", ...}`) over a lake; prints one JSON line
    /// per query with the median time. `scripts/bench_sql.py` runs it beside DuckDB.
    Sql {
        /// The lake.
        #[arg(long, env = "FLOWSENSE_LAKE", default_value = "./lake")]
        lake: String,
        /// The JSON file of queries.
        #[arg(long)]
        queries: PathBuf,
        /// Runs per query; the median is reported.
        #[arg(long, default_value_t = 3)]
        repeat: usize,
        /// DataFusion options, `key=value`, for tuning experiments.
        #[arg(long = "set", value_parser = parse_kv)]
        options: Vec<(String, String)>,
    },
}

fn parse_kv(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("{s:?} is not key=value"))
}

/// Process CPU time (user + system) from /proc, in seconds; 0 where unavailable.
pub(crate) fn cpu_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    let after = stat.rsplit_once(')').map(|x| x.1).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|x| x.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

pub(crate) struct Stage {
    pub(crate) name: &'static str,
    pub(crate) wall: Duration,
    pub(crate) cpu: f64,
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

pub(crate) fn measure<F: FnMut() -> anyhow::Result<()>>(
    name: &'static str,
    repeat: usize,
    mut f: F,
) -> anyhow::Result<Stage> {
    let mut walls = Vec::with_capacity(repeat);
    let cpu0 = cpu_seconds();
    for _ in 0..repeat.max(1) {
        let t = Instant::now();
        f()?;
        walls.push(t.elapsed());
    }
    let cpu = (cpu_seconds() - cpu0) / repeat.max(1) as f64;
    Ok(Stage {
        name,
        wall: median(walls),
        cpu,
    })
}

/// Like [`measure`] for a run that writes a lake: each run gets a fresh, empty lake (in memory, or
/// `file://` in a temporary folder), made before the clock starts. Only the runs themselves are
/// timed and charged CPU; the folders go to `kept`, which the benchmark drops when it has printed,
/// so that no stage pays for removing an earlier one's files (on a file system without a journal,
/// ext4 scans past recently deleted inodes for every file it creates: see BENCHMARKS.md).
async fn measure_writes<F>(
    name: &'static str,
    repeat: usize,
    in_memory: bool,
    kept: &mut Vec<tempfile::TempDir>,
    mut f: F,
) -> anyhow::Result<Stage>
where
    F: AsyncFnMut(&Lake) -> anyhow::Result<()>,
{
    let mut walls = Vec::with_capacity(repeat);
    let mut cpu = 0.0;
    for _ in 0..repeat.max(1) {
        let dir = tempfile::tempdir()?;
        let lake = if in_memory {
            Lake::memory()
        } else {
            Lake::open(
                dir.path().to_str().context("temp path")?,
                &Default::default(),
            )?
        };
        kept.push(dir);
        let cpu0 = cpu_seconds();
        let t = Instant::now();
        f(&lake).await?;
        walls.push(t.elapsed());
        cpu += cpu_seconds() - cpu0;
    }
    Ok(Stage {
        name,
        wall: median(walls),
        cpu: cpu / repeat.max(1) as f64,
    })
}

/// The last stage run `parallel` sources (or symbols) at once, as the command does by default,
/// through `run(lake, parallel)`; none on a machine where the default is one at a time.
async fn at_once<F>(
    name: &'static str,
    what: &str,
    repeat: usize,
    parallel: usize,
    kept: &mut Vec<tempfile::TempDir>,
    run: F,
) -> anyhow::Result<Option<Stage>>
where
    F: AsyncFn(&Lake, usize) -> anyhow::Result<()>,
{
    if parallel <= 1 {
        return Ok(None);
    }
    let stage = measure_writes(name, repeat, false, kept, async |lake: &Lake| {
        run(lake, parallel).await
    })
    .await?;
    println!("(the last stage runs {parallel} {what} at once: the default on this machine)");
    Ok(Some(stage))
}

fn print_stages(unit: &str, n: u64, stages: &[Stage]) {
    let base = stages[0].wall.as_secs_f64();
    println!(
        "{:<44} {:>12} {:>16} {:>16} {:>10}",
        "stage",
        "median ms",
        format!("{unit}/s"),
        format!("{unit}/cpu-s"),
        "x stage 1"
    );
    for s in stages {
        let secs = s.wall.as_secs_f64();
        let per_cpu = if s.cpu > 0.0 {
            format!("{:.0}", n as f64 / s.cpu)
        } else {
            "n/a".into()
        };
        println!(
            "{:<44} {:>12.1} {:>16.0} {:>16} {:>10.2}",
            s.name,
            secs * 1e3,
            n as f64 / secs,
            per_cpu,
            secs / base
        );
    }
}

fn default_inputs(inputs: Vec<PathBuf>) -> Vec<PathBuf> {
    if inputs.is_empty() {
        vec![PathBuf::from("data/binance")]
    } else {
        inputs
    }
}

fn capture_files(inputs: &[PathBuf]) -> anyhow::Result<Vec<PathBuf>> {
    Ok(
        open_inputs(inputs, Some(flowsense_sources::detect::Format::Binance))?
            .into_iter()
            .flat_map(|(_, files, _)| files)
            .collect(),
    )
}

/// Runs a benchmark.
pub async fn run(which: BenchCommand) -> anyhow::Result<()> {
    match which {
        BenchCommand::Ingest { inputs, repeat } => {
            bench_ingest(default_inputs(inputs), repeat).await
        }
        BenchCommand::Synth {
            symbols,
            events_per_day,
            repeat,
        } => bench_synth(symbols, events_per_day, repeat).await,
        BenchCommand::Sql {
            lake,
            queries,
            repeat,
            options,
        } => bench_sql(&lake, &queries, repeat, &options).await,
        BenchCommand::Graph { .. }
        | BenchCommand::Backtest { .. }
        | BenchCommand::MarketMaking { .. } => {
            anyhow::bail!("the graph benchmarks run outside an async runtime (see cli::run)")
        }
    }
}

async fn bench_ingest(inputs: Vec<PathBuf>, repeat: usize) -> anyhow::Result<()> {
    let files = capture_files(&inputs)?;
    let mut lines = 0u64;
    let mut bytes = 0u64;
    for f in &files {
        let mut r = open_text(f)?;
        let mut buf = Vec::new();
        while r.read_until(b'\n', &mut buf)? > 0 {
            lines += 1;
            bytes += buf.len() as u64;
            buf.clear();
        }
    }
    println!(
        "flowsense bench ingest: {} files, {lines} lines, {:.1} MB of JSON; median of {repeat} runs",
        files.len(),
        bytes as f64 / 1e6
    );
    let gzip = measure("1 gzip decode + line split", repeat, || {
        for f in &files {
            let mut r = open_text(f)?;
            let mut buf = Vec::new();
            while r.read_until(b'\n', &mut buf)? > 0 {
                buf.clear();
            }
        }
        Ok(())
    })?;
    let json = measure("2 gzip + JSON parse (serde, IgnoredAny)", repeat, || {
        for f in &files {
            let mut r = open_text(f)?;
            let mut buf = Vec::new();
            while r.read_until(b'\n', &mut buf)? > 0 {
                if let Some(i) = buf.iter().position(|&b| b == b' ') {
                    let _: serde::de::IgnoredAny =
                        serde_json::from_slice(&buf[i + 1..]).context("json")?;
                }
                buf.clear();
            }
        }
        Ok(())
    })?;
    let read = measure("3 reader: parse, validate, rebuild book", repeat, || {
        for (_, _, reader) in
            open_inputs(&inputs, Some(flowsense_sources::detect::Format::Binance))?
        {
            for r in reader {
                std::hint::black_box(r?);
            }
        }
        Ok(())
    })?;
    let ingest = async |lake: &Lake, parallel: usize| {
        let binance = Some(flowsense_sources::detect::Format::Binance);
        let options = Default::default();
        crate::ingest::ingest_sources(lake, &inputs, binance, &options, false, parallel)
            .await
            .map(drop)
    };
    let mut kept = Vec::new();
    let end = measure_writes(
        "4 flowsense ingest, one source at a time",
        repeat,
        false,
        &mut kept,
        async |lake: &Lake| ingest(lake, 1).await,
    )
    .await?;
    let mut stages = vec![gzip, json, read, end];
    let parallel = crate::ingest::default_parallelism();
    let name = "5 flowsense ingest, sources at once (-j)";
    stages.extend(at_once(name, "sources", repeat, parallel, &mut kept, ingest).await?);
    print_stages("lines", lines, &stages);
    drop(kept);
    Ok(())
}

async fn bench_synth(symbols: usize, events_per_day: u64, repeat: usize) -> anyhow::Result<()> {
    let cfg = SynthConfig {
        symbols,
        days: 1,
        seed: 42,
        events_per_day,
        ..Default::default()
    };
    let mut messages = 0u64;
    let dates = cfg.dates();
    for s in 0..symbols {
        let mut g = DayGenerator::new(&cfg, s, 0, dates[0]);
        let mut buf = Vec::new();
        messages += g.initial_orders().len() as u64;
        while g.next_events(&mut buf) {
            messages += buf.len() as u64;
            buf.clear();
        }
    }
    println!(
        "flowsense bench synth: {symbols} symbols x 1 day, {messages} order messages; median of {repeat} runs"
    );
    let gen_only = measure(
        "1 generator alone (Hawkes + queue-reactive)",
        repeat,
        || {
            for s in 0..symbols {
                let mut g = DayGenerator::new(&cfg, s, 0, dates[0]);
                let mut buf = Vec::new();
                while g.next_events(&mut buf) {
                    std::hint::black_box(&buf);
                    buf.clear();
                }
            }
            Ok(())
        },
    )?;
    let with_book = measure("2 + L3 book replay, trades and BBO", repeat, || {
        for r in SyntheticMarket::new(cfg.clone()) {
            std::hint::black_box(r);
        }
        Ok(())
    })?;
    let synth = async |lake: &Lake, parallel: usize| {
        crate::synth::synth_parallel(lake, &cfg, None, false, parallel)
            .await
            .map(drop)
    };
    let mut kept = Vec::new();
    let mem = measure_writes(
        "3 + Parquet encode, in-memory store",
        repeat,
        true,
        &mut kept,
        async |lake: &Lake| synth(lake, 1).await,
    )
    .await?;
    let disk = measure_writes(
        "4 + file:// lake writes (synth -j 1)",
        repeat,
        false,
        &mut kept,
        async |lake: &Lake| synth(lake, 1).await,
    )
    .await?;
    let mut stages = vec![gen_only, with_book, mem, disk];
    let parallel = crate::ingest::default_parallelism().min(symbols);
    let name = "5 + symbols at once (flowsense synth)";
    stages.extend(at_once(name, "symbols", repeat, parallel, &mut kept, synth).await?);
    print_stages("events", messages, &stages);
    drop(kept);
    Ok(())
}

async fn bench_sql(
    lake: &str,
    queries: &PathBuf,
    repeat: usize,
    options: &[(String, String)],
) -> anyhow::Result<()> {
    let lake = Lake::open(lake, &Default::default())?;
    let text = std::fs::read_to_string(queries)
        .with_context(|| format!("reading {}", queries.display()))?;
    let map: serde_json::Map<String, serde_json::Value> = serde_json::from_str(&text)?;
    let session = LakeSession::open_with(&lake, options).await?;
    for (name, sql) in map {
        let sql = sql.as_str().context("query text")?.to_string();
        let mut times = Vec::new();
        let mut rows = 0;
        for _ in 0..repeat.max(1) {
            let t = Instant::now();
            let batches = session
                .query(&sql)
                .await
                .with_context(|| format!("{name}: {sql}"))?;
            times.push(t.elapsed());
            rows = batches.iter().map(|b| b.num_rows()).sum::<usize>();
        }
        let ms = median(times).as_secs_f64() * 1e3;
        println!(
            "{}",
            serde_json::json!({ "name": name, "median_ms": ms, "rows": rows })
        );
    }
    Ok(())
}
