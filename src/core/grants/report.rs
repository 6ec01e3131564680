// SPDX-License-Identifier: GPL-2.0-or-later
//! Grant statements and burn-rate forecasts, computed from the journal.
//!
//! Method, in one place (the renderers print the parts a reader needs):
//!
//! - **What counts.** A grant's direct cost is the sum of the journal entries posted
//!   to its allocations: charges, minus refunds, plus adjustments (signed). Holds are
//!   not cost; open holds on the funded account are shown beside the statement.
//! - **Periods and dates.** A cost belongs to the budget period whose allocation it
//!   was posted to (a charge goes to the allocation active when its run ended). Date
//!   ranges (`--from/--to`), the burn rate and the daily series use the time the
//!   journal entry was posted.
//! - **Indirect (F&A) cost** = direct × rate, rounded half up (away from zero for
//!   credits) to the micro-dollar on every line; a total's indirect is computed from
//!   the summed, unrounded direct micros, so lines may differ from their total by a
//!   rounding. Amounts shown to people are then rounded to cents (`money.rs`).
//! - **Resource categories.** Each cost is split over CPU, GPU, memory, AWS burst and
//!   other in proportion to what its resources cost per hour at the partition's
//!   current rates: a charge by its run's allocated resources, a refund or adjustment
//!   by its job's requested resources. An AWS partition's cost is all AWS burst; node
//!   rates count as CPU; a cost with no priced resources (or a partition no longer in
//!   the config) is other. Costs with the same partition and resources are summed,
//!   then split into whole micro-dollars that add up exactly (largest remainder).
//! - **Burn rate** = total cost (direct + indirect) posted in the trailing window of
//!   complete UTC days before the "as of" day, divided by the window's days (shortened
//!   to the days since the grant started when it is younger).
//! - **Projected exhaustion** is linear: the "as of" time plus remaining award ÷ burn
//!   rate, rounded up to whole days.
//! - **Status** compares percent spent with percent of time elapsed: their ratio above
//!   `[forecast] overspend_ratio` is overspending, below `underspend_ratio`
//!   underspending, otherwise on track.

use crate::core::config::{Config, Pricing};
use crate::core::decisions::{Budget, BudgetError, DAY_S, FOREVER};
use crate::core::grants::{indirect_of, periods_of, unknown_grant, Grant, GrantPeriod, PPM};
use crate::core::ledger::Tx;
use crate::core::money::Money;
use crate::core::pricing::job::Resources;
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasherDefault, Hasher};

/// The resource categories of a statement, in print order.
pub const CATEGORIES: [&str; 5] = ["CPU", "GPU", "Memory", "AWS burst", "Other"];
const CPU: usize = 0;
const GPU: usize = 1;
const MEMORY: usize = 2;
const AWS: usize = 3;
const OTHER: usize = 4;

/// Direct, indirect and their sum.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Amounts {
    pub direct: Money,
    pub indirect: Money,
    pub total: Money,
}

impl Amounts {
    /// Indirect from direct at `rate_ppm`, rounded once.
    pub fn of_direct(direct_micros: i64, rate_ppm: i64) -> Amounts {
        let indirect = indirect_of(direct_micros, rate_ppm);
        Amounts::new(direct_micros, indirect)
    }

    pub fn new(direct_micros: i64, indirect_micros: i64) -> Amounts {
        Amounts {
            direct: Money::from_micros(direct_micros),
            indirect: Money::from_micros(indirect_micros),
            total: Money::from_micros(direct_micros + indirect_micros),
        }
    }

    fn minus(self, other: Amounts) -> Amounts {
        Amounts::new(self.direct.micros() - other.direct.micros(), self.indirect.micros() - other.indirect.micros())
    }
}

/// One named line of a breakdown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Line {
    pub name: String,
    #[serde(flatten)]
    pub amounts: Amounts,
}

/// A block of the statement: one budget period, a date range, or cumulative.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Section {
    pub title: String,
    pub period_no: Option<u32>,
    /// `[from, until)`, unix seconds.
    pub from: i64,
    pub until: i64,
    pub budget: Option<Amounts>,
    pub expended: Amounts,
    pub remaining: Option<Amounts>,
    pub by_partition: Vec<Line>,
    pub by_category: Vec<Line>,
    pub by_account: Vec<Line>,
    pub by_user: Vec<Line>,
}

/// What a report covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReportRange {
    /// Every budget period, and cumulative to date.
    Whole,
    /// One budget period (1-based), and cumulative through it.
    Period(u32),
    /// Costs posted in `[from, until)` (defaults: the grant's dates), and cumulative to `until`.
    Dates { from: Option<i64>, until: Option<i64> },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SpendStatus {
    NotStarted,
    OnTrack,
    Overspending,
    Underspending,
    Closed,
    /// An open-ended budget has no plan to compare with.
    NoEndDate,
}

