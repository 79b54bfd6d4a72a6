//! The subset of TWS's protobuf messages the scripted TWS reads and writes, with the field tags
//! of IB's published `.proto` files (the `ibapi` crate's own types are private to it).

use prost::Message;

#[derive(Clone, PartialEq, Message)]
pub struct Contract {
    #[prost(int32, optional, tag = "1")]
    pub con_id: Option<i32>,
    #[prost(string, optional, tag = "2")]
    pub symbol: Option<String>,
    #[prost(string, optional, tag = "3")]
    pub sec_type: Option<String>,
    #[prost(string, optional, tag = "8")]
    pub exchange: Option<String>,
    #[prost(string, optional, tag = "9")]
    pub primary_exch: Option<String>,
    #[prost(string, optional, tag = "10")]
    pub currency: Option<String>,
}

#[derive(Clone, PartialEq, Message)]
pub struct Order {
    #[prost(int32, optional, tag = "1")]
    pub client_id: Option<i32>,
    #[prost(int32, optional, tag = "2")]
    pub order_id: Option<i32>,
    #[prost(int64, optional, tag = "3")]
    pub perm_id: Option<i64>,
    #[prost(string, optional, tag = "5")]
    pub action: Option<String>,
    #[prost(string, optional, tag = "6")]
    pub total_quantity: Option<String>,
    #[prost(string, optional, tag = "8")]
    pub order_type: Option<String>,
    #[prost(double, optional, tag = "9")]
    pub lmt_price: Option<f64>,
    #[prost(string, optional, tag = "11")]
    pub tif: Option<String>,
    #[prost(string, optional, tag = "12")]
    pub account: Option<String>,
    #[prost(string, optional, tag = "28")]
    pub order_ref: Option<String>,
}

#[derive(Clone, PartialEq, Message)]
pub struct OrderState {
    #[prost(string, optional, tag = "1")]
    pub status: Option<String>,
}

#[derive(Clone, PartialEq, Message)]
pub struct StartApiRequest {
    #[prost(int32, optional, tag = "1")]
    pub client_id: Option<i32>,
}

#[derive(Clone, PartialEq, Message)]
pub struct PlaceOrderRequest {
    #[prost(int32, optional, tag = "1")]
    pub order_id: Option<i32>,
    #[prost(message, optional, tag = "2")]
    pub contract: Option<Contract>,
    #[prost(message, optional, tag = "3")]
    pub order: Option<Order>,
}

#[derive(Clone, PartialEq, Message)]
pub struct CancelOrderRequest {
    #[prost(int32, optional, tag = "1")]
    pub order_id: Option<i32>,
}

#[derive(Clone, PartialEq, Message)]
pub struct NextValidId {
    #[prost(int32, optional, tag = "1")]
    pub order_id: Option<i32>,
}

#[derive(Clone, PartialEq, Message)]
pub struct ManagedAccounts {
    #[prost(string, optional, tag = "1")]
    pub accounts_list: Option<String>,
}

#[derive(Clone, PartialEq, Message)]
pub struct OpenOrder {
    #[prost(int32, optional, tag = "1")]
    pub order_id: Option<i32>,
    #[prost(message, optional, tag = "2")]
    pub contract: Option<Contract>,
    #[prost(message, optional, tag = "3")]
    pub order: Option<Order>,
    #[prost(message, optional, tag = "4")]
    pub order_state: Option<OrderState>,
}

#[derive(Clone, PartialEq, Message)]
pub struct CompletedOrder {
    #[prost(message, optional, tag = "1")]
    pub contract: Option<Contract>,
    #[prost(message, optional, tag = "2")]
    pub order: Option<Order>,
    #[prost(message, optional, tag = "3")]
    pub order_state: Option<OrderState>,
}

#[derive(Clone, PartialEq, Message)]
pub struct OrderStatus {
    #[prost(int32, optional, tag = "1")]
    pub order_id: Option<i32>,
    #[prost(string, optional, tag = "2")]
    pub status: Option<String>,
    #[prost(string, optional, tag = "3")]
    pub filled: Option<String>,
    #[prost(string, optional, tag = "4")]
    pub remaining: Option<String>,
    #[prost(double, optional, tag = "5")]
    pub avg_fill_price: Option<f64>,
    #[prost(int64, optional, tag = "6")]
    pub perm_id: Option<i64>,
    #[prost(double, optional, tag = "8")]
    pub last_fill_price: Option<f64>,
    #[prost(int32, optional, tag = "9")]
    pub client_id: Option<i32>,
}

