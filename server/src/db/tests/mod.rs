//! The store's behaviour, the same on both backends, and what a broken row does.

mod inputs;
mod notify;
mod upgrade;

use std::collections::BTreeMap;

use cdeploy_core::api::{Role, SourceKind};
use cdeploy_core::config::{BuildConfig, SiteConfig};
use cdeploy_core::event::Status;

use super::*;

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
        commit: None,
        reused_from: None,
    }
}

/// The behaviour both backends must share.
async fn exercise(store: &dyn Store) {
    exercise_deployments(store).await;
    exercise_production(store).await;
    exercise_blobs(store).await;
    exercise_aliases_and_tokens(store).await;
    exercise_audit(store).await;
    exercise_deletion(store).await;
    exercise_domains(store).await;
    notify::exercise_notify(store).await;
    notify::exercise_pr_comments(store).await;
    inputs::exercise_inputs(store).await;
    inputs::exercise_skipped_deliveries(store).await;
}

/// Domains: one project per name, one lease holder at a time, attempts kept.
async fn exercise_domains(store: &dyn Store) {
    use crate::db::{AttemptOutcome, AttemptRow, DomainRow};
    let row = |slug: &str| DomainRow {
        name: "www.example.test".into(),
        slug: slug.into(),
        branch: None,
        redirect_to: None,
        https_redirect: true,
        hsts: None,
        created_at: "2026-12-05T00:00:00Z".into(),
        state: "pending".into(),
        cert_not_before: None,
        cert_not_after: None,
        failures: 0,
        next_attempt_us: 0,
        verify_token: "t".into(),
        verified: false,
    };
    let (stored, added) = store.insert_domain(&row("x")).await.unwrap();
    assert!(added);
    assert_eq!(stored.slug, "x");
    let (stored, added) = store.insert_domain(&row("y")).await.unwrap();
    assert!(!added, "the name is taken");
    assert_eq!(stored.slug, "x");
    // Two servers race for the lease: one wins until it finishes.
    let name = "www.example.test";
    assert!(store
        .take_domain_lease(name, "s1", 100, 1_000)
        .await
        .unwrap());
    assert!(!store
        .take_domain_lease(name, "s2", 200, 1_100)
        .await
        .unwrap());
    let outcome = AttemptOutcome {
        state: "active".into(),
        failures: 0,
        next_attempt_us: 5_000,
        cert: Some((10, 100)),
    };
    // Only the holder's outcome counts.
    store
        .finish_domain_attempt(name, "s2", &outcome)
        .await
        .unwrap();
    assert_eq!(
        store.get_domain(name).await.unwrap().unwrap().state,
        "pending"
    );
    store
        .finish_domain_attempt(name, "s1", &outcome)
        .await
        .unwrap();
    let d = store.get_domain(name).await.unwrap().unwrap();
    assert_eq!((d.state.as_str(), d.cert_not_after), ("active", Some(100)));
    // Not due before next_attempt_us; due at once after retry_domain_now.
    assert!(!store
        .take_domain_lease(name, "s2", 2_000, 3_000)
        .await
        .unwrap());
    store.retry_domain_now(name).await.unwrap();
    assert!(store
        .take_domain_lease(name, "s2", 2_000, 3_000)
        .await
        .unwrap());
    // A lapsed lease can be taken over.
    assert!(store
        .take_domain_lease(name, "s3", 3_001, 4_000)
        .await
        .unwrap());
    for i in 0..5 {
        let a = AttemptRow {
            id: format!("a{i}"),
            name: name.into(),
            at: "2026-12-05T00:00:00Z".into(),
            at_us: i,
            ok: i % 2 == 0,
            report: "{}".into(),
        };
        store.insert_domain_attempt(&a, 3).await.unwrap();
    }
    let kept = store.domain_attempts(name, 10).await.unwrap();
    let ids: Vec<&str> = kept.iter().map(|a| a.id.as_str()).collect();
    assert_eq!(ids, ["a4", "a3", "a2"]);
    assert_eq!(store.list_domains(Some("x")).await.unwrap().len(), 1);
    assert!(store.delete_domain(name).await.unwrap());
    assert!(store.domain_attempts(name, 10).await.unwrap().is_empty());
}

/// Deployments: insertion order, statuses, conflicts.
async fn exercise_deployments(store: &dyn Store) {
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
}

/// Production moves forward in creation order only.
async fn exercise_production(store: &dyn Store) {
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
}

/// GC's record of blobs.
async fn exercise_blobs(store: &dyn Store) {
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
}

/// Branch aliases and tokens.
async fn exercise_aliases_and_tokens(store: &dyn Store) {
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
}

/// The audit log.
async fn exercise_audit(store: &dyn Store) {
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
}

/// Deleting a project.
async fn exercise_deletion(store: &dyn Store) {
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
    let store = SqlStore::open(&url).await.unwrap();
    // Every connection is set up as SQLite's own driver set it up before.
    let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
        .fetch_one(&store.pool)
        .await
        .unwrap();
    let pragmas: (i64, i64, i64) = sqlx::query_as(
        "SELECT * FROM pragma_synchronous, pragma_busy_timeout, pragma_foreign_keys",
    )
    .fetch_one(&store.pool)
    .await
    .unwrap();
    assert_eq!((mode.as_str(), pragmas), ("wal", (1, 10_000, 1)));
    exercise(&store).await;
    drop(store);
    // Reopening runs no migration twice.
    SqlStore::open(&url).await.unwrap();
}

