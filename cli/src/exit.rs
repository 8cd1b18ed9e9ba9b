//! Exit codes CI can rely on, and the CLI's error type.

use std::process::ExitCode;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    /// The deployment is ready (or the command succeeded).
    Success,
    /// The build failed or was canceled.
    BuildFailed,
    /// Bad usage or configuration: nothing was sent.
    Usage,
    /// The server is unreachable, answered with an error, or we timed out.
    Error,
    /// Interrupted (Ctrl-C) while following a build, which goes on: 130, as shells do.
    Interrupted,
}

impl From<ExitStatus> for ExitCode {
    fn from(s: ExitStatus) -> ExitCode {
        ExitCode::from(match s {
            ExitStatus::Success => 0,
            ExitStatus::BuildFailed => 1,
            ExitStatus::Usage => 2,
            ExitStatus::Error => 3,
            ExitStatus::Interrupted => 130,
        })
    }
}

/// An error with its exit status, a stable code for `--json`, and an optional hint.
/// Every command returns it; its message is what the user reads after `error:`.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct CliError {
    pub status: ExitStatus,
    pub code: String,
    pub message: String,
    pub hint: Option<String>,
}

impl CliError {
    pub fn usage(message: impl Into<String>) -> Self {
        CliError {
            status: ExitStatus::Usage,
            code: "usage".into(),
            message: message.into(),
            hint: None,
        }
    }

    pub fn config(message: impl Into<String>) -> Self {
        CliError {
            status: ExitStatus::Usage,
            code: "config".into(),
            message: message.into(),
            hint: None,
        }
    }

    pub fn api(code: impl Into<String>, message: impl Into<String>) -> Self {
        CliError {
            status: ExitStatus::Error,
            code: code.into(),
            message: message.into(),
            hint: None,
        }
    }

    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }
}

pub type CliResult<T = ExitStatus> = Result<T, CliError>;
