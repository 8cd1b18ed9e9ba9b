//! A `node_modules` tree as a zstd-compressed tar, and back: links stored as links
//! (never followed), and on the way back nothing written outside `node_modules` or
//! through a link the archive made.

use std::collections::HashSet;
use std::io::Read;
use std::os::unix::fs::{lchown, OpenOptionsExt};
use std::path::{Component, Path, PathBuf};

/// zstd's level: 3 (its default) packs as small as gzip -6 at several times the speed.
const LEVEL: i32 = 3;

/// Why nothing was packed.
#[derive(Debug, thiserror::Error)]
pub enum PackError {
    #[error("the install left no node_modules folder")]
    NoModules,
    #[error("cannot pack node_modules: {0}")]
    Io(#[from] std::io::Error),
    #[error("node_modules packs to {} MiB, over the cache's {} MiB", .size >> 20, .max >> 20)]
    TooLarge { size: usize, max: u64 },
}

/// Packs `install_dir/node_modules`, refused past `max` bytes packed.
pub(super) fn pack(install_dir: &Path, max: u64) -> Result<Vec<u8>, PackError> {
    let modules = install_dir.join("node_modules");
    // Only a real folder: a build could leave a symlink to anything in its place.
    if !std::fs::symlink_metadata(&modules).is_ok_and(|m| m.is_dir()) {
        return Err(PackError::NoModules);
    }
    let mut zst = zstd::Encoder::new(Vec::new(), LEVEL)?;
    // Compression on worker threads while this one reads the tree.
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get() as u32);
    zst.multithread(workers)?;
    let mut tar = tar::Builder::new(zst);
    // Links are stored as links (never followed): .bin entries and pnpm's layout.
    tar.follow_symlinks(false);
    tar.append_dir_all("node_modules", &modules)?;
    let bytes = tar.into_inner().and_then(|zst| zst.finish())?;
    if bytes.len() as u64 > max {
        return Err(PackError::TooLarge {
            size: bytes.len(),
            max,
        });
    }
    Ok(bytes)
}

/// Unpacks an entry into `install_dir`, everything owned by `owner` when given. Only
/// plain relative paths under `node_modules/`; nothing is written through a link the
/// archive made (the target is new and empty, so those are the only links there), and
/// links may not point out of `node_modules` by absolute path. Checked in memory
/// rather than with tar's per-entry `canonicalize`, which made a 15,000-file restore
/// five times slower; files are written here rather than by tar's `unpack`, which
/// took twice as long, and handed to the owner as they are made (no second walk).
pub(super) fn unpack(data: &[u8], install_dir: &Path, owner: Option<u32>) -> std::io::Result<()> {
    let target = install_dir.join("node_modules");
    if std::fs::symlink_metadata(&target).is_ok() {
        return Err(std::io::Error::other("node_modules exists already"));
    }
    let mut tar = tar::Archive::new(zstd::Decoder::with_buffer(data)?);
    let mut unpacking = Unpacking {
        install_dir,
        owner,
        links: HashSet::new(),
        made: HashSet::new(),
    };
    for entry in tar.entries()? {
        unpacking.entry(&mut entry?)?;
    }
    Ok(())
}

/// One unpacking under way: the links the archive made, the folders made so far.
struct Unpacking<'a> {
    install_dir: &'a Path,
    owner: Option<u32>,
    links: HashSet<PathBuf>,
    made: HashSet<PathBuf>,
}

fn bad(what: &str, p: &Path) -> std::io::Error {
    std::io::Error::other(format!("{what}: {}", p.display()))
}

