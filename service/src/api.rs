//! The HTTP API under `/api/v1`: jobs (submit, list, show, stop, errors, graph, output), SQL
//! over the lake, the tables, a WebSocket stream of a job's figures, health, readiness and
//! Prometheus metrics, with the OpenAPI 3.1 document generated from these handlers (utoipa)
//! and a Scalar page to read it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{MatchedPath, Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use flowsense_core::job::{JobSpec, Source};
use flowsense_core::{Lake, Table};
use flowsense_sql::LakeSession;
use serde::{Deserialize, Serialize};
use utoipa::{OpenApi, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use utoipa_scalar::{Scalar, Servable};

use crate::error::{ErrorBody, Result, ServiceError};
use crate::graph::{GraphView, graph_of};
use crate::metrics::Metrics;
use crate::protocol::Topic;
use crate::registry::{JobError, JobKind, JobView, KillView, Registry, Subscription};
use tokio::sync::broadcast::error::RecvError;

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    /// The jobs.
    pub registry: Arc<Registry>,
    /// The lake jobs read and write, and SQL reads.
    pub lake: Lake,
    /// Where the lake is, as the user gave it (for messages).
    pub lake_url: String,
    /// One DataFusion session over the lake, shared by every query.
    pub sql: Arc<LakeSession>,
    /// HTTP metrics.
    pub metrics: Metrics,
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "FlowSense",
        description = "Submit, watch and stop dataflow jobs on a FlowSense cluster; query its lake with SQL."
    ),
    tags((name = "jobs", description = "Dataflow jobs"), (name = "lake", description = "SQL over the lake"),
         (name = "service", description = "Health, readiness and metrics")),
    components(schemas(StreamMessageDoc, crate::protocol::Topic, crate::tap::BookLevels, crate::tap::TapeTrade))
)]
struct ApiDoc;

/// The API's routes under `/api/v1` and the OpenAPI document that describes them.
fn api_parts() -> (Router<AppState>, utoipa::openapi::OpenApi) {
    let v1 = OpenApiRouter::new()
        .routes(routes!(submit_job, list_jobs))
        .routes(routes!(get_job))
        .routes(routes!(stop_job))
        .routes(routes!(kill))
        .routes(routes!(job_errors))
        .routes(routes!(job_graph))
        .routes(routes!(job_spec))
        .routes(routes!(job_output))
        .routes(routes!(run_report))
        .routes(routes!(run_sql))
        .routes(routes!(list_tables))
        .routes(routes!(health))
        .routes(routes!(ready))
        .routes(routes!(metrics))
        .routes(routes!(stream));
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .nest("/api/v1", v1)
        .split_for_parts()
}

/// The OpenAPI 3.1 document of the API (`flowsense openapi` prints it; the UI's types are
/// generated from it).
pub fn openapi() -> utoipa::openapi::OpenApi {
    api_parts().1
}

/// The service's router: the API under `/api/v1`, its OpenAPI document and Scalar page,
/// `/metrics` as Prometheus expects it, and the web UI at `/`.
pub fn router(state: AppState) -> Router {
    let (api, doc) = api_parts();
    let doc_json = Arc::new(doc.clone());
    api.route(
        "/api/v1/openapi.json",
        axum::routing::get(move || {
            let d = doc_json.clone();
            async move { Json((*d).clone()) }
        }),
    )
    .merge(Scalar::with_url("/api/v1/docs", doc))
    .route("/metrics", axum::routing::get(metrics))
    .merge(crate::ui::routes())
    .fallback(not_found)
    .layer(axum::middleware::from_fn_with_state(state.clone(), observe))
    .layer(tower_http::trace::TraceLayer::new_for_http())
    .with_state(state)
}

async fn not_found(req: Request) -> ServiceError {
    ServiceError::NotFound(format!(
        "{} {}: no such endpoint; the API is described at /api/v1/openapi.json",
        req.method(),
        req.uri().path()
    ))
}

/// Counts every request and its latency by its route.
async fn observe(State(s): State<AppState>, req: Request, next: Next) -> Response {
    let start = Instant::now();
    let method = req.method().to_string();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched".to_string(), |p| p.as_str().to_string());
    let resp = next.run(req).await;
    s.metrics.observe(
        &method,
        &route,
        resp.status().as_u16(),
        start.elapsed().as_secs_f64(),
    );
    resp
}

