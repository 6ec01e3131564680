// SPDX-License-Identifier: GPL-2.0-or-later
//! The reconcile safety net and completion events, against a real in-memory ledger
//! (no SLURM): `Budget::settle` over synthetic snapshots of SLURM's jobs; duplicated,
//! reordered and replayed completions; a requeue storm. Every case ends with
//! `verify` clean and the money equal to what an oracle computes by itself.

use asbb::adapter::reconcile::SettleReport;
use asbb::adapter::snapshot::{RecordSource, SlurmJob, Snapshot};
use asbb::core::config::Config;
use asbb::core::decisions::{Budget, Decision, Reconciled, FOREVER};
use asbb::core::ledger::Ledger;
use asbb::core::money::Money;
use asbb::core::pricing::job::{EndState, JobCompletion, JobRequest, Resources};
use std::collections::BTreeMap;

const NOW: i64 = 1_780_000_000;
/// $3.60 per CPU-hour: $0.001 (1,000 micro-dollars) per CPU-second.
const MICROS_PER_CPU_S: i64 = 1_000;

fn config() -> Config {
    Config::parse(
        "[policy]\nminimum_charge = \"0\"\nexempt_partitions = [\"free\"]\n[partitions.debug.rates]\ncpu = 3.6\n",
        "reconcile.toml",
    )
    .unwrap()
}

fn budget() -> Budget {
    let mut b = Budget::with_ledger(config(), Ledger::in_memory().unwrap());
    b.create_account("chem", Money::from_dollars(1000).unwrap(), NOW - 86_400, FOREVER, Money::ZERO, "t", NOW).unwrap();
    b
}

fn request(cpus: u32, minutes: u32, tasks: u32) -> JobRequest {
    JobRequest {
        user: "alice".into(),
        uid: 1000,
        account: "chem".into(),
        partition: "debug".into(),
        resources: Resources { nodes: 1, cpus, mem_mb: 0, gpus: BTreeMap::new() },
        time_limit_min: minutes,
        array_tasks: tasks,
        qos: None,
        job_id: None,
        job_name: None,
    }
}

fn hold(b: &mut Budget, cpus: u32, minutes: u32, tasks: u32, at: i64) -> String {
    match b.check_and_hold(&request(cpus, minutes, tasks), at).unwrap() {
        Decision::Accept { token, .. } => token,
        other => panic!("{other:?}"),
    }
}

/// A finished SLURM record of one task of the token's job.
fn record(job_id: u32, token: Option<&str>, state: &str, cpus: u32, elapsed_s: i64, restarts: u32) -> SlurmJob {
    SlurmJob {
        job_id,
        state: state.into(),
        uid: Some(1000),
        user: Some("alice".into()),
        account: Some("chem".into()),
        partition: Some("debug".into()),
        qos: None,
        admin_comment: token.map(|t| format!("asbb:hold={t}")),
        submit_time: NOW - 1000,
        start_time: NOW - 500,
        end_time: NOW - 500 + elapsed_s,
        tres_alloc: (elapsed_s > 0).then(|| format!("cpu={cpus},node=1,billing={cpus}")),
        cpus,
        nodes: 1,
        task_count: 1,
        restart_cnt: Some(restarts),
        source: RecordSource::Controller,
        ambiguous: false,
    }
}

fn snapshot(jobs: Vec<SlurmJob>) -> Snapshot {
    Snapshot { cluster: "c1".into(), jobs, notes: vec![] }
}

fn sql(b: &Budget, q: &str) -> i64 {
    b.ledger.connection().query_row(q, [], |r| r.get(0)).unwrap()
}

fn held(b: &Budget) -> i64 {
    sql(b, "SELECT held_micros FROM accounts WHERE name = 'chem'")
}

fn charged(b: &Budget) -> i64 {
    sql(b, "SELECT coalesce(sum(debited_micros), 0) FROM allocations") + sql(b, "SELECT overdraft_micros FROM accounts")
}

fn assert_clean(b: &Budget) {
    let r = b.verify().unwrap();
    assert!(r.is_clean(), "{:?}", r.problems);
}

fn counts(r: &SettleReport) -> (usize, usize, usize, usize) {
    (r.released, r.charged, r.left, r.alive)
}

