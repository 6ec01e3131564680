// SPDX-License-Identifier: GPL-2.0-or-later
//! A job's budget context: what the sister tools see of a job and its account.

use super::*;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RunInfo {
    pub cluster: String,
    pub job_id: u32,
    pub end_state: String,
    pub start: String,
    pub end: String,
    pub elapsed_s: i64,
    #[serde(serialize_with = "exact")]
    pub cost: Money,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GrantRef {
    pub number: String,
    pub agency: String,
    pub pi: String,
    pub status: String,
    pub start: String,
    pub end: String,
    #[serde(serialize_with = "exact")]
    pub award: Money,
    #[serde(serialize_with = "exact")]
    pub remaining: Money,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CostUpdateInfo {
    pub source: String,
    #[serde(serialize_with = "exact")]
    pub actual: Money,
    #[serde(serialize_with = "exact")]
    pub adjustment: Money,
    #[serde(serialize_with = "exact_opt")]
    pub compute: Option<Money>,
    #[serde(serialize_with = "exact_opt")]
    pub storage: Option<Money>,
    #[serde(serialize_with = "exact_opt")]
    pub network: Option<Money>,
    #[serde(serialize_with = "exact_opt")]
    pub spot_savings: Option<Money>,
    pub instance_types: serde_json::Value,
    pub received_at: String,
    /// The `cost_data` object and the metadata, as sent.
    pub cost_data: Option<serde_json::Value>,
    pub metadata: Option<serde_json::Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AccountContext {
    pub name: String,
    pub status: String,
    #[serde(serialize_with = "exact")]
    pub allocated: Money,
    #[serde(serialize_with = "exact")]
    pub charged: Money,
    #[serde(serialize_with = "exact")]
    pub held: Money,
    #[serde(serialize_with = "exact")]
    pub credit_limit: Money,
    #[serde(serialize_with = "exact")]
    pub available: Money,
    /// Charges (net of refunds and adjustments) per day over the trailing 30 complete days.
    #[serde(serialize_with = "exact")]
    pub burn_rate_per_day: Money,
    /// Days until `available` reaches zero at that rate (0 when it is there already;
    /// `None` with no spending).
    pub days_until_exhausted: Option<i64>,
    pub projected_exhaustion: Option<String>,
    /// Start of the earliest active allocation and end of the latest (unix seconds, end exclusive).
    pub valid_from: Option<i64>,
    pub valid_until: Option<i64>,
}

/// Everything a sister tool needs to know about one job's money.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BudgetContext {
    pub job_id: u32,
    pub cluster: Option<String>,
    pub token: String,
    pub user: String,
    pub partition: String,
    pub state: String,
    pub submitted_at: String,
    pub settled_at: Option<String>,
    #[serde(serialize_with = "exact")]
    pub estimate: Money,
    /// Held when the job was accepted (learning may size it below the estimate).
    #[serde(serialize_with = "exact")]
    pub hold_placed: Money,
    /// Still held.
    #[serde(serialize_with = "exact")]
    pub hold: Money,
    /// Net charge: runs' charges plus adjustments, less refunds.
    #[serde(serialize_with = "exact")]
    pub actual: Money,
    pub request: Option<serde_json::Value>,
    pub runs: Vec<RunInfo>,
    pub account: AccountContext,
    pub grant: Option<GrantRef>,
    /// The job's own metadata (grant_number: the grant it is held and charged against).
    pub metadata: Option<serde_json::Value>,
    pub cost_updates: Vec<CostUpdateInfo>,
    pub feedback: Option<serde_json::Value>,
}

/// The burn-rate window of the budget context, in days.
pub const CONTEXT_BURN_WINDOW_DAYS: u32 = 30;

impl Budget {
    /// A job's account, grant, estimate, hold, actual, metadata and the account's outlook.
    pub fn budget_context(
        &mut self,
        cluster: Option<&str>,
        job_id: u32,
        now: i64,
    ) -> Result<BudgetContext, IntegrationError> {
        let path = self.ledger.path().to_path_buf();
        let e = sql(&path);
        let (found, runs, grant_number, metadata_json, updates, feedback) = {
            let tx = Tx::read(&mut self.ledger)?;
            let found = find_job(tx.tx, cluster, job_id)?;
            let runs: Vec<RunInfo> = tx
                .tx
                .prepare_cached(
                    "SELECT cluster, job_id, end_state, start_time, end_time, elapsed_s, cost_micros FROM runs
                     WHERE token = ?1 ORDER BY end_time, id",
                )
                .and_then(|mut s| {
                    s.query_map([&found.job.token], |r| {
                        Ok(RunInfo {
                            cluster: r.get(0)?,
                            job_id: r.get(1)?,
                            end_state: r.get(2)?,
                            start: format_time(r.get(3)?),
                            end: format_time(r.get(4)?),
                            elapsed_s: r.get(5)?,
                            cost: Money::from_micros(r.get(6)?),
                        })
                    })?
                    .collect()
                })
                .map_err(&e)?;
            // The job's own grant (named, or its account's default when it was priced);
            // for a job that names none, the account's current grant, if it has one.
            let grant_number: Option<String> = match &found.job.grant_number {
                Some(n) => Some(n.clone()),
                None => tx
                    .tx
                    .prepare_cached(
                        "SELECT grant_number FROM grant_accounts WHERE budget_account_id = ?1
                         ORDER BY status = 'active' DESC, grant_end_date DESC LIMIT 1",
                    )
                    .and_then(|mut s| s.query_row([found.job.account_id], |r| r.get(0)).optional())
                    .map_err(&e)?,
            };
            let metadata_json: Option<String> = tx
                .tx
                .prepare_cached("SELECT metadata_json FROM jobs WHERE token = ?1")
                .and_then(|mut s| s.query_row([&found.job.token], |r| r.get(0)))
                .map_err(&e)?;
            let updates: Vec<CostUpdateInfo> = tx
                .tx
                .prepare_cached(
                    "SELECT source, actual_micros, delta_micros, compute_micros, storage_micros, network_micros,
                       spot_savings_micros, instance_types, received_at, metadata_json, cost_data_json
                     FROM cost_updates WHERE token = ?1 ORDER BY id",
                )
                .and_then(|mut s| {
                    s.query_map([&found.job.token], |r| {
                        let m = |i: usize| -> rusqlite::Result<Option<Money>> {
                            Ok(r.get::<_, Option<i64>>(i)?.map(Money::from_micros))
                        };
                        let types: Option<String> = r.get(7)?;
                        let json = |i: usize| -> rusqlite::Result<Option<serde_json::Value>> {
                            Ok(r.get::<_, Option<String>>(i)?.and_then(|t| serde_json::from_str(&t).ok()))
                        };
                        Ok(CostUpdateInfo {
                            source: r.get(0)?,
                            actual: Money::from_micros(r.get(1)?),
                            adjustment: Money::from_micros(r.get(2)?),
                            compute: m(3)?,
                            storage: m(4)?,
                            network: m(5)?,
                            spot_savings: m(6)?,
                            instance_types: types
                                .and_then(|t| serde_json::from_str(&t).ok())
                                .unwrap_or(serde_json::Value::Array(vec![])),
                            received_at: format_time(r.get(8)?),
                            metadata: json(9)?,
                            cost_data: json(10)?,
                        })
                    })?
                    .collect()
                })
                .map_err(&e)?;
            let feedback: Option<serde_json::Value> = tx
                .tx
                .prepare_cached(
                    "SELECT estimated_cost_micros, actual_cost_micros, estimated_duration_s, actual_duration_s,
                       performance_rating, optimization_hints, received_at
                     FROM performance_feedback WHERE token = ?1 ORDER BY id DESC LIMIT 1",
                )
                .and_then(|mut s| {
                    s.query_row([&found.job.token], |r| {
                        let hints: Option<String> = r.get(5)?;
                        let money = |i: usize| -> rusqlite::Result<Option<String>> {
                            Ok(r.get::<_, Option<i64>>(i)?.map(|m| Money::from_micros(m).to_exact_string()))
                        };
                        Ok(serde_json::json!({
                            "estimated_cost": money(0)?,
                            "actual_cost": money(1)?,
                            "estimated_duration": r.get::<_, Option<i64>>(2)?,
                            "actual_duration": r.get::<_, Option<i64>>(3)?,
                            "performance_rating": r.get::<_, Option<String>>(4)?,
                            "optimization_hints": hints.and_then(|h| serde_json::from_str::<serde_json::Value>(&h).ok()),
                            "received_at": format_time(r.get(6)?),
                        }))
                    })
                    .optional()
                })
                .map_err(&e)?;
            (found, runs, grant_number, metadata_json, updates, feedback)
        };
        let balance = self.balance(&found.account, now)?;
        let grant = match grant_number {
            Some(n) => {
                let d = self.grant(&n)?;
                Some(GrantRef {
                    number: d.grant.number.clone(),
                    agency: d.grant.agency.clone(),
                    pi: d.grant.pi.clone(),
                    status: d.grant.status.clone(),
                    start: format_date(d.grant.start),
                    end: format_date(d.grant.end - DAY_S),
                    award: d.grant.award,
                    remaining: d.remaining(),
                })
            }
            None => None,
        };
        let account = self.account_context(&balance, now)?;
        // The job's own metadata, with the grant it is charged to.
        let mut meta: JobMetadata =
            metadata_json.as_deref().and_then(|m| serde_json::from_str(m).ok()).unwrap_or_default();
        meta.grant_number = found.job.grant_number.clone();
        let metadata = serde_json::to_value(&meta).ok();
        let job = found.job;
        let request = serde_json::to_value(job.request(&found.account)).ok();
        Ok(BudgetContext {
            job_id,
            cluster: found.cluster,
            token: job.token,
            user: job.user_name,
            partition: job.partition,
            state: job.state.to_string(),
            submitted_at: format_time(job.submitted_at),
            settled_at: job.settled_at.map(format_time),
            estimate: job.estimate,
            hold_placed: job.hold_placed,
            hold: job.held,
            actual: job.charged,
            request,
            runs,
            account,
            grant,
            metadata,
            cost_updates: updates,
            feedback,
        })
    }

    /// An account's balance with its burn rate and projected exhaustion of `available`.
    pub fn account_context(&mut self, balance: &Balance, now: i64) -> Result<AccountContext, IntegrationError> {
        let forecast = self.account_forecast(&balance.account, CONTEXT_BURN_WINDOW_DAYS, now)?;
        let burn = forecast.projection.burn_rate_per_day;
        let days = if balance.available.micros() <= 0 {
            Some(0)
        } else if burn.micros() > 0 {
            Some((balance.available.micros() + burn.micros() - 1) / burn.micros())
        } else {
            None
        };
        Ok(AccountContext {
            name: balance.account.clone(),
            status: balance.status.clone(),
            allocated: balance.allocated,
            charged: balance.charged,
            held: balance.held,
            credit_limit: balance.credit_limit,
            available: balance.available,
            burn_rate_per_day: burn,
            days_until_exhausted: days,
            projected_exhaustion: days.map(|d| format_date(now + d * DAY_S)),
            valid_from: balance.valid_from,
            valid_until: balance.valid_until,
        })
    }

    /// A quote (the plugin's decision, nothing held) and, when it would be accepted, the
    /// hold learning would place (the estimate when learning is off).
    pub fn check_quote(
        &mut self,
        req: &JobRequest,
        meta: &JobMetadata,
        now: i64,
    ) -> Result<(Decision, Option<Money>), IntegrationError> {
        Ok(self.quote_with_hold(req, meta, now)?)
    }
}
