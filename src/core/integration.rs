// SPDX-License-Identifier: GPL-2.0-or-later
//! What the sister tools (the cost advisor and the AWS burst launcher) ask of asbb and
//! tell it, independent of HTTP: a job's budget context, actual costs posted as
//! adjustments, performance feedback, the burst launcher's reconciliation files, the
//! numbers behind `/metrics`, and account members (who may read an account through the
//! API's unix socket).
//!
//! Jobs are named by SLURM job id (and cluster, where one id could mean two jobs): the
//! ledger learns a job's id when its first run is reconciled (`runs.job_id`), or at
//! submit when SLURM already knew it (`jobs.job_id`).
//!
//! Actual costs. An update for job J from source S makes J's net charge equal the
//! actual cost: it posts `actual − net charge` as one `adjustment` (journal key
//! `adjust:<cluster>:<J>:<S>`) through `Budget::adjust` (corrections.rs), which takes
//! money back from where the job's charges went (newest first) or posts extra cost like
//! a charge, overflow to overdraft, keeping every cached total in step with the journal.
//! The same (cluster, J, S) again changes nothing (`applied: false`); the same key with
//! a different actual is refused as a conflict. A job is adjusted only once all its
//! runs are reconciled (state settled or released).
//!
//! Amounts in and out are decimal text: JSON numbers are read from their text (never
//! through f64) with `Money::parse`, so `12.345678` is exactly 12_345_678 micros and
//! `1e3`, negatives and more than six decimals are refused.

use crate::core::budget::{format_date, format_time, Balance, Budget, BudgetError, Decision, DAY_S};
use crate::core::job::JobRequest;
use crate::core::learning::{self, Sample};
use crate::core::ledger::{job_from_row, JobRow, JobState, LedgerError, Tx, JOB_COLS};
use crate::core::money::Money;
use rusqlite::{params, Connection, OptionalExtension};
use serde::{Deserialize, Serialize, Serializer};
use serde_json::value::RawValue;
use std::path::{Path, PathBuf};

/// Largest reconciliation file `import-costs` reads.
pub const MAX_IMPORT_FILE_BYTES: u64 = 64 * 1024;
/// Longest source name.
pub const MAX_SOURCE_LEN: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum IntegrationError {
    #[error("{0}")]
    UnknownJob(String),
    #[error("{0}")]
    UnknownAccount(String),
    #[error("{0}")]
    AmbiguousJob(String),
    #[error("{0}")]
    NotSettled(String),
    #[error("{0}")]
    NotPriced(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Budget(BudgetError),
}

impl IntegrationError {
    /// The stable, machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            IntegrationError::UnknownJob(_) => "unknown_job",
            IntegrationError::UnknownAccount(_) => "unknown_account",
            IntegrationError::AmbiguousJob(_) => "ambiguous_job",
            IntegrationError::NotSettled(_) => "job_not_settled",
            IntegrationError::NotPriced(_) => "job_not_priced",
            IntegrationError::Conflict(_) => "conflict",
            IntegrationError::Invalid(_) => "invalid",
            IntegrationError::Budget(e) if e.is_ledger() => "ledger_unavailable",
            IntegrationError::Budget(_) => "internal",
        }
    }
}

impl From<BudgetError> for IntegrationError {
    fn from(e: BudgetError) -> IntegrationError {
        match e {
            BudgetError::UnknownAccount(a) => IntegrationError::UnknownAccount(format!("unknown account '{a}'")),
            BudgetError::UnknownToken(t) => IntegrationError::UnknownJob(format!("unknown hold token '{t}'")),
            BudgetError::Invalid(m) => IntegrationError::Invalid(m),
            BudgetError::Cost(c) => IntegrationError::Invalid(c.to_string()),
            other => IntegrationError::Budget(other),
        }
    }
}

impl From<LedgerError> for IntegrationError {
    fn from(e: LedgerError) -> IntegrationError {
        IntegrationError::Budget(BudgetError::Ledger(e))
    }
}

/// Serializes an amount exactly (`12.345678`, `3.50`): the API never rounds to cents.
pub fn exact<S: Serializer>(m: &Money, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&m.to_exact_string())
}

fn exact_opt<S: Serializer>(m: &Option<Money>, s: S) -> Result<S::Ok, S::Error> {
    match m {
        Some(m) => s.serialize_str(&m.to_exact_string()),
        None => s.serialize_none(),
    }
}

/// An amount from JSON: a string (`"12.50"`) or a number (`12.5`), read from its text
/// with `Money::parse`; never through floating point.
pub fn money_from_raw(raw: &RawValue, field: &str) -> Result<Money, IntegrationError> {
    let text = raw.get().trim();
    let bad = |why: String| IntegrationError::Invalid(format!("{field}: {why}"));
    let s: String = if text.starts_with('"') {
        serde_json::from_str(text).map_err(|e| bad(e.to_string()))?
    } else if text.starts_with(|c: char| c.is_ascii_digit() || c == '-' || c == '.') {
        text.to_string()
    } else {
        return Err(bad(format!("{text} is not an amount; give a decimal string like \"12.50\" or a number")));
    };
    Money::parse(&s).map_err(|e| bad(e.to_string()))
}

/// A whole number of seconds (or a job id) from JSON: a non-negative integer or a string of digits.
pub fn count_from_raw(raw: &RawValue, field: &str, max: u64) -> Result<u64, IntegrationError> {
    let text = raw.get().trim();
    let digits: String = if text.starts_with('"') {
        serde_json::from_str(text).map_err(|e| IntegrationError::Invalid(format!("{field}: {e}")))?
    } else {
        text.to_string()
    };
    let digits = digits.trim();
    match digits.parse::<u64>() {
        Ok(n) if n <= max && !digits.is_empty() && digits.chars().all(|c| c.is_ascii_digit()) => Ok(n),
        _ => Err(IntegrationError::Invalid(format!("{field}: '{digits}' is not a whole number from 0 to {max}"))),
    }
}

fn sql(path: &Path) -> impl Fn(rusqlite::Error) -> IntegrationError + '_ {
    move |source| {
        IntegrationError::Budget(BudgetError::Ledger(LedgerError::Sqlite { path: path.to_path_buf(), source }))
    }
}

