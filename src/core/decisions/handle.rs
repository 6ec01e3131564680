// SPDX-License-Identifier: GPL-2.0-or-later
//! One ledger handle for the long-running callers: the plugins inside slurmctld and
//! the API server. It opens the ledger on first use, and one policy decides when to
//! open it again:
//! - after a ledger error, so a repaired or replaced ledger is picked up by the next
//!   call; a busy ledger (another writer past the bounded wait) keeps its connection;
//! - when the file at the ledger path is no longer the one the connection has open (a
//!   ledger restored from backup or moved away must not be written through the old
//!   file): one `stat` per call notices.

use super::{Budget, BudgetError};
use crate::core::config::Config;
use crate::core::ledger::{Checkpointer, Ledger, OpenMode};
use std::path::Path;

pub struct BudgetHandle {
    config: Config,
    budget: Option<Budget>,
    /// Device and inode of the ledger file the open connection uses.
    identity: Option<(u64, u64)>,
    busy_timeout_ms: u32,
    /// Checkpoints on a thread of their own, never inside a call (the plugins).
    background_checkpoints: bool,
    checkpointer: Option<Checkpointer>,
    /// The cluster whose jobs the budget prices (see [`Budget::set_cluster`]).
    cluster: Option<String>,
}

fn identity_of(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

impl BudgetHandle {
    /// `busy_timeout_ms` bounds each wait for another writer.
    pub fn new(config: Config, busy_timeout_ms: u32, background_checkpoints: bool) -> BudgetHandle {
        BudgetHandle {
            config,
            budget: None,
            identity: None,
            busy_timeout_ms,
            background_checkpoints,
            checkpointer: None,
            cluster: None,
        }
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Replaces the config (reconfigure); the ledger is opened again on next use.
    pub fn set_config(&mut self, config: Config, busy_timeout_ms: u32) {
        self.config = config;
        self.busy_timeout_ms = busy_timeout_ms;
        self.budget = None;
        self.checkpointer = None;
    }

    /// Names the SLURM cluster whose jobs are priced: each job row written names it.
    pub fn set_cluster(&mut self, cluster: &str) {
        if self.cluster.as_deref() != Some(cluster) {
            self.cluster = Some(cluster.to_string());
        }
        if let Some(budget) = &mut self.budget {
            budget.set_cluster(cluster);
        }
    }

    /// True when a connection is open (one a call opened and used).
    pub fn is_open(&self) -> bool {
        self.budget.is_some()
    }

    /// The budget over the ledger, opened (again) when needed.
    pub fn get(&mut self) -> Result<&mut Budget, BudgetError> {
        if self.budget.is_some() && identity_of(&self.config.ledger_path) != self.identity {
            // The checkpointer's connection is on the old file too.
            self.budget = None;
            self.checkpointer = None;
        }
        if self.budget.is_none() {
            let path = &self.config.ledger_path;
            let mut ledger = Ledger::open(path, OpenMode::MustExist, self.busy_timeout_ms)?;
            // A PostgreSQL server keeps its own log; only SQLite's WAL needs a checkpointer.
            if self.background_checkpoints && !crate::core::ledger::is_postgres_url(path) {
                ledger = ledger.without_autocheckpoint()?;
                if self.checkpointer.is_none() {
                    self.checkpointer = Some(Checkpointer::start(path));
                }
            }
            let mut budget = Budget::with_ledger(self.config.clone(), ledger);
            if let Some(cluster) = &self.cluster {
                budget.set_cluster(cluster);
            }
            self.budget = Some(budget);
            self.identity = identity_of(path);
        }
        Ok(self.budget.as_mut().expect("just opened"))
    }

    /// Whether `err` should close the connection: a ledger fault, but not "busy".
    pub fn should_reopen(err: &BudgetError) -> bool {
        err.is_ledger() && !matches!(err, BudgetError::Ledger(l) if l.is_busy())
    }

    /// Closes the connection after `err` when [`Self::should_reopen`] says so.
    pub fn forget_on(&mut self, err: &BudgetError) {
        if Self::should_reopen(err) {
            self.forget();
        }
    }

    pub fn forget(&mut self) {
        self.budget = None;
    }
}
