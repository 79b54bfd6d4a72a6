//! Backtests end to end on the bundled real Binance captures: `flowsense backtest` and a paced
//! `flowsense run` give the same orders and fills; every results table is written and readable;
//! a re-run under the same id replaces the first; the drawdown halt holds inside the graph.

use flowsense_core::Lake;
use flowsense_core::job::JobSpec;
use flowsense_core::results::TradeRecord;
use flowsense_dataflows::backtest::{TradingOptions, run_trading};
use flowsense_dataflows::run::RunOptions;

use crate::common;

fn example() -> std::path::PathBuf {
    common::repo_path("examples/binance-ofi-backtest.toml")
}

fn binance_lake() -> (tempfile::TempDir, Lake) {
    let dir = tempfile::tempdir().unwrap();
    let lake = Lake::open(
        dir.path().join("lake").to_str().unwrap(),
        &Default::default(),
    )
    .unwrap();
    common::rt()
        .block_on(flowsense_dataflows::ingest::ingest_paths_with(
            &lake,
            &[common::binance_data()],
            None,
            &Default::default(),
            false,
        ))
        .unwrap();
    (dir, lake)
}

/// The orders of `symbol` among `records` whose send time passes `when`.
fn orders_of<'a>(
    records: &'a [TradeRecord],
    symbol: &flowsense_core::Symbol,
    when: impl Fn(flowsense_core::UnixNanos) -> bool,
) -> Vec<&'a flowsense_core::order::OrderRecord> {
    records
        .iter()
        .filter_map(|r| match r {
            TradeRecord::Order(o) if &o.order.symbol == symbol && when(o.order.sent) => Some(o),
            _ => None,
        })
        .collect()
}

