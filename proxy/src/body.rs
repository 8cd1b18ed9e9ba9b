//! Response bodies: bytes from memory, or a stream from storage.

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;

/// A response body: bytes from memory, or a stream from storage.
pub type Body = UnsyncBoxBody<Bytes, std::io::Error>;

pub(crate) fn full(data: Bytes) -> Body {
    Full::new(data)
        .map_err(|never| match never {})
        .boxed_unsync()
}

pub(crate) fn streamed(stream: cdeploy_storage::ByteStream) -> Body {
    use futures_util::TryStreamExt;
    StreamBody::new(stream.map_ok(Frame::data)).boxed_unsync()
}
