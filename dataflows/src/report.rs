//! `flowsense report RUN_ID [--pdf]`: a run's results, read back from the lake with SQL, as one
//! self-contained HTML page (metrics, plots drawn as inline SVG with `plotters`, risk events,
//! positions, the job spec) and, with `--pdf`, printed to PDF by headless Chromium.
//!
//! Long series are thinned for drawing (the lowest and highest value of each of about 1,500
//! slices of the time axis, so no spike disappears); the tables behind the plots stay whole in
//! the lake.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{ArrowPrimitiveType, DataType, Float64Type, Int64Type};
use flowsense_core::{Lake, UnixNanos};
use flowsense_sql::LakeSession;
use plotters::prelude::*;

/// Points kept per drawn line.
const MAX_POINTS: usize = 1500;
/// Fills drawn per symbol (evenly sampled beyond this).
const MAX_FILLS: usize = 3000;

/// One column of a query's result, cast to a plain type.
struct Columns(Vec<RecordBatch>);

impl Columns {
    fn len(&self) -> usize {
        self.0.iter().map(|b| b.num_rows()).sum()
    }

    fn cast(&self, name: &str, to: &DataType) -> anyhow::Result<Vec<arrow::array::ArrayRef>> {
        self.0
            .iter()
            .map(|b| {
                let c = b
                    .column_by_name(name)
                    .with_context(|| format!("no column {name}"))?;
                Ok(arrow::compute::cast(c, to)?)
            })
            .collect()
    }

    fn prim<T: ArrowPrimitiveType>(&self, name: &str) -> anyhow::Result<Vec<Option<T::Native>>> {
        Ok(self
            .cast(name, &T::DATA_TYPE)?
            .iter()
            .flat_map(|a| a.as_primitive::<T>().iter().collect::<Vec<_>>())
            .collect())
    }

    fn f64(&self, name: &str) -> anyhow::Result<Vec<Option<f64>>> {
        self.prim::<Float64Type>(name)
    }

    fn i64(&self, name: &str) -> anyhow::Result<Vec<Option<i64>>> {
        self.prim::<Int64Type>(name)
    }

    fn str(&self, name: &str) -> anyhow::Result<Vec<Option<String>>> {
        Ok(self
            .cast(name, &DataType::Utf8)?
            .iter()
            .flat_map(|a| {
                let s = a.as_string::<i32>();
                (0..s.len())
                    .map(|i| (!s.is_null(i)).then(|| s.value(i).to_string()))
                    .collect::<Vec<_>>()
            })
            .collect())
    }
}

