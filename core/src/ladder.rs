//! One side of an L2 book: the levels near the touch on a ladder of tick-spaced slots, the rest in
//! a sorted map.
//!
//! Binance diffs touch levels hundreds deep in books of thousands (BENCHMARKS.md, ingest), where
//! a `BTreeMap` pays a descent of several nodes on every update and on every look at the touch.
//! A ladder finds a price's slot by a subtraction and an exact division by the tick (a multiply,
//! see [`Divisor`]), and keeps the best slot's index,
//! so an update, a lookup and the touch are O(1); only removing the best level scans, towards
//! worse prices, to the next filled slot (a few slots near the touch, where books are dense).
//!
//! The tick is not given: it is learnt as the greatest common divisor of the gaps between the
//! prices seen, so the first levels go to the map until a few are known, and a price off the grid
//! makes the ladder finer. The ladder covers a window of prices (at most [`MAX_SLOTS`] ticks),
//! grown by doubling to span the levels seen and moved when the touch leaves it; levels outside
//! the window stay in the map, whose keys then all lie below the window or at or above its top.
//! Whatever the prices, every operation gives what a sorted map would: only speed depends on them.

use std::collections::BTreeMap;

/// Most slots a side's ladder has: 2^17 ticks (1 MiB of sizes).
const MAX_SLOTS: usize = 1 << 17;

/// Fewest slots a ladder has.
const MIN_SLOTS: usize = 64;

/// Levels a side holds before its ladder is built (their gaps give the first tick).
const FIRST_LEVELS: usize = 4;

/// Levels by raw price, raw sizes; sizes are positive (a zero or negative size removes).
#[derive(Clone, Default)]
pub(crate) struct Ladder {
    /// Bids (the best is the highest price) or asks (the lowest).
    bids: bool,
    /// Raw price units between neighbouring slots; zero before the ladder is built.
    tick: i64,
    /// Raw price of slot 0.
    base: i64,
    /// Raw price span of the slots (`slots.len() * tick`).
    span: i64,
    /// Divides by `tick`.
    div: Divisor,
    /// Raw size at each slot's price; zero for no level.
    slots: Vec<i64>,
    /// Filled slots.
    filled: usize,
    /// The best filled slot, when `filled > 0`.
    best: usize,
    /// Levels off the ladder: below `base` or at or above `top()` (all of them before it is built).
    far: BTreeMap<i64, i64>,
    /// Of `far`, the levels at or above `top()`.
    far_above: usize,
    /// The prices are too far apart for a ladder of `i64` arithmetic: the map holds everything.
    no_ladder: bool,
}

/// Where a price goes.
enum Place {
    Slot(usize),
    Far,
    /// Between two slots: the ladder must become finer.
    OffGrid,
}

impl Ladder {
    /// An empty side.
    pub(crate) fn new(bids: bool) -> Self {
        Ladder {
            bids,
            ..Ladder::default()
        }
    }

    /// Raw price just past the last slot.
    fn top(&self) -> i64 {
        self.base + self.span
    }

    /// Where a price goes. Only prices within the window are checked against the grid: those
    /// outside go to the map whatever they are, and a later layout that takes them in finds a
    /// tick dividing every gap (see [`rebuild`](Self::rebuild)).
    #[inline]
    fn place(&self, price: i64) -> Place {
        match price.checked_sub(self.base) {
            Some(d) if (0..self.span).contains(&d) => match self.div.exact(d as u64) {
                Some(i) => Place::Slot(i as usize),
                None => Place::OffGrid,
            },
            _ => Place::Far,
        }
    }

    /// True when slot `a` holds a better price than slot `b`.
    fn better(&self, a: usize, b: usize) -> bool {
        if self.bids { a > b } else { a < b }
    }

    /// Size at a price; zero when there is no level.
    pub(crate) fn get(&self, price: i64) -> i64 {
        match self.place(price) {
            Place::Slot(i) => self.slots[i],
            Place::Far | Place::OffGrid => self.far.get(&price).copied().unwrap_or(0),
        }
    }

    /// Sets a level (a size of zero or less removes it) and returns its previous size.
    pub(crate) fn replace(&mut self, price: i64, size: i64) -> i64 {
        match self.place(price) {
            Place::Slot(i) => self.set_slot(i, size),
            Place::OffGrid if size <= 0 => 0,
            Place::OffGrid => {
                let tick = gcd(self.tick, price - self.base);
                self.rebuild(tick, price);
                self.replace(price, size)
            }
            Place::Far => {
                let old = self.set_far(price, size);
                if size > 0 {
                    self.after_far_insert(price);
                }
                old
            }
        }
    }

