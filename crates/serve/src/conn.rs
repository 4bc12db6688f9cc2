//! Connections: our own accept loop over hyper instead of `axum::serve`, because the server must
//! bound every wait a client can impose. Each connection gets a watchdog that closes it when
//!
//! - a request's headers have not all arrived `header_timeout` after its first byte (or after
//!   the connection opened, for a connection that sends nothing),
//! - it sits idle between requests for `idle_timeout` (keep-alive),
//!
//! while the request body is read by the handlers under `body_timeout` (see
//! [`crate::body`]). A request being handled or a response being streamed is never cut: its
//! cost is bounded by the request limits instead. At most `max_connections` are open at once;
//! one more is answered 503 and closed at once, so half-open sockets cannot pile up.

use crate::error::ApiError;
use axum::body::Body;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Notify, Semaphore};
use tower_service::Service;

/// How long clients may take and how many may be connected.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// From a request's first byte (or the connection's opening) to its last header line.
    pub header_timeout: Duration,
    /// For the whole request body once the headers are in.
    pub body_timeout: Duration,
    /// A keep-alive connection with no request in progress.
    pub idle_timeout: Duration,
    /// Open connections at most; more are answered 503 and closed.
    pub max_connections: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
            max_connections: 256,
        }
    }
}

/// Counters reported by `/health`.
#[derive(Default, Debug)]
pub struct ConnStats {
    pub open: AtomicUsize,
    /// Refused because `max_connections` were open.
    pub shed: AtomicU64,
    /// Closed by the header or idle timeout.
    pub timed_out: AtomicU64,
}

/// What the watchdog of one connection needs to know; times are milliseconds since `start`.
struct Activity {
    start: Instant,
    /// Last byte read or written, or the end of the last response.
    last: AtomicU64,
    /// When the first byte of a not yet dispatched request arrived (`NONE` when none).
    head_since: AtomicU64,
    /// Requests being handled (their response not yet fully sent).
    in_flight: AtomicUsize,
    requests: AtomicU64,
    changed: Notify,
}

const NONE: u64 = u64::MAX;

impl Activity {
    fn new() -> Self {
        Activity {
            start: Instant::now(),
            last: AtomicU64::new(0),
            head_since: AtomicU64::new(NONE),
            in_flight: AtomicUsize::new(0),
            requests: AtomicU64::new(0),
            changed: Notify::new(),
        }
    }

    fn now(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    fn on_read(&self) {
        let t = self.now();
        self.last.store(t, Ordering::Relaxed);
        if self.in_flight.load(Ordering::Acquire) == 0
            && self
                .head_since
                .compare_exchange(NONE, t, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
        {
            // The deadline moved earlier (idle → header timeout).
            self.changed.notify_one();
        }
    }

    fn on_write(&self) {
        self.last.store(self.now(), Ordering::Relaxed);
    }

    /// When the connection must close, or `None` while a request is being handled.
    fn deadline(&self, lim: &Limits) -> Option<Instant> {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return None;
        }
        let at = |ms: u64, d: Duration| self.start + Duration::from_millis(ms) + d;
        let head = self.head_since.load(Ordering::Acquire);
        Some(if head != NONE {
            at(head, lim.header_timeout)
        } else if self.requests.load(Ordering::Acquire) == 0 {
            // Connected but silent: as slow as a request that never finishes its headers.
            at(0, lim.header_timeout)
        } else {
            at(self.last.load(Ordering::Relaxed), lim.idle_timeout)
        })
    }
}

/// Marks a request as being handled until its response body has been sent (or dropped).
struct InFlight(Arc<Activity>);

impl InFlight {
    fn begin(a: Arc<Activity>) -> Self {
        a.in_flight.fetch_add(1, Ordering::AcqRel);
        a.requests.fetch_add(1, Ordering::AcqRel);
        a.head_since.store(NONE, Ordering::Release);
        InFlight(a)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.on_write();
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
        self.0.changed.notify_one();
    }
}

/// A response body that keeps its request counted as in flight until it is done.
struct Guarded {
    inner: Body,
    _flight: InFlight,
}

impl http_body::Body for Guarded {
    type Data = axum::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// The socket, noting every byte that moves.
struct Watched {
    io: TcpStream,
    act: Arc<Activity>,
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.io).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.act.on_read();
        }
        r
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.io).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.act.on_write();
        }
        r
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// Resolves when the connection has overstayed its header or idle timeout.
async fn watchdog(act: &Activity, lim: &Limits) {
    loop {
        match act.deadline(lim) {
            None => act.changed.notified().await,
            Some(d) if Instant::now() >= d => return,
            Some(d) => {
                tokio::select! {
                    _ = tokio::time::sleep_until(d.into()) => {}
                    _ = act.changed.notified() => {}
                }
            }
        }
    }
}

