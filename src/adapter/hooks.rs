// SPDX-License-Identifier: GPL-2.0-or-later
//! What the plugins call: one function per SLURM hook, each returning a plain
//! action for the glue to apply. Policy lives here (exempt, ledger errors, messages);
//! the glue only copies fields in and applies the action.

use crate::adapter::fields::{CompletionFields, SubmitFields};
use crate::core::config::{CompletionHook, Config};

// A decision's refusal reason; the glue maps it to an ESLURM code.
pub use crate::core::decisions::Refusal;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubmitAction {
    /// Let the job through untouched.
    Pass { log: Option<LogLine> },
    /// Funds held: set `admin_comment`; `note` (if any) is shown to the user.
    /// `time_limit_min`: the limit the job was priced for, to write into a job that
    /// gave none, so it cannot run past what is held for it.
    Accept { admin_comment: String, note: Option<String>, time_limit_min: Option<u32>, log: LogLine },
    /// Submit held (`priority = 0`) with `reason` shown in `scontrol show job`.
    Hold { admin_comment: String, reason: String, time_limit_min: Option<u32>, log: LogLine },
    /// Refuse with `err_msg` and `code`.
    Refuse { err_msg: String, refusal: Refusal, log: LogLine },
}

/// A line for slurmctld's log, and the level it goes at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    pub level: LogLevel,
    pub text: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogLevel {
    Info,
    Error,
}

impl LogLine {
    pub fn info(text: String) -> LogLine {
        LogLine { level: LogLevel::Info, text }
    }

    pub fn error(text: String) -> LogLine {
        LogLine { level: LogLevel::Error, text }
    }
}

impl std::fmt::Display for LogLine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

/// How job_modify was called, as the glue read it from slurmctld.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UpdateCall {
    pub caller: Caller,
    /// The job is pending (most fields can change only then).
    pub pending: bool,
    /// The update releases a held job (`scontrol release`).
    pub releasing: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModifyAction {
    /// Let the update through; set `admin_comment` if given.
    Allow { admin_comment: Option<String>, log: Option<LogLine> },
    /// A release that does not fit: refuse the update, the job stays held with `reason`.
    KeepHeld { reason: String, refusal: Refusal, log: LogLine },
    /// Refuse the update (e.g. a bigger job that no longer fits); `reason` is what the
    /// user is told where the release lets job_modify say it (23.02+).
    Refuse { reason: String, refusal: Refusal, log: LogLine },
}

use crate::adapter::fields::{effective_update, Caller, FieldError, ReadRequest, INFINITE, NO_VAL};
use crate::core::decisions::{BudgetError, BudgetHandle, Decision, Modified, Reconciled, Rerun};
use crate::core::ledger::JobState;
use crate::core::money::Money;
use crate::core::pricing::job::EndState;
use crate::core::pricing::job::JobRequest;
use crate::core::text::{hold_token, with_hold_token};
use std::path::{Path, PathBuf};

/// `ASBB_CONFIG` if set, else `asbb.toml` in the folder of slurm.conf.
pub fn config_path_for(slurm_conf_path: Option<&str>) -> PathBuf {
    if let Some(p) = std::env::var_os("ASBB_CONFIG").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    let conf = slurm_conf_path.filter(|p| !p.is_empty()).unwrap_or("/etc/slurm/slurm.conf");
    Path::new(conf).parent().unwrap_or(Path::new("/etc/slurm")).join("asbb.toml")
}

const LEDGER_DOWN_REJECT: &str =
    "asbb: the budget ledger is unavailable, so the job cannot be priced; try again shortly or contact your admins";
const LEDGER_DOWN_UPDATE: &str =
    "asbb: the budget ledger is unavailable, so the change cannot be priced; try again shortly or contact your admins";
const LEDGER_DOWN_ACCEPT: &str =
    "asbb: the budget ledger is unavailable; job accepted without a budget check and will be charged when it ends";

/// The plugins' state: the config read at init and the ledger handle (opened on first
/// use, reopened by [`BudgetHandle`]'s policy; checkpoints off the hook path).
pub struct Hooks {
    ledger: BudgetHandle,
    /// Tests prove a panic cannot take slurmctld down: a job with this name panics
    /// (feature `test-hooks`, built only for `make test`).
    #[cfg(feature = "test-hooks")]
    panic_job_name: Option<String>,
    /// Holds this plugin placed and has not yet seen SLURM create a job for: (token,
    /// unix s placed), oldest first. Kept in memory so a check reads no ledger rows;
    /// after a restart the cron `asbb-admin reconcile` settles what was queued.
    unconfirmed: std::collections::VecDeque<(String, i64)>,
    /// (job id, submit time) of those already settled, so each is settled once.
    swept: std::collections::HashSet<(u32, i64)>,
    /// (job id, restart count) of requeued jobs already looked at.
    rerun_checked: std::collections::HashSet<(u32, u32)>,
}

