//! `flowsense report`: a run's HTML (and PDF) report from the lake.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use flowsense_dataflows::report;

use crate::lake_args::LakeArgs;

/// `flowsense report`'s arguments.
#[derive(Args, Debug)]
pub struct ReportArgs {
    /// The run's id (see `flowsense sql "SELECT run_id, job, started FROM runs"`).
    pub run_id: String,
    /// Lake location and credentials.
    #[command(flatten)]
    pub lake: LakeArgs,
    /// Where to write the HTML (default `reports/<run_id>.html`).
    #[arg(long, short)]
    pub out: Option<PathBuf>,
    /// Also write a PDF beside it (needs Chromium: `$FLOWSENSE_CHROMIUM` or on `PATH`).
    #[arg(long)]
    pub pdf: bool,
}

impl ReportArgs {
    /// Writes the report (and the PDF with `--pdf`) and prints where.
    pub fn execute(self) -> anyhow::Result<ExitCode> {
        let lake = self.lake.open()?;
        let run_id = &self.run_id;
        let html = crate::runtime()?.block_on(report::build(&lake, run_id))?;
        let out = self
            .out
            .unwrap_or_else(|| PathBuf::from("reports").join(format!("{run_id}.html")));
        if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        std::fs::write(&out, html).with_context(|| format!("writing {}", out.display()))?;
        eprintln!("report: {}", out.display());
        if self.pdf {
            let chromium = report::find_chromium().context(
                "--pdf needs Chromium or Chrome: install it (apt-get install chromium) or set FLOWSENSE_CHROMIUM",
            )?;
            let pdf_path = out.with_extension("pdf");
            report::print_pdf(&chromium, &out, &pdf_path)?;
            eprintln!("report: {}", pdf_path.display());
        }
        Ok(ExitCode::SUCCESS)
    }
}
