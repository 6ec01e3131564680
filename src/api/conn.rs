// SPDX-License-Identifier: GPL-2.0-or-later
//! Serving connections within limits: a local user must not be able to hold
//! the service's connections (and file descriptors) open by sending half a request.
//!
//! Each accepted connection is served by hyper's HTTP/1 connection with a watchdog that
//! closes it when its current phase has lasted too long:
//! - reading a request head (from the accept, or from the first byte of a further
//!   request on a kept-alive connection): `header_read_timeout`;
//! - idle (the last response handed to the socket, no byte of the next request yet;
//!   this also bounds a response the client does not read): `idle_timeout`;
//! - a request in the service has no deadline here: its body is read within
//!   `[api] body_read_timeout_ms` by the router (408), and its ledger work is short.
//!
//! At most `max_connections` connections are open, over every listener together. When
//! they are all taken the listeners stop accepting: further clients wait in the
//! kernel's listen queue, holding no descriptor of ours, and are accepted (and served)
//! as connections close, which the timeouts make sure they do.

use super::PeerCred;
use axum::body::{Body, Bytes, HttpBody};
use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::{Frame, Incoming, SizeHint};
use hyper::service::Service as _;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use std::convert::Infallible;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{watch, Notify, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

/// How long a connection may stay in each phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnLimits {
    pub header_read: Duration,
    pub idle: Duration,
}

#[derive(Debug, Clone, Copy)]
enum Phase {
    /// Waiting for or reading a request head since then.
    Head(Instant),
    /// Requests in the service (their responses not yet handed over).
    Busy(usize),
    /// Nothing to do since then.
    Idle(Instant),
}

/// A connection's phase, shared by its socket wrapper, its service and its watchdog.
struct Clock {
    phase: Mutex<Phase>,
    changed: Notify,
    limits: ConnLimits,
}

impl Clock {
    fn new(limits: ConnLimits) -> Clock {
        Clock { phase: Mutex::new(Phase::Head(Instant::now())), changed: Notify::new(), limits }
    }

    fn with_phase(&self, f: impl FnOnce(&mut Phase)) {
        let mut p = self.phase.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut p);
        drop(p);
        self.changed.notify_one();
    }

    fn deadline(&self) -> Option<Instant> {
        match *self.phase.lock().unwrap_or_else(|e| e.into_inner()) {
            Phase::Head(t) => Some(t + self.limits.header_read),
            Phase::Busy(_) => None,
            Phase::Idle(t) => Some(t + self.limits.idle),
        }
    }

    /// Bytes arrived: on an idle connection, a request has begun.
    fn bytes_read(&self) {
        let idle = matches!(*self.phase.lock().unwrap_or_else(|e| e.into_inner()), Phase::Idle(_));
        if idle {
            self.with_phase(|p| {
                if let Phase::Idle(_) = p {
                    *p = Phase::Head(Instant::now());
                }
            });
        }
    }

    /// A request's head was read and it goes to the service; busy until the guard drops.
    fn request_started(self: &Arc<Self>) -> BusyGuard {
        self.with_phase(|p| {
            *p = match *p {
                Phase::Busy(n) => Phase::Busy(n + 1),
                _ => Phase::Busy(1),
            }
        });
        BusyGuard(Arc::clone(self))
    }

    fn request_done(&self) {
        self.with_phase(|p| {
            *p = match *p {
                Phase::Busy(n) if n > 1 => Phase::Busy(n - 1),
                _ => Phase::Idle(Instant::now()),
            }
        });
    }

    /// Completes when the current phase has outlasted its limit.
    async fn expired(&self) {
        loop {
            let changed = self.changed.notified();
            match self.deadline() {
                Some(d) if d <= Instant::now() => return,
                Some(d) => {
                    tokio::select! {
                        _ = tokio::time::sleep_until(d) => {}
                        _ = changed => {}
                    }
                }
                None => changed.await,
            }
        }
    }
}

/// Marks a request done when its response body has been handed over (or dropped).
struct BusyGuard(Arc<Clock>);

