//! Trading runs: the job's strategy over its source, through the simulated exchange, as a batch
//! backtest (`flowsense backtest`) or a paced replay (`flowsense run` on a job with `[replay]`).
//!
//! ```text
//!  worker source (its own symbols, merged by time)
//!        | InputHandle<u64, MarketEvent>
//!        v
//!  Trade (exchange by symbol; per symbol: FeatureEngine -> strategy -> risk -> SimExchange)
//!        | TradeRecord
//!        v
//!  TradeSink (lake tables orders/fills/equity/risk_events/positions, metrics) --> probe
//! ```
//!
//! Both modes build this same graph and feed it the same events; they differ only in how fast
//! the events go in and how often the input advances, which the trader never reads. The run's
//! metrics are computed in the sinks as records pass (per symbol) and, for the portfolio, by the
//! driver from the symbols' equity marks once every worker is done.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::Context;
use flowsense_core::job::{JobSpec, Source};
use flowsense_core::results::{Metrics, TradeRecord};
use flowsense_core::{Lake, Symbol, UnixNanos};
use flowsense_operators::metrics::MetricsBuilder;
use flowsense_operators::trade_strategy::KillSwitch;
use flowsense_operators::{FeatureCounters, TradeStrategy};
use flowsense_sinks::results::{RunRow, RunWriter, clear_run, write_run};
use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::{Input, Probe};
use timely::dataflow::{InputHandleVec, ProbeHandle, Scope};

use crate::broker::BrokerFactory;
use crate::feed::{Pace, worker_feeder};
use crate::job::{JobHandles, SourceCounts};
use crate::run::{RunOptions, drive};

/// How a trading run goes.
#[derive(Clone, Debug)]
pub struct TradingOptions {
    /// Workers and processes.
    pub run: RunOptions,
    /// The run's id in the lake's tables.
    pub run_id: String,
    /// Write the results into the lake.
    pub write: bool,
    /// Keep every record in memory and return it (tests, small runs).
    pub collect: bool,
    /// Pace the events as the job's `[replay]` says (`flowsense run`) instead of as fast as
    /// possible (`flowsense backtest`).
    pub paced: bool,
    /// The walk-forward fold this run is the test window of (its files are named for it, and
    /// the walk-forward driver writes the run's row and metrics once every fold is done).
    pub fold: Option<u32>,
    /// Show a spinner with the events read so far on stderr (when it is a terminal).
    pub progress: bool,
}

impl TradingOptions {
    /// A batch backtest under `run_id` on one worker, written to the lake.
    pub fn backtest(run_id: &str) -> Self {
        TradingOptions {
            run: RunOptions::default(),
            run_id: run_id.to_string(),
            write: true,
            collect: false,
            paced: false,
            fold: None,
            progress: false,
        }
    }
}

/// What a trading run did.
#[derive(Clone, Debug, Default)]
pub struct TradingReport {
    /// The run's id.
    pub run_id: String,
    /// Market events read.
    pub events: u64,
    /// Wall seconds.
    pub seconds: f64,
    /// Records by table name.
    pub counts: BTreeMap<&'static str, u64>,
    /// The portfolio's metrics, then each symbol's (and each regime's).
    pub metrics: Vec<Metrics>,
    /// Every record, when collected, ordered by symbol then time.
    pub records: Vec<TradeRecord>,
    /// The portfolio's equity at every mark: (time, equity).
    pub portfolio: Vec<(i64, f64)>,
    /// The portfolio's order, fill and trip counts (to combine runs).
    pub totals: Option<MetricsBuilder>,
    /// The portfolio's starting capital (one sleeve per symbol traded).
    pub capital: f64,
    /// The symbols traded.
    pub symbols: Vec<String>,
    /// A live source's figures (a paper run on a live feed).
    pub live: Option<crate::job::LiveReport>,
}

impl TradingReport {
    /// A few lines for people.
    pub fn summary(&self) -> String {
        let mut out = format!(
            "run {}: {} events in {:.3} s ({:.0} events/s)\n",
            self.run_id,
            self.events,
            self.seconds,
            self.events as f64 / self.seconds.max(1e-9)
        );
        if self.events == 0 {
            out.push_str(
                "no events matched: ingest market data first (flowsense ingest data/binance, \
                 flowsense synth), or check the job's symbols and from/to\n",
            );
        }
        let c = |k: &str| self.counts.get(k).copied().unwrap_or(0);
        out.push_str(&format!(
            "{} orders, {} fills, {} positions, {} risk events\n",
            c("orders"),
            c("fills"),
            c("positions"),
            c("risk_events")
        ));
        if let Some(l) = &self.live {
            out.push_str(&crate::run::live_summary(l));
        }
        out.push_str(&metrics_table(&self.metrics));
        out
    }
}

