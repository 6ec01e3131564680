// SPDX-License-Identifier: GPL-2.0-or-later
//! Postings: the only code that writes the journal. Each function writes its entries
//! and keeps the cached totals they change (accounts' held and overdraft,
//! allocations' debited, jobs' held) in step, inside the caller's transaction.
//! `verify` re-derives every one of those totals from the entries written here.

use super::db::params;
use super::{EntryKind, GrantFunds, JobRow, LedgerError, NewEntry, Tx};
use crate::core::money::Money;

/// Writes an allocation and the deposit entry that funds it (`grant_id` when a grant
/// funds it).
#[allow(clippy::too_many_arguments)]
pub(crate) fn deposit(
    tx: &Tx<'_>,
    account_id: i64,
    amount: Money,
    valid_from: i64,
    valid_until: i64,
    memo: Option<&str>,
    key: &str,
    actor: &str,
    now: i64,
    grant_id: Option<i64>,
) -> Result<i64, LedgerError> {
    let allocation_id = tx.sql(|c| {
        c.query_row(
            "INSERT INTO allocations (account_id, amount_micros, valid_from, valid_until, memo, created_at, grant_id)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
             RETURNING id",
            params![account_id, amount.micros(), valid_from, valid_until, memo, now, grant_id],
            |r| r.get(0),
        )
    })?;
    tx.insert_entry(&NewEntry {
        txn_key: key,
        part: 0,
        kind: EntryKind::Deposit,
        account_id,
        allocation_id: Some(allocation_id),
        amount,
        token: None,
        job_id: None,
        at: now,
        actor: Some(actor),
        memo,
    })?;
    Ok(allocation_id)
}

/// The journal entry and account total (and the total of `grant`, the grant the job
/// names) of a job's first hold (the job row carries `held_micros` itself: written
/// with the row at submit, updated at a release).
#[allow(clippy::too_many_arguments)]
pub(crate) fn hold(
    tx: &Tx<'_>,
    token: &str,
    account_id: i64,
    grant: Option<&str>,
    amount: Money,
    job_id: Option<u32>,
    now: i64,
    why: &str,
) -> Result<(), LedgerError> {
    if amount.is_zero() {
        return Ok(());
    }
    tx.insert_entry(&NewEntry {
        txn_key: &format!("hold:{token}"),
        part: 0,
        kind: EntryKind::Hold,
        account_id,
        allocation_id: None,
        amount,
        token: Some(token),
        job_id,
        at: now,
        actor: None,
        memo: Some(why),
    })?;
    if let Some(number) = grant {
        tx.add_grant_held(number, amount.micros())?;
    }
    tx.add_account_held(account_id, amount.micros())
}

/// Gives back `amount` of a job's hold.
pub(crate) fn release(tx: &Tx<'_>, key: &str, job: &JobRow, amount: Money, now: i64) -> Result<(), LedgerError> {
    adjust_hold(tx, key, job, Money::from_micros(-amount.micros()), now)
}

/// Grows (delta > 0) or shrinks (delta < 0) a job's hold. The hold placed when the job
/// was accepted (`hold_placed`, of which each task's completion releases its share)
/// stays as it was: what a change adds is released when the last task ends. (An
/// average over the tasks would let a cheap task, ending first, give back part of the
/// hold of a task grown after it was split off, while that task has yet to run.)
pub(crate) fn adjust_hold(tx: &Tx<'_>, key: &str, job: &JobRow, delta: Money, now: i64) -> Result<(), LedgerError> {
    let delta = delta.micros();
    if delta == 0 {
        return Ok(());
    }
    tx.insert_entry(&NewEntry {
        txn_key: key,
        part: 0,
        kind: if delta > 0 { EntryKind::Hold } else { EntryKind::Release },
        account_id: job.account_id,
        allocation_id: None,
        amount: Money::from_micros(delta.abs()),
        token: Some(&job.token),
        job_id: job.job_id,
        at: now,
        actor: None,
        memo: None,
    })?;
    tx.add_account_held(job.account_id, delta)?;
    if let Some(number) = &job.grant_number {
        tx.add_grant_held(number, delta)?;
    }
    // Cached: every completion releases through here, inside slurmctld.
    tx.sql(|c| {
        c.prepare_cached("UPDATE jobs SET held_micros = held_micros + ?2 WHERE token = ?1")?
            .execute(params![job.token, delta])
    })?;
    Ok(())
}

/// Posts `amount` of cost as `base.kind` entries (`charge`, or `adjustment` for extra
/// cost found later) against the allocations of `base.account_id` active at
/// `active_at`, the one ending first first, the rest as overdraft; `part` and
/// `allocation_id` are filled in. A job that names a grant (`grant`) is charged to
/// that grant's allocations only: what they cannot cover is overdraft, never another
/// source's money. Allocation parts carry `base.memo`; the overdraft part says
/// `overdraft` (naming the grant) unless `base.memo` says something else.
pub(crate) fn post_cost(
    tx: &Tx<'_>,
    base: &NewEntry<'_>,
    amount: Money,
    active_at: i64,
    grant: Option<&GrantFunds>,
) -> Result<(), LedgerError> {
    if amount.is_zero() {
        return Ok(());
    }
    let mut left = amount.micros();
    let mut part = 0u32;
    let funds = |a: &&super::AllocationRow| {
        a.is_active(active_at) && a.remaining().micros() > 0 && grant.map_or(true, |g| a.grant_id == Some(g.id))
    };
    for a in tx.allocations(base.account_id)?.iter().filter(funds) {
        let take = left.min(a.remaining().micros());
        tx.insert_entry(&NewEntry { part, allocation_id: Some(a.id), amount: Money::from_micros(take), ..*base })?;
        tx.add_allocation_debit(a.id, take)?;
        part += 1;
        left -= take;
        if left == 0 {
            return Ok(());
        }
    }
    let grant_memo = grant.map(|g| format!("overdraft: grant {} had nothing left", g.number));
    let memo = base.memo.or(grant_memo.as_deref()).or(Some("overdraft"));
    tx.insert_entry(&NewEntry { part, allocation_id: None, amount: Money::from_micros(left), memo, ..*base })?;
    tx.add_account_overdraft(base.account_id, left)
}

