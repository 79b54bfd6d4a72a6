//! Databento DBN files (plain or zstd, versions 1 to 3) through the `dbn` crate, every
//! market-data schema.
//!
//! - MBO goes through the shared L3 reconstruction: `A` add, `C` cancel (partial or whole),
//!   `M` modify, `F` fill of a resting order (book only), `T` trade (the `trades` row, with its
//!   aggressor), `R` clear book. A trade with no aggressor side (auctions) is kept as a `cross`
//!   book event.
//! - MBP-10 records carry the top ten levels after the event: the changed level becomes a
//!   `depth_updates` row, the top a `bbo` row, `T` records `trades` rows.
//! - Trades schema records become `trades` rows.
//! - Top-of-book schemas (MBP-1, TBBO, BBO-1s/1m, CMBP-1, TCBBO, CBBO-1s/1m) become `quotes`
//!   rows (the venue's top) and `bbo` rows (the same top: no deeper book to rebuild), and the
//!   trades they carry (`T` records of MBP-1 and CMBP-1, every TBBO and TCBBO record, whose top
//!   is the one just before the trade) `trades` rows.
//! - OHLCV-1s/1m/1h/1d and EOD become `bars` at their interval (`ts_event` is the bar's open).
//! - Symbol mappings (live data) update the instrument's symbol.
//! - Records FlowSense does not read (definition, statistics, status, imbalance, and gateway
//!   error and system messages) are never passed over: each is an `unsupported_record` dead
//!   letter naming its type and the file's schema, and the ingest's summary counts them by type.
//!
//! `ts` is the matching engine's `ts_event`; `local_ts` is Databento's `ts_recv`. Symbols come from
//! the file's symbology mappings (instrument id to raw symbol).

use std::collections::{HashMap, VecDeque};
use std::path::Path;

use dbn::decode::{DbnMetadata, DecodeRecordRef, DynDecoder};
use dbn::{Compression, MboMsg, Mbp10Msg, OhlcvMsg, TradeMsg, VersionUpgradePolicy, rtype};
use flowsense_core::{
    Bar, BboUpdate, DeadLetter, DeadLetterReason, DepthUpdate, L3Action, MarketEvent, OrderEvent,
    OrderId, Price, Side, Size, Symbol, Trade, UnixNanos,
};

use crate::book::{L2Book, L3Replay};
use crate::{Error, Record, Result, SourceId};

/// DBN's marker for a missing price.
const UNDEF_PRICE: i64 = i64::MAX;

fn side(c: std::ffi::c_char) -> Option<Side> {
    match c as u8 {
        b'B' => Some(Side::Buy),
        b'A' => Some(Side::Sell),
        _ => None,
    }
}

/// Reads one DBN file; an iterator of [`Record`]s.
pub struct DbnReader {
    decoder: DynDecoder<'static, std::io::BufReader<Box<dyn std::io::Read + Send>>>,
    file_name: String,
    source: SourceId,
    symbols: HashMap<u32, Symbol>,
    /// The schema the file's metadata names (`None` for a file of several).
    schema: Option<dbn::Schema>,
    books: HashMap<u32, L3Replay>,
    last_ts: HashMap<u32, u64>,
    record_no: u64,
    out: VecDeque<Record>,
    events: Vec<MarketEvent>,
    started: bool,
    done: bool,
    /// For an uncompressed DBN 3 file (records read as they are stored): its length and the
    /// bytes read up to the end of the last whole record. The decoder stops quietly at a record
    /// cut short; this tells that apart from a clean end.
    plain: Option<(u64, u64)>,
}

const UPGRADE: VersionUpgradePolicy = VersionUpgradePolicy::UpgradeToV3;

/// A DBN file's bytes, decompressed when it is zstd.
fn open_decompressed(
    path: &Path,
    read: &crate::BytesRead,
) -> Result<Box<dyn std::io::Read + Send>> {
    use std::io::BufRead;
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut file = std::io::BufReader::new(crate::Counted::new(file, read.clone()));
    let head = file.fill_buf().map_err(|e| Error::io(path, e))?;
    Ok(if head.starts_with(&[0x28, 0xB5, 0x2F, 0xFD]) {
        let zstd =
            zstd::stream::read::Decoder::with_buffer(file).map_err(|e| Error::io(path, e))?;
        Box::new(CutIsError(zstd))
    } else {
        Box::new(file)
    })
}

/// Reports a stream that ends early as an error: the DBN decoder takes `UnexpectedEof` for the
/// clean end of a file, which would make a cut-off zstd file look whole.
struct CutIsError<R>(R);

impl<R: std::io::Read> std::io::Read for CutIsError<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.0.read(buf).map_err(|e| {
            if e.kind() == std::io::ErrorKind::UnexpectedEof {
                std::io::Error::new(std::io::ErrorKind::InvalidData, format!("cut short: {e}"))
            } else {
                e
            }
        })
    }
}

/// An uncompressed DBN 3 file's length and the length of its metadata (with its 8-byte prefix),
/// or `None` for any other file.
fn plain_layout(path: &Path) -> Option<(u64, u64)> {
    use std::io::Read;
    let mut f = std::fs::File::open(path).ok()?;
    let mut head = [0u8; 8];
    f.read_exact(&mut head).ok()?;
    if &head[..3] != b"DBN" || head[3] != dbn::DBN_VERSION {
        return None;
    }
    let meta = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
    Some((f.metadata().ok()?.len(), 8 + u64::from(meta)))
}

impl DbnReader {
    /// Opens a `.dbn` or `.dbn.zst` file.
    pub fn open(path: &Path) -> Result<Self> {
        Self::open_counted(path, &crate::BytesRead::default())
    }

