//! Live market data from Binance: the combined websocket stream of each symbol's depth diffs,
//! trades and best quotes, with the REST depth snapshot fetched once the first diff is buffered
//! (Binance's procedure), every message stamped with its local receive time, and a recorder that
//! writes what arrives in the capture format `flowsense ingest` reads (`<local ns> <json>` lines,
//! gzip, one file per symbol and UTC day), so recording, ingest and backtest round-trip and live
//! and history share one parser ([`crate::binance`]); [`LiveFeed`] decodes each message with
//! that parser as it arrives, for a job.
//!
//! This is the one place in the sources where wall time enters: the receive stamps and the
//! recorder's stop time come from the system clock, and say so.

// Live sources stamp messages with the wall clock (see above).
#![allow(clippy::disallowed_methods)]

use std::collections::{BTreeMap, HashMap};
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use flate2::Compression;
use flate2::write::GzEncoder;
use flowsense_core::{DeadLetter, DeadLetterReason, UnixNanos};
use tungstenite::stream::MaybeTlsStream;
use tungstenite::{Message, WebSocket};

use crate::{Error, Record, Result};

/// One of Binance's markets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BinanceVenue {
    /// Spot (`stream.binance.com`, `api.binance.com`).
    Spot,
    /// USD-M futures (`fstream.binance.com`, `fapi.binance.com`).
    UsdM,
    /// COIN-M futures (`dstream.binance.com`, `dapi.binance.com`).
    CoinM,
}

impl BinanceVenue {
    /// The venue of a `--source` name: `binance-spot`, `binance-usdm` or `binance-coinm`.
    ///
    /// ```
    /// use flowsense_sources::live::BinanceVenue;
    /// assert_eq!(BinanceVenue::parse("binance-usdm"), Some(BinanceVenue::UsdM));
    /// assert_eq!(BinanceVenue::parse("kraken"), None);
    /// ```
    pub fn parse(source: &str) -> Option<Self> {
        match source {
            "binance-spot" => Some(BinanceVenue::Spot),
            "binance-usdm" => Some(BinanceVenue::UsdM),
            "binance-coinm" => Some(BinanceVenue::CoinM),
            _ => None,
        }
    }

    /// The folder its recordings go to, as the bundled captures are laid out.
    pub fn folder(self) -> &'static str {
        match self {
            BinanceVenue::Spot => "spot",
            BinanceVenue::UsdM => "usdm",
            BinanceVenue::CoinM => "cm",
        }
    }

    /// The websocket base URL.
    pub fn ws_base(self) -> &'static str {
        match self {
            BinanceVenue::Spot => "wss://stream.binance.com:9443",
            BinanceVenue::UsdM => "wss://fstream.binance.com",
            BinanceVenue::CoinM => "wss://dstream.binance.com",
        }
    }

    /// The REST base URL.
    pub fn rest_base(self) -> &'static str {
        match self {
            BinanceVenue::Spot => "https://api.binance.com",
            BinanceVenue::UsdM => "https://fapi.binance.com",
            BinanceVenue::CoinM => "https://dapi.binance.com",
        }
    }

    fn depth_path(self) -> &'static str {
        match self {
            BinanceVenue::Spot => "/api/v3/depth",
            BinanceVenue::UsdM => "/fapi/v1/depth",
            BinanceVenue::CoinM => "/dapi/v1/depth",
        }
    }

    /// The stream kinds a feed can ask for.
    pub const STREAMS: [&'static str; 4] = ["depth", "trade", "aggTrade", "bookTicker"];

    /// The streams of one symbol (lower case) for `kinds` (of [`BinanceVenue::STREAMS`];
    /// empty means depth, trade and bookTicker): depth diffs at the fastest rate the venue
    /// offers.
    ///
    /// ```
    /// use flowsense_sources::live::BinanceVenue;
    /// assert_eq!(BinanceVenue::Spot.streams("btcusdt", &["aggTrade".into()]), ["btcusdt@aggTrade"]);
    /// assert_eq!(BinanceVenue::UsdM.streams("btcusdt", &[])[0], "btcusdt@depth@0ms");
    /// ```
    pub fn streams(self, symbol: &str, kinds: &[String]) -> Vec<String> {
        let depth = if self == BinanceVenue::Spot {
            "depth@100ms"
        } else {
            "depth@0ms"
        };
        let default = ["depth", "trade", "bookTicker"].map(String::from);
        let kinds = if kinds.is_empty() {
            &default[..]
        } else {
            kinds
        };
        kinds
            .iter()
            .map(|k| match k.as_str() {
                "depth" => format!("{symbol}@{depth}"),
                other => format!("{symbol}@{other}"),
            })
            .collect()
    }
}

/// Where and what to connect to.
#[derive(Clone, Debug)]
pub struct BinanceConfig {
    /// The market.
    pub venue: BinanceVenue,
    /// Symbols as Binance names them (`btcusdt`); any case.
    pub symbols: Vec<String>,
    /// The websocket base, for a local server (default: the venue's).
    pub ws_url: Option<String>,
    /// The REST base, for a local server (default: the venue's).
    pub rest_url: Option<String>,
    /// Stream kinds ([`BinanceVenue::STREAMS`]); empty means depth, trade and bookTicker.
    pub streams: Vec<String>,
}

