// SPDX-License-Identifier: GPL-2.0-or-later
//! `asbb-admin`: flags in, core calls, text out. No business logic here.

use super::{json, load_config, now, open_budget, CliError, Format, Table};
use crate::core::decisions::{format_date, format_time, parse_date, Balance, Budget, Decision, DAY_S, FOREVER};
use crate::core::ledger::{AllocationRow, OpenMode};
use crate::core::money::Money;
use crate::core::pricing::cost;
use crate::core::pricing::job::{format_time_limit, JobRequest};
use clap::{Args, Parser, Subcommand};
use std::fmt::Write as _;
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(name = "asbb-admin", version, about = "Administer asbb budgets: accounts, deposits, estimates, the ledger")]
pub struct AdminCli {
    /// asbb.toml to use.
    #[arg(long, global = true, env = "ASBB_CONFIG", default_value = crate::core::config::DEFAULT_CONFIG_PATH)]
    pub config: PathBuf,
    /// Ledger file (default: `ledger` in the config).
    #[arg(long, global = true, env = "ASBB_LEDGER")]
    pub ledger: Option<PathBuf>,
    /// Output format for tables and records.
    #[arg(long, global = true, value_enum, default_value_t = Format::Text)]
    pub format: Format,
    #[command(subcommand)]
    pub command: AdminCommand,
}

#[derive(Subcommand, Debug)]
pub enum AdminCommand {
    /// Budget accounts (one per SLURM account).
    #[command(subcommand)]
    Account(AccountCommand),
    /// Add money to an account, valid for a window.
    Deposit(DepositArgs),
    /// Jobs submitted held: approve, deny, list.
    #[command(subcommand)]
    Job(super::jobs::JobCommand),
    /// Price a job without submitting it.
    Estimate(EstimateArgs),
    /// An account's journal entries.
    Transactions(TransactionsArgs),
    /// Recompute every balance from the journal and check every invariant.
    Verify,
    /// Upgrade the ledger's schema to this asbb's. Until then the plugins treat the
    /// ledger as unavailable (on_ledger_error) and the other commands refuse it.
    Migrate,
    /// The ledger as a whole: copy it onto another backend.
    #[command(subcommand)]
    Ledger(LedgerCommand),
    // ----- integration API, actual costs, learning -----
    /// Serve the integration API (HTTP/JSON) on loopback TCP and/or a unix socket.
    #[cfg(feature = "api")]
    Serve(super::integration::ServeArgs),
    /// The sister tools' data: import the burst launcher's actual costs.
    #[command(subcommand)]
    Integration(super::integration::IntegrationCommand),
    /// Reports: estimate accuracy and what learning does to holds.
    #[command(subcommand)]
    Report(super::integration::ReportCommand),
    /// Grants: create, list, show, close, and the agency-required report.
    Grant(super::grant::GrantCommand),
    /// Burn rate, projected exhaustion and spending status of an account or a grant.
    Forecast(super::grant::ForecastArgs),

    /// Alerts to PIs and admins (`[alerts]`): raise and send them, list what was sent.
    #[cfg(feature = "api")]
    #[command(subcommand)]
    Alerts(super::alerts::AlertsCommand),

    /// Ask SLURM which jobs exist and settle every hold the plugins left open.
    Reconcile(super::reconcile::ReconcileArgs),
}

#[derive(Subcommand, Debug)]
pub enum LedgerCommand {
    /// Copy every row of a ledger into a new, empty one (an SQLite file onto
    /// PostgreSQL, or back), then verify both and compare every account's balances.
    Copy(LedgerCopyArgs),
}

#[derive(Args, Debug)]
pub struct LedgerCopyArgs {
    /// The ledger to copy: `sqlite:PATH` or `postgresql://...` (as `ledger` in asbb.toml).
    #[arg(long)]
    pub from: String,
    /// The new ledger: an empty PostgreSQL database, or an SQLite file that does not exist.
    #[arg(long)]
    pub to: String,
}

#[derive(Subcommand, Debug)]
pub enum AccountCommand {
    /// Create a budget account with its initial allocation.
    Create(AccountCreateArgs),
    /// All accounts with their balances.
    List,
    /// One account's balance and allocations.
    Show { account: String },
    /// Who may read the account through `asbb` and the API's unix socket.
    #[command(subcommand)]
    Member(super::integration::MemberCommand),
}

