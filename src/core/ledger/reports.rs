// SPDX-License-Identifier: GPL-2.0-or-later
//! What the grant reports and forecasts read: a grant's or an account's cost entries
//! (streamed to a visitor: a grant's can be a million rows), what each was for (its
//! run or its job), and the holds open on an account.

use super::db::{params, Cell, DbError, OptionalExtension, Row};
use super::{LedgerError, Tx};
use crate::core::money::Money;

/// A job's request resources as one text (`nodes/cpus/mem_mb/gpus`), which the
/// report's split cache keys on.
const REQUEST_RESOURCES: &str = "nodes || '/' || cpus || '/' || mem_mb || '/' || coalesce(gpus, '')";

/// One cost entry of a grant (charge, refund or adjustment).
pub(crate) struct GrantCost<'r> {
    /// Signed: a refund is negative.
    pub amount: i64,
    pub at: i64,
    pub allocation_id: i64,
    pub account_id: i64,
    /// A charge's run key; a refund's or an adjustment's hold token.
    pub key: &'r str,
    /// A charge (of a run).
    pub is_run: bool,
}

/// What a cost was for: (partition, user, resources) of its run (the allocation as
/// JSON) or its job (the request as `nodes/cpus/mem_mb/gpus`).
pub(crate) type CostSubject = (String, String, Option<String>);

/// What of a cost entry's job, grant and QOS the usage report needs joined.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct CostColumns {
    /// The job's (else its run's) user and partition, its project and domain.
    pub job: bool,
    pub qos: bool,
    /// The grant whose allocation it was posted to (`(overdraft)`, `(deposit)`).
    pub grant: bool,
    /// The cluster the run ran on (a refund's or adjustment's: its job's).
    pub cluster: bool,
}

/// One cost entry as the usage report reads it. Texts not joined, missing or empty
/// read as `-`.
pub(crate) struct CostEntry<'r> {
    pub kind: &'r str,
    /// As posted (a refund's is positive).
    pub amount: i64,
    /// Its hold token, else its key: what counts it as one job.
    pub job: &'r str,
    pub account: &'r str,
    pub user: &'r str,
    pub project: &'r str,
    pub domain: &'r str,
    pub partition: &'r str,
    pub grant: &'r str,
    pub qos: &'r str,
    pub cluster: &'r str,
    /// A charge's first part: its run's allocation (JSON) and elapsed seconds.
    pub run: Option<(&'r [u8], i64)>,
}

/// Text of a column; NULL reads as "".
fn text<'r>(r: &'r Row<'_>, column: usize) -> super::db::Result<&'r str> {
    Ok(text_or_null(r, column)?.unwrap_or(""))
}

/// Text of a column, or `None` for NULL.
fn text_or_null<'r>(r: &'r Row<'_>, column: usize) -> super::db::Result<Option<&'r str>> {
    match r.cell(column)? {
        Cell::Text(t) => Ok(Some(t)),
        Cell::Null => Ok(None),
        _ => Err(DbError::Column { column, reason: "expected a text".into() }),
    }
}