    fn set_slot(&mut self, i: usize, size: i64) -> i64 {
        let old = self.slots[i];
        let new = size.max(0);
        self.slots[i] = new;
        match (old > 0, new > 0) {
            (false, true) => {
                self.filled += 1;
                if self.filled == 1 || self.better(i, self.best) {
                    self.best = i;
                }
            }
            (true, false) => {
                self.filled -= 1;
                if i == self.best && self.filled > 0 {
                    self.best = self.next_filled(i);
                }
            }
            _ => {}
        }
        old
    }

    /// The next filled slot from `i` towards worse prices; there is one (`filled > 0`).
    fn next_filled(&self, i: usize) -> usize {
        let found = if self.bids {
            self.slots[..i].iter().rposition(|&s| s > 0)
        } else {
            self.slots[i + 1..]
                .iter()
                .position(|&s| s > 0)
                .map(|j| i + 1 + j)
        };
        found.expect("a filled slot remains")
    }

    fn set_far(&mut self, price: i64, size: i64) -> i64 {
        let above = self.tick != 0 && price >= self.top();
        let old = if size > 0 {
            self.far.insert(price, size)
        } else {
            self.far.remove(&price)
        };
        if above {
            match (old.is_some(), size > 0) {
                (false, true) => self.far_above += 1,
                (true, false) => self.far_above -= 1,
                _ => {}
            }
        }
        old.unwrap_or(0)
    }

    /// After a new level went to the map: builds the ladder once enough levels give a tick,
    /// grows it until it has the most slots, and moves it when the touch has left it.
    fn after_far_insert(&mut self, price: i64) {
        if self.no_ladder {
            return;
        }
        if self.tick == 0 {
            if self.far.len() >= FIRST_LEVELS {
                let mut keys = self.far.keys();
                let first = *keys.next().expect("levels");
                let tick = keys.try_fold(0, |t, &k| Some(gcd(t, k.checked_sub(first)?)));
                match tick {
                    Some(tick) if tick > 0 => {
                        let best = self.best_price().expect("levels").0;
                        self.rebuild(tick, best);
                    }
                    _ => self.no_ladder = true,
                }
            }
            return;
        }
        let touch = self.filled == 0 || {
            let best = self.base + self.best as i64 * self.tick;
            if self.bids {
                price > best
            } else {
                price < best
            }
        };
        // A ladder short of the largest grows (at most a dozen times: it doubles, or goes
        // straight to the largest when the levels span more).
        if self.slots.len() < MAX_SLOTS || touch {
            let best = self.best_price().expect("levels").0;
            self.rebuild(self.tick, best);
        }
    }

    /// Lays the ladder out again with `tick`, over the span of every level if it fits in
    /// [`MAX_SLOTS`], else over the window centred on `around`.
    fn rebuild(&mut self, tick: i64, around: i64) {
        let levels: Vec<(i64, i64)> = self.ascending().collect();
        let lo = levels.first().map_or(around, |l| l.0).min(around);
        let hi = levels.last().map_or(around, |l| l.0).max(around);
        // Levels that went to the map while outside the window may lie between its slots.
        let tick = std::iter::once(around)
            .chain(levels.iter().map(|l| l.0))
            .try_fold(tick, |t, p| Some(gcd(t, p.checked_sub(lo)?)))
            .filter(|&t| t > 0);
        match tick.and_then(|tick| Some((tick, layout(lo, hi, around, tick)?))) {
            Some((tick, (base, len))) => {
                self.base = base;
                self.tick = tick;
                self.span = len as i64 * tick;
                self.div = Divisor::new(tick);
                self.slots.clear();
                self.slots.resize(len, 0);
            }
            None => {
                self.no_ladder = true;
                self.base = 0;
                self.tick = 0;
                self.span = 0;
                self.slots = Vec::new();
            }
        }
        self.filled = 0;
        self.far.clear();
        self.far_above = 0;
        for (p, s) in levels {
            match self.place(p) {
                Place::Slot(i) => {
                    self.set_slot(i, s);
                }
                Place::Far | Place::OffGrid => {
                    self.set_far(p, s);
                }
            }
        }
    }

    /// Removes every level (the ladder keeps its layout).
    pub(crate) fn clear(&mut self) {
        self.slots.iter_mut().for_each(|s| *s = 0);
        self.filled = 0;
        self.far.clear();
        self.far_above = 0;
        self.no_ladder = false;
    }

    /// Number of levels.
    pub(crate) fn len(&self) -> usize {
        self.filled + self.far.len()
    }

    /// The best level's raw price and size.
    pub(crate) fn best_price(&self) -> Option<(i64, i64)> {
        let far_better = if self.bids {
            self.far_above > 0
        } else {
            self.far.len() > self.far_above
        };
        if !far_better && self.filled > 0 {
            let i = self.best;
            return Some((self.base + i as i64 * self.tick, self.slots[i]));
        }
        if self.bids {
            self.far.iter().next_back()
        } else {
            self.far.iter().next()
        }
        .map(|(p, s)| (*p, *s))
    }

