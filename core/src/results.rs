//! What a trading run leaves behind: the records a trader emits ([`TradeRecord`]) and the metrics
//! computed from them ([`Metrics`]), which the lake's `orders`, `fills`, `equity`, `risk_events`,
//! `positions` and `metrics` tables hold.

use crate::order::{EquityPoint, Fill, OrderRecord, RiskEvent};
use crate::{Symbol, UnixNanos};

/// A position from flat to flat (or to the other side): a round trip once closed.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Position {
    /// The symbol.
    pub symbol: Symbol,
    /// Exchange time of the fill that opened it.
    pub opened: UnixNanos,
    /// Exchange time of the fill that closed it; `None` while still open at the end of the run.
    pub closed: Option<UnixNanos>,
    /// When the record was taken: the close, or the end of the run for an open position.
    pub ts: UnixNanos,
    /// `1` long, `-1` short.
    pub direction: i8,
    /// Largest absolute size it reached.
    pub peak: f64,
    /// Size-weighted price of the fills that opened or added to it.
    pub avg_open: f64,
    /// Size-weighted price of the fills that reduced or closed it.
    pub avg_close: Option<f64>,
    /// Equity change over its life, fees included, in quote currency (an open position is
    /// marked at the last mid).
    pub pnl: f64,
}

/// Everything a trader records, in the order it happened.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum TradeRecord {
    /// An order's final state (or its state at the end of the run).
    Order(OrderRecord),
    /// An execution.
    Fill(Fill),
    /// A mark of the account, at each close of the strategy's bucket.
    Equity(EquityPoint),
    /// An alert, halt, refusal or clip.
    Risk(RiskEvent),
    /// A position, when it closes (and, still open, at the end of the run).
    Position(Position),
}

impl TradeRecord {
    /// The symbol the record belongs to.
    pub fn symbol(&self) -> &Symbol {
        match self {
            TradeRecord::Order(o) => &o.order.symbol,
            TradeRecord::Fill(f) => &f.symbol,
            TradeRecord::Equity(e) => &e.symbol,
            TradeRecord::Risk(r) => &r.symbol,
            TradeRecord::Position(p) => &p.symbol,
        }
    }

    /// The time the record files under: an order's sending, a fill's execution, a mark's
    /// bucket end, a risk event's feed time, a position's close (or the run's end).
    pub fn ts(&self) -> UnixNanos {
        match self {
            TradeRecord::Order(o) => o.order.sent,
            TradeRecord::Fill(f) => f.ts,
            TradeRecord::Equity(e) => e.ts,
            TradeRecord::Risk(r) => r.ts,
            TradeRecord::Position(p) => p.ts,
        }
    }
}

/// A run's metrics over one scope: the portfolio or a symbol, optionally one regime or one
/// walk-forward fold of it.
///
/// Returns are simple returns of equity between consecutive marks (closes of the strategy's
/// bucket). Sharpe and Sortino are annualised by `sqrt(periods per year)` with
/// `periods per year = 365.25 * 86400 / bucket seconds` (markets that trade around the clock);
/// both assume a zero risk-free rate. Sortino's downside deviation is the root mean square of
/// the negative returns over all periods.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Metrics {
    /// `portfolio` or the symbol.
    pub scope: String,
    /// The regime, for per-regime rows.
    pub regime: Option<String>,
    /// The walk-forward fold (test window), for per-fold rows.
    pub fold: Option<u32>,
    /// Parameters chosen for this row (walk-forward: the value trained on the fold's train
    /// window, and its train figures).
    pub params: Option<String>,
    /// First mark.
    pub ts_from: Option<UnixNanos>,
    /// Last mark.
    pub ts_to: Option<UnixNanos>,
    /// Returns measured.
    pub periods: u64,
    /// Starting equity.
    pub capital: f64,
    /// Final equity.
    pub end_equity: f64,
    /// Profit before fees.
    pub gross_pnl: f64,
    /// Fees paid (negative: rebates earned).
    pub fees: f64,
    /// Profit after fees.
    pub net_pnl: f64,
    /// `net_pnl / capital`.
    pub total_return: f64,
    /// Annualised Sharpe ratio (absent with fewer than two returns, no variance, or a sample
    /// too short to annualise: see `ratio_note`).
    pub sharpe: Option<f64>,
    /// Annualised Sortino ratio (absent without a negative return, or as `sharpe`).
    pub sortino: Option<f64>,
    /// Mean return per period (per mark of the strategy's bucket), not annualised.
    pub return_mean: Option<f64>,
    /// Sample standard deviation of the returns per period, not annualised.
    pub return_sd: Option<f64>,
    /// Why `sharpe` and `sortino` are absent although returns were measured: `n/a (run too
    /// short: ...)` with the sample's length; `None` when they are annualised.
    pub ratio_note: Option<String>,
    /// Largest fall from a peak of equity, as a fraction of the peak.
    pub max_drawdown: f64,
    /// Longest time below a previous peak, in seconds.
    pub max_drawdown_duration_s: f64,
    /// Round trips completed (positions closed).
    pub round_trips: u64,
    /// Share of round trips with a profit after fees.
    pub hit_rate: Option<f64>,
    /// Traded notional over capital.
    pub turnover: f64,
    /// Orders sent.
    pub orders: u64,
    /// Filled size over ordered size.
    pub fill_ratio: Option<f64>,
    /// Mean time maker fills waited in the queue, in milliseconds.
    pub mean_queue_wait_ms: Option<f64>,
}
