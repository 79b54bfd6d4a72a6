//! Ingest into a local lake: idempotence, LOBSTER round trips, SQL over the result.

use flowsense_dataflows::ingest::ingest_paths;
use flowsense_sinks::Lake;
use flowsense_sources::detect::Format;
use flowsense_sources::synth::SynthConfig;

use crate::common::*;

const COUNTS: &str = "SELECT (SELECT count(*) FROM trades) AS trades, (SELECT count(*) FROM bbo) AS bbo, \
    (SELECT count(*) FROM depth_updates) AS depth, (SELECT count(*) FROM quotes) AS quotes, \
    (SELECT count(*) FROM book_events) AS book, (SELECT count(*) FROM dead_letters) AS dead";

#[test]
fn ingesting_twice_adds_no_rows() {
    rt().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let lake = Lake::open(dir.path().to_str().unwrap(), &Default::default()).unwrap();
        let first = ingest_paths(&lake, &[binance_data()], None, false)
            .await
            .unwrap();
        let counts = query_csv(&lake, COUNTS).await;
        let all = query_csv(&lake, "SELECT * FROM trades").await;
        let second = ingest_paths(&lake, &[binance_data()], None, false)
            .await
            .unwrap();
        assert_eq!(first.rows, second.rows);
        assert_eq!(query_csv(&lake, COUNTS).await, counts);
        assert_eq!(query_csv(&lake, "SELECT * FROM trades").await, all);
        assert!(first.rows.values().sum::<u64>() > 100_000, "{counts}");

        // A shorter earlier run's files are replaced, not kept beside the new ones.
        let synth = |events| SynthConfig {
            symbols: 1,
            days: 1,
            events_per_day: events,
            ..Default::default()
        };
        let small =
            Lake::open(dir.path().join("s").to_str().unwrap(), &Default::default()).unwrap();
        flowsense_dataflows::synth::synth(&small, &synth(20_000), None, false)
            .await
            .unwrap();
        let once = query_csv(&small, COUNTS).await;
        flowsense_dataflows::synth::synth(&small, &synth(20_000), None, false)
            .await
            .unwrap();
        assert_eq!(query_csv(&small, COUNTS).await, once);
    });
}

#[test]
fn a_source_read_and_written_on_one_thread_or_two_leaves_the_same_files() {
    use flowsense_dataflows::Ingestor;
    use flowsense_sources::detect::open_inputs_with;
    rt().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let mut lakes = Vec::new();
        for inline in [false, true] {
            let root = dir.path().join(format!("inline-{inline}"));
            let lake = Lake::open(root.to_str().unwrap(), &Default::default()).unwrap();
            // Small files, so that files are cut (and put) while the source is read.
            let ingest = |max_rows| async move {
                let mut rows = 0;
                let mut removed = 0;
                let inputs = open_inputs_with(&[binance_data()], None, &Default::default());
                for (_, _, reader) in inputs.unwrap() {
                    let mut ing = Ingestor::new(lake.clone(), false).with_max_rows(max_rows);
                    let ing = if inline {
                        ing.consume_inline(reader).await.unwrap()
                    } else {
                        ing.consume(reader).await.unwrap();
                        ing
                    };
                    let report = ing.finish().await.unwrap();
                    rows += report.rows.values().sum::<u64>();
                    removed += report.files_removed;
                }
                (rows, removed)
            };
            let (rows, removed) = ingest.clone()(20_000).await;
            assert!(rows > 100_000 && removed == 0, "{rows} {removed}");
            let small_files = files(&root).len();
            // Again with the default files: the small ones past the new ones' count go.
            let (again, removed) = ingest(1 << 20).await;
            assert_eq!(again, rows);
            assert_eq!(
                files(&root).len() + removed as usize,
                small_files,
                "inline {inline}"
            );
            assert!(removed > 0);
            lakes.push(files(&root));
        }
        assert_eq!(
            lakes[0].keys().collect::<Vec<_>>(),
            lakes[1].keys().collect::<Vec<_>>()
        );
        for (path, bytes) in &lakes[0] {
            assert!(&lakes[1][path] == bytes, "{path} differs");
        }
    });
}

