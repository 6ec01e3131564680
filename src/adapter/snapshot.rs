// SPDX-License-Identifier: GPL-2.0-or-later
//! What SLURM says exists, read from the text its commands print: `squeue --json`
//! (SLURM 22.05 has no `scontrol --json`; `squeue --json` gives epoch times, the
//! restart count and the admin comment exactly), `scontrol -o show job` (the
//! fallback, one line per job) and `sacct -P` (finished jobs slurmctld has already
//! purged, when accounting is on). Pure parsing: running the commands is the
//! command line's job (`src/cli/reconcile.rs`), deciding is `adapter::reconcile`'s.

use crate::adapter::fields::CompletionFields;
use crate::core::pricing::job::{parse_array_task_count, EndState, JobCompletion, SpecError};
use crate::core::text::{all_hold_tokens, hold_token};
use serde::Serialize;
use serde_json::Value;
use std::collections::BTreeSet;

/// Where a record came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RecordSource {
    /// slurmctld's memory (`squeue --json` or `scontrol show job`): exact.
    Controller,
    /// slurmdbd (`sacct`): the job is gone from slurmctld; no restart count.
    Accounting,
}

/// One job (one array task, or an array's unsplit remainder) as SLURM reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SlurmJob {
    pub job_id: u32,
    /// Base state in upper case (`PENDING`, `RUNNING`, `COMPLETED`, ...).
    pub state: String,
    pub uid: Option<u32>,
    pub user: Option<String>,
    pub account: Option<String>,
    pub partition: Option<String>,
    /// The job's QOS (`None` from accounting, whose format asks for none).
    pub qos: Option<String>,
    pub admin_comment: Option<String>,
    /// Unix seconds; 0 when unknown.
    pub submit_time: i64,
    pub start_time: i64,
    pub end_time: i64,
    /// Allocated TRES as `cpu=2,mem=200M,node=1,...` (empty when it never ran).
    pub tres_alloc: Option<String>,
    pub cpus: u32,
    pub nodes: u32,
    /// Array tasks this record stands for (an unsplit remainder: several).
    pub task_count: u32,
    /// SLURM's restart count; `None` from accounting, which does not keep it.
    pub restart_cnt: Option<u32>,
    pub source: RecordSource,
    /// The line could not be read unambiguously (user text in it looks like a field).
    /// Such a record is never charged; every hold token it mentions is left alone.
    pub ambiguous: bool,
}

/// States after which a job will not run again. Everything else (PENDING, RUNNING,
/// SUSPENDED, COMPLETING, CONFIGURING, REQUEUED, REQUEUE_HOLD, SPECIAL_EXIT,
/// RESIZING, SIGNALING, STAGE_OUT, ...) is alive.
pub const TERMINAL_STATES: &[&str] = &[
    "COMPLETED",
    "FAILED",
    "TIMEOUT",
    "CANCELLED",
    "NODE_FAIL",
    "PREEMPTED",
    "BOOT_FAIL",
    "DEADLINE",
    "OUT_OF_MEMORY",
];

/// `EndState` for a terminal state name.
pub fn end_state(state: &str) -> Option<EndState> {
    Some(match state {
        "COMPLETED" => EndState::Completed,
        "FAILED" => EndState::Failed,
        "TIMEOUT" => EndState::Timeout,
        "CANCELLED" => EndState::Cancelled,
        "NODE_FAIL" => EndState::NodeFail,
        "PREEMPTED" => EndState::Preempted,
        "BOOT_FAIL" => EndState::BootFail,
        "DEADLINE" => EndState::Deadline,
        "OUT_OF_MEMORY" => EndState::OutOfMemory,
        _ => return None,
    })
}

impl SlurmJob {
    pub fn is_terminal(&self) -> bool {
        TERMINAL_STATES.contains(&self.state.as_str())
    }

    /// The hold token in the admin comment (users cannot set it).
    pub fn hold_token(&self) -> Option<String> {
        hold_token(self.admin_comment.as_deref())
    }

