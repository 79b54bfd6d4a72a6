//! The `OrderFlowFeatures` operator: market events in, feature rows out, one engine per symbol.

use std::cell::RefCell;
use std::rc::Rc;

use flowsense_core::job::FeatureSpec;
use flowsense_core::{FeatureRow, MarketEvent};
use timely::dataflow::StreamVec;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::generic::Operator;

use crate::by_symbol::BySymbol;
use crate::engine::FeatureEngine;

/// Computes order-flow features per symbol, per event and per time bucket.
///
/// Events are exchanged by symbol ([`flowsense_core::Symbol::route`]), so each symbol's events meet one engine in
/// the order their source sent them; results do not depend on the number of workers. A bucket's
/// row leaves as soon as an event past its end arrives or the input frontier passes its end, at
/// the time of that event or frontier. When the input closes, every open bucket is emitted.
///
/// Timestamps are event time in nanoseconds (batched into epochs by the source): the operator
/// reads time only from events and the frontier, never from a clock.
///
/// ```
/// use flowsense_core::job::FeatureSpec;
/// use flowsense_core::{MarketEvent, Price, Side, Size, Symbol, Trade, UnixNanos};
/// use flowsense_operators::OrderFlowFeatures;
/// use timely::dataflow::operators::capture::{Capture, Event};
/// use timely::dataflow::operators::vec::ToStream;
///
/// let sym = Symbol::new("ABC").unwrap();
/// let trades: Vec<MarketEvent> = (0..30).map(|i| MarketEvent::Trade(sym.clone(), Trade {
///     ts: UnixNanos::from_millis(i * 100), local_ts: None, trade_id: None,
///     price: Price::from_units(10), size: Size::from_units(1), aggressor: Side::Buy })).collect();
/// let spec = FeatureSpec { buckets: vec!["1s".parse().unwrap()], ..Default::default() };
/// let rows = timely::example(move |scope| {
///     trades.to_stream(scope).order_flow_features(&spec).capture()
/// });
/// let rows: Vec<_> = rows.try_iter().flat_map(|e| match e {
///     Event::Messages(_, r) => r,
///     Event::Progress(_) => vec![],
/// }).collect();
/// assert_eq!(rows.len(), 3); // [0 s, 1 s), [1 s, 2 s), [2 s, 3 s)
/// assert!(rows.iter().all(|r| r.trade_count == 10 && r.trade_intensity == 10.0));
/// ```
pub trait OrderFlowFeatures<'scope>: Sized {
    /// The feature rows of the job's [`FeatureSpec`].
    fn order_flow_features(self, spec: &FeatureSpec) -> StreamVec<'scope, u64, FeatureRow> {
        self.order_flow_features_counted(spec, Rc::default())
    }

    /// The same, also counting (in `counters`, for this worker) the symbols seen and the events
    /// the books refused or that came late; the counts are final once the input has ended.
    fn order_flow_features_counted(
        self,
        spec: &FeatureSpec,
        counters: Rc<RefCell<FeatureCounters>>,
    ) -> StreamVec<'scope, u64, FeatureRow>;
}

/// What one worker's feature operator saw besides features.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FeatureCounters {
    /// Symbols with an engine on this worker.
    pub symbols: u64,
    /// Events a book refused (an L3 message for an order it does not hold, say): not applied.
    pub rejected: u64,
    /// Events older than a bucket the frontier had already closed: counted in the next bucket.
    pub late: u64,
}

impl<'scope> OrderFlowFeatures<'scope> for StreamVec<'scope, u64, MarketEvent> {
    fn order_flow_features_counted(
        self,
        spec: &FeatureSpec,
        counters: Rc<RefCell<FeatureCounters>>,
    ) -> StreamVec<'scope, u64, FeatureRow> {
        let spec = spec.clone();
        let route = Exchange::new(|e: &MarketEvent| e.symbol().route());
        self.unary_frontier(route, "OrderFlowFeatures", move |cap, _info| {
            let mut held = Some(cap);
            let mut engines: BySymbol<FeatureEngine> = BySymbol::default();
            let mut rows: Vec<FeatureRow> = Vec::new();
            move |(input, frontier), output| {
                input.for_each(|time, data| {
                    for ev in data.drain(..) {
                        engines
                            .get_or_insert_with(ev.symbol(), |s| {
                                FeatureEngine::new(s.clone(), &spec)
                            })
                            .on_event(&ev, &mut rows);
                    }
                    if !rows.is_empty() {
                        output.session(&time).give_iterator(rows.drain(..));
                    }
                });
                let Some(cap) = held.as_mut() else {
                    return;
                };
                match frontier.frontier().iter().min().copied() {
                    Some(t) => {
                        let t_ns = i64::try_from(t).unwrap_or(i64::MAX);
                        for e in engines.values_mut() {
                            if e.next_close().is_some_and(|end| end <= t_ns) {
                                e.close_until(t_ns, &mut rows);
                            }
                        }
                        if *cap.time() < t {
                            cap.downgrade(&t);
                        }
                        if !rows.is_empty() {
                            output.session(&*cap).give_iterator(rows.drain(..));
                        }
                    }
                    None => {
                        let mut c = counters.borrow_mut();
                        for e in engines.values_mut() {
                            e.finish(&mut rows);
                            c.symbols += 1;
                            c.rejected += e.rejects();
                            c.late += e.late();
                        }
                        drop(c);
                        if !rows.is_empty() {
                            output.session(&*cap).give_iterator(rows.drain(..));
                        }
                        held = None;
                    }
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flowsense_core::{L3Action, OrderEvent, OrderId, Price, Side, Size, Symbol, UnixNanos};
    use timely::dataflow::operators::vec::ToStream;

    #[test]
    fn refused_book_events_are_counted_and_the_rest_still_computed() {
        let sym = Symbol::new("ABC").unwrap();
        let order = |ms: i64, action, id, side, px| {
            MarketEvent::Order(
                sym.clone(),
                OrderEvent {
                    ts: UnixNanos::from_millis(ms),
                    seq: ms as u64,
                    action,
                    order_id: OrderId(id),
                    side,
                    price: Price::from_units(px),
                    size: Size::from_units(10),
                },
            )
        };
        let events = vec![
            order(1, L3Action::Add, 1, Side::Buy, 99),
            order(2, L3Action::Add, 2, Side::Sell, 101),
            order(3, L3Action::Cancel, 77, Side::Buy, 99), // no such order
            order(4, L3Action::Add, 3, Side::Buy, 102),    // would cross the ask
        ];
        let spec = FeatureSpec {
            buckets: vec!["1s".parse().unwrap()],
            ..Default::default()
        };
        let (counters, rows) = timely::execute_directly(move |worker| {
            use timely::dataflow::operators::Inspect;
            let counters = Rc::new(RefCell::new(FeatureCounters::default()));
            let rows = Rc::new(RefCell::new(Vec::new()));
            let (c, r) = (counters.clone(), rows.clone());
            worker.dataflow::<u64, _, _>(move |scope| {
                events
                    .to_stream(scope)
                    .order_flow_features_counted(&spec, c)
                    .inspect(move |row| r.borrow_mut().push(row.clone()));
            });
            while worker.step() {}
            (counters.borrow().clone(), rows.borrow().clone())
        });
        assert_eq!(
            counters,
            FeatureCounters {
                symbols: 1,
                rejected: 2,
                late: 0
            }
        );
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].events, 2);
        assert_eq!(rows[0].mid, Some(100.0));
    }
}
