//! The trader of one symbol: features, strategy, sizing, risk and a broker, driven event by event.
//!
//! A [`Trader`] owns everything a strategy needs for one symbol and nothing shared, so the
//! backtest operator holds one per symbol and a run is a pure function of the symbol's events:
//!
//! ```text
//!  market event ──> FeatureEngine (the strategy's bucket) ──> closed row ──┐
//!       │                                                                  v
//!       └──────────> Broker::on_market ──> reports ──> account ──> decide: mark, drawdown,
//!                                                                  signal, target, orders
//! ```
//!
//! Per event, in this order: the engine closes the buckets that ended before the event; the broker
//! sees the event; the reports delivered by the event's feed time (its receive clock where the
//! data has one, else exchange time) update the account; then each closed row of the strategy's
//! bucket is decided, with orders sent at that feed time. Buckets close on events only, never on
//! the dataflow's frontier, so a batch backtest and a paced replay of the same data decide alike.
//!
//! Decisions, at each close of the strategy's bucket:
//! 1. **Mark** the account at the row's mid; track the peak. At `risk.drawdown_alert` below the
//!    peak record an alert (again only after a new peak); at `risk.drawdown_halt` **halt**: cancel
//!    every order, flatten with a market order (re-sent at later closes until flat) and refuse
//!    everything else for the rest of the run. A halt of the portfolio
//!    ([`Trader::halt_with_portfolio`]) does the same at the next close.
//! 2. **Signal** (NaN: no opinion, keep what is held). Direction: enter or reverse when
//!    `|signal| >= entry`; leave when the signal in the held direction falls below `exit`; leave
//!    after `max_hold`, and do not re-enter that direction until the signal has dropped below
//!    `entry` once.
//! 3. **Size**, set when the direction changes and kept until it changes again (so Kelly sizing
//!    does not churn): fixed, or fractional Kelly `fraction * edge / variance` of equity capped at
//!    `max_leverage`, times the regime's multiplier, clipped to `max_position` and `max_notional`.
//! 4. **Orders** towards the target: one working order at a time. A working order on the wrong
//!    side, or for a target that changed, is cancelled; a resting limit order whose price left
//!    the touch (with `replace_on_touch_move`) or that is older than `cancel_after` is cancelled
//!    and placed again once the cancel is confirmed. Nothing new is sent while a cancel is
//!    pending, so the position cannot overshoot. Each order passes the rate limit (orders and
//!    cancels per second of feed time) and the price band; a refusal is a risk event. The halt's
//!    cancels and flattening market orders are not held back by the rate limit.

use std::collections::VecDeque;

use flowsense_core::expr::ColumnHistory;
use flowsense_core::features::FeatureRow;
use flowsense_core::job::FeatureSpec;
use flowsense_core::order::{
    Broker, BrokerNotice, ClientOrderId, EquityPoint, ExecReport, Fill, Order, OrderKind,
    OrderRecord, OrderStatus, ReportKind, RiskEvent,
};
use flowsense_core::results::{Position, TradeRecord};
use flowsense_core::strategy::{OrderStyle, RiskSpec, Sizing, StrategySpec};
use flowsense_core::{MarketEvent, Price, Side, Size, Symbol, UnixNanos};
use rustc_hash::FxHashMap;

use crate::engine::FeatureEngine;

/// A position in progress, from the fill that opened it.
#[derive(Clone, Debug)]
struct Trip {
    opened: UnixNanos,
    /// Equity (marked at the opening fill's price) before it opened.
    start: f64,
    direction: i8,
    /// Largest absolute size, fixed point.
    peak: i64,
    open_qty: f64,
    open_notional: f64,
    close_qty: f64,
    close_notional: f64,
}

impl Trip {
    fn record(
        &self,
        symbol: &Symbol,
        closed: Option<UnixNanos>,
        ts: UnixNanos,
        equity: f64,
    ) -> Position {
        Position {
            symbol: symbol.clone(),
            opened: self.opened,
            closed,
            ts,
            direction: self.direction,
            peak: Size::from_raw(self.peak).as_f64(),
            avg_open: self.open_notional / self.open_qty.max(f64::MIN_POSITIVE),
            avg_close: (self.close_qty > 0.0).then(|| self.close_notional / self.close_qty),
            pnl: equity - self.start,
        }
    }
}

/// An order still working, with what is known of it.
#[derive(Clone, Debug)]
struct Working {
    record: OrderRecord,
    /// A cancel was sent and not yet confirmed.
    cancel_sent: bool,
}

