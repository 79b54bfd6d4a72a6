//! Binance raw websocket captures: `<local receive ns> <json>` lines, gzip or plain.
//!
//! Streams handled: `@depth` diffs (spot `U`/`u` and futures `pu` continuity), the REST depth
//! snapshot line, `@trade` and `@bookTicker`. Book reconstruction follows Binance's documented
//! procedure; diffs received before the first snapshot are held (up to a bound) and replayed
//! against it. A diff that breaks update-id continuity, would cross the book, or goes back in time
//! becomes a dead letter; the book is then marked as in a *gap* (`bbo.gap = true`) until the next
//! snapshot resyncs it. Consecutive files of one market (`_20240808`, `_20240809`) are read as one
//! stream when given together, so the second file continues the first's book.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use flate2::read::MultiGzDecoder;
use flowsense_core::num::parse_fixed;
use flowsense_core::{
    BboUpdate, DeadLetter, DeadLetterReason, DepthUpdate, MarketEvent, Price, Side, Size, Symbol,
    Trade, UnixNanos,
};
use rustc_hash::FxHashMap;
use serde::Deserialize;
use serde::de::{Deserializer, SeqAccess, Visitor};
use serde_json::value::RawValue;

use crate::book::L2Book;
use crate::{Error, Record, Result, SourceId};

mod wire;

/// Tuning for [`BinanceReader`].
#[derive(Clone, Debug)]
pub struct BinanceOptions {
    /// How far exchange time may go backwards within one stream before the message is refused.
    pub time_tolerance_ns: i64,
    /// Diffs held while waiting for the first snapshot; past this the book starts empty, in a gap.
    pub max_buffered_diffs: usize,
    /// Where the reader counts the bytes it reads, for progress.
    pub bytes_read: crate::BytesRead,
}

impl Default for BinanceOptions {
    fn default() -> Self {
        BinanceOptions {
            time_tolerance_ns: 1_000_000_000,
            max_buffered_diffs: 100_000,
            bytes_read: crate::BytesRead::default(),
        }
    }
}

/// Opens a file, transparently decompressing gzip.
pub fn open_text(path: &Path) -> Result<Box<dyn BufRead + Send>> {
    open_text_counted(path, &crate::BytesRead::default())
}

/// [`open_text`], counting the bytes read from the file into `read`.
pub fn open_text_counted(path: &Path, read: &crate::BytesRead) -> Result<Box<dyn BufRead + Send>> {
    open_text_buffered(path, 1 << 20, Some(read))
}

/// A line that could not be read as text: what its dead letter says.
#[derive(Debug)]
pub(crate) struct BadLine {
    pub(crate) reason: DeadLetterReason,
    pub(crate) detail: String,
    pub(crate) raw: String,
}

impl BadLine {
    /// The rest of a file cannot be read after `partial`, the start of its next line.
    pub(crate) fn unreadable(e: &std::io::Error, partial: &[u8]) -> Self {
        BadLine {
            reason: DeadLetterReason::Unreadable,
            detail: format!("the rest of the file cannot be read: {e}"),
            raw: String::from_utf8_lossy(partial).into_owned(),
        }
    }

    /// True when the file ends here (the reader cannot go on), false for one bad line.
    pub(crate) fn ends_file(&self) -> bool {
        self.reason == DeadLetterReason::Unreadable
    }
}

/// Reads one line into `line` like [`BufRead::read_line`] (`Ok(0)` at the end), except that a
/// line that is not UTF-8, or a file that cannot be read on (cut off, damaged), is a [`BadLine`]
/// for the dead letters rather than an error that stops the run.
pub(crate) fn read_text_line(
    r: &mut dyn BufRead,
    bytes: &mut Vec<u8>,
    line: &mut String,
) -> std::result::Result<usize, BadLine> {
    bytes.clear();
    line.clear();
    let n = r
        .read_until(b'\n', bytes)
        .map_err(|e| BadLine::unreadable(&e, bytes))?;
    match std::str::from_utf8(bytes) {
        Ok(text) => {
            line.push_str(text);
            Ok(n)
        }
        Err(_) => Err(BadLine {
            reason: DeadLetterReason::Unparsable,
            detail: "not UTF-8".into(),
            raw: String::from_utf8_lossy(bytes).into_owned(),
        }),
    }
}

/// Opens a file's first few kilobytes of text to look at, e.g. to guess its format: a small
/// buffer, so that sniffing a gzip file decompresses kilobytes, not [`open_text`]'s megabyte.
pub fn sniff_text(path: &Path) -> Result<Box<dyn BufRead + Send>> {
    open_text_buffered(path, 16 << 10, None)
}

fn open_text_buffered(
    path: &Path,
    capacity: usize,
    counted: Option<&crate::BytesRead>,
) -> Result<Box<dyn BufRead + Send>> {
    let mut file = File::open(path).map_err(|e| Error::io(path, e))?;
    let mut magic = [0u8; 2];
    let n = file.read(&mut magic).map_err(|e| Error::io(path, e))?;
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    let file: Box<dyn Read + Send> = match counted {
        Some(read) => Box::new(crate::Counted::new(file, read.clone())),
        None => Box::new(file),
    };
    Ok(if n == 2 && magic == [0x1f, 0x8b] {
        Box::new(BufReader::with_capacity(
            capacity,
            MultiGzDecoder::new(BufReader::with_capacity(capacity.min(1 << 16), file)),
        ))
    } else {
        Box::new(BufReader::with_capacity(capacity, file))
    })
}

/// The symbol a capture file is named for: its stem without the trailing `_YYYYMMDD`.
fn file_symbol(path: &Path) -> Option<String> {
    let stem = SourceId::from_path(path);
    let s = stem.as_str();
    let (head, tail) = s.rsplit_once('_')?;
    (tail.len() == 8 && tail.bytes().all(|b| b.is_ascii_digit())).then(|| head.to_string())
}

