// SPDX-License-Identifier: GPL-2.0-or-later
//! `asbb`: what a user asks of their budget. Reads the ledger directly, so it runs
//! as root or the SLURM user (the ledger is mode 0600).

use super::admin::{describe_decision, describe_request, RequestArgs};
use super::integration::UserLedger;
use super::{json, load_config, now, open_budget, CliError, Table};
use crate::core::decisions::{format_date, format_time, Balance, Decision};
use crate::core::ledger::OpenMode;
use crate::render::ReportFormat;
use clap::{Parser, Subcommand, ValueEnum};
use std::fmt::Write as _;
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(name = "asbb", version, about = "Your SLURM budget: will a job fit, what is left, what jobs cost")]
pub struct UserCli {
    #[arg(long, global = true, env = "ASBB_CONFIG", default_value = crate::core::config::DEFAULT_CONFIG_PATH)]
    pub config: PathBuf,
    #[arg(long, global = true, env = "ASBB_LEDGER")]
    pub ledger: Option<PathBuf>,
    #[arg(long, global = true, value_enum, default_value_t = UserFormat::Text)]
    pub format: UserFormat,
    #[command(subcommand)]
    pub command: UserCommand,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum UserFormat {
    Text,
    Json,
    /// `export ASBB_...=...` lines for `eval`.
    Env,
    /// `grants` and `grant report` only.
    Csv,
    /// `grant report` only: a self-contained page.
    Html,
}

#[derive(Subcommand, Debug)]
pub enum UserCommand {
    /// Would this job be accepted now, what would it cost, what would remain.
    /// Exit 0: fits; 1: would be held or refused; 2: error.
    QuickCheck {
        #[command(flatten)]
        request: RequestArgs,
        #[arg(long, short = 'A', env = "ASBB_ACCOUNT")]
        account: String,
    },
    /// Balances of your accounts.
    Status {
        #[arg(long, short = 'A', env = "ASBB_ACCOUNT")]
        account: Option<String>,
    },
    /// What is left, one number per line (dollars, two decimals).
    Remaining {
        #[arg(long, short = 'A', env = "ASBB_ACCOUNT")]
        account: Option<String>,
    },
    /// Recent jobs with estimate and actual cost.
    Jobs {
        /// Whose jobs (default: you).
        #[arg(long, short = 'u')]
        user: Option<String>,
        #[arg(long, default_value_t = 20)]
        limit: u32,
    },
    /// The grants that fund your accounts: award, spent, remaining.
    Grants,
    /// A grant's statements.
    Grant {
        #[command(subcommand)]
        command: UserGrantCommand,
    },
}

#[derive(Subcommand, Debug)]
pub enum UserGrantCommand {
    /// The grant's report for its agency (--format text, csv, json or html).
    Report {
        number: String,
        /// One budget period (1, 2, ...) instead of the whole grant.
        #[arg(long)]
        period: Option<u32>,
    },
}

/// Runs one user command; returns stdout and the exit code.
pub fn run(cli: UserCli) -> Result<(String, i32), CliError> {
    let config = load_config(Some(&cli.config), cli.ledger.as_deref())?;
    let now = now()?;
    let fmt = cli.format;
    // A user cannot read the ledger (mode 0600); with a service socket
    // (`ASBB_SOCKET` or `[api] socket`), ask `asbb-admin serve` instead.
    let (ledger_path, api_socket) = (config.ledger_path.clone(), config.api.socket.clone());
    let mut budget: Box<dyn UserLedger> = match open_budget(config, OpenMode::MustExist) {
        Ok(b) => Box::new(b),
        #[cfg(feature = "api")]
        Err(_) if super::integration::user_socket(&ledger_path, api_socket.as_deref()).is_some() => {
            let path = super::integration::user_socket(&ledger_path, api_socket.as_deref()).unwrap_or_default();
            Box::new(super::integration::SocketLedger { path })
        }
        Err(e) => {
            let _ = (&ledger_path, &api_socket);
            return Err(e);
        }
    };
    let table_only = matches!(cli.command, UserCommand::Grants | UserCommand::Grant { .. });
    match fmt {
        UserFormat::Csv if !table_only => {
            return Err(CliError::new("--format csv is for `asbb grants` and `asbb grant report`"))
        }
        UserFormat::Html if !matches!(cli.command, UserCommand::Grant { .. }) => {
            return Err(CliError::new("--format html is for `asbb grant report`"))
        }
        UserFormat::Env if table_only => {
            return Err(CliError::new("--format env is for `asbb quick-check`, `status` and `remaining`"))
        }
        _ => {}
    }
    match cli.command {
        UserCommand::Grants => {
            let grants = budget.grants()?;
            let out = match fmt {
                UserFormat::Json => json(&grants),
                _ => {
                    let mut t = Table::new(vec![
                        "NUMBER",
                        "AGENCY",
                        "PI",
                        "ACCOUNT",
                        "END",
                        "AWARD",
                        "SPENT",
                        "REMAINING",
                        "STATUS",
                    ]);
                    let field = |g: &serde_json::Value, k: &str| g[k].as_str().unwrap_or("-").to_string();
                    for g in &grants {
                        t.push(
                            ["number", "agency", "principal_investigator", "account", "end", "award", "spent"]
                                .iter()
                                .chain(&["remaining", "status"])
                                .map(|k| field(g, k))
                                .collect(),
                        );
                    }
                    if fmt == UserFormat::Csv {
                        t.to_csv()
                    } else {
                        t.to_text()
                    }
                }
            };
            Ok((out, 0))
        }
        UserCommand::Grant { command: UserGrantCommand::Report { number, period } } => {
            let format = match fmt {
                UserFormat::Csv => ReportFormat::Csv,
                UserFormat::Json => ReportFormat::Json,
                UserFormat::Html => ReportFormat::Html,
                _ => ReportFormat::AgencyRequired,
            };
            Ok((budget.grant_report(&number, period, format, now)?, 0))
        }
        UserCommand::QuickCheck { request, account } => {
            let uid = super::current_uid();
            let user = super::user_name(uid).unwrap_or_else(|| uid.to_string());
            let req = request.to_request(&account, &user, uid)?;
            let decision = budget.quote(&req, now)?;
            let balance = budget.balance(&account, now).ok();
            let fits = matches!(decision, Decision::Accept { .. } | Decision::Exempt { .. });
            let estimate = match &decision {
                Decision::Accept { estimate, .. } | Decision::Hold { estimate, .. } => Some(*estimate),
                Decision::Reject { estimate, .. } => *estimate,
                Decision::Exempt { .. } => None,
            };
            let out = match fmt {
                UserFormat::Json => json(&serde_json::json!({
                    "account": account,
                    "partition": req.partition,
                    "estimate": estimate.map(|e| e.to_decimal_string()),
                    "available": balance.as_ref().map(|b| b.available.to_decimal_string()),
                    "fits": fits,
                    "decision": decision,
                })),
                UserFormat::Env => {
                    let mut out =
                        format!("export ASBB_ACCOUNT={account}\nexport ASBB_FITS={}\n", if fits { 1 } else { 0 });
                    if let Some(e) = estimate {
                        let _ = writeln!(out, "export ASBB_ESTIMATE={}", e.to_decimal_string());
                    }
                    if let Some(b) = &balance {
                        let _ = writeln!(out, "export ASBB_AVAILABLE={}", b.available.to_decimal_string());
                    }
                    out
                }
                UserFormat::Text | UserFormat::Csv | UserFormat::Html => {
                    let mut out = String::new();
                    let _ = writeln!(out, "Account:    {account}");
                    let _ = writeln!(out, "Request:    {} on {}", describe_request(&req), req.partition);
                    if let Some(e) = estimate {
                        let _ = writeln!(out, "Estimate:   {e}");
                    }
                    if let Some(b) = &balance {
                        let _ = writeln!(out, "Available:  {}", b.available);
                    }
                    let _ = writeln!(out, "Decision:   {}", describe_decision(&account, &decision));
                    out
                }
            };
            Ok((out, if fits { 0 } else { 1 }))
        }
        UserCommand::Status { account } => {
            let balances = balances(budget.as_mut(), account, now)?;
            let out = match fmt {
                UserFormat::Json => json(&balances.iter().map(balance_json).collect::<Vec<_>>()),
                UserFormat::Env => env_lines(&balances),
                UserFormat::Text | UserFormat::Csv | UserFormat::Html => {
                    let mut t = Table::new(vec!["ACCOUNT", "ALLOCATED", "CHARGED", "HELD", "AVAILABLE", "VALID UNTIL"]);
                    for b in &balances {
                        t.push(vec![
                            b.account.clone(),
                            b.allocated.to_string(),
                            b.charged.to_string(),
                            b.held.to_string(),
                            b.available.to_string(),
                            valid_until(b),
                        ]);
                    }
                    t.to_text()
                }
            };
            Ok((out, 0))
        }
        UserCommand::Remaining { account } => {
            let balances = balances(budget.as_mut(), account, now)?;
            let out = match fmt {
                UserFormat::Json => json(
                    &balances
                        .iter()
                        .map(|b| (b.account.clone(), serde_json::Value::from(b.available.to_decimal_string())))
                        .collect::<serde_json::Map<_, _>>(),
                ),
                UserFormat::Env => env_lines(&balances),
                UserFormat::Text | UserFormat::Csv | UserFormat::Html => {
                    balances.iter().map(|b| b.available.to_decimal_string() + "\n").collect()
                }
            };
            Ok((out, 0))
        }
        UserCommand::Jobs { user, limit } => {
            let user = user.unwrap_or_else(|| super::user_name(super::current_uid()).unwrap_or_default());
            let jobs = budget.recent_jobs(&user, limit)?;
            let out = match fmt {
                UserFormat::Json => json(&jobs),
                _ => {
                    let mut t = Table::new(vec![
                        "JOBID",
                        "ACCOUNT",
                        "PARTITION",
                        "SUBMITTED",
                        "STATE",
                        "ESTIMATE",
                        "HELD",
                        "CHARGED",
                    ]);
                    for j in &jobs {
                        t.push(vec![
                            j.job_id.map(|i| i.to_string()).unwrap_or_else(|| "-".into()),
                            j.account.clone(),
                            j.partition.clone(),
                            format_time(j.submitted_at),
                            j.state.clone(),
                            j.estimate.to_string(),
                            j.held.to_string(),
                            j.charged.to_string(),
                        ]);
                    }
                    t.to_text()
                }
            };
            Ok((out, 0))
        }
    }
}

fn balances(budget: &mut dyn UserLedger, account: Option<String>, now: i64) -> Result<Vec<Balance>, CliError> {
    let names = match account {
        Some(a) => vec![a],
        None => budget.account_names()?, // The ledger's accounts, or the caller's via the service
    };
    names.iter().map(|n| budget.balance(n, now)).collect()
}

fn valid_until(b: &Balance) -> String {
    match b.valid_until {
        Some(u) if u < crate::core::decisions::FOREVER => format_date(u - crate::core::decisions::DAY_S),
        Some(_) => "open".into(),
        None => "-".into(),
    }
}

fn balance_json(b: &Balance) -> serde_json::Value {
    serde_json::json!({
        "account": b.account,
        "allocated": b.allocated.to_decimal_string(),
        "charged": b.charged.to_decimal_string(),
        "held": b.held.to_decimal_string(),
        "available": b.available.to_decimal_string(),
        "valid_until": valid_until(b),
    })
}

/// `export ASBB_AVAILABLE_<ACCOUNT>=...` lines; a single account also gets plain names.
fn env_lines(balances: &[Balance]) -> String {
    let mut out = String::new();
    if let [b] = balances {
        let _ = writeln!(out, "export ASBB_ACCOUNT={}", b.account);
        let _ = writeln!(out, "export ASBB_AVAILABLE={}", b.available.to_decimal_string());
        let _ = writeln!(out, "export ASBB_HELD={}", b.held.to_decimal_string());
        return out;
    }
    for b in balances {
        let key: String =
            b.account.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_uppercase() } else { '_' }).collect();
        let _ = writeln!(out, "export ASBB_AVAILABLE_{key}={}", b.available.to_decimal_string());
    }
    out
}
