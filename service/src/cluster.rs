//! The long-running worker: every timely worker of every process runs [`worker_loop`], which
//! installs jobs as the sequenced commands say, feeds each job's input a step at a time with the
//! same builders and feeders `flowsense run` and `flowsense backtest` use, and reports each job's
//! figures and end to worker 0, which hands them to the controller's [`Registry`].
//!
//! ```text
//!  HTTP handler --mpsc--> worker 0 --Sequencer<Command>--> every worker (same order)
//!                                                            | build_job / build_trading
//!                                                            | Feeder::feed, step
//!  Registry <-- worker 0 <--Exchange(to 0)-- Report ---------+
//! ```

use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;
use std::sync::mpsc::Receiver;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use flowsense_core::job::{JobSpec, Source};
use flowsense_core::{Lake, Symbol, Table};
use flowsense_dataflows::backtest::{TradeSink, build_trading};
use flowsense_dataflows::feed::{Fed, Feeder, Pace, worker_feeder};
use flowsense_dataflows::job::{CountSink, JobHandles, SharedSink, SourceCounts, build_job};
use flowsense_dataflows::monitor::{WorkerMonitor, write_stats};
use flowsense_dataflows::run::{RunOptions, sample_lag, spec_sinks};
use flowsense_operators::trade_strategy::Kill;
use flowsense_sinks::FeatureWriter;
use flowsense_sources::merge::EventStream;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::Input;
use timely::dataflow::operators::generic::operator::Operator;
use timely::dataflow::{InputHandleVec, ProbeHandle};
use timely::synchronization::Sequencer;
use timely::worker::Worker;

use crate::protocol::{Command, Outcome, Report, ReportEvent, Topic, WorkerFigures};
use crate::registry::Registry;
use crate::tap::{JobTap, json_messages};

/// How often a worker sends each job's figures.
const STATS_EVERY: Duration = Duration::from_secs(1);
/// Longest a quiet worker parks before looking at its commands and paced feeds again.
const IDLE_PARK: Duration = Duration::from_millis(5);
/// Fault injection for the tests: a job of this name panics its worker when installed
/// (what a bug inside an operator would do), so the test can show what the user sees.
pub const PANIC_JOB_VAR: &str = "FLOWSENSE_FAULT_PANIC_JOB";

/// What every worker of a process shares.
pub struct Shared {
    /// The lake jobs read and write.
    pub lake: Lake,
    /// Commands for worker 0 to sequence (process 0 only; taken by worker 0).
    pub commands: Mutex<Option<Receiver<Command>>>,
    /// The controller (process 0 only).
    pub registry: Option<Arc<Registry>>,
}

/// Where a job's output goes on this worker.
enum JobSink {
    Features(Rc<RefCell<SharedSink>>),
    Trading(Rc<RefCell<TradeSink>>),
}

impl JobSink {
    fn failed(&self) -> Option<String> {
        match self {
            JobSink::Features(s) => s.borrow().failed(),
            JobSink::Trading(s) => s.borrow_mut().take_error().map(|e| format!("{e:#}")),
        }
    }

    fn discard(&self) {
        self.tap(&[]);
        match self {
            JobSink::Features(s) => s.borrow_mut().discard(),
            JobSink::Trading(s) => s.borrow_mut().discard(),
        }
    }

    /// Keeps a copy of what is written on `topics` from now on (none: stops).
    fn tap(&self, topics: &[Topic]) {
        match self {
            JobSink::Features(s) => s.borrow_mut().tap(topics.contains(&Topic::Features)),
            JobSink::Trading(s) => s.borrow_mut().tap(topics.iter().any(|t| t.is_trading())),
        }
    }

