//! The lake writer: market events and dead letters in, Hive-partitioned Parquet files out.

use std::collections::{BTreeMap, HashMap, HashSet};

use arrow::array::{
    ArrayBuilder, ArrayRef, BooleanBuilder, Float64Builder, Int64Builder, StringBuilder,
    UInt64Builder, make_builder,
};
use arrow::record_batch::RecordBatch;
use bytes::Bytes;
use flowsense_core::{BboUpdate, DeadLetter, MarketEvent, Symbol, Table, UnixNanos};
use object_store::path::Path;
use object_store::{ObjectStoreExt, PutPayload};
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;

use crate::{Lake, Result};

/// Encodes one batch as a whole Parquet file, ready for one atomic `put`.
pub fn encode_parquet(batch: &RecordBatch, props: &WriterProperties) -> Result<Bytes> {
    let mut buf = Vec::with_capacity(batch.get_array_memory_size() / 2);
    let mut w = ArrowWriter::try_new(&mut buf, batch.schema(), Some(props.clone()))?;
    w.write(batch)?;
    w.close()?;
    Ok(Bytes::from(buf))
}

/// Column builders for one table, made from its schema.
struct Rows {
    table: Table,
    cols: Vec<Box<dyn ArrayBuilder>>,
}

macro_rules! col {
    ($self:ident, $i:expr, $t:ty) => {
        $self.cols[$i]
            .as_any_mut()
            .downcast_mut::<$t>()
            .expect("builder type follows the schema")
    };
}

impl Rows {
    fn new(table: Table, capacity: usize) -> Self {
        let schema = table.file_schema();
        let cols = schema
            .fields()
            .iter()
            .map(|f| make_builder(f.data_type(), capacity))
            .collect();
        Rows { table, cols }
    }

    fn len(&self) -> usize {
        self.cols[0].len()
    }

    fn i64(&mut self, i: usize, v: Option<i64>) {
        col!(self, i, Int64Builder).append_option(v);
    }
    fn u64(&mut self, i: usize, v: Option<u64>) {
        col!(self, i, UInt64Builder).append_option(v);
    }
    fn dec(&mut self, i: usize, raw: Option<i64>) {
        // raw / 1e9 is correctly rounded: the nearest double to the exact decimal.
        col!(self, i, Float64Builder).append_option(raw.map(|r| r as f64 / 1e9));
    }
    fn str(&mut self, i: usize, v: &str) {
        col!(self, i, StringBuilder).append_value(v);
    }
    fn bool(&mut self, i: usize, v: bool) {
        col!(self, i, BooleanBuilder).append_value(v);
    }

    fn bbo(&mut self, b: &BboUpdate, quotes: bool) {
        if quotes {
            self.i64(0, b.ts.map(|t| t.0));
        } else {
            self.i64(0, Some(b.ts.or(b.local_ts).unwrap_or_default().0));
        }
        self.i64(1, b.local_ts.map(|t| t.0));
        self.u64(2, b.update_id);
        self.dec(3, b.bid.map(|x| x.0.raw()));
        self.dec(4, b.bid.map(|x| x.1.raw()));
        self.dec(5, b.ask.map(|x| x.0.raw()));
        self.dec(6, b.ask.map(|x| x.1.raw()));
        if !quotes {
            self.bool(7, b.gap);
        }
    }

    fn finish(&mut self) -> Result<RecordBatch> {
        let arrays: Vec<ArrayRef> = self.cols.iter_mut().map(|c| c.finish()).collect();
        Ok(RecordBatch::try_new(self.table.file_schema(), arrays)?)
    }
}

#[derive(Hash, PartialEq, Eq, Clone)]
struct PartKey {
    table: Table,
    day: i64,
    symbol: Option<Symbol>,
}

struct Part {
    rows: Rows,
    chunk: u32,
}

/// What a writer has written so far.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WriteStats {
    /// Rows per table.
    pub rows: BTreeMap<Table, u64>,
    /// Parquet files written.
    pub files: u64,
    /// Bytes written.
    pub bytes: u64,
    /// Stale files of re-ingested sources removed.
    pub files_removed: u64,
}

