//! The install step and the dependency cache around it. A builder with a cache folder
//! of its own keeps `node_modules` there ([`crate::cache`]); one without (an ECS task)
//! keeps it in storage ([`crate::cache::stored`]). Either way a build reads and writes
//! its own trust scope's entries only, and its log says what the cache did.

use std::path::Path;

use cdeploy_core::event::Step;
use cdeploy_core::plan::Plan;

use super::Build;
use crate::{cache, process, BuildError};

/// What the install left for the local cache to keep once the build has run.
pub(super) struct Deps {
    /// The local cache's entry for this project state (found or not).
    local_key: Option<String>,
    /// What the install made (or the restore brought back), when it may be kept
    /// locally: its digest, taken before the build step.
    installed: Option<String>,
}

/// Which cache entries a build may use, by its log: its own scope's only.
struct Scope {
    key: String,
    name: String,
}

impl Scope {
    fn of(b: &Build<'_>) -> Scope {
        let key = b.spec.scope();
        let name = match key.as_str() {
            "production" => "production's".to_string(),
            "preview" => "previews' (deployed without a branch)".to_string(),
            _ => "this branch's".to_string(),
        };
        Scope { key, name }
    }
}

/// The install: restored from a cache entry, or run (and then kept for the next build
/// when it can be), then the server plan's `prepare` in the project folder (what it
/// adds is kept with the rest). `tools` names the toolchain, part of an entry's key.
pub(super) async fn install(
    b: &Build<'_>,
    plan: &Plan,
    runner: &process::Runner<'_>,
    (checkout, project_dir): (&Path, &Path),
    tools: &str,
    use_cache: bool,
) -> Result<Deps, BuildError> {
    if !use_cache && plan.install.is_some() {
        b.say(
            Step::Install,
            "Build cache: skipped for this build (--force / build.cache = false)",
        )
        .await;
    }
    let scope = Scope::of(b);
    let install = plan.install.as_deref().filter(|_| use_cache);
    let (local_key, local_hit) = match (&b.ws.modules_cache, install) {
        (Some(dir), Some(cmd)) => {
            let s = b.spec;
            cache::lookup(
                dir,
                &s.slug,
                &scope.key,
                checkout,
                &plan.install_dir,
                cmd,
                tools,
            )
            .await
        }
        _ => (None, false),
    };
    let stored_key = stored_key(b, plan, checkout, &scope, tools, install).await;
    let stored_hit = match &stored_key {
        Some(key) => restore_stored(b, plan, key, &scope, tools).await,
        None => false,
    };
    let hit = Hit {
        local: local_hit,
        local_entry: local_key.is_some(),
        stored: stored_hit,
    };
    run_install(b, plan, runner, &scope, hit).await?;
    if let Some(cmd) = plan.server.as_ref().and_then(|s| s.prepare.as_deref()) {
        runner.shell(Step::Install, cmd, project_dir).await?;
    }
    let cached = local_key.is_some() || stored_key.is_some();
    let keepable = keepable(b, plan, cached, local_hit || stored_hit).await;
    let installed = match (&local_key, keepable) {
        (Some(_), true) => cache::installed_digest_of(&plan.install_dir).await,
        _ => None,
    };
    if let (Some(key), false, true) = (&stored_key, stored_hit, keepable) {
        save_stored(b, plan, key).await;
    }
    Ok(Deps {
        local_key,
        installed,
    })
}

/// The storage key of this project state's entry, for a builder without a cache folder
/// of its own (an ECS task): the cache lives in storage.
async fn stored_key(
    b: &Build<'_>,
    plan: &Plan,
    checkout: &Path,
    scope: &Scope,
    tools: &str,
    install: Option<&str>,
) -> Option<String> {
    let cmd = install.filter(|_| b.ws.modules_cache.is_none() && b.ws.storage_cache)?;
    let (checkout, dir, cmd, tools) = (
        checkout.to_path_buf(),
        plan.install_dir.clone(),
        cmd.to_string(),
        tools.to_string(),
    );
    let (slug, scope) = (b.spec.slug.clone(), scope.key.clone());
    tokio::task::spawn_blocking(move || cache::key(&slug, &scope, &checkout, &dir, &cmd, &tools))
        .await
        .ok()
        .flatten()
        .map(|k| cache::stored::storage_key(&b.spec.slug, &k))
}

