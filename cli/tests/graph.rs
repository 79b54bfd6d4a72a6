//! The feature graph end to end: worker and process invariance, lake replay against the capture
//! files, the features table in SQL, and the OFI relation on real data.

use std::sync::{Arc, Mutex};

use flowsense_core::job::JobSpec;
use flowsense_core::{FeatureRow, Lake};
use flowsense_dataflows::job::FeatureSink;
use flowsense_dataflows::run::{RunOptions, run_job};

use crate::common;

/// Collects every worker's rows in one place.
struct Shared(Arc<Mutex<Vec<FeatureRow>>>);

impl FeatureSink for Shared {
    fn write(&mut self, rows: &mut Vec<FeatureRow>) -> anyhow::Result<()> {
        self.0.lock().unwrap().append(rows);
        Ok(())
    }
    fn finish(&mut self) -> anyhow::Result<()> {
        Ok(())
    }
}

/// Runs a job on `workers` threads and returns its rows sorted by (symbol, bucket, ts).
pub(crate) fn run_collect(spec: &JobSpec, lake: &Lake, workers: usize) -> Vec<FeatureRow> {
    let rows = Arc::new(Mutex::new(Vec::new()));
    let r = rows.clone();
    let opts = RunOptions {
        workers,
        ..Default::default()
    };
    let report = run_job(
        spec,
        lake,
        &opts,
        Arc::new(move |_, _| Ok(Box::new(Shared(r.clone())) as Box<dyn FeatureSink>)),
    )
    .unwrap();
    assert_eq!(report.workers.len(), workers);
    let mut rows = std::mem::take(&mut *rows.lock().unwrap());
    sort(&mut rows);
    rows
}

fn sort(rows: &mut [FeatureRow]) {
    rows.sort_by(|a, b| {
        (a.symbol.as_str(), &a.bucket, a.ts).cmp(&(b.symbol.as_str(), &b.bucket, b.ts))
    });
}

fn as_json(rows: &[FeatureRow]) -> Vec<String> {
    rows.iter()
        .map(|r| serde_json::to_string(r).unwrap())
        .collect()
}

fn synthetic_spec(name: &str) -> JobSpec {
    JobSpec::from_toml(&format!(
        r#"
        name = "{name}"
        [source.synthetic]
        symbols = 5
        events_per_day = 20000
        seed = 9
        [features]
        buckets = ["100ms", "1s", "1m"]
        "#
    ))
    .unwrap()
}

#[test]
fn results_are_identical_for_1_2_and_4_workers() {
    let dir = tempfile::tempdir().unwrap();
    let lake = Lake::open(dir.path().to_str().unwrap(), &Default::default()).unwrap();
    let spec = synthetic_spec("inv");
    let one = as_json(&run_collect(&spec, &lake, 1));
    assert!(one.len() > 10_000, "{} rows", one.len());
    for w in [2, 4] {
        let many = as_json(&run_collect(&spec, &lake, w));
        assert!(one == many, "{w} workers differ from 1");
    }
}

