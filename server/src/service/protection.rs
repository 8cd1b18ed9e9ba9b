//! Preview protection records: one per project in storage (`protection/<slug>.json`),
//! where every proxy reads it, sealed with the operator's protection keys when there
//! are some. The proxies enforce them (`cdeploy_proxy::protect`); production is never
//! protected.

use cdeploy_core::api::{codes, ProtectionInfo, SetProtection};
use cdeploy_core::manifest::{Protection, ProtectionUnreadable, StoredProtection};
use cdeploy_core::{ids, layout};

use super::error::{Error, Kind, Result};
use super::validate::being_deleted;
use super::App;

/// Password length limits (characters).
pub const MIN_PASSWORD: usize = 8;
pub const MAX_PASSWORD: usize = 256;

/// The project's record: `Err` inside when there is one this server can't open (sealed
/// with a key it lacks, or damaged).
async fn stored(
    app: &App,
    slug: &str,
) -> Result<Option<std::result::Result<Protection, ProtectionUnreadable>>> {
    let stored = cdeploy_storage::get_json::<StoredProtection>(
        app.storage.as_ref(),
        &layout::protection(slug),
    )
    .await;
    Ok(match stored {
        Ok(None) => None,
        Ok(Some(stored)) => Some(stored.open(slug, app.config.protection_keys.as_deref())),
        Err(cdeploy_storage::StorageError::Corrupt { message, .. }) => Some(Err(
            ProtectionUnreadable::Invalid(slug.to_string(), message),
        )),
        Err(e) => return Err(e.into()),
    })
}

/// What an unreadable record answers, and how to get past it.
fn unreadable(e: &ProtectionUnreadable) -> Error {
    Error::new(
        Kind::Unavailable,
        codes::UNAVAILABLE,
        format!("{e}; turning protection off, or on without keeping the password, replaces it"),
    )
}

/// Whether the project has a protection record, readable or not (the proxy keeps the
/// previews of one it cannot read closed too).
pub async fn exists(app: &App, slug: &str) -> Result<bool> {
    Ok(stored(app, slug).await?.is_some())
}

pub async fn current(app: &App, slug: &str) -> Result<Option<Protection>> {
    stored(app, slug)
        .await?
        .transpose()
        .map_err(|e| unreadable(&e))
}

/// Writes a record as the proxies read it: sealed when the server has protection keys.
async fn write(app: &App, slug: &str, record: &Protection) -> Result<()> {
    let stored = StoredProtection::store(slug, record, app.config.protection_keys.as_deref());
    cdeploy_storage::put_json(app.storage.as_ref(), &layout::protection(slug), &stored).await?;
    Ok(())
}

/// At start, with protection keys: every record not sealed with the current key is
/// rewritten with it (plain ones written before the keys were set, or sealed with a
/// key being retired). Answers how many were rewritten.
pub async fn reseal_all(
    storage: &dyn cdeploy_storage::Storage,
    keys: &cdeploy_core::seal::Keyring,
) -> usize {
    let listed = match storage.list(layout::PROTECTION_PREFIX).await {
        Ok(listed) => listed,
        Err(e) => {
            tracing::warn!(error = %e, "cannot list the preview protection records to seal them; they are sealed when next changed");
            return 0;
        }
    };
    let mut resealed = 0;
    for listed in listed {
        let Some(slug) = listed
            .key
            .strip_prefix(layout::PROTECTION_PREFIX)
            .and_then(|k| k.strip_suffix(".json"))
        else {
            continue;
        };
        match reseal_one(storage, keys, slug, &listed.key).await {
            Ok(true) => resealed += 1,
            Ok(false) => {}
            Err(e) => tracing::warn!(%slug, "preview protection record not sealed: {e}"),
        }
    }
    resealed
}

