// SPDX-License-Identifier: GPL-2.0-or-later
//! End-to-end in PrEp mode: job_submit/asbb and prep/asbb (`PrEpPlugins=asbb`) loaded
//! by a real slurmctld beside the site's own `JobCompType=jobcomp/filetxt`, whose
//! records must still be written. Every terminal state is settled exactly once, jobs
//! cancelled while pending (which reach no PrEp hook) are released by the plugins, a
//! slurmd that loads the PrEp plugin runs jobs, and a live ledger moves from jobcomp
//! mode to PrEp mode without charging anything twice.
//!
//! Needs root, SLURM and the built plugins, as `e2e_plugins` does.

mod support;

use std::process::Command;
use std::time::{Duration, Instant};
use support::cluster;
use support::site::{submitted_id, Hook, Site, USER};

/// $0.001 per CPU-second, no minimum charge; settled through PrEp.
const PREP_TOML: &str = r#"
ledger = "{dir}/ledger.db"
[policy]
on_ledger_error = "reject"
ledger_busy_timeout_ms = 50
minimum_charge = "0"
completion_hook = "prep"
[partitions.debug.rates]
cpu = 3.6
[partitions.batch.rates]
cpu = 3.6
"#;

fn start(name: &str) -> Option<Site> {
    Site::start_hooked(name, PREP_TOML, Hook::Prep, &[], |opts| opts)
}

/// The site's own completion records (jobcomp/filetxt), one line per job end.
fn filetxt_records(site: &Site) -> String {
    std::fs::read_to_string(site.cluster.dir().join("jobcomp.txt")).unwrap_or_default()
}

fn has_record(records: &str, job_id: u32) -> bool {
    records.lines().any(|l| l.starts_with(&format!("JobId={job_id} ")))
}

/// Every charge of a token's job is one run, each charged once.
fn assert_each_run_charged_once(site: &Site, token: &str) {
    assert_eq!(
        site.sql_i64("SELECT count(DISTINCT txn_key) FROM journal WHERE kind = 'charge' AND token = ?1", token),
        site.sql_i64("SELECT count(*) FROM journal WHERE kind = 'charge' AND token = ?1", token),
        "a run of {token} was charged twice"
    );
    assert_eq!(
        site.sql_i64("SELECT count(*) FROM journal WHERE kind = 'charge' AND token = ?1", token),
        site.sql_i64("SELECT count(*) FROM runs WHERE token = ?1 AND cost_micros > 0", token),
    );
}