fn check_name(what: &str, s: &str) -> Result<(), IntegrationError> {
    let ok = !s.is_empty()
        && s.len() <= MAX_SOURCE_LEN
        && s.chars().all(|c| c.is_ascii_alphanumeric() || "_-.@".contains(c));
    if ok {
        Ok(())
    } else {
        Err(IntegrationError::Invalid(format!(
            "{what} '{}' must be 1-{MAX_SOURCE_LEN} letters, digits, '_', '-', '.' or '@'",
            crate::core::fields::clean_text(s)
        )))
    }
}

// ----- finding a job by SLURM id -------------------------------------------------------

/// A job the ledger priced, found by SLURM id.
#[derive(Debug, Clone)]
pub struct FoundJob {
    pub job: JobRow,
    pub account: String,
    /// The cluster its runs were reconciled on; `None` before its first run ended.
    pub cluster: Option<String>,
}

/// The answer for a job id the ledger does not have, and (issue 17) for one the caller
/// may not see: the same, so it tells nothing about which.
pub fn unknown_job(cluster: Option<&str>, job_id: u32) -> IntegrationError {
    let where_ = cluster.map(|c| format!(" on cluster {c}")).unwrap_or_default();
    IntegrationError::UnknownJob(format!("no job {job_id}{where_} in the ledger"))
}

/// The accounts of every job and run carrying SLURM id `job_id` (on `cluster`, when
/// given): the candidates `find_job` chooses from.
pub fn accounts_with_job_id(
    conn: &Connection,
    cluster: Option<&str>,
    job_id: u32,
) -> Result<Vec<String>, IntegrationError> {
    let e =
        |source| IntegrationError::Budget(BudgetError::Ledger(LedgerError::Sqlite { path: PathBuf::new(), source }));
    conn.prepare_cached(
        "SELECT a.name FROM runs r JOIN accounts a ON a.id = r.account_id
           WHERE r.job_id = ?1 AND (?2 IS NULL OR r.cluster = ?2)
         UNION
         SELECT a.name FROM jobs j JOIN accounts a ON a.id = j.account_id WHERE j.job_id = ?1 AND ?2 IS NULL",
    )
    .and_then(|mut s| s.query_map(params![job_id, cluster], |r| r.get(0))?.collect())
    .map_err(e)
}

/// Finds the one job with SLURM id `job_id` (on `cluster`, when given).
pub fn find_job(conn: &Connection, cluster: Option<&str>, job_id: u32) -> Result<FoundJob, IntegrationError> {
    let e =
        |source| IntegrationError::Budget(BudgetError::Ledger(LedgerError::Sqlite { path: PathBuf::new(), source }));
    let mut stmt = conn
        .prepare_cached(
            "SELECT token, cluster FROM runs WHERE job_id = ?1 AND (?2 IS NULL OR cluster = ?2)
             UNION
             SELECT j.token, NULL FROM jobs j WHERE j.job_id = ?1 AND ?2 IS NULL
               AND NOT EXISTS (SELECT 1 FROM runs r WHERE r.token = j.token)
             ORDER BY 1, 2",
        )
        .map_err(e)?;
    let rows: Vec<(Option<String>, Option<String>)> = stmt
        .query_map(params![job_id, cluster], |r| Ok((r.get(0)?, r.get(1)?)))
        .map_err(e)?
        .collect::<Result<_, _>>()
        .map_err(e)?;
    let where_ = match cluster {
        Some(c) => format!(" on cluster {c}"),
        None => String::new(),
    };
    if rows.is_empty() {
        return Err(unknown_job(cluster, job_id));
    }
    let mut tokens: Vec<&str> = rows.iter().filter_map(|(t, _)| t.as_deref()).collect();
    tokens.dedup();
    let mut clusters: Vec<&str> = rows.iter().filter_map(|(_, c)| c.as_deref()).collect();
    clusters.sort_unstable();
    clusters.dedup();
    match tokens.as_slice() {
        [] => {
            return Err(IntegrationError::NotPriced(format!(
                "job {job_id}{where_} ran without an asbb hold (submitted while the ledger was unavailable, or exempt), so there is no priced job to attach this to"
            )))
        }
        [_] => {}
        many => {
            return Err(IntegrationError::AmbiguousJob(format!(
                "job id {job_id}{where_} names {} jobs in the ledger (clusters: {}); give \"cluster\"",
                many.len(),
                if clusters.is_empty() { "unknown".to_string() } else { clusters.join(", ") }
            )))
        }
    }
    if clusters.len() > 1 {
        return Err(IntegrationError::AmbiguousJob(format!(
            "job id {job_id} ran on clusters {}; give \"cluster\"",
            clusters.join(", ")
        )));
    }
    let token = tokens[0].to_string();
    let job = conn
        .prepare_cached(&format!("SELECT {JOB_COLS} FROM jobs WHERE token = ?1"))
        .and_then(|mut s| s.query_row([&token], job_from_row))
        .map_err(e)?;
    let account: String = conn
        .prepare_cached("SELECT name FROM accounts WHERE id = ?1")
        .and_then(|mut s| s.query_row([job.account_id], |r| r.get(0)))
        .map_err(e)?;
    Ok(FoundJob { job, account, cluster: clusters.first().map(|c| c.to_string()) })
}

// ----- actual costs ---------------------------------------------------------------------

/// An actual cost for one job, from the API or an import file.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CostUpdate {
    pub cluster: Option<String>,
    pub job_id: u32,
    /// Who reported it: one adjustment per (cluster, job, source).
    pub source: String,
    pub actual: Money,
    pub compute: Option<Money>,
    pub storage: Option<Money>,
    pub network: Option<Money>,
    pub spot_savings: Option<Money>,
    pub instance_types: Vec<String>,
    pub performance: Option<serde_json::Value>,
    pub metadata: Option<serde_json::Value>,
    /// When the reporter says which account and partition the job used, they must match the ledger.
    pub expect_account: Option<String>,
    pub expect_partition: Option<String>,
}

/// What a cost update did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CostOutcome {
    /// false: this (cluster, job, source) was applied before; nothing changed.
    pub applied: bool,
    pub job_id: u32,
    pub cluster: String,
    pub account: String,
    pub source: String,
    #[serde(serialize_with = "exact")]
    pub actual: Money,
    /// The job's net charge before the update (when it was first applied).
    #[serde(serialize_with = "exact")]
    pub charged_before: Money,
    /// Signed: positive = more cost.
    #[serde(serialize_with = "exact")]
    pub adjustment: Money,
    /// The job's net charge now.
    #[serde(serialize_with = "exact")]
    pub net_charge: Money,
    /// The journal key of the adjustment; `None` when the actual equalled the charge.
    pub journal_key: Option<String>,
}

