//! Stored secrets: a project's environment variables per target (production, preview),
//! sealed at rest with the operator's [`Keyring`] and given to builds of that target.
//! Values are written and read back by admins only (`api::env`); a sensitive one is
//! never read back.

use std::collections::BTreeMap;

use cdeploy_builder::Secrets;
use cdeploy_core::api::{EnvTarget, EnvValues, EnvVar, PutEnv};
use cdeploy_core::config::is_env_name;
use cdeploy_core::layout;
use cdeploy_core::server::SealedEnv;

use super::error::{Error, Result};
pub use super::keyring::{Keyring, OpenError};
use super::validate::{being_deleted, check_slug};
use super::App;
use crate::db::SecretRow;

/// Longest value, in bytes (Linux takes at most 128 KiB per variable).
pub const MAX_VALUE_BYTES: usize = 64 * 1024;
/// Most variables one project stores (name and target pairs).
pub const MAX_PER_PROJECT: usize = 200;
/// Most bytes of values one target of a project holds: a build's whole environment
/// and arguments must fit the kernel's limit (a quarter of the stack limit, 2 MiB).
pub const MAX_BYTES_PER_TARGET: usize = 512 * 1024;

fn listed(row: &SecretRow) -> EnvVar {
    EnvVar {
        name: row.name.clone(),
        target: row.target,
        sensitive: row.sensitive,
        runtime: row.runtime,
        created_at: row.created_at.clone(),
        updated_at: row.updated_at.clone(),
    }
}

async fn existing_project(app: &App, slug: &str) -> Result<()> {
    check_slug(slug)?;
    match app.store.get_project(slug).await? {
        Some(p) if !p.deleting => Ok(()),
        _ => Err(Error::not_found(format!("project {slug}"))),
    }
}

fn check_name(name: &str) -> Result<()> {
    if !is_env_name(name) {
        return Err(Error::bad_request(format!(
            "{name:?} is not a valid variable name (letters, digits and '_', not starting with a digit, at most 256)"
        )));
    }
    if name == "CDEPLOY" || name.starts_with("CDEPLOY_") {
        return Err(Error::bad_request(format!(
            "{name}: names starting with CDEPLOY_ are the platform's (CDEPLOY_ENV, CDEPLOY_URL, …)"
        )));
    }
    Ok(())
}

/// Names, targets and dates, never values.
pub async fn list(app: &App, slug: &str) -> Result<Vec<EnvVar>> {
    existing_project(app, slug).await?;
    let rows = app.store.list_secrets(slug).await?;
    Ok(rows.iter().map(listed).collect())
}

/// Stores a value for the targets asked (both by default), replacing what they held;
/// answers the targets written and their rows. Creates the project, as a first deploy
/// would.
pub async fn put(
    app: &App,
    slug: &str,
    name: &str,
    req: &PutEnv,
) -> Result<(Vec<EnvTarget>, Vec<EnvVar>)> {
    check_slug(slug)?;
    check_name(name)?;
    let keys = app.keys()?;
    check_value(name, &req.value)?;
    let mut targets = req.targets.clone();
    if targets.is_empty() {
        targets = EnvTarget::ALL.to_vec();
    }
    targets.sort();
    targets.dedup();

    app.store.create_project(slug, None).await?;
    if app.project(slug).await?.deleting {
        return Err(being_deleted(slug));
    }
    let existing = app.store.list_secrets(slug).await?;
    check_room(slug, name, &req.value, &targets, &existing)?;
    let now = cdeploy_core::now_rfc3339();
    for &target in &targets {
        let (key_id, sealed) = keys.seal(slug, name, target, &req.value);
        let row = SecretRow {
            slug: slug.to_string(),
            name: name.to_string(),
            target,
            sensitive: req.sensitive,
            runtime: req.runtime,
            key_id,
            sealed,
            created_at: now.clone(),
            updated_at: now.clone(),
        };
        app.store.put_secret(&row).await?;
    }
    let rows = app.store.list_secrets(slug).await?;
    let written = rows
        .iter()
        .filter(|r| r.name == name && targets.contains(&r.target))
        .map(listed)
        .collect();
    publish_runtime_env(app, slug).await?;
    Ok((targets, written))
}

fn check_value(name: &str, value: &str) -> Result<()> {
    if value.len() > MAX_VALUE_BYTES {
        return Err(Error::too_large(format!(
            "{name}: the value is {} bytes; the most is {MAX_VALUE_BYTES} (64 KiB)",
            value.len()
        )));
    }
    if value.contains('\0') {
        return Err(Error::bad_request(format!(
            "{name}: a value cannot hold a NUL character (environment variables cannot)"
        )));
    }
    Ok(())
}

