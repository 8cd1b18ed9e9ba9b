//! The operator's keyring for stored secrets, webhook secrets and notification
//! signing secrets.
//!
//! Each value is sealed with XChaCha20-Poly1305 under the current key of the
//! [`Keyring`], with the project, name and target as associated data: a sealed value
//! copied to another row (or project) does not open. The keyring is the operator's (a
//! file or `CDEPLOY_SECRETS_KEY`); its first key seals, the others only open, and at
//! start the server reseals every value under the first key, which is how a key is
//! rotated (docs/secrets.md).

use std::io::Write;
use std::path::Path as FsPath;

use cdeploy_core::api::EnvTarget;

pub use crate::config::KeySource;
use crate::db::{SecretRow, Store};

/// What a project's webhook secret is sealed to.
pub fn webhook_secret_aad(slug: &str) -> Vec<u8> {
    format!("cdeploy-webhook-secret\0{slug}").into_bytes()
}

/// What a notification endpoint's signing secret is sealed to.
pub fn notify_secret_aad(slug: &str, id: &str) -> Vec<u8> {
    format!("cdeploy-notify-secret\0{slug}\0{id}").into_bytes()
}

/// The operator's keys: the first seals, every one opens.
pub struct Keyring {
    ring: cdeploy_core::seal::Keyring,
}

/// Why a stored value does not open.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("it was sealed with key {0}, which is not in this server's keyring (keep an old key until the server has resealed with the new one)")]
    UnknownKey(String),
    #[error("it does not open with key {0}: the row was altered, or moved from another project, name or target")]
    Corrupt(String),
}

impl Keyring {
    /// The keyring from its source, with every value sealed under an older key resealed
    /// with the first one (how a key rotates); `None` when the server has none.
    pub async fn load_and_rotate(
        source: &KeySource,
        store: &dyn Store,
    ) -> anyhow::Result<Option<std::sync::Arc<Keyring>>> {
        let keyring = Keyring::load(source)?.map(std::sync::Arc::new);
        if let Some(keys) = &keyring {
            let (resealed, unopened) = keys.rotate(store).await?;
            if resealed > 0 {
                tracing::info!(
                    resealed,
                    key = keys.current_id(),
                    "stored secrets resealed with the current key"
                );
            }
            if unopened > 0 {
                tracing::warn!(unopened, "stored secrets no key of this server opens: builds that need them fail until the key that sealed them is back in the keyring");
            }
        }
        Ok(keyring)
    }

    /// Parses keys: one per line, each the base64 of 32 random bytes (`openssl rand
    /// -base64 32`); blank lines and `#` comments are skipped; the first key seals.
    pub fn parse(text: &str) -> anyhow::Result<Keyring> {
        Ok(Keyring {
            ring: cdeploy_core::seal::Keyring::parse(text).map_err(anyhow::Error::msg)?,
        })
    }

