//! The `flowsense` binary as users call it: exit codes, output formats, the prompt.

use std::io::Write;
use std::process::Stdio;

use crate::common::{flowsense, run_err, run_ok};

#[test]
fn ingest_then_sql_in_every_format_and_the_prompt() {
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    let lake = lake.to_str().unwrap();
    let out = run_ok(&[
        "synth",
        "--lake",
        lake,
        "--symbols",
        "1",
        "--days",
        "1",
        "--events-per-day",
        "3000",
        "--quiet",
    ]);
    let summary = String::from_utf8_lossy(&out.stderr);
    assert!(
        summary.contains("book_events") && summary.contains("dead letters: none"),
        "{summary}"
    );

    let q = "SELECT symbol, count(*) AS n FROM trades GROUP BY symbol";
    let run = |fmt: &str| run_ok(&["sql", "--lake", lake, "--format", fmt, q]).stdout;
    let csv = String::from_utf8(run("csv")).unwrap();
    assert!(csv.starts_with("symbol,n\nSYN000,"), "{csv}");
    let json = String::from_utf8(run("json")).unwrap();
    assert!(json.starts_with("{\"symbol\":\"SYN000\",\"n\":"), "{json}");
    let table = String::from_utf8(run("table")).unwrap();
    assert!(table.contains("| SYN000 "), "{table}");
    assert!(run("parquet").starts_with(b"PAR1"));

    // FLOWSENSE_LAKE is the default lake.
    let out = flowsense()
        .env("FLOWSENSE_LAKE", lake)
        .args(["sql", "--format", "csv", q])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8(out.stdout).unwrap(), csv);

    // Refused statements fail with a message and a non-zero exit.
    let err = run_err(&["sql", "--lake", lake, "DROP TABLE trades"]);
    assert!(err.contains("not allowed"), "{err}");

    // The interactive prompt reads statements ending in ';', reports errors and goes on.
    let mut child = flowsense()
        .args(["sql", "--lake", lake, "--format", "csv"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .env("HOME", dir.path())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"SELECT 40 +\n 2 AS answer;\nDELETE FROM trades;\nSELECT count(*) > 0 AS ok FROM bbo;\n\\q\n").unwrap();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stdout.contains("answer\n42"), "{stdout}");
    assert!(stdout.contains("ok\ntrue"), "{stdout}");
    assert!(stderr.contains("refused"), "{stderr}");
}

#[test]
fn lobster_times_shift_by_the_utc_offset() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir
        .path()
        .join("ABC_2024-01-02_34200000_57600000_message_1.csv");
    std::fs::write(
        &input,
        "34200.5,1,1,100,1000000,1\n34201.0,4,1,40,1000000,1\n",
    )
    .unwrap();
    let lake = dir.path().join("lake");
    let lake = lake.to_str().unwrap();
    run_ok(&[
        "ingest",
        "-q",
        "--lake",
        lake,
        "--lobster-utc-offset-seconds",
        "18000",
        input.to_str().unwrap(),
    ]);
    let out = run_ok(&[
        "sql",
        "--lake",
        lake,
        "--format",
        "csv",
        "SELECT ts, side FROM trades",
    ]);
    // 2024-01-02 09:30:01 New York (UTC-5) is 14:30:01 UTC.
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        "ts,side\n1704205801000000000,sell\n"
    );
}

#[test]
fn ingest_of_a_missing_path_fails_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let err = run_err(&[
        "ingest",
        "--lake",
        dir.path().to_str().unwrap(),
        "/no/such/file.gz",
    ]);
    assert!(err.contains("no such file"), "{err}");
}
