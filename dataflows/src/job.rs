//! The job builder: one function makes a job's dataflow in a timely scope, whatever runs it
//! (a one-shot local run, a paced replay, a benchmark, later a long-running cluster worker that
//! installs jobs at runtime), plus the per-worker source that feeds it.
//!
//! ```text
//!  worker source (its own symbols, merged by time)
//!        | InputHandle<u64, MarketEvent>    timely time = event time batched into epochs
//!        v
//!  OrderFlowFeatures (exchange by symbol; one engine per symbol)
//!        | FeatureRow
//!        v
//!  FeatureSink (lake `features` table, JSON lines) --> probe
//! ```

use std::cell::RefCell;
use std::io::Write;
use std::rc::Rc;

use anyhow::Context;
use flowsense_core::job::{JobSpec, Source};
use flowsense_core::{FeatureRow, Lake, MarketEvent, Symbol};
use flowsense_operators::{FeatureCounters, OrderFlowFeatures};
use flowsense_sinks::FeatureWriter;
use flowsense_sources::lake::{LakeReplay, LakeSelection};
use flowsense_sources::merge::{EventStream, MergeByTime};
use flowsense_sources::prefetch::Prefetched;
use flowsense_sources::synth::{SynthConfig, SyntheticMarket};
use flowsense_sources::{Record, detect};
use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::{Input, Probe};
use timely::dataflow::{InputHandleVec, ProbeHandle, Scope};

/// What a job's dataflow gives its driver.
pub struct JobHandles {
    /// The dataflow's index on its worker (the first part of its operators' addresses).
    pub dataflow: usize,
    /// Where the driver sends the worker's events.
    pub input: InputHandleVec<u64, MarketEvent>,
    /// Passes a time once every output at or before it has reached the sinks.
    pub probe: ProbeHandle<u64>,
    /// A probe on each stage's output, by operator name, for frontier lag.
    pub stages: Vec<(&'static str, ProbeHandle<u64>)>,
    /// What the feature operator refused or adjusted on this worker (final after the input ends).
    pub counters: Rc<RefCell<FeatureCounters>>,
    /// A trading job's kill switch on this worker (`None` for a feature job).
    pub kill: Option<flowsense_operators::trade_strategy::KillSwitch>,
}

/// Where a worker's feature rows go.
pub trait FeatureSink {
    /// Takes rows (draining the vector).
    fn write(&mut self, rows: &mut Vec<FeatureRow>) -> anyhow::Result<()>;
    /// Writes what is buffered; called once when the input is exhausted.
    fn finish(&mut self) -> anyhow::Result<()>;
}

/// Feature rows into the lake's `features` table.
pub struct LakeFeatureSink(pub FeatureWriter);

impl FeatureSink for LakeFeatureSink {
    fn write(&mut self, rows: &mut Vec<FeatureRow>) -> anyhow::Result<()> {
        for r in rows.drain(..) {
            self.0.push(r)?;
        }
        Ok(())
    }
    fn finish(&mut self) -> anyhow::Result<()> {
        self.0.finish()?;
        Ok(())
    }
}

/// Feature rows as JSON lines on stdout, with the job's name.
/// A reader that goes away (`| head`) ends the output quietly, not the job.
pub struct JsonLinesSink {
    /// The job's name.
    pub job: String,
    closed: bool,
}

impl JsonLinesSink {
    /// Lines for job `job`.
    pub fn new(job: &str) -> Self {
        JsonLinesSink {
            job: job.to_string(),
            closed: false,
        }
    }

