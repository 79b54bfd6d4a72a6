//! The portfolio's drawdown monitor, and the traders of every symbol run in one merged order so
//! that it sees every sleeve's equity alike on every run.
//!
//! Without `[risk.portfolio]` each symbol's [`Trader`] runs wherever its events are routed and
//! watches only its own sleeve. With it, the `Trade` operator sends every event to one worker and
//! runs the traders there through [`PortfolioTraders`]:
//!
//! ```text
//!  events (any worker) ─> one queue per symbol, in the order each symbol's events came
//!                            │  merge: the smallest head by (feed time, exchange time, symbol),
//!                            │  taken only once the frontier has passed its feed time
//!                            v
//!                  that symbol's Trader ── a mark ──> PortfolioMonitor ── halt ──> every Trader
//! ```
//!
//! The merge takes a head only when no other symbol can still deliver an earlier one: an event
//! yet to come has an input time at or below its exchange time (see the dataflows' input
//! times), so once the frontier passes `t`, no event with a feed time before `t` is missing.
//! The order is therefore that of an offline merge of the symbols' streams, the same in a batch
//! backtest, a paced replay and with any number of workers; each trader still sees its own
//! symbol's events in their own order, so a portfolio whose monitor never fires trades exactly
//! as the sleeves do on their own.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};

use flowsense_core::order::{Broker, RiskEvent};
use flowsense_core::results::TradeRecord;
use flowsense_core::strategy::PortfolioRiskSpec;
use flowsense_core::{MarketEvent, Symbol, UnixNanos};
use rustc_hash::FxHashMap;

use crate::by_symbol::BySymbol;
use crate::trader::Trader;

/// The drawdown alert and halt of `[risk.portfolio]`, on the sum of the sleeves.
///
/// The portfolio holds one sleeve of `capital` per symbol that has marked so far; its PnL is the
/// sum of the sleeves' PnL at their latest marks, and its drawdown is measured from the peak of
/// that PnL against the capital of the sleeves then known: `(peak - pnl) / (sleeves * capital +
/// peak)`. A symbol that first trades late thus adds its capital without looking like a gain.
///
/// ```
/// use flowsense_core::results::TradeRecord;
/// use flowsense_core::strategy::PortfolioRiskSpec;
/// use flowsense_core::Symbol;
/// use flowsense_operators::portfolio::PortfolioMonitor;
/// let spec = PortfolioRiskSpec { drawdown_alert: 0.05, drawdown_halt: 0.10 };
/// let mut m = PortfolioMonitor::new(&spec, 1000.0);
/// let (a, b) = (Symbol::new("A").unwrap(), Symbol::new("B").unwrap());
/// let mut out = Vec::new();
/// assert!(m.mark(&a, 1000.0, 1, &mut out).is_none());
/// assert!(m.mark(&b, 1000.0, 2, &mut out).is_none());
/// // A loses 120: the portfolio of 2000 is 6 % down, an alert; each sleeve alone would be 12 %.
/// assert!(m.mark(&a, 880.0, 3, &mut out).is_none());
/// assert_eq!(out.len(), 1);
/// // B loses 90 more: 10.5 % down, the halt.
/// assert!(m.mark(&b, 910.0, 4, &mut out).is_some());
/// assert!(matches!(&out[1], TradeRecord::Risk(e) if e.kind == "halt" && e.is_portfolio()));
/// assert!((m.drawdown() - 0.105).abs() < 1e-12);
/// ```
#[derive(Debug)]
pub struct PortfolioMonitor {
    spec: PortfolioRiskSpec,
    capital: f64,
    /// Each sleeve's PnL at its latest mark.
    sleeves: FxHashMap<Symbol, f64>,
    pnl: f64,
    peak: f64,
    alerted: bool,
    halted: Option<String>,
    symbol: Symbol,
}

impl PortfolioMonitor {
    /// A monitor of sleeves of `capital` each.
    pub fn new(spec: &PortfolioRiskSpec, capital: f64) -> Self {
        PortfolioMonitor {
            spec: spec.clone(),
            capital,
            sleeves: FxHashMap::default(),
            pnl: 0.0,
            peak: 0.0,
            alerted: false,
            halted: None,
            symbol: Symbol::new(RiskEvent::PORTFOLIO).expect("a valid symbol"),
        }
    }

    /// The portfolio's drawdown from its peak, as a fraction.
    pub fn drawdown(&self) -> f64 {
        let base = self.sleeves.len() as f64 * self.capital + self.peak;
        if base > 0.0 {
            (self.peak - self.pnl) / base
        } else {
            0.0
        }
    }

    /// Why the portfolio halted, once it has.
    pub fn halted(&self) -> Option<&str> {
        self.halted.as_deref()
    }

