// SPDX-License-Identifier: GPL-2.0-or-later
//! The PostgreSQL side of [`super::Conn`]: one persistent connection, the store's SQL
//! with its `?N` parameters written as `$N`, statements prepared once per parameter
//! types, and every wait bounded. tokio-postgres is driven call by call on a
//! current-thread runtime of the connection's own (no thread of its own, as the
//! synchronous `postgres` crate does it), so that each call, the connect and login
//! included, has a client-side deadline: a server that stops answering (frozen, or a
//! network that swallows packets) costs a call at most the bound, and the connection
//! is then given up. The server's own `lock_timeout` and `statement_timeout` end a
//! wait for the write lock, or a slow statement, a little before that deadline, as a
//! "busy" error that keeps the connection.
//!
//! Writers take one transaction-scoped advisory lock, so a write transaction is as
//! serial on PostgreSQL as `BEGIN IMMEDIATE` makes it on SQLite: two clusters
//! deciding on one account never both see the same funds.

use super::{Cell, DbError, Result};
use std::cell::RefCell;
use std::collections::HashMap;
use std::future::Future;
use std::time::Duration;
use tokio_postgres::types::{FromSql, IsNull, ToSql, Type};

/// The advisory lock every write transaction takes ("asbb" in ASCII; the schema's
/// `ledger_write_lock()` takes it too).
pub const WRITE_LOCK_KEY: i64 = 0x6173_6262;

/// The ledger's clock now.
const CLOCK_NOW: &str = "SELECT generation FROM ledger_clock WHERE id = 1";
/// Takes the write lock and fails (`serialization_failure`) if the clock moved from $1.
const CLOCK_CHECK: &str = "SELECT ledger_clock_check($1)";

/// A PostgreSQL connection with its prepared statements.
pub struct PgConn {
    runtime: tokio::runtime::Runtime,
    client: tokio_postgres::Client,
    /// Each call's client-side deadline.
    deadline: Duration,
    /// Calls sent to the server, each one round trip (for tests and benchmarks).
    round_trips: std::cell::Cell<u64>,
    /// Write transactions (and statements outside one) this connection committed.
    write_commits: std::cell::Cell<u64>,
    /// The open transaction has run (or held back) a statement that may write.
    wrote: std::cell::Cell<bool>,
    /// A call passed its deadline: the connection's state is unknown, so it is not used again.
    abandoned: std::cell::Cell<bool>,
    /// By the store's SQL, then its parameters' kinds (looked up without allocating).
    statements: RefCell<HashMap<String, HashMap<Vec<u8>, tokio_postgres::Statement>>>,
    in_transaction: std::cell::Cell<bool>,
    /// The ledger's clock as the open write transaction found it under the lock.
    clock_at_begin: std::cell::Cell<Option<i64>>,
    /// Writes held back until the open transaction's commit (see
    /// [`PgConn::begin_optimistic`] and [`PgConn::defer_writes`]).
    deferred: RefCell<Option<Deferred>>,
    /// `CLOCK_CHECK` and `CLOCK_NOW`, prepared with the first write transaction's BEGIN.
    clock_statements: RefCell<Option<ClockStatements>>,
}

#[derive(Clone)]
struct ClockStatements {
    check: tokio_postgres::Statement,
    now: tokio_postgres::Statement,
}

/// Writes that wait for their transaction's commit, to be sent with it in one pipeline.
struct Deferred {
    /// An optimistic transaction's: the clock its reads assume (it has not begun on
    /// the server). `None`: a locked write transaction's, begun.
    optimistic: Option<i64>,
    writes: Vec<(tokio_postgres::Statement, Vec<OwnedCell>)>,
}

/// A [`Cell`] kept past its statement's call (a write held back until commit).
enum OwnedCell {
    Null,
    Int(i64),
    Real(f64),
    Text(String),
    Blob(Vec<u8>),
}

impl OwnedCell {
    fn of(cell: &Cell<'_>) -> OwnedCell {
        match *cell {
            Cell::Null => OwnedCell::Null,
            Cell::Int(n) => OwnedCell::Int(n),
            Cell::Real(x) => OwnedCell::Real(x),
            Cell::Text(t) => OwnedCell::Text(t.to_string()),
            Cell::Blob(b) => OwnedCell::Blob(b.to_vec()),
        }
    }