#[test]
fn settle_releases_charges_leaves_and_is_idempotent() {
    let mut b = budget();
    let gone = hold(&mut b, 1, 10, 1, NOW - 3600); // slurmctld never created it
    let young = hold(&mut b, 1, 10, 1, NOW - 10); // accepted a moment ago
    let running = hold(&mut b, 2, 10, 1, NOW - 3600);
    let lost = hold(&mut b, 2, 10, 1, NOW - 3600); // ended; its completion was lost
    let cancelled = hold(&mut b, 1, 10, 1, NOW - 3600); // cancelled while pending, event lost
    let array = hold(&mut b, 1, 10, 3, NOW - 3600); // two tasks ended, one never ran
    assert_eq!(held(&b), (600 + 600 + 1200 + 1200 + 600 + 1800) * 1000);
    let mut running_rec = record(11, Some(&running), "RUNNING", 2, 0, 0);
    running_rec.end_time = 0;
    let mut never = record(16, Some(&array), "CANCELLED", 1, 0, 0);
    never.start_time = never.end_time;
    let snap = snapshot(vec![
        running_rec,
        record(12, Some(&lost), "COMPLETED", 2, 100, 0),
        record(13, Some(&cancelled), "CANCELLED", 1, 0, 0),
        record(14, Some(&array), "COMPLETED", 1, 30, 0),
        record(15, Some(&array), "TIMEOUT", 1, 600, 0),
        never,
        // Let in unchecked (no hold) while the ledger was down.
        record(17, None, "COMPLETED", 4, 50, 0),
        // Not asbb's: an account with no budget, an exempt partition, root's with no account.
        SlurmJob { account: Some("other".into()), ..record(18, None, "COMPLETED", 1, 50, 0) },
        SlurmJob { partition: Some("free".into()), ..record(19, None, "COMPLETED", 1, 50, 0) },
    ]);
    let r = b.settle(&snap, 300, "cron", NOW).unwrap();
    eprintln!("{}", r.to_text());
    // charged: 12, 14, 15, 17; released: gone, cancelled (13), 16 (never ran), lost and
    // array (remainder: nothing left after their runs, so not counted); left: young.
    assert_eq!(counts(&r), (3, 4, 1, 1), "{}", r.to_text());
    assert!(r.to_text().contains("reconcile: 3 released, 4 charged, 1 left (younger than 300 s), 1 still in SLURM"));
    assert_eq!(charged(&b), (2 * 100 + 30 + 600 + 4 * 50) * MICROS_PER_CPU_S);
    // What is still held: the running job's and the young job's holds.
    assert_eq!(held(&b), (1200 + 600) * 1000);
    for t in [&gone, &lost, &cancelled, &array] {
        assert_eq!(b.job(t).unwrap().unwrap().held, Money::ZERO, "{t}");
    }
    assert!(b.job(&young).unwrap().unwrap().held > Money::ZERO);
    assert_clean(&b);
    let audit = sql(&b, "SELECT count(*) FROM audit_log WHERE command = 'reconcile' AND actor = 'cron'");
    assert_eq!(audit, 7 + 1, "one line per action and the summary");

    // Idempotent: a second run (and a dry run on a copy) does nothing.
    let dir = tempfile::tempdir().unwrap();
    let mut copy = b.scratch_copy(&dir.path().join("copy.db")).unwrap();
    assert_eq!(counts(&copy.settle(&snap, 300, "cron", NOW).unwrap()), (0, 0, 1, 1));
    let journal = sql(&b, "SELECT count(*) FROM journal");
    assert_eq!(counts(&b.settle(&snap, 300, "cron", NOW).unwrap()), (0, 0, 1, 1));
    assert_eq!(sql(&b, "SELECT count(*) FROM journal"), journal);

    // Later the young hold's job turns out never to have been created; the running
    // job ends and its completion arrives through the plugin, then SLURM forgets it.
    let done = record(11, Some(&running), "COMPLETED", 2, 60, 0);
    let c = done.to_completion("c1").unwrap();
    assert!(matches!(b.reconcile(&c, NOW + 400).unwrap(), Reconciled::Charged { .. }));
    let r = b.settle(&snapshot(vec![]), 300, "cron", NOW + 400).unwrap();
    assert_eq!(counts(&r), (1, 0, 0, 0), "{}", r.to_text());
    assert_eq!(held(&b), 0);
    assert_clean(&b);
}