/// What `POST /jobs` answers.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Submitted {
    /// The new job's id.
    pub id: String,
    /// Its state (`submitted`).
    pub state: crate::registry::JobState,
}

/// Reads a job spec from a request body: TOML, or JSON of the same spec when the content type
/// says JSON (or the body starts with `{`).
pub fn parse_spec(content_type: Option<&str>, body: &[u8]) -> Result<JobSpec> {
    let text = std::str::from_utf8(body)
        .map_err(|e| ServiceError::BadRequest(format!("the body is not UTF-8: {e}")))?;
    if text.trim().is_empty() {
        return Err(ServiceError::BadRequest(
            "the body is empty: send the job spec as TOML (or as JSON of the same spec)".into(),
        ));
    }
    let json = match content_type {
        Some(c) if c.contains("json") => true,
        Some(c) if c.contains("toml") || c.starts_with("text/") => false,
        _ => text.trim_start().starts_with('{'),
    };
    if json {
        let spec: JobSpec = serde_json::from_str(text)
            .map_err(|e| ServiceError::BadRequest(format!("the job spec (JSON): {e}")))?;
        spec.validate()
            .map_err(|e| ServiceError::BadRequest(e.to_string()))?;
        Ok(spec)
    } else {
        JobSpec::from_toml(text).map_err(|e| ServiceError::BadRequest(e.to_string()))
    }
}

/// Checks that a job's source exists before anything is installed.
async fn check_source(spec: &JobSpec, lake: &Lake, lake_url: &str) -> Result<()> {
    match &spec.source {
        Source::Capture(c) => {
            for p in &c.paths {
                if !std::path::Path::new(p).exists() {
                    return Err(ServiceError::Unprocessable(format!(
                        "source.capture.paths: {p:?} does not exist on the server"
                    )));
                }
            }
        }
        Source::Lake(l) => {
            let (lake, url) = match &l.url {
                Some(u) => (
                    Lake::open(u, &Default::default()).map_err(|e| {
                        ServiceError::Unprocessable(format!("source.lake.url {u:?}: {e}"))
                    })?,
                    u.as_str(),
                ),
                None => (lake.clone(), lake_url),
            };
            let mut any = false;
            for t in [
                Table::BookEvents,
                Table::DepthUpdates,
                Table::Trades,
                Table::Bars,
            ] {
                let files = lake.list_table(t).await.map_err(|e| {
                    ServiceError::Unprocessable(format!("source.lake: listing {url}: {e}"))
                })?;
                if !files.is_empty() {
                    any = true;
                    break;
                }
            }
            if !any {
                return Err(ServiceError::Unprocessable(format!(
                    "source.lake: the lake at {url} holds no market data; ingest some first \
                     (flowsense ingest, or flowsense demo)"
                )));
            }
        }
        // A live feed is opened by the worker; one that cannot be reached fails the job with
        // the connection's error.
        Source::Synthetic(_) | Source::Live(_) => {}
    }
    Ok(())
}

/// Submit a job: the body is the job spec as TOML (as `flowsense run` reads it), or JSON of
/// the same spec.
#[utoipa::path(post, path = "/jobs", tag = "jobs",
    request_body(description = "The job spec: TOML (as `flowsense run` reads it), or JSON of the same spec",
        content(
            (String = "application/toml"),
            (String = "text/plain"),
            (Object = "application/json"))),
    responses(
        (status = 201, description = "Accepted", body = Submitted),
        (status = 400, description = "The spec does not parse, or a key or value is wrong", body = ErrorBody),
        (status = 409, description = "A job of that name is still going", body = ErrorBody),
        (status = 422, description = "The job's source does not exist", body = ErrorBody),
        (status = 503, description = "The cluster cannot take jobs", body = ErrorBody),
    ))]
async fn submit_job(
    State(s): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<(StatusCode, Json<Submitted>)> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let spec = parse_spec(ct, &body)?;
    s.registry.ready()?;
    check_source(&spec, &s.lake, &s.lake_url).await?;
    let view = s.registry.submit(spec)?;
    Ok((
        StatusCode::CREATED,
        Json(Submitted {
            id: view.id,
            state: view.state,
        }),
    ))
}

