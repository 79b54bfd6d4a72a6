//! OHLCV bars from CSV files as data vendors ship them (`flowsense ingest --format bars`).
//!
//! Accepted layouts, plain or gzip:
//! - with a header naming the columns, in any order: names are compared without case, spaces,
//!   punctuation or a vendor's numbering ([`normalise`]: `1. open`, `<OPEN>`, `Gmt time`), and
//!   the usual ones are known: a time (`timestamp`, `datetime`, `open_time`, `Gmt time`,
//!   `time`, `date`, `ts`, `t`, ...; a `Date` and a `Time` column apart are read together),
//!   `open`/`o`, `high`/`h`, `low`/`l`, `close`/`c` (Yahoo's `Adj Close` is not the close
//!   unless mapped), `volume`/`vol`/`v`, and optionally `symbol`/`ticker` and
//!   `trades`/`count`/`n`. So Yahoo Finance (`Date,Open,High,Low,Close,Adj Close,Volume`),
//!   Alpha Vantage (`timestamp,open,...` and `date,1. open,2. high,...`), Polygon aggregates
//!   (`t,o,h,l,c,v,vw,n`), Dukascopy (`Gmt time,...`), Stooq and MetaTrader exports
//!   (`<DATE>,<TIME>,<OPEN>,...`) read as they are. Other columns are ignored. Anything else is
//!   named with a [`ColumnMap`] (`--columns time=Date,close=Adj Close`); a header the reader
//!   cannot place is refused with its text, what it lacks, and that flag.
//! - without a header: Binance's kline files (`open_time, open, high, low, close, volume,
//!   close_time, quote_volume, trades, ...`) when a row has at least nine fields, else
//!   `timestamp, open, high, low, close, volume`; a column map places columns by position.
//!
//! Times are epoch seconds, milliseconds, microseconds or nanoseconds (told apart by size), or
//! dates and times as [`parse_time`] reads them (UTC unless they carry an offset); a bar's
//! time is when it opened. The symbol comes from a `symbol` column, else the options, else the
//! file name up to its first `-` or `_` (`BTCUSDT-1m-2024-08.csv` is `BTCUSDT`). The interval
//! comes from the options, else from a token of the file name (`1m`, `5min`, `1h`, `1d`), else
//! from the gap between a symbol's first two bars.
//!
//! Refused rows go to dead letters: unparsable fields, non-finite numbers, prices at or below
//! zero, a negative volume, a high below the open, close or low (or a low above them), and a
//! time that does not move forward. A file whose first two bars go back in time is newest
//! first (as Alpha Vantage ships them): it is read whole and taken oldest first.
//!
//! ```
//! use flowsense_sources::bars::{BarsOptions, BarsReader};
//! use flowsense_sources::Record;
//! use flowsense_core::MarketEvent;
//! let dir = tempfile::tempdir().unwrap();
//! let path = dir.path().join("ABC-1m.csv");
//! std::fs::write(&path, "timestamp,open,high,low,close,volume\n\
//!     2024-08-08 00:00:00,10,11,9,10.5,100\n2024-08-08 00:01:00,10.5,10.5,8,9,50\n").unwrap();
//! let bars: Vec<_> = BarsReader::open(&path, BarsOptions::default()).unwrap()
//!     .filter_map(|r| match r.unwrap() { Record::Event(MarketEvent::Bar(s, b)) => Some((s, b)), _ => None })
//!     .collect();
//! assert_eq!(bars.len(), 2);
//! assert_eq!(bars[0].0.as_str(), "ABC");
//! assert_eq!(bars[1].1.interval, 60_000_000_000);
//! ```

use std::collections::{HashMap, VecDeque};
use std::io::BufRead;
use std::path::{Path, PathBuf};

use flowsense_core::job::Span;
use flowsense_core::{
    Bar, DeadLetter, DeadLetterReason, MarketEvent, Price, Size, Symbol, UnixNanos,
};

use crate::binance::read_text_line;
use crate::{Error, Record, Result, SourceId};

/// Options of the bars reader.
#[derive(Clone, Debug, Default)]
pub struct BarsOptions {
    /// The symbol, for files without a symbol column (default: from the file name).
    pub symbol: Option<String>,
    /// The bar length (default: from the file name, else the gap between the first two bars).
    pub interval: Option<Span>,
    /// Which column holds what, for headers the usual names do not cover.
    pub columns: ColumnMap,
    /// Where the reader counts the bytes it reads, for progress.
    pub bytes_read: crate::BytesRead,
}

/// Column positions.
#[derive(Clone, Copy, Debug)]
struct Layout {
    ts: usize,
    /// A separate time-of-day column, when the time column holds only the date.
    clock: Option<usize>,
    open: usize,
    high: usize,
    low: usize,
    close: usize,
    volume: usize,
    symbol: Option<usize>,
    trades: Option<usize>,
}

