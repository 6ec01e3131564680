// SPDX-License-Identifier: GPL-2.0-or-later
//! The safety net behind `asbb-admin reconcile`: settle whatever the plugins missed
//! (slurmctld died between hooks, a job slurmctld refused after the plugin held
//! money for it, a completion the ledger could not take, a job let in unchecked).
//!
//! Given SLURM's jobs ([`Snapshot`]) and the ledger, [`plan`] decides, purely:
//! - a terminal SLURM record whose run the ledger has not seen is reconciled through
//!   [`Budget::reconcile`] exactly as jobcomp would have done it (same completion,
//!   same run key, so a later or earlier plugin event is a duplicate); that charges
//!   a run that ran and releases the hold share of one that never did. A record
//!   with no hold token is charged only when its account has a budget (a job let in
//!   unchecked under `on_ledger_error = "accept"`);
//! - an open hold whose job SLURM still runs or queues is left alone;
//! - an open hold whose every SLURM record has ended is released (after its runs);
//! - an open hold with no SLURM record at all is released, unless it is younger
//!   than the grace period (the plugin may have accepted it a moment ago and
//!   slurmctld not yet created the job).
//!
//! The jobs' SLURM ids are not in the ledger until a completion arrives, so records
//! are matched to holds by the token in `AdminComment`, and only when the record's
//! uid is the hold's.

use crate::adapter::snapshot::{RecordSource, Snapshot};
use crate::core::config::Config;
use crate::core::decisions::{Budget, BudgetError, Reconciled};
use crate::core::ledger::{Ledger, OpenMode, Tx};
use crate::core::money::Money;
use crate::core::pricing::job::JobCompletion;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

pub use crate::core::ledger::OpenHold;

/// What the ledger knows that [`plan`] needs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LedgerView {
    pub open: Vec<OpenHold>,
    /// The uid of every ledger job a snapshot record names (open or not).
    pub token_uid: BTreeMap<String, u32>,
    /// Run keys already reconciled for the snapshot's job ids.
    pub run_keys: BTreeSet<String>,
    /// Budget account names.
    pub accounts: BTreeSet<String>,
}

/// Why an open hold is released.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ReleaseWhy {
    /// Every record SLURM has of the job has ended.
    Ended,
    /// SLURM has no job carrying this hold's token.
    NoJob,
}

/// One thing to do, in order: runs first, then releases.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Reconcile one ended run, as jobcomp would have.
    Run { completion: Box<JobCompletion>, token: Option<String> },
    /// Release what the job still holds.
    Release { token: String, why: ReleaseWhy },
}

/// A hold left alone because it is too young to judge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Young {
    pub token: String,
    pub age_s: i64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    pub steps: Vec<Step>,
    pub young: Vec<Young>,
    /// Open holds whose job SLURM still has (queued, running, requeued, ...).
    pub alive: usize,
    /// Open holds another cluster sharing the ledger placed, by cluster: its own
    /// reconcile settles them (this SLURM cannot know their jobs).
    pub other_clusters: BTreeMap<String, usize>,
    pub warnings: Vec<String>,
}

