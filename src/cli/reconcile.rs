// SPDX-License-Identifier: GPL-2.0-or-later
//! `asbb-admin reconcile`: ask SLURM which jobs exist and settle every hold the
//! plugins left open (see `core::settle`). This file only runs SLURM's commands
//! (bounded in time, with `SLURM_CONF` from the environment) and prints.

use super::{json, open_budget, CliError, Format};
use crate::adapter::snapshot::{
    parse_sacct, parse_scontrol_oneliners, parse_show_config, parse_squeue_json, SlurmJob, Snapshot, SACCT_FORMAT,
};
use crate::core::config::Config;
use crate::core::decisions::{format_time, DAY_S};
use crate::core::ledger::OpenMode;
use crate::core::safe_fs::PrivateDir;
use clap::{Args, ValueEnum};
/// Furthest back sacct is asked about.
const MAX_SACCT_DAYS: i64 = 366;
/// How far back sacct looks when no open hold is older.
const DEFAULT_SACCT_DAYS: i64 = 7;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum JobSource {
    /// `squeue --json`, else `scontrol -o show job`.
    Auto,
    /// `squeue --json` (exact; SLURM 22.05 has no `scontrol --json`).
    Json,
    /// `scontrol -o show job` (one line per job).
    Scontrol,
}

#[derive(Args, Debug)]
pub struct ReconcileArgs {
    /// Say what would be done; write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Leave holds younger than this alone (slurmctld may not have created their job
    /// yet): 300, 300s, 5m, 1h.
    #[arg(long, default_value = "300s")]
    pub grace: String,
    /// Where slurmctld's jobs are read from.
    #[arg(long, value_enum, default_value_t = JobSource::Auto)]
    pub source: JobSource,
    /// Do not ask sacct about finished jobs slurmctld has already forgotten.
    #[arg(long)]
    pub no_sacct: bool,
}

/// `300`, `300s`, `5m`, `2h`, `1d` → seconds.
pub fn parse_duration_s(text: &str) -> Result<i64, CliError> {
    let t = text.trim();
    let bad = || CliError::new(format!("--grace: '{t}' is not a duration like 300s, 5m or 1h"));
    let (digits, unit) = match t.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => (&t[..i], c),
        _ => (t, 's'),
    };
    if digits.is_empty() || digits.len() > 9 || !digits.chars().all(|c| c.is_ascii_digit()) {
        return Err(bad());
    }
    let n: i64 = digits.parse().map_err(|_| bad())?;
    let mult = match unit {
        's' => 1,
        'm' => 60,
        'h' => 3600,
        'd' => DAY_S,
        _ => return Err(bad()),
    };
    Ok(n * mult)
}

/// Epoch seconds and UTC for every time SLURM prints to us.
const TIME_ENV: &[(&str, &str)] = &[("SLURM_TIME_FORMAT", "%s"), ("TZ", "UTC")];

/// slurmctld's jobs, from the source asked for.
fn controller_jobs(source: JobSource, notes: &mut Vec<String>) -> Result<Vec<SlurmJob>, CliError> {
    let json = || {
        crate::system::run_slurm("squeue", &["--json", "--all", "--states=all"], TIME_ENV)
            .and_then(|t| parse_squeue_json(&t))
    };
    let oneliners = || {
        crate::system::run_slurm("scontrol", &["-o", "--all", "show", "job"], TIME_ENV)
            .and_then(|t| parse_scontrol_oneliners(&t))
    };
    let result = match source {
        JobSource::Json => json(),
        JobSource::Scontrol => oneliners(),
        JobSource::Auto => json().or_else(|e| {
            notes.push(format!("{e}; read `scontrol -o show job` instead"));
            oneliners()
        }),
    };
    result
        .map_err(|e| CliError::new(format!("reconcile: cannot tell which jobs SLURM has, so nothing was changed: {e}")))
}

