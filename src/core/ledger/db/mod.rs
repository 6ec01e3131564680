// SPDX-License-Identifier: GPL-2.0-or-later
//! The SQL connection the store speaks through: statements, parameters and rows in
//! terms of asbb's own [`Cell`], not one driver's types. The store's SQL is written
//! once; what a value is (an integer, a text, NULL) is decided here, and a column
//! that does not hold what the store reads is a [`DbError::Column`] naming it.
//!
//! Only the ledger's own plumbing (opening, PRAGMAs, migrations, checkpoints, the
//! read cache's change counters) reaches the SQLite connection underneath
//! ([`Conn::sqlite`]).

use rusqlite::types::{ToSqlOutput, ValueRef};

#[cfg(feature = "postgres")]
pub mod postgres;

pub type Result<T> = std::result::Result<T, DbError>;

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error(transparent)]
    Sqlite(#[from] rusqlite::Error),
    #[cfg(feature = "postgres")]
    #[error("{}", postgres::describe(.0))]
    Postgres(tokio_postgres::Error),
    /// The server did not answer within the bound; the connection is given up.
    #[error("PostgreSQL did not answer within {0} ms; the connection is given up")]
    TimedOut(u32),
    /// An optimistic transaction found that the ledger had changed since its reads; it
    /// wrote nothing.
    #[error("the ledger changed since this connection read it")]
    Changed,
    /// A statement that must give a row gave none.
    #[error("Query returned no rows")]
    NoRows,
    /// The connection could not be set up as asbb needs it.
    #[error("{0}")]
    Setup(String),
    /// A column did not hold what the store reads from it.
    #[error("column {column}: {reason}")]
    Column { column: usize, reason: String },
}

impl DbError {
    /// The statement found no row (where one was expected).
    pub fn is_no_rows(&self) -> bool {
        matches!(self, DbError::NoRows | DbError::Sqlite(rusqlite::Error::QueryReturnedNoRows))
    }

    /// The connection to the server is gone or cannot be made (PostgreSQL: no answer
    /// within the bound, a refused or broken connection, the server shutting down),
    /// not a statement the server refused.
    pub fn is_connection_lost(&self) -> bool {
        match self {
            DbError::TimedOut(_) => true,
            #[cfg(feature = "postgres")]
            DbError::Postgres(e) => match e.code() {
                // Connection exceptions, and the server shutting down or restarting.
                Some(code) => code.code().starts_with("08") || code.code().starts_with("57P"),
                None => true,
            },
            _ => false,
        }
    }

    /// A bounded wait ran out: another writer held the ledger's write lock past it (or,
    /// on PostgreSQL, a statement did). The connection stays usable.
    pub fn is_busy(&self) -> bool {
        match self {
            DbError::Sqlite(rusqlite::Error::SqliteFailure(e, _)) => {
                matches!(e.code, rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
            }
            #[cfg(feature = "postgres")]
            DbError::Postgres(e) => postgres::is_timeout(e),
            _ => false,
        }
    }
}

/// One value as a statement takes it or a row gives it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Cell<'a> {
    Null,
    Int(i64),
    Real(f64),
    Text(&'a str),
    Blob(&'a [u8]),
}

/// A value a statement can take.
pub trait ToCell {
    fn to_cell(&self) -> Cell<'_>;
}

/// A value a row's column can be read as.
pub trait FromCell: Sized {
    fn from_cell(cell: Cell<'_>) -> std::result::Result<Self, String>;
}

macro_rules! int_cells {
    ($($t:ty),*) => {$(
        impl ToCell for $t {
            fn to_cell(&self) -> Cell<'_> {
                Cell::Int(i64::from(*self))
            }
        }
        impl FromCell for $t {
            fn from_cell(cell: Cell<'_>) -> std::result::Result<Self, String> {
                match cell {
                    Cell::Int(n) => <$t>::try_from(n).map_err(|_| format!("{n} is out of range for {}", stringify!($t))),
                    other => Err(format!("expected an integer, found {}", other.kind())),
                }
            }
        }
    )*};
}
int_cells!(i64, i32, u32, u16, u8);

impl ToCell for usize {
    fn to_cell(&self) -> Cell<'_> {
        // Counts and limits: never near i64::MAX.
        Cell::Int(i64::try_from(*self).unwrap_or(i64::MAX))
    }
}

impl FromCell for usize {
    fn from_cell(cell: Cell<'_>) -> std::result::Result<Self, String> {
        let n = i64::from_cell(cell)?;
        usize::try_from(n).map_err(|_| format!("{n} is not a count"))
    }
}

impl FromCell for u64 {
    fn from_cell(cell: Cell<'_>) -> std::result::Result<Self, String> {
        let n = i64::from_cell(cell)?;
        u64::try_from(n).map_err(|_| format!("{n} is negative"))
    }
}

impl ToCell for u64 {
    fn to_cell(&self) -> Cell<'_> {
        // Sizes and counts (MB, jobs): never near 2^63.
        Cell::Int(i64::try_from(*self).unwrap_or(i64::MAX))
    }
}

