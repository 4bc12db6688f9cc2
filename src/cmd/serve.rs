//! `tinyllama serve`: the OpenAI-compatible server.

use super::infer_opts::ModelOpts;
use anyhow::{bail, Context, Result};
use clap::Args;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;
use tinyllama_infer::batch::SchedulerConfig;
use tinyllama_serve::conn::Limits;
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
    /// Completions one request may ask for (prompts × n); default: half of --max-parallel.
    #[arg(long)]
    pub max_choices_per_request: Option<usize>,
    /// Seconds a client may take to send a request's headers (from its first byte, or from
    /// connecting); slower connections are closed.
    #[arg(long, default_value_t = 10.0)]
    pub header_timeout: f64,
    /// Seconds a client may take to send a request body once the headers are in (408 after).
    #[arg(long, default_value_t = 30.0)]
    pub body_timeout: f64,
    /// Seconds a keep-alive connection may sit idle between requests.
    #[arg(long, default_value_t = 60.0)]
    pub idle_timeout: f64,
    /// Open connections at most; more are answered 503 and closed at once.
    #[arg(long, default_value_t = 256)]
    pub max_connections: usize,
}

/// A timeout flag as a duration: positive, finite, at most a day.
fn seconds(flag: &str, s: f64) -> Result<Duration> {
    if !(s.is_finite() && s > 0.0 && s <= 86_400.0) {
        bail!("--{flag} must be a number of seconds in (0, 86400], got {s}");
    }
    Ok(Duration::from_secs_f64(s))
}

pub fn run(a: ServeArgs) -> Result<()> {
    if a.max_parallel == 0 {
        bail!("--max-parallel must be at least 1");
    }
    if a.max_parallel > 4096 {
        bail!(
            "--max-parallel must be at most 4096, got {}",
            a.max_parallel
        );
    }
    if a.max_queue > 1_000_000 {
        bail!("--max-queue must be at most 1000000, got {}", a.max_queue);
    }
    if a.max_choices_per_request == Some(0) {
        bail!("--max-choices-per-request must be at least 1");
    }
    if !(1..=65_536).contains(&a.max_connections) {
        bail!(
            "--max-connections must be in 1..=65536, got {}",
            a.max_connections
        );
    }
    let limits = Limits {
        header_timeout: seconds("header-timeout", a.header_timeout)?,
        body_timeout: seconds("body-timeout", a.body_timeout)?,
        idle_timeout: seconds("idle-timeout", a.idle_timeout)?,
        max_connections: a.max_connections,
    };
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
            limits,
            max_choices: a.max_choices_per_request,
        },
    )
}
