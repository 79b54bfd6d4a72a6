//! The controller's record of jobs (process 0): their states, figures and errors, fed by the
//! workers' reports; turning submissions and stops into sequenced commands; and, when every
//! worker has reported a job's end, committing the job's run to the lake.
//!
//! States move `submitted -> running -> finished | failed`, or through `stopping` to `stopped`
//! (or `failed`). A state is final only once the lake holds the job's `runs` row.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::Thread;
use std::time::Instant;

use flowsense_core::job::JobSpec;
use flowsense_core::order::RiskEvent;
use flowsense_core::results::TradeRecord;
use flowsense_core::{Lake, Symbol};
use flowsense_dataflows::backtest::{WorkerTrades, combine, new_run_id, run_row};
use flowsense_sinks::results::{clear_run, write_run};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::error::{Result, ServiceError};
use crate::protocol::{Command, Outcome, Report, ReportEvent, Topic, WorkerFigures};

/// A job's state.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    /// Accepted; the workers are installing it.
    Submitted,
    /// Every worker runs it.
    Running,
    /// Its source ran to the end and its output is in the lake.
    Finished,
    /// It failed; its output was discarded; `errors` says why.
    Failed,
    /// A stop was asked for; the job is draining.
    Stopping,
    /// Stopped: gracefully (output committed) or immediately (output discarded).
    Stopped,
}

impl JobState {
    /// Every state, in order.
    pub const ALL: [JobState; 6] = [
        JobState::Submitted,
        JobState::Running,
        JobState::Finished,
        JobState::Failed,
        JobState::Stopping,
        JobState::Stopped,
    ];

    /// The state's name as the API writes it.
    pub fn name(self) -> &'static str {
        match self {
            JobState::Submitted => "submitted",
            JobState::Running => "running",
            JobState::Finished => "finished",
            JobState::Failed => "failed",
            JobState::Stopping => "stopping",
            JobState::Stopped => "stopped",
        }
    }

    /// Whether the job has ended.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            JobState::Finished | JobState::Failed | JobState::Stopped
        )
    }

    fn parse(s: &str) -> JobState {
        match s {
            "failed" => JobState::Failed,
            "stopped" => JobState::Stopped,
            _ => JobState::Finished,
        }
    }
}

/// What a job computes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum JobKind {
    /// Features into the `features` table (`flowsense run` of a job without a strategy).
    Features,
    /// A strategy traded as fast as it goes (`flowsense backtest`).
    Backtest,
    /// A strategy traded on a paced replay (`flowsense run` of a job with `[replay]`).
    Replay,
    /// A strategy trading on paper on a live feed (`[source.live]`).
    Paper,
    /// A strategy trading at a real broker on a live feed (`[broker] kind = "ibkr"`).
    Live,
}

impl JobKind {
    fn of(spec: &JobSpec) -> JobKind {
        match (&spec.strategy, &spec.replay) {
            (None, _) => JobKind::Features,
            (Some(_), _) if spec.live_broker().is_some() => JobKind::Live,
            (Some(_), _) if matches!(spec.source, flowsense_core::job::Source::Live(_)) => {
                JobKind::Paper
            }
            (Some(_), None) => JobKind::Backtest,
            (Some(_), Some(_)) => JobKind::Replay,
        }
    }

    /// The `mode` the `runs` table records.
    pub fn mode(self) -> &'static str {
        match self {
            JobKind::Features => "features",
            JobKind::Backtest => "backtest",
            JobKind::Replay => "replay",
            JobKind::Paper => "paper",
            JobKind::Live => "live",
        }
    }
}

/// What the kill switch did.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct KillView {
    /// The trading jobs it halted.
    pub jobs: Vec<String>,
    /// Whether their positions are being closed.
    pub flatten: bool,
    /// When (UTC).
    pub at: String,
}

/// The wall clock in nanoseconds (the service's, for audit rows).
fn wall_nanos() -> flowsense_core::UnixNanos {
    #[allow(clippy::disallowed_methods)]
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    flowsense_core::UnixNanos(d.as_nanos() as i64)
}

