//! The read-only system a sandboxed build sees: `/usr`, the merged-usr links (or the
//! real directories), and the few `/etc` entries a build needs. Nothing else of the
//! host's root exists in its view.

use std::path::Path;

/// `/etc` entries a build needs (DNS, TLS roots, dynamic linker, npm's system config).
/// Nothing else of the host's `/etc` exists in its view.
const ETC_ALLOWED: &[&str] = &[
    "resolv.conf",
    "hosts",
    "nsswitch.conf",
    "host.conf",
    "gai.conf",
    "ssl",
    "ca-certificates",
    "ca-certificates.conf",
    "pki",
    "crypto-policies",
    "alternatives",
    "npmrc",
    "localtime",
    "mime.types",
    "protocols",
    "services",
    "ld.so.cache",
    "ld.so.conf",
    "ld.so.conf.d",
];

/// bwrap arguments for the read-only system: `/usr`, the merged-usr links (or the real
/// directories), and the allowed `/etc` entries (the host's `resolv.conf` left out when
/// the sandbox has its own).
pub(super) fn view(own_resolv_conf: bool) -> Vec<String> {
    let mut args: Vec<String> = vec!["--ro-bind".into(), "/usr".into(), "/usr".into()];
    for name in ["bin", "sbin", "lib", "lib32", "lib64", "libx32"] {
        let host = Path::new("/").join(name);
        match std::fs::symlink_metadata(&host) {
            Ok(m) if m.file_type().is_symlink() => {
                if let Ok(target) = std::fs::read_link(&host) {
                    args.extend([
                        "--symlink".into(),
                        target.display().to_string(),
                        host.display().to_string(),
                    ]);
                }
            }
            Ok(m) if m.is_dir() => {
                let h = host.display().to_string();
                args.extend(["--ro-bind".into(), h.clone(), h]);
            }
            _ => {}
        }
    }
    for name in ETC_ALLOWED {
        if own_resolv_conf && *name == "resolv.conf" {
            continue;
        }
        let host = Path::new("/etc").join(name);
        if host.exists() {
            let h = host.display().to_string();
            args.extend(["--ro-bind".into(), h.clone(), h]);
        }
    }
    args
}
