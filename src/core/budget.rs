// SPDX-License-Identifier: GPL-2.0-or-later
//! Budget decisions over the ledger: accounts and deposits, check-and-hold,
//! modify, reconcile, release, and verify.
//!
//! The money model, in one place:
//! - An account's money comes from allocations, each valid in a window.
//! - A hold is a pending debit on the account (not on an allocation). Holds are
//!   placed at submit, grown or shrunk by modify, and released when the job ends.
//! - A charge posts a run's actual cost against the account's active allocations,
//!   the one ending first first; any part no allocation covers is overdraft.
//! - available = Σ active allocations (amount − debited) − overdraft − open holds
//!   + credit limit.
//!
//! Requeued jobs: the hold covers one final run per task. A run that ends in a
//! requeue SLURM announces (`scontrol requeue`, requeue on exit: state REQUEUED) is
//! charged and keeps the hold for the next run. The first other run to end (of each
//! job id) releases that task's share of the hold; a later run of the same job id
//! (after a node-failure requeue, which SLURM does not announce) is charged in full
//! with no hold left behind it. Every run is charged exactly once, keyed by cluster,
//! job id, submit time and restart count (see `JobCompletion::run_key`).

use crate::core::config::{Config, MissingPolicy};
use crate::core::cost::{self, CostError};
use crate::core::job::{EndState, JobCompletion, JobRequest};
use crate::core::ledger::postings::{self, adjust_hold, audit, post_cost};
use crate::core::ledger::{
    AccountRow, AllocationRow, EntryKind, JobRow, JobState, Ledger, LedgerError, NewEntry, OpenMode, Tx, JOB_COLS,
};
use crate::core::metadata::JobMetadata;
use crate::core::money::Money;
use chrono::{DateTime, NaiveDate, Utc};
use rusqlite::{params, OptionalExtension};
use serde::Serialize;

/// Seconds in a day.
pub const DAY_S: i64 = 86_400;

#[derive(Debug, thiserror::Error)]
pub enum BudgetError {
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    #[error("unknown account '{0}'")]
    UnknownAccount(String),
    #[error("account '{0}' already exists")]
    DuplicateAccount(String),
    #[error("unknown hold token '{0}'")]
    UnknownToken(String),
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Cost(#[from] CostError),
    #[error("amount overflow")]
    Overflow,
}

impl BudgetError {
    pub fn is_ledger(&self) -> bool {
        matches!(self, BudgetError::Ledger(_))
    }
}

/// Why a job or change is refused; the glue returns the matching ESLURM code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefuseCode {
    /// ESLURM_ACCOUNTING_POLICY: "Job violates accounting/QOS policy ..."
    AccountingPolicy,
    /// ESLURM_INVALID_ACCOUNT
    InvalidAccount,
    /// ESLURM_INVALID_TIME_LIMIT
    InvalidTimeLimit,
    /// ESLURM_INVALID_PARTITION_NAME
    InvalidPartition,
    /// ESLURM_INVALID_TRES / bad job spec
    InvalidRequest,
    /// The ledger cannot answer and policy is to fail closed.
    LedgerUnavailable,
}

/// What the budget says about a submission.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "decision", rename_all = "snake_case")]
pub enum Decision {
    /// Funds held under `token`.
    Accept { token: String, estimate: Money, available_after: Money },
    /// Submitted held; `token` links the job for approval or a later re-check.
    Hold { token: String, estimate: Money, reason: String },
    /// Refused; `reason` is the one line the user sees.
    Reject {
        reason: String,
        #[serde(skip)]
        code: RefuseCode,
        estimate: Option<Money>,
    },
    /// Not priced (exempt account or partition), with why.
    Exempt { reason: String },
}

/// What a reconcile did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Reconciled {
    Charged {
        account: String,
        cost: Money,
        released: Money,
    },
    /// The same run was reconciled before: nothing changed.
    Duplicate,
    /// No budget account to charge (exempt, or unknown and exempt by policy).
    NotTracked {
        reason: String,
    },
}

/// What a re-run of a finished job (requeued by its owner or an admin) got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rerun {
    /// Funds held for the next run under a new token.
    Held { token: String, hold: Money },
    /// The account cannot cover it, it needs approval, or the job was denied: it
    /// waits, held, under a new token; a release re-checks it.
    Waiting { token: String, reason: String },
}

/// What a modify did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Modified {
    /// The hold now matches the new estimate.
    Repriced { old_hold: Money, new_hold: Money },
    /// A held job's release was re-checked: it now holds funds.
    Released { hold: Money },
    /// Still does not fit; stays held.
    StillHeld { reason: String },
    /// The change does not fit the budget.
    Refused { reason: String },
    /// Nothing to do (settled job, unchanged estimate).
    Unchanged,
}

/// An account's balance at one moment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Balance {
    pub account: String,
    pub status: String,
    /// Σ active allocations.
    pub allocated: Money,
    /// Charged against active allocations, plus overdraft.
    pub charged: Money,
    pub held: Money,
    pub credit_limit: Money,
    pub available: Money,
    /// Start of the earliest active allocation, end of the latest (unix s).
    pub valid_from: Option<i64>,
    pub valid_until: Option<i64>,
}

/// One job as users see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct JobSummary {
    pub job_id: Option<u32>,
    pub account: String,
    pub partition: String,
    pub submitted_at: i64,
    pub state: String,
    pub estimate: Money,
    pub held: Money,
    pub charged: Money,
    pub token: String,
    pub user: String,
    /// Why the job waits, for jobs submitted held.
    pub reason: Option<String>,
}

/// The columns `job_summary_from_row` reads, from `jobs j JOIN accounts a`.
pub(crate) const JOB_SUMMARY_COLS: &str = "j.job_id, a.name, j.partition, j.submitted_at, j.state, j.estimate_micros, \
     j.held_micros, j.charged_micros, j.token, j.user_name, j.reason";

pub(crate) fn job_summary_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<JobSummary> {
    Ok(JobSummary {
        job_id: r.get(0)?,
        account: r.get(1)?,
        partition: r.get(2)?,
        submitted_at: r.get(3)?,
        state: r.get(4)?,
        estimate: Money::from_micros(r.get(5)?),
        held: Money::from_micros(r.get(6)?),
        charged: Money::from_micros(r.get(7)?),
        token: r.get(8)?,
        user: r.get(9)?,
        reason: r.get(10)?,
    })
}

