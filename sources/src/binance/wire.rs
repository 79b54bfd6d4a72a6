//! Binance's stream messages read in one pass over the bytes, in the compact form the venue sends.
//!
//! Two thirds of a capture's lines are `bookTicker` messages of a dozen fields, and serde's
//! general machinery (a visitor per field, a key match per field, a second pass to borrow each
//! string) cost more than the work the reader does with them. These functions read the object
//! directly. They accept only what they are sure of: no whitespace, no escapes, no `null`, no
//! nested values in unknown fields, no duplicate fields, integers of at most 18 digits. Anything
//! else returns `None` and the caller parses the same text with serde, which then gives the same
//! value or the error message a dead letter carries. A test checks that the two agree on every
//! line of the bundled captures and on mutated lines. Prices and sizes, strings of digits, are
//! read as numbers in the same pass that finds where their strings end ([`Cursor::decimal`]).

use super::{BookTickerMsg, DepthMsg, Levels, LevelsSoFar, Num, TradeMsg};

/// A position in one JSON object's text.
struct Cursor<'a> {
    text: &'a str,
    i: usize,
}

impl<'a> Cursor<'a> {
    /// A cursor after the object's opening brace.
    fn open(text: &'a str) -> Option<Self> {
        text.starts_with('{').then_some(Cursor { text, i: 1 })
    }

    fn peek(&self) -> Option<u8> {
        self.text.as_bytes().get(self.i).copied()
    }

    fn eat(&mut self, b: u8) -> Option<()> {
        (self.peek()? == b).then(|| self.i += 1)
    }

    /// Calls `field` with each key's [`code`], the cursor on its value; the value must be
    /// consumed. `None` when the object does not close, or when text follows its closing brace.
    fn fields(&mut self, mut field: impl FnMut(&mut Self, u16) -> Option<()>) -> Option<()> {
        if self.peek()? != b'}' {
            loop {
                let key = code(self.string()?.as_bytes());
                self.eat(b':')?;
                field(self, key)?;
                if self.eat(b',').is_none() {
                    break;
                }
            }
        }
        self.eat(b'}')?;
        (self.i == self.text.len()).then_some(())
    }

    /// A string without escapes or control characters.
    fn string(&mut self) -> Option<&'a str> {
        self.eat(b'"')?;
        let start = self.i;
        let bytes = self.text.as_bytes();
        loop {
            match *bytes.get(self.i)? {
                b'"' => break,
                b'\\' | 0..0x20 => return None,
                _ => self.i += 1,
            }
        }
        let s = self.text.get(start..self.i)?;
        self.i += 1;
        Some(s)
    }

    /// A string of a plain decimal number (`"61837.63000000"`), its value read as its end is
    /// found, in the same pass: the text, and the value where the short path of
    /// [`parse_fixed`](flowsense_core::num::parse_fixed) takes it (`None` leaves the text to the
    /// general parse, and its errors). A string that is not a plain number is read as text.
    fn decimal(&mut self) -> Option<Num<'a>> {
        let bytes = self.text.as_bytes();
        if bytes.get(self.i) != Some(&b'"') {
            return None;
        }
        let start = self.i + 1;
        let (value, len) = flowsense_core::num::parse_fixed_prefix(&bytes[start..]);
        if bytes.get(start + len) == Some(&b'"') {
            self.i = start + len + 1;
            // The digits and dot are ASCII: the slice is on character boundaries.
            let text = &self.text[start..start + len];
            return Some(Num { text, raw: value });
        }
        self.string().map(Num::text)
    }

    /// An integer as JSON writes it (no leading zeros), of at most 18 digits so that it fits.
    fn int(&mut self) -> Option<i64> {
        let neg = self.peek()? == b'-';
        if neg {
            self.i += 1;
        }
        let bytes = self.text.as_bytes();
        let start = self.i;
        let mut v: i64 = 0;
        while let Some(&b @ b'0'..=b'9') = bytes.get(self.i) {
            v = v * 10 + i64::from(b - b'0');
            self.i += 1;
        }
        let n = self.i - start;
        if n == 0 || n > 18 || (bytes[start] == b'0' && n > 1) {
            return None;
        }
        Some(if neg { -v } else { v })
    }

    fn uint(&mut self) -> Option<u64> {
        if self.peek()? == b'-' {
            return None;
        }
        self.int().map(|v| v as u64)
    }

    fn boolean(&mut self) -> Option<bool> {
        let rest = &self.text.as_bytes()[self.i..];
        if rest.starts_with(b"true") {
            self.i += 4;
            Some(true)
        } else if rest.starts_with(b"false") {
            self.i += 5;
            Some(false)
        } else {
            None
        }
    }

    /// Skips the value of a field the message does not use: a string, an integer or a boolean.
    fn skip(&mut self) -> Option<()> {
        match self.peek()? {
            b'"' => self.string().map(drop),
            b't' | b'f' => self.boolean().map(drop),
            _ => self.int().map(drop),
        }
    }

    /// `[["price","size"],...]`, each level checked as the serde path checks it.
    fn levels(&mut self) -> Option<Levels> {
        self.eat(b'[')?;
        let mut levels = LevelsSoFar::with_capacity(32);
        if self.eat(b']').is_some() {
            return Some(levels.finish());
        }
        loop {
            self.eat(b'[')?;
            let p = self.decimal()?;
            self.eat(b',')?;
            let q = self.decimal()?;
            self.eat(b']')?;
            levels.push(p, q);
            match self.peek()? {
                b',' => self.i += 1,
                b']' => {
                    self.i += 1;
                    return Some(levels.finish());
                }
                _ => return None,
            }
        }
    }
}

