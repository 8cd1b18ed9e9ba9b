//! Metadata: projects, deployments, tokens and everything else only the control plane
//! reads, behind the [`Store`] trait.
//!
//! One implementation, [`SqlStore`], serves both backends through sqlx's `Any` driver:
//! SQLite (the embedded default, a file in the data dir) and Postgres (`postgres://…`,
//! shared by server replicas). Every statement is written once, with `$N` placeholders
//! (which SQLite binds by number too); the schema is `server/migrations/*.sql`, run by
//! sqlx's migrator. A row that does not read (a column missing, an unknown status, JSON
//! that does not parse) is a [`StoreError`], never a panic or a default.
//!
//! # Layout
//! * [`error`] — [`StoreError`], what every call can fail with, in callers' terms.
//! * `backend` — which database a store talks to (SQLite or Postgres).
//! * `columns` — reading a row's columns, a broken value an error naming table and column.
//! * `open` — connecting to SQLite or Postgres ([`open`]) and the [`SqlStore`] itself.
//! * `migrate` — the migrations, and the bridge from the schema markers of servers that
//!   kept their schema in code (`PRAGMA user_version`, the `cdeploy_schema` table).
//! * `store` — `impl Store for SqlStore`: each call handed to the module of its concern.
//! * [`projects`] — projects, the production pointer and a project's deletion.
//! * [`deployments`] — deployments and their branch aliases.
//! * `builds` — a build's task, one-time claim and capability.
//! * `blobs` — garbage collection's record of blobs touched or being deleted.
//! * [`tokens`] — API tokens (their SHA-256).
//! * [`audit`] — the audit log: entries, buckets of refusals, filters.
//! * [`git`] — repository links, webhook deliveries, deploy hooks, commit status targets.
//! * [`secrets`] — stored secrets, sealed.
//! * [`domains`] — custom domains, their certificates' state and lease, the attempts.
//! * [`notify`] — notification endpoints, the outbox of deploy events, each attempt.
//! * [`oidc`] — trusted publishing: trusts in CI issuers, identity tokens spent.
//! * [`sessions`] — dashboard sessions (their cookies' SHA-256) and sign-in links.

pub mod audit;
mod backend;
mod blobs;
mod builds;
mod columns;
pub mod deployments;
pub mod domains;
pub mod error;
pub mod git;
mod migrate;
pub mod notify;
pub mod oidc;
mod open;
pub mod projects;
pub mod secrets;
pub mod sessions;
mod store;
pub mod tokens;

#[cfg(test)]
mod tests;

use async_trait::async_trait;
use cdeploy_core::event::Status;

pub use audit::{AuditFilter, AuditRow};
pub use deployments::DeploymentRow;
pub use domains::{AttemptRow, DomainRow};
pub use error::{DbResult, StoreError};
pub use git::{CommitTarget, DeliveryRow, DeployHookRow, GitLinkRow, PrSlot};
pub use notify::{NotifyAttemptRow, NotifyHookRow, OutboxRow};
pub use oidc::TrustRow;
pub use open::{open, SqlStore};
pub use projects::{Advance, ProjectRow};
pub use secrets::SecretRow;
pub use sessions::SessionRow;
pub use tokens::TokenRow;

