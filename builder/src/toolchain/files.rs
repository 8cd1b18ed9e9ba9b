//! Files of the toolchain directory: registry tarballs unpacked (never outside their
//! folder, never a link), modes that builds (another uid) can read, atomic writes.

use std::io::Write;
use std::path::{Path, PathBuf};

/// Unpacks a registry tarball (`package/…`) into `dest`, dropping the first path
/// component; entries that would leave `dest`, and links, devices and FIFOs are
/// skipped. Files end up readable by everyone, executable where the archive says so.
/// Returns the bytes written.
pub(super) fn unpack(archive: &Path, dest: &Path) -> std::io::Result<u64> {
    let mut bytes = 0;
    let file = std::fs::File::open(archive)?;
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(std::io::BufReader::new(file)));
    for entry in tar.entries()? {
        let mut entry = entry?;
        let path = entry.path()?.into_owned();
        let rel: PathBuf = path.components().skip(1).collect();
        if rel.as_os_str().is_empty()
            || rel
                .components()
                .any(|c| !matches!(c, std::path::Component::Normal(_)))
        {
            continue;
        }
        let kind = entry.header().entry_type();
        let out = dest.join(&rel);
        if kind.is_dir() {
            std::fs::create_dir_all(&out)?;
            set_mode(&out, 0o755);
            continue;
        }
        if !kind.is_file() {
            continue;
        }
        if let Some(parent) = out.parent() {
            std::fs::create_dir_all(parent)?;
            set_mode(parent, 0o755);
        }
        let exec = entry
            .header()
            .mode()
            .map(|m| m & 0o111 != 0)
            .unwrap_or(false);
        let mut f = std::fs::File::create(&out)?;
        bytes += std::io::copy(&mut entry, &mut f)?;
        set_mode(&out, if exec { 0o755 } else { 0o644 });
    }
    open_folders(dest)?;
    Ok(bytes)
}

/// Folders made on the way took the server's (private) umask: open them to builds.
fn open_folders(dest: &Path) -> std::io::Result<()> {
    let mut stack = vec![dest.to_path_buf()];
    while let Some(dir) = stack.pop() {
        set_mode(&dir, 0o755);
        for entry in std::fs::read_dir(&dir)? {
            let entry = entry?;
            if entry.file_type()?.is_dir() {
                stack.push(entry.path());
            }
        }
    }
    Ok(())
}

pub(super) fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode));
}

pub(super) fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    tmp.write_all(bytes)?;
    tmp.persist(path).map_err(|e| e.error)?;
    set_mode(path, 0o644);
    Ok(())
}
