//! `flowsense demo`: the main job on embedded defaults, for a first look.

use std::path::PathBuf;

use anyhow::Context;
use flowsense_sinks::Lake;
use flowsense_sources::synth::SynthConfig;
use flowsense_sql::LakeSession;

use crate::output::{OutputFormat, write_batches};

/// Where the demo's job spec lives (it is compiled in, so the demo runs from anywhere).
pub const DEMO_JOB_PATH: &str = "examples/demo-features.toml";

/// The demo's job: features of everything in the lake, 1 s and 10 s buckets.
pub const DEMO_JOB: &str = include_str!("../../examples/demo-features.toml");

/// Where the demo's strategy lives (compiled in too).
pub const DEMO_STRATEGY_PATH: &str = "examples/binance-ofi-backtest.toml";

/// The demo's strategy: order-flow imbalance on the real captures, limit orders at the touch.
pub const DEMO_STRATEGY: &str = include_str!("../../examples/binance-ofi-backtest.toml");

/// The feature job of the bundled captures (`flowsense demo --serve` replays it).
pub const LIVE_FEATURES: &str = include_str!("../../examples/binance-features.toml");

/// The bundled real captures' symbols.
pub const CAPTURE_SYMBOLS: [&str; 3] = ["BTCUSDT-PERP", "BTCUSD_PERP", "BTCUSDT"];

/// The jobs `flowsense demo --serve` keeps running: the bundled captures replayed from the
/// lake at `speed` times real time, through the feature graph (`live-features`) and through
/// the demo's strategy trading on paper against the simulated exchange (`paper-ofi`).
///
/// ```
/// let jobs = flowsense_dataflows::demo::live_jobs(1.0).unwrap();
/// assert_eq!(jobs[0].name, "live-features");
/// assert!(jobs[1].strategy.is_some() && jobs[1].replay.is_some());
/// ```
pub fn live_jobs(speed: f64) -> anyhow::Result<Vec<flowsense_core::job::JobSpec>> {
    use flowsense_core::job::{JobSpec, Replay};
    let mut out = Vec::new();
    for (name, text) in [
        ("live-features", LIVE_FEATURES),
        ("paper-ofi", DEMO_STRATEGY),
    ] {
        let mut spec = JobSpec::from_toml(text)?;
        spec.name = name.to_string();
        spec.symbols = CAPTURE_SYMBOLS.iter().map(|s| s.to_string()).collect();
        spec.replay = Some(Replay { speed });
        spec.validate()?;
        out.push(spec);
    }
    Ok(out)
}

/// The demo backtest's run id.
pub const DEMO_RUN: &str = "demo-ofi";

/// Queries the demo prints, with what each shows.
pub const QUERIES: &[(&str, &str)] = &[
    (
        "rows per table and symbol",
        "SELECT symbol, (SELECT count(*) FROM trades t WHERE t.symbol = s.symbol) AS trades, \
         count(*) AS book_updates, min(date) AS first_day, max(date) AS last_day \
         FROM bbo s GROUP BY symbol ORDER BY symbol",
    ),
    (
        "buy/sell aggressor volume and VWAP per symbol",
        "SELECT symbol, side, count(*) AS trades, sum(size) AS volume, \
         sum(price * size) / sum(size) AS vwap \
         FROM trades GROUP BY symbol, side ORDER BY symbol, side",
    ),
    (
        "median quoted spread and mean top-of-book depth, from the reconstructed books",
        "SELECT symbol, count(*) AS books, round(approx_median(ask_price - bid_price), 6) AS median_spread, \
         round(avg(bid_size + ask_size), 3) AS mean_top_depth \
         FROM bbo WHERE NOT gap AND bid_price IS NOT NULL AND ask_price IS NOT NULL GROUP BY symbol ORDER BY symbol",
    ),
    (
        "1-minute OHLCV of BTCUSDT-PERP (exchange time, ns)",
        "SELECT to_timestamp_nanos(ts - ts % 60000000000) AS minute, \
         first_value(price ORDER BY ts) AS open, max(price) AS high, min(price) AS low, \
         last_value(price ORDER BY ts) AS close, round(sum(size), 6) AS volume \
         FROM trades WHERE symbol = 'BTCUSDT-PERP' GROUP BY ts - ts % 60000000000 ORDER BY minute",
    ),
    (
        "order-flow features from the timely graph: how well best-level OFI tracks 1 s mid changes",
        "SELECT symbol, count(*) AS buckets, round(corr(ofi_l1, dmid), 3) AS corr_ofi_l1, \
         round(corr(ofi_l10, dmid), 3) AS corr_ofi_l10, round(avg(spread), 4) AS mean_spread, \
         round(avg(trade_imbalance), 3) AS mean_trade_imbalance, round(max(vpin), 3) AS max_vpin \
         FROM (SELECT symbol, ofi_l1, ofi_l10, spread, trade_imbalance, vpin, \
               mid - lag(mid) OVER (PARTITION BY symbol, date ORDER BY ts) AS dmid \
               FROM features WHERE job = 'demo-features' AND bucket = '1s') \
         GROUP BY symbol ORDER BY symbol",
    ),
    (
        "the graph's operators, from timely's logging (flowsense run --stats prints the same)",
        "SELECT name, sum(records_in) AS records_in, sum(records_out) AS records_out, \
         round(sum(busy_ns) / 1e6, 1) AS busy_ms FROM flowsense_operators \
         WHERE job = 'demo-features' GROUP BY name, id ORDER BY id",
    ),
    (
        "the backtest of the shipped strategy on the real captures, per symbol (flowsense report demo-ofi draws it)",
        "SELECT scope, round(net_pnl, 2) AS net_pnl, round(fees, 2) AS fees, round_trips, \
         orders, round(fill_ratio, 3) AS fill_ratio, round(mean_queue_wait_ms) AS queue_wait_ms \
         FROM metrics WHERE run_id = 'demo-ofi' AND regime IS NULL \
         ORDER BY scope <> 'portfolio', scope",
    ),
    (
        "rows refused by validation (kept in dead_letters with their reason)",
        "SELECT count(*) AS dead_letters FROM dead_letters",
    ),
];

