//! The same ingest into a real S3-compatible server and into `file://` gives the same answers.
//!
//! Needs `FLOWSENSE_TEST_S3_ENDPOINT`, `AWS_ACCESS_KEY_ID` and `AWS_SECRET_ACCESS_KEY` (and a
//! bucket named by `FLOWSENSE_TEST_S3_BUCKET`, default `flowsense-test`, that exists):
//! `scripts/test` starts a server and sets them.

use flowsense_dataflows::ingest::ingest_paths;
use flowsense_sinks::{Lake, S3Options};

use crate::common::*;

fn s3() -> (S3Options, String) {
    let endpoint = std::env::var("FLOWSENSE_TEST_S3_ENDPOINT").expect(
        "FLOWSENSE_TEST_S3_ENDPOINT is not set: run the tests through scripts/test, which starts an S3 server",
    );
    let bucket =
        std::env::var("FLOWSENSE_TEST_S3_BUCKET").unwrap_or_else(|_| "flowsense-test".into());
    (
        S3Options {
            endpoint: Some(endpoint),
            ..Default::default()
        },
        bucket,
    )
}

#[test]
fn s3_and_local_lakes_answer_alike() {
    let (opts, bucket) = s3();
    rt().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let local = Lake::open(dir.path().to_str().unwrap(), &Default::default()).unwrap();
        let prefix = format!("run-{}", std::process::id());
        let remote = Lake::open(&format!("s3://{bucket}/{prefix}"), &opts).unwrap();
        let a = ingest_paths(&local, &[binance_data()], None, false).await.unwrap();
        let b = ingest_paths(&remote, &[binance_data()], None, false).await.unwrap();
        assert_eq!(a.rows, b.rows);
        // Idempotent on S3 too.
        let c = ingest_paths(&remote, &[binance_data()], None, false).await.unwrap();
        assert_eq!(a.rows, c.rows);
        // Sums of doubles are rounded: DataFusion 55's scan partitions steal files (and parts of
        // files) from each other as they free up, so which rows each partial sum holds, and so
        // the last bit of the total, can differ from run to run on the same lake (seen here).
        for sql in [
            "SELECT symbol, date, count(*), round(sum(price * size), 6), min(ts), max(ts) FROM trades GROUP BY symbol, date",
            "SELECT symbol, count(*), sum(CAST(gap AS INT)), max(bid_price), min(ask_price) FROM bbo GROUP BY symbol",
            "SELECT side, count(*), round(sum(size), 6) FROM depth_updates GROUP BY side",
            "SELECT count(*) FROM quotes",
            "SELECT count(*) FROM dead_letters",
        ] {
            let l = query_csv(&local, sql).await;
            let r = query_csv(&remote, sql).await;
            assert_eq!(l, r, "{sql}");
            assert!(l.lines().count() > 1);
        }
    });
}

#[test]
fn a_backtest_on_an_s3_lake_writes_the_same_results_as_on_a_local_one() {
    let (opts, bucket) = s3();
    let dir = tempfile::tempdir().unwrap();
    let local = Lake::open(dir.path().to_str().unwrap(), &Default::default()).unwrap();
    let prefix = format!("bt-{}", std::process::id());
    let remote = Lake::open(&format!("s3://{bucket}/{prefix}"), &opts).unwrap();
    let spec =
        flowsense_core::job::JobSpec::from_file(&repo_path("examples/binance-ofi-backtest.toml"))
            .unwrap();
    for lake in [&local, &remote] {
        rt().block_on(ingest_paths(lake, &[binance_data()], None, false))
            .unwrap();
        let opts = flowsense_dataflows::backtest::TradingOptions::backtest("s3-bt");
        flowsense_dataflows::backtest::run_trading(&spec, lake, &opts).unwrap();
    }
    rt().block_on(async {
        for sql in [
            "SELECT symbol, side, count(*), round(sum(size), 9), round(sum(fee), 9) FROM fills WHERE run_id = 's3-bt' GROUP BY symbol, side",
            "SELECT scope, regime, round(net_pnl, 9), orders FROM metrics WHERE run_id = 's3-bt'",
            "SELECT count(*) FROM equity WHERE run_id = 's3-bt'",
        ] {
            let l = query_csv(&local, sql).await;
            let r = query_csv(&remote, sql).await;
            assert_eq!(l, r, "{sql}");
            assert!(l.lines().count() > 1);
        }
        let html = flowsense_dataflows::report::build(&remote, "s3-bt").await.unwrap();
        assert!(html.contains("<svg"));
    });
}
