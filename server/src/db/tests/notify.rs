//! Notification endpoints and the outbox: events enter it with the change they report,
//! one sender holds a message at a time, attempts are kept and retried ones come back.

use super::*;

fn hook(id: &str, slug: &str, events: &[&str]) -> NotifyHookRow {
    NotifyHookRow {
        id: id.into(),
        slug: slug.into(),
        url: "https://example.com/hook".into(),
        events: events.iter().map(|e| e.to_string()).collect(),
        format: "json".into(),
        key_id: "k1".into(),
        sealed_secret: "sealed".into(),
        created_at: cdeploy_core::now_rfc3339(),
    }
}

fn attempt(m: &OutboxRow, n: i64, outcome: &str, next_us: Option<i64>) -> NotifyAttemptRow {
    NotifyAttemptRow {
        id: format!("na_{}_{n}", m.id),
        message: m.id.clone(),
        hook: m.hook.clone(),
        event: m.event.clone(),
        deployment: m.deployment.clone(),
        attempt: n,
        at: cdeploy_core::now_rfc3339(),
        at_us: now_us() + n,
        status: Some(500),
        error: None,
        ms: 3,
        outcome: outcome.into(),
        next_us,
    }
}

pub(super) async fn exercise_notify(store: &dyn Store) {
    store.create_project("n", None).await.unwrap();
    store
        .insert_notify_hook(&hook("nh_all", "n", &["created", "ready", "failed"]))
        .await
        .unwrap();
    store
        .insert_notify_hook(&hook("nh_failed", "n", &["failed"]))
        .await
        .unwrap();
    store
        .insert_notify_hook(&hook("nh_other", "other", &["ready"]))
        .await
        .unwrap();
    assert_eq!(store.list_notify_hooks(Some("n")).await.unwrap().len(), 2);
    assert_eq!(
        store
            .get_notify_hook("nh_failed")
            .await
            .unwrap()
            .unwrap()
            .events,
        ["failed"]
    );

    // `created` with the row; `failed` (with its error) with the status, once.
    store.insert_deployment(&row("nd1", "n")).await.unwrap();
    assert!(store
        .set_status("nd1", Status::Failed, Some("exit 1"))
        .await
        .unwrap());
    assert!(!store.set_status("nd1", Status::Failed, None).await.unwrap());
    let far = now_us() + 10_000_000;
    let mut due = store.due_notifications(far, 10).await.unwrap();
    due.sort_by(|a, b| a.id.cmp(&b.id));
    let ids: Vec<&str> = due.iter().map(|m| m.id.as_str()).collect();
    assert_eq!(
        ids,
        [
            "nh_all.nd1.created",
            "nh_all.nd1.failed",
            "nh_failed.nd1.failed"
        ]
    );
    assert_eq!(due[1].error.as_deref(), Some("exit 1"));
    // Repeats of a key are one message; a promote writes its event with production.
    store
        .promote("n", "nd1", Some(("failed", "nd1.failed")))
        .await
        .unwrap();
    assert_eq!(store.due_notifications(far, 10).await.unwrap().len(), 3);
    assert_eq!(
        store
            .get_project("n")
            .await
            .unwrap()
            .unwrap()
            .production
            .as_deref(),
        Some("nd1")
    );

    // One sender holds a message; the others see it neither due nor claimable.
    let m = due[0].clone();
    let now = now_us();
    assert!(store
        .claim_notification(&m, "a", now, now + 60_000_000)
        .await
        .unwrap());
    assert!(!store
        .claim_notification(&m, "b", now, now + 60_000_000)
        .await
        .unwrap());
    assert_eq!(store.due_notifications(now, 10).await.unwrap().len(), 2);
    // Given back to retry later, it is due then; delivered, never again.
    let retry_at = now + 5_000_000;
    assert!(store
        .finish_notification(&attempt(&m, 1, "retrying", Some(retry_at)), "a", 200)
        .await
        .unwrap());
    assert!(!store
        .due_notifications(now + 1, 10)
        .await
        .unwrap()
        .iter()
        .any(|d| d.id == m.id));
    // A sender that read it before that attempt cannot take it (it would send it again
    // at once, counting from the start).
    assert!(!store
        .claim_notification(&m, "c", retry_at, retry_at + 60_000_000)
        .await
        .unwrap());
    let again = store.due_notifications(retry_at, 10).await.unwrap();
    let m = again.into_iter().find(|d| d.id == m.id).unwrap();
    assert_eq!(m.attempts, 1);
    assert!(store
        .claim_notification(&m, "b", retry_at, retry_at + 60_000_000)
        .await
        .unwrap());
    // An attempt whose lease another sender holds now is not recorded.
    assert!(!store
        .finish_notification(&attempt(&m, 2, "delivered", None), "a", 200)
        .await
        .unwrap());
    assert!(store
        .finish_notification(&attempt(&m, 2, "delivered", None), "b", 200)
        .await
        .unwrap());
    assert!(!store
        .due_notifications(far, 10)
        .await
        .unwrap()
        .iter()
        .any(|d| d.id == m.id));
    let kept = store.notification_attempts("nh_all", 10).await.unwrap();
    assert_eq!(
        kept.iter().map(|a| a.outcome.as_str()).collect::<Vec<_>>(),
        ["delivered", "retrying"]
    );
    assert!(store.next_notification_due().await.unwrap().is_some());

    // Removing an endpoint drops its messages and attempts.
    assert!(store.delete_notify_hook("n", "nh_all").await.unwrap());
    assert!(!store.delete_notify_hook("n", "nh_all").await.unwrap());
    assert!(!store
        .delete_notify_hook("other", "nh_failed")
        .await
        .unwrap());
    assert!(store
        .notification_attempts("nh_all", 10)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(store.due_notifications(far, 10).await.unwrap().len(), 1);
    // And deleting the project, the rest.
    assert!(store.delete_project("n").await.unwrap());
    assert!(store.due_notifications(far, 10).await.unwrap().is_empty());
    assert!(store.list_notify_hooks(Some("n")).await.unwrap().is_empty());
}

/// A pull request's comment: one reporter creates it, the others edit it, and an older
/// deployment's late report leaves a newer one's in place.
pub(super) async fn exercise_pr_comments(store: &dyn Store) {
    let t = CommitTarget {
        deployment: "d".into(),
        forge: "github".into(),
        repo: "o/r".into(),
        sha: "s".into(),
        pr: Some(5),
    };
    let slot = |at: &'static str| store.pr_slot("p", &t, 5, at);
    assert_eq!(slot("2026-01-02").await.unwrap(), PrSlot::Create);
    // Another reporter while it is being created: leaves it.
    assert_eq!(slot("2026-01-02").await.unwrap(), PrSlot::Skip);
    store.set_pr_comment("p", &t, 5, Some("77")).await.unwrap();
    assert_eq!(slot("2026-01-02").await.unwrap(), PrSlot::Edit("77".into()));
    assert_eq!(slot("2026-01-03").await.unwrap(), PrSlot::Edit("77".into()));
    // The older deployment's late report.
    assert_eq!(slot("2026-01-02").await.unwrap(), PrSlot::Skip);
    // Gone (deleted on the forge, or never made): the next report creates it again.
    store.set_pr_comment("p", &t, 5, None).await.unwrap();
    assert_eq!(slot("2026-01-04").await.unwrap(), PrSlot::Create);
    // Another project's comment on the same pull request is its own.
    assert_eq!(
        store.pr_slot("q", &t, 5, "2026-01-01").await.unwrap(),
        PrSlot::Create
    );
}