/// Metrics as a table for people (fold and params columns when any row has them).
pub fn metrics_table(metrics: &[Metrics]) -> String {
    let folds = metrics.iter().any(|m| m.fold.is_some());
    let mut table = comfy_table::Table::new();
    table.load_preset(comfy_table::presets::UTF8_FULL_CONDENSED);
    let mut header = vec!["scope", "regime"];
    if folds {
        header.push("fold");
    }
    header.extend([
        "net PnL",
        "fees",
        "return",
        "Sharpe",
        "Sortino",
        "max DD",
        "DD (s)",
        "trips",
        "hit",
        "turnover",
        "fill",
        "queue (ms)",
    ]);
    if folds {
        header.push("params");
    }
    table.set_header(header);
    let o = |v: Option<f64>, p: usize| v.map_or("-".to_string(), |v| format!("{v:.p$}"));
    // A ratio from too short a sample says so instead of printing a number that means nothing.
    let ratio = |m: &Metrics, v: Option<f64>| {
        if m.ratio_note.is_some() {
            "n/a".to_string()
        } else {
            o(v, 2)
        }
    };
    for m in metrics {
        let mut row = vec![m.scope.clone(), m.regime.clone().unwrap_or_default()];
        if folds {
            row.push(m.fold.map_or(String::new(), |f| f.to_string()));
        }
        // Regime rows carry return figures only.
        let whole = |v: String| {
            if m.regime.is_some() {
                "-".to_string()
            } else {
                v
            }
        };
        row.extend([
            format!("{:.2}", m.net_pnl),
            whole(format!("{:.2}", m.fees)),
            format!("{:.3} %", m.total_return * 100.0),
            ratio(m, m.sharpe),
            ratio(m, m.sortino),
            whole(format!("{:.3} %", m.max_drawdown * 100.0)),
            whole(format!("{:.0}", m.max_drawdown_duration_s)),
            whole(m.round_trips.to_string()),
            o(m.hit_rate, 2),
            whole(format!("{:.2}", m.turnover)),
            o(m.fill_ratio, 2),
            o(m.mean_queue_wait_ms, 1),
        ]);
        if folds {
            row.push(m.params.clone().unwrap_or_default());
        }
        table.add_row(row);
    }
    let mut text = format!("{table}\n");
    // One note for the rows whose ratios are n/a, with their raw per-period figures.
    if let Some(note) = metrics.iter().find_map(|m| m.ratio_note.as_deref()) {
        text.push_str(&format!(
            "Sharpe, Sortino: {note}. Per-period returns, not annualised:\n"
        ));
        for m in metrics.iter().filter(|m| m.ratio_note.is_some()) {
            text.push_str(&format!(
                "  {}{}: mean {}, sd {} over {} returns\n",
                m.scope,
                m.regime
                    .as_ref()
                    .map_or(String::new(), |r| format!(" ({r})")),
                m.return_mean.map_or("-".into(), |v| format!("{v:.3e}")),
                m.return_sd.map_or("-".into(), |v| format!("{v:.3e}")),
                m.periods
            ));
        }
    }
    text
}

/// A worker's end of the trading graph: writes records and accumulates metrics.
pub struct TradeSink {
    writer: Option<RunWriter>,
    capital: f64,
    bucket_seconds: f64,
    symbols: BTreeMap<Symbol, MetricsBuilder>,
    /// Orders, fills and trips of every symbol, for the portfolio's counts.
    totals: MetricsBuilder,
    /// Every equity mark: (time, symbol, equity).
    marks: Vec<(i64, Symbol, f64)>,
    counts: BTreeMap<&'static str, u64>,
    collected: Option<Vec<TradeRecord>>,
    /// Print every record as a JSON line (`[sinks] stdout = true`), for piping.
    json: Option<String>,
    error: Option<anyhow::Error>,
    /// Set by [`TradeSink::discard`]: records are dropped unseen.
    discarding: bool,
    /// A copy of every record written while tapped (the service streams them).
    tapped: crate::tapped::Tapped<TradeRecord>,
    /// Write what is buffered at least this often (wall time; `[sinks] flush`), and when
    /// it was last written.
    flush: Option<(std::time::Duration, Instant)>,
}

