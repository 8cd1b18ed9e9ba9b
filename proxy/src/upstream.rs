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
//! * **Loops and load**: every request sent on carries this proxy's mark in `Via`; one
//!   that comes back with it (a rule proxying to the platform itself), or after
//!   [`MAX_HOPS`] cdeploy proxies, is answered `508`. At most [`MAX_IN_FLIGHT`]
//!   proxied requests at once, [`MAX_IN_FLIGHT_PER_SITE`] per site; past them `503`.
//! * **Answers**: hop-by-hop headers go, `Clear-Site-Data` goes and `Set-Cookie` loses
//!   its `Domain` (one site must not clear or plant cookies for the platform's other
//!   sites under a shared domain).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use futures_util::TryStreamExt;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::{Request, Response};
use ipnet::IpNet;
use tokio::sync::OwnedSemaphorePermit;

use crate::body::Body;
use crate::ProxyError;

/// Connecting to an upstream.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest wait for the next bytes of an upstream's answer.
pub const READ_TIMEOUT: Duration = Duration::from_secs(60);
/// cdeploy proxies a request may pass through before it is refused as a loop.
pub const MAX_HOPS: usize = 3;
/// Proxied requests at once, in all.
pub const MAX_IN_FLIGHT: usize = 512;
/// Proxied requests at once for one site.
pub const MAX_IN_FLIGHT_PER_SITE: usize = 64;

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

    /// The address written in `url` when it is one this list does not permit (a name
    /// is checked when it is resolved: [`CheckedResolver`]).
    pub fn refused_literal(&self, url: &url::Url) -> Option<IpAddr> {
        let literal = match url.host() {
            Some(url::Host::Ipv4(v4)) => IpAddr::V4(v4),
            Some(url::Host::Ipv6(v6)) => IpAddr::V6(v6),
            _ => return None,
        };
        (!self.permits(literal)).then_some(literal)
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
            let [a, b, c, _] = v4.octets();
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
                || (a == 192 && b == 0 && c == 0)
                || (a == 192 && b == 88 && c == 99)
                || a >= 240)
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            // Addresses that carry an IPv4 one (NAT64, 6to4) are as public as it is.
            let embedded = match s {
                [0x64, 0xff9b, 0, 0, 0, 0, hi, lo] => Some((hi, lo)),
                [0x2002, hi, lo, ..] => Some((hi, lo)),
                _ => None,
            };
            if let Some((hi, lo)) = embedded {
                let [a, b] = hi.to_be_bytes();
                let [c, d] = lo.to_be_bytes();
                return is_public(IpAddr::V4(std::net::Ipv4Addr::new(a, b, c, d)));
            }
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00
                || (s[0] & 0xffc0) == 0xfe80
                || (s[0] & 0xffc0) == 0xfec0
                || s[0] == 0x2001 && s[1] == 0x0db8
                || s[0] == 0x2001 && s[1] == 0
                || s[0] == 0x64 && s[1] == 0xff9b
                || s[..6] == [0, 0, 0, 0, 0xffff, 0]
                || v6.to_ipv4().is_some())
        }
    }
}

/// Resolves names for an HTTP client, keeping only the addresses `allow` permits (the
/// upstream client of rules; the server's notifications use it too).
pub struct CheckedResolver {
    allow: Arc<ProxyAllow>,
    /// Who may not connect, for the error: "rules may not proxy to".
    refused: &'static str,
}

impl CheckedResolver {
    pub fn new(allow: Arc<ProxyAllow>, refused: &'static str) -> CheckedResolver {
        CheckedResolver { allow, refused }
    }
}

impl reqwest::dns::Resolve for CheckedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let allow = self.allow.clone();
        let refused = self.refused;
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
                    "{host} resolves only to addresses {refused} ({})",
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
    /// This proxy's mark in `Via` (random per process: a visitor cannot forge it).
    mark: String,
    in_flight: Arc<tokio::sync::Semaphore>,
    per_site: moka::future::Cache<String, Arc<tokio::sync::Semaphore>>,
}

/// A request body that can be sent on: `None` for a request without one (it goes on
/// without one, not as an empty chunked body).
pub trait Forward {
    fn into_upstream(self) -> Option<reqwest::Body>;
}

impl Forward for hyper::body::Incoming {
    fn into_upstream(self) -> Option<reqwest::Body> {
        use hyper::body::Body as _;
        if self.is_end_stream() {
            return None;
        }
        Some(reqwest::Body::wrap_stream(self.into_data_stream()))
    }
}

