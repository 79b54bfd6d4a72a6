//! Market events as every reader emits them, and the dead letter a bad row becomes.

use std::fmt;

use crate::{Error, OrderId, Price, Result, Size, Symbol, UnixNanos};

/// Side of the book (`Buy` = bid) or of a trade's aggressor.
#[derive(
    Copy, Clone, PartialEq, Eq, Hash, Debug, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub enum Side {
    /// Bid side; for a trade, a buyer-initiated trade.
    Buy,
    /// Ask side; for a trade, a seller-initiated trade.
    Sell,
}

impl Side {
    /// `"buy"` or `"sell"`, as stored in the lake.
    pub const fn as_str(self) -> &'static str {
        match self {
            Side::Buy => "buy",
            Side::Sell => "sell",
        }
    }

    /// The other side.
    pub const fn opposite(self) -> Side {
        match self {
            Side::Buy => Side::Sell,
            Side::Sell => Side::Buy,
        }
    }

    /// Parses `"buy"` or `"sell"`.
    ///
    /// ```
    /// use flowsense_core::Side;
    /// assert_eq!(Side::parse("sell").unwrap(), Side::Sell);
    /// assert!(Side::parse("bid").is_err());
    /// ```
    pub fn parse(s: &str) -> Result<Side> {
        match s {
            "buy" => Ok(Side::Buy),
            "sell" => Ok(Side::Sell),
            _ => Err(Error::InvalidSide(s.to_string())),
        }
    }
}

/// What an L3 (market-by-order) message does to one order.
#[derive(Copy, Clone, PartialEq, Eq, Hash, Debug, serde::Serialize, serde::Deserialize)]
pub enum L3Action {
    /// A new resting limit order.
    Add,
    /// The order's price or size changed (it loses queue priority unless only the size fell).
    Modify,
    /// Part of the order was cancelled; `size` is the cancelled amount.
    Cancel,
    /// The whole remaining order was cancelled.
    Delete,
    /// A visible resting order traded; `size` is the executed amount.
    Execute,
    /// A hidden order traded; it never rested in the visible book.
    ExecuteHidden,
    /// An auction cross trade.
    Cross,
    /// A trading halt indicator.
    Halt,
    /// A new session begins: every order and level is gone (order ids may start over). Every L3
    /// reader emits one before a session's first message, so a replay of the lake starts each
    /// session from the same empty book the ingest did; `order_id`, `price` and `size` are 0.
    Clear,
    /// Volume known only in aggregate rests at a level (LOBSTER's first orderbook row, or depth
    /// it reveals later): `size` more at `side` and `price`, under no order id (`order_id` 0).
    /// Messages about orders the book never saw are charged to it.
    Seed,
}

impl L3Action {
    /// The name stored in the `action` column.
    pub const fn as_str(self) -> &'static str {
        match self {
            L3Action::Add => "add",
            L3Action::Modify => "modify",
            L3Action::Cancel => "cancel",
            L3Action::Delete => "delete",
            L3Action::Execute => "execute",
            L3Action::ExecuteHidden => "execute_hidden",
            L3Action::Cross => "cross",
            L3Action::Halt => "halt",
            L3Action::Clear => "clear",
            L3Action::Seed => "seed",
        }
    }

    /// The action named `name` in the `action` column, if any.
    ///
    /// ```
    /// use flowsense_core::L3Action;
    /// assert_eq!(L3Action::parse("seed"), Some(L3Action::Seed));
    /// assert_eq!(L3Action::parse("bid"), None);
    /// ```
    pub fn parse(name: &str) -> Option<L3Action> {
        Some(match name {
            "add" => L3Action::Add,
            "modify" => L3Action::Modify,
            "cancel" => L3Action::Cancel,
            "delete" => L3Action::Delete,
            "execute" => L3Action::Execute,
            "execute_hidden" => L3Action::ExecuteHidden,
            "cross" => L3Action::Cross,
            "halt" => L3Action::Halt,
            "clear" => L3Action::Clear,
            "seed" => L3Action::Seed,
            _ => return None,
        })
    }

    /// True for actions that print a trade.
    pub const fn is_trade(self) -> bool {
        matches!(
            self,
            L3Action::Execute | L3Action::ExecuteHidden | L3Action::Cross
        )
    }
}

