//! `flowsense bench graph`: the feature graph's throughput in batch from a lake, and its
//! per-event latency in replay, each beside a plain single-threaded loop that drives the same
//! feature engine without timely, so the dataflow's overhead shows as a ratio.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use flowsense_core::job::{FeatureSpec, JobSpec};
use flowsense_core::{FeatureRow, Lake, MarketEvent, Symbol};
use flowsense_operators::engine::FeatureEngine;
use flowsense_sources::lake::{LakeReplay, LakeSelection};
use hdrhistogram::Histogram;
use rustc_hash::FxHashMap as HashMap;

use flowsense_dataflows::job::{CountSink, FeatureSink, SharedSink, build_job};
use flowsense_dataflows::run::{RunOptions, feed_batch, run_job};

/// Options of the graph benchmark.
#[derive(Clone, Debug)]
pub struct GraphBench {
    /// The lake to read (make it with `flowsense synth`).
    pub lake: Lake,
    /// Runs per stage; medians are reported.
    pub repeat: usize,
    /// Events held in memory for the in-memory stages and the latency run.
    pub memory_events: usize,
    /// Bucket widths.
    pub buckets: Vec<String>,
}

fn spec_for(b: &GraphBench, name: &str) -> anyhow::Result<JobSpec> {
    let buckets: Vec<String> = b.buckets.iter().map(|x| format!("{x:?}")).collect();
    Ok(JobSpec::from_toml(&format!(
        "name = {name:?}\n[source.lake]\n[features]\nbuckets = [{}]\n[sinks]\nlake = false\nstdout = true\n",
        buckets.join(", ")
    ))?)
}

/// The plain loop: one thread, one engine per symbol, no timely.
fn plain_loop(events: impl Iterator<Item = MarketEvent>, spec: &FeatureSpec) -> (u64, u64) {
    let mut engines: HashMap<Symbol, FeatureEngine> = HashMap::default();
    let mut rows: Vec<FeatureRow> = Vec::new();
    let (mut n, mut out) = (0u64, 0u64);
    for ev in events {
        if matches!(ev, MarketEvent::Bbo(..) | MarketEvent::Quote(..)) {
            continue;
        }
        n += 1;
        engines
            .entry(ev.symbol().clone())
            .or_insert_with(|| FeatureEngine::new(ev.symbol().clone(), spec))
            .on_event(&ev, &mut rows);
        out += rows.len() as u64;
        rows.clear();
    }
    for e in engines.values_mut() {
        e.finish(&mut rows);
    }
    (n, out + rows.len() as u64)
}

/// A stage's timing and the events it went through.
struct Row {
    stage: crate::Stage,
    events: u64,
}

/// [`crate::measure`] for a stage that reports how many events it handled.
fn timed(
    name: &'static str,
    repeat: usize,
    mut f: impl FnMut() -> anyhow::Result<u64>,
) -> anyhow::Result<Row> {
    let mut events = 0;
    let stage = crate::measure(name, repeat, || {
        events = f()?;
        Ok(())
    })?;
    Ok(Row { stage, events })
}

fn print_rows(title: &str, rows: &[Row]) {
    println!("\n{title}");
    println!(
        "{:<52} {:>12} {:>12} {:>14} {:>16} {:>9}",
        "stage", "events", "median ms", "events/s", "events/cpu-s", "x plain"
    );
    let base = rows[0].stage.wall.as_secs_f64();
    for r in rows {
        let s = r.stage.wall.as_secs_f64();
        println!(
            "{:<52} {:>12} {:>12.1} {:>14.0} {:>16.0} {:>9.2}",
            r.stage.name,
            r.events,
            s * 1e3,
            r.events as f64 / s,
            r.events as f64 / r.stage.cpu.max(1e-9),
            s / base
        );
    }
}

fn graph_stage(workers: usize) -> &'static str {
    if workers == 1 {
        "timely graph, 1 worker"
    } else {
        "timely graph, 2 workers"
    }
}

/// Runs the graph benchmark and prints its tables.
pub fn run(b: GraphBench) -> anyhow::Result<()> {
    let spec = spec_for(&b, "bench-graph")?;
    let sel = LakeSelection::default();
    let all = |_: &Symbol| true;
    println!(
        "feature graph benchmark: buckets {:?}, {} levels, lake {}",
        b.buckets,
        spec.features.levels,
        b.lake.url()
    );

    // Batch from the lake.
    let mut rows = vec![timed("plain loop, 1 thread (baseline)", b.repeat, || {
        Ok(plain_loop(
            LakeReplay::open(b.lake.clone(), sel.clone(), all)?,
            &spec.features,
        )
        .0)
    })?];
    rows.push(timed("lake read alone, 1 thread", b.repeat, || {
        Ok(LakeReplay::open(b.lake.clone(), sel.clone(), all)?.count() as u64)
    })?);
    for w in [1, 2] {
        rows.push(timed(graph_stage(w), b.repeat, || {
            let opts = RunOptions {
                workers: w,
                ..Default::default()
            };
            let sinks: flowsense_dataflows::run::SinkFactory =
                Arc::new(|_, _| Ok(Box::new(CountSink::default()) as Box<dyn FeatureSink>));
            Ok(run_job(&spec, &b.lake, &opts, sinks)?.events())
        })?);
    }
    print_rows("batch from the lake (reading Parquet included)", &rows);

    // In memory: the first `memory_events` events, so the read is out of the picture.
    let events: Vec<MarketEvent> = LakeReplay::open(b.lake.clone(), sel.clone(), all)?
        .take(b.memory_events)
        .collect();
    let mut mem = vec![timed("plain loop, 1 thread (baseline)", b.repeat, || {
        Ok(plain_loop(events.iter().cloned(), &spec.features).0)
    })?];
    for w in [1usize, 2] {
        mem.push(timed(graph_stage(w), b.repeat, || {
            memory_graph(&events, &spec, w)
        })?);
    }
    print_rows("in memory (events decoded beforehand)", &mem);

    latency(&events, &b)?;
    Ok(())
}