#[test]
fn backtest_and_paced_replay_give_identical_orders_and_fills() {
    let (dir, lake) = binance_lake();
    let lake_arg = dir.path().join("lake");
    let lake_arg = lake_arg.to_str().unwrap();
    let job = example();
    let out = common::run_ok(&[
        "backtest",
        job.to_str().unwrap(),
        "--lake",
        lake_arg,
        "--run-id",
        "batch",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("portfolio"), "{stderr}");

    // The same job as a live feed: paced replay (about 2 s for the 6 minutes), two workers.
    let mut spec = JobSpec::from_file(&job).unwrap();
    spec.replay = Some(flowsense_core::job::Replay { speed: 200.0 });
    let replay_job = dir.path().join("replay.toml");
    std::fs::write(&replay_job, spec.to_toml()).unwrap();
    common::run_ok(&[
        "run",
        replay_job.to_str().unwrap(),
        "--lake",
        lake_arg,
        "-w",
        "2",
        "--run-id",
        "replay",
    ]);

    let rt = common::rt();
    for (table, cols) in [
        (
            "orders",
            "symbol, ts, order_id, side, kind, price, size, filled, status, reason, signal, target",
        ),
        (
            "fills",
            "symbol, ts, order_id, side, price, size, fee, liquidity, queue_wait_ns",
        ),
        ("equity", "symbol, ts, equity, position, drawdown, regime"),
    ] {
        let q = |run: &str| format!("SELECT {cols} FROM {table} WHERE run_id = '{run}'");
        let a = rt.block_on(common::query_csv(&lake, &q("batch")));
        let b = rt.block_on(common::query_csv(&lake, &q("replay")));
        assert!(
            a.lines().count() > 20,
            "{table}: too few rows to compare:\n{a}"
        );
        common::assert_same_text(&a, &b, table);
    }
    let modes = rt.block_on(common::query_csv(
        &lake,
        "SELECT run_id, mode FROM runs ORDER BY run_id",
    ));
    assert_eq!(modes, "run_id,mode\nbatch,backtest\nreplay,replay");
}

#[test]
fn every_results_table_is_written_and_a_rerun_replaces_it() {
    let (dir, lake) = binance_lake();
    let lake_arg = dir.path().join("lake");
    let args = [
        "backtest".to_string(),
        example().to_str().unwrap().to_string(),
        "--lake".into(),
        lake_arg.to_str().unwrap().to_string(),
        "--run-id".into(),
        "r1".into(),
    ];
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    common::run_ok(&args);
    let rt = common::rt();
    let count = |table: &str| {
        rt.block_on(common::query_u64(
            &lake,
            &format!("SELECT count(*) FROM {table} WHERE run_id = 'r1'"),
        ))
    };
    let tables = ["orders", "fills", "equity", "positions", "metrics", "runs"];
    let first: Vec<u64> = tables.iter().map(|t| count(t)).collect();
    assert!(first.iter().all(|&n| n > 0), "{tables:?}: {first:?}");
    common::run_ok(&args);
    let second: Vec<u64> = tables.iter().map(|t| count(t)).collect();
    assert_eq!(
        first, second,
        "a re-run under the same id replaces the first"
    );

    // The metrics add up: net = gross - fees, and the portfolio's fees are the fills' fees.
    let m = rt.block_on(common::query_csv(
        &lake,
        "SELECT abs(round(gross_pnl - fees - net_pnl, 6)) AS gap, \
                abs(round(fees - (SELECT sum(fee) FROM fills WHERE run_id = 'r1'), 6)) AS fee_gap, \
                abs(round(end_equity - capital - net_pnl, 6)) AS eq_gap \
         FROM metrics WHERE run_id = 'r1' AND scope = 'portfolio'",
    ));
    assert_eq!(m, "gap,fee_gap,eq_gap\n0.0,0.0,0.0");
    // Every fill belongs to an order of the run, and no order filled more than its size.
    let orphans = rt.block_on(common::query_u64(
        &lake,
        "SELECT count(*) FROM fills f LEFT JOIN orders o \
         ON f.order_id = o.order_id AND o.run_id = 'r1' \
         WHERE f.run_id = 'r1' AND o.order_id IS NULL",
    ));
    assert_eq!(orphans, 0);
    let overfilled = rt.block_on(common::query_u64(
        &lake,
        "SELECT count(*) FROM orders WHERE run_id = 'r1' AND filled > size + 1e-9",
    ));
    assert_eq!(overfilled, 0);
    // Closed positions are the metrics' round trips; their PnL and prices are sane.
    let trips = rt.block_on(common::query_csv(
        &lake,
        "SELECT (SELECT count(*) FROM positions WHERE run_id = 'r1' AND status = 'closed') \
                = round_trips AS same, \
                (SELECT count(*) FROM positions WHERE run_id = 'r1' AND (avg_open <= 0 OR \
                 (status = 'closed' AND avg_close IS NULL))) AS bad \
         FROM metrics WHERE run_id = 'r1' AND scope = 'portfolio'",
    ));
    assert_eq!(trips, "same,bad\ntrue,0");

    // The report: HTML with the metrics and a plot per chart, and a PDF printed by Chromium.
    let html = dir.path().join("out/r1.html");
    let out = common::run_ok(&[
        "report",
        "r1",
        "--lake",
        lake_arg.to_str().unwrap(),
        "--out",
        html.to_str().unwrap(),
        "--pdf",
    ]);
    let page = std::fs::read_to_string(&html).unwrap();
    for needle in [
        "<h2>Metrics</h2>",
        "<tr class=\"total\">",
        "Equity (all symbols)",
        "Drawdown",
        "<h2>BTCUSDT-PERP</h2>",
        "Mid and fills",
        "Position",
        "Positions",
    ] {
        assert!(page.contains(needle), "report lacks {needle:?}");
    }
    // 3 portfolio charts, then 2 per symbol.
    assert_eq!(
        page.matches("<svg").count(),
        3 + 2 * 3,
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pdf = std::fs::read(html.with_extension("pdf")).unwrap();
    assert!(
        pdf.starts_with(b"%PDF") && pdf.len() > 20_000,
        "{} bytes",
        pdf.len()
    );
    // An unknown run says which runs there are.
    let err = common::run_err(&["report", "nope", "--lake", lake_arg.to_str().unwrap()]);
    assert!(
        err.contains("no run \"nope\"") && err.contains("r1"),
        "{err}"
    );
}

#[test]
fn the_halt_holds_inside_the_graph_on_real_data() {
    // A halt threshold the first losses cross: after the halt, only flattening orders leave.
    let (_dir, lake) = binance_lake();
    let mut spec = JobSpec::from_file(&example()).unwrap();
    spec.risk.drawdown_alert = 0.0001;
    spec.risk.drawdown_halt = 0.0002;
    let opts = TradingOptions {
        run: RunOptions::default(),
        run_id: "halt".into(),
        write: false,
        collect: true,
        paced: false,
        fold: None,
        progress: false,
    };
    let report = run_trading(&spec, &lake, &opts).unwrap();
    let halts: Vec<_> = report
        .records
        .iter()
        .filter_map(|r| match r {
            TradeRecord::Risk(e) if e.kind == "halt" => Some((e.symbol.clone(), e.ts)),
            _ => None,
        })
        .collect();
    assert!(!halts.is_empty(), "no symbol halted");
    for (symbol, at) in &halts {
        let after = orders_of(&report.records, symbol, |sent| sent >= *at);
        assert!(
            after.iter().all(|o| o.reason == "halt"),
            "{symbol}: orders after the halt: {after:#?}"
        );
        // Flat at the end (the flattening market order found the book).
        let last = report
            .records
            .iter()
            .filter_map(|r| match r {
                TradeRecord::Equity(e) if &e.symbol == symbol => Some(e.position),
                _ => None,
            })
            .next_back();
        assert_eq!(last, Some(0.0), "{symbol}");
    }
}

#[test]
fn the_portfolio_halt_stops_every_symbol_alike_in_backtest_and_paced_replay() {
    // Sleeves that never halt on their own; a portfolio halt the first losses cross.
    let (_dir, lake) = binance_lake();
    let mut spec = JobSpec::from_file(&example()).unwrap();
    spec.risk.drawdown_alert = 0.5;
    spec.risk.drawdown_halt = 0.5;
    spec.risk.portfolio = Some(flowsense_core::strategy::PortfolioRiskSpec {
        drawdown_alert: 0.00003,
        drawdown_halt: 0.00006,
    });
    let run = |spec: &JobSpec, workers: usize, paced: bool| {
        let opts = TradingOptions {
            run: RunOptions {
                workers,
                ..RunOptions::default()
            },
            run_id: "portfolio".into(),
            write: false,
            collect: true,
            paced,
            fold: None,
            progress: false,
        };
        run_trading(spec, &lake, &opts).unwrap().records
    };
    let batch = run(&spec, 1, false);
    let mut replay_spec = spec.clone();
    replay_spec.replay = Some(flowsense_core::job::Replay { speed: 200.0 });
    let replay = run(&replay_spec, 2, true);
    let text = |records: &[TradeRecord]| {
        let mut v: Vec<String> = records.iter().map(|r| format!("{r:?}")).collect();
        v.sort();
        v
    };
    assert_eq!(
        text(&batch),
        text(&replay),
        "backtest and paced replay differ"
    );

    let risk: Vec<_> = batch
        .iter()
        .filter_map(|r| match r {
            TradeRecord::Risk(e) => Some(e),
            _ => None,
        })
        .collect();
    let halt = risk
        .iter()
        .find(|e| e.is_portfolio() && e.kind == "halt")
        .unwrap_or_else(|| panic!("the portfolio did not halt: {risk:#?}"));
    let symbols: std::collections::BTreeSet<_> = batch.iter().map(|r| r.symbol().clone()).collect();
    for symbol in symbols.iter().filter(|s| s.as_str() != "PORTFOLIO") {
        assert!(
            risk.iter().any(|e| &e.symbol == symbol
                && e.kind == "halt"
                && e.ts >= halt.ts
                && e.detail.starts_with("the portfolio halted")),
            "{symbol} did not halt with the portfolio: {risk:#?}"
        );
        let after = orders_of(&batch, symbol, |sent| sent > halt.ts);
        assert!(
            after.iter().all(|o| o.reason == "halt"),
            "{symbol}: orders after the portfolio's halt: {after:#?}"
        );
    }
    // Without the portfolio's monitor the sleeves would have traded on after that moment.
    let mut alone = spec.clone();
    alone.risk.portfolio = None;
    let traded_on = run(&alone, 1, false)
        .iter()
        .filter(|r| matches!(r, TradeRecord::Order(o) if o.order.sent > halt.ts))
        .count();
    assert!(traded_on > 0, "nothing to stop after {:?}", halt.ts);
    // No sleeve reached its own threshold: every halt came from the portfolio.
    assert!(
        risk.iter()
            .filter(|e| e.kind == "halt" && !e.is_portfolio())
            .all(|e| e.detail.starts_with("the portfolio halted"))
    );
}

#[test]
fn walk_forward_trains_on_each_fold_and_chains_the_tests() {
    let (dir, lake) = binance_lake();
    let lake_arg = dir.path().join("lake");
    common::run_ok(&[
        "backtest",
        example().to_str().unwrap(),
        "--lake",
        lake_arg.to_str().unwrap(),
        "--run-id",
        "wf",
        "--walk-forward",
        "train=2m,test=30s",
    ]);
    let rt = common::rt();
    // The bundled captures span about three minutes: two folds.
    let folds = rt.block_on(common::query_csv(
        &lake,
        "SELECT fold, params LIKE 'entry=%' AS trained, ts_to - ts_from AS len FROM metrics \
         WHERE run_id = 'wf' AND scope = 'portfolio' AND fold IS NOT NULL ORDER BY fold",
    ));
    assert_eq!(
        folds,
        "fold,trained,len\n0,true,30000000000\n1,true,30000000000"
    );
    // The whole run chains the folds: its net PnL and fees are the folds' sums.
    let gap = rt.block_on(common::query_csv(
        &lake,
        "SELECT abs(round(w.net_pnl - f.net, 6)) AS net_gap, abs(round(w.fees - f.fees, 6)) AS fee_gap \
         FROM (SELECT net_pnl, fees FROM metrics WHERE run_id = 'wf' AND scope = 'portfolio' \
               AND fold IS NULL) w, \
              (SELECT sum(net_pnl) AS net, sum(fees) AS fees FROM metrics WHERE run_id = 'wf' \
               AND scope = 'portfolio' AND fold IS NOT NULL) f",
    ));
    assert_eq!(gap, "net_gap,fee_gap\n0.0,0.0");
    // Test-window records only: no equity mark before the first test window.
    let early = rt.block_on(common::query_u64(
        &lake,
        "SELECT count(*) FROM equity WHERE run_id = 'wf' AND ts < \
         (SELECT min(ts_from) FROM metrics WHERE run_id = 'wf' AND fold IS NOT NULL)",
    ));
    assert_eq!(early, 0);
    let mode = rt.block_on(common::query_csv(
        &lake,
        "SELECT mode FROM runs WHERE run_id = 'wf'",
    ));
    assert_eq!(mode, "mode\n\"walk-forward train=2m,test=30s\"");
    // The report shows what each fold chose.
    let html = rt
        .block_on(flowsense_dataflows::report::build(&lake, "wf"))
        .unwrap();
    assert!(
        html.contains("<th>params</th>") && html.contains("entry="),
        "no params in the report"
    );
}

#[test]
fn a_bar_strategy_on_ingested_vendor_bars_fills_at_the_next_open() {
    // 200 one-minute bars of a wave, as a vendor CSV with text times.
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("WAVE-1m-2024.csv");
    let mut text = String::from("Date,Open,High,Low,Close,Volume\n");
    let close = |i: usize| 100.0 + 5.0 * (i as f64 / 9.0).sin() + 0.01 * i as f64;
    let mut bars = Vec::new();
    for i in 0..200usize {
        let c = (close(i) * 100.0).round() / 100.0;
        let o = if i == 0 {
            c
        } else {
            bars.last().map(|b: &(f64, f64)| b.1).unwrap()
        };
        let (h, l) = (o.max(c) + 0.05, o.min(c) - 0.05);
        let (hh, mm) = (i / 60, i % 60);
        text += &format!("2024-03-01 {hh:02}:{mm:02}:00,{o:.2},{h:.2},{l:.2},{c:.2},1000\n");
        bars.push((o, c));
    }
    std::fs::write(&csv, text).unwrap();
    let lake_dir = dir.path().join("lake");
    let lake_arg = lake_dir.to_str().unwrap();
    common::run_ok(&[
        "ingest",
        "--lake",
        lake_arg,
        "--format",
        "bars",
        csv.to_str().unwrap(),
    ]);
    let job = dir.path().join("ma.toml");
    std::fs::write(
        &job,
        r#"
name = "ma"
[source.lake]
[features]
buckets = ["1m"]
[strategy]
bucket = "1m"
signal = "if(mean(close, 5) > mean(close, 20), 1, if(mean(close, 5) < mean(close, 20), -1, 0))"
entry = 1
[strategy.sizing]
method = "fixed"
size = 1
[execution]
taker_fee = 0.001
slippage_bps = 0
"#,
    )
    .unwrap();
    common::run_ok(&[
        "backtest",
        job.to_str().unwrap(),
        "--lake",
        lake_arg,
        "--run-id",
        "ma",
    ]);

    // The same strategy computed directly: decide at bar k's close, fill at bar k+1's open.
    let closes: Vec<f64> = bars.iter().map(|b| b.1).collect();
    let mean = |k: usize, n: usize| closes[k + 1 - n..=k].iter().sum::<f64>() / n as f64;
    let (mut pos, mut expected) = (0i64, Vec::new());
    for k in 19..closes.len() - 1 {
        let (f, s) = (mean(k, 5), mean(k, 20));
        let want = if f > s {
            1
        } else if f < s {
            -1
        } else {
            pos
        };
        if want != pos {
            let side = if want > pos { "buy" } else { "sell" };
            expected.push(format!(
                "{},{side},{:?},{}",
                k + 1,
                bars[k + 1].0,
                (want - pos).abs()
            ));
            pos = want;
        }
    }
    assert!(
        expected.len() >= 5,
        "the wave should cross several times: {expected:?}"
    );
    let lake = Lake::open(lake_arg, &Default::default()).unwrap();
    let t0 = 1_709_251_200_000_000_000i64; // 2024-03-01
    let fills = common::rt().block_on(common::query_csv(
        &lake,
        &format!(
            "SELECT (ts - {t0}) / 60000000000 AS bar, side, price, CAST(size AS BIGINT) AS size, \
             liquidity FROM fills WHERE run_id = 'ma' ORDER BY ts"
        ),
    ));
    let got: Vec<String> = fills
        .lines()
        .skip(1)
        .map(|l| l.trim_end_matches(",taker").to_string())
        .collect();
    let mut want = expected.clone();
    want.sort();
    assert_eq!(got, want, "fills (bar, side, open, size)");
    assert!(fills.lines().skip(1).all(|l| l.ends_with(",taker")));
}

#[test]
fn a_replayed_strategy_prints_its_records_as_json_lines() {
    let (dir, _lake) = binance_lake();
    let job = common::repo_path("examples/replay-ofi-stdout.toml");
    let out = common::run_ok(&[
        "run",
        job.to_str().unwrap(),
        "--lake",
        dir.path().join("lake").to_str().unwrap(),
        "-q",
    ]);
    let lines: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let kinds: std::collections::BTreeSet<&str> =
        lines.iter().filter_map(|v| v["record"].as_str()).collect();
    for k in ["order", "fill", "equity"] {
        assert!(kinds.contains(k), "no {k} line: {kinds:?}");
    }
    // Prices and sizes read as decimals, not fixed-point integers.
    let fill = lines.iter().find(|v| v["record"] == "fill").unwrap();
    let price = fill["price"].as_f64().unwrap();
    assert!((50_000.0..70_000.0).contains(&price), "{fill}");
    assert_eq!(fill["size"].as_f64(), Some(0.01));
    assert!(lines.iter().all(|v| v["job"] == "replay-ofi"));
}

#[test]
fn a_backtest_over_an_empty_lake_says_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let out = common::run_ok(&[
        "backtest",
        example().to_str().unwrap(),
        "--lake",
        dir.path().join("lake").to_str().unwrap(),
        "--no-write",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("0 events") && stderr.contains("flowsense ingest"),
        "{stderr}"
    );
}
