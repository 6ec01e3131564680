// SPDX-License-Identifier: GPL-2.0-or-later
//! `/metrics`: Prometheus text from the ledger's maintained totals and this server's
//! request counts.

use super::auth::Caller;
use super::state::AppState;
use super::wire::{ApiError, ApiResult};
use crate::core::config::ApiRole;
use crate::core::integration::MetricsSnapshot;
use crate::core::money::Money;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use std::sync::atomic::Ordering;

/// Prometheus text. Everyone gets totals over all accounts and the service's health;
/// callers with role `read` or more (a token, or a socket peer with that role) also get
/// each account's figures. Every figure is a maintained total (see `MetricsSnapshot`).
pub(super) async fn metrics(State(state): State<AppState>, caller: Option<axum::Extension<Caller>>) -> ApiResult {
    let per_account = caller.is_some_and(|c| c.role >= ApiRole::Read);
    let snap =
        state.with_budget(move |b, now| Ok((b.metrics_snapshot(per_account).map_err(ApiError::from)?, now))).await;
    let counts: Vec<u64> = state.requests.iter().map(|c| c.load(Ordering::Relaxed)).collect();
    let text = render_metrics(snap.as_ref().ok().map(|(s, n)| (s, *n)), &counts);
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], text).into_response())
}

/// A label value in the Prometheus text format.
fn label_value(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// Prometheus text exposition. Per-account series only when the snapshot has them.
pub fn render_metrics(snap: Option<(&MetricsSnapshot, i64)>, requests: &[u64]) -> String {
    let mut out = String::new();
    let mut metric = |name: &str, kind: &str, help: &str, samples: Vec<(String, String)>| {
        out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n"));
        for (labels, v) in samples {
            out.push_str(&format!("{name}{labels} {v}\n"));
        }
    };
    let dollars = |m: i64| Money::from_micros(m).to_exact_string();
    let one = |v: String| vec![(String::new(), v)];
    metric(
        "asbb_ledger_up",
        "gauge",
        "1 when the ledger answered this scrape, 0 when it did not.",
        one(if snap.is_some() { "1" } else { "0" }.into()),
    );
    if let Some((s, now)) = snap {
        metric(
            "asbb_jobs",
            "gauge",
            "Jobs in the ledger by state: held (accepted, funds held), awaiting_approval/awaiting_funds (submitted held), settled, released, denied. Refusals write nothing to the ledger and are not counted.",
            s.jobs_by_state.iter().map(|(st, n)| (format!("{{state=\"{}\"}}", label_value(st)), n.to_string())).collect(),
        );
        metric("asbb_holds_open", "gauge", "Jobs holding money, all accounts.", one(s.holds_open.to_string()));
        metric(
            "asbb_holds_open_dollars",
            "gauge",
            "Money held by open holds, all accounts.",
            one(dollars(s.holds_open_micros)),
        );
        metric(
            "asbb_reconcile_lag_seconds",
            "gauge",
            "Age of the oldest open hold (0 when none): how far behind reconciliation could be.",
            one(s.oldest_open_hold_at.map_or(0, |t| (now - t).max(0)).to_string()),
        );
        metric(
            "asbb_runs_without_hold",
            "gauge",
            "Runs charged with no asbb hold behind them: the submit hook did not price the job (ledger unavailable with on_ledger_error = accept, or submitted before asbb). The plugins log their errors to slurmctld's log; this is the trace they leave in the ledger.",
            one(s.runs_without_hold.to_string()),
        );
        metric(
            "asbb_cost_updates",
            "gauge",
            "Actual-cost updates recorded (API and imports).",
            one(s.cost_updates.to_string()),
        );
        metric("asbb_performance_feedback", "gauge", "Performance feedback records.", one(s.feedback.to_string()));
        metric(
            "asbb_learning_samples",
            "gauge",
            "Estimate-vs-actual samples (reconciled runs and feedback).",
            one(s.learning_samples.to_string()),
        );
        if let Some(accounts) = &s.accounts {
            let per = |f: &dyn Fn(&crate::core::integration::AccountMetrics) -> String| -> Vec<(String, String)> {
                accounts.iter().map(|a| (format!("{{account=\"{}\"}}", label_value(&a.name)), f(a))).collect()
            };
            metric(
                "asbb_account_holds_open",
                "gauge",
                "Jobs holding money, per account.",
                per(&|a| a.holds_open.to_string()),
            );
            metric(
                "asbb_account_holds_open_dollars",
                "gauge",
                "Money held by open holds, per account.",
                per(&|a| dollars(a.held_micros)),
            );
            metric(
                "asbb_account_charged_dollars",
                "gauge",
                "Net charged per account: charges - refunds + adjustments (all time).",
                per(&|a| dollars(a.charged_micros)),
            );
        }
    }
    metric(
        "asbb_api_requests_total",
        "counter",
        "Requests this server answered, by status class.",
        requests.iter().enumerate().map(|(i, n)| (format!("{{status=\"{}xx\"}}", i + 1), n.to_string())).collect(),
    );
    out
}