#[derive(Args, Debug)]
pub struct AccountCreateArgs {
    /// The SLURM account name.
    pub account: String,
    /// Initial allocation, e.g. 250000 or 1,250.50 (dollars).
    #[arg(long, allow_hyphen_values = true)]
    pub limit: String,
    /// First day the allocation is valid (YYYY-MM-DD, UTC; default today).
    #[arg(long)]
    pub start: Option<String>,
    /// Last day the allocation is valid, inclusive (default: open-ended).
    #[arg(long)]
    pub end: Option<String>,
    /// How far below zero the account may go.
    #[arg(long, allow_hyphen_values = true)]
    pub credit_limit: Option<String>,
}

#[derive(Args, Debug)]
pub struct DepositArgs {
    pub account: String,
    /// Dollars, e.g. 5000 or 1,250.50.
    #[arg(allow_hyphen_values = true)]
    pub amount: String,
    #[arg(long)]
    pub memo: Option<String>,
    /// First valid day (YYYY-MM-DD; default today).
    #[arg(long)]
    pub valid_from: Option<String>,
    /// Last valid day, inclusive (default: open-ended).
    #[arg(long)]
    pub valid_until: Option<String>,
    /// Makes a retried deposit safe: the same id is applied once.
    #[arg(long)]
    pub request_id: Option<String>,
    /// Then release the account's held jobs that now fit, oldest first (default:
    /// `release_held_on_deposit` in the config).
    #[arg(long)]
    pub release_held: bool,
}

pub use crate::shape::RequestArgs;

#[derive(Args, Debug)]
pub struct EstimateArgs {
    #[command(flatten)]
    pub request: RequestArgs,
    /// Also say what the budget would decide for this account now.
    #[arg(long, short = 'A')]
    pub account: Option<String>,
}

#[derive(Args, Debug)]
pub struct TransactionsArgs {
    pub account: String,
    /// Only entries on or after this day (YYYY-MM-DD).
    #[arg(long)]
    pub since: Option<String>,
}

/// Describes a request in one line: `2 nodes, 32 CPUs, 64 GB memory, 2 GPUs (a100), 02:00:00, 1 task`.
pub fn describe_request(req: &JobRequest) -> String {
    let r = &req.resources;
    let mem = if r.mem_mb == 0 {
        "default".to_string()
    } else if r.mem_mb % 1024 == 0 {
        format!("{} GB", r.mem_mb / 1024)
    } else {
        format!("{} MB", r.mem_mb)
    };
    let gpus = if r.gpus.is_empty() {
        "0 GPUs".to_string()
    } else {
        let types: Vec<String> = r
            .gpus
            .iter()
            .map(|(t, n)| if t.is_empty() { format!("{n} untyped") } else { format!("{n} {t}") })
            .collect();
        format!("{} GPUs ({})", r.gpu_total(), types.join(", "))
    };
    format!(
        "{} node{}, {} CPU{}, {mem} memory, {gpus}, {}, {} task{}",
        r.nodes,
        plural(r.nodes as u64),
        r.cpus,
        plural(r.cpus as u64),
        format_time_limit(req.time_limit_min),
        req.array_tasks,
        plural(req.array_tasks as u64)
    )
}

fn plural(n: u64) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