struct PriorUpdate {
    actual: i64,
    charged_before: i64,
    delta: i64,
    txn_key: Option<String>,
}

impl Budget {
    /// Makes a job's net charge equal its reported actual cost (see the module doc).
    pub fn apply_cost_update(
        &mut self,
        u: &CostUpdate,
        actor: &str,
        now: i64,
    ) -> Result<CostOutcome, IntegrationError> {
        check_name("source", &u.source)?;
        if let Some(c) = &u.cluster {
            check_name("cluster", c)?;
        }
        if u.instance_types.len() > 64
            || u.instance_types.iter().any(|t| t.len() > 64 || t.chars().any(char::is_control))
        {
            return Err(IntegrationError::Invalid(
                "instance_types: at most 64 names of up to 64 printable characters".into(),
            ));
        }
        let path = self.ledger.path().to_path_buf();
        let e = sql(&path);
        // One write transaction from the lookup to the record: the difference is taken
        // from the net charge as it stands, and no other update can post in between.
        let tx = Tx::write(&mut self.ledger)?;
        // 1. Which job, and was this (cluster, job, source) applied before?
        let found = find_job(&tx.tx, u.cluster.as_deref(), u.job_id)?;
        let prior = match &found.cluster {
            Some(c) => prior_update(&tx.tx, c, u.job_id, &u.source).map_err(&e)?,
            None => None,
        };
        if let Some(a) = &u.expect_account {
            if *a != found.account {
                return Err(IntegrationError::Conflict(format!(
                    "job {} is charged to account {} in the ledger, not {}",
                    u.job_id,
                    found.account,
                    crate::core::fields::clean_text(a)
                )));
            }
        }
        if let Some(p) = &u.expect_partition {
            if *p != found.job.partition {
                return Err(IntegrationError::Conflict(format!(
                    "job {} ran in partition {} in the ledger, not {}",
                    u.job_id,
                    found.job.partition,
                    crate::core::fields::clean_text(p)
                )));
            }
        }
        let Some(cluster) = found.cluster.clone() else {
            return Err(IntegrationError::NotSettled(format!(
                "job {} has no reconciled run yet (state {}); send its cost after it ends",
                u.job_id, found.job.state
            )));
        };
        if let Some(p) = prior {
            if p.actual != u.actual.micros() {
                return Err(IntegrationError::Conflict(format!(
                    "job {} already has an actual cost of {} from {}; a different cost ({}) needs another source or an admin adjustment",
                    u.job_id,
                    Money::from_micros(p.actual).to_exact_string(),
                    u.source,
                    u.actual.to_exact_string()
                )));
            }
            return Ok(CostOutcome {
                applied: false,
                job_id: u.job_id,
                cluster,
                account: found.account,
                source: u.source.clone(),
                actual: u.actual,
                charged_before: Money::from_micros(p.charged_before),
                adjustment: Money::from_micros(p.delta),
                net_charge: found.job.charged,
                journal_key: p.txn_key,
            });
        }
        if !matches!(found.job.state, JobState::Settled | JobState::Released) {
            return Err(IntegrationError::NotSettled(format!(
                "job {} is still {} in the ledger ({} of {} tasks reconciled); send its cost after every run has ended",
                u.job_id, found.job.state, found.job.tasks_done, found.job.tasks_total
            )));
        }
        // 2. Post the difference through the corrections module.
        let charged_before = found.job.charged;
        let delta = u.actual.micros() - charged_before.micros();
        let request_id = format!("{cluster}:{}:{}", u.job_id, u.source);
        let key = format!("adjust:{request_id}");
        let memo = format!("actual cost {} from {}", u.actual.to_exact_string(), u.source);
        let applied = if delta != 0 {
            crate::core::corrections::correct_in(
                &tx,
                &found.job.token,
                crate::core::ledger::EntryKind::Adjustment,
                delta,
                Some(&memo),
                &request_id,
                actor,
                now,
            )?
        } else {
            true
        };
        // 3. Record what was reported.
        let inserted = tx
            .tx
            .prepare_cached(
                "INSERT OR IGNORE INTO cost_updates (cluster, job_id, source, token, actual_micros, charged_before_micros,
                   delta_micros, compute_micros, storage_micros, network_micros, spot_savings_micros, instance_types,
                   performance_json, metadata_json, txn_key, received_at, actor)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17)",
            )
            .and_then(|mut s| {
                s.execute(params![
                    cluster,
                    u.job_id,
                    u.source,
                    found.job.token,
                    u.actual.micros(),
                    charged_before.micros(),
                    delta,
                    u.compute.map(Money::micros),
                    u.storage.map(Money::micros),
                    u.network.map(Money::micros),
                    u.spot_savings.map(Money::micros),
                    serde_json::to_string(&u.instance_types).unwrap_or_else(|_| "[]".into()),
                    u.performance.as_ref().map(|v| v.to_string()),
                    u.metadata.as_ref().map(|v| v.to_string()),
                    (delta != 0).then(|| key.clone()),
                    now,
                    actor
                ])
            })
            .map_err(&e)?;
        let net: i64 = tx
            .tx
            .prepare_cached("SELECT charged_micros FROM jobs WHERE token = ?1")
            .and_then(|mut s| s.query_row([&found.job.token], |r| r.get(0)))
            .map_err(&e)?;
        tx.commit()?;
        Ok(CostOutcome {
            applied: applied && inserted == 1,
            job_id: u.job_id,
            cluster,
            account: found.account,
            source: u.source.clone(),
            actual: u.actual,
            charged_before,
            adjustment: Money::from_micros(delta),
            net_charge: Money::from_micros(net),
            journal_key: (delta != 0).then_some(key),
        })
    }
}

fn prior_update(conn: &Connection, cluster: &str, job_id: u32, source: &str) -> rusqlite::Result<Option<PriorUpdate>> {
    conn.prepare_cached(
        "SELECT actual_micros, charged_before_micros, delta_micros, txn_key FROM cost_updates
         WHERE cluster = ?1 AND job_id = ?2 AND source = ?3",
    )?
    .query_row(params![cluster, job_id, source], |r| {
        Ok(PriorUpdate { actual: r.get(0)?, charged_before: r.get(1)?, delta: r.get(2)?, txn_key: r.get(3)? })
    })
    .optional()
}

// ----- performance feedback ---------------------------------------------------------------