impl BinanceConfig {
    /// The combined-stream URL of every symbol's streams.
    ///
    /// ```
    /// use flowsense_sources::live::{BinanceConfig, BinanceVenue};
    /// let c = BinanceConfig { venue: BinanceVenue::UsdM, symbols: vec!["BTCUSDT".into()], ws_url: None, rest_url: None, streams: vec![] };
    /// assert_eq!(c.stream_url(), "wss://fstream.binance.com/stream?streams=btcusdt@depth@0ms/btcusdt@trade/btcusdt@bookTicker");
    /// ```
    pub fn stream_url(&self) -> String {
        let streams: Vec<String> = self
            .symbols
            .iter()
            .flat_map(|s| self.venue.streams(&s.to_ascii_lowercase(), &self.streams))
            .collect();
        format!(
            "{}/stream?streams={}",
            self.ws_url
                .as_deref()
                .unwrap_or(self.venue.ws_base())
                .trim_end_matches('/'),
            streams.join("/")
        )
    }

    fn snapshot_url(&self, symbol: &str) -> String {
        format!(
            "{}{}?symbol={}&limit=1000",
            self.rest_url
                .as_deref()
                .unwrap_or(self.venue.rest_base())
                .trim_end_matches('/'),
            self.venue.depth_path(),
            symbol.to_ascii_uppercase()
        )
    }
}

/// One message as it arrived: a stream frame (the combined envelope) or a REST snapshot.
#[derive(Clone, Debug, PartialEq)]
pub struct Received {
    /// Local receive time (the wall clock).
    pub local: UnixNanos,
    /// The symbol, lower case.
    pub symbol: String,
    /// The message's JSON text, as sent.
    pub text: String,
}

/// The wall clock as nanoseconds since the epoch.
fn wall_now() -> UnixNanos {
    let d = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    UnixNanos(d.as_nanos() as i64)
}

fn net(what: &str, e: impl std::fmt::Display) -> Error {
    Error::format(PathBuf::from(what), e.to_string())
}

/// One connection to a venue's combined stream. Each symbol's depth snapshot is fetched once
/// its first diff has arrived (so the diffs the snapshot covers are buffered before it, as
/// Binance's procedure asks) and handed out right after that diff; and again right after a
/// diff that breaks the update ids' chain (spot: `U` is the last `u` + 1; futures: `pu` is the
/// last `u`), so the book resyncs from it.
pub struct BinanceConnection {
    config: BinanceConfig,
    ws: WebSocket<MaybeTlsStream<TcpStream>>,
    http: ureq::Agent,
    depth: HashMap<String, DepthChain>,
    pending: Option<Received>,
    gaps: u64,
}

/// A symbol's diffs so far on this connection.
#[derive(Default)]
struct DepthChain {
    snapshot_taken: bool,
    last_final: Option<u64>,
}

/// The update ids of a depth diff frame: `U`, `u` and (futures) `pu`.
fn diff_ids(text: &str) -> Option<(u64, u64, Option<u64>)> {
    let v: serde_json::Value = serde_json::from_str(text).ok()?;
    let d = v.get("data")?;
    Some((
        d.get("U")?.as_u64()?,
        d.get("u")?.as_u64()?,
        d.get("pu").and_then(serde_json::Value::as_u64),
    ))
}

impl BinanceConnection {
    /// Connects to the combined stream of `config`'s symbols.
    pub fn connect(config: &BinanceConfig) -> Result<Self> {
        let url = config.stream_url();
        let (ws, _) = tungstenite::connect(&url).map_err(|e| net(&url, e))?;
        let http = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(10)))
            .build()
            .into();
        Ok(BinanceConnection {
            depth: config
                .symbols
                .iter()
                .map(|s| (s.to_ascii_lowercase(), DepthChain::default()))
                .collect(),
            config: config.clone(),
            ws,
            http,
            pending: None,
            gaps: 0,
        })
    }

    /// A handle on the connection's socket (to shut it down from another thread).
    fn socket(&self) -> Option<TcpStream> {
        socket_of(&self.ws)
    }

    /// Breaks in the update ids seen on this connection (each answered with a new snapshot).
    pub fn gaps(&self) -> u64 {
        self.gaps
    }

    fn snapshot(&self, symbol: &str) -> Result<Received> {
        let url = self.config.snapshot_url(symbol);
        let body = self
            .http
            .get(&url)
            .call()
            .map_err(|e| net(&url, e))?
            .body_mut()
            .read_to_string()
            .map_err(|e| net(&url, e))?;
        Ok(Received {
            local: wall_now(),
            symbol: symbol.to_string(),
            text: body.trim().to_string(),
        })
    }

    /// The next message; `None` once the server closed the connection. Pings are answered as
    /// they come (tungstenite queues the pong and sends it with the next read).
    pub fn next_message(&mut self) -> Result<Option<Received>> {
        if let Some(p) = self.pending.take() {
            return Ok(Some(p));
        }
        loop {
            let msg = match self.ws.read() {
                Ok(m) => m,
                Err(tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed) => {
                    return Ok(None);
                }
                Err(e) => return Err(net("the stream", e)),
            };
            let text = match msg {
                Message::Text(t) => t.to_string(),
                Message::Close(_) => return Ok(None),
                _ => continue,
            };
            let local = wall_now();
            let symbol = stream_symbol(&text).unwrap_or_default();
            if text.contains("@depth")
                && let Some(chain) = self.depth.get_mut(&symbol)
            {
                let ids = diff_ids(&text);
                let broken = match (chain.last_final, ids) {
                    (Some(last), Some((_, _, Some(prev)))) => prev != last,
                    (Some(last), Some((first, _, None))) => first != last + 1,
                    _ => false,
                };
                if let Some((_, fin, _)) = ids {
                    chain.last_final = Some(fin);
                }
                let due = !chain.snapshot_taken || broken;
                chain.snapshot_taken = true;
                if broken {
                    self.gaps += 1;
                }
                if due {
                    self.pending = Some(self.snapshot(&symbol)?);
                }
            }
            return Ok(Some(Received {
                local,
                symbol,
                text,
            }));
        }
    }
}

