//! [`HttpRecorder`]: a loopback HTTP server that keeps every request (a forge's API
//! stand-in).

/// One request an [`HttpRecorder`] received.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    /// Header names lower-cased.
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

/// A loopback HTTP server that answers every request `201 {"id":<n>}` and keeps it: a stand-in
/// for a forge's API (commit statuses) or a notification endpoint, checked after the
/// fact. [`HttpRecorder::answering`] scripts its answers.
pub struct HttpRecorder {
    pub port: u16,
    requests: std::sync::Arc<std::sync::Mutex<Vec<Recorded>>>,
}

impl HttpRecorder {
    pub fn start() -> HttpRecorder {
        HttpRecorder::answering(&[201])
    }

    /// A recorder whose n-th request gets the n-th status of `statuses` (the last one
    /// from there on).
    pub fn answering(statuses: &[u16]) -> HttpRecorder {
        use std::io::{BufRead, Read, Write};
        let statuses = std::sync::Arc::new(statuses.to_vec());
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let requests = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let kept = requests.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let kept = kept.clone();
                let statuses = statuses.clone();
                std::thread::spawn(move || {
                    let mut reader = std::io::BufReader::new(&stream);
                    let mut line = String::new();
                    if reader.read_line(&mut line).is_err() {
                        return;
                    }
                    let mut parts = line.split_whitespace();
                    let method = parts.next().unwrap_or("").to_string();
                    let path = parts.next().unwrap_or("").to_string();
                    let mut headers = Vec::new();
                    loop {
                        let mut h = String::new();
                        if reader.read_line(&mut h).is_err() || h.trim().is_empty() {
                            break;
                        }
                        if let Some((k, v)) = h.split_once(':') {
                            headers.push((k.trim().to_lowercase(), v.trim().to_string()));
                        }
                    }
                    let len = headers
                        .iter()
                        .find(|(k, _)| k == "content-length")
                        .and_then(|(_, v)| v.parse::<usize>().ok())
                        .unwrap_or(0);
                    let mut body = vec![0; len];
                    let _ = reader.read_exact(&mut body);
                    let status = {
                        let mut kept = kept.lock().expect("not poisoned");
                        kept.push(Recorded {
                            method,
                            path,
                            headers,
                            body: String::from_utf8_lossy(&body).into_owned(),
                        });
                        let n = kept.len() - 1;
                        (statuses[n.min(statuses.len() - 1)], n + 1)
                    };
                    // `id`: what a forge answers a new comment with (its n-th request).
                    let (status, id) = status;
                    let body = format!("{{\"id\":{id}}}");
                    let mut w = &stream;
                    let _ = w.write_all(
                        format!("HTTP/1.1 {status} Scripted\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}", body.len()).as_bytes(),
                    );
                });
            }
        });
        HttpRecorder { port, requests }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.requests.lock().expect("not poisoned").clone()
    }
}
