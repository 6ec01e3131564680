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
//! `adjust:<cluster>:<J>:<S>`) through `Budget::adjust` (`decisions::corrections`), which takes
//! money back from where the job's charges went (newest first) or posts extra cost like
//! a charge, overflow to overdraft, keeping every cached total in step with the journal.
//! The same (cluster, J, S) again changes nothing (`applied: false`); the same key with
//! a different actual is refused as a conflict. A job is adjusted only once all its
//! runs are reconciled (state settled or released).
//!
//! Amounts in and out are decimal text: JSON numbers are read from their text (never
//! through f64) with `Money::parse`, so `12.345678` is exactly 12_345_678 micros and
//! `1e3`, negatives and more than six decimals are refused.

mod context;
mod cost_updates;
mod feedback;
mod import;
mod jobs;
mod members;
mod metrics;
pub use self::{context::*, cost_updates::*, feedback::*, import::*, jobs::*, members::*, metrics::*};

use crate::core::decisions::{format_date, format_time, Balance, Budget, BudgetError, Decision, DAY_S};
use crate::core::ledger::{JobRow, JobState, LedgerError, NewCostUpdate, NewFeedback, Tx};
use crate::core::money::Money;
use crate::core::pricing::job::JobRequest;
use crate::core::pricing::learning::Sample;
use crate::core::pricing::metadata::JobMetadata;

use serde::{Deserialize, Serialize, Serializer};
use serde_json::value::RawValue;
use std::path::{Path, PathBuf};

/// Largest reconciliation file `import-costs` reads.
pub const MAX_IMPORT_FILE_BYTES: u64 = 64 * 1024;
/// Longest source name.
pub const MAX_SOURCE_LEN: usize = crate::core::text::SOURCE_NAME.max_len;

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

fn check_name(what: &str, s: &str) -> Result<(), IntegrationError> {
    crate::core::text::SOURCE_NAME.check(what, s).map_err(IntegrationError::Invalid)
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