/// The graph over in-memory events on `workers` threads; each worker takes its own symbols'
/// events, split before the clock starts.
fn memory_graph(events: &[MarketEvent], spec: &JobSpec, workers: usize) -> anyhow::Result<u64> {
    let mut parts: Vec<Vec<MarketEvent>> = vec![Vec::new(); workers];
    for e in events {
        parts[(e.symbol().route() % workers as u64) as usize].push(e.clone());
    }
    let parts = Arc::new(Mutex::new(parts.into_iter().map(Some).collect::<Vec<_>>()));
    let spec = spec.clone();
    let guards = timely::execute(timely::Config::process(workers), move |worker| {
        let mine = parts.lock().expect("not poisoned")[worker.index()]
            .take()
            .unwrap_or_default();
        let sink = SharedSink::new(Box::new(CountSink::default()));
        let s2 = spec.clone();
        let sink2 = sink.clone();
        let mut h = worker.dataflow::<u64, _, _>(move |scope| build_job(scope, &s2, sink2));
        let n = feed_batch(
            worker,
            &mut h,
            mine.into_iter(),
            RunOptions::default().batch,
            spec.epoch.nanos(),
            None,
        );
        drop(h.input);
        worker.step_while(|| !h.probe.done());
        n
    })
    .map_err(|e| anyhow::anyhow!("timely: {e}"))?;
    Ok(guards.join().into_iter().map(|r| r.unwrap_or(0)).sum())
}

/// Per-event latency in replay mode: each event goes in on its own, the input advances to its
/// epoch, and the worker steps until the event's per-event feature row reaches the sink. Beside
/// it, the same engine called directly.
fn latency(events: &[MarketEvent], b: &GraphBench) -> anyhow::Result<()> {
    let mut spec = spec_for(b, "bench-latency")?;
    spec.features.per_event = true;
    let n = events.len().min(1_000_000);
    let events = &events[..n];
    // The plain engine: time per call.
    let mut plain = Histogram::<u64>::new(3)?;
    let mut engines: HashMap<Symbol, FeatureEngine> = HashMap::default();
    let mut rows = Vec::new();
    for ev in events {
        let e = engines
            .entry(ev.symbol().clone())
            .or_insert_with(|| FeatureEngine::new(ev.symbol().clone(), &spec.features));
        let t = Instant::now();
        e.on_event(ev, &mut rows);
        let d = t.elapsed().as_nanos() as u64;
        if !rows.is_empty() {
            plain.record(d.max(1))?;
        }
        rows.clear();
    }
    // The graph, one worker, an event at a time.
    let evs: Vec<MarketEvent> = events.to_vec();
    let hist = Arc::new(Mutex::new(Histogram::<u64>::new(3)?));
    let hist_w = hist.clone();
    let guards = timely::execute(timely::Config::thread(), move |worker| {
        let rows = Rc::new(RefCell::new(0u64));
        let counter = Counter(rows.clone());
        let sink = SharedSink::new(Box::new(counter));
        let s2 = spec.clone();
        let sink2 = sink.clone();
        let mut h = worker.dataflow::<u64, _, _>(move |scope| build_job(scope, &s2, sink2));
        let epoch = spec.epoch.nanos();
        let mut local = Histogram::<u64>::new(3).expect("valid histogram");
        let mut high = i64::MIN;
        for ev in evs.clone() {
            high = high.max(ev.ts().0);
            let t = flowsense_dataflows::run::input_time(high, epoch);
            if t > *h.input.time() {
                h.input.advance_to(t);
            }
            let before = *rows.borrow();
            let start = Instant::now();
            h.input.send(ev);
            h.input.flush();
            let mut steps = 0;
            while *rows.borrow() == before && steps < 4 {
                worker.step();
                steps += 1;
            }
            if *rows.borrow() > before {
                let _ = local.record((start.elapsed().as_nanos() as u64).max(1));
            }
        }
        drop(h.input);
        worker.step_while(|| !h.probe.done());
        let _ = hist_w.lock().map(|mut g| g.add(&local));
    })
    .map_err(|e| anyhow::anyhow!("timely: {e}"))?;
    drop(guards);
    let graph = hist
        .lock()
        .map_err(|_| anyhow::anyhow!("poisoned"))?
        .clone();
    println!(
        "\nper-event latency, replay mode ({n} events, per-event rows, 1 worker), microseconds"
    );
    println!(
        "{:<40} {:>10} {:>10} {:>10} {:>10}",
        "", "p50", "p99", "p999", "max"
    );
    for (name, h) in [
        ("plain engine call (baseline)", &plain),
        ("event in -> row at the sink (timely)", &graph),
    ] {
        let us = |q: f64| h.value_at_quantile(q) as f64 / 1e3;
        println!(
            "{name:<40} {:>10.2} {:>10.2} {:>10.2} {:>10.2}",
            us(0.5),
            us(0.99),
            us(0.999),
            h.max() as f64 / 1e3
        );
    }
    Ok(())
}

/// Counts rows into a shared cell (the latency run watches it).
struct Counter(Rc<RefCell<u64>>);

impl FeatureSink for Counter {
    fn write(&mut self, rows: &mut Vec<FeatureRow>) -> anyhow::Result<()> {
        *self.0.borrow_mut() += rows.len() as u64;
        rows.clear();
        Ok(())
    }
    fn finish(&mut self) -> anyhow::Result<()> {
        Ok(())
    }
}