/// A key of one or two bytes as a number, so that a message's fields are told apart by integer
/// comparisons; longer keys (which no message here reads) are all `0`.
const fn code(key: &[u8]) -> u16 {
    match key {
        [a] => *a as u16,
        [a, b] => (*a as u16) << 8 | *b as u16,
        _ => 0,
    }
}

/// The codes of the keys the messages read, named as Binance spells them.
#[allow(non_upper_case_globals)]
mod key {
    pub const A: u16 = super::code(b"A");
    pub const B: u16 = super::code(b"B");
    pub const E: u16 = super::code(b"E");
    pub const T: u16 = super::code(b"T");
    pub const U: u16 = super::code(b"U");
    pub const a: u16 = super::code(b"a");
    pub const b: u16 = super::code(b"b");
    pub const m: u16 = super::code(b"m");
    pub const p: u16 = super::code(b"p");
    pub const pu: u16 = super::code(b"pu");
    pub const q: u16 = super::code(b"q");
    pub const t: u16 = super::code(b"t");
    pub const u: u16 = super::code(b"u");
}

/// Fills a field's slot; `None` when the value does not read or the field came before (serde
/// refuses duplicate fields).
fn fill<T>(slot: &mut Option<T>, value: impl FnOnce() -> Option<T>) -> Option<()> {
    if slot.is_some() {
        return None;
    }
    *slot = Some(value()?);
    Some(())
}

/// A `depthUpdate` message's `data` object.
pub(super) fn depth(text: &str) -> Option<DepthMsg> {
    let mut c = Cursor::open(text)?;
    let (mut e, mut t, mut first_id, mut final_id, mut pu) = (None, None, None, None, None);
    let (mut bids, mut asks) = (None, None);
    c.fields(|c, key| match key {
        key::E => fill(&mut e, || c.int()),
        key::T => fill(&mut t, || c.int()),
        key::U => fill(&mut first_id, || c.uint()),
        key::u => fill(&mut final_id, || c.uint()),
        key::pu => fill(&mut pu, || c.uint()),
        key::b => fill(&mut bids, || c.levels()),
        key::a => fill(&mut asks, || c.levels()),
        _ => c.skip(),
    })?;
    Some(DepthMsg {
        E: e?,
        T: t,
        U: first_id?,
        u: final_id?,
        pu,
        b: bids?,
        a: asks?,
    })
}

