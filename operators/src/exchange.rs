//! The exchange model: [`SimExchange`], the simulated exchange that backtests and paper runs trade
//! against, behind the [`Broker`] trait (defined in `flowsense-core`, re-exported here) that live
//! brokers implement too.
//!
//! # The simulated exchange
//! One `SimExchange` per symbol rebuilds the book from the market data it is shown (L3 order
//! messages, or L2 diffs and trades) and matches the strategy's orders against it:
//!
//! - **Latency.** An order sent at feed time `t` arrives at `t + order_latency` (plus a seeded
//!   uniform draw up to `latency_jitter`); it enters the book just before the first market event
//!   whose exchange time is at or after its arrival. Reports reach the strategy
//!   `response_latency` after the exchange time they describe. Together with the strategy acting
//!   on feed time (the data's receive clock, where recorded), this is the feed latency of the
//!   data's two clocks plus the order round trip.
//! - **Post-only** orders are refused when they would take on arrival; otherwise they rest like
//!   limit orders.
//! - **Taking.** Market orders, and the marketable part of limit and IOC orders, walk the
//!   opposite side of the book level by level (one fill per level), each fill's price moved
//!   `slippage_bps` against the order, paying `taker_fee` on notional. What the book cannot fill
//!   is cancelled. Nothing fills against a crossed book: an order arriving while the data's book
//!   is crossed is rejected. Taking does not remove the liquidity from the replayed book (the data
//!   is what it is); sizes that are small against the touch keep this honest.
//! - **Bars.** On bar data there is no book: an order meets the first bar that closes after it
//!   arrives, as a whole (the "next bar's open" convention of bar backtesters). Market orders,
//!   and limit or IOC orders the open already satisfies, fill at the open (slippage and taker
//!   fee as above); a limit order the bar trades through (low below a buy's price, high above a
//!   sell's) fills at its price as a maker at the bar's close time, and otherwise waits for
//!   later bars; the rest of a market or IOC order is cancelled. Our fills in one bar never
//!   exceed its volume, so a bar of volume 0 (vendors print them, prices moving or not) fills
//!   nothing and a market order waits for the next bar that traded; with `[execution]
//!   zero_volume_bars = "fill"` such a bar fills as if its volume were unlimited, at its open
//!   for a market order, as Backtrader does.
//! - **Sessions.** On L3 data each session opens with a `clear` book event (every L3 reader
//!   writes one, and volume known only in aggregate follows as `seed` events): the exchange's
//!   book starts empty, and the strategy's orders still resting from the last session are
//!   cancelled (day orders expire at the close), each with a `Cancelled` report.
//! - **Resting.** A resting order fills only when the data prints a trade that would have reached
//!   it, never on a book change alone, and pays `maker_fee`:
//!   - on **L3** data the queue is exact (FIFO): the orders ahead are those resting at the price
//!     when ours arrived, plus volume from before the data began. Their cancels and executions
//!     shorten the queue; an execution of an order that joined after ours, or at a worse price
//!     than ours, would have hit ours first, so it fills ours.
//!   - on **L2** data the queue is modelled: the volume ahead starts as the level's size; a trade
//!     at the price eats it first and fills us with the excess; a trade through the price fills
//!     us. A fall in the level's size that trades do not explain is a cancel, shared between the
//!     volume ahead and behind in proportion `f(ahead) : f(behind)` with `f(x) = x^n`
//!     (`queue_power`; the "power" probabilistic queue model). `n = 0` splits every cancel in
//!     half; larger `n` takes more from the longer side (cancels come mostly from the back while
//!     we are near the front). The expected share is applied, not a random draw, so a run is
//!     deterministic. The volume ahead never exceeds the level's size. The shares are
//!     fractional, so with `lot_size` set the fills this model gives are rounded down to whole
//!     lots (the rest of the trade is lost to us, conservatively).
//!
//!   `queue_fills = "whole"` runs hftbacktest's no-partial-fill exchange instead, for
//!   comparisons on the same data: a trade at the price takes the volume ahead (which may go
//!   below zero: how far the trade reached past it), and once that overshoot rounds to a lot
//!   the whole rest of the order fills; a trade through the price fills it whole; and a book
//!   change alone fills it whole when the opposite best reaches its price (a buy at or above
//!   the best ask). Cancels count the volume behind from the level as last seen, as hftbacktest
//!   does. `queue_cancels = "gross"` counts a level's whole fall as cancels, trades at the
//!   price included; by default (`net`, as hftbacktest) the fall less those trades counts.
//!
//! ```
//! use flowsense_core::order::{Broker, ClientOrderId, Order, OrderKind, ReportKind};
//! use flowsense_core::strategy::ExecutionSpec;
//! use flowsense_core::{DepthUpdate, MarketEvent, Price, Side, Size, Symbol, Trade, UnixNanos};
//! use flowsense_operators::exchange::SimExchange;
//!
//! let sym = Symbol::new("ABC").unwrap();
//! let spec = ExecutionSpec { maker_fee: 0.0, ..Default::default() }; // 1 ms latencies
//! let mut ex = SimExchange::new(sym.clone(), &spec);
//! let px = |p: i64| Price::from_units(p);
//! let sz = |s: i64| Size::from_units(s);
//! ex.on_market(&MarketEvent::Depth(sym.clone(), Box::new(DepthUpdate {
//!     ts: UnixNanos(0), bids: vec![(px(99), sz(5))], asks: vec![(px(101), sz(5))],
//!     is_snapshot: true, ..Default::default() })));
//! // Join the bid behind 5; it arrives at 1 ms.
//! ex.submit(Order::limit(ClientOrderId(1), sym.clone(), Side::Buy, OrderKind::Limit, px(99), sz(2), UnixNanos(0)));
//! let sell = |ms: i64, size: i64| MarketEvent::Trade(sym.clone(), Trade { ts: UnixNanos::from_millis(ms),
//!     local_ts: None, trade_id: None, price: px(99), size: sz(size), aggressor: Side::Sell });
//! ex.on_market(&sell(2, 4)); // 4 of the 5 ahead trade
//! ex.on_market(&sell(3, 2)); // 1 ahead, then 1 of ours
//! let mut reports = Vec::new();
//! ex.flush(&mut reports);
//! let fills: Vec<_> = reports.iter().filter_map(|r| match &r.kind {
//!     ReportKind::Fill(f) => Some(f.size), _ => None }).collect();
//! assert_eq!(fills, vec![sz(1)]);
//! ```

