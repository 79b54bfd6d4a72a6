//! A scripted TWS on loopback, for the Interactive Brokers tests: it speaks the protocol the
//! `ibapi` crate speaks (the `API\0` handshake and version range, a server version from 213 on,
//! then 4-byte length-framed messages of a 4-byte id and a protobuf body), keeps the orders,
//! executions and positions of one account across connections as TWS would, and answers every
//! order the way its [`OnOrder`] says: fill, partial fills, reject, rest, fill on the cancel,
//! or accept and drop the connection. An order placed again under a working order's id is a
//! modify, as at IB.
//!
//! Nothing of IB runs here: the fake is what the tests talk to through real sockets, and it is
//! only as faithful as the message formats it writes (IB's published field tags) and the
//! sequences it plays (IB's documented order of open order, status, execution, commission).

mod proto;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use ibapi::IncomingMessages as In;
use prost::Message;

/// The id offset of protobuf frames.
const PROTOBUF: i32 = 200;
/// The server version the fake announces at most (protobuf throughout).
const SERVER_VERSION: i32 = 222;

/// What the fake does with each order it receives.
#[derive(Clone, Debug, PartialEq)]
pub enum OnOrder {
    /// Accept it and fill it all at once.
    Fill,
    /// Accept it and fill these fractions of it, one execution each; what is left rests.
    Partial(Vec<f64>),
    /// Accept it and let it rest; a cancel cancels it.
    Rest,
    /// Refuse it with error 201.
    Reject(String),
    /// Let it rest; the cancel arrives too late: it fills, and the cancel is refused (10148).
    FillOnCancel,
    /// Accept it, then drop the connection; while the client is away, it fills.
    FillWhileAway,
}

/// The fake's script.
#[derive(Clone, Debug)]
pub struct TwsScript {
    /// What each order gets.
    pub on_order: OnOrder,
    /// The account (`ManagedAccounts`).
    pub account: String,
    /// The commission of each execution.
    pub commission: f64,
    /// The price of market orders' fills (limit orders fill at their limit).
    pub price: f64,
    /// Positions the account holds before any fill, by IB symbol.
    pub positions: BTreeMap<String, f64>,
    /// The first order id the fake hands out.
    pub next_order_id: i32,
    /// The account's net liquidation value (its account summary).
    pub net_liquidation: f64,
}

impl Default for TwsScript {
    fn default() -> Self {
        TwsScript {
            on_order: OnOrder::Fill,
            account: "DU0000001".into(),
            commission: 0.35,
            price: 100.0,
            positions: BTreeMap::new(),
            next_order_id: 1,
            net_liquidation: 1_000_000.0,
        }
    }
}

/// One message the fake received after the handshake.
#[derive(Clone, Debug)]
pub struct Received {
    /// When (the fake's clock).
    pub at: Instant,
    /// The request's id (`ibapi::OutgoingMessages`, without the protobuf offset).
    pub id: i32,
}

/// An order as the fake received it.
#[derive(Clone, Debug, PartialEq)]
pub struct Placed {
    /// IB order id.
    pub order_id: i32,
    /// `BUY` or `SELL`.
    pub action: String,
    /// Quantity.
    pub quantity: f64,
    /// `MKT` or `LMT`.
    pub order_type: String,
    /// Limit price.
    pub limit: Option<f64>,
    /// The client's `orderRef`.
    pub order_ref: String,
    /// The account.
    pub account: String,
    /// The contract's symbol.
    pub symbol: String,
}

#[derive(Clone, Debug)]
struct Ord {
    placed: Placed,
    perm_id: i64,
    client_id: i32,
    contract: proto::Contract,
    filled: f64,
    status: &'static str,
    /// Modifies received.
    modified: u32,
}

#[derive(Clone, Debug)]
struct Exe {
    exec_id: String,
    order: usize,
    shares: f64,
    price: f64,
    cum: f64,
}