/// One L3 order message.
#[derive(Clone, PartialEq, Eq, Debug, serde::Serialize, serde::Deserialize)]
pub struct OrderEvent {
    /// Exchange time.
    pub ts: UnixNanos,
    /// Position in the source, so that ties in `ts` keep their order.
    pub seq: u64,
    /// What happened.
    pub action: L3Action,
    /// The order.
    pub order_id: OrderId,
    /// The order's side (for executions, the resting order's side).
    pub side: Side,
    /// The order's price (for `Modify`, the new price).
    pub price: Price,
    /// Added, cancelled or executed size (for `Modify`, the new size).
    pub size: Size,
}

/// One L2 diff message: levels whose aggregate size is now `size` (zero removes the level).
#[derive(Clone, PartialEq, Eq, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct DepthUpdate {
    /// Exchange time.
    pub ts: UnixNanos,
    /// Local receive time, where the source records it.
    pub local_ts: Option<UnixNanos>,
    /// First update id covered (Binance `U`).
    pub first_update_id: u64,
    /// Last update id covered (Binance `u`).
    pub final_update_id: u64,
    /// Last update id of the previous message (Binance futures `pu`).
    pub prev_final_update_id: Option<u64>,
    /// Changed bid levels.
    pub bids: Vec<(Price, Size)>,
    /// Changed ask levels.
    pub asks: Vec<(Price, Size)>,
    /// True when this is a full snapshot that replaces the book.
    pub is_snapshot: bool,
}

/// A trade print.
#[derive(Clone, PartialEq, Eq, Debug, serde::Serialize, serde::Deserialize)]
pub struct Trade {
    /// Exchange time.
    pub ts: UnixNanos,
    /// Local receive time, where the source records it.
    pub local_ts: Option<UnixNanos>,
    /// Venue trade id, where there is one.
    pub trade_id: Option<u64>,
    /// Price.
    pub price: Price,
    /// Size.
    pub size: Size,
    /// The aggressor: `Buy` when a buyer lifted the offer.
    pub aggressor: Side,
}

/// An OHLCV bar, as data vendors ship them: known only once it closes, so its event time is
/// its close (`open_time + interval`), while the lake's `bars` table keeps the vendor's open
/// time in `ts`.
#[derive(Clone, PartialEq, Eq, Debug, serde::Serialize, serde::Deserialize)]
pub struct Bar {
    /// When the bar opened.
    pub open_time: UnixNanos,
    /// Its length, in nanoseconds.
    pub interval: i64,
    /// First price.
    pub open: Price,
    /// Highest price.
    pub high: Price,
    /// Lowest price.
    pub low: Price,
    /// Last price.
    pub close: Price,
    /// Volume traded.
    pub volume: Size,
    /// Number of trades, where the vendor gives it.
    pub trades: Option<u64>,
}

impl Bar {
    /// When the bar closed (its event time).
    pub fn close_time(&self) -> UnixNanos {
        UnixNanos(self.open_time.0 + self.interval)
    }
}

/// A top of book: best bid and ask with their sizes (either side may be empty).
#[derive(Clone, PartialEq, Eq, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct BboUpdate {
    /// Exchange time; `None` when the source sends none (Binance spot bookTicker).
    pub ts: Option<UnixNanos>,
    /// Local receive time, where the source records it.
    pub local_ts: Option<UnixNanos>,
    /// The venue update id this top of book reflects, where known.
    pub update_id: Option<u64>,
    /// Best bid price and size.
    pub bid: Option<(Price, Size)>,
    /// Best ask price and size.
    pub ask: Option<(Price, Size)>,
    /// True inside a span where continuity was broken and not yet resynced.
    pub gap: bool,
}