/// What a column of a bar file holds (the keys of `--columns`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    /// When the bar opened (date and time, or the date alone beside a `clock` column).
    Time,
    /// The time of day, where the vendor keeps it apart from the date.
    Clock,
    /// First price.
    Open,
    /// Highest price.
    High,
    /// Lowest price.
    Low,
    /// Last price.
    Close,
    /// Volume traded.
    Volume,
    /// The instrument.
    Symbol,
    /// Number of trades.
    Trades,
}

impl Role {
    /// Every role, in the order a refusal lists them.
    pub const ALL: [Role; 9] = [
        Role::Time,
        Role::Clock,
        Role::Open,
        Role::High,
        Role::Low,
        Role::Close,
        Role::Volume,
        Role::Symbol,
        Role::Trades,
    ];

    /// The key of `--columns` (`time`, `clock`, `open`, ...).
    pub const fn key(self) -> &'static str {
        match self {
            Role::Time => "time",
            Role::Clock => "clock",
            Role::Open => "open",
            Role::High => "high",
            Role::Low => "low",
            Role::Close => "close",
            Role::Volume => "volume",
            Role::Symbol => "symbol",
            Role::Trades => "trades",
        }
    }

    /// Header names that mean this role, normalised ([`normalise`]), best first.
    const fn names(self) -> &'static [&'static str] {
        match self {
            Role::Time => &[
                "timestamp",
                "datetime",
                "opentime",
                "gmttime",
                "utctime",
                "timeutc",
                "localtime",
                "time",
                "date",
                "ts",
                "t",
                "starttime",
                "timeopen",
                "begins",
                "windowstart",
            ],
            Role::Clock => &[],
            Role::Open => &["open", "o", "openprice", "first"],
            Role::High => &["high", "h", "highprice", "max"],
            Role::Low => &["low", "l", "lowprice", "min"],
            Role::Close => &["close", "c", "closeprice", "last"],
            Role::Volume => &["volume", "vol", "v", "basevolume", "qty", "quantity"],
            Role::Symbol => &["symbol", "ticker", "instrument", "sym", "code"],
            Role::Trades => &[
                "trades",
                "count",
                "numberoftrades",
                "n",
                "numtrades",
                "tradecount",
                "transactions",
                "ntrades",
            ],
        }
    }

    fn parse(key: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.key() == key.trim())
    }
}

/// A column name as headers are compared: lower case, the vendor's numbering (`1. open`,
/// `<OPEN>`), quotes and everything but letters and digits dropped (`Adj Close` is
/// `adjclose`, `Gmt time` is `gmttime`, `open_time` is `opentime`).
///
/// ```
/// use flowsense_sources::bars::normalise;
/// assert_eq!(normalise("1. open"), "open");
/// assert_eq!(normalise(" \"Gmt time\" "), "gmttime");
/// assert_eq!(normalise("<CLOSE>"), "close");
/// assert_eq!(normalise("Adj Close"), "adjclose");
/// ```
pub fn normalise(name: &str) -> String {
    let s = name.trim().trim_matches('"').trim();
    // A numbering prefix: digits then `.`, `)` or `:` (Alpha Vantage's `1. open`).
    let s = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) if i > 0 && s[i..].starts_with(['.', ')', ':']) => &s[i + 1..],
        _ => s,
    };
    s.chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .map(|c| c.to_ascii_lowercase())
        .collect()
}

/// Which column holds what: header names for some roles (`--columns time=Date,close=Adj
/// Close`), the usual names for the rest. Names are compared as [`normalise`] leaves them; a
/// number is a column's position, from 1.
///
/// ```
/// use flowsense_sources::bars::ColumnMap;
/// let map: ColumnMap = "time=Date, close=Adj Close".parse().unwrap();
/// assert_eq!(map.to_string(), "time=Date,close=Adj Close");
/// assert!("when=Date".parse::<ColumnMap>().unwrap_err().contains("time, clock, open"));
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ColumnMap(Vec<(Role, String)>);

impl std::str::FromStr for ColumnMap {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let keys = Role::ALL.map(Role::key).join(", ");
        let mut out = Vec::new();
        for part in s.split(',').filter(|p| !p.trim().is_empty()) {
            let (k, v) = part
                .split_once('=')
                .ok_or_else(|| format!("{part:?}: write ROLE=COLUMN (roles: {keys})"))?;
            let role = Role::parse(k)
                .ok_or_else(|| format!("{:?} is no column role; the roles are {keys}", k.trim()))?;
            if v.trim().is_empty() {
                return Err(format!("{}= names no column", role.key()));
            }
            out.push((role, v.trim().to_string()));
        }
        Ok(ColumnMap(out))
    }
}

