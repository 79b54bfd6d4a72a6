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
    /// Copy what job `id` writes on `topics` to the controller from now on (an empty list
    /// stops the copying): the WebSocket stream's subscribers want them.
    Tap {
        /// The job's id.
        id: String,
        /// The row topics wanted.
        topics: Vec<Topic>,
    },
    /// Stop job `id`: its sources stop and what is in flight drains; `immediate` also throws
    /// away its output (nothing it wrote stays in the lake).
    Stop {
        /// The job's id.
        id: String,
        /// Discard the output instead of committing it.
        immediate: bool,
    },
    /// The kill switch: every trading job halts its strategies, cancels every open order and,
    /// with `flatten`, closes its positions.
    Kill {
        /// Close the positions too.
        flatten: bool,
        /// Who pulled it and when, for the risk events.
        why: String,
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
    /// Rows the job wrote here on a tapped topic, as a JSON array (the lake's columns for
    /// table topics).
    Rows {
        /// Which topic.
        topic: Topic,
        /// A JSON array of objects.
        json: String,
    },
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

/// What the WebSocket stream sends: a job's figures, or the rows it writes.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Topic {
    /// The job's graph and its figures, each second.
    Graph,
    /// The job's state and counts, each second.
    Job,
    /// A feature job's rows of the `features` table, as written.
    Features,
    /// A trading job's `orders` rows, as written.
    Orders,
    /// A trading job's `fills` rows, as written.
    Fills,
    /// A trading job's `equity` rows, as written.
    Equity,
    /// A trading job's `positions` rows, as written.
    Positions,
    /// A trading job's `risk_events` rows, as written.
    RiskEvents,
    /// A paced job's order books, the top 10 levels of each symbol that changed, at most
    /// every 250 ms.
    Book,
    /// A paced job's market trades, as they go in (the tape).
    Trades,
}

impl Topic {
    /// Every topic, in the order the API lists them.
    pub const ALL: [Topic; 10] = [
        Topic::Graph,
        Topic::Job,
        Topic::Features,
        Topic::Orders,
        Topic::Fills,
        Topic::Equity,
        Topic::Positions,
        Topic::RiskEvents,
        Topic::Book,
        Topic::Trades,
    ];

    /// The topic's name as the API writes it.
    ///
    /// ```
    /// use flowsense_service::protocol::Topic;
    /// assert_eq!(Topic::RiskEvents.name(), "risk_events");
    /// assert_eq!(Topic::parse("fills"), Some(Topic::Fills));
    /// ```
    pub fn name(self) -> &'static str {
        match self {
            Topic::Graph => "graph",
            Topic::Job => "job",
            Topic::Features => "features",
            Topic::Orders => "orders",
            Topic::Fills => "fills",
            Topic::Equity => "equity",
            Topic::Positions => "positions",
            Topic::RiskEvents => "risk_events",
            Topic::Book => "book",
            Topic::Trades => "trades",
        }
    }

    /// The topic of a name, if it is one.
    pub fn parse(s: &str) -> Option<Topic> {
        Topic::ALL.into_iter().find(|t| t.name() == s)
    }

    /// Whether the workers send it (rows as they are written), rather than the controller
    /// each second (figures).
    pub fn is_rows(self) -> bool {
        !matches!(self, Topic::Graph | Topic::Job)
    }

    /// Whether it is a trading job's table.
    pub fn is_trading(self) -> bool {
        matches!(
            self,
            Topic::Orders | Topic::Fills | Topic::Equity | Topic::Positions | Topic::RiskEvents
        )
    }

    /// Whether only a paced job (`[replay]`) streams it: a batch job's book moves faster than
    /// any screen, and keeping a second book would slow it.
    pub fn paced_only(self) -> bool {
        matches!(self, Topic::Book | Topic::Trades)
    }
}
