//! Running build commands: untrusted code, so it gets a scrubbed environment, its own
//! process group (killed as a whole on timeout or cancel), and every output line of
//! stdout and stderr becomes an event.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use cdeploy_core::event::{clip_line, EventBody, Step, Stream};
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::Command;
use tokio_util::sync::CancellationToken;

use crate::{BuildError, BuildSpec, EventSink};

/// File in the work dir holding the process group id of the running command, so a
/// restarted server can kill what a crashed one left behind.
pub const PGID_FILE: &str = "running.pgid";

/// The only variables a build command sees: basics plus the project's `[env]`.
/// Nothing of the platform's own environment (tokens, storage or cloud credentials) leaks.
pub fn scrubbed_env(
    spec: &BuildSpec,
    home: &Path,
    project_env: &BTreeMap<String, String>,
) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = vec![
        ("PATH".into(), spec.path.clone()),
        ("HOME".into(), home.display().to_string()),
        ("LANG".into(), "C.UTF-8".into()),
        ("CI".into(), "1".into()),
        ("CDEPLOY".into(), "1".into()),
        ("CDEPLOY_DEPLOYMENT_ID".into(), spec.deployment_id.clone()),
        ("CDEPLOY_SLUG".into(), spec.slug.clone()),
        ("CDEPLOY_URL".into(), spec.url.clone()),
        ("GIT_TERMINAL_PROMPT".into(), "0".into()),
        ("GIT_CONFIG_NOSYSTEM".into(), "1".into()),
        ("COREPACK_ENABLE_DOWNLOAD_PROMPT".into(), "0".into()),
        ("npm_config_update_notifier".into(), "false".into()),
        ("npm_config_fund".into(), "false".into()),
        ("npm_config_audit".into(), "false".into()),
        ("npm_config_progress".into(), "false".into()),
    ];
    if let Some(cache) = &spec.cache_dir {
        env.push((
            "npm_config_cache".into(),
            cache.join("npm").display().to_string(),
        ));
        env.push((
            "YARN_CACHE_FOLDER".into(),
            cache.join("yarn").display().to_string(),
        ));
        // pnpm keeps its store under XDG_DATA_HOME (npm warns about `npm_config_store_dir`).
        env.push((
            "XDG_DATA_HOME".into(),
            cache.join("data").display().to_string(),
        ));
        env.push((
            "XDG_CACHE_HOME".into(),
            cache.join("xdg").display().to_string(),
        ));
        env.push((
            "COREPACK_HOME".into(),
            cache.join("corepack").display().to_string(),
        ));
    }
    for (k, v) in project_env {
        env.retain(|(name, _)| name != k);
        env.push((k.clone(), v.clone()));
    }
    env
}

/// Runs commands for one build.
pub struct Runner<'a> {
    pub sink: &'a dyn EventSink,
    pub cancel: &'a CancellationToken,
    pub deadline: Instant,
    pub timeout: Duration,
    pub env: Vec<(String, String)>,
    pub pgid_file: Option<PathBuf>,
}

