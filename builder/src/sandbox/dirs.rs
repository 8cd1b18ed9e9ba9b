//! A build's writable directories: where they are on the host ([`Mounts`]) and where
//! its commands see them ([`View`]); created with the synthetic `/etc/passwd` and
//! `/etc/group` a build's tools look their user up in, and handed to the uid builds run
//! as.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use super::{Isolation, Sandbox};

/// Where a build's writable directories are on the host.
#[derive(Debug, Clone)]
pub struct Mounts {
    pub checkout: PathBuf,
    pub home: PathBuf,
    pub tmp: PathBuf,
    /// The project's own cache (package-manager caches).
    pub cache: Option<PathBuf>,
    /// Holds the synthetic `passwd` and `group` files (not writable by the build).
    pub etc: PathBuf,
}

/// The same directories as build commands see them.
#[derive(Debug, Clone)]
pub struct View {
    pub checkout: PathBuf,
    pub home: PathBuf,
    pub tmp: PathBuf,
    pub cache: Option<PathBuf>,
}

/// Paths inside the sandbox.
pub(super) const INSIDE_CHECKOUT: &str = "/work";
pub(super) const INSIDE_HOME: &str = "/home/build";
pub(super) const INSIDE_TMP: &str = "/tmp";
pub(super) const INSIDE_CACHE: &str = "/cache";
/// The build's uid and gid inside its user namespace: an ordinary user, not root.
pub(super) const INSIDE_UID: u32 = 1000;

impl Sandbox {
    /// The `PATH` build commands get: in a sandbox, only the entries that exist in its
    /// view (the system under `/usr`), so nothing of the server's own setup shows.
    pub fn build_path(&self, server_path: &str) -> String {
        if !self.is_isolated() {
            return server_path.to_string();
        }
        let kept: Vec<&str> = server_path
            .split(':')
            .filter(|p| p.starts_with("/usr/") || matches!(*p, "/bin" | "/sbin"))
            .collect();
        if kept.is_empty() {
            "/usr/local/bin:/usr/bin:/bin".to_string()
        } else {
            kept.join(":")
        }
    }

    /// How build commands see `mounts`.
    pub fn view(&self, mounts: &Mounts) -> View {
        match self.isolation {
            Isolation::Namespaces(_) => View {
                checkout: INSIDE_CHECKOUT.into(),
                home: INSIDE_HOME.into(),
                tmp: INSIDE_TMP.into(),
                cache: mounts.cache.as_ref().map(|_| INSIDE_CACHE.into()),
            },
            Isolation::None => View {
                checkout: mounts.checkout.clone(),
                home: mounts.home.clone(),
                tmp: mounts.tmp.clone(),
                cache: mounts.cache.clone(),
            },
        }
    }

    /// Creates the build's directories, owned by the uid builds run as, and the
    /// synthetic `/etc/passwd` (a build's tools look their user up).
    pub fn prepare(&self, mounts: &Mounts) -> std::io::Result<()> {
        for d in [&mounts.checkout, &mounts.home, &mounts.tmp, &mounts.etc] {
            std::fs::create_dir_all(d)?;
        }
        if let Some(c) = &mounts.cache {
            std::fs::create_dir_all(c)?;
            // The project's folder of scopes (`projects/<slug>/`): the build uid passes
            // through to its own scope's, and can list none of them.
            if let Some(parent) = c.parent() {
                std::fs::set_permissions(parent, std::fs::Permissions::from_mode(0o711))?;
            }
        }
        self.write_etc(&mounts.etc)?;
        for d in [&mounts.checkout, &mounts.home, &mounts.tmp] {
            self.hand_over(d)?;
        }
        // A project cache is handed over once, when it is new: what is inside was
        // written by builds, as the build uid (no need to walk it on every build).
        if let (Some(c), Some(uid)) = (&mounts.cache, self.user) {
            if std::os::unix::fs::MetadataExt::uid(&std::fs::symlink_metadata(c)?) != uid {
                self.hand_over(c)?;
            }
        }
        Ok(())
    }

    /// The build's own `/etc` files: `passwd`, `group`, and `resolv.conf` when the
    /// sandbox forwards DNS.
    fn write_etc(&self, etc: &Path) -> std::io::Result<()> {
        std::fs::write(
            etc.join("passwd"),
            format!("root:x:0:0:root:/root:/usr/sbin/nologin\nbuild:x:{INSIDE_UID}:{INSIDE_UID}:cdeploy build:{INSIDE_HOME}:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"),
        )?;
        std::fs::write(
            etc.join("group"),
            format!("root:x:0:\nbuild:x:{INSIDE_UID}:\nnogroup:x:65534:\n"),
        )?;
        let mut files = vec!["passwd", "group"];
        if let Isolation::Namespaces(tools) = &self.isolation {
            if let Some(conf) = &tools.net.resolv_conf {
                std::fs::write(etc.join("resolv.conf"), conf)?;
                files.push("resolv.conf");
            }
        }
        // Readable by the build uid (a root server's umask may be 077), writable by none.
        std::fs::set_permissions(etc, std::fs::Permissions::from_mode(0o755))?;
        for f in files {
            std::fs::set_permissions(etc.join(f), std::fs::Permissions::from_mode(0o644))?;
        }
        Ok(())
    }

    /// Gives a directory tree to the uid builds run as (a root server's files would be
    /// read-only to the build). Symlinks are changed, never followed.
    pub fn hand_over(&self, dir: &Path) -> std::io::Result<()> {
        let Some(uid) = self.user else {
            return Ok(());
        };
        let mut stack = vec![dir.to_path_buf()];
        while let Some(p) = stack.pop() {
            let meta = std::fs::symlink_metadata(&p)?;
            if std::os::unix::fs::MetadataExt::uid(&meta) != uid {
                std::os::unix::fs::lchown(&p, Some(uid), Some(uid))?;
            }
            if meta.is_dir() {
                for entry in std::fs::read_dir(&p)? {
                    stack.push(entry?.path());
                }
            }
        }
        Ok(())
    }
}
