//! Exact fixed-point prices and sizes (nine decimal places in an `i64`).

use std::fmt;
use std::str::FromStr;

use crate::{Error, Result};

/// Decimal places of every fixed-point number.
pub const SCALE_DIGITS: u32 = 9;
/// `10^SCALE_DIGITS`: raw units per whole unit.
pub const SCALE: i64 = 1_000_000_000;

/// Parses a plain decimal (`-12.345`, `0.006`, `7`) into raw billionths, exactly.
///
/// Rejects exponents, `NaN`, `inf`, more than nine decimals that are not zeros, and overflow.
/// Works on bytes so readers can call it on a slice of a line without building a `String`.
///
/// ```
/// use flowsense_core::num::parse_fixed;
/// assert_eq!(parse_fixed(b"0.006"), Ok(6_000_000));
/// assert_eq!(parse_fixed(b"61800.30000000"), Ok(61_800_300_000_000));
/// assert!(parse_fixed(b"NaN").is_err());
/// assert!(parse_fixed(b"1e5").is_err());
/// ```
pub fn parse_fixed(text: &[u8]) -> std::result::Result<i64, &'static str> {
    let (neg, digits) = match text.first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        Some(_) => (false, text),
        None => return Err("empty"),
    };
    if digits.is_empty() {
        return Err("no digits");
    }
    let raw = match parse_short(digits) {
        Some(raw) => raw,
        None => parse_digits(digits)?,
    };
    Ok(if neg { -raw } else { raw })
}

/// The general loop of [`parse_fixed`], with overflow checks: unsigned digits and a dot.
fn parse_digits(digits: &[u8]) -> std::result::Result<i64, &'static str> {
    let mut int: i64 = 0;
    let mut frac: i64 = 0;
    let mut frac_digits = 0u32;
    let mut seen_dot = false;
    let mut any_digit = false;
    for &b in digits {
        match b {
            b'0'..=b'9' => {
                any_digit = true;
                let d = (b - b'0') as i64;
                if seen_dot {
                    if frac_digits < SCALE_DIGITS {
                        frac = frac * 10 + d;
                        frac_digits += 1;
                    } else if d != 0 {
                        return Err("more than nine decimal places");
                    }
                } else {
                    int = int
                        .checked_mul(10)
                        .and_then(|v| v.checked_add(d))
                        .ok_or("overflow")?;
                }
            }
            b'.' if !seen_dot => seen_dot = true,
            _ => return Err("not a plain decimal number"),
        }
    }
    if !any_digit {
        return Err("no digits");
    }
    int.checked_mul(SCALE)
        .and_then(|v| v.checked_add(frac * POW10[(SCALE_DIGITS - frac_digits) as usize]))
        .ok_or("overflow")
}

/// Powers of ten up to the scale, for the fraction's missing places.
const POW10: [i64; SCALE_DIGITS as usize + 1] = {
    let mut t = [1i64; SCALE_DIGITS as usize + 1];
    let mut i = 1;
    while i < t.len() {
        t[i] = t[i - 1] * 10;
        i += 1;
    }
    t
};

/// The common case of [`parse_fixed`] without overflow checks: at most nine integer digits and
/// nine decimals, which cannot overflow. `None` sends anything else to the general loop.
fn parse_short(digits: &[u8]) -> Option<i64> {
    match parse_fixed_prefix(digits) {
        (value, len) if len == digits.len() => value,
        _ => None,
    }
}

