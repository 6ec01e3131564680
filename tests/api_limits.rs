// SPDX-License-Identifier: GPL-2.0-or-later
//! unfinished requests are timed out and connections are capped. The real
//! server, started in-process on a loopback port and a unix socket with short limits,
//! and raw sockets that send half a request and stall, trickle bytes, send half a
//! body, stay idle after a response, or come when every slot is taken.

#![cfg(feature = "api")]

use asbb::api::{self, RunningServer, ServeOptions};
use asbb::core::config::Config;
use asbb::core::decisions::{Budget, FOREVER};
use asbb::core::ledger::OpenMode;
use asbb::core::money::Money;
use sha2::{Digest, Sha256};
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::{Duration, Instant};

const TOKEN: &str = "integration-token";
/// What the tests allow for a close the server should make at a limit of up to 1.2 s.
const CLOSED_WITHIN: Duration = Duration::from_secs(5);

struct World {
    _dir: tempfile::TempDir,
    socket: PathBuf,
    server: RunningServer,
}

/// A ledger with one account and a server with `[api]` set to `api` (plus a token).
fn world(api: &str) -> World {
    let dir = tempfile::tempdir().unwrap();
    let ledger = dir.path().join("ledger.db");
    let sha: String = Sha256::digest(TOKEN.as_bytes()).iter().map(|b| format!("{b:02x}")).collect();
    let text = format!(
        "ledger = \"{}\"\n[partitions.debug.rates]\ncpu = 0.02\n[api]\n{api}\n[[api.tokens]]\nname = \"launcher\"\nsha256 = \"{sha}\"\nrole = \"integration\"\n",
        ledger.display()
    );
    std::fs::write(dir.path().join("asbb.toml"), text).unwrap();
    let config = Config::load(&dir.path().join("asbb.toml")).unwrap();
    let mut b = Budget::open(config.clone(), OpenMode::CreateIfMissing).unwrap();
    let t = chrono::Utc::now().timestamp();
    b.create_account("chem", Money::from_dollars(100).unwrap(), t - 86_400, FOREVER, Money::ZERO, "test", t).unwrap();
    drop(b);
    let socket = dir.path().join("api.sock");
    let server = api::start(
        config,
        ServeOptions {
            listen: Some("127.0.0.1:0".parse().unwrap()),
            socket: Some(socket.clone()),
            log: false,
            ..Default::default()
        },
    )
    .unwrap();
    World { _dir: dir, socket, server }
}

/// A client socket of either kind.
enum Conn {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Conn {
    fn tcp(w: &World) -> Conn {
        Conn::Tcp(TcpStream::connect(w.server.tcp.unwrap()).unwrap())
    }

    fn unix(w: &World) -> Conn {
        Conn::Unix(UnixStream::connect(&w.socket).unwrap())
    }

    fn send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        match self {
            Conn::Tcp(s) => s.write_all(bytes),
            Conn::Unix(s) => s.write_all(bytes),
        }
    }

    fn read_some(&mut self, buf: &mut [u8], timeout: Duration) -> std::io::Result<usize> {
        let t = Some(timeout.max(Duration::from_millis(1)));
        match self {
            Conn::Tcp(s) => {
                s.set_read_timeout(t)?;
                s.read(buf)
            }
            Conn::Unix(s) => {
                s.set_read_timeout(t)?;
                s.read(buf)
            }
        }
    }

    /// Waits until `deadline` for the server to close the connection; the time it took
    /// from `since`, or None if it stayed open. Any bytes the server sends first (a
    /// response) are returned too.
    fn closed_by(&mut self, since: Instant, deadline: Instant) -> (Option<Duration>, Vec<u8>) {
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return (None, got);
            }
            match self.read_some(&mut buf, left) {
                Ok(0) => return (Some(since.elapsed()), got),
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) if matches!(e.kind(), ErrorKind::ConnectionReset | ErrorKind::BrokenPipe) => {
                    return (Some(since.elapsed()), got)
                }
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => return (None, got),
                Err(e) => panic!("{e}"),
            }
        }
    }

    /// Reads one response (headers and a Content-Length body) off a kept-alive connection.
    fn response(&mut self, timeout: Duration) -> std::io::Result<(u16, String)> {
        let deadline = Instant::now() + timeout;
        let mut raw = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            if let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&raw[..end]).to_string();
                let len: usize = head
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse().unwrap())
                    })
                    .unwrap_or(0);
                if raw.len() >= end + 4 + len {
                    let status = head[9..12].parse().unwrap();
                    return Ok((status, String::from_utf8_lossy(&raw[end + 4..end + 4 + len]).to_string()));
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(ErrorKind::TimedOut.into());
            }
            match self.read_some(&mut buf, left)? {
                0 => return Err(ErrorKind::UnexpectedEof.into()),
                n => raw.extend_from_slice(&buf[..n]),
            }
        }
    }
}

