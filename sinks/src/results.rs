//! A trading run's results in the lake: its records into the `orders`, `fills`,
//! `equity`, `risk_events` and `positions` tables, and one row per run into `runs` and its
//! metrics into `metrics`.
//!
//! Files are `<table>/<run_id>[-f<fold>]-w<worker>-<chunk>.parquet` (a run's records are few
//! beside market data: one file per table and worker, cut every 64 Ki rows, not one per day and
//! symbol) and `runs/<run_id>.parquet`, `metrics/<run_id>.parquet`. Every row carries its
//! `run_id` and `symbol`, so runs sit side by side and `WHERE run_id = '...'` picks one; writing a
//! run again under the same id replaces its files.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{
    ArrayBuilder, ArrayRef, Float64Array, Float64Builder, Int8Builder, Int64Array, Int64Builder,
    StringArray, StringBuilder, UInt32Array, UInt64Array, make_builder,
};
use arrow::record_batch::RecordBatch;
use flowsense_core::order::OrderStatus;
use flowsense_core::results::{Metrics, TradeRecord};
use flowsense_core::{Lake, Table, UnixNanos};
use object_store::{ObjectStoreExt, PutPayload};
use parquet::file::properties::WriterProperties;

use crate::Result;

type Key = Table;

/// Writes one run's records (from one worker) into the lake.
///
/// ```
/// use flowsense_core::order::RiskEvent;
/// use flowsense_core::results::TradeRecord;
/// use flowsense_core::{Lake, Symbol, UnixNanos};
/// use flowsense_sinks::results::RunWriter;
/// let dir = tempfile::tempdir().unwrap();
/// let lake = Lake::open(dir.path().to_str().unwrap(), &Default::default()).unwrap();
/// let mut w = RunWriter::new(lake, "r1", 0).unwrap();
/// w.push(TradeRecord::Risk(RiskEvent { ts: UnixNanos(1_723_161_256_000_000_000),
///     symbol: Symbol::new("ABC").unwrap(), kind: "halt".into(), detail: "down 15 %".into() })).unwrap();
/// assert_eq!(w.finish().unwrap(), 1);
/// assert!(dir.path().join("risk_events/r1-w000-00000.parquet").exists());
/// ```
pub struct RunWriter {
    lake: Lake,
    run_id: String,
    worker: usize,
    prefix: String,
    files: FileThread,
    parts: HashMap<Key, (Columns, u32)>,
    max_rows: usize,
    rows: u64,
}

fn table_of(r: &TradeRecord) -> Table {
    match r {
        TradeRecord::Order(_) => Table::Orders,
        TradeRecord::Fill(_) => Table::Fills,
        TradeRecord::Equity(_) => Table::Equity,
        TradeRecord::Risk(_) => Table::RiskEvents,
        TradeRecord::Position(_) => Table::Positions,
    }
}

/// Times in the results tables, written as deltas.
const TIME_COLUMNS: &[&str] = &["ts", "opened", "closed", "queue_wait_ns"];

/// Values in the results tables that rarely repeat (running totals, signals, ids): written
/// without a dictionary. Names, sides, statuses, prices and sizes keep theirs.
const UNIQUE_COLUMNS: &[&str] = &[
    "order_id", "equity", "fees", "drawdown", "signal", "target", "pnl", "fee",
];

fn props() -> WriterProperties {
    crate::writer::table_props(TIME_COLUMNS, UNIQUE_COLUMNS).build()
}

/// Encodes batches to Parquet and puts them into the lake on a thread of its own, so that a
/// run's trading goes on meanwhile; the first failure is kept and returned by [`finish`](Self::finish).
struct FileThread {
    tx: Option<std::sync::mpsc::SyncSender<(object_store::path::Path, RecordBatch)>>,
    thread: Option<std::thread::JoinHandle<Result<()>>>,
}

