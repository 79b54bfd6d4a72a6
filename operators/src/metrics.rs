//! Run metrics, accumulated in one pass over a trader's records: PnL, Sharpe, Sortino, drawdown,
//! hit rate, turnover, fill ratio, queue wait, per regime. See [`Metrics`] for the conventions.

use std::collections::BTreeMap;

use flowsense_core::UnixNanos;
use flowsense_core::order::Liquidity;
use flowsense_core::results::{Metrics, TradeRecord};

/// Running moments of a return series (Welford), with the downside sum of squares.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
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

    /// The per-period mean and sample deviation, raw (not annualised).
    fn moments(&self) -> (Option<f64>, Option<f64>) {
        let mean = (self.n >= 1).then_some(self.mean);
        let sd = (self.n >= 2).then(|| (self.m2 / (self.n - 1) as f64).sqrt());
        (mean, sd)
    }
}

/// Returns a Sharpe or Sortino ratio is annualised from, at the least: fewer say nothing.
pub const MIN_RATIO_PERIODS: u64 = 30;
/// Data a Sharpe or Sortino ratio is annualised from, at the least (a day, in nanoseconds).
pub const MIN_RATIO_SPAN_NS: i64 = flowsense_core::UnixNanos::DAY;

/// Why a sample of `periods` returns over `span_ns` of data is too short to annualise, or
/// `None` when it is long enough (at least [`MIN_RATIO_PERIODS`] returns over at least
/// [`MIN_RATIO_SPAN_NS`]). An annualised ratio from a few hundred one-second returns (thousands
/// in magnitude, either sign) means nothing; the raw per-period mean and deviation are given
/// instead.
///
/// ```
/// use flowsense_operators::metrics::too_short;
/// use flowsense_core::UnixNanos;
/// assert!(too_short(180, 180 * 1_000_000_000).unwrap().starts_with("n/a (run too short"));
/// assert_eq!(too_short(30, UnixNanos::DAY), None);
/// assert!(too_short(29, 30 * UnixNanos::DAY).is_some());
/// ```
pub fn too_short(periods: u64, span_ns: i64) -> Option<String> {
    if periods >= MIN_RATIO_PERIODS && span_ns >= MIN_RATIO_SPAN_NS {
        return None;
    }
    Some(format!(
        "n/a (run too short: {periods} returns over {}; Sharpe and Sortino are annualised from \
         at least {MIN_RATIO_PERIODS} returns over at least a day)",
        span_text(span_ns)
    ))
}

