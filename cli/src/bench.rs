//! `flowsense bench`: the front of the whole-process benchmarks in `flowsense-bench`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;
use flowsense_bench::market_making::MarketMaking;
use flowsense_core::job::Span;
use flowsense_core::strategy::{ExecutionSpec, QueueCancels, QueueFills};
use flowsense_sinks::{Lake, S3Options};

/// Benchmarks.
#[derive(Subcommand, Debug)]
pub enum BenchCommand {
    /// Binance capture ingest end to end, beside gzip alone and gzip + JSON parsing alone.
    Ingest {
        /// Capture files or folders (default: the bundled data/binance).
        inputs: Vec<PathBuf>,
        /// Runs per stage; the median is reported.
        #[arg(long, default_value_t = 5)]
        repeat: usize,
    },
    /// Synthetic generation and lake writes, each beside the stage before it.
    Synth {
        /// Symbols.
        #[arg(long, default_value_t = 2)]
        symbols: usize,
        /// Mean messages per symbol-day.
        #[arg(long, default_value_t = 1_000_000)]
        events_per_day: u64,
        /// Runs per stage; the median is reported.
        #[arg(long, default_value_t = 3)]
        repeat: usize,
    },
    /// The feature graph: batch throughput from a lake with 1 and 2 workers, and per-event
    /// latency in replay, each beside a plain single-threaded loop over the same engine.
    Graph {
        /// The lake to read (make one with `flowsense synth`).
        #[arg(long, env = "FLOWSENSE_LAKE", default_value = "./lake")]
        lake: String,
        /// Runs per stage; the median is reported.
        #[arg(long, default_value_t = 3)]
        repeat: usize,
        /// Events held in memory for the in-memory stages and the latency run.
        #[arg(long, default_value_t = 5_000_000)]
        memory_events: usize,
        /// Bucket widths, comma-separated.
        #[arg(long, default_value = "100ms,1s,10s,1m", value_delimiter = ',')]
        buckets: Vec<String>,
    },
    /// Backtests over the synthetic market (generated on the fly), beside the source alone and
    /// the feature graph alone; prints the peak memory.
    Backtest {
        /// Total events (ten symbols at 10 M a day is 100 M).
        #[arg(long, default_value_t = 10_000_000)]
        events: u64,
        /// Symbols.
        #[arg(long, default_value_t = 10)]
        symbols: usize,
        /// Worker threads of the graph stages.
        #[arg(short = 'w', long, default_value_t = 2)]
        workers: usize,
        /// Runs per stage; the median is reported.
        #[arg(long, default_value_t = 1)]
        repeat: usize,
    },
    /// A market maker on a capture through the simulated exchange (fills as CSV on stdout);
    /// `scripts/compare_hftbacktest.py` runs it beside hftbacktest.
    MarketMaking {
        /// Capture files of one symbol.
        #[arg(required = true)]
        inputs: Vec<PathBuf>,
        /// The symbol (default: the first seen).
        #[arg(long)]
        symbol: Option<String>,
        /// Quote size.
        #[arg(long, default_value_t = 0.01)]
        qty: f64,
        /// Largest position either way.
        #[arg(long, default_value_t = 0.05)]
        max_position: f64,
        /// Re-quote interval.
        #[arg(long, default_value = "100ms")]
        interval: Span,
        /// Order entry latency.
        #[arg(long, default_value = "1ms")]
        order_latency: Span,
        /// Response latency.
        #[arg(long, default_value = "1ms")]
        response_latency: Span,
        /// The L2 queue model's power.
        #[arg(long, default_value_t = 2.0)]
        queue_power: f64,
        /// Maker fee (fraction of notional).
        #[arg(long, default_value_t = 0.0002)]
        maker_fee: f64,
        /// Taker fee.
        #[arg(long, default_value_t = 0.0008)]
        taker_fee: f64,
        /// The venue's lot: modelled fills round down to it (0 for none).
        #[arg(long, default_value_t = 0.001)]
        lot_size: f64,
        /// `partial` (the part of a trade past the queue) or `whole` (hftbacktest's
        /// no-partial-fill exchange: the whole rest of the order, also when the book crosses it).
        #[arg(long, default_value = "partial", value_parser = ["partial", "whole"])]
        queue_fills: String,
        /// `net` (a level's fall less the trades at its price, as hftbacktest's power queue
        /// model) or `gross` (the whole fall) counts as cancels.
        #[arg(long, default_value = "net", value_parser = ["net", "gross"])]
        queue_cancels: String,
    },
    /// The service: a feature job submitted to a running 1 x 2 cluster beside `flowsense run -w
    /// 2`, and 2 x 1 beside 1 x 2; submit-to-running latency beside a plain round trip; the API
    /// under load (wrk) beside `GET /health`. Servers are this binary, spawned.
    Service {
        /// Symbols of the synthetic feature job.
        #[arg(long, default_value_t = 2)]
        symbols: usize,
        /// Mean events per symbol-day.
        #[arg(long, default_value_t = 1_000_000)]
        events_per_day: u64,
        /// Runs per stage; the median is reported.
        #[arg(long, default_value_t = 3)]
        repeat: usize,
        /// Small jobs submitted for the latency figures.
        #[arg(long, default_value_t = 100)]
        submissions: usize,
        /// Seconds of load per endpoint.
        #[arg(long, default_value_t = 5)]
        load_seconds: u64,
    },
    /// The live path: tick-to-order latency (HDR percentiles) through a local Binance replaying
    /// a capture, beside the same graph fed from memory; live decode throughput beside the file
    /// reader of the same messages.
    Live {
        /// One symbol's USD-M capture.
        #[arg(long, default_value = "data/binance/usdm/btcusdt_20240808.gz")]
        capture: PathBuf,
        /// Replay speed of the latency run (times real time).
        #[arg(long, default_value_t = 10.0)]
        speed: f64,
        /// Runs of the throughput stages; the median is reported.
        #[arg(long, default_value_t = 5)]
        repeat: usize,
        /// The live worker polls the feed without parking (`[source.live] busy_poll`).
        #[arg(long)]
        busy_poll: bool,
    },
    /// The Interactive Brokers sink: order to the wire and order to accepted (HDR percentiles),
    /// through `IbBroker` and through the bare `ibapi` client, against a scripted TWS.
    Ibkr {
        /// Orders a run.
        #[arg(long, default_value_t = 2000)]
        orders: usize,
        /// Runs of each.
        #[arg(long, default_value_t = 3)]
        repeat: usize,
    },
    /// Runs named queries (a JSON object `{"name": "SQL", ...}`) over a lake; prints one JSON line
    /// per query with the median time. `scripts/bench_sql.py` runs it beside DuckDB.
    Sql {
        /// The lake.
        #[arg(long, env = "FLOWSENSE_LAKE", default_value = "./lake")]
        lake: String,
        /// The JSON file of queries.
        #[arg(long)]
        queries: PathBuf,
        /// Runs per query; the median is reported.
        #[arg(long, default_value_t = 3)]
        repeat: usize,
        /// DataFusion options, `key=value`, for tuning experiments.
        #[arg(long = "set", value_parser = parse_kv)]
        options: Vec<(String, String)>,
    },
}

