//! Stored secrets: a project's environment variables per target (production, preview),
//! sealed at rest with the operator's key and given to builds of that target.
//!
//! Routes (admins only): `GET /v1/projects/{slug}/env`, `PUT` and `DELETE
//! /v1/projects/{slug}/env/{name}`, `GET /v1/projects/{slug}/env/values?target=…`.
//!
//! Each value is sealed with XChaCha20-Poly1305 under the current key of the
//! [`Keyring`], with the project, name and target as associated data: a sealed value
//! copied to another row (or project) does not open. The keyring is the operator's (a
//! file or `CDEPLOY_SECRETS_KEY`); its first key seals, the others only open, and at
//! start the server reseals every value under the first key, which is how a key is
//! rotated (docs/secrets.md).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path as FsPath, PathBuf};
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use cdeploy_builder::Secrets;
use cdeploy_core::api::{codes, EnvTarget, EnvValues, EnvVar, PutEnv};
use cdeploy_core::config::is_env_name;
use serde::Deserialize;

use crate::db::{SecretRow, Store};
use crate::error::{ApiError, ApiJson, ApiQuery};
use crate::App;

/// Longest value, in bytes (Linux takes at most 128 KiB per variable).
pub const MAX_VALUE_BYTES: usize = 64 * 1024;
/// Most variables one project stores (name and target pairs).
pub const MAX_PER_PROJECT: usize = 200;
/// Most bytes of values one target of a project holds: a build's whole environment
/// and arguments must fit the kernel's limit (a quarter of the stack limit, 2 MiB).
pub const MAX_BYTES_PER_TARGET: usize = 512 * 1024;

/// Where the keyring comes from.
#[derive(Clone, PartialEq, Eq)]
pub enum KeySource {
    /// `--secrets-key-file`: the operator's file.
    File(PathBuf),
    /// `CDEPLOY_SECRETS_KEY`: the keys themselves.
    Env(String),
    /// One machine (SQLite): a key made on first start, beside the database.
    Generated(PathBuf),
    /// Several servers share a database, and none was given: no secrets.
    None,
}

impl std::fmt::Debug for KeySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeySource::File(p) => write!(f, "File({})", p.display()),
            KeySource::Env(_) => f.write_str("Env(<redacted>)"),
            KeySource::Generated(p) => write!(f, "Generated({})", p.display()),
            KeySource::None => f.write_str("None"),
        }
    }
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
            let aad = crate::hooks::secret_aad(&link.slug);
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

/// The keyring, or `503` saying how to give the server one (stored secrets and webhook
/// secrets both need it).
pub(crate) fn keyring(app: &App) -> Result<&Keyring, ApiError> {
    app.keyring.as_deref().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            codes::UNAVAILABLE,
            "this server has no key to seal secrets with (set CDEPLOY_SECRETS_KEY or --secrets-key-file, the same on every server)",
        )
    })
}

fn listed(row: &SecretRow) -> EnvVar {
    EnvVar {
        name: row.name.clone(),
        target: row.target,
        sensitive: row.sensitive,
        created_at: row.created_at.clone(),
        updated_at: row.updated_at.clone(),
    }
}

async fn existing_project(app: &App, slug: &str) -> Result<(), ApiError> {
    crate::api::check_slug(slug)?;
    match app.store.get_project(slug).await? {
        Some(p) if !p.deleting => Ok(()),
        _ => Err(ApiError::not_found(format!("project {slug}"))),
    }
}

fn check_name(name: &str) -> Result<(), ApiError> {
    if !is_env_name(name) {
        return Err(ApiError::bad_request(format!(
            "{name:?} is not a valid variable name (letters, digits and '_', not starting with a digit, at most 256)"
        )));
    }
    if name == "CDEPLOY" || name.starts_with("CDEPLOY_") {
        return Err(ApiError::bad_request(format!(
            "{name}: names starting with CDEPLOY_ are the platform's (CDEPLOY_ENV, CDEPLOY_URL, …)"
        )));
    }
    Ok(())
}

/// `GET /v1/projects/{slug}/env`: names, targets and dates, never values.
#[utoipa::path(get, path = "/v1/projects/{slug}/env", operation_id = "list_env", tag = "env", params(crate::openapi::SlugPath), responses((status = 200, body = Vec<EnvVar>), crate::openapi::Errors), security(("bearer" = [])))]
pub async fn list(
    State(app): State<Arc<App>>,
    Path(slug): Path<String>,
) -> Result<Json<Vec<EnvVar>>, ApiError> {
    existing_project(&app, &slug).await?;
    let rows = app.store.list_secrets(&slug).await?;
    Ok(Json(rows.iter().map(listed).collect()))
}

