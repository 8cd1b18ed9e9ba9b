//! `impl Store for SqlStore`: each call handed to the module of its concern, so this
//! file reads as the store's table of contents.

use async_trait::async_trait;
use cdeploy_core::event::Status;

use super::{
    audit, blobs, builds, deployments, domains, git, notify, oidc, projects, secrets, sessions,
    tokens, Advance, AttemptOutcome, AttemptRow, AuditFilter, AuditRow, CommitTarget, DbResult,
    DeliveryRow, DeployHookRow, DeploymentRow, DomainRow, GitLinkRow, NotifyAttemptRow,
    NotifyHookRow, OutboxRow, PrSlot, ProjectRow, SecretRow, SessionRow, SqlStore, Store, TokenRow,
    TrustRow,
};

#[async_trait]
impl Store for SqlStore {
    async fn insert_domain(&self, d: &DomainRow) -> DbResult<(DomainRow, bool)> {
        domains::insert(&self.pool, d).await
    }

    async fn update_domain(&self, d: &DomainRow) -> DbResult<()> {
        domains::update(&self.pool, d).await
    }

    async fn get_domain(&self, name: &str) -> DbResult<Option<DomainRow>> {
        domains::get(&self.pool, name).await
    }

    async fn list_domains(&self, slug: Option<&str>) -> DbResult<Vec<DomainRow>> {
        domains::list(&self.pool, slug).await
    }

    async fn delete_domain(&self, name: &str) -> DbResult<bool> {
        domains::delete(&self.pool, name).await
    }

    async fn take_domain_lease(
        &self,
        name: &str,
        owner: &str,
        now_us: i64,
        until_us: i64,
    ) -> DbResult<bool> {
        domains::take_lease(&self.pool, name, owner, now_us, until_us).await
    }

    async fn finish_domain_attempt(
        &self,
        name: &str,
        owner: &str,
        outcome: &AttemptOutcome,
    ) -> DbResult<()> {
        domains::finish_attempt(&self.pool, name, owner, outcome).await
    }

    async fn retry_domain_now(&self, name: &str) -> DbResult<()> {
        domains::retry_now(&self.pool, name).await
    }

    async fn insert_domain_attempt(&self, a: &AttemptRow, keep: u32) -> DbResult<()> {
        domains::insert_attempt(&self.pool, a, keep).await
    }

    async fn domain_attempts(&self, name: &str, limit: u32) -> DbResult<Vec<AttemptRow>> {
        domains::attempts(&self.pool, name, limit).await
    }

    async fn get_project(&self, slug: &str) -> DbResult<Option<ProjectRow>> {
        projects::get(&self.pool, slug).await
    }

    async fn list_projects(&self) -> DbResult<Vec<ProjectRow>> {
        projects::list(&self.pool).await
    }

    async fn create_project(&self, slug: &str, git: Option<&str>) -> DbResult<bool> {
        projects::create(&self.pool, slug, git).await
    }

    async fn set_project_git(&self, slug: &str, git: Option<&str>) -> DbResult<()> {
        projects::set_git(&self.pool, slug, git).await
    }

    async fn promote(
        &self,
        slug: &str,
        deployment: &str,
        event: Option<(&str, &str)>,
    ) -> DbResult<()> {
        projects::promote(&self.pool, slug, deployment, event).await
    }

    async fn delete_project(&self, slug: &str) -> DbResult<bool> {
        projects::delete(&self.pool, slug).await
    }

    async fn mark_deleting(&self, slug: &str) -> DbResult<bool> {
        projects::mark_deleting(&self.pool, slug).await
    }

    async fn advance_production(&self, slug: &str, id: &str) -> DbResult<Advance> {
        projects::advance_production(&self.pool, slug, id).await
    }

    async fn delete_deployment(&self, id: &str) -> DbResult<()> {
        deployments::delete(&self.pool, id).await
    }

    async fn all_deployments(&self) -> DbResult<Vec<DeploymentRow>> {
        deployments::all(&self.pool).await
    }

    async fn set_request_hash(&self, id: &str, hash: &str) -> DbResult<()> {
        deployments::set_request_hash(&self.pool, id, hash).await
    }

    async fn request_hash(&self, id: &str) -> DbResult<Option<String>> {
        deployments::request_hash(&self.pool, id).await
    }

    async fn touch_blobs(&self, hashes: &[String]) -> DbResult<Vec<String>> {
        blobs::touch(&self.pool, self.backend, hashes).await
    }

    async fn claim_blob_for_deletion(&self, hash: &str, cutoff_us: i64) -> DbResult<bool> {
        blobs::claim_for_deletion(&self.pool, hash, cutoff_us).await
    }

    async fn release_blob(&self, hash: &str) -> DbResult<()> {
        blobs::release(&self.pool, hash).await
    }