/// Takes `amount` back from where the job's charges went: overdraft first, then
/// allocations ending last first.
#[allow(clippy::too_many_arguments)]
pub(crate) fn take_back(
    tx: &Tx<'_>,
    key: &str,
    kind: EntryKind,
    job: &JobRow,
    amount: Money,
    memo: Option<&str>,
    actor: &str,
    now: i64,
) -> Result<(), LedgerError> {
    let amount = amount.micros();
    let net: Vec<(Option<i64>, i64)> = tx.sql(|c| {
        c.prepare_cached(
            "SELECT j.allocation_id,
                    sum(CASE j.kind WHEN 'refund' THEN -j.amount_micros ELSE j.amount_micros END) AS net
             FROM journal j LEFT JOIN allocations a ON a.id = j.allocation_id
             WHERE j.token = ?1 AND j.kind IN ('charge', 'refund', 'adjustment')
             GROUP BY j.allocation_id
             ORDER BY j.allocation_id IS NOT NULL, max(a.valid_until) DESC, j.allocation_id DESC",
        )?
        .query_map([&job.token], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect()
    })?;
    let mut left = amount;
    let mut part = 0u32;
    for (allocation_id, available) in net {
        let take = left.min(available.max(0));
        if take == 0 {
            continue;
        }
        tx.insert_entry(&NewEntry {
            txn_key: key,
            part,
            kind,
            account_id: job.account_id,
            allocation_id,
            amount: Money::from_micros(if kind == EntryKind::Refund { take } else { -take }),
            token: Some(&job.token),
            job_id: job.job_id,
            at: now,
            actor: Some(actor),
            memo,
        })?;
        match allocation_id {
            Some(a) => tx.add_allocation_debit(a, -take)?,
            None => tx.add_account_overdraft(job.account_id, -take)?,
        }
        part += 1;
        left -= take;
        if left == 0 {
            break;
        }
    }
    debug_assert_eq!(left, 0, "a job's net charge is the sum of its per-allocation nets");
    Ok(())
}

/// Ends an allocation's unspent rest when its grant closes (part `part` of `key`).
#[allow(clippy::too_many_arguments)]
pub(crate) fn expire(
    tx: &Tx<'_>,
    key: &str,
    part: u32,
    account_id: i64,
    allocation_id: i64,
    amount: Money,
    actor: &str,
    now: i64,
) -> Result<(), LedgerError> {
    tx.insert_entry(&NewEntry {
        txn_key: key,
        part,
        kind: EntryKind::Expiry,
        account_id,
        allocation_id: Some(allocation_id),
        amount,
        token: None,
        job_id: None,
        at: now,
        actor: Some(actor),
        memo: Some("grant closed: unspent remainder"),
    })
}

/// Releases every open hold of an account's jobs (as `Budget::release` does, inside
/// the caller's transaction). Returns how many jobs and how much.
pub(crate) fn release_account_holds(
    tx: &Tx<'_>,
    account_id: i64,
    key: &str,
    now: i64,
) -> Result<(u32, Money), LedgerError> {
    let held: Vec<(String, i64, Option<u32>, Option<String>)> = tx.sql(|c| {
        c.prepare_cached(
            "SELECT token, held_micros, job_id, grant_number FROM jobs WHERE account_id = ?1 AND held_micros > 0 ORDER BY token",
        )?
        .query_map([account_id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?
        .collect()
    })?;
    let mut total = 0i64;
    for (token, amount, job_id, grant) in &held {
        tx.insert_entry(&NewEntry {
            txn_key: &format!("{key}:release:{token}"),
            part: 0,
            kind: EntryKind::Release,
            account_id,
            allocation_id: None,
            amount: Money::from_micros(*amount),
            token: Some(token),
            job_id: *job_id,
            at: now,
            actor: None,
            memo: Some("grant closed: no funding left"),
        })?;
        tx.add_account_held(account_id, -amount)?;
        if let Some(number) = grant {
            tx.add_grant_held(number, -amount)?;
        }
        tx.sql(|c| {
            c.execute(
                "UPDATE jobs SET held_micros = 0,
                   state = CASE WHEN state IN ('held', 'awaiting_approval', 'awaiting_funds') THEN 'released' ELSE state END,
                   settled_at = coalesce(settled_at, ?2)
                 WHERE token = ?1",
                params![token, now],
            )
        })?;
        total += amount;
    }
    Ok((held.len() as u32, Money::from_micros(total)))
}

/// One line in `audit_log`: who did what with asbb-admin.
pub(crate) fn audit(tx: &Tx<'_>, actor: &str, now: i64, command: &str, detail: &str) -> Result<(), LedgerError> {
    tx.sql(|c| {
        c.execute(
            "INSERT INTO audit_log (at, actor, command, detail) VALUES (?1, ?2, ?3, ?4)",
            params![now, actor, command, crate::core::text::clean_text(detail)],
        )
    })?;
    Ok(())
}
