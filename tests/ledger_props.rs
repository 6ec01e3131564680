// SPDX-License-Identifier: GPL-2.0-or-later
//! Property tests on a real (in-memory) SQLite ledger: random sequences of deposits,
//! checks, modifies, reconciles (duplicated and reordered) and releases. After every
//! step `verify` is clean, and an independent oracle agrees on the money: every
//! deposit is there, every run is charged exactly its cost once, and when every job
//! is finished no cent is left held.

use asbb::core::config::Config;
use asbb::core::decisions::{Budget, Decision, Modified, Reconciled, FOREVER};
use asbb::core::ledger::{Ledger, OpenMode};
use asbb::core::money::Money;
use asbb::core::pricing::cost;
use asbb::core::pricing::job::{EndState, JobCompletion, JobRequest, Resources};
use proptest::prelude::*;
use std::collections::{BTreeMap, BTreeSet};

const ACCOUNTS: [&str; 3] = ["chem", "phys", "bio"];

fn config() -> Config {
    Config::parse(
        r#"
[policy]
minimum_charge = "0.01"
[partitions.debug.rates]
cpu = 0.02
mem_gb = 0.005
"gres/gpu" = 1.0
[partitions.aws.aws]
instance_type = "c5.large"
node_hour = 0.085
"#,
        "props.toml",
    )
    .unwrap()
}

#[derive(Debug, Clone)]
enum Op {
    Deposit {
        account: usize,
        dollars: u32,
    },
    Submit {
        account: usize,
        aws: bool,
        cpus: u32,
        minutes: u32,
        tasks: u32,
        gpus: u32,
    },
    Modify {
        job: usize,
        minutes: u32,
    },
    /// End task `task` of job `job` after `used_pct` of its time limit, run `run`.
    Complete {
        job: usize,
        task: u32,
        used_pct: u32,
        run: u32,
        ran: bool,
    },
    /// Replay an earlier completion event.
    Replay {
        event: usize,
    },
    Release {
        job: usize,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0..3usize, 1..2000u32).prop_map(|(account, dollars)| Op::Deposit { account, dollars }),
        (0..3usize, any::<bool>(), 1..64u32, 1..600u32, 1..4u32, 0..3u32).prop_map(
            |(account, aws, cpus, minutes, tasks, gpus)| Op::Submit { account, aws, cpus, minutes, tasks, gpus }
        ),
        (0..40usize, 1..900u32).prop_map(|(job, minutes)| Op::Modify { job, minutes }),
        (0..40usize, 0..4u32, 0..150u32, 0..2u32, any::<bool>())
            .prop_map(|(job, task, used_pct, run, ran)| Op::Complete { job, task, used_pct, run, ran }),
        (0..60usize).prop_map(|event| Op::Replay { event }),
        (0..40usize).prop_map(|job| Op::Release { job }),
    ]
}

struct Job {
    token: String,
    req: JobRequest,
}

/// What the oracle knows, computed without the ledger.
#[derive(Default)]
struct Oracle {
    deposits: BTreeMap<String, i64>,
    /// Run keys already charged, and what each cost.
    runs: BTreeMap<String, i64>,
}

fn totals(b: &Budget, account: &str) -> (i64, i64, i64) {
    let conn = rusqlite_conn(b);
    conn.query_row(
        "SELECT
           coalesce((SELECT sum(amount_micros) FROM allocations WHERE account_id = a.id), 0),
           coalesce((SELECT sum(debited_micros) FROM allocations WHERE account_id = a.id), 0) + a.overdraft_micros,
           a.held_micros
         FROM accounts a WHERE a.name = ?1",
        [account],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
    )
    .unwrap()
}

