// SPDX-License-Identifier: GPL-2.0-or-later
//! Copies every row of one ledger into another, new one of the same schema, in one
//! read snapshot and one write transaction: an SQLite ledger onto PostgreSQL (`asbb-admin
//! ledger copy`), or any ledger into a scratch SQLite file. Rows keep their ids, so
//! every key and reference stays as it was; nothing is recomputed.

use super::db::{Cell, ToCell};
use super::{Ledger, LedgerError, Tx, LATEST_SCHEMA};
use std::collections::BTreeMap;

/// Every table of schema 11, each after the tables its rows refer to.
pub(crate) const TABLES: &[&str] = &[
    "accounts",
    "grant_accounts",
    "allocations",
    "grant_periods",
    "jobs",
    "account_job_users",
    "account_members",
    "journal",
    "runs",
    "audit_log",
    "cost_updates",
    "performance_feedback",
    "learning_samples",
    "alerts",
    "alert_deliveries",
];

/// Rows copied, per table, in [`TABLES`] order.
pub type CopyReport = Vec<(&'static str, u64)>;

/// Each account's balances as the cached totals give them: (credit limit, held,
/// overdraft, allocated, debited), all micro-dollars, by account name.
pub type Balances = BTreeMap<String, [i64; 5]>;

/// Copies every row of `from` into `to`, which must be empty and of this build's schema.
pub fn copy_rows(from: &Ledger, to: &mut Ledger) -> Result<CopyReport, LedgerError> {
    for ledger in [from, &*to] {
        let found = ledger.schema_version()?;
        if found != LATEST_SCHEMA {
            return Err(LedgerError::Outdated { path: ledger.path.clone(), found, known: LATEST_SCHEMA });
        }
    }
    let target = to.path.clone();
    let source = Tx::read_shared(from)?;
    let sink = Tx::write(to)?;
    let mut report = Vec::new();
    // Tables with an `id` column: on PostgreSQL an identity gives it, whose counter
    // must follow the copied ids.
    let mut with_ids = Vec::new();
    for &table in TABLES {
        let already: i64 = sink.sql(|c| c.query_row(&format!("SELECT count(*) FROM {table}"), (), |r| r.get(0)))?;
        if already > 0 {
            return Err(LedgerError::Io {
                path: target,
                reason: format!("it already has {already} {table} rows; a ledger is copied only into an empty one"),
            });
        }
        let copied = source.sql(|from| {
            let mut select = from.prepare(&format!("SELECT * FROM {table}"))?;
            let columns = select.column_names()?;
            if columns.iter().any(|c| c == "id") {
                with_ids.push(table);
            }
            let placeholders: Vec<String> = (1..=columns.len()).map(|i| format!("?{i}")).collect();
            let insert = format!("INSERT INTO {table} ({}) VALUES ({})", columns.join(", "), placeholders.join(", "));
            let mut rows = select.query(())?;
            let mut copied = 0u64;
            while let Some(row) = rows.next()? {
                let cells: Vec<Cell<'_>> = (0..columns.len()).map(|i| row.cell(i)).collect::<Result<_, _>>()?;
                let params: Vec<&dyn ToCell> = cells.iter().map(|c| c as &dyn ToCell).collect();
                sink.sql(|to| to.prepare_cached(&insert)?.execute(params.as_slice()))
                    .map_err(|e| super::db::DbError::Setup(format!("copying {table}: {e}")))?;
                copied += 1;
            }
            Ok(copied)
        })?;
        report.push((table, copied));
    }
    if sink.sql(|c| Ok(c.is_postgres()))? {
        for table in with_ids {
            sink.sql(|c| {
                c.query_row(
                    &format!(
                        "SELECT setval(pg_get_serial_sequence('{table}', 'id'), coalesce(max(id), 1), max(id) IS NOT NULL) FROM {table}"
                    ),
                    (),
                    |_| Ok(()),
                )
            })?;
        }
    }
    sink.commit()?;
    drop(source);
    Ok(report)
}

impl Ledger {
    /// Every account's cached balances (see [`Balances`]).
    pub fn balances(&self) -> Result<Balances, LedgerError> {
        self.sql(|c| {
            c.prepare(
                "SELECT a.name, a.credit_limit_micros, a.held_micros, a.overdraft_micros,
                        coalesce((SELECT sum(l.amount_micros) FROM allocations l WHERE l.account_id = a.id), 0),
                        coalesce((SELECT sum(l.debited_micros) FROM allocations l WHERE l.account_id = a.id), 0)
                 FROM accounts a ORDER BY a.name",
            )?
            .query_map((), |r| Ok((r.get(0)?, [r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?])))?
            .collect()
        })
    }
}
