//! How a connection's activity is seen: a request is in progress until its response
//! body is sent ([`ActiveGuard`] inside a [`TrackedBody`]), and bytes move when the
//! socket reads or writes some ([`ProgressIo`], for the stall timeout).

use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Body as HttpBody, Frame, SizeHint};

use crate::conns::{ConnState, Conns};

/// Marks a request in progress until the response body is done (or dropped). (It
/// holds the connection's own state only: a count every connection shares would be
/// written by every core on every request.)
pub(crate) struct ActiveGuard {
    state: Arc<ConnState>,
    /// The connection table's epoch on the coarse clock.
    epoch_ms: u64,
}

impl ActiveGuard {
    pub(crate) fn new(state: Arc<ConnState>, conns: &Conns) -> Self {
        state.active.fetch_add(1, Ordering::AcqRel);
        state.requests.fetch_add(1, Ordering::Relaxed);
        // Its head is complete: the next one's timer starts at the next one's first byte.
        state.head_since.store(0, Ordering::Relaxed);
        state.progress.store(conns.now_ms(), Ordering::Relaxed);
        ActiveGuard {
            state,
            epoch_ms: conns.epoch_ms,
        }
    }
}

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        let now = crate::conns::ms_since(self.epoch_ms);
        self.state.idle_since.store(now, Ordering::Relaxed);
        self.state.active.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A response body that keeps its connection marked busy until it is sent.
pub(crate) struct TrackedBody<B> {
    inner: B,
    guard: Option<ActiveGuard>,
}

impl<B> TrackedBody<B> {
    pub(crate) fn new(inner: B, guard: ActiveGuard) -> Self {
        TrackedBody {
            inner,
            guard: Some(guard),
        }
    }
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
            self.guard = None;
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

/// The connection's socket, noting when bytes move (for the stall timeout). A TLS
/// listener's [`crate::Handshake`] wraps it.
pub struct ProgressIo {
    inner: tokio::net::TcpStream,
    state: Arc<ConnState>,
    /// The connection table's epoch on the coarse clock.
    epoch_ms: u64,
}

impl ProgressIo {
    pub(crate) fn new(inner: tokio::net::TcpStream, state: Arc<ConnState>, epoch_ms: u64) -> Self {
        ProgressIo {
            inner,
            state,
            epoch_ms,
        }
    }

    /// A write with slices of declared buffers, sent from their files
    /// ([`crate::sendfile`]) under the socket's readiness as tokio tracks it.
    fn poll_send_files(
        &mut self,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        use std::os::fd::AsFd;
        loop {
            std::task::ready!(self.inner.poll_write_ready(cx))?;
            let sock = &self.inner;
            match sock.try_io(tokio::io::Interest::WRITABLE, || {
                crate::sendfile::send(sock.as_fd(), bufs)
            }) {
                Ok(n) => {
                    if n > 0 {
                        self.moved();
                    }
                    return Poll::Ready(Ok(n));
                }
                // Readiness is cleared: the next poll waits for the socket.
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }

    fn moved(&self) -> u64 {
        let now = crate::conns::ms_since(self.epoch_ms);
        self.state.progress.store(now, Ordering::Relaxed);
        now
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
            let now = self.moved();
            // The first byte of a head between requests starts its header timeout.
            let state = &self.state;
            if state.active.load(Ordering::Acquire) == 0
                && state.head_since.load(Ordering::Relaxed) == 0
                && !state.http2.load(Ordering::Relaxed)
            {
                state.head_since.store(now + 1, Ordering::Relaxed);
            }
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
        if crate::sendfile::any_from_file(bufs) {
            return self.poll_send_files(cx, bufs);
        }
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