/// Every job this server ran or runs, and the runs recorded in the lake, newest first.
#[utoipa::path(get, path = "/jobs", tag = "jobs",
    responses((status = 200, description = "The jobs", body = [JobView])))]
async fn list_jobs(State(s): State<AppState>) -> Json<Vec<JobView>> {
    Json(s.registry.jobs())
}

/// One job.
#[utoipa::path(get, path = "/jobs/{id}", tag = "jobs",
    params(("id" = String, Path, description = "The job's id")),
    responses((status = 200, description = "The job", body = JobView),
        (status = 404, description = "No such job", body = ErrorBody)))]
async fn get_job(State(s): State<AppState>, Path(id): Path<String>) -> Result<Json<JobView>> {
    Ok(Json(s.registry.job(&id)?))
}

/// How to stop a job.
// Documents the query in the OpenAPI document; the handler reads it by hand, so that a bad
// value gets the API's JSON error rather than axum's text one.
#[allow(dead_code)]
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct StopParams {
    /// `graceful` (default: the source stops, what is in flight drains, sinks commit) or
    /// `immediate` (the output is discarded).
    mode: Option<String>,
}

/// Stop a job.
#[utoipa::path(post, path = "/jobs/{id}/stop", tag = "jobs",
    params(("id" = String, Path, description = "The job's id"), StopParams),
    responses((status = 202, description = "Stopping", body = JobView),
        (status = 400, description = "Unknown mode", body = ErrorBody),
        (status = 404, description = "No such job", body = ErrorBody),
        (status = 409, description = "The job has already ended", body = ErrorBody)))]
async fn stop_job(
    State(s): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<(StatusCode, Json<JobView>)> {
    let immediate = match q.get("mode").map(String::as_str) {
        None | Some("graceful") => false,
        Some("immediate") => true,
        Some(other) => {
            return Err(ServiceError::BadRequest(format!(
                "mode={other:?}: use graceful or immediate"
            )));
        }
    };
    Ok((StatusCode::ACCEPTED, Json(s.registry.stop(&id, immediate)?)))
}

/// What the kill switch is asked to do.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct KillRequest {
    /// Also close every position with market orders (default: keep them).
    #[serde(default)]
    pub flatten: bool,
}

/// The kill switch: every running trading job halts its strategies, cancels every open order
/// at its broker and, with `flatten`, closes its positions. The jobs keep running, halted,
/// until they are stopped; the kill is audited in `risk_events`. The body may be empty (no
/// flattening).
#[utoipa::path(post, path = "/kill", tag = "jobs",
    request_body(content = KillRequest, description = "`{\"flatten\": true}`, or nothing"),
    responses((status = 200, description = "The jobs halted", body = KillView),
        (status = 400, description = "A body that is not a KillRequest", body = ErrorBody)))]
async fn kill(
    State(s): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<KillView>> {
    let req: KillRequest = if body.iter().all(u8::is_ascii_whitespace) {
        KillRequest::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| {
            ServiceError::BadRequest(format!(
                "the kill request: {e} (send {{\"flatten\": true}} or nothing)"
            ))
        })?
    };
    let who = headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("an API client");
    let registry = s.registry.clone();
    let who = format!("POST /api/v1/kill ({who})");
    let view = tokio::task::spawn_blocking(move || registry.kill(req.flatten, &who))
        .await
        .map_err(|e| ServiceError::Internal(format!("the kill switch: {e}")))??;
    Ok(Json(view))
}

/// A job's errors.
#[utoipa::path(get, path = "/jobs/{id}/errors", tag = "jobs",
    params(("id" = String, Path, description = "The job's id")),
    responses((status = 200, description = "Its errors, first first", body = [JobError]),
        (status = 404, description = "No such job", body = ErrorBody)))]
async fn job_errors(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Vec<JobError>>> {
    Ok(Json(s.registry.errors(&id)?))
}

/// A job's dataflow as a graph, with each operator's figures over workers and per worker.
#[utoipa::path(get, path = "/jobs/{id}/graph", tag = "jobs",
    params(("id" = String, Path, description = "The job's id")),
    responses((status = 200, description = "The graph", body = GraphView),
        (status = 404, description = "No such job", body = ErrorBody)))]
async fn job_graph(State(s): State<AppState>, Path(id): Path<String>) -> Result<Json<GraphView>> {
    Ok(Json(s.registry.with_job(&id, |j| graph_of(j, &id))?))
}

