//! The incremental feature engine of one symbol: a book, the features' running state, and the
//! buckets it closes. The timely operators hold one engine per symbol; the plain-loop baseline of
//! the benchmark drives the same engine without timely.
//!
//! Every feature is updated in O(levels) per event and closed in O(window) per bucket; nothing
//! looks at more than the event in hand, the book, and small fixed-size windows.

use std::collections::VecDeque;

use flowsense_core::book::{L2Book, L3Book};
use flowsense_core::features::{EVENT_BUCKET, MAX_LEVELS, RETURN_HORIZONS};
use flowsense_core::job::FeatureSpec;
use flowsense_core::{FeatureRow, L3Action, MarketEvent, Side, Symbol};

use crate::vpin::Vpin;

/// The best `n` levels of one side, best first, as exact fixed-point values (billionths, as
/// [`flowsense_core::Price::raw`]) for sums and comparisons; [`Levels::floats`] gives `f64`
/// copies for ratios when a row is written (not at every event).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Levels {
    /// Prices, fixed point.
    pub px_raw: [i64; MAX_LEVELS],
    /// Sizes, fixed point.
    pub sz_raw: [i64; MAX_LEVELS],
    /// Levels present.
    pub n: usize,
}

impl Default for Levels {
    fn default() -> Self {
        Levels {
            px_raw: [0; MAX_LEVELS],
            sz_raw: [0; MAX_LEVELS],
            n: 0,
        }
    }
}

/// Fixed-point units per whole unit.
const SCALE: f64 = 1e9;

/// A fixed-point sum as a double. Sums are kept in `i128` so they cannot overflow, but they fit
/// an `i64` in practice, and `i128 as f64` is a software routine (`__floattidf`, 3 % of the graph's
/// time) where `i64 as f64` is one instruction; both round to the nearest double, so the result is
/// the same.
fn to_f64(raw: i128) -> f64 {
    int_f64(raw) / SCALE
}

/// `x as f64`, through `i64` when it fits (see [`to_f64`]). The `black_box` keeps the compiler
/// from folding both arms back into the one `i128` conversion (they compute the same value).
fn int_f64(x: i128) -> f64 {
    match i64::try_from(x) {
        Ok(v) => v as f64,
        Err(_) => std::hint::black_box(x) as f64,
    }
}

impl Levels {
    /// Reads the best `depth` levels from an iterator of (price, size), best first.
    pub fn read(
        &mut self,
        levels: impl Iterator<Item = (flowsense_core::Price, flowsense_core::Size)>,
        depth: usize,
    ) {
        self.n = 0;
        for (i, (p, q)) in levels.take(depth).enumerate() {
            self.px_raw[i] = p.raw();
            self.sz_raw[i] = q.raw();
            self.n = i + 1;
        }
    }

    /// Prices and sizes of the levels present as `f64` (the rest zero).
    pub fn floats(&self) -> ([f64; MAX_LEVELS], [f64; MAX_LEVELS]) {
        let (mut px, mut sz) = ([0.0; MAX_LEVELS], [0.0; MAX_LEVELS]);
        for i in 0..self.n {
            px[i] = flowsense_core::Price::from_raw(self.px_raw[i]).as_f64();
            sz[i] = flowsense_core::Size::from_raw(self.sz_raw[i]).as_f64();
        }
        (px, sz)
    }
}

/// Order-flow imbalance of level `m` between two books (Cont, Kukanov and Stoikov 2014; Xu, Ke
/// et al. for deeper levels). A side without level `m` counts as price -inf (bids) or +inf (asks)
/// with size zero, so a level appearing adds its size and one vanishing removes it.
///
/// The result is exact, in fixed-point size units (billionths).
///
/// ```
/// use flowsense_operators::engine::{ofi_level, Levels};
/// let mut b0 = Levels::default();
/// b0.px_raw[0] = 100; b0.sz_raw[0] = 5; b0.n = 1;
/// let mut b1 = b0;
/// b1.sz_raw[0] = 7; // two more bid at the same price: +2
/// let a = Levels::default();
/// assert_eq!(ofi_level(&b1, &a, &b0, &a, 0), 2);
/// ```
pub fn ofi_level(
    bids: &Levels,
    asks: &Levels,
    prev_bids: &Levels,
    prev_asks: &Levels,
    m: usize,
) -> i64 {
    let side = |l: &Levels, missing: i64| {
        if m < l.n {
            (l.px_raw[m], l.sz_raw[m])
        } else {
            (missing, 0)
        }
    };
    let (pb, qb) = side(bids, i64::MIN);
    let (pb0, qb0) = side(prev_bids, i64::MIN);
    let (pa, qa) = side(asks, i64::MAX);
    let (pa0, qa0) = side(prev_asks, i64::MAX);
    let mut e = 0;
    if pb >= pb0 {
        e += qb;
    }
    if pb <= pb0 {
        e -= qb0;
    }
    if pa <= pa0 {
        e -= qa;
    }
    if pa >= pa0 {
        e += qa0;
    }
    e
}

/// The book of one symbol: L2 from depth updates, or L3 from order messages.
#[derive(Debug, Default)]
enum SymbolBook {
    #[default]
    Empty,
    L2(Box<L2Book>),
    L3(Box<L3Book>),
}

