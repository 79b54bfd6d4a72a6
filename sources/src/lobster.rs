//! LOBSTER, the academic NASDAQ L3 format: `TICKER_DATE_START_END_message_LEVEL.csv` with its
//! `..._orderbook_LEVEL.csv` companion.
//!
//! Message columns: time (seconds after midnight, decimals), type (1 add, 2 partial cancel,
//! 3 delete, 4 visible execution, 5 hidden execution, 6 cross, 7 halt), order id, size, price
//! (dollars x 10000), direction (1 buy, -1 sell; for executions, the resting order's side).
//! The orderbook file holds the book after each message: ask price 1, ask size 1, bid price 1,
//! bid size 1, ask price 2, ... with empty levels as 9999999999 / -9999999999 and size 0.
//!
//! Orders resting before the file starts are known only in aggregate, through the first orderbook
//! row: the reader undoes the first message on that row and seeds the book with the result. When
//! the orderbook file is there, every reconstructed book is checked against its row
//! ([`LobsterReader::check`]); volume that the row shows at a price newly revealed at the edge of
//! the visible depth (orders LOBSTER never sent because they rested deeper) is seeded as it appears.
//!
//! Times are taken as seconds after midnight UTC of the file's date, shifted by
//! [`LobsterOptions::utc_offset_seconds`] (NASDAQ files are New York time: -4 h in summer).

use std::collections::VecDeque;
use std::io::BufRead;
use std::io::Write;
use std::path::{Path, PathBuf};

use flowsense_core::{
    DeadLetter, DeadLetterReason, L3Action, OrderEvent, OrderId, Price, Side, Size, Symbol,
    UnixNanos,
};

use crate::binance::{open_text, open_text_counted, read_text_line};
use crate::book::{L2Book, L3Replay};
use crate::{Error, Record, Result, SourceId};

/// Empty ask level price in the orderbook file.
pub const EMPTY_ASK: i64 = 9_999_999_999;
/// Empty bid level price in the orderbook file.
pub const EMPTY_BID: i64 = -9_999_999_999;

/// Options for [`LobsterReader`].
#[derive(Clone, Debug, Default)]
pub struct LobsterOptions {
    /// Added to the file's clock to get UTC (New York summer time is -4 h: `4 * 3600`, since
    /// UTC = local + 4 h).
    pub utc_offset_seconds: i64,
    /// How far time may go backwards before a message is refused.
    pub time_tolerance_ns: i64,
    /// Where the reader counts the bytes it reads of the message file, for progress.
    pub bytes_read: crate::BytesRead,
}

/// What a LOBSTER file name says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LobsterName {
    /// Ticker.
    pub ticker: String,
    /// Midnight UTC of the file's date.
    pub date: UnixNanos,
    /// Number of levels in the orderbook file.
    pub levels: usize,
}

/// Parses `TICKER_YYYY-MM-DD_START_END_message_LEVEL.csv` (or `_orderbook_`).
///
/// ```
/// use flowsense_sources::lobster::parse_name;
/// let n = parse_name("AAPL_2012-06-21_34200000_57600000_message_10.csv".as_ref()).unwrap();
/// assert_eq!((n.ticker.as_str(), n.levels), ("AAPL", 10));
/// ```
pub fn parse_name(path: &Path) -> Option<LobsterName> {
    let name = path.file_name()?.to_str()?;
    let stem = name
        .strip_suffix(".csv")
        .or_else(|| name.strip_suffix(".csv.gz"))?;
    let parts: Vec<&str> = stem.split('_').collect();
    if parts.len() < 6 {
        return None;
    }
    let n = parts.len();
    if parts[n - 2] != "message" && parts[n - 2] != "orderbook" {
        return None;
    }
    let levels = parts[n - 1].parse().ok()?;
    let date = parts[n - 5];
    let ticker = parts[..n - 5].join("_");
    let mut ymd = date.split('-');
    let y: i64 = ymd.next()?.parse().ok()?;
    let m: u32 = ymd.next()?.parse().ok()?;
    let d: u32 = ymd.next()?.parse().ok()?;
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) {
        return None;
    }
    Some(LobsterName {
        ticker,
        date: UnixNanos::from_ymd(y, m, d),
        levels,
    })
}

/// The orderbook file that goes with a message file.
pub fn orderbook_path(message: &Path) -> PathBuf {
    let name = message
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    message.with_file_name(name.replacen("_message_", "_orderbook_", 1))
}

