//! Interactive Brokers: the [`Broker`] of live trading jobs with `[broker] kind = "ibkr"`,
//! through TWS or IB Gateway and the `ibapi` crate's blocking client.
//!
//! ```text
//!  trader (worker thread) ──submit/cancel──> IbSession ──queue──> sender thread ──(paced)──> TWS
//!         ^                                     │ ledger                                      │
//!         └──────reports, notices───────────────┘ <── order stream thread, notice thread <───┘
//! ```
//!
//! One [`IbSession`] per worker holds the connection; each symbol's trader gets an
//! [`IbBroker`] on it. The worker never blocks on IB: orders and cancels go through a queue to
//! a sender thread, which paces them (`[broker] pacing`, 50 messages a second by default, IB's
//! limit) with `ibapi`'s rate limiter. What IB reports arrives on two threads, the order stream
//! and the notice stream, and goes into the session's ledger; the session then wakes the
//! operator trading through it (`Broker::set_waker`), whose traders drain it at once.
//!
//! **Reconciliation.** At connect, and whenever the connection comes back (IB's codes 1101 and
//! 1102, or the client's own reconnect after a dropped socket, since IB replays nothing), the
//! sender thread asks for the open orders, the completed orders, the executions (with their
//! commissions) and the positions, and feeds them to the ledger, which takes each order and
//! execution once whatever way it came. Orders of this job found at connect (an earlier run's)
//! are matched to the strategy's orders by `orderRef` ([`order_ref`]), so an order decided
//! again after a restart is not sent twice. Then IB's position in every symbol is compared with
//! what the job's fills add up to; a difference halts that symbol's strategy with a
//! `position_mismatch` risk event. Codes 1100 and 2110 (connection lost) are recorded as
//! `broker_disconnected`.

// A live broker's sink, like the live sources, lives on the wall clock: the end of a run waits
// a bounded moment for IB to settle what it was sent (nothing here moves a frontier).
#![allow(clippy::disallowed_methods)]

mod ledger;

use std::collections::BTreeMap;
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use flowsense_core::job::{BrokerSpec, ContractSpec};
use flowsense_core::order::{
    Broker, BrokerNotice, ClientOrderId, ExecReport, Order, OrderKind, Waker,
};
use flowsense_core::{MarketEvent, Price, Side, Symbol, UnixNanos};
use ibapi::client::blocking::{Client, Subscription};
use ibapi::contracts::{Contract, Currency, Exchange, SecurityType};
use ibapi::orders::{Action, ExecutionFilter, Executions, OrderUpdate, Orders};
use ibapi::subscriptions::SubscriptionItem;
use ibapi::{Notice, RateLimiter, TRANSPORT_RECONNECT_CODE};
use rustc_hash::FxHashMap;

pub use ledger::order_ref;
use ledger::{Ledger, Placement};

use crate::{Error, Result};

/// How long a reconciliation waits for each snapshot before calling it failed (IB answers in
/// well under a second; the first reconciliation runs while the job is installed, and holds
/// its worker meanwhile).
const SNAPSHOT_WAIT: Duration = Duration::from_secs(5);
/// How long the end of a run waits for IB to settle the orders it was sent.
const SETTLE_WAIT: Duration = Duration::from_secs(3);

/// A session's settings: `[broker]` of the job spec, for one worker.
#[derive(Clone, Debug)]
pub struct IbConfig {
    /// The job (it names the orders: [`order_ref`]).
    pub job: String,
    /// `host:port` of TWS or IB Gateway.
    pub address: String,
    /// The API client id.
    pub client_id: i32,
    /// The account, when the login manages several.
    pub account: Option<String>,
    /// Messages per second.
    pub pacing: u32,
    /// Reconnect attempts.
    pub reconnect_attempts: u32,
    /// How IB names the job's symbols; a symbol not here is a stock on SMART in USD under its
    /// own name.
    pub contracts: BTreeMap<Symbol, ContractSpec>,
}

