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

/// A transaction that spilled pages to the WAL and rolled back leaves frames nobody
/// committed; another connection then commits its own frames at the same place. The
/// rolled-back frames must never be written over them, at the first connection's close
/// or at its next read.
#[test]
fn a_rolled_back_spill_never_lands_on_another_connections_commit() {
    // About 20 pages of rows: the rolled-back frames fit the buffer, so they start
    // where the next commit's frames do.
    const ROWS: i64 = 120;
    let vfs = asbb_wal_writes::vfs_name().expect("the VFS registers");
    for close_first in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger.db");
        let a = open(&path, Some(vfs));
        a.execute_batch("CREATE TABLE t (id INTEGER PRIMARY KEY, v INTEGER, pad TEXT);").unwrap();
        for i in 1..=ROWS {
            a.execute("INSERT INTO t (v, pad) VALUES (?1, printf('%.600c', 'a'))", [i]).unwrap();
        }
        // Everything in the database file, so that the rollback reads nothing back from
        // the WAL (a read there would write the buffer while the write lock is held).
        a.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);").unwrap();
        // Pages spilled past the cache (SQLite keeps at least 10), then rolled back.
        a.execute_batch("PRAGMA cache_size = 5; BEGIN; UPDATE t SET v = v + 1000000, pad = printf('%.600c', 'z');")
            .unwrap();
        a.execute_batch("ROLLBACK;").unwrap();
        // Another connection commits where the rolled-back frames were.
        let b = open(&path, Some(vfs));
        b.execute_batch("UPDATE t SET v = v * 2; INSERT INTO t (v, pad) VALUES (7, 'b');").unwrap();
        if close_first {
            drop(a);
        } else {
            let n: i64 = a.query_row("SELECT count(*) FROM t WHERE v > 1000000", [], |r| r.get(0)).unwrap();
            assert_eq!(n, 0);
            drop(a);
        }
        drop(b);
        let c = open(&path, None);
        let (rows, sum, check) = summary(&c);
        assert_eq!((rows, sum, check.as_str()), (ROWS + 1, ROWS * (ROWS + 1) + 7, "ok"), "close_first={close_first}");
    }
}
