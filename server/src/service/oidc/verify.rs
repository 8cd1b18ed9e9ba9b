//! An identity token checked: its issuer's keys (found by OpenID discovery, kept 10
//! minutes, fetched again for a key id they lack at most every 30 s), its signature,
//! issuer, audience and times. What it claims is the caller's to compare.
//!
//! Fetching an issuer's keys never holds up another exchange: no lock is held across
//! the network, one fetch per issuer runs at a time (others use the keys they have),
//! a failure is remembered for the same 30 s, and a fetch is bounded (5 s, 64 KiB per
//! document, no redirects, https unless the issuer is on loopback, the key set on the
//! issuer's own origin, the discovery document naming the issuer).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Map, Value};
use std::sync::Mutex;

/// How long an issuer's keys are trusted before they are fetched again.
const KEYS_TTL: Duration = Duration::from_secs(600);
/// An issuer's keys are fetched again for an unknown key id at most this often.
const REFETCH_EVERY: Duration = Duration::from_secs(30);
/// Clock skew allowed on `exp`, `nbf` and `iat`.
pub const LEEWAY_SECS: u64 = 60;
/// The largest identity token read.
const MAX_TOKEN: usize = 16 * 1024;
/// The largest discovery document or key set read.
const MAX_DOCUMENT: usize = 64 * 1024;

/// The claims of a verified token.
pub type Claims = Map<String, Value>;

/// Issuers' keys, fetched as needed.
pub struct Issuers {
    http: reqwest::Client,
    keys: Mutex<HashMap<String, Fetched>>,
}

/// What is known of an issuer's keys.
#[derive(Default)]
struct Fetched {
    /// The keys, and when they were fetched.
    set: Option<(Instant, Arc<JwkSet>)>,
    /// The last fetch started then; none starts within [`REFETCH_EVERY`] of it.
    tried: Option<Instant>,
    /// Why the last fetch failed.
    error: Option<String>,
}

impl Default for Issuers {
    fn default() -> Self {
        Issuers {
            http: reqwest::Client::builder()
                .connect_timeout(Duration::from_secs(3))
                .timeout(Duration::from_secs(5))
                .redirect(reqwest::redirect::Policy::none())
                .user_agent(concat!("cdeploy/", env!("CARGO_PKG_VERSION")))
                .build()
                .expect("an HTTP client with default TLS builds"),
            keys: Mutex::new(HashMap::new()),
        }
    }
}

/// The `iss` a token names, read before anything is verified (to find what verifies it).
pub fn named_issuer(token: &str) -> Result<String, String> {
    use base64::Engine;
    if token.len() > MAX_TOKEN {
        return Err(format!("the token is over {MAX_TOKEN} bytes"));
    }
    let payload = token
        .split('.')
        .nth(1)
        .ok_or("the token is not a JWT (header.payload.signature)")?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .map_err(|_| "the token's payload is not base64url")?;
    let claims: Claims =
        serde_json::from_slice(&bytes).map_err(|_| "the token's payload is not a JSON object")?;
    match claims.get("iss") {
        Some(Value::String(iss)) => Ok(iss.clone()),
        _ => Err("the token names no issuer (iss)".into()),
    }
}

impl Issuers {
    /// Verifies `token` as one `issuer` signed for `audience`; its claims, or why not.
    /// Refusals come with their kind (`expired`, `audience`, `signature`, …).
    pub async fn verify(
        &self,
        token: &str,
        issuer: &str,
        audience: &str,
    ) -> Result<Claims, (&'static str, String)> {
        let header = jsonwebtoken::decode_header(token)
            .map_err(|e| ("token", format!("the token's header does not read: {e}")))?;
        const ALLOWED: [Algorithm; 6] = [
            Algorithm::RS256,
            Algorithm::RS384,
            Algorithm::RS512,
            Algorithm::PS256,
            Algorithm::ES256,
            Algorithm::ES384,
        ];
        if !ALLOWED.contains(&header.alg) {
            return Err((
                "algorithm",
                format!(
                    "the token is signed with {:?}; RS256, RS384, RS512, PS256, ES256 or ES384 are taken",
                    header.alg
                ),
            ));
        }
        let kid = header
            .kid
            .ok_or(("key", "the token names no key (kid)".to_string()))?;
        let key = self.key(issuer, &kid).await.map_err(|why| ("key", why))?;
        let mut v = Validation::new(header.alg);
        v.set_audience(&[audience]);
        v.set_issuer(&[issuer]);
        v.set_required_spec_claims(&["exp", "iat", "iss", "aud"]);
        v.leeway = LEEWAY_SECS;
        v.validate_nbf = true;
        let data = jsonwebtoken::decode::<Claims>(token, &key, &v).map_err(|e| {
            use jsonwebtoken::errors::ErrorKind as K;
            match e.kind() {
                K::InvalidSignature => (
                    "signature",
                    "the signature does not verify with the issuer's key".into(),
                ),
                K::ExpiredSignature => ("expired", "the token expired".into()),
                K::ImmatureSignature => ("expired", "the token is not valid yet (nbf)".into()),
                K::InvalidAudience => (
                    "audience",
                    format!("the token's audience (aud) is not this server ({audience})"),
                ),
                K::InvalidIssuer => ("issuer", format!("the token's issuer is not {issuer}")),
                K::MissingRequiredClaim(c) => ("claims", format!("the token has no {c} claim")),
                _ => ("token", format!("the token does not verify: {e}")),
            }
        })?;
        Ok(data.claims)
    }

