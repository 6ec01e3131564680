// SPDX-License-Identifier: GPL-2.0-or-later
//! Learning from what jobs actually cost: holds sized from history, within a bound.
//!
//! Every reconciled run (and every performance feedback record, unless
//! `[learning] include_feedback = false`) leaves a sample of estimated vs actual cost
//! and duration, grouped by (account, partition, research domain; "" for jobs that
//! name none). When `[learning] enabled`, a new job's hold is
//!
//! ```text
//! hold = ceil(estimate × factor / 1e6)
//! factor = clamp(p-th percentile of actual/estimate over the group's last
//!                window_samples samples, min_hold_factor, 1.0)      (ppm)
//! ```
//!
//! and only once the group has `min_samples` samples; before that, and when learning is
//! off, the hold is the estimate. Charges stay actual: learning only decides how much
//! of the available money a job ties up while it runs.
//!
//! The bound. Because `factor ≥ min_hold_factor`, `hold ≥ min_hold_factor × estimate`,
//! so one job can cost at most `(1 − min_hold_factor) × estimate` more than it held
//! (for a job that uses its whole estimate). An account whose available money `A` is
//! filled with such holds admitted at most `A / min_hold_factor` of estimates, so the
//! worst overdraft those jobs can cause is `A × (1 − min) / min` (equal to `A` at the
//! default 0.5). A job whose allocation or run exceeds its estimate overdraws with or
//! without learning; that is not learning's doing and not part of this bound.
//!
//! All arithmetic applied to money is integer (ppm ratios, i128 products, rounded up
//! so a hold is never below the bound).

use crate::core::config::LearningConfig;
pub use crate::core::ledger::Sample;
use crate::core::ledger::{JobRow, Ledger, LedgerError, SampleRow, Tx};
use crate::core::money::Money;
use crate::core::pricing::job::{EndState, JobCompletion};
use serde::Serialize;
use std::collections::BTreeMap;

/// One in parts per million.
pub const PPM: i64 = 1_000_000;
/// Ratios are capped here (100×) so one wild sample cannot overflow a report.
pub const MAX_RATIO_PPM: i64 = 100 * PPM;

/// actual/estimate in ppm, rounded up, capped at `MAX_RATIO_PPM`. `estimate` must be > 0.
pub fn ratio_ppm(actual_micros: i64, estimate_micros: i64) -> i64 {
    debug_assert!(estimate_micros > 0);
    let num = actual_micros.max(0) as i128 * PPM as i128;
    let den = estimate_micros.max(1) as i128;
    let r = (num + den - 1) / den;
    r.min(MAX_RATIO_PPM as i128) as i64
}

/// The nearest-rank percentile of `sorted` (ascending, non-empty).
pub fn percentile(sorted: &[i64], pct: u32) -> i64 {
    debug_assert!(!sorted.is_empty());
    let n = sorted.len();
    let rank = (pct as usize * n).div_ceil(100).clamp(1, n);
    sorted[rank - 1]
}

/// The hold factor (ppm) from a window of ratios, or `None` with too few samples.
/// Always within `[cfg.min_hold_factor_ppm, PPM]`.
pub fn factor_from_ratios(ratios: &[i64], cfg: &LearningConfig) -> Option<i64> {
    if ratios.len() < cfg.min_samples as usize || ratios.is_empty() {
        return None;
    }
    let mut sorted = ratios.to_vec();
    sorted.sort_unstable();
    Some(percentile(&sorted, cfg.percentile).clamp(cfg.min_hold_factor_ppm, PPM))
}

/// `ceil(estimate × factor / 1e6)`: never below `factor × estimate`, never above `estimate`
/// for a factor ≤ 1.
pub fn hold_from_factor(estimate: Money, factor_ppm: i64) -> Money {
    let e = estimate.micros().max(0) as i128;
    let f = factor_ppm.clamp(0, PPM) as i128;
    Money::from_micros(((e * f + PPM as i128 - 1) / PPM as i128) as i64)
}

/// The factor (ppm) of a group whose most recent samples are `recent` ((estimate,
/// actual) micros, newest first), or `None` while it has too few.
fn factor_of(recent: &[(i64, i64)], cfg: &LearningConfig) -> Option<i64> {
    let ratios: Vec<i64> = recent.iter().map(|&(estimate, actual)| ratio_ppm(actual, estimate)).collect();
    factor_from_ratios(&ratios, cfg)
}

/// What to hold for a job estimated at `estimate`: the estimate, or less once the
/// group has learned (see the module doc). Reads at most `window_samples` rows.
pub(crate) fn hold_for(
    tx: &Tx<'_>,
    account_id: i64,
    partition: &str,
    domain: &str,
    estimate: Money,
    cfg: &LearningConfig,
) -> Result<Money, LedgerError> {
    hold_with(estimate, cfg, || group_factor(tx, account_id, partition, domain, cfg))
}

