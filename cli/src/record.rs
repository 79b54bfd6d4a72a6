//! `flowsense record`: what a live feed sends, written in the raw format `flowsense ingest`
//! reads (one gzip file per symbol and UTC day).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use flowsense_sources::live::{BinanceConfig, BinanceVenue, RecordOptions, record};

/// `flowsense record`'s arguments.
#[derive(Args, Debug)]
pub struct RecordArgs {
    /// The feed: `binance-spot`, `binance-usdm` or `binance-coinm`.
    #[arg(long)]
    pub source: String,
    /// Symbols, comma-separated, as the venue names them (`btcusdt,ethusdt`).
    #[arg(long, value_delimiter = ',', required = true)]
    pub symbols: Vec<String>,
    /// Stream kinds, comma-separated: depth, trade, aggTrade, bookTicker (default
    /// depth,trade,bookTicker).
    #[arg(long, value_delimiter = ',')]
    pub streams: Vec<String>,
    /// The folder: files go to `OUT/<spot|usdm|cm>/<symbol>_<YYYYMMDD>.gz`.
    #[arg(long)]
    pub out: PathBuf,
    /// Stop after this long (`90s`, `10m`, `24h`); default: until killed.
    #[arg(long, value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Stop after this many stream messages.
    #[arg(long)]
    pub max_messages: Option<u64>,
    /// Stop when the connection drops instead of reconnecting.
    #[arg(long)]
    pub no_reconnect: bool,
    /// The websocket base URL (default: the venue's, e.g. `wss://fstream.binance.com`).
    #[arg(long)]
    pub ws_url: Option<String>,
    /// The REST base URL for depth snapshots (default: the venue's).
    #[arg(long)]
    pub rest_url: Option<String>,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let (n, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = n
        .parse()
        .map_err(|_| format!("{s:?}: give a number and a unit, as 90s, 10m or 24h"))?;
    let secs = match unit {
        "s" | "" => n,
        "m" => n * 60,
        "h" => n * 3600,
        _ => return Err(format!("{s:?}: the unit is s, m or h")),
    };
    Ok(Duration::from_secs(secs))
}

impl RecordArgs {
    /// Records until a stop condition, then prints what was written.
    pub fn execute(self) -> anyhow::Result<ExitCode> {
        let venue = BinanceVenue::parse(&self.source).with_context(|| {
            format!(
                "--source {}: use binance-spot, binance-usdm or binance-coinm",
                self.source
            )
        })?;
        let config = BinanceConfig {
            venue,
            symbols: self.symbols,
            ws_url: self.ws_url,
            rest_url: self.rest_url,
            streams: self.streams,
        };
        if let Some(bad) = config
            .streams
            .iter()
            .find(|k| !BinanceVenue::STREAMS.contains(&k.as_str()))
        {
            anyhow::bail!("--streams {bad}: use depth, trade, aggTrade or bookTicker");
        }
        let opts = RecordOptions {
            out: self.out,
            max_messages: self.max_messages,
            duration: self.duration,
            reconnect: !self.no_reconnect,
        };
        eprintln!("flowsense record: {}", config.stream_url());
        let r = record(&config, &opts)?;
        println!(
            "recorded {} messages and {} snapshots over {} connection(s), {} gap(s) resynced, into {}",
            r.messages,
            r.snapshots,
            r.connections,
            r.gaps,
            r.files
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
        Ok(ExitCode::SUCCESS)
    }
}
