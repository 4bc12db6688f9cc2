//! An OpenAI-compatible HTTP server: `POST /v1/completions`, `POST /v1/chat/completions`
//! (server-sent events with `stream: true`), `GET /v1/models`, `GET /health`. Requests are
//! decoded by the continuous-batching scheduler of `tinyllama-infer` on its own thread; the
//! async side (axum on a small tokio runtime) only parses, queues and streams. This crate is
//! the only one that depends on tokio.

pub mod bench;
pub mod client;
pub mod error;
pub mod handlers;
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

/// Server settings besides the model.
#[derive(Clone, Debug)]
pub struct ServeOptions {
    /// Clients must send `Authorization: Bearer KEY` when set.
    pub api_key: Option<String>,
    /// The name `/v1/models` lists and requests may name (default: the model directory's).
    pub model_name: Option<String>,
    pub scheduler: SchedulerConfig,
}

pub struct AppState {
    pub scheduler: Scheduler,
    pub tokenizer: Arc<Tokenizer>,
    pub template: Arc<ChatTemplate>,
    pub model_name: String,
    pub api_key: Option<String>,
    pub created: u64,
}

pub fn app(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/health", get(handlers::health))
        .route("/v1/models", get(handlers::models))
        .route("/v1/completions", post(handlers::completions))
        .route("/v1/chat/completions", post(handlers::chat))
        .fallback(handlers::not_found)
        .method_not_allowed_fallback(handlers::method_not_allowed)
        .with_state(state)
}

fn state(loaded: Loaded, opts: &ServeOptions) -> Arc<AppState> {
    let scheduler = Scheduler::start(Arc::new(loaded.runner), opts.scheduler);
    Arc::new(AppState {
        scheduler,
        tokenizer: Arc::new(loaded.tokenizer),
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
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ServerHandle {
    /// Stops accepting connections, finishes open ones and the decoding thread.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
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
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::Builder::new()
        .name("http-server".into())
        .spawn(move || {
            rt.block_on(async move {
                let _ = axum::serve(listener, app(st))
                    .with_graceful_shutdown(async {
                        let _ = rx.await;
                    })
                    .await;
            });
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
            "serving `{}` on http://{} (POST /v1/completions, POST /v1/chat/completions, GET /v1/models, GET /health); Ctrl-C stops",
            st.model_name,
            listener.local_addr()?
        );
        axum::serve(listener, app(st))
            .with_graceful_shutdown(async {
                let _ = tokio::signal::ctrl_c().await;
                eprintln!("shutting down");
            })
            .await
            .context("server error")
    })?;
    scheduler.shutdown();
    Ok(())
}
