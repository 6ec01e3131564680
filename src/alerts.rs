// SPDX-License-Identifier: GPL-2.0-or-later
//! Sending alerts: one run raises and clears alerts in the ledger (`core::alerts`),
//! then tries every delivery that is due, by webhook (a JSON POST whose `text` is what
//! Slack and Mattermost show) and by mail (a sendmail-style command given the whole
//! message on its stdin). Used by `asbb-admin alerts run` and, every
//! `interval_minutes`, by `asbb-admin serve`. Never inside slurmctld.

use crate::core::alerts::{Channel, Delivery, DeliveryState};
use crate::core::config::AlertsConfig;
use crate::core::decisions::{format_time, Budget, BudgetError};
use std::time::Duration;

/// What one run did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunSummary {
    pub raised: Vec<String>,
    pub cleared: u32,
    pub sent: u32,
    /// `(title, channel, why)` of each failed attempt, and whether it was the last.
    pub failed: Vec<(String, &'static str, String, bool)>,
}

impl RunSummary {
    /// Lines for the log and the command's output.
    pub fn to_text(&self) -> String {
        let mut out = format!(
            "alerts: {} raised, {} cleared, {} deliver{} sent, {} failed\n",
            self.raised.len(),
            self.cleared,
            self.sent,
            if self.sent == 1 { "y" } else { "ies" },
            self.failed.len()
        );
        for t in &self.raised {
            out.push_str(&format!("raised: {t}\n"));
        }
        for (title, channel, why, last) in &self.failed {
            let then = if *last { "given up" } else { "will retry" };
            out.push_str(&format!("failed: {title} ({channel}: {why}; {then})\n"));
        }
        out
    }
}

/// Raises, clears and delivers at `now`. Deliveries are claimed one at a time, each at
/// the time it is tried (`now` plus the run's time so far); `stop` is asked before each.
pub fn run(
    budget: &mut Budget,
    cfg: &AlertsConfig,
    now: i64,
    stop: &dyn Fn() -> bool,
) -> Result<RunSummary, BudgetError> {
    let started = std::time::Instant::now();
    let conditions = budget.alert_conditions(cfg, now)?;
    let recorded = budget.record_alerts(cfg, &conditions, now)?;
    let mut summary = RunSummary { raised: recorded.raised, cleared: recorded.cleared, ..Default::default() };
    while !stop() {
        let at = now + started.elapsed().as_secs() as i64;
        let Some(d) = budget.claim_next_delivery(cfg, at)? else { break };
        let outcome = match d.channel {
            Channel::Webhook => post_webhook(cfg, &d),
            Channel::Mail => send_mail(cfg, &d, at),
        };
        let why = outcome.as_ref().err().cloned();
        let at = now + started.elapsed().as_secs() as i64;
        match budget.finish_delivery(cfg, &d, outcome, at)? {
            DeliveryState::Sent => summary.sent += 1,
            state => summary.failed.push((
                d.title.clone(),
                d.channel.as_str(),
                why.unwrap_or_default(),
                state == DeliveryState::GaveUp,
            )),
        }
    }
    Ok(summary)
}

/// The webhook's body: `text` for chat tools (with `&`, `<` and `>` escaped, as Slack
/// asks, so no name in it can mention a channel or make a link), `asbb` for programs.
pub fn webhook_body(d: &Delivery) -> serde_json::Value {
    let escaped = |t: &str| t.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;");
    serde_json::json!({
        "text": escaped(&format!("[asbb] {}\n{}", d.title, d.body)),
        "asbb": {
            "alert_id": d.alert_id,
            "kind": d.kind,
            "subject": d.subject,
            "title": d.title,
            "body": d.body,
            "raised_at": format_time(d.raised_at),
        },
    })
}

fn post_webhook(cfg: &AlertsConfig, d: &Delivery) -> Result<(), String> {
    let url = cfg.webhook_url.as_deref().ok_or("no webhook_url in [alerts]")?;
    let agent = ureq::AgentBuilder::new()
        .timeout(Duration::from_millis(cfg.webhook_timeout_ms as u64))
        .redirects(0)
        .user_agent(concat!("asbb/", env!("CARGO_PKG_VERSION")))
        .build();
    match agent.post(url).set("Content-Type", "application/json").send_string(&webhook_body(d).to_string()) {
        Ok(r) if (200..300).contains(&r.status()) => Ok(()),
        // Redirects are not followed: a 3xx delivered nothing.
        Ok(r) => Err(format!("the webhook answered {} (not followed: give the final URL)", r.status())),
        Err(ureq::Error::Status(code, r)) => {
            let text = r.into_string().unwrap_or_default();
            let first = text.lines().next().unwrap_or("").trim();
            Err(format!(
                "the webhook answered {code}{}",
                if first.is_empty() { String::new() } else { format!(": {first}") }
            ))
        }
        // Not the error's own text: it starts with the URL, and a webhook's path is its secret.
        Err(ureq::Error::Transport(t)) => {
            let detail =
                std::error::Error::source(&t).map(|s| s.to_string()).or_else(|| t.message().map(str::to_string));
            Err(format!(
                "cannot reach the webhook: {}{}",
                t.kind(),
                detail.map(|d| format!(" ({d})")).unwrap_or_default()
            ))
        }
    }
}

/// The message as the mail command reads it: headers, a blank line, the body.
pub fn mail_message(cfg: &AlertsConfig, d: &Delivery, now: i64) -> String {
    // Header values come from validated names and addresses; control characters are
    // still dropped (nothing else: a long To: line must stay whole), so nothing can add
    // a header.
    let clean = |s: &str| s.chars().filter(|c| !c.is_control()).collect::<String>();
    let date = chrono::DateTime::from_timestamp(now, 0).unwrap_or_default().to_rfc2822();
    format!(
        "From: {}\nTo: {}\nSubject: [asbb] {}\nDate: {date}\nMIME-Version: 1.0\nContent-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: 8bit\nAuto-Submitted: auto-generated\n\n{}\n",
        clean(&cfg.mail_from),
        clean(&d.recipients.join(", ")),
        clean(&d.title),
        d.body
    )
}

fn send_mail(cfg: &AlertsConfig, d: &Delivery, now: i64) -> Result<(), String> {
    let cmd = cfg.mail_command.as_deref().and_then(|c| c.split_first()).ok_or("no mail_command in [alerts]")?;
    if d.recipients.is_empty() {
        return Err("no recipient".into());
    }
    let args: Vec<&str> = cmd.1.iter().map(String::as_str).collect();
    crate::system::run_command(
        cmd.0,
        &args,
        &[],
        Some(mail_message(cfg, d, now).into_bytes()),
        Duration::from_millis(cfg.mail_timeout_ms as u64),
    )
    .map(|_| ())
}
