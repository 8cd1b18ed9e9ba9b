//! The runtimes' settings, one group of flags for both binaries, what they resolve to,
//! and opening the runtimes with their own sandbox.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Where and how server apps' servers run on this host: one set of flags (and
/// `cdeploy-server.toml` keys) for `cdeploy-server`'s embedded proxy and `cdeploy-proxy`.
#[derive(clap::Args, Debug, Default, Clone, Serialize, Deserialize)]
pub struct RuntimeSettings {
    /// A server app's server is stopped after this many seconds without a request,
    /// and started again by the next one [default: 300].
    #[arg(long, env = "CDEPLOY_RUNTIME_IDLE_SECS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub runtime_idle_secs: Option<u64>,
    /// Servers running at once; past it the least recently used idle one is stopped
    /// [default: 16].
    #[arg(long, env = "CDEPLOY_RUNTIME_MAX")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub runtime_max: Option<usize>,
    /// Memory limit of one server, in MiB: past it the kernel kills it and it is
    /// restarted [default: 512].
    #[arg(long, env = "CDEPLOY_RUNTIME_MEMORY_MB")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub runtime_memory_mb: Option<u64>,
    /// Processes and threads one server may have at once [default: 256].
    #[arg(long, env = "CDEPLOY_RUNTIME_PIDS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub runtime_pids: Option<u64>,
    /// Disk one server may write (its HOME, /tmp and cache), in MiB [default: 1024].
    #[arg(long, env = "CDEPLOY_RUNTIME_DISK_MB")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub runtime_disk_mb: Option<u64>,
    /// Seconds a starting server has to answer its health path [default: 30].
    #[arg(long, env = "CDEPLOY_RUNTIME_START_SECS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub runtime_start_secs: Option<u64>,
    /// The unprivileged uid (and gid) servers run as when this process is root; it
    /// must own no file of the platform [default: 64001].
    #[arg(long, env = "CDEPLOY_RUNTIME_UID")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub runtime_uid: Option<u32>,
    /// Where servers' files and scratch folders live [default: <data-dir>/runtimes for
    /// cdeploy-server; cdeploy-proxy runs servers only when it is given].
    #[arg(long, env = "CDEPLOY_RUNTIME_DIR")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub runtime_dir: Option<PathBuf>,
}

/// The runtime settings, checked.
#[derive(Debug, Clone)]
pub struct Runtime {
    pub dir: PathBuf,
    pub idle: Duration,
    pub max_running: usize,
    pub limits: cdeploy_builder::sandbox::Limits,
    pub start_timeout: Duration,
    pub uid: u32,
}

impl RuntimeSettings {
    /// The settings checked, with `default_dir` when `--runtime-dir` is not given.
    pub fn resolve(&self, default_dir: &Path) -> Result<Runtime, String> {
        let positive = |flag: &str, v: Option<u64>, default: u64| match v {
            Some(0) => Err(format!("--{flag} must be greater than 0")),
            Some(n) => Ok(n),
            None => Ok(default),
        };
        let uid = self.runtime_uid.unwrap_or(64001);
        if uid == 0 {
            return Err("--runtime-uid must not be 0: servers never run as root".into());
        }
        Ok(Runtime {
            dir: self
                .runtime_dir
                .clone()
                .unwrap_or_else(|| default_dir.to_path_buf()),
            idle: Duration::from_secs(positive("runtime-idle-secs", self.runtime_idle_secs, 300)?),
            max_running: positive("runtime-max", self.runtime_max.map(|n| n as u64), 16)? as usize,
            limits: cdeploy_builder::sandbox::Limits {
                memory_bytes: positive("runtime-memory-mb", self.runtime_memory_mb, 512)? << 20,
                pids: positive("runtime-pids", self.runtime_pids, 256)?,
                disk_bytes: positive("runtime-disk-mb", self.runtime_disk_mb, 1024)? << 20,
            },
            start_timeout: Duration::from_secs(positive(
                "runtime-start-secs",
                self.runtime_start_secs,
                30,
            )?),
            uid,
        })
    }
}

impl Runtime {
    /// The embedded proxy's runtimes: a sandbox of their own (their limits, their uid,
    /// their cgroup scope beside the builds'), the builds' toolchain folder for Node.js.
    /// This host's runtimes: a sandbox of their own (their limits, their uid, the cgroup
    /// scope `<scope>-rt`), Node.js from `toolchains`. `unsandboxed`: the operator's
    /// explicit choice to run servers without isolation.
    pub fn open(
        &self,
        storage: cdeploy_storage::DynStorage,
        toolchains: cdeploy_builder::toolchain::Toolchains,
        (scope, unsandboxed): (&str, bool),
    ) -> Result<crate::Runtimes, String> {
        use cdeploy_builder::sandbox::{Options, Sandbox};
        use std::os::unix::fs::PermissionsExt;
        // The servers' uid passes through to its folders, and lists nothing here.
        std::fs::create_dir_all(&self.dir)
            .and_then(|()| {
                std::fs::set_permissions(&self.dir, std::fs::Permissions::from_mode(0o711))
            })
            .map_err(|e| format!("cannot prepare {}: {e}", self.dir.display()))?;
        let opts = Options {
            unsandboxed,
            build_uid: self.uid,
            limits: self.limits,
            scope: format!("{scope}-rt"),
            probe_dir: self.dir.join(".probe"),
            host_ports: Vec::new(),
        };
        let sandbox = Sandbox::new(&opts).map_err(|e| {
            format!(
                "cannot run server apps safely: {e}.\nTheir servers run untrusted code and need a sandbox (bubblewrap and passt, with user namespaces); \
                 install them (./install.sh does), or pass --unsafe-no-sandbox (only for code you trust)"
            )
        })?;
        tracing::info!(sandbox = %sandbox.describe(), "server apps' servers are sandboxed");
        let opts = crate::RuntimeOptions {
            dir: self.dir.clone(),
            idle: self.idle,
            max_running: self.max_running,
            start_timeout: self.start_timeout,
        };
        crate::Runtimes::new(storage, sandbox, toolchains, opts)
            .map_err(|e| format!("cannot prepare {}: {e}", self.dir.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_refusals() {
        let r = RuntimeSettings::default()
            .resolve(Path::new("/d/runtimes"))
            .unwrap();
        assert_eq!(r.dir, Path::new("/d/runtimes"));
        assert_eq!((r.idle.as_secs(), r.max_running), (300, 16));
        assert_eq!(r.limits.memory_bytes, 512 << 20);
        for bad in [
            RuntimeSettings {
                runtime_max: Some(0),
                ..Default::default()
            },
            RuntimeSettings {
                runtime_uid: Some(0),
                ..Default::default()
            },
        ] {
            assert!(bad.resolve(Path::new("/d")).is_err());
        }
    }
}
