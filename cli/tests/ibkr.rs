//! The Interactive Brokers sink against a scripted TWS on loopback (`flowsense_bench::tws`),
//! through real sockets and the `ibapi` client: one script per scenario (fill, partial fill,
//! reject, a fill that beats the cancel, a connection dropped mid-order, a restart with an
//! order still open, a position that does not match, a burst of orders held to IB's pace), and
//! the kill switch cancelling at IB.

#![allow(clippy::disallowed_methods)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use flowsense_bench::tws::{FakeTws, OnOrder, TwsScript};
use flowsense_core::job::{ContractSpec, JobSpec};
use flowsense_core::order::{
    Broker, BrokerNotice, ClientOrderId, ExecReport, Order, OrderKind, ReportKind,
};
use flowsense_core::results::TradeRecord;
use flowsense_core::{DepthUpdate, MarketEvent, Price, Side, Size, Symbol, UnixNanos};
use flowsense_operators::TradeStrategy;
use flowsense_operators::trader::Trader;
use flowsense_sinks::ibkr::{IbBroker, IbConfig, IbSession, order_ref};

use crate::live::{STRATEGY as LIVE_STRATEGY, live_spec, run, write};
use crate::venue::lake_csv;

const JOB: &str = "ib-test";

fn aapl() -> Symbol {
    Symbol::new("AAPL").unwrap()
}

fn tws(on_order: OnOrder) -> FakeTws {
    FakeTws::start(TwsScript {
        on_order,
        ..TwsScript::default()
    })
    .unwrap()
}

fn config(tws: &FakeTws, pacing: u32) -> IbConfig {
    let mut contracts = BTreeMap::new();
    contracts.insert(aapl(), ContractSpec::default());
    IbConfig {
        job: JOB.into(),
        address: tws.address().into(),
        client_id: 7,
        account: None,
        pacing,
        reconnect_attempts: 5,
        contracts,
    }
}

fn session(tws: &FakeTws) -> Arc<IbSession> {
    Arc::new(IbSession::connect(config(tws, 50)).unwrap())
}

fn order(seq: u64, kind: OrderKind, qty: i64) -> Order {
    let id = ClientOrderId::new(JOB, &aapl(), seq);
    let sent = UnixNanos(1_700_000_000_000_000_000 + seq as i64);
    match kind {
        OrderKind::Market => Order::market(id, aapl(), Side::Buy, Size::from_units(qty), sent),
        k => Order::limit(
            id,
            aapl(),
            Side::Buy,
            k,
            Price::from_units(99),
            Size::from_units(qty),
            sent,
        ),
    }
}

