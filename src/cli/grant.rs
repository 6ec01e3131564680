// SPDX-License-Identifier: GPL-2.0-or-later
//! `asbb-admin grant ...` and `asbb-admin forecast`: flags in, core calls, text out.
//!
//! `--format`: the global flag is `text|json|csv`, but `grant report` has formats of
//! its own (`agency-required|csv|json|html`). clap propagates a global argument into
//! every subcommand unless the subcommand defines one with the same id, and copies
//! its value back up by id, so a differently typed `--format` below it would clash.
//! So the `grant` command defines its own (hidden) `format`, which stops the global
//! one there; `list`, `show`, `create` and `close` take the same `text|json|csv`
//! `--format` (same id and type, so `asbb-admin --format json grant list` works too),
//! and `report` has its own argument (id `report_format`) spelled `--format`.

use super::{json, open_budget, CliError, Format, Table};
use crate::core::config::Config;
use crate::core::decisions::{format_date, parse_date, DAY_S};
use crate::core::grants::report::{format_bps, Forecast, ReportRange, Subject};
use crate::core::grants::{format_rate, parse_rate, GrantDetail, GrantFilter, NewGrant, PeriodSplit};
use crate::core::ledger::OpenMode;
use crate::core::money::Money;
use crate::render::{
    alert_text, burn_text, exhaustion_text, grant_json, method_text, projection_json, render, status_text, window_text,
    ReportFormat,
};
use clap::{ArgGroup, Args, Subcommand, ValueEnum};
use std::fmt::Write as _;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct GrantCommand {
    /// Output format of create, list, show and close (`grant report` has its own).
    #[arg(long, value_enum, hide = true)]
    pub format: Option<Format>,
    #[command(subcommand)]
    pub command: GrantSubcommand,
}

#[derive(Subcommand, Debug)]
pub enum GrantSubcommand {
    /// Record a grant; with --account it funds that account (one allocation per budget period).
    Create(Box<GrantCreateArgs>),
    /// All grants, with what they have spent.
    List(GrantListArgs),
    /// One grant, its budget periods and spending.
    Show(GrantShowArgs),
    /// Close a grant: its allocations end now; holds are released if nothing else funds the account.
    Close(GrantShowArgs),
    /// Change a grant's contact: the PI's mail address, where alerts about it are sent.
    Update(GrantUpdateArgs),
    /// The statement a funding agency asks for: direct and indirect cost by period,
    /// partition, resource, account and user; burn rate and projection.
    Report(GrantReportArgs),
}

/// `--format text|json|csv` for the grant subcommands other than `report`.
#[derive(Args, Debug)]
pub struct FormatArg {
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
}

#[derive(Args, Debug)]
pub struct GrantCreateArgs {
    /// Grant number, e.g. NSF-12345 (letters, digits, - _ . /).
    #[arg(long)]
    pub number: String,
    /// Funding agency, e.g. NSF.
    #[arg(long)]
    pub agency: String,
    /// Principal investigator.
    #[arg(long)]
    pub pi: String,
    /// The PI's mail address: alerts about the grant are mailed there (`[alerts] mail_pi`).
    #[arg(long)]
    pub pi_email: Option<String>,
    /// Total award in dollars, direct + indirect (e.g. 250000).
    #[arg(long, allow_hyphen_values = true)]
    pub amount: String,
    /// First day of the grant (YYYY-MM-DD, UTC).
    #[arg(long)]
    pub start: String,
    /// Last day of the grant, inclusive.
    #[arg(long)]
    pub end: String,
    /// Indirect (F&A) cost rate on direct cost: 0.30 or 30% (default 0).
    #[arg(long, allow_hyphen_values = true)]
    pub indirect_rate: Option<String>,
    /// Budget account the grant funds.
    #[arg(long)]
    pub account: Option<String>,
    /// A co-investigator (repeat for several).
    #[arg(long = "co-pi")]
    pub co_pi: Vec<String>,
    #[arg(long)]
    pub program: Option<String>,
    #[arg(long)]
    pub federal_award_id: Option<String>,
    /// Budget periods: `yearly` (grant years) or a number of equal periods.
    #[arg(long)]
    pub periods: Option<String>,
    #[command(flatten)]
    pub format: FormatArg,
}

#[derive(Args, Debug)]
pub struct GrantListArgs {
    /// Only grants not closed.
    #[arg(long)]
    pub active: bool,
    /// Only grants from this agency (case-insensitive).
    #[arg(long)]
    pub agency: Option<String>,
    #[command(flatten)]
    pub format: FormatArg,
}