use std::collections::VecDeque;

use flowsense_core::book::{L2Book, L3Book};
pub use flowsense_core::order::Broker;
use flowsense_core::order::{
    ClientOrderId, ExecReport, Fill, Liquidity, Order, OrderKind, ReportKind,
};
use flowsense_core::strategy::ExecutionSpec;
use flowsense_core::{L3Action, MarketEvent, OrderId, Price, Side, Size, Symbol, UnixNanos};
use rustc_hash::FxHashMap;

/// The data's book, as the exchange rebuilds it.
#[derive(Debug)]
enum DataBook {
    Empty,
    L2(Box<L2Book>),
    L3(Box<L3Book>),
    /// Bars only: no book, orders meet the next bar.
    Bars,
}

impl DataBook {
    fn l2(&self) -> Option<&L2Book> {
        match self {
            DataBook::Empty | DataBook::Bars => None,
            DataBook::L2(b) => Some(b),
            DataBook::L3(book) => Some(book.l2()),
        }
    }
}

/// The queue ahead of a resting order.
#[derive(Debug)]
enum Queue {
    /// L2: modelled volume ahead, the level's size at the last update, and trades at the price
    /// since that update.
    Modelled { ahead: f64, level: f64, traded: f64 },
    /// L3: the orders ahead with their remaining sizes, and anonymous volume ahead.
    Exact {
        ahead: FxHashMap<OrderId, Size>,
        seeded: Size,
    },
    /// Bars: no queue; the order meets each bar whole.
    Bar,
}

