//! A trading run's results in the lake: its records into the `orders`, `fills`,
//! `equity`, `risk_events` and `positions` tables, and one row per run into `runs` and its
//! metrics into `metrics`.
//!
//! Files are `<table>/<run_id>[-f<fold>]-w<worker>-<chunk>.parquet` (a run's records are few
//! beside market data: one file per table and worker, cut every 256 Ki rows, not one per day and
//! symbol) and `runs/<run_id>.parquet`, `metrics/<run_id>.parquet`. Every row carries its
//! `run_id` and `symbol`, so runs sit side by side and `WHERE run_id = '...'` picks one; writing a
//! run again under the same id replaces its files.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{
    ArrayRef, Float64Array, Int8Array, Int64Array, StringArray, UInt32Array, UInt64Array,
};
use arrow::record_batch::RecordBatch;
use flowsense_core::order::OrderStatus;
use flowsense_core::results::{Metrics, TradeRecord};
use flowsense_core::{Lake, Side, Table, UnixNanos};
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
    rt: tokio::runtime::Runtime,
    parts: HashMap<Key, (Vec<TradeRecord>, u32)>,
    max_rows: usize,
    props: WriterProperties,
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

fn side(s: Side) -> String {
    match s {
        Side::Buy => "buy".into(),
        Side::Sell => "sell".into(),
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

impl RunWriter {
    /// A writer for run `run_id` on worker `worker`.
    pub fn new(lake: Lake, run_id: &str, worker: usize) -> Result<Self> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        Ok(RunWriter {
            lake,
            run_id: run_id.to_string(),
            worker,
            prefix: run_id.to_string(),
            rt,
            parts: HashMap::new(),
            max_rows: 256 * 1024,
            props: props(),
            rows: 0,
        })
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
        let part = self.parts.entry(key).or_default();
        part.0.push(r);
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
        let batch = batch(*key, &self.run_id, rows)?;
        self.rows += rows.len() as u64;
        rows.clear();
        let c = *chunk;
        *chunk += 1;
        let buf = crate::writer::encode_parquet(&batch, &self.props)?;
        let path = self.lake.path(&[
            key.name(),
            &format!("{}-w{:03}-{c:05}.parquet", self.prefix, self.worker),
        ]);
        self.rt
            .block_on(self.lake.store().put(&path, PutPayload::from(buf)))?;
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
        Ok(self.rows)
    }
}

/// The rows of one table, all of `table`'s kind.
fn batch(table: Table, run_id: &str, rows: &[TradeRecord]) -> Result<RecordBatch> {
    let n = rows.len();
    let s = |v: Vec<String>| Arc::new(StringArray::from(v)) as ArrayRef;
    let so = |v: Vec<Option<String>>| Arc::new(StringArray::from(v)) as ArrayRef;
    let f = |v: Vec<f64>| Arc::new(Float64Array::from(v)) as ArrayRef;
    let fo = |v: Vec<Option<f64>>| Arc::new(Float64Array::from(v)) as ArrayRef;
    let i = |v: Vec<i64>| Arc::new(Int64Array::from(v)) as ArrayRef;
    let run = s(vec![run_id.to_string(); n]);
    let symbol = s(rows.iter().map(|r| r.symbol().to_string()).collect());
    macro_rules! each {
        ($variant:ident, $x:ident => $e:expr) => {
            rows.iter()
                .filter_map(|r| match r {
                    TradeRecord::$variant($x) => Some($e),
                    _ => None,
                })
                .collect::<Vec<_>>()
        };
    }
    let cols: Vec<ArrayRef> = match table {
        Table::Orders => vec![
            run,
            symbol,
            i(each!(Order, o => o.order.sent.0)),
            s(each!(Order, o => o.order.id.to_string())),
            s(each!(Order, o => side(o.order.side))),
            s(each!(Order, o => o.order.kind.as_str().to_string())),
            fo(each!(Order, o => o.order.price.map(|p| p.as_f64()))),
            f(each!(Order, o => o.order.size.as_f64())),
            f(each!(Order, o => o.filled.as_f64())),
            s(each!(Order, o => o.status.as_str().to_string())),
            so(each!(Order, o => match &o.status {
                OrderStatus::Rejected(why) => Some(why.clone()),
                _ => None,
            })),
            s(each!(Order, o => o.reason.clone())),
            fo(each!(Order, o => o.signal.is_finite().then_some(o.signal))),
            f(each!(Order, o => o.target)),
        ],
        Table::Fills => vec![
            run,
            symbol,
            i(each!(Fill, x => x.ts.0)),
            s(each!(Fill, x => x.order.to_string())),
            s(each!(Fill, x => side(x.side))),
            f(each!(Fill, x => x.price.as_f64())),
            f(each!(Fill, x => x.size.as_f64())),
            f(each!(Fill, x => x.fee)),
            s(each!(Fill, x => format!("{:?}", x.liquidity).to_lowercase())),
            Arc::new(Int64Array::from(each!(Fill, x => x.queue_wait))),
        ],
        Table::Equity => vec![
            run,
            symbol,
            i(each!(Equity, e => e.ts.0)),
            f(each!(Equity, e => e.equity)),
            f(each!(Equity, e => e.position)),
            f(each!(Equity, e => e.mid)),
            f(each!(Equity, e => e.fees)),
            f(each!(Equity, e => e.drawdown)),
            fo(each!(Equity, e => e.signal.is_finite().then_some(e.signal))),
            so(each!(Equity, e => e.regime.clone())),
        ],
        Table::RiskEvents => vec![
            run,
            symbol,
            i(each!(Risk, e => e.ts.0)),
            s(each!(Risk, e => e.kind.clone())),
            s(each!(Risk, e => e.detail.clone())),
        ],
        Table::Positions => vec![
            run,
            symbol,
            i(each!(Position, p => p.ts.0)),
            i(each!(Position, p => p.opened.0)),
            Arc::new(Int64Array::from(
                each!(Position, p => p.closed.map(|t| t.0)),
            )),
            s(each!(Position, p => if p.closed.is_some() { "closed" } else { "open" }.to_string())),
            Arc::new(Int8Array::from(each!(Position, p => p.direction))),
            f(each!(Position, p => p.peak)),
            f(each!(Position, p => p.avg_open)),
            fo(each!(Position, p => p.avg_close)),
            f(each!(Position, p => p.pnl)),
        ],
        other => unreachable!("{} does not hold trade records", other.name()),
    };
    Ok(RecordBatch::try_new(table.file_schema(), cols)?)
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
