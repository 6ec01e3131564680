// SPDX-License-Identifier: GPL-2.0-or-later
//! Actual costs from the burst launcher, posted as adjustments (see the module doc).

use super::*;

/// An actual cost for one job, from the API or an import file.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CostUpdate {
    pub cluster: Option<String>,
    pub job_id: u32,
    /// Who reported it: one adjustment per (cluster, job, source).
    pub source: String,
    pub actual: Money,
    pub compute: Option<Money>,
    pub storage: Option<Money>,
    pub network: Option<Money>,
    pub spot_savings: Option<Money>,
    pub instance_types: Vec<String>,
    pub performance: Option<serde_json::Value>,
    pub metadata: Option<serde_json::Value>,
    /// The whole `cost_data` object as sent (its keys beyond the ones above included).
    pub cost_data: Option<serde_json::Value>,
    /// When the reporter says which account and partition the job used, they must match the ledger.
    pub expect_account: Option<String>,
    pub expect_partition: Option<String>,
}

/// What a cost update did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CostOutcome {
    /// false: this (cluster, job, source) was applied before; nothing changed.
    pub applied: bool,
    pub job_id: u32,
    pub cluster: String,
    pub account: String,
    pub source: String,
    #[serde(serialize_with = "exact")]
    pub actual: Money,
    /// The job's net charge before the update (when it was first applied).
    #[serde(serialize_with = "exact")]
    pub charged_before: Money,
    /// Signed: positive = more cost.
    #[serde(serialize_with = "exact")]
    pub adjustment: Money,
    /// The job's net charge now.
    #[serde(serialize_with = "exact")]
    pub net_charge: Money,
    /// The journal key of the adjustment; `None` when the actual equalled the charge.
    pub journal_key: Option<String>,
}

impl Budget {
    /// Makes a job's net charge equal its reported actual cost (see the module doc).
    pub fn apply_cost_update(
        &mut self,
        u: &CostUpdate,
        actor: &str,
        now: i64,
    ) -> Result<CostOutcome, IntegrationError> {
        check_name("source", &u.source)?;
        if let Some(c) = &u.cluster {
            check_name("cluster", c)?;
        }
        if u.instance_types.len() > 64
            || u.instance_types.iter().any(|t| t.len() > 64 || t.chars().any(char::is_control))
        {
            return Err(IntegrationError::Invalid(
                "instance_types: at most 64 names of up to 64 printable characters".into(),
            ));
        }
        // One write transaction from the lookup to the record: the difference is taken
        // from the net charge as it stands, and no other update can post in between.
        let tx = Tx::write(&mut self.ledger)?;
        // 1. Which job, and was this (cluster, job, source) applied before?
        let found = find_job(&tx, u.cluster.as_deref(), u.job_id)?;
        let prior = match &found.cluster {
            Some(c) => tx.prior_cost_update(c, u.job_id, &u.source)?,
            None => None,
        };
        if let Some(a) = &u.expect_account {
            if *a != found.account {
                return Err(IntegrationError::Conflict(format!(
                    "job {} is charged to account {} in the ledger, not {}",
                    u.job_id,
                    found.account,
                    crate::core::text::clean_text(a)
                )));
            }
        }
        if let Some(p) = &u.expect_partition {
            if *p != found.job.partition {
                return Err(IntegrationError::Conflict(format!(
                    "job {} ran in partition {} in the ledger, not {}",
                    u.job_id,
                    found.job.partition,
                    crate::core::text::clean_text(p)
                )));
            }
        }
        let Some(cluster) = found.cluster.clone() else {
            return Err(IntegrationError::NotSettled(format!(
                "job {} has no reconciled run yet (state {}); send its cost after it ends",
                u.job_id, found.job.state
            )));
        };
        if let Some(p) = prior {
            if p.actual != u.actual.micros() {
                return Err(IntegrationError::Conflict(format!(
                    "job {} already has an actual cost of {} from {}; a different cost ({}) needs another source or an admin adjustment",
                    u.job_id,
                    Money::from_micros(p.actual).to_exact_string(),
                    u.source,
                    u.actual.to_exact_string()
                )));
            }
            return Ok(CostOutcome {
                applied: false,
                job_id: u.job_id,
                cluster,
                account: found.account,
                source: u.source.clone(),
                actual: u.actual,
                charged_before: Money::from_micros(p.charged_before),
                adjustment: Money::from_micros(p.delta),
                net_charge: found.job.charged,
                journal_key: p.txn_key,
            });
        }
        if !matches!(found.job.state, JobState::Settled | JobState::Released) {
            return Err(IntegrationError::NotSettled(format!(
                "job {} is still {} in the ledger ({} of {} tasks reconciled); send its cost after every run has ended",
                u.job_id, found.job.state, found.job.tasks_done, found.job.tasks_total
            )));
        }
        // 2. Post the difference through the corrections module.
        let charged_before = found.job.charged;
        let delta = u.actual.micros() - charged_before.micros();
        let request_id = format!("{cluster}:{}:{}", u.job_id, u.source);
        let key = format!("adjust:{request_id}");
        let memo = format!("actual cost {} from {}", u.actual.to_exact_string(), u.source);
        let applied = if delta != 0 {
            crate::core::decisions::corrections::correct_in(
                &tx,
                &found.job.token,
                crate::core::ledger::EntryKind::Adjustment,
                Money::from_micros(delta),
                Some(&memo),
                &request_id,
                actor,
                now,
            )?
        } else {
            true
        };
        // 3. Record what was reported.
        let instance_types_json = serde_json::to_string(&u.instance_types).unwrap_or_else(|_| "[]".into());
        let (performance_json, metadata_json, cost_data_json) = (
            u.performance.as_ref().map(|v| v.to_string()),
            u.metadata.as_ref().map(|v| v.to_string()),
            u.cost_data.as_ref().map(|v| v.to_string()),
        );
        let inserted = tx.insert_cost_update(&NewCostUpdate {
            cluster: &cluster,
            job_id: u.job_id,
            source: &u.source,
            token: &found.job.token,
            actual: u.actual,
            charged_before,
            delta,
            compute: u.compute,
            storage: u.storage,
            network: u.network,
            spot_savings: u.spot_savings,
            instance_types_json: &instance_types_json,
            performance_json: performance_json.as_deref(),
            metadata_json: metadata_json.as_deref(),
            cost_data_json: cost_data_json.as_deref(),
            txn_key: (delta != 0).then_some(key.as_str()),
            actor,
            received_at: now,
        })?;
        let net = tx.job(&found.job.token)?.map_or(found.job.charged, |j| j.charged);
        tx.commit()?;
        Ok(CostOutcome {
            applied: applied && inserted,
            job_id: u.job_id,
            cluster,
            account: found.account,
            source: u.source.clone(),
            actual: u.actual,
            charged_before,
            adjustment: Money::from_micros(delta),
            net_charge: net,
            journal_key: (delta != 0).then_some(key),
        })
    }
}
