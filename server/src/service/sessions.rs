//! Dashboard sessions: signing in with a token or a one-time link, finding the session
//! a cookie names (ended when idle, past its age, or when its token is revoked or
//! expires), signing out, and listing them for admins.

use std::time::Duration;

use cdeploy_core::api::{self, codes};
use cdeploy_core::ids;

use super::error::{Error, Kind, Result};
use super::App;
use crate::db::{SessionRow, TokenRow};

/// A session ends after this long without a request...
pub const IDLE: Duration = Duration::from_secs(12 * 3600);
/// ...and this long after it began, whatever its use (or when its token expires).
pub const MAX_AGE: Duration = Duration::from_secs(7 * 24 * 3600);
/// How long a sign-in link (`cdeploy dashboard`) can be used.
pub const LINK_TTL: Duration = Duration::from_secs(60);
/// Last use is written at most this often.
const SEEN_EVERY_US: i64 = 60_000_000;

fn now_us() -> i64 {
    chrono::Utc::now().timestamp_micros()
}

fn us(d: Duration) -> i64 {
    d.as_micros() as i64
}

/// An RFC 3339 time from microseconds since the epoch.
pub fn rfc3339(us: i64) -> String {
    chrono::DateTime::from_timestamp_micros(us)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

fn refused(why: &str) -> Error {
    Error::new(Kind::Unauthenticated, codes::UNAUTHORIZED, why)
}

/// When a session ends if nothing uses it again: its end, or its idle limit from its
/// last use, whichever comes first (microseconds since the epoch).
pub fn ends_us(s: &SessionRow) -> i64 {
    s.expires_us.min(s.last_seen_us + us(IDLE))
}

/// A new session's row and the cookie's value (shown to the browser once).
pub struct Started {
    pub session: SessionRow,
    pub cookie: String,
    pub token: TokenRow,
}

/// Signs in with an API token or a link's code (exactly one).
pub async fn sign_in(app: &App, body: &api::CreateSession) -> Result<Started> {
    let token = match (body.token.as_deref(), body.code.as_deref()) {
        (Some(secret), None) => app
            .store
            .token_by_hash(&ids::token_hash(secret.trim()))
            .await?
            .ok_or_else(|| refused("invalid token"))?,
        (None, Some(code)) => {
            let id = app
                .store
                .take_session_link(&ids::token_hash(code.trim()), now_us())
                .await?
                .ok_or_else(|| {
                    refused("this sign-in link was used already or expired: run `cdeploy dashboard` again")
                })?;
            app.store
                .token_by_id(&id)
                .await?
                .ok_or_else(|| refused("the token this link was made with was revoked"))?
        }
        _ => return Err(Error::bad_request("give exactly one of `token` or `code`")),
    };
    if token.expired() {
        return Err(refused("this token expired: ask an admin for a new one"));
    }
    let now = now_us();
    let mut expires = now + us(MAX_AGE);
    if let Some(t) = token.expires_us {
        expires = expires.min(t);
    }
    let cookie = ids::random_id(43);
    let session = SessionRow {
        id: format!("ses_{}", ids::random_id(16)),
        hash: ids::token_hash(&cookie),
        token_id: token.id.clone(),
        csrf: ids::random_id(43),
        created_at: cdeploy_core::now_rfc3339(),
        last_seen_us: now,
        expires_us: expires,
    };
    app.store.insert_session(&session).await?;
    Ok(Started {
        session,
        cookie,
        token,
    })
}

/// The live session a cookie names, and its token; `None` when there is none (ended,
/// idle too long, or its token revoked or expired: then it is forgotten).
pub async fn resolve(app: &App, cookie: &str) -> Result<Option<(SessionRow, TokenRow)>> {
    let Some(mut s) = app.store.session_by_hash(&ids::token_hash(cookie)).await? else {
        return Ok(None);
    };
    let now = now_us();
    let token = app.store.token_by_id(&s.token_id).await?;
    let live = ends_us(&s) > now;
    let token = match token {
        Some(t) if live && !t.expired() => t,
        _ => {
            app.store.delete_session(&s.id).await?;
            return Ok(None);
        }
    };
    if now - s.last_seen_us > SEEN_EVERY_US {
        app.store.session_seen(&s.id, now).await?;
        s.last_seen_us = now;
    }
    Ok(Some((s, token)))
}

/// Whether a token, and the dashboard session a request came with (its cookie's
/// SHA-256), are still valid: a long-lived stream checks now and then. `None`: the
/// store did not answer (the caller decides how many of those it bears).
pub async fn still_valid(app: &App, token_id: &str, session_hash: Option<&str>) -> Option<bool> {
    let now = now_us();
    let check = async {
        let token_ok = app
            .store
            .token_by_id(token_id)
            .await?
            .is_some_and(|t| !t.expired());
        let session_ok = match session_hash {
            None => true,
            Some(hash) => app
                .store
                .session_by_hash(hash)
                .await?
                .is_some_and(|s| ends_us(&s) > now),
        };
        Ok::<_, crate::db::StoreError>(token_ok && session_ok)
    };
    match check.await {
        Ok(valid) => Some(valid),
        Err(e) => {
            tracing::warn!(error = %e, "cannot check a stream's credential");
            None
        }
    }
}

/// Ends the session a cookie names, if any.
pub async fn end_by_cookie(app: &App, cookie: &str) -> Result<()> {
    if let Some(s) = app.store.session_by_hash(&ids::token_hash(cookie)).await? {
        app.store.delete_session(&s.id).await?;
    }
    Ok(())
}

/// Ends a session; false when there was none with that id.
pub async fn end(app: &App, id: &str) -> Result<bool> {
    Ok(app.store.delete_session(id).await?)
}

/// Every live session with its token's name, newest first (ended ones are forgotten).
pub async fn list(app: &App) -> Result<Vec<api::SessionEntry>> {
    let now = now_us();
    let rows = app.store.list_sessions(now, now - us(IDLE)).await?;
    let tokens = app.store.list_tokens().await?;
    Ok(rows
        .into_iter()
        .map(|s| api::SessionEntry {
            expires_at: rfc3339(ends_us(&s)),
            token_name: tokens
                .iter()
                .find(|t| t.id == s.token_id)
                .map(|t| t.name.clone())
                .unwrap_or_default(),
            id: s.id,
            token_id: s.token_id,
            created_at: s.created_at,
            last_seen_at: rfc3339(s.last_seen_us),
        })
        .collect())
}

/// A one-time sign-in link for `token`, valid for [`LINK_TTL`].
/// (The caller's token was checked live by authentication; using the link checks it
/// again.)
pub async fn link(app: &App, token: &TokenRow) -> Result<api::SessionLink> {
    let code = ids::random_id(43);
    let expires = now_us() + us(LINK_TTL);
    app.store
        .insert_session_link(&ids::token_hash(&code), &token.id, expires)
        .await?;
    Ok(api::SessionLink {
        path: format!("/ui/signin#code={code}"),
        expires_at: rfc3339(expires),
    })
}
