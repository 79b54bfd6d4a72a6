//! The job spec: what a dataflow job reads, which features it computes, and where results go.
//!
//! A job is written in TOML and read with [`JobSpec::from_toml`]. Every table rejects unknown
//! keys, so a typo is an error rather than a silently ignored setting. The same spec drives a
//! one-shot local run (`flowsense run JOB.toml`), a paced replay, and (later) a job installed in a
//! long-running cluster worker.
//!
//! ```
//! use flowsense_core::job::{JobSpec, Source};
//! let spec = JobSpec::from_toml(r#"
//!     name = "ofi-demo"
//!     [source.synthetic]
//!     symbols = 2
//!     events_per_day = 10000
//!     [features]
//!     buckets = ["1s", "10s"]
//! "#).unwrap();
//! assert_eq!(spec.name, "ofi-demo");
//! assert!(matches!(spec.source, Source::Synthetic(_)));
//! assert_eq!(spec.features.buckets[1].to_string(), "10s");
//! assert!(JobSpec::from_toml("name = \"x\"\n[source.synthetic]\nsymbol = 2").is_err()); // typo
//! ```

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use crate::span::Span;
use crate::strategy::{ExecutionSpec, RiskSpec, StrategySpec};
use crate::{Error, Result, UnixNanos};

/// A whole job.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct JobSpec {
    /// The job's name: it labels the job's rows (`job` column) and names its output files, so
    /// re-running a job replaces its earlier output. Letters, digits, `-`, `_` and `.`.
    pub name: String,
    /// Where the events come from.
    pub source: Source,
    /// Pace the source as a live feed would arrive; absent means batch, as fast as possible.
    #[serde(default)]
    pub replay: Option<Replay>,
    /// Only these symbols (as the lake names them, e.g. `BTCUSDT-PERP`); empty means all.
    #[serde(default)]
    pub symbols: Vec<String>,
    /// Width of a timely epoch: event times are batched into epochs of this width (default 1 ms).
    #[serde(default = "default_epoch")]
    pub epoch: Span,
    /// The features and their parameters.
    #[serde(default)]
    pub features: FeatureSpec,
    /// Where results go.
    #[serde(default)]
    pub sinks: SinkSpec,
    /// A strategy trading on the features (absent: the job computes features only).
    #[serde(default)]
    pub strategy: Option<StrategySpec>,
    /// Risk limits of the strategy.
    #[serde(default)]
    pub risk: RiskSpec,
    /// The simulated exchange the strategy trades against.
    #[serde(default)]
    pub execution: ExecutionSpec,
    /// Where the strategy's orders go on a live feed (absent: the simulated exchange of
    /// `[execution]`, paper trading).
    #[serde(default)]
    pub broker: Option<BrokerSpec>,
}

fn default_epoch() -> Span {
    Span::from_millis(1)
}

/// The source of a job's events: one of `[source.lake]`, `[source.capture]` or `[source.synthetic]`.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Source {
    /// Book events, depth updates and trades already in the lake.
    Lake(LakeSource),
    /// Raw capture files (Binance, LOBSTER, DBN), read as `flowsense ingest` reads them.
    Capture(CaptureSource),
    /// The seeded synthetic market, generated on the fly.
    Synthetic(SyntheticSource),
    /// A venue's live feed: the job runs until it is stopped or the feed ends.
    Live(LiveSource),
}

/// Reading from the lake.
#[derive(Clone, Debug, PartialEq, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LakeSource {
    /// The lake URL; absent means the run's `--lake` (then `$FLOWSENSE_LAKE`, then `./lake`).
    #[serde(default)]
    pub url: Option<String>,
    /// First instant read, inclusive: `YYYY-MM-DD` or `YYYY-MM-DDTHH:MM:SS[.fff]` (UTC).
    #[serde(default)]
    pub from: Option<String>,
    /// Last instant, exclusive, in the same forms. A bare date means that day's midnight.
    #[serde(default)]
    pub to: Option<String>,
}

impl LakeSource {
    /// The `[from, to)` range in nanoseconds; open ends are `None`.
    pub fn range(&self) -> Result<(Option<UnixNanos>, Option<UnixNanos>)> {
        let parse = |s: &Option<String>| s.as_deref().map(parse_instant).transpose();
        Ok((parse(&self.from)?, parse(&self.to)?))
    }
}

