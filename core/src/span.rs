//! A span of time (bucket widths, latencies, windows), as job files write it.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::{Error, Result};

/// A span of time in nanoseconds, written `500us`, `100ms`, `1s`, `1m`, `1h` or `1d`.
///
/// ```
/// use flowsense_core::job::Span;
/// let s: Span = "100ms".parse().unwrap();
/// assert_eq!(s.nanos(), 100_000_000);
/// assert_eq!("60s".parse::<Span>().unwrap().to_string(), "1m");
/// assert!("10 parsecs".parse::<Span>().is_err());
/// ```
#[derive(Copy, Clone, PartialEq, Eq, Hash, Debug, PartialOrd, Ord)]
pub struct Span(pub u64);

impl Span {
    /// A span of whole milliseconds.
    pub const fn from_millis(ms: u64) -> Span {
        Span(ms * 1_000_000)
    }

    /// The span in nanoseconds.
    pub const fn nanos(self) -> u64 {
        self.0
    }

    /// The span in seconds.
    pub fn seconds(self) -> f64 {
        self.0 as f64 * 1e-9
    }
}

const UNITS: [(&str, u64); 7] = [
    ("d", 86_400_000_000_000),
    ("h", 3_600_000_000_000),
    ("m", 60_000_000_000),
    ("s", 1_000_000_000),
    ("ms", 1_000_000),
    ("us", 1_000),
    ("ns", 1),
];

impl FromStr for Span {
    type Err = Error;

    fn from_str(s: &str) -> Result<Span> {
        let t = s.trim();
        let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
        let (num, unit) = t.split_at(split);
        let bad = || Error::InvalidJob(format!("span {s:?}: write e.g. 100ms, 1s, 10s, 1m"));
        let n: u64 = num.parse().map_err(|_| bad())?;
        let scale = UNITS
            .iter()
            .find(|(u, _)| *u == unit.trim())
            .map(|(_, k)| *k)
            .ok_or_else(bad)?;
        n.checked_mul(scale).map(Span).ok_or_else(bad)
    }
}

impl fmt::Display for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0 == 0 {
            return f.write_str("0s");
        }
        let (unit, scale) = UNITS
            .iter()
            .find(|(_, k)| self.0.is_multiple_of(*k))
            .expect("ns divides everything");
        write!(f, "{}{unit}", self.0 / scale)
    }
}

impl Serialize for Span {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Span {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Span, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}