impl TradeSink {
    fn new(spec: &JobSpec, writer: Option<RunWriter>, collect: bool) -> Self {
        let bucket_seconds = spec.strategy.as_ref().map_or(1.0, |s| s.bucket.seconds());
        TradeSink {
            writer,
            capital: spec.risk.capital,
            bucket_seconds,
            symbols: BTreeMap::new(),
            totals: MetricsBuilder::portfolio(spec.risk.capital, bucket_seconds),
            marks: Vec::new(),
            counts: BTreeMap::new(),
            collected: collect.then(Vec::new),
            json: spec.sinks.stdout.then(|| spec.name.clone()),
            error: None,
            discarding: false,
            tapped: Default::default(),
            flush: spec
                .sinks
                .flush
                .map(|s| s.nanos())
                .or_else(|| {
                    matches!(spec.source, flowsense_core::job::Source::Live(_))
                        .then_some(60_000_000_000)
                })
                .map(|ns| (std::time::Duration::from_nanos(ns), Instant::now())),
        }
    }

    /// One record as a JSON line: `{"job": .., "record": "fill", ..the record's fields}`.
    fn json_line(job: &str, r: &TradeRecord, buf: &mut Vec<u8>) -> anyhow::Result<()> {
        let (kind, mut v) = match r {
            TradeRecord::Order(o) => ("order", serde_json::to_value(o)?),
            TradeRecord::Fill(f) => ("fill", serde_json::to_value(f)?),
            TradeRecord::Equity(e) => ("equity", serde_json::to_value(e)?),
            TradeRecord::Risk(e) => ("risk_event", serde_json::to_value(e)?),
            TradeRecord::Position(p) => ("position", serde_json::to_value(p)?),
        };
        // Prices and sizes are fixed point in memory: print them as numbers people read.
        fn decimals(v: &mut serde_json::Value) {
            if let Some(o) = v.as_object_mut() {
                for (k, x) in o.iter_mut() {
                    match (k.as_str(), x.as_i64()) {
                        ("price" | "size" | "filled", Some(raw)) => {
                            *x = serde_json::json!(flowsense_core::Price::from_raw(raw).as_f64());
                        }
                        _ => decimals(x),
                    }
                }
            }
        }
        decimals(&mut v);
        if let Some(o) = v.as_object_mut() {
            o.insert("job".into(), job.into());
            o.insert("record".into(), kind.into());
        }
        serde_json::to_writer(&mut *buf, &v)?;
        buf.push(b'\n');
        Ok(())
    }

    fn write(&mut self, records: &mut Vec<TradeRecord>) {
        if self.discarding {
            records.clear();
            return;
        }
        if let Some(job) = &self.json {
            let mut buf = Vec::new();
            for r in records.iter() {
                if let Err(e) = Self::json_line(job, r, &mut buf) {
                    self.error.get_or_insert(e);
                }
            }
            use std::io::Write;
            // A reader that goes away (`| head`) ends the output quietly, not the run.
            if std::io::stdout().lock().write_all(&buf).is_err() {
                self.json = None;
            }
        }
        self.tapped.extend_from_slice(records);
        for r in records.drain(..) {
            let table = match &r {
                TradeRecord::Order(_) => "orders",
                TradeRecord::Fill(_) => "fills",
                TradeRecord::Equity(e) => {
                    self.marks.push((e.ts.0, e.symbol.clone(), e.equity));
                    "equity"
                }
                TradeRecord::Risk(_) => "risk_events",
                TradeRecord::Position(_) => "positions",
            };
            *self.counts.entry(table).or_default() += 1;
            let (capital, secs) = (self.capital, self.bucket_seconds);
            // The portfolio monitor's events are no symbol's: its figures come from the marks.
            if !matches!(&r, TradeRecord::Risk(e) if e.is_portfolio()) {
                self.symbols
                    .entry(r.symbol().clone())
                    .or_insert_with_key(|s| MetricsBuilder::new(s.as_str(), capital, secs))
                    .record(&r);
            }
            self.totals.record(&r);
            if let Some(c) = &mut self.collected {
                c.push(r.clone());
            }
            if self.error.is_none()
                && let Some(w) = &mut self.writer
                && let Err(e) = w.push(r)
            {
                self.error = Some(e.into());
            }
        }
        if let Some((every, last)) = &mut self.flush
            && last.elapsed() >= *every
        {
            *last = Instant::now();
            if self.error.is_none()
                && let Some(w) = &mut self.writer
                && let Err(e) = w.flush()
            {
                self.error = Some(e.into());
            }
        }
    }
}