#[derive(Default)]
struct State {
    orders: Vec<Ord>,
    execs: Vec<Exe>,
    positions: BTreeMap<String, f64>,
    received: Vec<Received>,
    connections: usize,
    /// The connections open now (each client's; IB answers each on its own).
    open: Vec<TcpStream>,
}

/// A running fake TWS. Dropping it stops it.
pub struct FakeTws {
    addr: String,
    script: TwsScript,
    state: Arc<Mutex<State>>,
}

impl FakeTws {
    /// Listens on a free loopback port and serves connections one after another, keeping the
    /// account between them.
    ///
    /// ```
    /// let tws = flowsense_bench::tws::FakeTws::start(Default::default()).unwrap();
    /// assert!(tws.address().starts_with("127.0.0.1:"));
    /// ```
    pub fn start(script: TwsScript) -> std::io::Result<FakeTws> {
        FakeTws::start_on("127.0.0.1:0", script)
    }

    /// The same, on `addr` (`flowsense tws`).
    pub fn start_on(addr: &str, script: TwsScript) -> std::io::Result<FakeTws> {
        let listener = TcpListener::bind(addr)?;
        let addr = listener.local_addr()?.to_string();
        let state = Arc::new(Mutex::new(State {
            positions: script.positions.clone(),
            ..State::default()
        }));
        let (s, sc) = (state.clone(), script.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { break };
                let (s, sc) = (s.clone(), sc.clone());
                std::thread::spawn(move || {
                    let _ = serve(conn, &s, &sc);
                });
            }
        });
        Ok(FakeTws {
            addr,
            script,
            state,
        })
    }

    /// `host:port`.
    pub fn address(&self) -> &str {
        &self.addr
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The orders received, in order.
    pub fn placed(&self) -> Vec<Placed> {
        self.state()
            .orders
            .iter()
            .map(|o| o.placed.clone())
            .collect()
    }

    /// How many orders were received, and when the last one was.
    pub fn last_placed(&self) -> (usize, Option<Instant>) {
        let s = self.state();
        let at = s.received.iter().rev().find(|r| r.id == 3).map(|r| r.at);
        (s.orders.len(), at)
    }

    /// Every message received after a handshake.
    pub fn received(&self) -> Vec<Received> {
        self.state().received.clone()
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.state().connections
    }

    /// The account's position in an IB symbol.
    pub fn position(&self, symbol: &str) -> f64 {
        self.state().positions.get(symbol).copied().unwrap_or(0.0)
    }

    /// Modifies received, order by order.
    pub fn modifies(&self) -> Vec<u32> {
        self.state().orders.iter().map(|o| o.modified).collect()
    }

    /// Orders still working.
    pub fn open_orders(&self) -> usize {
        let s = self.state();
        s.orders.iter().filter(|o| is_open(o.status)).count()
    }

    /// Sends a request-less error frame (a connectivity code such as 1100 or 1102) to every
    /// client.
    pub fn notice(&self, code: i32, message: &str) {
        let mut s = self.state();
        for c in s.open.iter_mut() {
            let _ = write_frame(c, In::Error, &error(-1, code, message));
        }
    }

    /// Fills every working order now, as the market trading through them would, and tells the
    /// clients (an execution, its commission report and the status each).
    pub fn fill_working(&self) -> std::io::Result<()> {
        let mut s = self.state();
        let Some(mut c) = s.open.first().map(TcpStream::try_clone).transpose()? else {
            return Ok(());
        };
        for i in 0..s.orders.len() {
            if is_open(s.orders[i].status) {
                let left = s.orders[i].placed.quantity - s.orders[i].filled;
                execute(&mut c, &mut s, &self.script, i, left, true)?;
            }
        }
        Ok(())
    }

    /// Drops every connection, as a network cut or IB's daily reset does.
    pub fn drop_connection(&self) {
        for c in self.state().open.drain(..) {
            let _ = c.shutdown(Shutdown::Both);
        }
    }

    /// The script.
    pub fn script(&self) -> &TwsScript {
        &self.script
    }
}

