//! A job's stream on a worker: while the controller's WebSocket subscribers want them, the rows
//! a job writes (in the lake's columns, so what streams is what lands) and, for a paced job,
//! its books and trades, sent to the controller as [`ReportEvent::Rows`].
//!
//! Nothing here runs inside an operator: the sinks keep a copy of what they write while
//! tapped, and the feeder shows the books each event before it goes in; the worker loop
//! drains both between steps.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

use arrow::record_batch::RecordBatch;
use flowsense_core::book::{L2Book, L3Book};
use flowsense_core::{MarketEvent, Side, Symbol};
use serde::{Deserialize, Serialize};

use crate::protocol::{ReportEvent, Topic};

/// How often a worker sends a tapped job's rows.
pub const ROWS_EVERY: Duration = Duration::from_millis(100);
/// How often a worker sends a paced job's changed books.
pub const BOOK_EVERY: Duration = Duration::from_millis(250);
/// Levels of each side a book message carries.
pub const BOOK_LEVELS: usize = 10;

/// Batches as a JSON array of objects, one per row, keyed by column name (NULLs kept as
/// `null`): the encoding of `POST /sql`, `GET /jobs/{id}/output` and the stream alike.
///
/// ```
/// use std::sync::Arc;
/// use arrow::array::Int64Array;
/// use arrow::record_batch::RecordBatch;
/// let b = RecordBatch::try_from_iter([("x", Arc::new(Int64Array::from(vec![1, 2])) as _)]).unwrap();
/// let json = flowsense_service::tap::json_array(&[b]).unwrap();
/// assert_eq!(String::from_utf8(json).unwrap(), r#"[{"x":1},{"x":2}]"#);
/// ```
pub fn json_array(batches: &[RecordBatch]) -> Result<Vec<u8>, arrow::error::ArrowError> {
    let mut buf = Vec::new();
    {
        let mut w = arrow::json::WriterBuilder::new()
            .with_explicit_nulls(true)
            .build::<_, arrow::json::writer::JsonArray>(&mut buf);
        for b in batches {
            w.write(b)?;
        }
        w.finish()?;
    }
    if buf.is_empty() {
        buf.extend_from_slice(b"[]");
    }
    Ok(buf)
}

/// Most rows in one stream message: a batch job's worker writes tens of thousands of rows per
/// interval, which as one message would be megabytes (beyond common WebSocket clients' frame
/// limits, and a long stall for a browser to parse).
pub const ROWS_PER_MESSAGE: usize = 1000;

/// `batch` as JSON arrays of at most [`ROWS_PER_MESSAGE`] rows each, in order.
///
/// ```
/// use std::sync::Arc;
/// use arrow::array::Int64Array;
/// use arrow::record_batch::RecordBatch;
/// let b = RecordBatch::try_from_iter([("x", Arc::new(Int64Array::from_iter_values(0..2500)) as _)]).unwrap();
/// let parts = flowsense_service::tap::json_messages(&b).unwrap();
/// assert_eq!(parts.len(), 3);
/// assert!(parts[2].starts_with("[{\"x\":2000}"));
/// ```
pub fn json_messages(batch: &RecordBatch) -> Result<Vec<String>, arrow::error::ArrowError> {
    let mut out = Vec::new();
    let mut offset = 0;
    while offset < batch.num_rows() {
        let len = ROWS_PER_MESSAGE.min(batch.num_rows() - offset);
        let json = json_array(&[batch.slice(offset, len)])?;
        out.push(
            String::from_utf8(json)
                .map_err(|e| arrow::error::ArrowError::JsonError(e.to_string()))?,
        );
        offset += len;
    }
    Ok(out)
}

/// One symbol's book as the stream sends it: the top levels of each side, best first.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct BookLevels {
    /// The symbol.
    pub symbol: String,
    /// Exchange time of the last event applied, nanoseconds since the epoch.
    pub ts: i64,
    /// Bids as `[price, size]`, the highest first.
    pub bids: Vec<(f64, f64)>,
    /// Asks as `[price, size]`, the lowest first.
    pub asks: Vec<(f64, f64)>,
}

