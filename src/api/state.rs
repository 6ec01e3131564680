// SPDX-License-Identifier: GPL-2.0-or-later
//! What every request shares: the config, the one ledger handle, the API tokens and
//! the request counts; and running a request's ledger work on the blocking pool.

use super::wire::ApiError;
use crate::core::config::{ApiRole, Config};
use crate::core::decisions::{Budget, BudgetHandle};
use crate::system::Clock;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

pub struct Shared {
    pub(super) config: Config,
    /// The ledger, opened on first use and reopened by `BudgetHandle`'s policy.
    pub(super) ledger: Mutex<BudgetHandle>,
    pub(super) tokens: Vec<([u8; 32], String, ApiRole)>,
    pub(super) ledger_owner: Option<u32>,
    pub(super) log: bool,
    pub(super) clock: Clock,
    pub(super) requests: [AtomicU64; 5],
}

pub type AppState = Arc<Shared>;

impl Shared {
    /// Runs `f` on the ledger on the blocking pool.
    pub(super) async fn with_budget<T, F>(self: &Arc<Self>, f: F) -> Result<T, ApiError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Budget, i64) -> Result<T, ApiError> + Send + 'static,
    {
        let me = Arc::clone(self);
        tokio::task::spawn_blocking(move || {
            let mut handle = me.ledger.lock().unwrap_or_else(|p| p.into_inner());
            let budget = handle.get().map_err(|e| ApiError::new(503, "ledger_unavailable", e.to_string()))?;
            let now = (me.clock)().map_err(|e| ApiError::new(500, "internal", e))?;
            let out = f(budget, now);
            if matches!(&out, Err(e) if e.reopen_ledger) {
                handle.forget();
            }
            out
        })
        .await
        .map_err(|e| ApiError::new(500, "internal", format!("request failed: {e}")))?
    }
}