/// Writes events of one source at a time into the lake.
///
/// Call [`begin_source`](LakeWriter::begin_source), push its events, then
/// [`end_source`](LakeWriter::end_source). Full partitions are encoded as they fill; their bytes
/// wait in memory until [`flush`](LakeWriter::flush) (or `end_source`) puts them, so the caller
/// decides when to await I/O.
///
/// ```
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// use flowsense_core::{MarketEvent, Price, Side, Size, Symbol, Trade, UnixNanos};
/// use flowsense_sinks::{Lake, LakeWriter};
/// let dir = tempfile::tempdir().unwrap();
/// let lake = Lake::open(dir.path().to_str().unwrap(), &Default::default()).unwrap();
/// let mut w = LakeWriter::new(lake);
/// w.begin_source("example");
/// let t = Trade { ts: UnixNanos::from_millis(1_723_161_256_322), local_ts: None, trade_id: Some(1),
///     price: Price::from_units(100), size: Size::from_units(2), aggressor: Side::Buy };
/// w.push(&MarketEvent::Trade(Symbol::new("ABC").unwrap(), t));
/// w.end_source().await.unwrap();
/// assert!(dir.path().join("trades/date=2024-08-08/symbol=ABC/example-00000.parquet").exists());
/// # });
/// ```
pub struct LakeWriter {
    lake: Lake,
    source: String,
    parts: HashMap<PartKey, Part>,
    pending: Vec<(Path, Bytes)>,
    written: HashSet<Path>,
    stats: WriteStats,
    max_rows: usize,
    props: WriterProperties,
    dates: HashMap<i64, String>,
}

impl LakeWriter {
    /// A writer with 1 M-row files.
    pub fn new(lake: Lake) -> Self {
        let props = WriterProperties::builder()
            .set_compression(Compression::SNAPPY)
            .set_max_row_group_row_count(Some(1 << 20))
            .build();
        LakeWriter {
            lake,
            source: String::new(),
            parts: HashMap::new(),
            pending: Vec::new(),
            written: HashSet::new(),
            stats: WriteStats::default(),
            max_rows: 1 << 20,
            props,
            dates: HashMap::new(),
        }
    }

    /// Rows per file before a partition is cut into a new chunk.
    pub fn with_max_rows(mut self, rows: usize) -> Self {
        self.max_rows = rows.max(1);
        self
    }

    /// The lake written to.
    pub fn lake(&self) -> &Lake {
        &self.lake
    }

    /// Totals so far.
    pub fn stats(&self) -> &WriteStats {
        &self.stats
    }

    /// Starts a source; its id names its files.
    pub fn begin_source(&mut self, id: &str) {
        self.source = id.to_string();
    }

    fn part(&mut self, table: Table, ts: UnixNanos, symbol: Option<&Symbol>) -> &mut Rows {
        let key = PartKey {
            table,
            day: ts.day(),
            symbol: symbol.cloned(),
        };
        let cap = self.max_rows.min(1 << 16);
        &mut self
            .parts
            .entry(key)
            .or_insert_with(|| Part {
                rows: Rows::new(table, cap),
                chunk: 0,
            })
            .rows
    }

    /// Adds one event's rows.
    pub fn push(&mut self, ev: &MarketEvent) {
        let (table, ts, sym) = match ev {
            MarketEvent::Order(s, o) => {
                let r = self.part(Table::BookEvents, o.ts, Some(s));
                r.i64(0, Some(o.ts.0));
                r.i64(1, None);
                r.u64(2, Some(o.seq));
                r.str(3, o.action.as_str());
                r.u64(4, Some(o.order_id.0));
                r.str(5, o.side.as_str());
                r.dec(6, Some(o.price.raw()));
                r.dec(7, Some(o.size.raw()));
                (Table::BookEvents, o.ts, s)
            }
            MarketEvent::Depth(s, d) => {
                let r = self.part(Table::DepthUpdates, d.ts, Some(s));
                for (side, levels) in [
                    (flowsense_core::Side::Buy, &d.bids),
                    (flowsense_core::Side::Sell, &d.asks),
                ] {
                    for &(p, q) in levels {
                        r.i64(0, Some(d.ts.0));
                        r.i64(1, d.local_ts.map(|t| t.0));
                        r.u64(2, Some(d.first_update_id));
                        r.u64(3, Some(d.final_update_id));
                        r.str(4, side.as_str());
                        r.dec(5, Some(p.raw()));
                        r.dec(6, Some(q.raw()));
                        r.bool(7, d.is_snapshot);
                    }
                }
                (Table::DepthUpdates, d.ts, s)
            }
            MarketEvent::Trade(s, t) => {
                let r = self.part(Table::Trades, t.ts, Some(s));
                r.i64(0, Some(t.ts.0));
                r.i64(1, t.local_ts.map(|t| t.0));
                r.u64(2, t.trade_id);
                r.dec(3, Some(t.price.raw()));
                r.dec(4, Some(t.size.raw()));
                r.str(5, t.aggressor.as_str());
                (Table::Trades, t.ts, s)
            }
            MarketEvent::Bbo(s, b) => {
                let ts = b.ts.or(b.local_ts).unwrap_or_default();
                self.part(Table::Bbo, ts, Some(s)).bbo(b, false);
                (Table::Bbo, ts, s)
            }
            MarketEvent::Quote(s, b) => {
                let ts = b.ts.or(b.local_ts).unwrap_or_default();
                self.part(Table::Quotes, ts, Some(s)).bbo(b, true);
                (Table::Quotes, ts, s)
            }
            MarketEvent::Bar(s, b) => {
                let r = self.part(Table::Bars, b.open_time, Some(s));
                r.i64(0, Some(b.open_time.0));
                r.str(
                    1,
                    &flowsense_core::job::Span(b.interval.max(0) as u64).to_string(),
                );
                r.dec(2, Some(b.open.raw()));
                r.dec(3, Some(b.high.raw()));
                r.dec(4, Some(b.low.raw()));
                r.dec(5, Some(b.close.raw()));
                r.dec(6, Some(b.volume.raw()));
                r.u64(7, b.trades);
                (Table::Bars, b.open_time, s)
            }
        };
        let key = PartKey {
            table,
            day: ts.day(),
            symbol: Some(sym.clone()),
        };
        self.cut_if_full(key);
    }

