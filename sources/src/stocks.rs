//! Stock market data from Alpaca and Polygon: one decoder per vendor for its websocket
//! messages (arrays of trades, quotes and minute bars) and both vendors' REST pages (Alpaca's
//! trades, quotes and bars; Polygon's v3 trades and quotes and v2 minute aggregates), shared by
//! the live connectors ([`crate::live`]) and the file reader, so history and live share one
//! parser.
//!
//! Neither vendor says which side initiated a trade, and the order-flow features need it: the
//! decoder infers it by the quote rule, then the tick rule (Lee and Ready). A trade at or above
//! the ask is a buy, at or below the bid a sell. Inside the spread, the nearer side wins. At the
//! midpoint, or without a quote, an uptick is a buy and a downtick a sell, and an unchanged
//! price keeps the last side. The very first trade without a quote is a buy.
//!
//! A quote is the whole visible book of an L1 feed, so each quote also gives a one-level depth
//! snapshot: the graph's books, features and simulated exchange then work on it as on depth.
//!
//! ```
//! use flowsense_sources::Record;
//! use flowsense_sources::stocks::{StockDecoder, Vendor};
//! use flowsense_core::{MarketEvent, Side};
//! let mut d = StockDecoder::new(Vendor::Alpaca, "alpaca-iex");
//! let mut out = Vec::new();
//! d.push(None, r#"[{"T":"q","S":"AAPL","bp":227.28,"bs":2,"ap":227.30,"as":3,"t":"2024-08-08T14:30:00.100Z"},
//!                 {"T":"t","S":"AAPL","i":1,"p":227.30,"s":100,"t":"2024-08-08T14:30:00.200Z"}]"#, &mut out);
//! let side = out.iter().find_map(|r| match r {
//!     Record::Event(MarketEvent::Trade(_, t)) => Some(t.aggressor),
//!     _ => None,
//! });
//! assert_eq!(side, Some(Side::Buy)); // at the ask
//! ```

use std::collections::HashSet;

use flowsense_core::{
    Bar, BboUpdate, DeadLetter, DeadLetterReason, DepthUpdate, MarketEvent, Price, Side, Size,
    Symbol, Trade, UnixNanos,
};
use rustc_hash::FxHashMap;
use serde_json::Value;

use crate::Record;

/// Whose messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Vendor {
    /// Alpaca market data v2 (`{"T":"t","S":...}`).
    Alpaca,
    /// Polygon stocks (`{"ev":"T","sym":...}`).
    Polygon,
}

/// One symbol's state: its last quote (for the quote rule) and last trade (the tick rule).
struct Sym {
    symbol: Symbol,
    bid: Option<Price>,
    ask: Option<Price>,
    last: Option<(Price, Side)>,
    quotes: u64,
}

/// Decodes one vendor's messages into records.
pub struct StockDecoder {
    vendor: Vendor,
    source: String,
    symbols: FxHashMap<String, Sym>,
    subscribed: Option<HashSet<String>>,
    /// The symbol of pages that do not name theirs (Polygon's v3 trades and quotes).
    page_symbol: Option<String>,
    messages: u64,
}

type Bad = (DeadLetterReason, String);

fn num(v: &Value, key: &str) -> Result<f64, Bad> {
    v.get(key)
        .and_then(Value::as_f64)
        .ok_or_else(|| (DeadLetterReason::Unparsable, format!("no number {key:?}")))
}

fn price(v: &Value, key: &str) -> Result<Price, Bad> {
    let x = num(v, key)?;
    if !x.is_finite() {
        return Err((DeadLetterReason::NotFinite, format!("{key} {x}")));
    }
    match Price::from_f64(x) {
        Some(p) if x > 0.0 => Ok(p),
        _ => Err((DeadLetterReason::NonPositivePrice, format!("{key} {x}"))),
    }
}

fn size(v: &Value, key: &str, allow_zero: bool) -> Result<Size, Bad> {
    let x = num(v, key)?;
    match Size::from_f64(x) {
        Some(s) if x > 0.0 || (allow_zero && x == 0.0) => Ok(s),
        _ => Err((DeadLetterReason::NonPositiveSize, format!("{key} {x}"))),
    }
}