impl SpendStatus {
    pub fn label(self) -> &'static str {
        match self {
            SpendStatus::NotStarted => "not started",
            SpendStatus::OnTrack => "on track",
            SpendStatus::Overspending => "overspending",
            SpendStatus::Underspending => "underspending",
            SpendStatus::Closed => "closed",
            SpendStatus::NoEndDate => "no end date",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", content = "at", rename_all = "snake_case")]
pub enum Exhaustion {
    /// Nothing spent in the window: no projection.
    NoSpending,
    /// Nothing left.
    Exhausted,
    /// Closed: nothing more will be spent.
    Closed,
    /// Projected to run out at this time.
    On(i64),
}

/// Spending on one UTC day.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct DaySpend {
    pub day: i64,
    pub direct: Money,
    pub total: Money,
}

/// Burn rate, projection and status at one moment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Projection {
    pub as_of: i64,
    pub start: i64,
    /// Exclusive end of the plan; `None` for open-ended budgets.
    pub end: Option<i64>,
    pub budget: Money,
    pub spent: Money,
    pub remaining: Money,
    pub percent_spent_bps: i64,
    pub percent_elapsed_bps: Option<i64>,
    /// Percent spent ÷ percent elapsed, parts per million.
    pub ratio_ppm: Option<i64>,
    pub status: SpendStatus,
    pub overspend_ratio_ppm: i64,
    pub underspend_ratio_ppm: i64,
    /// Requested window, and the days actually used.
    pub window_days: u32,
    pub effective_days: i64,
    pub window_from: i64,
    pub window_until: i64,
    pub window_spend: Money,
    pub burn_rate_per_day: Money,
    pub exhaustion: Exhaustion,
    /// Exhaustion is projected before the end.
    pub alert: bool,
    /// Every day of the window, oldest first.
    pub daily: Vec<DaySpend>,
}

/// Open holds on a funded account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HoldLine {
    pub account: String,
    pub amount: Money,
    pub jobs: u32,
}

/// A point of the cumulative spending curve: total (direct + indirect) at the end of `day`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct CurvePoint {
    pub day: i64,
    pub cumulative_total: Money,
}

/// The agency-required statement for one grant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GrantReport {
    pub grant: Grant,
    pub periods: Vec<GrantPeriod>,
    pub generated_at: i64,
    /// "whole grant", "budget period 2", "2026-01-01 to 2026-03-31".
    pub scope: String,
    pub sections: Vec<Section>,
    pub cumulative: Section,
    pub projection: Projection,
    pub open_holds: Vec<HoldLine>,
    pub curve: Vec<CurvePoint>,
}

/// What `forecast` is about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Subject {
    Grant { number: String, agency: String, account: Option<String>, indirect_rate_ppm: i64 },
    Account { name: String },
}

/// A burn-rate forecast for a grant or an account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Forecast {
    pub subject: Subject,
    pub projection: Projection,
}

// ----- aggregation --------------------------------------------------------------------
//
// A grant report may read hundreds of thousands of journal entries, so each row only
// turns its strings into small ids (one hash lookup each) and adds its amount to plain
// vectors; names, indirect cost and category splits are worked out once at the end.

/// A fast hasher for the report's own small keys (the word-at-a-time multiply-rotate of
/// rustc's FxHash). Not for untrusted keys: these are the ledger's partition, user,
/// run-key and resource strings.
#[derive(Default)]
struct Fx(u64);

const FX_K: u64 = 0x517c_c1b7_2722_0a95;

impl Fx {
    fn mix(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(FX_K);
    }
}

impl Hasher for Fx {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            self.mix(u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]));
        }
        let mut tail = [0u8; 8];
        let rest = chunks.remainder();
        tail[..rest.len()].copy_from_slice(rest);
        self.mix(u64::from_le_bytes(tail) ^ ((rest.len() as u64) << 56));
    }

    fn write_u32(&mut self, n: u32) {
        self.mix(n as u64);
    }

    fn write_u64(&mut self, n: u64) {
        self.mix(n);
    }
}

type FastMap<K, V> = HashMap<K, V, BuildHasherDefault<Fx>>;

/// Strings to dense ids.
#[derive(Default)]
struct Names {
    ids: FastMap<String, u32>,
    names: Vec<String>,
}

impl Names {
    fn id(&mut self, name: &str) -> u32 {
        if let Some(&i) = self.ids.get(name) {
            return i;
        }
        let i = self.names.len() as u32;
        self.names.push(name.to_string());
        self.ids.insert(name.to_string(), i);
        i
    }
}

/// Sums by dense id, remembering which ids were touched.
#[derive(Debug, Default)]
struct Sums {
    v: Vec<i64>,
    seen: Vec<bool>,
}

impl Sums {
    fn add(&mut self, id: u32, amount: i64) {
        let i = id as usize;
        if i >= self.v.len() {
            self.v.resize(i + 1, 0);
            self.seen.resize(i + 1, false);
        }
        self.v[i] += amount;
        self.seen[i] = true;
    }

