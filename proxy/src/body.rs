//! Response bodies: bytes from memory, or a stream from storage or an upstream.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Frame, SizeHint};

/// A response body: bytes from memory (most answers), or a stream.
///
/// (Hand-written rather than a boxed `Full`: bytes from memory then cost no allocation
/// per response, and their exact length lets hyper write `Content-Length` itself.)
pub enum Body {
    /// Bytes already in memory; `None` once sent.
    Full(Option<Bytes>),
    Stream(UnsyncBoxBody<Bytes, std::io::Error>),
}

impl hyper::body::Body for Body {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        match self.get_mut() {
            Body::Full(data) => Poll::Ready(
                data.take()
                    .filter(|d| !d.is_empty())
                    .map(|d| Ok(Frame::data(d))),
            ),
            Body::Stream(stream) => Pin::new(stream).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Body::Full(data) => data.as_ref().is_none_or(Bytes::is_empty),
            Body::Stream(stream) => stream.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Body::Full(data) => SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64)),
            Body::Stream(stream) => stream.size_hint(),
        }
    }
}

pub(crate) fn full(data: Bytes) -> Body {
    Body::Full(Some(data))
}

/// The answer to HEAD: `resp` without its body, saying the length GET's would have
/// (when it is known: a body in memory).
pub(crate) fn without_body(resp: &mut hyper::Response<Body>) {
    use hyper::body::Body as _;
    if let Some(len) = resp.body().size_hint().exact() {
        resp.headers_mut()
            .insert(hyper::header::CONTENT_LENGTH, len.into());
    }
    *resp.body_mut() = full(Bytes::new());
}

pub(crate) fn streamed(stream: cdeploy_storage::ByteStream) -> Body {
    use futures_util::TryStreamExt;
    Body::Stream(StreamBody::new(stream.map_ok(Frame::data)).boxed_unsync())
}
