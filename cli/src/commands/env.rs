//! `cdeploy env add|ls|rm|pull`: a project's stored secrets, per target (production,
//! preview). Values are read from a hidden prompt or from stdin, never from arguments
//! (they would stay in the shell history and show in `ps`).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use cdeploy_core::api::{EnvTarget, EnvValues, EnvVar, PutEnv};
use cdeploy_core::mask::MIN_MASKED_LEN;
use reqwest::Method;

use crate::client::Client;
use crate::commands::ProjectArg;
use crate::exit::{CliError, CliResult, ExitStatus};
use crate::Globals;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Subcommand, Debug)]
enum Command {
    /// Store a variable (asks for its value, or reads it from stdin).
    Add {
        /// The variable's name (letters, digits and `_`).
        name: String,
        /// The builds it is given to: production or preview (repeat for both; default:
        /// both).
        #[arg(long = "target")]
        targets: Vec<EnvTarget>,
        /// Write-only: it reaches builds, but nobody can read it back (`env pull`
        /// leaves it out).
        #[arg(long)]
        sensitive: bool,
        /// A server app's server gets it at run time too (builds always do).
        #[arg(long)]
        runtime: bool,
        #[command(flatten)]
        project: ProjectArg,
    },
    /// List the stored variables (names and targets, never values).
    Ls {
        #[command(flatten)]
        project: ProjectArg,
    },
    /// Remove a variable (from both targets unless one is named).
    Rm {
        name: String,
        #[arg(long)]
        target: Option<EnvTarget>,
        #[command(flatten)]
        project: ProjectArg,
    },
    /// Write a target's variables to a dotenv file (sensitive ones cannot be read back
    /// and are named instead).
    Pull {
        /// The file to write.
        #[arg(default_value = ".env")]
        file: PathBuf,
        /// production or preview.
        #[arg(long, default_value = "production")]
        target: EnvTarget,
        /// Replace the file if it exists.
        #[arg(long, short)]
        yes: bool,
        #[command(flatten)]
        project: ProjectArg,
    },
}

pub async fn run(g: &Globals, args: Args) -> CliResult {
    match args.command {
        Command::Add {
            name,
            targets,
            sensitive,
            runtime,
            project: p,
        } => add(g, p.resolve()?, name, targets, (sensitive, runtime)).await,
        Command::Ls { project: p } => ls(g, p.resolve()?).await,
        Command::Rm {
            name,
            target,
            project: p,
        } => rm(g, p.resolve()?, name, target).await,
        Command::Pull {
            file,
            target,
            yes,
            project: p,
        } => pull(g, p.resolve()?, file, target, yes).await,
    }
}

async fn add(
    g: &Globals,
    slug: String,
    name: String,
    targets: Vec<EnvTarget>,
    (sensitive, runtime): (bool, bool),
) -> CliResult {
    if !cdeploy_core::config::is_env_name(&name) {
        return Err(CliError::usage(format!(
            "{name:?} is not a variable name (letters, digits and '_', not starting with a digit)"
        )));
    }
    let client = Client::new(g)?;
    let value = crate::commands::read_secret(
        &format!("Value of {name}"),
        false,
        &format!("the value of {name}"),
    )
    .map_err(|e| e.with_hint(format!("printf %s \"$VALUE\" | cdeploy env add {name}")))?;
    let short = value.chars().count() < MIN_MASKED_LEN;
    let stored: Vec<EnvVar> = client
        .send(
            client
                .request(Method::PUT, &format!("/v1/projects/{slug}/env/{name}"))
                .json(&PutEnv {
                    value,
                    targets,
                    sensitive,
                    runtime,
                }),
        )
        .await?;
    if g.printer.json {
        g.printer.json_result(&stored);
        return Ok(ExitStatus::Success);
    }
    let targets: Vec<&str> = stored.iter().map(|v| v.target.as_str()).collect();
    g.printer.info(format!(
        "Stored {name} for {} builds of {slug}{}{}",
        targets.join(" and "),
        if runtime { " and their servers" } else { "" },
        if sensitive { " (sensitive)" } else { "" }
    ));
    if short {
        g.printer.warn(format!(
            "values shorter than {MIN_MASKED_LEN} characters are not masked in build logs"
        ));
    }
    Ok(ExitStatus::Success)
}

async fn ls(g: &Globals, slug: String) -> CliResult {
    let client = Client::new(g)?;
    let vars: Vec<EnvVar> = client.get(&format!("/v1/projects/{slug}/env")).await?;
    if g.printer.json {
        g.printer.json_result(&vars);
        return Ok(ExitStatus::Success);
    }
    if vars.is_empty() {
        g.printer.info(format!(
            "{slug} stores no variables (`cdeploy env add NAME` adds one)"
        ));
        return Ok(ExitStatus::Success);
    }
    // One line per name: its targets, and the newest change.
    let mut by_name: BTreeMap<&str, Vec<&EnvVar>> = BTreeMap::new();
    for v in &vars {
        by_name.entry(&v.name).or_default().push(v);
    }
    for (name, list) in by_name {
        let targets: Vec<&str> = list.iter().map(|v| v.target.as_str()).collect();
        let updated = list
            .iter()
            .map(|v| v.updated_at.as_str())
            .max()
            .unwrap_or("");
        let sensitive = if list.iter().any(|v| v.sensitive) {
            "sensitive"
        } else {
            "readable"
        };
        let runtime = if list.iter().any(|v| v.runtime) {
            "runtime"
        } else {
            "build"
        };
        g.printer.result(format!(
            "{name:<32} {:<20} {sensitive:<10} {runtime:<8} updated {updated}",
            targets.join(",")
        ));
    }
    Ok(ExitStatus::Success)
}

