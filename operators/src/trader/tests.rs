//! The trader against the simulated exchange on hand-built markets: the drawdown halt, the order
//! styles and their cancel/replace policy, sizing and the risk gate.

use super::*;
use crate::SimExchange;
use crate::TradeStrategy;
use flowsense_core::job::JobSpec;
use flowsense_core::{DepthUpdate, Trade};

fn sym() -> Symbol {
    Symbol::new("ABC").unwrap()
}

fn ms(t: i64) -> UnixNanos {
    UnixNanos::from_millis(t)
}

fn book(t: i64, bid: f64, ask: f64, size: f64) -> MarketEvent {
    let q = Size::from_f64(size).unwrap();
    MarketEvent::Depth(
        sym(),
        Box::new(DepthUpdate {
            ts: ms(t),
            bids: vec![(Price::from_f64(bid).unwrap(), q)],
            asks: vec![(Price::from_f64(ask).unwrap(), q)],
            is_snapshot: true,
            ..Default::default()
        }),
    )
}

fn trade(t: i64, price: f64, size: f64, aggressor: Side) -> MarketEvent {
    MarketEvent::Trade(
        sym(),
        Trade {
            ts: ms(t),
            local_ts: None,
            trade_id: None,
            price: Price::from_f64(price).unwrap(),
            size: Size::from_f64(size).unwrap(),
            aggressor,
        },
    )
}

/// A trader on 1 s buckets with the given `[strategy]`, `[risk]` and `[execution]` sections.
fn trader(sections: &str) -> Trader<SimExchange> {
    let features = if sections.contains("[features]") {
        ""
    } else {
        "[features]\nbuckets = [\"1s\"]\n"
    };
    let spec = JobSpec::from_toml(&format!(
        "name = \"t\"\n[source.synthetic]\nsymbols = 1\n{features}{sections}"
    ))
    .unwrap();
    let ex = SimExchange::new(sym(), &spec.execution);
    Trader::new(
        sym(),
        &spec.name,
        &spec.features,
        spec.strategy.as_ref().unwrap(),
        &spec.risk,
        ex,
    )
    .unwrap()
}

fn run(t: &mut Trader<SimExchange>, events: &[MarketEvent]) -> Vec<TradeRecord> {
    let mut out = Vec::new();
    for e in events {
        t.on_event(e, &mut out);
    }
    t.finish(&mut out);
    out
}

fn orders(out: &[TradeRecord]) -> Vec<&OrderRecord> {
    let mut v: Vec<_> = out
        .iter()
        .filter_map(|r| match r {
            TradeRecord::Order(o) => Some(o),
            _ => None,
        })
        .collect();
    v.sort_by_key(|o| o.order.sent);
    v
}

fn risk(out: &[TradeRecord], kind: &str) -> Vec<RiskEvent> {
    out.iter()
        .filter_map(|r| match r {
            TradeRecord::Risk(e) if e.kind == kind => Some(e.clone()),
            _ => None,
        })
        .collect()
}

const BUY_FLOW: &str = r#"
[strategy]
bucket = "1s"
signal = "buy_volume - sell_volume"
entry = 1
[strategy.sizing]
method = "fixed"
size = 100
"#;

/// A trader on [`BUY_FLOW`]'s `[strategy]` with `tail` in place of its sizing: more strategy
/// keys first (they continue `[strategy]`), then the sections that follow.
fn buy_flow_trader(tail: &str) -> Trader<SimExchange> {
    let strategy = BUY_FLOW.split("[strategy.sizing]").next().unwrap();
    trader(&format!("{strategy}{tail}"))
}

