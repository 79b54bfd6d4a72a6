//! VPIN, the volume-synchronized probability of informed trading (Easley, Lopez de Prado and
//! O'Hara 2012), with trades classified by their recorded aggressor instead of bulk volume
//! classification: our data says which side crossed the spread.
//!
//! Trades fill volume buckets of a fixed size `V` (a trade that overflows a bucket spills into the
//! next); VPIN is the mean of `|buy - sell| / V` over the last `window` full buckets.

use std::collections::VecDeque;

/// Trades used to size the buckets when no size is given.
pub const WARMUP_TRADES: usize = 100;
/// Bucket size as a multiple of the warm-up trades' mean size.
pub const AUTO_MULTIPLE: f64 = 20.0;

/// Running VPIN of one symbol.
///
/// ```
/// use flowsense_operators::vpin::Vpin;
/// let mut v = Vpin::new(Some(10.0), 2);
/// v.trade(10.0, true);           // bucket 1: all buys, |10 - 0| / 10 = 1
/// assert_eq!(v.value(), Some(1.0));
/// v.trade(5.0, true);
/// v.trade(5.0, false);           // bucket 2: balanced, 0
/// assert_eq!(v.value(), Some(0.5));
/// ```
#[derive(Clone, Debug)]
pub struct Vpin {
    size: Option<f64>,
    window: usize,
    warmup: Vec<(f64, bool)>,
    buy: f64,
    sell: f64,
    full: VecDeque<f64>,
}

impl Vpin {
    /// VPIN over `window` buckets of `size` (or of an automatic size; see [`AUTO_MULTIPLE`]).
    pub fn new(size: Option<f64>, window: usize) -> Self {
        Vpin {
            size,
            window: window.max(1),
            warmup: Vec::new(),
            buy: 0.0,
            sell: 0.0,
            full: VecDeque::with_capacity(window + 1),
        }
    }

    /// The bucket size, once known.
    pub fn bucket_size(&self) -> Option<f64> {
        self.size
    }

    /// Adds one trade.
    pub fn trade(&mut self, size: f64, buy: bool) {
        let Some(v) = self.size else {
            self.warmup.push((size, buy));
            if self.warmup.len() == WARMUP_TRADES {
                let mean = self.warmup.iter().map(|t| t.0).sum::<f64>() / WARMUP_TRADES as f64;
                self.size = Some(AUTO_MULTIPLE * mean);
                for (s, b) in std::mem::take(&mut self.warmup) {
                    self.trade(s, b);
                }
            }
            return;
        };
        let mut left = size;
        while left > 0.0 {
            let room = v - self.buy - self.sell;
            let take = left.min(room);
            if buy {
                self.buy += take;
            } else {
                self.sell += take;
            }
            left -= take;
            if self.buy + self.sell >= v * (1.0 - 1e-12) {
                self.full.push_back((self.buy - self.sell).abs() / v);
                if self.full.len() > self.window {
                    self.full.pop_front();
                }
                self.buy = 0.0;
                self.sell = 0.0;
            }
            if left <= v * 1e-12 {
                break;
            }
        }
    }

    /// Mean imbalance over the full buckets so far (at most `window`), or `None` before the first.
    pub fn value(&self) -> Option<f64> {
        (!self.full.is_empty()).then(|| self.full.iter().sum::<f64>() / self.full.len() as f64)
    }
}
