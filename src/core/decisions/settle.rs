// SPDX-License-Identifier: GPL-2.0-or-later
//! A run ends: charge its actual cost, release the rest of the hold, exactly once.

use super::*;

impl Budget {
    /// Releases the whole remaining hold of a job that never ran (or is abandoned).
    pub fn release(&mut self, token: &str, now: i64) -> Result<Money, BudgetError> {
        let tx = Tx::write(&mut self.ledger)?;
        let job = tx.job(token)?.ok_or_else(|| BudgetError::UnknownToken(token.to_string()))?;
        let released = job.held;
        if !released.is_zero() {
            postings::release(&tx, &format!("release:{token}"), &job, released, now)?;
        }
        if job.state.is_open() {
            tx.end_job(token, JobState::Released, None, None, now)?;
        }
        tx.commit()?;
        Ok(released)
    }

    /// Charges a run's actual cost and releases its share of the hold. Idempotent.
    pub fn reconcile(&mut self, c: &JobCompletion, now: i64) -> Result<Reconciled, BudgetError> {
        let run_key = c.run_key();
        let tx = Tx::write(&mut self.ledger)?;
        if tx.run_exists(&run_key)? {
            return Ok(Reconciled::Duplicate);
        }
        let job = match c.hold_token.as_deref() {
            Some(t) => tx.job(t)?,
            None => None,
        };
        let account = match &job {
            Some(j) => tx.account_by_id(j.account_id)?,
            None => {
                if self.config.exemption(&c.account, &[&c.partition]).is_some() {
                    return Ok(Reconciled::NotTracked { reason: "exempt".into() });
                }
                match tx.account_by_name(&c.account)? {
                    Some(a) => a,
                    None => {
                        return Ok(Reconciled::NotTracked { reason: format!("account '{}' has no budget", c.account) })
                    }
                }
            }
        };
        // Priced from SLURM's record of the run (partition, QOS, allocation, elapsed),
        // never from a stored request an update (perhaps refused by SLURM) changed.
        // When the record names no QOS (no accounting; the safety net's sources), the
        // one the job was last priced with stands in.
        let qos = c.qos.clone().or_else(|| job.as_ref().and_then(|j| j.qos.clone()));
        let elapsed_s = c.elapsed_s() as u64;
        let cost = match (&c.allocated, self.config.partitions.get(&c.partition)) {
            (None, _) => Money::ZERO,
            (Some(res), Some(p)) => cost::task_cost(&self.config, p, qos.as_deref(), res, elapsed_s)?,
            // Priced at submit but the partition is now unpriced: charge the estimate share,
            // so a config change never loses money.
            (Some(_), None) => match &job {
                Some(j) => Money::from_micros(j.estimate.micros() / j.tasks_total as i64),
                None => {
                    return Ok(Reconciled::NotTracked { reason: format!("partition '{}' has no price", c.partition) })
                }
            },
        };
        let share = job.as_ref().map(|j| j.estimate.micros() / j.tasks_total as i64).unwrap_or(0);
        let run = NewRun {
            run_key: &run_key,
            token: job.as_ref().map(|j| j.token.as_str()),
            account_id: account.id,
            run: c,
            cost,
            estimate_share: Money::from_micros(share),
        };
        tx.insert_run(&run, now)?;
        let charge_key = format!("charge:{run_key}");
        let token = job.as_ref().map(|j| j.token.as_str());
        let at = if c.end_time > 0 { c.end_time } else { now };
        let base = NewEntry {
            txn_key: &charge_key,
            part: 0,
            kind: EntryKind::Charge,
            account_id: account.id,
            allocation_id: None,
            amount: cost,
            token,
            job_id: Some(c.job_id),
            at: now,
            actor: None,
            memo: None,
        };
        // A job that names a grant is charged to that grant only.
        let grant = match job.as_ref().and_then(|j| j.grant_number.as_deref()) {
            Some(number) => tx.grant_funds(number)?,
            None => None,
        };
        post_cost(&tx, &base, cost, at, grant.as_ref())?;
        // One estimate-vs-actual sample per run, in this transaction.
        crate::core::pricing::learning::record_run(&tx, c, job.as_ref(), account.id, cost, now)?;
        let mut released = Money::ZERO;
        if let Some(j) = &job {
            let will_run_again = c.state == EndState::Requeued;
            let first_run_of_this_id = !will_run_again && !tx.final_run_exists(&j.token, c.job_id, &run_key)?;
            let mut tasks_done = j.tasks_done;
            if first_run_of_this_id && j.tasks_done < j.tasks_total {
                tasks_done = (j.tasks_done + c.task_count).min(j.tasks_total);
                let release = if tasks_done >= j.tasks_total {
                    j.held
                } else {
                    let per_task = j.hold_placed.micros() / j.tasks_total as i64;
                    Money::from_micros((per_task * (tasks_done - j.tasks_done) as i64).min(j.held.micros()))
                };
                if !release.is_zero() {
                    postings::release(&tx, &format!("release-run:{run_key}"), j, release, now)?;
                    released = release;
                }
            }
            let settled = tasks_done >= j.tasks_total;
            let new_state = match (settled, j.state) {
                (true, JobState::Held) => JobState::Settled,
                (true, s) if s.is_waiting() => JobState::Released,
                (_, s) => s,
            };
            tx.record_tasks_done(&j.token, tasks_done, cost, new_state, settled, c.job_id, now)?;
        }
        tx.commit()?;
        Ok(Reconciled::Charged { account: account.name, cost, released })
    }
}
