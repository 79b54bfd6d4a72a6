//! Replaying the lake: book events, depth updates, trades and bars read back from Parquet as market
//! events, per symbol in the order they were ingested, and across symbols merged by time.
//!
//! Each `(date, symbol)` partition is one stream: its book rows (`book_events` for L3 data,
//! `depth_updates` for L2, grouped back into one update per exchange message) merged with its
//! `trades` by feed time (receive time where recorded, else exchange time), book first on ties
//! (an L3 execution precedes the trade it makes). Each table keeps its stored order. Files are
//! fetched one at a time and decoded a batch at a time, so memory holds one file per stream, not
//! a day.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use arrow::array::{
    Array, AsArray, BooleanArray, Float64Array, Int64Array, RecordBatch, UInt64Array,
};
use flowsense_core::{
    DepthUpdate, L3Action, Lake, MarketEvent, OrderEvent, OrderId, Price, Side, Size, Symbol,
    Table, Trade, UnixNanos,
};
use object_store::ObjectStoreExt;
use object_store::path::Path;
use parquet::arrow::arrow_reader::{
    ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReader,
    ParquetRecordBatchReaderBuilder,
};

use crate::merge::{EventStream, MergeByTime};
use crate::{Error, Result};

/// What to read from the lake.
#[derive(Clone, Debug, Default)]
pub struct LakeSelection {
    /// Only these symbols; empty means all.
    pub symbols: Vec<Symbol>,
    /// First instant, inclusive.
    pub from: Option<UnixNanos>,
    /// Last instant, exclusive.
    pub to: Option<UnixNanos>,
}

/// The files of one `(date, symbol)` partition.
#[derive(Clone, Debug, Default)]
pub struct Partition {
    /// `YYYY-MM-DD`.
    pub date: String,
    /// The symbol.
    pub symbol: Option<Symbol>,
    /// `book_events` files, in name order.
    pub book: Vec<Path>,
    /// `depth_updates` files.
    pub depth: Vec<Path>,
    /// `trades` files.
    pub trades: Vec<Path>,
    /// `bars` files.
    pub bars: Vec<Path>,
}

/// Lists the lake's partitions that hold book data and pass the selection, by date then symbol.
pub fn list_partitions(lake: &Lake, sel: &LakeSelection) -> Result<Vec<Partition>> {
    let rt = runtime()?;
    let mut parts: BTreeMap<(String, Symbol), Partition> = BTreeMap::new();
    for table in [
        Table::BookEvents,
        Table::DepthUpdates,
        Table::Trades,
        Table::Bars,
    ] {
        let listing = rt.block_on(lake.list_table_paths(table))?;
        for loc in listing {
            let text = loc.as_ref().to_string();
            if !text.ends_with(".parquet") {
                continue;
            }
            let (mut date, mut symbol) = (None, None);
            for seg in text.split('/') {
                if let Some(d) = seg.strip_prefix("date=") {
                    date = Some(d.to_string());
                } else if let Some(s) = seg.strip_prefix("symbol=") {
                    symbol = Symbol::new(s).ok();
                }
            }
            let (Some(date), Some(symbol)) = (date, symbol) else {
                continue;
            };
            if !sel.symbols.is_empty() && !sel.symbols.contains(&symbol) {
                continue;
            }
            let Ok(day) = flowsense_core::job::parse_instant(&date) else {
                continue;
            };
            if sel.to.is_some_and(|to| day.0 >= to.0)
                || sel
                    .from
                    .is_some_and(|from| day.0 + UnixNanos::DAY <= from.0)
            {
                continue;
            }
            let p = parts
                .entry((date.clone(), symbol.clone()))
                .or_insert_with(|| Partition {
                    date,
                    symbol: Some(symbol),
                    ..Default::default()
                });
            match table {
                Table::BookEvents => p.book.push(loc),
                Table::DepthUpdates => p.depth.push(loc),
                Table::Bars => p.bars.push(loc),
                _ => p.trades.push(loc),
            }
        }
    }
    let mut out: Vec<Partition> = parts.into_values().collect();
    for p in &mut out {
        p.book.sort();
        p.depth.sort();
        p.trades.sort();
        p.bars.sort();
    }
    Ok(out)
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::LakeFile {
            path: String::new(),
            why: format!("cannot start an I/O runtime: {e}"),
        })
}

