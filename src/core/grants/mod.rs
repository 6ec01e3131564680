// SPDX-License-Identifier: GPL-2.0-or-later
//! Grants: the money research computing is paid from, and what funding agencies are
//! told about it.
//!
//! A grant funds one budget account through ALLOCATIONS, one per budget period (the
//! whole grant, each grant year, or N equal parts). Each allocation holds the
//! period's spendable DIRECT amount, `period award / (1 + indirect rate)` rounded
//! down to the micro-dollar, is valid for the period's dates, and carries the grant's
//! id (`allocations.grant_id`). Charges already post against an account's active
//! allocations, the one ending first first, so an account funded by several grants
//! charges the grant that ends first, and a charge outside a grant's dates cannot land
//! on it. A grant's cost is exactly the journal entries posted to its allocations.
//!
//! Indirect (F&A) cost is never posted: it is `direct × rate`, computed in reports
//! (`indirect_of`). Rates are parts per million (0.30 = 300_000). Because the direct
//! budget is rounded down, `direct + indirect(direct) ≤ award` always holds.
//!
//! Closing a grant ends its allocations at the moment of closing: an `expiry` journal
//! entry records each one's unspent direct remainder and its window shrinks to end
//! now, so no later charge lands on it (a run that ended before the close and is
//! reconciled later still does, as it would have before). If the funded account then
//! has no other allocation with money left, now or later, the open holds of its jobs
//! are released (the jobs keep running; whatever they cost when they end is charged
//! to the account and, with nothing else funding it, becomes overdraft).

pub mod report;

use crate::core::decisions::{format_date, Budget, BudgetError, DAY_S};
use crate::core::ledger::postings::{self, audit};
use crate::core::ledger::{LedgerError, NewGrantRow, Tx};
use crate::core::money::Money;
use chrono::{DateTime, Months, Utc};
use serde::Serialize;

/// Parts per million: a rate of 1.0.
pub const PPM: i64 = 1_000_000;
/// At most this many budget periods per grant.
pub const MAX_PERIODS: u32 = 100;
/// Longest text field (agency, names, program, award id).
pub const MAX_FIELD_LEN: usize = 200;

/// How a grant's dates are split into budget periods.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeriodSplit {
    /// One period: the grant's dates.
    Whole,
    /// Grant years from the start date's anniversaries; the last may be shorter.
    Yearly,
    /// N periods of (nearly) equal whole days.
    Count(u32),
}

impl PeriodSplit {
    /// `yearly` or a count from 1 to 100.
    pub fn parse(text: &str) -> Result<PeriodSplit, BudgetError> {
        let t = text.trim();
        if t.eq_ignore_ascii_case("yearly") {
            return Ok(PeriodSplit::Yearly);
        }
        match t.parse::<u32>() {
            Ok(1) => Ok(PeriodSplit::Whole),
            Ok(n) if (2..=MAX_PERIODS).contains(&n) => Ok(PeriodSplit::Count(n)),
            _ => Err(BudgetError::Invalid(format!(
                "'{}' is not 'yearly' or a number of budget periods from 1 to {MAX_PERIODS}",
                crate::core::text::clean_text(t)
            ))),
        }
    }
}

/// A grant to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewGrant {
    pub number: String,
    pub agency: String,
    pub pi: String,
    /// Where alerts about the grant reach its PI.
    pub pi_email: Option<String>,
    pub co_pis: Vec<String>,
    pub program: Option<String>,
    pub federal_award_id: Option<String>,
    /// First day, UTC midnight.
    pub start: i64,
    /// The midnight after the last day (exclusive).
    pub end: i64,
    pub award: Money,
    pub indirect_rate_ppm: i64,
    /// The budget account it funds; `None` records the grant without funding any.
    pub account: Option<String>,
    pub periods: PeriodSplit,
}

pub use crate::core::ledger::Grant;

/// One budget period with its allocation's cached totals.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GrantPeriod {
    pub period_no: u32,
    pub start: i64,
    pub end: i64,
    /// The period's share of the award (direct + indirect).
    pub amount: Money,
    pub allocation_id: Option<i64>,
    /// The allocation: what may be charged directly.
    pub direct_budget: Money,
    /// Charged to the allocation, net of refunds and adjustments.
    pub direct_spent: Money,
}