/// The spec a job was submitted with (a past run's from the lake's `runs` table), every
/// default filled in: JSON (default) or TOML (`Accept: application/toml`), as `flowsense run`
/// reads it.
#[utoipa::path(get, path = "/jobs/{id}/spec", tag = "jobs",
    params(("id" = String, Path, description = "The job's id")),
    responses((status = 200, description = "The spec", content((Object = "application/json"), (String = "application/toml"))),
        (status = 404, description = "No such job", body = ErrorBody)))]
async fn job_spec(
    State(s): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response> {
    let spec = s
        .registry
        .with_job(&id, |j| j.spec().cloned())?
        .ok_or_else(|| {
            ServiceError::NotFound(format!(
                "job {id}: its spec in the lake's runs table does not parse any more"
            ))
        })?;
    let toml = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("toml"));
    Ok(if toml {
        ([(header::CONTENT_TYPE, "application/toml")], spec.to_toml()).into_response()
    } else {
        Json(spec).into_response()
    })
}

/// Rows of a query, as JSON.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Rows {
    /// The columns, in order.
    pub columns: Vec<Column>,
    /// One object per row, keyed by column name.
    #[schema(value_type = Vec<Object>)]
    pub rows: Vec<serde_json::Value>,
}

/// A column of a result or a table.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Column {
    /// Its name.
    pub name: String,
    /// Its Arrow type.
    #[serde(rename = "type")]
    pub data_type: String,
    /// Whether it may be NULL.
    pub nullable: bool,
}

/// Which rows of a job.
// Documents the query in the OpenAPI document; the handler reads it by hand, so that a bad
// value gets the API's JSON error rather than axum's text one.
#[allow(dead_code)]
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct OutputParams {
    /// `features` (a feature job), or `orders`, `fills`, `equity`, `positions`, `risk_events`
    /// (a trading job).
    table: Option<String>,
    /// Most rows (default 100, at most 10000), the latest first.
    limit: Option<String>,
}

/// A job's latest output rows from the lake.
#[utoipa::path(get, path = "/jobs/{id}/output", tag = "jobs",
    params(("id" = String, Path, description = "The job's id"), OutputParams),
    responses((status = 200, description = "The rows, latest first", body = Rows),
        (status = 400, description = "Unknown table or bad limit", body = ErrorBody),
        (status = 404, description = "No such job", body = ErrorBody)))]
async fn job_output(
    State(s): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<Rows>> {
    let (name, kind) = s
        .registry
        .with_job(&id, |j| (j.name().to_string(), j.kind()))?;
    let features = kind == crate::registry::JobKind::Features;
    let table =
        q.get("table")
            .map(String::as_str)
            .unwrap_or(if features { "features" } else { "fills" });
    let limit = match q.get("limit") {
        None => 100,
        Some(l) => l
            .parse::<u32>()
            .ok()
            .filter(|n| (1..=10_000).contains(n))
            .ok_or_else(|| {
                ServiceError::BadRequest(format!("limit={l:?}: give a number from 1 to 10000"))
            })?,
    };
    let quote = |v: &str| v.replace('\'', "''");
    let sql = match table {
        "features" => format!(
            "SELECT * FROM features WHERE job = '{}' ORDER BY ts DESC LIMIT {limit}",
            quote(&name)
        ),
        "orders" | "fills" | "equity" | "positions" | "risk_events" => format!(
            "SELECT * FROM {table} WHERE run_id = '{}' ORDER BY ts DESC LIMIT {limit}",
            quote(&id)
        ),
        other => {
            return Err(ServiceError::BadRequest(format!(
                "table={other:?}: use features, orders, fills, equity, positions or risk_events"
            )));
        }
    };
    let batches = s
        .sql
        .query(&sql)
        .await
        .map_err(|e| ServiceError::Internal(format!("{sql}: {e}")))?;
    Ok(Json(rows_of(&batches)?))
}

/// Batches as JSON rows (NULLs kept as `null`).
pub fn rows_of(batches: &[arrow::record_batch::RecordBatch]) -> Result<Rows> {
    let columns = batches
        .first()
        .map(|b| {
            b.schema()
                .fields()
                .iter()
                .map(|f| Column {
                    name: f.name().clone(),
                    data_type: f.data_type().to_string(),
                    nullable: f.is_nullable(),
                })
                .collect()
        })
        .unwrap_or_default();
    let buf = crate::tap::json_array(batches)
        .map_err(|e| ServiceError::Internal(format!("encoding rows: {e}")))?;
    let rows = serde_json::from_slice(&buf)
        .map_err(|e| ServiceError::Internal(format!("encoding rows: {e}")))?;
    Ok(Rows { columns, rows })
}

/// Which form of a report.
#[allow(dead_code)]
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct ReportParams {
    /// `html` (default) or `pdf` (printed by headless Chromium, which the server must have).
    format: Option<String>,
}

/// A run's report, as `flowsense report` writes it: one HTML page (metrics, equity, drawdown,
/// position, fills on the price, risk events, round trips), or that page printed to PDF.
#[utoipa::path(get, path = "/runs/{id}/report", tag = "lake",
    params(("id" = String, Path, description = "The run's id (a job's id, or a backtest's --run-id)"), ReportParams),
    responses((status = 200, description = "The report", content(
            (String = "text/html"), (Vec<u8> = "application/pdf"))),
        (status = 400, description = "Unknown format", body = ErrorBody),
        (status = 404, description = "No such run", body = ErrorBody),
        (status = 503, description = "PDF asked, and no Chromium to print it", body = ErrorBody)))]