/// What one worker's trading graph did: its events, records by table and the pieces of the
/// run's metrics. The driver combines every worker's ([`combine`]); the service ships them
/// from every process to its controller, so they are serde.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct WorkerTrades {
    /// Market events the worker fed in.
    pub events: u64,
    /// Each symbol's metrics (and each regime's).
    pub symbols: Vec<Metrics>,
    /// Orders, fills and trips of every symbol, for the portfolio's counts.
    pub totals: Option<MetricsBuilder>,
    /// Every equity mark: (time, symbol, equity).
    pub marks: Vec<(i64, Symbol, f64)>,
    /// Records by table name.
    pub counts: BTreeMap<String, u64>,
    /// Every record, when collected (never shipped).
    #[serde(skip)]
    pub collected: Vec<TradeRecord>,
}

impl TradeSink {
    /// Worker `index`'s sink for run `run_id`: into the lake's run tables when `write` (its
    /// files named for walk-forward `fold` when given), every record kept when `collect`.
    pub fn for_worker(
        spec: &JobSpec,
        lake: &Lake,
        run_id: &str,
        index: usize,
        write: bool,
        fold: Option<u32>,
        collect: bool,
    ) -> anyhow::Result<Rc<RefCell<TradeSink>>> {
        let writer = if write {
            let w = RunWriter::new(lake.clone(), run_id, index)?;
            Some(match fold {
                Some(k) => w.for_fold(k),
                None => w,
            })
        } else {
            None
        };
        Ok(Rc::new(RefCell::new(TradeSink::new(spec, writer, collect))))
    }

    /// The first error writing records, if any (later records were dropped).
    pub fn take_error(&mut self) -> Option<anyhow::Error> {
        self.error.take()
    }

    /// Starts (or stops) keeping a copy of the records written from now on, for
    /// [`TradeSink::take_tapped`]; a stop drops what was kept.
    pub fn tap(&mut self, on: bool) {
        self.tapped.set(on);
    }

    /// The records written since the last call while tapped.
    pub fn take_tapped(&mut self) -> Vec<TradeRecord> {
        self.tapped.take()
    }

    /// Records written so far, over all tables.
    pub fn records(&self) -> u64 {
        self.counts.values().sum()
    }

    /// Drops what is buffered and every later record: the run is being thrown away (its files
    /// already written are removed by [`clear_run`]).
    pub fn discard(&mut self) {
        self.writer = None;
        self.json = None;
        self.discarding = true;
    }

    /// Writes what is buffered and hands back the worker's part of the run.
    pub fn finish(&mut self, events: u64) -> anyhow::Result<WorkerTrades> {
        if let Some(e) = self.error.take() {
            return Err(e.context("writing the run's records"));
        }
        if let Some(w) = &mut self.writer {
            w.finish().context("writing the run's records")?;
        }
        Ok(WorkerTrades {
            events,
            symbols: self.symbols.values().flat_map(|m| m.finish()).collect(),
            totals: Some(self.totals.clone()),
            marks: std::mem::take(&mut self.marks),
            counts: std::mem::take(&mut self.counts)
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect(),
            collected: self.collected.take().unwrap_or_default(),
        })
    }
}

/// Builds the trading graph in `scope`: the input, the `Trade` operator, the sink and a probe.
pub fn build_trading<'scope>(
    scope: Scope<'scope, u64>,
    spec: &JobSpec,
    sink: Rc<RefCell<TradeSink>>,
) -> anyhow::Result<JobHandles> {
    let strategy = spec
        .strategy
        .as_ref()
        .context("the job has no [strategy] to trade")?;
    let mut input = InputHandleVec::new();
    let probe = ProbeHandle::new();
    let trade_probe = ProbeHandle::new();
    let brokers = BrokerFactory::open(spec, scope.index())?;
    let dataflow = scope.addr()[0];
    let kill = KillSwitch::default();
    scope
        .input_from(&mut input)
        .trade_with_kill(
            &spec.name,
            &spec.features,
            strategy,
            &spec.risk,
            move |s: &Symbol| brokers.make(s),
            kill.clone(),
        )
        .map_err(|e| anyhow::anyhow!("job {}: {e}", spec.name))?
        .probe_with(&trade_probe)
        .unary::<CapacityContainerBuilder<Vec<()>>, _, _, _>(Pipeline, "TradeSink", move |_, _| {
            move |data, _output| {
                data.for_each(|_time, batch| sink.borrow_mut().write(batch));
            }
        })
        .probe_with(&probe);
    Ok(JobHandles {
        dataflow,
        input,
        stages: vec![("Trade", trade_probe), ("TradeSink", probe.clone())],
        probe,
        counters: Rc::new(RefCell::new(FeatureCounters::default())),
        kill: Some(kill),
    })
}

