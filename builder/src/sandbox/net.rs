//! The network policy of a sandboxed build: pasta gives it a user-mode network of its
//! own (the internet, not the host's loopback but the ports an operator allows), a
//! script run in its network namespace closes routes to link-local addresses and to the
//! host's own, and a host whose resolver listens on its loopback is reached through
//! pasta's DNS forwarding.

use std::path::{Path, PathBuf};

/// Where a sandbox sends DNS when the host's resolver listens on its loopback
/// (systemd-resolved's 127.0.0.53), which a build cannot reach: pasta maps this address
/// (a non-routed benchmarking range) to the host's resolver.
const DNS_FORWARD: &str = "198.18.0.53";

/// Addresses no build may reach besides the host's own: link-local (cloud metadata
/// services live there) and AWS's IPv6 metadata address.
const ALWAYS_BLOCKED: &[&str] = &["169.254.0.0/16", "fd00:ec2::254/128"];

/// pasta and what it runs before bwrap, fixed when the sandbox is made.
#[derive(Debug)]
pub(super) struct Network {
    pasta: PathBuf,
    /// pasta's `-T`: `none`, or the allowed host ports.
    host_ports: String,
    /// The sandbox's own resolv.conf, when the host's points at its loopback.
    pub(super) resolv_conf: Option<String>,
    /// `sh -c` script run in the new network namespace before bwrap.
    script: String,
}

impl Network {
    /// pasta at `pasta`, routes closed with the `ip` at `ip`, and `host_ports` of the
    /// host's loopback open.
    pub(super) fn new(pasta: PathBuf, ip: &Path, host_ports: &[u16]) -> Network {
        let host_ports = if host_ports.is_empty() {
            "none".to_string()
        } else {
            let ports: Vec<String> = host_ports.iter().map(u16::to_string).collect();
            ports.join(",")
        };
        let resolv_conf = std::fs::read_to_string("/etc/resolv.conf")
            .ok()
            .and_then(|t| forwarded_resolv_conf(&t));
        Network {
            pasta,
            host_ports,
            resolv_conf,
            script: net_script(ip),
        }
    }

    /// `pasta … -- /bin/sh -c <script> cdeploy-net`: the command's arguments (bwrap and
    /// its own) follow. `inbound`: a port of the host's loopback pasta forwards to a
    /// port inside (a runtime's server, reached by the proxy only: the sandboxes, which
    /// cannot reach the host's loopback, cannot reach it either).
    pub(super) fn command(&self, inbound: Option<(u16, u16)>) -> std::process::Command {
        let inbound = match inbound {
            Some((host, inside)) => format!("127.0.0.1/{host}:{inside}"),
            None => "none".to_string(),
        };
        let mut c = std::process::Command::new(&self.pasta);
        c.args([
            "--config-net",
            "--quiet",
            "--no-map-gw",
            "-T",
            &self.host_ports,
            "-U",
            "none",
            "-t",
            &inbound,
            "-u",
            "none",
        ]);
        if self.resolv_conf.is_some() {
            c.args(["--dns-forward", DNS_FORWARD]);
        }
        c.args(["--", "/bin/sh", "-c", &self.script, "cdeploy-net"]);
        c
    }
}

/// The sandbox's `/etc/resolv.conf` when every nameserver of the host's is a loopback
/// address (`None`: the host's file works as it is).
fn forwarded_resolv_conf(host: &str) -> Option<String> {
    let servers: Vec<&str> = host
        .lines()
        .filter_map(|l| l.trim().strip_prefix("nameserver"))
        .map(str::trim)
        .collect();
    let loopback = |s: &&str| {
        s.parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
    };
    if servers.is_empty() || !servers.iter().all(loopback) {
        return None;
    }
    let mut out = format!("nameserver {DNS_FORWARD}\n");
    for line in host.lines() {
        let t = line.trim();
        if t.starts_with("search") || t.starts_with("options") || t.starts_with("domain") {
            out.push_str(t);
            out.push('\n');
        }
    }
    Some(out)
}

/// The script that closes routes in the build's network namespace, then runs bwrap.
fn net_script(ip: &Path) -> String {
    let mut script = String::from("set -e\n");
    let mut blocked: Vec<String> = ALWAYS_BLOCKED.iter().map(|s| s.to_string()).collect();
    blocked.extend(super::sys::host_addresses());
    for net in blocked {
        let (family, optional) = if net.contains(':') {
            // A host without IPv6 has no IPv6 route to close.
            ("-6", " 2>/dev/null || true")
        } else {
            ("-4", "")
        };
        script.push_str(&format!(
            "{} {family} route add prohibit {net}{optional}\n",
            ip.display()
        ));
    }
    script.push_str("exec \"$@\"\n");
    script
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_through_pasta_only_for_a_loopback_resolver() {
        assert_eq!(forwarded_resolv_conf("nameserver 10.0.0.2\n"), None);
        assert_eq!(
            forwarded_resolv_conf("nameserver 127.0.0.1\nnameserver 10.0.0.2\n"),
            None
        );
        assert_eq!(
            forwarded_resolv_conf(
                "# systemd-resolved\nnameserver 127.0.0.53\noptions edns0 trust-ad\nsearch lan\n"
            )
            .as_deref(),
            Some("nameserver 198.18.0.53\noptions edns0 trust-ad\nsearch lan\n")
        );
        assert_eq!(
            forwarded_resolv_conf("nameserver ::1\n").as_deref(),
            Some("nameserver 198.18.0.53\n")
        );
        assert_eq!(forwarded_resolv_conf(""), None);
    }
}
