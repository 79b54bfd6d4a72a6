//! Hand-built books where queue position, partial fills, latency and fees give known fills.

use super::*;
use flowsense_core::job::Span;
use flowsense_core::{DepthUpdate, OrderEvent, Trade};

fn sym() -> Symbol {
    Symbol::new("ABC").unwrap()
}
fn px(p: f64) -> Price {
    Price::from_f64(p).unwrap()
}
fn sz(s: f64) -> Size {
    Size::from_f64(s).unwrap()
}
fn us(t: i64) -> UnixNanos {
    UnixNanos(t * 1_000)
}

/// No fees, no slippage, 100 µs each way: the fills alone are under test.
fn plain() -> ExecutionSpec {
    ExecutionSpec {
        order_latency: Span(100_000),
        response_latency: Span(100_000),
        maker_fee: 0.0,
        taker_fee: 0.0,
        slippage_bps: 0.0,
        ..Default::default()
    }
}

fn book(t: i64, bids: &[(f64, f64)], asks: &[(f64, f64)], snapshot: bool) -> MarketEvent {
    MarketEvent::Depth(
        sym(),
        Box::new(DepthUpdate {
            ts: us(t),
            bids: bids.iter().map(|(p, s)| (px(*p), sz(*s))).collect(),
            asks: asks.iter().map(|(p, s)| (px(*p), sz(*s))).collect(),
            is_snapshot: snapshot,
            ..Default::default()
        }),
    )
}

fn trade(t: i64, price: f64, size: f64, aggressor: Side) -> MarketEvent {
    MarketEvent::Trade(
        sym(),
        Trade {
            ts: us(t),
            local_ts: None,
            trade_id: None,
            price: px(price),
            size: sz(size),
            aggressor,
        },
    )
}

fn limit(id: u64, side: Side, price: f64, size: f64, t: i64) -> Order {
    Order::limit(
        ClientOrderId(id),
        sym(),
        side,
        OrderKind::Limit,
        px(price),
        sz(size),
        us(t),
    )
}

fn market(id: u64, side: Side, size: f64, t: i64) -> Order {
    Order::market(ClientOrderId(id), sym(), side, sz(size), us(t))
}

fn fills(ex: &mut SimExchange) -> Vec<Fill> {
    let mut out = Vec::new();
    ex.flush(&mut out);
    out.into_iter()
        .filter_map(|r| match r.kind {
            ReportKind::Fill(f) => Some(f),
            _ => None,
        })
        .collect()
}

fn kinds(ex: &mut SimExchange) -> Vec<String> {
    let mut out = Vec::new();
    ex.flush(&mut out);
    out.into_iter()
        .map(|r| match r.kind {
            ReportKind::Accepted => "accepted".to_string(),
            ReportKind::Fill(f) => format!("fill {}@{}", f.size, f.price),
            ReportKind::Cancelled => "cancelled".into(),
            ReportKind::Rejected(why) => format!("rejected: {why}"),
        })
        .collect()
}

#[test]
fn l2_queue_trades_eat_ahead_first_then_fill_partially() {
    let mut ex = SimExchange::new(sym(), &plain());
    ex.on_market(&book(0, &[(99.0, 5.0)], &[(101.0, 5.0)], true));
    ex.submit(limit(1, Side::Buy, 99.0, 2.0, 0)); // arrives at 100 µs, behind 5
    ex.on_market(&trade(200, 99.0, 4.0, Side::Sell));
    ex.on_market(&trade(300, 99.0, 2.0, Side::Sell)); // 1 ahead, then 1 of ours
    ex.on_market(&trade(400, 99.0, 3.0, Side::Sell)); // our last 1
    let f = fills(&mut ex);
    assert_eq!(f.len(), 2);
    assert_eq!(
        (f[0].size, f[0].ts, f[0].liquidity),
        (sz(1.0), us(300), Liquidity::Maker)
    );
    assert_eq!((f[1].size, f[1].ts), (sz(1.0), us(400)));
    assert_eq!(f[0].queue_wait, Some(200_000));
    assert_eq!(ex.resting(), 0);
}

