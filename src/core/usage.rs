// SPDX-License-Identifier: GPL-2.0-or-later
//! Chargeback: what was spent between two dates, grouped by account, user, project,
//! research domain, grant, partition or QOS (one or several, nested), read from the
//! journal's cost entries (charges, refunds, adjustments) posted in the window.
//!
//! - **cost** is the net: charges + adjustments − refunds.
//! - **jobs** counts the jobs with a charge in the window (a job charged to two grants
//!   counts under each).
//! - **CPU-hours and GPU-hours** come from the runs charged in the window (allocated
//!   CPUs or GPUs × elapsed time), counted once per run.
//! - **grant** is where the money went: the grant whose allocation a cost entry was
//!   posted to, `(deposit)` for an allocation no grant funds, `(overdraft)` for cost no
//!   allocation covered.

use crate::core::decisions::{Budget, BudgetError};
use crate::core::ledger::{CostColumns, Tx};
use crate::core::money::Money;
use crate::core::pricing::job::Resources;
use serde::Serialize;
use std::collections::{BTreeMap, HashMap, HashSet};

/// What a usage report groups by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum UsageKey {
    Account,
    User,
    Project,
    Domain,
    Grant,
    Partition,
    Qos,
    Cluster,
}

impl UsageKey {
    pub const ALL: [UsageKey; 8] = [
        UsageKey::Account,
        UsageKey::User,
        UsageKey::Project,
        UsageKey::Domain,
        UsageKey::Grant,
        UsageKey::Partition,
        UsageKey::Qos,
        UsageKey::Cluster,
    ];

    pub fn name(self) -> &'static str {
        match self {
            UsageKey::Account => "account",
            UsageKey::User => "user",
            UsageKey::Project => "project",
            UsageKey::Domain => "domain",
            UsageKey::Grant => "grant",
            UsageKey::Partition => "partition",
            UsageKey::Qos => "qos",
            UsageKey::Cluster => "cluster",
        }
    }

    pub fn parse(text: &str) -> Result<UsageKey, String> {
        UsageKey::ALL.into_iter().find(|k| k.name() == text).ok_or_else(|| {
            format!(
                "cannot group by '{}'; use account, user, project, domain, grant, partition, qos or cluster",
                crate::core::text::clean_text(text)
            )
        })
    }
}

/// One group's figures (or the total's).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct UsageFigures {
    /// Net: charges + adjustments − refunds.
    pub cost: Money,
    pub charges: Money,
    pub refunds: Money,
    /// Signed: positive = more cost.
    pub adjustments: Money,
    pub jobs: u64,
    pub cpu_seconds: u64,
    pub gpu_seconds: u64,
}

/// One line of the report: its group (one value per key, in `by` order) and figures.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UsageRow {
    pub group: Vec<String>,
    pub figures: UsageFigures,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UsageReport {
    /// The window: [from, until) in unix seconds.
    pub from: i64,
    pub until: i64,
    pub by: Vec<UsageKey>,
    /// Sorted by group.
    pub rows: Vec<UsageRow>,
    pub total: UsageFigures,
}

/// Whole hours to two decimals, from seconds (rounded half up), e.g. "12.50".
pub fn hours_text(seconds: u64) -> String {
    let centi = (seconds as u128 * 100 + 1800) / 3600;
    format!("{}.{:02}", centi / 100, centi % 100)
}

/// A group's running figures, and the jobs seen in it (by their number in the report).
#[derive(Default)]
struct Tally {
    figures: UsageFigures,
    jobs: HashSet<u32>,
    // i128: no sum over a window can overflow it.
    cost: i128,
    charges: i128,
    refunds: i128,
    adjustments: i128,
}

impl Tally {
    fn add(&mut self, kind: &str, amount: i64, job: u32, run: Option<(u64, u64)>) {
        let amount = amount as i128;
        match kind {
            "charge" => {
                self.charges += amount;
                self.cost += amount;
                self.jobs.insert(job);
            }
            "refund" => {
                self.refunds += amount;
                self.cost -= amount;
            }
            _ => {
                self.adjustments += amount;
                self.cost += amount;
            }
        }
        if let Some((cpu_s, gpu_s)) = run {
            self.figures.cpu_seconds = self.figures.cpu_seconds.saturating_add(cpu_s);
            self.figures.gpu_seconds = self.figures.gpu_seconds.saturating_add(gpu_s);
        }
    }