/// A hold placed at job_submit is provisional: slurmctld may still refuse the job
/// (association, later plugins, a refused hetjob component) or it was only a
/// `sbatch --test-only` probe, and job_submit cannot tell. Holds still unconfirmed
/// this many seconds later, whose job SLURM does not have, are released. (Between
/// job_submit and the job record slurmctld drops its locks for a moment.)
pub const PROVISIONAL_GRACE_S: i64 = 5;
/// Most holds checked against SLURM's job list in one walk.
const CONFIRM_BATCH: usize = 1000;
/// Most holds confirmed or released in one ledger transaction: a submission waits
/// for the plugin's ledger no longer than one of them takes (a few hundred µs).
pub const CONFIRM_CHUNK: usize = 64;
/// See [`Hooks::sweep_marks`].
pub type SweepMarks<'a> = (&'a std::collections::HashSet<(u32, i64)>, &'a std::collections::HashSet<(u32, u32)>);

/// Most settled unallocated jobs remembered (beyond it they are forgotten: settling
/// one again changes nothing, it only costs a look at the ledger).
const MAX_SWEPT: usize = 100_000;
/// Most holds waiting to be checked (beyond it the oldest are left to reconcile).
const MAX_UNCONFIRMED: usize = 100_000;

/// The confirm thread's log line: how many holds SLURM has jobs for, and what was
/// released of those it never created.
pub fn confirmed_line(confirmed: usize, released: &[(String, Money)]) -> LogLine {
    if released.is_empty() {
        return LogLine::info(format!("confirmed {confirmed} hold(s): SLURM has their jobs"));
    }
    LogLine::info(format!(
        "confirmed {confirmed} hold(s); released {}: SLURM never created their jobs",
        released.iter().map(|(t, m)| format!("{m} of {t}")).collect::<Vec<_>>().join(", ")
    ))
}

impl Hooks {
    pub fn new(config: Config) -> Hooks {
        let busy_timeout_ms = config.policy.ledger_busy_timeout_ms;
        Hooks {
            ledger: BudgetHandle::new(config, busy_timeout_ms, true),
            #[cfg(feature = "test-hooks")]
            panic_job_name: std::env::var("ASBB_TEST_PANIC_JOB_NAME").ok().filter(|n| !n.is_empty()),
            unconfirmed: Default::default(),
            swept: Default::default(),
            rerun_checked: Default::default(),
        }
    }

    pub fn config(&self) -> &Config {
        self.ledger.config()
    }

    /// Names the SLURM cluster (ClusterName) these hooks run in: the job rows they
    /// write name it, so clusters sharing one ledger each reconcile only their own.
    pub fn set_cluster(&mut self, cluster: &str) {
        self.ledger.set_cluster(cluster);
    }

    /// Replaces the config (reconfigure); the ledger is reopened on next use.
    pub fn set_config(&mut self, config: Config) {
        let busy_timeout_ms = config.policy.ledger_busy_timeout_ms;
        self.ledger.set_config(config, busy_timeout_ms);
    }

    /// The provisional holds ready to be checked against SLURM's job list: placed at
    /// least [`PROVISIONAL_GRACE_S`] ago, oldest first, at most [`CONFIRM_BATCH`], taken
    /// from the queue. Nothing until a hook has opened the ledger and used it: a
    /// connection opened here while the ledger is read-only would keep SQLite's shared
    /// WAL index read-only for every connection of this process, after the fault is gone.
    pub fn ripe_unconfirmed(&mut self, now: i64) -> Vec<String> {
        if !self.ledger.is_open() {
            return Vec::new();
        }
        let ripe = self.unconfirmed.iter().take_while(|(_, at)| *at <= now - PROVISIONAL_GRACE_S).count();
        self.unconfirmed.drain(..ripe.min(CONFIRM_BATCH)).map(|(t, _)| t).collect()
    }

    /// Puts back, first in the queue and ripe at once, holds taken by
    /// [`Self::ripe_unconfirmed`] and not settled (the job list or the ledger could not
    /// answer): the next check tries them again.
    pub fn requeue_unconfirmed(&mut self, tokens: &[String], now: i64) {
        for token in tokens.iter().rev() {
            if self.unconfirmed.len() >= MAX_UNCONFIRMED {
                break;
            }
            self.unconfirmed.push_front((token.clone(), now - PROVISIONAL_GRACE_S));
        }
    }

