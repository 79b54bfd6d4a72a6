//! Orders, fills and execution reports, and the [`Broker`] trait every execution venue implements
//! (the simulated exchange of backtests and paper trading, `flowsense_operators::exchange`, and
//! the live brokers' sinks).
//!
//! The trait lives here, in the shared vocabulary, so that the strategy operators can drive any
//! broker without depending on the crate that implements one.
//!
//! Two clocks meet here. A strategy decides on *feed time* (when the data reached it: the
//! source's receive time where recorded, else exchange time); an exchange acts on *exchange
//! time*. An order sent at feed time `t` reaches the exchange at `t + order latency`, and a
//! report made at exchange time `x` reaches the strategy at `x + response latency`.
//!
//! ```
//! use flowsense_core::order::{ClientOrderId, Order, OrderKind};
//! use flowsense_core::{Side, Size, Symbol, UnixNanos};
//! let sym = Symbol::new("BTCUSDT-PERP").unwrap();
//! let id = ClientOrderId::new("mm", &sym, 7);
//! assert_eq!(id, ClientOrderId::new("mm", &sym, 7)); // the same on every run and restart
//! let o = Order::market(id, sym, Side::Buy, "0.01".parse::<Size>().unwrap(), UnixNanos(5));
//! assert_eq!(o.kind, OrderKind::Market);
//! ```

use crate::{MarketEvent, Price, Side, Size, Symbol, UnixNanos};

/// A client order id, derived from the job, the symbol and the order's sequence number within
/// them, so a re-run or a restart names every order the same way and never sends one twice.
#[derive(
    Copy, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Debug, serde::Serialize, serde::Deserialize,
)]
pub struct ClientOrderId(pub u64);

impl ClientOrderId {
    /// The id of the `seq`-th order of `job` on `symbol` (FNV-1a over the three).
    pub fn new(job: &str, symbol: &Symbol, seq: u64) -> ClientOrderId {
        let h = crate::ids::fnv1a(job.as_bytes());
        let h = crate::ids::fnv1a_continue(h, b"/");
        let h = crate::ids::fnv1a_continue(h, symbol.as_str().as_bytes());
        ClientOrderId(crate::ids::fnv1a_continue(h, &seq.to_le_bytes()))
    }
}

impl std::fmt::Display for ClientOrderId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// How an order executes.
#[derive(Copy, Clone, PartialEq, Eq, Hash, Debug, serde::Serialize, serde::Deserialize)]
pub enum OrderKind {
    /// Takes liquidity at any price: walks the book.
    Market,
    /// Rests at its limit price until filled or cancelled; the marketable part, if any, takes.
    Limit,
    /// Immediate or cancel: takes what it can up to its limit price, the rest is cancelled.
    Ioc,
    /// Rests at its limit price; refused if it would take on arrival (a maker-only order:
    /// Binance's GTX, "post only" elsewhere).
    PostOnly,
}

impl OrderKind {
    /// True for the kinds that rest in the book (limit and post-only).
    pub const fn rests(self) -> bool {
        matches!(self, OrderKind::Limit | OrderKind::PostOnly)
    }

    /// `market`, `limit`, `ioc` or `post_only`, as stored in the lake.
    pub const fn as_str(self) -> &'static str {
        match self {
            OrderKind::Market => "market",
            OrderKind::Limit => "limit",
            OrderKind::Ioc => "ioc",
            OrderKind::PostOnly => "post_only",
        }
    }
}

/// An order as the strategy sends it.
#[derive(Clone, PartialEq, Eq, Debug, serde::Serialize, serde::Deserialize)]
pub struct Order {
    /// Its client id.
    pub id: ClientOrderId,
    /// The symbol.
    pub symbol: Symbol,
    /// Buy or sell.
    pub side: Side,
    /// How it executes.
    pub kind: OrderKind,
    /// Limit price (`None` for market orders).
    pub price: Option<Price>,
    /// Size.
    pub size: Size,
    /// Feed time at which the strategy sent it.
    pub sent: UnixNanos,
}

impl Order {
    /// A market order.
    pub fn market(
        id: ClientOrderId,
        symbol: Symbol,
        side: Side,
        size: Size,
        sent: UnixNanos,
    ) -> Order {
        Order {
            id,
            symbol,
            side,
            kind: OrderKind::Market,
            price: None,
            size,
            sent,
        }
    }

    /// A limit order (`kind` [`OrderKind::Limit`], [`OrderKind::Ioc`] or [`OrderKind::PostOnly`]).
    pub fn limit(
        id: ClientOrderId,
        symbol: Symbol,
        side: Side,
        kind: OrderKind,
        price: Price,
        size: Size,
        sent: UnixNanos,
    ) -> Order {
        Order {
            id,
            symbol,
            side,
            kind,
            price: Some(price),
            size,
            sent,
        }
    }
}