/// An Alpaca RFC 3339 stamp (`2024-08-08T14:30:00.123456789Z`).
fn rfc3339(v: &Value, key: &str) -> Result<UnixNanos, Bad> {
    let s = v
        .get(key)
        .and_then(Value::as_str)
        .ok_or_else(|| (DeadLetterReason::Unparsable, format!("no time {key:?}")))?;
    flowsense_core::job::parse_instant(s)
        .map_err(|_| (DeadLetterReason::Unparsable, format!("time {s:?}")))
}

/// A Polygon millisecond stamp.
fn millis(v: &Value, key: &str) -> Result<UnixNanos, Bad> {
    v.get(key)
        .and_then(Value::as_i64)
        .map(UnixNanos::from_millis)
        .ok_or_else(|| (DeadLetterReason::Unparsable, format!("no time {key:?}")))
}

impl StockDecoder {
    /// A decoder whose dead letters name `source`.
    pub fn new(vendor: Vendor, source: &str) -> Self {
        StockDecoder {
            vendor,
            source: source.to_string(),
            symbols: FxHashMap::default(),
            subscribed: None,
            page_symbol: None,
            messages: 0,
        }
    }

    /// The symbol of REST pages that do not name theirs: Polygon's v3 trades and quotes are
    /// asked for by ticker and answer without it (the file reader takes it from the file's
    /// name, `AAPL_trades_2024-08-08.json`).
    pub fn page_symbol(mut self, symbol: Option<String>) -> Self {
        self.page_symbol = symbol;
        self
    }

    /// Only these symbols are expected (a live subscription): any other is an
    /// `unknown_symbol` dead letter.
    pub fn subscribed(mut self, symbols: &[String]) -> Self {
        self.subscribed = Some(symbols.iter().map(|s| s.to_ascii_uppercase()).collect());
        self
    }

    fn dead(&self, out: &mut Vec<Record>, (reason, detail): Bad, raw: &str) {
        out.push(Record::Dead(DeadLetter {
            source: self.source.clone(),
            position: format!("message {}", self.messages),
            reason,
            detail,
            raw: raw.to_string(),
        }));
    }

    /// Decodes one frame or line (a JSON array of messages, one message, or an Alpaca REST
    /// page) received at `local`; appends what it made to `out`.
    pub fn push(&mut self, local: Option<UnixNanos>, text: &str, out: &mut Vec<Record>) {
        self.messages += 1;
        let v: Value = match serde_json::from_str(text) {
            Ok(v) => v,
            Err(e) => return self.dead(out, (DeadLetterReason::Unparsable, e.to_string()), text),
        };
        match v {
            Value::Array(items) => {
                for item in &items {
                    self.message(local, item, None, out);
                }
            }
            Value::Object(_) if self.vendor == Vendor::Alpaca && v.get("T").is_none() => {
                self.rest_page(local, &v, text, out)
            }
            Value::Object(_) if self.vendor == Vendor::Polygon && v.get("results").is_some() => {
                self.polygon_page(local, &v, text, out)
            }
            other => self.message(local, &other, None, out),
        }
    }

    /// `{"trades": {"AAPL": [...]}}` or `{"symbol": "AAPL", "trades": [...]}` (and the same
    /// for quotes and bars): each item as a stream message of its kind.
    fn rest_page(
        &mut self,
        local: Option<UnixNanos>,
        v: &Value,
        text: &str,
        out: &mut Vec<Record>,
    ) {
        let mut any = false;
        for (key, kind) in [("trades", "t"), ("quotes", "q"), ("bars", "b")] {
            let Some(items) = v.get(key) else { continue };
            any = true;
            let mut each = |symbol: &str, list: &Value| {
                for item in list.as_array().into_iter().flatten() {
                    self.message(local, item, Some((kind, symbol)), out);
                }
            };
            match items {
                Value::Object(by_symbol) => {
                    for (s, list) in by_symbol {
                        each(s, list);
                    }
                }
                Value::Array(_) => {
                    let s = v.get("symbol").and_then(Value::as_str).unwrap_or_default();
                    each(s, items);
                }
                _ => {}
            }
        }
        if !any {
            self.dead(
                out,
                (
                    DeadLetterReason::UnknownMessage,
                    "neither a stream message nor a page of trades, quotes or bars".into(),
                ),
                text,
            );
        }
    }