/// The integer sums of the flow features. The engine keeps them once, as running totals since
/// the start; a bucket's are the totals at its close less the totals when it opened. Exact (they
/// are integers), and an event adds to one set of totals instead of to every bucket width's.
#[derive(Clone, Copy, Debug, Default)]
struct Counts {
    events: u64,
    ofi: [i128; MAX_LEVELS],
    trades: u64,
    buy: i128,
    sell: i128,
    adds: u64,
    cancels: u64,
    /// Volume without an aggressor side (from bars).
    unsigned: i128,
    /// Events after which the book was crossed or locked.
    crossed: u64,
}

impl Counts {
    fn add(&mut self, e: &Effect, levels: usize) {
        self.events += 1;
        if e.book_changed {
            for m in 0..levels {
                self.ofi[m] += e.ofi[m] as i128;
            }
        }
        self.adds += e.adds;
        self.cancels += e.cancels;
        self.crossed += e.crossed as u64;
        if let Some((_, _, raw, buy)) = e.trade {
            self.trades += 1;
            if buy {
                self.buy += raw as i128;
            } else {
                self.sell += raw as i128;
            }
        }
        if let Some((_, _, _, _, volume, _, trades)) = e.bar {
            self.trades += trades;
            self.unsigned += volume as i128;
        }
    }

    /// What was added since `start`.
    fn since(&self, start: &Counts) -> Counts {
        Counts {
            events: self.events - start.events,
            ofi: std::array::from_fn(|m| self.ofi[m] - start.ofi[m]),
            trades: self.trades - start.trades,
            buy: self.buy - start.buy,
            sell: self.sell - start.sell,
            adds: self.adds - start.adds,
            cancels: self.cancels - start.cancels,
            unsigned: self.unsigned - start.unsigned,
            crossed: self.crossed - start.crossed,
        }
    }
}

/// Flow sums of one bucket (or one event): the counts, and the sums in floating point, which stay
/// per bucket so each adds its events in their order.
#[derive(Clone, Debug, Default)]
struct Flow {
    counts: Counts,
    notional: f64,
    open: Option<f64>,
    high: f64,
    low: f64,
    close: f64,
    rv: f64,
}

/// What one event did to the symbol.
#[derive(Clone, Debug, Default)]
struct Effect {
    book_changed: bool,
    ofi: [i64; MAX_LEVELS],
    /// Squared log mid change, when the mid moved.
    rv: f64,
    adds: u64,
    cancels: u64,
    /// (price, size, size fixed point, aggressor bought).
    trade: Option<(f64, f64, i64, bool)>,
    /// A bar: (open, high, low, close, volume fixed point, notional, trades).
    bar: Option<(f64, f64, f64, f64, i64, f64, u64)>,
    /// The book was crossed or locked after the event.
    crossed: bool,
}

impl Flow {
    /// Adds an event's prices: realized variance, notional, open, high, low and close.
    fn add_prices(&mut self, e: &Effect) {
        if e.book_changed {
            self.rv += e.rv;
        }
        if let Some((px, sz, _, _)) = e.trade {
            self.notional += px * sz;
            if self.open.is_none() {
                self.open = Some(px);
                self.high = px;
                self.low = px;
            }
            self.high = self.high.max(px);
            self.low = self.low.min(px);
            self.close = px;
        }
        if let Some((o, h, l, c, _, notional, _)) = e.bar {
            self.rv += e.rv;
            self.notional += notional;
            if self.open.is_none() {
                self.open = Some(o);
                self.high = h;
                self.low = l;
            }
            self.high = self.high.max(h);
            self.low = self.low.min(l);
            self.close = c;
        }
    }
}

/// Kyle's lambda of one bucket width: the OLS slope of mid changes on signed volume over the
/// last `kyle_window` buckets.
///
/// Both are integers in fixed point (signed volume in size units, twice the mid in price units),
/// so the window keeps its sums exactly and the slope costs a few multiplications per close
/// instead of two passes over the window: `(n Sxy - Sx Sy) / (n Sxx - Sx^2)`, then scaled to
/// price per size unit. Exact sums also make it the true slope of the points, where two passes
/// in floating point lose digits on ill-conditioned windows. Should a sum leave `i128` (sizes
/// beyond any market's), the window falls back to [`ols_slope`] in floating point until the sums
/// fit again.
#[derive(Debug, Default)]
struct KyleWindow {
    points: VecDeque<(i128, i128)>,
    /// Sx, Sy, Sxx, Sxy; `None` after an overflow.
    sums: Option<[i128; 4]>,
}

impl KyleWindow {
    fn push(&mut self, x: i128, y: i128, window: usize) {
        self.points.push_back((x, y));
        let dropped = (self.points.len() > window)
            .then(|| self.points.pop_front())
            .flatten();
        self.sums = match self.sums {
            Some(s) => {
                shift(s, (x, y), true).and_then(|s| dropped.map_or(Some(s), |p| shift(s, p, false)))
            }
            // The first point, or after an overflow: sum the window afresh.
            None => self
                .points
                .iter()
                .try_fold([0i128; 4], |s, &p| shift(s, p, true)),
        };
    }

