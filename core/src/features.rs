//! One row of the `features` table: the order-flow features of one symbol over one time bucket
//! (or at one event).
//!
//! The row is the type that crosses from the feature operators to the sinks; the lake schema
//! ([`crate::Table::Features`]) and the JSON lines on stdout are both made from it. Every value is
//! an `f64` computed from exact prices and sizes; `None` is a value that does not exist for the
//! bucket (a VWAP without trades, a return before the symbol's history reaches back).

use serde::{Deserialize, Serialize};

use crate::Symbol;

/// Depth of the per-level arrays (`ofi_levels`, `depth_imbalance_levels`).
pub const MAX_LEVELS: usize = 10;

/// Return horizons, in buckets of the row's own width: `ret_1b`, `ret_10b`, `ret_100b`.
pub const RETURN_HORIZONS: [usize; 3] = [1, 10, 100];

/// Label of per-event rows in the `bucket` column.
pub const EVENT_BUCKET: &str = "event";

/// The features of one symbol over one bucket.
///
/// State features (`mid`, `spread`, `microprice`, depth imbalance, book slope) are the book at the
/// bucket's end. Flow features (`ofi_*`, volumes, counts, rates) sum over the bucket's events.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FeatureRow {
    /// End of the bucket (exclusive), nanoseconds since the epoch, exchange time; the event's
    /// time for per-event rows.
    pub ts: i64,
    /// The symbol.
    pub symbol: Symbol,
    /// The bucket's width as written in the job (`100ms`, `1s`, `1m`), or `event`.
    pub bucket: std::sync::Arc<str>,
    /// Events (book changes and trades) in the bucket.
    pub events: u64,
    /// Best bid at the end.
    pub bid_price: Option<f64>,
    /// Size at the best bid.
    pub bid_size: Option<f64>,
    /// Best ask at the end.
    pub ask_price: Option<f64>,
    /// Size at the best ask.
    pub ask_size: Option<f64>,
    /// (bid + ask) / 2.
    pub mid: Option<f64>,
    /// ask - bid.
    pub spread: Option<f64>,
    /// Best-level imbalance-weighted mid: (bid x ask_size + ask x bid_size) / (bid_size + ask_size).
    pub microprice: Option<f64>,
    /// The same weighting over the top `levels`: each side's size-weighted average price,
    /// weighted by the other side's total size.
    pub weighted_mid: Option<f64>,
    /// Order-flow imbalance at the best level (Cont, Kukanov and Stoikov), summed over the bucket.
    pub ofi_l1: f64,
    /// Multi-level OFI summed over levels 1 to 5 (or `levels` if fewer).
    pub ofi_l5: f64,
    /// Multi-level OFI summed over levels 1 to 10 (or `levels`).
    pub ofi_l10: f64,
    /// OFI of each level separately (level 1 first), for multi-level regressions.
    pub ofi_levels: [f64; MAX_LEVELS],
    /// (bid_size - ask_size) / (bid_size + ask_size) at the best level.
    pub depth_imbalance_l1: Option<f64>,
    /// The same over the summed top 5 levels.
    pub depth_imbalance_l5: Option<f64>,
    /// Depth imbalance of each level (NaN where a side has no such level).
    pub depth_imbalance_levels: [f64; MAX_LEVELS],
    /// Mean of the bid and ask slopes: size over the top `levels` divided by their distance from mid.
    pub book_slope: Option<f64>,
    /// Trades in the bucket.
    pub trade_count: u64,
    /// Events of the bucket after which the book was crossed or locked (best bid at or above
    /// best ask): data that is itself crossed, marked instead of passing as a normal row.
    pub crossed_events: u64,
    /// The book at the bucket's end is crossed or locked.
    pub crossed: bool,
    /// Traded size.
    pub volume: f64,
    /// Size bought by aggressors.
    pub buy_volume: f64,
    /// Size sold by aggressors.
    pub sell_volume: f64,
    /// buy_volume - sell_volume.
    pub signed_volume: f64,
    /// signed_volume / volume.
    pub trade_imbalance: Option<f64>,
    /// Trades per second.
    pub trade_intensity: f64,
    /// Volume-weighted average trade price.
    pub vwap: Option<f64>,
    /// First trade price.
    pub open: Option<f64>,
    /// Highest trade price.
    pub high: Option<f64>,
    /// Lowest trade price.
    pub low: Option<f64>,
    /// Last trade price.
    pub close: Option<f64>,
    /// VPIN at the end: mean |buy - sell| / V over the last `vpin_window` volume buckets of V.
    pub vpin: Option<f64>,
    /// Kyle's lambda: OLS slope of mid changes on signed volume over the last `kyle_window` buckets.
    pub kyle_lambda: Option<f64>,
    /// Realized volatility: square root of the summed squared log mid changes in the bucket.
    pub realized_vol: Option<f64>,
    /// Log mid return over the last bucket.
    pub ret_1b: Option<f64>,
    /// Log mid return over the last 10 buckets.
    pub ret_10b: Option<f64>,
    /// Log mid return over the last 100 buckets.
    pub ret_100b: Option<f64>,
    /// Order additions per second (on L2 data: level increases).
    pub add_rate: f64,
    /// Cancellations and deletions per second (on L2 data: level decreases, executions included).
    pub cancel_rate: f64,
}

