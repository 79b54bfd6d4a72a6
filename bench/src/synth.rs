//! `flowsense bench synth`: the synthetic generator alone, then with the book replay, Parquet
//! encoding, `file://` writes and several symbols at once, each beside the stage before it.

use flowsense_sinks::Lake;
use flowsense_sources::synth::{DayGenerator, SynthConfig, SyntheticMarket};

use crate::{at_once, measure, measure_writes, print_stages};

/// Runs the generation benchmark: `symbols` x 1 day of `events_per_day` messages.
pub async fn run(symbols: usize, events_per_day: u64, repeat: usize) -> anyhow::Result<()> {
    let cfg = SynthConfig {
        symbols,
        days: 1,
        seed: 42,
        events_per_day,
        ..Default::default()
    };
    let mut messages = 0u64;
    let dates = cfg.dates();
    for s in 0..symbols {
        let mut g = DayGenerator::new(&cfg, s, 0, dates[0]);
        let mut buf = Vec::new();
        messages += g.initial_orders().len() as u64;
        while g.next_events(&mut buf) {
            messages += buf.len() as u64;
            buf.clear();
        }
    }
    println!(
        "flowsense bench synth: {symbols} symbols x 1 day, {messages} order messages; median of {repeat} runs"
    );
    let gen_only = measure(
        "1 generator alone (Hawkes + queue-reactive)",
        repeat,
        || {
            for s in 0..symbols {
                let mut g = DayGenerator::new(&cfg, s, 0, dates[0]);
                let mut buf = Vec::new();
                while g.next_events(&mut buf) {
                    std::hint::black_box(&buf);
                    buf.clear();
                }
            }
            Ok(())
        },
    )?;
    let with_book = measure("2 + L3 book replay, trades and BBO", repeat, || {
        for r in SyntheticMarket::new(cfg.clone()) {
            std::hint::black_box(r);
        }
        Ok(())
    })?;
    let synth = async |lake: &Lake, parallel: usize| {
        flowsense_dataflows::synth::synth_parallel(lake, &cfg, None, false, parallel)
            .await
            .map(drop)
    };
    let mut kept = Vec::new();
    let mem = measure_writes(
        "3 + Parquet encode, in-memory store",
        repeat,
        true,
        &mut kept,
        async |lake: &Lake| synth(lake, 1).await,
    )
    .await?;
    let disk = measure_writes(
        "4 + file:// lake writes (synth -j 1)",
        repeat,
        false,
        &mut kept,
        async |lake: &Lake| synth(lake, 1).await,
    )
    .await?;
    let mut stages = vec![gen_only, with_book, mem, disk];
    let parallel = flowsense_dataflows::ingest::default_parallelism().min(symbols);
    let name = "5 + symbols at once (flowsense synth)";
    stages.extend(at_once(name, "symbols", repeat, parallel, &mut kept, synth).await?);
    print_stages("events", messages, &stages);
    drop(kept);
    Ok(())
}
