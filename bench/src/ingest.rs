//! `flowsense bench ingest`: Binance capture ingest end to end, beside gzip decoding alone and
//! gzip + JSON parsing alone, then several sources at once.

use std::io::BufRead;
use std::path::PathBuf;

use anyhow::Context;
use flowsense_sinks::Lake;
use flowsense_sources::binance::open_text;
use flowsense_sources::detect::open_inputs;

use crate::{at_once, measure, measure_writes, print_stages};

/// Runs the ingest benchmark over capture files or folders (none: the bundled `data/binance`).
pub async fn run(inputs: Vec<PathBuf>, repeat: usize) -> anyhow::Result<()> {
    let inputs = default_inputs(inputs);
    let files = capture_files(&inputs)?;
    let mut lines = 0u64;
    let mut bytes = 0u64;
    for f in &files {
        let mut r = open_text(f)?;
        let mut buf = Vec::new();
        while r.read_until(b'\n', &mut buf)? > 0 {
            lines += 1;
            bytes += buf.len() as u64;
            buf.clear();
        }
    }
    println!(
        "flowsense bench ingest: {} files, {lines} lines, {:.1} MB of JSON; median of {repeat} runs",
        files.len(),
        bytes as f64 / 1e6
    );
    let gzip = measure("1 gzip decode + line split", repeat, || {
        for f in &files {
            let mut r = open_text(f)?;
            let mut buf = Vec::new();
            while r.read_until(b'\n', &mut buf)? > 0 {
                buf.clear();
            }
        }
        Ok(())
    })?;
    let json = measure("2 gzip + JSON parse (serde, IgnoredAny)", repeat, || {
        for f in &files {
            let mut r = open_text(f)?;
            let mut buf = Vec::new();
            while r.read_until(b'\n', &mut buf)? > 0 {
                if let Some(i) = buf.iter().position(|&b| b == b' ') {
                    let _: serde::de::IgnoredAny =
                        serde_json::from_slice(&buf[i + 1..]).context("json")?;
                }
                buf.clear();
            }
        }
        Ok(())
    })?;
    let read = measure("3 reader: parse, validate, rebuild book", repeat, || {
        for (_, _, reader) in
            open_inputs(&inputs, Some(flowsense_sources::detect::Format::Binance))?
        {
            for r in reader {
                std::hint::black_box(r?);
            }
        }
        Ok(())
    })?;
    let ingest = async |lake: &Lake, parallel: usize| {
        let binance = Some(flowsense_sources::detect::Format::Binance);
        let options = Default::default();
        flowsense_dataflows::ingest::ingest_sources(
            lake, &inputs, binance, &options, false, parallel,
        )
        .await
        .map(drop)
    };
    let mut kept = Vec::new();
    let end = measure_writes(
        "4 flowsense ingest, one source at a time",
        repeat,
        false,
        &mut kept,
        async |lake: &Lake| ingest(lake, 1).await,
    )
    .await?;
    let mut stages = vec![gzip, json, read, end];
    let parallel = flowsense_dataflows::ingest::default_parallelism();
    let name = "5 flowsense ingest, sources at once (-j)";
    stages.extend(at_once(name, "sources", repeat, parallel, &mut kept, ingest).await?);
    print_stages("lines", lines, &stages);
    drop(kept);
    Ok(())
}

fn default_inputs(inputs: Vec<PathBuf>) -> Vec<PathBuf> {
    if inputs.is_empty() {
        vec![PathBuf::from("data/binance")]
    } else {
        inputs
    }
}

fn capture_files(inputs: &[PathBuf]) -> anyhow::Result<Vec<PathBuf>> {
    Ok(
        open_inputs(inputs, Some(flowsense_sources::detect::Format::Binance))?
            .into_iter()
            .flat_map(|(_, files, _)| files)
            .collect(),
    )
}
