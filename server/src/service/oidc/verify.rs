//! An identity token checked: its issuer's keys (found by OpenID discovery, kept 10
//! minutes, fetched again for a key id they lack), its signature, issuer, audience and
//! times. What it claims is the caller's to compare.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Map, Value};
use tokio::sync::Mutex;

/// How long an issuer's keys are trusted before they are fetched again.
const KEYS_TTL: Duration = Duration::from_secs(600);
/// An issuer's keys are fetched again for an unknown key id at most this often.
const REFETCH_EVERY: Duration = Duration::from_secs(30);
/// Clock skew allowed on `exp`, `nbf` and `iat`.
pub const LEEWAY_SECS: u64 = 60;
/// The largest identity token read.
const MAX_TOKEN: usize = 16 * 1024;

/// The claims of a verified token.
pub type Claims = Map<String, Value>;

/// Issuers' keys, fetched as needed.
pub struct Issuers {
    http: reqwest::Client,
    keys: Mutex<HashMap<String, Fetched>>,
}

struct Fetched {
    at: Instant,
    set: Arc<JwkSet>,
}

impl Default for Issuers {
    fn default() -> Self {
        Issuers {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .redirect(reqwest::redirect::Policy::limited(3))
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
    pub async fn verify(
        &self,
        token: &str,
        issuer: &str,
        audience: &str,
    ) -> Result<Claims, String> {
        let header = jsonwebtoken::decode_header(token)
            .map_err(|e| format!("the token's header does not read: {e}"))?;
        const ALLOWED: [Algorithm; 6] = [
            Algorithm::RS256,
            Algorithm::RS384,
            Algorithm::RS512,
            Algorithm::PS256,
            Algorithm::ES256,
            Algorithm::ES384,
        ];
        if !ALLOWED.contains(&header.alg) {
            return Err(format!(
                "the token is signed with {:?}; RS256, RS384, RS512, PS256, ES256 or ES384 are taken",
                header.alg
            ));
        }
        let kid = header.kid.ok_or("the token names no key (kid)")?;
        let key = self.key(issuer, &kid).await?;
        let mut v = Validation::new(header.alg);
        v.set_audience(&[audience]);
        v.set_issuer(&[issuer]);
        v.set_required_spec_claims(&["exp", "iat", "iss", "aud"]);
        v.leeway = LEEWAY_SECS;
        v.validate_nbf = true;
        let data = jsonwebtoken::decode::<Claims>(token, &key, &v).map_err(|e| {
            use jsonwebtoken::errors::ErrorKind as K;
            match e.kind() {
                K::InvalidSignature => "the signature does not verify with the issuer's key".into(),
                K::ExpiredSignature => "the token expired".into(),
                K::ImmatureSignature => "the token is not valid yet (nbf)".into(),
                K::InvalidAudience => {
                    format!("the token's audience (aud) is not this server ({audience})")
                }
                K::InvalidIssuer => format!("the token's issuer is not {issuer}"),
                K::MissingRequiredClaim(c) => format!("the token has no {c} claim"),
                _ => format!("the token does not verify: {e}"),
            }
        })?;
        Ok(data.claims)
    }

    /// The issuer's key `kid`, fetching its keys when they are old or lack it.
    async fn key(&self, issuer: &str, kid: &str) -> Result<DecodingKey, String> {
        let mut keys = self.keys.lock().await;
        let fresh = keys.get(issuer).is_some_and(|f| f.at.elapsed() < KEYS_TTL);
        let has =
            |k: &HashMap<String, Fetched>| k.get(issuer).and_then(|f| f.set.find(kid).cloned());
        let mut jwk = has(&keys).filter(|_| fresh);
        let may_refetch = keys
            .get(issuer)
            .is_none_or(|f| !fresh || f.at.elapsed() >= REFETCH_EVERY);
        if jwk.is_none() && may_refetch {
            let set = self.fetch(issuer).await?;
            keys.insert(
                issuer.to_string(),
                Fetched {
                    at: Instant::now(),
                    set: Arc::new(set),
                },
            );
            jwk = has(&keys);
        }
        let jwk = jwk.ok_or_else(|| format!("the issuer's keys have no key {kid:?}"))?;
        DecodingKey::from_jwk(&jwk)
            .map_err(|e| format!("the issuer's key {kid:?} does not read: {e}"))
    }

    /// The issuer's keys, by OpenID discovery.
    async fn fetch(&self, issuer: &str) -> Result<JwkSet, String> {
        let discovery = format!(
            "{}/.well-known/openid-configuration",
            issuer.trim_end_matches('/')
        );
        let get = |url: String| async move {
            let resp = self
                .http
                .get(&url)
                .send()
                .await
                .map_err(|e| format!("cannot reach {url}: {}", e.without_url()))?;
            if !resp.status().is_success() {
                return Err(format!("{url} answered {}", resp.status()));
            }
            resp.json::<Value>()
                .await
                .map_err(|_| format!("{url} did not answer JSON"))
        };
        let config = get(discovery.clone()).await?;
        let jwks_uri = config["jwks_uri"]
            .as_str()
            .ok_or_else(|| format!("{discovery} names no jwks_uri"))?
            .to_string();
        let set = get(jwks_uri.clone()).await?;
        serde_json::from_value(set).map_err(|e| format!("{jwks_uri} is not a JWK set: {e}"))
    }
}
