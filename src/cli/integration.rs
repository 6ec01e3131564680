// SPDX-License-Identifier: GPL-2.0-or-later
//! `asbb-admin` commands for the integration API, actual-cost imports, learning and
//! account members: `serve`, `integration import-costs`,
//! `account member add|remove|list`, `report accuracy`. Flags in, core calls, text out.

use super::{json, open_budget, CliError, Format, Table};
use crate::core::config::Config;
use crate::core::integration::{FileOutcome, IntegrationError};
use crate::core::ledger::OpenMode;
use crate::core::money::Money;
use crate::core::pricing::learning::{self, format_ppm};
use clap::Subcommand;
use std::fmt::Write as _;
use std::path::PathBuf;

impl From<IntegrationError> for CliError {
    fn from(e: IntegrationError) -> CliError {
        CliError::new(e.to_string())
    }
}

#[cfg(feature = "api")]
#[derive(clap::Args, Debug)]
pub struct ServeArgs {
    /// TCP address to listen on (loopback unless [api] allow_non_loopback); default
    /// `api.listen`, or 127.0.0.1:8470 when no socket is configured either.
    #[arg(long)]
    pub listen: Option<String>,
    /// Unix socket to listen on (default `api.socket`); users' `asbb` can use it.
    #[arg(long)]
    pub socket: Option<PathBuf>,
    /// Do not log each request on stderr.
    #[arg(long)]
    pub quiet: bool,
}

#[derive(Subcommand, Debug)]
pub enum IntegrationCommand {
    /// Post the burst launcher's actual costs (job-<id>-asbb-reconciliation.json, a file
    /// or every one in a folder) as adjustments; each is applied once. Exit 1 if any
    /// file is refused.
    ImportCosts {
        /// A reconciliation file or a folder of them.
        path: PathBuf,
    },
}

#[derive(Subcommand, Debug)]
pub enum MemberCommand {
    /// Let USER (name or uid) read ACCOUNT through `asbb` and the API's unix socket.
    Add { account: String, user: String },
    /// Remove USER from ACCOUNT's members (users with jobs in it can still read it).
    Remove { account: String, user: String },
    /// Members of ACCOUNT, and users who ran jobs in it.
    List { account: String },
}

#[derive(Subcommand, Debug)]
pub enum ReportCommand {
    /// How far estimates were from actual costs, per account, partition and domain, and
    /// what learning did (or would do) to holds.
    Accuracy {
        #[arg(long, short = 'A')]
        account: Option<String>,
        #[arg(long, short = 'p')]
        partition: Option<String>,
    },
    /// Chargeback: cost, CPU-hours, GPU-hours, jobs, refunds and adjustments posted
    /// between two days, grouped by account, user, project, domain, grant, partition,
    /// qos or cluster (repeat --by, or give a comma list, to nest).
    Usage {
        /// First day (YYYY-MM-DD, UTC).
        #[arg(long)]
        from: String,
        /// Last day, inclusive.
        #[arg(long)]
        to: String,
        #[arg(long, required = true, value_delimiter = ',')]
        by: Vec<String>,
    },
}

pub use crate::system::resolve_user;

#[cfg(feature = "api")]
pub fn run_serve(a: ServeArgs, config: Config) -> Result<String, CliError> {
    let listen = match &a.listen {
        Some(l) => Some(l.parse().map_err(|_| CliError::new(format!("--listen: '{l}' is not ADDRESS:PORT")))?),
        None => None,
    };
    let opts = crate::api::ServeOptions { listen, socket: a.socket, log: !a.quiet, clock: None };
    crate::api::serve_forever(config, opts).map_err(|e| CliError::new(e.0))
}

fn signed(m: Money) -> String {
    if m.is_negative() {
        m.to_string()
    } else {
        format!("+{m}")
    }
}