/// The budget core: config + ledger.
pub struct Budget {
    pub config: Config,
    pub ledger: Ledger,
}

fn sq(ledger: &Ledger) -> impl Fn(rusqlite::Error) -> BudgetError + '_ {
    move |e| BudgetError::Ledger(ledger.err(e))
}

/// UTC midnight of a `YYYY-MM-DD` date.
pub fn parse_date(text: &str) -> Result<i64, BudgetError> {
    let d = NaiveDate::parse_from_str(text.trim(), "%Y-%m-%d")
        .map_err(|_| BudgetError::Invalid(format!("date '{text}' is not YYYY-MM-DD")))?;
    Ok(d.and_hms_opt(0, 0, 0).map(|t| t.and_utc().timestamp()).unwrap_or(0))
}

/// `YYYY-MM-DD` of a unix time (UTC).
pub fn format_date(unix_s: i64) -> String {
    DateTime::<Utc>::from_timestamp(unix_s, 0)
        .map(|t| t.format("%Y-%m-%d").to_string())
        .unwrap_or_else(|| unix_s.to_string())
}

/// `YYYY-MM-DD HH:MM:SS` of a unix time (UTC).
pub fn format_time(unix_s: i64) -> String {
    DateTime::<Utc>::from_timestamp(unix_s, 0)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_else(|| unix_s.to_string())
}

/// Far future for open-ended allocations (9999-12-31).
pub const FOREVER: i64 = 253_402_214_400;

/// Sums in i128 (no i64 overflow however many large allocations), saturated to Money.
fn saturate(micros: i128) -> Money {
    Money::from_micros(micros.clamp(i64::MIN as i128, i64::MAX as i128) as i64)
}

fn available_of(account: &AccountRow, allocations: &[AllocationRow], now: i64) -> Money {
    let active: i128 = allocations.iter().filter(|a| a.is_active(now)).map(|a| a.remaining().micros() as i128).sum();
    saturate(
        active - account.overdraft.micros() as i128 - account.held.micros() as i128
            + account.credit_limit.micros() as i128,
    )
}

impl Budget {
    pub fn open(config: Config, mode: OpenMode) -> Result<Budget, BudgetError> {
        let ledger = Ledger::open(&config.ledger_path, mode, config.policy.ledger_busy_timeout_ms)?;
        Ok(Budget { config, ledger })
    }

    pub fn with_ledger(config: Config, ledger: Ledger) -> Budget {
        Budget { config, ledger }
    }

    /// The ledger's schema version.
    pub fn schema_version(&self) -> Result<u32, BudgetError> {
        Ok(self.ledger.schema_version()?)
    }