    /// [`open`](Self::open), counting the bytes read from the file into `read`.
    pub fn open_counted(path: &Path, read: &crate::BytesRead) -> Result<Self> {
        let decoder = DynDecoder::new(open_decompressed(path, read)?, Compression::None, UPGRADE)
            .map_err(|e| Error::format(path, e.to_string()))?;
        let mut symbols = HashMap::new();
        for m in &decoder.metadata().mappings {
            for iv in &m.intervals {
                if let (Ok(id), Ok(sym)) = (
                    iv.symbol.parse::<u32>(),
                    Symbol::new(&m.raw_symbol.replace([' ', '/'], "_")),
                ) {
                    symbols.insert(id, sym);
                }
            }
        }
        let schema = decoder.metadata().schema;
        Ok(DbnReader {
            schema,
            decoder,
            file_name: path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            source: SourceId::for_file(path).map_err(|e| Error::io(path, e))?,
            symbols,
            books: HashMap::new(),
            last_ts: HashMap::new(),
            record_no: 0,
            out: VecDeque::new(),
            events: Vec::new(),
            started: false,
            done: false,
            plain: plain_layout(path),
        })
    }

    /// The file cannot be read on (`e`): the records before stay, a dead letter says so, and
    /// the file ends here.
    fn unreadable(&mut self, e: std::io::Error) {
        self.record_no += 1;
        let bad = crate::binance::BadLine::unreadable(&e, &[]);
        self.dead(bad.reason, bad.detail, bad.raw);
        self.done = true;
        self.out.push_back(Record::SourceDone(self.source.clone()));
    }

    fn symbol(&mut self, id: u32) -> Symbol {
        self.symbols
            .entry(id)
            .or_insert_with(|| Symbol::new(&format!("ID{id}")).expect("valid"))
            .clone()
    }

    fn dead(&mut self, reason: DeadLetterReason, detail: String, raw: String) {
        self.out.push_back(Record::Dead(DeadLetter {
            source: self.source.to_string(),
            position: format!("{}:record {}", self.file_name, self.record_no),
            reason,
            detail,
            raw,
        }));
    }

    /// Common checks: time order per instrument, finite positive price, positive size.
    fn check(
        &mut self,
        id: u32,
        ts: u64,
        price: i64,
        size: u32,
        need_price: bool,
    ) -> std::result::Result<(), (DeadLetterReason, String)> {
        let last = self.last_ts.entry(id).or_insert(0);
        if ts < *last {
            return Err((
                DeadLetterReason::TimeWentBack,
                format!("ts_event {ts} after {last}"),
            ));
        }
        *last = ts;
        if need_price {
            if price == UNDEF_PRICE {
                return Err((DeadLetterReason::NotFinite, "undefined price".into()));
            }
            if price <= 0 {
                return Err((DeadLetterReason::NonPositivePrice, format!("price {price}")));
            }
            if size == 0 {
                return Err((DeadLetterReason::NonPositiveSize, "size 0".into()));
            }
        }
        Ok(())
    }

    fn mbo(&mut self, m: &MboMsg) {
        let raw = format!("{m:?}");
        let id = m.hd.instrument_id;
        let action = m.action as u8;
        let needs_price = matches!(action, b'A' | b'C' | b'M' | b'F' | b'T');
        if let Err((r, d)) = self.check(id, m.hd.ts_event, m.price, m.size, needs_price) {
            return self.dead(r, d, raw);
        }
        let sym = self.symbol(id);
        let ts = UnixNanos(m.hd.ts_event as i64);
        let local = Some(UnixNanos(m.ts_recv as i64));
        let replay = self
            .books
            .entry(id)
            .or_insert_with(|| L3Replay::new(sym.clone()));
        let price = Price::from_raw(m.price);
        let size = Size::from_units(m.size as i64);
        let (l3, s) = match (action, side(m.side)) {
            (b'R', _) => {
                let mut events = std::mem::take(&mut self.events);
                events.clear();
                replay.clear(ts, self.record_no, &mut events);
                for e in events.drain(..) {
                    self.out.push_back(Record::Event(match e {
                        MarketEvent::Bbo(s, mut b) => {
                            b.local_ts = local;
                            MarketEvent::Bbo(s, b)
                        }
                        other => other,
                    }));
                }
                self.events = events;
                return;
            }
            (b'T', Some(aggr)) => {
                let t = Trade {
                    ts,
                    local_ts: local,
                    trade_id: None,
                    price,
                    size,
                    aggressor: aggr,
                };
                self.out
                    .push_back(Record::Event(MarketEvent::Trade(sym, t)));
                return;
            }
            (b'T', None) => (L3Action::Cross, Side::Buy),
            (b'A', Some(s)) => (L3Action::Add, s),
            (b'C', Some(s)) => (L3Action::Cancel, s),
            (b'M', Some(s)) => (L3Action::Modify, s),
            (b'F', Some(s)) => (L3Action::Execute, s),
            (b'N', _) => return,
            (a, s) => {
                return self.dead(
                    DeadLetterReason::Unparsable,
                    format!("action {:?} side {s:?}", a as char),
                    raw,
                );
            }
        };
        let ev = OrderEvent {
            ts,
            seq: self.record_no,
            action: l3,
            order_id: OrderId(m.order_id),
            side: s,
            price,
            size,
        };
        self.events.clear();
        let mut events = std::mem::take(&mut self.events);
        match replay.apply(ev, &mut events) {
            Ok(()) => {
                for e in events.drain(..) {
                    match e {
                        // Fills are book events; the trade prints come from `T` records.
                        MarketEvent::Trade(..) => {}
                        MarketEvent::Bbo(s, mut b) => {
                            b.local_ts = local;
                            self.out.push_back(Record::Event(MarketEvent::Bbo(s, b)));
                        }
                        other => self.out.push_back(Record::Event(other)),
                    }
                }
            }
            Err(rej) => self.dead(rej.reason, rej.detail, raw),
        }
        self.events = events;
    }

