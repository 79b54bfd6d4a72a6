//! Running a job: timely workers (threads, and processes with `-n/-p/-h`), each building the
//! job's dataflow with [`crate::job::build_job`] and feeding it from its own source, in batch
//! (as fast as possible) or paced replay.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::Context;
use flowsense_core::job::JobSpec;
use flowsense_core::{Lake, Symbol};
use flowsense_sinks::FeatureWriter;

use crate::feed::{Fed, Feeder, Pace, worker_feeder};
use crate::job::{
    FanOut, FeatureSink, JsonLinesSink, LakeFeatureSink, SharedSink, SourceCounts, build_job,
};

/// How to run: timely's workers and processes.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// Worker threads per process (`-w`).
    pub workers: usize,
    /// Processes (`-n`); more than one needs `process` and `hostfile`.
    pub processes: usize,
    /// This process's index (`-p`).
    pub process: usize,
    /// File with one `host:port` per line, one line per process (`-h`).
    pub hostfile: Option<PathBuf>,
    /// Events sent between two input advances in batch mode.
    pub batch: usize,
    /// Set to stop the run: each worker's input closes, and the run drains and writes what it
    /// has, as if its source had ended (a live job under Ctrl-C).
    pub stop: Option<Arc<std::sync::atomic::AtomicBool>>,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            workers: 1,
            processes: 1,
            process: 0,
            hostfile: None,
            batch: 4096,
            stop: None,
        }
    }
}

impl RunOptions {
    /// The timely configuration.
    pub fn timely_config(&self) -> anyhow::Result<timely::Config> {
        let mut args = vec![
            "flowsense".to_string(),
            "-w".into(),
            self.workers.max(1).to_string(),
        ];
        if self.processes > 1 {
            let hosts = self
                .hostfile
                .as_ref()
                .context("more than one process needs a hostfile (-h)")?;
            args.extend([
                "-n".into(),
                self.processes.to_string(),
                "-p".into(),
                self.process.to_string(),
                "-h".into(),
                hosts.display().to_string(),
            ]);
        }
        timely::Config::from_args(args.into_iter().skip(1))
            .map_err(|e| anyhow::anyhow!("timely configuration: {e}"))
    }
}

/// What one worker did.
#[derive(Clone, Debug, Default)]
pub struct WorkerReport {
    /// Global worker index.
    pub index: usize,
    /// Events this worker's source fed into the graph.
    pub events: u64,
    /// Feature rows this worker's sinks received.
    pub rows: u64,
    /// Symbols, refused and late events of the feature operator on this worker.
    pub counters: flowsense_operators::FeatureCounters,
    /// The graph's operators on this worker.
    pub operators: Vec<crate::monitor::OperatorStats>,
    /// The graph's channels on this worker.
    pub channels: Vec<crate::monitor::ChannelStats>,
}

/// What a run did.
#[derive(Clone, Debug, Default)]
pub struct RunReport {
    /// Per worker of this process.
    pub workers: Vec<WorkerReport>,
    /// Wall time.
    pub seconds: f64,
    /// Rows capture readers refused.
    pub dead_letters: u64,
    /// A live source's figures.
    pub live: Option<crate::job::LiveReport>,
}

impl RunReport {
    /// Events fed in by this process's workers.
    pub fn events(&self) -> u64 {
        self.workers.iter().map(|w| w.events).sum()
    }
    /// Feature rows out of this process's workers.
    pub fn rows(&self) -> u64 {
        self.workers.iter().map(|w| w.rows).sum()
    }

    /// The graph figures of every worker of this process, as tables.
    pub fn stats(&self) -> String {
        let ops: Vec<_> = self
            .workers
            .iter()
            .flat_map(|w| w.operators.clone())
            .collect();
        let chans: Vec<_> = self
            .workers
            .iter()
            .flat_map(|w| w.channels.clone())
            .collect();
        crate::monitor::render(&ops, &chans)
    }

