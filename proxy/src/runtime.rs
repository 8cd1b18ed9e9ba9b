//! Requests for a server app's server: everything of a deployment with a server that no
//! static file answers (and every request that is not `GET` or `HEAD`) goes to the
//! deployment's runtime ([`cdeploy_runtime::Runtimes`]), which starts it if it sleeps.
//!
//! The server gets the visitor's `Host` (it builds its own links from it), with
//! `X-Forwarded-Host`, `X-Forwarded-Proto`, `X-Forwarded-For` and an `X-Request-Id`
//! that its log line in the runtime's log carries too; hop-by-hop headers and the
//! preview-protection cookie are not passed on. Its answer loses hop-by-hop headers,
//! `Clear-Site-Data`, and the `Domain` of its cookies (a site must not set cookies for
//! the platform's other sites). A server that cannot start or crashed answers `502`,
//! at once; the lease on it is held until its answer's body is relayed, so it is
//! never stopped mid-answer.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use cdeploy_core::server::ServerSpec;
use cdeploy_runtime::{RuntimeError, Runtimes};
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Request, Response};

use crate::body::Body;
use crate::upstream::{relay, strip_hop_by_hop, Forward};
use crate::ProxyError;

/// Longest wait for the next bytes of a server's answer.
const READ_TIMEOUT: Duration = Duration::from_secs(300);

/// The proxy's way to deployments' servers.
pub(crate) struct RuntimeRelay {
    runtimes: Runtimes,
    client: reqwest::Client,
}

/// Who asked, for the forwarded headers and the runtime's log.
pub(crate) struct Visit<'a> {
    pub host: &'a str,
    pub tls: bool,
    pub visitor: Option<std::net::IpAddr>,
    /// The deployment's own address (`CDEPLOY_URL` for its server).
    pub url: String,
}

impl RuntimeRelay {
    pub(crate) fn new(runtimes: Runtimes) -> RuntimeRelay {
        let client = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(5))
            .read_timeout(READ_TIMEOUT)
            .pool_idle_timeout(Duration::from_secs(30))
            .build()
            .expect("the runtime client builds");
        RuntimeRelay { runtimes, client }
    }

    /// Sends `req` to deployment `id`'s server (started if asleep) and relays its answer.
    pub(crate) async fn forward<B: Forward>(
        &self,
        req: Request<B>,
        (slug, id, spec): (&str, &str, &ServerSpec),
        visit: Visit<'_>,
    ) -> Result<Response<Body>, ProxyError> {
        let env = vec![("CDEPLOY_URL".to_string(), visit.url.clone())];
        let lease = self
            .runtimes
            .lease((slug, id), spec, env)
            .await
            .map_err(|e| match &e {
                RuntimeError::Busy(_) => {
                    ProxyError::Busy("too many site servers are running; try again shortly")
                }
                RuntimeError::Crashed { retry_in, .. } => {
                    ProxyError::Runtime(e.to_string(), Some(*retry_in))
                }
                RuntimeError::StartFailed(_) => ProxyError::Runtime(e.to_string(), Some(1)),
            })?;
        let started = Instant::now();
        let request_id = request_id();
        let (parts, body) = req.into_parts();
        let head = parts.method == hyper::Method::HEAD;
        let path = parts
            .uri
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/")
            .to_string();
        let url = format!("http://{}{path}", lease.addr);
        let headers = outgoing(parts.headers, &visit, &request_id);
        let line = |status: &str| {
            format!(
                "{} {} → {status} in {} ms (request {request_id})",
                parts.method,
                shown(&path),
                started.elapsed().as_millis()
            )
        };
        let mut request = self
            .client
            .request(parts.method.clone(), url)
            .headers(headers);
        if let Some(body) = body.into_upstream() {
            request = request.body(body);
        }
        let sent = match request.send().await {
            Ok(sent) => sent,
            Err(e) => {
                self.runtimes.note(id, &line(&format!("no answer ({e})")));
                return Err(ProxyError::Runtime(
                    format!("the site's server did not answer: {e}"),
                    None,
                ));
            }
        };
        self.runtimes.note(id, &line(sent.status().as_str()));
        Ok(relay(sent, lease, head))
    }
}

/// A path as the log shows it: at most 200 characters.
fn shown(path: &str) -> &str {
    match path.char_indices().nth(200) {
        Some((i, _)) => &path[..i],
        None => path,
    }
}

/// The visitor's headers as the server gets them.
fn outgoing(mut headers: HeaderMap, visit: &Visit<'_>, request_id: &str) -> HeaderMap {
    strip_hop_by_hop(&mut headers);
    crate::protect::strip_cookie(&mut headers);
    if let Ok(v) = HeaderValue::from_str(visit.host) {
        headers.insert(header::HOST, v.clone());
        headers.insert("x-forwarded-host", v);
    }
    headers.insert(
        "x-forwarded-proto",
        HeaderValue::from_static(if visit.tls { "https" } else { "http" }),
    );
    if let Some(ip) = visit.visitor {
        if let Ok(v) = HeaderValue::from_str(&ip.to_string()) {
            headers.insert("x-forwarded-for", v);
        }
    }
    if let Ok(v) = HeaderValue::from_str(request_id) {
        headers.insert("x-request-id", v);
    }
    headers
}