    /// Confirms the provisional holds whose job SLURM has (`found`: token, job id) and
    /// releases those whose job it never created (see [`PROVISIONAL_GRACE_S`]), in one
    /// transaction; returns what was released, per token. None, doing nothing, when no
    /// hook has the ledger open (see [`Self::ripe_unconfirmed`]).
    pub fn settle_provisional(
        &mut self,
        found: &[(String, u32)],
        never_created: &[String],
        now: i64,
    ) -> Result<Option<Vec<(String, Money)>>, BudgetError> {
        if !self.ledger.is_open() {
            return Ok(None);
        }
        let result = self.ledger.get().and_then(|b| b.confirm_holds(found, never_created, now));
        if let Err(e) = &result {
            self.ledger.forget_on(e);
        }
        result.map(Some)
    }

    pub fn on_submit(&mut self, fields: &SubmitFields, now: i64) -> SubmitAction {
        if fields.uid == 0 {
            return SubmitAction::Pass { log: None };
        }
        #[cfg(feature = "test-hooks")]
        if self.panic_job_name.is_some() && fields.name == self.panic_job_name {
            panic!("ASBB_TEST_PANIC_JOB_NAME matched job name {:?}", fields.name);
        }
        let req = match fields.to_request(self.config()) {
            Ok(ReadRequest::Priced(r)) => r,
            Ok(ReadRequest::Exempt(why)) => {
                return SubmitAction::Pass { log: Some(LogLine::info(format!("uid {} passes: {why}", fields.uid))) }
            }
            Err(e) => {
                let code = match e {
                    crate::adapter::fields::FieldError::NoAccount
                    | crate::adapter::fields::FieldError::NoAssociation(_)
                    | crate::adapter::fields::FieldError::BadName("account") => Refusal::UnknownAccount,
                    crate::adapter::fields::FieldError::BadName(_) => Refusal::BadPartition,
                    crate::adapter::fields::FieldError::NoTimeLimit => Refusal::BadTimeLimit,
                    _ => Refusal::BadRequest,
                };
                let err_msg = e.to_string();
                return SubmitAction::Refuse {
                    log: LogLine::info(format!("refused uid {}: {err_msg}", fields.uid)),
                    err_msg,
                    refusal: code,
                };
            }
        };
        let who = format!("{} account={} partition={}", req.user, req.account, req.partition);
        let time_limit_min = matches!(fields.time_limit, NO_VAL | INFINITE).then_some(req.time_limit_min);
        let meta = match crate::core::pricing::metadata::parse(
            fields.comment.as_deref(),
            &fields.environment,
            fields.wckey.as_deref(),
        ) {
            Ok(m) => m,
            Err(e) => {
                let err_msg = e.to_string();
                // Budget policy, not a resource spec: the first line says exactly what is wrong.
                return SubmitAction::Refuse {
                    log: LogLine::info(format!("refused {who}: {err_msg}")),
                    err_msg,
                    refusal: Refusal::BudgetRule,
                };
            }
        };
        let result = self.ledger.get().and_then(|b| b.submit(&req, &meta, now));
        if let Ok(Decision::Accept { token, .. } | Decision::Hold { token, .. }) = &result {
            if self.unconfirmed.len() >= MAX_UNCONFIRMED {
                self.unconfirmed.pop_front();
            }
            self.unconfirmed.push_back((token.clone(), now));
        }
        match result {
            Ok(Decision::Accept { token, estimate, available_after }) => SubmitAction::Accept {
                admin_comment: with_hold_token(fields.admin_comment.as_deref(), &token),
                note: None,
                time_limit_min,
                log: LogLine::info(format!("accepted {who}: held {estimate} (token {token}, {available_after} left)")),
            },
            Ok(Decision::Hold { token, estimate, reason }) => SubmitAction::Hold {
                admin_comment: with_hold_token(fields.admin_comment.as_deref(), &token),
                time_limit_min,
                log: LogLine::info(format!("held {who}: estimate {estimate} (token {token}): {reason}")),
                reason,
            },
            Ok(Decision::Reject { reason, refusal, .. }) => SubmitAction::Refuse {
                log: LogLine::info(format!("refused {who}: {reason}")),
                err_msg: reason,
                refusal,
            },
            Ok(Decision::Exempt { reason }) => {
                SubmitAction::Pass { log: Some(LogLine::info(format!("{who} passes: {reason}"))) }
            }
            Err(e) => {
                self.ledger.forget_on(&e);
                self.ledger_down(fields, &who, &e)
            }
        }
    }