/// The trader of one symbol. See the module documentation for what it does, in which order.
///
/// ```
/// use flowsense_core::job::{FeatureSpec, JobSpec};
/// use flowsense_core::{MarketEvent, Price, Side, Size, Symbol, Trade, UnixNanos, DepthUpdate};
/// use flowsense_core::results::TradeRecord;
/// use flowsense_operators::trader::Trader;
/// # use flowsense_core::order::*;
/// # #[derive(Default)] struct NoBroker;
/// # impl Broker for NoBroker {
/// #     fn submit(&mut self, _: Order) {} fn cancel(&mut self, _: ClientOrderId, _: UnixNanos) {}
/// #     fn on_market(&mut self, _: &MarketEvent) {}
/// #     fn reports(&mut self, _: UnixNanos, _: &mut Vec<ExecReport>) {}
/// #     fn flush(&mut self, _: &mut Vec<ExecReport>) {}
/// # }
/// let spec = JobSpec::from_toml(r#"
///     name = "t"
///     [source.synthetic]
///     symbols = 1
///     [features]
///     buckets = ["1s"]
///     [strategy]
///     bucket = "1s"
///     signal = "buy_volume - sell_volume"
///     entry = 1
///     [strategy.sizing]
///     method = "fixed"
///     size = 2
/// "#).unwrap();
/// let sym = Symbol::new("ABC").unwrap();
/// let mut t = Trader::new(sym.clone(), &spec.name, &spec.features,
///     spec.strategy.as_ref().unwrap(), &spec.risk, NoBroker).unwrap();
/// let mut out = Vec::new();
/// t.on_event(&MarketEvent::Depth(sym.clone(), Box::new(DepthUpdate { ts: UnixNanos(0),
///     bids: vec![(Price::from_units(99), Size::from_units(5))],
///     asks: vec![(Price::from_units(101), Size::from_units(5))],
///     is_snapshot: true, ..Default::default() })), &mut out);
/// for (ms, side) in [(500, Side::Buy), (1500, Side::Buy)] {
///     t.on_event(&MarketEvent::Trade(sym.clone(), Trade { ts: UnixNanos::from_millis(ms),
///         local_ts: None, trade_id: None, price: Price::from_units(101),
///         size: Size::from_units(3), aggressor: side }), &mut out);
/// }
/// // The 1 s bucket closed at the second trade: buying flow of 3 >= entry, so buy 2 at market.
/// assert_eq!(t.target(), 2.0);
/// t.finish(&mut out);
/// let sent: Vec<_> = out.iter().filter_map(|r| match r {
///     TradeRecord::Order(o) => Some(o.order.side), _ => None }).collect();
/// assert_eq!(sent, vec![Side::Buy]);
/// ```
pub struct Trader<B: Broker> {
    symbol: Symbol,
    job: String,
    strategy: StrategySpec,
    risk: RiskSpec,
    broker: B,
    engine: FeatureEngine,
    bucket: std::sync::Arc<str>,
    rows: Vec<FeatureRow>,
    /// What the strategy's expressions read of the closed buckets.
    history: ColumnHistory,
    reports: Vec<ExecReport>,
    // The account.
    position: Size,
    cash: f64,
    fees: f64,
    traded_notional: f64,
    peak: f64,
    alerted: bool,
    halted: bool,
    /// Halted by a kill that keeps the position: cancel, do not flatten.
    keep_position: bool,
    /// A halt the portfolio monitor asked for, carried out at the next close.
    portfolio_halt: Option<String>,
    /// Equity at the latest mark, until the portfolio monitor takes it.
    fresh_mark: Option<f64>,
    refused_after_halt: u64,
    last_mid: Option<f64>,
    /// Cash and position at the latest mark.
    marked: (f64, i64),
    /// The position in progress.
    trip: Option<Trip>,
    /// The latest feed time seen.
    last_feed: i64,
    // The strategy's state.
    direction: i8,
    target: f64,
    entered_at: Option<i64>,
    /// A direction left for `max_hold`, blocked until the signal drops below `entry`.
    blocked: i8,
    regime: Option<String>,
    tick: i64,
    // Orders.
    seq: u64,
    working: FxHashMap<ClientOrderId, Working>,
    /// Feed times of the orders and cancels sent in the last second.
    sent: VecDeque<i64>,
}

const SECOND: i64 = 1_000_000_000;