/// True when the capture's depth diffs carry `pu` (USD-M or COIN-M futures), judged from its
/// first thousand lines.
pub fn is_futures_capture(path: &Path) -> Result<bool> {
    let mut reader = sniff_text(path)?;
    let mut line = String::new();
    for _ in 0..1000 {
        line.clear();
        match reader.read_line(&mut line) {
            Ok(0) => break,
            Ok(_) if line.contains("@depth") => return Ok(line.contains("\"pu\":")),
            Ok(_) => {}
            Err(_) => break,
        }
    }
    Ok(false)
}

#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(borrow)]
    stream: &'a str,
    #[serde(borrow)]
    data: &'a RawValue,
}

/// Price levels parsed straight from `[["price","size"],...]` into numbers, without an
/// intermediate list of strings. A bad level does not fail the JSON parse: the first one's reason
/// is kept, so the line becomes a dead letter that says why.
#[derive(Debug)]
struct Levels(std::result::Result<Vec<(Price, Size)>, Bad>);

/// Levels as they are read, by serde's visitor or the one-pass reader alike: the checked levels
/// so far, or the first reason one failed (later ones are read but not checked).
struct LevelsSoFar {
    out: Vec<(Price, Size)>,
    bad: Option<Bad>,
}

impl LevelsSoFar {
    fn with_capacity(n: usize) -> Self {
        LevelsSoFar {
            out: Vec::with_capacity(n),
            bad: None,
        }
    }

    fn push(&mut self, p: Num<'_>, q: Num<'_>) {
        if self.bad.is_none() {
            match price(p).and_then(|p| Ok((p, size(q, true)?))) {
                Ok(level) => self.out.push(level),
                Err(why) => self.bad = Some(why),
            }
        }
    }

    fn finish(self) -> Levels {
        Levels(self.bad.map_or(Ok(self.out), Err))
    }
}

impl<'de> Deserialize<'de> for Levels {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct LevelsVisitor;
        impl<'de> Visitor<'de> for LevelsVisitor {
            type Value = Levels;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a list of [price, size] string pairs")
            }
            fn visit_seq<A: SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> std::result::Result<Levels, A::Error> {
                let mut levels = LevelsSoFar::with_capacity(seq.size_hint().unwrap_or(16));
                while let Some((p, q)) = seq.next_element::<(&'de str, &'de str)>()? {
                    levels.push(Num::text(p), Num::text(q));
                }
                Ok(levels.finish())
            }
        }
        d.deserialize_seq(LevelsVisitor)
    }
}

#[derive(Debug, Deserialize)]
#[allow(non_snake_case)]
struct DepthMsg {
    E: i64,
    T: Option<i64>,
    U: u64,
    u: u64,
    pu: Option<u64>,
    b: Levels,
    a: Levels,
}

#[derive(Deserialize)]
#[allow(non_snake_case)]
struct SnapshotMsg {
    lastUpdateId: u64,
    E: Option<i64>,
    T: Option<i64>,
    bids: Levels,
    asks: Levels,
}

#[derive(Debug, Deserialize)]
#[allow(non_snake_case)]
struct TradeMsg<'a> {
    T: i64,
    t: Option<u64>,
    #[serde(borrow)]
    p: Num<'a>,
    #[serde(borrow)]
    q: Num<'a>,
    m: bool,
}

/// An aggregate trade (`@aggTrade`): the trades of one taker order at one price, under the
/// aggregate id `a`.
#[derive(Debug, Deserialize)]
#[allow(non_snake_case)]
struct AggTradeMsg<'a> {
    T: i64,
    a: u64,
    #[serde(borrow)]
    p: Num<'a>,
    #[serde(borrow)]
    q: Num<'a>,
    m: bool,
}

#[derive(Debug, Deserialize)]
#[allow(non_snake_case)]
struct BookTickerMsg<'a> {
    u: u64,
    #[serde(borrow)]
    b: Num<'a>,
    #[serde(borrow)]
    B: Num<'a>,
    #[serde(borrow)]
    a: Num<'a>,
    #[serde(borrow)]
    A: Num<'a>,
    T: Option<i64>,
    E: Option<i64>,
}

/// A number as a message carries it, in a string: its text, and its fixed-point value where
/// the one-pass reader read it as it found the string's end (`wire::Cursor::decimal`; serde
/// leaves it to [`number`]). Shown as its text: the two readers agree when the texts do, since
/// the value read in passing is the one [`parse_fixed`] makes of the text (tested in `core`).
#[derive(Clone, Copy)]
struct Num<'a> {
    text: &'a str,
    raw: Option<i64>,
}

impl<'a> Num<'a> {
    /// Text whose value is yet to be read.
    fn text(text: &'a str) -> Self {
        Num { text, raw: None }
    }

    /// The value, or the dead letter's reason for the text.
    fn value(self, what: &str) -> std::result::Result<i64, Bad> {
        match self.raw {
            Some(raw) => Ok(raw),
            None => number(self.text, what),
        }
    }
}

impl std::fmt::Debug for Num<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.text.fmt(f)
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Num<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        <&'a str>::deserialize(d).map(Num::text)
    }
}

type Bad = (DeadLetterReason, String);

fn number(text: &str, what: &str) -> std::result::Result<i64, Bad> {
    parse_fixed(text.as_bytes()).map_err(|why| {
        let lower = text.to_ascii_lowercase();
        if lower.contains("nan") || lower.contains("inf") {
            (DeadLetterReason::NotFinite, format!("{what} {text:?}"))
        } else {
            (
                DeadLetterReason::Unparsable,
                format!("{what} {text:?}: {why}"),
            )
        }
    })
}

fn price(n: Num<'_>) -> std::result::Result<Price, Bad> {
    price_of(n.value("price")?, n.text)
}

/// A price read as `raw` from `text`, refused unless positive.
fn price_of(raw: i64, text: &str) -> std::result::Result<Price, Bad> {
    let p = Price::from_raw(raw);
    if !p.is_positive() {
        return Err((DeadLetterReason::NonPositivePrice, format!("price {text}")));
    }
    Ok(p)
}

fn size(n: Num<'_>, allow_zero: bool) -> std::result::Result<Size, Bad> {
    size_of(n.value("size")?, n.text, allow_zero)
}

