// SPDX-License-Identifier: GPL-2.0-or-later
//! One ledger handle for the long-running callers: the plugins inside slurmctld and
//! the API server. It opens the ledger on first use, and one policy decides when to
//! open it again:
//! - after a ledger error, so a repaired or replaced ledger is picked up by the next
//!   call; a busy ledger (another writer past the bounded wait) keeps its connection;
//! - when the file at the ledger path is no longer the one the connection has open (a
//!   ledger restored from backup or moved away must not be written through the old
//!   file): one `stat` per call notices.
//!
//! A PostgreSQL ledger whose server is gone (no answer within the bound, a broken or
//! refused connection) is connected again on a thread of its own ([`Reconnector`]),
//! never on a caller's: a server that is down, frozen or unreachable would otherwise
//! cost every submission a connect attempt of up to the bound, under slurmctld's
//! locks. Until it has connected, calls fail at once as the ledger unavailable (and
//! `on_ledger_error` decides). After any other ledger error the next call connects.

use super::{Budget, BudgetError};
use crate::core::config::Config;
use crate::core::ledger::{Checkpointer, Ledger, LedgerError, OpenMode};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::Duration;

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
    /// A PostgreSQL connection was lost, or could not be made: the next one is opened
    /// in the background.
    lost: bool,
    reconnector: Option<Reconnector>,
    /// Reconnectors of a config replaced meanwhile, told to stop: joined once finished,
    /// or when the handle drops (never on a call, which would wait for their try).
    retired: Vec<Reconnector>,
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
            lost: false,
            reconnector: None,
            retired: Vec::new(),
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
        self.lost = false;
        self.retired.retain(|r| !r.finished());
        if let Some(mut reconnector) = self.reconnector.take() {
            reconnector.stop();
            self.retired.push(reconnector);
        }
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
            let mut ledger = if self.lost {
                self.reconnected()?
            } else {
                let opened = Ledger::open(&self.config.ledger_path, OpenMode::MustExist, self.busy_timeout_ms);
                if matches!(&opened, Err(e) if e.is_connection_lost()) {
                    self.lost = true;
                }
                opened?
            };
            let path = &self.config.ledger_path;
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

    /// Closes the connection after `err` when [`Self::should_reopen`] says so; one
    /// whose server is gone is opened again in the background.
    pub fn forget_on(&mut self, err: &BudgetError) {
        if Self::should_reopen(err) {
            self.forget();
            if matches!(err, BudgetError::Ledger(e) if e.is_connection_lost()) {
                self.lost = true;
            }
        }
    }

    /// Closes the connection; the next call opens it again.
    pub fn forget(&mut self) {
        self.budget = None;
    }

    /// The connection the [`Reconnector`] has opened since the last one was lost
    /// (started now if it is not running); until then, an error at once.
    fn reconnected(&mut self) -> Result<Ledger, BudgetError> {
        let path = &self.config.ledger_path;
        let reconnector =
            self.reconnector.get_or_insert_with(|| Reconnector::start(path.clone(), self.busy_timeout_ms));
        // No thread could be started: connect on the call, as before the loss.
        let opened = if reconnector.thread.is_none() {
            Some(Ledger::open(path, OpenMode::MustExist, self.busy_timeout_ms)?)
        } else {
            reconnector.take()
        };
        if let Some(ledger) = opened {
            self.reconnector = None;
            self.lost = false;
            return Ok(ledger);
        }
        let last = reconnector.last_error();
        Err(BudgetError::Ledger(LedgerError::Io {
            path: crate::core::ledger::shown_location(path),
            reason: match last {
                Some(e) => format!("the connection was lost; connecting again in the background (last try: {e})"),
                None => "the connection was lost; connecting again in the background".into(),
            },
        }))
    }
}

/// Waits before the first try, and at most between two.
const RECONNECT_FIRST_WAIT: Duration = Duration::from_millis(50);
const RECONNECT_MAX_WAIT: Duration = Duration::from_secs(1);

/// Opens a ledger on a thread of its own, trying again (waits doubling from
/// [`RECONNECT_FIRST_WAIT`] to [`RECONNECT_MAX_WAIT`]) until it opens. Dropping it stops
/// and joins the thread (a plugin's code must not run after `fini`): at most one open
/// attempt's bound later.
struct Reconnector {
    opened: mpsc::Receiver<Ledger>,
    last_error: Arc<Mutex<Option<String>>>,
    stop: Option<mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Reconnector {
    fn start(path: PathBuf, busy_timeout_ms: u32) -> Reconnector {
        let (sender, opened) = mpsc::channel();
        let (stop, stopped) = mpsc::channel::<()>();
        let last_error = Arc::new(Mutex::new(None));
        let last = Arc::clone(&last_error);
        let thread = std::thread::Builder::new()
            .name("asbb-reconnect".into())
            .spawn(move || {
                let mut wait = RECONNECT_FIRST_WAIT;
                while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(wait) {
                    match Ledger::open(&path, OpenMode::MustExist, busy_timeout_ms) {
                        Ok(ledger) => {
                            let _ = sender.send(ledger);
                            return;
                        }
                        Err(e) => *last.lock().unwrap_or_else(|p| p.into_inner()) = Some(e.to_string()),
                    }
                    wait = (wait * 2).min(RECONNECT_MAX_WAIT);
                }
            })
            .ok();
        Reconnector { opened, last_error, stop: Some(stop), thread }
    }

    /// Tells the thread to stop after its try under way.
    fn stop(&mut self) {
        drop(self.stop.take());
    }

    /// The thread has ended (or never started).
    fn finished(&self) -> bool {
        self.thread.as_ref().map_or(true, |t| t.is_finished())
    }

    /// The ledger, once opened.
    fn take(&mut self) -> Option<Ledger> {
        self.opened.try_recv().ok()
    }

    fn last_error(&self) -> Option<String> {
        self.last_error.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

impl Drop for Reconnector {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
