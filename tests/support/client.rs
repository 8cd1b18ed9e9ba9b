//! Clients of a running server: the CLI's output ([`CliOutput`]), web pages
//! ([`Page`]), the API ([`Api`]) and raw HTTP bytes.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Output;
use std::time::Duration;

pub struct CliOutput {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl From<Output> for CliOutput {
    fn from(o: Output) -> Self {
        CliOutput {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}

impl CliOutput {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "stdout is not JSON ({e}): {}\nstderr: {}",
                self.stdout, self.stderr
            )
        })
    }

    #[track_caller]
    pub fn assert_code(&self, code: i32) -> &Self {
        assert_eq!(
            self.code, code,
            "exit code\n--- stdout\n{}\n--- stderr\n{}",
            self.stdout, self.stderr
        );
        self
    }
}

pub struct Page {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: String,
}

impl From<reqwest::blocking::Response> for Page {
    fn from(r: reqwest::blocking::Response) -> Self {
        Page {
            status: r.status().as_u16(),
            headers: r.headers().clone(),
            body: r.text().unwrap_or_default(),
        }
    }
}

impl Page {
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }
}

pub struct Api {
    pub base: String,
    pub token: Option<String>,
    pub http: reqwest::blocking::Client,
}

pub struct ApiResponse {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub text: String,
}

impl ApiResponse {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.text).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text))
    }

    pub fn error_code(&self) -> String {
        self.json()["error"]["code"]
            .as_str()
            .unwrap_or("")
            .to_string()
    }
}

impl Api {
    pub fn without_token(mut self) -> Self {
        self.token = None;
        self
    }

    pub fn with_token(mut self, t: &str) -> Self {
        self.token = Some(t.to_string());
        self
    }

    fn send(&self, rb: reqwest::blocking::RequestBuilder) -> ApiResponse {
        let rb = match &self.token {
            Some(t) => rb.bearer_auth(t),
            None => rb,
        };
        let r = rb.send().expect("API request");
        ApiResponse {
            status: r.status().as_u16(),
            headers: r.headers().clone(),
            text: r.text().unwrap_or_default(),
        }
    }

    pub fn get(&self, path: &str) -> ApiResponse {
        self.send(self.http.get(format!("{}{path}", self.base)))
    }

    pub fn post(&self, path: &str, body: &serde_json::Value) -> ApiResponse {
        self.send(self.http.post(format!("{}{path}", self.base)).json(body))
    }

    pub fn post_bytes(&self, path: &str, body: Vec<u8>) -> ApiResponse {
        self.send(
            self.http
                .post(format!("{}{path}", self.base))
                .header("content-type", "application/json")
                .body(body),
        )
    }

    pub fn delete(&self, path: &str) -> ApiResponse {
        self.send(self.http.delete(format!("{}{path}", self.base)))
    }

    pub fn put(&self, path: &str, body: &serde_json::Value) -> ApiResponse {
        self.send(self.http.put(format!("{}{path}", self.base)).json(body))
    }

    pub fn put_bytes(&self, path: &str, body: Vec<u8>) -> ApiResponse {
        self.send(self.http.put(format!("{}{path}", self.base)).body(body))
    }
}

/// Sends raw bytes to a port and returns the raw answer (for requests a client would
/// normalize, like `/../`).
pub fn raw_http(port: u16, request: &str) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    // The server may answer (and close) before reading everything: keep its answer.
    let _ = s.write_all(request.as_bytes());
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}