    /// What was written while tapped since the last call, as the stream's reports.
    fn tapped(&self, spec: &JobSpec, id: &str, tap: &JobTap) -> anyhow::Result<Vec<ReportEvent>> {
        let mut out = Vec::new();
        match self {
            JobSink::Features(s) => {
                let rows = s.borrow_mut().take_tapped();
                if !rows.is_empty() {
                    let b = flowsense_sinks::features::table_batch(
                        &spec.name,
                        &rows,
                        spec.features.levels,
                    )?;
                    for json in json_messages(&b)? {
                        out.push(ReportEvent::Rows {
                            topic: Topic::Features,
                            json,
                        });
                    }
                }
            }
            JobSink::Trading(s) => {
                let records = s.borrow_mut().take_tapped();
                for (table, b) in flowsense_sinks::results::record_batches(id, &records)? {
                    let topic = match table {
                        Table::Orders => Topic::Orders,
                        Table::Fills => Topic::Fills,
                        Table::Equity => Topic::Equity,
                        Table::Positions => Topic::Positions,
                        _ => Topic::RiskEvents,
                    };
                    if tap.wants(topic) {
                        for json in json_messages(&b)? {
                            out.push(ReportEvent::Rows { topic, json });
                        }
                    }
                }
            }
        }
        Ok(out)
    }

    fn rows(&self) -> u64 {
        match self {
            JobSink::Features(s) => s.borrow().rows,
            JobSink::Trading(s) => s.borrow().records(),
        }
    }
}

/// One job on this worker.
struct WorkerJob {
    id: String,
    spec: JobSpec,
    dataflow: Option<usize>,
    /// Present while the input is open.
    handles: Option<JobHandles>,
    feeder: Option<Feeder<EventStream>>,
    probe: ProbeHandle<u64>,
    sink: JobSink,
    counts: Arc<Mutex<SourceCounts>>,
    /// Why the input closed early (a stop or a failure); `None` while running or at the end.
    ending: Option<Outcome>,
    /// A paced feed's next event time.
    due: Option<Instant>,
    events: u64,
    last_stats: Instant,
    /// What the stream's subscribers want of it.
    tap: JobTap,
}

impl WorkerJob {
    /// Closes the input (the job drains) and records why; an immediate stop or a failure also
    /// throws the output away. A failure outranks a stop.
    fn end(&mut self, why: Outcome) {
        if let Some(f) = &self.feeder {
            self.events = f.events();
        }
        self.feeder = None;
        self.handles = None;
        if matches!(why, Outcome::Discarded | Outcome::Failed(_)) {
            self.sink.discard();
            self.tap.set(Vec::new());
        }
        match (&self.ending, &why) {
            (Some(Outcome::Failed(_)), _) => {}
            (Some(Outcome::Discarded), Outcome::Stopped) => {}
            _ => self.ending = Some(why),
        }
    }

    /// Sends what the stream's subscribers want and is due (everything, when `all`).
    fn stream(&mut self, index: usize, reports: &mut ReportChannel, all: bool) {
        if self.tap.topics.is_empty() {
            return;
        }
        let due = self.tap.rows_due(all);
        let mut events = self.tap.market_reports(due, all);
        if due {
            match self.sink.tapped(&self.spec, &self.id, &self.tap) {
                Ok(rows) => events.extend(rows),
                // An encoding failure is a bug; the job goes on without its stream's rows.
                Err(e) => {
                    tracing::warn!(job = %self.id, error = %format!("{e:#}"), "streaming rows")
                }
            }
        }
        for e in events {
            reports.send(&self.id, index, e);
        }
    }

    fn figures(&self, monitor: &WorkerMonitor) -> WorkerFigures {
        let (operators, channels) = match self.dataflow {
            Some(d) => monitor.snapshot_of(d),
            None => Default::default(),
        };
        WorkerFigures {
            events: self.feeder.as_ref().map_or(self.events, |f| f.events()),
            rows: self.sink.rows(),
            dead_letters: self.counts.lock().map_or(0, |c| c.dead_letters),
            operators,
            channels,
        }
    }
}

/// The reports' way back to worker 0: an input on every worker, exchanged to worker 0.
struct ReportChannel {
    input: InputHandleVec<u64, Report>,
    received: Rc<RefCell<VecDeque<Report>>>,
}