#[tokio::test]
async fn postgres_store() {
    // A cluster of its own (initdb + pg_ctl, installed by ./install.sh --dev).
    let pg = tokio::task::spawn_blocking(cdeploy_tests::services::Postgres::start)
        .await
        .unwrap();
    let url = pg.url();
    // Two replicas starting together: each migration runs once.
    let (a, b) = tokio::join!(SqlStore::open(&url), SqlStore::open(&url));
    let (store, _other) = (a.unwrap(), b.unwrap());
    exercise(&store).await;
    let applied: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM _sqlx_migrations WHERE success")
        .fetch_one(&store.pool)
        .await
        .unwrap();
    assert_eq!(
        applied,
        migrate::MIGRATOR.iter().count() as i64,
        "migrated once, to the end"
    );
    drop(store);
    upgrade::postgres_from_marker(&pg.url()).await;
    tokio::task::spawn_blocking(move || drop(pg)).await.unwrap();
}

#[tokio::test]
async fn sqlite_in_memory_and_odd_paths() {
    let store = SqlStore::open("sqlite::memory:").await.unwrap();
    store.create_project("a", None).await.unwrap();
    store.insert_deployment(&row("d1", "a")).await.unwrap();
    assert_eq!(store.list_deployments("a", 10).await.unwrap().len(), 1);
    // A path is a file name, `#` and spaces included, as SQLite's own driver reads it.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a dir #1").join("db.sqlite");
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let store = SqlStore::open(&format!("sqlite://{}", path.display()))
        .await
        .unwrap();
    store.create_project("a", None).await.unwrap();
    assert!(path.exists());
}

/// A store on a fresh SQLite file, and the file's directory (kept while it lives).
async fn sqlite() -> (SqlStore, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("db.sqlite").display());
    (SqlStore::open(&url).await.unwrap(), dir)
}

/// The message of a call's error, which must be one.
fn failure<T: std::fmt::Debug>(r: DbResult<T>) -> String {
    match r {
        Err(StoreError::Failed(why)) => why,
        other => panic!("expected a failure, got {other:?}"),
    }
}

#[tokio::test]
async fn broken_rows_are_errors_not_defaults() {
    let (store, dir) = sqlite().await;
    store.create_project("a", None).await.unwrap();
    store.insert_deployment(&row("d1", "a")).await.unwrap();
    let corrupt = |sql: &'static str| {
        let pool = store.pool.clone();
        async move { sqlx::query(sql).execute(&pool).await.unwrap() }
    };

    corrupt("UPDATE deployments SET status = 'zombie' WHERE id = 'd1'").await;
    let why = failure(store.get_deployment("d1").await);
    assert!(
        why.contains("deployments.status") && why.contains("zombie"),
        "{why}"
    );
    // One broken row fails the list it is in, rather than vanishing from it.
    failure(store.list_deployments("a", 10).await);

    corrupt("UPDATE deployments SET status = 'ready', build = '{not json' WHERE id = 'd1'").await;
    let why = failure(store.get_deployment("d1").await);
    assert!(why.contains("deployments.build"), "{why}");

    corrupt("UPDATE deployments SET build = '{}', env = '[]' WHERE id = 'd1'").await;
    assert!(failure(store.get_deployment("d1").await).contains("deployments.env"));

    corrupt("UPDATE deployments SET env = '{}', preview = 'yes' WHERE id = 'd1'").await;
    assert!(failure(store.get_deployment("d1").await).contains("deployments.preview"));

    corrupt("UPDATE deployments SET preview = 0 WHERE id = 'd1'").await;
    assert!(
        store.get_deployment("d1").await.unwrap().is_some(),
        "mended"
    );

    store
        .insert_token(&TokenRow::new("th", "ci", Role::Deploy, vec![], None))
        .await
        .unwrap();
    corrupt("UPDATE tokens SET scope = 'owner'").await;
    let why = failure(store.token_by_hash("th").await);
    assert!(
        why.contains("tokens.scope") && why.contains("owner"),
        "{why}"
    );

    corrupt("INSERT INTO audit (at_us, at, token_name, action, status) VALUES (1, 'x', 'ci', 'GET /', 70000)").await;
    let all = AuditFilter {
        limit: 10,
        ..Default::default()
    };
    assert!(failure(store.list_audit(&all).await).contains("audit.status"));

    corrupt("INSERT INTO secrets (slug, name, target, key_id, sealed, created_at, updated_at) VALUES ('a', 'K', 'staging', 'k', 's', 'x', 'x')").await;
    assert!(failure(store.list_secrets("a").await).contains("secrets.target"));

    // A column the row needs is gone (a schema that drifted): the statement that names
    // it fails, and a row read whole lacks it.
    corrupt("ALTER TABLE deployments DROP COLUMN branch").await;
    assert!(failure(store.get_deployment("d1").await).contains("branch"));
    store
        .put_git_link(&GitLinkRow {
            slug: "a".into(),
            repo: "acme/a".into(),
            production_branch: "main".into(),
            key_id: "k".into(),
            sealed_secret: "s".into(),
            created_at: "x".into(),
            per_forge_secrets: true,
            root: None,
        })
        .await
        .unwrap();
    corrupt("ALTER TABLE git_links DROP COLUMN per_forge_secrets").await;
    // (Read on new connections: sqlx's SQLite driver panics on a row of a statement prepared
    // before another connection changed the table under it.)
    store.pool.close().await;
    let url = format!("sqlite://{}", dir.path().join("db.sqlite").display());
    let store = SqlStore::open(&url).await.unwrap();
    let why = failure(store.git_link("a").await);
    assert!(
        why.contains("git_links.per_forge_secrets") && why.contains("missing"),
        "{why}"
    );
}