    fn mbp10(&mut self, m: &Mbp10Msg) {
        let raw = format!("{m:?}");
        let id = m.hd.instrument_id;
        let action = m.action as u8;
        if let Err((r, d)) = self.check(
            id,
            m.hd.ts_event,
            m.price,
            m.size,
            matches!(action, b'A' | b'C' | b'M' | b'T'),
        ) {
            return self.dead(r, d, raw);
        }
        let sym = self.symbol(id);
        let ts = UnixNanos(m.hd.ts_event as i64);
        let local = Some(UnixNanos(m.ts_recv as i64));
        let mut top = L2Book::default();
        for l in &m.levels {
            if l.bid_px != UNDEF_PRICE && l.bid_sz > 0 {
                top.set_level(
                    Side::Buy,
                    Price::from_raw(l.bid_px),
                    Size::from_units(l.bid_sz as i64),
                );
            }
            if l.ask_px != UNDEF_PRICE && l.ask_sz > 0 {
                top.set_level(
                    Side::Sell,
                    Price::from_raw(l.ask_px),
                    Size::from_units(l.ask_sz as i64),
                );
            }
        }
        if top.is_crossed() {
            return self.dead(
                DeadLetterReason::CrossedBook,
                "best bid >= best ask".into(),
                raw,
            );
        }
        match (action, side(m.side)) {
            (b'T', Some(aggr)) => {
                let t = Trade {
                    ts,
                    local_ts: local,
                    trade_id: None,
                    price: Price::from_raw(m.price),
                    size: Size::from_units(m.size as i64),
                    aggressor: aggr,
                };
                self.out
                    .push_back(Record::Event(MarketEvent::Trade(sym, t)));
                return;
            }
            (b'A' | b'C' | b'M', Some(s)) => {
                let p = Price::from_raw(m.price);
                let lv = vec![(p, top.level(s, p))];
                let (bids, asks) = if s == Side::Buy {
                    (lv, Vec::new())
                } else {
                    (Vec::new(), lv)
                };
                let d = DepthUpdate {
                    ts,
                    local_ts: local,
                    first_update_id: m.sequence as u64,
                    final_update_id: m.sequence as u64,
                    prev_final_update_id: None,
                    bids,
                    asks,
                    is_snapshot: false,
                };
                self.out
                    .push_back(Record::Event(MarketEvent::Depth(sym.clone(), Box::new(d))));
            }
            _ => {}
        }
        let b = BboUpdate {
            ts: Some(ts),
            local_ts: local,
            update_id: Some(m.sequence as u64),
            bid: top.best_bid(),
            ask: top.best_ask(),
            gap: false,
        };
        self.out
            .push_back(Record::Event(MarketEvent::Bbo(sym, Box::new(b))));
    }

    fn trade(&mut self, m: &TradeMsg) {
        let raw = format!("{m:?}");
        let id = m.hd.instrument_id;
        if let Err((r, d)) = self.check(id, m.hd.ts_event, m.price, m.size, true) {
            return self.dead(r, d, raw);
        }
        let Some(aggr) = side(m.side) else {
            return self.dead(
                DeadLetterReason::Unparsable,
                "trade without an aggressor side".into(),
                raw,
            );
        };
        let sym = self.symbol(id);
        let t = Trade {
            ts: UnixNanos(m.hd.ts_event as i64),
            local_ts: Some(UnixNanos(m.ts_recv as i64)),
            trade_id: Some(m.sequence as u64),
            price: Price::from_raw(m.price),
            size: Size::from_units(m.size as i64),
            aggressor: aggr,
        };
        self.out
            .push_back(Record::Event(MarketEvent::Trade(sym, t)));
    }

