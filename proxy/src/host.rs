//! Which site a request names: its host (one `Host` header, or HTTP/2's `:authority`)
//! read as `<slug>`, `<slug>--<id>` or `<branch>--<slug>` under the configured domain.

use cdeploy_core::ids::{self, DeploymentId};
use hyper::Request;

use crate::{Proxy, ProxyError};

/// What a host names of a project.
#[derive(Debug, Clone)]
pub(crate) enum Target {
    Production,
    Deployment(DeploymentId),
    /// A branch's newest preview, by the branch's label.
    Alias(String),
}

impl Proxy {
    /// What a host in front of the configured domain names: `<slug>` (production),
    /// `<slug>--<id>` (one deployment), `<branch>--<slug>` (a branch's newest preview).
    /// A right-hand side that is a deployment id makes it the second (so a slug that
    /// looks like an id, 16 letters and digits, has no branch aliases).
    pub(crate) fn parse_host<'h>(&self, host: &'h str) -> Option<(&'h str, Target)> {
        let host = host_only(host);
        let label = host.strip_suffix(&self.domain_host)?.strip_suffix('.')?;
        if label.contains('.') {
            return None;
        }
        let Some((left, right)) = label.split_once("--") else {
            ids::validate_slug(label).ok()?;
            return Some((label, Target::Production));
        };
        if let Some(id) = DeploymentId::parse(right) {
            ids::validate_slug(left).ok()?;
            return Some((left, Target::Deployment(id)));
        }
        let is_label = !left.is_empty()
            && !left.starts_with('-')
            && left
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        ids::validate_slug(right).ok()?;
        is_label.then(|| (right, Target::Alias(left.to_string())))
    }
}

/// The request's host: one `Host` header (RFC 9112: a request with several is
/// answered 400), or the HTTP/2 `:authority`.
pub(crate) fn request_host<B>(req: &Request<B>) -> Result<String, ProxyError> {
    let mut hosts = req.headers().get_all(hyper::header::HOST).iter();
    let raw = match (hosts.next(), hosts.next()) {
        (Some(_), Some(_)) => return Err(ProxyError::BadRequest("more than one Host header")),
        (Some(h), None) => h
            .to_str()
            .map_err(|_| ProxyError::BadRequest("the Host header is not ASCII"))?,
        (None, _) => req
            .uri()
            .authority()
            .ok_or(ProxyError::UnknownHost)?
            .as_str(),
    };
    let mut host = raw.trim().trim_end_matches('.').to_string();
    host.make_ascii_lowercase();
    Ok(host)
}

pub(crate) fn host_only(host_port: &str) -> &str {
    // `[::1]:8000` keeps its brackets; `name:8000` loses the port.
    match host_port.rfind(':') {
        Some(i) if !host_port[i..].contains(']') => &host_port[..i],
        _ => host_port,
    }
}