/// Whether a fill added liquidity (maker) or took it (taker).
#[derive(Copy, Clone, PartialEq, Eq, Hash, Debug, serde::Serialize, serde::Deserialize)]
pub enum Liquidity {
    /// The order rested and was hit.
    Maker,
    /// The order crossed the spread.
    Taker,
}

impl Liquidity {
    /// `maker` or `taker`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Liquidity::Maker => "maker",
            Liquidity::Taker => "taker",
        }
    }
}

/// One execution of (part of) an order.
#[derive(Clone, PartialEq, Debug, serde::Serialize, serde::Deserialize)]
pub struct Fill {
    /// The order.
    pub order: ClientOrderId,
    /// The symbol.
    pub symbol: Symbol,
    /// The order's side.
    pub side: Side,
    /// Execution price, slippage included.
    pub price: Price,
    /// Executed size.
    pub size: Size,
    /// Fee paid, in quote currency (negative for a rebate).
    pub fee: f64,
    /// Maker or taker.
    pub liquidity: Liquidity,
    /// Exchange time of the execution.
    pub ts: UnixNanos,
    /// For maker fills, how long the order had rested when this fill came, in nanoseconds.
    pub queue_wait: Option<i64>,
}

/// What the exchange says about an order.
#[derive(Clone, PartialEq, Debug, serde::Serialize, serde::Deserialize)]
pub enum ReportKind {
    /// The order reached the exchange and was accepted (it rests or executes).
    Accepted,
    /// (Part of) it executed.
    Fill(Fill),
    /// It was cancelled (by request, or the rest of an IOC); nothing more will fill.
    Cancelled,
    /// It was refused; nothing of it executed.
    Rejected(String),
}

/// An execution report: what happened to an order, when at the exchange, and when the strategy
/// learns of it.
#[derive(Clone, PartialEq, Debug, serde::Serialize, serde::Deserialize)]
pub struct ExecReport {
    /// The order.
    pub order: ClientOrderId,
    /// Exchange time of what happened.
    pub ts: UnixNanos,
    /// Feed time at which the strategy learns of it.
    pub delivered: UnixNanos,
    /// What happened.
    pub kind: ReportKind,
}

/// An execution venue: orders and cancels in, execution reports out.
///
/// A simulated exchange also sees the market data (through [`Broker::on_market`]), which drives
/// its matching; a real broker ignores it. Everything is in the order the strategy saw it, so a
/// simulated run is a pure function of its inputs.
pub trait Broker {
    /// Sends an order at feed time `order.sent`.
    fn submit(&mut self, order: Order);

    /// Asks to cancel an order, sent at feed time `at`.
    fn cancel(&mut self, id: ClientOrderId, at: UnixNanos);

    /// Moves a resting order's limit price in place, sent at feed time `at` (a modify at a
    /// broker that has one, such as Interactive Brokers); `false` if this broker cannot, and
    /// the caller cancels and places again. The simulated exchange cannot (the default), so
    /// backtests replace by cancel and new order, as they always did.
    fn modify(&mut self, id: ClientOrderId, price: Price, at: UnixNanos) -> bool {
        let _ = (id, price, at);
        false
    }

    /// One market event, in feed order.
    fn on_market(&mut self, ev: &MarketEvent);

    /// Moves the reports the strategy has received by feed time `now` into `out`, in the order
    /// they were delivered.
    fn reports(&mut self, now: UnixNanos, out: &mut Vec<ExecReport>);

    /// Moves every remaining report into `out` (the run ended).
    fn flush(&mut self, out: &mut Vec<ExecReport>);

    /// A live broker calls `wake` (from any thread) when reports or notices arrive, so the
    /// strategy hears of them without waiting for its next market event. A simulated exchange
    /// reports on market events only and never calls it (the default).
    fn set_waker(&mut self, wake: Waker) {
        let _ = wake;
    }

    /// Moves what a live broker saw that the strategy must hear of into `out`: a connection
    /// lost or restored, a reconciliation, a position that does not match. A simulated
    /// exchange has none (the default).
    fn notices(&mut self, out: &mut Vec<BrokerNotice>) {
        let _ = out;
    }
}

/// What a live broker calls to wake the operator that trades through it ([`Broker::set_waker`]).
pub type Waker = std::sync::Arc<dyn Fn() + Send + Sync>;

