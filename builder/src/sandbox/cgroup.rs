//! Per-build control groups: memory and process-count limits, knowing when a limit was
//! hit, and killing everything a build started. cgroup v2 (`/sys/fs/cgroup` unified) and
//! v1 (`/sys/fs/cgroup/{memory,pids}`) are both supported.
//!
//! Every server owns one *scope* (`cdeploy-<hash of its data dir>`) below its own
//! cgroup, so two servers on one machine never touch each other's builds, and a
//! restarted server finds what its crashed predecessor left behind.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Why a build's limits cannot be set (the start-up log says it), or a build's group
/// cannot be made.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("the cgroup v1 {controller} controller is not mounted at {}", mount.display())]
    NotMounted {
        controller: &'static str,
        mount: PathBuf,
    },
    #[error("this process has no cgroup v2 path")]
    NoV2Path,
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the {controller} controller is not delegated to {} (cgroup v2)", dir.display())]
    NotDelegated {
        controller: &'static str,
        dir: PathBuf,
    },
    #[error("cannot create the cgroup {}: {source}", dir.display())]
    Create {
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot move the server into {}: {source}", dir.display())]
    MoveServer {
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot enable memory and pids controllers in {}: {source}", dir.display())]
    Enable {
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot set {}: {source}", path.display())]
    Set {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Creates `dir` (and its parents).
fn create(dir: &Path) -> Result<(), CgroupError> {
    std::fs::create_dir_all(dir).map_err(|source| CgroupError::Create {
        dir: dir.to_path_buf(),
        source,
    })
}

/// Which hierarchy the machine uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Version {
    V1,
    V2,
}

/// The scope directories builds are created in (one per controller on v1).
#[derive(Debug, Clone)]
pub struct Root {
    version: Version,
    /// v2: one directory; v1: `[memory, pids]`.
    dirs: Vec<PathBuf>,
}

/// The cgroup(s) of one build.
#[derive(Debug)]
pub struct Group {
    version: Version,
    dirs: Vec<PathBuf>,
}

/// The cgroup path of this process for a v1 controller, or the v2 path (`controller`
/// empty), from `/proc/self/cgroup`.
fn own_path(controller: &str) -> Option<String> {
    let text = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    text.lines().find_map(|line| {
        let mut parts = line.splitn(3, ':');
        let (_, list, path) = (parts.next()?, parts.next()?, parts.next()?);
        let matches = if controller.is_empty() {
            list.is_empty()
        } else {
            list.split(',').any(|c| c == controller)
        };
        matches.then(|| path.to_string())
    })
}

fn write(path: &Path, value: &str) -> std::io::Result<()> {
    std::fs::OpenOptions::new()
        .write(true)
        .open(path)?
        .write_all(value.as_bytes())
}

impl Root {
    /// Creates (or reuses) this server's scope. An error says why limits cannot be set
    /// (not root and no delegated cgroup, controllers missing…).
    pub fn open(scope: &str) -> Result<Root, CgroupError> {
        if Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
            Self::open_v2(scope)
        } else {
            Self::open_v1(scope)
        }
    }

    fn open_v1(scope: &str) -> Result<Root, CgroupError> {
        let mut dirs = Vec::new();
        for controller in ["memory", "pids"] {
            let mount = Path::new("/sys/fs/cgroup").join(controller);
            if !mount.join("cgroup.procs").exists() {
                return Err(CgroupError::NotMounted { controller, mount });
            }
            let own = own_path(controller).unwrap_or_else(|| "/".into());
            let dir = mount.join(own.trim_start_matches('/')).join(scope);
            create(&dir)?;
            dirs.push(dir);
        }
        Ok(Root {
            version: Version::V1,
            dirs,
        })
    }

    fn open_v2(scope: &str) -> Result<Root, CgroupError> {
        let own = own_path("").ok_or(CgroupError::NoV2Path)?;
        let base = Path::new("/sys/fs/cgroup").join(own.trim_start_matches('/'));
        let controllers =
            std::fs::read_to_string(base.join("cgroup.controllers")).map_err(|source| {
                CgroupError::Read {
                    path: base.clone(),
                    source,
                }
            })?;
        for controller in ["memory", "pids"] {
            if !controllers.split_whitespace().any(|x| x == controller) {
                return Err(CgroupError::NotDelegated {
                    controller,
                    dir: base,
                });
            }
        }
        let try_enable = |dir: &Path| write(&dir.join("cgroup.subtree_control"), "+memory +pids");
        let enable = |dir: &Path| {
            try_enable(dir).map_err(|source| CgroupError::Enable {
                dir: dir.to_path_buf(),
                source,
            })
        };
        if try_enable(&base).is_err() {
            // "No internal processes": a cgroup that has processes cannot hand
            // controllers to children. Move this server into a leaf of its own first.
            let leaf = base.join(format!("{scope}-server"));
            create(&leaf)?;
            write(&leaf.join("cgroup.procs"), &std::process::id().to_string())
                .map_err(|source| CgroupError::MoveServer { dir: leaf, source })?;
            enable(&base)?;
        }
        let dir = base.join(scope);
        create(&dir)?;
        enable(&dir)?;
        Ok(Root {
            version: Version::V2,
            dirs: vec![dir],
        })
    }

    pub fn describe(&self) -> String {
        let v = match self.version {
            Version::V1 => "v1",
            Version::V2 => "v2",
        };
        format!("cgroup {v} at {}", self.dirs[0].display())
    }

    /// A fresh group for one build, with its limits set.
    pub fn group(&self, name: &str, memory_bytes: u64, pids: u64) -> Result<Group, CgroupError> {
        let dirs: Vec<PathBuf> = self.dirs.iter().map(|d| d.join(name)).collect();
        let group = Group {
            version: self.version,
            dirs,
        };
        // A leftover of the same name (a crash) goes first.
        group.destroy();
        for d in &group.dirs {
            std::fs::create_dir(d).map_err(|source| CgroupError::Create {
                dir: d.clone(),
                source,
            })?;
        }
        let set = |file: &str, value: String| {
            let path = group.file(file);
            write(&path, &value).map_err(|source| CgroupError::Set { path, source })
        };
        match self.version {
            Version::V1 => {
                set("memory.limit_in_bytes", memory_bytes.to_string())?;
                set("pids.max", pids.to_string())?;
            }
            Version::V2 => {
                set("memory.max", memory_bytes.to_string())?;
                // Swap would only make a memory hog slow instead of stopped.
                let _ = set("memory.swap.max", "0".into());
                set("pids.max", pids.to_string())?;
            }
        }
        Ok(group)
    }

    /// Kills every process left in this scope's build groups and removes them: what a
    /// crashed server left behind. Nothing a build can write is consulted.
    pub fn reap(&self) -> usize {
        let mut names = std::collections::BTreeSet::new();
        for d in &self.dirs {
            for entry in std::fs::read_dir(d).into_iter().flatten().flatten() {
                if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    names.insert(entry.file_name());
                }
            }
        }
        for name in &names {
            Group {
                version: self.version,
                dirs: self.dirs.iter().map(|d| d.join(name)).collect(),
            }
            .destroy();
        }
        names.len()
    }
}

impl Root {
    /// Removes the (empty) scope.
    pub fn release(&self) {
        self.reap();
        for d in &self.dirs {
            let _ = std::fs::remove_dir(d);
        }
    }
}

impl Group {
    /// The file of a controller (`memory.*` or `pids.*`).
    fn file(&self, name: &str) -> PathBuf {
        match self.version {
            Version::V2 => self.dirs[0].join(name),
            Version::V1 => {
                let dir = if name.starts_with("pids.") {
                    &self.dirs[1]
                } else {
                    &self.dirs[0]
                };
                dir.join(name)
            }
        }
    }

    /// The `cgroup.procs` files a new process must join (one per hierarchy).
    pub fn procs_files(&self) -> Vec<PathBuf> {
        self.dirs.iter().map(|d| d.join("cgroup.procs")).collect()
    }

    fn counter(&self, file: &str, key: &str) -> u64 {
        std::fs::read_to_string(self.file(file))
            .ok()
            .and_then(|text| {
                text.lines().find_map(|l| {
                    let (k, v) = l.split_once(' ')?;
                    (k == key).then(|| v.trim().parse().ok()).flatten()
                })
            })
            .unwrap_or(0)
    }

    /// How many times the kernel's OOM killer killed a process of this build.
    pub fn oom_kills(&self) -> u64 {
        match self.version {
            Version::V1 => self.counter("memory.oom_control", "oom_kill"),
            Version::V2 => self.counter("memory.events", "oom_kill"),
        }
    }

    /// How many times a fork was refused because the process limit was reached.
    pub fn pids_refused(&self) -> u64 {
        self.counter("pids.events", "max")
    }

    fn pids(&self) -> Vec<i32> {
        let mut pids = Vec::new();
        for d in &self.dirs {
            if let Ok(text) = std::fs::read_to_string(d.join("cgroup.procs")) {
                pids.extend(text.lines().filter_map(|l| l.trim().parse::<i32>().ok()));
            }
        }
        pids.sort_unstable();
        pids.dedup();
        pids
    }

    /// SIGKILLs every process of the build until none is left (bounded: a process
    /// forking as fast as it can is still caught by the pids limit).
    pub fn kill_all(&self) {
        if self.version == Version::V2 && write(&self.dirs[0].join("cgroup.kill"), "1").is_ok() {
            for _ in 0..200 {
                if self.pids().is_empty() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        for _ in 0..200 {
            let pids = self.pids();
            if pids.is_empty() {
                return;
            }
            for pid in pids {
                super::sys::kill(pid);
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Kills what is left and removes the group.
    pub fn destroy(&self) {
        if self.dirs.iter().all(|d| !d.exists()) {
            return;
        }
        self.kill_all();
        for d in &self.dirs {
            // An exiting process can hold the group for a moment.
            for _ in 0..100 {
                match std::fs::remove_dir(d) {
                    Ok(()) => break,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => break,
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        }
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        self.destroy();
    }
}