impl Drop for FakeTws {
    fn drop(&mut self) {
        self.drop_connection();
    }
}

fn is_open(status: &str) -> bool {
    matches!(status, "PreSubmitted" | "Submitted")
}

fn read_exact(c: &mut TcpStream, n: usize) -> std::io::Result<Vec<u8>> {
    let mut b = vec![0u8; n];
    c.read_exact(&mut b)?;
    Ok(b)
}

fn read_frame(c: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let len = u32::from_be_bytes(read_exact(c, 4)?.try_into().expect("4 bytes"));
    read_exact(c, len as usize)
}

fn write_raw(c: &mut TcpStream, body: &[u8]) -> std::io::Result<()> {
    let mut packet = Vec::with_capacity(body.len() + 4);
    packet.extend_from_slice(&(body.len() as u32).to_be_bytes());
    packet.extend_from_slice(body);
    c.write_all(&packet)
}

fn write_frame<M: Message>(c: &mut TcpStream, id: In, m: &M) -> std::io::Result<()> {
    let mut body = (id as i32 + PROTOBUF).to_be_bytes().to_vec();
    body.extend_from_slice(&m.encode_to_vec());
    write_raw(c, &body)
}

/// The id of a request answered by request id (`-1` if it has none).
fn request_id(body: &[u8]) -> i32 {
    proto::RequestId::decode(body)
        .ok()
        .and_then(|r| r.req_id)
        .unwrap_or(-1)
}

fn error(id: i32, code: i32, msg: &str) -> proto::ErrorMessage {
    proto::ErrorMessage {
        id: Some(id),
        error_code: Some(code),
        error_msg: Some(msg.into()),
    }
}