    fn lines(&self, rows: &mut Vec<FeatureRow>) -> anyhow::Result<Vec<u8>> {
        let mut buf = Vec::with_capacity(rows.len() * 900);
        for r in rows.drain(..) {
            let mut v = serde_json::to_value(&r)?;
            if let Some(o) = v.as_object_mut() {
                o.insert("job".into(), self.job.clone().into());
            }
            serde_json::to_writer(&mut buf, &v)?;
            buf.push(b'\n');
        }
        Ok(buf)
    }
}

impl FeatureSink for JsonLinesSink {
    fn write(&mut self, rows: &mut Vec<FeatureRow>) -> anyhow::Result<()> {
        if self.closed {
            rows.clear();
            return Ok(());
        }
        let buf = self.lines(rows)?;
        match std::io::stdout().lock().write_all(&buf) {
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => self.closed = true,
            r => r?,
        }
        Ok(())
    }
    fn finish(&mut self) -> anyhow::Result<()> {
        match std::io::stdout().flush() {
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
            r => Ok(r?),
        }
    }
}

/// Keeps rows in memory (tests, benchmarks).
#[derive(Default)]
pub struct CollectSink(pub Vec<FeatureRow>);

impl FeatureSink for CollectSink {
    fn write(&mut self, rows: &mut Vec<FeatureRow>) -> anyhow::Result<()> {
        self.0.append(rows);
        Ok(())
    }
    fn finish(&mut self) -> anyhow::Result<()> {
        Ok(())
    }
}

/// Counts rows and drops them (benchmarks of the graph alone).
#[derive(Default)]
pub struct CountSink(pub u64);

impl FeatureSink for CountSink {
    fn write(&mut self, rows: &mut Vec<FeatureRow>) -> anyhow::Result<()> {
        self.0 += rows.len() as u64;
        rows.clear();
        Ok(())
    }
    fn finish(&mut self) -> anyhow::Result<()> {
        Ok(())
    }
}

/// Several sinks, each getting every row.
pub struct FanOut(pub Vec<Box<dyn FeatureSink>>);

impl FeatureSink for FanOut {
    fn write(&mut self, rows: &mut Vec<FeatureRow>) -> anyhow::Result<()> {
        let n = self.0.len();
        for (i, s) in self.0.iter_mut().enumerate() {
            if i + 1 == n {
                s.write(rows)?;
            } else {
                s.write(&mut rows.clone())?;
            }
        }
        Ok(())
    }
    fn finish(&mut self) -> anyhow::Result<()> {
        self.0.iter_mut().try_for_each(|s| s.finish())
    }
}

/// A sink shared between the dataflow and its driver; the first error is kept for the driver.
pub struct SharedSink {
    sink: Box<dyn FeatureSink>,
    /// The first error the sink returned; later rows are dropped.
    pub error: Option<anyhow::Error>,
    /// Rows written.
    pub rows: u64,
    /// A copy of every row written while tapped (the service streams them).
    tapped: crate::tapped::Tapped<FeatureRow>,
}

impl SharedSink {
    /// Wraps a sink.
    pub fn new(sink: Box<dyn FeatureSink>) -> Rc<RefCell<SharedSink>> {
        Rc::new(RefCell::new(SharedSink {
            sink,
            error: None,
            rows: 0,
            tapped: Default::default(),
        }))
    }

    fn write(&mut self, rows: &mut Vec<FeatureRow>) {
        if self.error.is_some() {
            rows.clear();
            return;
        }
        self.rows += rows.len() as u64;
        self.tapped.extend_from_slice(rows);
        if let Err(e) = self.sink.write(rows) {
            self.error = Some(e);
        }
    }

    /// Drops what the sink buffered and every later row, writing nothing more: the run is
    /// being thrown away (files it already wrote are the caller's to remove).
    pub fn discard(&mut self) {
        self.sink = Box::new(CountSink(0));
        self.error = None;
    }

    /// Starts (or stops) keeping a copy of the rows written from now on, for
    /// [`SharedSink::take_tapped`]; a stop drops what was kept.
    pub fn tap(&mut self, on: bool) {
        self.tapped.set(on);
    }

    /// The rows written since the last call while tapped.
    pub fn take_tapped(&mut self) -> Vec<FeatureRow> {
        self.tapped.take()
    }

    /// The first error the sink returned, if any (it stays for [`SharedSink::finish`]).
    pub fn failed(&self) -> Option<String> {
        self.error.as_ref().map(|e| format!("{e:#}"))
    }

    /// Flushes the sink, returning the first error of the run.
    pub fn finish(&mut self) -> anyhow::Result<()> {
        if let Some(e) = self.error.take() {
            return Err(e);
        }
        self.sink.finish()
    }
}

/// Builds the job's dataflow in `scope`: the input, the feature operator, the sink and a probe.
///
/// The graph depends only on the spec, so every worker of every process builds the same one
/// (timely requires it), and a worker that installs the job later builds it the same way.
pub fn build_job<'scope>(
    scope: Scope<'scope, u64>,
    spec: &JobSpec,
    sink: Rc<RefCell<SharedSink>>,
) -> JobHandles {
    let mut input = InputHandleVec::new();
    let probe = ProbeHandle::new();
    let features_probe = ProbeHandle::new();
    let counters = Rc::new(RefCell::new(FeatureCounters::default()));
    let dataflow = scope.addr()[0];
    scope
        .input_from(&mut input)
        .order_flow_features_counted(&spec.features, counters.clone())
        .probe_with(&features_probe)
        .unary::<CapacityContainerBuilder<Vec<()>>, _, _, _>(
            Pipeline,
            "FeatureSink",
            move |_, _| {
                move |data, _output| {
                    data.for_each(|_time, batch| sink.borrow_mut().write(batch));
                }
            },
        )
        .probe_with(&probe);
    JobHandles {
        dataflow,
        input,
        stages: vec![
            ("OrderFlowFeatures", features_probe),
            ("FeatureSink", probe.clone()),
        ],
        probe,
        counters,
        kill: None,
    }
}

/// The job's symbols filter, parsed.
pub fn symbols_of(spec: &JobSpec) -> anyhow::Result<Vec<Symbol>> {
    spec.symbols
        .iter()
        .map(|s| Symbol::new(s).with_context(|| format!("symbol {s:?} in the job")))
        .collect()
}

/// Counts of what a worker's source read.
#[derive(Clone, Debug, Default)]
pub struct SourceCounts {
    /// Rows the readers refused (capture sources: already in `dead_letters` when ingested;
    /// live sources: written to `dead_letters` as they come).
    pub dead_letters: u64,
    /// A live source's figures, as of the last look.
    pub live: Option<LiveReport>,
}

