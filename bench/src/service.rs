//! The service's costs, each beside a baseline in the same run: a feature job submitted to a
//! running 1 x 2 cluster against `flowsense run -w 2` of the same spec, 2 processes x 1 worker
//! against 1 x 2, submit-to-running latency against a plain HTTP round trip, and the API under
//! load (wrk) against `GET /health`.
//!
//! Every server is a real `flowsense serve` process (this binary, spawned), reached over
//! loopback HTTP.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use flowsense_service::client::Client;
use flowsense_service::registry::JobState;
use hdrhistogram::Histogram;

/// What to measure.
pub struct ServiceBench {
    /// The `flowsense` binary (servers and `flowsense run` are spawned from it).
    pub exe: PathBuf,
    /// Symbols of the synthetic feature job.
    pub symbols: usize,
    /// Mean events per symbol-day of the feature job.
    pub events_per_day: u64,
    /// Runs per stage; the median is reported.
    pub repeat: usize,
    /// Small jobs submitted for the latency figures.
    pub submissions: usize,
    /// Seconds of load per endpoint (wrk).
    pub load_seconds: u64,
}

/// A running server (killed on drop).
struct Served {
    children: Vec<Child>,
    url: String,
}

impl Drop for Served {
    fn drop(&mut self) {
        for c in self.children.iter_mut().rev() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn serve(exe: &Path, lake: &Path, processes: usize, workers: usize) -> anyhow::Result<Served> {
    let dir = lake.parent().context("the lake has a parent")?;
    let hosts = dir.join(format!("hosts-{processes}.txt"));
    if processes > 1 {
        let mut text = String::new();
        for _ in 0..processes {
            text.push_str(&format!("127.0.0.1:{}\n", free_port()?));
        }
        std::fs::write(&hosts, text)?;
    }
    let mut children = Vec::new();
    let spawn = |p: usize| -> anyhow::Result<Child> {
        let mut c = Command::new(exe);
        c.arg("serve")
            .args(["-w", &workers.to_string(), "--lake"])
            .arg(lake)
            .env("RUST_LOG", "error")
            .stdout(if p == 0 {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stderr(Stdio::null());
        if processes > 1 {
            c.args(["-n", &processes.to_string(), "-p", &p.to_string(), "-h"])
                .arg(&hosts);
        }
        if p == 0 {
            c.args(["--listen", "127.0.0.1:0"]);
        }
        Ok(c.spawn()?)
    };
    for p in (1..processes).rev() {
        children.push(spawn(p)?);
    }
    let mut first = spawn(0)?;
    let mut out = BufReader::new(first.stdout.take().context("piped")?);
    let mut line = String::new();
    out.read_line(&mut line)?;
    std::thread::spawn(move || std::io::copy(&mut out, &mut std::io::sink()));
    children.push(first);
    let url = line
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .with_context(|| format!("no URL in the server's first line {line:?}"))?
        .to_string();
    let served = Served { children, url };
    let agent = agent();
    let start = Instant::now();
    while !agent
        .get(format!("{}/api/v1/ready", served.url))
        .call()
        .is_ok_and(|r| r.status().is_success())
    {
        anyhow::ensure!(start.elapsed() < Duration::from_secs(60), "never ready");
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(served)
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into()
}

fn spec(name: &str, symbols: usize, events_per_day: u64, paced: bool) -> String {
    let replay = if paced { "[replay]\nspeed = 1.0\n" } else { "" };
    format!(
        "name = \"{name}\"\n{replay}[source.synthetic]\nsymbols = {symbols}\ndays = 1\nseed = 11\n\
         events_per_day = {events_per_day}\n[features]\nbuckets = [\"100ms\", \"1s\", \"10s\", \"1m\"]\n\
         levels = 10\n"
    )
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

/// Submits and polls until the job ends; wall seconds from the request to the final state.
fn submit_and_wait(c: &Client, text: &str) -> anyhow::Result<f64> {
    let start = Instant::now();
    let id = c.submit(text)?.id;
    loop {
        let j = c.job(&id)?;
        if j.state.is_final() {
            anyhow::ensure!(j.state == JobState::Finished, "job {id}: {j:?}");
            return Ok(start.elapsed().as_secs_f64());
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Submits, subscribes to the job's `features` at once (a reader on its own thread) and polls
/// until the job ends: wall seconds from the request to the final state, and the rows the
/// stream delivered (read to its close).
fn submit_streamed(c: &Client, text: &str) -> anyhow::Result<(f64, usize)> {
    let start = Instant::now();
    let id = c.submit(text)?.id;
    let url = format!(
        "{}/api/v1/stream?job={id}&topics=features",
        c_url(c).replace("http://", "ws://")
    );
    let reader = std::thread::spawn(move || -> anyhow::Result<usize> {
        let (mut ws, _) = tungstenite::connect(url)?;
        let mut rows = 0;
        loop {
            match ws.read() {
                Ok(tungstenite::Message::Text(t)) => {
                    let v: serde_json::Value = serde_json::from_str(&t)?;
                    rows += v["data"].as_array().map_or(0, Vec::len);
                }
                Ok(tungstenite::Message::Close(_))
                | Err(tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed) => {
                    return Ok(rows);
                }
                Err(e) => anyhow::bail!("the stream after {rows} rows: {e}"),
                Ok(_) => {}
            }
        }
    });
    let seconds = loop {
        let j = c.job(&id)?;
        if j.state.is_final() {
            anyhow::ensure!(j.state == JobState::Finished, "job {id}: {j:?}");
            break start.elapsed().as_secs_f64();
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    let rows = reader
        .join()
        .map_err(|_| anyhow::anyhow!("the stream's reader panicked"))??;
    Ok((seconds, rows))
}

/// Runs every stage and prints the figures.
pub fn run(b: ServiceBench) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let lake = dir.path().join("lake");
    let job = dir.path().join("job.toml");
    let text = spec("bench-features", b.symbols, b.events_per_day, false);
    std::fs::write(&job, &text)?;
    let repeat = b.repeat.max(1);

    println!(
        "feature job: {} synthetic symbols x {} events/day, buckets 100ms,1s,10s,1m; median of {repeat}",
        b.symbols, b.events_per_day
    );
    let mut by_hand = Vec::new();
    for _ in 0..repeat {
        let start = Instant::now();
        let st = Command::new(&b.exe)
            .args(["run", "-w", "2", "-q", "--lake"])
            .arg(&lake)
            .arg(&job)
            .status()?;
        anyhow::ensure!(st.success(), "flowsense run failed");
        by_hand.push(start.elapsed().as_secs_f64());
    }
    let by_hand = median(by_hand);
    println!("  flowsense run -w 2 (process start included)   {by_hand:8.3} s   1.00x");
    let one_by_two = serve(&b.exe, &lake, 1, 2)?;
    let c = Client::new(&one_by_two.url);
    let mut served = Vec::new();
    for _ in 0..repeat {
        served.push(submit_and_wait(&c, &text)?);
    }
    let served = median(served);
    println!(
        "  submitted to a running 1 x 2 cluster          {served:8.3} s   {:.2}x of flowsense run -w 2",
        served / by_hand
    );
    // The same job with a subscriber to its rows: what the stream's copying costs.
    let mut streamed = Vec::new();
    let mut rows = 0;
    for _ in 0..repeat {
        let (t, n) = submit_streamed(&c, &text)?;
        streamed.push(t);
        rows = n;
    }
    let streamed = median(streamed);
    println!(
        "  the same, streaming its features ({rows} rows)  {streamed:8.3} s   {:.2}x of unstreamed",
        streamed / served
    );
    {
        let two_by_one = serve(&b.exe, &lake, 2, 1)?;
        let c2 = Client::new(&two_by_one.url);
        let mut t = Vec::new();
        for _ in 0..repeat {
            t.push(submit_and_wait(&c2, &text)?);
        }
        let t = median(t);
        println!(
            "  submitted to a running 2 x 1 cluster          {t:8.3} s   {:.2}x of 1 x 2",
            t / served
        );
    }

    // Submit-to-running against a plain round trip.
    let agent = agent();
    let mut rtt = Histogram::<u64>::new(3)?;
    for _ in 0..200 {
        let start = Instant::now();
        agent.get(format!("{}/api/v1/health", c_url(&c))).call()?;
        rtt.record(start.elapsed().as_micros() as u64)?;
    }
    let mut running = Histogram::<u64>::new(3)?;
    for k in 0..b.submissions {
        let start = Instant::now();
        let id = c.submit(&spec(&format!("latency-{k}"), 1, 2000, false))?.id;
        loop {
            let j = c.job(&id)?;
            if j.state != JobState::Submitted {
                break;
            }
        }
        running.record(start.elapsed().as_micros() as u64)?;
        c.wait(&id, Duration::from_secs(60))?;
    }
    println!(
        "submit to running, {} small jobs (client-observed, polling)\n  \
         GET /health round trip      p50 {:7.2} ms  p99 {:7.2} ms   1.00x\n  \
         submit -> running           p50 {:7.2} ms  p99 {:7.2} ms   {:.1}x (p50)",
        b.submissions,
        rtt.value_at_quantile(0.5) as f64 / 1e3,
        rtt.value_at_quantile(0.99) as f64 / 1e3,
        running.value_at_quantile(0.5) as f64 / 1e3,
        running.value_at_quantile(0.99) as f64 / 1e3,
        running.value_at_quantile(0.5) as f64 / rtt.value_at_quantile(0.5).max(1) as f64,
    );

    // The API under load, with a paced job running so the graph has figures.
    let watched = c.submit(&spec("bench-watched", 2, 2_000_000, true))?.id;
    std::thread::sleep(Duration::from_secs(2));
    let Some(wrk) = which("wrk") else {
        println!("API under load: wrk not found (apt-get install wrk); skipped");
        return Ok(());
    };
    let script = dir.path().join("sql.lua");
    std::fs::write(
        &script,
        "wrk.method = \"POST\"\nwrk.body = \"SELECT 1 AS one\"\nwrk.headers[\"Content-Type\"] = \"text/plain\"\n",
    )?;
    println!(
        "API under load: wrk -t2 -c16 -d{}s --latency (2 cores shared with the server)",
        b.load_seconds
    );
    let base = c_url(&c);
    let mut baseline = None;
    for (what, path, lua) in [
        ("GET /api/v1/health", "/api/v1/health".to_string(), None),
        (
            "GET /api/v1/jobs/{id}/graph",
            format!("/api/v1/jobs/{watched}/graph"),
            None,
        ),
        (
            "POST /api/v1/sql (SELECT 1)",
            "/api/v1/sql".to_string(),
            Some(&script),
        ),
    ] {
        let mut cmd = Command::new(&wrk);
        cmd.args([
            "-t2",
            "-c16",
            &format!("-d{}s", b.load_seconds),
            "--latency",
        ]);
        if let Some(s) = lua {
            cmd.arg("-s").arg(s);
        }
        let out = cmd.arg(format!("{base}{path}")).output()?;
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let (rps, p99, errors) = parse_wrk(&text);
        let ratio = match baseline {
            None => {
                baseline = Some(rps);
                1.0
            }
            Some(b) => rps / b,
        };
        println!(
            "  {what:30} {rps:9.0} req/s  p99 {p99:7.2} ms  non-2xx/errors {errors}   {ratio:.2}x of /health"
        );
    }
    c.stop(&watched, true)?;
    Ok(())
}

fn c_url(c: &Client) -> String {
    c.base().to_string()
}

/// Requests/s, p99 in ms and errors (socket errors plus non-2xx) from wrk's report.
fn parse_wrk(text: &str) -> (f64, f64, u64) {
    let mut rps = 0.0;
    let mut p99 = f64::NAN;
    let mut errors = 0;
    for line in text.lines() {
        let l = line.trim();
        if let Some(v) = l.strip_prefix("Requests/sec:") {
            rps = v.trim().parse().unwrap_or(0.0);
        } else if let Some(v) = l.strip_prefix("99%") {
            let v = v.trim();
            let (num, unit) = v.split_at(v.find(|c: char| c.is_alphabetic()).unwrap_or(v.len()));
            let n: f64 = num.parse().unwrap_or(f64::NAN);
            p99 = match unit {
                "us" => n / 1e3,
                "ms" => n,
                "s" => n * 1e3,
                _ => n,
            };
        } else if let Some(v) = l.strip_prefix("Non-2xx or 3xx responses:") {
            errors += v.trim().parse::<u64>().unwrap_or(0);
        } else if let Some(v) = l.strip_prefix("Socket errors:") {
            errors += v
                .split(',')
                .filter_map(|p| p.split_whitespace().last()?.parse::<u64>().ok())
                .sum::<u64>();
        }
    }
    (rps, p99, errors)
}

fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrk_reports_are_read() {
        let text = "  Latency Distribution\n     50%  1.20ms\n     99%  850.00us\n  \
                    Socket errors: connect 0, read 2, write 0, timeout 1\n\
                    Requests/sec:  12345.67\n";
        let (rps, p99, errors) = parse_wrk(text);
        assert_eq!(rps, 12345.67);
        assert!((p99 - 0.85).abs() < 1e-9);
        assert_eq!(errors, 3);
    }
}