    /// Upgrades the ledger to [`crate::core::ledger::LATEST_SCHEMA`] (`asbb-admin migrate`,
    /// on a ledger opened with `Ledger::open_for_migration`); the names applied.
    pub fn migrate(&mut self) -> Result<Vec<&'static str>, BudgetError> {
        Ok(self.ledger.migrate()?)
    }

    /// Copies the ledger into a new private file at `path` (see `Ledger::copy_to`).
    pub fn backup_to(&self, path: &std::path::Path) -> Result<(), BudgetError> {
        Ok(self.ledger.copy_to(path)?)
    }

    // ----- accounts and deposits ---------------------------------------------------

    /// Creates a budget account with its first allocation (`limit`, may be zero).
    #[allow(clippy::too_many_arguments)]
    pub fn create_account(
        &mut self,
        name: &str,
        limit: Money,
        valid_from: i64,
        valid_until: i64,
        credit_limit: Money,
        actor: &str,
        now: i64,
    ) -> Result<(), BudgetError> {
        validate_name(name)?;
        if valid_until <= valid_from {
            return Err(BudgetError::Invalid(format!(
                "end date {} is not after start date {}",
                format_date(valid_until - DAY_S),
                format_date(valid_from)
            )));
        }
        let path = self.ledger.path().to_path_buf();
        let e = move |source| BudgetError::Ledger(LedgerError::Sqlite { path: path.clone(), source });
        let tx = Tx::write(&mut self.ledger)?;
        if tx.account_by_name(name).map_err(&e)?.is_some() {
            return Err(BudgetError::DuplicateAccount(name.to_string()));
        }
        tx.tx
            .execute(
                "INSERT INTO accounts (name, credit_limit_micros, created_at) VALUES (?1, ?2, ?3)",
                params![name, credit_limit.micros(), now],
            )
            .map_err(&e)?;
        let account_id = tx.tx.last_insert_rowid();
        if !limit.is_zero() {
            let key = format!("account-create:{name}:{account_id}");
            postings::deposit(
                &tx,
                account_id,
                limit,
                valid_from,
                valid_until,
                Some("initial allocation"),
                &key,
                actor,
                now,
                None,
            )
            .map_err(&e)?;
        }
        audit(
            &tx,
            actor,
            now,
            "account create",
            &format!("{name} limit={} credit_limit={}", limit.to_exact_string(), credit_limit.to_exact_string()),
        )
        .map_err(&e)?;
        Ok(tx.commit()?)
    }

    /// Adds an allocation. A replayed `request_key` changes nothing and returns false.
    #[allow(clippy::too_many_arguments)]
    pub fn deposit(
        &mut self,
        account: &str,
        amount: Money,
        valid_from: i64,
        valid_until: i64,
        memo: Option<&str>,
        request_key: Option<&str>,
        actor: &str,
        now: i64,
    ) -> Result<bool, BudgetError> {
        if amount.is_zero() || amount.is_negative() {
            return Err(BudgetError::Invalid("deposit amount must be above zero".into()));
        }
        if valid_until <= valid_from {
            return Err(BudgetError::Invalid(format!(
                "valid-until {} is not after valid-from {}",
                format_date(valid_until - DAY_S),
                format_date(valid_from)
            )));
        }
        let path = self.ledger.path().to_path_buf();
        let e = move |source| BudgetError::Ledger(LedgerError::Sqlite { path: path.clone(), source });
        let tx = Tx::write(&mut self.ledger)?;
        let acc =
            tx.account_by_name(account).map_err(&e)?.ok_or_else(|| BudgetError::UnknownAccount(account.to_string()))?;
        let key = match request_key {
            Some(k) => format!("deposit:{k}"),
            None => format!("deposit:{}", tx.new_token().map_err(&e)?),
        };
        if tx.txn_exists(&key).map_err(&e)? {
            return Ok(false);
        }
        postings::deposit(&tx, acc.id, amount, valid_from, valid_until, memo, &key, actor, now, None).map_err(&e)?;
        audit(&tx, actor, now, "deposit", &format!("{account} {} {}", amount.to_exact_string(), memo.unwrap_or("")))
            .map_err(&e)?;
        tx.commit()?;
        Ok(true)
    }

    pub fn accounts(&self) -> Result<Vec<AccountRow>, BudgetError> {
        let e = sq(&self.ledger);
        let mut stmt = self
            .ledger
            .conn
            .prepare(&format!("SELECT {} FROM accounts ORDER BY name", crate::core::ledger::ACCOUNT_COLS))
            .map_err(&e)?;
        let rows = stmt.query_map([], crate::core::ledger::account_from_row).map_err(&e)?;
        rows.collect::<Result<Vec<_>, _>>().map_err(e)
    }

    pub fn balance(&mut self, account: &str, now: i64) -> Result<Balance, BudgetError> {
        let path = self.ledger.path().to_path_buf();
        let e = move |source| BudgetError::Ledger(LedgerError::Sqlite { path: path.clone(), source });
        let tx = Tx::read(&mut self.ledger)?;
        let acc =
            tx.account_by_name(account).map_err(&e)?.ok_or_else(|| BudgetError::UnknownAccount(account.to_string()))?;
        let allocs = tx.allocations(acc.id).map_err(&e)?;
        Ok(balance_of(&acc, &allocs, now))
    }

    pub fn allocations(&mut self, account: &str) -> Result<Vec<AllocationRow>, BudgetError> {
        let path = self.ledger.path().to_path_buf();
        let e = move |source| BudgetError::Ledger(LedgerError::Sqlite { path: path.clone(), source });
        let tx = Tx::read(&mut self.ledger)?;
        let acc =
            tx.account_by_name(account).map_err(&e)?.ok_or_else(|| BudgetError::UnknownAccount(account.to_string()))?;
        tx.allocations(acc.id).map_err(e)
    }

    // ----- the submit path -----------------------------------------------------------

    /// Prices and decides without writing anything (a quote).
    pub fn quote(&mut self, req: &JobRequest, now: i64) -> Result<Decision, BudgetError> {
        let tx = Tx::read(&mut self.ledger)?;
        let verdict = decide(&self.config, &tx, req, "", now, false)?;
        Ok(match verdict {
            Verdict::Done(d) => d,
            // issue 6 (learning): what is left after the hold, which learning may size below the estimate.
            Verdict::Fits { estimate, hold, available, .. } => Decision::Accept {
                token: String::new(),
                estimate,
                available_after: Money::from_micros(available.micros() - hold.micros()),
            },
            Verdict::Held { estimate, reason, .. } => Decision::Hold { token: String::new(), estimate, reason },
        })
    }

    /// The plugin's decision: accept (hold written), hold, or reject, in one short
    /// write transaction.
    pub fn check_and_hold(&mut self, req: &JobRequest, now: i64) -> Result<Decision, BudgetError> {
        self.submit(req, &JobMetadata::default(), now)
    }

    /// `check_and_hold` for a job that carries metadata: a named grant must exist,
    /// be open and fund the job's account; `max_cost` must cover the estimate.
    pub fn submit(&mut self, req: &JobRequest, meta: &JobMetadata, now: i64) -> Result<Decision, BudgetError> {
        let path = self.ledger.path().to_path_buf();
        let e = move |source| BudgetError::Ledger(LedgerError::Sqlite { path: path.clone(), source });
        let tx = Tx::write(&mut self.ledger)?;
        let domain = meta.research_domain.as_deref().unwrap_or("");
        let verdict = decide(&self.config, &tx, req, domain, now, false)?;
        if let Some(refusal) = check_metadata(&tx, &verdict, meta).map_err(&e)? {
            return Ok(refusal);
        }
        let decision = match verdict {
            Verdict::Done(d) => return Ok(d),
            // issue 6 (learning): hold `hold` (= the estimate unless [learning] sized it down).
            Verdict::Fits { account, estimate, hold, available } => {
                let token = tx.new_token().map_err(&e)?;
                insert_job(&tx, &token, &account, req, estimate, hold, JobState::Held, None, Some(meta), now)
                    .map_err(&e)?;
                postings::hold(&tx, &token, account.id, hold, req.job_id, now, "submit").map_err(&e)?;
                Decision::Accept {
                    token,
                    estimate,
                    available_after: Money::from_micros(available.micros() - hold.micros()),
                }
            }
            Verdict::Held { account, estimate, reason, state } => {
                let token = tx.new_token().map_err(&e)?;
                insert_job(&tx, &token, &account, req, estimate, Money::ZERO, state, Some(&reason), Some(meta), now)
                    .map_err(&e)?;
                Decision::Hold { token, estimate, reason }
            }
        };
        tx.commit()?;
        Ok(decision)
    }

    /// Re-prices a job whose request changed, or re-checks a held job being released.
    /// `approved` skips the approval threshold (an admin approved the job).
    pub fn modify(
        &mut self,
        token: &str,
        req: &JobRequest,
        releasing: bool,
        approved: bool,
        now: i64,
    ) -> Result<Modified, BudgetError> {
        let path = self.ledger.path().to_path_buf();
        let e = move |source| BudgetError::Ledger(LedgerError::Sqlite { path: path.clone(), source });
        let tx = Tx::write(&mut self.ledger)?;
        let job = tx.job(token).map_err(&e)?.ok_or_else(|| BudgetError::UnknownToken(token.to_string()))?;
        // The hold sits on the account the job was priced for; a job that moved would be
        // held on one account and charged and released on the other.
        if job.state.is_open() {
            let priced_for = tx.account_by_id(job.account_id).map_err(&e)?.name;
            if !priced_for.eq_ignore_ascii_case(&req.account) {
                return Ok(Modified::Refused {
                    reason: format!(
                        "asbb: this job's funds are held on account '{priced_for}'; to run it under '{}', cancel it and submit it again with -A {}",
                        req.account, req.account
                    ),
                });
            }
        }
        let domain = job.research_domain.clone().unwrap_or_default();
        let request_json = serde_json::to_string(req).map_err(|err| BudgetError::Invalid(err.to_string()))?;
        let outcome = match job.state {
            JobState::Held => {
                if job.tasks_done > 0 {
                    return Ok(Modified::Unchanged);
                }
                let (estimate, new_hold) = if job.tasks_total > 1 {
                    // An array: an update reaches one split-off task (`123_5`) or the
                    // unsplit rest, never the whole. It may grow the hold by what it adds
                    // per task; it never shrinks the hold of the other tasks.
                    let one_task = JobRequest { array_tasks: 1, ..req.clone() };
                    let per_task_new = cost::estimate(&self.config, &one_task)?.micros();
                    let per_task_old = job.estimate.micros() / job.tasks_total as i64;
                    let grow = (per_task_new - per_task_old)
                        .max(0)
                        .checked_mul(req.array_tasks.max(1) as i64)
                        .ok_or(BudgetError::Overflow)?;
                    (
                        job.estimate.checked_add(Money::from_micros(grow)).ok_or(BudgetError::Overflow)?,
                        job.held.checked_add(Money::from_micros(grow)).ok_or(BudgetError::Overflow)?,
                    )
                } else {
                    let estimate = cost::estimate(&self.config, req)?;
                    // issue 6 (learning): the new hold is sized like a submit's (= estimate when learning is off).
                    let learning = &self.config.learning;
                    let new_hold = crate::core::learning::hold_for(
                        &tx,
                        job.account_id,
                        &req.partition,
                        &domain,
                        estimate,
                        learning,
                    )
                    .map_err(&e)?;
                    (estimate, new_hold)
                };
                let delta = new_hold.micros() - job.held.micros();
                if delta == 0 {
                    Modified::Unchanged
                } else {
                    if delta > 0 {
                        let acc = tx.account_by_id(job.account_id).map_err(&e)?;
                        let allocs = tx.allocations(acc.id).map_err(&e)?;
                        let available = available_of(&acc, &allocs, now);
                        if available.micros() < delta {
                            return Ok(Modified::Refused {
                                reason: format!(
                                    "asbb: account '{}' cannot cover this change: it needs {} more, {} available",
                                    acc.name,
                                    Money::from_micros(delta),
                                    available.max(Money::ZERO)
                                ),
                            });
                        }
                    }
                    let key = next_modify_key(&tx, token).map_err(&e)?;
                    adjust_hold(&tx, &key, &job, Money::from_micros(delta), now).map_err(&e)?;
                    tx.tx
                        .execute(
                            "UPDATE jobs SET estimate_micros = ?2, request_json = ?3, partition = ?4 WHERE token = ?1",
                            params![token, estimate.micros(), request_json, req.partition],
                        )
                        .map_err(&e)?;
                    Modified::Repriced { old_hold: job.held, new_hold }
                }
            }
            JobState::AwaitingApproval | JobState::AwaitingFunds => {
                let estimate = cost::estimate(&self.config, req)?;
                tx.tx
                    .execute(
                        "UPDATE jobs SET estimate_micros = ?2, request_json = ?3, partition = ?4 WHERE token = ?1",
                        params![token, estimate.micros(), request_json, req.partition],
                    )
                    .map_err(&e)?;
                if !releasing {
                    tx.commit()?;
                    return Ok(Modified::Unchanged);
                }
                let needs_approval = job.state == JobState::AwaitingApproval && !approved;
                // The approval threshold is re-checked at every release (the job may have
                // grown since it was submitted); only an operator's release approves.
                match decide(&self.config, &tx, req, &domain, now, approved)? {
                    // issue 6 (learning): place the learned hold, not necessarily the estimate.
                    Verdict::Fits { account, hold, .. } if !needs_approval => {
                        postings::hold(&tx, token, account.id, hold, req.job_id, now, "released after hold")
                            .map_err(&e)?;
                        tx.tx
                            .execute(
                                "UPDATE jobs SET held_micros = held_micros + ?2, hold_placed_micros = ?2 WHERE token = ?1",
                                params![token, hold.micros()],
                            )
                            .map_err(&e)?;
                        tx.tx
                            .execute("UPDATE jobs SET state = 'held', reason = NULL WHERE token = ?1", [token])
                            .map_err(&e)?;
                        Modified::Released { hold }
                    }
                    Verdict::Fits { .. } => Modified::StillHeld { reason: job.reason.clone().unwrap_or_default() },
                    Verdict::Held { reason, .. } => Modified::StillHeld { reason },
                    Verdict::Done(Decision::Reject { reason, .. }) => Modified::StillHeld { reason },
                    Verdict::Done(_) => Modified::Unchanged,
                }
            }
            JobState::Denied if releasing && !approved => {
                return Ok(Modified::StillHeld { reason: job.reason.clone().unwrap_or_default() })
            }
            _ => Modified::Unchanged,
        };
        tx.commit()?;
        Ok(outcome)
    }

    /// Prices one more run of a finished job that SLURM requeued (`scontrol requeue`
    /// of a COMPLETED/FAILED/... job by its owner or an admin: no job_submit call
    /// happens). The re-run is priced like a submission of one task and gets a row
    /// and token of its own. `None` when the job is not finished in the ledger (its
    /// hold still covers the next run) or is exempt now.
    pub fn price_rerun(&mut self, token: &str, job_id: u32, now: i64) -> Result<Option<Rerun>, BudgetError> {
        let path = self.ledger.path().to_path_buf();
        let e = move |source| BudgetError::Ledger(LedgerError::Sqlite { path: path.clone(), source });
        let tx = Tx::write(&mut self.ledger)?;
        let Some(job) = tx.job(token).map_err(&e)? else { return Ok(None) };
        if job.state.is_open() {
            return Ok(None);
        }
        let mut req: JobRequest =
            serde_json::from_str(&job.request_json).map_err(|err| BudgetError::Invalid(err.to_string()))?;
        req.array_tasks = 1;
        req.job_id = Some(job_id);
        // The re-run is the same job: its grant, project and domain go with it, so
        // reports and learning count its cost where the first run's went.
        let metadata_json: Option<String> = tx
            .tx
            .prepare_cached("SELECT metadata_json FROM jobs WHERE token = ?1")
            .and_then(|mut s| s.query_row([token], |r| r.get(0)))
            .map_err(&e)?;
        let meta: Option<JobMetadata> = metadata_json.as_deref().and_then(|j| serde_json::from_str(j).ok());
        let domain = job.research_domain.clone().unwrap_or_default();
        let per_task = Money::from_micros(job.estimate.micros() / job.tasks_total.max(1) as i64);
        let new_token = tx.new_token().map_err(&e)?;
        let waiting = |tx: &Tx<'_>, state: JobState, reason: String, estimate: Money| -> Result<Rerun, BudgetError> {
            let account = tx.account_by_id(job.account_id).map_err(&e)?;
            insert_job(tx, &new_token, &account, &req, estimate, Money::ZERO, state, Some(&reason), meta.as_ref(), now)
                .map_err(&e)?;
            Ok(Rerun::Waiting { token: new_token.clone(), reason })
        };
        let outcome = if job.state == JobState::Denied {
            let reason = format!("asbb: job {job_id} was denied by an admin; requeueing it does not let it run");
            waiting(&tx, JobState::Denied, reason, per_task)?
        } else {
            match decide(&self.config, &tx, &req, &domain, now, false)? {
                Verdict::Fits { account, estimate, hold, .. } => {
                    insert_job(
                        &tx,
                        &new_token,
                        &account,
                        &req,
                        estimate,
                        hold,
                        JobState::Held,
                        None,
                        meta.as_ref(),
                        now,
                    )
                    .map_err(&e)?;
                    postings::hold(&tx, &new_token, account.id, hold, Some(job_id), now, "re-run after requeue")
                        .map_err(&e)?;
                    Rerun::Held { token: new_token.clone(), hold }
                }
                Verdict::Held { estimate, reason, state, .. } => waiting(&tx, state, reason, estimate)?,
                Verdict::Done(Decision::Reject { reason, estimate, .. }) => {
                    waiting(&tx, JobState::AwaitingFunds, reason, estimate.unwrap_or(per_task))?
                }
                Verdict::Done(_) => return Ok(None),
            }
        };
        tx.commit()?;
        Ok(Some(outcome))
    }

    /// Settles provisional holds in one transaction: the jobs SLURM has get their job
    /// id (confirmed); the holds of `never_created` (SLURM refused the job after
    /// job_submit, or it was a `--test-only` probe) are released. Returns what was
    /// released, per token.
    pub fn confirm_holds(
        &mut self,
        found: &[(String, u32)],
        never_created: &[String],
        now: i64,
    ) -> Result<Vec<(String, Money)>, BudgetError> {
        let path = self.ledger.path().to_path_buf();
        let e = move |source| BudgetError::Ledger(LedgerError::Sqlite { path: path.clone(), source });
        let tx = Tx::write(&mut self.ledger)?;
        for (token, job_id) in found {
            tx.tx
                .prepare_cached("UPDATE jobs SET job_id = ?2 WHERE token = ?1 AND job_id IS NULL")
                .map_err(&e)?
                .execute(params![token, job_id])
                .map_err(&e)?;
        }
        let mut released = Vec::new();
        for token in never_created {
            let Some(job) = tx.job(token).map_err(&e)? else { continue };
            if job.job_id.is_some() || !job.state.is_open() {
                continue;
            }
            if !job.held.is_zero() {
                postings::release(&tx, &format!("release:{token}"), &job, job.held, now).map_err(&e)?;
            }
            tx.tx
                .prepare_cached(
                    "UPDATE jobs SET state = 'released', settled_at = ?2,
                       reason = 'SLURM never created the job (refused after job_submit, or --test-only)'
                     WHERE token = ?1",
                )
                .map_err(&e)?
                .execute(params![token, now])
                .map_err(&e)?;
            released.push((token.clone(), job.held));
        }
        tx.commit()?;
        Ok(released)
    }

    /// Releases the whole remaining hold of a job that never ran (or is abandoned).
    pub fn release(&mut self, token: &str, now: i64) -> Result<Money, BudgetError> {
        let path = self.ledger.path().to_path_buf();
        let e = move |source| BudgetError::Ledger(LedgerError::Sqlite { path: path.clone(), source });
        let tx = Tx::write(&mut self.ledger)?;
        let job = tx.job(token).map_err(&e)?.ok_or_else(|| BudgetError::UnknownToken(token.to_string()))?;
        let released = job.held;
        if !released.is_zero() {
            postings::release(&tx, &format!("release:{token}"), &job, released, now).map_err(&e)?;
        }
        if job.state.is_open() {
            tx.tx
                .execute("UPDATE jobs SET state = 'released', settled_at = ?2 WHERE token = ?1", params![token, now])
                .map_err(&e)?;
        }
        tx.commit()?;
        Ok(released)
    }

    /// Charges a run's actual cost and releases its share of the hold. Idempotent.
    pub fn reconcile(&mut self, c: &JobCompletion, now: i64) -> Result<Reconciled, BudgetError> {
        let path = self.ledger.path().to_path_buf();
        let e = move |source| BudgetError::Ledger(LedgerError::Sqlite { path: path.clone(), source });
        let run_key = c.run_key();
        let tx = Tx::write(&mut self.ledger)?;
        if tx.tx.prepare_cached("SELECT 1 FROM runs WHERE run_key = ?1").map_err(&e)?.exists([&run_key]).map_err(&e)? {
            return Ok(Reconciled::Duplicate);
        }
        let job = match c.hold_token.as_deref() {
            Some(t) => tx.job(t).map_err(&e)?,
            None => None,
        };
        let account = match &job {
            Some(j) => tx.account_by_id(j.account_id).map_err(&e)?,
            None => {
                if self.config.is_exempt_account(&c.account) || self.config.is_exempt_partition(&c.partition) {
                    return Ok(Reconciled::NotTracked { reason: "exempt".into() });
                }
                match tx.account_by_name(&c.account).map_err(&e)? {
                    Some(a) => a,
                    None => {
                        return Ok(Reconciled::NotTracked { reason: format!("account '{}' has no budget", c.account) })
                    }
                }
            }
        };
        // Priced from SLURM's record of the run (partition, QOS, allocation, elapsed),
        // never from a stored request an update (perhaps refused by SLURM) changed.
        // When the record names no QOS (no accounting; the safety net's sources), the
        // one the job was last priced with stands in.
        let qos = c.qos.clone().or_else(|| {
            job.as_ref().and_then(|j| serde_json::from_str::<JobRequest>(&j.request_json).ok()).and_then(|r| r.qos)
        });
        let elapsed_s = c.elapsed_s() as u64;
        let cost = match (&c.allocated, self.config.partitions.get(&c.partition)) {
            (None, _) => Money::ZERO,
            (Some(res), Some(p)) => cost::task_cost(&self.config, p, qos.as_deref(), res, elapsed_s)?,
            // Priced at submit but the partition is now unpriced: charge the estimate share,
            // so a config change never loses money.
            (Some(_), None) => match &job {
                Some(j) => Money::from_micros(j.estimate.micros() / j.tasks_total as i64),
                None => {
                    return Ok(Reconciled::NotTracked { reason: format!("partition '{}' has no price", c.partition) })
                }
            },
        };
        let share = job.as_ref().map(|j| j.estimate.micros() / j.tasks_total as i64).unwrap_or(0);
        tx.tx
            .prepare_cached(
                "INSERT INTO runs (run_key, token, account_id, cluster, job_id, user_name, partition, end_state, start_time,
                   end_time, elapsed_s, alloc_json, cost_micros, estimate_share_micros, reconciled_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)",
            )
            .map_err(&e)?
            .execute(params![
                run_key,
                job.as_ref().map(|j| j.token.clone()),
                account.id,
                c.cluster,
                c.job_id,
                c.user,
                c.partition,
                c.state.as_str(),
                c.start_time,
                c.end_time,
                elapsed_s as i64,
                c.allocated.as_ref().and_then(|a| serde_json::to_string(a).ok()),
                cost.micros(),
                share,
                now
            ])
            .map_err(&e)?;
        let charge_key = format!("charge:{run_key}");
        let token = job.as_ref().map(|j| j.token.as_str());
        let at = if c.end_time > 0 { c.end_time } else { now };
        let base = NewEntry {
            txn_key: &charge_key,
            part: 0,
            kind: EntryKind::Charge,
            account_id: account.id,
            allocation_id: None,
            amount: cost,
            token,
            job_id: Some(c.job_id),
            at: now,
            actor: None,
            memo: None,
        };
        post_cost(&tx, &base, cost, at).map_err(&e)?;
        // issue 6 (learning): one estimate-vs-actual sample per run, in this transaction.
        crate::core::learning::record_run(&tx, c, job.as_ref(), account.id, cost, now).map_err(&e)?;
        let mut released = Money::ZERO;
        if let Some(j) = &job {
            let will_run_again = c.state == EndState::Requeued;
            let first_run_of_this_id: bool = !will_run_again
                && !tx
                    .tx
                    .prepare_cached(
                        "SELECT 1 FROM runs WHERE token = ?1 AND job_id = ?2 AND run_key <> ?3 AND end_state <> 'REQUEUED'",
                    )
                    .map_err(&e)?
                    .exists(params![j.token, c.job_id, run_key])
                    .map_err(&e)?;
            let mut tasks_done = j.tasks_done;
            if first_run_of_this_id && j.tasks_done < j.tasks_total {
                tasks_done = (j.tasks_done + c.task_count).min(j.tasks_total);
                let release = if tasks_done >= j.tasks_total {
                    j.held
                } else {
                    let per_task = j.hold_placed.micros() / j.tasks_total as i64;
                    Money::from_micros((per_task * (tasks_done - j.tasks_done) as i64).min(j.held.micros()))
                };
                if !release.is_zero() {
                    postings::release(&tx, &format!("release:{run_key}"), j, release, now).map_err(&e)?;
                    released = release;
                }
            }
            let settled = tasks_done >= j.tasks_total;
            let new_state = match (settled, j.state) {
                (true, JobState::Held) => JobState::Settled,
                (true, s) if s.is_waiting() => JobState::Released,
                (_, s) => s,
            };
            tx.tx
                .prepare_cached(
                    "UPDATE jobs SET tasks_done = ?2, charged_micros = charged_micros + ?3, state = ?4,
                       settled_at = CASE WHEN ?5 THEN ?6 ELSE settled_at END, job_id = coalesce(job_id, ?7)
                     WHERE token = ?1",
                )
                .map_err(&e)?
                .execute(params![j.token, tasks_done, cost.micros(), new_state, settled, now, c.job_id])
                .map_err(&e)?;
        }
        tx.commit()?;
        Ok(Reconciled::Charged { account: account.name, cost, released })
    }

    /// A user's most recent jobs, newest first.
    pub fn recent_jobs(&self, user: &str, limit: u32) -> Result<Vec<JobSummary>, BudgetError> {
        let e = sq(&self.ledger);
        let mut stmt = self
            .ledger
            .conn
            .prepare_cached(&format!(
                "SELECT {JOB_SUMMARY_COLS} FROM jobs j JOIN accounts a ON a.id = j.account_id
                     WHERE j.user_name = ?1 ORDER BY j.submitted_at DESC, j.rowid DESC LIMIT ?2"
            ))
            .map_err(&e)?;
        let rows = stmt.query_map(params![user, limit], job_summary_from_row).map_err(&e)?;
        rows.collect::<Result<Vec<_>, _>>().map_err(e)
    }

    /// Journal entries of one account at or after `since`, oldest first.
    pub fn journal_of(&self, account: &str, since: i64) -> Result<Vec<crate::core::ledger::EntryRow>, BudgetError> {
        let e = sq(&self.ledger);
        let exists = self
            .ledger
            .conn
            .prepare_cached("SELECT 1 FROM accounts WHERE name = ?1")
            .and_then(|mut s| s.exists([account]))
            .map_err(&e)?;
        if !exists {
            return Err(BudgetError::UnknownAccount(account.to_string()));
        }
        let mut stmt = self
            .ledger
            .conn
            .prepare_cached(
                "SELECT j.id, j.txn_key, j.part, j.kind, a.name, j.allocation_id, j.amount_micros, j.token, j.job_id, j.at, j.actor, j.memo
                 FROM journal j JOIN accounts a ON a.id = j.account_id
                 WHERE a.name = ?1 AND j.at >= ?2 ORDER BY j.id",
            )
            .map_err(&e)?;
        let rows = stmt
            .query_map(params![account, since], |r| {
                Ok(crate::core::ledger::EntryRow {
                    id: r.get(0)?,
                    txn_key: r.get(1)?,
                    part: r.get(2)?,
                    kind: r.get(3)?,
                    account: r.get(4)?,
                    allocation_id: r.get(5)?,
                    amount: Money::from_micros(r.get(6)?),
                    token: r.get(7)?,
                    job_id: r.get(8)?,
                    at: r.get(9)?,
                    actor: r.get(10)?,
                    memo: r.get(11)?,
                })
            })
            .map_err(&e)?;
        rows.collect::<Result<Vec<_>, _>>().map_err(e)
    }

    pub fn job(&mut self, token: &str) -> Result<Option<JobRow>, BudgetError> {
        let e = sq(&self.ledger);
        self.ledger
            .conn
            .prepare_cached(&format!("SELECT {JOB_COLS} FROM jobs WHERE token = ?1"))
            .and_then(|mut s| {
                rusqlite::OptionalExtension::optional(s.query_row([token], crate::core::ledger::job_from_row))
            })
            .map_err(e)
    }
}