/// Runs one admin command; returns what to print on stdout.
pub fn run(cli: AdminCli) -> Result<String, CliError> {
    let config = load_config(Some(&cli.config), cli.ledger.as_deref())?;
    super::require_admin(&config)?;
    let now = now()?;
    let actor = super::actor();
    let fmt = cli.format;
    match cli.command {
        AdminCommand::Account(AccountCommand::Create(a)) => {
            let limit = parse_money("--limit", &a.limit)?;
            let credit = match &a.credit_limit {
                Some(c) => parse_money("--credit-limit", c)?,
                None => Money::ZERO,
            };
            let from = day_or(&a.start, "--start", today(now))?;
            let until = match &a.end {
                Some(d) => parse_day("--end", d)? + DAY_S,
                None => FOREVER,
            };
            let mut budget = open_budget(config, OpenMode::CreateIfMissing)?;
            budget.create_account(&a.account, limit, from, until, credit, &actor, now)?;
            let b = budget.balance(&a.account, now)?;
            Ok(match fmt {
                Format::Text => format!("created account {} with {} available\n", a.account, b.available),
                _ => show_balance(&b, &[], fmt),
            })
        }
        AdminCommand::Account(AccountCommand::List) => {
            let mut budget = open_budget(config, OpenMode::MustExist)?;
            let names: Vec<String> = budget.accounts()?.into_iter().map(|a| a.name).collect();
            let mut balances = Vec::new();
            for n in names {
                balances.push(budget.balance(&n, now)?);
            }
            Ok(list_balances(&balances, fmt))
        }
        AdminCommand::Account(AccountCommand::Show { account }) => {
            let mut budget = open_budget(config, OpenMode::MustExist)?;
            let b = budget.balance(&account, now)?;
            let mut allocs = budget.allocations(&account)?;
            allocs.sort_by_key(|a| a.id);
            Ok(show_balance(&b, &allocs, fmt))
        }
        AdminCommand::Job(j) => {
            let mut budget = open_budget(config, OpenMode::MustExist)?;
            super::jobs::run(j, &mut budget, &actor, now, fmt)
        }
        AdminCommand::Deposit(d) => {
            let amount = Money::parse(&d.amount).map_err(|e| CliError::new(e.to_string()))?;
            if amount.is_zero() {
                return Err(CliError::new("amount must be above zero"));
            }
            let from = day_or(&d.valid_from, "--valid-from", today(now))?;
            let until = match &d.valid_until {
                Some(day) => parse_day("--valid-until", day)? + DAY_S,
                None => FOREVER,
            };
            let mut budget = open_budget(config, OpenMode::MustExist)?;
            let applied = budget.deposit(
                &d.account,
                amount,
                from,
                until,
                d.memo.as_deref(),
                d.request_id.as_deref(),
                &actor,
                now,
            )?;
            let released = if applied && (d.release_held || budget.config.release_held_on_deposit_for(&d.account)) {
                super::jobs::release_held(&mut budget, &d.account, &actor, now)?
            } else {
                String::new()
            };
            let b = budget.balance(&d.account, now)?;
            Ok(match (fmt, applied) {
                (Format::Text, true) => {
                    format!("deposited {amount} to {}; available {}\n{released}", d.account, b.available)
                }
                (Format::Text, false) => format!(
                    "deposit {} was already applied; available {}\n",
                    d.request_id.unwrap_or_default(),
                    b.available
                ),
                _ => show_balance(&b, &[], fmt),
            })
        }
        AdminCommand::Estimate(e) => {
            let account = e.account.clone().unwrap_or_default();
            let req = e.request.to_request(&account, &actor, super::current_uid())?;
            let partition = config.partitions.get(&req.partition).ok_or_else(|| {
                CliError::new(format!("partition '{}' has no price in {}", req.partition, config.source))
            })?;
            let estimate = cost::estimate(&config, &req).map_err(|err| CliError::new(err.to_string()))?;
            let pricing = partition.pricing.to_string();
            let decision = match &e.account {
                Some(_) => Some(open_budget(config, OpenMode::MustExist)?.quote(&req, now)?),
                None => None,
            };
            Ok(show_estimate(&req, &pricing, estimate, decision.as_ref(), fmt))
        }
        AdminCommand::Transactions(t) => {
            let since = match &t.since {
                Some(d) => parse_day("--since", d)?,
                None => i64::MIN,
            };
            let budget = open_budget(config, OpenMode::MustExist)?;
            let entries = budget.transactions(&t.account, since)?;
            Ok(show_transactions(&entries, fmt))
        }
        AdminCommand::Grant(g) => super::grant::run_grant(g, config, now, &actor),
        AdminCommand::Forecast(f) => super::grant::run_forecast(f, config, now, fmt),
        AdminCommand::Reconcile(r) => super::reconcile::run_reconcile(r, config, now, &actor, fmt),
        // The integration API, actual costs, learning and account members.
        #[cfg(feature = "api")]
        AdminCommand::Serve(a) => super::integration::run_serve(a, config),
        #[cfg(feature = "api")]
        AdminCommand::Alerts(c) => super::alerts::run_alerts(c, config, now, fmt),
        AdminCommand::Integration(c) => super::integration::run_integration(c, config, now, &actor, fmt),
        AdminCommand::Report(c) => super::integration::run_report(c, config, fmt),
        AdminCommand::Account(AccountCommand::Member(m)) => super::integration::run_member(m, config, now, &actor, fmt),
        AdminCommand::Migrate => run_migrate(config, now, fmt),
        AdminCommand::Ledger(LedgerCommand::Copy(a)) => run_ledger_copy(a, &config, fmt),
        AdminCommand::Verify => {
            let budget = open_budget(config, OpenMode::MustExist)?;
            let report = budget.verify()?;
            let text = match fmt {
                Format::Json => json(&report),
                _ => {
                    let mut out = format!(
                        "checked {} accounts, {} allocations, {} journal entries, {} jobs\n",
                        report.accounts, report.allocations, report.journal_entries, report.jobs
                    );
                    if report.is_clean() {
                        out.push_str("ok: every balance matches the journal\n");
                    }
                    for p in &report.problems {
                        let _ = writeln!(out, "problem: {p}");
                    }
                    out
                }
            };
            if report.is_clean() {
                Ok(text)
            } else {
                print!("{text}");
                Err(CliError { message: format!("verify found {} problem(s)", report.problems.len()), exit_code: 1 })
            }
        }
    }
}