#[derive(Debug)]
struct Resting {
    order: Order,
    left: Size,
    since: UnixNanos,
    queue: Queue,
}

/// One execution to report.
struct Exec {
    id: ClientOrderId,
    side: Side,
    price: Price,
    size: Size,
    liquidity: Liquidity,
    t: i64,
    wait: Option<i64>,
}

#[derive(Debug)]
enum Action {
    Submit(Order),
    Cancel(ClientOrderId),
}

/// A simulated exchange for one symbol. See the [module documentation](self) for the model.
#[derive(Debug)]
pub struct SimExchange {
    symbol: Symbol,
    spec: ExecutionSpec,
    book: DataBook,
    /// Actions on their way, by arrival time then sending order.
    pending: Vec<(i64, u64, Action)>,
    sent: u64,
    resting: Vec<Resting>,
    reports: VecDeque<ExecReport>,
    /// Latest exchange time seen.
    clock: i64,
}

impl SimExchange {
    /// An exchange for `symbol` with the job's execution parameters.
    pub fn new(symbol: Symbol, spec: &ExecutionSpec) -> SimExchange {
        SimExchange {
            symbol,
            spec: spec.clone(),
            book: DataBook::Empty,
            pending: Vec::new(),
            sent: 0,
            resting: Vec::new(),
            reports: VecDeque::new(),
            clock: i64::MIN,
        }
    }

    /// The symbol.
    pub fn symbol(&self) -> &Symbol {
        &self.symbol
    }

    /// Orders resting in the book now.
    pub fn resting(&self) -> usize {
        self.resting.len()
    }

    fn latency(&self, id: ClientOrderId, salt: u64) -> i64 {
        let base = self.spec.order_latency.0 as i64;
        match self.spec.latency_jitter {
            Some(j) if j.0 > 0 => {
                let h = flowsense_core::ids::fnv1a_continue(
                    flowsense_core::ids::fnv1a(&self.spec.seed.to_le_bytes()),
                    &[id.0.to_le_bytes(), salt.to_le_bytes()].concat(),
                );
                base + (h % (j.0 + 1)) as i64
            }
            _ => base,
        }
    }

    fn report(&mut self, order: ClientOrderId, ts: i64, kind: ReportKind) {
        let delivered = ts.saturating_add(self.spec.response_latency.0 as i64);
        self.reports.push_back(ExecReport {
            order,
            ts: UnixNanos(ts),
            delivered: UnixNanos(delivered),
            kind,
        });
    }

    /// Reports one execution, its fee at the maker or taker rate.
    fn execute(&mut self, e: Exec) {
        let rate = match e.liquidity {
            Liquidity::Maker => self.spec.maker_fee,
            Liquidity::Taker => self.spec.taker_fee,
        };
        let fill = Fill {
            order: e.id,
            symbol: self.symbol.clone(),
            side: e.side,
            price: e.price,
            size: e.size,
            fee: e.price.as_f64() * e.size.as_f64() * rate,
            liquidity: e.liquidity,
            ts: UnixNanos(e.t),
            queue_wait: e.wait,
        };
        self.report(e.id, e.t, ReportKind::Fill(fill));
    }

    fn push(&mut self, arrival: i64, action: Action) {
        self.sent += 1;
        let key = (arrival, self.sent);
        let at = self.pending.partition_point(|(a, s, _)| (*a, *s) <= key);
        self.pending.insert(at, (arrival, self.sent, action));
    }