    /// Adds a dead letter.
    pub fn push_dead(&mut self, d: &DeadLetter) {
        let key = PartKey {
            table: Table::DeadLetters,
            day: 0,
            symbol: None,
        };
        let cap = 1024;
        let r = &mut self
            .parts
            .entry(key.clone())
            .or_insert_with(|| Part {
                rows: Rows::new(Table::DeadLetters, cap),
                chunk: 0,
            })
            .rows;
        r.str(0, &d.source);
        r.str(1, &d.position);
        r.str(2, &d.reason_text());
        r.str(3, &d.raw);
        self.cut_if_full(key);
    }

    fn cut_if_full(&mut self, key: PartKey) {
        let full = self
            .parts
            .get(&key)
            .is_some_and(|p| p.rows.len() >= self.max_rows);
        // Encoding in-memory arrays only fails on a broken invariant of ours.
        if full && let Err(e) = self.cut(&key) {
            panic!("encoding a full partition failed: {e}");
        }
    }

    /// Encodes a partition's rows into a pending file.
    fn cut(&mut self, key: &PartKey) -> Result<()> {
        let Some(part) = self.parts.get_mut(key) else {
            return Ok(());
        };
        if part.rows.len() == 0 {
            return Ok(());
        }
        let batch = part.rows.finish()?;
        let chunk = part.chunk;
        part.chunk += 1;
        let buf = encode_parquet(&batch, &self.props)?;
        let file = format!("{}-{chunk:05}.parquet", self.source);
        let path = match &key.symbol {
            Some(sym) => {
                let date = self
                    .dates
                    .entry(key.day)
                    .or_insert_with(|| UnixNanos(key.day * UnixNanos::DAY).date_string());
                self.lake.path(&[
                    key.table.name(),
                    &format!("date={date}"),
                    &format!("symbol={sym}"),
                    &file,
                ])
            }
            None => self.lake.path(&[key.table.name(), &file]),
        };
        *self.stats.rows.entry(key.table).or_default() += batch.num_rows() as u64;
        self.stats.files += 1;
        self.stats.bytes += buf.len() as u64;
        self.pending.push((path, buf));
        Ok(())
    }

    /// True when encoded files wait to be put.
    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Puts every encoded file.
    pub async fn flush(&mut self) -> Result<()> {
        let store = self.lake.store();
        for (path, bytes) in self.pending.drain(..) {
            store.put(&path, PutPayload::from(bytes)).await?;
            self.written.insert(path);
        }
        Ok(())
    }

    /// Writes everything of the current source and removes its files that this run did not write.
    pub async fn end_source(&mut self) -> Result<()> {
        let keys: Vec<PartKey> = self.parts.keys().cloned().collect();
        for k in &keys {
            self.cut(k)?;
        }
        self.parts.clear();
        self.flush().await?;
        self.remove_stale().await?;
        self.written.clear();
        Ok(())
    }

    async fn remove_stale(&mut self) -> Result<()> {
        if self.source.is_empty() {
            return Ok(());
        }
        let store = self.lake.store();
        let prefix = format!("{}-", self.source);
        for table in Table::ALL {
            let listing = self.lake.list_table(table).await?;
            for meta in listing {
                let name = meta.location.filename().unwrap_or_default();
                if name.starts_with(&prefix)
                    && name.ends_with(".parquet")
                    && !self.written.contains(&meta.location)
                {
                    store.delete(&meta.location).await?;
                    self.stats.files_removed += 1;
                }
            }
        }
        Ok(())
    }
}