#[test]
fn dry_run_predicts_and_changes_nothing() {
    let mut b = budget();
    let t = hold(&mut b, 2, 10, 1, NOW - 3600);
    let snap = snapshot(vec![record(21, Some(&t), "COMPLETED", 2, 100, 0)]);
    let journal = sql(&b, "SELECT count(*) FROM journal");
    let dir = tempfile::tempdir().unwrap();
    let mut copy = b.scratch_copy(&dir.path().join("copy.db")).unwrap();
    let predicted = copy.settle(&snap, 300, "cron", NOW).unwrap();
    assert_eq!(counts(&predicted), (0, 1, 0, 0));
    assert_eq!(sql(&b, "SELECT count(*) FROM journal"), journal, "the real ledger is untouched");
    let real = b.settle(&snap, 300, "cron", NOW).unwrap();
    assert_eq!(real.actions, predicted.actions);
    assert!(b.scratch_copy(&dir.path().join("copy.db")).is_err(), "never overwrites a file");
}

#[test]
fn a_record_naming_another_users_hold_is_left_alone() {
    let mut b = budget();
    let t = hold(&mut b, 1, 10, 1, NOW - 3600);
    let mut forged = record(31, Some(&t), "COMPLETED", 8, 1000, 0);
    forged.uid = Some(1001);
    let r = b.settle(&snapshot(vec![forged]), 300, "cron", NOW).unwrap();
    assert_eq!(counts(&r), (0, 0, 0, 1));
    assert_eq!(r.warnings.len(), 1, "{:?}", r.warnings);
    assert_eq!(charged(&b), 0);
}

/// splitmix64: a tiny seeded generator, so every run of the tests is the same.
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
    fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            let j = self.below(i as u64 + 1) as usize;
            v.swap(i, j);
        }
    }
}

fn completion(token: &str, job_id: u32, state: EndState, cpus: u32, elapsed_s: i64, run: u32) -> JobCompletion {
    JobCompletion {
        cluster: "c1".into(),
        job_id,
        hold_token: Some(token.into()),
        user: "alice".into(),
        account: "chem".into(),
        partition: "debug".into(),
        state,
        start_time: NOW + run as i64 * 1000,
        end_time: NOW + run as i64 * 1000 + elapsed_s,
        allocated: (elapsed_s > 0).then(|| Resources { nodes: 1, cpus, mem_mb: 0, gpus: BTreeMap::new() }),
        task_count: 1,
        submit_time: NOW - 10 + run as i64,
        run_index: run,
        qos: None,
    }
}

#[test]
fn duplicated_reordered_and_replayed_completions_charge_each_run_once() {
    for seed in 0..20u64 {
        let mut rng = Rng(seed);
        let mut b = budget();
        let mut events = Vec::new();
        let mut expected = 0i64;
        for j in 0..15u32 {
            let tasks = 1 + (rng.below(4) as u32);
            let cpus = 1 + rng.below(4) as u32;
            let t = hold(&mut b, cpus, 60, tasks, NOW - 100);
            for task in 0..tasks {
                let job_id = 1000 + j * 10 + task;
                // Some tasks are requeued (REQUEUED runs keep the hold) or fail a node
                // first (a requeue SLURM does not announce); some never run.
                let requeues = if rng.below(3) == 0 { rng.below(3) as u32 } else { 0 };
                for run in 0..requeues {
                    let el = 1 + rng.below(100) as i64;
                    expected += cpus as i64 * el * MICROS_PER_CPU_S;
                    let state = if rng.below(2) == 0 { EndState::Requeued } else { EndState::NodeFail };
                    events.push(completion(&t, job_id, state, cpus, el, run));
                }
                let el = if rng.below(5) == 0 { 0 } else { 1 + rng.below(3600) as i64 };
                expected += cpus as i64 * el * MICROS_PER_CPU_S;
                let end = [EndState::Completed, EndState::Failed, EndState::Timeout, EndState::Cancelled];
                events.push(completion(&t, job_id, end[rng.below(4) as usize], cpus, el, requeues));
            }
        }
        // Every event at least once, some two or three times, in any order.
        let mut stream = events.clone();
        for e in &events {
            for _ in 0..rng.below(3) {
                stream.push(e.clone());
            }
        }
        rng.shuffle(&mut stream);
        let mut charged_keys = BTreeMap::new();
        for c in &stream {
            match b.reconcile(c, NOW + 10_000).unwrap() {
                Reconciled::Charged { cost, .. } => {
                    assert!(
                        charged_keys.insert(c.run_key(), cost).is_none(),
                        "seed {seed}: {} charged twice",
                        c.run_key()
                    );
                }
                Reconciled::Duplicate => assert!(charged_keys.contains_key(&c.run_key()), "seed {seed}"),
                other => panic!("seed {seed}: {other:?}"),
            }
        }
        assert_eq!(charged_keys.len(), events.len(), "seed {seed}");
        assert_eq!(charged(&b), expected, "seed {seed}");
        assert_eq!(held(&b), 0, "seed {seed}: every hold released once every run ended");
        assert_eq!(sql(&b, "SELECT count(*) FROM jobs WHERE state <> 'settled'"), 0, "seed {seed}");
        assert_clean(&b);
    }
}

