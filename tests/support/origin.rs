//! A static HTTP origin over a directory that counts what it is asked: stands in for
//! a public bucket URL (the seed's `BASE_PATH`) in front of a standalone proxy.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

#[derive(Default)]
pub struct Counts {
    /// GET requests per path.
    pub gets: Mutex<HashMap<String, u64>>,
    /// Body bytes sent in all.
    pub bytes_sent: AtomicU64,
}

pub struct Origin {
    pub port: u16,
    pub counts: Arc<Counts>,
    stop: Arc<AtomicBool>,
}

impl Origin {
    /// Serves `root` (GET and HEAD, single `Range`s honored) on a free loopback port.
    pub fn start(root: &Path) -> Origin {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind origin");
        let port = listener.local_addr().unwrap().port();
        let counts = Arc::new(Counts::default());
        let stop = Arc::new(AtomicBool::new(false));
        let (root, c, st) = (root.to_path_buf(), counts.clone(), stop.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if st.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let (root, c) = (root.clone(), c.clone());
                std::thread::spawn(move || {
                    let _ = serve(conn, &root, &c);
                });
            }
        });
        Origin { port, counts, stop }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn total_gets(&self) -> u64 {
        self.counts.gets.lock().unwrap().values().sum()
    }

    pub fn gets_under(&self, prefix: &str) -> u64 {
        let gets = self.counts.gets.lock().unwrap();
        gets.iter()
            .filter(|(k, _)| k.starts_with(prefix))
            .map(|(_, v)| v)
            .sum()
    }
}

impl Drop for Origin {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

fn serve(conn: TcpStream, root: &Path, counts: &Counts) -> std::io::Result<()> {
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut out = conn;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let mut parts = line.split_whitespace();
        let (method, path) = (
            parts.next().unwrap_or("").to_string(),
            parts.next().unwrap_or("/").to_string(),
        );
        let mut range = None;
        loop {
            let mut h = String::new();
            reader.read_line(&mut h)?;
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                if k.eq_ignore_ascii_case("range") {
                    range = v
                        .trim()
                        .strip_prefix("bytes=")
                        .and_then(|r| r.split_once('-'))
                        .and_then(|(a, b)| Some((a.parse::<u64>().ok()?, b.parse::<u64>().ok()?)));
                }
            }
        }
        if method == "GET" {
            *counts.gets.lock().unwrap().entry(path.clone()).or_default() += 1;
        }
        let file: PathBuf = root.join(path.trim_start_matches('/'));
        let Ok(mut f) = std::fs::File::open(&file).and_then(|f| {
            if f.metadata()?.is_file() {
                Ok(f)
            } else {
                Err(std::io::ErrorKind::NotFound.into())
            }
        }) else {
            out.write_all(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n")?;
            continue;
        };
        let size = f.metadata()?.len();
        let (status, start, len) = match range {
            Some((a, b)) if a < size => ("206 Partial Content", a, b.min(size - 1) - a + 1),
            _ => ("200 OK", 0, size),
        };
        let mut head = format!("HTTP/1.1 {status}\r\ncontent-length: {len}\r\n");
        if status.starts_with("206") {
            head.push_str(&format!(
                "content-range: bytes {start}-{}/{size}\r\n",
                start + len - 1
            ));
        }
        head.push_str("\r\n");
        out.write_all(head.as_bytes())?;
        if method == "GET" {
            f.seek(SeekFrom::Start(start))?;
            let sent = std::io::copy(&mut (&mut f).take(len), &mut out)?;
            counts.bytes_sent.fetch_add(sent, Ordering::Relaxed);
        }
    }
}
