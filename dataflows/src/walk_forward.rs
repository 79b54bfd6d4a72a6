//! Walk-forward backtests (`flowsense backtest JOB --walk-forward train=60d,test=7d`): the data
//! range is cut into rolling folds; in each, the strategy's `entry` threshold is chosen on the
//! train window from a grid (by the train window's Sharpe, then net PnL) and then traded, out of
//! sample, on the test window that follows. Folds step by the test length, so the test windows
//! tile the range after the first train window without overlapping.
//!
//! Every test window starts flat with fresh features (the strategy's lags warm up inside the
//! window), its records go into the lake under the run's id, and the `metrics` table gets one row
//! per fold (portfolio and symbols, `fold = k`, `params` saying what was chosen and how it did in
//! training) plus the whole run: the folds' PnL chained end to end.

use std::str::FromStr;

use anyhow::{Context, bail};
use arrow::array::Array;
use flowsense_core::job::{JobSpec, Source, Span, format_instant};
use flowsense_core::results::Metrics;
use flowsense_core::{Lake, UnixNanos};
use flowsense_operators::metrics::MetricsBuilder;
use flowsense_sinks::results::{RunRow, clear_run, write_run};

use crate::backtest::{TradingOptions, TradingReport, run_trading, started_rfc3339};

/// The fold lengths.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct WalkForward {
    /// Train window.
    pub train: Span,
    /// Test window (and the step between folds).
    pub test: Span,
}

impl FromStr for WalkForward {
    type Err = anyhow::Error;

    /// `train=60d,test=7d` (any span: `3m`, `1h`, ...).
    fn from_str(s: &str) -> anyhow::Result<Self> {
        let (mut train, mut test) = (None, None);
        for part in s.split(',') {
            let (k, v) = part
                .split_once('=')
                .with_context(|| format!("--walk-forward {s:?}: write train=60d,test=7d"))?;
            let span: Span = v.trim().parse()?;
            match k.trim() {
                "train" => train = Some(span),
                "test" => test = Some(span),
                other => bail!("--walk-forward: unknown key {other:?} (train, test)"),
            }
        }
        match (train, test) {
            (Some(train), Some(test)) if train.0 > 0 && test.0 > 0 => {
                Ok(WalkForward { train, test })
            }
            _ => bail!("--walk-forward {s:?}: give positive train= and test="),
        }
    }
}

/// One fold's windows, `[start, end)` in nanoseconds.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Fold {
    /// Train window.
    pub train: (i64, i64),
    /// Test window.
    pub test: (i64, i64),
}

impl WalkForward {
    /// The folds over data spanning `[first, last]`: train windows from `first` stepping by
    /// the test length, each followed by its test window, while the test window starts before
    /// `last`; the last test window may be short.
    ///
    /// ```
    /// use flowsense_dataflows::walk_forward::WalkForward;
    /// let wf: WalkForward = "train=3m,test=1m".parse().unwrap();
    /// let min = 60_000_000_000;
    /// let folds = wf.folds(0, 6 * min - 1);
    /// assert_eq!(folds.len(), 3);
    /// assert_eq!(folds[0].train, (0, 3 * min));
    /// assert_eq!(folds[2].test, (5 * min, 6 * min));
    /// ```
    pub fn folds(&self, first: i64, last: i64) -> Vec<Fold> {
        let (train, test) = (self.train.0 as i64, self.test.0 as i64);
        let mut out = Vec::new();
        let mut start = first;
        while start + train <= last {
            let t0 = start + train;
            out.push(Fold {
                train: (start, t0),
                test: (t0, t0 + test),
            });
            start += test;
        }
        out
    }
}

/// The grid of `entry` values tried on each train window: the spec's value times these.
pub const ENTRY_GRID: [f64; 5] = [0.5, 0.75, 1.0, 1.5, 2.0];

fn windowed(spec: &JobSpec, (from, to): (i64, i64)) -> JobSpec {
    let mut s = spec.clone();
    if let Source::Lake(l) = &mut s.source {
        l.from = Some(format_instant(UnixNanos(from)));
        l.to = Some(format_instant(UnixNanos(to)));
    }
    s
}

