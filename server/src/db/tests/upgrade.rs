//! Databases made by servers that kept their schema in code upgrade in place: the
//! fixtures are such databases (schema marker 10, a few rows of every table), dumped
//! once from the old store (server/tests/fixtures/README.md).

use cdeploy_core::api::{EnvTarget, Role};
use cdeploy_core::event::Status;
use sqlx::{Connection, Executor};

use super::super::*;
use super::row;

const SQLITE_V10: &str = include_str!("../../../tests/fixtures/store-v10.sqlite.sql");
const POSTGRES_V10: &str = include_str!("../../../tests/fixtures/store-v10.postgres.sql");

/// Loads a SQL dump on a connection of its own (a dump may change session settings).
async fn load_sqlite(path: &std::path::Path, sql: &str) {
    let mut conn =
        sqlx::SqliteConnection::connect(&format!("sqlite://{}?mode=rwc", path.display()))
            .await
            .unwrap();
    conn.execute(sqlx::raw_sql(sql)).await.unwrap();
    conn.close().await.unwrap();
}

/// What `_sqlx_migrations` says: each version and whether it was adopted (not run).
async fn recorded(store: &SqlStore) -> Vec<(i64, bool)> {
    // (The `Any` driver reads no SQLite BOOLEAN: the flag is read as a number.)
    let rows: Vec<(i64, i64, i64)> = sqlx::query_as(
        "SELECT version, CASE WHEN success THEN 1 ELSE 0 END, execution_time \
         FROM _sqlx_migrations ORDER BY version",
    )
    .fetch_all(&store.pool)
    .await
    .unwrap();
    assert!(rows.iter().all(|(_, success, _)| *success == 1));
    rows.into_iter().map(|(v, _, t)| (v, t == -1)).collect()
}

