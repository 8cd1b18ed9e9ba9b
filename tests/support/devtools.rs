//! Headless Chromium driven over the DevTools protocol (CDP), for the dashboard's tests:
//! open a page, run script in it, freeze and resume it, take screenshots, and keep every
//! dialog, uncaught exception and console error (a Content-Security-Policy violation is
//! one) the page produced.
//!
//! Hand-written (JSON over tokio-tungstenite, already a dependency here) rather than
//! `chromiumoxide`: its typed bindings are generated from one protocol revision and
//! fail to read events of newer browsers (the machine's Chromium is 156), and the crate
//! would add a second reqwest and WebSocket stack and ~100k lines of bindings to every
//! CI build, for the ten commands these tests send. Messages here are plain JSON, so a
//! newer browser's extra fields and events are ignored.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::Message;

type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<Result<Value, String>>>>>;

/// What a page did that a test may want to assert never happened.
#[derive(Debug, Default, Clone)]
pub struct PageEvents {
    /// `alert`, `confirm` and `prompt` messages (each dismissed at once).
    pub dialogs: Vec<String>,
    /// Uncaught exceptions, console errors and browser log errors (CSP violations).
    pub errors: Vec<String>,
}

/// A headless Chromium with one connection to its DevTools endpoint.
pub struct Browser {
    child: Child,
    _profile: tempfile::TempDir,
    rt: tokio::runtime::Runtime,
    out: mpsc::UnboundedSender<String>,
    pending: Pending,
    events: Arc<Mutex<HashMap<String, PageEvents>>>,
    next: Arc<AtomicU64>,
}

/// One tab, attached in flat mode (its commands carry its session id).
pub struct Page<'b> {
    browser: &'b Browser,
    session: String,
    pub target: String,
}

fn chromium_binary() -> String {
    if let Ok(c) = std::env::var("CHROMIUM") {
        return c;
    }
    // Debian's `chromium` is a shell wrapper; the binary takes the same flags.
    for c in [
        "/usr/lib/chromium/chromium",
        "/usr/bin/chromium",
        "/usr/bin/chromium-browser",
    ] {
        if std::path::Path::new(c).exists() {
            return c.to_string();
        }
    }
    panic!("no Chromium found: run ./install.sh --dev (or set CHROMIUM)")
}

