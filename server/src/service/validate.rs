//! Checks of what a request names: slugs, git URLs and refs, blob hashes.

use cdeploy_core::api::codes;
use cdeploy_core::{git, ids};

use super::error::{Error, Kind, Result};

pub fn check_slug(slug: &str) -> Result<()> {
    ids::validate_slug(slug).map_err(|e| {
        Error::new(
            Kind::Invalid,
            codes::INVALID_SLUG,
            format!("invalid slug {slug:?}: {e}"),
        )
    })
}

pub fn check_git(url: &str, git_ref: Option<&str>) -> Result<()> {
    git::validate_git_url(url).map_err(|e| {
        Error::new(
            Kind::Invalid,
            codes::INVALID_GIT_URL,
            format!("invalid git URL: {e}"),
        )
    })?;
    if let Some(r) = git_ref {
        git::validate_git_ref(r).map_err(|e| Error::bad_request(e.to_string()))?;
    }
    // What the API shows of a URL's credentials, sent back as if it were them.
    if url::Url::parse(url).is_ok_and(|u| u.username() == "***" || u.password() == Some("***")) {
        return Err(Error::new(
            Kind::Invalid,
            codes::INVALID_GIT_URL,
            "invalid git URL: its credentials are `***`, the mask the API shows; give the real ones",
        ));
    }
    Ok(())
}

pub fn check_hash(h: &str) -> Result<()> {
    if cdeploy_core::is_sha256_hex(h) {
        Ok(())
    } else {
        Err(Error::bad_request(format!(
            "{h:?} is not a SHA-256 hash (64 lowercase hex characters)"
        )))
    }
}

/// A branch name a link or a deploy hook may follow.
pub fn check_branch(b: &str) -> Result<()> {
    git::validate_git_ref(b).map_err(|e| Error::bad_request(format!("branch {b:?}: {e}")))?;
    if git::is_commit_id(b) || b.len() > 255 {
        return Err(Error::bad_request(format!(
            "branch {b:?}: a branch name, at most 255 characters"
        )));
    }
    Ok(())
}

pub fn being_deleted(slug: &str) -> Error {
    Error::conflict(format!(
        "project {slug:?} is being deleted; deploy again once it is gone"
    ))
}