async fn query(session: &LakeSession, sql: &str) -> anyhow::Result<Columns> {
    Ok(Columns(
        session
            .query(sql)
            .await
            .with_context(|| format!("reading the run: {sql}"))?,
    ))
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn quote(s: &str) -> String {
    s.replace('\'', "''")
}

/// `HH:MM:SS` (UTC) of nanoseconds since the epoch; with the date when `day` is set.
fn clock(ns: i64, day: bool) -> String {
    let t = UnixNanos(ns);
    let s = ns.div_euclid(1_000_000_000).rem_euclid(86_400);
    let hms = format!("{:02}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60);
    if day {
        format!("{} {hms}", t.date_string())
    } else {
        hms
    }
}

/// Keeps the lowest and highest point of each of `MAX_POINTS / 2` slices of the x range.
fn thin(points: &[(f64, f64)]) -> Vec<(f64, f64)> {
    if points.len() <= MAX_POINTS {
        return points.to_vec();
    }
    let (x0, x1) = (points[0].0, points[points.len() - 1].0);
    let slices = MAX_POINTS / 2;
    let width = ((x1 - x0) / slices as f64).max(f64::MIN_POSITIVE);
    let mut out = Vec::with_capacity(MAX_POINTS + 2);
    let mut i = 0;
    while i < points.len() {
        let slice = ((points[i].0 - x0) / width).floor();
        let (mut lo, mut hi) = (i, i);
        let mut j = i;
        while j < points.len() && ((points[j].0 - x0) / width).floor() == slice {
            if points[j].1 < points[lo].1 {
                lo = j;
            }
            if points[j].1 > points[hi].1 {
                hi = j;
            }
            j += 1;
        }
        let (a, b) = if lo <= hi { (lo, hi) } else { (hi, lo) };
        out.push(points[a]);
        if b != a {
            out.push(points[b]);
        }
        i = j;
    }
    out
}

/// A drawn line or set of markers, in time (seconds from the run's start) and value.
struct Series {
    name: String,
    color: RGBColor,
    points: Vec<(f64, f64)>,
    kind: SeriesKind,
}

#[derive(Copy, Clone, PartialEq)]
enum SeriesKind {
    Line,
    Step,
    Area,
    Up,
    Down,
}

const BLUE_: RGBColor = RGBColor(31, 119, 180);
const ORANGE_: RGBColor = RGBColor(255, 127, 14);
const GREEN_: RGBColor = RGBColor(44, 160, 44);
const RED_: RGBColor = RGBColor(214, 39, 40);
const PURPLE_: RGBColor = RGBColor(148, 103, 189);
const GREY_: RGBColor = RGBColor(110, 110, 110);
const PALETTE: [RGBColor; 5] = [BLUE_, ORANGE_, PURPLE_, GREEN_, RED_];

/// Draws a chart as an SVG string. `t0` is the nanosecond time of x = 0, for the labels.
fn chart(title: &str, y_label: &str, t0: i64, series: &[Series]) -> anyhow::Result<String> {
    let all = || series.iter().flat_map(|s| s.points.iter());
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for &(x, y) in all() {
        x0 = x0.min(x);
        x1 = x1.max(x);
        y0 = y0.min(y);
        y1 = y1.max(y);
    }
    if x0 > x1 {
        return Ok(format!(
            "<p class=\"empty\">{}: nothing to draw</p>",
            esc(title)
        ));
    }
    if x1 - x0 < 1e-9 {
        x1 = x0 + 1.0;
    }
    let pad = ((y1 - y0) * 0.05).max(y1.abs() * 1e-6).max(1e-9);
    let (y0, y1) = (y0 - pad, y1 + pad);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (960, 270)).into_drawing_area();
        let e = |e: &dyn std::fmt::Display| anyhow::anyhow!("drawing {title}: {e}");
        root.fill(&WHITE).map_err(|x| e(&x))?;
        let mut c = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 17))
            .margin(10)
            .x_label_area_size(28)
            .y_label_area_size(80)
            .build_cartesian_2d(x0..x1, y0..y1)
            .map_err(|x| e(&x))?;
        c.configure_mesh()
            .x_labels(7)
            .y_labels(6)
            .y_desc(y_label)
            .light_line_style(RGBColor(235, 235, 235))
            .x_label_formatter(&|x| clock(t0 + (*x * 1e9) as i64, false))
            .y_label_formatter(&|y| {
                if y.abs() < 1e-12 {
                    return "0".to_string(); // not "-0.0000"
                }
                let m = y0.abs().max(y1.abs());
                if m >= 1e4 {
                    format!("{y:.0}")
                } else if m >= 10.0 {
                    format!("{y:.2}")
                } else {
                    format!("{y:.4}")
                }
            })
            .draw()
            .map_err(|x| e(&x))?;
        for s in series {
            let style = ShapeStyle::from(&s.color).stroke_width(1);
            let legend = s.color;
            let drawn =
                match s.kind {
                    SeriesKind::Line => c
                        .draw_series(LineSeries::new(thin(&s.points), style))
                        .map_err(|x| e(&x))?,
                    SeriesKind::Step => {
                        let mut pts = Vec::with_capacity(s.points.len() * 2);
                        for w in thin(&s.points).windows(2) {
                            pts.push(w[0]);
                            pts.push((w[1].0, w[0].1));
                        }
                        if let Some(&last) = s.points.last() {
                            pts.push(last);
                        }
                        c.draw_series(LineSeries::new(pts, style))
                            .map_err(|x| e(&x))?
                    }
                    SeriesKind::Area => c
                        .draw_series(
                            AreaSeries::new(thin(&s.points), 0.0, s.color.mix(0.25))
                                .border_style(style),
                        )
                        .map_err(|x| e(&x))?,
                    SeriesKind::Up => c
                        .draw_series(s.points.iter().map(|&p| {
                            TriangleMarker::new(p, 4, ShapeStyle::from(&s.color).filled())
                        }))
                        .map_err(|x| e(&x))?,
                    SeriesKind::Down => c
                        .draw_series(
                            s.points
                                .iter()
                                .map(|&p| Circle::new(p, 3, ShapeStyle::from(&s.color).filled())),
                        )
                        .map_err(|x| e(&x))?,
                };
            drawn.label(s.name.clone()).legend(move |(x, y)| {
                PathElement::new(
                    vec![(x, y), (x + 16, y)],
                    ShapeStyle::from(&legend).stroke_width(3),
                )
            });
        }
        if series.len() > 1 {
            c.configure_series_labels()
                .position(SeriesLabelPosition::UpperLeft)
                .background_style(WHITE.mix(0.85))
                .border_style(RGBColor(200, 200, 200))
                .draw()
                .map_err(|x| e(&x))?;
        }
        root.present().map_err(|x| e(&x))?;
    }
    Ok(svg)
}

