//! Who may do what: every API request's token becomes a [`Principal`], and one table,
//! [`rule`], says what each route needs. A route without a rule is for admins only, so a
//! new route is closed until it is given one. Mutating requests and refusals go to the
//! audit log under the token's name.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::extract::{ConnectInfo, MatchedPath, Request};
use axum::http::header::AUTHORIZATION;
use axum::http::{HeaderMap, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use cdeploy_core::api::{codes, Role};

use super::error::ApiError;
use crate::db::{AuditRow, SessionRow, TokenRow};
use crate::service::App;

/// The token of an `Authorization: Bearer <token>` header, if there is one. The scheme's
/// name is case-insensitive (RFC 9110 §11.1).
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let (scheme, token) = headers.get(AUTHORIZATION)?.to_str().ok()?.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// The client's address, as the listener saw it (unspecified when it was not given).
pub(super) fn peer_ip(peer: Option<axum::Extension<ConnectInfo<SocketAddr>>>) -> IpAddr {
    peer.map(|axum::Extension(ConnectInfo(a))| a.ip())
        .unwrap_or(IpAddr::from([0, 0, 0, 0]))
}

/// The token behind a request.
#[derive(Debug, Clone)]
pub struct Principal {
    pub id: String,
    pub name: String,
    pub role: Role,
    /// The projects a `deploy` or `read` token acts on.
    pub projects: Vec<String>,
    /// The token's row as the request found it (`whoami` answers with it).
    pub token: TokenRow,
    /// The dashboard session the request came with (none: a bearer token).
    pub session: Option<SessionRow>,
}

impl From<TokenRow> for Principal {
    fn from(t: TokenRow) -> Principal {
        Principal {
            id: t.id.clone(),
            name: t.name.clone(),
            role: t.role,
            projects: t.projects.clone(),
            token: t,
            session: None,
        }
    }
}

/// What a route needs of the token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Any token (`whoami`).
    Anyone,
    /// `GET /metrics`: admin or metrics tokens.
    Metrics,
    /// Reading: admin, or deploy/read tokens (lists are filtered to their projects).
    List,
    /// Reading the route's project.
    Read,
    /// Deploying the route's project.
    Deploy,
    /// Uploading files (content-addressed, not a project's): admin or deploy tokens.
    Upload,
    /// Creating a project: admin, or a deploy token for that slug (checked by the
    /// handler, which reads the body).
    CreateProject,
    /// Admins only.
    Admin,
}

/// The rule of a route (`MatchedPath` pattern) and method.
pub fn rule(method: &Method, route: &str) -> Need {
    let get = *method == Method::GET || *method == Method::HEAD;
    match route {
        "/v1/whoami" if get => Need::Anyone,
        "/v1/session" if get || *method == Method::DELETE => Need::Anyone,
        "/v1/sessions/links" if *method == Method::POST => Need::Anyone,
        "/v1/deployments" if get => Need::List,
        "/metrics" if get => Need::Metrics,
        "/v1/projects" if get => Need::List,
        "/v1/projects" if *method == Method::POST => Need::CreateProject,
        "/v1/projects/{slug}"
        | "/v1/projects/{slug}/deliveries"
        | "/v1/projects/{slug}/deployments"
        | "/v1/deployments/{id}"
        | "/v1/deployments/{id}/events"
        | "/v1/deployments/{id}/route"
        | "/v1/deployments/{id}/diff"
        | "/v1/deployments/{id}/runtime-log"
        | "/v1/deployments/{id}/files"
        | "/v1/deployments/{id}/inputs"
        | "/v1/projects/{slug}/domains"
        | "/v1/domains/{name}"
        | "/v1/projects/{slug}/notifications"
        | "/v1/projects/{slug}/notifications/{id}/deliveries"
        | "/v1/projects/{slug}/trust"
            if get =>
        {
            Need::Read
        }
        "/v1/projects/{slug}/deployments"
        | "/v1/projects/{slug}/promote"
        | "/v1/deployments/{id}/cancel"
        | "/v1/deployments/{id}/redeploy"
        | "/v1/projects/{slug}/domains"
            if *method == Method::POST =>
        {
            Need::Deploy
        }
        "/v1/domains/{name}" if *method == Method::DELETE => Need::Deploy,
        "/v1/files/missing" if *method == Method::POST => Need::Upload,
        "/v1/files/{hash}" if *method == Method::PUT => Need::Upload,
        "/v1/files/batch" if *method == Method::POST => Need::Upload,
        _ => Need::Admin,
    }
}

