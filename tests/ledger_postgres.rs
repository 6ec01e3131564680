// SPDX-License-Identifier: GPL-2.0-or-later
//! The PostgreSQL ledger against a real server (`make test-postgres`, and `make test`):
//! a ledger copied onto it and back keeps every balance, two connections bursting on
//! one account never overdraw it, and a server killed mid-burst loses and doubles
//! nothing. (The same operations deciding alike on both backends: ledger_props.rs;
//! two real clusters on one PostgreSQL ledger: e2e_postgres.rs.)

#[path = "support/postgres.rs"]
mod pg;

use asbb::core::config::Config;
use asbb::core::decisions::{Budget, BudgetHandle, Decision, FOREVER};
use asbb::core::ledger::{Ledger, OpenMode};
use asbb::core::money::Money;
use asbb::core::pricing::job::{EndState, JobCompletion, JobRequest, Resources};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const NOW: i64 = 1_780_000_000;

fn config(ledger: &str) -> Config {
    Config::parse(
        &format!(
            r#"
ledger = "{ledger}"
[policy]
minimum_charge = "0.01"
[partitions.debug.rates]
cpu = 0.25
"#
        ),
        "asbb.toml",
    )
    .unwrap()
}

/// A job of `account` that costs $1.00: 4 CPUs for an hour at $0.25.
fn one_dollar_job(account: &str) -> JobRequest {
    JobRequest {
        user: "u".into(),
        uid: 1000,
        account: account.into(),
        partition: "debug".into(),
        resources: Resources { nodes: 1, cpus: 4, mem_mb: 1024, gpus: Default::default() },
        time_limit_min: 60,
        array_tasks: 1,
        qos: None,
        job_id: None,
        job_name: None,
    }
}

fn open(ledger: &str, mode: OpenMode) -> Budget {
    Budget::with_ledger(config(ledger), Ledger::open(Path::new(ledger), mode, 5000).unwrap())
}

/// asbb-admin on `ledger`; (stdout, stderr, exit code).
fn admin(ledger: &str, args: &[&str]) -> (String, String, i32) {
    let out = Command::new(env!("CARGO_BIN_EXE_asbb-admin"))
        .args(args)
        .env("ASBB_CONFIG", Path::new(env!("CARGO_MANIFEST_DIR")).join("etc/asbb.toml"))
        .env("ASBB_LEDGER", ledger)
        .env("ASBB_NOW", "2026-06-01T00:00:00Z")
        .output()
        .unwrap();
    (String::from_utf8(out.stdout).unwrap(), String::from_utf8(out.stderr).unwrap(), out.status.code().unwrap_or(-1))
}

/// The URL as messages show it (no parameters).
fn shown(url: &str) -> &str {
    url.split('?').next().unwrap()
}

