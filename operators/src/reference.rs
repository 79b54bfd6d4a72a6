//! A direct, non-incremental recomputation of every feature, for tests: it keeps the whole event
//! list, rebuilds each book from the raw messages with its own plain code (resting orders or
//! level maps, sorted on demand), and evaluates each bucket's textbook formula over the events
//! inside it. The engine must agree with it row for row.

use std::collections::{BTreeMap, HashMap};

use flowsense_core::features::{MAX_LEVELS, RETURN_HORIZONS};
use flowsense_core::job::FeatureSpec;
use flowsense_core::{L3Action, MarketEvent, Side};

/// The book after one counted event, and what the event was.
#[derive(Clone, Debug)]
struct Snapshot {
    ts: i64,
    /// Best levels (price raw, size raw), best first.
    bids: Vec<(i64, i64)>,
    asks: Vec<(i64, i64)>,
    book_event: bool,
    /// A session's `clear`: no flow is measured across it.
    clear: bool,
    adds: u64,
    cancels: u64,
    trade: Option<(i64, i64, bool)>,
}

/// Recomputes the feature rows of one symbol's events (already in time order), bucket rows
/// only, as `(bucket label, ts) -> row`.
pub fn recompute(
    events: &[MarketEvent],
    spec: &FeatureSpec,
) -> BTreeMap<(String, i64), flowsense_core::FeatureRow> {
    let levels = spec.levels;
    let snaps = replay(events, levels);
    let mut out = BTreeMap::new();
    for w in &spec.buckets {
        let width = w.nanos() as i64;
        let label = w.to_string();
        // Which buckets hold events.
        let mut ends: Vec<i64> = snaps
            .iter()
            .map(|s| s.ts - s.ts.rem_euclid(width) + width)
            .collect();
        ends.dedup();
        let mut rows: Vec<flowsense_core::FeatureRow> = Vec::new();
        for end in ends {
            let start = end - width;
            let inside: Vec<usize> = (0..snaps.len())
                .filter(|&i| snaps[i].ts >= start && snaps[i].ts < end)
                .collect();
            let last = *inside.last().expect("a bucket with events");
            let s = &snaps[last];
            let sym = events[0].symbol().clone();
            let mut r = flowsense_core::FeatureRow::empty(sym, end, label.clone().into());
            r.events = inside.len() as u64;
            state(&mut r, s, levels);
            r.crossed = crossed(s);
            r.crossed_events = inside.iter().filter(|&&i| crossed(&snaps[i])).count() as u64;
            // OFI: formula on each consecutive pair of book states, the later one inside.
            let mut ofi = [0i128; MAX_LEVELS];
            for &i in &inside {
                if !snaps[i].book_event || snaps[i].clear {
                    continue;
                }
                let prev = (0..i).rev().find(|&j| snaps[j].book_event);
                let empty = Snapshot {
                    ts: 0,
                    bids: vec![],
                    asks: vec![],
                    book_event: true,
                    clear: false,
                    adds: 0,
                    cancels: 0,
                    trade: None,
                };
                let p = prev.map_or(&empty, |j| &snaps[j]);
                for (m, o) in ofi.iter_mut().enumerate().take(levels) {
                    *o += textbook_ofi(p, &snaps[i], m);
                }
            }
            let f = |x: i128| x as f64 / 1e9;
            r.ofi_levels = ofi.map(f);
            r.ofi_l1 = f(ofi[0]);
            r.ofi_l5 = f(ofi[..5].iter().sum());
            r.ofi_l10 = f(ofi.iter().sum());
            // Trades.
            let trades: Vec<(i64, i64, bool)> =
                inside.iter().filter_map(|&i| snaps[i].trade).collect();
            let (buy, sell): (i128, i128) = trades.iter().fold((0, 0), |(b, s), t| {
                if t.2 {
                    (b + t.1 as i128, s)
                } else {
                    (b, s + t.1 as i128)
                }
            });
            r.trade_count = trades.len() as u64;
            r.buy_volume = f(buy);
            r.sell_volume = f(sell);
            r.volume = f(buy + sell);
            r.signed_volume = f(buy - sell);
            if buy + sell > 0 {
                r.trade_imbalance = Some((buy - sell) as f64 / (buy + sell) as f64);
                let notional: f64 = trades.iter().map(|t| f(t.0 as i128) * f(t.1 as i128)).sum();
                r.vwap = Some(notional / r.volume);
                r.open = Some(f(trades[0].0 as i128));
                r.close = Some(f(trades[trades.len() - 1].0 as i128));
                r.high = trades.iter().map(|t| f(t.0 as i128)).reduce(f64::max);
                r.low = trades.iter().map(|t| f(t.0 as i128)).reduce(f64::min);
            }
            let secs = width as f64 * 1e-9;
            r.trade_intensity = trades.len() as f64 / secs;
            r.add_rate = inside.iter().map(|&i| snaps[i].adds).sum::<u64>() as f64 / secs;
            r.cancel_rate = inside.iter().map(|&i| snaps[i].cancels).sum::<u64>() as f64 / secs;
            // Realized volatility: squared log changes of the mid series at each book state.
            if r.mid.is_some() {
                let mids: Vec<(i64, Option<f64>)> = snaps[..=last]
                    .iter()
                    .filter(|s| s.book_event)
                    .map(|s| (s.ts, mid(s)))
                    .collect();
                let mut rv = 0.0;
                for k in 1..mids.len() {
                    if mids[k].0 >= start
                        && let (Some(a), Some(b)) = (mids[k - 1].1, mids[k].1)
                        && a != b
                    {
                        rv += (b / a).ln().powi(2);
                    }
                }
                r.realized_vol = Some(rv.sqrt());
            }
            // VPIN from all trades so far.
            let all: Vec<(f64, bool)> = snaps[..=last]
                .iter()
                .filter_map(|s| s.trade.map(|t| (f(t.1 as i128), t.2)))
                .collect();
            r.vpin = vpin(&all, spec.vpin_bucket_volume, spec.vpin_window);
            rows.push(r);
        }
        // Kyle's lambda and returns from the rows themselves.
        for k in 0..rows.len() {
            let mut pts = Vec::new();
            for j in 1..=k {
                if let (Some(a), Some(b)) = (rows[j - 1].mid, rows[j].mid) {
                    pts.push((rows[j].signed_volume, b - a));
                }
            }
            let from = pts.len().saturating_sub(spec.kyle_window);
            rows[k].kyle_lambda = crate::engine::ols_slope(pts[from..].iter().copied());
            if let Some(m) = rows[k].mid {
                let end = rows[k].ts;
                let rets: Vec<Option<f64>> = RETURN_HORIZONS
                    .iter()
                    .map(|h| {
                        let target = end - *h as i64 * width;
                        rows[..k]
                            .iter()
                            .rev()
                            .find(|p| p.ts <= target && p.mid.is_some())
                            .and_then(|p| p.mid)
                            .map(|p| (m / p).ln())
                    })
                    .collect();
                rows[k].ret_1b = rets[0];
                rows[k].ret_10b = rets[1];
                rows[k].ret_100b = rets[2];
            }
        }
        for r in rows {
            out.insert((label.clone(), r.ts), r);
        }
    }
    out
}

