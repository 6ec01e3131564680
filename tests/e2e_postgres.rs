// SPDX-License-Identifier: GPL-2.0-or-later
//! End-to-end on a PostgreSQL ledger: two real clusters (two slurmctlds with asbb's
//! plugins) share one account in one PostgreSQL database; concurrent bursts from both
//! never hold more than it has; then the server is killed (-9) mid-burst and started
//! again: every sbatch was either accepted with its hold or refused with the
//! ledger-unavailable message, slurmctld lives, and after the jobs end and reconcile
//! runs nothing is held, lost or charged twice.
//!
//! Needs root, SLURM, the built plugins and PostgreSQL (`make test-postgres`, and
//! `make test`); the server is the test's own (it kills it).

mod support;

#[path = "support/postgres.rs"]
mod pg;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use support::site::{sbatch_burst as burst, Site, USER};

/// $0.001 per CPU-second: a one-CPU five-minute job holds $0.30.
const ASBB_TOML: &str = r#"
ledger = "{ledger}"
[policy]
on_ledger_error = "reject"
ledger_busy_timeout_ms = 200
minimum_charge = "0"
low_balance_hold_days = 30
[partitions.debug.rates]
cpu = 3.6
"#;

const UNAVAILABLE: &str = "sbatch: error: asbb: the budget ledger is unavailable, so the job cannot be priced; try again shortly or contact your admins\n\
     sbatch: error: Batch job submission failed: Slurm internal error, contact system administrator\n";

/// The superuser's URL for the database of ledger URL `ledger` (for the test's reads).
fn superuser_url(server: &str, ledger: &str) -> String {
    let db = ledger.split('?').next().unwrap().rsplit('/').next().unwrap();
    format!("{}/{db}", server.rsplit_once('/').unwrap().0)
}

fn query_i64(url: &str, sql: &str) -> i64 {
    let mut client = postgres::Client::connect(url, postgres::NoTls).unwrap();
    client.query_one(sql, &[]).unwrap().get(0)
}