/// Replays the selected partitions: dates in order, and within a date the symbols merged by time.
///
/// `keep` chooses the symbols this reader owns (a dataflow worker keeps `route() % peers ==
/// index`). Errors reading a file end the replay; [`LakeReplay::error`] tells what happened.
pub struct LakeReplay {
    lake: Lake,
    rt: Arc<tokio::runtime::Runtime>,
    sel: LakeSelection,
    dates: VecDeque<Vec<Partition>>,
    current: Option<MergeByTime>,
    error: Arc<std::sync::Mutex<Option<Error>>>,
}

impl LakeReplay {
    /// A replay of the selection, keeping the symbols for which `keep` is true.
    pub fn open(lake: Lake, sel: LakeSelection, keep: impl Fn(&Symbol) -> bool) -> Result<Self> {
        let mut dates: BTreeMap<String, Vec<Partition>> = BTreeMap::new();
        for p in list_partitions(&lake, &sel)? {
            if p.symbol.as_ref().is_some_and(&keep) {
                dates.entry(p.date.clone()).or_default().push(p);
            }
        }
        Ok(LakeReplay {
            lake,
            rt: Arc::new(runtime()?),
            sel,
            dates: dates.into_values().collect(),
            current: None,
            error: Arc::default(),
        })
    }

    /// The error that ended the replay early, if any.
    pub fn error(&self) -> Option<String> {
        self.error
            .lock()
            .ok()
            .and_then(|e| e.as_ref().map(|e| e.to_string()))
    }
}

impl Iterator for LakeReplay {
    type Item = MarketEvent;

    fn next(&mut self) -> Option<MarketEvent> {
        loop {
            if let Some(m) = self.current.as_mut() {
                if let Some(e) = m.next() {
                    return Some(e);
                }
                self.current = None;
            }
            let day = self.dates.pop_front()?;
            let mut streams: Vec<EventStream> = Vec::new();
            for mut p in day {
                let bars = std::mem::take(&mut p.bars);
                if !bars.is_empty() {
                    streams.push(Box::new(BarStream {
                        symbol: p.symbol.clone().expect("partitions carry a symbol"),
                        files: Files {
                            lake: self.lake.clone(),
                            rt: self.rt.clone(),
                            files: bars.into(),
                            reader: None,
                        },
                        batch: None,
                        from: self.sel.from.map_or(i64::MIN, |t| t.0),
                        to: self.sel.to.map_or(i64::MAX, |t| t.0),
                        error: self.error.clone(),
                        failed: false,
                    }));
                }
                if !(p.book.is_empty() && p.depth.is_empty() && p.trades.is_empty()) {
                    streams.push(Box::new(PartitionStream::new(
                        &self.lake,
                        self.rt.clone(),
                        p,
                        &self.sel,
                        self.error.clone(),
                    )));
                }
            }
            self.current = Some(MergeByTime::new(streams));
        }
    }
}

/// Decoded batches of a list of files, fetched one file at a time.
struct Files {
    lake: Lake,
    rt: Arc<tokio::runtime::Runtime>,
    files: VecDeque<Path>,
    reader: Option<(String, ParquetRecordBatchReader)>,
}

impl Files {
    fn next_batch(&mut self) -> Result<Option<(String, RecordBatch)>> {
        loop {
            if let Some((path, r)) = self.reader.as_mut() {
                match r.next() {
                    Some(Ok(b)) => return Ok(Some((path.clone(), b))),
                    Some(Err(e)) => {
                        return Err(Error::LakeFile {
                            path: path.clone(),
                            why: e.to_string(),
                        });
                    }
                    None => self.reader = None,
                }
            }
            let Some(path) = self.files.pop_front() else {
                return Ok(None);
            };
            let bytes = match self.lake.local_file(&path) {
                Some(file) => {
                    bytes::Bytes::from(std::fs::read(&file).map_err(|e| Error::io(file, e))?)
                }
                None => {
                    let store = self.lake.store();
                    self.rt
                        .block_on(async { store.get(&path).await?.bytes().await })?
                }
            };
            let reader = reader_of(bytes).map_err(|e| Error::LakeFile {
                path: path.to_string(),
                why: e.to_string(),
            })?;
            self.reader = Some((path.to_string(), reader));
        }
    }
}

