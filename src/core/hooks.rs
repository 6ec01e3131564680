// SPDX-License-Identifier: GPL-2.0-or-later
//! What the plugins call: one function per SLURM hook, each returning a plain
//! action for the glue to apply. Policy lives here (exempt, ledger errors, messages);
//! the glue only copies fields in and applies the action.

use crate::core::config::Config;
use crate::core::fields::{CompletionFields, SubmitFields};

/// Which ESLURM code the glue returns when a job is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefuseCode {
    /// ESLURM_ACCOUNTING_POLICY: "Job violates accounting/QOS policy ..."
    AccountingPolicy,
    /// ESLURM_INVALID_ACCOUNT
    InvalidAccount,
    /// ESLURM_INVALID_TIME_LIMIT
    InvalidTimeLimit,
    /// ESLURM_INVALID_TRES / bad job spec
    InvalidRequest,
    /// The ledger cannot answer and policy is to fail closed.
    LedgerUnavailable,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubmitAction {
    /// Let the job through untouched.
    Pass { log: Option<String> },
    /// Funds held: set `admin_comment`; `note` (if any) is shown to the user.
    Accept { admin_comment: String, note: Option<String>, log: String },
    /// Submit held (`priority = 0`) with `reason` shown in `scontrol show job`.
    Hold { admin_comment: String, reason: String, log: String },
    /// Refuse with `err_msg` and `code`.
    Refuse { err_msg: String, code: RefuseCode, log: String },
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
    Allow { admin_comment: Option<String>, log: Option<String> },
    /// A release that does not fit: refuse the update, the job stays held with `reason`.
    KeepHeld { reason: String, code: RefuseCode, log: String },
    /// Refuse the update (e.g. a bigger job that no longer fits).
    Refuse { code: RefuseCode, log: String },
}

use crate::core::budget::{Budget, BudgetError, Decision, Modified, Reconciled};
use crate::core::fields::{effective_update, hold_token, with_hold_token, Caller, ReadRequest};
use crate::core::ledger::OpenMode;
use std::path::{Path, PathBuf};