impl std::fmt::Display for ColumnMap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let parts: Vec<String> = self
            .0
            .iter()
            .map(|(r, c)| format!("{}={c}", r.key()))
            .collect();
        f.write_str(&parts.join(","))
    }
}

impl ColumnMap {
    /// True when no role is mapped.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn get(&self, role: Role) -> Option<&str> {
        self.0
            .iter()
            .find(|(r, _)| *r == role)
            .map(|(_, c)| c.as_str())
    }
}

/// True when a header line names the columns of a bar file by the usual names.
pub fn recognises_header(line: &str) -> bool {
    let fields: Vec<&str> = line.trim_end().split(',').collect();
    fields.len() >= 5 && Layout::from_header(&fields, &ColumnMap::default()).is_ok()
}

impl Layout {
    /// The layout a header gives, with `map` for the columns it names; or the roles it lacks
    /// (and mapped names it does not have).
    fn from_header(fields: &[&str], map: &ColumnMap) -> std::result::Result<Layout, String> {
        let names: Vec<String> = fields.iter().map(|f| normalise(f)).collect();
        let mut problems = Vec::new();
        let mut find = |role: Role| -> Option<usize> {
            if let Some(col) = map.get(role) {
                if let Ok(k) = col.parse::<usize>()
                    && (1..=fields.len()).contains(&k)
                {
                    return Some(k - 1);
                }
                let want = normalise(col);
                let at = fields
                    .iter()
                    .position(|f| f.trim().trim_matches('"') == col)
                    .or_else(|| names.iter().position(|n| *n == want));
                if at.is_none() {
                    problems.push(format!("{}={col} (no such column)", role.key()));
                }
                return at;
            }
            role.names()
                .iter()
                .find_map(|want| names.iter().position(|n| n == want))
        };
        let ts = find(Role::Time);
        let clock = find(Role::Clock);
        let open = find(Role::Open);
        let high = find(Role::High);
        let low = find(Role::Low);
        let close = find(Role::Close);
        let volume = find(Role::Volume);
        let symbol = find(Role::Symbol);
        let trades = find(Role::Trades);
        // A date column and a time column apart (`Date,Time,Open,...`): the time of day is
        // read beside the date.
        let (ts, clock) = match (ts, clock) {
            (Some(t), None) if names[t] == "date" => {
                (Some(t), names.iter().position(|n| n == "time"))
            }
            (Some(t), None) if names[t] == "time" => match names.iter().position(|n| n == "date") {
                Some(d) => (Some(d), Some(t)),
                None => (Some(t), None),
            },
            other => other,
        };
        let required = [
            (Role::Time, ts),
            (Role::Open, open),
            (Role::High, high),
            (Role::Low, low),
            (Role::Close, close),
            (Role::Volume, volume),
        ];
        for (role, at) in required {
            if at.is_none() && map.get(role).is_none() {
                problems.push(format!("no {} column", role.key()));
            }
        }
        match (ts, open, high, low, close, volume) {
            (Some(ts), Some(open), Some(high), Some(low), Some(close), Some(volume))
                if problems.is_empty() =>
            {
                Ok(Layout {
                    ts,
                    clock,
                    open,
                    high,
                    low,
                    close,
                    volume,
                    symbol,
                    trades,
                })
            }
            _ => Err(problems.join(", ")),
        }
    }

    /// The headerless layout, with the columns `map` places by position.
    fn headerless_mapped(fields: usize, map: &ColumnMap) -> std::result::Result<Layout, String> {
        let mut l = Layout::headerless(fields);
        for (role, col) in &map.0 {
            let k = col
                .parse::<usize>()
                .ok()
                .filter(|k| (1..=fields).contains(k))
                .ok_or_else(|| {
                    format!(
                        "{}={col}: the file has no header, so columns are named by position \
                         (1 to {fields})",
                        role.key()
                    )
                })?
                - 1;
            match role {
                Role::Time => l.ts = k,
                Role::Clock => l.clock = Some(k),
                Role::Open => l.open = k,
                Role::High => l.high = k,
                Role::Low => l.low = k,
                Role::Close => l.close = k,
                Role::Volume => l.volume = k,
                Role::Symbol => l.symbol = Some(k),
                Role::Trades => l.trades = Some(k),
            }
        }
        Ok(l)
    }

    fn headerless(fields: usize) -> Layout {
        Layout {
            ts: 0,
            clock: None,
            open: 1,
            high: 2,
            low: 3,
            close: 4,
            volume: 5,
            symbol: None,
            trades: (fields >= 9).then_some(8),
        }
    }
}