    /// A Polygon REST page, `{"results": [...], "ticker"?: ..., "status": "OK", ...}`: v3
    /// trades (`price`, `size`, `id`), v3 quotes (`bid_price`, `ask_size`, ...), both stamped
    /// with `participant_timestamp` (the exchange's, else `sip_timestamp`) in nanoseconds, or v2
    /// minute aggregates (`o`, `h`, `l`, `c`, `v`, `t` in milliseconds). Each item is decoded as
    /// the stream message of its kind.
    fn polygon_page(
        &mut self,
        local: Option<UnixNanos>,
        v: &Value,
        text: &str,
        out: &mut Vec<Record>,
    ) {
        let symbol = v
            .get("ticker")
            .and_then(Value::as_str)
            .map(str::to_string)
            .or_else(|| self.page_symbol.clone());
        let Some(symbol) = symbol else {
            let detail = "a Polygon page that names no ticker: name its file after the symbol \
                          (AAPL_trades.json)"
                .to_string();
            return self.dead(out, (DeadLetterReason::UnknownSymbol, detail), text);
        };
        let items = v
            .get("results")
            .and_then(Value::as_array)
            .map_or(&[][..], Vec::as_slice);
        for item in items {
            let stamp = item
                .get("participant_timestamp")
                .or_else(|| item.get("sip_timestamp"))
                .cloned()
                .unwrap_or(Value::Null);
            let get = |k: &str| item.get(k).cloned().unwrap_or(Value::Null);
            let (kind, m) = if item.get("bid_price").is_some() || item.get("ask_price").is_some() {
                let m = serde_json::json!({"bp": get("bid_price"), "bs": get("bid_size"),
                    "ap": get("ask_price"), "as": get("ask_size"), "t_ns": stamp});
                ("quote", m)
            } else if item.get("price").is_some() {
                let m = serde_json::json!({"p": get("price"), "s": get("size"), "i": get("id"),
                    "t_ns": stamp});
                ("trade", m)
            } else if item.get("o").is_some() {
                let start = item.get("t").and_then(Value::as_i64).unwrap_or(0);
                let mut m = item.clone();
                m["s"] = Value::from(start);
                m["e"] = Value::from(start + 60_000);
                ("bar", m)
            } else {
                let detail = "a Polygon page item that is no trade, quote or aggregate".into();
                self.dead(
                    out,
                    (DeadLetterReason::UnknownMessage, detail),
                    &item.to_string(),
                );
                continue;
            };
            if let Err(bad) = self.event(local, kind, &symbol, &m, out) {
                self.dead(out, bad, &item.to_string());
            }
        }
    }

    /// One message; `rest` gives the kind and symbol of a REST page's item.
    fn message(
        &mut self,
        local: Option<UnixNanos>,
        m: &Value,
        rest: Option<(&str, &str)>,
        out: &mut Vec<Record>,
    ) {
        let raw = || m.to_string();
        let (kind, symbol) = match (self.vendor, rest) {
            (_, Some((k, s))) => (k.to_string(), s.to_string()),
            (Vendor::Alpaca, None) => (
                m.get("T")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string(),
                m.get("S")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string(),
            ),
            (Vendor::Polygon, None) => (
                m.get("ev")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string(),
                m.get("sym")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string(),
            ),
        };
        let kind = match (self.vendor, kind.as_str()) {
            (Vendor::Alpaca, "t") | (Vendor::Polygon, "T") => "trade",
            (Vendor::Alpaca, "q") | (Vendor::Polygon, "Q") => "quote",
            (Vendor::Alpaca, "b" | "u") | (Vendor::Polygon, "AM") => "bar",
            (Vendor::Alpaca, "d") => "daily",
            // Connection, authentication and subscription notices: not market data.
            (Vendor::Alpaca, "success" | "subscription") | (Vendor::Polygon, "status") => return,
            (_, other) => {
                let detail = match m.get("msg").or_else(|| m.get("message")) {
                    Some(msg) => format!("{other:?}: {msg}"),
                    None => format!("message type {other:?}"),
                };
                return self.dead(out, (DeadLetterReason::UnknownMessage, detail), &raw());
            }
        };
        if let Some(subs) = &self.subscribed
            && !subs.contains(&symbol.to_ascii_uppercase())
        {
            let detail = format!("{symbol:?} was not subscribed");
            return self.dead(out, (DeadLetterReason::UnknownSymbol, detail), &raw());
        }
        if let Err(bad) = self.event(local, kind, &symbol, m, out) {
            self.dead(out, bad, &raw());
        }
    }