#[test]
fn two_clusters_on_one_postgresql_ledger_survive_the_server_killed_mid_burst() {
    if pg::server().is_none() {
        return;
    }
    let server = pg::PrivateServer::start();
    let ledger = pg::new_ledger_on(&server.url, "e2e");
    let toml = ASBB_TOML.replace("{ledger}", &ledger);
    let Some(mut a) = Site::start("e2epga", &toml, &[]) else { return };
    let Some(mut b) = Site::start_sharing("e2epgb", &toml, &a) else { return };
    let db = superuser_url(&server.url, &ledger);
    a.admin_ok(&["account", "create", "pool", "--limit", "3.00", "--start", "2020-01-01"]);

    // Both clusters burst on $3.00 (ten $0.30 jobs) while a third connection samples
    // the account: never more than $3.00 held, always its jobs' holds.
    let running = Arc::new(AtomicBool::new(true));
    let sampler = {
        let (running, db) = (running.clone(), db.clone());
        std::thread::spawn(move || {
            let mut client = postgres::Client::connect(&db, postgres::NoTls).unwrap();
            let mut samples = 0;
            while running.load(Ordering::SeqCst) {
                let row = client
                    .query_one(
                        "SELECT a.held_micros, (SELECT coalesce(sum(j.held_micros), 0)::bigint FROM jobs j
                           WHERE j.account_id = a.id) FROM accounts a WHERE a.name = 'pool'",
                        &[],
                    )
                    .unwrap();
                let (cached, rows): (i64, i64) = (row.get(0), row.get(1));
                assert_eq!(cached, rows, "the account's total is its jobs' holds");
                assert!(cached <= 3_000_000, "the pool holds {cached} µ$, more than its $3.00");
                samples += 1;
                std::thread::sleep(Duration::from_millis(2));
            }
            samples
        })
    };
    let (on_a, on_b) = (burst(&a, "pool", 10), burst(&b, "pool", 10));
    let (pool_a, refused_a) = on_a.join().unwrap();
    let (pool_b, refused_b) = on_b.join().unwrap();
    running.store(false, Ordering::SeqCst);
    let samples = sampler.join().unwrap();
    eprintln!("accepted {} on a, {} on b; {samples} samples", pool_a.len(), pool_b.len());
    assert_eq!(pool_a.len() + pool_b.len(), 10, "exactly what $3.00 covers, whichever cluster asked");
    for refusal in refused_a.iter().chain(&refused_b) {
        assert_eq!(
            refusal,
            "sbatch: error: asbb: account 'pool' cannot cover this job: needs $0.30, $0.00 available; ask your PI for funds or request less time or fewer resources\n\
             sbatch: error: Batch job submission failed: Job violates accounting/QOS policy (job submit limit, user's size and/or time limits)\n"
        );
    }
    // Each cluster's reconcile leaves the other's holds alone.
    for (site, mine, theirs, other) in [(&a, &pool_a, &pool_b, "e2epgb"), (&b, &pool_b, &pool_a, "e2epga")] {
        let out = site.admin_ok(&["reconcile", "--grace", "0"]);
        let left = if theirs.is_empty() {
            String::new()
        } else {
            format!("left {} hold(s) of cluster {other} to its own reconcile\n", theirs.len())
        };
        assert!(
            out.ends_with(&format!(
                "{left}reconcile: 0 released, 0 charged, 0 left (younger than 0 s), {} still in SLURM\n",
                mine.len()
            )),
            "{out}"
        );
    }
    assert_eq!(query_i64(&db, "SELECT held_micros FROM accounts WHERE name = 'pool'"), 3_000_000);

    // The server killed while both clusters submit, then started again.
    a.admin_ok(&["account", "create", "big", "--limit", "1000", "--start", "2020-01-01"]);
    let (on_a, on_b) = (burst(&a, "big", 30), burst(&b, "big", 30));
    std::thread::sleep(Duration::from_millis(400));
    server.kill();
    std::thread::sleep(Duration::from_millis(800));
    server.restart();
    let (mut ids_a, refused_a) = on_a.join().unwrap();
    let (mut ids_b, refused_b) = on_b.join().unwrap();
    eprintln!(
        "during the kill: accepted {} + {}, refused {} + {}",
        ids_a.len(),
        ids_b.len(),
        refused_a.len(),
        refused_b.len()
    );
    assert!(!refused_a.is_empty() || !refused_b.is_empty(), "the kill refused something");
    for refusal in refused_a.iter().chain(&refused_b) {
        assert_eq!(refusal, UNAVAILABLE);
    }
    assert!(a.cluster.ctld_alive() && b.cluster.ctld_alive(), "slurmctld survives its ledger's server");
    // After the restart both clusters price again: each plugin connects again in the
    // background, and until it has, submissions are refused at once as unavailable.
    for (site, ids) in [(&a, &mut ids_a), (&b, &mut ids_b)] {
        let args = ["-H", "-A", "big", "-p", "debug", "-t", "5", "--wrap", "true"];
        let waited = std::time::Instant::now();
        loop {
            let out = site.cluster.sbatch_as(USER, &args);
            if out.status.success() {
                ids.push(site.cluster.parse_submitted(&out, &args));
                break;
            }
            assert_eq!(String::from_utf8_lossy(&out.stderr), UNAVAILABLE);
            assert!(waited.elapsed() < Duration::from_secs(20), "not connected again after the restart");
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    // Every accepted job holds $0.30 exactly once; a refused one holds nothing (a hold
    // whose commit the kill left unanswered is released by reconcile below).
    let accepted = (ids_a.len() + ids_b.len()) as i64;
    let held = query_i64(&db, "SELECT held_micros FROM accounts WHERE name = 'big'");
    assert!(held >= accepted * 300_000, "{held} µ$ held for {accepted} accepted jobs");
    let tokens: Vec<(usize, String)> = [(&a, &ids_a), (&b, &ids_b)]
        .iter()
        .enumerate()
        .flat_map(|(i, (site, ids))| ids.iter().map(move |&id| (i, site.token_of(id))))
        .collect();
    for (_, token) in &tokens {
        assert_eq!(
            query_i64(&db, &format!("SELECT held_micros FROM jobs WHERE token = '{token}' AND state = 'held'")),
            300_000
        );
    }
    // Cancelled (the pool's ten too), every hold comes back through its cluster's
    // jobcomp; reconcile then releases any hold SLURM never heard of.
    for (site, ids) in [(&a, [&ids_a[..], &pool_a[..]].concat()), (&b, [&ids_b[..], &pool_b[..]].concat())] {
        let ids: Vec<String> = ids.iter().map(u32::to_string).collect();
        let args: Vec<&str> = ids.iter().map(String::as_str).collect();
        assert!(site.cluster.run_as(USER, "scancel", &args).status.success());
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while query_i64(&db, "SELECT count(*) FROM jobs WHERE state = 'held' AND job_id IS NOT NULL") > 0 {
        assert!(std::time::Instant::now() < deadline, "jobs still held; {}", a.cluster.ctld_log_tail(30));
        std::thread::sleep(Duration::from_millis(200));
    }
    for site in [&a, &b] {
        site.admin_ok(&["reconcile", "--grace", "0"]);
    }
    assert_eq!(query_i64(&db, "SELECT coalesce(sum(held_micros), 0)::bigint FROM accounts"), 0, "money still held");
    assert_eq!(query_i64(&db, "SELECT count(*) FROM journal WHERE kind = 'charge'"), 0, "nothing ran, nothing charged");
    let out = a.admin_ok(&["verify"]);
    assert!(out.ends_with("ok: every balance matches the journal\n"), "{out}");
    assert!(a.cluster.ctld_alive() && b.cluster.ctld_alive(), "slurmctld died");
}
