//! An OpenAI-compatible HTTP server: `POST /v1/completions`, `POST /v1/chat/completions`
//! (server-sent events with `stream: true`), `GET /v1/models`, `GET /v1/models/{id}`,
//! `GET /health`. Requests are decoded by the continuous-batching scheduler of
//! `tinyllama-infer` on its own thread; the async side (hyper and axum on a small tokio
//! runtime) only parses, queues and streams. This crate is the only one that depends on
//! tokio. Every wait a client can impose is bounded (see [`conn`]) and so is every
//! per-request cost (see [`RequestLimits`]).

pub mod bench;
pub mod body;
pub mod client;
pub mod conn;
pub mod error;
pub mod handlers;
pub mod logprobs;
pub mod prompt;
pub mod request;

use anyhow::{Context, Result};
use axum::routing::{get, post};
use axum::Router;
use std::net::SocketAddr;
use std::sync::Arc;
use tinyllama_infer::batch::{Scheduler, SchedulerConfig};
use tinyllama_infer::loader::Loaded;
use tinyllama_infer::ChatTemplate;
use tinyllama_model::tokenizer::Tokenizer;
use tokio::sync::{watch, Semaphore};

/// Server settings besides the model.
#[derive(Clone, Debug)]
pub struct ServeOptions {
    /// Clients must send `Authorization: Bearer KEY` when set.
    pub api_key: Option<String>,
    /// The name `/v1/models` lists and requests may name (default: the model directory's).
    pub model_name: Option<String>,
    pub scheduler: SchedulerConfig,
    pub limits: conn::Limits,
    /// Prompts × `n` one request may ask for; `None` takes half the decoding slots (at least
    /// one), so that a single request cannot fill every slot and the queue.
    pub max_choices: Option<usize>,
}

/// What one request may cost, derived from the model and the options.
#[derive(Clone, Copy, Debug)]
pub struct RequestLimits {
    /// Prompts × `n` per request.
    pub max_choices: usize,
    /// Bytes of prompt text (or of all chat message contents) per prompt: the context length
    /// times [`body::bytes_per_token_bound`]; longer text cannot fit and is refused before
    /// tokenising.
    pub max_text_bytes: usize,
    /// Bytes of a request body: room for `max_choices` prompts of `max_text_bytes`, allowing
    /// for JSON escapes (up to 6 bytes a byte) or token-id lists (up to 12 bytes a token), plus
    /// 64 KiB for the other fields.
    pub max_body_bytes: usize,
}

pub struct AppState {
    pub scheduler: Scheduler,
    pub tokenizer: Arc<Tokenizer>,
    /// The same tokenizer with special tokens read as plain text, for user-supplied chat
    /// content (so `</s>` typed by a user is not the end-of-sequence token).
    pub text_tokenizer: Arc<tokenizers::Tokenizer>,
    pub limits: conn::Limits,
    pub request_limits: RequestLimits,
    pub conn_stats: Arc<conn::ConnStats>,
    /// Tokenising runs on the blocking pool, this many at once.
    pub tokenize_gate: Arc<Semaphore>,
    /// Scoring prompts (`echo` with `logprobs`) runs beside the decoding loop, one at a time.
    pub score_gate: Arc<Semaphore>,
    pub template: Arc<ChatTemplate>,
    pub model_name: String,
    pub api_key: Option<String>,
    pub created: u64,
}

pub fn app(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/health", get(handlers::health))
        .route("/v1/models", get(handlers::models))
        .route("/v1/models/{*id}", get(handlers::model))
        .route("/v1/completions", post(handlers::completions))
        .route("/v1/chat/completions", post(handlers::chat))
        .fallback(handlers::not_found)
        .method_not_allowed_fallback(handlers::method_not_allowed)
        .with_state(state)
}

fn state(loaded: Loaded, opts: &ServeOptions) -> Arc<AppState> {
    let scheduler = Scheduler::start(Arc::new(loaded.runner), opts.scheduler);
    let ctx = scheduler.runner().context();
    let per_token =
        body::bytes_per_token_bound(loaded.tokenizer.inner().get_vocab(true).into_keys());
    let max_choices = opts
        .max_choices
        .unwrap_or(opts.scheduler.max_parallel / 2)
        .max(1);
    let max_text_bytes = ctx * per_token;
    let request_limits = RequestLimits {
        max_choices,
        max_text_bytes,
        max_body_bytes: 64 * 1024 + max_choices * (max_text_bytes * 6).max(ctx * 12),
    };
    let mut text_tokenizer = loaded.tokenizer.inner().clone();
    text_tokenizer.set_encode_special_tokens(true);
    Arc::new(AppState {
        scheduler,
        tokenizer: Arc::new(loaded.tokenizer),
        text_tokenizer: Arc::new(text_tokenizer),
        limits: opts.limits,
        request_limits,
        conn_stats: Arc::default(),
        tokenize_gate: Arc::new(Semaphore::new(2)),
        score_gate: Arc::new(Semaphore::new(1)),
        template: Arc::new(loaded.template),
        model_name: opts.model_name.clone().unwrap_or(loaded.name),
        api_key: opts.api_key.clone().filter(|k| !k.is_empty()),
        created: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
    })
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    // The model runs on the scheduler's thread and the rayon pool; the async side only
    // shuffles bytes, so two threads are plenty.
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("http")
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// A server running on a background thread (tests, embedding).
pub struct ServerHandle {
    pub addr: SocketAddr,
    pub scheduler: Scheduler,
    stop: Option<watch::Sender<bool>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ServerHandle {
    /// Stops accepting connections, finishes open ones and the decoding thread.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(true);
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.scheduler.shutdown();
    }
}

impl Drop for ServerHandle {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Binds `addr` (port 0 picks a free port) and serves on a background thread.
pub fn spawn(loaded: Loaded, addr: SocketAddr, opts: &ServeOptions) -> Result<ServerHandle> {
    let st = state(loaded, opts);
    let scheduler = st.scheduler.clone();
    let rt = runtime()?;
    let listener = rt
        .block_on(tokio::net::TcpListener::bind(addr))
        .with_context(|| format!("cannot listen on {addr}"))?;
    let addr = listener.local_addr()?;
    let (tx, rx) = watch::channel(false);
    let thread = std::thread::Builder::new()
        .name("http-server".into())
        .spawn(move || {
            let (lim, stats) = (st.limits, st.conn_stats.clone());
            rt.block_on(conn::serve(listener, app(st), lim, stats, rx));
        })?;
    Ok(ServerHandle {
        addr,
        scheduler,
        stop: Some(tx),
        thread: Some(thread),
    })
}

/// Serves on `addr` until Ctrl-C.
pub fn run(loaded: Loaded, addr: SocketAddr, opts: &ServeOptions) -> Result<()> {
    let st = state(loaded, opts);
    let scheduler = st.scheduler.clone();
    let rt = runtime()?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr}"))?;
        eprintln!(
            "serving `{}` on http://{} (POST /v1/completions, POST /v1/chat/completions, GET /v1/models[/{{id}}], GET /health); Ctrl-C stops",
            st.model_name,
            listener.local_addr()?
        );
        let (tx, rx) = watch::channel(false);
        tokio::spawn(async move {
            let _ = tokio::signal::ctrl_c().await;
            eprintln!("shutting down");
            let _ = tx.send(true);
        });
        let (lim, stats) = (st.limits, st.conn_stats.clone());
        conn::serve(listener, app(st), lim, stats, rx).await;
        anyhow::Ok(())
    })?;
    scheduler.shutdown();
    Ok(())
}
