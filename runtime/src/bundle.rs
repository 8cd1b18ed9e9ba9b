//! A deployment's server files on this host: `bundles/<id>/`, made once from its
//! `server.json` and kept while the deployment may run again (a sleeping server's next
//! start does not fetch anything). Each blob is read from storage once per host into
//! `blobs/<hash>` (readable by the servers' uid, checked against its name), and a
//! bundle's files are hard links to those, so deployments that share `node_modules`
//! share their files on disk too (executable files are copies with their mode). The
//! folder is mounted read-only into the runtime: nothing it runs can change a blob.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use cdeploy_core::layout;
use cdeploy_core::server::{ServerBundle, ServerSpec};
use cdeploy_storage::Storage;
use futures_util::StreamExt;

/// Blobs downloaded at once for a bundle.
const DOWNLOADS: usize = 16;

/// Marks a finished bundle folder.
const COMPLETE: &str = ".cdeploy-complete";

/// The bundle folder of deployment `id` under `bundles`, made if it is not there yet.
pub async fn materialize(
    storage: &dyn Storage,
    (bundles, blobs): (&Path, &Path),
    id: &str,
    spec: &ServerSpec,
) -> Result<PathBuf, String> {
    let dir = bundles.join(id);
    if dir.join(COMPLETE).is_file() {
        return Ok(dir);
    }
    let bundle: ServerBundle = cdeploy_storage::get_json(storage, &layout::server_bundle(id))
        .await
        .map_err(|e| format!("cannot read the server's bundle: {e}"))?
        .ok_or("the deployment's server bundle is not in storage")?;
    bundle.validate()?;
    // Every blob is kept once in this host's blob folder (readable by the servers'
    // uid, unlike storage's own files), and linked from there.
    let mut sources = Vec::with_capacity(bundle.files.len());
    let mut missing = Vec::new();
    for (path, f) in &bundle.files {
        let source = blobs.join(&f.hash);
        if !source.is_file() {
            missing.push(f.hash.clone());
        }
        sources.push((path.clone(), source, f.exec));
    }
    missing.sort();
    missing.dedup();
    download(storage, blobs, missing).await?;
    let tmp = bundles.join(format!(".{id}.{}", unique()));
    let (dir2, spec) = (dir.clone(), spec.clone());
    tokio::task::spawn_blocking(move || write_folder(&tmp, &dir2, &sources, &bundle, &spec))
        .await
        .map_err(|e| format!("writing the bundle failed: {e}"))?
        .map_err(|e| format!("cannot write the server's files: {e}"))?;
    Ok(dir)
}

/// Removes deployment `id`'s folder under `bundles`, then every blob of `blobs` that no
/// folder links any more (one link left: the blob's own name) and that is older than
/// `settle` (one just fetched for a folder being made is not linked yet). Answers the
/// blobs removed and their bytes.
pub(crate) fn prune(
    (bundles, blobs): (&Path, &Path),
    id: &str,
    settle: std::time::Duration,
) -> std::io::Result<(usize, u64)> {
    use std::os::unix::fs::MetadataExt;
    let dir = bundles.join(id);
    if std::fs::symlink_metadata(&dir).is_ok() {
        std::fs::remove_dir_all(&dir)?;
    }
    let now = std::time::SystemTime::now();
    let (mut removed, mut bytes) = (0, 0);
    for entry in std::fs::read_dir(blobs)?.flatten() {
        // Not followed: a blob is a plain file this process wrote.
        let Ok(meta) = entry.metadata() else {
            continue;
        };
        let settled = meta
            .modified()
            .ok()
            .and_then(|m| now.duration_since(m).ok())
            .is_some_and(|age| age >= settle);
        let temporary = entry.file_name().to_string_lossy().starts_with('.');
        if meta.is_file() && meta.nlink() == 1 && settled && !temporary {
            std::fs::remove_file(entry.path())?;
            removed += 1;
            bytes += meta.len();
        }
    }
    Ok((removed, bytes))
}

/// A name part no other temporary file of this process (or another) has.
fn unique() -> String {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("{}-{n}", std::process::id())
}

/// Fetches blobs into `blobs/<hash>`, checked against their names.
async fn download(storage: &dyn Storage, blobs: &Path, hashes: Vec<String>) -> Result<(), String> {
    let mut fetches = futures_util::stream::iter(hashes.into_iter().map(|hash| async move {
        let keep = |e: std::io::Error| format!("cannot keep a server file: {e}");
        // Unique: two deployments sharing a file may start (and fetch it) at once.
        let tmp = blobs.join(format!(".{hash}.{}", unique()));
        let key = layout::blob(&hash);
        match storage.local_file(&key) {
            // A storage folder on this host (its blobs checked when stored): copied
            // file to file, not read into memory.
            Some(path) => {
                tokio::fs::copy(&path, &tmp).await.map_err(keep)?;
            }
            None => {
                let data = storage
                    .get(&key)
                    .await
                    .map_err(|e| format!("cannot fetch a server file ({hash}): {e}"))?
                    .ok_or_else(|| format!("a server file is missing from storage ({hash})"))?;
                if cdeploy_core::sha256_hex(&data) != hash {
                    return Err(format!(
                        "a server file in storage does not have its hash ({hash})"
                    ));
                }
                tokio::fs::write(&tmp, &data).await.map_err(keep)?;
            }
        }
        tokio::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o644))
            .await
            .map_err(keep)?;
        tokio::fs::rename(&tmp, blobs.join(&hash))
            .await
            .map_err(keep)
    }))
    .buffer_unordered(DOWNLOADS);
    while let Some(r) = fetches.next().await {
        r?;
    }
    Ok(())
}