#[test]
fn the_halt_fires_at_the_threshold_flattens_and_no_order_follows_it() {
    let mut t = trader(&format!(
        "{BUY_FLOW}[risk]\ncapital = 10000\n[execution]\nslippage_bps = 0\n"
    ));
    let mut events = vec![
        book(0, 99.0, 101.0, 500.0),
        trade(500, 101.0, 3.0, Side::Buy),
    ];
    // Bucket [0, 1 s) closes at 1.5 s: buy 100 at market; it fills at 101 on the next event.
    events.push(trade(1500, 101.0, 3.0, Side::Buy));
    events.push(book(1600, 99.0, 101.0, 500.0));
    // The market falls 5 %: equity 10000 - 100 * (101 - 96) - fees is about 5.1 % down.
    events.push(book(2200, 95.0, 97.0, 500.0));
    events.push(trade(2500, 97.0, 3.0, Side::Buy));
    // It falls to 85 (about 16 % down) during [3 s, 4 s): the close at 4.5 s halts.
    events.push(book(3100, 84.0, 86.0, 500.0));
    events.push(trade(3500, 86.0, 3.0, Side::Buy));
    events.push(trade(4500, 86.0, 3.0, Side::Buy));
    // The flatten fills at the bid; buying flow goes on, but nothing more is sent.
    for s in 5..10 {
        events.push(book(s * 1000 + 100, 84.0, 86.0, 500.0));
        events.push(trade(s * 1000 + 500, 86.0, 3.0, Side::Buy));
    }
    let out = run(&mut t, &events);

    let alerts = risk(&out, "drawdown_alert");
    let halts = risk(&out, "halt");
    assert_eq!(alerts.len(), 1, "{out:#?}");
    assert_eq!(halts.len(), 1);
    assert_eq!(
        alerts[0].ts,
        ms(4500),
        "the 10 % alert comes with the same mark"
    );
    assert_eq!(halts[0].ts, ms(4500));
    assert!(t.halted());
    // The marks before the halt were above the threshold; the one that halted was below.
    let marks: Vec<_> = out
        .iter()
        .filter_map(|r| match r {
            TradeRecord::Equity(e) => Some((e.ts.0, e.drawdown)),
            _ => None,
        })
        .collect();
    let halt_mark = marks.iter().find(|m| m.0 == 4_000_000_000).unwrap();
    assert!(halt_mark.1 >= 0.15, "{marks:?}");
    assert!(
        marks
            .iter()
            .filter(|m| m.0 < 4_000_000_000)
            .all(|m| m.1 < 0.15)
    );

    let o = orders(&out);
    assert_eq!(o.len(), 2, "{o:#?}");
    assert_eq!(
        (o[0].order.side, o[0].reason.as_str()),
        (Side::Buy, "entry")
    );
    assert_eq!(o[0].status, OrderStatus::Filled);
    assert_eq!(
        (o[1].order.side, o[1].reason.as_str()),
        (Side::Sell, "halt")
    );
    assert_eq!(o[1].order.sent, halts[0].ts);
    assert_eq!(o[1].status, OrderStatus::Filled);
    assert_eq!(t.position(), 0.0);
    // The halting close and the six after it wanted to buy: refused, and said so.
    let refused = risk(&out, "refused");
    assert_eq!(refused.len(), 1);
    assert!(refused[0].detail.starts_with("7 decisions"), "{refused:?}");
    // One position, long 100 from 101 to 84: a loss of 100 * (101 - 84) plus fees.
    let positions: Vec<_> = out
        .iter()
        .filter_map(|r| match r {
            TradeRecord::Position(p) => Some(p.clone()),
            _ => None,
        })
        .collect();
    let fees = 0.0008 * 100.0 * (101.0 + 84.0);
    assert_eq!(positions.len(), 1);
    let p = &positions[0];
    assert!((p.pnl + 1700.0 + fees).abs() < 1e-6, "{p:?}");
    assert_eq!(
        (p.direction, p.peak, p.avg_open, p.avg_close),
        (1, 100.0, 101.0, Some(84.0))
    );
    assert!(p.closed.is_some());
}

