//! `flowsense bench sql`: named queries over a lake, one JSON line per query with its median
//! time; `scripts/bench_sql.py` runs it beside DuckDB on the same files.

use std::path::Path;
use std::time::Instant;

use anyhow::Context;
use flowsense_sinks::Lake;
use flowsense_sql::LakeSession;

use crate::median;

/// Runs each query of `queries` (a JSON object `{"name": "SQL", ...}`) `repeat` times over the
/// lake, with DataFusion `options` set.
pub async fn run(
    lake: &str,
    queries: &Path,
    repeat: usize,
    options: &[(String, String)],
) -> anyhow::Result<()> {
    let lake = Lake::open(lake, &Default::default())?;
    let text = std::fs::read_to_string(queries)
        .with_context(|| format!("reading {}", queries.display()))?;
    let map: serde_json::Map<String, serde_json::Value> = serde_json::from_str(&text)?;
    let session = LakeSession::open_with(&lake, options).await?;
    for (name, sql) in map {
        let sql = sql.as_str().context("query text")?.to_string();
        let mut times = Vec::new();
        let mut rows = 0;
        for _ in 0..repeat.max(1) {
            let t = Instant::now();
            let batches = session
                .query(&sql)
                .await
                .with_context(|| format!("{name}: {sql}"))?;
            times.push(t.elapsed());
            rows = batches.iter().map(|b| b.num_rows()).sum::<usize>();
        }
        let ms = median(times).as_secs_f64() * 1e3;
        println!(
            "{}",
            serde_json::json!({ "name": name, "median_ms": ms, "rows": rows })
        );
    }
    Ok(())
}