#[test]
fn l2_cancels_are_shared_by_the_power_model() {
    // Behind nobody: every cancel comes from ahead.
    let mut ex = SimExchange::new(sym(), &plain());
    ex.on_market(&book(0, &[(99.0, 10.0)], &[(101.0, 5.0)], true));
    ex.submit(limit(1, Side::Buy, 99.0, 1.0, 0));
    ex.on_market(&book(200, &[(99.0, 6.0)], &[], false)); // 4 cancelled, all ahead: 6 left
    ex.on_market(&trade(300, 99.0, 6.0, Side::Sell));
    assert!(fills(&mut ex).is_empty());
    ex.on_market(&trade(400, 99.0, 1.0, Side::Sell));
    assert_eq!(fills(&mut ex)[0].size, sz(1.0));

    // 10 ahead, 10 behind, n = 2: a cancel of 5 takes 10^2/(10^2+10^2) = half from ahead.
    let mut ex = SimExchange::new(sym(), &plain());
    ex.on_market(&book(0, &[(99.0, 10.0)], &[(101.0, 5.0)], true));
    ex.submit(limit(1, Side::Buy, 99.0, 2.0, 0));
    ex.on_market(&book(200, &[(99.0, 20.0)], &[], false)); // 10 join behind
    ex.on_market(&book(300, &[(99.0, 15.0)], &[], false)); // ahead 10 - 2.5 = 7.5
    ex.on_market(&trade(400, 99.0, 8.0, Side::Sell)); // 0.5 of ours
    let f = fills(&mut ex);
    assert_eq!(f.len(), 1);
    assert_eq!(f[0].size, sz(0.5));

    // n = 0 splits evenly too, whatever the sizes; trades are not counted again as cancels.
    let mut ex = SimExchange::new(
        sym(),
        &ExecutionSpec {
            queue_power: 0.0,
            ..plain()
        },
    );
    ex.on_market(&book(0, &[(99.0, 4.0)], &[(101.0, 5.0)], true));
    ex.submit(limit(1, Side::Buy, 99.0, 1.0, 0));
    ex.on_market(&book(200, &[(99.0, 12.0)], &[], false)); // 4 ahead, 8 behind
    ex.on_market(&trade(250, 99.0, 2.0, Side::Sell)); // ahead 2
    ex.on_market(&book(300, &[(99.0, 6.0)], &[], false)); // 2 traded + 4 cancelled: ahead 0
    ex.on_market(&trade(400, 99.0, 0.5, Side::Sell));
    assert_eq!(fills(&mut ex)[0].size, sz(0.5));
}

#[test]
fn a_book_change_alone_never_fills_only_a_trade_does() {
    let mut ex = SimExchange::new(sym(), &plain());
    ex.on_market(&book(0, &[(99.0, 5.0)], &[(101.0, 5.0)], true));
    ex.submit(limit(1, Side::Buy, 99.0, 1.0, 0));
    ex.on_market(&book(
        200,
        &[(99.0, 0.0), (98.0, 3.0)],
        &[(100.0, 1.0)],
        false,
    ));
    assert!(
        fills(&mut ex).is_empty(),
        "the level emptied without a trade"
    );
    ex.on_market(&trade(300, 98.0, 1.0, Side::Sell)); // through our price
    let f = fills(&mut ex);
    assert_eq!((f[0].size, f[0].price), (sz(1.0), px(99.0)));
}

#[test]
fn latency_orders_see_the_book_at_arrival_and_miss_earlier_trades() {
    let mut ex = SimExchange::new(sym(), &plain());
    ex.on_market(&book(0, &[(99.0, 5.0)], &[(101.0, 5.0)], true));
    ex.submit(limit(1, Side::Sell, 101.0, 1.0, 0)); // arrives at 100 µs
    ex.submit(market(2, Side::Buy, 1.0, 0));
    ex.on_market(&trade(50, 101.0, 50.0, Side::Buy)); // before arrival: cannot fill order 1
    ex.on_market(&book(60, &[], &[(101.0, 0.0), (102.0, 5.0)], false)); // the ask moves up
    ex.on_market(&trade(150, 102.0, 1.0, Side::Buy)); // both arrive before this event
    let mut out = Vec::new();
    ex.reports(us(199), &mut out);
    assert!(out.is_empty(), "reports take 100 µs to come back");
    ex.reports(us(250), &mut out);
    let fill = out
        .iter()
        .find_map(|r| match &r.kind {
            ReportKind::Fill(f) if f.order == ClientOrderId(2) => Some(f.clone()),
            _ => None,
        })
        .unwrap();
    assert_eq!(
        (fill.price, fill.ts),
        (px(102.0), us(100)),
        "the book at arrival"
    );
    assert!(out.iter().all(|r| r.delivered.0 - r.ts.0 == 100_000));
    // Order 1 rests at 101 with nothing ahead; the print at 102 went through it.
    assert!(out.iter().any(|r| matches!(&r.kind,
        ReportKind::Fill(f) if f.order == ClientOrderId(1) && f.ts == us(150))));
}

