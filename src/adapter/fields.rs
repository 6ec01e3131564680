// SPDX-License-Identifier: GPL-2.0-or-later
//! The raw fields the SLURM glue copies out of `job_desc_msg_t` and `job_record_t`,
//! as plain Rust values, and their conversion into requests and completions.
//!
//! SLURM's sentinels are kept as plain numbers here (NO_VAL, INFINITE, the
//! MEM_PER_CPU flag) so that the conversion — the part that sees arbitrary user
//! input — is pure, unit-tested and fuzzed without a slurmctld.

use crate::core::config::{Config, MissingPolicy};
use crate::core::pricing::job::{
    array_max_task_id, parse_array_task_count, parse_gpu_spec, EndState, JobCompletion, JobRequest, Resources,
    SpecError, MAX_CPUS, MAX_NODES, MAX_TIME_LIMIT_MIN,
};
use crate::core::text::{clean_text, hold_token};
use std::collections::BTreeMap;

pub const NO_VAL: u32 = 0xffff_fffe;
pub const INFINITE: u32 = 0xffff_ffff;
pub const NO_VAL16: u16 = 0xfffe;
pub const INFINITE16: u16 = 0xffff;
pub const NO_VAL64: u64 = 0xffff_ffff_ffff_fffe;
pub const INFINITE64: u64 = 0xffff_ffff_ffff_ffff;
/// Set in `pn_min_memory` when the value is per CPU rather than per node.
pub const MEM_PER_CPU: u64 = 0x8000_0000_0000_0000;
/// Longest account or partition name asbb accepts.
pub const MAX_NAME_LEN: usize = 128;
/// Longest line the plugins write into slurmctld's log.
pub const MAX_LOG_LINE: usize = 4096;

/// A line for slurmctld's log: control characters (a user's `-A $'x\ny'` would forge a
/// log line; escape sequences would reach an admin's terminal) shown as `\xNN`, and
/// the length bounded.
pub fn log_line(text: &str) -> String {
    let mut out = String::with_capacity(text.len().min(MAX_LOG_LINE));
    for c in text.chars() {
        if out.len() >= MAX_LOG_LINE {
            out.push('…');
            break;
        }
        if c.is_control() {
            out.push_str(&format!("\\x{:02x}", c as u32 & 0xff));
        } else {
            out.push(c);
        }
    }
    out
}

fn valid_name(name: &str) -> bool {
    name.chars().count() <= MAX_NAME_LEN && !name.chars().any(|c| c.is_control() || c.is_whitespace())
}

/// What job_submit/job_modify see of a job description.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SubmitFields {
    pub uid: u32,
    pub user_name: Option<String>,
    /// `-A`, or the default account the glue found for the user.
    pub account: Option<String>,
    /// `-p`, or the default partition's name.
    pub partition: Option<String>,
    /// The partition's DefaultTime / MaxTime in minutes, raw (NO_VAL/INFINITE allowed).
    pub partition_default_time: u32,
    pub partition_max_time: u32,
    /// Raw `time_limit` in minutes (NO_VAL when not given, INFINITE for unlimited).
    pub time_limit: u32,
    pub min_nodes: u32,
    pub max_nodes: u32,
    pub num_tasks: u32,
    pub ntasks_per_node: u16,
    /// `--ntasks-per-core` (1 under `CR_ONE_TASK_PER_CORE` where the job does not say)
    /// and `--threads-per-core` (`--hint=nomultithread` sends both as 1).
    pub ntasks_per_core: u16,
    pub threads_per_core: u16,
    /// `--ntasks-per-gpu`: a job that gives no task count gets this many per GPU.
    pub ntasks_per_tres: u16,
    pub cpus_per_task: u16,
    pub min_cpus: u32,
    /// `--mincpus`: CPUs on each node.
    pub pn_min_cpus: u16,
    /// Nodes the job names (`-w`, `ReqNodeList`); 0 when none. It runs on all of them.
    pub req_node_count: u32,
    /// Raw `pn_min_memory` in MB (MEM_PER_CPU flag for per-CPU memory).
    pub pn_min_memory: u64,
    pub tres_per_node: Option<String>,
    pub tres_per_job: Option<String>,
    pub tres_per_task: Option<String>,
    /// `--gpus-per-socket` (SLURM requires `--sockets-per-node` with it).
    pub tres_per_socket: Option<String>,
    pub sockets_per_node: u16,
    /// `--cpus-per-gpu` and `--mem-per-gpu` (MB), e.g. `gres:gpu:8`.
    pub cpus_per_tres: Option<String>,
    pub mem_per_tres: Option<String>,
    pub array_inx: Option<String>,
    pub qos: Option<String>,
    pub job_id: u32,
    pub name: Option<String>,
    /// Existing `admin_comment`, where asbb's hold token lives.
    pub admin_comment: Option<String>,
    pub comment: Option<String>,
    pub wckey: Option<String>,
    /// The `ASBB_*` entries of the job's environment as sbatch sent it (`KEY=VALUE`);
    /// the glue copies no others.
    pub environment: Vec<String>,
    /// SLURM's `MaxArraySize` (task ids must be below it); 0 when unknown.
    pub max_array_size: u32,
    /// `--exclusive`: the job is allocated whole nodes, so it is priced for them.
    pub exclusive: bool,
    /// The partition's largest node: CPUs and memory (MB); 0 when unknown. `--mem=0`
    /// asks for all of a node's memory, `--exclusive` for all its CPUs.
    pub node_max_cpus: u32,
    pub node_max_mem_mb: u64,
    /// The partition's `MaxMemPerCPU` (else slurm.conf's; the least of any partition
    /// listed), raw: MEM_PER_CPU set for a per-CPU cap; 0 for none.
    pub max_mem_per_cpu: u64,
    /// The threads of a core of the partition's nodes (its largest) where SLURM
    /// allocates whole cores (CR_Core, CR_Socket); 0 or 1 otherwise.
    pub core_threads: u32,
    /// The CPUs SLURM allocates together on the partition's nodes (a core's threads
    /// under CR_Core, a socket's under CR_Socket); 0 or 1: CPU by CPU.
    pub cpu_alloc_unit: u32,
    /// Nodes in the largest partition the job lists; 0 when unknown. SLURM may give a
    /// job up to this many nodes, whatever its task count asks for.
    pub partition_nodes: u32,
    /// The partition's `DefCpuPerGPU` / `DefMemPerGPU` (else slurm.conf's; the most of
    /// any partition the job lists): what each GPU brings unless the job says.
    pub partition_gpu_defaults: GpuDefaults,
    /// The memory SLURM gives a job without `--mem` (its partition's DefMemPerCPU or
    /// DefMemPerNode, else slurm.conf's), raw as `pn_min_memory`: 0 is all of each
    /// node's; [`NO_DEFAULT_MEMORY`] when not known (priced as no memory).
    pub partition_default_memory: u64,
    /// The QOS SLURM gives a job that names none (the association's default).
    pub default_qos: Option<String>,
    /// slurmctld enforces associations and the user has none with this account (and
    /// partition): slurmctld would refuse the job, so asbb holds nothing for it.
    pub association_missing: bool,
}

