//! The order ledger of an Interactive Brokers session: what IB said about each order, turned
//! into the execution reports and notices the strategy reads, each exactly once.
//!
//! IB speaks of an order in several messages that may arrive twice (the live order stream and
//! the snapshots a reconciliation asks for both carry them) and in any order: statuses,
//! open-order records, executions, and each execution's commission report. The ledger keys
//! executions by IB's execution id and orders by their `orderRef`, IB order id and perm id, so
//! a message seen again changes nothing. A fill is reported once its commission is known (the
//! two are joined on the execution id), and an order's end (cancelled, rejected) is held back
//! until every fill before it has been reported, so the strategy never sees a fill of an order
//! it was told had ended.
//!
//! Nothing here does I/O; [`super::IbSession`] feeds it from its threads.

use flowsense_core::order::{BrokerNotice, ClientOrderId, Fill, Liquidity, Order, ReportKind};
use flowsense_core::{Price, Side, Size, Symbol, UnixNanos};
use ibapi::orders::{
    CommissionReport, ExecutionData, OrderData, OrderStatus as IbStatus, OrderStatusKind,
};
use rustc_hash::FxHashMap;

/// The `orderRef` an order carries at IB: the job, the symbol, the decision's feed time and the
/// order's client id (a hash of the job, the symbol and the order's sequence number), so the
/// same decision made again (a restart replaying the same data) names the same order.
///
/// ```
/// use flowsense_core::order::{ClientOrderId, Order};
/// use flowsense_core::{Side, Size, Symbol, UnixNanos};
/// use flowsense_sinks::ibkr::order_ref;
/// let s = Symbol::new("AAPL").unwrap();
/// let o = Order::market(ClientOrderId(0xab), s, Side::Buy, Size::from_units(1), UnixNanos(5));
/// assert_eq!(order_ref("mm", &o), "fs|mm|AAPL|5|00000000000000ab");
/// ```
pub fn order_ref(job: &str, order: &Order) -> String {
    format!("fs|{job}|{}|{}|{}", order.symbol, order.sent.0, order.id)
}

/// What to do with an order the strategy sent.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Placement {
    /// Send it to IB under this order id.
    Send(i32),
    /// IB already has it (sent before a restart): do not send it again.
    Known(i32),
}

/// One of the strategy's orders.
#[derive(Debug)]
struct Slot {
    symbol: Symbol,
    side: Side,
    size: Size,
    /// A limit order, which may rest unfilled; others must end.
    rests: bool,
    ib_id: i32,
    accepted: bool,
    filled: Size,
    /// Executions reported by IB whose commission has not come yet.
    waiting: u32,
    /// The order's end, held back while fills are waiting.
    end: Option<ReportKind>,
    ended: bool,
}

/// An order of this job found at IB that the strategy has not (yet) sent in this run.
#[derive(Debug, Default)]
struct Found {
    ib_id: i32,
    status: Option<OrderStatusKind>,
}

/// One execution.
#[derive(Debug)]
struct Exec {
    order_ref: String,
    ib_id: i32,
    price: f64,
    shares: f64,
    liquidity: Liquidity,
    fee: Option<f64>,
    /// Reported to the strategy.
    done: bool,
}

/// What waits for one symbol's trader.
#[derive(Debug, Default)]
pub(crate) struct Outbox {
    pub(crate) reports: Vec<(ClientOrderId, ReportKind)>,
    pub(crate) notices: Vec<BrokerNotice>,
    /// The position the reported fills add up to (fixed point).
    pub(crate) position: i64,
}

/// See the module documentation.
#[derive(Debug)]
pub(crate) struct Ledger {
    job: String,
    client_id: i32,
    orders: FxHashMap<ClientOrderId, Slot>,
    by_ib: FxHashMap<i32, ClientOrderId>,
    by_ref: FxHashMap<String, ClientOrderId>,
    found: FxHashMap<String, Found>,
    execs: FxHashMap<String, Exec>,
    /// Commissions that came before their execution.
    early_fees: FxHashMap<String, f64>,
    boxes: FxHashMap<Symbol, Outbox>,
}