fn ledger_identity(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

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
const LEDGER_DOWN_ACCEPT: &str =
    "asbb: the budget ledger is unavailable; job accepted without a budget check and will be charged when it ends";

/// The plugins' state: the config read at init and the ledger, opened on first use
/// and reopened after an error.
pub struct Hooks {
    config: Config,
    budget: Option<Budget>,
    checkpointer: Option<crate::core::ledger::Checkpointer>,
    /// Device and inode of the ledger file the open connection uses.
    ledger_identity: Option<(u64, u64)>,
    /// Tests prove a panic cannot take slurmctld down: a job with this name panics.
    panic_job_name: Option<String>,
}

impl Hooks {
    pub fn new(config: Config) -> Hooks {
        let panic_job_name = std::env::var("ASBB_TEST_PANIC_JOB_NAME").ok().filter(|n| !n.is_empty());
        Hooks { config, budget: None, checkpointer: None, ledger_identity: None, panic_job_name }
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Replaces the config (reconfigure); the ledger is reopened on next use.
    pub fn set_config(&mut self, config: Config) {
        self.config = config;
        self.budget = None;
        self.checkpointer = None;
    }

    fn budget(&mut self) -> Result<&mut Budget, BudgetError> {
        // A ledger restored from backup, moved away or replaced must not be written
        // through a connection to the old file: one stat per call notices.
        if self.budget.is_some() && ledger_identity(&self.config.ledger_path) != self.ledger_identity {
            // The checkpointer's connection is on the old file too.
            self.budget = None;
            self.checkpointer = None;
        }
        if self.budget.is_none() {
            let path = &self.config.ledger_path;
            let ledger = crate::core::ledger::Ledger::open(
                path,
                OpenMode::MustExist,
                self.config.policy.ledger_busy_timeout_ms,
            )?
            .without_autocheckpoint()?;
            if self.checkpointer.is_none() {
                self.checkpointer = Some(crate::core::ledger::Checkpointer::start(path));
            }
            self.budget = Some(Budget::with_ledger(self.config.clone(), ledger));
            self.ledger_identity = ledger_identity(&self.config.ledger_path);
        }
        Ok(self.budget.as_mut().expect("just opened"))
    }

    /// After a ledger error the connection is dropped, so a repaired or replaced
    /// ledger file is picked up by the next job.
    /// A busy ledger (another writer past the bounded wait) keeps its connection.
    fn forget_ledger_on(&mut self, err: &BudgetError) {
        if err.is_ledger() && !matches!(err, BudgetError::Ledger(l) if l.is_busy()) {
            self.budget = None;
        }
    }

    pub fn on_submit(&mut self, fields: &SubmitFields, now: i64) -> SubmitAction {
        if fields.uid == 0 {
            return SubmitAction::Pass { log: None };
        }
        if self.panic_job_name.is_some() && fields.name == self.panic_job_name {
            panic!("ASBB_TEST_PANIC_JOB_NAME matched job name {:?}", fields.name);
        }
        let req = match fields.to_request(&self.config) {
            Ok(ReadRequest::Priced(r)) => r,
            Ok(ReadRequest::Exempt(why)) => {
                return SubmitAction::Pass { log: Some(format!("uid {} passes: {why}", fields.uid)) }
            }
            Err(e) => {
                let code = match e {
                    crate::core::fields::FieldError::NoAccount => RefuseCode::InvalidAccount,
                    crate::core::fields::FieldError::NoTimeLimit => RefuseCode::InvalidTimeLimit,
                    _ => RefuseCode::InvalidRequest,
                };
                let err_msg = e.to_string();
                return SubmitAction::Refuse { log: format!("refused uid {}: {err_msg}", fields.uid), err_msg, code };
            }
        };
        let who = format!("{} account={} partition={}", req.user, req.account, req.partition);
        let meta =
            match crate::core::metadata::parse(fields.comment.as_deref(), &fields.environment, fields.wckey.as_deref())
            {
                Ok(m) => m,
                Err(e) => {
                    let err_msg = e.to_string();
                    // Budget policy, not a resource spec: the first line says exactly what is wrong.
                    return SubmitAction::Refuse {
                        log: format!("refused {who}: {err_msg}"),
                        err_msg,
                        code: RefuseCode::AccountingPolicy,
                    };
                }
            };
        let result = self.budget().and_then(|b| b.submit(&req, &meta, now));
        match result {
            Ok(Decision::Accept { token, estimate, available_after }) => SubmitAction::Accept {
                admin_comment: with_hold_token(fields.admin_comment.as_deref(), &token),
                note: None,
                log: format!("accepted {who}: held {estimate} (token {token}, {available_after} left)"),
            },
            Ok(Decision::Hold { token, estimate, reason }) => SubmitAction::Hold {
                admin_comment: with_hold_token(fields.admin_comment.as_deref(), &token),
                log: format!("held {who}: estimate {estimate} (token {token}): {reason}"),
                reason,
            },
            Ok(Decision::Reject { reason, code, .. }) => {
                SubmitAction::Refuse { log: format!("refused {who}: {reason}"), err_msg: reason, code }
            }
            Ok(Decision::Exempt { reason }) => SubmitAction::Pass { log: Some(format!("{who} passes: {reason}")) },
            Err(e) => {
                self.forget_ledger_on(&e);
                self.ledger_down(fields, &who, &e)
            }
        }
    }

    fn ledger_down(&self, fields: &SubmitFields, who: &str, e: &BudgetError) -> SubmitAction {
        match self.config.policy.on_ledger_error {
            crate::core::config::OnLedgerError::Reject => SubmitAction::Refuse {
                err_msg: LEDGER_DOWN_REJECT.to_string(),
                code: RefuseCode::LedgerUnavailable,
                log: format!("error: refused {who} (on_ledger_error=reject): {e}"),
            },
            crate::core::config::OnLedgerError::Accept => SubmitAction::Accept {
                admin_comment: fields.admin_comment.clone().unwrap_or_default(),
                note: Some(LEDGER_DOWN_ACCEPT.to_string()),
                log: format!("error: accepted {who} unchecked (on_ledger_error=accept): {e}"),
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
            return ModifyAction::Allow { admin_comment: None, log: None };
        };
        let Some(effective) = effective_update(record, merged, call.caller, call.pending) else {
            // slurmctld refuses it after this call ("Invalid user id"); nothing to follow.
            return ModifyAction::Allow {
                admin_comment: None,
                log: Some(format!(
                    "job {}: update from a user who is neither its owner nor an operator; ledger unchanged",
                    record.job_id
                )),
            };
        };
        let approved = call.releasing && call.caller == Caller::Operator;
        let req = match effective.to_request(&self.config) {
            Ok(ReadRequest::Priced(r)) => r,
            Ok(ReadRequest::Exempt(why)) => return self.modify_to_exempt(&token, record.job_id, &why, call, approved),
            Err(e) => {
                return ModifyAction::Refuse {
                    code: RefuseCode::InvalidRequest,
                    log: format!("refused update of {token}: {e}"),
                }
            }
        };
        let job = match req.job_id {
            Some(id) => format!("job {id}"),
            None => format!("token {token}"),
        };
        match self.budget().and_then(|b| b.modify(&token, &req, call.releasing, approved, now)) {
            Ok(Modified::Repriced { old_hold, new_hold }) => {
                ModifyAction::Allow { admin_comment: None, log: Some(format!("{job}: hold {old_hold} -> {new_hold}")) }
            }
            Ok(Modified::Released { hold }) => {
                ModifyAction::Allow { admin_comment: None, log: Some(format!("{job}: released, held {hold}")) }
            }
            Ok(Modified::StillHeld { reason }) => ModifyAction::KeepHeld {
                log: format!("{job}: release refused, stays held: {reason}"),
                reason,
                code: RefuseCode::AccountingPolicy,
            },
            Ok(Modified::Refused { reason }) => ModifyAction::Refuse {
                code: RefuseCode::AccountingPolicy,
                log: format!("{job}: update refused: {reason}"),
            },
            Ok(Modified::Unchanged) => ModifyAction::Allow { admin_comment: None, log: None },
            Err(BudgetError::UnknownToken(_)) => ModifyAction::Allow {
                admin_comment: None,
                log: Some(format!("{job}: token {token} is not in the ledger")),
            },
            Err(e) => {
                self.forget_ledger_on(&e);
                match self.config.policy.on_ledger_error {
                    crate::core::config::OnLedgerError::Reject => ModifyAction::Refuse {
                        code: RefuseCode::LedgerUnavailable,
                        log: format!("error: {job}: update refused (on_ledger_error=reject): {e}"),
                    },
                    crate::core::config::OnLedgerError::Accept => ModifyAction::Allow {
                        admin_comment: None,
                        log: Some(format!("error: {job}: update allowed unchecked (on_ledger_error=accept): {e}")),
                    },
                }
            }
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
        match self.budget().and_then(|b| b.job(token)) {
            Ok(Some(job)) if matches!(job.state.as_str(), "awaiting_approval" | "awaiting_funds") => {
                let reason = format!(
                    "asbb: job {job_id} still waits ({}); an exempt partition does not release it, ask your admins",
                    job.state.replace('_', " ")
                );
                ModifyAction::KeepHeld {
                    log: format!("job {job_id}: release refused, stays held ({why}): {reason}"),
                    reason,
                    code: RefuseCode::AccountingPolicy,
                }
            }
            Ok(_) => ModifyAction::Allow { admin_comment: None, log: None },
            Err(e) => {
                self.forget_ledger_on(&e);
                ModifyAction::Refuse {
                    code: RefuseCode::LedgerUnavailable,
                    log: format!("error: job {job_id}: release refused, the ledger cannot answer: {e}"),
                }
            }
        }
    }

    /// Reconciles one ended run; returns the log line (starting `error:` on failure).
    pub fn on_complete(&mut self, fields: &CompletionFields, now: i64) -> String {
        let completion = match fields.to_completion() {
            Ok(c) => c,
            Err(e) => return format!("error: job {}: cannot read its allocation: {e}", fields.job_id),
        };
        let what = format!("job {} ({})", completion.job_id, completion.state.as_str());
        // Root's jobs pass job_submit untouched; they are not charged either.
        if fields.uid == 0 && completion.hold_token.is_none() {
            return format!("{what}: not tracked (root's job)");
        }
        match self.budget().and_then(|b| b.reconcile(&completion, now)) {
            Ok(Reconciled::Charged { account, cost, released }) => {
                format!("{what} account={account}: charged {cost}, released {released}")
            }
            Ok(Reconciled::Duplicate) => format!("{what}: already reconciled"),
            Ok(Reconciled::NotTracked { reason }) => format!("{what}: not tracked ({reason})"),
            Err(e) => {
                self.forget_ledger_on(&e);
                format!("error: {what}: not reconciled, `asbb-admin reconcile` will settle it: {e}")
            }
        }
    }
}