impl Drop for BusyGuard {
    fn drop(&mut self) {
        self.0.request_done();
    }
}

/// A response body that keeps its connection busy until hyper has taken all of it.
struct GuardedBody {
    inner: Body,
    _busy: BusyGuard,
}

impl HttpBody for GuardedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A socket that tells its clock when bytes arrive.
struct Watched<I> {
    io: I,
    clock: Arc<Clock>,
}

impl<I: AsyncRead + Unpin> AsyncRead for Watched<I> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.io).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.clock.bytes_read();
        }
        r
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Watched<I> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

async fn wait_stop(mut rx: watch::Receiver<bool>) {
    while !*rx.borrow() {
        if rx.changed().await.is_err() {
            return;
        }
    }
}

async fn accept<L: axum::serve::Listener>(l: &mut Option<L>) -> L::Io {
    match l {
        Some(l) => l.accept().await.0,
        None => std::future::pending().await,
    }
}

/// Serves the listeners (each with its router) until `stop`: accepts a connection
/// whenever one of `max_connections` slots is free, from whichever listener has one
/// first; then waits for the connections left to finish.
pub async fn serve(
    tcp: Option<(tokio::net::TcpListener, Router)>,
    unix: Option<(tokio::net::UnixListener, Router)>,
    max_connections: u32,
    limits: ConnLimits,
    stop: watch::Receiver<bool>,
) {
    let slots = Arc::new(Semaphore::new(max_connections as usize));
    let (mut tcp_listener, tcp_app) = tcp.unzip();
    let (mut unix_listener, unix_app) = unix.unzip();
    loop {
        // A slot first: with none free, clients wait in the listen queue.
        let slot = tokio::select! {
            p = Arc::clone(&slots).acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
            _ = wait_stop(stop.clone()) => break,
        };
        tokio::select! {
            io = accept(&mut tcp_listener) => {
                let app = tcp_app.clone().expect("a TCP listener has its router");
                tokio::spawn(serve_connection(io, app, None, limits, stop.clone(), slot));
            }
            io = accept(&mut unix_listener) => {
                let app = unix_app.clone().expect("a unix listener has its router");
                let cred = PeerCred::of(&io);
                tokio::spawn(serve_connection(io, app, Some(cred), limits, stop.clone(), slot));
            }
            _ = wait_stop(stop.clone()) => break,
        }
    }
    // Stop accepting (new clients are refused), then let the connections left finish
    // their requests: idle ones close at once, the others within the timeouts.
    drop((tcp_listener, unix_listener));
    let _ = slots.acquire_many(max_connections).await;
}

async fn serve_connection<I>(
    io: I,
    router: Router,
    cred: Option<PeerCred>,
    limits: ConnLimits,
    stop: watch::Receiver<bool>,
    _slot: OwnedSemaphorePermit,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let clock = Arc::new(Clock::new(limits));
    let io = TokioIo::new(Watched { io, clock: Arc::clone(&clock) });
    let service_clock = Arc::clone(&clock);
    let app = TowerToHyperService::new(router);
    let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
        if let Some(c) = cred {
            req.extensions_mut().insert(ConnectInfo(c));
        }
        let busy = service_clock.request_started();
        let response = app.call(req);
        async move {
            let res = response.await?;
            Ok::<_, Infallible>(res.map(|inner| Body::new(GuardedBody { inner, _busy: busy })))
        }
    });
    // hyper's own header timeout would also run while a kept-alive connection is idle;
    // the clock keeps the two apart.
    let conn = hyper::server::conn::http1::Builder::new().header_read_timeout(None).serve_connection(io, service);
    tokio::pin!(conn);
    let mut stopping = false;
    loop {
        tokio::select! {
            _ = conn.as_mut() => return,
            // Dropping the connection closes the socket.
            _ = clock.expired() => return,
            _ = wait_stop(stop.clone()), if !stopping => {
                stopping = true;
                conn.as_mut().graceful_shutdown();
            }
        }
    }
}