    fn slope(&self) -> Option<f64> {
        let n = self.points.len() as i128;
        if n < 2 {
            return None;
        }
        let exact = self.sums.and_then(|[sx, sy, sxx, sxy]| {
            let num = n.checked_mul(sxy)?.checked_sub(sx.checked_mul(sy)?)?;
            let den = n.checked_mul(sxx)?.checked_sub(sx.checked_mul(sx)?)?;
            Some((num, den))
        });
        match exact {
            // x is in 1e-9 size units and y in 0.5e-9 price units: the slope in price per
            // size unit is half the raw one.
            Some((num, den)) => (den > 0).then(|| 0.5 * int_f64(num) / int_f64(den)),
            None => ols_slope(
                self.points
                    .iter()
                    .map(|&(x, y)| (int_f64(x) / SCALE, int_f64(y) / (2.0 * SCALE))),
            ),
        }
    }
}

/// Kyle sums `s` (Sx, Sy, Sxx, Sxy) with the point `(x, y)` added (`add`) or taken out; `None`
/// when a term leaves `i128`.
fn shift(s: [i128; 4], (x, y): (i128, i128), add: bool) -> Option<[i128; 4]> {
    let terms = [x, y, x.checked_mul(x)?, x.checked_mul(y)?];
    let mut out = s;
    for (o, t) in out.iter_mut().zip(terms) {
        *o = if add {
            o.checked_add(t)?
        } else {
            o.checked_sub(t)?
        };
    }
    Some(out)
}

/// One bucket width's running state.
#[derive(Debug)]
struct Bucket {
    width: i64,
    label: std::sync::Arc<str>,
    start: i64,
    end: i64,
    active: bool,
    flow: Flow,
    /// The engine's counts when the bucket opened.
    opened_at: Counts,
    /// Twice the mid, fixed point, at the end of the previous emitted bucket.
    prev_mid: Option<i128>,
    /// (signed volume, change of twice the mid) of the last `kyle_window` buckets.
    kyle: KyleWindow,
    /// (bucket end, mid) of emitted buckets, far enough back for the longest return.
    history: VecDeque<(i64, f64)>,
}

/// The incremental features of one symbol.
///
/// ```
/// use flowsense_core::job::FeatureSpec;
/// use flowsense_core::{MarketEvent, Price, Side, Size, Symbol, Trade, UnixNanos};
/// use flowsense_operators::engine::FeatureEngine;
/// let spec = FeatureSpec { buckets: vec!["1s".parse().unwrap()], ..Default::default() };
/// let sym = Symbol::new("ABC").unwrap();
/// let mut engine = FeatureEngine::new(sym.clone(), &spec);
/// let trade = |ms, px, aggressor| MarketEvent::Trade(sym.clone(), Trade {
///     ts: UnixNanos::from_millis(ms), local_ts: None, trade_id: None,
///     price: Price::from_units(px), size: Size::from_units(1), aggressor });
/// let mut rows = Vec::new();
/// engine.on_event(&trade(100, 10, Side::Buy), &mut rows);
/// engine.on_event(&trade(900, 12, Side::Sell), &mut rows);
/// engine.on_event(&trade(1_500, 11, Side::Buy), &mut rows); // closes [0 s, 1 s)
/// assert_eq!(rows.len(), 1);
/// assert_eq!(rows[0].ts, 1_000_000_000);
/// assert_eq!(rows[0].vwap, Some(11.0));
/// assert_eq!(rows[0].signed_volume, 0.0);
/// engine.finish(&mut rows);
/// assert_eq!(rows.len(), 2);
/// ```
#[derive(Debug)]
pub struct FeatureEngine {
    symbol: Symbol,
    levels: usize,
    per_event: bool,
    kyle_window: usize,
    book: SymbolBook,
    bids: Levels,
    asks: Levels,
    prev_bids: Levels,
    prev_asks: Levels,
    mid: Option<f64>,
    /// Twice the mid in fixed point (bid + ask), exact: Kyle's lambda's mid changes.
    mid2: Option<i128>,
    last_ts: i64,
    vpin: Vpin,
    /// Running totals of the integer flow sums (see [`Counts`]).
    counts: Counts,
    buckets: Vec<Bucket>,
    rejects: u64,
    late: u64,
    /// The latest end of an emitted bucket: no later event may fall before it.
    closed_until: i64,
    /// Compute Kyle's lambda (an OLS over `kyle_window` buckets at every close).
    kyle: bool,
    /// Compute the returns over 1, 10 and 100 buckets (a logarithm each, at every close).
    returns: bool,
}

