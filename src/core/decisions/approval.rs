// SPDX-License-Identifier: GPL-2.0-or-later
//! The hold-and-approve workflow in the ledger: jobs submitted held (for approval or
//! for funds) are approved (their hold placed), denied, or released when money
//! arrives. Telling SLURM (release, cancel) is the command line's job; the ledger is
//! always changed first, so a failed SLURM call leaves funds held, never a job
//! running without them.

use crate::core::decisions::{format_time, Budget, BudgetError, JobSummary};
use crate::core::ledger::{JobState, Tx};
use crate::core::money::Money;

impl Budget {
    /// Jobs waiting for approval or funds, oldest first (optionally one account's).
    pub fn waiting_jobs(&self, account: Option<&str>) -> Result<Vec<JobSummary>, BudgetError> {
        Ok(self.ledger.waiting_jobs(account)?)
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
        let cleaned = crate::core::text::clean_text(reason);
        tx.end_job(token, JobState::Denied, Some(cleaned.as_str()), job_id, now)?;
        tx.commit()?;
        self.note(actor, now, "job deny", &format!("{} token={token}: {reason}", shown(job_id, token)))
    }

    /// Records an admin action in the audit log.
    pub fn note(&mut self, actor: &str, now: i64, command: &str, detail: &str) -> Result<(), BudgetError> {
        let tx = Tx::write(&mut self.ledger)?;
        crate::core::ledger::postings::audit(&tx, actor, now, command, detail)?;
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
