//! The builder contract: a [`BuildSpec`] read from environment variables (the seed's names
//! kept). All names live here, documented, so the Dockerfile, the ECS dispatcher and the
//! docs agree with the code.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use cdeploy_core::config::{BuildConfig, SiteConfig};
use cdeploy_core::{git, ids};

use crate::{BuildSpec, SourceSpec};

/// Repository to clone (seed name).
pub const GIT_REPOSITORY_URL: &str = "GIT_REPOSITORY__URL";
/// Project slug (seed name).
pub const PROJECT_ID: &str = "PROJECT_ID";
pub const DEPLOYMENT_ID: &str = "DEPLOYMENT_ID";
/// Branch, tag or commit to build.
pub const GIT_REF: &str = "GIT_REF";
/// Storage key of an uploaded source's `source.json`, instead of a git URL.
pub const SOURCE_MANIFEST: &str = "SOURCE_MANIFEST";
pub const BUILD_ROOT: &str = "BUILD_ROOT";
pub const INSTALL_COMMAND: &str = "INSTALL_COMMAND";
pub const BUILD_COMMAND: &str = "BUILD_COMMAND";
pub const OUTPUT_DIR: &str = "OUTPUT_DIR";
/// `[build] node`: the Node.js version (else read from the project).
pub const NODE_VERSION: &str = "NODE_VERSION";
/// `0`: skip the dependency cache (`cdeploy deploy --force`).
pub const BUILD_CACHE: &str = "BUILD_CACHE";
/// The npm registry Node.js and package managers are fetched from.
pub const NPM_REGISTRY: &str = "NPM_REGISTRY";
/// Where fetched toolchains are kept [default: `CACHE_DIR/toolchains`, else a temp dir].
pub const TOOLCHAIN_DIR: &str = "TOOLCHAIN_DIR";
/// The toolchain directory's size cap in MiB (default 10240): past it, the least
/// recently used versions no running build holds are removed.
pub const TOOLCHAIN_MAX_MB: &str = "TOOLCHAIN_MAX_MB";
/// Build-time variables as a JSON object of strings.
pub const BUILD_ENV: &str = "BUILD_ENV";
/// `[site]` settings as a JSON object (`{"spa":true,"clean_urls":true}`).
pub const SITE_CONFIG: &str = "SITE_CONFIG";
/// Build timeout in seconds (default 900).
pub const BUILD_TIMEOUT: &str = "BUILD_TIMEOUT";
/// URL reported when the deployment is ready (default `http://<slug>.<DOMAIN>`).
pub const DEPLOYMENT_URL: &str = "DEPLOYMENT_URL";
/// Public domain of the proxy (default `localhost:8000`).
pub const DOMAIN: &str = "DOMAIN";
/// `0` to build without making the deployment production.
pub const PROMOTE: &str = "PROMOTE";
/// The trust scope of the build's caches (`production`, `preview`, `branch-<hex>`).
pub const CACHE_SCOPE: &str = "CACHE_SCOPE";
/// API mode (distributed mode's builders): where the control plane's API is (several
/// URLs, comma-separated, are tried in turn), and the one-time claim that identifies
/// this task's build. With them the builder needs no other setting.
pub const CDEPLOY_API: &str = "CDEPLOY_API";
pub const BUILD_CLAIM: &str = "BUILD_CLAIM";
/// Scratch space (default: a fresh temporary directory).
pub const WORK_DIR: &str = "WORK_DIR";
/// Package-manager cache kept between builds (the project's own subdirectory is what a
/// build sees).
pub const CACHE_DIR: &str = "CACHE_DIR";
/// `1` runs build commands without a sandbox when none can be made (logged as a
/// warning in every build). Without it such a builder refuses to build.
pub const UNSAFE_NO_SANDBOX: &str = "CDEPLOY_UNSAFE_NO_SANDBOX";
/// The uid build commands run as when the builder runs as root (default 64000).
pub const BUILD_UID: &str = "BUILD_UID";
/// Limits of the build: memory in MiB (default 4096), processes (default 1024), disk in
/// MiB (default 10240).
pub const BUILD_MEMORY_MB: &str = "BUILD_MEMORY_MB";
pub const BUILD_PIDS: &str = "BUILD_PIDS";
/// Comma-separated TCP ports of the host's loopback that build commands may reach
/// (default: none).
pub const BUILD_HOST_PORTS: &str = "BUILD_HOST_PORTS";
pub const BUILD_DISK_MB: &str = "BUILD_DISK_MB";
/// Local storage directory.
pub const STORAGE_DIR: &str = "STORAGE_DIR";
/// S3 storage (distributed mode): the bucket, plus `S3_PREFIX`, `S3_REGION`,
/// `S3_ENDPOINT`, `S3_ACCESS_KEY`, `S3_SECRET_ACCESS_KEY` (else the task role).
pub const S3_BUCKET_NAME: &str = "S3_BUCKET_NAME";
/// Redis log bus (distributed mode): `REDIS_URL`, or the seed's `REDIS_HOST`,
/// `REDIS_PORT`, `REDIS_USERNAME`, `REDIS_PASSWORD` (`REDIS_TLS=1` for TLS);
/// `REDIS_CA_CERT` names a PEM file for a private CA.
pub const REDIS_URL: &str = "REDIS_URL";
pub const REDIS_CA_CERT: &str = "REDIS_CA_CERT";
/// Seconds the builder waits, before exiting, for Redis to take its last events
/// (default 120).
pub const REDIS_FLUSH_TIMEOUT: &str = "REDIS_FLUSH_TIMEOUT";

