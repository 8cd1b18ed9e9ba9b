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