fn mid(s: &Snapshot) -> Option<f64> {
    match (s.bids.first(), s.asks.first()) {
        (Some(b), Some(a)) => Some((b.0 as i128 + a.0 as i128) as f64 / 2e9),
        _ => None,
    }
}

/// Best bid at or above best ask.
fn crossed(s: &Snapshot) -> bool {
    matches!((s.bids.first(), s.asks.first()), (Some(b), Some(a)) if b.0 >= a.0)
}

/// The OFI of level `m` between two book states, written as in the papers: bid flow minus ask
/// flow, each split on whether the level's price rose, stayed or fell.
fn textbook_ofi(prev: &Snapshot, cur: &Snapshot, m: usize) -> i128 {
    let get = |v: &Vec<(i64, i64)>, missing: i64| v.get(m).copied().unwrap_or((missing, 0));
    let (pb0, qb0) = get(&prev.bids, i64::MIN);
    let (pb, qb) = get(&cur.bids, i64::MIN);
    let (pa0, qa0) = get(&prev.asks, i64::MAX);
    let (pa, qa) = get(&cur.asks, i64::MAX);
    let bid_flow = match pb.cmp(&pb0) {
        std::cmp::Ordering::Greater => qb as i128,
        std::cmp::Ordering::Equal => qb as i128 - qb0 as i128,
        std::cmp::Ordering::Less => -(qb0 as i128),
    };
    let ask_flow = match pa.cmp(&pa0) {
        std::cmp::Ordering::Less => qa as i128,
        std::cmp::Ordering::Equal => qa as i128 - qa0 as i128,
        std::cmp::Ordering::Greater => -(qa0 as i128),
    };
    bid_flow - ask_flow
}