/// Performance feedback from the cost advisor.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Feedback {
    pub cluster: Option<String>,
    pub job_id: u32,
    pub estimated_cost: Money,
    pub actual_cost: Money,
    pub estimated_duration_s: u64,
    pub actual_duration_s: u64,
    /// As sent (a number's text or a string).
    pub performance_rating: Option<String>,
    pub optimization_hints: Option<serde_json::Value>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FeedbackOutcome {
    /// false: feedback for this job was recorded before; nothing changed.
    pub applied: bool,
    pub job_id: u32,
    pub account: String,
    pub partition: String,
    /// Whether it became a learning sample (it needs an estimated cost above zero).
    pub learning_sample: bool,
}

impl Budget {
    /// Records feedback once per job and adds it as a learning sample.
    pub fn record_feedback(
        &mut self,
        f: &Feedback,
        actor: &str,
        now: i64,
    ) -> Result<FeedbackOutcome, IntegrationError> {
        if let Some(c) = &f.cluster {
            check_name("cluster", c)?;
        }
        const MAX_DURATION_S: u64 = 100 * 365 * DAY_S as u64;
        if f.estimated_duration_s > MAX_DURATION_S || f.actual_duration_s > MAX_DURATION_S {
            return Err(IntegrationError::Invalid("durations must be at most 100 years in seconds".into()));
        }
        let path = self.ledger.path().to_path_buf();
        let e = sql(&path);
        let tx = Tx::write(&mut self.ledger)?;
        let found = find_job(&tx.tx, f.cluster.as_deref(), f.job_id)?;
        let cluster = found.cluster.clone().unwrap_or_default();
        let n = tx
            .tx
            .prepare_cached(
                "INSERT OR IGNORE INTO performance_feedback (cluster, job_id, token, estimated_cost_micros, actual_cost_micros,
                   estimated_duration_s, actual_duration_s, performance_rating, optimization_hints, received_at, actor)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
            )
            .and_then(|mut s| {
                s.execute(params![
                    cluster,
                    f.job_id,
                    found.job.token,
                    f.estimated_cost.micros(),
                    f.actual_cost.micros(),
                    f.estimated_duration_s as i64,
                    f.actual_duration_s as i64,
                    f.performance_rating,
                    f.optimization_hints.as_ref().map(|v| v.to_string()),
                    now,
                    actor
                ])
            })
            .map_err(&e)?;
        let mut sample = false;
        if n == 1 {
            sample = learning::record(
                &tx.tx,
                &Sample {
                    key: &format!("feedback:{cluster}:{}", f.job_id),
                    source: "feedback",
                    account_id: found.job.account_id,
                    partition: &found.job.partition,
                    domain: found.job.research_domain.as_deref().unwrap_or(""),
                    token: Some(&found.job.token),
                    job_id: Some(f.job_id),
                    estimate: f.estimated_cost,
                    actual: f.actual_cost,
                    estimated_s: Some(f.estimated_duration_s as i64),
                    actual_s: Some(f.actual_duration_s as i64),
                    at: now,
                },
            )
            .map_err(&e)?;
        }
        tx.commit()?;
        Ok(FeedbackOutcome {
            applied: n == 1,
            job_id: f.job_id,
            account: found.account,
            partition: found.job.partition,
            learning_sample: sample,
        })
    }
}

