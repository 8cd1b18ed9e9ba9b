//! The CLI's saved credentials: `$XDG_CONFIG_HOME/cdeploy/credentials.json` (mode 0600),
//! one token per API URL. Written by `cdeploy login` and by a server's first start.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Credentials {
    #[serde(default)]
    pub servers: BTreeMap<String, ServerCredentials>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ServerCredentials {
    pub token: String,
}

/// Where the file lives.
pub fn path() -> Option<PathBuf> {
    let base = match std::env::var_os("XDG_CONFIG_HOME").filter(|v| !v.is_empty()) {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(std::env::var_os("HOME")?).join(".config"),
    };
    Some(base.join("cdeploy").join("credentials.json"))
}

/// API URLs are compared without a trailing slash.
pub fn normalize_url(url: &str) -> String {
    url.trim_end_matches('/').to_string()
}

impl Credentials {
    pub fn load() -> Credentials {
        path()
            .and_then(|p| std::fs::read(p).ok())
            .and_then(|data| serde_json::from_slice(&data).ok())
            .unwrap_or_default()
    }

    pub fn token_for(&self, api: &str) -> Option<&str> {
        self.servers
            .get(&normalize_url(api))
            .map(|s| s.token.as_str())
    }

    /// Saves `token` for `api`, keeping other servers' entries.
    pub fn save_token(api: &str, token: &str) -> std::io::Result<PathBuf> {
        let mut creds = Credentials::load();
        creds.servers.insert(
            normalize_url(api),
            ServerCredentials {
                token: token.to_string(),
            },
        );
        let path = path()
            .ok_or_else(|| std::io::Error::other("neither XDG_CONFIG_HOME nor HOME is set"))?;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        write_private(
            &path,
            &serde_json::to_vec_pretty(&creds).expect("credentials serialize"),
        )?;
        Ok(path)
    }
}

impl Credentials {
    /// Forgets the token saved for `api`; returns whether there was one.
    pub fn remove_token(api: &str) -> std::io::Result<bool> {
        let mut creds = Credentials::load();
        if creds.servers.remove(&normalize_url(api)).is_none() {
            return Ok(false);
        }
        let path = path()
            .ok_or_else(|| std::io::Error::other("neither XDG_CONFIG_HOME nor HOME is set"))?;
        write_private(
            &path,
            &serde_json::to_vec_pretty(&creds).expect("credentials serialize"),
        )?;
        Ok(true)
    }
}

/// Writes a file readable only by its owner (created 0600, then renamed into place).
pub fn write_private(path: &std::path::Path, data: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(data)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}