impl Browser {
    /// Starts Chromium and connects to it.
    pub fn start() -> Browser {
        let profile = tempfile::tempdir().expect("tempdir");
        let mut child = Command::new(chromium_binary())
            .args([
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-dev-shm-usage",
                "--remote-debugging-port=0",
                "--window-size=1280,900",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start chromium (install it with ./install.sh --dev)");
        let stderr = child.stderr.take().unwrap();
        let (found, url) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stderr).lines();
            let mut sent = false;
            for line in lines.by_ref().map_while(Result::ok) {
                if let Some(url) = line.strip_prefix("DevTools listening on ") {
                    let _ = found.send(url.trim().to_string());
                    sent = true;
                }
                if std::env::var_os("TEST_LOG").is_some() {
                    eprintln!("[chromium] {line}");
                }
            }
            if !sent {
                let _ = found.send(String::new());
            }
        });
        let url = url
            .recv_timeout(Duration::from_secs(30))
            .ok()
            .filter(|u| !u.is_empty())
            .expect("chromium printed its DevTools address");
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let pending: Pending = Arc::default();
        let events: Arc<Mutex<HashMap<String, PageEvents>>> = Arc::default();
        let (out, mut outgoing) = mpsc::unbounded_channel::<String>();
        let (ws, _) = rt
            .block_on(tokio_tungstenite::connect_async(url.as_str()))
            .expect("connect to chromium's DevTools");
        let (mut sink, mut stream) = ws.split();
        rt.spawn(async move {
            while let Some(text) = outgoing.recv().await {
                if sink.send(Message::Text(text.into())).await.is_err() {
                    break;
                }
            }
        });
        let (p, e, reply) = (pending.clone(), events.clone(), out.clone());
        rt.spawn(async move {
            while let Some(Ok(msg)) = stream.next().await {
                let Message::Text(text) = msg else { continue };
                let Ok(v) = serde_json::from_str::<Value>(&text) else {
                    continue;
                };
                if let Some(id) = v["id"].as_u64() {
                    let result = match v.get("error") {
                        Some(err) => Err(err.to_string()),
                        None => Ok(v["result"].clone()),
                    };
                    if let Some(tx) = p.lock().unwrap().remove(&id) {
                        let _ = tx.send(result);
                    }
                } else {
                    on_event(&v, &e, &reply);
                }
            }
        });
        Browser {
            child,
            _profile: profile,
            rt,
            out,
            pending,
            events,
            next: Arc::new(AtomicU64::new(1)),
        }
    }

    /// Sends a command (to a tab when `session` is given) and waits for its answer.
    pub fn call(
        &self,
        session: Option<&str>,
        method: &str,
        params: Value,
    ) -> Result<Value, String> {
        let id = self.next.fetch_add(1, Ordering::SeqCst);
        let (tx, rx) = oneshot::channel();
        self.pending.lock().unwrap().insert(id, tx);
        let mut msg = json!({ "id": id, "method": method, "params": params });
        if let Some(s) = session {
            msg["sessionId"] = json!(s);
        }
        self.out.send(msg.to_string()).map_err(|e| e.to_string())?;
        self.rt.block_on(async {
            match tokio::time::timeout(Duration::from_secs(60), rx).await {
                Ok(Ok(r)) => r,
                Ok(Err(_)) => Err("the DevTools connection closed".into()),
                Err(_) => Err(format!("{method}: no answer in 60 s")),
            }
        })
    }

    /// A new tab at `about:blank`, with page, runtime and log events on.
    pub fn page(&self) -> Page<'_> {
        let target = self
            .call(None, "Target.createTarget", json!({ "url": "about:blank" }))
            .expect("a new tab")["targetId"]
            .as_str()
            .unwrap()
            .to_string();
        let session = self
            .call(
                None,
                "Target.attachToTarget",
                json!({ "targetId": target, "flatten": true }),
            )
            .expect("attach to the tab")["sessionId"]
            .as_str()
            .unwrap()
            .to_string();
        self.events
            .lock()
            .unwrap()
            .insert(session.clone(), PageEvents::default());
        let page = Page {
            browser: self,
            session,
            target,
        };
        for domain in ["Page.enable", "Runtime.enable", "Log.enable"] {
            page.call(domain, json!({}));
        }
        page
    }
}

