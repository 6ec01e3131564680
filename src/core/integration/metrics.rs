// SPDX-License-Identifier: GPL-2.0-or-later
//! The numbers behind `/metrics`.

use super::*;

/// Counts and amounts for `/metrics`. Money figures come from totals the ledger keeps
/// up to date as it writes (the accounts' and allocations' cached totals, the last row
/// id of append-only tables); job counts and open holds are read from the jobs table,
/// which no index by state covers since schema 8 (a submission writes none). Nothing
/// here reads the journal.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct MetricsSnapshot {
    /// Jobs by state: what the plugin decided and where they are now. Refusals write
    /// nothing to the ledger, so they are not here.
    pub jobs_by_state: Vec<(String, i64)>,
    /// Over all accounts: jobs holding money, and the money they hold (micros).
    pub holds_open: i64,
    pub holds_open_micros: i64,
    /// Per account, only when asked for (callers with role `read` or more).
    pub accounts: Option<Vec<AccountMetrics>>,
    /// Submit time of the oldest job still holding money.
    pub oldest_open_hold_at: Option<i64>,
    /// Runs charged with no hold behind them (the submit hook did not price the job:
    /// ledger unavailable with on_ledger_error = accept, or submitted before asbb).
    pub runs_without_hold: i64,
    pub cost_updates: i64,
    pub feedback: i64,
    pub learning_samples: i64,
}

/// One account's figures in `/metrics`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct AccountMetrics {
    pub name: String,
    /// Jobs holding money, and the money held (micros).
    pub holds_open: i64,
    pub held_micros: i64,
    /// Net charged, all time (charges − refunds + adjustments, micros): what its
    /// allocations were debited plus its overdraft.
    pub charged_micros: i64,
}

/// States in which a job can hold money (settled, released and denied jobs hold none).
const OPEN_STATES: &str = "('held', 'awaiting_approval', 'awaiting_funds')";

impl Budget {
    /// The figures behind `/metrics`; `per_account` adds each account's (see
    /// `MetricsSnapshot` for where they come from).
    pub fn metrics_snapshot(&mut self, per_account: bool) -> Result<MetricsSnapshot, IntegrationError> {
        let path = self.ledger.path().to_path_buf();
        let e = sql(&path);
        let tx = Tx::read(&mut self.ledger)?;
        let c = tx.tx;
        let jobs_by_state = c
            .prepare_cached("SELECT state, count(*) FROM jobs GROUP BY state ORDER BY state")
            .and_then(|mut s| s.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?.collect())
            .map_err(&e)?;
        // Open holds per account id, read from the jobs table (accepted jobs are in no
        // state index: a submission writes none).
        let open: Vec<(i64, i64, i64)> = c
            .prepare_cached(&format!(
                "SELECT account_id, count(*), min(submitted_at) FROM jobs
                 WHERE state IN {OPEN_STATES} AND held_micros > 0 GROUP BY account_id"
            ))
            .and_then(|mut s| s.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?.collect())
            .map_err(&e)?;
        let holds_open = open.iter().map(|(_, n, _)| n).sum();
        let oldest_open_hold_at = open.iter().map(|(_, _, t)| *t).min();
        let one = |q: &str| -> Result<i64, IntegrationError> {
            c.query_row(q, [], |r| r.get::<_, Option<i64>>(0)).map(Option::unwrap_or_default).map_err(&e)
        };
        let holds_open_micros = one("SELECT sum(held_micros) FROM accounts")?;
        let accounts = if per_account {
            let rows: Vec<(i64, String, i64, i64)> = c
                .prepare_cached(
                    "SELECT a.id, a.name, a.held_micros,
                            a.overdraft_micros + coalesce((SELECT sum(l.debited_micros) FROM allocations l
                                                           WHERE l.account_id = a.id), 0)
                     FROM accounts a ORDER BY a.name",
                )
                .and_then(|mut s| s.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?.collect())
                .map_err(&e)?;
            Some(
                rows.into_iter()
                    .map(|(id, name, held_micros, charged_micros)| AccountMetrics {
                        name,
                        holds_open: open.iter().find(|(a, _, _)| *a == id).map_or(0, |(_, n, _)| *n),
                        held_micros,
                        charged_micros,
                    })
                    .collect(),
            )
        } else {
            None
        };
        // These tables are append-only (rows are never deleted) with integer primary
        // keys SQLite numbers 1, 2, 3, ...: the last id is the row count.
        Ok(MetricsSnapshot {
            jobs_by_state,
            holds_open,
            holds_open_micros,
            accounts,
            oldest_open_hold_at,
            runs_without_hold: one("SELECT count(*) FROM runs WHERE token IS NULL")?,
            cost_updates: one("SELECT max(id) FROM cost_updates")?,
            feedback: one("SELECT max(id) FROM performance_feedback")?,
            learning_samples: one("SELECT max(id) FROM learning_samples")?,
        })
    }
}