    fn iter(&self) -> impl Iterator<Item = (usize, i64)> + '_ {
        self.v.iter().zip(&self.seen).enumerate().filter(|(_, (_, &s))| s).map(|(i, (&v, _))| (i, v))
    }
}

/// Direct micros of one section, unrounded, by partition, user, account and split.
#[derive(Debug, Default)]
struct Agg {
    total: i64,
    partitions: Sums,
    users: Sums,
    accounts: Sums,
    splits: Sums,
}

/// What the ids mean.
#[derive(Default)]
struct Keys {
    partitions: Names,
    users: Names,
    accounts: Vec<String>,
    splits: Vec<Split>,
}

impl Agg {
    fn add(&mut self, amount: i64, partition: u32, user: u32, account: u32, split: u32) {
        self.total += amount;
        self.partitions.add(partition, amount);
        self.users.add(user, amount);
        self.accounts.add(account, amount);
        self.splits.add(split, amount);
    }

    fn lines(sums: &Sums, names: &[String], rate_ppm: i64) -> Vec<Line> {
        let mut lines: Vec<Line> = sums
            .iter()
            .map(|(i, v)| Line { name: names[i].clone(), amounts: Amounts::of_direct(v, rate_ppm) })
            .collect();
        lines.sort_by(|a, b| a.name.cmp(&b.name));
        lines
    }

    /// Costs with the same partition and resources are added up, then split over the
    /// categories (largest remainder), so the category lines add up to the total exactly.
    fn categories(&self, keys: &Keys) -> [i64; 5] {
        let mut out = [0i64; 5];
        for (i, v) in self.splits.iter() {
            for (c, p) in out.iter_mut().zip(apply_split(keys.splits[i], v)) {
                *c += p;
            }
        }
        out
    }

    #[allow(clippy::too_many_arguments)]
    fn section(
        &self,
        keys: &Keys,
        title: String,
        period_no: Option<u32>,
        from: i64,
        until: i64,
        budget: Option<Amounts>,
        rate_ppm: i64,
    ) -> Section {
        let expended = Amounts::of_direct(self.total, rate_ppm);
        Section {
            title,
            period_no,
            from,
            until,
            budget,
            expended,
            remaining: budget.map(|b| b.minus(expended)),
            by_partition: Agg::lines(&self.partitions, &keys.partitions.names, rate_ppm),
            by_category: CATEGORIES
                .iter()
                .zip(self.categories(keys))
                .map(|(name, v)| Line { name: name.to_string(), amounts: Amounts::of_direct(v, rate_ppm) })
                .collect(),
            by_account: Agg::lines(&self.accounts, &keys.accounts, rate_ppm),
            by_user: Agg::lines(&self.users, &keys.users.names, rate_ppm),
        }
    }
}

/// How one cost divides over the categories.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Split {
    Aws,
    Other,
    /// Hourly weights of CPU (and node), GPU and memory.
    Parts([i128; 3]),
}

fn split_of(config: &Config, partition: &str, res: Option<&Resources>) -> Split {
    let (Some(p), Some(res)) = (config.partitions.get(partition), res) else {
        return Split::Other;
    };
    let gpu_weight = |rate_of: &dyn Fn(&str) -> i64| -> i128 {
        res.gpus.iter().map(|(typ, &n)| n as i128 * rate_of(typ) as i128 * 1024).sum()
    };
    let w = match &p.pricing {
        Pricing::Aws { .. } => return Split::Aws,
        Pricing::Tres(r) => [
            res.cpus as i128 * r.cpu.micros() as i128 * 1024 + res.nodes as i128 * r.node.micros() as i128 * 1024,
            gpu_weight(&|typ| {
                let rate = if typ.is_empty() { r.gpu } else { r.gpu_typed.get(typ).copied().or(r.gpu) };
                rate.map(Money::micros).unwrap_or(0)
            }),
            res.mem_mb as i128 * r.mem_gb.micros() as i128,
        ],
        Pricing::Billing { weights, .. } if weights.cpus_only => [res.cpus as i128, 0, 0],
        Pricing::Billing { weights: bw, .. } => [
            res.cpus as i128 * bw.cpu_micro as i128 * 1024 + res.nodes as i128 * bw.node_micro as i128 * 1024,
            gpu_weight(&|typ| {
                if typ.is_empty() {
                    bw.gpu_micro
                } else {
                    *bw.gpu_typed_micro.get(typ).unwrap_or(&bw.gpu_micro)
                }
            }),
            res.mem_mb as i128 * bw.mem_gb_micro as i128,
        ],
    };
    if w.iter().all(|&x| x <= 0) {
        Split::Other
    } else {
        Split::Parts(w.map(|x| x.max(0)))
    }
}