    fn step(&mut self) -> Result<()> {
        if self.record_no == 0 && !self.started {
            self.started = true;
            self.out.push_back(Record::SourceStart(self.source.clone()));
        }
        let rec = match self.decoder.decode_record_ref() {
            Ok(Some(r)) => r,
            Ok(None) => {
                if let Some((len, read)) = self.plain
                    && read < len
                {
                    let e = std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        format!("the file ends {} bytes into a record", len - read),
                    );
                    self.unreadable(e);
                    return Ok(());
                }
                self.done = true;
                self.out.push_back(Record::SourceDone(self.source.clone()));
                return Ok(());
            }
            Err(e) => {
                self.unreadable(std::io::Error::other(e));
                return Ok(());
            }
        };
        if let Some((_, read)) = &mut self.plain {
            *read += rec.as_ref().len() as u64;
        }
        self.record_no += 1;
        // Owned copies, so the decoder's borrow ends before the record is handled.
        let schema = self.schema;
        let msg = match dbn::RecordRefEnum::try_from(rec) {
            Ok(dbn::RecordRefEnum::Mbo(m)) => Msg::Mbo(m.clone()),
            Ok(dbn::RecordRefEnum::Mbp10(m)) => Msg::Mbp10(Box::new(m.clone())),
            Ok(dbn::RecordRefEnum::Trade(m)) => Msg::Trade(m.clone()),
            Ok(dbn::RecordRefEnum::Mbp1(m)) => {
                // TBBO records are MBP-1 records of trades (rtype TBBO, or MBP-1 in a TBBO file).
                let tbbo = m.hd.rtype == rtype::TBBO || schema == Some(dbn::Schema::Tbbo);
                Msg::Top(
                    Top::levels(
                        &m.hd,
                        m.ts_recv,
                        &m.levels[0],
                        m.sequence,
                        if tbbo {
                            TopKind::TradeAfter(m.price, m.size, m.side)
                        } else {
                            TopKind::Event(m.price, m.size, m.side, m.action)
                        },
                    ),
                    format!("{m:?}"),
                )
            }
            Ok(dbn::RecordRefEnum::Cmbp1(m)) => {
                let tcbbo = m.hd.rtype == rtype::TCBBO || schema == Some(dbn::Schema::Tcbbo);
                let pair = consolidated(&m.levels[0]);
                Msg::Top(
                    Top::levels(
                        &m.hd,
                        m.ts_recv,
                        &pair,
                        0,
                        if tcbbo {
                            TopKind::TradeAfter(m.price, m.size, m.side)
                        } else {
                            TopKind::Event(m.price, m.size, m.side, m.action)
                        },
                    ),
                    format!("{m:?}"),
                )
            }
            Ok(dbn::RecordRefEnum::Bbo(m)) => Msg::Top(
                Top::levels(&m.hd, m.ts_recv, &m.levels[0], m.sequence, TopKind::Sampled),
                format!("{m:?}"),
            ),
            Ok(dbn::RecordRefEnum::Cbbo(m)) => {
                let pair = consolidated(&m.levels[0]);
                Msg::Top(
                    Top::levels(&m.hd, m.ts_recv, &pair, 0, TopKind::Sampled),
                    format!("{m:?}"),
                )
            }
            Ok(dbn::RecordRefEnum::Ohlcv(m)) => Msg::Ohlcv(m.clone()),
            Ok(dbn::RecordRefEnum::SymbolMapping(m)) => Msg::Mapping(
                m.hd.instrument_id,
                m.stype_in_symbol().unwrap_or_default().to_string(),
            ),
            Ok(dbn::RecordRefEnum::Status(m)) => Msg::Unsupported("status", format!("{m:?}")),
            Ok(dbn::RecordRefEnum::InstrumentDef(m)) => {
                Msg::Unsupported("definition", format!("{m:?}"))
            }
            Ok(dbn::RecordRefEnum::Imbalance(m)) => Msg::Unsupported("imbalance", format!("{m:?}")),
            Ok(dbn::RecordRefEnum::Stat(m)) => Msg::Unsupported("statistics", format!("{m:?}")),
            Ok(dbn::RecordRefEnum::Error(m)) => Msg::Unsupported("error", format!("{m:?}")),
            Ok(dbn::RecordRefEnum::System(m)) => Msg::Unsupported("system", format!("{m:?}")),
            Err(_) => Msg::Unsupported("unknown", format!("rtype {:#04x}", rec.header().rtype)),
        };
        match msg {
            Msg::Mbo(m) => self.mbo(&m),
            Msg::Mbp10(m) => self.mbp10(&m),
            Msg::Trade(m) => self.trade(&m),
            Msg::Top(t, raw) => self.top(&t, raw),
            Msg::Ohlcv(m) => self.ohlcv(&m),
            Msg::Mapping(id, sym) => {
                if let Ok(sym) = Symbol::new(&sym.replace([' ', '/'], "_")) {
                    self.symbols.insert(id, sym);
                }
            }
            Msg::Unsupported(kind, raw) => {
                let schema = self.schema_name();
                self.dead(
                    DeadLetterReason::UnsupportedRecord,
                    format!("{kind}: FlowSense reads no {kind} records (schema {schema})"),
                    raw,
                );
            }
        }
        Ok(())
    }

    /// The file's schema as Databento names it (`mixed` when the metadata names none).
    fn schema_name(&self) -> &'static str {
        self.schema.map_or("mixed", |s| s.as_str())
    }

    /// A top-of-book record (MBP-1, TBBO, BBO, CMBP-1, TCBBO, CBBO): the venue's top into
    /// `quotes` and `bbo`, and the trade it carries (MBP-1 and CMBP-1 `T` records, every TBBO
    /// and TCBBO record) into `trades`.
    fn top(&mut self, t: &Top, raw: String) {
        let trade = match t.kind {
            TopKind::Event(px, sz, side_c, action) if action as u8 == b'T' => {
                Some((px, sz, side_c))
            }
            TopKind::TradeAfter(px, sz, side_c) => Some((px, sz, side_c)),
            _ => None,
        };
        let (price, size) = trade.map_or((0, 0), |(p, s, _)| (p, s));
        if let Err((r, d)) = self.check(t.id, t.ts_event, price, size, trade.is_some()) {
            return self.dead(r, d, raw);
        }
        let level = |px: i64, sz: u32| {
            (px != UNDEF_PRICE && px > 0 && sz > 0)
                .then(|| (Price::from_raw(px), Size::from_units(sz as i64)))
        };
        let (bid, ask) = (level(t.bid.0, t.bid.1), level(t.ask.0, t.ask.1));
        if let (Some(b), Some(a)) = (bid, ask)
            && b.0 >= a.0
        {
            return self.dead(
                DeadLetterReason::CrossedBook,
                format!("best bid {} >= best ask {}", b.0, a.0),
                raw,
            );
        }
        let sym = self.symbol(t.id);
        let ts = UnixNanos(t.ts_event as i64);
        let local = Some(UnixNanos(t.ts_recv as i64));
        if bid.is_some() || ask.is_some() {
            let b = BboUpdate {
                ts: Some(ts),
                local_ts: local,
                update_id: (t.sequence > 0).then_some(t.sequence as u64),
                bid,
                ask,
                gap: false,
            };
            self.out.push_back(Record::Event(MarketEvent::Quote(
                sym.clone(),
                Box::new(b.clone()),
            )));
            self.out
                .push_back(Record::Event(MarketEvent::Bbo(sym.clone(), Box::new(b))));
        }
        if let Some((px, sz, side_c)) = trade {
            let Some(aggressor) = side(side_c) else {
                // An auction or off-book trade has no aggressor: the trades table needs one.
                return self.dead(
                    DeadLetterReason::Unparsable,
                    "trade without an aggressor side".into(),
                    raw,
                );
            };
            let tr = Trade {
                ts,
                local_ts: local,
                trade_id: (t.sequence > 0).then_some(t.sequence as u64),
                price: Price::from_raw(px),
                size: Size::from_units(sz as i64),
                aggressor,
            };
            self.out
                .push_back(Record::Event(MarketEvent::Trade(sym, tr)));
        }
    }

    /// An OHLCV record into `bars`, at its schema's interval (`ts_event` is the bar's open).
    fn ohlcv(&mut self, m: &OhlcvMsg) {
        let raw = format!("{m:?}");
        let interval: i64 = match m.hd.rtype {
            rtype::OHLCV_1S => 1_000_000_000,
            rtype::OHLCV_1M => 60_000_000_000,
            rtype::OHLCV_1H => 3_600_000_000_000,
            rtype::OHLCV_1D | rtype::OHLCV_EOD => UnixNanos::DAY,
            _ => match self.schema {
                Some(dbn::Schema::Ohlcv1S) => 1_000_000_000,
                Some(dbn::Schema::Ohlcv1M) => 60_000_000_000,
                Some(dbn::Schema::Ohlcv1H) => 3_600_000_000_000,
                Some(dbn::Schema::Ohlcv1D | dbn::Schema::OhlcvEod) => UnixNanos::DAY,
                _ => {
                    return self.dead(
                        DeadLetterReason::Unparsable,
                        "an OHLCV record of no known interval".into(),
                        raw,
                    );
                }
            },
        };
        let id = m.hd.instrument_id;
        if let Err((r, d)) = self.check(id, m.hd.ts_event, m.open, 1, true) {
            return self.dead(r, d, raw);
        }
        let prices = [m.open, m.high, m.low, m.close];
        if prices.iter().any(|p| *p == UNDEF_PRICE || *p <= 0) {
            return self.dead(
                DeadLetterReason::NonPositivePrice,
                format!("prices {prices:?}"),
                raw,
            );
        }
        let [o, h, l, c] = prices;
        if h < o.max(c).max(l) || l > o.min(c) {
            return self.dead(
                DeadLetterReason::InconsistentBar,
                format!("open {o} high {h} low {l} close {c} (1e-9 units)"),
                raw,
            );
        }
        let Ok(volume) = i64::try_from(m.volume) else {
            return self.dead(
                DeadLetterReason::NonPositiveSize,
                format!("volume {}", m.volume),
                raw,
            );
        };
        let sym = self.symbol(id);
        let bar = Bar {
            open_time: UnixNanos(m.hd.ts_event as i64),
            interval,
            open: Price::from_raw(o),
            high: Price::from_raw(h),
            low: Price::from_raw(l),
            close: Price::from_raw(c),
            volume: Size::from_units(volume),
            trades: None,
        };
        self.out
            .push_back(Record::Event(MarketEvent::Bar(sym, Box::new(bar))));
    }
}

