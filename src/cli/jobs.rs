// SPDX-License-Identifier: GPL-2.0-or-later
//! `asbb-admin job approve|deny|list|refund|adjust`: the admin side of jobs submitted
//! held, the release of held jobs after a deposit, and corrections of what a job cost. The ledger is changed first, then SLURM
//! is told (`scontrol release`, `scancel`).

use super::{json, CliError, Format, Table};
use crate::adapter::snapshot::parse_squeue_json;
use crate::core::decisions::approval::describe_waiting;
use crate::core::decisions::{format_time, Budget, JobSummary};
use crate::core::money::Money;
use crate::core::text::hold_token;
use clap::{Args, Subcommand};
use std::collections::BTreeMap;
use std::fmt::Write as _;

#[derive(Subcommand, Debug)]
pub enum JobCommand {
    /// Approve a held job: hold its funds now and release it in SLURM.
    Approve { job_id: u32 },
    /// Deny a held job: cancel it in SLURM with the reason in its comment.
    Deny {
        job_id: u32,
        #[arg(long, default_value = "denied by the budget administrator")]
        reason: String,
    },
    /// Jobs asbb knows about; `--held` for those waiting for approval or funds.
    List(JobListArgs),
    /// Give back part of a job's net charge (e.g. a node failure the site does not bill).
    Refund(CorrectionArgs),
    /// Correct a job's cost: `+AMOUNT` costs more, `-AMOUNT` less (e.g. the real AWS bill).
    Adjust(CorrectionArgs),
}

/// `job refund` / `job adjust`.
#[derive(Args, Debug)]
pub struct CorrectionArgs {
    /// SLURM job id (the job may be long gone from SLURM; the ledger knows it).
    pub job_id: u32,
    /// Dollars; for `adjust` with a sign (`+12.50`, `-3`).
    #[arg(allow_hyphen_values = true)]
    pub amount: String,
    /// Why, kept in the journal and the audit log.
    #[arg(long)]
    pub reason: String,
    /// The cluster, when the same job id ran on several.
    #[arg(long)]
    pub cluster: Option<String>,
    /// Applied once per request id (default: from the job, amount and reason, so a
    /// repeated command changes nothing).
    #[arg(long)]
    pub request_id: Option<String>,
}

#[derive(Args, Debug)]
pub struct JobListArgs {
    #[arg(long)]
    pub held: bool,
    #[arg(long, short = 'A')]
    pub account: Option<String>,
}

/// Runs a SLURM client command; stdout on success, one clear line on failure.
fn slurm(cmd: &str, args: &[&str]) -> Result<String, CliError> {
    crate::system::run_slurm(cmd, args, &[]).map_err(CliError::new)
}

/// Hold token → SLURM job id, for every job slurmctld knows.
fn tokens_in_slurm() -> Result<BTreeMap<String, u32>, CliError> {
    let text = slurm("squeue", &["--all", "--states=all", "--json"])?;
    let jobs = parse_squeue_json(&text).map_err(CliError::new)?;
    Ok(jobs.into_iter().filter_map(|j| hold_token(j.admin_comment.as_deref()).map(|t| (t, j.job_id))).collect())
}

fn token_of(job_id: u32) -> Result<String, CliError> {
    tokens_in_slurm()?.into_iter().find(|(_, id)| *id == job_id).map(|(t, _)| t).ok_or_else(|| {
        CliError::new(format!("job {job_id} is not a job asbb priced (no asbb hold token in SLURM's record)"))
    })
}

pub fn run(cmd: JobCommand, budget: &mut Budget, actor: &str, now: i64, fmt: Format) -> Result<String, CliError> {
    match cmd {
        JobCommand::Approve { job_id } => {
            let token = token_of(job_id)?;
            let hold = budget.approve(&token, Some(job_id), actor, now)?;
            slurm("scontrol", &["release", &job_id.to_string()])?;
            Ok(format!("approved job {job_id}: holding {hold}; released\n"))
        }
        JobCommand::Deny { job_id, reason } => {
            let token = token_of(job_id)?;
            budget.deny(&token, Some(job_id), &reason, actor, now)?;
            let comment = format!("Comment=asbb: denied: {}", crate::core::text::clean_text(&reason));
            slurm("scontrol", &["update", &format!("JobId={job_id}"), &comment])?;
            slurm("scancel", &[&job_id.to_string()])?;
            Ok(format!("denied job {job_id}: cancelled ({reason})\n"))
        }
        JobCommand::List(args) => {
            let mut jobs = budget.waiting_jobs(args.account.as_deref())?;
            if !args.held {
                return Err(CliError::new("say which jobs: --held lists jobs waiting for approval or funds"));
            }
            // The ledger learns a job's SLURM id only when SLURM reports back; ask SLURM.
            if jobs.iter().any(|j| j.job_id.is_none()) {
                if let Ok(ids) = tokens_in_slurm() {
                    for j in &mut jobs {
                        j.job_id = j.job_id.or_else(|| ids.get(&j.token).copied());
                    }
                }
            }
            Ok(list(&jobs, crate::core::safe_fs::slurm_cluster_name().as_deref(), fmt))
        }
        JobCommand::Refund(a) => correct(budget, &a, false, actor, now),
        JobCommand::Adjust(a) => correct(budget, &a, true, actor, now),
    }
}