/// A size read as `raw` from `text`, refused when negative (or zero, unless allowed).
fn size_of(raw: i64, text: &str, allow_zero: bool) -> std::result::Result<Size, Bad> {
    let s = Size::from_raw(raw);
    if s.raw() < 0 || (!allow_zero && s.raw() == 0) {
        return Err((DeadLetterReason::NonPositiveSize, format!("size {text}")));
    }
    Ok(s)
}

/// `s` split around the first `b` (an ASCII byte), by `memchr`: `str::split_once` with a `char`
/// pattern costs a `memcmp` call per match, which showed in profiles at a few per line.
fn split_at_byte(s: &str, b: u8) -> Option<(&str, &str)> {
    debug_assert!(b.is_ascii());
    let i = memchr::memchr(b, s.as_bytes())?;
    Some((&s[..i], &s[i + 1..]))
}

/// Where a line is: formatted only when a dead letter needs it.
#[derive(Clone)]
struct Pos {
    file: std::sync::Arc<str>,
    line: u64,
}

impl std::fmt::Display for Pos {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.file, self.line)
    }
}

/// A depth diff waiting for a snapshot, with what a dead letter would need.
struct Held {
    diff: DepthUpdate,
    position: Pos,
    raw: String,
}

/// Reconstruction state of one symbol.
struct SymbolState {
    symbol: Symbol,
    book: L2Book,
    /// A snapshot has been applied; diffs now chain onto `last_final`.
    synced: bool,
    /// The next diff is the first after a snapshot (`U <= L (+1) <= u` rule).
    first_after_snapshot: bool,
    snapshot_id: u64,
    last_final: u64,
    gap: bool,
    /// The depth stream carries `pu` (futures continuity rules).
    futures: bool,
    /// Previous sizes of the levels a diff changed, to undo a diff that would cross the book.
    undo: Vec<(Side, Price, Size)>,
    held: VecDeque<Held>,
    last_depth_ts: i64,
    last_trade_ts: i64,
    last_quote_ts: i64,
}

impl SymbolState {
    fn new(symbol: Symbol) -> Self {
        SymbolState {
            symbol,
            book: L2Book::default(),
            synced: false,
            first_after_snapshot: false,
            snapshot_id: 0,
            last_final: 0,
            gap: false,
            futures: false,
            undo: Vec::new(),
            held: VecDeque::new(),
            last_depth_ts: i64::MIN,
            last_trade_ts: i64::MIN,
            last_quote_ts: i64::MIN,
        }
    }

    fn bbo(&self, ts: UnixNanos, local_ts: Option<UnixNanos>, update_id: u64) -> MarketEvent {
        MarketEvent::Bbo(
            self.symbol.clone(),
            Box::new(BboUpdate {
                ts: Some(ts),
                local_ts,
                update_id: Some(update_id),
                bid: self.book.best_bid(),
                ask: self.book.best_ask(),
                gap: self.gap,
            }),
        )
    }

    /// Applies a diff onto the synced book, or says why not (the book is then unchanged).
    fn apply_diff(&mut self, d: &DepthUpdate) -> std::result::Result<bool, Bad> {
        let futures = self.futures;
        if self.first_after_snapshot {
            let l = self.snapshot_id;
            let stale = if futures {
                d.final_update_id < l
            } else {
                d.final_update_id <= l
            };
            if stale {
                return Ok(false);
            }
            let target = if futures { l } else { l + 1 };
            if !(d.first_update_id <= target && target <= d.final_update_id) {
                return Err((
                    DeadLetterReason::UpdateIdGap,
                    format!(
                        "first diff after snapshot {l} covers {}..={}",
                        d.first_update_id, d.final_update_id
                    ),
                ));
            }
        } else {
            let ok = match (futures, d.prev_final_update_id) {
                (true, Some(pu)) => pu == self.last_final,
                _ => d.first_update_id == self.last_final + 1,
            };
            if !ok {
                return Err((
                    DeadLetterReason::UpdateIdGap,
                    match d.prev_final_update_id {
                        Some(pu) if futures => {
                            format!("pu {pu} but previous u {}", self.last_final)
                        }
                        _ => format!("U {} but previous u {}", d.first_update_id, self.last_final),
                    },
                ));
            }
        }
        self.undo.clear();
        for (side, lv) in [(Side::Buy, &d.bids), (Side::Sell, &d.asks)] {
            for &(p, q) in lv {
                let old = self.book.replace_level(side, p, q);
                self.undo.push((side, p, old));
            }
        }
        if self.book.is_crossed() {
            let detail = format!(
                "best bid {} >= best ask {} after u {}",
                self.book.best_bid().map(|x| x.0).unwrap_or_default(),
                self.book.best_ask().map(|x| x.0).unwrap_or_default(),
                d.final_update_id
            );
            for &(side, p, q) in self.undo.iter().rev() {
                self.book.set_level(side, p, q);
            }
            return Err((DeadLetterReason::CrossedBook, detail));
        }
        Ok(true)
    }
}

/// Reads Binance captures; an iterator of [`Record`]s.
///
/// ```no_run
/// use flowsense_sources::binance::BinanceReader;
/// let reader = BinanceReader::open(vec!["btcusdt_20240808.gz".into()], Default::default())?;
/// for record in reader {
///     println!("{:?}", record?);
/// }
/// # Ok::<(), flowsense_sources::Error>(())
/// ```
pub struct BinanceReader {
    files: VecDeque<PathBuf>,
    /// The file being read and its source.
    current: Option<(PathBuf, SourceId)>,
    /// The current file's decompressed text (taken out while a line lying in its buffer is read).
    input: Option<Box<dyn BufRead + Send>>,
    file_symbol: Option<String>,
    file_name: std::sync::Arc<str>,
    file_is_futures: bool,
    line_no: u64,
    buf: Vec<u8>,
    out: VecDeque<Record>,
    symbols: FxHashMap<String, SymbolState>,
    opts: BinanceOptions,
    lines_read: u64,
}