#[test]
fn requeue_storm_then_final_run() {
    let mut rng = Rng(7);
    let mut b = budget();
    let t = hold(&mut b, 2, 60, 1, NOW - 100);
    let hold_micros = 2 * 3600 * MICROS_PER_CPU_S;
    assert_eq!(held(&b), hold_micros);
    let mut events: Vec<JobCompletion> =
        (0..200).map(|run| completion(&t, 4242, EndState::Requeued, 2, 1 + (run as i64 % 7), run)).collect();
    let final_run = completion(&t, 4242, EndState::Completed, 2, 1800, 200);
    // While the storm lasts the hold stays: each REQUEUED run is charged, none releases.
    for c in &events[..100] {
        assert!(matches!(b.reconcile(c, NOW).unwrap(), Reconciled::Charged { released, .. } if released.is_zero()));
    }
    assert_eq!(held(&b), hold_micros);
    events.push(final_run.clone());
    let mut stream = events.clone();
    stream.extend(events.iter().step_by(3).cloned());
    rng.shuffle(&mut stream);
    for c in &stream {
        b.reconcile(c, NOW).unwrap();
    }
    let expected: i64 = events.iter().map(|c| 2 * c.elapsed_s() * MICROS_PER_CPU_S).sum();
    assert_eq!(charged(&b), expected);
    assert_eq!(held(&b), 0);
    assert_eq!(sql(&b, "SELECT count(*) FROM runs"), 201);
    assert_eq!(b.job(&t).unwrap().unwrap().state.as_str(), "settled");
    // The safety net agrees: nothing to do once SLURM's last record is the final run.
    let mut last = record(4242, Some(&t), "COMPLETED", 2, 1800, 200);
    (last.submit_time, last.start_time, last.end_time) =
        (final_run.submit_time, final_run.start_time, final_run.end_time);
    assert_eq!(last.to_completion("c1").unwrap(), final_run, "the same run, as SLURM reports it");
    let r = b.settle(&snapshot(vec![last]), 300, "cron", NOW).unwrap();
    assert_eq!(counts(&r), (0, 0, 0, 0), "{}", r.to_text());
    assert_clean(&b);
}

#[test]
fn a_rerun_keeps_the_jobs_project_and_domain() {
    let mut b = budget();
    let meta = asbb::core::pricing::metadata::parse(Some("asbb:project=proj7,domain=climate"), &[], None).unwrap();
    let token = match b.submit(&request(1, 10, 1), &meta, NOW).unwrap() {
        Decision::Accept { token, .. } => token,
        other => panic!("{other:?}"),
    };
    b.reconcile(&completion(&token, 41, EndState::Completed, 1, 60, 0), NOW + 100).unwrap();
    let rerun = match b.price_rerun(&token, 41, NOW + 200).unwrap() {
        Some(asbb::core::decisions::Rerun::Held { token, .. }) => token,
        other => panic!("{other:?}"),
    };
    let row = |t: &str| -> (Option<String>, Option<String>, Option<String>) {
        b.ledger
            .connection()
            .query_row("SELECT project_code, research_domain, metadata_json FROM jobs WHERE token = ?1", [t], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })
            .unwrap()
    };
    assert_eq!(row(&rerun), row(&token));
    assert_eq!(row(&rerun).0.as_deref(), Some("proj7"));
    assert_clean(&b);
}

