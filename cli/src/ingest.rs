//! `flowsense ingest`: market data files into the lake.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, ValueEnum};
use flowsense_sources::detect::{Format, InputOptions};

use crate::lake_args::LakeArgs;

/// Input formats for `ingest`.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum FormatArg {
    /// Guess from each file's name and first bytes.
    Auto,
    /// Binance raw websocket captures.
    Binance,
    /// LOBSTER message/orderbook CSV.
    Lobster,
    /// Databento DBN.
    Dbn,
    /// OHLCV bars in CSV (with a header naming the columns, or Binance kline files).
    Bars,
    /// Alpaca market data: stream frames as JSON lines (as recorded), or REST pages.
    Alpaca,
    /// Polygon stocks: stream frames as JSON lines.
    Polygon,
}

/// `flowsense ingest`'s arguments.
#[derive(Args, Debug)]
pub struct IngestArgs {
    /// Lake location and credentials.
    #[command(flatten)]
    pub lake: LakeArgs,
    /// Input format.
    #[arg(long, value_enum, default_value_t = FormatArg::Auto)]
    pub format: FormatArg,
    /// Files or folders to read.
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
    /// LOBSTER files keep local exchange time: seconds to add to get UTC
    /// (New York summer time: 14400, winter: 18000).
    #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
    pub lobster_utc_offset_seconds: i64,
    /// How far exchange time may go back within a Binance stream before a message is
    /// refused, in milliseconds.
    #[arg(long, default_value_t = 1000)]
    pub time_tolerance_ms: i64,
    /// Bars: the symbol of files without a symbol column (default: the file name up to its
    /// first `-` or `_`).
    #[arg(long)]
    pub symbol: Option<String>,
    /// Bars: the bar length, e.g. `1m` (default: from the file name, else the gap between
    /// the first two bars).
    #[arg(long)]
    pub interval: Option<flowsense_core::job::Span>,
    /// Bars: which column holds what, for headers the usual names do not cover:
    /// `time=Date,close=Adj Close` (roles: time, clock, open, high, low, close, volume,
    /// symbol, trades; a number is a column's position, from 1).
    #[arg(long)]
    pub columns: Option<flowsense_sources::bars::ColumnMap>,
    /// Sources ingested at once, each on its own reader thread and writer task (a source is
    /// a file, or one symbol's chain of daily Binance files). Default: one per core, at most 8.
    #[arg(long, short = 'j', value_parser = clap::value_parser!(u16).range(1..))]
    pub parallel: Option<u16>,
    /// No progress bar.
    #[arg(long, short)]
    pub quiet: bool,
}

impl IngestArgs {
    /// Reads the files into the lake and prints the run's summary; fails when a file yields
    /// nothing that lands in a table.
    pub fn execute(self) -> anyhow::Result<ExitCode> {
        let lake = self.lake.open()?;
        let format = match self.format {
            FormatArg::Auto => None,
            FormatArg::Binance => Some(Format::Binance),
            FormatArg::Lobster => Some(Format::Lobster),
            FormatArg::Dbn => Some(Format::Dbn),
            FormatArg::Bars => Some(Format::Bars),
            FormatArg::Alpaca => Some(Format::Alpaca),
            FormatArg::Polygon => Some(Format::Polygon),
        };
        let mut options = InputOptions::default();
        options.lobster.utc_offset_seconds = self.lobster_utc_offset_seconds;
        options.binance.time_tolerance_ns = self.time_tolerance_ms.saturating_mul(1_000_000);
        options.bars.symbol = self.symbol;
        options.bars.interval = self.interval;
        options.bars.columns = self.columns.unwrap_or_default();
        let parallel = self.parallel.map_or_else(
            flowsense_dataflows::ingest::default_parallelism,
            usize::from,
        );
        let report = crate::runtime()?.block_on(flowsense_dataflows::ingest::ingest_sources(
            &lake,
            &self.paths,
            format,
            &options,
            !self.quiet,
            parallel,
        ))?;
        eprint!("{}", report.summary(lake.url().as_str()));
        if !report.nothing_read.is_empty() {
            anyhow::bail!(
                "no record of {} landed in a table; they are in dead_letters as \
                 unsupported_record",
                report.nothing_read.join("; ")
            );
        }
        Ok(ExitCode::SUCCESS)
    }
}