/// Decides what to settle. Pure: no ledger, no SLURM, no clock.
pub fn plan(snapshot: &Snapshot, view: &LedgerView, config: &Config, now: i64, grace_s: i64) -> Plan {
    let mut out = Plan::default();
    let mut alive: BTreeSet<String> = BTreeSet::new();
    let mut ended: BTreeSet<String> = BTreeSet::new();
    // One completion per run key (SLURM may list a job twice across sources).
    let mut planned_keys: BTreeSet<String> = BTreeSet::new();
    for r in &snapshot.jobs {
        if r.ambiguous {
            let tokens = r.mentioned_tokens();
            out.warnings.push(format!(
                "job {}: its scontrol line cannot be read unambiguously; left alone{}",
                r.job_id,
                if tokens.is_empty() { String::new() } else { format!(" (holds {})", join(&tokens)) }
            ));
            alive.extend(tokens);
            continue;
        }
        let token = r.hold_token();
        if let (Some(t), Some(uid)) = (&token, r.uid) {
            if let Some(&owner) = view.token_uid.get(t) {
                if owner != uid {
                    out.warnings.push(format!(
                        "job {}: its admin comment names hold {t} of uid {owner}, but the job is uid {uid}'s; left alone",
                        r.job_id
                    ));
                    alive.insert(t.clone());
                    continue;
                }
            }
        }
        if !r.is_terminal() {
            match (r.source, &token) {
                (RecordSource::Controller, Some(t)) => {
                    alive.insert(t.clone());
                }
                (RecordSource::Controller, None) => {}
                // slurmctld (the authority on what is alive) no longer has it.
                (RecordSource::Accounting, t) => {
                    if let Some(t) = t {
                        ended.insert(t.clone());
                    }
                    if r.ran() || r.start_time > 0 {
                        out.warnings.push(format!(
                            "job {}: accounting says {} but slurmctld no longer has it; its run cannot be priced",
                            r.job_id, r.state
                        ));
                    }
                }
            }
            continue;
        }
        if let Some(t) = &token {
            ended.insert(t.clone());
        } else {
            // No hold: asbb's only if its account has a budget and it used something.
            let account = r.account.as_deref().unwrap_or("");
            let partition = r.partition.as_deref().unwrap_or("");
            // Root's jobs pass job_submit untouched, so they are never charged.
            if !r.ran()
                || r.uid == Some(0)
                || !view.accounts.contains(account)
                || config.exemption(account, &[partition]).is_some()
            {
                continue;
            }
        }
        let completion = match r.to_completion(&snapshot.cluster) {
            Ok(c) => c,
            Err(e) => {
                out.warnings.push(format!("job {}: cannot read its allocation ({e}); left alone", r.job_id));
                if let Some(t) = token {
                    ended.remove(&t);
                    alive.insert(t);
                }
                continue;
            }
        };
        let key = completion.run_key();
        let known = match r.source {
            RecordSource::Controller => view.run_keys.contains(&key),
            // No restart count: any run of this submission counts as this one.
            RecordSource::Accounting => {
                let prefix = r.run_key_prefix(&snapshot.cluster);
                view.run_keys.iter().any(|k| k.starts_with(&prefix))
            }
        };
        if known || !planned_keys.insert(key) {
            continue;
        }
        out.steps.push(Step::Run { completion: Box::new(completion), token });
    }
    for h in &view.open {
        if let Some(cluster) = h.cluster.as_deref().filter(|c| *c != snapshot.cluster) {
            *out.other_clusters.entry(cluster.to_string()).or_default() += 1;
        } else if alive.contains(&h.token) {
            out.alive += 1;
        } else if ended.contains(&h.token) {
            out.steps.push(Step::Release { token: h.token.clone(), why: ReleaseWhy::Ended });
        } else if now - h.submitted_at < grace_s {
            out.young.push(Young { token: h.token.clone(), age_s: now - h.submitted_at });
        } else {
            out.steps.push(Step::Release { token: h.token.clone(), why: ReleaseWhy::NoJob });
        }
    }
    out
}

fn join(items: &BTreeSet<String>) -> String {
    items.iter().cloned().collect::<Vec<_>>().join(", ")
}

/// One thing reconcile did (or, in a dry run, would do).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SettleAction {
    /// `charged`, `released` or `left`.
    pub action: &'static str,
    pub job_id: Option<u32>,
    pub token: Option<String>,
    pub account: Option<String>,
    /// Charged (for `charged`) or released (for `released`), or still held (`left`).
    pub amount: Money,
    pub amount_micros: i64,
    /// For `charged`: the hold share released with the charge.
    pub released_micros: i64,
    pub run_key: Option<String>,
    /// The line printed for people.
    pub text: String,
}

/// What a reconcile did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SettleReport {
    pub cluster: String,
    pub dry_run: bool,
    pub grace_s: i64,
    pub released: usize,
    pub charged: usize,
    /// Holds younger than the grace period, left for a later run.
    pub left: usize,
    /// Holds of jobs SLURM still has.
    pub alive: usize,
    /// Holds placed by other clusters sharing the ledger, by cluster: left to their
    /// own reconcile.
    pub other_clusters: BTreeMap<String, usize>,
    /// Steps that turned out done already (the plugin got there first).
    pub already_done: usize,
    pub actions: Vec<SettleAction>,
    pub warnings: Vec<String>,
    pub notes: Vec<String>,
}

impl SettleReport {
    /// `reconcile: 3 released, 2 charged, 0 left (younger than 300 s), 5 still in SLURM`
    pub fn summary(&self) -> String {
        format!(
            "reconcile{}: {} released, {} charged, {} left (younger than {} s), {} still in SLURM",
            if self.dry_run { " (dry run, nothing written)" } else { "" },
            self.released,
            self.charged,
            self.left,
            self.grace_s,
            self.alive
        )
    }

