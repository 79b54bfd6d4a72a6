//! FlowSense's service: `flowsense serve` runs a long-running timely cluster whose workers
//! install dataflow jobs at runtime ([`cluster`]), with an HTTP controller on process 0
//! ([`api`], [`registry`]) that takes jobs, shows their graphs and figures ([`graph`],
//! [`metrics`]) and answers SQL over the lake, and serves the web UI ([`ui`]); [`client`] is
//! the CLI's side of it.
//!
//! A job runs the same whether submitted or run by hand: the workers build it with the
//! builders of `flowsense run` and `flowsense backtest` and feed it with the same feeder.

#![forbid(missing_docs)]
// The service is a driver: it times jobs, paces replays and parks its workers on the wall
// clock. Operators stay free of it (clippy.toml).
#![allow(clippy::disallowed_methods)]

pub mod api;
pub mod client;
pub mod cluster;
pub mod config;
mod error;
pub mod graph;
pub mod metrics;
pub mod protocol;
pub mod registry;
pub mod tap;
pub mod ui;

use std::io::Write;
use std::sync::{Arc, Mutex};

use anyhow::Context;
use flowsense_core::Lake;
use flowsense_dataflows::run::RunOptions;
use flowsense_sinks::S3Options;
use flowsense_sql::LakeSession;

pub use config::{ServeConfig, ServeOverrides};
pub use error::{ErrorBody, Result, ServiceError};

use crate::registry::{PastRun, Registry};

/// Sets up `tracing`: `RUST_LOG` filters (default `info`), text or JSON lines on stderr.
fn init_tracing(format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // A second call (tests in one process) keeps the first subscriber.
    let _ = if format == "json" {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}

/// The runs recorded in the lake, for the job list of a restarted server.
async fn past_runs(session: &LakeSession) -> anyhow::Result<Vec<PastRun>> {
    let batches = session
        .query(
            "SELECT run_id, job, mode, started, events, seconds, state, error, spec FROM runs \
             ORDER BY started",
        )
        .await?;
    let rows = api::rows_of(&batches).map_err(|e| anyhow::anyhow!("{e}"))?;
    let s = |v: &serde_json::Value, k: &str| v.get(k).and_then(|x| x.as_str()).map(String::from);
    Ok(rows
        .rows
        .iter()
        .map(|r| PastRun {
            id: s(r, "run_id").unwrap_or_default(),
            name: s(r, "job").unwrap_or_default(),
            mode: s(r, "mode").unwrap_or_default(),
            started: s(r, "started").unwrap_or_default(),
            events: r.get("events").and_then(|x| x.as_u64()).unwrap_or(0),
            seconds: r.get("seconds").and_then(|x| x.as_f64()).unwrap_or(0.0),
            state: s(r, "state"),
            error: s(r, "error"),
            spec: s(r, "spec").and_then(|t| match flowsense_core::job::JobSpec::from_toml(&t) {
                Ok(spec) => Some(spec),
                Err(e) => {
                    tracing::warn!(error = %e, "a past run's spec no longer parses");
                    None
                }
            }),
        })
        .collect())
}

/// Marks the cluster failed when a worker thread panics, so the API says so instead of
/// leaving jobs hanging.
fn watch_panics(registry: Arc<Registry>) {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        default(info);
        let thread = std::thread::current();
        let name = thread.name().unwrap_or("a thread");
        if name.starts_with("timely") {
            let msg = info.payload_as_str().unwrap_or("(no message)");
            let at = info
                .location()
                .map(|l| format!(" at {}:{}", l.file(), l.line()))
                .unwrap_or_default();
            registry.fatal(&format!("worker thread {name} panicked: {msg}{at}"));
        }
    }));
}

/// Runs one process of the service until it is killed. Process 0 serves the API on
/// `config.listen` and prints `flowsense serve: listening on http://ADDR` on stdout once it
/// accepts connections.
pub fn serve(config: ServeConfig) -> anyhow::Result<()> {
    serve_with(config, |_| {})
}

/// [`serve`], calling `listening` on a thread of its own with the API's address once process
/// 0 accepts connections (`flowsense demo --serve` submits its jobs from there).
pub fn serve_with(
    config: ServeConfig,
    listening: impl FnOnce(std::net::SocketAddr) + Send + 'static,
) -> anyhow::Result<()> {
    init_tracing(&config.log_format);
    let lake = Lake::open(&config.lake, &S3Options::default())
        .with_context(|| format!("opening the lake at {}", config.lake))?;
    let run = RunOptions {
        workers: config.workers,
        processes: config.processes,
        process: config.process,
        hostfile: config.hostfile.clone(),
        ..Default::default()
    };
    let timely_config = run.timely_config()?;
    let mut commands = None;
    let mut registry = None;
    // Process 0's HTTP server runs on its own tokio threads for the life of the process.
    let _runtime = if config.process == 0 {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .thread_name("flowsense-http")
            .build()?;
        let (reg, rx) = Registry::new(lake.clone());
        commands = Some(rx);
        registry = Some(reg.clone());
        let sql = rt
            .block_on(LakeSession::open(&lake))
            .context("opening the lake for SQL")?;
        match rt.block_on(past_runs(&sql)) {
            Ok(runs) => {
                tracing::info!(runs = runs.len(), "past runs loaded from the lake");
                reg.load_past(runs);
            }
            Err(e) => tracing::warn!(error = %e, "the lake's runs table could not be read"),
        }
        let listener = rt
            .block_on(tokio::net::TcpListener::bind(&config.listen))
            .with_context(|| format!("listening on {}", config.listen))?;
        let addr = listener.local_addr()?;
        let state = api::AppState {
            registry: reg.clone(),
            lake: lake.clone(),
            lake_url: config.lake.clone(),
            sql: Arc::new(sql),
            metrics: metrics::Metrics::default(),
        };
        let app = api::router(state);
        rt.spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::error!(error = %e, "the HTTP server stopped");
            }
        });
        watch_panics(reg);
        tracing::info!(%addr, workers = config.workers, processes = config.processes,
            lake = %config.lake, "serving");
        println!(
            "flowsense serve: listening on http://{addr} (UI /, API /api/v1, docs /api/v1/docs)"
        );
        std::io::stdout().flush()?;
        std::thread::Builder::new()
            .name("flowsense-listening".into())
            .spawn(move || listening(addr))?;
        Some(rt)
    } else {
        None
    };
    let shared = Arc::new(cluster::Shared {
        lake,
        commands: Mutex::new(commands),
        registry,
    });
    let registry = shared.registry.clone();
    let guards = timely::execute(timely_config, move |worker| {
        if let Err(e) = cluster::worker_loop(worker, shared.clone()) {
            tracing::error!(error = %e, "a worker stopped");
        }
    })
    .map_err(|e| anyhow::anyhow!("starting timely: {e}"))?;
    let ended: Vec<String> = guards.join().into_iter().filter_map(|r| r.err()).collect();
    // Workers only end by panicking. Process 0 keeps answering, so users and load balancers
    // see the failure (`/health` says what happened and what to do) instead of a vanished
    // server; the other processes exit.
    if let Some(reg) = registry {
        reg.fatal(&format!("the workers stopped: {}", ended.join("; ")));
        loop {
            std::thread::park();
        }
    }
    anyhow::bail!("the workers stopped: {}", ended.join("; "))
}