impl Principal {
    /// Whether this token acts on project `slug` at all.
    pub fn sees(&self, slug: &str) -> bool {
        !self.role.is_per_project() || self.projects.iter().any(|p| p == slug)
    }

    /// Checks `need` for project `slug` (when the route names one).
    pub fn check(&self, need: Need, slug: Option<&str>) -> Result<(), ApiError> {
        let role_ok = match (self.role, need) {
            (Role::Admin, _) => true,
            (_, Need::Anyone) => true,
            (Role::Metrics, need) => need == Need::Metrics,
            (Role::Read, need) => matches!(need, Need::List | Need::Read),
            (Role::Deploy, need) => !matches!(need, Need::Admin | Need::Metrics),
        };
        if !role_ok {
            return Err(self.forbidden(match need {
                Need::Admin => "this route is for admin tokens".to_string(),
                Need::Metrics => "reading /metrics needs an admin or metrics token".into(),
                Need::Deploy | Need::Upload | Need::CreateProject => {
                    "deploying needs a deploy or admin token".into()
                }
                _ => "this route is not for this token's role".into(),
            }));
        }
        match slug {
            Some(slug) if !self.sees(slug) => Err(self.forbidden(format!(
                "it acts on {} only, not on project {slug}",
                self.projects.join(", ")
            ))),
            _ => Ok(()),
        }
    }

    fn forbidden(&self, why: String) -> ApiError {
        ApiError::new(
            StatusCode::FORBIDDEN,
            codes::FORBIDDEN,
            format!("token {:?} (role {}): {why}", self.name, self.role),
        )
    }
}

/// What a request changed, in words, for its audit entry (`token ci (deploy on web)`):
/// a handler puts it in its response's extensions.
#[derive(Debug, Clone)]
pub struct AuditDetail(pub String);

/// Checks a known token's role against the route, runs it, and records mutating
/// requests and refusals in the audit log.
pub async fn authorize(
    app: &Arc<App>,
    principal: Principal,
    params: Vec<(String, String)>,
    mut req: Request,
    next: Next,
) -> Response {
    let method = req.method().clone();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_string())
        .unwrap_or_default();
    let need = rule(&method, &route);
    let (slug, target) = match acted_on(app, &route, &params).await {
        Ok(found) => found,
        Err(e) => return e.into_response(),
    };
    // A domain of a project this token does not see is, to it, no domain at all.
    if route.starts_with("/v1/domains/") && slug.as_deref().is_some_and(|s| !principal.sees(s)) {
        return ApiError::not_found("domain").into_response();
    }
    let checked = match need {
        Need::Read | Need::Deploy => principal.check(need, slug.as_deref()),
        _ => principal.check(need, None),
    };
    // Uploads are many requests per deployment: the deployment that follows them is
    // recorded.
    let audited =
        !(method == Method::GET || method == Method::HEAD || route.starts_with("/v1/files/"));
    let response = match checked {
        Ok(()) if !audited => {
            req.extensions_mut().insert(principal);
            return next.run(req).await;
        }
        Ok(()) => {
            req.extensions_mut().insert(principal.clone());
            next.run(req).await
        }
        // Refusals are recorded whatever the method.
        Err(e) => e.into_response(),
    };
    let detail = response
        .extensions()
        .get::<AuditDetail>()
        .map(|d| d.0.clone());
    let status = response.status().as_u16();
    record(
        app,
        &principal,
        &method,
        &route,
        (slug, target),
        status,
        detail,
    )
    .await;
    response
}