#[test]
fn a_limit_order_joins_the_touch_and_is_replaced_when_the_touch_moves() {
    let mut t = buy_flow_trader(
        "order = \"limit_join\"\n[strategy.sizing]\nmethod = \"fixed\"\nsize = 2\n",
    );
    let events = vec![
        book(0, 99.0, 101.0, 5.0),
        trade(500, 101.0, 3.0, Side::Buy),
        // Closes [0, 1 s): buy 2 at the bid, 99.
        trade(1500, 101.0, 1.0, Side::Buy),
        // The bid moves up to 100 during [1 s, 2 s).
        book(1700, 100.0, 101.0, 5.0),
        // Close at 2.5 s: the touch moved, cancel.
        trade(2500, 101.0, 1.0, Side::Buy),
        // Close at 3.5 s: the cancel is confirmed, join again at 100.
        trade(3500, 101.0, 1.0, Side::Buy),
        // A seller takes the 5 ahead and 2 of ours at 100.
        trade(3600, 100.0, 7.0, Side::Sell),
    ];
    let out = run(&mut t, &events);
    let o = orders(&out);
    assert_eq!(o.len(), 2, "{o:#?}");
    assert_eq!(o[0].order.price, Price::from_f64(99.0));
    assert_eq!(o[0].status, OrderStatus::Cancelled);
    assert_eq!(o[0].order.sent, ms(1500));
    assert_eq!(o[1].order.price, Price::from_f64(100.0));
    assert_eq!(o[1].order.sent, ms(3500));
    assert_eq!(o[1].status, OrderStatus::Filled);
    assert_eq!(o[1].reason, "replace");
    assert_eq!(t.position(), 2.0);
}

#[test]
fn improve_prices_one_tick_inside_and_the_band_refuses_far_prices() {
    let mut t = buy_flow_trader(
        "order = \"limit_improve\"\n[strategy.sizing]\nmethod = \"fixed\"\nsize = 1\n",
    );
    let events = vec![
        book(0, 99.5, 101.0, 5.0),
        trade(500, 101.0, 3.0, Side::Buy),
        trade(1500, 101.0, 1.0, Side::Buy),
    ];
    let out = run(&mut t, &events);
    // Prices seen: 99.5 and 101, so the tick is 0.5 and the improved bid 100.
    assert_eq!(orders(&out)[0].order.price, Price::from_f64(100.0));

    let mut t = buy_flow_trader(
        "order = \"limit_join\"\n[strategy.sizing]\nmethod = \"fixed\"\nsize = 1\n[risk]\nprice_band_bps = 50\n",
    );
    let events = vec![
        book(0, 90.0, 110.0, 5.0),
        trade(500, 110.0, 3.0, Side::Buy),
        trade(1500, 110.0, 1.0, Side::Buy),
    ];
    let out = run(&mut t, &events);
    assert!(orders(&out).is_empty());
    let refused = risk(&out, "refused");
    // Refused at both closes (1.5 s, and the end of the data).
    assert_eq!(refused.len(), 2);
    assert!(
        refused.iter().all(|r| r.detail.contains("1000.0 bp")),
        "{refused:?}"
    );
}

#[test]
fn kelly_sizing_with_a_regime_multiplier_is_clipped_by_the_limits() {
    // edge 0.001, variance 0.0001: Kelly 10, a quarter is 2.5, capped at leverage 2. Equity
    // 10000 at mid 100 gives 200; the high-vol regime halves it to 100; max_position clips to 80.
    let mut t = trader(
        r#"
[strategy]
bucket = "1s"
signal = "buy_volume - sell_volume"
entry = 1
[strategy.sizing]
method = "kelly"
edge = "0.001"
variance = "0.0001"
max_leverage = 2
[strategy.regime]
expr = "if(spread > 1, 1, 0)"
names = ["calm", "wide"]
multipliers = [1.0, 0.5]
[risk]
capital = 10000
max_position = 80
"#,
    );
    let events = vec![
        book(0, 99.0, 101.0, 500.0),
        trade(500, 101.0, 3.0, Side::Buy),
        trade(1500, 101.0, 1.0, Side::Buy),
    ];
    let mut out = Vec::new();
    for e in &events {
        t.on_event(e, &mut out);
    }
    assert_eq!(t.target(), 80.0);
    let clipped = risk(&out, "clipped");
    assert_eq!(clipped.len(), 1);
    assert!(
        clipped[0].detail.contains("100 clipped to 80"),
        "{clipped:?}"
    );
    let regime = out.iter().find_map(|r| match r {
        TradeRecord::Equity(e) => e.regime.clone(),
        _ => None,
    });
    assert_eq!(regime.as_deref(), Some("wide"));
}

