//! Server throughput: N concurrent clients each sending requests back to back over HTTP, with
//! a fixed prompt and completion length (EOS ignored), counting completion tokens per second
//! of wall time.

use crate::client::request;
use anyhow::{bail, Result};
use serde::Serialize;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

#[derive(Clone, Debug, Serialize)]
pub struct Throughput {
    pub clients: usize,
    pub requests: usize,
    pub completion_tokens: usize,
    pub seconds: f64,
    pub tok_s: f64,
    pub mean_latency_s: f64,
}

/// Runs `clients` threads, each sending `per_client` completions of `max_tokens` tokens for
/// a prompt of token ids from `prompt(i)`.
pub fn measure(
    addr: SocketAddr,
    clients: usize,
    per_client: usize,
    max_tokens: usize,
    prompt: impl Fn(usize) -> Vec<u32> + Sync,
) -> Result<Throughput> {
    let t0 = Instant::now();
    let results: Vec<Result<(usize, f64)>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..clients)
            .map(|c| {
                let prompt = &prompt;
                s.spawn(move || -> Result<(usize, f64)> {
                    let (mut toks, mut lat) = (0, 0.0);
                    for r in 0..per_client {
                        let body = serde_json::json!({
                            "prompt": prompt(c * per_client + r),
                            "max_tokens": max_tokens,
                            "temperature": 0,
                            "ignore_eos": true,
                        });
                        let t = Instant::now();
                        let rep = request(
                            addr,
                            "POST",
                            "/v1/completions",
                            &[],
                            Some(&body.to_string()),
                            Duration::from_secs(3600),
                        )?;
                        if rep.status != 200 {
                            bail!("request failed with {}: {}", rep.status, rep.body);
                        }
                        lat += t.elapsed().as_secs_f64();
                        toks += rep.json()?["usage"]["completion_tokens"]
                            .as_u64()
                            .unwrap_or(0) as usize;
                    }
                    Ok((toks, lat))
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| bail!("client thread panicked")))
            .collect()
    });
    let seconds = t0.elapsed().as_secs_f64();
    let mut tokens = 0;
    let mut lat = 0.0;
    for r in results {
        let (t, l) = r?;
        tokens += t;
        lat += l;
    }
    let requests = clients * per_client;
    Ok(Throughput {
        clients,
        requests,
        completion_tokens: tokens,
        seconds,
        tok_s: tokens as f64 / seconds,
        mean_latency_s: lat / requests.max(1) as f64,
    })
}
