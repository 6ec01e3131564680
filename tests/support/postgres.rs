// SPDX-License-Identifier: GPL-2.0-or-later
//! A new, empty PostgreSQL database per ledger, on the server `make test-postgres`
//! starts (scripts/postgres-server.sh). `ASBB_TEST_POSTGRES` is that server's superuser
//! URL; without it the PostgreSQL tests skip (and panic under `ASBB_E2E=1`, where
//! `make test` has started the server). A test that kills its server starts its own
//! ([`PrivateServer`]). Included by path where needed:
//! `#[path = "support/postgres.rs"] mod pg;`.
#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;

/// The role the ledgers' connections use: a password, not trust.
pub const ROLE: &str = "asbb_ledger";
const PASSWORD: &str = "a-test-password";

/// The server's superuser URL, or `None` (the caller skips).
pub fn server() -> Option<String> {
    match std::env::var("ASBB_TEST_POSTGRES") {
        Ok(url) if !url.is_empty() => Some(url),
        _ if std::env::var("ASBB_E2E").as_deref() == Ok("1") => {
            panic!("ASBB_E2E=1 but ASBB_TEST_POSTGRES is not set (run the tests with `make test`)")
        }
        _ => {
            eprintln!("skipped: ASBB_TEST_POSTGRES is not set (`make test-postgres` starts a server)");
            None
        }
    }
}

/// The private folder holding the role's password file, made once per test binary.
fn password_file() -> &'static PathBuf {
    static FILE: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    &FILE
        .get_or_init(|| {
            use std::os::unix::fs::PermissionsExt;
            let dir = tempfile::tempdir().unwrap();
            let file = dir.path().join("ledger.pw");
            std::fs::write(&file, format!("{PASSWORD}\n")).unwrap();
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
            (dir, file)
        })
        .1
}

/// Runs `sql` as the superuser of the server at `server`.
pub fn admin(server: &str, sql: &str) {
    let mut client = postgres::Client::connect(server, postgres::NoTls).expect("connect to the test server");
    client.batch_execute(sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
}

/// A new empty database owned by [`ROLE`]; the ledger URL asbb.toml would name
/// (`None` when no server is configured).
pub fn new_ledger(tag: &str) -> Option<String> {
    Some(new_ledger_on(&server()?, tag))
}

/// [`new_ledger`] on the server at `server` (its superuser URL).
pub fn new_ledger_on(server: &str, tag: &str) -> String {
    static COUNT: AtomicU32 = AtomicU32::new(0);
    admin(
        server,
        &format!(
            "DO $$ BEGIN
               IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{ROLE}') THEN
                 CREATE ROLE {ROLE} LOGIN PASSWORD '{PASSWORD}';
               END IF;
             END $$"
        ),
    );
    let name = format!("{tag}_{}_{}", std::process::id(), COUNT.fetch_add(1, Ordering::Relaxed));
    admin(server, &format!("CREATE DATABASE {name} OWNER {ROLE}"));
    // host:port of the superuser URL, the new database, the role and its password file.
    let host = server.split_once('@').map_or(server, |(_, h)| h);
    let host = host.split('/').next().unwrap_or(host);
    format!("postgresql://{ROLE}@{host}/{name}?password_file={}", password_file().display())
}

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/postgres-server.sh")
}

/// A server of the test's own (one it may kill), stopped when dropped.
pub struct PrivateServer {
    pub dir: tempfile::TempDir,
    /// Its superuser URL.
    pub url: String,
}

impl PrivateServer {
    pub fn start() -> PrivateServer {
        let dir = tempfile::Builder::new().prefix("asbb-pg").tempdir().unwrap();
        let out = std::process::Command::new("bash").arg(script()).arg("start").arg(dir.path()).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let port = String::from_utf8(out.stdout).unwrap().trim().to_string();
        PrivateServer { url: format!("postgresql://postgres@127.0.0.1:{port}/postgres"), dir }
    }

    /// The postmaster's pid (it leads the session every server process is in).
    fn postmaster(&self) -> String {
        let pid = std::fs::read_to_string(self.dir.path().join("data/postmaster.pid")).unwrap();
        pid.lines().next().unwrap().trim().to_string()
    }

    /// Sends `signal` to the postmaster and every process it forked (each backend is
    /// a session of its own, so by parent): the postmaster is stopped first, so it forks
    /// nothing in between.
    fn signal_all(&self, signal: &str) {
        let pid = self.postmaster();
        let run = |args: &[&str]| std::process::Command::new(args[0]).args(&args[1..]).status().unwrap();
        assert!(run(&["kill", "-STOP", &pid]).success());
        let _ = run(&["pkill", &format!("-{signal}"), "-P", &pid]);
        assert!(run(&["kill", &format!("-{signal}"), &pid]).success());
    }

    /// The postmaster and every backend, killed at once (a crash, not a stop).
    pub fn kill(&self) {
        let pid = self.postmaster();
        self.signal_all("KILL");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while std::path::Path::new(&format!("/proc/{pid}")).exists() {
            assert!(std::time::Instant::now() < deadline, "the postmaster {pid} outlived SIGKILL");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    /// Every server process stopped (SIGSTOP): the kernel still accepts connections and
    /// acknowledges data, but nothing answers.
    pub fn freeze(&self) {
        self.signal_all("STOP");
    }

    pub fn thaw(&self) {
        self.signal_all("CONT");
    }

    /// Starts it again (after `kill`: crash recovery first), on the same port.
    pub fn restart(&self) {
        let out =
            std::process::Command::new("bash").arg(script()).arg("restart").arg(self.dir.path()).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
}

impl Drop for PrivateServer {
    fn drop(&mut self) {
        let _ = std::process::Command::new("bash").arg(script()).arg("stop").arg(self.dir.path()).output();
    }
}