#[test]
fn max_hold_exits_and_blocks_reentry_until_the_signal_fades() {
    let mut t =
        buy_flow_trader("max_hold = \"2s\"\n[strategy.sizing]\nmethod = \"fixed\"\nsize = 1\n");
    let mut events = vec![book(0, 99.0, 101.0, 500.0)];
    for s in 0..6 {
        events.push(trade(s * 1000 + 500, 101.0, 3.0, Side::Buy));
    }
    // Flow fades in [6 s, 7 s), then comes back.
    events.push(trade(6500, 101.0, 0.5, Side::Buy));
    events.push(trade(7500, 101.0, 3.0, Side::Buy));
    events.push(trade(8500, 101.0, 3.0, Side::Buy));
    let out = run(&mut t, &events);
    let o: Vec<_> = orders(&out)
        .iter()
        .map(|o| (o.order.sent.0 / 1_000_000, o.order.side, o.reason.clone()))
        .collect();
    assert_eq!(
        o,
        vec![
            (1500, Side::Buy, "entry".to_string()),
            (3500, Side::Sell, "max_hold".to_string()),
            (8500, Side::Buy, "entry".to_string()),
        ]
    );
}

#[test]
fn a_signal_that_reads_the_future_is_refused_in_the_job_spec() {
    for signal in [
        "lead(mid, 1)",
        "lag(mid, -1)",
        "future_mid - mid",
        "lag(mid, trade_count)",
    ] {
        let err = JobSpec::from_toml(&format!(
            "name = \"t\"\n[source.synthetic]\nsymbols = 1\n[strategy]\nbucket = \"1s\"\n\
             signal = \"{signal}\"\nentry = 1\n[strategy.sizing]\nmethod = \"fixed\"\nsize = 1\n"
        ))
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("future")
                || err.contains("unknown column")
                || err.contains("whole number"),
            "{signal}: {err}"
        );
    }
}

#[test]
fn the_rate_limit_refuses_orders_beyond_it() {
    // Limit orders that never fill, and a reversal 200 ms after the first order.
    let mut t = buy_flow_trader(
        "order = \"limit_join\"\n[strategy.sizing]\nmethod = \"fixed\"\nsize = 1\n[risk]\nmax_orders_per_second = 1\n",
    );
    let events = vec![
        book(0, 99.0, 101.0, 5.0),
        trade(500, 100.0, 3.0, Side::Buy),
        // Closes [0, 1 s): buy at the bid.
        trade(1900, 100.0, 3.0, Side::Sell),
        // Closes [1, 2 s) 200 ms later: the target reverses, but the cancel would be a second
        // message within one second.
        trade(2100, 100.0, 3.0, Side::Buy),
        trade(3500, 100.0, 0.0001, Side::Buy),
    ];
    let out = run(&mut t, &events);
    assert!(!risk(&out, "refused").is_empty(), "{out:#?}");
    // Never more than one order or cancel in any second: orders at least 1 s apart.
    let sent: Vec<_> = orders(&out).iter().map(|o| o.order.sent.0).collect();
    assert!(sent.windows(2).all(|w| w[1] - w[0] >= SECOND), "{sent:?}");
}