/// Keeps what a page did; dismisses dialogs so the page never hangs on one.
fn on_event(
    v: &Value,
    events: &Mutex<HashMap<String, PageEvents>>,
    reply: &mpsc::UnboundedSender<String>,
) {
    let Some(session) = v["sessionId"].as_str() else {
        return;
    };
    let params = &v["params"];
    let mut all = events.lock().unwrap();
    let Some(e) = all.get_mut(session) else {
        return;
    };
    match v["method"].as_str().unwrap_or_default() {
        "Page.javascriptDialogOpening" => {
            e.dialogs
                .push(params["message"].as_str().unwrap_or_default().to_string());
            let dismiss = json!({
                "id": 0, "sessionId": session,
                "method": "Page.handleJavaScriptDialog", "params": { "accept": false },
            });
            let _ = reply.send(dismiss.to_string());
        }
        "Runtime.exceptionThrown" => e.errors.push(format!(
            "exception: {}",
            params["exceptionDetails"]["exception"]["description"]
                .as_str()
                .or(params["exceptionDetails"]["text"].as_str())
                .unwrap_or_default()
        )),
        "Runtime.consoleAPICalled" if params["type"] == "error" => {
            e.errors.push(format!("console.error: {}", params["args"]))
        }
        "Log.entryAdded" if params["entry"]["level"] == "error" => e.errors.push(format!(
            "log ({}): {} {}",
            params["entry"]["source"].as_str().unwrap_or_default(),
            params["entry"]["text"].as_str().unwrap_or_default(),
            params["entry"]["url"].as_str().unwrap_or_default()
        )),
        _ => {}
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Page<'_> {
    /// Sends a command to this tab; panics on a protocol error.
    pub fn call(&self, method: &str, params: Value) -> Value {
        self.browser
            .call(Some(&self.session), method, params)
            .unwrap_or_else(|e| panic!("{method}: {e}"))
    }

    /// Opens `url` and waits for its document to load.
    pub fn goto(&self, url: &str) {
        self.call("Page.navigate", json!({ "url": url }));
        self.wait_for(
            "document.readyState === 'complete'",
            Duration::from_secs(30),
        );
    }

    /// Runs `expr` in the page (awaiting a promise) and answers its JSON value; panics
    /// on an exception.
    pub fn eval(&self, expr: &str) -> Value {
        self.try_eval(expr)
            .unwrap_or_else(|e| panic!("{expr}: {e}"))
    }

    pub fn try_eval(&self, expr: &str) -> Result<Value, String> {
        let r = self.browser.call(
            Some(&self.session),
            "Runtime.evaluate",
            json!({ "expression": expr, "awaitPromise": true, "returnByValue": true }),
        )?;
        if let Some(details) = r.get("exceptionDetails") {
            return Err(details["exception"]["description"]
                .as_str()
                .unwrap_or(&details.to_string())
                .to_string());
        }
        Ok(r["result"]["value"].clone())
    }

    /// Polls `expr` until it is truthy; answers its value.
    pub fn wait_for(&self, expr: &str, timeout: Duration) -> Value {
        let start = Instant::now();
        loop {
            let v = self.try_eval(expr).unwrap_or(Value::Null);
            let truthy =
                !matches!(&v, Value::Null | Value::Bool(false)) && v != json!(0) && v != json!("");
            if truthy {
                return v;
            }
            assert!(
                start.elapsed() < timeout,
                "waited {timeout:?} for `{expr}`; the page shows: {}",
                self.try_eval("document.body && document.body.innerText.slice(0, 2000)")
                    .unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `frozen` or `active` (Page Lifecycle): a frozen tab runs no script at all.
    pub fn set_lifecycle(&self, state: &str) {
        self.call("Page.setWebLifecycleState", json!({ "state": state }));
    }

    /// Emulates a viewport (`mobile`: a phone's).
    pub fn set_viewport(&self, width: u32, height: u32, mobile: bool) {
        self.call(
            "Emulation.setDeviceMetricsOverride",
            json!({ "width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile }),
        );
    }

    /// Emulates the system's colour scheme (`light` or `dark`).
    pub fn set_color_scheme(&self, scheme: &str) {
        self.call(
            "Emulation.setEmulatedMedia",
            json!({ "features": [{ "name": "prefers-color-scheme", "value": scheme }] }),
        );
    }

    /// A PNG of the viewport.
    pub fn screenshot(&self, path: &std::path::Path) {
        use base64::Engine;
        let r = self.call("Page.captureScreenshot", json!({ "format": "png" }));
        let png = base64::engine::general_purpose::STANDARD
            .decode(r["data"].as_str().unwrap())
            .unwrap();
        std::fs::write(path, png).unwrap();
    }

    /// Presses a key (`Tab`, `Enter`) as a user would.
    pub fn press(&self, key: &str, code: &str, key_code: u32) {
        for kind in ["keyDown", "keyUp"] {
            self.call(
                "Input.dispatchKeyEvent",
                json!({ "type": kind, "key": key, "code": code, "windowsVirtualKeyCode": key_code }),
            );
        }
    }

    /// What the page did so far.
    pub fn events(&self) -> PageEvents {
        self.browser.events.lock().unwrap()[&self.session].clone()
    }

    /// The errors the page logged, but for answers `expected` says were meant (a
    /// signed-out page's `401` from `GET /v1/session`).
    pub fn errors_except(&self, expected: impl Fn(&str) -> bool) -> Vec<String> {
        self.events()
            .errors
            .into_iter()
            .filter(|e| !expected(e))
            .collect()
    }
}