/// Refuses a job whose metadata does not fit: an unknown, closed or foreign grant, or
/// a `max_cost` below the estimate.
fn check_metadata(tx: &Tx<'_>, verdict: &Verdict, meta: &JobMetadata) -> rusqlite::Result<Option<Decision>> {
    let (account, estimate) = match verdict {
        Verdict::Fits { account, estimate, .. } | Verdict::Held { account, estimate, .. } => (account, *estimate),
        Verdict::Done(_) => return Ok(None),
    };
    let reject = |reason: String| {
        Some(Decision::Reject { reason, code: RefuseCode::AccountingPolicy, estimate: Some(estimate) })
    };
    if let Some(max) = meta.max_cost() {
        if estimate > max {
            return Ok(reject(format!(
                "asbb: estimate {estimate} is above your max_cost {max}; request less time or fewer resources, or raise max_cost"
            )));
        }
    }
    if let Some(number) = &meta.grant_number {
        let has_grants: bool = tx
            .tx
            .prepare_cached("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'grant_accounts'")?
            .exists([])?;
        let grant: Option<(String, Option<i64>)> = if has_grants {
            tx.tx
                .prepare_cached("SELECT status, budget_account_id FROM grant_accounts WHERE grant_number = ?1")?
                .query_row([number], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()?
        } else {
            None
        };
        match grant {
            None => return Ok(reject(format!("asbb: grant '{number}' is not known to asbb; check the grant number"))),
            Some((status, _)) if status != "active" => {
                return Ok(reject(format!("asbb: grant '{number}' is {status}; no new jobs can be charged to it")))
            }
            Some((_, funded)) if funded != Some(account.id) => {
                return Ok(reject(format!("asbb: grant '{number}' does not fund account '{}'", account.name)))
            }
            Some(_) => {}
        }
    }
    Ok(None)
}

fn validate_name(name: &str) -> Result<(), BudgetError> {
    let ok =
        !name.is_empty() && name.len() <= 64 && name.chars().all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c));
    if ok {
        Ok(())
    } else {
        Err(BudgetError::Invalid(format!(
            "account name '{}' must be 1-64 letters, digits, '_', '-' or '.' (a SLURM account name)",
            crate::core::fields::clean_text(name)
        )))
    }
}

