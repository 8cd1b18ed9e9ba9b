//! [`EcsSettings`]: the cluster, task definition and network builds run in, from the
//! seed's variable names, and [`ClaimFrom`]: where a build's one-time claim must come
//! from.

use std::net::IpAddr;
use std::time::Duration;

use aws_config::Region;
use aws_sdk_ecs::Client;

/// ECS settings, from the seed's variable names.
#[derive(Debug, Clone)]
pub struct EcsSettings {
    /// `CLUSTER`
    pub cluster: String,
    /// `TASK`: task definition family, `family:revision` or ARN.
    pub task_definition: String,
    /// `ECS_CONTAINER_NAME` (default `builder-image`).
    pub container: String,
    /// `ECS_SUBNETS`, comma-separated.
    pub subnets: Vec<String>,
    /// `ECS_SECURITY_GROUPS`, comma-separated.
    pub security_groups: Vec<String>,
    /// `ECS_ASSIGN_PUBLIC_IP=1` for tasks in public subnets without a NAT gateway.
    pub assign_public_ip: bool,
    /// `ECS_REGION`, else the standard chain.
    pub region: Option<String>,
    /// `ECS_ACCESS_KEY`/`ECS_SECRET_ACCESS_KEY`, else the standard chain (task role…).
    pub credentials: Option<(String, String)>,
    /// `AWS_ENDPOINT_URL_ECS`/`AWS_ENDPOINT_URL`, for ECS-compatible endpoints.
    pub endpoint: Option<String>,
    pub poll: Duration,
    pub stop_grace: Duration,
    /// Where builders reach the control plane's API (`--builder-api`): a load balancer
    /// in front of the replicas, or several URLs, comma-separated.
    pub builder_api: String,
    /// A build still running this long after it was created is stopped and failed,
    /// whatever ECS or the log say (the builder enforces `BUILD_TIMEOUT` itself; this
    /// covers a task that never started or a watcher that cannot reach ECS).
    pub deadline: Duration,
    /// `ECS_CLAIM_FROM`: where a build's claim must come from.
    pub claim_from: ClaimFrom,
}

/// Where a build's one-time claim is taken from (`ECS_CLAIM_FROM`). The claim travels in
/// the task's overrides, which anyone allowed `ecs:DescribeTasks` reads; only the task
/// itself sends from its network interface's address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClaimFrom {
    /// `task` (the default): the caller's address must be exactly one of the task's ENI
    /// addresses. `ECS_CLAIM_PROXIES=CIDR,…`: the load balancers between the tasks and
    /// the API; from a peer inside those ranges (and only then), the caller is the
    /// rightmost `X-Forwarded-For` entry outside them.
    Task { proxies: Vec<ipnet::IpNet> },
    /// `anywhere`: the claim alone admits (the builder API is reached through a NAT or a
    /// proxy that hides the task's address); docs/aws.md says what that leaves open.
    Anywhere,
}

impl ClaimFrom {
    /// The address a claim came from: the peer, or behind a trusted load balancer the
    /// rightmost forwarded address that is not one of them. Canonical (an IPv4-mapped
    /// IPv6 address is its IPv4 address), never widened to a network.
    pub fn caller(
        proxies: &[ipnet::IpNet],
        headers: &axum::http::HeaderMap,
        peer: IpAddr,
    ) -> IpAddr {
        let trusted = |a: &IpAddr| proxies.iter().any(|n| n.contains(a));
        let peer = peer.to_canonical();
        if !trusted(&peer) {
            return peer;
        }
        for entry in cdeploy_proxy::forwarded_for(headers).iter().rev() {
            let Some(a) = cdeploy_proxy::parse_forwarded(entry) else {
                // Unreadable: nothing further left can be believed.
                return peer;
            };
            if !trusted(&a) {
                return a;
            }
        }
        peer
    }
}