impl FeatureRow {
    /// A row with no values yet.
    pub fn empty(symbol: Symbol, ts: i64, bucket: std::sync::Arc<str>) -> FeatureRow {
        FeatureRow {
            ts,
            symbol,
            bucket,
            events: 0,
            bid_price: None,
            bid_size: None,
            ask_price: None,
            ask_size: None,
            mid: None,
            spread: None,
            microprice: None,
            weighted_mid: None,
            ofi_l1: 0.0,
            ofi_l5: 0.0,
            ofi_l10: 0.0,
            ofi_levels: [0.0; MAX_LEVELS],
            depth_imbalance_l1: None,
            depth_imbalance_l5: None,
            depth_imbalance_levels: [f64::NAN; MAX_LEVELS],
            book_slope: None,
            trade_count: 0,
            crossed_events: 0,
            crossed: false,
            volume: 0.0,
            buy_volume: 0.0,
            sell_volume: 0.0,
            signed_volume: 0.0,
            trade_imbalance: None,
            trade_intensity: 0.0,
            vwap: None,
            open: None,
            high: None,
            low: None,
            close: None,
            vpin: None,
            kyle_lambda: None,
            realized_vol: None,
            ret_1b: None,
            ret_10b: None,
            ret_100b: None,
            add_rate: 0.0,
            cancel_rate: 0.0,
        }
    }
}

/// `Option<f64>` columns in schema order, with how to read each from a row.
macro_rules! float_columns {
    ($m:ident) => {
        $m! {
            bid_price, bid_size, ask_price, ask_size, mid, spread, microprice, weighted_mid,
            ofi_l1 = v, ofi_l5 = v, ofi_l10 = v, depth_imbalance_l1, depth_imbalance_l5,
            book_slope, volume = v, buy_volume = v, sell_volume = v, signed_volume = v,
            trade_imbalance, trade_intensity = v, vwap, open, high, low, close, vpin,
            kyle_lambda, realized_vol, ret_1b, ret_10b, ret_100b, add_rate = v, cancel_rate = v
        }
    };
}

macro_rules! float_names {
    ($($name:ident $(= $v:ident)?),* $(,)?) => {
        /// Names of the `Float64` columns, in schema order.
        pub const FLOAT_COLUMNS: &[&str] = &[$(stringify!($name)),*];
        fn float_values(r: &FeatureRow) -> Vec<Option<f64>> {
            vec![$(float_values!(@get r $name $(= $v)?)),*]
        }
        /// Readers of the `Float64` columns, in [`FLOAT_COLUMNS`] order.
        const FLOAT_GETTERS: &[fn(&FeatureRow) -> Option<f64>] =
            &[$(|r: &FeatureRow| float_values!(@get r $name $(= $v)?)),*];
    };
}