/// One client connection: the handshake, then requests until the client leaves.
fn serve(mut c: TcpStream, state: &Mutex<State>, script: &TwsScript) -> std::io::Result<()> {
    let lock = || state.lock().unwrap_or_else(|e| e.into_inner());
    c.set_nodelay(true)?;
    if read_exact(&mut c, 4)? != b"API\0" {
        return Ok(());
    }
    // "v{min}..{max}": answer with the highest version both speak.
    let range = String::from_utf8_lossy(&read_frame(&mut c)?).into_owned();
    let max: i32 = range
        .rsplit("..")
        .next()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(SERVER_VERSION);
    let version = max.min(SERVER_VERSION);
    write_raw(
        &mut c,
        format!("{version}\020260107 12:00:00 EST\0").as_bytes(),
    )?;
    let start = read_frame(&mut c)?;
    let client_id = proto::StartApiRequest::decode(&start[4..])
        .ok()
        .and_then(|s| s.client_id)
        .unwrap_or(0);
    {
        let mut s = lock();
        s.connections += 1;
        let next = script.next_order_id + s.orders.len() as i32;
        write_frame(
            &mut c,
            In::NextValidId,
            &proto::NextValidId {
                order_id: Some(next),
            },
        )?;
        write_frame(
            &mut c,
            In::ManagedAccounts,
            &proto::ManagedAccounts {
                accounts_list: Some(script.account.clone()),
            },
        )?;
        s.open.push(c.try_clone()?);
    }
    let mut out = c.try_clone()?;
    loop {
        let frame = match read_frame(&mut c) {
            Ok(f) => f,
            Err(_) => return Ok(()),
        };
        if frame.len() < 4 {
            continue;
        }
        let raw = i32::from_be_bytes(frame[..4].try_into().expect("4 bytes"));
        let id = if raw > PROTOBUF { raw - PROTOBUF } else { raw };
        let body = &frame[4..];
        let mut s = lock();
        s.received.push(Received {
            at: Instant::now(),
            id,
        });
        let o = &mut out;
        match id {
            3 => {
                let Ok(p) = proto::PlaceOrderRequest::decode(body) else {
                    continue;
                };
                place(o, &mut s, script, client_id, p)?;
            }
            4 => {
                let Ok(r) = proto::CancelOrderRequest::decode(body) else {
                    continue;
                };
                cancel(o, &mut s, script, r.order_id.unwrap_or(0))?;
            }
            // Open orders (this client's, or all).
            5 | 16 => {
                for i in 0..s.orders.len() {
                    if is_open(s.orders[i].status) {
                        write_open_order(o, &s.orders[i], script)?;
                        write_status(o, &s.orders[i])?;
                    }
                }
                write_frame(o, In::OpenOrderEnd, &proto::Empty {})?;
            }
            7 => {
                let req = request_id(body);
                for e in s.execs.clone() {
                    write_exec(o, &s, script, &e, req)?;
                }
                write_frame(
                    o,
                    In::ExecutionDataEnd,
                    &proto::ExecutionDetailsEnd { req_id: Some(req) },
                )?;
            }
            8 => {
                let next = script.next_order_id + s.orders.len() as i32;
                write_frame(
                    o,
                    In::NextValidId,
                    &proto::NextValidId {
                        order_id: Some(next),
                    },
                )?;
            }
            58 => {
                for i in 0..s.orders.len() {
                    if is_open(s.orders[i].status) {
                        s.orders[i].status = "Cancelled";
                        write_status(o, &s.orders[i])?;
                    }
                }
            }
            61 => {
                for (sym, qty) in &s.positions {
                    let p = proto::Position {
                        account: Some(script.account.clone()),
                        contract: Some(proto::Contract {
                            symbol: Some(sym.clone()),
                            sec_type: Some("STK".into()),
                            ..Default::default()
                        }),
                        position: Some(qty.to_string()),
                        avg_cost: Some(script.price),
                    };
                    write_frame(o, In::Position, &p)?;
                }
                write_frame(o, In::PositionEnd, &proto::Empty {})?;
            }
            62 => {
                let req = request_id(body);
                let cash = script.net_liquidation;
                for (tag, value) in [
                    ("NetLiquidation", cash),
                    ("TotalCashValue", cash),
                    ("BuyingPower", 4.0 * cash),
                ] {
                    let row = proto::AccountSummary {
                        req_id: Some(req),
                        account: Some(script.account.clone()),
                        tag: Some(tag.into()),
                        value: Some(value.to_string()),
                        currency: Some("USD".into()),
                    };
                    write_frame(o, In::AccountSummary, &row)?;
                }
                write_frame(
                    o,
                    In::AccountSummaryEnd,
                    &proto::AccountSummaryEnd { req_id: Some(req) },
                )?;
            }
            99 => {
                for ord in &s.orders {
                    if !is_open(ord.status) {
                        let d = proto::CompletedOrder {
                            contract: Some(ord.contract.clone()),
                            order: Some(order_proto(ord, script)),
                            order_state: Some(proto::OrderState {
                                status: Some(ord.status.into()),
                            }),
                        };
                        write_frame(o, In::CompletedOrder, &d)?;
                    }
                }
                write_frame(o, In::CompletedOrdersEnd, &proto::Empty {})?;
            }
            _ => {}
        }
    }
}

fn order_proto(o: &Ord, script: &TwsScript) -> proto::Order {
    proto::Order {
        client_id: Some(o.client_id),
        order_id: Some(o.placed.order_id),
        perm_id: Some(o.perm_id),
        action: Some(o.placed.action.clone()),
        total_quantity: Some(o.placed.quantity.to_string()),
        order_type: Some(o.placed.order_type.clone()),
        lmt_price: o.placed.limit,
        tif: Some("DAY".into()),
        account: Some(script.account.clone()),
        order_ref: Some(o.placed.order_ref.clone()),
    }
}