fn state(r: &mut flowsense_core::FeatureRow, s: &Snapshot, levels: usize) {
    let f = |x: i64| x as f64 / 1e9;
    let (b, a) = (&s.bids, &s.asks);
    if let Some(&(p, q)) = b.first() {
        r.bid_price = Some(f(p));
        r.bid_size = Some(f(q));
    }
    if let Some(&(p, q)) = a.first() {
        r.ask_price = Some(f(p));
        r.ask_size = Some(f(q));
    }
    for m in 0..levels.min(b.len()).min(a.len()) {
        r.depth_imbalance_levels[m] = (f(b[m].1) - f(a[m].1)) / (f(b[m].1) + f(a[m].1));
    }
    let b5: f64 = b.iter().take(5.min(levels)).map(|l| f(l.1)).sum();
    let a5: f64 = a.iter().take(5.min(levels)).map(|l| f(l.1)).sum();
    if b5 + a5 > 0.0 {
        r.depth_imbalance_l5 = Some((b5 - a5) / (b5 + a5));
    }
    let Some(m) = mid(s) else {
        return;
    };
    r.mid = Some(m);
    r.spread = Some((a[0].0 as i128 - b[0].0 as i128) as f64 / 1e9);
    r.depth_imbalance_l1 = Some(r.depth_imbalance_levels[0]);
    let (pb, qb, pa, qa) = (f(b[0].0), f(b[0].1), f(a[0].0), f(a[0].1));
    r.microprice = Some((pb * qa + pa * qb) / (qa + qb));
    let bl: Vec<(f64, f64)> = b.iter().take(levels).map(|l| (f(l.0), f(l.1))).collect();
    let al: Vec<(f64, f64)> = a.iter().take(levels).map(|l| (f(l.0), f(l.1))).collect();
    let bq: f64 = bl.iter().map(|l| l.1).sum();
    let aq: f64 = al.iter().map(|l| l.1).sum();
    let bv = bl.iter().map(|l| l.0 * l.1).sum::<f64>() / bq;
    let av = al.iter().map(|l| l.0 * l.1).sum::<f64>() / aq;
    r.weighted_mid = Some((bv * aq + av * bq) / (aq + bq));
    let mut slopes = vec![];
    let (bn, an) = (bl[bl.len() - 1].0, al[al.len() - 1].0);
    if m - bn > 0.0 {
        slopes.push(bq / (m - bn));
    }
    if an - m > 0.0 {
        slopes.push(aq / (an - m));
    }
    if !slopes.is_empty() {
        r.book_slope = Some(slopes.iter().sum::<f64>() / slopes.len() as f64);
    }
}

/// VPIN from a whole trade list: cut cumulative volume into buckets of V, average the last
/// `window` full buckets' |buy - sell| / V.
fn vpin(trades: &[(f64, bool)], size: Option<f64>, window: usize) -> Option<f64> {
    let v = match size {
        Some(v) => v,
        None if trades.len() >= crate::vpin::WARMUP_TRADES => {
            crate::vpin::AUTO_MULTIPLE
                * trades[..crate::vpin::WARMUP_TRADES]
                    .iter()
                    .map(|t| t.0)
                    .sum::<f64>()
                / crate::vpin::WARMUP_TRADES as f64
        }
        None => return None,
    };
    let mut full = Vec::new();
    let (mut b, mut s) = (0.0, 0.0);
    for &(mut q, buy) in trades {
        while q > v * 1e-12 {
            let take = q.min(v - b - s);
            if buy {
                b += take
            } else {
                s += take
            }
            q -= take;
            if b + s >= v * (1.0 - 1e-12) {
                full.push((b - s).abs() / v);
                b = 0.0;
                s = 0.0;
            }
        }
    }
    let last = &full[full.len().saturating_sub(window)..];
    (!last.is_empty()).then(|| last.iter().sum::<f64>() / last.len() as f64)
}