    /// Every hold token the record mentions anywhere (for an ambiguous record).
    pub fn mentioned_tokens(&self) -> BTreeSet<String> {
        all_hold_tokens(self.admin_comment.as_deref().unwrap_or(""))
    }

    /// True when the record says the job ran (it has a start and a later end).
    pub fn ran(&self) -> bool {
        self.start_time > 0 && self.end_time > self.start_time
    }

    /// The completion jobcomp would have built from this record: the same
    /// conversion (`CompletionFields::to_completion`), so the run key and the cost
    /// are the ones the plugin uses. Only for a terminal record.
    pub fn to_completion(&self, cluster: &str) -> Result<JobCompletion, SpecError> {
        CompletionFields {
            cluster: cluster.to_string(),
            job_id: self.job_id,
            uid: self.uid.unwrap_or(u32::MAX),
            user_name: self.user.clone(),
            account: self.account.clone(),
            partition: self.partition.clone(),
            state: end_state(&self.state),
            start_time: self.start_time,
            end_time: self.end_time,
            admin_comment: self.admin_comment.clone(),
            tres_alloc: self.tres_alloc.clone(),
            total_cpus: self.cpus,
            node_cnt: self.nodes,
            task_count: self.task_count,
            submit_time: self.submit_time,
            restart_cnt: self.restart_cnt.unwrap_or(0),
            qos: self.qos.clone(),
        }
        .to_completion()
    }

    /// `cluster:job_id:submit_time:` — every run key of this submission starts so.
    pub fn run_key_prefix(&self, cluster: &str) -> String {
        format!("{cluster}:{}:{}:", self.job_id, self.submit_time)
    }
}

/// Most records read from one command's output (a bound on memory and time).
pub const MAX_RECORDS: usize = 2_000_000;

fn task_count_of(spec: &str) -> u32 {
    let spec = spec.trim().trim_start_matches('[').trim_end_matches(']');
    if spec.is_empty() {
        return 1;
    }
    parse_array_task_count(spec).unwrap_or(1).max(1)
}

// ----- squeue --json -------------------------------------------------------------

/// A JSON number, or SLURM 23.02+'s `{"set": true, "number": n}`; 0 when unset.
fn json_i64(v: Option<&Value>) -> i64 {
    match v {
        Some(Value::Number(n)) => n.as_i64().or_else(|| n.as_f64().map(|f| f as i64)).unwrap_or(0),
        Some(Value::Object(o)) => {
            let set = o.get("set").and_then(Value::as_bool).unwrap_or(true);
            let infinite = o.get("infinite").and_then(Value::as_bool).unwrap_or(false);
            if set && !infinite {
                json_i64(o.get("number"))
            } else {
                0
            }
        }
        _ => 0,
    }
}

fn json_u32(v: Option<&Value>) -> u32 {
    u32::try_from(json_i64(v).max(0)).unwrap_or(u32::MAX)
}

fn json_str(v: Option<&Value>) -> Option<String> {
    v.and_then(Value::as_str).map(str::to_string).filter(|s| !s.is_empty())
}

/// A state string, or 23.02+'s list of state names (base state first).
fn json_state(v: Option<&Value>) -> String {
    let s = match v {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(items)) => items.iter().filter_map(Value::as_str).next().unwrap_or("").to_string(),
        _ => String::new(),
    };
    s.trim().to_ascii_uppercase()
}

/// The fields of one `squeue --json` job that reconcile reads; the many others are
/// skipped while parsing (a big cluster's output is hundreds of MB).
#[derive(serde::Deserialize)]
struct RawJob {
    job_id: Option<Value>,
    job_state: Option<Value>,
    user_id: Option<Value>,
    user_name: Option<Value>,
    account: Option<Value>,
    partition: Option<Value>,
    qos: Option<Value>,
    admin_comment: Option<Value>,
    submit_time: Option<Value>,
    start_time: Option<Value>,
    end_time: Option<Value>,
    tres_alloc_str: Option<Value>,
    cpus: Option<Value>,
    node_count: Option<Value>,
    array_task_string: Option<Value>,
    restart_cnt: Option<Value>,
}