/// A request id: unique in this process, not guessable from the last one.
fn request_id() -> String {
    use std::hash::BuildHasher;
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    static KEY: std::sync::OnceLock<std::collections::hash_map::RandomState> =
        std::sync::OnceLock::new();
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let h = KEY.get_or_init(Default::default).hash_one(n);
    format!("{h:016x}")
}

/// Where a replica's servers get their stored variables: the document the control plane
/// writes for the deployment's project and target (`runtime-env/<slug>/<target>.json`),
/// sealed with the protection keyring this proxy shares with the servers. No document:
/// none; a document and no key: the server does not start, saying why (it would run
/// without its variables).
pub struct StoredEnv {
    pub storage: cdeploy_storage::DynStorage,
    pub keys: Option<std::sync::Arc<cdeploy_core::seal::Keyring>>,
}

#[async_trait::async_trait]
impl cdeploy_runtime::EnvSource for StoredEnv {
    async fn env(&self, deployment: &str) -> Result<Vec<(String, String)>, String> {
        use cdeploy_core::{layout, manifest::Manifest, server::SealedEnv};
        let storage = self.storage.as_ref();
        let manifest: Manifest = cdeploy_storage::get_json(storage, &layout::manifest(deployment))
            .await
            .map_err(|e| format!("cannot read the deployment: {e}"))?
            .ok_or("the deployment is gone")?;
        let target = match manifest.preview {
            Some(true) => "preview",
            Some(false) => "production",
            // Made before manifests said which: its target is unknown here.
            None => return Ok(Vec::new()),
        };
        let key = layout::runtime_env(&manifest.slug, target);
        let doc: Option<SealedEnv> = cdeploy_storage::get_json(storage, &key)
            .await
            .map_err(|e| format!("cannot read its stored variables: {e}"))?;
        let Some(doc) = doc else {
            return Ok(Vec::new());
        };
        let keys = self.keys.as_deref().ok_or(
            "the project has stored variables for its server, sealed with the protection key, \
             and this proxy has none: give it CDEPLOY_PROTECTION_KEY, as the servers have",
        )?;
        Ok(doc
            .open(&manifest.slug, target, keys)?
            .into_iter()
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use cdeploy_core::layout;
    use cdeploy_core::seal::Keyring;
    use cdeploy_core::server::SealedEnv;
    use cdeploy_runtime::EnvSource;
    use cdeploy_storage::{DynStorage, LocalStorage};

    use super::StoredEnv;

    #[tokio::test]
    async fn a_replica_opens_its_targets_variables_and_only_with_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let storage: DynStorage = Arc::new(LocalStorage::open(dir.path()).unwrap());
        let s = storage.as_ref();
        crate::tests::deploy(
            s,
            "app",
            "dep1",
            &[("/index.html", b"x")],
            Default::default(),
        )
        .await;
        let keys = Arc::new(Keyring::parse(&Keyring::generate()).unwrap());
        let source = |keys: Option<Arc<Keyring>>| StoredEnv {
            storage: storage.clone(),
            keys,
        };
        // No document: no variables.
        assert!(source(Some(keys.clone()))
            .env("dep1")
            .await
            .unwrap()
            .is_empty());
        let vars = BTreeMap::from([("API".to_string(), "v1".to_string())]);
        let put = |slug: &str, target: &str, doc: &SealedEnv| {
            let key = layout::runtime_env(slug, target);
            let doc = doc.clone();
            let storage = storage.clone();
            async move {
                cdeploy_storage::put_json(storage.as_ref(), &key, &doc)
                    .await
                    .unwrap()
            }
        };
        put(
            "app",
            "production",
            &SealedEnv::seal("app", "production", &vars, &keys),
        )
        .await;
        assert_eq!(
            source(Some(keys.clone())).env("dep1").await.unwrap(),
            vec![("API".to_string(), "v1".to_string())]
        );
        let no_key = source(None).env("dep1").await.unwrap_err();
        assert!(no_key.contains("CDEPLOY_PROTECTION_KEY"), "{no_key}");
        // Another project's document copied into this one's place does not open.
        put(
            "app",
            "production",
            &SealedEnv::seal("other", "production", &vars, &keys),
        )
        .await;
        let moved = source(Some(keys.clone())).env("dep1").await.unwrap_err();
        assert!(moved.contains("do not open"), "{moved}");
        // Nor the preview target's.
        put(
            "app",
            "production",
            &SealedEnv::seal("app", "preview", &vars, &keys),
        )
        .await;
        assert!(source(Some(keys.clone())).env("dep1").await.is_err());
        assert!(source(None).env("gone").await.unwrap_err().contains("gone"));
        // A manifest from before it said its target: no variables, not production's.
        put(
            "app",
            "production",
            &SealedEnv::seal("app", "production", &vars, &keys),
        )
        .await;
        let key = layout::manifest("dep1");
        let mut old: cdeploy_core::manifest::Manifest =
            cdeploy_storage::get_json(s, &key).await.unwrap().unwrap();
        old.preview = None;
        cdeploy_storage::put_json(s, &key, &old).await.unwrap();
        assert!(source(Some(keys)).env("dep1").await.unwrap().is_empty());
    }
}