/// A time field in nanoseconds: epoch seconds, ms, µs or ns (by size), a `YYYYMMDD` date, or
/// UTC text: `2024-08-08 23:54:00` (seconds optional, a fraction allowed), `2024-08-08T23:54Z`,
/// `2024-08-08`, Dukascopy's `08.08.2024 23:54:00.000`, and any of them with a UTC offset
/// (`2024-08-08 09:30:00-04:00`), which is taken off.
///
/// ```
/// use flowsense_sources::bars::parse_time;
/// let t = 1_723_161_240_000_000_000; // 2024-08-08 23:54:00 UTC
/// assert_eq!(parse_time("1723161240000"), Some(t));
/// assert_eq!(parse_time("2024-08-08 23:54"), Some(t));
/// assert_eq!(parse_time("08.08.2024 23:54:00.000"), Some(t));
/// assert_eq!(parse_time("2024-08-08 19:54:00-04:00"), Some(t));
/// assert_eq!(parse_time("20240808"), parse_time("2024-08-08"));
/// ```
pub fn parse_time(s: &str) -> Option<i64> {
    let s = s.trim().trim_matches('"').trim();
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        if s.len() == 8
            && let Some(t) = compact_date(s)
        {
            return Some(t);
        }
        if s.bytes().all(|b| b.is_ascii_digit() || b == b'.') && s.matches('.').count() <= 1 {
            let v: f64 = s.parse().ok()?;
            let scale = if v < 1e11 {
                1e9
            } else if v < 1e14 {
                1e6
            } else if v < 1e17 {
                1e3
            } else {
                1.0
            };
            return Some((v * scale).round() as i64);
        }
    }
    let (text, offset) = split_offset(s);
    let text = dotted_date(text).unwrap_or_else(|| text.to_string());
    let text = with_seconds(&text);
    flowsense_core::job::parse_instant(&text)
        .ok()
        .map(|t| t.0 - offset)
}

/// `YYYYMMDD` as a date, when it is one (years 1900 to 2199).
fn compact_date(s: &str) -> Option<i64> {
    let (y, m, d) = (
        s[..4].parse().ok()?,
        s[4..6].parse().ok()?,
        s[6..].parse().ok()?,
    );
    ((1900..2200).contains(&y) && (1..=12).contains(&m) && (1..=31).contains(&d))
        .then(|| UnixNanos::from_ymd(y, m, d).0)
}

/// `DD.MM.YYYY[ rest]` as `YYYY-MM-DD[ rest]`.
fn dotted_date(s: &str) -> Option<String> {
    let (date, rest) = match s.split_once(' ') {
        Some((d, r)) => (d, Some(r)),
        None => (s, None),
    };
    let mut p = date.split('.');
    let (Some(d), Some(m), Some(y), None) = (p.next(), p.next(), p.next(), p.next()) else {
        return None;
    };
    if y.len() != 4 || d.len() > 2 || m.len() > 2 {
        return None;
    }
    Some(match rest {
        Some(r) => format!("{y}-{m:0>2}-{d:0>2} {r}"),
        None => format!("{y}-{m:0>2}-{d:0>2}"),
    })
}

/// A trailing UTC offset (`+02:00`, `-0400`, `+00`) cut off, and its value in nanoseconds.
fn split_offset(s: &str) -> (&str, i64) {
    let s = s.strip_suffix('Z').unwrap_or(s);
    // Only after a time of day: a date's own `-` are no offset.
    let Some(colon) = s.find(':') else {
        return (s, 0);
    };
    let Some(at) = s[colon..].rfind(['+', '-']).map(|i| i + colon) else {
        return (s, 0);
    };
    let digits: String = s[at + 1..].chars().filter(|c| *c != ':').collect();
    if !(digits.len() == 2 || digits.len() == 4) || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return (s, 0);
    }
    let (h, m): (i64, i64) = (
        digits[..2].parse().unwrap_or(0),
        digits.get(2..).and_then(|m| m.parse().ok()).unwrap_or(0),
    );
    let sign = if s.as_bytes()[at] == b'-' { -1 } else { 1 };
    (
        s[..at].trim_end(),
        sign * (h * 3600 + m * 60) * 1_000_000_000,
    )
}

/// `HH:MM` (no seconds) as `HH:MM:00`, whatever comes before it.
fn with_seconds(s: &str) -> String {
    let time = s.rsplit([' ', 'T']).next().unwrap_or("");
    if time.len() < s.len() && time.matches(':').count() == 1 {
        format!("{s}:00")
    } else {
        s.to_string()
    }
}

/// A bar length named in a file name token: `1m`, `5min`, `15m`, `1h`, `4h`, `1d`, `30s`.
fn interval_in_name(name: &str) -> Option<Span> {
    name.split(['-', '_', '.', ' ']).find_map(|tok| {
        let tok = tok.to_ascii_lowercase();
        let tok = tok
            .strip_suffix("min")
            .map_or(tok.clone(), |t| format!("{t}m"));
        let digits = tok.find(|c: char| !c.is_ascii_digit())?;
        (digits > 0 && matches!(&tok[digits..], "s" | "m" | "h" | "d"))
            .then(|| tok.parse::<Span>().ok())
            .flatten()
    })
}

