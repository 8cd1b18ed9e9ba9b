//! What builds read: recorded, found by digest among ready deployments of one target,
//! and the nearest earlier one for `inspect --why`.

use cdeploy_core::api::BuildInputs;
use cdeploy_core::event::Status;

use super::row;
use crate::db::Store;

fn inputs(digest: &str, commit: Option<&str>) -> BuildInputs {
    BuildInputs {
        digest: digest.into(),
        parts: [("apps/a/".to_string(), digest.to_string())].into(),
        commit: commit.map(String::from),
        reuse: true,
    }
}

pub(super) async fn exercise_inputs(store: &dyn Store) {
    store.create_project("inp", None).await.unwrap();
    for (id, preview) in [("i1", false), ("i2", false), ("i3", true), ("i4", false)] {
        let mut d = row(id, "inp");
        d.preview = preview;
        store.insert_deployment(&d).await.unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
    assert!(store.inputs("i1").await.unwrap().is_none());
    store
        .set_inputs("i1", &inputs("aa", Some("c1")))
        .await
        .unwrap();
    store.set_inputs("i2", &inputs("aa", None)).await.unwrap();
    store.set_inputs("i3", &inputs("aa", None)).await.unwrap();
    let read = store.inputs("i1").await.unwrap().unwrap();
    assert_eq!(
        (read.digest.as_str(), read.commit.as_deref()),
        ("aa", Some("c1"))
    );
    assert_eq!(read.parts["apps/a/"], "aa");
    assert_eq!(
        store
            .get_deployment("i1")
            .await
            .unwrap()
            .unwrap()
            .commit
            .as_deref(),
        Some("c1")
    );

    // Only ready ones count, of the same target, newest first, never itself.
    assert!(store
        .reusable("inp", false, "aa", "i4")
        .await
        .unwrap()
        .is_empty());
    for id in ["i1", "i2", "i3"] {
        store.set_status(id, Status::Ready, None).await.unwrap();
    }
    let found = store.reusable("inp", false, "aa", "i4").await.unwrap();
    assert_eq!(
        found,
        [("i2".to_string(), false), ("i1".to_string(), false)]
    );
    assert_eq!(
        store.reusable("inp", true, "aa", "i4").await.unwrap(),
        [("i3".to_string(), false)]
    );
    assert!(store
        .reusable("inp", false, "bb", "i4")
        .await
        .unwrap()
        .is_empty());
    // One that names itself is left out; one checked clean says so.
    store.set_names_itself("i2", true).await.unwrap();
    store.set_names_itself("i1", false).await.unwrap();
    assert_eq!(
        store.reusable("inp", false, "aa", "i4").await.unwrap(),
        [("i1".to_string(), true)]
    );

    store.set_reused_from("i4", "i1").await.unwrap();
    let i4 = store.get_deployment("i4").await.unwrap().unwrap();
    assert_eq!(i4.reused_from.as_deref(), Some("i1"));
    // The nearest earlier of the same target with inputs.
    assert_eq!(
        store
            .inputs_before("inp", false, "i4")
            .await
            .unwrap()
            .as_deref(),
        Some("i2")
    );
    assert_eq!(store.inputs_before("inp", false, "i1").await.unwrap(), None);
    assert_eq!(store.inputs_before("inp", true, "i3").await.unwrap(), None);

    // An earlier build of the same inputs still under way; not a later one, not itself.
    store.insert_deployment(&row("i5", "inp")).await.unwrap();
    store.set_inputs("i4", &inputs("cc", None)).await.unwrap();
    assert!(store.building_same("inp", false, "cc", "i5").await.unwrap());
    assert!(!store.building_same("inp", false, "cc", "i4").await.unwrap());
    assert!(!store.building_same("inp", true, "cc", "i5").await.unwrap());
    assert!(!store.building_same("inp", false, "aa", "i5").await.unwrap());
    store.set_status("i4", Status::Failed, None).await.unwrap();
    assert!(!store.building_same("inp", false, "cc", "i5").await.unwrap());

    // Each cache scope's first deployment (production; previews without a branch; one
    // branch) had nothing of its scope to read.
    for (id, branch) in [("i6", "x"), ("i7", "y"), ("i8", "x")] {
        let mut d = row(id, "inp");
        (d.preview, d.branch) = (true, Some(branch.into()));
        store.insert_deployment(&d).await.unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
    for (id, earlier) in [
        ("i1", false),
        ("i2", true),
        ("i3", false),
        ("i6", false),
        ("i7", false),
        ("i8", true),
    ] {
        assert_eq!(
            store.earlier_in_scope("inp", id).await.unwrap(),
            earlier,
            "{id}"
        );
    }
}

/// A skipped delivery is kept like an accepted one: what a replay is recognized by,
/// however many ignored deliveries come after it.
pub(super) async fn exercise_skipped_deliveries(store: &dyn Store) {
    use crate::db::DeliveryRow;
    store.create_project("dlv", None).await.unwrap();
    let delivery = |n: u32, decision: &str, deployment: Option<&str>| DeliveryRow {
        id: format!("dv{n}"),
        slug: "dlv".into(),
        at: format!("t{n}"),
        at_us: i64::from(n),
        forge: "github".into(),
        event: "push".into(),
        delivery: Some(format!("g{n}")),
        decision: decision.into(),
        reason: "r".into(),
        deployment: deployment.map(String::from),
        payload: Some(format!("p{n}")),
    };
    store
        .insert_delivery(&delivery(1, "accepted", Some("dd1")), 3)
        .await
        .unwrap();
    store
        .delivery_skipped("dd1", "unchanged since x")
        .await
        .unwrap();
    for n in 2..10 {
        store
            .insert_delivery(&delivery(n, "ignored", None), 3)
            .await
            .unwrap();
    }
    let kept = store
        .accepted_delivery("dlv", "github", "g1")
        .await
        .unwrap();
    let kept = kept.expect("the skipped delivery was pruned");
    assert_eq!(
        (kept.decision.as_str(), kept.reason.as_str()),
        ("skipped", "unchanged since x")
    );
    assert!(store
        .accepted_payload("dlv", "p1", None)
        .await
        .unwrap()
        .is_some());
    assert_eq!(store.list_deliveries("dlv", 50).await.unwrap().len(), 4);
}
