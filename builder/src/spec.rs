//! What to build and where its events go.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use async_trait::async_trait;
use cdeploy_core::config::{self, BuildConfig, SiteConfig};
use cdeploy_core::event::{EventBody, Status, Step};

use crate::BuildError;

/// Where the source comes from.
#[derive(Debug, Clone)]
pub enum SourceSpec {
    Git {
        url: String,
        git_ref: Option<String>,
    },
    /// The storage key of an uploaded source's `source.json`.
    Upload { source_map_key: String },
}

/// One deployment to build. Settings given here win over the repository's `cdeploy.toml`.
#[derive(Debug, Clone)]
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
    pub timeout: Duration,
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
    /// `PATH` for build commands.
    pub path: String,
    pub sandbox: &'a crate::sandbox::Sandbox,
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
        let b = &spec.build;
        let f = file.build;
        Ok(Settings {
            build: BuildConfig {
                root: b.root.clone().or(f.root),
                install: b.install.clone().or(f.install),
                command: b.command.clone().or(f.command),
                output: b.output.clone().or(f.output),
            },
            site: SiteConfig {
                spa: spec.site.spa.or(file.site.spa),
                clean_urls: spec.site.clean_urls.or(file.site.clean_urls),
            },
            env,
        })
    }
}