    fn cell(&self) -> Cell<'_> {
        match self {
            OwnedCell::Null => Cell::Null,
            OwnedCell::Int(n) => Cell::Int(*n),
            OwnedCell::Real(x) => Cell::Real(*x),
            OwnedCell::Text(t) => Cell::Text(t),
            OwnedCell::Blob(b) => Cell::Blob(b),
        }
    }
}

/// Where a PostgreSQL ledger is, for messages: its user, hosts, ports and database
/// only (never a password, nor any parameter).
pub fn redacted(url: &str) -> String {
    let Ok(config) = url.parse::<tokio_postgres::Config>() else {
        return "postgresql://(a URL that does not parse)".to_string();
    };
    let hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .enumerate()
        .map(|(i, h)| {
            let host = match h {
                tokio_postgres::config::Host::Tcp(name) => name.clone(),
                tokio_postgres::config::Host::Unix(path) => path.display().to_string(),
            };
            match config.get_ports().get(i).or(config.get_ports().first()) {
                Some(port) => format!("{host}:{port}"),
                None => host,
            }
        })
        .collect();
    let user = config.get_user().map(|u| format!("{u}@")).unwrap_or_default();
    format!("postgresql://{user}{}/{}", hosts.join(","), config.get_dbname().unwrap_or(""))
}

