//! What a site is made of, read through the caches: route pointers (with the last good
//! one when storage fails), branch aliases, manifests and preview protection records.
//! Concurrent misses of one key share one storage read.

use std::sync::Arc;

use cdeploy_core::ids::DeploymentId;
use cdeploy_core::layout;
use cdeploy_core::manifest::{Alias, Manifest, Protection, Route, StoredProtection};
use cdeploy_storage::{get_json, StorageError};

use crate::host::Target;
use crate::site::ServedSite;
use crate::{Proxy, ProxyError};

impl Proxy {
    /// The site `target` of `slug` names, if it is served. A deployment is served only
    /// while its project is: `rm` takes previews and aliases down too.
    pub(crate) async fn site_of(
        &self,
        slug: &str,
        target: Target,
    ) -> Result<Option<crate::hot::LocalSite>, ProxyError> {
        // Read before the lookup: a change meanwhile leaves the memo stale, not wrong.
        let generation = self.generation.load(std::sync::atomic::Ordering::Acquire);
        let key = match &target {
            Target::Production => std::borrow::Cow::Borrowed(slug),
            Target::Deployment(id) => format!("{slug}/id:{id}").into(),
            Target::Alias(label) => format!("{slug}/alias:{label}").into(),
        };
        if let Some(site) = crate::hot::site(self.id, &key, generation) {
            return Ok(Some(site));
        }
        // Boxed: the shared caches' futures are large, and a request's future would
        // otherwise carry them (allocated and moved on every request) for a rare miss.
        let site = Box::pin(self.lookup_site(slug, target)).await?;
        Ok(site.map(|site| crate::hot::keep_site(self.id, &key, generation, site)))
    }

    /// [`Proxy::site_of`] through the shared caches.
    async fn lookup_site(
        &self,
        slug: &str,
        target: Target,
    ) -> Result<Option<Arc<ServedSite>>, ProxyError> {
        let Some(production) = self.production(slug).await? else {
            return Ok(None);
        };
        let id = match target {
            Target::Production if production.is_empty() => return Ok(None),
            Target::Production => production,
            Target::Deployment(id) => id.to_string(),
            Target::Alias(label) => match self.alias(slug, &label).await? {
                Some(id) => id,
                None => return Ok(None),
            },
        };
        Ok(self.manifest(&id).await?.filter(|m| m.slug == slug))
    }

    /// A project's preview protection, if it has one.
    pub(crate) async fn protection(
        &self,
        slug: &str,
    ) -> Result<Option<Arc<Protection>>, ProxyError> {
        let entry = self
            .protections
            .try_get_with_by_ref(slug, async {
                let Some(stored) =
                    get_json::<StoredProtection>(self.storage.as_ref(), &layout::protection(slug))
                        .await?
                else {
                    return Ok(None);
                };
                let opened = stored.open(slug, self.protection_keys.as_deref());
                if let Err(e) = &opened {
                    tracing::warn!(%slug, "{e}");
                }
                Ok::<_, StorageError>(Some(opened.map(Arc::new).map_err(Arc::new)))
            })
            .await?;
        // A record this proxy can't open is an error page, never "not protected": the
        // previews stay closed.
        entry.transpose().map_err(ProxyError::ProtectionUnreadable)
    }

    /// The deployment a branch alias points at.
    async fn alias(&self, slug: &str, label: &str) -> Result<Option<String>, ProxyError> {
        Ok(self
            .aliases
            .try_get_with(format!("{slug}/{label}"), async {
                let alias =
                    get_json::<Alias>(self.storage.as_ref(), &layout::alias(slug, label)).await?;
                Ok::<_, StorageError>(
                    alias
                        .map(|a| a.deployment)
                        .filter(|id| DeploymentId::parse(id).is_some()),
                )
            })
            .await?)
    }

    /// The slug's production deployment. Concurrent misses share one storage read, and
    /// an unknown slug is remembered for `route_ttl` like a known one.
    pub(crate) async fn production(&self, slug: &str) -> Result<Option<String>, ProxyError> {
        let fetched = self
            .routes
            .try_get_with_by_ref(slug, async {
                let route = get_json::<Route>(self.storage.as_ref(), &layout::route(slug)).await?;
                // Empty: a project with previews only.
                let id = route
                    .map(|r| r.production)
                    .filter(|id| id.is_empty() || DeploymentId::parse(id).is_some());
                let mut last = self.last_good_routes.lock().expect("not poisoned");
                match &id {
                    Some(id) => last.insert(slug.to_string(), id.clone()),
                    None => last.remove(slug),
                };
                Ok::<_, StorageError>(id)
            })
            .await;
        match fetched {
            Ok(id) => Ok(id),
            Err(e) => {
                let stale = self
                    .last_good_routes
                    .lock()
                    .expect("not poisoned")
                    .get(slug)
                    .cloned();
                match stale {
                    Some(id) => Ok(Some(id)),
                    None => Err(e.into()),
                }
            }
        }
    }

    /// A deployment's manifest; a missing one is remembered for `negative_ttl`.
    async fn manifest(&self, id: &str) -> Result<Option<Arc<ServedSite>>, ProxyError> {
        Ok(self
            .manifests
            .try_get_with_by_ref(id, async {
                let Some(m) =
                    get_json::<Manifest>(self.storage.as_ref(), &layout::manifest(id)).await?
                else {
                    return Ok(None);
                };
                // Up to 100,000 files: prepared on a blocking thread, not on the serving
                // thread its other connections wait on.
                let site = tokio::task::spawn_blocking(move || ServedSite::new(m))
                    .await
                    .map_err(|e| StorageError::Backend(format!("preparing a manifest: {e}")))?;
                Ok::<_, StorageError>(Some(Arc::new(site)))
            })
            .await?)
    }
}