/// A grant with its periods.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GrantDetail {
    pub grant: Grant,
    pub periods: Vec<GrantPeriod>,
}

impl GrantDetail {
    pub fn direct_budget(&self) -> Money {
        Money::from_micros(self.periods.iter().map(|p| p.direct_budget.micros()).sum())
    }

    pub fn direct_spent(&self) -> Money {
        Money::from_micros(self.periods.iter().map(|p| p.direct_spent.micros()).sum())
    }

    pub fn indirect_spent(&self) -> Money {
        Money::from_micros(indirect_of(self.direct_spent().micros(), self.grant.indirect_rate_ppm))
    }

    /// Direct + indirect.
    pub fn spent(&self) -> Money {
        Money::from_micros(self.direct_spent().micros() + self.indirect_spent().micros())
    }

    pub fn remaining(&self) -> Money {
        Money::from_micros(self.grant.award.micros() - self.spent().micros())
    }
}

/// Which grants `grants` lists.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GrantFilter {
    pub active_only: bool,
    /// Case-insensitive, whole name.
    pub agency: Option<String>,
}

/// What closing a grant did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GrantClosed {
    pub number: String,
    /// Allocations whose window was cut short.
    pub allocations_ended: u32,
    /// Unspent direct money those allocations held (recorded as expiry entries).
    pub expired: Money,
    pub jobs_released: u32,
    pub holds_released: Money,
}

// ----- integer arithmetic, the one place each rounding happens ------------------------

/// The spendable direct part of `total`: `total / (1 + rate)`, rounded DOWN to the
/// micro-dollar, so that direct + indirect never exceeds `total`.
pub fn direct_of(total: Money, rate_ppm: i64) -> Money {
    let d = total.micros() as i128 * PPM as i128 / (PPM as i128 + rate_ppm as i128);
    Money::from_micros(d as i64)
}

/// Indirect cost of `direct_micros` at `rate_ppm`, rounded half up to the micro-dollar
/// (half away from zero, so a credit mirrors the charge it reverses).
pub fn indirect_of(direct_micros: i64, rate_ppm: i64) -> i64 {
    let n = direct_micros as i128 * rate_ppm as i128;
    let d = PPM as i128;
    let q = (n.abs() + d / 2) / d;
    (if n < 0 { -q } else { q }) as i64
}

/// `30.00%`, `12.3456%`: a rate in parts per million as a percentage.
pub fn format_rate(rate_ppm: i64) -> String {
    let whole = rate_ppm / 10_000;
    let frac = format!("{:04}", rate_ppm % 10_000);
    let trimmed = frac.trim_end_matches('0');
    let frac = if trimmed.len() < 2 { &frac[..2] } else { trimmed };
    format!("{whole}.{frac}%")
}

/// Parses an indirect cost rate: `0.30`, `0.305`, or a percentage `30%`. At least 0,
/// below 1, at most six decimals (four for a percentage).
pub fn parse_rate(text: &str) -> Result<i64, BudgetError> {
    let t = text.trim();
    let bad = || {
        BudgetError::Invalid(format!(
            "indirect cost rate '{}' is not a rate from 0 up to (not including) 1, like 0.30 or 30%",
            crate::core::text::clean_text(t)
        ))
    };
    let (number, scale) = match t.strip_suffix('%') {
        Some(p) => (p.trim(), 100),
        None => (t, 1),
    };
    if number.is_empty() || !number.chars().all(|c| c.is_ascii_digit() || c == '.') {
        return Err(bad());
    }
    let micros = Money::parse(number).map_err(|_| bad())?.micros();
    if micros % scale != 0 {
        return Err(bad());
    }
    let ppm = micros / scale;
    if !(0..PPM).contains(&ppm) {
        return Err(bad());
    }
    Ok(ppm)
}