    /// Every line for people: notes, actions, warnings, then the summary.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let would = if self.dry_run { "would have " } else { "" };
        for n in &self.notes {
            out.push_str(&format!("note: {n}\n"));
        }
        for a in &self.actions {
            if a.action == "left" {
                out.push_str(&format!("{}\n", a.text));
            } else {
                out.push_str(&format!("{would}{}\n", a.text));
            }
        }
        for w in &self.warnings {
            out.push_str(&format!("warning: {w}\n"));
        }
        for (cluster, holds) in &self.other_clusters {
            out.push_str(&format!("left {holds} hold(s) of cluster {cluster} to its own reconcile\n"));
        }
        out.push_str(&self.summary());
        out.push('\n');
        out
    }
}

impl Budget {
    /// Reads what [`plan`] needs for this snapshot (one read transaction).
    pub fn ledger_view(&mut self, snapshot: &Snapshot) -> Result<LedgerView, BudgetError> {
        let tx = Tx::read(&mut self.ledger)?;
        let mut view = LedgerView {
            open: tx.open_holds()?,
            accounts: tx.account_ids()?.into_iter().map(|(_, name)| name).collect(),
            ..LedgerView::default()
        };
        let mut seen_ids: BTreeSet<u32> = BTreeSet::new();
        for r in &snapshot.jobs {
            let tokens = if r.ambiguous { r.mentioned_tokens() } else { r.hold_token().into_iter().collect() };
            for t in tokens {
                if view.token_uid.contains_key(&t) {
                    continue;
                }
                if let Some(uid) = tx.job_uid(&t)? {
                    view.token_uid.insert(t, uid);
                }
            }
            if r.is_terminal() && seen_ids.insert(r.job_id) {
                view.run_keys.extend(tx.run_keys_of(&snapshot.cluster, r.job_id)?);
            }
        }
        tx.commit()?;
        Ok(view)
    }

    /// Settles against a snapshot of SLURM: plans, then does each step in its own
    /// short transaction (so the plugins are never kept waiting), writing one
    /// audit-log line per action. Safe to repeat: a second run finds nothing to do.
    pub fn settle(
        &mut self,
        snapshot: &Snapshot,
        grace_s: i64,
        actor: &str,
        now: i64,
    ) -> Result<SettleReport, BudgetError> {
        let view = self.ledger_view(snapshot)?;
        let p = plan(snapshot, &view, &self.config, now, grace_s);
        let mut report = SettleReport {
            cluster: snapshot.cluster.clone(),
            grace_s,
            alive: p.alive,
            other_clusters: p.other_clusters,
            warnings: p.warnings,
            notes: snapshot.notes.clone(),
            ..Default::default()
        };
        let open: BTreeMap<&str, &OpenHold> = view.open.iter().map(|h| (h.token.as_str(), h)).collect();
        // Holds whose run could not be reconciled stay, so someone looks at them.
        let mut failed: BTreeSet<String> = BTreeSet::new();
        for step in &p.steps {
            let result = match step {
                Step::Run { completion, token } => self.settle_run(completion, token.as_deref(), now),
                Step::Release { token, .. } if failed.contains(token) => continue,
                Step::Release { token, why } => self.settle_release(token, *why, open.get(token.as_str()), now),
            };
            let action = match result {
                Ok(a) => a,
                Err(e) if e.is_ledger() => {
                    let done = report.charged + report.released;
                    return Err(BudgetError::Invalid(format!(
                        "{e} (reconcile stopped after {done} actions, which are in the audit log; run it again)"
                    )));
                }
                Err(e) => {
                    let what = match step {
                        Step::Run { completion, token } => {
                            failed.extend(token.clone());
                            format!("job {} (run {})", completion.job_id, completion.run_index)
                        }
                        Step::Release { token, .. } => format!("hold {token}"),
                    };
                    report.warnings.push(format!("{what}: not reconciled, left as it is: {e}"));
                    continue;
                }
            };
            match action {
                Some(a) => {
                    match a.action {
                        "charged" => report.charged += 1,
                        _ => report.released += 1,
                    }
                    self.audit_settle(actor, now, &a.text)?;
                    report.actions.push(a);
                }
                None => report.already_done += 1,
            }
        }
        for y in &p.young {
            let h = open.get(y.token.as_str());
            report.left += 1;
            report.actions.push(SettleAction {
                action: "left",
                job_id: None,
                token: Some(y.token.clone()),
                account: h.map(|h| h.account.clone()),
                amount: h.map_or(Money::ZERO, |h| h.held),
                amount_micros: h.map_or(0, |h| h.held.micros()),
                released_micros: 0,
                run_key: None,
                text: format!(
                    "left {} held for hold {} (account {}): submitted {} s ago, within the {grace_s} s grace period",
                    h.map_or(Money::ZERO, |h| h.held),
                    y.token,
                    h.map_or("?", |h| h.account.as_str()),
                    y.age_s
                ),
            });
        }
        if report.charged + report.released > 0 {
            self.audit_settle(actor, now, &report.summary())?;
        }
        Ok(report)
    }