/// A refund (`signed` = false, amount > 0) or an adjustment (signed, not zero) of the
/// job's net charge, as new journal entries.
fn correct(budget: &mut Budget, a: &CorrectionArgs, signed: bool, actor: &str, now: i64) -> Result<String, CliError> {
    let what = if signed { "adjustment" } else { "refund" };
    let text = a.amount.trim();
    let (negative, digits) = match text.strip_prefix('-') {
        Some(rest) if signed => (true, rest),
        _ if signed => match text.strip_prefix('+') {
            Some(rest) => (false, rest),
            None => return Err(CliError::new(format!("{what} '{text}': give a sign, +AMOUNT or -AMOUNT"))),
        },
        _ => (false, text),
    };
    let amount = Money::parse(digits).map_err(|e| CliError::new(format!("{what}: {e}")))?;
    let reason = crate::core::text::clean_text(&a.reason);
    if reason.trim().is_empty() {
        return Err(CliError::new(format!("a {what} needs --reason")));
    }
    let found = budget.find_job(a.cluster.as_deref(), a.job_id).map_err(|e| CliError::new(e.to_string()))?;
    let token = found.job.token.clone();
    let request_id = a.request_id.clone().unwrap_or_else(|| format!("cli:{token}:{text}:{reason}"));
    let applied = if signed {
        let delta = if negative { Money::from_micros(-amount.micros()) } else { amount };
        budget.adjust(&token, delta, Some(&reason), &request_id, actor, now)?
    } else {
        budget.refund(&token, amount, Some(&reason), &request_id, actor, now)?
    };
    if !applied {
        return Ok(format!(
            "job {}: this {what} was already applied (request id {request_id}); nothing changed\n",
            a.job_id
        ));
    }
    let net_charge = budget.job(&token)?.map_or(Money::ZERO, |j| j.charged);
    let done = match (signed, negative) {
        (false, _) => format!("refunded {amount}"),
        (true, false) => format!("adjusted by +{amount}"),
        (true, true) => format!("adjusted by -{amount}"),
    };
    Ok(format!("job {} ({}): {done}; net charge now {} ({reason})\n", a.job_id, found.account, net_charge))
}

/// The jobs as a table; with a CLUSTER column when any is another cluster's than
/// `here` (clusters sharing the ledger: SLURM job ids repeat across them).
fn list(jobs: &[JobSummary], here: Option<&str>, fmt: Format) -> String {
    if fmt == Format::Json {
        return json(&jobs);
    }
    let clusters = jobs.iter().any(|j| j.cluster.is_some() && j.cluster.as_deref() != here);
    let mut columns = vec!["JOBID", "USER", "ACCOUNT", "PARTITION", "ESTIMATE", "SUBMITTED", "STATE", "REASON"];
    if clusters {
        columns.insert(1, "CLUSTER");
    }
    let mut t = Table::new(columns);
    for j in jobs {
        let mut row = vec![
            j.job_id.map(|i| i.to_string()).unwrap_or_else(|| "-".into()),
            j.user.clone(),
            j.account.clone(),
            j.partition.clone(),
            if fmt == Format::Csv { j.estimate.to_decimal_string() } else { j.estimate.to_string() },
            format_time(j.submitted_at),
            j.state.clone(),
            j.reason.clone().unwrap_or_default(),
        ];
        if clusters {
            row.insert(1, j.cluster.clone().unwrap_or_else(|| "-".into()));
        }
        t.push(row);
    }
    if fmt == Format::Csv {
        t.to_csv()
    } else {
        t.to_text()
    }
}

/// After a deposit: approve and release the account's jobs waiting for funds that
/// now fit, oldest first. Returns one line per job.
pub fn release_held(budget: &mut Budget, account: &str, actor: &str, now: i64) -> Result<String, CliError> {
    let waiting: Vec<JobSummary> =
        budget.waiting_jobs(Some(account))?.into_iter().filter(|j| j.state == "awaiting_funds").collect();
    let mut out = String::new();
    if waiting.is_empty() {
        return Ok(out);
    }
    let ids = tokens_in_slurm()?;
    let here = crate::core::safe_fs::slurm_cluster_name();
    for j in waiting {
        // Another cluster sharing the ledger: only its SLURM can release the job.
        if let (Some(there), Some(here)) = (j.cluster.as_deref(), here.as_deref()) {
            if there != here {
                let _ = writeln!(
                    out,
                    "left {}: it waits on cluster {there}; `asbb-admin job approve` there releases it",
                    describe_waiting(&j)
                );
                continue;
            }
        }
        let Some(&job_id) = ids.get(&j.token) else {
            let _ = writeln!(out, "skipped {}: SLURM no longer has this job", describe_waiting(&j));
            continue;
        };
        match budget.approve(&j.token, Some(job_id), actor, now) {
            Ok(hold) => {
                slurm("scontrol", &["release", &job_id.to_string()])?;
                let _ = writeln!(out, "released job {job_id}: holding {hold}");
            }
            Err(e) => {
                let _ = writeln!(out, "job {job_id} still waits: {e}");
            }
        }
    }
    Ok(out)
}
