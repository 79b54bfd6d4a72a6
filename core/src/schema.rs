//! The lake's tables and their Arrow schemas, defined once for writers, readers and SQL.
//!
//! Layout: `<lake>/<table>/date=YYYY-MM-DD/symbol=SYM/<part>.parquet` for partitioned tables.
//! The partition columns `date` and `symbol` live only in the path (Hive style), so DuckDB
//! (`hive_partitioning = true`), Polars (`hive_partitioning=True`) and DataFusion all read them as
//! columns, and the file schemas below do not repeat them.

use std::sync::{Arc, OnceLock};

use arrow::datatypes::{DataType, Field, Schema, SchemaRef};

/// Arrow type of every price and size column in the lake: `Float64`.
///
/// In memory prices and sizes are exact fixed point ([`crate::Price`]). In the lake they are
/// doubles because that is what every tool a quant reaches for computes with (DuckDB, Polars,
/// DataFusion aggregate `Float64` several times faster than `Decimal128`, and `sum(price * size) /
/// sum(size)` on `Decimal128(18, 9)` overflows DataFusion's decimal arithmetic). Nothing is lost:
/// a double holds every decimal of up to 15 significant digits exactly enough to round-trip, so
/// rounding a stored value to the nearest billionth gives back the exact fixed-point number; every
/// venue we read quotes far fewer digits.
pub const PRICE_TYPE: DataType = DataType::Float64;

/// How a table's files are laid out.
#[derive(Copy, Clone, PartialEq, Eq, Debug)]
pub enum Partitioning {
    /// `date=YYYY-MM-DD/symbol=SYM/`.
    DateSymbol,
    /// Files directly under the table folder.
    None,
}

/// Every table of the lake.
#[derive(Copy, Clone, PartialEq, Eq, Hash, Debug, PartialOrd, Ord)]
pub enum Table {
    /// L3 order messages.
    BookEvents,
    /// L2 level changes (one row per changed level of a diff or snapshot).
    DepthUpdates,
    /// Trades.
    Trades,
    /// The reconstructed top of book after every book event.
    Bbo,
    /// The venue's own top-of-book messages (Binance bookTicker).
    Quotes,
    /// OHLCV bars.
    Bars,
    /// Order-flow features per symbol per bucket (and per event), written by jobs.
    Features,
    /// Refused rows.
    DeadLetters,
    /// Per-operator figures of each job's graph (one file per job and worker).
    Operators,
    /// Per-channel figures of each job's graph.
    Channels,
    /// Orders a backtest or paper run sent, with the decision behind each and how it ended. The
    /// tables of a run's records are not partitioned: a run writes one file per table and
    /// worker (and walk-forward fold), named for its run id, and carries `symbol` in the file.
    Orders,
    /// Executions of those orders.
    Fills,
    /// The account at every close of the strategy's bucket: equity, position, drawdown, signal.
    Equity,
    /// Drawdown alerts, halts, refused and clipped orders.
    RiskEvents,
    /// Positions from flat to flat (round trips), with their prices and profit or loss.
    Positions,
    /// One row per backtest or paper run.
    Runs,
    /// A run's metrics: the portfolio, each symbol, each regime, each walk-forward fold.
    Metrics,
}

impl Table {
    /// Every table.
    pub const ALL: [Table; 17] = [
        Table::BookEvents,
        Table::DepthUpdates,
        Table::Trades,
        Table::Bbo,
        Table::Quotes,
        Table::Bars,
        Table::Features,
        Table::DeadLetters,
        Table::Operators,
        Table::Channels,
        Table::Orders,
        Table::Fills,
        Table::Equity,
        Table::RiskEvents,
        Table::Positions,
        Table::Runs,
        Table::Metrics,
    ];

    /// The tables a trading run writes, each row carrying its `run_id`.
    pub const RUN_TABLES: [Table; 7] = [
        Table::Orders,
        Table::Fills,
        Table::Equity,
        Table::RiskEvents,
        Table::Positions,
        Table::Runs,
        Table::Metrics,
    ];

