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
    Script, Step, WsServer, capture_lines, lake_csv, rest_server, snapshot_and_frames, ws_server,
};

/// A live job's spec on the local servers, with `extra` TOML after its source table.
pub(crate) fn live_spec(name: &str, ws: &str, rest: &str, record: &Path, extra: &str) -> String {
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

pub(crate) fn write(dir: &Path, file: &str, text: &str) -> String {
    let p = dir.join(file);
    std::fs::write(&p, text).unwrap();
    p.to_str().unwrap().to_string()
}

/// `flowsense run JOB --lake LAKE [more]`; its stderr.
pub(crate) fn run(job: &str, lake: &Path, more: &[&str]) -> String {
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
pub(crate) const STRATEGY: &str = r#"
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
    let (ws, rest) = crate::venue::binance_at_once_as_of_now(20000);
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
        hold: Duration::from_secs(60),
        ..Default::default()
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

/// A stock feed's frames, as Alpaca or Polygon documents them: `n` seconds of AAPL quotes and
/// trades (two quotes and three trades a second, the trades at the ask, the bid and inside).
fn stock_frames(alpaca: bool, n: usize) -> Vec<String> {
    let t0: i64 = 1_723_127_400_000; // 2024-08-08T14:30:00Z, ms
    let stamp = |ms: i64| {
        if alpaca {
            let t = flowsense_core::job::format_instant(flowsense_core::UnixNanos::from_millis(ms));
            format!("\"t\":\"{t}Z\"")
        } else {
            format!("\"t\":{ms}")
        }
    };
    let mut frames = Vec::new();
    for i in 0..n as i64 {
        let ms = t0 + i * 1000;
        let bid = 227.0 + (i % 7) as f64 * 0.01;
        let (ask, mid) = (bid + 0.02, bid + 0.01);
        let quote = |at: i64, b: f64, a: f64| {
            if alpaca {
                format!(
                    "{{\"T\":\"q\",\"S\":\"AAPL\",\"bx\":\"V\",\"bp\":{b:.2},\"bs\":{},\"ax\":\"V\",\"ap\":{a:.2},\"as\":{},\"c\":[\"R\"],\"z\":\"C\",{}}}",
                    2 + i % 3,
                    3 + i % 2,
                    stamp(at)
                )
            } else {
                format!(
                    "{{\"ev\":\"Q\",\"sym\":\"AAPL\",\"bx\":4,\"bp\":{b:.2},\"bs\":{},\"ax\":7,\"ap\":{a:.2},\"as\":{},\"c\":0,{},\"q\":{at}}}",
                    2 + i % 3,
                    3 + i % 2,
                    stamp(at)
                )
            }
        };
        let trade = |at: i64, p: f64, s: i64, id: i64| {
            if alpaca {
                format!(
                    "{{\"T\":\"t\",\"S\":\"AAPL\",\"i\":{id},\"x\":\"V\",\"p\":{p:.2},\"s\":{s},\"c\":[\"@\"],\"z\":\"C\",{}}}",
                    stamp(at)
                )
            } else {
                format!(
                    "{{\"ev\":\"T\",\"sym\":\"AAPL\",\"i\":\"{id}\",\"x\":4,\"p\":{p:.2},\"s\":{s},\"c\":[0],{},\"z\":3}}",
                    stamp(at)
                )
            }
        };
        frames.push(format!(
            "[{},{}]",
            quote(ms, bid, ask),
            trade(ms + 100, ask, 100, i * 3)
        ));
        frames.push(format!(
            "[{},{},{}]",
            trade(ms + 300, bid, 50 + i % 5 * 10, i * 3 + 1),
            quote(ms + 500, bid + 0.01, ask + 0.01),
            trade(ms + 700, mid + 0.01, 25, i * 3 + 2)
        ));
    }
    frames
}

/// A local Alpaca (or Polygon): greeting, authentication with `key`, subscription, frames.
fn stock_venue(alpaca: bool, key: &str, frames: Vec<String>) -> WsServer {
    let (greeting, ok, refused, subscribed) = if alpaca {
        (
            r#"[{"T":"success","msg":"connected"}]"#,
            r#"[{"T":"success","msg":"authenticated"}]"#,
            r#"[{"T":"error","code":402,"msg":"auth failed"}]"#,
            r#"[{"T":"subscription","trades":["AAPL"],"quotes":["AAPL"],"bars":["AAPL"]}]"#,
        )
    } else {
        (
            r#"[{"ev":"status","status":"connected","message":"Connected Successfully"}]"#,
            r#"[{"ev":"status","status":"auth_success","message":"authenticated"}]"#,
            r#"[{"ev":"status","status":"auth_failed","message":"authentication failed"}]"#,
            r#"[{"ev":"status","status":"success","message":"subscribed to: T.AAPL"}]"#,
        )
    };
    let mut script = Script::at_once(frames);
    script.greeting = vec![greeting.to_string()];
    script.handshake = vec![
        Step {
            expect: key.to_string(),
            reply: ok.to_string(),
            refuse: refused.to_string(),
        },
        Step {
            expect: "subscribe".into(),
            reply: subscribed.to_string(),
            refuse: String::new(),
        },
    ];
    ws_server(vec![script])
}

fn stock_spec(name: &str, exchange: &str, ws: &str, record: &Path) -> String {
    format!(
        "name = \"{name}\"\n[source.live]\nexchange = \"{exchange}\"\nsymbols = [\"AAPL\"]\n\
         reconnect = false\nrecord = \"{}\"\nws_url = \"{ws}\"\n{FEATURES}",
        record.display()
    )
}

#[test]
fn an_alpaca_feed_authenticates_subscribes_and_computes_what_its_recording_does() {
    let mut frames = stock_frames(true, 30);
    // A symbol nobody subscribed to, and a frame cut short.
    frames.insert(10, frames[3].replace("\"AAPL\"", "\"MSFT\""));
    frames.insert(20, "[{\"T\":\"t\",\"S\":\"AAPL\",\"p\":".into());
    let ws = stock_venue(true, "key-id-1", frames);
    let dir = tempfile::tempdir().unwrap();
    let (rec, lake) = (dir.path().join("rec"), dir.path().join("lake"));
    let job = write(
        dir.path(),
        "alpaca.toml",
        &stock_spec("alpaca-live", "alpaca-iex", &ws.url, &rec),
    );
    let out = common::flowsense()
        .args(["run", &job, "--lake", lake.to_str().unwrap()])
        .env("APCA_API_KEY_ID", "key-id-1")
        .env("APCA_API_SECRET_KEY", "secret-that-must-not-show")
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{said}");
    assert!(!said.contains("secret-that-must-not-show"), "{said}");
    assert_eq!(ws.seen.lock().unwrap().as_slice(), ["/v2/iex"]);
    let sent = ws.received.lock().unwrap().clone();
    assert!(
        sent[0].contains("\"action\":\"auth\"") && sent[0].contains("secret-that-must-not-show")
    );
    assert!(
        sent[1].contains("\"trades\":[\"AAPL\"]") && sent[1].contains("\"quotes\":[\"AAPL\"]"),
        "{sent:?}"
    );
    assert!(
        !sent[1].contains("bars"),
        "bars are asked for only alone: {sent:?}"
    );
    let dead = lake_csv(&lake, "SELECT reason FROM dead_letters");
    for reason in ["unknown_symbol", "unparsable"] {
        assert!(dead.contains(reason), "{reason}: {dead}");
    }
    // 90 trades, each classified; the features of the live job equal the batch job's over
    // what it recorded.
    let n = lake_csv(
        &lake,
        "SELECT sum(trade_count) AS n, sum(buy_volume) AS b, sum(sell_volume) AS s FROM features WHERE job = 'alpaca-live'",
    );
    assert!(n.lines().nth(1).unwrap().starts_with("90,"), "{n}");
    let batch = write(
        dir.path(),
        "batch.toml",
        // The recording keeps whole frames, MSFT's too (the live feed refused it as not
        // subscribed): the batch job names its symbol.
        &format!(
            "name = \"alpaca-batch\"\nsymbols = [\"AAPL\"]\n[source.capture]\npaths = [\"{}\"]\n{FEATURES}",
            rec.display()
        ),
    );
    let said = run(&batch, &lake, &[]);
    assert!(said.contains("-> 30 feature rows"), "{said}");
    let of = |job: &str| {
        lake_csv(
            &lake,
            &format!(
                "SELECT * EXCEPT (job, ofi_levels, depth_imbalance_levels) FROM features WHERE job = '{job}'"
            ),
        )
    };
    common::assert_same_text(&of("alpaca-live"), &of("alpaca-batch"), "features");
    // The recording ingests, and so does a REST page of bars beside it.
    std::fs::write(
        rec.join("alpaca/bars.json"),
        r#"{"bars":{"AAPL":[{"t":"2024-08-08T14:30:00Z","o":227.0,"h":227.1,"l":226.9,"c":227.05,"v":12000,"n":120,"vw":227.02}]},"next_page_token":null}"#,
    )
    .unwrap();
    let l2 = dir.path().join("lake2");
    common::run_ok(&[
        "ingest",
        rec.to_str().unwrap(),
        "--lake",
        l2.to_str().unwrap(),
    ]);
    let counts = lake_csv(
        &l2,
        "SELECT (SELECT count(*) FROM trades WHERE symbol = 'AAPL') AS t, \
         (SELECT count(*) FROM quotes WHERE symbol = 'AAPL') AS q, (SELECT count(*) FROM bars) AS b",
    );
    assert_eq!(counts.lines().nth(1), Some("90,60,1"), "{counts}");
}

#[test]
fn a_polygon_feed_trades_through_and_a_refused_key_is_a_clear_error() {
    let frames = stock_frames(false, 20);
    let ws = stock_venue(false, "poly-key", frames.clone());
    let dir = tempfile::tempdir().unwrap();
    let (rec, lake) = (dir.path().join("rec"), dir.path().join("lake"));
    let job = write(
        dir.path(),
        "polygon.toml",
        &stock_spec("polygon-live", "polygon", &ws.url, &rec),
    );
    let out = common::flowsense()
        .args(["run", &job, "--lake", lake.to_str().unwrap()])
        .env("POLYGON_API_KEY", "poly-key")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(ws.seen.lock().unwrap().as_slice(), ["/stocks"]);
    let sent = ws.received.lock().unwrap().clone();
    assert!(sent[1].contains("\"params\":\"T.AAPL,Q.AAPL\""), "{sent:?}");
    let n = lake_csv(
        &lake,
        "SELECT sum(trade_count) AS n FROM features WHERE job = 'polygon-live'",
    );
    assert_eq!(n.lines().nth(1), Some("60"), "{n}");

    // The wrong key: the job fails at once with Polygon's answer, and the key is not shown.
    let ws = stock_venue(false, "poly-key", frames);
    let job = write(
        dir.path(),
        "polygon2.toml",
        &stock_spec("polygon-bad", "polygon", &ws.url, &rec),
    );
    let out = common::flowsense()
        .args(["run", &job, "--lake", lake.to_str().unwrap()])
        .env("POLYGON_API_KEY", "wrong-key-value")
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        said.contains("authentication refused") && said.contains("authentication failed"),
        "{said}"
    );
    assert!(!said.contains("wrong-key-value"), "{said}");
    // And without the variable, the error names it.
    let out = common::flowsense()
        .args(["run", &job, "--lake", lake.to_str().unwrap()])
        .env_remove("POLYGON_API_KEY")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("POLYGON_API_KEY"));
}

