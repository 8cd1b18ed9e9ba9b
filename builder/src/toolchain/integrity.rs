//! Checking a downloaded tarball: the registry's Subresource Integrity (SHA-512 only,
//! by ssri) and the hash a corepack pin (`packageManager: "pnpm@9.1.0+sha256.…"`) may
//! name.

use sha2::Digest;

/// Why a tarball is refused.
#[derive(Debug, thiserror::Error)]
pub(super) enum IntegrityError {
    #[error("the registry gives no SHA-512 integrity for it")]
    NoSha512,
    #[error("the registry's integrity is malformed")]
    Malformed,
    #[error("{0}")]
    Digest(ssri::Error),
    #[error("the tarball does not match the registry's SHA-512 integrity")]
    Mismatch,
    #[error("packageManager hash {0:?} is not <algorithm>.<hex>")]
    PinFormat(String),
    #[error("packageManager hash algorithm {0:?} is not supported")]
    PinAlgorithm(String),
    #[error("the tarball does not match the {0} hash pinned in packageManager")]
    PinMismatch(String),
}

/// The digests a tarball is checked against: the registry's Subresource Integrity
/// (by ssri) and the hashes a corepack pin may name.
pub(super) struct Hashes {
    /// The registry's SHA-512 integrity; `Err`: none (or a malformed one), said at
    /// [`Hashes::verify`].
    integrity: Result<ssri::Integrity, IntegrityError>,
    sha512: sha2::Sha512,
    sha224: sha2::Sha224,
    sha256: sha2::Sha256,
}

impl Hashes {
    /// For the registry's `integrity` (`sha512-<base64>`, maybe among others; packages
    /// with only the legacy SHA-1 `shasum` are refused).
    pub(super) fn new(integrity: Option<&str>) -> Hashes {
        let integrity = match integrity.map(str::parse::<ssri::Integrity>) {
            None => Err(IntegrityError::NoSha512),
            Some(Err(_)) => Err(IntegrityError::Malformed),
            Some(Ok(sri)) => {
                // Only SHA-512 counts: a SHA-1 beside it would be checked instead of it
                // if it came first.
                let strong = ssri::Integrity {
                    hashes: sri
                        .hashes
                        .into_iter()
                        .filter(|h| h.algorithm == ssri::Algorithm::Sha512)
                        .collect(),
                };
                if strong.hashes.is_empty() {
                    Err(IntegrityError::NoSha512)
                } else {
                    Ok(strong)
                }
            }
        };
        Hashes {
            integrity,
            sha512: Default::default(),
            sha224: Default::default(),
            sha256: Default::default(),
        }
    }

    pub(super) fn update(&mut self, chunk: &[u8]) {
        self.sha512.update(chunk);
        self.sha224.update(chunk);
        self.sha256.update(chunk);
    }

    /// Checks the registry's integrity and a corepack pin (`sha512.<hex>`,
    /// `sha256.<hex>`, `sha224.<hex>`).
    pub(super) fn verify(self, pinned: Option<&str>) -> Result<(), IntegrityError> {
        let sha512 = self.sha512.finalize();
        let got = ssri::Integrity::from_hex(hex::encode(sha512), ssri::Algorithm::Sha512)
            .map_err(IntegrityError::Digest)?;
        if self.integrity?.matches(&got).is_none() {
            return Err(IntegrityError::Mismatch);
        }
        let Some(pin) = pinned else {
            return Ok(());
        };
        let (algo, want) = pin
            .split_once('.')
            .ok_or_else(|| IntegrityError::PinFormat(pin.to_string()))?;
        let got = match algo {
            "sha512" => hex::encode(sha512),
            "sha256" => hex::encode(self.sha256.finalize()),
            "sha224" => hex::encode(self.sha224.finalize()),
            other => return Err(IntegrityError::PinAlgorithm(other.to_string())),
        };
        if !got.eq_ignore_ascii_case(want) {
            return Err(IntegrityError::PinMismatch(algo.to_string()));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tarballs_are_checked_against_sha512_and_the_pin() {
        let data = b"a tarball";
        let sri = |algo| {
            ssri::IntegrityOpts::new()
                .algorithm(algo)
                .chain(data)
                .result()
                .to_string()
        };
        let check = |integrity: Option<&str>, pin: Option<&str>, bytes: &[u8]| {
            let mut h = Hashes::new(integrity);
            h.update(bytes);
            h.verify(pin).map_err(|e| e.to_string())
        };
        let sha512 = sri(ssri::Algorithm::Sha512);
        assert_eq!(check(Some(&sha512), None, data), Ok(()));
        assert!(check(Some(&sha512), None, b"another tarball")
            .unwrap_err()
            .contains("does not match"));
        // SHA-1 alone, or beside SHA-512, never decides.
        let sha1 = sri(ssri::Algorithm::Sha1);
        assert!(check(Some(&sha1), None, data)
            .unwrap_err()
            .contains("no SHA-512"));
        assert_eq!(check(Some(&format!("{sha1} {sha512}")), None, data), Ok(()));
        assert!(check(None, None, data).unwrap_err().contains("no SHA-512"));
        assert!(check(Some("sha512-!!!"), None, data).is_err());
        // A corepack pin.
        let sha256 = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(data));
        assert_eq!(
            check(Some(&sha512), Some(&format!("sha256.{sha256}")), data),
            Ok(())
        );
        assert!(check(Some(&sha512), Some("sha256.00"), data)
            .unwrap_err()
            .contains("pinned"));
    }
}
