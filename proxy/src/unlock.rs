//! `POST /.cdeploy/unlock`: the password form's answer. Wrong guesses are limited per
//! visitor and per project, Argon2 checks run a few at once, and a right password earns
//! the preview cookie.

use std::net::{IpAddr, Ipv6Addr};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use cdeploy_core::manifest::Protection;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_LENGTH, RETRY_AFTER};
use hyper::{Request, Response, StatusCode};

use crate::body::Body;
use crate::handle::unix_now;
use crate::host::{request_host, Target};
use crate::{client_address, protect, serve, Proxy, ProxyError};

/// Wrong passwords a project's previews take from one address in a minute before the
/// form answers that address 429 (everyone else can still unlock).
pub const MAX_PASSWORD_FAILURES: u32 = 10;
/// Wrong passwords a project's previews take in a minute from all addresses together
/// before the form answers everyone 429: many addresses (an IPv6 block, a botnet) get
/// no more guesses than this.
pub const MAX_PROJECT_PASSWORD_FAILURES: u32 = 100;

/// One guess, counted against the visitor's and the project's limits before it is
/// checked, so guesses sent at once cannot all slip under the limit.
struct Guess {
    visitor: Arc<AtomicU32>,
    project: Arc<AtomicU32>,
    /// Either limit was already reached when it came.
    over_limit: bool,
}

impl Guess {
    /// Uncounts it: it was right, or it was never checked.
    fn give_back(&self) {
        self.visitor.fetch_sub(1, Ordering::Relaxed);
        self.project.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Proxy {
    /// `POST /.cdeploy/unlock` on a preview host: the password form's answer.
    pub async fn unlock(&self, req: Request<Incoming>, peer: IpAddr) -> Response<Body> {
        match self.try_unlock(req, peer).await {
            Ok(resp) => resp,
            Err(e) => serve::error_page(&e),
        }
    }

    async fn try_unlock(
        &self,
        req: Request<Incoming>,
        peer: IpAddr,
    ) -> Result<Response<Body>, ProxyError> {
        let host = request_host(&req)?;
        let visitor = client_address(req.headers(), peer, self.trusted_proxies);
        let Some((slug, target)) = self.parse_host(&host) else {
            return Err(ProxyError::UnknownHost);
        };
        if matches!(target, Target::Production) {
            return Err(ProxyError::NotFound);
        }
        let Some(p) = self.protection(slug).await? else {
            return Err(ProxyError::NotFound);
        };
        let secure = protect::behind_tls(req.headers());
        let (password, next) = read_form(req).await?;
        let guess = self.count_guess(slug, visitor).await;
        if guess.over_limit {
            return Ok(protect::challenge(
                &p,
                &next,
                Some("Too many wrong passwords: wait a minute and try again."),
                StatusCode::TOO_MANY_REQUESTS,
            ));
        }
        // Argon2 takes ~19 MiB and tens of milliseconds a check: a few at once, and the
        // rest are told to come back rather than queued (or held in memory).
        let Ok(_slot) = self.password_checks.try_acquire() else {
            guess.give_back();
            return Ok(busy(&p, &next));
        };
        if !password_matches(&p, password).await {
            return Ok(protect::challenge(
                &p,
                &next,
                Some("Wrong password."),
                StatusCode::UNAUTHORIZED,
            ));
        }
        guess.give_back();
        match protect::set_cookie(&p, slug, unix_now(), secure) {
            Some(cookie) => Ok(protect::redirect(Some(cookie), &protect::safe_next(&next))),
            None => Err(ProxyError::NotFound),
        }
    }

    /// Counts a guess at `slug`'s password from `visitor`, and from all addresses
    /// together (under the unspecified address). A right password gives its count back.
    async fn count_guess(&self, slug: &str, visitor: IpAddr) -> Guess {
        let counter = |key: (String, IpAddr)| {
            self.password_failures
                .get_with(key, async { Arc::new(Default::default()) })
        };
        let failures = counter((slug.to_string(), visitor)).await;
        let all = counter((slug.to_string(), Ipv6Addr::UNSPECIFIED.into())).await;
        let mine = failures.fetch_add(1, Ordering::Relaxed);
        let everyone = all.fetch_add(1, Ordering::Relaxed);
        Guess {
            visitor: failures,
            project: all,
            over_limit: mine >= MAX_PASSWORD_FAILURES || everyone >= MAX_PROJECT_PASSWORD_FAILURES,
        }
    }
}

/// The form's password and the page to go back to, from a body of at most
/// [`protect::MAX_FORM_BYTES`].
async fn read_form(req: Request<Incoming>) -> Result<(String, String), ProxyError> {
    let declared = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > protect::MAX_FORM_BYTES) {
        return Err(ProxyError::BadRequest("the form is too large"));
    }
    let body = http_body_util::Limited::new(req.into_body(), protect::MAX_FORM_BYTES)
        .collect()
        .await
        .map_err(|_| ProxyError::BadRequest("the form is too large or was cut off"))?
        .to_bytes();
    Ok(protect::parse_form(&body))
}

/// Every password check slot is taken: come back in a second.
fn busy(p: &Protection, next: &str) -> Response<Body> {
    let mut busy = protect::challenge(
        p,
        next,
        Some("Busy checking passwords: try again in a moment."),
        StatusCode::SERVICE_UNAVAILABLE,
    );
    busy.headers_mut().insert(RETRY_AFTER, HeaderValue::from(1));
    busy
}

/// Argon2, off the async threads.
async fn password_matches(p: &Arc<Protection>, password: String) -> bool {
    let checked = p.clone();
    tokio::task::spawn_blocking(move || protect::password_matches(&checked, &password))
        .await
        .unwrap_or(false)
}
