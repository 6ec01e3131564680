// SPDX-License-Identifier: GPL-2.0-or-later
//! The ledger's VFS (`asbb_wal_writes`), which gathers a commit's WAL frames into one
//! write: what a process commits is in the file when the process dies right after, and
//! the ledger it leaves is intact; large transactions (spilled pages written twice,
//! frames rewritten in place) and rollbacks come out as with SQLite's own VFS.

use rusqlite::{Connection, OpenFlags};
use std::path::Path;
use std::process::Command;

const CHILD_ENV: &str = "ASBB_WAL_TEST_CHILD";

fn open(path: &Path, vfs: Option<&str>) -> Connection {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE;
    let conn = match vfs {
        Some(v) => Connection::open_with_flags_and_vfs(path, flags, v).unwrap(),
        None => Connection::open_with_flags(path, flags).unwrap(),
    };
    conn.execute_batch("PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA wal_autocheckpoint = 0;")
        .unwrap();
    conn
}

/// The same work on any connection: small commits, a rollback, then one transaction
/// large enough, with a 5-page cache, that pages are spilled to the WAL and written
/// there again (SQLite then rewrites those frames' checksums after the commit frame).
fn work(conn: &Connection) {
    conn.execute_batch(
        "PRAGMA cache_size = 5; CREATE TABLE IF NOT EXISTS t (id INTEGER PRIMARY KEY, v INTEGER, pad TEXT);",
    )
    .unwrap();
    for i in 0..50 {
        conn.execute("INSERT INTO t (v, pad) VALUES (?1, printf('%.300c', 'x'))", [i]).unwrap();
    }
    conn.execute_batch("BEGIN; INSERT INTO t (v, pad) VALUES (1000000, 'rolled back'); ROLLBACK;").unwrap();
    conn.execute_batch("BEGIN;").unwrap();
    for round in 0..4 {
        for i in 0..400 {
            conn.execute(
                "INSERT INTO t (id, v, pad) VALUES (?1, ?2, printf('%.300c', 'y'))
                 ON CONFLICT (id) DO UPDATE SET v = v + ?2",
                [1000 + i, round + 1],
            )
            .unwrap();
        }
    }
    conn.execute_batch("COMMIT;").unwrap();
}

/// (rows, sum of v) and SQLite's integrity check.
fn summary(conn: &Connection) -> (i64, i64, String) {
    let (rows, sum) = conn.query_row("SELECT count(*), sum(v) FROM t", [], |r| Ok((r.get(0)?, r.get(1)?))).unwrap();
    let check: String = conn.query_row("PRAGMA integrity_check", [], |r| r.get(0)).unwrap();
    (rows, sum, check)
}

#[test]
fn the_vfs_leaves_the_same_database_as_sqlites_own() {
    let vfs = asbb_wal_writes::vfs_name().expect("the VFS registers");
    let dir = tempfile::tempdir().unwrap();
    let (plain, gathered) = (dir.path().join("plain.db"), dir.path().join("gathered.db"));
    work(&open(&plain, None));
    let conn = open(&gathered, Some(vfs));
    work(&conn);
    // Another connection (SQLite's VFS) reads what this one committed, before and after
    // a checkpoint.
    let expected = summary(&open(&plain, None));
    assert_eq!(expected, (450, 1225 + 400 * 10, "ok".to_string()));
    assert_eq!(summary(&open(&gathered, None)), expected);
    conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);").unwrap();
    assert_eq!(summary(&open(&gathered, None)), expected);
    // Writes after the WAL was rewound (a new WAL header, frames from its start).
    conn.execute("INSERT INTO t (v, pad) VALUES (7, 'after')", []).unwrap();
    assert_eq!(summary(&open(&gathered, None)).0, 451);
}

/// Run as a child process (see below): commits the work, then dies without closing.
#[test]
fn child_commits_then_dies() {
    let Ok(path) = std::env::var(CHILD_ENV) else { return };
    let conn = open(Path::new(&path), asbb_wal_writes::vfs_name());
    work(&conn);
    // As slurmctld killed with SIGKILL: no close, no checkpoint, no flush.
    std::process::exit(0)
}

#[test]
fn what_a_process_committed_survives_its_death() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("died.db");
    let status = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "child_commits_then_dies", "--test-threads=1"])
        .env(CHILD_ENV, &path)
        .status()
        .unwrap();
    assert!(status.success(), "{status}");
    // The WAL is still there; the first connection recovers the ledger from it.
    assert!(dir.path().join("died.db-wal").exists());
    assert_eq!(summary(&open(&path, None)), (450, 1225 + 400 * 10, "ok".to_string()));
}