impl PgConn {
    /// Connects to `url` (which must not carry a password) with `password`, every wait
    /// bounded by `bound_ms`.
    pub fn connect(url: &str, password: Option<&[u8]>, bound_ms: u32) -> Result<PgConn> {
        let mut config: tokio_postgres::Config = url.parse().map_err(DbError::Postgres)?;
        if config.get_password().is_some() {
            return Err(DbError::Setup(
                "the URL carries a password; put it in the file `password_file` names instead".into(),
            ));
        }
        if let Some(p) = password {
            config.password(p);
        }
        let bound_ms = bound_ms.max(1);
        let deadline = Duration::from_millis(u64::from(bound_ms));
        config
            .connect_timeout(deadline)
            .tcp_user_timeout(deadline)
            .keepalives_idle(Duration::from_secs(10))
            .application_name("asbb");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| DbError::Setup(format!("cannot start the connection's runtime: {e}")))?;
        // The timer is made inside the runtime (it needs its clock).
        let connected =
            runtime.block_on(async { tokio::time::timeout(deadline, config.connect(tokio_postgres::NoTls)).await });
        let (client, connection) = match connected {
            Ok(c) => c.map_err(DbError::Postgres)?,
            Err(_) => return Err(DbError::TimedOut(bound_ms)),
        };
        // Driven only inside `block_on`, by each call.
        runtime.spawn(async move {
            let _ = connection.await;
        });
        let conn = PgConn {
            runtime,
            client,
            deadline,
            round_trips: std::cell::Cell::new(0),
            write_commits: std::cell::Cell::new(0),
            wrote: std::cell::Cell::new(false),
            abandoned: std::cell::Cell::new(false),
            statements: RefCell::new(HashMap::new()),
            in_transaction: std::cell::Cell::new(false),
            clock_at_begin: std::cell::Cell::new(None),
            deferred: RefCell::new(None),
            clock_statements: RefCell::new(None),
        };
        // The server ends a lock wait or a statement a little before the client's
        // deadline, so a busy ledger is told from a server that does not answer.
        let server_ms = (bound_ms * 4 / 5).max(1);
        conn.execute_batch(&format!(
            "SET statement_timeout = {server_ms}; SET lock_timeout = {server_ms}; \
             SET idle_in_transaction_session_timeout = {idle}; SET TIME ZONE 'UTC'; \
             SET default_transaction_isolation = 'read committed'",
            // A transaction left open by a caller that died is ended by the server.
            idle = bound_ms.max(10_000)
        ))?;
        Ok(conn)
    }

    /// Runs `call` to its end or to the deadline; past the deadline the connection is
    /// given up.
    fn run<T>(&self, call: impl Future<Output = std::result::Result<T, tokio_postgres::Error>>) -> Result<T> {
        self.within(call)?.map_err(DbError::Postgres)
    }

    /// `call`'s output, if it comes within the deadline.
    fn within<T>(&self, call: impl Future<Output = T>) -> Result<T> {
        if self.abandoned.get() {
            return Err(DbError::Setup("the connection was given up after a call passed its deadline".into()));
        }
        self.round_trips.set(self.round_trips.get() + 1);
        match self.runtime.block_on(async { tokio::time::timeout(self.deadline, call).await }) {
            Ok(output) => Ok(output),
            Err(_) => {
                self.abandoned.set(true);
                Err(DbError::TimedOut(u32::try_from(self.deadline.as_millis()).unwrap_or(u32::MAX)))
            }
        }
    }

    pub fn execute_batch(&self, sql: &str) -> Result<()> {
        self.counting_writes(self.run(self.client.batch_execute(sql)))
    }

    /// `result` of a statement that may write: outside a transaction, counted as a
    /// write committed; inside one, its commit will be.
    fn counting_writes<T>(&self, result: Result<T>) -> Result<T> {
        if !self.in_transaction.get() {
            if result.is_ok() {
                self.write_commits.set(self.write_commits.get() + 1);
            }
        } else {
            self.wrote.set(true);
        }
        result
    }

    /// Write transactions (and statements outside one) committed on this connection.
    pub fn write_commits(&self) -> u64 {
        self.write_commits.get()
    }

    /// Begins a transaction: a writer's takes the ledger's write lock (waiting at most
    /// `lock_timeout`) and reads the ledger's clock under it; a reader's is one snapshot.
    pub fn begin(&self, write: bool) -> Result<()> {
        // A failed BEGIN may still have opened the transaction (the lock wait timed out).
        self.in_transaction.set(true);
        if !write {
            return self.run(self.client.batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ"));
        }
        // The clock's statements, which an optimistic commit will want, are prepared in
        // the same round trip.
        let prepare = self.clock_statements.borrow().is_none();
        let (replies, prepared) = self.within(async {
            let lock = self.client.simple_query("BEGIN; SELECT ledger_write_lock()");
            if !prepare {
                return (lock.await, None);
            }
            let (replies, check, now) = tokio::join!(
                lock,
                self.client.prepare_typed(CLOCK_CHECK, &[Type::INT8]),
                self.client.prepare(CLOCK_NOW)
            );
            (replies, Some(check.and_then(|check| Ok(ClockStatements { check, now: now? }))))
        })?;
        if let Some(Ok(statements)) = prepared {
            *self.clock_statements.borrow_mut() = Some(statements);
        }
        let replies = replies.map_err(DbError::Postgres)?;
        let clock = replies.iter().find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(row) => row.get(0).and_then(|v| v.parse::<i64>().ok()),
            _ => None,
        });
        self.clock_at_begin
            .set(Some(clock.ok_or(DbError::Setup("the ledger's clock did not read as a count".into()))?));
        Ok(())
    }

    /// Begins a migration's transaction: the write lock alone (the clock may not
    /// exist yet).
    pub fn begin_migration(&self) -> Result<()> {
        self.in_transaction.set(true);
        self.execute_batch(&format!("BEGIN; SELECT pg_advisory_xact_lock({WRITE_LOCK_KEY})"))
    }

    /// Begins an optimistic transaction on what the ledger was at clock `clock`: its
    /// reads run at once, each on its own (what they read is what the ledger was at
    /// `clock` if the clock has not moved by the commit); its writes are held back, and
    /// the commit sends them all in one pipeline (one round trip) behind a check,
    /// under the write lock, that the clock still reads `clock`. If it has moved, the
    /// commit writes nothing and fails with [`DbError::Changed`].
    pub fn begin_optimistic(&self, clock: i64) {
        *self.deferred.borrow_mut() = Some(Deferred { optimistic: Some(clock), writes: Vec::new() });
        self.in_transaction.set(true);
    }

    /// From here on, holds the open write transaction's writes back to be sent with
    /// its COMMIT, in one round trip (each then counts as changing one row). For
    /// writes whose counts nobody reads, after the transaction's last read.
    pub fn defer_writes(&self) {
        let mut deferred = self.deferred.borrow_mut();
        if deferred.is_none() && self.in_transaction.get() {
            *deferred = Some(Deferred { optimistic: None, writes: Vec::new() });
        }
    }

    pub fn end(&self, commit: bool) -> Result<()> {
        self.clock_at_begin.set(None);
        let wrote = self.wrote.take();
        let deferred = self.deferred.borrow_mut().take();
        let result = match deferred {
            Some(d) if commit => self.commit_deferred(d),
            // Nothing of an optimistic transaction has reached the server.
            Some(Deferred { optimistic: Some(_), .. }) => Ok(()),
            _ => self.run(self.client.batch_execute(if commit { "COMMIT" } else { "ROLLBACK" })),
        };
        self.in_transaction.set(false);
        if commit && wrote && result.is_ok() {
            self.write_commits.set(self.write_commits.get() + 1);
        }
        result
    }

    /// The ledger's clock as the open transaction's reads see it: as its write lock
    /// found it, or as an optimistic one assumes it.
    pub fn clock(&self) -> Option<i64> {
        match &*self.deferred.borrow() {
            Some(Deferred { optimistic: Some(clock), .. }) => Some(*clock),
            _ => self.clock_at_begin.get(),
        }
    }

    /// Commits writes held back: an optimistic transaction's as BEGIN, the clock's
    /// check, the writes and COMMIT; a locked one's as the writes and COMMIT. All are
    /// sent together and answered together. An optimistic transaction with no writes
    /// only checks that the clock has not moved (so what it read is still true).
    fn commit_deferred(&self, d: Deferred) -> Result<()> {
        let check = match d.optimistic {
            Some(clock) => {
                let ClockStatements { check, now } = self.clock_statements()?;
                if d.writes.is_empty() {
                    let now: i64 = self.run(self.client.query_one(&now, &[]))?.try_get(0).map_err(DbError::Postgres)?;
                    return if now == clock { Ok(()) } else { Err(DbError::Changed) };
                }
                Some((check, Cell::Int(clock)))
            }
            None => None,
        };
        let params: Vec<Vec<Cell<'_>>> =
            d.writes.iter().map(|(_, cells)| cells.iter().map(OwnedCell::cell).collect()).collect();
        let params: Vec<Vec<&(dyn ToSql + Sync)>> =
            params.iter().map(|cells| cells.iter().map(|c| c as &(dyn ToSql + Sync)).collect()).collect();
        let check_params: Vec<&(dyn ToSql + Sync)> =
            check.iter().map(|(_, clock)| clock as &(dyn ToSql + Sync)).collect();
        // The lock wait and the commit after it share one deadline: the wait may take
        // half of the bound, so a granted lock leaves the commit time to answer.
        let begin = format!("BEGIN; SET LOCAL lock_timeout = {}", (self.deadline.as_millis() / 2).max(1));
        type Reply<'f> = std::pin::Pin<Box<dyn Future<Output = std::result::Result<u64, tokio_postgres::Error>> + 'f>>;
        let mut calls: Vec<Reply<'_>> = Vec::with_capacity(d.writes.len() + 3);
        if let Some((check, _)) = &check {
            calls.push(Box::pin(async { self.client.batch_execute(&begin).await.map(|()| 0) }));
            calls.push(Box::pin(self.client.execute(check, &check_params)));
        }
        for ((stmt, _), p) in d.writes.iter().zip(&params) {
            calls.push(Box::pin(self.client.execute(stmt, p)));
        }
        calls.push(Box::pin(async { self.client.batch_execute("COMMIT").await.map(|()| 0) }));
        // Each call sends its request when first polled, in this order, before any
        // waits for its reply: the server gets them all at once. A failed statement
        // aborts the transaction, so every one after it fails and COMMIT rolls back.
        let replies = self.within(futures_util::future::join_all(calls))?;
        let mut replies = replies.into_iter();
        if check.is_some() {
            replies.next().transpose().map_err(DbError::Postgres)?;
            if let Some(Err(e)) = replies.next() {
                use tokio_postgres::error::SqlState;
                let changed = e.code() == Some(&SqlState::T_R_SERIALIZATION_FAILURE);
                return Err(if changed { DbError::Changed } else { DbError::Postgres(e) });
            }
        }
        for reply in replies {
            reply.map_err(DbError::Postgres)?;
        }
        Ok(())
    }

    /// The clock's statements, prepared now if no write transaction has prepared them
    /// (a connection opened again after a lost one).
    fn clock_statements(&self) -> Result<ClockStatements> {
        if let Some(statements) = self.clock_statements.borrow().clone() {
            return Ok(statements);
        }
        let check = self.run(self.client.prepare_typed(CLOCK_CHECK, &[Type::INT8]))?;
        let now = self.run(self.client.prepare(CLOCK_NOW))?;
        let statements = ClockStatements { check, now };
        *self.clock_statements.borrow_mut() = Some(statements.clone());
        Ok(statements)
    }

    pub fn in_transaction(&self) -> bool {
        self.in_transaction.get()
    }

    /// Calls sent to the server so far, each one round trip.
    pub fn round_trips(&self) -> u64 {
        self.round_trips.get()
    }

    fn statement(&self, sql: &str, cells: &[Cell<'_>]) -> Result<tokio_postgres::Statement> {
        let mut on_stack = [0u8; 64];
        let on_heap: Vec<u8>;
        let kinds: &[u8] = if cells.len() <= on_stack.len() {
            for (kind, cell) in on_stack.iter_mut().zip(cells) {
                *kind = kind_of(cell);
            }
            &on_stack[..cells.len()]
        } else {
            on_heap = cells.iter().map(kind_of).collect();
            &on_heap
        };
        if let Some(s) = self.statements.borrow().get(sql).and_then(|by_kinds| by_kinds.get(kinds)) {
            return Ok(s.clone());
        }
        let types: Vec<Type> = cells.iter().map(type_of).collect();
        let translated = translate(sql);
        let stmt = self.run(self.client.prepare_typed(&translated, &types))?;
        self.statements.borrow_mut().entry(sql.to_string()).or_default().insert(kinds.to_vec(), stmt.clone());
        Ok(stmt)
    }

    /// Runs a statement; how many rows it changed. Writes held back for the commit
    /// count as having changed one.
    pub fn execute(&self, sql: &str, cells: &[Cell<'_>]) -> Result<usize> {
        let stmt = self.statement(sql, cells)?;
        if let Some(d) = self.deferred.borrow_mut().as_mut() {
            d.writes.push((stmt, cells.iter().map(OwnedCell::of).collect()));
            self.wrote.set(true);
            return Ok(1);
        }
        let params: Vec<&(dyn ToSql + Sync)> = cells.iter().map(|c| c as &(dyn ToSql + Sync)).collect();
        let n = self.counting_writes(self.run(self.client.execute(&stmt, &params)))?;
        Ok(usize::try_from(n).unwrap_or(usize::MAX))
    }

    pub fn query(&self, sql: &str, cells: &[Cell<'_>]) -> Result<Vec<tokio_postgres::Row>> {
        // It would not see the writes held back: the store reads nothing after them.
        if self.deferred.borrow().as_ref().is_some_and(|d| !d.writes.is_empty()) {
            return Err(DbError::Setup("a read after writes held back for the commit".into()));
        }
        let stmt = self.statement(sql, cells)?;
        let params: Vec<&(dyn ToSql + Sync)> = cells.iter().map(|c| c as &(dyn ToSql + Sync)).collect();
        self.run(self.client.query(&stmt, &params))
    }

    /// The column names of `sql`'s result.
    pub fn column_names(&self, sql: &str) -> Result<Vec<String>> {
        let stmt = self.statement(sql, &[])?;
        Ok(stmt.columns().iter().map(|c| c.name().to_string()).collect())
    }
}

fn kind_of(cell: &Cell<'_>) -> u8 {
    match cell {
        Cell::Null => 0,
        Cell::Int(_) => 1,
        Cell::Real(_) => 2,
        Cell::Text(_) => 3,
        Cell::Blob(_) => 4,
    }
}

/// A parameter's type as prepared: NULL's is left to the server to infer from where
/// the parameter is used (OID 0, "unspecified"; declaring it `unknown` would not be).
fn type_of(cell: &Cell<'_>) -> Type {
    match cell {
        Cell::Null => Type::new("unspecified".into(), 0, tokio_postgres::types::Kind::Simple, "pg_catalog".into()),
        Cell::Int(_) => Type::INT8,
        Cell::Real(_) => Type::FLOAT8,
        Cell::Text(_) => Type::TEXT,
        Cell::Blob(_) => Type::BYTEA,
    }
}

/// The store's SQL as PostgreSQL reads it: `?N` parameters as `$N` (outside quotes),
/// and SQLite's `random()` (a 64-bit integer) as one.
pub fn translate(sql: &str) -> String {
    if sql == "SELECT random()" {
        // PostgreSQL's random() is a double (52 random bits); the token uses 24.
        return "SELECT floor(random() * 16777216)::bigint".to_string();
    }
    let mut out = String::with_capacity(sql.len());
    let mut quote: Option<char> = None;
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None if c == '\'' || c == '"' => quote = Some(c),
            None if c == '?' && chars.peek().is_some_and(|d| d.is_ascii_digit()) => {
                out.push('$');
                continue;
            }
            None => {}
        }
        out.push(c);
    }
    out
}