/// A reader of one Parquet file that keeps the short string columns (`side`, `action`) as
/// dictionaries: their values are a handful of words, and decoding them as plain strings copies
/// every row's bytes out of the dictionary (4 % of a replay's time).
fn reader_of(bytes: bytes::Bytes) -> parquet::errors::Result<ParquetRecordBatchReader> {
    use arrow::datatypes::{DataType, Field, Schema};
    let meta = ArrowReaderMetadata::load(&bytes, ArrowReaderOptions::new())?;
    let schema = meta.schema();
    let coded = |f: &Field| {
        matches!(f.name().as_str(), "side" | "action") && f.data_type() == &DataType::Utf8
    };
    let meta = if schema.fields().iter().any(|f| coded(f)) {
        let fields: Vec<Field> = schema
            .fields()
            .iter()
            .map(|f| {
                if coded(f) {
                    let dict =
                        DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8));
                    f.as_ref().clone().with_data_type(dict)
                } else {
                    f.as_ref().clone()
                }
            })
            .collect();
        let hinted = Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()));
        ArrowReaderMetadata::try_new(
            meta.metadata().clone(),
            ArrowReaderOptions::new().with_schema(hinted),
        )?
    } else {
        meta
    };
    ParquetRecordBatchReaderBuilder::new_with_metadata(bytes, meta)
        .with_batch_size(16 * 1024)
        .build()
}

impl Files {
    /// The next batch, its columns resolved for `table`.
    fn next_decoded(&mut self, table: Table) -> Result<Option<(String, Cols)>> {
        let Some((path, batch)) = self.next_batch()? else {
            return Ok(None);
        };
        let d = Decoded::new(&batch, &path, table)?;
        Ok(Some((path, Cols { d, row: 0 })))
    }
}

/// A column of `b` as `T`, or an error naming the file and the column.
fn req<T: Clone + 'static>(b: &RecordBatch, path: &str, name: &str) -> Result<T> {
    opt(b, name).ok_or_else(|| Error::LakeFile {
        path: path.to_string(),
        why: format!("column {name} is missing or of the wrong type"),
    })
}

/// A column of `b` as `T`, if it is there with that type.
fn opt<T: Clone + 'static>(b: &RecordBatch, name: &str) -> Option<T> {
    b.column_by_name(name)
        .and_then(|c| c.as_any().downcast_ref::<T>())
        .cloned()
}

/// Keeps the first error that ended a stream of the replay.
fn keep_first(slot: &std::sync::Mutex<Option<Error>>, e: Error) {
    if let Ok(mut slot) = slot.lock()
        && slot.is_none()
    {
        *slot = Some(e);
    }
}

/// A string column as written (`Utf8`) or as some readers give it back (`Utf8View`).
enum Strings {
    Utf8(arrow::array::StringArray),
    View(arrow::array::StringViewArray),
    /// Keys into a dictionary of values (see `reader_of`).
    Dict(arrow::array::Int32Array, arrow::array::StringArray),
    Missing,
}

impl Strings {
    fn of(b: &RecordBatch, name: &str) -> Strings {
        match b.column_by_name(name) {
            Some(c) => {
                if let Some(d) = c.as_dictionary_opt::<arrow::datatypes::Int32Type>()
                    && let Some(values) = d.values().as_string_opt::<i32>()
                {
                    return Strings::Dict(d.keys().clone(), values.clone());
                }
                match (c.as_string_opt::<i32>(), c.as_string_view_opt()) {
                    (Some(s), _) => Strings::Utf8(s.clone()),
                    (None, Some(v)) => Strings::View(v.clone()),
                    _ => Strings::Missing,
                }
            }
            None => Strings::Missing,
        }
    }

    fn get(&self, i: usize) -> &str {
        match self {
            Strings::Utf8(s) => s.value(i),
            Strings::View(v) => v.value(i),
            Strings::Dict(keys, values) => values.value(keys.value(i) as usize),
            Strings::Missing => "",
        }
    }
}

/// A short string column read as what its words mean: each dictionary value is parsed once
/// per batch, and a row is a lookup by its key.
struct Coded<T> {
    strings: Strings,
    parse: fn(&str) -> T,
    by_key: Vec<T>,
}

impl<T: Copy> Coded<T> {
    fn new(strings: Strings, parse: fn(&str) -> T) -> Self {
        let by_key = match &strings {
            Strings::Dict(_, values) => values.iter().map(|v| parse(v.unwrap_or(""))).collect(),
            _ => Vec::new(),
        };
        Coded {
            strings,
            parse,
            by_key,
        }
    }

    fn get(&self, i: usize) -> T {
        match &self.strings {
            Strings::Dict(keys, _) => self.by_key[keys.value(i) as usize],
            s => (self.parse)(s.get(i)),
        }
    }
}

fn side_of(s: &str) -> Side {
    if s == "sell" { Side::Sell } else { Side::Buy }
}

