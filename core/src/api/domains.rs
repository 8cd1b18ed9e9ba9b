//! Custom domains: `GET|POST /v1/projects/{slug}/domains`, `GET|DELETE
//! /v1/domains/{name}`.

use serde::{Deserialize, Serialize};

/// `POST /v1/projects/{slug}/domains`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct AddDomain {
    pub name: String,
    /// Serve this branch's newest preview instead of production (`staging.example.com`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
    /// Redirect every request to this other domain of the project (apex ↔ www).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redirect_to: Option<String>,
    /// Plain HTTP redirects to HTTPS once the certificate exists [default: true].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub https_redirect: Option<bool>,
    /// Send `Strict-Transport-Security: max-age=…` over HTTPS (seconds) [default: off].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hsts_max_age: Option<u64>,
    /// Take the domain from the project that has it (admins only).
    #[serde(default, rename = "move", skip_serializing_if = "std::ops::Not::not")]
    pub move_from_other: bool,
}

/// A DNS record to create for a domain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DnsRecord {
    /// `A`, `AAAA` or `CNAME`.
    #[serde(rename = "type")]
    pub kind: String,
    pub name: String,
    pub value: String,
}

/// The certificate served for a domain.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CertificateInfo {
    pub not_before: String,
    pub not_after: String,
    /// Two thirds of its lifetime: when it is renewed, unless the CA gives a renewal
    /// window (ARI; the report's `next_attempt` says when it is asked next).
    pub renew_at: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Domain {
    pub name: String,
    pub slug: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redirect_to: Option<String>,
    pub https_redirect: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hsts: Option<String>,
    /// `pending` (no certificate yet), `active` or `failed` (the last attempt failed).
    pub state: String,
    /// Served only once verified: added by an admin, or DNS proves the project may have
    /// it (the `TXT` record in `dns`, or a CNAME to the project's own host).
    pub verified: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate: Option<CertificateInfo>,
    /// What to create at the domain's DNS provider.
    pub dns: Vec<DnsRecord>,
    pub url: String,
    pub created_at: String,
}

/// What DNS answered for a name, and from where.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DnsAnswer {
    /// The resolver asked (`127.0.0.1:53`, `system`).
    pub server: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cname: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub caa: Vec<String>,
    /// Why nothing usable came back (NXDOMAIN, a timeout).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// One attempt at a domain's certificate, as `domains inspect` shows it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DomainAttempt {
    pub at: String,
    pub ok: bool,
    /// How far it got: `dns`, `caa`, `self-check`, `order`, `challenge`, `issued`.
    pub stage: String,
    pub dns: DnsAnswer,
    /// The HTTP-01 self-check: fetching a token from the domain as the CA will.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub self_check: Option<String>,
    /// The CA's own words, when it refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_error: Option<String>,
    /// The one-line fix.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
    /// When the next attempt is due.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_retry: Option<String>,
}

/// `GET /v1/domains/{name}`: the domain, its attempts (newest first) and what to do.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DomainReport {
    pub domain: Domain,
    pub attempts: Vec<DomainAttempt>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_attempt: Option<String>,
}