/// A job as the API shows it.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct JobView {
    /// The job's id: also its `run_id` in the lake.
    pub id: String,
    /// The spec's name.
    pub name: String,
    /// What it computes.
    pub kind: JobKind,
    /// Its state.
    pub state: JobState,
    /// When it was submitted (UTC, RFC 3339).
    pub submitted: String,
    /// Wall seconds from running to its end (so far, while it runs).
    pub seconds: Option<f64>,
    /// Market events fed in, over all workers.
    pub events: u64,
    /// Output rows written (features, or orders, fills, equity, ...), over all workers.
    pub rows: u64,
    /// Events per second over the last interval, over all workers.
    pub events_per_s: f64,
    /// Workers running it.
    pub workers: usize,
    /// The first error, when it failed.
    pub error: Option<String>,
    /// How the job was stopped, if it was: `graceful` or `immediate`.
    pub stop: Option<String>,
    /// Whether its source is paced (`[replay]`), as a live feed would be: such a job also
    /// streams its `book` and `trades`.
    pub paced: bool,
}

/// One error of a job.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct JobError {
    /// The worker that saw it, if one did.
    pub worker: Option<usize>,
    /// What went wrong.
    pub message: String,
}

/// A job's figures on one worker, and when they came.
#[derive(Clone, Debug)]
struct Sample {
    at: Instant,
    figures: WorkerFigures,
}

/// Everything the controller knows about one job.
#[derive(Clone, Debug)]
pub struct JobRecord {
    id: String,
    spec: Option<JobSpec>,
    name: String,
    kind: JobKind,
    state: JobState,
    submitted: String,
    submitted_at: Option<Instant>,
    running_at: Option<Instant>,
    seconds: Option<f64>,
    events_final: u64,
    rows_final: u64,
    errors: Vec<JobError>,
    stop: Option<bool>,
    running: BTreeSet<usize>,
    /// The latest figures of each worker, and the ones before (for rates).
    latest: BTreeMap<usize, Sample>,
    previous: BTreeMap<usize, Sample>,
    done: BTreeMap<usize, (Option<Box<WorkerTrades>>, Outcome)>,
}

impl JobRecord {
    /// The job as the API shows it.
    pub fn view(&self) -> JobView {
        let live = !self.state.is_final();
        let (events, rows) = if live && !self.latest.is_empty() {
            self.latest.values().fold((0, 0), |(e, r), s| {
                (e + s.figures.events, r + s.figures.rows)
            })
        } else {
            (self.events_final, self.rows_final)
        };
        let events_per_s = if live {
            self.latest
                .iter()
                .filter_map(|(w, s)| {
                    let p = self.previous.get(w)?;
                    let dt = s.at.duration_since(p.at).as_secs_f64();
                    (dt > 0.0)
                        .then(|| s.figures.events.saturating_sub(p.figures.events) as f64 / dt)
                })
                .sum::<f64>()
                // An empty sum is -0.0.
                + 0.0
        } else {
            0.0
        };
        JobView {
            id: self.id.clone(),
            name: self.name.clone(),
            kind: self.kind,
            state: self.state,
            submitted: self.submitted.clone(),
            seconds: self.seconds.or_else(|| {
                self.running_at
                    .filter(|_| live)
                    .map(|t| t.elapsed().as_secs_f64())
            }),
            events,
            rows,
            events_per_s,
            workers: self.running.len(),
            error: self.errors.first().map(|e| e.message.clone()),
            stop: self
                .stop
                .map(|i| if i { "immediate" } else { "graceful" }.to_string()),
            paced: self.paced(),
        }
    }

    /// The latest figures of every worker, with the previous ones for rates.
    pub fn samples(&self) -> Vec<(usize, f64, &WorkerFigures, Option<&WorkerFigures>)> {
        self.latest
            .iter()
            .map(|(w, s)| {
                let p = self.previous.get(w);
                let dt = p.map_or(0.0, |p| s.at.duration_since(p.at).as_secs_f64());
                (*w, dt, &s.figures, p.map(|p| &p.figures))
            })
            .collect()
    }

    /// The job's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The job's state.
    pub fn state(&self) -> JobState {
        self.state
    }

    /// What the job computes.
    pub fn kind(&self) -> JobKind {
        self.kind
    }

    /// The spec it was submitted with (a past run's from the lake's `runs` table).
    pub fn spec(&self) -> Option<&JobSpec> {
        self.spec.as_ref()
    }

