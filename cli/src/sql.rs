//! `flowsense sql`: one query over the lake, or the interactive prompt.

use std::path::PathBuf;
use std::process::ExitCode;

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
    /// The query; omit for the interactive prompt.
    pub query: Option<String>,
}

impl SqlArgs {
    /// Runs the query (or the prompt); the exit code says whether the query failed.
    pub fn execute(self) -> anyhow::Result<ExitCode> {
        let lake = self.lake.open()?;
        crate::runtime()?.block_on(flowsense_dataflows::sql::run(
            &lake,
            self.format,
            self.output.as_deref(),
            self.query.as_deref(),
        ))
    }
}
