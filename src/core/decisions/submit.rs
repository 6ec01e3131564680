// SPDX-License-Identifier: GPL-2.0-or-later
//! The submit path: price a request, decide (fits, held, refused), place the hold.

use super::*;

impl Budget {
    /// Prices and decides without writing anything (a quote).
    pub fn quote(&mut self, req: &JobRequest, now: i64) -> Result<Decision, BudgetError> {
        Ok(self.quote_with_hold(req, &JobMetadata::default(), now)?.0)
    }

    /// [`Self::quote`] for a job that carries metadata (its grant, `max_cost` and
    /// learning group apply as at submit) and, for a job that fits, the hold submit
    /// would place (learning may size it below the estimate).
    pub fn quote_with_hold(
        &mut self,
        req: &JobRequest,
        meta: &JobMetadata,
        now: i64,
    ) -> Result<(Decision, Option<Money>), BudgetError> {
        let tx = Tx::read(&mut self.ledger)?;
        let domain = meta.research_domain.as_deref().unwrap_or("");
        let ask = GrantAsk::of(&self.config, &req.account, meta.grant_number.as_deref());
        let verdict = decide(&self.config, &tx, &mut ReadCache::default(), req, domain, ask, now, false)?;
        if let Some(refusal) = check_metadata(&verdict, meta) {
            return Ok((refusal, None));
        }
        Ok(match verdict {
            Verdict::Done(d) => (d, None),
            Verdict::Fits { estimate, hold, available, .. } => {
                let available_after = available.checked_sub(hold).ok_or(BudgetError::Overflow)?;
                (Decision::Accept { token: String::new(), estimate, available_after }, Some(hold))
            }
            Verdict::Held { estimate, reason, .. } => (Decision::Hold { token: String::new(), estimate, reason }, None),
        })
    }

    /// The plugin's decision: accept (hold written), hold, or reject, in one short
    /// write transaction.
    pub fn check_and_hold(&mut self, req: &JobRequest, now: i64) -> Result<Decision, BudgetError> {
        self.submit(req, &JobMetadata::default(), now)
    }

    /// `check_and_hold` for a job that carries metadata: a named grant (or the
    /// account's default grant) must exist, be open, fund the job's account and cover
    /// the job; `max_cost` must cover the estimate.
    pub fn submit(&mut self, req: &JobRequest, meta: &JobMetadata, now: i64) -> Result<Decision, BudgetError> {
        // On PostgreSQL, while nobody else has written the ledger since this
        // connection's last decision, decide from what that one read and commit in one
        // round trip. If somebody has, that commit writes nothing, and the job is
        // decided again under the write lock.
        if let Some(clock) = self.reads.clock(self.ledger.change_count()) {
            match self.submit_in(Some(clock), req, meta, now) {
                Err(BudgetError::Ledger(e)) if e.is_changed() => {}
                decided => return decided,
            }
        }
        self.submit_in(None, req, meta, now)
    }

