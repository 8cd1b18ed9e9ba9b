//! Running build commands: untrusted code, so each runs in the build's sandbox cell
//! (see [`crate::sandbox`]) with exactly the environment given here, is killed as a
//! whole on timeout, cancel or a limit, and every output line of stdout and stderr
//! becomes an event.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use cdeploy_core::event::{clip_line, EventBody, Step, Stream};
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio_util::sync::CancellationToken;

use crate::sandbox::{Cell, View};
use crate::{BuildError, BuildSpec, EventSink};

/// How often a running command's limits (disk, processes, memory) are checked.
const LIMIT_CHECK: Duration = Duration::from_secs(1);

/// CA settings of the host that builds keep (registries behind a private CA work), when
/// they point into the read-only system view. Never credentials.
const PASSED_THROUGH: &[&str] = &[
    "NODE_EXTRA_CA_CERTS",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "GIT_SSL_CAINFO",
];

/// The only variables a build command sees: basics plus the project's `[env]`.
/// Nothing of the platform's own environment (tokens, storage or cloud credentials) leaks.
pub fn scrubbed_env(
    spec: &BuildSpec,
    view: &View,
    path: &str,
    project_env: &BTreeMap<String, String>,
) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = vec![
        ("PATH".into(), path.to_string()),
        ("HOME".into(), view.home.display().to_string()),
        ("TMPDIR".into(), view.tmp.display().to_string()),
        ("LANG".into(), "C.UTF-8".into()),
        ("CI".into(), "1".into()),
        ("CDEPLOY".into(), "1".into()),
        ("CDEPLOY_DEPLOYMENT_ID".into(), spec.deployment_id.clone()),
        ("CDEPLOY_SLUG".into(), spec.slug.clone()),
        ("CDEPLOY_URL".into(), spec.url.clone()),
        (
            "CDEPLOY_ENV".into(),
            if spec.promote {
                "production"
            } else {
                "preview"
            }
            .into(),
        ),
        ("GIT_TERMINAL_PROMPT".into(), "0".into()),
        ("GIT_CONFIG_NOSYSTEM".into(), "1".into()),
        ("COREPACK_ENABLE_DOWNLOAD_PROMPT".into(), "0".into()),
        ("npm_config_update_notifier".into(), "false".into()),
        ("npm_config_fund".into(), "false".into()),
        ("npm_config_audit".into(), "false".into()),
        ("npm_config_progress".into(), "false".into()),
    ];
    for name in PASSED_THROUGH {
        if let Ok(v) = std::env::var(name) {
            if v.starts_with("/etc/ssl/") || v.starts_with("/usr/") || v == "/etc/ssl" {
                env.push((name.to_string(), v));
            }
        }
    }
    // Node.js from the registry trusts only its bundled CAs; the host's store (a
    // registry mirror or egress proxy behind a private CA) is what Debian's Node and
    // npm trust, so builds' Node does too. /etc/npmrc is the operator's system-wide npm
    // configuration (read by Debian's npm), kept for the fetched npm.
    const SYSTEM_CAS: &str = "/etc/ssl/certs/ca-certificates.crt";
    if !env.iter().any(|(k, _)| k == "NODE_EXTRA_CA_CERTS") && Path::new(SYSTEM_CAS).is_file() {
        env.push(("NODE_EXTRA_CA_CERTS".into(), SYSTEM_CAS.into()));
    }
    if Path::new("/etc/npmrc").is_file() {
        env.push(("npm_config_globalconfig".into(), "/etc/npmrc".into()));
    }
    if let Some(cache) = &view.cache {
        for (name, sub) in [
            ("npm_config_cache", "npm"),
            ("YARN_CACHE_FOLDER", "yarn"),
            // pnpm keeps its store under XDG_DATA_HOME (npm warns about `npm_config_store_dir`).
            ("XDG_DATA_HOME", "data"),
            ("XDG_CACHE_HOME", "xdg"),
            ("COREPACK_HOME", "corepack"),
        ] {
            env.push((name.into(), cache.join(sub).display().to_string()));
        }
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
        let out = pump(
            self.sink,
            &diagnosis,
            step,
            Stream::Stdout,
            child.stdout.take().expect("piped"),
        );
        let err = pump(
            self.sink,
            &diagnosis,
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
        let status = loop {
            tokio::select! {
                s = &mut wait => break s.map_err(|e| BuildError::failed(format!("{}: waiting for `{label}` failed: {e}", step.as_str())))?,
                () = self.cancel.cancelled() => return Err(BuildError::Canceled),
                () = tokio::time::sleep_until(self.deadline.into()) => return Err(BuildError::TimedOut(self.timeout.as_secs())),
                _ = check.tick() => {
                    if let Some(hit) = self.limit_hit().await {
                        return Err(BuildError::Limit(hit.to_string()));
                    }
                }
            }
        };
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
                None => match std::os::unix::process::ExitStatusExt::signal(&status) {
                    Some(sig) => format!("was killed by signal {sig}"),
                    None => "was killed by a signal".to_string(),
                },
            };
            // The tool's own reason, in one line, where it printed one.
            let why = std::mem::take(&mut *diagnosis.lock().expect("not poisoned"))
                .summary()
                .map(|line| format!(": {line}"))
                .unwrap_or_default();
            Err(BuildError::failed(format!(
                "{} failed: `{label}` {how}{why}",
                step.as_str()
            )))
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

/// Forwards each line of a child's output as a log event. Output is decoded lossily;
/// `\r`-only progress redraws are split into lines as well. A line is never held past
/// [`cdeploy_core::event::MAX_LINE_BYTES`] (plus one read buffer): the rest of an
/// overlong line is skipped, so a build printing gigabytes without a newline costs no
/// memory.
async fn pump(
    sink: &dyn EventSink,
    diagnosis: &std::sync::Mutex<Diagnosis>,
    step: Step,
    stream: Stream,
    reader: impl AsyncRead + Unpin,
) {
    use cdeploy_core::event::MAX_LINE_BYTES;
    let mut reader = BufReader::with_capacity(64 * 1024, reader);
    let mut line: Vec<u8> = Vec::new();
    // Bytes of the current line dropped past the limit.
    let mut skipped = false;
    loop {
        let chunk = match reader.fill_buf().await {
            Ok([]) | Err(_) => break,
            Ok(c) => c,
        };
        let (used, ended) = match chunk.iter().position(|b| *b == b'\n') {
            Some(i) => (i + 1, true),
            None => (chunk.len(), false),
        };
        let take = &chunk[..if ended { used - 1 } else { used }];
        let room = (MAX_LINE_BYTES + 4).saturating_sub(line.len());
        if take.len() > room {
            skipped = true;
        }
        line.extend_from_slice(&take[..take.len().min(room)]);
        reader.consume(used);
        if ended {
            emit_line(sink, diagnosis, step, stream, &line, skipped).await;
            line.clear();
            skipped = false;
        }
    }
    if !line.is_empty() {
        emit_line(sink, diagnosis, step, stream, &line, skipped).await;
    }
}

async fn emit_line(
    sink: &dyn EventSink,
    diagnosis: &std::sync::Mutex<Diagnosis>,
    step: Step,
    stream: Stream,
    raw: &[u8],
    clipped: bool,
) {
    let lines: Vec<String> = {
        let text = String::from_utf8_lossy(raw);
        let text = text.strip_suffix('\r').unwrap_or(&text);
        text.split('\r')
            .filter(|p| !p.is_empty())
            .map(|p| clip_line(strip_ansi(p)))
            .collect()
    };
    if lines.is_empty() {
        sink.emit(EventBody::log(step, stream, String::new())).await;
        return;
    }
    {
        let mut d = diagnosis.lock().expect("not poisoned");
        for line in &lines {
            d.observe(stream, line);
        }
    }
    let count = lines.len();
    for (i, mut line) in lines.into_iter().enumerate() {
        if clipped && i + 1 == count && !line.ends_with("[line truncated]") {
            line.push_str(" … [line truncated]");
        }
        sink.emit(EventBody::log(step, stream, line)).await;
    }
}

/// Picks the line that says why a command failed: the first line the tool printed as an
/// error (`Error: …`, `error TS2307: …`, `✘ [ERROR] …`), with the line after it when it
/// only introduces one (`error during build:`), else the last line on stderr. The
/// package managers' own wrap-up (`npm error code 1`, `ELIFECYCLE`) is never it.
#[derive(Default)]
pub(crate) struct Diagnosis {
    first_error: Option<String>,
    /// An error line ending in `:`, waiting for the line that completes it.
    pending: Option<String>,
    last_stderr: Option<String>,
}

/// Longest reason kept (the deployment's error is one line, not a log).
const MAX_REASON: usize = 300;

impl Diagnosis {
    pub(crate) fn observe(&mut self, stream: Stream, line: &str) {
        let line = line.trim();
        if line.is_empty() || is_package_manager_noise(line) {
            return;
        }
        if self.first_error.is_none() {
            if let Some(intro) = self.pending.take() {
                self.first_error = Some(clip_reason(&format!("{intro} {line}")));
            } else if looks_like_error(line) {
                if line.ends_with(':') {
                    self.pending = Some(line.to_string());
                } else {
                    self.first_error = Some(clip_reason(line));
                }
            }
        }
        if stream == Stream::Stderr {
            self.last_stderr = Some(clip_reason(line));
        }
    }

    pub(crate) fn summary(self) -> Option<String> {
        self.first_error
            .or(self.pending.map(|p| clip_reason(&p)))
            .or(self.last_stderr)
    }
}

fn clip_reason(line: &str) -> String {
    if line.len() <= MAX_REASON {
        return line.to_string();
    }
    let mut end = MAX_REASON;
    while !line.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &line[..end])
}

