//! Who is asking: the visitor's address (wrong preview passwords are counted by it), the
//! connection's peer or what a trusted proxy in front appended to `X-Forwarded-For`.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};

/// The entries of every `X-Forwarded-For` header, left to right, spaces trimmed,
/// unparsed: which ones to believe is the caller's to decide.
pub fn forwarded_for(headers: &hyper::HeaderMap) -> Vec<&str> {
    headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect()
}

/// An `X-Forwarded-For` entry's address: bare, or with a port (`1.2.3.4:5678`,
/// `[2001:db8::1]:5678`); canonical (an IPv4-mapped IPv6 address is its IPv4 address).
pub fn parse_forwarded(e: &str) -> Option<IpAddr> {
    e.parse::<IpAddr>()
        .ok()
        .or_else(|| e.parse::<SocketAddr>().ok().map(|a| a.ip()))
        .or_else(|| e.strip_prefix('[')?.strip_suffix(']')?.parse().ok())
        .map(|a| a.to_canonical())
}

/// The visitor's address, as wrong passwords are counted: the peer, or with `trusted`
/// proxies in front, the entry of `X-Forwarded-For` the outermost of them appended
/// (entries further left are whatever the visitor sent, and are never believed; an entry
/// may carry a port, `1.2.3.4:5678` or `[2001:db8::1]:5678`). An IPv6 address counts as
/// its /64, which one subscriber holds whole. Without a usable entry, the peer.
pub fn client_address(headers: &hyper::HeaderMap, peer: IpAddr, trusted: usize) -> IpAddr {
    let address = if trusted == 0 {
        peer
    } else {
        let entries = forwarded_for(headers);
        entries
            .len()
            .checked_sub(trusted)
            .and_then(|i| entries.get(i))
            .and_then(|e| parse_forwarded(e))
            .unwrap_or(peer)
    };
    match address.to_canonical() {
        IpAddr::V6(v6) => {
            let s = v6.segments();
            Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0).into()
        }
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_visitor_address_is_the_peer_or_what_a_trusted_proxy_appended() {
        let peer: IpAddr = "10.0.0.5".parse().unwrap();
        let with = |xff: &str| {
            let mut h = hyper::HeaderMap::new();
            h.insert("x-forwarded-for", xff.parse().unwrap());
            h
        };
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        // Not trusted: the header is the visitor's own words.
        assert_eq!(client_address(&with("1.2.3.4"), peer, 0), peer);
        // One balancer: its entry is the last; what the visitor sent before it is ignored.
        assert_eq!(
            client_address(&with("6.6.6.6, 203.0.113.7"), peer, 1),
            ip("203.0.113.7")
        );
        assert_eq!(
            client_address(&with("203.0.113.7:5555"), peer, 1),
            ip("203.0.113.7")
        );
        assert_eq!(
            client_address(&with("6.6.6.6, 198.51.100.1, 192.0.2.9"), peer, 2),
            ip("198.51.100.1")
        );
        // An IPv6 visitor is its /64, whatever interface id it picks.
        let a = client_address(&with("[2001:db8:1:2::1]:443"), peer, 1);
        let b = client_address(&with("2001:db8:1:2:ffff::9"), peer, 1);
        assert_eq!((a, b), (ip("2001:db8:1:2::"), ip("2001:db8:1:2::")));
        assert_ne!(a, client_address(&with("2001:db8:1:3::1"), peer, 1));
        // Too few entries, or nonsense: the peer.
        assert_eq!(client_address(&with("unknown"), peer, 1), peer);
        assert_eq!(client_address(&with("1.2.3.4"), peer, 2), peer);
        assert_eq!(client_address(&hyper::HeaderMap::new(), peer, 1), peer);
    }
}