async fn rm(g: &Globals, slug: String, name: String, target: Option<EnvTarget>) -> CliResult {
    let client = Client::new(g)?;
    let path = match target {
        Some(t) => format!("/v1/projects/{slug}/env/{name}?target={t}"),
        None => format!("/v1/projects/{slug}/env/{name}"),
    };
    let _: serde_json::Value = client.send(client.request(Method::DELETE, &path)).await?;
    if g.printer.json {
        g.printer.json_result(&serde_json::json!({
            "slug": slug, "name": name, "target": target, "removed": true
        }));
    } else {
        let from = match target {
            Some(t) => format!("{t} builds"),
            None => "production and preview builds".to_string(),
        };
        g.printer.info(format!(
            "Removed {name} from {from} of {slug} (the next deployment goes without it)"
        ));
    }
    Ok(ExitStatus::Success)
}

async fn pull(g: &Globals, slug: String, file: PathBuf, target: EnvTarget, yes: bool) -> CliResult {
    if file.exists() && !yes {
        return Err(CliError::usage(format!("{} exists", file.display()))
            .with_hint("pass --yes to replace it"));
    }
    let client = Client::new(g)?;
    let got: EnvValues = client
        .get(&format!("/v1/projects/{slug}/env/values?target={target}"))
        .await?;
    let text = dotenv(&slug, target, &got);
    write_private(&file, &text)
        .map_err(|e| CliError::usage(format!("cannot write {}: {e}", file.display())))?;
    if g.printer.json {
        g.printer.json_result(&serde_json::json!({
            "file": file,
            "target": target,
            "written": got.values.keys().collect::<Vec<_>>(),
            "sensitive": got.sensitive,
        }));
        return Ok(ExitStatus::Success);
    }
    g.printer.info(format!(
        "Wrote {} {target} variable{} of {slug} to {}",
        got.values.len(),
        if got.values.len() == 1 { "" } else { "s" },
        file.display()
    ));
    for name in &got.sensitive {
        g.printer.warn(format!(
            "{name} is sensitive: its value cannot be read back, so it is not in {} (builds still get it)",
            file.display()
        ));
    }
    if !ignored_for_upload(&file) {
        g.printer.warn(format!(
            "{} is not in .gitignore or .cdeployignore: `cdeploy deploy` would upload it with the source",
            file.display()
        ));
    }
    Ok(ExitStatus::Success)
}

/// A dotenv file: each value quoted so dotenv readers (Node's dotenv, Vite,
/// python-dotenv) read it back as it was, newlines included.
fn dotenv(slug: &str, target: EnvTarget, got: &EnvValues) -> String {
    let mut out = format!("# {target} variables of {slug}, written by `cdeploy env pull`.\n");
    if !got.sensitive.is_empty() {
        out.push_str(&format!(
            "# Sensitive, so not here (builds still get them): {}\n",
            got.sensitive.join(", ")
        ));
    }
    for (name, value) in &got.values {
        out.push_str(name);
        out.push('=');
        out.push_str(&quote(value));
        out.push('\n');
    }
    out
}

fn quote(value: &str) -> String {
    let quote = ['"', '\'', '`']
        .into_iter()
        .find(|q| !value.contains(*q))
        .unwrap_or('"');
    if quote == '"' && value.contains('"') {
        // Every quote character is in the value: escape the double quotes.
        return format!("\"{}\"", value.replace('\\', "\\\\").replace('"', "\\\""));
    }
    format!("{quote}{value}{quote}")
}

fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(text.as_bytes())
}

/// Whether the ignore files beside it keep `file` out of a source upload.
fn ignored_for_upload(file: &Path) -> bool {
    let Ok(abs) = std::path::absolute(file) else {
        return false;
    };
    let Some(dir) = abs.parent() else {
        return false;
    };
    let mut builder = ignore::gitignore::GitignoreBuilder::new(dir);
    for name in [".gitignore", ".cdeployignore"] {
        let path = dir.join(name);
        if path.is_file() {
            let _ = builder.add(path);
        }
    }
    builder
        .build()
        .map(|g| g.matched(&abs, false).is_ignore())
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_quoted_so_dotenv_reads_them_back() {
        assert_eq!(quote("plain"), "\"plain\"");
        assert_eq!(quote("say \"hi\""), "'say \"hi\"'");
        assert_eq!(quote("a\"b'c"), "`a\"b'c`");
        assert_eq!(quote("a\"b'c`d\\"), "\"a\\\"b'c`d\\\\\"");
        assert_eq!(quote("line1\nline2"), "\"line1\nline2\"");
    }

    #[test]
    fn the_file_names_sensitive_variables_instead_of_blanks() {
        let got = EnvValues {
            values: [("API_URL".to_string(), "https://x".to_string())].into(),
            sensitive: vec!["TOKEN".into()],
        };
        let text = dotenv("app", EnvTarget::Preview, &got);
        assert!(text.contains("API_URL=\"https://x\"\n"), "{text}");
        assert!(text.contains("# Sensitive, so not here (builds still get them): TOKEN"));
        assert!(!text.contains("TOKEN="));
    }

    #[test]
    fn ignore_files_beside_the_file_are_honoured() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join(".env");
        assert!(!ignored_for_upload(&file));
        std::fs::write(dir.path().join(".gitignore"), ".env\n").unwrap();
        assert!(ignored_for_upload(&file));
    }
}
