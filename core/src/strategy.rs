//! The trading half of a job spec: the strategy (`[strategy]`), its risk limits (`[risk]`) and
//! the simulated exchange it trades against in backtests and paper runs (`[execution]`).
//!
//! ```
//! use flowsense_core::job::JobSpec;
//! use flowsense_core::strategy::{OrderStyle, Sizing};
//! let spec = JobSpec::from_toml(r#"
//!     name = "ofi-taker"
//!     [source.synthetic]
//!     symbols = 1
//!     [strategy]
//!     bucket = "1s"
//!     signal = "ofi_l1 / (bid_size + ask_size)"
//!     entry = 0.5
//!     exit = 0.1
//!     order = "market"
//!     [strategy.sizing]
//!     method = "fixed"
//!     size = 2
//!     [risk]
//!     capital = 100000
//!     drawdown_halt = 0.2
//!     [execution]
//!     taker_fee = 0.0008
//! "#).unwrap();
//! let s = spec.strategy.as_ref().unwrap();
//! assert_eq!(s.order, OrderStyle::Market);
//! assert!(matches!(s.sizing, Sizing::Fixed { .. }));
//! assert_eq!(spec.risk.drawdown_alert, 0.10); // the default
//! ```

use serde::{Deserialize, Serialize};

use crate::expr::Expr;
use crate::span::Span;

/// A strategy: a signal read at every close of one bucket width, turned into a target position.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct StrategySpec {
    /// The bucket width whose rows the strategy reads (one of `features.buckets`).
    pub bucket: Span,
    /// The signal, an [`Expr`] over feature columns: positive means buy, negative sell.
    pub signal: Expr,
    /// Enter (or reverse) when `|signal|` reaches this.
    pub entry: f64,
    /// Leave a position when the signal in its direction falls below this (default 0: when it
    /// changes sign).
    #[serde(default)]
    pub exit: f64,
    /// Leave a position held this long (absent: no limit).
    #[serde(default)]
    pub max_hold: Option<Span>,
    /// How orders are placed.
    #[serde(default)]
    pub order: OrderStyle,
    /// Cancel a resting limit order this old and place it again at the current touch
    /// (absent: leave it until the target changes or the touch moves away).
    #[serde(default)]
    pub cancel_after: Option<Span>,
    /// Cancel and re-place resting limit orders when the touch moves away from their price.
    #[serde(default = "yes")]
    pub replace_on_touch_move: bool,
    /// How big a position the signal asks for.
    pub sizing: Sizing,
    /// Regime multipliers on the size.
    #[serde(default)]
    pub regime: Option<RegimeSpec>,
}

fn yes() -> bool {
    true
}

/// How the strategy's orders are placed.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OrderStyle {
    /// Market orders (take liquidity, walk the book).
    #[default]
    Market,
    /// Limit orders at the touch on the order's own side (join the best bid to buy).
    LimitJoin,
    /// Limit orders one tick inside the spread (improve the best bid to buy), or joining when
    /// the spread is one tick.
    LimitImprove,
    /// Immediate-or-cancel limit orders at the opposite touch (take the best ask to buy).
    Ioc,
}

/// How a signal becomes a position size (in the symbol's size units).
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(tag = "method", rename_all = "snake_case", deny_unknown_fields)]
pub enum Sizing {
    /// A fixed size in the signal's direction.
    Fixed {
        /// Size units (e.g. 0.01 BTC, 100 shares).
        size: f64,
    },
    /// Fractional Kelly: the fraction of equity `fraction * edge / variance`, capped at
    /// `max_leverage`, converted to size at the mid. `edge` is the expected return over the
    /// holding horizon (its sign is ignored: the signal gives the direction) and `variance`
    /// that return's variance, both expressions over features.
    Kelly {
        /// Expected return, e.g. `0.2 * abs(ofi_l1) / (bid_size + ask_size) * realized_vol`.
        edge: Expr,
        /// Its variance, e.g. `realized_vol ^ 2`.
        variance: Expr,
        /// The Kelly fraction (default 0.25, "quarter Kelly").
        #[serde(default = "quarter")]
        fraction: f64,
        /// Largest position as a multiple of equity (default 1.0).
        #[serde(default = "one")]
        max_leverage: f64,
        /// Round sizes down to a multiple of this (default: no rounding).
        #[serde(default)]
        lot: Option<f64>,
    },
}

fn quarter() -> f64 {
    0.25
}

fn one() -> f64 {
    1.0
}

/// Regimes read from a feature expression: its value (rounded) picks a regime by number.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RegimeSpec {
    /// An expression whose value is the regime number, e.g. `if(realized_vol > 0.0004, 1, 0)`.
    pub expr: Expr,
    /// Regime names, by number (`["low_vol", "high_vol"]`).
    pub names: Vec<String>,
    /// Size multiplier per regime, by number (default 1.0 for each).
    #[serde(default)]
    pub multipliers: Vec<f64>,
}

