//! [`FaultProxy`]: an HTTP proxy in front of moto that injects faults on command.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

/// What the [`FaultProxy`] does with requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Fault {
    /// Forward everything.
    None = 0,
    /// Answer every write (PUT/POST/DELETE) with S3's `500 InternalError`.
    FailWrites = 1,
    /// Unreachable: open connections are cut and new ones closed at once.
    Down = 2,
}

/// An HTTP proxy in front of moto that injects faults on command. It also mends one
/// deviation of moto from the ECS API: task containers' `cpu` and `memory`, strings in
/// ECS's answers, come from moto as numbers, which an SDK rightly refuses; and gives each
/// task's network interface the address its builder really sends from here (loopback).
pub struct FaultProxy {
    pub port: u16,
    mode: Arc<AtomicU8>,
    /// Writes answered with an injected error so far.
    failed_writes: Arc<AtomicU64>,
    /// Fail only this many more writes (then forward again); `u64::MAX` for all.
    budget: Arc<AtomicU64>,
    generation: Arc<AtomicU64>,
    runtime: tokio::runtime::Runtime,
}

impl FaultProxy {
    pub fn start(upstream: &str) -> FaultProxy {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let p = FaultProxy {
            port,
            mode: Arc::new(AtomicU8::new(Fault::None as u8)),
            failed_writes: Arc::new(AtomicU64::new(0)),
            budget: Arc::new(AtomicU64::new(u64::MAX)),
            generation: Arc::new(AtomicU64::new(0)),
            runtime,
        };
        let state = ProxyState {
            upstream: upstream.trim_end_matches('/').to_string(),
            http: reqwest::Client::new(),
            mode: p.mode.clone(),
            failed_writes: p.failed_writes.clone(),
            budget: p.budget.clone(),
            generation: p.generation.clone(),
        };
        p.runtime.spawn(accept_loop(listener, Arc::new(state)));
        p
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn set(&self, fault: Fault) {
        self.budget.store(u64::MAX, Ordering::SeqCst);
        self.mode.store(fault as u8, Ordering::SeqCst);
        // Connections opened before the change are cut, so the fault applies at once.
        self.generation.fetch_add(1, Ordering::SeqCst);
    }

    /// Fails the next `n` writes, then forwards again.
    pub fn fail_next_writes(&self, n: u64) {
        self.budget.store(n, Ordering::SeqCst);
        self.mode.store(Fault::FailWrites as u8, Ordering::SeqCst);
    }

    pub fn failed_writes(&self) -> u64 {
        self.failed_writes.load(Ordering::SeqCst)
    }
}

struct ProxyState {
    upstream: String,
    http: reqwest::Client,
    mode: Arc<AtomicU8>,
    failed_writes: Arc<AtomicU64>,
    budget: Arc<AtomicU64>,
    generation: Arc<AtomicU64>,
}

async fn accept_loop(listener: tokio::net::TcpListener, state: Arc<ProxyState>) {
    loop {
        let Ok((stream, _peer)): std::io::Result<(tokio::net::TcpStream, SocketAddr)> =
            listener.accept().await
        else {
            continue;
        };
        if state.mode.load(Ordering::SeqCst) == Fault::Down as u8 {
            drop(stream);
            continue;
        }
        let state = state.clone();
        tokio::spawn(async move {
            let generation = state.generation.load(Ordering::SeqCst);
            let svc_state = state.clone();
            let service = hyper::service::service_fn(move |req| {
                let state = svc_state.clone();
                async move {
                    // Down: the connection closes without an answer, as when unreachable.
                    if state.mode.load(Ordering::SeqCst) == Fault::Down as u8 {
                        return Err(std::io::Error::other("unreachable"));
                    }
                    Ok(forward(&state, req).await)
                }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
            let cut = async {
                while state.generation.load(Ordering::SeqCst) == generation {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            };
            tokio::select! {
                _ = conn => {}
                () = cut => {}
            }
        });
    }
}

type ProxyBody = http_body_util::Full<bytes::Bytes>;

async fn forward(
    state: &ProxyState,
    req: hyper::Request<hyper::body::Incoming>,
) -> hyper::Response<ProxyBody> {
    use http_body_util::BodyExt;
    let write = matches!(
        *req.method(),
        hyper::Method::PUT | hyper::Method::POST | hyper::Method::DELETE
    );
    if write
        && state.mode.load(Ordering::SeqCst) == Fault::FailWrites as u8
        && state
            .budget
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |b| {
                (b > 0).then(|| if b == u64::MAX { b } else { b - 1 })
            })
            .is_ok()
    {
        state.failed_writes.fetch_add(1, Ordering::SeqCst);
        let xml = "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>InternalError</Code><Message>We encountered an internal error. Please try again. (injected by the test)</Message></Error>";
        return hyper::Response::builder()
            .status(500)
            .header("content-type", "application/xml")
            .body(ProxyBody::new(xml.into()))
            .expect("response");
    }
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let url = format!(
        "{}{}",
        state.upstream,
        parts
            .uri
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/")
    );
    let mut out = state.http.request(parts.method.clone(), &url).body(body);
    for (name, value) in &parts.headers {
        if name != hyper::header::HOST && name != hyper::header::CONTENT_LENGTH {
            out = out.header(name, value);
        }
    }
    match out.send().await {
        Ok(resp) => {
            let mut builder = hyper::Response::builder().status(resp.status());
            for (name, value) in resp.headers() {
                if name != hyper::header::TRANSFER_ENCODING
                    && name != hyper::header::CONNECTION
                    && name != hyper::header::CONTENT_LENGTH
                {
                    builder = builder.header(name, value);
                }
            }
            let json = resp
                .headers()
                .get(hyper::header::CONTENT_TYPE)
                .is_some_and(|v| v.as_bytes().starts_with(b"application/x-amz-json"));
            let mut bytes = resp.bytes().await.unwrap_or_default();
            if json {
                bytes = mend_ecs_answer(bytes);
            }
            builder = builder.header(hyper::header::CONTENT_LENGTH, bytes.len());
            builder.body(ProxyBody::new(bytes)).expect("response")
        }
        Err(e) => hyper::Response::builder()
            .status(502)
            .body(ProxyBody::new(format!("upstream: {e}").into()))
            .expect("response"),
    }
}

/// `tasks[].containers[].cpu|memory` (and `task.…`) as ECS gives them: strings.
fn mend_ecs_answer(body: bytes::Bytes) -> bytes::Bytes {
    let Ok(mut v) = serde_json::from_slice::<Value>(&body) else {
        return body;
    };
    let mut mended = false;
    if let Some(tasks) = v.get_mut("tasks").and_then(Value::as_array_mut) {
        for t in tasks {
            mended |= mend_task(t);
        }
    }
    if let Some(t) = v.get_mut("task") {
        mended |= mend_task(t);
    }
    if mended {
        serde_json::to_vec(&v).map(Into::into).unwrap_or(body)
    } else {
        body
    }
}

fn mend_task(task: &mut Value) -> bool {
    let mut mended = false;
    // The test agent runs every task's container on this machine, so the task's network
    // interface is the loopback: moto makes up a 10.x address no process here has.
    for d in task
        .get_mut("attachments")
        .and_then(Value::as_array_mut)
        .into_iter()
        .flatten()
        .filter_map(|a| a.get_mut("details").and_then(Value::as_array_mut))
        .flatten()
    {
        if d["name"] == "privateIPv4Address" && d["value"] != "127.0.0.1" {
            d["value"] = Value::String("127.0.0.1".into());
            mended = true;
        }
    }
    for c in task
        .get_mut("containers")
        .and_then(Value::as_array_mut)
        .into_iter()
        .flatten()
    {
        for field in ["cpu", "memory"] {
            if let Some(n) = c.get(field).filter(|f| f.is_number()).cloned() {
                c[field] = Value::String(n.to_string());
                mended = true;
            }
        }
    }
    mended
}