/// Every event a reader emits, tagged with its symbol.
#[derive(Clone, PartialEq, Eq, Debug, serde::Serialize, serde::Deserialize)]
pub enum MarketEvent {
    /// An L3 order message (`book_events`).
    Order(Symbol, OrderEvent),
    /// An L2 diff or snapshot (`depth_updates`). Boxed, as are the top-of-book variants: the
    /// enum then stays as small as a trade, which is what the dataflow copies per event.
    Depth(Symbol, Box<DepthUpdate>),
    /// A trade (`trades`).
    Trade(Symbol, Trade),
    /// The top of the book as reconstructed by FlowSense after a book event (`bbo`).
    Bbo(Symbol, Box<BboUpdate>),
    /// The top of the book as the venue published it (`quotes`).
    Quote(Symbol, Box<BboUpdate>),
    /// An OHLCV bar (`bars`), at its close.
    Bar(Symbol, Box<Bar>),
}

impl MarketEvent {
    /// Exchange time of the event (receive time for a quote without one).
    pub fn ts(&self) -> UnixNanos {
        match self {
            MarketEvent::Order(_, o) => o.ts,
            MarketEvent::Depth(_, d) => d.ts,
            MarketEvent::Trade(_, t) => t.ts,
            MarketEvent::Bbo(_, b) | MarketEvent::Quote(_, b) => {
                b.ts.or(b.local_ts).unwrap_or_default()
            }
            MarketEvent::Bar(_, b) => b.close_time(),
        }
    }

    /// Local receive time, where the source recorded one.
    pub fn local_ts(&self) -> Option<UnixNanos> {
        match self {
            MarketEvent::Order(..) | MarketEvent::Bar(..) => None,
            MarketEvent::Depth(_, d) => d.local_ts,
            MarketEvent::Trade(_, t) => t.local_ts,
            MarketEvent::Bbo(_, b) | MarketEvent::Quote(_, b) => b.local_ts,
        }
    }

    /// Feed time: when the event reached the strategy (its receive time where the source recorded
    /// one), never before its exchange time.
    ///
    /// ```
    /// use flowsense_core::{MarketEvent, Price, Side, Size, Symbol, Trade, UnixNanos};
    /// let t = |ts: i64, local: Option<i64>| MarketEvent::Trade(Symbol::new("A").unwrap(),
    ///     Trade { ts: UnixNanos(ts), local_ts: local.map(UnixNanos), trade_id: None,
    ///     price: Price::from_units(1), size: Size::from_units(1), aggressor: Side::Buy });
    /// assert_eq!(t(10, Some(12)).feed_ts(), UnixNanos(12));
    /// assert_eq!(t(10, Some(9)).feed_ts(), UnixNanos(10)); // a receive clock behind the venue's
    /// assert_eq!(t(10, None).feed_ts(), UnixNanos(10));
    /// ```
    pub fn feed_ts(&self) -> UnixNanos {
        let ts = self.ts();
        self.local_ts().unwrap_or(ts).max(ts)
    }

    /// The key streams are merged by: feed time (receive time where the source recorded it,
    /// else exchange time), then exchange time. A single stream keeps its own order, the order
    /// its book was built in.
    pub fn order_key(&self) -> (i64, i64) {
        let ts = self.ts().0;
        (self.local_ts().map_or(ts, |t| t.0), ts)
    }

    /// The symbol the event belongs to.
    pub fn symbol(&self) -> &Symbol {
        match self {
            MarketEvent::Order(s, _)
            | MarketEvent::Depth(s, _)
            | MarketEvent::Trade(s, _)
            | MarketEvent::Bbo(s, _)
            | MarketEvent::Quote(s, _)
            | MarketEvent::Bar(s, _) => s,
        }
    }
}