/// Refuses a write past the project's count or a target's size limit.
fn check_room(
    slug: &str,
    name: &str,
    value: &str,
    targets: &[EnvTarget],
    existing: &[SecretRow],
) -> Result<()> {
    let new_rows = targets
        .iter()
        .filter(|t| !existing.iter().any(|r| r.target == **t && r.name == name))
        .count();
    if existing.len() + new_rows > MAX_PER_PROJECT {
        return Err(Error::conflict(format!(
            "project {slug} stores {} variables, the most there may be ({MAX_PER_PROJECT}); remove some first (cdeploy env rm)",
            existing.len()
        )));
    }
    for &t in targets {
        // Sizes of sealed values are known without opening them: base64 of nonce,
        // ciphertext and tag.
        let held: usize = existing
            .iter()
            .filter(|r| r.target == t && r.name != name)
            .map(|r| r.name.len() + sealed_len(&r.sealed))
            .sum();
        if held + name.len() + value.len() > MAX_BYTES_PER_TARGET {
            return Err(Error::too_large(format!(
                "{t} variables of {slug} would hold more than {} KiB, the most a build's environment takes",
                MAX_BYTES_PER_TARGET / 1024
            )));
        }
    }
    Ok(())
}

/// The plaintext length of a sealed value (24-byte nonce and 16-byte tag around it).
pub(super) fn sealed_len(sealed: &str) -> usize {
    let padding = sealed.bytes().rev().take_while(|b| *b == b'=').count();
    (sealed.len() / 4 * 3)
        .saturating_sub(padding)
        .saturating_sub(24 + 16)
}

/// Removes a variable from both targets unless one is named; answers how many rows.
pub async fn remove(app: &App, slug: &str, name: &str, target: Option<EnvTarget>) -> Result<usize> {
    existing_project(app, slug).await?;
    let removed = app.store.delete_secret(slug, name, target).await?;
    if removed == 0 {
        let what = match target {
            Some(t) => format!("variable {name} ({t}) of {slug}"),
            None => format!("variable {name} of {slug}"),
        };
        return Err(Error::not_found(what));
    }
    publish_runtime_env(app, slug).await?;
    Ok(removed as usize)
}

/// A target's values for `env pull`; sensitive ones are named, never answered.
pub async fn values(app: &App, slug: &str, target: Option<EnvTarget>) -> Result<EnvValues> {
    existing_project(app, slug).await?;
    let target = target.unwrap_or(EnvTarget::Production);
    let rows = app.store.list_secrets(slug).await?;
    let mut out = EnvValues::default();
    let rows: Vec<&SecretRow> = rows.iter().filter(|r| r.target == target).collect();
    if rows.iter().any(|r| !r.sensitive) {
        let keys = app.keys()?;
        for row in rows.iter().filter(|r| !r.sensitive) {
            let value = keys.open(row).map_err(|e| unopened(row, e))?;
            out.values.insert(row.name.clone(), value);
        }
    }
    out.sensitive = rows
        .iter()
        .filter(|r| r.sensitive)
        .map(|r| r.name.clone())
        .collect();
    Ok(out)
}

fn unopened(row: &SecretRow, e: OpenError) -> Error {
    Error::internal(
        &format!(
            "stored variable {} ({}) of {} does not open with this server's keys",
            row.name, row.target, row.slug
        ),
        e,
    )
}

/// What a deployment's build is given: the project's values for its target, opened;
/// and the version of those values, part of what a build reads
/// (`cdeploy_builder::spec::ReuseSpec`), from the same rows (a value set in between
/// cannot be built under the new version): a SHA-256 over each one's name, when it was
/// set and whether its server gets it, never over a value (a stored digest must not
/// let anyone test guesses of a secret).
pub async fn for_build(app: &App, slug: &str, preview: bool) -> Result<(Secrets, String)> {
    use sha2::Digest;
    let target = EnvTarget::of(preview);
    let mut rows: Vec<SecretRow> = app.store.list_secrets(slug).await?;
    rows.retain(|r| r.target == target);
    rows.sort_by(|a, b| a.name.cmp(&b.name));
    let mut h = sha2::Sha256::new();
    for r in &rows {
        h.update(format!("{}\0{}\0{}\n", r.name, r.updated_at, r.runtime));
    }
    Ok((open_rows(app, &rows)?, hex::encode(h.finalize())))
}

/// The variables a server app's server gets at run time: its target's marked
/// `runtime`, opened.
pub async fn for_runtime(app: &App, slug: &str, preview: bool) -> Result<Secrets> {
    opened(app, slug, preview, |r| r.runtime).await
}

/// The values of `slug`'s target (preview or production) that `keep` takes, opened.
async fn opened(
    app: &App,
    slug: &str,
    preview: bool,
    keep: impl Fn(&SecretRow) -> bool,
) -> Result<Secrets> {
    let target = EnvTarget::of(preview);
    let mut rows = app.store.list_secrets(slug).await?;
    rows.retain(|r| r.target == target && keep(r));
    open_rows(app, &rows)
}