impl Forward for () {
    fn into_upstream(self) -> Option<reqwest::Body> {
        None
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

pub(crate) fn strip_hop_by_hop(headers: &mut HeaderMap) {
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

/// An upstream's answer may not reach other sites' cookies: `Clear-Site-Data` is
/// dropped and `Set-Cookie` loses its `Domain` (it stays host-only). A `Set-Cookie` that
/// does not parse as a cookie (bytes that are not visible ASCII, no `=`, an empty name:
/// forms browsers still accept) is dropped whole, `Domain` or not: what cannot be read
/// cannot be confined.
pub(crate) fn confine_cookies(headers: &mut HeaderMap) {
    headers.remove("clear-site-data");
    let cookies: Vec<HeaderValue> = headers
        .get_all(header::SET_COOKIE)
        .iter()
        .filter_map(|v| {
            let mut c = cookie::Cookie::parse(v.to_str().ok()?).ok()?;
            if c.name().is_empty() {
                return None;
            }
            if c.domain().is_none() {
                return Some(v.clone());
            }
            c.unset_domain();
            HeaderValue::from_str(&c.to_string()).ok()
        })
        .collect();
    headers.remove(header::SET_COOKIE);
    for c in cookies {
        headers.append(header::SET_COOKIE, c);
    }
}

/// Where a visitor's request came from, for the forwarded headers.
pub struct Origin<'a> {
    /// The site (its slug): proxied requests are counted per site.
    pub site: &'a str,
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
            .dns_resolver(Arc::new(CheckedResolver::new(
                allow.clone(),
                "rules may not proxy to",
            )))
            .user_agent(concat!("cdeploy-proxy/", env!("CARGO_PKG_VERSION")))
            .build()
            .expect("the upstream client builds");
        let mark = {
            use std::hash::BuildHasher;
            let n = std::collections::hash_map::RandomState::new().hash_one(std::process::id());
            format!("cdeploy-{n:016x}")
        };
        Upstream {
            client,
            allow,
            mark,
            in_flight: Arc::new(tokio::sync::Semaphore::new(MAX_IN_FLIGHT)),
            per_site: moka::future::Cache::builder()
                .max_capacity(100_000)
                .time_to_idle(Duration::from_secs(600))
                .build(),
        }
    }

    /// Refuses a request that already passed through this proxy, or through too many.
    fn check_loop(&self, headers: &HeaderMap) -> Result<(), ProxyError> {
        let marks: Vec<&str> = headers
            .get_all(header::VIA)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter(|hop| hop.contains("cdeploy-"))
            .collect();
        if marks.len() >= MAX_HOPS || marks.iter().any(|m| m.contains(&self.mark)) {
            return Err(ProxyError::LoopDetected);
        }
        Ok(())
    }

    /// Sends `req` to `url` and relays the answer.
    pub async fn forward<B: Forward>(
        &self,
        req: Request<B>,
        url: &str,
        origin: Origin<'_>,
    ) -> Result<Response<Body>, ProxyError> {
        self.check_loop(req.headers())?;
        let permits = self.permits(origin.site).await?;
        let target = self.checked_url(url)?;
        let (parts, body) = req.into_parts();
        let head = parts.method == hyper::Method::HEAD;
        let headers = self.outgoing(parts.headers, &origin);
        let mut request = self.client.request(parts.method, target).headers(headers);
        if let Some(body) = body.into_upstream() {
            request = request.body(body);
        }
        let sent = request.send().await.map_err(upstream_error)?;
        Ok(relay(sent, permits, head))
    }

    /// A place among the requests proxied at once, in all and for the site.
    async fn permits(
        &self,
        site: &str,
    ) -> Result<(OwnedSemaphorePermit, OwnedSemaphorePermit), ProxyError> {
        let busy = || ProxyError::Busy("too many proxied requests at once; try again shortly");
        let all = self
            .in_flight
            .clone()
            .try_acquire_owned()
            .map_err(|_| busy())?;
        let own = self
            .per_site
            .get_with(site.to_string(), async {
                Arc::new(tokio::sync::Semaphore::new(MAX_IN_FLIGHT_PER_SITE))
            })
            .await
            .try_acquire_owned()
            .map_err(|_| busy())?;
        Ok((all, own))
    }

    /// The URL, with an address written in it checked (a name is checked when it is
    /// resolved).
    fn checked_url(&self, url: &str) -> Result<reqwest::Url, ProxyError> {
        let target = reqwest::Url::parse(url)
            .map_err(|_| ProxyError::Upstream(format!("{url} is not a URL")))?;
        if let Some(ip) = self.allow.refused_literal(&target) {
            return Err(ProxyError::UpstreamRefused(format!(
                "{ip} is an address rules may not proxy to"
            )));
        }
        Ok(target)
    }

    /// The visitor's headers as the upstream gets them.
    fn outgoing(&self, mut headers: HeaderMap, origin: &Origin<'_>) -> HeaderMap {
        strip_hop_by_hop(&mut headers);
        headers.remove(header::HOST);
        crate::protect::strip_cookie(&mut headers);
        if let Ok(v) = HeaderValue::from_str(origin.host) {
            headers.insert("x-forwarded-host", v);
        }
        let via = match headers.get(header::VIA).and_then(|v| v.to_str().ok()) {
            Some(prior) => format!("{prior}, 1.1 {}", self.mark),
            None => format!("1.1 {}", self.mark),
        };
        if let Ok(v) = HeaderValue::from_str(&via) {
            headers.insert(header::VIA, v);
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
        headers
    }
}

/// Why the upstream was not reached: the resolver's refusal (a few causes down), or
/// anything else.
fn upstream_error(e: reqwest::Error) -> ProxyError {
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
}

/// An upstream's (or a site server's) answer for the visitor, its body streamed as it
/// arrives; `held` goes with the body (the permits of a proxied request, the lease on a
/// server: a request counts until its answer is relayed).
pub(crate) fn relay<H: Send + 'static>(
    sent: reqwest::Response,
    held: H,
    head: bool,
) -> Response<Body> {
    let mut resp = Response::builder().status(sent.status());
    let mut headers = sent.headers().clone();
    strip_hop_by_hop(&mut headers);
    confine_cookies(&mut headers);
    // The body is relayed as it arrives; its length is the new connection's. (An
    // answer to HEAD has none: its length is the one GET would have, as the upstream
    // said.)
    if !head {
        headers.remove(header::CONTENT_LENGTH);
    }
    if let Some(h) = resp.headers_mut() {
        *h = headers;
    }
    let stream = sent
        .bytes_stream()
        .map_ok(move |data| {
            let _held = &held;
            Frame::data(data)
        })
        .map_err(std::io::Error::other);
    resp.body(Body::Stream(StreamBody::new(stream).boxed_unsync()))
        .expect("a response from parts")
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
            "192.0.0.170",
            "192.88.99.1",
            "64:ff9b::a00:5",
            "64:ff9b:1::1",
            "2002:7f00:1::1",
            "2001:0:4136:e378::1",
            "fec0::1",
            "::ffff:0:7f00:1",
        ] {
            assert!(!none.permits(private.parse().unwrap()), "{private}");
        }
        for public in [
            "93.184.216.34",
            "1.1.1.1",
            "2606:4700::1111",
            "64:ff9b::5db8:d822",
            "2002:5db8:d822::1",
        ] {
            assert!(none.permits(public.parse().unwrap()), "{public}");
        }
        let allow = ProxyAllow(vec!["127.0.0.1/32".parse().unwrap()]);
        assert!(allow.permits("127.0.0.1".parse().unwrap()));
        assert!(allow.permits("::ffff:127.0.0.1".parse().unwrap()));
        assert!(!allow.permits("127.0.0.2".parse().unwrap()));
    }

    #[test]
    fn cookies_stay_host_only_and_unreadable_ones_go() {
        let mut h = HeaderMap::new();
        for raw in [
            &b"a=1; Domain=localhost; Path=/"[..],
            b"b=2; Path=/",
            b"x=caf\xc3\xa9; Domain=localhost; Path=/",
            b"=nameless; Domain=localhost; Path=/",
            b"nodelim; Domain=localhost",
        ] {
            h.append(header::SET_COOKIE, HeaderValue::from_bytes(raw).unwrap());
        }
        h.insert("clear-site-data", HeaderValue::from_static("\"cookies\""));
        confine_cookies(&mut h);
        let kept: Vec<&str> = h
            .get_all(header::SET_COOKIE)
            .iter()
            .map(|v| v.to_str().unwrap())
            .collect();
        assert_eq!(kept, ["a=1; Path=/", "b=2; Path=/"]);
        assert!(!h.contains_key("clear-site-data"));
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