impl FeatureEngine {
    /// An engine for one symbol.
    pub fn new(symbol: Symbol, spec: &FeatureSpec) -> Self {
        let buckets = spec
            .buckets
            .iter()
            .map(|w| Bucket {
                width: w.nanos() as i64,
                label: w.to_string().into(),
                start: 0,
                end: 0,
                active: false,
                flow: Flow::default(),
                opened_at: Counts::default(),
                prev_mid: None,
                kyle: KyleWindow::default(),
                history: VecDeque::new(),
            })
            .collect();
        FeatureEngine {
            symbol,
            levels: spec.levels.clamp(1, MAX_LEVELS),
            per_event: spec.per_event,
            kyle_window: spec.kyle_window,
            book: SymbolBook::Empty,
            bids: Levels::default(),
            asks: Levels::default(),
            prev_bids: Levels::default(),
            prev_asks: Levels::default(),
            mid: None,
            mid2: None,
            last_ts: i64::MIN,
            vpin: Vpin::new(spec.vpin_bucket_volume, spec.vpin_window),
            counts: Counts::default(),
            buckets,
            rejects: 0,
            late: 0,
            closed_until: i64::MIN,
            kyle: true,
            returns: true,
        }
    }

    /// Stops computing Kyle's lambda (rows carry none): for a reader that never looks at it,
    /// such as a strategy whose expressions do not name it.
    pub fn without_kyle_lambda(mut self) -> Self {
        self.kyle = false;
        self
    }

    /// Stops computing the returns over 1, 10 and 100 buckets (rows carry none): for a reader
    /// that never looks at them.
    pub fn without_returns(mut self) -> Self {
        self.returns = false;
        self
    }

    /// The symbol.
    pub fn symbol(&self) -> &Symbol {
        &self.symbol
    }

    /// Book updates the engine's book refused (an L3 message for an unknown order, say).
    pub fn rejects(&self) -> u64 {
        self.rejects
    }

    /// Events that came with a time before an already closed bucket's end (treated as at that end).
    pub fn late(&self) -> u64 {
        self.late
    }

    /// The earliest end among open buckets: the time after which the engine has a row to give.
    pub fn next_close(&self) -> Option<i64> {
        self.buckets
            .iter()
            .filter(|b| b.active)
            .map(|b| b.end)
            .min()
    }

    /// Applies one event, first emitting every bucket that ends at or before its time.
    /// Top-of-book rows (`bbo`, `quotes`) are derived data and are skipped.
    pub fn on_event(&mut self, ev: &MarketEvent, out: &mut Vec<FeatureRow>) {
        if matches!(ev, MarketEvent::Bbo(..) | MarketEvent::Quote(..)) {
            return;
        }
        let mut ts = ev.ts().0;
        if ts < self.last_ts {
            ts = self.last_ts;
        }
        // A bucket closed by the frontier cannot take this event: fold it into the next one.
        if ts < self.closed_until {
            self.late += 1;
            ts = self.closed_until;
        }
        self.last_ts = ts;
        self.close_until(ts, out);
        let Some(effect) = self.apply(ev) else {
            return;
        };
        // A bar belongs to the bucket it opened in, and is complete at its close: the bucket
        // ending then closes with it, so a bar strategy decides on bar k at bar k's close.
        let (at, bar_close) = match ev {
            MarketEvent::Bar(_, b) => (b.open_time.0.max(self.closed_until), Some(ts)),
            _ => (ts, None),
        };
        for b in &mut self.buckets {
            if !b.active {
                b.start = at - at.rem_euclid(b.width);
                b.end = b.start + b.width;
                b.active = true;
                b.opened_at = self.counts;
            }
            b.flow.add_prices(&effect);
        }
        self.counts.add(&effect, self.levels);
        if let Some(close) = bar_close {
            self.close_until(close, out);
        }
        if self.per_event {
            let mut flow = Flow::default();
            flow.counts.add(&effect, self.levels);
            flow.add_prices(&effect);
            let mut row = FeatureRow::empty(self.symbol.clone(), ts, EVENT_BUCKET.into());
            self.fill_state(&mut row);
            fill_flow(&mut row, &flow, None);
            row.vpin = self.vpin.value();
            out.push(row);
        }
    }

    /// Emits every open bucket that ends at or before `t` (the input frontier has passed it, or an
    /// event at `t` arrived).
    pub fn close_until(&mut self, t: i64, out: &mut Vec<FeatureRow>) {
        for i in 0..self.buckets.len() {
            if self.buckets[i].active && self.buckets[i].end <= t {
                self.emit(i, out);
            }
        }
    }

    /// Emits every open bucket (the input ended).
    pub fn finish(&mut self, out: &mut Vec<FeatureRow>) {
        for i in 0..self.buckets.len() {
            if self.buckets[i].active {
                self.emit(i, out);
            }
        }
    }

