// SPDX-License-Identifier: GPL-2.0-or-later
//! Alerts: the crossings people are told about, kept in the ledger.
//!
//! A CONDITION is something true of the ledger now that `[alerts]` watches: a grant or
//! account has spent at least T% of its budget, is projected to run out before its
//! end, a job has awaited approval or held funds for too long. Each has a key
//! (`grant:NSF-1:spent:75`). A run compares the conditions with the open alerts:
//! a condition with no open alert RAISES one (a crossing), an open alert whose
//! condition no longer holds is CLEARED (so a later crossing raises a new one), and
//! the rest are left alone, which is what makes each crossing raised once.
//!
//! Each raised alert gets one DELIVERY per channel (webhook, mail). A delivery is
//! claimed before it is tried (its attempt time is set in a write transaction, so two
//! runs at once never both try it), then marked sent, or left pending to be tried again
//! after `retry_minutes`, and given up after `max_attempts`. Sending itself happens
//! outside the core (`crate::alerts`): nothing here touches the network.

use crate::core::config::AlertsConfig;
use crate::core::decisions::{format_date, format_time, Budget, BudgetError, DAY_S};
use crate::core::grants::report::{format_bps, Exhaustion, Projection};
use crate::core::ledger::{JobState, Tx, WatchedJob};
use std::collections::{BTreeMap, BTreeSet};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum AlertKind {
    /// A grant or account has spent at least a threshold of its budget.
    Spent,
    /// Projected to run out before its end date.
    Exhaustion,
    /// A job has awaited approval at least `approval_wait_hours`.
    Approval,
    /// A job's hold has been open at least `hold_age_hours`.
    HoldAge,
}

impl AlertKind {
    pub fn as_str(self) -> &'static str {
        match self {
            AlertKind::Spent => "spent",
            AlertKind::Exhaustion => "exhaustion",
            AlertKind::Approval => "approval",
            AlertKind::HoldAge => "hold_age",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Channel {
    Webhook,
    Mail,
}

impl Channel {
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Webhook => "webhook",
            Channel::Mail => "mail",
        }
    }

    fn parse(s: &str) -> Channel {
        if s == "mail" {
            Channel::Mail
        } else {
            Channel::Webhook
        }
    }
}

/// Something true now that `[alerts]` watches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Condition {
    pub key: String,
    pub kind: AlertKind,
    pub subject: String,
    pub title: String,
    pub body: String,
    /// PI addresses (the grant's, or those of the grants funding the account).
    pub pi_emails: Vec<String>,
    /// False: the condition is near enough to keep an open alert from clearing (a few
    /// points under its threshold), not enough to raise one. Without this margin a refund
    /// or a day's quiet would clear and raise the same alert over and over.
    pub fresh: bool,
}

/// Spent alerts stay open until spending falls this many points under their threshold.
pub const SPENT_CLEAR_MARGIN_PERCENT: u32 = 5;
/// An exhaustion alert stays open while the projected date is less than this past the end.
pub const EXHAUSTION_CLEAR_MARGIN_DAYS: i64 = 30;

/// Thresholds of one subject share a group (`grant:N:spent`) and rank by percent; other
/// keys are a group of their own. Raised with a higher one of its group (in the same
/// run, or still open), a threshold is recorded but not sent.
fn group_rank(key: &str) -> (&str, u32) {
    match key.rsplit_once(':') {
        Some((group, t)) if group.ends_with(":spent") => (group, t.parse().unwrap_or(0)),
        _ => (key, 0),
    }
}

/// What one run did to the ledger's alerts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recorded {
    /// Titles of the alerts raised, in order.
    pub raised: Vec<String>,
    pub cleared: u32,
}

/// A delivery claimed for trying now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub alert_id: i64,
    pub channel: Channel,
    pub recipients: Vec<String>,
    pub kind: String,
    pub subject: String,
    pub title: String,
    pub body: String,
    pub raised_at: i64,
    /// Including this one.
    pub attempt: u32,
}

/// How a delivery stands after an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryState {
    Sent,
    /// Failed; tried again after `retry_minutes`.
    Retrying,
    /// Failed `max_attempts` times.
    GaveUp,
}

pub use crate::core::ledger::{AlertRecord, DeliveryRecord};

const HOUR_S: i64 = 3_600;