/// Restores the stored entry into the install folder; says what happened. Returns
/// whether it was restored.
async fn restore_stored(b: &Build<'_>, plan: &Plan, key: &str, scope: &Scope, tools: &str) -> bool {
    let owner = b.ws.sandbox.build_user();
    let name = &scope.name;
    let (hit, line) = match cache::stored::restore(b.storage, key, &plan.install_dir, owner).await {
        Ok(Some(restored)) => (
            true,
            format!(
                "Build cache: restored node_modules from storage, {name} entry ({:.1} MiB fetched in {:.1}s, unpacked in {:.1}s; lockfile, {tools} and install command unchanged): install skipped",
                restored.bytes as f64 / 1048576.0,
                restored.fetch_secs,
                restored.unpack_secs
            ),
        ),
        Ok(None) => (
            false,
            format!(
                "Build cache: miss (no {name} entry for this lockfile, {tools} and install command; builds use their own scope's entries only): installing"
            ),
        ),
        Err(e) => (false, format!("Build cache: cannot restore ({e}): installing")),
    };
    b.say(Step::Install, line).await;
    hit
}

/// What the caches found before the install.
#[derive(Clone, Copy)]
struct Hit {
    /// The local cache restored node_modules.
    local: bool,
    /// The local cache has a key for this project state (hit or miss).
    local_entry: bool,
    /// The stored entry was restored.
    stored: bool,
}

/// Runs the install command unless a cache entry stands in for it.
async fn run_install(
    b: &Build<'_>,
    plan: &Plan,
    runner: &process::Runner<'_>,
    scope: &Scope,
    hit: Hit,
) -> Result<(), BuildError> {
    let name = &scope.name;
    match &plan.install {
        Some(_) if hit.local => {
            b.say(
                Step::Install,
                format!("Restored node_modules from the build cache, {name} entry (lockfile unchanged): install skipped"),
            )
            .await
        }
        Some(cmd) if hit.local_entry => {
            b.say(
                Step::Install,
                format!("Build cache: no {name} entry for this lockfile (builds use their own scope's entries only): installing"),
            )
            .await;
            runner.shell(Step::Install, cmd, &plan.install_dir).await?
        }
        Some(_) if hit.stored => {}
        Some(cmd) => runner.shell(Step::Install, cmd, &plan.install_dir).await?,
        None => b.say(Step::Install, "No install step (no package.json)").await,
    }
    Ok(())
}

/// Whether the install folder's node_modules may be kept. pnpm (and nested npm/yarn
/// installs) give workspace packages node_modules of their own: an entry of the root's
/// alone would break the next build.
async fn keepable(b: &Build<'_>, plan: &Plan, cached: bool, restored: bool) -> bool {
    if plan.install.is_none() || !cached {
        return false;
    }
    let dir = plan.install_dir.clone();
    let nested = tokio::task::spawn_blocking(move || cache::nested_modules(&dir))
        .await
        .unwrap_or(true);
    if nested && !restored {
        b.say(
            Step::Install,
            "Build cache: not kept: workspace packages have node_modules of their own",
        )
        .await;
    }
    !nested
}

/// Saves a fresh install to storage, before the build adds its own files. The builder
/// reads the tree as itself: nothing of the build may still run and swap a folder for a
/// link meanwhile (the pid namespace ended with the install; the cgroup is emptied too).
async fn save_stored(b: &Build<'_>, plan: &Plan, key: &str) {
    b.cell.kill_all();
    let line = match cache::stored::save(b.storage, key, &plan.install_dir).await {
        Ok(size) => format!(
            "Build cache: saved node_modules ({:.1} MiB) for the next build",
            size as f64 / 1048576.0
        ),
        Err(e) => format!("Build cache: not saved: {e}"),
    };
    b.say(Step::Install, line).await;
}

impl Deps {
    /// Keeps node_modules in the local cache if the build left it as the install made
    /// it; says so when the build changed it.
    pub(super) async fn keep_locally(&self, b: &Build<'_>, plan: &Plan) {
        let (Some(dir), Some(key), Some(installed)) =
            (&b.ws.modules_cache, &self.local_key, &self.installed)
        else {
            return;
        };
        if cache::store(dir, key, &plan.install_dir, installed).await == cache::Kept::Changed {
            b.say(
                Step::Build,
                "Build cache: node_modules not kept: the build changed what the install made (only tools' cache folders such as node_modules/.cache and .vite may change); the next build installs afresh",
            )
            .await;
        }
    }
}
