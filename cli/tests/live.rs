//! `flowsense run` on a `[source.live]` job against a local Binance (websocket and REST on
//! real sockets, replaying the bundled USD-M capture): the live graph's features equal the
//! batch graph's on the same messages, a paper run trades as the backtest of its own
//! recording, bad messages are dead letters while the feed goes on, a quiet market's bucket
//! closes on the live clock, and a slow consumer loses nothing.

// The quiet market is timed on the wall clock (as a bound, never as a measurement).
#![allow(clippy::disallowed_methods)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use flowsense_core::MarketEvent;
use flowsense_sources::Record;
use flowsense_sources::live::{BinanceConfig, BinanceVenue, LiveFeed, LiveOptions};

use crate::common;
use crate::venue::{
    Script, WsServer, as_of_now, capture_lines, lake_csv, rest_server, snapshot_and_frames,
    ws_server,
};

/// A live job's spec on the local servers, with `extra` TOML after its source table.
fn live_spec(name: &str, ws: &str, rest: &str, record: &Path, extra: &str) -> String {
    format!(
        "name = \"{name}\"\n\
         [source.live]\n\
         exchange = \"binance-usdm\"\n\
         symbols = [\"btcusdt\"]\n\
         reconnect = false\n\
         record = \"{}\"\n\
         ws_url = \"{ws}\"\n\
         rest_url = \"{rest}\"\n\
         {extra}",
        record.display()
    )
}

fn write(dir: &Path, file: &str, text: &str) -> String {
    let p = dir.join(file);
    std::fs::write(&p, text).unwrap();
    p.to_str().unwrap().to_string()
}

/// `flowsense run JOB --lake LAKE [more]`; its stderr.
fn run(job: &str, lake: &Path, more: &[&str]) -> String {
    let mut args = vec!["run", job, "--lake", lake.to_str().unwrap()];
    args.extend_from_slice(more);
    String::from_utf8_lossy(&common::run_ok(&args).stderr).into_owned()
}

fn local_binance(
    lines: &[String],
    script: impl FnOnce(Vec<String>) -> Vec<Script>,
) -> (WsServer, String) {
    let (snapshot, frames) = snapshot_and_frames(lines);
    let ws = ws_server(script(frames));
    let (rest, _) = rest_server(snapshot);
    (ws, rest)
}

const FEATURES: &str = "[features]\nbuckets = [\"1s\"]\nlevels = 5\n";

#[test]
fn the_live_graph_computes_the_features_the_batch_graph_computes_on_the_same_messages() {
    let lines = capture_lines(8000);
    let (ws, rest) = local_binance(&lines, |f| vec![Script::at_once(f)]);
    let dir = tempfile::tempdir().unwrap();
    let (rec, lake) = (dir.path().join("rec"), dir.path().join("lake"));
    let job = write(
        dir.path(),
        "live.toml",
        &live_spec("live-f", &ws.url, &rest, &rec, FEATURES),
    );
    let said = run(&job, &lake, &[]);
    let frames = lines.len() - 1;
    assert!(
        said.contains(&format!(
            "live feed: {frames} messages, 1 snapshots, 1 connection(s), 0 id gap(s) resynced"
        )),
        "{said}"
    );
    // The batch graph over what the live job recorded of the same session.
    let batch = write(
        dir.path(),
        "batch.toml",
        &format!(
            "name = \"batch-f\"\n[source.capture]\npaths = [\"{}\"]\n{FEATURES}",
            rec.display()
        ),
    );
    run(&batch, &lake, &[]);
    let of = |job: &str| {
        lake_csv(
            &lake,
            &format!(
                "SELECT * EXCEPT (job, ofi_levels, depth_imbalance_levels), \
                 array_to_string(ofi_levels, ' ') AS ofi, \
                 array_to_string(depth_imbalance_levels, ' ') AS imbalance \
                 FROM features WHERE job = '{job}'"
            ),
        )
    };
    let (live, batch) = (of("live-f"), of("batch-f"));
    assert!(live.lines().count() > 20, "{live}");
    common::assert_same_text(&live, &batch, "features");
}

/// A strategy that trades often: market orders on the best level's order-flow imbalance,
/// held at most two seconds of the feed clock.
const STRATEGY: &str = r#"
[features]
buckets = ["1s"]
levels = 5

[strategy]
bucket = "1s"
signal = "ofi_l1 / (bid_size + ask_size)"
entry = 0.2
exit = 0.0
max_hold = "2s"
order = "market"

[strategy.sizing]
method = "fixed"
size = 0.01

[risk]
capital = 100000
max_orders_per_second = 20

[execution]
order_latency = "1ms"
response_latency = "1ms"
taker_fee = 0.0004
"#;

fn strategy() -> String {
    STRATEGY.to_string()
}