    /// A few lines for people.
    pub fn summary(&self, spec: &JobSpec) -> String {
        let events = self.events();
        let mut out = format!(
            "job {}: {} events -> {} feature rows on {} worker(s) in {:.2} s ({:.0} events/s)\n",
            spec.name,
            events,
            self.rows(),
            self.workers.len(),
            self.seconds,
            events as f64 / self.seconds.max(1e-9)
        );
        if events == 0 {
            out.push_str(match &spec.source {
                flowsense_core::job::Source::Lake(_) => {
                    "no book events or trades matched in the lake: ingest or synthesize some first \
                     (flowsense ingest data/binance, flowsense synth), or check symbols and from/to\n"
                }
                _ => "the source gave no events: check its paths and the symbols filter\n",
            });
        }
        let (rejected, late): (u64, u64) = self
            .workers
            .iter()
            .map(|w| (w.counters.rejected, w.counters.late))
            .fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1));
        if rejected + late > 0 {
            out.push_str(&format!(
                "{rejected} events refused by the books (not applied), {late} late events (counted in the next bucket)\n"
            ));
        }
        if let Some(l) = &self.live {
            out.push_str(&live_summary(l));
        } else if self.dead_letters > 0 {
            out.push_str(&format!(
                "{} input rows refused by the readers (ingest the files to see them in dead_letters)\n",
                self.dead_letters
            ));
        }
        if spec.sinks.lake {
            out.push_str(
                "features written to the lake: flowsense sql \"SELECT * FROM features LIMIT 10\"\n",
            );
        }
        out
    }
}

/// A live feed's lines of a run summary.
pub fn live_summary(l: &crate::job::LiveReport) -> String {
    let f = &l.feed;
    let mut out = format!(
        "live feed: {} messages, {} snapshots, {} connection(s), {} id gap(s) resynced, {} dead \
         letters (in dead_letters), the live clock closed a quiet market {} time(s)\n",
        f.messages, f.snapshots, f.connections, f.gaps, f.dead_letters, l.clock_advances
    );
    if f.waits > 0 {
        out.push_str(&format!(
            "the graph fell behind the feed {} time(s); the feed waited for it\n",
            f.waits
        ));
    }
    if let Some(e) = &l.error {
        out.push_str(&format!("the feed ended with an error: {e}\n"));
    }
    out
}

/// How far exchange time may go back within a feed (readers refuse more; a trade stamped before
/// a depth update received ahead of it goes back a few milliseconds). The input's timely time
/// trails the latest event time by this much, so the frontier never passes an event still to
/// come, and a bucket the frontier closes is complete whatever the worker count.
pub const LATENESS_NS: i64 = 1_000_000_000;

/// The input time for the latest event time seen: `LATENESS_NS` earlier, rounded down to an epoch.
pub fn input_time(high_ts: i64, epoch: u64) -> u64 {
    let t = high_ts.saturating_sub(LATENESS_NS).max(0) as u64;
    t - t % epoch
}

/// Feeds a source into a job's input as fast as the graph takes it (batch mode) and returns
/// the events sent. `batch` events go in per input advance, stamped with the input's time, which
/// trails the events (see [`LATENESS_NS`]): never later than an event's own time, so the
/// frontier still promises that nothing earlier will come.
pub fn feed_batch(
    worker: &mut timely::worker::Worker,
    h: &mut crate::job::JobHandles,
    source: impl Iterator<Item = flowsense_core::MarketEvent>,
    batch: usize,
    epoch: u64,
    monitor: Option<&crate::monitor::WorkerMonitor>,
) -> u64 {
    drive(
        worker,
        h,
        Feeder::new(source, Pace::Batch { batch }, epoch),
        monitor,
        None,
    )
}

/// Feeds a source as a live feed would: each event leaves when its time comes at `speed` x real
/// time, and the input advances with the events, epoch by epoch. Returns the events sent.
pub fn feed_replay(
    worker: &mut timely::worker::Worker,
    h: &mut crate::job::JobHandles,
    source: impl Iterator<Item = flowsense_core::MarketEvent>,
    epoch: u64,
    speed: f64,
    monitor: Option<&crate::monitor::WorkerMonitor>,
) -> u64 {
    drive(
        worker,
        h,
        Feeder::new(source, Pace::Replay { speed }, epoch),
        monitor,
        None,
    )
}

/// Steps one job's feeder to the end of its source (or until `stop` is set), stepping the
/// worker between feeds; the events sent.
pub fn drive<S: Iterator<Item = flowsense_core::MarketEvent>>(
    worker: &mut timely::worker::Worker,
    h: &mut crate::job::JobHandles,
    mut feeder: Feeder<S>,
    monitor: Option<&crate::monitor::WorkerMonitor>,
    stop: Option<&std::sync::atomic::AtomicBool>,
) -> u64 {
    loop {
        if stop.is_some_and(|s| s.load(std::sync::atomic::Ordering::Relaxed)) {
            return feeder.events();
        }
        match feeder.feed(h) {
            Fed::Sent(_) => {
                worker.step();
                if let Some(m) = monitor {
                    sample_lag(m, h);
                }
            }
            Fed::Behind => {
                worker.step_or_park(None);
            }
            Fed::Until(due) => {
                worker.step_or_park(Some(due.saturating_duration_since(Instant::now())));
            }
            Fed::Exhausted => return feeder.events(),
        }
    }
}

