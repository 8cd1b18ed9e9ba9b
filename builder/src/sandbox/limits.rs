//! A build's resource limits, how hitting one is reported, and the disk usage the
//! runner watches.

use std::path::PathBuf;

/// Resource limits of one build.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub memory_bytes: u64,
    /// Processes and threads at once.
    pub pids: u64,
    /// Bytes the build may occupy on disk: checkout, HOME, /tmp and its cache together.
    pub disk_bytes: u64,
}

impl Default for Limits {
    /// Room for a Next.js build with its `node_modules`.
    fn default() -> Self {
        Limits {
            memory_bytes: 4096 << 20,
            pids: 1024,
            disk_bytes: 10240 << 20,
        }
    }
}

/// Which limit a build hit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LimitHit {
    Memory(u64),
    Processes(u64),
    Disk(u64),
}

impl std::fmt::Display for LimitHit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LimitHit::Memory(b) => write!(
                f,
                "the build ran out of memory: it reached its memory limit of {} MiB and the kernel killed a build process (server setting build_memory_mb)",
                b >> 20
            ),
            LimitHit::Processes(n) => write!(
                f,
                "the build reached its process limit of {n} processes and threads at once (server setting build_pids)"
            ),
            LimitHit::Disk(b) => write!(
                f,
                "the build reached its disk limit of {} MiB (checkout, HOME, /tmp and cache together; server setting build_disk_mb)",
                b >> 20
            ),
        }
    }
}

/// Blocks used under `dirs`, symlinks not followed.
pub fn disk_usage(dirs: &[PathBuf]) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let mut total = 0u64;
    let mut stack: Vec<PathBuf> = dirs.to_vec();
    while let Some(p) = stack.pop() {
        let Ok(meta) = std::fs::symlink_metadata(&p) else {
            continue;
        };
        total += meta.blocks() * 512;
        if meta.is_dir() {
            if let Ok(rd) = std::fs::read_dir(&p) {
                stack.extend(rd.flatten().map(|e| e.path()));
            }
        }
    }
    total
}