/// An array waiting for approval is one hold for all its tasks. Released through one
/// task split off from it (`scontrol update JobId=123_5 ...` then a release: the update
/// names one task), it holds for every task, not for the one the update names; the rest
/// of the array would otherwise run on that one task's hold.
#[test]
fn a_waiting_array_released_through_one_task_holds_for_every_task() {
    use asbb::core::decisions::Modified;
    let text = "[policy]\nminimum_charge = \"0\"\n[partitions.debug.rates]\ncpu = 3.6\n\
                [accounts.chem]\napproval_threshold = \"1.00\"\n";
    let mut b = Budget::with_ledger(Config::parse(text, "approval.toml").unwrap(), Ledger::in_memory().unwrap());
    b.create_account("chem", Money::from_dollars(1000).unwrap(), NOW - 86_400, FOREVER, Money::ZERO, "t", NOW).unwrap();
    // 10 tasks of 2 CPUs for 10 minutes: $1.20 a task, $12.00 in all.
    let token = match b.check_and_hold(&request(2, 10, 10), NOW).unwrap() {
        Decision::Hold { token, .. } => token,
        other => panic!("{other:?}"),
    };
    let one_task = JobRequest { job_id: Some(77), ..request(2, 10, 1) };
    assert_eq!(
        b.modify(&token, &one_task, true, true, NOW + 60).unwrap(),
        Modified::Released { hold: Money::from_micros(12_000_000) }
    );
    let job = b.job(&token).unwrap().unwrap();
    assert_eq!(
        (job.held, job.hold_placed, job.estimate, job.tasks_total),
        (Money::from_micros(12_000_000), Money::from_micros(12_000_000), Money::from_micros(12_000_000), 10)
    );
    assert_clean(&b);
}

/// An array with a task done is repriced when its owner grows the tasks still to
/// run: the hold grows by what they add, and the last task still leaves nothing held.
#[test]
fn an_array_with_a_task_done_holds_for_what_an_update_adds() {
    use asbb::core::decisions::Modified;
    let mut b = budget();
    // 3 tasks of 1 CPU for 10 minutes: $0.60 a task.
    let token = hold(&mut b, 1, 10, 3, NOW);
    b.reconcile(&completion(&token, 50, EndState::Completed, 1, 600, 0), NOW + 700).unwrap();
    assert_eq!(held(&b), 1_200_000, "task 0 released its share");
    // The two tasks still to run grow to 2 CPUs: $0.60 more each.
    let rest = JobRequest { job_id: Some(51), ..request(2, 10, 2) };
    assert_eq!(
        b.modify(&token, &rest, false, false, NOW + 800).unwrap(),
        Modified::Repriced { old_hold: Money::from_micros(1_200_000), new_hold: Money::from_micros(2_400_000) }
    );
    assert_eq!(held(&b), 2_400_000);
    for (job_id, run) in [(51, 1), (52, 2)] {
        let mut done = completion(&token, job_id, EndState::Completed, 2, 600, run);
        done.submit_time = NOW - 10;
        b.reconcile(&done, NOW + 2000 + run as i64).unwrap();
    }
    assert_eq!((held(&b), charged(&b)), (0, 3_000_000));
    assert_eq!(b.job(&token).unwrap().unwrap().state, asbb::core::ledger::JobState::Settled);
    assert_clean(&b);
}