// ----- budget context ------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RunInfo {
    pub cluster: String,
    pub job_id: u32,
    pub end_state: String,
    pub start: String,
    pub end: String,
    pub elapsed_s: i64,
    #[serde(serialize_with = "exact")]
    pub cost: Money,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GrantRef {
    pub number: String,
    pub agency: String,
    pub pi: String,
    pub status: String,
    pub start: String,
    pub end: String,
    #[serde(serialize_with = "exact")]
    pub award: Money,
    #[serde(serialize_with = "exact")]
    pub remaining: Money,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CostUpdateInfo {
    pub source: String,
    #[serde(serialize_with = "exact")]
    pub actual: Money,
    #[serde(serialize_with = "exact")]
    pub adjustment: Money,
    #[serde(serialize_with = "exact_opt")]
    pub compute: Option<Money>,
    #[serde(serialize_with = "exact_opt")]
    pub storage: Option<Money>,
    #[serde(serialize_with = "exact_opt")]
    pub network: Option<Money>,
    #[serde(serialize_with = "exact_opt")]
    pub spot_savings: Option<Money>,
    pub instance_types: serde_json::Value,
    pub received_at: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AccountContext {
    pub name: String,
    pub status: String,
    #[serde(serialize_with = "exact")]
    pub allocated: Money,
    #[serde(serialize_with = "exact")]
    pub charged: Money,
    #[serde(serialize_with = "exact")]
    pub held: Money,
    #[serde(serialize_with = "exact")]
    pub credit_limit: Money,
    #[serde(serialize_with = "exact")]
    pub available: Money,
    /// Charges (net of refunds and adjustments) per day over the trailing 30 complete days.
    #[serde(serialize_with = "exact")]
    pub burn_rate_per_day: Money,
    /// Days until `available` reaches zero at that rate (0 when it is there already;
    /// `None` with no spending).
    pub days_until_exhausted: Option<i64>,
    pub projected_exhaustion: Option<String>,
    /// Start of the earliest active allocation and end of the latest (unix seconds, end exclusive).
    pub valid_from: Option<i64>,
    pub valid_until: Option<i64>,
}

/// Everything a sister tool needs to know about one job's money.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BudgetContext {
    pub job_id: u32,
    pub cluster: Option<String>,
    pub token: String,
    pub user: String,
    pub partition: String,
    pub state: String,
    pub submitted_at: String,
    pub settled_at: Option<String>,
    #[serde(serialize_with = "exact")]
    pub estimate: Money,
    /// Held when the job was accepted (learning may size it below the estimate).
    #[serde(serialize_with = "exact")]
    pub hold_placed: Money,
    /// Still held.
    #[serde(serialize_with = "exact")]
    pub hold: Money,
    /// Net charge: runs' charges plus adjustments, less refunds.
    #[serde(serialize_with = "exact")]
    pub actual: Money,
    pub request: Option<serde_json::Value>,
    pub runs: Vec<RunInfo>,
    pub account: AccountContext,
    pub grant: Option<GrantRef>,
    /// The metadata of the latest cost update, as sent.
    pub metadata: Option<serde_json::Value>,
    pub cost_updates: Vec<CostUpdateInfo>,
    pub feedback: Option<serde_json::Value>,
}

/// The burn-rate window of the budget context, in days.
pub const CONTEXT_BURN_WINDOW_DAYS: u32 = 30;

impl Budget {
    /// A job's account, grant, estimate, hold, actual, metadata and the account's outlook.
    pub fn budget_context(
        &mut self,
        cluster: Option<&str>,
        job_id: u32,
        now: i64,
    ) -> Result<BudgetContext, IntegrationError> {
        let path = self.ledger.path().to_path_buf();
        let e = sql(&path);
        let (found, runs, grant_number, updates, feedback) = {
            let tx = Tx::read(&mut self.ledger)?;
            let found = find_job(&tx.tx, cluster, job_id)?;
            let runs: Vec<RunInfo> = tx
                .tx
                .prepare_cached(
                    "SELECT cluster, job_id, end_state, start_time, end_time, elapsed_s, cost_micros FROM runs
                     WHERE token = ?1 ORDER BY end_time, id",
                )
                .and_then(|mut s| {
                    s.query_map([&found.job.token], |r| {
                        Ok(RunInfo {
                            cluster: r.get(0)?,
                            job_id: r.get(1)?,
                            end_state: r.get(2)?,
                            start: format_time(r.get(3)?),
                            end: format_time(r.get(4)?),
                            elapsed_s: r.get(5)?,
                            cost: Money::from_micros(r.get(6)?),
                        })
                    })?
                    .collect()
                })
                .map_err(&e)?;
            let grant_number: Option<String> = tx
                .tx
                .prepare_cached(
                    "SELECT grant_number FROM grant_accounts WHERE budget_account_id = ?1
                     ORDER BY status = 'active' DESC, grant_end_date DESC LIMIT 1",
                )
                .and_then(|mut s| s.query_row([found.job.account_id], |r| r.get(0)).optional())
                .map_err(&e)?;
            let updates: Vec<(CostUpdateInfo, Option<String>)> = tx
                .tx
                .prepare_cached(
                    "SELECT source, actual_micros, delta_micros, compute_micros, storage_micros, network_micros,
                       spot_savings_micros, instance_types, received_at, metadata_json
                     FROM cost_updates WHERE token = ?1 ORDER BY id",
                )
                .and_then(|mut s| {
                    s.query_map([&found.job.token], |r| {
                        let m = |i: usize| -> rusqlite::Result<Option<Money>> {
                            Ok(r.get::<_, Option<i64>>(i)?.map(Money::from_micros))
                        };
                        let types: Option<String> = r.get(7)?;
                        Ok((
                            CostUpdateInfo {
                                source: r.get(0)?,
                                actual: Money::from_micros(r.get(1)?),
                                adjustment: Money::from_micros(r.get(2)?),
                                compute: m(3)?,
                                storage: m(4)?,
                                network: m(5)?,
                                spot_savings: m(6)?,
                                instance_types: types
                                    .and_then(|t| serde_json::from_str(&t).ok())
                                    .unwrap_or(serde_json::Value::Array(vec![])),
                                received_at: format_time(r.get(8)?),
                            },
                            r.get(9)?,
                        ))
                    })?
                    .collect()
                })
                .map_err(&e)?;
            let feedback: Option<serde_json::Value> = tx
                .tx
                .prepare_cached(
                    "SELECT estimated_cost_micros, actual_cost_micros, estimated_duration_s, actual_duration_s,
                       performance_rating, optimization_hints, received_at
                     FROM performance_feedback WHERE token = ?1 ORDER BY id DESC LIMIT 1",
                )
                .and_then(|mut s| {
                    s.query_row([&found.job.token], |r| {
                        let hints: Option<String> = r.get(5)?;
                        Ok(serde_json::json!({
                            "estimated_cost": Money::from_micros(r.get(0)?).to_exact_string(),
                            "actual_cost": Money::from_micros(r.get(1)?).to_exact_string(),
                            "estimated_duration": r.get::<_, i64>(2)?,
                            "actual_duration": r.get::<_, i64>(3)?,
                            "performance_rating": r.get::<_, Option<String>>(4)?,
                            "optimization_hints": hints.and_then(|h| serde_json::from_str::<serde_json::Value>(&h).ok()),
                            "received_at": format_time(r.get(6)?),
                        }))
                    })
                    .optional()
                })
                .map_err(&e)?;
            (found, runs, grant_number, updates, feedback)
        };
        let balance = self.balance(&found.account, now)?;
        let grant = match grant_number {
            Some(n) => {
                let d = self.grant(&n)?;
                Some(GrantRef {
                    number: d.grant.number.clone(),
                    agency: d.grant.agency.clone(),
                    pi: d.grant.pi.clone(),
                    status: d.grant.status.clone(),
                    start: format_date(d.grant.start),
                    end: format_date(d.grant.end - DAY_S),
                    award: d.grant.award,
                    remaining: d.remaining(),
                })
            }
            None => None,
        };
        let account = self.account_context(&balance, now)?;
        let metadata = updates
            .iter()
            .rev()
            .find_map(|(_, m)| m.as_deref().and_then(|m| serde_json::from_str::<serde_json::Value>(m).ok()));
        let job = found.job;
        Ok(BudgetContext {
            job_id,
            cluster: found.cluster,
            token: job.token,
            user: job.user_name,
            partition: job.partition,
            state: job.state.to_string(),
            submitted_at: format_time(job.submitted_at),
            settled_at: job.settled_at.map(format_time),
            estimate: job.estimate,
            hold_placed: job.hold_placed,
            hold: job.held,
            actual: job.charged,
            request: serde_json::from_str::<JobRequest>(&job.request_json)
                .ok()
                .and_then(|r| serde_json::to_value(r).ok()),
            runs,
            account,
            grant,
            metadata,
            cost_updates: updates.into_iter().map(|(u, _)| u).collect(),
            feedback,
        })
    }

    /// An account's balance with its burn rate and projected exhaustion of `available`.
    pub fn account_context(&mut self, balance: &Balance, now: i64) -> Result<AccountContext, IntegrationError> {
        let forecast = self.account_forecast(&balance.account, CONTEXT_BURN_WINDOW_DAYS, now)?;
        let burn = forecast.projection.burn_rate_per_day;
        let days = if balance.available.micros() <= 0 {
            Some(0)
        } else if burn.micros() > 0 {
            Some((balance.available.micros() + burn.micros() - 1) / burn.micros())
        } else {
            None
        };
        Ok(AccountContext {
            name: balance.account.clone(),
            status: balance.status.clone(),
            allocated: balance.allocated,
            charged: balance.charged,
            held: balance.held,
            credit_limit: balance.credit_limit,
            available: balance.available,
            burn_rate_per_day: burn,
            days_until_exhausted: days,
            projected_exhaustion: days.map(|d| format_date(now + d * DAY_S)),
            valid_from: balance.valid_from,
            valid_until: balance.valid_until,
        })
    }

    /// A quote (the plugin's decision, nothing held) and, when it would be accepted, the
    /// hold learning would place (the estimate when learning is off).
    pub fn check_quote(&mut self, req: &JobRequest, now: i64) -> Result<(Decision, Option<Money>), IntegrationError> {
        let decision = self.quote(req, now)?;
        let hold = match &decision {
            Decision::Accept { estimate, .. } => {
                let path = self.ledger.path().to_path_buf();
                let e = sql(&path);
                let conn = &self.ledger.conn;
                let id: Option<i64> = conn
                    .prepare_cached("SELECT id FROM accounts WHERE name = ?1")
                    .and_then(|mut s| s.query_row([&req.account], |r| r.get(0)).optional())
                    .map_err(&e)?;
                match id {
                    Some(id) => Some(
                        learning::hold_for_conn(conn, id, &req.partition, "", *estimate, &self.config.learning)
                            .map_err(&e)?,
                    ),
                    None => Some(*estimate),
                }
            }
            _ => None,
        };
        Ok((decision, hold))
    }
}

// ----- the burst launcher's reconciliation files ---------------------------------------------

/// `job-<id>-asbb-reconciliation.json`, as the burst launcher writes it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReconciliationFile {
    job_id: Box<RawValue>,
    account: String,
    #[serde(default)]
    user_id: Option<serde_json::Value>,
    partition: String,
    actual_cost: Box<RawValue>,
    #[serde(default)]
    compute_cost: Option<Box<RawValue>>,
    #[serde(default)]
    storage_cost: Option<Box<RawValue>>,
    #[serde(default)]
    network_cost: Option<Box<RawValue>>,
    #[serde(default)]
    spot_savings: Option<Box<RawValue>>,
    #[serde(default)]
    instance_types: Vec<String>,
    #[serde(default)]
    duration_hours: Option<Box<RawValue>>,
    #[serde(default)]
    success: Option<bool>,
    #[serde(default)]
    export_time: Option<String>,
    #[serde(default)]
    plugin_version: Option<String>,
}