    /// `symbol`'s sleeve marked at `equity` (feed time `now`): records an alert or the halt in
    /// `out` and returns the halt's reason when this mark crossed it.
    pub fn mark(
        &mut self,
        symbol: &Symbol,
        equity: f64,
        now: i64,
        out: &mut Vec<TradeRecord>,
    ) -> Option<String> {
        let pnl = equity - self.capital;
        let before = self.sleeves.insert(symbol.clone(), pnl).unwrap_or(0.0);
        self.pnl += pnl - before;
        if self.pnl > self.peak {
            self.peak = self.pnl;
            self.alerted = false;
        }
        if self.halted.is_some() {
            return None;
        }
        let drawdown = self.drawdown();
        let total = self.sleeves.len() as f64 * self.capital + self.pnl;
        let peak = self.sleeves.len() as f64 * self.capital + self.peak;
        let mut event = |kind: &str, detail: String| {
            out.push(TradeRecord::Risk(RiskEvent {
                ts: UnixNanos(now),
                symbol: self.symbol.clone(),
                kind: kind.into(),
                detail,
            }))
        };
        let state = format!(
            "portfolio equity {total:.2} over {} sleeves is {} below its peak {peak:.2}",
            self.sleeves.len(),
            percent(drawdown),
        );
        if drawdown >= self.spec.drawdown_alert && !self.alerted {
            self.alerted = true;
            event(
                "drawdown_alert",
                format!("{state} (alert at {})", percent(self.spec.drawdown_alert)),
            );
        }
        if drawdown >= self.spec.drawdown_halt {
            let why = format!("{state} (halt at {})", percent(self.spec.drawdown_halt));
            event("halt", format!("{why}: halting every sleeve"));
            self.halted = Some(why.clone());
            return Some(why);
        }
        None
    }
}

/// The merge's key: the feed time a trader decides at (never before the exchange time, so the
/// frontier bounds it), then exchange time.
fn feed_key(ev: &MarketEvent) -> (i64, i64) {
    (ev.feed_ts().0, ev.ts().0)
}

/// A fraction as a percentage a person can read: two decimals, or four below 0.1 %.
fn percent(x: f64) -> String {
    let p = x * 100.0;
    if p.abs() >= 0.1 || p == 0.0 {
        format!("{p:.2} %")
    } else {
        format!("{p:.4} %")
    }
}

/// One symbol's trader and its events waiting for the merge.
struct Sleeve<B: Broker> {
    trader: Trader<B>,
    queue: VecDeque<MarketEvent>,
}

/// Every symbol's [`Trader`], driven in one merged order with a [`PortfolioMonitor`] over them
/// (see the module documentation).
pub(crate) struct PortfolioTraders<B: Broker> {
    sleeves: BySymbol<Sleeve<B>>,
    /// One entry per non-empty queue: its head's (feed time, exchange time) and symbol.
    heads: BinaryHeap<Reverse<((i64, i64), Symbol)>>,
    monitor: PortfolioMonitor,
}

impl<B: Broker> PortfolioTraders<B> {
    pub(crate) fn new(spec: &PortfolioRiskSpec, capital: f64) -> Self {
        PortfolioTraders {
            sleeves: BySymbol::default(),
            heads: BinaryHeap::new(),
            monitor: PortfolioMonitor::new(spec, capital),
        }
    }

    /// Queues an event; `make` builds the symbol's trader on its first event.
    pub(crate) fn push(&mut self, ev: MarketEvent, make: impl FnOnce(&Symbol) -> Trader<B>) {
        let halted = self.monitor.halted();
        let sleeve = self.sleeves.get_or_insert_with(ev.symbol(), |s| {
            let mut trader = make(s);
            if let Some(why) = halted {
                trader.halt_with_portfolio(why.to_string());
            }
            Sleeve {
                trader,
                queue: VecDeque::new(),
            }
        });
        if sleeve.queue.is_empty() {
            self.heads
                .push(Reverse((feed_key(&ev), ev.symbol().clone())));
        }
        sleeve.queue.push_back(ev);
    }

    /// Runs the queued events whose feed time is before `until`, in merged order.
    pub(crate) fn run_until(&mut self, until: i64, out: &mut Vec<TradeRecord>) {
        while self
            .heads
            .peek()
            .is_some_and(|Reverse((key, _))| key.0 < until)
        {
            let Reverse((key, symbol)) = self.heads.pop().expect("peeked");
            let sleeve = self
                .sleeves
                .get_mut(&symbol)
                .expect("a queued symbol has a sleeve");
            let ev = sleeve.queue.pop_front().expect("a queued head");
            sleeve.trader.on_event(&ev, out);
            if let Some(next) = sleeve.queue.front() {
                self.heads.push(Reverse((feed_key(next), symbol.clone())));
            }
            if let Some(equity) = sleeve.trader.take_mark()
                && let Some(why) = self.monitor.mark(&symbol, equity, key.0, out)
            {
                for s in self.sleeves.values_mut() {
                    s.trader.halt_with_portfolio(why.clone());
                }
            }
        }
    }

    /// Every trader takes what its broker reported (see [`Trader::poll_broker`]).
    pub(crate) fn poll_brokers(&mut self, out: &mut Vec<TradeRecord>) {
        for s in self.sleeves.sorted_mut() {
            s.trader.poll_broker(out);
        }
    }

    /// Kills every trader, in symbol order (see [`Trader::kill`]).
    pub(crate) fn kill(&mut self, kill: &crate::trade_strategy::Kill, out: &mut Vec<TradeRecord>) {
        for s in self.sleeves.sorted_mut() {
            s.trader.kill(kill.flatten, &kill.why, out);
        }
    }

    /// The input ended: runs what is queued, then finishes every trader in symbol order.
    pub(crate) fn finish(&mut self, out: &mut Vec<TradeRecord>) {
        self.run_until(i64::MAX, out);
        for s in self.sleeves.sorted_mut() {
            s.trader.finish(out);
        }
    }
}
