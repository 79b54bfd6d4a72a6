//! `flowsense bench market-making`: a plain market maker on a capture file through the simulated
//! exchange, for the side-by-side with hftbacktest (`scripts/compare_hftbacktest.py`).
//!
//! Every `interval` of feed time the maker quotes `qty` at the best bid and at the best ask
//! (post-only limits: refused rather than taking), within `max_position` either way; a quote whose price
//! left the touch is cancelled and placed again once the cancel is confirmed. The book it looks
//! at is rebuilt from the same events the exchange sees, at feed time (receive time where the
//! capture has one). Fills are printed as CSV, then one summary line on stderr.

use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use flowsense_core::book::L2Book;
use flowsense_core::job::Span;
use flowsense_core::order::{Broker, ClientOrderId, ExecReport, Order, OrderKind, ReportKind};
use flowsense_core::strategy::ExecutionSpec;
use flowsense_core::{MarketEvent, Price, Side, Size, Symbol, UnixNanos};
use flowsense_operators::SimExchange;
use flowsense_sources::Record;

/// Options of the market-making run.
#[derive(Clone, Debug)]
pub struct MarketMaking {
    /// Capture files (one symbol's).
    pub inputs: Vec<PathBuf>,
    /// The symbol to trade (default: the first seen).
    pub symbol: Option<String>,
    /// Quote size.
    pub qty: f64,
    /// Largest position either way.
    pub max_position: f64,
    /// Re-quote interval.
    pub interval: Span,
    /// The simulated exchange.
    pub execution: ExecutionSpec,
}

/// One quote side's working order.
#[derive(Clone, Copy, Debug, Default)]
struct Quote {
    id: Option<ClientOrderId>,
    price: Option<Price>,
    cancelling: bool,
    filled: Size,
}

/// Runs it; fills go to `out` as CSV (`ts,side,price,qty,liquidity`).
pub fn run(mm: &MarketMaking, out: &mut dyn Write) -> anyhow::Result<()> {
    let inputs =
        flowsense_sources::detect::open_inputs(&mm.inputs, None).context("opening the capture")?;
    let mut events: Vec<MarketEvent> = Vec::new();
    for (_, _, reader) in inputs {
        for r in reader {
            if let Record::Event(e) = r?
                && matches!(e, MarketEvent::Depth(..) | MarketEvent::Trade(..))
            {
                events.push(e);
            }
        }
    }
    let symbol = match &mm.symbol {
        Some(s) => Symbol::new(s)?,
        None => events
            .first()
            .map(|e| e.symbol().clone())
            .context("the capture holds no depth or trades")?,
    };
    events.retain(|e| e.symbol() == &symbol);
    events.sort_by_key(|e| e.order_key());

    let start = Instant::now();
    let mut ex = SimExchange::new(symbol.clone(), &mm.execution);
    let mut book = L2Book::default();
    let qty = Size::from_f64(mm.qty).context("qty")?;
    let max_pos = Size::from_f64(mm.max_position).context("max_position")?;
    let interval = mm.interval.0 as i64;
    let (mut bid_q, mut ask_q) = (Quote::default(), Quote::default());
    let mut position = Size::ZERO;
    let (mut cash, mut fees, mut fills, mut seq) = (0.0f64, 0.0f64, 0u64, 0u64);
    let mut next_quote = i64::MIN;
    let mut reports: Vec<ExecReport> = Vec::new();
    writeln!(out, "ts,side,price,qty,liquidity")?;
    let mut last_mid = None;
    // A receive clock behind the exchange's (this capture's runs 1.27 s behind) would let orders
    // arrive before the data they answer; as hftbacktest's converter does, move feed time
    // forward by the largest such gap, so that no event is received before it happened.
    let skew = events
        .iter()
        .map(|e| e.ts().0 - e.feed_ts().0)
        .max()
        .unwrap_or(0)
        .max(0);
    if skew > 0 {
        eprintln!(
            "feed time moved {:.3} s forward: the capture's receive clock ran behind",
            skew as f64 / 1e9
        );
    }
    for ev in &events {
        let feed = ev.feed_ts().0 + skew;
        // The maker acts on what it knew before this event.
        if next_quote == i64::MIN {
            next_quote = feed - feed.rem_euclid(interval) + interval;
        }
        while feed >= next_quote {
            ex.reports(UnixNanos(next_quote), &mut reports);
            for r in reports.drain(..) {
                for q in [&mut bid_q, &mut ask_q] {
                    if q.id != Some(r.order) {
                        continue;
                    }
                    match &r.kind {
                        ReportKind::Fill(f) => {
                            let s = f.size;
                            let px = f.price.as_f64();
                            match f.side {
                                Side::Buy => {
                                    position += s;
                                    cash -= px * s.as_f64();
                                }
                                Side::Sell => {
                                    position -= s;
                                    cash += px * s.as_f64();
                                }
                            }
                            fees += f.fee;
                            cash -= f.fee;
                            fills += 1;
                            q.filled += s;
                            writeln!(
                                out,
                                "{},{},{},{},{:?}",
                                f.ts.0,
                                f.side.as_str(),
                                f.price,
                                f.size,
                                f.liquidity
                            )?;
                        }
                        ReportKind::Cancelled | ReportKind::Rejected(_) => *q = Quote::default(),
                        ReportKind::Accepted => {}
                    }
                    if q.filled >= qty {
                        *q = Quote::default(); // filled completely: the side is free
                    }
                }
            }
            let t = next_quote;
            for (side, q) in [(Side::Buy, &mut bid_q), (Side::Sell, &mut ask_q)] {
                let touch = match side {
                    Side::Buy => book.best_bid(),
                    Side::Sell => book.best_ask(),
                }
                .map(|(p, _)| p);
                let room = match side {
                    Side::Buy => max_pos - position,
                    Side::Sell => max_pos + position,
                };
                if q.cancelling {
                    continue;
                }
                if let Some(id) = q.id {
                    if q.price != touch || room < qty {
                        ex.cancel(id, UnixNanos(t));
                        q.cancelling = true;
                    }
                    continue;
                }
                if let Some(p) = touch
                    && room >= qty
                    && !book.is_crossed()
                {
                    seq += 1;
                    let id = ClientOrderId(seq);
                    ex.submit(Order::limit(
                        id,
                        symbol.clone(),
                        side,
                        OrderKind::PostOnly,
                        p,
                        qty,
                        UnixNanos(t),
                    ));
                    *q = Quote {
                        id: Some(id),
                        price: Some(p),
                        cancelling: false,
                        filled: Size::ZERO,
                    };
                }
            }
            next_quote += interval;
        }
        ex.on_market(ev);
        if let MarketEvent::Depth(_, d) = ev {
            if d.is_snapshot {
                book.clear();
            }
            for (side, levels) in [(Side::Buy, &d.bids), (Side::Sell, &d.asks)] {
                for &(p, q) in levels {
                    book.set_level(side, p, q);
                }
            }
            if let (Some((b, _)), Some((a, _))) = (book.best_bid(), book.best_ask()) {
                last_mid = Some((b.as_f64() + a.as_f64()) / 2.0);
            }
        }
    }
    let secs = start.elapsed().as_secs_f64();
    let mid = last_mid.unwrap_or(0.0);
    eprintln!(
        "market making on {symbol}: {} events in {secs:.3} s ({:.0} events/s); {fills} fills, \
         position {position}, fees {fees:.4}, PnL at the last mid {:.4}",
        events.len(),
        events.len() as f64 / secs.max(1e-9),
        cash + position.as_f64() * mid
    );
    Ok(())
}