/// The job id in a reconciliation file's name, or `None` when it is not one.
pub fn reconciliation_file_job_id(name: &str) -> Option<u32> {
    let id = name.strip_prefix("job-")?.strip_suffix("-asbb-reconciliation.json")?;
    if id.is_empty() || id.len() > 10 || !id.chars().all(|c| c.is_ascii_digit()) {
        return None;
    }
    id.parse().ok()
}

/// What importing one file did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum FileOutcome {
    Applied(CostOutcome),
    /// Applied before: nothing changed.
    Skipped(CostOutcome),
    Refused {
        reason: String,
    },
}

pub use crate::core::config::IMPORT_SOURCE;

/// Parses one reconciliation file into a cost update.
pub fn parse_reconciliation_file(name: &str, text: &str) -> Result<CostUpdate, String> {
    let name_id = reconciliation_file_job_id(name)
        .ok_or_else(|| "the file name is not job-<id>-asbb-reconciliation.json".to_string())?;
    let f: ReconciliationFile = serde_json::from_str(text).map_err(|e| format!("not a reconciliation file: {e}"))?;
    let job_id = count_from_raw(&f.job_id, "job_id", u32::MAX as u64).map_err(|e| e.to_string())? as u32;
    if job_id != name_id {
        return Err(format!("job_id {job_id} does not match the file name's job {name_id}"));
    }
    let money = |raw: &RawValue, field: &str| money_from_raw(raw, field).map_err(|e| e.to_string());
    let opt = |raw: &Option<Box<RawValue>>, field: &str| raw.as_deref().map(|r| money(r, field)).transpose();
    let duration_s = match &f.duration_hours {
        // Hours with up to six decimals, read exactly, to whole seconds (rounded half up).
        Some(h) => Some((money(h, "duration_hours")?.micros() as i128 * 3600 + 500_000) / 1_000_000),
        None => None,
    };
    let mut metadata = serde_json::Map::new();
    metadata.insert("user_id".into(), f.user_id.clone().unwrap_or(serde_json::Value::Null));
    metadata.insert("success".into(), f.success.map(serde_json::Value::Bool).unwrap_or(serde_json::Value::Null));
    metadata.insert("export_time".into(), f.export_time.clone().map(serde_json::Value::String).unwrap_or_default());
    metadata
        .insert("plugin_version".into(), f.plugin_version.clone().map(serde_json::Value::String).unwrap_or_default());
    metadata.insert("duration_s".into(), duration_s.map(|d| serde_json::Value::from(d as i64)).unwrap_or_default());
    metadata.insert("file".into(), serde_json::Value::String(name.to_string()));
    Ok(CostUpdate {
        cluster: None,
        job_id,
        source: IMPORT_SOURCE.to_string(),
        actual: money(&f.actual_cost, "actual_cost")?,
        compute: opt(&f.compute_cost, "compute_cost")?,
        storage: opt(&f.storage_cost, "storage_cost")?,
        network: opt(&f.network_cost, "network_cost")?,
        spot_savings: opt(&f.spot_savings, "spot_savings")?,
        instance_types: f.instance_types,
        performance: None,
        metadata: Some(serde_json::Value::Object(metadata)),
        expect_account: Some(f.account),
        expect_partition: Some(f.partition),
    })
}