fn balance_of(acc: &AccountRow, allocs: &[AllocationRow], now: i64) -> Balance {
    let active: Vec<&AllocationRow> = allocs.iter().filter(|a| a.is_active(now)).collect();
    let allocated: i128 = active.iter().map(|a| a.amount.micros() as i128).sum();
    let debited: i128 = active.iter().map(|a| a.debited.micros() as i128).sum();
    Balance {
        account: acc.name.clone(),
        status: acc.status.clone(),
        allocated: saturate(allocated),
        charged: saturate(debited + acc.overdraft.micros() as i128),
        held: acc.held,
        credit_limit: acc.credit_limit,
        available: available_of(acc, allocs, now),
        valid_from: active.iter().map(|a| a.valid_from).min(),
        valid_until: active.iter().map(|a| a.valid_until).max(),
    }
}

// issue 6 (learning): `Fits::hold` is what to hold, `learning::hold_for` of the estimate.
enum Verdict {
    Done(Decision),
    Fits { account: AccountRow, estimate: Money, hold: Money, available: Money },
    Held { account: AccountRow, estimate: Money, reason: String, state: JobState },
}

/// The decision rule, shared by quote, check_and_hold and a release re-check.
fn decide(
    config: &Config,
    tx: &Tx<'_>,
    req: &JobRequest,
    domain: &str,
    now: i64,
    skip_approval: bool,
) -> Result<Verdict, BudgetError> {
    if config.is_exempt_account(&req.account) {
        return Ok(Verdict::Done(Decision::Exempt { reason: format!("account {} is exempt", req.account) }));
    }
    if config.is_exempt_partition(&req.partition) {
        return Ok(Verdict::Done(Decision::Exempt { reason: format!("partition {} is exempt", req.partition) }));
    }
    let estimate = match cost::estimate(config, req) {
        Ok(m) => m,
        Err(CostError::UnpricedPartition(p)) => {
            return Ok(Verdict::Done(match config.policy.unpriced_partition {
                MissingPolicy::Exempt => Decision::Exempt { reason: format!("partition {p} has no price") },
                MissingPolicy::Reject => Decision::Reject {
                    reason: format!(
                    "asbb: partition '{p}' has no price in asbb; ask your admins to add it or use another partition"
                ),
                    code: RefuseCode::InvalidRequest,
                    estimate: None,
                },
            }))
        }
        Err(err) => {
            return Ok(Verdict::Done(Decision::Reject {
                reason: format!("asbb: {err}"),
                code: RefuseCode::InvalidRequest,
                estimate: None,
            }))
        }
    };
    let ledger_err = |source: rusqlite::Error| BudgetError::Ledger(tx.err(source));
    let account = match tx.account_by_name(&req.account).map_err(ledger_err)? {
        Some(a) => a,
        None => {
            return Ok(Verdict::Done(match config.policy.unknown_account {
                MissingPolicy::Exempt => Decision::Exempt { reason: format!("account {} has no budget", req.account) },
                MissingPolicy::Reject => Decision::Reject {
                    reason: format!(
                        "asbb: account '{}' has no budget in asbb; ask your admins to create one",
                        req.account
                    ),
                    code: RefuseCode::InvalidAccount,
                    estimate: Some(estimate),
                },
            }))
        }
    };
    if account.status != "active" {
        return Ok(Verdict::Done(Decision::Reject {
            reason: format!("asbb: account '{}' is {}; no new jobs can be charged to it", account.name, account.status),
            code: RefuseCode::AccountingPolicy,
            estimate: Some(estimate),
        }));
    }
    let allocs = tx.allocations(account.id).map_err(ledger_err)?;
    let available = available_of(&account, &allocs, now);
    if let Some(threshold) = config.approval_threshold_for(&account.name).filter(|_| !skip_approval) {
        if estimate > threshold {
            let reason = format!("asbb: needs approval, estimate {estimate} > {threshold}");
            return Ok(Verdict::Held { account, estimate, reason, state: JobState::AwaitingApproval });
        }
    }
    // issue 6 (learning): the decision compares the hold (the estimate unless learning sized it) with available.
    let hold = crate::core::learning::hold_for(tx, account.id, &req.partition, domain, estimate, &config.learning)
        .map_err(ledger_err)?;
    if hold <= available {
        return Ok(Verdict::Fits { account, estimate, hold, available });
    }
    // Short now; does an allocation start soon that would cover it?
    let hold_days = config.low_balance_hold_days_for(&account.name);
    if hold_days > 0 {
        let horizon = now + hold_days as i64 * DAY_S;
        if let Some(next) =
            allocs.iter().filter(|a| a.valid_from > now && a.valid_from <= horizon).min_by_key(|a| a.valid_from)
        {
            if available.micros() + next.remaining().micros() >= hold.micros() {
                let reason = format!(
                    "asbb: account '{}' is short of funds (needs {estimate}, {} available); held until the allocation starting {}",
                    account.name,
                    available.max(Money::ZERO),
                    format_date(next.valid_from)
                );
                return Ok(Verdict::Held { account, estimate, reason, state: JobState::AwaitingFunds });
            }
        }
    }
    Ok(Verdict::Done(Decision::Reject {
        reason: format!(
            "asbb: account '{}' cannot cover this job: needs {estimate}, {} available; ask your PI for funds or request less time or fewer resources",
            account.name,
            available.max(Money::ZERO)
        ),
        code: RefuseCode::AccountingPolicy,
        estimate: Some(estimate),
    }))
}