impl ToSql for Cell<'_> {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut bytes::BytesMut,
    ) -> std::result::Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match *self {
            Cell::Null => Ok(IsNull::Yes),
            Cell::Int(n) => match *ty {
                Type::INT8 => n.to_sql(ty, out),
                Type::INT4 => i32::try_from(n)?.to_sql(ty, out),
                Type::INT2 => i16::try_from(n)?.to_sql(ty, out),
                Type::BOOL => (n != 0).to_sql(ty, out),
                Type::FLOAT8 => (n as f64).to_sql(ty, out),
                _ => Err(format!("an integer where PostgreSQL expects {ty}").into()),
            },
            Cell::Real(x) => match *ty {
                Type::FLOAT8 => x.to_sql(ty, out),
                Type::FLOAT4 => (x as f32).to_sql(ty, out),
                _ => Err(format!("a real where PostgreSQL expects {ty}").into()),
            },
            Cell::Text(t) => t.to_sql(ty, out),
            Cell::Blob(b) => b.to_sql(ty, out),
        }
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    tokio_postgres::types::to_sql_checked!();
}

/// Column `column` of a PostgreSQL row as a [`Cell`].
pub fn cell<'r>(row: &'r tokio_postgres::Row, column: usize) -> Result<Cell<'r>> {
    let col = |e: tokio_postgres::Error| DbError::Column { column, reason: e.to_string() };
    let ty = row
        .columns()
        .get(column)
        .map(|c| c.type_().clone())
        .ok_or(DbError::Column { column, reason: format!("the row has {} columns", row.len()) })?;
    Ok(match ty {
        Type::INT8 => row.try_get::<_, Option<i64>>(column).map_err(col)?.map_or(Cell::Null, Cell::Int),
        Type::INT4 => row.try_get::<_, Option<i32>>(column).map_err(col)?.map_or(Cell::Null, |n| Cell::Int(n.into())),
        Type::INT2 => row.try_get::<_, Option<i16>>(column).map_err(col)?.map_or(Cell::Null, |n| Cell::Int(n.into())),
        Type::BOOL => row.try_get::<_, Option<bool>>(column).map_err(col)?.map_or(Cell::Null, |b| Cell::Int(b.into())),
        Type::FLOAT8 => row.try_get::<_, Option<f64>>(column).map_err(col)?.map_or(Cell::Null, Cell::Real),
        Type::FLOAT4 => {
            row.try_get::<_, Option<f32>>(column).map_err(col)?.map_or(Cell::Null, |x| Cell::Real(x.into()))
        }
        Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME | Type::UNKNOWN => {
            row.try_get::<_, Option<&str>>(column).map_err(col)?.map_or(Cell::Null, Cell::Text)
        }
        Type::BYTEA => row.try_get::<_, Option<&[u8]>>(column).map_err(col)?.map_or(Cell::Null, Cell::Blob),
        // sum() of BIGINTs is NUMERIC on PostgreSQL.
        Type::NUMERIC => row.try_get::<_, Option<Numeric>>(column).map_err(col)?.map_or(Cell::Null, |n| n.0),
        other => {
            return Err(DbError::Column { column, reason: format!("PostgreSQL type {other} is not one asbb reads") })
        }
    })
}

