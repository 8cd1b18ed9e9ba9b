//! The settings file (`--config`, `CDEPLOY_CONFIG`): TOML with the long flags' names
//! (`build_timeout = 600`), and how it merges under the flags and their variables.

use std::path::Path;

use clap::CommandFactory;

use super::{Args, Settings};

/// The file's settings (none without a file). A key that is no setting is refused,
/// naming it: a typo must not be silently ignored.
pub fn read(path: Option<&Path>) -> anyhow::Result<Settings> {
    let Some(path) = path else {
        return Ok(Settings::default());
    };
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
    let table: toml::Table = toml::from_str(&text)
        .map_err(|e| anyhow::anyhow!("{}: {}", path.display(), e.message()))?;
    let known = known_keys();
    if let Some(unknown) = table.keys().find(|k| !known.contains(k)) {
        anyhow::bail!(
            "{}: unknown field `{unknown}`, expected one of {}",
            path.display(),
            known
                .iter()
                .map(|k| format!("`{k}`"))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    table
        .try_into()
        .map_err(|e: toml::de::Error| anyhow::anyhow!("{}: {}", path.display(), e.message()))
}

/// The file's keys: every setting's flag with `_` for `-` (not `--config` itself).
fn known_keys() -> Vec<String> {
    let mut keys: Vec<String> = Args::command()
        .get_arguments()
        .filter(|a| a.get_long().is_some())
        .map(|a| a.get_id().to_string())
        .filter(|id| !["config", "help", "version"].contains(&id.as_str()))
        .collect();
    keys.sort_unstable();
    keys
}

/// `flags` (the command line and its environment variables, as clap read them) over
/// `file`: a setting given both ways takes the flag's value. Both are the same
/// [`Settings`], so they merge as tables, key by key, with nothing listed twice.
pub fn merge(flags: Settings, file: Settings) -> anyhow::Result<Settings> {
    let mut merged = toml::Table::try_from(&file)?;
    merged.extend(toml::Table::try_from(&flags)?);
    Ok(merged.try_into()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[test]
    fn flags_win_over_the_file_and_the_file_over_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cdeploy-server.toml");
        std::fs::write(
            &path,
            "build_timeout = 600\nqueue_size = 7\nunsafe_no_sandbox = true\n",
        )
        .unwrap();
        let args = Args::parse_from(["cdeploy-server", "--build-timeout", "30"]);
        let merged = merge(args.settings, read(Some(&path)).unwrap()).unwrap();
        assert_eq!(merged.build.build_timeout, Some(30));
        assert_eq!(merged.build.queue_size, Some(7));
        assert_eq!(merged.build.unsafe_no_sandbox, Some(true));
        assert_eq!(merged.build.concurrency, None);
    }

    #[test]
    fn an_unknown_key_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.toml");
        std::fs::write(&path, "build_timeot = 600\n").unwrap();
        let err = read(Some(&path)).unwrap_err().to_string();
        assert!(err.contains("unknown field `build_timeot`"), "{err}");
        assert!(!known_keys().contains(&"config".to_string()));
        assert!(known_keys().contains(&"gc_grace_secs".to_string()));
    }

    #[test]
    fn the_sandbox_flag_takes_no_value_or_a_boolish_one() {
        let on = Args::parse_from(["cdeploy-server", "--unsafe-no-sandbox"]);
        assert_eq!(on.settings.build.unsafe_no_sandbox, Some(true));
        let off = Args::parse_from(["cdeploy-server"]);
        assert_eq!(off.settings.build.unsafe_no_sandbox, None);
    }
}