#[test]
fn two_processes_on_loopback_match_one_process() {
    let dir = tempfile::tempdir().unwrap();
    let job = dir.path().join("job.toml");
    let mut spec = synthetic_spec("procs");
    spec.sinks.lake = false;
    spec.sinks.stdout = true;
    std::fs::write(&job, spec.to_toml()).unwrap();
    let port = {
        // Two free ports, found by binding and releasing them.
        let a = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let b = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        (
            a.local_addr().unwrap().port(),
            b.local_addr().unwrap().port(),
        )
    };
    let hosts = dir.path().join("hosts.txt");
    std::fs::write(
        &hosts,
        format!("127.0.0.1:{}\n127.0.0.1:{}\n", port.0, port.1),
    )
    .unwrap();
    let spawn = |p: usize| {
        common::flowsense()
            .args([
                "run",
                job.to_str().unwrap(),
                "-q",
                "-w",
                "1",
                "-n",
                "2",
                "-p",
            ])
            .arg(p.to_string())
            .arg("-h")
            .arg(&hosts)
            .arg("--lake")
            .arg(dir.path().join("lake"))
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    // Drain both processes at once: a full stdout pipe would stall one, and with it the other.
    let waits: Vec<_> = [spawn(0), spawn(1)]
        .into_iter()
        .map(|child| std::thread::spawn(move || child.wait_with_output().unwrap()))
        .collect();
    let mut lines = Vec::new();
    for w in waits {
        let out = w.join().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        // Timely itself prints "awaiting connections" on stdout while processes connect.
        lines.extend(
            String::from_utf8(out.stdout)
                .unwrap()
                .lines()
                .filter(|l| l.starts_with('{'))
                .map(str::to_string),
        );
    }
    lines.sort();
    // The same job in one process, through the same JSON lines sink.
    let lake_dir = dir.path().join("lake");
    let one = common::run_ok(&[
        "run",
        job.to_str().unwrap(),
        "-q",
        "--lake",
        lake_dir.to_str().unwrap(),
    ]);
    let mut want: Vec<String> = String::from_utf8(one.stdout)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    want.sort();
    assert!(want.len() > 10_000, "{} rows", want.len());
    common::assert_same_text(&lines.join("\n"), &want.join("\n"), "2 processes vs 1");
}

#[test]
fn lake_replay_gives_the_same_features_as_the_capture_files() {
    let dir = tempfile::tempdir().unwrap();
    let lake = Lake::open(dir.path().to_str().unwrap(), &Default::default()).unwrap();
    let data = common::binance_data();
    common::rt()
        .block_on(flowsense_dataflows::ingest::ingest_paths_with(
            &lake,
            std::slice::from_ref(&data),
            None,
            &Default::default(),
            false,
        ))
        .unwrap();
    let capture = JobSpec::from_toml(&format!(
        "name = \"c\"\n[source.capture]\npaths = [{:?}]\n[features]\nbuckets = [\"1s\", \"10s\"]\n",
        data.display().to_string()
    ))
    .unwrap();
    let from_lake = JobSpec::from_toml(
        "name = \"l\"\n[source.lake]\n[features]\nbuckets = [\"1s\", \"10s\"]\n",
    )
    .unwrap();
    let a = run_collect(&capture, &lake, 1);
    let b = run_collect(&from_lake, &lake, 2);
    let symbols: std::collections::BTreeSet<_> = a.iter().map(|r| r.symbol.to_string()).collect();
    assert_eq!(symbols.len(), 3, "{symbols:?}");
    // The books the graph rebuilds are sound: never crossed or locked at a bucket's end.
    let crossed: Vec<_> = a
        .iter()
        .filter(|r| r.spread.is_some_and(|s| s <= 0.0))
        .map(|r| (r.symbol.to_string(), r.ts, r.spread))
        .collect();
    assert!(
        crossed.is_empty(),
        "crossed books: {:?}",
        &crossed[..crossed.len().min(5)]
    );
    common::assert_same_text(
        &as_json(&a).join("\n"),
        &as_json(&b).join("\n"),
        "lake vs capture",
    );
}

#[test]
fn run_writes_a_features_table_that_sql_reads() {
    let dir = tempfile::tempdir().unwrap();
    let job = dir.path().join("job.toml");
    std::fs::write(&job, synthetic_spec("tbl").to_toml()).unwrap();
    let lake_dir = dir.path().join("lake");
    let out = common::run_ok(&[
        "run",
        job.to_str().unwrap(),
        "-w",
        "2",
        "--stats",
        "--lake",
        lake_dir.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("feature rows"), "{stderr}");
    assert!(
        stderr.contains("OrderFlowFeatures") && stderr.contains("records in"),
        "{stderr}"
    );
    let lake = Lake::open(lake_dir.to_str().unwrap(), &Default::default()).unwrap();
    let rt = common::rt();
    let n = rt.block_on(common::query_u64(
        &lake,
        "SELECT count(*) FROM features WHERE job = 'tbl'",
    ));
    let csv = rt.block_on(common::query_csv(
        &lake,
        "SELECT bucket, count(DISTINCT symbol) AS symbols, min(ts) < max(ts) AS spans, \
         bool_and(mid > 0) AS mids, bool_and(array_length(ofi_levels) = 10) AS levels \
         FROM features GROUP BY bucket",
    ));
    assert_eq!(
        csv,
        "bucket,symbols,spans,mids,levels\n100ms,5,true,true,true\n1m,5,true,true,true\n1s,5,true,true,true"
    );
    // The graph's figures, from timely's logging: every event fed in reached the feature
    // operator (over both workers), and every row it made reached the sink.
    let events: u64 = stderr
        .lines()
        .find(|l| l.starts_with("job tbl:"))
        .and_then(|l| l.split_whitespace().nth(2))
        .and_then(|w| w.parse().ok())
        .unwrap_or_else(|| panic!("no event count in {stderr}"));
    let ops = rt.block_on(common::query_csv(
        &lake,
        "SELECT name, sum(records_in) AS r_in, sum(records_out) AS r_out, count(*) AS workers, \
         bool_and(busy_ns > 0) AS busy FROM flowsense_operators WHERE job = 'tbl' \
         AND name IN ('OrderFlowFeatures', 'FeatureSink') GROUP BY name",
    ));
    assert_eq!(
        ops,
        format!(
            "name,r_in,r_out,workers,busy\nFeatureSink,{n},0,2,true\nOrderFlowFeatures,{events},{n},2,true"
        )
    );
    // Frontier lag is event time between the input and each stage: in batch the input runs up
    // to 16 batches ahead (hours of this sparse market), but never more than the day's span.
    let lag = rt.block_on(common::query_u64(
        &lake,
        "SELECT count(*) FROM flowsense_operators WHERE job = 'tbl' \
         AND frontier_lag_ns IS NOT NULL AND frontier_lag_ns BETWEEN 0 AND 86400000000000",
    ));
    assert_eq!(lag, 4, "OrderFlowFeatures and FeatureSink on 2 workers");
    let channels = rt.block_on(common::query_u64(
        &lake,
        "SELECT count(*) FROM flowsense_channels WHERE job = 'tbl' AND records_sent > 0",
    ));
    assert!(channels >= 4, "{channels} busy channels");
    let mut spec = synthetic_spec("tbl");
    spec.sinks.lake = false;
    let one = run_collect(&spec, &lake, 1);
    assert_eq!(n as usize, one.len());
    // Running again replaces the job's files rather than adding rows.
    common::run_ok(&[
        "run",
        job.to_str().unwrap(),
        "-q",
        "--lake",
        lake_dir.to_str().unwrap(),
    ]);
    let n2 = rt.block_on(common::query_u64(&lake, "SELECT count(*) FROM features"));
    assert_eq!(n, n2);
}

/// Ordinary least squares with an intercept; returns (coefficients without the intercept, R^2).
fn ols(x: &[Vec<f64>], y: &[f64]) -> (Vec<f64>, f64) {
    let k = x[0].len() + 1;
    let mut a = vec![vec![0.0; k + 1]; k];
    for (row, &yi) in x.iter().zip(y) {
        let mut v = vec![1.0];
        v.extend(row);
        for i in 0..k {
            for j in 0..k {
                a[i][j] += v[i] * v[j];
            }
            a[i][k] += v[i] * yi;
        }
    }
    // Gaussian elimination with partial pivoting on the normal equations.
    for c in 0..k {
        let p = (c..k)
            .max_by(|&i, &j| a[i][c].abs().total_cmp(&a[j][c].abs()))
            .unwrap();
        a.swap(c, p);
        for r in 0..k {
            if r != c && a[c][c] != 0.0 {
                let f = a[r][c] / a[c][c];
                let pivot = a[c].clone();
                for (x, p) in a[r].iter_mut().zip(&pivot).skip(c) {
                    *x -= f * p;
                }
            }
        }
    }
    let beta: Vec<f64> = (0..k).map(|i| a[i][k] / a[i][i]).collect();
    let mean = y.iter().sum::<f64>() / y.len() as f64;
    let (mut ss_res, mut ss_tot) = (0.0, 0.0);
    for (row, &yi) in x.iter().zip(y) {
        let fit = beta[0] + row.iter().zip(&beta[1..]).map(|(a, b)| a * b).sum::<f64>();
        ss_res += (yi - fit).powi(2);
        ss_tot += (yi - mean).powi(2);
    }
    (beta[1..].to_vec(), 1.0 - ss_res / ss_tot)
}

/// Cont, Kukanov and Stoikov (2014): over short intervals, mid-price changes are close to linear
/// in order-flow imbalance. On the bundled three minutes of BTCUSDT perpetual futures we use 1 s
/// buckets: about 180 observations, each still aggregating dozens of book events (10 s buckets,
/// the papers' choice, would leave 18 points).
#[test]
fn ofi_explains_mid_changes_on_the_real_capture() {
    let dir = tempfile::tempdir().unwrap();
    let lake = Lake::open(dir.path().to_str().unwrap(), &Default::default()).unwrap();
    let spec = JobSpec::from_toml(&format!(
        "name = \"ofi\"\nsymbols = [\"BTCUSDT-PERP\"]\n[source.capture]\npaths = [{:?}]\n[features]\nbuckets = [\"1s\"]\n",
        common::binance_data().join("usdm").display().to_string()
    ))
    .unwrap();
    let rows = run_collect(&spec, &lake, 1);
    // Mid change over each bucket against that bucket's OFI.
    let mut y = Vec::new();
    let (mut x1, mut x10, mut xml) = (Vec::new(), Vec::new(), Vec::new());
    for w in rows.windows(2) {
        let (Some(a), Some(b)) = (w[0].mid, w[1].mid) else {
            continue;
        };
        if w[1].ts - w[0].ts != 1_000_000_000 {
            continue; // only adjacent buckets
        }
        y.push(b - a);
        x1.push(vec![w[1].ofi_l1]);
        x10.push(vec![w[1].ofi_l10]);
        xml.push(w[1].ofi_levels.to_vec());
    }
    let (b1, r1) = ols(&x1, &y);
    let (b10, r10) = ols(&x10, &y);
    let (_, rml) = ols(&xml, &y);
    println!(
        "OFI relation, BTCUSDT-PERP, 1 s buckets, n = {}: best level beta = {:.4} R^2 = {:.3}; \
         summed 10 levels beta = {:.4} R^2 = {:.3}; 10 levels as regressors R^2 = {:.3}",
        y.len(),
        b1[0],
        r1,
        b10[0],
        r10,
        rml
    );
    assert!(y.len() > 150, "{} observations", y.len());
    assert!(
        b1[0] > 0.0 && r1 > 0.2,
        "best-level OFI: beta {} R^2 {r1}",
        b1[0]
    );
    assert!(rml >= r1 - 1e-12, "multi-level R^2 {rml} < best level {r1}");
}

#[test]
fn every_shipped_example_job_parses() {
    let dir = common::repo_path("examples");
    let mut n = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            JobSpec::from_file(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            n += 1;
        }
    }
    assert!(n >= 4, "{n} examples");
}

#[test]
fn paced_replay_gives_the_same_rows_as_batch() {
    let dir = tempfile::tempdir().unwrap();
    let lake = Lake::open(dir.path().to_str().unwrap(), &Default::default()).unwrap();
    let batch = synthetic_spec("replay");
    let mut replay = batch.clone();
    // A 6.5-hour session in about 25 ms of wall time: paced, advancing every epoch.
    replay.replay = Some(flowsense_core::job::Replay { speed: 1.0e6 });
    let a = as_json(&run_collect(&batch, &lake, 1));
    let b = as_json(&run_collect(&replay, &lake, 2));
    assert!(a == b, "replay differs from batch");
}

#[test]
fn a_job_over_an_empty_lake_says_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let job = dir.path().join("job.toml");
    let lake = dir.path().join("lake");
    let args = [
        "run",
        job.to_str().unwrap(),
        "--lake",
        lake.to_str().unwrap(),
    ];
    std::fs::write(&job, "name = \"empty\"\n[source.lake]\n").unwrap();
    let out = common::run_ok(&args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("0 events") && stderr.contains("flowsense ingest"),
        "{stderr}"
    );
    // A spec with a typo is refused with the key named.
    std::fs::write(
        &job,
        "name = \"typo\"\n[source.lake]\nfrm = \"2024-08-08\"\n",
    )
    .unwrap();
    let stderr = common::run_err(&args);
    assert!(stderr.contains("frm"), "{stderr}");
}