/// One side's levels, (price, size) fixed point.
type Side2 = Vec<(i64, i64)>;

/// `s` with the book, aggregated from scratch: L3 orders and seeded volume, or the L2 levels.
fn snapshot(
    mut s: Snapshot,
    orders: &HashMap<u64, (Side, i64, i64)>,
    seeded: &HashMap<(bool, i64), i64>,
    l2: &[BTreeMap<i64, i64>; 2],
    is_l3: bool,
    levels: usize,
) -> Snapshot {
    let (mut bids, mut asks): (Side2, Side2) = if is_l3 {
        let mut agg: [HashMap<i64, i64>; 2] = [HashMap::new(), HashMap::new()];
        for (side, px, sz) in orders.values() {
            *agg[(*side == Side::Sell) as usize].entry(*px).or_default() += sz;
        }
        for (&(sell, px), sz) in seeded {
            *agg[sell as usize].entry(px).or_default() += sz;
        }
        let [b, a] = agg;
        (b.into_iter().collect(), a.into_iter().collect())
    } else {
        (
            l2[0].iter().map(|(p, q)| (*p, *q)).collect(),
            l2[1].iter().map(|(p, q)| (*p, *q)).collect(),
        )
    };
    bids.sort_by_key(|x| std::cmp::Reverse(x.0));
    asks.sort_by_key(|x| x.0);
    bids.truncate(levels);
    asks.truncate(levels);
    s.bids = bids;
    s.asks = asks;
    s
}