/// Answers a connection over the limit with 503 and closes it; bounded so that a client that
/// does not read cannot hold the task.
async fn shed(mut sock: TcpStream) {
    let body = ApiError::busy(
        "the server has too many open connections; retry later or reuse a keep-alive connection",
    )
    .body()
    .to_string();
    let reply = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 1\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        let _ = sock.write_all(reply.as_bytes()).await;
        let _ = sock.shutdown().await;
    })
    .await;
}

async fn serve_one(
    sock: TcpStream,
    router: Router,
    lim: Limits,
    stats: Arc<ConnStats>,
    mut stop: watch::Receiver<bool>,
) {
    let _ = sock.set_nodelay(true);
    let act = Arc::new(Activity::new());
    let io = Watched {
        io: sock,
        act: act.clone(),
    };
    let a = act.clone();
    let svc = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
        // Counted before the future runs so a dropped future still ends the request.
        let flight = InFlight::begin(a.clone());
        let mut router = router.clone();
        async move {
            let resp = match router.call(req.map(Body::new)).await {
                Ok(r) => r,
                Err(never) => match never {},
            };
            Ok::<_, Infallible>(resp.map(|inner| Guarded {
                inner,
                _flight: flight,
            }))
        }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .keep_alive(true)
        .serve_connection(TokioIo::new(io), svc);
    tokio::pin!(conn);
    let stopping = tokio::select! {
        _ = conn.as_mut() => false,
        _ = watchdog(&act, &lim) => {
            stats.timed_out.fetch_add(1, Ordering::Relaxed);
            false
        }
        r = stop.wait_for(|s| *s) => r.is_ok(),
    };
    if stopping {
        conn.as_mut().graceful_shutdown();
        // Requests in progress finish; a client that never reads is not waited for.
        let _ = tokio::time::timeout(lim.idle_timeout, conn.as_mut()).await;
    }
}

/// Accepts connections until `stop` turns true, then waits (bounded) for open ones to finish.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    lim: Limits,
    stats: Arc<ConnStats>,
    mut stop: watch::Receiver<bool>,
) {
    let slots = Arc::new(Semaphore::new(lim.max_connections.max(1)));
    loop {
        let sock = tokio::select! {
            r = listener.accept() => r,
            _ = stop.wait_for(|s| *s) => break,
        };
        let sock = match sock {
            Ok((s, _)) => s,
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                eprintln!("accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            stats.shed.fetch_add(1, Ordering::Relaxed);
            tokio::spawn(shed(sock));
            continue;
        };
        let (router, stats, stop) = (router.clone(), stats.clone(), stop.clone());
        stats.open.fetch_add(1, Ordering::Relaxed);
        tokio::spawn(async move {
            serve_one(sock, router, lim, stats.clone(), stop).await;
            stats.open.fetch_sub(1, Ordering::Relaxed);
            drop(permit);
        });
    }
    drop(listener);
    let give_up = Instant::now() + lim.idle_timeout + Duration::from_secs(1);
    while stats.open.load(Ordering::Relaxed) > 0 && Instant::now() < give_up {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
