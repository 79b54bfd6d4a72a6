//! Run metrics, accumulated in one pass over a trader's records: PnL, Sharpe, Sortino, drawdown,
//! hit rate, turnover, fill ratio, queue wait, per regime. See [`Metrics`] for the conventions.

use std::collections::BTreeMap;

use flowsense_core::UnixNanos;
use flowsense_core::order::Liquidity;
use flowsense_core::results::{Metrics, TradeRecord};

/// Running moments of a return series (Welford), with the downside sum of squares.
#[derive(Clone, Debug, Default)]
struct Returns {
    n: u64,
    mean: f64,
    m2: f64,
    down_sq: f64,
    pnl: f64,
}

impl Returns {
    fn push(&mut self, r: f64, pnl: f64) {
        self.n += 1;
        let d = r - self.mean;
        self.mean += d / self.n as f64;
        self.m2 += d * (r - self.mean);
        if r < 0.0 {
            self.down_sq += r * r;
        }
        self.pnl += pnl;
    }

    fn sharpe(&self, periods_per_year: f64) -> Option<f64> {
        if self.n < 2 {
            return None;
        }
        let sd = (self.m2 / (self.n - 1) as f64).sqrt();
        (sd > 0.0).then(|| self.mean / sd * periods_per_year.sqrt())
    }

    fn sortino(&self, periods_per_year: f64) -> Option<f64> {
        let dd = (self.down_sq / self.n.max(1) as f64).sqrt();
        (self.n >= 2 && dd > 0.0).then(|| self.mean / dd * periods_per_year.sqrt())
    }
}

/// Accumulates one scope's [`Metrics`] from its records, marks in time order.
///
/// ```
/// use flowsense_core::order::EquityPoint;
/// use flowsense_core::results::TradeRecord;
/// use flowsense_core::{Symbol, UnixNanos};
/// use flowsense_operators::metrics::MetricsBuilder;
/// let mut m = MetricsBuilder::new("ABC", 100.0, 86_400.0);
/// for (day, equity) in [(1, 100.0), (2, 110.0), (3, 99.0), (4, 104.5)] {
///     m.record(&TradeRecord::Equity(EquityPoint { ts: UnixNanos(day * UnixNanos::DAY),
///         symbol: Symbol::new("ABC").unwrap(), equity, position: 0.0, mid: 1.0, fees: 0.0,
///         drawdown: 0.0, signal: 0.0, regime: None }));
/// }
/// let metrics = &m.finish()[0];
/// assert_eq!(metrics.periods, 3); // +10 %, -10 %, +5.56 %
/// assert!((metrics.net_pnl - 4.5).abs() < 1e-9);
/// assert!((metrics.max_drawdown - 0.1).abs() < 1e-9);
/// assert_eq!(metrics.max_drawdown_duration_s, 2.0 * 86_400.0); // below 110 from day 2 to the end
/// assert!(metrics.sharpe.unwrap() > 0.0);
/// ```
#[derive(Clone, Debug)]
pub struct MetricsBuilder {
    scope: String,
    capital: f64,
    periods_per_year: f64,
    /// Equity marks come from `record` (false for a portfolio, marked with `mark`).
    marks_from_records: bool,
    first_ts: Option<i64>,
    last_ts: Option<i64>,
    prev: Option<(f64, Option<String>)>,
    returns: Returns,
    by_regime: BTreeMap<String, Returns>,
    peak: f64,
    peak_ts: i64,
    max_dd: f64,
    max_dd_ns: i64,
    fees: f64,
    traded: f64,
    trips: u64,
    wins: u64,
    orders: u64,
    ordered: f64,
    filled: f64,
    queue_wait_ns: f64,
    queue_waits: u64,
}