impl FileThread {
    fn start(lake: Lake, props: WriterProperties) -> Result<Self> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        // Two files may wait: past that the run waits for the disk rather than fill memory.
        let (tx, rx) = std::sync::mpsc::sync_channel::<(object_store::path::Path, RecordBatch)>(2);
        let thread = std::thread::Builder::new()
            .name("flowsense-results".into())
            .spawn(move || {
                let mut first_error = None;
                for (path, batch) in rx {
                    if first_error.is_some() {
                        continue;
                    }
                    let put = crate::writer::encode_parquet(&batch, &props).and_then(|buf| {
                        rt.block_on(lake.store().put(&path, PutPayload::from(buf)))?;
                        Ok(())
                    });
                    if let Err(e) = put {
                        first_error = Some(e);
                    }
                }
                first_error.map_or(Ok(()), Err)
            })?;
        Ok(FileThread {
            tx: Some(tx),
            thread: Some(thread),
        })
    }

    /// Queues a file. A failed encode or put does not stop the thread (it skips what follows):
    /// [`finish`](Self::finish) returns it. Sending fails only after `finish` or a panic.
    fn send(&mut self, path: object_store::path::Path, batch: RecordBatch) -> Result<()> {
        if let Some(tx) = &self.tx
            && tx.send((path, batch)).is_ok()
        {
            return Ok(());
        }
        self.finish()?;
        Err(std::io::Error::other("results written after the writer finished").into())
    }

    /// Waits for every queued file; the first failure, if any.
    fn finish(&mut self) -> Result<()> {
        self.tx = None;
        match self.thread.take() {
            Some(t) => t.join().unwrap_or_else(|p| std::panic::resume_unwind(p)),
            None => Ok(()),
        }
    }
}

impl RunWriter {
    /// A writer for run `run_id` on worker `worker`.
    pub fn new(lake: Lake, run_id: &str, worker: usize) -> Result<Self> {
        Ok(RunWriter {
            files: FileThread::start(lake.clone(), props())?,
            lake,
            run_id: run_id.to_string(),
            worker,
            prefix: run_id.to_string(),
            parts: HashMap::new(),
            max_rows: 64 * 1024,
            rows: 0,
        })
    }

    /// Names files `<prefix>-w<worker>-<chunk>.parquet` (rows still carry the run id): the
    /// service's audit rows of a running job sit beside the job's own files.
    pub fn with_prefix(mut self, prefix: &str) -> Self {
        self.prefix = prefix.to_string();
        self
    }

    /// Names files `<run_id>-f<fold>-w<worker>-<chunk>.parquet`, so the test windows of a walk-forward
    /// run, written one after another, sit side by side under one run id.
    pub fn for_fold(mut self, fold: u32) -> Self {
        self.prefix = format!("{}-f{fold}", self.run_id);
        self
    }

    /// Adds a record; a partition that reaches the file size is written out.
    pub fn push(&mut self, r: TradeRecord) -> Result<()> {
        let key = table_of(&r);
        let part = self
            .parts
            .entry(key)
            .or_insert_with(|| (Columns::new(key), 0));
        part.0.push(&self.run_id, &r);
        if part.0.len >= self.max_rows {
            self.cut(&key)?;
        }
        Ok(())
    }

    fn cut(&mut self, key: &Key) -> Result<()> {
        let Some((rows, chunk)) = self.parts.get_mut(key) else {
            return Ok(());
        };
        if rows.len == 0 {
            return Ok(());
        }
        let batch = rows.finish(*key)?;
        self.rows += batch.num_rows() as u64;
        let c = *chunk;
        *chunk += 1;
        let path = self.lake.path(&[
            key.name(),
            &format!("{}-w{:03}-{c:05}.parquet", self.prefix, self.worker),
        ]);
        self.files.send(path, batch)
    }

    /// Writes every partition's rows so far as files of their own (the run goes on; later
    /// rows go to the next chunks).
    pub fn flush(&mut self) -> Result<()> {
        let mut keys: Vec<Key> = self.parts.keys().cloned().collect();
        keys.sort();
        for k in &keys {
            self.cut(k)?;
        }
        Ok(())
    }

    /// Writes every partition still in memory; returns the rows written in all.
    pub fn finish(&mut self) -> Result<u64> {
        let mut keys: Vec<Key> = self.parts.keys().cloned().collect();
        keys.sort();
        for k in &keys {
            self.cut(k)?;
        }
        self.parts.clear();
        self.files.finish()?;
        Ok(self.rows)
    }
}

/// Records of run `run_id` as the batches the lake would hold: one per table, in the tables'
/// file schemas, in the order the tables first appear. What a run streams (the service's
/// WebSocket) is then exactly what it writes.
///
/// ```
/// use flowsense_core::order::RiskEvent;
/// use flowsense_core::results::TradeRecord;
/// use flowsense_core::{Symbol, Table, UnixNanos};
/// let r = TradeRecord::Risk(RiskEvent { ts: UnixNanos(1), symbol: Symbol::new("ABC").unwrap(),
///     kind: "halt".into(), detail: "down 15 %".into() });
/// let batches = flowsense_sinks::results::record_batches("r1", &[r]).unwrap();
/// assert_eq!(batches[0].0, Table::RiskEvents);
/// assert_eq!(batches[0].1.num_rows(), 1);
/// ```
pub fn record_batches(run_id: &str, records: &[TradeRecord]) -> Result<Vec<(Table, RecordBatch)>> {
    let mut parts: Vec<(Table, Columns)> = Vec::new();
    for r in records {
        let t = table_of(r);
        let i = match parts.iter().position(|(k, _)| *k == t) {
            Some(i) => i,
            None => {
                parts.push((t, Columns::new(t)));
                parts.len() - 1
            }
        };
        parts[i].1.push(run_id, r);
    }
    parts
        .into_iter()
        .map(|(t, mut c)| Ok((t, c.finish(t)?)))
        .collect()
}

