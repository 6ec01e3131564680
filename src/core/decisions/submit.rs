// SPDX-License-Identifier: GPL-2.0-or-later
//! The submit path: price a request, decide (fits, held, refused), place the hold.

use super::*;

impl Budget {
    /// Prices and decides without writing anything (a quote).
    pub fn quote(&mut self, req: &JobRequest, now: i64) -> Result<Decision, BudgetError> {
        Ok(self.quote_with_hold(req, now)?.0)
    }

    /// [`Self::quote`] and, for a job that fits, the hold submit would place (learning
    /// may size it below the estimate).
    pub fn quote_with_hold(&mut self, req: &JobRequest, now: i64) -> Result<(Decision, Option<Money>), BudgetError> {
        let tx = Tx::read(&mut self.ledger)?;
        let verdict = decide(&self.config, &tx, req, "", now, false)?;
        Ok(match verdict {
            Verdict::Done(d) => (d, None),
            Verdict::Fits { estimate, hold, available, .. } => (
                Decision::Accept {
                    token: String::new(),
                    estimate,
                    available_after: Money::from_micros(available.micros() - hold.micros()),
                },
                Some(hold),
            ),
            Verdict::Held { estimate, reason, .. } => (Decision::Hold { token: String::new(), estimate, reason }, None),
        })
    }

    /// The plugin's decision: accept (hold written), hold, or reject, in one short
    /// write transaction.
    pub fn check_and_hold(&mut self, req: &JobRequest, now: i64) -> Result<Decision, BudgetError> {
        self.submit(req, &JobMetadata::default(), now)
    }

    /// `check_and_hold` for a job that carries metadata: a named grant must exist,
    /// be open and fund the job's account; `max_cost` must cover the estimate.
    pub fn submit(&mut self, req: &JobRequest, meta: &JobMetadata, now: i64) -> Result<Decision, BudgetError> {
        let path = self.ledger.path().to_path_buf();
        let e = move |source| BudgetError::Ledger(LedgerError::Sqlite { path: path.clone(), source });
        let tx = Tx::write(&mut self.ledger)?;
        let domain = meta.research_domain.as_deref().unwrap_or("");
        let verdict = decide(&self.config, &tx, req, domain, now, false)?;
        if let Some(refusal) = check_metadata(&tx, &verdict, meta).map_err(&e)? {
            return Ok(refusal);
        }
        let decision = match verdict {
            Verdict::Done(d) => return Ok(d),
            // Hold `hold` (= the estimate unless [learning] sized it down).
            Verdict::Fits { account, estimate, hold, available } => {
                let token = tx.new_token().map_err(&e)?;
                insert_job(&tx, &token, &account, req, estimate, hold, JobState::Held, None, Some(meta), now)
                    .map_err(&e)?;
                postings::hold(&tx, &token, account.id, hold, req.job_id, now, "submit").map_err(&e)?;
                Decision::Accept {
                    token,
                    estimate,
                    available_after: Money::from_micros(available.micros() - hold.micros()),
                }
            }
            Verdict::Held { account, estimate, reason, state } => {
                let token = tx.new_token().map_err(&e)?;
                insert_job(&tx, &token, &account, req, estimate, Money::ZERO, state, Some(&reason), Some(meta), now)
                    .map_err(&e)?;
                Decision::Hold { token, estimate, reason }
            }
        };
        tx.commit()?;
        Ok(decision)
    }
}

