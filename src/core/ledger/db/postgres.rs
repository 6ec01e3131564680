// SPDX-License-Identifier: GPL-2.0-or-later
//! The PostgreSQL side of [`super::Conn`]: one persistent connection (the synchronous
//! `postgres` crate: no runtime of its own beyond the call), the store's SQL with its
//! `?N` parameters written as `$N`, statements prepared once per parameter types, and
//! every wait bounded: the connect, each statement (`statement_timeout`), the wait for
//! the ledger's write lock (`lock_timeout`) and unacknowledged data on the socket
//! (`tcp_user_timeout`).
//!
//! Writers take one transaction-scoped advisory lock, so a write transaction is as
//! serial on PostgreSQL as `BEGIN IMMEDIATE` makes it on SQLite: two clusters
//! deciding on one account never both see the same funds.

use super::{Cell, DbError, Result};
use postgres::types::{FromSql, IsNull, ToSql, Type};
use std::cell::RefCell;
use std::collections::HashMap;
use std::time::Duration;

/// The advisory lock every write transaction takes ("asbb" in ASCII).
pub const WRITE_LOCK_KEY: i64 = 0x6173_6262;

/// A PostgreSQL connection with its prepared statements.
pub struct PgConn {
    client: RefCell<postgres::Client>,
    /// By (the store's SQL, its parameters' kinds).
    statements: RefCell<HashMap<(String, Vec<u8>), postgres::Statement>>,
    in_transaction: std::cell::Cell<bool>,
}

/// Where a PostgreSQL ledger is, without its password (for messages).
pub fn redacted(url: &str) -> String {
    match url.parse::<postgres::Config>() {
        Ok(_) if url.contains('@') => {
            // scheme://user[:password]@rest -> scheme://user@rest
            let (scheme, rest) = url.split_once("://").unwrap_or(("postgresql", url));
            let (userinfo, host) = rest.split_once('@').unwrap_or(("", rest));
            let user = userinfo.split(':').next().unwrap_or("");
            format!("{scheme}://{user}@{host}")
        }
        _ => url.to_string(),
    }
}

impl PgConn {
    /// Connects to `url` (which must not carry a password) with `password`, every wait
    /// bounded by `bound_ms`.
    pub fn connect(url: &str, password: Option<&[u8]>, bound_ms: u32) -> Result<PgConn> {
        let mut config: postgres::Config = url.parse().map_err(DbError::Postgres)?;
        if config.get_password().is_some() {
            return Err(DbError::Setup(
                "the URL carries a password; put it in the file `ledger_password_file` names instead".into(),
            ));
        }
        if let Some(p) = password {
            config.password(p);
        }
        let bound = Duration::from_millis(u64::from(bound_ms.max(1)));
        config.connect_timeout(bound).tcp_user_timeout(bound).application_name("asbb");
        let mut client = config.connect(postgres::NoTls).map_err(DbError::Postgres)?;
        client
            .batch_execute(&format!(
                "SET statement_timeout = {bound_ms}; SET lock_timeout = {bound_ms}; \
                 SET idle_in_transaction_session_timeout = {idle}; SET TIME ZONE 'UTC'",
                // A transaction left open by a caller that died is ended by the server.
                idle = u64::from(bound_ms).max(10_000)
            ))
            .map_err(DbError::Postgres)?;
        Ok(PgConn {
            client: RefCell::new(client),
            statements: RefCell::new(HashMap::new()),
            in_transaction: std::cell::Cell::new(false),
        })
    }

    pub fn execute_batch(&self, sql: &str) -> Result<()> {
        self.client.borrow_mut().batch_execute(sql).map_err(DbError::Postgres)
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
        self.client.borrow().is_closed()
    }

    fn statement(&self, sql: &str, cells: &[Cell<'_>]) -> Result<postgres::Statement> {
        let kinds: Vec<u8> = cells.iter().map(kind_of).collect();
        let key = (sql.to_string(), kinds);
        if let Some(s) = self.statements.borrow().get(&key) {
            return Ok(s.clone());
        }
        let types: Vec<Type> = cells.iter().map(type_of).collect();
        let stmt = self.client.borrow_mut().prepare_typed(&translate(sql), &types).map_err(DbError::Postgres)?;
        self.statements.borrow_mut().insert(key, stmt.clone());
        Ok(stmt)
    }

    pub fn execute(&self, sql: &str, cells: &[Cell<'_>]) -> Result<usize> {
        let stmt = self.statement(sql, cells)?;
        let params: Vec<&(dyn ToSql + Sync)> = cells.iter().map(|c| c as &(dyn ToSql + Sync)).collect();
        let n = self.client.borrow_mut().execute(&stmt, &params).map_err(DbError::Postgres)?;
        Ok(usize::try_from(n).unwrap_or(usize::MAX))
    }

    pub fn query(&self, sql: &str, cells: &[Cell<'_>]) -> Result<Vec<postgres::Row>> {
        let stmt = self.statement(sql, cells)?;
        let params: Vec<&(dyn ToSql + Sync)> = cells.iter().map(|c| c as &(dyn ToSql + Sync)).collect();
        self.client.borrow_mut().query(&stmt, &params).map_err(DbError::Postgres)
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

/// A parameter's type as prepared: NULL's is left to the server to infer.
fn type_of(cell: &Cell<'_>) -> Type {
    match cell {
        Cell::Null => Type::UNKNOWN,
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
        return "SELECT floor((random() - 0.5) * 18446744073709551616.0)::bigint".to_string();
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

    postgres::types::to_sql_checked!();
}

/// Column `column` of a PostgreSQL row as a [`Cell`].
pub fn cell<'r>(row: &'r postgres::Row, column: usize) -> Result<Cell<'r>> {
    let col = |e: postgres::Error| DbError::Column { column, reason: e.to_string() };
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
pub fn is_timeout(e: &postgres::Error) -> bool {
    use postgres::error::SqlState;
    matches!(e.code(), Some(c) if *c == SqlState::LOCK_NOT_AVAILABLE || *c == SqlState::QUERY_CANCELED)
}

/// The server's message, or the connection's failure.
pub fn describe(e: &postgres::Error) -> String {
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
        assert_eq!(redacted("postgresql://asbb@db/ledger"), "postgresql://asbb@db/ledger");
    }
}
