//! Deployments: finding one and its JSON view; creating one (validated, recorded,
//! queued) for the API, a forge's delivery or a deploy hook; cancelling and deleting
//! one; building one again; a ready one's files; the builds under way; what its builder
//! is given.

use std::collections::BTreeMap;

use cdeploy_builder::{BuildSpec, ReuseSpec, SourceSpec};
use cdeploy_core::api::{self, codes, CreateDeployment, SourceKind};
use cdeploy_core::event::{EventBody, Status};
use cdeploy_core::rules::RulesConfig;
use cdeploy_core::{git, ids, layout};
use cdeploy_storage::publish::OutputFiles;

use super::blobs::check_file_map;
use super::error::{Error, Kind, Result};
use super::projects::{delete_artifacts, stop_builds};
use super::validate::{being_deleted, check_git};
use super::App;
use crate::db::{CommitTarget, DeploymentRow, StoreError};
use crate::dispatch::{DispatchError, Job, JobKind};

impl App {
    /// The deployment `id`, or `404`.
    pub async fn deployment(&self, id: &str) -> Result<DeploymentRow> {
        let Some(id) = ids::DeploymentId::parse(id) else {
            return Err(Error::not_found(format!("deployment {id:?}")));
        };
        self.store
            .get_deployment(id.as_str())
            .await?
            .ok_or_else(|| Error::not_found(format!("deployment {id}")))
    }

    pub fn deployment_json(&self, d: &DeploymentRow, production: Option<&str>) -> api::Deployment {
        api::Deployment {
            id: d.id.clone(),
            slug: d.slug.clone(),
            status: d.status,
            source: d.source,
            git: d.git.clone().map(|g| api::GitSource {
                url: git::redact_url(&g.url),
                ..g
            }),
            created_at: d.created_at.clone(),
            updated_at: d.updated_at.clone(),
            url: api::site_url(&self.config.domain, &d.slug, None),
            preview_url: api::site_url(&self.config.domain, &d.slug, Some(&d.id)),
            production: production == Some(d.id.as_str()),
            error: d.error.clone(),
            preview: d.preview,
            branch: d.branch.clone(),
            branch_url: self.branch_url(d),
            commit: d.commit.clone(),
            reused_from: d.reused_from.clone(),
        }
    }

    /// [`App::deployment_json`], with whether it is its project's production one.
    pub async fn deployment_response(&self, d: &DeploymentRow) -> Result<api::Deployment> {
        let production = self
            .store
            .get_project(&d.slug)
            .await?
            .and_then(|p| p.production);
        Ok(self.deployment_json(d, production.as_deref()))
    }

    /// `<label>--<slug>.<domain>` of a preview of a branch.
    pub fn branch_url(&self, d: &DeploymentRow) -> Option<String> {
        // A slug that looks like a deployment id cannot be told apart in an alias host.
        if ids::DeploymentId::parse(&d.slug).is_some() {
            return None;
        }
        let label = ids::branch_label(d.branch.as_deref()?, &d.slug)?;
        d.preview
            .then(|| api::branch_url(&self.config.domain, &label, &d.slug))
    }
}

/// Deletes one deployment (not the one in production: promote another, or delete the
/// project). A running one is canceled first.
pub async fn delete(app: &App, id: &str) -> Result<()> {
    let d = app.deployment(id).await?;
    let p = app.project(&d.slug).await?;
    if p.production.as_deref() == Some(d.id.as_str()) {
        return Err(Error::conflict(format!(
            "deployment {} is {}'s production deployment: promote another one first, or delete the project",
            d.id, d.slug
        )));
    }
    stop_builds(app, std::slice::from_ref(&d)).await?;
    delete_artifacts(app, &d.id).await?;
    app.store.delete_deployment(&d.id).await?;
    Ok(())
}

/// Cancels a deployment that has not ended; answers with what is known now (a running
/// build reports `canceled` once its processes are gone).
pub async fn cancel(app: &App, id: &str) -> Result<DeploymentRow> {
    let d = app.deployment(id).await?;
    if d.status.is_terminal() {
        return Err(Error::conflict(format!(
            "deployment {} is already {}",
            d.id, d.status
        )));
    }
    if !app.dispatcher.cancel(&d.id, &d.slug).await {
        app.lifecycle
            .event(&d.id, &d.slug, EventBody::status(Status::Canceled))
            .await;
    }
    app.deployment(id).await
}