#[derive(Args, Debug)]
pub struct GrantShowArgs {
    /// Grant number.
    pub number: String,
    #[command(flatten)]
    pub format: FormatArg,
}

#[derive(Args, Debug)]
#[command(group(ArgGroup::new("contact").required(true).args(["pi_email", "no_pi_email"])))]
pub struct GrantUpdateArgs {
    /// Grant number.
    pub number: String,
    /// The PI's mail address.
    #[arg(long)]
    pub pi_email: Option<String>,
    /// Remove the PI's mail address (alerts about the grant then reach only `mail_to`).
    #[arg(long)]
    pub no_pi_email: bool,
    #[command(flatten)]
    pub format: FormatArg,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ReportFormatArg {
    /// Fixed-width text statement to file with the agency.
    AgencyRequired,
    Csv,
    Json,
    /// One self-contained page with a burn-down chart.
    Html,
}

#[derive(Args, Debug)]
pub struct GrantReportArgs {
    /// Grant number.
    #[arg(long)]
    pub number: String,
    /// Report format.
    #[arg(long = "format", id = "report_format", value_name = "FORMAT", value_enum,
          default_value_t = ReportFormatArg::AgencyRequired)]
    pub format: ReportFormatArg,
    /// Only this budget period (1, 2, ...), and cumulative through it.
    #[arg(long, conflicts_with_all = ["from", "to"])]
    pub period: Option<u32>,
    /// Costs posted on or after this day (YYYY-MM-DD; default: the grant's start).
    #[arg(long)]
    pub from: Option<String>,
    /// Costs posted on or before this day (default: the grant's end).
    #[arg(long)]
    pub to: Option<String>,
    /// Write the report to this file instead of standard output.
    #[arg(long)]
    pub output: Option<PathBuf>,
}

#[derive(Args, Debug)]
#[command(group(ArgGroup::new("subject").required(true).args(["account", "grant"])))]
pub struct ForecastArgs {
    /// Budget account to forecast.
    pub account: Option<String>,
    /// Grant to forecast instead of an account.
    #[arg(long)]
    pub grant: Option<String>,
    /// Trailing window for the burn rate: 30d or 30 (days; default from [forecast]).
    #[arg(long)]
    pub window: Option<String>,
    /// Exit 1 when the forecast has an ALERT (the money runs out before the end), for
    /// cron and monitoring.
    #[arg(long)]
    pub check: bool,
}

fn invalid(e: crate::core::decisions::BudgetError) -> CliError {
    CliError::new(e.to_string())
}

fn parse_day(flag: &str, text: &str) -> Result<i64, CliError> {
    parse_date(text).map_err(|e| CliError::new(format!("{flag}: {e}")))
}

/// `30d` or `30`: days.
fn parse_window(text: &str) -> Result<u32, CliError> {
    let t = text.trim();
    let digits = t.strip_suffix('d').unwrap_or(t);
    let max = crate::core::config::MAX_FORECAST_WINDOW_DAYS;
    match digits.parse::<u32>() {
        Ok(n) if (1..=max).contains(&n) && digits.chars().all(|c| c.is_ascii_digit()) => Ok(n),
        _ => Err(CliError::new(format!(
            "--window: '{}' is not a number of days from 1 to {max}, like 30d",
            crate::core::text::clean_text(t)
        ))),
    }
}