/// Whole micro-dollars per category that add up to `amount` exactly.
fn apply_split(split: Split, amount: i64) -> [i64; 5] {
    let mut out = [0i64; 5];
    match split {
        Split::Aws => out[AWS] = amount,
        Split::Other => out[OTHER] = amount,
        Split::Parts(w) => {
            let total_w: i128 = w.iter().sum();
            let a = amount.unsigned_abs() as i128;
            let mut parts = [0i128; 3];
            let mut rems = [(0i128, 0usize); 3];
            for i in 0..3 {
                parts[i] = a * w[i] / total_w;
                rems[i] = (a * w[i] % total_w, i);
            }
            let mut left = a - parts.iter().sum::<i128>();
            rems.sort_by(|x, y| y.0.cmp(&x.0).then(x.1.cmp(&y.1)));
            for &(_, i) in rems.iter() {
                if left == 0 {
                    break;
                }
                parts[i] += 1;
                left -= 1;
            }
            let sign = if amount < 0 { -1 } else { 1 };
            out[CPU] = sign * parts[0] as i64;
            out[GPU] = sign * parts[1] as i64;
            out[MEMORY] = sign * parts[2] as i64;
        }
    }
    out
}

/// Split ids by (partition id, resources text, from a request?), remembered: a ledger
/// has few distinct shapes.
#[derive(Default)]
struct SplitCache {
    texts: Names,
    ids: FastMap<(u32, u32, bool), u32>,
}

impl SplitCache {
    /// The split of a run's allocation (`alloc_json`, as its row keeps it) or a job's
    /// request (`request`: its resource columns, `nodes/cpus/mem_mb/gpus`), by that text.
    fn id(
        &mut self,
        config: &Config,
        keys: &mut Keys,
        partition_id: u32,
        partition: &str,
        text: Option<&str>,
        is_request: bool,
    ) -> u32 {
        let text_id = text.map(|j| self.texts.id(j)).unwrap_or(u32::MAX);
        if let Some(&id) = self.ids.get(&(partition_id, text_id, is_request)) {
            return id;
        }
        let res: Option<Resources> = match text {
            Some(t) if is_request => request_resources(t),
            Some(j) => serde_json::from_str(j).ok(),
            None => None,
        };
        let id = keys.splits.len() as u32;
        keys.splits.push(split_of(config, partition, res.as_ref()));
        self.ids.insert((partition_id, text_id, is_request), id);
        id
    }
}

/// A job's request resources from the text the store gives for a job's request
/// (`nodes/cpus/mem_mb/gpus`).
fn request_resources(text: &str) -> Option<Resources> {
    let mut parts = text.splitn(4, '/');
    let nodes = parts.next()?.parse().ok()?;
    let cpus = parts.next()?.parse().ok()?;
    let mem_mb = parts.next()?.parse().ok()?;
    let gpus = Resources::gpus_from_text(Some(parts.next()?).filter(|g| !g.is_empty())).ok()?;
    Some(Resources { nodes, cpus, mem_mb, gpus })
}

// ----- arithmetic helpers ---------------------------------------------------------------

fn day_of(t: i64) -> i64 {
    t - t.rem_euclid(DAY_S)
}

/// `num / den` in basis points (hundredths of a percent), rounded half up; 0 when den is 0.
pub fn bps(num: i128, den: i128) -> i64 {
    if den == 0 {
        return 0;
    }
    ((num * 10_000 * 2 + den) / (den * 2)) as i64
}

/// `56.71%` from basis points.
pub fn format_bps(bps: i64) -> String {
    let sign = if bps < 0 { "-" } else { "" };
    let a = bps.unsigned_abs();
    format!("{sign}{}.{:02}%", a / 100, a % 100)
}

/// `1.10` from parts per million, to two decimals (half up).
pub fn format_ratio(ppm: i64) -> String {
    let hundredths = (ppm + 5_000) / 10_000;
    format!("{}.{:02}", hundredths / 100, hundredths % 100)
}

/// The inputs of a projection.
struct PlanInput {
    as_of: i64,
    start: i64,
    end: Option<i64>,
    budget: i64,
    spent: i64,
    closed: bool,
    window_days: u32,
}

