//! What to build and where its events go.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use async_trait::async_trait;
use cdeploy_core::config::{self, BuildConfig, RuntimeConfig, SiteConfig};
use cdeploy_core::event::{EventBody, Status, Step};
use cdeploy_core::rules::RulesConfig;
use cdeploy_core::server::ServerOutput;

use crate::BuildError;

/// Where the source comes from.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SourceSpec {
    Git {
        url: String,
        git_ref: Option<String>,
    },
    /// The storage key of an uploaded source's `source.json`.
    Upload { source_map_key: String },
}

/// One deployment to build. Settings given here win over the repository's `cdeploy.toml`.
/// Its JSON form is what an API builder receives when it claims its build.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct BuildSpec {
    pub deployment_id: String,
    pub slug: String,
    pub source: SourceSpec,
    pub build: BuildConfig,
    pub env: BTreeMap<String, String>,
    pub site: SiteConfig,
    /// The URL reported in the `ready` event.
    pub url: String,
    /// Whether a successful build becomes production (writes `routes/<slug>.json`).
    pub promote: bool,
    #[serde(with = "secs")]
    pub timeout: Duration,
    /// The project's stored secrets for this build's target: given to its commands as
    /// environment variables (over `[env]`), and masked wherever its log shows them.
    #[serde(default, skip_serializing_if = "Secrets::is_empty")]
    pub secrets: Secrets,
    /// The trust scope of its caches (`layout::cache_scope`); empty in specs from before
    /// scopes: then production when it promotes, else `preview`.
    #[serde(default)]
    pub cache_scope: String,
    /// Given by a control plane that keeps what each build read: the build records its
    /// inputs through the publisher ([`Publisher::reuse`]), and is skipped when a ready
    /// deployment was built from the same. `None` (a standalone builder): neither.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reuse: Option<ReuseSpec>,
}

/// What only the control plane knows of a build's inputs.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ReuseSpec {
    /// The version of the target's stored variables (their names and when each was
    /// set, hashed; never their values).
    pub secrets: String,
}

impl BuildSpec {
    /// Whether it is a preview (its scope is not production's): its server gets the
    /// preview target's variables.
    pub fn preview(&self) -> bool {
        self.scope() != cdeploy_core::layout::cache_scope(false, None)
    }

    /// The trust scope of this build's caches: dependency entries and the package
    /// managers' store are read and written within it only.
    pub fn scope(&self) -> String {
        if cdeploy_core::layout::is_cache_scope(&self.cache_scope) {
            self.cache_scope.clone()
        } else {
            cdeploy_core::layout::cache_scope(!self.promote, None)
        }
    }
}

/// Secret values by name; `Debug` shows the names only.
#[derive(Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct Secrets(pub BTreeMap<String, String>);

impl Secrets {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// What masks these values in log text.
    pub fn masker(&self) -> cdeploy_core::mask::Masker {
        cdeploy_core::mask::Masker::new(self.0.values().map(String::as_str))
    }
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.0.keys()).finish()
    }
}

mod secs {
    use std::time::Duration;

    pub fn serialize<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_secs())
    }

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let secs: u64 = serde::Deserialize::deserialize(d)?;
        Ok(Duration::from_secs(secs))
    }
}

/// Why a finished build could not go live.
#[derive(Debug, thiserror::Error)]
pub enum ActivateError {
    /// Storage refused the manifest or the route.
    #[error("cannot {doing}: {source}")]
    Storage {
        doing: &'static str,
        #[source]
        source: cdeploy_storage::StorageError,
    },
    /// The control plane refused it (a limit, a deployment gone) or could not be asked.
    #[error("{0}")]
    Refused(String),
}

/// Where a finished build goes live: writes the manifest (with precompressed variants)
/// and, when the spec says so, the route pointer. In-process and trusted builders write
/// storage themselves ([`DirectPublisher`]); an API builder asks the control plane,
/// which alone writes storage.
#[async_trait]
pub trait Publisher: Send + Sync {
    async fn activate(
        &self,
        spec: &BuildSpec,
        files: &cdeploy_storage::publish::OutputFiles,
        site: &SiteConfig,
        rules: &RulesConfig,
        server: Option<&ServerOutput>,
    ) -> Result<cdeploy_core::manifest::Site, ActivateError>;

    /// Records what the build read and, when `inputs.reuse` allows it and a ready
    /// deployment of the same project and target was built from the same digest, makes
    /// this deployment of that one's output and moves it live as [`Publisher::activate`]
    /// would: then it answers that deployment's id and the site settings. `None`: build.
    /// Publishers without a record of earlier builds answer `None`.
    async fn reuse(
        &self,
        _spec: &BuildSpec,
        _inputs: &cdeploy_core::api::BuildInputs,
    ) -> Result<Option<Reused>, ActivateError> {
        Ok(None)
    }
}

/// The output a skipped build took: whose it was, and the site settings it serves with.
#[derive(Debug, Clone)]
pub struct Reused {
    pub from: String,
    pub site: cdeploy_core::manifest::Site,
}

/// Activation straight into storage.
pub struct DirectPublisher<'a>(pub &'a dyn cdeploy_storage::Storage);

