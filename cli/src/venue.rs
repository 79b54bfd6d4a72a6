//! `flowsense venue`: a local Binance USD-M on loopback that replays a capture (its stamps
//! moved to each connection's start, as a live venue's clock would agree with ours), so a live
//! job can be tried with no network: the websocket stream and the REST depth snapshot.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use flowsense_bench::venue::{
    Script, now_offset, rest_server_on, snapshot_and_frames, ws_server_on,
};

/// `flowsense venue`'s arguments.
#[derive(Args, Debug)]
pub struct VenueArgs {
    /// One symbol's USD-M capture to replay.
    #[arg(long, default_value = "data/binance/usdm/btcusdt_20240808.gz")]
    pub capture: PathBuf,
    /// Replay speed (times real time).
    #[arg(long, default_value_t = 1.0)]
    pub speed: f64,
    /// Where the websocket stream listens.
    #[arg(long, default_value = "127.0.0.1:9443")]
    pub ws_listen: String,
    /// Where the REST snapshot listens.
    #[arg(long, default_value = "127.0.0.1:9444")]
    pub rest_listen: String,
    /// Keep the capture's own stamps instead of moving them to now (a paper job then never
    /// fills: its orders leave on today's clock).
    #[arg(long)]
    pub original_times: bool,
}

impl VenueArgs {
    /// Serves until killed; each connection replays the capture from its start.
    pub fn execute(self) -> anyhow::Result<ExitCode> {
        if !(self.speed > 0.0 && self.speed.is_finite()) {
            anyhow::bail!("--speed {}: must be positive", self.speed);
        }
        let text = flowsense_sources::binance::open_text(&self.capture)
            .with_context(|| format!("reading {}", self.capture.display()))?;
        let lines: Vec<String> = std::io::BufRead::lines(text)
            .collect::<std::io::Result<_>>()
            .with_context(|| format!("reading {}", self.capture.display()))?;
        let (snapshot, frames) = snapshot_and_frames(&lines)
            .with_context(|| format!("{}: no depth snapshot in it", self.capture.display()))?;
        if !self.original_times {
            now_offset(&frames).context("the capture's first frame has no E stamp")?;
        }
        let mut script = Script::paced(&lines, self.speed);
        script.restamp = !self.original_times;
        let length = script.frames.last().map_or(Duration::ZERO, |f| f.0);
        let ws = ws_server_on(&self.ws_listen, vec![script])
            .with_context(|| format!("listening on {}", self.ws_listen))?;
        let (rest, _) = rest_server_on(&self.rest_listen, snapshot, !self.original_times)
            .with_context(|| format!("listening on {}", self.rest_listen))?;
        // A reader of our stdout that goes away must not stop the venue.
        let mut out = std::io::stdout();
        let _ = writeln!(
            out,
            "local Binance USD-M: stream {} , REST {} ; {} messages of {} at {}x ({:.0} s a connection); Ctrl-C stops it",
            ws.url,
            rest,
            frames.len(),
            self.capture.display(),
            self.speed,
            length.as_secs_f64()
        );
        let _ = writeln!(out, "try: flowsense run examples/live-paper-local.toml");
        let _ = out.flush();
        loop {
            std::thread::park();
        }
    }
}