fn project(p: PlanInput, daily_direct: &BTreeMap<i64, i64>, rate_ppm: i64, config: &Config) -> Projection {
    let window_until = day_of(p.as_of);
    let since_start = ((window_until - p.start) / DAY_S).max(0);
    let effective_days = (p.window_days as i64).min(since_start);
    let window_from = window_until - effective_days * DAY_S;
    let daily: Vec<DaySpend> = (0..effective_days)
        .map(|i| {
            let day = window_from + i * DAY_S;
            let direct = daily_direct.get(&day).copied().unwrap_or(0);
            let a = Amounts::of_direct(direct, rate_ppm);
            DaySpend { day, direct: a.direct, total: a.total }
        })
        .collect();
    let window_direct: i64 = daily_direct.range(window_from..window_until).map(|(_, v)| v).sum();
    let window_total = Amounts::of_direct(window_direct, rate_ppm).total.micros();
    let burn = if effective_days > 0 {
        (window_total as i128 * 2 + effective_days as i128) / (effective_days as i128 * 2)
    } else {
        0
    } as i64;
    let remaining = p.budget - p.spent;
    let percent_spent_bps = bps(p.spent as i128, p.budget as i128);
    let (percent_elapsed_bps, ratio_ppm) = match p.end {
        Some(end) if end > p.start => {
            let elapsed = (p.as_of - p.start).clamp(0, end - p.start);
            let ratio = (elapsed > 0 && p.budget > 0).then(|| {
                (p.spent as i128 * (end - p.start) as i128 * PPM as i128 / (p.budget as i128 * elapsed as i128)) as i64
            });
            (Some(bps(elapsed as i128, (end - p.start) as i128)), ratio)
        }
        _ => (None, None),
    };
    let fc = &config.forecast;
    let status = if p.closed {
        SpendStatus::Closed
    } else if p.end.is_none() {
        SpendStatus::NoEndDate
    } else {
        match ratio_ppm {
            None => SpendStatus::NotStarted,
            Some(r) if r > fc.overspend_ratio_ppm => SpendStatus::Overspending,
            Some(r) if r < fc.underspend_ratio_ppm => SpendStatus::Underspending,
            Some(_) => SpendStatus::OnTrack,
        }
    };
    let exhaustion = if p.closed {
        Exhaustion::Closed
    } else if remaining <= 0 {
        Exhaustion::Exhausted
    } else if window_total <= 0 {
        Exhaustion::NoSpending
    } else {
        // remaining ÷ (window_total / days), rounded up to whole days.
        let num = remaining as i128 * effective_days as i128;
        let days = (num + window_total as i128 - 1) / window_total as i128;
        Exhaustion::On(p.as_of.saturating_add((days as i64).saturating_mul(DAY_S)).min(FOREVER))
    };
    let alert = match (exhaustion, p.end) {
        (Exhaustion::On(t), Some(end)) => t < end,
        (Exhaustion::Exhausted, Some(end)) => p.as_of < end,
        _ => false,
    };
    Projection {
        as_of: p.as_of,
        start: p.start,
        end: p.end,
        budget: Money::from_micros(p.budget),
        spent: Money::from_micros(p.spent),
        remaining: Money::from_micros(remaining),
        percent_spent_bps,
        percent_elapsed_bps,
        ratio_ppm,
        status,
        overspend_ratio_ppm: fc.overspend_ratio_ppm,
        underspend_ratio_ppm: fc.underspend_ratio_ppm,
        window_days: p.window_days,
        effective_days,
        window_from,
        window_until,
        window_spend: Money::from_micros(window_total),
        burn_rate_per_day: Money::from_micros(burn),
        exhaustion,
        alert,
        daily,
    }
}

/// A text column, NULL as "".
fn check_window(window_days: u32) -> Result<(), BudgetError> {
    let max = crate::core::config::MAX_FORECAST_WINDOW_DAYS;
    if window_days == 0 || window_days > max {
        return Err(BudgetError::Invalid(format!("window must be from 1 to {max} days")));
    }
    Ok(())
}

/// What a report covers: its label, when it ends, how many sections it has, and the
/// dates a row must fall in to count (all time unless the range is dates).
struct Scope {
    label: String,
    until: i64,
    n_sections: usize,
    dates: (i64, i64),
}

fn scope_of(grant: &Grant, periods: &[GrantPeriod], range: ReportRange) -> Result<Scope, BudgetError> {
    let (scope, scope_until, n_sections) = match range {
        ReportRange::Whole => ("whole grant".to_string(), grant.end, periods.len()),
        ReportRange::Period(n) => {
            let p = periods.get((n as usize).wrapping_sub(1)).ok_or_else(|| {
                BudgetError::Invalid(format!(
                    "grant {} has {} budget period{}; there is no period {n}",
                    grant.number,
                    periods.len(),
                    if periods.len() == 1 { "" } else { "s" }
                ))
            })?;
            (format!("budget period {n}"), p.end, 1)
        }
        ReportRange::Dates { from, until } => {
            let from = from.unwrap_or(grant.start);
            let until = until.unwrap_or(grant.end);
            if until <= from {
                return Err(BudgetError::Invalid(format!(
                    "report end {} is not after its start {}",
                    crate::core::decisions::format_date(until - DAY_S),
                    crate::core::decisions::format_date(from)
                )));
            }
            (
                format!(
                    "{} to {}",
                    crate::core::decisions::format_date(from),
                    crate::core::decisions::format_date(until - DAY_S)
                ),
                until,
                1,
            )
        }
    };
    let (dates_from, dates_until) = match range {
        ReportRange::Dates { from, until } => (from.unwrap_or(grant.start), until.unwrap_or(grant.end)),
        _ => (i64::MIN, i64::MAX),
    };
    Ok(Scope { label: scope, until: scope_until, n_sections, dates: (dates_from, dates_until) })
}

/// One cost entry of a grant: a charge, refund (negative) or adjustment.
struct CostRow {
    amount: i64,
    at: i64,
    allocation_id: i64,
    account_id: i64,
    /// Run key (charges) or hold token (others), in `arena`.
    key: std::ops::Range<usize>,
    is_run: bool,
}

