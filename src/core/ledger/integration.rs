// SPDX-License-Identifier: GPL-2.0-or-later
//! What the sister tools' calls read and write: jobs found by SLURM id, actual costs
//! (`cost_updates`), performance feedback, account members, and the figures behind
//! `/metrics`. Rows come back as stored (unix times, JSON text); `core::integration`
//! shapes them for the API.

use super::db::{params, OptionalExtension};
use super::{Ledger, LedgerError, Tx};
use crate::core::money::Money;

/// A cost update as recorded (`delta`: the adjustment it posted, signed micros).
pub(crate) struct NewCostUpdate<'a> {
    pub cluster: &'a str,
    pub job_id: u32,
    pub source: &'a str,
    pub token: &'a str,
    pub actual: Money,
    pub charged_before: Money,
    pub delta: i64,
    pub compute: Option<Money>,
    pub storage: Option<Money>,
    pub network: Option<Money>,
    pub spot_savings: Option<Money>,
    pub instance_types_json: &'a str,
    pub performance_json: Option<&'a str>,
    pub metadata_json: Option<&'a str>,
    pub cost_data_json: Option<&'a str>,
    /// The adjustment's journal key (`None`: it posted nothing).
    pub txn_key: Option<&'a str>,
    pub actor: &'a str,
    pub received_at: i64,
}

/// An earlier update of the same (cluster, job, source).
pub(crate) struct PriorCostUpdate {
    pub actual: i64,
    pub charged_before: i64,
    pub delta: i64,
    pub txn_key: Option<String>,
}

/// A cost update as read back.
pub(crate) struct CostUpdateRow {
    pub source: String,
    pub actual: Money,
    pub delta: Money,
    pub compute: Option<Money>,
    pub storage: Option<Money>,
    pub network: Option<Money>,
    pub spot_savings: Option<Money>,
    pub instance_types_json: Option<String>,
    pub received_at: i64,
    pub metadata_json: Option<String>,
    pub cost_data_json: Option<String>,
}

/// Performance feedback as recorded.
pub(crate) struct NewFeedback<'a> {
    pub cluster: &'a str,
    pub job_id: u32,
    pub token: &'a str,
    pub estimated_cost: Option<Money>,
    pub actual_cost: Option<Money>,
    pub estimated_duration_s: Option<i64>,
    pub actual_duration_s: Option<i64>,
    pub performance_rating: Option<&'a str>,
    pub optimization_hints_json: Option<&'a str>,
    pub received_at: i64,
    pub actor: &'a str,
}

/// A job's latest feedback as read back.
pub(crate) struct FeedbackRow {
    pub estimated_cost: Option<Money>,
    pub actual_cost: Option<Money>,
    pub estimated_duration_s: Option<i64>,
    pub actual_duration_s: Option<i64>,
    pub performance_rating: Option<String>,
    pub optimization_hints_json: Option<String>,
    pub received_at: i64,
}

/// A job carrying a SLURM id: its hold token (`None`: a run asbb never priced) and
/// the cluster its run ended on (`None`: no run yet).
pub(crate) type TokenOnCluster = (Option<String>, Option<String>);

/// A run of a job as the budget context shows it.
pub(crate) struct RunRow {
    pub cluster: String,
    pub job_id: u32,
    pub end_state: String,
    pub start_time: i64,
    pub end_time: i64,
    pub elapsed_s: i64,
    pub cost: Money,
}

/// An account member added by an admin.
pub(crate) struct MemberRow {
    pub user: String,
    pub uid: Option<u32>,
    pub added_at: i64,
    pub added_by: Option<String>,
}

/// The ledger's counts behind `/metrics`.
pub(crate) struct MetricsRows {
    pub jobs_by_state: Vec<(String, i64)>,
    /// Per account id with open holds: (account id, jobs, oldest submission).
    pub open_by_account: Vec<(i64, i64, i64)>,
    pub holds_open_micros: i64,
    /// Per account, by name (only when asked): (id, name, held, charged) micros.
    pub accounts: Option<Vec<(i64, String, i64, i64)>>,
    pub runs_without_hold: i64,
    pub cost_updates: i64,
    pub feedback: i64,
    pub learning_samples: i64,
}