impl ReportChannel {
    fn new(worker: &mut Worker) -> Self {
        let received = Rc::new(RefCell::new(VecDeque::new()));
        let sink = received.clone();
        let mut input = InputHandleVec::new();
        worker.dataflow_named::<u64, _, _>("Reports", |scope| {
            scope.input_from(&mut input).sink(
                Exchange::new(|_: &Report| 0u64),
                "ReportsToController",
                move |(input, _frontier)| {
                    let mut q = sink.borrow_mut();
                    input.for_each(|_time, data| q.extend(data.drain(..)));
                },
            );
        });
        ReportChannel { input, received }
    }

    fn send(&mut self, id: &str, worker: usize, event: ReportEvent) {
        self.input.send(Report {
            id: id.to_string(),
            worker,
            event,
        });
        // Advancing the time closes the epoch, which is what pushes the records out of the
        // exchange's buffers (a flush alone leaves them there).
        let next = *self.input.time() + 1;
        self.input.advance_to(next);
    }
}

/// Runs one worker of the service until the process ends.
pub fn worker_loop(worker: &mut Worker, shared: Arc<Shared>) -> anyhow::Result<()> {
    let index = worker.index();
    let monitor = WorkerMonitor::register(worker);
    // The same dataflows in the same order on every worker: the sequencer, the reports, then
    // one dataflow per installed job, in the sequencer's order.
    let mut seq: Sequencer<Command> = Sequencer::new(worker, Instant::now());
    let mut reports = ReportChannel::new(worker);
    let commands = if index == 0 {
        shared.commands.lock().ok().and_then(|mut c| c.take())
    } else {
        None
    };
    if index == 0
        && let Some(reg) = &shared.registry
    {
        reg.cluster_started(worker.peers(), std::thread::current());
    }
    let mut jobs: Vec<WorkerJob> = Vec::new();
    loop {
        if let Some(rx) = &commands {
            while let Ok(c) = rx.try_recv() {
                seq.push(c);
            }
        }
        for cmd in seq.by_ref() {
            match cmd {
                Command::Install { id, spec } => {
                    let job = install(worker, &shared.lake, &id, &spec, &mut reports);
                    jobs.extend(job);
                }
                Command::Tap { id, topics } => {
                    if let Some(j) = jobs.iter_mut().find(|j| j.id == id)
                        && !matches!(j.ending, Some(Outcome::Discarded | Outcome::Failed(_)))
                    {
                        j.sink.tap(&topics);
                        j.tap.set(topics);
                    }
                }
                Command::Kill { flatten, why } => {
                    for j in jobs.iter_mut() {
                        if let Some(k) = j.handles.as_ref().and_then(|h| h.kill.as_ref()) {
                            k.pull(Kill {
                                flatten,
                                why: why.clone(),
                            });
                        }
                    }
                }
                Command::Stop { id, immediate } => {
                    if let Some(j) = jobs.iter_mut().find(|j| j.id == id) {
                        j.end(if immediate {
                            Outcome::Discarded
                        } else {
                            Outcome::Stopped
                        });
                    }
                }
            }
        }

        let mut busy = false;
        let mut wake = Instant::now() + IDLE_PARK;
        for j in jobs.iter_mut() {
            if let (Some(h), Some(f)) = (&mut j.handles, &mut j.feeder) {
                match f.feed(h) {
                    Fed::Sent(_) => busy = true,
                    Fed::Behind => {}
                    Fed::Until(due) => {
                        j.due = Some(due);
                        wake = wake.min(due);
                    }
                    Fed::Exhausted => {
                        j.events = f.events();
                        j.feeder = None;
                        j.handles = None;
                    }
                }
                if let Some(h) = &j.handles {
                    sample_lag(&monitor, h);
                }
            }
            if let Some(msg) = j.sink.failed() {
                reports.send(&j.id, index, ReportEvent::Failing(msg.clone()));
                j.end(Outcome::Failed(msg));
            }
            j.stream(index, &mut reports, false);
        }

        // Figures once a second, and the end of every job whose output has all arrived.
        let now = Instant::now();
        if jobs
            .iter()
            .any(|j| now >= j.last_stats + STATS_EVERY || j.handles.is_none())
            && let Some(mut reg) = worker.log_register()
        {
            reg.flush();
        }
        let mut i = 0;
        while i < jobs.len() {
            let j = &mut jobs[i];
            if j.handles.is_none() && j.probe.done() {
                let j = jobs.swap_remove(i);
                finish(
                    j,
                    &shared.lake,
                    &monitor,
                    index,
                    worker.peers(),
                    &mut reports,
                );
                continue;
            }
            if now >= j.last_stats + STATS_EVERY {
                j.last_stats = now;
                let figures = j.figures(&monitor);
                reports.send(&j.id, index, ReportEvent::Stats(figures));
            }
            i += 1;
        }

        if let Some(reg) = &shared.registry
            && index == 0
        {
            let mut q = reports.received.borrow_mut();
            while let Some(r) = q.pop_front() {
                reg.apply(r);
            }
        }

        if busy {
            worker.step();
        } else {
            worker.step_or_park(Some(wake.saturating_duration_since(Instant::now())));
        }
    }
}

