//! The ledger's rules, message by message: fills joined with their commissions, ends held back
//! behind fills, duplicates ignored, an earlier run's order taken back by its `orderRef`.

use super::*;
use ibapi::orders::{Execution, OrderState};

const CLIENT: i32 = 7;

fn order(seq: u64) -> Order {
    let s = Symbol::new("AAPL").unwrap();
    Order::market(
        ClientOrderId(seq),
        s,
        Side::Buy,
        Size::from_units(10),
        UnixNanos(1_000 + seq as i64),
    )
}

fn exec(ib_id: i32, r: &str, id: &str, shares: f64) -> ExecutionData {
    ExecutionData {
        execution: Execution {
            order_id: ib_id,
            client_id: CLIENT,
            execution_id: id.into(),
            shares,
            price: 101.5,
            order_reference: r.into(),
            ..Execution::default()
        },
        ..ExecutionData::default()
    }
}

fn fee(id: &str, c: f64) -> CommissionReport {
    CommissionReport {
        execution_id: id.into(),
        commission: c,
        ..CommissionReport::default()
    }
}

fn status(ib_id: i32, kind: OrderStatusKind) -> IbStatus {
    IbStatus {
        order_id: ib_id,
        status: kind,
        client_id: CLIENT,
        ..IbStatus::default()
    }
}

fn drain(l: &mut Ledger) -> Vec<String> {
    let s = Symbol::new("AAPL").unwrap();
    l.outbox(&s)
        .reports
        .drain(..)
        .map(|(_, k)| match k {
            ReportKind::Accepted => "accepted".to_string(),
            ReportKind::Fill(f) => format!("fill {} fee {}", f.size.as_f64(), f.fee),
            ReportKind::Cancelled => "cancelled".into(),
            ReportKind::Rejected(w) => format!("rejected {w}"),
        })
        .collect()
}

#[test]
fn a_fill_waits_for_its_commission_and_an_end_for_its_fills() {
    let mut l = Ledger::new("j", CLIENT);
    let o = order(1);
    let r = order_ref("j", &o);
    assert_eq!(l.place(&o, || 5), Placement::Send(5));
    l.status(&status(5, OrderStatusKind::Submitted));
    l.execution(&exec(5, &r, "e1", 4.0));
    l.status(&status(5, OrderStatusKind::Cancelled));
    assert_eq!(drain(&mut l), ["accepted"]);
    l.commission(&fee("e1", 0.35));
    // Seen again through a reconciliation: nothing new.
    l.execution(&exec(5, &r, "e1", 4.0));
    l.commission(&fee("e1", 0.35));
    assert_eq!(drain(&mut l), ["fill 4 fee 0.35", "cancelled"]);
    assert_eq!(l.outbox(&o.symbol).position, Size::from_units(4).raw());
}

#[test]
fn rejection_names_the_code_and_a_filled_order_does_not_end_twice() {
    let mut l = Ledger::new("j", CLIENT);
    let (a, b) = (order(1), order(2));
    l.place(&a, || 5);
    l.place(&b, || 6);
    l.order_error(5, 201, "Order rejected - reason: no trading permission");
    l.execution(&exec(6, &order_ref("j", &b), "e2", 10.0));
    l.commission(&fee("e2", 1.0));
    l.status(&status(6, OrderStatusKind::Filled));
    l.order_error(6, 10148, "cannot be cancelled, state: Filled");
    let got = drain(&mut l);
    assert_eq!(
        got,
        [
            "rejected IB 201: Order rejected - reason: no trading permission",
            "accepted",
            "fill 10 fee 1"
        ]
    );
    assert_eq!(l.cancel(b.id), None);
}

#[test]
fn an_earlier_runs_order_is_taken_back_not_sent_again() {
    let mut l = Ledger::new("j", CLIENT);
    let o = order(3);
    let r = order_ref("j", &o);
    let mut d = OrderData {
        order_id: 42,
        order_state: OrderState {
            status: OrderStatusKind::Submitted,
            ..OrderState::default()
        },
        ..OrderData::default()
    };
    d.order.order_ref = r.clone();
    l.order_record(&d);
    l.execution(&exec(42, &r, "e9", 2.0));
    l.commission(&fee("e9", 0.1));
    // Another job's order is not ours.
    let mut other = OrderData::default();
    other.order.order_ref = "fs|jj|AAPL|1|0".into();
    l.order_record(&other);
    assert_eq!(l.found(), 1);
    assert_eq!(l.place(&o, || panic!("no new id")), Placement::Known(42));
    assert_eq!(drain(&mut l), ["accepted", "fill 2 fee 0.1"]);
    assert_eq!(l.cancel(o.id), Some(42));
}

#[test]
fn positions_that_differ_halt() {
    let mut l = Ledger::new("j", CLIENT);
    let s = Symbol::new("AAPL").unwrap();
    l.outbox(&s);
    let mut held = FxHashMap::default();
    held.insert(s.clone(), 0.0);
    l.check_positions(&held, "at connect");
    assert!(l.outbox(&s).notices.is_empty());
    held.insert(s.clone(), 5.0);
    l.check_positions(&held, "after reconnecting");
    let n = l.outbox(&s).notices.pop().unwrap();
    assert!(n.halt && n.kind == "position_mismatch", "{n:?}");
    assert!(
        n.detail
            .contains("IB holds 5 AAPL, the job's fills add up to 0"),
        "{}",
        n.detail
    );
}
