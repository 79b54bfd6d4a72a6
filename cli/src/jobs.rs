//! The service's client commands: `flowsense submit`, `jobs`, `job` and `stop`, each one
//! request to a running `flowsense serve` (`--server`, else `FLOWSENSE_SERVER`, else
//! http://127.0.0.1:7878).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use flowsense_service::client::{Client, DEFAULT_SERVER, graph_table, jobs_table};
use flowsense_service::registry::JobState;

/// Which server.
#[derive(Args, Debug, Clone)]
pub struct ServerArg {
    /// The server's URL.
    #[arg(long, env = "FLOWSENSE_SERVER", default_value = DEFAULT_SERVER)]
    pub server: String,
}

/// `flowsense submit`'s arguments.
#[derive(Args, Debug)]
pub struct SubmitArgs {
    /// The job spec (TOML), as `flowsense run` takes it.
    pub job: PathBuf,
    /// The server.
    #[command(flatten)]
    pub server: ServerArg,
    /// Wait until the job ends; the exit code says whether it finished.
    #[arg(long)]
    pub wait: bool,
}

impl SubmitArgs {
    /// Submits the job and prints its id (and, with `--wait`, how it ended).
    pub fn execute(self) -> anyhow::Result<ExitCode> {
        let text = std::fs::read_to_string(&self.job)
            .with_context(|| format!("reading {}", self.job.display()))?;
        let c = Client::new(&self.server.server);
        let s = c.submit(&text)?;
        println!("{}", s.id);
        if !self.wait {
            return Ok(ExitCode::SUCCESS);
        }
        let j = c.wait(&s.id, Duration::from_secs(24 * 3600))?;
        eprint!("{}", jobs_table(std::slice::from_ref(&j)));
        eprintln!();
        Ok(match j.state {
            JobState::Finished => ExitCode::SUCCESS,
            _ => ExitCode::FAILURE,
        })
    }
}

/// `flowsense jobs`'s arguments.
#[derive(Args, Debug)]
pub struct JobsArgs {
    /// The server.
    #[command(flatten)]
    pub server: ServerArg,
}

impl JobsArgs {
    /// Prints every job.
    pub fn execute(self) -> anyhow::Result<ExitCode> {
        let jobs = Client::new(&self.server.server).jobs()?;
        println!("{}", jobs_table(&jobs));
        Ok(ExitCode::SUCCESS)
    }
}

/// `flowsense job`'s arguments.
#[derive(Args, Debug)]
pub struct JobArgs {
    /// The job's id.
    pub id: String,
    /// The server.
    #[command(flatten)]
    pub server: ServerArg,
}

impl JobArgs {
    /// Prints the job, its graph's figures and its errors.
    pub fn execute(self) -> anyhow::Result<ExitCode> {
        let c = Client::new(&self.server.server);
        let j = c.job(&self.id)?;
        println!("{}", jobs_table(std::slice::from_ref(&j)));
        let g = c.graph(&self.id)?;
        if !g.nodes.is_empty() {
            println!("{}", graph_table(&g));
        }
        for e in c.errors(&self.id)? {
            match e.worker {
                Some(w) => println!("error (worker {w}): {}", e.message),
                None => println!("error: {}", e.message),
            }
        }
        Ok(ExitCode::SUCCESS)
    }
}

/// `flowsense stop`'s arguments.
#[derive(Args, Debug)]
pub struct StopArgs {
    /// The job's id.
    pub id: String,
    /// Throw the job's output away instead of letting it drain and commit.
    #[arg(long)]
    pub immediate: bool,
    /// Return at once instead of waiting for the job to end.
    #[arg(long)]
    pub no_wait: bool,
    /// The server.
    #[command(flatten)]
    pub server: ServerArg,
}

impl StopArgs {
    /// Stops the job and (unless `--no-wait`) waits until it has ended.
    pub fn execute(self) -> anyhow::Result<ExitCode> {
        let c = Client::new(&self.server.server);
        let mut j = c.stop(&self.id, self.immediate)?;
        if !self.no_wait {
            j = c.wait(&self.id, Duration::from_secs(3600))?;
        }
        println!("{}", jobs_table(std::slice::from_ref(&j)));
        Ok(ExitCode::SUCCESS)
    }
}

/// `flowsense kill`'s arguments.
#[derive(Args, Debug)]
pub struct KillArgs {
    /// Also close every position with market orders (default: keep them).
    #[arg(long)]
    pub flatten: bool,
    /// The server.
    #[command(flatten)]
    pub server: ServerArg,
}

impl KillArgs {
    /// Pulls the service's kill switch and says which jobs it halted.
    pub fn execute(self) -> anyhow::Result<ExitCode> {
        let k = Client::new(&self.server.server).kill(self.flatten)?;
        let what = if k.flatten {
            "cancelling every order and flattening"
        } else {
            "cancelling every order, positions kept"
        };
        if k.jobs.is_empty() {
            println!("kill at {}: no trading job was running", k.at);
        } else {
            println!("kill at {}: halted {} ({what})", k.at, k.jobs.join(", "));
        }
        Ok(ExitCode::SUCCESS)
    }
}