    /// Actions that have arrived by exchange time `t` take effect, in arrival order.
    fn arrive_until(&mut self, t: i64) {
        let n = self.pending.partition_point(|(a, _, _)| *a <= t);
        if n == 0 {
            return;
        }
        let due: Vec<_> = self.pending.drain(..n).collect();
        for (arrival, _, action) in due {
            let at = arrival.max(self.clock);
            match action {
                Action::Submit(order) => self.accept(order, at),
                Action::Cancel(id) => {
                    if let Some(i) = self.resting.iter().position(|r| r.order.id == id) {
                        self.resting.remove(i);
                        self.report(id, at, ReportKind::Cancelled);
                    }
                }
            }
        }
    }

    fn accept(&mut self, order: Order, at: i64) {
        let id = order.id;
        if matches!(self.book, DataBook::Bars) {
            let why = if !order.size.is_positive() {
                Some("size must be positive")
            } else if order.kind != OrderKind::Market
                && order.price.is_none_or(|p| !p.is_positive())
            {
                Some("limit price must be positive")
            } else {
                None
            };
            if let Some(why) = why {
                self.report(id, at, ReportKind::Rejected(why.into()));
                return;
            }
            self.report(id, at, ReportKind::Accepted);
            self.resting.push(Resting {
                left: order.size,
                order,
                since: UnixNanos(at),
                queue: Queue::Bar,
            });
            return;
        }
        let limit = order.price;
        let touch = self.book.l2().map(|book| {
            // The levels the order can take, best first.
            let levels: Vec<(Price, Size)> = match order.side {
                Side::Buy => book
                    .asks()
                    .take_while(|(p, _)| limit.is_none_or(|l| *p <= l))
                    .collect(),
                Side::Sell => book
                    .bids()
                    .take_while(|(p, _)| limit.is_none_or(|l| *p >= l))
                    .collect(),
            };
            (book.is_crossed(), levels)
        });
        let levels = match touch {
            None => {
                self.report(id, at, ReportKind::Rejected("no book yet".into()));
                return;
            }
            Some((true, _)) => {
                let why = "the book is crossed: no fill through a crossed book";
                self.report(id, at, ReportKind::Rejected(why.into()));
                return;
            }
            Some((false, levels)) => levels,
        };
        if !order.size.is_positive() {
            self.report(id, at, ReportKind::Rejected("size must be positive".into()));
            return;
        }
        if order.kind != OrderKind::Market && order.price.is_none_or(|p| !p.is_positive()) {
            self.report(
                id,
                at,
                ReportKind::Rejected("limit price must be positive".into()),
            );
            return;
        }
        if order.kind == OrderKind::PostOnly && !levels.is_empty() {
            let why = "post-only order would take liquidity";
            self.report(id, at, ReportKind::Rejected(why.into()));
            return;
        }
        self.report(id, at, ReportKind::Accepted);
        let mut left = order.size;
        let slip = self.spec.slippage_bps / 1e4;
        for (p, avail) in levels {
            if !left.is_positive() {
                break;
            }
            let take = left.min(avail);
            let px = match order.side {
                Side::Buy => p.as_f64() * (1.0 + slip),
                Side::Sell => p.as_f64() * (1.0 - slip),
            };
            let price = Price::from_f64(px).unwrap_or(p);
            left -= take;
            self.execute(Exec {
                id,
                side: order.side,
                price,
                size: take,
                liquidity: Liquidity::Taker,
                t: at,
                wait: None,
            });
        }
        if !left.is_positive() {
            return;
        }
        if !order.kind.rests() {
            self.report(id, at, ReportKind::Cancelled);
            return;
        }
        let price = order.price.expect("checked above");
        let queue = match &self.book {
            DataBook::L3(book) => Queue::Exact {
                ahead: book.orders_at(order.side, price).into_iter().collect(),
                seeded: book.seeded_at(order.side, price),
            },
            _ => {
                let level = self
                    .book
                    .l2()
                    .map_or(0.0, |b| b.level(order.side, price).as_f64());
                Queue::Modelled {
                    ahead: level,
                    level,
                    traded: 0.0,
                }
            }
        };
        self.resting.push(Resting {
            order,
            left,
            since: UnixNanos(at),
            queue,
        });
    }

