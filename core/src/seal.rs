//! Sealing with an operator's keyring: XChaCha20-Poly1305 under the first key, bound to
//! associated data that says what the value is and whose, so a sealed value copied
//! elsewhere does not open. Every key opens; the first seals, which is how a key is
//! rotated (add the new one first, reseal, drop the old one).
//!
//! The server seals stored secrets with its keyring, and preview protection records
//! with a second one it shares with the proxies (`CDEPLOY_PROTECTION_KEY`).

use base64::Engine;
use chacha20poly1305::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use sha2::Digest;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;
const NONCE_LEN: usize = 24;

struct Key {
    /// The first 8 bytes of the key's SHA-256, in hex: stored with each value it seals.
    id: String,
    cipher: XChaCha20Poly1305,
}

/// An operator's keys: the first seals, every one opens.
pub struct Keyring {
    keys: Vec<Key>,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ids: Vec<&str> = self.keys.iter().map(|k| k.id.as_str()).collect();
        f.debug_struct("Keyring").field("key_ids", &ids).finish()
    }
}

/// Why a sealed value does not open.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    #[error("it was sealed with key {0}, which is not in this keyring (keep an old key until everything is resealed with the new one)")]
    UnknownKey(String),
    #[error("it does not open with key {0}: it was altered, or moved from where it belongs")]
    Corrupt(String),
}

/// Why a keyring's text is no keyring.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyringError {
    #[error("line {line}: a key is the base64 of 32 random bytes (make one with `openssl rand -base64 32`)")]
    NotAKey { line: usize },
    #[error("no key found (one per line, base64 of 32 bytes)")]
    Empty,
}

/// A keyring that could not be loaded: where it came from (the flag and file, or the
/// variable) and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{origin}: {reason}")]
pub struct LoadError {
    pub origin: String,
    pub reason: String,
}

impl Keyring {
    /// Parses keys: one per line (or comma-separated), each the base64 of 32 random
    /// bytes (`openssl rand -base64 32`); blank lines and `#` comments are skipped; the
    /// first key seals.
    pub fn parse(text: &str) -> Result<Keyring, KeyringError> {
        let mut keys: Vec<Key> = Vec::new();
        for (n, line) in text.lines().enumerate() {
            for item in line.split(',') {
                let item = item.trim();
                if item.is_empty() || item.starts_with('#') {
                    continue;
                }
                let bytes = B64
                    .decode(item)
                    .ok()
                    .filter(|b| b.len() == 32)
                    .ok_or(KeyringError::NotAKey { line: n + 1 })?;
                let id = hex::encode(&sha2::Sha256::digest(&bytes)[..8]);
                if keys.iter().any(|k| k.id == id) {
                    continue;
                }
                keys.push(Key {
                    id,
                    cipher: XChaCha20Poly1305::new_from_slice(&bytes).expect("32 bytes"),
                });
            }
        }
        if keys.is_empty() {
            return Err(KeyringError::Empty);
        }
        Ok(Keyring { keys })
    }

    /// The id of the key that seals.
    pub fn current_id(&self) -> &str {
        &self.keys[0].id
    }

    /// Seals `value` bound to `aad`: `(key id, base64 of nonce and ciphertext)`.
    pub fn seal(&self, aad: &[u8], value: &[u8]) -> (String, String) {
        let key = &self.keys[0];
        let nonce = XChaCha20Poly1305::generate_nonce(&mut OsRng);
        let sealed = key
            .cipher
            .encrypt(&nonce, Payload { msg: value, aad })
            .expect("sealing in memory does not fail");
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        (key.id.clone(), B64.encode(out))
    }

    /// Opens what [`Keyring::seal`] sealed with the same `aad`.
    pub fn open(&self, aad: &[u8], key_id: &str, sealed: &str) -> Result<Vec<u8>, OpenError> {
        let key = self
            .keys
            .iter()
            .find(|k| k.id == key_id)
            .ok_or_else(|| OpenError::UnknownKey(key_id.to_string()))?;
        let corrupt = || OpenError::Corrupt(key_id.to_string());
        let bytes = B64.decode(sealed).map_err(|_| corrupt())?;
        if bytes.len() < NONCE_LEN {
            return Err(corrupt());
        }
        let (nonce, sealed) = bytes.split_at(NONCE_LEN);
        key.cipher
            .decrypt(XNonce::from_slice(nonce), Payload { msg: sealed, aad })
            .map_err(|_| corrupt())
    }

    /// A new keyring file's text: one fresh key.
    pub fn generate() -> String {
        let mut key = [0u8; 32];
        getrandom::fill(&mut key).expect("the OS random source");
        format!("{}\n", B64.encode(key))
    }
}

/// A keyring given as a file (the `flag` names it in errors) or, without one, as the
/// keys themselves in an environment variable (`env_var`, whose value is `env_value`);
/// `None` when neither is given.
pub fn load(
    file: Option<&std::path::Path>,
    flag: &str,
    env_var: &str,
    env_value: Option<String>,
) -> Result<Option<Keyring>, LoadError> {
    match (file, env_value.filter(|v| !v.trim().is_empty())) {
        (Some(path), _) => {
            let origin = || format!("{flag} {}", path.display());
            let text = std::fs::read_to_string(path).map_err(|e| LoadError {
                origin: origin(),
                reason: e.to_string(),
            })?;
            Keyring::parse(&text).map(Some).map_err(|e| LoadError {
                origin: origin(),
                reason: e.to_string(),
            })
        }
        (None, Some(keys)) => Keyring::parse(&keys).map(Some).map_err(|e| LoadError {
            origin: env_var.to_string(),
            reason: e.to_string(),
        }),
        (None, None) => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(byte: u8) -> String {
        B64.encode([byte; 32])
    }

    #[test]
    fn seals_open_under_any_key_of_the_ring_and_only_with_their_aad() {
        let old = Keyring::parse(&key(1)).unwrap();
        let (id, sealed) = old.seal(b"what\0whose", b"value");
        let rotated = Keyring::parse(&format!("{}\n# comment\n{}", key(2), key(1))).unwrap();
        assert_ne!(rotated.current_id(), id);
        assert_eq!(
            rotated.open(b"what\0whose", &id, &sealed).unwrap(),
            b"value"
        );
        assert!(matches!(
            rotated.open(b"what\0other", &id, &sealed),
            Err(OpenError::Corrupt(_))
        ));
        let other = Keyring::parse(&key(3)).unwrap();
        assert!(matches!(
            other.open(b"what\0whose", &id, &sealed),
            Err(OpenError::UnknownKey(_))
        ));
        // Tampered or truncated: refused, never a panic.
        for bad in ["", "AAAA", &sealed[..sealed.len() - 4]] {
            assert!(rotated.open(b"what\0whose", &id, bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn bad_keys_are_refused_by_line() {
        assert!(Keyring::parse("").is_err());
        let e = Keyring::parse(&format!("{}\nnot-base64", key(1))).unwrap_err();
        assert_eq!(e, KeyringError::NotAKey { line: 2 });
        assert!(Keyring::parse(&B64.encode([0u8; 16])).is_err());
        // Comma-separated, as an environment variable holds them; duplicates collapse.
        let ring = Keyring::parse(&format!("{},{}, {}", key(1), key(2), key(1))).unwrap();
        assert_eq!(ring.keys.len(), 2);
        assert!(Keyring::generate().trim().len() == 44);
        assert!(Keyring::parse(&Keyring::generate()).is_ok());
    }
}
