//! The live tests' local Binance (`flowsense_bench::venue`, on real sockets) over the bundled
//! USD-M capture, and the helpers around it.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::sync::{Arc, Mutex};

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

pub use flowsense_bench::venue::{Script, Step, WsServer, shift_times};

/// A REST server answering every request with `body` as JSON; records the request lines.
pub fn rest_server(body: String) -> (String, Arc<Mutex<Vec<String>>>) {
    flowsense_bench::venue::rest_server(body).unwrap()
}

/// A websocket server whose `i`-th connection plays `scripts[i]` (the last one again after).
pub fn ws_server(scripts: Vec<Script>) -> WsServer {
    flowsense_bench::venue::ws_server(scripts).unwrap()
}

/// A query's result over the lake at `lake`, as sorted CSV.
pub fn lake_csv(lake: &Path, sql: &str) -> String {
    let lake = Lake::open(lake.to_str().unwrap(), &Default::default()).unwrap();
    common::rt().block_on(common::query_csv(&lake, sql))
}

/// Capture lines as a local Binance serves them: the REST snapshot's JSON, and the stream
/// frames' JSON in order.
pub fn snapshot_and_frames(lines: &[String]) -> (String, Vec<String>) {
    flowsense_bench::venue::snapshot_and_frames(lines).unwrap()
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

/// How far to move a capture's stamps (ms) so that its first frame is now.
pub fn now_offset(frames: &[String]) -> i64 {
    flowsense_bench::venue::now_offset(frames).unwrap()
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

/// `flowsense venue --speed 50` replaying the bundled USD-M capture on these loopback ports,
/// in a process of its own (stdout piped: read its first line with `common::first_line`).
pub fn spawn_venue(ws_port: u16, rest_port: u16) -> std::process::Child {
    let capture = common::binance_data().join("usdm/btcusdt_20240808.gz");
    common::flowsense()
        .args([
            "venue",
            "--speed",
            "50",
            "--capture",
            capture.to_str().unwrap(),
        ])
        .args(["--ws-listen", &format!("127.0.0.1:{ws_port}")])
        .args(["--rest-listen", &format!("127.0.0.1:{rest_port}")])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

/// A local Binance sending the first `n` lines of the capture at once, its stamps moved to
/// start now (so the simulated exchange's clock and the receive clock agree, as they do live);
/// its websocket server and REST URL.
pub fn binance_at_once_as_of_now(n: usize) -> (WsServer, String) {
    let lines = capture_lines(n);
    let (snapshot, frames) = snapshot_and_frames(&lines);
    let (snapshot, frames) = as_of_now(&snapshot, &frames);
    let ws = ws_server(vec![Script::at_once(frames)]);
    let (rest, _) = rest_server(snapshot);
    (ws, rest)
}