    /// The table's name, also its folder in the lake.
    ///
    /// ```
    /// use flowsense_core::Table;
    /// assert_eq!(Table::DeadLetters.name(), "dead_letters");
    /// ```
    pub const fn name(self) -> &'static str {
        match self {
            Table::BookEvents => "book_events",
            Table::DepthUpdates => "depth_updates",
            Table::Trades => "trades",
            Table::Bbo => "bbo",
            Table::Quotes => "quotes",
            Table::Bars => "bars",
            Table::Features => "features",
            Table::DeadLetters => "dead_letters",
            Table::Operators => "flowsense_operators",
            Table::Channels => "flowsense_channels",
            Table::Orders => "orders",
            Table::Fills => "fills",
            Table::Equity => "equity",
            Table::RiskEvents => "risk_events",
            Table::Positions => "positions",
            Table::Runs => "runs",
            Table::Metrics => "metrics",
        }
    }

    /// The table by name.
    pub fn from_name(name: &str) -> Option<Table> {
        Table::ALL.into_iter().find(|t| t.name() == name)
    }

    /// How its files are laid out.
    pub const fn partitioning(self) -> Partitioning {
        match self {
            Table::DeadLetters
            | Table::Operators
            | Table::Channels
            | Table::Orders
            | Table::Fills
            | Table::Equity
            | Table::RiskEvents
            | Table::Positions
            | Table::Runs
            | Table::Metrics => Partitioning::None,
            _ => Partitioning::DateSymbol,
        }
    }

    /// The schema stored in each file (without the path's partition columns).
    pub fn file_schema(self) -> SchemaRef {
        static SCHEMAS: OnceLock<Vec<SchemaRef>> = OnceLock::new();
        let all = SCHEMAS.get_or_init(|| Table::ALL.iter().map(|t| Arc::new(t.build())).collect());
        all[self as usize].clone()
    }

    /// The partition columns, in path order, all `Utf8`.
    pub const fn partition_columns(self) -> &'static [&'static str] {
        match self.partitioning() {
            Partitioning::DateSymbol => &["date", "symbol"],
            Partitioning::None => &[],
        }
    }

    fn build(self) -> Schema {
        let ts = || Field::new("ts", DataType::Int64, false);
        let local_ts = || Field::new("local_ts", DataType::Int64, true);
        let price = |n: &str, null| Field::new(n, PRICE_TYPE, null);
        let side = || Field::new("side", DataType::Utf8, false);
        let run_id = || Field::new("run_id", DataType::Utf8, false);
        let f64n = |n: &str| Field::new(n, DataType::Float64, true);
        let fields = match self {
            Table::BookEvents => vec![
                ts(),
                local_ts(),
                Field::new("seq", DataType::UInt64, false),
                Field::new("action", DataType::Utf8, false),
                Field::new("order_id", DataType::UInt64, false),
                side(),
                price("price", false),
                price("size", false),
            ],
            Table::DepthUpdates => vec![
                ts(),
                local_ts(),
                Field::new("first_update_id", DataType::UInt64, false),
                Field::new("final_update_id", DataType::UInt64, false),
                side(),
                price("price", false),
                price("size", false),
                Field::new("is_snapshot", DataType::Boolean, false),
            ],
            Table::Trades => vec![
                ts(),
                local_ts(),
                Field::new("trade_id", DataType::UInt64, true),
                price("price", false),
                price("size", false),
                side(),
            ],
            Table::Bbo => vec![
                ts(),
                local_ts(),
                Field::new("update_id", DataType::UInt64, true),
                price("bid_price", true),
                price("bid_size", true),
                price("ask_price", true),
                price("ask_size", true),
                Field::new("gap", DataType::Boolean, false),
            ],
            Table::Quotes => vec![
                Field::new("ts", DataType::Int64, true),
                local_ts(),
                Field::new("update_id", DataType::UInt64, true),
                price("bid_price", true),
                price("bid_size", true),
                price("ask_price", true),
                price("ask_size", true),
            ],
            Table::Bars => vec![
                ts(),
                Field::new("interval", DataType::Utf8, false),
                price("open", false),
                price("high", false),
                price("low", false),
                price("close", false),
                price("volume", false),
                Field::new("trades", DataType::UInt64, true),
            ],
            Table::Features => crate::features::schema_fields(),
            Table::Operators => {
                let u = |n: &str| Field::new(n, DataType::UInt64, false);
                let s = |n: &str| Field::new(n, DataType::Utf8, false);
                vec![
                    s("job"),
                    u("worker"),
                    u("id"),
                    s("addr"),
                    s("name"),
                    u("schedules"),
                    u("busy_ns"),
                    u("records_in"),
                    u("records_out"),
                    u("messages_in"),
                    u("messages_out"),
                    Field::new("frontier_lag_ns", DataType::Int64, true),
                ]
            }
            Table::Channels => {
                let u = |n: &str| Field::new(n, DataType::UInt64, false);
                let s = |n: &str| Field::new(n, DataType::Utf8, false);
                vec![
                    s("job"),
                    u("worker"),
                    u("id"),
                    s("source"),
                    s("target"),
                    s("type"),
                    u("messages_sent"),
                    u("records_sent"),
                    u("messages_received"),
                    u("records_received"),
                ]
            }
            Table::DeadLetters => vec![
                Field::new("source", DataType::Utf8, false),
                Field::new("position", DataType::Utf8, false),
                Field::new("reason", DataType::Utf8, false),
                Field::new("raw", DataType::Utf8, false),
            ],
            Table::Orders => vec![
                run_id(),
                Field::new("symbol", DataType::Utf8, false),
                ts(),
                Field::new("order_id", DataType::Utf8, false),
                side(),
                Field::new("kind", DataType::Utf8, false),
                price("price", true),
                price("size", false),
                price("filled", false),
                Field::new("status", DataType::Utf8, false),
                Field::new("reject_reason", DataType::Utf8, true),
                Field::new("reason", DataType::Utf8, false),
                f64n("signal"),
                f64n("target"),
            ],
            Table::Fills => vec![
                run_id(),
                Field::new("symbol", DataType::Utf8, false),
                ts(),
                Field::new("order_id", DataType::Utf8, false),
                side(),
                price("price", false),
                price("size", false),
                f64n("fee"),
                Field::new("liquidity", DataType::Utf8, false),
                Field::new("queue_wait_ns", DataType::Int64, true),
            ],
            Table::Equity => vec![
                run_id(),
                Field::new("symbol", DataType::Utf8, false),
                ts(),
                f64n("equity"),
                f64n("position"),
                f64n("mid"),
                f64n("fees"),
                f64n("drawdown"),
                f64n("signal"),
                Field::new("regime", DataType::Utf8, true),
            ],
            Table::RiskEvents => vec![
                run_id(),
                Field::new("symbol", DataType::Utf8, false),
                ts(),
                Field::new("kind", DataType::Utf8, false),
                Field::new("detail", DataType::Utf8, false),
            ],
            Table::Positions => vec![
                run_id(),
                Field::new("symbol", DataType::Utf8, false),
                ts(),
                Field::new("opened", DataType::Int64, false),
                Field::new("closed", DataType::Int64, true),
                Field::new("status", DataType::Utf8, false),
                Field::new("direction", DataType::Int8, false),
                f64n("peak_size"),
                f64n("avg_open"),
                f64n("avg_close"),
                f64n("pnl"),
            ],
            Table::Runs => vec![
                run_id(),
                Field::new("job", DataType::Utf8, false),
                Field::new("mode", DataType::Utf8, false),
                Field::new("started", DataType::Utf8, false),
                Field::new("data_from", DataType::Int64, true),
                Field::new("data_to", DataType::Int64, true),
                Field::new("symbols", DataType::Utf8, false),
                Field::new("events", DataType::UInt64, false),
                f64n("seconds"),
                Field::new("spec", DataType::Utf8, false),
                Field::new("state", DataType::Utf8, true),
                Field::new("error", DataType::Utf8, true),
            ],
            Table::Metrics => {
                let n = |name: &str| Field::new(name, DataType::Float64, true);
                let u = |name: &str| Field::new(name, DataType::UInt64, true);
                vec![
                    run_id(),
                    Field::new("scope", DataType::Utf8, false),
                    Field::new("regime", DataType::Utf8, true),
                    Field::new("fold", DataType::UInt32, true),
                    Field::new("params", DataType::Utf8, true),
                    Field::new("ts_from", DataType::Int64, true),
                    Field::new("ts_to", DataType::Int64, true),
                    u("periods"),
                    n("capital"),
                    n("end_equity"),
                    n("gross_pnl"),
                    n("fees"),
                    n("net_pnl"),
                    n("total_return"),
                    n("sharpe"),
                    n("sortino"),
                    n("return_mean"),
                    n("return_sd"),
                    Field::new("ratio_note", DataType::Utf8, true),
                    n("max_drawdown"),
                    n("max_drawdown_duration_s"),
                    u("round_trips"),
                    n("hit_rate"),
                    n("turnover"),
                    u("orders"),
                    n("fill_ratio"),
                    n("mean_queue_wait_ms"),
                ]
            }
        };
        Schema::new(fields)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_table_has_a_schema_and_round_trips_its_name() {
        for t in Table::ALL {
            assert!(!t.file_schema().fields().is_empty());
            assert_eq!(Table::from_name(t.name()), Some(t));
            for p in t.partition_columns() {
                assert!(
                    t.file_schema().field_with_name(p).is_err(),
                    "{p} is in the path only"
                );
            }
        }
    }
}