pub fn run_integration(
    cmd: IntegrationCommand,
    config: Config,
    now: i64,
    actor: &str,
    fmt: Format,
) -> Result<String, CliError> {
    match cmd {
        IntegrationCommand::ImportCosts { path } => {
            let mut budget = open_budget(config, OpenMode::MustExist)?;
            let results = budget.import_costs(&path, actor, now)?;
            let (mut applied, mut skipped, mut refused) = (0, 0, 0);
            for (_, o) in &results {
                match o {
                    FileOutcome::Applied(_) => applied += 1,
                    FileOutcome::Skipped(_) => skipped += 1,
                    FileOutcome::Refused { .. } => refused += 1,
                }
            }
            let name = |p: &PathBuf| p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            let text = match fmt {
                Format::Json => json(&serde_json::json!({
                    "files": results.iter().map(|(p, o)| {
                        let mut v = serde_json::to_value(o).unwrap_or_default();
                        v["file"] = serde_json::Value::String(name(p));
                        v
                    }).collect::<Vec<_>>(),
                    "applied": applied, "skipped": skipped, "refused": refused,
                })),
                Format::Csv => {
                    let mut t =
                        Table::new(vec!["FILE", "OUTCOME", "JOB_ID", "ACCOUNT", "ACTUAL", "ADJUSTMENT", "REASON"]);
                    for (p, o) in &results {
                        match o {
                            FileOutcome::Applied(c) | FileOutcome::Skipped(c) => t.push(vec![
                                name(p),
                                if matches!(o, FileOutcome::Applied(_)) { "applied" } else { "skipped" }.into(),
                                c.job_id.to_string(),
                                c.account.clone(),
                                c.actual.to_exact_string(),
                                c.adjustment.to_exact_string(),
                                String::new(),
                            ]),
                            FileOutcome::Refused { reason } => t.push(vec![
                                name(p),
                                "refused".into(),
                                String::new(),
                                String::new(),
                                String::new(),
                                String::new(),
                                reason.clone(),
                            ]),
                        }
                    }
                    t.to_csv()
                }
                Format::Text => {
                    let mut out = String::new();
                    for (p, o) in &results {
                        let _ = match o {
                            FileOutcome::Applied(c) => writeln!(
                                out,
                                "{}: applied: job {} ({}) actual {}, was charged {}, adjustment {}",
                                name(p),
                                c.job_id,
                                c.account,
                                c.actual,
                                c.charged_before,
                                signed(c.adjustment)
                            ),
                            FileOutcome::Skipped(c) => writeln!(
                                out,
                                "{}: skipped: job {} already has this actual cost ({}) from {}",
                                name(p),
                                c.job_id,
                                c.actual,
                                c.source
                            ),
                            FileOutcome::Refused { reason } => writeln!(out, "{}: refused: {reason}", name(p)),
                        };
                    }
                    let _ = writeln!(
                        out,
                        "imported {} file{}: {applied} applied, {skipped} skipped (applied before), {refused} refused",
                        results.len(),
                        if results.len() == 1 { "" } else { "s" }
                    );
                    out
                }
            };
            if refused > 0 {
                print!("{text}");
                return Err(CliError {
                    message: format!("{refused} file{} refused", if refused == 1 { "" } else { "s" }),
                    exit_code: 1,
                });
            }
            Ok(text)
        }
    }
}

pub fn run_member(cmd: MemberCommand, config: Config, now: i64, actor: &str, fmt: Format) -> Result<String, CliError> {
    match cmd {
        MemberCommand::Add { account, user } => {
            let (name, uid) = resolve_user(&user);
            let mut budget = open_budget(config, OpenMode::MustExist)?;
            let added = budget.add_member(&account, &name, uid, actor, now)?;
            Ok(if added {
                format!("{name} may now read account {account}\n")
            } else {
                format!("{name} is already a member of account {account}\n")
            })
        }
        MemberCommand::Remove { account, user } => {
            let (name, _) = resolve_user(&user);
            let mut budget = open_budget(config, OpenMode::MustExist)?;
            if budget.remove_member(&account, &name, actor, now)? {
                Ok(format!("removed {name} from account {account}\n"))
            } else {
                Err(CliError::new(format!("{name} is not a member of account {account}")))
            }
        }
        MemberCommand::List { account } => {
            let mut budget = open_budget(config, OpenMode::MustExist)?;
            let members = budget.members(&account)?;
            match fmt {
                Format::Json => Ok(json(&members)),
                _ => {
                    let mut t = Table::new(vec!["USER", "UID", "VIA", "ADDED", "BY"]);
                    for m in &members {
                        t.push(vec![
                            m.user.clone(),
                            m.uid.map(|u| u.to_string()).unwrap_or_else(|| "-".into()),
                            m.via.clone(),
                            m.added_at.clone().unwrap_or_else(|| "-".into()),
                            m.added_by.clone().unwrap_or_else(|| "-".into()),
                        ]);
                    }
                    Ok(if fmt == Format::Csv { t.to_csv() } else { t.to_text() })
                }
            }
        }
    }
}

