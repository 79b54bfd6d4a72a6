//! A blocking client of the API, for the CLI (`flowsense submit`, `jobs`, `job`, `stop`,
//! `sql --server`): each call is one HTTP request; an error response becomes an error carrying
//! the server's message.

use std::time::Duration;

use anyhow::Context;
use arrow::record_batch::RecordBatch;
use serde::de::DeserializeOwned;

use crate::api::{ARROW_STREAM, Submitted};
use crate::graph::GraphView;
use crate::registry::{JobError, JobView};

/// The server the CLI talks to when none is given.
pub const DEFAULT_SERVER: &str = "http://127.0.0.1:7878";

/// A client of one server.
///
/// ```no_run
/// let c = flowsense_service::client::Client::new("http://127.0.0.1:7878");
/// for job in c.jobs()? {
///     println!("{} {:?}", job.id, job.state);
/// }
/// # Ok::<(), anyhow::Error>(())
/// ```
pub struct Client {
    base: String,
    agent: ureq::Agent,
}

impl Client {
    /// A client of the server at `base` (`http://host:port`).
    pub fn new(base: &str) -> Client {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(600)))
            .build()
            .into();
        Client {
            base: base.trim_end_matches('/').to_string(),
            agent,
        }
    }

    /// The server's URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    fn url(&self, path: &str) -> String {
        format!("{}/api/v1{path}", self.base)
    }

    fn read<T: DeserializeOwned>(
        &self,
        what: &str,
        r: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    ) -> anyhow::Result<T> {
        let mut r = r.with_context(|| format!("{what}: cannot reach {}", self.base))?;
        let status = r.status();
        let text = r
            .body_mut()
            .read_to_string()
            .with_context(|| format!("{what}: reading the answer"))?;
        if !status.is_success() {
            let msg = serde_json::from_str::<crate::error::ErrorBody>(&text)
                .map(|e| e.error)
                .unwrap_or(text);
            anyhow::bail!("{what}: the server answered {status}: {msg}");
        }
        serde_json::from_str(&text).with_context(|| format!("{what}: reading the answer"))
    }

    /// Submits a job spec (TOML); returns its id.
    pub fn submit(&self, spec_toml: &str) -> anyhow::Result<Submitted> {
        let r = self
            .agent
            .post(self.url("/jobs"))
            .header("content-type", "application/toml")
            .send(spec_toml);
        self.read("submitting the job", r)
    }

    /// Every job.
    pub fn jobs(&self) -> anyhow::Result<Vec<JobView>> {
        self.read("listing jobs", self.agent.get(self.url("/jobs")).call())
    }

    /// One job.
    pub fn job(&self, id: &str) -> anyhow::Result<JobView> {
        self.read(
            &format!("job {id}"),
            self.agent.get(self.url(&format!("/jobs/{id}"))).call(),
        )
    }

    /// A job's graph.
    pub fn graph(&self, id: &str) -> anyhow::Result<GraphView> {
        self.read(
            &format!("job {id}'s graph"),
            self.agent
                .get(self.url(&format!("/jobs/{id}/graph")))
                .call(),
        )
    }

    /// A job's errors.
    pub fn errors(&self, id: &str) -> anyhow::Result<Vec<JobError>> {
        self.read(
            &format!("job {id}'s errors"),
            self.agent
                .get(self.url(&format!("/jobs/{id}/errors")))
                .call(),
        )
    }

    /// Stops a job.
    pub fn stop(&self, id: &str, immediate: bool) -> anyhow::Result<JobView> {
        let mode = if immediate { "immediate" } else { "graceful" };
        let r = self
            .agent
            .post(self.url(&format!("/jobs/{id}/stop?mode={mode}")))
            .send_empty();
        self.read(&format!("stopping job {id}"), r)
    }

    /// Pulls the kill switch (`POST /kill`): every trading job halts and cancels its orders;
    /// with `flatten` it also closes its positions.
    pub fn kill(&self, flatten: bool) -> anyhow::Result<crate::registry::KillView> {
        let r = self
            .agent
            .post(self.url("/kill"))
            .header("User-Agent", "flowsense kill")
            .content_type("application/json")
            .send(format!("{{\"flatten\": {flatten}}}"));
        self.read("the kill switch", r)
    }

    /// Waits until job `id` has ended, polling; returns its last view.
    pub fn wait(&self, id: &str, timeout: Duration) -> anyhow::Result<JobView> {
        let start = std::time::Instant::now();
        loop {
            let j = self.job(id)?;
            if j.state.is_final() {
                return Ok(j);
            }
            anyhow::ensure!(
                start.elapsed() < timeout,
                "job {id} is still {} after {timeout:?}",
                j.state.name()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Runs a query on the server; the result comes back as Arrow.
    pub fn sql(&self, sql: &str) -> anyhow::Result<Vec<RecordBatch>> {
        let mut r = self
            .agent
            .post(self.url("/sql"))
            .header("content-type", "text/plain")
            .header("accept", ARROW_STREAM)
            .send(sql)
            .with_context(|| format!("the query: cannot reach {}", self.base))?;
        let status = r.status();
        let body = r.body_mut().read_to_vec().context("reading the result")?;
        if !status.is_success() {
            let text = String::from_utf8_lossy(&body).to_string();
            let msg = serde_json::from_str::<crate::error::ErrorBody>(&text)
                .map(|e| e.error)
                .unwrap_or(text);
            anyhow::bail!("{msg}");
        }
        let reader = arrow::ipc::reader::StreamReader::try_new(std::io::Cursor::new(body), None)
            .context("reading the Arrow result")?;
        reader
            .collect::<Result<Vec<_>, _>>()
            .context("reading the Arrow result")
    }
}

/// Jobs as a table for people.
pub fn jobs_table(jobs: &[JobView]) -> String {
    let mut t = comfy_table::Table::new();
    t.load_preset(comfy_table::presets::UTF8_FULL_CONDENSED);
    t.set_header([
        "id",
        "name",
        "kind",
        "state",
        "submitted",
        "seconds",
        "events",
        "rows",
        "error",
    ]);
    for j in jobs {
        t.add_row([
            j.id.clone(),
            j.name.clone(),
            format!("{:?}", j.kind).to_lowercase(),
            j.state.name().to_string(),
            j.submitted.clone(),
            j.seconds.map_or("-".into(), |s| format!("{s:.1}")),
            j.events.to_string(),
            j.rows.to_string(),
            j.error.clone().unwrap_or_default(),
        ]);
    }
    t.to_string()
}

/// A job's graph as a table for people: one row per operator.
pub fn graph_table(g: &GraphView) -> String {
    let mut t = comfy_table::Table::new();
    t.load_preset(comfy_table::presets::UTF8_FULL_CONDENSED);
    t.set_header([
        "operator",
        "addr",
        "stages",
        "records in",
        "records out",
        "out/s",
        "busy %",
        "frontier lag ms",
        "workers",
    ]);
    for n in &g.nodes {
        t.add_row([
            n.name.clone(),
            n.id.clone(),
            n.stages.join(","),
            n.records_in.to_string(),
            n.records_out.to_string(),
            format!("{:.0}", n.records_out_per_s),
            format!("{:.1}", n.busy_ratio * 100.0),
            n.frontier_lag_ms.map_or("-".into(), |l| format!("{l:.1}")),
            n.per_worker.len().to_string(),
        ]);
    }
    t.to_string()
}