/// A request made again with its Idempotency-Key: answers with the deployment the key
/// made, or refuses when the key was used for a different request (a client bug:
/// saying so beats answering with a deployment of something else).
pub async fn check_same_request(app: &App, d: &DeploymentRow, hash: &str) -> Result<()> {
    match app.store.request_hash(&d.id).await? {
        Some(h) if h != hash => Err(Error::new(
            Kind::Unprocessable,
            codes::BAD_REQUEST,
            format!(
                "this Idempotency-Key was used for deployment {} with a different request; use a new key for a new request",
                d.id
            ),
        )),
        _ => Ok(()),
    }
}

/// Creates a deployment for a request that may carry an Idempotency-Key: the same key
/// and request answer with the same deployment.
pub async fn create_keyed(
    app: &App,
    slug: &str,
    body: CreateDeployment,
    idempotency_key: Option<String>,
) -> Result<DeploymentRow> {
    let request_hash = cdeploy_core::sha256_hex(&serde_json::to_vec(&body).expect("serializes"));
    if let Some(key) = &idempotency_key {
        if let Some(existing) = app.store.find_by_idempotency_key(slug, key).await? {
            check_same_request(app, &existing, &request_hash).await?;
            return Ok(existing);
        }
    }
    let keyed = idempotency_key.is_some();
    let d = start(app, slug, body, idempotency_key, None).await?;
    if keyed {
        match app.store.request_hash(&d.id).await? {
            None => app.store.set_request_hash(&d.id, &request_hash).await?,
            // Another request with the same key won the race.
            Some(_) => check_same_request(app, &d, &request_hash).await?,
        }
    }
    Ok(d)
}

/// A forge's commit a deployment builds: its statuses go there.
pub struct Commit {
    pub forge: String,
    pub repo: String,
    pub sha: String,
    /// The pull request the deployment is for.
    pub pr: Option<u64>,
}

/// Validates a deployment request, records it, and queues its work. A deployment of a
/// commit a forge told of (`commit`) has its statuses posted there, the target recorded
/// before the first one is.
pub async fn start(
    app: &App,
    slug: &str,
    body: CreateDeployment,
    idempotency_key: Option<String>,
    commit: Option<Commit>,
) -> Result<DeploymentRow> {
    let checked = check_request(app, slug, &body).await?;
    app.lifecycle.bus.check().await.map_err(|e| {
        let mut err = Error::new(Kind::Unavailable, codes::UNAVAILABLE, e.to_string());
        err.retry_after = Some(10);
        err
    })?;
    app.store
        .create_project(slug, body.git.as_ref().map(|g| g.url.as_str()))
        .await?;
    if app.project(slug).await?.deleting {
        return Err(being_deleted(slug));
    }
    // Read (and opened) before the deployment is recorded: a key problem is answered
    // now, and nothing is left behind.
    let secrets = match checked.kind {
        SourceKind::Prebuilt => Default::default(),
        SourceKind::Git | SourceKind::Upload => build_secrets(app, slug, body.preview).await?,
    };
    let row = new_row(slug, &body, &checked, idempotency_key);
    if let Some(existing) = record(app, &row, &body, commit).await? {
        return Ok(existing);
    }
    let kind = match checked.kind {
        SourceKind::Prebuilt => {
            activation(app, &row, (body.files, body.rules), &checked.prebuilt_sizes)
        }
        SourceKind::Git | SourceKind::Upload => {
            let mut spec = build_spec(app, &row);
            (spec.secrets, spec.reuse) = (secrets.0, Some(secrets.1));
            JobKind::Build(Box::new(spec))
        }
    };
    queue(app, &row, kind).await?;
    app.store
        .get_deployment(&row.id)
        .await?
        .ok_or_else(|| Error::internal("deployment vanished", &row.id))
}