/// A grant's cost entries, their run keys (charges) or hold tokens (the others) in one
/// arena, and the rows of its earliest and latest charge.
struct Costs {
    arena: String,
    rows: Vec<CostRow>,
    earliest: Option<(i64, usize)>,
    latest: Option<(i64, usize)>,
}

/// The grant's cost entries. What each was for (partition, user, resources) comes
/// from its run (charges) or its job (refunds, adjustments), looked up afterwards in
/// bulk (`describe_costs`) rather than joined row by row.
fn costs_of(tx: &Tx<'_>, grant_id: i64) -> Result<Costs, BudgetError> {
    let mut arena = String::new();
    let mut cost_rows: Vec<CostRow> = Vec::new();
    let mut earliest: Option<(i64, usize)> = None;
    let mut latest: Option<(i64, usize)> = None;
    tx.visit_grant_costs(grant_id, |c| {
        let start = arena.len();
        arena.push_str(c.key);
        if c.is_run {
            let i = cost_rows.len();
            if earliest.map_or(true, |(t, _)| c.at < t) {
                earliest = Some((c.at, i));
            }
            if latest.map_or(true, |(t, _)| c.at >= t) {
                latest = Some((c.at, i));
            }
        }
        cost_rows.push(CostRow {
            amount: c.amount,
            at: c.at,
            allocation_id: c.allocation_id,
            account_id: c.account_id,
            key: start..arena.len(),
            is_run: c.is_run,
        });
    })?;
    Ok(Costs { arena, rows: cost_rows, earliest, latest })
}

/// For each cost row, the ids of its partition, user and resource split: one look-up
/// per distinct run or token, most of them in one range scan of the runs.
fn describe_costs(
    tx: &Tx<'_>,
    costs: &Costs,
    grant_id: i64,
    config: &Config,
    keys: &mut Keys,
    cache: &mut SplitCache,
) -> Result<Vec<(u32, u32, u32)>, BudgetError> {
    let Costs { arena, rows: cost_rows, earliest, latest } = costs;
    let (earliest, latest) = (*earliest, *latest);
    let mut slot_of: FastMap<(&str, bool), u32> =
        FastMap::with_capacity_and_hasher(cost_rows.len(), BuildHasherDefault::default());
    let mut row_slot: Vec<u32> = Vec::with_capacity(cost_rows.len());
    for row in cost_rows {
        let k = (&arena[row.key.clone()], row.is_run);
        let next = slot_of.len() as u32;
        row_slot.push(*slot_of.entry(k).or_insert(next));
    }
    let mut slots: Vec<Option<(u32, u32, u32)>> = vec![None; slot_of.len()];
    // Runs are numbered in the order they were reconciled, as their charges were
    // posted: the grant's runs lie between those of its earliest and latest charge.
    // One range scan finds them; any not found there is looked up by key.
    let run_id = |row: Option<(i64, usize)>| -> Result<Option<i64>, BudgetError> {
        let Some((_, i)) = row else { return Ok(None) };
        Ok(tx.run_id(&arena[cost_rows[i].key.clone()])?)
    };
    if let (Some(a), Some(b)) = (run_id(earliest)?, run_id(latest)?) {
        tx.visit_grant_runs(a.min(b), a.max(b), grant_id, |run_key, partition, user, json| {
            let Some(&slot) = slot_of.get(&(run_key, true)) else { return };
            let p = keys.partitions.id(partition);
            let u = keys.users.id(user);
            slots[slot as usize] = Some((p, u, cache.id(config, keys, p, partition, json, false)));
        })?;
    }
    for (&(key, is_run), &slot) in &slot_of {
        if slots[slot as usize].is_some() {
            continue;
        }
        let found = if is_run { tx.run_subject(key)? } else { tx.job_subject(key)? };
        let (partition, user, json) = found.unwrap_or_else(|| ("(none)".into(), "(none)".into(), None));
        let p = keys.partitions.id(&partition);
        let u = keys.users.id(&user);
        slots[slot as usize] = Some((p, u, cache.id(config, keys, p, &partition, json.as_deref(), !is_run)));
    }
    Ok(row_slot.iter().map(|&slot| slots[slot as usize].unwrap_or_default()).collect())
}

/// The open holds on the account a grant funds.
fn open_holds(tx: &Tx<'_>, account_id: Option<i64>) -> Result<Vec<HoldLine>, BudgetError> {
    Ok(match account_id {
        Some(id) => {
            tx.holds_of(id)?.into_iter().map(|(account, amount, jobs)| HoldLine { account, amount, jobs }).collect()
        }
        None => Vec::new(),
    })
}