/// A handle on a websocket's TCP socket, plain or TLS (to shut it down from another thread).
fn socket_of(ws: &WebSocket<MaybeTlsStream<TcpStream>>) -> Option<TcpStream> {
    match ws.get_ref() {
        MaybeTlsStream::Plain(s) => s.try_clone().ok(),
        MaybeTlsStream::Rustls(s) => s.sock.try_clone().ok(),
        _ => None,
    }
}

/// The symbol of a combined-stream frame, from its `"stream":"btcusdt@..."`.
fn stream_symbol(text: &str) -> Option<String> {
    let rest = &text[text.find("\"stream\":\"")? + 10..];
    Some(rest[..rest.find('@')?].to_ascii_lowercase())
}

/// A venue's feed across connections: with `reconnect`, a dropped or closed connection
/// (Binance closes each after 24 hours) is opened again with backoff (0.5 s doubling to 30 s),
/// and with it come new snapshots, which resync the books; without, the feed ends with the
/// first connection. The first connection is made by [`BinanceFeed::open`], so a feed that
/// cannot be reached at all is an error at once.
pub struct BinanceFeed {
    config: BinanceConfig,
    reconnect: bool,
    conn: Option<BinanceConnection>,
    connections: u64,
    gaps_before: u64,
    /// A live feed's stop flag and socket slot.
    shared: Option<Arc<FeedShared>>,
}

impl BinanceFeed {
    /// Opens the first connection.
    pub fn open(config: &BinanceConfig, reconnect: bool) -> Result<Self> {
        Ok(BinanceFeed {
            conn: Some(BinanceConnection::connect(config)?),
            config: config.clone(),
            reconnect,
            connections: 1,
            gaps_before: 0,
            shared: None,
        })
    }

    fn stopped(&self) -> bool {
        self.shared
            .as_ref()
            .is_some_and(|s| s.stop.load(Ordering::Relaxed))
    }

    /// Puts the open connection's socket where [`LiveFeed`]'s drop can shut it down, and
    /// counts the connection.
    fn publish_socket(&self) {
        if let (Some(sh), Some(c)) = (&self.shared, &self.conn) {
            if let Ok(mut slot) = sh.socket.lock() {
                *slot = c.socket();
            }
            // Counted on connecting, not at the connection's first message.
            sh.count(|k| k.connections = self.connections);
        }
    }

    /// Connections made so far.
    pub fn connections(&self) -> u64 {
        self.connections
    }

    /// Breaks in the update ids so far, over every connection.
    pub fn gaps(&self) -> u64 {
        self.gaps_before + self.conn.as_ref().map_or(0, BinanceConnection::gaps)
    }

    /// The next message of any connection; `None` once the feed has ended.
    pub fn next_message(&mut self) -> Result<Option<Received>> {
        let mut backoff = Duration::from_millis(500);
        loop {
            if self.stopped() {
                return Ok(None);
            }
            let Some(conn) = &mut self.conn else {
                match BinanceConnection::connect(&self.config) {
                    Ok(c) => {
                        self.conn = Some(c);
                        self.connections += 1;
                        self.publish_socket();
                        backoff = Duration::from_millis(500);
                    }
                    Err(e) => {
                        eprintln!("flowsense: the Binance feed: {e}; again in {backoff:?}");
                        std::thread::sleep(backoff);
                        backoff = (backoff * 2).min(Duration::from_secs(30));
                    }
                }
                continue;
            };
            match conn.next_message() {
                Ok(Some(m)) => return Ok(Some(m)),
                end => {
                    self.gaps_before += conn.gaps();
                    self.conn = None;
                    if !self.reconnect {
                        return end;
                    }
                    std::thread::sleep(Duration::from_millis(500));
                }
            }
        }
    }
}

/// When a recording stops.
#[derive(Clone, Debug, Default)]
pub struct RecordOptions {
    /// The folder: files go to `OUT/<spot|usdm|cm>/<symbol>_<YYYYMMDD>.gz`.
    pub out: PathBuf,
    /// Stop after this many stream messages (snapshots not counted).
    pub max_messages: Option<u64>,
    /// Stop after this long.
    pub duration: Option<Duration>,
    /// Reconnect (with backoff, and a new snapshot) when the connection drops or the server
    /// closes it (Binance closes every connection after 24 hours); otherwise stop.
    pub reconnect: bool,
}