/// How well the reconstructed book matched the orderbook file.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BookCheck {
    /// Rows compared.
    pub rows: u64,
    /// Rows where every visible level matched.
    pub matched: u64,
    /// Levels seeded because the row revealed volume the messages never carried.
    pub revealed: u64,
}

type Levels = Vec<(Price, Size)>;

/// One orderbook row as (asks, bids), best first, empty levels dropped.
fn parse_book_row(line: &str, levels: usize) -> Option<(Levels, Levels)> {
    let mut asks = Vec::with_capacity(levels);
    let mut bids = Vec::with_capacity(levels);
    let mut it = line.split(',');
    for _ in 0..levels {
        let ap: i64 = it.next()?.trim().parse().ok()?;
        let asz: i64 = it.next()?.trim().parse().ok()?;
        let bp: i64 = it.next()?.trim().parse().ok()?;
        let bsz: i64 = it.next()?.trim().parse().ok()?;
        if ap != EMPTY_ASK && asz > 0 {
            asks.push((Price::from_scaled(ap, 4), Size::from_units(asz)));
        }
        if bp != EMPTY_BID && bsz > 0 {
            bids.push((Price::from_scaled(bp, 4), Size::from_units(bsz)));
        }
    }
    Some((asks, bids))
}

/// A parsed message row.
struct Message {
    ts: UnixNanos,
    kind: u8,
    order_id: u64,
    size: i64,
    price: i64,
    side: Side,
}

fn parse_message(
    line: &str,
    midnight: UnixNanos,
    offset_ns: i64,
) -> std::result::Result<Message, (DeadLetterReason, String)> {
    let f: Vec<&str> = line.split(',').map(str::trim).collect();
    if f.len() < 6 {
        return Err((
            DeadLetterReason::Unparsable,
            format!("{} columns, expected 6", f.len()),
        ));
    }
    let lower = line.to_ascii_lowercase();
    if lower.contains("nan") || lower.contains("inf") {
        return Err((DeadLetterReason::NotFinite, "NaN or infinity".into()));
    }
    let secs = flowsense_core::num::parse_fixed(f[0].as_bytes()).map_err(|w| {
        (
            DeadLetterReason::Unparsable,
            format!("time {:?}: {w}", f[0]),
        )
    })?;
    let int = |i: usize, what: &str| {
        f[i].parse::<i64>()
            .map_err(|_| (DeadLetterReason::Unparsable, format!("{what} {:?}", f[i])))
    };
    let kind = int(1, "type")?;
    if !(1..=7).contains(&kind) {
        return Err((DeadLetterReason::Unparsable, format!("type {kind}")));
    }
    let order_id = f[2]
        .parse::<u64>()
        .map_err(|_| (DeadLetterReason::Unparsable, format!("order id {:?}", f[2])))?;
    let size = int(3, "size")?;
    let price = int(4, "price")?;
    let side = match int(5, "direction")? {
        1 => Side::Buy,
        -1 => Side::Sell,
        d => return Err((DeadLetterReason::Unparsable, format!("direction {d}"))),
    };
    Ok(Message {
        ts: UnixNanos(midnight.0 + secs + offset_ns),
        kind: kind as u8,
        order_id,
        size,
        price,
        side,
    })
}

/// Reads one LOBSTER message file (and its orderbook file, when present); an iterator of
/// [`Record`]s.
pub struct LobsterReader {
    messages: Box<dyn BufRead + Send>,
    orderbook: Option<Box<dyn BufRead + Send>>,
    path: PathBuf,
    file_name: String,
    source: SourceId,
    name: LobsterName,
    opts: LobsterOptions,
    replay: L3Replay,
    line_no: u64,
    last_ts: i64,
    started: bool,
    done: bool,
    check: BookCheck,
    out: VecDeque<Record>,
    events: Vec<flowsense_core::MarketEvent>,
    line: String,
    book_line: String,
    /// A line's bytes, before they are checked to be UTF-8.
    bytes: Vec<u8>,
}