/// One table's rows as Arrow column builders (in the table's schema order), appended to as the
/// records arrive: a run's records are never held as a list of records, and no value but the
/// record's own strings is allocated per row.
struct Columns {
    cols: Vec<Box<dyn ArrayBuilder>>,
    len: usize,
}

impl Columns {
    fn new(table: Table) -> Self {
        let cols = table
            .file_schema()
            .fields()
            .iter()
            .map(|f| make_builder(f.data_type(), 1024))
            .collect();
        Columns { cols, len: 0 }
    }

    /// Column `i`'s builder as the type the schema gives it.
    fn col<T: ArrayBuilder>(&mut self, i: usize) -> &mut T {
        self.cols[i]
            .as_any_mut()
            .downcast_mut::<T>()
            .expect("builder type follows the schema")
    }

    fn str(&mut self, i: usize, v: &str) {
        self.col::<StringBuilder>(i).append_value(v);
    }
    fn opt_str(&mut self, i: usize, v: Option<&str>) {
        self.col::<StringBuilder>(i).append_option(v);
    }
    fn i64(&mut self, i: usize, v: i64) {
        self.col::<Int64Builder>(i).append_value(v);
    }
    fn opt_i64(&mut self, i: usize, v: Option<i64>) {
        self.col::<Int64Builder>(i).append_option(v);
    }
    fn f64(&mut self, i: usize, v: f64) {
        self.col::<Float64Builder>(i).append_value(v);
    }
    fn opt_f64(&mut self, i: usize, v: Option<f64>) {
        self.col::<Float64Builder>(i).append_option(v);
    }
    /// A signal: NaN (none yet) is written as NULL.
    fn signal(&mut self, i: usize, v: f64) {
        self.opt_f64(i, v.is_finite().then_some(v));
    }

    /// Appends one record's row; every record of a table is of that table's kind.
    fn push(&mut self, run_id: &str, r: &TradeRecord) {
        self.str(0, run_id);
        self.str(1, r.symbol().as_str());
        match r {
            TradeRecord::Order(o) => {
                self.i64(2, o.order.sent.0);
                self.str(3, &o.order.id.to_string());
                self.str(4, o.order.side.as_str());
                self.str(5, o.order.kind.as_str());
                self.opt_f64(6, o.order.price.map(|p| p.as_f64()));
                self.f64(7, o.order.size.as_f64());
                self.f64(8, o.filled.as_f64());
                self.str(9, o.status.as_str());
                self.opt_str(
                    10,
                    match &o.status {
                        OrderStatus::Rejected(why) => Some(why.as_str()),
                        _ => None,
                    },
                );
                self.str(11, &o.reason);
                self.signal(12, o.signal);
                self.f64(13, o.target);
            }
            TradeRecord::Fill(x) => {
                self.i64(2, x.ts.0);
                self.str(3, &x.order.to_string());
                self.str(4, x.side.as_str());
                self.f64(5, x.price.as_f64());
                self.f64(6, x.size.as_f64());
                self.f64(7, x.fee);
                self.str(8, x.liquidity.as_str());
                self.opt_i64(9, x.queue_wait);
            }
            TradeRecord::Equity(e) => {
                self.i64(2, e.ts.0);
                self.f64(3, e.equity);
                self.f64(4, e.position);
                self.f64(5, e.mid);
                self.f64(6, e.fees);
                self.f64(7, e.drawdown);
                self.signal(8, e.signal);
                self.opt_str(9, e.regime.as_deref());
            }
            TradeRecord::Risk(e) => {
                self.i64(2, e.ts.0);
                self.str(3, &e.kind);
                self.str(4, &e.detail);
            }
            TradeRecord::Position(p) => {
                self.i64(2, p.ts.0);
                self.i64(3, p.opened.0);
                self.opt_i64(4, p.closed.map(|t| t.0));
                self.str(5, if p.closed.is_some() { "closed" } else { "open" });
                self.col::<Int8Builder>(6).append_value(p.direction);
                self.f64(7, p.peak);
                self.f64(8, p.avg_open);
                self.opt_f64(9, p.avg_close);
                self.f64(10, p.pnl);
            }
        }
        self.len += 1;
    }