/// What to hold for a job estimated at `estimate`, given its group's factor as
/// `factor` finds it (asked only when learning applies).
pub(crate) fn hold_with(
    estimate: Money,
    cfg: &LearningConfig,
    factor: impl FnOnce() -> Result<Option<i64>, LedgerError>,
) -> Result<Money, LedgerError> {
    if !cfg.enabled || estimate.micros() <= 0 {
        return Ok(estimate);
    }
    Ok(factor()?.map_or(estimate, |f| hold_from_factor(estimate, f)))
}

/// The factor (ppm) of the group (account, partition, domain), or `None` while it has
/// too few samples. Reads at most `window_samples` rows.
pub(crate) fn group_factor(
    tx: &Tx<'_>,
    account_id: i64,
    partition: &str,
    domain: &str,
    cfg: &LearningConfig,
) -> Result<Option<i64>, LedgerError> {
    let recent = tx.recent_samples(account_id, partition, domain, cfg.include_feedback, cfg.window_samples)?;
    Ok(factor_of(&recent, cfg))
}

/// `hold_for` in a read transaction of its own.
pub fn hold_for_ledger(
    ledger: &mut Ledger,
    account_id: i64,
    partition: &str,
    domain: &str,
    estimate: Money,
    cfg: &LearningConfig,
) -> Result<Money, LedgerError> {
    hold_for(&Tx::read(ledger)?, account_id, partition, domain, estimate, cfg)
}

/// Called by `Budget::reconcile` in its transaction: one sample per run that ran, of
/// a job asbb priced (the estimate's per-task share against the run's cost). Runs that
/// ended for the system's reasons (requeue, node or boot failure) teach nothing about
/// estimates and are skipped.
pub(crate) fn record_run(
    tx: &Tx<'_>,
    c: &JobCompletion,
    job: Option<&JobRow>,
    account_id: i64,
    cost: Money,
    now: i64,
) -> Result<(), LedgerError> {
    let Some(job) = job else { return Ok(()) };
    if c.allocated.is_none() || matches!(c.state, EndState::Requeued | EndState::NodeFail | EndState::BootFail) {
        return Ok(());
    }
    let share = job.estimate.micros() / job.tasks_total.max(1) as i64;
    // 0: a row migrated from a request that did not say.
    let time_limit_s = (job.time_limit_min > 0).then(|| job.time_limit_min as i64 * 60);
    let sample = Sample {
        key: &format!("run:{}", c.run_key()),
        source: "run",
        account_id,
        partition: &c.partition,
        domain: job.research_domain.as_deref().unwrap_or(""),
        token: Some(&job.token),
        job_id: Some(c.job_id),
        estimate: Money::from_micros(share),
        actual: cost,
        estimated_s: time_limit_s,
        actual_s: Some(c.elapsed_s()),
        at: now,
    };
    tx.record_sample(&sample)?;
    Ok(())
}

// ----- the accuracy report -------------------------------------------------------------

/// Estimate accuracy of one group, and what learning did or would have done to it,
/// replayed in order: each sample's hold uses only the samples before it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GroupAccuracy {
    pub account: String,
    pub partition: String,
    pub domain: String,
    pub samples: u64,
    /// actual/estimate, ppm.
    pub median_ratio_ppm: i64,
    pub p90_ratio_ppm: i64,
    /// actual/hold with learning, ppm.
    pub median_ratio_learned_ppm: i64,
    pub p90_ratio_learned_ppm: i64,
    /// actual duration / time limit, ppm (samples that have both).
    pub median_duration_ratio_ppm: Option<i64>,
    pub p90_duration_ratio_ppm: Option<i64>,
    /// Σ estimates and Σ learned holds over the samples.
    pub estimated: Money,
    pub learned_holds: Money,
    pub actual: Money,
    /// Σ (estimate − learned hold): hold money learning would have left available.
    pub freed: Money,
    /// Samples whose actual cost exceeded the learned hold but not the estimate, and by how much in all.
    pub under_held: u64,
    pub under_held_amount: Money,
    /// The largest (actual − learned hold) of one sample, and the bound it is within
    /// for samples that did not exceed their estimate: (1 − min) × estimate.
    pub worst_excess: Money,
    /// Factor now (ppm), or `None` while the group has too few samples.
    pub factor_ppm: Option<i64>,
}

/// The accuracy report over every group (optionally one account and/or partition).
pub fn accuracy(
    ledger: &Ledger,
    cfg: &LearningConfig,
    account: Option<&str>,
    partition: Option<&str>,
) -> Result<Vec<GroupAccuracy>, LedgerError> {
    let mut groups: BTreeMap<(String, String, String), Vec<SampleRow>> = BTreeMap::new();
    for row in ledger.samples(account, partition, cfg.include_feedback)? {
        groups.entry((row.account.clone(), row.partition.clone(), row.domain.clone())).or_default().push(row);
    }
    Ok(groups
        .into_iter()
        .map(|((account, partition, domain), rows)| replay(account, partition, domain, &rows, cfg))
        .collect())
}

