//! Keys sealed with a retiring protection key, or stored plain before there were keys,
//! sealed again with the current key at start, as preview protection records are: the
//! certificates' private keys (`certs/`) and the ACME account's credentials. Once every
//! server has restarted with the new key first, the old one can be dropped.

use cdeploy_core::domains::{StoredCert, StoredKey};
use cdeploy_core::layout;
use cdeploy_core::seal::Keyring;
use cdeploy_storage::Storage;
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::account::{StoredAccount, SEALED_AS};

/// Reseals what needs it; how many keys were resealed. Failures are logged (a key no key
/// of the keyring opens stays as it is: its certificate is ordered again when due).
pub async fn reseal_all(storage: &dyn Storage, keys: &Keyring) -> usize {
    let listed = match storage.list("certs/").await {
        Ok(listed) => listed,
        Err(e) => {
            tracing::warn!(error = %e, "cannot list the certificates to seal their keys with the current key");
            return 0;
        }
    };
    let mut resealed = 0;
    for listed in listed {
        let Some(name) = cert_name(&listed.key) else {
            continue;
        };
        let cert: fn(&mut StoredCert) -> &mut StoredKey = |c| &mut c.key;
        match reseal_json(storage, keys, &listed.key, &name, cert).await {
            Ok(true) => resealed += 1,
            Ok(false) => {}
            Err(e) => tracing::warn!(%name, "certificate key not sealed with the current key: {e}"),
        }
    }
    let account: fn(&mut StoredAccount) -> &mut StoredKey = |a| &mut a.credentials;
    match reseal_json(storage, keys, layout::ACME_ACCOUNT, SEALED_AS, account).await {
        Ok(true) => resealed += 1,
        Ok(false) => {}
        Err(e) => tracing::warn!("ACME account not sealed with the current key: {e}"),
    }
    resealed
}

/// The name a certificate's key is bound to, from its storage key (`layout::cert`).
fn cert_name(key: &str) -> Option<String> {
    let file = key.strip_prefix("certs/")?.strip_suffix(".json")?;
    Some(match file.strip_prefix("_wildcard.") {
        Some(parent) => format!("*.{parent}"),
        None => file.to_string(),
    })
}

/// Reseals the key a JSON record at `key` holds (`field`), bound to `what`. Read twice
/// and written only if unchanged in between, so a renewal another server stores
/// meanwhile is not undone.
async fn reseal_json<T>(
    storage: &dyn Storage,
    keys: &Keyring,
    key: &str,
    what: &str,
    field: fn(&mut T) -> &mut StoredKey,
) -> Result<bool, String>
where
    T: Serialize + DeserializeOwned + PartialEq + Clone,
{
    let read = || async {
        cdeploy_storage::get_json::<T>(storage, key)
            .await
            .map_err(|e| e.to_string())
    };
    let Some(mut stored) = read().await? else {
        return Ok(false);
    };
    let before = stored.clone();
    let sealed = field(&mut stored);
    if sealed.sealed_with(keys) {
        return Ok(false);
    }
    *sealed = sealed.resealed(what, keys).map_err(|e| e.to_string())?;
    if read().await?.as_ref() != Some(&before) {
        return Ok(false);
    }
    cdeploy_storage::put_json(storage, key, &stored)
        .await
        .map_err(|e| e.to_string())?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn keys_under_a_retiring_key_or_plain_are_sealed_with_the_current_one() {
        let dir = tempfile::tempdir().unwrap();
        let storage = cdeploy_storage::LocalStorage::open(dir.path()).unwrap();
        let old = Keyring::parse("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=").unwrap();
        let new = Keyring::parse(
            "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
        )
        .unwrap();
        let only_new = Keyring::parse("AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=").unwrap();
        let cert = |name: &str, keys: Option<&Keyring>| StoredCert {
            chain_pem: "chain".into(),
            key: StoredKey::store(name, &format!("key of {name}"), keys),
            not_before: 1,
            not_after: 2,
            issuer: "test".into(),
        };
        let layout = cdeploy_core::layout::cert;
        let put = |name: &str, c: StoredCert| {
            let storage = &storage;
            let key = layout(name);
            async move { cdeploy_storage::put_json(storage, &key, &c).await.unwrap() }
        };
        put("shop.example.com", cert("shop.example.com", Some(&old))).await;
        put("*.apps.example.com", cert("*.apps.example.com", None)).await;
        put("new.example.com", cert("new.example.com", Some(&new))).await;
        let account =
            serde_json::json!({"directory": "https://ca/dir", "credentials": {"pem": "{}"}});
        let account_key = cdeploy_core::layout::ACME_ACCOUNT;
        cdeploy_storage::put_json(&storage, account_key, &account)
            .await
            .unwrap();
        assert_eq!(reseal_all(&storage, &new).await, 3);
        let account: serde_json::Value = cdeploy_storage::get_json(&storage, account_key)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(account["credentials"]["key"], only_new.current_id());
        assert_eq!(account["directory"], "https://ca/dir");
        for name in ["shop.example.com", "*.apps.example.com", "new.example.com"] {
            let stored: StoredCert = cdeploy_storage::get_json(&storage, &layout(name))
                .await
                .unwrap()
                .unwrap();
            assert_eq!(
                stored.key.open(name, Some(&only_new)).unwrap(),
                format!("key of {name}"),
                "{name} opens without the old key"
            );
        }
        assert_eq!(reseal_all(&storage, &new).await, 0, "nothing left to do");
    }
}