/// One batch's columns, resolved by name and type once (not per row).
struct Decoded {
    rows: usize,
    ts: Int64Array,
    local: Option<Int64Array>,
    price: Float64Array,
    size: Float64Array,
    side: Coded<Side>,
    action: Coded<L3Action>,
    seq: Option<UInt64Array>,
    order_id: Option<UInt64Array>,
    first: Option<UInt64Array>,
    fin: Option<UInt64Array>,
    snap: Option<BooleanArray>,
    trade_id: Option<UInt64Array>,
}

impl Decoded {
    fn new(b: &RecordBatch, path: &str, table: Table) -> Result<Decoded> {
        let d = Decoded {
            rows: b.num_rows(),
            ts: req(b, path, "ts")?,
            local: opt(b, "local_ts"),
            price: req(b, path, "price")?,
            size: req(b, path, "size")?,
            side: Coded::new(Strings::of(b, "side"), side_of),
            action: Coded::new(Strings::of(b, "action"), action_of),
            seq: opt(b, "seq"),
            order_id: opt(b, "order_id"),
            first: opt(b, "first_update_id"),
            fin: opt(b, "final_update_id"),
            snap: opt(b, "is_snapshot"),
            trade_id: opt(b, "trade_id"),
        };
        let missing = match table {
            Table::BookEvents if d.seq.is_none() || d.order_id.is_none() => Some("seq, order_id"),
            Table::DepthUpdates if d.first.is_none() || d.fin.is_none() || d.snap.is_none() => {
                Some("first_update_id, final_update_id, is_snapshot")
            }
            _ => None,
        };
        if let Some(m) = missing {
            return Err(Error::LakeFile {
                path: path.to_string(),
                why: format!("columns {m} are missing or of the wrong type"),
            });
        }
        Ok(d)
    }

    fn side(&self, i: usize) -> Side {
        self.side.get(i)
    }

    fn local_ts(&self, i: usize) -> Option<UnixNanos> {
        self.local
            .as_ref()
            .and_then(|l| l.is_valid(i).then(|| UnixNanos(l.value(i))))
    }
}

/// A decoded batch and the next row to read.
struct Cols {
    d: Decoded,
    row: usize,
}

fn action_of(s: &str) -> L3Action {
    L3Action::parse(s).unwrap_or(L3Action::Halt)
}

/// What reading one book row led to.
enum Step {
    /// A whole event.
    Event(MarketEvent),
    /// A row outside the time range.
    Skip,
    /// The pending depth update is complete.
    Done,
    /// The pending depth update may go on in the next batch.
    More,
}

/// One partition as a stream: its book rows merged with its trades.
struct PartitionStream {
    symbol: Symbol,
    book: Files,
    book_kind: Table,
    trades: Files,
    book_batch: Option<(String, Cols)>,
    trade_batch: Option<(String, Cols)>,
    book_head: Option<MarketEvent>,
    trade_head: Option<MarketEvent>,
    from: i64,
    to: i64,
    error: Arc<std::sync::Mutex<Option<Error>>>,
    failed: bool,
}

impl PartitionStream {
    fn new(
        lake: &Lake,
        rt: Arc<tokio::runtime::Runtime>,
        p: Partition,
        sel: &LakeSelection,
        error: Arc<std::sync::Mutex<Option<Error>>>,
    ) -> Self {
        let files = |f: Vec<Path>| Files {
            lake: lake.clone(),
            rt: rt.clone(),
            files: f.into(),
            reader: None,
        };
        let (book_kind, book_files) = if p.book.is_empty() {
            (Table::DepthUpdates, p.depth)
        } else {
            (Table::BookEvents, p.book)
        };
        let mut s = PartitionStream {
            symbol: p.symbol.expect("partitions carry a symbol"),
            book: files(book_files),
            book_kind,
            trades: files(p.trades),
            book_batch: None,
            trade_batch: None,
            book_head: None,
            trade_head: None,
            from: sel.from.map_or(i64::MIN, |t| t.0),
            to: sel.to.map_or(i64::MAX, |t| t.0),
            error,
            failed: false,
        };
        s.book_head = s.next_book();
        s.trade_head = s.next_trade();
        s
    }

    fn fail(&mut self, e: Error) {
        self.failed = true;
        keep_first(&self.error, e);
    }

