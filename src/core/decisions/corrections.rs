// SPDX-License-Identifier: GPL-2.0-or-later
//! Corrections to what a job was charged, as new journal entries (the journal is never
//! edited):
//!
//! - a **refund** (`refund`, positive amounts) gives back part of a job's net charge,
//!   e.g. for a node failure the site does not bill;
//! - an **adjustment** (`adjustment`, signed: positive = more cost) corrects it, e.g.
//!   when the AWS bill for a burst run comes in above or below the estimate.
//!
//! Money taken back comes off where the job's charges went, newest first: overdraft
//! first, then allocations, the one ending last first; never more than the job's net
//! charge on each. Extra cost posts like a charge, against the allocations active when
//! the job's last run ended (the one ending first first), the rest as overdraft. The
//! cached totals (allocation debited, account overdraft, job charged) move with every
//! entry, so `verify` stays clean. Each correction has a caller-chosen request id; a
//! replay changes nothing and returns `false`.

use crate::core::decisions::{Budget, BudgetError};
use crate::core::ledger::postings::{self, audit};
use crate::core::ledger::{EntryKind, NewEntry, Tx};
use crate::core::money::Money;

impl Budget {
    /// Refunds `amount` of job `token`'s net charge.
    #[allow(clippy::too_many_arguments)]
    pub fn refund(
        &mut self,
        token: &str,
        amount: Money,
        memo: Option<&str>,
        request_id: &str,
        actor: &str,
        now: i64,
    ) -> Result<bool, BudgetError> {
        if amount.micros() <= 0 {
            return Err(BudgetError::Invalid("refund amount must be above zero".into()));
        }
        self.correct(token, EntryKind::Refund, Money::from_micros(-amount.micros()), memo, request_id, actor, now)
    }

    /// Adjusts job `token`'s cost by `delta` (signed; positive = more cost).
    #[allow(clippy::too_many_arguments)]
    pub fn adjust(
        &mut self,
        token: &str,
        delta: Money,
        memo: Option<&str>,
        request_id: &str,
        actor: &str,
        now: i64,
    ) -> Result<bool, BudgetError> {
        if delta.is_zero() {
            return Err(BudgetError::Invalid("adjustment must not be zero".into()));
        }
        self.correct(token, EntryKind::Adjustment, delta, memo, request_id, actor, now)
    }

    #[allow(clippy::too_many_arguments)]
    fn correct(
        &mut self,
        token: &str,
        kind: EntryKind,
        delta: Money,
        memo: Option<&str>,
        request_id: &str,
        actor: &str,
        now: i64,
    ) -> Result<bool, BudgetError> {
        if request_id.trim().is_empty() || request_id.chars().any(char::is_control) {
            return Err(BudgetError::Invalid("a correction needs a request id (printable text)".into()));
        }
        let tx = Tx::write(&mut self.ledger)?;
        let applied = correct_in(&tx, token, kind, delta, memo, request_id, actor, now)?;
        tx.commit()?;
        Ok(applied)
    }
}

/// A refund or adjustment inside the caller's transaction (a cost update posts one
/// together with its own record); false when `request_id` was applied before.
#[allow(clippy::too_many_arguments)]
pub(crate) fn correct_in(
    tx: &Tx<'_>,
    token: &str,
    kind: EntryKind,
    delta: Money,
    memo: Option<&str>,
    request_id: &str,
    actor: &str,
    now: i64,
) -> Result<bool, BudgetError> {
    let delta = delta.micros();
    let key = format!("{}:{request_id}", if kind == EntryKind::Refund { "refund" } else { "adjust" });
    if tx.txn_exists(&key)? {
        return Ok(false);
    }
    let job = tx.job(token)?.ok_or_else(|| BudgetError::UnknownToken(token.to_string()))?;
    if delta < 0 {
        if -delta > job.charged.micros() {
            return Err(BudgetError::Invalid(format!(
                "{} of {} is more than job {}'s net charge of {}",
                if kind == EntryKind::Refund { "a refund" } else { "an adjustment" },
                Money::from_micros(-delta),
                job.job_id.map(|j| j.to_string()).unwrap_or_else(|| token.to_string()),
                job.charged
            )));
        }
        postings::take_back(tx, &key, kind, &job, Money::from_micros(-delta), memo, actor, now)?;
    } else {
        // Extra cost posts like a charge, against the allocations active when the job's
        // last run ended.
        let last_end = tx.last_run_end(&job.token)?;
        let base = NewEntry {
            txn_key: &key,
            part: 0,
            kind: EntryKind::Adjustment,
            account_id: job.account_id,
            allocation_id: None,
            amount: Money::from_micros(delta),
            token: Some(&job.token),
            job_id: job.job_id,
            at: now,
            actor: Some(actor),
            memo,
        };
        // It follows the job's grant, as the job's charges did.
        let grant = match job.grant_number.as_deref() {
            Some(number) => tx.grant_funds(number)?,
            None => None,
        };
        postings::post_cost(tx, &base, Money::from_micros(delta), last_end.unwrap_or(now), grant.as_ref())?;
    }
    tx.add_charged(token, Money::from_micros(delta))?;
    audit(
        tx,
        actor,
        now,
        if kind == EntryKind::Refund { "refund" } else { "adjust" },
        &format!("{token} {} {} {}", Money::from_micros(delta).to_exact_string(), request_id, memo.unwrap_or("")),
    )?;
    Ok(true)
}