async fn run_report(
    State(s): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response> {
    let pdf = match q.get("format").map(String::as_str) {
        None | Some("html") => false,
        Some("pdf") => true,
        Some(other) => {
            return Err(ServiceError::BadRequest(format!(
                "format={other:?}: use html or pdf"
            )));
        }
    };
    let html = flowsense_dataflows::report::build_in(&s.sql, &s.lake_url, &id)
        .await
        .map_err(|e| {
            let msg = format!("{e:#}");
            if msg.starts_with("no run ") {
                ServiceError::NotFound(msg)
            } else {
                ServiceError::Internal(format!("the report of {id}: {msg}"))
            }
        })?;
    if !pdf {
        return Ok(([(header::CONTENT_TYPE, "text/html; charset=utf-8")], html).into_response());
    }
    let chromium = flowsense_dataflows::report::find_chromium().ok_or_else(|| {
        ServiceError::Unavailable(
            "no Chromium on this server to print the PDF: install chromium or set \
             FLOWSENSE_CHROMIUM; the HTML report (format=html) needs none"
                .into(),
        )
    })?;
    let bytes = tokio::task::spawn_blocking(move || -> anyhow::Result<Vec<u8>> {
        let dir = tempfile::tempdir()?;
        let page = dir.path().join("report.html");
        let out = dir.path().join("report.pdf");
        std::fs::write(&page, html)?;
        flowsense_dataflows::report::print_pdf(&chromium, &page, &out)?;
        Ok(std::fs::read(&out)?)
    })
    .await
    .map_err(|e| ServiceError::Internal(format!("printing the report: {e}")))?
    .map_err(|e| ServiceError::Internal(format!("printing the report: {e:#}")))?;
    Ok((
        [
            (header::CONTENT_TYPE, "application/pdf".to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{id}.pdf\""),
            ),
        ],
        bytes,
    )
        .into_response())
}

/// A message of `GET /stream` (documented here so clients generate its type): the figures of
/// `graph` (a [`GraphView`]) and `job` (a [`JobView`]) each second, the rows of the row topics
/// as they are written, and `lagged` when a slow subscriber missed messages.
#[allow(dead_code)]
#[derive(Debug, Serialize, ToSchema)]
pub struct StreamMessageDoc {
    /// The topic (`graph`, `job`, `features`, `orders`, `fills`, `equity`, `positions`,
    /// `risk_events`, `book`, `trades`), or `lagged`.
    pub topic: String,
    /// The job's id.
    pub job: String,
    /// The worker whose rows these are (row topics).
    pub worker: Option<usize>,
    /// A [`GraphView`] (`graph`), a [`JobView`] (`job`), or rows in the lake's columns.
    pub data: Option<serde_json::Value>,
    /// Messages missed (`lagged`).
    pub missed: Option<u64>,
}

/// A query.
#[derive(Debug, Deserialize, ToSchema)]
pub struct SqlRequest {
    /// One read-only SQL statement.
    pub sql: String,
}

