// SPDX-License-Identifier: GPL-2.0-or-later
//! A job changed after submit (`scontrol update`, a re-run): the hold follows it; and
//! provisional holds confirmed or dropped once slurmctld has the job.

use super::submit::{decide, GrantAsk, Verdict};
use super::*;

impl Budget {
    /// Re-prices a job whose request changed, or re-checks a held job being released.
    /// `approved` skips the approval threshold (an admin approved the job).
    pub fn modify(
        &mut self,
        token: &str,
        req: &JobRequest,
        releasing: bool,
        approved: bool,
        now: i64,
    ) -> Result<Modified, BudgetError> {
        let tx = Tx::write(&mut self.ledger)?;
        let job = tx.job(token)?.ok_or_else(|| BudgetError::UnknownToken(token.to_string()))?;
        // The hold sits on the account the job was priced for; a job that moved would be
        // held on one account and charged and released on the other.
        if job.state.is_open() {
            let priced_for = tx.account_by_id(job.account_id)?.name;
            if !priced_for.eq_ignore_ascii_case(&req.account) {
                return Ok(Modified::Refused {
                    reason: format!(
                        "asbb: this job's funds are held on account '{priced_for}'; to run it under '{}', cancel it and submit it again with -A {}",
                        req.account, req.account
                    ),
                });
            }
        }
        let domain = job.research_domain.clone().unwrap_or_default();
        let outcome = match job.state {
            JobState::Held => {
                // Nothing left to run. (An array with tasks still to run is repriced
                // below like any other: its pending tasks may grow.)
                if job.tasks_done >= job.tasks_total {
                    return Ok(Modified::Unchanged);
                }
                let (estimate, new_hold) = if job.tasks_total > 1 {
                    // An array: an update reaches one split-off task (`123_5`) or the
                    // unsplit rest, never the whole. It may grow the hold by what it adds
                    // per task; it never shrinks the hold of the other tasks.
                    let one_task = JobRequest { array_tasks: 1, ..req.clone() };
                    let per_task_new = cost::estimate(&self.config, &one_task)?.micros();
                    let per_task_old = job.estimate.micros() / job.tasks_total as i64;
                    let grow = per_task_new
                        .checked_sub(per_task_old)
                        .ok_or(BudgetError::Overflow)?
                        .max(0)
                        .checked_mul(req.array_tasks.max(1) as i64)
                        .ok_or(BudgetError::Overflow)?;
                    (
                        job.estimate.checked_add(Money::from_micros(grow)).ok_or(BudgetError::Overflow)?,
                        job.held.checked_add(Money::from_micros(grow)).ok_or(BudgetError::Overflow)?,
                    )
                } else {
                    let estimate = cost::estimate(&self.config, req)?;
                    // The new hold is sized like a submit's (= estimate when learning is off).
                    let learning = &self.config.learning;
                    let new_hold = crate::core::pricing::learning::hold_for(
                        &tx,
                        job.account_id,
                        &req.partition,
                        &domain,
                        estimate,
                        learning,
                    )?;
                    (estimate, new_hold)
                };
                // An update only ever grows a hold. slurmctld calls job_modify before it
                // validates the update and may still refuse it (a time limit below the
                // job's TimeMin, an unknown node name), keeping the job as it was; a
                // smaller job's unused hold comes back when it ends.
                let delta = new_hold.checked_sub(job.held).ok_or(BudgetError::Overflow)?;
                if delta <= Money::ZERO {
                    Modified::Unchanged
                } else {
                    let acc = tx.account_by_id(job.account_id)?;
                    let allocs = tx.allocations(acc.id)?;
                    let available = available_of(&acc, &allocs, now);
                    if let Some(grant) = job.grant_number.as_deref() {
                        let left = match tx.grant_funds(grant)? {
                            Some(g) => grant_available_of(&g, &allocs, now),
                            None => Money::ZERO,
                        };
                        if left < delta && left < available {
                            return Ok(Modified::Refused {
                                reason: format!(
                                    "asbb: grant '{grant}' cannot cover this change: it needs {} more, {} of it available to account '{}'",
                                    delta,
                                    left.max(Money::ZERO),
                                    acc.name
                                ),
                            });
                        }
                    }
                    if available < delta {
                        return Ok(Modified::Refused {
                            reason: format!(
                                "asbb: account '{}' cannot cover this change: it needs {} more, {} available",
                                acc.name,
                                delta,
                                available.max(Money::ZERO)
                            ),
                        });
                    }
                    let key = tx.next_modify_key(token)?;
                    adjust_hold(&tx, &key, &job, delta, now)?;
                    tx.update_request(token, req, estimate)?;
                    Modified::Repriced { old_hold: job.held, new_hold }
                }
            }
            JobState::AwaitingApproval | JobState::AwaitingFunds => {
                // Every task of the token waits, and one hold is placed for all of them (a
                // completion releases `hold_placed / tasks_total` per task): priced whole,
                // whatever the update names (a split-off task `123_5` is one task).
                let whole = JobRequest { array_tasks: job.tasks_total, ..req.clone() };
                let estimate = cost::estimate(&self.config, &whole)?;
                tx.update_request(token, req, estimate)?;
                if !releasing {
                    tx.commit()?;
                    return Ok(Modified::Unchanged);
                }
                let needs_approval = job.state == JobState::AwaitingApproval && !approved;
                // The approval threshold is re-checked at every release (the job may have
                // grown since it was submitted); only an operator's release approves.
                let ask = GrantAsk::stored(job.grant_number.as_deref());
                match decide(&self.config, &tx, &mut ReadCache::default(), &whole, &domain, ask, now, approved)? {
                    // Place the learned hold, not necessarily the estimate.
                    Verdict::Fits { account, hold, grant, .. } if !needs_approval => {
                        let grant = grant.as_ref().map(|g| g.number.as_str());
                        postings::hold(&tx, token, account.id, grant, hold, req.job_id, now, "released after hold")?;
                        tx.start_holding(token, hold, now)?;
                        Modified::Released { hold }
                    }
                    Verdict::Fits { .. } => Modified::StillHeld { reason: job.reason.clone().unwrap_or_default() },
                    Verdict::Held { reason, .. } => Modified::StillHeld { reason },
                    Verdict::Done(Decision::Reject { reason, .. }) => Modified::StillHeld { reason },
                    Verdict::Done(_) => Modified::Unchanged,
                }
            }
            JobState::Denied if releasing && !approved => {
                return Ok(Modified::StillHeld { reason: job.reason.clone().unwrap_or_default() })
            }
            _ => Modified::Unchanged,
        };
        tx.commit()?;
        Ok(outcome)
    }