/// The report of run `run_id`, as one HTML page.
pub async fn build(lake: &Lake, run_id: &str) -> anyhow::Result<String> {
    let session = LakeSession::open(lake).await?;
    build_in(&session, lake.url().as_str(), run_id).await
}

/// [`build`] on a session already open over the lake at `lake_url` (the service's).
pub async fn build_in(
    session: &LakeSession,
    lake_url: &str,
    run_id: &str,
) -> anyhow::Result<String> {
    let id = quote(run_id);
    let runs = query(
        session,
        &format!("SELECT * FROM runs WHERE run_id = '{id}'"),
    )
    .await?;
    if runs.len() == 0 {
        let known = query(session, "SELECT run_id FROM runs ORDER BY run_id").await?;
        let known: Vec<String> = known.str("run_id")?.into_iter().flatten().collect();
        bail!(
            "no run {run_id:?} in the lake at {lake_url}; runs there: {}",
            if known.is_empty() {
                "none (run flowsense backtest first)".to_string()
            } else {
                known.join(", ")
            }
        );
    }
    let job = runs.str("job")?[0].clone().unwrap_or_default();
    let mode = runs.str("mode")?[0].clone().unwrap_or_default();
    let started = runs.str("started")?[0].clone().unwrap_or_default();
    let symbols = runs.str("symbols")?[0].clone().unwrap_or_default();
    let events = runs.i64("events")?[0].unwrap_or(0);
    let seconds = runs.f64("seconds")?[0].unwrap_or(0.0);
    let spec = runs.str("spec")?[0].clone().unwrap_or_default();

    let metrics = query(
        session,
        &format!(
            "SELECT * FROM metrics WHERE run_id = '{id}' \
             ORDER BY scope <> 'portfolio', scope, regime NULLS FIRST, fold NULLS FIRST"
        ),
    )
    .await?;
    let equity = query(
        session,
        &format!(
            "SELECT symbol, ts, equity, position, mid, drawdown FROM equity \
             WHERE run_id = '{id}' ORDER BY symbol, ts"
        ),
    )
    .await?;
    let fills = query(
        session,
        &format!(
            "SELECT symbol, ts, side, price, size, liquidity FROM fills \
             WHERE run_id = '{id}' ORDER BY symbol, ts"
        ),
    )
    .await?;
    let risk = query(
        session,
        &format!(
            "SELECT symbol, ts, kind, detail FROM risk_events WHERE run_id = '{id}' \
             ORDER BY ts, symbol LIMIT 200"
        ),
    )
    .await?;
    let trips = query(
        session,
        &format!(
            "SELECT symbol, opened, closed, direction, peak_size, avg_open, avg_close, pnl \
             FROM positions WHERE run_id = '{id}' ORDER BY opened, symbol"
        ),
    )
    .await?;

    // Equity by symbol, and the portfolio: each symbol's latest equity summed at every mark.
    let (e_sym, e_ts, e_eq, e_pos, e_mid) = (
        equity.str("symbol")?,
        equity.i64("ts")?,
        equity.f64("equity")?,
        equity.f64("position")?,
        equity.f64("mid")?,
    );
    let t0 = e_ts.iter().flatten().min().copied().unwrap_or(0);
    let x = |ts: i64| (ts - t0) as f64 * 1e-9;
    struct Sym {
        equity: Vec<(f64, f64)>,
        position: Vec<(f64, f64)>,
        mid: Vec<(f64, f64)>,
        buys: Vec<(f64, f64)>,
        sells: Vec<(f64, f64)>,
        fills: usize,
    }
    let mut by_sym: BTreeMap<String, Sym> = BTreeMap::new();
    let mut marks: Vec<(i64, String, f64)> = Vec::with_capacity(e_ts.len());
    for i in 0..e_ts.len() {
        let (Some(s), Some(ts), Some(eq)) = (&e_sym[i], e_ts[i], e_eq[i]) else {
            continue;
        };
        let e = by_sym.entry(s.clone()).or_insert_with(|| Sym {
            equity: Vec::new(),
            position: Vec::new(),
            mid: Vec::new(),
            buys: Vec::new(),
            sells: Vec::new(),
            fills: 0,
        });
        e.equity.push((x(ts), eq));
        e.position.push((x(ts), e_pos[i].unwrap_or(0.0)));
        if let Some(m) = e_mid[i] {
            e.mid.push((x(ts), m));
        }
        marks.push((ts, s.clone(), eq));
    }
    marks.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
    let capital_each = metrics
        .f64("capital")?
        .iter()
        .zip(metrics.str("scope")?)
        .find(|(_, s)| s.as_deref() != Some("portfolio"))
        .and_then(|(c, _)| *c)
        .unwrap_or(0.0);
    let mut last: BTreeMap<&str, f64> = by_sym.keys().map(|k| (k.as_str(), capital_each)).collect();
    let (mut portfolio, mut drawdown) = (Vec::new(), Vec::new());
    let mut peak = f64::MIN;
    let mut i = 0;
    while i < marks.len() {
        let ts = marks[i].0;
        while i < marks.len() && marks[i].0 == ts {
            last.insert(marks[i].1.as_str(), marks[i].2);
            i += 1;
        }
        let total: f64 = last.values().sum();
        peak = peak.max(total);
        portfolio.push((x(ts), total));
        drawdown.push((x(ts), -(1.0 - total / peak) * 100.0));
    }
    let (f_sym, f_ts, f_side, f_px) = (
        fills.str("symbol")?,
        fills.i64("ts")?,
        fills.str("side")?,
        fills.f64("price")?,
    );
    let mut fill_rows: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, s) in f_sym.iter().enumerate() {
        if let Some(s) = s {
            fill_rows.entry(s.as_str()).or_default().push(i);
        }
    }
    for (s, rows) in &fill_rows {
        let Some(e) = by_sym.get_mut(*s) else {
            continue;
        };
        e.fills = rows.len();
        let step = rows.len().div_ceil(MAX_FILLS).max(1);
        for &i in rows.iter().step_by(step) {
            let (Some(ts), Some(px)) = (f_ts[i], f_px[i]) else {
                continue;
            };
            match f_side[i].as_deref() {
                Some("buy") => e.buys.push((x(ts), px)),
                _ => e.sells.push((x(ts), px)),
            }
        }
    }

    // The page.
    let mut h = String::new();
    let (first, last_ts) = (
        e_ts.iter().flatten().min().copied(),
        e_ts.iter().flatten().max().copied(),
    );
    write!(
        h,
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>FlowSense run {rid}</title>\
         <style>{CSS}</style></head><body><h1>Run <code>{rid}</code></h1>\
         <p class=\"meta\">job <b>{job}</b> · {mode} · started {started} · {events} events in \
         {seconds:.2} s · symbols {symbols}<br>data {from} to {to} (UTC)</p>",
        rid = esc(run_id),
        job = esc(&job),
        mode = esc(&mode),
        started = esc(&started),
        symbols = esc(&symbols),
        from = first.map_or("-".into(), |t| clock(t, true)),
        to = last_ts.map_or("-".into(), |t| clock(t, true)),
    )?;

    h.push_str("<h2>Metrics</h2><table><tr>");
    let cols = [
        ("scope", "scope"),
        ("regime", "regime"),
        ("fold", "fold"),
        ("net_pnl", "net PnL"),
        ("gross_pnl", "gross PnL"),
        ("fees", "fees"),
        ("total_return", "return"),
        ("sharpe", "Sharpe"),
        ("sortino", "Sortino"),
        ("max_drawdown", "max DD"),
        ("max_drawdown_duration_s", "DD length"),
        ("round_trips", "trips"),
        ("hit_rate", "hit rate"),
        ("turnover", "turnover"),
        ("orders", "orders"),
        ("fill_ratio", "fill ratio"),
        ("mean_queue_wait_ms", "queue wait"),
    ];
    let params = metrics.str("params")?;
    let with_params = params.iter().any(Option::is_some);
    for (_, label) in cols {
        write!(h, "<th>{label}</th>")?;
    }
    if with_params {
        h.push_str("<th>params</th>");
    }
    h.push_str("</tr>");
    let text_cols: BTreeMap<&str, Vec<Option<String>>> = [
        ("scope", metrics.str("scope")?),
        ("regime", metrics.str("regime")?),
    ]
    .into_iter()
    .collect();
    let fold = metrics.i64("fold")?;
    let mut num: BTreeMap<&str, Vec<Option<f64>>> = BTreeMap::new();
    for (c, _) in cols.iter().skip(3) {
        num.insert(c, metrics.f64(c)?);
    }
    let ratio_note = metrics.str("ratio_note")?;
    let (return_mean, return_sd) = (metrics.f64("return_mean")?, metrics.f64("return_sd")?);
    let periods = metrics.f64("periods")?;
    for r in 0..metrics.len() {
        let portfolio_row = text_cols["scope"][r].as_deref() == Some("portfolio");
        write!(
            h,
            "<tr{}>",
            if portfolio_row {
                " class=\"total\""
            } else {
                ""
            }
        )?;
        for (c, _) in cols {
            let cell = match c {
                "scope" | "regime" => esc(text_cols[c][r].as_deref().unwrap_or("")),
                "fold" => fold[r].map_or(String::new(), |f| f.to_string()),
                // A ratio of too short a sample: no number, its raw per-period figures.
                "sharpe" | "sortino" if ratio_note[r].is_some() => format!(
                    "<span title=\"{}\">n/a (run too short)</span>",
                    esc(ratio_note[r].as_deref().unwrap_or(""))
                ),
                // Regime rows carry return figures only.
                "gross_pnl"
                | "fees"
                | "max_drawdown"
                | "max_drawdown_duration_s"
                | "round_trips"
                | "turnover"
                | "orders"
                    if text_cols["regime"][r].is_some() =>
                {
                    "–".into()
                }
                _ => match num[c][r] {
                    None => "–".into(),
                    Some(v) => match c {
                        "total_return" | "max_drawdown" | "hit_rate" | "fill_ratio" => {
                            format!("{:.3} %", v * 100.0)
                        }
                        "round_trips" | "orders" => format!("{v:.0}"),
                        "max_drawdown_duration_s" => format!("{v:.0} s"),
                        "mean_queue_wait_ms" => format!("{v:.0} ms"),
                        _ => format!("{v:.2}"),
                    },
                },
            };
            write!(h, "<td>{cell}</td>")?;
        }
        if with_params {
            let p = params[r].as_deref().unwrap_or("");
            write!(h, "<td class=\"left\">{}</td>", esc(p))?;
        }
        h.push_str("</tr>");
    }
    h.push_str(
        "</table><p class=\"note\">Returns are simple returns of equity between closes of the \
         strategy's bucket; Sharpe and Sortino are annualised by √(365.25 · 86400 / bucket \
         seconds), zero risk-free rate, and only from at least 30 returns over at least a day \
         of data: a shorter run shows n/a and its raw per-period figures below. Regime rows \
         count each return towards the regime in force when it began. Fees are in the quote \
         currency; the portfolio is the sum of one sleeve of capital per symbol.</p>",
    );
    if let Some(note) = ratio_note.iter().flatten().next() {
        write!(
            h,
            "<p class=\"note\">Sharpe and Sortino: {}. Per-period returns, not annualised:",
            esc(note)
        )?;
        for r in (0..metrics.len()).filter(|&r| ratio_note[r].is_some()) {
            let scope = text_cols["scope"][r].as_deref().unwrap_or("");
            let regime = text_cols["regime"][r]
                .as_deref()
                .map_or(String::new(), |g| format!(" ({g})"));
            let e = |v: Option<f64>| v.map_or("–".to_string(), |v| format!("{v:.3e}"));
            write!(
                h,
                "<br>{}{}: mean {}, sd {} over {} returns",
                esc(scope),
                esc(&regime),
                e(return_mean[r]),
                e(return_sd[r]),
                periods[r].unwrap_or(0.0)
            )?;
        }
        h.push_str("</p>");
    }

    h.push_str("<h2>Portfolio</h2>");
    h.push_str(&chart(
        "Equity (all symbols)",
        "equity",
        t0,
        &[Series {
            name: "equity".into(),
            color: BLUE_,
            points: portfolio,
            kind: SeriesKind::Line,
        }],
    )?);
    h.push_str(&chart(
        "Drawdown",
        "% below peak",
        t0,
        &[Series {
            name: "drawdown".into(),
            color: RED_,
            points: drawdown,
            kind: SeriesKind::Area,
        }],
    )?);
    let equity_lines: Vec<Series> = by_sym
        .iter()
        .enumerate()
        .map(|(i, (s, e))| Series {
            name: s.clone(),
            color: PALETTE[i % PALETTE.len()],
            points: e.equity.clone(),
            kind: SeriesKind::Line,
        })
        .collect();
    h.push_str(&chart("Equity by symbol", "equity", t0, &equity_lines)?);

    for (s, e) in &by_sym {
        write!(h, "<h2>{}</h2>", esc(s))?;
        let shown = e.buys.len() + e.sells.len();
        h.push_str(&chart(
            &format!(
                "Mid and fills ({} fills{})",
                e.fills,
                if shown < e.fills {
                    format!(", {shown} drawn")
                } else {
                    String::new()
                }
            ),
            "price",
            t0,
            &[
                Series {
                    name: "mid".into(),
                    color: GREY_,
                    points: e.mid.clone(),
                    kind: SeriesKind::Line,
                },
                Series {
                    name: "buy fills".into(),
                    color: GREEN_,
                    points: e.buys.clone(),
                    kind: SeriesKind::Up,
                },
                Series {
                    name: "sell fills".into(),
                    color: RED_,
                    points: e.sells.clone(),
                    kind: SeriesKind::Down,
                },
            ],
        )?);
        h.push_str(&chart(
            "Position",
            "size",
            t0,
            &[Series {
                name: "position".into(),
                color: PURPLE_,
                points: e.position.clone(),
                kind: SeriesKind::Step,
            }],
        )?);
    }

    h.push_str("<h2>Risk events</h2>");
    if risk.len() == 0 {
        h.push_str("<p>None.</p>");
    } else {
        h.push_str("<table><tr><th>time</th><th>symbol</th><th>kind</th><th>detail</th></tr>");
        let (sym, ts, kind, detail) = (
            risk.str("symbol")?,
            risk.i64("ts")?,
            risk.str("kind")?,
            risk.str("detail")?,
        );
        for i in 0..risk.len() {
            write!(
                h,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td class=\"left\">{}</td></tr>",
                ts[i].map_or("-".into(), |t| clock(t, false)),
                esc(sym[i].as_deref().unwrap_or("")),
                esc(kind[i].as_deref().unwrap_or("")),
                esc(detail[i].as_deref().unwrap_or(""))
            )?;
        }
        h.push_str("</table>");
    }

    write!(h, "<h2>Positions ({})</h2>", trips.len())?;
    if trips.len() > 0 {
        h.push_str(
            "<table><tr><th>symbol</th><th>opened</th><th>closed</th><th>side</th>\
             <th>peak size</th><th>avg open</th><th>avg close</th><th>PnL</th></tr>",
        );
        let (sym, opened, closed, dir) = (
            trips.str("symbol")?,
            trips.i64("opened")?,
            trips.i64("closed")?,
            trips.i64("direction")?,
        );
        let (peak, avg_open, avg_close, pnl) = (
            trips.f64("peak_size")?,
            trips.f64("avg_open")?,
            trips.f64("avg_close")?,
            trips.f64("pnl")?,
        );
        let num = |v: Option<f64>| v.map_or("–".to_string(), |v| format!("{v}"));
        for i in 0..trips.len().min(200) {
            let p = pnl[i].unwrap_or(0.0);
            write!(
                h,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>\
                 <td class=\"{}\">{p:.2}</td></tr>",
                esc(sym[i].as_deref().unwrap_or("")),
                opened[i].map_or("-".into(), |t| clock(t, false)),
                closed[i].map_or("open".into(), |t| clock(t, false)),
                if dir[i] == Some(1) { "long" } else { "short" },
                num(peak[i]),
                num(avg_open[i].map(|v| (v * 1e4).round() / 1e4)),
                num(avg_close[i].map(|v| (v * 1e4).round() / 1e4)),
                if p >= 0.0 { "pos" } else { "neg" },
            )?;
        }
        h.push_str("</table>");
        if trips.len() > 200 {
            write!(
                h,
                "<p class=\"note\">First 200 of {}: SELECT * FROM positions WHERE run_id = '{}'</p>",
                trips.len(),
                esc(&id)
            )?;
        }
    }
    write!(
        h,
        "<h2>Job</h2><pre>{}</pre><p class=\"note\">Every figure above comes from the lake: \
         <code>flowsense sql \"SELECT * FROM metrics WHERE run_id = '{}'\"</code> (and the \
         orders, fills, equity, risk_events and positions tables).</p></body></html>",
        esc(&spec),
        esc(&id)
    )?;
    Ok(h)
}