/// Per-symbol state: the last bar time, the interval, and a first bar waiting for the second
/// (when the interval must be inferred).
#[derive(Default)]
struct SymbolState {
    last: Option<i64>,
    interval: Option<i64>,
    waiting: Option<(Box<Bar>, String, String)>,
}

/// Reads one OHLCV CSV file; an iterator of [`Record`]s.
pub struct BarsReader {
    text: Box<dyn BufRead + Send>,
    path: PathBuf,
    file_name: String,
    source: SourceId,
    default_symbol: Option<Symbol>,
    interval: Option<i64>,
    columns: ColumnMap,
    layout: Option<Layout>,
    symbols: HashMap<Symbol, SymbolState>,
    order: RowOrder,
    line: String,
    /// The line's bytes, before they are checked to be UTF-8.
    bytes: Vec<u8>,
    line_no: u64,
    out: VecDeque<Record>,
    started: bool,
    done: bool,
}

impl BarsReader {
    /// Opens a file.
    pub fn open(path: &Path, opts: BarsOptions) -> Result<Self> {
        let file_name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let from_name = file_name
            .split(['-', '_', '.'])
            .next()
            .map(|s| s.to_ascii_uppercase())
            .filter(|s| !s.is_empty());
        let default_symbol = match opts.symbol.or(from_name) {
            Some(s) => Some(Symbol::new(&s)?),
            None => None,
        };
        let interval = opts.interval.or_else(|| interval_in_name(&file_name));
        Ok(BarsReader {
            text: crate::binance::open_text_counted(path, &opts.bytes_read)?,
            path: path.to_path_buf(),
            source: SourceId::for_file(path).map_err(|e| Error::io(path, e))?,
            file_name,
            default_symbol,
            interval: interval.map(|s| s.0 as i64).filter(|&n| n > 0),
            columns: opts.columns,
            layout: None,
            symbols: HashMap::new(),
            order: RowOrder::Unknown(None),
            line: String::new(),
            bytes: Vec::new(),
            line_no: 0,
            out: VecDeque::new(),
            started: false,
            done: false,
        })
    }

    fn dead(&mut self, reason: DeadLetterReason, detail: String, raw: &str, line: u64) {
        self.out.push_back(Record::Dead(DeadLetter {
            source: self.source.to_string(),
            position: format!("{}:{line}", self.file_name),
            reason,
            detail,
            raw: raw.to_string(),
        }));
    }

    /// Parses one data row into a bar (without its interval), or says why not.
    fn parse(
        &self,
        fields: &[&str],
        l: &Layout,
    ) -> std::result::Result<(Symbol, Bar), (DeadLetterReason, String)> {
        let un = |what: &str| (DeadLetterReason::Unparsable, what.to_string());
        let get = |i: usize, what: &str| {
            fields
                .get(i)
                .map(|f| f.trim().trim_matches('"'))
                .ok_or_else(|| un(&format!("no {what} column")))
        };
        let ts = match l.clock {
            None => parse_time(get(l.ts, "time")?),
            Some(c) => {
                let clock = get(c, "time of day")?;
                // `HHMMSS` or `HHMM` digits (Stooq, MetaTrader exports) as `HH:MM:SS`.
                let clock =
                    if clock.bytes().all(|b| b.is_ascii_digit()) && matches!(clock.len(), 4 | 6) {
                        let c = format!("{clock:0<6}");
                        format!("{}:{}:{}", &c[..2], &c[2..4], &c[4..])
                    } else {
                        clock.to_string()
                    };
                let date = get(l.ts, "date")?;
                // The date as a time, then the clock added.
                parse_time(date).and_then(|d| {
                    let day = UnixNanos(d).date_string();
                    parse_time(&format!("{day} {clock}"))
                })
            }
        }
        .ok_or_else(|| un("time is not a timestamp"))?;
        let num = |i: usize, what: &str| -> std::result::Result<f64, (DeadLetterReason, String)> {
            let v: f64 = get(i, what)?
                .parse()
                .map_err(|_| un(&format!("{what} is not a number")))?;
            if !v.is_finite() {
                return Err((DeadLetterReason::NotFinite, format!("{what} is {v}")));
            }
            Ok(v)
        };
        let (o, h, lo, c, v) = (
            num(l.open, "open")?,
            num(l.high, "high")?,
            num(l.low, "low")?,
            num(l.close, "close")?,
            num(l.volume, "volume")?,
        );
        if o <= 0.0 || h <= 0.0 || lo <= 0.0 || c <= 0.0 {
            return Err((
                DeadLetterReason::NonPositivePrice,
                format!("prices {o} {h} {lo} {c}"),
            ));
        }
        if v < 0.0 {
            return Err((DeadLetterReason::NonPositiveSize, format!("volume {v}")));
        }
        if h < o.max(c).max(lo) || lo > o.min(c) {
            return Err((
                DeadLetterReason::InconsistentBar,
                format!("open {o} high {h} low {lo} close {c}"),
            ));
        }
        let symbol = match l.symbol {
            Some(i) => Symbol::new(get(i, "symbol")?).map_err(|e| un(&e.to_string()))?,
            None => self
                .default_symbol
                .clone()
                .ok_or_else(|| un("no symbol: pass one or add a symbol column"))?,
        };
        let trades = match l.trades {
            Some(i) => fields
                .get(i)
                .and_then(|f| f.trim().trim_matches('"').parse::<f64>().ok())
                .map(|t| t as u64),
            None => None,
        };
        let px = |x: f64| Price::from_f64(x).ok_or_else(|| un("price out of range"));
        Ok((
            symbol,
            Bar {
                open_time: UnixNanos(ts),
                interval: 0,
                open: px(o)?,
                high: px(h)?,
                low: px(lo)?,
                close: px(c)?,
                volume: Size::from_f64(v).ok_or_else(|| un("volume out of range"))?,
                trades,
            },
        ))
    }