#[test]
fn an_sqlite_ledger_copied_onto_postgresql_keeps_every_balance_and_comes_back() {
    let Some(url) = pg::new_ledger("copy") else { return };
    let dir = tempfile::tempdir().unwrap();
    let lite = dir.path().join("ledger.db");
    let lite = lite.to_str().unwrap();
    {
        let mut b = open(lite, OpenMode::CreateIfMissing);
        b.create_account("chem", Money::from_dollars(10).unwrap(), NOW - 86_400, FOREVER, Money::ZERO, "t", NOW)
            .unwrap();
        b.create_account("phys", Money::from_dollars(2).unwrap(), NOW - 86_400, FOREVER, Money::ZERO, "t", NOW)
            .unwrap();
        let mut tokens = Vec::new();
        for _ in 0..3 {
            match b.check_and_hold(&one_dollar_job("chem"), NOW).unwrap() {
                Decision::Accept { token, .. } => tokens.push(token),
                other => panic!("{other:?}"),
            }
        }
        // One ran 30 minutes ($0.50), one was cancelled, one still holds $1.00.
        let run = JobCompletion {
            cluster: "c1".into(),
            job_id: 7,
            hold_token: Some(tokens[0].clone()),
            user: "u".into(),
            account: "chem".into(),
            partition: "debug".into(),
            state: EndState::Completed,
            start_time: NOW,
            end_time: NOW + 1800,
            allocated: Some(one_dollar_job("chem").resources),
            task_count: 1,
            submit_time: NOW,
            run_index: 0,
            qos: None,
        };
        b.reconcile(&run, NOW + 1800).unwrap();
        b.release(&tokens[1], NOW + 1800).unwrap();
    }
    // A grant funding phys, with its own money.
    let (_, err, code) = admin(
        lite,
        &[
            "grant",
            "create",
            "--number",
            "NSF-1",
            "--agency",
            "NSF",
            "--pi",
            "Ada",
            "--amount",
            "100",
            "--start",
            "2026-01-01",
            "--end",
            "2026-12-31",
            "--account",
            "phys",
        ],
    );
    assert_eq!(code, 0, "{err}");
    let from = format!("sqlite:{lite}");
    let (out, err, code) = admin(lite, &["ledger", "copy", "--from", &from, "--to", &url]);
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], format!("copied 25 rows from {lite} to {}", shown(&url)));
    assert!(lines.contains(&"  jobs                   3"), "{out}");
    assert!(lines.contains(&"  journal                9"), "{out}");
    assert!(lines.contains(&"  runs                   1"), "{out}");
    assert_eq!(lines[lines.len() - 2], format!("verify: clean on {lite}, clean on {}", shown(&url)));
    assert_eq!(lines[lines.len() - 1], "ok: all 2 accounts have the same balances on both");
    // What admins see is the same on both ledgers.
    let usage = ["report", "usage", "--from", "2026-01-01", "--to", "2027-12-31", "--by"];
    for args in [
        &["account", "list"][..],
        &["account", "show", "chem"],
        &["transactions", "chem"],
        &["verify"],
        &[&usage[..], &["account,user"]].concat(),
        &[&usage[..], &["cluster", "--format", "csv"]].concat(),
        &["report", "accuracy"],
        &["job", "list", "--held"],
        &["grant", "list", "--format", "csv"],
        &["grant", "show", "NSF-1"],
        &["grant", "report", "--number", "NSF-1", "--format", "csv"],
        &["forecast", "--account", "chem"],
    ] {
        assert_eq!(admin(lite, args), admin(&url, args), "{args:?}");
    }
    // Only into an empty ledger.
    let (_, err, code) = admin(lite, &["ledger", "copy", "--from", &from, "--to", &url]);
    assert_eq!(code, 2);
    assert_eq!(
        err,
        format!(
            "asbb-admin: error: ledger {}: it already has 2 accounts rows; a ledger is copied only into an empty one\n",
            shown(&url)
        )
    );
    // And back, into a new SQLite file.
    let back = dir.path().join("back.db");
    let back = back.to_str().unwrap();
    let (out, err, code) = admin(lite, &["ledger", "copy", "--from", &url, "--to", &format!("sqlite:{back}")]);
    assert_eq!(code, 0, "{err}");
    assert!(out.ends_with("ok: all 2 accounts have the same balances on both\n"), "{out}");
    assert_eq!(admin(back, &["transactions", "chem"]), admin(lite, &["transactions", "chem"]));
    // The copy goes on where the source left off: new ids follow the copied ones.
    let (_, err, code) = admin(&url, &["deposit", "phys", "3"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        admin(&url, &["verify"]).0,
        "checked 2 accounts, 4 allocations, 10 journal entries, 3 jobs\nok: every balance matches the journal\n"
    );
}

#[test]
fn two_connections_bursting_on_one_account_never_overdraw_it() {
    let Some(url) = pg::new_ledger("burst") else { return };
    let mut admin_budget = open(&url, OpenMode::CreateIfMissing);
    admin_budget
        .create_account("shared", Money::from_dollars(30).unwrap(), NOW - 86_400, FOREVER, Money::ZERO, "t", NOW)
        .unwrap();
    let done = Arc::new(AtomicBool::new(false));
    // A third connection samples the account while both write: its open holds never
    // pass $30.00, and always equal its jobs' holds (one snapshot each).
    let sampler = {
        let (url, done) = (url.clone(), done.clone());
        std::thread::spawn(move || {
            let ledger = Ledger::open(Path::new(&url), OpenMode::MustExist, 5000).unwrap();
            let mut samples = 0;
            while !done.load(Ordering::Relaxed) {
                let (held, jobs_held) = ledger.held_and_jobs_held("shared").unwrap();
                assert!(held <= 30_000_000, "held {held} micros on an account of $30.00");
                assert_eq!(held, jobs_held);
                samples += 1;
            }
            samples
        })
    };
    let writers: Vec<_> = ["a", "b"]
        .into_iter()
        .map(|cluster| {
            let url = url.clone();
            std::thread::spawn(move || {
                let mut b = open(&url, OpenMode::MustExist);
                b.set_cluster(cluster);
                let mut accepted = 0;
                for _ in 0..25 {
                    match b.check_and_hold(&one_dollar_job("shared"), NOW).unwrap() {
                        Decision::Accept { .. } => accepted += 1,
                        Decision::Reject { reason, .. } => assert!(reason.contains("cannot cover"), "{reason}"),
                        other => panic!("{other:?}"),
                    }
                }
                accepted
            })
        })
        .collect();
    let accepted: u32 = writers.into_iter().map(|w| w.join().unwrap()).sum();
    done.store(true, Ordering::Relaxed);
    let samples = sampler.join().unwrap();
    assert_eq!(accepted, 30, "fifty $1.00 jobs on $30.00");
    assert!(samples > 10, "{samples} samples");
    assert!(admin_budget.verify().unwrap().is_clean());
}

