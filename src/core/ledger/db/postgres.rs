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

/// The advisory lock every write transaction takes ("asbb" in ASCII).
pub const WRITE_LOCK_KEY: i64 = 0x6173_6262;

/// A PostgreSQL connection with its prepared statements.
pub struct PgConn {
    runtime: tokio::runtime::Runtime,
    client: tokio_postgres::Client,
    /// Each call's client-side deadline.
    deadline: Duration,
    /// A call passed its deadline: the connection's state is unknown, so it is not used again.
    abandoned: std::cell::Cell<bool>,
    /// By (the store's SQL, its parameters' kinds).
    statements: RefCell<HashMap<(String, Vec<u8>), tokio_postgres::Statement>>,
    in_transaction: std::cell::Cell<bool>,
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
            abandoned: std::cell::Cell::new(false),
            statements: RefCell::new(HashMap::new()),
            in_transaction: std::cell::Cell::new(false),
        };
        // The server ends a lock wait or a statement a little before the client's
        // deadline, so a busy ledger is told from a server that does not answer.
        let server_ms = (bound_ms * 4 / 5).max(1);
        conn.execute_batch(&format!(
            "SET statement_timeout = {server_ms}; SET lock_timeout = {server_ms}; \
             SET idle_in_transaction_session_timeout = {idle}; SET TIME ZONE 'UTC'",
            // A transaction left open by a caller that died is ended by the server.
            idle = bound_ms.max(10_000)
        ))?;
        Ok(conn)
    }

    /// Runs `call` to its end or to the deadline; past the deadline the connection is
    /// given up.
    fn run<T>(&self, call: impl Future<Output = std::result::Result<T, tokio_postgres::Error>>) -> Result<T> {
        if self.abandoned.get() {
            return Err(DbError::Setup("the connection was given up after a call passed its deadline".into()));
        }
        match self.runtime.block_on(async { tokio::time::timeout(self.deadline, call).await }) {
            Ok(result) => result.map_err(DbError::Postgres),
            Err(_) => {
                self.abandoned.set(true);
                Err(DbError::TimedOut(u32::try_from(self.deadline.as_millis()).unwrap_or(u32::MAX)))
            }
        }
    }

    pub fn execute_batch(&self, sql: &str) -> Result<()> {
        self.run(self.client.batch_execute(sql))
    }

    /// Begins a transaction: a writer's takes the ledger's write lock (waiting at most
    /// `lock_timeout`); a reader's is one snapshot.
    pub fn begin(&self, write: bool) -> Result<()> {
        let sql = if write {
            format!("BEGIN; SELECT pg_advisory_xact_lock({WRITE_LOCK_KEY})")
        } else {
            "BEGIN ISOLATION LEVEL REPEATABLE READ".to_string()
        };
        let result = self.execute_batch(&sql);
        // A failed BEGIN may still have opened the transaction (the lock wait timed out).
        self.in_transaction.set(true);
        result
    }

    pub fn end(&self, commit: bool) -> Result<()> {
        let result = self.execute_batch(if commit { "COMMIT" } else { "ROLLBACK" });
        self.in_transaction.set(false);
        result
    }

    pub fn in_transaction(&self) -> bool {
        self.in_transaction.get()
    }

    pub fn is_closed(&self) -> bool {
        self.abandoned.get() || self.client.is_closed()
    }

    fn statement(&self, sql: &str, cells: &[Cell<'_>]) -> Result<tokio_postgres::Statement> {
        let kinds: Vec<u8> = cells.iter().map(kind_of).collect();
        let key = (sql.to_string(), kinds);
        if let Some(s) = self.statements.borrow().get(&key) {
            return Ok(s.clone());
        }
        let types: Vec<Type> = cells.iter().map(type_of).collect();
        let translated = translate(sql);
        let stmt = self.run(self.client.prepare_typed(&translated, &types))?;
        self.statements.borrow_mut().insert(key, stmt.clone());
        Ok(stmt)
    }

    pub fn execute(&self, sql: &str, cells: &[Cell<'_>]) -> Result<usize> {
        let stmt = self.statement(sql, cells)?;
        let params: Vec<&(dyn ToSql + Sync)> = cells.iter().map(|c| c as &(dyn ToSql + Sync)).collect();
        let n = self.run(self.client.execute(&stmt, &params))?;
        Ok(usize::try_from(n).unwrap_or(usize::MAX))
    }

    pub fn query(&self, sql: &str, cells: &[Cell<'_>]) -> Result<Vec<tokio_postgres::Row>> {
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