impl Budget {
    /// Imports one file or every `job-<id>-asbb-reconciliation.json` in a folder (in
    /// name order). Each file is applied, skipped (applied before) or refused with why;
    /// a refused file changes nothing.
    pub fn import_costs(
        &mut self,
        path: &Path,
        actor: &str,
        now: i64,
    ) -> Result<Vec<(PathBuf, FileOutcome)>, IntegrationError> {
        let meta = std::fs::metadata(path)
            .map_err(|e| IntegrationError::Invalid(format!("cannot read {}: {e}", path.display())))?;
        let files: Vec<PathBuf> = if meta.is_dir() {
            let mut v: Vec<PathBuf> = std::fs::read_dir(path)
                .map_err(|e| IntegrationError::Invalid(format!("cannot read {}: {e}", path.display())))?
                .filter_map(|d| d.ok().map(|d| d.path()))
                .filter(|p| {
                    p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.ends_with("-asbb-reconciliation.json"))
                })
                .collect();
            v.sort();
            v
        } else {
            vec![path.to_path_buf()]
        };
        let mut out = Vec::with_capacity(files.len());
        for file in files {
            let outcome = match self.import_one(&file, actor, now) {
                Ok(o) if o.applied => FileOutcome::Applied(o),
                Ok(o) => FileOutcome::Skipped(o),
                Err(ImportError::Refused(reason)) => FileOutcome::Refused { reason },
                // The ledger itself failing stops the import: nothing after it is tried.
                Err(ImportError::Ledger(e)) => return Err(e),
            };
            out.push((file, outcome));
        }
        Ok(out)
    }

    fn import_one(&mut self, file: &Path, actor: &str, now: i64) -> Result<CostOutcome, ImportError> {
        let name = file.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_string();
        // Only a regular file of root, SlurmUser or the caller, never through a symlink,
        // never waiting on a FIFO, never more than the limit (issue 17).
        let bytes =
            crate::core::safe_fs::read_trusted_file(file, MAX_IMPORT_FILE_BYTES).map_err(ImportError::Refused)?;
        let text = String::from_utf8(bytes)
            .map_err(|_| ImportError::Refused("cannot read: stream did not contain valid UTF-8".into()))?;
        let update = parse_reconciliation_file(&name, &text).map_err(ImportError::Refused)?;
        self.apply_cost_update(&update, actor, now).map_err(|e| match e {
            IntegrationError::Budget(b) => ImportError::Ledger(IntegrationError::Budget(b)),
            other => ImportError::Refused(other.to_string()),
        })
    }
}

enum ImportError {
    Refused(String),
    Ledger(IntegrationError),
}

// ----- account members (who may read an account over the unix socket) ---------------------

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Member {
    pub user: String,
    pub uid: Option<u32>,
    /// "member" (added by an admin) or "jobs" (has run jobs in the account).
    pub via: String,
    pub added_at: Option<String>,
    pub added_by: Option<String>,
}

impl Budget {
    /// Adds `user` (with its uid when known) to `account`'s members; false if already one.
    pub fn add_member(
        &mut self,
        account: &str,
        user: &str,
        uid: Option<u32>,
        actor: &str,
        now: i64,
    ) -> Result<bool, IntegrationError> {
        check_name("user", user)?;
        let path = self.ledger.path().to_path_buf();
        let e = sql(&path);
        let tx = Tx::write(&mut self.ledger)?;
        let acc = tx
            .account_by_name(account)
            .map_err(&e)?
            .ok_or_else(|| IntegrationError::UnknownAccount(format!("unknown account '{account}'")))?;
        let n = tx
            .tx
            .execute(
                "INSERT OR IGNORE INTO account_members (account_id, user_name, uid, added_at, added_by) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![acc.id, user, uid, now, actor],
            )
            .map_err(&e)?;
        if n == 1 {
            crate::core::ledger::postings::audit(&tx, actor, now, "account member add", &format!("{account} {user}"))
                .map_err(&e)?;
        }
        tx.commit()?;
        Ok(n == 1)
    }

    /// Removes `user` from `account`'s members; false if it was not one.
    pub fn remove_member(
        &mut self,
        account: &str,
        user: &str,
        actor: &str,
        now: i64,
    ) -> Result<bool, IntegrationError> {
        let path = self.ledger.path().to_path_buf();
        let e = sql(&path);
        let tx = Tx::write(&mut self.ledger)?;
        let acc = tx
            .account_by_name(account)
            .map_err(&e)?
            .ok_or_else(|| IntegrationError::UnknownAccount(format!("unknown account '{account}'")))?;
        let n = tx
            .tx
            .execute("DELETE FROM account_members WHERE account_id = ?1 AND user_name = ?2", params![acc.id, user])
            .map_err(&e)?;
        if n == 1 {
            crate::core::ledger::postings::audit(
                &tx,
                actor,
                now,
                "account member remove",
                &format!("{account} {user}"),
            )
            .map_err(&e)?;
        }
        tx.commit()?;
        Ok(n == 1)
    }

    /// An account's members and the users who ran jobs in it.
    pub fn members(&mut self, account: &str) -> Result<Vec<Member>, IntegrationError> {
        let path = self.ledger.path().to_path_buf();
        let e = sql(&path);
        let tx = Tx::read(&mut self.ledger)?;
        let acc = tx
            .account_by_name(account)
            .map_err(&e)?
            .ok_or_else(|| IntegrationError::UnknownAccount(format!("unknown account '{account}'")))?;
        let mut out: Vec<Member> = tx
            .tx
            .prepare_cached(
                "SELECT user_name, uid, added_at, added_by FROM account_members WHERE account_id = ?1 ORDER BY user_name",
            )
            .and_then(|mut s| {
                s.query_map([acc.id], |r| {
                    Ok(Member {
                        user: r.get(0)?,
                        uid: r.get(1)?,
                        via: "member".into(),
                        added_at: Some(format_time(r.get(2)?)),
                        added_by: r.get(3)?,
                    })
                })?
                .collect()
            })
            .map_err(&e)?;
        let with_jobs: Vec<(String, u32)> = tx
            .tx
            .prepare_cached("SELECT DISTINCT user_name, uid FROM jobs WHERE account_id = ?1 ORDER BY user_name, uid")
            .and_then(|mut s| s.query_map([acc.id], |r| Ok((r.get(0)?, r.get(1)?)))?.collect())
            .map_err(&e)?;
        for (user, uid) in with_jobs {
            if !out.iter().any(|m| m.user == user) {
                out.push(Member { user, uid: Some(uid), via: "jobs".into(), added_at: None, added_by: None });
            }
        }
        Ok(out)
    }