/// Runs `asbb-admin grant ...` at `now`.
pub fn run_grant(cmd: GrantCommand, config: Config, now: i64, actor: &str) -> Result<String, CliError> {
    match cmd.command {
        GrantSubcommand::Create(a) => {
            let a = *a;
            let award = Money::parse(&a.amount).map_err(|e| CliError::new(format!("--amount: {e}")))?;
            let start = parse_day("--start", &a.start)?;
            let end = parse_day("--end", &a.end)? + DAY_S;
            let indirect_rate_ppm = match &a.indirect_rate {
                Some(r) => parse_rate(r).map_err(|e| CliError::new(format!("--indirect-rate: {e}")))?,
                None => 0,
            };
            let periods = match &a.periods {
                Some(p) => PeriodSplit::parse(p).map_err(|e| CliError::new(format!("--periods: {e}")))?,
                None => PeriodSplit::Whole,
            };
            let new = NewGrant {
                number: a.number.trim().to_string(),
                agency: a.agency,
                pi: a.pi,
                pi_email: a.pi_email.map(|m| m.trim().to_string()),
                co_pis: a.co_pi,
                program: a.program,
                federal_award_id: a.federal_award_id,
                start,
                end,
                award,
                indirect_rate_ppm,
                account: a.account,
                periods,
            };
            // Refuse bad input before the ledger file is created or opened for writing.
            new.validate().map_err(invalid)?;
            // A grant that funds an account needs the ledger that has the account.
            let mode = if new.account.is_some() { OpenMode::MustExist } else { OpenMode::CreateIfMissing };
            let mut budget = open_budget(config, mode)?;
            let d = budget.create_grant(&new, actor, now)?;
            Ok(match a.format.format {
                Format::Text => {
                    let funding = match &d.grant.account {
                        Some(acc) => format!(
                            "funding account {acc} with {} direct in {} budget period{}",
                            d.direct_budget(),
                            d.periods.len(),
                            if d.periods.len() == 1 { "" } else { "s" }
                        ),
                        None => "funding no account".to_string(),
                    };
                    format!(
                        "created grant {} ({}): award {} at {} indirect, {funding}\n",
                        d.grant.number,
                        d.grant.agency,
                        d.grant.award,
                        format_rate(d.grant.indirect_rate_ppm)
                    )
                }
                f => show_grant(&d, f),
            })
        }
        GrantSubcommand::List(a) => {
            let mut budget = open_budget(config, OpenMode::MustExist)?;
            let filter = GrantFilter { active_only: a.active, agency: a.agency };
            let grants = budget.grants(&filter)?;
            Ok(list_grants(&grants, a.format.format))
        }
        GrantSubcommand::Show(a) => {
            let mut budget = open_budget(config, OpenMode::MustExist)?;
            let d = budget.grant(&a.number)?;
            Ok(show_grant(&d, a.format.format))
        }
        GrantSubcommand::Update(a) => {
            let pi_email = a.pi_email.as_deref().map(str::trim);
            let mut budget = open_budget(config, OpenMode::MustExist)?;
            let d = budget.set_grant_pi_email(&a.number, pi_email, actor, now)?;
            Ok(show_grant(&d, a.format.format))
        }
        GrantSubcommand::Close(a) => {
            let mut budget = open_budget(config, OpenMode::MustExist)?;
            let c = budget.close_grant(&a.number, actor, now)?;
            Ok(match a.format.format {
                Format::Text => format!(
                    "closed grant {}: {} allocation{} ended, {} unspent direct funds expired; released {} hold{} ({})\n",
                    c.number,
                    c.allocations_ended,
                    if c.allocations_ended == 1 { "" } else { "s" },
                    c.expired,
                    c.jobs_released,
                    if c.jobs_released == 1 { "" } else { "s" },
                    c.holds_released
                ),
                Format::Json => json(&serde_json::json!({
                    "number": c.number,
                    "allocations_ended": c.allocations_ended,
                    "expired": c.expired.to_decimal_string(),
                    "jobs_released": c.jobs_released,
                    "holds_released": c.holds_released.to_decimal_string(),
                })),
                Format::Csv => {
                    let mut t =
                        Table::new(vec!["NUMBER", "ALLOCATIONS_ENDED", "EXPIRED", "JOBS_RELEASED", "HOLDS_RELEASED"]);
                    t.push(vec![
                        c.number,
                        c.allocations_ended.to_string(),
                        c.expired.to_decimal_string(),
                        c.jobs_released.to_string(),
                        c.holds_released.to_decimal_string(),
                    ]);
                    t.to_csv()
                }
            })
        }
        GrantSubcommand::Report(a) => {
            let range = match (a.period, &a.from, &a.to) {
                (Some(n), _, _) => ReportRange::Period(n),
                (None, None, None) => ReportRange::Whole,
                (None, from, to) => ReportRange::Dates {
                    from: from.as_deref().map(|d| parse_day("--from", d)).transpose()?,
                    until: to.as_deref().map(|d| parse_day("--to", d).map(|t| t + DAY_S)).transpose()?,
                },
            };
            let format = match a.format {
                ReportFormatArg::AgencyRequired => ReportFormat::AgencyRequired,
                ReportFormatArg::Csv => ReportFormat::Csv,
                ReportFormatArg::Json => ReportFormat::Json,
                ReportFormatArg::Html => ReportFormat::Html,
            };
            let mut budget = open_budget(config, OpenMode::MustExist)?;
            let report = budget.grant_report(&a.number, range, None, now)?;
            let text = render(&report, format);
            match &a.output {
                Some(path) => {
                    // No symlink followed, no file replaced in a folder others can write to.
                    crate::core::safe_fs::write_file(path, text.as_bytes())
                        .map_err(|e| CliError::new(format!("cannot write {}: {e}", path.display())))?;
                    Ok(format!("wrote the report for grant {} to {}\n", report.grant.number, path.display()))
                }
                None => Ok(text),
            }
        }
    }
}

