// SPDX-License-Identifier: GPL-2.0-or-later
//! The SQLite ledger: opening (PRAGMAs, file mode, migrations) and the store the
//! budget logic is built from: typed reads and writes of accounts (`accounts`), jobs
//! (`jobs`), runs (`runs`), the journal (`postings`, its only writer) and the check of
//! every cached total against the journal (`verify`). Every call gives a
//! [`LedgerError`] that names the file. Writes happen inside a transaction ([`Tx`])
//! opened by `core::decisions`; nothing here commits on its own.

use crate::core::money::Money;
use crate::core::pricing::job::{JobRequest, Resources};
use crate::core::safe_fs;
use db::{params, Conn, OptionalExtension};
use once_cell::sync::Lazy;
use rusqlite::{Connection, OpenFlags};
use std::path::{Path, PathBuf};
use std::time::Duration;

mod accounts;
mod alerts;
mod cache;
mod copy;
pub mod db;
mod grants;
mod integration;
pub mod jobs;
mod learning;
#[cfg(feature = "postgres")]
mod postgres;
pub mod postings;
mod reports;
mod runs;
pub mod verify;

/// Whether the ledger setting names a PostgreSQL database rather than a file.
pub fn is_postgres_url(location: &Path) -> bool {
    location.to_str().is_some_and(|s| s.starts_with("postgresql://") || s.starts_with("postgres://"))
}

/// asbb's own parameter in a PostgreSQL URL: the file holding the password.
const PASSWORD_FILE_PARAM: &str = "password_file";

/// The password file a PostgreSQL ledger URL names (at most once).
fn password_file_param(url: &str) -> Result<Option<PathBuf>, String> {
    let query = url.split_once('?').map_or("", |(_, q)| q);
    let mut found = query.split('&').filter_map(|kv| kv.strip_prefix(PASSWORD_FILE_PARAM)?.strip_prefix('='));
    let file = found.next().map(PathBuf::from);
    if found.next().is_some() {
        return Err(format!("the URL names `{PASSWORD_FILE_PARAM}` twice"));
    }
    Ok(file)
}

/// Whose the ledger is, for deciding who administers it: the ledger file's owner, or
/// for PostgreSQL the owner of the password file (whoever can read it can connect).
/// `None` when that file does not exist.
pub fn ledger_owner(location: &Path) -> Option<u32> {
    use std::os::unix::fs::MetadataExt;
    let file =
        if is_postgres_url(location) { password_file_param(location.to_str()?).ok()?? } else { location.to_path_buf() };
    std::fs::symlink_metadata(file).ok().map(|m| m.uid())
}

pub(crate) use alerts::WatchedJob;
pub use alerts::{AlertRecord, DeliveryRecord};
pub use cache::ReadCache;
pub use copy::{copy_rows, Balances, CopyReport};
pub use grants::Grant;
pub(crate) use grants::NewGrantRow;
pub(crate) use integration::{NewCostUpdate, NewFeedback};
pub(crate) use jobs::NewJob;
pub use jobs::{JobSummary, OpenHold};
pub use learning::{Sample, SampleRow};
pub(crate) use reports::CostColumns;
pub(crate) use runs::NewRun;

/// Schema migrations, applied in order and recorded in `schema_migrations`.
pub const MIGRATIONS: &[(u32, &str, &str)] = &[
    (1, "001_ledger", include_str!("../../../sql/001_ledger.sql")),
    (2, "002_job_metadata", include_str!("../../../sql/002_job_metadata.sql")),
    (3, "003_grant_management", include_str!("../../../sql/003_grant_management.sql")),
    // Integration API, learning samples, account members.
    (4, "004_integration", include_str!("../../../sql/004_integration.sql")),
    // Fewer index pages written per submission.
    (5, "005_narrow_writes", include_str!("../../../sql/005_narrow_writes.sql")),
    // Grant-directed charging: each grant's open holds.
    (6, "006_grant_directed", include_str!("../../../sql/006_grant_directed.sql")),
    // Alerts and the deliveries of each; a grant's PI mail address.
    (7, "007_alerts", include_str!("../../../sql/007_alerts.sql")),
    // Job rows in token order; a first hold, a run's charge and its learning sample
    // outside the key indexes (tables rebuilt).
    (8, "008_hot_path", include_str!("../../../sql/008_hot_path.sql")),
    // A job's request in columns instead of JSON; a run's release outside the key index.
    (9, "009_request_columns", include_str!("../../../sql/009_request_columns.sql")),
    // Only cost entries indexed by time: a hold or a release writes no index page.
    (10, "010_cost_time_index", include_str!("../../../sql/010_cost_time_index.sql")),
    // Each job row names its cluster: several clusters can share one ledger.
    (11, "011_job_cluster", include_str!("../../../sql/011_job_cluster.sql")),
];

/// Prepared statements kept per connection.
const STATEMENT_CACHE_CAPACITY: usize = 64;

/// The schema this build reads and writes.
pub const LATEST_SCHEMA: u32 = MIGRATIONS[MIGRATIONS.len() - 1].0;

/// Which schema versions an open accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SchemaAge {
    /// Only this build's (every open but a migration's).
    Current,
    /// This build's or any older one (`asbb-admin migrate`).
    AnyOlder,
}

#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("ledger {0} does not exist; create it with `asbb-admin account create`")]
    Missing(PathBuf),
    #[error("ledger {path}: {source}")]
    Db { path: PathBuf, source: db::DbError },
    #[error("ledger {path}: schema version {found} is newer than this asbb knows ({known})")]
    TooNew { path: PathBuf, found: u32, known: u32 },
    /// Only `asbb-admin migrate` upgrades a ledger: never the plugins, under
    /// slurmctld's locks, and never as a side effect of another command.
    #[error("ledger {path}: schema version {found} is older than this asbb needs ({known}); run `asbb-admin migrate` (outside slurmctld) to upgrade it")]
    Outdated { path: PathBuf, found: u32, known: u32 },
    #[error("ledger {path}: {reason}")]
    Io { path: PathBuf, reason: String },
}