fn spent_conditions(
    cfg: &AlertsConfig,
    what: &str,
    key: &str,
    p: &Projection,
    budget_word: &str,
    pi_emails: &[String],
) -> Vec<Condition> {
    if p.budget.micros() <= 0 {
        return Vec::new();
    }
    let mut out = Vec::new();
    for &t in &cfg.spent_percent {
        let keep_from = t.saturating_sub(SPENT_CLEAR_MARGIN_PERCENT) as i64 * 100;
        if p.percent_spent_bps < keep_from {
            continue;
        }
        out.push(Condition {
            key: format!("{key}:spent:{t}"),
            kind: AlertKind::Spent,
            subject: what.to_string(),
            title: format!("{what} has spent {t}% of its {budget_word}"),
            body: format!(
                "{} has spent {} of its {} {budget_word} ({}) as of {} UTC; {} remains.\n{}",
                capitalized(what),
                p.spent,
                p.budget,
                format_bps(p.percent_spent_bps),
                format_time(p.as_of),
                p.remaining,
                outlook(p, what)
            ),
            pi_emails: pi_emails.to_vec(),
            fresh: p.percent_spent_bps >= t as i64 * 100,
        });
    }
    let near_exhaustion = match (p.exhaustion, p.end) {
        (Exhaustion::Exhausted, _) => true,
        (Exhaustion::On(t), Some(end)) => t < end + EXHAUSTION_CLEAR_MARGIN_DAYS * DAY_S,
        _ => false,
    };
    if cfg.projected_exhaustion && (p.alert || near_exhaustion) {
        out.push(Condition {
            key: format!("{key}:exhaustion"),
            kind: AlertKind::Exhaustion,
            subject: what.to_string(),
            title: format!("{what} runs out before its end"),
            body: format!(
                "{}\nSpent {} of {} ({}) as of {} UTC; burn rate {} a day over the last {} day{}.",
                outlook(p, what),
                p.spent,
                p.budget,
                format_bps(p.percent_spent_bps),
                format_time(p.as_of),
                p.burn_rate_per_day,
                p.effective_days,
                if p.effective_days == 1 { "" } else { "s" }
            ),
            pi_emails: pi_emails.to_vec(),
            fresh: p.alert,
        });
    }
    out
}

/// `grant NSF-1` → `Grant NSF-1`, to start a sentence.
fn capitalized(what: &str) -> String {
    let mut c = what.chars();
    c.next().map(|f| f.to_uppercase().chain(c).collect()).unwrap_or_default()
}

/// One sentence on when the money runs out.
fn outlook(p: &Projection, what: &str) -> String {
    let end = p.end.map(|e| format_date(e - DAY_S));
    match (p.exhaustion, end) {
        (Exhaustion::Exhausted, _) => format!("Nothing is left of {what}."),
        (Exhaustion::On(t), Some(end)) => {
            format!("At the current burn rate it runs out on {}; it ends on {end}.", format_date(t))
        }
        (Exhaustion::On(t), None) => {
            format!("At the current burn rate it runs out on {}.", format_date(t))
        }
        (_, Some(end)) => format!("Nothing was spent in the forecast window; it ends on {end}."),
        (_, None) => "Nothing was spent in the forecast window.".to_string(),
    }
}