#[test]
fn every_terminal_state_is_settled_through_prep_beside_filetxt() {
    let Some(mut site) = start("prepstates") else { return };
    // The configuration matches asbb.toml: no plugin warns at start.
    assert!(!site.cluster.ctld_log().contains("completion_hook"), "{}", site.cluster.ctld_log_tail(20));
    let sub = |args: &[&str]| submitted_id(&site.cluster.sbatch_as(USER, args));
    let completed = sub(&["-A", "chem", "-p", "debug", "-t", "2", "--wrap", "sleep 2"]);
    let failed = sub(&["-A", "chem", "-p", "debug", "-t", "2", "--wrap", "exit 3"]);
    let running = sub(&["-A", "chem", "-p", "debug", "-t", "2", "--wrap", "sleep 60"]);
    let pending = sub(&["-A", "chem", "-p", "batch", "-t", "2", "-H", "--wrap", "true"]);
    let array = sub(&["-A", "chem", "-p", "debug", "-t", "1", "--array=1-3", "--wrap", "sleep 1"]);
    let requeued = sub(&["-A", "chem", "-p", "debug", "-t", "2", "--requeue", "--wrap", "sleep 3"]);
    let requeued_then_cancelled = sub(&["-A", "chem", "-p", "debug", "-t", "2", "--requeue", "--wrap", "sleep 60"]);
    let ids = [completed, failed, running, pending, array, requeued, requeued_then_cancelled];
    let tokens: Vec<String> = ids.iter().map(|&id| site.token_of(id)).collect();
    assert_eq!(site.held_by(&tokens[3]), 120_000, "2 CPU-minutes held for the pending job");

    // Cancelled while pending: no PrEp hook sees it; the plugins release its hold.
    let out = site.cluster.run_as(USER, "scancel", &[&pending.to_string()]);
    assert!(out.status.success(), "{}", cluster::show(&out));
    site.cluster.wait_state(running, |s| s == "RUNNING", Duration::from_secs(30));
    // Past the start second, so the cancelled run has a non-zero elapsed time.
    std::thread::sleep(Duration::from_millis(1500));
    let out = site.cluster.run_as(USER, "scancel", &[&running.to_string()]);
    assert!(out.status.success(), "{}", cluster::show(&out));
    site.cluster.wait_state(requeued, |s| s == "RUNNING", Duration::from_secs(30));
    std::thread::sleep(Duration::from_secs(1));
    let out = site.cluster.run("scontrol", &["requeue", &requeued.to_string()]);
    assert!(out.status.success(), "{}", cluster::show(&out));

    // Requeued while running, then cancelled while it waits to run again: its first
    // run is charged, and the rest of its hold released (the end of a pending job
    // reaches no PrEp hook; slurmctld keeps the first run's TRES on the record).
    site.cluster.wait_state(requeued_then_cancelled, |s| s == "RUNNING", Duration::from_secs(30));
    std::thread::sleep(Duration::from_secs(1));
    let out = site.cluster.run("scontrol", &["requeue", &requeued_then_cancelled.to_string()]);
    assert!(out.status.success(), "{}", cluster::show(&out));
    site.cluster.wait_state(requeued_then_cancelled, |s| s == "PENDING", Duration::from_secs(30));
    let out = site.cluster.run_as(USER, "scancel", &[&requeued_then_cancelled.to_string()]);
    assert!(out.status.success(), "{}", cluster::show(&out));

    assert_eq!(site.cluster.wait_done(completed), "COMPLETED");
    assert_eq!(site.cluster.wait_done(failed), "FAILED");
    assert_eq!(site.cluster.wait_done(running), "CANCELLED");
    assert_eq!(site.cluster.wait_done(pending), "CANCELLED");
    for token in &tokens[..4] {
        assert_eq!(site.wait_settled(token), "settled");
    }
    let charged = |token: &str| site.sql_i64("SELECT charged_micros FROM jobs WHERE token = ?1", token);
    assert!(charged(&tokens[0]) > 0 && charged(&tokens[2]) > 0);
    for (token, state) in [(&tokens[0], "COMPLETED"), (&tokens[1], "FAILED"), (&tokens[2], "CANCELLED")] {
        let sql = format!("SELECT count(*) FROM runs WHERE token = ?1 AND end_state = '{state}'");
        assert_eq!(site.sql_i64(&sql, token), 1, "{token}: one {state} run");
    }
    // Cancelled while pending: it never ran, nothing charged, all released.
    assert_eq!(charged(&tokens[3]), 0);
    assert_eq!(site.held_by(&tokens[3]), 0);

    assert_eq!(site.wait_settled(&tokens[4]), "settled");
    assert_eq!(site.sql_i64("SELECT count(*) FROM runs WHERE token = ?1", &tokens[4]), 3);
    let deadline = Instant::now() + Duration::from_secs(60);
    while site.sql_i64("SELECT count(*) FROM runs WHERE token = ?1", &tokens[5]) < 2 {
        assert!(Instant::now() < deadline, "requeued job not run twice; log:\n{}", site.cluster.ctld_log_tail(40));
        std::thread::sleep(Duration::from_millis(300));
    }
    assert_eq!(site.cluster.wait_done(requeued), "COMPLETED");
    assert_eq!(site.wait_settled(&tokens[5]), "settled");
    assert_eq!(site.cluster.wait_done(requeued_then_cancelled), "CANCELLED");
    assert_eq!(site.wait_settled(&tokens[6]), "settled");
    assert_eq!(site.held_by(&tokens[6]), 0);
    let runs = "SELECT count(*) FROM runs WHERE token = ?1";
    assert_eq!(site.sql_i64(runs, &tokens[6]), 2, "the requeued run and the cancelled one");
    assert_eq!(site.sql_i64(&format!("{runs} AND cost_micros > 0"), &tokens[6]), 1, "only the run that ran is charged");
    for token in &tokens {
        assert_each_run_charged_once(&site, token);
    }

    // The site's own records are still written, one per job end.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut records = filetxt_records(&site);
    while !ids.iter().all(|&id| has_record(&records, id)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
        records = filetxt_records(&site);
    }
    for id in ids {
        assert!(has_record(&records, id), "no jobcomp/filetxt record of job {id}:\n{records}");
    }
    // slurmd loaded the PrEp plugin too, ran every job and is still up.
    assert!(site.cluster.slurmd_alive(), "slurmd died:\n{}", site.cluster.slurmd_log());
    site.assert_clean();
}

