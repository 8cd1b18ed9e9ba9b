//! Storage in a local directory (embedded mode, and the builder's trusted mode): every
//! write goes to `tmp/` and is renamed into place, so readers see the old or the new
//! object, never a part.

use std::path::{Path, PathBuf};

use async_trait::async_trait;
use bytes::Bytes;

use crate::{
    blob_hash_of, check_blob, check_key, ByteRange, ByteStream, Listed, Result, Storage,
    StorageError,
};

/// Storage in a local directory.
#[derive(Debug, Clone)]
pub struct LocalStorage {
    root: PathBuf,
}

impl LocalStorage {
    /// Uses (and creates) `root`.
    pub fn open(root: impl Into<PathBuf>) -> std::io::Result<Self> {
        let root = root.into();
        std::fs::create_dir_all(root.join("tmp"))?;
        Ok(LocalStorage { root })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn path(&self, key: &str) -> Result<PathBuf> {
        check_key(key)?;
        Ok(self.root.join(key))
    }

    fn io(key: &str) -> impl FnOnce(std::io::Error) -> StorageError + '_ {
        move |source| StorageError::Io {
            key: key.to_string(),
            source,
        }
    }

    /// A unique temporary path on the same filesystem, for write-then-rename.
    fn temp_path(&self) -> PathBuf {
        self.root.join("tmp").join(cdeploy_core::ids::random_id(20))
    }

    async fn install(&self, key: &str, tmp: &Path, dest: &Path) -> Result<()> {
        if let Some(parent) = dest.parent() {
            tokio::fs::create_dir_all(parent)
                .await
                .map_err(Self::io(key))?;
        }
        if let Err(e) = tokio::fs::rename(tmp, dest).await {
            let _ = tokio::fs::remove_file(tmp).await;
            return Err(Self::io(key)(e));
        }
        Ok(())
    }
}

#[async_trait]
impl Storage for LocalStorage {
    async fn get(&self, key: &str) -> Result<Option<Bytes>> {
        let path = self.path(key)?;
        match tokio::fs::read(&path).await {
            Ok(data) => Ok(Some(Bytes::from(data))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Self::io(key)(e)),
        }
    }

    /// Blobs only: their bytes never change once written (a route pointer does).
    fn local_file(&self, key: &str) -> Option<PathBuf> {
        blob_hash_of(key)?;
        self.path(key).ok()
    }

