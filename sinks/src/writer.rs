//! The lake writer: market events and dead letters in, Hive-partitioned Parquet files out.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use rustc_hash::FxHashMap;

use arrow::record_batch::RecordBatch;
use bytes::Bytes;
use flowsense_core::{
    BboUpdate, DeadLetter, DepthUpdate, MarketEvent, Side, Symbol, Table, UnixNanos,
};
use object_store::path::Path;
use object_store::{ObjectStoreExt, PutPayload};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, Encoding};
use parquet::file::properties::{WriterProperties, WriterPropertiesBuilder};
use parquet::schema::types::ColumnPath;

use crate::chunk::{Column, FileLayout, Scratch};
use crate::{Lake, Result};

/// Encodes one batch as a whole Parquet file, ready for one atomic `put`.
pub fn encode_parquet(batch: &RecordBatch, props: &WriterProperties) -> Result<Bytes> {
    let mut buf = Vec::with_capacity(batch.get_array_memory_size() / 2);
    let mut w = ArrowWriter::try_new(&mut buf, batch.schema(), Some(props.clone()))?;
    w.write(batch)?;
    w.close()?;
    Ok(Bytes::from(buf))
}

/// The writer settings every lake table starts from: Snappy; the integer columns in `delta`
/// (times and ids that rise row to row) as `DELTA_BINARY_PACKED`, a few bits each, cheaper to
/// encode than a dictionary they would overflow anyway (BENCHMARKS.md, ingest); and the columns
/// in `plain` (values that rarely repeat) without the dictionary Parquet would fill and abandon.
pub(crate) fn table_props(delta: &[&str], plain: &[&str]) -> WriterPropertiesBuilder {
    let mut b = WriterProperties::builder().set_compression(Compression::SNAPPY);
    for col in delta {
        b = b
            .set_column_dictionary_enabled(ColumnPath::from(*col), false)
            .set_column_encoding(ColumnPath::from(*col), Encoding::DELTA_BINARY_PACKED);
    }
    for col in plain {
        b = b.set_column_dictionary_enabled(ColumnPath::from(*col), false);
    }
    b
}

/// Rows a partition gathers before encoding them as a page of its file: 64 KiB of a 64-bit
/// column, so a page is encoded while its values are still in the core's cache (64 Ki rows a
/// page took 6 % more CPU; 4 Ki, 1 % less but files 1 % larger).
const BATCH_ROWS: usize = 1 << 13;

/// Open partitions a writer searches one by one before it hashes a key.
const FEW_PARTS: usize = 16;

/// The tables a [`LakeWriter`] writes (and the only ones a re-ingested source can have stale
/// files in).
const WRITTEN_TABLES: [Table; 7] = [
    Table::BookEvents,
    Table::DepthUpdates,
    Table::Trades,
    Table::Bbo,
    Table::Quotes,
    Table::Bars,
    Table::DeadLetters,
];

/// Unwraps the encoding of a page, which only fails on a broken invariant of ours.
fn encoded(r: Result<()>) {
    if let Err(e) = r {
        panic!("encoding a partition's rows failed: {e}");
    }
}

/// One open file's columns, encoded a page at a time (`chunk.rs`).
struct Rows {
    cols: Vec<Column>,
}

impl Rows {
    fn new(layout: &FileLayout) -> Self {
        Rows {
            cols: layout.columns(),
        }
    }

    /// Rows not yet in a page.
    fn pending(&self) -> usize {
        self.cols[0].pending()
    }

    /// Rows in the file so far.
    fn len(&self) -> usize {
        self.cols[0].len()
    }

