//! The build's output going live: the output folder resolved inside the checkout, its
//! files uploaded, refused without a root `index.html` (unless the site says it needs
//! none), then activated with the framework preset's settings.

use std::path::{Path, PathBuf};

use cdeploy_core::config::{BuildConfig, SiteConfig};
use cdeploy_core::event::{EventBody, Status, Step};
use cdeploy_core::plan::Plan;
use cdeploy_core::rules::RulesConfig;
use cdeploy_core::server::ServerOutput;
use cdeploy_storage::publish::OutputFiles;

use super::{resolve_inside, Build};
use crate::{upload, BuildError};

/// The output folder on the host: the configured or detected one, relative to the
/// project folder (`build.root`) like everything the build writes, and inside the
/// checkout.
pub(super) fn output_dir(
    checkout: &Path,
    project_dir: &Path,
    plan: &Plan,
    build: &BuildConfig,
    public_was_input: bool,
) -> Result<PathBuf, BuildError> {
    let output =
        cdeploy_core::plan::output_dir(project_dir, plan, build.output.is_some(), public_was_input)
            .map_err(|e| BuildError::failed(e.to_string()))?;
    let output_rel = match build.root.as_deref() {
        Some(root) if root != "." => format!("{}/{output}", root.trim_end_matches('/')),
        _ => output.clone(),
    };
    resolve_inside(checkout, &output_rel, "build.output")
}

/// Uploads the output's files and checks there is a site to serve.
pub(super) async fn upload(
    b: &Build<'_>,
    checkout: &Path,
    project_dir: &Path,
    plan: &Plan,
    output: &Path,
    site: &SiteConfig,
) -> Result<OutputFiles, BuildError> {
    b.sink.emit(EventBody::status(Status::Uploading)).await;
    let exclude_root_files = plan.build.is_none() && output == project_dir;
    let files = upload::upload_dir(b.storage, b.sink, output, exclude_root_files, b.cancel).await?;
    let shown = output.strip_prefix(checkout).unwrap_or(output).display();
    if files.is_empty() {
        return Err(BuildError::failed(format!(
            "the output folder {shown} is empty"
        )));
    }
    // Never `ready` for a site that answers 404 at its root: that is the wrong folder.
    if site.require_index != Some(false) && !files.contains_key("/index.html") {
        return Err(BuildError::failed(no_index_message(
            &shown.to_string(),
            &files,
        )));
    }
    Ok(files)
}

/// Writes the manifest and moves the route (through the build's publisher).
pub(super) async fn activate(
    b: &Build<'_>,
    plan: &Plan,
    files: &OutputFiles,
    mut site: SiteConfig,
    rules: &RulesConfig,
    server: Option<&ServerOutput>,
) -> Result<(), BuildError> {
    b.say(
        Step::Activate,
        format!("Writing the manifest for {} files", files.len()),
    )
    .await;
    if b.cancel.is_cancelled() {
        return Err(BuildError::Canceled);
    }
    // The framework's preset decides what the configuration leaves open.
    if site.spa.is_none() {
        site.spa = plan.spa;
    }
    // A server app's other paths are its server's: no `.html` guessing in front of it.
    if server.is_some() && site.clean_urls.is_none() {
        site.clean_urls = Some(false);
    }
    let site = b
        .publisher
        .activate(b.spec, files, &site, rules, server)
        .await
        .map_err(|e| BuildError::Failed(e.to_string()))?;
    b.say(
        Step::Activate,
        format!(
            "Site settings: spa={} clean_urls={}",
            site.spa, site.clean_urls
        ),
    )
    .await;
    Ok(())
}

/// Why an output without a root `index.html` is refused, naming what was found.
fn no_index_message(folder: &str, files: &OutputFiles) -> String {
    let mut pages: Vec<&str> = files
        .keys()
        .filter(|p| p.ends_with("/index.html"))
        .map(String::as_str)
        .collect();
    pages.sort_by_key(|p| p.len());
    let found = match pages.first() {
        Some(nested) => {
            format!("its index.html is at {nested}: set `output` in [build] to that folder")
        }
        None => {
            let some: Vec<&str> = files.keys().take(5).map(String::as_str).collect();
            format!(
                "it has {} files ({}{}) and no index.html; set `output` in [build] to the folder your build writes",
                files.len(),
                some.join(", "),
                if files.len() > some.len() { ", …" } else { "" }
            )
        }
    };
    format!(
        "the output folder {folder} has no index.html at its root: {found}, or `require_index = false` in [site] for a site without one"
    )
}