#[test]
fn binance_tables_have_the_documented_columns_and_meaning() {
    rt().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let lake = Lake::open(dir.path().to_str().unwrap(), &Default::default()).unwrap();
        ingest_paths(&lake, &[binance_data().join("usdm")], Some(Format::Binance), false).await.unwrap();
        // Aggressor side from `m`; exchange time in ns; local receive time kept.
        let csv = query_csv(&lake, "SELECT side, count(*) FROM trades WHERE symbol = 'BTCUSDT-PERP' AND ts > 1723161000000000000 AND local_ts IS NOT NULL GROUP BY side").await;
        assert!(csv.contains("buy,") && csv.contains("sell,"), "{csv}");
        // Every reconstructed top of book after the snapshot is uncrossed and outside any gap.
        let bad = query_u64(&lake, "SELECT count(*) FROM bbo WHERE bid_price >= ask_price OR gap").await;
        assert_eq!(bad, 0);
        // The book equals the venue's bookTicker wherever both exist at the same update id.
        let sql = "SELECT count(*) AS n, sum(CASE WHEN b.bid_price = q.bid_price AND b.ask_price = q.ask_price \
            AND b.bid_size = q.bid_size AND b.ask_size = q.ask_size THEN 1 ELSE 0 END) AS same \
            FROM bbo b JOIN quotes q ON b.update_id = q.update_id AND b.symbol = q.symbol";
        let csv = query_csv(&lake, sql).await;
        let row: Vec<u64> = csv.lines().nth(1).unwrap().split(',').map(|x| x.parse().unwrap()).collect();
        eprintln!("bbo vs bookTicker at equal update ids: {} of {}", row[1], row[0]);
        assert!(row[0] > 100);
        assert_eq!(row[0], row[1]);
    });
}

#[test]
fn lobster_files_from_the_generator_ingest_to_the_same_trades() {
    rt().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let cfg = SynthConfig {
            symbols: 2,
            days: 1,
            events_per_day: 30_000,
            seed: 11,
            ..Default::default()
        };
        let direct = Lake::open(
            dir.path().join("direct").to_str().unwrap(),
            &Default::default(),
        )
        .unwrap();
        let lobster_dir = dir.path().join("lobster");
        flowsense_dataflows::synth::synth(&direct, &cfg, Some(&lobster_dir), false)
            .await
            .unwrap();
        let via = Lake::open(
            dir.path().join("via").to_str().unwrap(),
            &Default::default(),
        )
        .unwrap();
        let report = ingest_paths(&via, &[lobster_dir], Some(Format::Lobster), false)
            .await
            .unwrap();
        assert_eq!(report.dead_total(), 0);
        let trades = "SELECT symbol, ts, price, size, side FROM trades";
        let a = query_csv(&direct, trades).await;
        assert!(a.lines().count() > 1000);
        assert_same_text(&a, &query_csv(&via, trades).await, "trades");
        // LOBSTER files omit the orders resting at the open: their first orderbook row seeds the
        // book at the first message instead. After each session's first message, all matches.
        let opens = query_csv(
            &via,
            "SELECT symbol, ts FROM book_events WHERE action = 'clear'",
        )
        .await;
        let after: Vec<String> = opens
            .lines()
            .skip(1)
            .map(|l| {
                let (sym, ts) = l.split_once(',').unwrap();
                format!("(symbol = '{sym}' AND ts > {ts})")
            })
            .collect();
        assert_eq!(after.len(), 2);
        let tops = format!(
            "SELECT symbol, ts, bid_price, bid_size, ask_price, ask_size FROM bbo WHERE {}",
            after.join(" OR ")
        );
        let tops = tops.as_str();
        assert_same_text(
            &query_csv(&direct, tops).await,
            &query_csv(&via, tops).await,
            "bbo",
        );
    });
}