    /// The issuer's key `kid`, fetching its keys when they are old or lack it (unless a
    /// fetch started within [`REFETCH_EVERY`]: then what is known answers).
    async fn key(&self, issuer: &str, kid: &str) -> Result<DecodingKey, String> {
        let (known, fetch) = {
            let mut keys = self.keys.lock().expect("not poisoned");
            let entry = keys.entry(issuer.to_string()).or_default();
            let fresh = entry
                .set
                .as_ref()
                .filter(|(at, _)| at.elapsed() < KEYS_TTL)
                .and_then(|(_, set)| set.find(kid).cloned());
            if let Some(jwk) = fresh {
                return decoding_key(&jwk, kid);
            }
            let fetch = entry.tried.is_none_or(|t| t.elapsed() >= REFETCH_EVERY);
            if fetch {
                entry.tried = Some(Instant::now());
            }
            let stale = entry
                .set
                .as_ref()
                .and_then(|(_, set)| set.find(kid).cloned());
            (stale.ok_or_else(|| entry.error.clone()), fetch)
        };
        if !fetch {
            return match known {
                Ok(jwk) => decoding_key(&jwk, kid),
                Err(Some(why)) => Err(format!("the issuer's keys cannot be fetched ({why})")),
                Err(None) => Err(format!("the issuer's keys have no key {kid:?}")),
            };
        }
        let fetched = self.fetch(issuer).await;
        let mut keys = self.keys.lock().expect("not poisoned");
        let entry = keys.entry(issuer.to_string()).or_default();
        match fetched {
            Ok(set) => {
                let set = Arc::new(set);
                entry.set = Some((Instant::now(), set.clone()));
                entry.error = None;
                let jwk = set
                    .find(kid)
                    .cloned()
                    .ok_or_else(|| format!("the issuer's keys have no key {kid:?}"))?;
                decoding_key(&jwk, kid)
            }
            Err(why) => {
                entry.error = Some(why.clone());
                // Keys fetched before still answer for what they hold.
                match known {
                    Ok(jwk) => decoding_key(&jwk, kid),
                    Err(_) => Err(format!("the issuer's keys cannot be fetched ({why})")),
                }
            }
        }
    }

    /// The issuer's keys, by OpenID discovery: the discovery document must name the
    /// issuer, and its key set be on the issuer's origin.
    async fn fetch(&self, issuer: &str) -> Result<JwkSet, String> {
        let base = url::Url::parse(issuer).map_err(|_| "the issuer is not a URL".to_string())?;
        if !issuer_scheme_allowed(&base) {
            return Err("the issuer is not https".into());
        }
        let discovery = format!(
            "{}/.well-known/openid-configuration",
            issuer.trim_end_matches('/')
        );
        let config = self.document(&discovery).await?;
        if config["issuer"].as_str() != Some(issuer) {
            return Err(format!("{discovery} names another issuer"));
        }
        let jwks_uri = config["jwks_uri"]
            .as_str()
            .ok_or_else(|| format!("{discovery} names no jwks_uri"))?;
        let same_origin = url::Url::parse(jwks_uri).is_ok_and(|u| u.origin() == base.origin());
        if !same_origin {
            return Err(format!(
                "{discovery}'s jwks_uri is not on the issuer's origin"
            ));
        }
        let set = self.document(jwks_uri).await?;
        serde_json::from_value(set).map_err(|e| format!("{jwks_uri} is not a JWK set: {e}"))
    }

    /// A JSON document of at most [`MAX_DOCUMENT`] bytes.
    async fn document(&self, url: &str) -> Result<Value, String> {
        let mut resp = self
            .http
            .get(url)
            .send()
            .await
            .map_err(|e| format!("cannot reach {url}: {}", e.without_url()))?;
        if !resp.status().is_success() {
            return Err(format!("{url} answered {}", resp.status()));
        }
        let mut body = Vec::new();
        while let Some(chunk) = resp
            .chunk()
            .await
            .map_err(|e| format!("{url}: {}", e.without_url()))?
        {
            body.extend_from_slice(&chunk);
            if body.len() > MAX_DOCUMENT {
                return Err(format!("{url} is over {} KiB", MAX_DOCUMENT / 1024));
            }
        }
        serde_json::from_slice(&body).map_err(|_| format!("{url} did not answer JSON"))
    }
}

/// Issuers are https; http only on loopback (a test issuer). Trusts are checked with
/// it when added, and every fetch of keys again.
pub fn issuer_scheme_allowed(url: &url::Url) -> bool {
    let loopback = matches!(url.host_str(), Some("127.0.0.1" | "localhost" | "[::1]"));
    url.scheme() == "https" || (url.scheme() == "http" && loopback)
}

fn decoding_key(jwk: &jsonwebtoken::jwk::Jwk, kid: &str) -> Result<DecodingKey, String> {
    DecodingKey::from_jwk(jwk).map_err(|e| format!("the issuer's key {kid:?} does not read: {e}"))
}