#[test]
fn market_orders_walk_the_book_with_slippage_and_fees() {
    let spec = ExecutionSpec {
        taker_fee: 0.0008,
        slippage_bps: 1.0,
        ..plain()
    };
    let mut ex = SimExchange::new(sym(), &spec);
    ex.on_market(&book(
        0,
        &[(99.0, 5.0)],
        &[(101.0, 1.0), (102.0, 2.0)],
        true,
    ));
    ex.submit(market(1, Side::Buy, 2.5, 0));
    ex.submit(market(2, Side::Buy, 9.0, 0)); // more than the book holds
    ex.on_market(&trade(200, 99.0, 1.0, Side::Sell));
    let f = fills(&mut ex);
    let (p1, p2) = (101.0 * 1.0001, 102.0 * 1.0001);
    assert_eq!(f[0].price, px(p1));
    assert_eq!(f[0].size, sz(1.0));
    assert_eq!(f[1].price, px(p2));
    assert_eq!(f[1].size, sz(1.5));
    assert!((f[1].fee - p2 * 1.5 * 0.0008).abs() < 1e-9);
    assert!(f.iter().all(|f| f.liquidity == Liquidity::Taker));
    // Order 2 takes the book's 3 and the rest is cancelled (no impact: the replayed book keeps
    // its liquidity).
    let kinds_2: Vec<_> = f
        .iter()
        .filter(|f| f.order == ClientOrderId(2))
        .map(|f| f.size)
        .collect();
    assert_eq!(kinds_2, vec![sz(1.0), sz(2.0)]);
}

#[test]
fn limit_orders_take_their_marketable_part_and_ioc_cancels_the_rest() {
    let mut ex = SimExchange::new(sym(), &plain());
    ex.on_market(&book(
        0,
        &[(99.0, 5.0)],
        &[(101.0, 1.0), (102.0, 2.0)],
        true,
    ));
    ex.submit(limit(1, Side::Buy, 101.0, 3.0, 0));
    ex.submit(Order::limit(
        ClientOrderId(2),
        sym(),
        Side::Buy,
        OrderKind::Ioc,
        px(101.0),
        sz(3.0),
        us(0),
    ));
    ex.on_market(&book(200, &[(98.0, 1.0)], &[], false));
    assert_eq!(
        kinds(&mut ex),
        [
            "accepted",
            "fill 1@101",
            "accepted",
            "fill 1@101",
            "cancelled"
        ]
    );
    assert_eq!(ex.resting(), 1, "order 1's other 2 rest at 101");
    // A seller printing below 101 would have met our bid first.
    ex.on_market(&trade(300, 99.0, 1.5, Side::Sell));
    assert_eq!(kinds(&mut ex), ["fill 1.5@101"]);
}

#[test]
fn no_fill_through_a_crossed_book() {
    let mut ex = SimExchange::new(sym(), &plain());
    ex.on_market(&book(0, &[(101.0, 5.0)], &[(100.0, 5.0)], true));
    ex.submit(market(1, Side::Buy, 1.0, 0));
    ex.on_market(&trade(200, 100.0, 1.0, Side::Buy));
    let k = kinds(&mut ex);
    assert_eq!(k.len(), 1);
    assert!(k[0].starts_with("rejected: the book is crossed"), "{k:?}");
}

