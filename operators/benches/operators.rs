//! Criterion benches of the operators' hot paths, each beside a baseline in the same run:
//!
//! ```sh
//! cargo bench -p flowsense-operators --bench operators
//! ```
//!
//! - `features`: the feature engine per event (book, OFI, VPIN, returns, buckets) against the
//!   L3 book alone on the same events;
//! - `exchange`: the simulated exchange with the strategy's quotes resting against the same
//!   exchange with no orders (the book rebuild alone).
//!
//! The events are one synthetic day of one symbol, seed 42. After criterion's own report the
//! bench prints each group's medians as multiples of its baseline.

#![allow(missing_docs, clippy::unwrap_used)]

use std::hint::black_box;
use std::path::PathBuf;

use criterion::{Criterion, Throughput};
use flowsense_core::book::L3Book;
use flowsense_core::job::FeatureSpec;
use flowsense_core::order::{Broker, ClientOrderId, Order, OrderKind};
use flowsense_core::strategy::ExecutionSpec;
use flowsense_core::{MarketEvent, Side, Size, Symbol, UnixNanos};
use flowsense_operators::SimExchange;
use flowsense_operators::engine::FeatureEngine;
use flowsense_sources::Record;
use flowsense_sources::synth::{SynthConfig, SyntheticMarket};

/// One synthetic day of one symbol (about 200 K order messages and what the replay derives).
fn events() -> Vec<MarketEvent> {
    let cfg = SynthConfig {
        symbols: 1,
        days: 1,
        seed: 42,
        events_per_day: 200_000,
        ..Default::default()
    };
    SyntheticMarket::new(cfg)
        .filter_map(|r| match r {
            Record::Event(e) => Some(e),
            _ => None,
        })
        .collect()
}

fn features(c: &mut Criterion, events: &[MarketEvent]) {
    let mut g = c.benchmark_group("features");
    g.sample_size(10);
    g.throughput(Throughput::Elements(events.len() as u64));
    g.bench_function("baseline: L3 book alone", |b| {
        b.iter(|| {
            let mut book = L3Book::default();
            for ev in events {
                if let MarketEvent::Order(_, o) = ev {
                    let _ = black_box(book.apply(o));
                }
            }
        })
    });
    let spec = FeatureSpec::default();
    g.bench_function("feature engine", |b| {
        b.iter(|| {
            let sym = events[0].symbol().clone();
            let mut engine = FeatureEngine::new(sym, &spec);
            let mut rows = Vec::new();
            for ev in events {
                engine.on_event(ev, &mut rows);
                rows.clear();
            }
            engine.finish(&mut rows);
            black_box(rows.len())
        })
    });
    g.finish();
}

/// Feeds the day to an exchange; with `quote`, a bid and an ask at the touch are placed every
/// 1000 events (a post-only pair, the market maker's loop at its simplest).
fn exchange_run(events: &[MarketEvent], sym: &Symbol, quote: bool) -> usize {
    let spec = ExecutionSpec {
        maker_fee: 0.0,
        ..Default::default()
    };
    let mut ex = SimExchange::new(sym.clone(), &spec);
    let mut reports = Vec::new();
    let (mut bid, mut ask) = (None, None);
    let mut id = 0u64;
    for (i, ev) in events.iter().enumerate() {
        if let MarketEvent::Bbo(_, b) = ev {
            (bid, ask) = (b.bid.map(|l| l.0), b.ask.map(|l| l.0));
        }
        if quote && i % 1000 == 0 {
            for (side, px) in [(Side::Buy, bid), (Side::Sell, ask)] {
                if let Some(px) = px {
                    id += 1;
                    let at = ev.ts();
                    ex.submit(Order::limit(
                        ClientOrderId(id),
                        sym.clone(),
                        side,
                        OrderKind::PostOnly,
                        px,
                        Size::from_units(1),
                        at,
                    ));
                }
            }
        }
        ex.on_market(ev);
        ex.reports(UnixNanos(i64::MAX), &mut reports);
        reports.clear();
    }
    ex.resting()
}

fn exchange(c: &mut Criterion, events: &[MarketEvent]) {
    let sym = events[0].symbol().clone();
    let mut g = c.benchmark_group("exchange");
    g.sample_size(10);
    g.throughput(Throughput::Elements(events.len() as u64));
    g.bench_function("baseline: no orders", |b| {
        b.iter(|| black_box(exchange_run(events, &sym, false)))
    });
    g.bench_function("quotes resting", |b| {
        b.iter(|| black_box(exchange_run(events, &sym, true)))
    });
    g.finish();
}

/// Criterion's median estimate (ns) of `group/name`, from its output folder.
fn median_ns(group: &str, name: &str) -> Option<f64> {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let dir = name.replace(':', "_");
    let path = target
        .join("criterion")
        .join(group)
        .join(dir)
        .join("new/estimates.json");
    let text = std::fs::read_to_string(path).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    v["median"]["point_estimate"].as_f64()
}

fn ratios(events: usize) {
    println!(
        "\n{:<12} {:<26} {:>12} {:>14} {:>12}",
        "group", "bench", "median ms", "events/s", "x baseline"
    );
    for (group, names) in [
        ("features", ["baseline: L3 book alone", "feature engine"]),
        ("exchange", ["baseline: no orders", "quotes resting"]),
    ] {
        let base = median_ns(group, names[0]);
        for name in names {
            let Some(ns) = median_ns(group, name) else {
                continue;
            };
            let ratio = base.map_or("n/a".to_string(), |b| format!("{:.2}", ns / b));
            let rate = events as f64 / (ns / 1e9);
            println!(
                "{group:<12} {name:<26} {:>12.1} {rate:>14.0} {ratio:>12}",
                ns / 1e6
            );
        }
    }
}

fn main() {
    let events = events();
    let mut c = Criterion::default().configure_from_args();
    features(&mut c, &events);
    exchange(&mut c, &events);
    c.final_summary();
    ratios(events.len());
}
