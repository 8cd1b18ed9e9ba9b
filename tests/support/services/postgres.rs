//! [`Postgres`]: a throwaway cluster of the machine's PostgreSQL, run as its owner.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use super::*;
use crate::{free_port, wait_for_port, TempDir};

/// A Postgres cluster of its own (initdb + pg_ctl), trusting local connections.
pub struct Postgres {
    pub port: u16,
    dir: TempDir,
    bin: PathBuf,
}

impl Postgres {
    pub fn start() -> Postgres {
        let bin = find_program("PG_BIN", &pg_bin_dirs(), "");
        let tool = |name: &str| {
            if bin.as_os_str().is_empty() {
                PathBuf::from(name)
            } else {
                bin.join(name)
            }
        };
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let data = dir.path().join("data");
        if running_as_root() {
            // initdb refuses to run as root: the cluster belongs to the postgres user.
            run_ok(
                Command::new("chown")
                    .args(["-R", "postgres:postgres"])
                    .arg(dir.path()),
            );
        }
        run_ok(as_postgres(tool("initdb")).arg("-D").arg(&data).args([
            "-A",
            "trust",
            "-U",
            "postgres",
            "--no-sync",
        ]));
        run_ok(
            as_postgres(tool("pg_ctl"))
                .arg("-D")
                .arg(&data)
                .arg("-o")
                .arg(format!(
                    "-p {port} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
                    dir.path().display()
                ))
                .arg("-l")
                .arg(dir.path().join("log"))
                .args(["-w", "start"]),
        );
        wait_for_port(port, Duration::from_secs(30));
        Postgres {
            port,
            dir,
            bin: tool("pg_ctl"),
        }
    }

    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let mut c = as_postgres(self.bin.clone());
        let _ = c
            .arg("-D")
            .arg(self.dir.path().join("data"))
            .args(["-m", "immediate", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

fn running_as_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// A Postgres tool run as the cluster's owner: the `postgres` user when we are root.
fn as_postgres(program: PathBuf) -> Command {
    if running_as_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

/// Debian keeps the server binaries per version: the newest first.
fn pg_bin_dirs() -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|rd| rd.flatten().map(|e| e.path().join("bin")).collect())
        .unwrap_or_default();
    dirs.sort_by_key(|p| {
        p.parent()
            .and_then(|v| v.file_name())
            .and_then(|v| v.to_str())
            .and_then(|v| v.parse::<u32>().ok())
            .unwrap_or(0)
    });
    dirs.reverse();
    dirs.into_iter()
        .filter(|d| d.join("initdb").exists())
        .collect()
}
