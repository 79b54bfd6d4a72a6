//! `flowsense bench ibkr`: what the Interactive Brokers sink costs, beside the bare `ibapi`
//! client, both against the scripted TWS on loopback ([`crate::tws`]).
//!
//! - **Order to the wire**: from an order handed to `IbBroker::submit` (the ledger, the queue,
//!   the sender thread, the client's rate limiter set out of the way, the socket) until the
//!   scripted TWS has read it. The baseline is the bare client's `submit_order` on the calling
//!   thread.
//! - **Order to acknowledgement**: until the strategy could read the order accepted (TWS's open
//!   order and status back through the client's reader thread, the session's order-stream
//!   thread and the ledger, polled as the trader polls). The baseline is the bare client's
//!   order-update stream yielding the order's status.
//!
//! Orders go one at a time, each once the last is acknowledged, so no queue builds up: these
//! are latencies, not throughput. IB's own path (the Gateway and the exchange) is not here.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use flowsense_core::job::ContractSpec;
use flowsense_core::order::{Broker, ClientOrderId, ExecReport, Order, OrderKind, ReportKind};
use flowsense_core::{Price, Side, Size, Symbol, UnixNanos};
use flowsense_sinks::ibkr::{IbConfig, IbSession};
use hdrhistogram::Histogram;
use ibapi::client::blocking::Client;
use ibapi::orders::{OrderUpdate, order_builder};
use ibapi::subscriptions::SubscriptionItem;

use crate::live::quantiles;
use crate::tws::{FakeTws, OnOrder, TwsScript};

/// Options of the benchmark.
#[derive(Clone, Debug)]
pub struct IbkrBench {
    /// Orders per run.
    pub orders: usize,
    /// Runs of each subject.
    pub repeat: usize,
}

struct Legs {
    wire: Histogram<u64>,
    ack: Histogram<u64>,
}

impl Legs {
    fn new() -> anyhow::Result<Legs> {
        Ok(Legs {
            wire: Histogram::new(3)?,
            ack: Histogram::new(3)?,
        })
    }
}

const WAIT: Duration = Duration::from_secs(10);

fn tws() -> anyhow::Result<FakeTws> {
    Ok(FakeTws::start(TwsScript {
        on_order: OnOrder::Rest,
        ..TwsScript::default()
    })?)
}

/// Waits (yielding) until the scripted TWS has read `n` orders; when it read the last.
fn on_the_wire(tws: &FakeTws, n: usize) -> anyhow::Result<Instant> {
    let end = Instant::now() + WAIT;
    loop {
        if let (got, Some(at)) = tws.last_placed()
            && got >= n
        {
            return Ok(at);
        }
        anyhow::ensure!(
            Instant::now() < end,
            "order {n} never reached the scripted TWS"
        );
        std::thread::yield_now();
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX).max(1)
}

/// The sink: orders through `IbBroker`, acknowledgements read as the trader reads them.
fn through_the_sink(orders: usize, legs: &mut Legs) -> anyhow::Result<()> {
    let tws = tws()?;
    let symbol = Symbol::new("AAPL")?;
    let mut contracts = BTreeMap::new();
    contracts.insert(symbol.clone(), ContractSpec::default());
    let session = Arc::new(IbSession::connect(IbConfig {
        job: "bench-ibkr".into(),
        address: tws.address().into(),
        client_id: 1,
        account: None,
        // Out of the way: one order at a time never meets IB's 50 a second.
        pacing: 1_000_000,
        reconnect_attempts: 0,
        contracts,
    })?);
    let mut broker = session.broker(&symbol);
    let mut reports: Vec<ExecReport> = Vec::new();
    for seq in 0..orders as u64 {
        let id = ClientOrderId::new("bench-ibkr", &symbol, seq);
        let order = Order::limit(
            id,
            symbol.clone(),
            Side::Buy,
            OrderKind::Limit,
            Price::from_units(99),
            Size::from_units(1),
            UnixNanos(seq as i64),
        );
        let t0 = Instant::now();
        broker.submit(order);
        let at = on_the_wire(&tws, seq as usize + 1)?;
        legs.wire.record(nanos(at.saturating_duration_since(t0)))?;
        let end = Instant::now() + WAIT;
        loop {
            broker.reports(UnixNanos(seq as i64), &mut reports);
            if reports
                .drain(..)
                .any(|r| r.order == id && r.kind == ReportKind::Accepted)
            {
                break;
            }
            anyhow::ensure!(Instant::now() < end, "order {seq} never acknowledged");
            std::thread::yield_now();
        }
        legs.ack.record(nanos(t0.elapsed()))?;
    }
    Ok(())
}