/// The values of `rows`, opened.
fn open_rows(app: &App, rows: &[SecretRow]) -> Result<Secrets> {
    let mut out = BTreeMap::new();
    for row in rows {
        let keys = app.keys()?;
        let value = keys.open(row).map_err(|e| unopened(row, e))?;
        out.insert(row.name.clone(), value);
    }
    Ok(Secrets(out))
}

/// Writes a project's variables marked `runtime` of both targets to storage for servers
/// on `cdeploy-proxy` replicas (`runtime-env/<slug>/<target>.json`), sealed with the
/// protection keyring the proxies share; a target without any has no document. Without
/// a protection key the documents are removed: values are never stored plain, and old
/// ones must not outlive a change. One at a time in this process, each reading the
/// database under the lock, so the last written is the newest state (two control-plane
/// replicas changing one project's variables at once can still race).
pub async fn publish_runtime_env(app: &App, slug: &str) -> Result<()> {
    static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    let _turn = ONE_AT_A_TIME.lock().await;
    let keys = app.config.protection_keys.as_deref();
    for target in EnvTarget::ALL {
        let vars = match keys {
            Some(_) => for_runtime(app, slug, target == EnvTarget::Preview).await?,
            None => Secrets::default(),
        };
        let key = layout::runtime_env(slug, target.as_str());
        if let (false, Some(keys)) = (vars.is_empty(), keys) {
            let doc = SealedEnv::seal(slug, target.as_str(), &vars.0, keys);
            cdeploy_storage::put_json(app.storage.as_ref(), &key, &doc).await?;
        } else {
            app.storage.delete(&key).await?;
        }
    }
    Ok(())
}

/// At start: the embedded proxy's servers read their variables from the database, and
/// every project's documents of [`publish_runtime_env`] are written again (in the
/// background) for the replicas' servers.
pub fn serve_runtime_env(app: &std::sync::Arc<App>, runtimes: Option<&cdeploy_runtime::Runtimes>) {
    if let Some(r) = runtimes {
        r.set_env_source(std::sync::Arc::new(RuntimeEnv(std::sync::Arc::downgrade(
            app,
        ))));
    }
    let app = app.clone();
    tokio::spawn(async move { publish_all_runtime_env(&app).await });
}

/// Every project's documents of [`publish_runtime_env`] written again: sealed with the
/// current protection key, written for values stored before there was one, and removed
/// for projects that no longer have any (a failed write after the last was removed) or
/// when there is no key any more.
async fn publish_all_runtime_env(app: &App) {
    let rows = match app.store.all_secrets().await {
        Ok(rows) => rows,
        Err(e) => {
            tracing::warn!(error = %e, "cannot list stored variables to write them for the proxies");
            return;
        }
    };
    let mut slugs: std::collections::BTreeSet<String> = rows
        .into_iter()
        .filter(|r| r.runtime)
        .map(|r| r.slug)
        .collect();
    match app.storage.list(layout::RUNTIME_ENV_PREFIX).await {
        Ok(listed) => slugs.extend(listed.iter().filter_map(|l| {
            let rest = l.key.strip_prefix(layout::RUNTIME_ENV_PREFIX)?;
            rest.split_once('/').map(|(slug, _)| slug.to_string())
        })),
        Err(e) => tracing::warn!(error = %e, "cannot list the runtime variables in storage"),
    }
    for slug in &slugs {
        if let Err(e) = publish_runtime_env(app, slug).await {
            tracing::warn!(project = %slug, error = %e, "cannot write its runtime variables for the proxies");
        }
    }
}

/// The control plane's stored variables for the embedded proxy's servers: a
/// deployment's target (production or preview) and its variables marked `runtime`.
pub struct RuntimeEnv(pub std::sync::Weak<App>);

#[async_trait::async_trait]
impl cdeploy_runtime::EnvSource for RuntimeEnv {
    async fn env(&self, deployment: &str) -> std::result::Result<Vec<(String, String)>, String> {
        let app = self.0.upgrade().ok_or("the server is stopping")?;
        let d = app
            .store
            .get_deployment(deployment)
            .await
            .map_err(|e| format!("cannot read the deployment: {e}"))?
            .ok_or("the deployment is gone")?;
        let secrets = for_runtime(&app, &d.slug, d.preview)
            .await
            .map_err(|e| format!("cannot open its stored variables: {e}"))?;
        Ok(secrets.0.into_iter().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_of_the_platform_and_bad_names_are_refused() {
        for bad in ["CDEPLOY_ENV", "CDEPLOY", "1X", "A-B", ""] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
        for good in ["API_KEY", "_X", "CDEPLOYX", "next_public_url"] {
            assert!(check_name(good).is_ok(), "{good}");
        }
    }
}
