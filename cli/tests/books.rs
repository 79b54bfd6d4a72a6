//! The graph's book equals the ingest's: on lakes of several days (synthetic L3 sessions,
//! LOBSTER files, two Binance days in a row), every feature bucket's best bid and ask are the
//! last `bbo` state the ingest wrote before the bucket's end, on 1 and 2 workers; and a
//! backtest over several synthetic days quotes the book the ingest saw.

use std::collections::BTreeMap;
use std::path::Path;

use arrow::array::{Array, AsArray};
use arrow::datatypes::{Float64Type, Int64Type};
use flowsense_core::job::JobSpec;
use flowsense_core::{FeatureRow, Lake};
use flowsense_sources::synth::SynthConfig;
use proptest::prelude::*;

use crate::common;
use crate::graph::run_collect;

/// Best bid and ask prices.
type TopOfBook = (Option<f64>, Option<f64>);

/// One row of a table, in the order the ingest wrote it.
#[derive(Clone, Debug)]
struct Row {
    ts: i64,
    local_ts: Option<i64>,
    /// (bid, ask) for `bbo` rows; `None` for trades.
    top: Option<TopOfBook>,
}

/// A table's rows per symbol and date, each partition's files in name order, rows as stored.
fn read_table(lake: &Path, table: &str) -> BTreeMap<(String, String), Vec<Row>> {
    let mut out: BTreeMap<(String, String), Vec<Row>> = BTreeMap::new();
    let Ok(dates) = std::fs::read_dir(lake.join(table)) else {
        return out;
    };
    for d in dates {
        let d = d.unwrap().path();
        let date = d
            .file_name()
            .unwrap()
            .to_string_lossy()
            .replace("date=", "");
        for s in std::fs::read_dir(&d).unwrap() {
            let s = s.unwrap().path();
            let symbol = s
                .file_name()
                .unwrap()
                .to_string_lossy()
                .replace("symbol=", "");
            let mut files: Vec<_> = std::fs::read_dir(&s)
                .unwrap()
                .map(|f| f.unwrap().path())
                .filter(|f| f.extension().is_some_and(|e| e == "parquet"))
                .collect();
            files.sort();
            let rows = out.entry((symbol, date.clone())).or_default();
            for f in files {
                let file = std::fs::File::open(&f).unwrap();
                let reader =
                    parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
                        .unwrap()
                        .build()
                        .unwrap();
                for batch in reader {
                    let b = batch.unwrap();
                    let ts = b.column_by_name("ts").unwrap().as_primitive::<Int64Type>();
                    let local = b
                        .column_by_name("local_ts")
                        .map(|c| c.as_primitive::<Int64Type>().clone());
                    let px = |name: &str| {
                        b.column_by_name(name)
                            .map(|c| c.as_primitive::<Float64Type>().clone())
                    };
                    let (bid, ask) = (px("bid_price"), px("ask_price"));
                    for i in 0..b.num_rows() {
                        let opt = |a: &Option<arrow::array::Float64Array>| {
                            a.as_ref().and_then(|a| (!a.is_null(i)).then(|| a.value(i)))
                        };
                        rows.push(Row {
                            ts: ts.value(i),
                            local_ts: local
                                .as_ref()
                                .and_then(|a| (!a.is_null(i)).then(|| a.value(i))),
                            top: (table == "bbo").then(|| (opt(&bid), opt(&ask))),
                        });
                    }
                }
            }
        }
    }
    out
}

/// Per symbol, the ingest's tops of book in the order the lake replay feeds the graph (dates in
/// order; within a date book rows and trades merged by feed time, book first on ties), each with
/// the time the graph gives it (exchange time, never going back).
fn replayed_tops(lake: &Path) -> BTreeMap<String, Vec<(i64, TopOfBook)>> {
    let bbo = read_table(lake, "bbo");
    let trades = read_table(lake, "trades");
    let mut keys: Vec<(String, String)> = bbo.keys().chain(trades.keys()).cloned().collect();
    keys.sort_by(|a, b| (&a.1, &a.0).cmp(&(&b.1, &b.0)));
    keys.dedup();
    let mut out: BTreeMap<String, Vec<(i64, TopOfBook)>> = BTreeMap::new();
    let mut clock: BTreeMap<String, i64> = BTreeMap::new();
    for key in keys {
        let empty = Vec::new();
        let (b, t) = (
            bbo.get(&key).unwrap_or(&empty),
            trades.get(&key).unwrap_or(&empty),
        );
        let order = |r: &Row| (r.local_ts.unwrap_or(r.ts), r.ts);
        let (mut i, mut j) = (0, 0);
        let last = clock.entry(key.0.clone()).or_insert(i64::MIN);
        let tops = out.entry(key.0.clone()).or_default();
        while i < b.len() || j < t.len() {
            let take_book = j >= t.len() || (i < b.len() && order(&b[i]) <= order(&t[j]));
            let r = if take_book { &b[i] } else { &t[j] };
            *last = (*last).max(r.ts);
            if take_book {
                tops.push((*last, r.top.unwrap()));
                i += 1;
            } else {
                j += 1;
            }
        }
    }
    out
}

