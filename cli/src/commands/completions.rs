//! `cdeploy completions <shell>`.

use clap::CommandFactory;

use crate::exit::{CliResult, ExitStatus};

#[derive(clap::Args, Debug)]
pub struct Args {
    shell: clap_complete::Shell,
}

pub fn run(args: Args) -> CliResult {
    clap_complete::generate(
        args.shell,
        &mut crate::Cli::command(),
        "cdeploy",
        &mut std::io::stdout(),
    );
    Ok(ExitStatus::Success)
}
