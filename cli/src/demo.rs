//! `flowsense demo`: the main job on embedded defaults.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use crate::lake_args::LakeArgs;

/// `flowsense demo`'s arguments.
#[derive(Args, Debug)]
pub struct DemoArgs {
    /// Lake location and credentials.
    #[command(flatten)]
    pub lake: LakeArgs,
    /// The bundled data folder (default: `data/binance` of this checkout).
    #[arg(long)]
    pub data: Option<PathBuf>,
}

impl DemoArgs {
    /// Ingests the bundled captures and a small synthetic market, then queries and trades them.
    pub fn execute(self) -> anyhow::Result<ExitCode> {
        let lake = self.lake.open()?;
        crate::runtime()?.block_on(flowsense_dataflows::demo::run(&lake, self.data))?;
        Ok(ExitCode::SUCCESS)
    }
}
