//! Rules that proxy (`/api/* https://api.example.com/:splat 200`): the request is sent
//! on and the answer streamed back.
//!
//! * **Where to**: never to a loopback, private, link-local, shared (CGNAT), multicast
//!   or unspecified address — a site's rules must not reach the platform's own network
//!   — unless the operator lists the network (`--rules-proxy-allow 10.1.0.0/16`). Names
//!   are resolved by this proxy and the connection goes to the checked address, so a
//!   name that resolves differently a second time (DNS rebinding) gains nothing.
//! * **Host**: the upstream gets its own host in `Host` (as a browser asking it would),
//!   and the visitor's in `X-Forwarded-Host`, with `X-Forwarded-Proto` and
//!   `X-Forwarded-For`.
//! * **Headers**: hop-by-hop headers (`Connection` and what it names, `Keep-Alive`,
//!   `TE`, `Trailer`, `Transfer-Encoding`, `Upgrade`, `Proxy-*`) are dropped both ways;
//!   the preview-protection cookie is never passed on.
//! * **Time**: 10 s to connect, then 60 s at most between reads; bodies stream both
//!   ways. The upstream's redirects are relayed, not followed.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::TryStreamExt;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::{Request, Response};
use ipnet::IpNet;

use crate::body::Body;
use crate::ProxyError;

/// Connecting to an upstream.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest wait for the next bytes of an upstream's answer.
pub const READ_TIMEOUT: Duration = Duration::from_secs(60);

/// Networks the operator lets rules proxy to, beyond public addresses.
#[derive(Debug, Clone, Default)]
pub struct ProxyAllow(pub Vec<IpNet>);

impl ProxyAllow {
    /// Networks as the operator writes them: `10.1.0.0/16`, `127.0.0.1` (one address),
    /// `fd00::/8`.
    pub fn parse<S: AsRef<str>>(items: &[S]) -> Result<ProxyAllow, String> {
        items
            .iter()
            .map(|item| {
                let item = item.as_ref().trim();
                item.parse::<IpNet>()
                    .or_else(|_| item.parse::<IpAddr>().map(IpNet::from))
                    .map_err(|_| format!("{item:?} is not an address or a network (10.1.0.0/16)"))
            })
            .collect::<Result<_, _>>()
            .map(ProxyAllow)
    }

    /// Whether a rule may connect to `ip`.
    pub fn permits(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        is_public(ip) || self.0.iter().any(|net| net.contains(&ip))
    }
}

/// An address on the open internet (not this machine, a private network, a link, a
/// shared or documentation range, multicast or unspecified).
fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_multicast()
                || v4.is_broadcast()
                || v4.is_unspecified()
                || v4.is_documentation()
                || a == 0
                || (a == 100 && (64..128).contains(&b))
                || (a == 198 && (18..20).contains(&b))
                || a >= 240)
        }
        IpAddr::V6(v6) => {
            let first = v6.segments()[0];
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80
                || first == 0x2001 && v6.segments()[1] == 0x0db8
                || v6.to_ipv4().is_some())
        }
    }
}

/// Resolves names for the upstream client, keeping only permitted addresses.
struct CheckedResolver(Arc<ProxyAllow>);