impl<B: Broker> Trader<B> {
    /// A trader of `symbol` for job `job` (order ids derive from both), computing the features of
    /// `features` at the strategy's bucket only, trading through `broker`.
    pub fn new(
        symbol: Symbol,
        job: &str,
        features: &FeatureSpec,
        strategy: &StrategySpec,
        risk: &RiskSpec,
        broker: B,
    ) -> Result<Self, String> {
        strategy.validate(&features.buckets)?;
        risk.validate()?;
        let engine_spec = FeatureSpec {
            buckets: vec![strategy.bucket],
            per_event: false,
            ..features.clone()
        };
        // Kyle's lambda costs an OLS over its window at every close, the returns a logarithm
        // each: computed only when an expression reads them.
        let column = |name: &str| {
            flowsense_core::features::FeatureColumn::parse(name).expect("a feature column")
        };
        let kyle = column("kyle_lambda");
        let returns = ["ret_1b", "ret_10b", "ret_100b"].map(column);
        let mut exprs = vec![&strategy.signal];
        if let Sizing::Kelly { edge, variance, .. } = &strategy.sizing {
            exprs.extend([edge, variance]);
        }
        if let Some(r) = &strategy.regime {
            exprs.push(&r.expr);
        }
        let mut engine = FeatureEngine::new(symbol.clone(), &engine_spec);
        if !exprs.iter().any(|e| e.reads(kyle)) {
            engine = engine.without_kyle_lambda();
        }
        if !exprs.iter().any(|e| returns.iter().any(|&r| e.reads(r))) {
            engine = engine.without_returns();
        }
        Ok(Trader {
            engine,
            bucket: strategy.bucket.to_string().into(),
            symbol,
            job: job.to_string(),
            strategy: strategy.clone(),
            risk: risk.clone(),
            broker,
            rows: Vec::new(),
            history: ColumnHistory::new(&exprs),
            reports: Vec::new(),
            position: Size::ZERO,
            cash: 0.0,
            fees: 0.0,
            traded_notional: 0.0,
            peak: risk.capital,
            alerted: false,
            halted: false,
            keep_position: false,
            portfolio_halt: None,
            fresh_mark: None,
            refused_after_halt: 0,
            last_mid: None,
            marked: (0.0, 0),
            trip: None,
            last_feed: i64::MIN,
            direction: 0,
            target: 0.0,
            entered_at: None,
            blocked: 0,
            regime: None,
            tick: 0,
            seq: 0,
            working: FxHashMap::default(),
            sent: VecDeque::new(),
        })
    }

    /// The symbol.
    pub fn symbol(&self) -> &Symbol {
        &self.symbol
    }

    /// The position, in size units.
    pub fn position(&self) -> f64 {
        self.position.as_f64()
    }

    /// The target position of the latest decision.
    pub fn target(&self) -> f64 {
        self.target
    }

    /// True once the drawdown halt has fired.
    pub fn halted(&self) -> bool {
        self.halted
    }

    /// Halts at the next close of the strategy's bucket as the drawdown halt does (cancel,
    /// flatten, refuse), because the portfolio halted; `why` goes into the risk event.
    pub fn halt_with_portfolio(&mut self, why: String) {
        if !self.halted {
            self.portfolio_halt.get_or_insert(why);
        }
    }

    /// The kill switch: records a `kill` risk event saying `why`, halts the strategy for the
    /// rest of the run (refusing everything), cancels every working order now (at the feed
    /// time of the last event seen) and, with `flatten`, closes the position with market
    /// orders, re-sent at later closes until flat; without, the position is kept.
    pub fn kill(&mut self, flatten: bool, why: &str, out: &mut Vec<TradeRecord>) {
        let now = self.last_feed.max(0);
        let what = if flatten {
            "flattening"
        } else {
            "keeping the position"
        };
        self.risk_event(
            out,
            now,
            "kill",
            format!("{why}; cancelling every order, {what}, refusing new orders"),
        );
        self.stop_trading(now, flatten);
    }

    /// Halts for the rest of the run: cancels every working order and, with `flatten`, closes
    /// the position (re-sent at later closes until flat); without, keeps it.
    fn stop_trading(&mut self, now: i64, flatten: bool) {
        if !self.halted {
            self.keep_position = !flatten;
        } else if flatten {
            self.keep_position = false;
        }
        self.halted = true;
        self.direction = 0;
        self.target = if self.keep_position {
            self.position.as_f64()
        } else {
            0.0
        };
        if self.keep_position {
            self.cancel_working(now);
        } else {
            self.flatten(now, f64::NAN);
        }
    }

