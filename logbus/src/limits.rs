//! How much log one deployment may have: past either bound its output is dropped, after
//! one explicit notice; status events (and so the terminal one) always go through.

use cdeploy_core::event::{Event, EventBody};

/// How much log one deployment may have: past either bound its output is dropped, after
/// one explicit notice. Status events (and so the terminal one) always go through.
#[derive(Debug, Clone, Copy)]
pub struct LogLimits {
    pub max_events: u64,
    pub max_bytes: u64,
}

impl Default for LogLimits {
    fn default() -> Self {
        LogLimits {
            max_events: 100_000,
            max_bytes: 16 << 20,
        }
    }
}

/// What a deployment's log has used of its [`LogLimits`].
#[derive(Debug, Default, Clone, Copy)]
pub struct Budget {
    events: u64,
    bytes: u64,
    truncated: bool,
}

/// What to do with an event under the limits.
pub enum Admit {
    Keep,
    /// The limit is reached: store this notice in its place; drop the rest.
    Truncate(EventBody),
    Drop,
}

impl Budget {
    pub fn admit(&mut self, limits: &LogLimits, body: &EventBody) -> Admit {
        let size = match body {
            EventBody::Status { .. } => return Admit::Keep,
            EventBody::Log { line, .. } => line.len() as u64 + 64,
            EventBody::Progress { .. } => 64,
        };
        if self.truncated {
            return Admit::Drop;
        }
        if self.events + 1 > limits.max_events || self.bytes + size > limits.max_bytes {
            self.truncated = true;
            return Admit::Truncate(EventBody::system(
                body.step().unwrap_or(cdeploy_core::event::Step::Build),
                format!(
                    "[log truncated] this deployment's log reached its limit of {} lines or {} MiB: later output is not kept (server settings max_log_lines, max_log_mb)",
                    limits.max_events,
                    limits.max_bytes >> 20
                ),
            ));
        }
        self.events += 1;
        self.bytes += size;
        Admit::Keep
    }

    /// The budget of a log read back from its events (after a restart).
    pub fn of(events: &[Event], limits: &LogLimits) -> Budget {
        let mut b = Budget::default();
        for e in events {
            let _ = b.admit(limits, &e.body);
        }
        b
    }
}
