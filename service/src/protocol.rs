//! What the controller and the workers say to each other: commands go out through timely's
//! `Sequencer` (every worker of every process sees them in one order), reports come back to
//! worker 0 over a dataflow of their own.

use flowsense_dataflows::backtest::WorkerTrades;
use flowsense_dataflows::monitor::{ChannelStats, OperatorStats};
use serde::{Deserialize, Serialize};

/// A command every worker carries out, in the order the sequencer gives.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Command {
    /// Build job `id`'s dataflow from its spec (TOML) and start feeding it.
    Install {
        /// The job's id (its run id in the lake).
        id: String,
        /// The job spec, as TOML.
        spec: String,
    },
    /// Stop job `id`: its sources stop and what is in flight drains; `immediate` also throws
    /// away its output (nothing it wrote stays in the lake).
    Stop {
        /// The job's id.
        id: String,
        /// Discard the output instead of committing it.
        immediate: bool,
    },
}

/// How a job ended on one worker.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Outcome {
    /// Its source ran to the end and its sinks committed.
    Finished,
    /// Stopped gracefully: the source stopped early, its sinks committed.
    Stopped,
    /// Stopped immediately: its output was discarded.
    Discarded,
    /// It failed with this message; its output was discarded.
    Failed(String),
}

/// What one worker says about one job.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Report {
    /// The job's id.
    pub id: String,
    /// The worker's global index.
    pub worker: usize,
    /// What happened.
    pub event: ReportEvent,
}

/// The events of a job on a worker.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum ReportEvent {
    /// The dataflow is built and its source open.
    Running,
    /// The job's figures on this worker (sent about once a second).
    Stats(WorkerFigures),
    /// The job failed here; the controller stops it everywhere.
    Failing(String),
    /// The job has ended on this worker.
    Done {
        /// Its last figures.
        figures: WorkerFigures,
        /// A trading job's part of the run, to combine.
        trades: Option<Box<WorkerTrades>>,
        /// How it ended.
        outcome: Outcome,
    },
}

/// A worker's figures of one job.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct WorkerFigures {
    /// Market events fed in so far.
    pub events: u64,
    /// Output rows (feature rows, or trading records) so far.
    pub rows: u64,
    /// Rows the readers refused.
    pub dead_letters: u64,
    /// The job's operators.
    pub operators: Vec<OperatorStats>,
    /// The job's channels.
    pub channels: Vec<ChannelStats>,
}