    /// Sends a cancel for every working order that has none in flight.
    fn cancel_working(&mut self, now: i64) {
        for (id, w) in self.working.iter_mut() {
            if !w.cancel_sent {
                w.cancel_sent = true;
                self.broker.cancel(*id, UnixNanos(now));
            }
        }
    }

    /// The equity of the mark made since the last call, if any (for a portfolio monitor).
    pub fn take_mark(&mut self) -> Option<f64> {
        self.fresh_mark.take()
    }

    /// Equity at the latest mid: capital, cash flows and fees, plus the position at the mid.
    pub fn equity(&self) -> f64 {
        self.risk.capital + self.cash + self.position.as_f64() * self.last_mid.unwrap_or(0.0)
    }

    /// The broker (for its counters).
    pub fn broker(&self) -> &B {
        &self.broker
    }

    /// One market event of the symbol, in feed order.
    pub fn on_event(&mut self, ev: &MarketEvent, out: &mut Vec<TradeRecord>) {
        let feed = ev.feed_ts();
        self.last_feed = self.last_feed.max(feed.0);
        self.engine.on_event(ev, &mut self.rows);
        self.broker.on_market(ev);
        self.broker.reports(feed, &mut self.reports);
        self.apply_reports(out);
        self.apply_notices(feed.0, out);
        self.decide_rows(feed.0, out);
    }

    /// Takes what the broker reported since the last event, at that event's feed time, with
    /// no decision (a live broker woke the operator: [`Broker::set_waker`]).
    pub fn poll_broker(&mut self, out: &mut Vec<TradeRecord>) {
        let now = self.last_feed.max(0);
        self.broker.reports(UnixNanos(now), &mut self.reports);
        self.apply_reports(out);
        self.apply_notices(now, out);
    }

    /// The broker's notices become risk events; one that halts stops the strategy keeping its
    /// position (see [`BrokerNotice`]).
    fn apply_notices(&mut self, now: i64, out: &mut Vec<TradeRecord>) {
        let mut notices: Vec<BrokerNotice> = Vec::new();
        self.broker.notices(&mut notices);
        for n in notices {
            let halt = n.halt && !self.halted;
            let detail = if halt {
                format!(
                    "{}; halting: cancelling every order, keeping the position",
                    n.detail
                )
            } else {
                n.detail
            };
            self.risk_event(out, now, &n.kind, detail);
            if halt {
                self.stop_trading(now, false);
            }
        }
    }

    /// The input ended: closes the open bucket (deciding on it, as a live run would at its end),
    /// delivers every outstanding report, records the final mark and every order still working.
    pub fn finish(&mut self, out: &mut Vec<TradeRecord>) {
        self.engine.finish(&mut self.rows);
        let end = self
            .rows
            .last()
            .map(|r| r.ts)
            .or((self.last_feed > i64::MIN).then_some(self.last_feed));
        if let Some(end) = end {
            self.decide_rows(end, out);
        }
        self.broker.flush(&mut self.reports);
        self.apply_reports(out);
        self.apply_notices(end.unwrap_or(self.last_feed.max(0)), out);
        // Fills reported after the last close still change the account: mark it once more.
        if let (Some(end), Some(mid)) = (end, self.last_mid)
            && self.marked != (self.cash, self.position.raw())
        {
            let signal = if self.history.is_empty() {
                f64::NAN
            } else {
                self.eval_signal()
            };
            self.mark(end, mid, signal, out);
        }
        // A position still open at the end, marked at the last mid.
        if let (Some(t), Some(end)) = (self.trip.take(), end) {
            let equity = self.equity();
            out.push(TradeRecord::Position(t.record(
                &self.symbol,
                None,
                UnixNanos(end),
                equity,
            )));
        }
        let mut left: Vec<_> = self.working.drain().map(|(_, w)| w.record).collect();
        left.sort_by_key(|r| r.order.id);
        out.extend(left.into_iter().map(TradeRecord::Order));
        if self.refused_after_halt > 0 {
            out.push(TradeRecord::Risk(RiskEvent {
                ts: UnixNanos(end.unwrap_or(0)),
                symbol: self.symbol.clone(),
                kind: "refused".into(),
                detail: format!(
                    "{} decisions to trade refused after the halt",
                    self.refused_after_halt
                ),
            }));
        }
    }