pub fn run_report(cmd: ReportCommand, config: Config, fmt: Format) -> Result<String, CliError> {
    match cmd {
        ReportCommand::Usage { from, to, by } => {
            let day = |flag: &str, text: &str| {
                crate::core::decisions::parse_date(text).map_err(|e| CliError::new(format!("{flag}: {e}")))
            };
            let (from, until) = (day("--from", &from)?, day("--to", &to)? + crate::core::decisions::DAY_S);
            let by = by
                .iter()
                .map(|k| crate::core::usage::UsageKey::parse(k.trim()).map_err(|e| CliError::new(format!("--by: {e}"))))
                .collect::<Result<Vec<_>, _>>()?;
            let report = open_budget(config, OpenMode::MustExist)?.usage_report(from, until, &by)?;
            let format = match fmt {
                Format::Text => crate::render::UsageFormat::Text,
                Format::Csv => crate::render::UsageFormat::Csv,
                Format::Json => crate::render::UsageFormat::Json,
            };
            Ok(crate::render::render_usage(&report, format))
        }
        ReportCommand::Accuracy { account, partition } => {
            let cfg = config.learning.clone();
            let budget = open_budget(config, OpenMode::MustExist)?;
            let groups = learning::accuracy(&budget.ledger, &cfg, account.as_deref(), partition.as_deref())
                .map_err(|e| CliError::new(e.to_string()))?;
            let machine = fmt != Format::Text;
            let amount = |m: Money| if machine { m.to_exact_string() } else { m.to_string() };
            let opt_ppm = |p: Option<i64>| p.map(format_ppm).unwrap_or_else(|| "-".into());
            if fmt == Format::Json {
                return Ok(json(&groups
                    .iter()
                    .map(|g| {
                        serde_json::json!({
                            "account": g.account, "partition": g.partition, "domain": g.domain, "samples": g.samples,
                            "median_ratio": format_ppm(g.median_ratio_ppm), "p90_ratio": format_ppm(g.p90_ratio_ppm),
                            "median_ratio_learned": format_ppm(g.median_ratio_learned_ppm),
                            "p90_ratio_learned": format_ppm(g.p90_ratio_learned_ppm),
                            "median_duration_ratio": g.median_duration_ratio_ppm.map(format_ppm),
                            "p90_duration_ratio": g.p90_duration_ratio_ppm.map(format_ppm),
                            "estimated": g.estimated.to_exact_string(), "learned_holds": g.learned_holds.to_exact_string(),
                            "actual": g.actual.to_exact_string(), "freed": g.freed.to_exact_string(),
                            "under_held": g.under_held, "under_held_amount": g.under_held_amount.to_exact_string(),
                            "worst_excess": g.worst_excess.to_exact_string(),
                            "factor": g.factor_ppm.map(format_ppm), "learning_enabled": cfg.enabled,
                        })
                    })
                    .collect::<Vec<_>>()));
            }
            let mut t = Table::new(vec![
                "ACCOUNT",
                "PARTITION",
                "DOMAIN",
                "SAMPLES",
                "MEDIAN",
                "P90",
                "LEARNED MEDIAN",
                "LEARNED P90",
                "TIME MEDIAN",
                "FACTOR",
                "ESTIMATED",
                "HELD (LEARNED)",
                "FREED",
                "UNDER-HELD",
            ]);
            for g in &groups {
                t.push(vec![
                    g.account.clone(),
                    g.partition.clone(),
                    if g.domain.is_empty() && !machine { "-".into() } else { g.domain.clone() },
                    g.samples.to_string(),
                    format_ppm(g.median_ratio_ppm),
                    format_ppm(g.p90_ratio_ppm),
                    format_ppm(g.median_ratio_learned_ppm),
                    format_ppm(g.p90_ratio_learned_ppm),
                    opt_ppm(g.median_duration_ratio_ppm),
                    opt_ppm(g.factor_ppm),
                    amount(g.estimated),
                    amount(g.learned_holds),
                    amount(g.freed),
                    format!("{} ({})", g.under_held, amount(g.under_held_amount)),
                ]);
            }
            if fmt == Format::Csv {
                return Ok(t.to_csv());
            }
            let mut out = t.to_text();
            let _ = writeln!(
                out,
                "\nRatios are actual cost / estimate (MEDIAN, P90) and actual cost / learned hold (LEARNED), replayed in\n\
                 order: each sample's hold uses only the samples before it. TIME is run time / time limit. FACTOR is\n\
                 the hold factor now: the p{} of the last {} ratios, within [{}, 1.00], once a group has {} samples.\n\
                 FREED is estimate minus learned hold, summed; UNDER-HELD counts samples whose cost exceeded the\n\
                 learned hold but not the estimate. Learning is {}.",
                cfg.percentile,
                cfg.window_samples,
                format_ppm(cfg.min_hold_factor_ppm),
                cfg.min_samples,
                if cfg.enabled {
                    "on ([learning] enabled = true)"
                } else {
                    "off ([learning] enabled = false): holds are the estimates; LEARNED shows what it would do"
                }
            );
            Ok(out)
        }
    }
}