impl BinanceReader {
    /// Reads the files in the order given, as one continuing stream per symbol.
    pub fn open(files: Vec<PathBuf>, opts: BinanceOptions) -> Result<Self> {
        for f in &files {
            if !f.is_file() {
                return Err(Error::format(f, "no such file"));
            }
        }
        Ok(BinanceReader {
            files: files.into(),
            current: None,
            input: None,
            file_symbol: None,
            file_name: std::sync::Arc::from(""),
            file_is_futures: false,
            line_no: 0,
            buf: Vec::with_capacity(1 << 16),
            out: VecDeque::new(),
            symbols: FxHashMap::default(),
            opts,
            lines_read: 0,
        })
    }

    /// Reads one stream of capture lines (`<local ns> <json>`) from `input`, as a file named
    /// `name` would be read: `symbol` is what the file name would say (the symbol its depth
    /// snapshots belong to) and `futures` whether its diffs chain by `pu`. A live feed passes
    /// the lines it receives through here, so history and live share this parser.
    ///
    /// ```
    /// use std::io::Cursor;
    /// use flowsense_sources::Record;
    /// use flowsense_sources::binance::BinanceReader;
    /// let line = r#"1723161255088176367 {"stream":"btcusdt@trade","data":{"e":"trade","E":1723161256322,"T":1723161256322,"s":"BTCUSDT","t":1,"p":"61800.30","q":"0.006","X":"MARKET","m":false}}"#;
    /// let r = BinanceReader::from_reader("live-btcusdt", "btcusdt", true,
    ///     Box::new(Cursor::new(format!("{line}\n"))), Default::default());
    /// let events = r.filter(|r| matches!(r, Ok(Record::Event(_)))).count();
    /// assert_eq!(events, 1);
    /// ```
    pub fn from_reader(
        name: &str,
        symbol: &str,
        futures: bool,
        input: Box<dyn BufRead + Send>,
        opts: BinanceOptions,
    ) -> Self {
        let id = SourceId::new(name);
        let mut out = VecDeque::new();
        out.push_back(Record::SourceStart(id.clone()));
        BinanceReader {
            files: VecDeque::new(),
            current: Some((PathBuf::from(name), id)),
            input: Some(input),
            file_symbol: Some(symbol.to_string()),
            file_name: std::sync::Arc::from(name),
            file_is_futures: futures,
            line_no: 0,
            buf: Vec::with_capacity(1 << 16),
            out,
            symbols: FxHashMap::default(),
            opts,
            lines_read: 0,
        }
    }

    /// A reader of live lines handed to it one at a time with [`BinanceReader::push_line`],
    /// named and keyed as [`BinanceReader::from_reader`]'s: the decoder a live feed runs on
    /// each message as it arrives, so it never waits for input it does not have.
    ///
    /// ```
    /// use flowsense_sources::Record;
    /// use flowsense_sources::binance::BinanceReader;
    /// let mut r = BinanceReader::live("live-btcusdt", "btcusdt", true, Default::default());
    /// let line = r#"1723161255088176367 {"stream":"btcusdt@aggTrade","data":{"e":"aggTrade","E":1723161256322,"a":7,"s":"BTCUSDT","p":"61800.30","q":"0.006","f":1,"l":2,"T":1723161256322,"m":true}}"#;
    /// let got: Vec<Record> = r.push_line(line).collect();
    /// assert!(matches!(got.as_slice(), [Record::SourceStart(_), Record::Event(_)]));
    /// assert!(matches!(r.finish().last(), Some(Record::SourceDone(_))));
    /// ```
    pub fn live(name: &str, symbol: &str, futures: bool, opts: BinanceOptions) -> Self {
        let mut r = Self::from_reader(name, symbol, futures, Box::new(std::io::empty()), opts);
        r.input = None;
        r
    }