#[derive(serde::Deserialize)]
struct RawSqueue {
    errors: Option<Vec<Value>>,
    jobs: Option<Vec<RawJob>>,
}

/// Parses `squeue --json` (every job slurmctld still has, finished ones included).
/// An `errors` list that is not empty, or text that is not the expected object, is
/// an error: reconcile must never mistake "cannot tell" for "no jobs".
pub fn parse_squeue_json(text: &str) -> Result<Vec<SlurmJob>, String> {
    let doc: RawSqueue = serde_json::from_str(text).map_err(|e| format!("squeue --json printed no job list: {e}"))?;
    if let Some(errors) = doc.errors.filter(|e| !e.is_empty()) {
        return Err(format!("squeue --json reported errors: {}", Value::Array(errors)));
    }
    let jobs = doc.jobs.ok_or("squeue --json printed no `jobs` list")?;
    if jobs.len() > MAX_RECORDS {
        return Err(format!("squeue --json listed {} jobs, more than {MAX_RECORDS}", jobs.len()));
    }
    let mut out = Vec::with_capacity(jobs.len());
    for j in jobs {
        let job_id = json_u32(j.job_id.as_ref());
        if job_id == 0 {
            return Err("squeue --json: a job without a job id".to_string());
        }
        let task_string = json_str(j.array_task_string.as_ref()).unwrap_or_default();
        out.push(SlurmJob {
            job_id,
            state: json_state(j.job_state.as_ref()),
            uid: j.user_id.as_ref().map(|v| json_u32(Some(v))),
            user: json_str(j.user_name.as_ref()),
            account: json_str(j.account.as_ref()),
            partition: json_str(j.partition.as_ref()),
            qos: json_str(j.qos.as_ref()),
            admin_comment: json_str(j.admin_comment.as_ref()),
            submit_time: json_i64(j.submit_time.as_ref()),
            start_time: json_i64(j.start_time.as_ref()),
            end_time: json_i64(j.end_time.as_ref()),
            tres_alloc: json_str(j.tres_alloc_str.as_ref()),
            cpus: json_u32(j.cpus.as_ref()),
            nodes: json_u32(j.node_count.as_ref()),
            task_count: task_count_of(&task_string),
            restart_cnt: Some(json_u32(j.restart_cnt.as_ref())),
            source: RecordSource::Controller,
            ambiguous: false,
        });
    }
    Ok(out)
}

// ----- scontrol -o show job --------------------------------------------------------

/// The fields read from a `scontrol -o show job` line. If user text (a job name, a
/// comment, a working directory) contains one of these as ` Key=`, the key appears
/// twice and the line is ambiguous.
const SCONTROL_KEYS: &[&str] = &[
    "JobId",
    "ArrayTaskId",
    "UserId",
    "Account",
    "Partition",
    "JobState",
    "Restarts",
    "SubmitTime",
    "StartTime",
    "EndTime",
    "TRES",
    "NumCPUs",
    "NumNodes",
    "AdminComment",
];

/// A time printed with `SLURM_TIME_FORMAT=%s` (unix seconds), or as
/// `YYYY-MM-DDTHH:MM:SS` read as UTC (run scontrol with `TZ=UTC`); 0 for
/// `Unknown`, `None`, `N/A`.
pub fn parse_slurm_time(text: &str) -> Result<i64, String> {
    let t = text.trim();
    if t.is_empty() || matches!(t, "Unknown" | "None" | "N/A" | "0") {
        return Ok(0);
    }
    if t.chars().all(|c| c.is_ascii_digit()) {
        return t.parse::<i64>().map_err(|_| format!("time '{t}' is out of range"));
    }
    chrono::NaiveDateTime::parse_from_str(t, "%Y-%m-%dT%H:%M:%S")
        .map(|d| d.and_utc().timestamp())
        .map_err(|_| format!("time '{}' is not unix seconds or YYYY-MM-DDTHH:MM:SS", crate::core::text::clean_text(t)))
}

fn null_to_none(v: &str) -> Option<String> {
    let v = v.trim();
    (!v.is_empty() && v != "(null)").then(|| v.to_string())
}