/// The plain unsigned decimal at the start of `bytes` (digits, then maybe a dot and digits) and
/// its length, for a parser that finds where a number ends as it reads it (a JSON string of
/// digits, read without a second pass over them). The value is `None` where [`parse_fixed`]
/// must decide, by its general path: more than nine integer digits or nine decimals, or no
/// digit. When the value is `Some`, it is what [`parse_fixed`] makes of those `len` bytes.
///
/// ```
/// use flowsense_core::num::{parse_fixed, parse_fixed_prefix};
/// assert_eq!(parse_fixed_prefix(b"61837.63000000\""), (Some(61_837_630_000_000), 14));
/// assert_eq!(parse_fixed(b"61837.63000000"), Ok(61_837_630_000_000));
/// assert_eq!(parse_fixed_prefix(b"-1"), (None, 0));
/// assert_eq!(parse_fixed_prefix(b"1234567890.5"), (None, 12));
/// ```
#[inline]
pub fn parse_fixed_prefix(bytes: &[u8]) -> (Option<i64>, usize) {
    // One pass: the integer digits, then (after a dot) the decimals, into one number. Wrapping
    // arithmetic, because the lengths are checked only after the digits are read (too long a
    // number is refused then, whatever it wrapped to).
    let n = bytes.len();
    let mut v: i64 = 0;
    let mut i = 0;
    while i < n {
        let d = bytes[i].wrapping_sub(b'0');
        if d > 9 {
            break;
        }
        v = v.wrapping_mul(10).wrapping_add(i64::from(d));
        i += 1;
    }
    let int_len = i;
    if i < n && bytes[i] == b'.' {
        i += 1;
        while i < n {
            let d = bytes[i].wrapping_sub(b'0');
            if d > 9 {
                break;
            }
            v = v.wrapping_mul(10).wrapping_add(i64::from(d));
            i += 1;
        }
    }
    let frac_len = (i - int_len).saturating_sub(1);
    if int_len > 9 || frac_len > SCALE_DIGITS as usize || (int_len == 0 && frac_len == 0) {
        return (None, i);
    }
    (Some(v * POW10[SCALE_DIGITS as usize - frac_len]), i)
}

fn fmt_fixed(raw: i64, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    let sign = if raw < 0 { "-" } else { "" };
    let abs = raw.unsigned_abs();
    let int = abs / SCALE as u64;
    let frac = abs % SCALE as u64;
    if frac == 0 {
        write!(f, "{sign}{int}")
    } else {
        let s = format!("{frac:09}");
        write!(f, "{sign}{int}.{}", s.trim_end_matches('0'))
    }
}

macro_rules! fixed_point {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Copy, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Default, serde::Serialize, serde::Deserialize)]
        pub struct $name(i64);

        impl $name {
            /// Zero.
            pub const ZERO: $name = $name(0);

            /// From raw billionths.
            pub const fn from_raw(raw: i64) -> Self {
                $name(raw)
            }

            /// Raw billionths.
            pub const fn raw(self) -> i64 {
                self.0
            }

            /// From a whole number of units.
            pub const fn from_units(units: i64) -> Self {
                $name(units * SCALE)
            }

            /// From an integer count of `10^-decimals` units (LOBSTER prices are `decimals = 4`).
            ///
            /// Panics if `decimals` exceeds nine.
            pub const fn from_scaled(value: i64, decimals: u32) -> Self {
                assert!(decimals <= SCALE_DIGITS);
                $name(value * 10i64.pow(SCALE_DIGITS - decimals))
            }

            /// As an `f64`, for statistics and display; not for comparisons.
            pub fn as_f64(self) -> f64 {
                self.0 as f64 / SCALE as f64
            }

            /// From an `f64`, rounded to the nearest billionth; `None` if not finite or out of range.
            pub fn from_f64(v: f64) -> Option<Self> {
                let r = (v * SCALE as f64).round();
                (r.is_finite() && r.abs() < i64::MAX as f64).then(|| $name(r as i64))
            }

            /// Parses a plain decimal from bytes, exactly.
            pub fn parse_bytes(text: &[u8]) -> Result<Self> {
                parse_fixed(text).map($name).map_err(|why| Error::InvalidDecimal {
                    text: String::from_utf8_lossy(text).into_owned(),
                    why,
                })
            }

            /// True when strictly greater than zero.
            pub const fn is_positive(self) -> bool {
                self.0 > 0
            }

            /// Checked addition.
            pub fn checked_add(self, other: Self) -> Option<Self> {
                self.0.checked_add(other.0).map($name)
            }

            /// Checked subtraction.
            pub fn checked_sub(self, other: Self) -> Option<Self> {
                self.0.checked_sub(other.0).map($name)
            }

            /// Saturating subtraction.
            pub fn saturating_sub(self, other: Self) -> Self {
                $name(self.0.saturating_sub(other.0))
            }
        }

        impl FromStr for $name {
            type Err = Error;
            fn from_str(s: &str) -> Result<Self> {
                Self::parse_bytes(s.as_bytes())
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt_fixed(self.0, f)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}(", stringify!($name))?;
                fmt_fixed(self.0, f)?;
                write!(f, ")")
            }
        }

        impl std::ops::Add for $name {
            type Output = $name;
            fn add(self, o: $name) -> $name {
                $name(self.0 + o.0)
            }
        }

        impl std::ops::Sub for $name {
            type Output = $name;
            fn sub(self, o: $name) -> $name {
                $name(self.0 - o.0)
            }
        }

        impl std::ops::AddAssign for $name {
            fn add_assign(&mut self, o: $name) {
                self.0 += o.0;
            }
        }

        impl std::ops::SubAssign for $name {
            fn sub_assign(&mut self, o: $name) {
                self.0 -= o.0;
            }
        }
    };
}

