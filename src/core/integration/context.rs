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
        let (found, runs, grant_number, stored_meta, updates, feedback) = {
            let tx = Tx::read(&mut self.ledger)?;
            let found = find_job(&tx, cluster, job_id)?;
            let runs: Vec<RunInfo> = tx
                .runs_of_job(&found.job.token)?
                .into_iter()
                .map(|r| RunInfo {
                    cluster: r.cluster,
                    job_id: r.job_id,
                    end_state: r.end_state,
                    start: format_time(r.start_time),
                    end: format_time(r.end_time),
                    elapsed_s: r.elapsed_s,
                    cost: r.cost,
                })
                .collect();
            // The job's own grant (named, or its account's default when it was priced);
            // for a job that names none, the account's current grant, if it has one.
            let grant_number = match &found.job.grant_number {
                Some(n) => Some(n.clone()),
                None => tx.current_grant_of(found.job.account_id)?,
            };
            let stored_meta = tx.job_metadata(&found.job.token)?;
            let json = |text: Option<String>| text.and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok());
            let updates: Vec<CostUpdateInfo> = tx
                .cost_updates_of(&found.job.token)?
                .into_iter()
                .map(|u| CostUpdateInfo {
                    source: u.source,
                    actual: u.actual,
                    adjustment: u.delta,
                    compute: u.compute,
                    storage: u.storage,
                    network: u.network,
                    spot_savings: u.spot_savings,
                    instance_types: json(u.instance_types_json).unwrap_or(serde_json::Value::Array(vec![])),
                    received_at: format_time(u.received_at),
                    metadata: json(u.metadata_json),
                    cost_data: json(u.cost_data_json),
                })
                .collect();
            let feedback = tx.latest_feedback(&found.job.token)?.map(|f| {
                let money = |m: Option<Money>| m.map(|m| m.to_exact_string());
                serde_json::json!({
                    "estimated_cost": money(f.estimated_cost),
                    "actual_cost": money(f.actual_cost),
                    "estimated_duration": f.estimated_duration_s,
                    "actual_duration": f.actual_duration_s,
                    "performance_rating": f.performance_rating,
                    "optimization_hints": json(f.optimization_hints_json),
                    "received_at": format_time(f.received_at),
                })
            });
            (found, runs, grant_number, stored_meta, updates, feedback)
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
        let mut meta: JobMetadata = stored_meta.unwrap_or_default();
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
