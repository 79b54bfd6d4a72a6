//! FlowSense's timely operators: order-flow features, the trading strategy with its risk
//! limits and simulated exchange, and run metrics.
//!
//! The hot path is one operator per family of per-symbol state, so an event crosses one operator
//! boundary, not one per feature. Each operator is a thin timely shell around a plain engine
//! ([`engine::FeatureEngine`]) that owns the per-symbol state: the same engine runs inside the
//! dataflow and in the benchmark's plain loop, and is what the recompute tests check.
//!
//! - [`OrderFlowFeatures`]: market events in, one [`flowsense_core::FeatureRow`] per symbol per
//!   bucket (and per event when asked) out: OFI (best level and multi-level), mid, spread,
//!   microprice, weighted mid, depth imbalance, book slope, trade-flow imbalance, signed volume,
//!   VPIN, Kyle's lambda, realized volatility, trade intensity, returns, add and cancel rates,
//!   OHLCV and VWAP, and marks of crossed data.
//! - [`Trader`]: feature rows and market events in, the strategy's orders, fills, positions,
//!   equity marks and risk events out, against a [`flowsense_core::order::Broker`] per symbol.
//! - [`metrics::MetricsBuilder`]: a run's PnL, ratios, drawdown and fill figures.

#![forbid(missing_docs)]

pub mod by_symbol;
pub mod engine;
pub mod exchange;
pub mod metrics;
pub mod order_flow;
pub mod portfolio;
#[cfg(test)]
mod reference;
pub mod trade_strategy;
pub mod trader;
pub mod vpin;

pub use exchange::SimExchange;
pub use order_flow::{FeatureCounters, OrderFlowFeatures};
pub use trade_strategy::TradeStrategy;
pub use trader::Trader;
