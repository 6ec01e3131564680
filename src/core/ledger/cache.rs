// SPDX-License-Identifier: GPL-2.0-or-later
//! What a run of submissions reads again and again (an account's row and allocations,
//! a grant's funds, the count in the latest job token), kept between calls on one
//! connection for as long as the ledger is known not to have changed under it.
//!
//! Known how: SQLite's `PRAGMA data_version` changes when any other connection
//! (jobcomp's, `asbb-admin`'s, the API's) commits, and `total_changes` when this one
//! writes anything. Each call reads both inside its write transaction, where they
//! describe the file it is about to change; the entries are used only if both are as
//! the last call left them, and that call brought the entries in step with its own
//! commit (`placed`) or wrote nothing (`unchanged`). Every other outcome (an error, an
//! early return, any other write on the connection, another connection's commit)
//! leaves the cache unstamped, and the next call starts from the file again.

use super::{AccountRow, AllocationRow, GrantFunds, LedgerError, Tx};
use crate::core::money::Money;
use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};

/// More accounts than this and the cache starts over (a bound on memory inside slurmctld).
const MAX_ACCOUNTS: usize = 100_000;

/// What one connection has read of the ledger, while it stays true.
#[derive(Default)]
pub struct ReadCache {
    /// (data_version, total_changes) at which the entries match the file; `None`
    /// between `begin` and `placed`/`unchanged`, or when not known.
    stamp: Option<(i64, u64)>,
    /// Read at `begin`: what the stamp becomes if the call writes nothing.
    began: Option<(i64, u64)>,
    /// By name; `None`: no such account.
    accounts: HashMap<String, Option<AccountRow>>,
    /// By account id.
    allocations: HashMap<i64, Vec<AllocationRow>>,
    /// By number; `None`: no such grant.
    grants: HashMap<String, Option<GrantFunds>>,
    /// The count in the latest job token.
    latest_token_count: Option<u64>,
    /// Calls that found the entries still true (for tests and benchmarks).
    hits: u64,
}

impl ReadCache {
    /// Starts a call inside `tx` (a write transaction): keeps the entries if nothing
    /// has changed since the last call stamped them, else forgets them.
    pub(crate) fn begin(&mut self, tx: &Tx<'_>) -> Result<(), LedgerError> {
        // Only SQLite tells cheaply that nobody else wrote: on PostgreSQL every call
        // reads the ledger afresh.
        let Some(sqlite) = tx.sqlite() else {
            self.forget();
            self.began = None;
            return Ok(());
        };
        let now = tx.sql(|_| {
            let version: i64 = sqlite.prepare_cached("PRAGMA data_version")?.query_row([], |r| r.get(0))?;
            Ok((version, sqlite.total_changes()))
        })?;
        if self.stamp.take() == Some(now) {
            self.hits += 1;
        } else {
            self.forget();
        }
        self.began = Some(now);
        Ok(())
    }

    fn forget(&mut self) {
        self.accounts.clear();
        self.allocations.clear();
        self.grants.clear();
        self.latest_token_count = None;
    }

    /// The call wrote nothing: the entries stay true.
    pub(crate) fn unchanged(&mut self) {
        self.stamp = self.began.take();
    }

    /// The call committed a new job row with token count `token_count` and a hold of
    /// `held` on account `account` (and on grant `grant`): the entries follow, and are
    /// stamped with the connection's `total_changes` after that commit. Entries it
    /// cannot bring in step stay unstamped (the next call reads the file).
    pub(crate) fn placed(
        &mut self,
        token_count: u64,
        account: &str,
        grant: Option<&str>,
        held: Money,
        total_changes: Option<u64>,
    ) {
        let (Some((version, _)), Some(total_changes)) = (self.began.take(), total_changes) else { return };
        if self.add_held(account, grant, held).is_some() {
            self.latest_token_count = Some(token_count);
            self.stamp = Some((version, total_changes));
        }
    }

    fn add_held(&mut self, account: &str, grant: Option<&str>, held: Money) -> Option<()> {
        let account = self.accounts.get_mut(account)?.as_mut()?;
        account.held = account.held.checked_add(held)?;
        if let Some(number) = grant {
            let grant = self.grants.get_mut(number)?.as_mut()?;
            grant.held = grant.held.checked_add(held)?;
        }
        Some(())
    }

    /// Account `name`'s row.
    pub(crate) fn account(&mut self, tx: &Tx<'_>, name: &str) -> Result<Option<AccountRow>, LedgerError> {
        if let Some(found) = self.accounts.get(name) {
            return Ok(found.clone());
        }
        let found = tx.account_by_name(name)?;
        if self.accounts.len() >= MAX_ACCOUNTS {
            self.accounts.clear();
            self.allocations.clear();
        }
        self.accounts.insert(name.to_string(), found.clone());
        Ok(found)
    }

    /// Account `account_id`'s allocations.
    pub(crate) fn allocations(&mut self, tx: &Tx<'_>, account_id: i64) -> Result<Vec<AllocationRow>, LedgerError> {
        if let Some(found) = self.allocations.get(&account_id) {
            return Ok(found.clone());
        }
        let found = tx.allocations(account_id)?;
        self.allocations.insert(account_id, found.clone());
        Ok(found)
    }

    /// Grant `number`'s funds.
    pub(crate) fn grant_funds(&mut self, tx: &Tx<'_>, number: &str) -> Result<Option<GrantFunds>, LedgerError> {
        if let Some(found) = self.grants.get(number) {
            return Ok(found.clone());
        }
        let found = tx.grant_funds(number)?;
        if self.grants.len() >= MAX_ACCOUNTS {
            self.grants.clear();
        }
        self.grants.insert(number.to_string(), found.clone());
        Ok(found)
    }

    /// A new job token and its count (see [`Tx::new_token`]).
    pub(crate) fn new_token(&mut self, tx: &Tx<'_>) -> Result<(String, u64), LedgerError> {
        let latest = match self.latest_token_count {
            Some(count) => count,
            None => tx.latest_token_count()?,
        };
        let count = latest.saturating_add(1);
        Ok((super::token_text(count, random_24_bits()), count))
    }

    pub fn hits(&self) -> u64 {
        self.hits
    }
}

/// 24 unpredictable bits without a system call: std's `RandomState` keys each hasher
/// from per-thread keys drawn from the OS once.
fn random_24_bits() -> u32 {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u8(0);
    (h.finish() & 0xff_ffff) as u32
}