    fn decide_rows(&mut self, now: i64, out: &mut Vec<TradeRecord>) {
        if self.rows.is_empty() {
            return;
        }
        // Rows are read where they lie (a few hundred bytes each: not moved), and the vector
        // keeps its capacity for the next close.
        let mut rows = std::mem::take(&mut self.rows);
        for row in &rows {
            if row.bucket == self.bucket {
                self.decide(row, now, out);
            }
        }
        rows.clear();
        self.rows = rows;
    }

    fn apply_reports(&mut self, out: &mut Vec<TradeRecord>) {
        let reports = std::mem::take(&mut self.reports);
        for r in &reports {
            let Some(w) = self.working.get_mut(&r.order) else {
                continue;
            };
            let done = match &r.kind {
                ReportKind::Accepted => {
                    if w.record.status == OrderStatus::Sent {
                        w.record.status = OrderStatus::Open;
                    }
                    false
                }
                ReportKind::Fill(f) => {
                    w.record.filled += f.size;
                    let full = w.record.filled >= w.record.order.size;
                    if full {
                        w.record.status = OrderStatus::Filled;
                    }
                    self.apply_fill(f, out);
                    out.push(TradeRecord::Fill(f.clone()));
                    full
                }
                ReportKind::Cancelled => {
                    w.record.status = OrderStatus::Cancelled;
                    true
                }
                ReportKind::Rejected(why) => {
                    w.record.status = OrderStatus::Rejected(why.clone());
                    true
                }
            };
            if done && let Some(w) = self.working.remove(&r.order) {
                out.push(TradeRecord::Order(w.record));
            }
        }
        self.reports = reports;
        self.reports.clear();
    }

    fn apply_fill(&mut self, f: &Fill, out: &mut Vec<TradeRecord>) {
        let px = f.price.as_f64();
        let signed = match f.side {
            Side::Buy => f.size.raw(),
            Side::Sell => -f.size.raw(),
        };
        let before = self.position.raw();
        let equity_before = self.risk.capital + self.cash + self.position.as_f64() * px;
        self.cash -= Size::from_raw(signed).as_f64() * px + f.fee;
        self.fees += f.fee;
        self.traded_notional += f.size.as_f64() * px;
        self.position = Size::from_raw(before + signed);
        let after = self.position.raw();
        let equity_after = self.risk.capital + self.cash + self.position.as_f64() * px;
        let (b, a) = (before as i128, after as i128);
        // The part of the fill that reduces the position, and the part that opens or adds.
        let reducing = if b != 0 && (a - b).signum() != b.signum() {
            (a - b).abs().min(b.abs())
        } else {
            0
        };
        let opening = (a - b).abs() - reducing;
        if let Some(t) = &mut self.trip {
            t.close_qty += reducing as f64 * 1e-9;
            t.close_notional += reducing as f64 * 1e-9 * px;
        }
        // A fill that flips the position charges its whole fee to the one it closes.
        if before != 0
            && (after == 0 || after.signum() != before.signum())
            && let Some(t) = self.trip.take()
        {
            let closed = t.record(&self.symbol, Some(f.ts), f.ts, equity_after);
            out.push(TradeRecord::Position(closed));
        }
        if after != 0 && (before == 0 || after.signum() != before.signum()) {
            let start = if before == 0 {
                equity_before
            } else {
                equity_after
            };
            self.trip = Some(Trip {
                opened: f.ts,
                start,
                direction: after.signum() as i8,
                peak: 0,
                open_qty: 0.0,
                open_notional: 0.0,
                close_qty: 0.0,
                close_notional: 0.0,
            });
        }
        if let Some(t) = &mut self.trip {
            t.open_qty += opening as f64 * 1e-9;
            t.open_notional += opening as f64 * 1e-9 * px;
            t.peak = t.peak.max(after.abs());
        }
    }

    fn risk_event(&self, out: &mut Vec<TradeRecord>, ts: i64, kind: &str, detail: String) {
        out.push(TradeRecord::Risk(RiskEvent {
            ts: UnixNanos(ts),
            symbol: self.symbol.clone(),
            kind: kind.into(),
            detail,
        }));
    }