/// What a recording wrote.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RecordReport {
    /// Stream messages written.
    pub messages: u64,
    /// Snapshots written.
    pub snapshots: u64,
    /// Connections made (1 without a drop).
    pub connections: u64,
    /// Breaks in the depth update ids, each followed by a new snapshot in the recording.
    pub gaps: u64,
    /// The files written to.
    pub files: Vec<PathBuf>,
}

/// Today's open file of each symbol (or feed), flushed each second.
struct Files {
    dir: PathBuf,
    open: BTreeMap<String, (i64, GzEncoder<BufWriter<File>>)>,
    all: Vec<PathBuf>,
    flushed: Instant,
}

impl Files {
    fn new(dir: PathBuf) -> Result<Self> {
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        Ok(Files {
            dir,
            open: BTreeMap::new(),
            all: Vec::new(),
            flushed: Instant::now(),
        })
    }

    /// Writes one capture line (`<local ns> <json>`) to `key`'s file of `local`'s day; every
    /// file is flushed once a second has passed since the last flush, so a killed recorder
    /// loses at most that.
    fn append(&mut self, key: &str, local: UnixNanos, line: &str) -> Result<()> {
        let w = self.writer(key, local)?;
        writeln!(w, "{line}").map_err(|e| Error::io(&self.dir, e))?;
        if self.flushed.elapsed() >= Duration::from_secs(1) {
            self.flush()?;
            self.flushed = Instant::now();
        }
        Ok(())
    }

    fn writer(
        &mut self,
        symbol: &str,
        local: UnixNanos,
    ) -> Result<&mut GzEncoder<BufWriter<File>>> {
        let day = local.day();
        if self.open.get(symbol).is_some_and(|(d, _)| *d != day)
            && let Some((_, w)) = self.open.remove(symbol)
        {
            // A new UTC day: the day's file is complete (consecutive days read as one stream).
            w.finish()
                .and_then(|mut b| b.flush())
                .map_err(|e| Error::io(&self.dir, e))?;
        }
        if !self.open.contains_key(symbol) {
            let date = local.date_string().replace('-', "");
            let path = self.dir.join(format!("{symbol}_{date}.gz"));
            // Appending adds a gzip member: a restarted recorder continues the day's file.
            let f = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .map_err(|e| Error::io(&path, e))?;
            if !self.all.contains(&path) {
                self.all.push(path);
            }
            self.open.insert(
                symbol.to_string(),
                (
                    day,
                    GzEncoder::new(BufWriter::new(f), Compression::default()),
                ),
            );
        }
        Ok(&mut self.open.get_mut(symbol).expect("just opened").1)
    }

    fn flush(&mut self) -> Result<()> {
        for (_, w) in self.open.values_mut() {
            w.flush().map_err(|e| Error::io(&self.dir, e))?;
        }
        Ok(())
    }

    fn finish(self) -> Result<Vec<PathBuf>> {
        for (_, (_, w)) in self.open {
            w.finish()
                .and_then(|mut b| b.flush())
                .map_err(|e| Error::io(&self.dir, e))?;
        }
        Ok(self.all)
    }
}

/// Records `config`'s streams into `opts.out` until a stop condition of `opts` (or, without
/// one and with `reconnect`, until the process is killed; files are flushed each second, so a
/// killed recorder loses at most the last second).
pub fn record(config: &BinanceConfig, opts: &RecordOptions) -> Result<RecordReport> {
    let mut files = Files::new(opts.out.join(config.venue.folder()))?;
    let mut report = RecordReport::default();
    let started = Instant::now();
    let done = |r: &RecordReport| {
        opts.max_messages.is_some_and(|n| r.messages >= n)
            || opts.duration.is_some_and(|d| started.elapsed() >= d)
    };
    let mut feed = BinanceFeed::open(config, opts.reconnect)?;
    while !done(&report) {
        let next = feed.next_message();
        report.connections = feed.connections();
        report.gaps = feed.gaps();
        let Some(m) = next? else {
            break;
        };
        if m.symbol.is_empty() {
            continue;
        }
        let snapshot = m.text.starts_with("{\"lastUpdateId\"");
        files.append(&m.symbol, m.local, &format!("{} {}", m.local.0, m.text))?;
        if snapshot {
            report.snapshots += 1;
        } else {
            report.messages += 1;
        }
    }
    report.files = files.finish()?;
    Ok(report)
}

/// How a live feed runs.
#[derive(Clone, Debug)]
pub struct LiveOptions {
    /// Reconnect with backoff (and new snapshots) when the connection drops or the server
    /// closes it; otherwise the feed ends with its first connection.
    pub reconnect: bool,
    /// Also write every message as it arrives under this folder, as `flowsense record` does
    /// (`<folder>/<spot|usdm|cm>/<symbol>_<YYYYMMDD>.gz`), so the session can be ingested and
    /// backtested.
    pub record: Option<PathBuf>,
    /// Decoded records that may wait for the graph. When the graph falls this far behind, the
    /// feed thread waits for it (counted in [`LiveCounts::waits`]): nothing is dropped, and
    /// the socket's buffers hold the rest back.
    pub capacity: usize,
}

impl Default for LiveOptions {
    fn default() -> Self {
        LiveOptions {
            reconnect: true,
            record: None,
            capacity: 1 << 16,
        }
    }
}

