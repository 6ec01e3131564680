// SPDX-License-Identifier: GPL-2.0-or-later
//! Accounts and deposits, balances, and what the ledger shows of them.

use super::*;

impl Budget {
    /// Creates a budget account with its first allocation (`limit`, may be zero).
    #[allow(clippy::too_many_arguments)]
    pub fn create_account(
        &mut self,
        name: &str,
        limit: Money,
        valid_from: i64,
        valid_until: i64,
        credit_limit: Money,
        actor: &str,
        now: i64,
    ) -> Result<(), BudgetError> {
        validate_name(name)?;
        if valid_until <= valid_from {
            return Err(BudgetError::Invalid(format!(
                "end date {} is not after start date {}",
                format_date(valid_until - DAY_S),
                format_date(valid_from)
            )));
        }
        let path = self.ledger.path().to_path_buf();
        let e = move |source| BudgetError::Ledger(LedgerError::Sqlite { path: path.clone(), source });
        let tx = Tx::write(&mut self.ledger)?;
        if tx.account_by_name(name).map_err(&e)?.is_some() {
            return Err(BudgetError::DuplicateAccount(name.to_string()));
        }
        tx.tx
            .execute(
                "INSERT INTO accounts (name, credit_limit_micros, created_at) VALUES (?1, ?2, ?3)",
                params![name, credit_limit.micros(), now],
            )
            .map_err(&e)?;
        let account_id = tx.tx.last_insert_rowid();
        if !limit.is_zero() {
            let key = format!("account-create:{name}:{account_id}");
            postings::deposit(
                &tx,
                account_id,
                limit,
                valid_from,
                valid_until,
                Some("initial allocation"),
                &key,
                actor,
                now,
                None,
            )
            .map_err(&e)?;
        }
        audit(
            &tx,
            actor,
            now,
            "account create",
            &format!("{name} limit={} credit_limit={}", limit.to_exact_string(), credit_limit.to_exact_string()),
        )
        .map_err(&e)?;
        Ok(tx.commit()?)
    }

    /// Adds an allocation. A replayed `request_key` changes nothing and returns false.
    #[allow(clippy::too_many_arguments)]
    pub fn deposit(
        &mut self,
        account: &str,
        amount: Money,
        valid_from: i64,
        valid_until: i64,
        memo: Option<&str>,
        request_key: Option<&str>,
        actor: &str,
        now: i64,
    ) -> Result<bool, BudgetError> {
        if amount.is_zero() || amount.is_negative() {
            return Err(BudgetError::Invalid("deposit amount must be above zero".into()));
        }
        if valid_until <= valid_from {
            return Err(BudgetError::Invalid(format!(
                "valid-until {} is not after valid-from {}",
                format_date(valid_until - DAY_S),
                format_date(valid_from)
            )));
        }
        let path = self.ledger.path().to_path_buf();
        let e = move |source| BudgetError::Ledger(LedgerError::Sqlite { path: path.clone(), source });
        let tx = Tx::write(&mut self.ledger)?;
        let acc =
            tx.account_by_name(account).map_err(&e)?.ok_or_else(|| BudgetError::UnknownAccount(account.to_string()))?;
        let key = match request_key {
            Some(k) => format!("deposit:{k}"),
            None => format!("deposit:{}", tx.new_token().map_err(&e)?),
        };
        if tx.txn_exists(&key).map_err(&e)? {
            return Ok(false);
        }
        postings::deposit(&tx, acc.id, amount, valid_from, valid_until, memo, &key, actor, now, None).map_err(&e)?;
        audit(&tx, actor, now, "deposit", &format!("{account} {} {}", amount.to_exact_string(), memo.unwrap_or("")))
            .map_err(&e)?;
        tx.commit()?;
        Ok(true)
    }

    pub fn accounts(&self) -> Result<Vec<AccountRow>, BudgetError> {
        let e = sq(&self.ledger);
        let mut stmt = self
            .ledger
            .conn
            .prepare(&format!("SELECT {} FROM accounts ORDER BY name", crate::core::ledger::ACCOUNT_COLS))
            .map_err(&e)?;
        let rows = stmt.query_map([], crate::core::ledger::account_from_row).map_err(&e)?;
        rows.collect::<Result<Vec<_>, _>>().map_err(e)
    }

    pub fn balance(&mut self, account: &str, now: i64) -> Result<Balance, BudgetError> {
        let path = self.ledger.path().to_path_buf();
        let e = move |source| BudgetError::Ledger(LedgerError::Sqlite { path: path.clone(), source });
        let tx = Tx::read(&mut self.ledger)?;
        let acc =
            tx.account_by_name(account).map_err(&e)?.ok_or_else(|| BudgetError::UnknownAccount(account.to_string()))?;
        let allocs = tx.allocations(acc.id).map_err(&e)?;
        Ok(balance_of(&acc, &allocs, now))
    }