    /// [`Self::submit`] in a write transaction (`optimistic`: `None`), or in an
    /// optimistic one from what the ledger was at that clock.
    fn submit_in(
        &mut self,
        optimistic: Option<i64>,
        req: &JobRequest,
        meta: &JobMetadata,
        now: i64,
    ) -> Result<Decision, BudgetError> {
        let tx = match optimistic {
            Some(clock) => Tx::optimistic(&mut self.ledger, clock)?,
            None => Tx::write(&mut self.ledger)?,
        };
        // What the last submission read stays good while nothing else wrote the ledger.
        let reads = &mut self.reads;
        reads.begin(&tx)?;
        let domain = meta.research_domain.as_deref().unwrap_or("");
        let ask = GrantAsk::of(&self.config, &req.account, meta.grant_number.as_deref());
        let verdict = decide(&self.config, &tx, reads, req, domain, ask, now, false)?;
        // A decision that writes nothing still commits: an optimistic one so learns
        // that what it read is still true.
        if let Some(refusal) = check_metadata(&verdict, meta) {
            tx.commit()?;
            reads.unchanged();
            return Ok(refusal);
        }
        let (account, estimate, hold, grant, outcome) = match verdict {
            Verdict::Done(d) => {
                tx.commit()?;
                reads.unchanged();
                return Ok(d);
            }
            // Hold `hold` (= the estimate unless [learning] sized it down).
            Verdict::Fits { account, estimate, hold, available, grant } => {
                let available_after = available.checked_sub(hold).ok_or(BudgetError::Overflow)?;
                (account, estimate, hold, grant, Ok(available_after))
            }
            Verdict::Held { account, estimate, reason, state, grant } => {
                (account, estimate, Money::ZERO, grant, Err((state, reason)))
            }
        };
        let (token, token_count) = reads.new_token(&tx)?;
        // The job's row and hold go with the commit (on PostgreSQL, one round trip).
        tx.defer_writes();
        let grant = grant.as_ref().map(|g| g.number.as_str());
        let row = NewJob {
            token: &token,
            account_id: account.id,
            req,
            estimate,
            held: hold,
            grant,
            meta: Some(meta),
            user_known: self.known_job_users.contains(&(req.uid, account.id)),
            cluster: self.cluster.as_deref(),
        };
        let decision = match outcome {
            Ok(available_after) => {
                tx.insert_job(&row, JobState::Held, None, now)?;
                postings::hold(&tx, &token, account.id, grant, hold, req.job_id, now, "submit")?;
                Decision::Accept { token: token.clone(), estimate, available_after }
            }
            Err((state, reason)) => {
                tx.insert_job(&row, state, Some(&reason), now)?;
                Decision::Hold { token: token.clone(), estimate, reason }
            }
        };
        tx.commit()?;
        self.known_job_users.insert((req.uid, account.id));
        let changes = self.ledger.change_count();
        self.reads.placed(token_count, &account.name, grant, hold, changes);
        Ok(decision)
    }
}

/// Refuses a job whose `max_cost` is below its estimate.
pub(super) fn check_metadata(verdict: &Verdict, meta: &JobMetadata) -> Option<Decision> {
    let estimate = match verdict {
        Verdict::Fits { estimate, .. } | Verdict::Held { estimate, .. } => *estimate,
        Verdict::Done(_) => return None,
    };
    let max = meta.max_cost()?;
    (estimate > max).then(|| Decision::Reject {
        reason: format!(
            "asbb: estimate {estimate} is above your max_cost {max}; request less time or fewer resources, or raise max_cost"
        ),
        refusal: Refusal::BudgetRule,
        estimate: Some(estimate),
    })
}

/// The grant a job is to be held and charged against: the one it names, else its
/// account's default (`[accounts.<name>] default_grant`).
#[derive(Debug, Clone, Copy)]
pub(super) struct GrantAsk<'a> {
    number: &'a str,
    /// Not named by the job: its account's default.
    by_default: bool,
}

impl<'a> GrantAsk<'a> {
    pub(super) fn of(config: &'a Config, account: &str, named: Option<&'a str>) -> Option<GrantAsk<'a>> {
        match named {
            Some(number) => Some(GrantAsk { number, by_default: false }),
            None => config.default_grant_for(account).map(|number| GrantAsk { number, by_default: true }),
        }
    }

    /// The grant a stored job was priced against (named or default alike).
    pub(super) fn stored(number: Option<&'a str>) -> Option<GrantAsk<'a>> {
        number.map(|number| GrantAsk { number, by_default: false })
    }

    /// How a refusal names the grant.
    fn named(&self, account: &str) -> String {
        if self.by_default {
            format!("grant '{}', the default grant of account '{account}',", self.number)
        } else {
            format!("grant '{}'", self.number)
        }
    }

    /// The grant as found (`found`), if it may fund a job in `account`; otherwise why
    /// not.
    fn check(&self, found: Option<GrantFunds>, account: &AccountRow) -> Result<GrantFunds, String> {
        let named = self.named(&account.name);
        let fix = if self.by_default {
            "; name another grant with --comment asbb:grant=NUMBER, or ask your admins to change the default"
        } else {
            ""
        };
        match found {
            None if self.by_default => Err(format!("asbb: {named} is not known to asbb{fix}")),
            None => Err(format!("asbb: {named} is not known to asbb; check the grant number")),
            Some(g) if g.status != "active" => {
                Err(format!("asbb: {named} is {}; no new jobs can be charged to it{fix}", g.status))
            }
            Some(g) if g.account_id != Some(account.id) => {
                Err(format!("asbb: {named} does not fund account '{}'{fix}", account.name))
            }
            Some(g) => Ok(g),
        }
    }
}

