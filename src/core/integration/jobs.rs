// SPDX-License-Identifier: GPL-2.0-or-later
//! Finding a job by its SLURM id (and cluster, where one id could mean two jobs).

use super::*;

/// A job the ledger priced, found by SLURM id.
#[derive(Debug, Clone)]
pub struct FoundJob {
    pub job: JobRow,
    pub account: String,
    /// The cluster its runs were reconciled on; `None` before its first run ended.
    pub cluster: Option<String>,
}

/// The answer for a job id the ledger does not have, and for one the caller
/// may not see: the same, so it tells nothing about which.
pub fn unknown_job(cluster: Option<&str>, job_id: u32) -> IntegrationError {
    let where_ = cluster.map(|c| format!(" on cluster {c}")).unwrap_or_default();
    IntegrationError::UnknownJob(format!("no job {job_id}{where_} in the ledger"))
}

impl Budget {
    /// The accounts of every job and run carrying SLURM id `job_id` (on `cluster`,
    /// when given): the candidates `find_job` chooses from.
    pub fn accounts_with_job_id(
        &mut self,
        cluster: Option<&str>,
        job_id: u32,
    ) -> Result<Vec<String>, IntegrationError> {
        Ok(Tx::read(&mut self.ledger)?.accounts_with_job_id(cluster, job_id)?)
    }

    /// [`find_job`] in a read transaction of its own.
    pub fn find_job(&mut self, cluster: Option<&str>, job_id: u32) -> Result<FoundJob, IntegrationError> {
        find_job(&Tx::read(&mut self.ledger)?, cluster, job_id)
    }
}

/// Finds the one job with SLURM id `job_id` (on `cluster`, when given).
pub(crate) fn find_job(tx: &Tx<'_>, cluster: Option<&str>, job_id: u32) -> Result<FoundJob, IntegrationError> {
    let rows = tx.tokens_with_job_id(cluster, job_id)?;
    let where_ = match cluster {
        Some(c) => format!(" on cluster {c}"),
        None => String::new(),
    };
    if rows.is_empty() {
        return Err(unknown_job(cluster, job_id));
    }
    let mut tokens: Vec<&str> = rows.iter().filter_map(|(t, _)| t.as_deref()).collect();
    tokens.dedup();
    let mut clusters: Vec<&str> = rows.iter().filter_map(|(_, c)| c.as_deref()).collect();
    clusters.sort_unstable();
    clusters.dedup();
    match tokens.as_slice() {
        [] => {
            return Err(IntegrationError::NotPriced(format!(
                "job {job_id}{where_} ran without an asbb hold (submitted while the ledger was unavailable, or exempt), so there is no priced job to attach this to"
            )))
        }
        [_] => {}
        many => {
            return Err(IntegrationError::AmbiguousJob(format!(
                "job id {job_id}{where_} names {} jobs in the ledger (clusters: {}); give \"cluster\"",
                many.len(),
                if clusters.is_empty() { "unknown".to_string() } else { clusters.join(", ") }
            )))
        }
    }
    if clusters.len() > 1 {
        return Err(IntegrationError::AmbiguousJob(format!(
            "job id {job_id} ran on clusters {}; give \"cluster\"",
            clusters.join(", ")
        )));
    }
    let token = tokens[0];
    let job = tx.job(token)?.ok_or_else(|| unknown_job(cluster, job_id))?;
    let account = tx.account_by_id(job.account_id)?.name;
    Ok(FoundJob { job, account, cluster: clusters.first().map(|c| c.to_string()) })
}