/// What a live feed has done so far.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LiveCounts {
    /// Stream messages received (snapshots not counted).
    pub messages: u64,
    /// Depth snapshots fetched.
    pub snapshots: u64,
    /// Connections made (1 without a drop).
    pub connections: u64,
    /// Breaks in the depth update ids, each answered with a new snapshot.
    pub gaps: u64,
    /// Market events decoded.
    pub events: u64,
    /// Messages (or parts of them) refused, with their reasons, as dead letters.
    pub dead_letters: u64,
    /// Times the graph's queue was full and the feed waited for it.
    pub waits: u64,
}

/// What [`LiveFeed::try_next`] found.
#[derive(Debug)]
pub enum Polled {
    /// The next decoded record.
    Record(Record),
    /// Nothing has arrived yet.
    Empty,
    /// The feed has ended (see [`LiveFeed::error`] for why, if it failed).
    Ended,
}

/// What the feed thread and its owner share.
#[derive(Default)]
struct FeedShared {
    stop: AtomicBool,
    /// The open connection's socket, shut down to stop a thread waiting on it.
    socket: Mutex<Option<TcpStream>>,
    counts: Mutex<LiveCounts>,
    error: Mutex<Option<String>>,
    /// The thread to wake when records arrive (the timely worker that polls the feed).
    waker: Mutex<Option<std::thread::Thread>>,
}

impl FeedShared {
    fn count(&self, f: impl FnOnce(&mut LiveCounts)) {
        if let Ok(mut c) = self.counts.lock() {
            f(&mut c);
        }
    }

    fn fail(&self, why: String) {
        if !self.stop.load(Ordering::Relaxed)
            && let Ok(mut err) = self.error.lock()
        {
            *err = Some(why);
        }
    }
}

/// The feed thread's end of the queue: counts what it sends and wakes the consumer; dropped,
/// it ends the feed (and wakes the consumer to see it).
struct FeedOut {
    tx: Option<std::sync::mpsc::SyncSender<Record>>,
    sh: Arc<FeedShared>,
}

impl FeedOut {
    /// Queues a record, waiting while the queue is full; false once the consumer has gone.
    fn send(&self, r: Record) -> bool {
        let counted = match &r {
            Record::Event(_) => Some(true),
            Record::Dead(_) => Some(false),
            _ => None,
        };
        let Some(tx) = &self.tx else { return false };
        let sent = match tx.try_send(r) {
            Ok(()) => true,
            Err(std::sync::mpsc::TrySendError::Full(r)) => {
                self.sh.count(|c| c.waits += 1);
                tx.send(r).is_ok()
            }
            Err(std::sync::mpsc::TrySendError::Disconnected(_)) => false,
        };
        match counted {
            Some(true) => self.sh.count(|c| c.events += 1),
            Some(false) => self.sh.count(|c| c.dead_letters += 1),
            None => {}
        }
        sent
    }

    /// Wakes the consumer's thread.
    fn wake(&self) {
        if let Ok(w) = self.sh.waker.lock()
            && let Some(t) = w.as_ref()
        {
            t.unpark();
        }
    }
}

impl Drop for FeedOut {
    fn drop(&mut self) {
        // Hang up first, so the woken consumer sees the end.
        self.tx = None;
        self.wake();
    }
}

/// A live venue feed decoded on its own thread: the thread reads the connection (reconnecting
/// when asked), decodes each message as it arrives with the capture reader's parser (one
/// [`crate::binance::BinanceReader`] per symbol, so the sync rule, gaps and dead letters are
/// the files' own), optionally records it, and queues the records for a consumer that polls
/// without blocking ([`LiveFeed::try_next`], for a timely worker) or waits (the iterator).
///
/// A message for a symbol that was not subscribed is a dead letter (`unknown_symbol`), as is
/// one that is not JSON or not a message the reader knows; the feed goes on. Dropping the feed
/// stops the thread: its socket is shut down and the files being recorded are finished.
pub struct LiveFeed {
    rx: std::sync::mpsc::Receiver<Record>,
    shared: Arc<FeedShared>,
    ended: bool,
}