fixed_point!(
    /// A price in the instrument's quote currency, exact to nine decimal places.
    ///
    /// ```
    /// use flowsense_core::Price;
    /// let lobster = Price::from_scaled(5_853_300, 4); // LOBSTER: dollars x 10000
    /// assert_eq!(lobster, "585.33".parse().unwrap());
    /// ```
    Price
);

fixed_point!(
    /// A quantity (shares, contracts or coins), exact to nine decimal places.
    ///
    /// ```
    /// use flowsense_core::Size;
    /// let s: Size = "2.507".parse().unwrap();
    /// assert_eq!(s + Size::from_units(1), "3.507".parse().unwrap());
    /// ```
    Size
);

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rstest::rstest;

    #[rstest]
    #[case(b"0", 0)]
    #[case(b"1", SCALE)]
    #[case(b"-0.5", -SCALE / 2)]
    #[case(b".5", SCALE / 2)]
    #[case(b"5.", 5 * SCALE)]
    #[case(b"0.000000001", 1)]
    #[case(b"0.0000000010", 1)]
    #[case(b"61800.30000000", 61_800_300_000_000)]
    fn parses(#[case] text: &[u8], #[case] raw: i64) {
        assert_eq!(parse_fixed(text), Ok(raw));
    }

    #[rstest]
    #[case(b"")]
    #[case(b"-")]
    #[case(b".")]
    #[case(b"NaN")]
    #[case(b"inf")]
    #[case(b"1e3")]
    #[case(b"1.2.3")]
    #[case(b"0.0000000001")]
    #[case(b"99999999999")]
    #[case(b" 1")]
    fn rejects(#[case] text: &[u8]) {
        assert!(
            parse_fixed(text).is_err(),
            "{:?}",
            String::from_utf8_lossy(text)
        );
    }

    proptest! {
        #[test]
        fn short_path_agrees_with_the_general_loop(text in "[0-9.x]{0,22}") {
            if let Some(raw) = parse_short(text.as_bytes()) {
                prop_assert_eq!(Ok(raw), parse_digits(text.as_bytes()));
            }
        }

        #[test]
        fn a_prefix_read_is_what_parse_fixed_makes_of_it(text in "[0-9.x\"-]{0,24}") {
            let (value, len) = parse_fixed_prefix(text.as_bytes());
            let number = &text.as_bytes()[..len];
            prop_assert!(number.iter().all(|b| b.is_ascii_digit() || *b == b'.'));
            if let Some(raw) = value {
                prop_assert_eq!(Ok(raw), parse_fixed(number));
            }
            // It stops only where the number ends: no digit after, nor a dot after a dot-less run.
            if let Some(&next) = text.as_bytes().get(len) {
                prop_assert!(!next.is_ascii_digit());
                prop_assert!(next != b'.' || number.contains(&b'.'));
            }
        }

        #[test]
        fn display_parse_round_trip(raw in -9_000_000_000_000_000_000i64..9_000_000_000_000_000_000) {
            let p = Price::from_raw(raw);
            prop_assert_eq!(p.to_string().parse::<Price>().unwrap(), p);
        }
    }
}