/// [`SubmitFields::partition_default_memory`] not known.
pub const NO_DEFAULT_MEMORY: u64 = NO_VAL64;

/// `DefCpuPerGPU` and `DefMemPerGPU` (MB) of a partition or of slurm.conf; 0 where
/// not set.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GpuDefaults {
    pub cpus_per_gpu: u64,
    pub mem_per_gpu_mb: u64,
}

/// What jobcomp sees of a finished run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CompletionFields {
    pub cluster: String,
    pub job_id: u32,
    pub uid: u32,
    pub user_name: Option<String>,
    pub account: Option<String>,
    pub partition: Option<String>,
    pub state: Option<EndState>,
    pub start_time: i64,
    pub end_time: i64,
    pub admin_comment: Option<String>,
    /// `tres_fmt_alloc_str`, e.g. `cpu=2,mem=200M,node=1,billing=2,gres/gpu:a100=2`.
    pub tres_alloc: Option<String>,
    pub total_cpus: u32,
    pub node_cnt: u32,
    /// Tasks still represented by this record (an array's unsplit remainder), else 1.
    pub task_count: u32,
    /// When the job was submitted (unix s); with the job id it names the job across
    /// job-id reuse.
    pub submit_time: i64,
    /// How many times the job was requeued before this run.
    pub restart_cnt: u32,
    /// The QOS in the job record when the run ended.
    pub qos: Option<String>,
}

/// Why a job description could not become a request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FieldError {
    #[error("asbb: no account given and no default account; submit with -A ACCOUNT")]
    NoAccount,
    #[error("asbb: no partition given and no default partition; submit with -p PARTITION")]
    NoPartition,
    #[error("asbb: job has no time limit; submit with --time (e.g. --time=2:00:00) so its cost can be estimated")]
    NoTimeLimit,
    #[error("asbb: you have no association with account '{0}'; submit with an account you belong to (sacctmgr show assoc user=$USER)")]
    NoAssociation(String),
    #[error("asbb: that {0} name is not valid (control characters, or over {MAX_NAME_LEN} characters)")]
    BadName(&'static str),
    #[error("asbb: {0}")]
    Spec(#[from] SpecError),
}

/// The outcome of reading a job description.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadRequest {
    Priced(JobRequest),
    /// Passes untouched (policy says exempt), with why, for the log.
    Exempt(String),
}

/// Who asks for an update, judged the way slurmctld judges it. In 22.05 job_modify
/// runs before slurmctld checks who is asking (job_mgr.c, `update_job_desc`), so the
/// plugin must judge first and follow only changes slurmctld will make.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Caller {
    /// root, SlurmUser, or a SLURM operator/administrator (`validate_operator`).
    Operator,
    /// The job's owner.
    Owner,
    /// Anyone else: slurmctld refuses the whole update.
    Other,
}

/// The job as it will be after an update slurmctld can accept from `caller`, or
/// `None` when slurmctld refuses it outright. `record` is the job as it is, `merged`
/// the record with the update laid over it. Changes slurmctld refuses are left out,
/// so the ledger never follows a refused update:
/// - a job that is no longer pending can change only its time limit (partition,
///   QOS, account and size are "pending only" in `_update_job`);
/// - an owner may shorten a time limit; lengthen it only while pending and within
///   the partition's MaxTime (only operators may do more).
pub fn effective_update(
    record: &SubmitFields,
    merged: &SubmitFields,
    caller: Caller,
    pending: bool,
) -> Option<SubmitFields> {
    let mut out = match (caller, pending) {
        (Caller::Other, _) => return None,
        (_, true) => merged.clone(),
        (_, false) => SubmitFields { time_limit: merged.time_limit, ..record.clone() },
    };
    let longer = |new: u32, old: u32| new != NO_VAL && old != INFINITE && (new == INFINITE || new > old);
    if caller == Caller::Owner && longer(merged.time_limit, record.time_limit) {
        let within_max = match merged.partition_max_time {
            INFINITE => merged.time_limit != INFINITE,
            max => max != NO_VAL && merged.time_limit <= max,
        };
        if !pending || !within_max {
            out.time_limit = record.time_limit;
        }
    }
    Some(out)
}

fn present(v: u32) -> Option<u32> {
    (v != NO_VAL && v != INFINITE && v != 0).then_some(v)
}

fn present16(v: u16) -> Option<u32> {
    (v != NO_VAL16 && v != INFINITE16 && v != 0).then_some(v as u32)
}

impl SubmitFields {
    /// What `sbatch -A account -p partition -t minutes` from `user` reads as: one CPU,
    /// every other number unset (NO_VAL, as `slurm_init_job_desc_msg` leaves it), and
    /// no partition time limits. Tests and examples start from it.
    pub fn sbatch(uid: u32, user: &str, account: &str, partition: &str, time_limit_min: u32) -> SubmitFields {
        SubmitFields {
            uid,
            user_name: Some(user.into()),
            account: Some(account.into()),
            partition: Some(partition.into()),
            partition_default_time: NO_VAL,
            partition_max_time: INFINITE,
            time_limit: time_limit_min,
            min_nodes: NO_VAL,
            max_nodes: NO_VAL,
            num_tasks: NO_VAL,
            ntasks_per_node: NO_VAL16,
            ntasks_per_core: NO_VAL16,
            threads_per_core: NO_VAL16,
            ntasks_per_tres: NO_VAL16,
            cpus_per_task: NO_VAL16,
            sockets_per_node: NO_VAL16,
            min_cpus: 1,
            pn_min_cpus: NO_VAL16,
            pn_min_memory: NO_VAL64,
            partition_default_memory: NO_DEFAULT_MEMORY,
            job_id: NO_VAL,
            ..Default::default()
        }
    }

