//! A command's output as log events: line by line (`\r` redraws too), clipped at
//! [`MAX_LINE_BYTES`], terminal escapes removed, each line shown to the [`Diagnosis`].

use cdeploy_core::event::{clip_line, EventBody, Step, Stream, MAX_LINE_BYTES};
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};

use super::diagnosis::Diagnosis;
use crate::EventSink;

/// Forwards each line of a child's output as a log event. Output is decoded lossily;
/// `\r`-only progress redraws are split into lines as well. A line is never held past
/// [`cdeploy_core::event::MAX_LINE_BYTES`] (plus one read buffer): the rest of an
/// overlong line is skipped, so a build printing gigabytes without a newline costs no
/// memory.
pub(super) async fn pump(
    sink: &dyn EventSink,
    diagnosis: &std::sync::Mutex<Diagnosis>,
    step: Step,
    stream: Stream,
    reader: impl AsyncRead + Unpin,
) {
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