/// Finished jobs slurmctld no longer has, from accounting; empty (with a note) when
/// sacct fails.
fn accounting_jobs(since: i64, now: i64, notes: &mut Vec<String>) -> Vec<SlurmJob> {
    let start = format_time(since).replace(' ', "T");
    let end = format_time(now).replace(' ', "T");
    let format = format!("--format={SACCT_FORMAT}");
    let args = ["-a", "-X", "-n", "-P", "-S", &start, "-E", &end, &format];
    match crate::system::run_slurm("sacct", &args, TIME_ENV).and_then(|t| parse_sacct(&t)) {
        Ok(jobs) => {
            notes.push(format!("sacct: {} jobs since {}", jobs.len(), format_time(since)));
            jobs
        }
        Err(e) => {
            notes.push(format!("sacct failed ({e}); using slurmctld's records only"));
            Vec::new()
        }
    }
}

/// Runs `asbb-admin reconcile`.
pub fn run_reconcile(
    args: ReconcileArgs,
    config: Config,
    now: i64,
    actor: &str,
    fmt: Format,
) -> Result<String, CliError> {
    let grace_s = parse_duration_s(&args.grace)?;
    let mut budget = open_budget(config, OpenMode::MustExist)?;
    let open = budget.ledger_view(&Snapshot::default())?.open;

    // SLURM first, then the ledger: a hold placed after this snapshot is younger
    // than the grace period, never mistaken for a job that is gone.
    let mut notes = Vec::new();
    let config_text = crate::system::run_slurm("scontrol", &["show", "config"], TIME_ENV)
        .map_err(|e| CliError::new(format!("reconcile: cannot reach SLURM, so nothing was changed: {e}")))?;
    let (cluster, storage) = parse_show_config(&config_text);
    let cluster = cluster.ok_or_else(|| CliError::new("reconcile: `scontrol show config` printed no ClusterName"))?;
    // The oldest of this cluster's open holds sets how far back sacct is asked.
    let oldest_open =
        open.iter().filter(|h| h.cluster.as_deref().map_or(true, |c| c == cluster)).map(|h| h.submitted_at).min();
    let controller = controller_jobs(args.source, &mut notes)?;
    let accounting = match storage.as_deref() {
        _ if args.no_sacct => Vec::new(),
        None | Some("accounting_storage/none") => {
            notes.push("accounting is off (AccountingStorageType=accounting_storage/none): slurmctld's records only; jobs it has forgotten (MinJobAge) are released, not charged".into());
            Vec::new()
        }
        Some(_) => {
            let week = now - DEFAULT_SACCT_DAYS * DAY_S;
            let since = oldest_open.map_or(week, |o| o.min(week) - DAY_S).max(now - MAX_SACCT_DAYS * DAY_S);
            accounting_jobs(since, now, &mut notes)
        }
    };
    let snapshot = Snapshot::merge(cluster, controller, accounting, notes);

    let report = if args.dry_run {
        // The copy goes in a new folder of our own (SQLite puts -wal and -shm beside
        // it), removed with it afterwards.
        let scratch = PrivateDir::new("asbb-reconcile-dry-run").map_err(CliError::new)?;
        let path = scratch.path().join("ledger.db");
        let result = budget.scratch_copy(&path).and_then(|mut copy| copy.settle(&snapshot, grace_s, actor, now));
        drop(scratch);
        let mut r = result?;
        r.dry_run = true;
        r
    } else {
        budget.settle(&snapshot, grace_s, actor, now)?
    };
    Ok(match fmt {
        Format::Json => json(&report),
        _ => report.to_text(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration_s("300").unwrap(), 300);
        assert_eq!(parse_duration_s("300s").unwrap(), 300);
        assert_eq!(parse_duration_s("5m").unwrap(), 300);
        assert_eq!(parse_duration_s("1h").unwrap(), 3600);
        assert_eq!(parse_duration_s("0").unwrap(), 0);
        for bad in ["", "-5", "5x", "1.5h", "s"] {
            assert!(parse_duration_s(bad).is_err(), "{bad}");
        }
    }
}