fn parse_money(flag: &str, text: &str) -> Result<Money, CliError> {
    Money::parse(text).map_err(|e| CliError::new(format!("{flag}: {e}")))
}

fn parse_day(flag: &str, text: &str) -> Result<i64, CliError> {
    parse_date(text).map_err(|e| CliError::new(format!("{flag}: {e}")))
}

fn day_or(text: &Option<String>, flag: &str, default: i64) -> Result<i64, CliError> {
    match text {
        Some(t) => parse_day(flag, t),
        None => Ok(default),
    }
}

fn today(now: i64) -> i64 {
    now - now.rem_euclid(DAY_S)
}

fn until_text(valid_until: i64) -> String {
    if valid_until >= FOREVER {
        "open".to_string()
    } else {
        format_date(valid_until - DAY_S)
    }
}

fn balance_json(b: &Balance) -> serde_json::Value {
    serde_json::json!({
        "account": b.account,
        "status": b.status,
        "allocated": b.allocated.to_decimal_string(),
        "charged": b.charged.to_decimal_string(),
        "held": b.held.to_decimal_string(),
        "available": b.available.to_decimal_string(),
        "credit_limit": b.credit_limit.to_decimal_string(),
        "valid_from": b.valid_from.map(format_date),
        "valid_until": b.valid_until.map(until_text),
    })
}

fn show_balance(b: &Balance, allocs: &[AllocationRow], fmt: Format) -> String {
    match fmt {
        Format::Json => {
            let mut v = balance_json(b);
            v["allocations"] = allocs
                .iter()
                .map(|a| {
                    serde_json::json!({
                        "id": a.id,
                        "amount": a.amount.to_decimal_string(),
                        "debited": a.debited.to_decimal_string(),
                        "remaining": a.remaining().to_decimal_string(),
                        "valid_from": format_date(a.valid_from),
                        "valid_until": until_text(a.valid_until),
                        "memo": a.memo,
                    })
                })
                .collect();
            json(&v)
        }
        Format::Csv => balances_table(std::slice::from_ref(b), true).to_csv(),
        Format::Text => {
            let valid = match (b.valid_from, b.valid_until) {
                (Some(f), Some(u)) => format!("{} to {}", format_date(f), until_text(u)),
                _ => "no active allocation".to_string(),
            };
            let mut out = String::new();
            let _ = writeln!(out, "Account:       {}", b.account);
            let _ = writeln!(out, "Status:        {}", b.status);
            let _ = writeln!(out, "Allocated:     {}", b.allocated);
            let _ = writeln!(out, "Charged:       {}", b.charged);
            let _ = writeln!(out, "Held:          {}", b.held);
            let _ = writeln!(out, "Credit limit:  {}", b.credit_limit);
            let _ = writeln!(out, "Available:     {}", b.available);
            let _ = writeln!(out, "Valid:         {valid}");
            if !allocs.is_empty() {
                let mut t = Table::new(vec!["ID", "FROM", "UNTIL", "AMOUNT", "DEBITED", "REMAINING", "MEMO"]);
                for a in allocs {
                    t.push(vec![
                        a.id.to_string(),
                        format_date(a.valid_from),
                        until_text(a.valid_until),
                        a.amount.to_string(),
                        a.debited.to_string(),
                        a.remaining().to_string(),
                        a.memo.clone().unwrap_or_default(),
                    ]);
                }
                out.push_str("\nAllocations:\n");
                out.push_str(&t.to_text());
            }
            out
        }
    }
}