    /// Prices one more run of a finished job that SLURM requeued (`scontrol requeue`
    /// of a COMPLETED/FAILED/... job by its owner or an admin: no job_submit call
    /// happens). The re-run is priced like a submission of one task and gets a row
    /// and token of its own. `None` when the job is not finished in the ledger (its
    /// hold still covers the next run) or is exempt now.
    pub fn price_rerun(&mut self, token: &str, job_id: u32, now: i64) -> Result<Option<Rerun>, BudgetError> {
        let cluster = self.cluster.as_deref();
        let tx = Tx::write(&mut self.ledger)?;
        let Some(job) = tx.job(token)? else { return Ok(None) };
        if job.state.is_open() {
            return Ok(None);
        }
        let account = tx.account_by_id(job.account_id)?;
        let mut req = job.request(&account.name);
        req.array_tasks = 1;
        req.job_id = Some(job_id);
        // The re-run is the same job: its grant, project and domain go with it, so
        // reports and learning count its cost where the first run's went.
        let meta = tx.job_metadata(token)?;
        let domain = job.research_domain.clone().unwrap_or_default();
        let per_task = Money::from_micros(job.estimate.micros() / job.tasks_total.max(1) as i64);
        let new_token = tx.new_token()?;
        let waiting = |tx: &Tx<'_>, state: JobState, reason: String, estimate: Money| -> Result<Rerun, BudgetError> {
            let row = NewJob {
                token: &new_token,
                account_id: account.id,
                req: &req,
                estimate,
                held: Money::ZERO,
                grant: job.grant_number.as_deref(),
                meta: meta.as_ref(),
                user_known: false,
                cluster,
            };
            tx.insert_job(&row, state, Some(&reason), now)?;
            Ok(Rerun::Waiting { token: new_token.clone(), reason })
        };
        let outcome = if job.state == JobState::Denied {
            let reason = format!("asbb: job {job_id} was denied by an admin; requeueing it does not let it run");
            waiting(&tx, JobState::Denied, reason, per_task)?
        } else {
            let ask = GrantAsk::stored(job.grant_number.as_deref());
            match decide(&self.config, &tx, &mut ReadCache::default(), &req, &domain, ask, now, false)? {
                Verdict::Fits { account, estimate, hold, grant, .. } => {
                    let grant = grant.as_ref().map(|g| g.number.as_str());
                    let row = NewJob {
                        token: &new_token,
                        account_id: account.id,
                        req: &req,
                        estimate,
                        held: hold,
                        grant,
                        meta: meta.as_ref(),
                        user_known: false,
                        cluster,
                    };
                    tx.insert_job(&row, JobState::Held, None, now)?;
                    postings::hold(
                        &tx,
                        &new_token,
                        account.id,
                        grant,
                        hold,
                        Some(job_id),
                        now,
                        "re-run after requeue",
                    )?;
                    Rerun::Held { token: new_token.clone(), hold }
                }
                Verdict::Held { estimate, reason, state, .. } => waiting(&tx, state, reason, estimate)?,
                Verdict::Done(Decision::Reject { reason, estimate, .. }) => {
                    waiting(&tx, JobState::AwaitingFunds, reason, estimate.unwrap_or(per_task))?
                }
                Verdict::Done(_) => return Ok(None),
            }
        };
        tx.commit()?;
        Ok(Some(outcome))
    }

    /// Settles provisional holds in one transaction: the jobs SLURM has get their job
    /// id (confirmed); the holds of `never_created` (SLURM refused the job after
    /// job_submit, or it was a `--test-only` probe) are released. Returns what was
    /// released, per token.
    pub fn confirm_holds(
        &mut self,
        found: &[(String, u32)],
        never_created: &[String],
        now: i64,
    ) -> Result<Vec<(String, Money)>, BudgetError> {
        let tx = Tx::write(&mut self.ledger)?;
        for (token, job_id) in found {
            tx.confirm_job_id(token, *job_id)?;
        }
        let mut released = Vec::new();
        for token in never_created {
            let Some(job) = tx.job(token)? else { continue };
            if job.job_id.is_some() || !job.state.is_open() {
                continue;
            }
            if !job.held.is_zero() {
                postings::release(&tx, &format!("release:{token}"), &job, job.held, now)?;
            }
            let reason = "SLURM never created the job (refused after job_submit, or --test-only)";
            tx.end_job(token, JobState::Released, Some(reason), None, now)?;
            released.push((token.clone(), job.held));
        }
        tx.commit()?;
        Ok(released)
    }
}