/// The first and last event time of the job's lake source (within its from/to and symbols).
pub async fn data_span(spec: &JobSpec, lake: &Lake) -> anyhow::Result<(i64, i64)> {
    let Source::Lake(l) = &spec.source else {
        bail!("--walk-forward needs a job reading the lake ([source.lake])");
    };
    let (from, to) = l.range()?;
    let mut conds = Vec::new();
    if let Some(f) = from {
        conds.push(format!("ts >= {}", f.0));
    }
    if let Some(t) = to {
        conds.push(format!("ts < {}", t.0));
    }
    if !spec.symbols.is_empty() {
        let list: Vec<String> = spec
            .symbols
            .iter()
            .map(|s| format!("'{}'", s.replace('\'', "''")))
            .collect();
        conds.push(format!("symbol IN ({})", list.join(", ")));
    }
    let w = if conds.is_empty() {
        String::new()
    } else {
        format!(" WHERE {}", conds.join(" AND "))
    };
    let sql = format!(
        "SELECT min(a), max(b) FROM (\
         SELECT min(ts) a, max(ts) b FROM trades{w} UNION ALL \
         SELECT min(ts), max(ts) FROM depth_updates{w} UNION ALL \
         SELECT min(ts), max(ts) FROM book_events{w})"
    );
    let session = flowsense_sql::LakeSession::open(lake).await?;
    let batches = session.query(&sql).await?;
    let get = |i: usize| -> Option<i64> {
        let b = batches.first()?;
        let c = arrow::compute::cast(b.column(i), &arrow::datatypes::DataType::Int64).ok()?;
        let a = c.as_any().downcast_ref::<arrow::array::Int64Array>()?;
        (!a.is_empty() && !a.is_null(0)).then(|| a.value(0))
    };
    match (get(0), get(1)) {
        (Some(a), Some(b)) => Ok((a, b)),
        _ => bail!("no events in the lake for this job: ingest some first (flowsense ingest)"),
    }
}

/// A training run's score: its Sharpe ratio, per period where the window is too short to
/// annualise (the ranking is the same: annualising multiplies every candidate by one factor),
/// then its net PnL.
/// The flag is true when the Sharpe is per period.
fn score(r: &TradingReport) -> (f64, f64, bool) {
    let m = &r.metrics[0];
    let per_period = match (m.return_mean, m.return_sd) {
        (Some(mean), Some(sd)) if sd > 0.0 => Some(mean / sd),
        _ => None,
    };
    (
        m.sharpe.or(per_period).unwrap_or(f64::NEG_INFINITY),
        m.net_pnl,
        m.sharpe.is_none(),
    )
}

/// What a walk-forward run did.
#[derive(Clone, Debug, Default)]
pub struct WalkForwardReport {
    /// The whole run (chained) first, then per fold: portfolio and symbols.
    pub metrics: Vec<Metrics>,
    /// The folds.
    pub folds: Vec<Fold>,
    /// Events read by the test windows.
    pub events: u64,
    /// Wall seconds.
    pub seconds: f64,
}