impl LedgerError {
    /// Busy/locked: another writer held the lock past the bounded wait.
    pub fn is_busy(&self) -> bool {
        matches!(self, LedgerError::Db { source, .. } if source.is_busy())
    }

    /// The connection to a PostgreSQL server is gone or cannot be made (see
    /// [`db::DbError::is_connection_lost`]).
    pub fn is_connection_lost(&self) -> bool {
        matches!(self, LedgerError::Db { source, .. } if source.is_connection_lost())
    }

    /// An optimistic transaction's commit found the ledger changed since its reads,
    /// and wrote nothing.
    pub fn is_changed(&self) -> bool {
        matches!(self, LedgerError::Db { source: db::DbError::Changed, .. })
    }
}

/// The ledger's location as messages show it: a file's path, or a PostgreSQL URL's
/// user, hosts and database only (never a password or a parameter).
pub fn shown_location(location: &Path) -> PathBuf {
    #[cfg(feature = "postgres")]
    if is_postgres_url(location) {
        let url = location.to_string_lossy();
        return PathBuf::from(db::postgres::redacted(url.split('?').next().unwrap_or(&url)));
    }
    location.to_path_buf()
}

/// An open ledger.
pub struct Ledger {
    pub(crate) conn: Conn,
    path: PathBuf,
}

/// How to open: admin commands may create the file, the plugins never do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenMode {
    CreateIfMissing,
    MustExist,
    ReadOnly,
}

impl Ledger {
    /// Opens the ledger at `path`, creating it (mode 0600) in `CreateIfMissing` mode.
    /// Nothing is opened through a symlink, and an existing file must pass
    /// [`safe_fs::check_ledger`].
    pub fn open(path: &Path, mode: OpenMode, busy_timeout_ms: u32) -> Result<Ledger, LedgerError> {
        Ledger::open_schema(path, mode, busy_timeout_ms, SchemaAge::Current)
    }

    /// Opens an existing ledger of this or any older schema for `asbb-admin migrate`,
    /// which then calls [`Ledger::migrate`].
    pub fn open_for_migration(path: &Path, busy_timeout_ms: u32) -> Result<Ledger, LedgerError> {
        Ledger::open_schema(path, OpenMode::MustExist, busy_timeout_ms, SchemaAge::AnyOlder)
    }