/// Builds job `id`'s dataflow on this worker and opens its source; a failure is reported and
/// leaves the job draining towards its end (the dataflow is built on every worker either way,
/// as timely requires).
fn install(
    worker: &mut Worker,
    lake: &Lake,
    id: &str,
    spec_toml: &str,
    reports: &mut ReportChannel,
) -> Option<WorkerJob> {
    let (index, peers) = (worker.index(), worker.peers());
    let _span = tracing::info_span!("job", id = %id, worker = index).entered();
    let counts = Arc::new(Mutex::new(SourceCounts::default()));
    let spec = match JobSpec::from_toml(spec_toml) {
        Ok(s) => s,
        // Every worker fails alike: no dataflow is built anywhere.
        Err(e) => return ended(reports, id, index, format!("the job spec: {e}")),
    };
    if std::env::var(PANIC_JOB_VAR).is_ok_and(|n| n == spec.name) {
        panic!(
            "fault injection ({PANIC_JOB_VAR}): job {} panics its worker",
            spec.name
        );
    }
    let mut error: Option<String> = None;
    let note = |error: &mut Option<String>, e: anyhow::Error| {
        error.get_or_insert(format!("worker {index}: {e:#}"));
    };
    let (handles, sink) = if spec.strategy.is_some() {
        let sink = TradeSink::for_worker(&spec, lake, id, index, spec.sinks.lake, None, false)
            .or_else(|e| {
                note(&mut error, e);
                TradeSink::for_worker(&spec, lake, id, index, false, None, false)
            });
        let sink = match sink {
            Ok(s) => s,
            Err(e) => return ended(reports, id, index, format!("worker {index}: {e:#}")),
        };
        let (s, sp) = (sink.clone(), spec.clone());
        match worker.dataflow::<u64, _, _>(move |scope| build_trading(scope, &sp, s)) {
            Ok(h) => (h, JobSink::Trading(sink)),
            Err(e) => return ended(reports, id, index, format!("{e:#}")),
        }
    } else {
        let sink = spec_sinks(&spec, lake)(index, peers).unwrap_or_else(|e| {
            note(&mut error, e.context("opening the job's sinks"));
            Box::new(CountSink(0))
        });
        let sink = SharedSink::new(sink);
        let (s, sp) = (sink.clone(), spec.clone());
        let h = worker.dataflow::<u64, _, _>(move |scope| build_job(scope, &sp, s));
        if index == 0
            && spec.sinks.lake
            && let Err(e) = flowsense_dataflows::monitor::clear_stats(lake, &spec.name)
        {
            note(
                &mut error,
                e.context("removing the job's earlier graph figures"),
            );
        }
        (h, JobSink::Features(sink))
    };
    let tap = JobTap::new(spec.replay.is_some() || matches!(spec.source, Source::Live(_)));
    let pace = match &spec.replay {
        Some(r) => Pace::Replay { speed: r.speed },
        None => Pace::Batch {
            batch: RunOptions::default().batch,
        },
    };
    let feeder = match worker_feeder(&spec, lake, index, peers, counts.clone(), pace) {
        Ok(f) => Some(match &tap.market {
            Some(m) => {
                let m = m.clone();
                f.observe(Box::new(move |ev| m.borrow_mut().apply(ev)))
            }
            None => f,
        }),
        Err(e) => {
            note(&mut error, e.context("opening the job's source"));
            None
        }
    };
    let mut job = WorkerJob {
        id: id.to_string(),
        dataflow: Some(handles.dataflow),
        probe: handles.probe.clone(),
        handles: Some(handles),
        feeder,
        spec,
        sink,
        counts,
        ending: None,
        due: None,
        events: 0,
        last_stats: Instant::now(),
        tap,
    };
    match error {
        Some(msg) => {
            tracing::warn!(error = %msg, "the job failed to start");
            reports.send(id, index, ReportEvent::Failing(msg.clone()));
            job.end(Outcome::Failed(msg));
        }
        None => reports.send(id, index, ReportEvent::Running),
    }
    Some(job)
}

