//! Connections of the proxy and the API: a cap, timers counted from accept, and a fair
//! way to degrade under a flood.
//!
//! hyper serves each connection; this module decides which connections live:
//! * **Header timeout** — a connection that has not delivered a complete request head
//!   within `header_timeout` of being accepted is closed (silent and byte-trickling
//!   "slowloris" clients alike; hyper's own header timer starts at the first byte).
//! * **Idle timeout** — between keep-alive requests (HTTP/1.1) or with no open stream
//!   (HTTP/2) a connection may idle for `idle_timeout`; HTTP/2 also pings idle peers.
//! * **Stall timeout** — while a request runs, some bytes must move (request body in,
//!   response out) at least every `idle_timeout`: a client that stops reading a large
//!   response, or stops sending its upload, is closed (nginx's `send_timeout` and
//!   `client_body_timeout`), so slow readers cannot hold connections for ever.
//! * **Cap** — at most `max_connections` at once, never more than the process's open
//!   file limit allows (less a reserve for storage, the database, logs and builds). At
//!   the cap, or when `accept` fails for lack of descriptors, the connection idle the
//!   longest (waiting for a request, or kept alive between requests) is closed to make
//!   room, as nginx does with its "reusable" connections; a request in progress is never
//!   cut. Only when every connection is busy is the new one refused.
//!
//! Sheds, refusals and accept errors are counted and logged at most once per 10 s.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper::body::{Body as HttpBody, Frame, Incoming, SizeHint};
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Connection settings of one server (flags of the proxy and the server).
#[derive(Debug, Clone, Copy)]
pub struct ConnSettings {
    /// Most connections at once; `0` picks a value from the open-file limit.
    pub max_connections: usize,
    /// From accept to a complete first request head (nginx: `client_header_timeout` 60 s).
    pub header_timeout: Duration,
    /// Keep-alive idle time between requests (nginx: `keepalive_timeout` 75 s).
    pub idle_timeout: Duration,
}

impl Default for ConnSettings {
    fn default() -> Self {
        ConnSettings {
            max_connections: 0,
            header_timeout: Duration::from_secs(60),
            idle_timeout: Duration::from_secs(75),
        }
    }
}

/// Descriptors kept free of connections for everything else the process opens.
const FD_RESERVE: u64 = 128;
/// The cap when nothing else limits it.
const DEFAULT_MAX_CONNECTIONS: usize = 16_384;

/// The open-file limit's share for connections: `soft limit - reserve`, at least 16.
pub fn fd_budget() -> usize {
    match rustix::process::getrlimit(rustix::process::Resource::Nofile).current {
        // Unlimited.
        None => DEFAULT_MAX_CONNECTIONS,
        Some(soft) => {
            usize::try_from(soft.saturating_sub(FD_RESERVE).max(16)).unwrap_or(usize::MAX)
        }
    }
}

/// What one connection is doing, shared with its requests.
struct ConnState {
    /// Requests (HTTP/2 streams) being answered, response bodies included.
    active: AtomicUsize,
    /// Requests started on this connection.
    requests: AtomicU64,
    /// When `active` last dropped to 0 (or the accept), in ms since [`Conns::epoch`].
    idle_since: AtomicU64,
    /// When bytes last moved either way, in ms since [`Conns::epoch`].
    progress: AtomicU64,
}

struct Entry {
    state: Arc<ConnState>,
    kill: CancellationToken,
}

/// The connections of one process (the embedded server shares one across the API and
/// the proxy: they share its descriptors).
pub struct Conns {
    settings: ConnSettings,
    cap: usize,
    table: Mutex<HashMap<u64, Entry>>,
    next_id: AtomicU64,
    epoch: Instant,
    stats: Stats,
}

#[derive(Default)]
struct Stats {
    shed: AtomicU64,
    refused: AtomicU64,
    accept_errors: AtomicU64,
    last_report: Mutex<Option<Instant>>,
    last_error: Mutex<String>,
}