/// Rebuilds the book after every counted event with plain maps.
fn replay(events: &[MarketEvent], levels: usize) -> Vec<Snapshot> {
    let mut orders: HashMap<u64, (Side, i64, i64)> = HashMap::new();
    let mut l2: [BTreeMap<i64, i64>; 2] = [BTreeMap::new(), BTreeMap::new()];
    let mut is_l3 = false;
    // Volume known only in aggregate (`seed` events), by (is sell, price).
    let mut seeded: HashMap<(bool, i64), i64> = HashMap::new();
    let mut out = Vec::new();
    let mut last_ts = i64::MIN;
    for ev in events {
        let ts = ev.ts().0.max(last_ts);
        last_ts = ts;
        let mut s = Snapshot {
            ts,
            bids: vec![],
            asks: vec![],
            book_event: false,
            clear: false,
            adds: 0,
            cancels: 0,
            trade: None,
        };
        match ev {
            MarketEvent::Order(_, o) => {
                is_l3 = true;
                let (side, px, sz) = (o.side, o.price.raw(), o.size.raw());
                match o.action {
                    L3Action::Clear => {
                        orders.clear();
                        seeded.clear();
                        s.clear = true;
                    }
                    L3Action::Seed => {
                        *seeded.entry((side == Side::Sell, px)).or_default() += sz;
                    }
                    L3Action::Add => {
                        if orders.contains_key(&o.order_id.0) {
                            continue;
                        }
                        orders.insert(o.order_id.0, (side, px, sz));
                        s.adds = 1;
                    }
                    L3Action::Cancel | L3Action::Execute | L3Action::Delete => {
                        let Some(rest) = orders.get_mut(&o.order_id.0) else {
                            // An order the book never saw: charged to seeded volume, if any.
                            let key = (side == Side::Sell, px);
                            match seeded.get_mut(&key) {
                                Some(v) if sz > 0 && sz <= *v => {
                                    *v -= sz;
                                    if *v == 0 {
                                        seeded.remove(&key);
                                    }
                                }
                                _ => continue,
                            }
                            if o.action != L3Action::Execute {
                                s.cancels = 1;
                            }
                            s.book_event = true;
                            out.push(snapshot(s, &orders, &seeded, &l2, is_l3, levels));
                            continue;
                        };
                        let take = if o.action == L3Action::Delete {
                            rest.2
                        } else {
                            sz
                        };
                        if take > rest.2 || (take <= 0 && o.action != L3Action::Delete) {
                            continue;
                        }
                        rest.2 -= take;
                        if rest.2 == 0 {
                            orders.remove(&o.order_id.0);
                        }
                        if o.action != L3Action::Execute {
                            s.cancels = 1;
                        }
                    }
                    L3Action::Modify => {
                        let Some(rest) = orders.get_mut(&o.order_id.0) else {
                            continue;
                        };
                        rest.1 = px;
                        rest.2 = sz;
                        s.adds = 1;
                        s.cancels = 1;
                    }
                    _ => continue,
                }
                s.book_event = true;
            }
            MarketEvent::Depth(_, d) => {
                if d.is_snapshot {
                    l2[0].clear();
                    l2[1].clear();
                }
                for (k, lv) in [(0, &d.bids), (1, &d.asks)] {
                    for &(p, q) in lv {
                        let old = l2[k].get(&p.raw()).copied().unwrap_or(0);
                        if q.raw() > 0 {
                            l2[k].insert(p.raw(), q.raw());
                        } else {
                            l2[k].remove(&p.raw());
                        }
                        if !d.is_snapshot {
                            if q.raw() > old {
                                s.adds += 1;
                            } else if q.raw() < old {
                                s.cancels += 1;
                            }
                        }
                    }
                }
                s.book_event = true;
            }
            MarketEvent::Trade(_, t) => {
                s.trade = Some((t.price.raw(), t.size.raw(), t.aggressor == Side::Buy));
            }
            _ => continue,
        }
        out.push(snapshot(s, &orders, &seeded, &l2, is_l3, levels));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::FeatureEngine;
    use flowsense_core::{DepthUpdate, FeatureRow, Price, Size, Symbol, Trade, UnixNanos};
    use proptest::prelude::*;

    fn engine_rows(
        events: &[MarketEvent],
        spec: &FeatureSpec,
    ) -> BTreeMap<(String, i64), FeatureRow> {
        let mut e = FeatureEngine::new(events[0].symbol().clone(), spec);
        let mut rows = Vec::new();
        for ev in events {
            e.on_event(ev, &mut rows);
        }
        e.finish(&mut rows);
        assert_eq!(e.rejects(), 0, "the book refused events of valid data");
        rows.into_iter()
            .map(|r| ((r.bucket.to_string(), r.ts), r))
            .collect()
    }

    fn close(a: &serde_json::Value, b: &serde_json::Value) -> bool {
        match (a, b) {
            (serde_json::Value::Number(x), serde_json::Value::Number(y)) => {
                let (x, y) = (x.as_f64().unwrap(), y.as_f64().unwrap());
                (x - y).abs() <= 1e-9 * x.abs().max(y.abs()).max(1.0)
            }
            (serde_json::Value::Array(x), serde_json::Value::Array(y)) => {
                x.len() == y.len() && x.iter().zip(y).all(|(a, b)| close(a, b))
            }
            _ => a == b,
        }
    }

    /// Asserts the engine's rows equal the recomputation's, field by field; returns the rows.
    fn assert_agree(events: &[MarketEvent], spec: &FeatureSpec) -> usize {
        let got = engine_rows(events, spec);
        let want = recompute(events, spec);
        assert_eq!(
            got.keys().collect::<Vec<_>>(),
            want.keys().collect::<Vec<_>>(),
            "the same buckets"
        );
        for (k, g) in &got {
            let (g, w) = (
                serde_json::to_value(g).unwrap(),
                serde_json::to_value(&want[k]).unwrap(),
            );
            for (field, gv) in g.as_object().unwrap() {
                let wv = &w[field];
                assert!(close(gv, wv), "{k:?} {field}: engine {gv} recompute {wv}");
            }
        }
        got.len()
    }

    fn spec(buckets: &[&str], levels: usize) -> FeatureSpec {
        FeatureSpec {
            buckets: buckets.iter().map(|b| b.parse().unwrap()).collect(),
            levels,
            kyle_window: 20,
            vpin_window: 10,
            ..Default::default()
        }
    }

    #[test]
    fn incremental_equals_recompute_on_the_real_binance_futures_capture() {
        let dir = std::path::Path::new(&std::env::var("CARGO_MANIFEST_DIR").expect("set by cargo"))
            .join("../data/binance/usdm");
        let files: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        let reader =
            flowsense_sources::binance::BinanceReader::open(files, Default::default()).unwrap();
        let events: Vec<MarketEvent> = reader
            .filter_map(|r| match r.unwrap() {
                flowsense_sources::Record::Event(e)
                    if matches!(e, MarketEvent::Depth(..) | MarketEvent::Trade(..)) =>
                {
                    Some(e)
                }
                _ => None,
            })
            .take(8_000)
            .collect();
        assert!(events.iter().any(|e| matches!(e, MarketEvent::Trade(..))));
        let rows = assert_agree(&events, &spec(&["100ms", "1s", "10s"], 10));
        assert!(rows > 100, "{rows} rows");
        // Fewer levels and a fixed VPIN bucket take other paths.
        let mut s = spec(&["1s"], 3);
        s.vpin_bucket_volume = Some(2.5);
        assert_agree(&events, &s);
    }

    #[test]
    fn incremental_equals_recompute_on_the_synthetic_l3_market() {
        let cfg = flowsense_sources::synth::SynthConfig {
            symbols: 1,
            days: 2,
            events_per_day: 4_000,
            seed: 11,
            ..Default::default()
        };
        let events: Vec<MarketEvent> = flowsense_sources::synth::SyntheticMarket::new(cfg)
            .filter_map(|r| match r {
                flowsense_sources::Record::Event(e) => Some(e),
                _ => None,
            })
            .collect();
        let rows = assert_agree(&events, &spec(&["1s", "10s", "1m"], 10));
        assert!(rows > 100, "{rows} rows");
    }

    /// Random L2 update and trade sequences on a small price grid.
    fn l2_events() -> impl Strategy<Value = Vec<MarketEvent>> {
        let op = (0i64..400, 0u8..4, 0i64..12, 0i64..6, any::<bool>());
        prop::collection::vec(op, 1..300).prop_map(|ops| {
            let sym = Symbol::new("P").unwrap();
            let mut ts = 1_000_000_000_000i64;
            ops.into_iter()
                .map(|(dt, kind, tick, size, flag)| {
                    ts += dt * 1_000_000;
                    let px = Price::from_units(100 + tick);
                    let sz = Size::from_units(size);
                    match kind {
                        0 => MarketEvent::Trade(
                            sym.clone(),
                            Trade {
                                ts: UnixNanos(ts),
                                local_ts: None,
                                trade_id: None,
                                price: px,
                                size: Size::from_units(size + 1),
                                aggressor: if flag { Side::Buy } else { Side::Sell },
                            },
                        ),
                        _ => {
                            // Bids below 106, asks from 106 up: a side's grid never crosses.
                            let level = if flag {
                                (Price::from_units(94 + tick / 2), sz)
                            } else {
                                (Price::from_units(106 + tick / 2), sz)
                            };
                            MarketEvent::Depth(
                                sym.clone(),
                                Box::new(DepthUpdate {
                                    ts: UnixNanos(ts),
                                    bids: if flag { vec![level] } else { vec![] },
                                    asks: if flag { vec![] } else { vec![level] },
                                    is_snapshot: kind == 3 && tick == 0,
                                    ..Default::default()
                                }),
                            )
                        }
                    }
                })
                .collect()
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn incremental_equals_recompute_for_random_sequences(events in l2_events(), levels in 1usize..=10) {
            let mut s = spec(&["1s", "5s"], levels);
            s.kyle_window = 3;
            s.vpin_bucket_volume = Some(7.0);
            assert_agree(&events, &s);
        }
    }
}