impl Ledger {
    /// The accounts a user may read: those they ran jobs in (by uid) and those they are
    /// a member of (by uid or name).
    pub fn accounts_of_user(&self, uid: u32, name: Option<&str>) -> Result<Vec<String>, LedgerError> {
        self.sql(|c| {
            c.prepare_cached(
                "SELECT a.name FROM accounts a WHERE
                   EXISTS (SELECT 1 FROM account_job_users u WHERE u.account_id = a.id AND u.uid = ?1)
                   OR EXISTS (SELECT 1 FROM account_members m WHERE m.account_id = a.id
                              AND (m.uid = ?1 OR (CAST(?2 AS TEXT) IS NOT NULL AND m.user_name = ?2)))
                 ORDER BY a.name",
            )?
            .query_map(params![uid, name], |r| r.get(0))?
            .collect()
        })
    }
}

impl Tx<'_> {
    /// Every (token, cluster) carrying SLURM id `job_id` (on `cluster`, when given): a
    /// run's (its cluster), or a job row's with no run yet (reported with no cluster:
    /// the cluster of a found job is where it ran); ordered.
    pub fn tokens_with_job_id(&self, cluster: Option<&str>, job_id: u32) -> Result<Vec<TokenOnCluster>, LedgerError> {
        self.sql(|c| {
            c.prepare_cached(
                "SELECT token, cluster FROM runs WHERE job_id = ?1 AND (CAST(?2 AS TEXT) IS NULL OR cluster = ?2)
                 UNION
                 SELECT j.token, NULL FROM jobs j WHERE j.job_id = ?1 AND (CAST(?2 AS TEXT) IS NULL OR j.cluster = ?2)
                   AND NOT EXISTS (SELECT 1 FROM runs r WHERE r.token = j.token)
                 ORDER BY 1, 2",
            )?
            .query_map(params![job_id, cluster], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect()
        })
    }

    /// The accounts of every job and run carrying SLURM id `job_id` (on `cluster`,
    /// when given).
    pub fn accounts_with_job_id(&self, cluster: Option<&str>, job_id: u32) -> Result<Vec<String>, LedgerError> {
        self.sql(|c| {
            c.prepare_cached(
                "SELECT a.name FROM runs r JOIN accounts a ON a.id = r.account_id
                   WHERE r.job_id = ?1 AND (CAST(?2 AS TEXT) IS NULL OR r.cluster = ?2)
                 UNION
                 SELECT a.name FROM jobs j JOIN accounts a ON a.id = j.account_id
                   WHERE j.job_id = ?1 AND (CAST(?2 AS TEXT) IS NULL OR j.cluster = ?2)",
            )?
            .query_map(params![job_id, cluster], |r| r.get(0))?
            .collect()
        })
    }

    pub fn prior_cost_update(
        &self,
        cluster: &str,
        job_id: u32,
        source: &str,
    ) -> Result<Option<PriorCostUpdate>, LedgerError> {
        self.sql(|c| {
            c.prepare_cached(
                "SELECT actual_micros, charged_before_micros, delta_micros, txn_key FROM cost_updates
                 WHERE cluster = ?1 AND job_id = ?2 AND source = ?3",
            )?
            .query_row(params![cluster, job_id, source], |r| {
                Ok(PriorCostUpdate {
                    actual: r.get(0)?,
                    charged_before: r.get(1)?,
                    delta: r.get(2)?,
                    txn_key: r.get(3)?,
                })
            })
            .optional()
        })
    }

    /// Records a cost update once per (cluster, job, source); whether it was new.
    pub fn insert_cost_update(&self, u: &NewCostUpdate<'_>) -> Result<bool, LedgerError> {
        let n = self.sql(|c| {
            c.prepare_cached(
                "INSERT INTO cost_updates (cluster, job_id, source, token, actual_micros, charged_before_micros,
                   delta_micros, compute_micros, storage_micros, network_micros, spot_savings_micros, instance_types,
                   performance_json, metadata_json, txn_key, received_at, actor, cost_data_json)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18) ON CONFLICT DO NOTHING",
            )?
            .execute(params![
                u.cluster,
                u.job_id,
                u.source,
                u.token,
                u.actual.micros(),
                u.charged_before.micros(),
                u.delta,
                u.compute.map(Money::micros),
                u.storage.map(Money::micros),
                u.network.map(Money::micros),
                u.spot_savings.map(Money::micros),
                u.instance_types_json,
                u.performance_json,
                u.metadata_json,
                u.txn_key,
                u.received_at,
                u.actor,
                u.cost_data_json,
            ])
        })?;
        Ok(n == 1)
    }

    /// Job `token`'s cost updates, oldest first.
    pub fn cost_updates_of(&self, token: &str) -> Result<Vec<CostUpdateRow>, LedgerError> {
        self.sql(|c| {
            c.prepare_cached(
                "SELECT source, actual_micros, delta_micros, compute_micros, storage_micros, network_micros,
                   spot_savings_micros, instance_types, received_at, metadata_json, cost_data_json
                 FROM cost_updates WHERE token = ?1 ORDER BY id",
            )?
            .query_map([token], |r| {
                let m = |i: usize| -> super::db::Result<Option<Money>> {
                    Ok(r.get::<_, Option<i64>>(i)?.map(Money::from_micros))
                };
                Ok(CostUpdateRow {
                    source: r.get(0)?,
                    actual: Money::from_micros(r.get(1)?),
                    delta: Money::from_micros(r.get(2)?),
                    compute: m(3)?,
                    storage: m(4)?,
                    network: m(5)?,
                    spot_savings: m(6)?,
                    instance_types_json: r.get(7)?,
                    received_at: r.get(8)?,
                    metadata_json: r.get(9)?,
                    cost_data_json: r.get(10)?,
                })
            })?
            .collect()
        })
    }

    /// Records feedback once per (cluster, job); whether it was new.
    pub fn insert_feedback(&self, f: &NewFeedback<'_>) -> Result<bool, LedgerError> {
        let n = self.sql(|c| {
            c.prepare_cached(
                "INSERT INTO performance_feedback (cluster, job_id, token, estimated_cost_micros, actual_cost_micros,
                   estimated_duration_s, actual_duration_s, performance_rating, optimization_hints, received_at, actor)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11) ON CONFLICT DO NOTHING",
            )?
            .execute(params![
                f.cluster,
                f.job_id,
                f.token,
                f.estimated_cost.map(Money::micros),
                f.actual_cost.map(Money::micros),
                f.estimated_duration_s,
                f.actual_duration_s,
                f.performance_rating,
                f.optimization_hints_json,
                f.received_at,
                f.actor
            ])
        })?;
        Ok(n == 1)
    }

    /// Job `token`'s latest feedback.
    pub fn latest_feedback(&self, token: &str) -> Result<Option<FeedbackRow>, LedgerError> {
        self.sql(|c| {
            c.prepare_cached(
                "SELECT estimated_cost_micros, actual_cost_micros, estimated_duration_s, actual_duration_s,
                   performance_rating, optimization_hints, received_at
                 FROM performance_feedback WHERE token = ?1 ORDER BY id DESC LIMIT 1",
            )?
            .query_row([token], |r| {
                Ok(FeedbackRow {
                    estimated_cost: r.get::<_, Option<i64>>(0)?.map(Money::from_micros),
                    actual_cost: r.get::<_, Option<i64>>(1)?.map(Money::from_micros),
                    estimated_duration_s: r.get(2)?,
                    actual_duration_s: r.get(3)?,
                    performance_rating: r.get(4)?,
                    optimization_hints_json: r.get(5)?,
                    received_at: r.get(6)?,
                })
            })
            .optional()
        })
    }

    /// Job `token`'s runs, in the order they ended.
    pub fn runs_of_job(&self, token: &str) -> Result<Vec<RunRow>, LedgerError> {
        self.sql(|c| {
            c.prepare_cached(
                "SELECT cluster, job_id, end_state, start_time, end_time, elapsed_s, cost_micros FROM runs
                 WHERE token = ?1 ORDER BY end_time, id",
            )?
            .query_map([token], |r| {
                Ok(RunRow {
                    cluster: r.get(0)?,
                    job_id: r.get(1)?,
                    end_state: r.get(2)?,
                    start_time: r.get(3)?,
                    end_time: r.get(4)?,
                    elapsed_s: r.get(5)?,
                    cost: Money::from_micros(r.get(6)?),
                })
            })?
            .collect()
        })
    }

    /// The grant an account is funded by now: its active one ending last, else its
    /// latest.
    pub fn current_grant_of(&self, account_id: i64) -> Result<Option<String>, LedgerError> {
        self.sql(|c| {
            c.prepare_cached(
                "SELECT grant_number FROM grant_accounts WHERE budget_account_id = ?1
                 ORDER BY status = 'active' DESC, grant_end_date DESC LIMIT 1",
            )?
            .query_row([account_id], |r| r.get(0))
            .optional()
        })
    }

    /// Adds a member; false when `user` is one already.
    pub fn add_member(
        &self,
        account_id: i64,
        user: &str,
        uid: Option<u32>,
        actor: &str,
        now: i64,
    ) -> Result<bool, LedgerError> {
        let n = self.sql(|c| {
            c.execute(
                "INSERT INTO account_members (account_id, user_name, uid, added_at, added_by) VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT DO NOTHING",
                params![account_id, user, uid, now, actor],
            )
        })?;
        Ok(n == 1)
    }

    /// Removes a member; false when `user` was not one.
    pub fn remove_member(&self, account_id: i64, user: &str) -> Result<bool, LedgerError> {
        let n = self.sql(|c| {
            c.execute("DELETE FROM account_members WHERE account_id = ?1 AND user_name = ?2", params![account_id, user])
        })?;
        Ok(n == 1)
    }

    /// An account's members, by name.
    pub fn members_of(&self, account_id: i64) -> Result<Vec<MemberRow>, LedgerError> {
        self.sql(|c| {
            c.prepare_cached(
                "SELECT user_name, uid, added_at, added_by FROM account_members WHERE account_id = ?1 ORDER BY user_name",
            )?
            .query_map([account_id], |r| {
                Ok(MemberRow { user: r.get(0)?, uid: r.get(1)?, added_at: r.get(2)?, added_by: r.get(3)? })
            })?
            .collect()
        })
    }

    /// The users who ran jobs in an account, by name.
    pub fn job_users_of(&self, account_id: i64) -> Result<Vec<(String, u32)>, LedgerError> {
        self.sql(|c| {
            c.prepare_cached("SELECT DISTINCT user_name, uid FROM jobs WHERE account_id = ?1 ORDER BY user_name, uid")?
                .query_map([account_id], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect()
        })
    }

    /// The counts behind `/metrics` (`per_account`: each account's totals too).
    pub fn metrics_rows(&self, per_account: bool) -> Result<MetricsRows, LedgerError> {
        self.sql(|c| {
            let jobs_by_state = c
                .prepare_cached("SELECT state, count(*) FROM jobs GROUP BY state ORDER BY state")?
                .query_map((), |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<super::db::Result<_>>()?;
            // Open holds per account id, read from the jobs table (accepted jobs are in
            // no state index: a submission writes none).
            let open_by_account = c
                .prepare_cached(
                    "SELECT account_id, count(*), min(submitted_at) FROM jobs
                     WHERE state IN ('held', 'awaiting_approval', 'awaiting_funds') AND held_micros > 0
                     GROUP BY account_id",
                )?
                .query_map((), |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                .collect::<super::db::Result<_>>()?;
            let one = |q: &str| -> super::db::Result<i64> {
                c.query_row(q, (), |r| r.get::<_, Option<i64>>(0)).map(Option::unwrap_or_default)
            };
            let accounts = if per_account {
                let rows = c
                    .prepare_cached(
                        "SELECT a.id, a.name, a.held_micros,
                                a.overdraft_micros + coalesce((SELECT sum(l.debited_micros) FROM allocations l
                                                               WHERE l.account_id = a.id), 0)
                         FROM accounts a ORDER BY a.name",
                    )?
                    .query_map((), |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?
                    .collect::<super::db::Result<_>>()?;
                Some(rows)
            } else {
                None
            };
            // These tables are append-only (rows are never deleted) with integer primary
            // keys SQLite numbers 1, 2, 3, ...: the last id is the row count.
            Ok(MetricsRows {
                jobs_by_state,
                open_by_account,
                holds_open_micros: one("SELECT sum(held_micros) FROM accounts")?,
                accounts,
                runs_without_hold: one("SELECT count(*) FROM runs WHERE token IS NULL")?,
                cost_updates: one("SELECT max(id) FROM cost_updates")?,
                feedback: one("SELECT max(id) FROM performance_feedback")?,
                learning_samples: one("SELECT max(id) FROM learning_samples")?,
            })
        })
    }
}