#[test]
fn timed_out_and_node_failed_jobs_are_settled_through_prep() {
    let Some(mut site) = start("prepfail") else { return };
    let timed_out =
        submitted_id(&site.cluster.sbatch_as(USER, &["-A", "chem", "-p", "debug", "-t", "1", "--wrap", "sleep 300"]));
    let token = site.token_of(timed_out);
    assert_eq!(site.cluster.wait_done_timeout(timed_out, Duration::from_secs(150)), "TIMEOUT");
    assert_eq!(site.wait_settled(&token), "settled");
    assert_eq!(
        site.sql_i64("SELECT charged_micros FROM jobs WHERE token = ?1", &token),
        site.elapsed_s(timed_out) * 1_000,
        "charged for the time it ran"
    );

    let node_failed = submitted_id(
        &site.cluster.sbatch_as(USER, &["-A", "chem", "-p", "debug", "-t", "5", "--no-requeue", "--wrap", "sleep 300"]),
    );
    let token = site.token_of(node_failed);
    site.cluster.wait_state(node_failed, |s| s == "RUNNING", Duration::from_secs(30));
    std::thread::sleep(Duration::from_secs(2));
    let slurmd = site.cluster.slurmd_pid().expect("slurmd pid");
    assert!(Command::new("kill").args(["-9", &slurmd.to_string()]).status().unwrap().success());
    assert_eq!(site.cluster.wait_done_timeout(node_failed, Duration::from_secs(120)), "NODE_FAIL");
    assert_eq!(site.wait_settled(&token), "settled");
    assert_eq!(site.sql_i64("SELECT count(*) FROM runs WHERE token = ?1 AND end_state = 'NODE_FAIL'", &token), 1);
    assert!(site.sql_i64("SELECT charged_micros FROM jobs WHERE token = ?1", &token) > 0);
    let records = filetxt_records(&site);
    assert!(has_record(&records, timed_out) && has_record(&records, node_failed), "{records}");
    site.assert_clean();
}

/// A site moves a live ledger from `JobCompType=jobcomp/asbb` to `PrEpPlugins=asbb`
/// with jobs finished, running and pending across the slurmctld restart.
#[test]
fn switching_a_live_ledger_from_jobcomp_to_prep_charges_nothing_twice() {
    let jobcomp_toml = PREP_TOML.replace("completion_hook = \"prep\"\n", "");
    let Some(mut site) = Site::start_hooked("prepswitch", &jobcomp_toml, Hook::Jobcomp, &[], |opts| opts) else {
        return;
    };
    let sub = |site: &Site, args: &[&str]| submitted_id(&site.cluster.sbatch_as(USER, args));
    let done = sub(&site, &["-A", "chem", "-p", "debug", "-t", "2", "--wrap", "sleep 1"]);
    let running = sub(&site, &["-A", "chem", "-p", "debug", "-t", "2", "--wrap", "sleep 15"]);
    let pending = sub(&site, &["-A", "chem", "-p", "batch", "-t", "2", "-H", "--wrap", "true"]);
    let tokens: Vec<String> = [done, running, pending].iter().map(|&id| site.token_of(id)).collect();
    assert_eq!(site.cluster.wait_done(done), "COMPLETED");
    assert_eq!(site.wait_settled(&tokens[0]), "settled");
    site.cluster.wait_state(running, |s| s == "RUNNING", Duration::from_secs(30));

    // slurm.conf to PrEp mode; asbb.toml still says jobcomp: every plugin says so.
    site.cluster.stop_ctld();
    let conf = std::fs::read_to_string(site.cluster.conf_path()).unwrap();
    let prep_lines = Hook::Prep.conf_lines().join("\n").replace("{dir}", &site.cluster.dir().display().to_string());
    std::fs::write(site.cluster.conf_path(), conf.replace("JobCompType=jobcomp/asbb", &prep_lines)).unwrap();
    site.cluster.start_ctld();
    let warning = "asbb.toml says completion_hook = \"jobcomp\" but slurm.conf loads PrEpPlugins=asbb, not \
                   JobCompType=jobcomp/asbb: set completion_hook = \"prep\" or change slurm.conf";
    let log = site.cluster.ctld_log();
    for plugin in ["job_submit/asbb", "prep/asbb"] {
        assert!(
            log.contains(&format!("{plugin}: {warning}")),
            "no warning from {plugin}:\n{}",
            site.cluster.ctld_log_tail(30)
        );
    }
    std::fs::write(
        site.cluster.etc_dir().join("asbb.toml"),
        PREP_TOML.replace("{dir}", &site.cluster.dir().display().to_string()),
    )
    .unwrap();

    // The job that was running ends under PrEp; the pending one is cancelled.
    assert_eq!(site.cluster.wait_done(running), "COMPLETED");
    assert_eq!(site.wait_settled(&tokens[1]), "settled");
    let out = site.cluster.run_as(USER, "scancel", &[&pending.to_string()]);
    assert!(out.status.success(), "{}", cluster::show(&out));
    // prep/asbb's thread settles the cancelled job; the next job is settled as usual.
    let next = sub(&site, &["-A", "chem", "-p", "debug", "-t", "1", "--wrap", "true"]);
    assert_eq!(site.wait_settled(&tokens[2]), "settled");
    assert_eq!(site.held_by(&tokens[2]), 0);
    assert_eq!(site.cluster.wait_done(next), "COMPLETED");
    assert_eq!(site.wait_settled(&site.token_of(next)), "settled");

    for token in &tokens {
        assert_each_run_charged_once(&site, token);
    }
    assert_eq!(site.sql_i64("SELECT count(*) FROM runs WHERE token = ?1", &tokens[0]), 1, "the finished job again");
    assert_eq!(site.sql_i64("SELECT count(*) FROM runs WHERE token = ?1", &tokens[1]), 1);
    site.assert_clean();
}

