// SPDX-License-Identifier: GPL-2.0-or-later
//! Run rows: one per ended run of a job (a requeued job has several), keyed by its
//! run key (cluster, job id, submit time, restart count), which keeps a run's charge
//! and release unique.

use super::db::params;
use super::{LedgerError, Tx};
use crate::core::money::Money;
use crate::core::pricing::job::JobCompletion;

/// A run as settle records it.
pub(crate) struct NewRun<'a> {
    pub run_key: &'a str,
    /// The job's hold token (`None`: a run asbb never priced).
    pub token: Option<&'a str>,
    pub account_id: i64,
    pub run: &'a JobCompletion,
    pub cost: Money,
    /// The job's estimate per task.
    pub estimate_share: Money,
}

impl Tx<'_> {
    pub fn run_exists(&self, run_key: &str) -> Result<bool, LedgerError> {
        self.sql(|c| c.prepare_cached("SELECT 1 FROM runs WHERE run_key = ?1")?.exists([run_key]))
    }

    pub fn insert_run(&self, r: &NewRun<'_>, now: i64) -> Result<(), LedgerError> {
        let c = r.run;
        let alloc_json = c.allocated.as_ref().and_then(|a| serde_json::to_string(a).ok());
        self.sql(|conn| {
            conn.prepare_cached(
                "INSERT INTO runs (run_key, token, account_id, cluster, job_id, user_name, partition, end_state, start_time,
                   end_time, elapsed_s, alloc_json, cost_micros, estimate_share_micros, reconciled_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)",
            )?
            .execute(params![
                r.run_key,
                r.token,
                r.account_id,
                c.cluster,
                c.job_id,
                c.user,
                c.partition,
                c.state.as_str(),
                c.start_time,
                c.end_time,
                c.elapsed_s(),
                alloc_json,
                r.cost.micros(),
                r.estimate_share.micros(),
                now
            ])
        })?;
        Ok(())
    }

    /// Whether job `token` has a run of SLURM job id `job_id` other than `run_key`
    /// that ended for good (not in a requeue SLURM announced).
    pub fn final_run_exists(&self, token: &str, job_id: u32, run_key: &str) -> Result<bool, LedgerError> {
        self.sql(|c| {
            c.prepare_cached(
                "SELECT 1 FROM runs WHERE token = ?1 AND job_id = ?2 AND run_key <> ?3 AND end_state <> 'REQUEUED'",
            )?
            .exists(params![token, job_id, run_key])
        })
    }

    /// The run keys recorded for SLURM job `job_id` of `cluster`.
    pub fn run_keys_of(&self, cluster: &str, job_id: u32) -> Result<Vec<String>, LedgerError> {
        self.sql(|c| {
            c.prepare_cached("SELECT run_key FROM runs WHERE cluster = ?1 AND job_id = ?2")?
                .query_map(params![cluster, job_id], |r| r.get(0))?
                .collect()
        })
    }

    /// When job `token`'s last run ended (`None`: it has no run).
    pub fn last_run_end(&self, token: &str) -> Result<Option<i64>, LedgerError> {
        self.sql(|c| {
            c.prepare_cached("SELECT max(end_time) FROM runs WHERE token = ?1")?.query_row([token], |r| r.get(0))
        })
    }
}