fn parse_kv(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("{s:?} is not key=value"))
}

impl BenchCommand {
    /// Runs the benchmark. The graph benchmarks run their own threads and runtimes; the others
    /// run on one tokio runtime.
    pub fn execute(self) -> anyhow::Result<ExitCode> {
        match self {
            BenchCommand::Ingest { inputs, repeat } => {
                crate::runtime()?.block_on(flowsense_bench::ingest::run(inputs, repeat))?
            }
            BenchCommand::Synth {
                symbols,
                events_per_day,
                repeat,
            } => crate::runtime()?.block_on(flowsense_bench::synth::run(
                symbols,
                events_per_day,
                repeat,
            ))?,
            BenchCommand::Sql {
                lake,
                queries,
                repeat,
                options,
            } => crate::runtime()?
                .block_on(flowsense_bench::sql::run(&lake, &queries, repeat, &options))?,
            BenchCommand::Live {
                capture,
                speed,
                repeat,
                busy_poll,
            } => {
                print!(
                    "{}",
                    flowsense_bench::live::run(&flowsense_bench::live::LiveBench {
                        capture,
                        speed,
                        repeat,
                        busy_poll,
                    })?
                );
            }
            BenchCommand::Ibkr { orders, repeat } => {
                print!(
                    "{}",
                    flowsense_bench::ibkr::run(&flowsense_bench::ibkr::IbkrBench {
                        orders,
                        repeat
                    })?
                );
            }
            BenchCommand::Graph {
                lake,
                repeat,
                memory_events,
                buckets,
            } => flowsense_bench::graph::run(flowsense_bench::graph::GraphBench {
                lake: Lake::open(&lake, &S3Options::default())?,
                repeat,
                memory_events,
                buckets,
            })?,
            BenchCommand::Service {
                symbols,
                events_per_day,
                repeat,
                submissions,
                load_seconds,
            } => flowsense_bench::service::run(flowsense_bench::service::ServiceBench {
                exe: std::env::current_exe()?,
                symbols,
                events_per_day,
                repeat,
                submissions,
                load_seconds,
            })?,
            BenchCommand::Backtest {
                events,
                symbols,
                workers,
                repeat,
            } => flowsense_bench::backtest::run(flowsense_bench::backtest::BacktestBench {
                events,
                symbols,
                workers,
                repeat,
            })?,
            BenchCommand::MarketMaking {
                inputs,
                symbol,
                qty,
                max_position,
                interval,
                order_latency,
                response_latency,
                queue_power,
                maker_fee,
                taker_fee,
                lot_size,
                queue_fills,
                queue_cancels,
            } => {
                let mm = MarketMaking {
                    inputs,
                    symbol,
                    qty,
                    max_position,
                    interval,
                    execution: ExecutionSpec {
                        order_latency,
                        response_latency,
                        queue_power,
                        maker_fee,
                        taker_fee,
                        slippage_bps: 0.0,
                        lot_size: (lot_size > 0.0).then_some(lot_size),
                        queue_fills: if queue_fills == "whole" {
                            QueueFills::Whole
                        } else {
                            QueueFills::Partial
                        },
                        queue_cancels: if queue_cancels == "gross" {
                            QueueCancels::Gross
                        } else {
                            QueueCancels::Net
                        },
                        ..Default::default()
                    },
                };
                let stdout = std::io::stdout();
                let mut out = std::io::BufWriter::new(stdout.lock());
                flowsense_bench::market_making::run(&mm, &mut out)?
            }
        }
        Ok(ExitCode::SUCCESS)
    }
}