    fn step(&mut self) -> Result<()> {
        if !self.started {
            self.started = true;
            self.out.push_back(Record::SourceStart(self.source.clone()));
        }
        let n = match read_text_line(&mut *self.text, &mut self.bytes, &mut self.line) {
            Ok(n) => n,
            Err(bad) => {
                self.line_no += 1;
                let ends = bad.ends_file();
                self.dead(bad.reason, bad.detail, &bad.raw, self.line_no);
                if !ends {
                    return Ok(());
                }
                0
            }
        };
        if n == 0 {
            self.release_held();
            // Bars still waiting for a second one to tell the interval.
            let mut waiting: Vec<_> = self
                .symbols
                .iter_mut()
                .filter_map(|(_, st)| st.waiting.take())
                .collect();
            waiting.sort_by(|a, b| a.1.cmp(&b.1));
            for (_, pos, raw) in waiting {
                let line = pos.parse().unwrap_or(0);
                self.dead(
                    DeadLetterReason::Unparsable,
                    "a single bar: cannot tell its interval (pass --interval)".into(),
                    &raw,
                    line,
                );
            }
            self.out.push_back(Record::SourceDone(self.source.clone()));
            self.done = true;
            return Ok(());
        }
        self.line_no += 1;
        let raw = self.line.trim_end().to_string();
        if raw.trim().is_empty() {
            return Ok(());
        }
        let fields: Vec<&str> = raw.split(',').collect();
        let layout = match self.layout {
            Some(l) => l,
            None => {
                let first = fields[0].trim().trim_matches('"');
                if parse_time(first).is_none() {
                    match Layout::from_header(&fields, &self.columns) {
                        Ok(l) => {
                            self.layout = Some(l);
                            return Ok(());
                        }
                        Err(problems) => {
                            return Err(Error::format(
                                &self.path,
                                format!(
                                    "the header {:?} has {problems}; name the columns with \
                                     --columns (e.g. --columns time=Date,close=\"Adj Close\"; \
                                     roles: {})",
                                    raw.trim(),
                                    Role::ALL.map(Role::key).join(", ")
                                ),
                            ));
                        }
                    }
                }
                let l = Layout::headerless_mapped(fields.len(), &self.columns)
                    .map_err(|e| Error::format(&self.path, e))?;
                self.layout = Some(l);
                l
            }
        };
        let line = self.line_no;
        let (symbol, bar) = match self.parse(&fields, &layout) {
            Ok(x) => x,
            Err((reason, detail)) => {
                self.dead(reason, detail, &raw, line);
                return Ok(());
            }
        };
        let row = Held {
            symbol,
            bar,
            line,
            raw,
        };
        // The first two bars tell the file's order: vendors such as Alpha Vantage put the
        // newest bar first, and such a file is read whole, then taken oldest first.
        match std::mem::replace(&mut self.order, RowOrder::Ascending) {
            RowOrder::Unknown(None) => self.order = RowOrder::Unknown(Some(Box::new(row))),
            RowOrder::Unknown(Some(first)) => {
                if first.symbol == row.symbol && row.bar.open_time < first.bar.open_time {
                    self.order = RowOrder::Descending(vec![*first, row]);
                } else {
                    self.take(*first);
                    self.take(row);
                }
            }
            RowOrder::Ascending => self.take(row),
            RowOrder::Descending(mut rows) => {
                rows.push(row);
                self.order = RowOrder::Descending(rows);
            }
        }
        Ok(())
    }

