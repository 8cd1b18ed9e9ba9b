//! axe-core (from npm, pinned) for accessibility checks in a page: its one-file build,
//! fetched once with `npm pack` into a cache beside the npm cache.

use std::path::PathBuf;
use std::process::Command;

/// The axe-core version the accessibility tests run.
pub const AXE_VERSION: &str = "4.14.1";

/// `axe.min.js`'s source, fetched on first use.
pub fn axe_source() -> String {
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let dir = home
        .join(".cache")
        .join("cdeploy-test-axe")
        .join(AXE_VERSION);
    let file = dir.join("axe.min.js");
    if let Ok(s) = std::fs::read_to_string(&file) {
        return s;
    }
    std::fs::create_dir_all(&dir).unwrap();
    let out = Command::new("npm")
        .args([
            "pack",
            &format!("axe-core@{AXE_VERSION}"),
            "--silent",
            "--pack-destination",
        ])
        .arg(&dir)
        .output()
        .expect("run npm (install it with ./install.sh --dev)");
    assert!(
        out.status.success(),
        "npm pack axe-core: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let tgz = dir.join(format!("axe-core-{AXE_VERSION}.tgz"));
    let archive = std::fs::File::open(&tgz).expect("the packed axe-core");
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(archive));
    for entry in tar.entries().unwrap() {
        let mut entry = entry.unwrap();
        if entry.path().unwrap().to_string_lossy() == "package/axe.min.js" {
            let mut s = String::new();
            std::io::Read::read_to_string(&mut entry, &mut s).unwrap();
            let tmp = dir.join(format!("axe.min.js.{}", std::process::id()));
            std::fs::write(&tmp, &s).unwrap();
            std::fs::rename(&tmp, &file).unwrap();
            let _ = std::fs::remove_file(&tgz);
            return s;
        }
    }
    panic!("axe-core {AXE_VERSION} has no axe.min.js")
}