impl Budget {
    /// The statement for grant `number` over `range`, as of `now`; burn rate over the
    /// `[forecast] window_days` of the config unless `window_days` is given.
    pub fn grant_report(
        &mut self,
        number: &str,
        range: ReportRange,
        window_days: Option<u32>,
        now: i64,
    ) -> Result<GrantReport, BudgetError> {
        let window_days = window_days.unwrap_or(self.config.forecast.window_days);
        check_window(window_days)?;
        let tx = Tx::read(&mut self.ledger)?;
        let grant = tx.grant_by_number(number)?.ok_or_else(|| unknown_grant(number))?;
        let periods = periods_of(&tx, grant.id)?;
        let rate = grant.indirect_rate_ppm;
        let period_budget =
            |p: &GrantPeriod| Amounts::new(p.direct_budget.micros(), p.amount.micros() - p.direct_budget.micros());
        let sum_budget = |ps: &[GrantPeriod]| {
            ps.iter().fold(Amounts::default(), |acc, p| {
                let b = period_budget(p);
                Amounts::new(acc.direct.micros() + b.direct.micros(), acc.indirect.micros() + b.indirect.micros())
            })
        };

        let Scope { label: scope, until: scope_until, n_sections, dates: (dates_from, dates_until) } =
            scope_of(&grant, &periods, range)?;
        let as_of = now.min(scope_until).min(grant.end).min(grant.closed_at.unwrap_or(i64::MAX));
        let period_of: HashMap<i64, usize> =
            periods.iter().enumerate().filter_map(|(i, p)| p.allocation_id.map(|a| (a, i))).collect();
        let account_names: HashMap<i64, String> = tx.account_ids()?.into_iter().collect();

        let mut keys = Keys::default();
        let mut account_ids: FastMap<i64, u32> = FastMap::default();
        let mut sections: Vec<Agg> = (0..n_sections).map(|_| Agg::default()).collect();
        let mut cumulative = Agg::default();
        // Direct cost per day: a vector over the grant's days, a map for anything outside.
        let first_day = day_of(grant.start);
        let mut days = Sums::default();
        let mut days_outside: BTreeMap<i64, i64> = BTreeMap::new();
        let grant_days = ((grant.end - first_day) / DAY_S + 1) as u32;
        let mut cache = SplitCache::default();
        let config = &self.config;

        // 1. The grant's cost entries; 2. what each was for (partition, user, resources).
        let costs = costs_of(&tx, grant.id)?;
        let ids = describe_costs(&tx, &costs, grant.id, config, &mut keys, &mut cache)?;

        // 3. Add every cost to its section, the cumulative block and its day.
        for (row, &(partition_id, user_id, split_id)) in costs.rows.iter().zip(&ids) {
            let (signed, at) = (row.amount, row.at);
            let pidx = period_of.get(&row.allocation_id).copied().unwrap_or(usize::MAX);
            let section = match range {
                ReportRange::Whole => pidx,
                ReportRange::Period(n) if pidx == n as usize - 1 => 0,
                ReportRange::Dates { .. } if dates_from <= at && at < dates_until => 0,
                _ => usize::MAX,
            };
            let in_cumulative = match range {
                ReportRange::Whole => true,
                ReportRange::Period(n) => pidx < n as usize,
                ReportRange::Dates { .. } => at < dates_until,
            };
            if section >= sections.len() && !in_cumulative {
                continue;
            }
            let account = match account_ids.get(&row.account_id) {
                Some(&a) => a,
                None => {
                    let a = keys.accounts.len() as u32;
                    keys.accounts
                        .push(account_names.get(&row.account_id).cloned().unwrap_or_else(|| "(unknown)".into()));
                    account_ids.insert(row.account_id, a);
                    a
                }
            };
            if let Some(s) = sections.get_mut(section) {
                s.add(signed, partition_id, user_id, account, split_id);
            }
            if in_cumulative {
                cumulative.add(signed, partition_id, user_id, account, split_id);
                let day = (at - first_day).div_euclid(DAY_S);
                if (0..grant_days as i64).contains(&day) {
                    days.add(day as u32, signed);
                } else {
                    *days_outside.entry(first_day + day * DAY_S).or_default() += signed;
                }
            }
        }
        let mut daily_direct = days_outside;
        for (i, v) in days.iter() {
            daily_direct.insert(first_day + i as i64 * DAY_S, v);
        }

        let section_list: Vec<Section> = match range {
            ReportRange::Whole => periods
                .iter()
                .zip(&sections)
                .map(|(p, agg)| {
                    agg.section(
                        &keys,
                        format!("Budget period {}", p.period_no),
                        Some(p.period_no),
                        p.start,
                        p.end,
                        Some(period_budget(p)),
                        rate,
                    )
                })
                .collect(),
            ReportRange::Period(n) => {
                let p = &periods[n as usize - 1];
                vec![sections[0].section(
                    &keys,
                    format!("Budget period {n}"),
                    Some(n),
                    p.start,
                    p.end,
                    Some(period_budget(p)),
                    rate,
                )]
            }
            ReportRange::Dates { .. } => {
                vec![sections[0].section(&keys, format!("Costs {scope}"), None, dates_from, dates_until, None, rate)]
            }
        };
        let cumulative_budget = match range {
            ReportRange::Period(n) => sum_budget(&periods[..n as usize]),
            _ => {
                let direct = sum_budget(&periods).direct.micros();
                Amounts::new(direct, grant.award.micros() - direct)
            }
        };
        let cumulative_section = cumulative.section(
            &keys,
            "Cumulative".to_string(),
            None,
            grant.start,
            as_of.max(grant.start),
            Some(cumulative_budget),
            rate,
        );

        let projection = project(
            PlanInput {
                as_of,
                start: grant.start,
                end: Some(grant.end),
                budget: grant.award.micros(),
                spent: cumulative_section.expended.total.micros(),
                closed: grant.status == "closed",
                window_days,
            },
            &daily_direct,
            rate,
            config,
        );
        let mut curve = Vec::with_capacity(daily_direct.len());
        let mut running = 0i64;
        for (&day, &direct) in &daily_direct {
            running += direct;
            curve.push(CurvePoint { day, cumulative_total: Amounts::of_direct(running, rate).total });
        }
        let open_holds = open_holds(&tx, grant.account_id)?;
        Ok(GrantReport {
            grant,
            periods,
            generated_at: now,
            scope,
            sections: section_list,
            cumulative: cumulative_section,
            projection,
            open_holds,
            curve,
        })
    }