    fn finish(mut self) -> Result<UsageFigures, BudgetError> {
        let money = |v: i128| i64::try_from(v).map(Money::from_micros).map_err(|_| BudgetError::Overflow);
        self.figures.cost = money(self.cost)?;
        self.figures.charges = money(self.charges)?;
        self.figures.refunds = money(self.refunds)?;
        self.figures.adjustments = money(self.adjustments)?;
        self.figures.jobs = self.jobs.len() as u64;
        Ok(self.figures)
    }
}

impl Budget {
    /// The usage report for [from, until), grouped by `by` (at least one key).
    pub fn usage_report(&mut self, from: i64, until: i64, by: &[UsageKey]) -> Result<UsageReport, BudgetError> {
        if by.is_empty() {
            return Err(BudgetError::Invalid("give at least one --by".into()));
        }
        if until <= from {
            return Err(BudgetError::Invalid("--to is before --from".into()));
        }
        let tx = Tx::read(&mut self.ledger)?;
        // The journal's cost entries in the window. Only what the keys need is joined:
        // the job, the allocation's grant; and a charge's first part, its run (for its
        // CPU and GPU time, and the user and partition of a run asbb had no job row for).
        let needs = |keys: &[UsageKey]| by.iter().any(|k| keys.contains(k));
        let columns = CostColumns {
            job: needs(&[UsageKey::User, UsageKey::Project, UsageKey::Domain, UsageKey::Partition, UsageKey::Qos]),
            qos: needs(&[UsageKey::Qos]),
            grant: needs(&[UsageKey::Grant]),
            cluster: needs(&[UsageKey::Cluster]),
        };
        // Groups by their values joined with a unit separator (no value holds one); a
        // row borrows its text and allocates only for a new group or job.
        let mut groups: HashMap<String, Tally> = HashMap::new();
        let mut total = Tally::default();
        let mut group = String::new();
        // Each job's text once, numbered; each allocation shape parsed once (a cluster's
        // runs come in few shapes).
        let mut job_numbers: HashMap<String, u32> = HashMap::new();
        let mut shapes: HashMap<Vec<u8>, Option<(u64, u64)>> = HashMap::new();
        tx.visit_cost_entries(from, until, columns, |entry| {
            let job = match job_numbers.get(entry.job) {
                Some(&n) => n,
                None => {
                    let n = job_numbers.len() as u32;
                    job_numbers.insert(entry.job.to_string(), n);
                    n
                }
            };
            // Only a charge's first part has its run.
            let run = entry.run.and_then(|(json, s)| {
                let shape = match shapes.get(json) {
                    Some(&shape) => shape,
                    None => {
                        let shape = serde_json::from_slice::<Resources>(json)
                            .ok()
                            .map(|res| (res.cpus as u64, res.gpu_total()));
                        shapes.insert(json.to_vec(), shape);
                        shape
                    }
                };
                let s = s.max(0) as u64;
                shape.map(|(cpus, gpus)| (cpus.saturating_mul(s), gpus.saturating_mul(s)))
            });
            group.clear();
            for (n, key) in by.iter().enumerate() {
                if n > 0 {
                    group.push('\u{1f}');
                }
                group.push_str(match key {
                    UsageKey::Account => entry.account,
                    UsageKey::User => entry.user,
                    UsageKey::Project => entry.project,
                    UsageKey::Domain => entry.domain,
                    UsageKey::Partition => entry.partition,
                    UsageKey::Grant => entry.grant,
                    UsageKey::Qos => entry.qos,
                    UsageKey::Cluster => entry.cluster,
                });
            }
            if !groups.contains_key(group.as_str()) {
                groups.insert(group.clone(), Tally::default());
            }
            if let Some(tally) = groups.get_mut(group.as_str()) {
                tally.add(entry.kind, entry.amount, job, run);
            }
            total.add(entry.kind, entry.amount, job, run);
        })?;
        let groups: BTreeMap<Vec<String>, Tally> =
            groups.into_iter().map(|(k, t)| (k.split('\u{1f}').map(str::to_string).collect(), t)).collect();
        let rows = groups
            .into_iter()
            .map(|(group, t)| Ok(UsageRow { group, figures: t.finish()? }))
            .collect::<Result<Vec<_>, BudgetError>>()?;
        Ok(UsageReport { from, until, by: by.to_vec(), rows, total: total.finish()? })
    }
}