    fn open_schema(path: &Path, mode: OpenMode, busy_timeout_ms: u32, age: SchemaAge) -> Result<Ledger, LedgerError> {
        if is_postgres_url(path) {
            #[cfg(feature = "postgres")]
            return Ledger::open_postgres(path.to_str().unwrap_or_default(), mode, busy_timeout_ms, age);
            #[cfg(not(feature = "postgres"))]
            return Err(LedgerError::Io {
                path: path.to_path_buf(),
                reason: "this asbb was built without PostgreSQL (feature `postgres`)".into(),
            });
        }
        let memory = path.as_os_str() == ":memory:";
        let exists = memory || safe_fs::exists(path);
        if !exists && mode != OpenMode::CreateIfMissing {
            return Err(LedgerError::Missing(path.to_path_buf()));
        }
        let io = |reason: String| LedgerError::Io { path: path.to_path_buf(), reason };
        if !exists {
            safe_fs::create_ledger(path, None).map_err(io)?;
        } else if !memory {
            safe_fs::check_ledger(path).map_err(io)?;
        }
        // NOFOLLOW: SQLite refuses a path with a symlink anywhere on it.
        let flags = match mode {
            OpenMode::ReadOnly => OpenFlags::SQLITE_OPEN_READ_ONLY,
            _ => OpenFlags::SQLITE_OPEN_READ_WRITE,
        } | OpenFlags::SQLITE_OPEN_NO_MUTEX
            | OpenFlags::SQLITE_OPEN_NOFOLLOW;
        let sq = |source: rusqlite::Error| LedgerError::Db { path: path.to_path_buf(), source: source.into() };
        // Each commit's WAL frames in one write (see `asbb_wal_writes`).
        let conn = match asbb_wal_writes::vfs_name() {
            Some(vfs) => Connection::open_with_flags_and_vfs(path, flags, vfs),
            None => Connection::open_with_flags(path, flags),
        }
        .map_err(sq)?;
        // Another writer's transaction is waited for in steps of 50 µs and up, not
        // SQLite's 1, 2, 5 ... ms (see `asbb_wal_writes::busy`).
        asbb_wal_writes::busy::wait_in_steps(&conn, busy_timeout_ms).map_err(sq)?;
        // rusqlite keeps 16 statements by default; the hooks' paths (submit, modify,
        // confirm, settle) use more, so slurmctld's profile showed SQLite parsing SQL
        // again inside the hooks.
        conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE_CAPACITY);
        let mut ledger = Ledger { conn: Conn::from_sqlite(conn), path: path.to_path_buf() };
        ledger.configure(mode, age)?;
        Ok(ledger)
    }

    /// A private in-memory ledger (tests, benchmarks, quotes).
    pub fn in_memory() -> Result<Ledger, LedgerError> {
        let path = PathBuf::from(":memory:");
        let conn = Connection::open_in_memory()
            .map_err(|source| LedgerError::Db { path: path.clone(), source: source.into() })?;
        let mut ledger = Ledger { conn: Conn::from_sqlite(conn), path };
        ledger.configure(OpenMode::CreateIfMissing, SchemaAge::Current)?;
        Ok(ledger)
    }

    /// Leaves WAL checkpoints to a `Checkpointer` (the plugins' write path).
    pub fn without_autocheckpoint(self) -> Result<Ledger, LedgerError> {
        if self.conn.is_postgres() {
            return Ok(self);
        }
        self.conn.execute_batch("PRAGMA wal_autocheckpoint = 0;").map_err(|e| self.err(e))?;
        Ok(self)
    }

    /// The SQLite connection, for tests that look inside (a PostgreSQL ledger has none).
    pub fn connection(&self) -> &Connection {
        self.conn.sqlite().expect("an SQLite ledger")
    }

    /// A count that changes whenever this connection writes (SQLite's
    /// `total_changes`; on PostgreSQL, the writes it has committed).
    pub(crate) fn change_count(&self) -> u64 {
        self.conn.change_count()
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Round trips to a PostgreSQL ledger's server so far, on this connection (`None`
    /// on SQLite): what a decision costs, for tests and benchmarks.
    pub fn round_trips(&self) -> Option<u64> {
        self.conn.round_trips()
    }

    pub(crate) fn err(&self, source: impl Into<db::DbError>) -> LedgerError {
        LedgerError::Db { path: self.path.clone(), source: source.into() }
    }

    /// Runs SQL outside a transaction (one statement's own snapshot); an error names
    /// the ledger's file.
    pub(crate) fn sql<T>(&self, run: impl FnOnce(&Conn) -> db::Result<T>) -> Result<T, LedgerError> {
        run(&self.conn).map_err(|source| self.err(source))
    }

    fn configure(&mut self, mode: OpenMode, age: SchemaAge) -> Result<(), LedgerError> {
        // WAL lets readers (asbb, reports) run beside the plugin's writes;
        // synchronous=NORMAL keeps commits off fsync on the slurmctld path while WAL
        // still guarantees a consistent database after a crash.
        let pragmas = if mode == OpenMode::ReadOnly {
            "PRAGMA foreign_keys = ON;"
        } else {
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON;"
        };
        self.conn.execute_batch(pragmas).map_err(|e| self.err(e))?;
        let found = self.check_version()?;
        if found == 0 && mode != OpenMode::ReadOnly && self.is_empty()? {
            // A new ledger gets the whole schema at once.
            self.migrate()?;
        } else if found < LATEST_SCHEMA && age == SchemaAge::Current {
            return Err(LedgerError::Outdated { path: self.path.clone(), found, known: LATEST_SCHEMA });
        }
        Ok(())
    }

    /// Copies the whole ledger, consistent as of now, into a new private file (mode
    /// 0600, which must not exist): a backup, or a scratch copy to try things on.
    pub fn copy_to(&self, path: &Path) -> Result<(), LedgerError> {
        if self.conn.is_postgres() {
            let mut copy = Ledger::open(path, OpenMode::CreateIfMissing, 1000)?;
            return copy::copy_rows(self, &mut copy).map(|_| ());
        }
        let io = |reason: String| LedgerError::Io { path: path.to_path_buf(), reason };
        // Created empty and private first (O_EXCL | O_NOFOLLOW); VACUUM INTO fills an empty file.
        safe_fs::create_new(path, 0o600).map_err(|e| io(format!("cannot create: {e}")))?;
        let target = path.to_str().ok_or_else(|| io("path is not UTF-8".into()))?;
        self.conn.execute("VACUUM INTO ?1", [target]).map_err(|e| self.err(e))?;
        Ok(())
    }

    /// No tables at all: a file just created (or left empty).
    fn is_empty(&self) -> Result<bool, LedgerError> {
        self.conn.query_row("SELECT count(*) = 0 FROM sqlite_master", (), |r| r.get(0)).map_err(|e| self.err(e))
    }

    fn check_version(&self) -> Result<u32, LedgerError> {
        #[cfg(feature = "postgres")]
        let has_table =
            if self.conn.is_postgres() { self.postgres_has_migrations()? } else { self.sqlite_has_migrations()? };
        #[cfg(not(feature = "postgres"))]
        let has_table = self.sqlite_has_migrations()?;
        if !has_table {
            return Ok(0);
        }
        let found: u32 = self
            .conn
            .query_row("SELECT coalesce(max(version), 0) FROM schema_migrations", (), |r| r.get(0))
            .map_err(|e| self.err(e))?;
        if found > LATEST_SCHEMA {
            return Err(LedgerError::TooNew { path: self.path.clone(), found, known: LATEST_SCHEMA });
        }
        Ok(found)
    }

    fn sqlite_has_migrations(&self) -> Result<bool, LedgerError> {
        self.conn
            .query_row("SELECT count(*) FROM sqlite_master WHERE type='table' AND name='schema_migrations'", (), |r| {
                r.get::<_, i64>(0)
            })
            .map(|n| n > 0)
            .map_err(|e| self.err(e))
    }

    /// Applies every migration newer than the database, each in its own transaction;
    /// returns the names of those applied.
    pub fn migrate(&mut self) -> Result<Vec<&'static str>, LedgerError> {
        #[cfg(feature = "postgres")]
        if self.conn.is_postgres() {
            return self.migrate_postgres();
        }
        self.conn
            .execute_batch(
                "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at INTEGER NOT NULL)",
            )
            .map_err(|e| self.err(e))?;
        let current = self.check_version()?;
        // A migration that rebuilds a table drops the one other tables' keys refer to:
        // SQLite's way is foreign keys off while it runs and every key checked before
        // its commit. They are on again afterwards, whatever happened.
        self.conn.execute_batch("PRAGMA foreign_keys = OFF;").map_err(|e| self.err(e))?;
        let applied = self.apply_migrations(current);
        self.conn.execute_batch("PRAGMA foreign_keys = ON;").map_err(|e| self.err(e))?;
        applied
    }

    fn apply_migrations(&mut self, current: u32) -> Result<Vec<&'static str>, LedgerError> {
        let mut applied = Vec::new();
        for &(version, name, sql) in MIGRATIONS.iter().filter(|m| m.0 > current) {
            let path = self.path.clone();
            let e = |source: rusqlite::Error| LedgerError::Db { path: path.clone(), source: source.into() };
            let conn = self.conn.sqlite_mut().ok_or_else(|| LedgerError::Io {
                path: path.clone(),
                reason: "SQLite's migrations run on an SQLite ledger only".into(),
            })?;
            let tx = conn.transaction().map_err(e)?;
            tx.execute_batch(sql).map_err(e)?;
            let broken: Option<String> = tx
                .query_row(
                    "SELECT \"table\" || ' rows referring to missing ' || parent FROM pragma_foreign_key_check LIMIT 1",
                    [],
                    |r| r.get(0),
                )
                .map(Some)
                .or_else(|e| if e == rusqlite::Error::QueryReturnedNoRows { Ok(None) } else { Err(e) })
                .map_err(e)?;
            if let Some(row) = broken {
                return Err(LedgerError::Io {
                    path: path.clone(),
                    reason: format!("migration {name} would leave {row} rows; nothing was changed"),
                });
            }
            tx.execute(
                "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?1, ?2, strftime('%s','now'))",
                rusqlite::params![version, name],
            )
            .map_err(e)?;
            tx.commit().map_err(e)?;
            applied.push(name);
        }
        Ok(applied)
    }

    pub fn schema_version(&self) -> Result<u32, LedgerError> {
        self.check_version()
    }
}