#[test]
fn polygon_rest_pages_ingest_with_the_ticker_of_the_page_or_of_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let poly = dir.path().join("polygon");
    std::fs::create_dir_all(&poly).unwrap();
    let put = |name: &str, text: &str| std::fs::write(poly.join(name), text).unwrap();
    // v3 trades and quotes answer without the ticker they were asked for: the file names it.
    put(
        "AAPL_trades_2024-08-08.json",
        r#"{"results":[{"conditions":[12],"exchange":11,"id":"1","participant_timestamp":1723127400100000000,"price":227.31,"sequence_number":1,"sip_timestamp":1723127400100500000,"size":100,"tape":3},{"exchange":11,"id":"2","participant_timestamp":1723127400200000000,"price":227.29,"sequence_number":2,"sip_timestamp":1723127400200500000,"size":50,"tape":3},{"exchange":11,"participant_timestamp":1723127400300000000,"price":227.3,"sequence_number":3}],"status":"OK","request_id":"a1"}"#,
    );
    put(
        "AAPL_quotes_2024-08-08.json",
        r#"{"results":[{"ask_exchange":11,"ask_price":227.31,"ask_size":300,"bid_exchange":12,"bid_price":227.29,"bid_size":200,"participant_timestamp":1723127400050000000,"sequence_number":1,"sip_timestamp":1723127400050300000,"tape":3}],"status":"OK","request_id":"a2"}"#,
    );
    // v2 aggregates name theirs.
    put(
        "aggs.json",
        r#"{"ticker":"MSFT","queryCount":1,"resultsCount":1,"adjusted":true,"results":[{"v":12000,"vw":410.1,"o":410.0,"c":410.2,"h":410.3,"l":409.9,"t":1723127400000,"n":120}],"status":"OK","request_id":"a3","count":1}"#,
    );
    // A page that names no ticker, in a file that does not either: a dead letter, not a guess.
    put(
        "2024-08-08_trades.json",
        r#"{"results":[{"id":"9","participant_timestamp":1723127400100000000,"price":1.0,"size":1}],"status":"OK","request_id":"a4"}"#,
    );
    let lake = dir.path().join("lake");
    let out = common::run_ok(&[
        "ingest",
        poly.to_str().unwrap(),
        "--lake",
        lake.to_str().unwrap(),
    ]);
    let said = String::from_utf8_lossy(&out.stderr);
    let counts = lake_csv(
        &lake,
        "SELECT (SELECT count(*) FROM trades WHERE symbol = 'AAPL') AS t, \
         (SELECT count(*) FROM quotes WHERE symbol = 'AAPL') AS q, \
         (SELECT count(*) FROM bars WHERE symbol = 'MSFT') AS b",
    );
    assert_eq!(counts.lines().nth(1), Some("2,1,1"), "{counts}\n{said}");
    // Each file is a source of its own, so the trades' sides come from the tick rule: the first
    // is a buy, the downtick after it a sell.
    let sides = lake_csv(
        &lake,
        "SELECT ts, price, side FROM trades WHERE symbol = 'AAPL'",
    );
    assert!(sides.contains("1723127400100000000,227.31,buy"), "{sides}");
    assert!(sides.contains("1723127400200000000,227.29,sell"), "{sides}");
    let dead = lake_csv(&lake, "SELECT reason FROM dead_letters");
    assert_eq!(dead.lines().count(), 3, "{dead}");
    assert!(
        dead.contains("unknown_symbol: a Polygon page that names no ticker"),
        "{dead}"
    );
    assert!(dead.contains("unparsable: no number"), "{dead}");
}