fn rusqlite_conn(b: &Budget) -> &rusqlite::Connection {
    b.ledger.connection()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, .. ProptestConfig::default() })]

    #[test]
    fn no_cent_created_or_lost(ops in proptest::collection::vec(op(), 1..60)) {
        let cfg = config();
        let mut budget = Budget::with_ledger(cfg.clone(), Ledger::in_memory().unwrap());
        let mut oracle = Oracle::default();
        let now = 1_780_000_000i64;
        for a in ACCOUNTS {
            budget.create_account(a, Money::from_dollars(100).unwrap(), now - 86_400, FOREVER, Money::ZERO, "test", now).unwrap();
            oracle.deposits.insert(a.to_string(), 100_000_000);
        }
        let mut jobs: Vec<Job> = Vec::new();
        let mut events: Vec<JobCompletion> = Vec::new();
        for (step, op) in ops.into_iter().enumerate() {
            let t = now + step as i64 * 60;
            match op {
                Op::Deposit { account, dollars } => {
                    let amount = Money::from_dollars(dollars as i64).unwrap();
                    let key = format!("k{step}");
                    prop_assert!(budget.deposit(ACCOUNTS[account], amount, now - 86_400, FOREVER, None, Some(&key), "test", t).unwrap());
                    // A replayed request id changes nothing.
                    prop_assert!(!budget.deposit(ACCOUNTS[account], amount, now - 86_400, FOREVER, None, Some(&key), "test", t).unwrap());
                    *oracle.deposits.get_mut(ACCOUNTS[account]).unwrap() += amount.micros();
                }
                Op::Submit { account, aws, cpus, minutes, tasks, gpus } => {
                    let partition = if aws { "aws" } else { "debug" };
                    let req = JobRequest {
                        user: "u".into(), uid: 1000, account: ACCOUNTS[account].into(), partition: partition.into(),
                        resources: Resources { nodes: 1, cpus, mem_mb: 1024 * cpus as u64,
                            gpus: if gpus > 0 && !aws { BTreeMap::from([(String::new(), gpus)]) } else { BTreeMap::new() } },
                        time_limit_min: minutes, array_tasks: tasks, qos: None, job_id: None, job_name: None,
                    };
                    let (_, _, held_before) = totals(&budget, ACCOUNTS[account]);
                    match budget.check_and_hold(&req, t).unwrap() {
                        Decision::Accept { token, estimate, .. } => {
                            prop_assert_eq!(estimate, cost::estimate(&cfg, &req).unwrap());
                            let (_, _, held_after) = totals(&budget, ACCOUNTS[account]);
                            prop_assert_eq!(held_after - held_before, estimate.micros());
                            jobs.push(Job { token, req });
                        }
                        Decision::Reject { .. } => {
                            let (_, _, held_after) = totals(&budget, ACCOUNTS[account]);
                            prop_assert_eq!(held_after, held_before);
                        }
                        other => prop_assert!(false, "unexpected {:?}", other),
                    }
                }
                Op::Modify { job, minutes } => {
                    if let Some(j) = jobs.get_mut(job) {
                        let mut req = j.req.clone();
                        req.time_limit_min = minutes;
                        if let Modified::Repriced { .. } = budget.modify(&j.token, &req, false, false, t).unwrap() {
                            j.req = req;
                        }
                    }
                }
                Op::Complete { job, task, used_pct, run, ran } => {
                    if let Some(j) = jobs.get(job) {
                        let task = task % j.req.array_tasks;
                        let job_id = 10_000 + job as u32 * 10 + task;
                        let start = t - 3600;
                        let elapsed = (j.req.time_limit_min as i64 * 60 * used_pct as i64) / 100;
                        let c = JobCompletion {
                            cluster: "c1".into(), job_id, hold_token: Some(j.token.clone()), user: "u".into(),
                            account: j.req.account.clone(), partition: j.req.partition.clone(),
                            state: [EndState::Completed, EndState::NodeFail, EndState::Requeued][used_pct as usize % 3],
                            start_time: start + run as i64, end_time: start + run as i64 + if ran { elapsed } else { 0 },
                            allocated: ran.then(|| j.req.resources.clone()), task_count: 1,
                            submit_time: now, run_index: run, qos: None,
                        };
                        apply_completion(&mut budget, &cfg, &mut oracle, &c, t)?;
                        events.push(c);
                    }
                }
                Op::Replay { event } => {
                    if !events.is_empty() {
                        let c = events[event % events.len()].clone();
                        apply_completion(&mut budget, &cfg, &mut oracle, &c, t)?;
                    }
                }
                Op::Release { job } => {
                    if let Some(j) = jobs.get(job) {
                        budget.release(&j.token, t).unwrap();
                    }
                }
            }
            let report = budget.verify().unwrap();
            prop_assert!(report.is_clean(), "{:?}", report.problems);
            check_oracle(&budget, &oracle)?;
        }
        // Finish every job: nothing stays held.
        for j in &jobs {
            budget.release(&j.token, now + 1_000_000).unwrap();
        }
        for a in ACCOUNTS {
            let (_, _, held) = totals(&budget, a);
            prop_assert_eq!(held, 0, "{} still holds money", a);
        }
        let report = budget.verify().unwrap();
        prop_assert!(report.is_clean(), "{:?}", report.problems);
        check_oracle(&budget, &oracle)?;
    }
}

