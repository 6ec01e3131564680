// SPDX-License-Identifier: GPL-2.0-or-later
//! A ledger on PostgreSQL: `ledger = "postgresql://user@host:port/db?password_file=PATH"`.
//! The password is never in the URL: `password_file` names a file of SlurmUser's (or
//! root's), readable by its owner only, whose first line is the password. Opening
//! applies the whole schema to an empty database (`sql/postgres/`), as a new SQLite
//! file gets it.

use super::db::{self, postgres::PgConn, Conn};
use super::{Ledger, LedgerError, OpenMode, SchemaAge, LATEST_SCHEMA};
use crate::core::safe_fs;
use std::path::{Path, PathBuf};

/// The PostgreSQL schema, as of the SQLite migrations' latest version.
const SCHEMA: (u32, &str, &str) = (11, "011_schema", include_str!("../../../sql/postgres/011_schema.sql"));

/// The ledger's clock (see the file), which schema 11 on PostgreSQL gained after its
/// first ledgers were made: applied with the schema, or alone to such a ledger.
const CLOCK: (&str, &str) = ("011_clock", include_str!("../../../sql/postgres/011_clock.sql"));

use super::PASSWORD_FILE_PARAM;

/// A password file is a line, not a document.
const MAX_PASSWORD_FILE_BYTES: u64 = 4096;

/// `url` without asbb's own parameters, and the password file it names (see
/// [`super::password_file_param`]).
fn split_url(url: &str) -> Result<(String, Option<PathBuf>), String> {
    let file = super::password_file_param(url)?;
    let Some((base, query)) = url.split_once('?') else { return Ok((url.to_string(), file)) };
    let kept: Vec<&str> =
        query.split('&').filter(|kv| !kv.is_empty() && !kv.starts_with(&format!("{PASSWORD_FILE_PARAM}="))).collect();
    let url = if kept.is_empty() { base.to_string() } else { format!("{base}?{}", kept.join("&")) };
    Ok((url, file))
}

/// Reads the password: the first line of a regular file owned by root, SlurmUser or
/// the caller, that nobody else can read or write.
fn read_password(path: &Path) -> Result<Vec<u8>, String> {
    use std::os::unix::fs::PermissionsExt;
    let what = |e: String| format!("password file {}: {e}", path.display());
    let mode = std::fs::symlink_metadata(path).map_err(|e| what(format!("cannot read: {e}")))?.permissions().mode();
    if mode & 0o077 != 0 {
        return Err(what(format!("mode {:o} lets others read or change it; make it 0600 or 0400", mode & 0o777)));
    }
    let bytes = safe_fs::read_trusted_file(path, MAX_PASSWORD_FILE_BYTES).map_err(what)?;
    let line = bytes.split(|b| *b == b'\n').next().unwrap_or_default();
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if line.is_empty() {
        return Err(what("its first line is empty".into()));
    }
    Ok(line.to_vec())
}

impl Ledger {
    /// Opens the PostgreSQL ledger at `url` (see the module's documentation).
    pub(super) fn open_postgres(
        url: &str,
        mode: OpenMode,
        busy_timeout_ms: u32,
        age: SchemaAge,
    ) -> Result<Ledger, LedgerError> {
        let shown = super::shown_location(Path::new(url));
        let io = |reason: String| LedgerError::Io { path: shown.clone(), reason };
        let (url, password_file) = split_url(url).map_err(io)?;
        let path = PathBuf::from(db::postgres::redacted(&url));
        let password = password_file.as_deref().map(read_password).transpose().map_err(io)?;
        let conn = PgConn::connect(&url, password.as_deref(), busy_timeout_ms)
            .map_err(|source| LedgerError::Db { path: path.clone(), source })?;
        let mut ledger = Ledger { conn: Conn::from_postgres(conn), path: path.clone() };
        if mode == OpenMode::ReadOnly {
            ledger.sql(|c| c.execute_batch("SET default_transaction_read_only = on"))?;
        }
        let found = ledger.check_version()?;
        // Only an admin's command makes the tables (never a plugin, under slurmctld's
        // locks and its short bound).
        if found == 0 && mode == OpenMode::CreateIfMissing && ledger.postgres_is_empty()? {
            ledger.migrate()?;
        } else if found == 0 && ledger.postgres_is_empty()? {
            return Err(LedgerError::Missing(ledger.path.clone()));
        } else if found == 0 {
            return Err(io(
                "the database holds no asbb ledger; `asbb-admin account create` makes one in an empty database".into(),
            ));
        } else if found < LATEST_SCHEMA && age == SchemaAge::Current {
            return Err(LedgerError::Outdated { path: ledger.path.clone(), found, known: LATEST_SCHEMA });
        } else if age == SchemaAge::Current && !ledger.has_clock()? {
            return Err(io(
                "the ledger has no clock (it was made by an earlier build of schema 11); run `asbb-admin migrate` (outside slurmctld) to add it".into(),
            ));
        }
        Ok(ledger)
    }