fn bundled_data(explicit: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    if let Some(p) = explicit {
        return Ok(p);
    }
    for p in [
        PathBuf::from("data/binance"),
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../data/binance"),
    ] {
        if p.is_dir() {
            return Ok(p);
        }
    }
    anyhow::bail!("the bundled data folder data/binance was not found; pass --data")
}

/// Ingests the bundled captures and a synthetic market into `lake` and prints the queries.
pub async fn run(lake: &Lake, data: Option<PathBuf>) -> anyhow::Result<()> {
    let data = bundled_data(data)?;
    eprintln!(
        "1/5 ingesting the real Binance captures in {}",
        data.display()
    );
    let report = crate::ingest::ingest_paths(lake, &[data], None, true)
        .await
        .context("ingesting the bundled data")?;
    eprint!("{}", report.summary(lake.url().as_str()));
    let cfg = SynthConfig {
        symbols: 3,
        days: 2,
        seed: 42,
        events_per_day: 200_000,
        ..Default::default()
    };
    eprintln!(
        "2/5 generating a synthetic market: {} symbols x {} days, seed {}",
        cfg.symbols, cfg.days, cfg.seed
    );
    let report = crate::synth::synth(lake, &cfg, None, true).await?;
    eprint!("{}", report.summary(lake.url().as_str()));
    eprintln!("3/5 running the feature graph over the lake ({DEMO_JOB_PATH})");
    let spec = flowsense_core::job::JobSpec::from_toml(DEMO_JOB)?;
    let run = tokio::task::block_in_place(|| {
        crate::run::run_job(
            &spec,
            lake,
            &crate::run::RunOptions {
                workers: 2,
                ..Default::default()
            },
            crate::run::spec_sinks(&spec, lake),
        )
    })
    .context("running the feature job")?;
    eprint!("{}", run.summary(&spec));
    eprintln!("4/5 backtesting the shipped strategy ({DEMO_STRATEGY_PATH}) on the real captures");
    let strategy = flowsense_core::job::JobSpec::from_toml(DEMO_STRATEGY)?;
    let bt = tokio::task::block_in_place(|| {
        crate::backtest::run_trading(
            &strategy,
            lake,
            &crate::backtest::TradingOptions::backtest(DEMO_RUN),
        )
    })
    .context("backtesting the shipped strategy")?;
    eprint!("{}", bt.summary());
    let html = crate::report::build(lake, DEMO_RUN).await?;
    let out = std::path::Path::new("reports").join(format!("{DEMO_RUN}.html"));
    if std::fs::create_dir_all("reports").is_ok() && std::fs::write(&out, html).is_ok() {
        eprintln!(
            "report: {} (flowsense report {DEMO_RUN} --pdf for a PDF)",
            out.display()
        );
    }
    eprintln!(
        "5/5 querying the lake (try: flowsense sql --lake {} \"SHOW TABLES\")",
        lake.url()
    );
    let session = LakeSession::open(lake).await?;
    let mut stdout = std::io::stdout().lock();
    for (title, sql) in QUERIES {
        use std::io::Write;
        writeln!(stdout, "\n-- {title}\n{sql}")?;
        let batches = session
            .query(sql)
            .await
            .with_context(|| format!("running: {sql}"))?;
        write_batches(&batches, OutputFormat::Table, &mut stdout)?;
    }
    Ok(())
}