/// Checkpoints the WAL from a thread of its own, so the connection that writes under
/// slurmctld's locks never pays for it: an automatic checkpoint (with its fsync) in
/// the committing connection made the plugin's p99 ~7 ms instead of ~0.4 ms.
/// The writing connection turns automatic checkpoints off (`Ledger::without_autocheckpoint`).
pub struct Checkpointer {
    stop: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// How often the WAL is folded back into the database. Each checkpoint stalls the
/// commit that meets it by 0.5 to 3 ms (a submission's p99 was 1.1 ms with one every
/// 250 ms and 0.16 ms with one every 2 s, on 2 cores at 95 submissions a second), so
/// they are rare; a long WAL is still rewound within the round (WAL_REWIND_FRAMES).
pub const CHECKPOINT_INTERVAL_MS: u64 = 2000;

/// WAL length (frames of one page) past which checkpoint passes follow each other
/// 1 ms apart instead of CHECKPOINT_INTERVAL_MS. With one pass per interval, a WAL under
/// steady submissions was never rewound (2.9 GB after a 40,000-transaction benchmark),
/// so every commit extended the file and every page read searched a longer WAL index.
/// 4,096 frames is 16 MiB at 4 KiB pages.
pub const WAL_REWIND_FRAMES: i64 = 4096;

/// Passes per round while the WAL is long; then the thread sleeps a full interval.
const MAX_PASSES_PER_ROUND: usize = 200;

impl Checkpointer {
    pub fn start(path: &Path) -> Checkpointer {
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let path = path.to_path_buf();
        let thread = std::thread::Builder::new()
            .name("asbb-checkpoint".into())
            .spawn(move || {
                let mut conn: Option<Connection> = None;
                while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
                    stopped.recv_timeout(Duration::from_millis(CHECKPOINT_INTERVAL_MS))
                {
                    if conn.is_none() {
                        // No busy wait: a checkpoint that meets a writer or reader gives
                        // up at once and tries again next pass.
                        conn = Connection::open_with_flags(
                            &path,
                            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NOFOLLOW,
                        )
                        .and_then(|c| c.busy_timeout(Duration::ZERO).map(|()| c))
                        .ok();
                    }
                    // A failure drops the connection; the next round reopens it.
                    if !conn.as_ref().is_some_and(|c| checkpoint_round(c, &stopped)) {
                        conn = None;
                    }
                }
            })
            .ok();
        Checkpointer { stop: Some(stop), thread }
    }
}

/// One round of PASSIVE checkpoints, which never wait for readers or writers. SQLite
/// rewinds the WAL only when a write begins after a checkpoint has copied all of it, so
/// while the WAL is long the passes follow each other closely: each then copies only
/// the few frames written since the last one and is likely to finish between two
/// submissions. False on an error.
fn checkpoint_round(conn: &Connection, stop: &std::sync::mpsc::Receiver<()>) -> bool {
    // (busy, frames in the WAL, frames copied)
    let checkpoint = |mode: &str| {
        conn.query_row(&format!("PRAGMA wal_checkpoint({mode})"), (), |r| {
            Ok((r.get::<_, i64>(0)? != 0, r.get::<_, i64>(1)?, r.get::<_, i64>(2)?))
        })
    };
    let mut previous = None;
    for _pass in 0..MAX_PASSES_PER_ROUND {
        match checkpoint("PASSIVE") {
            // Nothing was written since the last pass, so all of it is copied and the
            // next write rewinds the WAL: no need to go on.
            Ok((_, log_frames, _)) if previous == Some(log_frames) => return true,
            // All of a long WAL is copied, but a writer whose read snapshot began while
            // frames were still uncopied does not rewind it: under back-to-back writes
            // none ever did. RESTART rewinds it now if no reader is inside it; with no
            // busy wait on this connection it takes the write lock only between two
            // transactions, or gives up at once and the next pass tries again (one try
            // a round left the WAL at 1.7 GB after 20,000 back-to-back submissions).
            //
            // RESTART holds the write lock while it copies and syncs whatever was
            // committed since the last pass, and a sync can outlast a submission's bound
            // (the ledger bench saw writers give up busy behind it). So it runs only
            // right after a second pass, which copies nothing and so syncs nothing, finds
            // that nothing was committed meanwhile: then it holds the lock for
            // microseconds.
            Ok((_, log_frames, copied)) if log_frames > WAL_REWIND_FRAMES && copied == log_frames => {
                match checkpoint("PASSIVE") {
                    Ok((_, again, copied)) if again == log_frames && copied == log_frames => {
                        match checkpoint("RESTART") {
                            Ok((false, _, _)) => return true,
                            // A writer or a reader was inside; if nothing is written before
                            // the next pass, the round ends there (a reader keeps it busy).
                            Ok((true, _, _)) => previous = Some(log_frames),
                            Err(_) => return false,
                        }
                    }
                    Ok((_, again, _)) => previous = Some(again),
                    Err(_) => return false,
                }
            }
            Ok((_, log_frames, _)) if log_frames > WAL_REWIND_FRAMES => previous = Some(log_frames),
            Ok(_) => return true,
            Err(_) => return false,
        }
        // Waits 1 ms, or ends the round at once when the Checkpointer is dropped.
        if !matches!(stop.recv_timeout(Duration::from_millis(1)), Err(std::sync::mpsc::RecvTimeoutError::Timeout)) {
            return true;
        }
    }
    true
}

impl Drop for Checkpointer {
    /// Stops and joins the thread: a plugin's code must not run after `fini`.
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A row of `accounts`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountRow {
    pub id: i64,
    pub name: String,
    pub status: String,
    pub credit_limit: Money,
    pub description: Option<String>,
    pub created_at: i64,
    pub held: Money,
    pub overdraft: Money,
}

/// A row of `allocations`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllocationRow {
    pub id: i64,
    pub account_id: i64,
    pub amount: Money,
    pub valid_from: i64,
    pub valid_until: i64,
    pub memo: Option<String>,
    pub debited: Money,
    /// The grant that funds it, if any.
    pub grant_id: Option<i64>,
}

impl AllocationRow {
    pub fn remaining(&self) -> Money {
        Money::from_micros(self.amount.micros() - self.debited.micros())
    }

