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

impl Budget {
    /// The figures behind `/metrics`; `per_account` adds each account's (see
    /// `MetricsSnapshot` for where they come from).
    pub fn metrics_snapshot(&mut self, per_account: bool) -> Result<MetricsSnapshot, IntegrationError> {
        let rows = Tx::read(&mut self.ledger)?.metrics_rows(per_account)?;
        let open = rows.open_by_account;
        let accounts = rows.accounts.map(|accounts| {
            accounts
                .into_iter()
                .map(|(id, name, held_micros, charged_micros)| AccountMetrics {
                    name,
                    holds_open: open.iter().find(|(a, _, _)| *a == id).map_or(0, |(_, n, _)| *n),
                    held_micros,
                    charged_micros,
                })
                .collect()
        });
        Ok(MetricsSnapshot {
            jobs_by_state: rows.jobs_by_state,
            holds_open: open.iter().map(|(_, n, _)| n).sum(),
            holds_open_micros: rows.holds_open_micros,
            accounts,
            oldest_open_hold_at: open.iter().map(|(_, _, t)| *t).min(),
            runs_without_hold: rows.runs_without_hold,
            cost_updates: rows.cost_updates,
            feedback: rows.feedback,
            learning_samples: rows.learning_samples,
        })
    }
}
