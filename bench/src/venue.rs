//! A local Binance on loopback, for the live benchmark and the live tests: a websocket server
//! that plays scripted connections of real stream frames, and a REST server that answers the
//! depth snapshot. Stamps can be moved to the present, so the venue's clock agrees with ours
//! as a live venue's does.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A REST server answering every request with `body` as JSON; its URL and the request lines
/// it has seen.
///
/// ```
/// let (url, _seen) = flowsense_bench::venue::rest_server("{}".into()).unwrap();
/// assert!(url.starts_with("http://127.0.0.1:"));
/// ```
pub fn rest_server(body: String) -> std::io::Result<(String, Arc<Mutex<Vec<String>>>)> {
    rest_server_on("127.0.0.1:0", body, false)
}

/// [`rest_server`] listening on `addr`; with `restamp`, the body's `E` and `T` stamps are
/// moved to the time of each request.
pub fn rest_server_on(
    addr: &str,
    body: String,
    restamp: bool,
) -> std::io::Result<(String, Arc<Mutex<Vec<String>>>)> {
    let listener = TcpListener::bind(addr)?;
    let url = format!("http://{}", listener.local_addr()?);
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { continue };
            let Ok(clone) = s.try_clone() else { continue };
            let mut reader = BufReader::new(clone);
            let mut first = String::new();
            if reader.read_line(&mut first).is_err() {
                continue;
            }
            loop {
                let mut h = String::new();
                match reader.read_line(&mut h) {
                    Ok(0) | Err(_) => break,
                    Ok(_) if h == "\r\n" => break,
                    Ok(_) => {}
                }
            }
            if let Ok(mut l) = log.lock() {
                l.push(first.trim().to_string());
            }
            let body = match restamp
                .then(|| now_offset(std::slice::from_ref(&body)))
                .flatten()
            {
                Some(ms) => shift_times(&body, ms),
                None => body.clone(),
            };
            let _ = write!(
                s,
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
                 Connection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    Ok((url, seen))
}

/// What the local venue sends on one connection.
#[derive(Clone, Debug, Default)]
pub struct Script {
    /// Sent as soon as the connection opens (a vendor's greeting).
    pub greeting: Vec<String>,
    /// Then, for each step, the client's next message is awaited: when it contains the
    /// step's `expect`, `reply` is sent and the script goes on; otherwise `refuse` is sent and
    /// the connection closed (a refused authentication).
    pub handshake: Vec<Step>,
    /// Frames, each with when it goes out after the handshake.
    pub frames: Vec<(Duration, String)>,
    /// How long the connection stays open after the last frame before the server closes it.
    pub hold: Duration,
    /// Move the frames' `E` and `T` stamps as each connection starts, so that its first frame
    /// is stamped now (a venue whose clock agrees with ours, however late one connects).
    pub restamp: bool,
}

/// One step of a [`Script`]'s handshake.
#[derive(Clone, Debug, Default)]
pub struct Step {
    /// What the client's message must contain.
    pub expect: String,
    /// The answer when it does.
    pub reply: String,
    /// The answer when it does not, before the server closes.
    pub refuse: String,
}

impl Script {
    /// Every frame at once, then close.
    ///
    /// ```
    /// let s = flowsense_bench::venue::Script::at_once(vec!["{}".into()]);
    /// assert_eq!(s.frames.len(), 1);
    /// ```
    pub fn at_once(frames: Vec<String>) -> Self {
        Script {
            frames: frames.into_iter().map(|f| (Duration::ZERO, f)).collect(),
            ..Default::default()
        }
    }

    /// Capture lines' frames (snapshots left out) sent as they were received, `speed` times
    /// faster.
    ///
    /// ```
    /// let lines = vec!["1000000000 {\"a\":1}".to_string(), "3000000000 {\"a\":2}".to_string()];
    /// let s = flowsense_bench::venue::Script::paced(&lines, 2.0);
    /// assert_eq!(s.frames[1].0, std::time::Duration::from_secs(1));
    /// ```
    pub fn paced(lines: &[String], speed: f64) -> Self {
        let mut t0 = None;
        let frames = lines
            .iter()
            .filter_map(|l| {
                let (local, json) = l.split_once(' ')?;
                if json.starts_with("{\"lastUpdateId\"") {
                    return None;
                }
                let local: i64 = local.parse().ok()?;
                let t0 = *t0.get_or_insert(local);
                let at = Duration::from_secs_f64((local - t0).max(0) as f64 * 1e-9 / speed);
                Some((at, json.to_string()))
            })
            .collect();
        Script {
            frames,
            ..Default::default()
        }
    }

    /// The same script with every frame's `E` and `T` stamps moved by `ms`.
    pub fn shifted(mut self, ms: i64) -> Self {
        for f in &mut self.frames {
            f.1 = shift_times(&f.1, ms);
        }
        self
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
    /// The text messages clients sent, in order.
    pub received: Arc<Mutex<Vec<String>>>,
}

/// A websocket server whose `i`-th connection plays `scripts[i]` (the last script again for
/// any later one), then closes.
// tungstenite's handshake callback returns its error response by value.
#[allow(clippy::result_large_err)]
pub fn ws_server(scripts: Vec<Script>) -> std::io::Result<WsServer> {
    ws_server_on("127.0.0.1:0", scripts)
}

/// [`ws_server`] listening on `addr`.
// tungstenite's handshake callback returns its error response by value.
#[allow(clippy::result_large_err)]
pub fn ws_server_on(addr: &str, scripts: Vec<Script>) -> std::io::Result<WsServer> {
    let listener = TcpListener::bind(addr)?;
    let url = format!("ws://{}", listener.local_addr()?);
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sent_all = Arc::new(Mutex::new(Vec::new()));
    let received = Arc::new(Mutex::new(Vec::new()));
    let (log, sent, got) = (seen.clone(), sent_all.clone(), received.clone());
    std::thread::spawn(move || {
        for (i, stream) in listener.incoming().enumerate() {
            let Ok(stream) = stream else { continue };
            let log = log.clone();
            let sent = sent.clone();
            let got = got.clone();
            let Some(script) = scripts.get(i.min(scripts.len().saturating_sub(1))).cloned() else {
                return;
            };
            std::thread::spawn(move || {
                let callback =
                    |req: &tungstenite::handshake::server::Request,
                     resp: tungstenite::handshake::server::Response| {
                        if let Ok(mut l) = log.lock() {
                            l.push(req.uri().to_string());
                        }
                        Ok(resp)
                    };
                let Ok(mut ws) = tungstenite::accept_hdr(stream, callback) else {
                    return;
                };
                for g in script.greeting {
                    if ws.send(tungstenite::Message::text(g)).is_err() {
                        return;
                    }
                }
                for step in script.handshake {
                    let text = loop {
                        match ws.read() {
                            Ok(tungstenite::Message::Text(t)) => break t.to_string(),
                            Ok(_) => continue,
                            Err(_) => return,
                        }
                    };
                    if let Ok(mut g) = got.lock() {
                        g.push(text.clone());
                    }
                    if !text.contains(&step.expect) {
                        let _ = ws.send(tungstenite::Message::text(step.refuse));
                        let _ = ws.close(None);
                        while ws.read().is_ok() {}
                        return;
                    }
                    if ws.send(tungstenite::Message::text(step.reply)).is_err() {
                        return;
                    }
                }
                let shift = if script.restamp {
                    let texts: Vec<String> =
                        script.frames.iter().take(1).map(|f| f.1.clone()).collect();
                    now_offset(&texts).unwrap_or(0)
                } else {
                    0
                };
                let start = Instant::now();
                for (at, f) in script.frames {
                    let f = if shift != 0 {
                        shift_times(&f, shift)
                    } else {
                        f
                    };
                    if let Some(wait) = (start + at).checked_duration_since(Instant::now()) {
                        std::thread::sleep(wait);
                    }
                    if ws.send(tungstenite::Message::text(f)).is_err() {
                        return;
                    }
                }
                if let Ok(mut s) = sent.lock() {
                    s.push(Instant::now());
                }
                std::thread::sleep(script.hold);
                let _ = ws.close(None);
                // Drain until the client's close arrives.
                while ws.read().is_ok() {}
            });
        }
    });
    Ok(WsServer {
        url,
        seen,
        sent_all,
        received,
    })
}

/// Capture lines as a local Binance serves them: the first REST snapshot's JSON, and the
/// stream frames' JSON in order (the local receive stamps dropped).
///
/// ```
/// let lines = vec!["1 {\"lastUpdateId\":5}".to_string(), "2 {\"stream\":\"x\"}".to_string()];
/// let (snap, frames) = flowsense_bench::venue::snapshot_and_frames(&lines).unwrap();
/// assert_eq!((snap.as_str(), frames.len()), ("{\"lastUpdateId\":5}", 1));
/// ```
pub fn snapshot_and_frames(lines: &[String]) -> Option<(String, Vec<String>)> {
    let (snapshots, frames): (Vec<&str>, Vec<&str>) = lines
        .iter()
        .filter_map(|l| l.split_once(' ').map(|x| x.1))
        .partition(|j| j.starts_with("{\"lastUpdateId\""));
    Some((
        snapshots.first()?.to_string(),
        frames.into_iter().map(String::from).collect(),
    ))
}

/// The `"E"` and `"T"` stamps (milliseconds) of a Binance message moved by `ms`.
///
/// ```
/// use flowsense_bench::venue::shift_times;
/// assert_eq!(shift_times(r#"{"E":10,"T":20,"s":"ET"}"#, 5), r#"{"E":15,"T":25,"s":"ET"}"#);
/// ```
pub fn shift_times(json: &str, ms: i64) -> String {
    let mut out = String::with_capacity(json.len() + 8);
    let mut rest = json;
    while let Some(i) = rest.find(['E', 'T']) {
        let (head, tail) = rest.split_at(i);
        out.push_str(head);
        let digits = tail.get(3..).map_or(0, |t| {
            t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len())
        });
        let stamp = head.ends_with('"') && tail[1..].starts_with("\":") && digits > 0;
        match stamp
            .then(|| tail[3..3 + digits].parse::<i64>().ok())
            .flatten()
        {
            Some(n) => {
                out.push_str(&tail[..3]);
                out.push_str(&(n + ms).to_string());
                rest = &tail[3 + digits..];
            }
            None => {
                out.push_str(&tail[..1]);
                rest = &tail[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// How far to move a capture's stamps (ms) so that its first frame's `E` is now.
pub fn now_offset(frames: &[String]) -> Option<i64> {
    let first = frames.first()?.split("\"E\":").nth(1)?;
    let first: i64 = first[..first.find(|c: char| !c.is_ascii_digit())?]
        .parse()
        .ok()?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?
        .as_millis() as i64;
    Some(now - first)
}
