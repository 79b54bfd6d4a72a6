//! The service end to end: real `flowsense serve` processes on loopback, driven over real HTTP
//! (and a WebSocket) by the API client, raw requests and the CLI. Jobs submitted to a 2 x 2
//! cluster write what `flowsense run` and `flowsense backtest` write; bad submissions get their
//! 4xx; both stop modes; a failing job and a panicking worker; a restart; 50 submissions at once.

// Waiting on real servers takes the wall clock (as timeouts, never as measurements).
#![allow(clippy::disallowed_methods)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use flowsense_core::Lake;
use flowsense_service::client::Client;
use flowsense_service::registry::{JobState, JobView};
use serde_json::Value;

use crate::common;

/// One `flowsense serve` cluster (its processes are killed on drop).
struct Server {
    children: Vec<Child>,
    url: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        // Process 0 last in the list, first to go: the others' complaints about the closed
        // sockets go nowhere (their stderr is not kept).
        for c in self.children.iter_mut().rev() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Server {
    /// `flowsense serve --lake LAKE ARGS` on a free port, once it is ready.
    fn start(lake: &Path, args: &[&str], env: &[(&str, &str)]) -> Server {
        Server::cluster(lake, args, env, 1, None)
    }

    /// `processes` processes of `args` each (process 0 serves the API).
    fn cluster(
        lake: &Path,
        args: &[&str],
        env: &[(&str, &str)],
        processes: usize,
        hostfile: Option<&Path>,
    ) -> Server {
        let mut children = Vec::new();
        let spawn = |p: usize| {
            let mut cmd = common::flowsense();
            cmd.arg("serve")
                .args(["--lake", lake.to_str().unwrap()])
                .args(args)
                .env("RUST_LOG", "error,tower_http=off")
                .stdout(if p == 0 {
                    Stdio::piped()
                } else {
                    Stdio::null()
                })
                .stderr(if p == 0 {
                    Stdio::inherit()
                } else {
                    Stdio::null()
                });
            for (k, v) in env {
                cmd.env(k, v);
            }
            if let Some(h) = hostfile {
                cmd.args(["-n", &processes.to_string(), "-p", &p.to_string()])
                    .args(["-h", h.to_str().unwrap()]);
            }
            if p == 0 {
                cmd.args(["--listen", "127.0.0.1:0"]);
            }
            cmd.spawn().unwrap()
        };
        for p in (1..processes).rev() {
            children.push(spawn(p));
        }
        let mut first = spawn(0);
        let mut line = String::new();
        let mut stdout = BufReader::new(first.stdout.take().unwrap());
        stdout.read_line(&mut line).unwrap();
        // Whatever else the server prints (jobs with `[sinks] stdout`) is drained unread.
        std::thread::spawn(move || std::io::copy(&mut stdout, &mut std::io::sink()));
        children.push(first);
        let url = line
            .split_whitespace()
            .find(|w| w.starts_with("http://"))
            .unwrap_or_else(|| panic!("no URL in {line:?}"))
            .to_string();
        let s = Server { children, url };
        let start = Instant::now();
        while get(&s, "/api/v1/ready").0 != 200 {
            assert!(start.elapsed() < Duration::from_secs(60), "never ready");
            std::thread::sleep(Duration::from_millis(50));
        }
        s
    }

    fn client(&self) -> Client {
        Client::new(&self.url)
    }
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into()
}

fn answer(r: Result<ureq::http::Response<ureq::Body>, ureq::Error>) -> (u16, Value) {
    let mut r = r.unwrap();
    let status = r.status().as_u16();
    let text = r.body_mut().read_to_string().unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

fn get(s: &Server, path: &str) -> (u16, Value) {
    answer(agent().get(format!("{}{path}", s.url)).call())
}

fn post(s: &Server, path: &str, content_type: &str, body: &str) -> (u16, Value) {
    answer(
        agent()
            .post(format!("{}{path}", s.url))
            .header("content-type", content_type)
            .send(body),
    )
}

/// The error message of a 4xx answer, asserting its status.
#[track_caller]
fn error_of(answer: (u16, Value), status: u16) -> String {
    assert_eq!(answer.0, status, "{:?}", answer.1);
    answer.1["error"].as_str().unwrap().to_string()
}

fn wait_for(c: &Client, id: &str, what: &str, ok: impl Fn(&JobView) -> bool) -> JobView {
    let start = Instant::now();
    loop {
        let j = c.job(id).unwrap();
        if ok(&j) {
            return j;
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "job {id} never {what}: {j:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A synthetic feature job; `paced` replays it at real time, so it runs until stopped.
fn synthetic(name: &str, events_per_day: u64, paced: bool) -> String {
    let replay = if paced { "[replay]\nspeed = 1.0\n" } else { "" };
    format!(
        "name = \"{name}\"\n{replay}[source.synthetic]\nsymbols = 2\ndays = 1\nseed = 7\n\
         events_per_day = {events_per_day}\n[features]\nbuckets = [\"1s\"]\nlevels = 5\n"
    )
}

fn lake_at(dir: &Path) -> Lake {
    Lake::open(dir.to_str().unwrap(), &Default::default()).unwrap()
}

/// A lake with the bundled Binance captures ingested.
fn binance_lake(dir: &Path) -> PathBuf {
    let path = dir.join("lake");
    common::run_ok(&[
        "ingest",
        common::binance_data().to_str().unwrap(),
        "--lake",
        path.to_str().unwrap(),
    ]);
    path
}

#[test]
fn a_two_by_two_cluster_runs_a_feature_job_and_a_backtest_as_the_cli_does() {
    let dir = tempfile::tempdir().unwrap();
    let served = binance_lake(dir.path());
    let by_hand = dir.path().join("by-hand");
    let copied = std::process::Command::new("cp")
        .args(["-r", served.to_str().unwrap(), by_hand.to_str().unwrap()])
        .status()
        .unwrap();
    assert!(copied.success());
    let features = common::repo_path("examples/binance-features.toml");
    let backtest = common::repo_path("examples/binance-ofi-backtest.toml");

    let hosts = dir.path().join("hosts.txt");
    std::fs::write(
        &hosts,
        format!("127.0.0.1:{}\n127.0.0.1:{}\n", free_port(), free_port()),
    )
    .unwrap();
    let server = Server::cluster(&served, &["-w", "2"], &[], 2, Some(&hosts));
    let c = server.client();
    assert_eq!(get(&server, "/api/v1/health").1["workers"], 4);
    // Both at once.
    let f = c
        .submit(&std::fs::read_to_string(&features).unwrap())
        .unwrap();
    let b = c
        .submit(&std::fs::read_to_string(&backtest).unwrap())
        .unwrap();
    let fj = wait_for(&c, &f.id, "ended", |j| j.state.is_final());
    let bj = wait_for(&c, &b.id, "ended", |j| j.state.is_final());
    assert_eq!(fj.state, JobState::Finished, "{fj:?}");
    assert_eq!(bj.state, JobState::Finished, "{bj:?}");
    assert_eq!(fj.workers, 4);

    common::run_ok(&[
        "run",
        features.to_str().unwrap(),
        "--lake",
        by_hand.to_str().unwrap(),
        "-q",
    ]);
    common::run_ok(&[
        "backtest",
        backtest.to_str().unwrap(),
        "--lake",
        by_hand.to_str().unwrap(),
        "--run-id",
        "by-hand",
    ]);
    let rt = common::rt();
    let (a, h) = (lake_at(&served), lake_at(&by_hand));
    let q = "SELECT * FROM features WHERE job = 'binance-features'";
    let (fa, fh) = (
        rt.block_on(json_lines(&a, q)),
        rt.block_on(json_lines(&h, q)),
    );
    assert!(fa.lines().count() > 100, "{fa}");
    common::assert_same_text(&fa, &fh, "features: served vs flowsense run");
    for table in [
        "orders",
        "fills",
        "equity",
        "positions",
        "risk_events",
        "metrics",
    ] {
        let qa = format!(
            "SELECT * EXCLUDE (run_id) FROM {table} WHERE run_id = '{}'",
            b.id
        );
        let qh = format!("SELECT * EXCLUDE (run_id) FROM {table} WHERE run_id = 'by-hand'");
        let (ta, th) = (
            rt.block_on(common::query_csv(&a, &qa)),
            rt.block_on(common::query_csv(&h, &qh)),
        );
        if table == "fills" || table == "orders" {
            assert!(ta.lines().count() > 10, "{table}: {ta}");
        }
        common::assert_same_text(&ta, &th, &format!("{table}: served vs flowsense backtest"));
    }
    // The runs table records both, with their state.
    let runs = rt.block_on(common::query_csv(
        &a,
        "SELECT run_id, mode, state FROM runs ORDER BY run_id",
    ));
    assert!(
        runs.contains(&format!("{},backtest,finished", b.id)),
        "{runs}"
    );
    assert!(
        runs.contains(&format!("{},features,finished", f.id)),
        "{runs}"
    );
    // The graph of a finished job keeps its last figures, per worker.
    let g = c.graph(&f.id).unwrap();
    let op = g
        .nodes
        .iter()
        .find(|n| n.name == "OrderFlowFeatures")
        .unwrap();
    assert_eq!(op.per_worker.len(), 4);
    assert_eq!(op.stages, ["book", "features"]);
    assert!(op.records_in > 10_000, "{op:?}");
}

#[test]
fn bad_submissions_get_a_4xx_naming_the_problem_and_install_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    let server = Server::start(&lake, &["-w", "1"], &[]);
    let toml = "application/toml";

    let e = error_of(
        post(&server, "/api/v1/jobs", toml, "name = \"x\"\n[source"),
        400,
    );
    assert!(e.contains("line 2"), "{e}");
    let e = error_of(
        post(
            &server,
            "/api/v1/jobs",
            toml,
            "name = \"x\"\n[source.synthetic]\nsymbol = 3\n[features]\nbuckets = [\"1s\"]\n",
        ),
        400,
    );
    assert!(
        e.contains("unknown field `symbol`") && e.contains("line 3"),
        "{e}"
    );
    let e = error_of(
        post(&server, "/api/v1/jobs", "application/json", "{\"name\": 3}"),
        400,
    );
    assert!(e.contains("JSON") && e.contains("column"), "{e}");
    let e = error_of(post(&server, "/api/v1/jobs", toml, ""), 400);
    assert!(e.contains("empty"), "{e}");
    let e = error_of(
        post(
            &server,
            "/api/v1/jobs",
            toml,
            "name = \"x\"\n[source.capture]\npaths = [\"/no/such/file.csv\"]\n[features]\nbuckets = [\"1s\"]\n",
        ),
        422,
    );
    assert!(
        e.contains("/no/such/file.csv") && e.contains("does not exist"),
        "{e}"
    );
    let e = error_of(
        post(
            &server,
            "/api/v1/jobs",
            toml,
            "name = \"x\"\n[source.lake]\n[features]\nbuckets = [\"1s\"]\n",
        ),
        422,
    );
    assert!(e.contains("no market data"), "{e}");

    // A name still running is a conflict.
    let long = synthetic("long", 2_000_000, true);
    let (status, first) = post(&server, "/api/v1/jobs", toml, &long);
    assert_eq!(status, 201, "{first:?}");
    let e = error_of(post(&server, "/api/v1/jobs", toml, &long), 409);
    assert!(e.contains("\"long\"") && e.contains("already"), "{e}");

    let id = first["id"].as_str().unwrap();
    let e = error_of(
        post(
            &server,
            &format!("/api/v1/jobs/{id}/stop?mode=later"),
            toml,
            "",
        ),
        400,
    );
    assert!(e.contains("graceful or immediate"), "{e}");
    error_of(post(&server, "/api/v1/jobs/nope/stop", toml, ""), 404);
    error_of(get(&server, "/api/v1/jobs/nope"), 404);
    error_of(get(&server, "/api/v1/no/such/endpoint"), 404);
    let e = error_of(
        get(&server, &format!("/api/v1/jobs/{id}/output?table=x")),
        400,
    );
    assert!(e.contains("features"), "{e}");
    let e = error_of(
        post(
            &server,
            "/api/v1/sql",
            "text/plain",
            "COPY features TO '/tmp/x'",
        ),
        400,
    );
    assert!(e.contains("refused"), "{e}");
    let e = error_of(
        post(&server, "/api/v1/sql", "text/plain", "SELECT * FROM nope"),
        400,
    );
    assert!(e.contains("nope") && e.contains("features"), "{e}");
    let e = error_of(get(&server, "/api/v1/stream?job=nope"), 404);
    assert!(e.contains("nope"), "{e}");

    // Nothing of the bad ones was installed; the good one runs on.
    let jobs = server.client().jobs().unwrap();
    assert_eq!(jobs.len(), 1, "{jobs:?}");
    let c = server.client();
    wait_for(&c, id, "running", |j| j.state == JobState::Running);
    let stopped = c.stop(id, true).unwrap();
    assert_eq!(stopped.state, JobState::Stopping);
    let e = {
        wait_for(&c, id, "ended", |j| j.state.is_final());
        error_of(
            post(&server, &format!("/api/v1/jobs/{id}/stop"), toml, ""),
            409,
        )
    };
    assert!(e.contains("already ended"), "{e}");
}

#[test]
fn a_graceful_stop_commits_and_an_immediate_one_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lake");
    let server = Server::start(&path, &["-w", "2"], &[]);
    let c = server.client();
    let g = c.submit(&synthetic("graceful", 2_000_000, true)).unwrap();
    let i = c.submit(&synthetic("immediate", 2_000_000, true)).unwrap();
    for id in [&g.id, &i.id] {
        wait_for(&c, id, "fed some events", |j| {
            j.state == JobState::Running && j.events > 1000
        });
    }
    c.stop(&g.id, false).unwrap();
    c.stop(&i.id, true).unwrap();
    let gj = wait_for(&c, &g.id, "ended", |j| j.state.is_final());
    let ij = wait_for(&c, &i.id, "ended", |j| j.state.is_final());
    assert_eq!(gj.state, JobState::Stopped);
    assert_eq!(ij.state, JobState::Stopped);
    assert_eq!(gj.stop.as_deref(), Some("graceful"));
    assert_eq!(ij.stop.as_deref(), Some("immediate"));

    let lake = lake_at(&path);
    let rt = common::rt();
    let count = |job: &str| {
        rt.block_on(common::query_u64(
            &lake,
            &format!("SELECT count(*) FROM features WHERE job = '{job}'"),
        ))
    };
    // The graceful stop drained: every row the job made is in the lake.
    assert!(gj.rows > 0);
    assert_eq!(count("graceful"), gj.rows);
    assert_eq!(count("immediate"), 0);
    let runs = rt.block_on(common::query_csv(
        &lake,
        "SELECT job, state FROM runs ORDER BY job",
    ));
    assert_eq!(
        runs, "job,state\ngraceful,stopped\nimmediate,stopped",
        "{runs}"
    );
    // The output endpoint reads the committed rows.
    let (status, out) = get(&server, &format!("/api/v1/jobs/{}/output?limit=5", g.id));
    assert_eq!(status, 200, "{out:?}");
    assert_eq!(out["rows"].as_array().unwrap().len(), 5);
    assert_eq!(out["rows"][0]["job"], "graceful");
}

#[test]
fn a_failing_job_leaves_the_others_running_and_a_panic_says_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lake");
    // A sink that cannot write: a file where the job's third symbol's partition folder goes.
    let blocked = path.join("features/date=2024-01-02");
    std::fs::create_dir_all(&blocked).unwrap();
    std::fs::write(blocked.join("symbol=SYN002"), "in the way\n").unwrap();
    let server = Server::start(
        &path,
        &["-w", "2"],
        &[("FLOWSENSE_FAULT_PANIC_JOB", "boom")],
    );
    let c = server.client();
    let keep = c
        .submit(&synthetic("keeps-going", 2_000_000, true))
        .unwrap();
    wait_for(&c, &keep.id, "running", |j| j.state == JobState::Running);
    let bad = c
        .submit(&synthetic("bad", 20_000, false).replace("symbols = 2", "symbols = 3"))
        .unwrap();
    let bj = wait_for(&c, &bad.id, "ended", |j| j.state.is_final());
    assert_eq!(bj.state, JobState::Failed);
    let errors = c.errors(&bad.id).unwrap();
    assert!(
        errors[0].message.contains("writing features") && errors[0].worker.is_some(),
        "{errors:?}"
    );
    assert!(bj.error.as_deref().unwrap().contains("writing features"));
    // The other job and the server go on.
    let before = c.job(&keep.id).unwrap().events;
    let k = wait_for(&c, &keep.id, "fed more events", |j| j.events > before);
    assert_eq!(k.state, JobState::Running);
    assert_eq!(get(&server, "/api/v1/health").0, 200);
    let rt = common::rt();
    let runs = rt.block_on(common::query_csv(
        &lake_at(&path),
        "SELECT job, state, error FROM runs",
    ));
    assert!(
        runs.contains("bad,failed,") && runs.contains("writing features"),
        "{runs}"
    );
    // What the failed job's other symbols wrote was removed with it.
    std::fs::remove_file(blocked.join("symbol=SYN002")).unwrap();
    let left = rt.block_on(common::query_u64(
        &lake_at(&path),
        "SELECT count(*) FROM features WHERE job = 'bad'",
    ));
    assert_eq!(left, 0);

    // A worker that panics (a bug) marks the cluster failed and says what to do.
    let boom = c.submit(&synthetic("boom", 1000, false)).unwrap();
    let bj = wait_for(&c, &boom.id, "failed", |j| j.state == JobState::Failed);
    let msg = bj.error.unwrap();
    assert!(msg.contains("panicked") && msg.contains("restart"), "{msg}");
    assert_eq!(c.job(&keep.id).unwrap().state, JobState::Failed);
    let (status, health) = get(&server, "/api/v1/health");
    assert_eq!(status, 503);
    assert!(health["error"].as_str().unwrap().contains("restart"));
    assert_eq!(get(&server, "/api/v1/ready").0, 503);
    let e = error_of(
        post(
            &server,
            "/api/v1/jobs",
            "application/toml",
            &synthetic("after", 1000, false),
        ),
        503,
    );
    assert!(e.contains("panicked"), "{e}");
}

#[test]
fn a_restarted_server_lists_the_earlier_jobs() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lake");
    let (done, stopped) = {
        let server = Server::start(&path, &["-w", "1"], &[]);
        let c = server.client();
        let d = c.submit(&synthetic("small", 5000, false)).unwrap();
        let s = c.submit(&synthetic("slow", 2_000_000, true)).unwrap();
        wait_for(&c, &d.id, "finished", |j| j.state == JobState::Finished);
        wait_for(&c, &s.id, "running", |j| j.state == JobState::Running);
        c.stop(&s.id, true).unwrap();
        wait_for(&c, &s.id, "stopped", |j| j.state == JobState::Stopped);
        (d.id, s.id)
    };
    let server = Server::start(&path, &["-w", "1"], &[]);
    let jobs = server.client().jobs().unwrap();
    let state = |id: &str| jobs.iter().find(|j| j.id == id).map(|j| j.state);
    assert_eq!(state(&done), Some(JobState::Finished), "{jobs:?}");
    assert_eq!(state(&stopped), Some(JobState::Stopped), "{jobs:?}");
    // A new job of an earlier name gets a new id.
    let again = server
        .client()
        .submit(&synthetic("small", 5000, false))
        .unwrap();
    assert_ne!(again.id, done);
}

#[test]
fn fifty_parallel_submissions_get_fifty_ids_and_all_run() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lake");
    let server = Server::start(&path, &["-w", "2"], &[]);
    let url = server.url.clone();
    let ids: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..50)
            .map(|k| {
                let url = url.clone();
                s.spawn(move || {
                    Client::new(&url)
                        .submit(&synthetic(&format!("par-{k}"), 2000, false))
                        .unwrap()
                        .id
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let distinct: std::collections::BTreeSet<&String> = ids.iter().collect();
    assert_eq!(distinct.len(), 50);
    let c = server.client();
    for id in &ids {
        let j = wait_for(&c, id, "ended", |j| j.state.is_final());
        assert_eq!(j.state, JobState::Finished, "{j:?}");
        assert!(j.rows > 0, "{j:?}");
    }
    let n = common::rt().block_on(common::query_u64(
        &lake_at(&path),
        "SELECT count(DISTINCT job) FROM features WHERE job LIKE 'par-%'",
    ));
    assert_eq!(n, 50);
}

#[test]
fn the_cli_submits_lists_shows_stops_and_queries_and_the_api_describes_itself() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lake");
    let server = Server::start(&path, &["-w", "1", "--log-format", "json"], &[]);
    let spec = dir.path().join("job.toml");
    std::fs::write(&spec, synthetic("cli-small", 5000, false)).unwrap();
    let url = server.url.as_str();
    let out = common::run_ok(&["submit", spec.to_str().unwrap(), "--server", url, "--wait"]);
    let id = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert!(id.starts_with("cli-small-"), "{id}");
    let jobs = String::from_utf8(common::run_ok(&["jobs", "--server", url]).stdout).unwrap();
    assert!(jobs.contains(&id) && jobs.contains("finished"), "{jobs}");
    let job = String::from_utf8(common::run_ok(&["job", &id, "--server", url]).stdout).unwrap();
    assert!(
        job.contains("OrderFlowFeatures") && job.contains("book,features"),
        "{job}"
    );
    let sql = String::from_utf8(
        common::run_ok(&[
            "sql",
            "--server",
            url,
            "--format",
            "csv",
            "SELECT count(*) AS n FROM features WHERE job = 'cli-small'",
        ])
        .stdout,
    )
    .unwrap();
    let local = String::from_utf8(
        common::run_ok(&[
            "sql",
            "--lake",
            path.to_str().unwrap(),
            "--format",
            "csv",
            "SELECT count(*) AS n FROM features WHERE job = 'cli-small'",
        ])
        .stdout,
    )
    .unwrap();
    assert_eq!(sql, local);
    let e = common::run_err(&["sql", "--server", url, "DROP TABLE features"]);
    assert!(e.contains("refused"), "{e}");

    std::fs::write(&spec, synthetic("cli-slow", 2_000_000, true)).unwrap();
    let out = common::run_ok(&["submit", spec.to_str().unwrap(), "--server", url]);
    let slow = String::from_utf8(out.stdout).unwrap().trim().to_string();
    wait_for(&server.client(), &slow, "running", |j| {
        j.state == JobState::Running
    });
    let stop =
        String::from_utf8(common::run_ok(&["stop", &slow, "--server", url, "--immediate"]).stdout)
            .unwrap();
    assert!(stop.contains("stopped"), "{stop}");
    let e = common::run_err(&["job", "nope", "--server", url]);
    assert!(e.contains("404") && e.contains("nope"), "{e}");

    // The API's own description, and metrics Prometheus can scrape.
    let (status, doc) = get(&server, "/api/v1/openapi.json");
    assert_eq!(status, 200);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
    for p in [
        "/api/v1/jobs",
        "/api/v1/jobs/{id}/graph",
        "/api/v1/jobs/{id}/stop",
        "/api/v1/sql",
        "/api/v1/stream",
    ] {
        assert!(doc["paths"].get(p).is_some(), "{p} missing");
    }
    let (status, page) = get(&server, "/api/v1/docs");
    assert_eq!(status, 200);
    assert!(page.as_str().unwrap().contains("openapi"));
    let (_, metrics) = get(&server, "/metrics");
    let metrics = metrics.as_str().unwrap().to_string();
    assert!(
        metrics.contains("flowsense_jobs{state=\"finished\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("flowsense_http_requests_total{"),
        "{metrics}"
    );
}

#[test]
fn the_stream_pushes_a_running_jobs_graph_and_prometheus_scrapes_its_records() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lake");
    let server = Server::start(&path, &["-w", "2"], &[]);
    let c = server.client();
    let job = c.submit(&synthetic("watched", 2_000_000, true)).unwrap();
    wait_for(&c, &job.id, "running", |j| j.state == JobState::Running);

    let ws_url = format!(
        "{}/api/v1/stream?job={}&topics=graph,job",
        server.url.replace("http://", "ws://"),
        job.id
    );
    let (mut ws, _) = tungstenite::connect(ws_url).unwrap();
    let mut seen = Vec::new();
    while seen.len() < 4 {
        let msg = ws.read().unwrap();
        let v: Value = serde_json::from_str(msg.to_text().unwrap()).unwrap();
        if v["topic"] == "graph" {
            // The first message may come before the workers' first figures.
            let nodes = v["data"]["nodes"].as_array().unwrap();
            if let Some(op) = nodes.iter().find(|n| n["name"] == "OrderFlowFeatures") {
                seen.push(op["records_in"].as_u64().unwrap());
            }
        } else {
            assert_eq!(v["topic"], "job");
            assert_eq!(v["data"]["id"], job.id.as_str());
        }
    }
    assert!(seen.windows(2).all(|w| w[0] <= w[1]), "{seen:?}");
    assert!(seen.last().unwrap() > seen.first().unwrap(), "{seen:?}");

    // A real Prometheus scrapes the server and answers for the job's records.
    let Some(prom) = which("prometheus") else {
        panic!(
            "prometheus is not installed: run the tests through scripts/test, which installs it"
        );
    };
    let port = free_port();
    let target = server.url.trim_start_matches("http://");
    std::fs::write(
        dir.path().join("prometheus.yml"),
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: flowsense\n    \
             static_configs:\n      - targets: ['{target}']\n"
        ),
    )
    .unwrap();
    let mut p = std::process::Command::new(prom)
        .arg(format!(
            "--config.file={}",
            dir.path().join("prometheus.yml").display()
        ))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.path().join("tsdb").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let query = format!(
        "http://127.0.0.1:{port}/api/v1/query?query=sum(flowsense_operator_records_in_total{{name=%22watched%22,operator=%22OrderFlowFeatures%22}})"
    );
    let start = Instant::now();
    let value = loop {
        if let Ok(mut r) = agent().get(&query).call()
            && let Ok(text) = r.body_mut().read_to_string()
            && let Ok(v) = serde_json::from_str::<Value>(&text)
            && let Some(x) = v["data"]["result"][0]["value"][1].as_str()
        {
            break x.parse::<f64>().unwrap();
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "Prometheus never had the job's records"
        );
        std::thread::sleep(Duration::from_millis(250));
    };
    let _ = p.kill();
    let _ = p.wait();
    assert!(value > 0.0, "{value}");
    c.stop(&job.id, true).unwrap();
}

/// An example job renamed and paced at `speed` x real time.
fn paced_example(file: &str, name: &str, speed: f64) -> String {
    let text = std::fs::read_to_string(common::repo_path(file)).unwrap();
    let old = text
        .lines()
        .find(|l| l.starts_with("name = "))
        .unwrap()
        .to_string();
    text.replacen(&old, &format!("name = \"{name}\""), 1)
        .replacen(
            "[features]",
            &format!("[replay]\nspeed = {speed}\n\n[features]"),
            1,
        )
}

/// Every message of a stream until the server closes it.
fn read_stream(url: &str) -> Vec<Value> {
    let (mut ws, _) = tungstenite::connect(url).unwrap();
    let mut out = Vec::new();
    loop {
        match ws.read() {
            Ok(tungstenite::Message::Text(t)) => out.push(serde_json::from_str(&t).unwrap()),
            Ok(tungstenite::Message::Close(_)) | Err(_) => return out,
            Ok(_) => {}
        }
    }
}

/// The rows of `topic` in the messages, by symbol, each row as its JSON text.
fn streamed_rows(
    messages: &[Value],
    topic: &str,
) -> std::collections::BTreeMap<String, Vec<Value>> {
    let mut by_symbol = std::collections::BTreeMap::<String, Vec<Value>>::new();
    for m in messages.iter().filter(|m| m["topic"] == topic) {
        for r in m["data"].as_array().unwrap() {
            by_symbol
                .entry(
                    r["symbol"]
                        .as_str()
                        .unwrap_or_else(|| panic!("no symbol in {r}"))
                        .to_string(),
                )
                .or_default()
                .push(r.clone());
        }
    }
    by_symbol
}

/// Streamed rows are the lake's rows: per symbol, exactly the lake's rows from the first one
/// streamed on (the stream carries what is written after the subscription), and nearly all.
#[track_caller]
fn assert_streamed_rows_landed(
    what: &str,
    streamed: &std::collections::BTreeMap<String, Vec<Value>>,
    lake: &[Value],
) {
    let key = |r: &Value| serde_json::to_string(r).unwrap();
    let mut total = 0;
    for (symbol, rows) in streamed {
        let first = rows
            .iter()
            .map(|r| r["ts"].as_i64().unwrap())
            .min()
            .unwrap();
        let mut want: Vec<String> = lake
            .iter()
            .filter(|r| r["symbol"] == symbol.as_str() && r["ts"].as_i64().unwrap() >= first)
            .map(|r| {
                // The streamed rows carry the file's columns; compare those.
                let o = r.as_object().unwrap();
                let kept: serde_json::Map<String, Value> = o
                    .iter()
                    .filter(|(k, _)| rows[0].get(k.as_str()).is_some())
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                key(&Value::Object(kept))
            })
            .collect();
        let mut got: Vec<String> = rows.iter().map(key).collect();
        want.sort();
        got.sort();
        assert_eq!(
            got.len(),
            want.len(),
            "{what} of {symbol}: streamed vs the lake"
        );
        assert_eq!(got, want, "{what} of {symbol}: streamed vs the lake");
        total += got.len();
    }
    assert!(
        total * 10 >= lake.len() * 9 && total > 0,
        "{what}: {total} streamed of {} in the lake",
        lake.len()
    );
}

#[test]
fn the_stream_sends_the_rows_a_job_writes_and_a_paced_jobs_book_and_tape() {
    let dir = tempfile::tempdir().unwrap();
    let served = binance_lake(dir.path());
    // Two processes, so rows written on process 1 cross to the controller on process 0.
    let hosts = dir.path().join("hosts.txt");
    std::fs::write(
        &hosts,
        format!("127.0.0.1:{}\n127.0.0.1:{}\n", free_port(), free_port()),
    )
    .unwrap();
    let server = Server::cluster(&served, &["-w", "1"], &[], 2, Some(&hosts));
    let c = server.client();
    let ws = server.url.replace("http://", "ws://");

    // A batch job streams no book, a trading job no features, a feature job no fills.
    let batch = c
        .submit(
            &std::fs::read_to_string(common::repo_path("examples/binance-features.toml")).unwrap(),
        )
        .unwrap();
    let e = error_of(
        get(
            &server,
            &format!("/api/v1/stream?job={}&topics=book", batch.id),
        ),
        400,
    );
    assert!(e.contains("paced jobs only"), "{e}");
    let e = error_of(
        get(
            &server,
            &format!("/api/v1/stream?job={}&topics=fills", batch.id),
        ),
        400,
    );
    assert!(e.contains("writes no fills"), "{e}");
    wait_for(&c, &batch.id, "ended", |j| j.state.is_final());

    // Subscribed as soon as they are submitted: a paced backtest and a paced feature job.
    let trading = c
        .submit(&paced_example(
            "examples/binance-ofi-backtest.toml",
            "streamed-ofi",
            30.0,
        ))
        .unwrap();
    let features = c
        .submit(
            "name = \"streamed-features\"\n[replay]\nspeed = 14400.0\n[source.synthetic]\n\
             symbols = 4\ndays = 1\nseed = 7\nevents_per_day = 200000\n[features]\n\
             buckets = [\"1m\"]\nlevels = 5\n",
        )
        .unwrap();
    let e = error_of(
        get(
            &server,
            &format!("/api/v1/stream?job={}&topics=features", trading.id),
        ),
        400,
    );
    assert!(e.contains("writes no features"), "{e}");
    let (tu, fu) = (
        format!(
            "{ws}/api/v1/stream?job={}&topics=orders,fills,equity,book,trades,job",
            trading.id
        ),
        format!("{ws}/api/v1/stream?job={}&topics=features", features.id),
    );
    let fr = std::thread::spawn(move || read_stream(&fu));
    let tm = read_stream(&tu);
    let fm = fr.join().unwrap();
    let workers: std::collections::BTreeSet<u64> = tm
        .iter()
        .chain(&fm)
        .filter_map(|m| m["worker"].as_u64())
        .collect();
    // The Binance symbols all route to worker 0; the synthetic ones to both.
    assert_eq!(workers.len(), 2, "rows from both processes: {workers:?}");
    let tj = c.job(&trading.id).unwrap();
    assert_eq!(tj.state, JobState::Finished, "{tj:?}");
    assert_eq!(c.job(&features.id).unwrap().state, JobState::Finished);

    // Rows: what streamed is what the lake holds, as the output endpoint gives it.
    let lake_rows = |id: &str, table: &str| -> Vec<Value> {
        let (status, v) = get(
            &server,
            &format!("/api/v1/jobs/{id}/output?table={table}&limit=10000"),
        );
        assert_eq!(status, 200, "{v}");
        v["rows"].as_array().unwrap().clone()
    };
    for table in ["orders", "fills", "equity"] {
        let lake = lake_rows(&trading.id, table);
        assert!(lake.len() > 5, "{table}: {}", lake.len());
        assert_streamed_rows_landed(table, &streamed_rows(&tm, table), &lake);
    }
    let lake = lake_rows(&features.id, "features");
    assert_streamed_rows_landed("features", &streamed_rows(&fm, "features"), &lake);
    assert!(
        fm.iter().all(|m| m["topic"] == "features"),
        "only what was asked for"
    );

    // Books: the top 10 levels of each side, best first, never crossed.
    let books: Vec<&Value> = tm
        .iter()
        .filter(|m| m["topic"] == "book")
        .flat_map(|m| m["data"].as_array().unwrap())
        .collect();
    assert!(books.len() > 10, "{} books", books.len());
    for b in &books {
        let side = |k: &str| -> Vec<(f64, f64)> {
            b[k].as_array()
                .unwrap()
                .iter()
                .map(|l| (l[0].as_f64().unwrap(), l[1].as_f64().unwrap()))
                .collect()
        };
        let (bids, asks) = (side("bids"), side("asks"));
        assert!(bids.len() <= 10 && asks.len() <= 10, "{b}");
        assert!(bids.windows(2).all(|w| w[0].0 > w[1].0), "{b}");
        assert!(asks.windows(2).all(|w| w[0].0 < w[1].0), "{b}");
        if let (Some(bid), Some(ask)) = (bids.first(), asks.first()) {
            assert!(bid.0 < ask.0, "crossed: {b}");
        }
    }
    // The tape: every trade of the job's symbols from the first one streamed on.
    let tape = streamed_rows(&tm, "trades");
    assert_eq!(tape.len(), 3, "{:?}", tape.keys());
    let rt = common::rt();
    for (symbol, trades) in &tape {
        let first = trades
            .iter()
            .map(|t| t["ts"].as_i64().unwrap())
            .min()
            .unwrap();
        let n = rt.block_on(common::query_csv(
            &lake_at(&served),
            &format!(
                "SELECT count(*) AS n FROM trades WHERE symbol = '{symbol}' AND ts >= {first}"
            ),
        ));
        assert_eq!(
            n.lines().nth(1).unwrap(),
            trades.len().to_string(),
            "{symbol}"
        );
        assert!(
            trades
                .iter()
                .all(|t| t["side"] == "buy" || t["side"] == "sell")
        );
    }
    // The figures came too, and the last says the job finished.
    let last = tm.iter().rev().find(|m| m["topic"] == "job").unwrap();
    assert_eq!(last["data"]["state"], "finished");
}

/// A query's rows as JSON lines, sorted (the features table has list columns CSV cannot hold).
async fn json_lines(lake: &Lake, sql: &str) -> String {
    let session = flowsense_sql::LakeSession::open(lake).await.unwrap();
    let batches = session.query(sql).await.unwrap();
    let mut buf = Vec::new();
    flowsense_dataflows::output::write_batches(
        &batches,
        flowsense_dataflows::output::OutputFormat::Json,
        &mut buf,
    )
    .unwrap();
    let text = String::from_utf8(buf).unwrap();
    let mut lines: Vec<&str> = text.lines().collect();
    lines.sort_unstable();
    lines.join("\n")
}

fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    })
}

