//! `flowsense serve`'s settings, layered lowest first: built-in defaults, the config file
//! (`flowsense.toml` in the working directory, or `--config FILE`), `FLOWSENSE_*` environment
//! variables (`FLOWSENSE_WORKERS`, `FLOWSENSE_LISTEN`, `FLOWSENSE_LAKE`, ...), then the
//! command-line flags. Later layers win.

use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

/// The settings of one `flowsense serve` process.
///
/// ```
/// use flowsense_service::config::{ServeConfig, ServeOverrides};
/// let c = ServeConfig::load(None, &ServeOverrides { workers: Some(3), ..Default::default() }).unwrap();
/// assert_eq!(c.workers, 3);
/// assert_eq!(c.processes, 1);
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServeConfig {
    /// Worker threads per process (default: the machine's cores).
    pub workers: usize,
    /// Processes in the cluster.
    pub processes: usize,
    /// This process's index (0 runs the HTTP controller).
    pub process: usize,
    /// One `host:port` line per process (timely's hostfile), when there are several.
    pub hostfile: Option<PathBuf>,
    /// Where process 0's HTTP API listens (`127.0.0.1:0` picks a free port).
    pub listen: String,
    /// The lake: a path, `file:///abs/path` or `s3://bucket/prefix` (S3 credentials from the
    /// `AWS_*` variables).
    pub lake: String,
    /// `text` for people, `json` for machines.
    pub log_format: String,
}

impl Default for ServeConfig {
    fn default() -> Self {
        ServeConfig {
            workers: std::thread::available_parallelism().map_or(1, |n| n.get()),
            processes: 1,
            process: 0,
            hostfile: None,
            listen: "127.0.0.1:7878".into(),
            lake: "./lake".into(),
            log_format: "text".into(),
        }
    }
}

/// The flags given on the command line (absent ones leave the lower layers' values).
#[derive(Clone, Debug, Default, Serialize)]
pub struct ServeOverrides {
    /// `-w`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workers: Option<usize>,
    /// `-n`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub processes: Option<usize>,
    /// `-p`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub process: Option<usize>,
    /// `-h`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hostfile: Option<PathBuf>,
    /// `--listen`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<String>,
    /// `--lake`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lake: Option<String>,
    /// `--log-format`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_format: Option<String>,
}

/// The keys the environment may set, as `FLOWSENSE_<KEY>`.
const ENV_KEYS: [&str; 7] = [
    "workers",
    "processes",
    "process",
    "hostfile",
    "listen",
    "lake",
    "log_format",
];

impl ServeConfig {
    /// The settings from every layer. `file` is the config file asked for (it must exist);
    /// without one, `./flowsense.toml` is read when present.
    pub fn load(file: Option<&Path>, flags: &ServeOverrides) -> anyhow::Result<ServeConfig> {
        let mut fig = Figment::from(Serialized::defaults(ServeConfig::default()));
        match file {
            Some(f) => {
                anyhow::ensure!(f.exists(), "the config file {} does not exist", f.display());
                fig = fig.merge(Toml::file(f));
            }
            None => fig = fig.merge(Toml::file("flowsense.toml")),
        }
        let cfg: ServeConfig = fig
            .merge(Env::prefixed("FLOWSENSE_").only(&ENV_KEYS))
            .merge(Serialized::defaults(flags))
            .extract()
            .map_err(|e| anyhow::anyhow!("the serve settings: {e}"))?;
        anyhow::ensure!(cfg.workers >= 1, "workers must be at least 1");
        anyhow::ensure!(
            cfg.process < cfg.processes,
            "process {} of {}: the index must be below the process count",
            cfg.process,
            cfg.processes
        );
        anyhow::ensure!(
            matches!(cfg.log_format.as_str(), "text" | "json"),
            "log_format {:?}: use text or json",
            cfg.log_format
        );
        Ok(cfg)
    }
}
