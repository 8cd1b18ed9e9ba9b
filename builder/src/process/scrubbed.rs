//! The environment of a build command: basics, the project's `[env]` and its secrets,
//! the host's CA settings where they point into the system view, package-manager
//! caches under the project's cache. Nothing of the platform's own environment.

use std::collections::BTreeMap;
use std::path::Path;

use crate::sandbox::View;
use crate::BuildSpec;

/// CA settings of the host that builds keep (registries behind a private CA work), when
/// they point into the read-only system view. Never credentials.
const PASSED_THROUGH: &[&str] = &[
    "NODE_EXTRA_CA_CERTS",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "GIT_SSL_CAINFO",
];

/// The only variables a build command sees: basics plus the project's `[env]`.
/// Nothing of the platform's own environment (tokens, storage or cloud credentials) leaks.
pub fn scrubbed_env(
    spec: &BuildSpec,
    view: &View,
    path: &str,
    project_env: &BTreeMap<String, String>,
) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = vec![
        ("PATH".into(), path.to_string()),
        ("HOME".into(), view.home.display().to_string()),
        ("TMPDIR".into(), view.tmp.display().to_string()),
        ("LANG".into(), "C.UTF-8".into()),
        ("CI".into(), "1".into()),
        ("CDEPLOY".into(), "1".into()),
        ("CDEPLOY_DEPLOYMENT_ID".into(), spec.deployment_id.clone()),
        ("CDEPLOY_SLUG".into(), spec.slug.clone()),
        ("CDEPLOY_URL".into(), spec.url.clone()),
        (
            "CDEPLOY_ENV".into(),
            if spec.promote {
                "production"
            } else {
                "preview"
            }
            .into(),
        ),
        ("GIT_TERMINAL_PROMPT".into(), "0".into()),
        ("GIT_CONFIG_NOSYSTEM".into(), "1".into()),
        ("COREPACK_ENABLE_DOWNLOAD_PROMPT".into(), "0".into()),
        ("npm_config_update_notifier".into(), "false".into()),
        ("npm_config_fund".into(), "false".into()),
        ("npm_config_audit".into(), "false".into()),
        ("npm_config_progress".into(), "false".into()),
    ];
    for name in PASSED_THROUGH {
        if let Ok(v) = std::env::var(name) {
            if v.starts_with("/etc/ssl/") || v.starts_with("/usr/") || v == "/etc/ssl" {
                env.push((name.to_string(), v));
            }
        }
    }
    // Node.js from the registry trusts only its bundled CAs; the host's store (a
    // registry mirror or egress proxy behind a private CA) is what Debian's Node and
    // npm trust, so builds' Node does too. /etc/npmrc is the operator's system-wide npm
    // configuration (read by Debian's npm), kept for the fetched npm.
    const SYSTEM_CAS: &str = "/etc/ssl/certs/ca-certificates.crt";
    if !env.iter().any(|(k, _)| k == "NODE_EXTRA_CA_CERTS") && Path::new(SYSTEM_CAS).is_file() {
        env.push(("NODE_EXTRA_CA_CERTS".into(), SYSTEM_CAS.into()));
    }
    if Path::new("/etc/npmrc").is_file() {
        env.push(("npm_config_globalconfig".into(), "/etc/npmrc".into()));
    }
    if let Some(cache) = &view.cache {
        for (name, sub) in [
            ("npm_config_cache", "npm"),
            ("YARN_CACHE_FOLDER", "yarn"),
            // pnpm keeps its store under XDG_DATA_HOME (npm warns about `npm_config_store_dir`).
            ("XDG_DATA_HOME", "data"),
            ("XDG_CACHE_HOME", "xdg"),
            ("COREPACK_HOME", "corepack"),
        ] {
            env.push((name.into(), cache.join(sub).display().to_string()));
        }
    }
    for (k, v) in project_env {
        env.retain(|(name, _)| name != k);
        env.push((k.clone(), v.clone()));
    }
    env
}