    fn i64(&mut self, i: usize, v: Option<i64>) {
        self.cols[i].push_int(v);
    }
    fn u64(&mut self, i: usize, v: Option<u64>) {
        // Unsigned columns are INT64 with an unsigned logical type: the same bits.
        self.cols[i].push_int(v.map(|v| v as i64));
    }
    fn dec(&mut self, i: usize, raw: Option<i64>) {
        // raw / 1e9 is correctly rounded: the nearest double to the exact decimal.
        self.cols[i].push_float(raw.map(|r| r as f64 / 1e9));
    }
    fn str(&mut self, i: usize, v: &str) {
        self.cols[i].push_str(v);
    }
    /// A string known at compile time (a side, an action), kept by reference until encoded.
    fn word(&mut self, i: usize, v: &'static str) {
        self.cols[i].push_static(v);
    }
    fn bool(&mut self, i: usize, v: bool) {
        self.cols[i].push_bool_n(v, 1);
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

    /// One row per level of a depth message; what the levels share is appended once, `n` times.
    fn depth(&mut self, d: &DepthUpdate) {
        let n = d.bids.len() + d.asks.len();
        let [ts, local, first, last, side, price, size, snap] = self.cols.as_mut_slice() else {
            unreachable!("depth_updates has eight columns");
        };
        ts.push_int_n(Some(d.ts.0), n);
        local.push_int_n(d.local_ts.map(|t| t.0), n);
        first.push_int_n(Some(d.first_update_id as i64), n);
        last.push_int_n(Some(d.final_update_id as i64), n);
        snap.push_bool_n(d.is_snapshot, n);
        for (s, levels) in [(Side::Buy, &d.bids), (Side::Sell, &d.asks)] {
            for &(p, q) in levels {
                side.push_static(s.as_str());
                price.push_float(Some(p.as_f64()));
                size.push_float(Some(q.as_f64()));
            }
        }
    }

    /// Encodes the rows not yet in a page as one page of each column.
    fn encode_page(&mut self, scratch: &mut Scratch) -> Result<()> {
        self.cols
            .iter_mut()
            .try_for_each(|c| c.encode_page(scratch))
    }
}

#[derive(Hash, PartialEq, Eq, Clone)]
struct PartKey {
    table: Table,
    day: i64,
    symbol: Option<Symbol>,
}

/// One partition's open file: its columns, encoded a page at a time as rows come.
struct Part {
    key: PartKey,
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

/// What a [`LakeWriter`] hands to the store, in the order it must happen.
#[derive(Debug)]
pub enum Output {
    /// An encoded file to put, as the parts it is put from.
    File(Path, PutPayload),
    /// A source is done: once its files are put, files of it that this run did not write
    /// (left by an earlier, longer run) are to be removed.
    SourceDone(String),
}

/// The I/O half of a lake writer: puts files and removes a finished source's stale ones.
///
/// [`LakeWriter::flush`] uses its own; an ingest whose writer runs on its reader's thread hands
/// the writer's [`Output`] to one on an async task instead ([`LakeWriter::take_output`]).
pub struct LakeOutput {
    lake: Lake,
    /// Files put by sources not yet done.
    written: HashSet<Path>,
    by_source: SourceFiles,
    files_removed: u64,
}

/// The lake's files of the tables a [`LakeWriter`] writes, by the source that wrote them:
/// listed once, when the first source of any writer sharing it is done, and kept current with
/// the files they put and remove since. One per ingest run, shared by its writers. (Listing
/// the lake at the end of every source made an ingest of many sources quadratic: 1000
/// synthetic days spent most of their time listing; BENCHMARKS.md, synthetic generation.)
///
/// ```
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// use flowsense_sinks::{Lake, LakeWriter, SourceFiles};
/// let dir = tempfile::tempdir().unwrap();
/// let lake = Lake::open(dir.path().to_str().unwrap(), &Default::default()).unwrap();
/// let files = SourceFiles::default();
/// let a = LakeWriter::new(lake.clone()).sharing_source_files(files.clone());
/// let b = LakeWriter::new(lake).sharing_source_files(files);
/// # });
/// ```
#[derive(Clone, Default)]
pub struct SourceFiles(Arc<tokio::sync::Mutex<Option<FilesBySource>>>);

/// Lake files by the source that wrote them.
type FilesBySource = HashMap<String, HashSet<Path>>;

impl SourceFiles {
    /// Every file of the written tables, by source.
    async fn list(lake: &Lake) -> Result<FilesBySource> {
        let mut index = FilesBySource::new();
        for table in WRITTEN_TABLES {
            for path in lake.list_table_paths(table).await? {
                if let Some(s) = source_of(&path) {
                    index.entry(s.to_owned()).or_default().insert(path);
                }
            }
        }
        Ok(index)
    }
}

/// The source a lake file of a [`LakeWriter`] belongs to: its name is `<source>-<chunk>.parquet`,
/// the chunk in digits. Not the source of a file whose name merely starts with it.
fn source_of(path: &Path) -> Option<&str> {
    let (source, chunk) = path
        .filename()?
        .strip_suffix(".parquet")?
        .rsplit_once('-')?;
    (!chunk.is_empty() && chunk.bytes().all(|b| b.is_ascii_digit())).then_some(source)
}

impl LakeOutput {
    /// Output into `lake`.
    pub fn new(lake: Lake) -> Self {
        LakeOutput {
            lake,
            written: HashSet::new(),
            by_source: SourceFiles::default(),
            files_removed: 0,
        }
    }