/// The Arrow IPC stream media type.
pub const ARROW_STREAM: &str = "application/vnd.apache.arrow.stream";

/// Run one read-only SQL statement over the lake (the CLI's guard: no DDL, DML or COPY).
/// The body is `{"sql": "..."}` or the statement as text; the result is JSON rows, CSV
/// (`Accept: text/csv`) or an Arrow IPC stream (`Accept: application/vnd.apache.arrow.stream`).
#[utoipa::path(post, path = "/sql", tag = "lake",
    request_body(content = SqlRequest, description = "The statement (or send it as text/plain)"),
    responses(
        (status = 200, description = "The result: JSON rows, CSV or an Arrow IPC stream by Accept", content(
            (Rows = "application/json"),
            (String = "text/csv"),
            (Vec<u8> = "application/vnd.apache.arrow.stream"))),
        (status = 400, description = "Refused by the guard, or a SQL error", body = ErrorBody)))]
async fn run_sql(State(s): State<AppState>, headers: HeaderMap, body: Bytes) -> Result<Response> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let text = std::str::from_utf8(&body)
        .map_err(|e| ServiceError::BadRequest(format!("the body is not UTF-8: {e}")))?;
    let sql = if ct.contains("json") || (ct.is_empty() && text.trim_start().starts_with('{')) {
        serde_json::from_str::<SqlRequest>(text)
            .map_err(|e| {
                ServiceError::BadRequest(format!("the body: {e}; send {{\"sql\": \"...\"}}"))
            })?
            .sql
    } else {
        text.to_string()
    };
    if sql.trim().is_empty() {
        return Err(ServiceError::BadRequest("no SQL statement given".into()));
    }
    let batches = s
        .sql
        .query(&sql)
        .await
        .map_err(|e| ServiceError::BadRequest(e.to_string()))?;
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json");
    let encode_err = |e: arrow::error::ArrowError| ServiceError::Internal(format!("encoding: {e}"));
    if accept.contains("text/csv") {
        let mut buf = Vec::new();
        {
            let mut w = arrow::csv::WriterBuilder::new()
                .with_header(true)
                .build(&mut buf);
            for b in &batches {
                w.write(b).map_err(encode_err)?;
            }
        }
        Ok(([(header::CONTENT_TYPE, "text/csv")], buf).into_response())
    } else if accept.contains(ARROW_STREAM) {
        let schema = match batches.first() {
            Some(b) => b.schema(),
            None => Arc::new(arrow::datatypes::Schema::empty()),
        };
        let mut buf = Vec::new();
        {
            let mut w =
                arrow::ipc::writer::StreamWriter::try_new(&mut buf, &schema).map_err(encode_err)?;
            for b in &batches {
                w.write(b).map_err(encode_err)?;
            }
            w.finish().map_err(encode_err)?;
        }
        Ok(([(header::CONTENT_TYPE, ARROW_STREAM)], buf).into_response())
    } else {
        Ok(Json(rows_of(&batches)?).into_response())
    }
}

/// A table of the lake.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct TableView {
    /// Its name in SQL.
    pub name: String,
    /// Its columns (in files), then its partition columns.
    pub columns: Vec<Column>,
    /// The columns taken from the file paths (`date`, `symbol`).
    pub partition_columns: Vec<String>,
}

/// The lake's tables and their schemas.
#[utoipa::path(get, path = "/tables", tag = "lake",
    responses((status = 200, description = "The tables", body = [TableView])))]
async fn list_tables() -> Json<Vec<TableView>> {
    Json(
        Table::ALL
            .iter()
            .map(|t| {
                let parts: Vec<String> = t
                    .partition_columns()
                    .iter()
                    .map(|c| c.to_string())
                    .collect();
                let mut columns: Vec<Column> = t
                    .file_schema()
                    .fields()
                    .iter()
                    .map(|f| Column {
                        name: f.name().clone(),
                        data_type: f.data_type().to_string(),
                        nullable: f.is_nullable(),
                    })
                    .collect();
                columns.extend(parts.iter().map(|p| Column {
                    name: p.clone(),
                    data_type: "Utf8".into(),
                    nullable: false,
                }));
                TableView {
                    name: t.name().to_string(),
                    columns,
                    partition_columns: parts,
                }
            })
            .collect(),
    )
}