impl Ledger {
    pub(crate) fn new(job: &str, client_id: i32) -> Ledger {
        Ledger {
            job: job.to_string(),
            client_id,
            orders: FxHashMap::default(),
            by_ib: FxHashMap::default(),
            by_ref: FxHashMap::default(),
            found: FxHashMap::default(),
            execs: FxHashMap::default(),
            early_fees: FxHashMap::default(),
            boxes: FxHashMap::default(),
        }
    }

    /// The symbol's outbox (made on first use, so a symbol traded is always checked).
    pub(crate) fn outbox(&mut self, symbol: &Symbol) -> &mut Outbox {
        self.boxes.entry(symbol.clone()).or_default()
    }

    /// The symbols traded so far.
    pub(crate) fn symbols(&self) -> Vec<Symbol> {
        let mut s: Vec<Symbol> = self.boxes.keys().cloned().collect();
        s.sort();
        s
    }

    /// A notice for every symbol's trader.
    pub(crate) fn notify_all(&mut self, notice: BrokerNotice) {
        for b in self.boxes.values_mut() {
            b.notices.push(notice.clone());
        }
    }

    /// The strategy sent `order`; `next_id` allocates an IB order id if it is new to IB.
    pub(crate) fn place(&mut self, order: &Order, next_id: impl FnOnce() -> i32) -> Placement {
        let r = order_ref(&self.job, order);
        let known = self.found.remove(&r);
        let ib_id = known.as_ref().map_or_else(next_id, |f| f.ib_id);
        self.outbox(&order.symbol);
        self.orders.insert(
            order.id,
            Slot {
                symbol: order.symbol.clone(),
                side: order.side,
                size: order.size,
                rests: order.kind.rests(),
                ib_id,
                accepted: false,
                filled: Size::ZERO,
                waiting: 0,
                end: None,
                ended: false,
            },
        );
        self.by_ib.insert(ib_id, order.id);
        self.by_ref.insert(r.clone(), order.id);
        let Some(found) = known else {
            return Placement::Send(ib_id);
        };
        // What IB already said about it: its executions, then its status.
        let ids: Vec<String> = self
            .execs
            .iter()
            .filter(|(_, e)| e.order_ref == r && !e.done)
            .map(|(id, _)| id.clone())
            .collect();
        let mut ids = ids;
        ids.sort();
        self.report(order.id, ReportKind::Accepted);
        for id in ids {
            self.bind_exec(&id, order.id);
        }
        if let Some(status) = found.status {
            self.apply_status(order.id, &status, None);
        }
        Placement::Known(ib_id)
    }

    /// The IB order id of a resting order that can still be modified.
    pub(crate) fn modifiable(&self, id: ClientOrderId) -> Option<i32> {
        self.orders
            .get(&id)
            .filter(|s| s.rests && !s.ended && s.end.is_none())
            .map(|s| s.ib_id)
    }

    /// The IB order id to cancel, unless the order has ended.
    pub(crate) fn cancel(&self, id: ClientOrderId) -> Option<i32> {
        self.orders
            .get(&id)
            .filter(|s| !s.ended && s.end.is_none())
            .map(|s| s.ib_id)
    }

    fn ours(&self, client_id: i32) -> bool {
        client_id == self.client_id || client_id == 0
    }

    fn belongs(&self, order_ref: &str) -> bool {
        order_ref
            .strip_prefix("fs|")
            .and_then(|r| r.strip_prefix(self.job.as_str()))
            .is_some_and(|r| r.starts_with('|'))
    }

    /// The strategy's order an IB message names, by `orderRef`, else by IB order id.
    fn find(&self, order_ref: &str, ib_id: i32, client_id: i32) -> Option<ClientOrderId> {
        if !order_ref.is_empty() {
            return self.by_ref.get(order_ref).copied();
        }
        self.ours(client_id)
            .then(|| self.by_ib.get(&ib_id).copied())
            .flatten()
    }

