//! Custom domains: which project a name serves (`domains/<name>.json`), answers to a
//! CA's HTTP-01 challenges (`acme/http-01/<token>`), and the redirects a domain asks
//! for (its other name, HTTPS).

use std::sync::Arc;

use bytes::Bytes;
use cdeploy_core::domains::DomainRoute;
use cdeploy_core::layout;
use cdeploy_storage::{get_json, StorageError};
use hyper::header::{self, HeaderValue};
use hyper::{Response, StatusCode};

use crate::body::{full, Body};
use crate::{Proxy, ProxyError};

/// Where a CA asks for HTTP-01 answers (RFC 8555 §8.3).
pub const ACME_CHALLENGE_PREFIX: &str = "/.well-known/acme-challenge/";

impl Proxy {
    /// What a custom domain serves, if it is one (cached for `route_ttl`, like routes, and
    /// on each serving thread as sites are: `crate::hot`).
    pub(crate) async fn custom_domain(
        &self,
        host: &str,
    ) -> Result<Option<Arc<DomainRoute>>, ProxyError> {
        // Read before the lookup: a change meanwhile leaves the memo stale, not wrong.
        let generation = self.generation.load(std::sync::atomic::Ordering::Acquire);
        if let Some(route) = crate::hot::domain(self.id, host, generation) {
            return Ok(Some(route));
        }
        // Boxed, as every miss of the memo is (`Proxy::site_of`).
        let route = Box::pin(self.domains.try_get_with_by_ref(host, async {
            let route =
                get_json::<DomainRoute>(self.storage.as_ref(), &layout::domain(host)).await?;
            Ok::<_, StorageError>(route.map(Arc::new))
        }))
        .await?;
        Ok(route.map(|r| crate::hot::keep_domain(self.id, host, generation, &r)))
    }

    /// The key authorization stored for an HTTP-01 `token`, if the platform is
    /// answering one (any host: the CA asks by the domain being validated).
    pub(crate) async fn acme_answer(
        &self,
        token: &str,
    ) -> Result<Option<Response<Body>>, ProxyError> {
        let valid = !token.is_empty()
            && token.len() <= 256
            && token
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !valid {
            return Ok(None);
        }
        let Some(answer) = self.storage.get(&layout::acme_http01(token)).await? else {
            return Ok(None);
        };
        Ok(Some(
            Response::builder()
                .status(StatusCode::OK)
                .header(header::CONTENT_TYPE, "text/plain")
                .header(header::CACHE_CONTROL, "no-store")
                .body(full(answer))
                .expect("valid response"),
        ))
    }

    /// Forgets what a custom domain serves (it was just added, moved or removed), on
    /// every thread.
    pub async fn invalidate_domain(&self, name: &str) {
        self.domains.invalidate(name).await;
        self.forgot();
    }
}

/// A permanent redirect to `scheme://host` + the request's path and query (`308`: the
/// method and body are kept).
pub(crate) fn redirect_to(scheme: &str, host: &str, uri: &hyper::Uri) -> Response<Body> {
    let rest = uri.path_and_query().map_or("/", |pq| pq.as_str());
    let location = format!("{scheme}://{host}{rest}");
    let mut resp = Response::builder()
        .status(StatusCode::PERMANENT_REDIRECT)
        .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(full(Bytes::from(format!("Redirecting to {location}\n"))))
        .expect("valid response");
    match HeaderValue::from_str(&location) {
        Ok(v) => {
            resp.headers_mut().insert(header::LOCATION, v);
        }
        Err(_) => *resp.status_mut() = StatusCode::BAD_REQUEST,
    }
    resp
}
