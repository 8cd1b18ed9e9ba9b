//! `POST /v1/oidc/exchange`: an identity token traded for a deploy token of one project,
//! or refused. The caller is told why in words that reveal no trust's values (anyone
//! can mint a token from a public CI and probe); the audit log keeps the whole reason
//! and the token's claims, cleaned of control characters and cut to size.

use std::collections::BTreeMap;

use cdeploy_core::api::{ExchangeAnswer, ExchangeRequest, Role};
use cdeploy_core::ids;
use serde_json::Value;

use super::{verify, TOKEN_NAME, TOKEN_SECS};
use crate::db::{AuditRow, TokenRow, TrustRow};
use crate::service::App;

/// The longest audit detail an exchange writes.
const MAX_DETAIL: usize = 4000;

/// Why an exchange was refused.
pub struct Refused {
    /// What the caller is told.
    pub public: String,
    /// The whole reason, for the audit log.
    detail: String,
    /// The kind of refusal (refusals of one kind within a minute share an audit entry):
    /// `expired`, `replay`, `claim:<name>` (a name from the project's own trusts), ….
    kind: String,
    claims: Option<verify::Claims>,
}

impl Refused {
    fn new(kind: impl Into<String>, public: impl Into<String>) -> Refused {
        let public = public.into();
        Refused {
            detail: public.clone(),
            public,
            kind: kind.into(),
            claims: None,
        }
    }

    fn with_detail(mut self, detail: String) -> Refused {
        self.detail = detail;
        self
    }

    fn with_claims(mut self, claims: &verify::Claims) -> Refused {
        self.claims = Some(claims.clone());
        self
    }
}

/// What an accepted exchange made.
struct Traded {
    answer: ExchangeAnswer,
    claims: verify::Claims,
    row: TokenRow,
}

/// Trades an identity token for a deploy token of the project, or says why not. Every
/// outcome is in the audit log.
pub async fn exchange(app: &App, req: &ExchangeRequest) -> Result<ExchangeAnswer, Refused> {
    let outcome = trade(app, req).await;
    let slug = ids::validate_slug(&req.project)
        .is_ok()
        .then_some(req.project.as_str());
    match &outcome {
        Ok(t) => {
            let detail = format!(
                "deploy token for {} ({} min) from {}: {}",
                req.project,
                TOKEN_SECS / 60,
                shown(t.claims.get("iss").and_then(Value::as_str).unwrap_or("?")),
                claims_text(&t.claims)
            );
            let entry = (201, Some(t.answer.trust.clone()), detail, "accepted");
            audit(app, slug, entry, Some(&t.row)).await;
        }
        Err(r) => {
            let claims = r
                .claims
                .as_ref()
                .map(|c| format!("; claims: {}", claims_text(c)))
                .unwrap_or_default();
            let detail = format!("refused: {}{claims}", r.detail);
            audit(app, slug, (401, None, detail, &r.kind), None).await;
        }
    }
    outcome.map(|t| t.answer)
}

/// A value the caller chose, as the audit log and answers show it: quoted, its
/// control characters escaped, at most 200 characters.
fn shown(text: &str) -> String {
    let cut: String = text.chars().take(200).collect();
    format!("{cut:?}")
}

async fn trade(app: &App, req: &ExchangeRequest) -> Result<Traded, Refused> {
    let audience = app.config.api_url.as_deref().ok_or_else(|| {
        Refused::new(
            "server",
            "this server has no --api-url: the audience CI identity tokens must name",
        )
    })?;
    let issuer = verify::named_issuer(&req.token).map_err(|why| Refused::new("token", why))?;
    let untrusted = || {
        Refused::new(
            "untrusted",
            "the project does not trust this token's issuer",
        )
        .with_detail(format!(
            "project {} does not trust issuer {}",
            shown(&req.project),
            shown(&issuer)
        ))
    };
    if ids::validate_slug(&req.project).is_err() {
        return Err(untrusted());
    }
    match app.store.get_project(&req.project).await {
        Ok(Some(p)) if !p.deleting => {}
        Ok(_) => return Err(untrusted()),
        Err(e) => {
            return Err(Refused::new(
                "server",
                format!("cannot read the project: {e}"),
            ))
        }
    }
    let trusts: Vec<TrustRow> = match app.store.list_trusts(&req.project).await {
        Ok(all) => all.into_iter().filter(|t| t.issuer == issuer).collect(),
        Err(e) => {
            return Err(Refused::new(
                "server",
                format!("cannot read the trusts: {e}"),
            ))
        }
    };
    if trusts.is_empty() {
        return Err(untrusted());
    }
    let claims = app
        .oidc
        .verify(&req.token, &issuer, audience)
        .await
        .map_err(|(kind, why)| Refused::new(kind, why))?;
    let trust = matching(&trusts, &claims).map_err(|r| r.with_claims(&claims))?;
    spend(app, &issuer, &claims)
        .await
        .map_err(|r| r.with_claims(&claims))?;
    let (token, row) = issue(app, &req.project, &claims).await.map_err(|e| {
        Refused::new("server", format!("cannot store the deploy token: {e}")).with_claims(&claims)
    })?;
    let answer = ExchangeAnswer {
        token,
        project: req.project.clone(),
        expires_at: row.expires_at.clone().unwrap_or_default(),
        trust: trust.id.clone(),
    };
    Ok(Traded {
        answer,
        claims,
        row,
    })
}