/// `PUT /v1/projects/{slug}/env/{name}`: stores a value for the targets asked (both by
/// default), replacing what they held. Creates the project, as a first deploy would.
#[utoipa::path(put, path = "/v1/projects/{slug}/env/{name}", tag = "env", params(crate::openapi::SlugPath, ("name" = String, Path, description = "The variable's name", pattern = r"^[A-Za-z_][A-Za-z0-9_]*$", max_length = 256)), request_body = PutEnv, responses((status = 200, body = Vec<EnvVar>), crate::openapi::Errors), security(("bearer" = [])))]
pub async fn put(
    State(app): State<Arc<App>>,
    Path((slug, name)): Path<(String, String)>,
    ApiJson(req): ApiJson<PutEnv>,
) -> Result<
    (
        axum::Extension<crate::access::AuditDetail>,
        Json<Vec<EnvVar>>,
    ),
    ApiError,
> {
    crate::api::check_slug(&slug)?;
    check_name(&name)?;
    let keys = keyring(&app)?;
    if req.value.len() > MAX_VALUE_BYTES {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            codes::PAYLOAD_TOO_LARGE,
            format!(
                "{name}: the value is {} bytes; the most is {MAX_VALUE_BYTES} (64 KiB)",
                req.value.len()
            ),
        ));
    }
    if req.value.contains('\0') {
        return Err(ApiError::bad_request(format!(
            "{name}: a value cannot hold a NUL character (environment variables cannot)"
        )));
    }
    let mut targets = req.targets.clone();
    if targets.is_empty() {
        targets = EnvTarget::ALL.to_vec();
    }
    targets.sort();
    targets.dedup();

    app.store.create_project(&slug, None).await?;
    if app.project(&slug).await?.deleting {
        return Err(crate::api::being_deleted(&slug));
    }
    let existing = app.store.list_secrets(&slug).await?;
    let new_rows = targets
        .iter()
        .filter(|t| !existing.iter().any(|r| r.target == **t && r.name == name))
        .count();
    if existing.len() + new_rows > MAX_PER_PROJECT {
        return Err(ApiError::conflict(format!(
            "project {slug} stores {} variables, the most there may be ({MAX_PER_PROJECT}); remove some first (cdeploy env rm)",
            existing.len()
        )));
    }
    for &t in &targets {
        // Sizes of sealed values are known without opening them: base64 of nonce,
        // ciphertext and tag.
        let held: usize = existing
            .iter()
            .filter(|r| r.target == t && r.name != name)
            .map(|r| r.name.len() + sealed_len(&r.sealed))
            .sum();
        if held + name.len() + req.value.len() > MAX_BYTES_PER_TARGET {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                codes::PAYLOAD_TOO_LARGE,
                format!(
                    "{t} variables of {slug} would hold more than {} KiB, the most a build's environment takes",
                    MAX_BYTES_PER_TARGET / 1024
                ),
            ));
        }
    }

    let now = cdeploy_core::now_rfc3339();
    for &target in &targets {
        let (key_id, sealed) = keys.seal(&slug, &name, target, &req.value);
        let row = SecretRow {
            slug: slug.clone(),
            name: name.clone(),
            target,
            sensitive: req.sensitive,
            key_id,
            sealed,
            created_at: now.clone(),
            updated_at: now.clone(),
        };
        app.store.put_secret(&row).await?;
    }
    let rows = app.store.list_secrets(&slug).await?;
    let detail = crate::access::AuditDetail(format!(
        "variable {name} of {slug} written for {}{}",
        targets
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(" and "),
        if req.sensitive { " (sensitive)" } else { "" }
    ));
    Ok((
        axum::Extension(detail),
        Json(
            rows.iter()
                .filter(|r| r.name == name && targets.contains(&r.target))
                .map(listed)
                .collect(),
        ),
    ))
}

/// The plaintext length of a sealed value (24-byte nonce and 16-byte tag around it).
fn sealed_len(sealed: &str) -> usize {
    let padding = sealed.bytes().rev().take_while(|b| *b == b'=').count();
    (sealed.len() / 4 * 3)
        .saturating_sub(padding)
        .saturating_sub(24 + 16)
}