/// The project a route acts on (named in the path, or the deployment's) and the target
/// the audit log names.
pub(super) async fn acted_on(
    app: &App,
    route: &str,
    params: &[(String, String)],
) -> Result<(Option<String>, Option<String>), ApiError> {
    let param = |name: &str| {
        params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    Ok(match (param("slug"), param("id")) {
        (Some(slug), _) => (Some(slug.clone()), Some(slug)),
        (None, Some(id)) if route.starts_with("/v1/deployments/") => {
            match app.store.get_deployment(&id).await? {
                Some(d) => (Some(d.slug), Some(id)),
                // None: the handler answers 404.
                None => (None, Some(id)),
            }
        }
        (None, None) if route.starts_with("/v1/domains/") => match param("name") {
            Some(name) => {
                let lower = name.trim_end_matches('.').to_ascii_lowercase();
                match app.store.get_domain(&lower).await? {
                    Some(d) => (Some(d.slug), Some(name)),
                    None => (None, Some(name)),
                }
            }
            None => (None, None),
        },
        (None, id) => (None, id),
    })
}

/// Writes the audit entry of a request (one made in a dashboard session says so).
pub(super) async fn record(
    app: &App,
    principal: &Principal,
    method: &Method,
    route: &str,
    (slug, target): (Option<String>, Option<String>),
    status: u16,
    detail: Option<String>,
) {
    let action = format!("{method} {}", if route.is_empty() { "?" } else { route });
    let now = chrono::Utc::now();
    // Refusals and failures change nothing: those of one token, action (a route, not
    // the path: a slug or id in it is the caller's to vary) and status within a minute
    // share one entry with a count, which keeps the first one's target, so no token can
    // bury the changes under them (a change is always an entry of its own).
    // A dashboard session's refusal keeps its session and reason apart (a session is
    // made only by a sign-in, which is rate-limited; the reasons are three).
    let refused_session = principal
        .session
        .as_ref()
        .filter(|_| {
            detail
                .as_deref()
                .is_some_and(|d| d.starts_with("refused: "))
        })
        .map(|s| format!("|{}|{}", s.id, detail.as_deref().unwrap_or_default()))
        .unwrap_or_default();
    let bucket = (status >= 400).then(|| {
        format!(
            "{}|{action}|{status}|{}{refused_session}",
            principal.id,
            now.timestamp() / 60
        )
    });
    let detail = match (&principal.session, detail) {
        (None, detail) => detail,
        (Some(s), None) => Some(format!("via the dashboard ({})", s.id)),
        (Some(s), Some(d)) => Some(format!("{d}; via the dashboard ({})", s.id)),
    };
    let entry = AuditRow {
        at: now.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        at_us: now.timestamp_micros(),
        token_id: Some(principal.id.clone()),
        token_name: principal.name.clone(),
        action,
        target,
        status,
        project: slug,
        detail,
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

    fn headers(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(AUTHORIZATION, value.parse().unwrap());
        h
    }

    #[test]
    fn bearer_takes_the_token_of_any_case_of_the_scheme() {
        assert_eq!(bearer(&headers("Bearer cdp_abc")), Some("cdp_abc"));
        assert_eq!(bearer(&headers("bearer cdp_abc ")), Some("cdp_abc"));
        assert_eq!(bearer(&headers("BEARER cdp_abc")), Some("cdp_abc"));
        assert_eq!(bearer(&headers("Basic dXNlcjpwdw==")), None);
        assert_eq!(bearer(&headers("Bearer ")), None);
        assert_eq!(bearer(&headers("Bearer")), None);
        assert_eq!(bearer(&HeaderMap::new()), None);
    }
}