fn write_open_order(c: &mut TcpStream, o: &Ord, script: &TwsScript) -> std::io::Result<()> {
    let m = proto::OpenOrder {
        order_id: Some(o.placed.order_id),
        contract: Some(o.contract.clone()),
        order: Some(order_proto(o, script)),
        order_state: Some(proto::OrderState {
            status: Some(o.status.into()),
        }),
    };
    write_frame(c, In::OpenOrder, &m)
}

fn write_status(c: &mut TcpStream, o: &Ord) -> std::io::Result<()> {
    let m = proto::OrderStatus {
        order_id: Some(o.placed.order_id),
        status: Some(o.status.into()),
        filled: Some(o.filled.to_string()),
        remaining: Some((o.placed.quantity - o.filled).max(0.0).to_string()),
        avg_fill_price: None,
        perm_id: Some(o.perm_id),
        last_fill_price: None,
        client_id: Some(o.client_id),
    };
    write_frame(c, In::OrderStatus, &m)
}

fn write_exec(
    c: &mut TcpStream,
    s: &State,
    script: &TwsScript,
    e: &Exe,
    req: i32,
) -> std::io::Result<()> {
    let o = &s.orders[e.order];
    let m = proto::ExecutionDetails {
        req_id: Some(req),
        contract: Some(o.contract.clone()),
        execution: Some(proto::Execution {
            order_id: Some(o.placed.order_id),
            exec_id: Some(e.exec_id.clone()),
            time: Some("20260107 12:00:01 EST".into()),
            acct_number: Some(script.account.clone()),
            exchange: Some("ISLAND".into()),
            side: Some(
                if o.placed.action == "BUY" {
                    "BOT"
                } else {
                    "SLD"
                }
                .into(),
            ),
            shares: Some(e.shares.to_string()),
            price: Some(e.price),
            perm_id: Some(o.perm_id),
            client_id: Some(o.client_id),
            cum_qty: Some(e.cum.to_string()),
            avg_price: Some(e.price),
            order_ref: Some(o.placed.order_ref.clone()),
            last_liquidity: Some(if o.placed.order_type == "LMT" { 1 } else { 2 }),
        }),
    };
    write_frame(c, In::ExecutionData, &m)?;
    let f = proto::CommissionAndFeesReport {
        exec_id: Some(e.exec_id.clone()),
        commission_and_fees: Some(script.commission),
        currency: Some("USD".into()),
    };
    write_frame(c, In::CommissionsReport, &f)
}

/// Executes `qty` of order `i` in the account; `send` also tells the client.
fn execute(
    c: &mut TcpStream,
    s: &mut State,
    script: &TwsScript,
    i: usize,
    qty: f64,
    send: bool,
) -> std::io::Result<()> {
    let o = &mut s.orders[i];
    let price = o.placed.limit.unwrap_or(script.price);
    o.filled += qty;
    if o.filled >= o.placed.quantity - 1e-12 {
        o.status = "Filled";
    }
    let signed = if o.placed.action == "BUY" { qty } else { -qty };
    let (sym, cum) = (o.placed.symbol.clone(), o.filled);
    *s.positions.entry(sym).or_default() += signed;
    let e = Exe {
        exec_id: format!(
            "0000e{:04}.{:02}",
            s.orders[i].placed.order_id,
            s.execs.len()
        ),
        order: i,
        shares: qty,
        price,
        cum,
    };
    s.execs.push(e.clone());
    if send {
        write_exec(c, s, script, &e, -1)?;
        write_status(c, &s.orders[i])?;
    }
    Ok(())
}

