//! `GET /v1/deployments/{id}/route`: what a deployment answers at a path, explained by
//! the rules the proxy serves by ([`cdeploy_core::rules::route`]).

use cdeploy_core::api;
use cdeploy_core::event::Status;
use cdeploy_core::layout;
use cdeploy_core::manifest::Manifest;
use cdeploy_core::rules::route::{self, Answer, Router, Via};
use cdeploy_core::rules::Redirect;

use super::error::{Error, Result};
use super::App;
use crate::db::DeploymentRow;

/// The manifest of a ready deployment (`409` for one that has no output).
pub(super) async fn ready_manifest(app: &App, d: &DeploymentRow) -> Result<Manifest> {
    if d.status != Status::Ready {
        return Err(Error::conflict(format!(
            "deployment {} is {}: only a ready deployment has an output",
            d.id, d.status
        )));
    }
    cdeploy_storage::get_json(app.storage.as_ref(), &layout::manifest(&d.id))
        .await?
        .ok_or_else(|| Error::not_found(format!("the manifest of deployment {}", d.id)))
}

/// What answers `path` (with its query) on deployment `id` at `host` (default: the
/// project's own address).
pub async fn explain(
    app: &App,
    id: &str,
    path: &str,
    host: Option<&str>,
) -> Result<api::RouteAnswer> {
    let d = app.deployment(id).await?;
    let manifest = ready_manifest(app, &d).await?;
    // A fragment never reaches a server.
    let path = path.split('#').next().unwrap_or(path);
    let (raw_path, query) = match path.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (path, None),
    };
    let decoded = route::decode_path(raw_path)
        .map_err(|e| Error::bad_request(format!("path {path:?}: {e}")))?;
    let production = app.project(&d.slug).await?.production.as_deref() == Some(d.id.as_str());
    let host = match host {
        Some(h) => h.split(':').next().unwrap_or(h).to_ascii_lowercase(),
        // Production answers at the project's host; any other at its own.
        None if production => own_host(&app.config.domain, &d.slug),
        None => own_host(&app.config.domain, &format!("{}--{}", d.slug, d.id)),
    };
    let router = Router::new(manifest.rules);
    let req = route::Request {
        host: &host,
        path: &decoded,
        query,
    };
    let mut answer = describe(router.answer(&manifest.files, manifest.site, &req));
    answer.path = match query {
        Some(q) => format!("{decoded}?{q}"),
        None => decoded.to_string(),
    };
    answer.methods = match answer.kind.as_str() {
        "redirect" | "proxy" => "any",
        _ => "GET, HEAD",
    }
    .to_string();
    // The proxy gates every deployment of a protected project but production.
    answer.protected = !production && super::protection::exists(app, &d.slug).await?;
    if answer.kind != "proxy" {
        let plan = router.headers_for(&decoded);
        answer.removed = plan.remove.iter().map(|n| n.to_string()).collect();
        answer.headers = plan
            .set
            .into_iter()
            .map(|(name, value, sources)| api::RouteHeader {
                name: name.to_string(),
                value,
                sources: sources.into_iter().map(str::to_string).collect(),
            })
            .collect();
    }
    Ok(answer)
}

/// `<slug>.<domain>` without a port: the host a rule for one host is compared with.
fn own_host(domain: &str, slug: &str) -> String {
    let domain = domain.split(':').next().unwrap_or(domain);
    format!("{slug}.{domain}").to_ascii_lowercase()
}

fn describe<F>(answer: Answer<'_, '_, F>) -> api::RouteAnswer {
    let mut out = api::RouteAnswer {
        path: String::new(),
        kind: String::new(),
        status: 0,
        file: None,
        location: None,
        rule: None,
        source: None,
        via: String::new(),
        headers: Vec::new(),
        removed: Vec::new(),
        methods: String::new(),
        protected: false,
    };
    let by = |out: &mut api::RouteAnswer, rule: &Redirect| {
        out.rule = Some(rule.to_string());
        out.source = Some(rule.source.clone());
        out.via = format!("rule {}", rule.source);
    };
    match answer {
        Answer::File {
            path, status, via, ..
        } => {
            (out.kind, out.status, out.file) = ("file".into(), status, Some(path.to_string()));
            match via {
                Via::Rule(rule) => by(&mut out, rule),
                Via::Files(how) => out.via = how.describe().to_string(),
            }
        }
        Answer::Redirect {
            status,
            location,
            rule,
        } => {
            (out.kind, out.status, out.location) = ("redirect".into(), status, Some(location));
            by(&mut out, rule);
        }
        Answer::Proxy { url, rule } => {
            (out.kind, out.status, out.location) = ("proxy".into(), 200, Some(url));
            by(&mut out, rule);
        }
        Answer::Status { status, via } => {
            (out.kind, out.status) = ("status".into(), status);
            match via {
                Some(rule) => by(&mut out, rule),
                None => out.via = "no file, no SPA fallback and no 404.html".into(),
            }
        }
    }
    out
}