    /// The current book batch, refilled as needed; `None` at the end.
    fn book_cols(&mut self) -> Option<&mut (String, Cols)> {
        loop {
            if self.failed {
                return None;
            }
            if let Some((_, c)) = &self.book_batch
                && c.row < c.d.rows
            {
                return self.book_batch.as_mut();
            }
            match self.book.next_decoded(self.book_kind) {
                Ok(Some(c)) => self.book_batch = Some(c),
                Ok(None) => return None,
                Err(e) => {
                    self.fail(e);
                    return None;
                }
            }
        }
    }

    fn next_book(&mut self) -> Option<MarketEvent> {
        let (from, to, symbol, kind) = (self.from, self.to, self.symbol.clone(), self.book_kind);
        let in_range = |t: i64| t >= from && t < to;
        // A depth update's rows may straddle a batch (or file) boundary: keep it pending until a
        // row with another key, or the end, closes it.
        let mut pending: Option<DepthUpdate> = None;
        loop {
            let Some((_path, c)) = self.book_cols() else {
                return pending
                    .filter(|d| in_range(d.ts.0))
                    .map(|d| MarketEvent::Depth(symbol, Box::new(d)));
            };
            let d = &c.d;
            let r = (|| -> Result<Step> {
                let i = c.row;
                let t = d.ts.value(i);
                if kind == Table::BookEvents {
                    c.row += 1;
                    if !in_range(t) {
                        return Ok(Step::Skip);
                    }
                    let (seq, oid) = (
                        d.seq.as_ref().map_or(0, |a| a.value(i)),
                        d.order_id.as_ref().map_or(0, |a| a.value(i)),
                    );
                    return Ok(Step::Event(MarketEvent::Order(
                        symbol.clone(),
                        OrderEvent {
                            ts: UnixNanos(t),
                            seq,
                            action: d.action.get(i),
                            order_id: OrderId(oid),
                            side: d.side(i),
                            price: Price::from_f64(d.price.value(i)).unwrap_or_default(),
                            size: Size::from_f64(d.size.value(i)).unwrap_or_default(),
                        },
                    )));
                }
                // Depth rows: one update per (ts, final_update_id, is_snapshot) run of rows.
                let (fin, first, snap) = (
                    d.fin.as_ref().expect("checked when decoded"),
                    d.first.as_ref().expect("checked when decoded"),
                    d.snap.as_ref().expect("checked when decoded"),
                );
                let key_at = |j: usize| (d.ts.value(j), fin.value(j), snap.value(j));
                if let Some(p) = &pending {
                    if key_at(i) != (p.ts.0, p.final_update_id, p.is_snapshot) {
                        return Ok(Step::Done);
                    }
                } else {
                    pending = Some(DepthUpdate {
                        ts: UnixNanos(t),
                        local_ts: d.local_ts(i),
                        first_update_id: first.value(i),
                        final_update_id: fin.value(i),
                        prev_final_update_id: None,
                        bids: Vec::new(),
                        asks: Vec::new(),
                        is_snapshot: snap.value(i),
                    });
                }
                let p = pending.as_mut().expect("set above");
                let key = (p.ts.0, p.final_update_id, p.is_snapshot);
                let mut j = i;
                while j < d.rows && key_at(j) == key {
                    let level = (
                        Price::from_f64(d.price.value(j)).unwrap_or_default(),
                        Size::from_f64(d.size.value(j)).unwrap_or_default(),
                    );
                    match d.side(j) {
                        Side::Buy => p.bids.push(level),
                        Side::Sell => p.asks.push(level),
                    }
                    j += 1;
                }
                c.row = j;
                Ok(if j < d.rows { Step::Done } else { Step::More })
            })();
            match r {
                Ok(Step::Event(e)) => return Some(e),
                Ok(Step::Skip | Step::More) => continue,
                Ok(Step::Done) => {
                    if let Some(d) = pending.take().filter(|d| in_range(d.ts.0)) {
                        return Some(MarketEvent::Depth(symbol, Box::new(d)));
                    }
                }
                Err(e) => {
                    self.fail(e);
                    return None;
                }
            }
        }
    }

