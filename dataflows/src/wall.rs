//! The driver's wall clock, for names and start stamps (run ids, the `runs` table); no
//! operator reads it.

use flowsense_core::UnixNanos;

/// A run id for `job` started now: `<job>-<UTC yyyymmddThhmmss>`.
pub fn new_run_id(job: &str) -> String {
    // `YYYY-MM-DDTHH:MM:SS` without its separators.
    let t: String = now_utc()[..19]
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .collect();
    format!("{job}-{t}")
}

/// The wall clock as `YYYY-MM-DDTHH:MM:SS.fffffffff` (the driver's, for names and the `runs`
/// table; no operator reads it).
fn now_utc() -> String {
    let ns = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64);
    flowsense_core::job::format_instant(UnixNanos(ns))
}

/// The current UTC time as `YYYY-MM-DDTHH:MM:SSZ`, for the `runs` table.
pub fn started_rfc3339() -> String {
    format!("{}Z", &now_utc()[..19])
}
