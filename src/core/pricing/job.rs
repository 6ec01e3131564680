// SPDX-License-Identifier: GPL-2.0-or-later
//! Plain Rust descriptions of a job: what was asked for at submit time and what was
//! used when a run ended. The SLURM glue fills these from `job_desc_msg_t` and
//! `job_record_t`; nothing here knows SLURM's types. The spec parsers (time limits,
//! GRES/TRES strings, array ranges) live here so they can be tested and fuzzed alone.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Upper bounds that keep every product of quantities, rates and seconds far from
/// overflow. Requests beyond them are refused with a clear message.
pub const MAX_NODES: u32 = 100_000;
pub const MAX_CPUS: u32 = 10_000_000;
pub const MAX_MEM_MB: u64 = 1 << 40;
pub const MAX_GPUS: u32 = 1_000_000;
pub const MAX_ARRAY_TASKS: u32 = 10_000_000;
pub const MAX_TIME_LIMIT_MIN: u32 = 100 * 365 * 24 * 60;

/// Trackable resources in total for one job (or one array task).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resources {
    pub nodes: u32,
    pub cpus: u32,
    pub mem_mb: u64,
    /// GPUs by type; the empty string is an untyped `gres/gpu`.
    pub gpus: BTreeMap<String, u32>,
}

impl Resources {
    pub fn gpu_total(&self) -> u64 {
        self.gpus.values().map(|&n| n as u64).sum()
    }

    /// `gpus` as a job's row keeps it: `type:count` pairs joined by commas (`a100:2`,
    /// `:1` for an untyped GPU), `None` when there are none. Types are letters, digits
    /// and `_-.` (see [`parse_gpu_spec`]), so neither separator can occur in one.
    pub fn gpus_text(&self) -> Option<String> {
        if self.gpus.is_empty() {
            return None;
        }
        let pairs: Vec<String> = self.gpus.iter().map(|(typ, n)| format!("{typ}:{n}")).collect();
        Some(pairs.join(","))
    }

    /// The inverse of [`Self::gpus_text`].
    pub fn gpus_from_text(text: Option<&str>) -> Result<BTreeMap<String, u32>, String> {
        let mut gpus = BTreeMap::new();
        for pair in text.into_iter().flat_map(|t| t.split(',')) {
            let parsed = pair.rsplit_once(':').and_then(|(typ, n)| Some((typ, n.parse::<u32>().ok()?)));
            let Some((typ, n)) = parsed else {
                return Err(format!("bad GPU count '{pair}' in '{}'", text.unwrap_or("")));
            };
            gpus.insert(typ.to_string(), n);
        }
        Ok(gpus)
    }

    /// Checks the bounds above.
    pub fn validate(&self) -> Result<(), SpecError> {
        if self.nodes > MAX_NODES {
            return Err(SpecError::TooLarge(format!("{} nodes", self.nodes)));
        }
        if self.cpus > MAX_CPUS {
            return Err(SpecError::TooLarge(format!("{} cpus", self.cpus)));
        }
        if self.mem_mb > MAX_MEM_MB {
            return Err(SpecError::TooLarge(format!("{} MB of memory", self.mem_mb)));
        }
        if self.gpu_total() > MAX_GPUS as u64 {
            return Err(SpecError::TooLarge(format!("{} GPUs", self.gpu_total())));
        }
        Ok(())
    }
}

/// A job as submitted, priced by the budget core.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobRequest {
    pub user: String,
    pub uid: u32,
    /// SLURM account the job is charged to.
    pub account: String,
    pub partition: String,
    /// Per array task (or for the whole job when it is not an array).
    pub resources: Resources,
    pub time_limit_min: u32,
    /// 1 for a plain job.
    pub array_tasks: u32,
    pub qos: Option<String>,
    /// SLURM job id, when known (a modify, or a user-forced id).
    pub job_id: Option<u32>,
    pub job_name: Option<String>,
}

/// How a run of a job ended, with SLURM's base state names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum EndState {
    Completed,
    Failed,
    Timeout,
    Cancelled,
    NodeFail,
    Preempted,
    BootFail,
    Deadline,
    OutOfMemory,
    Requeued,
    Other,
}