    /// Turns the description into a priced request, or says it is exempt, or why not.
    pub fn to_request(&self, config: &Config) -> Result<ReadRequest, FieldError> {
        // slurmctld lowercases the account after job_submit (validate_job_create_req),
        // so `-A CHEM` is the job of account `chem`.
        let account = match self.account.as_deref().map(str::trim).filter(|a| !a.is_empty()) {
            Some(a) => a.to_ascii_lowercase(),
            None => match config.policy.no_account {
                MissingPolicy::Exempt => return Ok(ReadRequest::Exempt("job has no account".into())),
                MissingPolicy::Reject => return Err(FieldError::NoAccount),
            },
        };
        if !valid_name(&account) {
            return Err(FieldError::BadName("account"));
        }
        let partitions: Vec<&str> = match self.partition.as_deref().map(str::trim).filter(|p| !p.is_empty()) {
            Some(p) => p.split(',').map(str::trim).filter(|p| !p.is_empty()).collect(),
            None => Vec::new(),
        };
        if !partitions.iter().all(|p| valid_name(p)) {
            return Err(FieldError::BadName("partition"));
        }
        if partitions.is_empty() {
            return Err(FieldError::NoPartition);
        }
        // Before anything is held: nobody can lock up the money of a group they do not
        // belong to by naming its account.
        if self.association_missing {
            return Err(FieldError::NoAssociation(account));
        }
        if let Some(why) = config.exemption(&account, &partitions) {
            return Ok(ReadRequest::Exempt(why));
        }
        // A job listing several partitions may run in any of them: priced at the dearest
        // of those not exempt (below).
        let priced: Vec<&str> = partitions.iter().copied().filter(|p| !config.is_exempt_partition(p)).collect();
        let partition = priced.first().or(partitions.first()).copied().unwrap_or_default().to_string();
        let time_limit_min = match self.time_limit {
            INFINITE => return self.unlimited(config),
            NO_VAL => match (self.partition_default_time, self.partition_max_time) {
                (d, _) if present(d).is_some() => d,
                (_, m) if present(m).is_some() => m,
                _ => match config.partitions.get(&partition).and_then(|p| p.default_time_limit_min) {
                    Some(d) => d,
                    None => return self.unlimited(config),
                },
            },
            0 => return Err(FieldError::NoTimeLimit),
            t => t,
        };
        if time_limit_min > MAX_TIME_LIMIT_MIN {
            return Err(SpecError::TooLarge(format!("time limit of {time_limit_min} minutes")).into());
        }
        let array_tasks = match self.array_inx.as_deref().filter(|s| !s.trim().is_empty()) {
            Some(spec) => {
                // SLURM refuses ids at or over MaxArraySize only after job_submit; asbb
                // refuses them first, before counting anything.
                if let Some(max_id) =
                    array_max_task_id(spec).filter(|&m| self.max_array_size > 0 && m >= self.max_array_size as u64)
                {
                    return Err(SpecError::TooLarge(format!(
                        "array index {max_id} (this cluster's MaxArraySize is {})",
                        self.max_array_size
                    ))
                    .into());
                }
                parse_array_task_count(spec)?
            }
            None => 1,
        };
        let resources = self.resources()?;
        let mut request = JobRequest {
            user: self.user_name.clone().unwrap_or_else(|| self.uid.to_string()),
            uid: self.uid,
            account,
            partition,
            resources,
            time_limit_min,
            array_tasks,
            qos: self.qos.clone().filter(|q| !q.is_empty()).or_else(|| self.default_qos.clone()),
            job_id: present(self.job_id),
            job_name: self.name.as_deref().map(clean_text),
        };
        request.partition = dearest_partition(config, &request, &priced);
        Ok(ReadRequest::Priced(request))
    }

    fn unlimited(&self, config: &Config) -> Result<ReadRequest, FieldError> {
        match config.policy.infinite_time_limit {
            MissingPolicy::Reject => Err(FieldError::NoTimeLimit),
            MissingPolicy::Exempt => Ok(ReadRequest::Exempt("job has no time limit".into())),
        }
    }

    /// Total resources for one task of the job (one array element).
    fn resources(&self) -> Result<Resources, FieldError> {
        // slurmctld raises the node count to the nodes a job names, after job_submit.
        let min_nodes = present(self.min_nodes).unwrap_or(1).max(self.req_node_count);
        if min_nodes > MAX_NODES {
            return Err(SpecError::TooLarge(format!("{min_nodes} nodes")).into());
        }
        let forms = GpuForms::read(self)?;
        let given_tasks = self.given_tasks(&forms);
        let nodes = self.most_nodes(min_nodes, given_tasks, &forms);
        // slurmctld gives each node at least `--ntasks-per-node` tasks' CPUs.
        let tasks = match (given_tasks, present16(self.ntasks_per_node)) {
            (Some(n), Some(per_node)) => n.max(per_node as u64 * nodes as u64),
            (Some(n), None) => n,
            (None, Some(per_node)) => per_node as u64 * nodes as u64,
            (None, None) => nodes as u64,
        };
        let gpus = self.gpus(&forms, nodes, tasks)?;
        let gpu_count: u64 = gpus.values().map(|&n| n as u64).sum();
        let per_gpu = |spec: &Option<String>| -> Result<u64, FieldError> {
            Ok(match spec.as_deref().filter(|s| !s.trim().is_empty()) {
                Some(s) => parse_gpu_spec(s)?.values().map(|&n| n as u64).max().unwrap_or(0),
                None => 0,
            })
        };
        // select/cons_tres gives each GPU the partition's DefCpuPerGPU CPUs unless the
        // job says --cpus-per-task or --cpus-per-gpu, and its DefMemPerGPU unless the
        // job says --mem-per-gpu or any memory of its own (`_set_gpu_defaults`).
        let defaults = &self.partition_gpu_defaults;
        let cpus_per_gpu = match per_gpu(&self.cpus_per_tres)? {
            0 if present16(self.cpus_per_task).is_none() => defaults.cpus_per_gpu,
            n => n,
        };
        let mem_per_gpu_mb = match per_gpu(&self.mem_per_tres)? {
            0 if matches!(self.pn_min_memory, NO_VAL64) => defaults.mem_per_gpu_mb,
            n => n,
        };
        let gpu_mem_mb = gpu_count.saturating_mul(mem_per_gpu_mb);
        // Without --mem a job's memory follows its GPUs where a memory per GPU applies
        // (cons_tres `gres_select_util_job_mem_set`), else it is the partition's default
        // (`_validate_job_desc`), and no default is all of each node's.
        let pn_min_memory = match self.pn_min_memory {
            NO_VAL64 if gpu_mem_mb > 0 => NO_VAL64,
            NO_VAL64 => self.partition_default_memory,
            m => m,
        };
        // Every node allocated gets at least `--mincpus` CPUs (1 without it).
        let per_cpu = PerCpu {
            cpus_per_task: present16(self.cpus_per_task).unwrap_or(1) as u64,
            per_node_cpus: present16(self.pn_min_cpus).unwrap_or(1) as u64,
            pn_min_memory,
        }
        .capped(self.max_mem_per_cpu, given_tasks.is_some(), self.node_max_mem_mb);
        let PerCpu { cpus_per_task, per_node_cpus, pn_min_memory } = per_cpu;
        let mut cpus = (tasks.saturating_mul(self.task_cpus(cpus_per_task)))
            .max(present(self.min_cpus).unwrap_or(0) as u64)
            .max(per_node_cpus.saturating_mul(nodes as u64))
            .max(gpu_count.saturating_mul(cpus_per_gpu))
            .max(1);
        // select/cons_tres allocates each node's CPUs a core (CR_Core) or a socket
        // (CR_Socket) at a time: `-n 1` on nodes with 2 threads a core gets 2 CPUs, and
        // the run is charged for them. Spread as evenly as SLURM spreads tasks.
        cpus = whole_units(cpus, nodes as u64, self.cpu_alloc_unit.max(1) as u64);
        if self.exclusive && self.node_max_cpus > 0 {
            cpus = cpus.max(self.node_max_cpus as u64 * nodes as u64);
        }
        if cpus > MAX_CPUS as u64 {
            return Err(SpecError::TooLarge(format!("{cpus} cpus")).into());
        }
        let cpus = cpus as u32;
        let mem_mb = match pn_min_memory {
            NO_VAL64 | INFINITE64 => 0,
            // `--mem=0` (or `--mem-per-cpu=0`): all the memory of each node.
            m if m & !MEM_PER_CPU == 0 => self.node_max_mem_mb.saturating_mul(nodes as u64),
            m if m & MEM_PER_CPU != 0 => (m & !MEM_PER_CPU).saturating_mul(cpus as u64),
            m => m.saturating_mul(nodes as u64),
        };
        let mem_mb = mem_mb.max(gpu_mem_mb);
        let res = Resources { nodes, cpus, mem_mb, gpus };
        res.validate()?;
        Ok(res)
    }