#[derive(Debug, Deserialize)]
pub struct TargetQuery {
    target: Option<EnvTarget>,
}

/// `DELETE /v1/projects/{slug}/env/{name}[?target=…]`: both targets unless one is named.
#[utoipa::path(delete, path = "/v1/projects/{slug}/env/{name}", operation_id = "remove_env", tag = "env", params(crate::openapi::SlugPath, ("name" = String, Path, description = "The variable's name", pattern = r"^[A-Za-z_][A-Za-z0-9_]*$", max_length = 256), ("target" = Option<EnvTarget>, Query, description = "production or preview")), responses((status = 204, description = "Removed"), crate::openapi::Errors), security(("bearer" = [])))]
pub async fn remove(
    State(app): State<Arc<App>>,
    Path((slug, name)): Path<(String, String)>,
    ApiQuery(q): ApiQuery<TargetQuery>,
) -> Result<(StatusCode, axum::Extension<crate::access::AuditDetail>), ApiError> {
    existing_project(&app, &slug).await?;
    let removed = app.store.delete_secret(&slug, &name, q.target).await?;
    if removed == 0 {
        let what = match q.target {
            Some(t) => format!("variable {name} ({t}) of {slug}"),
            None => format!("variable {name} of {slug}"),
        };
        return Err(ApiError::not_found(what));
    }
    let detail = crate::access::AuditDetail(match q.target {
        Some(t) => format!("variable {name} of {slug} removed from {t}"),
        None => format!("variable {name} of {slug} removed from {removed} targets"),
    });
    Ok((StatusCode::NO_CONTENT, axum::Extension(detail)))
}

/// `GET /v1/projects/{slug}/env/values?target=…`: a target's values for `env pull`;
/// sensitive ones are named, never answered.
#[utoipa::path(get, path = "/v1/projects/{slug}/env/values", tag = "env", params(crate::openapi::SlugPath, ("target" = Option<EnvTarget>, Query, description = "production or preview")), responses((status = 200, body = EnvValues), crate::openapi::Errors), security(("bearer" = [])))]
pub async fn values(
    State(app): State<Arc<App>>,
    Path(slug): Path<String>,
    ApiQuery(q): ApiQuery<TargetQuery>,
) -> Result<Json<EnvValues>, ApiError> {
    existing_project(&app, &slug).await?;
    let target = q.target.unwrap_or(EnvTarget::Production);
    let rows = app.store.list_secrets(&slug).await?;
    let mut out = EnvValues::default();
    let rows: Vec<&SecretRow> = rows.iter().filter(|r| r.target == target).collect();
    if rows.iter().any(|r| !r.sensitive) {
        let keys = keyring(&app)?;
        for row in rows.iter().filter(|r| !r.sensitive) {
            let value = keys.open(row).map_err(|e| unopened(row, e))?;
            out.values.insert(row.name.clone(), value);
        }
    }
    out.sensitive = rows
        .iter()
        .filter(|r| r.sensitive)
        .map(|r| r.name.clone())
        .collect();
    Ok(Json(out))
}

fn unopened(row: &SecretRow, e: OpenError) -> ApiError {
    ApiError::internal(
        &format!(
            "stored variable {} ({}) of {} does not open with this server's keys",
            row.name, row.target, row.slug
        ),
        e,
    )
}

/// What a deployment's build is given: the project's values for its target.
pub async fn for_build(app: &App, slug: &str, preview: bool) -> Result<Secrets, ApiError> {
    let target = EnvTarget::of(preview);
    let rows = app.store.list_secrets(slug).await?;
    let mut out = BTreeMap::new();
    for row in rows.iter().filter(|r| r.target == target) {
        let keys = keyring(app)?;
        let value = keys.open(row).map_err(|e| unopened(row, e))?;
        out.insert(row.name.clone(), value);
    }
    Ok(Secrets(out))
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
        assert_eq!(sealed_len(&r.sealed), "hunter2-secret".len());
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

    #[test]
    fn names_of_the_platform_and_bad_names_are_refused() {
        for bad in ["CDEPLOY_ENV", "CDEPLOY", "1X", "A-B", ""] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
        for good in ["API_KEY", "_X", "CDEPLOYX", "next_public_url"] {
            assert!(check_name(good).is_ok(), "{good}");
        }
    }
}