impl Unpacking<'_> {
    fn entry(&mut self, entry: &mut tar::Entry<impl Read>) -> std::io::Result<()> {
        let path = entry.path()?.into_owned();
        if !path.starts_with("node_modules")
            || path
                .components()
                .any(|c| !matches!(c, Component::Normal(_)))
        {
            return Err(bad("an entry outside node_modules", &path));
        }
        if path.ancestors().skip(1).any(|a| self.links.contains(a)) {
            return Err(bad("an entry through a link", &path));
        }
        let kind = entry.header().entry_type();
        let mut link_to = None;
        if kind.is_symlink() || kind.is_hard_link() {
            let to = entry
                .link_name()?
                .ok_or_else(|| bad("a link without a target", &path))?;
            if to.is_absolute() || kind.is_hard_link() {
                return Err(bad("a link out of node_modules", &path));
            }
            link_to = Some(to.into_owned());
            self.links.insert(path.clone());
        } else if !(kind.is_file() || kind.is_dir()) {
            return Ok(());
        }
        let out = self.install_dir.join(&path);
        if kind.is_dir() {
            return self.mkdirs(&out);
        }
        if let Some(parent) = out.parent() {
            self.mkdirs(parent)?;
        }
        match link_to {
            Some(to) => {
                std::os::unix::fs::symlink(to, &out)?;
                self.chown(&out)
            }
            None => self.write_file(entry, &out),
        }
    }

    /// Writes a regular file, executable where the archive says so, owned by the owner.
    fn write_file(&self, entry: &mut tar::Entry<impl Read>, out: &Path) -> std::io::Result<()> {
        let exec = entry
            .header()
            .mode()
            .map(|m| m & 0o111 != 0)
            .unwrap_or(false);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(if exec { 0o755 } else { 0o644 })
            .open(out)?;
        if let Some(uid) = self.owner {
            std::os::unix::fs::fchown(&f, Some(uid), Some(uid))?;
        }
        std::io::copy(entry, &mut f)?;
        Ok(())
    }

    fn chown(&self, p: &Path) -> std::io::Result<()> {
        match self.owner {
            Some(uid) => lchown(p, Some(uid), Some(uid)),
            None => Ok(()),
        }
    }

    /// Creates `dir` and whatever of its ancestors under `install_dir` is missing.
    fn mkdirs(&mut self, dir: &Path) -> std::io::Result<()> {
        if self.made.contains(dir) {
            return Ok(());
        }
        let mut missing: Vec<&Path> = dir
            .ancestors()
            .take_while(|a| *a != self.install_dir && !self.made.contains(*a))
            .collect();
        missing.reverse();
        for d in missing {
            match std::fs::create_dir(d) {
                Ok(()) => self.chown(d)?,
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(e),
            }
            self.made.insert(d.to_path_buf());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::stored::MAX_ENTRY;
    use super::*;

    fn pack(install_dir: &Path) -> Result<Vec<u8>, PackError> {
        super::pack(install_dir, MAX_ENTRY)
    }

    #[test]
    fn packs_and_unpacks_with_links() {
        let a = tempfile::tempdir().unwrap();
        let m = a.path().join("node_modules");
        std::fs::create_dir_all(m.join("vite/bin")).unwrap();
        std::fs::create_dir_all(m.join(".bin")).unwrap();
        std::fs::write(m.join("vite/bin/vite.js"), "x").unwrap();
        std::os::unix::fs::symlink("../vite/bin/vite.js", m.join(".bin/vite")).unwrap();
        let packed = pack(a.path()).unwrap();
        let b = tempfile::tempdir().unwrap();
        unpack(&packed, b.path(), None).unwrap();
        let link = std::fs::read_link(b.path().join("node_modules/.bin/vite")).unwrap();
        assert_eq!(link, Path::new("../vite/bin/vite.js"));
        assert_eq!(
            std::fs::read_to_string(b.path().join("node_modules/.bin/vite")).unwrap(),
            "x"
        );
        // Never over an existing folder.
        assert!(unpack(&packed, b.path(), None).is_err());
    }

    /// A restore hands every entry to the build's uid as it makes it (as root, which
    /// builders with a sandbox are).
    #[test]
    fn unpacks_owned_by_the_build_user() {
        if !rustix::process::geteuid().is_root() {
            eprintln!("skipped: needs root to give files away");
            return;
        }
        use std::os::unix::fs::MetadataExt;
        let a = tempfile::tempdir().unwrap();
        let m = a.path().join("node_modules");
        std::fs::create_dir_all(m.join("pkg/lib")).unwrap();
        std::fs::write(m.join("pkg/lib/index.js"), "x").unwrap();
        std::os::unix::fs::symlink("pkg/lib", m.join("link")).unwrap();
        let b = tempfile::tempdir().unwrap();
        unpack(&pack(a.path()).unwrap(), b.path(), Some(54321)).unwrap();
        for p in ["", "pkg", "pkg/lib", "pkg/lib/index.js", "link"] {
            let meta = std::fs::symlink_metadata(b.path().join("node_modules").join(p)).unwrap();
            assert_eq!((meta.uid(), meta.gid()), (54321, 54321), "{p}");
        }
        assert_eq!(std::fs::symlink_metadata(b.path()).unwrap().uid(), 0);
    }

    /// An entry may not be written through a link the archive made, and a link may
    /// not name an absolute path.
    #[test]
    fn refuses_writing_through_a_link() {
        let outside = tempfile::tempdir().unwrap();
        let archive = |link_to: &Path, file: Option<&str>| {
            let zst = zstd::Encoder::new(Vec::new(), 1).unwrap();
            let mut tar = tar::Builder::new(zst);
            let mut link = tar::Header::new_gnu();
            link.set_entry_type(tar::EntryType::Symlink);
            link.set_size(0);
            tar.append_link(&mut link, "node_modules/up", link_to)
                .unwrap();
            if let Some(f) = file {
                let mut h = tar::Header::new_gnu();
                h.set_size(1);
                h.set_mode(0o644);
                tar.append_data(&mut h, f, &b"x"[..]).unwrap();
            }
            tar.into_inner().unwrap().finish().unwrap()
        };
        let d = tempfile::tempdir().unwrap();
        let e = unpack(
            &archive(Path::new("../.."), Some("node_modules/up/x")),
            d.path(),
            None,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("an entry through a link"), "{e}");
        let d = tempfile::tempdir().unwrap();
        let e = unpack(&archive(outside.path(), None), d.path(), None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("a link out of node_modules"), "{e}");
        assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 0);
    }
}
