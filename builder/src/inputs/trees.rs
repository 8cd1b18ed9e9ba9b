//! The hashes of a source's folders and files: the commit's git tree and blob ids for a
//! clone (no history needed: a depth-1 clone has every tree of its commit), or the
//! content hashes of an uploaded source's map.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use cdeploy_core::manifest::SourceMap;
use sha2::Digest;

/// Where hashes come from.
pub(super) enum Trees {
    /// A clone made by the build's `git clone`, before anything else ran in it.
    Git { checkout: PathBuf },
    /// An uploaded source: repository path → content hash.
    Uploaded { map: SourceMap },
}

/// A file directly in a folder, and a hash of its content and kind.
pub(super) struct File {
    pub path: String,
    pub hash: String,
    /// A symlink (its hash is of its target's path): what it points at must be
    /// compared too.
    pub link: bool,
}

impl Trees {
    /// The hash of folder `rel` (`""`: the repository) and everything in it.
    pub(super) async fn folder(&self, rel: &str) -> Result<String, String> {
        match self {
            Trees::Git { checkout } => {
                let object = if rel.is_empty() {
                    "HEAD^{tree}".to_string()
                } else {
                    format!("HEAD:{rel}")
                };
                let out = git(checkout, &["rev-parse", "--verify", "-q", &object]).await?;
                Ok(out.trim().to_string())
            }
            Trees::Uploaded { map } => {
                let mut h = sha2::Sha256::new();
                for (path, hash) in map {
                    let path = path.trim_start_matches('/');
                    if let Some(inner) = under(path, rel) {
                        h.update(format!("{inner}\0{hash}\n"));
                    }
                }
                Ok(hex::encode(h.finalize()))
            }
        }
    }

    /// The files directly in folder `rel` (not in its subfolders).
    pub(super) async fn files_of(&self, rel: &str) -> Result<Vec<File>, String> {
        match self {
            Trees::Git { checkout } => {
                let tree = if rel.is_empty() {
                    "HEAD".to_string()
                } else {
                    format!("HEAD:{rel}")
                };
                let out = git(checkout, &["ls-tree", "-z", &tree]).await?;
                let mut files = Vec::new();
                for entry in tree_entries(&out)? {
                    if entry.kind == "commit" {
                        return Err("the repository has submodules".into());
                    }
                    if entry.kind == "blob" {
                        files.push(File {
                            path: join(rel, &entry.name),
                            hash: format!("{} {}", entry.mode, entry.id),
                            link: entry.mode == "120000",
                        });
                    }
                }
                Ok(files)
            }
            Trees::Uploaded { map } => Ok(map
                .iter()
                .filter_map(|(path, hash)| {
                    let path = path.trim_start_matches('/');
                    let name = under(path, rel)?;
                    (!name.contains('/')).then(|| File {
                        path: path.to_string(),
                        hash: hash.clone(),
                        link: false,
                    })
                })
                .collect()),
        }
    }

    /// Everything in folders `rels` that is not a plain file or folder: a symlink (its
    /// path) or a submodule makes `Err`. A symlink's target may be anywhere, so its
    /// folder's hash does not cover what it reads; one that stays in `rels` is fine.
    pub(super) async fn check_links(&self, checkout: &Path, rels: &[String]) -> Result<(), String> {
        let Trees::Git { .. } = self else {
            return Ok(()); // uploads hold file contents only
        };
        let mut args = vec!["ls-tree", "-r", "-z", "HEAD", "--"];
        let all = rels.iter().any(|r| r.is_empty());
        if !all {
            args.extend(rels.iter().map(String::as_str));
        }
        let out = git(checkout, &args).await?;
        let root = checkout.canonicalize().map_err(|e| e.to_string())?;
        for entry in tree_entries(&out)? {
            if entry.kind == "commit" {
                return Err("the repository has submodules".into());
            }
            if entry.mode != "120000" {
                continue;
            }
            let link = root.join(&entry.name);
            let target = std::fs::canonicalize(&link).ok();
            let stays = target.as_ref().is_some_and(|t| {
                rels.iter().any(|r| {
                    let base = if r.is_empty() {
                        root.clone()
                    } else {
                        root.join(r)
                    };
                    t.starts_with(&base)
                })
            });
            if !stays {
                return Err(format!(
                    "{} is a symlink to a place whose changes are not compared",
                    entry.name
                ));
            }
        }
        Ok(())
    }

    /// The commit a clone checked out.
    pub(super) async fn commit(&self) -> Option<String> {
        match self {
            Trees::Git { checkout } => git(checkout, &["rev-parse", "--verify", "-q", "HEAD"])
                .await
                .ok()
                .map(|s| s.trim().to_string())
                .filter(|s| cdeploy_core::git::is_commit_id(s)),
            Trees::Uploaded { .. } => None,
        }
    }
}

/// `path` relative to folder `rel` when it is inside it.
fn under<'p>(path: &'p str, rel: &str) -> Option<&'p str> {
    if rel.is_empty() {
        return Some(path);
    }
    path.strip_prefix(rel)?.strip_prefix('/')
}

fn join(rel: &str, name: &str) -> String {
    if rel.is_empty() {
        name.to_string()
    } else {
        format!("{rel}/{name}")
    }
}

struct Entry {
    mode: String,
    kind: String,
    id: String,
    name: String,
}

/// `git ls-tree -z` output: `<mode> <type> <id>\t<name>\0` entries.
fn tree_entries(out: &str) -> Result<Vec<Entry>, String> {
    out.split('\0')
        .filter(|e| !e.is_empty())
        .map(|e| {
            let (meta, name) = e.split_once('\t').ok_or("unexpected git ls-tree output")?;
            let mut parts = meta.split(' ');
            match (parts.next(), parts.next(), parts.next()) {
                (Some(mode), Some(kind), Some(id)) => Ok(Entry {
                    mode: mode.into(),
                    kind: kind.into(),
                    id: id.into(),
                    name: name.into(),
                }),
                _ => Err("unexpected git ls-tree output".to_string()),
            }
        })
        .collect()
}

/// Runs git on the clone, on the host: it only reads objects (no hooks, filters or
/// fsmonitor are involved in `rev-parse` and `ls-tree`), with no user or system config,
/// before anything of the build ran (the clone's config is git's own). The checkout
/// belongs to the build's user, hence `safe.directory`.
async fn git(checkout: &Path, args: &[&str]) -> Result<String, String> {
    let out = tokio::process::Command::new("git")
        .args(["-c", "safe.directory=*", "-c", "core.fsmonitor=false", "-C"])
        .arg(checkout)
        .args(args)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_TERMINAL_PROMPT", "0")
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|e| format!("cannot run git: {e}"))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        return Err(format!("git {}: {}", args[0], err.trim()));
    }
    String::from_utf8(out.stdout).map_err(|_| "git printed a path that is not UTF-8".into())
}
