//! `cdeploy-conn`: the connections of cdeploy's HTTP servers (the proxy and the server's
//! API): a cap, timers counted from accept, and a fair way to degrade under a flood.
//!
//! hyper serves each connection; this crate decides which connections live:
//! * **Header timeout** — a connection that has not delivered a complete request head
//!   within `header_timeout` of being accepted is closed (silent and byte-trickling
//!   "slowloris" clients alike); a later head, within `header_timeout` of its first byte.
//! * **Idle timeout** — between keep-alive requests (HTTP/1.1) or with no open stream
//!   (HTTP/2) a connection may idle for `idle_timeout`; HTTP/2 also pings idle peers.
//!   The next request's head must be complete within it too: bytes trickling in do not
//!   extend it.
//! * **Stall timeout** — while a request runs, some bytes must move (request body in,
//!   response out) at least every `idle_timeout`: a client that stops reading a large
//!   response, or stops sending its upload, is closed (nginx's `send_timeout` and
//!   `client_body_timeout`), so slow readers cannot hold connections for ever.
//! * **Cap** — at most `max_connections` at once, never more than the process's open
//!   file limit allows (less a reserve for storage, the database, logs and builds). At
//!   the cap, or when `accept` fails for lack of descriptors, the connection idle the
//!   longest (waiting for a request, or kept alive between requests) is closed to make
//!   room, as nginx does with its "reusable" connections; a request in progress is never
//!   cut. Only when every connection is busy is the new one refused.
//!
//! Sheds, refusals and accept errors are counted and logged at most once per 10 s.
//!
//! # Layout
//! * `settings` — [`ConnSettings`] and the open-file budget ([`fd_budget`]).
//! * `conns` — [`Conns`]: the table of open connections, admission and shedding, each
//!   connection's deadline, the pressure report.
//! * `track` — how a connection's activity is seen: requests in progress (a guard
//!   carried by the response body) and bytes moving on the socket.
//! * `serve` — [`serve`]: the accept loop, one task per connection with its timers, and
//!   the graceful drain; [`ConnService`], what a server plugs into it; [`serve_on`]
//!   and [`Handshake`], a TLS listener's handshake under the same timers.
//! * `workers` — [`Workers`]: serving threads, each with a runtime of its own, that
//!   serve a listener's connections start to finish ([`serve_on`]).
//! * `sendfile` — [`send_from_file`]: large response bodies sent from their file with
//!   `sendfile(2)`, not copied, when a server says which file holds a buffer's bytes.
//! * `ready` — [`write_ready_file`]: the bound addresses, for `--listen …:0`.
#![forbid(unsafe_code)]

mod conns;
mod memory;
mod ready;
mod sendfile;
mod serve;
mod settings;
mod track;
mod workers;

pub use conns::{coarse_ms, Conns};
pub use memory::no_transparent_huge_pages;
pub use ready::write_ready_file;
pub use sendfile::{forget_files, send_from_file, SendFile, MIN_SENDFILE};
pub use serve::{serve, serve_on, ConnService, Handshake, Plain, ProgressIo};
pub use settings::{fd_budget, ConnSettings};
pub use workers::Workers;