impl Tx<'_> {
    /// Each cost entry (charge, refund, adjustment) posted in [from, until), with what
    /// `columns` asks joined, in no set order.
    pub fn visit_cost_entries(
        &self,
        from: i64,
        until: i64,
        columns: CostColumns,
        mut visit: impl FnMut(&CostEntry<'_>),
    ) -> Result<(), LedgerError> {
        let job_cols = if columns.job {
            "coalesce(jb.user_name, r.user_name), jb.project_code, jb.research_domain, coalesce(jb.partition, r.partition)"
        } else {
            "NULL, NULL, NULL, NULL"
        };
        let job_join =
            if columns.job || columns.qos || columns.cluster { "LEFT JOIN jobs jb ON jb.token = j.token" } else { "" };
        // A charge's key is `charge:<run key>`, and a run key starts with its cluster;
        // a refund or adjustment is its job's (a job from before schema 11: where it ran).
        let cluster = if columns.cluster {
            "CASE WHEN j.kind = 'charge' AND j.txn_key LIKE 'charge:%'
                  THEN substr(j.txn_key, 8, instr(substr(j.txn_key, 8), ':') - 1)
                  ELSE coalesce(jb.cluster,
                       (SELECT r2.cluster FROM runs r2 WHERE r2.token = j.token ORDER BY r2.run_key LIMIT 1)) END"
        } else {
            "NULL"
        };
        let qos = if columns.qos { "jb.qos" } else { "NULL" };
        let (grant_col, grant_join) = if columns.grant {
            (
                "CASE WHEN j.allocation_id IS NULL THEN '(overdraft)' ELSE coalesce(g.grant_number, '(deposit)') END",
                "LEFT JOIN allocations al ON al.id = j.allocation_id LEFT JOIN grant_accounts g ON g.id = al.grant_id",
            )
        } else {
            ("NULL", "")
        };
        self.sql(|c| {
            // A window holding much of the journal's time span is read faster straight
            // through than through the time index (one row lookup per cost entry).
            let (first_at, last_at): (Option<i64>, Option<i64>) = c.query_row(
                "SELECT (SELECT min(at) FROM journal WHERE kind IN ('charge', 'refund', 'adjustment')),
                        (SELECT max(at) FROM journal WHERE kind IN ('charge', 'refund', 'adjustment'))",
                (),
                |r| Ok((r.get(0)?, r.get(1)?)),
            )?;
            let span = last_at.unwrap_or(0) - first_at.unwrap_or(0) + 1;
            let covered = until.min(last_at.unwrap_or(0) + 1) - from.max(first_at.unwrap_or(0));
            let at = if covered * 4 > span { "+j.at" } else { "j.at" };
            let mut stmt = c.prepare(&format!(
                "SELECT j.kind, j.amount_micros, coalesce(j.token, j.txn_key), a.name, {job_cols}, {grant_col}, {qos},
                        r.alloc_json, r.elapsed_s, {cluster}
                 FROM journal j
                 JOIN accounts a ON a.id = j.account_id
                 LEFT JOIN runs r ON j.kind = 'charge' AND j.part = 0 AND j.txn_key LIKE 'charge:%'
                                  AND r.run_key = substr(j.txn_key, 8)
                 {job_join} {grant_join}
                 WHERE {at} >= ?1 AND {at} < ?2 AND j.kind IN ('charge', 'refund', 'adjustment')"
            ))?;
            let mut rows = stmt.query([from, until])?;
            while let Some(r) = rows.next()? {
                let text = |i: usize| -> super::db::Result<&str> {
                    Ok(match r.cell(i)? {
                        Cell::Text(t) if !t.is_empty() => t,
                        _ => "-",
                    })
                };
                let elapsed_s: Option<i64> = r.get(11)?;
                let run = match (r.cell(10)?, elapsed_s) {
                    (Cell::Text(json), Some(s)) => Some((json.as_bytes(), s)),
                    _ => None,
                };
                visit(&CostEntry {
                    kind: text(0)?,
                    amount: r.get(1)?,
                    job: text(2)?,
                    account: text(3)?,
                    user: text(4)?,
                    project: text(5)?,
                    domain: text(6)?,
                    partition: text(7)?,
                    grant: text(8)?,
                    qos: text(9)?,
                    cluster: text(12)?,
                    run,
                });
            }
            Ok(())
        })
    }

    /// Each cost entry posted to the allocations of grant `grant_id`, in no set order.
    pub fn visit_grant_costs(&self, grant_id: i64, mut visit: impl FnMut(GrantCost<'_>)) -> Result<(), LedgerError> {
        self.sql(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT kind, amount_micros, at, allocation_id, account_id, txn_key, token FROM journal
                 WHERE allocation_id IN (SELECT id FROM allocations WHERE grant_id = ?1)
                   AND kind IN ('charge', 'refund', 'adjustment')",
            )?;
            let mut rows = stmt.query(params![grant_id])?;
            while let Some(r) = rows.next()? {
                let kind = text(&r, 0)?;
                let amount: i64 = r.get(1)?;
                let is_run = kind == "charge";
                let key = if is_run {
                    let k = text(&r, 5)?;
                    k.strip_prefix("charge:").unwrap_or(k)
                } else {
                    text(&r, 6)?
                };
                visit(GrantCost {
                    amount: if kind == "refund" { -amount } else { amount },
                    at: r.get(2)?,
                    allocation_id: r.get(3)?,
                    account_id: r.get(4)?,
                    key,
                    is_run,
                });
            }
            Ok(())
        })
    }

    /// (signed amount, time) of each cost entry posted to grant `grant_id`.
    pub fn visit_grant_direct_costs(&self, grant_id: i64, mut visit: impl FnMut(i64, i64)) -> Result<(), LedgerError> {
        self.sql(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT CASE kind WHEN 'refund' THEN -amount_micros ELSE amount_micros END, at FROM journal
                 WHERE allocation_id IN (SELECT id FROM allocations WHERE grant_id = ?1)
                   AND kind IN ('charge', 'refund', 'adjustment')",
            )?;
            let mut rows = stmt.query(params![grant_id])?;
            while let Some(r) = rows.next()? {
                visit(r.get(0)?, r.get(1)?);
            }
            Ok(())
        })
    }

    /// (time, signed amount) of each cost entry of account `account` in [from, until).
    pub fn visit_account_costs(
        &self,
        account: &str,
        from: i64,
        until: i64,
        mut visit: impl FnMut(i64, i64),
    ) -> Result<(), LedgerError> {
        self.sql(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT j.at, CASE j.kind WHEN 'refund' THEN -j.amount_micros ELSE j.amount_micros END
                 FROM journal j JOIN accounts a ON a.id = j.account_id
                 WHERE a.name = ?1 AND j.at >= ?2 AND j.at < ?3 AND j.kind IN ('charge', 'refund', 'adjustment')",
            )?;
            let mut rows = stmt.query(params![account, from, until])?;
            while let Some(r) = rows.next()? {
                visit(r.get(0)?, r.get(1)?);
            }
            Ok(())
        })
    }

    /// The row id of run `run_key` (runs are numbered in the order they were
    /// reconciled).
    pub fn run_id(&self, run_key: &str) -> Result<Option<i64>, LedgerError> {
        self.sql(|c| {
            c.prepare_cached("SELECT id FROM runs WHERE run_key = ?1")?.query_row([run_key], |r| r.get(0)).optional()
        })
    }

    /// (run key, partition, user, allocation JSON) of each run numbered `first` to
    /// `last` in an account grant `grant_id` funds.
    pub fn visit_grant_runs(
        &self,
        first: i64,
        last: i64,
        grant_id: i64,
        mut visit: impl FnMut(&str, &str, &str, Option<&str>),
    ) -> Result<(), LedgerError> {
        self.sql(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT run_key, partition, user_name, alloc_json FROM runs
                 WHERE id BETWEEN ?1 AND ?2
                   AND account_id IN (SELECT account_id FROM allocations WHERE grant_id = ?3)",
            )?;
            let mut rows = stmt.query(params![first, last, grant_id])?;
            while let Some(r) = rows.next()? {
                visit(text(&r, 0)?, text(&r, 1)?, text(&r, 2)?, text_or_null(&r, 3)?);
            }
            Ok(())
        })
    }

    /// What run `run_key` was (`None`: no such run).
    pub fn run_subject(&self, run_key: &str) -> Result<Option<CostSubject>, LedgerError> {
        self.sql(|c| {
            c.prepare_cached("SELECT partition, user_name, alloc_json FROM runs WHERE run_key = ?1")?
                .query_row([run_key], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                .optional()
        })
    }

    /// What job `token` asked for (`None`: no such job).
    pub fn job_subject(&self, token: &str) -> Result<Option<CostSubject>, LedgerError> {
        self.sql(|c| {
            c.prepare_cached(&format!("SELECT partition, user_name, {REQUEST_RESOURCES} FROM jobs WHERE token = ?1"))?
                .query_row([token], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                .optional()
        })
    }

    /// (name, held, jobs holding) of account `account_id`.
    pub fn holds_of(&self, account_id: i64) -> Result<Option<(String, Money, u32)>, LedgerError> {
        self.sql(|c| {
            c.prepare_cached(
                "SELECT a.name, a.held_micros,
                        (SELECT count(*) FROM jobs j WHERE j.account_id = a.id AND j.held_micros > 0)
                 FROM accounts a WHERE a.id = ?1",
            )?
            .query_row([account_id], |r| Ok((r.get(0)?, Money::from_micros(r.get(1)?), r.get(2)?)))
            .optional()
        })
    }

    /// (id, name) of every account.
    pub fn account_ids(&self) -> Result<Vec<(i64, String)>, LedgerError> {
        self.sql(|c| {
            c.prepare_cached("SELECT id, name FROM accounts")?.query_map((), |r| Ok((r.get(0)?, r.get(1)?)))?.collect()
        })
    }
}
