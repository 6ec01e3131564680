// SPDX-License-Identifier: GPL-2.0-or-later
//! `asbb-admin serve`: an HTTP/1.1 JSON service over the ledger for the sister tools
//! (the cost advisor and the AWS burst launcher) and, over a unix socket, for users'
//! `asbb` (issue 5). axum on a current-thread tokio runtime; every ledger call runs on
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
//! out and the open connections capped (`[api]`, issue 17).

pub mod client;
mod conn;

use crate::core::config::{ApiRole, Config};
use crate::core::decisions::{Budget, BudgetError, Decision};
use crate::core::grants::report::ReportRange;
use crate::core::integration::{
    accounts_with_job_id, count_from_raw, money_from_raw, unknown_job, CostUpdate, Feedback, IntegrationError,
    MetricsSnapshot,
};
use crate::core::ledger::{Ledger, OpenMode};
use crate::core::money::Money;
use crate::render::{render, ReportFormat};
use crate::shape::RequestArgs;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{ConnectInfo, DefaultBodyLimit, Path as UrlPath, Query, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::Router;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Where to listen.
#[derive(Debug, Clone, Default)]
pub struct ServeOptions {
    pub listen: Option<SocketAddr>,
    pub socket: Option<PathBuf>,
    /// One line per request on stderr.
    pub log: bool,
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ServeError(pub String);

/// Who is calling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub role: ApiRole,
    /// Token name, or the peer's user name (or `uid<N>`).
    pub name: String,
    /// The peer's uid on the unix socket.
    pub uid: Option<u32>,
}

// ----- errors ------------------------------------------------------------------------------

#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    fn new(status: u16, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            code,
            message: message.into(),
        }
    }

    fn bad_body(message: impl Into<String>) -> ApiError {
        ApiError::new(400, "invalid_body", message)
    }

    fn forbidden(message: impl Into<String>) -> ApiError {
        ApiError::new(403, "forbidden", message)
    }
}

impl From<IntegrationError> for ApiError {
    fn from(e: IntegrationError) -> ApiError {
        // HTTP belongs here, at the edge: core says what went wrong, not how HTTP says it.
        let status = match &e {
            IntegrationError::UnknownJob(_) | IntegrationError::UnknownAccount(_) => 404,
            IntegrationError::AmbiguousJob(_)
            | IntegrationError::NotSettled(_)
            | IntegrationError::NotPriced(_)
            | IntegrationError::Conflict(_) => 409,
            IntegrationError::Invalid(_) => 422,
            IntegrationError::Budget(b) if b.is_ledger() => 503,
            IntegrationError::Budget(_) => 500,
        };
        ApiError::new(status, e.code(), e.to_string())
    }
}

impl From<BudgetError> for ApiError {
    fn from(e: BudgetError) -> ApiError {
        IntegrationError::from(e).into()
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({"error": {"code": self.code, "message": self.message}});
        let mut r = (self.status, axum::Json(body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            r.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"asbb\""));
        }
        r
    }
}

type ApiResult = Result<Response, ApiError>;

fn ok_json(v: Value) -> ApiResult {
    Ok(axum::Json(v).into_response())
}

// ----- shared state --------------------------------------------------------------------------

pub struct Shared {
    config: Config,
    /// Opened on first use and reopened after a ledger error.
    budget: Mutex<Option<Budget>>,
    tokens: Vec<([u8; 32], String, ApiRole)>,
    ledger_owner: Option<u32>,
    log: bool,
    requests: [AtomicU64; 5],
}

pub type AppState = Arc<Shared>;

impl Shared {
    /// Runs `f` on the ledger on the blocking pool.
    async fn with_budget<T, F>(self: &Arc<Self>, f: F) -> Result<T, ApiError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Budget, i64) -> Result<T, ApiError> + Send + 'static,
    {
        let me = Arc::clone(self);
        tokio::task::spawn_blocking(move || {
            let mut guard = me.budget.lock().unwrap_or_else(|p| p.into_inner());
            if guard.is_none() {
                let c = &me.config;
                let ledger =
                    Ledger::open(&c.ledger_path, OpenMode::MustExist, c.policy.ledger_busy_timeout_ms.max(1000))
                        .map_err(|e| ApiError::new(503, "ledger_unavailable", e.to_string()))?;
                *guard = Some(Budget::with_ledger(c.clone(), ledger));
            }
            let budget = guard.as_mut().expect("opened above");
            let now = crate::system::now().map_err(|e| ApiError::new(500, "internal", e))?;
            let out = f(budget, now);
            if let Err(e) = &out {
                if e.code == "ledger_unavailable" {
                    *guard = None;
                }
            }
            out
        })
        .await
        .map_err(|e| ApiError::new(500, "internal", format!("request failed: {e}")))?
    }
}

fn hex32(text: &str) -> Option<[u8; 32]> {
    if text.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

/// Equal without an early exit, so timing tells nothing about where they differ.
fn ct_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    let mut diff = 0u8;
    for i in 0..32 {
        diff |= a[i] ^ b[i];
    }
    std::hint::black_box(diff) == 0
}

/// The role of a bearer token, checking every configured hash.
fn token_caller(state: &Shared, token: &str) -> Option<Caller> {
    let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
    let mut found = None;
    for (hash, name, role) in &state.tokens {
        if ct_eq(hash, &digest) && found.is_none() {
            found = Some(Caller { role: *role, name: name.clone(), uid: None });
        }
    }
    found
}