    /// The slots that can hold levels: none when the ladder is empty, for bids none above the
    /// best, for asks none below it. Walks from the touch start at the best slot instead of
    /// crossing the empty half of the window (up to 2^16 slots).
    fn live(&self) -> std::ops::Range<usize> {
        match (self.filled, self.bids) {
            (0, _) => 0..0,
            (_, true) => 0..self.best + 1,
            (_, false) => self.best..self.slots.len(),
        }
    }

    /// Levels from the lowest price up (the best first for asks).
    pub(crate) fn ascending(&self) -> impl Iterator<Item = (i64, i64)> + '_ {
        let (base, top, tick) = (self.base, self.top(), self.tick);
        let below = self.far.range(..base);
        let live = self.live();
        let slots = self.slots[live.clone()].iter().enumerate();
        let ladder = slots.filter(|(_, s)| **s > 0);
        let ladder = ladder.map(move |(i, s)| (base + (live.start + i) as i64 * tick, *s));
        let above = self.far.range(top.max(base)..);
        let above = above.filter(move |_| tick != 0);
        let unbuilt = self.far.iter().filter(move |_| tick == 0);
        let far = |(p, s): (&i64, &i64)| (*p, *s);
        (below.filter(move |_| tick != 0).map(far))
            .chain(ladder)
            .chain(above.map(far))
            .chain(unbuilt.map(far))
    }

    /// Levels from the highest price down (the best first for bids).
    pub(crate) fn descending(&self) -> impl Iterator<Item = (i64, i64)> + '_ {
        let (base, top, tick) = (self.base, self.top(), self.tick);
        let above = self.far.range(top.max(base)..).rev();
        let live = self.live();
        let slots = self.slots[live.clone()].iter().enumerate().rev();
        let ladder = slots.filter(|(_, s)| **s > 0);
        let ladder = ladder.map(move |(i, s)| (base + (live.start + i) as i64 * tick, *s));
        let below = self.far.range(..base).rev();
        let unbuilt = self.far.iter().rev().filter(move |_| tick == 0);
        let far = |(p, s): (&i64, &i64)| (*p, *s);
        (above.filter(move |_| tick != 0).map(far))
            .chain(ladder)
            .chain(below.filter(move |_| tick != 0).map(far))
            .chain(unbuilt.map(far))
    }
}

/// Slot 0's price and the number of slots for levels from `lo` to `hi` (which hold `around`) a
/// `tick` apart: twice their span, or the [`MAX_SLOTS`] centred on `around` when that is too
/// few; `None` when a price of the layout would not fit in an `i64`.
fn layout(lo: i64, hi: i64, around: i64, tick: i64) -> Option<(i64, usize)> {
    let span = usize::try_from(hi.checked_sub(lo)? / tick)
        .ok()?
        .checked_add(1)?;
    let len = (span.min(MAX_SLOTS) * 2)
        .next_power_of_two()
        .clamp(MIN_SLOTS, MAX_SLOTS);
    let ticks = |n: usize| i64::try_from(n).ok()?.checked_mul(tick);
    let base = if span <= len {
        lo.checked_sub(ticks((len - span) / 2)?)?
    } else {
        around.checked_sub(ticks(len / 2)?)?
    };
    base.checked_add(ticks(len)?)?;
    Some((base, len))
}

/// Exact division by a tick without a divide instruction. The tick is `2^shift` times an odd
/// number, and dividing a multiple of an odd number by it is multiplying by its inverse modulo
/// 2^64; for any other dividend the product exceeds `limit` (Granlund and Montgomery, 1994).
#[derive(Clone, Copy, Debug, Default)]
struct Divisor {
    shift: u32,
    inverse: u64,
    limit: u64,
}

impl Divisor {
    /// For a positive tick.
    fn new(tick: i64) -> Self {
        let tick = tick as u64;
        let shift = tick.trailing_zeros();
        let odd = tick >> shift;
        // Newton's iteration, from 3 correct bits (an odd number is its own inverse modulo 8),
        // doubles them each step: 6, 12, 24, 48, 96.
        let mut inverse = odd;
        for _ in 0..5 {
            inverse = inverse.wrapping_mul(2u64.wrapping_sub(odd.wrapping_mul(inverse)));
        }
        Divisor {
            shift,
            inverse,
            limit: u64::MAX / odd,
        }
    }

    /// `d / tick` when the tick divides `d`, else `None`.
    #[inline]
    fn exact(&self, d: u64) -> Option<u64> {
        if d.trailing_zeros() < self.shift {
            return None;
        }
        let q = (d >> self.shift).wrapping_mul(self.inverse);
        (q <= self.limit).then_some(q)
    }
}