/// Samples each stage's frontier lag: the input's time minus the stage's output frontier.
pub fn sample_lag(monitor: &crate::monitor::WorkerMonitor, h: &crate::job::JobHandles) {
    let now = *h.input.time() as i64;
    for (name, probe) in &h.stages {
        let f = probe.with_frontier(|f| f.iter().min().copied());
        // Time 0 is timely's start, before the first event's epoch: not a lag.
        if let Some(f) = f.filter(|&f| f > 0) {
            monitor.lag(h.dataflow, name, (now - f as i64).max(0));
        }
    }
}

/// Makes each worker's sink: called once per worker with (index, peers).
pub type SinkFactory =
    Arc<dyn Fn(usize, usize) -> anyhow::Result<Box<dyn FeatureSink>> + Send + Sync>;

/// The sinks a job's spec asks for: the lake's `features` table (after removing the job's
/// earlier files of the worker's symbols) and JSON lines on stdout.
pub fn spec_sinks(spec: &JobSpec, lake: &Lake) -> SinkFactory {
    let (spec, lake) = (spec.clone(), lake.clone());
    Arc::new(move |index, peers| {
        let mut sinks: Vec<Box<dyn FeatureSink>> = Vec::new();
        if spec.sinks.lake {
            let mut w = FeatureWriter::new(lake.clone(), &spec.name, spec.features.levels)?;
            w.clear(|s: &Symbol| (s.route() % peers as u64) as usize == index)?;
            sinks.push(Box::new(LakeFeatureSink(w)));
        }
        if spec.sinks.stdout {
            sinks.push(Box::new(JsonLinesSink::new(&spec.name)));
        }
        Ok(Box::new(FanOut(sinks)) as Box<dyn FeatureSink>)
    })
}

/// Runs a job to the end of its source.
pub fn run_job(
    spec: &JobSpec,
    lake: &Lake,
    opts: &RunOptions,
    sinks: SinkFactory,
) -> anyhow::Result<RunReport> {
    let config = opts.timely_config()?;
    let counts = Arc::new(Mutex::new(SourceCounts::default()));
    let (spec, lake, batch) = (spec.clone(), lake.clone(), opts.batch.max(1));
    let stop = opts.stop.clone();
    let counts_w = counts.clone();
    let start = Instant::now();
    let guards = timely::execute(config, move |worker| -> anyhow::Result<WorkerReport> {
        let (index, peers) = (worker.index(), worker.peers());
        let monitor = crate::monitor::WorkerMonitor::register(worker);
        let sink = SharedSink::new(sinks(index, peers)?);
        let sink_w = sink.clone();
        let spec_w = spec.clone();
        let mut h = worker.dataflow::<u64, _, _>(move |scope| build_job(scope, &spec_w, sink_w));
        if index == 0 && spec.sinks.lake {
            crate::monitor::clear_stats(&lake, &spec.name)
                .context("removing the job's earlier graph figures")?;
        }
        let pace = match &spec.replay {
            None => Pace::Batch { batch },
            Some(replay) => Pace::Replay {
                speed: replay.speed,
            },
        };
        let feeder = worker_feeder(&spec, &lake, index, peers, counts_w.clone(), pace)?;
        let events = drive(worker, &mut h, feeder, Some(&monitor), stop.as_deref());
        drop(h.input);
        worker.step_while(|| !h.probe.done());
        let mut s = sink.borrow_mut();
        let rows = s.rows;
        s.finish()
            .with_context(|| format!("worker {index}: writing features"))?;
        if let Some(mut reg) = worker.log_register() {
            reg.flush();
        }
        let (operators, channels) = monitor.snapshot();
        if spec.sinks.lake {
            crate::monitor::write_stats(&lake, &spec.name, index, &operators, &channels)
                .with_context(|| format!("worker {index}: writing graph figures"))?;
        }
        let counters = h.counters.borrow().clone();
        Ok(WorkerReport {
            index,
            events,
            rows,
            counters,
            operators,
            channels,
        })
    })
    .map_err(|e| anyhow::anyhow!("starting timely: {e}"))?;
    let mut report = RunReport::default();
    for r in guards.join() {
        let r = r.map_err(|e| anyhow::anyhow!("a worker failed: {e}"))??;
        report.workers.push(r);
    }
    report.seconds = start.elapsed().as_secs_f64();
    if let Ok(c) = counts.lock() {
        report.dead_letters = c.dead_letters;
        report.live = c.live.clone();
    }
    Ok(report)
}
