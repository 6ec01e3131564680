// SPDX-License-Identifier: GPL-2.0-or-later
//! A seeded, deterministic simulation of many jobs through the budget core (no SLURM,
//! an in-memory ledger), with faults injected between any two ledger steps, and an
//! independent oracle (in the style of TigerBeetle's VOPR and auditor).
//!
//! - Jobs of eight accounts are submitted (some arrays, some requeued, some cancelled
//!   before they run) and every run's completion is fed to `Budget::reconcile`;
//!   completions are reordered, duplicated and replayed; deposits are retried with
//!   the same request id; some holds are re-priced.
//! - A crash is a write transaction dropped before its commit: SQLite triggers on the
//!   ledger's tables count write steps and abort the statement at a chosen step, so
//!   the operation returns an error and its transaction rolls back, exactly what
//!   slurmctld dying mid-transaction leaves behind (WAL keeps only committed
//!   transactions). A submit that crashed is refused or, as `on_ledger_error =
//!   "accept"` would, let in unchecked; a completion that crashed is lost; a hold
//!   committed just before slurmctld died belongs to a job SLURM never created.
//! - At the end `Budget::settle` (the `asbb-admin reconcile` core) runs against SLURM's
//!   final records, itself crashing and being re-run, until a clean run finds nothing.
//!
//! The oracle keeps its own books: what was deposited and what every run it knows was
//! charged must cost (CPUs × elapsed × rate, minimum charge, computed here). Checked:
//! no cent created or lost, every run charged at most once, every final run charged,
//! no hold open, `verify` clean, and `available` = deposits − charges per account.
//!
//! `ASBB_SIM_JOBS` (default 100,000 in release builds, 5,000 in debug builds) and
//! `ASBB_SIM_SEED` choose the size and the seed.

use asbb::adapter::snapshot::{RecordSource, SlurmJob, Snapshot};
use asbb::core::config::Config;
use asbb::core::decisions::{Budget, Decision, Reconciled, FOREVER};
use asbb::core::ledger::Ledger;
use asbb::core::money::Money;
use asbb::core::pricing::job::{JobRequest, Resources};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::time::Instant;

const T0: i64 = 1_780_000_000;
const CLUSTER: &str = "sim";
const ACCOUNTS: [&str; 8] = ["a0", "a1", "a2", "a3", "a4", "a5", "a6", "a7"];
/// Micro-dollars per CPU-second in partitions `p` ($3.60/h) and `q` ($7.20/h).
const RATE: [(&str, i64); 2] = [("p", 1_000), ("q", 2_000)];
const MINIMUM_CHARGE: i64 = 500;

fn config() -> Config {
    Config::parse(
        "[policy]\nminimum_charge = \"0.0005\"\n[partitions.p.rates]\ncpu = 3.6\n[partitions.q.rates]\ncpu = 7.2\n",
        "sim.toml",
    )
    .unwrap()
}

/// splitmix64.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    /// True with probability `per_mille`/1000.
    fn chance(&mut self, per_mille: u64) -> bool {
        self.below(1000) < per_mille
    }
}

// ----- crashes ---------------------------------------------------------------------------

/// Write steps counted: every insert or update of a ledger table.
const COUNTED: &[(&str, &str)] = &[
    ("journal", "INSERT"),
    ("jobs", "INSERT"),
    ("jobs", "UPDATE"),
    ("runs", "INSERT"),
    ("accounts", "INSERT"),
    ("accounts", "UPDATE"),
    ("allocations", "INSERT"),
    ("allocations", "UPDATE"),
    ("audit_log", "INSERT"),
];

fn install_crash_triggers(b: &Budget) {
    let conn = b.ledger.connection();
    conn.execute_batch("CREATE TEMP TABLE crash (countdown INTEGER NOT NULL); INSERT INTO crash VALUES (-1);").unwrap();
    for (i, (table, op)) in COUNTED.iter().enumerate() {
        conn.execute_batch(&format!(
            "CREATE TEMP TRIGGER crash_{i} AFTER {op} ON {table} BEGIN
               UPDATE crash SET countdown = countdown - 1;
               SELECT RAISE(ABORT, 'simulated crash') WHERE (SELECT countdown FROM crash) = 0;
             END;"
        ))
        .unwrap();
    }
}

