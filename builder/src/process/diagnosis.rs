//! Why a command failed, in one line: the tool's own error line picked out of its
//! output, the package managers' wrap-up ignored.

use cdeploy_core::event::Stream;

/// Picks the line that says why a command failed: the first line the tool printed as an
/// error (`Error: …`, `error TS2307: …`, `✘ [ERROR] …`), with the line after it when it
/// only introduces one (`error during build:`), else the last line on stderr. The
/// package managers' own wrap-up (`npm error code 1`, `ELIFECYCLE`) is never it.
#[derive(Default)]
pub(super) struct Diagnosis {
    first_error: Option<String>,
    /// An error line ending in `:`, waiting for the line that completes it.
    pending: Option<String>,
    last_stderr: Option<String>,
}

/// Longest reason kept (the deployment's error is one line, not a log).
const MAX_REASON: usize = 300;

impl Diagnosis {
    pub(super) fn observe(&mut self, stream: Stream, line: &str) {
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

    pub(super) fn summary(self) -> Option<String> {
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
}
