//! Book reconstruction, shared by every reader: an L2 book of aggregate levels, and an L3 book of
//! individual orders that keeps its L2 view in step.
//!
//! Both check what they are asked to apply and answer with a [`Reject`] instead of corrupting
//! themselves, so readers can turn the reason into a dead letter and carry on.

use rustc_hash::FxHashMap as HashMap;

use crate::ladder::Ladder;
use crate::{DeadLetterReason, L3Action, OrderEvent, OrderId, Price, Side, Size};

/// Why the book refused an update.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reject {
    /// The reason's kind.
    pub reason: DeadLetterReason,
    /// Detail for a person.
    pub detail: String,
}

impl Reject {
    fn new(reason: DeadLetterReason, detail: impl Into<String>) -> Self {
        Reject {
            reason,
            detail: detail.into(),
        }
    }
}

/// Refuses an event whose price or size is not strictly positive.
fn positive_price_and_size(ev: &OrderEvent) -> Result<(), Reject> {
    if !ev.price.is_positive() {
        return Err(Reject::new(
            DeadLetterReason::NonPositivePrice,
            format!("price {}", ev.price),
        ));
    }
    if !ev.size.is_positive() {
        return Err(Reject::new(
            DeadLetterReason::NonPositiveSize,
            format!("size {}", ev.size),
        ));
    }
    Ok(())
}

/// Aggregate size per price on each side.
///
/// ```
/// use flowsense_core::{Price, Side, Size};
/// use flowsense_core::book::L2Book;
/// let mut book = L2Book::default();
/// book.set_level(Side::Buy, Price::from_units(100), Size::from_units(5));
/// book.set_level(Side::Sell, Price::from_units(101), Size::from_units(2));
/// assert_eq!(book.best_bid(), Some((Price::from_units(100), Size::from_units(5))));
/// assert_eq!(book.depth(Side::Sell, 10).len(), 1);
/// book.set_level(Side::Sell, Price::from_units(101), Size::ZERO); // zero removes the level
/// assert_eq!(book.best_ask(), None);
/// ```
///
/// Each side keeps the levels near the touch on a ladder of tick-spaced slots (the tick learnt
/// from the prices) and the rest in a sorted map, so updates, lookups and the touch cost O(1)
/// where a map would descend its tree (see `ladder.rs`); it behaves as a sorted map in all else.
#[derive(Clone)]
pub struct L2Book {
    bids: Ladder,
    asks: Ladder,
}

impl Default for L2Book {
    fn default() -> Self {
        L2Book {
            bids: Ladder::new(true),
            asks: Ladder::new(false),
        }
    }
}

/// Books are equal when they hold the same levels, however their ladders are laid out.
impl PartialEq for L2Book {
    fn eq(&self, other: &Self) -> bool {
        self.bids().eq(other.bids()) && self.asks().eq(other.asks())
    }
}

impl Eq for L2Book {}

impl std::fmt::Debug for L2Book {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("L2Book")
            .field("bids", &self.bids().collect::<Vec<_>>())
            .field("asks", &self.asks().collect::<Vec<_>>())
            .finish()
    }
}

/// A level of a side as the book's types.
fn typed((price, size): (i64, i64)) -> (Price, Size) {
    (Price::from_raw(price), Size::from_raw(size))
}

impl L2Book {
    /// Sets a level's aggregate size; zero (or less) removes it.
    pub fn set_level(&mut self, side: Side, price: Price, size: Size) {
        self.side_mut(side).replace(price.raw(), size.raw());
    }

    /// Sets a level like [`set_level`](Self::set_level) and returns its previous size (zero when
    /// absent), in one lookup.
    pub fn replace_level(&mut self, side: Side, price: Price, size: Size) -> Size {
        Size::from_raw(self.side_mut(side).replace(price.raw(), size.raw()))
    }