#[allow(clippy::too_many_arguments)]
fn insert_job(
    tx: &Tx<'_>,
    token: &str,
    account: &AccountRow,
    req: &JobRequest,
    estimate: Money,
    held: Money,
    state: JobState,
    reason: Option<&str>,
    meta: Option<&JobMetadata>,
    now: i64,
) -> rusqlite::Result<()> {
    let request_json = serde_json::to_string(req).unwrap_or_else(|_| "{}".into());
    // The metadata goes in with the row: a second UPDATE would write the page twice.
    let meta = meta.filter(|m| !m.is_empty());
    let metadata_json = meta.map(|m| serde_json::to_string(m).unwrap_or_else(|_| "{}".into()));
    tx.tx
        .prepare_cached(
            "INSERT INTO jobs (token, account_id, user_name, uid, partition, job_id, job_name, request_json, estimate_micros,
               tasks_total, state, reason, submitted_at, held_micros, hold_placed_micros,
               research_domain, project_code, grant_number, metadata_json)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?14, ?15, ?16, ?17, ?18)",
        )?
        .execute(params![
            token,
            account.id,
            req.user,
            req.uid,
            req.partition,
            req.job_id,
            req.job_name,
            request_json,
            estimate.micros(),
            req.array_tasks.max(1),
            state,
            reason,
            now,
            held.micros(),
            meta.and_then(|m| m.research_domain.as_deref()),
            meta.and_then(|m| m.project_code.as_deref()),
            meta.and_then(|m| m.grant_number.as_deref()),
            metadata_json,
        ])?;
    // Usually there already: then this reads a page and writes none.
    tx.tx
        .prepare_cached("INSERT OR IGNORE INTO account_job_users (uid, account_id) VALUES (?1, ?2)")?
        .execute(params![req.uid, account.id])?;
    Ok(())
}

/// The key of a job's next hold change, `modify:<token>:<n>`: the first `n` from the
/// number of its earlier changes that no entry uses (ledgers before schema 5 counted
/// all of the job's entries instead, so a count alone could repeat one of their keys).
/// The count is a range over the journal's key index, not a look-up by token.
fn next_modify_key(tx: &Tx<'_>, token: &str) -> rusqlite::Result<String> {
    let prefix = format!("modify:{token}:");
    // ';' is the character after ':', so [prefix, end) holds exactly the keys with it.
    let end = format!("modify:{token};");
    let mut n: i64 = tx
        .tx
        .prepare_cached("SELECT count(DISTINCT txn_key) FROM journal WHERE txn_key >= ?1 AND txn_key < ?2")?
        .query_row([&prefix, &end], |r| r.get(0))?;
    while tx.txn_exists(&format!("{prefix}{n}"))? {
        n += 1;
    }
    Ok(format!("{prefix}{n}"))
}