// ----- `asbb` through the service's unix socket ------------------------------------

use crate::core::decisions::{Balance, Budget, Decision, JobSummary};
use crate::core::pricing::job::JobRequest;

/// What `asbb` (the user command) reads: the ledger itself, or the service's unix socket
/// when the ledger is not readable by the user (it is mode 0600).
pub trait UserLedger {
    fn quote(&mut self, req: &JobRequest, now: i64) -> Result<Decision, CliError>;
    fn balance(&mut self, account: &str, now: i64) -> Result<Balance, CliError>;
    /// The accounts to show when none is named: all (ledger) or the caller's (service).
    fn account_names(&mut self) -> Result<Vec<String>, CliError>;
    fn recent_jobs(&mut self, user: &str, limit: u32) -> Result<Vec<JobSummary>, CliError>;
    /// The grants to show (as `grant_json`): all (ledger) or those funding the caller's
    /// accounts (service).
    fn grants(&mut self) -> Result<Vec<serde_json::Value>, CliError>;
    /// A grant's report, whole or one budget period, rendered.
    fn grant_report(
        &mut self,
        number: &str,
        period: Option<u32>,
        format: crate::render::ReportFormat,
        now: i64,
    ) -> Result<String, CliError>;
}

impl UserLedger for Budget {
    fn quote(&mut self, req: &JobRequest, now: i64) -> Result<Decision, CliError> {
        Ok(Budget::quote(self, req, now)?)
    }

    fn balance(&mut self, account: &str, now: i64) -> Result<Balance, CliError> {
        Ok(Budget::balance(self, account, now)?)
    }

    fn account_names(&mut self) -> Result<Vec<String>, CliError> {
        Ok(self.accounts()?.into_iter().map(|a| a.name).collect())
    }

    fn recent_jobs(&mut self, user: &str, limit: u32) -> Result<Vec<JobSummary>, CliError> {
        Ok(Budget::recent_jobs(self, user, limit)?)
    }

    fn grants(&mut self) -> Result<Vec<serde_json::Value>, CliError> {
        let all = Budget::grants(self, &crate::core::grants::GrantFilter::default())?;
        Ok(all.iter().map(crate::render::grant_json).collect())
    }

