//! Turning uploaded blobs into a live deployment: precompressed variants, the manifest,
//! and the route pointer. Used by the builder after a build and by the server for
//! prebuilt uploads, so both produce identical manifests.

use std::collections::BTreeMap;
use std::io::Write;

use bytes::Bytes;

use crate::config::SiteConfig;
use crate::layout;
use crate::manifest::{Encoding, FileEntry, Manifest, Route, Site};
use crate::storage::{get_json, put_json, Storage, StorageError};

/// Files smaller than this are not worth a compressed variant.
const MIN_COMPRESS_SIZE: u64 = 1024;
/// Files larger than this get no precompressed variant: compressing holds the file and
/// its variants in memory, and files this large are rarely text a browser fetches whole.
pub const MAX_COMPRESS_SIZE: u64 = 32 << 20;

/// Creates `blobs/<hash>.br` and `.gz` for a compressible blob when they are missing and
/// smaller than the original; returns the variants that exist afterwards.
pub async fn ensure_variants(
    storage: &dyn Storage,
    hash: &str,
    size: u64,
    content_type: &str,
) -> Result<Vec<Encoding>, StorageError> {
    if !(MIN_COMPRESS_SIZE..=MAX_COMPRESS_SIZE).contains(&size)
        || !crate::mime::is_compressible(content_type)
    {
        return Ok(Vec::new());
    }
    let mut present = Vec::new();
    let mut wanted = Vec::new();
    for enc in [Encoding::Br, Encoding::Gzip] {
        if storage.exists(&layout::blob_variant(hash, enc)).await? {
            present.push(enc);
        } else {
            wanted.push(enc);
        }
    }
    if wanted.is_empty() {
        return Ok(present);
    }
    let Some(data) = storage.get(&layout::blob(hash)).await? else {
        return Err(StorageError::Corrupt {
            key: layout::blob(hash),
            message: "blob is missing".into(),
        });
    };
    let compressed = tokio::task::spawn_blocking(move || {
        wanted
            .into_iter()
            .map(|enc| (enc, compress(enc, &data)))
            .collect::<Vec<_>>()
    })
    .await
    .map_err(|e| StorageError::Backend(format!("compression task failed: {e}")))?;
    for (enc, data) in compressed {
        // A variant that saves under 10% costs a request header check and storage for nothing.
        if (data.len() as u64) * 10 < size * 9 {
            storage.put(&layout::blob_variant(hash, enc), data).await?;
            present.push(enc);
        }
    }
    present.sort_by_key(|e| *e != Encoding::Br);
    Ok(present)
}

fn compress(enc: Encoding, data: &[u8]) -> Bytes {
    match enc {
        Encoding::Br => {
            // Quality 11 is several times slower than 9 for large bundles and gains ~2%.
            let quality = if data.len() > 256 * 1024 { 9 } else { 11 };
            let mut out = Vec::with_capacity(data.len() / 3);
            {
                let mut w = brotli::CompressorWriter::new(&mut out, 64 * 1024, quality, 22);
                w.write_all(data).expect("writing to a Vec cannot fail");
            }
            Bytes::from(out)
        }
        Encoding::Gzip => {
            let mut w = flate2::write::GzEncoder::new(
                Vec::with_capacity(data.len() / 3),
                flate2::Compression::best(),
            );
            w.write_all(data).expect("writing to a Vec cannot fail");
            Bytes::from(w.finish().expect("writing to a Vec cannot fail"))
        }
    }
}

/// A file of the output: URL path (`/index.html`) → (hash, size). The blob is in storage.
pub type OutputFiles = BTreeMap<String, (String, u64)>;

/// Writes `deployments/<id>/manifest.json` for uploaded output, creating compressed
/// variants on the way.
pub async fn write_manifest(
    storage: &dyn Storage,
    slug: &str,
    id: &str,
    files: &OutputFiles,
    site: &SiteConfig,
) -> Result<Manifest, StorageError> {
    let mut entries = BTreeMap::new();
    for (path, (hash, size)) in files {
        let content_type = crate::mime::content_type(path);
        let encodings = ensure_variants(storage, hash, *size, &content_type).await?;
        entries.insert(
            path.clone(),
            FileEntry {
                hash: hash.clone(),
                size: *size,
                content_type,
                encodings,
            },
        );
    }
    let manifest = Manifest {
        id: id.to_string(),
        slug: slug.to_string(),
        created_at: crate::now_rfc3339(),
        site: Site::resolve(site, entries.contains_key("/404.html")),
        files: entries,
    };
    put_json(storage, &layout::manifest(id), &manifest).await?;
    Ok(manifest)
}

/// Points `<slug>.<domain>` at a deployment (activation, promote, rollback).
pub async fn set_route(storage: &dyn Storage, slug: &str, id: &str) -> Result<(), StorageError> {
    put_json(
        storage,
        &layout::route(slug),
        &Route {
            production: id.to_string(),
        },
    )
    .await
}

/// The deployment `<slug>.<domain>` serves, if any.
pub async fn get_route(storage: &dyn Storage, slug: &str) -> Result<Option<Route>, StorageError> {
    get_json(storage, &layout::route(slug)).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::LocalStorage;

    #[tokio::test]
    async fn manifest_with_variants() {
        let dir = tempfile::tempdir().unwrap();
        let s = LocalStorage::open(dir.path()).unwrap();
        let js = "console.log('hello world');\n".repeat(200);
        let png = vec![7u8; 4000];
        let mut files = OutputFiles::new();
        for (path, data) in [
            ("/assets/app.js", js.as_bytes()),
            ("/a.png", &png[..]),
            ("/404.html", b"nope"),
        ] {
            let hash = crate::sha256_hex(data);
            s.put(&layout::blob(&hash), Bytes::copy_from_slice(data))
                .await
                .unwrap();
            files.insert(path.to_string(), (hash, data.len() as u64));
        }
        let m = write_manifest(&s, "app", "abc", &files, &SiteConfig::default())
            .await
            .unwrap();
        assert_eq!(m.files.len(), 3);
        assert_eq!(
            m.files["/assets/app.js"].encodings,
            vec![Encoding::Br, Encoding::Gzip]
        );
        assert!(m.files["/a.png"].encodings.is_empty());
        assert!(
            !m.site.spa,
            "a 404.html turns the SPA fallback off by default"
        );
        let stored: Manifest = get_json(&s, &layout::manifest("abc"))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(stored, m);
        set_route(&s, "app", "abc").await.unwrap();
        assert_eq!(
            get_route(&s, "app").await.unwrap().unwrap().production,
            "abc"
        );
    }
}