impl IbConfig {
    /// The settings of worker `worker` of job `job` (it connects as `client_id + worker`).
    ///
    /// ```
    /// use flowsense_core::job::JobSpec;
    /// use flowsense_sinks::ibkr::IbConfig;
    /// let spec = JobSpec::from_toml("name = \"j\"\n[source.live]\nexchange = \"alpaca-iex\"\n\
    ///     symbols = [\"AAPL\"]\n[strategy]\nbucket = \"1s\"\nsignal = \"buy_volume\"\nentry = 1\n\
    ///     [strategy.sizing]\nmethod = \"fixed\"\nsize = 1\n[broker]\nkind = \"ibkr\"\nclient_id = 10").unwrap();
    /// let c = IbConfig::from_spec("j", spec.broker.as_ref().unwrap(), 1);
    /// assert_eq!((c.address.as_str(), c.client_id), ("127.0.0.1:4002", 11));
    /// ```
    pub fn from_spec(job: &str, spec: &BrokerSpec, worker: usize) -> IbConfig {
        let contracts = spec
            .contracts
            .iter()
            .filter_map(|(s, c)| Some((Symbol::new(s).ok()?, c.clone())))
            .collect();
        IbConfig {
            job: job.to_string(),
            address: format!("{}:{}", spec.host, spec.port),
            client_id: spec.client_id + i32::try_from(worker).unwrap_or(0),
            account: spec.account.clone(),
            pacing: spec.pacing,
            reconnect_attempts: spec.reconnect_attempts,
            contracts,
        }
    }
}

/// The IB contract of one of the job's symbols.
fn contract(symbol: &Symbol, c: &ContractSpec) -> Contract {
    let name = c.symbol.clone().unwrap_or_else(|| symbol.to_string());
    Contract {
        contract_id: c.con_id.unwrap_or(0),
        symbol: ibapi::contracts::Symbol::from(name.as_str()),
        security_type: c
            .sec_type
            .parse::<SecurityType>()
            .unwrap_or(SecurityType::Stock),
        exchange: Exchange::from(c.exchange.as_str()),
        primary_exchange: Exchange::from(c.primary_exchange.as_deref().unwrap_or("")),
        currency: Currency::from(c.currency.as_str()),
        ..Contract::default()
    }
}

/// What the sender thread does next.
enum Outbound {
    Place(i32, Box<Contract>, Box<ibapi::orders::Order>),
    Cancel(i32),
    Reconcile(&'static str),
}

/// State shared by the session's threads and its brokers.
struct Shared {
    config: IbConfig,
    account: String,
    ledger: Mutex<Ledger>,
    /// The IB contract of each symbol traded (or configured), to send orders and to read
    /// positions back.
    contracts: Mutex<BTreeMap<Symbol, Contract>>,
    /// Whom to wake when the ledger has news (the operators trading through the session).
    wakers: Mutex<Vec<Waker>>,
}

impl Shared {
    fn ledger(&self) -> MutexGuard<'_, Ledger> {
        self.ledger.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Tells the operators trading through the session that the ledger has news.
    fn wake(&self) {
        let wakers = self
            .wakers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        for w in wakers {
            w();
        }
    }