/// Runs a walk-forward backtest of `spec` under `run_id`, writing its test windows' records,
/// its row in `runs` and its metrics into the lake.
pub fn run(
    spec: &JobSpec,
    lake: &Lake,
    wf: WalkForward,
    run_id: &str,
    workers: usize,
    rt: &tokio::runtime::Runtime,
) -> anyhow::Result<WalkForwardReport> {
    let strategy = spec
        .strategy
        .as_ref()
        .context("the job has no [strategy] to backtest")?;
    let start = std::time::Instant::now();
    let (first, last) = rt.block_on(data_span(spec, lake))?;
    let folds = wf.folds(first, last);
    if folds.is_empty() {
        bail!(
            "the data spans {:.0} s: too short for one train window of {} and a test window",
            (last - first) as f64 * 1e-9,
            wf.train
        );
    }
    clear_run(lake, run_id).context("removing an earlier run with this id")?;
    let opts = |fold: Option<u32>, write: bool| TradingOptions {
        run: crate::run::RunOptions {
            workers,
            ..Default::default()
        },
        run_id: run_id.to_string(),
        write,
        collect: false,
        paced: false,
        fold,
        progress: false,
    };
    let bucket_seconds = strategy.bucket.seconds();
    let mut report = WalkForwardReport {
        folds: folds.clone(),
        ..Default::default()
    };
    let mut chained: Option<MetricsBuilder> = None;
    let mut chain_end = 0.0;
    let mut fold_rows = Vec::new();
    let mut symbols = std::collections::BTreeSet::new();
    for (k, fold) in folds.iter().enumerate() {
        let k = k as u32;
        // Train: the best entry on the grid.
        let mut best: Option<(f64, (f64, f64, bool))> = None;
        for m in ENTRY_GRID {
            let mut s = windowed(spec, fold.train);
            let entry = strategy.entry * m;
            let st = s.strategy.as_mut().expect("checked above");
            st.entry = entry;
            st.exit = st.exit.min(entry);
            let r = run_trading(&s, lake, &opts(None, false))?;
            let sc = score(&r);
            if best.is_none_or(|(_, b)| sc.0 > b.0 || (sc.0 == b.0 && sc.1 > b.1)) {
                best = Some((entry, sc));
            }
        }
        let (entry, (train_sharpe, train_net, per_period)) = best.expect("the grid is not empty");
        let entry = (entry * 1e9).round() / 1e9;
        // Test, out of sample.
        let mut s = windowed(spec, fold.test);
        let st = s.strategy.as_mut().expect("checked above");
        st.entry = entry;
        st.exit = st.exit.min(entry);
        let r = run_trading(&s, lake, &opts(Some(k), true))?;
        report.events += r.events;
        symbols.extend(r.symbols.iter().cloned());
        let params = format!(
            "entry={entry} (train Sharpe{} {}, net {train_net:.2})",
            if per_period { " per period" } else { "" },
            if train_sharpe.is_finite() {
                format!("{train_sharpe:.2}")
            } else {
                "-".into()
            }
        );
        for mut m in r.metrics.iter().filter(|m| m.regime.is_none()).cloned() {
            m.fold = Some(k);
            m.params = Some(params.clone());
            m.ts_from = Some(UnixNanos(fold.test.0));
            m.ts_to = Some(UnixNanos(fold.test.1));
            fold_rows.push(m);
        }
        // The whole run: each fold's PnL added onto the end of the previous one.
        let c = chained.get_or_insert_with(|| {
            chain_end = r.capital;
            MetricsBuilder::portfolio(r.capital, bucket_seconds)
        });
        let base = chain_end - r.capital;
        for &(ts, eq) in &r.portfolio {
            c.mark(UnixNanos(ts), base + eq, None);
            chain_end = base + eq;
        }
        if let Some(t) = &r.totals {
            c.absorb_counts(t);
        }
    }
    let mut whole = chained.map(|c| c.finish()).unwrap_or_default();
    if let Some(w) = whole.first_mut() {
        w.params = Some(format!(
            "walk-forward train={},test={}: {} folds, entry grid {:?} x {}",
            wf.train,
            wf.test,
            folds.len(),
            ENTRY_GRID,
            strategy.entry
        ));
    }
    report.metrics = whole;
    report.metrics.extend(fold_rows);
    report.seconds = start.elapsed().as_secs_f64();
    let run = RunRow {
        run_id: run_id.to_string(),
        job: spec.name.clone(),
        mode: format!("walk-forward train={},test={}", wf.train, wf.test),
        started: started_rfc3339(),
        data_from: Some(UnixNanos(first)),
        data_to: Some(UnixNanos(last)),
        symbols: symbols.into_iter().collect::<Vec<_>>().join(","),
        events: report.events,
        seconds: report.seconds,
        spec: spec.to_toml(),
        state: Some("finished".into()),
        error: None,
    };
    write_run(lake, &run, &report.metrics).context("writing the run's row and metrics")?;
    Ok(report)
}