impl reqwest::dns::Resolve for CheckedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let allow = self.0.clone();
        Box::pin(async move {
            let host = name.as_str().to_string();
            let found: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let permitted: Vec<SocketAddr> = found
                .iter()
                .copied()
                .filter(|a| allow.permits(a.ip()))
                .collect();
            if permitted.is_empty() {
                let seen: Vec<String> = found.iter().map(|a| a.ip().to_string()).collect();
                return Err(format!(
                    "{host} resolves only to addresses rules may not proxy to ({})",
                    seen.join(", ")
                )
                .into());
            }
            Ok(Box::new(permitted.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// The client rules proxy through.
pub struct Upstream {
    client: reqwest::Client,
    allow: Arc<ProxyAllow>,
}

/// A request body that can be sent on.
pub trait Forward {
    fn into_upstream(self) -> reqwest::Body;
}

impl Forward for hyper::body::Incoming {
    fn into_upstream(self) -> reqwest::Body {
        reqwest::Body::wrap_stream(self.into_data_stream())
    }
}

impl Forward for () {
    fn into_upstream(self) -> reqwest::Body {
        reqwest::Body::from(Bytes::new())
    }
}

/// Headers that belong to one connection, never passed on.
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::PROXY_AUTHORIZATION,
    header::PROXY_AUTHENTICATE,
];

fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for name in HOP_BY_HOP.iter().chain(&named) {
        headers.remove(name);
    }
    headers.remove("proxy-connection");
}

/// Where a visitor's request came from, for the forwarded headers.
pub struct Origin<'a> {
    pub host: &'a str,
    pub tls: bool,
    pub visitor: Option<IpAddr>,
}

impl Upstream {
    pub fn new(allow: ProxyAllow) -> Upstream {
        let allow = Arc::new(allow);
        let client = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(CONNECT_TIMEOUT)
            .read_timeout(READ_TIMEOUT)
            .dns_resolver(Arc::new(CheckedResolver(allow.clone())))
            .user_agent(concat!("cdeploy-proxy/", env!("CARGO_PKG_VERSION")))
            .build()
            .expect("the upstream client builds");
        Upstream { client, allow }
    }

    /// Sends `req` to `url` and relays the answer.
    pub async fn forward<B: Forward>(
        &self,
        req: Request<B>,
        url: &str,
        origin: Origin<'_>,
    ) -> Result<Response<Body>, ProxyError> {
        let target = reqwest::Url::parse(url)
            .map_err(|_| ProxyError::Upstream(format!("{url} is not a URL")))?;
        // An address written in the URL is not resolved, so it is checked here.
        let literal = match target.host() {
            Some(url::Host::Ipv4(v4)) => Some(IpAddr::V4(v4)),
            Some(url::Host::Ipv6(v6)) => Some(IpAddr::V6(v6)),
            _ => None,
        };
        if let Some(ip) = literal.filter(|ip| !self.allow.permits(*ip)) {
            return Err(ProxyError::UpstreamRefused(format!(
                "{ip} is an address rules may not proxy to"
            )));
        }
        let (parts, body) = req.into_parts();
        let mut headers = parts.headers;
        strip_hop_by_hop(&mut headers);
        headers.remove(header::HOST);
        crate::protect::strip_cookie(&mut headers);
        if let Ok(v) = HeaderValue::from_str(origin.host) {
            headers.insert("x-forwarded-host", v);
        }
        headers.insert(
            "x-forwarded-proto",
            HeaderValue::from_static(if origin.tls { "https" } else { "http" }),
        );
        if let Some(ip) = origin.visitor {
            let value = match headers.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
                Some(prior) => format!("{prior}, {ip}"),
                None => ip.to_string(),
            };
            if let Ok(v) = HeaderValue::from_str(&value) {
                headers.insert("x-forwarded-for", v);
            }
        }
        let sent = self
            .client
            .request(parts.method, target)
            .headers(headers)
            .body(body.into_upstream())
            .send()
            .await
            .map_err(|e| {
                // The resolver's refusal is a few causes down.
                let mut why = e.to_string();
                let mut cause = std::error::Error::source(&e);
                while let Some(c) = cause {
                    why.push_str(": ");
                    why.push_str(&c.to_string());
                    cause = c.source();
                }
                if why.contains("may not proxy to") {
                    ProxyError::UpstreamRefused(why)
                } else {
                    ProxyError::Upstream(why)
                }
            })?;
        let mut resp = Response::builder().status(sent.status());
        let mut headers = sent.headers().clone();
        strip_hop_by_hop(&mut headers);
        // The body is relayed as it arrives; its length is the new connection's.
        headers.remove(header::CONTENT_LENGTH);
        if let Some(h) = resp.headers_mut() {
            *h = headers;
        }
        let stream = sent
            .bytes_stream()
            .map_ok(Frame::data)
            .map_err(std::io::Error::other);
        Ok(resp
            .body(StreamBody::new(stream).boxed_unsync())
            .expect("a response from parts"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_public_addresses_unless_allowed() {
        let none = ProxyAllow::default();
        for private in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
        ] {
            assert!(!none.permits(private.parse().unwrap()), "{private}");
        }
        for public in ["93.184.216.34", "1.1.1.1", "2606:4700::1111"] {
            assert!(none.permits(public.parse().unwrap()), "{public}");
        }
        let allow = ProxyAllow(vec!["127.0.0.1/32".parse().unwrap()]);
        assert!(allow.permits("127.0.0.1".parse().unwrap()));
        assert!(allow.permits("::ffff:127.0.0.1".parse().unwrap()));
        assert!(!allow.permits("127.0.0.2".parse().unwrap()));
    }

    #[test]
    fn hop_by_hop_headers_and_those_named_by_connection_go() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("close, x-private"),
        );
        h.insert("x-private", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        h.insert("x-kept", HeaderValue::from_static("yes"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1, "{h:?}");
        assert!(h.contains_key("x-kept"));
    }
}