fn balances_table(balances: &[Balance], machine: bool) -> Table {
    let mut t = Table::new(vec!["ACCOUNT", "STATUS", "ALLOCATED", "CHARGED", "HELD", "AVAILABLE"]);
    let m = |x: Money| {
        if machine {
            x.to_decimal_string()
        } else {
            x.to_string()
        }
    };
    for b in balances {
        t.push(vec![b.account.clone(), b.status.clone(), m(b.allocated), m(b.charged), m(b.held), m(b.available)]);
    }
    t
}

fn list_balances(balances: &[Balance], fmt: Format) -> String {
    match fmt {
        Format::Json => json(&balances.iter().map(balance_json).collect::<Vec<_>>()),
        Format::Csv => balances_table(balances, true).to_csv(),
        Format::Text => balances_table(balances, false).to_text(),
    }
}

fn show_estimate(req: &JobRequest, pricing: &str, estimate: Money, decision: Option<&Decision>, fmt: Format) -> String {
    match fmt {
        Format::Json => {
            let mut v = serde_json::json!({
                "partition": req.partition,
                "pricing": pricing,
                "nodes": req.resources.nodes,
                "cpus": req.resources.cpus,
                "mem_mb": req.resources.mem_mb,
                "gpus": req.resources.gpus,
                "time_limit_min": req.time_limit_min,
                "array_tasks": req.array_tasks,
                "estimate": estimate.to_decimal_string(),
            });
            if let Some(d) = decision {
                v["decision"] = serde_json::to_value(d).unwrap_or_default();
            }
            json(&v)
        }
        Format::Csv => {
            let mut t = Table::new(vec![
                "PARTITION",
                "NODES",
                "CPUS",
                "MEM_MB",
                "GPUS",
                "TIME_LIMIT_MIN",
                "ARRAY_TASKS",
                "ESTIMATE",
            ]);
            t.push(vec![
                req.partition.clone(),
                req.resources.nodes.to_string(),
                req.resources.cpus.to_string(),
                req.resources.mem_mb.to_string(),
                req.resources.gpu_total().to_string(),
                req.time_limit_min.to_string(),
                req.array_tasks.to_string(),
                estimate.to_decimal_string(),
            ]);
            t.to_csv()
        }
        Format::Text => {
            let mut out = String::new();
            let _ = writeln!(out, "Partition:  {} ({pricing})", req.partition);
            let _ = writeln!(out, "Request:    {}", describe_request(req));
            let _ = writeln!(out, "Estimate:   {estimate}");
            if let Some(d) = decision {
                let _ = writeln!(out, "Decision:   {}", describe_decision(&req.account, d));
            }
            out
        }
    }
}

/// One line saying what the budget would do.
pub fn describe_decision(account: &str, d: &Decision) -> String {
    match d {
        Decision::Accept { available_after, .. } => {
            format!("accept; account {account} would have {available_after} left")
        }
        Decision::Hold { reason, .. } => {
            format!("submitted held: {}", reason.trim_start_matches("asbb: "))
        }
        Decision::Reject { reason, .. } => {
            format!("reject: {}", reason.trim_start_matches("asbb: "))
        }
        Decision::Exempt { reason } => format!("not charged ({reason})"),
    }
}

fn show_transactions(entries: &[crate::core::ledger::EntryRow], fmt: Format) -> String {
    if fmt == Format::Json {
        let v: Vec<serde_json::Value> = entries
            .iter()
            .map(|e| {
                serde_json::json!({
                    "id": e.id, "time": format_time(e.at), "kind": e.kind, "amount": e.amount.to_exact_string(),
                    "allocation_id": e.allocation_id, "token": e.token, "job_id": e.job_id, "key": e.txn_key,
                    "actor": e.actor, "memo": e.memo,
                })
            })
            .collect();
        return json(&v);
    }
    let machine = fmt == Format::Csv;
    let mut t = Table::new(vec!["ID", "TIME", "KIND", "AMOUNT", "ALLOCATION", "JOB", "TOKEN", "MEMO"]);
    for e in entries {
        t.push(vec![
            e.id.to_string(),
            format_time(e.at),
            e.kind.clone(),
            if machine { e.amount.to_decimal_string() } else { e.amount.to_string() },
            e.allocation_id.map(|a| a.to_string()).unwrap_or_else(|| "-".into()),
            e.job_id.map(|j| j.to_string()).unwrap_or_else(|| "-".into()),
            e.token.clone().unwrap_or_else(|| "-".into()),
            e.memo.clone().unwrap_or_default(),
        ]);
    }
    if machine {
        t.to_csv()
    } else {
        t.to_text()
    }
}