/// What [`check_request`] found valid.
struct Checked {
    kind: SourceKind,
    build: cdeploy_core::config::BuildConfig,
    env: BTreeMap<String, String>,
    branch: Option<String>,
    /// Sizes of a prebuilt upload's blobs.
    prebuilt_sizes: BTreeMap<String, u64>,
}

/// Checks everything a request gives before anything is recorded.
async fn check_request(app: &App, slug: &str, body: &CreateDeployment) -> Result<Checked> {
    let mut prebuilt_sizes = BTreeMap::new();
    let kind = match (&body.git, &body.source, &body.files) {
        (Some(g), None, None) => {
            check_git(&g.url, g.git_ref.as_deref())?;
            SourceKind::Git
        }
        (None, Some(map), None) => {
            check_file_map(app, map, false).await?;
            SourceKind::Upload
        }
        (None, None, Some(map)) => {
            prebuilt_sizes = check_file_map(app, map, true).await?;
            SourceKind::Prebuilt
        }
        _ => {
            return Err(Error::bad_request(
                "give exactly one of `git`, `source` or `files`",
            ))
        }
    };
    let build = body.build.clone().unwrap_or_default();
    build
        .validate()
        .map_err(|(key, msg)| Error::bad_request(format!("{key} {msg}")))?;
    let env = body.env.clone().unwrap_or_default();
    if let Some(bad) = env.keys().find(|k| !cdeploy_core::config::is_env_name(k)) {
        return Err(Error::bad_request(format!(
            "env: {bad:?} is not a valid variable name"
        )));
    }
    let branch = check_branch_alias(slug, body)?;
    Ok(Checked {
        kind,
        build,
        env,
        branch,
        prebuilt_sizes,
    })
}

/// The branch a preview is aliased to, if any.
fn check_branch_alias(slug: &str, body: &CreateDeployment) -> Result<Option<String>> {
    match body.branch.as_deref().map(str::trim) {
        None | Some("") => Ok(None),
        Some(_) if !body.preview => Err(Error::bad_request(
            "branch: only previews have branch aliases (set preview)",
        )),
        Some(b) if b.len() > 255 || ids::branch_label(b, slug).is_none() => {
            Err(Error::bad_request(format!(
                "branch {b:?}: 1 to 255 characters, with at least one letter or digit"
            )))
        }
        Some(b) => Ok(Some(b.to_string())),
    }
}

fn new_row(
    slug: &str,
    body: &CreateDeployment,
    checked: &Checked,
    idempotency_key: Option<String>,
) -> DeploymentRow {
    let now = cdeploy_core::now_rfc3339();
    DeploymentRow {
        id: ids::DeploymentId::generate().to_string(),
        slug: slug.to_string(),
        status: Status::Queued,
        source: checked.kind,
        git: body.git.clone(),
        build: checked.build.clone(),
        env: checked.env.clone(),
        site: body.site.unwrap_or_default(),
        error: None,
        idempotency_key,
        task: None,
        created_at: now.clone(),
        updated_at: now,
        preview: body.preview,
        branch: checked.branch.clone(),
        commit: None,
        reused_from: None,
    }
}

/// Stores the file list, inserts the row and its commit target, and announces it as
/// queued. `Some` is the deployment another request with the same Idempotency-Key made
/// first (answered with instead).
async fn record(
    app: &App,
    row: &DeploymentRow,
    body: &CreateDeployment,
    commit: Option<Commit>,
) -> Result<Option<DeploymentRow>> {
    // The file list is stored before the deployment exists: a source for its build,
    // and for prebuilt output the list GC marks as referenced while it waits to be
    // activated.
    if let Some(map) = body.source.as_ref().or(body.files.as_ref()) {
        cdeploy_storage::put_json(app.storage.as_ref(), &layout::source_map(&row.id), map).await?;
    }
    // The commit first: the `created` event written with the row reads it.
    if let Some(Commit {
        forge,
        repo,
        sha,
        pr,
    }) = commit
    {
        app.store
            .set_commit_target(&CommitTarget {
                deployment: row.id.clone(),
                forge,
                repo,
                sha,
                pr: pr.and_then(|n| i64::try_from(n).ok()),
            })
            .await?;
    }
    match app.store.insert_deployment(row).await {
        Ok(()) => {}
        // Two requests with the same Idempotency-Key raced: answer with the winner (this
        // one's commit row goes with the id it was made for).
        Err(StoreError::Conflict) => {
            app.store.delete_deployment(&row.id).await?;
            let key = row.idempotency_key.as_deref().unwrap_or_default();
            if let Some(existing) = app.store.find_by_idempotency_key(&row.slug, key).await? {
                return Ok(Some(existing));
            }
            return Err(Error::conflict(
                "a deployment with this Idempotency-Key is being created",
            ));
        }
        Err(e) => {
            app.store.delete_deployment(&row.id).await?;
            return Err(e.into());
        }
    }
    app.lifecycle.metrics.deployments_created.inc();
    app.lifecycle
        .event(&row.id, &row.slug, EventBody::status(Status::Queued))
        .await;
    Ok(None)
}