/// Runs `asbb-admin forecast` at `now`.
pub fn run_forecast(a: ForecastArgs, config: Config, now: i64, fmt: Format) -> Result<String, CliError> {
    let window = match &a.window {
        Some(w) => parse_window(w)?,
        None => config.forecast.window_days,
    };
    let mut budget = open_budget(config, OpenMode::MustExist)?;
    let forecast = match (&a.grant, &a.account) {
        (Some(g), _) => budget.grant_forecast(g, window, now)?,
        (None, Some(acc)) => budget.account_forecast(acc, window, now)?,
        (None, None) => return Err(CliError::new("give an ACCOUNT or --grant NUMBER")),
    };
    let text = show_forecast(&forecast, fmt);
    if a.check && forecast.projection.alert {
        print!("{text}");
        let what =
            a.grant.map_or_else(|| format!("account {}", a.account.unwrap_or_default()), |g| format!("grant {g}"));
        return Err(CliError { message: format!("forecast --check: {what} runs out before its end"), exit_code: 1 });
    }
    Ok(text)
}

fn show_forecast(f: &Forecast, fmt: Format) -> String {
    let p = &f.projection;
    match fmt {
        Format::Json => {
            let subject = match &f.subject {
                Subject::Grant { number, agency, account, indirect_rate_ppm } => serde_json::json!({
                    "grant": number, "agency": agency, "account": account,
                    "indirect_rate": format_rate(*indirect_rate_ppm).trim_end_matches('%').to_string(),
                    "amounts": "direct + indirect",
                }),
                Subject::Account { name } => serde_json::json!({ "account": name, "amounts": "direct" }),
            };
            json(&serde_json::json!({ "subject": subject, "forecast": projection_json(p) }))
        }
        Format::Csv => {
            let mut t = Table::new(vec!["DATE", "DIRECT", "TOTAL"]);
            for d in &p.daily {
                t.push(vec![format_date(d.day), d.direct.to_decimal_string(), d.total.to_decimal_string()]);
            }
            t.to_csv()
        }
        Format::Text => {
            let mut out = String::new();
            let kv = |out: &mut String, k: &str, v: &str| {
                let _ = writeln!(out, "{:<22}{v}", format!("{k}:"));
            };
            let what = match &f.subject {
                Subject::Grant { number, agency, account, indirect_rate_ppm } => {
                    let funds = account.as_deref().map(|a| format!(", funds account {a}")).unwrap_or_default();
                    kv(&mut out, "Grant", &format!("{number} ({agency}){funds}"));
                    kv(&mut out, "Amounts", &format!("direct + indirect at {}", format_rate(*indirect_rate_ppm)));
                    format!("grant {number}")
                }
                Subject::Account { name } => {
                    kv(&mut out, "Account", name);
                    kv(&mut out, "Amounts", "direct cost");
                    format!("account {name}")
                }
            };
            kv(&mut out, "As of", &format!("{} UTC", crate::core::decisions::format_time(p.as_of)));
            let _ = writeln!(out);
            if p.daily.is_empty() {
                let _ = writeln!(out, "No complete day in the window yet.");
            } else {
                let _ = writeln!(
                    out,
                    "Daily spend, {} to {}:",
                    format_date(p.window_from),
                    format_date(p.window_until - DAY_S)
                );
                let mut t = Table::new(vec!["DATE", "SPEND"]);
                for d in &p.daily {
                    t.push(vec![format_date(d.day), d.total.to_string()]);
                }
                out.push_str(&t.to_text());
            }
            let _ = writeln!(out);
            kv(&mut out, "Spent", &format!("{} of {} ({})", p.spent, p.budget, format_bps(p.percent_spent_bps)));
            let elapsed = match (p.percent_elapsed_bps, p.end) {
                (Some(e), Some(end)) => {
                    format!("{} ({} to {})", format_bps(e), format_date(p.start), format_date(end - DAY_S))
                }
                _ => "- (no end date)".to_string(),
            };
            kv(&mut out, "Time elapsed", &elapsed);
            kv(&mut out, "Status", &status_text(p));
            kv(&mut out, "Burn rate", &burn_text(p));
            kv(&mut out, "Window", &window_text(p));
            kv(&mut out, "Remaining", &p.remaining.to_string());
            kv(&mut out, "Exhaustion", &exhaustion_text(p));
            kv(&mut out, "Method", &method_text(p));
            if let Some(a) = alert_text(p, &what) {
                let _ = writeln!(out, "{a}");
            }
            out
        }
    }
}

