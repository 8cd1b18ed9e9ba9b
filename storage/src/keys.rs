//! Which keys a backend accepts, and the rule that makes blobs trustworthy: bytes stored
//! under `blobs/<sha256>` always hash to that name, whoever uploads them.

use crate::{Result, StorageError};

/// The hash a key must have as content: `Some` for `blobs/<sha256>` (not for its
/// precompressed variants, which are derived from a verified blob).
pub fn blob_hash_of(key: &str) -> Option<&str> {
    key.strip_prefix("blobs/")
        .filter(|h| cdeploy_core::is_sha256_hex(h))
}

/// Refuses bytes that do not have the hash a `blobs/<sha256>` key names.
pub fn check_blob(key: &str, data: &[u8]) -> Result<()> {
    if let Some(expected) = blob_hash_of(key) {
        let actual = cdeploy_core::sha256_hex(data);
        if actual != expected {
            return Err(StorageError::HashMismatch {
                key: key.to_string(),
                actual,
            });
        }
    }
    Ok(())
}

/// Accepts only the layout's keys: relative, `/`-separated, no dot segments or odd bytes.
pub fn check_key(key: &str) -> Result<()> {
    let ok = !key.is_empty()
        && key.len() <= 1024
        && !key.starts_with('/')
        && key
            .split('/')
            .all(|seg| !seg.is_empty() && seg != "." && seg != "..")
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'/' | b'.' | b'-' | b'_'));
    if ok {
        Ok(())
    } else {
        Err(StorageError::InvalidKey(key.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_blob_names_are_content_checked() {
        let hash = cdeploy_core::sha256_hex(b"x");
        let key = format!("blobs/{hash}");
        assert_eq!(blob_hash_of(&key), Some(hash.as_str()));
        assert_eq!(blob_hash_of(&format!("{key}.br")), None);
        assert!(check_blob(&key, b"x").is_ok());
        assert!(matches!(
            check_blob(&key, b"y"),
            Err(StorageError::HashMismatch { .. })
        ));
        assert!(check_blob("routes/a.json", b"y").is_ok());
        assert!(check_key("aliases/a/b.json").is_ok());
        assert!(matches!(
            check_key("a/../b"),
            Err(StorageError::InvalidKey(_))
        ));
    }
}