/// A run of submissions on one connection that nobody else interrupts costs one round
/// trip each: decided from what the run's first read, and committed behind a check
/// that the ledger's clock has not moved. Another connection's hold, an admin's
/// deposit and this connection's own release each move it, and the next submission
/// decides from the ledger as it is then.
#[test]
fn a_run_of_submissions_costs_one_round_trip_each_and_still_sees_every_change() {
    let Some(url) = pg::new_ledger("optimistic") else { return };
    let dollars = |d: i64| Money::from_dollars(d).unwrap();
    let mut admin_budget = open(&url, OpenMode::CreateIfMissing);
    admin_budget.create_account("chem", dollars(10), NOW - 86_400, FOREVER, Money::ZERO, "t", NOW).unwrap();
    let mut plugin = open(&url, OpenMode::MustExist);
    let mut other = open(&url, OpenMode::MustExist);
    // (decision, round trips it took)
    let submit = |b: &mut Budget, job: &JobRequest| {
        let before = b.ledger_round_trips().unwrap();
        let decision = b.check_and_hold(job, NOW).unwrap();
        (decision, b.ledger_round_trips().unwrap() - before)
    };
    let accepted = |(d, trips): (Decision, u64)| match d {
        Decision::Accept { available_after, token, .. } => (available_after, trips, token),
        other => panic!("accepted: {other:?}"),
    };
    let job = one_dollar_job("chem");
    let (left, first_trips, first_token) = accepted(submit(&mut plugin, &job));
    assert_eq!(left, dollars(9));
    assert!(first_trips > 1, "the first decision reads the ledger under the lock: {first_trips} round trips");
    // Decided from the first's reads, in one round trip each.
    for expected in [8, 7, 6] {
        let (left, trips, _) = accepted(submit(&mut plugin, &job));
        assert_eq!((left, trips), (dollars(expected), 1));
    }
    assert_eq!(plugin.read_cache_hits(), 3);

    // Another connection's hold: the next optimistic commit finds the clock moved,
    // writes nothing, and the job is decided again under the lock.
    assert_eq!(accepted(submit(&mut other, &job)).0, dollars(5));
    let (left, trips, _) = accepted(submit(&mut plugin, &job));
    assert_eq!(left, dollars(4));
    // One for the optimistic commit that wrote nothing; five under the lock: BEGIN with
    // the lock, the account, its allocations, the latest token, and the job's row and
    // hold sent with the COMMIT.
    assert_eq!(trips, 1 + 5);
    assert_eq!(plugin.read_cache_hits(), 3, "a commit that found the ledger changed is no hit");

    // A refusal from the cache still costs a round trip: it checks that what it read holds.
    let big = JobRequest { time_limit_min: 60 * 7, ..job.clone() };
    let (refused, trips) = submit(&mut plugin, &big);
    assert!(matches!(refused, Decision::Reject { .. }), "{refused:?}");
    assert_eq!((trips, plugin.read_cache_hits()), (1, 4));
    // An admin's deposit: the same job now fits, though the cache said $4.00.
    admin_budget.deposit("chem", dollars(5), NOW - 86_400, FOREVER, None, None, "t", NOW).unwrap();
    assert_eq!(accepted(submit(&mut plugin, &big)).0, dollars(2));
    assert_eq!(plugin.read_cache_hits(), 4);

    // This connection's own release moves the clock too.
    plugin.release(&first_token, NOW).unwrap();
    assert_eq!(accepted(submit(&mut plugin, &job)).0, dollars(2));
    let (left, trips, _) = accepted(submit(&mut plugin, &job));
    assert_eq!((left, trips), (dollars(1), 1));
    assert_eq!(plugin.read_cache_hits(), 5);

    let (held, jobs_held) =
        Ledger::open(Path::new(&url), OpenMode::MustExist, 5000).unwrap().held_and_jobs_held("chem").unwrap();
    assert_eq!((held, jobs_held), (14_000_000, 14_000_000));
    assert!(admin_budget.verify().unwrap().is_clean());
}

