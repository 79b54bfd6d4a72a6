//! Per-symbol state of an operator: one value per symbol, found by a hash of the symbol.

use flowsense_core::Symbol;
use rustc_hash::FxHashMap;

/// One `T` per symbol (a feature engine, a trader), made on the symbol's first event.
///
/// A hash of a short string beats walking a tree of string comparisons on every event; the
/// values sit in a vector, so iterating them is a walk over memory.
///
/// ```
/// use flowsense_core::Symbol;
/// use flowsense_operators::by_symbol::BySymbol;
/// let mut counts: BySymbol<u32> = BySymbol::default();
/// let (a, b) = (Symbol::new("A").unwrap(), Symbol::new("B").unwrap());
/// *counts.get_or_insert_with(&b, |_| 0) += 1;
/// *counts.get_or_insert_with(&a, |_| 0) += 1;
/// *counts.get_or_insert_with(&b, |_| 0) += 1;
/// let sorted: Vec<u32> = counts.sorted_mut().into_iter().map(|c| *c).collect();
/// assert_eq!(sorted, vec![1, 2]); // A, then B
/// ```
#[derive(Debug)]
pub struct BySymbol<T> {
    index: FxHashMap<Symbol, usize>,
    items: Vec<(Symbol, T)>,
}

impl<T> Default for BySymbol<T> {
    fn default() -> Self {
        BySymbol {
            index: FxHashMap::default(),
            items: Vec::new(),
        }
    }
}

impl<T> BySymbol<T> {
    /// The symbol's value, made by `make` on first use.
    pub fn get_or_insert_with(
        &mut self,
        symbol: &Symbol,
        make: impl FnOnce(&Symbol) -> T,
    ) -> &mut T {
        let i = match self.index.get(symbol) {
            Some(&i) => i,
            None => {
                self.items.push((symbol.clone(), make(symbol)));
                self.index.insert(symbol.clone(), self.items.len() - 1);
                self.items.len() - 1
            }
        };
        &mut self.items[i].1
    }

    /// The symbol's value, if it has one.
    pub fn get_mut(&mut self, symbol: &Symbol) -> Option<&mut T> {
        let i = *self.index.get(symbol)?;
        Some(&mut self.items[i].1)
    }

    /// Every value, in the order their symbols first came.
    pub fn values_mut(&mut self) -> impl Iterator<Item = &mut T> {
        self.items.iter_mut().map(|(_, t)| t)
    }

    /// Every value, by symbol: an order that does not depend on arrival, for output that must
    /// be the same on every run.
    pub fn sorted_mut(&mut self) -> Vec<&mut T> {
        let mut v: Vec<&mut (Symbol, T)> = self.items.iter_mut().collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v.into_iter().map(|(_, t)| t).collect()
    }

    /// How many symbols.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// True before the first symbol.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
}