/// The job of a prebuilt upload: activating its files.
fn activation(
    app: &App,
    row: &DeploymentRow,
    (files, rules): (Option<BTreeMap<String, String>>, Option<RulesConfig>),
    sizes: &BTreeMap<String, u64>,
) -> JobKind {
    let files: OutputFiles = files
        .expect("a prebuilt deployment has files")
        .into_iter()
        .map(|(path, hash)| {
            let size = sizes.get(&hash).copied().unwrap_or(0);
            (path, (hash, size))
        })
        .collect();
    let url = api::site_url(
        &app.config.domain,
        &row.slug,
        row.preview.then_some(row.id.as_str()),
    );
    JobKind::Activate {
        files,
        site: row.site,
        rules: rules.unwrap_or_default(),
        url,
        promote: !row.preview,
    }
}

/// Hands the job to the dispatcher. A refused job fails the deployment with the
/// reason (it is answered with, as any failed build); a full queue or a server that is
/// stopping is a retryable error.
async fn queue(app: &App, row: &DeploymentRow, kind: JobKind) -> Result<()> {
    let job = Job {
        id: row.id.clone(),
        slug: row.slug.clone(),
        kind,
    };
    let Err(e) = app.dispatcher.submit(job).await else {
        return Ok(());
    };
    app.lifecycle
        .event(&row.id, &row.slug, EventBody::failed(e.to_string()))
        .await;
    if let DispatchError::Rejected(_) = e {
        return Ok(());
    }
    let kind = match e {
        DispatchError::ShuttingDown => Kind::Unavailable,
        _ => Kind::RateLimited,
    };
    let mut err = Error::new(kind, codes::QUEUE_FULL, e.to_string());
    err.retry_after = Some(30);
    Err(err)
}

/// The stored secrets a build of `slug`'s target gets, and their version for its
/// inputs ([`ReuseSpec`]): added where a build is handed over, never stored with it.
pub async fn build_secrets(
    app: &App,
    slug: &str,
    preview: bool,
) -> Result<(cdeploy_builder::Secrets, ReuseSpec)> {
    let (secrets, version) = super::secrets::for_build(app, slug, preview).await?;
    Ok((secrets, ReuseSpec { secrets: version }))
}

/// What a deployment's builder builds: the same for a local build and for an ECS
/// builder that claims it through the builder API.
pub fn build_spec(app: &App, row: &DeploymentRow) -> BuildSpec {
    let source = match &row.git {
        Some(g) => SourceSpec::Git {
            url: g.url.clone(),
            git_ref: g.git_ref.clone(),
        },
        None => SourceSpec::Upload {
            source_map_key: layout::source_map(&row.id),
        },
    };
    // A preview's build knows its own URLs (CDEPLOY_URL; CDEPLOY_ENV is `preview`).
    let mut env = row.env.clone();
    let url = if row.preview {
        if let Some(branch_url) = app.branch_url(row) {
            env.insert("CDEPLOY_BRANCH_URL".into(), branch_url);
        }
        api::site_url(&app.config.domain, &row.slug, Some(&row.id))
    } else {
        api::site_url(&app.config.domain, &row.slug, None)
    };
    BuildSpec {
        deployment_id: row.id.clone(),
        slug: row.slug.clone(),
        source,
        build: row.build.clone(),
        env,
        site: row.site,
        url,
        promote: !row.preview,
        timeout: app.config.build_timeout,
        // Added where the build is handed over (`secrets::for_build`), never stored.
        secrets: Default::default(),
        cache_scope: layout::cache_scope(row.preview, row.branch.as_deref()),
        // Added with the secrets (`secrets::version`).
        reuse: None,
    }
}

