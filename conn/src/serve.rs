//! The accept loop: admits each connection, serves it in a task of its own under its
//! timers, and on shutdown drains the requests in flight.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::task::AtomicWaker;
use hyper::body::{Body as HttpBody, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulConnection;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::conns::{ConnState, Conns};
pub use crate::track::ProgressIo;
use crate::track::{ActiveGuard, TrackedBody};
use crate::workers::Workers;

/// How long requests in flight may take to finish after shutdown.
const DRAIN: Duration = Duration::from_secs(10);

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

/// What a listener does with a connection before HTTP: nothing ([`Plain`]), or a TLS
/// handshake, giving the stream HTTP is served over. It runs under the connection's
/// header timeout, and a connection shed meanwhile ends it.
pub trait Handshake: Clone + Send + Sync + 'static {
    type Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static;
    fn handshake(
        &self,
        io: ProgressIo,
    ) -> impl Future<Output = std::io::Result<Self::Stream>> + Send + 'static;
}

/// Plain HTTP: the socket as it is.
#[derive(Debug, Clone, Copy)]
pub struct Plain;

impl Handshake for Plain {
    type Stream = ProgressIo;
    fn handshake(
        &self,
        io: ProgressIo,
    ) -> impl Future<Output = std::io::Result<ProgressIo>> + Send + 'static {
        std::future::ready(Ok(io))
    }
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
    serve_on(listener, conns, make, shutdown, Plain, None).await
}

/// [`serve`] with a handshake before HTTP on every connection (TLS), each connection
/// served on one of `workers`' threads when given (else on the runtime this runs on).
pub async fn serve_on<S, F, H>(
    listener: TcpListener,
    conns: Arc<Conns>,
    make: F,
    shutdown: CancellationToken,
    handshake: H,
    workers: Option<Arc<Workers>>,
) -> std::io::Result<()>
where
    S: ConnService,
    F: Fn(SocketAddr) -> S,
    H: Handshake,
{
    let http = Arc::new(http());
    let tasks = TaskTracker::new();
    while let Some((stream, peer)) = accept(&listener, &conns, &shutdown).await {
        if !conns.admit() {
            drop(stream);
            continue;
        }
        let _ = stream.set_nodelay(true);
        // Entered in the table at once: the cap counts it before it is served.
        let (id, state, kill) = conns.register();
        let conn = Conn {
            peer,
            id,
            state,
            kill,
            service: make(peer),
            http: http.clone(),
            conns: conns.clone(),
            shutdown: shutdown.clone(),
            handshake: handshake.clone(),
        };
        match &workers {
            None => {
                tasks.spawn(conn.run(stream));
            }
            Some(workers) => {
                // The socket leaves this runtime's reactor for the worker's.
                let Ok(stream) = stream.into_std() else {
                    conns.remove(conn.id);
                    continue;
                };
                let (handle, load) = workers.pick();
                tasks.spawn_on(
                    async move {
                        let _load = load;
                        match TcpStream::from_std(stream) {
                            Ok(stream) => conn.run(stream).await,
                            Err(_) => conn.conns.remove(conn.id),
                        }
                    },
                    handle,
                );
            }
        }
    }
    drop(listener);
    drain(tasks).await;
    Ok(())
}

/// An accepted connection and what serving it takes.
struct Conn<S, H> {
    peer: SocketAddr,
    id: u64,
    state: Arc<ConnState>,
    kill: CancellationToken,
    service: S,
    http: Arc<Builder<TokioExecutor>>,
    conns: Arc<Conns>,
    shutdown: CancellationToken,
    handshake: H,
}

impl<S: ConnService, H: Handshake> Conn<S, H> {
    /// Runs the handshake and HTTP under the connection's timers, and removes it from
    /// the table when it ends.
    async fn run(self, stream: TcpStream) {
        let Conn {
            peer,
            id,
            state,
            kill,
            service,
            http,
            conns,
            shutdown,
            handshake,
        } = self;
        // Out of the table however the task ends (a panic, its runtime dropped).
        let _entry = Entry(&conns, id);
        let service = tracked(service, state.clone(), conns.clone());
        let io = ProgressIo::new(stream, state.clone(), conns.epoch_ms);
        let limit = conns.settings.header_timeout;
        let shaking = handshake.handshake(io);
        let stream = tokio::select! {
            r = tokio::time::timeout(limit, shaking) => r.ok().and_then(Result::ok),
            () = kill.cancelled() => None,
            () = shutdown.cancelled() => None,
        };
        if let Some(stream) = stream {
            let conn = http.serve_connection_with_upgrades(TokioIo::new(stream), service);
            watch(conn, peer, &conns, &state, &kill, &shutdown).await;
        }
    }
}

/// A connection's place in the table, given up when dropped.
struct Entry<'a>(&'a Conns, u64);

impl Drop for Entry<'_> {
    fn drop(&mut self) {
        self.0.remove(self.1);
    }
}