fn bar(minute: i64, o: f64, h: f64, l: f64, c: f64) -> MarketEvent {
    let p = |x: f64| Price::from_f64(x).unwrap();
    MarketEvent::Bar(
        sym(),
        Box::new(flowsense_core::Bar {
            open_time: ms(minute * 60_000),
            interval: 60_000_000_000,
            open: p(o),
            high: p(h),
            low: p(l),
            close: p(c),
            volume: Size::from_units(1000),
            trades: None,
        }),
    )
}

#[test]
fn on_bars_a_decision_at_a_close_fills_at_the_next_open() {
    let mut t = trader(
        r#"
[features]
buckets = ["1m"]
[strategy]
bucket = "1m"
signal = "sign(close - lag(close, 1))"
entry = 1
[strategy.sizing]
method = "fixed"
size = 1
[execution]
slippage_bps = 0
taker_fee = 0.001
"#,
    );
    let events = vec![
        bar(0, 100.0, 100.5, 99.5, 100.0),
        bar(1, 100.0, 101.2, 99.8, 101.0), // up: buy 1 at the next open
        bar(2, 101.5, 101.6, 100.1, 100.5), // down: sell 2 at the next open
        bar(3, 100.2, 100.9, 100.0, 100.8), // up: buy 2 at the next open
        bar(4, 100.7, 101.0, 100.3, 100.9),
    ];
    let out = run(&mut t, &events);
    let fills: Vec<_> = out
        .iter()
        .filter_map(|r| match r {
            TradeRecord::Fill(f) => Some((
                f.ts.0 / 1_000_000,
                f.side,
                f.price.as_f64(),
                f.size.as_f64(),
            )),
            _ => None,
        })
        .collect();
    assert_eq!(
        fills,
        vec![
            (120_001, Side::Buy, 101.5, 1.0),
            (180_001, Side::Sell, 100.2, 2.0),
            (240_001, Side::Buy, 100.7, 2.0),
        ]
    );
    assert_eq!(t.position(), 1.0);
    // Positions: long 1 (closed by the flip), short 1 (closed by the next flip), long 1 open.
    let positions: Vec<_> = out
        .iter()
        .filter_map(|r| match r {
            TradeRecord::Position(p) => {
                Some((p.direction, p.avg_open, p.avg_close, p.closed.is_some()))
            }
            _ => None,
        })
        .collect();
    assert_eq!(
        positions,
        vec![
            (1, 101.5, Some(100.2), true),
            (-1, 100.2, Some(100.7), true),
            (1, 100.7, None, false),
        ]
    );
}

#[test]
fn the_exit_threshold_leaves_before_the_signal_turns() {
    let mut t = trader(
        r#"
[strategy]
bucket = "1s"
signal = "buy_volume - sell_volume"
entry = 2
exit = 1
[strategy.sizing]
method = "fixed"
size = 1
"#,
    );
    let events = vec![
        book(0, 99.0, 101.0, 500.0),
        trade(500, 101.0, 3.0, Side::Buy),  // 3 >= entry: long
        trade(1500, 101.0, 1.5, Side::Buy), // 1.5 >= exit: hold
        trade(2500, 101.0, 0.5, Side::Buy), // 0.5 < exit: leave
        trade(3500, 101.0, 0.5, Side::Buy),
        book(3600, 99.0, 101.0, 500.0), // the exit fills here
    ];
    let out = run(&mut t, &events);
    let o: Vec<_> = orders(&out)
        .iter()
        .map(|o| (o.order.sent.0 / 1_000_000, o.order.side, o.reason.clone()))
        .collect();
    assert_eq!(
        o,
        vec![
            (1500, Side::Buy, "entry".to_string()),
            (3500, Side::Sell, "exit".to_string()),
        ]
    );
    assert_eq!(t.position(), 0.0);
}