    fn contracts(&self) -> MutexGuard<'_, BTreeMap<Symbol, Contract>> {
        self.contracts.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The symbol of an IB position, if the job trades it.
    fn symbol_of(&self, c: &Contract) -> Option<Symbol> {
        let key = (c.symbol.to_string(), c.security_type.to_string());
        self.contracts()
            .iter()
            .find(|(_, k)| (k.symbol.to_string(), k.security_type.to_string()) == key)
            .map(|(s, _)| s.clone())
    }
}

/// One connection to TWS / IB Gateway, shared by the brokers of one worker's symbols. See the
/// module documentation.
pub struct IbSession {
    shared: Arc<Shared>,
    client: Arc<Client>,
    outbound: Sender<Outbound>,
    threads: Vec<JoinHandle<()>>,
}

impl IbSession {
    /// Connects, reconciles (open orders, executions, positions) and starts the session's
    /// threads. Fails with the broker's words when TWS cannot be reached or refuses the client.
    pub fn connect(config: IbConfig) -> Result<IbSession> {
        let address = config.address.clone();
        let fail = move |what: &str, e: ibapi::Error| {
            Error::Broker(format!("Interactive Brokers at {address}: {what}: {e}"))
        };
        let (client, notices) = Client::builder()
            .address(config.address.as_str())
            .client_id(config.client_id)
            .tcp_no_delay(true)
            .rate_limiter(RateLimiter::per_second(config.pacing))
            .max_reconnect_attempts(config.reconnect_attempts)
            .connect_with_notice_stream()
            .map_err(|e| fail("cannot connect", e))?;
        let accounts = client.handshake_managed_accounts().to_vec();
        let account = match &config.account {
            Some(a) if accounts.iter().any(|x| x == a) => a.clone(),
            Some(a) => {
                return Err(Error::Broker(format!(
                    "account {a} is not one of this login's: {}",
                    accounts.join(", ")
                )));
            }
            None if accounts.len() == 1 => accounts[0].clone(),
            None => {
                return Err(Error::Broker(format!(
                    "the login manages several accounts ({}): set [broker] account",
                    accounts.join(", ")
                )));
            }
        };
        let contracts = config
            .contracts
            .iter()
            .map(|(s, c)| (s.clone(), contract(s, c)))
            .collect();
        let mut ledger = Ledger::new(&config.job, config.client_id);
        for s in config.contracts.keys() {
            ledger.outbox(s);
        }
        let shared = Arc::new(Shared {
            config,
            account,
            ledger: Mutex::new(ledger),
            contracts: Mutex::new(contracts),
            wakers: Mutex::new(Vec::new()),
        });
        let client = Arc::new(client);
        let updates = client
            .order_update_stream()
            .map_err(|e| fail("order stream", e))?;
        // The first reconciliation, before any order can be sent.
        reconcile(&client, &shared, "at connect");
        let (tx, rx) = channel();
        let mut threads = Vec::new();
        let s = shared.clone();
        threads.push(std::thread::spawn(move || {
            while let Some(item) = updates.next() {
                match item {
                    Ok(SubscriptionItem::Data(u)) => apply_update(&s, &u),
                    Ok(SubscriptionItem::Notice(n)) => apply_order_notice(&s, &n),
                    Err(_) => break,
                }
                s.wake();
            }
        }));
        let (s, reconcile_tx) = (shared.clone(), tx.clone());
        threads.push(std::thread::spawn(move || {
            while let Some(n) = notices.next() {
                apply_system_notice(&s, &n, &reconcile_tx);
                s.wake();
            }
        }));
        let (s, c) = (shared.clone(), client.clone());
        threads.push(std::thread::spawn(move || send_loop(&c, &s, &rx)));
        Ok(IbSession {
            shared,
            client,
            outbound: tx,
            threads,
        })
    }

    /// The account orders go to.
    pub fn account(&self) -> &str {
        &self.shared.account
    }

    /// The broker of one symbol. A symbol the session has not seen yet is added, and IB's
    /// positions are read again to check it.
    pub fn broker(self: &Arc<Self>, symbol: &Symbol) -> IbBroker {
        let (contract, new) = {
            let mut all = self.shared.contracts();
            let new = !all.contains_key(symbol);
            let c = all
                .entry(symbol.clone())
                .or_insert_with(|| contract(symbol, &ContractSpec::default()))
                .clone();
            (c, new)
        };
        self.shared.ledger().outbox(symbol);
        if new {
            self.send(Outbound::Reconcile("when the symbol was first traded"));
        }
        IbBroker {
            session: self.clone(),
            symbol: symbol.clone(),
            contract,
            last: UnixNanos(0),
            sent: FxHashMap::default(),
        }
    }

    /// Orders of this job found at IB at connect that the strategy has not sent again.
    pub fn found_orders(&self) -> usize {
        self.shared.ledger().found()
    }

