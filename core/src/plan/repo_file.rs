//! Reading a checkout's files (`package.json`, configs, lockfiles, `cdeploy.toml`)
//! without letting a hostile repository point the reader elsewhere.

use std::path::Path;

/// Largest repository file read here (`package.json`, configs, lockfiles).
const MAX_REPO_FILE: u64 = 64 << 20;

/// Why a repository file was not read. Each message completes a sentence that starts with
/// the file's name (`cdeploy.toml: is a broken symlink`).
#[derive(Debug, thiserror::Error)]
pub enum RepoFileError {
    #[error("is a broken symlink")]
    BrokenSymlink,
    #[error("is a symlink that points outside the repository")]
    OutsideRepository,
    #[error("is not a regular file")]
    NotAFile,
    #[error("is larger than {} MiB", MAX_REPO_FILE >> 20)]
    TooLarge,
    #[error("is not UTF-8 text")]
    NotUtf8,
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Reads `dir/name` of a checkout, refusing what a hostile repository could point it at:
/// a symlink out of `root` (`cdeploy.toml -> /proc/self/environ` would otherwise be read
/// by the server and quoted in an error), a FIFO or device (it would hang the reader), or
/// a file over 64 MiB. `None`: no such file.
pub fn read_repo_bytes(
    root: &Path,
    dir: &Path,
    name: &str,
) -> Result<Option<Vec<u8>>, RepoFileError> {
    let path = dir.join(name);
    if std::fs::symlink_metadata(&path).is_err() {
        return Ok(None);
    }
    let (root, real) = match (root.canonicalize(), path.canonicalize()) {
        (Ok(r), Ok(p)) => (r, p),
        _ => return Err(RepoFileError::BrokenSymlink),
    };
    if !real.starts_with(&root) {
        return Err(RepoFileError::OutsideRepository);
    }
    let meta = std::fs::metadata(&real)?;
    if !meta.is_file() {
        return Err(RepoFileError::NotAFile);
    }
    if meta.len() > MAX_REPO_FILE {
        return Err(RepoFileError::TooLarge);
    }
    Ok(Some(std::fs::read(&real)?))
}

/// [`read_repo_bytes`] as UTF-8 text.
pub fn read_repo_file(
    root: &Path,
    dir: &Path,
    name: &str,
) -> Result<Option<String>, RepoFileError> {
    read_repo_bytes(root, dir, name)?
        .map(|b| String::from_utf8(b).map_err(|_| RepoFileError::NotUtf8))
        .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_outside_the_repository_are_refused() {
        let repo = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret"), "s").unwrap();
        std::fs::write(repo.path().join("ok.txt"), "hi").unwrap();
        std::fs::write(repo.path().join("bin"), [0xff, 0xfe]).unwrap();
        std::os::unix::fs::symlink(outside.path().join("secret"), repo.path().join("out")).unwrap();
        std::os::unix::fs::symlink(repo.path().join("nowhere"), repo.path().join("dangling"))
            .unwrap();
        let read = |name: &str| read_repo_file(repo.path(), repo.path(), name);
        assert_eq!(read("ok.txt").unwrap().as_deref(), Some("hi"));
        assert_eq!(read("missing").unwrap(), None);
        assert_eq!(
            read("out").unwrap_err().to_string(),
            "is a symlink that points outside the repository"
        );
        assert_eq!(
            read("dangling").unwrap_err().to_string(),
            "is a broken symlink"
        );
        assert_eq!(read("bin").unwrap_err().to_string(), "is not UTF-8 text");
        assert_eq!(read(".").unwrap_err().to_string(), "is not a regular file");
    }
}