impl EndState {
    pub fn as_str(self) -> &'static str {
        match self {
            EndState::Completed => "COMPLETED",
            EndState::Failed => "FAILED",
            EndState::Timeout => "TIMEOUT",
            EndState::Cancelled => "CANCELLED",
            EndState::NodeFail => "NODE_FAIL",
            EndState::Preempted => "PREEMPTED",
            EndState::BootFail => "BOOT_FAIL",
            EndState::Deadline => "DEADLINE",
            EndState::OutOfMemory => "OUT_OF_MEMORY",
            EndState::Requeued => "REQUEUED",
            EndState::Other => "OTHER",
        }
    }
}

/// One ended run of a job, as the completion hook saw it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobCompletion {
    pub cluster: String,
    pub job_id: u32,
    /// The hold token from `admin_comment`, when the submit hook placed one.
    pub hold_token: Option<String>,
    pub user: String,
    pub account: String,
    pub partition: String,
    pub state: EndState,
    /// Unix seconds. For a job cancelled while pending, start equals end.
    pub start_time: i64,
    pub end_time: i64,
    /// What was allocated; `None` when the job never ran.
    pub allocated: Option<Resources>,
    /// How many array tasks this record stands for: 1, or more for an array's
    /// meta record that ended (cancelled) before all its tasks were split off.
    pub task_count: u32,
    /// Submit time (unix s): tells a job from a later one that reuses its id.
    pub submit_time: i64,
    /// Which run of the job this is: 0 first, +1 per requeue (SLURM's restart_cnt).
    pub run_index: u32,
    /// The QOS the run had in SLURM's record. The charge uses it, never what an
    /// update asked for (SLURM may have refused that update after the plugin saw it).
    #[serde(default)]
    pub qos: Option<String>,
}

impl JobCompletion {
    /// The idempotency key of this run. Not the start time: after a slurmctld crash
    /// that lost the end of a run, SLURM runs the job again with the same restart
    /// count, and that replay must not be charged twice.
    pub fn run_key(&self) -> String {
        format!("{}:{}:{}:{}", self.cluster, self.job_id, self.submit_time, self.run_index)
    }

    pub fn elapsed_s(&self) -> i64 {
        if self.allocated.is_none() {
            return 0;
        }
        (self.end_time - self.start_time).max(0)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    #[error(
        "time limit '{0}' is not a SLURM time (MM, MM:SS, HH:MM:SS, D-HH, D-HH:MM, D-HH:MM:SS) or like 2h, 90m, 1d"
    )]
    BadTime(String),
    #[error("GRES '{0}' is not like gpu, gpu:2 or gpu:a100:2")]
    BadGres(String),
    #[error("array range '{0}' is not like 1-100%10 or 1,3,5-7")]
    BadArray(String),
    #[error("memory '{0}' is not like 4000, 4G or 512M")]
    BadMemory(String),
    #[error("request too large: {0}")]
    TooLarge(String),
}

/// Parses a time limit into whole minutes (seconds round up). Accepts SLURM's forms
/// and the shorthands `2h`, `90m`, `1d`, `45s`.
pub fn parse_time_limit_min(text: &str) -> Result<u32, SpecError> {
    let t = text.trim();
    let bad = || SpecError::BadTime(text.to_string());
    if t.is_empty() || t.len() > 32 {
        return Err(bad());
    }
    let num = |s: &str| -> Result<u64, SpecError> {
        if s.is_empty() || s.len() > 9 || !s.chars().all(|c| c.is_ascii_digit()) {
            return Err(bad());
        }
        s.parse::<u64>().map_err(|_| bad())
    };
    let total_s: u64 = if let Some(unit) = t.chars().last().filter(|c| c.is_ascii_alphabetic()) {
        let n = num(&t[..t.len() - 1])?;
        match unit {
            's' => n,
            'm' => n * 60,
            'h' => n * 3600,
            'd' => n * 86400,
            _ => return Err(bad()),
        }
    } else if let Some((days, rest)) = t.split_once('-') {
        let d = num(days)?;
        let parts: Vec<&str> = rest.split(':').collect();
        let (h, m, s) = match parts.as_slice() {
            [h] => (num(h)?, 0, 0),
            [h, m] => (num(h)?, num(m)?, 0),
            [h, m, s] => (num(h)?, num(m)?, num(s)?),
            _ => return Err(bad()),
        };
        d * 86400 + h * 3600 + m * 60 + s
    } else {
        let parts: Vec<&str> = t.split(':').collect();
        match parts.as_slice() {
            [m] => num(m)? * 60,
            [m, s] => num(m)? * 60 + num(s)?,
            [h, m, s] => num(h)? * 3600 + num(m)? * 60 + num(s)?,
            _ => return Err(bad()),
        }
    };
    let minutes = total_s.div_ceil(60);
    if minutes == 0 {
        return Err(bad());
    }
    if minutes > MAX_TIME_LIMIT_MIN as u64 {
        return Err(SpecError::TooLarge(format!("time limit {t}")));
    }
    Ok(minutes as u32)
}