    /// Adds `delta` (which may be negative) to a level, removing it when it reaches zero.
    pub fn add_to_level(&mut self, side: Side, price: Price, delta: Size) {
        let levels = self.side_mut(side);
        let size = levels.get(price.raw()) + delta.raw();
        levels.replace(price.raw(), size);
    }

    /// Aggregate size at a price (zero when absent).
    pub fn level(&self, side: Side, price: Price) -> Size {
        Size::from_raw(self.side(side).get(price.raw()))
    }

    /// Removes every level.
    pub fn clear(&mut self) {
        self.bids.clear();
        self.asks.clear();
    }

    /// Best bid price and size.
    pub fn best_bid(&self) -> Option<(Price, Size)> {
        self.bids.best_price().map(typed)
    }

    /// Best ask price and size.
    pub fn best_ask(&self) -> Option<(Price, Size)> {
        self.asks.best_price().map(typed)
    }

    /// True when the best bid is at or above the best ask.
    pub fn is_crossed(&self) -> bool {
        matches!((self.best_bid(), self.best_ask()), (Some((b, _)), Some((a, _))) if b >= a)
    }

    /// The best `n` levels of a side, best first.
    pub fn depth(&self, side: Side, n: usize) -> Vec<(Price, Size)> {
        match side {
            Side::Buy => self.bids().take(n).collect(),
            Side::Sell => self.asks().take(n).collect(),
        }
    }

    /// Bid levels from the best outwards, without allocating.
    pub fn bids(&self) -> impl Iterator<Item = (Price, Size)> + '_ {
        self.bids.descending().map(typed)
    }

    /// Ask levels from the best outwards, without allocating.
    pub fn asks(&self) -> impl Iterator<Item = (Price, Size)> + '_ {
        self.asks.ascending().map(typed)
    }

    /// Number of levels on a side.
    pub fn len(&self, side: Side) -> usize {
        self.side(side).len()
    }

    /// True when both sides are empty.
    pub fn is_empty(&self) -> bool {
        self.bids.len() == 0 && self.asks.len() == 0
    }

    fn side(&self, side: Side) -> &Ladder {
        match side {
            Side::Buy => &self.bids,
            Side::Sell => &self.asks,
        }
    }

    fn side_mut(&mut self, side: Side) -> &mut Ladder {
        match side {
            Side::Buy => &mut self.bids,
            Side::Sell => &mut self.asks,
        }
    }
}

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
struct RestingOrder {
    side: Side,
    price: Price,
    size: Size,
}

/// What applying one L3 event did, for readers that derive trades from it.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Applied {
    /// True when the top of book may have changed.
    pub touched_book: bool,
}

/// A market-by-order book: every resting order, plus the aggregate L2 view.
///
/// Volume that rested before the data began (known only in aggregate, as LOBSTER's first orderbook
/// row gives it) is *seeded* per level; messages about orders the book has never seen are charged
/// to that anonymous volume, and only refused as [`DeadLetterReason::UnknownOrder`] when the level
/// holds none.
///
/// ```
/// use flowsense_core::{L3Action, OrderEvent, OrderId, Price, Side, Size, UnixNanos};
/// use flowsense_core::book::L3Book;
/// let ev = |action, id, side, px, sz| OrderEvent {
///     ts: UnixNanos(0), seq: 0, action, order_id: OrderId(id), side,
///     price: Price::from_units(px), size: Size::from_units(sz),
/// };
/// let mut book = L3Book::default();
/// book.apply(&ev(L3Action::Add, 1, Side::Buy, 100, 10)).unwrap();
/// book.apply(&ev(L3Action::Execute, 1, Side::Buy, 100, 4)).unwrap();
/// assert_eq!(book.l2().best_bid(), Some((Price::from_units(100), Size::from_units(6))));
/// assert!(book.apply(&ev(L3Action::Delete, 7, Side::Buy, 100, 6)).is_err()); // unknown order
/// assert!(book.apply(&ev(L3Action::Add, 2, Side::Sell, 99, 1)).is_err());    // would cross
/// ```
#[derive(Clone, Debug, Default)]
pub struct L3Book {
    orders: HashMap<OrderId, RestingOrder>,
    seeded: HashMap<(Side, Price), Size>,
    l2: L2Book,
}