/// A task split off an array and grown keeps its growth held until the array ends:
/// each task's completion releases the array's first per-task share, not an average
/// of the shares. An average let a cheap task release part of the grown task's hold
/// while that task had yet to run.
#[test]
fn a_grown_task_keeps_its_hold_while_cheaper_tasks_end_first() {
    let mut b = budget();
    // 2 tasks of 1 CPU for 10 minutes: $0.60 a task.
    let token = hold(&mut b, 1, 10, 2, NOW);
    // Task 0, split off, grows to 10 CPUs: $6.00, $5.40 more.
    let task0 = JobRequest { job_id: Some(60), ..request(10, 10, 1) };
    b.modify(&token, &task0, false, false, NOW + 10).unwrap();
    assert_eq!(held(&b), 6_600_000);
    // Task 1 (1 CPU) ends first: it gives back its own $0.60, and task 0's $6.00 stays.
    b.reconcile(&completion(&token, 61, EndState::Completed, 1, 600, 1), NOW + 700).unwrap();
    assert_eq!(held(&b), 6_000_000, "the grown task still to run keeps its whole hold");
    let mut last = completion(&token, 60, EndState::Completed, 10, 600, 0);
    last.submit_time = NOW - 9;
    b.reconcile(&last, NOW + 800).unwrap();
    assert_eq!((held(&b), charged(&b)), (0, 6_600_000));
    assert_clean(&b);
}

/// A ledger file (`ledger.db` in the returned directory) where one job's run was
/// charged and its hold released, clean by verify; the budget and the job's token.
fn one_run_settled() -> (tempfile::TempDir, Budget, String) {
    use asbb::core::ledger::OpenMode;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.db");
    let mut b = Budget::with_ledger(config(), Ledger::open(&path, OpenMode::CreateIfMissing, 100).unwrap());
    b.create_account("chem", Money::from_dollars(1000).unwrap(), NOW - 86_400, FOREVER, Money::ZERO, "t", NOW).unwrap();
    let token = hold(&mut b, 2, 10, 1, NOW);
    b.reconcile(&completion(&token, 41, EndState::Completed, 2, 60, 0), NOW + 100).unwrap();
    assert!(b.verify().unwrap().is_clean());
    (dir, b, token)
}

/// A run's charge is kept unique by its run's row, not by the journal's key index
/// (schema 8): an entry under the same key written behind asbb's back is found by verify.
#[test]
fn verify_finds_a_run_charged_twice() {
    let (dir, b, token) = one_run_settled();
    let conn = rusqlite::Connection::open(dir.path().join("ledger.db")).unwrap();
    conn.execute(
        "INSERT INTO journal (txn_key, part, kind, account_id, allocation_id, amount_micros, token, job_id, at)
         SELECT txn_key, part + 1, kind, account_id, allocation_id, amount_micros, token, job_id, at
         FROM journal WHERE kind = 'charge'",
        [],
    )
    .unwrap();
    let problems = b.verify().unwrap().problems;
    assert_eq!(
        problems,
        [
            "allocation 1 (chem): cached debited 120000 micros, journal says 240000".to_string(),
            format!("job {token}: cached charged 120000 micros, journal says 240000"),
            format!("run c1:41:{}:0: cost 120000 micros, charged 240000", NOW - 10),
        ]
    );
}

/// A run's release is kept unique by its run's row too (schema 9): a second entry under
/// its key, or one naming a run that does not exist, written behind asbb's back, is
/// found by verify.
#[test]
fn verify_finds_a_run_released_twice_and_a_release_with_no_run() {
    let (dir, b, token) = one_run_settled();
    let conn = rusqlite::Connection::open(dir.path().join("ledger.db")).unwrap();
    let key: String = conn.query_row("SELECT txn_key FROM journal WHERE kind = 'release'", [], |r| r.get(0)).unwrap();
    assert_eq!(key, format!("release-run:c1:41:{}:0", NOW - 10));
    conn.execute(
        "INSERT INTO journal (txn_key, part, kind, account_id, amount_micros, token, job_id, at)
         SELECT txn_key, part + 1, kind, account_id, amount_micros, token, job_id, at FROM journal WHERE kind = 'release'
         UNION ALL
         SELECT 'release-run:c1:99:0:0', 0, 'release', account_id, 1, NULL, NULL, at FROM journal WHERE kind = 'release'",
        [],
    )
    .unwrap();
    let problems = b.verify().unwrap().problems;
    assert_eq!(
        problems,
        [
            "account chem: cached held 0 micros, journal says -1200001".to_string(),
            "account chem: open holds are negative (-1200001 micros)".to_string(),
            format!("job {token}: cached hold 0 micros, journal says -1200000"),
            format!("job {token}: released more than was held (-1200000 micros)"),
            "1 run release entries have no run".to_string(),
        ]
    );
}