/// What the control plane persists. Every call is one short transaction.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Adds a custom domain unless its name is taken; returns the row stored under the
    /// name (another project's when taken) and whether it was added.
    async fn insert_domain(&self, d: &DomainRow) -> DbResult<(DomainRow, bool)>;
    /// Changes what a domain serves.
    async fn update_domain(&self, d: &DomainRow) -> DbResult<()>;
    async fn get_domain(&self, name: &str) -> DbResult<Option<DomainRow>>;
    /// A project's domains, or every domain.
    async fn list_domains(&self, slug: Option<&str>) -> DbResult<Vec<DomainRow>>;
    /// Deletes a domain and its attempts.
    async fn delete_domain(&self, name: &str) -> DbResult<bool>;
    /// Takes a due domain's certificate lease (one server orders at a time).
    async fn take_domain_lease(
        &self,
        name: &str,
        owner: &str,
        now_us: i64,
        until_us: i64,
    ) -> DbResult<bool>;
    /// Records an attempt's outcome and gives the lease back.
    async fn finish_domain_attempt(
        &self,
        name: &str,
        owner: &str,
        outcome: &AttemptOutcome,
    ) -> DbResult<()>;
    /// Makes a domain due at once.
    async fn retry_domain_now(&self, name: &str) -> DbResult<()>;
    /// Keeps an attempt's report (and at most `keep` per domain).
    async fn insert_domain_attempt(&self, a: &AttemptRow, keep: u32) -> DbResult<()>;
    /// A domain's newest attempts first.
    async fn domain_attempts(&self, name: &str, limit: u32) -> DbResult<Vec<AttemptRow>>;
    async fn get_project(&self, slug: &str) -> DbResult<Option<ProjectRow>>;
    async fn list_projects(&self) -> DbResult<Vec<ProjectRow>>;
    /// Inserts the project if it does not exist; returns whether it was created.
    async fn create_project(&self, slug: &str, git: Option<&str>) -> DbResult<bool>;
    async fn set_project_git(&self, slug: &str, git: Option<&str>) -> DbResult<()>;
    /// Makes `deployment` production by hand (a promote or a rollback), putting the
    /// event it makes (`(event, message key)`) in the outbox of the project's endpoints
    /// in the same transaction (status events are put there by [`Store::set_status`]
    /// and `created` by [`Store::insert_deployment`], likewise).
    async fn promote(
        &self,
        slug: &str,
        deployment: &str,
        event: Option<(&str, &str)>,
    ) -> DbResult<()>;
    async fn delete_project(&self, slug: &str) -> DbResult<bool>;
    /// Marks a project as being deleted. False when there is no such project.
    async fn mark_deleting(&self, slug: &str) -> DbResult<bool>;
    /// Makes `id` production unless a deployment created after it already is (or the
    /// project is being deleted). Production only moves forward this way; promote and
    /// rollback use [`Store::promote`].
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
    /// Records what a deployment's build read (digest, parts, commit).
    async fn set_inputs(&self, id: &str, inputs: &cdeploy_core::api::BuildInputs) -> DbResult<()>;
    /// A deployment's recorded inputs, if any.
    async fn inputs(&self, id: &str) -> DbResult<Option<cdeploy_core::api::BuildInputs>>;
    /// Ready deployments of a project's target with this digest, newest first (at most
    /// 5), without those whose output names itself: `(id, known not to name itself)`.
    async fn reusable(
        &self,
        slug: &str,
        preview: bool,
        digest: &str,
        except: &str,
    ) -> DbResult<Vec<(String, bool)>>;
    async fn set_names_itself(&self, id: &str, names: bool) -> DbResult<()>;
    /// Whether an earlier deployment of the project shares `id`'s cache scope.
    async fn earlier_in_scope(&self, slug: &str, id: &str) -> DbResult<bool>;
    /// Whether an earlier deployment of the target with this digest is still building.
    async fn building_same(
        &self,
        slug: &str,
        preview: bool,
        digest: &str,
        id: &str,
    ) -> DbResult<bool>;
    async fn set_reused_from(&self, id: &str, from: &str) -> DbResult<()>;
    /// The newest deployment of a project's target created before `id` with inputs.
    async fn inputs_before(&self, slug: &str, preview: bool, id: &str) -> DbResult<Option<String>>;
    /// Marks the delivery that made deployment `id` as `skipped`, for `reason`.
    async fn delivery_skipped(&self, id: &str, reason: &str) -> DbResult<()>;
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
    async fn token_by_id(&self, id: &str) -> DbResult<Option<TokenRow>>;
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
    /// Whether a report of a deployment created at `deployment_at` creates the
    /// project's comment on a pull request, edits it, or leaves it.
    async fn pr_slot(
        &self,
        slug: &str,
        t: &CommitTarget,
        pr: i64,
        deployment_at: &str,
    ) -> DbResult<PrSlot>;
    /// Records the comment's id once created; `None` forgets it.
    async fn set_pr_comment(
        &self,
        slug: &str,
        t: &CommitTarget,
        pr: i64,
        comment_id: Option<&str>,
    ) -> DbResult<()>;
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
    async fn insert_notify_hook(&self, h: &NotifyHookRow) -> DbResult<()>;
    /// A project's notification endpoints, or every project's.
    async fn list_notify_hooks(&self, slug: Option<&str>) -> DbResult<Vec<NotifyHookRow>>;
    async fn get_notify_hook(&self, id: &str) -> DbResult<Option<NotifyHookRow>>;
    /// Deletes an endpoint with its outbox and attempts; false when the project has
    /// none with that id.
    async fn delete_notify_hook(&self, slug: &str, id: &str) -> DbResult<bool>;
    async fn reseal_notify_hook(
        &self,
        h: &NotifyHookRow,
        key_id: &str,
        sealed: &str,
    ) -> DbResult<bool>;
    /// Messages due at `now_us` that no sender holds.
    async fn due_notifications(&self, now_us: i64, limit: u32) -> DbResult<Vec<OutboxRow>>;
    /// When the next pending message is due.
    async fn next_notification_due(&self) -> DbResult<Option<i64>>;
    /// Takes a due message, as it was read, for `owner` until `until_us`.
    async fn claim_notification(
        &self,
        m: &OutboxRow,
        owner: &str,
        now_us: i64,
        until_us: i64,
    ) -> DbResult<bool>;
    /// Records an attempt and its outcome (keeping an endpoint's newest `keep`); false
    /// when `owner` no longer held the message (nothing recorded).
    async fn finish_notification(
        &self,
        a: &NotifyAttemptRow,
        owner: &str,
        keep: u32,
    ) -> DbResult<bool>;
    async fn insert_session(&self, s: &SessionRow) -> DbResult<()>;
    async fn session_by_hash(&self, hash: &str) -> DbResult<Option<SessionRow>>;
    /// Records a session's use (at most once a minute: callers check).
    async fn session_seen(&self, id: &str, now_us: i64) -> DbResult<()>;
    async fn delete_session(&self, id: &str) -> DbResult<bool>;
    /// Forgets ended sessions and links (past their end, or last seen before
    /// `idle_before_us`); the rest, newest first.
    async fn list_sessions(&self, now_us: i64, idle_before_us: i64) -> DbResult<Vec<SessionRow>>;
    async fn insert_session_link(
        &self,
        hash: &str,
        token_id: &str,
        expires_us: i64,
    ) -> DbResult<()>;
    /// Uses a sign-in link once: the token id it was made for, while it is valid.
    async fn take_session_link(&self, hash: &str, now_us: i64) -> DbResult<Option<String>>;
    async fn insert_trust(&self, t: &TrustRow) -> DbResult<()>;
    async fn list_trusts(&self, slug: &str) -> DbResult<Vec<TrustRow>>;
    async fn delete_trust(&self, slug: &str, id: &str) -> DbResult<bool>;
    /// Spends an identity token (kept until `expires_us`); false when it was spent.
    async fn spend_identity_token(
        &self,
        issuer: &str,
        jti: &str,
        expires_us: i64,
        now_us: i64,
    ) -> DbResult<bool>;
    /// Deletes tokens whose name starts with `prefix` that expired before `before_us`.
    async fn prune_expired_tokens(&self, prefix: &str, before_us: i64) -> DbResult<u64>;
    /// An endpoint's newest attempts first.
    async fn notification_attempts(
        &self,
        hook: &str,
        limit: u32,
    ) -> DbResult<Vec<NotifyAttemptRow>>;
}

/// Now, in microseconds since the epoch: how the store orders and compares times.
fn now_us() -> i64 {
    chrono::Utc::now().timestamp_micros()
}

/// What an attempt at a domain's certificate left behind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptOutcome {
    pub state: String,
    pub failures: i64,
    pub next_attempt_us: i64,
    /// A new certificate's (not before, not after), unix seconds.
    pub cert: Option<(i64, i64)>,
}