impl LobsterReader {
    /// Opens a message file; the orderbook file beside it is used when it exists.
    pub fn open(message: &Path, opts: LobsterOptions) -> Result<Self> {
        let name = parse_name(message).ok_or_else(|| {
            Error::format(
                message,
                "not a LOBSTER file name (TICKER_DATE_START_END_message_LEVEL.csv)",
            )
        })?;
        let symbol = Symbol::new(&name.ticker)?;
        let ob = orderbook_path(message);
        let orderbook = if ob.is_file() {
            Some(open_text(&ob)?)
        } else {
            None
        };
        Ok(LobsterReader {
            messages: open_text_counted(message, &opts.bytes_read)?,
            orderbook,
            path: message.to_path_buf(),
            file_name: message
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            source: SourceId::for_file(message).map_err(|e| Error::io(message, e))?,
            name,
            opts,
            replay: L3Replay::new(symbol),
            line_no: 0,
            last_ts: i64::MIN,
            started: false,
            done: false,
            check: BookCheck::default(),
            out: VecDeque::new(),
            events: Vec::new(),
            line: String::new(),
            book_line: String::new(),
            bytes: Vec::new(),
        })
    }

    /// How the reconstruction compared with the orderbook file so far.
    pub fn check(&self) -> BookCheck {
        self.check
    }

    fn dead(&mut self, reason: DeadLetterReason, detail: String, raw: &str) {
        self.out.push_back(Record::Dead(DeadLetter {
            source: self.source.to_string(),
            position: format!("{}:{}", self.file_name, self.line_no),
            reason,
            detail,
            raw: raw.to_string(),
        }));
    }

    /// The orderbook file's row for the current message, when there is one to check against.
    fn read_book_row(&mut self) -> Option<(Levels, Levels)> {
        let ob = self.orderbook.as_mut()?;
        match read_text_line(&mut **ob, &mut self.bytes, &mut self.book_line) {
            Ok(0) => {
                self.orderbook = None;
                None
            }
            Ok(_) => parse_book_row(self.book_line.trim_end(), self.name.levels),
            Err(bad) => {
                // The orderbook file only checks the reconstruction: a bad row skips one
                // check, an unreadable rest ends the checks; either is reported.
                if bad.ends_file() {
                    self.orderbook = None;
                }
                let ob_name = orderbook_path(&self.path)
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                self.out.push_back(Record::Dead(DeadLetter {
                    source: self.source.to_string(),
                    position: format!("{ob_name}:{}", self.line_no),
                    reason: bad.reason,
                    detail: bad.detail,
                    raw: bad.raw,
                }));
                None
            }
        }
    }

    /// Seeds the book from the first orderbook row with the first message undone: the session's
    /// `Clear` and one `Seed` event per level, ahead of the first message.
    fn seed(&mut self, first: &Message, row: &(Levels, Levels)) {
        let mut l2 = L2Book::default();
        for &(p, s) in &row.0 {
            l2.set_level(Side::Sell, p, s);
        }
        for &(p, s) in &row.1 {
            l2.set_level(Side::Buy, p, s);
        }
        let px = Price::from_scaled(first.price, 4);
        let sz = Size::from_units(first.size);
        match first.kind {
            1 => l2.add_to_level(first.side, px, Size::ZERO - sz),
            2..=4 => l2.add_to_level(first.side, px, sz),
            _ => {}
        }
        let levels: Vec<(Side, Price, Size)> = [Side::Buy, Side::Sell]
            .into_iter()
            .flat_map(|side| {
                l2.depth(side, usize::MAX)
                    .into_iter()
                    .map(move |(p, s)| (side, p, s))
            })
            .collect();
        let mut events = Vec::new();
        let rejects = self
            .replay
            .seed(levels, first.ts, self.line_no, &mut events);
        self.out.extend(events.into_iter().map(Record::Event));
        for r in rejects {
            let raw = format!("{:?}", row);
            self.dead(r.reason, format!("first orderbook row: {}", r.detail), &raw);
        }
    }

    /// Compares the book with the row, seeding volume revealed at the edge of the visible depth:
    /// its `Seed` events go into `events` before the message's top of book, which is read again.
    fn compare(
        &mut self,
        row: &(Levels, Levels),
        before_worst: [Option<Price>; 2],
        ts: UnixNanos,
        events: &mut Vec<flowsense_core::MarketEvent>,
    ) {
        let levels = self.name.levels;
        let mut revealed = Vec::new();
        for (i, (side, wanted)) in [(Side::Sell, &row.0), (Side::Buy, &row.1)]
            .into_iter()
            .enumerate()
        {
            for &(p, s) in wanted.iter() {
                let ours = self.replay.book().l2().level(side, p);
                let beyond = match (side, before_worst[i]) {
                    (_, None) => true,
                    (Side::Sell, Some(w)) => p > w,
                    (Side::Buy, Some(w)) => p < w,
                };
                if ours < s && beyond {
                    revealed.push((side, p, s - ours));
                }
            }
        }
        if !revealed.is_empty() {
            // The message's top of book is replaced by the one after the seeds.
            if matches!(events.last(), Some(flowsense_core::MarketEvent::Bbo(..))) {
                events.pop();
            }
            let n = revealed.len() as u64;
            let rejects = self.replay.seed(revealed, ts, self.line_no, events);
            self.check.revealed += n - rejects.len() as u64;
        }
        let l2 = self.replay.book().l2();
        let ok = l2.depth(Side::Sell, levels) == row.0 && l2.depth(Side::Buy, levels) == row.1;
        self.check.rows += 1;
        self.check.matched += ok as u64;
    }