/// Reading raw capture files.
#[derive(Clone, Debug, PartialEq, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CaptureSource {
    /// Files or folders, relative to the working directory.
    pub paths: Vec<String>,
    /// `auto`, `binance`, `lobster` or `dbn` (default `auto`).
    #[serde(default = "default_format")]
    pub format: String,
}

fn default_format() -> String {
    "auto".into()
}

/// Generating the synthetic market.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SyntheticSource {
    /// Number of symbols.
    #[serde(default = "default_symbols")]
    pub symbols: usize,
    /// Number of days.
    #[serde(default = "default_days")]
    pub days: usize,
    /// The seed: the same seed gives the same market.
    #[serde(default = "default_seed")]
    pub seed: u64,
    /// Order messages per symbol-day (approximately).
    #[serde(default = "default_events_per_day")]
    pub events_per_day: u64,
}

fn default_symbols() -> usize {
    3
}
fn default_days() -> usize {
    1
}
fn default_seed() -> u64 {
    42
}
fn default_events_per_day() -> u64 {
    200_000
}

impl Default for SyntheticSource {
    fn default() -> Self {
        SyntheticSource {
            symbols: default_symbols(),
            days: default_days(),
            seed: default_seed(),
            events_per_day: default_events_per_day(),
        }
    }
}

/// A live feed: `[source.live]`.
///
/// Event time comes from the messages (the exchange's stamps); each event also keeps its
/// receive time, the second clock, as `local_ts`. When the market goes quiet, the input's
/// time still moves: `grace` after the last event's time plus the wall time since it
/// arrived, so a quiet bucket closes `grace` after its end. That is the one place wall time
/// enters a job, and how often it did is in the run's report.
///
/// ```
/// use flowsense_core::job::{JobSpec, Source};
/// let spec = JobSpec::from_toml(r#"
///     name = "live"
///     [source.live]
///     exchange = "binance-usdm"
///     symbols = ["btcusdt", "ethusdt"]
/// "#).unwrap();
/// let Source::Live(l) = &spec.source else { panic!() };
/// assert_eq!(l.grace.to_string(), "1s");
/// assert!(l.reconnect && l.streams.is_empty());
/// assert!(JobSpec::from_toml("name = \"x\"\n[source.live]\nexchange = \"kraken\"\nsymbols = [\"a\"]").is_err());
/// ```
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LiveSource {
    /// `binance-spot`, `binance-usdm`, `binance-coinm`, `alpaca-iex`, `alpaca-sip` or `polygon`
    /// (Alpaca's keys come from `APCA_API_KEY_ID` and `APCA_API_SECRET_KEY`, Polygon's from
    /// `POLYGON_API_KEY`: never from the spec, which the service stores and serves).
    pub exchange: String,
    /// Symbols as the venue names them (`btcusdt`).
    pub symbols: Vec<String>,
    /// Stream kinds. Binance: `depth`, `trade`, `aggTrade`, `bookTicker` (empty: depth, trade
    /// and bookTicker). Alpaca and Polygon: `trades`, `quotes`, `bars` (empty: trades and
    /// quotes; bars and trades together would count the same volume twice, and are refused).
    #[serde(default)]
    pub streams: Vec<String>,
    /// How long after a bucket's end a quiet market's bucket closes on the live clock.
    #[serde(default = "default_grace")]
    pub grace: Span,
    /// Reconnect with backoff (and a new snapshot) when the connection drops; without, the
    /// job ends with its connection.
    #[serde(default = "default_true")]
    pub reconnect: bool,
    /// Also record what arrives under this folder, as `flowsense record` does, so the session
    /// can be ingested and backtested.
    #[serde(default)]
    pub record: Option<String>,
    /// The websocket base URL (default: the venue's), e.g. a local server.
    #[serde(default)]
    pub ws_url: Option<String>,
    /// The REST base URL for depth snapshots (default: the venue's).
    #[serde(default)]
    pub rest_url: Option<String>,
    /// Poll the feed without ever parking the worker between messages: the lowest
    /// tick-to-order latency (no thread wake-up on each message), at the cost of a core.
    #[serde(default)]
    pub busy_poll: bool,
}

/// The broker kinds `[broker] kind` takes.
pub const BROKER_KINDS: &[&str] = &["paper", "ibkr"];