/// Formats minutes the way SLURM prints a time limit (`D-HH:MM:SS` or `HH:MM:SS`).
pub fn format_time_limit(minutes: u32) -> String {
    let (d, h, m) = (minutes / 1440, (minutes % 1440) / 60, minutes % 60);
    if d > 0 {
        format!("{d}-{h:02}:{m:02}:00")
    } else {
        format!("{h:02}:{m:02}:00")
    }
}

/// Parses memory like `4000` (MB), `4G`, `512M`, `1T` into MB.
pub fn parse_mem_mb(text: &str) -> Result<u64, SpecError> {
    let t = text.trim();
    let bad = || SpecError::BadMemory(text.to_string());
    if t.is_empty() || t.len() > 24 {
        return Err(bad());
    }
    let (digits, mult) = match t.chars().last().map(|c| c.to_ascii_uppercase()) {
        Some('K') => (&t[..t.len() - 1], 0),
        Some('M') => (&t[..t.len() - 1], 1),
        Some('G') => (&t[..t.len() - 1], 1024),
        Some('T') => (&t[..t.len() - 1], 1024 * 1024),
        _ => (t, 1),
    };
    if digits.is_empty() || !digits.chars().all(|c| c.is_ascii_digit()) {
        return Err(bad());
    }
    let n: u64 = digits.parse().map_err(|_| bad())?;
    let mb = if mult == 0 { n.div_ceil(1024) } else { n.checked_mul(mult).ok_or_else(bad)? };
    if mb > MAX_MEM_MB {
        return Err(SpecError::TooLarge(format!("memory {t}")));
    }
    Ok(mb)
}

/// Parses a GPU request from a GRES or TRES list such as `gpu:2`, `gpu:a100:2`,
/// `gres:gpu:a100:2`, `gres/gpu:a100=2`, `gres/gpu=1,gres/shard=4`. Non-GPU entries
/// are ignored (they are not priced). Returns GPUs by type ("" = untyped).
pub fn parse_gpu_spec(text: &str) -> Result<BTreeMap<String, u32>, SpecError> {
    let mut gpus = BTreeMap::new();
    let bad = || SpecError::BadGres(text.to_string());
    if text.len() > 1024 {
        return Err(bad());
    }
    for raw in text.split(',') {
        let item = raw.trim();
        if item.is_empty() {
            continue;
        }
        // Drop a trailing "(S:0-1)" socket binding or similar decoration.
        let item = item.split('(').next().unwrap_or(item);
        let item = item
            .strip_prefix("gres:")
            .or_else(|| item.strip_prefix("gres/"))
            .or_else(|| item.strip_prefix("gres="))
            .unwrap_or(item);
        // TRES form: name[:type]=count
        let (name_type, count_text) = match item.split_once('=') {
            Some((nt, c)) => (nt, Some(c)),
            None => (item, None),
        };
        let mut parts: Vec<&str> = name_type.split(':').collect();
        if parts.is_empty() || parts[0].is_empty() {
            return Err(bad());
        }
        if !parts[0].chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
            return Err(bad());
        }
        let count: u32 = if let Some(c) = count_text {
            parse_count(c).ok_or_else(bad)?
        } else if parts.len() >= 2 && parts.last().is_some_and(|p| p.chars().all(|c| c.is_ascii_digit()) || is_count(p))
        {
            let c = parts.pop().unwrap_or("1");
            parse_count(c).ok_or_else(bad)?
        } else {
            1
        };
        if parts.len() > 2 {
            return Err(bad());
        }
        let name = parts[0];
        let typ = parts.get(1).copied().unwrap_or("");
        if typ.len() > 64 || !typ.chars().all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c)) {
            return Err(bad());
        }
        if name != "gpu" {
            continue;
        }
        if count == 0 {
            continue;
        }
        let slot = gpus.entry(typ.to_string()).or_insert(0u32);
        *slot = slot
            .checked_add(count)
            .filter(|&n| n <= MAX_GPUS)
            .ok_or_else(|| SpecError::TooLarge(format!("GPUs in {text}")))?;
    }
    Ok(gpus)
}