#[test]
fn a_resting_order_older_than_cancel_after_is_replaced() {
    let mut t = buy_flow_trader(
        "order = \"limit_join\"\ncancel_after = \"2s\"\n[strategy.sizing]\nmethod = \"fixed\"\nsize = 1\n",
    );
    let mut events = vec![book(0, 99.0, 101.0, 5.0)];
    for s in 0..5 {
        events.push(trade(s * 1000 + 500, 101.0, 3.0, Side::Buy)); // never reaches our bid
    }
    let out = run(&mut t, &events);
    let o: Vec<_> = orders(&out)
        .iter()
        .map(|o| {
            (
                o.order.sent.0 / 1_000_000,
                o.status.as_str(),
                o.reason.clone(),
            )
        })
        .collect();
    // Sent at 1.5 s, 2 s old at 3.5 s: cancelled; re-placed once confirmed, at 4.5 s.
    assert_eq!(
        o,
        vec![
            (1500, "cancelled", "entry".to_string()),
            (4500, "sent", "replace".to_string()),
        ]
    );
}

#[test]
fn a_partly_filled_order_is_cancelled_on_reversal_and_the_rest_is_netted() {
    let mut t = buy_flow_trader(
        "order = \"limit_join\"\n[strategy.sizing]\nmethod = \"fixed\"\nsize = 3\n",
    );
    let events = vec![
        book(0, 99.0, 101.0, 1.0),
        trade(500, 101.0, 3.0, Side::Buy),
        // Closes [0, 1 s): buy 3 at 99, behind 1.
        trade(1500, 101.0, 0.5, Side::Buy),
        // A seller takes the 1 ahead and 1 of ours; more selling prints above our bid (it does
        // not reach us) and turns the bucket's flow.
        trade(1600, 99.0, 2.0, Side::Sell),
        trade(1700, 100.0, 3.0, Side::Sell),
        // Closes [1 s, 2 s): reverse to -3; the buy's other 2 are cancelled.
        trade(2500, 100.0, 0.1, Side::Sell),
        // Closes [2 s, 3 s) (still short): the cancel is confirmed; sell from +1 to -3.
        book(3500, 99.0, 101.0, 1.0),
    ];
    let out = run(&mut t, &events);
    let o: Vec<_> = orders(&out)
        .iter()
        .map(|o| {
            (
                o.order.side,
                o.order.size.as_f64(),
                o.filled.as_f64(),
                o.status.as_str(),
            )
        })
        .collect();
    assert_eq!(o[0], (Side::Buy, 3.0, 1.0, "cancelled"), "{o:?}");
    assert_eq!((o[1].0, o[1].1), (Side::Sell, 4.0), "{o:?}");
}

/// `ev` as an event of `symbol`.
fn on(symbol: &str, ev: MarketEvent) -> MarketEvent {
    let s = Symbol::new(symbol).unwrap();
    match ev {
        MarketEvent::Depth(_, d) => MarketEvent::Depth(s, d),
        MarketEvent::Trade(_, t) => MarketEvent::Trade(s, t),
        other => other,
    }
}