    /// An order status (from the live stream or a snapshot).
    pub(crate) fn status(&mut self, s: &IbStatus) {
        if !self.ours(s.client_id) {
            return;
        }
        if let Some(id) = self.by_ib.get(&s.order_id).copied() {
            self.apply_status(id, &s.status, None);
        }
    }

    /// An open or completed order record (from the live stream or a snapshot): binds the order
    /// to its `orderRef`, and keeps this job's orders from an earlier run for the strategy to
    /// send again.
    pub(crate) fn order_record(&mut self, d: &OrderData) {
        let r = &d.order.order_ref;
        let status: OrderStatusKind = d.order_state.status.clone();
        if let Some(id) = self.by_ref.get(r).copied() {
            self.apply_status(id, &status, None);
        } else if self.belongs(r) {
            let f = self.found.entry(r.clone()).or_default();
            f.ib_id = d.order_id;
            f.status = Some(status);
        }
    }

    /// An execution: recorded once (by execution id), reported when its commission is known.
    pub(crate) fn execution(&mut self, e: &ExecutionData) {
        let x = &e.execution;
        if self.execs.contains_key(&x.execution_id) {
            return;
        }
        let id = self.find(&x.order_reference, x.order_id, x.client_id);
        if id.is_none() && !self.belongs(&x.order_reference) {
            return; // another client's or another job's
        }
        self.execs.insert(
            x.execution_id.clone(),
            Exec {
                order_ref: x.order_reference.clone(),
                ib_id: x.order_id,
                price: x.price,
                shares: x.shares,
                liquidity: match x.last_liquidity {
                    ibapi::orders::Liquidity::AddedLiquidity => Liquidity::Maker,
                    _ => Liquidity::Taker,
                },
                fee: self.early_fees.remove(&x.execution_id),
                done: false,
            },
        );
        if let Some(id) = id {
            self.bind_exec(&x.execution_id, id);
        }
    }

    /// A commission report: the fee of its execution, which is reported now.
    pub(crate) fn commission(&mut self, c: &CommissionReport) {
        match self.execs.get_mut(&c.execution_id) {
            Some(e) if e.fee.is_none() => {
                e.fee = Some(c.commission);
                let order = self.find_exec_order(&c.execution_id);
                if let Some(id) = order {
                    if let Some(s) = self.orders.get_mut(&id) {
                        s.waiting = s.waiting.saturating_sub(1);
                    }
                    self.deliver_exec(&c.execution_id, id);
                }
            }
            Some(_) => {}
            None => {
                self.early_fees.insert(c.execution_id.clone(), c.commission);
            }
        }
    }

    fn find_exec_order(&self, exec_id: &str) -> Option<ClientOrderId> {
        let e = self.execs.get(exec_id)?;
        self.find(&e.order_ref, e.ib_id, self.client_id)
    }

    /// An execution of a known order: reported if its fee is known, else waited for.
    fn bind_exec(&mut self, exec_id: &str, id: ClientOrderId) {
        let has_fee = self.execs.get(exec_id).is_some_and(|e| e.fee.is_some());
        if has_fee {
            self.deliver_exec(exec_id, id);
        } else if let Some(s) = self.orders.get_mut(&id) {
            s.waiting += 1;
        }
    }

