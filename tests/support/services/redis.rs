//! [`Redis`]: a throwaway `redis-server` without persistence, plain or TLS-only.

use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::Duration;

use super::*;
use crate::{free_port, wait_for_port, TempDir};

/// A throwaway `redis-server` without persistence: a restart loses everything, the
/// hardest case for the log bus. [`Redis::start_tls`] serves TLS only, with a CA of its own.
pub struct Redis {
    pub port: u16,
    child: Option<Child>,
    tls: Option<TempDir>,
}

impl Redis {
    pub fn start() -> Redis {
        let mut r = Redis {
            port: free_port(),
            child: None,
            tls: None,
        };
        r.spawn();
        r
    }

    /// TLS on the port (no plain port), a certificate for `localhost` signed by a test CA.
    pub fn start_tls() -> Redis {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = |name: &str| dir.path().join(name).display().to_string();
        let openssl = |args: &[&str]| run_ok(Command::new("openssl").args(args));
        openssl(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=cdeploy test CA",
            "-keyout",
            &p("ca.key"),
            "-out",
            &p("ca.pem"),
        ]);
        openssl(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=localhost",
            "-keyout",
            &p("redis.key"),
            "-out",
            &p("redis.csr"),
        ]);
        std::fs::write(
            dir.path().join("ext.cnf"),
            "basicConstraints=CA:FALSE\nsubjectAltName=DNS:localhost,IP:127.0.0.1\n",
        )
        .expect("write ext.cnf");
        openssl(&[
            "x509",
            "-req",
            "-in",
            &p("redis.csr"),
            "-CA",
            &p("ca.pem"),
            "-CAkey",
            &p("ca.key"),
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            &p("ext.cnf"),
            "-out",
            &p("redis.pem"),
        ]);
        let mut r = Redis {
            port: free_port(),
            child: None,
            tls: Some(dir),
        };
        r.spawn();
        r
    }

    fn spawn(&mut self) {
        let mut cmd = Command::new(find_program("REDIS_SERVER", &[], "redis-server"));
        match &self.tls {
            None => {
                cmd.args(["--port", &self.port.to_string()]);
            }
            Some(dir) => {
                let p = |name: &str| dir.path().join(name);
                cmd.args(["--port", "0", "--tls-port", &self.port.to_string()])
                    .arg("--tls-cert-file")
                    .arg(p("redis.pem"))
                    .arg("--tls-key-file")
                    .arg(p("redis.key"))
                    .arg("--tls-ca-cert-file")
                    .arg(p("ca.pem"))
                    .args(["--tls-auth-clients", "no"]);
            }
        }
        let child = cmd
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(log_target())
            .stderr(log_target())
            .spawn()
            .expect("start redis-server (install it with ./install.sh --dev)");
        self.child = Some(child);
        wait_for_port(self.port, Duration::from_secs(10));
    }

    pub fn url(&self) -> String {
        match self.tls {
            None => format!("redis://127.0.0.1:{}/", self.port),
            Some(_) => format!("rediss://localhost:{}/", self.port),
        }
    }

    /// The CA that signed a TLS server's certificate (for `REDIS_CA_CERT`).
    pub fn ca_file(&self) -> Option<PathBuf> {
        self.tls.as_ref().map(|d| d.path().join("ca.pem"))
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Kill and start again on the same port, empty.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}