    /// Output into `lake` that shares its listing of the lake with other outputs.
    pub fn sharing(lake: Lake, files: SourceFiles) -> Self {
        LakeOutput {
            by_source: files,
            ..LakeOutput::new(lake)
        }
    }

    /// Stale files removed so far.
    pub fn files_removed(&self) -> u64 {
        self.files_removed
    }

    /// Carries out a writer's output, in order.
    pub async fn write(&mut self, output: impl IntoIterator<Item = Output>) -> Result<()> {
        let store = self.lake.store();
        for out in output {
            match out {
                Output::File(path, payload) => {
                    store.put(&path, payload).await?;
                    if let Some(source) = source_of(&path)
                        && let Some(index) = self.by_source.0.lock().await.as_mut()
                    {
                        index
                            .entry(source.to_owned())
                            .or_default()
                            .insert(path.clone());
                    }
                    self.written.insert(path);
                }
                Output::SourceDone(source) => self.remove_stale(&source).await?,
            }
        }
        Ok(())
    }

    /// Removes the files of `source` that the lake holds and this run did not put: those of an
    /// earlier, longer ingest of it.
    async fn remove_stale(&mut self, source: &str) -> Result<()> {
        if !source.is_empty() {
            let stale: HashSet<Path> = {
                let mut listing = self.by_source.0.lock().await;
                if listing.is_none() {
                    *listing = Some(SourceFiles::list(&self.lake).await?);
                }
                let index = listing.as_mut().expect("listed above");
                let files = index.remove(source).unwrap_or_default();
                let (kept, stale): (HashSet<Path>, _) =
                    files.into_iter().partition(|p| self.written.contains(p));
                index.insert(source.to_owned(), kept);
                stale
            };
            let store = self.lake.store();
            for path in stale {
                store.delete(&path).await?;
                self.files_removed += 1;
            }
        }
        self.written.retain(|p| source_of(p) != Some(source));
        Ok(())
    }
}

/// Writes events of one source at a time into the lake.
///
/// Call [`begin_source`](LakeWriter::begin_source), push its events, then
/// [`end_source`](LakeWriter::end_source). Each partition's rows are encoded into its open
/// Parquet file a page of 8 Ki rows at a time (so no column holds more than a page of values
/// unencoded, and a page's values are still in the cache when it is encoded); a file is cut at
/// 1 M rows, and its bytes wait in memory until [`flush`](LakeWriter::flush) (or `end_source`)
/// puts them, so the caller decides when to await I/O. Everything but that I/O is synchronous: [`close_source`](LakeWriter::close_source) and
/// [`take_output`](LakeWriter::take_output) let the I/O happen elsewhere.
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
    /// Open partitions of the current source, and where each key's is.
    parts: Vec<Part>,
    index: FxHashMap<PartKey, usize>,
    /// The partition written last: consecutive events almost always share it.
    last: usize,
    pending: Vec<Output>,
    output: LakeOutput,
    stats: WriteStats,
    max_rows: usize,
    /// Rows gathered before they are encoded as a page.
    batch_rows: usize,
    /// Each table's schema and file properties, made once.
    layouts: HashMap<Table, FileLayout>,
    /// Buffers every page's encoding borrows.
    scratch: Scratch,
    dates: HashMap<i64, String>,
}

impl LakeWriter {
    /// A writer with 1 M-row files.
    pub fn new(lake: Lake) -> Self {
        LakeWriter {
            output: LakeOutput::new(lake.clone()),
            lake,
            source: String::new(),
            parts: Vec::new(),
            index: FxHashMap::default(),
            last: usize::MAX,
            pending: Vec::new(),
            stats: WriteStats::default(),
            max_rows: 1 << 20,
            batch_rows: BATCH_ROWS,
            layouts: HashMap::new(),
            scratch: Scratch::default(),
            dates: HashMap::new(),
        }
    }

