//! Turning uploaded blobs into a live deployment: precompressed variants, the manifest,
//! and the route pointer. Used by the builder after a build and by the server for
//! prebuilt uploads, so both produce identical manifests.

use std::collections::BTreeMap;
use std::io::Write;

use bytes::Bytes;

use cdeploy_core::config::SiteConfig;
use cdeploy_core::layout;
use cdeploy_core::manifest::{Encoding, FileEntry, Manifest, Route, Site};
use cdeploy_core::rules::{self, RuleError, Rules, RulesConfig};
use cdeploy_core::server::ServerOutput;

use crate::{get_json, put_json, Storage, StorageError};

/// Files smaller than this are not worth a compressed variant.
const MIN_COMPRESS_SIZE: u64 = 1024;
/// Compressible files up to this size get no stored variants: the proxy compresses them
/// when a visitor first asks (brotli quality 5 and gzip level 6 take well under a
/// millisecond for a 1 KiB page, a few for 64 KiB) and keeps the result in its blob
/// cache. A site of 10,000 pages would otherwise create 20,000 more files at activation
/// (measured: 3 of the 8.4 s a new 10,000-page deployment took), and a storage that
/// holds the variants of every page ever deployed. Larger files, a site's few bundles,
/// are compressed once, at activation, at a quality worth the wait.
pub const ON_DEMAND_MAX: u64 = 64 * 1024;
/// Files larger than this get no precompressed variant: compressing them takes long,
/// and files this large are rarely text a browser fetches whole.
pub const MAX_COMPRESS_SIZE: u64 = 256 << 20;
/// Files up to this size are compressed in memory; larger ones file to file, streamed,
/// so compressing never holds a large file (or its variants) in memory.
const IN_MEMORY_COMPRESS_SIZE: u64 = 1 << 20;
/// Brotli settings for large files. Measured on a 9 MB text file: quality 9 with a
/// 4 MiB window peaks at +90 MiB and takes 11 s; quality 6 with a 1 MiB window peaks at
/// +12 MiB, takes 2.3 s, and is 6% larger.
const STREAMED_BROTLI_QUALITY: u32 = 6;
const STREAMED_BROTLI_WINDOW: u32 = 20;
/// Brotli quality for files compressed on demand. Measured on 1 KiB HTML pages: quality
/// 11 takes 4.6 ms a page and 5 takes 0.07 ms, for the same size within 3% (125 and 121
/// bytes).
const ON_DEMAND_BROTLI_QUALITY: u32 = 5;

/// Compression runs on the blocking pool, at most one task per core: a deployment of
/// many files compresses them in parallel without crowding out everything else (or
/// holding a brotli state per file in memory at once).
fn compression_slots() -> &'static tokio::sync::Semaphore {
    static SLOTS: std::sync::OnceLock<tokio::sync::Semaphore> = std::sync::OnceLock::new();
    SLOTS.get_or_init(|| {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        tokio::sync::Semaphore::new(cores)
    })
}