#[test]
fn a_paper_job_writes_its_records_as_it_runs() {
    // Seven seconds of the capture at real time, its stamps moved to now.
    let lines = capture_lines(1600);
    let (snapshot, frames) = snapshot_and_frames(&lines);
    let ms = crate::venue::now_offset(&frames);
    let ws = ws_server(vec![Script::paced(&lines, 1.0).shifted(ms)]);
    let (rest, _) = rest_server(crate::venue::shift_times(&snapshot, ms));
    let dir = tempfile::tempdir().unwrap();
    let (rec, lake) = (dir.path().join("rec"), dir.path().join("lake"));
    let job = write(
        dir.path(),
        "paper.toml",
        &format!(
            "{}[sinks]\nflush = \"1s\"\n",
            live_spec("flushing", &ws.url, &rest, &rec, &strategy())
        ),
    );
    let mut child = common::flowsense()
        .args([
            "run",
            &job,
            "--lake",
            lake.to_str().unwrap(),
            "--run-id",
            "flush-1",
        ])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The first equity file is in the lake while the job still runs.
    let first = lake.join("equity/flush-1-w000-00000.parquet");
    let start = Instant::now();
    while !first.exists() {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the job ended before writing anything"
        );
        assert!(start.elapsed() < Duration::from_secs(30));
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        child.try_wait().unwrap().is_none(),
        "written only at the end"
    );
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Written in pieces, read as one table: one equity mark per second of the session.
    let n = lake_csv(
        &lake,
        "SELECT count(*) AS n FROM equity WHERE run_id = 'flush-1'",
    );
    let marks: u64 = n.lines().nth(1).unwrap().parse().unwrap();
    assert!(marks >= 5, "{n}");
}