impl MetricsBuilder {
    /// A builder for `scope` starting from `capital`, marked every `bucket_seconds`.
    pub fn new(scope: &str, capital: f64, bucket_seconds: f64) -> Self {
        MetricsBuilder {
            scope: scope.to_string(),
            capital,
            periods_per_year: 365.25 * 86_400.0 / bucket_seconds.max(1e-9),
            marks_from_records: true,
            first_ts: None,
            last_ts: None,
            prev: None,
            returns: Returns::default(),
            by_regime: BTreeMap::new(),
            peak: capital,
            peak_ts: i64::MIN,
            max_dd: 0.0,
            max_dd_ns: 0,
            fees: 0.0,
            traded: 0.0,
            trips: 0,
            wins: 0,
            orders: 0,
            ordered: 0.0,
            filled: 0.0,
            queue_wait_ns: 0.0,
            queue_waits: 0,
        }
    }

    /// A builder whose equity comes only from [`MetricsBuilder::mark`] (a portfolio's summed
    /// equity); its records still count orders, fills and trips.
    pub fn portfolio(capital: f64, bucket_seconds: f64) -> Self {
        MetricsBuilder {
            marks_from_records: false,
            ..MetricsBuilder::new("portfolio", capital, bucket_seconds)
        }
    }

    /// Adds another builder's order, fill and trip counts (not its marks): a portfolio's
    /// counts from its symbols'.
    pub fn absorb_counts(&mut self, other: &MetricsBuilder) {
        self.fees += other.fees;
        self.traded += other.traded;
        self.trips += other.trips;
        self.wins += other.wins;
        self.orders += other.orders;
        self.ordered += other.ordered;
        self.filled += other.filled;
        self.queue_wait_ns += other.queue_wait_ns;
        self.queue_waits += other.queue_waits;
    }

    /// Takes one record.
    pub fn record(&mut self, r: &TradeRecord) {
        match r {
            TradeRecord::Equity(e) => {
                if self.marks_from_records {
                    self.mark(e.ts, e.equity, e.regime.as_deref());
                }
            }
            TradeRecord::Fill(f) => {
                self.fees += f.fee;
                self.traded += f.price.as_f64() * f.size.as_f64();
                if f.liquidity == Liquidity::Maker
                    && let Some(w) = f.queue_wait
                {
                    self.queue_wait_ns += w as f64;
                    self.queue_waits += 1;
                }
            }
            TradeRecord::Order(o) => {
                self.orders += 1;
                self.ordered += o.order.size.as_f64();
                self.filled += o.filled.as_f64();
            }
            TradeRecord::Position(p) => {
                if p.closed.is_some() {
                    self.trips += 1;
                    if p.pnl > 0.0 {
                        self.wins += 1;
                    }
                }
            }
            TradeRecord::Risk(_) => {}
        }
    }

    /// Takes one mark of equity at `ts` (in time order), in `regime` if the strategy has regimes.
    /// The return from the previous mark counts towards the regime of the previous mark (the
    /// regime the position was held in).
    pub fn mark(&mut self, ts: UnixNanos, equity: f64, regime: Option<&str>) {
        let ts = ts.0;
        self.first_ts.get_or_insert(ts);
        self.last_ts = Some(ts);
        if let Some((prev, prev_regime)) = &self.prev
            && *prev > 0.0
        {
            let r = equity / prev - 1.0;
            let pnl = equity - prev;
            self.returns.push(r, pnl);
            if let Some(g) = prev_regime {
                self.by_regime.entry(g.clone()).or_default().push(r, pnl);
            }
        }
        if self.peak_ts == i64::MIN {
            self.peak_ts = ts;
        }
        if equity >= self.peak {
            self.peak = equity;
            self.peak_ts = ts;
        } else {
            self.max_dd = self.max_dd.max(1.0 - equity / self.peak);
            self.max_dd_ns = self.max_dd_ns.max(ts - self.peak_ts);
        }
        self.prev = Some((equity, regime.map(str::to_string)));
    }