    fn send(&self, o: Outbound) {
        // The sender thread only ends with the session.
        let _ = self.outbound.send(o);
    }
}

impl Drop for IbSession {
    fn drop(&mut self) {
        self.client.disconnect();
        let (tx, _) = channel();
        drop(std::mem::replace(&mut self.outbound, tx));
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Sends orders and cancels in order, paced by the client's rate limiter, and runs the
/// reconciliations the notice thread asks for.
fn send_loop(client: &Client, shared: &Shared, rx: &Receiver<Outbound>) {
    while let Ok(o) = rx.recv() {
        match o {
            Outbound::Place(id, contract, order) => {
                if let Err(e) = client.submit_order(id, &contract, &order) {
                    let why = format!("not sent: {e}");
                    shared.ledger().order_error(id, 201, &why);
                }
            }
            Outbound::Cancel(id) => {
                // The confirmation comes on the order stream; the handle is not needed.
                if let Err(e) = client.cancel_order(id, "") {
                    shared
                        .ledger()
                        .order_error(id, 0, &format!("cancel not sent: {e}"));
                }
            }
            Outbound::Reconcile(when) => reconcile(client, shared, when),
        }
        shared.wake();
    }
}

fn apply_update(shared: &Shared, u: &OrderUpdate) {
    let mut l = shared.ledger();
    match u {
        OrderUpdate::OrderStatus(s) => l.status(s),
        OrderUpdate::OpenOrder(d) => l.order_record(d),
        OrderUpdate::ExecutionData(e) => l.execution(e),
        OrderUpdate::CommissionReport(c) => l.commission(c),
        OrderUpdate::OrderBound(_) => {}
    }
}

/// An error frame naming an order.
fn apply_order_notice(shared: &Shared, n: &Notice) {
    if let Some(id) = n.request_id {
        shared.ledger().order_error(id, n.code, &n.message);
    }
}

/// A request-less notice: connectivity.
fn apply_system_notice(shared: &Shared, n: &Notice, reconcile: &Sender<Outbound>) {
    let info = |kind: &str| BrokerNotice::info(kind, format!("IB {}: {}", n.code, n.message));
    match n.code {
        1100 | 2110 => shared.ledger().notify_all(info("broker_disconnected")),
        1101 | 1102 => {
            shared.ledger().notify_all(info("broker_reconnected"));
            let _ = reconcile.send(Outbound::Reconcile("after IB restored its connection"));
        }
        TRANSPORT_RECONNECT_CODE => {
            shared.ledger().notify_all(BrokerNotice::info(
                "broker_reconnected",
                "the socket to TWS was reopened",
            ));
            let _ = reconcile.send(Outbound::Reconcile("after reconnecting"));
        }
        _ => {}
    }
}

/// Open orders, completed orders, executions and positions into the ledger; then the positions
/// are compared with the job's.
fn reconcile(client: &Client, shared: &Shared, when: &str) {
    let mut failed = Vec::new();
    let orders = |what: &str, sub: Result<Subscription<Orders>, ibapi::Error>| {
        let rows = sub
            .and_then(|s| s.collect_to_end_within(SNAPSHOT_WAIT))
            .map_err(|e| format!("{what}: {e}"))?;
        let mut l = shared.ledger();
        for row in rows {
            match row {
                Orders::OrderData(d) => l.order_record(&d),
                Orders::OrderStatus(s) => l.status(&s),
            }
        }
        Ok::<(), String>(())
    };
    if let Err(e) = orders("open orders", client.all_open_orders()) {
        failed.push(e);
    }
    if let Err(e) = orders("completed orders", client.completed_orders(false)) {
        failed.push(e);
    }
    if let Err(e) = read_executions(client, shared) {
        failed.push(e);
    }
    let mut held = read_positions(client, shared);
    // An execution between the two snapshots shows in the positions first: ask again once
    // before calling a difference a mismatch.
    if held.as_ref().is_ok_and(|h| shared.ledger().differs(h)) {
        std::thread::sleep(Duration::from_millis(500));
        if let Err(e) = read_executions(client, shared) {
            failed.push(e);
        }
        held = read_positions(client, shared);
    }
    let account = read_account(client, shared);
    let mut l = shared.ledger();
    l.notify_all(match account {
        Ok(values) => BrokerNotice::info("broker_account", format!("{}: {values}", shared.account)),
        Err(e) => BrokerNotice::info("broker_account", e),
    });
    match held {
        Ok(held) if failed.is_empty() => {
            l.check_positions(&held, when);
            l.notify_all(BrokerNotice::info(
                "reconciled",
                format!("{when}: open and completed orders, executions and positions read from IB"),
            ));
        }
        held => {
            if let Err(e) = held {
                failed.push(e);
            }
            l.notify_all(BrokerNotice::halt(
                "reconcile_failed",
                format!("{when}: {}", failed.join("; ")),
            ));
        }
    }
}

/// Today's and yesterday's executions and their commissions into the ledger.
fn read_executions(client: &Client, shared: &Shared) -> std::result::Result<(), String> {
    let filter = ExecutionFilter {
        // The daily reset can fall between the fill and the question.
        last_n_days: 1,
        ..ExecutionFilter::default()
    };
    let rows = client
        .executions(filter)
        .and_then(|s| s.collect_to_end_within(SNAPSHOT_WAIT))
        .map_err(|e| format!("executions: {e}"))?;
    let mut l = shared.ledger();
    for row in rows {
        match row {
            Executions::ExecutionData(e) => l.execution(&e),
            Executions::CommissionReport(c) => l.commission(&c),
        }
    }
    Ok(())
}

/// Reads a stream that goes on after its first dump (account summary, positions) until that
/// dump's end marker: `next` is the subscription's `next_timeout`, `row` takes each item and
/// says whether it was the marker. Fails if the marker does not come within [`SNAPSHOT_WAIT`].
fn read_dump<T>(
    mut next: impl FnMut(Duration) -> Option<std::result::Result<SubscriptionItem<T>, ibapi::Error>>,
    what: &str,
    mut row: impl FnMut(T) -> bool,
) -> std::result::Result<(), String> {
    let deadline = std::time::Instant::now() + SNAPSHOT_WAIT;
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match next(left) {
            Some(Ok(SubscriptionItem::Data(item))) => {
                if row(item) {
                    return Ok(());
                }
            }
            Some(Ok(SubscriptionItem::Notice(_))) => {}
            Some(Err(e)) => return Err(format!("{what}: {e}")),
            None => {
                return Err(format!(
                    "{what}: no end of the snapshot within {SNAPSHOT_WAIT:?}"
                ));
            }
        }
    }
}

/// The account's values that size what it can trade, in words (`NetLiquidation 1000000 USD,
/// ...`).
fn read_account(client: &Client, shared: &Shared) -> std::result::Result<String, String> {
    use ibapi::accounts::{AccountSummaryResult, AccountSummaryTags as T, types::AccountGroup};
    let tags = [
        T::NET_LIQUIDATION,
        T::TOTAL_CASH_VALUE,
        T::BUYING_POWER,
        T::AVAILABLE_FUNDS,
    ];
    let sub = client
        .account_summary(&AccountGroup::from("All"), &tags)
        .map_err(|e| format!("account summary: {e}"))?;
    let mut values = Vec::new();
    read_dump(
        |t| sub.next_timeout(t),
        "account summary",
        |item| match item {
            AccountSummaryResult::Summary(v) => {
                if v.account == shared.account {
                    values.push(format!("{} {} {}", v.tag, v.value, v.currency));
                }
                false
            }
            AccountSummaryResult::End => true,
        },
    )?;
    Ok(values.join(", "))
}

/// The account's positions in the job's symbols.
fn read_positions(
    client: &Client,
    shared: &Shared,
) -> std::result::Result<FxHashMap<Symbol, f64>, String> {
    use ibapi::accounts::PositionUpdate;
    let mut held: FxHashMap<Symbol, f64> = FxHashMap::default();
    let sub = client.positions().map_err(|e| format!("positions: {e}"))?;
    read_dump(
        |t| sub.next_timeout(t),
        "positions",
        |item| match item {
            PositionUpdate::Position(p) => {
                if p.account == shared.account
                    && let Some(s) = shared.symbol_of(&p.contract)
                {
                    *held.entry(s).or_default() += p.position;
                }
                false
            }
            PositionUpdate::PositionEnd => true,
        },
    )?;
    Ok(held)
}

/// The broker of one symbol on an [`IbSession`].
pub struct IbBroker {
    session: Arc<IbSession>,
    symbol: Symbol,
    contract: Contract,
    /// The latest feed time reports were asked for.
    last: UnixNanos,
    /// Resting orders as placed (a modify re-sends them under their id and `orderRef`).
    sent: FxHashMap<ClientOrderId, Order>,
}

impl IbBroker {
    /// The IB order of one of the strategy's orders.
    fn ib_order(&self, o: &Order) -> ibapi::orders::Order {
        let action = match o.side {
            Side::Buy => Action::Buy,
            Side::Sell => Action::Sell,
        };
        let qty = o.size.as_f64();
        let mut ib = match (o.kind, o.price) {
            (OrderKind::Market, _) | (_, None) => {
                ibapi::orders::order_builder::market_order(action, qty)
            }
            (_, Some(p)) => ibapi::orders::order_builder::limit_order(action, qty, p.as_f64()),
        };
        if o.kind == OrderKind::Ioc {
            ib.tif = ibapi::orders::TimeInForce::ImmediateOrCancel;
        }
        ib.order_ref = order_ref(&self.session.shared.config.job, o);
        ib.account = self.session.shared.account.clone();
        ib
    }
}

impl Broker for IbBroker {
    fn submit(&mut self, order: Order) {
        let s = &self.session;
        let placement = s.shared.ledger().place(&order, || s.client.next_order_id());
        if let Placement::Send(id) = placement {
            let ib = self.ib_order(&order);
            s.send(Outbound::Place(
                id,
                Box::new(self.contract.clone()),
                Box::new(ib),
            ));
        }
        if order.kind.rests() {
            self.sent.insert(order.id, order);
        }
    }