/// Why a row was refused.
#[derive(
    Copy, Clone, PartialEq, Eq, Hash, Debug, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub enum DeadLetterReason {
    /// The row could not be parsed.
    Unparsable,
    /// A number was NaN or infinite.
    NotFinite,
    /// A price was zero or negative.
    NonPositivePrice,
    /// A size was zero or negative where a positive one is required (or negative anywhere).
    NonPositiveSize,
    /// Time went backwards by more than the tolerance.
    TimeWentBack,
    /// Applying the row would leave the best bid at or above the best ask.
    CrossedBook,
    /// The row refers to an order the book does not hold.
    UnknownOrder,
    /// The update ids do not continue the previous message.
    UpdateIdGap,
    /// A message the reader does not know (an unknown stream or record type).
    UnknownMessage,
    /// A new order reused the id of an order that still rests.
    DuplicateOrder,
    /// A bar whose high is below its open, close or low (or whose low is above them).
    InconsistentBar,
    /// The rest of a file cannot be read (a compressed capture cut off mid-write, or damaged):
    /// the rows before it are kept, the file ends there and the run goes on.
    Unreadable,
    /// A record of a kind FlowSense reads into no table (a DBN statistics or status record,
    /// say): kept here, counted by kind, never passed over.
    UnsupportedRecord,
    /// A live message for a symbol the feed did not subscribe to.
    UnknownSymbol,
}

impl DeadLetterReason {
    /// The name stored in the `reason` column, before the detail.
    pub const fn as_str(self) -> &'static str {
        match self {
            DeadLetterReason::Unparsable => "unparsable",
            DeadLetterReason::NotFinite => "not_finite",
            DeadLetterReason::NonPositivePrice => "non_positive_price",
            DeadLetterReason::NonPositiveSize => "non_positive_size",
            DeadLetterReason::TimeWentBack => "time_went_back",
            DeadLetterReason::CrossedBook => "crossed_book",
            DeadLetterReason::UnknownOrder => "unknown_order",
            DeadLetterReason::UpdateIdGap => "update_id_gap",
            DeadLetterReason::UnknownMessage => "unknown_message",
            DeadLetterReason::DuplicateOrder => "duplicate_order",
            DeadLetterReason::InconsistentBar => "inconsistent_bar",
            DeadLetterReason::Unreadable => "unreadable",
            DeadLetterReason::UnsupportedRecord => "unsupported_record",
            DeadLetterReason::UnknownSymbol => "unknown_symbol",
        }
    }

    /// Every reason, for reports.
    pub const ALL: [DeadLetterReason; 14] = [
        DeadLetterReason::Unparsable,
        DeadLetterReason::NotFinite,
        DeadLetterReason::NonPositivePrice,
        DeadLetterReason::NonPositiveSize,
        DeadLetterReason::TimeWentBack,
        DeadLetterReason::CrossedBook,
        DeadLetterReason::UnknownOrder,
        DeadLetterReason::UpdateIdGap,
        DeadLetterReason::UnknownMessage,
        DeadLetterReason::DuplicateOrder,
        DeadLetterReason::InconsistentBar,
        DeadLetterReason::Unreadable,
        DeadLetterReason::UnsupportedRecord,
        DeadLetterReason::UnknownSymbol,
    ];
}

impl fmt::Display for DeadLetterReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A refused row: where it came from, why, and its raw text, so nothing is lost.
#[derive(Clone, PartialEq, Eq, Debug, serde::Serialize, serde::Deserialize)]
pub struct DeadLetter {
    /// The source, usually the file name.
    pub source: String,
    /// Where in the source: `line N` or `offset N`.
    pub position: String,
    /// The reason's kind.
    pub reason: DeadLetterReason,
    /// Detail for a person (`U 12 after u 10`).
    pub detail: String,
    /// The raw row.
    pub raw: String,
}

impl DeadLetter {
    /// The text of the `reason` column: `kind: detail`.
    ///
    /// ```
    /// use flowsense_core::{DeadLetter, DeadLetterReason};
    /// let d = DeadLetter {
    ///     source: "f.gz".into(), position: "line 3".into(), reason: DeadLetterReason::CrossedBook,
    ///     detail: "bid 10 >= ask 9".into(), raw: "...".into(),
    /// };
    /// assert_eq!(d.reason_text(), "crossed_book: bid 10 >= ask 9");
    /// ```
    pub fn reason_text(&self) -> String {
        if self.detail.is_empty() {
            self.reason.as_str().to_string()
        } else {
            format!("{}: {}", self.reason.as_str(), self.detail)
        }
    }
}