    async fn prune_blob_touches(&self, cutoff_us: i64) -> DbResult<()> {
        blobs::prune_touches(&self.pool, cutoff_us).await
    }

    async fn insert_deployment(&self, d: &DeploymentRow) -> DbResult<()> {
        deployments::insert(&self.pool, d).await
    }

    async fn set_alias(&self, slug: &str, label: &str, id: &str, created_at: &str) -> DbResult<()> {
        deployments::set_alias(&self.pool, slug, label, id, created_at).await
    }

    async fn alias(&self, slug: &str, label: &str) -> DbResult<Option<String>> {
        deployments::alias(&self.pool, slug, label).await
    }

    async fn aliased(&self) -> DbResult<Vec<String>> {
        deployments::aliased(&self.pool).await
    }

    async fn get_deployment(&self, id: &str) -> DbResult<Option<DeploymentRow>> {
        deployments::get(&self.pool, id).await
    }

    async fn find_by_idempotency_key(
        &self,
        slug: &str,
        key: &str,
    ) -> DbResult<Option<DeploymentRow>> {
        deployments::by_idempotency_key(&self.pool, slug, key).await
    }

    async fn list_deployments(&self, slug: &str, limit: u32) -> DbResult<Vec<DeploymentRow>> {
        deployments::list(&self.pool, slug, limit).await
    }

    async fn non_terminal_deployments(&self) -> DbResult<Vec<DeploymentRow>> {
        deployments::non_terminal(&self.pool).await
    }

    async fn set_inputs(&self, id: &str, inputs: &cdeploy_core::api::BuildInputs) -> DbResult<()> {
        deployments::set_inputs(&self.pool, id, inputs).await
    }

    async fn inputs(&self, id: &str) -> DbResult<Option<cdeploy_core::api::BuildInputs>> {
        deployments::inputs(&self.pool, id).await
    }

    async fn reusable(
        &self,
        slug: &str,
        preview: bool,
        digest: &str,
        except: &str,
    ) -> DbResult<Vec<(String, bool)>> {
        deployments::reusable(&self.pool, slug, preview, digest, except).await
    }

    async fn set_names_itself(&self, id: &str, names: bool) -> DbResult<()> {
        deployments::set_names_itself(&self.pool, id, names).await
    }

    async fn earlier_in_scope(&self, slug: &str, id: &str) -> DbResult<bool> {
        deployments::earlier_in_scope(&self.pool, slug, id).await
    }

    async fn building_same(
        &self,
        slug: &str,
        preview: bool,
        digest: &str,
        id: &str,
    ) -> DbResult<bool> {
        deployments::building_same(&self.pool, slug, preview, digest, id).await
    }

    async fn set_reused_from(&self, id: &str, from: &str) -> DbResult<()> {
        deployments::set_reused_from(&self.pool, id, from).await
    }

    async fn inputs_before(&self, slug: &str, preview: bool, id: &str) -> DbResult<Option<String>> {
        deployments::inputs_before(&self.pool, slug, preview, id).await
    }

    async fn delivery_skipped(&self, id: &str, reason: &str) -> DbResult<()> {
        git::delivery_skipped(&self.pool, id, reason).await
    }

    async fn set_status(&self, id: &str, status: Status, error: Option<&str>) -> DbResult<bool> {
        deployments::set_status(&self.pool, id, status, error).await
    }

    async fn set_task(&self, id: &str, task: &str) -> DbResult<()> {
        builds::set_task(&self.pool, id, task).await
    }

    async fn set_build_claim(&self, id: &str, claim_hash: &str) -> DbResult<()> {
        builds::set_claim(&self.pool, id, claim_hash).await
    }

    async fn claim_build(&self, id: &str, claim_hash: &str, token_hash: &str) -> DbResult<bool> {
        builds::claim(&self.pool, id, claim_hash, token_hash).await
    }

    async fn build_token_valid(&self, id: &str, token_hash: &str) -> DbResult<bool> {
        builds::token_valid(&self.pool, id, token_hash).await
    }

    async fn claim_spent(&self, id: &str, claim_hash: &str) -> DbResult<bool> {
        builds::claim_spent(&self.pool, id, claim_hash).await
    }

    async fn claim_matches(&self, id: &str, claim_hash: &str) -> DbResult<bool> {
        builds::claim_matches(&self.pool, id, claim_hash).await
    }

    async fn token_count(&self) -> DbResult<i64> {
        tokens::count(&self.pool).await
    }

    async fn insert_token(&self, t: &TokenRow) -> DbResult<()> {
        tokens::insert(&self.pool, t).await
    }

    async fn token_exists(&self, hash: &str) -> DbResult<bool> {
        tokens::exists(&self.pool, hash).await
    }

