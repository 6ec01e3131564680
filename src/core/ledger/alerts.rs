// SPDX-License-Identifier: GPL-2.0-or-later
//! What alerts read and write: the grants, accounts and waiting jobs they watch, the
//! alerts raised and cleared, and each alert's deliveries (claimed, retried, sent or
//! given up). `core::alerts` decides what to raise and whom to tell.

use super::db::{params, OptionalExtension};
use super::{JobState, LedgerError, Tx};
use crate::core::money::Money;

/// An alert as `asbb-admin alerts list` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlertRecord {
    pub id: i64,
    pub key: String,
    pub kind: String,
    pub subject: String,
    pub title: String,
    pub body: String,
    pub raised_at: i64,
    pub cleared_at: Option<i64>,
    pub deliveries: Vec<DeliveryRecord>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryRecord {
    pub channel: String,
    pub recipients: String,
    /// pending, sent, gave_up or superseded.
    pub state: String,
    pub attempts: u32,
    pub last_attempt_at: Option<i64>,
    pub last_error: Option<String>,
    pub sent_at: Option<i64>,
}

/// A delivery due to be tried, with its alert.
pub(crate) struct DueDelivery {
    pub alert_id: i64,
    pub channel: String,
    /// Comma-separated.
    pub recipients: String,
    pub kind: String,
    pub subject: String,
    pub title: String,
    pub body: String,
    pub raised_at: i64,
    /// Attempts made so far.
    pub attempts: u32,
}

/// A job an alert may be about.
pub(crate) struct WatchedJob {
    pub token: String,
    pub job_id: Option<i64>,
    pub user: String,
    pub account: String,
    pub partition: String,
    pub estimate: Money,
    pub held: Money,
    pub submitted_at: i64,
    /// When its funds were held (at submission, or when released from approval).
    pub hold_at: Option<i64>,
}