#[test]
fn cancels_take_latency_too() {
    let mut ex = SimExchange::new(sym(), &plain());
    ex.on_market(&book(0, &[(99.0, 0.0)], &[(101.0, 5.0)], true));
    ex.submit(limit(1, Side::Buy, 99.0, 1.0, 0)); // nothing ahead
    ex.cancel(ClientOrderId(1), us(150)); // arrives at 250
    ex.on_market(&trade(200, 99.0, 0.4, Side::Sell)); // still resting: fills 0.4
    ex.on_market(&trade(300, 99.0, 0.4, Side::Sell)); // cancelled by now
    assert_eq!(kinds(&mut ex), ["accepted", "fill 0.4@99", "cancelled"]);
}

fn l3(t: i64, action: L3Action, id: u64, side: Side, price: f64, size: f64) -> MarketEvent {
    MarketEvent::Order(
        sym(),
        OrderEvent {
            ts: us(t),
            seq: t as u64,
            action,
            order_id: OrderId(id),
            side,
            price: px(price),
            size: sz(size),
        },
    )
}

#[test]
fn l3_queue_is_exact_fifo() {
    let mut ex = SimExchange::new(sym(), &plain());
    ex.on_market(&l3(0, L3Action::Add, 1, Side::Buy, 99.0, 3.0)); // A
    ex.on_market(&l3(1, L3Action::Add, 2, Side::Buy, 99.0, 2.0)); // B
    ex.on_market(&l3(2, L3Action::Add, 9, Side::Sell, 101.0, 9.0));
    ex.submit(limit(1, Side::Buy, 99.0, 4.0, 0)); // arrives at 100: behind A and B
    ex.on_market(&l3(200, L3Action::Add, 3, Side::Buy, 99.0, 4.0)); // C, behind us
    ex.on_market(&l3(300, L3Action::Execute, 1, Side::Buy, 99.0, 3.0)); // A trades: no fill
    // Trades printed for L3 executions are not counted again.
    ex.on_market(&trade(300, 99.0, 3.0, Side::Sell));
    ex.on_market(&l3(400, L3Action::Modify, 2, Side::Buy, 99.0, 1.0)); // B shrinks, keeps place
    ex.on_market(&l3(450, L3Action::Execute, 2, Side::Buy, 99.0, 1.0)); // B trades: no fill
    assert!(fills(&mut ex).is_empty());
    ex.on_market(&l3(500, L3Action::Execute, 3, Side::Buy, 99.0, 2.5)); // C trades: we were first
    let f = fills(&mut ex);
    assert_eq!((f.len(), f[0].size, f[0].ts), (1, sz(2.5), us(500)));
    ex.on_market(&l3(600, L3Action::Execute, 3, Side::Buy, 99.0, 1.5));
    assert_eq!(fills(&mut ex)[0].size, sz(1.5));
    assert_eq!(ex.resting(), 0);
}

#[test]
fn l3_priority_lost_on_a_size_increase_and_cancels_shorten_the_queue() {
    let mut ex = SimExchange::new(sym(), &plain());
    ex.on_market(&l3(0, L3Action::Add, 1, Side::Sell, 101.0, 3.0));
    ex.on_market(&l3(1, L3Action::Add, 2, Side::Sell, 101.0, 2.0));
    ex.on_market(&l3(2, L3Action::Add, 9, Side::Buy, 99.0, 9.0));
    ex.submit(limit(1, Side::Sell, 101.0, 1.0, 0));
    ex.on_market(&l3(200, L3Action::Modify, 1, Side::Sell, 101.0, 5.0)); // A to the back
    ex.on_market(&l3(300, L3Action::Cancel, 2, Side::Buy, 101.0, 2.0)); // B gone
    ex.on_market(&l3(400, L3Action::Execute, 1, Side::Sell, 101.0, 1.0)); // A now behind us
    let f = fills(&mut ex);
    assert_eq!((f.len(), f[0].size), (1, sz(1.0)));
}

#[test]
fn sampled_latency_is_seeded_and_bounded() {
    let spec = ExecutionSpec {
        latency_jitter: Some(Span(1_000_000)),
        seed: 7,
        ..plain()
    };
    let arrivals = |spec: &ExecutionSpec| {
        let ex = SimExchange::new(sym(), spec);
        (0..100)
            .map(|i| ex.latency(ClientOrderId(i), 0))
            .collect::<Vec<_>>()
    };
    let a = arrivals(&spec);
    assert_eq!(a, arrivals(&spec));
    assert!(a.iter().all(|l| (100_000..=1_100_000).contains(l)));
    assert!(a.iter().collect::<std::collections::HashSet<_>>().len() > 50);
    assert_ne!(
        a,
        arrivals(&ExecutionSpec {
            seed: 8,
            ..spec.clone()
        })
    );
}