/// The baseline: the bare client, on the calling thread, and its order-update stream.
fn bare_client(orders: usize, legs: &mut Legs) -> anyhow::Result<()> {
    let tws = tws()?;
    let client = Client::connect(tws.address(), 1)?;
    let updates = client.order_update_stream()?;
    let contract = ibapi::contracts::Contract::stock("AAPL").build();
    for seq in 0..orders {
        let mut order = order_builder::limit_order(ibapi::orders::Action::Buy, 1.0, 99.0);
        order.order_ref = format!("bare-{seq}");
        let id = client.next_order_id();
        let t0 = Instant::now();
        client.submit_order(id, &contract, &order)?;
        let at = on_the_wire(&tws, seq + 1)?;
        legs.wire.record(nanos(at.saturating_duration_since(t0)))?;
        loop {
            match updates.next_timeout(WAIT) {
                Some(Ok(SubscriptionItem::Data(OrderUpdate::OrderStatus(s))))
                    if s.order_id == id =>
                {
                    break;
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => anyhow::bail!("order stream: {e}"),
                None => anyhow::bail!("order {seq} never acknowledged"),
            }
        }
        legs.ack.record(nanos(t0.elapsed()))?;
    }
    Ok(())
}

/// Runs the benchmark and returns its report.
pub fn run(b: &IbkrBench) -> anyhow::Result<String> {
    let mut out = format!(
        "Interactive Brokers sink against a scripted TWS on loopback, {} orders a run, {} runs \
         (release build expected; {} cores)\n",
        b.orders,
        b.repeat.max(1),
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    let (mut sink, mut bare) = (Legs::new()?, Legs::new()?);
    let mut p50s: Vec<(f64, f64, f64, f64)> = Vec::new();
    for _ in 0..b.repeat.max(1) {
        let (mut s, mut c) = (Legs::new()?, Legs::new()?);
        through_the_sink(b.orders, &mut s)?;
        bare_client(b.orders, &mut c)?;
        let p50 = |h: &Histogram<u64>| h.value_at_quantile(0.5) as f64 / 1e3;
        p50s.push((p50(&s.wire), p50(&c.wire), p50(&s.ack), p50(&c.ack)));
        sink.wire.add(&s.wire)?;
        sink.ack.add(&s.ack)?;
        bare.wire.add(&c.wire)?;
        bare.ack.add(&c.ack)?;
    }
    out.push_str(&format!(
        "order to the wire, sink:        {}\n",
        quantiles(&sink.wire)
    ));
    out.push_str(&format!(
        "order to the wire, bare client: {}\n",
        quantiles(&bare.wire)
    ));
    out.push_str(&format!(
        "order to accepted, sink:        {}\n",
        quantiles(&sink.ack)
    ));
    out.push_str(&format!(
        "order to accepted, bare client: {}\n",
        quantiles(&bare.ack)
    ));
    for (i, (sw, cw, sa, ca)) in p50s.iter().enumerate() {
        out.push_str(&format!(
            "run {}: p50 wire {sw:.1} us vs {cw:.1} us ({:.2}x), accepted {sa:.1} us vs {ca:.1} us ({:.2}x)\n",
            i + 1,
            sw / cw.max(1e-9),
            sa / ca.max(1e-9)
        ));
    }
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    out.push_str(&format!(
        "median of the runs' p50 ratios, sink / bare client: wire {:.2}x, accepted {:.2}x\n",
        median(p50s.iter().map(|p| p.0 / p.1.max(1e-9)).collect()),
        median(p50s.iter().map(|p| p.2 / p.3.max(1e-9)).collect())
    ));
    Ok(out)
}