#[test]
fn sql_is_read_only_and_sees_partition_columns() {
    rt().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let lake = Lake::open(dir.path().to_str().unwrap(), &Default::default()).unwrap();
        let cfg = SynthConfig {
            symbols: 2,
            days: 2,
            events_per_day: 5_000,
            ..Default::default()
        };
        flowsense_dataflows::synth::synth(&lake, &cfg, None, false)
            .await
            .unwrap();
        let csv = query_csv(
            &lake,
            "SELECT date, symbol, count(*) > 0 FROM trades GROUP BY date, symbol",
        )
        .await;
        assert_eq!(csv.lines().count(), 5, "{csv}");
        let session = flowsense_sql::LakeSession::open(&lake).await.unwrap();
        for bad in [
            "DROP TABLE trades",
            "COPY trades TO '/tmp/x.parquet'",
            "CREATE EXTERNAL TABLE p STORED AS CSV LOCATION '/etc/passwd'",
            "SELECT * FROM '/etc/passwd'",
        ] {
            let err = session.query(bad).await.expect_err(bad).to_string();
            assert!(!err.is_empty());
        }
        // A misspelt table is named, with the tables there are.
        let err = session
            .query("SELECT * FROM trade")
            .await
            .expect_err("no such table")
            .to_string();
        assert!(
            err.starts_with(
                "no table \"trade\" in the lake; its tables: book_events, depth_updates, trades"
            ),
            "{err}"
        );
        let tables = to_csv(&session.query("SHOW TABLES").await.unwrap());
        for t in [
            "trades",
            "bbo",
            "dead_letters",
            "book_events",
            "depth_updates",
            "quotes",
            "bars",
        ] {
            assert!(tables.contains(t), "{tables}");
        }
    });
}

#[test]
fn flowsense_sql_operators_give_what_plain_datafusion_gives() {
    rt().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let lake = Lake::open(dir.path().to_str().unwrap(), &Default::default()).unwrap();
        let cfg = SynthConfig {
            symbols: 3,
            days: 2,
            events_per_day: 20_000,
            ..Default::default()
        };
        flowsense_dataflows::synth::synth(&lake, &cfg, None, false)
            .await
            .unwrap();
        let on = flowsense_sql::LakeSession::open(&lake).await.unwrap();
        let off = flowsense_sql::LakeSession::open_with(
            &lake,
            &[
                (
                    flowsense_sql::PARTITION_KEY_AGGREGATE.to_string(),
                    "false".to_string(),
                ),
                (flowsense_sql::RUNNING_SUM.to_string(), "false".to_string()),
                (
                    flowsense_sql::SHORT_KEY_AGGREGATE.to_string(),
                    "false".to_string(),
                ),
            ],
        )
        .await
        .unwrap();
        // The as-of join of the SQL benchmark (scripts/bench_sql.py), made deterministic: BBO
        // rows that share a time are merged into one (which of them is "last" is arbitrary, in
        // DataFusion and in DuckDB alike, and each side of the self-join may pick another).
        let asof = "WITH u AS (SELECT symbol, ts, 0 AS k, price, side, CAST(NULL AS DOUBLE) AS bid, \
            CAST(NULL AS DOUBLE) AS ask FROM trades UNION ALL SELECT symbol, ts, 1 AS k, \
            CAST(NULL AS DOUBLE), CAST(NULL AS VARCHAR), max(bid_price), max(ask_price) FROM bbo \
            GROUP BY symbol, ts), \
            f AS (SELECT symbol, k, price, side, bid, ask, sum(k) OVER (PARTITION BY symbol \
            ORDER BY ts, k ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS grp FROM u) \
            SELECT t.symbol, count(*) AS n, round(avg(CASE WHEN t.side = 'buy' THEN t.price - \
            (b.bid + b.ask) / 2 ELSE (b.bid + b.ask) / 2 - t.price END), 9) AS e FROM f t \
            JOIN f b ON t.symbol = b.symbol AND t.grp = b.grp AND b.k = 1 WHERE t.k = 0 \
            GROUP BY t.symbol";
        // (query, the operator of ours that should run it, if any)
        const PARTITION: Option<&str> = Some("PartitionKeyAggregateExec");
        const SHORT: Option<&str> = Some("ShortKeyAggregateExec");
        let queries = [
            (asof, Some("RunningSumExec")),
            (
                "SELECT symbol, date, count(*) AS n, round(avg(ask_price - bid_price), 9) AS s, \
              round(sum(bid_size), 6) AS b, min(bid_price) AS lo, max(ask_price) AS hi \
              FROM bbo GROUP BY symbol, date",
                PARTITION,
            ),
            (
                "SELECT symbol, count(*) FILTER (WHERE size > 100) AS big, \
              round(sum(price * size) / sum(size), 9) AS vwap FROM trades WHERE price > 0 \
              GROUP BY symbol",
                PARTITION,
            ),
            (
                "SELECT d, count(*) AS n FROM (SELECT date AS d, side FROM book_events) \
              WHERE side = 'buy' GROUP BY d",
                PARTITION,
            ),
            (
                "SELECT symbol, side, count(*) AS n FROM trades GROUP BY symbol, side",
                SHORT,
            ),
            (
                // DataFusion groups by `symbol, side` first, then counts: the short keys' operator
                // takes that inner grouping.
                "SELECT count(DISTINCT side) AS n, symbol FROM trades GROUP BY symbol",
                SHORT,
            ),
            (
                "SELECT symbol, count(*) AS n FROM bars GROUP BY symbol",
                None,
            ),
            (
                "SELECT date, max(price) AS hi FROM trades WHERE symbol = 'SYN001' GROUP BY date",
                PARTITION,
            ),
            (
                "SELECT action, side, count(*) AS n, round(sum(size), 6) AS qty, \
              min(price) AS lo FROM book_events GROUP BY action, side",
                SHORT,
            ),
            (
                "SELECT side, count(*) FILTER (WHERE size > 100) AS big FROM trades \
              WHERE price > 0 GROUP BY side",
                SHORT,
            ),
        ];
        let ours = [
            "RunningSumExec",
            "PartitionKeyAggregateExec",
            "ShortKeyAggregateExec",
        ];
        for (sql, operator) in queries {
            let plan = to_csv(&on.query(&format!("EXPLAIN {sql}")).await.unwrap());
            for op in ours {
                assert_eq!(plan.contains(op), operator == Some(op), "{sql}\n{plan}");
            }
            let plain = to_csv(&off.query(&format!("EXPLAIN {sql}")).await.unwrap());
            assert!(ours.iter().all(|op| !plain.contains(op)), "{plain}");
            let a = to_csv(&on.query(sql).await.unwrap());
            let b = to_csv(&off.query(sql).await.unwrap());
            assert!(a.lines().count() > 1 || sql.contains("bars"), "{sql}: {a}");
            assert_same_text(&a, &b, sql);
        }
    });
}