    fn ledger_down(&self, fields: &SubmitFields, who: &str, e: &BudgetError) -> SubmitAction {
        match self.config().policy.on_ledger_error {
            crate::core::config::OnLedgerError::Reject => SubmitAction::Refuse {
                err_msg: LEDGER_DOWN_REJECT.to_string(),
                refusal: Refusal::LedgerUnavailable,
                log: LogLine::error(format!("refused {who} (on_ledger_error=reject): {e}")),
            },
            crate::core::config::OnLedgerError::Accept => SubmitAction::Accept {
                admin_comment: fields.admin_comment.clone().unwrap_or_default(),
                note: Some(LEDGER_DOWN_ACCEPT.to_string()),
                time_limit_min: None,
                log: LogLine::error(format!("accepted {who} unchecked (on_ledger_error=accept): {e}")),
            },
        }
    }

    pub fn on_modify(
        &mut self,
        record: &SubmitFields,
        merged: &SubmitFields,
        call: UpdateCall,
        now: i64,
    ) -> ModifyAction {
        // The token comes from the job as it is: an update cannot re-link a job.
        let Some(token) = hold_token(record.admin_comment.as_deref()) else {
            return self.modify_without_hold(record, merged, call, now);
        };
        let Some(effective) = effective_update(record, merged, call.caller, call.pending) else {
            return self.modify_by_other(&token, record, merged, call);
        };
        let approved = call.releasing && call.caller == Caller::Operator;
        let req = match effective.to_request(self.config()) {
            Ok(ReadRequest::Priced(r)) => r,
            Ok(ReadRequest::Exempt(why)) => return self.modify_to_exempt(&token, record.job_id, &why, call, approved),
            Err(e) => {
                return ModifyAction::Refuse {
                    log: LogLine::info(format!("refused update of {token}: {e}")),
                    reason: e.to_string(),
                    refusal: Refusal::BadRequest,
                }
            }
        };
        let job = match req.job_id {
            Some(id) => format!("job {id}"),
            None => format!("token {token}"),
        };
        match self.ledger.get().and_then(|b| b.modify(&token, &req, call.releasing, approved, now)) {
            Ok(Modified::Repriced { old_hold, new_hold }) => ModifyAction::Allow {
                admin_comment: None,
                log: Some(LogLine::info(format!("{job}: hold {old_hold} -> {new_hold}"))),
            },
            Ok(Modified::Released { hold }) => ModifyAction::Allow {
                admin_comment: None,
                log: Some(LogLine::info(format!("{job}: released, held {hold}"))),
            },
            Ok(Modified::StillHeld { reason }) => ModifyAction::KeepHeld {
                log: LogLine::info(format!("{job}: release refused, stays held: {reason}")),
                reason,
                refusal: Refusal::BudgetRule,
            },
            Ok(Modified::Refused { reason }) => ModifyAction::Refuse {
                refusal: Refusal::BudgetRule,
                log: LogLine::info(format!("{job}: update refused: {reason}")),
                reason,
            },
            Ok(Modified::Unchanged) => ModifyAction::Allow { admin_comment: None, log: None },
            Err(BudgetError::UnknownToken(_)) => ModifyAction::Allow {
                admin_comment: None,
                log: Some(LogLine::info(format!("{job}: token {token} is not in the ledger"))),
            },
            Err(e) => self.modify_unchecked(&job, e),
        }
    }

    /// An update from someone who is neither the job's owner nor an operator. slurmctld
    /// refuses it after this call, unless the caller coordinates the job's account,
    /// which asbb cannot tell here. The ledger follows no such update, so asbb refuses
    /// those it would have to follow: one that changes what the job costs, or releases
    /// a job waiting for approval or funds. Anything else goes on to slurmctld.
    fn modify_by_other(
        &mut self,
        token: &str,
        record: &SubmitFields,
        merged: &SubmitFields,
        call: UpdateCall,
    ) -> ModifyAction {
        let job_id = record.job_id;
        let refuse = |reason: String| ModifyAction::Refuse {
            log: LogLine::info(format!("job {job_id}: update refused: {reason}")),
            reason,
            refusal: Refusal::BudgetRule,
        };
        let as_owner = effective_update(record, merged, Caller::Owner, call.pending);
        let config = self.config();
        if as_owner.is_some_and(|a| !same_cost(&a.to_request(config), &record.to_request(config))) {
            return refuse(format!("asbb: only the owner of job {job_id} or an operator can change what it costs"));
        }
        if call.releasing {
            let waiting = match self.ledger.get().and_then(|b| b.job(token)) {
                Ok(job) => job.is_some_and(|j| j.state.is_waiting()),
                // Whether it waits is unknown: refused, as slurmctld refuses all but a
                // coordinator.
                Err(e) => {
                    self.ledger.forget_on(&e);
                    true
                }
            };
            if waiting {
                return refuse(format!("asbb: only the owner of job {job_id} or an operator can release it"));
            }
        }
        ModifyAction::Allow {
            admin_comment: None,
            log: Some(LogLine::info(format!(
                "job {job_id}: update from a user who is neither its owner nor an operator; ledger unchanged"
            ))),
        }
    }