/// A consolidated top's prices and sizes, without the publishers that quote them.
fn consolidated(l: &dbn::ConsolidatedBidAskPair) -> dbn::BidAskPair {
    dbn::BidAskPair {
        bid_px: l.bid_px,
        ask_px: l.ask_px,
        bid_sz: l.bid_sz,
        ask_sz: l.ask_sz,
        ..Default::default()
    }
}

/// A decoded record, owned.
enum Msg {
    Mbo(MboMsg),
    Mbp10(Box<Mbp10Msg>),
    Trade(TradeMsg),
    Top(Top, String),
    Ohlcv(OhlcvMsg),
    Mapping(u32, String),
    Unsupported(&'static str, String),
}

/// What a top-of-book record carries besides the top.
#[derive(Clone, Copy, Debug)]
enum TopKind {
    /// MBP-1 / CMBP-1: an event (price, size, side, action) and the top after it.
    Event(i64, u32, std::ffi::c_char, std::ffi::c_char),
    /// TBBO / TCBBO: a trade (price, size, aggressor) and the top just before it.
    TradeAfter(i64, u32, std::ffi::c_char),
    /// BBO / CBBO: the top sampled at the end of an interval.
    Sampled,
}

/// A top-of-book record's fields.
#[derive(Clone, Copy, Debug)]
struct Top {
    id: u32,
    ts_event: u64,
    ts_recv: u64,
    sequence: u32,
    /// (price, size) of the best bid and ask.
    bid: (i64, u32),
    ask: (i64, u32),
    kind: TopKind,
}

impl Top {
    fn levels(
        hd: &dbn::RecordHeader,
        ts_recv: u64,
        l: &dbn::BidAskPair,
        sequence: u32,
        kind: TopKind,
    ) -> Top {
        Top {
            id: hd.instrument_id,
            ts_event: hd.ts_event,
            ts_recv,
            sequence,
            bid: (l.bid_px, l.bid_sz),
            ask: (l.ask_px, l.ask_sz),
            kind,
        }
    }
}

impl crate::StepReader for DbnReader {
    fn step(&mut self) -> Result<()> {
        DbnReader::step(self)
    }

    fn queue(&mut self) -> (&mut VecDeque<Record>, &mut bool) {
        (&mut self.out, &mut self.done)
    }
}

impl Iterator for DbnReader {
    type Item = Result<Record>;