impl LiveFeed {
    /// Connects to `config`'s streams (an unreachable venue is an error at once) and starts
    /// the feed thread.
    pub fn binance(config: &BinanceConfig, opts: &LiveOptions) -> Result<LiveFeed> {
        let shared = Arc::new(FeedShared::default());
        let mut feed = BinanceFeed::open(config, opts.reconnect)?;
        feed.shared = Some(shared.clone());
        feed.publish_socket();
        let mut files = match &opts.record {
            Some(out) => Some(Files::new(out.join(config.venue.folder()))?),
            None => None,
        };
        let futures = config.venue != BinanceVenue::Spot;
        let name = |sym: &str| format!("live-{}-{sym}", config.venue.folder());
        let mut decoders: HashMap<String, crate::binance::BinanceReader> = config
            .symbols
            .iter()
            .map(|s| {
                let sym = s.to_ascii_lowercase();
                let r = crate::binance::BinanceReader::live(
                    &name(&sym),
                    &sym,
                    futures,
                    Default::default(),
                );
                (sym, r)
            })
            .collect();
        // Messages that name no subscribed stream are read by a reader of no symbol, which
        // tells what is wrong with them.
        let mut stray =
            crate::binance::BinanceReader::live(&name("stray"), "", futures, Default::default());
        let (tx, rx) = std::sync::mpsc::sync_channel::<Record>(opts.capacity.max(1));
        let sh = shared.clone();
        let stray_source = name("stray");
        std::thread::Builder::new()
            .name("flowsense-binance-feed".into())
            .spawn(move || {
                let mut received = 0u64;
                let out = FeedOut {
                    tx: Some(tx),
                    sh: sh.clone(),
                };
                let send = |r: Record| out.send(r);
                let wake = || out.wake();
                let mut open = true;
                while open && !sh.stop.load(Ordering::Relaxed) {
                    let next = feed.next_message();
                    sh.count(|c| {
                        c.connections = feed.connections();
                        c.gaps = feed.gaps();
                    });
                    let m = match next {
                        Ok(Some(m)) => m,
                        Ok(None) => break,
                        Err(e) => {
                            if !sh.stop.load(Ordering::Relaxed)
                                && let Ok(mut err) = sh.error.lock()
                            {
                                *err = Some(e.to_string());
                            }
                            break;
                        }
                    };
                    let snapshot = m.text.starts_with("{\"lastUpdateId\"");
                    sh.count(|c| {
                        if snapshot {
                            c.snapshots += 1;
                        } else {
                            c.messages += 1;
                        }
                    });
                    received += 1;
                    let line = format!("{} {}", m.local.0, m.text);
                    if let Some(f) = &mut files
                        && !m.symbol.is_empty()
                        && decoders.contains_key(&m.symbol)
                        && let Err(e) = f.append(&m.symbol, m.local, &line)
                    {
                        sh.fail(format!("recording: {e}"));
                        break;
                    }
                    if let Some(d) = decoders.get_mut(&m.symbol) {
                        for r in d.push_line(&line) {
                            open &= send(r);
                        }
                    } else if m.symbol.is_empty() {
                        for r in stray.push_line(&line) {
                            open &= send(r);
                        }
                    } else {
                        open &= send(Record::Dead(DeadLetter {
                            source: stray_source.clone(),
                            position: format!("message {received}"),
                            reason: DeadLetterReason::UnknownSymbol,
                            detail: format!("stream of {:?}, which was not subscribed", m.symbol),
                            raw: line,
                        }));
                    }
                    wake();
                }
                for d in decoders.values_mut() {
                    for r in d.finish() {
                        if !send(r) {
                            break;
                        }
                    }
                }
                if let Some(f) = files
                    && let Err(e) = f.finish()
                {
                    sh.fail(format!("recording: {e}"));
                }
                drop(out);
            })
            .map_err(|e| Error::io("the feed thread", e))?;
        Ok(LiveFeed {
            rx,
            shared,
            ended: false,
        })
    }

    /// The next record if one has arrived, without waiting.
    pub fn try_next(&mut self) -> Polled {
        if self.ended {
            return Polled::Ended;
        }
        match self.rx.try_recv() {
            Ok(r) => Polled::Record(r),
            Err(std::sync::mpsc::TryRecvError::Empty) => Polled::Empty,
            Err(std::sync::mpsc::TryRecvError::Disconnected) => {
                self.ended = true;
                Polled::Ended
            }
        }
    }

    /// Wakes `thread` (with [`std::thread::Thread::unpark`]) whenever records arrive, so a
    /// worker that parks between polls sees them at once.
    pub fn wake(&self, thread: std::thread::Thread) {
        if let Ok(mut w) = self.shared.waker.lock() {
            *w = Some(thread);
        }
    }

    /// What the feed has done so far.
    pub fn counts(&self) -> LiveCounts {
        self.shared
            .counts
            .lock()
            .map(|c| c.clone())
            .unwrap_or_default()
    }

    /// Why the feed ended, if it failed (a connection lost without reconnecting ends it
    /// without an error).
    pub fn error(&self) -> Option<String> {
        self.shared.error.lock().ok().and_then(|e| e.clone())
    }
}

impl Iterator for LiveFeed {
    type Item = Record;

    /// Waits for the next record; `None` once the feed has ended.
    fn next(&mut self) -> Option<Record> {
        if self.ended {
            return None;
        }
        let r = self.rx.recv().ok();
        self.ended = r.is_none();
        r
    }
}

impl Drop for LiveFeed {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        if let Ok(mut s) = self.shared.socket.lock()
            && let Some(s) = s.take()
        {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
    }
}

/// A stock data venue's stream: Alpaca's (`iex` or `sip` feed) or Polygon's.
#[derive(Clone)]
pub struct StockConfig {
    /// Whose stream.
    pub vendor: crate::stocks::Vendor,
    /// Alpaca's feed, `iex` or `sip` (unused for Polygon).
    pub feed: String,
    /// Symbols (`AAPL`).
    pub symbols: Vec<String>,
    /// Streams: `trades`, `quotes`, `bars`; empty means trades and quotes (bars count the
    /// trades' volume a second time, so they are streamed only when asked for).
    pub streams: Vec<String>,
    /// The websocket base (default: the vendor's).
    pub ws_url: Option<String>,
    /// The API key (Alpaca's key id; Polygon's key).
    pub key: String,
    /// Alpaca's secret key (unused for Polygon).
    pub secret: String,
}