fn place(
    c: &mut TcpStream,
    s: &mut State,
    script: &TwsScript,
    client_id: i32,
    p: proto::PlaceOrderRequest,
) -> std::io::Result<()> {
    let order = p.order.unwrap_or_default();
    let contract = p.contract.unwrap_or_default();
    // An order id already working is a modify: its new limit (and size), acknowledged as IB
    // does, with the order again and its status.
    if let Some(i) = s
        .orders
        .iter()
        .position(|o| Some(o.placed.order_id) == p.order_id && is_open(o.status))
    {
        let o = &mut s.orders[i];
        o.placed.limit = order.lmt_price;
        if let Some(q) = order.total_quantity.as_deref().and_then(|q| q.parse().ok()) {
            o.placed.quantity = q;
        }
        o.modified += 1;
        write_open_order(c, &s.orders[i], script)?;
        return write_status(c, &s.orders[i]);
    }
    let placed = Placed {
        order_id: p.order_id.unwrap_or(0),
        action: order.action.clone().unwrap_or_default(),
        quantity: order
            .total_quantity
            .as_deref()
            .and_then(|q| q.parse().ok())
            .unwrap_or(0.0),
        order_type: order.order_type.clone().unwrap_or_default(),
        limit: order.lmt_price,
        order_ref: order.order_ref.clone().unwrap_or_default(),
        account: order.account.clone().unwrap_or_default(),
        symbol: contract.symbol.clone().unwrap_or_default(),
    };
    if let OnOrder::Reject(why) = &script.on_order {
        let id = placed.order_id;
        s.orders.push(Ord {
            perm_id: 9_000_000 + s.orders.len() as i64,
            client_id,
            contract,
            filled: 0.0,
            modified: 0,
            status: "Inactive",
            placed,
        });
        return write_frame(
            c,
            In::Error,
            &error(id, 201, &format!("Order rejected - reason:{why}")),
        );
    }
    s.orders.push(Ord {
        perm_id: 9_000_000 + s.orders.len() as i64,
        client_id,
        contract,
        filled: 0.0,
        modified: 0,
        status: "Submitted",
        placed,
    });
    let i = s.orders.len() - 1;
    write_open_order(c, &s.orders[i], script)?;
    write_status(c, &s.orders[i])?;
    let qty = s.orders[i].placed.quantity;
    match &script.on_order {
        OnOrder::Fill => execute(c, s, script, i, qty, true)?,
        OnOrder::Partial(parts) => {
            for f in parts {
                execute(c, s, script, i, qty * f, true)?;
            }
        }
        OnOrder::FillWhileAway => {
            execute(c, s, script, i, qty, false)?;
            let me = c.peer_addr()?;
            s.open.retain(|o| o.peer_addr().ok() != Some(me));
            c.shutdown(Shutdown::Both)?;
        }
        OnOrder::Rest | OnOrder::FillOnCancel | OnOrder::Reject(_) => {}
    }
    Ok(())
}

fn cancel(
    c: &mut TcpStream,
    s: &mut State,
    script: &TwsScript,
    order_id: i32,
) -> std::io::Result<()> {
    let Some(i) = s.orders.iter().position(|o| o.placed.order_id == order_id) else {
        return write_frame(
            c,
            In::Error,
            &error(
                order_id,
                10147,
                &format!("OrderId {order_id} that needs to be cancelled is not found."),
            ),
        );
    };
    if !is_open(s.orders[i].status) {
        let st = s.orders[i].status;
        return write_frame(
            c,
            In::Error,
            &error(
                order_id,
                10148,
                &format!(
                    "OrderId {order_id} that needs to be cancelled cannot be cancelled, state: {st}."
                ),
            ),
        );
    }
    if script.on_order == OnOrder::FillOnCancel {
        let left = s.orders[i].placed.quantity - s.orders[i].filled;
        execute(c, s, script, i, left, true)?;
        return write_frame(
            c,
            In::Error,
            &error(
                order_id,
                10148,
                &format!(
                    "OrderId {order_id} that needs to be cancelled cannot be cancelled, state: Filled."
                ),
            ),
        );
    }
    s.orders[i].status = "Cancelled";
    write_status(c, &s.orders[i])?;
    write_frame(
        c,
        In::Error,
        &error(order_id, 202, "Order Canceled - reason:"),
    )
}