#[derive(Clone, PartialEq, Message)]
pub struct Execution {
    #[prost(int32, optional, tag = "1")]
    pub order_id: Option<i32>,
    #[prost(string, optional, tag = "2")]
    pub exec_id: Option<String>,
    #[prost(string, optional, tag = "3")]
    pub time: Option<String>,
    #[prost(string, optional, tag = "4")]
    pub acct_number: Option<String>,
    #[prost(string, optional, tag = "5")]
    pub exchange: Option<String>,
    #[prost(string, optional, tag = "6")]
    pub side: Option<String>,
    #[prost(string, optional, tag = "7")]
    pub shares: Option<String>,
    #[prost(double, optional, tag = "8")]
    pub price: Option<f64>,
    #[prost(int64, optional, tag = "9")]
    pub perm_id: Option<i64>,
    #[prost(int32, optional, tag = "10")]
    pub client_id: Option<i32>,
    #[prost(string, optional, tag = "12")]
    pub cum_qty: Option<String>,
    #[prost(double, optional, tag = "13")]
    pub avg_price: Option<f64>,
    #[prost(string, optional, tag = "14")]
    pub order_ref: Option<String>,
    #[prost(int32, optional, tag = "18")]
    pub last_liquidity: Option<i32>,
}

#[derive(Clone, PartialEq, Message)]
pub struct ExecutionDetails {
    #[prost(int32, optional, tag = "1")]
    pub req_id: Option<i32>,
    #[prost(message, optional, tag = "2")]
    pub contract: Option<Contract>,
    #[prost(message, optional, tag = "3")]
    pub execution: Option<Execution>,
}

#[derive(Clone, PartialEq, Message)]
pub struct ExecutionDetailsEnd {
    #[prost(int32, optional, tag = "1")]
    pub req_id: Option<i32>,
}

#[derive(Clone, PartialEq, Message)]
pub struct CommissionAndFeesReport {
    #[prost(string, optional, tag = "1")]
    pub exec_id: Option<String>,
    #[prost(double, optional, tag = "2")]
    pub commission_and_fees: Option<f64>,
    #[prost(string, optional, tag = "3")]
    pub currency: Option<String>,
}

#[derive(Clone, PartialEq, Message)]
pub struct Position {
    #[prost(string, optional, tag = "1")]
    pub account: Option<String>,
    #[prost(message, optional, tag = "2")]
    pub contract: Option<Contract>,
    #[prost(string, optional, tag = "3")]
    pub position: Option<String>,
    #[prost(double, optional, tag = "4")]
    pub avg_cost: Option<f64>,
}

#[derive(Clone, PartialEq, Message)]
pub struct ErrorMessage {
    #[prost(int32, optional, tag = "1")]
    pub id: Option<i32>,
    #[prost(int32, optional, tag = "3")]
    pub error_code: Option<i32>,
    #[prost(string, optional, tag = "4")]
    pub error_msg: Option<String>,
}

/// An empty message (the `...End` markers).
#[derive(Clone, PartialEq, Message)]
pub struct Empty {}

#[derive(Clone, PartialEq, Message)]
pub struct AccountSummary {
    #[prost(int32, optional, tag = "1")]
    pub req_id: Option<i32>,
    #[prost(string, optional, tag = "2")]
    pub account: Option<String>,
    #[prost(string, optional, tag = "3")]
    pub tag: Option<String>,
    #[prost(string, optional, tag = "4")]
    pub value: Option<String>,
    #[prost(string, optional, tag = "5")]
    pub currency: Option<String>,
}

#[derive(Clone, PartialEq, Message)]
pub struct AccountSummaryEnd {
    #[prost(int32, optional, tag = "1")]
    pub req_id: Option<i32>,
}

/// A request whose id is its field 1, as every request answered by request id carries it
/// (`ExecutionRequest`, `AccountSummaryRequest`, ...): the other fields are skipped.
#[derive(Clone, PartialEq, Message)]
pub struct RequestId {
    #[prost(int32, optional, tag = "1")]
    pub req_id: Option<i32>,
}