// `Fits::hold` is what to hold: `learning::hold_for` of the estimate.
// `grant`: the grant the job is held and charged against, if any.
pub(super) enum Verdict {
    Done(Decision),
    Fits { account: AccountRow, estimate: Money, hold: Money, available: Money, grant: Option<GrantFunds> },
    Held { account: AccountRow, estimate: Money, reason: String, state: JobState, grant: Option<GrantFunds> },
}

/// What a decision reads of the ledger for one job: its account, the grant it asks for
/// (as found, if it asks for one), the account's allocations, and what to hold
/// (`learning::hold_for` of the estimate).
pub(super) struct Standing<'a> {
    pub account: AccountRow,
    pub grant: Option<(GrantAsk<'a>, Option<GrantFunds>)>,
    pub allocations: Vec<AllocationRow>,
    pub hold: Money,
}

/// The decision, shared by quote, check_and_hold, a release re-check and a re-run:
/// [`price`] the request, read the job's [`Standing`] (through `reads`), then [`judge`].
#[allow(clippy::too_many_arguments)]
pub(super) fn decide(
    config: &Config,
    tx: &Tx<'_>,
    reads: &mut ReadCache,
    req: &JobRequest,
    domain: &str,
    grant: Option<GrantAsk<'_>>,
    now: i64,
    skip_approval: bool,
) -> Result<Verdict, BudgetError> {
    let estimate = match price(config, req) {
        Ok(estimate) => estimate,
        Err(done) => return Ok(Verdict::Done(done)),
    };
    let Some(account) = reads.account(tx, &req.account)? else {
        return Ok(Verdict::Done(unknown_account(config, &req.account, estimate)));
    };
    let grant = match grant {
        Some(ask) => Some((ask, reads.grant_funds(tx, ask.number)?)),
        None => None,
    };
    let allocations = reads.allocations(tx, account.id)?;
    let hold = reads.hold_for(tx, account.id, &req.partition, domain, estimate, &config.learning)?;
    Ok(judge(config, estimate, Standing { account, grant, allocations, hold }, now, skip_approval))
}

/// The request's estimate; or, for a request asbb does not charge or cannot price,
/// the decision. Reads nothing.
fn price(config: &Config, req: &JobRequest) -> Result<Money, Decision> {
    if let Some(reason) = config.exemption(&req.account, &[&req.partition]) {
        return Err(Decision::Exempt { reason });
    }
    match cost::estimate(config, req) {
        Ok(m) => Ok(m),
        Err(CostError::UnpricedPartition(p)) => Err(match config.policy.unpriced_partition {
            MissingPolicy::Exempt => Decision::Exempt { reason: format!("partition {p} has no price") },
            MissingPolicy::Reject => Decision::Reject {
                reason: format!(
                    "asbb: partition '{p}' has no price in asbb; ask your admins to add it or use another partition"
                ),
                refusal: Refusal::BadRequest,
                estimate: None,
            },
        }),
        Err(err) => {
            Err(Decision::Reject { reason: format!("asbb: {err}"), refusal: Refusal::BadRequest, estimate: None })
        }
    }
}

/// The decision for a job in an account the ledger does not have.
fn unknown_account(config: &Config, account: &str, estimate: Money) -> Decision {
    match config.policy.unknown_account {
        MissingPolicy::Exempt => Decision::Exempt { reason: format!("account {account} has no budget") },
        MissingPolicy::Reject => Decision::Reject {
            reason: format!("asbb: account '{account}' has no budget in asbb; ask your admins to create one"),
            refusal: Refusal::UnknownAccount,
            estimate: Some(estimate),
        },
    }
}