    fn sym(&mut self, name: &str) -> Result<&mut Sym, Bad> {
        if !self.symbols.contains_key(name) {
            let symbol =
                Symbol::new(name).map_err(|e| (DeadLetterReason::Unparsable, e.to_string()))?;
            self.symbols.insert(
                name.to_string(),
                Sym {
                    symbol,
                    bid: None,
                    ask: None,
                    last: None,
                    quotes: 0,
                },
            );
        }
        Ok(self.symbols.get_mut(name).expect("inserted above"))
    }

    fn event(
        &mut self,
        local: Option<UnixNanos>,
        kind: &str,
        name: &str,
        m: &Value,
        out: &mut Vec<Record>,
    ) -> Result<(), Bad> {
        let vendor = self.vendor;
        let ts = |key_a: &str, key_p: &str| match vendor {
            Vendor::Alpaca => rfc3339(m, key_a),
            // REST items carry nanoseconds (see `polygon_page`).
            Vendor::Polygon if m.get("t_ns").is_some() => m
                .get("t_ns")
                .and_then(Value::as_i64)
                .map(UnixNanos)
                .ok_or_else(|| {
                    (
                        DeadLetterReason::Unparsable,
                        "no time \"participant_timestamp\"".into(),
                    )
                }),
            Vendor::Polygon => millis(m, key_p),
        };
        match kind {
            "trade" => {
                let (p, s, t) = (price(m, "p")?, size(m, "s", false)?, ts("t", "t")?);
                let trade_id = match m.get("i") {
                    Some(Value::Number(n)) => n.as_u64(),
                    Some(Value::String(s)) => s.parse().ok(),
                    _ => None,
                };
                let st = self.sym(name)?;
                let aggressor = classify(p, st.bid, st.ask, st.last);
                st.last = Some((p, aggressor));
                let trade = Trade {
                    ts: t,
                    local_ts: local,
                    trade_id,
                    price: p,
                    size: s,
                    aggressor,
                };
                out.push(Record::Event(MarketEvent::Trade(st.symbol.clone(), trade)));
            }
            "quote" => {
                let bid = (price(m, "bp")?, size(m, "bs", true)?);
                let ask = (price(m, "ap")?, size(m, "as", true)?);
                let t = ts("t", "t")?;
                if bid.0 >= ask.0 {
                    return Err((
                        DeadLetterReason::CrossedBook,
                        format!("bid {} >= ask {}", bid.0, ask.0),
                    ));
                }
                let st = self.sym(name)?;
                st.bid = Some(bid.0);
                st.ask = Some(ask.0);
                st.quotes += 1;
                let id = st.quotes;
                let q = BboUpdate {
                    ts: Some(t),
                    local_ts: local,
                    update_id: None,
                    bid: Some(bid),
                    ask: Some(ask),
                    gap: false,
                };
                let book = DepthUpdate {
                    ts: t,
                    local_ts: local,
                    first_update_id: id,
                    final_update_id: id,
                    prev_final_update_id: None,
                    bids: vec![bid],
                    asks: vec![ask],
                    is_snapshot: true,
                };
                out.push(Record::Event(MarketEvent::Depth(
                    st.symbol.clone(),
                    Box::new(book),
                )));
                out.push(Record::Event(MarketEvent::Quote(
                    st.symbol.clone(),
                    Box::new(q),
                )));
            }
            "bar" | "daily" => {
                let (open_time, interval) = match vendor {
                    Vendor::Alpaca => {
                        let len = if kind == "daily" { 86_400 } else { 60 };
                        (rfc3339(m, "t")?, len * 1_000_000_000)
                    }
                    Vendor::Polygon => {
                        let (s, e) = (millis(m, "s")?, millis(m, "e")?);
                        (s, (e.0 - s.0).max(1))
                    }
                };
                let bar = Bar {
                    open_time,
                    interval,
                    open: price(m, "o")?,
                    high: price(m, "h")?,
                    low: price(m, "l")?,
                    close: price(m, "c")?,
                    volume: size(m, "v", true)?,
                    trades: m.get("n").and_then(Value::as_u64),
                };
                let lo = bar.open.min(bar.close).min(bar.low);
                let hi = bar.open.max(bar.close).max(bar.high);
                if bar.low != lo || bar.high != hi {
                    return Err((
                        DeadLetterReason::InconsistentBar,
                        format!(
                            "o {} h {} l {} c {}",
                            bar.open, bar.high, bar.low, bar.close
                        ),
                    ));
                }
                let st = self.sym(name)?;
                out.push(Record::Event(MarketEvent::Bar(
                    st.symbol.clone(),
                    Box::new(bar),
                )));
            }
            _ => unreachable!("kinds are mapped above"),
        }
        Ok(())
    }
}

