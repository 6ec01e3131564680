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

/// The accounts of every job and run carrying SLURM id `job_id` (on `cluster`, when
/// given): the candidates `find_job` chooses from.
pub fn accounts_with_job_id(
    conn: &Connection,
    cluster: Option<&str>,
    job_id: u32,
) -> Result<Vec<String>, IntegrationError> {
    let e =
        |source| IntegrationError::Budget(BudgetError::Ledger(LedgerError::Sqlite { path: PathBuf::new(), source }));
    conn.prepare_cached(
        "SELECT a.name FROM runs r JOIN accounts a ON a.id = r.account_id
           WHERE r.job_id = ?1 AND (?2 IS NULL OR r.cluster = ?2)
         UNION
         SELECT a.name FROM jobs j JOIN accounts a ON a.id = j.account_id WHERE j.job_id = ?1 AND ?2 IS NULL",
    )
    .and_then(|mut s| s.query_map(params![job_id, cluster], |r| r.get(0))?.collect())
    .map_err(e)
}

/// Finds the one job with SLURM id `job_id` (on `cluster`, when given).
pub fn find_job(conn: &Connection, cluster: Option<&str>, job_id: u32) -> Result<FoundJob, IntegrationError> {
    let e =
        |source| IntegrationError::Budget(BudgetError::Ledger(LedgerError::Sqlite { path: PathBuf::new(), source }));
    let mut stmt = conn
        .prepare_cached(
            "SELECT token, cluster FROM runs WHERE job_id = ?1 AND (?2 IS NULL OR cluster = ?2)
             UNION
             SELECT j.token, NULL FROM jobs j WHERE j.job_id = ?1 AND ?2 IS NULL
               AND NOT EXISTS (SELECT 1 FROM runs r WHERE r.token = j.token)
             ORDER BY 1, 2",
        )
        .map_err(e)?;
    let rows: Vec<(Option<String>, Option<String>)> = stmt
        .query_map(params![job_id, cluster], |r| Ok((r.get(0)?, r.get(1)?)))
        .map_err(e)?
        .collect::<Result<_, _>>()
        .map_err(e)?;
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
    let token = tokens[0].to_string();
    let job = conn
        .prepare_cached(&format!("SELECT {JOB_COLS} FROM jobs WHERE token = ?1"))
        .and_then(|mut s| s.query_row([&token], job_from_row))
        .map_err(e)?;
    let account: String = conn
        .prepare_cached("SELECT name FROM accounts WHERE id = ?1")
        .and_then(|mut s| s.query_row([job.account_id], |r| r.get(0)))
        .map_err(e)?;
    Ok(FoundJob { job, account, cluster: clusters.first().map(|c| c.to_string()) })
}