#[test]
fn post_only_is_refused_when_it_would_take_and_rests_otherwise() {
    let mut ex = SimExchange::new(sym(), &plain());
    ex.on_market(&book(0, &[(99.0, 5.0)], &[(101.0, 5.0)], true));
    let post = |id, price| {
        Order::limit(
            ClientOrderId(id),
            sym(),
            Side::Buy,
            OrderKind::PostOnly,
            px(price),
            sz(1.0),
            us(0),
        )
    };
    ex.submit(post(1, 101.0)); // would take the ask
    ex.submit(post(2, 100.0)); // inside the spread: rests
    ex.on_market(&trade(200, 100.0, 1.0, Side::Sell)); // a seller at 100 fills it
    assert_eq!(
        kinds(&mut ex),
        [
            "rejected: post-only order would take liquidity",
            "accepted",
            "fill 1@100"
        ]
    );
}

#[test]
fn bars_fill_at_the_next_open_or_through_the_limit() {
    let mut ex = SimExchange::new(sym(), &plain());
    let bar = |minute: i64, o: f64, h: f64, l: f64, c: f64| {
        MarketEvent::Bar(
            sym(),
            Box::new(flowsense_core::Bar {
                open_time: UnixNanos(minute * 60_000_000_000),
                interval: 60_000_000_000,
                open: px(o),
                high: px(h),
                low: px(l),
                close: px(c),
                volume: sz(3.0),
                trades: None,
            }),
        )
    };
    ex.on_market(&bar(0, 100.0, 101.0, 99.0, 100.5));
    let at = UnixNanos(60_000_000_000); // the first bar's close
    ex.submit(Order::market(
        ClientOrderId(1),
        sym(),
        Side::Buy,
        sz(5.0),
        at,
    ));
    ex.submit(Order::limit(
        ClientOrderId(2),
        sym(),
        Side::Buy,
        OrderKind::Limit,
        px(99.5),
        sz(1.0),
        at,
    ));
    // Opens at 100.2: the market order takes the bar's 3 at the open (the rest is cancelled);
    // the bar's volume is gone, so the limit (low 99.0 < 99.5) waits for the next bar.
    ex.on_market(&bar(1, 100.2, 100.4, 99.0, 100.0));
    ex.on_market(&bar(2, 100.0, 100.1, 99.4, 99.8)); // through 99.5: fills at 99.5
    assert_eq!(
        kinds(&mut ex),
        [
            "accepted",
            "accepted",
            "fill 3@100.2",
            "cancelled",
            "fill 1@99.5"
        ]
    );
}

#[test]
fn a_bar_of_volume_zero_fills_nothing_or_uncapped_as_configured() {
    let bar = |minute: i64, o: f64, c: f64, volume: f64| {
        MarketEvent::Bar(
            sym(),
            Box::new(flowsense_core::Bar {
                open_time: UnixNanos(minute * 60_000_000_000),
                interval: 60_000_000_000,
                open: px(o),
                high: px(o.max(c)),
                low: px(o.min(c)),
                close: px(c),
                volume: sz(volume),
                trades: None,
            }),
        )
    };
    let run = |mode| {
        let spec = ExecutionSpec {
            zero_volume_bars: mode,
            ..plain()
        };
        let mut ex = SimExchange::new(sym(), &spec);
        ex.on_market(&bar(0, 100.0, 100.5, 3.0));
        ex.submit(market(1, Side::Buy, 2.0, 60_000_000));
        ex.on_market(&bar(1, 100.7, 101.0, 0.0)); // prices move, nothing traded
        ex.on_market(&bar(2, 101.2, 101.0, 5.0));
        kinds(&mut ex)
    };
    use flowsense_core::strategy::ZeroVolumeBars;
    // The default: the order waits out the bar that did not trade, and fills at the next open.
    assert_eq!(run(ZeroVolumeBars::Skip), ["accepted", "fill 2@101.2"]);
    // As Backtrader: it fills at the open of the bar of volume 0.
    assert_eq!(run(ZeroVolumeBars::Fill), ["accepted", "fill 2@100.7"]);
}

