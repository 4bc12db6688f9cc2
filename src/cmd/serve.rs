//! `tinyllama serve`: the OpenAI-compatible server.

use super::infer_opts::ModelOpts;
use anyhow::{bail, Context, Result};
use clap::Args;
use std::net::{IpAddr, SocketAddr};
use tinyllama_infer::batch::SchedulerConfig;
use tinyllama_serve::ServeOptions;

#[derive(Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub model: ModelOpts,
    /// Address to bind; the default accepts local connections only.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    #[arg(long, default_value_t = 8080)]
    pub port: u16,
    /// Require `Authorization: Bearer KEY` on /v1 requests.
    #[arg(long, env = "TINYLLAMA_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// Model name reported by /v1/models and accepted in requests (default: the directory name).
    #[arg(long)]
    pub model_name: Option<String>,
    /// Sequences decoded together at most (continuous batching).
    #[arg(long, default_value_t = 8)]
    pub max_parallel: usize,
    /// Requests waiting for a free slot at most; more are answered 503.
    #[arg(long, default_value_t = 64)]
    pub max_queue: usize,
}

pub fn run(a: ServeArgs) -> Result<()> {
    if a.max_parallel == 0 {
        bail!("--max-parallel must be at least 1");
    }
    let ip: IpAddr = a.host.parse().with_context(|| {
        format!(
            "--host `{}` is not an IP address (e.g. 127.0.0.1 or 0.0.0.0)",
            a.host
        )
    })?;
    if !ip.is_loopback() && a.api_key.is_none() {
        eprintln!(
            "warning: serving on {ip} without --api-key; anyone who can reach this port can use the model"
        );
    }
    let loaded = a.model.load()?;
    tinyllama_serve::run(
        loaded,
        SocketAddr::new(ip, a.port),
        &ServeOptions {
            api_key: a.api_key,
            model_name: a.model_name,
            scheduler: SchedulerConfig {
                max_parallel: a.max_parallel,
                max_queue: a.max_queue,
            },
        },
    )
}