/// Asserts every bucket row's top of book is the last one the ingest wrote before its end,
/// and that none is marked crossed. Returns the rows checked.
#[track_caller]
fn assert_tops_match(lake_dir: &Path, rows: &[FeatureRow], what: &str) -> usize {
    let tops = replayed_tops(lake_dir);
    let mut checked = 0;
    for r in rows {
        let Some(seq) = tops.get(r.symbol.as_str()) else {
            panic!("{what}: no bbo rows for {}", r.symbol);
        };
        let at = seq.partition_point(|(t, _)| *t < r.ts);
        let want = at.checked_sub(1).map_or((None, None), |k| seq[k].1);
        assert_eq!(
            (r.bid_price, r.ask_price),
            want,
            "{what}: {} {} bucket ending {}",
            r.symbol,
            r.bucket,
            r.ts
        );
        assert!(
            !r.crossed && r.crossed_events == 0,
            "{what}: {} at {} marked crossed",
            r.symbol,
            r.ts
        );
        checked += 1;
    }
    checked
}

fn lake_job(name: &str) -> JobSpec {
    JobSpec::from_toml(&format!(
        "name = \"{name}\"\n[source.lake]\n[features]\nbuckets = [\"100ms\", \"1s\", \"10s\"]\n"
    ))
    .unwrap()
}

fn open(dir: &Path) -> Lake {
    Lake::open(dir.to_str().unwrap(), &Default::default()).unwrap()
}

fn synth_lake(dir: &Path, cfg: &SynthConfig) -> Lake {
    let lake = open(dir);
    common::rt()
        .block_on(flowsense_dataflows::synth::synth(&lake, cfg, None, false))
        .unwrap();
    lake
}

#[test]
fn synthetic_days_each_start_from_their_own_book() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = SynthConfig {
        symbols: 3,
        days: 3,
        seed: 42,
        events_per_day: 20_000,
        ..Default::default()
    };
    let lake = synth_lake(dir.path(), &cfg);
    for workers in [1, 2] {
        let rows = run_collect(&lake_job("days"), &lake, workers);
        let days: std::collections::BTreeSet<i64> =
            rows.iter().map(|r| r.ts / 86_400_000_000_000).collect();
        assert_eq!(days.len(), 3);
        let n = assert_tops_match(dir.path(), &rows, &format!("synthetic, {workers} workers"));
        assert!(n > 10_000, "{n} rows");
    }
}

#[test]
fn lobster_days_each_start_from_their_orderbook_file() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = SynthConfig {
        symbols: 2,
        days: 2,
        seed: 5,
        events_per_day: 20_000,
        ..Default::default()
    };
    let files = dir.path().join("lobster");
    let scratch = open(&dir.path().join("scratch"));
    common::rt()
        .block_on(flowsense_dataflows::synth::synth(
            &scratch,
            &cfg,
            Some(&files),
            false,
        ))
        .unwrap();
    let lake_dir = dir.path().join("lake");
    let lake = open(&lake_dir);
    let report = common::rt()
        .block_on(flowsense_dataflows::ingest::ingest_paths(
            &lake,
            &[files],
            Some(flowsense_sources::detect::Format::Lobster),
            false,
        ))
        .unwrap();
    assert_eq!(report.dead_total(), 0);
    // The sessions open with a clear and the orderbook file's first row as seeds.
    let seeds = common::rt().block_on(common::query_u64(
        &lake,
        "SELECT count(*) FROM book_events WHERE action = 'seed'",
    ));
    let clears = common::rt().block_on(common::query_u64(
        &lake,
        "SELECT count(*) FROM book_events WHERE action = 'clear'",
    ));
    assert_eq!(clears, 4);
    assert!(seeds >= 4 * 10, "{seeds} seeds");
    for workers in [1, 2] {
        let rows = run_collect(&lake_job("lobster"), &lake, workers);
        let n = assert_tops_match(&lake_dir, &rows, &format!("LOBSTER, {workers} workers"));
        assert!(n > 1_000, "{n} rows");
    }
}