/// Creates `blobs/<hash>.br` and `.gz` for a compressible blob when they are missing and
/// smaller than the original; returns the variants that exist afterwards.
pub async fn ensure_variants(
    storage: &dyn Storage,
    hash: &str,
    size: u64,
    content_type: &str,
) -> Result<Vec<Encoding>, StorageError> {
    if !wants_variants(size, content_type) {
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
    if size > IN_MEMORY_COMPRESS_SIZE {
        present.extend(compress_streamed(storage, hash, size, wanted).await?);
        present.sort_by_key(|e| *e != Encoding::Br);
        return Ok(present);
    }
    let Some(data) = storage.get(&layout::blob(hash)).await? else {
        return Err(StorageError::Corrupt {
            key: layout::blob(hash),
            message: "blob is missing".into(),
        });
    };
    let _slot = compression_slots()
        .acquire()
        .await
        .map_err(|e| StorageError::Backend(format!("compression slots closed: {e}")))?;
    let compressed = tokio::task::spawn_blocking(move || {
        wanted
            .into_iter()
            .map(|enc| (enc, compress(enc, &data)))
            .collect::<Vec<_>>()
    })
    .await
    .map_err(|e| StorageError::Backend(format!("compression task failed: {e}")))?;
    for (enc, data) in compressed {
        if worth_it(data.len() as u64, size) {
            storage.put(&layout::blob_variant(hash, enc), data).await?;
            present.push(enc);
        }
    }
    present.sort_by_key(|e| *e != Encoding::Br);
    Ok(present)
}

/// Whether a blob served as `content_type` gets precompressed variants in storage.
fn wants_variants(size: u64, content_type: &str) -> bool {
    (ON_DEMAND_MAX + 1..=MAX_COMPRESS_SIZE).contains(&size)
        && crate::mime::is_compressible(content_type)
}

/// Whether a file without stored variants is compressed when it is served
/// ([`compress_on_demand`]).
pub fn compressed_on_demand(size: u64, content_type: &str) -> bool {
    (MIN_COMPRESS_SIZE..=ON_DEMAND_MAX).contains(&size)
        && crate::mime::is_compressible(content_type)
}

/// A small file's `enc` representation, made when it is served: brotli at quality 5, gzip
/// at level 6 (the levels a web server compresses at on the fly). `None` when it would
/// not save 10%, and the file is better served as it is.
pub fn compress_on_demand(enc: Encoding, data: &[u8]) -> Option<Bytes> {
    let out = Vec::with_capacity(data.len() / 3);
    let compressed = match enc {
        Encoding::Br => {
            let buffer = data.len().clamp(4096, 64 * 1024);
            encode(enc, data, out, (ON_DEMAND_BROTLI_QUALITY, 20, buffer))
        }
        Encoding::Gzip => {
            let mut w = flate2::write::GzEncoder::new(out, flate2::Compression::default());
            w.write_all(data).and_then(|()| w.finish())
        }
    }
    .expect("writing to a Vec cannot fail");
    worth_it(compressed.len() as u64, data.len() as u64).then(|| Bytes::from(compressed))
}

/// A variant that saves under 10% costs a request header check and storage for nothing.
fn worth_it(compressed: u64, size: u64) -> bool {
    compressed * 10 < size * 9
}

/// Compresses a large blob file to file: the blob is streamed to a private temporary
/// file, each variant is written to another by a streaming encoder, and storage takes
/// the variant files. Memory use is a few buffers, whatever the size.
async fn compress_streamed(
    storage: &dyn Storage,
    hash: &str,
    size: u64,
    wanted: Vec<Encoding>,
) -> Result<Vec<Encoding>, StorageError> {
    use futures_util::StreamExt;
    use tokio::io::AsyncWriteExt;
    let key = layout::blob(hash);
    let io = |e: std::io::Error| StorageError::Io {
        key: key.clone(),
        source: e,
    };
    let dir = tempfile::tempdir().map_err(io)?;
    let src = dir.path().join("blob");
    let mut stream =
        storage
            .get_stream(&key, None)
            .await?
            .ok_or_else(|| StorageError::Corrupt {
                key: key.clone(),
                message: "blob is missing".into(),
            })?;
    let mut file = tokio::fs::File::create(&src).await.map_err(io)?;
    while let Some(chunk) = stream.next().await {
        file.write_all(&chunk.map_err(io)?).await.map_err(io)?;
    }
    file.flush().await.map_err(io)?;
    drop(file);
    let mut made = Vec::new();
    for enc in wanted {
        let dst = dir.path().join(enc.suffix());
        let (s, d) = (src.clone(), dst.clone());
        let _slot = compression_slots()
            .acquire()
            .await
            .map_err(|e| StorageError::Backend(format!("compression slots closed: {e}")))?;
        let len = tokio::task::spawn_blocking(move || compress_file(enc, &s, &d))
            .await
            .map_err(|e| StorageError::Backend(format!("compression task failed: {e}")))?
            .map_err(io)?;
        if worth_it(len, size) {
            storage
                .put_file(&layout::blob_variant(hash, enc), &dst)
                .await?;
            made.push(enc);
        }
    }
    Ok(made)
}

/// Compresses `src` into `dst`; returns the compressed size.
fn compress_file(
    enc: Encoding,
    src: &std::path::Path,
    dst: &std::path::Path,
) -> std::io::Result<u64> {
    let input = std::io::BufReader::with_capacity(256 * 1024, std::fs::File::open(src)?);
    let out = std::io::BufWriter::new(std::fs::File::create(dst)?);
    let settings = (STREAMED_BROTLI_QUALITY, STREAMED_BROTLI_WINDOW, 64 * 1024);
    encode(enc, input, out, settings)?
        .into_inner()
        .map_err(|e| e.into_error())?
        .sync_all()?;
    Ok(std::fs::metadata(dst)?.len())
}

fn compress(enc: Encoding, data: &[u8]) -> Bytes {
    // Stored variants are of files over `ON_DEMAND_MAX`, a site's few bundles, where the
    // bytes saved add up. Quality 11 is several times slower than 9 for large bundles
    // and gains ~2%.
    let quality = if data.len() <= 256 * 1024 { 11 } else { 9 };
    // A 1 MiB window covers every file compressed in memory (at most 1 MiB). A smaller
    // one for a small file only slows brotli down (measured: 3x at 2 KiB); the buffer
    // is sized to the file, less to allocate and clear for each of many small files.
    let window = 20;
    let buffer = data.len().clamp(4096, 64 * 1024);
    let out = Vec::with_capacity(data.len() / 3);
    Bytes::from(
        encode(enc, data, out, (quality, window, buffer)).expect("writing to a Vec cannot fail"),
    )
}

/// Streams `input` through the encoder into `out` and returns `out`, finished.
/// `brotli` is (quality, window bits, buffer size).
fn encode<R: std::io::Read, W: Write>(
    enc: Encoding,
    mut input: R,
    out: W,
    brotli: (u32, u32, usize),
) -> std::io::Result<W> {
    match enc {
        Encoding::Br => {
            let mut w = brotli::CompressorWriter::new(out, brotli.2, brotli.0, brotli.1);
            std::io::copy(&mut input, &mut w)?;
            w.flush()?;
            Ok(w.into_inner())
        }
        Encoding::Gzip => {
            let mut w = flate2::write::GzEncoder::new(out, flate2::Compression::best());
            std::io::copy(&mut input, &mut w)?;
            w.finish()
        }
    }
}

/// A file of the output: URL path (`/index.html`) → (hash, size). The blob is in storage.
pub type OutputFiles = BTreeMap<String, (String, u64)>;

/// Why a deployment's manifest was not written.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("cannot write the manifest: {0}")]
    Storage(#[from] StorageError),
    /// Bad lines in `_redirects`, `_headers` or cdeploy.toml's rule tables.
    #[error("the site's rules have errors:\n{}", rules::describe(.0))]
    Rules(Vec<RuleError>),
}

/// Reads the output's `_redirects` and `_headers` and compiles them with cdeploy.toml's
/// tables; the files themselves are not served.
async fn compile_rules(
    storage: &dyn Storage,
    files: &mut OutputFiles,
    config: &RulesConfig,
) -> Result<Rules, PublishError> {
    let mut texts = Vec::new();
    for name in [rules::REDIRECTS_FILE, rules::HEADERS_FILE] {
        let Some((hash, size)) = files.remove(&format!("/{name}")) else {
            texts.push(None);
            continue;
        };
        let refuse = |reason: String| {
            PublishError::Rules(vec![RuleError {
                at: name.to_string(),
                reason,
            }])
        };
        if size > rules::MAX_FILE_BYTES {
            return Err(refuse(format!(
                "larger than {} KiB",
                rules::MAX_FILE_BYTES >> 10
            )));
        }
        let data =
            storage
                .get(&layout::blob(&hash))
                .await?
                .ok_or_else(|| StorageError::Corrupt {
                    key: layout::blob(&hash),
                    message: "blob is missing".into(),
                })?;
        let text =
            String::from_utf8(data.to_vec()).map_err(|_| refuse("not UTF-8 text".to_string()))?;
        // An editor's byte-order mark is not part of the first rule.
        let text = match text.strip_prefix('\u{feff}') {
            Some(rest) => rest.to_string(),
            None => text,
        };
        texts.push(Some(text));
    }
    rules::compile(rules::Sources {
        redirects_file: texts[0].as_deref(),
        headers_file: texts[1].as_deref(),
        config: Some(config),
    })
    .map_err(PublishError::Rules)
}

/// Which stored variants of these blobs exist already, asked in bulk: on a redeploy that
/// is nearly all.
async fn present_variants(
    storage: &dyn Storage,
    kinds: &[(String, u64, String)],
) -> Result<std::collections::HashSet<String>, StorageError> {
    let keys: Vec<String> = kinds
        .iter()
        .filter(|(_, size, ct)| wants_variants(*size, ct))
        .flat_map(|(h, _, _)| [Encoding::Br, Encoding::Gzip].map(|e| layout::blob_variant(h, e)))
        .collect();
    Ok(keys
        .iter()
        .zip(storage.sizes(&keys).await?)
        .filter(|(_, size)| size.is_some())
        .map(|(k, _)| k.clone())
        .collect())
}

/// Writes `deployments/<id>/manifest.json` for uploaded output, creating compressed
/// variants on the way, with the site's rules compiled in; for a server app, its bundle
/// (`deployments/<id>/server.json`) first, so a manifest that names a server always
/// has one.
pub async fn write_manifest(
    storage: &dyn Storage,
    (slug, id, preview): (&str, &str, bool),
    files: &OutputFiles,
    (site, rules): (&SiteConfig, &RulesConfig),
    server: Option<&ServerOutput>,
) -> Result<Manifest, PublishError> {
    if let Some(server) = server {
        put_json(storage, &layout::server_bundle(id), &server.bundle).await?;
    }
    use futures_util::StreamExt;
    let mut files = files.clone();
    let rules = compile_rules(storage, &mut files, rules).await?;
    let files = &files;
    // Each blob once per way it is served (a content type), and blobs concurrently:
    // checking and making the variants of 10,000 files one after another is seconds.
    let typed: Vec<(&String, &String, u64, String)> = files
        .iter()
        .map(|(path, (hash, size))| (path, hash, *size, crate::mime::content_type(path)))
        .collect();
    // Owned: a stream of futures borrowing from here trips async-trait callers over
    // higher-ranked lifetimes.
    let mut kinds: Vec<(String, u64, String)> = typed
        .iter()
        .map(|(_, hash, size, ct)| ((*hash).clone(), *size, ct.clone()))
        .collect();
    kinds.sort_unstable();
    kinds.dedup();
    let present = present_variants(storage, &kinds).await?;
    let encodings: BTreeMap<(String, String), Vec<Encoding>> = futures_util::stream::iter(kinds)
        .map(|(hash, size, ct)| {
            let both = wants_variants(size, &ct)
                && [Encoding::Br, Encoding::Gzip]
                    .iter()
                    .all(|e| present.contains(&layout::blob_variant(&hash, *e)));
            async move {
                let found = if both {
                    vec![Encoding::Br, Encoding::Gzip]
                } else {
                    ensure_variants(storage, &hash, size, &ct).await?
                };
                Ok::<_, StorageError>(((hash, ct), found))
            }
        })
        .buffer_unordered(32)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<_, _>>()?;
    let mut entries = BTreeMap::new();
    for (path, hash, size, content_type) in &typed {
        let encodings = encodings[&((*hash).clone(), content_type.clone())].clone();
        entries.insert(
            (*path).clone(),
            FileEntry {
                hash: (*hash).clone(),
                size: *size,
                content_type: content_type.clone(),
                encodings,
            },
        );
    }
    let manifest = Manifest {
        id: id.to_string(),
        slug: slug.to_string(),
        created_at: cdeploy_core::now_rfc3339(),
        site: Site::resolve(site, entries.contains_key("/404.html")),
        files: entries,
        rules,
        server: server.map(|s| s.spec.clone()),
        preview: Some(preview),
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
    use crate::LocalStorage;

    #[tokio::test]
    async fn rules_are_compiled_in_and_their_files_not_served() {
        let dir = tempfile::tempdir().unwrap();
        let s = LocalStorage::open(dir.path()).unwrap();
        let mut files = OutputFiles::new();
        for (path, data) in [
            ("/index.html", "home"),
            ("/_redirects", "/a /b 302\n"),
            ("/_headers", "/*\n  X-Frame-Options: DENY\n"),
        ] {
            let hash = cdeploy_core::sha256_hex(data.as_bytes());
            s.put(&layout::blob(&hash), Bytes::from(data))
                .await
                .unwrap();
            files.insert(path.to_string(), (hash, data.len() as u64));
        }
        let config: RulesConfig =
            toml::from_str("[[redirects]]\nfrom = \"/c\"\nto = \"/d\"\n").unwrap();
        let m = write_manifest(
            &s,
            ("app", "abc", false),
            &files,
            (&SiteConfig::default(), &config),
            None,
        )
        .await
        .unwrap();
        assert_eq!(m.files.keys().collect::<Vec<_>>(), ["/index.html"]);
        assert_eq!(m.rules.redirects.len(), 2);
        assert_eq!(m.rules.headers.len(), 1);

        let bad = "/a /b 999\n";
        let hash = cdeploy_core::sha256_hex(bad.as_bytes());
        s.put(&layout::blob(&hash), Bytes::from(bad)).await.unwrap();
        files.insert("/_redirects".into(), (hash, bad.len() as u64));
        let e = write_manifest(
            &s,
            ("app", "abd", false),
            &files,
            (&SiteConfig::default(), &config),
            None,
        )
        .await
        .unwrap_err();
        assert!(e.to_string().contains("_redirects:1: status 999"), "{e}");
        assert!(s.get(&layout::manifest("abd")).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn manifest_with_variants() {
        let dir = tempfile::tempdir().unwrap();
        let s = LocalStorage::open(dir.path()).unwrap();
        let js = "console.log('hello world');\n".repeat(3000);
        let page = "<p>a page</p>\n".repeat(100);
        let png = vec![7u8; 4000];
        let mut files = OutputFiles::new();
        for (path, data) in [
            ("/assets/app.js", js.as_bytes()),
            ("/page.html", page.as_bytes()),
            ("/a.png", &png[..]),
            ("/404.html", b"nope"),
        ] {
            let hash = cdeploy_core::sha256_hex(data);
            s.put(&layout::blob(&hash), Bytes::copy_from_slice(data))
                .await
                .unwrap();
            files.insert(path.to_string(), (hash, data.len() as u64));
        }
        // Larger than the in-memory threshold: compressed file to file.
        let big = "let x = 'a long bundle line';\n".repeat(80_000);
        let hash = cdeploy_core::sha256_hex(big.as_bytes());
        s.put(&layout::blob(&hash), Bytes::from(big.clone()))
            .await
            .unwrap();
        files.insert("/big.js".into(), (hash.clone(), big.len() as u64));
        let m = write_manifest(
            &s,
            ("app", "abc", false),
            &files,
            (&SiteConfig::default(), &RulesConfig::default()),
            None,
        )
        .await
        .unwrap();
        assert_eq!(m.files.len(), 5);
        assert_eq!(
            m.files["/big.js"].encodings,
            vec![Encoding::Br, Encoding::Gzip]
        );
        let br = s
            .get(&layout::blob_variant(&hash, Encoding::Br))
            .await
            .unwrap()
            .unwrap();
        let mut plain = Vec::new();
        brotli::BrotliDecompress(&mut &br[..], &mut plain).unwrap();
        assert_eq!(
            plain,
            big.as_bytes(),
            "the streamed variant decodes to the file"
        );
        assert_eq!(
            m.files["/assets/app.js"].encodings,
            vec![Encoding::Br, Encoding::Gzip]
        );
        assert!(m.files["/a.png"].encodings.is_empty());
        // A small page is compressed when served, not stored compressed.
        let page_entry = &m.files["/page.html"];
        assert!(page_entry.encodings.is_empty());
        assert!(compressed_on_demand(
            page_entry.size,
            &page_entry.content_type
        ));
        assert!(!compressed_on_demand(4000, "image/png"));
        assert!(!compressed_on_demand(js.len() as u64, "text/javascript"));
        assert_eq!(
            s.list("blobs/").await.unwrap().len(),
            9,
            "five blobs and the variants of the two bundles, none of the page"
        );
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

    #[test]
    fn on_demand_compression_decodes_and_skips_what_does_not_shrink() {
        let page = "<li>an item of a long list</li>\n".repeat(200);
        let br = compress_on_demand(Encoding::Br, page.as_bytes()).unwrap();
        let mut plain = Vec::new();
        brotli::BrotliDecompress(&mut &br[..], &mut plain).unwrap();
        assert_eq!(plain, page.as_bytes());
        let gz = compress_on_demand(Encoding::Gzip, page.as_bytes()).unwrap();
        let mut plain = String::new();
        std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&gz[..]), &mut plain)
            .unwrap();
        assert_eq!(plain, page);
        // Bytes that do not compress (already compressed, or random) are served as-is.
        let mut x = 0x9e37_79b9_7f4a_7c15_u64;
        let noise: Vec<u8> = (0..4096)
            .map(|_| {
                // xorshift64: bytes no compressor can shrink.
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        assert_eq!(compress_on_demand(Encoding::Br, &br), None);
        assert_eq!(compress_on_demand(Encoding::Gzip, &noise), None);
    }
}
