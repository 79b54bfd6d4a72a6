//! OHLCV bars from CSV files as data vendors ship them (`flowsense ingest --format bars`).
//!
//! Accepted layouts, plain or gzip:
//! - with a header naming the columns (any order, any case): a time column (`timestamp`,
//!   `time`, `date`, `datetime`, `open_time` or `ts`), `open`, `high`, `low`, `close`,
//!   `volume` (or `vol`), and optionally `symbol` (or `ticker`) and `trades` (or `count`,
//!   `number_of_trades`); other columns are ignored;
//! - without a header: Binance's kline files (`open_time, open, high, low, close, volume,
//!   close_time, quote_volume, trades, ...`) when a row has at least nine fields, else
//!   `timestamp, open, high, low, close, volume`.
//!
//! Times are epoch seconds, milliseconds, microseconds or nanoseconds (told apart by size), or
//! UTC text (`2024-08-08 23:54:00`, `2024-08-08T23:54:00Z`, `2024-08-08`); a bar's time is when
//! it opened. The symbol comes from a `symbol` column, else the options, else the file name up
//! to its first `-` or `_` (`BTCUSDT-1m-2024-08.csv` is `BTCUSDT`). The interval comes from the
//! options, else from a token of the file name (`1m`, `5min`, `1h`, `1d`), else from the gap
//! between a symbol's first two bars.
//!
//! Refused rows go to dead letters: unparsable fields, non-finite numbers, prices at or below
//! zero, a negative volume, a high below the open, close or low (or a low above them), and a
//! time that does not move forward.
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
    /// Where the reader counts the bytes it reads, for progress.
    pub bytes_read: crate::BytesRead,
}

/// Column positions.
#[derive(Clone, Copy, Debug)]
struct Layout {
    ts: usize,
    open: usize,
    high: usize,
    low: usize,
    close: usize,
    volume: usize,
    symbol: Option<usize>,
    trades: Option<usize>,
}

impl Layout {
    fn from_header(fields: &[&str]) -> Option<Layout> {
        let find = |names: &[&str]| {
            fields.iter().position(|f| {
                names.contains(&f.trim().trim_matches('"').to_ascii_lowercase().as_str())
            })
        };
        Some(Layout {
            ts: find(&["timestamp", "time", "date", "datetime", "open_time", "ts"])?,
            open: find(&["open"])?,
            high: find(&["high"])?,
            low: find(&["low"])?,
            close: find(&["close"])?,
            volume: find(&["volume", "vol"])?,
            symbol: find(&["symbol", "ticker"]),
            trades: find(&["trades", "count", "number_of_trades"]),
        })
    }

    fn headerless(fields: usize) -> Layout {
        Layout {
            ts: 0,
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

/// A time field in nanoseconds: epoch seconds, ms, µs or ns (by size), or UTC text.
pub fn parse_time(s: &str) -> Option<i64> {
    let s = s.trim().trim_matches('"');
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
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
    flowsense_core::job::parse_instant(s).ok().map(|t| t.0)
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
    layout: Option<Layout>,
    symbols: HashMap<Symbol, SymbolState>,
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
            layout: None,
            symbols: HashMap::new(),
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
        let ts = parse_time(get(l.ts, "time")?).ok_or_else(|| un("time is not a timestamp"))?;
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
                    match Layout::from_header(&fields) {
                        Some(l) => {
                            self.layout = Some(l);
                            return Ok(());
                        }
                        None => {
                            return Err(Error::format(
                                &self.path,
                                "the header names no time, open, high, low, close and volume columns",
                            ));
                        }
                    }
                }
                let l = Layout::headerless(fields.len());
                self.layout = Some(l);
                l
            }
        };
        let line = self.line_no;
        let (symbol, mut bar) = match self.parse(&fields, &layout) {
            Ok(x) => x,
            Err((reason, detail)) => {
                self.dead(reason, detail, &raw, line);
                return Ok(());
            }
        };
        let fixed = self.interval;
        let st = self.symbols.entry(symbol.clone()).or_default();
        let t = bar.open_time.0;
        if let Some(last) = st.last
            && t <= last
        {
            let detail = format!("bar at {t} after one at {last}");
            self.dead(DeadLetterReason::TimeWentBack, detail, &raw, line);
            return Ok(());
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
        Ok(())
    }
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
