// SPDX-License-Identifier: GPL-2.0-or-later
//! Budget decisions over the ledger: what happens to money when an account is funded
//! (`accounts`), a job is submitted (`submit`), changed (`modify`), ends (`settle`),
//! waits for a PI (`approval`), is corrected (`corrections`), and how the books are
//! checked (`verify`). Each is a method on [`Budget`] writing through the ledger's
//! postings.
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

mod accounts;
pub mod approval;
pub mod corrections;
mod handle;
mod modify;
mod settle;
mod submit;

use crate::core::config::{Config, MissingPolicy};
use crate::core::ledger::postings::{self, adjust_hold, audit, post_cost};
pub use crate::core::ledger::verify::VerifyReport;
pub use crate::core::ledger::JobSummary;
use crate::core::ledger::{
    AccountRow, AllocationRow, EntryKind, GrantFunds, JobRow, JobState, Ledger, LedgerError, NewEntry, NewJob, NewRun,
    OpenMode, ReadCache, Tx,
};
use crate::core::money::Money;
use crate::core::pricing::cost::{self, CostError};
use crate::core::pricing::job::{EndState, JobCompletion, JobRequest};
use crate::core::pricing::metadata::JobMetadata;
use chrono::{DateTime, NaiveDate, Utc};
pub use handle::BudgetHandle;
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
pub enum Refusal {
    /// A budget rule refuses the job: not enough money, over its `max_cost`, or a grant
    /// that cannot fund it.
    BudgetRule,
    /// The job names an account asbb does not know or cannot read.
    UnknownAccount,
    /// The job's time limit is missing (and policy refuses that) or unreadable.
    BadTimeLimit,
    /// The job names no partition, or one the price list does not have.
    BadPartition,
    /// Anything else about the request that cannot be priced.
    BadRequest,
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
        refusal: Refusal,
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

/// The budget core: config + ledger.
pub struct Budget {
    pub config: Config,
    pub ledger: Ledger,
    /// (uid, account id) pairs this connection saw committed in `account_job_users`.
    /// Rows there are never deleted, so a submission by a known pair skips that insert.
    /// (A ledger replaced by another file is reopened with an empty set; one restored
    /// in place under a running slurmctld, which `migrate` and the README rule out,
    /// could miss pairs: `verify` reports them.)
    known_job_users: std::collections::HashSet<(u32, i64)>,
    /// What the submit path read, kept while nothing else writes the ledger.
    reads: ReadCache,
    /// The SLURM cluster (ClusterName) whose jobs this budget prices: each job row it
    /// writes names it, so clusters sharing one ledger each settle only their own.
    cluster: Option<String>,
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

/// What is left of a grant for new holds: its allocations active at `now` (among
/// `allocations`, the account's) less the open holds of the jobs that name it.
fn grant_available_of(grant: &GrantFunds, allocations: &[AllocationRow], now: i64) -> Money {
    let active: i128 = allocations
        .iter()
        .filter(|a| a.grant_id == Some(grant.id) && a.is_active(now))
        .map(|a| a.remaining().micros() as i128)
        .sum();
    saturate(active - grant.held.micros() as i128)
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
        Ok(Budget::with_ledger(config, ledger))
    }

    pub fn with_ledger(config: Config, ledger: Ledger) -> Budget {
        Budget { config, ledger, known_job_users: Default::default(), reads: ReadCache::default(), cluster: None }
    }

    /// Names the cluster whose jobs this budget prices: each job row it writes names it.
    pub fn set_cluster(&mut self, cluster: &str) {
        if self.cluster.as_deref() != Some(cluster) {
            self.cluster = Some(cluster.to_string());
        }
    }

    /// How many submissions decided from what an earlier one had read (benchmarks,
    /// tests).
    pub fn read_cache_hits(&self) -> u64 {
        self.reads.hits()
    }

    /// Round trips to a PostgreSQL ledger's server so far (`None` on SQLite).
    pub fn ledger_round_trips(&self) -> Option<u64> {
        self.ledger.round_trips()
    }

    /// Recomputes every balance from the journal and checks every invariant.
    pub fn verify(&self) -> Result<VerifyReport, LedgerError> {
        self.ledger.verify()
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

    /// Names `cluster` (this controller's) on the job rows that name none, those from
    /// before schema 11 that never ran, unless the ledger's runs show another cluster
    /// (a ledger shared before it named clusters: which cluster placed an open hold is
    /// not known). Returns how many rows named none, whether they were named now, and
    /// the clusters of the runs.
    pub fn name_unnamed_jobs(&mut self, cluster: Option<&str>) -> Result<(usize, bool, Vec<String>), BudgetError> {
        // Under the write lock, as every writer (on PostgreSQL, an unlocked write could
        // deadlock with a locked one on the ledger's clock).
        let tx = Tx::write(&mut self.ledger)?;
        let (unnamed, run_clusters) = tx.unnamed_jobs()?;
        let only_here = run_clusters.iter().all(|c| Some(c.as_str()) == cluster);
        let named = match cluster {
            Some(c) if unnamed > 0 && only_here => (tx.name_unnamed_jobs(c)?, true, run_clusters),
            _ => (unnamed, false, run_clusters),
        };
        tx.commit()?;
        Ok(named)
    }

    /// Copies the ledger into a new private file at `path` (see `Ledger::copy_to`).
    pub fn backup_to(&self, path: &std::path::Path) -> Result<(), BudgetError> {
        Ok(self.ledger.copy_to(path)?)
    }
}