/// The aggressor of a trade at `p`: the quote rule, then the tick rule (see the module docs).
///
/// ```
/// use flowsense_core::{Price, Side};
/// use flowsense_sources::stocks::classify;
/// let px = Price::from_units;
/// assert_eq!(classify(px(101), Some(px(99)), Some(px(101)), None), Side::Buy);
/// assert_eq!(classify(px(100), Some(px(99)), Some(px(101)), Some((px(101), Side::Buy))), Side::Sell);
/// assert_eq!(classify(px(100), None, None, Some((px(100), Side::Sell))), Side::Sell);
/// ```
pub fn classify(
    p: Price,
    bid: Option<Price>,
    ask: Option<Price>,
    last: Option<(Price, Side)>,
) -> Side {
    if let (Some(b), Some(a)) = (bid, ask) {
        if p >= a {
            return Side::Buy;
        }
        if p <= b {
            return Side::Sell;
        }
        let (to_ask, to_bid) = (a.raw() - p.raw(), p.raw() - b.raw());
        if to_ask < to_bid {
            return Side::Buy;
        }
        if to_bid < to_ask {
            return Side::Sell;
        }
    }
    match last {
        Some((lp, _)) if p > lp => Side::Buy,
        Some((lp, _)) if p < lp => Side::Sell,
        Some((_, side)) => side,
        None => Side::Buy,
    }
}

/// Reads saved Alpaca or Polygon messages: JSON lines, each a frame of the stream (an array of
/// messages, or one), optionally prefixed with its local receive time in nanoseconds as
/// `flowsense record` writes it (`<local ns> <json>`), or a REST page as the vendor's API
/// returns it, one page a line (a Polygon v3 page names no ticker: the file's name gives it,
/// `AAPL_trades_2024-08-08.json`); gzip or plain.
/// An iterator of [`Record`]s, one source per file.
///
/// ```
/// use flowsense_sources::Record;
/// use flowsense_sources::stocks::{StockReader, Vendor};
/// let dir = tempfile::tempdir().unwrap();
/// let f = dir.path().join("aapl.jsonl");
/// std::fs::write(&f, "[{\"ev\":\"T\",\"sym\":\"AAPL\",\"p\":227.3,\"s\":100,\"t\":1723127400123}]\nnot json\n").unwrap();
/// let records: Vec<Record> = StockReader::open(vec![f], Vendor::Polygon).unwrap().map(|r| r.unwrap()).collect();
/// assert_eq!(records.iter().filter(|r| matches!(r, Record::Event(_))).count(), 1);
/// assert_eq!(records.iter().filter(|r| matches!(r, Record::Dead(_))).count(), 1);
/// ```
pub struct StockReader {
    files: std::collections::VecDeque<std::path::PathBuf>,
    vendor: Vendor,
    current: Option<(Box<dyn std::io::BufRead + Send>, crate::SourceId, String)>,
    decoder: Option<StockDecoder>,
    out: std::collections::VecDeque<Record>,
    line: String,
    line_no: u64,
}

impl StockReader {
    /// Reads `files` in order.
    pub fn open(files: Vec<std::path::PathBuf>, vendor: Vendor) -> crate::Result<Self> {
        for f in &files {
            if !f.is_file() {
                return Err(crate::Error::format(f, "no such file"));
            }
        }
        Ok(StockReader {
            files: files.into(),
            vendor,
            current: None,
            decoder: None,
            out: Default::default(),
            line: String::new(),
            line_no: 0,
        })
    }
}