/// PrEp sees no `scontrol requeue` of a finished job; the re-run is priced before it
/// can start (SLURM delays a requeued job by `cred_expire`), by prep/asbb's thread.
#[test]
fn a_finished_job_requeued_by_its_owner_is_priced_again_in_prep_mode() {
    let Some(mut site) = start("preprerun") else { return };
    site.admin_ok(&["account", "create", "once", "--limit", "0.40", "--start", "2020-01-01"]);
    let first = submitted_id(
        &site.cluster.sbatch_as(USER, &["-A", "once", "-p", "debug", "-t", "5", "--requeue", "--wrap", "true"]),
    );
    let first_token = site.token_of(first);
    assert_eq!(site.cluster.wait_done(first), "COMPLETED");
    assert_eq!(site.wait_settled(&first_token), "settled");
    // Another job holds most of what is left: a re-run of `first` ($0.30) no longer fits.
    let other =
        submitted_id(&site.cluster.sbatch_as(USER, &["-A", "once", "-p", "debug", "-t", "2", "-H", "--wrap", "true"]));
    let available = 400_000 - 120_000 - site.sql_i64("SELECT charged_micros FROM jobs WHERE token = ?1", &first_token);

    let out = site.cluster.run_as(USER, "scontrol", &["requeue", &first.to_string()]);
    assert!(out.status.success(), "{}", cluster::show(&out));
    let requeued_at = Instant::now();
    // The owner tries to make it start at once, before prep/asbb's thread looks again
    // (it looks every 2 s, and SLURM would otherwise wait cred_expire, 5 s here): the
    // update reaches job_modify, which prices the re-run first.
    let out = site.cluster.run_as(USER, "scontrol", &["update", &format!("JobId={first}"), "StartTime=now"]);
    assert!(out.status.success(), "{}", cluster::show(&out));
    let reason = format!(
        "asbb: account 'once' cannot cover this job: needs $0.30, {} available; ask your PI for funds or request less time or fewer resources",
        asbb::core::money::Money::from_micros(available)
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while site.cluster.job_field(first, "Priority").as_deref() != Some("0") && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    let rec = site.cluster.job_info(first).unwrap();
    assert_eq!((rec["JobState"].as_str(), rec["Priority"].as_str()), ("PENDING", "0"), "{rec:?}");
    assert_eq!(rec["Comment"], format!("[asbb hold] {reason}"));
    let rerun_token = site.token_of(first);
    assert_ne!(rerun_token, first_token, "the re-run has a hold of its own");
    assert!(site
        .cluster
        .ctld_log()
        .contains(&format!("job {first} (REQUEUED): requeued after it finished; held, not run: {reason}")));

    // Funded and released by its owner, it runs and is charged once.
    site.admin_ok(&["deposit", "once", "1"]);
    // StartTime=now above also undid SLURM's own guard: a requeued job waits cred_expire + 1 s
    // so that slurmd, which revoked the old run's credential, accepts the new one. Released
    // sooner, the re-run can be killed at launch ("Job credential revoked") and end FAILED.
    // That is SLURM's doing, not asbb's, so the owner waits the window out before releasing.
    let cred_window = Duration::from_secs(5 + 2);
    if let Some(rest) = cred_window.checked_sub(requeued_at.elapsed()) {
        std::thread::sleep(rest);
    }
    let out = site.cluster.run_as(USER, "scontrol", &["release", &first.to_string()]);
    assert!(out.status.success(), "{}", cluster::show(&out));
    assert_eq!(site.held_by(&rerun_token), 300_000);
    site.cluster.wait_state(first, |s| s == "COMPLETED", Duration::from_secs(60));
    assert_eq!(site.wait_settled(&rerun_token), "settled");
    assert_eq!(site.sql_i64("SELECT count(*) FROM runs WHERE token = ?1", &rerun_token), 1);
    assert!(site.cluster.run_as(USER, "scancel", &[&other.to_string()]).status.success());
    assert_eq!(site.wait_settled(&site.token_of(other)), "settled");
    site.assert_clean();
}
