//! Build logs: live, complete, after a restart, and resumable without gaps or duplicates.

use std::time::Duration;

use cdeploy_tests::*;
use futures_util::StreamExt;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

const SLOW_BUILD: &str = "[build]\ncommand = \"for i in 1 2 3 4 5 6; do echo tick $i; echo warn $i >&2; sleep 0.4; done; mkdir -p dist; echo done > dist/index.html\"\n";

#[test]
fn logs_during_after_and_across_restart() {
    let mut server = Server::start();
    let tmp = tempfile::tempdir().unwrap();
    write_files(tmp.path(), &[("cdeploy.toml", SLOW_BUILD)]);
    let id = server.deploy_no_wait(tmp.path(), "ticker");
    server.wait_status(&id, Duration::from_secs(20), |s| s == "building");

    // Started while the build runs: follows it to the end.
    let live = server.cli(tmp.path(), &["logs", "ticker"]);
    live.assert_code(0);
    for i in 1..=6 {
        assert!(
            live.stdout.contains(&format!("tick {i}")),
            "{}",
            live.stdout
        );
        assert!(
            live.stdout.contains(&format!("warn {i}")),
            "{}",
            live.stdout
        );
    }
    assert!(live.stdout.contains("status   · ready"), "{}", live.stdout);

    let after = server.cli(tmp.path(), &["logs", "ticker"]);
    assert_eq!(
        after.stdout, live.stdout,
        "the whole log again after the build"
    );

    server.restart();
    let restarted = server.cli(tmp.path(), &["logs", "ticker", "--deployment", &id]);
    restarted.assert_code(0);
    assert_eq!(
        restarted.stdout, live.stdout,
        "the whole log after a server restart"
    );
}

#[test]
fn websocket_resume_has_no_gaps_or_duplicates() {
    resume_without_gaps(&Server::start());
}

#[test]
fn websocket_resume_through_the_redis_bus() {
    let redis = cdeploy_tests::services::Redis::start();
    resume_without_gaps(&Server::start_with(&["--bus", &redis.url()], &[]));
}

/// The event stream of a deployment after `after`, over `ws://`.
async fn events(
    api: &str,
    token: &str,
    id: &str,
    after: u64,
) -> tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>> {
    let url = format!("{api}/v1/deployments/{id}/events?after={after}");
    let mut req = url.into_client_request().unwrap();
    req.headers_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    tokio_tungstenite::connect_async(req).await.unwrap().0
}

/// Disconnects every 3 events and resumes with `after=`: every event once, in order; a
/// resume after the last event ends at once.
fn resume_without_gaps(server: &Server) {
    let tmp = tempfile::tempdir().unwrap();
    write_files(tmp.path(), &[("cdeploy.toml", SLOW_BUILD)]);
    let id = server.deploy_no_wait(tmp.path(), "resume");

    let rt = tokio::runtime::Runtime::new().unwrap();
    let (api, token) = (server.api().replace("http://", "ws://"), server.token());
    let seqs: Vec<u64> = rt.block_on(async {
        let mut seen = Vec::new();
        let mut after = 0;
        // Disconnect after every 3 events and resume from the last one seen.
        loop {
            let mut ws = events(&api, &token, &id, after).await;
            let mut got = 0;
            let mut terminal = false;
            while let Some(Ok(msg)) = ws.next().await {
                let Message::Text(t) = msg else { continue };
                let e: serde_json::Value = serde_json::from_str(t.as_str()).unwrap();
                after = e["seq"].as_u64().unwrap();
                seen.push(after);
                terminal = e["type"] == "status"
                    && ["ready", "failed", "canceled"].contains(&e["status"].as_str().unwrap());
                got += 1;
                if terminal || got == 3 {
                    break;
                }
            }
            drop(ws);
            if terminal {
                return seen;
            }
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
    });
    let expected: Vec<u64> = (1..=seqs.len() as u64).collect();
    assert_eq!(seqs, expected, "every event once, in order");
    assert!(
        seqs.len() > 12,
        "the build printed at least 12 lines: {seqs:?}"
    );

    // Resuming after the terminal event: nothing more, and the stream closes.
    let last = *seqs.last().unwrap();
    let ended = rt.block_on(async {
        let mut ws = events(&api, &token, &id, last).await;
        tokio::time::timeout(Duration::from_secs(5), async {
            while let Some(Ok(msg)) = ws.next().await {
                assert!(
                    !matches!(msg, Message::Text(_)),
                    "an event after the end: {msg:?}"
                );
            }
        })
        .await
    });
    assert!(ended.is_ok(), "the stream stayed open after the end");

    let d = server.deployment(&id);
    assert_eq!(d["status"], "ready");
    let unauthorized = server
        .client()
        .without_token()
        .get(&format!("/v1/deployments/{id}/events"));
    assert_eq!(unauthorized.status, 401);
}

/// `after=` far past the end of a running log: no event is sent, and the stream closes
/// as soon as the deployment ends (not when the log leaves memory minutes later).
#[test]
fn a_resume_past_the_end_closes_with_the_deployment() {
    let server = Server::start();
    let tmp = tempfile::tempdir().unwrap();
    write_files(tmp.path(), &[("cdeploy.toml", SLOW_BUILD)]);
    let id = server.deploy_no_wait(tmp.path(), "pastend");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (api, token) = (server.api().replace("http://", "ws://"), server.token());
    let started = std::time::Instant::now();
    rt.block_on(async {
        let mut ws = events(&api, &token, &id, 1_000_000).await;
        tokio::time::timeout(Duration::from_secs(60), async {
            while let Some(Ok(msg)) = ws.next().await {
                assert!(!matches!(msg, Message::Text(_)), "an event: {msg:?}");
            }
        })
        .await
        .expect("the stream closes once the deployment ends");
    });
    let d = server.deployment(&id);
    assert_eq!(d["status"], "ready", "{d}");
    assert!(started.elapsed() < Duration::from_secs(60));
}