/// Splits `[start, end)` and `award` into budget periods: `(start, end, amount)`.
/// Amounts are proportional to each period's length; each boundary's cumulative
/// share is rounded down, so the periods add up to the award exactly.
pub fn split_periods(
    start: i64,
    end: i64,
    award: Money,
    split: PeriodSplit,
) -> Result<Vec<(i64, i64, Money)>, BudgetError> {
    let days = (end - start) / DAY_S;
    let mut bounds = vec![start];
    match split {
        PeriodSplit::Whole => {}
        PeriodSplit::Yearly => {
            let first = DateTime::<Utc>::from_timestamp(start, 0)
                .ok_or_else(|| BudgetError::Invalid("start date out of range".into()))?;
            for k in 1..=MAX_PERIODS {
                let next = first
                    .checked_add_months(Months::new(12 * k))
                    .map(|t| t.timestamp())
                    .ok_or_else(|| BudgetError::Invalid("end date out of range".into()))?;
                if next >= end {
                    break;
                }
                bounds.push(next);
            }
            if bounds.len() as u32 > MAX_PERIODS {
                return Err(BudgetError::Invalid(format!("a grant may have at most {MAX_PERIODS} budget periods")));
            }
        }
        PeriodSplit::Count(n) => {
            if n as i64 > days {
                return Err(BudgetError::Invalid(format!(
                    "{n} budget periods do not fit in the grant's {days} day{}",
                    if days == 1 { "" } else { "s" }
                )));
            }
            for i in 1..n as i64 {
                bounds.push(start + i * days / n as i64 * DAY_S);
            }
        }
    }
    bounds.push(end);
    let total_s = (end - start) as i128;
    let share = |t: i64| (award.micros() as i128 * (t - start) as i128 / total_s) as i64;
    let periods: Vec<(i64, i64, Money)> =
        bounds.windows(2).map(|w| (w[0], w[1], Money::from_micros(share(w[1]) - share(w[0])))).collect();
    if periods.iter().any(|p| p.2.micros() <= 0 || direct_of(p.2, 0).micros() <= 0) {
        return Err(BudgetError::Invalid(format!(
            "award {} is too small to split into {} budget periods",
            award,
            periods.len()
        )));
    }
    Ok(periods)
}

fn check_text(what: &str, text: &str, required: bool) -> Result<(), BudgetError> {
    let t = text.trim();
    if t.is_empty() && required {
        return Err(BudgetError::Invalid(format!("{what} must not be empty")));
    }
    if t.chars().count() > MAX_FIELD_LEN || t.chars().any(char::is_control) {
        return Err(BudgetError::Invalid(format!(
            "{what} must be at most {MAX_FIELD_LEN} characters with no control characters"
        )));
    }
    Ok(())
}

/// Letters, digits, `-`, `_`, `.`, `/`; 1 to 64 of them. No `:`, which separates
/// the parts of journal keys (`grant:<number>:p<N>`).
fn check_number(number: &str) -> Result<(), BudgetError> {
    let ok = !number.is_empty()
        && number.len() <= 64
        && number.chars().all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c));
    if ok {
        Ok(())
    } else {
        Err(BudgetError::Invalid(format!(
            "grant number '{}' must be 1-64 letters, digits, '-', '_', '.' or '/'",
            crate::core::text::clean_text(number)
        )))
    }
}

impl NewGrant {
    /// Every check that needs no ledger, in the order a person fixes them.
    pub fn validate(&self) -> Result<Vec<(i64, i64, Money)>, BudgetError> {
        check_number(&self.number)?;
        check_text("funding agency", &self.agency, true)?;
        check_text("principal investigator", &self.pi, true)?;
        if let Some(m) = &self.pi_email {
            crate::core::config::check_mail_address(m)
                .map_err(|r| BudgetError::Invalid(format!("PI mail address {r}")))?;
        }
        for c in &self.co_pis {
            check_text("co-PI name", c, true)?;
        }
        check_text("program", self.program.as_deref().unwrap_or(""), false)?;
        check_text("federal award id", self.federal_award_id.as_deref().unwrap_or(""), false)?;
        if self.end <= self.start {
            return Err(BudgetError::Invalid(format!(
                "end date {} is not after start date {}",
                format_date(self.end - DAY_S),
                format_date(self.start)
            )));
        }
        if self.award.micros() <= 0 {
            return Err(BudgetError::Invalid("award amount must be above zero".into()));
        }
        if !(0..PPM).contains(&self.indirect_rate_ppm) {
            return Err(BudgetError::Invalid(format!(
                "indirect cost rate {} is not from 0 up to (not including) 1",
                format_rate(self.indirect_rate_ppm)
            )));
        }
        split_periods(self.start, self.end, self.award, self.periods)
    }
}