/// What a live input did: the feed's counts and the live clock's advances.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LiveReport {
    /// The feed's counts.
    pub feed: flowsense_sources::live::LiveCounts,
    /// Times the live clock moved the input past the last event's time (a market quiet for
    /// longer than the grace).
    pub clock_advances: u64,
    /// Why the feed ended, if it failed.
    pub error: Option<String>,
}

/// The events worker `index` of `peers` feeds into the graph, in time order.
///
/// Lake and synthetic sources are split by symbol ([`Symbol::route`]), so every worker reads
/// only what it will compute and the exchange moves nothing; capture files are read by worker 0
/// and exchanged. Top-of-book rows (`bbo`, `quotes`) are derived from the book the graph
/// rebuilds itself, so they are not sent.
pub fn worker_source(
    spec: &JobSpec,
    lake: &Lake,
    index: usize,
    peers: usize,
    counts: std::sync::Arc<std::sync::Mutex<SourceCounts>>,
) -> anyhow::Result<EventStream> {
    let s = all_events(spec, lake, index, peers, counts)?;
    Ok(Box::new(s.filter(|e| {
        !matches!(e, MarketEvent::Bbo(..) | MarketEvent::Quote(..))
    })))
}

fn all_events(
    spec: &JobSpec,
    lake: &Lake,
    index: usize,
    peers: usize,
    counts: std::sync::Arc<std::sync::Mutex<SourceCounts>>,
) -> anyhow::Result<EventStream> {
    let only = symbols_of(spec)?;
    let wanted = only.clone();
    let mine = move |s: &Symbol| {
        (s.route() % peers as u64) as usize == index && (only.is_empty() || only.contains(s))
    };
    match &spec.source {
        Source::Lake(l) => {
            let lake = match &l.url {
                Some(url) => Lake::open(url, &Default::default())?,
                None => lake.clone(),
            };
            let (from, to) = l.range()?;
            let sel = LakeSelection {
                symbols: Vec::new(),
                from,
                to,
            };
            let replay = LakeReplay::open(lake, sel, mine)?;
            // With a core to spare, listing, reading and decoding the files and merging them by
            // time run a chunk ahead on a thread of their own (ARCHITECTURE, "The graph");
            // without one, the extra thread would only take turns with the workers.
            let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
            Ok(if cores > peers {
                Box::new(Prefetched::new(replay))
            } else {
                Box::new(replay)
            })
        }
        Source::Synthetic(s) => {
            let cfg = SynthConfig {
                symbols: s.symbols,
                days: s.days,
                seed: s.seed,
                events_per_day: s.events_per_day,
                ..Default::default()
            };
            let names = cfg.symbol_names();
            let streams: Vec<EventStream> = (0..s.symbols)
                .filter(|&i| mine(&names[i]))
                .map(|i| {
                    Box::new(
                        SyntheticMarket::for_symbol(cfg.clone(), i).filter_map(|r| match r {
                            Record::Event(e) => Some(e),
                            _ => None,
                        }),
                    ) as EventStream
                })
                .collect();
            Ok(Box::new(MergeByTime::new(streams)))
        }
        Source::Live(_) => anyhow::bail!(
            "a live source is not read as history: run it with flowsense run or the service"
        ),
        Source::Capture(c) => {
            if index != 0 {
                return Ok(Box::new(std::iter::empty()));
            }
            let format = match c.format.as_str() {
                "auto" => None,
                "binance" => Some(detect::Format::Binance),
                "lobster" => Some(detect::Format::Lobster),
                "dbn" => Some(detect::Format::Dbn),
                "bars" => Some(detect::Format::Bars),
                "alpaca" => Some(detect::Format::Alpaca),
                "polygon" => Some(detect::Format::Polygon),
                other => anyhow::bail!(
                    "source.capture.format {other:?}: use auto, binance, lobster, dbn, bars, \
                     alpaca or polygon"
                ),
            };
            let paths: Vec<std::path::PathBuf> = c.paths.iter().map(Into::into).collect();
            let inputs = detect::open_inputs_with(&paths, format, &Default::default())?;
            if inputs.is_empty() {
                anyhow::bail!(
                    "source.capture.paths: none of {:?} is a file of a known format (Binance, \
                     LOBSTER, DBN or bars)",
                    c.paths
                );
            }
            let streams: Vec<EventStream> = inputs
                .into_iter()
                .map(|(_, _, reader)| {
                    let counts = counts.clone();
                    let only = wanted.clone();
                    let events = Box::new(reader.filter_map(move |r| match r {
                        Ok(Record::Event(e)) if only.is_empty() || only.contains(e.symbol()) => {
                            Some(e)
                        }
                        Ok(Record::Dead(_)) => {
                            if let Ok(mut c) = counts.lock() {
                                c.dead_letters += 1;
                            }
                            None
                        }
                        Ok(_) => None,
                        Err(e) => {
                            eprintln!("warning: a capture reader stopped: {e}");
                            None
                        }
                    }));
                    events as EventStream
                })
                .collect();
            Ok(Box::new(MergeByTime::new(streams)))
        }
    }
}