/// Spends the token's `jti`, kept past its expiry and the clock skew allowed (`exp`
/// may be fractional, RFC 7519; a far one is held to 2100): refused when it has none or
/// was spent already (a replay).
async fn spend(app: &App, issuer: &str, claims: &verify::Claims) -> Result<(), Refused> {
    let jti = claims
        .get("jti")
        .and_then(Value::as_str)
        .filter(|j| !j.is_empty());
    let Some(jti) = jti else {
        return Err(Refused::new(
            "jti",
            "the token has no jti: it could not be told from a replay",
        ));
    };
    if jti.len() > 256 {
        return Err(Refused::new(
            "jti",
            "the token's jti is over 256 characters",
        ));
    }
    const YEAR_2100: f64 = 4_102_444_800.0;
    let exp = claims.get("exp").and_then(Value::as_f64).unwrap_or(0.0);
    let exp = exp.ceil().clamp(0.0, YEAR_2100) as i64;
    let keep_until = (exp + verify::LEEWAY_SECS as i64 + 60).saturating_mul(1_000_000);
    let now_us = chrono::Utc::now().timestamp_micros();
    match app
        .store
        .spend_identity_token(issuer, jti, keep_until, now_us)
        .await
    {
        Ok(true) => Ok(()),
        Ok(false) => Err(Refused::new(
            "replay",
            "the token was used already (its jti): a replay",
        )),
        Err(e) => Err(Refused::new(
            "server",
            format!("cannot record the token: {e}"),
        )),
    }
}

/// A deploy token of `slug` for [`TOKEN_SECS`], named after the token's `sub`; the
/// ones such exchanges made that expired a day ago go.
async fn issue(
    app: &App,
    slug: &str,
    claims: &verify::Claims,
) -> crate::db::DbResult<(String, TokenRow)> {
    let token = ids::generate_token();
    let sub = claims.get("sub").and_then(Value::as_str).unwrap_or("");
    let sub: String = sub.chars().filter(|c| !c.is_control()).collect();
    let name: String = format!("{TOKEN_NAME}{sub}").chars().take(64).collect();
    let row = TokenRow::new(
        &ids::token_hash(&token),
        &name,
        Role::Deploy,
        vec![slug.to_string()],
        Some(TOKEN_SECS),
    );
    let day_ago = chrono::Utc::now().timestamp_micros() - 86_400_000_000;
    app.store.prune_expired_tokens(TOKEN_NAME, day_ago).await?;
    app.store.insert_token(&row).await?;
    Ok((token, row))
}

/// The first trust whose every rule the claims meet; or why none does: the caller is
/// told which claim of the closest trust differs, the audit log also its values.
fn matching<'t>(trusts: &'t [TrustRow], claims: &verify::Claims) -> Result<&'t TrustRow, Refused> {
    let mut closest: Option<(usize, Refused)> = None;
    for t in trusts {
        let misses: Vec<Refused> = t
            .claims
            .iter()
            .filter_map(|(k, want)| {
                let public = format!("the token's {k} claim does not match the project's trust");
                match claims.get(k).and_then(scalar) {
                    Some(got) if &got == want => None,
                    Some(got) => Some(Refused::new(format!("claim:{k}"), public).with_detail(
                        format!(
                            "claim {k} is {}, the trust ({}) wants {want:?}",
                            shown(&got),
                            t.id
                        ),
                    )),
                    None => Some(
                        Refused::new(format!("claim:{k}"), public).with_detail(format!(
                            "the token has no {k} claim, which the trust ({}) binds",
                            t.id
                        )),
                    ),
                }
            })
            .collect();
        let n = misses.len();
        let Some(first) = misses.into_iter().next() else {
            return Ok(t);
        };
        if closest.as_ref().is_none_or(|(m, _)| n < *m) {
            closest = Some((n, first));
        }
    }
    Err(closest
        .map(|(_, r)| r)
        .unwrap_or_else(|| Refused::new("claim", "no trust matched")))
}