/// Writes the folder at `tmp`, then renames it into place.
fn write_folder(
    tmp: &Path,
    dir: &Path,
    sources: &[(String, PathBuf, bool)],
    bundle: &ServerBundle,
    spec: &ServerSpec,
) -> std::io::Result<()> {
    let _ = std::fs::remove_dir_all(tmp);
    std::fs::create_dir_all(tmp)?;
    for (path, source, exec) in sources {
        let dest = tmp.join(path);
        make_parent(tmp, &dest)?;
        place(source, &dest, *exec)?;
    }
    for (path, target) in &bundle.links {
        let dest = tmp.join(path);
        make_parent(tmp, &dest)?;
        std::os::unix::fs::symlink(target, &dest)?;
    }
    // Next.js writes its cache beside the server; the runtime mounts a writable folder
    // of its own there, which needs a place in the read-only bundle.
    let app = match spec.cwd.as_str() {
        "." => tmp.to_path_buf(),
        cwd => tmp.join(cwd),
    };
    // Links are never followed here (this process is root; a link could point out).
    let real_dir = |p: &Path| std::fs::symlink_metadata(p).is_ok_and(|m| m.is_dir());
    if spec.kind == "nextjs" && real_dir(&app) && real_dir(&app.join(".next")) {
        let cache = app.join(".next/cache");
        if std::fs::symlink_metadata(&cache).is_err() {
            std::fs::create_dir(&cache)?;
            std::fs::set_permissions(&cache, std::fs::Permissions::from_mode(0o755))?;
        }
    }
    std::fs::write(tmp.join(COMPLETE), "")?;
    std::fs::set_permissions(tmp, std::fs::Permissions::from_mode(0o755))?;
    match std::fs::rename(tmp, dir) {
        Ok(()) => Ok(()),
        // Another start made it first: theirs is as good.
        Err(_) if dir.join(COMPLETE).is_file() => std::fs::remove_dir_all(tmp),
        Err(e) => Err(e),
    }
}

/// Creates the folders above `dest` (readable by the runtime's uid).
fn make_parent(root: &Path, dest: &Path) -> std::io::Result<()> {
    let Some(parent) = dest.parent() else {
        return Ok(());
    };
    if parent.is_dir() {
        return Ok(());
    }
    std::fs::create_dir_all(parent)?;
    let mut at = parent;
    while at != root {
        std::fs::set_permissions(at, std::fs::Permissions::from_mode(0o755))?;
        match at.parent() {
            Some(p) => at = p,
            None => break,
        }
    }
    Ok(())
}