    fn deliver_exec(&mut self, exec_id: &str, id: ClientOrderId) {
        let Some(e) = self.execs.get_mut(exec_id) else {
            return;
        };
        if e.done {
            return;
        }
        e.done = true;
        let (price, shares, fee, liquidity) =
            (e.price, e.shares, e.fee.unwrap_or(0.0), e.liquidity);
        let Some(s) = self.orders.get_mut(&id) else {
            return;
        };
        let size = Size::from_f64(shares).unwrap_or(Size::ZERO);
        s.filled = s.filled.checked_add(size).unwrap_or(s.filled);
        let fill = Fill {
            order: id,
            symbol: s.symbol.clone(),
            side: s.side,
            price: Price::from_f64(price).unwrap_or(Price::ZERO),
            size,
            fee,
            liquidity,
            ts: UnixNanos(0),
            queue_wait: None,
        };
        let signed = match s.side {
            Side::Buy => size.raw(),
            Side::Sell => -size.raw(),
        };
        let symbol = s.symbol.clone();
        let release = s.waiting == 0;
        // An order executes only once accepted, whatever order IB's messages came in.
        let accept = !std::mem::replace(&mut s.accepted, true);
        let b = self.outbox(&symbol);
        if accept {
            b.reports.push((id, ReportKind::Accepted));
        }
        b.position += signed;
        b.reports.push((id, ReportKind::Fill(fill)));
        if release {
            self.release_end(id);
        }
    }

    /// IB's status of one of the strategy's orders; `why` is the reason of a rejection.
    fn apply_status(&mut self, id: ClientOrderId, status: &OrderStatusKind, why: Option<String>) {
        let Some(s) = self.orders.get(&id) else {
            return;
        };
        if s.ended || s.end.is_some() {
            return;
        }
        match status {
            OrderStatusKind::PreSubmitted
            | OrderStatusKind::Submitted
            | OrderStatusKind::PendingCancel
            | OrderStatusKind::Filled
                if !s.accepted =>
            {
                self.report(id, ReportKind::Accepted);
            }
            OrderStatusKind::Cancelled | OrderStatusKind::ApiCancelled => {
                self.end(id, ReportKind::Cancelled);
            }
            OrderStatusKind::Inactive => {
                let why = why.unwrap_or_else(|| "IB made the order inactive".into());
                self.end(id, ReportKind::Rejected(why));
            }
            _ => {}
        }
    }

    /// An error frame naming one of the session's orders.
    pub(crate) fn order_error(&mut self, ib_id: i32, code: i32, message: &str) {
        let Some(id) = self.by_ib.get(&ib_id).copied() else {
            return;
        };
        let symbol = self.orders[&id].symbol.clone();
        match code {
            // "Order Canceled - reason:": the cancel is done.
            202 => self.apply_status(id, &OrderStatusKind::Cancelled, None),
            // Too late to cancel (already filled) or not cancellable now: the fills and the
            // status that follow tell what happened.
            161 | 10147 | 10148 => self.outbox(&symbol).notices.push(BrokerNotice::info(
                "broker_message",
                format!("IB {code} on order {ib_id}: {message}"),
            )),
            // Rejections (201 "Order rejected", margin, price checks, ...).
            200..=399 | 10000..=10999 => {
                let s = &self.orders[&id];
                let why = format!("IB {code}: {message}");
                if s.filled.is_positive() {
                    self.apply_status(id, &OrderStatusKind::Cancelled, None);
                    self.outbox(&symbol)
                        .notices
                        .push(BrokerNotice::info("broker_message", why));
                } else {
                    self.apply_status(id, &OrderStatusKind::Inactive, Some(why));
                }
            }
            _ => self.outbox(&symbol).notices.push(BrokerNotice::info(
                "broker_message",
                format!("IB {code} on order {ib_id}: {message}"),
            )),
        }
    }

    fn report(&mut self, id: ClientOrderId, kind: ReportKind) {
        let Some(s) = self.orders.get_mut(&id) else {
            return;
        };
        if matches!(kind, ReportKind::Accepted) {
            if s.accepted {
                return;
            }
            s.accepted = true;
        }
        let symbol = s.symbol.clone();
        self.outbox(&symbol).reports.push((id, kind));
    }