fn is_count(s: &str) -> bool {
    parse_count(s).is_some()
}

/// A GRES count, with SLURM's k/m suffixes.
fn parse_count(s: &str) -> Option<u32> {
    let s = s.trim();
    let (digits, mult) = match s.chars().last()? {
        'k' | 'K' => (&s[..s.len() - 1], 1024u64),
        'm' | 'M' => (&s[..s.len() - 1], 1024 * 1024),
        _ => (s, 1),
    };
    if digits.is_empty() || digits.len() > 10 || !digits.chars().all(|c| c.is_ascii_digit()) {
        return None;
    }
    let n = digits.parse::<u64>().ok()?.checked_mul(mult)?;
    u32::try_from(n).ok().filter(|&n| n <= MAX_GPUS)
}

/// Counts the tasks of an array spec: `1-100%10` → 100, `1,3,5-7` → 5, `0-15:4` → 4.
pub fn parse_array_task_count(text: &str) -> Result<u32, SpecError> {
    let bad = || SpecError::BadArray(text.to_string());
    let t = text.trim();
    if t.is_empty() || t.len() > 4096 {
        return Err(bad());
    }
    let spec = match t.split_once('%') {
        Some((s, limit)) => {
            if limit.is_empty() || !limit.chars().all(|c| c.is_ascii_digit()) || limit.len() > 9 {
                return Err(bad());
            }
            s
        }
        None => t,
    };
    let num = |s: &str| -> Result<u64, SpecError> {
        if s.is_empty() || s.len() > 9 || !s.chars().all(|c| c.is_ascii_digit()) {
            return Err(bad());
        }
        s.parse::<u64>().map_err(|_| bad())
    };
    // Distinct task ids; ranges may overlap in SLURM's syntax, so count a set.
    let mut ranges: Vec<(u64, u64, u64)> = Vec::new();
    for item in spec.split(',') {
        let (range, step) = match item.split_once(':') {
            Some((r, s)) => (r, num(s)?),
            None => (item, 1),
        };
        if step == 0 {
            return Err(bad());
        }
        let (lo, hi) = match range.split_once('-') {
            Some((a, b)) => (num(a)?, num(b)?),
            None => {
                let v = num(range)?;
                (v, v)
            }
        };
        if hi < lo {
            return Err(bad());
        }
        ranges.push((lo, hi, step));
    }
    let count = count_distinct(&ranges);
    if count == 0 {
        return Err(bad());
    }
    if count > MAX_ARRAY_TASKS as u64 {
        return Err(SpecError::TooLarge(format!("{count} array tasks")));
    }
    Ok(count as u32)
}

/// Distinct task ids in `ranges` (lo, hi, step), by arithmetic: no per-task work, so a
/// spec like `0-9999999,0-9999999` costs microseconds inside slurmctld's locks.
/// Ranges with the same step and the same residue (lo mod step) are merged exactly;
/// overlaps between different progressions are counted twice, which can only
/// over-count (a larger hold), never under-count.
fn count_distinct(ranges: &[(u64, u64, u64)]) -> u64 {
    // (step, residue) -> intervals of k where id = residue + k * step.
    let mut groups: BTreeMap<(u64, u64), Vec<(u64, u64)>> = BTreeMap::new();
    for &(lo, hi, step) in ranges {
        let residue = lo % step;
        let k_hi = lo / step + (hi - lo) / step;
        groups.entry((step, residue)).or_default().push((lo / step, k_hi));
    }
    let mut total: u64 = 0;
    for intervals in groups.values_mut() {
        intervals.sort_unstable();
        let (mut start, mut end) = intervals[0];
        for &(a, b) in &intervals[1..] {
            if a > end.saturating_add(1) {
                total = total.saturating_add(end - start + 1);
                (start, end) = (a, b);
            } else {
                end = end.max(b);
            }
        }
        total = total.saturating_add(end - start + 1);
    }
    total
}

