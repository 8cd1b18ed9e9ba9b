//! Running build commands: untrusted code, so each runs in the build's sandbox cell
//! (see [`crate::sandbox`]) with exactly the environment given here, is killed as a
//! whole on timeout, cancel or a limit, and every output line of stdout and stderr
//! becomes an event.
//!
//! # Layout
//! * this file — [`Runner`]: starting a command in the cell, watching its limits,
//!   killing it whole, and how it ended.
//! * `scrubbed` — [`scrubbed_env`], the only variables a build command sees.
//! * `output` — its output lines as log events.
//! * `diagnosis` — the one line that says why it failed.

mod diagnosis;
mod output;
mod scrubbed;

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use cdeploy_core::event::{EventBody, Step, Stream};
use tokio_util::sync::CancellationToken;

use self::diagnosis::Diagnosis;
use self::output::pump;
use crate::sandbox::Cell;
use crate::{BuildError, EventSink};

pub use scrubbed::scrubbed_env;

/// How often a running command's limits (disk, processes, memory) are checked.
const LIMIT_CHECK: Duration = Duration::from_secs(1);

/// Runs commands for one build.
pub struct Runner<'a> {
    pub sink: &'a dyn EventSink,
    pub cancel: &'a CancellationToken,
    pub deadline: Instant,
    pub timeout: Duration,
    pub env: Vec<(String, String)>,
    pub cell: &'a Cell<'a>,
}

impl Runner<'_> {
    /// Runs `sh -c cmd` in `dir` as `step`.
    pub async fn shell(&self, step: Step, cmd: &str, dir: &Path) -> Result<(), BuildError> {
        self.sink
            .emit(EventBody::system(step, format!("$ {cmd}")))
            .await;
        self.run(step, &["/bin/sh", "-c", cmd], dir, cmd, &[]).await
    }

    /// Runs a program with arguments (no shell) in `dir` as `step`, with `extra`
    /// variables on top of the build's environment (for this command only).
    pub async fn exec(
        &self,
        step: Step,
        argv: &[&str],
        dir: &Path,
        label: &str,
        extra: &[(String, String)],
    ) -> Result<(), BuildError> {
        self.run(step, argv, dir, label, extra).await
    }

    async fn run(
        &self,
        step: Step,
        argv: &[&str],
        dir: &Path,
        label: &str,
        extra: &[(String, String)],
    ) -> Result<(), BuildError> {
        let started = Instant::now();
        let mut env = self.env.clone();
        env.extend(extra.iter().cloned());
        let mut cmd = self.cell.command(argv, &env, dir);
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = crate::sandbox::spawn(cmd).await.map_err(|e| {
            BuildError::failed(format!("{}: cannot start `{label}`: {e}", step.as_str()))
        })?;
        let _group = GroupGuard {
            pgid: child.id().map(|p| p as i32),
            cell: self.cell,
        };
        let diagnosis = std::sync::Mutex::new(Diagnosis::default());
        let status = self.watch(&mut child, &diagnosis, step, label).await?;
        // A limit decides the outcome even when the command succeeded (a disk filler can
        // finish between two checks) or died of it (the kernel killed a process for
        // memory, a fork was refused, a file went over RLIMIT_FSIZE).
        if let Some(hit) = self.limit_hit().await {
            return Err(BuildError::Limit(hit.to_string()));
        }
        if file_size_exceeded(&status) {
            let limit = crate::sandbox::LimitHit::Disk(self.cell.limits().disk_bytes);
            return Err(BuildError::Limit(limit.to_string()));
        }
        if !status.success() {
            let diagnosis = diagnosis.into_inner().expect("not poisoned");
            return Err(failure(step, label, &status, diagnosis));
        }
        self.sink
            .emit(EventBody::system(
                step,
                format!("Done in {:.1}s", started.elapsed().as_secs_f64()),
            ))
            .await;
        Ok(())
    }

    /// Streams the command's output until it exits, checking the build's limits every
    /// [`LIMIT_CHECK`]; a cancel, the deadline or a limit ends it early.
    async fn watch(
        &self,
        child: &mut tokio::process::Child,
        diagnosis: &std::sync::Mutex<Diagnosis>,
        step: Step,
        label: &str,
    ) -> Result<std::process::ExitStatus, BuildError> {
        let out = pump(
            self.sink,
            diagnosis,
            step,
            Stream::Stdout,
            child.stdout.take().expect("piped"),
        );
        let err = pump(
            self.sink,
            diagnosis,
            step,
            Stream::Stderr,
            child.stderr.take().expect("piped"),
        );
        let wait = async {
            let (status, (), ()) = tokio::join!(child.wait(), out, err);
            status
        };
        tokio::pin!(wait);
        let mut check = tokio::time::interval(LIMIT_CHECK);
        loop {
            tokio::select! {
                s = &mut wait => return s.map_err(|e| BuildError::failed(format!("{}: waiting for `{label}` failed: {e}", step.as_str()))),
                () = self.cancel.cancelled() => return Err(BuildError::Canceled),
                () = tokio::time::sleep_until(self.deadline.into()) => return Err(BuildError::TimedOut(self.timeout.as_secs())),
                _ = check.tick() => {
                    if let Some(hit) = self.limit_hit().await {
                        return Err(BuildError::Limit(hit.to_string()));
                    }
                }
            }
        }
    }

    async fn limit_hit(&self) -> Option<crate::sandbox::LimitHit> {
        let m = self.cell.mounts();
        let mut dirs = vec![m.checkout.clone(), m.home.clone(), m.tmp.clone()];
        dirs.extend(m.cache.clone());
        let used = tokio::task::spawn_blocking(move || crate::sandbox::disk_usage(&dirs))
            .await
            .unwrap_or(0);
        self.cell.limit_hit(used)
    }
}

/// Why a command that exited unsuccessfully failed: how it ended, and the tool's own
/// reason in one line where it printed one.
fn failure(
    step: Step,
    label: &str,
    status: &std::process::ExitStatus,
    diagnosis: Diagnosis,
) -> BuildError {
    let how = match status.code() {
        Some(code) => format!("exited with code {code}"),
        None => match std::os::unix::process::ExitStatusExt::signal(status) {
            Some(sig) => format!("was killed by signal {sig}"),
            None => "was killed by a signal".to_string(),
        },
    };
    let why = diagnosis
        .summary()
        .map(|line| format!(": {line}"))
        .unwrap_or_default();
    BuildError::failed(format!("{} failed: `{label}` {how}{why}", step.as_str()))
}

/// Whether a command ended because a file went over `RLIMIT_FSIZE` (the disk limit):
/// killed by SIGXFSZ itself, or a shell reporting a child killed by it.
fn file_size_exceeded(status: &std::process::ExitStatus) -> bool {
    use std::os::unix::process::ExitStatusExt;
    status.signal() == Some(libc::SIGXFSZ) || status.code() == Some(128 + libc::SIGXFSZ)
}

/// Kills the whole command when dropped (timeout, cancel, a limit, any early return):
/// its process group, and every process in the build's cgroup, so grandchildren
/// (npm → node → esbuild) and anything that left the group go too.
struct GroupGuard<'a> {
    pgid: Option<i32>,
    cell: &'a Cell<'a>,
}

impl Drop for GroupGuard<'_> {
    fn drop(&mut self) {
        if let Some(pgid) = self.pgid {
            // A group that has already exited gives ESRCH.
            if let Some(pgid) = rustix::process::Pid::from_raw(pgid) {
                let _ = rustix::process::kill_process_group(pgid, rustix::process::Signal::KILL);
            }
        }
        self.cell.kill_all();
    }
}