#[test]
fn a_paper_run_on_a_live_feed_trades_as_the_backtest_of_its_recording() {
    // A minute and a half of the capture as a venue whose clock agrees with ours: moved to
    // start now (the simulated exchange runs on exchange time and orders leave on the receive
    // clock, so the two must agree, as they do live), sent as fast as the socket takes it.
    let lines = capture_lines(20000);
    let (snapshot, frames) = snapshot_and_frames(&lines);
    let (snapshot, frames) = as_of_now(&snapshot, &frames);
    let ws = ws_server(vec![Script::at_once(frames)]);
    let (rest, _) = rest_server(snapshot);
    let dir = tempfile::tempdir().unwrap();
    let (rec, lake) = (dir.path().join("rec"), dir.path().join("lake"));
    let job = write(
        dir.path(),
        "paper.toml",
        &live_spec("ofi", &ws.url, &rest, &rec, &strategy()),
    );
    let said = run(&job, &lake, &["--run-id", "paper-1"]);
    assert!(said.contains("live feed: "), "{said}");
    let runs = lake_csv(&lake, "SELECT run_id, mode FROM runs");
    assert!(runs.contains("paper-1,paper"), "{runs}");

    let backtest = write(
        dir.path(),
        "bt.toml",
        &format!(
            // The same job (its name seeds the order ids), backtested.
            "name = \"ofi\"\n[source.capture]\npaths = [\"{}\"]\n{}",
            rec.display(),
            strategy()
        ),
    );
    let bt = common::run_ok(&[
        "backtest",
        &backtest,
        "--lake",
        lake.to_str().unwrap(),
        "--run-id",
        "bt-1",
    ]);
    let n = lake_csv(
        &lake,
        "SELECT count(*) AS n FROM fills WHERE run_id = 'paper-1'",
    );
    let fills: u64 = n.lines().nth(1).unwrap().parse().unwrap();
    assert!(
        fills > 0,
        "the paper run filled nothing: {said}\n{}",
        String::from_utf8_lossy(&bt.stdout)
    );
    for table in ["orders", "fills", "equity", "risk_events"] {
        let of = |run: &str| {
            lake_csv(
                &lake,
                &format!("SELECT * EXCEPT (run_id) FROM {table} WHERE run_id = '{run}'"),
            )
        };
        common::assert_same_text(&of("paper-1"), &of("bt-1"), table);
    }
}

#[test]
fn bad_messages_are_dead_letters_and_the_feed_goes_on() {
    let lines = capture_lines(6000);
    let (snapshot, mut frames) = snapshot_and_frames(&lines);
    let trades = frames.iter().filter(|f| f.contains("@trade")).count();
    // Malformed JSON, a symbol nobody subscribed to, and ten depth diffs lost mid-stream.
    frames.insert(
        100,
        "{\"stream\":\"btcusdt@trade\",\"data\":{\"e\":\"trade\",".into(),
    );
    frames.insert(
        200,
        frames[150]
            .replace("btcusdt@", "dogeusdt@")
            .replace("BTCUSDT", "DOGEUSDT"),
    );
    let depth: Vec<usize> = (0..frames.len())
        .filter(|&i| frames[i].contains("@depth"))
        .collect();
    let cut = depth[depth.len() / 2];
    for i in depth
        .iter()
        .copied()
        .filter(|&i| i >= cut)
        .take(10)
        .collect::<Vec<_>>()
        .iter()
        .rev()
    {
        frames.remove(*i);
    }
    let ws = ws_server(vec![Script::at_once(frames)]);
    let (rest, rest_seen) = rest_server(snapshot);
    let dir = tempfile::tempdir().unwrap();
    let (rec, lake) = (dir.path().join("rec"), dir.path().join("lake"));
    let job = write(
        dir.path(),
        "live.toml",
        &live_spec("live-bad", &ws.url, &rest, &rec, FEATURES),
    );
    let said = run(&job, &lake, &[]);
    assert!(said.contains("1 id gap(s) resynced"), "{said}");
    assert_eq!(
        rest_seen.lock().unwrap().len(),
        2,
        "a new snapshot after the gap"
    );
    let dead = lake_csv(&lake, "SELECT reason FROM dead_letters");
    for reason in ["unparsable", "unknown_symbol", "update_id_gap"] {
        assert!(dead.contains(reason), "{reason} missing: {dead}");
    }
    // Every good trade still went through the graph.
    let n = lake_csv(
        &lake,
        "SELECT sum(trade_count) AS n FROM features WHERE job = 'live-bad'",
    );
    assert_eq!(n.lines().nth(1), Some(trades.to_string().as_str()), "{n}");
}