/// `[broker]`: where a live trading job's orders go. `paper` is the simulated exchange of
/// `[execution]` fed by the live book (the default when the table is absent); `ibkr` is
/// Interactive Brokers through TWS or IB Gateway, with the login (paper or live account) done in
/// the Gateway, so the spec holds no secret.
///
/// ```
/// use flowsense_core::job::JobSpec;
/// let spec = JobSpec::from_toml(r#"
///     name = "x"
///     [source.live]
///     exchange = "alpaca-iex"
///     symbols = ["AAPL"]
///     [strategy]
///     bucket = "1s"
///     signal = "buy_volume - sell_volume"
///     entry = 1
///     [strategy.sizing]
///     method = "fixed"
///     size = 1
///     [broker]
///     kind = "ibkr"
///     port = 4002
///     account = "DU1234567"
///     [broker.contracts.AAPL]
///     exchange = "SMART"
///     primary_exchange = "NASDAQ"
/// "#).unwrap();
/// let b = spec.broker.unwrap();
/// assert_eq!((b.host.as_str(), b.port, b.client_id, b.pacing), ("127.0.0.1", 4002, 1, 50));
/// assert_eq!(b.contracts["AAPL"].sec_type, "STK");
/// ```
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BrokerSpec {
    /// `paper` or `ibkr`.
    pub kind: String,
    /// TWS or IB Gateway host.
    #[serde(default = "default_ib_host")]
    pub host: String,
    /// Its API port: 4002 is IB Gateway's paper port (4001 live; TWS: 7497 paper, 7496 live).
    #[serde(default = "default_ib_port")]
    pub port: u16,
    /// The API client id. Worker `w` of a job connects as `client_id + w`.
    #[serde(default = "default_client_id")]
    pub client_id: i32,
    /// The account orders go to; absent, the login's only account.
    #[serde(default)]
    pub account: Option<String>,
    /// Messages per second sent to TWS, orders and cancels included (IB's limit is 50).
    #[serde(default = "default_pacing")]
    pub pacing: u32,
    /// Reconnect attempts after a lost connection, on a Fibonacci backoff capped at 30 s
    /// (0: the job fails with its connection).
    #[serde(default = "default_reconnect_attempts")]
    pub reconnect_attempts: u32,
    /// The IB contract of each symbol; a symbol not listed is a stock (`STK`) on `SMART` in
    /// `USD` under its own name.
    #[serde(default)]
    pub contracts: BTreeMap<String, ContractSpec>,
}

/// How one symbol is named at Interactive Brokers.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ContractSpec {
    /// IB's symbol (default: the job's symbol).
    #[serde(default)]
    pub symbol: Option<String>,
    /// `STK`, `CRYPTO`, `FUT`, `CASH`...
    #[serde(default = "default_sec_type")]
    pub sec_type: String,
    /// Routing exchange (`SMART`, `PAXOS`, `CME`...).
    #[serde(default = "default_exchange")]
    pub exchange: String,
    /// Primary listing, to tell apart a symbol listed twice.
    #[serde(default)]
    pub primary_exchange: Option<String>,
    /// Currency.
    #[serde(default = "default_currency")]
    pub currency: String,
    /// IB's contract id, when known (it names the contract alone).
    #[serde(default)]
    pub con_id: Option<i32>,
}

impl Default for ContractSpec {
    fn default() -> Self {
        ContractSpec {
            symbol: None,
            sec_type: default_sec_type(),
            exchange: default_exchange(),
            primary_exchange: None,
            currency: default_currency(),
            con_id: None,
        }
    }
}

fn default_ib_host() -> String {
    "127.0.0.1".into()
}
fn default_ib_port() -> u16 {
    4002
}
fn default_client_id() -> i32 {
    1
}
fn default_pacing() -> u32 {
    50
}
fn default_reconnect_attempts() -> u32 {
    20
}
fn default_sec_type() -> String {
    "STK".into()
}
fn default_exchange() -> String {
    "SMART".into()
}
fn default_currency() -> String {
    "USD".into()
}

fn default_grace() -> Span {
    Span::from_millis(1000)
}

fn default_true() -> bool {
    true
}

/// The live venues `[source.live] exchange` takes.
pub const LIVE_EXCHANGES: [&str; 6] = [
    "binance-spot",
    "binance-usdm",
    "binance-coinm",
    "alpaca-iex",
    "alpaca-sip",
    "polygon",
];