/// Seals one record if it is not sealed with the current key. Read twice, and written
/// only if unchanged in between, so a change another replica makes meanwhile is not
/// undone (a write in the instant after the second read still can be: storage has no
/// conditional write here; such a change is then made again by its author).
async fn reseal_one(
    storage: &dyn cdeploy_storage::Storage,
    keys: &cdeploy_core::seal::Keyring,
    slug: &str,
    key: &str,
) -> std::result::Result<bool, String> {
    let read = || async {
        cdeploy_storage::get_json::<StoredProtection>(storage, key)
            .await
            .map_err(|e| e.to_string())
    };
    let Some(stored) = read().await? else {
        return Ok(false);
    };
    if stored.sealed_with(keys) {
        return Ok(false);
    }
    let record = stored
        .clone()
        .open(slug, Some(keys))
        .map_err(|e| format!("{e}: its previews stay closed until a key that opens it is back"))?;
    let sealed = StoredProtection::store(slug, &record, Some(keys));
    if read().await?.as_ref() != Some(&stored) {
        return Ok(false); // changed meanwhile: its writer sealed it
    }
    cdeploy_storage::put_json(storage, key, &sealed)
        .await
        .map_err(|e| e.to_string())?;
    Ok(true)
}

pub fn info(p: Option<&Protection>, token: Option<String>) -> ProtectionInfo {
    ProtectionInfo {
        enabled: p.is_some(),
        password: p.is_some_and(|p| p.password.is_some()),
        bypass_token: token,
        updated_at: p.map(|p| p.updated_at.clone()),
    }
}

async fn changed(app: &App, slug: &str) {
    if let Some(proxy) = &app.lifecycle.proxy {
        proxy.invalidate_protection(slug).await;
    }
}

/// Turns protection on or changes it; answers the record and, when one was made (first
/// time, or `new_token`), the bypass token, which is never shown again.
pub async fn set(
    app: &App,
    slug: &str,
    req: &SetProtection,
) -> Result<(Protection, Option<String>)> {
    if app.project(slug).await?.deleting {
        return Err(being_deleted(slug));
    }
    if let Some(pw) = &req.password {
        let n = pw.chars().count();
        if !(MIN_PASSWORD..=MAX_PASSWORD).contains(&n) {
            return Err(Error::bad_request(format!(
                "password: {MIN_PASSWORD} to {MAX_PASSWORD} characters"
            )));
        }
    }
    // A record this server can't open is replaced, unless the password is to be kept.
    let old = match stored(app, slug).await? {
        Some(Err(e)) if req.keep_password && req.password.is_none() => return Err(unreadable(&e)),
        Some(Err(e)) => {
            tracing::warn!(%slug, "replacing a preview protection record: {e}");
            None
        }
        Some(Ok(p)) => Some(p),
        None => None,
    };
    let password = match (&req.password, &old) {
        (Some(pw), _) => Some(hash_password(pw.clone()).await?),
        (None, Some(old)) if req.keep_password => old.password.clone(),
        (None, _) => None,
    };
    let (bypass, token) = match &old {
        Some(old) if !req.new_token => (old.bypass.clone(), None),
        _ => {
            let token = format!("cdpb_{}", ids::random_id(40));
            (ids::token_hash(&token), Some(token))
        }
    };
    let mut key = [0u8; 32];
    {
        use argon2::password_hash::rand_core::{OsRng, RngCore};
        OsRng.fill_bytes(&mut key);
    }
    let record = Protection {
        password,
        bypass,
        cookie_key: hex::encode(key),
        updated_at: cdeploy_core::now_rfc3339(),
    };
    write(app, slug, &record).await?;
    changed(app, slug).await;
    Ok((record, token))
}

/// An Argon2 hash of a password (blocking work, off the runtime's threads).
async fn hash_password(pw: String) -> Result<String> {
    tokio::task::spawn_blocking(move || {
        use argon2::password_hash::rand_core::OsRng;
        use argon2::password_hash::{PasswordHasher, SaltString};
        let salt = SaltString::generate(&mut OsRng);
        argon2::Argon2::default()
            .hash_password(pw.as_bytes(), &salt)
            .map(|h| h.to_string())
    })
    .await
    .map_err(|e| Error::internal("cannot hash the password", e))?
    .map_err(|e| Error::internal("cannot hash the password", e))
}

/// Previews are public again. A record this server can't read is removed too: turning
/// protection off never needs the key.
pub async fn remove(app: &App, slug: &str) -> Result<()> {
    app.project(slug).await?;
    if stored(app, slug).await?.is_none() {
        return Err(Error::not_found(format!("preview protection of {slug}")));
    }
    app.storage.delete(&layout::protection(slug)).await?;
    changed(app, slug).await;
    Ok(())
}