    fn apply(&mut self, ev: &MarketEvent) -> Option<Effect> {
        let mut e = Effect::default();
        let mut fresh_book = false;
        match ev {
            MarketEvent::Order(_, o) => {
                // A session's `Clear` empties the book (L3 readers emit one before each
                // session's first message); nothing of the last session's book carries over.
                if !matches!(self.book, SymbolBook::L3(_)) {
                    self.book = SymbolBook::L3(Box::default());
                    fresh_book = true;
                }
                fresh_book |= o.action == L3Action::Clear;
                let SymbolBook::L3(book) = &mut self.book else {
                    unreachable!("set above")
                };
                match book.apply(o) {
                    Ok(applied) => e.book_changed = applied.touched_book,
                    Err(_) => {
                        self.rejects += 1;
                        return None;
                    }
                }
                match o.action {
                    L3Action::Add => e.adds = 1,
                    L3Action::Cancel | L3Action::Delete => e.cancels = 1,
                    L3Action::Modify => {
                        e.adds = 1;
                        e.cancels = 1;
                    }
                    _ => {}
                }
                if !e.book_changed && e.adds + e.cancels == 0 {
                    return None;
                }
            }
            MarketEvent::Depth(_, d) => {
                if !matches!(self.book, SymbolBook::L2(_)) {
                    self.book = SymbolBook::L2(Box::default());
                }
                let SymbolBook::L2(book) = &mut self.book else {
                    unreachable!("set above")
                };
                if d.is_snapshot {
                    book.clear();
                }
                for (side, levels) in [(Side::Buy, &d.bids), (Side::Sell, &d.asks)] {
                    for &(p, q) in levels {
                        let old = book.replace_level(side, p, q);
                        if !d.is_snapshot {
                            if q > old {
                                e.adds += 1;
                            } else if q < old {
                                e.cancels += 1;
                            }
                        }
                    }
                }
                e.book_changed = true;
            }
            MarketEvent::Trade(_, t) => {
                let buy = t.aggressor == Side::Buy;
                let (px, sz) = (t.price.as_f64(), t.size.as_f64());
                e.trade = Some((px, sz, t.size.raw(), buy));
                self.vpin.trade(sz, buy);
            }
            MarketEvent::Bar(_, b) => {
                // No book: the close stands in for the mid.
                let c = b.close.as_f64();
                if let Some(old) = self.mid
                    && old > 0.0
                    && old != c
                {
                    let r = (c / old).ln();
                    e.rv = r * r;
                }
                self.mid = Some(c);
                self.mid2 = Some(2 * b.close.raw() as i128);
                let volume = b.volume.as_f64();
                let typical = (b.high.as_f64() + b.low.as_f64() + c) / 3.0;
                e.bar = Some((
                    b.open.as_f64(),
                    b.high.as_f64(),
                    b.low.as_f64(),
                    c,
                    b.volume.raw(),
                    typical * volume,
                    b.trades.unwrap_or(0),
                ));
            }
            MarketEvent::Bbo(..) | MarketEvent::Quote(..) => return None,
        }
        if fresh_book {
            // A new session: no flow is measured across it, and no mid change.
            self.bids = Levels::default();
            self.asks = Levels::default();
            self.mid = None;
            self.mid2 = None;
        }
        if e.book_changed && (fresh_book || self.may_change_top(ev)) {
            // An order message changes one side only: the other keeps the levels it had, unless
            // the book was just started afresh (a new session).
            let (bids, asks) = match ev {
                MarketEvent::Order(_, o) if !fresh_book => {
                    (o.side == Side::Buy, o.side == Side::Sell)
                }
                _ => (true, true),
            };
            self.refresh_book(&mut e, bids, asks);
        }
        e.crossed = self.crossed();
        Some(e)
    }

    /// True when the book's best bid is at or above its best ask (crossed or locked).
    fn crossed(&self) -> bool {
        self.bids.n > 0 && self.asks.n > 0 && self.bids.px_raw[0] >= self.asks.px_raw[0]
    }

    /// False when every price the event touched lies beyond the `levels` best of a full side: the
    /// top of the book, and so every feature of it, is then unchanged and is not re-read.
    fn may_change_top(&self, ev: &MarketEvent) -> bool {
        let beyond = |side: Side, price: i64| {
            let l = match side {
                Side::Buy => &self.bids,
                Side::Sell => &self.asks,
            };
            l.n == self.levels
                && match side {
                    Side::Buy => price < l.px_raw[l.n - 1],
                    Side::Sell => price > l.px_raw[l.n - 1],
                }
        };
        match ev {
            MarketEvent::Order(_, o) => {
                o.action == L3Action::Modify || !beyond(o.side, o.price.raw())
            }
            MarketEvent::Depth(_, d) => {
                d.is_snapshot
                    || d.bids.iter().any(|(p, _)| !beyond(Side::Buy, p.raw()))
                    || d.asks.iter().any(|(p, _)| !beyond(Side::Sell, p.raw()))
            }
            _ => true,
        }
    }

    /// Re-reads the top levels of the sides named (the others are unchanged) and derives the
    /// event's OFI and mid change.
    fn refresh_book(&mut self, e: &mut Effect, bids: bool, asks: bool) {
        std::mem::swap(&mut self.prev_bids, &mut self.bids);
        std::mem::swap(&mut self.prev_asks, &mut self.asks);
        let l2 = match &self.book {
            SymbolBook::L2(b) => b,
            SymbolBook::L3(b) => b.l2(),
            SymbolBook::Empty => return,
        };
        if bids {
            self.bids.read(l2.bids(), self.levels);
        } else {
            self.bids = self.prev_bids;
        }
        if asks {
            self.asks.read(l2.asks(), self.levels);
        } else {
            self.asks = self.prev_asks;
        }
        for m in 0..self.levels {
            e.ofi[m] = ofi_level(&self.bids, &self.asks, &self.prev_bids, &self.prev_asks, m);
        }
        let (b, a) = (&self.bids, &self.asks);
        let mid2 = (b.n > 0 && a.n > 0).then(|| b.px_raw[0] as i128 + a.px_raw[0] as i128);
        let mid = mid2.map(|m| to_f64(m) / 2.0);
        if let (Some(old), Some(new)) = (self.mid, mid)
            && old != new
        {
            let r = (new / old).ln();
            e.rv = r * r;
        }
        self.mid = mid;
        self.mid2 = mid2;
    }

