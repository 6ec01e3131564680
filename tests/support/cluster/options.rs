// SPDX-License-Identifier: GPL-2.0-or-later
//! What a test cluster is made of: `ClusterOptions`.
#![allow(unused_imports)]

use super::*;
use std::collections::HashMap;
use std::fmt::Write as _;
use std::fs;
use std::io::Read;
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

// ----- Options

/// What kind of cluster to start. Build with [`ClusterOptions::new`] and the chained
/// setters, or fill the public fields.
#[derive(Clone, Debug)]
pub struct ClusterOptions {
    /// `ClusterName` (lower case letters, digits, `_`; made lower case).
    pub name: String,
    /// `(SlurmctldPort, SlurmdPort)`; `None` picks a free pair (recommended).
    pub ports: Option<(u16, u16)>,
    /// Directory appended to Debian's `PluginDir` (where `job_submit_asbb.so` etc. are);
    /// `None` = no asbb plugins.
    pub plugin_dir: Option<PathBuf>,
    /// Extra slurm.conf lines, e.g. `JobSubmitPlugins=asbb`, `JobCompType=jobcomp/asbb`.
    /// A line whose key is already in the base config replaces that line.
    pub extra_conf: Vec<String>,
    /// Extra partitions: a bare name (`"aws"` → `PartitionName=aws Nodes=<node>
    /// MaxTime=INFINITE State=UP`) or a full `PartitionName=...` line (`{node}` is the
    /// cluster's node).
    pub extra_partitions: Vec<String>,
    /// Environment for slurmctld (e.g. `ASBB_CONFIG`, `ASBB_LEDGER`).
    pub ctld_env: Vec<(String, String)>,
    /// Environment for slurmd.
    pub slurmd_env: Vec<(String, String)>,
    /// Files written beside slurm.conf: (file name, contents), e.g. `("asbb.toml", ...)`.
    pub files: Vec<(String, String)>,
    /// How long to wait for the node to become idle.
    pub start_timeout: Duration,
    /// `Some(commands)`: run slurmdbd (on a MariaDB of the cluster's own) with
    /// `AccountingStorageEnforce=associations`; the cluster is registered and each
    /// command is run as `sacctmgr -i <command>` before slurmctld starts, e.g.
    /// `"add account chem"`, `"add user alice account=chem defaultaccount=chem"`.
    pub accounting: Option<Vec<String>>,
    /// The node's layout in place of `slurmd -C`'s, e.g. `CPUs=4 CoresPerSocket=2
    /// ThreadsPerCore=2` (keys not given stay as the host has them); slurmd is told to
    /// take slurm.conf's word for it (`SlurmdParameters=config_overrides`).
    pub node_layout: Option<String>,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        ClusterOptions {
            name: "asbbtest".to_string(),
            ports: None,
            plugin_dir: None,
            extra_conf: Vec::new(),
            extra_partitions: Vec::new(),
            ctld_env: Vec::new(),
            slurmd_env: Vec::new(),
            files: Vec::new(),
            start_timeout: Duration::from_secs(20),
            accounting: None,
            node_layout: None,
        }
    }
}

impl ClusterOptions {
    pub fn new(name: &str) -> Self {
        ClusterOptions { name: name.to_string(), ..Default::default() }
    }
    pub fn ports(mut self, ctld: u16, slurmd: u16) -> Self {
        self.ports = Some((ctld, slurmd));
        self
    }
    pub fn plugin_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.plugin_dir = Some(dir.into());
        self
    }
    pub fn conf(mut self, line: &str) -> Self {
        self.extra_conf.push(line.to_string());
        self
    }
    pub fn node_layout(mut self, layout: &str) -> Self {
        self.node_layout = Some(layout.to_string());
        self
    }
    pub fn partition(mut self, name_or_line: &str) -> Self {
        self.extra_partitions.push(name_or_line.to_string());
        self
    }
    pub fn ctld_env(mut self, key: &str, value: &str) -> Self {
        self.ctld_env.push((key.to_string(), value.to_string()));
        self
    }
    pub fn slurmd_env(mut self, key: &str, value: &str) -> Self {
        self.slurmd_env.push((key.to_string(), value.to_string()));
        self
    }
    pub fn file(mut self, name: &str, contents: &str) -> Self {
        self.files.push((name.to_string(), contents.to_string()));
        self
    }
    pub fn start_timeout(mut self, t: Duration) -> Self {
        self.start_timeout = t;
        self
    }
    /// Accounting through slurmdbd, set up with these `sacctmgr -i` commands.
    pub fn accounting(mut self, sacctmgr_commands: &[&str]) -> Self {
        self.accounting = Some(sacctmgr_commands.iter().map(|c| c.to_string()).collect());
        self
    }
}