#[async_trait]
impl Publisher for DirectPublisher<'_> {
    async fn activate(
        &self,
        spec: &BuildSpec,
        files: &cdeploy_storage::publish::OutputFiles,
        site: &SiteConfig,
        rules: &RulesConfig,
        server: Option<&ServerOutput>,
    ) -> Result<cdeploy_core::manifest::Site, ActivateError> {
        use cdeploy_storage::publish::{self, PublishError};
        let manifest = publish::write_manifest(
            self.0,
            (&spec.slug, &spec.deployment_id, spec.preview()),
            files,
            (site, rules),
            server,
        )
        .await
        .map_err(|e| match e {
            PublishError::Storage(source) => ActivateError::Storage {
                doing: "write the manifest",
                source,
            },
            rules @ PublishError::Rules(_) => ActivateError::Refused(rules.to_string()),
        })?;
        if spec.promote {
            publish::set_route(self.0, &spec.slug, &spec.deployment_id)
                .await
                .map_err(|source| ActivateError::Storage {
                    doing: "update the route",
                    source,
                })?;
        }
        Ok(manifest.site)
    }
}

/// Where and how a build runs on this machine: chosen by whoever runs builds (the local
/// dispatcher, or the builder binary in its container), never by the API or the request.
pub struct Workspace<'a> {
    /// Scratch directory for this build (checkout, HOME, /tmp); removed at the end.
    pub work_dir: PathBuf,
    /// This project's own package-manager cache (`npm_config_cache` etc.), kept between
    /// its builds and visible to them. Other projects' caches are not.
    pub project_cache: Option<PathBuf>,
    /// `node_modules` kept between builds of the project ([`crate::cache`]); managed by
    /// the builder, never visible to builds.
    pub modules_cache: Option<PathBuf>,
    /// Without `modules_cache`: keep `node_modules` in storage instead (an ECS task has
    /// no disk that outlives it), through the storage the build is given.
    pub storage_cache: bool,
    /// `PATH` for build commands.
    pub path: String,
    pub sandbox: &'a crate::sandbox::Sandbox,
    /// Where Node.js and package managers come from ([`crate::toolchain`]).
    pub toolchains: &'a crate::toolchain::Toolchains,
}

/// Receives events; sequencing and delivery are the sink's business. Emitting never fails
/// from the build's point of view: a sink that cannot deliver buffers or logs.
#[async_trait]
pub trait EventSink: Send + Sync {
    async fn emit(&self, body: EventBody);
}

/// How a build ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Ready { url: String },
    Failed(String),
    Canceled,
}

impl Outcome {
    pub fn status_event(&self) -> EventBody {
        match self {
            Outcome::Ready { url } => EventBody::Status {
                status: Status::Ready,
                url: Some(url.clone()),
                error: None,
            },
            Outcome::Failed(e) => EventBody::failed(e.clone()),
            Outcome::Canceled => EventBody::status(Status::Canceled),
        }
    }

    pub fn status(&self) -> Status {
        match self {
            Outcome::Ready { .. } => Status::Ready,
            Outcome::Failed(_) => Status::Failed,
            Outcome::Canceled => Status::Canceled,
        }
    }
}

/// The effective settings after merging the request with the repository's file.
pub(crate) struct Settings {
    pub build: BuildConfig,
    pub site: SiteConfig,
    /// cdeploy.toml's `[[redirects]]` and `[[headers]]` (the repository's only: a
    /// request does not carry rules).
    pub rules: RulesConfig,
    /// cdeploy.toml's `[runtime]` (the repository's only).
    pub runtime: RuntimeConfig,
    pub env: BTreeMap<String, String>,
}

impl Settings {
    pub(crate) async fn merge(
        spec: &BuildSpec,
        checkout: &Path,
        sink: &dyn EventSink,
    ) -> Result<Settings, BuildError> {
        let text = crate::read_repo_file(checkout, checkout, config::FILE_NAME)
            .map_err(|e| BuildError::failed(format!("{}: {e}", config::FILE_NAME)))?;
        let parsed = match text {
            Some(text) => config::parse(&text, Path::new(config::FILE_NAME)),
            None => Ok(config::Loaded::default()),
        };
        let file = match parsed {
            Ok(loaded) => {
                for w in loaded.warnings {
                    sink.emit(EventBody::system(Step::Clone, format!("warning: {w}")))
                        .await;
                }
                loaded.config
            }
            Err(e) => return Err(BuildError::failed(e.to_string())),
        };
        let mut env = file.env;
        env.extend(spec.env.clone());
        env.extend(spec.secrets.0.clone());
        let b = &spec.build;
        let f = file.build;
        Ok(Settings {
            build: BuildConfig {
                root: b.root.clone().or(f.root),
                install: b.install.clone().or(f.install),
                command: b.command.clone().or(f.command),
                output: b.output.clone().or(f.output),
                node: b.node.clone().or(f.node),
                cache: b.cache.or(f.cache),
                skip_unchanged: b.skip_unchanged.or(f.skip_unchanged),
            },
            site: SiteConfig {
                spa: spec.site.spa.or(file.site.spa),
                clean_urls: spec.site.clean_urls.or(file.site.clean_urls),
                require_index: spec.site.require_index.or(file.site.require_index),
            },
            rules: file.rules,
            runtime: file.runtime,
            env,
        })
    }
}