    /// Burn rate, projected exhaustion and status of a grant (award terms: direct +
    /// indirect): the projection of `grant_report`'s whole-grant range, from one pass
    /// over the grant's cost entries and nothing else (alerts make one per grant).
    pub fn grant_forecast(&mut self, number: &str, window_days: u32, now: i64) -> Result<Forecast, BudgetError> {
        check_window(window_days)?;
        let tx = Tx::read(&mut self.ledger)?;
        let grant = tx.grant_by_number(number)?.ok_or_else(|| unknown_grant(number))?;
        let mut total_direct = 0i64;
        let mut daily_direct: BTreeMap<i64, i64> = BTreeMap::new();
        tx.visit_grant_direct_costs(grant.id, |signed, at| {
            total_direct += signed;
            *daily_direct.entry(day_of(at)).or_default() += signed;
        })?;
        let rate = grant.indirect_rate_ppm;
        let projection = project(
            PlanInput {
                as_of: now.min(grant.end).min(grant.closed_at.unwrap_or(i64::MAX)),
                start: grant.start,
                end: Some(grant.end),
                budget: grant.award.micros(),
                spent: Amounts::of_direct(total_direct, rate).total.micros(),
                closed: grant.status == "closed",
                window_days,
            },
            &daily_direct,
            rate,
            &self.config,
        );
        Ok(Forecast {
            subject: Subject::Grant {
                number: grant.number,
                agency: grant.agency,
                account: grant.account,
                indirect_rate_ppm: rate,
            },
            projection,
        })
    }

    /// Burn rate, projected exhaustion and status of a budget account (direct money):
    /// budget = its active allocations, spent = what was charged against them plus
    /// overdraft, the plan = the span of those allocations.
    pub fn account_forecast(&mut self, account: &str, window_days: u32, now: i64) -> Result<Forecast, BudgetError> {
        check_window(window_days)?;
        let balance = self.balance(account, now)?;
        let start = balance.valid_from.unwrap_or(now);
        let end = balance.valid_until.filter(|&u| u < FOREVER);
        let window_until = day_of(now);
        let window_from = window_until - window_days as i64 * DAY_S;
        let tx = Tx::read(&mut self.ledger)?;
        let mut daily_direct: BTreeMap<i64, i64> = BTreeMap::new();
        tx.visit_account_costs(account, window_from, window_until, |at, signed| {
            *daily_direct.entry(day_of(at)).or_default() += signed;
        })?;
        let projection = project(
            PlanInput {
                as_of: now,
                start,
                end,
                budget: balance.allocated.micros(),
                spent: balance.charged.micros(),
                closed: balance.status == "closed",
                window_days,
            },
            &daily_direct,
            0,
            &self.config,
        );
        Ok(Forecast { subject: Subject::Account { name: balance.account }, projection })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_add_up_exactly() {
        let s = Split::Parts([1, 1, 1]);
        assert_eq!(apply_split(s, 100), [34, 33, 33, 0, 0]);
        assert_eq!(apply_split(s, -100), [-34, -33, -33, 0, 0]);
        assert_eq!(apply_split(Split::Aws, 7), [0, 0, 0, 7, 0]);
        let s = Split::Parts([3, 0, 7]);
        let p = apply_split(s, 1_000_001);
        assert_eq!(p.iter().sum::<i64>(), 1_000_001);
        assert_eq!(p[GPU], 0);
    }

    #[test]
    fn percentages_and_ratios() {
        assert_eq!(bps(1, 3), 3333);
        assert_eq!(bps(2, 3), 6667);
        assert_eq!(format_bps(5671), "56.71%");
        assert_eq!(format_ratio(1_100_000), "1.10");
        assert_eq!(format_ratio(704_999), "0.70");
    }
}