    /// An update of a job that has no hold. One asbb let pass (exempt) must not become
    /// one asbb charges for (moved to a priced partition or account) without being
    /// priced: that update is refused, and the job can be submitted again. One that
    /// was priced but holds nothing (admitted unchecked while the ledger was down, or
    /// from before asbb) is charged when it ends, like any job, and is not followed.
    /// Operators' updates go through.
    fn modify_without_hold(
        &mut self,
        record: &SubmitFields,
        merged: &SubmitFields,
        call: UpdateCall,
        now: i64,
    ) -> ModifyAction {
        let allow = ModifyAction::Allow { admin_comment: None, log: None };
        if call.caller == Caller::Operator {
            return allow;
        }
        // A coordinator is judged as an owner (see `modify_by_other`).
        let Some(after) = effective_update(record, merged, Caller::Owner, call.pending) else {
            return allow;
        };
        let (before, after) = (record.to_request(self.config()), after.to_request(self.config()));
        if same_cost(&before, &after) {
            return allow;
        }
        let Ok(ReadRequest::Priced(after)) = after else {
            // Exempt after the update, or not a request asbb can read (slurmctld judges).
            return allow;
        };
        // Whether asbb acts on a job asking for `req` (holds, holds back or refuses it).
        fn charged(b: &mut crate::core::decisions::Budget, req: &JobRequest, now: i64) -> Result<bool, BudgetError> {
            b.quote(req, now).map(|d| !matches!(d, Decision::Exempt { .. }))
        }
        let passed = match before {
            Ok(ReadRequest::Priced(before)) => match self.ledger.get().and_then(|b| charged(b, &before, now)) {
                Ok(charged) => (!charged).then(|| "it was exempt when submitted".to_string()),
                Err(e) => return self.modify_unchecked(&format!("job {}", record.job_id), e),
            },
            Ok(ReadRequest::Exempt(why)) => Some(why),
            Err(_) => None,
        };
        let Some(why) = passed else { return allow };
        match self.ledger.get().and_then(|b| charged(b, &after, now)) {
            Ok(false) => allow,
            Ok(true) => {
                let job_id = record.job_id;
                let reason = format!(
                    "asbb: job {job_id} has no budget hold ({why}); it cannot be moved where asbb charges for jobs: cancel it and submit it again"
                );
                ModifyAction::Refuse {
                    log: LogLine::info(format!("job {job_id}: update refused: {reason}")),
                    reason,
                    refusal: Refusal::BudgetRule,
                }
            }
            Err(e) => self.modify_unchecked(&format!("job {}", record.job_id), e),
        }
    }

    /// An update the ledger could not judge: `on_ledger_error` says whether it goes on.
    /// `job`: how the log names the job (`job 42`, `token ...`).
    fn modify_unchecked(&mut self, job: &str, e: BudgetError) -> ModifyAction {
        self.ledger.forget_on(&e);
        match self.config().policy.on_ledger_error {
            crate::core::config::OnLedgerError::Reject => ModifyAction::Refuse {
                reason: LEDGER_DOWN_UPDATE.to_string(),
                refusal: Refusal::LedgerUnavailable,
                log: LogLine::error(format!("{job}: update refused (on_ledger_error=reject): {e}")),
            },
            crate::core::config::OnLedgerError::Accept => ModifyAction::Allow {
                admin_comment: None,
                log: Some(LogLine::error(format!("{job}: update allowed unchecked (on_ledger_error=accept): {e}"))),
            },
        }
    }