/// A market trade as the tape (`trades` topic) shows it.
#[derive(Clone, Debug, PartialEq, Serialize, utoipa::ToSchema)]
pub struct TapeTrade {
    /// The symbol.
    pub symbol: String,
    /// Exchange time, nanoseconds since the epoch.
    pub ts: i64,
    /// The price.
    pub price: f64,
    /// The size.
    pub size: f64,
    /// The aggressor: `buy` when a buyer lifted the offer.
    #[schema(value_type = String)]
    pub side: &'static str,
}

#[derive(Default)]
enum Book {
    #[default]
    Empty,
    L2(Box<L2Book>),
    L3(Box<L3Book>),
}

impl Book {
    fn l2(&self) -> Option<&L2Book> {
        match self {
            Book::Empty => None,
            Book::L2(b) => Some(b),
            Book::L3(b) => Some(b.l2()),
        }
    }
}

/// A paced job's books and trades on one worker, kept from the job's start (a book cannot be
/// joined halfway through a stream of diffs), as the feeder shows it each event.
///
/// ```
/// use flowsense_core::{DepthUpdate, MarketEvent, Price, Size, Symbol, UnixNanos};
/// use flowsense_service::tap::Market;
/// let mut m = Market::default();
/// let sym = Symbol::new("BTCUSDT").unwrap();
/// m.apply(&MarketEvent::Depth(sym.clone(), Box::new(DepthUpdate { ts: UnixNanos(5),
///     local_ts: None, first_update_id: 1, final_update_id: 1, prev_final_update_id: None,
///     bids: vec![(Price::from_f64(99.0).unwrap(), Size::from_f64(2.0).unwrap())],
///     asks: vec![(Price::from_f64(101.0).unwrap(), Size::from_f64(1.0).unwrap())],
///     is_snapshot: true })));
/// let books = m.changed_books(10);
/// assert_eq!(books[0].bids, vec![(99.0, 2.0)]);
/// assert_eq!(books[0].asks, vec![(101.0, 1.0)]);
/// assert!(m.changed_books(10).is_empty());
/// ```
#[derive(Default)]
pub struct Market {
    books: BTreeMap<Symbol, (Book, i64, bool)>,
    /// Trades since the last take, while the tape is wanted.
    tape: flowsense_dataflows::tapped::Tapped<TapeTrade>,
}

impl Market {
    /// Applies one event to its symbol's book (and the tape, while it is wanted).
    pub fn apply(&mut self, ev: &MarketEvent) {
        match ev {
            MarketEvent::Depth(s, d) => {
                let (book, ts, changed) = self.books.entry(s.clone()).or_default();
                if !matches!(book, Book::L2(_)) {
                    *book = Book::L2(Box::default());
                }
                let Book::L2(b) = book else {
                    unreachable!("set above")
                };
                if d.is_snapshot {
                    b.clear();
                }
                for &(p, q) in &d.bids {
                    b.replace_level(Side::Buy, p, q);
                }
                for &(p, q) in &d.asks {
                    b.replace_level(Side::Sell, p, q);
                }
                *ts = d.ts.0;
                *changed = true;
            }
            MarketEvent::Order(s, o) => {
                let (book, ts, changed) = self.books.entry(s.clone()).or_default();
                if !matches!(book, Book::L3(_)) {
                    *book = Book::L3(Box::default());
                }
                let Book::L3(b) = book else {
                    unreachable!("set above")
                };
                // A message the book refuses (an unknown order) changes nothing here, as in
                // the feature engine, which counts it.
                if b.apply(o).is_ok_and(|a| a.touched_book) {
                    *ts = o.ts.0;
                    *changed = true;
                }
            }
            MarketEvent::Trade(s, t) => {
                self.tape.push_with(|| TapeTrade {
                    symbol: s.as_str().to_string(),
                    ts: t.ts.0,
                    price: t.price.as_f64(),
                    size: t.size.as_f64(),
                    side: if t.aggressor == Side::Buy {
                        "buy"
                    } else {
                        "sell"
                    },
                });
            }
            _ => {}
        }
    }