#[test]
fn two_binance_days_continue_one_book() {
    let dir = tempfile::tempdir().unwrap();
    let spot = dir.path().join("capture/spot");
    std::fs::create_dir_all(&spot).unwrap();
    for f in [
        "binance/spot/btcusdt_20240808.gz",
        "binance-0809/spot/btcusdt_20240809.gz",
    ] {
        let src = common::repo_path(&format!("data/{f}"));
        std::fs::copy(&src, spot.join(src.file_name().unwrap())).unwrap();
    }
    let lake_dir = dir.path().join("lake");
    let lake = open(&lake_dir);
    common::rt()
        .block_on(flowsense_dataflows::ingest::ingest_paths(
            &lake,
            &[dir.path().join("capture")],
            None,
            false,
        ))
        .unwrap();
    for workers in [1, 2] {
        let rows = run_collect(&lake_job("binance"), &lake, workers);
        let dates: std::collections::BTreeSet<i64> =
            rows.iter().map(|r| r.ts / 86_400_000_000_000).collect();
        assert_eq!(dates.len(), 2, "both days");
        let n = assert_tops_match(&lake_dir, &rows, &format!("Binance, {workers} workers"));
        assert!(n > 1_000, "{n} rows");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 6, ..ProptestConfig::default() })]
    /// Any seed and number of days: the graph's book is the ingest's at every bucket's end.
    #[test]
    fn the_graph_book_is_the_ingest_book_for_any_seed_and_days(seed in any::<u64>(), days in 1usize..5, symbols in 1usize..3) {
        let dir = tempfile::tempdir().unwrap();
        let cfg = SynthConfig { symbols, days, seed, events_per_day: 3_000, ..Default::default() };
        let lake = synth_lake(dir.path(), &cfg);
        let rows = run_collect(&lake_job("prop"), &lake, 1);
        let n = assert_tops_match(dir.path(), &rows, &format!("seed {seed}, {days} days"));
        prop_assert!(n > 0);
    }
}

#[test]
fn a_backtest_over_several_days_quotes_the_ingests_book() {
    use flowsense_core::order::OrderKind;
    use flowsense_core::results::TradeRecord;
    use flowsense_dataflows::backtest::{TradingOptions, run_trading};
    let dir = tempfile::tempdir().unwrap();
    let cfg = SynthConfig {
        symbols: 2,
        days: 3,
        seed: 42,
        events_per_day: 20_000,
        ..Default::default()
    };
    let lake = synth_lake(dir.path(), &cfg);
    let spec = JobSpec::from_toml(
        r#"
        name = "days-bt"
        [source.lake]
        [features]
        buckets = ["1s"]
        [strategy]
        bucket = "1s"
        signal = "ofi_l1 / (bid_size + ask_size)"
        entry = 0.2
        max_hold = "30s"
        order = "limit_join"
        cancel_after = "5s"
        [strategy.sizing]
        method = "fixed"
        size = 1
        [execution]
        slippage_bps = 0.0
        "#,
    )
    .unwrap();
    let opts = TradingOptions {
        run: Default::default(),
        run_id: "days".into(),
        write: false,
        collect: true,
        paced: false,
        fold: None,
        progress: false,
    };
    let report = run_trading(&spec, &lake, &opts).unwrap();
    let tops = replayed_tops(dir.path());
    let at = |sym: &str, ts: i64| {
        let seq = &tops[sym];
        let k = seq.partition_point(|(t, _)| *t < ts);
        seq[k.checked_sub(1).expect("a book before the order")].1
    };
    // Each symbol-day's lowest bid and highest ask.
    let mut ranges: BTreeMap<(String, String), (f64, f64)> = BTreeMap::new();
    for (key, rows) in read_table(dir.path(), "bbo") {
        let bids = rows.iter().filter_map(|r| r.top.and_then(|t| t.0));
        let asks = rows.iter().filter_map(|r| r.top.and_then(|t| t.1));
        ranges.insert(
            key,
            (bids.fold(f64::MAX, f64::min), asks.fold(f64::MIN, f64::max)),
        );
    }
    let (mut joins, mut fills) = (0, 0);
    for r in &report.records {
        match r {
            // A join order sits at its side's touch of the ingest's book, inside the spread.
            TradeRecord::Order(o) if o.order.kind == OrderKind::Limit && o.reason == "entry" => {
                let (bid, ask) = at(o.order.symbol.as_str(), o.order.sent.0);
                let px = o.order.price.unwrap().as_f64();
                let (bid, ask) = (bid.unwrap(), ask.unwrap());
                assert!(bid < ask, "crossed ingest book at {}", o.order.sent.0);
                match o.order.side {
                    flowsense_core::Side::Buy => assert_eq!(px, bid, "{o:?}"),
                    flowsense_core::Side::Sell => assert_eq!(px, ask, "{o:?}"),
                }
                joins += 1;
            }
            // A fill is at a price the ingest's book of that symbol and day quoted.
            TradeRecord::Fill(f) => {
                let date = f.ts.date_string();
                let (lo, hi) = ranges[&(f.symbol.to_string(), date)];
                let px = f.price.as_f64();
                assert!(
                    lo <= px && px <= hi,
                    "{f:?} outside the day's book {lo}..{hi}"
                );
                fills += 1;
            }
            _ => {}
        }
    }
    assert!(
        joins > 20 && fills > 5,
        "{joins} join orders, {fills} fills"
    );
}