    fn worst_visible(&self) -> [Option<Price>; 2] {
        let n = self.name.levels;
        let l2 = self.replay.book().l2();
        let worst = |side| {
            let d = l2.depth(side, n);
            if d.len() < n {
                None
            } else {
                d.last().map(|x| x.0)
            }
        };
        [worst(Side::Sell), worst(Side::Buy)]
    }

    fn step(&mut self) -> Result<()> {
        let n = match read_text_line(&mut *self.messages, &mut self.bytes, &mut self.line) {
            Ok(n) => n,
            Err(bad) => {
                self.line_no += 1;
                if self.line_no == 1 {
                    self.out.push_back(Record::SourceStart(self.source.clone()));
                }
                let ends = bad.ends_file();
                self.dead(bad.reason, bad.detail, &bad.raw);
                if !ends {
                    // Its orderbook row belongs to the message that could not be read.
                    self.read_book_row();
                    return Ok(());
                }
                0
            }
        };
        if n == 0 {
            if self.line_no == 0 {
                self.out.push_back(Record::SourceStart(self.source.clone()));
            }
            self.done = true;
            self.out.push_back(Record::SourceDone(self.source.clone()));
            return Ok(());
        }
        self.line_no += 1;
        let row = self.read_book_row();
        if self.line_no == 1 {
            self.out.push_back(Record::SourceStart(self.source.clone()));
        }
        // The line is moved out while it is handled, so `handle` can borrow `self` mutably.
        let line = std::mem::take(&mut self.line);
        let raw = line.trim_end();
        if !raw.is_empty() {
            self.handle(raw, row);
        }
        self.line = line;
        Ok(())
    }

    /// Validates one message row and applies it to the book, or dead-letters it.
    fn handle(&mut self, raw: &str, row: Option<(Levels, Levels)>) {
        let offset = self.opts.utc_offset_seconds * 1_000_000_000;
        let msg = match parse_message(raw, self.name.date, offset) {
            Ok(m) => m,
            Err((reason, detail)) => return self.dead(reason, detail, raw),
        };
        if !self.started {
            self.started = true;
            if let Some(r) = &row {
                self.seed(&msg, r);
            }
        }
        if msg.ts.0 < self.last_ts.saturating_sub(self.opts.time_tolerance_ns) {
            let detail = format!("ts {} after {}", msg.ts.0, self.last_ts);
            return self.dead(DeadLetterReason::TimeWentBack, detail, raw);
        }
        self.last_ts = self.last_ts.max(msg.ts.0);
        let action = match msg.kind {
            1 => L3Action::Add,
            2 => L3Action::Cancel,
            3 => L3Action::Delete,
            4 => L3Action::Execute,
            5 => L3Action::ExecuteHidden,
            6 => L3Action::Cross,
            _ => L3Action::Halt,
        };
        if action != L3Action::Halt {
            if msg.price <= 0 {
                return self.dead(
                    DeadLetterReason::NonPositivePrice,
                    format!("price {}", msg.price),
                    raw,
                );
            }
            if msg.size <= 0 {
                return self.dead(
                    DeadLetterReason::NonPositiveSize,
                    format!("size {}", msg.size),
                    raw,
                );
            }
        }
        let ev = OrderEvent {
            ts: msg.ts,
            seq: self.line_no,
            action,
            order_id: OrderId(msg.order_id),
            side: msg.side,
            price: Price::from_scaled(msg.price, 4),
            size: Size::from_units(msg.size.max(0)),
        };
        let worst = self.worst_visible();
        let mut events = std::mem::take(&mut self.events);
        events.clear();
        match self.replay.apply(ev, &mut events) {
            Ok(()) => {
                if let Some(r) = &row {
                    self.compare(r, worst, msg.ts, &mut events);
                }
                self.out.extend(events.drain(..).map(Record::Event));
            }
            Err(rej) => self.dead(rej.reason, rej.detail, raw),
        }
        self.events = events;
    }
}

