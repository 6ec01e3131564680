// SPDX-License-Identifier: GPL-2.0-or-later
//! Job rows: written at submit (and for a re-run), changed by modify, confirm, settle,
//! corrections and approval, and read back as summaries. A row's money columns
//! (`held_micros`, `charged_micros`) move with the postings that justify them.

use super::db::{params, OptionalExtension};
use super::{job_by_token, JobRow, JobState, Ledger, LedgerError, Tx, INDEXED_KEY};
use crate::core::money::Money;
use crate::core::pricing::job::JobRequest;
use crate::core::pricing::metadata::JobMetadata;
use serde::Serialize;

/// A job row as submit (and a re-run) writes it.
pub(crate) struct NewJob<'a> {
    pub token: &'a str,
    pub account_id: i64,
    pub req: &'a JobRequest,
    pub estimate: Money,
    pub held: Money,
    /// The grant it is held and charged against (named or its account's default).
    pub grant: Option<&'a str>,
    pub meta: Option<&'a JobMetadata>,
    /// Its (uid, account) pair is known to be in `account_job_users` already.
    pub user_known: bool,
    /// The SLURM cluster whose slurmctld priced it.
    pub cluster: Option<&'a str>,
}

/// One job as users see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct JobSummary {
    pub job_id: Option<u32>,
    pub account: String,
    pub partition: String,
    pub submitted_at: i64,
    pub state: String,
    pub estimate: Money,
    pub held: Money,
    pub charged: Money,
    pub token: String,
    pub user: String,
    /// Why the job waits, for jobs submitted held.
    pub reason: Option<String>,
    /// The SLURM cluster whose slurmctld priced it (`None`: from before schema 11).
    pub cluster: Option<String>,
}

/// The columns `job_summary_from_row` reads, from `jobs j JOIN accounts a`.
const JOB_SUMMARY_COLS: &str = "j.job_id, a.name, j.partition, j.submitted_at, j.state, j.estimate_micros, \
     j.held_micros, j.charged_micros, j.token, j.user_name, j.reason, j.cluster";

fn job_summary_from_row(r: &super::db::Row<'_>) -> super::db::Result<JobSummary> {
    Ok(JobSummary {
        job_id: r.get(0)?,
        account: r.get(1)?,
        partition: r.get(2)?,
        submitted_at: r.get(3)?,
        state: r.get(4)?,
        estimate: Money::from_micros(r.get(5)?),
        held: Money::from_micros(r.get(6)?),
        charged: Money::from_micros(r.get(7)?),
        token: r.get(8)?,
        user: r.get(9)?,
        reason: r.get(10)?,
        cluster: r.get(11)?,
    })
}

/// A job the ledger still holds money (or a place) for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OpenHold {
    pub token: String,
    pub account: String,
    pub uid: u32,
    pub job_id: Option<u32>,
    pub state: String,
    pub held: Money,
    pub submitted_at: i64,
    /// The cluster whose slurmctld priced it (`None`: written before ledgers named
    /// clusters).
    pub cluster: Option<String>,
}

/// Jobs submitted held by asbb, not yet holding funds (of `jobs j`): the
/// `jobs_waiting` index's own condition, word for word, so SQLite uses that index.
const WAITING: &str = "j.state IN ('awaiting_approval', 'awaiting_funds')";

impl Ledger {
    pub fn job(&self, token: &str) -> Result<Option<JobRow>, LedgerError> {
        self.sql(|c| job_by_token(c, token))
    }

    /// Jobs waiting for approval or funds, oldest first (optionally one account's).
    pub fn waiting_jobs(&self, account: Option<&str>) -> Result<Vec<JobSummary>, LedgerError> {
        self.sql(|c| {
            c.prepare(&format!(
                "SELECT {JOB_SUMMARY_COLS} FROM jobs j JOIN accounts a ON a.id = j.account_id
                 WHERE {WAITING} AND (CAST(?1 AS TEXT) IS NULL OR a.name = ?1)
                 ORDER BY j.submitted_at, j.token"
            ))?
            .query_map(params![account], job_summary_from_row)?
            .collect()
        })
    }

    /// A user's most recent jobs, newest first.
    pub fn recent_jobs(&self, user: &str, limit: u32) -> Result<Vec<JobSummary>, LedgerError> {
        self.sql(|c| {
            c.prepare_cached(&format!(
                "SELECT {JOB_SUMMARY_COLS} FROM jobs j JOIN accounts a ON a.id = j.account_id
                 WHERE j.user_name = ?1 ORDER BY j.submitted_at DESC, j.token DESC LIMIT ?2"
            ))?
            .query_map(params![user, limit], job_summary_from_row)?
            .collect()
        })
    }
}