    async fn token_by_hash(&self, hash: &str) -> DbResult<Option<TokenRow>> {
        tokens::by_hash(&self.pool, hash).await
    }

    async fn token_by_id(&self, id: &str) -> DbResult<Option<TokenRow>> {
        tokens::by_id(&self.pool, id).await
    }

    async fn list_tokens(&self) -> DbResult<Vec<TokenRow>> {
        tokens::list(&self.pool).await
    }

    /// A revoked token's dashboard sessions and sign-in links end with it.
    async fn delete_token(&self, id: &str) -> DbResult<bool> {
        let deleted = tokens::delete(&self.pool, id).await?;
        sessions::delete_for_token(&self.pool, id).await?;
        Ok(deleted)
    }

    async fn token_used(&self, id: &str) -> DbResult<()> {
        tokens::used(&self.pool, id).await
    }

    async fn insert_audit(&self, a: &AuditRow) -> DbResult<()> {
        audit::insert(&self.pool, a).await
    }

    async fn list_audit(&self, filter: &AuditFilter) -> DbResult<Vec<AuditRow>> {
        audit::list(&self.pool, filter).await
    }

    async fn prune_audit(&self, before_us: i64) -> DbResult<u64> {
        audit::prune(&self.pool, before_us).await
    }

    async fn git_link(&self, slug: &str) -> DbResult<Option<GitLinkRow>> {
        git::link(&self.pool, slug).await
    }

    async fn put_git_link(&self, l: &GitLinkRow) -> DbResult<()> {
        git::put_link(&self.pool, l).await
    }

    async fn delete_git_link(&self, slug: &str) -> DbResult<bool> {
        git::delete_link(&self.pool, slug).await
    }

    async fn all_git_links(&self) -> DbResult<Vec<GitLinkRow>> {
        git::all_links(&self.pool).await
    }

    async fn reseal_git_link(&self, l: &GitLinkRow, key_id: &str, sealed: &str) -> DbResult<bool> {
        git::reseal_link(&self.pool, l, key_id, sealed).await
    }

    async fn insert_delivery(&self, d: &DeliveryRow, keep: u32) -> DbResult<()> {
        git::insert_delivery(&self.pool, d, keep).await
    }

    async fn list_deliveries(&self, slug: &str, limit: u32) -> DbResult<Vec<DeliveryRow>> {
        git::list_deliveries(&self.pool, slug, limit).await
    }

    async fn accepted_delivery(
        &self,
        slug: &str,
        forge: &str,
        delivery: &str,
    ) -> DbResult<Option<DeliveryRow>> {
        git::accepted_delivery(&self.pool, slug, forge, delivery).await
    }

    async fn accepted_payload(
        &self,
        slug: &str,
        payload: &str,
        since_us: Option<i64>,
    ) -> DbResult<Option<DeliveryRow>> {
        git::accepted_payload(&self.pool, slug, payload, since_us).await
    }

    async fn insert_deploy_hook(&self, h: &DeployHookRow) -> DbResult<()> {
        git::insert_deploy_hook(&self.pool, h).await
    }

    async fn list_deploy_hooks(&self, slug: &str) -> DbResult<Vec<DeployHookRow>> {
        git::list_deploy_hooks(&self.pool, slug).await
    }

    async fn deploy_hook_by_hash(&self, hash: &str) -> DbResult<Option<DeployHookRow>> {
        git::deploy_hook_by_hash(&self.pool, hash).await
    }

    async fn delete_deploy_hook(&self, slug: &str, id: &str) -> DbResult<bool> {
        git::delete_deploy_hook(&self.pool, slug, id).await
    }

    async fn set_commit_target(&self, t: &CommitTarget) -> DbResult<()> {
        git::set_commit_target(&self.pool, t).await
    }

    async fn commit_target(&self, deployment: &str) -> DbResult<Option<CommitTarget>> {
        git::commit_target(&self.pool, deployment).await
    }

    async fn delete_alias(&self, slug: &str, label: &str) -> DbResult<bool> {
        deployments::delete_alias(&self.pool, slug, label).await
    }

    async fn put_secret(&self, s: &SecretRow) -> DbResult<()> {
        secrets::put(&self.pool, s).await
    }

    async fn list_secrets(&self, slug: &str) -> DbResult<Vec<SecretRow>> {
        secrets::list(&self.pool, slug).await
    }

    async fn all_secrets(&self) -> DbResult<Vec<SecretRow>> {
        secrets::all(&self.pool).await
    }

    async fn reseal_secret(&self, s: &SecretRow, key_id: &str, sealed: &str) -> DbResult<bool> {
        secrets::reseal(&self.pool, s, key_id, sealed).await
    }