    /// An update that makes a priced job exempt (e.g. `Partition=<exempt>`). A job that
    /// waits for approval or funds is not released by it: otherwise it could be moved
    /// to an exempt partition, released, and moved back.
    fn modify_to_exempt(
        &mut self,
        token: &str,
        job_id: u32,
        why: &str,
        call: UpdateCall,
        approved: bool,
    ) -> ModifyAction {
        if !call.releasing || approved {
            return ModifyAction::Allow { admin_comment: None, log: None };
        }
        match self.ledger.get().and_then(|b| b.job(token)) {
            Ok(Some(job)) if job.state.is_waiting() => {
                let reason = format!(
                    "asbb: job {job_id} still waits ({}); an exempt partition does not release it, ask your admins",
                    job.state.as_str().replace('_', " ")
                );
                ModifyAction::KeepHeld {
                    log: LogLine::info(format!("job {job_id}: release refused, stays held ({why}): {reason}")),
                    reason,
                    refusal: Refusal::BudgetRule,
                }
            }
            Ok(_) => ModifyAction::Allow { admin_comment: None, log: None },
            Err(e) => {
                self.ledger.forget_on(&e);
                ModifyAction::Refuse {
                    reason: LEDGER_DOWN_UPDATE.to_string(),
                    refusal: Refusal::LedgerUnavailable,
                    log: LogLine::error(format!("job {job_id}: release refused, the ledger cannot answer: {e}")),
                }
            }
        }
    }