    /// Rows per file before a partition is cut into a new chunk.
    pub fn with_max_rows(mut self, rows: usize) -> Self {
        self.max_rows = rows.max(1);
        self.batch_rows = self.max_rows.min(BATCH_ROWS);
        self
    }

    /// Rows gathered before they are encoded as a page.
    #[cfg(test)]
    fn with_batch_rows(mut self, rows: usize) -> Self {
        self.batch_rows = rows.max(1);
        self
    }

    /// The lake written to.
    pub fn lake(&self) -> &Lake {
        &self.lake
    }

    /// The writer shares its listing of the lake's files (for removing stale ones) with other
    /// writers of the same run, so the lake is listed once, not once a writer.
    pub fn sharing_source_files(mut self, files: SourceFiles) -> Self {
        self.output = LakeOutput::sharing(self.lake.clone(), files);
        self
    }

    /// The listing of the lake's files this writer uses, for an output elsewhere to share.
    pub fn source_files(&self) -> SourceFiles {
        self.output.by_source.clone()
    }

    /// Totals so far.
    pub fn stats(&self) -> &WriteStats {
        &self.stats
    }

    /// Starts a source; its id names its files.
    pub fn begin_source(&mut self, id: &str) {
        self.source = id.to_string();
    }

    /// The open partition for a table, day and symbol (made on first use).
    fn part_index(&mut self, table: Table, ts: UnixNanos, symbol: Option<&Symbol>) -> usize {
        let day = ts.day();
        if let Some(p) = self.parts.get(self.last)
            && p.key.table == table
            && p.key.day == day
            && p.key.symbol.as_ref() == symbol
        {
            return self.last;
        }
        // A source's few open partitions (events of one symbol alternate between two or three
        // tables) are found by a look at each, without hashing a key.
        if self.parts.len() <= FEW_PARTS
            && let Some(i) = self.parts.iter().position(|p| {
                p.key.table == table && p.key.day == day && p.key.symbol.as_ref() == symbol
            })
        {
            self.last = i;
            return i;
        }
        let key = PartKey {
            table,
            day,
            symbol: symbol.cloned(),
        };
        let i = match self.index.get(&key) {
            Some(&i) => i,
            None => {
                let layout = self.layouts.entry(table).or_insert_with(|| {
                    FileLayout::new(table.file_schema()).expect("the lake's schemas convert")
                });
                self.parts.push(Part {
                    key: key.clone(),
                    rows: Rows::new(layout),
                    chunk: 0,
                });
                self.index.insert(key, self.parts.len() - 1);
                self.parts.len() - 1
            }
        };
        self.last = i;
        i
    }

    fn part(&mut self, table: Table, ts: UnixNanos, symbol: Option<&Symbol>) -> &mut Rows {
        let i = self.part_index(table, ts, symbol);
        &mut self.parts[i].rows
    }

    /// Adds one event's rows.
    pub fn push(&mut self, ev: &MarketEvent) {
        match ev {
            MarketEvent::Order(s, o) => {
                let r = self.part(Table::BookEvents, o.ts, Some(s));
                r.i64(0, Some(o.ts.0));
                r.i64(1, None);
                r.u64(2, Some(o.seq));
                r.word(3, o.action.as_str());
                r.u64(4, Some(o.order_id.0));
                r.word(5, o.side.as_str());
                r.dec(6, Some(o.price.raw()));
                r.dec(7, Some(o.size.raw()));
            }
            MarketEvent::Depth(s, d) => {
                self.part(Table::DepthUpdates, d.ts, Some(s)).depth(d);
            }
            MarketEvent::Trade(s, t) => {
                let r = self.part(Table::Trades, t.ts, Some(s));
                r.i64(0, Some(t.ts.0));
                r.i64(1, t.local_ts.map(|t| t.0));
                r.u64(2, t.trade_id);
                r.dec(3, Some(t.price.raw()));
                r.dec(4, Some(t.size.raw()));
                r.word(5, t.aggressor.as_str());
            }
            MarketEvent::Bbo(s, b) => {
                let ts = b.ts.or(b.local_ts).unwrap_or_default();
                self.part(Table::Bbo, ts, Some(s)).bbo(b, false);
            }
            MarketEvent::Quote(s, b) => {
                let ts = b.ts.or(b.local_ts).unwrap_or_default();
                self.part(Table::Quotes, ts, Some(s)).bbo(b, true);
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
            }
        };
        // Every arm above wrote into the partition `part` just selected: `last`.
        self.cut_if_full(self.last);
    }

