//! Metadata: projects, deployments and API tokens, behind the [`Store`] trait.
//!
//! Two backends share one implementation, one set of SQL statements and one numbered
//! migration list: [`SqliteStore`] (embedded default, a file in the data dir) and
//! [`PgStore`] (`postgres://…`, shared by server replicas). Statements are written with
//! `?` placeholders; Postgres gets them renumbered to `$1, $2, …` once, at first use.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::str::FromStr;
use std::sync::OnceLock;
use std::time::Duration;

use async_trait::async_trait;
use cdeploy_core::api::{GitSource, Role, SourceKind};
use cdeploy_core::config::{BuildConfig, SiteConfig};
use cdeploy_core::event::Status;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{PgPool, Row, SqlitePool};

pub type DbResult<T> = Result<T, StoreError>;

/// What the store can fail with, in its callers' terms (never the driver's types).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A row with the same key exists (two requests raced to create it).
    #[error("a record with the same key exists")]
    Conflict,
    /// The database cannot be reached or has no connection free: worth a retry.
    #[error("the database is unavailable: {0}")]
    Unavailable(String),
    /// Anything else: a failed statement, a broken row.
    #[error("database error: {0}")]
    Failed(String),
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        match e {
            sqlx::Error::Database(d) if d.is_unique_violation() => StoreError::Conflict,
            sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) => {
                StoreError::Unavailable(e.to_string())
            }
            other => StoreError::Failed(other.to_string()),
        }
    }
}

#[derive(Debug, Clone)]
pub struct ProjectRow {
    pub slug: String,
    pub git: Option<String>,
    pub production: Option<String>,
    pub created_at: String,
    /// Being deleted: refuses new deployments and activations.
    pub deleting: bool,
}

/// A stored secret of one project and target, sealed (see `crate::secrets`).
#[derive(Clone)]
pub struct SecretRow {
    pub slug: String,
    pub name: String,
    pub target: cdeploy_core::api::EnvTarget,
    pub sensitive: bool,
    /// The id of the key that sealed it.
    pub key_id: String,
    /// Base64 of the nonce and the ciphertext.
    pub sealed: String,
    pub created_at: String,
    pub updated_at: String,
}

impl std::fmt::Debug for SecretRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretRow")
            .field("slug", &self.slug)
            .field("name", &self.name)
            .field("target", &self.target)
            .field("sensitive", &self.sensitive)
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

/// A project's link to its repository (git push deploys).
#[derive(Clone)]
pub struct GitLinkRow {
    pub slug: String,
    pub repo: String,
    pub production_branch: String,
    /// The webhook secret, sealed (`crate::hooks::secret_aad`).
    pub key_id: String,
    pub sealed_secret: String,
    pub created_at: String,
    /// Each forge gets its own secret, derived from the sealed one
    /// (`crate::hooks::forge_secret`); links made before that use the one secret for all.
    pub per_forge_secrets: bool,
}

impl std::fmt::Debug for GitLinkRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GitLinkRow")
            .field("slug", &self.slug)
            .field("repo", &self.repo)
            .field("production_branch", &self.production_branch)
            .finish_non_exhaustive()
    }
}

/// One webhook delivery (or deploy hook call) and what became of it.
#[derive(Debug, Clone)]
pub struct DeliveryRow {
    pub id: String,
    pub slug: String,
    pub at: String,
    pub at_us: i64,
    pub forge: String,
    pub event: String,
    /// The forge's id of the delivery (`X-GitHub-Delivery`, …).
    pub delivery: Option<String>,
    /// `accepted`, `ignored` or `refused`.
    pub decision: String,
    pub reason: String,
    pub deployment: Option<String>,
    /// SHA-256 of the payload (a replay under another delivery id is the same payload).
    pub payload: Option<String>,
}

/// A deploy hook: a secret URL (only its SHA-256 is kept) that deploys a branch.
#[derive(Debug, Clone)]
pub struct DeployHookRow {
    pub id: String,
    pub slug: String,
    pub name: String,
    pub branch: String,
    pub hash: String,
    pub created_at: String,
}

/// Where a deployment's commit status goes: a forge, a repository and a commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitTarget {
    pub deployment: String,
    pub forge: String,
    /// The linked repository's path (`owner/name`, GitLab's `group/project`); rows from
    /// before 0.x may hold a GitLab project id, which its API takes as well.
    pub repo: String,
    pub sha: String,
}

/// An API token: only its SHA-256 is stored.
#[derive(Debug, Clone)]
pub struct TokenRow {
    pub id: String,
    pub hash: String,
    pub name: String,
    pub role: Role,
    /// The projects a `deploy` or `read` token acts on.
    pub projects: Vec<String>,
    pub created_at: String,
    pub expires_at: Option<String>,
    /// Microseconds since the epoch, for comparisons.
    pub expires_us: Option<i64>,
    pub last_used_at: Option<String>,
    pub last_used_us: Option<i64>,
}

impl TokenRow {
    /// A new token's row (`expires_in`: seconds from now).
    pub fn new(
        hash: &str,
        name: &str,
        role: Role,
        projects: Vec<String>,
        expires_in: Option<u64>,
    ) -> TokenRow {
        let now = chrono::Utc::now();
        let expires = expires_in
            .map(|s| now + chrono::Duration::seconds(s.min(i64::MAX as u64 / 2_000_000) as i64));
        TokenRow {
            id: format!("tok_{}", cdeploy_core::ids::random_id(16)),
            hash: hash.to_string(),
            name: name.to_string(),
            role,
            projects,
            created_at: cdeploy_core::now_rfc3339(),
            expires_at: expires.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)),
            expires_us: expires.map(|t| t.timestamp_micros()),
            last_used_at: None,
            last_used_us: None,
        }
    }

    pub fn expired(&self) -> bool {
        self.expires_us.is_some_and(|t| t <= now_us())
    }
}

/// One audit log entry.
#[derive(Debug, Clone)]
pub struct AuditRow {
    /// When it happened (for a bucket of refusals, the latest of them).
    pub at: String,
    pub at_us: i64,
    pub token_id: Option<String>,
    pub token_name: String,
    pub action: String,
    pub target: Option<String>,
    pub status: u16,
    /// The project the request acted on, when it named one.
    pub project: Option<String>,
    /// What it changed, in words (`token ci (deploy on web)`).
    pub detail: Option<String>,
    /// How many requests the entry stands for: refusals and failures of one token,
    /// action, target and status within a minute share one entry.
    pub count: i64,
    /// That shared entry's key; `None` for an entry of its own (every change).
    pub bucket: Option<String>,
}

/// Which audit entries to list, newest first.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    pub limit: u32,
    /// Entries before this `at_us` (the previous page's last `cursor`).
    pub before_us: Option<i64>,
    pub since_us: Option<i64>,
    /// A token's id or name.
    pub token: Option<String>,
    /// Part of the action (`POST /v1/tokens`, `env`).
    pub action: Option<String>,
    pub project: Option<String>,
    /// Statuses from `.0` to `.1` (`403`, or `400..=499` for `4xx`).
    pub status: Option<(u16, u16)>,
}

#[derive(Debug, Clone)]
pub struct DeploymentRow {
    pub id: String,
    pub slug: String,
    pub status: Status,
    pub source: SourceKind,
    pub git: Option<GitSource>,
    pub build: BuildConfig,
    pub env: BTreeMap<String, String>,
    pub site: SiteConfig,
    pub error: Option<String>,
    pub idempotency_key: Option<String>,
    /// The ECS task running the build (ARN), once one was started.
    pub task: Option<String>,
    pub created_at: String,
    pub updated_at: String,
    /// Built as a preview: its build does not make it production.
    pub preview: bool,
    /// The branch a preview is of (its alias is `<label>--<slug>`).
    pub branch: Option<String>,
}