/// Every row of the fixture reads as the old server wrote it.
async fn check_fixture(store: &dyn Store) {
    let projects = store.list_projects().await.unwrap();
    let slugs: Vec<&str> = projects.iter().map(|p| p.slug.as_str()).collect();
    assert_eq!(slugs, ["docs", "old", "web"]);
    let web = store.get_project("web").await.unwrap().unwrap();
    assert_eq!(web.production.as_deref(), Some("webready00000001"));
    assert_eq!(web.git.as_deref(), Some("https://github.com/acme/web.git"));
    assert!(store.get_project("old").await.unwrap().unwrap().deleting);

    let d = store
        .get_deployment("webready00000001")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(d.status, Status::Ready);
    let git = d.git.unwrap();
    assert_eq!(
        (git.url.as_str(), git.git_ref.as_deref()),
        ("https://github.com/acme/web.git", Some("main"))
    );
    assert_eq!(d.build.command.as_deref(), Some("npm run build"));
    assert_eq!(d.env["API_URL"], "https://api.example.com");
    assert_eq!(d.site.spa, Some(true));
    assert_eq!(
        store
            .request_hash("webready00000001")
            .await
            .unwrap()
            .as_deref(),
        Some("reqhash1")
    );
    let by_key = store.find_by_idempotency_key("web", "key-1").await.unwrap();
    assert_eq!(by_key.unwrap().id, "webready00000001");
    let ids: Vec<String> = store
        .list_deployments("web", 10)
        .await
        .unwrap()
        .into_iter()
        .map(|d| d.id)
        .collect();
    assert_eq!(
        ids,
        ["webfailed0000003", "webpreview000002", "webready00000001"]
    );
    let preview = store
        .get_deployment("webpreview000002")
        .await
        .unwrap()
        .unwrap();
    assert!(preview.preview && preview.branch.as_deref() == Some("feat/login"));
    assert_eq!(
        store.alias("web", "feat-login").await.unwrap().as_deref(),
        Some("webpreview000002")
    );
    let failed = store
        .get_deployment("webfailed0000003")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(failed.error.as_deref(), Some("build failed: exit status 1"));
    let running: Vec<String> = store
        .non_terminal_deployments()
        .await
        .unwrap()
        .into_iter()
        .map(|d| d.id)
        .collect();
    assert_eq!(running, ["docsbuilding0001", "oldqueued0000001"]);
    assert!(store
        .build_token_valid("docsbuilding0001", "buildtokhash1")
        .await
        .unwrap());
    assert!(store
        .claim_spent("docsbuilding0001", "claimhash1")
        .await
        .unwrap());
    assert_eq!(store.all_deployments().await.unwrap().len(), 5);

    // A blob claimed for deletion is still being deleted.
    let c = "c".repeat(64);
    assert_eq!(
        store.touch_blobs(std::slice::from_ref(&c)).await.unwrap(),
        [c]
    );

    let ci = store.token_by_hash("cihash").await.unwrap().unwrap();
    assert_eq!(
        (ci.id.as_str(), ci.role),
        ("tok_ci00000000000000", Role::Deploy)
    );
    assert_eq!(ci.projects, ["web", "docs"]);
    assert!(ci.last_used_us.is_some() && !ci.expired());
    assert_eq!(store.list_tokens().await.unwrap().len(), 2);
    assert!(store.token_exists("adminhash").await.unwrap());

    let audit = store
        .list_audit(&AuditFilter {
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    let counts: Vec<(u16, i64)> = audit.iter().map(|a| (a.status, a.count)).collect();
    assert!(
        counts.contains(&(201, 1)) && counts.contains(&(403, 3)),
        "{counts:?}"
    );

    let secrets = store.list_secrets("web").await.unwrap();
    let targets: Vec<(EnvTarget, bool)> = secrets.iter().map(|s| (s.target, s.sensitive)).collect();
    assert_eq!(
        targets,
        [(EnvTarget::Preview, false), (EnvTarget::Production, true)]
    );

    assert!(
        store
            .git_link("web")
            .await
            .unwrap()
            .unwrap()
            .per_forge_secrets
    );
    assert!(
        !store
            .git_link("docs")
            .await
            .unwrap()
            .unwrap()
            .per_forge_secrets
    );
    let accepted = store
        .accepted_delivery("web", "github", "gh-delivery-1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(accepted.deployment.as_deref(), Some("webready00000001"));
    assert!(store
        .accepted_payload("web", "payloadsha1", None)
        .await
        .unwrap()
        .is_some());
    assert_eq!(store.list_deliveries("web", 10).await.unwrap().len(), 2);
    assert_eq!(
        store
            .deploy_hook_by_hash("hookhash1")
            .await
            .unwrap()
            .unwrap()
            .name,
        "cms"
    );
    let target = store
        .commit_target("webready00000001")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(target.sha, "0123456789abcdef0123456789abcdef01234567");
}

/// New writes work on the upgraded database, beside the old rows.
async fn write_after_upgrade(store: &dyn Store) {
    let mut d = row("webafter00000004", "web");
    d.status = Status::Ready;
    store.insert_deployment(&d).await.unwrap();
    assert_eq!(
        store
            .advance_production("web", "webafter00000004")
            .await
            .unwrap(),
        Advance::Advanced
    );
    assert!(store.create_project("new", None).await.unwrap());
    let t = TokenRow::new("newhash", "new", Role::Read, vec!["web".into()], Some(60));
    store.insert_token(&t).await.unwrap();
    store.token_used("tok_ci00000000000000").await.unwrap();
    assert_eq!(store.list_tokens().await.unwrap().len(), 3);
    assert!(store
        .delete_deploy_hook("web", "hook_cms000000000")
        .await
        .unwrap());
    assert_eq!(
        store
            .delete_secret("web", "DB_PASSWORD", None)
            .await
            .unwrap(),
        2
    );
    assert!(store.delete_project("old").await.unwrap());
    assert_eq!(
        store.list_deployments("web", 1).await.unwrap()[0].id,
        "webafter00000004"
    );
}

/// The newest migration's version: every one is recorded after an upgrade.
fn latest() -> i64 {
    migrate::MIGRATOR.iter().count() as i64
}

#[tokio::test]
async fn sqlite_from_marker() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cdeploy.db");
    load_sqlite(&path, SQLITE_V10).await;
    let url = format!("sqlite://{}", path.display());
    let store = SqlStore::open(&url).await.unwrap();
    check_fixture(&store).await;
    // Every step the old server ran is adopted, none run again (the newer ones run); the
    // marker is gone.
    assert_eq!(
        recorded(&store).await,
        (1..=latest()).map(|v| (v, v <= 10)).collect::<Vec<_>>()
    );
    let marker: i64 = sqlx::query_scalar("PRAGMA user_version")
        .fetch_one(&store.pool)
        .await
        .unwrap();
    assert_eq!(marker, 0);
    write_after_upgrade(&store).await;
    drop(store);
    // Opening it again changes nothing.
    let store = SqlStore::open(&url).await.unwrap();
    assert_eq!(recorded(&store).await.len() as i64, latest());
    assert_eq!(store.list_tokens().await.unwrap().len(), 3);
}

#[tokio::test]
async fn sqlite_from_an_older_marker() {
    // A server that had run the first 4 steps: the rest run now, with their data changes
    // (step 5 gives tokens an id).
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cdeploy.db");
    let mut old = String::new();
    for m in migrate::MIGRATOR.iter().take(4) {
        old.push_str(&m.sql);
    }
    old.push_str(
        "INSERT INTO tokens (hash, name, created_at, scope) VALUES ('0123456789abcdef0123', 'ci', 'x', 'deploy');\
         PRAGMA user_version = 4;",
    );
    load_sqlite(&path, &old).await;
    let store = SqlStore::open(&format!("sqlite://{}", path.display()))
        .await
        .unwrap();
    let adopted: Vec<(i64, bool)> = (1..=latest()).map(|v| (v, v <= 4)).collect();
    assert_eq!(recorded(&store).await, adopted);
    let t = store
        .token_by_hash("0123456789abcdef0123")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (t.id.as_str(), t.role),
        ("tok_0123456789abcdef", Role::Deploy)
    );
}

#[tokio::test]
async fn a_newer_marker_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cdeploy.db");
    load_sqlite(&path, "PRAGMA user_version = 11;").await;
    let err = SqlStore::open(&format!("sqlite://{}", path.display()))
        .await
        .err()
        .unwrap();
    assert!(format!("{err:#}").contains("schema version 11"), "{err:#}");
}

/// Called by `postgres_store` with its cluster: two replicas open a database an old
/// server made, together.
pub(super) async fn postgres_from_marker(url: &str) {
    let mut admin = sqlx::PgConnection::connect(url).await.unwrap();
    admin.execute("CREATE DATABASE upgraded").await.unwrap();
    admin.close().await.unwrap();
    let url = format!("{}/upgraded", url.rsplit_once('/').unwrap().0);
    let mut conn = sqlx::PgConnection::connect(&url).await.unwrap();
    conn.execute(sqlx::raw_sql(POSTGRES_V10)).await.unwrap();
    conn.close().await.unwrap();

    let (a, b) = tokio::join!(SqlStore::open(&url), SqlStore::open(&url));
    let (store, _other) = (a.unwrap(), b.unwrap());
    check_fixture(&store).await;
    assert_eq!(
        recorded(&store).await,
        (1..=latest()).map(|v| (v, v <= 10)).collect::<Vec<_>>()
    );
    let marker: Option<String> = sqlx::query_scalar("SELECT to_regclass('cdeploy_schema')::text")
        .fetch_one(&store.pool)
        .await
        .unwrap();
    assert_eq!(marker, None, "the old marker is gone");
    write_after_upgrade(&store).await;
}
