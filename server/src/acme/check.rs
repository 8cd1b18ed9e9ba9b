//! What is checked before a CA is asked: what DNS says of the name (from where), its CAA
//! records, and whether `http://<name>/.well-known/acme-challenge/…` reaches this
//! platform — each failure with the one-line fix.

use std::net::IpAddr;
use std::time::Duration;

use cdeploy_core::api::DnsAnswer;
use hickory_resolver::config::{
    ConnectionConfig, NameServerConfig, ResolveHosts, ResolverConfig, ResolverOpts,
};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::{RData, RecordType};
use hickory_resolver::TokioResolver;

/// The resolver the checks ask: the operator's `--dns-server`, else the system's.
pub struct Dns {
    resolver: TokioResolver,
    server: String,
}

impl Dns {
    pub fn new(server: Option<std::net::SocketAddr>) -> anyhow::Result<Dns> {
        let mut opts = ResolverOpts::default();
        // Every check asks again: a record just fixed counts at once.
        opts.cache_size = 0;
        opts.positive_max_ttl = Some(Duration::ZERO);
        opts.negative_max_ttl = Some(Duration::ZERO);
        opts.use_hosts_file = ResolveHosts::Never;
        opts.timeout = Duration::from_secs(3);
        opts.attempts = 1;
        opts.ndots = 0;
        let (config, shown) = match server {
            Some(addr) => {
                let mut udp = ConnectionConfig::udp();
                udp.port = addr.port();
                let mut tcp = ConnectionConfig::tcp();
                tcp.port = addr.port();
                let ns = NameServerConfig::new(addr.ip(), true, vec![udp, tcp]);
                (
                    ResolverConfig::from_parts(None, vec![], vec![ns]),
                    addr.to_string(),
                )
            }
            None => {
                let (config, _) = hickory_resolver::system_conf::read_system_conf()?;
                (config, "the system resolver".to_string())
            }
        };
        let resolver = hickory_resolver::Resolver::builder_with_config(
            config,
            TokioRuntimeProvider::default(),
        )
        .with_options(opts)
        .build()?;
        Ok(Dns {
            resolver,
            server: shown,
        })
    }

    /// The resolver asked, as shown in reports.
    pub fn server(&self) -> &str {
        &self.server
    }

    /// The TXT values of `fqdn` (each record's strings joined).
    pub async fn txt(&self, fqdn: &str) -> Vec<String> {
        match self.resolver.lookup(fqdn, RecordType::TXT).await {
            Ok(lookup) => lookup
                .answers()
                .iter()
                .filter_map(|r| match &r.data {
                    RData::TXT(t) => Some(
                        t.txt_data
                            .iter()
                            .map(|s| String::from_utf8_lossy(s).into_owned())
                            .collect::<String>(),
                    ),
                    _ => None,
                })
                .collect(),
            Err(_) => Vec::new(),
        }
    }

    /// The CAA records that govern `name` (for a report).
    pub async fn caa_of(&self, name: &str) -> Vec<String> {
        self.caa(name).await
    }

    /// The CNAME chain and the addresses `name` resolves to.
    pub async fn answer(&self, name: &str) -> DnsAnswer {
        let fqdn = format!("{name}.");
        let mut answer = DnsAnswer {
            server: self.server.clone(),
            ..DnsAnswer::default()
        };
        for rtype in [RecordType::A, RecordType::AAAA] {
            match self.resolver.lookup(fqdn.as_str(), rtype).await {
                Ok(lookup) => {
                    for record in lookup.answers() {
                        match &record.data {
                            RData::A(a) => answer.addresses.push(a.0.to_string()),
                            RData::AAAA(a) => answer.addresses.push(a.0.to_string()),
                            RData::CNAME(c) => {
                                let target = c.0.to_string();
                                let target = target.trim_end_matches('.').to_string();
                                if !answer.cname.contains(&target) {
                                    answer.cname.push(target);
                                }
                            }
                            _ => {}
                        }
                    }
                }
                Err(e) if e.is_nx_domain() => {
                    answer.error = Some(format!("{name} does not exist (NXDOMAIN)"));
                    break;
                }
                Err(e) if e.is_no_records_found() => {}
                Err(e) => {
                    answer.error = Some(format!("DNS did not answer for {name}: {e}"));
                    break;
                }
            }
        }
        if answer.error.is_none() && answer.addresses.is_empty() {
            answer.error = Some(format!("{name} has no A or AAAA record"));
        }
        // CAA matters only for a name that resolves (and a name that does not would make
        // every parent's lookup time out too).
        if answer.error.is_none() {
            answer.caa = self.caa(name).await;
        }
        answer
    }