    pub fn is_active(&self, now: i64) -> bool {
        self.valid_from <= now && now < self.valid_until
    }
}

impl JobRow {
    /// The request the job was last priced with (`account`: its account's name).
    pub fn request(&self, account: &str) -> JobRequest {
        JobRequest {
            user: self.user_name.clone(),
            uid: self.uid,
            account: account.to_string(),
            partition: self.partition.clone(),
            resources: self.resources.clone(),
            time_limit_min: self.time_limit_min,
            array_tasks: self.tasks_total,
            qos: self.qos.clone(),
            job_id: self.job_id,
            job_name: self.job_name.clone(),
        }
    }
}

/// A row of `jobs`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobRow {
    pub token: String,
    pub account_id: i64,
    pub user_name: String,
    pub uid: u32,
    pub partition: String,
    pub job_id: Option<u32>,
    pub job_name: Option<String>,
    /// Per array task, as requested (and as a modify last changed it).
    pub resources: Resources,
    /// 0 for a row migrated from a request that did not say.
    pub time_limit_min: u32,
    pub qos: Option<String>,
    pub estimate: Money,
    pub tasks_total: u32,
    pub tasks_done: u32,
    pub held: Money,
    pub hold_placed: Money,
    pub charged: Money,
    pub state: JobState,
    pub reason: Option<String>,
    pub submitted_at: i64,
    pub settled_at: Option<i64>,
    /// From the job's metadata (`domain=`); groups learning samples.
    pub research_domain: Option<String>,
    /// The grant the job holds and is charged against (named, or its account's
    /// default); `None`: the account's allocations, the one ending first first.
    pub grant_number: Option<String>,
}

/// A grant as the submit path sees it: who it funds, whether it is open, and what
/// its jobs hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrantFunds {
    pub id: i64,
    pub number: String,
    pub status: String,
    /// The account it funds (`None`: a record that funds no account).
    pub account_id: Option<i64>,
    /// The open holds of the jobs that name it.
    pub held: Money,
}

/// Where a priced job stands (the `jobs.state` column).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobState {
    /// Funds held; the job may run.
    Held,
    /// Submitted held until an admin approves it.
    AwaitingApproval,
    /// Submitted held until its account can cover it.
    AwaitingFunds,
    /// Every run charged, the rest of the hold released.
    Settled,
    /// Ended without charge (cancelled before it ran, never created).
    Released,
    /// Refused by an admin.
    Denied,
}

impl JobState {
    pub const ALL: [JobState; 6] = [
        JobState::Held,
        JobState::AwaitingApproval,
        JobState::AwaitingFunds,
        JobState::Settled,
        JobState::Released,
        JobState::Denied,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Held => "held",
            JobState::AwaitingApproval => "awaiting_approval",
            JobState::AwaitingFunds => "awaiting_funds",
            JobState::Settled => "settled",
            JobState::Released => "released",
            JobState::Denied => "denied",
        }
    }

    /// Not finished: it holds money, or may yet.
    pub fn is_open(self) -> bool {
        matches!(self, JobState::Held | JobState::AwaitingApproval | JobState::AwaitingFunds)
    }

    /// Submitted held, waiting for an approval or for funds.
    pub fn is_waiting(self) -> bool {
        matches!(self, JobState::AwaitingApproval | JobState::AwaitingFunds)
    }
}

impl std::fmt::Display for JobState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl db::ToCell for JobState {
    fn to_cell(&self) -> db::Cell<'_> {
        db::Cell::Text(self.as_str())
    }
}

impl db::FromCell for JobState {
    fn from_cell(cell: db::Cell<'_>) -> Result<Self, String> {
        let text = <String as db::FromCell>::from_cell(cell)?;
        JobState::ALL.into_iter().find(|s| s.as_str() == text).ok_or_else(|| format!("unknown job state '{text}'"))
    }
}

/// What a journal entry records (the `kind` column).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    /// Money into an allocation.
    Deposit,
    /// Money set aside for a job (positive), or more of it.
    Hold,
    /// A hold given back.
    Release,
    /// A run's cost, against an allocation or as overdraft.
    Charge,
    /// Cost given back by an admin.
    Refund,
    /// A signed correction of cost (positive = more cost).
    Adjustment,
    /// An allocation's unspent rest, when its grant closes.
    Expiry,
}

impl EntryKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EntryKind::Deposit => "deposit",
            EntryKind::Hold => "hold",
            EntryKind::Release => "release",
            EntryKind::Charge => "charge",
            EntryKind::Refund => "refund",
            EntryKind::Adjustment => "adjustment",
            EntryKind::Expiry => "expiry",
        }
    }
}