    fn decide(&mut self, row: &FeatureRow, now: i64, out: &mut Vec<TradeRecord>) {
        for p in [row.bid_price, row.ask_price].into_iter().flatten() {
            if let Some(p) = Price::from_f64(p) {
                self.tick = gcd(self.tick, p.raw());
            }
        }
        if row.mid.is_some() {
            self.last_mid = row.mid;
        }
        let ts = row.ts;
        // Bars have no book: limit orders are priced at the close.
        let (bid, ask) = match (row.bid_price, row.ask_price) {
            (None, None) => (row.mid, row.mid),
            touch => touch,
        };
        self.history.push(row);
        let Some(mid) = self.last_mid else {
            return; // no book yet: nothing to mark or price
        };

        // 1. Mark, drawdown, halt.
        let signal = self.eval_signal();
        self.regime = self.eval_regime();
        let (equity, drawdown) = self.mark(ts, mid, signal, out);
        if !self.halted && drawdown >= self.risk.drawdown_alert && !self.alerted {
            self.alerted = true;
            self.risk_event(
                out,
                now,
                "drawdown_alert",
                format!(
                    "equity {equity:.2} is {:.2} % below its peak {:.2} (alert at {:.2} %)",
                    drawdown * 100.0,
                    self.peak,
                    self.risk.drawdown_alert * 100.0
                ),
            );
        }
        let portfolio = self.portfolio_halt.take();
        if !self.halted && (drawdown >= self.risk.drawdown_halt || portfolio.is_some()) {
            self.halted = true;
            let why = match portfolio {
                Some(why) => format!("the portfolio halted: {why}"),
                None => format!(
                    "equity {equity:.2} is {:.2} % below its peak {:.2} (halt at {:.2} %)",
                    drawdown * 100.0,
                    self.peak,
                    self.risk.drawdown_halt * 100.0
                ),
            };
            self.risk_event(
                out,
                now,
                "halt",
                format!("{why}; cancelling every order, flattening, refusing new orders"),
            );
            self.direction = 0;
            self.target = 0.0;
        }
        if self.halted {
            if self.keep_position {
                if signal.is_finite() && signal.abs() >= self.strategy.entry {
                    self.refused_after_halt += 1;
                }
                self.cancel_working(now);
            } else {
                self.flatten(now, signal);
            }
            return;
        }

        // 2. Direction.
        let held = self.direction;
        let mut direction = held;
        let mut reason = "";
        if signal.is_finite() {
            if signal.abs() < self.strategy.entry {
                self.blocked = 0;
            }
            let wants = if signal >= self.strategy.entry {
                1
            } else if signal <= -self.strategy.entry {
                -1
            } else {
                0
            };
            if wants != 0 && wants != held && wants != self.blocked {
                direction = wants;
                reason = "entry";
            } else if held != 0 && signal * f64::from(held) < self.strategy.exit {
                direction = 0;
                reason = "exit";
            }
        }
        if direction == held
            && held != 0
            && let (Some(max), Some(at)) = (self.strategy.max_hold, self.entered_at)
            && now - at >= max.nanos() as i64
        {
            direction = 0;
            reason = "max_hold";
            self.blocked = held;
        }

        // 3. Size, when the direction changes.
        if direction != held {
            self.direction = direction;
            self.entered_at = (direction != 0).then_some(now);
            self.target = if direction == 0 {
                0.0
            } else {
                f64::from(direction) * self.size(mid, equity, now, out)
            };
        }
        if reason.is_empty() {
            reason = "rebalance";
        }

        // 4. Orders.
        self.work_orders(now, mid, bid, ask, signal, reason, out);
    }

    /// Marks the account at `mid` (a new peak re-arms the alert) and records the mark; returns
    /// the equity and the drawdown from the peak.
    fn mark(&mut self, ts: i64, mid: f64, signal: f64, out: &mut Vec<TradeRecord>) -> (f64, f64) {
        let equity = self.equity();
        if equity > self.peak {
            self.peak = equity;
            self.alerted = false;
        }
        let drawdown = if self.peak > 0.0 {
            1.0 - equity / self.peak
        } else {
            0.0
        };
        self.marked = (self.cash, self.position.raw());
        self.fresh_mark = Some(equity);
        out.push(TradeRecord::Equity(EquityPoint {
            ts: UnixNanos(ts),
            symbol: self.symbol.clone(),
            equity,
            position: self.position.as_f64(),
            mid,
            fees: self.fees,
            drawdown,
            signal,
            regime: self.regime.clone(),
        }));
        (equity, drawdown)
    }

    /// An expression over the history (the latest bucket last).
    fn eval(&self, e: &flowsense_core::expr::Expr) -> f64 {
        self.history.eval(e)
    }

    fn eval_signal(&self) -> f64 {
        self.eval(&self.strategy.signal)
    }

    fn eval_regime(&self) -> Option<String> {
        let r = self.strategy.regime.as_ref()?;
        let v = self.eval(&r.expr);
        if !v.is_finite() {
            return None;
        }
        let i = (v.round().max(0.0) as usize).min(r.names.len() - 1);
        Some(r.names[i].clone())
    }