    /// Decodes one line (`<local ns> <json>`, no newline needed) and gives what it made:
    /// events, dead letters, and the books' resync records.
    pub fn push_line(&mut self, line: &str) -> std::collections::vec_deque::Drain<'_, Record> {
        self.take_line(line.as_bytes());
        self.out.drain(..)
    }

    /// Ends a live stream: diffs still held for a snapshot start their books without one (as
    /// at a file's end), then the source's end.
    pub fn finish(&mut self) -> std::collections::vec_deque::Drain<'_, Record> {
        self.finish_all();
        if let Some((_, id)) = self.current.take() {
            self.out.push_back(Record::SourceDone(id));
        }
        self.out.drain(..)
    }

    /// Lines read so far, across files.
    pub fn lines_read(&self) -> u64 {
        self.lines_read
    }

    /// The line being read.
    fn here(&self) -> Pos {
        Pos {
            file: self.file_name.clone(),
            line: self.line_no,
        }
    }

    /// The current file cannot be read on (cut off or damaged): what was read of its last line
    /// becomes a dead letter, and the file ends here. The next file of the chain goes on; its
    /// update ids tell whether the books continue or wait for a snapshot.
    fn unreadable(&mut self, e: &std::io::Error) {
        self.line_no += 1;
        let position = self.here();
        let bad = BadLine::unreadable(e, &self.buf);
        self.buf.clear();
        self.dead(position, (bad.reason, bad.detail), &bad.raw);
    }

    fn dead(&mut self, position: Pos, (reason, detail): Bad, raw: &str) {
        let source = self
            .current
            .as_ref()
            .map(|c| c.1.to_string())
            .unwrap_or_default();
        self.out.push_back(Record::Dead(DeadLetter {
            source,
            position: position.to_string(),
            reason,
            detail,
            raw: raw.to_string(),
        }));
    }

    fn state(&mut self, key: &str) -> std::result::Result<&mut SymbolState, Bad> {
        if !self.symbols.contains_key(key) {
            // USD-M perpetuals share their stream names with spot pairs (`btcusdt`): name them
            // `BTCUSDT-PERP` so the two markets never share a lake partition. COIN-M names
            // (`btcusd_perp`) already say what they are.
            let name = if self.file_is_futures && !key.contains('_') {
                format!("{key}-perp")
            } else {
                key.to_string()
            };
            let sym =
                Symbol::new(&name).map_err(|e| (DeadLetterReason::Unparsable, e.to_string()))?;
            self.symbols.insert(key.to_string(), SymbolState::new(sym));
        }
        Ok(self.symbols.get_mut(key).expect("inserted above"))
    }

    fn handle_line(&mut self, line: &str) {
        let position = self.here();
        let Some((local, json)) = split_at_byte(line, b' ') else {
            return self.dead(
                position,
                (DeadLetterReason::Unparsable, "no local timestamp".into()),
                line,
            );
        };
        let Ok(local) = local.parse::<i64>() else {
            return self.dead(
                position,
                (
                    DeadLetterReason::Unparsable,
                    format!("local timestamp {local:?}"),
                ),
                line,
            );
        };
        let local = Some(UnixNanos(local));
        // Fast path: `{"stream":"NAME","data":{...}}` exactly as Binance sends it, parsed in one
        // pass; anything else goes through the general envelope parser below.
        let fast = json.strip_prefix("{\"stream\":\"").and_then(|rest| {
            let q = memchr::memchr(b'"', rest.as_bytes())?;
            let data = rest[q..].strip_prefix("\",\"data\":")?.strip_suffix('}')?;
            Some((&rest[..q], data))
        });
        let result = if let Some((stream, data)) = fast {
            self.handle_stream(stream, data, local, &position, line)
        } else if json.starts_with("{\"stream\"") {
            match serde_json::from_str::<Envelope<'_>>(json) {
                Ok(env) => self.handle_stream(env.stream, env.data.get(), local, &position, line),
                Err(e) => Err((DeadLetterReason::Unparsable, e.to_string())),
            }
        } else if json.starts_with("{\"lastUpdateId\"") {
            match serde_json::from_str::<SnapshotMsg>(json) {
                Ok(snap) => self.handle_snapshot(snap, local),
                Err(e) => Err((DeadLetterReason::Unparsable, e.to_string())),
            }
        } else if json.trim_start().starts_with('{')
            && serde_json::from_str::<&RawValue>(json).is_ok()
        {
            Err((
                DeadLetterReason::UnknownMessage,
                "neither a combined-stream message nor a depth snapshot".into(),
            ))
        } else {
            Err((DeadLetterReason::Unparsable, "not a JSON object".into()))
        };
        if let Err(bad) = result {
            self.dead(position, bad, line);
        }
    }

    fn handle_stream(
        &mut self,
        stream: &str,
        data: &str,
        local: Option<UnixNanos>,
        position: &Pos,
        line: &str,
    ) -> std::result::Result<(), Bad> {
        let (sym, kind) = split_at_byte(stream, b'@').ok_or_else(|| {
            (
                DeadLetterReason::UnknownMessage,
                format!("stream {stream:?}"),
            )
        })?;
        let tol = self.opts.time_tolerance_ns;
        if kind.starts_with("depth") {
            let m = match wire::depth(data) {
                Some(m) => m,
                None => serde_json::from_str::<DepthMsg>(data)
                    .map_err(|e| (DeadLetterReason::Unparsable, e.to_string()))?,
            };
            let diff = DepthUpdate {
                ts: UnixNanos::from_millis(m.T.unwrap_or(m.E)),
                local_ts: local,
                first_update_id: m.U,
                final_update_id: m.u,
                prev_final_update_id: m.pu,
                bids: m.b.0?,
                asks: m.a.0?,
                is_snapshot: false,
            };
            if diff.first_update_id > diff.final_update_id {
                return Err((
                    DeadLetterReason::Unparsable,
                    format!("U {} > u {}", m.U, m.u),
                ));
            }
            let max_held = self.opts.max_buffered_diffs;
            let st = self.state(sym)?;
            st.futures = m.pu.is_some();
            if diff.ts.0 < st.last_depth_ts.saturating_sub(tol) {
                return Err((
                    DeadLetterReason::TimeWentBack,
                    format!("ts {} after {}", diff.ts.0, st.last_depth_ts),
                ));
            }
            st.last_depth_ts = st.last_depth_ts.max(diff.ts.0);
            if !st.synced {
                st.held.push_back(Held {
                    diff,
                    position: position.clone(),
                    raw: line.to_string(),
                });
                if st.held.len() > max_held {
                    self.start_without_snapshot(sym);
                }
                return Ok(());
            }
            self.apply_live(sym, diff, position, line);
            Ok(())
        } else if kind == "trade" || kind == "aggTrade" {
            let m = if kind == "aggTrade" {
                let a = serde_json::from_str::<AggTradeMsg<'_>>(data)
                    .map_err(|e| (DeadLetterReason::Unparsable, e.to_string()))?;
                TradeMsg {
                    T: a.T,
                    t: Some(a.a),
                    p: a.p,
                    q: a.q,
                    m: a.m,
                }
            } else {
                match wire::trade(data) {
                    Some(m) => m,
                    None => serde_json::from_str::<TradeMsg<'_>>(data)
                        .map_err(|e| (DeadLetterReason::Unparsable, e.to_string()))?,
                }
            };
            let trade = Trade {
                ts: UnixNanos::from_millis(m.T),
                local_ts: local,
                trade_id: m.t,
                price: price(m.p)?,
                size: size(m.q, false)?,
                aggressor: if m.m { Side::Sell } else { Side::Buy },
            };
            let st = self.state(sym)?;
            if trade.ts.0 < st.last_trade_ts.saturating_sub(tol) {
                return Err((
                    DeadLetterReason::TimeWentBack,
                    format!("ts {} after {}", trade.ts.0, st.last_trade_ts),
                ));
            }
            st.last_trade_ts = st.last_trade_ts.max(trade.ts.0);
            let ev = MarketEvent::Trade(st.symbol.clone(), trade);
            self.out.push_back(Record::Event(ev));
            Ok(())
        } else if kind == "bookTicker" {
            let m = match wire::book_ticker(data) {
                Some(m) => m,
                None => serde_json::from_str::<BookTickerMsg<'_>>(data)
                    .map_err(|e| (DeadLetterReason::Unparsable, e.to_string()))?,
            };
            let bid = (price(m.b)?, size(m.B, true)?);
            let ask = (price(m.a)?, size(m.A, true)?);
            if bid.0 >= ask.0 {
                return Err((
                    DeadLetterReason::CrossedBook,
                    format!("bid {} >= ask {}", bid.0, ask.0),
                ));
            }
            let ts = m.T.or(m.E).map(UnixNanos::from_millis);
            let st = self.state(sym)?;
            if let Some(ts) = ts {
                if ts.0 < st.last_quote_ts.saturating_sub(tol) {
                    return Err((
                        DeadLetterReason::TimeWentBack,
                        format!("ts {} after {}", ts.0, st.last_quote_ts),
                    ));
                }
                st.last_quote_ts = st.last_quote_ts.max(ts.0);
            }
            let q = BboUpdate {
                ts,
                local_ts: local,
                update_id: Some(m.u),
                bid: Some(bid),
                ask: Some(ask),
                gap: false,
            };
            let ev = MarketEvent::Quote(st.symbol.clone(), Box::new(q));
            self.out.push_back(Record::Event(ev));
            Ok(())
        } else {
            Err((
                DeadLetterReason::UnknownMessage,
                format!("stream {stream:?}"),
            ))
        }
    }

    /// The symbol key a snapshot line belongs to: the file's symbol, else the only one seen.
    fn snapshot_key(&self) -> Option<String> {
        if let Some(fs) = &self.file_symbol {
            let lower = fs.to_ascii_lowercase();
            if self.symbols.contains_key(&lower) || self.symbols.is_empty() {
                return Some(lower);
            }
        }
        (self.symbols.len() == 1)
            .then(|| self.symbols.keys().next().cloned())
            .flatten()
    }

    fn handle_snapshot(
        &mut self,
        m: SnapshotMsg,
        local: Option<UnixNanos>,
    ) -> std::result::Result<(), Bad> {
        let key = self.snapshot_key().ok_or((
            DeadLetterReason::UnknownMessage,
            "depth snapshot for an unknown symbol".into(),
        ))?;
        let bids = m.bids.0?;
        let asks = m.asks.0?;
        let st = self.state(&key)?;
        // Spot snapshots carry no exchange time: use the latest exchange time seen on the depth stream.
        let ts = match m.T.or(m.E) {
            Some(ms) => UnixNanos::from_millis(ms),
            None if st.last_depth_ts > i64::MIN => UnixNanos(st.last_depth_ts),
            None => local.unwrap_or_default(),
        };
        let snap = DepthUpdate {
            ts,
            local_ts: local,
            first_update_id: m.lastUpdateId,
            final_update_id: m.lastUpdateId,
            prev_final_update_id: None,
            bids,
            asks,
            is_snapshot: true,
        };
        st.book.clear();
        for &(p, q) in &snap.bids {
            st.book.set_level(Side::Buy, p, q);
        }
        for &(p, q) in &snap.asks {
            st.book.set_level(Side::Sell, p, q);
        }
        st.synced = true;
        st.first_after_snapshot = true;
        st.snapshot_id = m.lastUpdateId;
        st.last_final = m.lastUpdateId;
        st.gap = false;
        let sym = st.symbol.clone();
        let bbo = st.bbo(ts, local, m.lastUpdateId);
        let held: Vec<Held> = st.held.drain(..).collect();
        self.out
            .push_back(Record::Event(MarketEvent::Depth(sym, Box::new(snap))));
        self.out.push_back(Record::Event(bbo));
        for h in held {
            self.apply_live(&key, h.diff, &h.position, &h.raw);
        }
        Ok(())
    }

    /// Applies a diff to a synced book and emits its rows (or its dead letter).
    fn apply_live(&mut self, key: &str, diff: DepthUpdate, position: &Pos, raw: &str) {
        let st = self
            .symbols
            .get_mut(key)
            .expect("state exists for a live diff");
        match st.apply_diff(&diff) {
            // A diff the snapshot already covers (u <= lastUpdateId) is part of the protocol,
            // not bad data: it is skipped, and not emitted, so that replaying the emitted depth
            // updates in order rebuilds exactly this book.
            Ok(false) => {}
            Ok(true) => {
                st.first_after_snapshot = false;
                st.last_final = diff.final_update_id;
                let bbo = st.bbo(diff.ts, diff.local_ts, diff.final_update_id);
                let sym = st.symbol.clone();
                self.out
                    .push_back(Record::Event(MarketEvent::Depth(sym, Box::new(diff))));
                self.out.push_back(Record::Event(bbo));
            }
            Err(bad) => {
                // The book may now miss updates: mark it until a snapshot resyncs it, and chain
                // continuity on from the refused message so one gap is reported once.
                st.gap = true;
                st.first_after_snapshot = false;
                st.last_final = diff.final_update_id;
                self.dead(position.clone(), bad, raw);
            }
        }
    }

    /// No snapshot came: start from an empty book, in a gap, and replay what was held.
    fn start_without_snapshot(&mut self, key: &str) {
        let Some(st) = self.symbols.get_mut(key) else {
            return;
        };
        if st.synced || st.held.is_empty() {
            return;
        }
        st.synced = true;
        st.gap = true;
        st.first_after_snapshot = false;
        let held: Vec<Held> = st.held.drain(..).collect();
        if let Some(first) = held.first() {
            st.last_final = first
                .diff
                .prev_final_update_id
                .unwrap_or(first.diff.first_update_id.saturating_sub(1));
        }
        for h in held {
            self.apply_live(key, h.diff, &h.position, &h.raw);
        }
    }

    fn finish_all(&mut self) {
        let keys: Vec<String> = self.symbols.keys().cloned().collect();
        for k in keys {
            self.start_without_snapshot(&k);
        }
    }

    fn fill(&mut self) -> Result<bool> {
        loop {
            if !self.out.is_empty() {
                return Ok(true);
            }
            if self.current.is_none() {
                let Some(path) = self.files.pop_front() else {
                    self.finish_all();
                    return Ok(!self.out.is_empty());
                };
                // A file of the chain that cannot be read at all is a dead letter; the chain
                // goes on with the next day (whose update ids tell whether the book continues).
                let opened = open_text_counted(&path, &self.opts.bytes_read)
                    .and_then(|r| Ok((r, is_futures_capture(&path)?)));
                let (reader, futures) = match opened {
                    Ok(opened) => opened,
                    Err(e) => {
                        self.out.extend(crate::unreadable_file(&path, &e));
                        continue;
                    }
                };
                self.file_symbol = file_symbol(&path);
                self.file_is_futures = futures;
                self.file_name = std::sync::Arc::from(
                    path.file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_default(),
                );
                let id = SourceId::for_file(&path).map_err(|e| Error::io(&path, e))?;
                self.out.push_back(Record::SourceStart(id.clone()));
                self.current = Some((path.clone(), id));
                self.input = Some(reader);
                self.line_no = 0;
            }
            // A line that lies whole in the reader's buffer (a MiB) is read where it lies; only
            // one that straddles the buffer's end, or a last line without a newline, is gathered
            // in `buf` first.
            let mut reader = self.input.take().expect("opened with the file");
            let mut in_place = None;
            let filled = loop {
                match reader.fill_buf() {
                    Ok(text) => {
                        if let Some(i) = memchr::memchr(b'\n', text) {
                            self.take_line(&text[..i]);
                            in_place = Some(i + 1);
                        }
                        break Ok(());
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => break Err(e),
                }
            };
            if let Some(n) = in_place {
                reader.consume(n);
                self.input = Some(reader);
                continue;
            }
            self.buf.clear();
            let n = match filled.and_then(|()| reader.read_until(b'\n', &mut self.buf)) {
                Ok(n) => n,
                Err(e) => {
                    self.unreadable(&e);
                    0
                }
            };
            if n == 0 {
                let id = self.current.as_ref().expect("opened above").1.clone();
                // Held diffs of this file stay held: the next file may carry the snapshot. They
                // will be written with the source that resolves them.
                if self.files.is_empty() {
                    self.finish_all();
                }
                self.out.push_back(Record::SourceDone(id));
                self.current = None;
                continue;
            }
            self.input = Some(reader);
            let buf = std::mem::take(&mut self.buf);
            self.take_line(&buf);
            self.buf = buf;
        }
    }

    /// One line of the current file, its newline left off.
    fn take_line(&mut self, mut line: &[u8]) {
        self.line_no += 1;
        self.lines_read += 1;
        while let [rest @ .., b'\n' | b'\r'] = line {
            line = rest;
        }
        if line.is_empty() {
            return;
        }
        match std::str::from_utf8(line) {
            Ok(line) => self.handle_line(line),
            Err(_) => {
                let position = self.here();
                let raw = String::from_utf8_lossy(line).into_owned();
                self.dead(
                    position,
                    (DeadLetterReason::Unparsable, "not UTF-8".into()),
                    &raw,
                );
            }
        }
    }
}

