//! Databento DBN files (plain or zstd) through the `dbn` crate: MBO, MBP-10 and trades.
//!
//! - MBO goes through the shared L3 reconstruction: `A` add, `C` cancel (partial or whole),
//!   `M` modify, `F` fill of a resting order (book only), `T` trade (the `trades` row, with its
//!   aggressor), `R` clear book. A trade with no aggressor side (auctions) is kept as a `cross`
//!   book event.
//! - MBP-10 records carry the top ten levels after the event: the changed level becomes a
//!   `depth_updates` row, the top a `bbo` row, `T` records `trades` rows.
//! - Trades schema records become `trades` rows.
//!
//! `ts` is the matching engine's `ts_event`; `local_ts` is Databento's `ts_recv`. Symbols come from
//! the file's symbology mappings (instrument id to raw symbol).

use std::collections::{HashMap, VecDeque};
use std::path::Path;

use dbn::decode::{DbnMetadata, DecodeRecordRef, DynDecoder};
use dbn::{Compression, MboMsg, Mbp10Msg, TradeMsg, VersionUpgradePolicy};
use flowsense_core::{
    BboUpdate, DeadLetter, DeadLetterReason, DepthUpdate, L3Action, MarketEvent, OrderEvent,
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
        Ok(DbnReader {
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
                replay.book_mut().clear();
                let b = replay.bbo(ts);
                self.out
                    .push_back(Record::Event(MarketEvent::Bbo(sym, Box::new(b))));
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
        if let Some(m) = rec.get::<MboMsg>() {
            let m = m.clone();
            self.mbo(&m);
        } else if let Some(m) = rec.get::<Mbp10Msg>() {
            let m = m.clone();
            self.mbp10(&m);
        } else if let Some(m) = rec.get::<TradeMsg>() {
            let m = m.clone();
            self.trade(&m);
        }
        // Other record types (symbol mappings, system and status messages) carry no market data.
        Ok(())
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
    use dbn::{MappingInterval, Metadata, SType, Schema, SymbolMapping, rtype};

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
}