/// Refuses a job whose metadata does not fit: an unknown, closed or foreign grant, or
/// a `max_cost` below the estimate.
pub(super) fn check_metadata(tx: &Tx<'_>, verdict: &Verdict, meta: &JobMetadata) -> rusqlite::Result<Option<Decision>> {
    let (account, estimate) = match verdict {
        Verdict::Fits { account, estimate, .. } | Verdict::Held { account, estimate, .. } => (account, *estimate),
        Verdict::Done(_) => return Ok(None),
    };
    let reject =
        |reason: String| Some(Decision::Reject { reason, refusal: Refusal::BudgetRule, estimate: Some(estimate) });
    if let Some(max) = meta.max_cost() {
        if estimate > max {
            return Ok(reject(format!(
                "asbb: estimate {estimate} is above your max_cost {max}; request less time or fewer resources, or raise max_cost"
            )));
        }
    }
    if let Some(number) = &meta.grant_number {
        let has_grants: bool = tx
            .tx
            .prepare_cached("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'grant_accounts'")?
            .exists([])?;
        let grant: Option<(String, Option<i64>)> = if has_grants {
            tx.tx
                .prepare_cached("SELECT status, budget_account_id FROM grant_accounts WHERE grant_number = ?1")?
                .query_row([number], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()?
        } else {
            None
        };
        match grant {
            None => return Ok(reject(format!("asbb: grant '{number}' is not known to asbb; check the grant number"))),
            Some((status, _)) if status != "active" => {
                return Ok(reject(format!("asbb: grant '{number}' is {status}; no new jobs can be charged to it")))
            }
            Some((_, funded)) if funded != Some(account.id) => {
                return Ok(reject(format!("asbb: grant '{number}' does not fund account '{}'", account.name)))
            }
            Some(_) => {}
        }
    }
    Ok(None)
}

// `Fits::hold` is what to hold: `learning::hold_for` of the estimate.
pub(super) enum Verdict {
    Done(Decision),
    Fits { account: AccountRow, estimate: Money, hold: Money, available: Money },
    Held { account: AccountRow, estimate: Money, reason: String, state: JobState },
}

/// The decision rule, shared by quote, check_and_hold and a release re-check.
pub(super) fn decide(
    config: &Config,
    tx: &Tx<'_>,
    req: &JobRequest,
    domain: &str,
    now: i64,
    skip_approval: bool,
) -> Result<Verdict, BudgetError> {
    if let Some(reason) = config.exemption(&req.account, &[&req.partition]) {
        return Ok(Verdict::Done(Decision::Exempt { reason }));
    }
    let estimate = match cost::estimate(config, req) {
        Ok(m) => m,
        Err(CostError::UnpricedPartition(p)) => {
            return Ok(Verdict::Done(match config.policy.unpriced_partition {
                MissingPolicy::Exempt => Decision::Exempt { reason: format!("partition {p} has no price") },
                MissingPolicy::Reject => Decision::Reject {
                    reason: format!(
                    "asbb: partition '{p}' has no price in asbb; ask your admins to add it or use another partition"
                ),
                    refusal: Refusal::BadRequest,
                    estimate: None,
                },
            }))
        }
        Err(err) => {
            return Ok(Verdict::Done(Decision::Reject {
                reason: format!("asbb: {err}"),
                refusal: Refusal::BadRequest,
                estimate: None,
            }))
        }
    };
    let ledger_err = |source: rusqlite::Error| BudgetError::Ledger(tx.err(source));
    let account = match tx.account_by_name(&req.account).map_err(ledger_err)? {
        Some(a) => a,
        None => {
            return Ok(Verdict::Done(match config.policy.unknown_account {
                MissingPolicy::Exempt => Decision::Exempt { reason: format!("account {} has no budget", req.account) },
                MissingPolicy::Reject => Decision::Reject {
                    reason: format!(
                        "asbb: account '{}' has no budget in asbb; ask your admins to create one",
                        req.account
                    ),
                    refusal: Refusal::UnknownAccount,
                    estimate: Some(estimate),
                },
            }))
        }
    };
    if account.status != "active" {
        return Ok(Verdict::Done(Decision::Reject {
            reason: format!("asbb: account '{}' is {}; no new jobs can be charged to it", account.name, account.status),
            refusal: Refusal::BudgetRule,
            estimate: Some(estimate),
        }));
    }
    let allocs = tx.allocations(account.id).map_err(ledger_err)?;
    let available = available_of(&account, &allocs, now);
    if let Some(threshold) = config.approval_threshold_for(&account.name).filter(|_| !skip_approval) {
        if estimate > threshold {
            let reason = format!("asbb: needs approval, estimate {estimate} > {threshold}");
            return Ok(Verdict::Held { account, estimate, reason, state: JobState::AwaitingApproval });
        }
    }
    // The decision compares the hold (the estimate unless learning sized it) with available.
    let hold =
        crate::core::pricing::learning::hold_for(tx, account.id, &req.partition, domain, estimate, &config.learning)
            .map_err(ledger_err)?;
    if hold <= available {
        return Ok(Verdict::Fits { account, estimate, hold, available });
    }
    // Short now; does an allocation start soon that would cover it?
    let hold_days = config.low_balance_hold_days_for(&account.name);
    if hold_days > 0 {
        let horizon = now + hold_days as i64 * DAY_S;
        if let Some(next) =
            allocs.iter().filter(|a| a.valid_from > now && a.valid_from <= horizon).min_by_key(|a| a.valid_from)
        {
            if available.micros() + next.remaining().micros() >= hold.micros() {
                let reason = format!(
                    "asbb: account '{}' is short of funds (needs {estimate}, {} available); held until the allocation starting {}",
                    account.name,
                    available.max(Money::ZERO),
                    format_date(next.valid_from)
                );
                return Ok(Verdict::Held { account, estimate, reason, state: JobState::AwaitingFunds });
            }
        }
    }
    Ok(Verdict::Done(Decision::Reject {
        reason: format!(
            "asbb: account '{}' cannot cover this job: needs {estimate}, {} available; ask your PI for funds or request less time or fewer resources",
            account.name,
            available.max(Money::ZERO)
        ),
        refusal: Refusal::BudgetRule,
        estimate: Some(estimate),
    }))
}

#[allow(clippy::too_many_arguments)]
pub(super) fn insert_job(
    tx: &Tx<'_>,
    token: &str,
    account: &AccountRow,
    req: &JobRequest,
    estimate: Money,
    held: Money,
    state: JobState,
    reason: Option<&str>,
    meta: Option<&JobMetadata>,
    now: i64,
) -> rusqlite::Result<()> {
    let request_json = serde_json::to_string(req).unwrap_or_else(|_| "{}".into());
    // The metadata goes in with the row: a second UPDATE would write the page twice.
    let meta = meta.filter(|m| !m.is_empty());
    let metadata_json = meta.map(|m| serde_json::to_string(m).unwrap_or_else(|_| "{}".into()));
    tx.tx
        .prepare_cached(
            "INSERT INTO jobs (token, account_id, user_name, uid, partition, job_id, job_name, request_json, estimate_micros,
               tasks_total, state, reason, submitted_at, held_micros, hold_placed_micros,
               research_domain, project_code, grant_number, metadata_json)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?14, ?15, ?16, ?17, ?18)",
        )?
        .execute(params![
            token,
            account.id,
            req.user,
            req.uid,
            req.partition,
            req.job_id,
            req.job_name,
            request_json,
            estimate.micros(),
            req.array_tasks.max(1),
            state,
            reason,
            now,
            held.micros(),
            meta.and_then(|m| m.research_domain.as_deref()),
            meta.and_then(|m| m.project_code.as_deref()),
            meta.and_then(|m| m.grant_number.as_deref()),
            metadata_json,
        ])?;
    // Usually there already: then this reads a page and writes none.
    tx.tx
        .prepare_cached("INSERT OR IGNORE INTO account_job_users (uid, account_id) VALUES (?1, ?2)")?
        .execute(params![req.uid, account.id])?;
    Ok(())
}