    fn settle_run(
        &mut self,
        c: &JobCompletion,
        token: Option<&str>,
        now: i64,
    ) -> Result<Option<SettleAction>, BudgetError> {
        let outcome = self.reconcile(c, now)?;
        let Reconciled::Charged { account, cost, released } = outcome else {
            return Ok(None);
        };
        let key = c.run_key();
        let hold = match token {
            Some(t) => format!("hold {t}"),
            None => "no hold".to_string(),
        };
        let (action, amount, text) = if c.allocated.is_none() {
            (
                "released",
                released,
                format!(
                    "released {released} held for job {} ({hold}, account {account}): it ended {} before it ran",
                    c.job_id,
                    c.state.as_str()
                ),
            )
        } else {
            let tail = match token {
                Some(t) => format!("released {released} of hold {t}"),
                None => "it had no hold (let in while the ledger was unavailable)".to_string(),
            };
            (
                "charged",
                cost,
                format!(
                    "charged job {} ({}, run {}, {} s) to {account}: {cost}; {tail}",
                    c.job_id,
                    c.state.as_str(),
                    c.run_index,
                    c.elapsed_s()
                ),
            )
        };
        Ok(Some(SettleAction {
            action,
            job_id: Some(c.job_id),
            token: token.map(str::to_string),
            account: Some(account),
            amount,
            amount_micros: amount.micros(),
            released_micros: released.micros(),
            run_key: Some(key),
            text,
        }))
    }

    fn settle_release(
        &mut self,
        token: &str,
        why: ReleaseWhy,
        hold: Option<&&OpenHold>,
        now: i64,
    ) -> Result<Option<SettleAction>, BudgetError> {
        // A run reconciled just before (or the plugin, meanwhile) may have settled it.
        match self.job(token)? {
            Some(j) if j.state.is_open() => {}
            _ => return Ok(None),
        }
        let job_id = self.job(token)?.and_then(|j| j.job_id);
        let released = self.release(token, now)?;
        let account = hold.map(|h| h.account.clone());
        let job = match job_id {
            Some(id) => format!("job {id}"),
            None => "its job".to_string(),
        };
        let reason = match why {
            ReleaseWhy::Ended => format!("every run of {job} has ended"),
            ReleaseWhy::NoJob => "SLURM has no job with this hold (never created, or gone and never ran)".to_string(),
        };
        Ok(Some(SettleAction {
            action: "released",
            job_id,
            token: Some(token.to_string()),
            account: account.clone(),
            amount: released,
            amount_micros: released.micros(),
            released_micros: released.micros(),
            run_key: None,
            text: format!(
                "released {released} held for hold {token} (account {}): {reason}",
                account.as_deref().unwrap_or("?")
            ),
        }))
    }

    fn audit_settle(&mut self, actor: &str, now: i64, detail: &str) -> Result<(), BudgetError> {
        let tx = crate::core::ledger::Tx::write(&mut self.ledger)?;
        crate::core::ledger::postings::audit(&tx, actor, now, "reconcile", detail)?;
        tx.commit()?;
        Ok(())
    }