fn health(keep_alive: bool) -> String {
    let c = if keep_alive { "keep-alive" } else { "close" };
    format!("GET /health HTTP/1.1\r\nHost: x\r\nConnection: {c}\r\n\r\n")
}

/// Half a request: a request line and one header, no blank line.
const HALF: &[u8] = b"GET /health HTTP/1.1\r\nHost: x\r\n";

#[test]
fn half_sent_requests_are_closed_at_the_header_timeout() {
    // 2 s: long enough that opening 100 connections and one whole request fit inside
    // it on a loaded machine, so the check below cannot race the timeout.
    let w = world("header_read_timeout_ms = 2000\nidle_timeout_ms = 5000\nmax_connections = 256");
    let start = Instant::now();
    let mut stalled: Vec<(Conn, Instant)> = Vec::new();
    for i in 0..100 {
        let mut c = if i % 2 == 0 { Conn::tcp(&w) } else { Conn::unix(&w) };
        let opened = Instant::now();
        c.send(HALF).unwrap();
        stalled.push((c, opened));
    }
    // One more trickles a header value, a byte every 50 ms: bytes do not extend the deadline.
    let socket = w.socket.clone();
    let trickle = std::thread::spawn(move || {
        let mut c = Conn::Unix(UnixStream::connect(socket).unwrap());
        let opened = Instant::now();
        c.send(b"GET /health HTTP/1.1\r\nX-Slow: ").unwrap();
        for _ in 0..200 {
            if c.send(b"a").is_err() {
                return Some(opened.elapsed());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    });
    // Meanwhile a whole request is answered at once, on both listeners.
    for unix in [false, true] {
        let mut c = if unix { Conn::unix(&w) } else { Conn::tcp(&w) };
        c.send(health(false).as_bytes()).unwrap();
        let (status, body) = c.response(Duration::from_secs(2)).unwrap();
        assert_eq!((status, body.as_str()), (200, r#"{"status":"ok","ledger":"ok","schema_version":11}"#));
    }
    assert!(start.elapsed() < Duration::from_millis(2000), "the check came after the stalled ones were closed");
    let mut times = Vec::new();
    for (c, opened) in &mut stalled {
        let (closed, got) = c.closed_by(*opened, *opened + CLOSED_WITHIN);
        let closed = closed.unwrap_or_else(|| panic!("a half-sent request stayed open {CLOSED_WITHIN:?}"));
        assert!(got.is_empty(), "{}", String::from_utf8_lossy(&got));
        times.push(closed);
    }
    let first = times.iter().min().unwrap();
    let last = times.iter().max().unwrap();
    eprintln!("100 half-sent requests (header_read_timeout_ms = 2000): closed after {first:?} to {last:?}");
    assert!(*first >= Duration::from_millis(1990), "closed before the timeout: {first:?}");
    let trickled = trickle.join().unwrap().expect("the trickling client was never cut off");
    eprintln!("a client trickling a byte every 50 ms was cut off after {trickled:?}");
    assert!(trickled < CLOSED_WITHIN, "{trickled:?}");
}

#[test]
fn kept_alive_connections_close_at_the_idle_timeout() {
    let w = world("header_read_timeout_ms = 300\nidle_timeout_ms = 1200");
    for unix in [false, true] {
        let mut c = if unix { Conn::unix(&w) } else { Conn::tcp(&w) };
        c.send(health(true).as_bytes()).unwrap();
        assert_eq!(c.response(Duration::from_secs(2)).unwrap().0, 200);
        // Idle longer than the header timeout: still open, and serves another request.
        std::thread::sleep(Duration::from_millis(700));
        c.send(health(true).as_bytes()).unwrap();
        assert_eq!(c.response(Duration::from_secs(2)).unwrap().0, 200);
        let idle_since = Instant::now();
        let (closed, got) = c.closed_by(idle_since, idle_since + CLOSED_WITHIN);
        let closed = closed.expect("an idle connection stayed open");
        assert!(got.is_empty());
        eprintln!("idle connection (idle_timeout_ms = 1200) closed after {closed:?}");
        assert!(closed >= Duration::from_millis(1100), "{closed:?}");
    }
}

#[test]
fn a_body_that_does_not_arrive_is_a_408() {
    let w = world("body_read_timeout_ms = 300\nheader_read_timeout_ms = 5000");
    let expect = r#"{"error":{"code":"request_timeout","message":"the request body did not arrive within 300 ms ([api] body_read_timeout_ms)"}}"#;
    for unix in [false, true] {
        let mut c = if unix { Conn::unix(&w) } else { Conn::tcp(&w) };
        let head = format!(
            "POST /api/v1/budget/check HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\nContent-Type: application/json\r\nContent-Length: 80\r\n\r\n{{\"account\": \"chem\""
        );
        let sent = Instant::now();
        c.send(head.as_bytes()).unwrap();
        let (status, body) = c.response(CLOSED_WITHIN).unwrap();
        let took = sent.elapsed();
        assert_eq!((status, body.as_str()), (408, expect));
        assert!(took >= Duration::from_millis(290) && took < CLOSED_WITHIN, "{took:?}");
        eprintln!("half a body (body_read_timeout_ms = 300): 408 after {took:?}");
        // And the connection is closed after it.
        let (closed, _) = c.closed_by(sent, sent + CLOSED_WITHIN);
        assert!(closed.is_some());
    }
    // A whole body is fine.
    let mut c = Conn::tcp(&w);
    let body = r#"{"account": "chem", "partition": "debug", "time": "1h"}"#;
    c.send(
        format!(
            "POST /api/v1/budget/check HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    )
    .unwrap();
    let (status, body) = c.response(Duration::from_secs(2)).unwrap();
    assert_eq!(status, 200, "{body}");
}

#[test]
fn connections_over_the_cap_wait_for_a_free_slot() {
    let w = world("header_read_timeout_ms = 2000\nmax_connections = 4");
    // Four stalled clients, two per listener, take every slot.
    let mut stalled = vec![Conn::tcp(&w), Conn::unix(&w), Conn::tcp(&w), Conn::unix(&w)];
    for c in &mut stalled {
        c.send(HALF).unwrap();
    }
    std::thread::sleep(Duration::from_millis(200));
    // Whole requests on both listeners: not served while the cap is full.
    let mut waiting = vec![Conn::tcp(&w), Conn::unix(&w)];
    for c in &mut waiting {
        c.send(health(false).as_bytes()).unwrap();
    }
    for c in &mut waiting {
        let r = c.response(Duration::from_millis(700));
        let waited = r.as_ref().is_err_and(|e| matches!(e.kind(), ErrorKind::TimedOut | ErrorKind::WouldBlock));
        assert!(waited, "served over the cap: {r:?}");
    }
    // The stalled clients go away: the waiting requests are served.
    let freed = Instant::now();
    drop(stalled);
    for c in &mut waiting {
        let (status, _) = c.response(CLOSED_WITHIN).unwrap();
        assert_eq!(status, 200);
    }
    eprintln!("max_connections = 4: waiting requests served {:?} after the slots freed", freed.elapsed());
    assert!(freed.elapsed() < Duration::from_secs(1), "{:?}", freed.elapsed());
    // Stalled clients that stay are cut off at the header timeout, which frees their slots too.
    let mut stalled: Vec<Conn> = (0..4).map(|_| Conn::tcp(&w)).collect();
    for c in &mut stalled {
        c.send(HALF).unwrap();
    }
    std::thread::sleep(Duration::from_millis(200));
    let mut late = Conn::unix(&w);
    let sent = Instant::now();
    late.send(health(false).as_bytes()).unwrap();
    let (status, _) = late.response(Duration::from_secs(6)).unwrap();
    assert_eq!(status, 200);
    let took = sent.elapsed();
    eprintln!("max_connections = 4, all stalled: a request was served after {took:?} (header_read_timeout_ms = 2000)");
    assert!(took >= Duration::from_millis(1500), "{took:?}");
}

#[test]
fn the_limits_are_checked_at_load() {
    let parse = |api: &str| Config::parse(&format!("[api]\n{api}\n"), "a.toml").map(|c| c.api);
    let c = parse("").unwrap();
    assert_eq!(
        (c.header_read_timeout_ms, c.idle_timeout_ms, c.body_read_timeout_ms, c.max_connections),
        (5000, 30000, 10000, 256)
    );
    assert_eq!(
        parse("header_read_timeout_ms = 50").unwrap_err().to_string(),
        "a.toml: api.header_read_timeout_ms: 50 must be from 100 to 600000 (milliseconds)"
    );
    assert_eq!(
        parse("max_connections = 0").unwrap_err().to_string(),
        "a.toml: api.max_connections: 0 must be from 1 to 65536"
    );
}