    /// The CPUs one task is allocated. Where SLURM allocates whole cores and a task
    /// may use fewer threads of each than it has (`--threads-per-core`,
    /// `--hint=nomultithread`), or must have its cores to itself (`--ntasks-per-core=1`,
    /// `CR_ONE_TASK_PER_CORE`), each task gets whole cores: `-n 2 --ntasks-per-core=1`
    /// on nodes with 2 threads a core is 4 CPUs, not 2 (measured on SLURM 22.05).
    fn task_cpus(&self, cpus_per_task: u64) -> u64 {
        let threads = self.core_threads.max(1) as u64;
        if threads == 1 {
            return cpus_per_task;
        }
        let per_core = present16(self.ntasks_per_core).map(u64::from);
        let usable = present16(self.threads_per_core)
            .map_or(threads, |t| threads.min(t as u64))
            .min(per_core.map_or(threads, |k| k.saturating_mul(cpus_per_task)))
            .max(1);
        if usable < threads || per_core == Some(1) {
            cpus_per_task.div_ceil(usable).saturating_mul(threads)
        } else {
            cpus_per_task
        }
    }

    /// The GPUs of one task of the job (one array element), by type (`""` untyped):
    /// per job, per node, per task and per socket.
    fn gpus(&self, forms: &GpuForms, nodes: u32, tasks: u64) -> Result<BTreeMap<String, u32>, FieldError> {
        // Without --sockets-per-node slurmctld refuses the job after job_submit.
        let sockets = present16(self.sockets_per_node).unwrap_or(1) as u64;
        let counted = [
            (&forms.per_job, 1),
            (&forms.per_node, nodes as u64),
            (&forms.per_task, tasks),
            (&forms.per_socket, sockets.saturating_mul(nodes as u64)),
        ];
        // SLURM makes the forms agree (per job >= per node >= per socket): a job gets
        // the most any of them asks for, not their sum.
        let mut gpus: BTreeMap<String, u32> = BTreeMap::new();
        for (form, mult) in counted {
            for (typ, &n) in form {
                let total = (n as u64).saturating_mul(mult);
                let total = u32::try_from(total).map_err(|_| SpecError::TooLarge(format!("{total} GPUs")))?;
                let slot = gpus.entry(typ.clone()).or_insert(0);
                *slot = (*slot).max(total);
            }
        }
        Ok(gpus)
    }

    /// The tasks the job asks for: `-n`, or, without it, `--ntasks-per-gpu` times its
    /// GPUs, or `--gpus` over `--gpus-per-task` (slurmctld sets that count after
    /// job_submit, `gres_job_state_validate`; sbatch sets it before, other clients
    /// need not).
    fn given_tasks(&self, forms: &GpuForms) -> Option<u64> {
        if let Some(n) = present(self.num_tasks) {
            return Some(n as u64);
        }
        let (per_job, per_task) = (GpuForms::total(&forms.per_job), GpuForms::total(&forms.per_task));
        if let Some(per_gpu) = present16(self.ntasks_per_tres) {
            let nodes = present(self.min_nodes).unwrap_or(1) as u64;
            let sockets = present16(self.sockets_per_node).unwrap_or(1) as u64;
            let gpus = per_job
                .max(GpuForms::total(&forms.per_node).saturating_mul(nodes))
                .max(GpuForms::total(&forms.per_socket).saturating_mul(sockets).saturating_mul(nodes));
            if gpus > 0 {
                return Some(gpus.saturating_mul(per_gpu as u64));
            }
        }
        (per_job > 0 && per_task > 0).then(|| per_job.div_ceil(per_task))
    }

    /// The most nodes SLURM may allocate the job, which is what its per-node requests
    /// (`--mem`, `--gres`, `--exclusive`, `--mincpus`) are priced for: the top of a
    /// `-N` range (SLURM gives as many nodes as it can within it), or, with no node
    /// count, a node per task (per `--ntasks-per-node` tasks) or per GPU of `--gpus`
    /// (per `--gpus-per-node`); never more than its largest partition has, nor fewer
    /// than `min_nodes`.
    fn most_nodes(&self, min_nodes: u32, tasks: Option<u64>, forms: &GpuForms) -> u32 {
        let by_tasks = match (tasks, present16(self.ntasks_per_node)) {
            (Some(tasks), Some(per_node)) => tasks.div_ceil(per_node as u64),
            (Some(tasks), None) => tasks,
            (None, _) => min_nodes as u64,
        };
        // `--gpus=16` may land on 16 nodes, or `--gpus=16 --gpus-per-node=4` on 4.
        let by_gpus = match (GpuForms::total(&forms.per_job), GpuForms::total(&forms.per_node)) {
            (0, _) => 0,
            (per_job, 0) => per_job,
            (per_job, per_node) => per_job.div_ceil(per_node),
        };
        let most = present(self.max_nodes).map_or(by_tasks.max(by_gpus), |max| max as u64);
        let most = match self.partition_nodes {
            0 => most.min(MAX_NODES as u64),
            n => most.min(n as u64),
        };
        (most as u32).max(min_nodes)
    }
}

/// A job's CPUs per task and per node and its memory (raw `pn_min_memory`), as the
/// partition's `MaxMemPerCPU` leaves them.
struct PerCpu {
    cpus_per_task: u64,
    per_node_cpus: u64,
    pn_min_memory: u64,
}