impl ToCell for bool {
    fn to_cell(&self) -> Cell<'_> {
        Cell::Int(i64::from(*self))
    }
}

impl FromCell for bool {
    fn from_cell(cell: Cell<'_>) -> std::result::Result<Self, String> {
        Ok(i64::from_cell(cell)? != 0)
    }
}

impl ToCell for f64 {
    fn to_cell(&self) -> Cell<'_> {
        Cell::Real(*self)
    }
}

impl FromCell for f64 {
    fn from_cell(cell: Cell<'_>) -> std::result::Result<Self, String> {
        match cell {
            Cell::Real(x) => Ok(x),
            Cell::Int(n) => Ok(n as f64),
            other => Err(format!("expected a number, found {}", other.kind())),
        }
    }
}

impl ToCell for str {
    fn to_cell(&self) -> Cell<'_> {
        Cell::Text(self)
    }
}

impl ToCell for String {
    fn to_cell(&self) -> Cell<'_> {
        Cell::Text(self)
    }
}

impl FromCell for String {
    fn from_cell(cell: Cell<'_>) -> std::result::Result<Self, String> {
        match cell {
            Cell::Text(t) => Ok(t.to_string()),
            other => Err(format!("expected a text, found {}", other.kind())),
        }
    }
}

impl ToCell for [u8] {
    fn to_cell(&self) -> Cell<'_> {
        Cell::Blob(self)
    }
}

impl ToCell for Vec<u8> {
    fn to_cell(&self) -> Cell<'_> {
        Cell::Blob(self)
    }
}

impl FromCell for Vec<u8> {
    fn from_cell(cell: Cell<'_>) -> std::result::Result<Self, String> {
        match cell {
            Cell::Blob(b) => Ok(b.to_vec()),
            other => Err(format!("expected bytes, found {}", other.kind())),
        }
    }
}

impl<T: ToCell> ToCell for Option<T> {
    fn to_cell(&self) -> Cell<'_> {
        self.as_ref().map_or(Cell::Null, ToCell::to_cell)
    }
}

impl<T: FromCell> FromCell for Option<T> {
    fn from_cell(cell: Cell<'_>) -> std::result::Result<Self, String> {
        match cell {
            Cell::Null => Ok(None),
            other => T::from_cell(other).map(Some),
        }
    }
}

impl ToCell for Cell<'_> {
    fn to_cell(&self) -> Cell<'_> {
        *self
    }
}

impl<T: ToCell + ?Sized> ToCell for &T {
    fn to_cell(&self) -> Cell<'_> {
        (**self).to_cell()
    }
}

impl Cell<'_> {
    fn kind(&self) -> &'static str {
        match self {
            Cell::Null => "NULL",
            Cell::Int(_) => "an integer",
            Cell::Real(_) => "a real",
            Cell::Text(_) => "a text",
            Cell::Blob(_) => "bytes",
        }
    }
}

impl rusqlite::ToSql for Cell<'_> {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::Borrowed(match *self {
            Cell::Null => ValueRef::Null,
            Cell::Int(n) => ValueRef::Integer(n),
            Cell::Real(x) => ValueRef::Real(x),
            Cell::Text(t) => ValueRef::Text(t.as_bytes()),
            Cell::Blob(b) => ValueRef::Blob(b),
        }))
    }
}

/// Parameters most statements take: at most this many (a job row has 25).
const MAX_PARAMS: usize = 32;