    /// Adds a dead letter.
    pub fn push_dead(&mut self, d: &DeadLetter) {
        let i = self.part_index(Table::DeadLetters, UnixNanos(0), None);
        let r = &mut self.parts[i].rows;
        r.str(0, &d.source);
        r.str(1, &d.position);
        r.str(2, &d.reason_text());
        r.str(3, &d.raw);
        self.cut_if_full(i);
    }

    /// Encodes a partition's page once it is full, and cuts its file once that is.
    fn cut_if_full(&mut self, part: usize) {
        let Some(p) = self.parts.get_mut(part) else {
            return;
        };
        if p.rows.len() >= self.max_rows {
            encoded(self.cut(part));
        } else if p.rows.pending() >= self.batch_rows {
            encoded(p.rows.encode_page(&mut self.scratch));
        }
    }

    /// Encodes a partition's rows into a pending file.
    fn cut(&mut self, part: usize) -> Result<()> {
        let Some(part) = self.parts.get_mut(part) else {
            return Ok(());
        };
        let rows = part.rows.len();
        if rows == 0 {
            return Ok(());
        }
        let buf = self.layouts[&part.key.table].write(&mut part.rows.cols, &mut self.scratch)?;
        let chunk = part.chunk;
        part.chunk += 1;
        let key = &part.key;
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
        *self.stats.rows.entry(key.table).or_default() += rows as u64;
        self.stats.files += 1;
        self.stats.bytes += buf.content_length() as u64;
        self.pending.push(Output::File(path, buf));
        Ok(())
    }

    /// True when encoded files (or a finished source) wait for I/O.
    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// What waits for I/O, in order, to be carried out by a [`LakeOutput`] elsewhere.
    pub fn take_output(&mut self) -> Vec<Output> {
        std::mem::take(&mut self.pending)
    }

    /// Puts every encoded file (and removes stale files of finished sources).
    pub async fn flush(&mut self) -> Result<()> {
        let pending = std::mem::take(&mut self.pending);
        self.output.write(pending).await?;
        self.stats.files_removed = self.output.files_removed();
        Ok(())
    }

    /// Encodes everything of the current source into files waiting for I/O, followed by the
    /// removal of its stale files.
    pub fn close_source(&mut self) -> Result<()> {
        for i in 0..self.parts.len() {
            self.cut(i)?;
            // Done with: its memory goes now, not once every other partition is cut too.
            self.parts[i].rows.cols = Vec::new();
        }
        self.parts.clear();
        self.index.clear();
        self.last = usize::MAX;
        self.pending
            .push(Output::SourceDone(std::mem::take(&mut self.source)));
        Ok(())
    }

    /// Writes everything of the current source and removes its files that this run did not write.
    pub async fn end_source(&mut self) -> Result<()> {
        self.close_source()?;
        self.flush().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Array, Float64Array};
    use flowsense_core::{DepthUpdate, Price, Size, Trade};
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

    fn trade(i: i64) -> MarketEvent {
        let t = Trade {
            ts: UnixNanos::from_millis(1_723_161_256_000 + i),
            local_ts: None,
            trade_id: Some(i as u64),
            price: Price::from_units(100 + i),
            size: Size::from_units(1),
            aggressor: Side::Buy,
        };
        MarketEvent::Trade(Symbol::new("ABC").unwrap(), t)
    }

    /// Prices of every row of one file, in order, and its row groups.
    fn read(path: &std::path::Path) -> (Vec<f64>, usize) {
        let file = std::fs::File::open(path).unwrap();
        let reader = ParquetRecordBatchReaderBuilder::try_new(file).unwrap();
        let groups = reader.metadata().num_row_groups();
        let mut prices = Vec::new();
        for batch in reader.build().unwrap() {
            let batch = batch.unwrap();
            let col = batch.column_by_name("price").unwrap();
            let col = col.as_any().downcast_ref::<Float64Array>().unwrap();
            prices.extend((0..col.len()).map(|i| col.value(i)));
        }
        (prices, groups)
    }