    /// The scope's metrics, then one row per regime (return figures only).
    pub fn finish(&self) -> Vec<Metrics> {
        let end = self.prev.as_ref().map_or(self.capital, |p| p.0);
        let net = end - self.capital;
        let all = Metrics {
            scope: self.scope.clone(),
            regime: None,
            fold: None,
            params: None,
            ts_from: self.first_ts.map(UnixNanos),
            ts_to: self.last_ts.map(UnixNanos),
            periods: self.returns.n,
            capital: self.capital,
            end_equity: end,
            gross_pnl: net + self.fees,
            fees: self.fees,
            net_pnl: net,
            total_return: net / self.capital,
            sharpe: self.returns.sharpe(self.periods_per_year),
            sortino: self.returns.sortino(self.periods_per_year),
            max_drawdown: self.max_dd,
            max_drawdown_duration_s: self.max_dd_ns as f64 * 1e-9,
            round_trips: self.trips,
            hit_rate: (self.trips > 0).then(|| self.wins as f64 / self.trips as f64),
            turnover: self.traded / self.capital,
            orders: self.orders,
            fill_ratio: (self.ordered > 0.0).then(|| self.filled / self.ordered),
            mean_queue_wait_ms: (self.queue_waits > 0)
                .then(|| self.queue_wait_ns / self.queue_waits as f64 * 1e-6),
        };
        let mut out = Vec::with_capacity(1 + self.by_regime.len());
        for (name, r) in &self.by_regime {
            out.push(Metrics {
                scope: self.scope.clone(),
                regime: Some(name.clone()),
                periods: r.n,
                capital: self.capital,
                net_pnl: r.pnl,
                total_return: r.pnl / self.capital,
                sharpe: r.sharpe(self.periods_per_year),
                sortino: r.sortino(self.periods_per_year),
                ..Default::default()
            });
        }
        out.insert(0, all);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flowsense_core::Symbol;
    use flowsense_core::order::EquityPoint;

    fn point(ts: i64, equity: f64, regime: &str) -> TradeRecord {
        TradeRecord::Equity(EquityPoint {
            ts: UnixNanos(ts),
            symbol: Symbol::new("ABC").unwrap(),
            equity,
            position: 0.0,
            mid: 1.0,
            fees: 0.0,
            drawdown: 0.0,
            signal: 0.0,
            regime: Some(regime.into()),
        })
    }

    #[test]
    fn sharpe_and_sortino_follow_the_stated_convention() {
        // Returns +1 %, -1 %, +2 % per 60 s bucket.
        let mut m = MetricsBuilder::new("ABC", 100.0, 60.0);
        let eq = [100.0, 101.0, 101.0 * 0.99, 101.0 * 0.99 * 1.02];
        let regimes = ["calm", "calm", "wild", "calm"];
        for (i, (e, g)) in eq.iter().zip(regimes).enumerate() {
            m.record(&point(i as i64 * 60_000_000_000, *e, g));
        }
        let rows = m.finish();
        let r = [0.01, -0.01, 0.02];
        let mean = r.iter().sum::<f64>() / 3.0;
        let sd = (r.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / 2.0).sqrt();
        let ppy: f64 = 365.25 * 1440.0;
        assert!((rows[0].sharpe.unwrap() - mean / sd * ppy.sqrt()).abs() < 1e-9);
        let down = (0.01f64.powi(2) / 3.0).sqrt();
        assert!((rows[0].sortino.unwrap() - mean / down * ppy.sqrt()).abs() < 1e-9);
        // Per regime, by the regime at the start of each period: calm had +1 % and -1 %, wild +2 %.
        assert_eq!(rows.len(), 3);
        let calm = rows
            .iter()
            .find(|m| m.regime.as_deref() == Some("calm"))
            .unwrap();
        let wild = rows
            .iter()
            .find(|m| m.regime.as_deref() == Some("wild"))
            .unwrap();
        assert_eq!((calm.periods, wild.periods), (2, 1));
        assert!((wild.net_pnl - 101.0 * 0.99 * 0.02).abs() < 1e-9);
        assert_eq!(wild.sharpe, None, "one return has no deviation");
    }
}