impl PerCpu {
    /// slurmctld's `_valid_pn_min_mem` (when it schedules the job, after job_submit):
    /// memory per CPU above a per-CPU cap multiplies the CPUs per task by the ratio
    /// and divides the memory per CPU by it; memory per node above the cap times the
    /// node's CPUs raises the node's CPUs to it (`--mem=0` is the node's memory).
    /// `max_mem_per_cpu` is raw (MEM_PER_CPU flags a per-CPU cap; a per-node one
    /// changes no CPUs).
    fn capped(self, max_mem_per_cpu: u64, tasks_given: bool, node_mem_mb: u64) -> PerCpu {
        let cap = max_mem_per_cpu & !MEM_PER_CPU;
        if max_mem_per_cpu & MEM_PER_CPU == 0 || cap == 0 {
            return self;
        }
        match self.pn_min_memory {
            NO_VAL64 | INFINITE64 => self,
            m if m & MEM_PER_CPU != 0 => {
                let per_cpu = m & !MEM_PER_CPU;
                if per_cpu <= cap {
                    return self;
                }
                let ratio = per_cpu.div_ceil(cap);
                let cpus_per_task = self.cpus_per_task.saturating_mul(ratio);
                PerCpu {
                    cpus_per_task,
                    // With no task count slurmctld sets the CPUs per node instead.
                    per_node_cpus: if tasks_given { self.per_node_cpus } else { self.per_node_cpus.max(cpus_per_task) },
                    pn_min_memory: per_cpu.div_ceil(ratio) | MEM_PER_CPU,
                }
            }
            m => {
                let node_mb = if m == 0 { node_mem_mb } else { m };
                PerCpu { per_node_cpus: self.per_node_cpus.max(node_mb.div_ceil(cap)), ..self }
            }
        }
    }
}

/// `cpus` over `nodes` nodes (as evenly as they go), each node's share rounded up to
/// whole `unit`s.
fn whole_units(cpus: u64, nodes: u64, unit: u64) -> u64 {
    if unit <= 1 || nodes == 0 {
        return cpus;
    }
    let (each, more) = (cpus / nodes, cpus % nodes);
    let up = |n: u64| n.div_ceil(unit).saturating_mul(unit);
    up(each.saturating_add(1)).saturating_mul(more).saturating_add(up(each).saturating_mul(nodes - more))
}

/// The GPUs a job asks for in each of SLURM's forms, by type (`""` untyped), each
/// `tres_per_*` field parsed once.
struct GpuForms {
    per_job: BTreeMap<String, u32>,
    per_node: BTreeMap<String, u32>,
    per_task: BTreeMap<String, u32>,
    per_socket: BTreeMap<String, u32>,
}

impl GpuForms {
    fn read(f: &SubmitFields) -> Result<GpuForms, FieldError> {
        let parse = |spec: &Option<String>| -> Result<BTreeMap<String, u32>, FieldError> {
            match spec.as_deref().filter(|s| !s.trim().is_empty()) {
                Some(s) => Ok(parse_gpu_spec(s)?),
                None => Ok(BTreeMap::new()),
            }
        };
        Ok(GpuForms {
            per_job: parse(&f.tres_per_job)?,
            per_node: parse(&f.tres_per_node)?,
            per_task: parse(&f.tres_per_task)?,
            per_socket: parse(&f.tres_per_socket)?,
        })
    }

    /// All the GPUs of one form, of every type.
    fn total(form: &BTreeMap<String, u32>) -> u64 {
        form.values().map(|&n| n as u64).sum()
    }
}

/// The partition among `candidates` where `req` would cost the most. A partition
/// asbb has no price for wins, so the decision applies the unpriced-partition policy
/// to it; one that cannot price this job (a GPU type it has no rate for) loses.
fn dearest_partition(config: &Config, req: &JobRequest, candidates: &[&str]) -> String {
    use crate::core::pricing::cost::{estimate, CostError};
    if candidates.len() == 1 {
        return candidates[0].to_string();
    }
    let mut best: Option<(i64, &str)> = None;
    for &name in candidates {
        match estimate(config, &JobRequest { partition: name.to_string(), ..req.clone() }) {
            Err(CostError::UnpricedPartition(_)) => return name.to_string(),
            Ok(cost) if best.map_or(true, |(b, _)| cost.micros() > b) => best = Some((cost.micros(), name)),
            _ => {}
        }
    }
    best.map_or_else(|| req.partition.clone(), |(_, name)| name.to_string())
}

/// Parses `tres_fmt_alloc_str` (`cpu=2,mem=200M,node=1,gres/gpu=2,gres/gpu:a100=2`).
/// Typed GPU counts replace the generic count they are part of.
pub fn parse_alloc_tres(text: &str) -> Result<Resources, SpecError> {
    let bad = || SpecError::BadGres(text.to_string());
    let mut res = Resources::default();
    let mut generic_gpus: Option<u32> = None;
    for item in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (name, value) = item.split_once('=').ok_or_else(bad)?;
        match name {
            "cpu" => res.cpus = value.parse().map_err(|_| bad())?,
            "node" => res.nodes = value.parse().map_err(|_| bad())?,
            "mem" => res.mem_mb = crate::core::pricing::job::parse_mem_mb(value)?,
            "gres/gpu" => generic_gpus = Some(value.parse().map_err(|_| bad())?),
            other => {
                if let Some(typ) = other.strip_prefix("gres/gpu:") {
                    let n: u32 = value.parse().map_err(|_| bad())?;
                    res.gpus.insert(typ.to_string(), n);
                }
            }
        }
    }
    if let Some(total) = generic_gpus {
        let typed: u64 = res.gpus.values().map(|&n| n as u64).sum();
        let untyped = (total as u64).saturating_sub(typed) as u32;
        if untyped > 0 {
            res.gpus.insert(String::new(), untyped);
        }
    }
    res.validate()?;
    Ok(res)
}