/// Two symbols bought at 101: ABC then falls to 85 (16 %, under its own 50 % halt), XYZ stays
/// at 100. The portfolio of two 10 000 sleeves is 3.1 % down at 3.1 s and 8.6 % at 4.5 s.
fn two_sleeves() -> (String, Vec<Vec<MarketEvent>>) {
    let sections = format!(
        "{BUY_FLOW}[risk]\ncapital = 10000\ndrawdown_alert = 0.4\ndrawdown_halt = 0.5\n\
         [risk.portfolio]\ndrawdown_alert = 0.03\ndrawdown_halt = 0.05\n\
         [execution]\nslippage_bps = 0\n"
    );
    let mut abc = vec![
        book(0, 99.0, 101.0, 500.0),
        trade(500, 101.0, 3.0, Side::Buy),
        trade(1500, 101.0, 3.0, Side::Buy),
        book(1600, 99.0, 101.0, 500.0),
        book(2200, 95.0, 97.0, 500.0),
        trade(2500, 97.0, 3.0, Side::Buy),
        book(3100, 84.0, 86.0, 500.0),
        trade(3500, 86.0, 3.0, Side::Buy),
        trade(4500, 86.0, 3.0, Side::Buy),
    ];
    let mut xyz = vec![
        book(0, 99.0, 101.0, 500.0),
        trade(500, 101.0, 3.0, Side::Buy),
        trade(1500, 101.0, 3.0, Side::Buy),
        book(1600, 99.0, 101.0, 500.0),
    ];
    for s in 2..10 {
        xyz.push(book(s * 1000 + 100, 99.0, 101.0, 500.0));
        xyz.push(trade(s * 1000 + 500, 101.0, 3.0, Side::Buy));
        if s >= 5 {
            abc.push(book(s * 1000 + 100, 84.0, 86.0, 500.0));
            abc.push(trade(s * 1000 + 500, 86.0, 3.0, Side::Buy));
        }
    }
    let abc = abc.into_iter().map(|e| on("ABC", e)).collect();
    let xyz = xyz.into_iter().map(|e| on("XYZ", e)).collect();
    (sections, vec![abc, xyz])
}

/// Runs the `Trade` operator on `workers` workers, worker `i` feeding the streams `i`,
/// `i + workers`, .. with its input a second behind its events (as the dataflows feed it).
fn trade_on_workers(sections: &str, streams: Vec<Vec<MarketEvent>>, workers: usize) -> Vec<String> {
    use std::sync::{Arc, Mutex};
    use timely::dataflow::InputHandleVec;
    use timely::dataflow::operators::{Input, Inspect, Probe};
    let spec = JobSpec::from_toml(&format!(
        "name = \"t\"\n[source.synthetic]\nsymbols = 1\n[features]\nbuckets = [\"1s\"]\n{sections}"
    ))
    .unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let (seen_w, streams) = (seen.clone(), Arc::new(streams));
    timely::execute(timely::Config::process(workers), move |worker| {
        let (spec, seen) = (spec.clone(), seen_w.clone());
        let mut input = InputHandleVec::new();
        let probe = worker.dataflow::<u64, _, _>(|scope| {
            let exec = spec.execution.clone();
            scope
                .input_from(&mut input)
                .trade(
                    &spec.name,
                    &spec.features,
                    spec.strategy.as_ref().unwrap(),
                    &spec.risk,
                    move |s: &Symbol| SimExchange::new(s.clone(), &exec),
                )
                .unwrap()
                .inspect(move |r| seen.lock().unwrap().push(format!("{r:?}")))
                .probe()
                .0
        });
        let mut mine: Vec<&MarketEvent> = streams
            .iter()
            .skip(worker.index())
            .step_by(worker.peers())
            .flatten()
            .collect();
        mine.sort_by_key(|e| e.order_key());
        for ev in mine {
            let t = (ev.ts().0 - 1_000_000_000).max(0) as u64;
            if t > *input.time() {
                input.advance_to(t);
            }
            input.send(ev.clone());
            worker.step();
        }
        drop(input);
        worker.step_while(|| !probe.done());
    })
    .unwrap();
    let mut v = std::mem::take(&mut *seen.lock().unwrap());
    v.sort();
    v
}