    /// The CAA records that govern `name`: its own, else the closest parent's (RFC 8659).
    async fn caa(&self, name: &str) -> Vec<String> {
        let mut labels: &str = name;
        // The name and at most 4 parents: a 100-label name costs 5 lookups, not 100.
        for _ in 0..5 {
            if let Ok(lookup) = self
                .resolver
                .lookup(format!("{labels}.").as_str(), RecordType::CAA)
                .await
            {
                let found: Vec<String> = lookup
                    .answers()
                    .iter()
                    .filter_map(|r| match &r.data {
                        RData::CAA(c) => Some(format!(
                            "{labels}: {} {} \"{}\"",
                            c.issuer_critical as u8,
                            c.tag,
                            String::from_utf8_lossy(&c.value)
                        )),
                        _ => None,
                    })
                    .collect();
                if !found.is_empty() {
                    return found;
                }
            }
            match labels.split_once('.') {
                Some((_, parent)) if parent.contains('.') => labels = parent,
                _ => return Vec::new(),
            }
        }
        Vec::new()
    }

    /// Whether DNS proves project `slug` may have `name`: the `_cdeploy.<name>` TXT record
    /// holds `cdeploy-verify=<token>`, or (below an apex) the name is a CNAME to the
    /// project's own `<slug>.<platform>` host. The fix when not.
    pub async fn verify(
        &self,
        name: &str,
        token: &str,
        own_host: &str,
        cname: &[String],
    ) -> Result<(), String> {
        let wanted = format!("cdeploy-verify={token}");
        let txt = format!("_cdeploy.{name}.");
        if self.txt(&txt).await.iter().any(|v| v.trim() == wanted) {
            return Ok(());
        }
        let apex = cdeploy_core::domains::is_apex(name);
        if !apex && cname.iter().any(|c| c.eq_ignore_ascii_case(own_host)) {
            return Ok(());
        }
        let or_cname = if apex {
            String::new()
        } else {
            format!(", or a CNAME record {name} → {own_host}")
        };
        Err(format!(
            "{name} is not verified for this project: create a TXT record _cdeploy.{name} with \"{wanted}\"{or_cname}"
        ))
    }
}

/// What the DNS answer should be, and the fix when it is not. `expected_ips`: the
/// proxy's public addresses (may be unknown); `cname_target`: `<slug>.<domain>`.
pub fn dns_verdict(
    name: &str,
    answer: &DnsAnswer,
    expected_ips: &[IpAddr],
    cname_target: &str,
) -> Result<(), String> {
    if let Some(e) = &answer.error {
        let record = if cdeploy_core::domains::is_apex(name) {
            match expected_ips.first() {
                Some(ip) => format!("an A record {name} → {ip}"),
                None => format!("an A record {name} → this proxy's public address"),
            }
        } else {
            format!("a CNAME record {name} → {cname_target}")
        };
        return Err(format!("{e}: create {record}"));
    }
    if expected_ips.is_empty() {
        // Nothing to compare with: the self-check decides.
        return Ok(());
    }
    // Every address: a CA may pick any of them (Let's Encrypt prefers IPv6).
    let elsewhere: Vec<&String> = answer
        .addresses
        .iter()
        .filter(|a| {
            !a.parse::<IpAddr>()
                .is_ok_and(|ip| expected_ips.contains(&ip))
        })
        .collect();
    if elsewhere.is_empty() {
        return Ok(());
    }
    let ours: Vec<String> = expected_ips.iter().map(ToString::to_string).collect();
    let via = match answer.cname.last() {
        Some(last) => format!(" (through the CNAME to {last})"),
        None => String::new(),
    };
    let elsewhere: Vec<&str> = elsewhere.iter().map(|s| s.as_str()).collect();
    Err(format!(
        "the A record of {name}{via} points at {}, not this proxy ({})",
        elsewhere.join(", "),
        ours.join(", ")
    ))
}

