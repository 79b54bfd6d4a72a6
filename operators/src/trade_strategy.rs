//! The `trade` operator: a strategy traded on every symbol of a stream of market events, one
//! [`Trader`] per symbol (or, with a portfolio monitor, all of them on one worker).

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use flowsense_core::job::FeatureSpec;
use flowsense_core::order::{Broker, Waker};
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
    ) -> Result<StreamVec<'scope, u64, TradeRecord>, String> {
        self.trade_with_kill(job, features, strategy, risk, broker, KillSwitch::default())
    }

    /// The same, with a kill switch the worker can pull while the job runs (see
    /// [`KillSwitch`]).
    fn trade_with_kill<Br: Broker + 'static>(
        self,
        job: &str,
        features: &FeatureSpec,
        strategy: &StrategySpec,
        risk: &RiskSpec,
        broker: impl Fn(&Symbol) -> Br + 'static,
        kill: KillSwitch,
    ) -> Result<StreamVec<'scope, u64, TradeRecord>, String>;
}

/// A kill: halt every strategy of the job, cancel every open order and, with `flatten`,
/// close the positions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Kill {
    /// Close the positions with market orders (otherwise they are kept).
    pub flatten: bool,
    /// Who pulled it and when, for the `kill` risk event.
    pub why: String,
}

/// The handle a worker pulls to kill a trading job's `Trade` operator on that worker: the
/// operator is woken and applies the kill to every trader at once (and to any symbol's trader
/// made later), at the feed time of the last event each has seen.
///
/// ```
/// use flowsense_operators::trade_strategy::{Kill, KillSwitch};
/// let switch = KillSwitch::default();
/// switch.pull(Kill { flatten: true, why: "test".into() });
/// assert!(switch.pulled());
/// ```
#[derive(Clone, Default)]
pub struct KillSwitch(Rc<RefCell<KillState>>);

#[derive(Default)]
struct KillState {
    pending: Option<Kill>,
    pulled: bool,
    activator: Option<timely::scheduling::Activator>,
}

impl KillSwitch {
    /// Pulls the switch: the operator takes the kill at its next activation, which this asks
    /// for.
    pub fn pull(&self, kill: Kill) {
        let mut s = self.0.borrow_mut();
        s.pending = Some(kill);
        s.pulled = true;
        if let Some(a) = &s.activator {
            a.activate();
        }
    }

    /// True once pulled.
    pub fn pulled(&self) -> bool {
        self.0.borrow().pulled
    }

    fn take(&self) -> Option<Kill> {
        self.0.borrow_mut().pending.take()
    }

    fn arm(&self, activator: timely::scheduling::Activator) {
        self.0.borrow_mut().activator = Some(activator);
    }
}

/// The operator's side of [`Broker::set_waker`]: a live broker's thread sets the flag and
/// activates the operator, which then lets every trader take its broker's reports.
#[derive(Clone)]
struct BrokerWake {
    pending: Arc<AtomicBool>,
    activator: Arc<timely::scheduling::SyncActivator>,
}

impl BrokerWake {
    fn new(activator: timely::scheduling::SyncActivator) -> Self {
        BrokerWake {
            pending: Arc::new(AtomicBool::new(false)),
            activator: Arc::new(activator),
        }
    }

    fn waker(&self) -> Waker {
        let w = self.clone();
        Arc::new(move || {
            w.pending.store(true, Ordering::Release);
            // The dataflow may be gone at the end of a run: nothing to wake then.
            let _ = w.activator.activate();
        })
    }

    /// True once since a broker woke the operator.
    fn take(&self) -> bool {
        self.pending.swap(false, Ordering::AcqRel)
    }
}

/// A symbol's trader of the job's (already validated) spec, killed at birth when the job has
/// been.
fn new_trader<Br: Broker>(
    symbol: &Symbol,
    (job, features, strategy, risk): (&str, &FeatureSpec, &StrategySpec, &RiskSpec),
    mut broker: Br,
    (killed, woken): (Option<&Kill>, &BrokerWake),
    out: &mut Vec<TradeRecord>,
) -> Trader<Br> {
    broker.set_waker(woken.waker());
    let mut t = Trader::new(symbol.clone(), job, features, strategy, risk, broker)
        .expect("validated when the operator was built");
    if let Some(k) = killed {
        t.kill(k.flatten, &k.why, out);
    }
    t
}

impl<'scope> TradeStrategy<'scope> for StreamVec<'scope, u64, MarketEvent> {
    fn trade_with_kill<Br: Broker + 'static>(
        self,
        job: &str,
        features: &FeatureSpec,
        strategy: &StrategySpec,
        risk: &RiskSpec,
        broker: impl Fn(&Symbol) -> Br + 'static,
        kill: KillSwitch,
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
            let scope = self.scope();
            return Ok(self.unary_frontier(route, "Trade", move |cap, info| {
                let woken =
                    BrokerWake::new(scope.worker().sync_activator_for(info.address.to_vec()));
                kill.arm(scope.activator_for(info.address));
                let mut held = Some(cap);
                let mut traders = PortfolioTraders::new(&portfolio, risk.capital);
                let mut out: Vec<TradeRecord> = Vec::new();
                let mut killed: Option<Kill> = None;
                move |(input, frontier), output| {
                    if let Some(k) = kill.take() {
                        traders.kill(&k, &mut out);
                        killed = Some(k);
                    }
                    if woken.take() {
                        traders.poll_brokers(&mut out);
                    }
                    input.for_each(|_time, data| {
                        for ev in data.drain(..) {
                            traders.push(ev, |s| {
                                let spec = (job.as_str(), &features, &strategy, &risk);
                                let born = (killed.as_ref(), &woken);
                                new_trader(s, spec, broker(s), born, &mut Vec::new())
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
        let scope = self.scope();
        Ok(self.unary_frontier(route, "Trade", move |cap, info| {
            let woken = BrokerWake::new(scope.worker().sync_activator_for(info.address.to_vec()));
            kill.arm(scope.activator_for(info.address));
            let mut held = Some(cap);
            let mut traders: BySymbol<Trader<Br>> = BySymbol::default();
            let mut out: Vec<TradeRecord> = Vec::new();
            let mut killed: Option<Kill> = None;
            move |(input, frontier), output| {
                if let Some(k) = kill.take() {
                    for t in traders.sorted_mut() {
                        t.kill(k.flatten, &k.why, &mut out);
                    }
                    killed = Some(k);
                }
                if woken.take() {
                    for t in traders.sorted_mut() {
                        t.poll_broker(&mut out);
                    }
                }
                if let Some(cap) = held.as_ref()
                    && !out.is_empty()
                {
                    output.session(cap).give_iterator(out.drain(..));
                }
                input.for_each(|time, data| {
                    for ev in data.drain(..) {
                        traders
                            .get_or_insert_with(ev.symbol(), |s| {
                                let spec = (job.as_str(), &features, &strategy, &risk);
                                let born = (killed.as_ref(), &woken);
                                new_trader(s, spec, broker(s), born, &mut out)
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