impl std::fmt::Debug for StockConfig {
    /// The keys are never printed.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StockConfig")
            .field("vendor", &self.vendor)
            .field("feed", &self.feed)
            .field("symbols", &self.symbols)
            .field("streams", &self.streams)
            .field("ws_url", &self.ws_url)
            .finish_non_exhaustive()
    }
}

/// The stream kinds a stock feed can ask for.
pub const STOCK_STREAMS: [&str; 3] = ["trades", "quotes", "bars"];

impl StockConfig {
    /// The credentials from the environment: Alpaca's `APCA_API_KEY_ID` and
    /// `APCA_API_SECRET_KEY`, Polygon's `POLYGON_API_KEY`.
    ///
    /// ```
    /// use flowsense_sources::live::StockConfig;
    /// use flowsense_sources::stocks::Vendor;
    /// // SAFETY: a doctest's own process, one thread.
    /// unsafe { std::env::remove_var("POLYGON_API_KEY") };
    /// let e = StockConfig::credentials(Vendor::Polygon).unwrap_err().to_string();
    /// assert!(e.contains("POLYGON_API_KEY"));
    /// ```
    pub fn credentials(vendor: crate::stocks::Vendor) -> Result<(String, String)> {
        let var = |name: &str| {
            std::env::var(name).map_err(|_| {
                Error::format(
                    PathBuf::from(name),
                    "is not set: the feed's credentials come from the environment",
                )
            })
        };
        match vendor {
            crate::stocks::Vendor::Alpaca => {
                Ok((var("APCA_API_KEY_ID")?, var("APCA_API_SECRET_KEY")?))
            }
            crate::stocks::Vendor::Polygon => Ok((var("POLYGON_API_KEY")?, String::new())),
        }
    }

    /// The stream's URL.
    ///
    /// ```
    /// use flowsense_sources::live::StockConfig;
    /// use flowsense_sources::stocks::Vendor;
    /// let c = StockConfig { vendor: Vendor::Alpaca, feed: "iex".into(), symbols: vec![],
    ///     streams: vec![], ws_url: None, key: String::new(), secret: String::new() };
    /// assert_eq!(c.url(), "wss://stream.data.alpaca.markets/v2/iex");
    /// ```
    pub fn url(&self) -> String {
        match self.vendor {
            crate::stocks::Vendor::Alpaca => format!(
                "{}/v2/{}",
                self.ws_url
                    .as_deref()
                    .unwrap_or("wss://stream.data.alpaca.markets")
                    .trim_end_matches('/'),
                self.feed
            ),
            crate::stocks::Vendor::Polygon => format!(
                "{}/stocks",
                self.ws_url
                    .as_deref()
                    .unwrap_or("wss://socket.polygon.io")
                    .trim_end_matches('/')
            ),
        }
    }

    fn wants(&self, kind: &str) -> bool {
        if self.streams.is_empty() {
            return kind != "bars";
        }
        self.streams.iter().any(|s| s == kind)
    }

    fn auth_message(&self) -> String {
        match self.vendor {
            crate::stocks::Vendor::Alpaca => serde_json::json!({
                "action": "auth", "key": self.key, "secret": self.secret
            })
            .to_string(),
            crate::stocks::Vendor::Polygon => {
                serde_json::json!({"action": "auth", "params": self.key}).to_string()
            }
        }
    }

    fn subscribe_message(&self) -> String {
        let syms: Vec<String> = self
            .symbols
            .iter()
            .map(|s| s.to_ascii_uppercase())
            .collect();
        match self.vendor {
            crate::stocks::Vendor::Alpaca => {
                let mut m = serde_json::json!({"action": "subscribe"});
                for (kind, key) in [("trades", "trades"), ("quotes", "quotes"), ("bars", "bars")] {
                    if self.wants(kind) {
                        m[key] = serde_json::json!(syms);
                    }
                }
                m.to_string()
            }
            crate::stocks::Vendor::Polygon => {
                let mut params = Vec::new();
                for (kind, prefix) in [("trades", "T"), ("quotes", "Q"), ("bars", "AM")] {
                    if self.wants(kind) {
                        params.extend(syms.iter().map(|s| format!("{prefix}.{s}")));
                    }
                }
                serde_json::json!({"action": "subscribe", "params": params.join(",")}).to_string()
            }
        }
    }

    /// Connects, authenticates and subscribes. A refused authentication is an error with the
    /// vendor's words (never the keys).
    fn connect(&self) -> Result<(WebSocket<MaybeTlsStream<TcpStream>>, Option<TcpStream>)> {
        let url = self.url();
        let (mut ws, _) = tungstenite::connect(&url).map_err(|e| net(&url, e))?;
        let socket = socket_of(&ws);
        ws.send(Message::text(self.auth_message()))
            .map_err(|e| net(&url, e))?;
        // Until the answer to the authentication: the greeting comes first.
        loop {
            let text = match ws.read().map_err(|e| net(&url, e))? {
                Message::Text(t) => t.to_string(),
                Message::Close(_) => {
                    return Err(net(
                        &url,
                        "the server closed the connection before authenticating",
                    ));
                }
                _ => continue,
            };
            let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
            let items: Vec<serde_json::Value> = match v {
                serde_json::Value::Array(a) => a,
                other => vec![other],
            };
            let mut done = false;
            for m in &items {
                let (kind, word) = match self.vendor {
                    crate::stocks::Vendor::Alpaca => (
                        m.get("T").and_then(|x| x.as_str()).unwrap_or_default(),
                        m.get("msg").and_then(|x| x.as_str()).unwrap_or_default(),
                    ),
                    crate::stocks::Vendor::Polygon => (
                        m.get("ev").and_then(|x| x.as_str()).unwrap_or_default(),
                        m.get("status").and_then(|x| x.as_str()).unwrap_or_default(),
                    ),
                };
                match (self.vendor, kind, word) {
                    (crate::stocks::Vendor::Alpaca, "success", "authenticated")
                    | (crate::stocks::Vendor::Polygon, "status", "auth_success") => done = true,
                    (crate::stocks::Vendor::Alpaca, "error", _)
                    | (crate::stocks::Vendor::Polygon, "status", "auth_failed" | "error") => {
                        return Err(net(&url, format!("authentication refused: {m}")));
                    }
                    _ => {}
                }
            }
            if done {
                break;
            }
        }
        ws.send(Message::text(self.subscribe_message()))
            .map_err(|e| net(&url, e))?;
        Ok((ws, socket))
    }
}

