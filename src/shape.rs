// SPDX-License-Identifier: GPL-2.0-or-later
//! A job's shape as people give it, in sbatch's terms: flags on the command lines
//! (`asbb-admin estimate`, `asbb quick-check`) or the same fields in the API's JSON.
//! One conversion to the request the plugin would build, for both.

use crate::core::pricing::job::{
    parse_array_task_count, parse_gpu_spec, parse_mem_mb, parse_time_limit_min, JobRequest, Resources,
};
use clap::Args;
use std::collections::BTreeMap;

/// Why a shape is not a job (one line, for a person).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ShapeError(pub String);

impl ShapeError {
    fn new(message: impl Into<String>) -> ShapeError {
        ShapeError(message.into())
    }
}

/// A job's shape, shared by `asbb-admin estimate` and `asbb quick-check`.
#[derive(Args, Debug, Clone)]
pub struct RequestArgs {
    #[arg(long, short = 'p', env = "ASBB_DEFAULT_PARTITION")]
    pub partition: Option<String>,
    #[arg(long, short = 'N', default_value_t = 1)]
    pub nodes: u32,
    /// CPUs on each node.
    #[arg(long)]
    pub cpus_per_node: Option<u32>,
    /// CPUs in total (instead of --cpus-per-node).
    #[arg(long, conflicts_with = "cpus_per_node")]
    pub cpus: Option<u32>,
    /// Memory per node: 4000 (MB), 4G, 512M.
    #[arg(long)]
    pub mem: Option<String>,
    /// Memory per CPU (instead of --mem).
    #[arg(long, conflicts_with = "mem")]
    pub mem_per_cpu: Option<String>,
    /// GPUs per node, untyped.
    #[arg(long)]
    pub gpus: Option<u32>,
    /// GRES per node, e.g. gpu:a100:2.
    #[arg(long, conflicts_with = "gpus")]
    pub gres: Option<String>,
    /// Time limit: MM, HH:MM:SS, D-HH:MM, 2h, 90m, 1d.
    #[arg(long, short = 't')]
    pub time: String,
    #[arg(long, default_value_t = 1)]
    pub array_tasks: u32,
    #[arg(long)]
    pub qos: Option<String>,
    /// Memory for the whole job in MB (the API's `mem_mb`; no flag).
    #[arg(skip)]
    pub mem_mb: Option<u64>,
}

/// Fields of which a shape may give one, not both (clap refuses them on the command
/// line first; the API's JSON has only this check).
fn conflict(args: &RequestArgs) -> Option<&'static str> {
    let pairs = [
        (args.cpus.is_some() && args.cpus_per_node.is_some(), "give cpus or cpus_per_node, not both"),
        (args.mem.is_some() && args.mem_per_cpu.is_some(), "give mem or mem_per_cpu, not both"),
        (args.gpus.is_some() && args.gres.is_some(), "give gpus or gres, not both"),
        (
            args.mem_mb.is_some() && (args.mem.is_some() || args.mem_per_cpu.is_some()),
            "give one of mem, mem_per_cpu or mem_mb",
        ),
    ];
    pairs.into_iter().find_map(|(clash, why)| clash.then_some(why))
}

impl RequestArgs {
    /// Builds the request the plugin would build for the same sbatch flags.
    pub fn to_request(&self, account: &str, user: &str, uid: u32) -> Result<JobRequest, ShapeError> {
        if let Some(why) = conflict(self) {
            return Err(ShapeError::new(why));
        }
        let partition = self
            .partition
            .clone()
            .ok_or_else(|| ShapeError::new("no partition: give --partition or set ASBB_DEFAULT_PARTITION"))?;
        if self.nodes == 0 {
            return Err(ShapeError::new("--nodes must be at least 1"));
        }
        let cpus = match (self.cpus, self.cpus_per_node) {
            (Some(c), _) => c as u64,
            (None, Some(c)) => c as u64 * self.nodes as u64,
            (None, None) => self.nodes as u64,
        };
        let mem_mb = match (&self.mem, &self.mem_per_cpu) {
            (Some(m), _) => parse_mem_mb(m).map_err(|e| ShapeError::new(e.to_string()))? * self.nodes as u64,
            (None, Some(m)) => parse_mem_mb(m).map_err(|e| ShapeError::new(e.to_string()))? * cpus,
            (None, None) => self.mem_mb.unwrap_or(0),
        };
        let mut gpus = match (&self.gres, self.gpus) {
            (Some(g), _) => parse_gpu_spec(g).map_err(|e| ShapeError::new(e.to_string()))?,
            (None, Some(n)) if n > 0 => BTreeMap::from([(String::new(), n)]),
            _ => BTreeMap::new(),
        };
        for n in gpus.values_mut() {
            *n = n.checked_mul(self.nodes).ok_or_else(|| ShapeError::new("too many GPUs"))?;
        }
        let resources = Resources {
            nodes: self.nodes,
            cpus: u32::try_from(cpus).map_err(|_| ShapeError::new("too many CPUs"))?,
            mem_mb,
            gpus,
        };
        resources.validate().map_err(|e| ShapeError::new(e.to_string()))?;
        let time_limit_min = parse_time_limit_min(&self.time).map_err(|e| ShapeError::new(e.to_string()))?;
        if self.array_tasks == 0 {
            return Err(ShapeError::new("--array-tasks must be at least 1"));
        }
        // Bounds-check the array size with the same rule as sbatch --array.
        parse_array_task_count(&format!("1-{}", self.array_tasks)).map_err(|e| ShapeError::new(e.to_string()))?;
        Ok(JobRequest {
            user: user.to_string(),
            uid,
            account: account.to_string(),
            partition,
            resources,
            time_limit_min,
            array_tasks: self.array_tasks,
            qos: self.qos.clone(),
            job_id: None,
            job_name: None,
        })
    }
}
