//! Putting events in time order: merging several streams (symbols, files) into one, and
//! reordering a stream that arrives slightly out of order, by [`MarketEvent::order_key`]
//! (exchange time, then receive time).
//!
//! Captures arrive in receive order, in which exchange times go back a little (a trade stamped
//! before the depth update received just ahead of it). The lake keeps each table in that order.
//! Both become the same canonical order, exchange time first, so a job over the lake and a job
//! over the capture files compute the same features.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use flowsense_core::MarketEvent;

/// A boxed stream of events in time order.
pub type EventStream = Box<dyn Iterator<Item = MarketEvent> + Send>;

/// K-way merge of time-ordered streams by event time; ties go to the stream given first, so the
/// output is a pure function of the inputs.
///
/// ```
/// use flowsense_core::{MarketEvent, Price, Side, Size, Symbol, Trade, UnixNanos};
/// use flowsense_sources::merge::MergeByTime;
/// let t = |sym: &str, ms| MarketEvent::Trade(Symbol::new(sym).unwrap(), Trade {
///     ts: UnixNanos::from_millis(ms), local_ts: None, trade_id: None,
///     price: Price::from_units(1), size: Size::from_units(1), aggressor: Side::Buy });
/// let a = vec![t("A", 1), t("A", 5)];
/// let b = vec![t("B", 2), t("B", 5)];
/// let merged: Vec<_> = MergeByTime::new(vec![Box::new(a.into_iter()), Box::new(b.into_iter())])
///     .map(|e| (e.symbol().to_string(), e.ts().0 / 1_000_000)).collect();
/// assert_eq!(merged, [("A".into(), 1), ("B".into(), 2), ("A".into(), 5), ("B".into(), 5)]);
/// ```
pub struct MergeByTime {
    streams: Vec<EventStream>,
    heads: Vec<Option<MarketEvent>>,
    heap: BinaryHeap<Reverse<((i64, i64), usize)>>,
}

impl MergeByTime {
    /// Merges the streams.
    pub fn new(mut streams: Vec<EventStream>) -> Self {
        let mut heads = Vec::with_capacity(streams.len());
        let mut heap = BinaryHeap::with_capacity(streams.len());
        for (i, s) in streams.iter_mut().enumerate() {
            let head = s.next();
            if let Some(e) = &head {
                heap.push(Reverse((e.order_key(), i)));
            }
            heads.push(head);
        }
        MergeByTime {
            streams,
            heads,
            heap,
        }
    }
}

impl Iterator for MergeByTime {
    type Item = MarketEvent;

    fn next(&mut self) -> Option<MarketEvent> {
        let Reverse((_, i)) = self.heap.pop()?;
        let out = self.heads[i].take();
        if let Some(e) = self.streams[i].next() {
            self.heap.push(Reverse((e.order_key(), i)));
            self.heads[i] = Some(e);
        }
        out
    }
}

/// Reorders a stream whose times go back by at most `tolerance` nanoseconds into
/// [`MarketEvent::order_key`] order; events equal in key keep their order. An event later than
/// the tolerance leaves as soon as it arrives (downstream treats it as late).
///
/// ```
/// use flowsense_core::{MarketEvent, Price, Side, Size, Symbol, Trade, UnixNanos};
/// use flowsense_sources::merge::TimeOrdered;
/// let t = |ms| MarketEvent::Trade(Symbol::new("A").unwrap(), Trade {
///     ts: UnixNanos::from_millis(ms), local_ts: None, trade_id: None,
///     price: Price::from_units(1), size: Size::from_units(1), aggressor: Side::Buy });
/// let out: Vec<i64> = TimeOrdered::new(vec![t(5), t(3), t(9), t(8)].into_iter(), 2_000_000)
///     .map(|e| e.ts().0 / 1_000_000).collect();
/// assert_eq!(out, [3, 5, 8, 9]);
/// ```
pub struct TimeOrdered<I> {
    inner: I,
    tolerance: i64,
    heap: BinaryHeap<Reverse<Pending>>,
    seq: u64,
    high: i64,
    done: bool,
}

struct Pending {
    key: (i64, i64),
    seq: u64,
    event: MarketEvent,
}

impl PartialEq for Pending {
    fn eq(&self, other: &Self) -> bool {
        (self.key, self.seq) == (other.key, other.seq)
    }
}
impl Eq for Pending {}
impl PartialOrd for Pending {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Pending {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.key, self.seq).cmp(&(other.key, other.seq))
    }
}

impl<I: Iterator<Item = MarketEvent>> TimeOrdered<I> {
    /// Reorders `inner` within `tolerance` nanoseconds.
    pub fn new(inner: I, tolerance: i64) -> Self {
        TimeOrdered {
            inner,
            tolerance: tolerance.max(0),
            heap: BinaryHeap::new(),
            seq: 0,
            high: i64::MIN,
            done: false,
        }
    }
}

impl<I: Iterator<Item = MarketEvent>> Iterator for TimeOrdered<I> {
    type Item = MarketEvent;

    fn next(&mut self) -> Option<MarketEvent> {
        loop {
            if let Some(Reverse(top)) = self.heap.peek()
                && (self.done || top.key.0 <= self.high.saturating_sub(self.tolerance))
            {
                return self.heap.pop().map(|Reverse(p)| p.event);
            }
            if self.done {
                return None;
            }
            match self.inner.next() {
                Some(e) => {
                    let key = e.order_key();
                    self.high = self.high.max(key.0);
                    self.seq += 1;
                    self.heap.push(Reverse(Pending {
                        key,
                        seq: self.seq,
                        event: e,
                    }));
                }
                None => self.done = true,
            }
        }
    }
}