impl CompletionFields {
    /// The completion to reconcile. A run that never started has no allocation; one
    /// that started and ended within the same second (`--wrap true`) has one, so it
    /// pays at least the minimum charge (SLURM's clock has one-second steps).
    pub fn to_completion(&self) -> Result<JobCompletion, SpecError> {
        let allocated = match self.tres_alloc.as_deref().filter(|s| !s.trim().is_empty()) {
            Some(t) if self.start_time > 0 && self.end_time >= self.start_time => Some(parse_alloc_tres(t)?),
            Some(_) => None,
            None if self.start_time > 0 && self.end_time > self.start_time && self.total_cpus > 0 => {
                Some(Resources { nodes: self.node_cnt.max(1), cpus: self.total_cpus, mem_mb: 0, gpus: BTreeMap::new() })
            }
            None => None,
        };
        Ok(JobCompletion {
            cluster: self.cluster.clone(),
            job_id: self.job_id,
            hold_token: hold_token(self.admin_comment.as_deref()),
            user: self.user_name.clone().unwrap_or_else(|| self.uid.to_string()),
            account: self.account.clone().unwrap_or_default(),
            partition: self.partition.clone().unwrap_or_default(),
            state: self.state.unwrap_or(EndState::Other),
            start_time: self.start_time,
            end_time: self.end_time,
            allocated,
            task_count: self.task_count.max(1),
            submit_time: self.submit_time,
            run_index: self.restart_cnt,
            qos: self.qos.clone().filter(|q| !q.is_empty()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::text::{with_hold_token, MAX_TEXT_LEN};

    fn config() -> Config {
        Config::parse(
            "[policy]\nexempt_accounts=[\"free\"]\n[partitions.debug.rates]\ncpu=0.02\n[partitions.gpu]\ndefault_time_limit_min=30\n[partitions.gpu.rates]\n\"gres/gpu\"=1\n",
            "t",
        )
        .unwrap()
    }

    fn fields() -> SubmitFields {
        SubmitFields::sbatch(1000, "alice", "chem", "debug", 60)
    }

    fn priced(f: &SubmitFields) -> JobRequest {
        match f.to_request(&config()).unwrap() {
            ReadRequest::Priced(r) => r,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn plain_job() {
        let r = priced(&fields());
        assert_eq!((r.resources.nodes, r.resources.cpus, r.time_limit_min, r.array_tasks), (1, 1, 60, 1));
    }

    #[test]
    fn sizes_and_memory_forms() {
        let mut f = fields();
        f.min_nodes = 2;
        f.ntasks_per_node = 4;
        f.cpus_per_task = 2;
        f.pn_min_memory = MEM_PER_CPU | 1000;
        let r = priced(&f);
        assert_eq!((r.resources.cpus, r.resources.mem_mb), (16, 16000));
        f.pn_min_memory = 4096;
        assert_eq!(priced(&f).resources.mem_mb, 8192);
        f.tres_per_node = Some("gres:gpu:a100:2".into());
        assert_eq!(priced(&f).resources.gpus, BTreeMap::from([("a100".into(), 4)]));
        f.array_inx = Some("1-100%10".into());
        assert_eq!(priced(&f).array_tasks, 100);
    }

    #[test]
    fn time_limits_from_partition_or_refused() {
        let mut f = fields();
        f.time_limit = NO_VAL;
        f.partition_default_time = 45;
        assert_eq!(priced(&f).time_limit_min, 45);
        f.partition_default_time = NO_VAL;
        f.partition_max_time = 120;
        assert_eq!(priced(&f).time_limit_min, 120);
        f.partition_max_time = INFINITE;
        assert_eq!(f.to_request(&config()), Err(FieldError::NoTimeLimit));
        f.partition = Some("gpu".into());
        assert_eq!(priced(&f).time_limit_min, 30);
        f.time_limit = INFINITE;
        assert_eq!(
            f.to_request(&config()).unwrap_err().to_string(),
            "asbb: job has no time limit; submit with --time (e.g. --time=2:00:00) so its cost can be estimated"
        );
    }

    #[test]
    fn accounts() {
        let mut f = fields();
        f.account = None;
        assert_eq!(f.to_request(&config()), Err(FieldError::NoAccount));
        f.account = Some("free".into());
        assert!(matches!(f.to_request(&config()), Ok(ReadRequest::Exempt(_))));
    }

    #[test]
    fn tokens_in_admin_comment() {
        assert_eq!(with_hold_token(None, "12.ab"), "asbb:hold=12.ab");
        assert_eq!(with_hold_token(Some("site note"), "12.ab"), "site note asbb:hold=12.ab");
        assert_eq!(with_hold_token(Some("x asbb:hold=1.a y"), "2.b"), "x asbb:hold=2.b y");
        assert_eq!(hold_token(Some("x asbb:hold=12.ab y")), Some("12.ab".into()));
        assert_eq!(hold_token(Some("nothing")), None);
    }

    #[test]
    fn updates_follow_what_slurm_allows() {
        let record = fields();
        let mut merged = fields();
        merged.time_limit = 600;
        merged.partition = Some("batch".into());
        merged.qos = Some("high".into());
        assert_eq!(effective_update(&record, &merged, Caller::Other, true), None);
        // Pending: the owner may lengthen within MaxTime (INFINITE here) and move it.
        assert_eq!(effective_update(&record, &merged, Caller::Owner, true), Some(merged.clone()));
        merged.partition_max_time = 120;
        let owner = effective_update(&record, &merged, Caller::Owner, true).unwrap();
        assert_eq!((owner.time_limit, owner.partition.as_deref()), (60, Some("batch")));
        // Running: only the time limit moves; the owner only shortens it.
        let running = effective_update(&record, &merged, Caller::Owner, false).unwrap();
        assert_eq!((running.time_limit, running.partition.as_deref(), running.qos), (60, Some("debug"), None));
        let op = effective_update(&record, &merged, Caller::Operator, false).unwrap();
        assert_eq!((op.time_limit, op.partition.as_deref()), (600, Some("debug")));
        merged.time_limit = 30;
        assert_eq!(effective_update(&record, &merged, Caller::Owner, false).unwrap().time_limit, 30);
    }

    #[test]
    fn whole_nodes_and_all_memory_are_priced_as_allocated() {
        let mut f = fields();
        f.min_nodes = 2;
        f.node_max_cpus = 48;
        f.node_max_mem_mb = 192_000;
        f.pn_min_memory = 0;
        assert_eq!(priced(&f).resources.mem_mb, 384_000, "--mem=0 is each node's memory");
        f.pn_min_memory = MEM_PER_CPU;
        assert_eq!(priced(&f).resources.mem_mb, 384_000, "--mem-per-cpu=0 too");
        assert_eq!(priced(&f).resources.cpus, 2);
        f.exclusive = true;
        assert_eq!(priced(&f).resources.cpus, 96, "--exclusive is every CPU of its nodes");
    }

    #[test]
    fn per_node_requests_are_priced_for_the_most_nodes_slurm_may_give() {
        let mut f = fields();
        f.tres_per_node = Some("gres:gpu:2".into());
        f.pn_min_memory = 1000;
        f.partition_nodes = 64;
        // `-N 1-8`: SLURM gives as many nodes as it can within the range.
        (f.min_nodes, f.max_nodes) = (1, 8);
        let r = priced(&f).resources;
        assert_eq!((r.nodes, r.cpus, r.mem_mb, r.gpus[""]), (8, 8, 8000, 16));
        // `-n 12` and no `-N`: a node per task at most.
        (f.min_nodes, f.max_nodes, f.num_tasks) = (NO_VAL, NO_VAL, 12);
        let r = priced(&f).resources;
        assert_eq!((r.nodes, r.cpus, r.mem_mb, r.gpus[""]), (12, 12, 12_000, 24));
        // ... or per `--ntasks-per-node` tasks.
        f.ntasks_per_node = 4;
        assert_eq!(priced(&f).resources.nodes, 3);
        // Never more than the largest partition listed has; never fewer than `-N`.
        (f.ntasks_per_node, f.partition_nodes) = (NO_VAL16, 5);
        assert_eq!(priced(&f).resources.nodes, 5);
        (f.min_nodes, f.max_nodes) = (2, 2);
        assert_eq!(priced(&f).resources.nodes, 2, "`-N 2` is min and max (sbatch sets both)");
        // `--exclusive` over a range: every CPU of the most nodes.
        (f.min_nodes, f.max_nodes, f.num_tasks, f.partition_nodes) = (1, 4, NO_VAL, 0);
        (f.exclusive, f.node_max_cpus) = (true, 48);
        assert_eq!(priced(&f).resources.cpus, 192);
    }

    #[test]
    fn a_record_prices_as_its_submission_did() {
        // slurmctld writes the task count it derives (num_tasks) into the record after
        // job_submit; the record must price as the submission did.
        let mut submitted = fields();
        submitted.partition_nodes = 64;
        // `-N 1-8 --ntasks-per-node=16`: up to 8 nodes of 16 tasks.
        (submitted.min_nodes, submitted.max_nodes, submitted.ntasks_per_node) = (1, 8, 16);
        let mut record = submitted.clone();
        record.num_tasks = 16;
        assert_eq!(priced(&submitted).resources.cpus, 128);
        assert_eq!(priced(&record).resources, priced(&submitted).resources);
        // `--gpus=8 --gpus-per-task=1 --mem=1000`: 8 tasks, on up to 8 nodes.
        let mut submitted = fields();
        submitted.partition_nodes = 64;
        (submitted.tres_per_job, submitted.tres_per_task) = (Some("gres:gpu:8".into()), Some("gres:gpu:1".into()));
        submitted.pn_min_memory = 1000;
        let mut record = submitted.clone();
        record.num_tasks = 8;
        let r = priced(&submitted).resources;
        assert_eq!((r.nodes, r.cpus, r.mem_mb, r.gpus[""]), (8, 8, 8000, 8), "the forms agree: 8 GPUs, not 16");
        assert_eq!(priced(&record).resources, r);
        // `--gpus=8 --gpus-per-node=4`: 2 nodes.
        (submitted.tres_per_task, submitted.tres_per_node) = (None, Some("gres:gpu:4".into()));
        assert_eq!(priced(&submitted).resources.nodes, 2);
        // `--mincpus=4 -N 2`: 4 CPUs on each node.
        let mut f = fields();
        (f.min_nodes, f.max_nodes, f.pn_min_cpus) = (2, 2, 4);
        assert_eq!(priced(&f).resources.cpus, 8);
        // `-w n[1-3]`: at least the 3 nodes named.
        let mut f = fields();
        (f.req_node_count, f.pn_min_memory) = (3, 1000);
        assert_eq!((priced(&f).resources.nodes, priced(&f).resources.mem_mb), (3, 3000));
    }

    #[test]
    fn gpus_per_socket_and_cpus_and_memory_per_gpu() {
        let mut f = fields();
        (f.min_nodes, f.max_nodes) = (2, 2);
        // `--gpus-per-socket=4 --sockets-per-node=2` on 2 nodes.
        (f.tres_per_socket, f.sockets_per_node) = (Some("gres:gpu:4".into()), 2);
        assert_eq!(priced(&f).resources.gpus[""], 16);
        // `--cpus-per-gpu=8 --mem-per-gpu=4096` (24.11 writes `gres/gpu`).
        f.cpus_per_tres = Some("gres/gpu:8".into());
        f.mem_per_tres = Some("gres:gpu:4096".into());
        let r = priced(&f).resources;
        assert_eq!((r.cpus, r.mem_mb), (128, 65_536));
        // Never below what the tasks ask for.
        (f.num_tasks, f.cpus_per_task) = (100, 2);
        assert_eq!(priced(&f).resources.cpus, 200);
    }

    #[test]
    fn a_partitions_gpu_defaults_give_each_gpu_cpus_and_memory_unless_the_job_says() {
        let mut f = fields();
        f.tres_per_job = Some("gres:gpu:4".into());
        f.partition_gpu_defaults = GpuDefaults { cpus_per_gpu: 8, mem_per_gpu_mb: 16_384 };
        let r = priced(&f).resources;
        assert_eq!((r.cpus, r.mem_mb), (32, 65_536), "DefCpuPerGPU=8 DefMemPerGPU=16384, 4 GPUs");
        // --cpus-per-gpu and --mem-per-gpu replace the defaults.
        (f.cpus_per_tres, f.mem_per_tres) = (Some("gres:gpu:2".into()), Some("gres:gpu:1024".into()));
        assert_eq!((priced(&f).resources.cpus, priced(&f).resources.mem_mb), (8, 4096));
        // So do -c (CPUs) and --mem (memory): 4 GPUs may come on 4 nodes, each with a
        // task of 3 CPUs and 2 GB.
        (f.cpus_per_tres, f.mem_per_tres) = (None, None);
        (f.cpus_per_task, f.pn_min_memory) = (3, 2048);
        assert_eq!((priced(&f).resources.cpus, priced(&f).resources.mem_mb), (12, 8192));
        // A job without GPUs brings none of it.
        let mut f = fields();
        f.partition_gpu_defaults = GpuDefaults { cpus_per_gpu: 8, mem_per_gpu_mb: 16_384 };
        assert_eq!((priced(&f).resources.cpus, priced(&f).resources.mem_mb), (1, 0));
    }

    #[test]
    fn a_job_without_memory_gets_the_partitions_default_or_all_of_each_node() {
        let mut f = fields();
        (f.min_nodes, f.max_nodes, f.num_tasks, f.node_max_mem_mb) = (2, 2, 4, 64_000);
        // DefMemPerCPU=512 over 4 CPUs; DefMemPerNode=1000 over 2 nodes; none: all of it.
        f.partition_default_memory = MEM_PER_CPU | 512;
        assert_eq!(priced(&f).resources.mem_mb, 2048);
        f.partition_default_memory = 1000;
        assert_eq!(priced(&f).resources.mem_mb, 2000);
        f.partition_default_memory = 0;
        assert_eq!(priced(&f).resources.mem_mb, 128_000);
        // --mem of its own wins; so does memory that follows its GPUs.
        f.pn_min_memory = 100;
        assert_eq!(priced(&f).resources.mem_mb, 200);
        f.pn_min_memory = NO_VAL64;
        (f.tres_per_node, f.mem_per_tres) = (Some("gres:gpu:1".into()), Some("gres:gpu:4096".into()));
        assert_eq!(priced(&f).resources.mem_mb, 8192);
    }

    #[test]
    fn tasks_per_gpu_give_the_task_count_a_client_left_out() {
        let mut f = fields();
        (f.tres_per_job, f.ntasks_per_tres) = (Some("gres:gpu:4".into()), 2);
        (f.min_nodes, f.max_nodes) = (1, 1);
        assert_eq!(priced(&f).resources.cpus, 8, "4 GPUs, 2 tasks each");
        (f.tres_per_job, f.tres_per_node, f.min_nodes, f.max_nodes) = (None, Some("gres:gpu:2".into()), 2, 2);
        assert_eq!(priced(&f).resources.cpus, 8, "2 GPUs on each of 2 nodes");
        f.num_tasks = 3;
        assert_eq!(priced(&f).resources.cpus, 3, "-n says");
    }

    #[test]
    fn a_memory_cap_per_cpu_gives_the_job_more_cpus() {
        let shape = |f: &SubmitFields| {
            let r = priced(f).resources;
            (r.cpus, r.mem_mb)
        };
        let mut f = fields();
        (f.min_nodes, f.max_nodes, f.max_mem_per_cpu) = (1, 1, MEM_PER_CPU | 256);
        f.pn_min_memory = MEM_PER_CPU | 1024;
        assert_eq!(shape(&f), (4, 1024), "4 CPUs of 256 MB");
        (f.num_tasks, f.cpus_per_task, f.pn_min_memory) = (2, 2, MEM_PER_CPU | 600);
        assert_eq!(shape(&f), (12, 2400), "3 times the CPUs per task, 200 MB each");
        (f.num_tasks, f.cpus_per_task, f.pn_min_memory) = (NO_VAL, NO_VAL16, 512);
        assert_eq!(shape(&f), (2, 512), "512 MB a node needs 2 CPUs");
        (f.pn_min_memory, f.node_max_mem_mb) = (0, 1000);
        assert_eq!(shape(&f), (4, 1000), "--mem=0: the node's memory");
        (f.pn_min_memory, f.partition_default_memory) = (NO_VAL64, MEM_PER_CPU | 1024);
        assert_eq!(shape(&f), (4, 1024), "a default above the cap");
        // Under the cap, or a cap per node: nothing changes.
        f.pn_min_memory = MEM_PER_CPU | 256;
        assert_eq!(shape(&f), (1, 256));
        (f.pn_min_memory, f.max_mem_per_cpu) = (MEM_PER_CPU | 1024, 256);
        assert_eq!(shape(&f), (1, 1024));
    }

    #[test]
    fn tasks_that_keep_their_cores_to_themselves_are_priced_whole_cores() {
        let cpus = |f: &SubmitFields| priced(f).resources.cpus;
        let mut f = fields();
        (f.min_nodes, f.max_nodes, f.core_threads, f.cpu_alloc_unit) = (1, 1, 2, 2);
        // What SLURM 22.05 gave each shape on nodes of 2 threads a core (NumCPUs).
        let shapes: [(u32, u16, u16, u16, u32); 7] = [
            // tasks, cpus per task, ntasks per core, threads per core, CPUs
            (2, NO_VAL16, NO_VAL16, NO_VAL16, 2),
            (3, NO_VAL16, NO_VAL16, NO_VAL16, 4),
            (2, NO_VAL16, 1, NO_VAL16, 4),
            (2, NO_VAL16, NO_VAL16, 1, 4),
            (2, 3, 1, NO_VAL16, 8),
            (1, 2, 1, 1, 4),
            (3, NO_VAL16, 1, NO_VAL16, 6),
        ];
        for (tasks, per_task, per_core, threads, want) in shapes {
            (f.num_tasks, f.cpus_per_task, f.ntasks_per_core, f.threads_per_core) =
                (tasks, per_task, per_core, threads);
            assert_eq!(
                cpus(&f),
                want,
                "-n {tasks} -c {per_task} --ntasks-per-core={per_core} --threads-per-core={threads}"
            );
        }
        // Nodes of one thread a core: nothing to round.
        (f.core_threads, f.cpu_alloc_unit) = (1, 1);
        assert_eq!(cpus(&f), 3);
    }

    #[test]
    fn cpus_are_priced_in_the_cores_or_sockets_slurm_allocates_them_by() {
        let cpus = |f: &SubmitFields| priced(f).resources.cpus;
        let mut f = fields();
        // CR_Core on nodes with 2 threads a core: a core at a time.
        f.cpu_alloc_unit = 2;
        assert_eq!(cpus(&f), 2, "-n 1 gets a whole core");
        (f.num_tasks, f.min_nodes, f.max_nodes) = (3, 1, 1);
        assert_eq!(cpus(&f), 4, "3 tasks on a node: 2 cores");
        // 3 tasks on 2 nodes: 2 + 1 CPUs, each node a whole core: 2 + 2.
        (f.min_nodes, f.max_nodes) = (2, 2);
        assert_eq!(cpus(&f), 4);
        // 5 tasks of 3 CPUs on 2 nodes: 8 + 7 CPUs, rounded per node: 8 + 8.
        (f.num_tasks, f.cpus_per_task) = (5, 3);
        assert_eq!(cpus(&f), 16);
        // CR_Socket, 8 CPUs a socket; memory per CPU follows the CPUs allocated.
        (f.min_nodes, f.max_nodes, f.num_tasks, f.cpus_per_task, f.cpu_alloc_unit) = (1, 1, 1, 1, 8);
        f.pn_min_memory = MEM_PER_CPU | 100;
        assert_eq!((cpus(&f), priced(&f).resources.mem_mb), (8, 800));
        // CR_CPU (or unknown): CPU by CPU.
        for unit in [0, 1] {
            f.cpu_alloc_unit = unit;
            assert_eq!(cpus(&f), 1);
        }
        assert_eq!(whole_units(7, 3, 4), 12, "3 + 2 + 2 CPUs, a unit of 4 each");
        assert_eq!(whole_units(u64::MAX, 1, 4), u64::MAX, "saturates");
    }

    #[test]
    fn account_case_partitions_qos_and_associations() {
        let mut f = fields();
        f.account = Some("CHEM".into());
        f.default_qos = Some("high".into());
        let r = priced(&f);
        assert_eq!((r.account.as_str(), r.qos.as_deref()), ("chem", Some("high")));
        f.qos = Some("normal".into());
        assert_eq!(priced(&f).qos.as_deref(), Some("normal"));
        f.partition = Some("debug,gpu".into());
        f.tres_per_node = Some("gres:gpu:1".into());
        assert_eq!(priced(&f).partition, "gpu", "the dearer of the two");
        f.association_missing = true;
        assert_eq!(f.to_request(&config()), Err(FieldError::NoAssociation("chem".into())));
    }

    #[test]
    fn alloc_tres() {
        let r = parse_alloc_tres("cpu=2,mem=200M,node=1,billing=2,gres/gpu=3,gres/gpu:a100=2").unwrap();
        assert_eq!((r.cpus, r.mem_mb, r.nodes), (2, 200, 1));
        assert_eq!(r.gpus, BTreeMap::from([("".into(), 1), ("a100".into(), 2)]));
        assert!(parse_alloc_tres("cpu=x").is_err());
    }

    #[test]
    fn names_with_controls_are_refused_and_logs_escape_them() {
        let mut f = fields();
        f.account = Some("chem\nasbb: accepted".into());
        assert_eq!(f.to_request(&config()), Err(FieldError::BadName("account")));
        f.account = Some("chem".into());
        f.partition = Some("debug,\x1b[31mred".into());
        assert_eq!(f.to_request(&config()), Err(FieldError::BadName("partition")));
        assert_eq!(log_line("a\nb\x1b[31m"), "a\\x0ab\\x1b[31m");
        assert!(log_line(&"x".repeat(10_000)).chars().count() <= MAX_LOG_LINE + 1);
    }

    #[test]
    fn clean_text_strips_controls() {
        assert_eq!(clean_text("a\nb\x1b[31m"), "ab[31m");
        assert_eq!(clean_text(&"x".repeat(300)).chars().count(), MAX_TEXT_LEN + 1);
    }
}