impl db::ToCell for EntryKind {
    fn to_cell(&self) -> db::Cell<'_> {
        db::Cell::Text(self.as_str())
    }
}

/// One journal entry to write; only [`postings`] writes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NewEntry<'a> {
    pub txn_key: &'a str,
    pub part: u32,
    pub kind: EntryKind,
    pub account_id: i64,
    pub allocation_id: Option<i64>,
    pub amount: Money,
    pub token: Option<&'a str>,
    pub job_id: Option<u32>,
    pub at: i64,
    pub actor: Option<&'a str>,
    pub memo: Option<&'a str>,
}

/// A journal entry as read back.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct EntryRow {
    pub id: i64,
    pub txn_key: String,
    pub part: u32,
    pub kind: String,
    pub account: String,
    pub allocation_id: Option<i64>,
    pub amount: Money,
    pub token: Option<String>,
    pub job_id: Option<u32>,
    pub at: i64,
    pub actor: Option<String>,
    pub memo: Option<String>,
}

pub(crate) const ACCOUNT_COLS: &str =
    "id, name, status, credit_limit_micros, description, created_at, held_micros, overdraft_micros";
/// The condition of the journal's key index (`journal_key`): every key but a job's
/// first hold, `hold:<token>`, and a run's charge and release, `charge:<run_key>` and
/// `release-run:<run_key>` (the job's and the run's rows keep those unique). A look-up by key repeats it, or SQLite cannot use the index.
pub(crate) const INDEXED_KEY: &str = "substr(txn_key, 1, 5) <> 'hold:' AND substr(txn_key, 1, 7) <> 'charge:'
      AND substr(txn_key, 1, 12) <> 'release-run:'";

pub(crate) const JOB_COLS: &str = "token, account_id, user_name, uid, partition, job_id, job_name, nodes, cpus, mem_mb, gpus, time_limit_min, qos, estimate_micros, tasks_total, tasks_done, held_micros, hold_placed_micros, charged_micros, state, reason, submitted_at, settled_at, research_domain, grant_number";

// The SQL of the per-call reads, built once from the column lists (a `format!` on
// every call showed in slurmctld's profile).
static ACCOUNT_BY_NAME: Lazy<String> = Lazy::new(|| format!("SELECT {ACCOUNT_COLS} FROM accounts WHERE name = ?1"));
static ACCOUNT_BY_ID: Lazy<String> = Lazy::new(|| format!("SELECT {ACCOUNT_COLS} FROM accounts WHERE id = ?1"));
static TXN_EXISTS: Lazy<String> =
    Lazy::new(|| format!("SELECT 1 FROM journal WHERE txn_key = ?1 AND {INDEXED_KEY} LIMIT 1"));
static JOB_BY_TOKEN: Lazy<String> = Lazy::new(|| format!("SELECT {JOB_COLS} FROM jobs WHERE token = ?1"));

pub(crate) fn account_from_row(r: &db::Row<'_>) -> db::Result<AccountRow> {
    Ok(AccountRow {
        id: r.get(0)?,
        name: r.get(1)?,
        status: r.get(2)?,
        credit_limit: Money::from_micros(r.get(3)?),
        description: r.get(4)?,
        created_at: r.get(5)?,
        held: Money::from_micros(r.get(6)?),
        overdraft: Money::from_micros(r.get(7)?),
    })
}

pub(crate) fn job_from_row(r: &db::Row<'_>) -> db::Result<JobRow> {
    let gpus_text: Option<String> = r.get(10)?;
    let gpus = Resources::gpus_from_text(gpus_text.as_deref())
        .map_err(|reason| db::DbError::Column { column: 10, reason: reason.to_string() })?;
    Ok(JobRow {
        token: r.get(0)?,
        account_id: r.get(1)?,
        user_name: r.get(2)?,
        uid: r.get(3)?,
        partition: r.get(4)?,
        job_id: r.get(5)?,
        job_name: r.get(6)?,
        resources: Resources { nodes: r.get(7)?, cpus: r.get(8)?, mem_mb: r.get(9)?, gpus },
        time_limit_min: r.get(11)?,
        qos: r.get(12)?,
        estimate: Money::from_micros(r.get(13)?),
        tasks_total: r.get(14)?,
        tasks_done: r.get(15)?,
        held: Money::from_micros(r.get(16)?),
        hold_placed: Money::from_micros(r.get(17)?),
        charged: Money::from_micros(r.get(18)?),
        state: r.get(19)?,
        reason: r.get(20)?,
        submitted_at: r.get(21)?,
        settled_at: r.get(22)?,
        research_domain: r.get(23)?,
        grant_number: r.get(24)?,
    })
}

/// Row-level reads and writes used inside a transaction. BEGIN and COMMIT run as cached
/// statements (rusqlite's `Transaction` parses them again on every call, a tenth of a
/// submission's time inside slurmctld); dropped without `commit`, it rolls back.
pub(crate) struct Tx<'c> {
    tx: &'c Conn,
    path: &'c Path,
    committed: bool,
}