/// GET with headers, answering the status, the headers asked for and the body's bytes.
fn get_raw(
    s: &Server,
    path: &str,
    headers: &[(&str, &str)],
    want: &[&str],
) -> (u16, Vec<String>, Vec<u8>) {
    let mut req = agent().get(format!("{}{path}", s.url));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let mut r = req.call().unwrap();
    let got = want
        .iter()
        .map(|h| {
            r.headers()
                .get(*h)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string()
        })
        .collect();
    let status = r.status().as_u16();
    let body = r.body_mut().read_to_vec().unwrap();
    (status, got, body)
}

#[test]
fn the_server_serves_the_ui_a_jobs_spec_and_a_runs_report() {
    let dir = tempfile::tempdir().unwrap();
    let lake = binance_lake(dir.path());
    let spec =
        std::fs::read_to_string(common::repo_path("examples/binance-ofi-backtest.toml")).unwrap();
    let id = {
        let server = Server::start(&lake, &["-w", "1"], &[]);
        // The UI's page, and the bundle it loads (gzipped when asked).
        let (status, ct, page) = get_raw(&server, "/", &[], &["content-type"]);
        assert_eq!((status, ct[0].as_str()), (200, "text/html"));
        let page = String::from_utf8(page).unwrap();
        let script = page
            .split("src=\"")
            .nth(1)
            .and_then(|s| s.split('"').next())
            .unwrap()
            .to_string();
        assert!(script.starts_with("/assets/"), "{page}");
        let (status, h, _) = get_raw(
            &server,
            &script,
            &[("accept-encoding", "gzip")],
            &["content-type", "content-encoding", "cache-control"],
        );
        assert_eq!(status, 200);
        assert_eq!(h[0], "text/javascript");
        assert_eq!(h[1], "gzip");
        assert!(h[2].contains("immutable"), "{h:?}");
        assert_eq!(get_raw(&server, "/assets/none.js", &[], &[]).0, 404);

        let c = server.client();
        let job = c.submit(&spec).unwrap();
        let j = wait_for(&c, &job.id, "ended", |j| j.state.is_final());
        assert_eq!(j.state, JobState::Finished, "{j:?}");
        let (status, json) = get(&server, &format!("/api/v1/jobs/{}/spec", job.id));
        assert_eq!(status, 200, "{json}");
        assert_eq!(json["name"], "binance-ofi");
        assert_eq!(json["risk"]["drawdown_halt"], 0.05);
        let (status, _, toml) = get_raw(
            &server,
            &format!("/api/v1/jobs/{}/spec", job.id),
            &[("accept", "application/toml")],
            &[],
        );
        assert_eq!(status, 200);
        assert!(
            String::from_utf8(toml)
                .unwrap()
                .contains("name = \"binance-ofi\"")
        );
        assert_eq!(get(&server, "/api/v1/jobs/none/spec").0, 404);

        // The report, as `flowsense report` writes it.
        let path = format!("/api/v1/runs/{}/report", job.id);
        let (status, ct, html) = get_raw(&server, &path, &[], &["content-type"]);
        assert_eq!(status, 200);
        assert!(ct[0].starts_with("text/html"), "{ct:?}");
        assert!(String::from_utf8(html).unwrap().contains(&job.id));
        let e = error_of(get(&server, &format!("{path}?format=svg")), 400);
        assert!(e.contains("html or pdf"), "{e}");
        let e = error_of(get(&server, "/api/v1/runs/none/report"), 404);
        assert!(e.contains("no run"), "{e}");
        if flowsense_dataflows::report::find_chromium().is_some() {
            let (status, ct, pdf) = get_raw(
                &server,
                &format!("{path}?format=pdf"),
                &[],
                &["content-type"],
            );
            assert_eq!((status, ct[0].as_str()), (200, "application/pdf"));
            assert!(pdf.starts_with(b"%PDF"));
        }
        job.id
    };
    // A restarted server answers a past run's spec from the lake's runs table.
    let server = Server::start(&lake, &["-w", "1"], &[]);
    let (status, json) = get(&server, &format!("/api/v1/jobs/{id}/spec"));
    assert_eq!(status, 200, "{json}");
    assert_eq!(json["name"], "binance-ofi");
}