/// Limits every order passes before it leaves, and the drawdown monitor.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct RiskSpec {
    /// Starting equity, in quote currency.
    pub capital: f64,
    /// Largest absolute position, in size units (absent: none).
    pub max_position: Option<f64>,
    /// Largest absolute position value at the mid, in quote currency (absent: none).
    pub max_notional: Option<f64>,
    /// Most orders (and cancels) sent in any one second of feed time (absent: none).
    pub max_orders_per_second: Option<u32>,
    /// Refuse limit orders priced further than this from the mid, in basis points (absent: none).
    pub price_band_bps: Option<f64>,
    /// Record an alert when equity falls this fraction below its peak.
    pub drawdown_alert: f64,
    /// Halt at this drawdown: cancel every order, flatten, and refuse new orders.
    pub drawdown_halt: f64,
    /// A drawdown monitor over the whole portfolio, the sum of every symbol's sleeve
    /// (`[risk.portfolio]`; absent: each sleeve watches only itself).
    pub portfolio: Option<PortfolioRiskSpec>,
}

/// The portfolio's drawdown monitor (`[risk.portfolio]`): the alert and the halt of
/// [`RiskSpec`], on the sum of every symbol's sleeve. A portfolio halt halts every sleeve.
///
/// The monitor needs every sleeve's equity in one place and in one order whatever the worker
/// count, so a job with it trades all its symbols on one worker (features still compute on all).
///
/// ```
/// use flowsense_core::strategy::RiskSpec;
/// let r: RiskSpec = toml::from_str("capital = 5000\n[portfolio]\ndrawdown_halt = 0.05").unwrap();
/// let p = r.portfolio.unwrap();
/// assert_eq!((p.drawdown_alert, p.drawdown_halt), (0.10, 0.05));
/// assert!(RiskSpec { portfolio: Some(p), ..r }.validate().is_err()); // alert above the halt
/// ```
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct PortfolioRiskSpec {
    /// Record an alert when the portfolio's equity falls this fraction below its peak.
    pub drawdown_alert: f64,
    /// Halt every sleeve at this drawdown of the portfolio.
    pub drawdown_halt: f64,
}

impl Default for PortfolioRiskSpec {
    fn default() -> Self {
        PortfolioRiskSpec {
            drawdown_alert: 0.10,
            drawdown_halt: 0.15,
        }
    }
}

fn check_drawdowns(scope: &str, alert: f64, halt: f64) -> Result<(), String> {
    if !(0.0 < alert && alert <= halt && halt < 1.0) {
        return Err(format!(
            "{scope}: need 0 < drawdown_alert <= drawdown_halt < 1"
        ));
    }
    Ok(())
}

impl Default for RiskSpec {
    fn default() -> Self {
        RiskSpec {
            capital: 100_000.0,
            max_position: None,
            max_notional: None,
            max_orders_per_second: None,
            price_band_bps: None,
            drawdown_alert: 0.10,
            drawdown_halt: 0.15,
            portfolio: None,
        }
    }
}

/// The simulated exchange: latencies, fees, slippage and the L2 queue model.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ExecutionSpec {
    /// Time from sending an order (feed time) to its arrival at the exchange.
    pub order_latency: Span,
    /// When set, each order's latency is drawn uniformly from `order_latency` to
    /// `order_latency + latency_jitter`, seeded by `seed` and the order id.
    pub latency_jitter: Option<Span>,
    /// Time from an execution at the exchange to its report reaching the strategy.
    pub response_latency: Span,
    /// Fee on maker fills, as a fraction of notional (0.0002 = 2 bp; negative is a rebate).
    pub maker_fee: f64,
    /// Fee on taker fills, as a fraction of notional (0.0008 = 0.08 %).
    pub taker_fee: f64,
    /// Extra adverse slippage on taker fills, in basis points, on top of the book walk.
    pub slippage_bps: f64,
    /// The L2 queue model's power `n` (see the simulator's documentation): the share of a
    /// cancel taken from ahead of the order is `f(ahead) / (f(ahead) + f(behind))`, `f(x) = x^n`.
    pub queue_power: f64,
    /// Seed of the latency draws.
    pub seed: u64,
    /// The venue's lot: fills the L2 queue model gives are rounded down to a multiple of it
    /// (absent: no rounding), as no venue fills a fraction of a lot.
    pub lot_size: Option<f64>,
    /// What a bar with volume 0 does to orders waiting for it (vendors print such bars, often
    /// with moving prices): `skip` (the default) fills nothing on it, as our fills in a bar
    /// never exceed its volume, so a market order waits for the next bar that traded; `fill`
    /// fills on it as if its volume were unlimited (at its open, for a market order), as
    /// Backtrader does.
    pub zero_volume_bars: ZeroVolumeBars,
    /// How a trade at a resting order's price fills it once the queue ahead is gone: `partial`
    /// (the default) fills the part of the trade past the queue; `whole` fills the whole rest of
    /// the order (and a trade through its price fills it whole too), as hftbacktest's
    /// no-partial-fill exchange does.
    pub queue_fills: QueueFills,
    /// What the L2 queue model counts as cancels when a level falls: `net` (the default, and
    /// what hftbacktest's power queue model does), the fall less the trades at the price since
    /// the last update (they already left the front); `gross`, the whole fall (trades counted
    /// again as cancels: a bound on how much the model leans on that subtraction).
    pub queue_cancels: QueueCancels,
}