    /// Writes the book's state features into a row.
    fn fill_state(&self, row: &mut FeatureRow) {
        let (b, a, l) = (&self.bids, &self.asks, self.levels);
        let ((bpx, bsz), (apx, asz)) = (b.floats(), a.floats());
        if b.n > 0 {
            row.bid_price = Some(bpx[0]);
            row.bid_size = Some(bsz[0]);
        }
        if a.n > 0 {
            row.ask_price = Some(apx[0]);
            row.ask_size = Some(asz[0]);
        }
        row.crossed = self.crossed();
        for m in 0..l {
            if m < b.n && m < a.n {
                row.depth_imbalance_levels[m] = (bsz[m] - asz[m]) / (bsz[m] + asz[m]);
            }
        }
        let (nb, na) = (b.n.min(l), a.n.min(l));
        let sum = |s: &[f64]| s.iter().sum::<f64>();
        let (b5, a5) = (sum(&bsz[..nb.min(5)]), sum(&asz[..na.min(5)]));
        if b5 + a5 > 0.0 {
            row.depth_imbalance_l5 = Some((b5 - a5) / (b5 + a5));
        }
        let Some(mid) = self.mid else {
            return;
        };
        row.mid = Some(mid);
        if b.n == 0 || a.n == 0 {
            return; // bars, or a one-sided book: no spread or depth features
        }
        row.spread = Some(to_f64(a.px_raw[0] as i128 - b.px_raw[0] as i128));
        row.depth_imbalance_l1 = Some(row.depth_imbalance_levels[0]);
        row.microprice = Some((bpx[0] * asz[0] + apx[0] * bsz[0]) / (asz[0] + bsz[0]));
        let (bq, aq) = (sum(&bsz[..nb]), sum(&asz[..na]));
        let bvwap = (0..nb).map(|i| bpx[i] * bsz[i]).sum::<f64>() / bq;
        let avwap = (0..na).map(|i| apx[i] * asz[i]).sum::<f64>() / aq;
        row.weighted_mid = Some((bvwap * aq + avwap * bq) / (aq + bq));
        let mut slopes = Vec::with_capacity(2);
        if mid - bpx[nb - 1] > 0.0 {
            slopes.push(bq / (mid - bpx[nb - 1]));
        }
        if apx[na - 1] - mid > 0.0 {
            slopes.push(aq / (apx[na - 1] - mid));
        }
        if !slopes.is_empty() {
            row.book_slope = Some(slopes.iter().sum::<f64>() / slopes.len() as f64);
        }
    }

    fn emit(&mut self, i: usize, out: &mut Vec<FeatureRow>) {
        let mut row = FeatureRow::empty(
            self.symbol.clone(),
            self.buckets[i].end,
            self.buckets[i].label.clone(),
        );
        self.fill_state(&mut row);
        row.vpin = self.vpin.value();
        let (mid, mid2) = (self.mid, self.mid2);
        let kyle_window = self.kyle_window;
        let totals = self.counts;
        let b = &mut self.buckets[i];
        b.flow.counts = totals.since(&b.opened_at);
        self.closed_until = self.closed_until.max(b.end);
        let secs = b.width as f64 * 1e-9;
        fill_flow(&mut row, &b.flow, Some(secs));
        if mid.is_some() {
            row.realized_vol = Some(b.flow.rv.sqrt());
        }
        // Kyle's lambda over the last `kyle_window` buckets.
        if let (Some(m), Some(pm)) = (mid2, b.prev_mid) {
            b.kyle
                .push(b.flow.counts.buy - b.flow.counts.sell, m - pm, kyle_window);
        }
        if self.kyle {
            row.kyle_lambda = b.kyle.slope();
        }
        b.prev_mid = mid2;
        // Returns over horizons: the mid at `end - h * width` is the mid at the end of the last
        // emitted bucket ending at or before it (no events in between, bucket edges align).
        if let Some(m) = mid
            && self.returns
        {
            for (h, slot) in
                RETURN_HORIZONS
                    .iter()
                    .zip([&mut row.ret_1b, &mut row.ret_10b, &mut row.ret_100b])
            {
                let target = b.end - *h as i64 * b.width;
                // The history is in time order: the last entry at or before the target.
                let at = b.history.partition_point(|(end, _)| *end <= target);
                let then = at.checked_sub(1).map(|k| b.history[k].1);
                *slot = then.map(|p| (m / p).ln());
            }
            b.history.push_back((b.end, m));
            let horizon = b.end - RETURN_HORIZONS[RETURN_HORIZONS.len() - 1] as i64 * b.width;
            while b.history.len() >= 2 && b.history[1].0 <= horizon {
                b.history.pop_front();
            }
        }
        b.active = false;
        b.flow = Flow::default();
        out.push(row);
    }
}