    /// The accounts a user may read: those they ran jobs in (by uid) and those they are a
    /// member of (by uid or name).
    pub fn accounts_of_user(&mut self, uid: u32, name: Option<&str>) -> Result<Vec<String>, IntegrationError> {
        let path = self.ledger.path().to_path_buf();
        let e = sql(&path);
        self.ledger
            .conn
            .prepare_cached(
                "SELECT a.name FROM accounts a WHERE
                   EXISTS (SELECT 1 FROM account_job_users u WHERE u.account_id = a.id AND u.uid = ?1)
                   OR EXISTS (SELECT 1 FROM account_members m WHERE m.account_id = a.id
                              AND (m.uid = ?1 OR (?2 IS NOT NULL AND m.user_name = ?2)))
                 ORDER BY a.name",
            )
            .and_then(|mut s| s.query_map(params![uid, name], |r| r.get(0))?.collect())
            .map_err(e)
    }
}

// ----- what /metrics shows -----------------------------------------------------------------------

/// Counts and amounts for `/metrics`. Every figure comes from a total the ledger keeps
/// up to date as it writes (the accounts' and allocations' cached totals, the open jobs
/// through the `jobs_state` index, the last row id of append-only tables), so a scrape
/// costs a few index lookups however long the journal is; nothing here reads the journal.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct MetricsSnapshot {
    /// Jobs by state: what the plugin decided and where they are now. Refusals write
    /// nothing to the ledger, so they are not here.
    pub jobs_by_state: Vec<(String, i64)>,
    /// Over all accounts: jobs holding money, and the money they hold (micros).
    pub holds_open: i64,
    pub holds_open_micros: i64,
    /// Per account, only when asked for (callers with role `read` or more).
    pub accounts: Option<Vec<AccountMetrics>>,
    /// Submit time of the oldest job still holding money.
    pub oldest_open_hold_at: Option<i64>,
    /// Runs charged with no hold behind them (the submit hook did not price the job:
    /// ledger unavailable with on_ledger_error = accept, or submitted before asbb).
    pub runs_without_hold: i64,
    pub cost_updates: i64,
    pub feedback: i64,
    pub learning_samples: i64,
}

/// One account's figures in `/metrics`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct AccountMetrics {
    pub name: String,
    /// Jobs holding money, and the money held (micros).
    pub holds_open: i64,
    pub held_micros: i64,
    /// Net charged, all time (charges − refunds + adjustments, micros): what its
    /// allocations were debited plus its overdraft.
    pub charged_micros: i64,
}

/// States in which a job can hold money (settled, released and denied jobs hold none).
const OPEN_STATES: &str = "('held', 'awaiting_approval', 'awaiting_funds')";

impl Budget {
    /// The figures behind `/metrics`; `per_account` adds each account's (see
    /// `MetricsSnapshot` for where they come from).
    pub fn metrics_snapshot(&mut self, per_account: bool) -> Result<MetricsSnapshot, IntegrationError> {
        let path = self.ledger.path().to_path_buf();
        let e = sql(&path);
        let tx = Tx::read(&mut self.ledger)?;
        let c = &tx.tx;
        let jobs_by_state = c
            .prepare_cached("SELECT state, count(*) FROM jobs GROUP BY state ORDER BY state")
            .and_then(|mut s| s.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?.collect())
            .map_err(&e)?;
        // Open holds per account id: the jobs_state index finds the open jobs.
        let open: Vec<(i64, i64, i64)> = c
            .prepare_cached(&format!(
                "SELECT account_id, count(*), min(submitted_at) FROM jobs
                 WHERE state IN {OPEN_STATES} AND held_micros > 0 GROUP BY account_id"
            ))
            .and_then(|mut s| s.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?.collect())
            .map_err(&e)?;
        let holds_open = open.iter().map(|(_, n, _)| n).sum();
        let oldest_open_hold_at = open.iter().map(|(_, _, t)| *t).min();
        let one = |q: &str| -> Result<i64, IntegrationError> {
            c.query_row(q, [], |r| r.get::<_, Option<i64>>(0)).map(Option::unwrap_or_default).map_err(&e)
        };
        let holds_open_micros = one("SELECT sum(held_micros) FROM accounts")?;
        let accounts = if per_account {
            let rows: Vec<(i64, String, i64, i64)> = c
                .prepare_cached(
                    "SELECT a.id, a.name, a.held_micros,
                            a.overdraft_micros + coalesce((SELECT sum(l.debited_micros) FROM allocations l
                                                           WHERE l.account_id = a.id), 0)
                     FROM accounts a ORDER BY a.name",
                )
                .and_then(|mut s| s.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?.collect())
                .map_err(&e)?;
            Some(
                rows.into_iter()
                    .map(|(id, name, held_micros, charged_micros)| AccountMetrics {
                        name,
                        holds_open: open.iter().find(|(a, _, _)| *a == id).map_or(0, |(_, n, _)| *n),
                        held_micros,
                        charged_micros,
                    })
                    .collect(),
            )
        } else {
            None
        };
        // These tables are append-only (rows are never deleted) with integer primary
        // keys SQLite numbers 1, 2, 3, ...: the last id is the row count.
        Ok(MetricsSnapshot {
            jobs_by_state,
            holds_open,
            holds_open_micros,
            accounts,
            oldest_open_hold_at,
            runs_without_hold: one("SELECT count(*) FROM runs WHERE token IS NULL")?,
            cost_updates: one("SELECT max(id) FROM cost_updates")?,
            feedback: one("SELECT max(id) FROM performance_feedback")?,
            learning_samples: one("SELECT max(id) FROM learning_samples")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(s: &str) -> Box<RawValue> {
        serde_json::from_str(s).unwrap()
    }

    #[test]
    fn amounts_are_read_from_their_text() {
        assert_eq!(money_from_raw(&raw("12.345678"), "x").unwrap().micros(), 12_345_678);
        assert_eq!(money_from_raw(&raw("\"0.10\""), "x").unwrap().micros(), 100_000);
        assert_eq!(money_from_raw(&raw("0.1"), "x").unwrap().micros(), 100_000);
        assert_eq!(money_from_raw(&raw("3"), "x").unwrap().micros(), 3_000_000);
        for bad in ["1e3", "-1", "1.0000001", "null", "true", "\"abc\"", "[1]"] {
            assert!(money_from_raw(&raw(bad), "x").is_err(), "{bad}");
        }
    }

    #[test]
    fn file_names_name_a_job() {
        assert_eq!(reconciliation_file_job_id("job-42-asbb-reconciliation.json"), Some(42));
        assert_eq!(reconciliation_file_job_id("job--asbb-reconciliation.json"), None);
        assert_eq!(reconciliation_file_job_id("job-4x-asbb-reconciliation.json"), None);
        assert_eq!(reconciliation_file_job_id("job-99999999999-asbb-reconciliation.json"), None);
    }
}
