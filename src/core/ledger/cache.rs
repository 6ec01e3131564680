// SPDX-License-Identifier: GPL-2.0-or-later
//! What a run of submissions reads again and again (an account's row and allocations,
//! a grant's funds, a learning group's factor, the count in the latest job token),
//! kept between calls on one connection for as long as the ledger is known not to have
//! changed under it.
//!
//! Known how, on SQLite: `PRAGMA data_version` changes when any other connection
//! (jobcomp's, `asbb-admin`'s, the API's) commits, and `total_changes` when this one
//! writes anything. Each call reads both inside its write transaction, where they
//! describe the file it is about to change. On PostgreSQL: the ledger's clock, which
//! every writing transaction moves on by one, as the write lock finds it; or, for a
//! call that decides from the entries without taking the lock first (an optimistic
//! transaction, see [`super::Tx::optimistic`]), as its commit checks it.
//!
//! The entries are used only if the stamp is as the last call left it, and that call
//! brought the entries in step with its own commit (`placed`) or wrote nothing
//! (`unchanged`). Every other outcome (an error, an early return, any other write on
//! the connection, another connection's commit) leaves the cache unstamped, and the
//! next call starts from the ledger again.

use super::{AccountRow, AllocationRow, GrantFunds, LedgerError, Tx};
use crate::core::config::LearningConfig;
use crate::core::money::Money;
use crate::core::pricing::learning;
use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};

/// More accounts than this and the cache starts over (a bound on memory inside slurmctld).
const MAX_ACCOUNTS: usize = 100_000;

/// When the entries were true of the ledger.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stamp {
    /// SQLite: (data_version, total_changes).
    Sqlite(i64, u64),
    /// PostgreSQL: (the ledger's clock, the connection's write commits).
    Clock(i64, u64),
}

/// What one connection has read of the ledger, while it stays true.
#[derive(Default)]
pub struct ReadCache {
    /// When the entries match the ledger; `None` between `begin` and
    /// `placed`/`unchanged`, or when not known.
    stamp: Option<Stamp>,
    /// Read at `begin`: what the stamp becomes if the call writes nothing.
    began: Option<Stamp>,
    /// By name; `None`: no such account.
    accounts: HashMap<String, Option<AccountRow>>,
    /// By account id.
    allocations: HashMap<i64, Vec<AllocationRow>>,
    /// By number; `None`: no such grant.
    grants: HashMap<String, Option<GrantFunds>>,
    /// Learning factors (ppm) by (account id, partition, domain); `None`: too few samples.
    factors: HashMap<(i64, String, String), Option<i64>>,
    /// The count in the latest job token.
    latest_token_count: Option<u64>,
    /// Calls that decided from the entries (for tests and benchmarks).
    hits: u64,
    /// The call under way began with the entries still true.
    reused: bool,
}

impl ReadCache {
    /// Starts a call inside `tx` (a write transaction, or an optimistic one begun from
    /// [`Self::clock`]): keeps the entries if nothing has changed since the last call
    /// stamped them, else forgets them.
    pub(crate) fn begin(&mut self, tx: &Tx<'_>) -> Result<(), LedgerError> {
        let now = match tx.sqlite() {
            Some(sqlite) => Some(tx.sql(|_| {
                let version: i64 = sqlite.prepare_cached("PRAGMA data_version")?.query_row([], |r| r.get(0))?;
                Ok(Stamp::Sqlite(version, sqlite.total_changes()))
            })?),
            None => tx.clock().map(|clock| Stamp::Clock(clock, tx.change_count())),
        };
        self.reused = now.is_some() && self.stamp.take() == now;
        if !self.reused {
            self.forget();
        }
        self.began = now;
        Ok(())
    }

    /// On PostgreSQL, the ledger's clock at which the entries are true, if known and
    /// if the connection (whose write commits are `change_count`) has written nothing
    /// since: an optimistic transaction may decide from them.
    pub(crate) fn clock(&self, change_count: u64) -> Option<i64> {
        match self.stamp {
            Some(Stamp::Clock(clock, changes)) if changes == change_count => Some(clock),
            _ => None,
        }
    }

    fn forget(&mut self) {
        self.stamp = None;
        self.accounts.clear();
        self.allocations.clear();
        self.grants.clear();
        self.factors.clear();
        self.latest_token_count = None;
    }

    /// The call wrote nothing: the entries stay true.
    pub(crate) fn unchanged(&mut self) {
        self.stamp = self.began.take();
        self.count_hit();
    }

    /// A call that began from the entries decided (one that fails, such as an
    /// optimistic transaction that finds the ledger changed, is no hit).
    fn count_hit(&mut self) {
        if std::mem::take(&mut self.reused) {
            self.hits += 1;
        }
    }

    /// The call committed a new job row with token count `token_count` and a hold of
    /// `held` on account `account` (and on grant `grant`): the entries follow, and are
    /// stamped as of that commit: with the connection's `change_count` after it, and
    /// on PostgreSQL the clock it moved on by one. Entries it cannot bring in step stay
    /// unstamped (the next call reads the ledger).
    pub(crate) fn placed(
        &mut self,
        token_count: u64,
        account: &str,
        grant: Option<&str>,
        held: Money,
        change_count: u64,
    ) {
        let after = match self.began.take() {
            Some(Stamp::Sqlite(version, _)) => Some(Stamp::Sqlite(version, change_count)),
            Some(Stamp::Clock(clock, _)) => clock.checked_add(1).map(|clock| Stamp::Clock(clock, change_count)),
            None => None,
        };
        self.count_hit();
        if after.is_some() && self.add_held(account, grant, held).is_some() {
            self.latest_token_count = Some(token_count);
            self.stamp = after;
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

    /// What to hold for a job estimated at `estimate` (see [`learning::hold_for`]).
    pub(crate) fn hold_for(
        &mut self,
        tx: &Tx<'_>,
        account_id: i64,
        partition: &str,
        domain: &str,
        estimate: Money,
        cfg: &LearningConfig,
    ) -> Result<Money, LedgerError> {
        learning::hold_with(estimate, cfg, || {
            let key = (account_id, partition.to_string(), domain.to_string());
            if let Some(found) = self.factors.get(&key) {
                return Ok(*found);
            }
            let found = learning::group_factor(tx, account_id, partition, domain, cfg)?;
            if self.factors.len() >= MAX_ACCOUNTS {
                self.factors.clear();
            }
            self.factors.insert(key, found);
            Ok(found)
        })
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
