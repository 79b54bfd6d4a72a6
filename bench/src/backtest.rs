//! `flowsense bench backtest`: backtest throughput over the synthetic market (generated on the
//! fly, so any size fits: 100 M events is ten symbols at 10 M messages a day), beside the same
//! source alone and the feature graph alone on the same events, and the process's peak memory.

use std::sync::Arc;

use flowsense_core::Lake;
use flowsense_core::job::JobSpec;

use flowsense_dataflows::backtest::{TradingOptions, run_trading};
use flowsense_dataflows::job::{CountSink, FeatureSink, SourceCounts, worker_source};
use flowsense_dataflows::run::{RunOptions, run_job};

/// Options of the backtest benchmark.
#[derive(Clone, Debug)]
pub struct BacktestBench {
    /// Total events (approximately: the generator draws message counts per symbol-day).
    pub events: u64,
    /// Symbols.
    pub symbols: usize,
    /// Worker threads of the graph stages.
    pub workers: usize,
    /// Runs per stage; medians are reported.
    pub repeat: usize,
}

/// The process's peak resident memory so far (`VmHWM`), in MiB; 0 where unavailable.
pub fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

fn spec(b: &BacktestBench) -> anyhow::Result<JobSpec> {
    let per_day = b.events / b.symbols.max(1) as u64;
    Ok(JobSpec::from_toml(&format!(
        r#"
name = "bench-backtest"
[source.synthetic]
symbols = {symbols}
days = 1
seed = 7
events_per_day = {per_day}
[features]
buckets = ["1s"]
levels = 5
[strategy]
bucket = "1s"
signal = "ofi_l1 / (bid_size + ask_size) + 0.5 * lag(ofi_l1 / (bid_size + ask_size), 1)"
entry = 0.3
max_hold = "30s"
order = "limit_join"
cancel_after = "5s"
[strategy.sizing]
method = "fixed"
size = 100
[risk]
capital = 1000000
max_orders_per_second = 5
[sinks]
lake = false
stdout = true
"#,
        symbols = b.symbols
    ))?)
}

/// Runs the benchmark and prints its table.
pub fn run(b: BacktestBench) -> anyhow::Result<()> {
    let spec = spec(&b)?;
    let lake = Lake::memory();
    println!(
        "backtest benchmark: synthetic market, {} symbols x 1 day, ~{} events, {} worker(s), \
         strategy on 1 s OFI with limit orders at the touch (exact L3 queue)",
        b.symbols, b.events, b.workers
    );
    // The backtest first, so the peak memory printed after it is its own.
    let mut trades = (0u64, 0u64);
    let mut events = 0u64;
    let bt = crate::measure(
        "backtest (features + strategy + simulated exchange)",
        b.repeat,
        || {
            let mut opts = TradingOptions::backtest("bench");
            opts.write = false;
            opts.run.workers = b.workers;
            let r = run_trading(&spec, &lake, &opts)?;
            trades = (
                r.counts.get("orders").copied().unwrap_or(0),
                r.counts.get("fills").copied().unwrap_or(0),
            );
            events = r.events;
            Ok(())
        },
    )?;
    let peak = peak_rss_mib();
    let src = crate::measure("synthetic source alone (baseline)", b.repeat, || {
        let counts = Arc::new(std::sync::Mutex::new(SourceCounts::default()));
        let n = worker_source(&spec, &lake, 0, 1, counts)?.count();
        std::hint::black_box(n);
        Ok(())
    })?;
    let feat = crate::measure("feature graph alone", b.repeat, || {
        let opts = RunOptions {
            workers: b.workers,
            ..Default::default()
        };
        let sinks: flowsense_dataflows::run::SinkFactory =
            Arc::new(|_, _| Ok(Box::new(CountSink::default()) as Box<dyn FeatureSink>));
        run_job(&spec, &lake, &opts, sinks)?;
        Ok(())
    })?;
    println!(
        "\n{:<54} {:>12} {:>11} {:>13} {:>15} {:>10}",
        "stage", "events", "median s", "events/s", "events/cpu-s", "x source"
    );
    let base = src.wall.as_secs_f64();
    for s in [&src, &feat, &bt] {
        let w = s.wall.as_secs_f64();
        println!(
            "{:<54} {:>12} {:>11.2} {:>13.0} {:>15.0} {:>10.2}",
            s.name,
            events,
            w,
            events as f64 / w,
            events as f64 / s.cpu.max(1e-9),
            w / base
        );
    }
    println!(
        "\nbacktest: {} orders, {} fills; peak resident memory after the backtest stage: {peak:.0} MiB",
        trades.0, trades.1
    );
    Ok(())
}
