//! The operations behind the API, with no HTTP in them: what creating, cancelling or
//! deleting a deployment does, how an upload is stored, what a forge's delivery
//! decides. The API's handlers are one caller, the webhook and deploy-hook paths
//! another; each operation answers with [`Error`], which the API turns into a status.
//!
//! Below this layer: the store ([`crate::db`]), the log bus (`cdeploy_logbus`), storage,
//! the dispatcher ([`crate::dispatch`]) and the deployment [`crate::lifecycle`].
//!
//! # Layout
//! * [`app`] — [`App`]: the settings and the services every operation may use.
//! * [`error`] — [`Error`] and its [`Kind`].
//! * [`limits`] — rate limiters (per token, per failing address) and memory budgets.
//! * [`validate`] — checks of slugs, git URLs and refs, hashes.
//! * [`projects`] — finding a project, its JSON view, deleting what storage holds of a
//!   deployment, stopping a project's builds.
//! * [`deployments`] — creating one (validated, recorded, queued), cancelling one, the
//!   spec its builder gets.
//! * [`blobs`] — storing uploaded files and batches, spooling a body, checking a file list.
//! * [`keyring`] — the operator's keys: sealing and opening stored values, rotation.
//! * [`secrets`] — a project's env values: limits, writes, reads, a build's secrets.
//! * [`git`] — push deploys: forge payloads, the decision a delivery makes, carrying it out.
//! * [`protection`] — preview protection records in storage, sealed.
//! * [`route`] — what a deployment answers at a path, explained (`inspect --route`).
//! * [`diff`] — two ready deployments compared (`cdeploy diff`).
//! * [`domains`] — custom domains: adding (and moving), DNS records, removing, reports.
//! * [`gc`] — garbage collection of deployments, blobs, logs and audit entries.
//! * [`notify`] — a project's notification endpoints and their deliveries; the
//!   events a change of production makes.
//! * [`oidc`] — trusted publishing: trusts in CI issuers, identity tokens traded for
//!   deploy tokens.
//! * [`sessions`] — dashboard sessions: signing in with a token or a one-time link,
//!   the session a cookie names, signing out.

pub mod app;
pub mod blobs;
pub mod deployments;
pub mod diff;
pub mod domains;
pub mod error;
pub mod gc;
pub mod git;
pub mod keyring;
pub mod limits;
pub mod notify;
pub mod oidc;
pub mod projects;
pub mod protection;
pub mod route;
pub mod secrets;
pub mod sessions;
pub mod validate;

pub use app::App;
pub use error::{Error, Kind, Result};