impl Conns {
    pub fn new(settings: ConnSettings) -> Arc<Self> {
        let budget = fd_budget();
        let cap = match settings.max_connections {
            0 => budget.min(DEFAULT_MAX_CONNECTIONS),
            n if n > budget => {
                tracing::warn!(
                    max_connections = n,
                    allowed = budget,
                    "the open-file limit allows fewer connections than configured; raise `ulimit -n`"
                );
                budget
            }
            n => n,
        };
        Arc::new(Conns {
            settings,
            cap,
            table: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            epoch: Instant::now(),
            stats: Stats::default(),
        })
    }

    /// The effective cap.
    pub fn cap(&self) -> usize {
        self.cap
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.table.lock().expect("not poisoned").len()
    }

    /// Connections closed to make room, and refused because all were busy.
    pub fn shed_and_refused(&self) -> (u64, u64) {
        (
            self.stats.shed.load(Ordering::Relaxed),
            self.stats.refused.load(Ordering::Relaxed),
        )
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    fn register(&self) -> (u64, Arc<ConnState>, CancellationToken) {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let state = Arc::new(ConnState {
            active: AtomicUsize::new(0),
            requests: AtomicU64::new(0),
            idle_since: AtomicU64::new(self.now_ms()),
            progress: AtomicU64::new(self.now_ms()),
        });
        let kill = CancellationToken::new();
        self.table.lock().expect("not poisoned").insert(
            id,
            Entry {
                state: state.clone(),
                kill: kill.clone(),
            },
        );
        (id, state, kill)
    }

    fn remove(&self, id: u64) {
        self.table.lock().expect("not poisoned").remove(&id);
    }

    /// Closes the connection idle the longest. False when every connection is busy.
    fn shed_one(&self) -> bool {
        let mut table = self.table.lock().expect("not poisoned");
        let victim = table
            .iter()
            .filter(|(_, e)| e.state.active.load(Ordering::Acquire) == 0)
            // Idle the longest; between equals, the one accepted first.
            .min_by_key(|(id, e)| (e.state.idle_since.load(Ordering::Relaxed), **id))
            .map(|(id, _)| *id);
        match victim {
            Some(id) => {
                if let Some(e) = table.remove(&id) {
                    e.kill.cancel();
                }
                self.stats.shed.fetch_add(1, Ordering::Relaxed);
                true
            }
            None => false,
        }
    }

    /// Makes room for one more connection; false when it must be refused.
    fn admit(&self) -> bool {
        if self.open() < self.cap || self.shed_one() {
            return true;
        }
        self.stats.refused.fetch_add(1, Ordering::Relaxed);
        self.report();
        false
    }

    fn accept_failed(&self, e: &std::io::Error) {
        self.stats.accept_errors.fetch_add(1, Ordering::Relaxed);
        *self.stats.last_error.lock().expect("not poisoned") = e.to_string();
        self.report();
    }

    /// One warning per 10 s at most, with the counts since the last one.
    fn report(&self) {
        let mut last = self.stats.last_report.lock().expect("not poisoned");
        if last.is_some_and(|t| t.elapsed() < Duration::from_secs(10)) {
            return;
        }
        *last = Some(Instant::now());
        let shed = self.stats.shed.load(Ordering::Relaxed);
        let refused = self.stats.refused.load(Ordering::Relaxed);
        let errors = self.stats.accept_errors.load(Ordering::Relaxed);
        let last_error = self.stats.last_error.lock().expect("not poisoned").clone();
        tracing::warn!(
            open = self.open(),
            cap = self.cap,
            shed_total = shed,
            refused_total = refused,
            accept_errors_total = errors,
            last_accept_error = %last_error,
            "connection pressure: closing the longest-idle connections to serve new ones"
        );
    }

    /// Whether a running request has moved no byte for `idle_timeout`.
    fn stalled(&self, state: &ConnState) -> bool {
        state.active.load(Ordering::Acquire) > 0
            && self
                .now_ms()
                .saturating_sub(state.progress.load(Ordering::Relaxed))
                >= self.settings.idle_timeout.as_millis() as u64
    }

    /// When the connection must close if it stays as it is (`None`: a request runs).
    fn deadline(&self, state: &ConnState) -> Option<Instant> {
        if state.active.load(Ordering::Acquire) > 0 {
            return None;
        }
        let limit = if state.requests.load(Ordering::Relaxed) == 0 {
            self.settings.header_timeout
        } else {
            self.settings.idle_timeout
        };
        let since = Duration::from_millis(state.idle_since.load(Ordering::Relaxed));
        Some(self.epoch + since + limit)
    }
}

/// Marks a request in progress until the response body is done (or dropped).
struct ActiveGuard {
    state: Arc<ConnState>,
    conns: Arc<Conns>,
}

impl ActiveGuard {
    fn new(state: Arc<ConnState>, conns: Arc<Conns>) -> Self {
        state.active.fetch_add(1, Ordering::AcqRel);
        state.requests.fetch_add(1, Ordering::Relaxed);
        state.progress.store(conns.now_ms(), Ordering::Relaxed);
        ActiveGuard { state, conns }
    }
}

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.state
            .idle_since
            .store(self.conns.now_ms(), Ordering::Relaxed);
        self.state.active.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A response body that keeps its connection marked busy until it is sent.
pub struct TrackedBody<B> {
    inner: B,
    _guard: Option<ActiveGuard>,
}

impl<B> HttpBody for TrackedBody<B>
where
    B: HttpBody<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(None) = polled {
            self._guard = None;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The connection's socket, noting when bytes move (for the stall timeout).
struct ProgressIo {
    inner: tokio::net::TcpStream,
    state: Arc<ConnState>,
    epoch: Instant,
}

impl ProgressIo {
    fn moved(&self) {
        self.state
            .progress
            .store(self.epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
    }
}

impl tokio::io::AsyncRead for ProgressIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.moved();
        }
        polled
    }
}