impl L3Book {
    /// The aggregate view.
    pub fn l2(&self) -> &L2Book {
        &self.l2
    }

    /// Number of known resting orders.
    pub fn order_count(&self) -> usize {
        self.orders.len()
    }

    /// The orders resting at one level, with their remaining sizes (in no particular order).
    pub fn orders_at(&self, side: Side, price: Price) -> Vec<(OrderId, Size)> {
        self.orders
            .iter()
            .filter(|(_, o)| o.side == side && o.price == price)
            .map(|(id, o)| (*id, o.size))
            .collect()
    }

    /// A resting order's side, price and remaining size.
    pub fn order(&self, id: OrderId) -> Option<(Side, Price, Size)> {
        self.orders.get(&id).map(|o| (o.side, o.price, o.size))
    }

    /// Anonymous volume (from before the data began) still resting at a level.
    pub fn seeded_at(&self, side: Side, price: Price) -> Size {
        self.seeded
            .get(&(side, price))
            .copied()
            .unwrap_or(Size::ZERO)
    }

    /// Adds anonymous resting volume at a level (orders from before the data began).
    pub fn seed_level(&mut self, side: Side, price: Price, size: Size) {
        if size.is_positive() {
            *self.seeded.entry((side, price)).or_insert(Size::ZERO) += size;
            self.l2.add_to_level(side, price, size);
        }
    }

    /// Removes every order and level.
    pub fn clear(&mut self) {
        self.orders.clear();
        self.seeded.clear();
        self.l2.clear();
    }

    /// Refuses an event that would rest at or through the opposite side's best price.
    fn refuse_crossing(&self, ev: &OrderEvent, what: &str) -> Result<(), Reject> {
        let opposite = match ev.side {
            Side::Buy => self.l2.best_ask().filter(|(a, _)| ev.price >= *a),
            Side::Sell => self.l2.best_bid().filter(|(b, _)| ev.price <= *b),
        };
        match opposite {
            Some((px, _)) => Err(Reject::new(
                DeadLetterReason::CrossedBook,
                format!(
                    "{what}{} at {} would cross the best {} at {}",
                    ev.side.as_str(),
                    ev.price,
                    ev.side.opposite().as_str(),
                    px
                ),
            )),
            None => Ok(()),
        }
    }