#[test]
fn a_new_l3_session_empties_the_book_and_cancels_resting_orders() {
    let mut ex = SimExchange::new(sym(), &plain());
    ex.on_market(&l3(0, L3Action::Add, 1, Side::Buy, 99.0, 3.0));
    ex.on_market(&l3(1, L3Action::Add, 2, Side::Sell, 101.0, 3.0));
    ex.submit(limit(1, Side::Buy, 99.0, 1.0, 0)); // rests behind order 1
    ex.on_market(&l3(200, L3Action::Add, 3, Side::Sell, 102.0, 1.0));
    // The next session: ids start over, and its order 1 is a new one at another price.
    ex.on_market(&l3(1_000, L3Action::Clear, 0, Side::Buy, 0.0, 0.0));
    ex.on_market(&l3(1_001, L3Action::Seed, 0, Side::Buy, 98.0, 2.0));
    ex.on_market(&l3(1_002, L3Action::Add, 1, Side::Sell, 100.0, 2.0));
    ex.on_market(&l3(1_003, L3Action::Execute, 1, Side::Sell, 100.0, 2.0));
    assert_eq!(ex.resting(), 0);
    assert_eq!(kinds(&mut ex), ["accepted", "cancelled"]);
    // The new session's book is the seed alone: a market buy finds no ask, a sell the seed.
    ex.submit(market(2, Side::Sell, 1.0, 2_000));
    ex.on_market(&l3(2_200, L3Action::Add, 4, Side::Sell, 103.0, 1.0));
    assert_eq!(kinds(&mut ex), ["accepted", "fill 1@98"]);
}

#[test]
fn the_no_partial_rule_fills_the_whole_quote_once_the_queue_ahead_is_gone() {
    use flowsense_core::strategy::QueueFills;
    let run = |rule| {
        let spec = ExecutionSpec {
            queue_fills: rule,
            ..plain()
        };
        let mut ex = SimExchange::new(sym(), &spec);
        ex.on_market(&book(0, &[(99.0, 5.0)], &[(101.0, 5.0)], true));
        ex.submit(limit(1, Side::Buy, 99.0, 3.0, 0)); // behind 5
        ex.on_market(&trade(200, 99.0, 4.0, Side::Sell)); // 1 ahead left
        ex.on_market(&trade(300, 99.0, 2.0, Side::Sell)); // 1 ahead, then 1 past it
        let first = fills(&mut ex).iter().map(|f| f.size).collect::<Vec<_>>();
        let mut ex = SimExchange::new(sym(), &spec);
        ex.on_market(&book(0, &[(99.0, 5.0)], &[(101.0, 5.0)], true));
        ex.submit(limit(2, Side::Buy, 99.0, 2.0, 0));
        ex.on_market(&book(
            500,
            &[(99.0, 0.0), (98.0, 4.0)],
            &[(101.0, 5.0)],
            false,
        ));
        ex.on_market(&trade(600, 98.5, 0.5, Side::Sell)); // through 99: fills
        let second = fills(&mut ex).iter().map(|f| f.size).collect::<Vec<_>>();
        (first, second)
    };
    assert_eq!(run(QueueFills::Partial), (vec![sz(1.0)], vec![sz(0.5)]));
    assert_eq!(run(QueueFills::Whole), (vec![sz(3.0)], vec![sz(2.0)]));
}