    fn grant_report(
        &mut self,
        number: &str,
        period: Option<u32>,
        format: crate::render::ReportFormat,
        now: i64,
    ) -> Result<String, CliError> {
        use crate::core::grants::report::ReportRange;
        let range = period.map_or(ReportRange::Whole, ReportRange::Period);
        Ok(crate::render::render(&Budget::grant_report(self, number, range, None, now)?, format))
    }
}

/// The unix socket to ask when the ledger cannot be read for lack of permission:
/// `ASBB_SOCKET`, else `[api] socket`; `None` when neither is set or the ledger is readable.
pub fn user_socket(ledger: &std::path::Path, configured: Option<&std::path::Path>) -> Option<PathBuf> {
    let socket = std::env::var_os("ASBB_SOCKET")
        .filter(|s| !s.is_empty())
        .map(PathBuf::from)
        .or_else(|| configured.map(PathBuf::from))?;
    let denied =
        |r: std::io::Result<std::fs::File>| matches!(r, Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied);
    let meta_denied = matches!(std::fs::metadata(ledger), Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied);
    (meta_denied || denied(std::fs::File::open(ledger))).then_some(socket)
}

/// The service, over its unix socket: the peer's uid decides what it answers.
#[cfg(feature = "api")]
pub struct SocketLedger {
    pub path: PathBuf,
}

#[cfg(feature = "api")]
impl SocketLedger {
    fn call(&self, method: &str, target: &str, body: Option<&[u8]>) -> Result<serde_json::Value, CliError> {
        Ok(self.call_raw(method, target, body)?.json())
    }

    /// The answer as it came (a report's text, say), once it is a 200.
    fn call_raw(
        &self,
        method: &str,
        target: &str,
        body: Option<&[u8]>,
    ) -> Result<crate::api::client::Response, CliError> {
        use crate::api::client::{request, Target};
        let r = request(&Target::Unix(&self.path), method, target, &[], body, std::time::Duration::from_secs(10))
            .map_err(|e| {
                CliError::new(format!(
                    "cannot read the ledger, and the asbb service at {} does not answer: {e}",
                    self.path.display()
                ))
            })?;
        if r.status != 200 {
            let v = r.json();
            let msg = v["error"]["message"].as_str().map(str::to_string).unwrap_or_else(|| r.body.clone());
            return Err(CliError::new(msg));
        }
        Ok(r)
    }
}

#[cfg(feature = "api")]
fn money_at(v: &serde_json::Value, key: &str) -> Result<Money, CliError> {
    let text = v[key].as_str().ok_or_else(|| CliError::new(format!("the service's answer has no {key}")))?;
    if let Some(neg) = text.strip_prefix('-') {
        return Money::parse(neg).map(|m| Money::from_micros(-m.micros())).map_err(|e| CliError::new(e.to_string()));
    }
    Money::parse(text).map_err(|e| CliError::new(e.to_string()))
}

#[cfg(feature = "api")]
impl UserLedger for SocketLedger {
    fn quote(&mut self, req: &JobRequest, _now: i64) -> Result<Decision, CliError> {
        let r = &req.resources;
        let mut body = serde_json::json!({
            "account": req.account, "partition": req.partition, "nodes": r.nodes, "cpus": r.cpus,
            "time": format!("{}", req.time_limit_min), "array_tasks": req.array_tasks, "qos": req.qos,
        });
        if r.mem_mb > 0 {
            body["mem_mb"] = serde_json::json!(r.mem_mb);
        }
        if let Some((t, n)) = r.gpus.iter().next() {
            let per_node = n / r.nodes.max(1);
            body["gres"] =
                serde_json::json!(if t.is_empty() { format!("gpu:{per_node}") } else { format!("gpu:{t}:{per_node}") });
        }
        let v = self.call("POST", "/api/v1/budget/check", Some(body.to_string().as_bytes()))?;
        let reason = v["reason"].as_str().unwrap_or_default().to_string();
        Ok(match v["decision"].as_str() {
            Some("accept") => Decision::Accept {
                token: String::new(),
                estimate: money_at(&v, "estimate")?,
                available_after: money_at(&v, "available_after")?,
            },
            Some("hold") => Decision::Hold { token: String::new(), estimate: money_at(&v, "estimate")?, reason },
            Some("reject") => Decision::Reject {
                reason,
                refusal: crate::core::decisions::Refusal::BudgetRule,
                estimate: money_at(&v, "estimate").ok(),
            },
            _ => Decision::Exempt { reason },
        })
    }