    /// A private copy of the ledger at `path` (for a dry run: settle the copy and
    /// throw it away). `path` must not exist; it is created mode 0600.
    pub fn scratch_copy(&self, path: &Path) -> Result<Budget, BudgetError> {
        self.ledger.copy_to(path)?;
        let ledger = Ledger::open(path, OpenMode::MustExist, 5_000)?;
        Ok(Budget::with_ledger(self.config.clone(), ledger))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adapter::snapshot::SlurmJob;

    fn config() -> Config {
        Config::parse("[policy]\nexempt_partitions=[\"free\"]\n[partitions.debug.rates]\ncpu = 3.6\n", "t").unwrap()
    }

    fn rec(job_id: u32, state: &str, token: Option<&str>, uid: u32) -> SlurmJob {
        SlurmJob {
            job_id,
            state: state.into(),
            uid: Some(uid),
            user: Some("alice".into()),
            account: Some("chem".into()),
            partition: Some("debug".into()),
            qos: None,
            admin_comment: token.map(|t| format!("asbb:hold={t}")),
            submit_time: 100,
            start_time: 110,
            end_time: 120,
            tres_alloc: Some("cpu=1,node=1".into()),
            cpus: 1,
            nodes: 1,
            task_count: 1,
            restart_cnt: Some(0),
            source: RecordSource::Controller,
            ambiguous: false,
        }
    }

    fn hold(token: &str, submitted_at: i64) -> OpenHold {
        OpenHold {
            token: token.into(),
            account: "chem".into(),
            uid: 1000,
            job_id: None,
            state: "held".into(),
            held: Money::from_micros(5),
            submitted_at,
            cluster: None,
        }
    }

    #[test]
    fn decides_per_token() {
        let snap = Snapshot {
            cluster: "c".into(),
            jobs: vec![
                rec(1, "RUNNING", Some("alive"), 1000),
                rec(2, "COMPLETED", Some("done"), 1000),
                rec(3, "COMPLETED", Some("charged"), 1000),
                rec(4, "COMPLETED", None, 1000),
                rec(5, "COMPLETED", Some("forged"), 1001),
            ],
            notes: vec![],
        };
        let mut view = LedgerView {
            open: ["alive", "done", "gone", "young", "charged", "forged"].iter().map(|t| hold(t, 0)).collect(),
            accounts: BTreeSet::from(["chem".to_string()]),
            ..Default::default()
        };
        view.open[3].submitted_at = 950;
        for t in ["alive", "done", "charged", "forged"] {
            view.token_uid.insert(t.into(), 1000);
        }
        view.run_keys.insert("c:3:100:0".into());
        let p = plan(&snap, &view, &config(), 1000, 300);
        let runs: Vec<u32> = p
            .steps
            .iter()
            .filter_map(|s| match s {
                Step::Run { completion, .. } => Some(completion.job_id),
                _ => None,
            })
            .collect();
        assert_eq!(runs, vec![2, 4]);
        let releases: Vec<(&str, ReleaseWhy)> = p
            .steps
            .iter()
            .filter_map(|s| match s {
                Step::Release { token, why } => Some((token.as_str(), *why)),
                _ => None,
            })
            .collect();
        assert_eq!(
            releases,
            vec![("done", ReleaseWhy::Ended), ("gone", ReleaseWhy::NoJob), ("charged", ReleaseWhy::Ended)]
        );
        assert_eq!(p.young, vec![Young { token: "young".into(), age_s: 50 }]);
        assert_eq!(p.alive, 2, "alive and the forged link are left alone");
        assert_eq!(p.warnings.len(), 1);
    }

    #[test]
    fn holds_of_other_clusters_sharing_the_ledger_are_left_to_them() {
        let snap = Snapshot { cluster: "c".into(), jobs: vec![rec(2, "COMPLETED", Some("mine"), 1000)], notes: vec![] };
        let mut view = LedgerView { accounts: BTreeSet::from(["chem".to_string()]), ..Default::default() };
        // Old enough to release, and no record in this cluster's SLURM: only this
        // cluster's own (and an unnamed, pre-schema-11) hold are released.
        for (token, cluster) in [("mine", Some("c")), ("unnamed", None), ("theirs", Some("d")), ("also", Some("d"))] {
            let mut h = hold(token, 0);
            h.cluster = cluster.map(str::to_string);
            view.open.push(h);
        }
        view.token_uid.insert("mine".into(), 1000);
        let p = plan(&snap, &view, &config(), 1000, 300);
        let releases: Vec<&str> = p
            .steps
            .iter()
            .filter_map(|s| match s {
                Step::Release { token, .. } => Some(token.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(releases, vec!["mine", "unnamed"]);
        assert_eq!(p.other_clusters, BTreeMap::from([("d".to_string(), 2)]));
    }

    #[test]
    fn tokenless_jobs_only_when_budgeted_and_ran() {
        let mut never = rec(7, "CANCELLED", None, 5);
        never.start_time = never.end_time;
        let mut other = rec(8, "COMPLETED", None, 5);
        other.account = Some("nobudget".into());
        let mut free = rec(9, "COMPLETED", None, 5);
        free.partition = Some("free".into());
        let snap = Snapshot { cluster: "c".into(), jobs: vec![never, other, free], notes: vec![] };
        let view = LedgerView { accounts: BTreeSet::from(["chem".to_string()]), ..Default::default() };
        assert!(plan(&snap, &view, &config(), 0, 300).steps.is_empty());
    }
}