/// A request of op `Submit`'s fields.
fn request(account: usize, aws: bool, cpus: u32, minutes: u32, tasks: u32, gpus: u32) -> JobRequest {
    JobRequest {
        user: "u".into(),
        uid: 1000,
        account: ACCOUNTS[account].into(),
        partition: if aws { "aws" } else { "debug" }.into(),
        resources: Resources {
            nodes: 1,
            cpus,
            mem_mb: 1024 * cpus as u64,
            gpus: if gpus > 0 && !aws { BTreeMap::from([(String::new(), gpus)]) } else { BTreeMap::new() },
        },
        time_limit_min: minutes,
        array_tasks: tasks,
        qos: None,
        job_id: None,
        job_name: None,
    }
}

/// A decision without its token (a quote has none).
fn untokened(d: Decision) -> Decision {
    match d {
        Decision::Accept { estimate, available_after, .. } => {
            Decision::Accept { token: String::new(), estimate, available_after }
        }
        Decision::Hold { estimate, reason, .. } => Decision::Hold { token: String::new(), estimate, reason },
        other => other,
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, .. ProptestConfig::default() })]

    /// The submit path keeps what it read between calls (`ReadCache`). Two such
    /// connections (two plugins) and an admin's share one file; every operation runs on
    /// one of them, and before each submission the admin's connection quotes the same
    /// request from the file: the submission must decide exactly as that fresh read does.
    #[test]
    fn a_submission_decides_as_a_fresh_read_of_the_ledger_would(
        ops in proptest::collection::vec((op(), 0..3usize), 1..60)
    ) {
        let cfg = config();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger.db");
        let open = |mode| Budget::with_ledger(cfg.clone(), Ledger::open(&path, mode, 1000).unwrap());
        let mut admin = open(OpenMode::CreateIfMissing);
        let now = 1_780_000_000i64;
        for a in ACCOUNTS {
            admin.create_account(a, Money::from_dollars(20).unwrap(), now - 86_400, FOREVER, Money::ZERO, "test", now).unwrap();
        }
        let mut plugins = [open(OpenMode::MustExist), open(OpenMode::MustExist)];
        let mut tokens: Vec<(String, JobRequest)> = Vec::new();
        for (step, (op, on)) in ops.into_iter().enumerate() {
            let t = now + step as i64 * 60;
            let budget = if on == 2 { &mut admin } else { &mut plugins[on] };
            match op {
                Op::Deposit { account, dollars } => {
                    let amount = Money::from_dollars(dollars as i64 / 20 + 1).unwrap();
                    budget.deposit(ACCOUNTS[account], amount, now - 86_400, FOREVER, None, None, "test", t).unwrap();
                }
                Op::Submit { account, aws, cpus, minutes, tasks, gpus } => {
                    let req = request(account, aws, cpus, minutes, tasks, gpus);
                    let plugin = &mut plugins[on % 2];
                    let fresh = admin.quote(&req, t).unwrap();
                    let decided = plugin.check_and_hold(&req, t).unwrap();
                    if let Decision::Accept { token, .. } = &decided {
                        tokens.push((token.clone(), req.clone()));
                    }
                    prop_assert_eq!(untokened(decided), fresh);
                }
                Op::Modify { job, minutes } => {
                    if let Some((token, req)) = tokens.get(job) {
                        let mut req = req.clone();
                        req.time_limit_min = minutes;
                        budget.modify(token, &req, false, false, t).unwrap();
                    }
                }
                Op::Replay { .. } => {}
                Op::Complete { job, used_pct, .. } => {
                    if let Some((token, req)) = tokens.get(job) {
                        let elapsed = (req.time_limit_min as i64 * 60 * used_pct as i64) / 100;
                        let c = JobCompletion {
                            cluster: "c1".into(), job_id: 10_000 + job as u32, hold_token: Some(token.clone()),
                            user: "u".into(), account: req.account.clone(), partition: req.partition.clone(),
                            state: EndState::Completed, start_time: t - 3600, end_time: t - 3600 + elapsed,
                            allocated: Some(req.resources.clone()), task_count: req.array_tasks,
                            submit_time: now, run_index: 0, qos: None,
                        };
                        budget.reconcile(&c, t).unwrap();
                    }
                }
                Op::Release { job } => {
                    if let Some((token, _)) = tokens.get(job) {
                        budget.release(token, t).unwrap();
                    }
                }
            }
        }
        let report = admin.verify().unwrap();
        prop_assert!(report.is_clean(), "{:?}", report.problems);
    }
}

