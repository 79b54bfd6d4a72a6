//! The `features` table writer: feature rows of one job in, Hive-partitioned Parquet out.
//!
//! Files are `features/date=D/symbol=S/<job>-<bucket>-<chunk>.parquet`. Each file holds one
//! bucket width of one symbol-day, in time order, so a file's contents depend only on the job and
//! its input, never on how many workers computed it or when a frontier moved. Re-running a job
//! first removes the job's earlier files for the symbols the writer owns ([`FeatureWriter::clear`]),
//! so a re-run replaces its output instead of adding to it.

use std::collections::HashMap;

use flowsense_core::{FeatureRow, Lake, Symbol, Table, UnixNanos};
use object_store::{ObjectStoreExt, PutPayload};
use parquet::file::properties::WriterProperties;
use parquet::schema::types::ColumnPath;

use crate::Result;

type Key = (i64, Symbol, std::sync::Arc<str>);

/// The day (since the epoch) of the `date=` partition a row is filed under: a bucket's row
/// carries its end, so the day the bucket starts in.
fn partition_day(row: &FeatureRow) -> i64 {
    let at = if &*row.bucket == flowsense_core::features::EVENT_BUCKET {
        row.ts
    } else {
        row.ts - 1
    };
    UnixNanos(at).day()
}

/// Rows as the lake's `features` table shows them to SQL: the file's columns, then the
/// partition's `date` and `symbol` (what the service streams, so that it equals what lands).
///
/// ```
/// use flowsense_core::{FeatureRow, Symbol};
/// let row = FeatureRow::empty(Symbol::new("ABC").unwrap(), 1_723_161_256_000_000_000, "1s".into());
/// let b = flowsense_sinks::features::table_batch("job", &[row], 5).unwrap();
/// let n = b.num_columns();
/// assert_eq!(b.schema().field(n - 2).name(), "date");
/// assert_eq!(b.schema().field(n - 1).name(), "symbol");
/// ```
pub fn table_batch(
    job: &str,
    rows: &[FeatureRow],
    levels: usize,
) -> Result<arrow::record_batch::RecordBatch> {
    use arrow::array::{ArrayRef, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};
    use std::sync::Arc;
    let file = flowsense_core::features::to_record_batch(job, rows, levels)?;
    let mut fields: Vec<Arc<Field>> = file.schema().fields().iter().cloned().collect();
    fields.push(Arc::new(Field::new("date", DataType::Utf8, false)));
    fields.push(Arc::new(Field::new("symbol", DataType::Utf8, false)));
    let mut cols: Vec<ArrayRef> = file.columns().to_vec();
    cols.push(Arc::new(StringArray::from_iter_values(rows.iter().map(
        |r| UnixNanos(partition_day(r) * UnixNanos::DAY).date_string(),
    ))));
    cols.push(Arc::new(StringArray::from_iter_values(
        rows.iter().map(|r| r.symbol.as_str()),
    )));
    Ok(arrow::record_batch::RecordBatch::try_new(
        Arc::new(Schema::new(fields)),
        cols,
    )?)
}

/// Most feature columns are measurements that rarely repeat (flows, ratios, volatilities): a
/// dictionary would hash every value only to be abandoned, so the table is written plain, with
/// `ts` as deltas; the names (`job`, `bucket`) and the price-like columns, which do repeat, keep
/// dictionaries.
fn props() -> WriterProperties {
    let mut b = crate::writer::table_props(&["ts"], &[]).set_dictionary_enabled(false);
    for col in [
        "job",
        "bucket",
        "mid",
        "bid_price",
        "ask_price",
        "spread",
        "open",
        "high",
        "low",
        "close",
    ] {
        b = b.set_column_dictionary_enabled(ColumnPath::from(col), true);
    }
    b.build()
}