    /// Applies one event, or refuses it and leaves the book unchanged.
    pub fn apply(&mut self, ev: &OrderEvent) -> Result<Applied, Reject> {
        match ev.action {
            L3Action::Add => {
                positive_price_and_size(ev)?;
                self.refuse_crossing(ev, "")?;
                if self.orders.contains_key(&ev.order_id) {
                    return Err(Reject::new(
                        DeadLetterReason::DuplicateOrder,
                        format!("order {} already rests", ev.order_id.0),
                    ));
                }
                self.orders.insert(
                    ev.order_id,
                    RestingOrder {
                        side: ev.side,
                        price: ev.price,
                        size: ev.size,
                    },
                );
                self.l2.add_to_level(ev.side, ev.price, ev.size);
                Ok(Applied { touched_book: true })
            }
            L3Action::Cancel | L3Action::Execute | L3Action::Delete => {
                if !ev.size.is_positive() && ev.action != L3Action::Delete {
                    return Err(Reject::new(
                        DeadLetterReason::NonPositiveSize,
                        format!("size {}", ev.size),
                    ));
                }
                if let Some(order) = self.orders.get_mut(&ev.order_id) {
                    let take = if ev.action == L3Action::Delete {
                        order.size
                    } else {
                        ev.size
                    };
                    if take > order.size {
                        return Err(Reject::new(
                            DeadLetterReason::NonPositiveSize,
                            format!(
                                "{} of {} exceeds the order's remaining {}",
                                ev.action.as_str(),
                                take,
                                order.size
                            ),
                        ));
                    }
                    order.size -= take;
                    let (side, price, left) = (order.side, order.price, order.size);
                    if !left.is_positive() {
                        self.orders.remove(&ev.order_id);
                    }
                    self.l2.add_to_level(side, price, Size::ZERO - take);
                    Ok(Applied { touched_book: true })
                } else {
                    let key = (ev.side, ev.price);
                    let available = self.seeded.get(&key).copied().unwrap_or(Size::ZERO);
                    if available.is_positive() && ev.size <= available && ev.size.is_positive() {
                        let left = available - ev.size;
                        if left.is_positive() {
                            self.seeded.insert(key, left);
                        } else {
                            self.seeded.remove(&key);
                        }
                        self.l2
                            .add_to_level(ev.side, ev.price, Size::ZERO - ev.size);
                        Ok(Applied { touched_book: true })
                    } else {
                        Err(Reject::new(
                            DeadLetterReason::UnknownOrder,
                            format!(
                                "order {} is not in the book ({} {} at {})",
                                ev.order_id.0,
                                ev.action.as_str(),
                                ev.side.as_str(),
                                ev.price
                            ),
                        ))
                    }
                }
            }
            L3Action::Modify => {
                let Some(order) = self.orders.get(&ev.order_id).copied() else {
                    return Err(Reject::new(
                        DeadLetterReason::UnknownOrder,
                        format!("order {} is not in the book (modify)", ev.order_id.0),
                    ));
                };
                positive_price_and_size(ev)?;
                self.l2
                    .add_to_level(order.side, order.price, Size::ZERO - order.size);
                let crosses = match order.side {
                    Side::Buy => self.l2.best_ask().is_some_and(|(a, _)| ev.price >= a),
                    Side::Sell => self.l2.best_bid().is_some_and(|(b, _)| ev.price <= b),
                };
                if crosses {
                    self.l2.add_to_level(order.side, order.price, order.size);
                    return Err(Reject::new(
                        DeadLetterReason::CrossedBook,
                        format!("modify to {} would cross", ev.price),
                    ));
                }
                self.l2.add_to_level(order.side, ev.price, ev.size);
                self.orders.insert(
                    ev.order_id,
                    RestingOrder {
                        side: order.side,
                        price: ev.price,
                        size: ev.size,
                    },
                );
                Ok(Applied { touched_book: true })
            }
            L3Action::ExecuteHidden | L3Action::Cross => {
                positive_price_and_size(ev)?;
                Ok(Applied {
                    touched_book: false,
                })
            }
            L3Action::Halt => Ok(Applied {
                touched_book: false,
            }),
            L3Action::Clear => {
                self.clear();
                Ok(Applied { touched_book: true })
            }
            L3Action::Seed => {
                positive_price_and_size(ev)?;
                self.refuse_crossing(ev, "resting ")?;
                self.seed_level(ev.side, ev.price, ev.size);
                Ok(Applied { touched_book: true })
            }
        }
    }
}

/// Turns a stream of L3 order events into lake events: the order itself, a trade for every
/// execution, and the reconstructed top of book after every event that touched the book.
/// Refused events come back as [`Reject`]s for the reader to dead-letter.
///
/// This is the one L3 reconstruction path: the LOBSTER reader, the DBN MBO reader and the
/// synthetic market all go through it. Whatever changes its book is an event it emits, so a
/// replay of those events rebuilds the same book at every step: a session opens with a
/// [`L3Action::Clear`] (emitted before the first event), and volume known only in aggregate
/// enters as [`L3Action::Seed`] events ([`L3Replay::seed`]).
///
/// ```
/// use flowsense_core::{L3Action, MarketEvent, OrderEvent, OrderId, Price, Side, Size, Symbol, UnixNanos};
/// use flowsense_core::book::L3Replay;
/// let mut replay = L3Replay::new(Symbol::new("ABC").unwrap());
/// let mut out = Vec::new();
/// let add = OrderEvent { ts: UnixNanos(1), seq: 0, action: L3Action::Add, order_id: OrderId(1),
///     side: Side::Sell, price: Price::from_units(10), size: Size::from_units(5) };
/// replay.apply(add.clone(), &mut out).unwrap();
/// replay.apply(OrderEvent { action: L3Action::Execute, size: Size::from_units(2), ..add }, &mut out).unwrap();
/// // clear, bbo (the session opens), add, bbo, execute, trade (a buyer lifted the offer), bbo
/// assert_eq!(out.len(), 7);
/// assert!(matches!(&out[0], MarketEvent::Order(_, o) if o.action == L3Action::Clear));
/// assert!(matches!(&out[5], MarketEvent::Trade(_, t) if t.aggressor == Side::Buy));
/// ```
pub struct L3Replay {
    symbol: crate::Symbol,
    book: L3Book,
    gap: bool,
    /// A `Clear` opened the current session.
    open: bool,
}

