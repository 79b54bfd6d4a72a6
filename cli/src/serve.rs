//! `flowsense serve`: one process of the long-running cluster (process 0 also serves the API).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use flowsense_service::{ServeConfig, ServeOverrides};

/// `flowsense serve`'s arguments. Each one overrides `FLOWSENSE_<NAME>`, which overrides the
/// config file (`./flowsense.toml`, or `--config`), which overrides the defaults (`-h` is the
/// hostfile, as timely takes it; help is `--help`).
#[derive(Args, Debug)]
pub struct ServeArgs {
    /// Worker threads per process [default: the machine's cores].
    #[arg(short = 'w', long)]
    pub workers: Option<usize>,
    /// Number of processes [default: 1].
    #[arg(short = 'n', long)]
    pub processes: Option<usize>,
    /// This process's index; process 0 serves the HTTP API [default: 0].
    #[arg(short = 'p', long)]
    pub process: Option<usize>,
    /// Hostfile: one `host:port` line per process.
    #[arg(short = 'h', long)]
    pub hostfile: Option<PathBuf>,
    /// Where process 0's HTTP API listens [default: 127.0.0.1:7878; port 0 picks a free one].
    #[arg(long)]
    pub listen: Option<String>,
    /// The lake: a path, `file:///abs/path` or `s3://bucket/prefix` [default: ./lake].
    #[arg(long)]
    pub lake: Option<String>,
    /// Logs on stderr as `text` or `json` lines [default: text]; `RUST_LOG` filters them.
    #[arg(long)]
    pub log_format: Option<String>,
    /// The config file [default: ./flowsense.toml when present].
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Print the settings after layering and exit.
    #[arg(long)]
    pub print_config: bool,
    /// Print help.
    #[arg(long, action = clap::ArgAction::Help)]
    pub help: Option<bool>,
}

impl ServeArgs {
    /// Runs this process of the cluster until it is killed.
    pub fn execute(self) -> anyhow::Result<ExitCode> {
        let flags = ServeOverrides {
            workers: self.workers,
            processes: self.processes,
            process: self.process,
            hostfile: self.hostfile,
            listen: self.listen,
            lake: self.lake,
            log_format: self.log_format,
        };
        let config = ServeConfig::load(self.config.as_deref(), &flags)?;
        if self.print_config {
            print!("{}", toml::to_string(&config)?);
            return Ok(ExitCode::SUCCESS);
        }
        flowsense_service::serve(config)?;
        Ok(ExitCode::SUCCESS)
    }
}
