//! `flowsense sql`: one query over the lake, or the interactive prompt.

use std::path::PathBuf;
use std::process::ExitCode;

use std::io::Write;

use anyhow::Context;
use clap::Args;
use flowsense_dataflows::output::OutputFormat;

use crate::lake_args::LakeArgs;

/// `flowsense sql`'s arguments.
#[derive(Args, Debug)]
pub struct SqlArgs {
    /// Lake location and credentials.
    #[command(flatten)]
    pub lake: LakeArgs,
    /// Output format.
    #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
    pub format: OutputFormat,
    /// Write the result here instead of stdout.
    #[arg(long, short)]
    pub output: Option<PathBuf>,
    /// Send the query to a running `flowsense serve` at this URL instead of reading the lake
    /// here (one query; `--lake` is then the server's).
    #[arg(long)]
    pub server: Option<String>,
    /// The query; omit for the interactive prompt.
    pub query: Option<String>,
}

impl SqlArgs {
    /// Runs the query (or the prompt); the exit code says whether the query failed.
    pub fn execute(self) -> anyhow::Result<ExitCode> {
        if let Some(server) = &self.server {
            let query = self
                .query
                .as_deref()
                .context("--server takes one query: give it as the argument")?;
            let batches = flowsense_service::client::Client::new(server).sql(query)?;
            let mut out: Box<dyn std::io::Write> = match &self.output {
                Some(p) => Box::new(std::io::BufWriter::new(std::fs::File::create(p)?)),
                None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
            };
            flowsense_dataflows::output::write_batches(&batches, self.format, &mut out)?;
            out.flush()?;
            return Ok(ExitCode::SUCCESS);
        }
        let lake = self.lake.open()?;
        crate::runtime()?.block_on(flowsense_dataflows::sql::run(
            &lake,
            self.format,
            self.output.as_deref(),
            self.query.as_deref(),
        ))
    }
}