    fn regime_multiplier(&self) -> f64 {
        let Some(r) = &self.strategy.regime else {
            return 1.0;
        };
        let Some(name) = &self.regime else {
            return 1.0;
        };
        r.names
            .iter()
            .position(|n| n == name)
            .and_then(|i| r.multipliers.get(i).copied())
            .unwrap_or(1.0)
    }

    /// The absolute target size for a new direction.
    fn size(&self, mid: f64, equity: f64, now: i64, out: &mut Vec<TradeRecord>) -> f64 {
        let mut size = match &self.strategy.sizing {
            Sizing::Fixed { size } => *size,
            Sizing::Kelly {
                edge,
                variance,
                fraction,
                max_leverage,
                lot,
            } => {
                let (e, v) = (self.eval(edge).abs(), self.eval(variance));
                let f = if e.is_finite() && v.is_finite() && v > 0.0 {
                    (fraction * e / v).min(*max_leverage)
                } else {
                    0.0
                };
                let s = f * equity.max(0.0) / mid;
                match lot {
                    Some(l) => (s / l).floor() * l,
                    None => s,
                }
            }
        };
        size *= self.regime_multiplier();
        let mut limit = f64::INFINITY;
        if let Some(m) = self.risk.max_position {
            limit = limit.min(m);
        }
        if let Some(n) = self.risk.max_notional {
            limit = limit.min(n / mid);
        }
        if size > limit {
            self.risk_event(
                out,
                now,
                "clipped",
                format!(
                    "target size {size} clipped to {limit} by the position and notional limits"
                ),
            );
            size = limit;
        }
        size
    }

    /// Cancels everything and sends market orders until flat; refuses the rest.
    fn flatten(&mut self, now: i64, signal: f64) {
        if signal.is_finite() && signal.abs() >= self.strategy.entry {
            self.refused_after_halt += 1;
        }
        let mut pending_cancel = false;
        let ids: Vec<_> = self.working.keys().copied().collect();
        for id in ids {
            let w = self.working.get_mut(&id).expect("listed");
            if w.record.reason == "halt" {
                continue;
            }
            pending_cancel = true;
            if !w.cancel_sent {
                w.cancel_sent = true;
                self.broker.cancel(id, UnixNanos(now));
            }
        }
        let halt_orders = self.working.values().any(|w| w.record.reason == "halt");
        if pending_cancel || halt_orders || self.position.raw() == 0 {
            return;
        }
        let side = if self.position.raw() > 0 {
            Side::Sell
        } else {
            Side::Buy
        };
        let size = Size::from_raw(self.position.raw().abs());
        let id = self.next_id();
        let order = Order::market(id, self.symbol.clone(), side, size, UnixNanos(now));
        self.send(order, signal, "halt");
    }

    fn next_id(&mut self) -> ClientOrderId {
        self.seq += 1;
        ClientOrderId::new(&self.job, &self.symbol, self.seq)
    }

    fn send(&mut self, order: Order, signal: f64, reason: &str) {
        self.sent.push_back(order.sent.0);
        let id = order.id;
        self.broker.submit(order.clone());
        self.working.insert(
            id,
            Working {
                record: OrderRecord {
                    order,
                    signal,
                    target: self.target,
                    reason: reason.into(),
                    status: OrderStatus::Sent,
                    filled: Size::ZERO,
                },
                cancel_sent: false,
            },
        );
    }

    /// True when the rate limit lets one more order or cancel out at `now`.
    fn rate_ok(&mut self, now: i64) -> bool {
        while self.sent.front().is_some_and(|&t| t <= now - SECOND) {
            self.sent.pop_front();
        }
        self.risk
            .max_orders_per_second
            .is_none_or(|m| self.sent.len() < m as usize)
    }

