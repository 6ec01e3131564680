// SPDX-License-Identifier: GPL-2.0-or-later
//! Account rows and what is read of an account: the accounts, one's name, its
//! journal entries.

use super::db::params;
use super::{account_from_row, AccountRow, EntryRow, Ledger, LedgerError, Tx, ACCOUNT_COLS};
use crate::core::money::Money;

impl Ledger {
    /// Every account, by name.
    pub fn accounts(&self) -> Result<Vec<AccountRow>, LedgerError> {
        self.sql(|c| {
            c.prepare(&format!("SELECT {ACCOUNT_COLS} FROM accounts ORDER BY name"))?
                .query_map((), account_from_row)?
                .collect()
        })
    }

    /// The name of the account with id `id`.
    pub fn account_name(&self, id: i64) -> Result<String, LedgerError> {
        self.sql(|c| c.prepare_cached("SELECT name FROM accounts WHERE id = ?1")?.query_row([id], |r| r.get(0)))
    }

    /// Journal entries of account `account` at or after `since`, oldest first; `None`
    /// when there is no such account. Read straight through the journal (only cost
    /// entries are indexed by time).
    pub fn entries_of(&self, account: &str, since: i64) -> Result<Option<Vec<EntryRow>>, LedgerError> {
        self.sql(|c| {
            if !c.prepare_cached("SELECT 1 FROM accounts WHERE name = ?1")?.exists([account])? {
                return Ok(None);
            }
            c.prepare_cached(
                "SELECT j.id, j.txn_key, j.part, j.kind, a.name, j.allocation_id, j.amount_micros, j.token, j.job_id, j.at, j.actor, j.memo
                 FROM journal j JOIN accounts a ON a.id = j.account_id
                 WHERE a.name = ?1 AND j.at >= ?2 ORDER BY j.id",
            )?
            .query_map(params![account, since], |r| {
                Ok(EntryRow {
                    id: r.get(0)?,
                    txn_key: r.get(1)?,
                    part: r.get(2)?,
                    kind: r.get(3)?,
                    account: r.get(4)?,
                    allocation_id: r.get(5)?,
                    amount: Money::from_micros(r.get(6)?),
                    token: r.get(7)?,
                    job_id: r.get(8)?,
                    at: r.get(9)?,
                    actor: r.get(10)?,
                    memo: r.get(11)?,
                })
            })?
            .collect::<super::db::Result<_>>()
            .map(Some)
        })
    }
}

impl Tx<'_> {
    /// A new account's row (active, nothing held); its id.
    pub fn insert_account(&self, name: &str, credit_limit: Money, now: i64) -> Result<i64, LedgerError> {
        self.sql(|c| {
            c.query_row(
                "INSERT INTO accounts (name, credit_limit_micros, created_at) VALUES (?1, ?2, ?3)
                 RETURNING id",
                params![name, credit_limit.micros(), now],
                |r| r.get(0),
            )
        })
    }
}

impl Ledger {
    /// Account `name`'s cached open holds and the sum of its jobs' holds, read in one
    /// statement (one snapshot): the two are equal whenever no write is half done.
    pub fn held_and_jobs_held(&self, name: &str) -> Result<(i64, i64), LedgerError> {
        self.sql(|c| {
            c.prepare_cached(
                "SELECT a.held_micros, coalesce((SELECT sum(j.held_micros) FROM jobs j WHERE j.account_id = a.id), 0)
                 FROM accounts a WHERE a.name = ?1",
            )?
            .query_row([name], |r| Ok((r.get(0)?, r.get(1)?)))
        })
    }
}