#[test]
fn flowsense_venue_serves_the_local_paper_example_across_processes() {
    let (ws_port, rest_port) = (common::free_port(), common::free_port());
    let mut venue = crate::venue::spawn_venue(ws_port, rest_port);
    let line = common::first_line(&mut venue);
    assert!(
        line.contains(&format!("ws://127.0.0.1:{ws_port}")),
        "{line}"
    );
    // The shipped example, pointed at these ports.
    let example = std::fs::read_to_string(common::repo_path("examples/live-paper-local.toml"))
        .unwrap()
        .replace("127.0.0.1:9443", &format!("127.0.0.1:{ws_port}"))
        .replace("127.0.0.1:9444", &format!("127.0.0.1:{rest_port}"));
    let dir = tempfile::tempdir().unwrap();
    let job = write(dir.path(), "local.toml", &example);
    let lake = dir.path().join("lake");
    let said = run(&job, &lake, &["--run-id", "local-1"]);
    let _ = venue.kill();
    let _ = venue.wait();
    assert!(said.contains("39999 messages, 1 snapshots"), "{said}");
    let n = lake_csv(
        &lake,
        "SELECT count(*) AS n FROM orders WHERE run_id = 'local-1'",
    );
    assert_ne!(n.lines().nth(1), Some("0"), "no order: {said}");
}