fn peer_caller(state: &Shared, uid: u32) -> Caller {
    let name = crate::system::user_name(uid);
    let role = state.config.api.local_role(uid, name.as_deref(), state.ledger_owner);
    Caller { role, name: name.unwrap_or_else(|| format!("uid{uid}")), uid: Some(uid) }
}

// ----- authentication middleware ---------------------------------------------------------------

/// The caller a request's bearer token names: `Ok(None)` with no Authorization header,
/// 401 for a header that names no configured token.
fn bearer_caller(state: &Shared, req: &Request) -> Result<Option<Caller>, ApiError> {
    let Some(value) = req.headers().get(header::AUTHORIZATION) else {
        return Ok(None);
    };
    let token = value
        .to_str()
        .ok()
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
        .map(str::trim)
        .ok_or_else(|| ApiError::new(401, "unauthorized", "this endpoint needs `Authorization: Bearer <token>`"))?;
    token_caller(state, token).map(Some).ok_or_else(|| ApiError::new(401, "unauthorized", "the token is not valid"))
}

async fn tcp_auth(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let caller = match bearer_caller(&state, &req) {
        Ok(Some(c)) => c,
        Ok(None) => {
            return ApiError::new(401, "unauthorized", "this endpoint needs `Authorization: Bearer <token>`")
                .into_response()
        }
        Err(e) => return e.into_response(),
    };
    req.extensions_mut().insert(caller.clone());
    let mut res = next.run(req).await;
    res.extensions_mut().insert(caller);
    res
}

/// For `/metrics` over TCP: a token is optional, but one that is given must be valid.
async fn tcp_auth_optional(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let caller = match bearer_caller(&state, &req) {
        Ok(c) => c,
        Err(e) => return e.into_response(),
    };
    if let Some(c) = &caller {
        req.extensions_mut().insert(c.clone());
    }
    let mut res = next.run(req).await;
    if let Some(c) = caller {
        res.extensions_mut().insert(c);
    }
    res
}

/// The peer credentials of a unix-socket connection.
#[derive(Debug, Clone, Copy)]
pub struct PeerCred {
    pub uid: Option<u32>,
}

impl PeerCred {
    fn of(stream: &tokio::net::UnixStream) -> PeerCred {
        PeerCred { uid: stream.peer_cred().ok().map(|c| c.uid()) }
    }
}

async fn unix_auth(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<PeerCred>,
    mut req: Request,
    next: Next,
) -> Response {
    let Some(uid) = peer.uid else {
        return ApiError::new(401, "unauthorized", "cannot tell who is connecting").into_response();
    };
    let caller = peer_caller(&state, uid);
    req.extensions_mut().insert(caller.clone());
    let mut res = next.run(req).await;
    res.extensions_mut().insert(caller);
    res
}

async fn count_and_log(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let (method, uri) = (req.method().clone(), req.uri().path().to_string());
    let res = next.run(req).await;
    let caller = res.extensions().get::<Caller>().map(|c| format!("{} ({})", c.name, c.role.as_str()));
    let class = (res.status().as_u16() / 100).clamp(1, 5) as usize - 1;
    state.requests[class].fetch_add(1, Ordering::Relaxed);
    if state.log {
        eprintln!(
            "asbb-admin serve: {} {method} {uri} -> {} {}",
            crate::core::decisions::format_time(chrono::Utc::now().timestamp()),
            res.status().as_u16(),
            caller.unwrap_or_else(|| "-".into())
        );
    }
    res
}

// ----- the router ----------------------------------------------------------------------------------

/// The routes that need a caller (the transport's auth layer is added by the caller).
fn protected_routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/integration/performance-feedback", post(feedback))
        .route("/api/v1/integration/cost-update", post(cost_update))
        .route("/api/v1/integration/budget-context/{job_id}", get(budget_context))
        .route("/api/v1/budget/check", post(check))
        .route("/api/v1/accounts", get(accounts))
        .route("/api/v1/accounts/{account}", get(account))
        .route("/api/v1/accounts/{account}/members", get(members))
        .route("/api/v1/accounts/{account}/members/{user}", put(member_add).delete(member_remove))
        .route("/api/v1/grants/{number}/report", get(grant_report))
        .route("/api/v1/me", get(me))
        .route("/api/v1/me/jobs", get(my_jobs))
}

/// `/metrics`: anyone may scrape it; what it shows depends on the caller (the
/// transport's auth layer, optional over TCP, is added by the caller).
fn metrics_routes() -> Router<AppState> {
    Router::new().route("/metrics", get(metrics))
}

/// The public routes, the others (already behind their auth layer), and what every
/// request gets: the body limit, JSON 404/405, counting and logging.
fn with_public_routes(state: AppState, protected: Router<AppState>) -> Router {
    let limit = state.config.api.max_body_bytes as usize;
    Router::new()
        .route("/health", get(health))
        .merge(protected)
        .fallback(|| async { ApiError::new(404, "not_found", "no such endpoint; see README.md, Integration API") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(405, "method_not_allowed", "this endpoint does not take that method")
        })
        .layer(DefaultBodyLimit::max(limit))
        .layer(middleware::from_fn_with_state(state.clone(), count_and_log))
        .with_state(state)
}