impl Iterator for BinanceReader {
    type Item = Result<Record>;

    fn next(&mut self) -> Option<Self::Item> {
        match self.fill() {
            Ok(true) => self.out.pop_front().map(Ok),
            Ok(false) => None,
            Err(e) => {
                self.current = None;
                self.input = None;
                self.files.clear();
                Some(Err(e))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn read_all(files: Vec<PathBuf>) -> Vec<Record> {
        BinanceReader::open(files, BinanceOptions::default())
            .unwrap()
            .map(|r| r.unwrap())
            .collect()
    }

    /// A stream of lines reads as the file of the same lines does (the live path's parser is
    /// the file reader's).
    #[test]
    fn lines_from_a_reader_read_as_the_file() {
        let path = crate::bundled("usdm/btcusdt_20240808.gz");
        let from_file = read_all(vec![path.clone()]);
        let text = open_text(&path).unwrap();
        let from_reader: Vec<Record> = BinanceReader::from_reader(
            "btcusdt_20240808.gz",
            "btcusdt",
            true,
            text,
            BinanceOptions::default(),
        )
        .map(|r| r.unwrap())
        .collect();
        let events = |rs: &[Record]| -> Vec<MarketEvent> {
            rs.iter()
                .filter_map(|r| match r {
                    Record::Event(e) => Some(e.clone()),
                    _ => None,
                })
                .collect()
        };
        let dead = |rs: &[Record]| rs.iter().filter(|r| matches!(r, Record::Dead(_))).count();
        assert!(events(&from_file).len() > 10_000);
        assert_eq!(events(&from_reader), events(&from_file));
        assert_eq!(dead(&from_reader), dead(&from_file));
    }

    /// The reconstructed book's best bid and ask equal every bookTicker message that carries the
    /// update id of an applied diff.
    fn book_matches_book_ticker(rel: &str) -> (usize, usize, usize) {
        let records = read_all(vec![crate::bundled(rel)]);
        let mut book_at: HashMap<u64, &BboUpdate> = HashMap::new();
        let mut quotes = Vec::new();
        let mut dead = 0;
        for r in &records {
            match r {
                Record::Event(MarketEvent::Bbo(_, b)) if !b.gap => {
                    book_at.insert(b.update_id.unwrap(), b);
                }
                Record::Event(MarketEvent::Quote(_, q)) => quotes.push(q),
                Record::Dead(d) => {
                    eprintln!("dead letter: {} {}", d.position, d.reason_text());
                    dead += 1;
                }
                _ => {}
            }
        }
        let mut compared = 0;
        let mut matched = 0;
        for q in quotes {
            if let Some(b) = book_at.get(&q.update_id.unwrap()) {
                compared += 1;
                if b.bid == q.bid && b.ask == q.ask {
                    matched += 1;
                } else {
                    eprintln!(
                        "mismatch at u {:?}: book {:?}/{:?} ticker {:?}/{:?}",
                        q.update_id, b.bid, b.ask, q.bid, q.ask
                    );
                }
            }
        }
        eprintln!(
            "{rel}: {matched}/{compared} bookTicker messages at an applied diff's update id match the book; {dead} dead letters"
        );
        (compared, matched, dead)
    }

    #[test]
    fn usdm_book_equals_book_ticker() {
        let (compared, matched, dead) = book_matches_book_ticker("usdm/btcusdt_20240808.gz");
        assert!(compared > 100, "only {compared} comparable ticks");
        assert_eq!(matched, compared);
        assert_eq!(dead, 0);
    }

    #[test]
    fn spot_and_coin_m_books_equal_book_ticker() {
        for rel in ["spot/btcusdt_20240808.gz", "cm/btcusd_perp_20240808.gz"] {
            let (compared, matched, dead) = book_matches_book_ticker(rel);
            assert!(compared > 50, "{rel}: only {compared} comparable ticks");
            assert_eq!(matched, compared, "{rel}");
            assert_eq!(dead, 0, "{rel}");
        }
    }

    /// A gap marks the book until the next snapshot resyncs it; spot rules (`U = prev u + 1`).
    #[test]
    fn a_gap_is_marked_until_the_next_snapshot_resyncs() {
        let depth = |u0: u64, u1: u64, t: i64, px: &str| {
            format!(
                r#"{t}000000 {{"stream":"xyzusdt@depth@100ms","data":{{"e":"depthUpdate","E":{t},"s":"XYZUSDT","U":{u0},"u":{u1},"b":[["{px}","1"]],"a":[]}}}}"#
            )
        };
        let snap = |id: u64, t: i64| {
            format!(
                r#"{t}000000 {{"lastUpdateId":{id},"bids":[["10.0","1"]],"asks":[["11.0","1"]]}}"#
            )
        };
        let lines = [
            depth(1, 5, 1_000, "10.1"), // held, then applied over snapshot 4 (U <= 5 <= u)
            snap(4, 1_001),
            depth(6, 7, 1_002, "10.2"),   // continues
            depth(9, 9, 1_003, "10.3"),   // gap: 8 missing -> dead letter, book in a gap
            depth(10, 10, 1_004, "10.4"), // chains on, still in the gap
            snap(20, 1_005),              // resync
            depth(18, 21, 1_006, "10.5"), // first after the snapshot (U <= 21 <= u)
            depth(22, 22, 1_007, "10.6"),
        ];
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("xyzusdt_20240808.txt");
        std::fs::write(&path, lines.join("\n")).unwrap();
        let recs = read_all(vec![path]);
        let books: Vec<(u64, bool)> = recs
            .iter()
            .filter_map(|r| match r {
                Record::Event(MarketEvent::Bbo(_, b)) => Some((b.update_id.unwrap(), b.gap)),
                _ => None,
            })
            .collect();
        assert_eq!(
            books,
            vec![
                (4, false),
                (5, false),
                (7, false),
                (10, true),
                (20, false),
                (21, false),
                (22, false)
            ]
        );
        let dead: Vec<&DeadLetter> = recs
            .iter()
            .filter_map(|r| {
                if let Record::Dead(d) = r {
                    Some(d)
                } else {
                    None
                }
            })
            .collect();
        assert_eq!(dead.len(), 1);
        assert_eq!(dead[0].reason, DeadLetterReason::UpdateIdGap);
        assert_eq!(dead[0].position, "xyzusdt_20240808.txt:4");
    }

    #[test]
    fn trades_carry_the_aggressor_and_both_clocks() {
        let records = read_all(vec![crate::bundled("usdm/btcusdt_20240808.gz")]);
        let trades: Vec<&Trade> = records
            .iter()
            .filter_map(|r| match r {
                Record::Event(MarketEvent::Trade(_, t)) => Some(t),
                _ => None,
            })
            .collect();
        assert!(trades.len() > 1000);
        assert!(
            trades.iter().any(|t| t.aggressor == Side::Buy)
                && trades.iter().any(|t| t.aggressor == Side::Sell)
        );
        assert!(
            trades
                .iter()
                .all(|t| t.local_ts.is_some() && t.ts.0 > 1_723_000_000_000_000_000)
        );
        assert!(
            matches!(records.last(), Some(Record::SourceDone(id)) if id.as_str().starts_with("btcusdt_20240808-"))
        );
        assert!(matches!(&records[0], Record::SourceStart(_)));
        assert!(matches!(&records[1], Record::Event(e) if e.symbol().as_str() == "BTCUSDT-PERP"));
    }

    /// Lines are read where they lie in the decompressor's 1 MiB buffer, and gathered when they
    /// straddle its end: over 3 MiB of trades, every line is read once, in order, whatever its
    /// ending (CRLF, none at the file's end), and a line that is not UTF-8 still is a dead letter
    /// at its own line number.
    #[test]
    fn every_line_is_read_once_across_the_reader_buffer() {
        use std::io::Write;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("btcusdt_20240808.gz");
        let mut gz = flate2::write::GzEncoder::new(
            std::fs::File::create(&path).unwrap(),
            flate2::Compression::fast(),
        );
        let n = 20_000u64;
        let bad = 7_777u64;
        for i in 1..=n {
            if i == bad {
                gz.write_all(b"1 \xff\xfe not text\n").unwrap();
                continue;
            }
            // Lines of varying length, so that line ends fall anywhere in the buffer.
            let pad = "x".repeat((i % 97) as usize);
            let ending = if i % 3 == 0 {
                "\r\n"
            } else if i == n {
                ""
            } else {
                "\n"
            };
            write!(
                gz,
                "{} {{\"stream\":\"btcusdt@trade\",\"data\":{{\"e\":\"trade\",\"E\":{ts},\"T\":{ts},\"s\":\"BTCUSDT\",\"t\":{i},\"p\":\"61804.8\",\"q\":\"0.001\",\"X\":\"{pad}\",\"m\":false}}}}{ending}",
                1_723_161_256_419_684_465u64 + i,
                ts = 1_723_161_257_000u64 + i,
            )
            .unwrap();
        }
        gz.finish().unwrap();
        let mut reader = BinanceReader::open(vec![path], BinanceOptions::default()).unwrap();
        let records: Vec<Record> = reader.by_ref().map(|r| r.unwrap()).collect();
        let ids: Vec<u64> = records
            .iter()
            .filter_map(|r| match r {
                Record::Event(MarketEvent::Trade(_, t)) => t.trade_id,
                _ => None,
            })
            .collect();
        let want: Vec<u64> = (1..=n).filter(|&i| i != bad).collect();
        assert_eq!(ids, want);
        let dead = crate::dead_letters(&records);
        assert_eq!(dead.len(), 1);
        assert_eq!(dead[0].position, format!("btcusdt_20240808.gz:{bad}"));
        assert_eq!(reader.lines_read(), n);
    }
}