/// A line's receive stamp and JSON: `<digits> <json>` or the JSON alone.
pub(crate) fn split_stamp(line: &str) -> (Option<UnixNanos>, &str) {
    match line.split_once(' ') {
        Some((ts, json)) if !ts.is_empty() && ts.bytes().all(|b| b.is_ascii_digit()) => {
            (ts.parse().ok().map(UnixNanos), json)
        }
        _ => (None, line),
    }
}

impl Iterator for StockReader {
    type Item = crate::Result<Record>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(r) = self.out.pop_front() {
                return Some(Ok(r));
            }
            if self.current.is_none() {
                let path = self.files.pop_front()?;
                let reader = match crate::binance::open_text(&path) {
                    Ok(r) => r,
                    Err(e) => {
                        self.out.extend(crate::unreadable_file(&path, &e));
                        continue;
                    }
                };
                let id = match crate::SourceId::for_file(&path) {
                    Ok(id) => id,
                    Err(e) => return Some(Err(crate::Error::io(&path, e))),
                };
                let name = path
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                let stem = name
                    .split(['_', '.', '-'])
                    .next()
                    .filter(|s| {
                        s.starts_with(|c: char| c.is_ascii_alphabetic())
                            && s.chars().all(|c| c.is_ascii_alphanumeric())
                    })
                    .map(str::to_ascii_uppercase);
                self.decoder = Some(StockDecoder::new(self.vendor, &name).page_symbol(stem));
                self.out.push_back(Record::SourceStart(id.clone()));
                self.current = Some((reader, id, name));
                self.line_no = 0;
                continue;
            }
            let (reader, id, name) = self.current.as_mut().expect("opened above");
            self.line.clear();
            match reader.read_line(&mut self.line) {
                Ok(0) => {
                    let id = id.clone();
                    self.current = None;
                    self.out.push_back(Record::SourceDone(id));
                }
                Ok(_) => {
                    self.line_no += 1;
                    let line = self.line.trim_end();
                    if line.is_empty() {
                        continue;
                    }
                    let (local, json) = split_stamp(line);
                    let mut made = Vec::new();
                    let decoder = self.decoder.as_mut().expect("made with the file");
                    decoder.push(local, json, &mut made);
                    for r in &mut made {
                        if let Record::Dead(d) = r {
                            d.source = id.to_string();
                            d.position = format!("{name}:{}", self.line_no);
                        }
                    }
                    self.out.extend(made);
                }
                Err(e) => {
                    let id = id.clone();
                    self.current = None;
                    self.out.push_back(Record::Dead(DeadLetter {
                        source: id.to_string(),
                        position: format!("line {}", self.line_no + 1),
                        reason: DeadLetterReason::Unreadable,
                        detail: e.to_string(),
                        raw: String::new(),
                    }));
                    self.out.push_back(Record::SourceDone(id));
                }
            }
        }
    }
}

/// Whether a file's first line is Alpaca's or Polygon's (`None`: neither).
pub(crate) fn sniff(first_line: &str) -> Option<Vendor> {
    let (_, json) = split_stamp(first_line.trim_end());
    let json = json.trim_start();
    if !(json.starts_with('[') || json.starts_with('{')) {
        return None;
    }
    if json.contains("\"ev\":\"") && json.contains("\"sym\"") || json.contains("\"ev\":\"status\"")
    {
        return Some(Vendor::Polygon);
    }
    // Polygon's REST pages: `{"results": [...], "status": ..., "request_id": ...}`.
    if json.starts_with('{') && json.contains("\"results\":") && json.contains("\"request_id\":") {
        return Some(Vendor::Polygon);
    }
    let rest_page = ["{\"trades\":", "{\"quotes\":", "{\"bars\":", "{\"symbol\":"]
        .iter()
        .any(|p| json.starts_with(p));
    // Alpaca's messages name their type with a string `T` (Binance's `T` is a number).
    if rest_page || json.contains("\"T\":\"") {
        return Some(Vendor::Alpaca);
    }
    None
}