/// The stream kinds `[source.live] streams` takes from Binance.
pub const LIVE_STREAMS: [&str; 4] = ["depth", "trade", "aggTrade", "bookTicker"];

/// The stream kinds `[source.live] streams` takes from Alpaca and Polygon.
pub const STOCK_STREAMS: [&str; 3] = ["trades", "quotes", "bars"];

/// Pacing for replay mode.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Replay {
    /// Multiple of real time: 1.0 is as the events happened, 60.0 plays an hour in a minute.
    pub speed: f64,
}

/// Which features, over which buckets, with which parameters.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct FeatureSpec {
    /// Bucket widths; each gives one row per symbol per bucket that holds at least one event.
    pub buckets: Vec<Span>,
    /// Also emit one row per event (`bucket = 'event'`).
    pub per_event: bool,
    /// Book depth for multi-level features (1 to 10).
    pub levels: usize,
    /// Volume per VPIN bucket, in size units; absent means 20 times the mean size of the
    /// symbol's first 100 trades, fixed from then on.
    pub vpin_bucket_volume: Option<f64>,
    /// VPIN averages over this many volume buckets.
    pub vpin_window: usize,
    /// Kyle's lambda regresses mid changes on signed volume over this many buckets.
    pub kyle_window: usize,
}

impl Default for FeatureSpec {
    fn default() -> Self {
        FeatureSpec {
            buckets: ["100ms", "1s", "10s", "60s"]
                .iter()
                .map(|s| s.parse().expect("static spans parse"))
                .collect(),
            per_event: false,
            levels: 10,
            vpin_bucket_volume: None,
            vpin_window: 50,
            kyle_window: 100,
        }
    }
}

/// Where a job's results go.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct SinkSpec {
    /// Write the `features` table into the lake (a job with a `[strategy]`: its orders, fills,
    /// equity, positions, risk events, run row and metrics).
    pub lake: bool,
    /// Print feature rows (a job with a `[strategy]`: its records) as JSON lines on stdout,
    /// for piping.
    pub stdout: bool,
    /// A trading job writes the records it has into the lake at least this often (wall
    /// time), so a crash loses no more. Absent: every 60 s for a live job; other jobs write
    /// in 64k-row files and at their end.
    pub flush: Option<Span>,
}

impl Default for SinkSpec {
    fn default() -> Self {
        SinkSpec {
            lake: true,
            stdout: false,
            flush: None,
        }
    }
}

impl JobSpec {
    /// Reads and checks a spec.
    pub fn from_toml(text: &str) -> Result<JobSpec> {
        let spec: JobSpec = toml::from_str(text).map_err(|e| Error::InvalidJob(e.to_string()))?;
        spec.validate()?;
        Ok(spec)
    }