/// job_submit/asbb's provisional holds, as its confirm thread settles them: ripe only
/// after the grace, taken once, oldest first; a hold whose job SLURM has is confirmed
/// (its job id recorded, still held), one whose job SLURM never created is released;
/// settling either again changes nothing.
#[test]
fn provisional_holds_are_confirmed_or_released_once_after_the_grace() {
    use asbb::adapter::fields::SubmitFields;
    use asbb::adapter::hooks::{confirmed_line, Hooks, SubmitAction, PROVISIONAL_GRACE_S};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.db");
    let text = format!(
        "ledger = \"{}\"\n[policy]\nminimum_charge = \"0\"\n[partitions.debug.rates]\ncpu = 3.6\n",
        path.display()
    );
    let config = Config::parse(&text, "asbb.toml").unwrap();
    let mut b = Budget::with_ledger(
        config.clone(),
        Ledger::open(&path, asbb::core::ledger::OpenMode::CreateIfMissing, 5000).unwrap(),
    );
    b.create_account("chem", Money::from_dollars(1000).unwrap(), NOW - 86_400, FOREVER, Money::ZERO, "t", NOW).unwrap();

    let mut hooks = Hooks::new(config);
    // No hook has opened the ledger yet: the thread opens no connection of its own.
    assert_eq!(hooks.settle_provisional(&[], &["0000000001abcdef".into()], NOW).unwrap(), None);
    let fields = SubmitFields::sbatch(1000, "alice", "chem", "debug", 10);
    let mut tokens = Vec::new();
    for at in [NOW, NOW + 1] {
        match hooks.on_submit(&fields, at) {
            SubmitAction::Accept { admin_comment, .. } => {
                tokens.push(admin_comment.strip_prefix("asbb:hold=").unwrap().to_string())
            }
            other => panic!("{other:?}"),
        }
    }
    // 10 CPU-minutes at $3.60 an hour: $0.60 each.
    assert_eq!(held(&b), 1_200_000);

    assert!(hooks.ripe_unconfirmed(NOW + PROVISIONAL_GRACE_S - 1).is_empty(), "within the grace");
    assert_eq!(hooks.ripe_unconfirmed(NOW + PROVISIONAL_GRACE_S), tokens[..1]);
    assert_eq!(hooks.ripe_unconfirmed(NOW + PROVISIONAL_GRACE_S + 1), tokens[1..]);
    assert!(hooks.ripe_unconfirmed(NOW + 60).is_empty(), "each is taken once");
    // Taken but not settled (the job list or the ledger could not answer): put back,
    // first in the queue and ripe at the next check.
    hooks.requeue_unconfirmed(&tokens, NOW + 60);
    assert_eq!(hooks.ripe_unconfirmed(NOW + 60), tokens);

    let found = [(tokens[0].clone(), 42)];
    let never = [tokens[1].clone()];
    let released = hooks.settle_provisional(&found, &never, NOW + 7).unwrap().unwrap();
    assert_eq!(released, vec![(tokens[1].clone(), Money::from_micros(600_000))]);
    assert_eq!(
        confirmed_line(1, &released).text,
        format!("confirmed 1 hold(s); released $0.60 of {}: SLURM never created their jobs", tokens[1])
    );
    assert_eq!(confirmed_line(3, &[]).text, "confirmed 3 hold(s): SLURM has their jobs");
    assert_eq!(held(&b), 600_000);
    assert_eq!(sql(&b, &format!("SELECT job_id FROM jobs WHERE token = '{}' AND state = 'held'", tokens[0])), 42);
    assert_eq!(sql(&b, &format!("SELECT count(*) FROM jobs WHERE token = '{}' AND state = 'released'", tokens[1])), 1);

    // Again (a replayed round): nothing more is released, the job id stays.
    assert_eq!(hooks.settle_provisional(&[(tokens[0].clone(), 43)], &never, NOW + 9).unwrap(), Some(vec![]));
    assert_eq!(sql(&b, &format!("SELECT job_id FROM jobs WHERE token = '{}'", tokens[0])), 42);
    // A confirmed hold is never released as "never created".
    assert_eq!(hooks.settle_provisional(&[], &tokens[..1], NOW + 11).unwrap(), Some(vec![]));
    assert_eq!(held(&b), 600_000);
    assert_clean(&b);
}
