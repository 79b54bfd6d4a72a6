//! Merging event streams (symbols, files, a partition's tables) into one, by
//! [`MarketEvent::order_key`]: feed time (receive time where recorded, else exchange time).
//!
//! A stream is never reordered: its order is the order its book was built in (a depth snapshot,
//! then the diffs it held, even where their exchange times are earlier). A reader's output is
//! one stream in receive order; the lake keeps each table in that order; merging a partition's
//! tables by receive time gives back the reader's order, so a job over the lake and a job over
//! the capture files compute the same features.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::collections::binary_heap::PeekMut;

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
        // The stream that gave the head goes back in place of the top: one sift instead of a
        // pop and a push.
        let mut top = self.heap.peek_mut()?;
        let i = top.0.1;
        let out = self.heads[i].take();
        match self.streams[i].next() {
            Some(e) => {
                top.0.0 = e.order_key();
                self.heads[i] = Some(e);
            }
            None => {
                PeekMut::pop(top);
            }
        }
        out
    }
}