impl Tx<'_> {
    /// Names `cluster` on every job row that names none (rows from before schema 11);
    /// how many.
    pub fn name_unnamed_jobs(&self, cluster: &str) -> Result<usize, LedgerError> {
        self.sql(|c| c.execute("UPDATE jobs SET cluster = ?1 WHERE cluster IS NULL", [cluster]))
    }

    /// How many job rows name no cluster, and the clusters the ledger's runs name.
    pub fn unnamed_jobs(&self) -> Result<(usize, Vec<String>), LedgerError> {
        self.sql(|c| {
            let unnamed = c.query_row("SELECT count(*) FROM jobs WHERE cluster IS NULL", (), |r| r.get(0))?;
            let clusters: super::db::Result<Vec<String>> =
                c.prepare("SELECT DISTINCT cluster FROM runs ORDER BY 1")?.query_map((), |r| r.get(0))?.collect();
            Ok((unnamed, clusters?))
        })
    }

    /// Every job the ledger still holds money (or a place) for, oldest first.
    pub fn open_holds(&self) -> Result<Vec<OpenHold>, LedgerError> {
        self.sql(|c| {
            c.prepare(
                "SELECT j.token, a.name, j.uid, j.job_id, j.state, j.held_micros, j.submitted_at, j.cluster
                 FROM jobs j JOIN accounts a ON a.id = j.account_id
                 WHERE j.state IN ('held', 'awaiting_approval', 'awaiting_funds') ORDER BY j.submitted_at, j.token",
            )?
            .query_map((), |r| {
                Ok(OpenHold {
                    token: r.get(0)?,
                    account: r.get(1)?,
                    uid: r.get(2)?,
                    job_id: r.get(3)?,
                    state: r.get(4)?,
                    held: Money::from_micros(r.get(5)?),
                    submitted_at: r.get(6)?,
                    cluster: r.get(7)?,
                })
            })?
            .collect()
        })
    }

    /// The uid of job `token`'s owner (`None`: no such job).
    pub fn job_uid(&self, token: &str) -> Result<Option<u32>, LedgerError> {
        self.sql(|c| {
            c.prepare_cached("SELECT uid FROM jobs WHERE token = ?1")?.query_row([token], |r| r.get(0)).optional()
        })
    }

    /// Writes a new job's row (its metadata with it: a second UPDATE would write the
    /// page twice) and, for a user not seen in the account before, the pair that lets
    /// the API show them the account.
    pub fn insert_job(
        &self,
        job: &NewJob<'_>,
        state: JobState,
        reason: Option<&str>,
        now: i64,
    ) -> Result<(), LedgerError> {
        let NewJob { token, account_id, req, estimate, held, grant, meta, user_known, cluster } = *job;
        let meta = meta.filter(|m| !m.is_empty());
        let metadata_json = meta.map(|m| serde_json::to_string(m).unwrap_or_else(|_| "{}".into()));
        let res = &req.resources;
        self.sql(|c| {
            c.prepare_cached(
                "INSERT INTO jobs (token, account_id, user_name, uid, partition, job_id, job_name, nodes, cpus, mem_mb, gpus,
                   time_limit_min, qos, estimate_micros, tasks_total, state, reason, submitted_at, held_micros,
                   hold_placed_micros, research_domain, project_code, grant_number, metadata_json, hold_at, cluster)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?19, ?20, ?21,
                   ?22, ?23, ?24, ?25)",
            )?
            .execute(params![
                token,
                account_id,
                req.user,
                req.uid,
                req.partition,
                req.job_id,
                req.job_name,
                res.nodes,
                res.cpus,
                res.mem_mb,
                res.gpus_text(),
                req.time_limit_min,
                req.qos,
                estimate.micros(),
                req.array_tasks.max(1),
                state,
                reason,
                now,
                held.micros(),
                meta.and_then(|m| m.research_domain.as_deref()),
                meta.and_then(|m| m.project_code.as_deref()),
                grant,
                metadata_json,
                (state == JobState::Held).then_some(now),
                cluster,
            ])?;
            if !user_known {
                // Usually there already: then this reads a page and writes none.
                c.prepare_cached("INSERT INTO account_job_users (uid, account_id) VALUES (?1, ?2) ON CONFLICT DO NOTHING")?
                    .execute(params![req.uid, account_id])?;
            }
            Ok(())
        })
    }

    /// A modify's new request and estimate on the job's row (its array size stays).
    pub fn update_request(&self, token: &str, req: &JobRequest, estimate: Money) -> Result<(), LedgerError> {
        let res = &req.resources;
        self.sql(|c| {
            c.prepare_cached(
                "UPDATE jobs SET estimate_micros = ?2, partition = ?3, nodes = ?4, cpus = ?5, mem_mb = ?6, gpus = ?7,
                   time_limit_min = ?8, qos = ?9
                 WHERE token = ?1",
            )?
            .execute(params![
                token,
                estimate.micros(),
                req.partition,
                res.nodes,
                res.cpus,
                res.mem_mb,
                res.gpus_text(),
                req.time_limit_min,
                req.qos
            ])
        })?;
        Ok(())
    }

    /// The key of a job's next hold change, `modify:<token>:<n>`: the first `n` from
    /// the number of its earlier changes that no entry uses (ledgers before schema 5
    /// counted all of the job's entries instead, so a count alone could repeat one of
    /// their keys). The count is a range over the journal's key index, not a look-up
    /// by token.
    pub fn next_modify_key(&self, token: &str) -> Result<String, LedgerError> {
        let prefix = format!("modify:{token}:");
        // ';' is the character after ':', so [prefix, end) holds exactly the keys with it.
        let end = format!("modify:{token};");
        let mut n: i64 = self.sql(|c| {
            c.prepare_cached(&format!(
                "SELECT count(DISTINCT txn_key) FROM journal WHERE txn_key >= ?1 AND txn_key < ?2 AND {INDEXED_KEY}"
            ))?
            .query_row([&prefix, &end], |r| r.get(0))
        })?;
        while self.txn_exists(&format!("{prefix}{n}"))? {
            n += 1;
        }
        Ok(format!("{prefix}{n}"))
    }

    /// The metadata a job was submitted with (`None`: none, or unreadable).
    pub fn job_metadata(&self, token: &str) -> Result<Option<JobMetadata>, LedgerError> {
        let json: Option<String> = self.sql(|c| {
            c.prepare_cached("SELECT metadata_json FROM jobs WHERE token = ?1")?.query_row([token], |r| r.get(0))
        })?;
        Ok(json.as_deref().and_then(|j| serde_json::from_str(j).ok()))
    }

    /// A waiting job now holds `hold`, its first hold (the entry is the caller's).
    pub fn start_holding(&self, token: &str, hold: Money, now: i64) -> Result<(), LedgerError> {
        self.sql(|c| {
            c.prepare_cached(
                "UPDATE jobs SET held_micros = held_micros + ?2, hold_placed_micros = ?2, state = 'held', reason = NULL,
                   hold_at = ?3
                 WHERE token = ?1",
            )?
            .execute(params![token, hold.micros(), now])
        })?;
        Ok(())
    }

    /// The SLURM job id of a provisional hold's job, once known.
    pub fn confirm_job_id(&self, token: &str, job_id: u32) -> Result<(), LedgerError> {
        self.sql(|c| {
            c.prepare_cached("UPDATE jobs SET job_id = ?2 WHERE token = ?1 AND job_id IS NULL")?
                .execute(params![token, job_id])
        })?;
        Ok(())
    }

    /// Ends a job that will hold nothing more (`Released` or `Denied`; its hold is
    /// released by the caller): `reason` replaces the stored one when given, and
    /// `job_id` fills in an unknown job id.
    pub fn end_job(
        &self,
        token: &str,
        state: JobState,
        reason: Option<&str>,
        job_id: Option<u32>,
        now: i64,
    ) -> Result<(), LedgerError> {
        debug_assert!(matches!(state, JobState::Released | JobState::Denied), "{state}");
        self.sql(|c| {
            c.prepare_cached(
                "UPDATE jobs SET state = ?2, reason = coalesce(?3, reason), settled_at = ?4, job_id = coalesce(job_id, ?5)
                 WHERE token = ?1",
            )?
            .execute(params![token, state, reason, now, job_id])
        })?;
        Ok(())
    }

    /// A run of the job was charged `cost`: `tasks_done` of its tasks are done now,
    /// and it is in `state` (settled at `now` when `settled`).
    #[allow(clippy::too_many_arguments)]
    pub fn record_tasks_done(
        &self,
        token: &str,
        tasks_done: u32,
        cost: Money,
        state: JobState,
        settled: bool,
        job_id: u32,
        now: i64,
    ) -> Result<(), LedgerError> {
        self.sql(|c| {
            c.prepare_cached(
                "UPDATE jobs SET tasks_done = ?2, charged_micros = charged_micros + ?3, state = ?4,
                   settled_at = CASE WHEN ?5 <> 0 THEN ?6 ELSE settled_at END, job_id = coalesce(job_id, ?7)
                 WHERE token = ?1",
            )?
            .execute(params![token, tasks_done, cost.micros(), state, settled, now, job_id])
        })?;
        Ok(())
    }

    /// A correction changed what the job is charged by `delta` (signed).
    pub fn add_charged(&self, token: &str, delta: Money) -> Result<(), LedgerError> {
        self.add_to("UPDATE jobs SET charged_micros = charged_micros + ?2 WHERE token = ?1", &token, delta.micros())
    }
}