fn apply_completion(
    budget: &mut Budget,
    cfg: &Config,
    oracle: &mut Oracle,
    c: &JobCompletion,
    t: i64,
) -> Result<(), TestCaseError> {
    let key = c.run_key();
    let expected = match &c.allocated {
        Some(res) => {
            cost::task_cost(cfg, &cfg.partitions[&c.partition], None, res, c.elapsed_s() as u64).unwrap().micros()
        }
        None => 0,
    };
    let before: Vec<_> = ACCOUNTS.iter().map(|a| totals(budget, a)).collect();
    let outcome = budget.reconcile(c, t).unwrap();
    match oracle.runs.entry(key) {
        std::collections::btree_map::Entry::Occupied(_) => {
            prop_assert_eq!(outcome, Reconciled::Duplicate);
            let after: Vec<_> = ACCOUNTS.iter().map(|a| totals(budget, a)).collect();
            prop_assert_eq!(before, after, "a replayed completion changed balances");
        }
        std::collections::btree_map::Entry::Vacant(slot) => {
            match outcome {
                Reconciled::Charged { cost, .. } => prop_assert_eq!(cost.micros(), expected),
                other => prop_assert!(false, "unexpected {:?}", other),
            }
            slot.insert(expected);
        }
    }
    Ok(())
}

fn check_oracle(budget: &Budget, oracle: &Oracle) -> Result<(), TestCaseError> {
    let mut charged_total = 0i64;
    for a in ACCOUNTS {
        let (deposited, charged, held) = totals(budget, a);
        prop_assert_eq!(deposited, oracle.deposits[a], "deposits of {}", a);
        prop_assert!(held >= 0);
        charged_total += charged;
    }
    let expected: i64 = oracle.runs.values().sum();
    prop_assert_eq!(charged_total, expected, "charges differ from the runs' costs");
    let distinct: BTreeSet<&String> = oracle.runs.keys().collect();
    prop_assert_eq!(distinct.len(), oracle.runs.len());
    Ok(())
}

