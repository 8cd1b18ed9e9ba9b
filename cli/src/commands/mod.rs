//! One module per subcommand, each with its clap `Args` and a `run`; what several of
//! them share ([`ProjectArg`], [`project_slug`], [`read_secret`]) is here.
//!
//! # Layout
//! * [`deploy`] — `deploy`: a folder (settings, `--dry`, source, create, wait, report).
//! * [`logs`] — `logs`: a deployment's log, followed while it runs.
//! * [`ls`] — `ls`: projects, or one project's deployments.
//! * [`inspect`] — `inspect`: one deployment, `--wait` until it ends.
//! * [`diff`] — `diff`: what changed between two deployments.
//! * [`cancel`] — `cancel`: stop a queued or running build.
//! * [`open`] — `open`: a project's site in the browser.
//! * [`dashboard`] — `dashboard`: the web dashboard, signed in by a one-time link.
//! * [`promote`] — `promote` and `rollback`: move the production pointer.
//! * [`rm`] — `rm`: delete a project or one of its deployments.
//! * [`init`] — `init`: write `cdeploy.toml` with the detected framework's defaults.
//! * [`login`] — `login` and `logout`: the token saved for an API URL.
//! * [`tokens`] — `tokens create|ls|revoke` and `whoami`.
//! * [`audit`] — `audit`: what each token did.
//! * [`env`] — `env add|ls|rm|pull`: a project's stored secrets.
//! * [`git`] — `git link|show|unlink|deliveries|hook`: deploy on push.
//! * [`protection`] — `protection on|off|status`: previews behind a password.
//! * [`domains`] — `domains add|ls|inspect|rm`: custom domains and their certificates.
//! * [`notify`] — `notify add|ls|rm|deliveries`: deploy events sent to endpoints.
//! * [`trust`] — `trust add|ls|rm`: CI identities that deploy without a stored token.
//! * [`server`] — `server status|stop|logs`: the local server `deploy` starts.
//! * [`completions`] — `completions`: shell completions.

pub mod audit;
pub mod cancel;
pub mod completions;
pub mod dashboard;
pub mod deploy;
pub mod diff;
pub mod domains;
pub mod env;
pub mod git;
pub mod init;
pub mod inspect;
pub mod login;
pub mod logs;
pub mod ls;
pub mod notify;
pub mod open;
pub mod promote;
pub mod protection;
pub mod rm;
pub mod server;
pub mod tokens;
pub mod trust;

/// `--project SLUG`, for the commands that act on one project.
#[derive(clap::Args, Debug)]
pub struct ProjectArg {
    /// The project; default: the one `cdeploy deploy` in this directory deploys.
    #[arg(long = "project", value_name = "SLUG")]
    pub slug: Option<String>,
}

impl ProjectArg {
    pub fn resolve(self) -> Result<String, crate::exit::CliError> {
        project_slug(self.slug)
    }
}

/// The slug given, else the project `cdeploy deploy` in this directory deploys; checked.
pub fn project_slug(given: Option<String>) -> Result<String, crate::exit::CliError> {
    use crate::exit::CliError;
    let slug = match given {
        Some(s) => s,
        None => {
            let dir = std::env::current_dir()
                .map_err(|e| CliError::usage(format!("no current directory: {e}")))?;
            crate::project::slug_of_dir(&dir)?
        }
    };
    cdeploy_core::ids::validate_slug(&slug)
        .map_err(|e| CliError::usage(format!("invalid project {slug:?}: {e}")))?;
    Ok(slug)
}

/// A secret (a stored value, a password): from a hidden prompt on a terminal, typed twice
/// when `confirm`, else all of stdin less one final newline. Never from arguments, which
/// other users and shell histories can read. `what` names it in errors.
pub fn read_secret(
    prompt: &str,
    confirm: bool,
    what: &str,
) -> Result<String, crate::exit::CliError> {
    use crate::exit::CliError;
    use std::io::{IsTerminal, Read};
    let value = if std::io::stdin().is_terminal() {
        let mut asked = dialoguer::Password::new().with_prompt(prompt);
        if confirm {
            asked = asked.with_confirmation("Again", "The two differ");
        }
        asked
            .interact()
            .map_err(|e| CliError::usage(format!("prompt failed: {e}")))?
    } else {
        let mut buf = Vec::new();
        std::io::stdin()
            .read_to_end(&mut buf)
            .map_err(|e| CliError::usage(format!("cannot read {what} from stdin: {e}")))?;
        let mut text = String::from_utf8(buf)
            .map_err(|_| CliError::usage(format!("{what} on stdin is not UTF-8 text")))?;
        if text.ends_with('\n') {
            text.pop();
            if text.ends_with('\r') {
                text.pop();
            }
        }
        text
    };
    if value.is_empty() {
        return Err(CliError::usage(format!("no {what}: stdin was empty")));
    }
    Ok(value)
}