impl Runner<'_> {
    /// Runs `sh -c cmd` in `dir` as `step`.
    pub async fn shell(&self, step: Step, cmd: &str, dir: &Path) -> Result<(), BuildError> {
        self.sink
            .emit(EventBody::system(step, format!("$ {cmd}")))
            .await;
        let mut c = Command::new("sh");
        c.arg("-c").arg(cmd);
        self.run(step, c, dir, cmd).await
    }

    /// Runs a program with arguments (no shell) in `dir` as `step`.
    pub async fn exec(
        &self,
        step: Step,
        program: &str,
        args: &[&str],
        dir: &Path,
    ) -> Result<(), BuildError> {
        let mut c = Command::new(program);
        c.args(args);
        self.run(step, c, dir, program).await
    }

    async fn run(
        &self,
        step: Step,
        mut cmd: Command,
        dir: &Path,
        label: &str,
    ) -> Result<(), BuildError> {
        let started = Instant::now();
        cmd.current_dir(dir)
            .env_clear()
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        let mut child = cmd.spawn().map_err(|e| {
            BuildError::failed(format!("{}: cannot start `{label}`: {e}", step.as_str()))
        })?;
        let pgid = child.id().map(|p| p as i32);
        if let (Some(file), Some(pgid)) = (&self.pgid_file, pgid) {
            let _ = tokio::fs::write(file, pgid.to_string()).await;
        }
        let _group = GroupGuard(pgid);
        let out = pump(
            self.sink,
            step,
            Stream::Stdout,
            child.stdout.take().expect("piped"),
        );
        let err = pump(
            self.sink,
            step,
            Stream::Stderr,
            child.stderr.take().expect("piped"),
        );
        let wait = async {
            let (status, (), ()) = tokio::join!(child.wait(), out, err);
            status
        };
        let status = tokio::select! {
            s = wait => s.map_err(|e| BuildError::failed(format!("{}: waiting for `{label}` failed: {e}", step.as_str())))?,
            () = self.cancel.cancelled() => return Err(BuildError::Canceled),
            () = tokio::time::sleep_until(self.deadline.into()) => return Err(BuildError::TimedOut(self.timeout.as_secs())),
        };
        if let Some(file) = &self.pgid_file {
            let _ = tokio::fs::remove_file(file).await;
        }
        if status.success() {
            self.sink
                .emit(EventBody::system(
                    step,
                    format!("Done in {:.1}s", started.elapsed().as_secs_f64()),
                ))
                .await;
            Ok(())
        } else {
            let how = match status.code() {
                Some(code) => format!("exited with code {code}"),
                None => "was killed by a signal".to_string(),
            };
            Err(BuildError::failed(format!(
                "{} failed: `{label}` {how}",
                step.as_str()
            )))
        }
    }
}

/// Kills the whole process group when dropped: on timeout, cancel, or any early return,
/// grandchildren (npm → node → esbuild) go too.
struct GroupGuard(Option<i32>);

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if let Some(pgid) = self.0 {
            // SAFETY: killpg only sends a signal; a group that has already exited gives ESRCH.
            unsafe {
                libc::killpg(pgid, libc::SIGKILL);
            }
        }
    }
}

/// Kills a process group a previous (crashed) process recorded in `file`, if any.
pub fn kill_recorded_group(file: &Path) {
    if let Some(pgid) = std::fs::read_to_string(file)
        .ok()
        .and_then(|s| s.trim().parse::<i32>().ok())
    {
        if pgid > 1 {
            // SAFETY: see GroupGuard.
            unsafe {
                libc::killpg(pgid, libc::SIGKILL);
            }
        }
    }
}

/// Forwards each line of a child's output as a log event. Output is decoded lossily;
/// `\r`-only progress redraws are split into lines as well.
async fn pump(sink: &dyn EventSink, step: Step, stream: Stream, reader: impl AsyncRead + Unpin) {
    let mut reader = BufReader::with_capacity(64 * 1024, reader);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match reader.read_until(b'\n', &mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {
                let text = String::from_utf8_lossy(&buf);
                let text = text.strip_suffix('\n').unwrap_or(&text);
                let text = text.strip_suffix('\r').unwrap_or(text);
                for part in text.split('\r').filter(|p| !p.is_empty()) {
                    sink.emit(EventBody::log(step, stream, clip_line(strip_ansi(part))))
                        .await;
                }
                if text.is_empty() {
                    sink.emit(EventBody::log(step, stream, String::new())).await;
                }
            }
        }
    }
}

/// Removes ANSI escape sequences (colors, cursor moves) so stored logs are plain text.
fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            if chars.peek() == Some(&'[') {
                chars.next();
                for c in chars.by_ref() {
                    if ('@'..='~').contains(&c) {
                        break;
                    }
                }
            } else {
                chars.next();
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ansi() {
        assert_eq!(
            strip_ansi("\u{1b}[32m✓\u{1b}[39m built in 1s"),
            "✓ built in 1s"
        );
        assert_eq!(strip_ansi("plain"), "plain");
    }
}
