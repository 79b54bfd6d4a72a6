//! The `trade` operator: a strategy traded on every symbol of a stream of market events, one
//! [`Trader`] per symbol (or, with a portfolio monitor, all of them on one worker).

use flowsense_core::job::FeatureSpec;
use flowsense_core::order::Broker;
use flowsense_core::results::TradeRecord;
use flowsense_core::strategy::{RiskSpec, StrategySpec};
use flowsense_core::{MarketEvent, Symbol};
use timely::dataflow::StreamVec;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::generic::Operator;

use crate::by_symbol::BySymbol;
use crate::portfolio::PortfolioTraders;
use crate::trader::Trader;

/// Trades a strategy on every symbol of a stream of market events: one [`Trader`] per symbol,
/// each with its own broker, records out.
///
/// Events are exchanged by symbol, so each symbol's events meet its trader in the order their
/// source sent them, whatever the number of workers. The operator never reads its frontier to
/// decide (buckets close on events, see [`Trader`]); the frontier only lets records leave, and
/// when the input ends every trader finishes. So the same events give the same orders and fills
/// in a batch backtest and in a paced replay.
///
/// With `[risk.portfolio]`, every event goes to one worker instead, whose traders run in one
/// merged order under a [`crate::portfolio::PortfolioMonitor`] (see [`crate::portfolio`]).
///
/// ```
/// use flowsense_core::job::JobSpec;
/// use flowsense_core::results::TradeRecord;
/// use flowsense_core::{DepthUpdate, MarketEvent, Price, Side, Size, Symbol, Trade, UnixNanos};
/// use flowsense_operators::TradeStrategy;
/// use flowsense_operators::SimExchange;
/// use timely::dataflow::operators::capture::{Capture, Event};
/// use timely::dataflow::operators::vec::ToStream;
///
/// let spec = JobSpec::from_toml(r#"
///     name = "t"
///     [source.synthetic]
///     symbols = 1
///     [strategy]
///     bucket = "1s"
///     signal = "buy_volume - sell_volume"
///     entry = 1
///     [strategy.sizing]
///     method = "fixed"
///     size = 1
/// "#).unwrap();
/// let sym = Symbol::new("ABC").unwrap();
/// let mut events = vec![MarketEvent::Depth(sym.clone(), Box::new(DepthUpdate { ts: UnixNanos(0),
///     bids: vec![(Price::from_units(99), Size::from_units(5))],
///     asks: vec![(Price::from_units(101), Size::from_units(5))],
///     is_snapshot: true, ..Default::default() }))];
/// for ms in [500, 1500, 2500] {
///     events.push(MarketEvent::Trade(sym.clone(), Trade { ts: UnixNanos::from_millis(ms),
///         local_ts: None, trade_id: None, price: Price::from_units(101),
///         size: Size::from_units(2), aggressor: Side::Buy }));
/// }
/// let exec = spec.execution.clone();
/// let records = timely::example(move |scope| {
///     events.to_stream(scope)
///         .trade(&spec.name, &spec.features, spec.strategy.as_ref().unwrap(), &spec.risk,
///                move |s| SimExchange::new(s.clone(), &exec))
///         .unwrap()
///         .capture()
/// });
/// let fills = records.try_iter().flat_map(|e| match e {
///     Event::Messages(_, r) => r,
///     Event::Progress(_) => vec![],
/// }).filter(|r| matches!(r, TradeRecord::Fill(_))).count();
/// assert_eq!(fills, 1); // bought 1 at the ask after the first close
/// ```
pub trait TradeStrategy<'scope>: Sized {
    /// The records of trading `strategy` (validated here) with `risk`, on features of
    /// `features`, through one broker per symbol made by `broker`.
    fn trade<Br: Broker + 'static>(
        self,
        job: &str,
        features: &FeatureSpec,
        strategy: &StrategySpec,
        risk: &RiskSpec,
        broker: impl Fn(&Symbol) -> Br + 'static,
    ) -> Result<StreamVec<'scope, u64, TradeRecord>, String>;
}

impl<'scope> TradeStrategy<'scope> for StreamVec<'scope, u64, MarketEvent> {
    fn trade<Br: Broker + 'static>(
        self,
        job: &str,
        features: &FeatureSpec,
        strategy: &StrategySpec,
        risk: &RiskSpec,
        broker: impl Fn(&Symbol) -> Br + 'static,
    ) -> Result<StreamVec<'scope, u64, TradeRecord>, String> {
        strategy.validate(&features.buckets)?;
        risk.validate()?;
        let (job, features, strategy, risk) = (
            job.to_string(),
            features.clone(),
            strategy.clone(),
            risk.clone(),
        );
        if let Some(portfolio) = risk.portfolio.clone() {
            // One worker runs every trader, in a merged order (see `crate::portfolio`).
            let route = Exchange::new(|_: &MarketEvent| 0);
            return Ok(self.unary_frontier(route, "Trade", move |cap, _info| {
                let mut held = Some(cap);
                let mut traders = PortfolioTraders::new(&portfolio, risk.capital);
                let mut out: Vec<TradeRecord> = Vec::new();
                move |(input, frontier), output| {
                    input.for_each(|_time, data| {
                        for ev in data.drain(..) {
                            traders.push(ev, |s| {
                                Trader::new(s.clone(), &job, &features, &strategy, &risk, broker(s))
                                    .expect("validated when the operator was built")
                            });
                        }
                    });
                    let Some(cap) = held.as_mut() else {
                        return;
                    };
                    match frontier.frontier().iter().min().copied() {
                        Some(t) => {
                            traders.run_until(i64::try_from(t).unwrap_or(i64::MAX), &mut out);
                            if !out.is_empty() {
                                output.session(&*cap).give_iterator(out.drain(..));
                            }
                            if *cap.time() < t {
                                cap.downgrade(&t);
                            }
                        }
                        None => {
                            traders.finish(&mut out);
                            if !out.is_empty() {
                                output.session(&*cap).give_iterator(out.drain(..));
                            }
                            held = None;
                        }
                    }
                }
            }));
        }
        let route = Exchange::new(|e: &MarketEvent| e.symbol().route());
        Ok(self.unary_frontier(route, "Trade", move |cap, _info| {
            let mut held = Some(cap);
            let mut traders: BySymbol<Trader<Br>> = BySymbol::default();
            let mut out: Vec<TradeRecord> = Vec::new();
            move |(input, frontier), output| {
                input.for_each(|time, data| {
                    for ev in data.drain(..) {
                        traders
                            .get_or_insert_with(ev.symbol(), |s| {
                                Trader::new(s.clone(), &job, &features, &strategy, &risk, broker(s))
                                    .expect("validated when the operator was built")
                            })
                            .on_event(&ev, &mut out);
                    }
                    if !out.is_empty() {
                        output.session(&time).give_iterator(out.drain(..));
                    }
                });
                let Some(cap) = held.as_mut() else {
                    return;
                };
                match frontier.frontier().iter().min().copied() {
                    Some(t) => {
                        if *cap.time() < t {
                            cap.downgrade(&t);
                        }
                    }
                    None => {
                        // Symbols in a fixed order, so the records leave alike on every run.
                        for t in traders.sorted_mut() {
                            t.finish(&mut out);
                        }
                        if !out.is_empty() {
                            output.session(&*cap).give_iterator(out.drain(..));
                        }
                        held = None;
                    }
                }
            }
        }))
    }
}