#[path = "support/postgres.rs"]
mod pg;

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, .. ProptestConfig::default() })]

    /// The same operations on an SQLite ledger and a PostgreSQL one (the same SQL,
    /// through `ledger::db`) decide, reprice, charge and release alike, and after every
    /// step both give every account the same balances and verify clean.
    #[test]
    fn postgresql_decides_and_balances_exactly_as_sqlite(ops in proptest::collection::vec(op(), 1..50)) {
        let Some(url) = pg::new_ledger("props") else { return Ok(()) };
        let cfg = config();
        let mut lite = Budget::with_ledger(cfg.clone(), Ledger::in_memory().unwrap());
        let mut post =
            Budget::with_ledger(cfg.clone(), Ledger::open(std::path::Path::new(&url), OpenMode::CreateIfMissing, 5000).unwrap());
        let now = 1_780_000_000i64;
        for b in [&mut lite, &mut post] {
            for a in ACCOUNTS {
                b.create_account(a, Money::from_dollars(50).unwrap(), now - 86_400, FOREVER, Money::ZERO, "test", now).unwrap();
            }
        }
        // (SQLite's token, PostgreSQL's token, request) of each job both accepted or held.
        let mut jobs: Vec<(String, String, JobRequest)> = Vec::new();
        for (step, op) in ops.into_iter().enumerate() {
            let t = now + step as i64 * 60;
            match op {
                Op::Deposit { account, dollars } => {
                    let amount = Money::from_dollars(dollars as i64 / 10 + 1).unwrap();
                    let key = format!("k{step}");
                    let (a, b) = (
                        lite.deposit(ACCOUNTS[account], amount, now - 86_400, FOREVER, None, Some(&key), "test", t).unwrap(),
                        post.deposit(ACCOUNTS[account], amount, now - 86_400, FOREVER, None, Some(&key), "test", t).unwrap(),
                    );
                    prop_assert_eq!(a, b);
                }
                Op::Submit { account, aws, cpus, minutes, tasks, gpus } => {
                    let req = request(account, aws, cpus, minutes, tasks, gpus);
                    let (a, b) = (lite.check_and_hold(&req, t).unwrap(), post.check_and_hold(&req, t).unwrap());
                    if let (Decision::Accept { token: ta, .. } | Decision::Hold { token: ta, .. },
                            Decision::Accept { token: tb, .. } | Decision::Hold { token: tb, .. }) = (&a, &b) {
                        jobs.push((ta.clone(), tb.clone(), req.clone()));
                    }
                    prop_assert_eq!(untokened(a), untokened(b));
                }
                Op::Modify { job, minutes } => {
                    if let Some((ta, tb, req)) = jobs.get(job) {
                        let mut req = req.clone();
                        req.time_limit_min = minutes;
                        prop_assert_eq!(lite.modify(ta, &req, false, false, t).unwrap(), post.modify(tb, &req, false, false, t).unwrap());
                    }
                }
                Op::Complete { job, task, used_pct, run, ran } => {
                    if let Some((ta, tb, req)) = jobs.get(job) {
                        let elapsed = (req.time_limit_min as i64 * 60 * used_pct as i64) / 100;
                        let c = |token: &str| JobCompletion {
                            cluster: "c1".into(), job_id: 10_000 + job as u32 * 10 + task % req.array_tasks,
                            hold_token: Some(token.to_string()), user: "u".into(), account: req.account.clone(),
                            partition: req.partition.clone(), state: EndState::Completed,
                            start_time: t - 3600 + run as i64, end_time: t - 3600 + run as i64 + if ran { elapsed } else { 0 },
                            allocated: ran.then(|| req.resources.clone()), task_count: 1,
                            submit_time: now, run_index: run, qos: None,
                        };
                        // Twice: the second is a replay and changes nothing on either.
                        for _ in 0..2 {
                            prop_assert_eq!(lite.reconcile(&c(ta), t).unwrap(), post.reconcile(&c(tb), t).unwrap());
                        }
                    }
                }
                Op::Replay { .. } => {}
                Op::Release { job } => {
                    if let Some((ta, tb, _)) = jobs.get(job) {
                        prop_assert_eq!(lite.release(ta, t).unwrap(), post.release(tb, t).unwrap());
                    }
                }
            }
            prop_assert_eq!(lite.ledger.balances().unwrap(), post.ledger.balances().unwrap(), "after step {}", step);
            let report = post.verify().unwrap();
            prop_assert!(report.is_clean(), "{:?}", report.problems);
        }
        let (a, b) = (lite.verify().unwrap(), post.verify().unwrap());
        prop_assert_eq!(a, b);
    }
}