/// Splits one `Key=Value Key=Value ...` line; a value runs until the next token
/// that looks like `Key=`. Returns (key, value) in order.
fn split_oneliner(line: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for tok in line.split(' ') {
        let key = tok.find('=').map(|i| &tok[..i]).filter(|k| {
            !k.is_empty()
                && k.chars().next().is_some_and(|c| c.is_ascii_uppercase())
                && k.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '/' | ':' | '.'))
        });
        match (key, out.last_mut()) {
            (Some(k), _) => out.push((k.to_string(), tok[k.len() + 1..].to_string())),
            (None, Some((_, v))) => {
                v.push(' ');
                v.push_str(tok);
            }
            (None, None) => {}
        }
    }
    for (_, v) in &mut out {
        let trimmed = v.trim_end().to_string();
        *v = trimmed;
    }
    out
}

/// Parses `scontrol -o show job` output (run with `SLURM_TIME_FORMAT=%s` and
/// `TZ=UTC`). A line where a field this reads appears twice is kept as an
/// ambiguous record: never charged, and every hold token in it is left alone.
pub fn parse_scontrol_oneliners(text: &str) -> Result<Vec<SlurmJob>, String> {
    let mut out = Vec::new();
    for line in text.lines().map(str::trim).filter(|l| l.starts_with("JobId=")) {
        if out.len() >= MAX_RECORDS {
            return Err(format!("scontrol listed more than {MAX_RECORDS} jobs"));
        }
        let fields = split_oneliner(line);
        let ambiguous = SCONTROL_KEYS.iter().any(|k| fields.iter().filter(|(key, _)| key == k).count() > 1);
        let get = |k: &str| fields.iter().find(|(key, _)| key == k).map(|(_, v)| v.as_str());
        let job_id: u32 = get("JobId")
            .and_then(|v| v.trim().parse().ok())
            .ok_or_else(|| format!("scontrol: no job id in '{}'", crate::core::text::clean_text(line)))?;
        if ambiguous {
            out.push(SlurmJob {
                job_id,
                state: "UNKNOWN".into(),
                uid: None,
                user: None,
                account: None,
                partition: None,
                qos: None,
                // Every token anywhere on the line is left alone.
                admin_comment: Some(line.to_string()),
                submit_time: 0,
                start_time: 0,
                end_time: 0,
                tres_alloc: None,
                cpus: 0,
                nodes: 0,
                task_count: 1,
                restart_cnt: None,
                source: RecordSource::Controller,
                ambiguous: true,
            });
            continue;
        }
        let time = |k: &str| -> Result<i64, String> {
            parse_slurm_time(get(k).unwrap_or("")).map_err(|e| format!("scontrol: job {job_id} {k}: {e}"))
        };
        // UserId=alice(1001)
        let (user, uid) = match get("UserId") {
            Some(v) => match v.rsplit_once('(') {
                Some((name, rest)) => (null_to_none(name), rest.trim_end_matches(')').parse::<u32>().ok()),
                None => (null_to_none(v), None),
            },
            None => (None, None),
        };
        let task_count = match get("ArrayTaskId") {
            Some(spec) if spec.contains(['-', ',']) => task_count_of(spec),
            _ => 1,
        };
        out.push(SlurmJob {
            job_id,
            state: get("JobState").unwrap_or("").trim().to_ascii_uppercase(),
            uid,
            user,
            account: get("Account").and_then(null_to_none),
            partition: get("Partition").and_then(null_to_none),
            qos: get("QOS").and_then(null_to_none),
            admin_comment: get("AdminComment").and_then(null_to_none),
            submit_time: time("SubmitTime")?,
            start_time: time("StartTime")?,
            end_time: time("EndTime")?,
            tres_alloc: get("TRES").and_then(null_to_none),
            cpus: get("NumCPUs").and_then(|v| v.parse().ok()).unwrap_or(0),
            nodes: get("NumNodes").and_then(|v| v.parse().ok()).unwrap_or(0),
            task_count,
            restart_cnt: get("Restarts").and_then(|v| v.parse().ok()),
            source: RecordSource::Controller,
            ambiguous: false,
        });
    }
    Ok(out)
}