    /// Fills resting orders that a print at `price` on the passive `side` of `size` reaches.
    /// `ahead_hit` says whether the print consumed volume ahead of (`true`) or behind each order
    /// (L3: decided per order by the caller through `exec_id`).
    fn on_print(&mut self, side: Side, price: Price, size: Size, exec_id: Option<OrderId>, t: i64) {
        let lot = self.spec.lot_size;
        let whole = self.spec.queue_fills == flowsense_core::strategy::QueueFills::Whole;
        let mut fills = Vec::new();
        for r in &mut self.resting {
            if r.order.side != side || !r.left.is_positive() || matches!(r.queue, Queue::Bar) {
                continue;
            }
            let mine = r.order.price.expect("resting orders are limits");
            let through = match side {
                Side::Buy => price < mine,
                Side::Sell => price > mine,
            };
            let fill = if through {
                if whole { r.left } else { r.left.min(size) }
            } else if price == mine {
                match &mut r.queue {
                    Queue::Modelled { ahead, traded, .. } if whole => {
                        // hftbacktest's no-partial rule: the queue ahead may go below zero (the
                        // trade reached that far past it), and the order fills whole once that
                        // overshoot rounds to at least one lot.
                        let q = size.as_f64();
                        *traded += q;
                        *ahead -= q;
                        let past = -*ahead;
                        let reached = match lot {
                            Some(lot) => (past / lot).round() >= 1.0,
                            None => past > 0.0,
                        };
                        if reached { r.left } else { Size::ZERO }
                    }
                    Queue::Modelled { ahead, traded, .. } => {
                        let q = size.as_f64();
                        *traded += q;
                        let mut excess = q - *ahead;
                        *ahead = (*ahead - q).max(0.0);
                        // The model's shares are fractional; the venue fills whole lots.
                        if let Some(lot) = lot {
                            excess = (excess / lot + 1e-9).floor() * lot;
                        }
                        if excess > 0.0 {
                            r.left.min(Size::from_f64(excess).unwrap_or(Size::ZERO))
                        } else {
                            Size::ZERO
                        }
                    }
                    Queue::Bar => Size::ZERO,
                    Queue::Exact { ahead, seeded } => match exec_id {
                        Some(id) if ahead.contains_key(&id) => {
                            let s = ahead.get_mut(&id).expect("checked");
                            *s = s.saturating_sub(size);
                            if !s.is_positive() {
                                ahead.remove(&id);
                            }
                            Size::ZERO
                        }
                        // An execution the book charged to volume from before the data began.
                        None if seeded.is_positive() => {
                            *seeded = seeded.saturating_sub(size);
                            Size::ZERO
                        }
                        _ if whole => r.left,
                        _ => r.left.min(size),
                    },
                }
            } else {
                Size::ZERO
            };
            if fill.is_positive() {
                r.left -= fill;
                fills.push((r.order.id, r.order.side, mine, fill, t - r.since.0));
            }
        }
        self.execute_maker_fills(fills, t);
    }

    /// Executes resting orders' fills (id, side, price, size, time waited) as a maker at `t`,
    /// and drops the orders that are done.
    fn execute_maker_fills(&mut self, fills: Vec<(ClientOrderId, Side, Price, Size, i64)>, t: i64) {
        for (id, side, price, size, wait) in fills {
            self.execute(Exec {
                id,
                side,
                price,
                size,
                liquidity: Liquidity::Maker,
                t,
                wait: Some(wait),
            });
        }
        self.resting.retain(|r| r.left.is_positive());
    }