/// The server's health.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Health {
    /// `ok`, `starting` or `failed`.
    pub status: String,
    /// Workers in the cluster.
    pub workers: usize,
    /// What is wrong, when something is.
    pub error: Option<String>,
}

/// Liveness: 200 while the server can run jobs; 503 once a worker has died (restart it).
#[utoipa::path(get, path = "/health", tag = "service",
    responses((status = 200, description = "Healthy", body = Health),
        (status = 503, description = "A worker died", body = Health)))]
async fn health(State(s): State<AppState>) -> (StatusCode, Json<Health>) {
    let workers = s.registry.peers();
    match s.registry.fatal_error() {
        Some(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(Health {
                status: "failed".into(),
                workers,
                error: Some(e),
            }),
        ),
        None => (
            StatusCode::OK,
            Json(Health {
                status: if workers == 0 { "starting" } else { "ok" }.into(),
                workers,
                error: None,
            }),
        ),
    }
}

/// Readiness: 200 once every process has joined and jobs can be submitted.
#[utoipa::path(get, path = "/ready", tag = "service",
    responses((status = 200, description = "Ready", body = Health),
        (status = 503, description = "Starting, or a worker died", body = Health)))]
async fn ready(State(s): State<AppState>) -> (StatusCode, Json<Health>) {
    let workers = s.registry.peers();
    match s.registry.ready() {
        Ok(()) => (
            StatusCode::OK,
            Json(Health {
                status: "ok".into(),
                workers,
                error: None,
            }),
        ),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(Health {
                status: if s.registry.fatal_error().is_some() {
                    "failed"
                } else {
                    "starting"
                }
                .into(),
                workers,
                error: Some(e.to_string()),
            }),
        ),
    }
}

/// Prometheus metrics (OpenMetrics text): jobs by state, running jobs' operators, HTTP.
#[utoipa::path(get, path = "/metrics", tag = "service",
    responses((status = 200, description = "OpenMetrics text", body = String, content_type = "application/openmetrics-text")))]
async fn metrics(State(s): State<AppState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        s.metrics.render(&s.registry),
    )
        .into_response()
}

/// What the stream sends for.
// Documents the query in the OpenAPI document; the handler reads it by hand, so that a bad
// value gets the API's JSON error rather than axum's text one.
#[allow(dead_code)]
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct StreamParams {
    /// The job's id.
    job: String,
    /// Comma-separated topics (default `graph,job`): `graph` (the job's graph each second),
    /// `job` (its state and counts each second); rows as they are written: `features` (a
    /// feature job), `orders`, `fills`, `equity`, `positions`, `risk_events` (a trading job);
    /// and for a paced job (`[replay]`) `book` (the top 10 levels of each symbol that changed,
    /// every 250 ms) and `trades` (the tape).
    topics: Option<String>,
}

/// A WebSocket of a job's figures and rows: one JSON message per topic and event,
/// `{"topic": "graph", "job": ID, "data": {...}}` each second for the figures and
/// `{"topic": "fills", "job": ID, "worker": W, "data": [rows]}` as rows are written (the
/// lake's columns, as `GET /jobs/{id}/output` gives them); rows are those written after the
/// subscription. A subscriber too slow for the rows gets `{"topic": "lagged", "missed": N}`.
/// The stream ends after the job does, once its last rows are sent.
#[utoipa::path(get, path = "/stream", tag = "jobs",
    params(StreamParams),
    responses((status = 101, description = "Switching to the WebSocket"),
        (status = 400, description = "Unknown topic, a topic the job does not write, or not a WebSocket request", body = ErrorBody),
        (status = 404, description = "No such job", body = ErrorBody)))]