    /// The keyring from its source; `None` when the server has none.
    pub fn load(source: &KeySource) -> anyhow::Result<Option<Keyring>> {
        use anyhow::Context;
        match source {
            KeySource::None => Ok(None),
            KeySource::Env(text) => Keyring::parse(text)
                .context("CDEPLOY_SECRETS_KEY")
                .map(Some),
            KeySource::File(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("--secrets-key-file {}", path.display()))?;
                warn_if_readable(path);
                Keyring::parse(&text)
                    .with_context(|| format!("--secrets-key-file {}", path.display()))
                    .map(Some)
            }
            KeySource::Generated(path) => {
                if !path.exists() {
                    generate_key_file(path)
                        .with_context(|| format!("cannot create {}", path.display()))?;
                    tracing::info!(path = %path.display(), "made a key for stored secrets; keep it with backups of the database, apart from them");
                }
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read {}", path.display()))?;
                Keyring::parse(&text)
                    .with_context(|| path.display().to_string())
                    .map(Some)
            }
        }
    }

    /// The id of the key that seals.
    pub fn current_id(&self) -> &str {
        self.ring.current_id()
    }

    fn aad(slug: &str, name: &str, target: EnvTarget) -> Vec<u8> {
        format!("cdeploy-secret\0{slug}\0{name}\0{target}").into_bytes()
    }

    /// Seals a stored variable: `(key id, base64 of nonce and ciphertext)`.
    pub fn seal(&self, slug: &str, name: &str, target: EnvTarget, value: &str) -> (String, String) {
        self.seal_with(&Keyring::aad(slug, name, target), value)
    }

    /// Opens a stored variable.
    pub fn open(&self, row: &SecretRow) -> Result<String, OpenError> {
        self.open_with(
            &Keyring::aad(&row.slug, &row.name, row.target),
            &row.key_id,
            &row.sealed,
        )
    }

    /// Seals any value bound to `aad` (what it is, and whose).
    pub fn seal_with(&self, aad: &[u8], value: &str) -> (String, String) {
        self.ring.seal(aad, value.as_bytes())
    }

    /// Opens what [`Keyring::seal_with`] sealed with the same `aad`.
    pub fn open_with(&self, aad: &[u8], key_id: &str, sealed: &str) -> Result<String, OpenError> {
        use cdeploy_core::seal::OpenError as E;
        let plain = self.ring.open(aad, key_id, sealed).map_err(|e| match e {
            E::UnknownKey(id) => OpenError::UnknownKey(id),
            E::Corrupt(id) => OpenError::Corrupt(id),
        })?;
        String::from_utf8(plain).map_err(|_| OpenError::Corrupt(key_id.to_string()))
    }

    /// Reseals every value sealed under an older key with the current one (how a key is
    /// rotated). Answers how many were resealed and how many no key here opens.
    pub async fn rotate(&self, store: &dyn Store) -> anyhow::Result<(usize, usize)> {
        let (mut resealed, mut unopened) = (0, 0);
        for row in store.all_secrets().await? {
            if row.key_id == self.current_id() {
                continue;
            }
            match self.open(&row) {
                Ok(value) => {
                    let (key_id, sealed) = self.seal(&row.slug, &row.name, row.target, &value);
                    store.reseal_secret(&row, &key_id, &sealed).await?;
                    resealed += 1;
                }
                Err(e) => {
                    tracing::warn!(slug = %row.slug, name = %row.name, target = %row.target, "a stored secret does not open: {e}");
                    unopened += 1;
                }
            }
        }
        for link in store.all_git_links().await? {
            if link.key_id == self.current_id() {
                continue;
            }
            let aad = webhook_secret_aad(&link.slug);
            match self.open_with(&aad, &link.key_id, &link.sealed_secret) {
                Ok(secret) => {
                    let (key_id, sealed) = self.seal_with(&aad, &secret);
                    store.reseal_git_link(&link, &key_id, &sealed).await?;
                    resealed += 1;
                }
                Err(e) => {
                    tracing::warn!(slug = %link.slug, "a webhook secret does not open: {e}");
                    unopened += 1;
                }
            }
        }
        for hook in store.list_notify_hooks(None).await? {
            if hook.key_id == self.current_id() {
                continue;
            }
            let aad = notify_secret_aad(&hook.slug, &hook.id);
            match self.open_with(&aad, &hook.key_id, &hook.sealed_secret) {
                Ok(secret) => {
                    let (key_id, sealed) = self.seal_with(&aad, &secret);
                    store.reseal_notify_hook(&hook, &key_id, &sealed).await?;
                    resealed += 1;
                }
                Err(e) => {
                    tracing::warn!(slug = %hook.slug, hook = %hook.id, "a notification signing secret does not open: {e}");
                    unopened += 1;
                }
            }
        }
        Ok((resealed, unopened))
    }
}

/// A key file others can read is worth a warning (a Kubernetes secret is mounted 0644
/// by default, so it is not refused).
fn warn_if_readable(path: &FsPath) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = std::fs::metadata(path) {
        if meta.permissions().mode() & 0o077 != 0 {
            tracing::warn!(path = %path.display(), "the secrets key file can be read by other users: chmod 600 it");
        }
    }
}

