// SPDX-License-Identifier: GPL-2.0-or-later
//! The server: shared state and the one ledger handle, the routes and their layers
//! (auth per transport, body limits and read timeouts, counting and logging), and
//! starting and stopping (`asbb-admin serve`).

use super::auth::{hex32, tcp_auth, tcp_auth_optional, unix_auth, Caller};
use super::conn;
use super::handlers::*;
use super::metrics::metrics;
pub use super::state::{AppState, Shared};
use super::wire::ApiError;
use crate::core::config::Config;
use crate::core::decisions::BudgetHandle;
use crate::core::ledger::{Ledger, OpenMode};
use crate::system::Clock;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{header, HeaderValue};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::Router;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

/// Where to listen.
#[derive(Debug, Clone, Default)]
pub struct ServeOptions {
    pub listen: Option<SocketAddr>,
    pub socket: Option<PathBuf>,
    /// One line per request on stderr.
    pub log: bool,
    /// The time requests act at; `None` is [`crate::system::now`].
    pub clock: Option<Clock>,
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ServeError(pub String);

async fn count_and_log(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let (method, uri) = (req.method().clone(), req.uri().path().to_string());
    let res = next.run(req).await;
    let caller = res.extensions().get::<Caller>().map(|c| format!("{} ({})", c.name, c.role.as_str()));
    let class = (res.status().as_u16() / 100).clamp(1, 5) as usize - 1;
    state.requests[class].fetch_add(1, Ordering::Relaxed);
    if state.log {
        eprintln!(
            "asbb-admin serve: {} {method} {uri} -> {} {}",
            (state.clock)().map_or_else(|e| e, crate::core::decisions::format_time),
            res.status().as_u16(),
            caller.unwrap_or_else(|| "-".into())
        );
    }
    res
}

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
        .route("/api/v1/reports/usage", get(usage_report))
        .route("/api/v1/grants", get(grants))
        .route("/api/v1/grants/{number}", get(grant))
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

/// Reads the request body within `[api] body_read_timeout_ms` and up to
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
    if !crate::core::ledger::is_postgres_url(&config.ledger_path) && !config.ledger_path.exists() {
        return Err(ServeError(format!(
            "ledger {} does not exist; create it with `asbb-admin account create`",
            config.ledger_path.display()
        )));
    }
    // Check the ledger opens (and is migrated) before taking requests.
    Ledger::open(&config.ledger_path, OpenMode::MustExist, 1000).map_err(|e| ServeError(e.to_string()))?;
    let ledger_owner = crate::core::ledger::ledger_owner(&config.ledger_path);
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
    // A request waits at least a second for another writer (slurmctld's own waits are
    // bounded by `ledger_busy_timeout_ms`).
    let busy_timeout_ms = config.policy.ledger_busy_timeout_ms.max(1000);
    let state = Arc::new(Shared {
        ledger: Mutex::new(BudgetHandle::new(config.clone(), busy_timeout_ms, false)),
        config,
        tokens,
        ledger_owner,
        log: opts.log,
        clock: opts.clock.unwrap_or(crate::system::now),
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
    let clock = opts.clock.unwrap_or(crate::system::now);
    let for_alerts = config.alerts.clone().map(|cfg| (config.clone(), cfg));
    let server = start(config, opts)?;
    let alerts = for_alerts.map(|(config, cfg)| AlertLoop::start(config, cfg, clock));
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
    if let Some(a) = alerts {
        a.stop();
    }
    Ok("asbb-admin serve: stopped\n".to_string())
}

/// `[alerts]` under `serve`: a run at start, then one every `interval_minutes`, on a
/// thread of its own (webhooks and mail commands may take their whole timeout; the API
/// never waits for them). Stopping waits at most for the delivery being tried.
struct AlertLoop {
    stop: std::sync::mpsc::Sender<()>,
    stopping: Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<()>,
}

impl AlertLoop {
    fn start(mut config: Config, cfg: crate::core::config::AlertsConfig, clock: Clock) -> AlertLoop {
        // Not slurmctld: a run may wait a second for another writer.
        config.policy.ledger_busy_timeout_ms = config.policy.ledger_busy_timeout_ms.max(1000);
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let stopping = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stopping.clone();
        let interval = std::time::Duration::from_secs(cfg.interval_minutes as u64 * 60);
        let thread = std::thread::spawn(move || loop {
            // A panic in one run is reported and the next run goes on.
            let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                let now = clock()?;
                let mut budget = crate::core::decisions::Budget::open(config.clone(), OpenMode::MustExist)
                    .map_err(|e| e.to_string())?;
                crate::alerts::run(&mut budget, &cfg, now, &|| flag.load(Ordering::SeqCst)).map_err(|e| e.to_string())
            }))
            .unwrap_or_else(|_| Err("a run panicked; the next one will try again".to_string()));
            match outcome {
                Ok(s) if s.raised.is_empty() && s.failed.is_empty() && s.sent == 0 && s.cleared == 0 => {}
                Ok(s) => {
                    eprint!("{}", s.to_text().lines().map(|l| format!("asbb-admin serve: {l}\n")).collect::<String>())
                }
                Err(e) => eprintln!("asbb-admin serve: alerts: {e}"),
            }
            match stopped.recv_timeout(interval) {
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => continue,
                _ => break,
            }
        });
        AlertLoop { stop, stopping, thread }
    }

    fn stop(self) {
        self.stopping.store(true, Ordering::SeqCst);
        let _ = self.stop.send(());
        let _ = self.thread.join();
    }
}