/// A claim compared as a string: strings as they are, numbers and booleans as written.
fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// The token's scalar claims for the audit log (`k=v`, sorted, each value cut at 120
/// characters; control characters dropped).
fn claims_text(claims: &verify::Claims) -> String {
    let clean =
        |s: &str, n: usize| -> String { s.chars().filter(|c| !c.is_control()).take(n).collect() };
    let sorted: BTreeMap<String, String> = claims
        .iter()
        .filter_map(|(k, v)| scalar(v).map(|s| (clean(k, 64), clean(&s, 120))))
        .collect();
    sorted
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The exchange's audit entry: the token it made, or the refusal. Refusals of one kind
/// for one project within a minute share an entry with a count (projects that do not
/// trust the issuer, or do not exist, share one), so no caller can grow the log faster
/// than a few rows a minute.
async fn audit(
    app: &App,
    slug: Option<&str>,
    (status, trust, detail, kind): (u16, Option<String>, String, &str),
    token: Option<&TokenRow>,
) {
    let now = chrono::Utc::now();
    let scope = match kind {
        "untrusted" | "token" => "-",
        _ => slug.unwrap_or("-"),
    };
    let bucket = (status >= 400).then(|| format!("oidc|{kind}|{scope}|{}", now.timestamp() / 60));
    let detail: String = detail
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(MAX_DETAIL)
        .collect();
    let entry = AuditRow {
        at: now.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        at_us: now.timestamp_micros(),
        token_id: token.map(|t| t.id.clone()),
        token_name: token
            .map(|t| t.name.clone())
            .unwrap_or_else(|| "oidc".into()),
        action: "POST /v1/oidc/exchange".into(),
        target: trust,
        status,
        project: slug.filter(|_| scope != "-").map(str::to_string),
        detail: Some(detail),
        count: 1,
        bucket,
    };
    if let Err(e) = app.store.insert_audit(&entry).await {
        tracing::warn!(error = %e, "cannot write the audit log");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trust(id: &str, rules: &[(&str, &str)]) -> TrustRow {
        TrustRow {
            id: id.into(),
            slug: "p".into(),
            issuer: "https://issuer.example".into(),
            claims: rules
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            created_at: String::new(),
        }
    }

    #[test]
    fn claims_are_compared_one_by_one_as_written() {
        let claims: verify::Claims = serde_json::from_value(serde_json::json!({
            "repository_id": 1296269, "ref": "refs/heads/main", "sub": "repo:o/r:ref:refs/heads/main"
        }))
        .unwrap();
        let main = trust(
            "t1",
            &[("repository_id", "1296269"), ("ref", "refs/heads/main")],
        );
        let other = trust("t2", &[("repository_id", "1"), ("ref", "refs/heads/main")]);
        let both = [other.clone(), main.clone()];
        assert_eq!(matching(&both, &claims).ok().unwrap().id, "t1");
        let why = matching(std::slice::from_ref(&other), &claims)
            .err()
            .unwrap();
        assert!(
            why.detail.contains("claim repository_id is \"1296269\""),
            "{}",
            why.detail
        );
        // The caller is not told the trust's values.
        assert!(
            !why.public.contains("1296269") && !why.public.contains("t2"),
            "{}",
            why.public
        );
        // A rule on a claim the token lacks never matches (no prefix or pattern either).
        let env = trust("t3", &[("environment", "production")]);
        let why = matching(&[env], &claims).err().unwrap();
        assert!(why.detail.contains("no environment claim"));
        let prefix = trust("t4", &[("ref", "refs/heads/")]);
        assert!(matching(&[prefix], &claims).is_err());
    }

    #[test]
    fn the_issuer_is_read_from_any_jwt_shape_or_refused() {
        use base64::Engine;
        let b64 = |v: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v);
        let token = format!(
            "{}.{}.sig",
            b64("{}"),
            b64(r#"{"iss":"https://i.example"}"#)
        );
        assert_eq!(verify::named_issuer(&token).unwrap(), "https://i.example");
        assert!(verify::named_issuer("not-a-jwt").is_err());
        assert!(verify::named_issuer(&format!("h.{}.s", b64("[]"))).is_err());
        assert!(verify::named_issuer(&format!("h.{}.s", b64(r#"{"iss":7}"#))).is_err());
        assert!(verify::named_issuer(&"a.".repeat(20_000)).is_err());
        assert_eq!(shown("a\u{1b}[2J\nb"), "\"a\\u{1b}[2J\\nb\"");
    }
}
