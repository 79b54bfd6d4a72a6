//! A seeded synthetic market: L3 order messages for N symbols x D days.
//!
//! Arrivals are a self-exciting (Hawkes) process with an exponential kernel on top of a U-shaped
//! intraday baseline, so activity clusters the way real order flow does and is heavier at the
//! open and close. What each arrival *is* follows a queue-reactive book in the spirit of Huang,
//! Lehalle and Rosenbaum: limit orders arrive at each of the first levels at a rate that falls as
//! the queue grows, each resting order cancels at a constant rate (so cancels scale with queue
//! size), orders that improve the price arrive while the spread is wider than a tick, and market
//! orders walk the book FIFO with sizes in round lots and a persistent sign. Spreads sit at one to
//! a few ticks, depth at a few round lots per level, trades are a few percent of messages.
//!
//! Everything comes from one seed: the same configuration gives byte-identical output, and each
//! symbol-day has its own generator (seeded from the seed, symbol and day), so days can be made
//! in any order or in parallel with the same result.

use std::collections::{BTreeMap, VecDeque};
use std::path::Path;

use flowsense_core::{L3Action, OrderEvent, OrderId, Price, Side, Size, Symbol, UnixNanos};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Exp, Geometric, StandardNormal};

use crate::book::L3Replay;
use crate::lobster::LobsterWriter;
use crate::{Record, SourceId};

/// What to generate.
#[derive(Clone, Debug)]
pub struct SynthConfig {
    /// Number of symbols (`SYN000`, `SYN001`, ...).
    pub symbols: usize,
    /// Number of trading days (weekdays from `start`).
    pub days: usize,
    /// The seed.
    pub seed: u64,
    /// Mean messages per symbol per day.
    pub events_per_day: u64,
    /// First calendar day considered.
    pub start: UnixNanos,
}

impl Default for SynthConfig {
    fn default() -> Self {
        SynthConfig {
            symbols: 3,
            days: 2,
            seed: 42,
            events_per_day: 200_000,
            start: UnixNanos::from_ymd(2024, 1, 2),
        }
    }
}

/// Session: 13:30 to 20:00 UTC (a US equity day, 6.5 hours).
const OPEN_NS: i64 = 13 * 3_600_000_000_000 + 30 * 60_000_000_000;
const SESSION_S: f64 = 23_400.0;
/// Price levels per side that receive new limit orders.
const LEVELS: usize = 8;
const ADD_WEIGHT: [f64; LEVELS] = [1.0, 0.9, 0.8, 0.6, 0.5, 0.4, 0.3, 0.2];
/// Hawkes branching ratio and decay (per second).
const BRANCHING: f64 = 0.7;
const DECAY: f64 = 20.0;

impl SynthConfig {
    /// The symbols generated.
    pub fn symbol_names(&self) -> Vec<Symbol> {
        (0..self.symbols)
            .map(|i| Symbol::new(&format!("SYN{i:03}")).expect("valid symbol"))
            .collect()
    }

    /// The trading days generated (weekdays from `start`), as midnights UTC.
    pub fn dates(&self) -> Vec<UnixNanos> {
        let mut out = Vec::with_capacity(self.days);
        let mut day = self.start.day();
        while out.len() < self.days {
            // 1970-01-01 was a Thursday: day % 7 == 2 is Saturday, 3 is Sunday.
            if !matches!(day.rem_euclid(7), 2 | 3) {
                out.push(UnixNanos(day * UnixNanos::DAY));
            }
            day += 1;
        }
        out
    }
}

#[derive(Default)]
struct Level {
    orders: VecDeque<(u64, i64)>,
    total: i64,
}

/// The generator's own book, in integer ticks and shares.
#[derive(Default)]
struct SimBook {
    bids: BTreeMap<i64, Level>,
    asks: BTreeMap<i64, Level>,
}