fn replay(
    account: String,
    partition: String,
    domain: String,
    rows: &[SampleRow],
    cfg: &LearningConfig,
) -> GroupAccuracy {
    let window = cfg.window_samples as usize;
    let mut ratios = Vec::with_capacity(rows.len());
    let mut learned = Vec::with_capacity(rows.len());
    let mut durations = Vec::new();
    let (mut estimated, mut holds, mut actual, mut under_amount, mut worst) = (0i64, 0i64, 0i64, 0i64, i64::MIN);
    let mut under = 0u64;
    for (i, r) in rows.iter().enumerate() {
        let lo = i.saturating_sub(window);
        let factor = factor_from_ratios(&ratios[lo..i], cfg);
        let hold = factor.map_or(r.estimate, |f| hold_from_factor(Money::from_micros(r.estimate), f).micros());
        let ratio = ratio_ppm(r.actual, r.estimate);
        ratios.push(ratio);
        learned.push(ratio_ppm(r.actual, hold.max(1)));
        if let (Some(e), Some(a)) = (r.estimated_s, r.actual_s) {
            if e > 0 {
                durations.push(ratio_ppm(a, e));
            }
        }
        estimated += r.estimate;
        holds += hold;
        actual += r.actual;
        if r.actual > hold && r.actual <= r.estimate {
            under += 1;
            under_amount += r.actual - hold;
        }
        worst = worst.max(r.actual - hold);
    }
    let lo = rows.len().saturating_sub(window);
    let factor_now = factor_from_ratios(&ratios[lo..], cfg);
    let stats = |v: &[i64]| -> (i64, i64) {
        if v.is_empty() {
            return (0, 0);
        }
        let mut s = v.to_vec();
        s.sort_unstable();
        (percentile(&s, 50), percentile(&s, 90))
    };
    let (median, p90) = stats(&ratios);
    let (median_l, p90_l) = stats(&learned);
    let (median_d, p90_d) = stats(&durations);
    GroupAccuracy {
        account,
        partition,
        domain,
        samples: rows.len() as u64,
        median_ratio_ppm: median,
        p90_ratio_ppm: p90,
        median_ratio_learned_ppm: median_l,
        p90_ratio_learned_ppm: p90_l,
        median_duration_ratio_ppm: (!durations.is_empty()).then_some(median_d),
        p90_duration_ratio_ppm: (!durations.is_empty()).then_some(p90_d),
        estimated: Money::from_micros(estimated),
        learned_holds: Money::from_micros(holds),
        actual: Money::from_micros(actual),
        freed: Money::from_micros(estimated - holds),
        under_held: under,
        under_held_amount: Money::from_micros(under_amount),
        worst_excess: Money::from_micros(worst.max(0)),
        factor_ppm: factor_now,
    }
}

/// `0.87` from 870_000 ppm (two decimals, half up).
pub fn format_ppm(ppm: i64) -> String {
    let hundredths = (ppm + 5_000) / 10_000;
    format!("{}.{:02}", hundredths / 100, hundredths % 100)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(min: i64, samples: u32) -> LearningConfig {
        LearningConfig {
            enabled: true,
            min_hold_factor_ppm: min,
            min_samples: samples,
            window_samples: 200,
            percentile: 90,
            include_feedback: true,
        }
    }

    #[test]
    fn percentile_is_nearest_rank() {
        let v: Vec<i64> = (1..=10).collect();
        assert_eq!(percentile(&v, 90), 9);
        assert_eq!(percentile(&v, 50), 5);
        assert_eq!(percentile(&v, 100), 10);
        assert_eq!(percentile(&[7], 90), 7);
    }

    #[test]
    fn factor_waits_for_samples_and_stays_in_bounds() {
        let c = cfg(500_000, 3);
        assert_eq!(factor_from_ratios(&[100_000, 100_000], &c), None);
        assert_eq!(factor_from_ratios(&[100_000, 100_000, 100_000], &c), Some(500_000));
        assert_eq!(factor_from_ratios(&[700_000, 800_000, 3_000_000], &c), Some(1_000_000));
        assert_eq!(factor_from_ratios(&[700_000, 800_000, 750_000], &c), Some(800_000));
    }

    #[test]
    fn holds_round_up_and_never_exceed_the_estimate() {
        assert_eq!(hold_from_factor(Money::from_micros(3), 500_000).micros(), 2);
        assert_eq!(hold_from_factor(Money::from_micros(10_000_000), 800_000).micros(), 8_000_000);
        assert_eq!(hold_from_factor(Money::from_micros(10_000_000), PPM).micros(), 10_000_000);
        assert_eq!(ratio_ppm(1, 3), 333_334);
        assert_eq!(format_ppm(874_999), "0.87");
        assert_eq!(format_ppm(875_000), "0.88");
    }
}