/// Writes one job's feature rows (from one worker) into the lake.
///
/// ```
/// use flowsense_core::{FeatureRow, Lake, Symbol};
/// use flowsense_sinks::FeatureWriter;
/// let dir = tempfile::tempdir().unwrap();
/// let lake = Lake::open(dir.path().to_str().unwrap(), &Default::default()).unwrap();
/// let mut w = FeatureWriter::new(lake, "demo", 10).unwrap();
/// w.push(FeatureRow::empty(Symbol::new("ABC").unwrap(), 1_723_161_256_000_000_000, "1s".into()));
/// w.finish().unwrap();
/// assert!(dir.path().join("features/date=2024-08-08/symbol=ABC/demo-1s-00000.parquet").exists());
/// ```
pub struct FeatureWriter {
    lake: Lake,
    job: String,
    levels: usize,
    rt: tokio::runtime::Runtime,
    parts: HashMap<Key, (Vec<FeatureRow>, u32)>,
    max_rows: usize,
    props: WriterProperties,
    rows: u64,
    files: u64,
}

impl FeatureWriter {
    /// A writer for job `job`, keeping `levels` entries of the per-level columns.
    pub fn new(lake: Lake, job: &str, levels: usize) -> Result<Self> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        Ok(FeatureWriter {
            lake,
            job: job.to_string(),
            levels,
            rt,
            parts: HashMap::new(),
            max_rows: 256 * 1024,
            props: props(),
            rows: 0,
            files: 0,
        })
    }

    /// Removes this job's files of every symbol `owns` accepts (run it before writing).
    pub fn clear(&mut self, owns: impl Fn(&Symbol) -> bool) -> Result<u64> {
        let store = self.lake.store();
        let prefix = format!("{}-", self.job);
        let listing = self.rt.block_on(self.lake.list_table(Table::Features))?;
        let mut removed = 0;
        for meta in listing {
            let name = meta.location.filename().unwrap_or_default();
            let symbol = meta
                .location
                .parts()
                .find_map(|p| p.as_ref().strip_prefix("symbol=").map(str::to_string))
                .and_then(|s| Symbol::new(&s).ok());
            if name.starts_with(&prefix) && symbol.as_ref().is_some_and(&owns) {
                self.rt.block_on(store.delete(&meta.location))?;
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// Adds a row; a partition that reaches the file size is written out.
    pub fn push(&mut self, row: FeatureRow) -> Result<()> {
        let key = (partition_day(&row), row.symbol.clone(), row.bucket.clone());
        let part = self.parts.entry(key.clone()).or_default();
        part.0.push(row);
        if part.0.len() >= self.max_rows {
            self.cut(&key)?;
        }
        Ok(())
    }

    fn cut(&mut self, key: &Key) -> Result<()> {
        let Some((rows, chunk)) = self.parts.get_mut(key) else {
            return Ok(());
        };
        if rows.is_empty() {
            return Ok(());
        }
        let batch = flowsense_core::features::to_record_batch(&self.job, rows, self.levels)?;
        let n = rows.len() as u64;
        rows.clear();
        let c = *chunk;
        *chunk += 1;
        let buf = crate::writer::encode_parquet(&batch, &self.props)?;
        let (day, symbol, bucket) = key;
        let path = self.lake.path(&[
            Table::Features.name(),
            &format!("date={}", UnixNanos(day * UnixNanos::DAY).date_string()),
            &format!("symbol={symbol}"),
            &format!("{}-{bucket}-{c:05}.parquet", self.job),
        ]);
        let store = self.lake.store();
        self.rt.block_on(store.put(&path, PutPayload::from(buf)))?;
        self.rows += n;
        self.files += 1;
        Ok(())
    }

    /// Writes every partition still in memory; returns (rows, files) written in all.
    pub fn finish(&mut self) -> Result<(u64, u64)> {
        let mut keys: Vec<Key> = self.parts.keys().cloned().collect();
        keys.sort();
        for k in &keys {
            self.cut(k)?;
        }
        self.parts.clear();
        Ok((self.rows, self.files))
    }
}