/// Every file under `root`, by path relative to it, with its bytes.
fn files(root: &std::path::Path) -> std::collections::BTreeMap<String, Vec<u8>> {
    let mut out = std::collections::BTreeMap::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                dirs.push(p);
            } else {
                let rel = p.strip_prefix(root).unwrap().display().to_string();
                out.insert(rel, std::fs::read(&p).unwrap());
            }
        }
    }
    out
}

#[test]
fn sources_ingested_or_generated_at_once_leave_the_same_files_as_one_at_a_time() {
    rt().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let mut lakes = Vec::new();
        let mut reports = Vec::new();
        for parallel in [1, 3] {
            let root = dir.path().join(format!("j{parallel}"));
            let lake = Lake::open(root.to_str().unwrap(), &Default::default()).unwrap();
            let report = flowsense_dataflows::ingest::ingest_sources(
                &lake,
                &[binance_data()],
                None,
                &Default::default(),
                false,
                parallel,
            )
            .await
            .unwrap();
            reports.push(report);
            lakes.push(files(&root));
        }
        assert_eq!(reports[0].sources, 3, "the bundled data is three sources");
        let gz: u64 = [
            "cm/btcusd_perp_20240808.gz",
            "spot/btcusdt_20240808.gz",
            "usdm/btcusdt_20240808.gz",
        ]
        .iter()
        .map(|f| std::fs::metadata(binance_data().join(f)).unwrap().len())
        .sum();
        assert_eq!(
            reports[0].input_bytes, gz,
            "every byte of the inputs read once"
        );
        for r in &reports[1..] {
            assert_eq!(r.rows, reports[0].rows);
            assert_eq!(r.events, reports[0].events);
            assert_eq!((r.files, r.bytes), (reports[0].files, reports[0].bytes));
            assert_eq!(r.input_bytes, reports[0].input_bytes);
        }
        assert!(lakes[0].len() >= 12, "{:?}", lakes[0].keys());
        assert_eq!(
            lakes[0].keys().collect::<Vec<_>>(),
            lakes[1].keys().collect::<Vec<_>>()
        );
        for (path, bytes) in &lakes[0] {
            assert!(&lakes[1][path] == bytes, "{path} differs");
        }

        // The synthetic market too, one symbol per task.
        let cfg = SynthConfig {
            symbols: 3,
            days: 2,
            events_per_day: 5_000,
            ..Default::default()
        };
        let mut synthetic = Vec::new();
        for parallel in [1, 3] {
            let root = dir.path().join(format!("synth-j{parallel}"));
            let lake = Lake::open(root.to_str().unwrap(), &Default::default()).unwrap();
            let report =
                flowsense_dataflows::synth::synth_parallel(&lake, &cfg, None, false, parallel)
                    .await
                    .unwrap();
            assert_eq!(report.sources, 6, "three symbols, two days");
            synthetic.push(files(&root));
        }
        assert_eq!(synthetic[0], synthetic[1]);
    });
}