// ----- sacct -P ----------------------------------------------------------------------

/// The `--format` reconcile asks sacct for; `AdminComment` is last, so a `|` in it
/// cannot shift the other fields.
pub const SACCT_FORMAT: &str =
    "JobIDRaw,JobID,State,Submit,Start,End,AllocTRES,Account,Partition,User,UID,NCPUS,NNodes,AdminComment";

/// Parses `sacct -a -X -n -P --format=SACCT_FORMAT` (run with
/// `SLURM_TIME_FORMAT=%s`). One record per job or array task; sacct keeps no
/// restart count, so `restart_cnt` is `None`.
pub fn parse_sacct(text: &str) -> Result<Vec<SlurmJob>, String> {
    let mut out = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        if out.len() >= MAX_RECORDS {
            return Err(format!("sacct listed more than {MAX_RECORDS} jobs"));
        }
        let f: Vec<&str> = line.splitn(14, '|').collect();
        if f.len() != 14 {
            return Err(format!("sacct: '{}' does not have 14 fields", crate::core::text::clean_text(line)));
        }
        // JobIDRaw of an array task is its own job id; of a job step, `id.step`
        // (-X leaves those out; skip any that slip through).
        let Ok(job_id) = f[0].trim().parse::<u32>() else {
            continue;
        };
        let time = |i: usize, k: &str| -> Result<i64, String> {
            parse_slurm_time(f[i]).map_err(|e| format!("sacct: job {job_id} {k}: {e}"))
        };
        // JobID `6_[1-6%2]` is an array's unsplit remainder.
        let task_count = match f[1].split_once('_') {
            Some((_, spec)) if spec.starts_with('[') => task_count_of(spec),
            _ => 1,
        };
        out.push(SlurmJob {
            job_id,
            // `CANCELLED by 1000`
            state: f[2].split_whitespace().next().unwrap_or("").to_ascii_uppercase(),
            uid: f[10].trim().parse().ok(),
            user: null_to_none(f[9]),
            account: null_to_none(f[7]),
            partition: null_to_none(f[8]),
            qos: None,
            admin_comment: null_to_none(f[13]),
            submit_time: time(3, "Submit")?,
            start_time: time(4, "Start")?,
            end_time: time(5, "End")?,
            tres_alloc: null_to_none(f[6]),
            cpus: f[11].trim().parse().unwrap_or(0),
            nodes: f[12].trim().parse().unwrap_or(0),
            task_count,
            restart_cnt: None,
            source: RecordSource::Accounting,
            ambiguous: false,
        });
    }
    Ok(out)
}

/// Reads `ClusterName` and `AccountingStorageType` from `scontrol show config`.
pub fn parse_show_config(text: &str) -> (Option<String>, Option<String>) {
    let mut cluster = None;
    let mut storage = None;
    for line in text.lines() {
        if let Some((k, v)) = line.split_once('=') {
            match k.trim() {
                "ClusterName" => cluster = null_to_none(v),
                "AccountingStorageType" => storage = null_to_none(v),
                _ => {}
            }
        }
    }
    (cluster, storage)
}

/// Everything reconcile knows about SLURM at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Snapshot {
    /// `ClusterName`, the first part of every run key.
    pub cluster: String,
    pub jobs: Vec<SlurmJob>,
    /// What was used and what failed (e.g. "sacct failed: ...; slurmctld only").
    pub notes: Vec<String>,
}