/// See [`ExecutionSpec::queue_fills`].
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum QueueFills {
    /// The part of a trade that reaches past the queue ahead.
    #[default]
    Partial,
    /// The whole rest of the order, once a trade reaches past the queue ahead.
    Whole,
}

/// See [`ExecutionSpec::queue_cancels`].
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum QueueCancels {
    /// A level's fall less the trades at its price since the last update.
    #[default]
    Net,
    /// A level's whole fall.
    Gross,
}

/// See [`ExecutionSpec::zero_volume_bars`].
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ZeroVolumeBars {
    /// Nothing fills on a bar that did not trade.
    #[default]
    Skip,
    /// A bar that did not trade fills whatever meets its prices, without a volume cap.
    Fill,
}

impl Default for ExecutionSpec {
    fn default() -> Self {
        ExecutionSpec {
            order_latency: Span::from_millis(1),
            latency_jitter: None,
            response_latency: Span::from_millis(1),
            maker_fee: 0.0002,
            taker_fee: 0.0008,
            slippage_bps: 1.0,
            queue_power: 2.0,
            seed: 0,
            lot_size: None,
            zero_volume_bars: ZeroVolumeBars::Skip,
            queue_fills: QueueFills::Partial,
            queue_cancels: QueueCancels::Net,
        }
    }
}

impl StrategySpec {
    /// Checks what serde cannot; `buckets` are the job's feature buckets.
    pub fn validate(&self, buckets: &[Span]) -> Result<(), String> {
        if !buckets.contains(&self.bucket) {
            return Err(format!(
                "strategy.bucket = {}: not among features.buckets ({})",
                self.bucket,
                buckets
                    .iter()
                    .map(|b| b.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        if !(self.entry.is_finite() && self.entry > 0.0) {
            return Err("strategy.entry must be positive".into());
        }
        if !(self.exit.is_finite() && self.exit >= 0.0 && self.exit <= self.entry) {
            return Err("strategy.exit must be from 0 to entry".into());
        }
        match &self.sizing {
            Sizing::Fixed { size } if !(size.is_finite() && *size > 0.0) => {
                return Err("strategy.sizing.size must be positive".into());
            }
            Sizing::Kelly {
                fraction,
                max_leverage,
                lot,
                ..
            } => {
                if !(fraction.is_finite() && *fraction > 0.0 && *fraction <= 1.0) {
                    return Err("strategy.sizing.fraction must be in (0, 1]".into());
                }
                if !(max_leverage.is_finite() && *max_leverage > 0.0) {
                    return Err("strategy.sizing.max_leverage must be positive".into());
                }
                if lot.is_some_and(|l| !(l.is_finite() && l > 0.0)) {
                    return Err("strategy.sizing.lot must be positive".into());
                }
            }
            _ => {}
        }
        if let Some(r) = &self.regime {
            if r.names.is_empty() {
                return Err("strategy.regime.names is empty".into());
            }
            if !r.multipliers.is_empty() && r.multipliers.len() != r.names.len() {
                return Err("strategy.regime: give one multiplier per name".into());
            }
            if r.multipliers.iter().any(|m| !(m.is_finite() && *m >= 0.0)) {
                return Err("strategy.regime.multipliers must be non-negative".into());
            }
        }
        Ok(())
    }
}

impl RiskSpec {
    /// Checks the limits.
    pub fn validate(&self) -> Result<(), String> {
        if !(self.capital.is_finite() && self.capital > 0.0) {
            return Err("risk.capital must be positive".into());
        }
        check_drawdowns("risk", self.drawdown_alert, self.drawdown_halt)?;
        if let Some(p) = &self.portfolio {
            check_drawdowns("risk.portfolio", p.drawdown_alert, p.drawdown_halt)?;
        }
        for (name, v) in [
            ("max_position", self.max_position),
            ("max_notional", self.max_notional),
            ("price_band_bps", self.price_band_bps),
        ] {
            if v.is_some_and(|v| !(v.is_finite() && v > 0.0)) {
                return Err(format!("risk.{name} must be positive"));
            }
        }
        Ok(())
    }
}

impl ExecutionSpec {
    /// Checks the simulator's parameters.
    pub fn validate(&self) -> Result<(), String> {
        for (name, v) in [
            ("maker_fee", self.maker_fee),
            ("taker_fee", self.taker_fee),
            ("slippage_bps", self.slippage_bps),
        ] {
            if !v.is_finite() || v.abs() > 0.1 * if name == "slippage_bps" { 1e4 } else { 1.0 } {
                return Err(format!("execution.{name} = {v}: out of range"));
            }
        }
        if self.slippage_bps < 0.0 {
            return Err("execution.slippage_bps must not be negative".into());
        }
        if !(self.queue_power.is_finite() && self.queue_power >= 0.0) {
            return Err("execution.queue_power must not be negative".into());
        }
        if self.lot_size.is_some_and(|l| !(l.is_finite() && l > 0.0)) {
            return Err("execution.lot_size must be positive".into());
        }
        Ok(())
    }
}