    /// A bar: orders that arrived before its close meet it (see the module documentation).
    fn on_bar(&mut self, b: &flowsense_core::Bar) {
        let slip = self.spec.slippage_bps / 1e4;
        let close = b.close_time().0;
        // A bar that did not trade fills nothing and cancels nothing: orders wait for the next
        // bar that traded. Unless the run says to fill on it, without a volume cap.
        let mut avail = b.volume;
        if !avail.is_positive() {
            match self.spec.zero_volume_bars {
                flowsense_core::strategy::ZeroVolumeBars::Skip => return,
                flowsense_core::strategy::ZeroVolumeBars::Fill => avail = Size::from_raw(i64::MAX),
            }
        }
        let mut fills = Vec::new();
        let mut cancels = Vec::new();
        let mut rejects = Vec::new();
        for r in &mut self.resting {
            if !matches!(r.queue, Queue::Bar) || !r.left.is_positive() {
                continue;
            }
            let side = r.order.side;
            let at_open = r.since.0.max(b.open_time.0);
            let hit = match (r.order.kind, r.order.price) {
                (OrderKind::Market, _) => Some((b.open, Liquidity::Taker, at_open)),
                (kind, Some(limit)) => {
                    let at_open_ok = match side {
                        Side::Buy => b.open <= limit,
                        Side::Sell => b.open >= limit,
                    };
                    let through = match side {
                        Side::Buy => b.low < limit,
                        Side::Sell => b.high > limit,
                    };
                    if at_open_ok && kind == OrderKind::PostOnly {
                        r.left = Size::ZERO; // would take at the open: refused below
                        None
                    } else if at_open_ok {
                        Some((b.open, Liquidity::Taker, at_open))
                    } else if kind.rests() && through {
                        Some((limit, Liquidity::Maker, close))
                    } else {
                        None
                    }
                }
                (_, None) => None,
            };
            if let Some((p, liquidity, t)) = hit {
                let take = r.left.min(avail);
                if take.is_positive() {
                    avail -= take;
                    r.left -= take;
                    let price = if liquidity == Liquidity::Taker {
                        let px = match side {
                            Side::Buy => p.as_f64() * (1.0 + slip),
                            Side::Sell => p.as_f64() * (1.0 - slip),
                        };
                        Price::from_f64(px).unwrap_or(p)
                    } else {
                        p
                    };
                    let wait = (liquidity == Liquidity::Maker).then(|| t - r.since.0);
                    fills.push((r.order.id, side, price, take, liquidity, t, wait));
                }
            }
            if r.order.kind == OrderKind::PostOnly && !r.left.is_positive() && hit.is_none() {
                rejects.push((r.order.id, at_open));
            } else if !r.order.kind.rests() && r.left.is_positive() {
                r.left = Size::ZERO;
                cancels.push((r.order.id, at_open));
            }
        }
        for (id, side, price, size, liquidity, t, wait) in fills {
            self.execute(Exec {
                id,
                side,
                price,
                size,
                liquidity,
                t,
                wait,
            });
        }
        for (id, t) in cancels {
            self.report(id, t, ReportKind::Cancelled);
        }
        for (id, t) in rejects {
            let why = "post-only order would take liquidity at the open";
            self.report(id, t, ReportKind::Rejected(why.into()));
        }
        self.resting.retain(|r| r.left.is_positive());
    }