pub use crate::wall::{new_run_id, started_rfc3339};

/// Runs the job's strategy over its source and returns what it did; with `opts.write`, its
/// records, its row in `runs` and its metrics go into the lake under `opts.run_id`.
pub fn run_trading(
    spec: &JobSpec,
    lake: &Lake,
    opts: &TradingOptions,
) -> anyhow::Result<TradingReport> {
    spec.validate()?;
    spec.strategy
        .as_ref()
        .context("the job has no [strategy]: add one to backtest it (see examples/)")?;
    if opts.write && opts.run.process == 0 && opts.fold.is_none() {
        clear_run(lake, &opts.run_id).context("removing an earlier run with this id")?;
    }
    let config = opts.run.timely_config()?;
    let counts = Arc::new(Mutex::new(SourceCounts::default()));
    let counts_r = counts.clone();
    let (spec_c, lake_c, o) = (spec.clone(), lake.clone(), opts.clone());
    let start = Instant::now();
    // Events read so far, summed over workers a chunk at a time, for the spinner.
    let read = Arc::new(AtomicU64::new(0));
    let read_w = read.clone();
    let spinner = if opts.progress {
        indicatif::ProgressBar::new_spinner()
    } else {
        indicatif::ProgressBar::hidden()
    };
    spinner.set_style(
        indicatif::ProgressStyle::with_template("{spinner} {elapsed_precise} {msg}")
            .expect("static template"),
    );
    let ticker = opts.progress.then(|| {
        let (bar, read) = (spinner.clone(), read.clone());
        std::thread::spawn(move || {
            while !bar.is_finished() {
                let n = read.load(Ordering::Relaxed);
                let secs = start.elapsed().as_secs_f64().max(1e-9);
                bar.set_message(format!("{n} events ({:.0}/s)", n as f64 / secs));
                bar.tick();
                // Woken early when the run ends.
                std::thread::park_timeout(std::time::Duration::from_millis(200));
            }
        })
    });
    let guards = timely::execute(config, move |worker| -> anyhow::Result<WorkerTrades> {
        let (index, peers) = (worker.index(), worker.peers());
        let sink = TradeSink::for_worker(
            &spec_c, &lake_c, &o.run_id, index, o.write, o.fold, o.collect,
        )?;
        let sink_w = sink.clone();
        let spec_w = spec_c.clone();
        let mut h =
            worker.dataflow::<u64, _, _>(move |scope| build_trading(scope, &spec_w, sink_w))?;
        let pace = match (&spec_c.replay, o.paced) {
            (Some(replay), true) => Pace::Replay {
                speed: replay.speed,
            },
            _ => Pace::Batch {
                batch: o.run.batch.max(1),
            },
        };
        let read = read_w.clone();
        let mut local = 0u64;
        let feeder = worker_feeder(&spec_c, &lake_c, index, peers, counts.clone(), pace)?.observe(
            Box::new(move |_| {
                local += 1;
                if local == 1 << 12 {
                    read.fetch_add(local, Ordering::Relaxed);
                    local = 0;
                }
            }),
        );
        let events = drive(worker, &mut h, feeder, None, o.run.stop.as_deref());
        drop(h.input);
        worker.step_while(|| !h.probe.done());
        let mut s = sink.borrow_mut();
        s.finish(events).with_context(|| format!("worker {index}"))
    })
    .map_err(|e| anyhow::anyhow!("starting timely: {e}"))?;

    let joined = guards.join();
    spinner.finish_and_clear();
    if let Some(t) = ticker {
        t.thread().unpark();
        let _ = t.join();
    }
    let mut workers = Vec::new();
    for r in joined {
        workers.push(r.map_err(|e| anyhow::anyhow!("a worker failed: {e}"))??);
    }
    let mut report = combine(spec, &opts.run_id, workers)?;
    report.seconds = start.elapsed().as_secs_f64();
    report.live = counts_r.lock().ok().and_then(|c| c.live.clone());

    if opts.write && opts.run.process == 0 && opts.fold.is_none() {
        let mode = if spec.live_broker().is_some() {
            "live"
        } else if matches!(spec.source, flowsense_core::job::Source::Live(_)) {
            "paper"
        } else if opts.paced && spec.replay.is_some() {
            "replay"
        } else {
            "backtest"
        };
        let run = run_row(
            spec,
            &opts.run_id,
            mode,
            &report.symbols,
            report.events,
            report.seconds,
        )?;
        write_run(lake, &run, &report.metrics).context("writing the run's row and metrics")?;
    }
    Ok(report)
}