impl Budget {
    /// Journal entries of one account since a time, oldest first.
    pub fn transactions(&self, account: &str, since: i64) -> Result<Vec<crate::core::ledger::EntryRow>, CliError> {
        self.journal_of(account, since).map_err(CliError::from)
    }
}

/// What must not change when a ledger is migrated: every check of `verify` and every
/// account's balance.
fn ledger_state(
    budget: &mut Budget,
    now: i64,
) -> Result<(crate::core::decisions::VerifyReport, Vec<Balance>), CliError> {
    let report = budget.verify()?;
    let mut balances = Vec::new();
    for account in budget.accounts()? {
        balances.push(budget.balance(&account.name, now)?);
    }
    Ok((report, balances))
}

/// `asbb-admin migrate`: applies the pending schema migrations, checking that
/// `verify` and every balance come out as they went in.
/// What `migrate` did with the job rows that named no cluster (empty: there were none).
fn naming_line(
    (unnamed, named, run_clusters): &(usize, bool, Vec<String>),
    cluster: Option<&str>,
    conf: &std::path::Path,
) -> String {
    match (unnamed, named, cluster) {
        (0, _, _) => String::new(),
        (n, true, Some(c)) => format!("{n} job rows that never ran are cluster {c}'s (ClusterName in {})\n", conf.display()),
        (n, _, None) => format!(
            "{n} job rows that never ran name no cluster (no ClusterName in {}; set SLURM_CONF and run migrate again): the reconcile of every cluster sharing this ledger takes them as its own\n",
            conf.display()
        ),
        (n, _, Some(_)) => format!(
            "{n} job rows that never ran name no cluster: runs of clusters {} share this ledger, and which placed them is not known; the reconcile of each takes them as its own\n",
            run_clusters.join(", ")
        ),
    }
}

/// A ledger named on the command line: `sqlite:PATH` (or a plain path), or a PostgreSQL URL.
fn ledger_location(spec: &str) -> std::path::PathBuf {
    std::path::PathBuf::from(spec.strip_prefix("sqlite:").unwrap_or(spec))
}

fn run_ledger_copy(a: LedgerCopyArgs, config: &crate::core::config::Config, fmt: Format) -> Result<String, CliError> {
    use crate::core::ledger::{copy_rows, is_postgres_url, Ledger};
    let bound = config.policy.ledger_busy_timeout_ms.max(5000);
    let (from, to) = (ledger_location(&a.from), ledger_location(&a.to));
    let source = Ledger::open(&from, OpenMode::ReadOnly, bound)?;
    if !is_postgres_url(&to) && crate::core::safe_fs::exists(&to) {
        return Err(CliError::new(format!(
            "{}: it exists; a ledger is copied only into a new SQLite file or an empty PostgreSQL database",
            to.display()
        )));
    }
    let mut target = Ledger::open(&to, OpenMode::CreateIfMissing, bound)?;
    let copied = copy_rows(&source, &mut target)?;
    let (from_report, to_report) = (source.verify()?, target.verify()?);
    let (from_balances, to_balances) = (source.balances()?, target.balances()?);
    let problems: Vec<String> = from_report.problems.iter().chain(&to_report.problems).cloned().collect();
    let same = from_balances == to_balances && problems.is_empty();
    let text = match fmt {
        Format::Json => json(&serde_json::json!({
            "from": source.path(), "to": target.path(),
            "rows": copied.iter().map(|(t, n)| (t.to_string(), *n)).collect::<std::collections::BTreeMap<_, _>>(),
            "accounts": to_balances.len(), "balances_match": from_balances == to_balances, "problems": problems,
        })),
        _ => {
            let rows: u64 = copied.iter().map(|(_, n)| n).sum();
            let mut out = format!(
                "copied {rows} rows from {} to {}
",
                source.path().display(),
                target.path().display()
            );
            for (table, n) in &copied {
                let _ = writeln!(out, "  {table:<22} {n}");
            }
            let _ = writeln!(
                out,
                "verify: {} on {}, {} on {}",
                if from_report.is_clean() { "clean" } else { "PROBLEMS" },
                source.path().display(),
                if to_report.is_clean() { "clean" } else { "PROBLEMS" },
                target.path().display()
            );
            if from_balances == to_balances {
                let _ = writeln!(out, "ok: all {} accounts have the same balances on both", to_balances.len());
            }
            for p in &problems {
                let _ = writeln!(out, "problem: {p}");
            }
            out
        }
    };
    if same {
        Ok(text)
    } else {
        print!("{text}");
        Err(CliError {
            message: format!("the copy in {} differs from its source; do not use it", target.path().display()),
            exit_code: 1,
        })
    }
}

