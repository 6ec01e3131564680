// SPDX-License-Identifier: GPL-2.0-or-later
//! `verify`: recompute every balance from the journal and check every invariant.
//! The journal is the truth; the cached totals on accounts, allocations and jobs
//! must agree with it exactly.

use super::{Ledger, LedgerError};
use std::collections::BTreeMap;

/// What verify found.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct VerifyReport {
    pub accounts: usize,
    pub allocations: usize,
    pub journal_entries: usize,
    pub jobs: usize,
    pub problems: Vec<String>,
}

impl VerifyReport {
    pub fn is_clean(&self) -> bool {
        self.problems.is_empty()
    }
}

#[derive(Default)]
struct Derived {
    held: i64,
    overdraft: i64,
}

impl Ledger {
    pub fn verify(&self) -> Result<VerifyReport, LedgerError> {
        let conn = &self.conn;
        let e = |source| self.err(source);
        let mut report = VerifyReport::default();
        let mut problems = Vec::new();

        // Journal totals per account, allocation and token.
        let mut by_account: BTreeMap<i64, Derived> = BTreeMap::new();
        let mut alloc_amount: BTreeMap<i64, i64> = BTreeMap::new();
        let mut alloc_debit: BTreeMap<i64, i64> = BTreeMap::new();
        let mut token_held: BTreeMap<String, i64> = BTreeMap::new();
        let mut token_charged: BTreeMap<String, i64> = BTreeMap::new();
        let mut stmt = conn
            .prepare("SELECT kind, account_id, allocation_id, amount_micros, token, txn_key FROM journal ORDER BY id")
            .map_err(e)?;
        let mut rows = stmt.query(()).map_err(e)?;
        while let Some(r) = rows.next().map_err(e)? {
            report.journal_entries += 1;
            let kind: String = r.get(0).map_err(e)?;
            let account_id: i64 = r.get(1).map_err(e)?;
            let allocation_id: Option<i64> = r.get(2).map_err(e)?;
            let amount: i64 = r.get(3).map_err(e)?;
            let token: Option<String> = r.get(4).map_err(e)?;
            let key: String = r.get(5).map_err(e)?;
            let d = by_account.entry(account_id).or_default();
            match kind.as_str() {
                "deposit" => match allocation_id {
                    Some(a) => *alloc_amount.entry(a).or_default() += amount,
                    None => problems.push(format!("deposit {key} names no allocation")),
                },
                "hold" => {
                    d.held += amount;
                    if let Some(t) = token {
                        *token_held.entry(t).or_default() += amount;
                    }
                }
                "release" => {
                    d.held -= amount;
                    if let Some(t) = token {
                        *token_held.entry(t).or_default() -= amount;
                    }
                }
                "charge" | "refund" | "adjustment" => {
                    let signed = if kind == "refund" { -amount } else { amount };
                    match allocation_id {
                        Some(a) => *alloc_debit.entry(a).or_default() += signed,
                        None => d.overdraft += signed,
                    }
                    if let Some(t) = token {
                        *token_charged.entry(t).or_default() += signed;
                    }
                }
                "expiry" => {}
                other => problems.push(format!("entry {key} has unknown kind {other}")),
            }
        }
        drop(rows);
        drop(stmt);

        let mut stmt =
            conn.prepare("SELECT id, name, held_micros, overdraft_micros FROM accounts ORDER BY name").map_err(e)?;
        let accounts: Vec<(i64, String, i64, i64)> = stmt
            .query_map((), |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
            .map_err(e)?
            .collect::<Result<_, _>>()
            .map_err(e)?;
        report.accounts = accounts.len();
        let mut names = BTreeMap::new();
        for (id, name, held, overdraft) in &accounts {
            names.insert(*id, name.clone());
            let d = by_account.remove(id).unwrap_or_default();
            if d.held != *held {
                problems.push(format!("account {name}: cached held {held} micros, journal says {}", d.held));
            }
            if d.held < 0 {
                problems.push(format!("account {name}: open holds are negative ({} micros)", d.held));
            }
            if d.overdraft != *overdraft {
                problems
                    .push(format!("account {name}: cached overdraft {overdraft} micros, journal says {}", d.overdraft));
            }
        }
        for id in by_account.keys() {
            problems.push(format!("journal entries name account id {id}, which does not exist"));
        }

        let mut stmt =
            conn.prepare("SELECT id, account_id, amount_micros, debited_micros FROM allocations").map_err(e)?;
        let allocs: Vec<(i64, i64, i64, i64)> = stmt
            .query_map((), |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
            .map_err(e)?
            .collect::<Result<_, _>>()
            .map_err(e)?;
        report.allocations = allocs.len();
        for (id, account_id, amount, debited) in allocs {
            let who = names.get(&account_id).cloned().unwrap_or_else(|| account_id.to_string());
            let j_amount = alloc_amount.remove(&id).unwrap_or(0);
            let j_debit = alloc_debit.remove(&id).unwrap_or(0);
            if j_amount != amount {
                problems.push(format!("allocation {id} ({who}): amount {amount} micros, deposits say {j_amount}"));
            }
            if j_debit != debited {
                problems
                    .push(format!("allocation {id} ({who}): cached debited {debited} micros, journal says {j_debit}"));
            }
            if debited > amount || debited < 0 {
                problems.push(format!("allocation {id} ({who}): debited {debited} micros outside 0..={amount}"));
            }
        }

        let mut stmt = conn
            .prepare("SELECT token, held_micros, charged_micros, state, tasks_done, tasks_total FROM jobs")
            .map_err(e)?;
        let jobs: Vec<(String, i64, i64, crate::core::ledger::JobState, i64, i64)> = stmt
            .query_map((), |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?)))
            .map_err(e)?
            .collect::<Result<_, _>>()
            .map_err(e)?;
        report.jobs = jobs.len();
        for (token, held, charged, state, done, total) in jobs {
            let j_held = token_held.remove(&token).unwrap_or(0);
            let j_charged = token_charged.remove(&token).unwrap_or(0);
            if j_held != held {
                problems.push(format!("job {token}: cached hold {held} micros, journal says {j_held}"));
            }
            if j_held < 0 {
                problems.push(format!("job {token}: released more than was held ({j_held} micros)"));
            }
            if j_charged != charged {
                problems.push(format!("job {token}: cached charged {charged} micros, journal says {j_charged}"));
            }
            if !state.is_open() && held != 0 {
                problems.push(format!("job {token}: {state} but still holds {held} micros"));
            }
            if done > total {
                problems.push(format!("job {token}: {done} tasks done of {total}"));
            }
        }
        for (token, amount) in token_held {
            if amount != 0 {
                problems.push(format!("hold token {token} in the journal has no job ({amount} micros held)"));
            }
        }

        // Every run is charged exactly its cost.
        let mut stmt = conn
            .prepare(
                // A run's charge entries are not in the key index (a look-up per run
                // would read the journal each time): runs and charges are grouped by run
                // key in one sort. Charges with no run are the orphans below.
                "SELECT run_key, sum(cost), sum(charged) FROM (
                     SELECT run_key, cost_micros AS cost, 0 AS charged, 1 AS is_run FROM runs
                     UNION ALL
                     SELECT substr(txn_key, 8), 0, amount_micros, 0 FROM journal WHERE substr(txn_key, 1, 7) = 'charge:'
                 ) AS u GROUP BY run_key HAVING max(is_run) = 1",
            )
            .map_err(e)?;
        let runs: Vec<(String, i64, i64)> = stmt
            .query_map((), |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .map_err(e)?
            .collect::<Result<_, _>>()
            .map_err(e)?;
        for (key, cost, charged) in runs {
            if cost != charged {
                problems.push(format!("run {key}: cost {cost} micros, charged {charged}"));
            }
        }
        // A run's charge and its release are unique through the run's row: each needs one.
        let (charges, releases): (i64, i64) = conn
            .query_row(
                "SELECT coalesce(sum(CASE WHEN j.kind = 'charge' AND j.txn_key LIKE 'charge:%' THEN 1 ELSE 0 END), 0),
                        coalesce(sum(CASE WHEN j.txn_key LIKE 'release-run:%' THEN 1 ELSE 0 END), 0)
                 FROM journal j
                 WHERE (j.txn_key LIKE 'charge:%' OR j.txn_key LIKE 'release-run:%')
                   AND NOT EXISTS (SELECT 1 FROM runs r
                                   WHERE r.run_key = substr(j.txn_key, instr(j.txn_key, ':') + 1))",
                (),
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .map_err(e)?;
        if charges > 0 {
            problems.push(format!("{charges} charge entries have no run"));
        }
        if releases > 0 {
            problems.push(format!("{releases} run release entries have no run"));
        }
        // A grant's open holds are its jobs' (schema 6+; PostgreSQL ledgers start at 11).
        let sqlite = conn.sqlite();
        let has_grant_holds: bool = match sqlite {
            Some(c) => c
                .query_row(
                    "SELECT count(*) > 0 FROM pragma_table_info('grant_accounts') WHERE name = 'held_micros'",
                    [],
                    |r| r.get(0),
                )
                .map_err(|x| self.err(x))?,
            None => true,
        };
        if has_grant_holds {
            let mut stmt = conn
                .prepare(
                    "SELECT g.grant_number, g.held_micros, coalesce((SELECT sum(j.held_micros) FROM jobs j
                       WHERE j.grant_number = g.grant_number), 0)
                     FROM grant_accounts g ORDER BY g.grant_number",
                )
                .map_err(e)?;
            let grants: Vec<(String, i64, i64)> = stmt
                .query_map((), |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                .map_err(e)?
                .collect::<Result<_, _>>()
                .map_err(e)?;
            for (number, held, jobs_held) in grants {
                if held != jobs_held {
                    problems.push(format!("grant {number}: cached held {held} micros, its jobs hold {jobs_held}"));
                }
            }
        }
        // Who may read which account through the API follows from the jobs they ran
        // (schema 5+: `asbb-admin migrate` verifies the older ledger too).
        let has_users: bool = match sqlite {
            Some(c) => c
                .query_row("SELECT count(*) > 0 FROM sqlite_master WHERE name = 'account_job_users'", [], |r| r.get(0))
                .map_err(|x| self.err(x))?,
            None => true,
        };
        let missing_users: i64 = if has_users {
            conn.query_row(
                "SELECT count(*) FROM (SELECT DISTINCT uid, account_id FROM jobs) j
                 WHERE NOT EXISTS (SELECT 1 FROM account_job_users u WHERE u.uid = j.uid AND u.account_id = j.account_id)",
                (),
                |r| r.get(0),
            )
            .map_err(e)?
        } else {
            0
        };
        if missing_users > 0 {
            problems
                .push(format!("{missing_users} (user, account) pairs with jobs are missing from account_job_users"));
        }
        // PostgreSQL checks its own pages (data checksums, amcheck): not asbb's to run.
        if let Some(c) = sqlite {
            let integrity: String = c.query_row("PRAGMA quick_check", [], |r| r.get(0)).map_err(|x| self.err(x))?;
            if integrity != "ok" {
                problems.push(format!("SQLite integrity check: {integrity}"));
            }
        }
        report.problems = problems;
        Ok(report)
    }
}
