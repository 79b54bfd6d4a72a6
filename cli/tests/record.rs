//! `flowsense record` against a local Binance: a websocket server that replays the bundled
//! USD-M capture's stream frames as Binance sends them, and a REST server that answers the
//! depth snapshot, on real sockets. What is recorded ingests to the same trades and books as
//! the capture itself.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::Path;

use crate::common;
use crate::venue::{
    Script, capture_lines, lake_csv, rest_server, snapshot_and_frames, write_capture, ws_server,
};

/// `flowsense record --source binance-usdm` of `symbol` into `out` from the local servers,
/// with `extra` flags; its summary line.
fn record_local(symbol: &str, out: &Path, ws_url: &str, rest_url: &str, extra: &[&str]) -> String {
    let mut args = vec![
        "record",
        "--source",
        "binance-usdm",
        "--symbols",
        symbol,
        "--out",
        out.to_str().unwrap(),
        "--ws-url",
        ws_url,
        "--rest-url",
        rest_url,
    ];
    args.extend_from_slice(extra);
    String::from_utf8_lossy(&common::run_ok(&args).stdout).into_owned()
}

#[test]
fn a_recording_of_a_local_binance_ingests_as_the_capture_does() {
    let lines = capture_lines(6000);
    let (snapshot, frames) = snapshot_and_frames(&lines);
    let ws = ws_server(vec![Script::at_once(frames.clone())]);
    let (ws_url, ws_seen) = (ws.url, ws.seen);
    let (rest_url, rest_seen) = rest_server(snapshot);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("rec");
    let said = record_local("BTCUSDT", &out, &ws_url, &rest_url, &["--no-reconnect"]);
    assert!(
        said.contains(&format!(
            "recorded {} messages and 1 snapshots",
            frames.len()
        )),
        "{said}"
    );
    assert_eq!(
        ws_seen.lock().unwrap().as_slice(),
        ["/stream?streams=btcusdt@depth@0ms/btcusdt@trade/btcusdt@bookTicker"]
    );
    assert_eq!(
        rest_seen.lock().unwrap().as_slice(),
        ["GET /fapi/v1/depth?symbol=BTCUSDT&limit=1000 HTTP/1.1"]
    );
    let files: Vec<_> = std::fs::read_dir(out.join("usdm"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    assert!(
        files[0].starts_with("btcusdt_") && files[0].ends_with(".gz"),
        "{files:?}"
    );

    // The capture's same lines, as a capture file, beside the recording.
    let original = dir.path().join("orig/usdm");
    std::fs::create_dir_all(&original).unwrap();
    write_capture(&original.join("btcusdt_20240808.gz"), &lines);
    let (a, b) = (dir.path().join("lake-rec"), dir.path().join("lake-orig"));
    common::run_ok(&[
        "ingest",
        out.to_str().unwrap(),
        "--lake",
        a.to_str().unwrap(),
    ]);
    common::run_ok(&[
        "ingest",
        dir.path().join("orig").to_str().unwrap(),
        "--lake",
        b.to_str().unwrap(),
    ]);
    for sql in [
        "SELECT symbol, ts, price, size, side FROM trades",
        "SELECT symbol, ts, bid_price, bid_size, ask_price, ask_size FROM bbo WHERE NOT gap",
        "SELECT count(*) AS n FROM dead_letters",
    ] {
        let (x, y) = (lake_csv(&a, sql), lake_csv(&b, sql));
        assert!(x.lines().count() > 1, "{sql}: nothing recorded");
        common::assert_same_text(&x, &y, sql);
    }
    let n = lake_csv(&a, "SELECT count(*) AS n FROM trades");
    assert_ne!(n.lines().nth(1), Some("0"), "{n}");

    // And the recording backtests. Its fills are not the capture's: a backtest's feed clock is
    // the receive time, and the local server sent the frames as fast as it could rather than as
    // they arrived in 2024. Backtested twice, they are the same.
    let spec = std::fs::read_to_string(common::repo_path("examples/binance-ofi-backtest.toml"))
        .unwrap()
        .replace(
            "symbols = [\"BTCUSDT-PERP\", \"BTCUSD_PERP\", \"BTCUSDT\"]",
            "symbols = [\"BTCUSDT-PERP\"]",
        );
    let job = dir.path().join("ofi.toml");
    std::fs::write(&job, spec).unwrap();
    for run in ["first", "second"] {
        common::run_ok(&[
            "backtest",
            job.to_str().unwrap(),
            "--lake",
            a.to_str().unwrap(),
            "--run-id",
            run,
        ]);
    }
    let orders = lake_csv(
        &a,
        "SELECT count(*) AS n FROM orders WHERE run_id = 'first'",
    );
    assert_ne!(
        orders.lines().nth(1),
        Some("0"),
        "the strategy placed no order: {orders}"
    );
    for table in ["orders", "fills", "equity"] {
        let of = |run: &str| {
            lake_csv(
                &a,
                &format!("SELECT * EXCEPT (run_id) FROM {table} WHERE run_id = '{run}'"),
            )
        };
        common::assert_same_text(&of("first"), &of("second"), table);
    }
}

#[test]
fn record_refuses_an_unknown_source_and_a_server_that_is_not_there() {
    let e = common::run_err(&[
        "record",
        "--source",
        "kraken",
        "--symbols",
        "btcusdt",
        "--out",
        "/tmp/none",
    ]);
    assert!(
        e.contains("binance-spot, binance-usdm or binance-coinm"),
        "{e}"
    );
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = tempfile::tempdir().unwrap();
    let e = common::run_err(&[
        "record",
        "--source",
        "binance-spot",
        "--symbols",
        "btcusdt",
        "--out",
        dir.path().to_str().unwrap(),
        "--ws-url",
        &format!("ws://127.0.0.1:{port}"),
    ]);
    assert!(e.contains(&format!("127.0.0.1:{port}")), "{e}");
}

#[test]
fn a_dropped_connection_is_reopened_with_a_new_snapshot() {
    let lines = capture_lines(2000);
    let (snapshot, frames) = snapshot_and_frames(&lines);
    // The server sends the frames, then drops the connection; the recorder comes back.
    let ws = ws_server(vec![Script::at_once(frames.clone())]);
    let (ws_url, ws_seen) = (ws.url, ws.seen);
    let (rest_url, rest_seen) = rest_server(snapshot);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("rec");
    let limit = frames.len() + 100;
    let said = record_local(
        "btcusdt",
        &out,
        &ws_url,
        &rest_url,
        &["--max-messages", &limit.to_string()],
    );
    assert!(
        said.contains(&format!(
            "recorded {limit} messages and 2 snapshots over 2 connection(s), 0 gap(s)"
        )),
        "{said}"
    );
    assert_eq!(ws_seen.lock().unwrap().len(), 2);
    assert_eq!(rest_seen.lock().unwrap().len(), 2);
    // The second snapshot resyncs the book: the recording ingests.
    let lake = dir.path().join("lake");
    common::run_ok(&[
        "ingest",
        out.to_str().unwrap(),
        "--lake",
        lake.to_str().unwrap(),
    ]);
    let n = lake_csv(&lake, "SELECT count(*) AS n FROM bbo WHERE NOT gap");
    assert_ne!(n.lines().nth(1), Some("0"), "{n}");
}

#[test]
fn a_gap_in_the_update_ids_fetches_a_new_snapshot_at_once() {
    let lines = capture_lines(3000);
    let (snapshot, mut frames) = snapshot_and_frames(&lines);
    // Ten depth diffs lost in the middle, as a dropped frame would lose them.
    let depth: Vec<usize> = (0..frames.len())
        .filter(|&i| frames[i].contains("@depth"))
        .collect();
    let cut = depth[depth.len() / 2];
    let lost: Vec<usize> = depth
        .iter()
        .copied()
        .filter(|&i| i >= cut)
        .take(10)
        .collect();
    for i in lost.iter().rev() {
        frames.remove(*i);
    }
    let ws = ws_server(vec![Script::at_once(frames.clone())]);
    let (ws_url, _) = (ws.url, ws.seen);
    let (rest_url, rest_seen) = rest_server(snapshot);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("rec");
    let said = record_local("btcusdt", &out, &ws_url, &rest_url, &["--no-reconnect"]);
    assert!(
        said.contains(&format!(
            "recorded {} messages and 2 snapshots over 1 connection(s), 1 gap(s) resynced",
            frames.len()
        )),
        "{said}"
    );
    assert_eq!(rest_seen.lock().unwrap().len(), 2);
    // The recording holds the new snapshot right after the diff that broke the chain.
    let path = std::fs::read_dir(out.join("usdm"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let gz = flate2::read::MultiGzDecoder::new(std::fs::File::open(path).unwrap());
    let recorded: Vec<String> = BufReader::new(gz).lines().map(|l| l.unwrap()).collect();
    let first_after = (cut..frames.len())
        .find(|&i| frames[i].contains("@depth"))
        .unwrap();
    let broken = recorded
        .iter()
        .position(|l| l.ends_with(frames[first_after].as_str()))
        .unwrap();
    assert!(
        recorded[broken + 1]
            .split_once(' ')
            .unwrap()
            .1
            .starts_with("{\"lastUpdateId\"")
    );
    // Ingested, the break is a dead letter that says so.
    let lake = dir.path().join("lake");
    common::run_ok(&[
        "ingest",
        out.to_str().unwrap(),
        "--lake",
        lake.to_str().unwrap(),
    ]);
    let dead = lake_csv(&lake, "SELECT reason FROM dead_letters");
    assert!(dead.lines().count() > 1, "{dead}");
}

#[test]
fn the_live_feed_decodes_as_the_file_reader_reads_the_capture() {
    use flowsense_core::MarketEvent;
    use flowsense_sources::Record;
    use flowsense_sources::live::{BinanceConfig, BinanceVenue, LiveFeed, LiveOptions};
    let lines = capture_lines(4000);
    let (snapshot, frames) = snapshot_and_frames(&lines);
    let ws = ws_server(vec![Script::at_once(frames)]);
    let (ws_url, _) = (ws.url, ws.seen);
    let (rest_url, _) = rest_server(snapshot);
    let config = BinanceConfig {
        venue: BinanceVenue::UsdM,
        symbols: vec!["btcusdt".into()],
        ws_url: Some(ws_url),
        rest_url: Some(rest_url),
        streams: vec![],
    };
    let opts = LiveOptions {
        reconnect: false,
        ..Default::default()
    };
    let live: Vec<Record> = LiveFeed::binance(&config, &opts).unwrap().collect();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("btcusdt_20240808.gz");
    write_capture(&file, &lines);
    let captured: Vec<Record> =
        flowsense_sources::binance::BinanceReader::open(vec![file], Default::default())
            .unwrap()
            .map(|r| r.unwrap())
            .collect();
    // The exchange's side of each event: the receive clock is the live run's own.
    let exchange_side = |rs: &[Record]| -> (Vec<String>, Vec<String>) {
        let mut trades = Vec::new();
        let mut books = Vec::new();
        for r in rs {
            match r {
                Record::Event(MarketEvent::Trade(s, t)) => {
                    trades.push(format!(
                        "{s} {:?} {} {} {:?}",
                        t.ts, t.price, t.size, t.aggressor
                    ));
                }
                Record::Event(MarketEvent::Bbo(s, b)) if !b.gap => {
                    books.push(format!("{s} {:?} {:?} {:?}", b.ts, b.bid, b.ask));
                }
                _ => {}
            }
        }
        (trades, books)
    };
    let (live_trades, live_books) = exchange_side(&live);
    let (file_trades, file_books) = exchange_side(&captured);
    assert!(live_trades.len() > 100 && live_books.len() > 100);
    assert_eq!(live_trades, file_trades);
    assert_eq!(live_books, file_books);
}