impl L3Replay {
    /// An empty book for one symbol.
    pub fn new(symbol: crate::Symbol) -> Self {
        L3Replay {
            symbol,
            book: L3Book::default(),
            gap: false,
            open: false,
        }
    }

    /// The book.
    pub fn book(&self) -> &L3Book {
        &self.book
    }

    /// Starts a new session: empties the book and emits the `Clear` (and the empty top of book)
    /// that tells a replay to do the same. `seq` is the position the session starts at.
    pub fn clear(&mut self, ts: crate::UnixNanos, seq: u64, out: &mut Vec<crate::MarketEvent>) {
        let ev = marker(L3Action::Clear, ts, seq, Side::Buy, Price::ZERO, Size::ZERO);
        self.open = true;
        self.apply(ev, out)
            .expect("clearing the book cannot be refused");
    }

    /// Adds volume known only in aggregate (from before the data began, or revealed at the edge
    /// of the visible depth), one `Seed` event per level, then one top of book for them all.
    /// Levels that would cross the book are refused and come back as rejects.
    pub fn seed(
        &mut self,
        levels: impl IntoIterator<Item = (Side, Price, Size)>,
        ts: crate::UnixNanos,
        seq: u64,
        out: &mut Vec<crate::MarketEvent>,
    ) -> Vec<Reject> {
        self.open_session(ts, seq, out);
        let mut rejects = Vec::new();
        let mut any = false;
        for (side, price, size) in levels {
            if !size.is_positive() {
                continue;
            }
            let ev = marker(L3Action::Seed, ts, seq, side, price, size);
            match self.book.apply(&ev) {
                Ok(_) => {
                    any = true;
                    out.push(crate::MarketEvent::Order(self.symbol.clone(), ev));
                }
                Err(r) => rejects.push(r),
            }
        }
        if any {
            out.push(crate::MarketEvent::Bbo(
                self.symbol.clone(),
                Box::new(self.bbo(ts)),
            ));
        }
        rejects
    }

    fn open_session(&mut self, ts: crate::UnixNanos, seq: u64, out: &mut Vec<crate::MarketEvent>) {
        if !self.open {
            self.clear(ts, seq, out);
        }
    }

    /// Marks the following top-of-book rows as inside (or out of) a gap.
    pub fn set_gap(&mut self, gap: bool) {
        self.gap = gap;
    }

    /// The current top of book as a `bbo` row.
    pub fn bbo(&self, ts: crate::UnixNanos) -> crate::BboUpdate {
        crate::BboUpdate {
            ts: Some(ts),
            local_ts: None,
            update_id: None,
            bid: self.book.l2().best_bid(),
            ask: self.book.l2().best_ask(),
            gap: self.gap,
        }
    }