/// The per-deployment variables of a spec: what the ECS dispatcher puts in a task's
/// overrides. Never storage, Redis or AWS settings — those live in the task definition,
/// and credentials come from the task role (overrides are readable by anyone allowed
/// `ecs:DescribeTasks`).
pub fn to_env(spec: &BuildSpec) -> Vec<(&'static str, String)> {
    let mut env = vec![
        (PROJECT_ID, spec.slug.clone()),
        (DEPLOYMENT_ID, spec.deployment_id.clone()),
    ];
    match &spec.source {
        SourceSpec::Git { url, git_ref } => {
            env.push((GIT_REPOSITORY_URL, url.clone()));
            if let Some(r) = git_ref {
                env.push((GIT_REF, r.clone()));
            }
        }
        SourceSpec::Upload { source_map_key } => {
            env.push((SOURCE_MANIFEST, source_map_key.clone()))
        }
    }
    let b = &spec.build;
    for (name, value) in [
        (BUILD_ROOT, &b.root),
        (INSTALL_COMMAND, &b.install),
        (BUILD_COMMAND, &b.command),
        (OUTPUT_DIR, &b.output),
        (NODE_VERSION, &b.node),
    ] {
        if let Some(v) = value {
            env.push((name, v.clone()));
        }
    }
    if b.cache == Some(false) {
        env.push((BUILD_CACHE, "0".into()));
    }
    if !spec.env.is_empty() {
        env.push((
            BUILD_ENV,
            serde_json::to_string(&spec.env).expect("serializes"),
        ));
    }
    if spec.site != SiteConfig::default() {
        env.push((
            SITE_CONFIG,
            serde_json::to_string(&spec.site).expect("serializes"),
        ));
    }
    env.push((BUILD_TIMEOUT, spec.timeout.as_secs().to_string()));
    env.push((DEPLOYMENT_URL, spec.url.clone()));
    if !spec.promote {
        env.push((PROMOTE, "0".into()));
    }
    if !spec.cache_scope.is_empty() {
        env.push((CACHE_SCOPE, spec.cache_scope.clone()));
    }
    env
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EnvError {
    #[error("{0} is not set")]
    Missing(&'static str),
    #[error("{name}: {message}")]
    Invalid { name: &'static str, message: String },
    #[error("set either {GIT_REPOSITORY_URL} or {SOURCE_MANIFEST}, not both")]
    BothSources,
    #[error("{0}")]
    Unsupported(String),
}

/// A variable lookup that treats empty values as unset.
type Lookup<'a> = &'a dyn Fn(&str) -> Option<String>;

fn invalid(name: &'static str, message: String) -> EnvError {
    EnvError::Invalid { name, message }
}

/// Reads the spec from a variable lookup (the process environment in `main`).
pub fn spec_from(get: impl Fn(&str) -> Option<String>) -> Result<BuildSpec, EnvError> {
    let get = |name: &str| get(name).filter(|v| !v.is_empty());
    let get: Lookup = &get;

    let slug = get(PROJECT_ID).ok_or(EnvError::Missing(PROJECT_ID))?;
    ids::validate_slug(&slug).map_err(|e| invalid(PROJECT_ID, e.to_string()))?;
    let deployment_id = match get(DEPLOYMENT_ID) {
        Some(id) => ids::DeploymentId::parse(&id)
            .ok_or_else(|| {
                invalid(
                    DEPLOYMENT_ID,
                    format!("{id:?} is not a deployment id ([a-z0-9]{{16}})"),
                )
            })?
            .to_string(),
        None => ids::DeploymentId::generate().to_string(),
    };
    let source = source_from(get)?;
    let build = build_from(get)?;
    let env = build_env_from(get)?;
    let site: SiteConfig = match get(SITE_CONFIG) {
        Some(json) => {
            serde_json::from_str(&json).map_err(|e| invalid(SITE_CONFIG, e.to_string()))?
        }
        None => SiteConfig::default(),
    };
    let timeout = timeout_from(get)?;
    let domain = get(DOMAIN).unwrap_or_else(|| "localhost:8000".to_string());
    let url =
        get(DEPLOYMENT_URL).unwrap_or_else(|| cdeploy_core::api::site_url(&domain, &slug, None));
    Ok(BuildSpec {
        deployment_id,
        slug,
        source,
        build,
        env,
        site,
        url,
        promote: get(PROMOTE).as_deref() != Some("0"),
        timeout: Duration::from_secs(timeout),
        // Stored secrets never travel in the environment (task overrides): an API
        // builder receives them in the spec it claims.
        secrets: Default::default(),
        cache_scope: get(CACHE_SCOPE).unwrap_or_default(),
        reuse: None,
    })
}

/// A git repository (and ref), or an uploaded source's manifest: exactly one.
fn source_from(get: Lookup) -> Result<SourceSpec, EnvError> {
    match (get(GIT_REPOSITORY_URL), get(SOURCE_MANIFEST)) {
        (Some(_), Some(_)) => Err(EnvError::BothSources),
        (Some(url), None) => {
            git::validate_git_url(&url).map_err(|e| invalid(GIT_REPOSITORY_URL, e.to_string()))?;
            let git_ref = get(GIT_REF);
            if let Some(r) = &git_ref {
                git::validate_git_ref(r).map_err(|e| invalid(GIT_REF, e.to_string()))?;
            }
            Ok(SourceSpec::Git { url, git_ref })
        }
        (None, Some(key)) => {
            cdeploy_storage::check_key(&key)
                .map_err(|e| invalid(SOURCE_MANIFEST, e.to_string()))?;
            Ok(SourceSpec::Upload {
                source_map_key: key,
            })
        }
        (None, None) => Err(EnvError::Missing(GIT_REPOSITORY_URL)),
    }
}

/// The `[build]` settings given by the request.
fn build_from(get: Lookup) -> Result<BuildConfig, EnvError> {
    let build = BuildConfig {
        root: get(BUILD_ROOT),
        install: get(INSTALL_COMMAND),
        command: get(BUILD_COMMAND),
        output: get(OUTPUT_DIR),
        node: get(NODE_VERSION),
        cache: get(BUILD_CACHE).map(|v| v != "0"),
        // A standalone builder writes storage itself and has no earlier builds to reuse.
        skip_unchanged: None,
    };
    build
        .validate()
        .map_err(|(key, msg)| invalid(BUILD_ROOT, format!("{key} {msg}")))?;
    Ok(build)
}

/// Build-time variables: a JSON object of strings with valid names.
fn build_env_from(get: Lookup) -> Result<BTreeMap<String, String>, EnvError> {
    let env: BTreeMap<String, String> = match get(BUILD_ENV) {
        Some(json) => serde_json::from_str(&json)
            .map_err(|e| invalid(BUILD_ENV, format!("not a JSON object of strings: {e}")))?,
        None => BTreeMap::new(),
    };
    if let Some(bad) = env.keys().find(|k| !cdeploy_core::config::is_env_name(k)) {
        return Err(invalid(
            BUILD_ENV,
            format!("{bad:?} is not a valid variable name"),
        ));
    }
    Ok(env)
}

/// The build timeout in seconds (default 900).
fn timeout_from(get: Lookup) -> Result<u64, EnvError> {
    match get(BUILD_TIMEOUT) {
        Some(s) => s.parse::<u64>().ok().filter(|n| *n > 0).ok_or_else(|| {
            invalid(
                BUILD_TIMEOUT,
                format!("{s:?} is not a positive number of seconds"),
            )
        }),
        None => Ok(900),
    }
}

/// The sandbox settings of a builder run by hand or in a container.
pub fn sandbox_options_from(
    get: impl Fn(&str) -> Option<String>,
    work_root: PathBuf,
) -> Result<crate::sandbox::Options, EnvError> {
    let get = |name: &str| get(name).filter(|v| !v.is_empty());
    let number = |name: &'static str, default: u64| -> Result<u64, EnvError> {
        match get(name) {
            None => Ok(default),
            Some(v) => v
                .parse::<u64>()
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| EnvError::Invalid {
                    name,
                    message: format!("{v:?} is not a positive number"),
                }),
        }
    };
    let d = crate::sandbox::Limits::default();
    Ok(crate::sandbox::Options {
        unsandboxed: get(UNSAFE_NO_SANDBOX).as_deref() == Some("1"),
        build_uid: number(BUILD_UID, 64000)? as u32,
        limits: crate::sandbox::Limits {
            memory_bytes: number(BUILD_MEMORY_MB, d.memory_bytes >> 20)? << 20,
            pids: number(BUILD_PIDS, d.pids)?,
            disk_bytes: number(BUILD_DISK_MB, d.disk_bytes >> 20)? << 20,
        },
        scope: format!("cdeploy-builder-{}", std::process::id()),
        host_ports: match get(BUILD_HOST_PORTS) {
            None => Vec::new(),
            Some(v) => parse_ports(&v).map_err(|e| EnvError::Invalid {
                name: BUILD_HOST_PORTS,
                message: e.to_string(),
            })?,
        },
        probe_dir: work_root.join("sandbox-probe"),
    })
}

/// `TOOLCHAIN_MAX_MB`: None when unset (the default cap), else a positive number.
pub fn toolchain_max_mb(get: impl Fn(&str) -> Option<String>) -> Result<Option<u64>, EnvError> {
    match get(TOOLCHAIN_MAX_MB).filter(|v| !v.is_empty()) {
        None => Ok(None),
        Some(v) => v
            .parse::<u64>()
            .ok()
            .filter(|n| *n > 0)
            .map(Some)
            .ok_or_else(|| EnvError::Invalid {
                name: TOOLCHAIN_MAX_MB,
                message: format!("{v:?} is not a positive number of MiB"),
            }),
    }
}

/// An item of a port list that is not a TCP port.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0:?} is not a TCP port")]
pub struct BadPort(pub String);

/// `9418,8080` → the ports; anything else is an error naming the bad item.
pub fn parse_ports(list: &str) -> Result<Vec<u16>, BadPort> {
    list.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| {
            p.parse::<u16>()
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| BadPort(p.to_string()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn from(pairs: &[(&str, &str)]) -> Result<BuildSpec, EnvError> {
        let map: BTreeMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        spec_from(|k| map.get(k).cloned())
    }

    #[test]
    fn seed_variables() {
        let s = from(&[
            (GIT_REPOSITORY_URL, "https://example.com/a.git"),
            (PROJECT_ID, "my-app"),
        ])
        .unwrap();
        assert_eq!(s.slug, "my-app");
        assert_eq!(s.url, "http://my-app.localhost:8000");
        assert!(
            matches!(s.source, SourceSpec::Git { ref url, git_ref: None } if url == "https://example.com/a.git")
        );
        assert!(s.promote);
    }

    #[test]
    fn overrides_round_trip() {
        let spec = BuildSpec {
            deployment_id: "abcdefgh12345678".into(),
            slug: "my-app".into(),
            source: SourceSpec::Upload {
                source_map_key: "deployments/abcdefgh12345678/source.json".into(),
            },
            build: BuildConfig {
                root: Some("web".into()),
                install: None,
                command: Some("npm run build".into()),
                output: Some("dist".into()),
                node: Some("22".into()),
                cache: Some(false),
                skip_unchanged: None,
            },
            env: [("VITE_X".to_string(), "1".to_string())].into(),
            site: SiteConfig {
                spa: Some(false),
                clean_urls: None,
                require_index: None,
            },
            url: "https://my-app.example.com".into(),
            promote: true,
            timeout: Duration::from_secs(60),
            secrets: Default::default(),
            cache_scope: "branch-0123456789ab".into(),
            reuse: None,
        };
        let vars = to_env(&spec);
        let back =
            spec_from(|k| vars.iter().find(|(n, _)| *n == k).map(|(_, v)| v.clone())).unwrap();
        assert_eq!(format!("{back:?}"), format!("{spec:?}"));
        assert!(vars.iter().all(|(n, _)| !n.starts_with("S3_")
            && !n.starts_with("REDIS")
            && !n.starts_with("AWS")));
    }

    #[test]
    fn refuses_bad_input() {
        assert_eq!(from(&[]).unwrap_err(), EnvError::Missing(PROJECT_ID));
        assert!(matches!(
            from(&[(PROJECT_ID, "Bad"), (GIT_REPOSITORY_URL, "https://x/y")]),
            Err(EnvError::Invalid {
                name: PROJECT_ID,
                ..
            })
        ));
        assert!(matches!(
            from(&[(PROJECT_ID, "a"), (GIT_REPOSITORY_URL, "--upload-pack=x")]),
            Err(EnvError::Invalid {
                name: GIT_REPOSITORY_URL,
                ..
            })
        ));
        assert!(matches!(
            from(&[
                (PROJECT_ID, "a"),
                (GIT_REPOSITORY_URL, "https://x/y"),
                (BUILD_ENV, "[1]")
            ]),
            Err(EnvError::Invalid {
                name: BUILD_ENV,
                ..
            })
        ));
        assert!(matches!(
            from(&[
                (PROJECT_ID, "a"),
                (GIT_REPOSITORY_URL, "https://x/y"),
                (OUTPUT_DIR, "../x")
            ]),
            Err(EnvError::Invalid { .. })
        ));
    }
}