/// A hard link to the blob when anyone may read it and it need not be executable (a
/// link shares the blob's mode), else a copy with the mode the bundle says.
fn place(source: &Path, dest: &Path, exec: bool) -> std::io::Result<()> {
    let readable = std::fs::metadata(source)?.permissions().mode() & 0o004 != 0;
    if !exec && readable && std::fs::hard_link(source, dest).is_ok() {
        return Ok(());
    }
    std::fs::copy(source, dest)?;
    let mode = if exec { 0o755 } else { 0o644 };
    std::fs::set_permissions(dest, std::fs::Permissions::from_mode(mode))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use cdeploy_core::server::BundleFile;
    use cdeploy_storage::LocalStorage;

    /// A bundle of `files` (path, contents, executable), its blobs put in `storage`.
    async fn bundle_of(storage: &LocalStorage, files: &[(String, String, bool)]) -> ServerBundle {
        let mut bundle = ServerBundle::default();
        for (path, data, exec) in files {
            let hash = cdeploy_core::sha256_hex(data.as_bytes());
            storage
                .put(&layout::blob(&hash), Bytes::from(data.clone()))
                .await
                .unwrap();
            let (size, exec) = (data.len() as u64, *exec);
            bundle
                .files
                .insert(path.clone(), BundleFile { hash, size, exec });
        }
        bundle
    }

    /// `bundle` stored as the server bundle of each of `ids`.
    async fn store_for(storage: &LocalStorage, bundle: &ServerBundle, ids: &[&str]) {
        for id in ids {
            cdeploy_storage::put_json(storage, &layout::server_bundle(id), bundle)
                .await
                .unwrap();
        }
    }

    fn node_spec() -> ServerSpec {
        ServerSpec {
            kind: "node".into(),
            node: "24.1.0".into(),
            command: vec!["node".into(), "server.js".into()],
            cwd: ".".into(),
            health: "/".into(),
        }
    }

    /// A host's bundle and blob folders under `d`, made.
    fn host_dirs(d: &Path) -> (PathBuf, PathBuf) {
        let (bundles, blobs) = (d.join("bundles"), d.join("blobs"));
        std::fs::create_dir_all(&bundles).unwrap();
        std::fs::create_dir_all(&blobs).unwrap();
        (bundles, blobs)
    }

    fn files(list: &[(&str, &str, bool)]) -> Vec<(String, String, bool)> {
        list.iter()
            .map(|(p, d, x)| (p.to_string(), d.to_string(), *x))
            .collect()
    }

    #[tokio::test]
    async fn deployments_sharing_files_are_made_at_once() {
        let d = tempfile::tempdir().unwrap();
        let storage = LocalStorage::open(d.path().join("s")).unwrap();
        let modules: Vec<(String, String, bool)> = (0..50)
            .map(|i| {
                (
                    format!("node_modules/m{i}.js"),
                    format!("module {i}"),
                    false,
                )
            })
            .collect();
        let bundle = bundle_of(&storage, &modules).await;
        let spec = node_spec();
        store_for(&storage, &bundle, &["d1", "d2", "d3"]).await;
        let (bundles, blobs) = host_dirs(d.path());
        let made = futures_util::future::join_all(
            ["d1", "d2", "d3"].map(|id| materialize(&storage, (&bundles, &blobs), id, &spec)),
        )
        .await;
        for m in made {
            let dir = m.unwrap();
            assert_eq!(
                std::fs::read_to_string(dir.join("node_modules/m7.js")).unwrap(),
                "module 7"
            );
        }
    }

    #[tokio::test]
    async fn bundles_are_written_with_their_links_and_modes() {
        let d = tempfile::tempdir().unwrap();
        let storage = LocalStorage::open(d.path().join("s")).unwrap();
        let list = files(&[
            ("server.js", "require('./lib/a')", false),
            ("node_modules/.bin/tool", "#!/bin/sh", true),
            ("lib/a.js", "1", false),
        ]);
        let mut bundle = bundle_of(&storage, &list).await;
        bundle.links.insert("lib/b.js".into(), "a.js".into());
        store_for(&storage, &bundle, &["d1"]).await;
        let spec = node_spec();
        let (bundles, blobs) = host_dirs(d.path());
        let dir = materialize(&storage, (&bundles, &blobs), "d1", &spec)
            .await
            .unwrap();
        assert_eq!(std::fs::read_to_string(dir.join("lib/b.js")).unwrap(), "1");
        // One copy per host: the file is the host's blob, linked.
        use std::os::unix::fs::MetadataExt;
        let hash = cdeploy_core::sha256_hex(b"1");
        assert_eq!(
            std::fs::metadata(dir.join("lib/a.js")).unwrap().ino(),
            std::fs::metadata(blobs.join(&hash)).unwrap().ino()
        );
        let mode = std::fs::metadata(dir.join("node_modules/.bin/tool"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o111, 0o111);
        // A second start finds it made.
        assert_eq!(
            materialize(&storage, (&bundles, &blobs), "d1", &spec)
                .await
                .unwrap(),
            dir
        );
        // A bundle that climbs out is refused before anything is written.
        bundle.links.insert("x".into(), "../../etc".into());
        cdeploy_storage::put_json(&storage, &layout::server_bundle("d2"), &bundle)
            .await
            .unwrap();
        assert!(materialize(&storage, (&bundles, &blobs), "d2", &spec)
            .await
            .is_err());
        assert!(!bundles.join("d2").exists());
    }

    #[tokio::test]
    async fn a_forgotten_folder_goes_with_the_blobs_only_it_linked() {
        let d = tempfile::tempdir().unwrap();
        let storage = LocalStorage::open(d.path().join("s")).unwrap();
        let list = files(&[("server.js", "require('./a')", false), ("a.js", "1", false)]);
        let bundle = bundle_of(&storage, &list).await;
        store_for(&storage, &bundle, &["d1", "d2"]).await;
        let spec = node_spec();
        let (bundles, blobs) = host_dirs(d.path());
        let places = (bundles.as_path(), blobs.as_path());
        let one = materialize(&storage, places, "d1", &spec).await.unwrap();
        let two = materialize(&storage, places, "d2", &spec).await.unwrap();
        let count = || std::fs::read_dir(&blobs).unwrap().count();
        assert_eq!(count(), 2);
        // The other folder still links every blob: none goes.
        let now = std::time::Duration::ZERO;
        assert_eq!(prune(places, "d1", now).unwrap().0, 0);
        assert!(!one.exists() && two.is_dir());
        // Blobs fetched just now stay, however unlinked.
        let settle = std::time::Duration::from_secs(600);
        assert_eq!(prune(places, "d2", settle).unwrap().0, 0);
        assert!(!two.exists());
        assert_eq!(count(), 2);
        assert_eq!(prune(places, "d2", now).unwrap(), (2, 15));
        assert_eq!(count(), 0);
    }
}
