//! FlowSense's whole-process benchmarks, the bodies of `flowsense bench`: each prints its stages
//! beside a baseline run in the same process, so the ratio shows where the time goes. Medians of
//! `repeat` runs; the figures and their commands are in BENCHMARKS.md. In-process hot paths have
//! criterion benches beside their crates (`operators/benches`).
//!
//! - [`ingest`]: Binance capture ingest end to end, beside gzip alone and gzip + JSON alone.
//! - [`synth`]: the synthetic generator and its lake writes.
//! - [`graph`]: the feature graph in batch and replay, beside a plain loop over the same engine.
//! - [`backtest`]: backtests over the synthetic market, beside the source and the graph alone,
//!   with the process's peak memory.
//! - [`market_making`]: a market maker on a capture through the simulated exchange, for the
//!   side-by-side with hftbacktest (`scripts/compare_hftbacktest.py`).
//! - [`service`]: jobs submitted to a running cluster beside `flowsense run`, submit-to-running
//!   latency and the API under load.
//! - [`sql`]: named queries over a lake, for the side-by-side with DuckDB (`scripts/bench_sql.py`).
//! - [`live`]: tick-to-order latency through a local Binance ([`venue`]) replaying a capture,
//!   beside the same graph fed from memory; live decode throughput beside the file reader.

#![forbid(missing_docs)]
// Benchmarks time runs with the wall clock.
#![allow(clippy::disallowed_methods)]

use std::time::{Duration, Instant};

use anyhow::Context;
use flowsense_sinks::Lake;

pub mod backtest;
pub mod graph;
pub mod ibkr;
pub mod ingest;
pub mod live;
pub mod market_making;
pub mod service;
pub mod sql;
pub mod synth;
pub mod tws;
pub mod venue;

/// Process CPU time (user + system) from /proc, in seconds; 0 where unavailable.
pub fn cpu_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    let after = stat.rsplit_once(')').map(|x| x.1).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|x| x.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

/// One measured stage: its name, median wall time and mean CPU seconds per run.
pub struct Stage {
    /// What ran.
    pub name: &'static str,
    /// Median wall time.
    pub wall: Duration,
    /// Mean CPU seconds (user + system) per run.
    pub cpu: f64,
}

/// The median of `v` (the upper one of an even count).
pub fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// Runs `f` `repeat` times (at least once): the median wall time and mean CPU time.
pub fn measure<F: FnMut() -> anyhow::Result<()>>(
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
pub async fn measure_writes<F>(
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
pub async fn at_once<F>(
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

/// Prints the stages as a table, each as a multiple of the first (the baseline).
pub fn print_stages(unit: &str, n: u64, stages: &[Stage]) {
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
