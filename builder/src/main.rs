//! `cdeploy-builder`: one build, configured by environment (see `cdeploy_builder::env`),
//! in API mode or trusted mode (see `cdeploy_builder::standalone`).
//!
//! Events are printed to stdout as JSON lines either way; exit code 0 means ready.
#![forbid(unsafe_code)]

use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    // Build commands run as another uid; non-dumpable, this process's memory and
    // environment are not readable through /proc or ptrace by anything but root.
    if let Err(e) =
        rustix::process::set_dumpable_behavior(rustix::process::DumpableBehavior::NotDumpable)
    {
        eprintln!("cdeploy-builder: cannot make this process non-dumpable: {e}");
    }
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        // Colors only on a terminal: a log file or a log service gets plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();
    cdeploy_builder::standalone::run().await
}