/// Reads the request body within `[api] body_read_timeout_ms` (issue 17) and up to
/// `max_body_bytes`, before the handler runs (so a request that takes too long writes
/// nothing): 408 and the connection closed when it does not arrive in time.
async fn read_body_in_time(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let api = &state.config.api;
    let limit = api.max_body_bytes as usize;
    let too_large = || {
        ApiError::new(413, "payload_too_large", "the request body is over the size limit ([api] max_body_bytes)")
            .into_response()
    };
    let (parts, body) = req.into_parts();
    let declared = parts.headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return too_large();
    }
    let wait = std::time::Duration::from_millis(api.body_read_timeout_ms as u64);
    let bytes = match tokio::time::timeout(wait, collect_body(body, limit)).await {
        Ok(Ok(b)) => b,
        Ok(Err(None)) => return too_large(),
        Ok(Err(Some(why))) => {
            return ApiError::bad_body(format!("cannot read the request body: {why}")).into_response()
        }
        Err(_) => {
            let mut r = ApiError::new(
                408,
                "request_timeout",
                format!(
                    "the request body did not arrive within {} ms ([api] body_read_timeout_ms)",
                    api.body_read_timeout_ms
                ),
            )
            .into_response();
            r.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
            return r;
        }
    };
    next.run(Request::from_parts(parts, axum::body::Body::from(bytes))).await
}

/// The whole body, or `Err(None)` past `limit` bytes, `Err(Some(why))` when it broke off.
async fn collect_body(mut body: axum::body::Body, limit: usize) -> Result<Bytes, Option<String>> {
    use axum::body::HttpBody;
    let mut buf = Vec::new();
    while let Some(frame) = std::future::poll_fn(|cx| std::pin::Pin::new(&mut body).poll_frame(cx)).await {
        let frame = frame.map_err(|e| Some(e.to_string()))?;
        if let Ok(data) = frame.into_data() {
            if buf.len() + data.len() > limit {
                return Err(None);
            }
            buf.extend_from_slice(&data);
        }
    }
    Ok(Bytes::from(buf))
}

/// TCP: a bearer token names the caller.
pub fn tcp_router(state: AppState) -> Router {
    let p = protected_routes()
        .route_layer(middleware::from_fn_with_state(state.clone(), read_body_in_time))
        .route_layer(middleware::from_fn_with_state(state.clone(), tcp_auth))
        .merge(metrics_routes().route_layer(middleware::from_fn_with_state(state.clone(), tcp_auth_optional)));
    with_public_routes(state, p)
}

/// Unix socket: the peer's uid names the caller.
pub fn unix_router(state: AppState) -> Router {
    let p = protected_routes()
        .route_layer(middleware::from_fn_with_state(state.clone(), read_body_in_time))
        .merge(metrics_routes())
        .route_layer(middleware::from_fn_with_state(state.clone(), unix_auth));
    with_public_routes(state, p)
}

// ----- running ------------------------------------------------------------------------------------

/// A server running on its own thread (tests, and `serve` itself).
pub struct RunningServer {
    pub tcp: Option<SocketAddr>,
    pub socket: Option<PathBuf>,
    stop: Option<tokio::sync::watch::Sender<bool>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl RunningServer {
    /// Stops accepting, finishes requests in flight, removes the socket file.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(true);
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }

    /// Blocks until the server stops (SIGINT/SIGTERM when started by `serve`).
    pub fn wait(mut self) {
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for RunningServer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn is_loopback(addr: &SocketAddr) -> bool {
    addr.ip().is_loopback()
}

/// Binds (so errors are reported before anything runs) and starts serving on a thread.
pub fn start(config: Config, opts: ServeOptions) -> Result<RunningServer, ServeError> {
    let listen = opts.listen.or(config.api.listen);
    let socket = opts.socket.clone().or_else(|| config.api.socket.clone());
    let listen = match (listen, &socket) {
        (None, None) => Some(crate::core::config::DEFAULT_API_LISTEN.parse().expect("valid default")),
        (l, _) => l,
    };
    if let Some(l) = &listen {
        if !is_loopback(l) && !config.api.allow_non_loopback {
            return Err(ServeError(format!(
                "refusing to listen on {l}: it is not a loopback address; set [api] allow_non_loopback = true (and put TLS in front) to serve other hosts"
            )));
        }
    }
    if !config.ledger_path.exists() {
        return Err(ServeError(format!(
            "ledger {} does not exist; create it with `asbb-admin account create`",
            config.ledger_path.display()
        )));
    }
    // Check the ledger opens (and is migrated) before taking requests.
    Ledger::open(&config.ledger_path, OpenMode::MustExist, 1000).map_err(|e| ServeError(e.to_string()))?;
    let ledger_owner = {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(&config.ledger_path).ok().map(|m| m.uid())
    };
    let mut tokens = Vec::new();
    for t in &config.api.tokens {
        let h = hex32(&t.sha256).ok_or_else(|| ServeError(format!("api.tokens.{}: bad sha256", t.name)))?;
        tokens.push((h, t.name.clone(), t.role));
    }
    let limits = conn::ConnLimits {
        header_read: std::time::Duration::from_millis(config.api.header_read_timeout_ms as u64),
        idle: std::time::Duration::from_millis(config.api.idle_timeout_ms as u64),
    };
    let max_connections = config.api.max_connections;
    let state = Arc::new(Shared {
        config,
        budget: Mutex::new(None),
        tokens,
        ledger_owner,
        log: opts.log,
        requests: Default::default(),
    });

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()
        .map_err(|e| ServeError(format!("cannot start the runtime: {e}")))?;
    let tcp_listener = match listen {
        Some(addr) => Some(
            rt.block_on(tokio::net::TcpListener::bind(addr))
                .map_err(|e| ServeError(format!("cannot listen on {addr}: {e}")))?,
        ),
        None => None,
    };
    let tcp_addr = tcp_listener.as_ref().and_then(|l| l.local_addr().ok());
    let unix_listener = match &socket {
        Some(path) => Some(rt.block_on(async { bind_socket(path) })?),
        None => None,
    };
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let socket_path = socket.clone();
    let thread = std::thread::Builder::new()
        .name("asbb-api".into())
        .spawn(move || {
            rt.block_on(async move {
                let tcp = tcp_listener.map(|l| (l, tcp_router(state.clone())));
                let unix = unix_listener.map(|l| (l, unix_router(state.clone())));
                conn::serve(tcp, unix, max_connections, limits, stop_rx).await;
            });
            if let Some(p) = socket_path {
                crate::core::safe_fs::remove_own_socket(&p);
            }
        })
        .map_err(|e| ServeError(format!("cannot start the server thread: {e}")))?;
    Ok(RunningServer { tcp: tcp_addr, socket, stop: Some(stop_tx), thread: Some(thread) })
}

/// Binds the unix socket, replacing a stale one (nothing answering) but never a live
/// server's, and opens it to every local user: the peer's uid decides what they may do.
/// No symlink is followed (see `safe_fs::bind_unix_socket`).
fn bind_socket(path: &Path) -> Result<tokio::net::UnixListener, ServeError> {
    let l = crate::core::safe_fs::bind_unix_socket(path).map_err(ServeError)?;
    l.set_nonblocking(true).map_err(|e| ServeError(format!("cannot listen on {}: {e}", path.display())))?;
    tokio::net::UnixListener::from_std(l).map_err(|e| ServeError(format!("cannot listen on {}: {e}", path.display())))
}

/// `asbb-admin serve`: runs until SIGINT or SIGTERM.
pub fn serve_forever(config: Config, opts: ServeOptions) -> Result<String, ServeError> {
    let server = start(config, opts)?;
    let mut where_ = Vec::new();
    if let Some(a) = server.tcp {
        where_.push(format!("http://{a}"));
    }
    if let Some(s) = &server.socket {
        where_.push(format!("unix:{}", s.display()));
    }
    eprintln!("asbb-admin serve: listening on {}", where_.join(" and "));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .map_err(|e| ServeError(format!("cannot start the runtime: {e}")))?;
    rt.block_on(async {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).map_err(|e| ServeError(e.to_string()))?;
        let mut int = signal(SignalKind::interrupt()).map_err(|e| ServeError(e.to_string()))?;
        tokio::select! {
            _ = term.recv() => {},
            _ = int.recv() => {},
        }
        Ok::<(), ServeError>(())
    })?;
    server.stop();
    Ok("asbb-admin serve: stopped\n".to_string())
}

// ----- request helpers ---------------------------------------------------------------------------

fn caller_of(req_caller: Option<axum::Extension<Caller>>) -> Result<Caller, ApiError> {
    req_caller.map(|c| c.0).ok_or_else(|| ApiError::new(401, "unauthorized", "no caller"))
}

fn require(c: &Caller, role: ApiRole) -> Result<(), ApiError> {
    if c.role >= role {
        Ok(())
    } else {
        Err(ApiError::forbidden(format!("{} has role {}; this needs {}", c.name, c.role.as_str(), role.as_str())))
    }
}

fn body_of(body: Result<Bytes, BytesRejection>) -> Result<Bytes, ApiError> {
    body.map_err(|r| {
        if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(413, "payload_too_large", "the request body is over the size limit ([api] max_body_bytes)")
        } else {
            ApiError::bad_body(r.body_text())
        }
    })
}

fn parse_body<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, ApiError> {
    if bytes.is_empty() {
        return Err(ApiError::bad_body("the request needs a JSON body"));
    }
    serde_json::from_slice(bytes).map_err(|e| {
        let code = if e.is_syntax() || e.is_eof() { "malformed_json" } else { "invalid_body" };
        ApiError::new(400, code, e.to_string())
    })
}

fn path_of<T>(p: Result<UrlPath<T>, PathRejection>) -> Result<T, ApiError> {
    p.map(|p| p.0).map_err(|r| ApiError::new(400, "invalid_path", r.body_text()))
}

fn query_of<T>(q: Result<Query<T>, QueryRejection>) -> Result<T, ApiError> {
    q.map(|q| q.0).map_err(|r| ApiError::new(400, "invalid_query", r.body_text()))
}

fn job_id_of(text: &str) -> Result<u32, ApiError> {
    text.parse::<u32>()
        .ok()
        .filter(|_| text.chars().all(|c| c.is_ascii_digit()))
        .ok_or_else(|| ApiError::new(400, "invalid_job_id", format!("'{text}' is not a SLURM job id")))
}

fn invalid(e: IntegrationError) -> ApiError {
    e.into()
}

/// May `caller` read `account`? `user`s only their own.
fn check_account_access(budget: &mut Budget, caller: &Caller, account: &str) -> Result<(), ApiError> {
    if caller.role >= ApiRole::Read {
        return Ok(());
    }
    let uid = caller.uid.ok_or_else(|| ApiError::forbidden("no uid"))?;
    let mine = budget.accounts_of_user(uid, Some(&caller.name))?;
    if mine.iter().any(|a| a == account) {
        Ok(())
    } else {
        Err(ApiError::forbidden(format!(
            "{} may read only accounts they run jobs in or are a member of; account '{}' is not one",
            caller.name,
            crate::core::text::clean_text(account)
        )))
    }
}

// ----- handlers: public -------------------------------------------------------------------------