/// Reports the end of a job whose dataflow could not be built (alike on every worker).
fn ended(reports: &mut ReportChannel, id: &str, index: usize, msg: String) -> Option<WorkerJob> {
    reports.send(
        id,
        index,
        ReportEvent::Done {
            figures: WorkerFigures::default(),
            trades: None,
            outcome: Outcome::Failed(msg),
        },
    );
    None
}

/// Ends a job whose output has all arrived: commits its sinks (or removes what it wrote, when
/// stopped immediately or failed), writes its graph figures and reports the end.
fn finish(
    mut job: WorkerJob,
    lake: &Lake,
    monitor: &WorkerMonitor,
    index: usize,
    peers: usize,
    reports: &mut ReportChannel,
) {
    let _span = tracing::info_span!("job", id = %job.id, worker = index).entered();
    let mut outcome = job.ending.take().unwrap_or(Outcome::Finished);
    let mut trades = None;
    let keep = matches!(outcome, Outcome::Finished | Outcome::Stopped);
    let figures = job.figures(monitor);
    if keep {
        // The stream's last rows go before the end, so a subscriber has them all when the
        // job's state turns final.
        job.stream(index, reports, true);
        let committed: anyhow::Result<()> = match &job.sink {
            JobSink::Features(s) => s.borrow_mut().finish().context("writing features"),
            JobSink::Trading(s) => s
                .borrow_mut()
                .finish(figures.events)
                .map(|t| trades = Some(t)),
        };
        let stats = || -> anyhow::Result<()> {
            if matches!(job.sink, JobSink::Features(_)) && job.spec.sinks.lake {
                write_stats(
                    lake,
                    &job.spec.name,
                    index,
                    &figures.operators,
                    &figures.channels,
                )
                .context("writing graph figures")?;
            }
            Ok(())
        };
        if let Err(e) = committed.and_then(|_| stats()) {
            outcome = Outcome::Failed(format!("worker {index}: {e:#}"));
        }
    }
    if !matches!(outcome, Outcome::Finished | Outcome::Stopped)
        && matches!(job.sink, JobSink::Features(_))
        && job.spec.sinks.lake
    {
        // Nothing of a discarded feature job stays: remove the files this worker wrote.
        let removed = FeatureWriter::new(lake.clone(), &job.spec.name, job.spec.features.levels)
            .and_then(|mut w| w.clear(|s: &Symbol| (s.route() % peers as u64) as usize == index));
        if let Err(e) = removed {
            outcome = Outcome::Failed(format!(
                "worker {index}: removing the discarded output: {e}"
            ));
        }
    }
    if let Some(d) = job.dataflow {
        monitor.forget(d);
    }
    tracing::debug!(outcome = ?outcome, events = figures.events, rows = figures.rows, "job ended here");
    reports.send(
        &job.id,
        index,
        ReportEvent::Done {
            figures,
            trades: trades.map(Box::new),
            outcome,
        },
    );
}