const CSS: &str = "body{font-family:system-ui,sans-serif;margin:24px auto;max-width:1000px;\
color:#222}h1{font-size:22px}h2{font-size:18px;margin-top:28px;border-bottom:1px solid #ddd}\
.meta{color:#555}table{border-collapse:collapse;font-size:12px;margin:8px 0}\
th,td{border:1px solid #ddd;padding:3px 6px;text-align:right}th{background:#f4f4f4}\
td.left{text-align:left}tr.total{font-weight:bold}td.pos{color:#1a7f1a}td.neg{color:#b00}\
.note{color:#666;font-size:12px}pre{background:#f7f7f7;padding:10px;font-size:12px}\
svg{display:block;margin:6px 0}@media print{h2{page-break-after:avoid}svg{page-break-inside:avoid}}";

/// Finds a Chromium or Chrome to print with: `$FLOWSENSE_CHROMIUM`, then the usual names.
pub fn find_chromium() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("FLOWSENSE_CHROMIUM") {
        return Some(PathBuf::from(p));
    }
    let path = std::env::var_os("PATH")?;
    for dir in std::env::split_paths(&path) {
        for name in ["chromium", "chromium-browser", "google-chrome", "chrome"] {
            let p = dir.join(name);
            if p.is_file() {
                return Some(p);
            }
        }
    }
    None
}

/// Prints `html` (a file) to `pdf` with headless Chromium.
pub fn print_pdf(chromium: &Path, html: &Path, pdf: &Path) -> anyhow::Result<()> {
    let html = html
        .canonicalize()
        .with_context(|| format!("{}", html.display()))?;
    let profile = tempfile::tempdir()?;
    let out = std::process::Command::new(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--no-first-run",
            "--no-pdf-header-footer",
            "--run-all-compositor-stages-before-draw",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(format!("--print-to-pdf={}", pdf.display()))
        .arg(format!("file://{}", html.display()))
        .output()
        .with_context(|| format!("starting {}", chromium.display()))?;
    let ok = pdf.metadata().is_ok_and(|m| m.len() > 0);
    if !out.status.success() || !ok {
        bail!(
            "{} could not print {}: {}",
            chromium.display(),
            html.display(),
            String::from_utf8_lossy(&out.stderr)
                .lines()
                .rev()
                .take(5)
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
    Ok(())
}