    /// The ledger's clock is there (see [`CLOCK`]).
    fn has_clock(&self) -> Result<bool, LedgerError> {
        self.sql(|c| c.query_row("SELECT to_regclass('ledger_clock') IS NOT NULL", (), |r| r.get(0)))
    }

    /// No tables in the connection's schema.
    fn postgres_is_empty(&self) -> Result<bool, LedgerError> {
        self.sql(|c| {
            c.query_row("SELECT count(*) = 0 FROM pg_tables WHERE schemaname = current_schema()", (), |r| r.get(0))
        })
    }

    pub(super) fn postgres_has_migrations(&self) -> Result<bool, LedgerError> {
        self.sql(|c| c.query_row("SELECT to_regclass('schema_migrations') IS NOT NULL", (), |r| r.get(0)))
    }

    /// Brings a PostgreSQL ledger to this build's schema, in one transaction that holds
    /// the ledger's write lock: an empty database gets the whole schema.
    pub(super) fn migrate_postgres(&mut self) -> Result<Vec<&'static str>, LedgerError> {
        let path = self.path.clone();
        let conn = &self.conn;
        let run = || -> db::Result<Vec<&'static str>> {
            conn.begin_migration()?;
            conn.execute_batch(
                "CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT PRIMARY KEY, name TEXT NOT NULL, applied_at BIGINT NOT NULL)",
            )?;
            let current: u32 =
                conn.query_row("SELECT coalesce(max(version), 0) FROM schema_migrations", (), |r| r.get(0))?;
            let mut applied = Vec::new();
            if current == 0 {
                let (version, name, sql) = SCHEMA;
                conn.execute_batch(sql)?;
                conn.execute(
                    "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?1, ?2, extract(epoch from now())::bigint)",
                    db::params![version, name],
                )?;
                applied.push(name);
            }
            if !conn.query_row("SELECT to_regclass('ledger_clock') IS NOT NULL", (), |r| r.get(0))? {
                let (name, sql) = CLOCK;
                conn.execute_batch(sql)?;
                applied.push(name);
            }
            conn.end(true)?;
            Ok(applied)
        };
        let result = run();
        if !conn.is_autocommit() {
            let _ = conn.end(false);
        }
        result.map_err(|source| LedgerError::Db { path, source })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_password_file_parameter_is_asbbs_and_leaves_the_url() {
        assert_eq!(
            split_url("postgresql://asbb@db/ledger?password_file=/etc/slurm/asbb.pw&connect_timeout=2"),
            Ok((
                "postgresql://asbb@db/ledger?connect_timeout=2".to_string(),
                Some(PathBuf::from("/etc/slurm/asbb.pw"))
            ))
        );
        assert_eq!(split_url("postgresql://asbb@db/ledger"), Ok(("postgresql://asbb@db/ledger".to_string(), None)));
        // Two would let the admin check and the password read use different files.
        assert_eq!(
            split_url("postgresql://asbb@db/l?password_file=/a&password_file=/b"),
            Err("the URL names `password_file` twice".to_string())
        );
    }

    #[test]
    fn a_password_file_others_can_read_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pw");
        std::fs::write(&file, "s3cret\nignored\n").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o640)).unwrap();
        let e = read_password(&file).unwrap_err();
        assert!(e.ends_with("mode 640 lets others read or change it; make it 0600 or 0400"), "{e}");
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(read_password(&file).unwrap(), b"s3cret");
    }
}