fn generate_key_file(path: &FsPath) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    write!(
        file,
        "# cdeploy's key for stored secrets. Losing it loses them; see docs/secrets.md.\n{}",
        cdeploy_core::seal::Keyring::generate()
    )?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;

    const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

    fn key_text(byte: u8) -> String {
        B64.encode([byte; 32])
    }

    fn row(keys: &Keyring, slug: &str, name: &str, target: EnvTarget, value: &str) -> SecretRow {
        let (key_id, sealed) = keys.seal(slug, name, target, value);
        SecretRow {
            slug: slug.into(),
            name: name.into(),
            target,
            sensitive: false,
            runtime: false,
            key_id,
            sealed,
            created_at: String::new(),
            updated_at: String::new(),
        }
    }

    #[test]
    fn sealed_values_open_only_where_they_were_sealed() {
        let keys = Keyring::parse(&key_text(1)).unwrap();
        let r = row(
            &keys,
            "app",
            "API_KEY",
            EnvTarget::Production,
            "hunter2-secret",
        );
        assert!(!r.sealed.contains("hunter2"));
        assert_eq!(keys.open(&r).unwrap(), "hunter2-secret");
        // Sealing twice gives different text (a fresh nonce each time).
        let again = row(
            &keys,
            "app",
            "API_KEY",
            EnvTarget::Production,
            "hunter2-secret",
        );
        assert_ne!(again.sealed, r.sealed);
        for moved in [
            SecretRow {
                slug: "other".into(),
                ..r.clone()
            },
            SecretRow {
                name: "OTHER".into(),
                ..r.clone()
            },
            SecretRow {
                target: EnvTarget::Preview,
                ..r.clone()
            },
        ] {
            assert!(matches!(keys.open(&moved), Err(OpenError::Corrupt(_))));
        }
        let mut flipped = B64.decode(&r.sealed).unwrap();
        *flipped.last_mut().unwrap() ^= 1;
        let tampered = SecretRow {
            sealed: B64.encode(flipped),
            ..r.clone()
        };
        assert!(matches!(keys.open(&tampered), Err(OpenError::Corrupt(_))));
        let other = Keyring::parse(&key_text(2)).unwrap();
        assert!(matches!(other.open(&r), Err(OpenError::UnknownKey(_))));
        assert_eq!(
            super::super::secrets::sealed_len(&r.sealed),
            "hunter2-secret".len()
        );
    }

    #[test]
    fn the_first_key_seals_and_older_ones_still_open() {
        let old = Keyring::parse(&key_text(1)).unwrap();
        let r = row(&old, "app", "TOKEN", EnvTarget::Preview, "v");
        let both = Keyring::parse(&format!("# new\n{}\n\n{}\n", key_text(2), key_text(1))).unwrap();
        assert_ne!(both.current_id(), old.current_id());
        assert_eq!(both.open(&r).unwrap(), "v");
        let env_form = Keyring::parse(&format!("{},{}", key_text(2), key_text(1))).unwrap();
        assert_eq!(env_form.current_id(), both.current_id());
        assert_eq!(env_form.open(&r).unwrap(), "v");
    }

    #[test]
    fn bad_keys_are_refused_with_how_to_make_one() {
        for text in ["", "# only a comment\n", "c2hvcnQ=", "not base64 at all!"] {
            let err = Keyring::parse(text).err().unwrap().to_string();
            assert!(err.contains("base64") || err.contains("no key"), "{err}");
        }
    }

    #[test]
    fn a_generated_key_file_is_private_and_kept() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secrets.key");
        let first = Keyring::load(&KeySource::Generated(path.clone()))
            .unwrap()
            .unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let second = Keyring::load(&KeySource::Generated(path)).unwrap().unwrap();
        assert_eq!(first.current_id(), second.current_id());
    }
}