    fn next(&mut self) -> Option<Self::Item> {
        crate::StepReader::next_record(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dbn::encode::{EncodeRecord, dbn::Encoder};
    use dbn::{
        BboMsg, CbboMsg, Cmbp1Msg, ImbalanceMsg, InstrumentDefMsg, MappingInterval, Mbp1Msg,
        Metadata, SType, Schema, StatMsg, StatusMsg, SymbolMapping,
    };

    fn write_mbo(path: &Path, events: &[OrderEvent]) {
        let date = time::Date::from_calendar_date(2024, time::Month::January, 2).unwrap();
        let meta = Metadata::builder()
            .dataset("XNAS.ITCH".to_string())
            .schema(Some(Schema::Mbo))
            .start(0)
            .stype_in(Some(SType::RawSymbol))
            .stype_out(SType::InstrumentId)
            .mappings(vec![SymbolMapping {
                raw_symbol: "SYN000".into(),
                intervals: vec![MappingInterval {
                    start_date: date,
                    end_date: date.next_day().unwrap(),
                    symbol: "7".into(),
                }],
            }])
            .build();
        let file = std::fs::File::create(path).unwrap();
        let mut enc = Encoder::new(std::io::BufWriter::new(file), &meta).unwrap();
        for e in events {
            let action = match e.action {
                L3Action::Add => b'A',
                L3Action::Cancel | L3Action::Delete => b'C',
                L3Action::Execute => b'F',
                _ => continue,
            };
            let rec = MboMsg {
                hd: dbn::RecordHeader::new::<MboMsg>(rtype::MBO, 1, 7, e.ts.0 as u64),
                order_id: e.order_id.0,
                price: e.price.raw(),
                size: (e.size.raw() / 1_000_000_000) as u32,
                action: action as std::ffi::c_char,
                side: if e.side == Side::Buy { b'B' } else { b'A' } as std::ffi::c_char,
                ts_recv: e.ts.0 as u64 + 1_000,
                sequence: e.seq as u32,
                ..Default::default()
            };
            enc.encode_record(&rec).unwrap();
        }
    }

    /// Every record of a DBN file.
    fn read_all(path: &Path) -> Vec<Record> {
        DbnReader::open(path).unwrap().map(|r| r.unwrap()).collect()
    }

    /// A synthetic day of one symbol: its generator (to ask for the book at the end) and its
    /// order messages, resting orders first.
    fn synthetic_day(events_per_day: u64) -> (crate::synth::DayGenerator, Vec<OrderEvent>) {
        use crate::synth::{DayGenerator, SynthConfig};
        let cfg = SynthConfig {
            symbols: 1,
            days: 1,
            events_per_day,
            ..Default::default()
        };
        let mut g = DayGenerator::new(&cfg, 0, 0, cfg.dates()[0]);
        let mut events: Vec<OrderEvent> = g.initial_orders().to_vec();
        let mut more = Vec::new();
        while g.next_events(&mut more) {
            events.append(&mut more);
        }
        (g, events)
    }

    /// A synthetic day written as DBN MBO reads back into the same book as the synthetic market.
    #[test]
    fn mbo_round_trip_rebuilds_the_same_book() {
        let (g, events) = synthetic_day(5_000);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("syn.mbo.dbn");
        write_mbo(&path, &events);
        let records: Vec<Record> = read_all(&path);
        assert!(records.iter().all(|r| !matches!(r, Record::Dead(_))));
        let last_bbo = records.iter().rev().find_map(|r| match r {
            Record::Event(MarketEvent::Bbo(s, b)) => Some((s.clone(), b.clone())),
            _ => None,
        });
        let (sym, bbo) = last_bbo.unwrap();
        assert_eq!(sym.as_str(), "SYN000");
        let (asks, bids) = g.top(1);
        assert_eq!(bbo.bid, bids.first().copied());
        assert_eq!(bbo.ask, asks.first().copied());
        assert_eq!(bbo.local_ts.unwrap().0 - bbo.ts.unwrap().0, 1_000);
    }

    /// A file cut off mid-record keeps the records before the cut and ends with one dead letter.
    #[test]
    fn a_cut_off_file_keeps_its_records_and_ends_in_a_dead_letter() {
        let (_, events) = synthetic_day(40_000);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("syn.mbo.dbn");
        write_mbo(&path, &events);
        let whole: Vec<Record> = read_all(&path);
        let bytes = std::fs::read(&path).unwrap();
        // Half a record short of the end.
        let cut = bytes.len() - std::mem::size_of::<MboMsg>() / 2;
        std::fs::write(&path, &bytes[..cut]).unwrap();
        let records: Vec<Record> = read_all(&path);
        let dead = crate::dead_letters(&records);
        assert_eq!(dead.len(), 1, "{dead:?}");
        assert_eq!(dead[0].reason, DeadLetterReason::Unreadable);
        assert_eq!(
            dead[0].position,
            format!("syn.mbo.dbn:record {}", events.len()),
            "the last record is the one cut"
        );
        assert!(matches!(records.last(), Some(Record::SourceDone(_))));
        let n_events = |rs: &[Record]| rs.iter().filter(|r| matches!(r, Record::Event(_))).count();
        assert!(n_events(&records) > 0);
        assert!(n_events(&records) < n_events(&whole));

        // Compressed: the zstd stream cut short is an error the reader reports the same way.
        let zst = dir.path().join("syn.mbo.dbn.zst");
        let mut w = dbn::encode::DynWriter::new(
            std::fs::File::create(&zst).unwrap(),
            dbn::Compression::Zstd,
        )
        .unwrap();
        std::io::Write::write_all(&mut w, &bytes).unwrap();
        drop(w);
        let packed = std::fs::read(&zst).unwrap();
        std::fs::write(&zst, &packed[..packed.len() * 3 / 4]).unwrap();
        let records: Vec<Record> = read_all(&zst);
        let reasons: Vec<_> = records
            .iter()
            .filter_map(|r| match r {
                Record::Dead(d) => Some(d.reason),
                _ => None,
            })
            .collect();
        assert_eq!(reasons, [DeadLetterReason::Unreadable]);
        assert!(n_events(&records) > 0);
    }

    fn meta(schema: Option<Schema>, version: u8) -> Metadata {
        let date = time::Date::from_calendar_date(2024, time::Month::January, 2).unwrap();
        Metadata::builder()
            .dataset("XNAS.ITCH".to_string())
            .schema(schema)
            .version(version)
            .start(0)
            .stype_in(Some(SType::RawSymbol))
            .stype_out(SType::InstrumentId)
            .mappings(vec![SymbolMapping {
                raw_symbol: "SYN000".into(),
                intervals: vec![MappingInterval {
                    start_date: date,
                    end_date: date.next_day().unwrap(),
                    symbol: "7".into(),
                }],
            }])
            .build()
    }

    /// A file of `schema` (DBN `version`) holding `records`.
    fn write<R: dbn::encode::DbnEncodable>(
        path: &Path,
        schema: Option<Schema>,
        version: u8,
        records: &[R],
    ) {
        let file = std::fs::File::create(path).unwrap();
        let mut enc = Encoder::new(std::io::BufWriter::new(file), &meta(schema, version)).unwrap();
        for r in records {
            enc.encode_record(r).unwrap();
        }
    }

    const T0: u64 = 1_704_205_800_000_000_000; // 2024-01-02 14:30 UTC
    fn hd<R: dbn::HasRType>(rt: u8, k: u64) -> dbn::RecordHeader {
        dbn::RecordHeader::new::<R>(rt, 1, 7, T0 + k * 1_000_000_000)
    }
    fn px(p: f64) -> i64 {
        (p * 1e9).round() as i64
    }
    fn pair(bid: f64, ask: f64) -> dbn::BidAskPair {
        dbn::BidAskPair {
            bid_px: px(bid),
            ask_px: px(ask),
            bid_sz: 5,
            ask_sz: 7,
            ..Default::default()
        }
    }

    /// (table, symbol, ts offset in s, a price) of an event.
    type Landed = (&'static str, String, u64, f64);

    /// Every event, and the dead letters' reasons.
    fn tables(path: &Path) -> (Vec<Landed>, Vec<String>) {
        let mut events = Vec::new();
        let mut dead = Vec::new();
        for r in read_all(path) {
            match r {
                Record::Event(e) => {
                    let (table, price) = match &e {
                        MarketEvent::Quote(_, b) => ("quotes", b.bid.unwrap().0.as_f64()),
                        MarketEvent::Bbo(_, b) => ("bbo", b.ask.unwrap().0.as_f64()),
                        MarketEvent::Trade(_, t) => ("trades", t.price.as_f64()),
                        MarketEvent::Bar(_, b) => ("bars", b.close.as_f64()),
                        MarketEvent::Depth(..) => ("depth_updates", 0.0),
                        MarketEvent::Order(..) => ("book_events", 0.0),
                    };
                    let k = (e.ts().0 as u64 - T0) / 1_000_000_000;
                    events.push((table, e.symbol().to_string(), k, price));
                }
                Record::Dead(d) => dead.push(d.reason_text()),
                _ => {}
            }
        }
        (events, dead)
    }

    #[test]
    fn top_of_book_schemas_read_into_quotes_bbo_and_trades() {
        let dir = tempfile::tempdir().unwrap();
        let c = |b: u8| b as std::ffi::c_char;
        let mbp1 = |rt: u8, k: u64, action: u8, side: u8, price: f64| Mbp1Msg {
            hd: hd::<Mbp1Msg>(rt, k),
            price: px(price),
            size: 2,
            action: c(action),
            side: c(side),
            ts_recv: T0 + k * 1_000_000_000 + 500,
            sequence: k as u32 + 1,
            levels: [pair(99.0, 101.0)],
            ..Default::default()
        };
        // MBP-1: an add (the top after it), then a trade.
        let p = dir.path().join("a.mbp-1.dbn");
        write(
            &p,
            Some(Schema::Mbp1),
            3,
            &[
                mbp1(rtype::MBP_1, 0, b'A', b'B', 99.0),
                mbp1(rtype::MBP_1, 1, b'T', b'A', 99.0),
            ],
        );
        let (ev, dead) = tables(&p);
        assert!(dead.is_empty(), "{dead:?}");
        assert_eq!(
            ev,
            [
                ("quotes", "SYN000".into(), 0, 99.0),
                ("bbo", "SYN000".into(), 0, 101.0),
                ("quotes", "SYN000".into(), 1, 99.0),
                ("bbo", "SYN000".into(), 1, 101.0),
                ("trades", "SYN000".into(), 1, 99.0),
            ]
        );
        // TBBO (rtype TBBO, and MBP-1 records in a TBBO file): every record is a trade.
        for (rt, name) in [(rtype::TBBO, "a.tbbo.dbn"), (rtype::MBP_1, "b.tbbo.dbn")] {
            let p = dir.path().join(name);
            write(&p, Some(Schema::Tbbo), 3, &[mbp1(rt, 0, b'T', b'B', 101.0)]);
            let (ev, dead) = tables(&p);
            assert!(dead.is_empty(), "{dead:?}");
            let kinds: Vec<_> = ev.iter().map(|e| e.0).collect();
            assert_eq!(kinds, ["quotes", "bbo", "trades"], "{name}");
            assert_eq!(ev[2].3, 101.0);
        }
        // BBO-1s and -1m: sampled tops.
        for (schema, rt) in [
            (Schema::Bbo1S, rtype::BBO_1S),
            (Schema::Bbo1M, rtype::BBO_1M),
        ] {
            let p = dir.path().join(format!("{}.dbn", schema.as_str()));
            let rec = |k| BboMsg {
                hd: hd::<BboMsg>(rt, k),
                ts_recv: T0 + (k + 1) * 1_000_000_000,
                levels: [pair(99.5, 100.5)],
                ..BboMsg::default_for_schema(schema)
            };
            write(&p, Some(schema), 3, &[rec(0), rec(1)]);
            let (ev, dead) = tables(&p);
            assert!(dead.is_empty(), "{dead:?}");
            let kinds: Vec<_> = ev.iter().map(|e| e.0).collect();
            assert_eq!(kinds, ["quotes", "bbo", "quotes", "bbo"], "{schema:?}");
        }
        // CMBP-1, TCBBO, CBBO-1s/1m: the consolidated tops.
        let cpair = dbn::ConsolidatedBidAskPair {
            bid_px: px(98.0),
            ask_px: px(102.0),
            bid_sz: 1,
            ask_sz: 1,
            ..Default::default()
        };
        for (schema, rt, kinds) in [
            (Schema::Cmbp1, rtype::CMBP_1, &["quotes", "bbo"][..]),
            (
                Schema::Tcbbo,
                rtype::TCBBO,
                &["quotes", "bbo", "trades"][..],
            ),
        ] {
            let p = dir.path().join(format!("{}.dbn", schema.as_str()));
            let rec = Cmbp1Msg {
                hd: hd::<Cmbp1Msg>(rt, 0),
                price: px(102.0),
                size: 1,
                action: c(if rt == rtype::TCBBO { b'T' } else { b'A' }),
                side: c(b'B'),
                levels: [cpair.clone()],
                ..Cmbp1Msg::default_for_schema(schema)
            };
            write(&p, Some(schema), 3, &[rec]);
            let (ev, dead) = tables(&p);
            assert!(dead.is_empty(), "{dead:?}");
            assert_eq!(
                ev.iter().map(|e| e.0).collect::<Vec<_>>(),
                kinds,
                "{schema:?}"
            );
        }
        for (schema, rt) in [
            (Schema::Cbbo1S, rtype::CBBO_1S),
            (Schema::Cbbo1M, rtype::CBBO_1M),
        ] {
            let p = dir.path().join(format!("{}.dbn", schema.as_str()));
            let rec = CbboMsg {
                hd: hd::<CbboMsg>(rt, 0),
                levels: [cpair.clone()],
                ..CbboMsg::default_for_schema(schema)
            };
            write(&p, Some(schema), 3, &[rec]);
            let (ev, dead) = tables(&p);
            assert!(dead.is_empty(), "{dead:?}");
            assert_eq!(
                ev.iter().map(|e| e.0).collect::<Vec<_>>(),
                ["quotes", "bbo"]
            );
        }
    }

    #[test]
    fn ohlcv_schemas_read_into_bars_at_their_interval() {
        let dir = tempfile::tempdir().unwrap();
        for (schema, rt, interval) in [
            (Schema::Ohlcv1S, rtype::OHLCV_1S, 1_000_000_000),
            (Schema::Ohlcv1M, rtype::OHLCV_1M, 60_000_000_000),
            (Schema::Ohlcv1H, rtype::OHLCV_1H, 3_600_000_000_000),
            (Schema::Ohlcv1D, rtype::OHLCV_1D, UnixNanos::DAY),
        ] {
            for version in 1..=3 {
                let p = dir
                    .path()
                    .join(format!("{}-v{version}.dbn", schema.as_str()));
                let bar = |k: u64, close: f64| OhlcvMsg {
                    hd: dbn::RecordHeader::new::<OhlcvMsg>(rt, 1, 7, T0 + k * interval as u64),
                    open: px(100.0),
                    high: px(103.0),
                    low: px(99.0),
                    close: px(close),
                    volume: 40,
                };
                // The third bar's high is under its close: refused, as the bars reader does.
                write(
                    &p,
                    Some(schema),
                    version,
                    &[bar(0, 101.0), bar(1, 102.0), bar(2, 104.0)],
                );
                let records = read_all(&p);
                let bars: Vec<_> = records
                    .iter()
                    .filter_map(|r| match r {
                        Record::Event(MarketEvent::Bar(s, b)) => {
                            Some((s.to_string(), b.interval, b.close.as_f64()))
                        }
                        _ => None,
                    })
                    .collect();
                assert_eq!(
                    bars,
                    [
                        ("SYN000".into(), interval, 101.0),
                        ("SYN000".into(), interval, 102.0)
                    ],
                    "{schema:?} v{version}"
                );
                let dead = crate::dead_letters(&records);
                assert_eq!(dead.len(), 1);
                assert_eq!(dead[0].reason, DeadLetterReason::InconsistentBar);
            }
        }
    }

    #[test]
    fn records_read_into_no_table_are_dead_letters_by_kind() {
        let dir = tempfile::tempdir().unwrap();
        let stat = StatMsg {
            hd: hd::<StatMsg>(rtype::STATISTICS, 0),
            ..Default::default()
        };
        let status = StatusMsg {
            hd: hd::<StatusMsg>(rtype::STATUS, 0),
            ..Default::default()
        };
        let imbalance = ImbalanceMsg {
            hd: hd::<ImbalanceMsg>(rtype::IMBALANCE, 0),
            ..Default::default()
        };
        let definition = InstrumentDefMsg {
            hd: hd::<InstrumentDefMsg>(rtype::INSTRUMENT_DEF, 0),
            ..Default::default()
        };
        let cases: [(Schema, &str, std::path::PathBuf); 4] = [
            (Schema::Statistics, "statistics", dir.path().join("s.dbn")),
            (Schema::Status, "status", dir.path().join("st.dbn")),
            (Schema::Imbalance, "imbalance", dir.path().join("i.dbn")),
            (Schema::Definition, "definition", dir.path().join("d.dbn")),
        ];
        write(&cases[0].2, Some(cases[0].0), 3, &[stat.clone(), stat]);
        write(&cases[1].2, Some(cases[1].0), 3, &[status]);
        write(&cases[2].2, Some(cases[2].0), 3, &[imbalance]);
        write(&cases[3].2, Some(cases[3].0), 3, &[definition]);
        for (schema, kind, p) in &cases {
            let (events, dead) = tables(p);
            assert!(events.is_empty());
            assert!(!dead.is_empty());
            for d in &dead {
                assert_eq!(
                    d,
                    &format!(
                        "unsupported_record: {kind}: FlowSense reads no {kind} records (schema {})",
                        schema.as_str()
                    )
                );
            }
        }
        // Definitions of DBN versions 1 and 2 are upgraded and reported the same way.
        for version in [1u8, 2] {
            let p = dir.path().join(format!("d{version}.dbn"));
            if version == 1 {
                let d = dbn::v1::InstrumentDefMsg {
                    hd: hd::<dbn::v1::InstrumentDefMsg>(rtype::INSTRUMENT_DEF, 0),
                    ..Default::default()
                };
                write(&p, Some(Schema::Definition), 1, &[d]);
            } else {
                let d = dbn::v2::InstrumentDefMsg {
                    hd: hd::<dbn::v2::InstrumentDefMsg>(rtype::INSTRUMENT_DEF, 0),
                    ..Default::default()
                };
                write(&p, Some(Schema::Definition), 2, &[d]);
            }
            let (events, dead) = tables(&p);
            assert!(events.is_empty());
            assert_eq!(dead.len(), 1, "v{version}");
            assert!(
                dead[0].starts_with("unsupported_record: definition"),
                "{dead:?}"
            );
        }
    }

    #[test]
    fn trades_of_every_version_read_the_same() {
        let dir = tempfile::tempdir().unwrap();
        let trade = |k| TradeMsg {
            hd: hd::<TradeMsg>(rtype::MBP_0, k),
            price: px(100.25),
            size: 3,
            action: b'T' as std::ffi::c_char,
            side: b'A' as std::ffi::c_char,
            ts_recv: T0 + k * 1_000_000_000 + 10,
            sequence: k as u32,
            ..Default::default()
        };
        let mut all = Vec::new();
        for version in 1..=3 {
            let p = dir.path().join(format!("t{version}.dbn"));
            write(&p, Some(Schema::Trades), version, &[trade(0), trade(1)]);
            let (ev, dead) = tables(&p);
            assert!(dead.is_empty());
            all.push(ev);
        }
        assert_eq!(all[0].len(), 2);
        assert!(all.iter().all(|e| e == &all[0]));
    }
}
