//! `GET /metrics`: Prometheus (OpenMetrics) text of jobs by state, each running job's operators
//! (records, busy seconds, frontier lag) and the HTTP server's requests and latencies.
//!
//! The HTTP figures live for the server's life; the job figures are read from the registry at
//! each scrape, so a job's series end with the job.

use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry as Prom;

use crate::registry::Registry;

/// The labels of an HTTP request.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    /// GET, POST, ...
    pub method: String,
    /// The route as declared (`/api/v1/jobs/{id}`), not the raw path.
    pub route: String,
    /// The response status.
    pub status: u16,
}

/// The labels of a request's latency (by route).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    /// GET, POST, ...
    pub method: String,
    /// The route as declared.
    pub route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct JobLabels {
    job: String,
    name: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OperatorLabels {
    job: String,
    name: String,
    operator: String,
    addr: String,
    worker: String,
}

fn latency_histogram() -> Histogram {
    // 100 us to about 6.5 s.
    Histogram::new(exponential_buckets(0.0001, 2.0, 16))
}

/// The server's long-lived metrics.
#[derive(Clone)]
pub struct Metrics {
    requests: Family<HttpLabels, Counter>,
    latency: Family<RouteLabels, Histogram, fn() -> Histogram>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            requests: Family::default(),
            latency: Family::new_with_constructor(latency_histogram),
        }
    }
}

impl Metrics {
    /// Counts one request and its latency.
    pub fn observe(&self, method: &str, route: &str, status: u16, seconds: f64) {
        self.requests
            .get_or_create(&HttpLabels {
                method: method.to_string(),
                route: route.to_string(),
                status,
            })
            .inc();
        self.latency
            .get_or_create(&RouteLabels {
                method: method.to_string(),
                route: route.to_string(),
            })
            .observe(seconds);
    }

    /// Every metric as OpenMetrics text.
    pub fn render(&self, jobs: &Arc<Registry>) -> String {
        let mut prom = Prom::with_prefix("flowsense");
        prom.register(
            "http_requests",
            "HTTP requests by method, route and status",
            self.requests.clone(),
        );
        prom.register(
            "http_request_duration_seconds",
            "HTTP request latency by method and route",
            self.latency.clone(),
        );
        let states = Family::<StateLabels, Gauge>::default();
        for (s, n) in jobs.counts() {
            states
                .get_or_create(&StateLabels {
                    state: s.name().to_string(),
                })
                .set(n as i64);
        }
        prom.register("jobs", "Jobs by state", states);
        let to_running = latency_histogram();
        for l in jobs.latencies() {
            to_running.observe(l);
        }
        prom.register(
            "job_submit_to_running_seconds",
            "From a submission to every worker running the job",
            to_running,
        );

        let events = Family::<JobLabels, Counter>::default();
        let rows = Family::<JobLabels, Counter>::default();
        let rin = Family::<OperatorLabels, Counter>::default();
        let rout = Family::<OperatorLabels, Counter>::default();
        let busy = Family::<OperatorLabels, Counter<f64>>::default();
        let lag = Family::<OperatorLabels, Gauge<f64, std::sync::atomic::AtomicU64>>::default();
        jobs.each_live(|j| {
            let id = j.view().id;
            let jl = JobLabels {
                job: id.clone(),
                name: j.name().to_string(),
            };
            for (worker, _, figures, _) in j.samples() {
                events.get_or_create(&jl).inc_by(figures.events);
                rows.get_or_create(&jl).inc_by(figures.rows);
                for op in figures.operators.iter().filter(|o| o.addr.contains('.')) {
                    let l = OperatorLabels {
                        job: id.clone(),
                        name: j.name().to_string(),
                        operator: op.name.clone(),
                        addr: op.addr.clone(),
                        worker: worker.to_string(),
                    };
                    rin.get_or_create(&l).inc_by(op.records_in);
                    rout.get_or_create(&l).inc_by(op.records_out);
                    busy.get_or_create(&l).inc_by(op.busy_ns as f64 / 1e9);
                    if let Some(ns) = op.frontier_lag_ns {
                        lag.get_or_create(&l).set(ns as f64 / 1e9);
                    }
                }
            }
        });
        prom.register("job_events", "Market events fed into a running job", events);
        prom.register("job_rows", "Output rows a running job has written", rows);
        prom.register(
            "operator_records_in",
            "Records an operator of a running job received",
            rin,
        );
        prom.register(
            "operator_records_out",
            "Records an operator of a running job sent",
            rout,
        );
        prom.register(
            "operator_busy_seconds",
            "Seconds an operator of a running job was scheduled",
            busy,
        );
        prom.register(
            "operator_frontier_lag_seconds",
            "How far an operator's output frontier trails the input's event time",
            lag,
        );
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &prom);
        out
    }
}