impl Budget {
    /// Every condition `[alerts]` watches that holds at `now`.
    pub fn alert_conditions(&mut self, cfg: &AlertsConfig, now: i64) -> Result<Vec<Condition>, BudgetError> {
        let window = self.config.forecast.window_days;
        let (grants, accounts, pis) = {
            let tx = Tx::read(&mut self.ledger)?;
            let grants = tx.active_grants(now)?;
            let accounts = tx.active_accounts()?;
            // The PIs of the grants funding each account.
            let mut pis: BTreeMap<i64, Vec<String>> = BTreeMap::new();
            let rows = tx.funding_pi_emails(now)?;
            for (account_id, email) in rows {
                let list = pis.entry(account_id).or_default();
                if !list.contains(&email) {
                    list.push(email);
                }
            }
            (grants, accounts, pis)
        };
        let mut out = Vec::new();
        for (number, pi_email) in &grants {
            let f = self.grant_forecast(number, window, now)?;
            let what = format!("grant {number}");
            out.extend(spent_conditions(
                cfg,
                &what,
                &format!("grant:{number}"),
                &f.projection,
                "award",
                pi_email.as_slice(),
            ));
        }
        let account_ids: BTreeMap<String, i64> = accounts.iter().map(|(id, n)| (n.clone(), *id)).collect();
        for (id, name) in &accounts {
            let f = self.account_forecast(name, window, now)?;
            let emails = pis.get(id).cloned().unwrap_or_default();
            out.extend(spent_conditions(
                cfg,
                &format!("account {name}"),
                &format!("account:{name}"),
                &f.projection,
                "budget",
                &emails,
            ));
        }
        let jobs = |budget: &mut Budget, state: JobState, min_age_h: u32| -> Result<Vec<WatchedJob>, BudgetError> {
            Ok(Tx::read(&mut budget.ledger)?.jobs_in_state(state, now - min_age_h as i64 * HOUR_S)?)
        };
        let emails_of =
            |account: &str| account_ids.get(account).and_then(|id| pis.get(id)).cloned().unwrap_or_default();
        if let Some(hours) = cfg.approval_wait_hours {
            for j in jobs(self, JobState::AwaitingApproval, hours)? {
                let what = what_job(&j);
                let approve = j.job_id.map_or_else(
                    || "it was quoted through the API and has no SLURM job yet".to_string(),
                    |id| {
                        format!(
                            "approve it with `asbb-admin job approve {id}` or deny it with `asbb-admin job deny {id}`"
                        )
                    },
                );
                out.push(Condition {
                    key: format!("job:{}:approval", j.token),
                    kind: AlertKind::Approval,
                    subject: what.clone(),
                    title: format!("{what} awaits approval"),
                    body: format!(
                        "{} ({}, account {}, partition {}), estimated at {}, has awaited approval since {} UTC; {approve}.",
                        capitalized(&what),
                        j.user,
                        j.account,
                        j.partition,
                        j.estimate,
                        format_time(j.submitted_at)
                    ),
                    pi_emails: emails_of(&j.account),
                    fresh: true,
                });
            }
        }
        if let Some(hours) = cfg.hold_age_hours {
            for j in jobs(self, JobState::Held, hours)? {
                let since = j.hold_at.unwrap_or(j.submitted_at);
                if j.held.micros() <= 0 || since > now - hours as i64 * HOUR_S {
                    continue;
                }
                let what = what_job(&j);
                out.push(Condition {
                    key: format!("job:{}:hold_age", j.token),
                    kind: AlertKind::HoldAge,
                    subject: what.clone(),
                    title: format!("{what} has held {} for over {hours} hours", j.held),
                    body: format!(
                        "{} ({}, account {}, partition {}) has held {} of account {} since {} UTC. If SLURM no longer knows the job, `asbb-admin reconcile` settles the hold.",
                        capitalized(&what),
                        j.user,
                        j.account,
                        j.partition,
                        j.held,
                        j.account,
                        format_time(since)
                    ),
                    pi_emails: emails_of(&j.account),
                    fresh: true,
                });
            }
        }
        Ok(out)
    }

    /// Raises an alert for each condition that has no open one, clears the open alerts
    /// whose condition no longer holds, and gives each raised alert its deliveries.
    /// One write transaction.
    pub fn record_alerts(
        &mut self,
        cfg: &AlertsConfig,
        conditions: &[Condition],
        now: i64,
    ) -> Result<Recorded, BudgetError> {
        let tx = Tx::write(&mut self.ledger)?;
        let open: BTreeMap<String, i64> = tx.open_alerts()?.into_iter().collect();
        let holding: BTreeSet<&str> = conditions.iter().map(|c| c.key.as_str()).collect();
        let mut recorded = Recorded::default();
        for (key, id) in &open {
            if !holding.contains(key.as_str()) {
                tx.clear_alert(*id, now)?;
                recorded.cleared += 1;
            }
        }
        let new: Vec<&Condition> = conditions.iter().filter(|c| c.fresh && !open.contains_key(&c.key)).collect();
        let mut top: BTreeMap<&str, u32> = BTreeMap::new();
        for key in
            open.keys().map(String::as_str).filter(|k| holding.contains(k)).chain(new.iter().map(|c| c.key.as_str()))
        {
            let (group, rank) = group_rank(key);
            let r = top.entry(group).or_insert(rank);
            *r = (*r).max(rank);
        }
        for c in new {
            let id = tx.insert_alert(&c.key, c.kind.as_str(), &c.subject, &c.title, &c.body, now)?;
            let (group, rank) = group_rank(&c.key);
            let state = if top.get(group) == Some(&rank) { "pending" } else { "superseded" };
            if cfg.webhook_url.is_some() {
                tx.insert_delivery(id, Channel::Webhook.as_str(), "", state)?;
            }
            if cfg.mail_command.is_some() {
                let mut to: Vec<String> = cfg.mail_to.clone();
                if cfg.mail_pi {
                    for m in &c.pi_emails {
                        if !to.contains(m) {
                            to.push(m.clone());
                        }
                    }
                }
                if !to.is_empty() {
                    tx.insert_delivery(id, Channel::Mail.as_str(), &to.join(", "), state)?;
                }
            }
            recorded.raised.push(c.title.clone());
        }
        tx.commit()?;
        Ok(recorded)
    }