macro_rules! float_values {
    (@get $r:ident $name:ident = v) => {
        Some($r.$name)
    };
    (@get $r:ident $name:ident) => {
        $r.$name
    };
}

float_columns!(float_names);

/// A numeric column of a [`FeatureRow`] that expressions (signals, sizing) can read: every
/// `Float64` column of the table by its name, `events` and `trade_count`, and the per-level
/// arrays as `ofi_level_1` .. `ofi_level_10` and `depth_imbalance_level_1` .. `_10`.
///
/// ```
/// use flowsense_core::features::FeatureColumn;
/// use flowsense_core::{FeatureRow, Symbol};
/// let mut row = FeatureRow::empty(Symbol::new("ABC").unwrap(), 0, "1s".into());
/// row.mid = Some(100.5);
/// row.ofi_levels[2] = 4.0;
/// assert_eq!(FeatureColumn::parse("mid").unwrap().read(&row), 100.5);
/// assert_eq!(FeatureColumn::parse("ofi_level_3").unwrap().read(&row), 4.0);
/// assert!(FeatureColumn::parse("vwap").unwrap().read(&row).is_nan()); // no trades: missing
/// assert!(FeatureColumn::parse("fwd_ret").is_none());
/// ```
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum FeatureColumn {
    /// A `Float64` column, by its index in [`FLOAT_COLUMNS`].
    Float(usize),
    /// `events`.
    Events,
    /// `trade_count`.
    TradeCount,
    /// `crossed_events`.
    CrossedEvents,
    /// `crossed`, as 1 or 0.
    Crossed,
    /// `ofi_levels[i]`.
    OfiLevel(usize),
    /// `depth_imbalance_levels[i]`.
    DepthImbalanceLevel(usize),
}

impl FeatureColumn {
    /// The column called `name`, if there is one.
    pub fn parse(name: &str) -> Option<FeatureColumn> {
        if let Some(i) = FLOAT_COLUMNS.iter().position(|c| *c == name) {
            return Some(FeatureColumn::Float(i));
        }
        let level = |rest: &str| {
            rest.parse::<usize>()
                .ok()
                .filter(|l| (1..=MAX_LEVELS).contains(l))
                .map(|l| l - 1)
        };
        match name {
            "events" => Some(FeatureColumn::Events),
            "trade_count" => Some(FeatureColumn::TradeCount),
            "crossed_events" => Some(FeatureColumn::CrossedEvents),
            "crossed" => Some(FeatureColumn::Crossed),
            _ => {
                if let Some(rest) = name.strip_prefix("ofi_level_") {
                    level(rest).map(FeatureColumn::OfiLevel)
                } else if let Some(rest) = name.strip_prefix("depth_imbalance_level_") {
                    level(rest).map(FeatureColumn::DepthImbalanceLevel)
                } else {
                    None
                }
            }
        }
    }

    /// Every column name [`FeatureColumn::parse`] accepts.
    pub fn names() -> Vec<String> {
        let mut v: Vec<String> = FLOAT_COLUMNS.iter().map(|s| s.to_string()).collect();
        v.push("events".into());
        v.push("trade_count".into());
        v.push("crossed_events".into());
        v.push("crossed".into());
        v.extend((1..=MAX_LEVELS).map(|l| format!("ofi_level_{l}")));
        v.extend((1..=MAX_LEVELS).map(|l| format!("depth_imbalance_level_{l}")));
        v
    }

    /// The column's value in `row`; NaN where the row has none.
    pub fn read(self, row: &FeatureRow) -> f64 {
        match self {
            FeatureColumn::Float(i) => FLOAT_GETTERS[i](row).unwrap_or(f64::NAN),
            FeatureColumn::Events => row.events as f64,
            FeatureColumn::TradeCount => row.trade_count as f64,
            FeatureColumn::CrossedEvents => row.crossed_events as f64,
            FeatureColumn::Crossed => f64::from(u8::from(row.crossed)),
            FeatureColumn::OfiLevel(i) => row.ofi_levels[i],
            FeatureColumn::DepthImbalanceLevel(i) => row.depth_imbalance_levels[i],
        }
    }
}

