//! `flowsense demo`: the main job on embedded defaults; with `--serve`, the service and its UI
//! afterwards, with the bundled captures replayed live through a feature job and a paper
//! strategy.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use flowsense_service::client::Client;
use flowsense_service::{ServeConfig, ServeOverrides};

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
    /// After the batch demo, keep serving the API and the web UI, with the captures replayed
    /// live through a feature job and a paper-trading strategy (each started again when its
    /// replay ends).
    #[arg(long)]
    pub serve: bool,
    /// Where `--serve` listens.
    #[arg(long, default_value = "127.0.0.1:7878")]
    pub listen: String,
    /// The live replay's pace, in multiples of real time (the captures last three minutes).
    #[arg(long, default_value_t = 1.0)]
    pub speed: f64,
    /// Worker threads of `--serve`'s cluster.
    #[arg(short = 'w', long, default_value_t = 2)]
    pub workers: usize,
}

impl DemoArgs {
    /// Ingests the bundled captures and a small synthetic market, then queries and trades them;
    /// with `--serve`, serves them until killed.
    pub fn execute(self) -> anyhow::Result<ExitCode> {
        let lake = self.lake.open()?;
        crate::runtime()?.block_on(flowsense_dataflows::demo::run(&lake, self.data))?;
        if !self.serve {
            return Ok(ExitCode::SUCCESS);
        }
        let jobs = flowsense_dataflows::demo::live_jobs(self.speed)?;
        let config = ServeConfig::load(
            None,
            &ServeOverrides {
                workers: Some(self.workers),
                listen: Some(self.listen),
                lake: Some(self.lake.lake),
                ..Default::default()
            },
        )?;
        let specs: Vec<(String, String)> =
            jobs.iter().map(|j| (j.name.clone(), j.to_toml())).collect();
        flowsense_service::serve_with(config, move |addr| {
            let client = Client::new(&format!("http://{addr}"));
            eprintln!(
                "\nflowsense demo: the web UI is at http://{addr}/ (jobs, graph, market, portfolio, \
                 backtests, SQL); live jobs: {}. Ctrl-C stops.",
                specs
                    .iter()
                    .map(|(n, _)| n.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            keep_running(&client, &specs);
        })?;
        Ok(ExitCode::SUCCESS)
    }
}

/// Submits each spec whenever no job of its name is running (once the server is ready, and
/// again after each replay ends), until the process is killed.
fn keep_running(client: &Client, specs: &[(String, String)]) {
    loop {
        match client.jobs() {
            Ok(jobs) => {
                for (name, toml) in specs {
                    let live = jobs.iter().any(|j| &j.name == name && !j.state.is_final());
                    // Refused while the workers are still joining: tried again shortly.
                    if !live && client.submit(toml).is_ok() {
                        eprintln!("flowsense demo: {name} started");
                    }
                }
            }
            Err(e) => eprintln!("flowsense demo: listing the jobs: {e:#}"),
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}