/// Pages the lake writer makes only now and then, read by DuckDB and Polars: a price dictionary
/// that outgrows 1 MiB (its file goes on in `PLAIN` pages), nullable columns whose first page is
/// all nulls (then a `PLAIN` page before any dictionary), ids near `u64::MAX`. Both readers must
/// agree with the values written. Needs `FLOWSENSE_TEST_PYTHON` (set by `scripts/test`): a
/// Python with DuckDB and Polars.
#[test]
fn duckdb_and_polars_read_the_writers_rarer_pages() {
    use flowsense_core::{BboUpdate, MarketEvent, Price, Side, Size, Symbol, Trade, UnixNanos};
    use flowsense_sinks::LakeWriter;
    let python = std::env::var("FLOWSENSE_TEST_PYTHON").expect(
        "FLOWSENSE_TEST_PYTHON is not set: run the tests through scripts/test, which installs DuckDB and Polars",
    );
    let dir = tempfile::tempdir().unwrap();
    let lake = Lake::open(dir.path().to_str().unwrap(), &Default::default()).unwrap();
    let sym = Symbol::new("EDGE").unwrap();
    let t0 = 1_723_161_600_000_000_000_i64;
    let (mut price_sum, mut bid_sum, mut buys, mut with_local) = (0.0, 0.0, 0u64, 0u64);
    rt().block_on(async {
        let mut w = LakeWriter::new(lake);
        w.begin_source("edge");
        for i in 0..200_000_i64 {
            // Every price differs: 1.6 MB of distinct doubles.
            let price = Price::from_raw(100_000_000_000 + i * 10_000_000);
            let local = (i >= 70_000).then_some(UnixNanos(t0 + i * 1000 + 7));
            let side = if i % 3 == 0 { Side::Buy } else { Side::Sell };
            price_sum += price.as_f64();
            buys += u64::from(side == Side::Buy);
            with_local += u64::from(local.is_some());
            w.push(&MarketEvent::Trade(
                sym.clone(),
                Trade {
                    ts: UnixNanos(t0 + i * 1000),
                    local_ts: local,
                    trade_id: Some(u64::MAX - 200_000 + i as u64),
                    price,
                    size: Size::from_units(i % 7 + 1),
                    aggressor: side,
                },
            ));
            let bid = (i >= 70_000).then(|| {
                (
                    Price::from_raw(99_000_000_000 + (i % 50) * 1_000_000),
                    Size::from_units(1),
                )
            });
            bid_sum += bid.map_or(0.0, |(p, _)| p.as_f64());
            w.push(&MarketEvent::Bbo(
                sym.clone(),
                Box::new(BboUpdate {
                    ts: Some(UnixNanos(t0 + i * 1000)),
                    local_ts: None,
                    update_id: Some(i as u64),
                    bid,
                    ask: Some((price, Size::from_units(2))),
                    gap: false,
                }),
            ));
        }
        w.end_source().await.unwrap();
    });
    // The pages are the rare ones this test is for.
    for (table, column) in [("trades", "price"), ("bbo", "bid_price")] {
        let file = dir.path().join(format!(
            "{table}/date=2024-08-09/symbol=EDGE/edge-00000.parquet"
        ));
        let reader =
            parquet::file::reader::SerializedFileReader::new(std::fs::File::open(file).unwrap())
                .unwrap();
        use parquet::file::reader::FileReader;
        let group = reader.metadata().row_group(0);
        let i = (0..group.num_columns())
            .find(|&i| group.column(i).column_path().string() == column)
            .unwrap();
        let pages = reader
            .get_row_group(0)
            .unwrap()
            .get_column_page_reader(i)
            .unwrap();
        let data: Vec<_> = pages
            .map(|p| p.unwrap())
            .filter(|p| p.page_type() == parquet::basic::PageType::DATA_PAGE)
            .map(|p| p.encoding())
            .collect();
        use parquet::basic::Encoding::{PLAIN, RLE_DICTIONARY};
        let (first, then) = match table {
            // Dictionary pages until it passes 1 MiB, then PLAIN.
            "trades" => (RLE_DICTIONARY, PLAIN),
            // Pages of nulls before the dictionary has a value, then the dictionary.
            _ => (PLAIN, RLE_DICTIONARY),
        };
        let switch = data.iter().position(|e| *e != first).unwrap_or(data.len());
        assert!(
            switch > 0 && switch < data.len() && data[switch..].iter().all(|e| *e == then),
            "{table}.{column}: {data:?}"
        );
    }
    let script = r#"
import duckdb, polars as pl, sys, json
lake = sys.argv[1]
t, b = f"{lake}/trades/*/*/*.parquet", f"{lake}/bbo/*/*/*.parquet"
d = duckdb.connect().execute(f"""SELECT
    (SELECT [count(*), sum(price), count(local_ts), sum((side = 'buy')::INT), min(trade_id)::DOUBLE, max(trade_id)::DOUBLE, count(DISTINCT price)] FROM read_parquet('{t}')),
    (SELECT [count(*), count(bid_price), coalesce(sum(bid_price), 0), count(local_ts)] FROM read_parquet('{b}'))""").fetchall()[0]
c = pl.col
pt = pl.scan_parquet(t).select(pl.len(), c("price").sum(), c("local_ts").count(), (c("side") == "buy").sum(),
    c("trade_id").min().cast(pl.Float64).alias("lo"), c("trade_id").max().cast(pl.Float64).alias("hi"),
    c("price").n_unique().alias("distinct")).collect().row(0)
pb = pl.scan_parquet(b).select(pl.len(), c("bid_price").count(), c("bid_price").sum().alias("bids"),
    c("local_ts").count()).collect().row(0)
print(json.dumps({"duckdb": [list(map(float, d[0])), list(map(float, d[1]))], "polars": [list(map(float, pt)), list(map(float, pb))]}))
"#;
    let out = std::process::Command::new(&python)
        .args(["-c", script, dir.path().to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let want_trades = [
        200_000.0,
        price_sum,
        with_local as f64,
        buys as f64,
        (u64::MAX - 200_000) as f64,
        (u64::MAX - 1) as f64,
        200_000.0,
    ];
    let want_bbo = [200_000.0, 130_000.0, bid_sum, 0.0];
    for reader in ["duckdb", "polars"] {
        for (table, want) in [(0, &want_trades[..]), (1, &want_bbo[..])] {
            let row: Vec<f64> = got[reader][table]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap())
                .collect();
            assert_eq!(row.len(), want.len(), "{reader} {table}");
            for (g, w) in row.iter().zip(want) {
                assert!(
                    (g - w).abs() <= 1e-9 * w.abs().max(1.0),
                    "{reader} table {table}: {row:?} against {want:?}"
                );
            }
        }
    }
}