    /// Whether its source is paced (`[replay]`), as a live feed would be.
    pub fn paced(&self) -> bool {
        self.spec.as_ref().is_some_and(|s| {
            s.replay.is_some() || matches!(s.source, flowsense_core::job::Source::Live(_))
        })
    }
}

/// A past run read back from the lake's `runs` table.
#[derive(Clone, Debug)]
pub struct PastRun {
    /// `run_id`.
    pub id: String,
    /// `job`.
    pub name: String,
    /// `mode`.
    pub mode: String,
    /// `started`.
    pub started: String,
    /// `events`.
    pub events: u64,
    /// `seconds`.
    pub seconds: f64,
    /// `state` (NULL: finished).
    pub state: Option<String>,
    /// `error`.
    pub error: Option<String>,
    /// `spec`, parsed (absent if it no longer parses).
    pub spec: Option<JobSpec>,
}

struct Inner {
    jobs: BTreeMap<String, JobRecord>,
    /// The streams of jobs with subscribers.
    streams: BTreeMap<String, JobStream>,
}

/// Messages of the stream's row topics kept for a slow subscriber before it misses some.
const STREAM_BACKLOG: usize = 4096;

/// One job's stream: the rows its workers send, to every subscriber, and how many
/// subscribers want each topic.
struct JobStream {
    tx: tokio::sync::broadcast::Sender<StreamMessage>,
    wanted: BTreeMap<Topic, usize>,
}

impl JobStream {
    fn topics(&self) -> Vec<Topic> {
        self.wanted
            .iter()
            .filter(|(_, n)| **n > 0)
            .map(|(t, _)| *t)
            .collect()
    }
}

/// A message of a row topic, ready to send: `{"topic": .., "job": .., "worker": .., "data": [..]}`.
#[derive(Clone, Debug)]
pub struct StreamMessage {
    /// Its topic.
    pub topic: Topic,
    /// The message as JSON text.
    pub text: Arc<str>,
}

/// A subscriber's end of a job's stream; dropping it unsubscribes (the workers stop copying
/// a topic nobody wants).
pub struct Subscription {
    /// The messages of the row topics subscribed to (and of others': filter by topic).
    pub rx: tokio::sync::broadcast::Receiver<StreamMessage>,
    registry: Arc<Registry>,
    id: String,
    topics: Vec<Topic>,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.registry.unsubscribe(&self.id, &self.topics);
    }
}

/// The controller's jobs, shared by the HTTP handlers and worker 0.
pub struct Registry {
    lake: Lake,
    inner: Mutex<Inner>,
    commands: Mutex<Sender<Command>>,
    worker0: Mutex<Option<Thread>>,
    peers: AtomicUsize,
    fatal: Mutex<Option<String>>,
    /// Submit-to-running latencies of the latest jobs, in seconds, for the metrics.
    latencies: Mutex<Vec<f64>>,
}