    fn balance(&mut self, account: &str, _now: i64) -> Result<Balance, CliError> {
        let v = self.call("GET", &format!("/api/v1/accounts/{account}"), None)?;
        Ok(Balance {
            account: v["name"].as_str().unwrap_or(account).to_string(),
            status: v["status"].as_str().unwrap_or_default().to_string(),
            allocated: money_at(&v, "allocated")?,
            charged: money_at(&v, "charged")?,
            held: money_at(&v, "held")?,
            credit_limit: money_at(&v, "credit_limit")?,
            available: money_at(&v, "available")?,
            valid_from: v["valid_from"].as_i64(),
            valid_until: v["valid_until"].as_i64(),
        })
    }

    fn account_names(&mut self) -> Result<Vec<String>, CliError> {
        let v = self.call("GET", "/api/v1/me", None)?;
        Ok(v["accounts"]
            .as_array()
            .map(|a| a.iter().filter_map(|x| x["name"].as_str().map(str::to_string)).collect())
            .unwrap_or_default())
    }

    fn recent_jobs(&mut self, user: &str, limit: u32) -> Result<Vec<JobSummary>, CliError> {
        let me = super::user_name(super::current_uid()).unwrap_or_default();
        if user != me {
            return Err(CliError::new(format!(
                "through the asbb service you can list only your own jobs, not {user}'s"
            )));
        }
        let v = self.call("GET", &format!("/api/v1/me/jobs?limit={limit}"), None)?;
        let mut out = Vec::new();
        for j in v.as_array().cloned().unwrap_or_default() {
            out.push(JobSummary {
                job_id: j["job_id"].as_u64().map(|i| i as u32),
                account: j["account"].as_str().unwrap_or_default().to_string(),
                partition: j["partition"].as_str().unwrap_or_default().to_string(),
                submitted_at: j["submitted_at"].as_i64().unwrap_or_default(),
                state: j["state"].as_str().unwrap_or_default().to_string(),
                estimate: money_at(&j, "estimate")?,
                held: money_at(&j, "held")?,
                charged: money_at(&j, "charged")?,
                token: j["token"].as_str().unwrap_or_default().to_string(),
                user: j["user"].as_str().unwrap_or_default().to_string(),
                reason: j["reason"].as_str().map(str::to_string),
                cluster: j["cluster"].as_str().map(str::to_string),
            });
        }
        Ok(out)
    }

    fn grants(&mut self) -> Result<Vec<serde_json::Value>, CliError> {
        Ok(self.call("GET", "/api/v1/grants", None)?.as_array().cloned().unwrap_or_default())
    }

    fn grant_report(
        &mut self,
        number: &str,
        period: Option<u32>,
        format: crate::render::ReportFormat,
        _now: i64,
    ) -> Result<String, CliError> {
        use crate::render::ReportFormat;
        let format = match format {
            ReportFormat::AgencyRequired => "agency-required",
            ReportFormat::Csv => "csv",
            ReportFormat::Json => "json",
            ReportFormat::Html => "html",
        };
        // Grant numbers may hold '/' and ':': one path segment, percent-encoded.
        let segment: String = number
            .bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
                other => format!("%{other:02X}"),
            })
            .collect();
        let period = period.map(|p| format!("&period={p}")).unwrap_or_default();
        let r = self.call_raw("GET", &format!("/api/v1/grants/{segment}/report?format={format}{period}"), None)?;
        Ok(r.body)
    }
}