    /// Reads a spec file.
    pub fn from_file(path: &std::path::Path) -> Result<JobSpec> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::InvalidJob(format!("cannot read {}: {e}", path.display())))?;
        JobSpec::from_toml(&text).map_err(|e| Error::InvalidJob(format!("{}: {e}", path.display())))
    }

    /// The broker of a job that trades for real (`[broker]` other than `paper`).
    pub fn live_broker(&self) -> Option<&BrokerSpec> {
        self.broker.as_ref().filter(|b| b.kind != "paper")
    }

    /// The spec as TOML.
    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("a job spec always serializes")
    }

    /// Checks what serde cannot.
    pub fn validate(&self) -> Result<()> {
        let bad = |why: String| Err(Error::InvalidJob(why));
        if self.name.is_empty()
            || !self
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        {
            return bad(format!(
                "name {:?}: use letters, digits, '-', '_' and '.'",
                self.name
            ));
        }
        if self.epoch.0 == 0 {
            return bad("epoch must be positive".into());
        }
        let f = &self.features;
        if f.buckets.is_empty() && !f.per_event {
            return bad("features: give at least one bucket or per_event = true".into());
        }
        if let Some(b) = f.buckets.iter().find(|b| b.0 == 0) {
            return bad(format!("features: bucket {b} must be positive"));
        }
        if !(1..=10).contains(&f.levels) {
            return bad(format!("features.levels = {}: use 1 to 10", f.levels));
        }
        if f.vpin_window == 0 || f.kyle_window < 2 {
            return bad("features: vpin_window >= 1 and kyle_window >= 2".into());
        }
        if f.vpin_bucket_volume
            .is_some_and(|v| !(v > 0.0 && v.is_finite()))
        {
            return bad("features.vpin_bucket_volume must be positive".into());
        }
        if let Some(r) = &self.replay
            && !(r.speed > 0.0 && r.speed.is_finite())
        {
            return bad(format!("replay.speed = {}: must be positive", r.speed));
        }
        match &self.source {
            Source::Lake(l) => {
                l.range()?;
            }
            Source::Capture(c) if c.paths.is_empty() => {
                return bad("source.capture.paths is empty".into());
            }
            Source::Synthetic(s) if s.symbols == 0 || s.days == 0 => {
                return bad("source.synthetic: symbols and days must be at least 1".into());
            }
            Source::Live(l) => {
                if !LIVE_EXCHANGES.contains(&l.exchange.as_str()) {
                    return bad(format!(
                        "source.live.exchange {:?}: use {}",
                        l.exchange,
                        LIVE_EXCHANGES.join(", ")
                    ));
                }
                if l.symbols.is_empty() {
                    return bad("source.live.symbols is empty".into());
                }
                if let Some(k) = l
                    .streams
                    .iter()
                    .find(|k| !LIVE_STREAMS.contains(&k.as_str()))
                {
                    return bad(format!(
                        "source.live.streams {k:?}: use {}",
                        LIVE_STREAMS.join(", ")
                    ));
                }
                if self.replay.is_some() {
                    return bad("a live source comes at its own pace: remove [replay]".into());
                }
            }
            _ => {}
        }
        if let Some(st) = &self.strategy {
            st.validate(&self.features.buckets)
                .map_err(Error::InvalidJob)?;
        }
        self.risk.validate().map_err(Error::InvalidJob)?;
        self.execution.validate().map_err(Error::InvalidJob)?;
        if let Some(b) = &self.broker {
            if !BROKER_KINDS.contains(&b.kind.as_str()) {
                return bad(format!(
                    "broker.kind {:?}: use {}",
                    b.kind,
                    BROKER_KINDS.join(", ")
                ));
            }
            if b.kind != "paper" {
                if self.strategy.is_none() {
                    return bad("[broker] sends a strategy's orders: add a [strategy]".into());
                }
                if !matches!(self.source, Source::Live(_)) {
                    return bad(format!(
                        "broker.kind = {:?} trades a live feed: use [source.live] (history is \
                         backtested on the simulated exchange)",
                        b.kind
                    ));
                }
            }
            if b.pacing == 0 {
                return bad("broker.pacing must be at least 1 message per second".into());
            }
            if b.client_id < 0 {
                return bad("broker.client_id must not be negative".into());
            }
        }
        if self.sinks.flush.is_some_and(|f| f.0 == 0) {
            return bad("sinks.flush must be positive".into());
        }
        if !self.sinks.lake && !self.sinks.stdout {
            return bad("sinks: enable lake, stdout or both".into());
        }
        Ok(())
    }
}

/// Writes an instant the way [`parse_instant`] reads it: `YYYY-MM-DDTHH:MM:SS.fffffffff` (UTC).
///
/// ```
/// use flowsense_core::job::{format_instant, parse_instant};
/// let t = parse_instant("2024-08-08T23:54:16.5").unwrap();
/// assert_eq!(format_instant(t), "2024-08-08T23:54:16.500000000");
/// assert_eq!(parse_instant(&format_instant(t)).unwrap(), t);
/// ```
pub fn format_instant(t: UnixNanos) -> String {
    let secs = t.0.div_euclid(1_000_000_000);
    let s = secs.rem_euclid(86_400);
    format!(
        "{}T{:02}:{:02}:{:02}.{:09}",
        t.date_string(),
        s / 3600,
        s / 60 % 60,
        s % 60,
        t.0.rem_euclid(1_000_000_000)
    )
}