async fn stream(
    State(s): State<AppState>,
    Query(q): Query<HashMap<String, String>>,
    ws: std::result::Result<
        WebSocketUpgrade,
        axum::extract::ws::rejection::WebSocketUpgradeRejection,
    >,
) -> Result<Response> {
    let job = q
        .get("job")
        .ok_or_else(|| ServiceError::BadRequest("give the job: ?job=ID".into()))?
        .clone();
    let (kind, paced) = s.registry.with_job(&job, |j| (j.kind(), j.paced()))?;
    let mut topics: Vec<Topic> = Vec::new();
    for t in q
        .get("topics")
        .map_or("graph,job", String::as_str)
        .split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
    {
        let topic = Topic::parse(t).ok_or_else(|| {
            ServiceError::BadRequest(format!(
                "topics: {t:?} is not streamed; use {}",
                Topic::ALL.map(Topic::name).join(", ")
            ))
        })?;
        let features = kind == JobKind::Features;
        if (topic == Topic::Features && !features) || (topic.is_trading() && features) {
            return Err(ServiceError::BadRequest(format!(
                "topics: job {job} is a {} job and writes no {t}; a feature job streams \
                 features, a trading job orders, fills, equity, positions and risk_events",
                kind.mode()
            )));
        }
        if topic.paced_only() && !paced {
            return Err(ServiceError::BadRequest(format!(
                "topics: {t} streams for paced jobs only (a [replay] section); job {job} runs \
                 as fast as it can, so its book would move faster than any screen"
            )));
        }
        if !topics.contains(&topic) {
            topics.push(topic);
        }
    }
    let ws = ws.map_err(|e| {
        ServiceError::BadRequest(format!(
            "this endpoint speaks WebSocket: send an upgrade request ({e})"
        ))
    })?;
    // Subscribed before the upgrade, so the workers start copying rows as soon as they can.
    let sub = if topics.iter().any(|t| t.is_rows()) {
        Some(s.registry.subscribe(&job, &topics)?)
    } else {
        None
    };
    Ok(ws.on_upgrade(move |socket| push_stream(socket, s, job, topics, sub)))
}

async fn push_stream(
    mut socket: WebSocket,
    s: AppState,
    job: String,
    topics: Vec<Topic>,
    mut sub: Option<Subscription>,
) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut ended = 0;
    let text = |t: String| Message::Text(t.into());
    loop {
        let rows = async {
            match &mut sub {
                Some(sub) => sub.rx.recv().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            m = rows => {
                let msg = match m {
                    Ok(m) if topics.contains(&m.topic) => m.text.to_string(),
                    Ok(_) => continue,
                    Err(RecvError::Lagged(n)) => serde_json::json!(
                        {"topic": "lagged", "job": job, "missed": n}).to_string(),
                    Err(RecvError::Closed) => {
                        sub = None;
                        continue;
                    }
                };
                if socket.send(text(msg)).await.is_err() {
                    return;
                }
            }
            _ = tick.tick() => {
                let Ok(view) = s.registry.job(&job) else {
                    break;
                };
                if view.state.is_final()
                    && let Some(sub) = &mut sub
                {
                    // Every row came before the job's end: send what is left first.
                    while let Ok(m) = sub.rx.try_recv() {
                        if topics.contains(&m.topic)
                            && socket.send(text(m.text.to_string())).await.is_err()
                        {
                            return;
                        }
                    }
                }
                for t in topics.iter().filter(|t| !t.is_rows()) {
                    let data = match t {
                        Topic::Graph => s
                            .registry
                            .with_job(&job, |j| serde_json::to_value(graph_of(j, &job)).ok())
                            .ok()
                            .flatten(),
                        _ => serde_json::to_value(&view).ok(),
                    };
                    let msg = serde_json::json!({"topic": t.name(), "job": job, "data": data});
                    if socket.send(text(msg.to_string())).await.is_err() {
                        return;
                    }
                }
                // One last round once the job has ended, then close.
                if view.state.is_final() {
                    ended += 1;
                    if ended > 1 {
                        break;
                    }
                }
            }
        }
    }
    let _ = socket.send(Message::Close(None)).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse_as_toml_or_json() {
        let toml = "name = \"a\"\n[source.synthetic]\n[features]\nbuckets = [\"1s\"]\n";
        let spec = parse_spec(Some("application/toml"), toml.as_bytes()).unwrap();
        assert_eq!(spec.name, "a");
        let json = serde_json::to_string(&spec).unwrap();
        assert_eq!(parse_spec(None, json.as_bytes()).unwrap(), spec);
        let e = parse_spec(None, b"name = \"a\"\nsource = 3\n").unwrap_err();
        assert!(e.to_string().contains("line 2"), "{e}");
        let e = parse_spec(None, b"").unwrap_err();
        assert!(e.to_string().contains("empty"), "{e}");
    }
}