impl Tx<'_> {
    /// (number, PI address) of the grants active at `now`, by number.
    pub fn active_grants(&self, now: i64) -> Result<Vec<(String, Option<String>)>, LedgerError> {
        self.sql(|c| {
            c.prepare(
                "SELECT grant_number, pi_email FROM grant_accounts
                 WHERE status = 'active' AND grant_start_date <= ?1 AND grant_end_date > ?1 ORDER BY grant_number",
            )?
            .query_map([now], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect()
        })
    }

    /// (id, name) of the active accounts, by name.
    pub fn active_accounts(&self) -> Result<Vec<(i64, String)>, LedgerError> {
        self.sql(|c| {
            c.prepare("SELECT id, name FROM accounts WHERE status = 'active' ORDER BY name")?
                .query_map((), |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect()
        })
    }

    /// (account id, PI address) of the grants active at `now` that fund an account and
    /// name their PI's address, by address.
    pub fn funding_pi_emails(&self, now: i64) -> Result<Vec<(i64, String)>, LedgerError> {
        self.sql(|c| {
            c.prepare(
                "SELECT budget_account_id, pi_email FROM grant_accounts
                 WHERE status = 'active' AND budget_account_id IS NOT NULL AND pi_email IS NOT NULL
                   AND grant_start_date <= ?1 AND grant_end_date > ?1
                 ORDER BY pi_email",
            )?
            .query_map([now], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect()
        })
    }

    /// The jobs in `state` submitted at or before `submitted_by`, oldest first.
    pub fn jobs_in_state(&self, state: JobState, submitted_by: i64) -> Result<Vec<WatchedJob>, LedgerError> {
        self.sql(|c| {
            c.prepare_cached(
                "SELECT j.token, j.job_id, j.user_name, a.name, j.partition, j.estimate_micros, j.held_micros,
                        j.submitted_at, j.hold_at
                 FROM jobs j JOIN accounts a ON a.id = j.account_id
                 WHERE j.state = ?1 AND j.submitted_at <= ?2 ORDER BY j.submitted_at, j.token",
            )?
            .query_map(params![state, submitted_by], |r| {
                Ok(WatchedJob {
                    token: r.get(0)?,
                    job_id: r.get(1)?,
                    user: r.get(2)?,
                    account: r.get(3)?,
                    partition: r.get(4)?,
                    estimate: Money::from_micros(r.get(5)?),
                    held: Money::from_micros(r.get(6)?),
                    submitted_at: r.get(7)?,
                    hold_at: r.get(8)?,
                })
            })?
            .collect()
        })
    }

    /// (key, id) of the alerts not cleared yet.
    pub fn open_alerts(&self) -> Result<Vec<(String, i64)>, LedgerError> {
        self.sql(|c| {
            c.prepare("SELECT alert_key, id FROM alerts WHERE cleared_at IS NULL")?
                .query_map((), |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect()
        })
    }

    pub fn clear_alert(&self, id: i64, now: i64) -> Result<(), LedgerError> {
        self.sql(|c| c.execute("UPDATE alerts SET cleared_at = ?2 WHERE id = ?1", params![id, now]))?;
        Ok(())
    }

    /// A raised alert; its id.
    pub fn insert_alert(
        &self,
        key: &str,
        kind: &str,
        subject: &str,
        title: &str,
        body: &str,
        now: i64,
    ) -> Result<i64, LedgerError> {
        self.sql(|c| {
            c.query_row(
                "INSERT INTO alerts (alert_key, kind, subject, title, body, raised_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 RETURNING id",
                params![key, kind, subject, title, body, now],
                |r| r.get(0),
            )
        })
    }

    pub fn insert_delivery(
        &self,
        alert_id: i64,
        channel: &str,
        recipients: &str,
        state: &str,
    ) -> Result<(), LedgerError> {
        self.sql(|c| {
            c.execute(
                "INSERT INTO alert_deliveries (alert_id, channel, recipients, state) VALUES (?1, ?2, ?3, ?4)",
                params![alert_id, channel, recipients, state],
            )
        })?;
        Ok(())
    }

    /// The first pending delivery never tried or last tried at or before `due_before`.
    pub fn next_due_delivery(&self, due_before: i64) -> Result<Option<DueDelivery>, LedgerError> {
        self.sql(|c| {
            c.prepare_cached(
                "SELECT d.alert_id, d.channel, d.recipients, a.kind, a.subject, a.title, a.body, a.raised_at, d.attempts
                 FROM alert_deliveries d JOIN alerts a ON a.id = d.alert_id
                 WHERE d.state = 'pending' AND (d.last_attempt_at IS NULL OR d.last_attempt_at <= ?1)
                 ORDER BY d.alert_id, d.channel LIMIT 1",
            )?
            .query_row([due_before], |r| {
                Ok(DueDelivery {
                    alert_id: r.get(0)?,
                    channel: r.get(1)?,
                    recipients: r.get(2)?,
                    kind: r.get(3)?,
                    subject: r.get(4)?,
                    title: r.get(5)?,
                    body: r.get(6)?,
                    raised_at: r.get(7)?,
                    attempts: r.get(8)?,
                })
            })
            .optional()
        })
    }

    /// Counts an attempt of a delivery and times it `now` (its claim).
    pub fn claim_delivery(&self, alert_id: i64, channel: &str, now: i64) -> Result<(), LedgerError> {
        self.sql(|c| {
            c.execute(
                "UPDATE alert_deliveries SET attempts = attempts + 1, last_attempt_at = ?3
                 WHERE alert_id = ?1 AND channel = ?2",
                params![alert_id, channel, now],
            )
        })?;
        Ok(())
    }

    pub fn give_up_delivery(&self, alert_id: i64, channel: &str, why: &str) -> Result<(), LedgerError> {
        self.sql(|c| {
            c.execute(
                "UPDATE alert_deliveries SET state = 'gave_up', last_error = ?3 WHERE alert_id = ?1 AND channel = ?2",
                params![alert_id, channel, why],
            )
        })?;
        Ok(())
    }

    /// How attempt `attempt` of a delivery went (`state`: sent, pending or gave_up);
    /// only while it is still that attempt's: never turns `sent` back to pending.
    pub fn finish_delivery(
        &self,
        alert_id: i64,
        channel: &str,
        attempt: u32,
        state: &str,
        error: Option<&str>,
        now: i64,
    ) -> Result<(), LedgerError> {
        self.sql(|c| {
            c.execute(
                "UPDATE alert_deliveries SET state = ?3, last_error = ?4,
                        sent_at = CASE WHEN ?3 = 'sent' THEN ?5 ELSE sent_at END
                 WHERE alert_id = ?1 AND channel = ?2 AND state = 'pending' AND attempts = ?6",
                params![alert_id, channel, state, error, now, attempt],
            )
        })?;
        Ok(())
    }

    /// The newest `limit` alerts (only those still open with `open_only`), newest
    /// first, each with its deliveries.
    pub fn alert_records(&self, open_only: bool, limit: u32) -> Result<Vec<AlertRecord>, LedgerError> {
        self.sql(|c| {
            let mut alerts: Vec<AlertRecord> = c
                .prepare(
                    "SELECT id, alert_key, kind, subject, title, body, raised_at, cleared_at FROM alerts
                     WHERE (?1 = 0 OR cleared_at IS NULL) ORDER BY id DESC LIMIT ?2",
                )?
                .query_map(params![open_only as i64, limit], |r| {
                    Ok(AlertRecord {
                        id: r.get(0)?,
                        key: r.get(1)?,
                        kind: r.get(2)?,
                        subject: r.get(3)?,
                        title: r.get(4)?,
                        body: r.get(5)?,
                        raised_at: r.get(6)?,
                        cleared_at: r.get(7)?,
                        deliveries: Vec::new(),
                    })
                })?
                .collect::<super::db::Result<_>>()?;
            let mut stmt = c.prepare(
                "SELECT channel, recipients, state, attempts, last_attempt_at, last_error, sent_at
                 FROM alert_deliveries WHERE alert_id = ?1 ORDER BY channel",
            )?;
            for a in &mut alerts {
                a.deliveries = stmt
                    .query_map([a.id], |r| {
                        Ok(DeliveryRecord {
                            channel: r.get(0)?,
                            recipients: r.get(1)?,
                            state: r.get(2)?,
                            attempts: r.get(3)?,
                            last_attempt_at: r.get(4)?,
                            last_error: r.get(5)?,
                            sent_at: r.get(6)?,
                        })
                    })?
                    .collect::<super::db::Result<_>>()?;
            }
            Ok(alerts)
        })
    }
}