/// A NUMERIC as an integer (when it has no fraction and fits 64 bits) or a real.
struct Numeric(Cell<'static>);

impl<'a> FromSql<'a> for Numeric {
    fn from_sql(_: &Type, raw: &'a [u8]) -> std::result::Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        let word = |i: usize| -> std::result::Result<i16, Box<dyn std::error::Error + Sync + Send>> {
            raw.get(2 * i..2 * i + 2).map(|b| i16::from_be_bytes([b[0], b[1]])).ok_or_else(|| "short NUMERIC".into())
        };
        let (ndigits, weight, sign) = (word(0)?, word(1)?, word(2)? as u16);
        if sign == 0xC000 {
            return Err("NUMERIC NaN".into());
        }
        let negative = sign == 0x4000;
        // Base-10000 digits; digit k is worth 10000^(weight - k).
        let mut whole: i128 = 0;
        let mut real = 0f64;
        let mut fraction = false;
        for k in 0..ndigits.max(0) as usize {
            let d = i128::from(word(4 + k)?);
            let place = i32::from(weight) - k as i32;
            real += d as f64 * 10000f64.powi(place);
            if place < 0 {
                fraction |= d != 0;
            } else {
                let scale = 10000i128.checked_pow(place as u32).ok_or("NUMERIC too large")?;
                whole = d.checked_mul(scale).and_then(|v| whole.checked_add(v)).ok_or("NUMERIC too large")?;
            }
        }
        if fraction {
            return Ok(Numeric(Cell::Real(if negative { -real } else { real })));
        }
        let whole = if negative { -whole } else { whole };
        Ok(Numeric(Cell::Int(i64::try_from(whole).map_err(|_| "NUMERIC beyond 64 bits")?)))
    }

    fn accepts(ty: &Type) -> bool {
        *ty == Type::NUMERIC
    }
}

