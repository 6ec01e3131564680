// SPDX-License-Identifier: GPL-2.0-or-later
//! Shared pieces of the two command lines: output formats, tables, errors, and opening
//! config and ledger from flags and environment (the clock and the user database are
//! `crate::system`, shared with the API).

pub mod admin;
#[cfg(feature = "api")]
pub mod alerts;
pub mod grant;
pub mod integration;
pub mod jobs;
pub mod reconcile;
pub mod user;

use crate::core::config::{Config, DEFAULT_CONFIG_PATH};
use crate::core::decisions::{Budget, BudgetError};
use crate::core::ledger::{Ledger, OpenMode};
use crate::core::safe_fs;
use std::path::{Path, PathBuf};

/// An error a command reports: one line on stderr and an exit code.
#[derive(Debug)]
pub struct CliError {
    pub message: String,
    pub exit_code: i32,
}

impl CliError {
    pub fn new(message: impl Into<String>) -> CliError {
        CliError { message: message.into(), exit_code: 2 }
    }
}

impl From<BudgetError> for CliError {
    fn from(e: BudgetError) -> CliError {
        CliError::new(e.to_string())
    }
}

impl From<crate::core::ledger::LedgerError> for CliError {
    fn from(e: crate::core::ledger::LedgerError) -> CliError {
        CliError::new(e.to_string())
    }
}

impl From<crate::shape::ShapeError> for CliError {
    fn from(e: crate::shape::ShapeError) -> CliError {
        CliError::new(e.0)
    }
}

impl From<crate::core::config::ConfigError> for CliError {
    fn from(e: crate::core::config::ConfigError) -> CliError {
        CliError::new(e.to_string())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Default)]
pub enum Format {
    #[default]
    Text,
    Json,
    Csv,
}

/// The time commands act at (see [`crate::system::now`]).
pub fn now() -> Result<i64, CliError> {
    crate::system::now().map_err(CliError::new)
}

/// Loads the config named by `--config`/`ASBB_CONFIG` (or the default path).
pub fn load_config(config: Option<&Path>, ledger: Option<&Path>) -> Result<Config, CliError> {
    let path = config.map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG_PATH));
    let mut cfg = Config::load(&path)?;
    if let Some(l) = ledger {
        cfg.ledger_path = l.to_path_buf();
    }
    Ok(cfg)
}

pub fn open_budget(config: Config, mode: OpenMode) -> Result<Budget, CliError> {
    let is_file = !crate::core::ledger::is_postgres_url(&config.ledger_path);
    if mode == OpenMode::CreateIfMissing && is_file && !safe_fs::exists(&config.ledger_path) && current_uid() == 0 {
        create_for_slurm_user(&config.ledger_path)?;
    }
    let ledger = Ledger::open(&config.ledger_path, mode, config.policy.ledger_busy_timeout_ms.max(1000))?;
    Ok(Budget::with_ledger(config, ledger))
}

/// Run as root, a new ledger would belong to root and slurmctld's plugins (running as
/// SlurmUser) could not open it. So the empty file (mode 0600) and any folder made
/// for it are given to SlurmUser from slurm.conf (`$SLURM_CONF`, else
/// /etc/slurm/slurm.conf) before SQLite opens it, through their descriptors; SQLite
/// then gives its -wal and -shm files the same owner. Nothing to do when SlurmUser is
/// root or slurm.conf is absent.
fn create_for_slurm_user(path: &Path) -> Result<(), CliError> {
    let Some((user, uid, gid)) = safe_fs::slurm_user().map_err(CliError::new)? else {
        return Ok(());
    };
    if uid == 0 {
        return Ok(());
    }
    safe_fs::create_ledger(path, Some((uid, gid)))
        .map_err(|reason| CliError::from(crate::core::ledger::LedgerError::Io { path: path.to_path_buf(), reason }))?;
    eprintln!("asbb-admin: created the ledger {} for SlurmUser {user} (mode 0600)", path.display());
    Ok(())
}

/// The value of `key` in slurm.conf text (keys are case-insensitive; `#` starts a comment).
pub use crate::core::safe_fs::slurm_conf_value;

/// Exit code of a caller who may not run `asbb-admin` (sysexits' EX_NOPERM).
pub const EXIT_NOT_ADMIN: i32 = 77;

/// `asbb-admin` is for root, the ledger file's owner (SlurmUser; while there is no
/// ledger yet, the owner of the folder it goes in) and `[[api.peers]]` given role
/// admin. Anyone else is refused before the ledger is opened, whatever its mode.
pub fn require_admin(config: &Config) -> Result<(), CliError> {
    use std::os::unix::fs::MetadataExt;
    let uid = current_uid();
    // PostgreSQL: whoever owns the password file (SlurmUser); it connects anyway.
    let owner = if crate::core::ledger::is_postgres_url(&config.ledger_path) {
        crate::core::ledger::ledger_owner(&config.ledger_path)
    } else {
        config
            .ledger_path
            .ancestors()
            .find_map(|p| std::fs::metadata(if p.as_os_str().is_empty() { Path::new(".") } else { p }).ok())
            .map(|m| m.uid())
    };
    let name = user_name(uid);
    if config.api.local_role(uid, name.as_deref(), owner) == crate::core::config::ApiRole::Admin {
        return Ok(());
    }
    let who = name.unwrap_or_else(|| format!("uid {uid}"));
    let owner_name = owner.map(|o| user_name(o).unwrap_or_else(|| format!("uid {o}"))).unwrap_or_else(|| "?".into());
    Err(CliError {
        message: format!(
            "{who} is not an asbb admin (root, the ledger's owner {owner_name}, or [[api.peers]] with role \"admin\"); \
             users see their own accounts with `asbb status`"
        ),
        exit_code: EXIT_NOT_ADMIN,
    })
}

/// Who runs the command, for the audit log: the sudo caller if any, else the user.
pub fn actor() -> String {
    let uid = current_uid();
    let name = user_name(uid).unwrap_or_else(|| format!("uid{uid}"));
    match std::env::var("SUDO_USER") {
        Ok(s) if !s.is_empty() && uid == 0 => format!("{s} (via sudo)"),
        _ => name,
    }
}

pub fn current_uid() -> u32 {
    safe_fs::caller_uid()
}

pub use crate::system::{passwd_ids, user_name};

pub use crate::render::Table;

/// Prints JSON with a trailing newline.
pub fn json<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string_pretty(value).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}")) + "\n"
}