/// A PostgreSQL ledger made before schema 11 had its clock is refused, with what to
/// do, by everything but `asbb-admin migrate`, which adds the clock and changes nothing
/// else; decisions then take their single round trip.
#[test]
fn a_ledger_made_before_the_clock_is_refused_until_migrate_adds_it() {
    let Some(url) = pg::new_ledger("clockless") else { return };
    let dollars = |d: i64| Money::from_dollars(d).unwrap();
    open(&url, OpenMode::CreateIfMissing)
        .create_account("chem", dollars(10), NOW - 86_400, FOREVER, Money::ZERO, "t", NOW)
        .unwrap();
    // As 67f83d5 made it: the schema without the clock.
    let server = pg::server().unwrap();
    let database = shown(&url).rsplit('/').next().unwrap();
    pg::admin(
        &format!("{}/{database}", server.rsplit_once('/').unwrap().0),
        "DROP FUNCTION ledger_clock_check(BIGINT); DROP FUNCTION ledger_write_lock();
         DROP FUNCTION ledger_clock_tick() CASCADE; DROP TABLE ledger_clock",
    );
    let refused = format!(
        "ledger {}: the ledger has no clock (it was made by an earlier build of schema 11); run `asbb-admin migrate` (outside slurmctld) to add it",
        shown(&url)
    );
    let e = Ledger::open(Path::new(&url), OpenMode::MustExist, 5000).err().expect("refused").to_string();
    assert_eq!(e, refused);
    let (_, err, code) = admin(&url, &["verify"]);
    assert_eq!((err.trim_end(), code), (format!("asbb-admin: error: {refused}").as_str(), 2));
    let (out, err, code) = admin(&url, &["migrate"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with(&format!("ledger {url}: schema 11 is current; added 011_clock\n")), "{out}");
    let (out, _, _) = admin(&url, &["migrate"]);
    assert!(out.starts_with(&format!("ledger {url}: schema 11 is current; nothing to do\n")), "{out}");
    let mut plugin = open(&url, OpenMode::MustExist);
    for _ in 0..2 {
        assert!(matches!(plugin.check_and_hold(&one_dollar_job("chem"), NOW).unwrap(), Decision::Accept { .. }));
    }
    let before = plugin.ledger_round_trips().unwrap();
    assert!(matches!(plugin.check_and_hold(&one_dollar_job("chem"), NOW).unwrap(), Decision::Accept { .. }));
    assert_eq!(plugin.ledger_round_trips().unwrap() - before, 1);
    assert_eq!(plugin.ledger.held_and_jobs_held("chem").unwrap(), (3_000_000, 3_000_000));
    assert!(plugin.verify().unwrap().is_clean());
}

#[test]
fn the_server_killed_mid_burst_then_restarted_loses_and_doubles_nothing() {
    // A server of its own: the others' tests share theirs.
    if pg::server().is_none() {
        return;
    }
    let server = pg::PrivateServer::start();
    let url = pg::new_ledger_on(&server.url, "crash");
    open(&url, OpenMode::CreateIfMissing)
        .create_account("chem", Money::from_dollars(1000).unwrap(), NOW - 86_400, FOREVER, Money::ZERO, "t", NOW)
        .unwrap();
    // As the plugins hold it: one connection, opened again after a ledger fault.
    let bound_ms = 200;
    let mut handle = BudgetHandle::new(config(&url), bound_ms, false);
    let (mut accepted, mut failed, mut slowest) = (Vec::new(), 0, Duration::ZERO);
    for i in 0..300 {
        if i == 100 {
            server.kill();
        }
        if i == 200 {
            server.restart();
            // The connection is opened again in the background; calls fail at once
            // until it has been.
            let waited = Instant::now();
            while let Err(e) = handle.get() {
                assert!(e.to_string().contains("connecting again in the background"), "{e}");
                assert!(waited.elapsed() < Duration::from_secs(10), "not connected again: {e}");
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let started = Instant::now();
        let result = handle.get().and_then(|b| b.check_and_hold(&one_dollar_job("chem"), NOW));
        slowest = slowest.max(started.elapsed());
        match result {
            Ok(Decision::Accept { token, .. }) => accepted.push(token),
            Ok(other) => panic!("{other:?}"),
            Err(e) => {
                assert!(e.is_ledger(), "{e}");
                assert!((100..200).contains(&i), "call {i} failed: {e}");
                if i > 100 {
                    assert!(
                        e.to_string().contains("the connection was lost; connecting again in the background"),
                        "{e}"
                    );
                }
                handle.forget_on(&e);
                failed += 1;
            }
        }
    }
    assert_eq!(failed, 100, "every call while the server was down failed, and only those");
    assert_eq!(accepted.len(), 200);
    // Each call while the server was down gave up at once (a refused connect), and no
    // call took long (a generous margin over the bound for a loaded machine).
    assert!(slowest < Duration::from_secs(2), "slowest call {slowest:?}");
    // Every accepted job's hold is there once; nothing else is held.
    let mut b = open(&url, OpenMode::MustExist);
    let (held, _) = b.ledger.held_and_jobs_held("chem").unwrap();
    assert_eq!(held, 200 * 1_000_000);
    for token in &accepted {
        b.release(token, NOW + 60).unwrap();
    }
    assert_eq!(b.ledger.held_and_jobs_held("chem").unwrap(), (0, 0));
    assert!(b.verify().unwrap().is_clean());
}

/// A server that stops answering (every process SIGSTOPped: the kernel still accepts
/// and acknowledges) costs a call at most the bound, never a hang inside slurmctld; the
/// connection is given up, and once the server answers again the next call works.
#[test]
fn a_frozen_server_costs_a_call_at_most_the_bound() {
    if pg::server().is_none() {
        return;
    }
    let server = pg::PrivateServer::start();
    let url = pg::new_ledger_on(&server.url, "frozen");
    open(&url, OpenMode::CreateIfMissing)
        .create_account("chem", Money::from_dollars(100).unwrap(), NOW - 86_400, FOREVER, Money::ZERO, "t", NOW)
        .unwrap();
    let bound_ms = 300;
    let mut handle = BudgetHandle::new(config(&url), bound_ms, false);
    assert!(matches!(handle.get().unwrap().check_and_hold(&one_dollar_job("chem"), NOW), Ok(Decision::Accept { .. })));
    server.freeze();
    // The call on the open connection gives up at the bound.
    let submit = |handle: &mut BudgetHandle| {
        let started = Instant::now();
        let result = handle.get().and_then(|b| b.check_and_hold(&one_dollar_job("chem"), NOW));
        if let Err(e) = &result {
            assert!(e.is_ledger(), "{e}");
            handle.forget_on(e);
        }
        (result, started.elapsed())
    };
    let (e, took) = submit(&mut handle);
    let e = e.unwrap_err().to_string();
    assert!(e.contains("PostgreSQL did not answer within 300 ms"), "{e}");
    assert!(took >= Duration::from_millis(290) && took < Duration::from_millis(1500), "a call took {took:?}");
    // The next ones fail at once: the connection is opened again in the background
    // (where the login gets no answer either), not on the calls.
    for _ in 0..20 {
        let (e, took) = submit(&mut handle);
        let e = e.unwrap_err().to_string();
        assert!(e.contains("the connection was lost; connecting again in the background"), "{e}");
        assert!(took < Duration::from_millis(100), "a call took {took:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
    let (e, _) = submit(&mut handle);
    let e = e.unwrap_err().to_string();
    assert_eq!(
        e,
        format!(
            "ledger {0}: the connection was lost; connecting again in the background (last try: ledger {0}: \
             PostgreSQL did not answer within 300 ms; the connection is given up)",
            shown(&url)
        )
    );
    server.thaw();
    // Connected again, in the background, within a few tries.
    let waited = Instant::now();
    let decided = loop {
        match submit(&mut handle) {
            (Err(e), _) if waited.elapsed() < Duration::from_secs(10) => {
                assert!(e.to_string().contains("connecting again in the background"), "{e}");
                std::thread::sleep(Duration::from_millis(20));
            }
            (decided, _) => break decided,
        }
    };
    assert!(matches!(decided, Ok(Decision::Accept { .. })), "{decided:?}");
    // The frozen call's transaction never committed: one hold per accepted job.
    let b = open(&url, OpenMode::MustExist);
    assert_eq!(b.ledger.held_and_jobs_held("chem").unwrap(), (2_000_000, 2_000_000));
    assert!(b.verify().unwrap().is_clean());
}