impl SimBook {
    fn side(&mut self, side: Side) -> &mut BTreeMap<i64, Level> {
        match side {
            Side::Buy => &mut self.bids,
            Side::Sell => &mut self.asks,
        }
    }
    fn best(&self, side: Side) -> Option<i64> {
        match side {
            Side::Buy => self.bids.keys().next_back().copied(),
            Side::Sell => self.asks.keys().next().copied(),
        }
    }
    fn level_at(&self, side: Side, tick: i64) -> Option<&Level> {
        match side {
            Side::Buy => self.bids.get(&tick),
            Side::Sell => self.asks.get(&tick),
        }
    }
    fn depth(&self, side: Side, n: usize) -> Vec<(Price, Size)> {
        let conv = |(t, l): (&i64, &Level)| (Price::from_scaled(*t, 2), Size::from_units(l.total));
        match side {
            Side::Buy => self.bids.iter().rev().take(n).map(conv).collect(),
            Side::Sell => self.asks.iter().take(n).map(conv).collect(),
        }
    }
}

/// Price levels, best first.
pub type Levels = Vec<(Price, Size)>;

/// Generates one symbol-day of order messages.
pub struct DayGenerator {
    rng: ChaCha8Rng,
    book: SimBook,
    midnight: UnixNanos,
    t: f64,
    excitation: f64,
    baseline: f64,
    next_id: u64,
    seq: u64,
    last_sign: Side,
    ref_tick: i64,
    initial: Vec<OrderEvent>,
    /// A market order still executing: resting side, shares left, its time.
    sweep: Option<(Side, i64, UnixNanos)>,
    done: bool,
}

