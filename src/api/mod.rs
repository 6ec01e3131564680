// SPDX-License-Identifier: GPL-2.0-or-later
//! `asbb-admin serve`: an HTTP/1.1 JSON service over the ledger for the sister tools
//! (the cost advisor and the AWS burst launcher) and, over a unix socket, for users'
//! `asbb`. axum on a current-thread tokio runtime; every ledger call runs on
//! the blocking pool behind one mutex (SQLite serializes writers anyway, and a write
//! here is one short transaction, so slurmctld's bounded lock wait is not exceeded).
//!
//! Who may do what:
//! - `/health` and `/metrics` answer anyone; `/metrics` shows per-account figures
//!   only to callers with role `read` or more, anyone else gets totals.
//! - Over TCP everything else needs `Authorization: Bearer <token>`; tokens are
//!   configured as SHA-256 hashes (`[[api.tokens]]`) and compared in constant time.
//! - Over the unix socket the peer's uid decides: root and the ledger file's owner are
//!   `admin`, `[[api.peers]]` give listed users their role, anyone else is `user`, who
//!   may read only the accounts they ran jobs in or were made a member of, and quote
//!   jobs for them.
//! - `read` may GET, `integration` may also POST feedback, cost updates and checks,
//!   `admin` may do everything (including managing account members).
//!
//! Every error is `{"error": {"code": "...", "message": "..."}}` with a 4xx/5xx status,
//! and a request that fails writes nothing.
//!
//! Connections are served by `conn`: headers, bodies and idle connections are timed
//! out and the open connections capped (`[api]`).
//!
//! The files: `server` (routes, start and stop), `state` (what requests share, the
//! one ledger handle), `auth` (who is calling and the
//! [`Authed`](auth) extractor), `handlers` (the endpoints), `metrics`, `wire` (errors,
//! HTTP statuses, extractors, exact JSON numbers), `conn` (connection limits) and
//! `client` (what `asbb` uses to call the socket).

mod auth;
pub mod client;
mod conn;
mod handlers;
mod metrics;
mod server;
mod state;
mod wire;

pub use auth::{Caller, PeerCred};
pub use metrics::render_metrics;
pub use server::{serve_forever, start, tcp_router, unix_router, AppState, RunningServer, ServeError, ServeOptions};