impl<'c> Tx<'c> {
    /// A write transaction that takes the write lock now (waiting at most the busy timeout).
    pub fn write(ledger: &'c mut Ledger) -> Result<Tx<'c>, LedgerError> {
        Tx::begin(ledger, true)
    }

    /// A read transaction: one consistent snapshot.
    pub fn read(ledger: &'c mut Ledger) -> Result<Tx<'c>, LedgerError> {
        Tx::begin(ledger, false)
    }

    /// A read transaction on a ledger others may also use through `&` (a copy's source).
    pub(crate) fn read_shared(ledger: &'c Ledger) -> Result<Tx<'c>, LedgerError> {
        let tx = Tx { tx: &ledger.conn, path: &ledger.path, committed: false };
        tx.sql(|c| c.begin(false))?;
        Ok(tx)
    }

    /// On PostgreSQL, a write transaction that decides from what the ledger was at
    /// clock `clock` and commits in one round trip, or not at all if the clock has
    /// moved (then `commit` fails with [`LedgerError::is_changed`]): see
    /// [`db::postgres::PgConn::begin_optimistic`]. Only on PostgreSQL.
    pub fn optimistic(ledger: &'c mut Ledger, clock: i64) -> Result<Tx<'c>, LedgerError> {
        let tx = Tx { tx: &ledger.conn, path: &ledger.path, committed: false };
        if !tx.tx.begin_optimistic(clock) {
            return Err(tx.err(db::DbError::Setup("an SQLite ledger has no optimistic transactions".into())));
        }
        Ok(tx)
    }

    /// On PostgreSQL, sends this transaction's writes from here on with its COMMIT, in
    /// one round trip; each counts as changing one row, so only for writes whose counts
    /// nobody reads, after the last read. Nothing changes on SQLite (no round trips).
    pub(crate) fn defer_writes(&self) {
        self.tx.defer_writes();
    }

    /// PostgreSQL's ledger clock as this write transaction's reads see it (`None` on SQLite).
    pub(crate) fn clock(&self) -> Option<i64> {
        self.tx.clock()
    }

    /// See [`Ledger::change_count`].
    pub(crate) fn change_count(&self) -> u64 {
        self.tx.change_count()
    }

    fn begin(ledger: &'c mut Ledger, write: bool) -> Result<Tx<'c>, LedgerError> {
        let tx = Tx { tx: &ledger.conn, path: &ledger.path, committed: false };
        tx.sql(|c| c.begin(write))?;
        Ok(tx)
    }

    /// Commits; on failure the transaction is rolled back (when `self` drops).
    pub fn commit(mut self) -> Result<(), LedgerError> {
        self.sql(|c| c.end(true))?;
        self.committed = true;
        Ok(())
    }

    /// The SQLite connection underneath (`None` on PostgreSQL).
    pub(crate) fn sqlite(&self) -> Option<&'c Connection> {
        self.tx.sqlite()
    }

    pub fn err(&self, source: impl Into<db::DbError>) -> LedgerError {
        LedgerError::Db { path: self.path.to_path_buf(), source: source.into() }
    }

    /// Runs SQL on this transaction's connection; an error names the ledger's file.
    pub(crate) fn sql<T>(&self, run: impl FnOnce(&'c Conn) -> db::Result<T>) -> Result<T, LedgerError> {
        run(self.tx).map_err(|source| self.err(source))
    }

    pub fn account_by_name(&self, name: &str) -> Result<Option<AccountRow>, LedgerError> {
        self.sql(|c| c.prepare_cached(&ACCOUNT_BY_NAME)?.query_row([name], account_from_row).optional())
    }

    pub fn account_by_id(&self, id: i64) -> Result<AccountRow, LedgerError> {
        self.sql(|c| c.prepare_cached(&ACCOUNT_BY_ID)?.query_row([id], account_from_row))
    }

    pub fn allocations(&self, account_id: i64) -> Result<Vec<AllocationRow>, LedgerError> {
        self.sql(|c| allocations_of(c, account_id))
    }

    /// What a decision needs of the grant a job names: `None` when no grant has
    /// that number.
    pub fn grant_funds(&self, number: &str) -> Result<Option<GrantFunds>, LedgerError> {
        self.sql(|c| {
            c.prepare_cached(
                "SELECT id, grant_number, status, budget_account_id, held_micros FROM grant_accounts WHERE grant_number = ?1",
            )?
            .query_row([number], |r| {
                Ok(GrantFunds {
                    id: r.get(0)?,
                    number: r.get(1)?,
                    status: r.get(2)?,
                    account_id: r.get(3)?,
                    held: Money::from_micros(r.get(4)?),
                })
            })
            .optional()
        })
    }

    pub fn job(&self, token: &str) -> Result<Option<JobRow>, LedgerError> {
        self.sql(|c| job_by_token(c, token))
    }

    pub fn txn_exists(&self, txn_key: &str) -> Result<bool, LedgerError> {
        debug_assert!(
            !["hold:", "charge:", "release-run:"].iter().any(|p| txn_key.starts_with(p)),
            "{txn_key} is not indexed"
        );
        self.sql(|c| c.prepare_cached(&TXN_EXISTS)?.exists([txn_key]))
    }

    fn insert_entry(&self, e: &NewEntry<'_>) -> Result<(), LedgerError> {
        self.sql(|c| {
            c.prepare_cached(
                "INSERT INTO journal (txn_key, part, kind, account_id, allocation_id, amount_micros, token, job_id, at, actor, memo)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
            )?
            .execute(params![
                e.txn_key,
                e.part,
                e.kind,
                e.account_id,
                e.allocation_id,
                e.amount.micros(),
                e.token,
                e.job_id,
                e.at,
                e.actor,
                e.memo
            ])
        })?;
        Ok(())
    }

    /// Adds `delta` to one cached total (`sql` is its UPDATE, keyed by ?1).
    fn add_to(&self, sql: &str, key: &dyn db::ToCell, delta: i64) -> Result<(), LedgerError> {
        self.sql(|c| c.prepare_cached(sql)?.execute(&[key, &delta] as &[&dyn db::ToCell]))?;
        Ok(())
    }

    fn add_account_held(&self, account_id: i64, delta: i64) -> Result<(), LedgerError> {
        self.add_to("UPDATE accounts SET held_micros = held_micros + ?2 WHERE id = ?1", &account_id, delta)
    }

    /// Keeps a grant's open holds in step with its jobs' (`grant_number` is unique).
    fn add_grant_held(&self, grant_number: &str, delta: i64) -> Result<(), LedgerError> {
        self.add_to(
            "UPDATE grant_accounts SET held_micros = held_micros + ?2 WHERE grant_number = ?1",
            &grant_number,
            delta,
        )
    }

    fn add_account_overdraft(&self, account_id: i64, delta: i64) -> Result<(), LedgerError> {
        self.add_to("UPDATE accounts SET overdraft_micros = overdraft_micros + ?2 WHERE id = ?1", &account_id, delta)
    }

    fn add_allocation_debit(&self, allocation_id: i64, delta: i64) -> Result<(), LedgerError> {
        self.add_to("UPDATE allocations SET debited_micros = debited_micros + ?2 WHERE id = ?1", &allocation_id, delta)
    }

    /// A new job token: 10 hex digits counting jobs (one more than the latest token's),
    /// then 6 random ones. Tokens of successive jobs sort in order, so the job rows
    /// (stored in token order) and the indexes keyed by token grow at their right
    /// edge: a submit touches the same few hot pages instead of a random leaf each.
    pub fn new_token(&self) -> Result<String, LedgerError> {
        let latest = self.latest_token_count()?;
        let random: i64 = self.sql(|c| c.prepare_cached("SELECT random()")?.query_row((), |r| r.get(0)))?;
        Ok(token_text(latest.saturating_add(1), (random & 0xff_ffff) as u32))
    }

    /// The count in the latest job token.
    pub(crate) fn latest_token_count(&self) -> Result<u64, LedgerError> {
        self.sql(|c| {
            let latest: Option<String> =
                c.prepare_cached("SELECT max(token) FROM jobs")?.query_row((), |r| r.get(0))?;
            // Ledgers from before counted tokens hold random hex ones, which count too; a
            // latest token that is not hex at all (none asbb wrote) falls back to counting.
            Ok(match latest.as_deref().map(|t| t.get(..10).and_then(|h| u64::from_str_radix(h, 16).ok())) {
                None => 0,
                Some(Some(n)) => n,
                Some(None) => c.query_row("SELECT count(*) FROM jobs", (), |r| r.get(0))?,
            })
        })
    }
}

/// A job token: `count` as 10 hex digits, then 24 random bits as 6.
pub(crate) fn token_text(count: u64, random_24_bits: u32) -> String {
    format!("{count:010x}{:06x}", random_24_bits & 0xff_ffff)
}

/// An account's allocations, the one ending first first.
fn allocations_of(c: &Conn, account_id: i64) -> db::Result<Vec<AllocationRow>> {
    let mut stmt = c.prepare_cached(
        "SELECT id, account_id, amount_micros, valid_from, valid_until, memo, debited_micros, grant_id
             FROM allocations WHERE account_id = ?1 ORDER BY valid_until, id",
    )?;
    let rows = stmt.query_map([account_id], |r| {
        Ok(AllocationRow {
            id: r.get(0)?,
            account_id: r.get(1)?,
            amount: Money::from_micros(r.get(2)?),
            valid_from: r.get(3)?,
            valid_until: r.get(4)?,
            memo: r.get(5)?,
            debited: Money::from_micros(r.get(6)?),
            grant_id: r.get(7)?,
        })
    })?;
    rows.collect()
}

/// The job with hold token `token`.
fn job_by_token(c: &Conn, token: &str) -> db::Result<Option<JobRow>> {
    c.prepare_cached(&JOB_BY_TOKEN)?.query_row([token], job_from_row).optional()
}

impl Drop for Tx<'_> {
    /// Rolls back what was not committed (an error or early return inside it). An
    /// error here means SQLite already ended the transaction itself.
    fn drop(&mut self) {
        if !self.committed && !self.tx.is_autocommit() {
            let _ = self.tx.end(false);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_transaction_dropped_without_commit_leaves_nothing_and_the_connection_usable() {
        let dir = tempfile::tempdir().unwrap();
        let mut ledger = Ledger::open(&dir.path().join("l.db"), OpenMode::CreateIfMissing, 100).unwrap();
        let insert = "INSERT INTO accounts (name, created_at) VALUES (?1, 0)";
        {
            let tx = Tx::write(&mut ledger).unwrap();
            tx.tx.execute(insert, ["dropped"]).unwrap();
        }
        assert!(ledger.conn.is_autocommit(), "the drop rolled the transaction back");
        let tx = Tx::write(&mut ledger).unwrap();
        tx.tx.execute(insert, ["kept"]).unwrap();
        tx.commit().unwrap();
        let names: Vec<String> = ledger
            .conn
            .prepare("SELECT name FROM accounts ORDER BY name")
            .unwrap()
            .query_map((), |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(names, ["kept"]);
        // A read transaction ends the same way, and a write can follow it.
        drop(Tx::read(&mut ledger).unwrap());
        assert!(ledger.conn.is_autocommit());
        Tx::write(&mut ledger).unwrap().commit().unwrap();
    }

    #[test]
    fn tokens_of_successive_jobs_sort_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let mut ledger = Ledger::open(&dir.path().join("l.db"), OpenMode::CreateIfMissing, 100).unwrap();
        let mut tokens = Vec::new();
        for i in 0..3 {
            let tx = Tx::write(&mut ledger).unwrap();
            let token = tx.new_token().unwrap();
            assert_eq!(token.len(), 16);
            assert!(token.chars().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()), "{token}");
            tx.tx
                .execute("INSERT INTO accounts (name, created_at) VALUES (?1, 0) ON CONFLICT (name) DO NOTHING", ["a"])
                .unwrap();
            tx.tx
                .execute(
                    "INSERT INTO jobs (token, account_id, user_name, uid, partition, estimate_micros,
                       tasks_total, state, submitted_at)
                     VALUES (?1, 1, 'u', 1, 'p', 0, 1, 'held', ?2)",
                    params![token, i],
                )
                .unwrap();
            tx.commit().unwrap();
            tokens.push(token);
        }
        assert!(tokens.windows(2).all(|w| w[0] < w[1]), "{tokens:?}");
        assert!(tokens[0].starts_with("0000000001"), "{tokens:?}");
    }
}