/// Greatest common divisor of two raw prices' gap; `gcd(0, x)` is `|x|`.
fn gcd(a: i64, b: i64) -> i64 {
    let (mut a, mut b) = (a.unsigned_abs(), b.unsigned_abs());
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a as i64
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Checks a side against a sorted map given the same operations.
    fn check(bids: bool, ops: &[(i64, i64)]) {
        let mut ladder = Ladder::new(bids);
        let mut model: BTreeMap<i64, i64> = BTreeMap::new();
        for &(p, s) in ops {
            let old = ladder.replace(p, s);
            let want = if s > 0 {
                model.insert(p, s)
            } else {
                model.remove(&p)
            };
            assert_eq!(old, want.unwrap_or(0), "previous size at {p}");
            assert_eq!(ladder.len(), model.len());
            let best = if bids {
                model.iter().next_back()
            } else {
                model.iter().next()
            };
            assert_eq!(ladder.best_price(), best.map(|(p, s)| (*p, *s)));
            assert_eq!(ladder.get(p), model.get(&p).copied().unwrap_or(0));
        }
        let up: Vec<(i64, i64)> = model.iter().map(|(p, s)| (*p, *s)).collect();
        assert_eq!(ladder.ascending().collect::<Vec<_>>(), up);
        let down: Vec<(i64, i64)> = up.iter().rev().copied().collect();
        assert_eq!(ladder.descending().collect::<Vec<_>>(), down);
        ladder.clear();
        assert_eq!((ladder.len(), ladder.best_price()), (0, None));
        assert_eq!(ladder.ascending().count(), 0);
    }

    #[test]
    fn the_touch_follows_removals_and_the_ladder_moves_with_the_price() {
        // A tick of 10: a book around 1000, then the price runs far off and back.
        let mut ops: Vec<(i64, i64)> = (0..50).map(|i| (1000 - 10 * i, 1 + i)).collect();
        ops.extend((0..50).map(|i| (1000 - 10 * i, 0)));
        ops.extend((0..200).map(|i| (5_000_000 + 10 * i, 7)));
        ops.push((10, 3));
        ops.push((5_000_005, 1)); // off the grid: the tick becomes 5
        ops.extend((0..200).map(|i| (5_000_000 + 10 * i, 0)));
        check(true, &ops);
        check(false, &ops);
    }

    #[test]
    fn one_level_far_off_makes_the_ladder_as_large_as_it_goes_around_the_touch() {
        let mut ladder = Ladder::new(false);
        for i in 0..10 {
            ladder.replace(1000 + i, 1);
        }
        let small = ladder.slots.len();
        ladder.replace(1000 + (1 << 40), 1);
        assert!(small < MAX_SLOTS);
        assert_eq!(ladder.slots.len(), MAX_SLOTS);
        assert!(matches!(ladder.place(1000 + 5000), Place::Slot(_)));
        assert_eq!(ladder.best_price(), Some((1000, 1)));
        // The widest span a layout can be asked for.
        assert_eq!(layout(0, i64::MAX, 0, 1).map(|l| l.1), Some(MAX_SLOTS));
    }

    #[test]
    fn prices_too_far_apart_for_a_ladder_stay_in_the_map() {
        let ops = [
            (i64::MIN + 5, 1),
            (i64::MAX - 3, 2),
            (0, 3),
            (7, 4),
            (i64::MAX - 3, 0),
            (14, 5),
            (i64::MIN + 5, 0),
            (21, 1),
            (28, 1),
            (-7, 1),
        ];
        check(true, &ops);
        check(false, &ops);
    }

    proptest! {
        #[test]
        fn exact_division_by_a_tick_is_division(tick in 1i64..1 << 40, d in 0u64..1 << 50, k in 0u64..1 << 20) {
            let div = Divisor::new(tick);
            let t = tick as u64;
            let want = (d % t == 0).then_some(d / t);
            prop_assert_eq!(div.exact(d), want);
            prop_assert_eq!(div.exact(k * t), Some(k));
        }

        #[test]
        fn a_side_is_a_sorted_map(
            ops in prop::collection::vec((0i64..400, 0i64..4), 1..300),
            scale in prop::sample::select(vec![1i64, 7, 1_000_000_000]),
            far in prop::sample::select(vec![0i64, 1 << 12, 1 << 20, 1 << 30]),
            bids: bool,
        ) {
            // Prices on a grid, some a long way off (beyond any ladder), a few between its
            // points, sizes often zero.
            let ops: Vec<(i64, i64)> = ops
                .iter()
                .map(|&(p, s)| {
                    let off = if p % 11 == 0 { 3 } else { 0 };
                    let far = if p % 37 == 0 { far * scale } else { 0 };
                    (p * scale + far + off, s)
                })
                .collect();
            check(bids, &ops);
        }
    }
}
