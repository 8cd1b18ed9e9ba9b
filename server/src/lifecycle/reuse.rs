//! A build skipped for an earlier deployment's output. The builder hashed what it
//! reads (`cdeploy_builder`'s inputs); here they are recorded, and when a ready
//! deployment of the same project and target was built from the same digest, its
//! manifest is copied under the new id and the new deployment goes live as a build's
//! would (production, or its branch's alias).
//!
//! An output that names its own deployment (its id, so its preview URL; its branch's
//! URL; its commit) would be wrong under another: such a candidate is never reused,
//! which is checked once per candidate and remembered.

use aho_corasick::AhoCorasick;
use cdeploy_builder::{ActivateError, BuildSpec, Reused};
use cdeploy_core::api::BuildInputs;
use cdeploy_core::event::{EventBody, Step};
use cdeploy_core::layout;
use cdeploy_core::manifest::Manifest;
use cdeploy_core::server::ServerBundle;
use cdeploy_storage::{get_json, put_json, Storage};
use futures_util::StreamExt;

use super::{ActivationError, LivePublisher};
use crate::db::DeploymentRow;

/// Most bytes of a candidate's text read to check it does not name itself; a larger
/// output is not reused (it cannot be told).
const MAX_CHECKED_BYTES: u64 = 256 << 20;
/// Largest single file read for that check.
const MAX_CHECKED_FILE: u64 = 32 << 20;

impl LivePublisher {
    /// Records `inputs` for the deployment being built; then, if they allow it, takes
    /// the newest usable output built from the same and goes live with it.
    pub async fn reuse_output(
        &self,
        spec: &BuildSpec,
        inputs: &BuildInputs,
    ) -> Result<Option<Reused>, ActivationError> {
        let store = &self.lifecycle.store;
        let fail = |what: &str, e: String| ActivationError::Failed(format!("{what}: {e}"));
        let id = spec.deployment_id.as_str();
        store
            .set_inputs(id, inputs)
            .await
            .map_err(|e| fail("cannot record the inputs", e.to_string()))?;
        if !inputs.reuse {
            return Ok(None);
        }
        let d = store
            .get_deployment(id)
            .await
            .map_err(|e| fail("cannot read the deployment", e.to_string()))?
            .ok_or(ActivationError::Gone)?;
        // A forced build of the same inputs under way (a deploy hook, a redeploy) may
        // make newer output than any ready one: taking an older one now would put it
        // in front of that build's. So this one builds too.
        let building = store
            .building_same(&d.slug, d.preview, &inputs.digest, id)
            .await
            .map_err(|e| fail("cannot look for builds under way", e.to_string()))?;
        if building {
            let line = "An earlier deployment with the same inputs is still building: this one builds too, in case its output is newer than the last ready one's";
            self.lifecycle
                .event(id, &d.slug, EventBody::system(Step::Install, line))
                .await;
            return Ok(None);
        }
        let candidates = store
            .reusable(&d.slug, d.preview, &inputs.digest, id)
            .await
            .map_err(|e| fail("cannot look for earlier builds", e.to_string()))?;
        for (candidate, checked) in candidates {
            let Some(from) = self.usable(&candidate, checked).await? else {
                continue;
            };
            if !self.trusted_for(&d, &from.row).await? {
                continue;
            }
            if !self.blobs_kept(&from).await? {
                continue;
            }
            let site = self.take(spec, &d, &from).await?;
            return Ok(Some(Reused {
                from: from.row.id,
                site,
            }));
        }
        Ok(None)
    }