    #[tokio::test]
    async fn a_file_longer_than_a_batch_is_encoded_batch_by_batch_into_one_file() {
        let dir = tempfile::tempdir().unwrap();
        let lake = Lake::open(dir.path().to_str().unwrap(), &Default::default()).unwrap();
        let mut w = LakeWriter::new(lake).with_max_rows(10).with_batch_rows(3);
        w.begin_source("s");
        for i in 0..25 {
            w.push(&trade(i));
        }
        w.end_source().await.unwrap();
        assert_eq!(w.stats().rows[&Table::Trades], 25);
        assert_eq!(w.stats().files, 3);
        let part = dir.path().join("trades/date=2024-08-08/symbol=ABC");
        let mut all = Vec::new();
        for (chunk, rows) in [(0, 10), (1, 10), (2, 5)] {
            let (prices, groups) = read(&part.join(format!("s-{chunk:05}.parquet")));
            assert_eq!(prices.len(), rows, "file {chunk}");
            assert_eq!(
                groups, 1,
                "a file is one row group however many batches fill it"
            );
            all.extend(prices);
        }
        let want: Vec<f64> = (0..25).map(|i| 100.0 + i as f64).collect();
        assert_eq!(all, want);
    }

    #[test]
    fn every_table_the_writer_writes_has_columns_it_can_encode() {
        for table in WRITTEN_TABLES {
            let layout = FileLayout::new(table.file_schema()).unwrap();
            assert_eq!(layout.columns().len(), table.file_schema().fields().len());
        }
    }