impl tokio::io::AsyncWrite for ProgressIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, data);
        if let Poll::Ready(Ok(n)) = polled {
            if n > 0 {
                self.moved();
            }
        }
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = polled {
            if n > 0 {
                self.moved();
            }
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// A service of `Request<Incoming>` for one connection (what [`serve`] runs).
pub trait ConnService: Clone + Send + 'static {
    type Body: HttpBody<Data = Bytes, Error: Into<Box<dyn std::error::Error + Send + Sync>>>
        + Send
        + Unpin
        + 'static;
    fn call(
        &self,
        req: Request<Incoming>,
    ) -> Pin<Box<dyn Future<Output = Response<Self::Body>> + Send>>;
}

/// Serves `listener` until `shutdown` fires, then lets requests in flight finish (up to
/// 10 s). `make` builds the service of a connection from its peer address.
pub async fn serve<S, F>(
    listener: TcpListener,
    conns: Arc<Conns>,
    make: F,
    shutdown: CancellationToken,
) -> std::io::Result<()>
where
    S: ConnService,
    F: Fn(SocketAddr) -> S,
{
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(conns.settings.header_timeout)
        .max_buf_size(64 * 1024);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(256)
        .keep_alive_interval(Some(Duration::from_secs(20)))
        .keep_alive_timeout(Duration::from_secs(20));
    let builder = Arc::new(builder);
    let tasks = tokio_util::task::TaskTracker::new();
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of descriptors (or another transient failure): close the
                    // longest-idle connection and try again, else back off briefly.
                    conns.accept_failed(&e);
                    if conns.shed_one() {
                        tokio::task::yield_now().await;
                    } else {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    continue;
                }
            },
            () = shutdown.cancelled() => break,
        };
        if !conns.admit() {
            drop(stream);
            continue;
        }
        let _ = stream.set_nodelay(true);
        let (id, state, kill) = conns.register();
        let service = make(peer);
        let svc_state = state.clone();
        let svc_conns = conns.clone();
        let hyper_service = hyper::service::service_fn(move |req: Request<Incoming>| {
            let guard = ActiveGuard::new(svc_state.clone(), svc_conns.clone());
            let fut = service.call(req);
            async move {
                let resp = fut.await;
                Ok::<_, Infallible>(resp.map(|inner| TrackedBody {
                    inner,
                    _guard: Some(guard),
                }))
            }
        });
        let (builder, conns, shutdown) = (builder.clone(), conns.clone(), shutdown.clone());
        tasks.spawn(async move {
            let io = ProgressIo {
                inner: stream,
                state: state.clone(),
                epoch: conns.epoch,
            };
            let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), hyper_service);
            tokio::pin!(conn);
            let mut closing = false;
            loop {
                let deadline = conns.deadline(&state);
                // While a request runs: when it stalls if no byte moves.
                let sleep = tokio::time::sleep_until(
                    deadline
                        .unwrap_or_else(|| {
                            let progress = state.progress.load(Ordering::Relaxed);
                            conns.epoch
                                + Duration::from_millis(progress)
                                + conns.settings.idle_timeout
                        })
                        .into(),
                );
                tokio::select! {
                    r = conn.as_mut() => {
                        if let Err(e) = r {
                            tracing::debug!(%peer, error = %e, "connection ended with an error");
                        }
                        break;
                    }
                    () = kill.cancelled() => break,
                    () = shutdown.cancelled(), if !closing => {
                        closing = true;
                        conn.as_mut().graceful_shutdown();
                    }
                    () = sleep => {
                        if conns.deadline(&state).is_some_and(|d| d <= Instant::now())
                            || conns.stalled(&state)
                        {
                            break;
                        }
                    }
                }
            }
            conns.remove(id);
        });
    }
    drop(listener);
    tasks.close();
    if tokio::time::timeout(Duration::from_secs(10), tasks.wait())
        .await
        .is_err()
    {
        tracing::warn!("closing connections still open after 10s");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idle_connections_are_shed_oldest_first_and_busy_ones_never() {
        let conns = Conns::new(ConnSettings {
            max_connections: 3,
            ..Default::default()
        });
        assert_eq!(conns.cap(), 3);
        let (a, sa, ka) = conns.register();
        std::thread::sleep(Duration::from_millis(5));
        let (_b, sb, kb) = conns.register();
        let (_c, _sc, kc) = conns.register();
        // `a` is busy: `b` is the longest idle.
        let busy = ActiveGuard::new(sa.clone(), conns.clone());
        assert!(conns.admit());
        assert!(kb.is_cancelled() && !ka.is_cancelled() && !kc.is_cancelled());
        assert!(conns.deadline(&sa).is_none());
        drop(busy);
        assert!(conns.deadline(&sa).is_some());
        // Everything busy: the newcomer is refused.
        let _g1 = ActiveGuard::new(sa, conns.clone());
        let _g2 = ActiveGuard::new(_sc, conns.clone());
        let (_d, sd, _kd) = conns.register();
        let _g3 = ActiveGuard::new(sd, conns.clone());
        assert!(!conns.admit());
        assert_eq!(conns.shed_and_refused(), (1, 1));
        // A running request that moves no byte for the idle timeout is stalled.
        let quick = Conns::new(ConnSettings {
            max_connections: 2,
            idle_timeout: Duration::from_millis(20),
            ..Default::default()
        });
        let (_q, sq, _kq) = quick.register();
        assert!(!quick.stalled(&sq), "idle is not stalled");
        let _busy = ActiveGuard::new(sq.clone(), quick.clone());
        assert!(!quick.stalled(&sq));
        std::thread::sleep(Duration::from_millis(30));
        assert!(quick.stalled(&sq), "no progress for the idle timeout");
        sq.progress.store(quick.now_ms(), Ordering::Relaxed);
        assert!(!quick.stalled(&sq), "bytes moved");
        conns.remove(a);
        let _ = sb;
    }
}