fn run_migrate(config: crate::core::config::Config, now: i64, fmt: Format) -> Result<String, CliError> {
    let path = config.ledger_path.clone();
    let ledger =
        crate::core::ledger::Ledger::open_for_migration(&path, config.policy.ledger_busy_timeout_ms.max(1000))?;
    let mut budget = Budget::with_ledger(config, ledger);
    let from = budget.schema_version()?;
    let to = crate::core::ledger::LATEST_SCHEMA;
    // Job rows that name no cluster are this controller's (ClusterName in slurm.conf);
    // a run of migrate that could not name them names them when run again.
    let slurm_conf = crate::core::safe_fs::slurm_conf_path();
    let cluster = crate::core::safe_fs::slurm_cluster_name();
    if from == to {
        // A PostgreSQL ledger made before schema 11 had its clock gains it here.
        let applied = budget.migrate()?;
        let named = budget.name_unnamed_jobs(cluster.as_deref())?;
        let line = naming_line(&named, cluster.as_deref(), &slurm_conf);
        let done =
            if applied.is_empty() { "nothing to do".to_string() } else { format!("added {}", applied.join(", ")) };
        return Ok(match fmt {
            Format::Json => json(&serde_json::json!({
                "ledger": path, "from": from, "to": to, "applied": applied,
                "jobs_named_cluster": if named.1 { named.0 } else { 0 },
            })),
            _ => format!("ledger {}: schema {to} is current; {done}\n{line}", path.display()),
        });
    }
    let before = ledger_state(&mut budget, now)?;
    // The ledger as it was, beside it: what to go back to if the check below fails.
    let mut backup = path.clone().into_os_string();
    backup.push(format!(".schema-{from}.bak"));
    let backup = std::path::PathBuf::from(backup);
    budget.backup_to(&backup)?;
    let applied = budget.migrate()?;
    let named = budget.name_unnamed_jobs(cluster.as_deref())?;
    let after = ledger_state(&mut budget, now)?;
    let same = before.1 == after.1 && before.0.problems == after.0.problems;
    if !same {
        return Err(CliError {
            message: format!(
                "ledger {}: migrated from schema {from} to {to}, but verify or a balance differs afterwards; stop slurmctld, put {} back in its place and report this",
                path.display(),
                backup.display()
            ),
            exit_code: 1,
        });
    }
    Ok(match fmt {
        Format::Json => json(&serde_json::json!({
            "ledger": path, "from": from, "to": to, "applied": applied, "backup": backup,
            "accounts": after.1.len(), "journal_entries": after.0.journal_entries,
            "verify_problems": after.0.problems,
            "jobs_named_cluster": if named.1 { named.0 } else { 0 },
            "cluster": if named.1 { cluster.as_deref() } else { None },
        })),
        _ => {
            let mut out = format!("ledger {}: schema {from} -> {to} ({})\n", path.display(), applied.join(", "));
            let _ = writeln!(out, "the ledger as it was: {} (delete it once you are satisfied)", backup.display());
            let _ = writeln!(
                out,
                "the same balances before and after: {} accounts, {} journal entries, {} jobs",
                after.1.len(),
                after.0.journal_entries,
                after.0.jobs
            );
            out.push_str(&naming_line(&named, cluster.as_deref(), &slurm_conf));
            if !after.0.is_clean() {
                let _ = writeln!(
                    out,
                    "verify finds the same {} problem(s) as before; see asbb-admin verify",
                    after.0.problems.len()
                );
            }
            out
        }
    })
}