/// What the control plane persists. Every call is one short transaction.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    async fn get_project(&self, slug: &str) -> DbResult<Option<ProjectRow>>;
    async fn list_projects(&self) -> DbResult<Vec<ProjectRow>>;
    /// Inserts the project if it does not exist; returns whether it was created.
    async fn create_project(&self, slug: &str, git: Option<&str>) -> DbResult<bool>;
    async fn set_project_git(&self, slug: &str, git: Option<&str>) -> DbResult<()>;
    async fn set_production(&self, slug: &str, deployment: Option<&str>) -> DbResult<()>;
    async fn delete_project(&self, slug: &str) -> DbResult<bool>;
    /// Marks a project as being deleted. False when there is no such project.
    async fn mark_deleting(&self, slug: &str) -> DbResult<bool>;
    /// Makes `id` production unless a deployment created after it already is (or the
    /// project is being deleted). Production only moves forward this way; promote and
    /// rollback use [`Store::set_production`].
    async fn advance_production(&self, slug: &str, id: &str) -> DbResult<Advance>;
    /// Deletes one deployment's row.
    async fn delete_deployment(&self, id: &str) -> DbResult<()>;
    /// Every deployment of every project, oldest first (garbage collection).
    async fn all_deployments(&self) -> DbResult<Vec<DeploymentRow>>;
    /// The Idempotency-Key request hash of a deployment.
    async fn set_request_hash(&self, id: &str, hash: &str) -> DbResult<()>;
    async fn request_hash(&self, id: &str) -> DbResult<Option<String>>;
    /// Records that blobs were just referenced (an upload's check). Returns those
    /// being deleted by garbage collection right now: they must be uploaded again.
    async fn touch_blobs(&self, hashes: &[String]) -> DbResult<Vec<String>>;
    /// Claims a blob for deletion unless it was touched at or after `cutoff_us`.
    async fn claim_blob_for_deletion(&self, hash: &str, cutoff_us: i64) -> DbResult<bool>;
    /// Forgets a claimed blob (deleted) and touches older than `cutoff_us`.
    async fn release_blob(&self, hash: &str) -> DbResult<()>;
    async fn prune_blob_touches(&self, cutoff_us: i64) -> DbResult<()>;

    async fn insert_deployment(&self, d: &DeploymentRow) -> DbResult<()>;
    /// Points a branch alias at `id`, unless it points at a preview created after it.
    async fn set_alias(&self, slug: &str, label: &str, id: &str, created_at: &str) -> DbResult<()>;
    /// The deployment a branch alias points at.
    async fn alias(&self, slug: &str, label: &str) -> DbResult<Option<String>>;
    /// Every deployment a branch alias points at (garbage collection keeps them).
    async fn aliased(&self) -> DbResult<Vec<String>>;
    async fn get_deployment(&self, id: &str) -> DbResult<Option<DeploymentRow>>;
    async fn find_by_idempotency_key(
        &self,
        slug: &str,
        key: &str,
    ) -> DbResult<Option<DeploymentRow>>;
    /// Newest first.
    async fn list_deployments(&self, slug: &str, limit: u32) -> DbResult<Vec<DeploymentRow>>;
    async fn non_terminal_deployments(&self) -> DbResult<Vec<DeploymentRow>>;
    /// Moves a deployment to `status`, unless it is already terminal. Returns whether it changed.
    async fn set_status(&self, id: &str, status: Status, error: Option<&str>) -> DbResult<bool>;
    /// Records the task that runs a deployment's build.
    async fn set_task(&self, id: &str, task: &str) -> DbResult<()>;
    /// Stores the hash of a build's one-time claim (before its task starts).
    async fn set_build_claim(&self, id: &str, claim_hash: &str) -> DbResult<()>;
    /// Spends a claim: if `claim_hash` is the running deployment's claim and it is
    /// unspent, `token_hash` becomes the build's capability. Returns whether it was.
    async fn claim_build(&self, id: &str, claim_hash: &str, token_hash: &str) -> DbResult<bool>;
    /// Whether `token_hash` is the capability of `id` and the deployment still runs.
    async fn build_token_valid(&self, id: &str, token_hash: &str) -> DbResult<bool>;
    /// Whether `claim_hash` is the build's claim and was spent already: a replay of the
    /// real claim is an alarm (a wrong claim is just refused).
    async fn claim_spent(&self, id: &str, claim_hash: &str) -> DbResult<bool>;
    /// Whether `claim_hash` is the build's claim, spent or not (a cheap check before the
    /// claim's origin is asked of ECS).
    async fn claim_matches(&self, id: &str, claim_hash: &str) -> DbResult<bool>;

    async fn token_count(&self) -> DbResult<i64>;
    async fn insert_token(&self, t: &TokenRow) -> DbResult<()>;
    async fn token_exists(&self, hash: &str) -> DbResult<bool>;
    /// The token whose SHA-256 is `hash`.
    async fn token_by_hash(&self, hash: &str) -> DbResult<Option<TokenRow>>;
    /// Every token, oldest first.
    async fn list_tokens(&self) -> DbResult<Vec<TokenRow>>;
    /// Deletes a token; false when there is none with that id.
    async fn delete_token(&self, id: &str) -> DbResult<bool>;
    /// Records that a token was just used.
    async fn token_used(&self, id: &str) -> DbResult<()>;
    async fn insert_audit(&self, a: &AuditRow) -> DbResult<()>;
    /// The newest `limit` entries, newest first.
    async fn list_audit(&self, filter: &AuditFilter) -> DbResult<Vec<AuditRow>>;
    /// Deletes entries older than `before_us`.
    async fn prune_audit(&self, before_us: i64) -> DbResult<u64>;
    async fn git_link(&self, slug: &str) -> DbResult<Option<GitLinkRow>>;
    async fn put_git_link(&self, l: &GitLinkRow) -> DbResult<()>;
    async fn delete_git_link(&self, slug: &str) -> DbResult<bool>;
    async fn all_git_links(&self) -> DbResult<Vec<GitLinkRow>>;
    async fn reseal_git_link(&self, l: &GitLinkRow, key_id: &str, sealed: &str) -> DbResult<bool>;
    /// Records a delivery, keeping a project's newest `keep`.
    async fn insert_delivery(&self, d: &DeliveryRow, keep: u32) -> DbResult<()>;
    async fn list_deliveries(&self, slug: &str, limit: u32) -> DbResult<Vec<DeliveryRow>>;
    /// The deployment an accepted delivery with this forge id made, if one was.
    async fn accepted_delivery(
        &self,
        slug: &str,
        forge: &str,
        delivery: &str,
    ) -> DbResult<Option<DeliveryRow>>;
    /// An accepted delivery of exactly this payload (its SHA-256), on any forge's
    /// route, if one was.
    async fn accepted_payload(
        &self,
        slug: &str,
        payload: &str,
        since_us: Option<i64>,
    ) -> DbResult<Option<DeliveryRow>>;
    async fn insert_deploy_hook(&self, h: &DeployHookRow) -> DbResult<()>;
    async fn list_deploy_hooks(&self, slug: &str) -> DbResult<Vec<DeployHookRow>>;
    async fn deploy_hook_by_hash(&self, hash: &str) -> DbResult<Option<DeployHookRow>>;
    async fn delete_deploy_hook(&self, slug: &str, id: &str) -> DbResult<bool>;
    async fn set_commit_target(&self, t: &CommitTarget) -> DbResult<()>;
    async fn commit_target(&self, deployment: &str) -> DbResult<Option<CommitTarget>>;
    /// Removes a branch alias; answers whether there was one.
    async fn delete_alias(&self, slug: &str, label: &str) -> DbResult<bool>;
    /// Stores a secret, replacing the value it had (its `created_at` is kept).
    async fn put_secret(&self, s: &SecretRow) -> DbResult<()>;
    /// A project's secrets, by name then target.
    async fn list_secrets(&self, slug: &str) -> DbResult<Vec<SecretRow>>;
    /// Every project's secrets (key rotation).
    async fn all_secrets(&self) -> DbResult<Vec<SecretRow>>;
    /// Replaces a secret's sealed value unless it changed since it was read.
    async fn reseal_secret(&self, s: &SecretRow, key_id: &str, sealed: &str) -> DbResult<bool>;
    /// Deletes a secret of one target, or of both; answers how many went.
    async fn delete_secret(
        &self,
        slug: &str,
        name: &str,
        target: Option<cdeploy_core::api::EnvTarget>,
    ) -> DbResult<u64>;
}

/// Opens the database a `--database` URL names: `sqlite://PATH` or `postgres://…`.
pub async fn open(url: &str) -> anyhow::Result<std::sync::Arc<dyn Store>> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(std::sync::Arc::new(PgStore::open(url).await?))
    } else {
        Ok(std::sync::Arc::new(SqliteStore::open(url).await?))
    }
}

/// The schema, one step per entry; both backends run the same statements. A database
/// records how many steps it has applied and runs only the rest.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE projects (
    slug        TEXT PRIMARY KEY,
    git         TEXT,
    production  TEXT,
    created_at  TEXT NOT NULL
);
CREATE TABLE deployments (
    id               TEXT PRIMARY KEY,
    slug             TEXT NOT NULL,
    status           TEXT NOT NULL,
    source           TEXT NOT NULL,
    git_url          TEXT,
    git_ref          TEXT,
    build            TEXT NOT NULL,
    env              TEXT NOT NULL,
    site             TEXT NOT NULL,
    error            TEXT,
    idempotency_key  TEXT,
    created_at       TEXT NOT NULL,
    updated_at       TEXT NOT NULL
);
CREATE INDEX deployments_by_slug ON deployments (slug, created_at);
CREATE INDEX deployments_by_status ON deployments (status);
CREATE UNIQUE INDEX deployments_idempotency ON deployments (slug, idempotency_key) WHERE idempotency_key IS NOT NULL;
CREATE TABLE tokens (
    hash        TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    created_at  TEXT NOT NULL
);
"#,
    // Distributed mode: the ECS task of a build, and an insertion order finer than the
    // millisecond timestamps (deployments made in the same millisecond stay in order).
    r#"
ALTER TABLE deployments ADD COLUMN task TEXT;
ALTER TABLE deployments ADD COLUMN created_us BIGINT NOT NULL DEFAULT 0;
"#,
    // The builder API: a build's one-time claim and, once claimed, its capability
    // (both stored as SHA-256 hashes; the capability is valid only while the
    // deployment runs, the claim only until it is spent).
    r#"
ALTER TABLE deployments ADD COLUMN claim_hash TEXT;
ALTER TABLE deployments ADD COLUMN build_token_hash TEXT;
"#,
    // Hostile load: a project being deleted refuses deployments and activations; an
    // Idempotency-Key remembers its request body; tokens get a scope; garbage
    // collection's record of blobs recently referenced or being deleted.
    r#"
ALTER TABLE projects ADD COLUMN deleting BIGINT NOT NULL DEFAULT 0;
ALTER TABLE deployments ADD COLUMN request_hash TEXT;
ALTER TABLE tokens ADD COLUMN scope TEXT NOT NULL DEFAULT 'admin';
CREATE TABLE blob_state (
    hash        TEXT PRIMARY KEY,
    touched_at  BIGINT NOT NULL,
    deleting    BIGINT NOT NULL DEFAULT 0
);
"#,
    // The team platform: tokens get an id (to list and revoke them by), the projects a
    // deploy/read token acts on, an expiry and their last use; `scope` is their role.
    // The audit log: who (token) did what, when, and the answer.
    r#"
