//! Identifiers: symbols, venues, order ids and timestamps as distinct types.

use std::fmt;
use std::sync::Arc;

use crate::{Error, Result};

/// An instrument symbol as the venue spells it, upper-cased (`BTCUSDT`, `AAPL`).
///
/// Cheap to clone (a shared string). Only characters that are safe in a Hive partition path are
/// allowed, because the symbol becomes the `symbol=` folder of every lake table.
///
/// ```
/// use flowsense_core::Symbol;
/// let s = Symbol::new("btcusdt").unwrap();
/// assert_eq!(s.as_str(), "BTCUSDT");
/// assert!(Symbol::new("a/b").is_err());
/// ```
#[derive(Clone, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct Symbol(Arc<str>);

// Hashes the text, as the derived impl would: equal symbols (same text) hash alike.
impl std::hash::Hash for Symbol {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.0.hash(state);
    }
}

// Events of one stream share their symbol's allocation: comparing pointers first skips the
// string comparison on the hot path (every event looks its symbol up in a map).
impl PartialEq for Symbol {
    fn eq(&self, other: &Symbol) -> bool {
        Arc::ptr_eq(&self.0, &other.0) || self.0 == other.0
    }
}

impl Eq for Symbol {}

impl Symbol {
    /// Makes a symbol, upper-casing it; fails on an empty name or one with characters other than
    /// ASCII letters, digits, `_`, `-` and `.` (the first must be a letter or digit).
    pub fn new(name: &str) -> Result<Self> {
        let ok = name
            .as_bytes()
            .first()
            .is_some_and(u8::is_ascii_alphanumeric)
            && name.len() <= 64
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
        if !ok {
            return Err(Error::InvalidIdentifier(name.to_string()));
        }
        Ok(Symbol(Arc::from(name.to_ascii_uppercase())))
    }

    /// The symbol's text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// A hash that is the same in every process and run (FNV-1a of the text): dataflows route a
    /// symbol's events to worker `route() % peers`, and sources read only their own symbols.
    ///
    /// ```
    /// use flowsense_core::Symbol;
    /// assert_eq!(Symbol::new("ABC").unwrap().route(), Symbol::new("abc").unwrap().route());
    /// ```
    pub fn route(&self) -> u64 {
        fnv1a(self.0.as_bytes())
    }
}

impl fmt::Display for Symbol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Symbol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Symbol({})", self.0)
    }
}

/// A trading venue (`BINANCE`, `BINANCE_USDM`, `NASDAQ`, `SYNTH`).
///
/// ```
/// use flowsense_core::Venue;
/// assert_eq!(Venue::new("nasdaq").unwrap().as_str(), "NASDAQ");
/// ```
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct Venue(Arc<str>);

impl Venue {
    /// Makes a venue name, upper-cased; same character rules as [`Symbol`].
    pub fn new(name: &str) -> Result<Self> {
        Symbol::new(name).map(|s| Venue(s.0))
    }

    /// The venue's text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Venue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A venue's order reference, unique per symbol and day.
#[derive(
    Copy,
    Clone,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Debug,
    Default,
    serde::Serialize,
    serde::Deserialize,
)]
pub struct OrderId(pub u64);

/// Nanoseconds since the Unix epoch, UTC. Exchange time unless a field says otherwise.
///
/// ```
/// use flowsense_core::UnixNanos;
/// let t = UnixNanos::from_millis(1_723_161_256_299);
/// assert_eq!(t.0, 1_723_161_256_299_000_000);
/// assert_eq!(t.date_string(), "2024-08-08");
/// ```
#[derive(
    Copy,
    Clone,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Debug,
    Default,
    serde::Serialize,
    serde::Deserialize,
)]
pub struct UnixNanos(pub i64);

impl UnixNanos {
    /// Nanoseconds in a day.
    pub const DAY: i64 = 86_400_000_000_000;

    /// From milliseconds since the epoch.
    pub const fn from_millis(ms: i64) -> Self {
        UnixNanos(ms * 1_000_000)
    }

    /// Days since the epoch (floor), the key of the `date=` partition.
    pub const fn day(self) -> i64 {
        self.0.div_euclid(Self::DAY)
    }

    /// The UTC calendar date as `YYYY-MM-DD`.
    pub fn date_string(self) -> String {
        let (y, m, d) = civil_from_days(self.day());
        format!("{y:04}-{m:02}-{d:02}")
    }

    /// Midnight UTC of the given calendar date.
    pub fn from_ymd(y: i64, m: u32, d: u32) -> Self {
        UnixNanos(days_from_civil(y, m, d) * Self::DAY)
    }
}

/// Days since 1970-01-01 to a proleptic Gregorian (year, month, day); Howard Hinnant's algorithm.
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// A proleptic Gregorian date to days since 1970-01-01.
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = m as i64;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

/// FNV-1a, 64-bit: a stable hash for fingerprints and routing (never changes between versions,
/// processes or platforms).
///
/// ```
/// assert_eq!(flowsense_core::ids::fnv1a(b""), 0xcbf2_9ce4_8422_2325);
/// ```
pub fn fnv1a(bytes: &[u8]) -> u64 {
    fnv1a_continue(FNV_OFFSET, bytes)
}

/// Continues an FNV-1a hash `h` over more bytes.
pub fn fnv1a_continue(mut h: u64, bytes: &[u8]) -> u64 {
    for &b in bytes {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn civil_round_trip(days in -100_000i64..100_000) {
            let (y, m, d) = civil_from_days(days);
            prop_assert_eq!(days_from_civil(y, m, d), days);
        }
    }

    #[test]
    fn symbols_are_path_safe() {
        assert!(Symbol::new("").is_err());
        assert!(Symbol::new("..").is_err());
        assert!(Symbol::new("date=x").is_err());
        assert_eq!(Symbol::new("btcusd_perp").unwrap().as_str(), "BTCUSD_PERP");
    }
}