    fn cancel(&mut self, id: ClientOrderId, _at: UnixNanos) {
        let ib = self.session.shared.ledger().cancel(id);
        if let Some(ib) = ib {
            self.session.send(Outbound::Cancel(ib));
        }
    }

    /// A modify at IB: the order placed again under its own id with the new limit price.
    fn modify(&mut self, id: ClientOrderId, price: Price, _at: UnixNanos) -> bool {
        let Some(ib_id) = self.session.shared.ledger().modifiable(id) else {
            return false;
        };
        let Some(placed) = self.sent.get(&id).cloned() else {
            return false;
        };
        let mut order = placed.clone();
        order.price = Some(price);
        let mut ib = self.ib_order(&order);
        // The orderRef stays the one the order was placed with.
        ib.order_ref = order_ref(&self.session.shared.config.job, &placed);
        let contract = Box::new(self.contract.clone());
        self.session
            .send(Outbound::Place(ib_id, contract, Box::new(ib)));
        true
    }

    fn on_market(&mut self, _ev: &MarketEvent) {}

    fn reports(&mut self, now: UnixNanos, out: &mut Vec<ExecReport>) {
        self.last = self.last.max(now);
        let mut l = self.session.shared.ledger();
        let reports = std::mem::take(&mut l.outbox(&self.symbol).reports);
        for (order, mut kind) in reports {
            if let flowsense_core::order::ReportKind::Fill(f) = &mut kind {
                f.ts = now;
            }
            // An order that can no longer be modified needs no copy for a modify.
            if l.modifiable(order).is_none() {
                self.sent.remove(&order);
            }
            out.push(ExecReport {
                order,
                ts: now,
                delivered: now,
                kind,
            });
        }
    }

    fn flush(&mut self, out: &mut Vec<ExecReport>) {
        // The run ends: give IB a moment to settle what it was sent (the last orders' fills
        // are usually a few milliseconds behind), then report what came.
        let deadline = std::time::Instant::now() + SETTLE_WAIT;
        while self.session.shared.ledger().unsettled(&self.symbol) > 0
            && std::time::Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(5));
        }
        self.session.shared.ledger().flush(&self.symbol);
        self.reports(self.last, out);
    }

    fn set_waker(&mut self, wake: Waker) {
        let mut w = self
            .session
            .shared
            .wakers
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        // One operator trades all of a worker's symbols: one waker for all of them.
        if !w.iter().any(|x| Arc::ptr_eq(x, &wake)) {
            w.push(wake);
        }
    }

    fn notices(&mut self, out: &mut Vec<BrokerNotice>) {
        out.append(&mut self.session.shared.ledger().outbox(&self.symbol).notices);
    }
}