async fn health(State(state): State<AppState>) -> ApiResult {
    let r = state
        .with_budget(|b, _| {
            b.ledger.schema_version().map_err(|e| ApiError::new(503, "ledger_unavailable", e.to_string()))
        })
        .await;
    match r {
        Ok(v) => ok_json(json!({"status": "ok", "ledger": "ok", "schema_version": v})),
        Err(e) => Ok((
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(
                json!({"status": "unavailable", "ledger": e.message, "error": {"code": e.code, "message": e.message}}),
            ),
        )
            .into_response()),
    }
}

/// Prometheus text. Everyone gets totals over all accounts and the service's health;
/// callers with role `read` or more (a token, or a socket peer with that role) also get
/// each account's figures. Every figure is a maintained total (see `MetricsSnapshot`).
async fn metrics(State(state): State<AppState>, caller: Option<axum::Extension<Caller>>) -> ApiResult {
    let per_account = caller.is_some_and(|c| c.role >= ApiRole::Read);
    let snap =
        state.with_budget(move |b, now| Ok((b.metrics_snapshot(per_account).map_err(ApiError::from)?, now))).await;
    let counts: Vec<u64> = state.requests.iter().map(|c| c.load(Ordering::Relaxed)).collect();
    let text = render_metrics(snap.as_ref().ok().map(|(s, n)| (s, *n)), &counts);
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], text).into_response())
}

/// A label value in the Prometheus text format.
fn label_value(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// Prometheus text exposition. Per-account series only when the snapshot has them.
pub fn render_metrics(snap: Option<(&MetricsSnapshot, i64)>, requests: &[u64]) -> String {
    let mut out = String::new();
    let mut metric = |name: &str, kind: &str, help: &str, samples: Vec<(String, String)>| {
        out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n"));
        for (labels, v) in samples {
            out.push_str(&format!("{name}{labels} {v}\n"));
        }
    };
    let dollars = |m: i64| Money::from_micros(m).to_exact_string();
    let one = |v: String| vec![(String::new(), v)];
    metric(
        "asbb_ledger_up",
        "gauge",
        "1 when the ledger answered this scrape, 0 when it did not.",
        one(if snap.is_some() { "1" } else { "0" }.into()),
    );
    if let Some((s, now)) = snap {
        metric(
            "asbb_jobs",
            "gauge",
            "Jobs in the ledger by state: held (accepted, funds held), awaiting_approval/awaiting_funds (submitted held), settled, released, denied. Refusals write nothing to the ledger and are not counted.",
            s.jobs_by_state.iter().map(|(st, n)| (format!("{{state=\"{}\"}}", label_value(st)), n.to_string())).collect(),
        );
        metric("asbb_holds_open", "gauge", "Jobs holding money, all accounts.", one(s.holds_open.to_string()));
        metric(
            "asbb_holds_open_dollars",
            "gauge",
            "Money held by open holds, all accounts.",
            one(dollars(s.holds_open_micros)),
        );
        metric(
            "asbb_reconcile_lag_seconds",
            "gauge",
            "Age of the oldest open hold (0 when none): how far behind reconciliation could be.",
            one(s.oldest_open_hold_at.map_or(0, |t| (now - t).max(0)).to_string()),
        );
        metric(
            "asbb_runs_without_hold",
            "gauge",
            "Runs charged with no asbb hold behind them: the submit hook did not price the job (ledger unavailable with on_ledger_error = accept, or submitted before asbb). The plugins log their errors to slurmctld's log; this is the trace they leave in the ledger.",
            one(s.runs_without_hold.to_string()),
        );
        metric(
            "asbb_cost_updates",
            "gauge",
            "Actual-cost updates recorded (API and imports).",
            one(s.cost_updates.to_string()),
        );
        metric("asbb_performance_feedback", "gauge", "Performance feedback records.", one(s.feedback.to_string()));
        metric(
            "asbb_learning_samples",
            "gauge",
            "Estimate-vs-actual samples (reconciled runs and feedback).",
            one(s.learning_samples.to_string()),
        );
        if let Some(accounts) = &s.accounts {
            let per = |f: &dyn Fn(&crate::core::integration::AccountMetrics) -> String| -> Vec<(String, String)> {
                accounts.iter().map(|a| (format!("{{account=\"{}\"}}", label_value(&a.name)), f(a))).collect()
            };
            metric(
                "asbb_account_holds_open",
                "gauge",
                "Jobs holding money, per account.",
                per(&|a| a.holds_open.to_string()),
            );
            metric(
                "asbb_account_holds_open_dollars",
                "gauge",
                "Money held by open holds, per account.",
                per(&|a| dollars(a.held_micros)),
            );
            metric(
                "asbb_account_charged_dollars",
                "gauge",
                "Net charged per account: charges - refunds + adjustments (all time).",
                per(&|a| dollars(a.charged_micros)),
            );
        }
    }
    metric(
        "asbb_api_requests_total",
        "counter",
        "Requests this server answered, by status class.",
        requests.iter().enumerate().map(|(i, n)| (format!("{{status=\"{}xx\"}}", i + 1), n.to_string())).collect(),
    );
    out
}

// ----- handlers: integration --------------------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FeedbackBody {
    job_id: Box<RawValue>,
    #[serde(default)]
    cluster: Option<String>,
    estimated_cost: Box<RawValue>,
    actual_cost: Box<RawValue>,
    estimated_duration: Box<RawValue>,
    actual_duration: Box<RawValue>,
    #[serde(default)]
    performance_rating: Option<Box<RawValue>>,
    #[serde(default)]
    optimization_hints: Option<Value>,
}

