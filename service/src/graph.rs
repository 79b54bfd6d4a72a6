//! A job's dataflow as a graph for the API: operators as nodes (with the stages inside them),
//! channels as edges, each with records in and out, rates, busy ratio and frontier lag, summed
//! over workers and per worker, computed from the workers' last two reports (Flink's vertex
//! view is the model).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::protocol::WorkerFigures;
use crate::registry::{JobRecord, JobState};

/// A job's graph.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct GraphView {
    /// The job's id.
    pub job: String,
    /// The job's state.
    pub state: JobState,
    /// Workers that reported figures.
    pub workers: usize,
    /// Operators, in address order.
    pub nodes: Vec<GraphNode>,
    /// Channels between operators, summed over workers.
    pub edges: Vec<GraphEdge>,
}

/// One operator, over every worker.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct GraphNode {
    /// The operator's address in its dataflow (`2.3`): the node's id.
    pub id: String,
    /// The operator's name (`OrderFlowFeatures`, `Trade`, `FeatureSink`, ...).
    pub name: String,
    /// What runs inside the operator (book, features, strategy, risk, execution, portfolio,
    /// sinks).
    pub stages: Vec<String>,
    /// Records received, over workers.
    pub records_in: u64,
    /// Records sent, over workers.
    pub records_out: u64,
    /// Records received per second over the last interval, over workers.
    pub records_in_per_s: f64,
    /// Records sent per second over the last interval, over workers.
    pub records_out_per_s: f64,
    /// Milliseconds the operator was scheduled, over workers.
    pub busy_ms: f64,
    /// Share of the last interval the operator was busy, the mean over workers (0 to 1).
    pub busy_ratio: f64,
    /// The largest frontier lag over workers: how far the operator's output frontier trails
    /// the input's event time, in milliseconds (absent where it is not sampled).
    pub frontier_lag_ms: Option<f64>,
    /// The same figures per worker.
    pub per_worker: Vec<WorkerNode>,
}

/// One operator on one worker.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct WorkerNode {
    /// Global worker index.
    pub worker: usize,
    /// Records received.
    pub records_in: u64,
    /// Records sent.
    pub records_out: u64,
    /// Records received per second over the last interval.
    pub records_in_per_s: f64,
    /// Records sent per second over the last interval.
    pub records_out_per_s: f64,
    /// Share of the last interval the operator was busy (0 to 1).
    pub busy_ratio: f64,
    /// Frontier lag in milliseconds, where sampled.
    pub frontier_lag_ms: Option<f64>,
}

/// One channel, over every worker.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct GraphEdge {
    /// The sending operator's id.
    pub source: String,
    /// The receiving operator's id.
    pub target: String,
    /// What it carries.
    pub kind: String,
    /// Records sent, over workers.
    pub records: u64,
    /// Records sent per second over the last interval, over workers.
    pub records_per_s: f64,
}

/// The stages inside an operator, by its name.
pub fn stages_of(name: &str) -> Vec<String> {
    let s: &[&str] = match name {
        "Input" => &["source"],
        "OrderFlowFeatures" => &["book", "features"],
        "Trade" => &[
            "book",
            "features",
            "strategy",
            "risk",
            "execution",
            "portfolio",
        ],
        "FeatureSink" | "TradeSink" => &["sinks"],
        _ => &[],
    };
    s.iter().map(|x| x.to_string()).collect()
}

fn rate(now: u64, before: Option<u64>, dt: f64) -> f64 {
    match before {
        Some(b) if dt > 0.0 => now.saturating_sub(b) as f64 / dt,
        _ => 0.0,
    }
}

