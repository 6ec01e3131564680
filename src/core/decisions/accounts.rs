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
        let tx = Tx::write(&mut self.ledger)?;
        if tx.account_by_name(name)?.is_some() {
            return Err(BudgetError::DuplicateAccount(name.to_string()));
        }
        let account_id = tx.insert_account(name, credit_limit, now)?;
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
            )?;
        }
        audit(
            &tx,
            actor,
            now,
            "account create",
            &format!("{name} limit={} credit_limit={}", limit.to_exact_string(), credit_limit.to_exact_string()),
        )?;
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
        let tx = Tx::write(&mut self.ledger)?;
        let acc = tx.account_by_name(account)?.ok_or_else(|| BudgetError::UnknownAccount(account.to_string()))?;
        let key = match request_key {
            Some(k) => format!("deposit:{k}"),
            None => format!("deposit:{}", tx.new_token()?),
        };
        if tx.txn_exists(&key)? {
            return Ok(false);
        }
        postings::deposit(&tx, acc.id, amount, valid_from, valid_until, memo, &key, actor, now, None)?;
        audit(&tx, actor, now, "deposit", &format!("{account} {} {}", amount.to_exact_string(), memo.unwrap_or("")))?;
        tx.commit()?;
        Ok(true)
    }

    pub fn accounts(&self) -> Result<Vec<AccountRow>, BudgetError> {
        Ok(self.ledger.accounts()?)
    }

    pub fn balance(&mut self, account: &str, now: i64) -> Result<Balance, BudgetError> {
        let tx = Tx::read(&mut self.ledger)?;
        let acc = tx.account_by_name(account)?.ok_or_else(|| BudgetError::UnknownAccount(account.to_string()))?;
        let allocs = tx.allocations(acc.id)?;
        Ok(balance_of(&acc, &allocs, now))
    }

    pub fn allocations(&mut self, account: &str) -> Result<Vec<AllocationRow>, BudgetError> {
        let tx = Tx::read(&mut self.ledger)?;
        let acc = tx.account_by_name(account)?.ok_or_else(|| BudgetError::UnknownAccount(account.to_string()))?;
        Ok(tx.allocations(acc.id)?)
    }

    /// A user's most recent jobs, newest first.
    pub fn recent_jobs(&self, user: &str, limit: u32) -> Result<Vec<JobSummary>, BudgetError> {
        Ok(self.ledger.recent_jobs(user, limit)?)
    }

    /// Journal entries of one account at or after `since`, oldest first.
    pub fn journal_of(&self, account: &str, since: i64) -> Result<Vec<crate::core::ledger::EntryRow>, BudgetError> {
        self.ledger.entries_of(account, since)?.ok_or_else(|| BudgetError::UnknownAccount(account.to_string()))
    }

    /// The name of the account with id `id`.
    pub fn account_name_of(&mut self, id: i64) -> Result<String, BudgetError> {
        Ok(self.ledger.account_name(id)?)
    }

    pub fn job(&mut self, token: &str) -> Result<Option<JobRow>, BudgetError> {
        Ok(self.ledger.job(token)?)
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