    async fn delete_secret(
        &self,
        slug: &str,
        name: &str,
        target: Option<cdeploy_core::api::EnvTarget>,
    ) -> DbResult<u64> {
        secrets::delete(&self.pool, slug, name, target).await
    }

    async fn insert_notify_hook(&self, h: &NotifyHookRow) -> DbResult<()> {
        notify::insert_hook(&self.pool, h).await
    }

    async fn list_notify_hooks(&self, slug: Option<&str>) -> DbResult<Vec<NotifyHookRow>> {
        notify::list_hooks(&self.pool, slug).await
    }

    async fn get_notify_hook(&self, id: &str) -> DbResult<Option<NotifyHookRow>> {
        notify::get_hook(&self.pool, id).await
    }

    async fn delete_notify_hook(&self, slug: &str, id: &str) -> DbResult<bool> {
        notify::delete_hook(&self.pool, slug, id).await
    }

    async fn reseal_notify_hook(
        &self,
        h: &NotifyHookRow,
        key_id: &str,
        sealed: &str,
    ) -> DbResult<bool> {
        notify::reseal_hook(&self.pool, h, key_id, sealed).await
    }

    async fn due_notifications(&self, now_us: i64, limit: u32) -> DbResult<Vec<OutboxRow>> {
        notify::due(&self.pool, now_us, limit).await
    }

    async fn next_notification_due(&self) -> DbResult<Option<i64>> {
        notify::next_due(&self.pool).await
    }

    async fn claim_notification(
        &self,
        m: &OutboxRow,
        owner: &str,
        now_us: i64,
        until_us: i64,
    ) -> DbResult<bool> {
        notify::claim(&self.pool, m, owner, now_us, until_us).await
    }

    async fn finish_notification(
        &self,
        a: &NotifyAttemptRow,
        owner: &str,
        keep: u32,
    ) -> DbResult<bool> {
        notify::finish(&self.pool, a, owner, keep).await
    }

    async fn notification_attempts(
        &self,
        hook: &str,
        limit: u32,
    ) -> DbResult<Vec<NotifyAttemptRow>> {
        notify::attempts(&self.pool, hook, limit).await
    }

    async fn pr_slot(
        &self,
        slug: &str,
        t: &CommitTarget,
        pr: i64,
        deployment_at: &str,
    ) -> DbResult<PrSlot> {
        git::pr_slot(&self.pool, slug, t, pr, deployment_at).await
    }

    async fn set_pr_comment(
        &self,
        slug: &str,
        t: &CommitTarget,
        pr: i64,
        comment_id: Option<&str>,
    ) -> DbResult<()> {
        git::set_pr_comment(&self.pool, slug, t, pr, comment_id).await
    }

    async fn insert_session(&self, s: &SessionRow) -> DbResult<()> {
        sessions::insert(&self.pool, s).await
    }

    async fn session_by_hash(&self, hash: &str) -> DbResult<Option<SessionRow>> {
        sessions::by_hash(&self.pool, hash).await
    }

    async fn session_seen(&self, id: &str, now_us: i64) -> DbResult<()> {
        sessions::seen(&self.pool, id, now_us).await
    }

    async fn delete_session(&self, id: &str) -> DbResult<bool> {
        sessions::delete(&self.pool, id).await
    }

    async fn list_sessions(&self, now_us: i64, idle_before_us: i64) -> DbResult<Vec<SessionRow>> {
        sessions::list(&self.pool, now_us, idle_before_us).await
    }

    async fn insert_session_link(
        &self,
        hash: &str,
        token_id: &str,
        expires_us: i64,
    ) -> DbResult<()> {
        sessions::insert_link(&self.pool, hash, token_id, expires_us).await
    }

    async fn take_session_link(&self, hash: &str, now_us: i64) -> DbResult<Option<String>> {
        sessions::take_link(&self.pool, hash, now_us).await
    }

    async fn insert_trust(&self, t: &TrustRow) -> DbResult<()> {
        oidc::insert_trust(&self.pool, t).await
    }

    async fn list_trusts(&self, slug: &str) -> DbResult<Vec<TrustRow>> {
        oidc::list_trusts(&self.pool, slug).await
    }

    async fn delete_trust(&self, slug: &str, id: &str) -> DbResult<bool> {
        oidc::delete_trust(&self.pool, slug, id).await
    }

    async fn spend_identity_token(
        &self,
        issuer: &str,
        jti: &str,
        expires_us: i64,
        now_us: i64,
    ) -> DbResult<bool> {
        oidc::spend(&self.pool, issuer, jti, expires_us, now_us).await
    }

    async fn prune_expired_tokens(&self, prefix: &str, before_us: i64) -> DbResult<u64> {
        tokens::prune_expired(&self.pool, prefix, before_us).await
    }
}