    /// The next pending delivery due at `now` (never tried, or last tried at least
    /// `retry_minutes` before), claimed: its attempt is counted and timed before it is
    /// returned, so another run (cron beside `serve`) leaves it alone for `retry_minutes`,
    /// longer than any attempt may take. One at a time, each claimed just before it is
    /// tried. A delivery whose channel is no longer configured is given up on the way.
    pub fn claim_next_delivery(&mut self, cfg: &AlertsConfig, now: i64) -> Result<Option<Delivery>, BudgetError> {
        let tx = Tx::write(&mut self.ledger)?;
        let due_before = now - cfg.retry_minutes as i64 * 60;
        let claimed = loop {
            let Some(row) = tx.next_due_delivery(due_before)? else { break None };
            let d = Delivery {
                alert_id: row.alert_id,
                channel: Channel::parse(&row.channel),
                recipients: row
                    .recipients
                    .split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
                    .collect(),
                kind: row.kind,
                subject: row.subject,
                title: row.title,
                body: row.body,
                raised_at: row.raised_at,
                attempt: row.attempts + 1,
            };
            let configured = match d.channel {
                Channel::Webhook => cfg.webhook_url.is_some(),
                Channel::Mail => cfg.mail_command.is_some(),
            };
            if configured {
                tx.claim_delivery(d.alert_id, d.channel.as_str(), now)?;
                break Some(d);
            }
            let why = match d.channel {
                Channel::Webhook => "webhook_url is no longer set in [alerts]",
                Channel::Mail => "mail_command is no longer set in [alerts]",
            };
            tx.give_up_delivery(d.alert_id, d.channel.as_str(), why)?;
        };
        tx.commit()?;
        Ok(claimed)
    }

    /// Records how a claimed delivery went.
    pub fn finish_delivery(
        &mut self,
        cfg: &AlertsConfig,
        d: &Delivery,
        outcome: Result<(), String>,
        now: i64,
    ) -> Result<DeliveryState, BudgetError> {
        let tx = Tx::write(&mut self.ledger)?;
        let state = match &outcome {
            Ok(()) => DeliveryState::Sent,
            Err(_) if d.attempt >= cfg.max_attempts => DeliveryState::GaveUp,
            Err(_) => DeliveryState::Retrying,
        };
        let (state_text, error) = match (&outcome, state) {
            (Ok(()), _) => ("sent", None),
            (Err(err), DeliveryState::GaveUp) => ("gave_up", Some(crate::core::text::clean_text(err))),
            (Err(err), _) => ("pending", Some(crate::core::text::clean_text(err))),
        };
        tx.finish_delivery(d.alert_id, d.channel.as_str(), d.attempt, state_text, error.as_deref(), now)?;
        tx.commit()?;
        Ok(state)
    }

    /// The newest `limit` alerts (only those still open with `open_only`), newest first.
    pub fn alert_records(&mut self, open_only: bool, limit: u32) -> Result<Vec<AlertRecord>, BudgetError> {
        Ok(Tx::read(&mut self.ledger)?.alert_records(open_only, limit)?)
    }
}

/// How an alert names a job: by SLURM id, else by hold token.
fn what_job(j: &WatchedJob) -> String {
    match j.job_id {
        Some(id) => format!("job {id}"),
        None => format!("hold {}", j.token),
    }
}
