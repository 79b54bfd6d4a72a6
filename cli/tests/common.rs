//! Helpers shared by the integration tests.

use std::path::PathBuf;

use arrow::record_batch::RecordBatch;
use flowsense_sinks::Lake;
use flowsense_sql::LakeSession;

/// A path in the repository (`data/...`, `examples/...`), found through `CARGO_MANIFEST_DIR`
/// read when the test runs: clones share one target dir, and a test binary built in another
/// clone must not look for the files there.
pub fn repo_path(rel: &str) -> PathBuf {
    PathBuf::from(&std::env::var("CARGO_MANIFEST_DIR").expect("set by cargo"))
        .join("..")
        .join(rel)
}

/// The bundled real Binance captures.
pub fn binance_data() -> PathBuf {
    repo_path("data/binance")
}

/// A multi-threaded runtime for tests that drive async code.
pub fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// Runs a query and renders the result as CSV text, rows sorted, for comparisons.
pub async fn query_csv(lake: &Lake, sql: &str) -> String {
    let session = LakeSession::open(lake).await.unwrap();
    let batches = session
        .query(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    to_csv(&batches)
}

/// Batches as CSV lines (header first, then rows sorted).
pub fn to_csv(batches: &[RecordBatch]) -> String {
    let mut buf = Vec::new();
    flowsense_dataflows::output::write_batches(
        batches,
        flowsense_dataflows::output::OutputFormat::Csv,
        &mut buf,
    )
    .unwrap();
    let text = String::from_utf8(buf).unwrap();
    let mut lines: Vec<&str> = text.lines().collect();
    if lines.is_empty() {
        return String::new();
    }
    let header = lines.remove(0);
    lines.sort_unstable();
    format!("{header}\n{}", lines.join("\n"))
}

/// A single number from a query.
pub async fn query_u64(lake: &Lake, sql: &str) -> u64 {
    let csv = query_csv(lake, sql).await;
    csv.lines()
        .nth(1)
        .unwrap_or_else(|| panic!("{sql}: no rows"))
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("{sql}: {csv}"))
}

/// Asserts two long texts are equal, showing only the first differing line.
#[track_caller]
pub fn assert_same_text(a: &str, b: &str, what: &str) {
    if a == b {
        return;
    }
    let (la, lb): (Vec<&str>, Vec<&str>) = (a.lines().collect(), b.lines().collect());
    let i = la
        .iter()
        .zip(&lb)
        .position(|(x, y)| x != y)
        .unwrap_or(la.len().min(lb.len()));
    panic!(
        "{what}: {} vs {} lines; first difference at line {i}:\n  left:  {:?}\n  right: {:?}",
        la.len(),
        lb.len(),
        la.get(i),
        lb.get(i)
    );
}

/// The `flowsense` binary under test.
pub fn flowsense() -> std::process::Command {
    std::process::Command::new(env!("CARGO_BIN_EXE_flowsense"))
}

/// Runs `flowsense ARGS`, asserts it succeeded, and returns its output.
pub fn run_ok(args: &[&str]) -> std::process::Output {
    let out = flowsense().args(args).output().unwrap();
    assert!(
        out.status.success(),
        "flowsense {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Runs `flowsense ARGS`, asserts it failed, and returns its stderr.
pub fn run_err(args: &[&str]) -> String {
    let out = flowsense().args(args).output().unwrap();
    assert!(!out.status.success(), "flowsense {args:?} succeeded");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A loopback port free now (for a server another process is told to listen on).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The first line a spawned child prints (piped stdout); the rest is drained unread.
pub fn first_line(child: &mut std::process::Child) -> String {
    use std::io::BufRead;
    let mut line = String::new();
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    stdout.read_line(&mut line).unwrap();
    std::thread::spawn(move || std::io::copy(&mut stdout, &mut std::io::sink()));
    line
}