/// Seconds: a whole or decimal number (or its string), rounded half up to whole seconds.
fn seconds_from_raw(raw: &RawValue, field: &str) -> Result<u64, ApiError> {
    let m = money_from_raw(raw, field).map_err(invalid)?;
    Ok(((m.micros() as i128 + 500_000) / 1_000_000) as u64)
}

fn job_id_from_raw(raw: &RawValue) -> Result<u32, ApiError> {
    Ok(count_from_raw(raw, "job_id", u32::MAX as u64).map_err(invalid)? as u32)
}

async fn feedback(
    State(state): State<AppState>,
    caller: Option<axum::Extension<Caller>>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let caller = caller_of(caller)?;
    require(&caller, ApiRole::Integration)?;
    let bytes = body_of(body)?;
    let b: FeedbackBody = parse_body(&bytes)?;
    let rating = match &b.performance_rating {
        None => None,
        Some(r) if r.get().trim() == "null" => None,
        Some(r) => {
            let text = r.get().trim();
            let s = if text.starts_with('"') {
                serde_json::from_str::<String>(text).map_err(|e| ApiError::bad_body(e.to_string()))?
            } else {
                money_from_raw(r, "performance_rating").map_err(invalid)?;
                text.to_string()
            };
            if s.len() > 64 || s.chars().any(char::is_control) {
                return Err(ApiError::new(422, "invalid", "performance_rating: at most 64 printable characters"));
            }
            Some(s)
        }
    };
    let f = Feedback {
        cluster: b.cluster,
        job_id: job_id_from_raw(&b.job_id)?,
        estimated_cost: money_from_raw(&b.estimated_cost, "estimated_cost").map_err(invalid)?,
        actual_cost: money_from_raw(&b.actual_cost, "actual_cost").map_err(invalid)?,
        estimated_duration_s: seconds_from_raw(&b.estimated_duration, "estimated_duration")?,
        actual_duration_s: seconds_from_raw(&b.actual_duration, "actual_duration")?,
        performance_rating: rating,
        optimization_hints: b.optimization_hints,
    };
    let name = caller.name.clone();
    let out = state.with_budget(move |bud, now| Ok(bud.record_feedback(&f, &name, now)?)).await?;
    ok_json(serde_json::to_value(out).unwrap_or_default())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CostDataBody {
    actual_cost: Box<RawValue>,
    #[serde(default)]
    compute_cost: Option<Box<RawValue>>,
    #[serde(default)]
    storage_cost: Option<Box<RawValue>>,
    #[serde(default)]
    network_cost: Option<Box<RawValue>>,
    #[serde(default)]
    spot_savings: Option<Box<RawValue>>,
    #[serde(default)]
    instance_types: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CostUpdateBody {
    job_id: Box<RawValue>,
    #[serde(default)]
    cluster: Option<String>,
    #[serde(default)]
    performance_data: Option<Value>,
    cost_data: CostDataBody,
    #[serde(default)]
    metadata: Option<Value>,
}

async fn cost_update(
    State(state): State<AppState>,
    caller: Option<axum::Extension<Caller>>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let caller = caller_of(caller)?;
    require(&caller, ApiRole::Integration)?;
    // The source (the adjustment's idempotency key) is who is calling, never what the
    // body says; the import's source is reserved (and refused as a token name).
    if crate::core::config::is_import_source(&caller.name) {
        return Err(ApiError::forbidden(format!(
            "'{}' is the source of `asbb-admin integration import-costs`; no API caller may post as it",
            crate::core::text::clean_text(&caller.name)
        )));
    }
    let bytes = body_of(body)?;
    let b: CostUpdateBody = parse_body(&bytes)?;
    let opt = |r: &Option<Box<RawValue>>, f: &str| -> Result<Option<Money>, ApiError> {
        r.as_deref().map(|r| money_from_raw(r, f).map_err(invalid)).transpose()
    };
    let u = CostUpdate {
        cluster: b.cluster,
        job_id: job_id_from_raw(&b.job_id)?,
        source: caller.name.clone(),
        actual: money_from_raw(&b.cost_data.actual_cost, "cost_data.actual_cost").map_err(invalid)?,
        compute: opt(&b.cost_data.compute_cost, "cost_data.compute_cost")?,
        storage: opt(&b.cost_data.storage_cost, "cost_data.storage_cost")?,
        network: opt(&b.cost_data.network_cost, "cost_data.network_cost")?,
        spot_savings: opt(&b.cost_data.spot_savings, "cost_data.spot_savings")?,
        instance_types: b.cost_data.instance_types,
        performance: b.performance_data,
        metadata: b.metadata,
        expect_account: None,
        expect_partition: None,
    };
    let name = caller.name.clone();
    let out = state.with_budget(move |bud, now| Ok(bud.apply_cost_update(&u, &name, now)?)).await?;
    ok_json(serde_json::to_value(out).unwrap_or_default())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ClusterQuery {
    cluster: Option<String>,
}

async fn budget_context(
    State(state): State<AppState>,
    caller: Option<axum::Extension<Caller>>,
    job_id: Result<UrlPath<String>, PathRejection>,
    q: Result<Query<ClusterQuery>, QueryRejection>,
) -> ApiResult {
    let caller = caller_of(caller)?;
    let job_id = job_id_of(&path_of(job_id)?)?;
    let q = query_of(q)?;
    let out = state
        .with_budget(move |b, now| {
            let cluster = q.cluster.as_deref();
            if caller.role >= ApiRole::Read {
                return Ok(b.budget_context(cluster, job_id, now)?);
            }
            // A user sees jobs in their accounts; any other job id gets the answer an
            // unknown one gets, so it tells them nothing about other accounts' jobs.
            let mine = b.accounts_of_user(caller.uid.unwrap_or(u32::MAX), Some(&caller.name))?;
            let candidates = accounts_with_job_id(&b.ledger.conn, cluster, job_id)?;
            if !candidates.iter().any(|a| mine.contains(a)) {
                return Err(unknown_job(cluster, job_id).into());
            }
            let ctx = b.budget_context(cluster, job_id, now)?;
            if !mine.contains(&ctx.account.name) {
                return Err(unknown_job(cluster, job_id).into());
            }
            Ok(ctx)
        })
        .await?;
    ok_json(serde_json::to_value(out).unwrap_or_default())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CheckBody {
    account: String,
    partition: String,
    #[serde(default = "one")]
    nodes: u32,
    #[serde(default)]
    cpus: Option<u32>,
    #[serde(default)]
    cpus_per_node: Option<u32>,
    #[serde(default)]
    mem: Option<String>,
    #[serde(default)]
    mem_per_cpu: Option<String>,
    /// Memory for the whole job in MB (instead of mem / mem_per_cpu).
    #[serde(default)]
    mem_mb: Option<u64>,
    #[serde(default)]
    gpus: Option<u32>,
    #[serde(default)]
    gres: Option<String>,
    time: String,
    #[serde(default = "one")]
    array_tasks: u32,
    #[serde(default)]
    qos: Option<String>,
    #[serde(default)]
    user: Option<String>,
}

fn one() -> u32 {
    1
}

fn decision_json(d: &Decision, hold: Option<Money>) -> Value {
    let ex = |m: &Money| m.to_exact_string();
    match d {
        Decision::Accept { estimate, available_after, .. } => json!({
            "decision": "accept", "estimate": ex(estimate), "hold": hold.as_ref().map(ex),
            "available_after": ex(available_after), "fits": true,
        }),
        Decision::Hold { estimate, reason, .. } => json!({
            "decision": "hold", "estimate": ex(estimate), "reason": reason, "fits": false,
        }),
        Decision::Reject { reason, estimate, .. } => json!({
            "decision": "reject", "estimate": estimate.as_ref().map(ex), "reason": reason, "fits": false,
        }),
        Decision::Exempt { reason } => json!({"decision": "exempt", "reason": reason, "fits": true}),
    }
}

async fn check(
    State(state): State<AppState>,
    caller: Option<axum::Extension<Caller>>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult {
    let caller = caller_of(caller)?;
    if caller.role != ApiRole::User {
        require(&caller, ApiRole::Integration)?;
    }
    let bytes = body_of(body)?;
    let b: CheckBody = parse_body(&bytes)?;
    let args = RequestArgs {
        partition: Some(b.partition),
        nodes: b.nodes,
        cpus_per_node: b.cpus_per_node,
        cpus: b.cpus,
        mem: b.mem,
        mem_per_cpu: b.mem_per_cpu,
        gpus: b.gpus,
        gres: b.gres,
        time: b.time,
        array_tasks: b.array_tasks,
        qos: b.qos,
    };
    if args.cpus.is_some() && args.cpus_per_node.is_some() {
        return Err(ApiError::new(422, "invalid", "give cpus or cpus_per_node, not both"));
    }
    if b.mem_mb.is_some() && (args.mem.is_some() || args.mem_per_cpu.is_some()) {
        return Err(ApiError::new(422, "invalid", "give one of mem, mem_per_cpu or mem_mb"));
    }
    let (user, uid) = match (caller.role, caller.uid) {
        (ApiRole::User, Some(uid)) => (caller.name.clone(), uid),
        _ => (b.user.clone().unwrap_or_else(|| caller.name.clone()), caller.uid.unwrap_or(0)),
    };
    let mut req = args.to_request(&b.account, &user, uid).map_err(|e| ApiError::new(422, "invalid", e.0))?;
    if let Some(m) = b.mem_mb {
        req.resources.mem_mb = m;
        req.resources.validate().map_err(|e| ApiError::new(422, "invalid", e.to_string()))?;
    }
    let out = state
        .with_budget(move |bud, now| {
            check_account_access(bud, &caller, &req.account)?;
            let (decision, hold) = bud.check_quote(&req, now)?;
            let available = bud.balance(&req.account, now).ok().map(|b| b.available.to_exact_string());
            let mut v = decision_json(&decision, hold);
            v["account"] = json!(req.account);
            v["partition"] = json!(req.partition);
            v["available"] = json!(available);
            Ok(v)
        })
        .await?;
    ok_json(out)
}

async fn accounts(State(state): State<AppState>, caller: Option<axum::Extension<Caller>>) -> ApiResult {
    let caller = caller_of(caller)?;
    require(&caller, ApiRole::Read)?;
    let out = state
        .with_budget(move |b, now| {
            let names: Vec<String> = b.accounts()?.into_iter().map(|a| a.name).collect();
            let mut v = Vec::new();
            for n in names {
                let bal = b.balance(&n, now)?;
                v.push(serde_json::to_value(b.account_context(&bal, now)?).unwrap_or_default());
            }
            Ok(v)
        })
        .await?;
    ok_json(Value::Array(out))
}

async fn account(
    State(state): State<AppState>,
    caller: Option<axum::Extension<Caller>>,
    name: Result<UrlPath<String>, PathRejection>,
) -> ApiResult {
    let caller = caller_of(caller)?;
    let name = path_of(name)?;
    let out = state
        .with_budget(move |b, now| {
            check_account_access(b, &caller, &name)?;
            let bal = b.balance(&name, now)?;
            Ok(b.account_context(&bal, now)?)
        })
        .await?;
    ok_json(serde_json::to_value(out).unwrap_or_default())
}

async fn members(
    State(state): State<AppState>,
    caller: Option<axum::Extension<Caller>>,
    name: Result<UrlPath<String>, PathRejection>,
) -> ApiResult {
    let caller = caller_of(caller)?;
    require(&caller, ApiRole::Read)?;
    let name = path_of(name)?;
    let out = state.with_budget(move |b, _| Ok(b.members(&name)?)).await?;
    ok_json(serde_json::to_value(out).unwrap_or_default())
}

async fn member_add(
    State(state): State<AppState>,
    caller: Option<axum::Extension<Caller>>,
    p: Result<UrlPath<(String, String)>, PathRejection>,
) -> ApiResult {
    let caller = caller_of(caller)?;
    require(&caller, ApiRole::Admin)?;
    let (account, user) = path_of(p)?;
    let (user, uid) = crate::system::resolve_user(&user);
    let out = state
        .with_budget(move |b, now| {
            let added = b.add_member(&account, &user, uid, &caller.name, now)?;
            Ok(json!({"account": account, "user": user, "uid": uid, "applied": added}))
        })
        .await?;
    ok_json(out)
}

async fn member_remove(
    State(state): State<AppState>,
    caller: Option<axum::Extension<Caller>>,
    p: Result<UrlPath<(String, String)>, PathRejection>,
) -> ApiResult {
    let caller = caller_of(caller)?;
    require(&caller, ApiRole::Admin)?;
    let (account, user) = path_of(p)?;
    let (user, _) = crate::system::resolve_user(&user);
    let out = state
        .with_budget(move |b, now| {
            let removed = b.remove_member(&account, &user, &caller.name, now)?;
            Ok(json!({"account": account, "user": user, "applied": removed}))
        })
        .await?;
    ok_json(out)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReportQuery {
    format: Option<String>,
    period: Option<u32>,
}

async fn grant_report(
    State(state): State<AppState>,
    caller: Option<axum::Extension<Caller>>,
    number: Result<UrlPath<String>, PathRejection>,
    q: Result<Query<ReportQuery>, QueryRejection>,
) -> ApiResult {
    let caller = caller_of(caller)?;
    require(&caller, ApiRole::Read)?;
    let number = path_of(number)?;
    let q = query_of(q)?;
    let (format, ctype) = match q.format.as_deref().unwrap_or("json") {
        "json" => (ReportFormat::Json, "application/json"),
        "csv" => (ReportFormat::Csv, "text/csv; charset=utf-8"),
        "html" => (ReportFormat::Html, "text/html; charset=utf-8"),
        "agency-required" => (ReportFormat::AgencyRequired, "text/plain; charset=utf-8"),
        other => {
            return Err(ApiError::new(
                400,
                "invalid_query",
                format!("format '{}' is not json, csv, html or agency-required", crate::core::text::clean_text(other)),
            ))
        }
    };
    let range = match q.period {
        Some(p) => ReportRange::Period(p),
        None => ReportRange::Whole,
    };
    let text = state
        .with_budget(move |b, now| {
            let r = b.grant_report(&number, range, None, now).map_err(|e| match e {
                BudgetError::Invalid(m) if m.starts_with("unknown grant") => ApiError::new(404, "unknown_grant", m),
                other => other.into(),
            })?;
            Ok(render(&r, format))
        })
        .await?;
    Ok(([(header::CONTENT_TYPE, ctype)], text).into_response())
}

async fn me(State(state): State<AppState>, caller: Option<axum::Extension<Caller>>) -> ApiResult {
    let caller = caller_of(caller)?;
    let c2 = caller.clone();
    let out = state
        .with_budget(move |b, now| {
            let names: Vec<String> = if c2.role >= ApiRole::Read {
                b.accounts()?.into_iter().map(|a| a.name).collect()
            } else {
                b.accounts_of_user(c2.uid.unwrap_or(u32::MAX), Some(&c2.name))?
            };
            let mut v = Vec::new();
            for n in names {
                let bal = b.balance(&n, now)?;
                v.push(serde_json::to_value(b.account_context(&bal, now)?).unwrap_or_default());
            }
            Ok(v)
        })
        .await?;
    ok_json(json!({"user": caller.name, "uid": caller.uid, "role": caller.role.as_str(), "accounts": out}))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JobsQuery {
    limit: Option<u32>,
}

async fn my_jobs(
    State(state): State<AppState>,
    caller: Option<axum::Extension<Caller>>,
    q: Result<Query<JobsQuery>, QueryRejection>,
) -> ApiResult {
    let caller = caller_of(caller)?;
    let limit = query_of(q)?.limit.unwrap_or(20).min(1000);
    let name = caller.name.clone();
    let jobs = state.with_budget(move |b, _| Ok(b.recent_jobs(&name, limit)?)).await?;
    ok_json(serde_json::to_value(jobs).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_compare_by_hash() {
        let h: [u8; 32] = Sha256::digest(b"secret").into();
        assert!(ct_eq(&h, &h));
        let mut other = h;
        other[31] ^= 1;
        assert!(!ct_eq(&h, &other));
        let hex: String = h.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex32(&hex), Some(h));
        assert_eq!(hex32("zz"), None);
    }
}