impl DayGenerator {
    /// The generator for symbol `sym` on day `day` of a configuration.
    pub fn new(cfg: &SynthConfig, sym: usize, day: usize, midnight: UnixNanos) -> Self {
        let mut seed_rng =
            ChaCha8Rng::seed_from_u64(cfg.seed ^ (sym as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let base: f64 = 20.0 + 480.0 * seed_rng.random::<f64>();
        let mut rng = ChaCha8Rng::seed_from_u64(
            cfg.seed ^ (sym as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ ((day as u64 + 1) << 40),
        );
        let z: f64 = StandardNormal.sample(&mut rng);
        let ref_tick = ((base * (1.0 + 0.02 * z)) * 100.0).round().max(100.0) as i64;
        let baseline = cfg.events_per_day as f64 * (1.0 - BRANCHING) / SESSION_S;
        let mut g = DayGenerator {
            rng,
            book: SimBook::default(),
            midnight,
            t: 0.0,
            excitation: 0.0,
            baseline,
            next_id: 1,
            seq: 0,
            last_sign: Side::Buy,
            ref_tick,
            initial: Vec::new(),
            sweep: None,
            done: false,
        };
        g.initial = g.opening_book();
        g
    }

    /// Orders resting at the open (five levels a side): they precede the day's messages.
    fn opening_book(&mut self) -> Vec<OrderEvent> {
        let mut out = Vec::new();
        let ts = UnixNanos(self.midnight.0 + OPEN_NS);
        for side in [Side::Buy, Side::Sell] {
            for i in 0..5 {
                let tick = match side {
                    Side::Buy => self.ref_tick - i,
                    Side::Sell => self.ref_tick + 1 + i,
                };
                for _ in 0..self.rng.random_range(1..=4) {
                    let size = self.limit_size();
                    out.push(self.add(side, tick, size, ts));
                }
            }
        }
        out
    }

    /// The orders resting at the open, as `Add` events stamped at the open.
    pub fn initial_orders(&self) -> &[OrderEvent] {
        &self.initial
    }

    fn limit_size(&mut self) -> i64 {
        if self.rng.random::<f64>() < 0.1 {
            self.rng.random_range(1..100)
        } else {
            let g = Geometric::new(0.5).expect("valid p").sample(&mut self.rng) as i64;
            100 * (1 + g.min(20))
        }
    }

    fn add(&mut self, side: Side, tick: i64, size: i64, ts: UnixNanos) -> OrderEvent {
        let id = self.next_id;
        self.next_id += 1;
        let level = self.book.side(side).entry(tick).or_default();
        level.orders.push_back((id, size));
        level.total += size;
        self.event(L3Action::Add, id, side, tick, size, ts)
    }

    fn event(
        &mut self,
        action: L3Action,
        id: u64,
        side: Side,
        tick: i64,
        size: i64,
        ts: UnixNanos,
    ) -> OrderEvent {
        self.seq += 1;
        OrderEvent {
            ts,
            seq: self.seq,
            action,
            order_id: OrderId(id),
            side,
            price: Price::from_scaled(tick, 2),
            size: Size::from_units(size),
        }
    }

    fn intraday(x: f64) -> f64 {
        (0.6 + 2.4 * (2.0 * x - 1.0).powi(2)) / 1.4
    }

    /// Advances to the next arrival (Ogata thinning); `None` after the close.
    fn next_time(&mut self) -> Option<f64> {
        let max_base = self.baseline * 3.0 / 1.4;
        loop {
            let bound = max_base + self.excitation;
            let w = Exp::new(bound)
                .expect("positive rate")
                .sample(&mut self.rng);
            self.t += w;
            self.excitation *= (-DECAY * w).exp();
            if self.t >= SESSION_S {
                return None;
            }
            let rate = self.baseline * Self::intraday(self.t / SESSION_S) + self.excitation;
            if self.rng.random::<f64>() * bound <= rate {
                self.excitation += BRANCHING * DECAY;
                return Some(self.t);
            }
        }
    }

    /// Executes the next resting order of a market order in progress.
    fn continue_sweep(&mut self, out: &mut Vec<OrderEvent>) {
        let Some((resting, want, ts)) = self.sweep.take() else {
            return;
        };
        let Some(best) = self.book.best(resting) else {
            return;
        };
        let level = self.book.side(resting).get_mut(&best).expect("best exists");
        let (id, size) = level
            .orders
            .front()
            .copied()
            .expect("levels are never empty");
        let fill = size.min(want);
        level.total -= fill;
        if fill == size {
            level.orders.pop_front();
        } else {
            level.orders.front_mut().expect("front").1 -= fill;
        }
        if level.orders.is_empty() {
            self.book.side(resting).remove(&best);
        }
        out.push(self.event(L3Action::Execute, id, resting, best, fill, ts));
        if want > fill {
            self.sweep = Some((resting, want - fill, ts));
        }
    }

    /// Appends the next message: one order added, cancelled or executed (a market order that
    /// walks several resting orders yields one execution per call, all at the same time).
    /// Returns false after the close.
    pub fn next_events(&mut self, out: &mut Vec<OrderEvent>) -> bool {
        if self.sweep.is_some() {
            self.continue_sweep(out);
            return true;
        }
        if self.done {
            return false;
        }
        let Some(t) = self.next_time() else {
            self.done = true;
            return false;
        };
        let ts = UnixNanos(self.midnight.0 + OPEN_NS + (t * 1e9) as i64);
        let bid = self.book.best(Side::Buy);
        let ask = self.book.best(Side::Sell);
        let (bid, ask) = match (bid, ask) {
            (Some(b), Some(a)) => (b, a),
            (Some(b), None) => (b, b + 1),
            (None, Some(a)) => (a - 1, a),
            (None, None) => (self.ref_tick, self.ref_tick + 1),
        };
        self.ref_tick = (bid + ask) / 2;
        let spread = ask - bid;

        // Weights of every possible event, queue-reactive.
        let mut weights: Vec<(f64, u8, Side, i64)> = Vec::with_capacity(4 * LEVELS + 4);
        for side in [Side::Buy, Side::Sell] {
            for (i, aw) in ADD_WEIGHT.iter().enumerate() {
                let tick = match side {
                    Side::Buy => bid - i as i64,
                    Side::Sell => ask + i as i64,
                };
                let (q, n) = self
                    .book
                    .level_at(side, tick)
                    .map_or((0, 0), |l| (l.total, l.orders.len()));
                weights.push((aw / (1.0 + q as f64 / 500.0), 0, side, tick));
                if n > 0 {
                    weights.push((0.06 * n as f64, 1, side, tick));
                }
            }
            if spread > 1 {
                weights.push((1.5 * (spread - 1) as f64, 2, side, 0));
            }
            let persist = if side == self.last_sign { 1.8 } else { 0.2 };
            if self.book.best(side.opposite()).is_some() {
                weights.push((0.12 * persist, 3, side, 0));
            }
        }
        let total: f64 = weights.iter().map(|w| w.0).sum();
        let mut pick = self.rng.random::<f64>() * total;
        let mut chosen = weights[weights.len() - 1];
        for w in &weights {
            if pick < w.0 {
                chosen = *w;
                break;
            }
            pick -= w.0;
        }
        let (_, kind, side, tick) = chosen;
        match kind {
            0 => {
                let size = self.limit_size();
                out.push(self.add(side, tick, size, ts));
            }
            1 => {
                let level = self
                    .book
                    .side(side)
                    .get_mut(&tick)
                    .expect("cancel on a non-empty level");
                let k = self.rng.random_range(0..level.orders.len());
                let (id, size) = level.orders.remove(k).expect("index in range");
                level.total -= size;
                if level.orders.is_empty() {
                    self.book.side(side).remove(&tick);
                }
                // A third of cancels are partial: the LOBSTER type 2 message.
                if size > 100 && self.rng.random::<f64>() < 0.33 {
                    let part = 100 * self.rng.random_range(1..=(size - 1) / 100);
                    let level = self.book.side(side).entry(tick).or_default();
                    level
                        .orders
                        .insert(k.min(level.orders.len()), (id, size - part));
                    level.total += size - part;
                    out.push(self.event(L3Action::Cancel, id, side, tick, part, ts));
                } else {
                    out.push(self.event(L3Action::Delete, id, side, tick, size, ts));
                }
            }
            2 => {
                let tick = bid + self.rng.random_range(1..spread);
                let size = self.limit_size();
                out.push(self.add(side, tick, size, ts));
            }
            _ => {
                self.last_sign = side;
                let g = Geometric::new(0.45).expect("valid p").sample(&mut self.rng) as i64;
                self.sweep = Some((side.opposite(), 100 * (1 + g.min(30)), ts));
                self.continue_sweep(out);
            }
        }
        true
    }

    /// The generator's book (asks, bids), best first, `n` levels.
    pub fn top(&self, n: usize) -> (Levels, Levels) {
        (
            self.book.depth(Side::Sell, n),
            self.book.depth(Side::Buy, n),
        )
    }
}

/// The synthetic market as a reader: every symbol-day in order, through the shared L3
/// reconstruction, with one source id per symbol-day.
///
/// ```
/// use flowsense_sources::synth::{SynthConfig, SyntheticMarket};
/// let cfg = SynthConfig { symbols: 1, days: 1, events_per_day: 2_000, ..Default::default() };
/// let a: Vec<_> = SyntheticMarket::new(cfg.clone()).collect();
/// let b: Vec<_> = SyntheticMarket::new(cfg).collect();
/// assert_eq!(a, b); // same seed, same market
/// assert!(a.len() > 2_000);
/// ```
pub struct SyntheticMarket {
    cfg: SynthConfig,
    symbols: Vec<Symbol>,
    dates: Vec<UnixNanos>,
    next: usize,
    only: Option<usize>,
    day: Option<(DayGenerator, L3Replay, SourceId)>,
    pending: VecDeque<Record>,
    orders: Vec<OrderEvent>,
    events: Vec<flowsense_core::MarketEvent>,
}

impl SyntheticMarket {
    /// A market for a configuration.
    pub fn new(cfg: SynthConfig) -> Self {
        SyntheticMarket {
            symbols: cfg.symbol_names(),
            dates: cfg.dates(),
            cfg,
            next: 0,
            only: None,
            day: None,
            pending: VecDeque::new(),
            orders: Vec::new(),
            events: Vec::new(),
        }
    }

    /// The market of one symbol (its index among the configuration's symbols), day after day:
    /// the same events as that symbol's share of [`SyntheticMarket::new`].
    pub fn for_symbol(cfg: SynthConfig, symbol: usize) -> Self {
        let mut m = SyntheticMarket::new(cfg);
        m.only = Some(symbol);
        m
    }

    /// The source id of a symbol-day.
    pub fn source_id(cfg: &SynthConfig, symbol: &Symbol, date: UnixNanos) -> SourceId {
        SourceId::new(&format!(
            "synth-s{}-e{}-{}-{}",
            cfg.seed,
            cfg.events_per_day,
            symbol,
            date.date_string()
        ))
    }

    fn start_next(&mut self) -> bool {
        let total = self.symbols.len() * self.dates.len();
        if self.next >= total {
            return false;
        }
        let (d, s) = (
            self.next / self.symbols.len(),
            self.next % self.symbols.len(),
        );
        self.next += 1;
        if self.only.is_some_and(|o| o != s) {
            return self.start_next();
        }
        let sym = self.symbols[s].clone();
        let date = self.dates[d];
        let g = DayGenerator::new(&self.cfg, s, d, date);
        let mut replay = L3Replay::new(sym.clone());
        let mut out = Vec::new();
        for o in g.initial_orders() {
            replay
                .apply(o.clone(), &mut out)
                .expect("the opening book is consistent");
        }
        let id = Self::source_id(&self.cfg, &sym, date);
        self.pending.push_back(Record::SourceStart(id.clone()));
        self.pending.extend(out.into_iter().map(Record::Event));
        self.day = Some((g, replay, id));
        true
    }
}

impl Iterator for SyntheticMarket {
    type Item = Record;

    fn next(&mut self) -> Option<Record> {
        loop {
            if let Some(r) = self.pending.pop_front() {
                return Some(r);
            }
            let Some((g, replay, id)) = self.day.as_mut() else {
                if !self.start_next() {
                    return None;
                }
                continue;
            };
            self.orders.clear();
            if !g.next_events(&mut self.orders) {
                let id = id.clone();
                self.day = None;
                return Some(Record::SourceDone(id));
            }
            for o in self.orders.drain(..) {
                self.events.clear();
                replay
                    .apply(o, &mut self.events)
                    .expect("the generator only emits valid messages");
                self.pending
                    .extend(self.events.drain(..).map(Record::Event));
            }
        }
    }
}

/// Writes the configuration's market as LOBSTER files (`levels` deep) into `dir`, one message
/// and one orderbook file per symbol-day. Orders resting at the open are not written: as in
/// real LOBSTER data, they are visible only through the first orderbook row.
/// Returns the message files written.
pub fn write_lobster(
    cfg: &SynthConfig,
    dir: &Path,
    levels: usize,
) -> std::io::Result<Vec<std::path::PathBuf>> {
    let mut files = Vec::new();
    let start_ms = OPEN_NS / 1_000_000;
    let end_ms = start_ms + (SESSION_S as i64) * 1000;
    for (d, date) in cfg.dates().into_iter().enumerate() {
        for (s, sym) in cfg.symbol_names().iter().enumerate() {
            let mut g = DayGenerator::new(cfg, s, d, date);
            let mut w = LobsterWriter::create(dir, sym.as_str(), date, start_ms, end_ms, levels)?;
            let mut evs = Vec::new();
            while g.next_events(&mut evs) {
                let (asks, bids) = g.top(levels);
                for e in evs.drain(..) {
                    w.write(&e, &asks, &bids)?;
                }
            }
            w.finish()?;
            files.push(LobsterWriter::message_path(
                dir,
                sym.as_str(),
                date,
                start_ms,
                end_ms,
                levels,
            ));
        }
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lobster::{LobsterOptions, LobsterReader};
    use flowsense_core::MarketEvent;

    fn small() -> SynthConfig {
        SynthConfig {
            symbols: 2,
            days: 2,
            seed: 7,
            events_per_day: 20_000,
            ..Default::default()
        }
    }

    #[test]
    fn lobster_reader_reproduces_the_generated_orderbook_file() {
        let dir = tempfile::tempdir().unwrap();
        let files = write_lobster(&small(), dir.path(), 10).unwrap();
        assert_eq!(files.len(), 4);
        for f in files {
            let mut reader = LobsterReader::open(&f, LobsterOptions::default()).unwrap();
            let mut dead = 0;
            let mut orders = 0;
            for r in reader.by_ref() {
                match r.unwrap() {
                    Record::Dead(d) => {
                        eprintln!("{} {}: {}", d.position, d.reason_text(), d.raw);
                        dead += 1;
                    }
                    Record::Event(MarketEvent::Order(..)) => orders += 1,
                    _ => {}
                }
            }
            let check = reader.check();
            eprintln!(
                "{}: {} of {} rows match, {} levels revealed, {orders} orders",
                f.display(),
                check.matched,
                check.rows,
                check.revealed
            );
            assert_eq!(dead, 0);
            assert!(check.rows > 10_000);
            assert_eq!(check.matched, check.rows);
        }
    }

    #[test]
    fn the_market_looks_like_a_liquid_stock() {
        let cfg = SynthConfig {
            symbols: 1,
            days: 1,
            seed: 3,
            events_per_day: 100_000,
            ..Default::default()
        };
        let (mut adds, mut cancels, mut execs, mut trades) = (0u64, 0u64, 0u64, 0u64);
        let mut spreads = Vec::new();
        let mut per_hour = [0u64; 7];
        for r in SyntheticMarket::new(cfg) {
            match r {
                Record::Event(MarketEvent::Order(_, o)) => {
                    match o.action {
                        L3Action::Add => adds += 1,
                        L3Action::Cancel | L3Action::Delete => cancels += 1,
                        L3Action::Clear => continue, // the session's start
                        _ => execs += 1,
                    }
                    let h = ((o.ts.0.rem_euclid(UnixNanos::DAY) - OPEN_NS) / 3_600_000_000_000)
                        .clamp(0, 6);
                    per_hour[h as usize] += 1;
                }
                Record::Event(MarketEvent::Trade(..)) => trades += 1,
                Record::Event(MarketEvent::Bbo(_, b)) => {
                    if let (Some(bid), Some(ask)) = (b.bid, b.ask) {
                        spreads.push((ask.0 - bid.0).raw());
                    }
                }
                _ => {}
            }
        }
        let total = adds + cancels + execs;
        eprintln!(
            "adds {adds} cancels {cancels} executions {execs} trades {trades}; per hour {per_hour:?}"
        );
        assert!((60_000..160_000).contains(&total), "{total} messages");
        // NASDAQ-like mix: adds and cancels dominate, executions are a few percent.
        let share = |n: u64| n as f64 / total as f64;
        assert!(
            (0.35..0.6).contains(&share(adds)) && (0.35..0.6).contains(&share(cancels)),
            "message mix"
        );
        assert!(
            (0.02..0.15).contains(&share(execs)),
            "execution share {}",
            share(execs)
        );
        assert_eq!(trades, execs);
        spreads.sort_unstable();
        let median = spreads[spreads.len() / 2];
        eprintln!(
            "median spread {median} (1 tick = {})",
            Price::from_scaled(1, 2).raw()
        );
        assert!(
            median <= Price::from_scaled(3, 2).raw(),
            "median spread {median}"
        );
        assert!(spreads.iter().all(|&s| s > 0), "never crossed or locked");
        assert!(
            per_hour[0] > per_hour[3] && per_hour[6] > per_hour[3],
            "U-shaped day {per_hour:?}"
        );
    }
}