/// Parses `YYYY-MM-DD` or `YYYY-MM-DDTHH:MM:SS[.fraction]` (UTC) into nanoseconds.
pub fn parse_instant(s: &str) -> Result<UnixNanos> {
    let bad = || Error::InvalidJob(format!("instant {s:?}: write YYYY-MM-DD[THH:MM:SS[.fff]]"));
    let (date, time) = match s.split_once(['T', ' ']) {
        Some((d, t)) => (d, Some(t.trim_end_matches('Z'))),
        None => (s, None),
    };
    let mut d = date.split('-');
    let (Some(y), Some(m), Some(day), None) = (d.next(), d.next(), d.next(), d.next()) else {
        return Err(bad());
    };
    let (y, m, day): (i64, u32, u32) = (
        y.parse().map_err(|_| bad())?,
        m.parse().map_err(|_| bad())?,
        day.parse().map_err(|_| bad())?,
    );
    if !(1..=12).contains(&m) || !(1..=31).contains(&day) {
        return Err(bad());
    }
    let mut ns = UnixNanos::from_ymd(y, m, day).0;
    if let Some(t) = time {
        let (hms, frac) = t.split_once('.').unwrap_or((t, ""));
        let parts: Vec<&str> = hms.split(':').collect();
        if parts.len() != 3 || frac.len() > 9 || !frac.chars().all(|c| c.is_ascii_digit()) {
            return Err(bad());
        }
        let mut secs = 0i64;
        for (p, max) in parts.iter().zip([24, 60, 61]) {
            let v: i64 = p.parse().map_err(|_| bad())?;
            if !(0..max).contains(&v) {
                return Err(bad());
            }
            secs = secs * 60 + v;
        }
        let frac_ns = if frac.is_empty() {
            0
        } else {
            frac.parse::<i64>().map_err(|_| bad())? * 10i64.pow(9 - frac.len() as u32)
        };
        ns += secs * 1_000_000_000 + frac_ns;
    }
    Ok(UnixNanos(ns))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_round_trip_their_canonical_text() {
        for (text, ns, canon) in [
            ("100ms", 100_000_000, "100ms"),
            ("1s", 1_000_000_000, "1s"),
            ("60s", 60_000_000_000, "1m"),
            ("1500ms", 1_500_000_000, "1500ms"),
            ("250us", 250_000, "250us"),
        ] {
            let s: Span = text.parse().unwrap();
            assert_eq!(s.nanos(), ns);
            assert_eq!(s.to_string(), canon);
        }
        for bad in ["", "1", "ms", "-1s", "1.5s", "1 fortnight"] {
            assert!(bad.parse::<Span>().is_err(), "{bad}");
        }
    }

    #[test]
    fn instants_parse_dates_and_times() {
        let d = parse_instant("2024-08-08").unwrap();
        assert_eq!(d.date_string(), "2024-08-08");
        let t = parse_instant("2024-08-08T01:02:03.5").unwrap();
        assert_eq!(t.0 - d.0, 3_723_500_000_000);
        assert!(parse_instant("2024-13-01").is_err());
        assert!(parse_instant("2024-08-08T25:00:00").is_err());
    }

    #[test]
    fn a_spec_round_trips_through_toml_and_defaults_fill_in() {
        let spec = JobSpec::from_toml(
            "name = \"j\"\n[source.lake]\nfrom = \"2024-08-08\"\n[sinks]\nstdout = true\n",
        )
        .unwrap();
        assert_eq!(spec.epoch, Span::from_millis(1));
        assert_eq!(spec.features.levels, 10);
        assert!(spec.sinks.lake && spec.sinks.stdout);
        let again = JobSpec::from_toml(&spec.to_toml()).unwrap();
        assert_eq!(again, spec);
    }

    #[test]
    fn bad_specs_say_what_is_wrong() {
        for (text, needle) in [
            ("name = \"a b\"\n[source.synthetic]\n", "name"),
            (
                "name = \"a\"\n[source.synthetic]\n[features]\nlevels = 11\n",
                "levels",
            ),
            ("name = \"a\"\n[source.capture]\npaths = []\n", "paths"),
            (
                "name = \"a\"\n[source.synthetic]\n[features]\nbukets = []\n",
                "bukets",
            ),
            (
                "name = \"a\"\n[source.lake]\nfrom = \"yesterday\"\n",
                "instant",
            ),
            (
                "name = \"a\"\n[source.synthetic]\n[replay]\nspeed = 0.0\n",
                "speed",
            ),
        ] {
            let e = JobSpec::from_toml(text).unwrap_err().to_string();
            assert!(e.contains(needle), "{e} should mention {needle}");
        }
    }
}
