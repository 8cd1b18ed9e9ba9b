//! The sandbox's libc calls: what a build process does between fork and exec (join its
//! cgroup, umask, rlimits, drop to the build's uid, die with its parent), the host's
//! interface addresses, and SIGKILL for a cgroup's processes. The only module of the
//! crate allowed `unsafe` code; everything it offers is safe to call.

use std::ffi::CString;
use std::os::unix::process::CommandExt;

use super::Limits;

/// What a build process sets up for itself between fork and exec, prepared before the
/// fork (no allocation after it).
pub(super) struct ChildSetup {
    /// `cgroup.procs` files to join.
    pub procs: Vec<CString>,
    pub limits: Limits,
    /// The uid (and gid) to run as.
    pub user: Option<u32>,
    /// `RLIMIT_NPROC` for the process limit (no cgroup, a uid of its own).
    pub nproc_fallback: bool,
}

/// Makes `cmd`'s process run `setup` before it execs.
pub(super) fn pre_exec(cmd: &mut std::process::Command, setup: ChildSetup) {
    let ChildSetup {
        procs,
        limits,
        user,
        nproc_fallback,
    } = setup;
    // SAFETY: the closure runs between fork and exec and only makes async-signal-
    // safe system calls on data prepared before the fork (no allocation, no locks).
    unsafe {
        cmd.pre_exec(move || {
            // Join the build's cgroup while still privileged.
            for file in &procs {
                join_cgroup(file)?;
            }
            // A server's private umask is not the build's business.
            libc::umask(0o022);
            set_limit(libc::RLIMIT_CORE, 0)?;
            set_limit(libc::RLIMIT_FSIZE, limits.disk_bytes)?;
            if nproc_fallback {
                set_limit(libc::RLIMIT_NPROC, limits.pids)?;
            }
            if let Some(uid) = user {
                if libc::setgroups(0, std::ptr::null()) != 0
                    || libc::setgid(uid) != 0
                    || libc::setuid(uid) != 0
                {
                    return Err(std::io::Error::last_os_error());
                }
            }
            // After setuid: changing credentials clears the parent-death signal.
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

fn join_cgroup(file: &CString) -> std::io::Result<()> {
    // SAFETY: open/write/close on a NUL-terminated path and a stack buffer.
    unsafe {
        let fd = libc::open(file.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let mut buf = [0u8; 20];
        let mut n = libc::getpid() as u64;
        let mut i = buf.len();
        loop {
            i -= 1;
            buf[i] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        let len = buf.len() - i;
        let written = libc::write(fd, buf[i..].as_ptr().cast(), len);
        libc::close(fd);
        if written != len as isize {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

fn set_limit(resource: libc::__rlimit_resource_t, value: u64) -> std::io::Result<()> {
    let lim = libc::rlimit {
        rlim_cur: value,
        rlim_max: value,
    };
    // SAFETY: setrlimit reads the struct we pass.
    if unsafe { libc::setrlimit(resource, &lim) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// SIGKILLs `pid` (a member of a build's cgroup as the kernel lists it now).
pub(super) fn kill(pid: i32) {
    // SAFETY: kill only sends a signal.
    unsafe {
        libc::kill(pid, libc::SIGKILL);
    }
}

/// Every address of this host's interfaces but loopback (and IPv6 link-local):
/// reachable through pasta's splicing unless a route forbids it.
pub(super) fn host_addresses() -> Vec<String> {
    let mut out = Vec::new();
    let mut ifs: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills a list we free with freeifaddrs; we only read it.
    unsafe {
        if libc::getifaddrs(&mut ifs) != 0 {
            return out;
        }
        let mut cur = ifs;
        while !cur.is_null() {
            let addr = (*cur).ifa_addr;
            if !addr.is_null() {
                match i32::from((*addr).sa_family) {
                    libc::AF_INET => {
                        let sin = &*(addr as *const libc::sockaddr_in);
                        let ip = std::net::Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
                        if !ip.is_loopback() {
                            out.push(format!("{ip}/32"));
                        }
                    }
                    libc::AF_INET6 => {
                        let sin6 = &*(addr as *const libc::sockaddr_in6);
                        let ip = std::net::Ipv6Addr::from(sin6.sin6_addr.s6_addr);
                        if !ip.is_loopback() && (ip.segments()[0] & 0xffc0) != 0xfe80 {
                            out.push(format!("{ip}/128"));
                        }
                    }
                    _ => {}
                }
            }
            cur = (*cur).ifa_next;
        }
        libc::freeifaddrs(ifs);
    }
    out.sort();
    out.dedup();
    out
}
