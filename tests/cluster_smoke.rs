// SPDX-License-Identifier: GPL-2.0-or-later
//! Smoke tests of the test cluster itself (tests/support/cluster/): a plain SLURM
//! cluster without asbb plugins runs a job, shows it, cancels a held one, and two clusters
//! run side by side. Skipped unless root with SLURM installed (fails instead with ASBB_E2E=1).

mod support;

use std::time::{Duration, Instant};
use support::cluster::{self, Cluster, ClusterOptions};

#[test]
fn plain_cluster_runs_and_cancels_jobs() {
    if !cluster::require_root_and_slurm() {
        return;
    }
    let t0 = Instant::now();
    let mut c = Cluster::start(ClusterOptions::new("smoke"));
    let started = t0.elapsed();
    eprintln!("cluster {} up in {started:?} (ports {:?}, dir {})", c.name(), c.ports(), c.dir().display());

    // A trivial job runs to COMPLETED.
    let t1 = Instant::now();
    let id = c.submit_ok(&["--wrap", "sleep 1", "-t", "1"]);
    let state = c.wait_done(id);
    eprintln!("job {id} {state} after {:?}", t1.elapsed());
    assert_eq!(state, "COMPLETED", "{:?}", c.job_info(id));

    // scontrol show job still knows it after the end.
    let info = c.job_info(id).expect("scontrol show job after the end");
    assert_eq!(info.get("JobState").map(String::as_str), Some("COMPLETED"));
    assert_eq!(info.get("ExitCode").map(String::as_str), Some("0:0"));
    assert_eq!(info.get("Partition").map(String::as_str), Some("debug"));
    assert_eq!(c.job_field(id, "TimeLimit").as_deref(), Some("00:01:00"));
    let out = c.run("scontrol", &["show", "job", &id.to_string()]);
    assert!(out.status.success(), "{}", cluster::show(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains(&format!("JobId={id}")));
    assert!(c.job_output(id).is_some(), "slurm-{id}.out in the work dir");

    // A held job pends, then is cancelled.
    let held = c.submit_ok(&["-H", "-p", "batch", "--wrap", "sleep 30", "-t", "1"]);
    let state = c.wait_state(held, |s| s == "PENDING", Duration::from_secs(10));
    assert_eq!(state, "PENDING");
    assert_eq!(c.job_field(held, "Reason").as_deref(), Some("JobHeldUser"));
    assert_eq!(c.job_field(held, "Partition").as_deref(), Some("batch"));
    let out = c.run("scancel", &[&held.to_string()]);
    assert!(out.status.success(), "{}", cluster::show(&out));
    assert_eq!(c.wait_done(held), "CANCELLED");

    // A plain user submits through runuser; the job runs as that user.
    let uid = cluster::ensure_user("asbbsmoke");
    let job = c.submit_ok_as("asbbsmoke", &["--wrap", "id -u", "-t", "1"]);
    assert_eq!(c.wait_done(job), "COMPLETED", "{:?}", c.job_info(job));
    assert_eq!(c.job_field(job, "UserId"), Some(format!("asbbsmoke({uid})")));
    assert_eq!(c.job_output(job).map(|s| s.trim().to_string()), Some(uid.to_string()));
    let out = c.run_as("asbbsmoke", "scontrol", &["show", "job", &job.to_string()]);
    assert!(out.status.success(), "{}", cluster::show(&out));

    // A running job is stopped with the cluster; its processes must not outlive the cluster.
    let running = c.submit_ok(&["--wrap", "sleep 300", "-t", "10"]);
    c.wait_state(running, |s| s == "RUNNING", Duration::from_secs(20));

    assert!(c.ctld_alive());
    assert!(c.ctld_log().contains("slurmctld version"), "slurmctld log is readable");

    let t2 = Instant::now();
    c.stop();
    eprintln!("cluster stopped in {:?} (with a job still running)", t2.elapsed());
    assert!(!c.ctld_alive());
    eprintln!("total {:?}", t0.elapsed());
}

#[test]
fn ctld_restart_keeps_jobs() {
    if !cluster::require_root_and_slurm() {
        return;
    }
    let mut c = Cluster::start(ClusterOptions::new("restart").partition("aws"));
    let held = c.submit_ok(&["-H", "-p", "aws", "--wrap", "true"]);
    c.wait_state(held, |s| s == "PENDING", Duration::from_secs(10));

    let t = Instant::now();
    c.restart_ctld_hard();
    eprintln!("slurmctld kill -9 + restart in {:?}", t.elapsed());
    assert!(c.ctld_alive());
    assert_eq!(c.job_field(held, "JobState").as_deref(), Some("PENDING"));

    let t = Instant::now();
    c.restart_ctld();
    eprintln!("slurmctld graceful restart in {:?}", t.elapsed());
    let out = c.run("scontrol", &["release", &held.to_string()]);
    assert!(out.status.success(), "{}", cluster::show(&out));
    assert_eq!(c.wait_done(held), "COMPLETED");
}

#[test]
fn two_clusters_side_by_side() {
    if !cluster::require_root_and_slurm() {
        return;
    }
    let t0 = Instant::now();
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(|| Cluster::start(ClusterOptions::new("alpha")));
        let b = s.spawn(|| Cluster::start(ClusterOptions::new("beta").conf("MaxJobCount=5000")));
        (a.join().unwrap(), b.join().unwrap())
    });
    eprintln!("two clusters up in {:?}: alpha ports {:?}, beta ports {:?}", t0.elapsed(), a.ports(), b.ports());
    assert_ne!(a.ports().0, b.ports().0);
    assert_ne!(a.ports().1, b.ports().1);

    let ja = a.submit_ok(&["--wrap", "sleep 1", "-t", "1"]);
    let jb = b.submit_ok(&["--wrap", "sleep 1", "-t", "1"]);
    assert_eq!(a.wait_done(ja), "COMPLETED");
    assert_eq!(b.wait_done(jb), "COMPLETED");

    // Each cluster sees only its own ClusterName.
    let conf = |c: &Cluster| {
        let out = c.run("scontrol", &["show", "config"]);
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    assert!(conf(&a).lines().any(|l| l.starts_with("ClusterName") && l.trim_end().ends_with("alpha")));
    assert!(conf(&b).lines().any(|l| l.starts_with("ClusterName") && l.trim_end().ends_with("beta")));
    assert!(conf(&b).lines().any(|l| l.starts_with("MaxJobCount") && l.trim_end().ends_with("5000")));

    let t1 = Instant::now();
    drop(a);
    drop(b);
    eprintln!("two clusters stopped in {:?}", t1.elapsed());
}