/// A grant's periods, in order, with each one's direct budget: its allocation's
/// amount, or (for a grant that funds no account) the period's direct share.
pub(crate) fn periods_of(tx: &Tx<'_>, grant_id: i64) -> Result<Vec<GrantPeriod>, LedgerError> {
    Ok(tx
        .period_rows(grant_id)?
        .into_iter()
        .map(|p| GrantPeriod {
            period_no: p.period_no,
            start: p.start,
            end: p.end,
            amount: p.amount,
            allocation_id: p.allocation_id,
            direct_budget: p.allocation_amount.unwrap_or_else(|| direct_of(p.amount, p.indirect_rate_ppm)),
            direct_spent: p.direct_spent,
        })
        .collect())
}

pub(crate) fn unknown_grant(number: &str) -> BudgetError {
    BudgetError::Invalid(format!("unknown grant '{}'", crate::core::text::clean_text(number)))
}

impl Budget {
    /// Creates a grant and, when it funds an account, one allocation per budget period
    /// holding that period's direct amount. One transaction: on any error nothing is
    /// written.
    pub fn create_grant(&mut self, g: &NewGrant, actor: &str, now: i64) -> Result<GrantDetail, BudgetError> {
        let periods = g.validate()?;
        let tx = Tx::write(&mut self.ledger)?;
        if tx.grant_by_number(&g.number)?.is_some() {
            return Err(BudgetError::Invalid(format!("grant '{}' already exists", g.number)));
        }
        let account = match &g.account {
            Some(name) => {
                let acc = tx.account_by_name(name)?.ok_or_else(|| BudgetError::UnknownAccount(name.clone()))?;
                if acc.status == "closed" {
                    return Err(BudgetError::Invalid(format!("account '{name}' is closed")));
                }
                Some(acc)
            }
            None => None,
        };
        let co_pis = serde_json::to_string(&g.co_pis.iter().map(|c| c.trim()).collect::<Vec<_>>())
            .map_err(|err| BudgetError::Invalid(err.to_string()))?;
        let trim_opt = |o: &Option<String>| o.as_deref().map(str::trim).filter(|s| !s.is_empty()).map(str::to_string);
        let (program, federal_award_id) = (trim_opt(&g.program), trim_opt(&g.federal_award_id));
        let grant_id = tx.insert_grant(&NewGrantRow {
            number: &g.number,
            agency: g.agency.trim(),
            pi: g.pi.trim(),
            co_pis_json: &co_pis,
            program: program.as_deref(),
            federal_award_id: federal_award_id.as_deref(),
            start: g.start,
            end: g.end,
            award: g.award,
            indirect_rate_ppm: g.indirect_rate_ppm,
            account_id: account.as_ref().map(|a| a.id),
            pi_email: g.pi_email.as_deref(),
            created_at: now,
        })?;
        let split = periods.len() > 1;
        for (i, &(from, until, amount)) in periods.iter().enumerate() {
            let period_no = i as u32 + 1;
            let allocation_id = match &account {
                Some(acc) => {
                    let (key, memo) = if split {
                        (format!("grant:{}:p{period_no}", g.number), format!("grant {} period {period_no}", g.number))
                    } else {
                        (format!("grant:{}", g.number), format!("grant {}", g.number))
                    };
                    if tx.txn_exists(&key)? {
                        return Err(BudgetError::Invalid(format!("grant '{}' already exists", g.number)));
                    }
                    let direct = direct_of(amount, g.indirect_rate_ppm);
                    Some(insert_grant_allocation(&tx, acc.id, grant_id, direct, from, until, &memo, &key, actor, now)?)
                }
                None => None,
            };
            tx.insert_grant_period(grant_id, period_no, from, until, amount, allocation_id)?;
        }
        audit(
            &tx,
            actor,
            now,
            "grant create",
            &format!(
                "{} agency={} award={} indirect_rate_ppm={} account={} periods={} dates={}..{}",
                g.number,
                g.agency.trim(),
                g.award.to_exact_string(),
                g.indirect_rate_ppm,
                g.account.as_deref().unwrap_or("-"),
                periods.len(),
                format_date(g.start),
                format_date(g.end - DAY_S)
            ),
        )?;
        let detail = GrantDetail {
            grant: tx.grant_by_number(&g.number)?.ok_or_else(|| unknown_grant(&g.number))?,
            periods: periods_of(&tx, grant_id)?,
        };
        tx.commit()?;
        Ok(detail)
    }