/// hyper's settings for both protocols: a buffer limit for HTTP/1.1, a stream cap and
/// keep-alive pings for HTTP/2. hyper's own HTTP/1.1 header timer is off: the
/// connection's deadline (`Conns::deadline`) already bounds every head, the first by
/// `header_timeout` from accept and each later one by `header_timeout` from its first
/// byte (and `idle_timeout` from the previous response), and hyper's timer would cost a
/// timer allocation and two updates of the runtime's timer wheel (under its lock) per
/// request.
fn http() -> Builder<TokioExecutor> {
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(None)
        .max_buf_size(64 * 1024);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(256)
        .keep_alive_interval(Some(Duration::from_secs(20)))
        .keep_alive_timeout(Duration::from_secs(20));
    builder
}

/// The next connection, or `None` once `shutdown` fires.
async fn accept(
    listener: &TcpListener,
    conns: &Conns,
    shutdown: &CancellationToken,
) -> Option<(TcpStream, SocketAddr)> {
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => return Some(a),
                Err(e) => {
                    // Out of descriptors (or another transient failure): close the
                    // longest-idle connection and try again, else back off briefly.
                    conns.accept_failed(&e);
                    if conns.shed_one() {
                        tokio::task::yield_now().await;
                    } else {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
            },
            () = shutdown.cancelled() => return None,
        }
    }
}

/// The connection's service as hyper runs it: each request marks the connection busy
/// until its response body is sent.
fn tracked<S: ConnService>(
    service: S,
    state: Arc<ConnState>,
    conns: Arc<Conns>,
) -> impl hyper::service::Service<
    Request<Incoming>,
    Response = Response<TrackedBody<S::Body>>,
    Error = Infallible,
    Future: Send + 'static,
> + Send
       + 'static {
    hyper::service::service_fn(move |req: Request<Incoming>| {
        if req.version() == hyper::Version::HTTP_2 {
            state.http2.store(true, Ordering::Relaxed);
        }
        let guard = ActiveGuard::new(state.clone(), &conns);
        let fut = service.call(req);
        async move {
            let resp = fut.await;
            Ok::<_, Infallible>(resp.map(|inner| TrackedBody::new(inner, guard)))
        }
    })
}

/// Runs one connection until it ends, is shed (`kill`), passes its deadline or stalls;
/// on `shutdown` it is asked to finish the requests it has and take no more. The
/// watchers (`kill`, `shutdown`, the deadline) are polled only when one of them woke the
/// task, not on each of the connection's wake-ups (every poll of a token takes its lock).
async fn watch<C>(
    conn: C,
    peer: SocketAddr,
    conns: &Conns,
    state: &ConnState,
    kill: &CancellationToken,
    shutdown: &CancellationToken,
) where
    C: GracefulConnection,
    C::Error: std::fmt::Display,
{
    let woke = Arc::new(WatchersWoke::default());
    let watchers_waker = std::task::Waker::from(woke.clone());
    let mut conn = std::pin::pin!(conn);
    let mut killed = std::pin::pin!(kill.cancelled());
    let mut stopping = std::pin::pin!(shutdown.cancelled());
    let mut sleep = std::pin::pin!(tokio::time::sleep_until(conns.next_check(state).into()));
    let mut closing = false;
    std::future::poll_fn(|cx| {
        if let Poll::Ready(r) = conn.as_mut().poll(cx) {
            if let Err(e) = r {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
            return Poll::Ready(());
        }
        woke.task.register(cx.waker());
        if !woke.woken.swap(false, Ordering::AcqRel) {
            return Poll::Pending;
        }
        let mut watchers = Context::from_waker(&watchers_waker);
        if killed.as_mut().poll(&mut watchers).is_ready() {
            return Poll::Ready(());
        }
        if !closing && stopping.as_mut().poll(&mut watchers).is_ready() {
            closing = true;
            conn.as_mut().graceful_shutdown();
            // The connection must be polled again to act on it.
            cx.waker().wake_by_ref();
        }
        while sleep.as_mut().poll(&mut watchers).is_ready() {
            if conns.expired(state) {
                return Poll::Ready(());
            }
            // (At least a few ms on: the coarse clock may not have reached the check.)
            let next = conns
                .next_check(state)
                .max(std::time::Instant::now() + Duration::from_millis(10));
            sleep.as_mut().reset(next.into());
        }
        Poll::Pending
    })
    .await
}

/// Whether one of a connection's watchers woke its task (starts true: they are polled
/// once to register).
struct WatchersWoke {
    woken: AtomicBool,
    task: AtomicWaker,
}

impl Default for WatchersWoke {
    fn default() -> Self {
        WatchersWoke {
            woken: AtomicBool::new(true),
            task: AtomicWaker::new(),
        }
    }
}

impl std::task::Wake for WatchersWoke {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        self.task.wake();
    }
}

/// Waits for the connections' tasks to end, up to [`DRAIN`].
async fn drain(tasks: TaskTracker) {
    tasks.close();
    if tokio::time::timeout(DRAIN, tasks.wait()).await.is_err() {
        tracing::warn!("closing connections still open after 10s");
    }
}