/// A subscriber that connects as soon as its job is submitted gets the rows from its tap on:
/// most of a batch job's, which runs for seconds (the first steps may run before the tap).
#[test]
fn a_subscriber_from_the_submission_on_gets_the_rows() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("lake"), &["-w", "2"], &[]);
    let c = server.client();
    let job = c
        .submit(&synthetic("batch-streamed", 200_000, false))
        .unwrap();
    let messages = read_stream(&format!(
        "{}/api/v1/stream?job={}&topics=features,job",
        server.url.replace("http://", "ws://"),
        job.id
    ));
    let j = wait_for(&c, &job.id, "ended", |j| j.state.is_final());
    assert_eq!(j.state, JobState::Finished, "{j:?}");
    let streamed: usize = streamed_rows(&messages, "features")
        .values()
        .map(Vec::len)
        .sum();
    assert!(
        streamed as u64 <= j.rows && streamed as u64 * 2 >= j.rows,
        "{streamed} of {} rows streamed, in {} messages",
        j.rows,
        messages.len()
    );
}

/// A local Binance sending the first `n` lines of the capture as they were received, its
/// stamps moved to now; its websocket server and REST URL.
fn binance_at_real_time(n: usize) -> (crate::venue::WsServer, String) {
    use crate::venue::{
        Script, capture_lines, now_offset, rest_server, shift_times, snapshot_and_frames, ws_server,
    };
    let lines = capture_lines(n);
    let (snapshot, frames) = snapshot_and_frames(&lines);
    let ms = now_offset(&frames);
    let ws = ws_server(vec![Script::paced(&lines, 1.0).shifted(ms)]);
    let (rest, _) = rest_server(shift_times(&snapshot, ms));
    (ws, rest)
}