    /// The candidate's row and manifest when its output can be reused.
    async fn usable(&self, id: &str, checked: bool) -> Result<Option<Candidate>, ActivationError> {
        let store = &self.lifecycle.store;
        let storage = self.storage.as_ref();
        let fail = |e: String| ActivationError::Failed(format!("cannot read deployment {id}: {e}"));
        let Some(row) = store
            .get_deployment(id)
            .await
            .map_err(|e| fail(e.to_string()))?
        else {
            return Ok(None);
        };
        let manifest = get_json::<Manifest>(storage, &layout::manifest(id))
            .await
            .map_err(|e| fail(e.to_string()))?;
        let Some(manifest) = manifest else {
            return Ok(None);
        };
        let bundle = match manifest.server {
            Some(_) => get_json::<ServerBundle>(storage, &layout::server_bundle(id))
                .await
                .map_err(|e| fail(e.to_string()))?,
            None => None,
        };
        if manifest.server.is_some() && bundle.is_none() {
            return Ok(None);
        }
        if !checked {
            let names = names_itself(storage, &row, &manifest, bundle.as_ref()).await;
            if let Err(e) = store.set_names_itself(id, names).await {
                tracing::warn!(deployment = id, error = %e, "cannot record the self-reference check");
            }
            if names {
                return Ok(None);
            }
        }
        Ok(Some(Candidate {
            row,
            manifest,
            bundle,
        }))
    }

    /// Whether `from`'s output may serve `d`. Caches follow trust (each scope — production,
    /// previews, one branch — reads only its own): a build may have used what its
    /// scope's earlier builds left, such as a bundler cache a branch anyone may push to
    /// planted. So an output crosses scopes only when its build was its scope's first
    /// (nothing of the scope existed to read).
    async fn trusted_for(
        &self,
        d: &DeploymentRow,
        from: &DeploymentRow,
    ) -> Result<bool, ActivationError> {
        use cdeploy_core::layout::cache_scope;
        let scope = |r: &DeploymentRow| cache_scope(r.preview, r.branch.as_deref());
        if scope(d) == scope(from) {
            return Ok(true);
        }
        let earlier = self
            .lifecycle
            .store
            .earlier_in_scope(&from.slug, &from.id)
            .await
            .map_err(|e| ActivationError::Failed(format!("cannot read the deployments: {e}")))?;
        Ok(!earlier)
    }

    /// Marks the candidate's blobs referenced now, as an upload's check does: garbage
    /// collection must not take them between reading its manifest and writing ours.
    /// False when some are being deleted right now (that output is not taken).
    async fn blobs_kept(&self, from: &Candidate) -> Result<bool, ActivationError> {
        let mut hashes: Vec<String> = from
            .manifest
            .files
            .values()
            .map(|f| f.hash.clone())
            .collect();
        if let Some(bundle) = &from.bundle {
            hashes.extend(bundle.files.values().map(|f| f.hash.clone()));
        }
        hashes.sort();
        hashes.dedup();
        let deleting = self
            .lifecycle
            .store
            .touch_blobs(&hashes)
            .await
            .map_err(|e| ActivationError::Failed(format!("cannot mark the blobs: {e}")))?;
        Ok(deleting.is_empty())
    }

    /// Makes deployment `d` of `from`'s output and moves it live.
    async fn take(
        &self,
        spec: &BuildSpec,
        d: &DeploymentRow,
        from: &Candidate,
    ) -> Result<cdeploy_core::manifest::Site, ActivationError> {
        let storage = self.storage.as_ref();
        let fail = |what: &str, e: String| ActivationError::Failed(format!("{what}: {e}"));
        if let Some(bundle) = &from.bundle {
            put_json(storage, &layout::server_bundle(&d.id), bundle)
                .await
                .map_err(|e| fail("cannot write the server's bundle", e.to_string()))?;
        }
        let manifest = Manifest {
            id: d.id.clone(),
            created_at: cdeploy_core::now_rfc3339(),
            preview: Some(spec.preview()),
            ..from.manifest.clone()
        };
        put_json(storage, &layout::manifest(&d.id), &manifest)
            .await
            .map_err(|e| fail("cannot write the manifest", e.to_string()))?;
        let store = &self.lifecycle.store;
        store
            .set_reused_from(&d.id, &from.row.id)
            .await
            .map_err(|e| fail("cannot record the reuse", e.to_string()))?;
        if spec.promote {
            self.lifecycle
                .promote_new(storage, &spec.slug, &d.id)
                .await?;
        } else {
            self.lifecycle
                .preview_live(storage, &spec.slug, &d.id)
                .await?;
        }
        let reason = skipped_reason(&from.row.id);
        if let Err(e) = store.delivery_skipped(&d.id, &reason).await {
            tracing::warn!(deployment = %d.id, error = %e, "cannot mark its delivery skipped");
        }
        Ok(manifest.site)
    }
}