    /// The rows held back to learn the file's order, oldest first.
    fn release_held(&mut self) {
        match std::mem::replace(&mut self.order, RowOrder::Ascending) {
            RowOrder::Unknown(Some(first)) => self.take(*first),
            RowOrder::Descending(rows) => {
                for r in rows.into_iter().rev() {
                    self.take(r);
                }
            }
            _ => {}
        }
    }

    /// Checks a bar's time against the symbol's last, gives it its interval, and emits it.
    fn take(&mut self, row: Held) {
        let Held {
            symbol,
            mut bar,
            line,
            raw,
        } = row;
        let fixed = self.interval;
        let st = self.symbols.entry(symbol.clone()).or_default();
        let t = bar.open_time.0;
        if let Some(last) = st.last
            && t <= last
        {
            let detail = format!("bar at {t} after one at {last}");
            self.dead(DeadLetterReason::TimeWentBack, detail, &raw, line);
            return;
        }
        st.last = Some(t);
        let interval = fixed.or(st.interval);
        match interval {
            Some(iv) => {
                bar.interval = iv;
                self.out
                    .push_back(Record::Event(MarketEvent::Bar(symbol, Box::new(bar))));
            }
            None => match st.waiting.take() {
                None => st.waiting = Some((Box::new(bar), line.to_string(), raw)),
                Some((mut first, _, _)) => {
                    let iv = t - first.open_time.0;
                    st.interval = Some(iv);
                    first.interval = iv;
                    bar.interval = iv;
                    self.out
                        .push_back(Record::Event(MarketEvent::Bar(symbol.clone(), first)));
                    self.out
                        .push_back(Record::Event(MarketEvent::Bar(symbol, Box::new(bar))));
                }
            },
        }
    }
}

/// A parsed bar with where it came from.
struct Held {
    symbol: Symbol,
    bar: Bar,
    line: u64,
    raw: String,
}

/// The order of a file's rows, as its first two bars tell it.
enum RowOrder {
    /// Not known yet: the first bar waits for the second.
    Unknown(Option<Box<Held>>),
    /// Oldest first: bars are taken as they are read.
    Ascending,
    /// Newest first: bars are held until the end, then taken in reverse.
    Descending(Vec<Held>),
}

impl Iterator for BarsReader {
    type Item = Result<Record>;