/// A span as `2d 3h`, `4h 5m`, `3m 0s` or `12.5 s`.
fn span_text(ns: i64) -> String {
    let s = ns.max(0) / 1_000_000_000;
    let (d, h, m) = (s / 86_400, s / 3_600 % 24, s / 60 % 60);
    if d > 0 {
        format!("{d}d {h}h")
    } else if h > 0 {
        format!("{h}h {m}m")
    } else if m > 0 {
        format!("{m}m {}s", s % 60)
    } else {
        format!("{:.1} s", ns.max(0) as f64 * 1e-9)
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
/// // Three returns are too few to annualise: no Sharpe ratio, the raw figures instead.
/// assert_eq!(metrics.sharpe, None);
/// assert!(metrics.ratio_note.as_deref().unwrap().starts_with("n/a (run too short: 3 returns"));
/// assert!(metrics.return_mean.unwrap() > 0.0);
/// ```
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
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
    ///
    /// Sharpe and Sortino are annualised only from a long enough sample ([`too_short`]): the
    /// whole run's span, and the row's own number of returns; otherwise they are absent and
    /// `ratio_note` says why, beside the raw per-period `return_mean` and `return_sd`.
    pub fn finish(&self) -> Vec<Metrics> {
        let end = self.prev.as_ref().map_or(self.capital, |p| p.0);
        let net = end - self.capital;
        let span = match (self.first_ts, self.last_ts) {
            (Some(a), Some(b)) => b - a,
            _ => 0,
        };
        let ratios = |r: &Returns| {
            let note = too_short(r.n, span);
            let (sharpe, sortino) = if note.is_none() {
                (
                    r.sharpe(self.periods_per_year),
                    r.sortino(self.periods_per_year),
                )
            } else {
                (None, None)
            };
            let (mean, sd) = r.moments();
            (sharpe, sortino, mean, sd, note)
        };
        let (sharpe, sortino, return_mean, return_sd, ratio_note) = ratios(&self.returns);
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
            sharpe,
            sortino,
            return_mean,
            return_sd,
            ratio_note,
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
            let (sharpe, sortino, return_mean, return_sd, ratio_note) = ratios(r);
            out.push(Metrics {
                scope: self.scope.clone(),
                regime: Some(name.clone()),
                periods: r.n,
                capital: self.capital,
                net_pnl: r.pnl,
                total_return: r.pnl / self.capital,
                sharpe,
                sortino,
                return_mean,
                return_sd,
                ratio_note,
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
        // Returns +1 %, -1 %, +2 %, ... per hourly bucket, 36 of them over 36 hours.
        let mut m = MetricsBuilder::new("ABC", 100.0, 3600.0);
        let cycle = [0.01, -0.01, 0.02];
        let r: Vec<f64> = (0..36).map(|i| cycle[i % 3]).collect();
        let mut e = 100.0;
        m.record(&point(0, e, "calm"));
        for (i, x) in r.iter().enumerate() {
            e *= 1.0 + x;
            m.record(&point((i as i64 + 1) * 3_600_000_000_000, e, "calm"));
        }
        let rows = m.finish();
        let n = r.len() as f64;
        let mean = r.iter().sum::<f64>() / n;
        let sd = (r.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt();
        let ppy: f64 = 365.25 * 24.0;
        assert_eq!(rows[0].ratio_note, None);
        assert!((rows[0].sharpe.unwrap() - mean / sd * ppy.sqrt()).abs() < 1e-9);
        let down = (12.0 * 0.01f64.powi(2) / n).sqrt();
        assert!((rows[0].sortino.unwrap() - mean / down * ppy.sqrt()).abs() < 1e-9);
        assert!((rows[0].return_mean.unwrap() - mean).abs() < 1e-12);
        assert!((rows[0].return_sd.unwrap() - sd).abs() < 1e-12);
    }

    #[test]
    fn regimes_count_each_return_towards_the_regime_it_began_in() {
        // Returns +1 %, -1 %, +2 % per 60 s bucket.
        let mut m = MetricsBuilder::new("ABC", 100.0, 60.0);
        let eq = [100.0, 101.0, 101.0 * 0.99, 101.0 * 0.99 * 1.02];
        let regimes = ["calm", "calm", "wild", "calm"];
        for (i, (e, g)) in eq.iter().zip(regimes).enumerate() {
            m.record(&point(i as i64 * 60_000_000_000, *e, g));
        }
        let rows = m.finish();
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
        // Three minutes of data: no ratio, the raw figures instead.
        for row in &rows {
            assert_eq!((row.sharpe, row.sortino), (None, None));
            assert!(
                row.ratio_note
                    .as_deref()
                    .unwrap()
                    .starts_with("n/a (run too short")
            );
        }
        assert!((calm.return_mean.unwrap() - 0.0).abs() < 1e-12);
        assert_eq!(wild.return_sd, None, "one return has no deviation");
    }

    /// Marks every `step` ns, `n` returns in all.
    fn run(n: i64, step: i64) -> Metrics {
        let mut m = MetricsBuilder::new("ABC", 100.0, step as f64 * 1e-9);
        for i in 0..=n {
            let e = if i % 2 == 0 { 100.0 } else { 101.0 };
            m.record(&point(i * step, e, "calm"));
        }
        m.finish().remove(0)
    }

    #[test]
    fn ratios_need_thirty_returns_over_a_day() {
        let day = UnixNanos::DAY;
        // 30 returns over exactly a day: annualised.
        let ok = run(30, day / 30);
        assert!(ok.sharpe.is_some() && ok.ratio_note.is_none());
        // 30 returns over a day less 30 ns: too short a span.
        let short = run(30, day / 30 - 1);
        assert_eq!(short.sharpe, None);
        assert!(
            short
                .ratio_note
                .unwrap()
                .contains("30 returns over 23h 59m")
        );
        // 29 daily returns: a month of data, too few returns.
        let few = run(29, day);
        assert_eq!((few.sharpe, few.sortino), (None, None));
        assert!(few.ratio_note.unwrap().contains("29 returns over 29d 0h"));
        assert_eq!(few.periods, 29);
        assert!(few.return_mean.is_some() && few.return_sd.is_some());
        // 30 daily returns.
        assert!(run(30, day).sharpe.is_some());
    }
}