/// Whether `e` is a bounded wait that ran out (the write lock, or a statement), not a
/// fault of the ledger: the connection stays usable.
pub fn is_timeout(e: &tokio_postgres::Error) -> bool {
    use tokio_postgres::error::SqlState;
    matches!(e.code(), Some(c) if *c == SqlState::LOCK_NOT_AVAILABLE || *c == SqlState::QUERY_CANCELED)
}

/// The server's message, or the connection's failure.
pub fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("PostgreSQL: {}", db.message()),
        None => format!("PostgreSQL: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_are_numbered_outside_quotes_only() {
        assert_eq!(
            translate("SELECT a FROM t WHERE b = ?1 AND c = '?2' AND \"d?3\" = ?12"),
            "SELECT a FROM t WHERE b = $1 AND c = '?2' AND \"d?3\" = $12"
        );
    }

    #[test]
    fn a_password_never_shows_in_messages() {
        assert_eq!(
            redacted("postgresql://asbb:secret@db.example:5432/ledger"),
            "postgresql://asbb@db.example:5432/ledger"
        );
        // No port given: PostgreSQL's own.
        assert_eq!(redacted("postgresql://asbb@db/ledger"), "postgresql://asbb@db:5432/ledger");
        // Nor a password in the query, nor any other parameter.
        assert_eq!(redacted("postgresql://asbb@db/ledger?password=secret"), "postgresql://asbb@db:5432/ledger");
        // A URL that does not parse is not shown at all.
        assert_eq!(
            redacted("postgresql://asbb:secret@db/ledger?nonsense=1"),
            "postgresql://(a URL that does not parse)"
        );
    }
}
