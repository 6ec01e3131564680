// SPDX-License-Identifier: GPL-2.0-or-later
//! `asbb-admin alerts run|list`: flags in, core calls, text out.

use super::{json, open_budget, CliError, Format, Table};
use crate::core::alerts::AlertRecord;
use crate::core::config::Config;
use crate::core::decisions::format_time;
use crate::core::ledger::OpenMode;
use clap::Subcommand;

#[derive(Subcommand, Debug)]
pub enum AlertsCommand {
    /// Raise the alerts `[alerts]` watches for, clear those no longer true, and send
    /// what is due (new alerts, and failed deliveries to retry). For cron; `serve` also
    /// runs it every `interval_minutes`.
    Run,
    /// The alerts raised, newest first, with how each delivery went.
    List {
        /// Only alerts whose condition still holds.
        #[arg(long)]
        open: bool,
        /// At most this many.
        #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=100_000))]
        limit: u32,
    },
}

fn alerts_config(config: &Config) -> Result<crate::core::config::AlertsConfig, CliError> {
    config.alerts.clone().ok_or_else(|| {
        CliError::new(format!(
            "{}: no [alerts] section: set webhook_url and/or mail_command there to send alerts",
            config.source
        ))
    })
}

pub fn run_alerts(c: AlertsCommand, config: Config, now: i64, fmt: Format) -> Result<String, CliError> {
    match c {
        AlertsCommand::Run => {
            let cfg = alerts_config(&config)?;
            let mut budget = open_budget(config, OpenMode::MustExist)?;
            let summary = crate::alerts::run(&mut budget, &cfg, now, &|| false)?;
            let text = summary.to_text();
            if summary.failed.is_empty() {
                Ok(text)
            } else {
                // cron mails what a failing job prints; the failures are kept for the next run.
                print!("{text}");
                Err(CliError {
                    message: format!(
                        "alerts run: {} deliver{} failed",
                        summary.failed.len(),
                        if summary.failed.len() == 1 { "y" } else { "ies" }
                    ),
                    exit_code: 1,
                })
            }
        }
        AlertsCommand::List { open, limit } => {
            let mut budget = open_budget(config, OpenMode::MustExist)?;
            let records = budget.alert_records(open, limit)?;
            Ok(show_alerts(&records, fmt))
        }
    }
}

fn delivery_text(d: &crate::core::alerts::DeliveryRecord) -> String {
    let to = if d.recipients.is_empty() { String::new() } else { format!(" to {}", d.recipients) };
    let tries = |n: u32| format!("{n} attempt{}", if n == 1 { "" } else { "s" });
    match d.state.as_str() {
        "sent" => format!("{}{to}: sent {}", d.channel, d.sent_at.map(format_time).unwrap_or_default()),
        "superseded" => format!("{}: not sent, a higher threshold crossed at the same time was", d.channel),
        "gave_up" => format!(
            "{}{to}: given up after {} ({})",
            d.channel,
            tries(d.attempts),
            d.last_error.as_deref().unwrap_or("-")
        ),
        _ if d.attempts == 0 => format!("{}{to}: pending", d.channel),
        _ => format!(
            "{}{to}: failed {}, will retry ({})",
            d.channel,
            tries(d.attempts),
            d.last_error.as_deref().unwrap_or("-")
        ),
    }
}

fn show_alerts(records: &[AlertRecord], fmt: Format) -> String {
    match fmt {
        Format::Json => json(&serde_json::json!({
            "alerts": records.iter().map(|a| serde_json::json!({
                "id": a.id,
                "key": a.key,
                "kind": a.kind,
                "subject": a.subject,
                "title": a.title,
                "body": a.body,
                "raised_at": format_time(a.raised_at),
                "cleared_at": a.cleared_at.map(format_time),
                "deliveries": a.deliveries.iter().map(|d| serde_json::json!({
                    "channel": d.channel,
                    "recipients": d.recipients,
                    "state": d.state,
                    "attempts": d.attempts,
                    "last_attempt_at": d.last_attempt_at.map(format_time),
                    "last_error": d.last_error,
                    "sent_at": d.sent_at.map(format_time),
                })).collect::<Vec<_>>(),
            })).collect::<Vec<_>>(),
        })),
        Format::Csv => {
            let mut t = Table::new(vec!["ID", "RAISED", "CLEARED", "KIND", "SUBJECT", "TITLE", "DELIVERIES"]);
            for a in records {
                t.push(vec![
                    a.id.to_string(),
                    format_time(a.raised_at),
                    a.cleared_at.map(format_time).unwrap_or_default(),
                    a.kind.clone(),
                    a.subject.clone(),
                    a.title.clone(),
                    a.deliveries.iter().map(delivery_text).collect::<Vec<_>>().join("; "),
                ]);
            }
            t.to_csv()
        }
        Format::Text => {
            if records.is_empty() {
                return "no alerts\n".to_string();
            }
            let mut out = String::new();
            for a in records {
                let state = match a.cleared_at {
                    Some(t) => format!("cleared {}", format_time(t)),
                    None => "open".to_string(),
                };
                out.push_str(&format!("#{} {} UTC  {}  ({state})\n", a.id, format_time(a.raised_at), a.title));
                if a.deliveries.is_empty() {
                    out.push_str("    not sent: no recipient\n");
                }
                for d in &a.deliveries {
                    out.push_str(&format!("    {}\n", delivery_text(d)));
                }
            }
            out
        }
    }
}