    fn next(&mut self) -> Option<Result<Record>> {
        loop {
            if let Some(r) = self.out.pop_front() {
                return Some(Ok(r));
            }
            if self.done {
                return None;
            }
            if let Err(e) = self.step() {
                self.done = true;
                return Some(Err(e));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(name: &str) -> PathBuf {
        Path::new(&std::env::var("CARGO_MANIFEST_DIR").expect("set by cargo"))
            .join("../data/bars")
            .join(name)
    }

    /// (symbol, open time in s, open, close, volume) of a bar.
    type Seen = (String, i64, f64, f64, f64);

    /// Each bar read, and the number of dead letters.
    fn read(path: &Path, opts: BarsOptions) -> Result<(Vec<Seen>, usize)> {
        let mut bars = Vec::new();
        let mut dead = 0;
        for r in BarsReader::open(path, opts)? {
            match r? {
                Record::Event(MarketEvent::Bar(s, b)) => {
                    assert_eq!(b.interval, 60_000_000_000, "{}", path.display());
                    bars.push((
                        s.as_str().to_string(),
                        b.open_time.0 / 1_000_000_000,
                        b.open.as_f64(),
                        b.close.as_f64(),
                        b.volume.as_f64(),
                    ))
                }
                Record::Dead(_) => dead += 1,
                _ => {}
            }
        }
        Ok((bars, dead))
    }

    #[test]
    fn every_vendor_layout_reads_the_same_bars() {
        let (want, dead) = read(&data("yahoo_BTCUSDT_1m.csv"), BarsOptions::default()).unwrap();
        assert_eq!(dead, 0);
        assert_eq!(want.len(), 5);
        assert_eq!(
            want[0],
            ("YAHOO".into(), 1_723_161_300, 61828.0, 61782.25, 15.07702)
        );
        let sym = |s: &str| BarsOptions {
            symbol: Some(s.into()),
            ..Default::default()
        };
        let want: Vec<_> = want
            .into_iter()
            .map(|b| ("BTCUSDT".to_string(), b.1, b.2, b.3, b.4))
            .collect();
        for f in [
            "yahoo_BTCUSDT_1m.csv",
            "alphavantage_BTCUSDT_1min.csv", // newest first
            "polygon_BTCUSDT_1m.csv",
            "dukascopy_BTCUSDT_1m.csv",
            "stooq_BTCUSDT_1m.csv", // the symbol from its <TICKER> column
        ] {
            let (got, dead) = read(&data(f), sym("BTCUSDT")).unwrap();
            assert_eq!((&got, dead), (&want, 0), "{f}");
            assert!(
                crate::detect::detect(&data(f)).unwrap() == Some(crate::detect::Format::Bars),
                "{f}"
            );
        }
    }

    #[test]
    fn an_unknown_header_is_refused_with_the_flag_that_maps_it() {
        let path = data("custom_BTCUSDT_1m.csv");
        let Err(e) = read(&path, BarsOptions::default()) else {
            panic!("read a header it cannot place");
        };
        let msg = e.to_string();
        for part in [
            "Zeit,Eroeffnung,Hoch,Tief,Schluss,Umsatz",
            "no time column",
            "no close column",
            "--columns",
        ] {
            assert!(msg.contains(part), "{part:?} not in {msg}");
        }
        let map: ColumnMap =
            "time=Zeit,open=Eroeffnung,high=Hoch,low=Tief,close=Schluss,volume=Umsatz"
                .parse()
                .unwrap();
        let opts = BarsOptions {
            columns: map,
            symbol: Some("BTCUSDT".into()),
            ..Default::default()
        };
        let (got, dead) = read(&path, opts).unwrap();
        let (want, _) = read(
            &data("yahoo_BTCUSDT_1m.csv"),
            BarsOptions {
                symbol: Some("BTCUSDT".into()),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!((got, dead), (want, 0));
        // A mapped name the header lacks is named.
        let opts = BarsOptions {
            columns: "time=Zeit,close=Kurs".parse().unwrap(),
            ..Default::default()
        };
        let msg = read(&path, opts).err().unwrap().to_string();
        assert!(msg.contains("close=Kurs (no such column)"), "{msg}");
    }

    #[test]
    fn a_column_map_overrides_the_usual_names_and_places_headerless_columns() {
        let dir = tempfile::tempdir().unwrap();
        // Yahoo's adjusted close instead of the close.
        let map: ColumnMap = "close=Adj Close".parse().unwrap();
        let yahoo = "Date,Open,High,Low,Close,Adj Close,Volume\n\
                     2024-01-02,10,12,9,11,10.5,100\n2024-01-03,11,11,10,10,10.2,0\n";
        let p = dir.path().join("ABC-1d.csv");
        std::fs::write(&p, yahoo).unwrap();
        let opts = BarsOptions {
            columns: map,
            ..Default::default()
        };
        let bars: Vec<Bar> = BarsReader::open(&p, opts)
            .unwrap()
            .filter_map(|r| match r.unwrap() {
                Record::Event(MarketEvent::Bar(_, b)) => Some(*b),
                _ => None,
            })
            .collect();
        let closes: Vec<f64> = bars.iter().map(|b| b.close.as_f64()).collect();
        assert_eq!(closes, vec![10.5, 10.2]);
        assert_eq!(bars[1].volume, Size::ZERO); // a bar of volume 0 is kept
        // Headerless: columns by position, close, then open, high, low, time last.
        let p = dir.path().join("XYZ-1m.csv");
        std::fs::write(&p, "11,10,12,9,100,1723161300\n").unwrap();
        let opts = BarsOptions {
            columns: "close=1,open=2,high=3,low=4,volume=5,time=6"
                .parse()
                .unwrap(),
            ..Default::default()
        };
        let (got, dead) = read(&p, opts).unwrap();
        assert_eq!(
            (got, dead),
            (vec![("XYZ".into(), 1_723_161_300, 10.0, 11.0, 100.0)], 0)
        );
        let opts = BarsOptions {
            columns: "close=Close".parse().unwrap(),
            ..Default::default()
        };
        let msg = read(&p, opts).err().unwrap().to_string();
        assert!(msg.contains("named by position"), "{msg}");
    }

    #[test]
    fn header_names_are_normalised() {
        for (header, ok) in [
            ("date,1. open,2. high,3. low,4. close,5. volume", true),
            ("Date,Open,High,Low,Close,Adj Close,Volume", true),
            ("t,o,h,l,c,v,vw,n", true),
            ("Datetime,Open,High,Low,Close,Volume", true),
            ("Gmt time,Open,High,Low,Close,Volume", true),
            ("volume,close,low,high,open,timestamp", true),
            ("Date,Time,Open,High,Low,Close,Volume", true),
            ("Zeit,Eroeffnung,Hoch,Tief,Schluss,Umsatz", false),
            ("a,b,c,d,e,f", false),
        ] {
            assert_eq!(recognises_header(header), ok, "{header}");
        }
        let fields: Vec<&str> = "Date,Time,Open,High,Low,Close,Volume".split(',').collect();
        let l = Layout::from_header(&fields, &ColumnMap::default()).unwrap();
        assert_eq!((l.ts, l.clock, l.open, l.volume), (0, Some(1), 2, 6));
    }
}