    /// Grants by number, with their periods.
    pub fn grants(&mut self, filter: &GrantFilter) -> Result<Vec<GrantDetail>, BudgetError> {
        let tx = Tx::read(&mut self.ledger)?;
        let grants = tx.grants(filter.active_only, filter.agency.as_deref().map(str::trim))?;
        let mut out = Vec::with_capacity(grants.len());
        for grant in grants {
            let periods = periods_of(&tx, grant.id)?;
            out.push(GrantDetail { grant, periods });
        }
        Ok(out)
    }

    /// One grant with its periods.
    pub fn grant(&mut self, number: &str) -> Result<GrantDetail, BudgetError> {
        let tx = Tx::read(&mut self.ledger)?;
        let grant = tx.grant_by_number(number)?.ok_or_else(|| unknown_grant(number))?;
        let periods = periods_of(&tx, grant.id)?;
        Ok(GrantDetail { grant, periods })
    }

    /// Closes a grant: status `closed`, its allocations end now (an `expiry` entry
    /// records each one's unspent remainder), and if the funded account has nothing
    /// else to spend, its jobs' open holds are released. One transaction.
    pub fn close_grant(&mut self, number: &str, actor: &str, now: i64) -> Result<GrantClosed, BudgetError> {
        let tx = Tx::write(&mut self.ledger)?;
        let grant = tx.grant_by_number(number)?.ok_or_else(|| unknown_grant(number))?;
        if grant.status == "closed" {
            return Err(BudgetError::Invalid(format!("grant '{number}' is already closed")));
        }
        tx.close_grant_row(grant.id, now)?;
        let key = format!("grant-close:{number}");
        let mut closed = GrantClosed {
            number: number.to_string(),
            allocations_ended: 0,
            expired: Money::ZERO,
            jobs_released: 0,
            holds_released: Money::ZERO,
        };
        let mut part = 0u32;
        if let Some(account_id) = grant.account_id {
            let allocs = tx.allocations(account_id)?;
            let ours: Vec<i64> = tx.period_rows(grant.id)?.into_iter().filter_map(|p| p.allocation_id).collect();
            for a in allocs.iter().filter(|a| ours.contains(&a.id) && a.valid_until > now) {
                let remaining = a.remaining();
                if remaining.micros() > 0 {
                    postings::expire(&tx, &key, part, account_id, a.id, remaining, actor, now)?;
                    part += 1;
                    closed.expired = Money::from_micros(closed.expired.micros() + remaining.micros());
                }
                tx.end_allocation(a.id, now)?;
                closed.allocations_ended += 1;
            }
            let other_funding =
                allocs.iter().any(|a| !ours.contains(&a.id) && a.valid_until > now && a.remaining().micros() > 0);
            if !other_funding {
                let (jobs, released) = postings::release_account_holds(&tx, account_id, &key, now)?;
                closed.jobs_released = jobs;
                closed.holds_released = released;
            }
        }
        audit(
            &tx,
            actor,
            now,
            "grant close",
            &format!(
                "{number} allocations_ended={} expired={} holds_released={} jobs={}",
                closed.allocations_ended,
                closed.expired.to_exact_string(),
                closed.holds_released.to_exact_string(),
                closed.jobs_released
            ),
        )?;
        tx.commit()?;
        Ok(closed)
    }