/// Writes a flow's sums into a row; `secs` is the bucket width for the rates.
fn fill_flow(row: &mut FeatureRow, flow: &Flow, secs: Option<f64>) {
    let f = &flow.counts;
    row.events = f.events;
    row.ofi_levels = f.ofi.map(to_f64);
    row.ofi_l1 = to_f64(f.ofi[0]);
    row.ofi_l5 = to_f64(f.ofi[..5].iter().sum());
    row.ofi_l10 = to_f64(f.ofi.iter().sum());
    row.trade_count = f.trades;
    row.crossed_events = f.crossed;
    let volume = f.buy + f.sell + f.unsigned;
    row.volume = to_f64(volume);
    row.buy_volume = to_f64(f.buy);
    row.sell_volume = to_f64(f.sell);
    row.signed_volume = to_f64(f.buy - f.sell);
    if volume > 0 {
        if f.buy + f.sell > 0 {
            row.trade_imbalance = Some(int_f64(f.buy - f.sell) / int_f64(f.buy + f.sell));
        }
        row.vwap = Some(flow.notional / row.volume);
    }
    if flow.open.is_some() {
        row.open = flow.open;
        row.high = Some(flow.high);
        row.low = Some(flow.low);
        row.close = Some(flow.close);
    }
    if let Some(s) = secs {
        row.trade_intensity = f.trades as f64 / s;
        row.add_rate = f.adds as f64 / s;
        row.cancel_rate = f.cancels as f64 / s;
    }
}