    /// Keeps the trades from now on (or stops, dropping what was kept).
    pub fn tape(&mut self, on: bool) {
        self.tape.set(on);
    }

    /// The top `levels` of every book that changed since the last call.
    pub fn changed_books(&mut self, levels: usize) -> Vec<BookLevels> {
        let side = |b: &L2Book, s: Side| {
            b.depth(s, levels)
                .into_iter()
                .map(|(p, q)| (p.as_f64(), q.as_f64()))
                .collect()
        };
        self.books
            .iter_mut()
            .filter(|(_, (_, _, changed))| *changed)
            .filter_map(|(sym, (book, ts, changed))| {
                *changed = false;
                let b = book.l2()?;
                Some(BookLevels {
                    symbol: sym.as_str().to_string(),
                    ts: *ts,
                    bids: side(b, Side::Buy),
                    asks: side(b, Side::Sell),
                })
            })
            .collect()
    }

    fn take_tape(&mut self) -> Vec<TapeTrade> {
        self.tape.take()
    }
}

/// What one worker streams of one job.
pub struct JobTap {
    /// The row topics wanted now.
    pub topics: Vec<Topic>,
    /// A paced job's market, kept from its start.
    pub market: Option<Rc<RefCell<Market>>>,
    last_rows: Instant,
    last_book: Instant,
}

impl JobTap {
    /// Nothing wanted yet; `paced` jobs keep their market from the start.
    pub fn new(paced: bool) -> Self {
        let now = Instant::now();
        let long_ago = now.checked_sub(BOOK_EVERY).unwrap_or(now);
        JobTap {
            topics: Vec::new(),
            market: paced.then(Default::default),
            last_rows: long_ago,
            last_book: long_ago,
        }
    }

    /// Whether `t` is wanted.
    pub fn wants(&self, t: Topic) -> bool {
        self.topics.contains(&t)
    }

    /// Sets the wanted topics; the tape starts or stops with them.
    pub fn set(&mut self, topics: Vec<Topic>) {
        if let Some(m) = &self.market {
            m.borrow_mut().tape(topics.contains(&Topic::Trades));
        }
        self.topics = topics;
    }

    /// The market's reports due now: its trades when `rows_due` (see [`JobTap::rows_due`]),
    /// its changed books every [`BOOK_EVERY`] (or now, when `all`).
    pub fn market_reports(&mut self, rows_due: bool, all: bool) -> Vec<ReportEvent> {
        let mut out = Vec::new();
        let Some(m) = &self.market else { return out };
        let now = Instant::now();
        let mut m = m.borrow_mut();
        if self.wants(Topic::Trades) && rows_due {
            let tape = m.take_tape();
            if !tape.is_empty()
                && let Ok(json) = serde_json::to_string(&tape)
            {
                out.push(ReportEvent::Rows {
                    topic: Topic::Trades,
                    json,
                });
            }
        }
        if self.wants(Topic::Book) && (all || now >= self.last_book + BOOK_EVERY) {
            self.last_book = now;
            let books = m.changed_books(BOOK_LEVELS);
            if !books.is_empty()
                && let Ok(json) = serde_json::to_string(&books)
            {
                out.push(ReportEvent::Rows {
                    topic: Topic::Book,
                    json,
                });
            }
        }
        out
    }

    /// Whether the sinks' rows are due (always when `all`); marks them sent.
    pub fn rows_due(&mut self, all: bool) -> bool {
        let now = Instant::now();
        if all || now >= self.last_rows + ROWS_EVERY {
            self.last_rows = now;
            true
        } else {
            false
        }
    }
}