#[test]
fn the_kill_switch_halts_a_paper_job_on_a_live_feed_and_flattens_it() {
    let (ws, rest) = binance_at_real_time(12000);
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    let s = Server::start(&lake, &[], &[]);
    let c = s.client();
    let spec = format!(
        "name = \"paper-kill\"\n[source.live]\nexchange = \"binance-usdm\"\n\
         symbols = [\"btcusdt\"]\nreconnect = false\nws_url = \"{}\"\nrest_url = \"{rest}\"\n\
         [features]\nbuckets = [\"1s\"]\nlevels = 5\n\
         [strategy]\nbucket = \"1s\"\nsignal = \"ofi_l1 / (bid_size + ask_size)\"\nentry = 0.2\n\
         exit = 0.0\norder = \"market\"\n[strategy.sizing]\nmethod = \"fixed\"\nsize = 0.01\n",
        ws.url
    );
    let id = c.submit(&spec).unwrap().id;
    let j = wait_for(&c, &id, "running with records", |j| {
        j.state == JobState::Running && j.rows > 5
    });
    assert_eq!(j.kind, flowsense_service::registry::JobKind::Paper);
    // A body that is not a kill request is refused, naming the key.
    let e = error_of(
        post(&s, "/api/v1/kill", "application/json", "{\"flaten\": true}"),
        400,
    );
    assert!(e.contains("flaten"), "{e}");
    let out = common::run_ok(&["kill", "--flatten", "--server", &s.url]);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains(&format!("halted {id}")), "{said}");
    std::thread::sleep(Duration::from_secs(2));
    c.stop(&id, false).unwrap();
    let j = c.wait(&id, Duration::from_secs(60)).unwrap();
    assert_eq!(j.state, JobState::Stopped, "{j:?}");
    drop(s);
    let lake = lake_at(&lake);
    let q = |sql: &str| common::rt().block_on(common::query_csv(&lake, sql));
    // Audited at once as a run of its own, and by the job's trader when it took the kill.
    let audit = q("SELECT run_id, symbol, detail FROM risk_events WHERE kind = 'kill'");
    assert!(
        audit.contains("kill-") && audit.contains(&format!("jobs [{id}]")),
        "{audit}"
    );
    assert!(audit.contains(&format!("{id},BTCUSDT-PERP,")), "{audit}");
    let kill_ts = q(&format!(
        "SELECT ts FROM risk_events WHERE kind = 'kill' AND run_id = '{id}'"
    ));
    let kill_ts: i64 = kill_ts.lines().nth(1).unwrap().parse().unwrap();
    // After the kill: no order but the flattening ones, and flat at the end.
    let after = q(&format!(
        "SELECT reason FROM orders WHERE run_id = '{id}' AND ts > {kill_ts} AND reason <> 'halt'"
    ));
    assert!(after.lines().count() <= 1, "orders after the kill: {after}");
    let held = q(&format!(
        "SELECT position FROM equity WHERE run_id = '{id}' AND ts <= {kill_ts} ORDER BY ts DESC LIMIT 1"
    ));
    if held.lines().nth(1).is_some_and(|p| p != "0.0") {
        let halt = q(&format!(
            "SELECT count(*) AS n FROM orders WHERE run_id = '{id}' AND reason = 'halt'"
        ));
        assert_ne!(
            halt.lines().nth(1),
            Some("0"),
            "held {held} but no flattening order"
        );
    }
    let last = q(&format!(
        "SELECT position FROM equity WHERE run_id = '{id}' ORDER BY ts DESC LIMIT 1"
    ));
    assert_eq!(last.lines().nth(1), Some("0.0"), "{last}");
}