    async fn get_stream(&self, key: &str, range: Option<ByteRange>) -> Result<Option<ByteStream>> {
        use tokio::io::{AsyncReadExt, AsyncSeekExt};
        let path = self.path(key)?;
        let mut file = match tokio::fs::File::open(&path).await {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Self::io(key)(e)),
        };
        let reader = match range {
            Some((start, end)) => {
                file.seek(std::io::SeekFrom::Start(start))
                    .await
                    .map_err(Self::io(key))?;
                file.take(end.saturating_sub(start) + 1)
            }
            None => file.take(u64::MAX),
        };
        Ok(Some(Box::pin(tokio_util::io::ReaderStream::with_capacity(
            reader,
            64 * 1024,
        ))))
    }

    async fn list(&self, prefix: &str) -> Result<Vec<Listed>> {
        let root = self.root.clone();
        let prefix = prefix.to_string();
        tokio::task::spawn_blocking(move || list_dir(&root, &prefix))
            .await
            .map_err(|e| StorageError::Backend(format!("listing task failed: {e}")))?
    }

    /// A content-addressed blob is written only if its bytes have its hash.
    async fn put(&self, key: &str, data: Bytes) -> Result<()> {
        let dest = self.path(key)?;
        check_blob(key, &data)?;
        let tmp = self.temp_path();
        let key = key.to_string();
        // One blocking task for the write and the rename.
        tokio::task::spawn_blocking(move || write_new(&key, &tmp, &dest, &data))
            .await
            .map_err(|e| StorageError::Backend(format!("write task failed: {e}")))?
    }

    /// A few blocking tasks for all of them: one task per file system call costs more
    /// than the call when a deployment writes thousands of small files.
    async fn put_many(&self, items: Vec<(String, Bytes)>) -> Result<()> {
        let mut jobs = Vec::new();
        for (key, data) in items {
            let dest = self.path(&key)?;
            check_blob(&key, &data)?;
            jobs.push((key, self.temp_path(), dest, data));
        }
        let per_task = jobs.len().div_ceil(4).max(64);
        let mut tasks = Vec::new();
        while !jobs.is_empty() {
            let rest = jobs.split_off(jobs.len().min(per_task));
            let chunk = std::mem::replace(&mut jobs, rest);
            tasks.push(tokio::task::spawn_blocking(move || {
                chunk
                    .iter()
                    .try_for_each(|(key, tmp, dest, data)| write_new(key, tmp, dest, data))
            }));
        }
        for t in tasks {
            t.await
                .map_err(|e| StorageError::Backend(format!("write task failed: {e}")))??;
        }
        Ok(())
    }

    async fn sizes(&self, keys: &[String]) -> Result<Vec<Option<u64>>> {
        let paths = keys
            .iter()
            .map(|k| self.path(k))
            .collect::<Result<Vec<_>>>()?;
        let mut tasks = Vec::new();
        for chunk in paths.chunks(2_000) {
            let chunk = chunk.to_vec();
            tasks.push(tokio::task::spawn_blocking(move || {
                chunk
                    .iter()
                    .map(|p| match std::fs::metadata(p) {
                        Ok(m) => Ok(Some(m.len())),
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                        Err(e) => Err(StorageError::Io {
                            key: p.display().to_string(),
                            source: e,
                        }),
                    })
                    .collect::<Result<Vec<_>>>()
            }));
        }
        let mut out = Vec::with_capacity(keys.len());
        for t in tasks {
            out.extend(
                t.await
                    .map_err(|e| StorageError::Backend(format!("stat task failed: {e}")))??,
            );
        }
        Ok(out)
    }

    /// The file is hashed as it is copied, and the copy (which nobody else can change)
    /// is what gets checked and renamed into place: a source file changed between an
    /// earlier hash and this copy cannot put wrong bytes under a blob's name.
    async fn put_file(&self, key: &str, path: &Path) -> Result<()> {
        let dest = self.path(key)?;
        let tmp = self.temp_path();
        let expected = blob_hash_of(key).map(str::to_string);
        let (src, copy) = (path.to_path_buf(), tmp.clone());
        let actual = tokio::task::spawn_blocking(move || copy_hashing(&src, &copy))
            .await
            .map_err(|e| StorageError::Backend(format!("copy task failed: {e}")))?
            .map_err(Self::io(key));
        let actual = match actual {
            Ok(a) => a,
            Err(e) => {
                let _ = tokio::fs::remove_file(&tmp).await;
                return Err(e);
            }
        };
        if let Some(expected) = expected {
            if actual != expected {
                let _ = tokio::fs::remove_file(&tmp).await;
                return Err(StorageError::HashMismatch {
                    key: key.to_string(),
                    actual,
                });
            }
        }
        self.install(key, &tmp, &dest).await
    }

    async fn exists(&self, key: &str) -> Result<bool> {
        let path = self.path(key)?;
        tokio::fs::try_exists(&path).await.map_err(Self::io(key))
    }

    async fn size(&self, key: &str) -> Result<Option<u64>> {
        let path = self.path(key)?;
        match tokio::fs::metadata(&path).await {
            Ok(m) => Ok(Some(m.len())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Self::io(key)(e)),
        }
    }

    async fn delete(&self, key: &str) -> Result<()> {
        let path = self.path(key)?;
        match tokio::fs::remove_file(&path).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Self::io(key)(e)),
        }
    }

    fn describe(&self) -> String {
        format!("local:{}", self.root.display())
    }

    async fn check(&self) -> Result<()> {
        match tokio::fs::metadata(self.root.join("tmp")).await {
            Ok(m) if m.is_dir() => Ok(()),
            Ok(_) => Err(StorageError::Backend(format!(
                "{} is not a storage folder",
                self.root.display()
            ))),
            Err(e) => Err(Self::io("tmp")(e)),
        }
    }
}

/// Writes `data` to `tmp` and renames it to `dest`, creating `dest`'s folder when it is
/// missing (only then: most writes go to folders that exist).
fn write_new(key: &str, tmp: &Path, dest: &Path, data: &[u8]) -> Result<()> {
    let io = |source| StorageError::Io {
        key: key.to_string(),
        source,
    };
    if let Err(e) = std::fs::write(tmp, data) {
        let _ = std::fs::remove_file(tmp);
        return Err(io(e));
    }
    let renamed = match std::fs::rename(tmp, dest) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            match dest.parent().map(std::fs::create_dir_all) {
                Some(Err(e)) => Err(e),
                _ => std::fs::rename(tmp, dest),
            }
        }
        other => other,
    };
    if let Err(e) = renamed {
        let _ = std::fs::remove_file(tmp);
        return Err(io(e));
    }
    Ok(())
}

/// Files under `root` whose key starts with `prefix` (the temporary folder excluded).
fn list_dir(root: &Path, prefix: &str) -> Result<Vec<Listed>> {
    let io = |e: std::io::Error| StorageError::Io {
        key: prefix.to_string(),
        source: e,
    };
    // Walk only the directory the prefix is in.
    let dir_part = match prefix.rfind('/') {
        Some(i) => &prefix[..i],
        None => "",
    };
    let mut out = Vec::new();
    let mut stack = vec![root.join(dir_part)];
    while let Some(dir) = stack.pop() {
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(io(e)),
        };
        for entry in entries {
            let entry = entry.map_err(io)?;
            let meta = entry.metadata().map_err(io)?;
            let path = entry.path();
            let Ok(rel) = path.strip_prefix(root) else {
                continue;
            };
            let Some(key) = rel.to_str().map(str::to_string) else {
                continue;
            };
            if key == "tmp" {
                continue;
            }
            if meta.is_dir() {
                if prefix.starts_with(&format!("{key}/")) || key.starts_with(prefix) {
                    stack.push(path);
                }
            } else if meta.is_file() && key.starts_with(prefix) {
                let modified = meta
                    .modified()
                    .ok()
                    .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                    .map_or(0, |d| d.as_secs() as i64);
                out.push(Listed {
                    key,
                    size: meta.len(),
                    modified,
                });
            }
        }
    }
    out.sort_by(|a, b| a.key.cmp(&b.key));
    Ok(out)
}

