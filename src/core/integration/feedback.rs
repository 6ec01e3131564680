// SPDX-License-Identifier: GPL-2.0-or-later
//! Performance feedback from the cost advisor, recorded for learning.

use super::*;

/// Performance feedback from the cost advisor.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Feedback {
    pub cluster: Option<String>,
    pub job_id: u32,
    /// Each of these may be missing (a partial record); a learning sample needs both
    /// costs.
    pub estimated_cost: Option<Money>,
    pub actual_cost: Option<Money>,
    pub estimated_duration_s: Option<u64>,
    pub actual_duration_s: Option<u64>,
    /// As sent (a number's text or a string).
    pub performance_rating: Option<String>,
    pub optimization_hints: Option<serde_json::Value>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FeedbackOutcome {
    /// false: feedback for this job was recorded before; nothing changed.
    pub applied: bool,
    pub job_id: u32,
    pub account: String,
    pub partition: String,
    /// Whether it became a learning sample (it needs an estimated cost above zero).
    pub learning_sample: bool,
}

impl Budget {
    /// Records feedback once per job and adds it as a learning sample.
    pub fn record_feedback(
        &mut self,
        f: &Feedback,
        actor: &str,
        now: i64,
    ) -> Result<FeedbackOutcome, IntegrationError> {
        if let Some(c) = &f.cluster {
            check_name("cluster", c)?;
        }
        const MAX_DURATION_S: u64 = 100 * 365 * DAY_S as u64;
        if f.estimated_duration_s.max(f.actual_duration_s).is_some_and(|d| d > MAX_DURATION_S) {
            return Err(IntegrationError::Invalid("durations must be at most 100 years in seconds".into()));
        }
        let tx = Tx::write(&mut self.ledger)?;
        let found = find_job(&tx, f.cluster.as_deref(), f.job_id)?;
        // Where it ran; before its first run, the cluster the caller named.
        let cluster = found.cluster.clone().or_else(|| f.cluster.clone()).unwrap_or_default();
        let hints_json = f.optimization_hints.as_ref().map(|v| v.to_string());
        let new = tx.insert_feedback(&NewFeedback {
            cluster: &cluster,
            job_id: f.job_id,
            token: &found.job.token,
            estimated_cost: f.estimated_cost,
            actual_cost: f.actual_cost,
            estimated_duration_s: f.estimated_duration_s.map(|d| d as i64),
            actual_duration_s: f.actual_duration_s.map(|d| d as i64),
            performance_rating: f.performance_rating.as_deref(),
            optimization_hints_json: hints_json.as_deref(),
            received_at: now,
            actor,
        })?;
        let mut sample = false;
        if let (true, Some(estimate), Some(actual)) = (new, f.estimated_cost, f.actual_cost) {
            sample = tx.record_sample(&Sample {
                key: &format!("feedback:{cluster}:{}", f.job_id),
                source: "feedback",
                account_id: found.job.account_id,
                partition: &found.job.partition,
                domain: found.job.research_domain.as_deref().unwrap_or(""),
                token: Some(&found.job.token),
                job_id: Some(f.job_id),
                estimate,
                actual,
                estimated_s: f.estimated_duration_s.map(|d| d as i64),
                actual_s: f.actual_duration_s.map(|d| d as i64),
                at: now,
            })?;
        }
        tx.commit()?;
        Ok(FeedbackOutcome {
            applied: new,
            job_id: f.job_id,
            account: found.account,
            partition: found.job.partition,
            learning_sample: sample,
        })
    }
}