/// A `trade` message's `data` object.
pub(super) fn trade(text: &str) -> Option<TradeMsg<'_>> {
    let mut c = Cursor::open(text)?;
    let (mut time, mut id, mut p, mut q, mut m) = (None, None, None, None, None);
    c.fields(|c, key| match key {
        key::T => fill(&mut time, || c.int()),
        key::t => fill(&mut id, || c.uint()),
        key::p => fill(&mut p, || c.decimal()),
        key::q => fill(&mut q, || c.decimal()),
        key::m => fill(&mut m, || c.boolean()),
        _ => c.skip(),
    })?;
    Some(TradeMsg {
        T: time?,
        t: id,
        p: p?,
        q: q?,
        m: m?,
    })
}

/// A `bookTicker` message's `data` object.
pub(super) fn book_ticker(text: &str) -> Option<BookTickerMsg<'_>> {
    let mut c = Cursor::open(text)?;
    let (mut u, mut b, mut bq, mut a, mut aq) = (None, None, None, None, None);
    let (mut t, mut e) = (None, None);
    c.fields(|c, key| match key {
        key::u => fill(&mut u, || c.uint()),
        key::b => fill(&mut b, || c.decimal()),
        key::B => fill(&mut bq, || c.decimal()),
        key::a => fill(&mut a, || c.decimal()),
        key::A => fill(&mut aq, || c.decimal()),
        key::T => fill(&mut t, || c.int()),
        key::E => fill(&mut e, || c.int()),
        _ => c.skip(),
    })?;
    Some(BookTickerMsg {
        u: u?,
        b: b?,
        B: bq?,
        a: a?,
        A: aq?,
        T: t,
        E: e,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// What serde makes of a message (or that it refuses it), in a comparable form.
    fn serde_depth(text: &str) -> Option<String> {
        serde_json::from_str::<DepthMsg>(text)
            .ok()
            .map(|m| format!("{m:?}"))
    }

    /// Every line of the bundled captures: the one-pass reading equals serde's.
    #[test]
    fn agrees_with_serde_on_the_bundled_captures() {
        let dir = crate::bundled("");
        let mut files = Vec::new();
        for sub in ["usdm", "spot", "cm"] {
            for f in std::fs::read_dir(dir.join(sub)).unwrap() {
                files.push(f.unwrap().path());
            }
        }
        let mut counts = [0usize; 3];
        for f in files {
            let mut text = String::new();
            std::io::Read::read_to_string(&mut *super::super::open_text(&f).unwrap(), &mut text)
                .unwrap();
            for line in text.lines() {
                let Some((_, json)) = line.split_once(' ') else {
                    continue;
                };
                let Some(data) = json
                    .split_once(",\"data\":")
                    .and_then(|(_, d)| d.strip_suffix('}'))
                else {
                    continue;
                };
                if json.contains("@depth") {
                    let fast = depth(data).map(|m| format!("{m:?}"));
                    assert!(fast.is_some(), "{line}");
                    assert_eq!(fast, serde_depth(data));
                    counts[0] += 1;
                } else if json.contains("@trade") {
                    let fast = trade(data).map(|m| format!("{m:?}"));
                    assert!(fast.is_some(), "{line}");
                    let slow = serde_json::from_str::<TradeMsg<'_>>(data).unwrap();
                    assert_eq!(fast, Some(format!("{slow:?}")));
                    counts[1] += 1;
                } else if json.contains("@bookTicker") {
                    let fast = book_ticker(data).map(|m| format!("{m:?}"));
                    assert!(fast.is_some(), "{line}");
                    let slow = serde_json::from_str::<BookTickerMsg<'_>>(data).unwrap();
                    assert_eq!(fast, Some(format!("{slow:?}")));
                    counts[2] += 1;
                }
            }
        }
        assert!(counts.iter().all(|&n| n > 100), "{counts:?}");
    }

    const DEPTH: &str = r#"{"e":"depthUpdate","E":1723161256299,"T":1723161256298,"s":"BTCUSDT","U":5123107832006,"u":5123107837557,"pu":5123107831937,"b":[["58710.20","0.014"],["61510.90","0.000"]],"a":[["61700.1","2.5"]]}"#;
    const TRADE: &str = r#"{"e":"trade","E":1723161256322,"T":1723161256321,"s":"BTCUSDT","t":5148417221,"p":"61650.10","q":"0.004","X":"MARKET","m":true}"#;
    const TICKER: &str = r#"{"e":"bookTicker","u":5123107852948,"s":"BTCUSDT","b":"61650.10","B":"3.215","a":"61650.20","A":"1.008","T":1723161256322,"E":1723161256323}"#;

    #[test]
    fn hands_anything_unusual_to_serde() {
        for text in [
            r#"{"E":1, "U":1,"u":2,"b":[],"a":[]}"#,         // whitespace
            r#"{"E":1,"E":2,"U":1,"u":2,"b":[],"a":[]}"#,    // duplicate field
            r#"{"E":1,"T":null,"U":1,"u":2,"b":[],"a":[]}"#, // null
            r#"{"E":01,"U":1,"u":2,"b":[],"a":[]}"#,         // leading zero
            r#"{"E":1.5,"U":1,"u":2,"b":[],"a":[]}"#,        // not an integer
            r#"{"E":1,"U":1,"u":2,"b":[],"a":[]} "#,         // trailing text
            r#"{"E":1,"U":1,"u":2,"b":[["1\u0030","1"]],"a":[]}"#, // escape
            r#"{"E":1,"U":-1,"u":2,"b":[],"a":[]}"#,         // negative id
            r#"{"E":1,"U":1,"u":2,"b":[],"a":[],"x":{}}"#,   // nested unknown field
            r#"{"E":1,"U":1,"b":[],"a":[]}"#,                // missing field
        ] {
            assert!(depth(text).is_none(), "{text}");
        }
        assert!(depth(r#"{"E":1,"U":1,"u":2,"b":[],"a":[]}"#).is_some());
        assert!(depth(DEPTH).is_some());
        assert!(trade(TRADE).is_some());
        assert!(book_ticker(TICKER).is_some());
    }

    #[test]
    fn a_bad_level_is_kept_as_the_reason_like_serde_does() {
        let text = DEPTH.replace("\"0.014\"", "\"NaN\"");
        let fast = depth(&text).unwrap();
        assert!(fast.b.0.is_err());
        assert_eq!(Some(format!("{fast:?}")), serde_depth(&text));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4000))]

        /// Any one-byte change, insertion or deletion of a real message: the one-pass reading
        /// either hands the text to serde or gives exactly what serde gives.
        #[test]
        fn never_disagrees_with_serde(which in 0usize..3, at in 0usize..400, byte in any::<u8>(), op in 0u8..3) {
            let base = [DEPTH, TRADE, TICKER][which];
            let mut bytes = base.as_bytes().to_vec();
            let at = at % bytes.len();
            let chars = b"{}[]\",:0123456789-.tfnulxEeTUuabpqmABs \\";
            let ch = chars[byte as usize % chars.len()];
            match op {
                0 => bytes[at] = ch,
                1 => bytes.insert(at, ch),
                _ => { bytes.remove(at); }
            }
            let Ok(text) = String::from_utf8(bytes) else { return Ok(()) };
            match which {
                0 => if let Some(m) = depth(&text) {
                    prop_assert_eq!(Some(format!("{m:?}")), serde_depth(&text));
                },
                1 => if let Some(m) = trade(&text) {
                    let slow = serde_json::from_str::<TradeMsg<'_>>(&text).ok().map(|m| format!("{m:?}"));
                    prop_assert_eq!(Some(format!("{m:?}")), slow);
                },
                _ => if let Some(m) = book_ticker(&text) {
                    let slow = serde_json::from_str::<BookTickerMsg<'_>>(&text).ok().map(|m| format!("{m:?}"));
                    prop_assert_eq!(Some(format!("{m:?}")), slow);
                },
            }
        }
    }
}
