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
        let path = self.ledger.path().to_path_buf();
        let e = sql(&path);
        let tx = Tx::write(&mut self.ledger)?;
        let found = find_job(tx.tx, f.cluster.as_deref(), f.job_id)?;
        let cluster = found.cluster.clone().unwrap_or_default();
        let n = tx
            .tx
            .prepare_cached(
                "INSERT OR IGNORE INTO performance_feedback (cluster, job_id, token, estimated_cost_micros, actual_cost_micros,
                   estimated_duration_s, actual_duration_s, performance_rating, optimization_hints, received_at, actor)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
            )
            .and_then(|mut s| {
                s.execute(params![
                    cluster,
                    f.job_id,
                    found.job.token,
                    f.estimated_cost.map(Money::micros),
                    f.actual_cost.map(Money::micros),
                    f.estimated_duration_s.map(|d| d as i64),
                    f.actual_duration_s.map(|d| d as i64),
                    f.performance_rating,
                    f.optimization_hints.as_ref().map(|v| v.to_string()),
                    now,
                    actor
                ])
            })
            .map_err(&e)?;
        let mut sample = false;
        if let (1, Some(estimate), Some(actual)) = (n, f.estimated_cost, f.actual_cost) {
            sample = learning::record(
                tx.tx,
                &Sample {
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
                },
            )
            .map_err(&e)?;
        }
        tx.commit()?;
        Ok(FeedbackOutcome {
            applied: n == 1,
            job_id: f.job_id,
            account: found.account,
            partition: found.job.partition,
            learning_sample: sample,
        })
    }
}