    fn next_trade(&mut self) -> Option<MarketEvent> {
        let (from, to, symbol) = (self.from, self.to, self.symbol.clone());
        loop {
            if self.failed {
                return None;
            }
            let need = !matches!(&self.trade_batch, Some((_, c)) if c.row < c.d.rows);
            if need {
                match self.trades.next_decoded(Table::Trades) {
                    Ok(Some(c)) => self.trade_batch = Some(c),
                    Ok(None) => return None,
                    Err(e) => {
                        self.fail(e);
                        return None;
                    }
                }
                continue;
            }
            let (_, c) = self.trade_batch.as_mut().expect("checked above");
            let d = &c.d;
            let i = c.row;
            c.row += 1;
            let t = d.ts.value(i);
            if t < from || t >= to {
                continue;
            }
            let id = d
                .trade_id
                .as_ref()
                .and_then(|c| c.is_valid(i).then(|| c.value(i)));
            return Some(MarketEvent::Trade(
                symbol,
                Trade {
                    ts: UnixNanos(t),
                    local_ts: d.local_ts(i),
                    trade_id: id,
                    price: Price::from_f64(d.price.value(i)).unwrap_or_default(),
                    size: Size::from_f64(d.size.value(i)).unwrap_or_default(),
                    aggressor: d.side(i),
                },
            ));
        }
    }
}

impl Iterator for PartitionStream {
    type Item = MarketEvent;

    fn next(&mut self) -> Option<MarketEvent> {
        let take_book = match (&self.book_head, &self.trade_head) {
            (Some(b), Some(t)) => b.order_key() <= t.order_key(),
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (None, None) => return None,
        };
        if take_book {
            let next = self.next_book();
            std::mem::replace(&mut self.book_head, next)
        } else {
            let next = self.next_trade();
            std::mem::replace(&mut self.trade_head, next)
        }
    }
}

/// The bars of one partition, in stored order; a bar is in range when it opens at or after
/// `from` and closes at or before `to`.
struct BarStream {
    symbol: Symbol,
    files: Files,
    batch: Option<(String, BarCols, usize)>,
    from: i64,
    to: i64,
    error: Arc<std::sync::Mutex<Option<Error>>>,
    failed: bool,
}

/// One batch of `bars` columns.
struct BarCols {
    ts: Int64Array,
    interval: Strings,
    open: Float64Array,
    high: Float64Array,
    low: Float64Array,
    close: Float64Array,
    volume: Float64Array,
    trades: Option<UInt64Array>,
}

impl BarCols {
    fn new(b: &RecordBatch, path: &str) -> Result<BarCols> {
        Ok(BarCols {
            ts: req(b, path, "ts")?,
            interval: Strings::of(b, "interval"),
            open: req(b, path, "open")?,
            high: req(b, path, "high")?,
            low: req(b, path, "low")?,
            close: req(b, path, "close")?,
            volume: req(b, path, "volume")?,
            trades: opt(b, "trades"),
        })
    }
}

impl Iterator for BarStream {
    type Item = MarketEvent;

    fn next(&mut self) -> Option<MarketEvent> {
        loop {
            if self.failed {
                return None;
            }
            if !matches!(&self.batch, Some((_, c, row)) if *row < c.ts.len()) {
                match self.files.next_batch() {
                    Ok(Some((path, b))) => match BarCols::new(&b, &path) {
                        Ok(c) => self.batch = Some((path, c, 0)),
                        Err(e) => {
                            self.fail(e);
                            return None;
                        }
                    },
                    Ok(None) => return None,
                    Err(e) => {
                        self.fail(e);
                        return None;
                    }
                }
                continue;
            }
            let (path, c, row) = self.batch.as_mut().expect("checked above");
            let i = *row;
            *row += 1;
            let interval = match c.interval.get(i).parse::<flowsense_core::job::Span>() {
                Ok(s) if s.0 > 0 => s.0 as i64,
                _ => {
                    let e = Error::LakeFile {
                        path: path.clone(),
                        why: format!("bar interval {:?} is not a span", c.interval.get(i)),
                    };
                    self.fail(e);
                    return None;
                }
            };
            let open_time = c.ts.value(i);
            if open_time < self.from || open_time + interval > self.to {
                continue;
            }
            let px = |a: &Float64Array| Price::from_f64(a.value(i)).unwrap_or_default();
            return Some(MarketEvent::Bar(
                self.symbol.clone(),
                Box::new(flowsense_core::Bar {
                    open_time: UnixNanos(open_time),
                    interval,
                    open: px(&c.open),
                    high: px(&c.high),
                    low: px(&c.low),
                    close: px(&c.close),
                    volume: Size::from_f64(c.volume.value(i)).unwrap_or_default(),
                    trades: c
                        .trades
                        .as_ref()
                        .and_then(|t| t.is_valid(i).then(|| t.value(i))),
                }),
            ));
        }
    }
}

impl BarStream {
    fn fail(&mut self, e: Error) {
        self.failed = true;
        keep_first(&self.error, e);
    }
}
