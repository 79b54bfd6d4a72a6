//! A local Binance for the live tests: a websocket server that plays scripted connections of
//! real stream frames (from the bundled USD-M capture) and a REST server that answers the
//! depth snapshot, on real sockets.

// A live venue paces its frames and stamps them on the wall clock.
#![allow(clippy::disallowed_methods)]

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use flowsense_core::Lake;

use crate::common;

/// The first `n` lines of the bundled USD-M capture.
pub fn capture_lines(n: usize) -> Vec<String> {
    let path = common::binance_data().join("usdm/btcusdt_20240808.gz");
    let gz = flate2::read::MultiGzDecoder::new(std::fs::File::open(path).unwrap());
    BufReader::new(gz)
        .lines()
        .take(n)
        .map(|l| l.unwrap())
        .collect()
}

/// A REST server answering every request with `body` as JSON; records the request lines.
pub fn rest_server(body: String) -> (String, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let mut s = stream.unwrap();
            let mut reader = BufReader::new(s.try_clone().unwrap());
            let mut first = String::new();
            reader.read_line(&mut first).unwrap();
            loop {
                let mut h = String::new();
                if reader.read_line(&mut h).unwrap() == 0 || h == "\r\n" {
                    break;
                }
            }
            log.lock().unwrap().push(first.trim().to_string());
            write!(
                s,
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
                 Connection: close\r\n\r\n{body}",
                body.len()
            )
            .unwrap();
        }
    });
    (url, seen)
}

/// What the local Binance sends on one connection.
#[derive(Clone, Default)]
pub struct Script {
    /// Frames, each with when it goes out after the connection opened.
    pub frames: Vec<(Duration, String)>,
    /// How long the connection stays open after the last frame before the server closes it.
    pub hold: Duration,
}

impl Script {
    /// Every frame at once, then close.
    pub fn at_once(frames: Vec<String>) -> Self {
        Script {
            frames: frames.into_iter().map(|f| (Duration::ZERO, f)).collect(),
            hold: Duration::ZERO,
        }
    }

    /// Capture lines' frames (snapshots left out) sent as they were received, `speed` times
    /// faster.
    pub fn paced(lines: &[String], speed: f64) -> Self {
        let mut t0 = None;
        let frames = lines
            .iter()
            .filter_map(|l| {
                let (local, json) = l.split_once(' ').unwrap();
                if json.starts_with("{\"lastUpdateId\"") {
                    return None;
                }
                let local: i64 = local.parse().unwrap();
                let t0 = *t0.get_or_insert(local);
                let at = Duration::from_secs_f64((local - t0) as f64 * 1e-9 / speed);
                Some((at, json.to_string()))
            })
            .collect();
        Script {
            frames,
            hold: Duration::ZERO,
        }
    }
}

/// The local websocket server.
pub struct WsServer {
    /// `ws://127.0.0.1:PORT`.
    pub url: String,
    /// The request path of each connection.
    pub seen: Arc<Mutex<Vec<String>>>,
    /// When each connection's last frame went out.
    pub sent_all: Arc<Mutex<Vec<Instant>>>,
}

/// A websocket server whose `i`-th connection plays `scripts[i]` (the last script again for
/// any later one), then closes.
// tungstenite's handshake callback returns its error response by value.
#[allow(clippy::result_large_err)]
pub fn ws_server(scripts: Vec<Script>) -> WsServer {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("ws://{}", listener.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sent_all = Arc::new(Mutex::new(Vec::new()));
    let (log, sent) = (seen.clone(), sent_all.clone());
    std::thread::spawn(move || {
        for (i, stream) in listener.incoming().enumerate() {
            let log = log.clone();
            let sent = sent.clone();
            let script = scripts[i.min(scripts.len() - 1)].clone();
            std::thread::spawn(move || {
                let callback =
                    |req: &tungstenite::handshake::server::Request,
                     resp: tungstenite::handshake::server::Response| {
                        log.lock().unwrap().push(req.uri().to_string());
                        Ok(resp)
                    };
                let mut ws = tungstenite::accept_hdr(stream.unwrap(), callback).unwrap();
                let start = Instant::now();
                for (at, f) in script.frames {
                    if let Some(wait) = (start + at).checked_duration_since(Instant::now()) {
                        std::thread::sleep(wait);
                    }
                    if ws.send(tungstenite::Message::text(f)).is_err() {
                        return;
                    }
                }
                sent.lock().unwrap().push(Instant::now());
                std::thread::sleep(script.hold);
                let _ = ws.close(None);
                // Drain until the client's close arrives.
                while ws.read().is_ok() {}
            });
        }
    });
    WsServer {
        url,
        seen,
        sent_all,
    }
}

/// A query's result over the lake at `lake`, as sorted CSV.
pub fn lake_csv(lake: &Path, sql: &str) -> String {
    let lake = Lake::open(lake.to_str().unwrap(), &Default::default()).unwrap();
    common::rt().block_on(common::query_csv(&lake, sql))
}

/// Capture lines as a local Binance serves them: the REST snapshot's JSON, and the stream
/// frames' JSON in order (the local receive stamps dropped).
pub fn snapshot_and_frames(lines: &[String]) -> (String, Vec<String>) {
    let (snapshots, frames): (Vec<&str>, Vec<&str>) = lines
        .iter()
        .map(|l| l.split_once(' ').unwrap().1)
        .partition(|j| j.starts_with("{\"lastUpdateId\""));
    (
        snapshots[0].to_string(),
        frames.into_iter().map(String::from).collect(),
    )
}

/// Writes lines as a gzip capture file.
pub fn write_capture(path: &Path, lines: &[String]) {
    let mut gz = flate2::write::GzEncoder::new(
        std::fs::File::create(path).unwrap(),
        flate2::Compression::fast(),
    );
    for l in lines {
        writeln!(gz, "{l}").unwrap();
    }
    gz.finish().unwrap();
}

/// The `"E"` and `"T"` stamps (milliseconds) of a Binance message moved by `ms`.
pub fn shift_times(json: &str, ms: i64) -> String {
    let mut out = String::with_capacity(json.len() + 8);
    let mut rest = json;
    while let Some(i) = rest.find(['E', 'T']) {
        let (head, tail) = rest.split_at(i);
        out.push_str(head);
        let is_stamp = head.ends_with('"') && tail[1..].starts_with("\":");
        if !is_stamp {
            out.push_str(&tail[..1]);
            rest = &tail[1..];
            continue;
        }
        out.push_str(&tail[..3]);
        let digits = tail[3..]
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(tail.len() - 3);
        let n: i64 = tail[3..3 + digits].parse().unwrap();
        out.push_str(&(n + ms).to_string());
        rest = &tail[3 + digits..];
    }
    out.push_str(rest);
    out
}

/// How far to move a capture's stamps (ms) so that its first frame is now.
pub fn now_offset(frames: &[String]) -> i64 {
    let first = frames[0].split("\"E\":").nth(1).unwrap();
    let first: i64 = first[..first.find(|c: char| !c.is_ascii_digit()).unwrap()]
        .parse()
        .unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    now - first
}

/// A capture's snapshot and frames moved in time so that the first frame is now, as a live
/// venue whose clock agrees with ours would send them.
pub fn as_of_now(snapshot: &str, frames: &[String]) -> (String, Vec<String>) {
    let ms = now_offset(frames);
    (
        shift_times(snapshot, ms),
        frames.iter().map(|f| shift_times(f, ms)).collect(),
    )
}