/// Ordinary least squares slope of y on x, or `None` with fewer than two points or no spread in x.
pub fn ols_slope(points: impl Iterator<Item = (f64, f64)> + Clone) -> Option<f64> {
    let (mut n, mut sx, mut sy) = (0.0, 0.0, 0.0);
    for (x, y) in points.clone() {
        n += 1.0;
        sx += x;
        sy += y;
    }
    if n < 2.0 {
        return None;
    }
    let (mx, my) = (sx / n, sy / n);
    let (mut sxx, mut sxy) = (0.0, 0.0);
    for (x, y) in points {
        sxx += (x - mx) * (x - mx);
        sxy += (x - mx) * (y - my);
    }
    (sxx > 0.0).then(|| sxy / sxx)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn natural(points: &VecDeque<(i128, i128)>) -> Vec<(f64, f64)> {
        points
            .iter()
            .map(|&(x, y)| (x as f64 / SCALE, y as f64 / (2.0 * SCALE)))
            .collect()
    }

    /// Rows of an engine over 300 one-minute bars of a zig-zag price, all flushed (bars carry no
    /// aggressor, so Kyle's lambda stays empty: the switch matters for returns here).
    fn bar_rows(engine: FeatureEngine) -> Vec<FeatureRow> {
        use flowsense_core::{Bar, Price, Size, UnixNanos};
        let mut engine = engine;
        let symbol = engine.symbol().clone();
        let mut out = Vec::new();
        for i in 0..300i64 {
            let px = Price::from_units(100 + (i * 7) % 13);
            let bar = Bar {
                open_time: UnixNanos(1_723_161_600_000_000_000 + i * 60_000_000_000),
                interval: 60_000_000_000,
                open: px,
                high: px,
                low: px,
                close: px,
                volume: Size::from_units(1 + i % 3),
                trades: None,
            };
            engine.on_event(&MarketEvent::Bar(symbol.clone(), Box::new(bar)), &mut out);
        }
        engine.finish(&mut out);
        out
    }

    #[test]
    fn switching_off_returns_or_kyle_changes_only_those_columns() {
        let spec = FeatureSpec {
            buckets: vec!["1m".parse().unwrap()],
            ..FeatureSpec::default()
        };
        let symbol = Symbol::new("ABC").unwrap();
        let full = bar_rows(FeatureEngine::new(symbol.clone(), &spec));
        let lean = bar_rows(
            FeatureEngine::new(symbol, &spec)
                .without_returns()
                .without_kyle_lambda(),
        );
        assert_eq!(full.len(), 300);
        assert!(full.iter().any(|r| r.ret_100b.is_some()));
        assert_eq!(full.len(), lean.len());
        for (f, l) in full.iter().zip(&lean) {
            assert_eq!(
                (l.ret_1b, l.ret_10b, l.ret_100b, l.kyle_lambda),
                (None, None, None, None)
            );
            let mut f = f.clone();
            (f.ret_1b, f.ret_10b, f.ret_100b, f.kyle_lambda) = (None, None, None, None);
            // As text: the rows hold NaNs (empty depth levels), which `==` never equates.
            assert_eq!(format!("{f:?}"), format!("{l:?}"));
        }
    }

    fn order(ms: i64, action: L3Action, id: u64, side: Side, px: i64, sz: i64) -> MarketEvent {
        use flowsense_core::{OrderEvent, OrderId, Price, Size, UnixNanos};
        MarketEvent::Order(
            Symbol::new("ABC").unwrap(),
            OrderEvent {
                ts: UnixNanos::from_millis(ms),
                seq: ms as u64,
                action,
                order_id: OrderId(id),
                side,
                price: Price::from_units(px),
                size: Size::from_units(sz),
            },
        )
    }

    #[test]
    fn a_new_session_starts_from_an_empty_book_whatever_the_last_one_held() {
        let spec = FeatureSpec {
            buckets: vec!["1s".parse().unwrap()],
            levels: 2,
            ..FeatureSpec::default()
        };
        let mut e = FeatureEngine::new(Symbol::new("ABC").unwrap(), &spec);
        let mut rows = Vec::new();
        // Session one: a full two-level book around 350, order ids from 1.
        for (i, (side, px)) in [
            (Side::Buy, 349),
            (Side::Buy, 348),
            (Side::Sell, 351),
            (Side::Sell, 352),
        ]
        .into_iter()
        .enumerate()
        {
            e.on_event(
                &order(i as i64, L3Action::Add, i as u64 + 1, side, px, 5),
                &mut rows,
            );
        }
        // Session two, a day later, around 330: its first orders lie beyond the last session's
        // levels (below its bids, and then asks below its bids), its ids start over.
        let day = 86_400_000;
        e.on_event(&order(day, L3Action::Clear, 0, Side::Buy, 0, 0), &mut rows);
        e.on_event(
            &order(day + 1, L3Action::Add, 1, Side::Buy, 329, 2),
            &mut rows,
        );
        e.on_event(
            &order(day + 2, L3Action::Add, 2, Side::Sell, 331, 3),
            &mut rows,
        );
        e.on_event(
            &order(day + 3, L3Action::Seed, 0, Side::Sell, 332, 4),
            &mut rows,
        );
        e.finish(&mut rows);
        assert_eq!(e.rejects(), 0);
        let last = rows.last().unwrap();
        assert_eq!((last.bid_price, last.ask_price), (Some(329.0), Some(331.0)));
        assert_eq!((last.bid_size, last.ask_size), (Some(2.0), Some(3.0)));
        assert!(!last.crossed && last.crossed_events == 0);
        // No flow across the session break: the new book's own adds only (2 + 3 + 4 at levels).
        assert_eq!(last.ofi_l1, 2.0 - 3.0);
        assert_eq!(last.ofi_levels[1], -4.0);
    }

    #[test]
    fn crossed_data_is_marked_per_bucket() {
        use flowsense_core::{DepthUpdate, Price, Size, UnixNanos};
        let spec = FeatureSpec {
            buckets: vec!["1s".parse().unwrap()],
            ..FeatureSpec::default()
        };
        let sym = Symbol::new("ABC").unwrap();
        let mut e = FeatureEngine::new(sym.clone(), &spec);
        let depth = |ms: i64, bid: i64, ask: i64, snapshot: bool| {
            MarketEvent::Depth(
                sym.clone(),
                Box::new(DepthUpdate {
                    ts: UnixNanos::from_millis(ms),
                    bids: vec![(Price::from_units(bid), Size::from_units(1))],
                    asks: vec![(Price::from_units(ask), Size::from_units(1))],
                    is_snapshot: snapshot,
                    ..Default::default()
                }),
            )
        };
        let mut rows = Vec::new();
        e.on_event(&depth(0, 99, 101, true), &mut rows);
        e.on_event(&depth(100, 102, 103, true), &mut rows); // 102 over 101? a snapshot: fine
        e.on_event(&depth(200, 104, 103, false), &mut rows); // bid 104 over the ask 103
        e.on_event(&depth(1_100, 99, 105, true), &mut rows); // the next second: crossed, then not
        e.on_event(&depth(1_200, 106, 107, false), &mut rows); // bid 106 over ask 105
        e.finish(&mut rows);
        let marks: Vec<(u64, bool)> = rows.iter().map(|r| (r.crossed_events, r.crossed)).collect();
        assert_eq!(marks, [(1, true), (1, true)]);
        let clean: Vec<_> = rows.iter().filter(|r| r.crossed_events == 0).collect();
        assert!(clean.is_empty());
    }

    #[test]
    fn kyle_window_sums_exactly_and_falls_back_past_i128() {
        let mut k = KyleWindow::default();
        let mut seed = 7u64;
        let mut next = || {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (seed >> 33) as i128 - (1 << 30)
        };
        for i in 0..500 {
            k.push(next() * 1_000, next() % 1000, 20);
            let want = ols_slope(natural(&k.points).into_iter());
            let got = k.slope();
            assert_eq!(got.is_some(), want.is_some(), "{i}");
            if let (Some(g), Some(w)) = (got, want) {
                assert!(
                    (g - w).abs() <= 1e-9 * w.abs().max(1e-12),
                    "{i}: {g} vs {w}"
                );
            }
        }
        // Sizes no market has: the squares leave i128, and the floating-point fallback answers.
        let huge = i128::MAX / 4;
        k.push(huge, 10, 20);
        assert!(k.sums.is_none());
        assert_eq!(k.slope(), ols_slope(natural(&k.points).into_iter()));
        // Once the huge point leaves the window, the sums are exact again.
        for _ in 0..20 {
            k.push(next(), next() % 1000, 20);
        }
        assert!(k.sums.is_some());
        // Identical volumes: no spread in x, no slope (two passes in floating point could give
        // noise over a rounding residue).
        let mut flat = KyleWindow::default();
        for y in 0..10 {
            flat.push(3_000_000_001, y, 100);
        }
        assert_eq!(flat.slope(), None);
    }
}