/// The decision rule itself, over the job's estimate and [`Standing`]: it reads and
/// writes nothing. `skip_approval`: an admin approved the job.
pub(super) fn judge(
    config: &Config,
    estimate: Money,
    standing: Standing<'_>,
    now: i64,
    skip_approval: bool,
) -> Verdict {
    let Standing { account, grant, allocations: allocs, hold } = standing;
    if account.status != "active" {
        return Verdict::Done(Decision::Reject {
            reason: format!("asbb: account '{}' is {}; no new jobs can be charged to it", account.name, account.status),
            refusal: Refusal::BudgetRule,
            estimate: Some(estimate),
        });
    }
    let grant = match grant {
        None => None,
        Some((ask, found)) => match ask.check(found, &account) {
            Ok(g) => Some((ask, g)),
            Err(reason) => {
                return Verdict::Done(Decision::Reject {
                    reason,
                    refusal: Refusal::BudgetRule,
                    estimate: Some(estimate),
                })
            }
        },
    };
    let account_available = available_of(&account, &allocs, now);
    // A job held against a grant fits only in what is left of that grant.
    let grant_available = grant.as_ref().map(|(_, g)| grant_available_of(g, &allocs, now));
    let available = grant_available.map_or(account_available, |g| g.min(account_available));
    let (ask, grant) = match grant {
        Some((ask, g)) => (Some(ask), Some(g)),
        None => (None, None),
    };
    if let Some(threshold) = config.approval_threshold_for(&account.name).filter(|_| !skip_approval) {
        if estimate > threshold {
            let reason = format!("asbb: needs approval, estimate {estimate} > {threshold}");
            return Verdict::Held { account, estimate, reason, state: JobState::AwaitingApproval, grant };
        }
    }
    // The decision compares the hold (the estimate unless learning sized it) with available.
    if hold <= available {
        return Verdict::Fits { account, estimate, hold, available, grant };
    }
    // Which money is short: the grant's (when it is the smaller) or the account's.
    let short_grant = match (ask, grant_available) {
        (Some(ask), Some(g)) if g < account_available => Some(ask),
        _ => None,
    };
    // Short now; does an allocation (of the grant, for a job held against one) start
    // soon that would cover it?
    let hold_days = config.low_balance_hold_days_for(&account.name);
    if hold_days > 0 {
        let horizon = now + hold_days as i64 * DAY_S;
        if let Some(next) = allocs
            .iter()
            .filter(|a| grant.as_ref().map_or(true, |g| a.grant_id == Some(g.id)))
            .filter(|a| a.valid_from > now && a.valid_from <= horizon)
            .min_by_key(|a| a.valid_from)
        {
            // Summed in i128: no allocation size can overflow the comparison.
            if available.micros() as i128 + next.remaining().micros() as i128 >= hold.micros() as i128 {
                let short = match short_grant {
                    Some(ask) => {
                        format!("{} is short of funds for account '{}'", ask.named(&account.name), account.name)
                    }
                    None => format!("account '{}' is short of funds", account.name),
                };
                let reason = format!(
                    "asbb: {short} (needs {estimate}, {} available); held until the allocation starting {}",
                    available.max(Money::ZERO),
                    format_date(next.valid_from)
                );
                return Verdict::Held { account, estimate, reason, state: JobState::AwaitingFunds, grant };
            }
        }
    }
    let reason = match short_grant {
        Some(ask) => format!(
            "asbb: {} cannot cover this job: needs {estimate}, {} of it available to account '{}'; ask your PI for funds or request less time or fewer resources",
            ask.named(&account.name),
            available.max(Money::ZERO),
            account.name
        ),
        None => format!(
            "asbb: account '{}' cannot cover this job: needs {estimate}, {} available; ask your PI for funds or request less time or fewer resources",
            account.name,
            available.max(Money::ZERO)
        ),
    };
    Verdict::Done(Decision::Reject { reason, refusal: Refusal::BudgetRule, estimate: Some(estimate) })
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = DAY_S;
    const NOW: i64 = 1_800_000_000;

    fn config(extra: &str) -> Config {
        Config::parse(&format!("ledger = \"/nonexistent\"\n{extra}\n[partitions.debug.rates]\ncpu = 1.0\n"), "t.toml")
            .expect("config")
    }

    fn account(status: &str) -> AccountRow {
        AccountRow {
            id: 7,
            name: "chem".into(),
            status: status.into(),
            credit_limit: Money::ZERO,
            description: None,
            created_at: 0,
            held: Money::from_micros(2_000_000),
            overdraft: Money::ZERO,
        }
    }

    fn allocation(id: i64, amount: i64, valid_from: i64, grant_id: Option<i64>) -> AllocationRow {
        AllocationRow {
            id,
            account_id: 7,
            amount: Money::from_micros(amount),
            valid_from,
            valid_until: valid_from + 365 * DAY,
            memo: None,
            debited: Money::ZERO,
            grant_id,
        }
    }

    fn standing(status: &str, allocations: Vec<AllocationRow>, hold: i64) -> Standing<'static> {
        Standing { account: account(status), grant: None, allocations, hold: Money::from_micros(hold) }
    }

    fn dollars(d: i64) -> Money {
        Money::from_micros(d * 1_000_000)
    }

    #[test]
    fn a_job_fits_in_what_is_left_after_the_open_holds() {
        // $10 allocated, $2 held: a $8 hold fits exactly, $8.000001 does not.
        let fits = judge(
            &config(""),
            dollars(8),
            standing("active", vec![allocation(1, 10_000_000, NOW - DAY, None)], 8_000_000),
            NOW,
            false,
        );
        assert!(matches!(fits, Verdict::Fits { available, .. } if available == dollars(8)));
        let short = judge(
            &config(""),
            dollars(9),
            standing("active", vec![allocation(1, 10_000_000, NOW - DAY, None)], 8_000_001),
            NOW,
            false,
        );
        match short {
            Verdict::Done(Decision::Reject { reason, refusal: Refusal::BudgetRule, .. }) => assert_eq!(
                reason,
                "asbb: account 'chem' cannot cover this job: needs $9.00, $8.00 available; ask your PI for funds or request less time or fewer resources"
            ),
            _ => panic!("a hold above what is available is refused"),
        }
    }

    #[test]
    fn a_closed_account_refuses_whatever_it_holds() {
        let v = judge(
            &config(""),
            dollars(1),
            standing("closed", vec![allocation(1, 100_000_000, NOW - DAY, None)], 1),
            NOW,
            false,
        );
        assert!(
            matches!(v, Verdict::Done(Decision::Reject { ref reason, .. }) if reason == "asbb: account 'chem' is closed; no new jobs can be charged to it")
        );
    }

    #[test]
    fn the_approval_threshold_holds_a_job_unless_an_admin_approved_it() {
        let cfg = config("[policy]\napproval_threshold = \"5.00\"");
        let alloc = || vec![allocation(1, 100_000_000, NOW - DAY, None)];
        let held = judge(&cfg, dollars(6), standing("active", alloc(), 6_000_000), NOW, false);
        assert!(matches!(held, Verdict::Held { state: JobState::AwaitingApproval, ref reason, .. }
            if reason == "asbb: needs approval, estimate $6.00 > $5.00"));
        let approved = judge(&cfg, dollars(6), standing("active", alloc(), 6_000_000), NOW, true);
        assert!(matches!(approved, Verdict::Fits { .. }));
    }

    #[test]
    fn a_short_job_waits_for_an_allocation_that_starts_within_the_hold_days() {
        let cfg = config("[policy]\nlow_balance_hold_days = 30");
        let allocs = vec![allocation(1, 3_000_000, NOW - DAY, None), allocation(2, 50_000_000, NOW + 10 * DAY, None)];
        match judge(&cfg, dollars(5), standing("active", allocs, 5_000_000), NOW, false) {
            Verdict::Held { state: JobState::AwaitingFunds, reason, .. } => assert_eq!(
                reason,
                format!(
                    "asbb: account 'chem' is short of funds (needs $5.00, $1.00 available); held until the allocation starting {}",
                    format_date(NOW + 10 * DAY)
                )
            ),
            _ => panic!("held for the coming allocation"),
        }
        // Beyond the horizon: refused.
        let late = vec![allocation(1, 3_000_000, NOW - DAY, None), allocation(2, 50_000_000, NOW + 40 * DAY, None)];
        assert!(matches!(judge(&cfg, dollars(5), standing("active", late, 5_000_000), NOW, false), Verdict::Done(_)));
    }

    #[test]
    fn a_grant_must_be_open_and_fund_the_account() {
        let grant = |status: &str, account_id: Option<i64>| GrantFunds {
            id: 3,
            number: "NSF-1".into(),
            status: status.into(),
            account_id,
            held: Money::ZERO,
        };
        let ask = GrantAsk { number: "NSF-1", by_default: false };
        let with = |found: Option<GrantFunds>| Standing {
            grant: Some((ask, found)),
            ..standing("active", vec![allocation(1, 100_000_000, NOW - DAY, Some(3))], 1_000_000)
        };
        let reason = |v: Verdict| match v {
            Verdict::Done(Decision::Reject { reason, .. }) => reason,
            _ => panic!("refused"),
        };
        let cfg = config("");
        assert_eq!(
            reason(judge(&cfg, dollars(1), with(None), NOW, false)),
            "asbb: grant 'NSF-1' is not known to asbb; check the grant number"
        );
        assert_eq!(
            reason(judge(&cfg, dollars(1), with(Some(grant("closed", Some(7)))), NOW, false)),
            "asbb: grant 'NSF-1' is closed; no new jobs can be charged to it"
        );
        assert_eq!(
            reason(judge(&cfg, dollars(1), with(Some(grant("active", Some(8)))), NOW, false)),
            "asbb: grant 'NSF-1' does not fund account 'chem'"
        );
        assert!(matches!(
            judge(&cfg, dollars(1), with(Some(grant("active", Some(7)))), NOW, false),
            Verdict::Fits { .. }
        ));
    }

    /// A run of submissions decides from what the first read, and still sees every
    /// change another connection (an admin's deposit, another plugin's hold) or this one
    /// (a release) makes in between.
    #[test]
    fn submissions_reuse_their_reads_until_the_ledger_changes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("l.db");
        let cfg = config("");
        let open = |mode| Budget::with_ledger(cfg.clone(), Ledger::open(&path, mode, 1000).unwrap());
        let mut admin = open(OpenMode::CreateIfMissing);
        admin.create_account("chem", dollars(10), NOW - DAY, FOREVER, Money::ZERO, "t", NOW).unwrap();
        let mut plugin = open(OpenMode::MustExist);
        let mut other = open(OpenMode::MustExist);
        // 1 CPU for 60 minutes at $1/CPU-hour: $1 a job.
        let req = JobRequest {
            user: "u".into(),
            uid: 1000,
            account: "chem".into(),
            partition: "debug".into(),
            resources: crate::core::pricing::job::Resources { nodes: 1, cpus: 1, mem_mb: 0, gpus: Default::default() },
            time_limit_min: 60,
            array_tasks: 1,
            qos: None,
            job_id: None,
            job_name: None,
        };
        let available_after = |d: Decision| match d {
            Decision::Accept { available_after, .. } => available_after,
            other => panic!("accepted: {other:?}"),
        };
        let mut tokens = Vec::new();
        for left in [9, 8, 7] {
            let d = plugin.check_and_hold(&req, NOW).unwrap();
            if let Decision::Accept { token, .. } = &d {
                tokens.push(token.clone());
            }
            assert_eq!(available_after(d), dollars(left));
        }
        assert_eq!(plugin.read_cache_hits(), 2, "the second and third decided from the first's reads");
        // Another plugin's hold and an admin's deposit, on their own connections.
        assert_eq!(available_after(other.check_and_hold(&req, NOW).unwrap()), dollars(6));
        admin.deposit("chem", dollars(5), NOW - DAY, FOREVER, None, None, "t", NOW).unwrap();
        assert_eq!(available_after(plugin.check_and_hold(&req, NOW).unwrap()), dollars(10));
        assert_eq!(plugin.read_cache_hits(), 2, "the ledger changed: read again");
        // This connection's own release.
        plugin.release(&tokens[0], NOW).unwrap();
        assert_eq!(available_after(plugin.check_and_hold(&req, NOW).unwrap()), dollars(10));
        assert_eq!(available_after(plugin.check_and_hold(&req, NOW).unwrap()), dollars(9));
        assert_eq!(plugin.read_cache_hits(), 3);
        // A refusal writes nothing and keeps the reads.
        let big = JobRequest { time_limit_min: 60 * 100, ..req.clone() };
        assert!(matches!(plugin.check_and_hold(&big, NOW).unwrap(), Decision::Reject { .. }));
        assert_eq!(available_after(plugin.check_and_hold(&req, NOW).unwrap()), dollars(8));
        assert_eq!(plugin.read_cache_hits(), 5);
        // Tokens still count 1, 2, 3... across connections: none repeated, none skipped.
        let counts: Vec<u64> = admin
            .ledger
            .connection()
            .prepare("SELECT token FROM jobs ORDER BY token")
            .unwrap()
            .query_map([], |r| r.get::<_, String>(0))
            .unwrap()
            .map(|t| u64::from_str_radix(&t.unwrap()[..10], 16).unwrap())
            .collect();
        assert_eq!(counts, (1..=counts.len() as u64).collect::<Vec<_>>());
        assert!(admin.verify().unwrap().is_clean());
    }
}