    /// The rows so far as a batch; the builders start again empty.
    fn finish(&mut self, table: Table) -> Result<RecordBatch> {
        let cols: Vec<ArrayRef> = self.cols.iter_mut().map(|c| c.finish()).collect();
        self.len = 0;
        Ok(RecordBatch::try_new(table.file_schema(), cols)?)
    }
}

/// One row of the `runs` table.
#[derive(Clone, Debug, PartialEq)]
pub struct RunRow {
    /// The run's id.
    pub run_id: String,
    /// The job's name.
    pub job: String,
    /// `backtest` or `replay`.
    pub mode: String,
    /// When the run started (UTC, RFC 3339), for people.
    pub started: String,
    /// First event time of the data range asked for.
    pub data_from: Option<UnixNanos>,
    /// End of the data range asked for.
    pub data_to: Option<UnixNanos>,
    /// The symbols traded, comma-separated.
    pub symbols: String,
    /// Market events read.
    pub events: u64,
    /// Wall seconds the run took.
    pub seconds: f64,
    /// The job spec, as TOML.
    pub spec: String,
    /// How the run ended: `finished`, `failed` or `stopped` (NULL in runs written before the
    /// service recorded it; they all finished).
    pub state: Option<String>,
    /// Why it failed, when it did.
    pub error: Option<String>,
}

/// Writes the run's row into `runs` and its metrics into `metrics`.
pub fn write_run(lake: &Lake, run: &RunRow, metrics: &[Metrics]) -> Result<()> {
    let s = |v: Vec<String>| Arc::new(StringArray::from(v)) as ArrayRef;
    let runs = RecordBatch::try_new(
        Table::Runs.file_schema(),
        vec![
            s(vec![run.run_id.clone()]),
            s(vec![run.job.clone()]),
            s(vec![run.mode.clone()]),
            s(vec![run.started.clone()]),
            Arc::new(Int64Array::from(vec![run.data_from.map(|t| t.0)])),
            Arc::new(Int64Array::from(vec![run.data_to.map(|t| t.0)])),
            s(vec![run.symbols.clone()]),
            Arc::new(UInt64Array::from(vec![run.events])),
            Arc::new(Float64Array::from(vec![run.seconds])),
            s(vec![run.spec.clone()]),
            Arc::new(StringArray::from(vec![run.state.clone()])),
            Arc::new(StringArray::from(vec![run.error.clone()])),
        ],
    )?;
    let m = metrics;
    let fo = |f: &dyn Fn(&Metrics) -> Option<f64>| {
        Arc::new(Float64Array::from(m.iter().map(f).collect::<Vec<_>>())) as ArrayRef
    };
    let fv = |f: &dyn Fn(&Metrics) -> f64| {
        Arc::new(Float64Array::from(m.iter().map(f).collect::<Vec<_>>())) as ArrayRef
    };
    let u = |f: &dyn Fn(&Metrics) -> u64| {
        Arc::new(UInt64Array::from(m.iter().map(f).collect::<Vec<_>>())) as ArrayRef
    };
    // Regime rows carry return figures only: the rest is NULL there.
    let whole = |f: &dyn Fn(&Metrics) -> f64| {
        Arc::new(Float64Array::from(
            m.iter()
                .map(|x| x.regime.is_none().then(|| f(x)))
                .collect::<Vec<_>>(),
        )) as ArrayRef
    };
    let whole_u = |f: &dyn Fn(&Metrics) -> u64| {
        Arc::new(UInt64Array::from(
            m.iter()
                .map(|x| x.regime.is_none().then(|| f(x)))
                .collect::<Vec<_>>(),
        )) as ArrayRef
    };
    let metrics_batch = RecordBatch::try_new(
        Table::Metrics.file_schema(),
        vec![
            s(vec![run.run_id.clone(); m.len()]),
            s(m.iter().map(|x| x.scope.clone()).collect()),
            Arc::new(StringArray::from(
                m.iter().map(|x| x.regime.clone()).collect::<Vec<_>>(),
            )),
            Arc::new(UInt32Array::from(
                m.iter().map(|x| x.fold).collect::<Vec<_>>(),
            )),
            Arc::new(StringArray::from(
                m.iter().map(|x| x.params.clone()).collect::<Vec<_>>(),
            )),
            Arc::new(Int64Array::from(
                m.iter().map(|x| x.ts_from.map(|t| t.0)).collect::<Vec<_>>(),
            )),
            Arc::new(Int64Array::from(
                m.iter().map(|x| x.ts_to.map(|t| t.0)).collect::<Vec<_>>(),
            )),
            u(&|x| x.periods),
            fv(&|x| x.capital),
            whole(&|x| x.end_equity),
            whole(&|x| x.gross_pnl),
            whole(&|x| x.fees),
            fv(&|x| x.net_pnl),
            fv(&|x| x.total_return),
            fo(&|x| x.sharpe),
            fo(&|x| x.sortino),
            fo(&|x| x.return_mean),
            fo(&|x| x.return_sd),
            Arc::new(StringArray::from(
                m.iter().map(|x| x.ratio_note.clone()).collect::<Vec<_>>(),
            )),
            whole(&|x| x.max_drawdown),
            whole(&|x| x.max_drawdown_duration_s),
            whole_u(&|x| x.round_trips),
            fo(&|x| x.hit_rate),
            whole(&|x| x.turnover),
            whole_u(&|x| x.orders),
            fo(&|x| x.fill_ratio),
            fo(&|x| x.mean_queue_wait_ms),
        ],
    )?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    for (table, batch) in [(Table::Runs, runs), (Table::Metrics, metrics_batch)] {
        let buf = crate::writer::encode_parquet(&batch, &props())?;
        let path = lake.path(&[table.name(), &format!("{}.parquet", run.run_id)]);
        rt.block_on(lake.store().put(&path, PutPayload::from(buf)))?;
    }
    Ok(())
}

