//! One module per subcommand, each with its clap `Args` and a `run`.

pub mod cancel;
pub mod completions;
pub mod deploy;
pub mod env;
pub mod git;
pub mod init;
pub mod inspect;
pub mod login;
pub mod logs;
pub mod ls;
pub mod promote;
pub mod protection;
pub mod rm;
pub mod server;
pub mod tokens;

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
            deploy::slug_of_dir(&dir)?
        }
    };
    cdeploy_core::ids::validate_slug(&slug)
        .map_err(|e| CliError::usage(format!("invalid project {slug:?}: {e}")))?;
    Ok(slug)
}