/// Something a broker reports outside any one order: the trader records it as a risk event of
/// its `kind` and, with `halt`, halts the strategy (cancelling its orders, keeping the
/// position: nobody should trade on a book the broker and the job disagree about).
///
/// ```
/// use flowsense_core::order::BrokerNotice;
/// let n = BrokerNotice::halt("position_mismatch", "broker holds 3, the job 2");
/// assert!(n.halt && n.kind == "position_mismatch");
/// ```
#[derive(Clone, PartialEq, Eq, Debug, serde::Serialize, serde::Deserialize)]
pub struct BrokerNotice {
    /// The risk event's kind (`broker_disconnected`, `broker_reconnected`, `reconciled`,
    /// `position_mismatch`, ...).
    pub kind: String,
    /// What happened, in words.
    pub detail: String,
    /// Halt the strategy.
    pub halt: bool,
}

impl BrokerNotice {
    /// A notice the strategy only records.
    pub fn info(kind: &str, detail: impl Into<String>) -> BrokerNotice {
        BrokerNotice {
            kind: kind.into(),
            detail: detail.into(),
            halt: false,
        }
    }

    /// A notice that halts the strategy.
    pub fn halt(kind: &str, detail: impl Into<String>) -> BrokerNotice {
        BrokerNotice {
            kind: kind.into(),
            detail: detail.into(),
            halt: true,
        }
    }
}

/// How an order ended (or stands at the end of a run).
#[derive(Clone, PartialEq, Eq, Debug, serde::Serialize, serde::Deserialize)]
pub enum OrderStatus {
    /// Sent; no report yet.
    Sent,
    /// Resting (accepted, not or partly filled).
    Open,
    /// Completely filled.
    Filled,
    /// Cancelled (by request, or the unfilled rest of an IOC or market order).
    Cancelled,
    /// Refused by the exchange, with its reason.
    Rejected(String),
}

impl OrderStatus {
    /// `sent`, `open`, `filled`, `cancelled` or `rejected`.
    pub fn as_str(&self) -> &'static str {
        match self {
            OrderStatus::Sent => "sent",
            OrderStatus::Open => "open",
            OrderStatus::Filled => "filled",
            OrderStatus::Cancelled => "cancelled",
            OrderStatus::Rejected(_) => "rejected",
        }
    }
}

/// An order with the decision that made it and what became of it (a row of the `orders` table).
#[derive(Clone, PartialEq, Debug, serde::Serialize, serde::Deserialize)]
pub struct OrderRecord {
    /// The order as sent.
    pub order: Order,
    /// The signal's value at the decision.
    pub signal: f64,
    /// The target position the order works towards.
    pub target: f64,
    /// Why it was sent (`entry`, `exit`, `max_hold`, `replace`, `halt`).
    pub reason: String,
    /// How it ended.
    pub status: OrderStatus,
    /// Size filled.
    pub filled: Size,
}

/// One mark of a strategy's account (a row of the `equity` table), taken at every close of the
/// strategy's bucket.
#[derive(Clone, PartialEq, Debug, serde::Serialize, serde::Deserialize)]
pub struct EquityPoint {
    /// The bucket's end (exchange time).
    pub ts: UnixNanos,
    /// The symbol (the account's sleeve).
    pub symbol: Symbol,
    /// Capital plus cash flows plus the position at the mid, fees paid.
    pub equity: f64,
    /// The position, in size units.
    pub position: f64,
    /// The mid the position was marked at.
    pub mid: f64,
    /// Fees paid so far.
    pub fees: f64,
    /// Fraction below the running peak of equity.
    pub drawdown: f64,
    /// The signal's value.
    pub signal: f64,
    /// The regime's name, when the strategy defines regimes.
    pub regime: Option<String>,
}

/// Something the risk layer did or saw (a row of the `risk_events` table).
#[derive(Clone, PartialEq, Debug, serde::Serialize, serde::Deserialize)]
pub struct RiskEvent {
    /// Feed time.
    pub ts: UnixNanos,
    /// The symbol, or [`RiskEvent::PORTFOLIO`] for the portfolio monitor's own events.
    pub symbol: Symbol,
    /// `drawdown_alert`, `halt`, `refused`, `clipped`.
    pub kind: String,
    /// What happened, in words.
    pub detail: String,
}

impl RiskEvent {
    /// The symbol column of the portfolio monitor's events (`[risk.portfolio]`).
    pub const PORTFOLIO: &'static str = "PORTFOLIO";

    /// True for an event of the portfolio monitor rather than of one symbol's sleeve.
    ///
    /// ```
    /// use flowsense_core::order::RiskEvent;
    /// use flowsense_core::{Symbol, UnixNanos};
    /// let e = RiskEvent { ts: UnixNanos(0), symbol: Symbol::new(RiskEvent::PORTFOLIO).unwrap(),
    ///     kind: "halt".into(), detail: String::new() };
    /// assert!(e.is_portfolio());
    /// ```
    pub fn is_portfolio(&self) -> bool {
        self.symbol.as_str() == Self::PORTFOLIO
    }
}