/// Removes every file of run `run_id` from the run's tables (before writing it again).
pub fn clear_run(lake: &Lake, run_id: &str) -> Result<u64> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut removed = 0;
    let prefix = format!("{run_id}-");
    let whole = format!("{run_id}.parquet");
    for table in Table::RUN_TABLES {
        for meta in rt.block_on(lake.list_table(table))? {
            let name = meta.location.filename().unwrap_or_default();
            let digits = |c: &str| !c.is_empty() && c.bytes().all(|b| b.is_ascii_digit());
            // `[f<fold>-]w<worker>-<chunk>`
            let chunk = name
                .strip_prefix(&prefix)
                .and_then(|r| r.strip_suffix(".parquet"))
                .map(|r| {
                    r.strip_prefix('f')
                        .and_then(|r| r.split_once('-'))
                        .filter(|(f, _)| digits(f))
                        .map_or(r, |(_, rest)| rest)
                })
                .and_then(|r| r.strip_prefix('w'))
                .and_then(|r| r.split_once('-'))
                .is_some_and(|(w, c)| digits(w) && c.len() == 5 && digits(c));
            if name == whole || chunk {
                rt.block_on(lake.store().delete(&meta.location))?;
                removed += 1;
            }
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use flowsense_core::Symbol;
    use flowsense_core::order::EquityPoint;

    fn mark(i: i64) -> TradeRecord {
        TradeRecord::Equity(EquityPoint {
            ts: UnixNanos(1_723_161_600_000_000_000 + i * 60_000_000_000),
            symbol: Symbol::new("ABC").unwrap(),
            equity: 1e6 + i as f64,
            position: 1.0,
            mid: 100.0,
            fees: 0.0,
            drawdown: 0.0,
            signal: f64::NAN,
            regime: None,
        })
    }

    #[test]
    fn files_are_cut_and_written_behind_the_run() {
        let dir = tempfile::tempdir().unwrap();
        let lake = Lake::open(dir.path().to_str().unwrap(), &Default::default()).unwrap();
        let mut w = RunWriter::new(lake, "r1", 0).unwrap();
        let n = 3 * 64 * 1024 + 100;
        for i in 0..n {
            w.push(mark(i)).unwrap();
        }
        assert_eq!(w.finish().unwrap(), n as u64);
        let mut files: Vec<_> = std::fs::read_dir(dir.path().join("equity"))
            .unwrap()
            .map(|f| f.unwrap().file_name().into_string().unwrap())
            .collect();
        files.sort();
        assert_eq!(
            files,
            (0..4)
                .map(|c| format!("r1-w000-{c:05}.parquet"))
                .collect::<Vec<_>>()
        );
    }

    #[test]
    fn a_failed_write_is_reported_by_finish() {
        let dir = tempfile::tempdir().unwrap();
        // A file where the table's folder should be: every put into it fails.
        std::fs::write(dir.path().join("equity"), b"not a folder").unwrap();
        let lake = Lake::open(dir.path().to_str().unwrap(), &Default::default()).unwrap();
        let mut w = RunWriter::new(lake, "r1", 0).unwrap();
        w.push(mark(0)).unwrap();
        assert!(w.finish().is_err());
    }
}
