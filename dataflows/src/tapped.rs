//! A copy-while-wanted buffer: what a sink (or the feeder's market) keeps for the service's
//! stream while someone subscribes, and nothing otherwise.

/// Items kept from the moment it is switched on until taken; switched off, it keeps nothing
/// and costs one branch per write.
///
/// ```
/// use flowsense_dataflows::tapped::Tapped;
/// let mut t = Tapped::default();
/// t.extend_from_slice(&[1, 2]); // off: not kept
/// t.set(true);
/// t.extend_from_slice(&[3, 4]);
/// t.push_with(|| 5);
/// assert_eq!(t.take(), vec![3, 4, 5]);
/// assert!(t.take().is_empty());
/// t.set(false);
/// t.push_with(|| 6);
/// assert!(t.take().is_empty());
/// ```
#[derive(Debug)]
pub struct Tapped<T> {
    kept: Option<Vec<T>>,
}

impl<T> Default for Tapped<T> {
    fn default() -> Self {
        Tapped { kept: None }
    }
}

impl<T> Tapped<T> {
    /// Starts keeping (what was kept stays), or stops and drops what was kept.
    pub fn set(&mut self, on: bool) {
        match (on, &self.kept) {
            (true, None) => self.kept = Some(Vec::new()),
            (false, _) => self.kept = None,
            _ => {}
        }
    }

    /// Whether it keeps what it is given.
    pub fn is_on(&self) -> bool {
        self.kept.is_some()
    }

    /// Keeps the item `make` builds, built only while on.
    pub fn push_with(&mut self, make: impl FnOnce() -> T) {
        if let Some(k) = &mut self.kept {
            k.push(make());
        }
    }

    /// What was kept since the last take.
    pub fn take(&mut self) -> Vec<T> {
        self.kept.as_mut().map(std::mem::take).unwrap_or_default()
    }
}

impl<T: Clone> Tapped<T> {
    /// Keeps copies of `items`, copied only while on.
    pub fn extend_from_slice(&mut self, items: &[T]) {
        if let Some(k) = &mut self.kept {
            k.extend_from_slice(items);
        }
    }
}
