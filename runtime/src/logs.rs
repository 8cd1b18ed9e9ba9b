//! What runtimes print, per deployment: the newest lines in memory, bounded in lines and
//! bytes, numbered so a follower asks for those after the last it saw. A deployment's
//! stored variables are masked in its lines, as in build logs (a read token can read
//! the log, not the secrets).

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use serde::Serialize;

/// Lines kept per deployment.
pub const MAX_LINES: usize = 2_000;
/// Bytes of one line kept (the rest is cut, marked with `…`).
pub const MAX_LINE_BYTES: usize = 4_096;
/// Deployments whose lines are kept at once (the least recently written go first).
const MAX_DEPLOYMENTS: usize = 1_000;

/// One line a runtime printed, or one cdeploy wrote about it (`system`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LogLine {
    /// Increases by one per line of the deployment.
    pub seq: u64,
    /// RFC 3339, UTC.
    pub at: String,
    /// `stdout`, `stderr` or `system`.
    pub stream: &'static str,
    pub text: String,
}

struct Kept {
    lines: VecDeque<LogLine>,
    /// The deployment's stored variables, hidden in its lines.
    mask: Option<std::sync::Arc<cdeploy_core::mask::Masker>>,
    /// The next line's `seq`.
    next: u64,
    /// When it was last written to (a counter: higher is newer).
    written: u64,
}

impl Kept {
    fn new() -> Kept {
        Kept {
            lines: VecDeque::new(),
            mask: None,
            next: 1,
            written: 0,
        }
    }
}

/// Every deployment's lines.
#[derive(Default)]
pub struct Logs {
    kept: Mutex<HashMap<String, Kept>>,
    clock: std::sync::atomic::AtomicU64,
}

impl Logs {
    /// Hides `values` in deployment `id`'s lines from now on.
    pub fn mask(&self, id: &str, values: &[String]) {
        let masker = cdeploy_core::mask::Masker::new(values.iter().map(String::as_str));
        let mut kept = self.kept.lock().unwrap_or_else(|e| e.into_inner());
        let k = kept.entry(id.to_string()).or_insert_with(Kept::new);
        k.mask = (!masker.is_empty()).then(|| std::sync::Arc::new(masker));
    }

    pub fn push(&self, id: &str, stream: &'static str, text: &str) {
        let written = self
            .clock
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut kept = self.kept.lock().unwrap_or_else(|e| e.into_inner());
        if !kept.contains_key(id) && kept.len() >= MAX_DEPLOYMENTS {
            if let Some(oldest) = kept
                .iter()
                .min_by_key(|(_, k)| k.written)
                .map(|(id, _)| id.clone())
            {
                kept.remove(&oldest);
            }
        }
        let k = kept.entry(id.to_string()).or_insert_with(Kept::new);
        k.written = written;
        let mut text = match &k.mask {
            Some(m) => m.mask(text.trim_end()).into_owned(),
            None => text.trim_end().to_string(),
        };
        if text.len() > MAX_LINE_BYTES {
            let mut cut = MAX_LINE_BYTES;
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            text.truncate(cut);
            text.push('…');
        }
        let line = LogLine {
            seq: k.next,
            at: cdeploy_core::now_rfc3339(),
            stream,
            text,
        };
        k.next += 1;
        if k.lines.len() >= MAX_LINES {
            k.lines.pop_front();
        }
        k.lines.push_back(line);
    }

    /// The kept lines of a deployment, oldest first.
    pub fn lines(&self, id: &str) -> Vec<LogLine> {
        let kept = self.kept.lock().unwrap_or_else(|e| e.into_inner());
        kept.get(id)
            .map(|k| k.lines.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// The kept lines after `seq` (0: all), oldest first.
    pub fn after(&self, id: &str, seq: u64) -> Vec<LogLine> {
        let kept = self.kept.lock().unwrap_or_else(|e| e.into_inner());
        kept.get(id)
            .map(|k| k.lines.iter().filter(|l| l.seq > seq).cloned().collect())
            .unwrap_or_default()
    }

    /// The last lines a deployment's server printed (for a start that failed).
    pub fn tail(&self, id: &str, n: usize) -> Vec<String> {
        let mut tail: Vec<String> = self
            .lines(id)
            .into_iter()
            .rev()
            .filter(|l| l.stream != "system")
            .take(n)
            .map(|l| l.text)
            .collect();
        tail.reverse();
        tail
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_bounded_and_followed_by_number() {
        let logs = Logs::default();
        logs.push("a", "stdout", "first");
        assert_eq!(logs.after("a", 0)[0].text, "first");
        for i in 1..MAX_LINES + 5 {
            logs.push("a", "stdout", &format!("line {i}"));
        }
        let lines = logs.lines("a");
        assert_eq!(lines.len(), MAX_LINES);
        assert_eq!(lines[0].text, "line 5");
        assert_eq!(logs.after("a", lines[MAX_LINES - 2].seq).len(), 1);
        logs.push("a", "stderr", &"é".repeat(MAX_LINE_BYTES));
        let last = logs.lines("a").pop().unwrap();
        assert!(last.text.len() <= MAX_LINE_BYTES + 3 && last.text.ends_with('…'));
        assert_eq!(logs.tail("a", 1), [last.text]);
    }
}