    /// Sets (or, with `None`, removes) the mail address alerts about a grant reach its PI at.
    pub fn set_grant_pi_email(
        &mut self,
        number: &str,
        pi_email: Option<&str>,
        actor: &str,
        now: i64,
    ) -> Result<GrantDetail, BudgetError> {
        if let Some(m) = pi_email {
            crate::core::config::check_mail_address(m)
                .map_err(|r| BudgetError::Invalid(format!("PI mail address {r}")))?;
        }
        {
            let tx = Tx::write(&mut self.ledger)?;
            if !tx.set_grant_pi_email(number, pi_email)? {
                return Err(unknown_grant(number));
            }
            audit(&tx, actor, now, "grant update", &format!("{number} pi_email={}", pi_email.unwrap_or("-")))?;
            tx.commit()?;
        }
        self.grant(number)
    }
}

/// Inserts an allocation for a grant period and its `deposit` journal entry, exactly
/// as a deposit does, plus the grant link.
#[allow(clippy::too_many_arguments)]
fn insert_grant_allocation(
    tx: &Tx<'_>,
    account_id: i64,
    grant_id: i64,
    amount: Money,
    valid_from: i64,
    valid_until: i64,
    memo: &str,
    key: &str,
    actor: &str,
    now: i64,
) -> Result<i64, LedgerError> {
    postings::deposit(tx, account_id, amount, valid_from, valid_until, Some(memo), key, actor, now, Some(grant_id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn direct_plus_indirect_fits_the_award() {
        let award = Money::from_micros(250_000_000_000);
        let d = direct_of(award, 300_000);
        assert_eq!(d.micros(), 192_307_692_307);
        assert!(d.micros() + indirect_of(d.micros(), 300_000) <= award.micros());
        assert_eq!(direct_of(award, 0), award);
    }

    #[test]
    fn indirect_rounds_half_away_from_zero() {
        assert_eq!(indirect_of(5, 100_000), 1); // 0.5 → 1
        assert_eq!(indirect_of(4, 100_000), 0); // 0.4 → 0
        assert_eq!(indirect_of(-5, 100_000), -1);
    }

    #[test]
    fn rates_parse_and_print() {
        assert_eq!(parse_rate("0.30").unwrap(), 300_000);
        assert_eq!(parse_rate("30%").unwrap(), 300_000);
        assert_eq!(parse_rate("0").unwrap(), 0);
        assert_eq!(parse_rate("52.5%").unwrap(), 525_000);
        for bad in ["1", "1.0", "-0.1", "abc", "", "100%", "0.1234567", "1e-1"] {
            assert!(parse_rate(bad).is_err(), "{bad}");
        }
        assert_eq!(format_rate(300_000), "30.00%");
        assert_eq!(format_rate(123_456), "12.3456%");
        assert_eq!(format_rate(0), "0.00%");
    }

    #[test]
    fn periods_split_the_award_exactly() {
        let start = crate::core::decisions::parse_date("2024-07-01").unwrap();
        let end = crate::core::decisions::parse_date("2027-01-01").unwrap();
        let award = Money::from_micros(100_000_000_001);
        let p = split_periods(start, end, award, PeriodSplit::Yearly).unwrap();
        assert_eq!(p.len(), 3);
        assert_eq!(format_date(p[1].0), "2025-07-01");
        assert_eq!(format_date(p[2].0), "2026-07-01");
        assert_eq!(p.iter().map(|x| x.2.micros()).sum::<i64>(), award.micros());
        let p = split_periods(start, end, award, PeriodSplit::Count(4)).unwrap();
        assert_eq!(p.len(), 4);
        assert_eq!(p.iter().map(|x| x.2.micros()).sum::<i64>(), award.micros());
        assert!(split_periods(start, start + 2 * DAY_S, award, PeriodSplit::Count(3)).is_err());
    }
}
