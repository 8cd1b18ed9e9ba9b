//! A connection's timers against a real listener: the first request head must be
//! complete within the header timeout, and each later one within the idle timeout of the
//! previous response, however slowly its bytes trickle in.

use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, Instant};

use cdeploy_conn::{serve, ConnService, ConnSettings, Conns};
use hyper::body::Incoming;
use hyper::{Request, Response};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

#[derive(Clone)]
struct Ok200;

impl ConnService for Ok200 {
    type Body = String;
    fn call(
        &self,
        _req: Request<Incoming>,
    ) -> Pin<Box<dyn Future<Output = Response<String>> + Send>> {
        Box::pin(async { Response::new("ok".to_string()) })
    }
}

const HEADER: Duration = Duration::from_secs(2);
const IDLE: Duration = Duration::from_secs(4);
/// How late a close may come: the deadline is checked on the coarse clock, and a
/// loaded test machine is slow to schedule. (Less than `IDLE - HEADER`: a later head
/// closed at the idle timeout rather than its own fails.)
const SLACK: Duration = Duration::from_millis(1500);

async fn server() -> (std::net::SocketAddr, CancellationToken) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let conns = Conns::new(ConnSettings {
        max_connections: 64,
        header_timeout: HEADER,
        idle_timeout: IDLE,
    });
    let shutdown = CancellationToken::new();
    tokio::spawn(serve(listener, conns, |_| Ok200, shutdown.clone()));
    (addr, shutdown)
}

/// Sends one byte of `head` every 200 ms until the server closes the connection, and
/// says how long that took (`None`: it sent the whole head and was still open).
async fn trickle(stream: &mut TcpStream, head: &[u8]) -> Option<Duration> {
    let start = Instant::now();
    for b in head {
        if stream.write_all(&[*b]).await.is_err() {
            return Some(start.elapsed());
        }
        let mut buf = [0u8; 64];
        match tokio::time::timeout(Duration::from_millis(200), stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return Some(start.elapsed()),
            Ok(Ok(_)) => panic!("an answer to an incomplete head"),
            Err(_) => {}
        }
    }
    None
}

/// A head long enough to outlast both timers at one byte per 200 ms.
fn slow_head() -> Vec<u8> {
    let mut head = b"GET / HTTP/1.1\r\nHost: a\r\n".to_vec();
    head.extend(std::iter::repeat_n(b"X-Pad: y\r\n".iter().copied(), 10).flatten());
    head
}

/// A connection that got one answer, ready for the next request.
async fn answered(addr: std::net::SocketAddr) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 1024];
    let n = stream.read(&mut buf).await.unwrap();
    let answer = String::from_utf8_lossy(&buf[..n]);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    stream
}

fn within(took: Duration, limit: Duration) {
    assert!(
        took + Duration::from_millis(300) >= limit,
        "{took:?} < {limit:?}"
    );
    assert!(took < limit + SLACK, "{took:?} > {limit:?}");
}

#[tokio::test]
async fn a_trickled_first_head_is_closed_at_the_header_timeout() {
    let (addr, shutdown) = server().await;
    let mut stream = TcpStream::connect(addr).await.unwrap();
    within(
        trickle(&mut stream, &slow_head()).await.expect("closed"),
        HEADER,
    );
    shutdown.cancel();
}

#[tokio::test]
async fn a_trickled_later_head_is_closed_at_the_header_timeout_from_its_first_byte() {
    let (addr, shutdown) = server().await;
    let mut stream = answered(addr).await;
    within(
        trickle(&mut stream, &slow_head()).await.expect("closed"),
        HEADER,
    );
    shutdown.cancel();
}

#[tokio::test]
async fn a_head_begun_late_is_closed_at_the_idle_timeout_from_the_last_answer() {
    let (addr, shutdown) = server().await;
    let mut stream = answered(addr).await;
    let answered_at = Instant::now();
    // Silent for most of the idle timeout, then trickling: the idle deadline comes
    // first, a second before the head's own would.
    tokio::time::sleep(IDLE - Duration::from_secs(1)).await;
    trickle(&mut stream, &slow_head()).await.expect("closed");
    let took = answered_at.elapsed();
    assert!(took + Duration::from_millis(300) >= IDLE, "{took:?}");
    assert!(took < IDLE + Duration::from_millis(800), "{took:?}");
    shutdown.cancel();
}

/// An HTTP/2 connection idle between streams is bounded by the idle timeout alone: the
/// frames it reads meanwhile (here the client's pings) are not a request head starting.
#[tokio::test]
async fn an_idle_http2_connection_that_pings_lives_until_the_idle_timeout() {
    use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
    let (addr, shutdown) = server().await;
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .keep_alive_interval(Duration::from_millis(300))
        .keep_alive_while_idle(true)
        .handshake::<_, String>(TokioIo::new(stream))
        .await
        .unwrap();
    let closed = tokio::spawn(conn);
    let get = || Request::get("http://a/").body(String::new()).unwrap();
    let answered = sender.send_request(get()).await.unwrap();
    assert_eq!(answered.status(), 200);
    drop(answered);
    let answered_at = Instant::now();
    // Past the header timeout (and its slack), pinging all along: still served.
    tokio::time::sleep(HEADER + SLACK).await;
    let again = sender.send_request(get()).await.expect("still open");
    assert_eq!(again.status(), 200);
    drop(again);
    // And closed at the idle timeout from that answer.
    let again_at = Instant::now();
    let _ = tokio::time::timeout(IDLE + SLACK, closed)
        .await
        .expect("closed");
    let took = again_at.elapsed();
    assert!(
        took + Duration::from_millis(300) >= IDLE,
        "{took:?} after {:?}",
        answered_at.elapsed()
    );
    shutdown.cancel();
}