/// What the delivery that made a skipped deployment says.
pub fn skipped_reason(from: &str) -> String {
    format!("unchanged since {from}: its build read the same inputs, so its output was reused")
}

/// A ready deployment whose output may be taken.
struct Candidate {
    row: DeploymentRow,
    manifest: Manifest,
    bundle: Option<ServerBundle>,
}

/// Whether the deployment's text files (site and server) hold its id, its commit or its
/// branch's host; unreadable or too large to read counts as yes.
async fn names_itself(
    storage: &dyn Storage,
    d: &DeploymentRow,
    manifest: &Manifest,
    bundle: Option<&ServerBundle>,
) -> bool {
    let mut needles = vec![d.id.clone()];
    if let Some(commit) = &d.commit {
        needles.push(commit.clone());
        needles.push(commit[..7.min(commit.len())].to_string());
    }
    if let Some(label) = d
        .branch
        .as_deref()
        .and_then(|b| cdeploy_core::ids::branch_label(b, &d.slug))
    {
        needles.push(format!("{label}--{}", d.slug));
    }
    let Ok(finder) = AhoCorasick::new(&needles) else {
        return true;
    };
    // Rules the build wrote (`_headers`, `_redirects`): a header or a proxy to itself;
    // and the files' own paths (`/<id>/health`, `releases/<commit>.json`).
    let rules = serde_json::to_string(&manifest.rules).unwrap_or_default();
    let paths = manifest
        .files
        .keys()
        .chain(bundle.iter().flat_map(|b| b.files.keys()));
    if finder.is_match(&rules) || paths.into_iter().any(|p| finder.is_match(p)) {
        return true;
    }
    let mut texts: Vec<(String, u64)> = manifest
        .files
        .values()
        .filter(|f| may_hold_text(&f.content_type))
        .map(|f| (f.hash.clone(), f.size))
        .collect();
    if let Some(bundle) = bundle {
        texts.extend(
            bundle
                .files
                .iter()
                .filter(|(path, _)| {
                    !path.contains("node_modules/")
                        && may_hold_text(&cdeploy_storage::mime::content_type(path))
                })
                .map(|(_, f)| (f.hash.clone(), f.size)),
        );
    }
    texts.sort();
    texts.dedup();
    let total: u64 = texts.iter().map(|(_, size)| size).sum();
    if total > MAX_CHECKED_BYTES || texts.iter().any(|(_, s)| *s > MAX_CHECKED_FILE) {
        return true;
    }
    let finder = &finder;
    let found = futures_util::stream::iter(texts)
        .map(|(hash, _)| async move {
            match storage.get(&layout::blob(&hash)).await {
                Ok(Some(bytes)) => finder.is_match(bytes.as_ref()),
                _ => true,
            }
        })
        .buffer_unordered(4)
        .any(|named| async move { named })
        .await;
    found
}

/// Whether a file of this type may hold an id or a URL a build wrote: all but media
/// (an SVG is XML text, so it is read) and fonts. Files served as
/// `application/octet-stream` (`/version`, no extension) are read.
fn may_hold_text(content_type: &str) -> bool {
    let ct = content_type.split(';').next().unwrap_or("").trim();
    let media = ["image/", "audio/", "video/", "font/"]
        .iter()
        .any(|m| ct.starts_with(m));
    !media || ct.ends_with("+xml")
}

#[async_trait::async_trait]
impl cdeploy_builder::Publisher for LivePublisher {
    async fn activate(
        &self,
        spec: &BuildSpec,
        files: &cdeploy_storage::publish::OutputFiles,
        site: &cdeploy_core::config::SiteConfig,
        rules: &cdeploy_core::rules::RulesConfig,
        server: Option<&cdeploy_core::server::ServerOutput>,
    ) -> Result<cdeploy_core::manifest::Site, ActivateError> {
        self.publish(spec, files, site, rules, server)
            .await
            .map_err(|e| ActivateError::Refused(e.to_string()))
    }

    async fn reuse(
        &self,
        spec: &BuildSpec,
        inputs: &BuildInputs,
    ) -> Result<Option<Reused>, ActivateError> {
        self.reuse_output(spec, inputs)
            .await
            .map_err(|e| ActivateError::Refused(e.to_string()))
    }
}