impl Registry {
    /// A registry over `lake`, and the commands it sends, for worker 0 to sequence.
    pub fn new(lake: Lake) -> (Arc<Registry>, Receiver<Command>) {
        let (tx, rx) = channel();
        let r = Registry {
            lake,
            inner: Mutex::new(Inner {
                jobs: BTreeMap::new(),
                streams: BTreeMap::new(),
            }),
            commands: Mutex::new(tx),
            worker0: Mutex::new(None),
            peers: AtomicUsize::new(0),
            fatal: Mutex::new(None),
            latencies: Mutex::new(Vec::new()),
        };
        (Arc::new(r), rx)
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while the lock was held leaves the map as it was: keep using it.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Lists the runs of an earlier server (or of `flowsense backtest`) as ended jobs.
    pub fn load_past(&self, runs: Vec<PastRun>) {
        let mut inner = self.lock();
        for r in runs {
            let kind = match r.mode.as_str() {
                "features" => JobKind::Features,
                "replay" => JobKind::Replay,
                "paper" => JobKind::Paper,
                "live" => JobKind::Live,
                _ => JobKind::Backtest,
            };
            let state = JobState::parse(r.state.as_deref().unwrap_or("finished"));
            inner.jobs.entry(r.id.clone()).or_insert(JobRecord {
                id: r.id,
                spec: r.spec,
                name: r.name,
                kind,
                state,
                submitted: r.started,
                submitted_at: None,
                running_at: None,
                seconds: Some(r.seconds),
                events_final: r.events,
                rows_final: 0,
                errors: r
                    .error
                    .map(|message| JobError {
                        worker: None,
                        message,
                    })
                    .into_iter()
                    .collect(),
                stop: None,
                running: BTreeSet::new(),
                latest: BTreeMap::new(),
                previous: BTreeMap::new(),
                done: BTreeMap::new(),
            });
        }
    }

    /// Worker 0 is up: the cluster has `peers` workers, and `thread` is woken for commands.
    pub fn cluster_started(&self, peers: usize, thread: Thread) {
        if let Ok(mut t) = self.worker0.lock() {
            *t = Some(thread);
        }
        self.peers.store(peers, Ordering::SeqCst);
    }

    /// Workers in the cluster (0 while it starts).
    pub fn peers(&self) -> usize {
        self.peers.load(Ordering::SeqCst)
    }

    /// Whether the cluster takes jobs: `Err` says why not.
    pub fn ready(&self) -> Result<()> {
        if let Some(msg) = self.fatal.lock().ok().and_then(|f| f.clone()) {
            return Err(ServiceError::Unavailable(msg));
        }
        if self.peers() == 0 {
            return Err(ServiceError::Unavailable(
                "the cluster is starting: waiting for every process to connect".into(),
            ));
        }
        Ok(())
    }

    /// The fatal error, if a worker died.
    pub fn fatal_error(&self) -> Option<String> {
        self.fatal.lock().ok().and_then(|f| f.clone())
    }

    /// A worker thread panicked: the cluster can no longer finish jobs. Every job still going
    /// is marked failed with what the user should do.
    pub fn fatal(&self, what: &str) {
        let msg = format!(
            "{what}. The cluster cannot run or finish jobs any more; restart `flowsense serve` \
             (finished jobs are kept in the lake's runs table) and report the bug with this message"
        );
        if let Ok(mut f) = self.fatal.lock() {
            f.get_or_insert(msg.clone());
        }
        let mut inner = self.lock();
        for j in inner.jobs.values_mut() {
            if !j.state.is_final() {
                j.state = JobState::Failed;
                j.errors.push(JobError {
                    worker: None,
                    message: msg.clone(),
                });
            }
        }
    }

    fn send(&self, c: Command) -> Result<()> {
        self.commands
            .lock()
            .map_err(|_| ServiceError::Internal("the command queue is poisoned".into()))?
            .send(c)
            .map_err(|_| ServiceError::Unavailable("the cluster's workers have stopped".into()))?;
        if let Some(t) = self.worker0.lock().ok().and_then(|t| t.clone()) {
            t.unpark();
        }
        Ok(())
    }

    /// Accepts a checked spec: a fresh id, the job recorded as submitted, and its install
    /// command sent. A job of the same name still going is a conflict.
    pub fn submit(&self, spec: JobSpec) -> Result<JobView> {
        self.ready()?;
        let mut inner = self.lock();
        if let Some(j) = inner
            .jobs
            .values()
            .find(|j| j.name == spec.name && !j.state.is_final())
        {
            return Err(ServiceError::Conflict(format!(
                "a job named {:?} is already {} (id {}): stop it first, or rename the job",
                spec.name,
                j.state.name(),
                j.id
            )));
        }
        let base = new_run_id(&spec.name);
        let mut id = base.clone();
        let mut k = 2;
        while inner.jobs.contains_key(&id) {
            id = format!("{base}-{k}");
            k += 1;
        }
        let record = JobRecord {
            id: id.clone(),
            name: spec.name.clone(),
            kind: JobKind::of(&spec),
            state: JobState::Submitted,
            submitted: flowsense_dataflows::backtest::started_rfc3339(),
            submitted_at: Some(Instant::now()),
            running_at: None,
            seconds: None,
            events_final: 0,
            rows_final: 0,
            errors: Vec::new(),
            stop: None,
            running: BTreeSet::new(),
            latest: BTreeMap::new(),
            previous: BTreeMap::new(),
            done: BTreeMap::new(),
            spec: Some(spec.clone()),
        };
        let view = record.view();
        // Sent under the lock, so commands leave in the order the records were made.
        self.send(Command::Install {
            id: id.clone(),
            spec: spec.to_toml(),
        })?;
        inner.jobs.insert(id.clone(), record);
        tracing::info!(job = %id, name = %spec.name, kind = ?view.kind, "job submitted");
        Ok(view)
    }

    /// Subscribes to job `id`'s row `topics` (the others are the caller's to poll): the
    /// workers copy what the job writes on them from now on.
    pub fn subscribe(self: &Arc<Self>, id: &str, topics: &[Topic]) -> Result<Subscription> {
        let mut inner = self.lock();
        let state = inner
            .jobs
            .get(id)
            .map(|j| j.state)
            .ok_or_else(|| ServiceError::NotFound(format!("job {id:?}")))?;
        let topics: Vec<Topic> = topics.iter().copied().filter(|t| t.is_rows()).collect();
        let stream = inner
            .streams
            .entry(id.to_string())
            .or_insert_with(|| JobStream {
                tx: tokio::sync::broadcast::channel(STREAM_BACKLOG).0,
                wanted: BTreeMap::new(),
            });
        let before = stream.topics();
        for t in &topics {
            *stream.wanted.entry(*t).or_default() += 1;
        }
        let after = stream.topics();
        let rx = stream.tx.subscribe();
        if after != before && !state.is_final() {
            // Sent under the lock, so taps leave in the order the subscriptions changed.
            self.send(Command::Tap {
                id: id.to_string(),
                topics: after,
            })?;
        }
        Ok(Subscription {
            rx,
            registry: self.clone(),
            id: id.to_string(),
            topics,
        })
    }

    fn unsubscribe(&self, id: &str, topics: &[Topic]) {
        let mut inner = self.lock();
        let live = inner.jobs.get(id).is_some_and(|j| !j.state.is_final());
        let Some(stream) = inner.streams.get_mut(id) else {
            return;
        };
        let before = stream.topics();
        for t in topics {
            if let Some(n) = stream.wanted.get_mut(t) {
                *n = n.saturating_sub(1);
            }
        }
        let after = stream.topics();
        if stream.tx.receiver_count() <= 1 && after.is_empty() {
            inner.streams.remove(id);
        }
        if after != before && live {
            let _ = self.send(Command::Tap {
                id: id.to_string(),
                topics: after,
            });
        }
    }

    /// Asks every worker to stop job `id`.
    pub fn stop(&self, id: &str, immediate: bool) -> Result<JobView> {
        let mut inner = self.lock();
        let j = inner
            .jobs
            .get_mut(id)
            .ok_or_else(|| ServiceError::NotFound(format!("job {id:?}")))?;
        if j.state.is_final() {
            return Err(ServiceError::Conflict(format!(
                "job {id} has already ended ({})",
                j.state.name()
            )));
        }
        if j.stop == Some(true) || (j.stop.is_some() && !immediate) {
            return Ok(j.view());
        }
        j.stop = Some(immediate);
        j.state = JobState::Stopping;
        tracing::info!(job = %id, immediate, "job stopping");
        let view = j.view();
        self.send(Command::Stop {
            id: id.to_string(),
            immediate,
        })?;
        Ok(view)
    }

    /// The kill switch: every running trading job halts its strategies, cancels every open
    /// order and, with `flatten`, closes its positions. The kill is audited at once in
    /// `risk_events` (run `kill-<UTC time>`, symbol `PORTFOLIO`, naming the jobs), and each
    /// job's traders record their own `kill` rows when they take it; the jobs keep running, halted, until stopped.
    pub fn kill(&self, flatten: bool, who: &str) -> Result<KillView> {
        let at = flowsense_dataflows::backtest::started_rfc3339();
        let why = format!("kill switch pulled by {who} at {at}");
        let jobs: Vec<String> = self
            .lock()
            .jobs
            .values()
            .filter(|j| {
                !j.state.is_final() && j.spec.as_ref().is_some_and(|s| s.strategy.is_some())
            })
            .map(|j| j.id.clone())
            .collect();
        self.send(Command::Kill {
            flatten,
            why: why.clone(),
        })?;
        tracing::warn!(jobs = ?jobs, flatten, "{why}");
        // The audit row is a run of its own (`kill-<time>`), so no stop of a job, however
        // immediate, takes it away.
        let stamp: String = at.chars().filter(char::is_ascii_alphanumeric).collect();
        let audit = || -> flowsense_sinks::Result<()> {
            let mut w =
                flowsense_sinks::RunWriter::new(self.lake.clone(), &format!("kill-{stamp}"), 0)?;
            w.push(TradeRecord::Risk(RiskEvent {
                ts: wall_nanos(),
                symbol: Symbol::new(RiskEvent::PORTFOLIO).expect("a valid symbol"),
                kind: "kill".into(),
                detail: format!(
                    "{why}: jobs [{}] cancel every order, {}, and halt",
                    jobs.join(", "),
                    if flatten {
                        "flatten"
                    } else {
                        "keep their positions"
                    }
                ),
            }))?;
            w.finish()?;
            Ok(())
        };
        audit()
            .map_err(|e| ServiceError::Internal(format!("writing the kill's audit row: {e}")))?;
        Ok(KillView { jobs, flatten, at })
    }

    /// Every job, newest first.
    pub fn jobs(&self) -> Vec<JobView> {
        let inner = self.lock();
        let mut v: Vec<JobView> = inner.jobs.values().map(JobRecord::view).collect();
        v.sort_by(|a, b| (&b.submitted, &b.id).cmp(&(&a.submitted, &a.id)));
        v
    }

    /// One job.
    pub fn job(&self, id: &str) -> Result<JobView> {
        self.with_job(id, JobRecord::view)
    }

    /// Runs `f` on job `id`'s record.
    pub fn with_job<T>(&self, id: &str, f: impl FnOnce(&JobRecord) -> T) -> Result<T> {
        let inner = self.lock();
        inner
            .jobs
            .get(id)
            .map(f)
            .ok_or_else(|| ServiceError::NotFound(format!("job {id:?}")))
    }

    /// Job `id`'s errors.
    pub fn errors(&self, id: &str) -> Result<Vec<JobError>> {
        self.with_job(id, |j| j.errors.clone())
    }

    /// Jobs by state, for the metrics.
    pub fn counts(&self) -> BTreeMap<JobState, u64> {
        let inner = self.lock();
        let mut m: BTreeMap<JobState, u64> = JobState::ALL.iter().map(|s| (*s, 0)).collect();
        for j in inner.jobs.values() {
            *m.entry(j.state).or_default() += 1;
        }
        m
    }

    /// Runs `f` over every job still going (for the metrics).
    pub fn each_live(&self, mut f: impl FnMut(&JobRecord)) {
        let inner = self.lock();
        for j in inner.jobs.values().filter(|j| !j.state.is_final()) {
            f(j);
        }
    }

    /// Submit-to-running latencies so far, in seconds.
    pub fn latencies(&self) -> Vec<f64> {
        self.latencies.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// Takes one worker's report (worker 0 calls it).
    pub fn apply(self: &Arc<Self>, r: Report) {
        let peers = self.peers().max(1);
        let mut inner = self.lock();
        if let ReportEvent::Rows { topic, json } = &r.event {
            if let Some(s) = inner.streams.get(&r.id) {
                let text = format!(
                    "{{\"topic\":\"{}\",\"job\":{},\"worker\":{},\"data\":{json}}}",
                    topic.name(),
                    serde_json::Value::from(r.id.as_str()),
                    r.worker
                );
                // No subscriber left is not an error: the tap stops with the next command.
                let _ = s.tx.send(StreamMessage {
                    topic: *topic,
                    text: text.into(),
                });
            }
            return;
        }
        let Some(j) = inner.jobs.get_mut(&r.id) else {
            return;
        };
        let now = Instant::now();
        match r.event {
            ReportEvent::Rows { .. } => {}
            ReportEvent::Running => {
                j.running.insert(r.worker);
                if j.running.len() == peers && j.state == JobState::Submitted {
                    j.state = JobState::Running;
                    j.running_at = Some(now);
                    if let (Some(t), Ok(mut l)) = (j.submitted_at, self.latencies.lock()) {
                        // The latest 10 000 at most.
                        if l.len() >= 10_000 {
                            l.drain(..5_000);
                        }
                        l.push(now.duration_since(t).as_secs_f64());
                    }
                    tracing::info!(job = %j.id, "job running");
                }
            }
            ReportEvent::Stats(figures) => {
                let s = Sample { at: now, figures };
                if let Some(old) = j.latest.insert(r.worker, s) {
                    j.previous.insert(r.worker, old);
                }
            }
            ReportEvent::Failing(message) => {
                tracing::warn!(job = %j.id, worker = r.worker, error = %message, "job failing");
                j.errors.push(JobError {
                    worker: Some(r.worker),
                    message,
                });
                if j.stop != Some(true) {
                    j.stop = Some(true);
                    let _ = self.send(Command::Stop {
                        id: j.id.clone(),
                        immediate: true,
                    });
                }
            }
            ReportEvent::Done {
                figures,
                trades,
                outcome,
            } => {
                if let Outcome::Failed(m) = &outcome
                    && !j.errors.iter().any(|e| &e.message == m)
                {
                    j.errors.push(JobError {
                        worker: Some(r.worker),
                        message: m.clone(),
                    });
                }
                let s = Sample { at: now, figures };
                if let Some(old) = j.latest.insert(r.worker, s) {
                    j.previous.insert(r.worker, old);
                }
                j.done.insert(r.worker, (trades, outcome));
                if j.done.len() == peers {
                    let job = j.clone();
                    let me = self.clone();
                    // The lake writes block: off worker 0's thread.
                    std::thread::spawn(move || me.commit(job));
                }
            }
        }
    }

    /// Every worker has ended job `j`: write its run to the lake, then set its final state.
    fn commit(&self, mut j: JobRecord) {
        let started = Instant::now();
        let failed = j.done.values().find_map(|(_, o)| match o {
            Outcome::Failed(m) => Some(m.clone()),
            _ => None,
        });
        let discarded = failed.is_some()
            || j.stop == Some(true)
            || j.done.values().any(|(_, o)| *o == Outcome::Discarded);
        let stopped = j.stop.is_some() || j.done.values().any(|(_, o)| *o == Outcome::Stopped);
        let mut state = match (&failed, stopped) {
            (Some(_), _) => JobState::Failed,
            (None, true) => JobState::Stopped,
            (None, false) => JobState::Finished,
        };
        let events: u64 = j.latest.values().map(|s| s.figures.events).sum();
        let rows: u64 = j.latest.values().map(|s| s.figures.rows).sum();
        let seconds = j.running_at.map_or(0.0, |t| t.elapsed().as_secs_f64());
        let mut error = failed.clone();
        let written = (|| -> anyhow::Result<()> {
            let Some(spec) = &j.spec else { return Ok(()) };
            let mut metrics = Vec::new();
            let mut symbols = spec.symbols.clone();
            if j.kind == JobKind::Features && discarded && spec.sinks.lake {
                // Workers remove what they wrote when they discard; a worker that had already
                // committed when another failed has not: nothing of a failed job stays.
                flowsense_sinks::FeatureWriter::new(
                    self.lake.clone(),
                    &spec.name,
                    spec.features.levels,
                )?
                .clear(|_| true)?;
            }
            if j.kind != JobKind::Features {
                if discarded {
                    clear_run(&self.lake, &j.id)?;
                } else {
                    let trades = std::mem::take(&mut j.done)
                        .into_values()
                        .filter_map(|(t, _)| t.map(|t| *t))
                        .collect();
                    let report = combine(spec, &j.id, trades)?;
                    metrics = report.metrics;
                    symbols = report.symbols;
                }
            }
            if !spec.sinks.lake {
                return Ok(());
            }
            let mut row = run_row(spec, &j.id, j.kind.mode(), &symbols, events, seconds)?;
            row.started = j.submitted.clone();
            row.state = Some(state.name().to_string());
            row.error = error.clone();
            write_run(&self.lake, &row, &metrics)?;
            Ok(())
        })();
        if let Err(e) = written {
            let msg = format!("committing the run to the lake: {e:#}");
            tracing::error!(job = %j.id, error = %msg, "job commit failed");
            state = JobState::Failed;
            error.get_or_insert(msg.clone());
            j.errors.push(JobError {
                worker: None,
                message: msg,
            });
        }
        let mut inner = self.lock();
        if let Some(rec) = inner.jobs.get_mut(&j.id) {
            rec.state = state;
            rec.seconds = Some(seconds);
            rec.events_final = events;
            rec.rows_final = rows;
            rec.errors = j.errors;
            rec.latest = j.latest;
            rec.done.clear();
        }
        tracing::info!(job = %j.id, state = state.name(), events, rows, seconds,
            commit_ms = started.elapsed().as_secs_f64() * 1e3, "job ended");
    }
}