    /// The order ended: reported now, or once the fills before it are.
    fn end(&mut self, id: ClientOrderId, kind: ReportKind) {
        let Some(s) = self.orders.get_mut(&id) else {
            return;
        };
        if s.filled >= s.size {
            s.ended = true;
            return;
        }
        s.end = Some(kind);
        if s.waiting == 0 {
            self.release_end(id);
        }
    }

    fn release_end(&mut self, id: ClientOrderId) {
        let Some(s) = self.orders.get_mut(&id) else {
            return;
        };
        if s.filled >= s.size {
            s.ended = true;
            s.end = None;
            return;
        }
        if let Some(kind) = s.end.take() {
            s.ended = true;
            let symbol = s.symbol.clone();
            self.outbox(&symbol).reports.push((id, kind));
        }
    }

    /// Orders of `symbol` IB has yet to settle: not heard of, waiting for a commission, or a
    /// market or IOC order not yet ended.
    pub(crate) fn unsettled(&self, symbol: &Symbol) -> usize {
        self.orders
            .values()
            .filter(|s| s.symbol == *symbol && !s.ended)
            .filter(|s| !s.accepted || s.waiting > 0 || !s.rests)
            .count()
    }

    /// The run ends: executions whose commission never came are reported with no fee (and
    /// said so), then the ends they held back.
    pub(crate) fn flush(&mut self, symbol: &Symbol) {
        let mut waiting: Vec<(String, ClientOrderId)> = self
            .execs
            .iter()
            .filter(|(_, e)| !e.done && e.fee.is_none())
            .filter_map(|(x, e)| {
                let id = self.find(&e.order_ref, e.ib_id, self.client_id)?;
                (self.orders.get(&id)?.symbol == *symbol).then(|| (x.clone(), id))
            })
            .collect();
        waiting.sort();
        for (x, id) in waiting {
            if let Some(s) = self.orders.get_mut(&id) {
                s.waiting = 0;
            }
            self.outbox(symbol).notices.push(BrokerNotice::info(
                "commission_missing",
                format!("execution {x} reported without its commission report (fee 0)"),
            ));
            self.deliver_exec(&x, id);
        }
    }

    /// The symbols whose IB position differs from what the reported fills add up to, with
    /// both (fixed point).
    fn differences(&self, broker: &FxHashMap<Symbol, f64>) -> Vec<(Symbol, f64, i64)> {
        let mut symbols = self.symbols();
        for s in broker.keys() {
            if !symbols.contains(s) {
                symbols.push(s.clone());
            }
        }
        symbols.sort();
        symbols
            .into_iter()
            .filter_map(|s| {
                let theirs = broker.get(&s).copied().unwrap_or(0.0);
                let raw =
                    Size::from_f64(theirs.abs()).map_or(0, |z| z.raw()) * theirs.signum() as i64;
                let ours = self.boxes.get(&s).map_or(0, |b| b.position);
                (raw != ours).then_some((s, theirs, ours))
            })
            .collect()
    }

    /// True if any position differs (see [`Ledger::check_positions`]).
    pub(crate) fn differs(&self, broker: &FxHashMap<Symbol, f64>) -> bool {
        !self.differences(broker).is_empty()
    }

    /// Compares IB's positions (by the job's symbol) with what the reported fills add up to,
    /// for every symbol traded; a difference halts that symbol's strategy.
    pub(crate) fn check_positions(&mut self, broker: &FxHashMap<Symbol, f64>, when: &str) {
        for (s, theirs, ours) in self.differences(broker) {
            let ours = Size::from_raw(ours.abs()).as_f64() * ours.signum() as f64;
            self.outbox(&s).notices.push(BrokerNotice::halt(
                "position_mismatch",
                format!("{when}: IB holds {theirs} {s}, the job's fills add up to {ours}"),
            ));
        }
    }

    /// Orders of this job found at IB that the strategy has not sent in this run.
    pub(crate) fn found(&self) -> usize {
        self.found.len()
    }
}

#[cfg(test)]
#[path = "ledger_tests.rs"]
mod tests;