ALTER TABLE tokens ADD COLUMN id TEXT;
ALTER TABLE tokens ADD COLUMN projects TEXT NOT NULL DEFAULT '';
ALTER TABLE tokens ADD COLUMN expires_at TEXT;
ALTER TABLE tokens ADD COLUMN expires_us BIGINT;
ALTER TABLE tokens ADD COLUMN last_used_at TEXT;
ALTER TABLE tokens ADD COLUMN last_used_us BIGINT;
UPDATE tokens SET id = 'tok_' || substr(hash, 1, 16) WHERE id IS NULL;
CREATE UNIQUE INDEX tokens_by_id ON tokens (id);
CREATE TABLE audit (
    at_us       BIGINT NOT NULL,
    at          TEXT NOT NULL,
    token_id    TEXT,
    token_name  TEXT NOT NULL,
    action      TEXT NOT NULL,
    target      TEXT,
    status      INTEGER NOT NULL
);
CREATE INDEX audit_by_time ON audit (at_us);
"#,
    // Previews: a deployment built without being made production, the branch it is of,
    // and each branch's alias (the newest ready preview of the branch).
    r#"
ALTER TABLE deployments ADD COLUMN preview BIGINT NOT NULL DEFAULT 0;
ALTER TABLE deployments ADD COLUMN branch TEXT;
CREATE TABLE aliases (
    slug        TEXT NOT NULL,
    label       TEXT NOT NULL,
    deployment  TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    PRIMARY KEY (slug, label)
);
"#,
    // Stored secrets: one sealed value per project, name and target.
    r#"
CREATE TABLE secrets (
    slug        TEXT NOT NULL,
    name        TEXT NOT NULL,
    target      TEXT NOT NULL,
    sensitive   BIGINT NOT NULL DEFAULT 0,
    key_id      TEXT NOT NULL,
    sealed      TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL,
    PRIMARY KEY (slug, name, target)
);
"#,
    // Git push deploys: a project's repository link (with its sealed webhook secret),
    // every delivery and its decision, deploy hooks, and where commit statuses go.
    r#"
CREATE TABLE git_links (
    slug              TEXT PRIMARY KEY,
    repo              TEXT NOT NULL,
    production_branch TEXT NOT NULL,
    key_id            TEXT NOT NULL,
    sealed_secret     TEXT NOT NULL,
    created_at        TEXT NOT NULL
);
CREATE TABLE deliveries (
    id          TEXT PRIMARY KEY,
    slug        TEXT NOT NULL,
    at          TEXT NOT NULL,
    at_us       BIGINT NOT NULL,
    forge       TEXT NOT NULL,
    event       TEXT NOT NULL,
    delivery    TEXT,
    decision    TEXT NOT NULL,
    reason      TEXT NOT NULL,
    deployment  TEXT,
    payload     TEXT
);
CREATE INDEX deliveries_by_slug ON deliveries (slug, at_us);
CREATE TABLE deploy_hooks (
    id          TEXT PRIMARY KEY,
    slug        TEXT NOT NULL,
    name        TEXT NOT NULL,
    branch      TEXT NOT NULL,
    hash        TEXT NOT NULL UNIQUE,
    created_at  TEXT NOT NULL
);
CREATE TABLE commit_targets (
    deployment  TEXT PRIMARY KEY,
    forge       TEXT NOT NULL,
    repo        TEXT NOT NULL,
    sha         TEXT NOT NULL
);
"#,
    // Replays: accepted deliveries are kept whatever the volume of others, and found by
    // their payload on any forge's route.
    r#"
CREATE INDEX deliveries_by_payload ON deliveries (slug, payload);
CREATE INDEX deliveries_by_decision ON deliveries (slug, decision, at_us);
ALTER TABLE git_links ADD COLUMN per_forge_secrets BIGINT NOT NULL DEFAULT 0;
"#,
    // An audit log no token can bury: the project an entry is of, what it changed,
    // refusals counted per token, action, target, status and minute (`bucket`), and the
    // indexes its filters use.
    r#"
ALTER TABLE audit ADD COLUMN project TEXT;
ALTER TABLE audit ADD COLUMN detail TEXT;
ALTER TABLE audit ADD COLUMN count BIGINT NOT NULL DEFAULT 1;
ALTER TABLE audit ADD COLUMN bucket TEXT;
CREATE UNIQUE INDEX audit_by_bucket ON audit (bucket);
CREATE INDEX audit_by_token ON audit (token_id, at_us);
CREATE INDEX audit_by_project ON audit (project, at_us);
"#,
];

/// What became of a request to make a deployment production.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Advance {
    /// It is production now.
    Advanced,
    /// A deployment created after it is production already: it stays a preview.
    Superseded,
    /// The project is gone or being deleted, or the deployment is gone.
    Gone,
}

const DEPLOYMENT_COLS: &str = "id, slug, status, source, git_url, git_ref, build, env, site, error, idempotency_key, task, created_at, updated_at, created_us, preview, branch";

/// `?` placeholders → `$1, $2, …` (Postgres). Statements here never hold a literal `?`.
fn numbered(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len() + 16);
    let mut n = 0;
    for c in sql.chars() {
        if c == '?' {
            n += 1;
            out.push('$');
            out.push_str(&n.to_string());
        } else {
            out.push(c);
        }
    }
    out
}

fn now_us() -> i64 {
    chrono::Utc::now().timestamp_micros()
}

pub struct SqliteStore {
    pool: SqlitePool,
}

impl SqliteStore {
    /// Touches the blobs of a JSON array of hashes (`?` 2); returns each one's
    /// `deleting` flag.
    const TOUCH_BLOBS: &'static str = "INSERT INTO blob_state (hash, touched_at, deleting) \
         SELECT value, ?, 0 FROM json_each(?) WHERE true \
         ON CONFLICT (hash) DO UPDATE SET touched_at = excluded.touched_at \
         RETURNING hash, deleting";
}

impl SqliteStore {
    /// Opens (creating if needed) and migrates the database at `url` (`sqlite://path`).
    pub async fn open(url: &str) -> anyhow::Result<Self> {
        let opts = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(8)
            .connect_with(opts)
            .await?;
        let mut tx = pool.begin().await?;
        let version: i64 = sqlx::query_scalar("PRAGMA user_version")
            .fetch_one(&mut *tx)
            .await?;
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
            sqlx::raw_sql(sql).execute(&mut *tx).await?;
            sqlx::raw_sql(&format!("PRAGMA user_version = {}", i + 1))
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(SqliteStore { pool })
    }

    fn sql(&self, s: &'static str) -> Cow<'static, str> {
        Cow::Borrowed(s)
    }

    /// [`Self::sql`] of a statement built at run time (not cached).
    fn sql_built(&self, s: &str) -> String {
        s.to_string()
    }
}

pub struct PgStore {
    pool: PgPool,
}

impl PgStore {
    /// [`SqliteStore::TOUCH_BLOBS`] in Postgres' words.
    const TOUCH_BLOBS: &'static str = "INSERT INTO blob_state (hash, touched_at, deleting) \
         SELECT value, ?::bigint, 0 FROM json_array_elements_text(?::json) \
         ON CONFLICT (hash) DO UPDATE SET touched_at = excluded.touched_at \
         RETURNING hash, deleting";
}

impl PgStore {
    /// Connects to and migrates a Postgres database. Replicas starting together take turns
    /// (an advisory lock), so each migration runs once.
    pub async fn open(url: &str) -> anyhow::Result<Self> {
        let opts = PgConnectOptions::from_str(url)?;
        let pool = PgPoolOptions::new()
            .max_connections(16)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(opts)
            .await?;
        let mut tx = pool.begin().await?;
        // An arbitrary constant: cdeploy's migration lock.
        sqlx::query("SELECT pg_advisory_xact_lock(727274001)")
            .execute(&mut *tx)
            .await?;
        sqlx::raw_sql(
            "CREATE TABLE IF NOT EXISTS cdeploy_schema (version BIGINT NOT NULL); \
             INSERT INTO cdeploy_schema (version) SELECT 0 WHERE NOT EXISTS (SELECT 1 FROM cdeploy_schema)",
        )
        .execute(&mut *tx)
        .await?;
        let version: i64 = sqlx::query_scalar("SELECT version FROM cdeploy_schema")
            .fetch_one(&mut *tx)
            .await?;
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
            sqlx::raw_sql(sql).execute(&mut *tx).await?;
            sqlx::query("UPDATE cdeploy_schema SET version = $1")
                .bind(i as i64 + 1)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(PgStore { pool })
    }