    #[allow(clippy::too_many_arguments)]
    fn work_orders(
        &mut self,
        now: i64,
        mid: f64,
        bid: Option<f64>,
        ask: Option<f64>,
        signal: f64,
        reason: &str,
        out: &mut Vec<TradeRecord>,
    ) {
        // What the working orders will still add to the position.
        let target_raw = Size::from_f64(self.target).map_or(0, |s| s.raw());
        let want = target_raw - self.position.raw();
        let want_side = match want.signum() {
            1 => Some(Side::Buy),
            -1 => Some(Side::Sell),
            _ => None,
        };
        // Cancel what no longer serves the target.
        let mut pending = false;
        let ids: Vec<_> = self.working.keys().copied().collect();
        for id in ids {
            let w = &self.working[&id];
            if w.cancel_sent {
                pending = true;
                continue;
            }
            let o = &w.record.order;
            let remaining = o.size.raw() - w.record.filled.raw();
            let stale_target = Some(o.side) != want_side || remaining > want.abs();
            let mut why = None;
            if stale_target {
                why = Some("target changed");
            } else if o.kind.rests() {
                let touch = self.limit_price(o.side, bid, ask);
                if self.strategy.replace_on_touch_move && touch.is_some() && touch != o.price {
                    why = Some("touch moved");
                } else if let Some(after) = self.strategy.cancel_after
                    && now - o.sent.0 >= after.nanos() as i64
                {
                    why = Some("aged");
                }
            }
            // A touch that moved is followed in place where the broker modifies orders.
            if why == Some("touch moved")
                && let Some(touch) = self.limit_price(o.side, bid, ask)
                && self.rate_ok(now)
                && self.broker.modify(id, touch, UnixNanos(now))
            {
                self.sent.push_back(now);
                let w = self.working.get_mut(&id).expect("listed");
                w.record.order.price = Some(touch);
                pending = true;
                continue;
            }
            if let Some(why) = why {
                if !self.rate_ok(now) {
                    self.risk_event(
                        out,
                        now,
                        "refused",
                        format!("cancel ({why}): order rate limit"),
                    );
                    pending = true;
                    continue;
                }
                self.sent.push_back(now);
                self.broker.cancel(id, UnixNanos(now));
                self.working.get_mut(&id).expect("listed").cancel_sent = true;
                pending = true;
            }
        }
        if pending || !self.working.is_empty() {
            return;
        }
        let Some(side) = want_side else {
            return;
        };
        let size = Size::from_raw(want.abs());
        let id_reason = if reason == "rebalance" {
            "replace"
        } else {
            reason
        };
        let order = match self.strategy.order {
            OrderStyle::Market => Order::market(
                ClientOrderId(0),
                self.symbol.clone(),
                side,
                size,
                UnixNanos(now),
            ),
            style => {
                let Some(price) = self.limit_price(side, bid, ask) else {
                    return; // no touch to price against
                };
                if let Some(band) = self.risk.price_band_bps {
                    let off = (price.as_f64() / mid - 1.0).abs() * 1e4;
                    if off > band {
                        self.risk_event(
                            out,
                            now,
                            "refused",
                            format!("{side:?} at {price}: {off:.1} bp from the mid {mid}, band {band} bp"),
                        );
                        return;
                    }
                }
                let kind = if style == OrderStyle::Ioc {
                    OrderKind::Ioc
                } else {
                    OrderKind::Limit
                };
                Order::limit(
                    ClientOrderId(0),
                    self.symbol.clone(),
                    side,
                    kind,
                    price,
                    size,
                    UnixNanos(now),
                )
            }
        };
        if !self.rate_ok(now) {
            self.risk_event(
                out,
                now,
                "refused",
                format!("{side:?} {size}: order rate limit"),
            );
            return;
        }
        let order = Order {
            id: self.next_id(),
            ..order
        };
        self.send(order, signal, id_reason);
    }

    /// The price of a limit order on `side` for the strategy's style.
    fn limit_price(&self, side: Side, bid: Option<f64>, ask: Option<f64>) -> Option<Price> {
        let bid = bid.and_then(Price::from_f64);
        let ask = ask.and_then(Price::from_f64);
        let tick = self.tick.max(1);
        match (self.strategy.order, side) {
            (OrderStyle::LimitJoin, Side::Buy) | (OrderStyle::Ioc, Side::Sell) => bid,
            (OrderStyle::LimitJoin, Side::Sell) | (OrderStyle::Ioc, Side::Buy) => ask,
            (OrderStyle::LimitImprove, Side::Buy) => {
                let b = bid?;
                let better = Price::from_raw(b.raw() + tick);
                Some(if ask.is_some_and(|a| better < a) {
                    better
                } else {
                    b
                })
            }
            (OrderStyle::LimitImprove, Side::Sell) => {
                let a = ask?;
                let better = Price::from_raw(a.raw() - tick);
                Some(if bid.is_some_and(|b| better > b) {
                    better
                } else {
                    a
                })
            }
            (OrderStyle::Market, _) => None,
        }
    }
}

fn gcd(a: i64, b: i64) -> i64 {
    let (mut a, mut b) = (a.abs(), b.abs());
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

#[cfg(test)]
mod tests;