/// Copies `src` to a new file `dest`, returning the hex SHA-256 of what was written.
fn copy_hashing(src: &Path, dest: &Path) -> std::io::Result<String> {
    use sha2::Digest;
    use std::io::{Read, Write};
    let mut input = std::fs::File::open(src)?;
    let mut out = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(dest)?;
    let mut h = sha2::Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = input.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        out.write_all(&buf[..n])?;
    }
    out.sync_data()?;
    Ok(hex::encode(h.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn blobs_always_have_their_hash() {
        let dir = tempfile::tempdir().unwrap();
        let s = LocalStorage::open(dir.path().join("s")).unwrap();
        let good = b"the real bytes".to_vec();
        let hash = cdeploy_core::sha256_hex(&good);
        let key = format!("blobs/{hash}");
        // Wrong bytes under the hash, from memory or from a file: refused, nothing stored.
        let err = s.put(&key, Bytes::from_static(b"evil")).await.unwrap_err();
        assert!(matches!(err, StorageError::HashMismatch { .. }), "{err}");
        let evil = dir.path().join("evil");
        std::fs::write(&evil, b"evil").unwrap();
        let err = s.put_file(&key, &evil).await.unwrap_err();
        assert!(matches!(err, StorageError::HashMismatch { .. }), "{err}");
        assert_eq!(s.get(&key).await.unwrap(), None);
        assert_eq!(
            std::fs::read_dir(dir.path().join("s/tmp")).unwrap().count(),
            0
        );

        // A hostile uploader racing an honest one for the same blob: only the right
        // bytes can ever be there.
        let good_file = dir.path().join("good");
        std::fs::write(&good_file, &good).unwrap();
        let mut tasks = Vec::new();
        for i in 0..40 {
            let (s, key) = (s.clone(), key.clone());
            let (good_file, evil) = (good_file.clone(), evil.clone());
            tasks.push(tokio::spawn(async move {
                if i % 2 == 0 {
                    s.put_file(&key, &good_file).await.is_ok()
                } else {
                    s.put_file(&key, &evil).await.is_err()
                }
            }));
        }
        for t in tasks {
            assert!(t.await.unwrap());
        }
        assert_eq!(s.get(&key).await.unwrap().unwrap(), Bytes::from(good));
        // Variants and other keys are not content-addressed by their name.
        s.put(&format!("{key}.br"), Bytes::from_static(b"x"))
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn roundtrip_and_key_rules() {
        let dir = tempfile::tempdir().unwrap();
        let s = LocalStorage::open(dir.path()).unwrap();
        assert_eq!(s.get("blobs/abc").await.unwrap(), None);
        // (`abc` is not a SHA-256, so no content check applies to this key.)
        s.put("blobs/abc", Bytes::from_static(b"hi")).await.unwrap();
        assert_eq!(
            s.get("blobs/abc").await.unwrap().unwrap(),
            Bytes::from_static(b"hi")
        );
        assert!(s.exists("blobs/abc").await.unwrap());
        assert_eq!(s.size("blobs/abc").await.unwrap(), Some(2));
        assert_eq!(s.size("blobs/nope").await.unwrap(), None);
        let read = |range| {
            let s = s.clone();
            async move {
                use futures_util::TryStreamExt;
                let stream = s.get_stream("blobs/abc", range).await.unwrap().unwrap();
                let chunks: Vec<Bytes> = stream.try_collect().await.unwrap();
                chunks.concat()
            }
        };
        assert_eq!(read(None).await, b"hi");
        assert_eq!(read(Some((1, 1))).await, b"i");
        assert!(s.get_stream("blobs/nope", None).await.unwrap().is_none());
        s.put("deployments/x/log.jsonl", Bytes::from_static(b"{}"))
            .await
            .unwrap();
        let listed = s.list("blobs/").await.unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!((listed[0].key.as_str(), listed[0].size), ("blobs/abc", 2));
        assert_eq!(s.list("deployments/").await.unwrap().len(), 1);
        assert_eq!(s.list("").await.unwrap().len(), 2);
        s.delete("blobs/abc").await.unwrap();
        s.delete("blobs/abc").await.unwrap();
        for bad in [
            "../x",
            "/etc/passwd",
            "a//b",
            "a/./b",
            "a b",
            "routes/x\0.json",
            "",
        ] {
            assert!(
                matches!(s.get(bad).await, Err(StorageError::InvalidKey(_))),
                "{bad:?}"
            );
        }
    }
}