impl crate::StepReader for LobsterReader {
    fn step(&mut self) -> Result<()> {
        LobsterReader::step(self)
    }

    fn queue(&mut self) -> (&mut VecDeque<Record>, &mut bool) {
        (&mut self.out, &mut self.done)
    }
}

impl Iterator for LobsterReader {
    type Item = Result<Record>;

    fn next(&mut self) -> Option<Self::Item> {
        crate::StepReader::next_record(self)
    }
}

/// Writes LOBSTER message and orderbook files, one row of each per message.
pub struct LobsterWriter {
    messages: std::io::BufWriter<std::fs::File>,
    orderbook: std::io::BufWriter<std::fs::File>,
    midnight: UnixNanos,
    levels: usize,
    line: String,
}

impl LobsterWriter {
    /// Creates `DIR/TICKER_DATE_START_END_message_LEVELS.csv` and its orderbook file.
    pub fn create(
        dir: &Path,
        ticker: &str,
        date: UnixNanos,
        start_ms: i64,
        end_ms: i64,
        levels: usize,
    ) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let base = format!("{ticker}_{}_{start_ms}_{end_ms}", date.date_string());
        let open = |kind: &str| {
            std::fs::File::create(dir.join(format!("{base}_{kind}_{levels}.csv")))
                .map(std::io::BufWriter::new)
        };
        Ok(LobsterWriter {
            messages: open("message")?,
            orderbook: open("orderbook")?,
            midnight: date,
            levels,
            line: String::new(),
        })
    }

    /// Path of the message file written for these arguments.
    pub fn message_path(
        dir: &Path,
        ticker: &str,
        date: UnixNanos,
        start_ms: i64,
        end_ms: i64,
        levels: usize,
    ) -> PathBuf {
        dir.join(format!(
            "{ticker}_{}_{start_ms}_{end_ms}_message_{levels}.csv",
            date.date_string()
        ))
    }

    /// Writes one message and the book after it (asks and bids best first).
    pub fn write(
        &mut self,
        ev: &OrderEvent,
        asks: &[(Price, Size)],
        bids: &[(Price, Size)],
    ) -> std::io::Result<()> {
        use std::fmt::Write as _;
        let kind = match ev.action {
            L3Action::Add => 1,
            L3Action::Cancel => 2,
            L3Action::Delete => 3,
            L3Action::Execute => 4,
            L3Action::ExecuteHidden => 5,
            L3Action::Cross => 6,
            L3Action::Halt => 7,
            L3Action::Modify => return Err(std::io::Error::other("LOBSTER has no modify message")),
            // Session markers are no messages: the orderbook file carries what they say.
            L3Action::Clear | L3Action::Seed => return Ok(()),
        };
        let secs = ev.ts.0 - self.midnight.0;
        let dir = if ev.side == Side::Buy { 1 } else { -1 };
        self.line.clear();
        let _ = writeln!(
            self.line,
            "{}.{:09},{kind},{},{},{},{dir}",
            secs / 1_000_000_000,
            secs % 1_000_000_000,
            ev.order_id.0,
            ev.size.raw() / 1_000_000_000,
            ev.price.raw() / 100_000
        );
        self.messages.write_all(self.line.as_bytes())?;
        self.line.clear();
        for i in 0..self.levels {
            let (ap, asz) = asks
                .get(i)
                .map(|&(p, s)| (p.raw() / 100_000, s.raw() / 1_000_000_000))
                .unwrap_or((EMPTY_ASK, 0));
            let (bp, bsz) = bids
                .get(i)
                .map(|&(p, s)| (p.raw() / 100_000, s.raw() / 1_000_000_000))
                .unwrap_or((EMPTY_BID, 0));
            if i > 0 {
                self.line.push(',');
            }
            let _ = write!(self.line, "{ap},{asz},{bp},{bsz}");
        }
        self.line.push('\n');
        self.orderbook.write_all(self.line.as_bytes())
    }

    /// Flushes both files.
    pub fn finish(mut self) -> std::io::Result<()> {
        self.messages.flush()?;
        self.orderbook.flush()
    }
}
