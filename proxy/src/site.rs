//! A deployment prepared for serving: everything a response needs that does not depend
//! on the request (header values, ETags, storage keys) is computed once, when the
//! manifest is loaded, not on every request.

use std::collections::BTreeMap;

use cdeploy_core::layout;
use cdeploy_core::manifest::{Encoding, Manifest, Site};
use hyper::header::HeaderValue;

use crate::resolve::is_fingerprinted;

const IMMUTABLE: HeaderValue = HeaderValue::from_static("public, max-age=31536000, immutable");
const REVALIDATE: HeaderValue = HeaderValue::from_static("public, max-age=0, must-revalidate");
const NO_CACHE: HeaderValue = HeaderValue::from_static("no-cache");

/// One stored representation of a file: identity or a precompressed variant.
#[derive(Debug, Clone)]
pub struct Representation {
    pub encoding: Option<Encoding>,
    /// Strong ETag: the content hash, plus the encoding for variants.
    pub etag: HeaderValue,
    /// Storage key of the bytes.
    pub key: String,
}

#[derive(Debug, Clone)]
pub struct ServedFile {
    pub hash: String,
    /// Size of the identity representation.
    pub size: u64,
    pub content_type: HeaderValue,
    pub cache_control: HeaderValue,
    pub identity: Representation,
    /// Precompressed variants, best first.
    pub variants: Vec<Representation>,
}

#[derive(Debug)]
pub struct ServedSite {
    pub slug: String,
    pub site: Site,
    pub files: BTreeMap<String, ServedFile>,
}

impl ServedSite {
    pub fn new(manifest: Manifest) -> ServedSite {
        let files = manifest
            .files
            .into_iter()
            .filter_map(|(path, entry)| {
                // A manifest is our own output, but a value that is not a valid header
                // (hand-edited storage) must cost one file, not the whole site.
                let content_type = HeaderValue::from_str(&entry.content_type).ok()?;
                let etag = |suffix: &str| {
                    HeaderValue::from_str(&format!("\"{}{suffix}\"", entry.hash)).ok()
                };
                let cache_control = if entry.content_type.starts_with("text/html") {
                    NO_CACHE
                } else if is_fingerprinted(&path) {
                    IMMUTABLE
                } else {
                    REVALIDATE
                };
                let identity = Representation {
                    encoding: None,
                    etag: etag("")?,
                    key: layout::blob(&entry.hash),
                };
                let variants = entry
                    .encodings
                    .iter()
                    .filter_map(|enc| {
                        Some(Representation {
                            encoding: Some(*enc),
                            etag: etag(&format!("-{}", enc.suffix()))?,
                            key: layout::blob_variant(&entry.hash, *enc),
                        })
                    })
                    .collect();
                let file = ServedFile {
                    hash: entry.hash,
                    size: entry.size,
                    content_type,
                    cache_control,
                    identity,
                    variants,
                };
                Some((path, file))
            })
            .collect();
        ServedSite {
            slug: manifest.slug,
            site: manifest.site,
            files,
        }
    }
}