/// The highest task id in an array spec (`None` when it cannot be read), so a spec
/// past SLURM's `MaxArraySize` is refused before anything is counted.
pub fn array_max_task_id(text: &str) -> Option<u64> {
    let spec = text.trim().split('%').next()?;
    spec.split(',')
        .map(|item| {
            let range = item.split(':').next().unwrap_or(item);
            let hi = range.rsplit('-').next().unwrap_or(range);
            hi.parse::<u64>().ok()
        })
        .try_fold(0u64, |max, hi| hi.map(|h| max.max(h)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_limits() {
        assert_eq!(parse_time_limit_min("30"), Ok(30));
        assert_eq!(parse_time_limit_min("1:30"), Ok(2));
        assert_eq!(parse_time_limit_min("02:00:00"), Ok(120));
        assert_eq!(parse_time_limit_min("1-12"), Ok(2160));
        assert_eq!(parse_time_limit_min("1-00:30"), Ok(1470));
        assert_eq!(parse_time_limit_min("2-00:00:01"), Ok(2881));
        assert_eq!(parse_time_limit_min("2h"), Ok(120));
        assert_eq!(parse_time_limit_min("90m"), Ok(90));
        assert_eq!(parse_time_limit_min("1d"), Ok(1440));
        for bad in ["", "0", "abc", "1:2:3:4", "-5", "2x", "h", "1-", "99999999999"] {
            assert!(parse_time_limit_min(bad).is_err(), "{bad}");
        }
        assert_eq!(format_time_limit(2160), "1-12:00:00");
        assert_eq!(format_time_limit(90), "01:30:00");
    }

    #[test]
    fn gpu_specs() {
        let one = |t: &str| parse_gpu_spec(t).unwrap();
        assert_eq!(one("gpu:2"), BTreeMap::from([("".into(), 2)]));
        assert_eq!(one("gpu"), BTreeMap::from([("".into(), 1)]));
        assert_eq!(one("gres:gpu:a100:2"), BTreeMap::from([("a100".into(), 2)]));
        assert_eq!(one("gres/gpu:a100=2,gres/gpu=1"), BTreeMap::from([("".into(), 1), ("a100".into(), 2)]));
        assert_eq!(one("gres/gpu=4"), BTreeMap::from([("".into(), 4)]));
        assert_eq!(one("gres:shard:4"), BTreeMap::new());
        assert_eq!(one("gpu:a100:1(S:0-1)"), BTreeMap::from([("a100".into(), 1)]));
        assert_eq!(one("gpu:a100"), BTreeMap::from([("a100".into(), 1)]));
        for bad in [":", "gpu:a:b:c:2", "gpu=x", "gpu:99999999999", "g$u:1"] {
            assert!(parse_gpu_spec(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn array_specs() {
        assert_eq!(parse_array_task_count("1-100%10"), Ok(100));
        assert_eq!(parse_array_task_count("1,3,5-7"), Ok(5));
        assert_eq!(parse_array_task_count("0-15:4"), Ok(4));
        assert_eq!(parse_array_task_count("1-3,2-4"), Ok(4));
        assert_eq!(parse_array_task_count("7"), Ok(1));
        assert_eq!(parse_array_task_count("0-9,10-19,5-14"), Ok(20));
        assert_eq!(parse_array_task_count("0-10:2,1-11:2"), Ok(12));
        assert_eq!(parse_array_task_count("0-10:2,4-20:2"), Ok(11));
        assert_eq!(parse_array_task_count("0-9999999,0-9999999"), Ok(10_000_000));
        assert!(parse_array_task_count(&["0-9999999"; 400].join(",")).is_ok());
        assert_eq!(array_max_task_id("1-100%10"), Some(100));
        assert_eq!(array_max_task_id("3,1-50:7,9"), Some(50));
        for bad in ["", "5-1", "a-b", "1-10%", "1-10:0", "1,,2"] {
            assert!(parse_array_task_count(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn memory() {
        assert_eq!(parse_mem_mb("4000"), Ok(4000));
        assert_eq!(parse_mem_mb("4G"), Ok(4096));
        assert_eq!(parse_mem_mb("512m"), Ok(512));
        assert!(parse_mem_mb("4X").is_err());
    }
}