/// Combines every worker's part of a trading run into the run's report: counts summed, each
/// symbol's metrics, and the portfolio's from every symbol's equity marks.
pub fn combine(
    spec: &JobSpec,
    run_id: &str,
    workers: Vec<WorkerTrades>,
) -> anyhow::Result<TradingReport> {
    let strategy = spec
        .strategy
        .as_ref()
        .context("the job has no [strategy] to trade")?;
    let mut report = TradingReport {
        run_id: run_id.to_string(),
        ..Default::default()
    };
    let bucket_seconds = strategy.bucket.seconds();
    let mut totals = MetricsBuilder::portfolio(spec.risk.capital, bucket_seconds);
    let mut marks = Vec::new();
    let mut per_symbol = Vec::new();
    for r in workers {
        report.events += r.events;
        for (k, v) in r.counts {
            let k = TABLES.iter().find(|t| **t == k).copied().unwrap_or("other");
            *report.counts.entry(k).or_default() += v;
        }
        if let Some(t) = &r.totals {
            totals.absorb_counts(t);
        }
        marks.extend(r.marks);
        per_symbol.extend(r.symbols);
        report.records.extend(r.collected);
    }
    report
        .records
        .sort_by(|a, b| (a.symbol(), a.ts()).cmp(&(b.symbol(), b.ts())));
    per_symbol.sort_by(|a, b| (&a.scope, &a.regime).cmp(&(&b.scope, &b.regime)));

    // The portfolio: every symbol's sleeve of `capital`, summed at each mark.
    // Stable: a symbol's later mark at the same time (a halt's, say) stays the later one.
    marks.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
    // A set, not a sort of one name per mark: a bar run has a mark per bar.
    let names: Vec<Symbol> = marks
        .iter()
        .map(|m| &m.1)
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .cloned()
        .collect();
    let capital = spec.risk.capital * names.len().max(1) as f64;
    let mut portfolio = MetricsBuilder::portfolio(capital, bucket_seconds);
    portfolio.absorb_counts(&totals);
    let mut last: BTreeMap<&Symbol, f64> = names.iter().map(|s| (s, spec.risk.capital)).collect();
    let mut i = 0;
    while i < marks.len() {
        let ts = marks[i].0;
        while i < marks.len() && marks[i].0 == ts {
            last.insert(&marks[i].1, marks[i].2);
            i += 1;
        }
        let total = last.values().sum();
        portfolio.mark(UnixNanos(ts), total, None);
        report.portfolio.push((ts, total));
    }
    report.metrics = portfolio.finish();
    report.metrics.extend(per_symbol);
    report.totals = Some(totals);
    report.capital = capital;
    report.symbols = names.iter().map(|s| s.to_string()).collect();
    Ok(report)
}

/// The run tables a trading sink counts records of.
const TABLES: [&str; 5] = ["orders", "fills", "equity", "risk_events", "positions"];

/// The `runs` row of a run of `spec` under `run_id` in `mode` (`backtest`, `replay`,
/// `features`) over `symbols`, finished now after `seconds`.
pub fn run_row(
    spec: &JobSpec,
    run_id: &str,
    mode: &str,
    symbols: &[String],
    events: u64,
    seconds: f64,
) -> anyhow::Result<RunRow> {
    let (data_from, data_to) = match &spec.source {
        Source::Lake(l) => l.range()?,
        _ => (None, None),
    };
    Ok(RunRow {
        run_id: run_id.to_string(),
        job: spec.name.clone(),
        mode: mode.to_string(),
        started: started_rfc3339(),
        data_from,
        data_to,
        symbols: symbols.join(","),
        events,
        seconds,
        spec: spec.to_toml(),
        state: Some("finished".into()),
        error: None,
    })
}