    /// The data's level at (`side`, `price`) changed to `size` (L2).
    fn on_level(&mut self, side: Side, price: Price, size: Size) {
        let n = self.spec.queue_power;
        let gross = self.spec.queue_cancels == flowsense_core::strategy::QueueCancels::Gross;
        let whole = self.spec.queue_fills == flowsense_core::strategy::QueueFills::Whole;
        let f = |x: f64| if x <= 0.0 { 0.0 } else { x.powf(n) };
        let new = size.as_f64();
        for r in &mut self.resting {
            if r.order.side != side || r.order.price != Some(price) {
                continue;
            }
            let Queue::Modelled {
                ahead,
                level,
                traded,
            } = &mut r.queue
            else {
                continue;
            };
            // Trades already took their share from the front (`net`); `gross` counts the
            // level's whole fall as cancels, as hftbacktest's power model does.
            let before = if gross {
                *level
            } else {
                (*level - *traded).max(0.0)
            };
            let cancelled = before - new;
            if cancelled > 0.0 {
                // hftbacktest counts the volume behind from the level as last seen, trades
                // included; `whole` runs its rules as it runs them.
                let behind = if whole {
                    *level - *ahead
                } else {
                    before - *ahead
                }
                .max(0.0);
                let (fa, fb) = (f(*ahead), f(behind));
                let share = if fa + fb > 0.0 { fa / (fa + fb) } else { 0.5 };
                let from_behind = cancelled * (1.0 - share);
                let overflow = (from_behind - behind).max(0.0);
                *ahead -= cancelled * share + overflow;
            }
            *ahead = if whole {
                ahead.min(new)
            } else {
                ahead.clamp(0.0, new)
            };
            *level = new;
            *traded = 0.0;
        }
    }

    /// hftbacktest's no-partial exchange also fills on a book change alone: a resting order
    /// whose price the opposite best reached (a buy at or above the best ask, a sell at or
    /// below the best bid) fills whole at its price, as a maker. Only with `queue_fills =
    /// "whole"`, on L2 data.
    fn fill_crossed(&mut self, t: i64) {
        let Some(book) = self.book.l2() else {
            return;
        };
        let (bid, ask) = (book.best_bid().map(|l| l.0), book.best_ask().map(|l| l.0));
        let mut fills = Vec::new();
        for r in &mut self.resting {
            if !matches!(r.queue, Queue::Modelled { .. }) || !r.left.is_positive() {
                continue;
            }
            let mine = r.order.price.expect("resting orders are limits");
            let crossed = match r.order.side {
                Side::Buy => ask.is_some_and(|a| a <= mine),
                Side::Sell => bid.is_some_and(|b| b >= mine),
            };
            if crossed {
                fills.push((r.order.id, r.order.side, mine, r.left, t - r.since.0));
                r.left = Size::ZERO;
            }
        }
        self.execute_maker_fills(fills, t);
    }

    /// An L3 message about an order in the queue ahead of ours.
    fn on_l3_queue(&mut self, o: &flowsense_core::OrderEvent) {
        for r in &mut self.resting {
            let Queue::Exact { ahead, seeded } = &mut r.queue else {
                continue;
            };
            match o.action {
                L3Action::Cancel | L3Action::Delete => {
                    if let Some(s) = ahead.get_mut(&o.order_id) {
                        *s = if o.action == L3Action::Delete {
                            Size::ZERO
                        } else {
                            s.saturating_sub(o.size)
                        };
                        if !s.is_positive() {
                            ahead.remove(&o.order_id);
                        }
                    } else if r.order.side == o.side && r.order.price == Some(o.price) {
                        // Not a known order: the book charged it to volume from before the data.
                        *seeded = seeded.saturating_sub(o.size);
                    }
                }
                L3Action::Seed if r.order.side == o.side && r.order.price == Some(o.price) => {
                    // Volume from before the data began, only now revealed: it was ahead.
                    *seeded += o.size;
                }
                L3Action::Modify => {
                    if let Some(s) = ahead.get_mut(&o.order_id) {
                        // A price change or a larger size loses priority; a smaller size keeps it.
                        if r.order.price != Some(o.price) || o.size > *s {
                            ahead.remove(&o.order_id);
                        } else {
                            *s = o.size;
                        }
                    }
                }
                _ => {}
            }
        }
    }
}

impl Broker for SimExchange {
    fn submit(&mut self, order: Order) {
        let arrival = order.sent.0.saturating_add(self.latency(order.id, 0));
        self.push(arrival, Action::Submit(order));
    }