/// The graph of a job from its workers' figures.
pub fn graph_of(job: &JobRecord, id: &str) -> GraphView {
    let samples = job.samples();
    let mut nodes: BTreeMap<(Vec<usize>, String), GraphNode> = BTreeMap::new();
    let mut edges: BTreeMap<(String, String, String), GraphEdge> = BTreeMap::new();
    for (worker, dt, now, before) in &samples {
        add_worker(&mut nodes, &mut edges, *worker, *dt, now, *before);
    }
    let mut nodes: Vec<GraphNode> = nodes.into_values().collect();
    for n in &mut nodes {
        let w = n.per_worker.len().max(1) as f64;
        n.busy_ratio = n.per_worker.iter().map(|p| p.busy_ratio).sum::<f64>() / w;
    }
    let ids: std::collections::BTreeSet<&str> = nodes.iter().map(|n| n.id.as_str()).collect();
    let edges = edges
        .into_values()
        .filter(|e| ids.contains(e.source.as_str()) && ids.contains(e.target.as_str()))
        .collect();
    GraphView {
        job: id.to_string(),
        state: job.state(),
        workers: samples.len(),
        nodes,
        edges,
    }
}

fn add_worker(
    nodes: &mut BTreeMap<(Vec<usize>, String), GraphNode>,
    edges: &mut BTreeMap<(String, String, String), GraphEdge>,
    worker: usize,
    dt: f64,
    now: &WorkerFigures,
    before: Option<&WorkerFigures>,
) {
    let numeric =
        |addr: &str| -> Vec<usize> { addr.split('.').filter_map(|p| p.parse().ok()).collect() };
    for op in &now.operators {
        // The dataflow's own scope (a one-part address) is not an operator of the job.
        if !op.addr.contains('.') {
            continue;
        }
        let prev = before.and_then(|b| b.operators.iter().find(|o| o.addr == op.addr));
        let busy_ratio = match prev {
            Some(p) if dt > 0.0 => {
                (op.busy_ns.saturating_sub(p.busy_ns) as f64 / (dt * 1e9)).clamp(0.0, 1.0)
            }
            _ => 0.0,
        };
        let lag = op.frontier_lag_ns.map(|l| l as f64 / 1e6);
        let w = WorkerNode {
            worker,
            records_in: op.records_in,
            records_out: op.records_out,
            records_in_per_s: rate(op.records_in, prev.map(|p| p.records_in), dt),
            records_out_per_s: rate(op.records_out, prev.map(|p| p.records_out), dt),
            busy_ratio,
            frontier_lag_ms: lag,
        };
        let n = nodes
            .entry((numeric(&op.addr), op.addr.clone()))
            .or_insert_with(|| GraphNode {
                id: op.addr.clone(),
                name: op.name.clone(),
                stages: stages_of(&op.name),
                records_in: 0,
                records_out: 0,
                records_in_per_s: 0.0,
                records_out_per_s: 0.0,
                busy_ms: 0.0,
                busy_ratio: 0.0,
                frontier_lag_ms: None,
                per_worker: Vec::new(),
            });
        n.records_in += w.records_in;
        n.records_out += w.records_out;
        n.records_in_per_s += w.records_in_per_s;
        n.records_out_per_s += w.records_out_per_s;
        n.busy_ms += op.busy_ns as f64 / 1e6;
        n.frontier_lag_ms = match (n.frontier_lag_ms, lag) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        n.per_worker.push(w);
    }
    for ch in &now.channels {
        let node = |end: &str| end.rsplit_once(':').map_or(end, |(a, _)| a).to_string();
        let (source, target) = (node(&ch.source), node(&ch.target));
        let prev = before.and_then(|b| {
            b.channels
                .iter()
                .find(|c| c.source == ch.source && c.target == ch.target)
        });
        let e = edges
            .entry((source.clone(), target.clone(), ch.typ.clone()))
            .or_insert_with(|| GraphEdge {
                source,
                target,
                kind: ch.typ.clone(),
                records: 0,
                records_per_s: 0.0,
            });
        e.records += ch.records_sent;
        e.records_per_s += rate(ch.records_sent, prev.map(|p| p.records_sent), dt);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stages_name_what_runs_inside() {
        assert_eq!(stages_of("OrderFlowFeatures"), ["book", "features"]);
        assert_eq!(stages_of("Trade").len(), 6);
        assert!(stages_of("Exchange").is_empty());
    }

    #[test]
    fn rates_need_two_samples() {
        assert_eq!(rate(10, None, 1.0), 0.0);
        assert_eq!(rate(30, Some(10), 2.0), 10.0);
    }
}