/// Builds a finished deployment's source again as a new deployment, with the same
/// build settings, request variables, site settings, and preview and branch (the
/// dashboard's Redeploy), at the commit its build cloned when that was recorded. It
/// always builds (asking for a build again is the point). Prebuilt output has no build
/// to run again.
pub async fn redeploy(app: &App, id: &str) -> Result<DeploymentRow> {
    let d = app.deployment(id).await?;
    if !d.status.is_terminal() {
        return Err(Error::conflict(format!(
            "deployment {id} is still {}: wait for it, or cancel it first",
            d.status
        )));
    }
    let mut body = CreateDeployment {
        build: Some(cdeploy_core::config::BuildConfig {
            skip_unchanged: Some(false),
            ..d.build.clone()
        }),
        env: (!d.env.is_empty()).then(|| d.env.clone()),
        site: Some(d.site),
        preview: d.preview,
        branch: d.branch.clone(),
        ..Default::default()
    };
    match d.source {
        SourceKind::Git => {
            body.git = d.git.clone().map(|g| api::GitSource {
                git_ref: d.commit.clone().or(g.git_ref),
                ..g
            })
        }
        SourceKind::Upload => {
            let map: BTreeMap<String, String> =
                cdeploy_storage::get_json(app.storage.as_ref(), &layout::source_map(&d.id))
                    .await?
                    .ok_or_else(|| {
                        Error::new(
                            Kind::Gone,
                            codes::NOT_FOUND,
                            format!("the uploaded source of deployment {id} is no longer stored; deploy from the CLI"),
                        )
                    })?;
            body.source = Some(map);
        }
        SourceKind::Prebuilt => {
            return Err(Error::new(
                Kind::Unprocessable,
                codes::BAD_REQUEST,
                format!("deployment {id} was uploaded already built: there is nothing to build again (promote it, or deploy the folder again)"),
            ))
        }
    }
    start(app, &d.slug, body, None, None).await
}

/// Most files one page of [`files`] lists.
pub const MAX_FILES_PAGE: usize = 1000;

/// A ready deployment's files in path order: `limit` of them after path `after`.
pub async fn files(
    app: &App,
    id: &str,
    after: Option<&str>,
    limit: usize,
) -> Result<api::DeploymentFiles> {
    let d = app.deployment(id).await?;
    let m = super::route::ready_manifest(app, &d).await?;
    if !(1..=MAX_FILES_PAGE).contains(&limit) {
        return Err(Error::bad_request(format!(
            "limit: 1 to {MAX_FILES_PAGE}, not {limit}"
        )));
    }
    let from = match after {
        Some(a) => std::ops::Bound::Excluded(a),
        None => std::ops::Bound::Unbounded,
    };
    let mut page: Vec<api::DeploymentFile> = m
        .files
        .range::<str, _>((from, std::ops::Bound::Unbounded))
        .take(limit + 1)
        .map(|(path, f)| api::DeploymentFile {
            path: path.clone(),
            size: f.size,
            content_type: f.content_type.clone(),
        })
        .collect();
    let next = (page.len() > limit).then(|| {
        page.truncate(limit);
        page[limit - 1].path.clone()
    });
    Ok(api::DeploymentFiles {
        total: m.files.len() as u64,
        total_bytes: m.files.values().map(|f| f.size).sum(),
        files: page,
        next,
    })
}

/// Every queued or running deployment of the projects `sees` allows, oldest first.
pub async fn active(app: &App, sees: impl Fn(&str) -> bool) -> Result<Vec<api::Deployment>> {
    Ok(app
        .store
        .non_terminal_deployments()
        .await?
        .iter()
        .filter(|d| sees(&d.slug))
        .map(|d| app.deployment_json(d, None))
        .collect())
}