    pub fn allocations(&mut self, account: &str) -> Result<Vec<AllocationRow>, BudgetError> {
        let path = self.ledger.path().to_path_buf();
        let e = move |source| BudgetError::Ledger(LedgerError::Sqlite { path: path.clone(), source });
        let tx = Tx::read(&mut self.ledger)?;
        let acc =
            tx.account_by_name(account).map_err(&e)?.ok_or_else(|| BudgetError::UnknownAccount(account.to_string()))?;
        tx.allocations(acc.id).map_err(e)
    }

    /// A user's most recent jobs, newest first.
    pub fn recent_jobs(&self, user: &str, limit: u32) -> Result<Vec<JobSummary>, BudgetError> {
        let e = sq(&self.ledger);
        let mut stmt = self
            .ledger
            .conn
            .prepare_cached(&format!(
                "SELECT {JOB_SUMMARY_COLS} FROM jobs j JOIN accounts a ON a.id = j.account_id
                     WHERE j.user_name = ?1 ORDER BY j.submitted_at DESC, j.token DESC LIMIT ?2"
            ))
            .map_err(&e)?;
        let rows = stmt.query_map(params![user, limit], job_summary_from_row).map_err(&e)?;
        rows.collect::<Result<Vec<_>, _>>().map_err(e)
    }

    /// Journal entries of one account at or after `since`, oldest first.
    pub fn journal_of(&self, account: &str, since: i64) -> Result<Vec<crate::core::ledger::EntryRow>, BudgetError> {
        let e = sq(&self.ledger);
        let exists = self
            .ledger
            .conn
            .prepare_cached("SELECT 1 FROM accounts WHERE name = ?1")
            .and_then(|mut s| s.exists([account]))
            .map_err(&e)?;
        if !exists {
            return Err(BudgetError::UnknownAccount(account.to_string()));
        }
        let mut stmt = self
            .ledger
            .conn
            .prepare_cached(
                "SELECT j.id, j.txn_key, j.part, j.kind, a.name, j.allocation_id, j.amount_micros, j.token, j.job_id, j.at, j.actor, j.memo
                 FROM journal j JOIN accounts a ON a.id = j.account_id
                 WHERE a.name = ?1 AND j.at >= ?2 ORDER BY j.id",
            )
            .map_err(&e)?;
        let rows = stmt
            .query_map(params![account, since], |r| {
                Ok(crate::core::ledger::EntryRow {
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
            })
            .map_err(&e)?;
        rows.collect::<Result<Vec<_>, _>>().map_err(e)
    }

    /// The name of the account with id `id`.
    pub fn account_name_of(&mut self, id: i64) -> Result<String, BudgetError> {
        let e = sq(&self.ledger);
        self.ledger
            .conn
            .prepare_cached("SELECT name FROM accounts WHERE id = ?1")
            .and_then(|mut s| s.query_row([id], |r| r.get(0)))
            .map_err(e)
    }

    pub fn job(&mut self, token: &str) -> Result<Option<JobRow>, BudgetError> {
        let e = sq(&self.ledger);
        self.ledger
            .conn
            .prepare_cached(&format!("SELECT {JOB_COLS} FROM jobs WHERE token = ?1"))
            .and_then(|mut s| {
                rusqlite::OptionalExtension::optional(s.query_row([token], crate::core::ledger::job_from_row))
            })
            .map_err(e)
    }
}

fn validate_name(name: &str) -> Result<(), BudgetError> {
    crate::core::text::ACCOUNT_NAME
        .check("account name", name)
        .map_err(|why| BudgetError::Invalid(format!("{why} (a SLURM account name)")))
}

fn balance_of(acc: &AccountRow, allocs: &[AllocationRow], now: i64) -> Balance {
    let active: Vec<&AllocationRow> = allocs.iter().filter(|a| a.is_active(now)).collect();
    let allocated: i128 = active.iter().map(|a| a.amount.micros() as i128).sum();
    let debited: i128 = active.iter().map(|a| a.debited.micros() as i128).sum();
    Balance {
        account: acc.name.clone(),
        status: acc.status.clone(),
        allocated: saturate(allocated),
        charged: saturate(debited + acc.overdraft.micros() as i128),
        held: acc.held,
        credit_limit: acc.credit_limit,
        available: available_of(acc, allocs, now),
        valid_from: active.iter().map(|a| a.valid_from).min(),
        valid_until: active.iter().map(|a| a.valid_until).max(),
    }
}