    fn cancel(&mut self, id: ClientOrderId, at: UnixNanos) {
        let arrival = at.0.saturating_add(self.latency(id, 1));
        self.push(arrival, Action::Cancel(id));
    }

    fn on_market(&mut self, ev: &MarketEvent) {
        if matches!(ev, MarketEvent::Bbo(..) | MarketEvent::Quote(..)) {
            return;
        }
        if matches!(ev, MarketEvent::Bar(..)) && !matches!(self.book, DataBook::Bars) {
            self.book = DataBook::Bars;
        }
        let t = ev.ts().0;
        self.arrive_until(t);
        self.clock = self.clock.max(t);
        let now = self.clock;
        match ev {
            MarketEvent::Order(_, o) => {
                if !matches!(&self.book, DataBook::L3(_)) {
                    self.book = DataBook::L3(Box::default());
                }
                if o.action == L3Action::Clear {
                    // The session ended: its book is gone, and so are our orders in it (day
                    // orders expire at the close).
                    for r in std::mem::take(&mut self.resting) {
                        self.report(r.order.id, now, ReportKind::Cancelled);
                    }
                }
                if !self.resting.is_empty() {
                    match o.action {
                        L3Action::Execute => {
                            let known = match &self.book {
                                DataBook::L3(book) => book.order(o.order_id).is_some(),
                                _ => false,
                            };
                            let id = known.then_some(o.order_id);
                            self.on_print(o.side, o.price, o.size, id, now);
                        }
                        L3Action::Cancel | L3Action::Delete | L3Action::Modify | L3Action::Seed => {
                            self.on_l3_queue(o)
                        }
                        _ => {}
                    }
                }
                if let DataBook::L3(book) = &mut self.book {
                    let _ = book.apply(o);
                }
            }
            MarketEvent::Depth(_, d) => {
                if !matches!(self.book, DataBook::L2(_)) {
                    self.book = DataBook::L2(Box::default());
                }
                let DataBook::L2(book) = &mut self.book else {
                    unreachable!("set above")
                };
                if d.is_snapshot {
                    book.clear();
                }
                for (side, levels) in [(Side::Buy, &d.bids), (Side::Sell, &d.asks)] {
                    for &(p, q) in levels {
                        book.set_level(side, p, q);
                    }
                }
                if !self.resting.is_empty() {
                    let mut changed: Vec<(Side, Price, Size)> = Vec::new();
                    for r in &self.resting {
                        let (side, price) = (r.order.side, r.order.price.expect("limit"));
                        let levels = match side {
                            Side::Buy => &d.bids,
                            Side::Sell => &d.asks,
                        };
                        if d.is_snapshot || levels.iter().any(|(p, _)| *p == price) {
                            let size = self.book.l2().map_or(Size::ZERO, |b| b.level(side, price));
                            changed.push((side, price, size));
                        }
                    }
                    for (side, price, size) in changed {
                        self.on_level(side, price, size);
                    }
                    if self.spec.queue_fills == flowsense_core::strategy::QueueFills::Whole {
                        self.fill_crossed(now);
                    }
                }
            }
            MarketEvent::Trade(_, tr) => {
                // On L3 data the executions drive fills; their trade rows would count twice.
                if !matches!(self.book, DataBook::L3(_)) && !self.resting.is_empty() {
                    self.on_print(tr.aggressor.opposite(), tr.price, tr.size, None, now);
                }
            }
            MarketEvent::Bar(_, b) => self.on_bar(b),
            MarketEvent::Bbo(..) | MarketEvent::Quote(..) => {}
        }
    }

    fn reports(&mut self, now: UnixNanos, out: &mut Vec<ExecReport>) {
        while self.reports.front().is_some_and(|r| r.delivered <= now) {
            out.extend(self.reports.pop_front());
        }
    }

    fn flush(&mut self, out: &mut Vec<ExecReport>) {
        out.extend(self.reports.drain(..));
    }
}

#[cfg(test)]
mod tests;