/// What the broker reported, as words, once `until` holds of it (or after 8 s).
fn wait(b: &mut IbBroker, got: &mut Vec<String>, until: impl Fn(&[String]) -> bool) {
    let end = Instant::now() + Duration::from_secs(8);
    let mut out: Vec<ExecReport> = Vec::new();
    while !until(got) && Instant::now() < end {
        b.reports(UnixNanos(1), &mut out);
        got.extend(out.drain(..).map(|r| match r.kind {
            ReportKind::Accepted => "accepted".to_string(),
            ReportKind::Fill(f) => format!(
                "fill {} @ {} fee {}",
                f.size.as_f64(),
                f.price.as_f64(),
                f.fee
            ),
            ReportKind::Cancelled => "cancelled".into(),
            ReportKind::Rejected(w) => format!("rejected {w}"),
        }));
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn notices(b: &mut IbBroker) -> Vec<BrokerNotice> {
    let mut n = Vec::new();
    b.notices(&mut n);
    n
}

fn has(n: &[BrokerNotice], kind: &str) -> bool {
    n.iter().any(|x| x.kind == kind)
}

#[test]
fn a_market_order_fills_with_its_commission_and_carries_its_order_ref() {
    let tws = tws(OnOrder::Fill);
    let s = session(&tws);
    assert_eq!(s.account(), "DU0000001");
    let mut b = s.broker(&aapl());
    let o = order(1, OrderKind::Market, 10);
    b.submit(o.clone());
    let mut got = Vec::new();
    wait(&mut b, &mut got, |g| g.len() >= 2);
    assert_eq!(got, ["accepted", "fill 10 @ 100 fee 0.35"]);
    let placed = tws.placed();
    assert_eq!(placed.len(), 1);
    let p = &placed[0];
    assert_eq!(
        (p.action.as_str(), p.quantity, p.order_type.as_str()),
        ("BUY", 10.0, "MKT")
    );
    assert_eq!(
        (p.account.as_str(), p.symbol.as_str()),
        ("DU0000001", "AAPL")
    );
    assert_eq!(p.order_ref, order_ref(JOB, &o));
    let n = notices(&mut b);
    assert!(
        has(&n, "reconciled") && !has(&n, "position_mismatch"),
        "{n:?}"
    );
    let account = n.iter().find(|x| x.kind == "broker_account").unwrap();
    assert_eq!(
        account.detail,
        "DU0000001: NetLiquidation 1000000 USD, TotalCashValue 1000000 USD, BuyingPower 4000000 USD"
    );
}

#[test]
fn partial_fills_then_a_cancel() {
    let tws = tws(OnOrder::Partial(vec![0.3, 0.3]));
    let s = session(&tws);
    let mut b = s.broker(&aapl());
    let o = order(1, OrderKind::Limit, 10);
    b.submit(o.clone());
    let mut got = Vec::new();
    wait(&mut b, &mut got, |g| g.len() >= 3);
    b.cancel(o.id, UnixNanos(2));
    wait(&mut b, &mut got, |g| g.len() >= 4);
    assert_eq!(
        got,
        [
            "accepted",
            "fill 3 @ 99 fee 0.35",
            "fill 3 @ 99 fee 0.35",
            "cancelled"
        ]
    );
    assert_eq!(tws.position("AAPL"), 6.0);
    assert_eq!(tws.open_orders(), 0);
}

#[test]
fn a_rejection_names_ibs_code_and_reason() {
    let tws = tws(OnOrder::Reject(" no trading permissions".into()));
    let s = session(&tws);
    let mut b = s.broker(&aapl());
    b.submit(order(1, OrderKind::Market, 10));
    let mut got = Vec::new();
    wait(&mut b, &mut got, |g| !g.is_empty());
    assert_eq!(
        got,
        ["rejected IB 201: Order rejected - reason: no trading permissions"]
    );
}

#[test]
fn a_fill_that_beats_the_cancel_is_a_fill() {
    let tws = tws(OnOrder::FillOnCancel);
    let s = session(&tws);
    let mut b = s.broker(&aapl());
    let o = order(1, OrderKind::Limit, 10);
    b.submit(o.clone());
    let mut got = Vec::new();
    wait(&mut b, &mut got, |g| !g.is_empty());
    b.cancel(o.id, UnixNanos(2));
    wait(&mut b, &mut got, |g| g.len() >= 2);
    std::thread::sleep(Duration::from_millis(200));
    wait(&mut b, &mut got, |_| true);
    assert_eq!(got, ["accepted", "fill 10 @ 99 fee 0.35"]);
    let n = notices(&mut b);
    assert!(n.iter().any(|x| x.detail.contains("IB 10148")), "{n:?}");
}

#[test]
fn a_fill_while_disconnected_is_found_by_the_reconciliation_once() {
    let tws = tws(OnOrder::FillWhileAway);
    let s = session(&tws);
    let mut b = s.broker(&aapl());
    b.submit(order(1, OrderKind::Market, 10));
    let mut got = Vec::new();
    // The client reconnects (after about a second) and reconciles.
    wait(&mut b, &mut got, |g| g.len() >= 2);
    std::thread::sleep(Duration::from_millis(300));
    wait(&mut b, &mut got, |_| true);
    assert_eq!(got, ["accepted", "fill 10 @ 100 fee 0.35"]);
    assert_eq!(tws.connections(), 2);
    let n = notices(&mut b);
    assert!(has(&n, "broker_reconnected"), "{n:?}");
    assert_eq!(
        n.iter().filter(|x| x.kind == "reconciled").count(),
        2,
        "{n:?}"
    );
    assert!(!has(&n, "position_mismatch"), "{n:?}");
}

#[test]
fn a_restart_takes_back_its_open_order_and_does_not_send_it_again() {
    let tws = tws(OnOrder::Rest);
    let o = order(1, OrderKind::Limit, 10);
    {
        let s = session(&tws);
        let mut b = s.broker(&aapl());
        b.submit(o.clone());
        let mut got = Vec::new();
        wait(&mut b, &mut got, |g| !g.is_empty());
        assert_eq!(got, ["accepted"]);
    } // the job stops with its order working at IB
    let s = session(&tws);
    assert_eq!(s.found_orders(), 1);
    let mut b = s.broker(&aapl());
    b.submit(o.clone()); // the same decision, made again after the restart
    let mut got = Vec::new();
    wait(&mut b, &mut got, |g| !g.is_empty());
    assert_eq!(got, ["accepted"]);
    assert_eq!(tws.placed().len(), 1, "sent again");
    b.cancel(o.id, UnixNanos(3));
    wait(&mut b, &mut got, |g| g.len() >= 2);
    assert_eq!(got, ["accepted", "cancelled"]);
    assert_eq!(tws.open_orders(), 0);
}

const STRATEGY: &str = r#"
    name = "ib-test"
    [source.live]
    exchange = "alpaca-iex"
    symbols = ["AAPL"]
    [features]
    buckets = ["1s"]
    [strategy]
    bucket = "1s"
    signal = "buy_volume - sell_volume"
    entry = 1
    order = "limit_join"
    [strategy.sizing]
    method = "fixed"
    size = 10
    [broker]
    kind = "ibkr"
"#;

fn trader(b: IbBroker) -> Trader<IbBroker> {
    let spec = JobSpec::from_toml(STRATEGY).unwrap();
    Trader::new(
        aapl(),
        JOB,
        &spec.features,
        spec.strategy.as_ref().unwrap(),
        &spec.risk,
        b,
    )
    .unwrap()
}

fn book(ms: i64) -> MarketEvent {
    book_at(ms, 99, 101)
}

fn book_at(ms: i64, bid: i64, ask: i64) -> MarketEvent {
    MarketEvent::Depth(
        aapl(),
        Box::new(DepthUpdate {
            ts: UnixNanos::from_millis(ms),
            bids: vec![(Price::from_units(bid), Size::from_units(50))],
            asks: vec![(Price::from_units(ask), Size::from_units(50))],
            is_snapshot: true,
            ..Default::default()
        }),
    )
}

fn buy(ms: i64) -> MarketEvent {
    MarketEvent::Trade(
        aapl(),
        flowsense_core::Trade {
            ts: UnixNanos::from_millis(ms),
            local_ts: None,
            trade_id: None,
            price: Price::from_units(101),
            size: Size::from_units(3),
            aggressor: Side::Buy,
        },
    )
}

fn risk(out: &[TradeRecord], kind: &str) -> Vec<String> {
    out.iter()
        .filter_map(|r| match r {
            TradeRecord::Risk(e) if e.kind == kind => Some(e.detail.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn a_position_ib_holds_and_the_job_does_not_halts_the_strategy() {
    let mut positions = BTreeMap::new();
    positions.insert("AAPL".to_string(), 5.0);
    let tws = FakeTws::start(TwsScript {
        positions,
        ..TwsScript::default()
    })
    .unwrap();
    let s = session(&tws);
    let mut t = trader(s.broker(&aapl()));
    let mut out = Vec::new();
    t.on_event(&book(0), &mut out);
    let why = risk(&out, "position_mismatch");
    assert_eq!(why.len(), 1, "{out:?}");
    assert!(
        why[0].contains("IB holds 5 AAPL, the job's fills add up to 0"),
        "{why:?}"
    );
    assert!(t.halted());
    // Buying flow would enter; the halted strategy sends nothing.
    for ms in [500, 1500, 2500] {
        t.on_event(&buy(ms), &mut out);
    }
    assert!(tws.placed().is_empty(), "{:?}", tws.placed());
}

/// A book at 99 / 101, then buying flow: the 1 s bucket closes on it and the trader rests a
/// limit order at the bid, at IB. Waits for it there; the test's deadline.
fn rest_one_order(t: &mut Trader<IbBroker>, tws: &FakeTws, out: &mut Vec<TradeRecord>) -> Instant {
    t.on_event(&book(0), out);
    for ms in [500, 1500] {
        t.on_event(&buy(ms), out);
    }
    let end = Instant::now() + Duration::from_secs(8);
    while tws.open_orders() == 0 && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(10));
    }
    end
}

#[test]
fn the_kill_switch_cancels_at_ib() {
    let tws = tws(OnOrder::Rest);
    let s = session(&tws);
    let mut t = trader(s.broker(&aapl()));
    let mut out = Vec::new();
    let end = rest_one_order(&mut t, &tws, &mut out);
    assert_eq!(tws.open_orders(), 1);
    t.kill(false, "test kill", &mut out);
    while tws.open_orders() > 0 && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(tws.open_orders(), 0);
    std::thread::sleep(Duration::from_millis(100));
    t.on_event(&buy(1600), &mut out);
    t.finish(&mut out);
    let cancelled = out.iter().any(|r| {
        matches!(r, TradeRecord::Order(o)
        if o.status == flowsense_core::order::OrderStatus::Cancelled)
    });
    assert!(cancelled, "{out:?}");
    assert_eq!(risk(&out, "kill").len(), 1);
}

#[test]
fn a_burst_of_orders_is_held_to_ibs_pace() {
    let tws = tws(OnOrder::Rest);
    let s = Arc::new(IbSession::connect(config(&tws, 50)).unwrap());
    let mut b = s.broker(&aapl());
    let before = tws.received().len();
    const N: usize = 120;
    for seq in 0..N as u64 {
        b.submit(order(seq, OrderKind::Limit, 1));
    }
    let end = Instant::now() + Duration::from_secs(20);
    while tws.placed().len() < N && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(tws.placed().len(), N);
    let times: Vec<Instant> = tws.received()[before..]
        .iter()
        .filter(|r| r.id == 3)
        .map(|r| r.at)
        .collect();
    // No one-second window holds more than IB's 50 (2 of slack for the socket's jitter).
    let most = (0..times.len())
        .map(|i| {
            times[i..]
                .iter()
                .take_while(|t| **t - times[i] < Duration::from_secs(1))
                .count()
        })
        .max()
        .unwrap();
    assert!(most <= 52, "{most} orders within one second");
    let span = *times.last().unwrap() - times[0];
    assert!(
        span >= Duration::from_millis(1300),
        "120 orders in {span:?}"
    );
}

#[test]
fn flowsense_run_trades_a_live_feed_at_ib_by_config_alone() {
    let tws = FakeTws::start(TwsScript {
        price: 56_000.0,
        ..TwsScript::default()
    })
    .unwrap();
    let (ws, rest) = crate::venue::binance_at_once_as_of_now(20000);
    let dir = tempfile::tempdir().unwrap();
    let (rec, lake) = (dir.path().join("rec"), dir.path().join("lake"));
    let port = tws.address().rsplit(':').next().unwrap();
    let broker = format!(
        "{LIVE_STRATEGY}\n[broker]\nkind = \"ibkr\"\nport = {port}\nclient_id = 3\n\
         [broker.contracts.BTCUSDT-PERP]\nsymbol = \"BTC\"\nsec_type = \"CRYPTO\"\nexchange = \"PAXOS\"\n"
    );
    let job = write(
        dir.path(),
        "ib.toml",
        &live_spec("ofi-ib", &ws.url, &rest, &rec, &broker),
    );
    let said = run(&job, &lake, &["--run-id", "ib-1"]);
    let runs = lake_csv(&lake, "SELECT run_id, mode FROM runs");
    assert!(runs.contains("ib-1,live"), "{runs}\n{said}");
    let placed = tws.placed();
    assert!(!placed.is_empty(), "no order reached IB: {said}");
    for p in &placed {
        assert!(p.order_ref.starts_with("fs|ofi-ib|BTCUSDT-PERP|"), "{p:?}");
        assert_eq!((p.symbol.as_str(), p.order_type.as_str()), ("BTC", "MKT"));
        // An entry, an exit, or a reversal (both at once).
        assert!([0.01, 0.02].contains(&p.quantity), "{p:?}");
    }
    let count = |sql: &str| -> usize {
        lake_csv(&lake, sql)
            .lines()
            .nth(1)
            .unwrap()
            .parse()
            .unwrap()
    };
    assert_eq!(
        count("SELECT count(*) AS n FROM orders WHERE run_id = 'ib-1'"),
        placed.len()
    );
    assert_eq!(
        count("SELECT count(*) AS n FROM fills WHERE run_id = 'ib-1'"),
        placed.len(),
        "{said}"
    );
    let fees = lake_csv(
        &lake,
        "SELECT DISTINCT fee, price FROM fills WHERE run_id = 'ib-1'",
    );
    assert_eq!(fees.lines().nth(1), Some("0.35,56000.0"), "{fees}");
    let risk = lake_csv(&lake, "SELECT kind FROM risk_events WHERE run_id = 'ib-1'");
    assert!(
        risk.contains("reconciled") && !risk.contains("position_mismatch"),
        "{risk}"
    );
    // The account ends holding what the job's fills add up to.
    let net: f64 = placed
        .iter()
        .map(|p| {
            if p.action == "BUY" {
                p.quantity
            } else {
                -p.quantity
            }
        })
        .sum();
    assert!((tws.position("BTC") - net).abs() < 1e-9);
}

#[test]
fn an_unreachable_gateway_and_a_broker_on_history_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let spec = live_spec(
        "ofi-ib",
        "ws://127.0.0.1:9/",
        "http://127.0.0.1:9",
        &dir.path().join("rec"),
        &format!(
            "{LIVE_STRATEGY}\n[broker]\nkind = \"ibkr\"\nport = {port}\nreconnect_attempts = 0\n"
        ),
    );
    let job = write(dir.path(), "ib.toml", &spec);
    let lake = dir.path().join("lake");
    let err = crate::common::run_err(&["run", &job, "--lake", lake.to_str().unwrap()]);
    assert!(
        err.contains(&format!(
            "Interactive Brokers at 127.0.0.1:{port}: cannot connect"
        )),
        "{err}"
    );
    let history = format!(
        "name = \"h\"\n[source.synthetic]\nsymbols = 1\n{LIVE_STRATEGY}\n[broker]\nkind = \"ibkr\"\n"
    );
    let job = write(dir.path(), "h.toml", &history);
    let err = crate::common::run_err(&["run", &job, "--lake", lake.to_str().unwrap()]);
    assert!(
        err.contains("trades a live feed: use [source.live]"),
        "{err}"
    );
}

#[test]
fn ibs_connection_lost_and_restored_codes_are_recorded_and_reconciled() {
    let tws = tws(OnOrder::Rest);
    let s = session(&tws);
    let mut b = s.broker(&aapl());
    let end = Instant::now() + Duration::from_secs(8);
    let mut seen = notices(&mut b);
    tws.notice(
        1100,
        "Connectivity between IB and Trader Workstation has been lost.",
    );
    tws.notice(
        1102,
        "Connectivity between IB and Trader Workstation has been restored - data maintained.",
    );
    while seen.iter().filter(|n| n.kind == "reconciled").count() < 2 && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(10));
        seen.extend(notices(&mut b));
    }
    let kinds: Vec<&str> = seen.iter().map(|n| n.kind.as_str()).collect();
    assert_eq!(
        kinds,
        [
            "broker_account",
            "reconciled",
            "broker_disconnected",
            "broker_reconnected",
            "broker_account",
            "reconciled"
        ]
    );
    assert!(
        seen[2].detail.starts_with("IB 1100: Connectivity"),
        "{:?}",
        seen[2]
    );
    assert_eq!(tws.connections(), 1);
}

#[test]
fn flowsense_tws_and_venue_serve_the_local_ibkr_example_across_processes() {
    use crate::common::{first_line, free_port};
    use std::process::Stdio;
    let (ws_port, rest_port, tws_port) = (free_port(), free_port(), free_port());
    let mut venue = crate::venue::spawn_venue(ws_port, rest_port);
    let mut tws = crate::common::flowsense()
        .args(["tws", "--listen", &format!("127.0.0.1:{tws_port}")])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    first_line(&mut venue);
    let said_tws = first_line(&mut tws);
    assert!(
        said_tws.contains(&format!("scripted TWS on 127.0.0.1:{tws_port}")),
        "{said_tws}"
    );
    let example =
        std::fs::read_to_string(crate::common::repo_path("examples/live-ibkr-local.toml"))
            .unwrap()
            .replace("127.0.0.1:9443", &format!("127.0.0.1:{ws_port}"))
            .replace("127.0.0.1:9444", &format!("127.0.0.1:{rest_port}"))
            .replace("port = 4002", &format!("port = {tws_port}"));
    let dir = tempfile::tempdir().unwrap();
    let job = write(dir.path(), "local.toml", &example);
    let lake = dir.path().join("lake");
    let said = run(&job, &lake, &["--run-id", "ib-local-1"]);
    for c in [&mut venue, &mut tws] {
        let _ = c.kill();
        let _ = c.wait();
    }
    let n = lake_csv(
        &lake,
        "SELECT count(*) AS n FROM fills WHERE run_id = 'ib-local-1'",
    );
    assert_ne!(
        n.lines().nth(1),
        Some("0"),
        "no fill from the scripted TWS: {said}"
    );
    let runs = lake_csv(&lake, "SELECT mode FROM runs WHERE run_id = 'ib-local-1'");
    assert_eq!(runs.lines().nth(1), Some("live"), "{runs}");
}

#[test]
fn a_touch_that_moves_modifies_the_resting_order_at_ib_in_place() {
    let tws = tws(OnOrder::Rest);
    let s = session(&tws);
    let text = STRATEGY.replace(
        "order = \"limit_join\"",
        "order = \"limit_join\"\n    replace_on_touch_move = true",
    );
    let spec = JobSpec::from_toml(&text).unwrap();
    let strategy = spec.strategy.as_ref().unwrap();
    let mut t = Trader::new(
        aapl(),
        JOB,
        &spec.features,
        strategy,
        &spec.risk,
        s.broker(&aapl()),
    )
    .unwrap();
    let mut out = Vec::new();
    let end = rest_one_order(&mut t, &tws, &mut out);
    assert_eq!(tws.placed()[0].limit, Some(99.0));
    // The bid moves up a unit; at the next close the order follows it, in place.
    t.on_event(&book_at(1600, 100, 101), &mut out);
    t.on_event(&buy(2500), &mut out);
    while tws.modifies() != [1] && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(tws.modifies(), [1]);
    let placed = tws.placed();
    assert_eq!(
        (placed.len(), placed[0].limit),
        (1, Some(100.0)),
        "{placed:?}"
    );
    assert!(
        !tws.received().iter().any(|r| r.id == 4),
        "a cancel was sent"
    );
    t.finish(&mut out);
    let prices: Vec<_> = out
        .iter()
        .filter_map(|r| match r {
            TradeRecord::Order(o) => o.order.price.map(|p| p.as_f64()),
            _ => None,
        })
        .collect();
    assert_eq!(prices, [100.0]);
}

#[test]
fn a_fill_on_a_silent_market_reaches_the_strategy_without_another_event() {
    use std::cell::RefCell;
    use std::rc::Rc;
    use timely::dataflow::operators::{Input, Inspect};
    let tws = Arc::new(tws(OnOrder::Rest));
    let mut config = config(&tws, 50);
    config.job = JOB.into();
    // The market trades through the resting order once it is there, while no event comes.
    let t2 = tws.clone();
    std::thread::spawn(move || {
        let end = Instant::now() + Duration::from_secs(10);
        while t2.open_orders() == 0 && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(10));
        }
        std::thread::sleep(Duration::from_millis(200));
        t2.fill_working().unwrap();
    });
    let (fills_while_silent, fills_at_end) = timely::execute_directly(move |worker| {
        let spec = JobSpec::from_toml(STRATEGY).unwrap();
        let session = Arc::new(IbSession::connect(config).unwrap());
        let got: Rc<RefCell<Vec<TradeRecord>>> = Rc::default();
        let g = got.clone();
        let mut input = timely::dataflow::InputHandleVec::<u64, MarketEvent>::new();
        worker.dataflow::<u64, _, _>(|scope| {
            scope
                .input_from(&mut input)
                .trade(
                    JOB,
                    &spec.features,
                    spec.strategy.as_ref().unwrap(),
                    &spec.risk,
                    move |s| session.broker(s),
                )
                .unwrap()
                .inspect(move |r| g.borrow_mut().push(r.clone()));
        });
        for ev in [book(0), buy(500), buy(1500)] {
            input.send(ev);
        }
        input.advance_to(2);
        input.flush();
        let fills = |g: &Rc<RefCell<Vec<TradeRecord>>>| {
            g.borrow()
                .iter()
                .filter(|r| matches!(r, TradeRecord::Fill(_)))
                .count()
        };
        // Stepping with the input open and nothing in it: only the broker can wake the trader.
        let end = Instant::now() + Duration::from_secs(10);
        while fills(&got) == 0 && Instant::now() < end {
            worker.step_or_park(Some(Duration::from_millis(20)));
        }
        let silent = fills(&got);
        drop(input);
        while worker.step_or_park(Some(Duration::from_millis(20))) {}
        (silent, fills(&got))
    });
    assert_eq!((fills_while_silent, fills_at_end), (1, 1));
}
