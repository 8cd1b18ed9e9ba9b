//! A deployment prepared for serving: everything a response needs that does not depend
//! on the request (header values, ETags, storage keys) is computed once, when the
//! manifest is loaded, not on every request.

use std::collections::BTreeMap;

use cdeploy_core::layout;
use cdeploy_core::manifest::{Encoding, Manifest, Site};
use cdeploy_core::rules::route::Router;
use cdeploy_storage::publish;
use hyper::header::HeaderValue;

use crate::resolve::is_fingerprinted;

const IMMUTABLE: HeaderValue = HeaderValue::from_static("public, max-age=31536000, immutable");
const REVALIDATE: HeaderValue = HeaderValue::from_static("public, max-age=0, must-revalidate");
const NO_CACHE: HeaderValue = HeaderValue::from_static("no-cache");

/// One representation of a file: identity or a compressed variant.
#[derive(Debug, Clone)]
pub struct Representation {
    pub encoding: Option<Encoding>,
    /// Strong ETag: the content hash, plus the encoding for variants.
    pub etag: HeaderValue,
    /// Storage key of the bytes (for a variant made on demand, its key in the blob cache).
    pub key: String,
    /// A small file's variant, compressed from the identity when first asked for
    /// (`publish::compressed_on_demand`) rather than stored.
    pub on_demand: bool,
}

#[derive(Debug, Clone)]
pub struct ServedFile {
    pub hash: String,
    /// Size of the identity representation.
    pub size: u64,
    pub content_type: HeaderValue,
    pub cache_control: HeaderValue,
    pub identity: Representation,
    /// Compressed variants (stored or made on demand), best first.
    pub variants: Vec<Representation>,
}

#[derive(Debug)]
pub struct ServedSite {
    /// The deployment's id.
    pub id: String,
    pub slug: String,
    pub site: Site,
    pub files: BTreeMap<String, ServedFile>,
    /// The deployment's redirect, rewrite, proxy and header rules, indexed.
    pub router: Router,
    /// A server app's server: what no file answers goes to it.
    pub server: Option<cdeploy_core::server::ServerSpec>,
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
                    on_demand: false,
                };
                // Stored variants are listed in the manifest; a small compressible file
                // has none and is compressed when served.
                let on_demand = entry.encodings.is_empty()
                    && publish::compressed_on_demand(entry.size, &entry.content_type);
                let encodings: &[Encoding] = if on_demand {
                    &[Encoding::Br, Encoding::Gzip]
                } else {
                    &entry.encodings
                };
                let variants = encodings
                    .iter()
                    .filter_map(|enc| {
                        // Made bytes are cached under a key of their own: a deployment
                        // from before on-demand compression may list a stored variant
                        // of the same blob, at another level, so other bytes.
                        let key = layout::blob_variant(&entry.hash, *enc);
                        Some(Representation {
                            encoding: Some(*enc),
                            etag: etag(&format!("-{}", enc.suffix()))?,
                            key: if on_demand {
                                format!("{key}#on-demand")
                            } else {
                                key
                            },
                            on_demand,
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
            id: manifest.id,
            slug: manifest.slug,
            site: manifest.site,
            files,
            router: Router::new(manifest.rules),
            server: manifest.server,
        }
    }
}