/// Whether CAA records let `ca` (`letsencrypt.org`) issue; the fix when not.
pub fn caa_verdict(records: &[String], ca: Option<&str>) -> Result<(), String> {
    let issuers: Vec<&str> = records
        .iter()
        .filter(|r| r.contains(" issue \""))
        .filter_map(|r| {
            r.rsplit_once(" issue \"")
                .map(|(_, v)| v.trim_end_matches('"'))
        })
        .collect();
    let (Some(ca), false) = (ca, issuers.is_empty()) else {
        return Ok(());
    };
    if issuers
        .iter()
        .any(|v| v.split(';').next().unwrap_or("").trim() == ca)
    {
        return Ok(());
    }
    Err(format!(
        "CAA records allow only {} to issue: add a CAA record `0 issue \"{ca}\"`",
        issuers.join(", ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(addresses: &[&str], cname: &[&str]) -> DnsAnswer {
        DnsAnswer {
            server: "test".into(),
            addresses: addresses.iter().map(|s| s.to_string()).collect(),
            cname: cname.iter().map(|s| s.to_string()).collect(),
            ..DnsAnswer::default()
        }
    }

    #[test]
    fn dns_fixes_name_the_record() {
        let ours: Vec<IpAddr> = vec!["198.51.100.4".parse().unwrap()];
        assert!(dns_verdict("www.x.test", &answer(&["198.51.100.4"], &[]), &ours, "s.p").is_ok());
        let e =
            dns_verdict("www.x.test", &answer(&["203.0.113.9"], &[]), &ours, "s.p").unwrap_err();
        assert_eq!(
            e,
            "the A record of www.x.test points at 203.0.113.9, not this proxy (198.51.100.4)"
        );
        let mut missing = answer(&[], &[]);
        missing.error = Some("www.x.test does not exist (NXDOMAIN)".into());
        let e = dns_verdict("www.x.test", &missing, &ours, "shop.cdeploy.test").unwrap_err();
        assert!(
            e.ends_with("create a CNAME record www.x.test → shop.cdeploy.test"),
            "{e}"
        );
        let e = dns_verdict("x.test", &missing, &ours, "s.p").unwrap_err();
        assert!(
            e.ends_with("create an A record x.test → 198.51.100.4"),
            "{e}"
        );
        // Unknown public addresses: any answer will do, the self-check decides.
        assert!(dns_verdict("www.x.test", &answer(&["203.0.113.9"], &[]), &[], "s.p").is_ok());
    }

    #[test]
    fn caa_allows_or_names_the_record() {
        assert!(caa_verdict(&[], Some("letsencrypt.org")).is_ok());
        let other = vec!["x.test: 0 issue \"pki.goog\"".to_string()];
        let e = caa_verdict(&other, Some("letsencrypt.org")).unwrap_err();
        assert!(
            e.contains("pki.goog") && e.contains("0 issue \"letsencrypt.org\""),
            "{e}"
        );
        let ok = vec!["x.test: 0 issue \"letsencrypt.org; validationmethods=http-01\"".to_string()];
        assert!(caa_verdict(&ok, Some("letsencrypt.org")).is_ok());
        assert!(
            caa_verdict(&other, None).is_ok(),
            "an unknown CA's name is not guessed"
        );
    }
}
