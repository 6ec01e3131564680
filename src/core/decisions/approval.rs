// SPDX-License-Identifier: GPL-2.0-or-later
//! The hold-and-approve workflow in the ledger: jobs submitted held (for approval or
//! for funds) are approved (their hold placed), denied, or released when money
//! arrives. Telling SLURM (release, cancel) is the command line's job; the ledger is
//! always changed first, so a failed SLURM call leaves funds held, never a job
//! running without them.

use crate::core::decisions::{format_time, job_summary_from_row, Budget, BudgetError, JobSummary, JOB_SUMMARY_COLS};
use crate::core::ledger::{JobState, Tx};
use crate::core::money::Money;
use rusqlite::params;

/// Jobs submitted held by asbb, not yet holding funds (of `jobs j`): the
/// `jobs_waiting` index's own condition, word for word, so SQLite uses that index.
const WAITING: &str = "j.state IN ('awaiting_approval', 'awaiting_funds')";

impl Budget {
    /// Jobs waiting for approval or funds, oldest first (optionally one account's).
    pub fn waiting_jobs(&self, account: Option<&str>) -> Result<Vec<JobSummary>, BudgetError> {
        let e = |source| BudgetError::Ledger(self.ledger.err(source));
        let mut stmt = self
            .ledger
            .connection()
            .prepare(&format!(
                "SELECT {JOB_SUMMARY_COLS} FROM jobs j JOIN accounts a ON a.id = j.account_id
                 WHERE {WAITING} AND (?1 IS NULL OR a.name = ?1)
                 ORDER BY j.submitted_at, j.token"
            ))
            .map_err(e)?;
        let rows = stmt.query_map(params![account], job_summary_from_row).map_err(e)?;
        rows.collect::<Result<Vec<_>, _>>().map_err(e)
    }

    /// Approves a waiting job: its hold is placed now (the approval threshold no
    /// longer applies, the money must still be there). Returns the hold.
    pub fn approve(&mut self, token: &str, job_id: Option<u32>, actor: &str, now: i64) -> Result<Money, BudgetError> {
        let job = self.job(token)?.ok_or_else(|| BudgetError::UnknownToken(token.to_string()))?;
        if job.state == JobState::Held {
            return Err(BudgetError::Invalid(format!("job {} already holds its funds", shown(job_id, token))));
        }
        if !job.state.is_waiting() {
            return Err(BudgetError::Invalid(format!("job {} is {}, not waiting", shown(job_id, token), job.state)));
        }
        let account = self.account_name_of(job.account_id)?;
        let mut req = job.request(&account);
        req.job_id = job_id.or(job.job_id);
        match self.modify(token, &req, true, true, now)? {
            crate::core::decisions::Modified::Released { hold } => {
                self.note(
                    actor,
                    now,
                    "job approve",
                    &format!("{} token={token} hold={}", shown(job_id, token), hold.to_exact_string()),
                )?;
                Ok(hold)
            }
            crate::core::decisions::Modified::StillHeld { reason } => {
                Err(BudgetError::Invalid(reason.trim_start_matches("asbb: ").to_string()))
            }
            other => Err(BudgetError::Invalid(format!("job {} was not approved ({other:?})", shown(job_id, token)))),
        }
    }

    /// Denies a job: it will never hold funds; whatever it held is released.
    pub fn deny(
        &mut self,
        token: &str,
        job_id: Option<u32>,
        reason: &str,
        actor: &str,
        now: i64,
    ) -> Result<(), BudgetError> {
        let job = self.job(token)?.ok_or_else(|| BudgetError::UnknownToken(token.to_string()))?;
        if !job.state.is_open() {
            return Err(BudgetError::Invalid(format!("job {} is already {}", shown(job_id, token), job.state)));
        }
        self.release(token, now)?;
        let tx = Tx::write(&mut self.ledger)?;
        tx.tx
            .execute(
                "UPDATE jobs SET state = 'denied', reason = ?2, settled_at = ?3, job_id = coalesce(job_id, ?4) WHERE token = ?1",
                params![token, crate::core::text::clean_text(reason), now, job_id],
            )
            .map_err(|source| BudgetError::Ledger(tx.err(source)))?;
        tx.commit()?;
        self.note(actor, now, "job deny", &format!("{} token={token}: {reason}", shown(job_id, token)))
    }

    /// Records an admin action in the audit log.
    pub fn note(&mut self, actor: &str, now: i64, command: &str, detail: &str) -> Result<(), BudgetError> {
        let tx = Tx::write(&mut self.ledger)?;
        crate::core::ledger::postings::audit(&tx, actor, now, command, detail)
            .map_err(|source| BudgetError::Ledger(tx.err(source)))?;
        tx.commit()?;
        Ok(())
    }
}

fn shown(job_id: Option<u32>, token: &str) -> String {
    match job_id {
        Some(id) => id.to_string(),
        None => format!("with token {token}"),
    }
}

/// One line describing a waiting job.
pub fn describe_waiting(j: &JobSummary) -> String {
    format!(
        "{} {} account={} estimate={} submitted {}: {}",
        j.job_id.map(|i| i.to_string()).unwrap_or_else(|| "-".into()),
        j.user,
        j.account,
        j.estimate,
        format_time(j.submitted_at),
        j.reason.clone().unwrap_or_default()
    )
}