    /// What prep/asbb's looks at SLURM's job list skip: (job id, submit time) of jobs
    /// settled as ended unallocated, and (job id, restart count) of requeued jobs
    /// looked at. Forgotten when large (looking again changes nothing).
    pub fn sweep_marks(&mut self) -> SweepMarks<'_> {
        if self.swept.len() > MAX_SWEPT {
            self.swept.clear();
        }
        if self.rerun_checked.len() > MAX_SWEPT {
            self.rerun_checked.clear();
        }
        (&self.swept, &self.rerun_checked)
    }

    /// Settles jobs that ended without ever being allocated (cancelled while pending),
    /// which no PrEp hook reports: `ended` is the glue's look at SLURM's job list for
    /// such jobs with an asbb hold, skipping those settled already. Each is settled as
    /// jobcomp would settle it (the same completion, so the same run key: never twice,
    /// whichever hook saw it).
    pub fn settle_unallocated(
        &mut self,
        now: i64,
        ended: impl FnOnce(&std::collections::HashSet<(u32, i64)>) -> Vec<CompletionFields>,
    ) -> Vec<LogLine> {
        let found = ended(&self.swept);
        let mut lines = Vec::with_capacity(found.len());
        for fields in found {
            let action = self.on_complete(&fields, now);
            // A ledger error leaves it for the next look.
            if action.log.level != LogLevel::Error {
                self.swept.insert((fields.job_id, fields.submit_time));
            }
            lines.push(action.log);
        }
        lines
    }

    /// A finished job its owner requeues (`scontrol requeue`) reaches no PrEp hook (nor
    /// does a node-failure requeue's re-run, which this prices too):
    /// `requeued` is the glue's look at SLURM's pending jobs that ran before and carry
    /// an asbb hold (skipping those looked at). Those whose hold is already settled
    /// get their re-run priced and held when it no longer fits, as jobcomp does when
    /// it sees the requeue; the actions are for the glue to apply to each job id.
    /// (A requeue SLURM reports keeps its hold, and is left alone.)
    pub fn price_requeued(
        &mut self,
        now: i64,
        requeued: impl FnOnce(&std::collections::HashSet<(u32, u32)>) -> Vec<CompletionFields>,
    ) -> Vec<(u32, CompleteAction)> {
        let mut out = Vec::new();
        for fields in requeued(&self.rerun_checked) {
            let Some(token) = hold_token(fields.admin_comment.as_deref()) else { continue };
            let job = match self.ledger.get().and_then(|b| b.job(&token)) {
                Ok(job) => job,
                Err(e) => {
                    self.ledger.forget_on(&e);
                    let line = LogLine::error(format!("job {}: cannot check its requeue: {e}", fields.job_id));
                    out.push((fields.job_id, CompleteAction { log: line, rerun: None }));
                    continue;
                }
            };
            if !job.is_some_and(|j| matches!(j.state, JobState::Settled | JobState::Released)) {
                self.rerun_checked.insert((fields.job_id, fields.restart_cnt));
                continue;
            }
            let what = format!("job {} (REQUEUED)", fields.job_id);
            let action = self.price_rerun(&fields, &token, &what, now);
            // A ledger error is tried again at the next look (the job is held meanwhile
            // when asbb fails closed).
            if action.log.level != LogLevel::Error {
                self.rerun_checked.insert((fields.job_id, fields.restart_cnt));
            }
            out.push((fields.job_id, action));
        }
        out
    }

    /// Reconciles one ended run. Returns the log line (at error level on failure) and,
    /// for a finished job requeued to run again, what to write into its record.
    pub fn on_complete(&mut self, fields: &CompletionFields, now: i64) -> CompleteAction {
        let log = |line: LogLine| CompleteAction { log: line, rerun: None };
        let completion = match fields.to_completion() {
            Ok(c) => c,
            Err(e) => return log(LogLine::error(format!("job {}: cannot read its allocation: {e}", fields.job_id))),
        };
        let what = format!("job {} ({})", completion.job_id, completion.state.as_str());
        // Root's jobs pass job_submit untouched; they are not charged either.
        if fields.uid == 0 && completion.hold_token.is_none() {
            return log(LogLine::info(format!("{what}: not tracked (root's job)")));
        }
        match self.ledger.get().and_then(|b| b.reconcile(&completion, now)) {
            Ok(Reconciled::Charged { account, cost, released }) => {
                log(LogLine::info(format!("{what} account={account}: charged {cost}, released {released}")))
            }
            // `scontrol requeue` of a finished job reports the run it already reported,
            // as REQUEUED: the job is about to run again, so that run needs a budget.
            Ok(Reconciled::Duplicate) if completion.state == EndState::Requeued => match &completion.hold_token {
                Some(token) => self.price_rerun(fields, token, &what, now),
                None => log(LogLine::info(format!("{what}: already reconciled"))),
            },
            Ok(Reconciled::Duplicate) => log(LogLine::info(format!("{what}: already reconciled"))),
            Ok(Reconciled::NotTracked { reason }) => log(LogLine::info(format!("{what}: not tracked ({reason})"))),
            Err(e) => {
                self.ledger.forget_on(&e);
                log(LogLine::error(format!("{what}: not reconciled, `asbb-admin reconcile` will settle it: {e}")))
            }
        }
    }

    fn price_rerun(&mut self, fields: &CompletionFields, token: &str, what: &str, now: i64) -> CompleteAction {
        let relink = |new_token: &str| with_hold_token(fields.admin_comment.as_deref(), new_token);
        match self.ledger.get().and_then(|b| b.price_rerun(token, fields.job_id, now)) {
            Ok(None) => CompleteAction { log: LogLine::info(format!("{what}: already reconciled")), rerun: None },
            Ok(Some(Rerun::Held { token: new_token, hold })) => CompleteAction {
                log: LogLine::info(format!(
                    "{what}: requeued after it finished; re-run held {hold} (token {new_token})"
                )),
                rerun: Some(RerunAction { admin_comment: relink(&new_token), hold_reason: None }),
            },
            Ok(Some(Rerun::Waiting { token: new_token, reason })) => CompleteAction {
                log: LogLine::info(format!("{what}: requeued after it finished; held, not run: {reason}")),
                rerun: Some(RerunAction { admin_comment: relink(&new_token), hold_reason: Some(reason) }),
            },
            Err(e) => {
                self.ledger.forget_on(&e);
                // Fail closed or open, as for a submission.
                let hold_reason = match self.config().policy.on_ledger_error {
                    crate::core::config::OnLedgerError::Reject => Some(LEDGER_DOWN_REJECT.to_string()),
                    crate::core::config::OnLedgerError::Accept => None,
                };
                CompleteAction {
                    log: LogLine::error(format!("{what}: requeued after it finished, re-run not priced: {e}")),
                    rerun: hold_reason.map(|r| RerunAction { admin_comment: relink(token), hold_reason: Some(r) }),
                }
            }
        }
    }
}

/// What jobcomp does with a run's record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompleteAction {
    pub log: LogLine,
    pub rerun: Option<RerunAction>,
}

/// A finished job requeued to run again: the record gets the re-run's hold token;
/// with `hold_reason` it is held (priority 0, a user hold its owner's release
/// re-checks) instead of running without a budget.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RerunAction {
    pub admin_comment: String,
    pub hold_reason: Option<String>,
}

/// Which of asbb's completion hooks slurm.conf loads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CompletionHooksLoaded {
    /// `JobCompType=jobcomp/asbb`.
    pub jobcomp: bool,
    /// `asbb` in `PrEpPlugins`.
    pub prep: bool,
    /// `asbb` is not the first of several PrEp plugins.
    pub prep_not_first: bool,
}