#[test]
fn the_kill_switch_cancels_a_live_jobs_orders_at_interactive_brokers() {
    use flowsense_bench::tws::{FakeTws, OnOrder, TwsScript};
    let tws = FakeTws::start(TwsScript {
        on_order: OnOrder::Rest,
        ..TwsScript::default()
    })
    .unwrap();
    let (ws, rest) = binance_at_real_time(12000);
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    let s = Server::start(&lake, &[], &[]);
    let c = s.client();
    let port = tws.address().rsplit(':').next().unwrap();
    let spec = format!(
        "name = \"ib-kill\"\n[source.live]\nexchange = \"binance-usdm\"\n\
         symbols = [\"btcusdt\"]\nreconnect = false\nws_url = \"{}\"\nrest_url = \"{rest}\"\n\
         [features]\nbuckets = [\"1s\"]\nlevels = 5\n\
         [strategy]\nbucket = \"1s\"\nsignal = \"ofi_l1 / (bid_size + ask_size)\"\nentry = 0.2\n\
         exit = 0.0\norder = \"limit_join\"\n[strategy.sizing]\nmethod = \"fixed\"\nsize = 0.01\n\
         [broker]\nkind = \"ibkr\"\nport = {port}\n\
         [broker.contracts.BTCUSDT-PERP]\nsymbol = \"BTC\"\nsec_type = \"CRYPTO\"\nexchange = \"PAXOS\"\n",
        ws.url
    );
    let id = c.submit(&spec).unwrap().id;
    let end = std::time::Instant::now() + Duration::from_secs(60);
    while tws.open_orders() == 0 && std::time::Instant::now() < end {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(tws.open_orders(), 1, "no resting order at IB");
    let j = c.job(&id).unwrap();
    assert_eq!(j.kind, flowsense_service::registry::JobKind::Live);
    let out = common::run_ok(&["kill", "--server", &s.url]);
    assert!(String::from_utf8_lossy(&out.stdout).contains(&format!("halted {id}")));
    // The kill is sequenced to the workers; the trader then cancels its order at IB.
    std::thread::sleep(Duration::from_secs(2));
    while tws.open_orders() > 0 && std::time::Instant::now() < end {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(tws.open_orders(), 0, "the kill left an order working at IB");
    let sent = tws.placed().len();
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(tws.placed().len(), sent, "orders sent after the kill");
    assert_eq!(tws.open_orders(), 0);
    c.stop(&id, false).unwrap();
    let j = c.wait(&id, Duration::from_secs(60)).unwrap();
    assert_eq!(j.state, JobState::Stopped, "{j:?}");
}