    /// The `.parquet` files under `dir`, by name.
    fn names(dir: &std::path::Path) -> Vec<String> {
        let mut out: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".parquet"))
            .collect();
        out.sort();
        out
    }

    /// A lake in a temporary folder, and the partition [`trade`]'s rows go to.
    fn trades_lake() -> (tempfile::TempDir, Lake, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let lake = Lake::open(dir.path().to_str().unwrap(), &Default::default()).unwrap();
        let part = dir.path().join("trades/date=2024-08-08/symbol=ABC");
        (dir, lake, part)
    }

    /// `rows` trades as one whole source.
    async fn write_source(w: &mut LakeWriter, source: &str, rows: i64) {
        w.begin_source(source);
        (0..rows).for_each(|i| w.push(&trade(i)));
        w.end_source().await.unwrap();
    }

    #[tokio::test]
    async fn a_shorter_rerun_removes_the_files_the_longer_one_left_and_no_others() {
        let (_dir, lake, part) = trades_lake();
        // Source `s` in three files, and a source whose id merely starts with `s-`.
        for (source, rows) in [("s", 25), ("s-b", 5)] {
            let mut w = LakeWriter::new(lake.clone()).with_max_rows(10);
            write_source(&mut w, source, rows).await;
        }
        assert_eq!(
            names(&part),
            [
                "s-00000.parquet",
                "s-00001.parquet",
                "s-00002.parquet",
                "s-b-00000.parquet"
            ]
        );
        // `s` again, shorter, its I/O carried out elsewhere (as an inline ingest does).
        let mut w = LakeWriter::new(lake.clone()).with_max_rows(10);
        let mut output = LakeOutput::new(lake);
        w.begin_source("s");
        for i in 0..15 {
            w.push(&trade(i));
            output.write(w.take_output()).await.unwrap();
        }
        w.close_source().unwrap();
        assert!(w.has_pending());
        output.write(w.take_output()).await.unwrap();
        assert_eq!(output.files_removed(), 1);
        assert_eq!(
            names(&part),
            ["s-00000.parquet", "s-00001.parquet", "s-b-00000.parquet"]
        );
        assert_eq!(read(&part.join("s-00001.parquet")).0.len(), 5);
    }

    #[tokio::test]
    async fn one_writer_lists_the_lake_once_and_still_removes_what_a_later_rerun_leaves() {
        let (_dir, lake, part) = trades_lake();
        // One writer, so one listing (at the first source done): `a`, then `s` in three files,
        // then `s` again, shorter. The third file is put after the listing and must still go.
        let mut w = LakeWriter::new(lake.clone()).with_max_rows(10);
        for (source, rows) in [("a", 5), ("s", 25), ("s", 15)] {
            write_source(&mut w, source, rows).await;
        }
        assert_eq!(w.stats().files_removed, 1);
        assert_eq!(
            names(&part),
            ["a-00000.parquet", "s-00000.parquet", "s-00001.parquet"]
        );
    }

    #[tokio::test]
    async fn writers_sharing_one_listing_keep_each_others_new_files() {
        let (_dir, lake, part) = trades_lake();
        // An earlier run left `s` in three files.
        let mut w = LakeWriter::new(lake.clone()).with_max_rows(10);
        write_source(&mut w, "s", 25).await;
        // This run: `b` re-ingests `s`, shorter, and has put its first file when `a` finishes
        // a source and so lists the lake for both.
        let files = SourceFiles::default();
        let mut a =
            (LakeWriter::new(lake.clone()).with_max_rows(10)).sharing_source_files(files.clone());
        let mut b = (LakeWriter::new(lake).with_max_rows(10)).sharing_source_files(files);
        b.begin_source("s");
        (0..10).for_each(|i| b.push(&trade(i)));
        b.flush().await.unwrap();
        write_source(&mut a, "a", 1).await;
        (10..15).for_each(|i| b.push(&trade(i)));
        b.end_source().await.unwrap();
        assert_eq!(a.stats().files_removed, 0);
        assert_eq!(b.stats().files_removed, 1);
        assert_eq!(
            names(&part),
            ["a-00000.parquet", "s-00000.parquet", "s-00001.parquet"]
        );
        assert_eq!(read(&part.join("s-00001.parquet")).0.len(), 5);
    }

    #[test]
    fn a_file_belongs_to_the_source_before_its_chunk_number() {
        let of = |p: &str| source_of(&Path::from(p)).map(str::to_owned);
        assert_eq!(of("t/date=x/s-b-00001.parquet").as_deref(), Some("s-b"));
        assert_eq!(of("t/date=x/s-00001.parquet").as_deref(), Some("s"));
        assert_eq!(of("t/date=x/s-b.parquet"), None);
        assert_eq!(of("t/date=x/s-.parquet"), None);
        assert_eq!(of("t/date=x/s-00001.csv"), None);
    }

    #[tokio::test]
    async fn rows_short_of_a_batch_are_written_at_the_end_of_the_source() {
        let dir = tempfile::tempdir().unwrap();
        let lake = Lake::open(dir.path().to_str().unwrap(), &Default::default()).unwrap();
        let mut w = LakeWriter::new(lake);
        w.begin_source("s");
        for i in 0..2 {
            w.push(&trade(i));
        }
        assert!(
            !w.has_pending(),
            "nothing is encoded before the batch or the source ends"
        );
        w.end_source().await.unwrap();
        let file = dir
            .path()
            .join("trades/date=2024-08-08/symbol=ABC/s-00000.parquet");
        assert_eq!(read(&file).0, vec![100.0, 101.0]);
    }

    #[tokio::test]
    async fn depth_messages_split_across_pages_lose_no_row() {
        let dir = tempfile::tempdir().unwrap();
        let lake = Lake::open(dir.path().to_str().unwrap(), &Default::default()).unwrap();
        let mut w = LakeWriter::new(lake).with_batch_rows(5);
        w.begin_source("s");
        for m in 0..3_i64 {
            let level = |k: i64| (Price::from_units(100 + 10 * m + k), Size::from_units(1));
            let d = DepthUpdate {
                ts: UnixNanos::from_millis(1_723_161_256_000 + m),
                local_ts: None,
                first_update_id: m as u64,
                final_update_id: m as u64,
                prev_final_update_id: None,
                bids: vec![level(0), level(1)],
                asks: vec![level(2), level(3)],
                is_snapshot: false,
            };
            w.push(&MarketEvent::Depth(
                Symbol::new("ABC").unwrap(),
                Box::new(d),
            ));
            // 4 rows a message, 5 a page: a page is cut after the second message.
            assert_eq!(w.parts[0].rows.len(), 4 * (m as usize + 1), "message {m}");
            assert_eq!(
                w.parts[0].rows.pending(),
                [4, 0, 4][m as usize],
                "message {m}"
            );
        }
        w.end_source().await.unwrap();
        let file = dir
            .path()
            .join("depth_updates/date=2024-08-08/symbol=ABC/s-00000.parquet");
        let want: Vec<f64> = (0..3)
            .flat_map(|m| (0..4).map(move |k| (100 + 10 * m + k) as f64))
            .collect();
        assert_eq!(read(&file).0, want);
    }
}