    /// Applies one event and appends what it produced to `out`.
    pub fn apply(
        &mut self,
        ev: OrderEvent,
        out: &mut Vec<crate::MarketEvent>,
    ) -> Result<(), Reject> {
        use crate::{MarketEvent, Trade};
        if ev.action != L3Action::Clear {
            self.open_session(ev.ts, ev.seq, out);
        }
        let applied = self.book.apply(&ev)?;
        let ts = ev.ts;
        // Auction crosses have no aggressor; they stay in `book_events` only.
        let trade =
            matches!(ev.action, L3Action::Execute | L3Action::ExecuteHidden).then(|| Trade {
                ts,
                local_ts: None,
                trade_id: None,
                price: ev.price,
                size: ev.size,
                aggressor: ev.side.opposite(),
            });
        out.push(MarketEvent::Order(self.symbol.clone(), ev));
        if let Some(t) = trade {
            out.push(MarketEvent::Trade(self.symbol.clone(), t));
        }
        if applied.touched_book {
            out.push(MarketEvent::Bbo(
                self.symbol.clone(),
                Box::new(self.bbo(ts)),
            ));
        }
        Ok(())
    }
}

/// A session marker (`Clear`, `Seed`): an order event under no order id.
fn marker(
    action: L3Action,
    ts: crate::UnixNanos,
    seq: u64,
    side: Side,
    price: Price,
    size: Size,
) -> OrderEvent {
    OrderEvent {
        ts,
        seq,
        action,
        order_id: OrderId(0),
        side,
        price,
        size,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::UnixNanos;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    fn ev(action: L3Action, id: u64, side: Side, px: i64, sz: i64) -> OrderEvent {
        OrderEvent {
            ts: UnixNanos(0),
            seq: 0,
            action,
            order_id: OrderId(id),
            side,
            price: Price::from_units(px),
            size: Size::from_units(sz),
        }
    }

    #[test]
    fn seeded_volume_absorbs_unknown_orders_then_refuses() {
        let mut b = L3Book::default();
        b.seed_level(Side::Sell, Price::from_units(10), Size::from_units(5));
        assert!(
            b.apply(&ev(L3Action::Execute, 99, Side::Sell, 10, 3))
                .is_ok()
        );
        assert_eq!(
            b.l2().best_ask(),
            Some((Price::from_units(10), Size::from_units(2)))
        );
        let r = b
            .apply(&ev(L3Action::Delete, 98, Side::Sell, 10, 3))
            .unwrap_err();
        assert_eq!(r.reason, DeadLetterReason::UnknownOrder);
        assert_eq!(
            b.l2().best_ask(),
            Some((Price::from_units(10), Size::from_units(2)))
        );
    }

    #[test]
    fn over_execution_is_refused_and_changes_nothing() {
        let mut b = L3Book::default();
        b.apply(&ev(L3Action::Add, 1, Side::Buy, 10, 5)).unwrap();
        assert!(
            b.apply(&ev(L3Action::Execute, 1, Side::Buy, 10, 6))
                .is_err()
        );
        assert_eq!(
            b.l2().level(Side::Buy, Price::from_units(10)),
            Size::from_units(5)
        );
    }

    proptest! {
        /// The L2 view always equals the sum of resting orders per level.
        #[test]
        fn l2_is_sum_of_orders(ops in proptest::collection::vec((0u8..4, 0u64..20, any::<bool>(), 95i64..105, 1i64..10), 1..200)) {
            let mut b = L3Book::default();
            for (kind, id, buy, px, sz) in ops {
                let side = if buy { Side::Buy } else { Side::Sell };
                let action = [L3Action::Add, L3Action::Cancel, L3Action::Delete, L3Action::Execute][kind as usize];
                let _ = b.apply(&ev(action, id, side, px, sz));
                prop_assert!(!b.l2().is_crossed());
                let mut expect: BTreeMap<(Side, Price), Size> = BTreeMap::new();
                for o in b.orders.values() {
                    *expect.entry((o.side, o.price)).or_default() += o.size;
                }
                let mut got = BTreeMap::new();
                for side in [Side::Buy, Side::Sell] {
                    for (p, s) in b.l2().depth(side, usize::MAX) {
                        got.insert((side, p), s);
                    }
                }
                prop_assert_eq!(got, expect);
            }
        }
    }
}