/// The next operation crashes at its `step`-th write (if it has that many).
fn arm(b: &Budget, step: u64) {
    b.ledger.connection().execute("UPDATE crash SET countdown = ?1", [step as i64]).unwrap();
}

fn disarm(b: &Budget) {
    b.ledger.connection().execute("UPDATE crash SET countdown = -1", []).unwrap();
}

fn is_crash(e: &impl std::fmt::Display) -> bool {
    e.to_string().contains("simulated crash")
}

// ----- the workload ------------------------------------------------------------------------

/// One run of one task, as SLURM records it when it ends.
#[derive(Clone)]
struct Run {
    job_id: u32,
    state: &'static str,
    submit_time: i64,
    start_time: i64,
    end_time: i64,
    restart: u32,
}

struct Job {
    account: usize,
    partition: usize,
    cpus: u32,
    minutes: u32,
    submit_at: i64,
    /// Per task, its runs in order (the last is final).
    tasks: Vec<Vec<Run>>,
    /// Set once submitted.
    fate: Fate,
    token: Option<String>,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Fate {
    NotYet,
    /// Refused (by the budget, or because the ledger failed under policy reject).
    Refused,
    /// Held, and slurmctld created the job.
    Running,
    /// Let in unchecked (the ledger failed under policy accept): no hold.
    Unchecked,
    /// Held, but slurmctld died before it created the job.
    Orphan,
}

fn make_job(rng: &mut Rng, next_id: &mut u32, submit_at: i64) -> Job {
    let cpus = 1 + rng.below(8) as u32;
    let minutes = 1 + rng.below(240) as u32;
    let n_tasks = if rng.chance(850) { 1 } else { 2 + rng.below(5) as usize };
    let mut tasks = Vec::with_capacity(n_tasks);
    for _ in 0..n_tasks {
        let job_id = *next_id;
        *next_id += 1;
        let mut t = submit_at + 1 + rng.below(600) as i64;
        let mut runs = Vec::new();
        if rng.chance(80) {
            // Cancelled while pending: one record that never ran.
            runs.push(Run {
                job_id,
                state: "CANCELLED",
                submit_time: submit_at,
                start_time: t,
                end_time: t,
                restart: 0,
            });
            tasks.push(runs);
            continue;
        }
        let requeues = if rng.chance(100) { 1 + rng.below(3) as u32 } else { 0 };
        for restart in 0..=requeues {
            let limit_s = minutes as i64 * 60;
            let state = if restart < requeues {
                if rng.chance(500) {
                    "REQUEUED"
                } else {
                    "NODE_FAIL"
                }
            } else {
                ["COMPLETED", "COMPLETED", "COMPLETED", "FAILED", "TIMEOUT", "CANCELLED", "OUT_OF_MEMORY"]
                    [rng.below(7) as usize]
            };
            let elapsed = if state == "TIMEOUT" { limit_s } else { rng.below(limit_s as u64 + 1) as i64 };
            // Each requeue gives the job a new submit time, as SLURM does.
            let submit_time = submit_at + restart as i64;
            runs.push(Run { job_id, state, submit_time, start_time: t, end_time: t + elapsed, restart });
            t += elapsed + 1 + rng.below(120) as i64;
        }
        tasks.push(runs);
    }
    Job {
        account: rng.below(ACCOUNTS.len() as u64) as usize,
        partition: rng.below(2) as usize,
        cpus,
        minutes,
        submit_at,
        tasks,
        fate: Fate::NotYet,
        token: None,
    }
}

fn request(j: &Job) -> JobRequest {
    JobRequest {
        user: "sim".into(),
        uid: 1000,
        account: ACCOUNTS[j.account].into(),
        partition: RATE[j.partition].0.into(),
        resources: Resources { nodes: 1, cpus: j.cpus, mem_mb: 0, gpus: BTreeMap::new() },
        time_limit_min: j.minutes,
        array_tasks: j.tasks.len() as u32,
        qos: None,
        job_id: None,
        job_name: None,
    }
}

/// SLURM's record of a run (what jobcomp sees, and what squeue shows once it ended).
fn record(j: &Job, r: &Run) -> SlurmJob {
    let ran = r.end_time > r.start_time;
    SlurmJob {
        job_id: r.job_id,
        state: r.state.into(),
        uid: Some(1000),
        user: Some("sim".into()),
        account: Some(ACCOUNTS[j.account].into()),
        partition: Some(RATE[j.partition].0.into()),
        qos: None,
        admin_comment: j.token.as_ref().map(|t| format!("asbb:hold={t}")),
        submit_time: r.submit_time,
        start_time: r.start_time,
        end_time: r.end_time,
        tres_alloc: ran.then(|| format!("cpu={},node=1,billing={}", j.cpus, j.cpus)),
        cpus: j.cpus,
        nodes: 1,
        task_count: 1,
        restart_cnt: Some(r.restart),
        source: RecordSource::Controller,
        ambiguous: false,
    }
}

/// What the run must cost, computed here and nowhere else.
fn oracle_cost(j: &Job, r: &Run) -> i64 {
    let elapsed = r.end_time - r.start_time;
    if elapsed <= 0 {
        return 0;
    }
    (j.cpus as i64 * elapsed * RATE[j.partition].1).max(MINIMUM_CHARGE)
}

fn run_key(r: &Run) -> String {
    format!("{CLUSTER}:{}:{}:{}", r.job_id, r.submit_time, r.restart)
}

#[derive(Clone, Copy)]
enum Event {
    Submit(usize),
    Complete(usize, usize, usize),
    Deposit(usize, i64, u64),
}

#[derive(Default)]
struct Stats {
    crashes: BTreeMap<&'static str, u64>,
    accepted: u64,
    refused: u64,
    unchecked: u64,
    orphans: u64,
    completions: u64,
    duplicates: u64,
    lost_completions: u64,
    repriced: u64,
    settle_attempts: u64,
}

#[test]
fn simulated_jobs_with_crashes_and_replays_lose_no_cent() {
    let n_jobs: usize = std::env::var("ASBB_SIM_JOBS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if cfg!(debug_assertions) { 5_000 } else { 100_000 });
    let seed: u64 = std::env::var("ASBB_SIM_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or(0x5eed);
    let started = Instant::now();
    let mut rng = Rng(seed);
    let mut b = Budget::with_ledger(config(), Ledger::in_memory().unwrap());
    install_crash_triggers(&b);
    let mut stats = Stats::default();

    // The oracle's books.
    let mut deposited: BTreeMap<usize, i64> = BTreeMap::new();
    let mut charged: HashMap<String, (usize, i64)> = HashMap::new();
    for (i, a) in ACCOUNTS.iter().enumerate() {
        let dollars = if i < 4 { 5_000_000 } else { 20_000 };
        b.create_account(a, Money::from_dollars(dollars).unwrap(), T0 - 86_400, FOREVER, Money::ZERO, "sim", T0)
            .unwrap();
        deposited.insert(i, dollars * 1_000_000);
    }

    // The workload and its event stream.
    let mut next_id = 1000u32;
    let mut jobs: Vec<Job> = Vec::with_capacity(n_jobs);
    let mut timed: Vec<(i64, u64, Event)> = Vec::new();
    let mut t = T0;
    let mut seq = 0u64;
    for i in 0..n_jobs {
        t += rng.below(3) as i64;
        let j = make_job(&mut rng, &mut next_id, t);
        timed.push((j.submit_at, seq, Event::Submit(i)));
        seq += 1;
        for (k, runs) in j.tasks.iter().enumerate() {
            for (r, run) in runs.iter().enumerate() {
                timed.push((run.end_time, seq, Event::Complete(i, k, r)));
                seq += 1;
            }
        }
        if rng.chance(2) {
            let dollars = 1_000 + rng.below(50_000) as i64;
            timed.push((t, seq, Event::Deposit(rng.below(8) as usize, dollars, seq)));
            seq += 1;
        }
        jobs.push(j);
    }
    timed.sort_by_key(|e| (e.0, e.1));
    let mut events: Vec<Event> = timed.into_iter().map(|e| e.2).collect();
    // Reorder neighbours and replay some events later (slurmctld restarts replay ends).
    for i in 0..events.len() {
        if rng.chance(30) {
            let j = (i + 1 + rng.below(10) as usize).min(events.len() - 1);
            events.swap(i, j);
        }
    }
    let mut replays: BTreeMap<usize, Vec<Event>> = BTreeMap::new();
    for (i, e) in events.iter().enumerate() {
        if matches!(e, Event::Complete(..) | Event::Deposit(..)) && rng.chance(40) {
            let at = (i + 1 + rng.below(200) as usize).min(events.len() - 1);
            replays.entry(at).or_default().push(*e);
        }
    }
    let events: Vec<Event> = events
        .into_iter()
        .enumerate()
        .flat_map(|(i, e)| std::iter::once(e).chain(replays.remove(&i).unwrap_or_default()))
        .collect();

    // Completions that arrive before their job's submission wait for it.
    let mut waiting: HashMap<usize, Vec<Event>> = HashMap::new();
    let mut now = T0;
    let mut queue: std::collections::VecDeque<Event> = events.into();
    while let Some(e) = queue.pop_front() {
        // Faults: about 2% of operations crash at one of their first few write steps.
        let armed = rng.chance(20);
        if armed {
            arm(&b, 1 + rng.below(6));
        }
        match e {
            Event::Submit(i) => {
                let req = request(&jobs[i]);
                now = now.max(jobs[i].submit_at);
                let outcome = b.check_and_hold(&req, now);
                disarm(&b);
                let j = &mut jobs[i];
                j.fate = match outcome {
                    Ok(Decision::Accept { token, .. }) => {
                        j.token = Some(token);
                        // The hold committed, then slurmctld died before creating the job.
                        if rng.chance(5) {
                            stats.orphans += 1;
                            Fate::Orphan
                        } else {
                            stats.accepted += 1;
                            Fate::Running
                        }
                    }
                    Ok(Decision::Reject { .. }) => {
                        stats.refused += 1;
                        Fate::Refused
                    }
                    Ok(other) => panic!("unexpected {other:?}"),
                    Err(e) => {
                        assert!(is_crash(&e), "{e}");
                        *stats.crashes.entry("submit").or_default() += 1;
                        if rng.chance(500) {
                            stats.refused += 1;
                            Fate::Refused
                        } else {
                            stats.unchecked += 1;
                            Fate::Unchecked
                        }
                    }
                };
                // Now and then a pending job's time limit changes (re-priced hold).
                if j.fate == Fate::Running && rng.chance(20) {
                    let mut req = req.clone();
                    req.time_limit_min = 1 + rng.below(480) as u32;
                    let token = j.token.clone().unwrap_or_default();
                    if rng.chance(100) {
                        arm(&b, 1 + rng.below(3));
                    }
                    let r = b.modify(&token, &req, false, false, now);
                    disarm(&b);
                    match r {
                        Ok(_) => stats.repriced += 1,
                        Err(e) => {
                            assert!(is_crash(&e), "{e}");
                            *stats.crashes.entry("modify").or_default() += 1;
                        }
                    }
                }
                for w in waiting.remove(&i).unwrap_or_default() {
                    queue.push_front(w);
                }
            }
            Event::Complete(i, k, r) => {
                let j = &jobs[i];
                match j.fate {
                    Fate::NotYet => {
                        disarm(&b);
                        waiting.entry(i).or_default().push(e);
                        continue;
                    }
                    Fate::Refused | Fate::Orphan => {
                        disarm(&b);
                        continue;
                    }
                    Fate::Running | Fate::Unchecked => {}
                }
                let run = &j.tasks[k][r];
                now = now.max(run.end_time);
                let c = record(j, run).to_completion(CLUSTER).unwrap();
                let key = c.run_key();
                assert_eq!(key, run_key(run));
                stats.completions += 1;
                let outcome = b.reconcile(&c, now);
                disarm(&b);
                match outcome {
                    Ok(Reconciled::Charged { account, cost, .. }) => {
                        assert_eq!(account, ACCOUNTS[j.account]);
                        assert_eq!(cost.micros(), oracle_cost(j, run), "run {key}");
                        let previous = charged.insert(key.clone(), (j.account, cost.micros()));
                        assert!(previous.is_none(), "run {key} charged twice");
                    }
                    Ok(Reconciled::Duplicate) => {
                        stats.duplicates += 1;
                        assert!(charged.contains_key(&key), "run {key} called a duplicate but never charged");
                    }
                    Ok(other) => panic!("run {key}: {other:?}"),
                    Err(e) => {
                        assert!(is_crash(&e), "{e}");
                        *stats.crashes.entry("reconcile").or_default() += 1;
                        stats.lost_completions += 1;
                    }
                }
            }
            Event::Deposit(a, dollars, request) => {
                let amount = Money::from_dollars(dollars).unwrap();
                let key = format!("sim-deposit-{request}");
                let outcome = b.deposit(ACCOUNTS[a], amount, T0 - 86_400, FOREVER, None, Some(&key), "sim", now);
                disarm(&b);
                match outcome {
                    Ok(true) => *deposited.get_mut(&a).unwrap() += amount.micros(),
                    Ok(false) => {}
                    Err(e) => {
                        assert!(is_crash(&e), "{e}");
                        *stats.crashes.entry("deposit").or_default() += 1;
                    }
                }
            }
        }
    }
    let replay_s = started.elapsed();

    // SLURM's final word: the last record of every task of every job it has.
    let mut finals: Vec<SlurmJob> = Vec::new();
    let mut expected: HashMap<String, (usize, i64)> = charged.clone();
    for j in jobs.iter().filter(|j| matches!(j.fate, Fate::Running | Fate::Unchecked)) {
        for runs in &j.tasks {
            let last = runs.last().unwrap();
            finals.push(record(j, last));
            // The safety net charges a final run it has not seen: a held job's always
            // (a run that never ran is recorded at no cost), an unchecked job's if it ran.
            if j.fate == Fate::Running || last.end_time > last.start_time {
                expected.entry(run_key(last)).or_insert((j.account, oracle_cost(j, last)));
            }
        }
    }
    let snapshot = Snapshot { cluster: CLUSTER.into(), jobs: finals, notes: vec![] };
    let settle_now = now.max(T0 + 2 * 86_400);
    // Reconcile from cron, crashing now and then, until a run completes...
    loop {
        stats.settle_attempts += 1;
        assert!(stats.settle_attempts < 10_000, "settle never completes");
        // The first run always crashes somewhere in its first 40 writes.
        if stats.settle_attempts == 1 || rng.chance(300) {
            arm(&b, 1 + rng.below(40));
        }
        let r = b.settle(&snapshot, 0, "sim-cron", settle_now);
        disarm(&b);
        match r {
            Ok(_) => break,
            Err(e) => {
                assert!(is_crash(&e), "{e}");
                *stats.crashes.entry("settle").or_default() += 1;
            }
        }
    }
    // ...and the next finds nothing to do.
    let again = b.settle(&snapshot, 0, "sim-cron", settle_now).unwrap();
    assert_eq!((again.released, again.charged, again.left, again.alive), (0, 0, 0, 0), "{}", again.to_text());

    // The audit: the ledger against the oracle's books.
    let ledger_runs: HashMap<String, i64> = b
        .ledger
        .connection()
        .prepare("SELECT run_key, cost_micros FROM runs")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let missing: Vec<&String> = expected.keys().filter(|k| !ledger_runs.contains_key(*k)).take(5).collect();
    let extra: Vec<&String> = ledger_runs.keys().filter(|k| !expected.contains_key(*k)).take(5).collect();
    assert!(missing.is_empty() && extra.is_empty(), "runs missing {missing:?}, unexpected {extra:?}");
    for (k, (_, cost)) in &expected {
        assert_eq!(ledger_runs[k], *cost, "run {k}");
    }
    let mut charges: BTreeMap<usize, i64> = BTreeMap::new();
    for (account, cost) in expected.values() {
        *charges.entry(*account).or_default() += cost;
    }
    for (i, name) in ACCOUNTS.iter().enumerate() {
        let (allocated, debited, overdraft, held): (i64, i64, i64, i64) = b
            .ledger
            .connection()
            .query_row(
                "SELECT coalesce((SELECT sum(amount_micros) FROM allocations WHERE account_id = a.id), 0),
                        coalesce((SELECT sum(debited_micros) FROM allocations WHERE account_id = a.id), 0),
                        a.overdraft_micros, a.held_micros
                 FROM accounts a WHERE a.name = ?1",
                [name],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
            .unwrap();
        let spent = charges.get(&i).copied().unwrap_or(0);
        assert_eq!(allocated, deposited[&i], "{name}: deposits");
        assert_eq!(debited + overdraft, spent, "{name}: charges");
        assert_eq!(held, 0, "{name}: money still held");
        let balance = b.balance(name, settle_now).unwrap();
        assert_eq!(balance.available.micros(), deposited[&i] - spent, "{name}: available");
    }
    let open: i64 = b
        .ledger
        .connection()
        .query_row(
            "SELECT count(*) FROM jobs WHERE state IN ('held', 'awaiting_funds', 'awaiting_approval')",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(open, 0, "holds left open");
    let report = b.verify().unwrap();
    assert!(report.is_clean(), "{:?}", &report.problems[..report.problems.len().min(10)]);

    // Runs whose only completion was lost in a crash, and that are not the final run
    // SLURM still shows, cannot be recovered from slurmctld (sacct -D could): count them.
    let finals_keys: HashSet<String> =
        jobs.iter().flat_map(|j| j.tasks.iter().map(|runs| run_key(runs.last().unwrap()))).collect();
    let unrecoverable = jobs
        .iter()
        .filter(|j| matches!(j.fate, Fate::Running | Fate::Unchecked))
        .flat_map(|j| j.tasks.iter().flatten())
        .filter(|r| !finals_keys.contains(&run_key(r)) && !charged.contains_key(&run_key(r)))
        .count();
    let orphan_tokens: BTreeSet<&String> =
        jobs.iter().filter(|j| j.fate == Fate::Orphan).filter_map(|j| j.token.as_ref()).collect();
    for t in &orphan_tokens {
        assert_eq!(b.job(t).unwrap().unwrap().state.as_str(), "released", "orphan hold {t}");
    }
    eprintln!(
        "simulation: {n_jobs} jobs (seed {seed:#x}), {} runs charged, {} completions fed ({} duplicates), \
         {} accepted, {} refused, {} unchecked, {} orphan holds, {} re-priced; crashes {:?} ({} completions lost, \
         {unrecoverable} of them intermediate runs of requeued jobs); settle needed {} attempts; \
         {:.1} s replaying, {:.1} s in all",
        expected.len(),
        stats.completions,
        stats.duplicates,
        stats.accepted,
        stats.refused,
        stats.unchecked,
        stats.orphans,
        stats.repriced,
        stats.crashes,
        stats.lost_completions,
        stats.settle_attempts,
        replay_s.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
    assert!(stats.crashes.values().sum::<u64>() > 0, "no fault was injected");
}