#[test]
fn a_quiet_market_closes_its_bucket_on_the_live_clock() {
    let lines = capture_lines(3000);
    // The frames, then three seconds of silence before the server closes.
    let (ws, rest) = local_binance(&lines, |f| {
        let mut s = Script::at_once(f);
        s.hold = Duration::from_secs(3);
        vec![s]
    });
    let dir = tempfile::tempdir().unwrap();
    let rec = dir.path().join("rec");
    // `grace` goes right after the source's keys, so into [source.live].
    let job = write(
        dir.path(),
        "quiet.toml",
        &live_spec(
            "quiet",
            &ws.url,
            &rest,
            &rec,
            "grace = \"200ms\"\n[features]\nbuckets = [\"1s\"]\nlevels = 5\n\
             [sinks]\nlake = false\nstdout = true\n",
        ),
    );
    let mut child = common::flowsense()
        .args(["run", &job])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = BufReader::new(child.stdout.take().unwrap());
    // Each row with when it came.
    let rows: Vec<(Instant, serde_json::Value)> = out
        .lines()
        .map(|l| (Instant::now(), serde_json::from_str(&l.unwrap()).unwrap()))
        .collect();
    let status = child.wait().unwrap();
    assert!(status.success());
    let silence = ws.sent_all.lock().unwrap()[0];
    let last_ts = rows
        .iter()
        .map(|(_, r)| r["ts"].as_i64().unwrap())
        .max()
        .unwrap();
    let (came, _) = rows
        .iter()
        .find(|(_, r)| r["ts"].as_i64() == Some(last_ts))
        .unwrap();
    // The last bucket closed in the silence, on the live clock (its end plus the grace is at
    // most 1.2 s after the last event), not when the feed ended 3 s in.
    let after = came.saturating_duration_since(silence);
    assert!(
        after < Duration::from_millis(2500),
        "the quiet bucket came {after:?} into the silence"
    );
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(
        !stderr.contains("closed a quiet market 0 time(s)"),
        "{stderr}"
    );
}

#[test]
fn a_slow_consumer_loses_nothing_and_the_feed_waits_for_it() {
    let lines = capture_lines(3000);
    let (ws, rest) = local_binance(&lines, |f| vec![Script::at_once(f)]);
    let config = BinanceConfig {
        venue: BinanceVenue::UsdM,
        symbols: vec!["btcusdt".into()],
        ws_url: Some(ws.url.clone()),
        rest_url: Some(rest),
        streams: vec![],
    };
    let fast: Vec<String> = LiveFeed::binance(
        &config,
        &LiveOptions {
            reconnect: false,
            ..Default::default()
        },
    )
    .unwrap()
    .filter_map(trade_text)
    .collect();
    let mut slow = LiveFeed::binance(
        &config,
        &LiveOptions {
            reconnect: false,
            capacity: 8,
            ..Default::default()
        },
    )
    .unwrap();
    let mut got = Vec::new();
    for (i, r) in slow.by_ref().enumerate() {
        if i < 200 {
            std::thread::sleep(Duration::from_micros(500));
        }
        got.extend(trade_text(r));
    }
    assert!(fast.len() > 100);
    assert_eq!(got, fast, "the slow consumer's trades");
    assert!(slow.counts().waits > 0, "{:?}", slow.counts());
}

/// A trade's exchange side, as text.
fn trade_text(r: Record) -> Option<String> {
    match r {
        Record::Event(MarketEvent::Trade(s, t)) => Some(format!(
            "{s} {:?} {} {} {:?}",
            t.ts, t.price, t.size, t.aggressor
        )),
        _ => None,
    }
}

#[test]
fn a_live_job_reconnects_after_a_drop_and_ctrl_c_ends_it_with_everything_written() {
    let lines = capture_lines(4000);
    let (snapshot, frames) = snapshot_and_frames(&lines);
    let trades = frames.iter().filter(|f| f.contains("@trade")).count();
    // The first connection drops halfway; the second sends the rest; the third stays quiet.
    let half = frames.len() / 2;
    let quiet = Script {
        frames: Vec::new(),
        hold: Duration::from_secs(60),
    };
    let ws = ws_server(vec![
        Script::at_once(frames[..half].to_vec()),
        Script::at_once(frames[half..].to_vec()),
        quiet,
    ]);
    let (rest, rest_seen) = rest_server(snapshot);
    let dir = tempfile::tempdir().unwrap();
    let (rec, lake) = (dir.path().join("rec"), dir.path().join("lake"));
    let job = write(
        dir.path(),
        "live.toml",
        &live_spec("live-re", &ws.url, &rest, &rec, FEATURES)
            .replace("reconnect = false", "reconnect = true"),
    );
    let child = common::flowsense()
        .args(["run", &job, "--lake", lake.to_str().unwrap()])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while ws.seen.lock().unwrap().len() < 3 {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "never reconnected twice"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(500));
    let pid = child.id().to_string();
    assert!(
        std::process::Command::new("kill")
            .args(["-INT", &pid])
            .status()
            .unwrap()
            .success()
    );
    let out = child.wait_with_output().unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{said}");
    assert!(said.contains("2 snapshots, 3 connection(s)"), "{said}");
    assert_eq!(rest_seen.lock().unwrap().len(), 2);
    // Every trade of both connections reached the features, which were written on Ctrl-C.
    let n = lake_csv(
        &lake,
        "SELECT sum(trade_count) AS n FROM features WHERE job = 'live-re'",
    );
    assert_eq!(n.lines().nth(1), Some(trades.to_string().as_str()), "{n}");
}