fn looks_like_error(line: &str) -> bool {
    let l = line.trim_start_matches(['✘', '✖', '×', 'x', '>', ' ', '[']);
    let lower = l.to_ascii_lowercase();
    lower.starts_with("error")
        || lower.starts_with("fatal")
        || lower.starts_with("failed to compile")
        || lower.starts_with("build failed")
        || lower.starts_with("module not found")
        || lower.starts_with("cannot find module")
        || lower.starts_with("sh: ")
        || lower.contains(": error")
        || [
            "TypeError:",
            "SyntaxError:",
            "ReferenceError:",
            "RangeError:",
            "Error:",
        ]
        .iter()
        .any(|p| l.starts_with(p) || l.contains(&format!(" {p}")))
}

/// Lines npm, pnpm and yarn print about a script having failed, not why.
fn is_package_manager_noise(line: &str) -> bool {
    let lower = line.to_ascii_lowercase();
    lower.starts_with("npm error")
        || lower.starts_with("npm err!")
        || lower.starts_with("npm warn")
        || lower.contains("elifecycle")
        || lower.starts_with("error command failed with exit code")
        || lower.starts_with("info visit https://yarnpkg.com")
        || lower.starts_with("error: script \"")
}

/// Removes terminal escape sequences (colors, cursor moves, OSC-8 hyperlinks and window
/// titles) so stored logs are plain text.
fn strip_ansi(s: &str) -> String {
    // The crate drops tabs with the other control characters; a log line keeps them.
    s.split('\t')
        .map(strip_ansi_escapes::strip_str)
        .collect::<Vec<_>>()
        .join("\t")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_is_explained_by_the_tools_own_line() {
        let why = |lines: &[(Stream, &str)]| {
            let mut d = Diagnosis::default();
            for (s, l) in lines {
                d.observe(*s, l);
            }
            d.summary()
        };
        let next = [
            (Stream::Stdout, "> next build"),
            (
                Stream::Stdout,
                "   Creating an optimized production build ...",
            ),
            (
                Stream::Stderr,
                "Error: Invariant: PPR cannot be enabled in export mode",
            ),
            (
                Stream::Stderr,
                "    at build (/work/node_modules/next/dist/build/index.js:3:1)",
            ),
            (
                Stream::Stderr,
                "npm error Lifecycle script `build` failed with error:",
            ),
            (Stream::Stderr, "npm error code 1"),
        ];
        assert_eq!(
            why(&next).as_deref(),
            Some("Error: Invariant: PPR cannot be enabled in export mode")
        );
        let vite = [
            (Stream::Stderr, "error during build:"),
            (
                Stream::Stderr,
                "[vite]: Rollup failed to resolve import \"nope\" from \"src/main.js\".",
            ),
        ];
        assert_eq!(
            why(&vite).as_deref(),
            Some("error during build: [vite]: Rollup failed to resolve import \"nope\" from \"src/main.js\".")
        );
        let tsc = [(
            Stream::Stdout,
            "src/a.ts(1,20): error TS2307: Cannot find module 'x'.",
        )];
        assert_eq!(
            why(&tsc).as_deref(),
            Some("src/a.ts(1,20): error TS2307: Cannot find module 'x'.")
        );
        // Nothing error-like: the last line on stderr, never the package manager's.
        let plain = [
            (Stream::Stderr, "something went sideways"),
            (
                Stream::Stderr,
                " ELIFECYCLE  Command failed with exit code 1.",
            ),
        ];
        assert_eq!(why(&plain).as_deref(), Some("something went sideways"));
        assert_eq!(why(&[(Stream::Stdout, "all quiet")]), None);
    }

    #[test]
    fn ansi() {
        assert_eq!(
            strip_ansi("\u{1b}[32m✓\u{1b}[39m built in 1s"),
            "✓ built in 1s"
        );
        assert_eq!(strip_ansi("plain"), "plain");
        // An OSC-8 link keeps its text, loses its target; a window title goes.
        assert_eq!(
            strip_ansi("see \u{1b}]8;;https://example.com\u{1b}\\the docs\u{1b}]8;;\u{1b}\\ now"),
            "see the docs now"
        );
        assert_eq!(strip_ansi("\u{1b}]0;vite\u{7}ready\tin 1s"), "ready\tin 1s");
    }
}