    fn sql(&self, s: &'static str) -> Cow<'static, str> {
        // Each distinct statement is renumbered once and kept for the process's life.
        static CACHE: OnceLock<std::sync::Mutex<std::collections::HashMap<usize, &'static str>>> =
            OnceLock::new();
        let cache = CACHE.get_or_init(Default::default);
        let key = s.as_ptr() as usize;
        let mut map = cache.lock().expect("not poisoned");
        let stmt = map
            .entry(key)
            .or_insert_with(|| Box::leak(numbered(s).into_boxed_str()));
        Cow::Borrowed(*stmt)
    }

    /// [`Self::sql`] of a statement built at run time (not cached).
    fn sql_built(&self, s: &str) -> String {
        numbered(s)
    }
}

/// The [`Store`] implementation, once per backend: the same statements and row mapping.
macro_rules! sql_store {
    ($store:ty, $row:ty) => {
        impl $store {
            fn project(row: &$row) -> ProjectRow {
                ProjectRow {
                    slug: row.get("slug"),
                    git: row.get("git"),
                    production: row.get("production"),
                    created_at: row.get("created_at"),
                    deleting: row.get::<i64, _>("deleting") != 0,
                }
            }

            fn token(row: &$row) -> TokenRow {
                let projects: String = row.get("projects");
                TokenRow {
                    id: row.get("id"),
                    hash: row.get("hash"),
                    name: row.get("name"),
                    // An unknown role (a newer server's) may do nothing here.
                    role: row.get::<String, _>("scope").parse().unwrap_or(Role::Metrics),
                    projects: projects.split(',').filter(|p| !p.is_empty()).map(String::from).collect(),
                    created_at: row.get("created_at"),
                    expires_at: row.get("expires_at"),
                    expires_us: row.get("expires_us"),
                    last_used_at: row.get("last_used_at"),
                    last_used_us: row.get("last_used_us"),
                }
            }

            fn secret(row: &$row) -> SecretRow {
                SecretRow {
                    slug: row.get("slug"),
                    name: row.get("name"),
                    target: row
                        .get::<String, _>("target")
                        .parse()
                        .unwrap_or(cdeploy_core::api::EnvTarget::Preview),
                    sensitive: row.get::<i64, _>("sensitive") != 0,
                    key_id: row.get("key_id"),
                    sealed: row.get("sealed"),
                    created_at: row.get("created_at"),
                    updated_at: row.get("updated_at"),
                }
            }

            fn git_link_row(row: &$row) -> GitLinkRow {
                GitLinkRow {
                    slug: row.get("slug"),
                    repo: row.get("repo"),
                    production_branch: row.get("production_branch"),
                    key_id: row.get("key_id"),
                    sealed_secret: row.get("sealed_secret"),
                    created_at: row.get("created_at"),
                    per_forge_secrets: row.get::<i64, _>("per_forge_secrets") != 0,
                }
            }

            fn delivery_row(row: &$row) -> DeliveryRow {
                DeliveryRow {
                    id: row.get("id"),
                    slug: row.get("slug"),
                    at: row.get("at"),
                    at_us: row.get("at_us"),
                    forge: row.get("forge"),
                    event: row.get("event"),
                    delivery: row.get("delivery"),
                    decision: row.get("decision"),
                    reason: row.get("reason"),
                    deployment: row.get("deployment"),
                    payload: row.get("payload"),
                }
            }

            fn deploy_hook_row(row: &$row) -> DeployHookRow {
                DeployHookRow {
                    id: row.get("id"),
                    slug: row.get("slug"),
                    name: row.get("name"),
                    branch: row.get("branch"),
                    hash: row.get("hash"),
                    created_at: row.get("created_at"),
                }
            }

            fn audit(row: &$row) -> AuditRow {
                AuditRow {
                    at: row.get("at"),
                    at_us: row.get("at_us"),
                    token_id: row.get("token_id"),
                    token_name: row.get("token_name"),
                    action: row.get("action"),
                    target: row.get("target"),
                    status: row.get::<i32, _>("status") as u16,
                    project: row.get("project"),
                    detail: row.get("detail"),
                    count: row.get("count"),
                    bucket: row.get("bucket"),
                }
            }

            fn deployment(row: &$row) -> DeploymentRow {
                let json = |col: &str| row.get::<String, _>(col);
                let git_url: Option<String> = row.get("git_url");
                DeploymentRow {
                    id: row.get("id"),
                    slug: row.get("slug"),
                    status: Status::parse(&row.get::<String, _>("status"))
                        .unwrap_or(Status::Failed),
                    source: SourceKind::parse(&row.get::<String, _>("source"))
                        .unwrap_or(SourceKind::Git),
                    git: git_url.map(|url| GitSource {
                        url,
                        git_ref: row.get("git_ref"),
                    }),
                    build: serde_json::from_str(&json("build")).unwrap_or_default(),
                    env: serde_json::from_str(&json("env")).unwrap_or_default(),
                    site: serde_json::from_str(&json("site")).unwrap_or_default(),
                    error: row.get("error"),
                    idempotency_key: row.get("idempotency_key"),
                    task: row.get("task"),
                    created_at: row.get("created_at"),
                    updated_at: row.get("updated_at"),
                    preview: row.get::<i64, _>("preview") != 0,
                    branch: row.get("branch"),
                }
            }
        }

        #[async_trait]
        impl Store for $store {
            async fn get_project(&self, slug: &str) -> DbResult<Option<ProjectRow>> {
                let row = sqlx::query(&self.sql("SELECT * FROM projects WHERE slug = ?"))
                    .bind(slug)
                    .fetch_optional(&self.pool)
                    .await?;
                Ok(row.as_ref().map(Self::project))
            }

            async fn list_projects(&self) -> DbResult<Vec<ProjectRow>> {
                let rows = sqlx::query("SELECT * FROM projects ORDER BY slug")
                    .fetch_all(&self.pool)
                    .await?;
                Ok(rows.iter().map(Self::project).collect())
            }

            async fn create_project(&self, slug: &str, git: Option<&str>) -> DbResult<bool> {
                let r = sqlx::query(&self.sql(
                    "INSERT INTO projects (slug, git, created_at) VALUES (?, ?, ?) ON CONFLICT (slug) DO NOTHING",
                ))
                .bind(slug)
                .bind(git)
                .bind(cdeploy_core::now_rfc3339())
                .execute(&self.pool)
                .await?;
                Ok(r.rows_affected() == 1)
            }

            async fn set_project_git(&self, slug: &str, git: Option<&str>) -> DbResult<()> {
                sqlx::query(&self.sql("UPDATE projects SET git = ? WHERE slug = ?"))
                    .bind(git)
                    .bind(slug)
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }

            async fn mark_deleting(&self, slug: &str) -> DbResult<bool> {
                let r = sqlx::query(&self.sql("UPDATE projects SET deleting = 1 WHERE slug = ?"))
                    .bind(slug)
                    .execute(&self.pool)
                    .await?;
                Ok(r.rows_affected() == 1)
            }

            async fn advance_production(&self, slug: &str, id: &str) -> DbResult<Advance> {
                let r = sqlx::query(&self.sql(
                    "UPDATE projects SET production = ? WHERE slug = ? AND deleting = 0 \
                     AND EXISTS (SELECT 1 FROM deployments n WHERE n.id = ? AND n.slug = projects.slug) AND ( \
                       production IS NULL \
                       OR NOT EXISTS (SELECT 1 FROM deployments p WHERE p.id = projects.production) \
                       OR (SELECT p.created_us FROM deployments p WHERE p.id = projects.production) \
                          <= (SELECT d.created_us FROM deployments d WHERE d.id = ?))",
                ))
                .bind(id)
                .bind(slug)
                .bind(id)
                .bind(id)
                .execute(&self.pool)
                .await?;
                if r.rows_affected() == 1 {
                    return Ok(Advance::Advanced);
                }
                let live: i64 = sqlx::query_scalar(&self.sql(
                    "SELECT COUNT(*) FROM projects p WHERE p.slug = ? AND p.deleting = 0 \
                     AND EXISTS (SELECT 1 FROM deployments n WHERE n.id = ? AND n.slug = p.slug)",
                ))
                .bind(slug)
                .bind(id)
                .fetch_one(&self.pool)
                .await?;
                Ok(if live == 0 { Advance::Gone } else { Advance::Superseded })
            }

            async fn delete_deployment(&self, id: &str) -> DbResult<()> {
                sqlx::query(&self.sql("DELETE FROM commit_targets WHERE deployment = ?"))
                    .bind(id)
                    .execute(&self.pool)
                    .await?;
                sqlx::query(&self.sql("DELETE FROM deployments WHERE id = ?"))
                    .bind(id)
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }

            async fn all_deployments(&self) -> DbResult<Vec<DeploymentRow>> {
                static SQL: OnceLock<String> = OnceLock::new();
                let sql = SQL.get_or_init(|| {
                    format!("SELECT {DEPLOYMENT_COLS} FROM deployments ORDER BY slug, created_us, created_at, id")
                });
                let rows = sqlx::query(&self.sql(sql)).fetch_all(&self.pool).await?;
                Ok(rows.iter().map(Self::deployment).collect())
            }

            async fn set_request_hash(&self, id: &str, hash: &str) -> DbResult<()> {
                sqlx::query(&self.sql("UPDATE deployments SET request_hash = ? WHERE id = ?"))
                    .bind(hash)
                    .bind(id)
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }

            async fn request_hash(&self, id: &str) -> DbResult<Option<String>> {
                let h: Option<Option<String>> = sqlx::query_scalar(&self.sql(
                    "SELECT request_hash FROM deployments WHERE id = ?",
                ))
                .bind(id)
                .fetch_optional(&self.pool)
                .await?;
                Ok(h.flatten())
            }

            async fn touch_blobs(&self, hashes: &[String]) -> DbResult<Vec<String>> {
                // One statement per 10,000 blobs (their hashes as one JSON array): a
                // deployment of many files is checked twice, and a round trip per blob
                // cost a 10,000-file redeploy most of its time. Duplicates go first
                // (Postgres refuses to update a row twice in one statement).
                let mut unique: Vec<&String> = hashes.iter().collect();
                unique.sort_unstable();
                unique.dedup();
                let now = now_us();
                let mut deleting = Vec::new();
                let mut tx = self.pool.begin().await?;
                for chunk in unique.chunks(10_000) {
                    let list = serde_json::to_string(chunk).expect("strings serialize");
                    // One row per blob: a touch and a claim for deletion serialize on
                    // it, so whichever comes second sees the first.
                    let rows: Vec<(String, i64)> = sqlx::query_as(&self.sql(Self::TOUCH_BLOBS))
                        .bind(now)
                        .bind(list)
                        .fetch_all(&mut *tx)
                        .await?;
                    deleting.extend(rows.into_iter().filter(|(_, d)| *d != 0).map(|(h, _)| h));
                }
                tx.commit().await?;
                Ok(deleting)
            }

            async fn claim_blob_for_deletion(&self, hash: &str, cutoff_us: i64) -> DbResult<bool> {
                let claimed: Option<String> = sqlx::query_scalar(&self.sql(
                    "INSERT INTO blob_state (hash, touched_at, deleting) VALUES (?, 0, 1) \
                     ON CONFLICT (hash) DO UPDATE SET deleting = 1 \
                     WHERE blob_state.touched_at < ? AND blob_state.deleting = 0 \
                     RETURNING hash",
                ))
                .bind(hash)
                .bind(cutoff_us)
                .fetch_optional(&self.pool)
                .await?;
                Ok(claimed.is_some())
            }

            async fn release_blob(&self, hash: &str) -> DbResult<()> {
                sqlx::query(&self.sql("DELETE FROM blob_state WHERE hash = ? AND deleting = 1"))
                    .bind(hash)
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }

            async fn prune_blob_touches(&self, cutoff_us: i64) -> DbResult<()> {
                sqlx::query(&self.sql("DELETE FROM blob_state WHERE touched_at < ? AND deleting = 0"))
                    .bind(cutoff_us)
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }

            async fn set_production(&self, slug: &str, deployment: Option<&str>) -> DbResult<()> {
                sqlx::query(&self.sql("UPDATE projects SET production = ? WHERE slug = ?"))
                    .bind(deployment)
                    .bind(slug)
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }

            async fn delete_project(&self, slug: &str) -> DbResult<bool> {
                let mut tx = self.pool.begin().await?;
                sqlx::query(&self.sql(
                    "DELETE FROM commit_targets WHERE deployment IN (SELECT id FROM deployments WHERE slug = ?)",
                ))
                .bind(slug)
                .execute(&mut *tx)
                .await?;
                sqlx::query(&self.sql("DELETE FROM deployments WHERE slug = ?"))
                    .bind(slug)
                    .execute(&mut *tx)
                    .await?;
                sqlx::query(&self.sql("DELETE FROM aliases WHERE slug = ?"))
                    .bind(slug)
                    .execute(&mut *tx)
                    .await?;
                for table in [
                    "DELETE FROM secrets WHERE slug = ?",
                    "DELETE FROM git_links WHERE slug = ?",
                    "DELETE FROM deliveries WHERE slug = ?",
                    "DELETE FROM deploy_hooks WHERE slug = ?",
                ] {
                    sqlx::query(&self.sql(table))
                        .bind(slug)
                        .execute(&mut *tx)
                        .await?;
                }
                let r = sqlx::query(&self.sql("DELETE FROM projects WHERE slug = ?"))
                    .bind(slug)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(r.rows_affected() == 1)
            }

            async fn set_alias(&self, slug: &str, label: &str, id: &str, created_at: &str) -> DbResult<()> {
                sqlx::query(&self.sql(
                    "INSERT INTO aliases (slug, label, deployment, created_at) VALUES (?, ?, ?, ?) \
                     ON CONFLICT (slug, label) DO UPDATE SET deployment = excluded.deployment, created_at = excluded.created_at \
                     WHERE aliases.created_at <= excluded.created_at",
                ))
                .bind(slug)
                .bind(label)
                .bind(id)
                .bind(created_at)
                .execute(&self.pool)
                .await?;
                Ok(())
            }

            async fn alias(&self, slug: &str, label: &str) -> DbResult<Option<String>> {
                Ok(sqlx::query_scalar(&self.sql("SELECT deployment FROM aliases WHERE slug = ? AND label = ?"))
                    .bind(slug)
                    .bind(label)
                    .fetch_optional(&self.pool)
                    .await?)
            }

            async fn aliased(&self) -> DbResult<Vec<String>> {
                Ok(sqlx::query_scalar(&self.sql("SELECT deployment FROM aliases"))
                    .fetch_all(&self.pool)
                    .await?)
            }

            async fn insert_deployment(&self, d: &DeploymentRow) -> DbResult<()> {
                sqlx::query(&self.sql(
                    "INSERT INTO deployments (id, slug, status, source, git_url, git_ref, build, env, site, error, idempotency_key, task, created_at, updated_at, created_us, preview, branch) \
                     VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                ))
                .bind(&d.id)
                .bind(&d.slug)
                .bind(d.status.as_str())
                .bind(d.source.as_str())
                .bind(d.git.as_ref().map(|g| g.url.clone()))
                .bind(d.git.as_ref().and_then(|g| g.git_ref.clone()))
                .bind(serde_json::to_string(&d.build).expect("serializes"))
                .bind(serde_json::to_string(&d.env).expect("serializes"))
                .bind(serde_json::to_string(&d.site).expect("serializes"))
                .bind(&d.error)
                .bind(&d.idempotency_key)
                .bind(&d.task)
                .bind(&d.created_at)
                .bind(&d.updated_at)
                .bind(now_us())
                .bind(i64::from(d.preview))
                .bind(&d.branch)
                .execute(&self.pool)
                .await?;
                Ok(())
            }

            async fn get_deployment(&self, id: &str) -> DbResult<Option<DeploymentRow>> {
                static SQL: OnceLock<String> = OnceLock::new();
                let sql = SQL.get_or_init(|| {
                    format!("SELECT {DEPLOYMENT_COLS} FROM deployments WHERE id = ?")
                });
                let row = sqlx::query(&self.sql(sql))
                    .bind(id)
                    .fetch_optional(&self.pool)
                    .await?;
                Ok(row.as_ref().map(Self::deployment))
            }

            async fn find_by_idempotency_key(
                &self,
                slug: &str,
                key: &str,
            ) -> DbResult<Option<DeploymentRow>> {
                static SQL: OnceLock<String> = OnceLock::new();
                let sql = SQL.get_or_init(|| {
                    format!("SELECT {DEPLOYMENT_COLS} FROM deployments WHERE slug = ? AND idempotency_key = ?")
                });
                let row = sqlx::query(&self.sql(sql))
                    .bind(slug)
                    .bind(key)
                    .fetch_optional(&self.pool)
                    .await?;
                Ok(row.as_ref().map(Self::deployment))
            }

            async fn list_deployments(&self, slug: &str, limit: u32) -> DbResult<Vec<DeploymentRow>> {
                static SQL: OnceLock<String> = OnceLock::new();
                let sql = SQL.get_or_init(|| {
                    format!("SELECT {DEPLOYMENT_COLS} FROM deployments WHERE slug = ? \
                             ORDER BY created_us DESC, created_at DESC, id DESC LIMIT ?")
                });
                let rows = sqlx::query(&self.sql(sql))
                    .bind(slug)
                    .bind(i64::from(limit))
                    .fetch_all(&self.pool)
                    .await?;
                Ok(rows.iter().map(Self::deployment).collect())
            }

            async fn non_terminal_deployments(&self) -> DbResult<Vec<DeploymentRow>> {
                static SQL: OnceLock<String> = OnceLock::new();
                let sql = SQL.get_or_init(|| {
                    format!("SELECT {DEPLOYMENT_COLS} FROM deployments \
                             WHERE status IN ('queued', 'building', 'uploading') ORDER BY created_us, created_at")
                });
                let rows = sqlx::query(&self.sql(sql)).fetch_all(&self.pool).await?;
                Ok(rows.iter().map(Self::deployment).collect())
            }

            async fn set_status(&self, id: &str, status: Status, error: Option<&str>) -> DbResult<bool> {
                let r = sqlx::query(&self.sql(
                    "UPDATE deployments SET status = ?, error = COALESCE(?, error), updated_at = ? \
                     WHERE id = ? AND status IN ('queued', 'building', 'uploading')",
                ))
                .bind(status.as_str())
                .bind(error)
                .bind(cdeploy_core::now_rfc3339())
                .bind(id)
                .execute(&self.pool)
                .await?;
                Ok(r.rows_affected() == 1)
            }

            async fn set_task(&self, id: &str, task: &str) -> DbResult<()> {
                sqlx::query(&self.sql("UPDATE deployments SET task = ? WHERE id = ?"))
                    .bind(task)
                    .bind(id)
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }

            async fn set_build_claim(&self, id: &str, claim_hash: &str) -> DbResult<()> {
                sqlx::query(&self.sql("UPDATE deployments SET claim_hash = ? WHERE id = ?"))
                    .bind(claim_hash)
                    .bind(id)
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }

            async fn claim_build(&self, id: &str, claim_hash: &str, token_hash: &str) -> DbResult<bool> {
                let r = sqlx::query(&self.sql(
                    "UPDATE deployments SET build_token_hash = ? \
                     WHERE id = ? AND claim_hash = ? AND build_token_hash IS NULL \
                     AND status IN ('queued', 'building', 'uploading')",
                ))
                .bind(token_hash)
                .bind(id)
                .bind(claim_hash)
                .execute(&self.pool)
                .await?;
                Ok(r.rows_affected() == 1)
            }

            async fn build_token_valid(&self, id: &str, token_hash: &str) -> DbResult<bool> {
                let n: i64 = sqlx::query_scalar(&self.sql(
                    "SELECT COUNT(*) FROM deployments WHERE id = ? AND build_token_hash = ? \
                     AND status IN ('queued', 'building', 'uploading')",
                ))
                .bind(id)
                .bind(token_hash)
                .fetch_one(&self.pool)
                .await?;
                Ok(n == 1)
            }

            async fn claim_spent(&self, id: &str, claim_hash: &str) -> DbResult<bool> {
                let n: i64 = sqlx::query_scalar(&self.sql(
                    "SELECT COUNT(*) FROM deployments WHERE id = ? AND claim_hash = ? \
                     AND build_token_hash IS NOT NULL",
                ))
                .bind(id)
                .bind(claim_hash)
                .fetch_one(&self.pool)
                .await?;
                Ok(n == 1)
            }

            async fn claim_matches(&self, id: &str, claim_hash: &str) -> DbResult<bool> {
                let n: i64 = sqlx::query_scalar(&self.sql(
                    "SELECT COUNT(*) FROM deployments WHERE id = ? AND claim_hash = ?",
                ))
                .bind(id)
                .bind(claim_hash)
                .fetch_one(&self.pool)
                .await?;
                Ok(n == 1)
            }

            async fn token_count(&self) -> DbResult<i64> {
                Ok(sqlx::query_scalar("SELECT COUNT(*) FROM tokens")
                    .fetch_one(&self.pool)
                    .await?)
            }

            async fn insert_token(&self, t: &TokenRow) -> DbResult<()> {
                sqlx::query(&self.sql(
                    "INSERT INTO tokens (hash, name, created_at, scope, id, projects, expires_at, expires_us) \
                     VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                ))
                .bind(&t.hash)
                .bind(&t.name)
                .bind(&t.created_at)
                .bind(t.role.as_str())
                .bind(&t.id)
                .bind(t.projects.join(","))
                .bind(&t.expires_at)
                .bind(t.expires_us)
                .execute(&self.pool)
                .await?;
                Ok(())
            }

            async fn token_by_hash(&self, hash: &str) -> DbResult<Option<TokenRow>> {
                let row = sqlx::query(&self.sql("SELECT * FROM tokens WHERE hash = ?"))
                    .bind(hash)
                    .fetch_optional(&self.pool)
                    .await?;
                Ok(row.as_ref().map(Self::token))
            }

            async fn list_tokens(&self) -> DbResult<Vec<TokenRow>> {
                let rows = sqlx::query(&self.sql("SELECT * FROM tokens ORDER BY created_at, id"))
                    .fetch_all(&self.pool)
                    .await?;
                Ok(rows.iter().map(Self::token).collect())
            }

            async fn delete_token(&self, id: &str) -> DbResult<bool> {
                let r = sqlx::query(&self.sql("DELETE FROM tokens WHERE id = ?"))
                    .bind(id)
                    .execute(&self.pool)
                    .await?;
                Ok(r.rows_affected() == 1)
            }

            async fn token_used(&self, id: &str) -> DbResult<()> {
                sqlx::query(&self.sql("UPDATE tokens SET last_used_at = ?, last_used_us = ? WHERE id = ?"))
                    .bind(cdeploy_core::now_rfc3339())
                    .bind(now_us())
                    .bind(id)
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }

            async fn insert_audit(&self, a: &AuditRow) -> DbResult<()> {
                // An entry with a bucket (a refusal, a failure) joins the one its token,
                // action, target, status and minute already have: a flood of them is a
                // row a minute, never a row a request.
                sqlx::query(&self.sql(
                    "INSERT INTO audit (at_us, at, token_id, token_name, action, target, status, project, detail, count, bucket) \
                     VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 1, ?) \
                     ON CONFLICT (bucket) DO UPDATE SET count = audit.count + 1, \
                     at_us = excluded.at_us, at = excluded.at",
                ))
                .bind(a.at_us)
                .bind(&a.at)
                .bind(&a.token_id)
                .bind(&a.token_name)
                .bind(&a.action)
                .bind(&a.target)
                .bind(a.status as i32)
                .bind(&a.project)
                .bind(&a.detail)
                .bind(&a.bucket)
                .execute(&self.pool)
                .await?;
                Ok(())
            }

            async fn put_secret(&self, s: &SecretRow) -> DbResult<()> {
                sqlx::query(&self.sql(
                    "INSERT INTO secrets (slug, name, target, sensitive, key_id, sealed, created_at, updated_at) \
                     VALUES (?, ?, ?, ?, ?, ?, ?, ?) \
                     ON CONFLICT (slug, name, target) DO UPDATE SET sensitive = excluded.sensitive, \
                     key_id = excluded.key_id, sealed = excluded.sealed, updated_at = excluded.updated_at",
                ))
                .bind(&s.slug)
                .bind(&s.name)
                .bind(s.target.as_str())
                .bind(s.sensitive as i64)
                .bind(&s.key_id)
                .bind(&s.sealed)
                .bind(&s.created_at)
                .bind(&s.updated_at)
                .execute(&self.pool)
                .await?;
                Ok(())
            }

            async fn list_secrets(&self, slug: &str) -> DbResult<Vec<SecretRow>> {
                let rows = sqlx::query(&self.sql(
                    "SELECT * FROM secrets WHERE slug = ? ORDER BY name, target",
                ))
                .bind(slug)
                .fetch_all(&self.pool)
                .await?;
                Ok(rows.iter().map(Self::secret).collect())
            }

            async fn all_secrets(&self) -> DbResult<Vec<SecretRow>> {
                let rows = sqlx::query(&self.sql("SELECT * FROM secrets"))
                    .fetch_all(&self.pool)
                    .await?;
                Ok(rows.iter().map(Self::secret).collect())
            }

            async fn reseal_secret(&self, s: &SecretRow, key_id: &str, sealed: &str) -> DbResult<bool> {
                let r = sqlx::query(&self.sql(
                    "UPDATE secrets SET key_id = ?, sealed = ? \
                     WHERE slug = ? AND name = ? AND target = ? AND sealed = ?",
                ))
                .bind(key_id)
                .bind(sealed)
                .bind(&s.slug)
                .bind(&s.name)
                .bind(s.target.as_str())
                .bind(&s.sealed)
                .execute(&self.pool)
                .await?;
                Ok(r.rows_affected() == 1)
            }

            async fn delete_secret(
                &self,
                slug: &str,
                name: &str,
                target: Option<cdeploy_core::api::EnvTarget>,
            ) -> DbResult<u64> {
                let r = match target {
                    Some(t) => sqlx::query(&self.sql(
                        "DELETE FROM secrets WHERE slug = ? AND name = ? AND target = ?",
                    ))
                    .bind(slug)
                    .bind(name)
                    .bind(t.as_str())
                    .execute(&self.pool)
                    .await?,
                    None => sqlx::query(&self.sql("DELETE FROM secrets WHERE slug = ? AND name = ?"))
                        .bind(slug)
                        .bind(name)
                        .execute(&self.pool)
                        .await?,
                };
                Ok(r.rows_affected())
            }

            async fn git_link(&self, slug: &str) -> DbResult<Option<GitLinkRow>> {
                let row = sqlx::query(&self.sql("SELECT * FROM git_links WHERE slug = ?"))
                    .bind(slug)
                    .fetch_optional(&self.pool)
                    .await?;
                Ok(row.as_ref().map(Self::git_link_row))
            }

            async fn put_git_link(&self, l: &GitLinkRow) -> DbResult<()> {
                sqlx::query(&self.sql(
                    "INSERT INTO git_links (slug, repo, production_branch, key_id, sealed_secret, created_at, per_forge_secrets) \
                     VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (slug) DO UPDATE SET repo = excluded.repo, \
                     production_branch = excluded.production_branch, key_id = excluded.key_id, \
                     sealed_secret = excluded.sealed_secret, per_forge_secrets = excluded.per_forge_secrets",
                ))
                .bind(&l.slug)
                .bind(&l.repo)
                .bind(&l.production_branch)
                .bind(&l.key_id)
                .bind(&l.sealed_secret)
                .bind(&l.created_at)
                .bind(i64::from(l.per_forge_secrets))
                .execute(&self.pool)
                .await?;
                Ok(())
            }

            async fn delete_git_link(&self, slug: &str) -> DbResult<bool> {
                let mut tx = self.pool.begin().await?;
                sqlx::query(&self.sql("DELETE FROM deploy_hooks WHERE slug = ?"))
                    .bind(slug)
                    .execute(&mut *tx)
                    .await?;
                let r = sqlx::query(&self.sql("DELETE FROM git_links WHERE slug = ?"))
                    .bind(slug)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(r.rows_affected() == 1)
            }

            async fn all_git_links(&self) -> DbResult<Vec<GitLinkRow>> {
                let rows = sqlx::query(&self.sql("SELECT * FROM git_links"))
                    .fetch_all(&self.pool)
                    .await?;
                Ok(rows.iter().map(Self::git_link_row).collect())
            }

            async fn reseal_git_link(&self, l: &GitLinkRow, key_id: &str, sealed: &str) -> DbResult<bool> {
                let r = sqlx::query(&self.sql(
                    "UPDATE git_links SET key_id = ?, sealed_secret = ? WHERE slug = ? AND sealed_secret = ?",
                ))
                .bind(key_id)
                .bind(sealed)
                .bind(&l.slug)
                .bind(&l.sealed_secret)
                .execute(&self.pool)
                .await?;
                Ok(r.rows_affected() == 1)
            }

            async fn insert_delivery(&self, d: &DeliveryRow, keep: u32) -> DbResult<()> {
                sqlx::query(&self.sql(
                    "INSERT INTO deliveries (id, slug, at, at_us, forge, event, delivery, decision, reason, deployment, payload) \
                     VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                ))
                .bind(&d.id)
                .bind(&d.slug)
                .bind(&d.at)
                .bind(d.at_us)
                .bind(&d.forge)
                .bind(&d.event)
                .bind(&d.delivery)
                .bind(&d.decision)
                .bind(&d.reason)
                .bind(&d.deployment)
                .bind(&d.payload)
                .execute(&self.pool)
                .await?;
                // Deliveries anyone can send (refused and ignored ones) never grow without
                // bound. Accepted ones, each signed by the forge and each a deployment or
                // an alias removed, are kept: they are what a replay is recognized by, so
                // no volume of other deliveries may push them out.
                sqlx::query(&self.sql(
                    "DELETE FROM deliveries WHERE slug = ? AND decision <> 'accepted' AND at_us < \
                     (SELECT at_us FROM deliveries WHERE slug = ? AND decision <> 'accepted' \
                      ORDER BY at_us DESC LIMIT 1 OFFSET ?)",
                ))
                .bind(&d.slug)
                .bind(&d.slug)
                .bind(keep as i64 - 1)
                .execute(&self.pool)
                .await?;
                Ok(())
            }

            async fn list_deliveries(&self, slug: &str, limit: u32) -> DbResult<Vec<DeliveryRow>> {
                let rows = sqlx::query(&self.sql(
                    "SELECT * FROM deliveries WHERE slug = ? ORDER BY at_us DESC LIMIT ?",
                ))
                .bind(slug)
                .bind(limit as i64)
                .fetch_all(&self.pool)
                .await?;
                Ok(rows.iter().map(Self::delivery_row).collect())
            }

            async fn accepted_delivery(&self, slug: &str, forge: &str, delivery: &str) -> DbResult<Option<DeliveryRow>> {
                let row = sqlx::query(&self.sql(
                    "SELECT * FROM deliveries WHERE slug = ? AND forge = ? AND delivery = ? AND decision = 'accepted' \
                     ORDER BY at_us LIMIT 1",
                ))
                .bind(slug)
                .bind(forge)
                .bind(delivery)
                .fetch_optional(&self.pool)
                .await?;
                Ok(row.as_ref().map(Self::delivery_row))
            }

            async fn accepted_payload(&self, slug: &str, payload: &str, since_us: Option<i64>) -> DbResult<Option<DeliveryRow>> {
                let row = sqlx::query(&self.sql(
                    "SELECT * FROM deliveries WHERE slug = ? AND payload = ? AND decision = 'accepted' \
                     AND at_us >= ? ORDER BY at_us LIMIT 1",
                ))
                .bind(slug)
                .bind(payload)
                .bind(since_us.unwrap_or(i64::MIN))
                .fetch_optional(&self.pool)
                .await?;
                Ok(row.as_ref().map(Self::delivery_row))
            }

            async fn insert_deploy_hook(&self, h: &DeployHookRow) -> DbResult<()> {
                sqlx::query(&self.sql(
                    "INSERT INTO deploy_hooks (id, slug, name, branch, hash, created_at) VALUES (?, ?, ?, ?, ?, ?)",
                ))
                .bind(&h.id)
                .bind(&h.slug)
                .bind(&h.name)
                .bind(&h.branch)
                .bind(&h.hash)
                .bind(&h.created_at)
                .execute(&self.pool)
                .await?;
                Ok(())
            }

            async fn list_deploy_hooks(&self, slug: &str) -> DbResult<Vec<DeployHookRow>> {
                let rows = sqlx::query(&self.sql(
                    "SELECT * FROM deploy_hooks WHERE slug = ? ORDER BY created_at, id",
                ))
                .bind(slug)
                .fetch_all(&self.pool)
                .await?;
                Ok(rows.iter().map(Self::deploy_hook_row).collect())
            }

            async fn deploy_hook_by_hash(&self, hash: &str) -> DbResult<Option<DeployHookRow>> {
                let row = sqlx::query(&self.sql("SELECT * FROM deploy_hooks WHERE hash = ?"))
                    .bind(hash)
                    .fetch_optional(&self.pool)
                    .await?;
                Ok(row.as_ref().map(Self::deploy_hook_row))
            }

            async fn delete_deploy_hook(&self, slug: &str, id: &str) -> DbResult<bool> {
                let r = sqlx::query(&self.sql("DELETE FROM deploy_hooks WHERE slug = ? AND id = ?"))
                    .bind(slug)
                    .bind(id)
                    .execute(&self.pool)
                    .await?;
                Ok(r.rows_affected() == 1)
            }

            async fn set_commit_target(&self, t: &CommitTarget) -> DbResult<()> {
                sqlx::query(&self.sql(
                    "INSERT INTO commit_targets (deployment, forge, repo, sha) VALUES (?, ?, ?, ?) \
                     ON CONFLICT (deployment) DO NOTHING",
                ))
                .bind(&t.deployment)
                .bind(&t.forge)
                .bind(&t.repo)
                .bind(&t.sha)
                .execute(&self.pool)
                .await?;
                Ok(())
            }

            async fn commit_target(&self, deployment: &str) -> DbResult<Option<CommitTarget>> {
                let row = sqlx::query(&self.sql("SELECT * FROM commit_targets WHERE deployment = ?"))
                    .bind(deployment)
                    .fetch_optional(&self.pool)
                    .await?;
                Ok(row.map(|r| CommitTarget {
                    deployment: r.get("deployment"),
                    forge: r.get("forge"),
                    repo: r.get("repo"),
                    sha: r.get("sha"),
                }))
            }

            async fn delete_alias(&self, slug: &str, label: &str) -> DbResult<bool> {
                let r = sqlx::query(&self.sql("DELETE FROM aliases WHERE slug = ? AND label = ?"))
                    .bind(slug)
                    .bind(label)
                    .execute(&self.pool)
                    .await?;
                Ok(r.rows_affected() == 1)
            }

            async fn prune_audit(&self, before_us: i64) -> DbResult<u64> {
                let r = sqlx::query(&self.sql("DELETE FROM audit WHERE at_us < ?"))
                    .bind(before_us)
                    .execute(&self.pool)
                    .await?;
                Ok(r.rows_affected())
            }

            async fn list_audit(&self, f: &AuditFilter) -> DbResult<Vec<AuditRow>> {
                enum Arg<'a> {
                    Int(i64),
                    Text(&'a str),
                    Owned(String),
                }
                let mut sql = String::from("SELECT * FROM audit WHERE true");
                let mut args = Vec::new();
                if let Some(before) = f.before_us {
                    sql.push_str(" AND at_us < ?");
                    args.push(Arg::Int(before));
                }
                if let Some(since) = f.since_us {
                    sql.push_str(" AND at_us >= ?");
                    args.push(Arg::Int(since));
                }
                if let Some(token) = &f.token {
                    sql.push_str(" AND (token_id = ? OR token_name = ?)");
                    args.push(Arg::Text(token));
                    args.push(Arg::Text(token));
                }
                if let Some(action) = &f.action {
                    let escaped = action
                        .to_lowercase()
                        .replace('\\', "\\\\")
                        .replace('%', "\\%")
                        .replace('_', "\\_");
                    sql.push_str(" AND LOWER(action) LIKE ? ESCAPE '\\'");
                    args.push(Arg::Owned(format!("%{escaped}%")));
                }
                if let Some(project) = &f.project {
                    sql.push_str(" AND project = ?");
                    args.push(Arg::Text(project));
                }
                if let Some((lo, hi)) = f.status {
                    sql.push_str(" AND status >= ? AND status <= ?");
                    args.push(Arg::Int(i64::from(lo)));
                    args.push(Arg::Int(i64::from(hi)));
                }
                sql.push_str(" ORDER BY at_us DESC LIMIT ?");
                args.push(Arg::Int(i64::from(f.limit)));
                let sql = self.sql_built(&sql);
                let mut query = sqlx::query(&sql);
                for arg in args {
                    query = match arg {
                        Arg::Int(v) => query.bind(v),
                        Arg::Text(v) => query.bind(v),
                        Arg::Owned(v) => query.bind(v),
                    };
                }
                let rows = query.fetch_all(&self.pool).await?;
                Ok(rows.iter().map(Self::audit).collect())
            }

            async fn token_exists(&self, hash: &str) -> DbResult<bool> {
                let n: i64 = sqlx::query_scalar(&self.sql("SELECT COUNT(*) FROM tokens WHERE hash = ?"))
                    .bind(hash)
                    .fetch_one(&self.pool)
                    .await?;
                Ok(n > 0)
            }
        }
    };
}

sql_store!(SqliteStore, sqlx::sqlite::SqliteRow);
sql_store!(PgStore, sqlx::postgres::PgRow);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_numbered_for_postgres() {
        assert_eq!(
            numbered("UPDATE t SET a = ?, b = COALESCE(?, b) WHERE id = ?"),
            "UPDATE t SET a = $1, b = COALESCE($2, b) WHERE id = $3"
        );
    }

    fn row(id: &str, slug: &str) -> DeploymentRow {
        let now = cdeploy_core::now_rfc3339();
        DeploymentRow {
            id: id.into(),
            slug: slug.into(),
            status: Status::Queued,
            source: SourceKind::Git,
            git: None,
            build: BuildConfig::default(),
            env: BTreeMap::new(),
            site: SiteConfig::default(),
            error: None,
            idempotency_key: None,
            task: None,
            created_at: now.clone(),
            updated_at: now,
            preview: false,
            branch: None,
        }
    }

    /// The behaviour both backends must share.
    async fn exercise(store: &dyn Store) {
        assert!(store.create_project("a", None).await.unwrap());
        assert!(!store.create_project("a", None).await.unwrap());
        for id in ["d1", "d2", "d3"] {
            store.insert_deployment(&row(id, "a")).await.unwrap();
        }
        // A duplicate key is the store's own error, for handlers to match on.
        assert!(matches!(
            store.insert_deployment(&row("d1", "a")).await,
            Err(StoreError::Conflict)
        ));
        let ids: Vec<String> = store
            .list_deployments("a", 10)
            .await
            .unwrap()
            .into_iter()
            .map(|d| d.id)
            .collect();
        assert_eq!(ids, ["d3", "d2", "d1"], "newest first, in insertion order");
        store.set_task("d1", "arn:task/1").await.unwrap();
        assert!(store
            .set_status("d1", Status::Failed, Some("x"))
            .await
            .unwrap());
        assert!(!store.set_status("d1", Status::Ready, None).await.unwrap());
        let d1 = store.get_deployment("d1").await.unwrap().unwrap();
        assert_eq!(
            (d1.status, d1.task.as_deref(), d1.error.as_deref()),
            (Status::Failed, Some("arn:task/1"), Some("x"))
        );
        assert_eq!(store.non_terminal_deployments().await.unwrap().len(), 2);

        // Production moves forward in creation order only, to a deployment of its own.
        store.create_project("b", None).await.unwrap();
        assert_eq!(
            store.advance_production("b", "d1").await.unwrap(),
            Advance::Gone,
            "another project's deployment"
        );
        assert_eq!(
            store.advance_production("a", "gone").await.unwrap(),
            Advance::Gone,
            "a deleted deployment"
        );
        assert_eq!(
            store.advance_production("a", "d2").await.unwrap(),
            Advance::Advanced
        );
        assert_eq!(
            store.advance_production("a", "d1").await.unwrap(),
            Advance::Superseded
        );
        assert_eq!(
            store.advance_production("a", "d3").await.unwrap(),
            Advance::Advanced
        );
        let p = store.get_project("a").await.unwrap().unwrap();
        assert_eq!(p.production.as_deref(), Some("d3"));
        assert_eq!(
            store.advance_production("nope", "d3").await.unwrap(),
            Advance::Gone
        );

        // GC's touch and claim serialize on one row per blob.
        let (h1, h2) = ("a".repeat(64), "b".repeat(64));
        assert!(store
            .touch_blobs(std::slice::from_ref(&h1))
            .await
            .unwrap()
            .is_empty());
        let now = now_us();
        // Touched after the cutoff: not claimable.
        assert!(!store
            .claim_blob_for_deletion(&h1, now - 60_000_000)
            .await
            .unwrap());
        // Never touched: claimable; a touch then reports it as being deleted.
        assert!(store.claim_blob_for_deletion(&h2, now).await.unwrap());
        assert!(
            !store.claim_blob_for_deletion(&h2, now).await.unwrap(),
            "once"
        );
        assert_eq!(
            store.touch_blobs(std::slice::from_ref(&h2)).await.unwrap(),
            vec![h2.clone()]
        );
        store.release_blob(&h2).await.unwrap();
        assert!(store
            .touch_blobs(std::slice::from_ref(&h2))
            .await
            .unwrap()
            .is_empty());
        // Touched long ago: claimable.
        assert!(store
            .claim_blob_for_deletion(&h1, now_us() + 1)
            .await
            .unwrap());
        store.release_blob(&h1).await.unwrap();
        store.prune_blob_touches(now_us() + 1).await.unwrap();

        // Many at once, duplicates included: only the one being deleted is reported.
        let many: Vec<String> = (0..25_000).map(|i| format!("{i:064x}")).collect();
        assert!(store
            .claim_blob_for_deletion(&many[20_001], now_us())
            .await
            .unwrap());
        let mut asked = many.clone();
        asked.push(many[3].clone());
        assert_eq!(
            store.touch_blobs(&asked).await.unwrap(),
            vec![many[20_001].clone()]
        );
        assert!(
            !store
                .claim_blob_for_deletion(&many[7], now_us() - 60_000_000)
                .await
                .unwrap(),
            "touched just now"
        );
        store.release_blob(&many[20_001]).await.unwrap();
        store.prune_blob_touches(now_us() + 1).await.unwrap();

        // A branch alias moves only forward.
        store
            .set_alias("a", "feat", "d2", "2026-01-02")
            .await
            .unwrap();
        store
            .set_alias("a", "feat", "d1", "2026-01-01")
            .await
            .unwrap();
        assert_eq!(
            store.alias("a", "feat").await.unwrap().as_deref(),
            Some("d2")
        );
        store
            .set_alias("a", "feat", "d3", "2026-01-03")
            .await
            .unwrap();
        assert_eq!(
            store.alias("a", "feat").await.unwrap().as_deref(),
            Some("d3")
        );
        assert_eq!(store.alias("a", "other").await.unwrap(), None);
        assert_eq!(store.aliased().await.unwrap(), ["d3"]);

        // Tokens: a role, projects, an expiry, their last use; deleted by id.
        let t = TokenRow::new(
            "th",
            "ci",
            Role::Deploy,
            vec!["a".into(), "b".into()],
            Some(60),
        );
        store.insert_token(&t).await.unwrap();
        let got = store.token_by_hash("th").await.unwrap().unwrap();
        assert_eq!((got.id.as_str(), got.role), (t.id.as_str(), Role::Deploy));
        assert_eq!(got.projects, ["a", "b"]);
        assert!(!got.expired() && got.expires_at.is_some() && got.last_used_at.is_none());
        store.token_used(&t.id).await.unwrap();
        assert!(store
            .token_by_hash("th")
            .await
            .unwrap()
            .unwrap()
            .last_used_us
            .is_some());
        assert!(store.token_by_hash("none").await.unwrap().is_none());
        let old = TokenRow {
            expires_us: Some(now_us() - 1),
            ..TokenRow::new("tx", "old", Role::Admin, vec![], None)
        };
        assert!(old.expired());
        assert_eq!(store.list_tokens().await.unwrap().len(), 1);
        assert!(store.delete_token(&t.id).await.unwrap());
        assert!(!store.delete_token(&t.id).await.unwrap());
        // The audit log, newest first.
        let entry = |i: i64, action: &str, status: u16, bucket: Option<&str>| AuditRow {
            at: cdeploy_core::now_rfc3339(),
            at_us: now_us() + i,
            token_id: Some("tok_x".into()),
            token_name: "ci".into(),
            action: action.to_string(),
            target: Some("a".into()),
            status,
            project: Some("a".into()),
            detail: None,
            count: 1,
            bucket: bucket.map(str::to_string),
        };
        for (i, action) in ["POST /a", "DELETE /b"].iter().enumerate() {
            store
                .insert_audit(&entry(i as i64, action, 403, None))
                .await
                .unwrap();
        }
        let all = |limit| AuditFilter {
            limit,
            ..Default::default()
        };
        let audit = store.list_audit(&all(10)).await.unwrap();
        assert_eq!(
            audit.iter().map(|a| a.action.as_str()).collect::<Vec<_>>(),
            ["DELETE /b", "POST /a"]
        );
        assert_eq!(audit[0].status, 403);
        assert_eq!(store.list_audit(&all(1)).await.unwrap().len(), 1);
        // Pages: before the last entry of the first.
        let next = AuditFilter {
            before_us: Some(audit[0].at_us),
            ..all(10)
        };
        assert_eq!(store.list_audit(&next).await.unwrap()[0].action, "POST /a");
        // Entries of one bucket are one row with a count.
        for i in 0..50 {
            store
                .insert_audit(&entry(
                    10 + i,
                    "GET /v1/x_y%",
                    403,
                    Some("tok_x|GET|a|403|1"),
                ))
                .await
                .unwrap();
        }
        let filtered = AuditFilter {
            action: Some("x_Y%".into()),
            token: Some("ci".into()),
            project: Some("a".into()),
            status: Some((400, 499)),
            since_us: Some(audit[1].at_us),
            ..all(10)
        };
        let found = store.list_audit(&filtered).await.unwrap();
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].count, 50);
        let none = AuditFilter {
            action: Some("x%y".into()),
            ..all(10)
        };
        assert!(store.list_audit(&none).await.unwrap().is_empty());
        let none = AuditFilter {
            status: Some((200, 299)),
            ..all(10)
        };
        assert!(store.list_audit(&none).await.unwrap().is_empty());
        assert_eq!(store.prune_audit(audit[1].at_us + 1).await.unwrap(), 1);
        assert_eq!(store.list_audit(&all(10)).await.unwrap().len(), 2);

        // A project being deleted refuses to become production.
        assert!(store.mark_deleting("a").await.unwrap());
        assert!(store.get_project("a").await.unwrap().unwrap().deleting);
        assert_eq!(
            store.advance_production("a", "d3").await.unwrap(),
            Advance::Gone
        );
        assert!(store.delete_project("a").await.unwrap());
        assert!(store.get_deployment("d2").await.unwrap().is_none());
    }

    #[tokio::test]
    async fn sqlite_store() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("db.sqlite").display());
        let store = SqliteStore::open(&url).await.unwrap();
        exercise(&store).await;
        drop(store);
        // Reopening runs no migration twice.
        SqliteStore::open(&url).await.unwrap();
    }

    #[tokio::test]
    async fn postgres_store() {
        // A cluster of its own (initdb + pg_ctl, installed by ./install.sh --dev).
        let pg = tokio::task::spawn_blocking(cdeploy_tests::services::Postgres::start)
            .await
            .unwrap();
        let url = pg.url();
        let (a, b) = tokio::join!(PgStore::open(&url), PgStore::open(&url));
        let (store, _other) = (a.unwrap(), b.unwrap());
        exercise(&store).await;
        let version: i64 = sqlx::query_scalar("SELECT version FROM cdeploy_schema")
            .fetch_one(&store.pool)
            .await
            .unwrap();
        assert_eq!(
            version,
            MIGRATIONS.len() as i64,
            "migrated once, to the end"
        );
        drop(store);
        tokio::task::spawn_blocking(move || drop(pg)).await.unwrap();
    }
}