#[test]
fn the_no_partial_rule_also_fills_when_the_opposite_best_reaches_the_quote() {
    use flowsense_core::strategy::QueueFills;
    let run = |rule| {
        let spec = ExecutionSpec {
            queue_fills: rule,
            ..plain()
        };
        let mut ex = SimExchange::new(sym(), &spec);
        ex.on_market(&book(0, &[(99.0, 5.0)], &[(101.0, 5.0)], true));
        ex.submit(limit(1, Side::Buy, 99.0, 2.0, 0)); // behind 5
        ex.submit(limit(2, Side::Sell, 101.0, 1.0, 0)); // behind 5
        // The asks fall to 99 without a trade: the book crosses our bid.
        ex.on_market(&book(500, &[], &[(101.0, 0.0), (99.0, 3.0)], false));
        fills(&mut ex)
            .iter()
            .map(|f| (f.side, f.price, f.size, f.liquidity))
            .collect::<Vec<_>>()
    };
    // On trades only: nothing fills on a book change.
    assert_eq!(run(QueueFills::Partial), vec![]);
    // hftbacktest's no-partial exchange: the bid fills whole at its price, as a maker.
    assert_eq!(
        run(QueueFills::Whole),
        vec![(Side::Buy, px(99.0), sz(2.0), Liquidity::Maker)]
    );
}

#[test]
fn the_no_partial_rule_needs_the_overshoot_to_round_to_a_lot() {
    use flowsense_core::strategy::QueueFills;
    let spec = ExecutionSpec {
        queue_fills: QueueFills::Whole,
        lot_size: Some(1.0),
        ..plain()
    };
    let mut ex = SimExchange::new(sym(), &spec);
    ex.on_market(&book(0, &[(99.0, 5.0)], &[(101.0, 5.0)], true));
    ex.submit(limit(1, Side::Buy, 99.0, 3.0, 0)); // behind 5
    ex.on_market(&trade(200, 99.0, 5.4, Side::Sell)); // 0.4 past the queue: rounds to 0 lots
    assert!(fills(&mut ex).is_empty());
    ex.on_market(&trade(300, 99.0, 0.2, Side::Sell)); // 0.6 past it: rounds to 1 lot
    assert_eq!(
        fills(&mut ex).iter().map(|f| f.size).collect::<Vec<_>>(),
        vec![sz(3.0)]
    );
}

#[test]
fn gross_cancels_count_the_traded_part_of_a_fall_as_cancels_too() {
    use flowsense_core::strategy::QueueCancels;
    let ahead_after = |model| {
        let spec = ExecutionSpec {
            queue_cancels: model,
            queue_power: 0.0, // every cancel split in half
            ..plain()
        };
        let mut ex = SimExchange::new(sym(), &spec);
        ex.on_market(&book(0, &[(99.0, 10.0)], &[(101.0, 5.0)], true));
        ex.submit(limit(1, Side::Buy, 99.0, 1.0, 0)); // behind 10
        ex.on_market(&trade(200, 99.0, 4.0, Side::Sell)); // 6 ahead
        ex.on_market(&book(300, &[(99.0, 4.0)], &[(101.0, 5.0)], false)); // the level fell by 6
        // Then a trade of 3.5: fills what is past the queue ahead.
        ex.on_market(&trade(400, 99.0, 3.5, Side::Sell));
        fills(&mut ex).iter().map(|f| f.size).collect::<Vec<_>>()
    };
    // net: 2 of the fall are cancels (6 - 4 traded), half from ahead: 5 ahead, capped at the level's 4.
    assert_eq!(ahead_after(QueueCancels::Net), Vec::<Size>::new());
    // gross: all 6 are cancels, half from ahead: 3 ahead, and the 3.5 trade fills 0.5.
    assert_eq!(ahead_after(QueueCancels::Gross), vec![sz(0.5)]);
}

#[test]
fn modelled_fills_round_down_to_whole_lots() {
    let spec = ExecutionSpec {
        lot_size: Some(1.0),
        ..plain()
    };
    let mut ex = SimExchange::new(sym(), &spec);
    ex.on_market(&book(0, &[(99.0, 5.0)], &[(101.0, 5.0)], true));
    ex.submit(limit(1, Side::Buy, 99.0, 3.0, 0)); // behind 5
    // The level drops to 3.5 without a trade: 1.5 cancelled, a share of it from ahead.
    ex.on_market(&book(200, &[(99.0, 3.5)], &[], false));
    // A seller takes 6: past the fractional volume ahead, whole lots only.
    ex.on_market(&trade(300, 99.0, 6.0, Side::Sell));
    let f = fills(&mut ex);
    assert_eq!(f.len(), 1);
    assert_eq!(f[0].size.as_f64().fract(), 0.0, "{:?}", f[0].size);
    assert!(f[0].size.as_f64() >= 2.0);
}