/// The file schema of the `features` table (the partition columns `date` and `symbol` live in
/// the path).
pub(crate) fn schema_fields() -> Vec<arrow::datatypes::Field> {
    use arrow::datatypes::{DataType, Field};
    let list = || {
        DataType::List(std::sync::Arc::new(Field::new(
            "item",
            DataType::Float64,
            true,
        )))
    };
    let mut f = vec![
        Field::new("job", DataType::Utf8, false),
        Field::new("ts", DataType::Int64, false),
        Field::new("bucket", DataType::Utf8, false),
        Field::new("events", DataType::UInt64, false),
        Field::new("trade_count", DataType::UInt64, false),
        Field::new("crossed_events", DataType::UInt64, false),
        Field::new("crossed", DataType::Boolean, false),
    ];
    f.extend(
        FLOAT_COLUMNS
            .iter()
            .map(|n| Field::new(*n, DataType::Float64, true)),
    );
    f.push(Field::new("ofi_levels", list(), false));
    f.push(Field::new("depth_imbalance_levels", list(), false));
    f
}

/// Builds a record batch of the `features` table from rows, keeping the first `levels` entries
/// of the per-level arrays.
///
/// ```
/// use flowsense_core::{FeatureRow, Symbol, Table};
/// let mut row = FeatureRow::empty(Symbol::new("ABC").unwrap(), 1_000, "1s".into());
/// row.mid = Some(100.5);
/// let batch = flowsense_core::features::to_record_batch("job", &[row], 5).unwrap();
/// assert_eq!(batch.schema(), Table::Features.file_schema());
/// assert_eq!(batch.num_rows(), 1);
/// ```
pub fn to_record_batch(
    job: &str,
    rows: &[FeatureRow],
    levels: usize,
) -> Result<arrow::record_batch::RecordBatch, arrow::error::ArrowError> {
    use arrow::array::{
        ArrayRef, BooleanArray, Float64Builder, Int64Array, ListBuilder, StringArray, UInt64Array,
    };
    use std::sync::Arc;
    let levels = levels.clamp(1, MAX_LEVELS);
    let n = rows.len();
    let mut cols: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from_iter_values(std::iter::repeat_n(job, n))),
        Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.ts))),
        Arc::new(StringArray::from_iter_values(
            rows.iter().map(|r| &*r.bucket),
        )),
        Arc::new(UInt64Array::from_iter_values(rows.iter().map(|r| r.events))),
        Arc::new(UInt64Array::from_iter_values(
            rows.iter().map(|r| r.trade_count),
        )),
        Arc::new(UInt64Array::from_iter_values(
            rows.iter().map(|r| r.crossed_events),
        )),
        Arc::new(BooleanArray::from_iter(
            rows.iter().map(|r| Some(r.crossed)),
        )),
    ];
    let mut floats: Vec<Float64Builder> = (0..FLOAT_COLUMNS.len())
        .map(|_| Float64Builder::with_capacity(n))
        .collect();
    for r in rows {
        for (b, v) in floats.iter_mut().zip(float_values(r)) {
            b.append_option(v.filter(|x| !x.is_nan()));
        }
    }
    cols.extend(floats.iter_mut().map(|b| Arc::new(b.finish()) as ArrayRef));
    for get in [
        (|r: &FeatureRow| r.ofi_levels) as fn(&FeatureRow) -> [f64; MAX_LEVELS],
        |r: &FeatureRow| r.depth_imbalance_levels,
    ] {
        let mut b = ListBuilder::with_capacity(Float64Builder::with_capacity(n * levels), n);
        for r in rows {
            for v in &get(r)[..levels] {
                b.values().append_option((!v.is_nan()).then_some(*v));
            }
            b.append(true);
        }
        cols.push(Arc::new(b.finish()));
    }
    arrow::record_batch::RecordBatch::try_new(crate::Table::Features.file_schema(), cols)
}