fn show_grant(d: &GrantDetail, fmt: Format) -> String {
    match fmt {
        Format::Json => json(&grant_json(d)),
        Format::Csv => grants_table(std::slice::from_ref(d), true).to_csv(),
        Format::Text => {
            let g = &d.grant;
            let mut out = String::new();
            let kv = |out: &mut String, k: &str, v: &str| {
                let _ = writeln!(out, "{:<19}{v}", format!("{k}:"));
            };
            kv(&mut out, "Grant", &g.number);
            kv(
                &mut out,
                "Status",
                &match g.closed_at {
                    Some(t) => format!("{} on {}", g.status, format_date(t)),
                    None => g.status.clone(),
                },
            );
            kv(&mut out, "Agency", &g.agency);
            kv(&mut out, "Program", g.program.as_deref().unwrap_or("-"));
            kv(&mut out, "Federal award ID", g.federal_award_id.as_deref().unwrap_or("-"));
            kv(&mut out, "PI", &g.pi_email.as_ref().map_or_else(|| g.pi.clone(), |m| format!("{} <{m}>", g.pi)));
            kv(&mut out, "Co-PIs", &if g.co_pis.is_empty() { "-".to_string() } else { g.co_pis.join(", ") });
            kv(&mut out, "Account", g.account.as_deref().unwrap_or("(none)"));
            kv(&mut out, "Dates", &format!("{} to {}", format_date(g.start), format_date(g.end - DAY_S)));
            kv(&mut out, "Award", &g.award.to_string());
            kv(&mut out, "Indirect rate", &format_rate(g.indirect_rate_ppm));
            kv(&mut out, "Direct budget", &d.direct_budget().to_string());
            kv(
                &mut out,
                "Spent",
                &format!("{} (direct {} + indirect {})", d.spent(), d.direct_spent(), d.indirect_spent()),
            );
            kv(&mut out, "Remaining", &d.remaining().to_string());
            let mut t = Table::new(vec!["PERIOD", "FROM", "TO", "AWARD", "DIRECT", "SPENT", "ALLOCATION"]);
            for p in &d.periods {
                t.push(vec![
                    p.period_no.to_string(),
                    format_date(p.start),
                    format_date(p.end - DAY_S),
                    p.amount.to_string(),
                    p.direct_budget.to_string(),
                    p.direct_spent.to_string(),
                    p.allocation_id.map(|a| a.to_string()).unwrap_or_else(|| "-".into()),
                ]);
            }
            out.push_str("\nBudget periods (DIRECT and SPENT are direct cost):\n");
            out.push_str(&t.to_text());
            out
        }
    }
}

fn grants_table(grants: &[GrantDetail], machine: bool) -> Table {
    let mut t =
        Table::new(vec!["NUMBER", "AGENCY", "PI", "ACCOUNT", "START", "END", "AWARD", "SPENT", "REMAINING", "STATUS"]);
    let m = |x: Money| if machine { x.to_decimal_string() } else { x.to_string() };
    for d in grants {
        let g = &d.grant;
        t.push(vec![
            g.number.clone(),
            g.agency.clone(),
            g.pi.clone(),
            g.account.clone().unwrap_or_else(|| "-".into()),
            format_date(g.start),
            format_date(g.end - DAY_S),
            m(g.award),
            m(d.spent()),
            m(d.remaining()),
            g.status.clone(),
        ]);
    }
    t
}

fn list_grants(grants: &[GrantDetail], fmt: Format) -> String {
    match fmt {
        Format::Json => json(&grants.iter().map(grant_json).collect::<Vec<_>>()),
        Format::Csv => grants_table(grants, true).to_csv(),
        Format::Text => grants_table(grants, false).to_text(),
    }
}