/// A statement's parameters: `params![...]`, an array of one type, or `()`.
pub trait Params {
    fn with_cells<R>(&self, run: impl FnOnce(&[Cell<'_>]) -> R) -> R;
}

impl Params for () {
    fn with_cells<R>(&self, run: impl FnOnce(&[Cell<'_>]) -> R) -> R {
        run(&[])
    }
}

impl<T: ToCell, const N: usize> Params for [T; N] {
    fn with_cells<R>(&self, run: impl FnOnce(&[Cell<'_>]) -> R) -> R {
        run(&self.each_ref().map(|p| p.to_cell()))
    }
}

impl Params for &[&dyn ToCell] {
    fn with_cells<R>(&self, run: impl FnOnce(&[Cell<'_>]) -> R) -> R {
        if self.len() <= MAX_PARAMS {
            let mut cells = [Cell::Null; MAX_PARAMS];
            for (cell, p) in cells.iter_mut().zip(self.iter()) {
                *cell = p.to_cell();
            }
            run(&cells[..self.len()])
        } else {
            run(&self.iter().map(|p| p.to_cell()).collect::<Vec<_>>())
        }
    }
}

/// `params![a, b, ...]`: parameters of different types, in order (?1, ?2, ...).
macro_rules! params {
    () => { &[] as &[&dyn $crate::core::ledger::db::ToCell] };
    ($($p:expr),+ $(,)?) => { &[$(&$p as &dyn $crate::core::ledger::db::ToCell),+] as &[&dyn $crate::core::ledger::db::ToCell] };
}
pub(crate) use params;

/// `Ok(None)` for a statement that found no row.
pub trait OptionalExtension<T> {
    fn optional(self) -> Result<Option<T>>;
}

impl<T> OptionalExtension<T> for Result<T> {
    fn optional(self) -> Result<Option<T>> {
        match self {
            Ok(v) => Ok(Some(v)),
            Err(e) if e.is_no_rows() => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// A connection to the ledger's database.
pub struct Conn {
    backend: Backend,
}

enum Backend {
    Sqlite(rusqlite::Connection),
    // Boxed: its prepared statements and client are large beside rusqlite's handle.
    #[cfg(feature = "postgres")]
    Postgres(Box<postgres::PgConn>),
}

impl Conn {
    pub fn from_sqlite(sqlite: rusqlite::Connection) -> Conn {
        Conn { backend: Backend::Sqlite(sqlite) }
    }

    #[cfg(feature = "postgres")]
    pub fn from_postgres(pg: postgres::PgConn) -> Conn {
        Conn { backend: Backend::Postgres(Box::new(pg)) }
    }

    /// The SQLite connection underneath, for the ledger's own plumbing (`None` on
    /// PostgreSQL).
    pub fn sqlite(&self) -> Option<&rusqlite::Connection> {
        match &self.backend {
            Backend::Sqlite(c) => Some(c),
            #[cfg(feature = "postgres")]
            Backend::Postgres(_) => None,
        }
    }

    pub fn sqlite_mut(&mut self) -> Option<&mut rusqlite::Connection> {
        match &mut self.backend {
            Backend::Sqlite(c) => Some(c),
            #[cfg(feature = "postgres")]
            Backend::Postgres(_) => None,
        }
    }

    pub fn is_postgres(&self) -> bool {
        self.sqlite().is_none()
    }

    /// A statement kept prepared on the connection (the hooks' and hot reads').
    pub fn prepare_cached(&self, sql: &str) -> Result<Stmt<'_>> {
        match &self.backend {
            Backend::Sqlite(c) => Ok(Stmt::Cached(c.prepare_cached(sql)?)),
            #[cfg(feature = "postgres")]
            Backend::Postgres(pg) => Ok(Stmt::Postgres { conn: pg, sql: sql.to_string() }),
        }
    }

    /// A statement prepared for this once (reports, SQL built per call).
    pub fn prepare(&self, sql: &str) -> Result<Stmt<'_>> {
        match &self.backend {
            Backend::Sqlite(c) => Ok(Stmt::Once(c.prepare(sql)?)),
            #[cfg(feature = "postgres")]
            Backend::Postgres(pg) => Ok(Stmt::Postgres { conn: pg, sql: sql.to_string() }),
        }
    }

    pub fn execute(&self, sql: &str, params: impl Params) -> Result<usize> {
        self.prepare(sql)?.execute(params)
    }

    pub fn query_row<T>(&self, sql: &str, params: impl Params, read: impl FnOnce(&Row<'_>) -> Result<T>) -> Result<T> {
        self.prepare(sql)?.query_row(params, read)
    }

    /// Several statements with no parameters, one after another.
    pub fn execute_batch(&self, sql: &str) -> Result<()> {
        match &self.backend {
            Backend::Sqlite(c) => Ok(c.execute_batch(sql)?),
            #[cfg(feature = "postgres")]
            Backend::Postgres(pg) => pg.execute_batch(sql),
        }
    }

    /// Begins a transaction. A writer's holds the ledger's one write lock from here
    /// to its end (SQLite's `BEGIN IMMEDIATE`; an advisory lock on PostgreSQL), so
    /// decisions are serial; a reader's is one consistent snapshot.
    pub fn begin(&self, write: bool) -> Result<()> {
        match &self.backend {
            // Cached: rusqlite's `Transaction` parses BEGIN again on every call.
            Backend::Sqlite(c) => {
                c.prepare_cached(if write { "BEGIN IMMEDIATE" } else { "BEGIN" })?.execute([])?;
                Ok(())
            }
            #[cfg(feature = "postgres")]
            Backend::Postgres(pg) => pg.begin(write),
        }
    }

    /// Ends the open transaction: COMMIT, or ROLLBACK.
    pub fn end(&self, commit: bool) -> Result<()> {
        match &self.backend {
            Backend::Sqlite(c) => {
                c.prepare_cached(if commit { "COMMIT" } else { "ROLLBACK" })?.execute([])?;
                Ok(())
            }
            #[cfg(feature = "postgres")]
            Backend::Postgres(pg) => pg.end(commit),
        }
    }

    /// No transaction is open.
    pub fn is_autocommit(&self) -> bool {
        match &self.backend {
            Backend::Sqlite(c) => c.is_autocommit(),
            #[cfg(feature = "postgres")]
            Backend::Postgres(pg) => !pg.in_transaction(),
        }
    }

    /// Begins an optimistic transaction on PostgreSQL (see
    /// [`postgres::PgConn::begin_optimistic`]); `false` on SQLite, which has none.
    // Without PostgreSQL, `clock` has no use.
    #[cfg_attr(not(feature = "postgres"), allow(unused_variables))]
    pub fn begin_optimistic(&self, clock: i64) -> bool {
        match &self.backend {
            Backend::Sqlite(_) => false,
            #[cfg(feature = "postgres")]
            Backend::Postgres(pg) => {
                pg.begin_optimistic(clock);
                true
            }
        }
    }

    /// On PostgreSQL, holds the open write transaction's writes back to be sent with
    /// its COMMIT in one round trip (see [`postgres::PgConn::defer_writes`]).
    pub fn defer_writes(&self) {
        #[cfg(feature = "postgres")]
        if let Backend::Postgres(pg) = &self.backend {
            pg.defer_writes();
        }
    }

    /// Begins a migration's transaction: the write lock only.
    pub fn begin_migration(&self) -> Result<()> {
        match &self.backend {
            Backend::Sqlite(_) => self.begin(true),
            #[cfg(feature = "postgres")]
            Backend::Postgres(pg) => pg.begin_migration(),
        }
    }

    /// A count that changes whenever this connection writes: SQLite's
    /// `total_changes`; on PostgreSQL, the write transactions (and statements outside
    /// one) it has committed.
    pub fn change_count(&self) -> u64 {
        match &self.backend {
            Backend::Sqlite(c) => c.total_changes(),
            #[cfg(feature = "postgres")]
            Backend::Postgres(pg) => pg.write_commits(),
        }
    }

    /// Round trips to the server so far (`None` on SQLite, which has no server).
    pub fn round_trips(&self) -> Option<u64> {
        match &self.backend {
            Backend::Sqlite(_) => None,
            #[cfg(feature = "postgres")]
            Backend::Postgres(pg) => Some(pg.round_trips()),
        }
    }

    /// PostgreSQL's ledger clock as the open transaction's reads see it (`None` on
    /// SQLite, or outside a write transaction).
    pub fn clock(&self) -> Option<i64> {
        match &self.backend {
            Backend::Sqlite(_) => None,
            #[cfg(feature = "postgres")]
            Backend::Postgres(pg) => pg.clock(),
        }
    }
}

/// A prepared statement.
pub enum Stmt<'c> {
    Cached(rusqlite::CachedStatement<'c>),
    Once(rusqlite::Statement<'c>),
    /// Prepared on first use, once per kinds of parameters.
    #[cfg(feature = "postgres")]
    Postgres {
        conn: &'c postgres::PgConn,
        sql: String,
    },
}

impl<'c> Stmt<'c> {
    /// Runs it; how many rows it changed.
    pub fn execute(&mut self, params: impl Params) -> Result<usize> {
        match self {
            Stmt::Cached(s) => Ok(params.with_cells(|cells| s.execute(rusqlite::params_from_iter(cells)))?),
            Stmt::Once(s) => Ok(params.with_cells(|cells| s.execute(rusqlite::params_from_iter(cells)))?),
            #[cfg(feature = "postgres")]
            Stmt::Postgres { conn, sql } => params.with_cells(|cells| conn.execute(sql, cells)),
        }
    }

    /// Reads the first row (an error if there is none).
    pub fn query_row<T>(&mut self, params: impl Params, read: impl FnOnce(&Row<'_>) -> Result<T>) -> Result<T> {
        let mut rows = self.query(params)?;
        match rows.next()? {
            Some(row) => read(&row),
            None => Err(DbError::NoRows),
        }
    }

    /// Its rows, each read with `read` as it is reached; the first error ends them.
    pub fn query_map<T, F>(&mut self, params: impl Params, read: F) -> Result<MappedRows<'_, F>>
    where
        F: FnMut(&Row<'_>) -> Result<T>,
    {
        Ok(MappedRows { rows: self.query(params)?, read, ended: false })
    }

    /// Whether it gives any row.
    pub fn exists(&mut self, params: impl Params) -> Result<bool> {
        Ok(self.query(params)?.next()?.is_some())
    }

    /// Its rows, one at a time.
    pub fn query(&mut self, params: impl Params) -> Result<Rows<'_>> {
        let inner = match self {
            Stmt::Cached(s) => {
                RowsInner::Sqlite(params.with_cells(|cells| s.query(rusqlite::params_from_iter(cells)))?)
            }
            Stmt::Once(s) => RowsInner::Sqlite(params.with_cells(|cells| s.query(rusqlite::params_from_iter(cells)))?),
            #[cfg(feature = "postgres")]
            Stmt::Postgres { conn, sql } => RowsInner::Postgres {
                rows: params.with_cells(|cells| conn.query(sql, cells))?.into_iter(),
                current: None,
            },
        };
        Ok(Rows { inner })
    }

    /// The names of the columns it gives.
    pub fn column_names(&self) -> Result<Vec<String>> {
        match self {
            Stmt::Cached(s) => Ok(s.column_names().into_iter().map(str::to_string).collect()),
            Stmt::Once(s) => Ok(s.column_names().into_iter().map(str::to_string).collect()),
            #[cfg(feature = "postgres")]
            Stmt::Postgres { conn, sql } => conn.column_names(sql),
        }
    }
}

/// The rows of a statement being read.
pub struct Rows<'s> {
    inner: RowsInner<'s>,
}

enum RowsInner<'s> {
    Sqlite(rusqlite::Rows<'s>),
    #[cfg(feature = "postgres")]
    Postgres {
        rows: std::vec::IntoIter<tokio_postgres::Row>,
        current: Option<tokio_postgres::Row>,
    },
}

impl Rows<'_> {
    // Not an Iterator: each row borrows the statement (a lending iterator), as in rusqlite.
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> Result<Option<Row<'_>>> {
        match &mut self.inner {
            RowsInner::Sqlite(rows) => Ok(rows.next()?.map(|row| Row { row: RowRef::Sqlite(row) })),
            #[cfg(feature = "postgres")]
            RowsInner::Postgres { rows, current } => {
                *current = rows.next();
                Ok(current.as_ref().map(|row| Row { row: RowRef::Postgres(row) }))
            }
        }
    }
}

/// A statement's rows read into values one at a time (see [`Stmt::query_map`]): an
/// iterator, since each value is owned once read.
pub struct MappedRows<'s, F> {
    rows: Rows<'s>,
    read: F,
    /// An error was given: nothing follows it.
    ended: bool,
}

impl<T, F: FnMut(&Row<'_>) -> Result<T>> Iterator for MappedRows<'_, F> {
    type Item = Result<T>;

    fn next(&mut self) -> Option<Result<T>> {
        if self.ended {
            return None;
        }
        let value = match self.rows.next() {
            Ok(Some(row)) => (self.read)(&row),
            Ok(None) => return None,
            Err(e) => Err(e),
        };
        self.ended = value.is_err();
        Some(value)
    }
}

/// A column's place in a row, from 0 (only `usize`, so `r.get(0)` needs no suffix).
pub trait ColumnIndex {
    fn index(self) -> usize;
}

impl ColumnIndex for usize {
    fn index(self) -> usize {
        self
    }
}

/// One row of a result.
pub struct Row<'r> {
    row: RowRef<'r>,
}

enum RowRef<'r> {
    Sqlite(&'r rusqlite::Row<'r>),
    #[cfg(feature = "postgres")]
    Postgres(&'r tokio_postgres::Row),
}

impl Row<'_> {
    /// Column `column` (from 0) read as `T`.
    pub fn get<I: ColumnIndex, T: FromCell>(&self, column: I) -> Result<T> {
        let column = column.index();
        T::from_cell(self.cell(column)?).map_err(|reason| DbError::Column { column, reason })
    }

    /// Column `column` as it is stored.
    // Without PostgreSQL the match has one arm.
    #[allow(clippy::infallible_destructuring_match)]
    pub fn cell(&self, column: usize) -> Result<Cell<'_>> {
        let row = match self.row {
            RowRef::Sqlite(row) => row,
            #[cfg(feature = "postgres")]
            RowRef::Postgres(row) => return postgres::cell(row, column),
        };
        Ok(match row.get_ref(column)? {
            ValueRef::Null => Cell::Null,
            ValueRef::Integer(n) => Cell::Int(n),
            ValueRef::Real(x) => Cell::Real(x),
            ValueRef::Text(t) => Cell::Text(
                std::str::from_utf8(t).map_err(|e| DbError::Column { column, reason: format!("not UTF-8: {e}") })?,
            ),
            ValueRef::Blob(b) => Cell::Blob(b),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_go_in_and_come_back_as_the_store_reads_them() {
        let conn = Conn::from_sqlite(rusqlite::Connection::open_in_memory().unwrap());
        conn.execute_batch("CREATE TABLE t (a INTEGER, b TEXT, c REAL, d BLOB)").unwrap();
        let none: Option<&str> = None;
        conn.execute("INSERT INTO t VALUES (?1, ?2, ?3, ?4)", params![u32::MAX, "x", 1.5, vec![1u8, 2]]).unwrap();
        conn.execute("INSERT INTO t VALUES (?1, ?2, NULL, NULL)", params![-1i64, none]).unwrap();
        let rows: Vec<(i64, Option<String>)> = conn
            .prepare("SELECT a, b FROM t ORDER BY a")
            .unwrap()
            .query_map((), |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<Result<_>>()
            .unwrap();
        assert_eq!(rows, [(-1, None), (i64::from(u32::MAX), Some("x".into()))]);
        let (c, d): (f64, Vec<u8>) =
            conn.query_row("SELECT c, d FROM t WHERE a > 0", (), |r| Ok((r.get(0)?, r.get(1)?))).unwrap();
        assert_eq!((c, d), (1.5, vec![1, 2]));
        // A value out of the type's range is an error naming the column, not a wrap.
        let e = conn.query_row("SELECT b, a FROM t WHERE a < 0", (), |r| r.get::<_, u32>(1)).unwrap_err();
        assert_eq!(e.to_string(), "column 1: -1 is out of range for u32");
        // No row: an error, or None through `optional`.
        let none: Option<i64> = conn.query_row("SELECT a FROM t WHERE a = 7", (), |r| r.get(0)).optional().unwrap();
        assert_eq!(none, None);
        assert!(conn.prepare_cached("SELECT 1 FROM t WHERE b = ?1").unwrap().exists(["x"]).unwrap());
    }
}