impl Snapshot {
    /// slurmctld's records, plus accounting records of jobs slurmctld no longer has.
    pub fn merge(cluster: String, controller: Vec<SlurmJob>, accounting: Vec<SlurmJob>, notes: Vec<String>) -> Self {
        let known: BTreeSet<u32> = controller.iter().map(|j| j.job_id).collect();
        let mut jobs = controller;
        jobs.extend(accounting.into_iter().filter(|j| !known.contains(&j.job_id)));
        Snapshot { cluster, jobs, notes }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Captured from SLURM 22.05.8 (`squeue --json`), trimmed to the fields read.
    const SQUEUE: &str = r#"{"meta": {}, "errors": [], "jobs": [
      {"account": "chem", "admin_comment": "x asbb:hold=abc", "array_job_id": 0, "array_task_id": null,
       "array_task_string": "", "cpus": 1, "node_count": 1, "end_time": 1795743100, "job_id": 1,
       "job_state": "COMPLETED", "partition": "debug", "restart_cnt": 0, "start_time": 1795743099,
       "submit_time": 1795743099, "tres_alloc_str": "cpu=1,node=1,billing=1", "user_id": 1001, "user_name": "alice"},
      {"account": "", "admin_comment": "", "array_job_id": 6, "array_task_id": null, "array_task_string": "1-6",
       "cpus": 1, "node_count": 1, "end_time": 0, "job_id": 6, "job_state": "PENDING", "partition": "debug",
       "restart_cnt": 0, "start_time": 0, "submit_time": 1795743200, "tres_alloc_str": "", "user_id": 0,
       "user_name": "root"},
      {"job_id": 7, "job_state": ["CANCELLED"], "submit_time": {"set": true, "number": 5},
       "start_time": {"set": false, "number": 0}, "restart_cnt": 2}
    ]}"#;

    #[test]
    fn squeue_json() {
        let jobs = parse_squeue_json(SQUEUE).unwrap();
        assert_eq!(jobs.len(), 3);
        let j = &jobs[0];
        assert_eq!(
            (j.job_id, j.state.as_str(), j.uid, j.submit_time, j.restart_cnt),
            (1, "COMPLETED", Some(1001), 1795743099, Some(0))
        );
        assert_eq!(j.hold_token().as_deref(), Some("abc"));
        assert!(j.is_terminal() && j.ran());
        let c = j.to_completion("c1").unwrap();
        assert_eq!(c.run_key(), "c1:1:1795743099:0");
        assert_eq!(c.allocated.unwrap().cpus, 1);
        assert_eq!((jobs[1].task_count, jobs[1].is_terminal(), jobs[1].account.as_deref()), (6, false, None));
        assert_eq!(
            (jobs[2].state.as_str(), jobs[2].submit_time, jobs[2].start_time, jobs[2].restart_cnt),
            ("CANCELLED", 5, 0, Some(2))
        );
        assert!(parse_squeue_json(r#"{"errors": ["slurmctld down"], "jobs": []}"#).is_err());
        assert!(parse_squeue_json("squeue: error: ...").is_err());
        assert!(parse_squeue_json(r#"{"errors": []}"#).is_err());
    }

    const SCONTROL: &str = "JobId=1 JobName=wrap UserId=alice(1001) GroupId=alice(1001) MCS_label=N/A Priority=4294901759 Nice=0 Account=chem QOS=(null) JobState=COMPLETED Reason=None Dependency=(null) Requeue=1 Restarts=0 BatchFlag=1 Reboot=0 ExitCode=0:0 RunTime=00:00:01 TimeLimit=00:01:00 TimeMin=N/A SubmitTime=1795743099 EligibleTime=1795743099 AccrueTime=1795743099 StartTime=1795743099 EndTime=1795743100 Deadline=N/A SuspendTime=None SecsPreSuspend=0 LastSchedEval=1795743099 Scheduler=Main Partition=debug AllocNode:Sid=localhost:29282 ReqNodeList=(null) ExcNodeList=(null) NodeList=vm BatchHost=vm NumNodes=1 NumCPUs=1 NumTasks=1 CPUs/Task=1 ReqB:S:C:T=0:0:*:* TRES=cpu=1,node=1,billing=1 Socks/Node=* NtasksPerN:B:S:C=0:0:*:* CoreSpec=* MinCPUsNode=1 MinMemoryNode=0 MinTmpDiskNode=0 Features=(null) DelayBoot=00:00:00 OverSubscribe=OK Contiguous=0 Licenses=(null) Network=(null) Command=(null) WorkDir=/tmp/expl/work AdminComment=x asbb:hold=abc  StdErr=/tmp/expl/work/slurm-1.out StdIn=/dev/null StdOut=/tmp/expl/work/slurm-1.out Power= \n\
JobId=6 ArrayJobId=6 ArrayTaskId=1-6 JobName=wrap UserId=root(0) GroupId=root(0) Account=(null) JobState=PENDING Restarts=0 SubmitTime=2026-11-27T01:31:39 StartTime=Unknown EndTime=Unknown Partition=debug NumNodes=1 NumCPUs=1 TRES=cpu=1,mem=24105M,node=1,billing=1\n\
JobId=9 JobName=x AdminComment=asbb:hold=victim UserId=mallory(1002) Account=chem JobState=COMPLETED Restarts=0 SubmitTime=1 StartTime=2 EndTime=3 AdminComment=asbb:hold=mine\n";

    #[test]
    fn scontrol_oneliners() {
        let jobs = parse_scontrol_oneliners(SCONTROL).unwrap();
        assert_eq!(jobs.len(), 3);
        let j = &jobs[0];
        assert_eq!(
            (j.uid, j.user.as_deref(), j.account.as_deref(), j.cpus),
            (Some(1001), Some("alice"), Some("chem"), 1)
        );
        assert_eq!(j.admin_comment.as_deref(), Some("x asbb:hold=abc"));
        assert_eq!(j.to_completion("c1").unwrap().run_key(), "c1:1:1795743099:0");
        assert_eq!((jobs[1].task_count, jobs[1].submit_time, jobs[1].start_time), (6, 1795743099, 0));
        // A job name that forges a field makes the line ambiguous: both tokens left alone.
        assert!(jobs[2].ambiguous);
        assert_eq!(jobs[2].mentioned_tokens(), BTreeSet::from(["victim".to_string(), "mine".to_string()]));
    }

    #[test]
    fn sacct_lines() {
        let text =
            "12|12|COMPLETED|100|110|170|billing=2,cpu=2,mem=1000M,node=1|chem|debug|alice|1001|2|1|asbb:hold=t1 a|b\n\
                    13|6_[1-6%2]|CANCELLED by 1001|100|Unknown|120||chem|debug|alice|1001|1|1|\n\
                    14.batch|14.batch|COMPLETED|1|2|3||||||1|1|\n";
        let jobs = parse_sacct(text).unwrap();
        assert_eq!(jobs.len(), 2);
        assert_eq!(jobs[0].admin_comment.as_deref(), Some("asbb:hold=t1 a|b"));
        assert_eq!(jobs[0].hold_token().as_deref(), Some("t1"));
        assert_eq!((jobs[0].restart_cnt, jobs[0].source), (None, RecordSource::Accounting));
        assert_eq!(jobs[0].to_completion("c").unwrap().allocated.unwrap().mem_mb, 1000);
        assert_eq!((jobs[1].state.as_str(), jobs[1].task_count, jobs[1].start_time), ("CANCELLED", 6, 0));
        assert!(parse_sacct("1|2|3\n").is_err());
    }

    #[test]
    fn config_and_merge() {
        let (c, s) =
            parse_show_config("ClusterName             = expl\nAccountingStorageType   = accounting_storage/none\n");
        assert_eq!((c.as_deref(), s.as_deref()), (Some("expl"), Some("accounting_storage/none")));
        let ctl = parse_squeue_json(SQUEUE).unwrap();
        let acct =
            parse_sacct("1|1|COMPLETED|1|2|3||chem|debug|a|1|1|1|\n99|99|COMPLETED|1|2|3||chem|debug|a|1|1|1|\n")
                .unwrap();
        let s = Snapshot::merge("c".into(), ctl, acct, vec![]);
        assert_eq!(s.jobs.iter().map(|j| j.job_id).collect::<Vec<_>>(), vec![1, 6, 7, 99]);
    }

    #[test]
    fn times() {
        assert_eq!(parse_slurm_time("Unknown"), Ok(0));
        assert_eq!(parse_slurm_time("1795743099"), Ok(1795743099));
        assert_eq!(parse_slurm_time("1970-01-02T00:00:00"), Ok(86400));
        assert!(parse_slurm_time("yesterday").is_err());
    }
}