impl EcsSettings {
    pub fn from_env(
        get: impl Fn(&str) -> Option<String>,
        builder_api: Option<&str>,
        poll: Duration,
        stop_grace: Duration,
        build_timeout: Duration,
    ) -> anyhow::Result<Self> {
        let get = |k: &str| {
            get(k)
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
        };
        let list = |k: &str| -> Vec<String> {
            get(k)
                .map(|v| {
                    v.split(',')
                        .map(|s| s.trim().to_string())
                        .filter(|s| !s.is_empty())
                        .collect()
                })
                .unwrap_or_default()
        };
        let required = |k: &str, what: &str| {
            get(k).ok_or_else(|| anyhow::anyhow!("--dispatcher ecs: set {k} ({what})"))
        };
        let settings = EcsSettings {
            cluster: required("CLUSTER", "the ECS cluster name or ARN")?,
            task_definition: required("TASK", "the builder's task definition")?,
            container: get("ECS_CONTAINER_NAME").unwrap_or_else(|| "builder-image".into()),
            subnets: list("ECS_SUBNETS"),
            security_groups: list("ECS_SECURITY_GROUPS"),
            assign_public_ip: matches!(
                get("ECS_ASSIGN_PUBLIC_IP").as_deref(),
                Some("1" | "true" | "ENABLED" | "yes")
            ),
            region: get("ECS_REGION"),
            credentials: match (get("ECS_ACCESS_KEY"), get("ECS_SECRET_ACCESS_KEY")) {
                (Some(k), Some(s)) => Some((k, s)),
                (None, None) => None,
                _ => anyhow::bail!("set both ECS_ACCESS_KEY and ECS_SECRET_ACCESS_KEY, or neither (to use the task role or AWS_* credentials)"),
            },
            endpoint: get("AWS_ENDPOINT_URL_ECS").or_else(|| get("AWS_ENDPOINT_URL")),
            builder_api: builder_api.map(str::trim).unwrap_or("").to_string(),
            poll,
            stop_grace,
            // Room for Fargate to provision the task and pull the image.
            deadline: build_timeout + Duration::from_secs(600),
            claim_from: match get("ECS_CLAIM_FROM").as_deref() {
                None | Some("task") => ClaimFrom::Task {
                    proxies: list("ECS_CLAIM_PROXIES")
                        .iter()
                        .map(|n| {
                            n.parse::<ipnet::IpNet>()
                                .or_else(|_| n.parse::<IpAddr>().map(ipnet::IpNet::from))
                                .map_err(|_| anyhow::anyhow!("ECS_CLAIM_PROXIES: {n:?} is not an address range; expected the load balancers' ranges between the build tasks and the API, e.g. 10.0.0.0/24,10.0.1.0/24"))
                        })
                        .collect::<anyhow::Result<_>>()?,
                },
                Some("anywhere") => ClaimFrom::Anywhere,
                Some(other) => anyhow::bail!(
                    "ECS_CLAIM_FROM={other:?}: expected `task` (the claim must come from the build task's address) or `anywhere`"
                ),
            },
        };
        if settings.subnets.is_empty() {
            anyhow::bail!(
                "--dispatcher ecs: set ECS_SUBNETS (comma-separated subnet ids for the build tasks)"
            );
        }
        if settings.builder_api.is_empty() {
            anyhow::bail!("--dispatcher ecs: set --builder-api (CDEPLOY_BUILDER_API): the URL build tasks reach this API at, e.g. https://deploy.internal");
        }
        for url in settings.builder_api.split(',') {
            let url = url.trim();
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                anyhow::bail!("--builder-api {url:?}: expected http(s):// URLs, comma-separated");
            }
        }
        Ok(settings)
    }

    pub(super) async fn client(&self) -> Client {
        let credentials = self
            .credentials
            .as_ref()
            .map(|(k, s)| (k.as_str(), s.as_str()));
        let sdk = cdeploy_storage::aws::aws_config_with(
            self.region.as_deref(),
            credentials,
            self.endpoint.as_deref(),
            "cdeploy-ecs-env",
        )
        .await;
        let mut conf = aws_sdk_ecs::config::Builder::from(&sdk);
        if sdk.region().is_none() {
            conf = conf.region(Region::new("us-east-1"));
        }
        Client::from_conf(conf.build())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(xff: &[&str]) -> axum::http::HeaderMap {
        let mut h = axum::http::HeaderMap::new();
        for v in xff {
            h.append("x-forwarded-for", v.parse().unwrap());
        }
        h
    }

    #[test]
    fn a_claim_comes_from_the_peer_unless_a_trusted_balancer_forwards_it() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let albs: Vec<ipnet::IpNet> = vec!["10.0.0.0/24".parse().unwrap()];
        // No balancer trusted: the header is never read.
        assert_eq!(
            ClaimFrom::caller(&[], &headers(&["10.1.2.3"]), ip("10.0.9.9")),
            ip("10.0.9.9")
        );
        // A peer outside the balancers' ranges (a build task sending the header itself).
        assert_eq!(
            ClaimFrom::caller(&albs, &headers(&["10.1.2.3"]), ip("10.0.9.9")),
            ip("10.0.9.9")
        );
        // Through the balancer: the rightmost entry it did not write, whatever a caller
        // put further left.
        assert_eq!(
            ClaimFrom::caller(&albs, &headers(&["10.1.2.3, 10.7.7.7"]), ip("10.0.0.5")),
            ip("10.7.7.7")
        );
        assert_eq!(
            ClaimFrom::caller(
                &albs,
                &headers(&["10.1.2.3", "10.7.7.7:4444, 10.0.0.6"]),
                ip("10.0.0.5")
            ),
            ip("10.7.7.7")
        );
        // Unreadable or missing: the balancer itself, which is no task.
        assert_eq!(
            ClaimFrom::caller(&albs, &headers(&["10.1.2.3, junk"]), ip("10.0.0.5")),
            ip("10.0.0.5")
        );
        assert_eq!(
            ClaimFrom::caller(&albs, &headers(&[]), ip("10.0.0.5")),
            ip("10.0.0.5")
        );
        // IPv4-mapped IPv6 is its IPv4 address; IPv6 is compared whole, never by /64.
        assert_eq!(
            ClaimFrom::caller(&[], &headers(&[]), ip("::ffff:10.0.9.9")),
            ip("10.0.9.9")
        );
        assert_eq!(
            ClaimFrom::caller(&[], &headers(&[]), ip("2001:db8::1234")),
            ip("2001:db8::1234")
        );
        assert_eq!(
            ClaimFrom::caller(&albs, &headers(&["[2001:db8::5]:99"]), ip("10.0.0.5")),
            ip("2001:db8::5")
        );
    }
}
