//! `--lake` and the S3 flags every lake-reading subcommand takes.

use anyhow::Context;
use clap::Args;
use flowsense_sinks::{Lake, S3Options};

/// Where the lake is, and how to reach S3.
#[derive(Args, Debug, Clone)]
pub struct LakeArgs {
    /// The lake: a local path, `file:///abs/path` or `s3://bucket/prefix`.
    #[arg(long, env = "FLOWSENSE_LAKE", default_value = "./lake")]
    pub lake: String,
    /// S3 endpoint (else `AWS_ENDPOINT_URL`).
    #[arg(long)]
    pub s3_endpoint: Option<String>,
    /// S3 access key id (else `AWS_ACCESS_KEY_ID`).
    #[arg(long)]
    pub s3_access_key_id: Option<String>,
    /// S3 secret access key (else `AWS_SECRET_ACCESS_KEY`).
    #[arg(long)]
    pub s3_secret_access_key: Option<String>,
    /// S3 region (else `AWS_REGION`, else us-east-1).
    #[arg(long)]
    pub s3_region: Option<String>,
}

impl LakeArgs {
    /// Opens the lake.
    pub fn open(&self) -> anyhow::Result<Lake> {
        let s3 = S3Options {
            endpoint: self.s3_endpoint.clone(),
            access_key_id: self.s3_access_key_id.clone(),
            secret_access_key: self.s3_secret_access_key.clone(),
            region: self.s3_region.clone(),
        };
        Lake::open(&self.lake, &s3).with_context(|| format!("opening the lake at {}", self.lake))
    }
}