impl CompletionHooksLoaded {
    /// From slurm.conf's `JobCompType` and `PrEpPlugins`.
    pub fn from_conf(job_comp_type: Option<&str>, prep_plugins: Option<&str>) -> CompletionHooksLoaded {
        let is_asbb = |name: &str| matches!(name.trim(), "asbb" | "prep/asbb");
        let preps: Vec<&str> = prep_plugins.unwrap_or("").split(',').filter(|p| !p.trim().is_empty()).collect();
        let position = preps.iter().position(|p| is_asbb(p));
        CompletionHooksLoaded {
            jobcomp: job_comp_type.map(str::trim) == Some("jobcomp/asbb"),
            prep: position.is_some(),
            prep_not_first: position.is_some_and(|i| i > 0),
        }
    }
}

/// The line a plugin logs at start when asbb.toml's `completion_hook` and slurm.conf
/// disagree, or `None` when they agree.
pub fn completion_setup(expected: CompletionHook, loaded: CompletionHooksLoaded) -> Option<LogLine> {
    let toml = format!("asbb.toml says completion_hook = \"{}\"", expected.as_str());
    let text = match (expected, loaded.jobcomp, loaded.prep) {
        (_, false, false) => format!(
            "slurm.conf loads no asbb completion hook (JobCompType=jobcomp/asbb or PrEpPlugins=asbb): \
             jobs are held at submit but not charged when they end, and their holds stay until \
             `asbb-admin reconcile` ({toml})"
        ),
        (CompletionHook::Jobcomp, false, true) => format!(
            "{toml} but slurm.conf loads PrEpPlugins=asbb, not JobCompType=jobcomp/asbb: \
             set completion_hook = \"prep\" or change slurm.conf"
        ),
        (CompletionHook::Prep, true, false) => format!(
            "{toml} but slurm.conf loads JobCompType=jobcomp/asbb, not PrEpPlugins=asbb: \
             set completion_hook = \"jobcomp\" or change slurm.conf"
        ),
        (_, true, true) => format!(
            "{toml}, and slurm.conf loads both JobCompType=jobcomp/asbb and PrEpPlugins=asbb: \
             each run is still settled once, but remove the one you do not use"
        ),
        (CompletionHook::Prep, false, true) if loaded.prep_not_first => format!(
            "{toml}: list asbb first in PrEpPlugins, since slurmctld skips the PrEp plugins \
             after one that fails, and a job whose end asbb misses is settled only by \
             `asbb-admin reconcile`"
        ),
        _ => return None,
    };
    Some(LogLine::error(text))
}

/// Whether two readings of a job cost alike: the same request but for its id and
/// name, or both passing, or both unreadable, for the same reason.
fn same_cost(a: &Result<ReadRequest, FieldError>, b: &Result<ReadRequest, FieldError>) -> bool {
    match (a, b) {
        (Ok(ReadRequest::Priced(a)), Ok(ReadRequest::Priced(b))) => {
            JobRequest { job_id: None, job_name: None, ..a.clone() }
                == JobRequest { job_id: None, job_name: None, ..b.clone() }
        }
        _ => a == b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loaded(job_comp_type: &str, prep_plugins: &str) -> CompletionHooksLoaded {
        CompletionHooksLoaded::from_conf(Some(job_comp_type), Some(prep_plugins))
    }

    #[test]
    fn completion_setup_warns_when_slurm_conf_and_asbb_toml_disagree() {
        use CompletionHook::{Jobcomp, Prep};
        assert_eq!(completion_setup(Jobcomp, loaded("jobcomp/asbb", "")), None);
        assert_eq!(completion_setup(Prep, loaded("jobcomp/filetxt", "asbb,script")), None);
        assert_eq!(completion_setup(Prep, loaded("jobcomp/none", " prep/asbb ")), None);
        let text = |hook, l| completion_setup(hook, l).map(|line| line.text).unwrap_or_default();
        assert!(text(Jobcomp, loaded("jobcomp/filetxt", "")).starts_with("slurm.conf loads no asbb completion hook"));
        assert!(text(Prep, loaded("jobcomp/asbb", "")).contains("not PrEpPlugins=asbb"));
        assert!(text(Jobcomp, loaded("jobcomp/filetxt", "asbb")).contains("not JobCompType=jobcomp/asbb"));
        assert!(text(Prep, loaded("jobcomp/asbb", "asbb")).contains("loads both"));
        assert!(text(Prep, loaded("jobcomp/filetxt", "script,asbb")).contains("list asbb first"));
    }
}