impl LiveFeed {
    /// Connects to a stock venue (authenticating with `config`'s keys and subscribing to its
    /// symbols' streams) and starts the feed thread, which decodes each frame with
    /// [`crate::stocks::StockDecoder`] as it arrives. A dropped connection is reopened with
    /// backoff when `opts.reconnect`; recordings go to `<record>/<alpaca|polygon>/<feed>_<date>.gz`.
    pub fn stocks(config: &StockConfig, opts: &LiveOptions) -> Result<LiveFeed> {
        let shared = Arc::new(FeedShared::default());
        let (ws, socket) = config.connect()?;
        if let Ok(mut slot) = shared.socket.lock() {
            *slot = socket;
        }
        shared.count(|c| c.connections = 1);
        let folder = match config.vendor {
            crate::stocks::Vendor::Alpaca => "alpaca",
            crate::stocks::Vendor::Polygon => "polygon",
        };
        let file_key = match config.vendor {
            crate::stocks::Vendor::Alpaca => config.feed.clone(),
            crate::stocks::Vendor::Polygon => "stocks".to_string(),
        };
        let mut files = match &opts.record {
            Some(out) => Some(Files::new(out.join(folder))?),
            None => None,
        };
        let mut decoder =
            crate::stocks::StockDecoder::new(config.vendor, &format!("live-{folder}"))
                .subscribed(&config.symbols);
        let (tx, rx) = std::sync::mpsc::sync_channel::<Record>(opts.capacity.max(1));
        let (sh, config, reconnect) = (shared.clone(), config.clone(), opts.reconnect);
        std::thread::Builder::new()
            .name("flowsense-stock-feed".into())
            .spawn(move || {
                let out = FeedOut {
                    tx: Some(tx),
                    sh: sh.clone(),
                };
                let mut ws = Some(ws);
                let mut made = Vec::new();
                let mut backoff = Duration::from_millis(500);
                'feed: while !sh.stop.load(Ordering::Relaxed) {
                    let Some(conn) = ws.as_mut() else {
                        if !reconnect {
                            break;
                        }
                        std::thread::sleep(backoff);
                        backoff = (backoff * 2).min(Duration::from_secs(30));
                        match config.connect() {
                            Ok((c, socket)) => {
                                if let Ok(mut slot) = sh.socket.lock() {
                                    *slot = socket;
                                }
                                sh.count(|k| k.connections += 1);
                                ws = Some(c);
                                backoff = Duration::from_millis(500);
                            }
                            Err(e) => {
                                eprintln!("flowsense: the stock feed: {e}; again in {backoff:?}")
                            }
                        }
                        continue;
                    };
                    let text = match conn.read() {
                        Ok(Message::Text(t)) => t.to_string(),
                        Ok(Message::Close(_))
                        | Err(
                            tungstenite::Error::ConnectionClosed
                            | tungstenite::Error::AlreadyClosed,
                        ) => {
                            ws = None;
                            continue;
                        }
                        Ok(_) => continue,
                        Err(e) => {
                            if !reconnect {
                                sh.fail(e.to_string());
                            }
                            ws = None;
                            continue;
                        }
                    };
                    let local = wall_now();
                    sh.count(|c| c.messages += 1);
                    if let Some(f) = &mut files
                        && let Err(e) = f.append(&file_key, local, &format!("{} {text}", local.0))
                    {
                        sh.fail(format!("recording: {e}"));
                        break;
                    }
                    decoder.push(Some(local), &text, &mut made);
                    for r in made.drain(..) {
                        if !out.send(r) {
                            break 'feed;
                        }
                    }
                    out.wake();
                }
                if let Some(f) = files
                    && let Err(e) = f.finish()
                {
                    sh.fail(format!("recording: {e}"));
                }
                drop(out);
            })
            .map_err(|e| Error::io("the feed thread", e))?;
        Ok(LiveFeed {
            rx,
            shared,
            ended: false,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_name_their_symbol() {
        assert_eq!(
            stream_symbol(r#"{"stream":"btcusdt@depth@0ms","data":{}}"#).as_deref(),
            Some("btcusdt")
        );
        assert_eq!(stream_symbol(r#"{"result":null,"id":1}"#), None);
    }
}