#[test]
fn the_portfolio_halt_halts_every_sleeve_and_no_order_follows_it() {
    let (sections, streams) = two_sleeves();
    let seen = trade_on_workers(&sections, streams.clone(), 1);
    let risk_events: Vec<&String> = seen.iter().filter(|r| r.starts_with("Risk")).collect();
    let count = |needle: &str| risk_events.iter().filter(|r| r.contains(needle)).count();
    // The alert with the mark at 3.1 s, the halt with the one at 4.5 s, both the portfolio's.
    assert_eq!(
        count("Symbol(PORTFOLIO), kind: \"drawdown_alert\""),
        1,
        "{risk_events:#?}"
    );
    assert_eq!(
        count("Symbol(PORTFOLIO), kind: \"halt\""),
        1,
        "{risk_events:#?}"
    );
    assert!(
        risk_events.iter().any(|r| r
            .contains("UnixNanos(4500000000), symbol: Symbol(PORTFOLIO), kind: \"halt\"")
            && r.contains("8.58 % below")),
        "{risk_events:#?}"
    );
    // Each sleeve halts at its next close (5.1 s), though neither crossed its own 50 %.
    for s in ["ABC", "XYZ"] {
        let halt = format!(
            "UnixNanos(5100000000), symbol: Symbol({s}), kind: \"halt\", detail: \"the portfolio halted"
        );
        assert_eq!(count(&halt), 1, "{s}: {risk_events:#?}");
    }

    // Orders: each bought at 1.5 s; after the portfolio's halt only the flattening sells.
    let records: Vec<TradeRecord> = {
        // The same run through a plain loop gives the records themselves (not their text).
        let spec = JobSpec::from_toml(&format!(
            "name = \"t\"\n[source.synthetic]\nsymbols = 1\n[features]\nbuckets = [\"1s\"]\n{sections}"
        ))
        .unwrap();
        let mut p = crate::portfolio::PortfolioTraders::new(
            spec.risk.portfolio.as_ref().unwrap(),
            spec.risk.capital,
        );
        for ev in streams.iter().flatten() {
            p.push(ev.clone(), |s| {
                let ex = SimExchange::new(s.clone(), &spec.execution);
                let st = spec.strategy.as_ref().unwrap();
                Trader::new(s.clone(), "t", &spec.features, st, &spec.risk, ex).unwrap()
            });
        }
        let mut out = Vec::new();
        p.finish(&mut out);
        out
    };
    let mut plain: Vec<String> = records.iter().map(|r| format!("{r:?}")).collect();
    plain.sort();
    assert_eq!(plain, seen, "the operator and the plain merge differ");
    let o = orders(&records);
    let sent: Vec<_> = o
        .iter()
        .map(|o| {
            (
                o.order.symbol.as_str(),
                o.order.sent.0 / 1_000_000,
                o.order.side,
                o.reason.as_str(),
            )
        })
        .collect();
    assert_eq!(
        sent,
        vec![
            ("ABC", 1500, Side::Buy, "entry"),
            ("XYZ", 1500, Side::Buy, "entry"),
            ("ABC", 5100, Side::Sell, "halt"),
            ("XYZ", 5100, Side::Sell, "halt"),
        ]
    );
    assert!(o.iter().all(|o| o.status == OrderStatus::Filled), "{o:#?}");
}

#[test]
fn the_portfolio_trades_alike_on_one_and_two_workers_and_as_the_sleeves_until_it_halts() {
    let (sections, streams) = two_sleeves();
    let one = trade_on_workers(&sections, streams.clone(), 1);
    let two = trade_on_workers(&sections, streams.clone(), 2);
    assert_eq!(one, two);
    // With a portfolio threshold never reached, the records are the sleeves' own.
    let far = sections.replace(
        "drawdown_alert = 0.03\ndrawdown_halt = 0.05",
        "drawdown_halt = 0.9",
    );
    let alone = sections.replace(
        "[risk.portfolio]\ndrawdown_alert = 0.03\ndrawdown_halt = 0.05\n",
        "",
    );
    assert_ne!(far, sections);
    assert_ne!(alone, sections);
    let a = trade_on_workers(&far, streams.clone(), 2);
    let b = trade_on_workers(&alone, streams, 2);
    assert!(a.iter().all(|r| !r.contains("PORTFOLIO")));
    assert_eq!(a, b);
}
