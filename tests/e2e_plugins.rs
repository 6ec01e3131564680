// SPDX-License-Identifier: GPL-2.0-or-later
//! End-to-end: job_submit/asbb and jobcomp/asbb loaded by a real slurmctld, driven
//! with real sbatch, scontrol and scancel, checking the exact text users see and the
//! ledger after every terminal state. Each test starts its own cluster.
//!
//! Needs root, SLURM and the built plugins (`make build` stages them in
//! target/plugins; `make test` runs these with ASBB_E2E=1 so a broken environment
//! fails instead of skipping).

mod support;

use std::process::Command;
use std::time::{Duration, Instant};
use support::cluster;
use support::site::{submitted_id, text, Site, USER};

/// $0.001 per CPU-second and no minimum charge: every cost is easy to check.
const ASBB_TOML: &str = r#"
ledger = "{dir}/ledger.db"
[policy]
on_ledger_error = "reject"
ledger_busy_timeout_ms = 50
minimum_charge = "0"
low_balance_hold_days = 30
[partitions.debug.rates]
cpu = 3.6
[partitions.batch.rates]
cpu = 3.6
"#;

const MICROS_PER_CPU_S: i64 = 1_000;

#[test]
fn accepted_job_holds_then_is_charged_exactly() {
    let Some(mut site) = Site::start("e2eaccept", ASBB_TOML, &[]) else { return };
    let out = site.cluster.sbatch_as(USER, &["-A", "chem", "-p", "debug", "-t", "5", "-n", "1", "--wrap", "sleep 2"]);
    let id = submitted_id(&out);
    assert_eq!(text(&out.stderr), "");
    let token = site.token_of(id);
    // 1 CPU × 5 min × $0.001/s = $0.30 held while the job runs.
    assert_eq!(site.held_by(&token), 300_000);
    assert_eq!(site.cluster.wait_done(id), "COMPLETED");
    assert_eq!(site.wait_settled(&token), "settled");
    let cpus: i64 = site.cluster.job_field(id, "NumCPUs").unwrap().parse().unwrap();
    let expected = cpus * site.elapsed_s(id) * MICROS_PER_CPU_S;
    assert!(expected > 0);
    assert_eq!(site.sql_i64("SELECT charged_micros FROM jobs WHERE token = ?1", &token), expected);
    assert_eq!(site.held_by(&token), 0);
    let show = site.admin_ok(&["account", "show", "chem", "--format", "json"]);
    let v: serde_json::Value = serde_json::from_str(&show).unwrap();
    assert_eq!(v["held"], "0.00");
    assert_eq!(v["charged"], asbb::core::money::Money::from_micros(expected).to_decimal_string());
    assert!(site
        .cluster
        .ctld_log()
        .contains("job_submit/asbb: accepted asbbuser account=chem partition=debug: held $0.30"));
    site.assert_clean();
}

#[test]
fn refusals_print_two_lines_and_hold_nothing() {
    let Some(mut site) = Site::start("e2erefuse", ASBB_TOML, &[]) else { return };
    site.admin_ok(&["account", "create", "poor", "--limit", "0.10", "--start", "2020-01-01"]);
    let cases: &[(&[&str], &str)] = &[
        (
            &["-A", "poor", "-p", "debug", "-t", "10", "--wrap", "true"],
            "sbatch: error: asbb: account 'poor' cannot cover this job: needs $0.60, $0.10 available; ask your PI for funds or request less time or fewer resources\n\
             sbatch: error: Batch job submission failed: Job violates accounting/QOS policy (job submit limit, user's size and/or time limits)\n",
        ),
        (
            &["-A", "nobody", "-p", "debug", "-t", "10", "--wrap", "true"],
            "sbatch: error: asbb: account 'nobody' has no budget in asbb; ask your admins to create one\n\
             sbatch: error: Batch job submission failed: Invalid account or account/partition combination specified\n",
        ),
        (
            &["-p", "debug", "-t", "10", "--wrap", "true"],
            "sbatch: error: asbb: no account given and no default account; submit with -A ACCOUNT\n\
             sbatch: error: Batch job submission failed: Invalid account or account/partition combination specified\n",
        ),
        (
            &["-A", "chem", "-p", "debug", "--wrap", "true"],
            "sbatch: error: asbb: job has no time limit; submit with --time (e.g. --time=2:00:00) so its cost can be estimated\n\
             sbatch: error: Batch job submission failed: Requested time limit is invalid (missing or exceeds some limit)\n",
        ),
        (
            // A name that would forge a line in slurmctld's log.
            &["-A", "chem\n[2026-01-01T00:00:00] job_submit/asbb: accepted", "-p", "debug", "-t", "10", "--wrap", "true"],
            "sbatch: error: asbb: that account name is not valid (control characters, or over 128 characters)\n\
             sbatch: error: Batch job submission failed: Invalid account or account/partition combination specified\n",
        ),
    ];
    for (args, expected) in cases {
        let out = site.cluster.sbatch_as(USER, args);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", cluster::show(&out));
        assert_eq!(text(&out.stdout), "");
        assert_eq!(text(&out.stderr), *expected, "{args:?}");
    }
    assert_eq!(site.sql_i64("SELECT count(*) FROM jobs WHERE user_name = ?1", USER), 0);
    assert!(!site.cluster.ctld_log().lines().any(|l| l.starts_with("[2026-01-01T00:00:00]")), "a forged log line");
    site.assert_clean();
}

#[test]
fn every_terminal_state_is_reconciled_once() {
    let Some(mut site) = Site::start("e2estates", ASBB_TOML, &[]) else { return };
    let sub = |args: &[&str]| submitted_id(&site.cluster.sbatch_as(USER, args));
    let failed = sub(&["-A", "chem", "-p", "debug", "-t", "2", "--wrap", "exit 3"]);
    let running = sub(&["-A", "chem", "-p", "debug", "-t", "2", "--wrap", "sleep 60"]);
    let pending = sub(&["-A", "chem", "-p", "batch", "-t", "2", "-H", "--wrap", "true"]);
    let array = sub(&["-A", "chem", "-p", "debug", "-t", "1", "--array=1-3", "--wrap", "sleep 1"]);
    let requeued = sub(&["-A", "chem", "-p", "debug", "-t", "2", "--requeue", "--wrap", "sleep 3"]);
    let tokens: Vec<String> = [failed, running, pending, array, requeued].iter().map(|&id| site.token_of(id)).collect();
    // The array holds for all three tasks: 3 × 1 min × $0.06.
    assert_eq!(site.held_by(&tokens[3]), 180_000);

    site.cluster.wait_state(running, |s| s == "RUNNING", Duration::from_secs(30));
    // Past the start second, so the cancelled run has a non-zero elapsed time.
    std::thread::sleep(Duration::from_millis(1500));
    let out = site.cluster.run_as(USER, "scancel", &[&running.to_string()]);
    assert!(out.status.success(), "{}", cluster::show(&out));
    let out = site.cluster.run_as(USER, "scancel", &[&pending.to_string()]);
    assert!(out.status.success(), "{}", cluster::show(&out));
    site.cluster.wait_state(requeued, |s| s == "RUNNING", Duration::from_secs(30));
    std::thread::sleep(Duration::from_secs(1));
    let out = site.cluster.run("scontrol", &["requeue", &requeued.to_string()]);
    assert!(out.status.success(), "{}", cluster::show(&out));

    assert_eq!(site.cluster.wait_done(failed), "FAILED");
    assert_eq!(site.cluster.wait_done(running), "CANCELLED");
    assert_eq!(site.cluster.wait_done(pending), "CANCELLED");
    assert_eq!(site.wait_settled(&tokens[0]), "settled");
    assert_eq!(site.wait_settled(&tokens[1]), "settled");
    assert_eq!(site.wait_settled(&tokens[2]), "settled");
    // A job cancelled while pending never ran: nothing charged, all released.
    assert_eq!(site.sql_i64("SELECT charged_micros FROM jobs WHERE token = ?1", &tokens[2]), 0);
    assert!(site.sql_i64("SELECT charged_micros FROM jobs WHERE token = ?1", &tokens[1]) > 0);

    assert_eq!(site.wait_settled(&tokens[3]), "settled");
    assert_eq!(site.sql_i64("SELECT count(*) FROM runs WHERE token = ?1", &tokens[3]), 3);

    let deadline = Instant::now() + Duration::from_secs(60);
    while site.sql_i64("SELECT count(*) FROM runs WHERE token = ?1", &tokens[4]) < 2 {
        assert!(Instant::now() < deadline, "requeued job not run twice; log:\n{}", site.cluster.ctld_log_tail(40));
        std::thread::sleep(Duration::from_millis(300));
    }
    assert_eq!(site.cluster.wait_done(requeued), "COMPLETED");
    // Every run is charged once: the requeued job has two runs, each charged.
    assert_eq!(
        site.sql_i64("SELECT count(DISTINCT txn_key) FROM journal WHERE kind = 'charge' AND token = ?1", &tokens[4]),
        site.sql_i64("SELECT count(*) FROM runs WHERE token = ?1 AND cost_micros > 0", &tokens[4])
    );
    site.assert_clean();
}

#[test]
fn time_limit_update_reprices_the_hold() {
    let Some(mut site) = Site::start("e2emodify", ASBB_TOML, &[]) else { return };
    let id =
        submitted_id(&site.cluster.sbatch_as(USER, &["-A", "chem", "-p", "debug", "-t", "10", "-H", "--wrap", "true"]));
    let token = site.token_of(id);
    assert_eq!(site.held_by(&token), 600_000);
    // A shorter job keeps its hold: what it does not use comes back when it ends.
    let out = site.cluster.run_as(USER, "scontrol", &["update", &format!("JobId={id}"), "TimeLimit=5"]);
    assert!(out.status.success(), "{}", cluster::show(&out));
    assert_eq!(site.cluster.job_field(id, "TimeLimit").as_deref(), Some("00:05:00"));
    assert_eq!(site.held_by(&token), 600_000);
    let out = site.cluster.run("scontrol", &["update", &format!("JobId={id}"), "TimeLimit=20"]);
    assert!(out.status.success(), "{}", cluster::show(&out));
    assert_eq!(site.held_by(&token), 1_200_000);
    // Growing past the budget is refused and the hold stays as it was.
    let out = site.cluster.run("scontrol", &["update", &format!("JobId={id}"), "TimeLimit=100-00:00:00"]);
    assert!(!out.status.success());
    assert_eq!(site.held_by(&token), 1_200_000);
    let out = site.cluster.run_as(USER, "scancel", &[&id.to_string()]);
    assert!(out.status.success());
    assert_eq!(site.wait_settled(&token), "settled");
    site.assert_clean();
}

/// slurmctld calls job_modify before it validates an update, and may refuse it after:
/// here a time limit below the job's TimeMin. Had asbb shrunk the hold for it, the job
/// would run its 10 minutes on a minute's hold.
#[test]
fn an_update_slurm_refuses_never_shrinks_the_hold() {
    let Some(mut site) = Site::start("e2eshrink", ASBB_TOML, &[]) else { return };
    let id = submitted_id(
        &site
            .cluster
            .sbatch_as(USER, &["-A", "chem", "-p", "debug", "-t", "10", "--time-min", "9", "-H", "--wrap", "true"]),
    );
    let token = site.token_of(id);
    assert_eq!(site.held_by(&token), 600_000);
    let out = update_as(&site, USER, &[&format!("JobId={id}"), "TimeLimit=1"]);
    assert!(!out.status.success(), "slurmctld should refuse a limit below TimeMin: {}", cluster::show(&out));
    assert_eq!(site.cluster.job_field(id, "TimeLimit").as_deref(), Some("00:10:00"));
    assert_eq!(site.held_by(&token), 600_000, "a refused update shrank the hold");
    assert!(site.cluster.run_as(USER, "scancel", &[&id.to_string()]).status.success());
    assert_eq!(site.wait_settled(&token), "settled");
    site.assert_clean();
}

/// `-N 1-4` may get 4 nodes and `-n 2` (no `-N`) 2, each with its `--mem`: held for
/// that many, on a partition of 8 nodes (7 of them defined for later, `FUTURE`).
#[test]
fn node_ranges_and_tasks_without_a_node_count_hold_for_the_most_nodes() {
    let toml = format!(
        "{ASBB_TOML}[partitions.wide.rates]\ncpu = 3.6\nmem_gb = 3.6\n[partitions.whole.rates]\ncpu = 3.6\n\
         [partitions.defmem.rates]\ncpu = 3.6\nmem_gb = 3.6\n"
    );
    let Some(mut site) = Site::start_with("e2enodes", &toml, &[], |o| {
        o.conf("NodeName=ghost[1-7] CPUs=1 RealMemory=1024 State=FUTURE")
            .partition("PartitionName=wide Nodes={node},ghost[1-7] DefMemPerNode=1024 MaxTime=INFINITE State=UP")
            .partition("PartitionName=whole Nodes={node} OverSubscribe=EXCLUSIVE MaxTime=INFINITE State=UP")
            .partition("PartitionName=defmem Nodes={node} DefMemPerCPU=512 MaxTime=INFINITE State=UP")
    }) else {
        return;
    };
    let wide =
        cluster::parse_oneliner(&text(&site.cluster.run("scontrol", &["-o", "show", "partition", "wide"]).stdout));
    assert_eq!(wide["TotalNodes"], "8");
    // Per node and 10 minutes: 1 CPU $0.60, 1 GB $0.60.
    let submit = |args: &[&str]| {
        let mut all = vec!["-A", "chem", "-p", "wide", "-t", "10", "-H", "--wrap", "true"];
        all.extend_from_slice(args);
        submitted_id(&site.cluster.sbatch_as(USER, &all))
    };
    let ranged = submit(&["-N", "1-4", "--mem=1G"]);
    assert_eq!(site.held_by(&site.token_of(ranged)), 4 * 1_200_000, "4 nodes, 1 CPU and 1 GB each");
    let tasks = submit(&["-n", "2", "--mem=1G"]);
    assert_eq!(site.held_by(&site.token_of(tasks)), 2 * 1_200_000, "2 tasks may get 2 nodes");
    let fixed = submit(&["-N", "1", "-n", "2", "--mem=1G"]);
    assert_eq!(site.held_by(&site.token_of(fixed)), 2 * 600_000 + 600_000, "one node: 2 CPUs, 1 GB");
    // The owner widening the range holds for the new top of it.
    let out = update_as(&site, USER, &[&format!("JobId={fixed}"), "NumNodes=1-2"]);
    assert!(out.status.success(), "{}", cluster::show(&out));
    assert_eq!(site.held_by(&site.token_of(fixed)), 2 * 600_000 + 2 * 600_000);
    // `--ntasks-per-node=2` over `-N 1-2`: 2 tasks on each of 2 nodes. slurmctld writes
    // num_tasks=2 into the record after job_submit: a longer limit still holds for 4.
    // (Without --mem, the partition's DefMemPerNode: 1 GB on each node.)
    let per_node = submit(&["-N", "1-2", "--ntasks-per-node=2"]);
    assert_eq!(site.held_by(&site.token_of(per_node)), 4 * 600_000 + 2 * 600_000);
    let out = update_as(&site, USER, &[&format!("JobId={per_node}"), "TimeLimit=20"]);
    assert!(out.status.success(), "{}", cluster::show(&out));
    assert_eq!(site.held_by(&site.token_of(per_node)), 4 * 1_200_000 + 2 * 1_200_000);
    // `--mincpus=2`: 2 CPUs on its node.
    let min_cpus = submit(&["-N", "1", "--mincpus=2"]);
    assert_eq!(site.held_by(&site.token_of(min_cpus)), 2 * 600_000 + 600_000);
    // A partition with OverSubscribe=EXCLUSIVE gives every job whole nodes, as
    // --exclusive does: all the node's CPUs, listed first or second.
    let node_cpus: i64 = site
        .cluster
        .run("scontrol", &["-o", "show", "node"])
        .stdout
        .split(|&b| b == b' ')
        .find_map(|f| std::str::from_utf8(f).ok()?.strip_prefix("CPUTot=")?.parse().ok())
        .expect("CPUTot");
    let whole = submitted_id(
        &site.cluster.sbatch_as(USER, &["-A", "chem", "-p", "whole", "-n", "1", "-t", "10", "-H", "--wrap", "true"]),
    );
    assert_eq!(site.held_by(&site.token_of(whole)), node_cpus * 600_000, "{node_cpus} CPUs");
    let listed = submitted_id(
        &site
            .cluster
            .sbatch_as(USER, &["-A", "chem", "-p", "debug,whole", "-n", "1", "-t", "10", "-H", "--wrap", "true"]),
    );
    assert_eq!(site.held_by(&site.token_of(listed)), node_cpus * 600_000);
    // `-w` naming 4 nodes runs on all 4 (slurmctld raises the node count after
    // job_submit; it may keep the job or refuse it for the FUTURE ones).
    let named = format!("{},ghost[1-3]", site.cluster.node_name());
    let out = site
        .cluster
        .sbatch_as(USER, &["-A", "chem", "-p", "wide", "-t", "10", "-H", "-w", &named, "--mem=1G", "--wrap", "true"]);
    assert_eq!(
        site.sql_i64("SELECT estimate_micros FROM jobs WHERE ?1 = ?1 ORDER BY token DESC LIMIT 1", ""),
        4 * 1_200_000
    );
    if out.status.success() {
        let id = submitted_id(&out).to_string();
        assert!(site.cluster.run_as(USER, "scancel", &[&id]).status.success());
    }
    // So does a pending job its owner points at those nodes (`ReqNodeList`, which
    // scontrol sends without a node count): held for 4 whether or not slurmctld keeps
    // the update (a growth it refuses stays held until the job ends).
    let pointed = submit(&["--mem=1G"]);
    assert_eq!(site.held_by(&site.token_of(pointed)), 1_200_000);
    update_as(&site, USER, &[&format!("JobId={pointed}"), &format!("ReqNodeList={named}")]);
    assert_eq!(site.held_by(&site.token_of(pointed)), 4 * 1_200_000);
    // Without --mem, a partition's DefMemPerCPU: 512 MB for each of 2 CPUs.
    let default_mem = submitted_id(
        &site
            .cluster
            .sbatch_as(USER, &["-A", "chem", "-p", "defmem", "-N", "1", "-n", "2", "-t", "10", "-H", "--wrap", "true"]),
    );
    assert_eq!(site.held_by(&site.token_of(default_mem)), 2 * 600_000 + 600_000, "2 CPUs, 1 GB");
    for id in [ranged, tasks, fixed, per_node, min_cpus, whole, listed, default_mem, pointed] {
        assert!(site.cluster.run_as(USER, "scancel", &[&id.to_string()]).status.success());
        assert_eq!(site.wait_settled(&site.token_of(id)), "settled");
    }
    site.wait_sql_i64("SELECT held_micros FROM accounts WHERE name = ?1", "chem", 0, Duration::from_secs(30));
    site.assert_clean();
}

/// GPUs per socket, and CPUs and memory per GPU, are priced. This node has no GPUs:
/// slurmctld may keep a held job it can never run, or refuse it after job_submit (the
/// plugin then releases its hold once SLURM has no such job); either way what asbb
/// priced the job at is in the ledger.
#[test]
fn gpus_per_socket_and_cpus_and_memory_per_gpu_are_priced() {
    let toml = ASBB_TOML.replace(
        "[partitions.debug.rates]\ncpu = 3.6\n",
        "[partitions.debug.rates]\ncpu = 3.6\nmem_gb = 3.6\n\"gres/gpu\" = 3.6\n\
         [partitions.gpudef.rates]\ncpu = 3.6\nmem_gb = 3.6\n\"gres/gpu\" = 3.6\n",
    );
    // slurm.conf gives each GPU 1 GB; partition gpudef gives it 4 CPUs too.
    let Some(mut site) = Site::start_with("e2egpus", &toml, &[], |o| {
        o.conf("GresTypes=gpu")
            .conf("DefMemPerGPU=1024")
            .partition("PartitionName=gpudef Nodes={node} DefCpuPerGPU=4 MaxTime=INFINITE State=UP")
    }) else {
        return;
    };
    // 10 minutes: $0.60 a CPU, a GB or a GPU.
    let priced = |partition: &str, args: &[&str]| -> i64 {
        let mut all = vec!["-A", "chem", "-p", partition, "-t", "10", "-H"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["--wrap", "true"]);
        let out = site.cluster.sbatch_as(USER, &all);
        let estimate = site.sql_i64("SELECT estimate_micros FROM jobs WHERE ?1 = ?1 ORDER BY token DESC LIMIT 1", "");
        if out.status.success() {
            let id = submitted_id(&out).to_string();
            assert!(site.cluster.run_as(USER, "scancel", &[&id]).status.success());
        }
        estimate
    };
    let dollars = |gpus: i64, cpus: i64, gb: i64| (gpus + cpus + gb) * 600_000;
    assert_eq!(priced("debug", &["--gpus-per-socket=2", "--sockets-per-node=2"]), dollars(4, 1, 4), "4 GPUs");
    assert_eq!(priced("debug", &["--gpus=2", "--cpus-per-gpu=3"]), dollars(2, 6, 2), "2 GPUs, 6 CPUs");
    assert_eq!(
        priced("debug", &["--gpus=2", "--mem-per-gpu=2048"]),
        dollars(2, 1, 4),
        "--mem-per-gpu over the default"
    );
    assert_eq!(priced("gpudef", &["--gpus=2"]), dollars(2, 8, 2), "DefCpuPerGPU=4 and slurm.conf's DefMemPerGPU");
    assert_eq!(priced("gpudef", &["--gpus=2", "-c", "1", "--mem=1024"]), dollars(2, 1, 1), "-c and --mem over them");
    site.wait_sql_i64("SELECT held_micros FROM accounts WHERE name = ?1", "chem", 0, Duration::from_secs(30));
    site.assert_clean();
}

/// select/cons_tres allocates CPUs a core at a time under CR_Core and a socket at a
/// time under CR_Socket, and the run is charged for every CPU it was given: on a node
/// of 1 socket, 2 cores and 2 threads a core (slurm.conf's word, `config_overrides`),
/// `-n 1` gets 2 CPUs, or 4 in a CR_Socket partition, and `--mem-per-cpu` follows
/// them; `--ntasks-per-core=1` and `--hint=nomultithread` give each task whole cores;
/// with `--core-spec` (AllowSpecResourcesUsage) it gets the whole node. Each job
/// is held for the whole of its limit at the rate its run is charged.
#[test]
fn cores_and_sockets_are_held_as_slurm_allocates_them() {
    let toml = format!("{ASBB_TOML}[partitions.socket.rates]\ncpu = 3.6\nmem_gb = 3.6\n");
    let Some(mut site) = Site::start_with("e2esmt", &toml, &[], |o| {
        o.node_layout("CPUs=4 Boards=1 SocketsPerBoard=1 CoresPerSocket=2 ThreadsPerCore=2")
            .conf("AllowSpecResourcesUsage=YES")
            .partition(
                "PartitionName=socket Nodes={node} SelectTypeParameters=CR_Socket_Memory MaxTime=INFINITE State=UP",
            )
    }) else {
        return;
    };
    let submit = |partition: &str, args: &[&str]| submit_held(&site, partition, args);
    // 10 minutes: $0.60 a CPU or a GB.
    let (core, core_token) = submit("debug", &["-n", "1"]);
    assert_eq!(site.held_by(&core_token), 1_200_000, "a core: 2 CPUs");
    let (tasks, tasks_token) = submit("debug", &["-n", "3"]);
    assert_eq!(site.held_by(&tasks_token), 2_400_000, "3 tasks: 2 cores, 4 CPUs");
    let (socket, socket_token) = submit("socket", &["-n", "1", "--mem-per-cpu=256"]);
    assert_eq!(site.held_by(&socket_token), 4 * 600_000 + 600_000, "a socket: 4 CPUs, and 256 MB each");
    // A task that keeps its cores to itself, or uses one thread of each: whole cores.
    let (own_cores, own_cores_token) = submit("debug", &["-n", "2", "--ntasks-per-core=1"]);
    assert_eq!(site.held_by(&own_cores_token), 2_400_000, "2 tasks, a core each: 4 CPUs");
    let (one_thread, one_thread_token) = submit("debug", &["-n", "1", "-c", "2", "--hint=nomultithread"]);
    assert_eq!(site.held_by(&one_thread_token), 2_400_000, "2 CPUs of one thread each: 2 cores");
    assert!(site.cluster.run_as(USER, "scancel", &[&one_thread.to_string()]).status.success());
    // `--core-spec` (allowed here): slurmctld gives the job whole nodes.
    let (spec, spec_token) = submit("debug", &["-n", "1", "--core-spec=1"]);
    assert_eq!(site.held_by(&spec_token), 4 * 600_000, "the whole node: 4 CPUs");
    assert!(site.cluster.run_as(USER, "scancel", &[&tasks.to_string()]).status.success());
    release_and_check_rate(&site, core, &core_token, "2");
    release_and_check_rate(&site, socket, &socket_token, "4");
    release_and_check_rate(&site, spec, &spec_token, "4");
    release_and_check_rate(&site, own_cores, &own_cores_token, "4");
    site.assert_clean();
}

/// A partition's `MaxMemPerCPU` gives a job asking for more memory per CPU more CPUs
/// per task (and one asking for memory per node more CPUs on each node) when slurmctld
/// schedules it, after job_submit; the run is charged for them, so they are held.
#[test]
fn a_memory_cap_per_cpu_is_held_as_the_cpus_it_adds() {
    let toml = format!("{ASBB_TOML}[partitions.capped.rates]\ncpu = 3.6\nmem_gb = 3.6\n");
    let Some(mut site) = Site::start_with("e2ememcap", &toml, &[], |o| {
        o.node_layout("CPUs=4 Boards=1 SocketsPerBoard=1 CoresPerSocket=4 ThreadsPerCore=1")
            .partition("PartitionName=capped Nodes={node} MaxMemPerCPU=256 SelectTypeParameters=CR_Core_Memory MaxTime=INFINITE State=UP")
    }) else {
        return;
    };
    // 10 minutes: $0.60 a CPU or a GB.
    let (per_cpu, per_cpu_token) = submit_held(&site, "capped", &["-n", "1", "--mem-per-cpu=1024"]);
    assert_eq!(site.held_by(&per_cpu_token), 4 * 600_000 + 600_000, "4 CPUs of 256 MB");
    let (per_node, per_node_token) = submit_held(&site, "capped", &["-n", "1", "--mem=512"]);
    assert_eq!(site.held_by(&per_node_token), 2 * 600_000 + 300_000, "512 MB needs 2 CPUs");
    release_and_check_rate(&site, per_cpu, &per_cpu_token, "4");
    release_and_check_rate(&site, per_node, &per_node_token, "2");
    site.assert_clean();
}

/// `SelectTypeParameters=CR_Core,CR_ONE_TASK_PER_CORE` gives each task a core of its
/// own: `-n 2` on nodes of 2 threads a core is allocated, and charged, 4 CPUs.
#[test]
fn one_task_per_core_is_held_a_core_per_task() {
    let Some(mut site) = Site::start_with("e2eonetask", ASBB_TOML, &[], |o| {
        o.node_layout("CPUs=4 Boards=1 SocketsPerBoard=1 CoresPerSocket=2 ThreadsPerCore=2")
            .conf("SelectTypeParameters=CR_Core,CR_ONE_TASK_PER_CORE")
    }) else {
        return;
    };
    let (id, token) = submit_held(&site, "debug", &["-n", "2"]);
    assert_eq!(site.held_by(&token), 4 * 600_000, "2 tasks, a core each");
    release_and_check_rate(&site, id, &token, "4");
    site.assert_clean();
}

/// select/linear allocates nothing but whole nodes: `-n 1` is held for every CPU of
/// the node it gets (4 here), as its run is charged.
#[test]
fn select_linear_jobs_are_held_for_whole_nodes() {
    let Some(mut site) = Site::start_with("e2elinear", ASBB_TOML, &[], |o| {
        o.conf("SelectType=select/linear")
            .conf("SelectTypeParameters=CR_Memory")
            .node_layout("CPUs=4 Boards=1 SocketsPerBoard=1 CoresPerSocket=4 ThreadsPerCore=1")
    }) else {
        return;
    };
    let (id, token) = submit_held(&site, "debug", &["-n", "1"]);
    assert_eq!(site.held_by(&token), 4 * 600_000, "the whole node: 4 CPUs");
    release_and_check_rate(&site, id, &token, "4");
    site.assert_clean();
}

/// Submits a held 10-minute `sleep 2` in account chem; its job id and hold token.
fn submit_held(site: &Site, partition: &str, args: &[&str]) -> (u32, String) {
    let mut all = vec!["-A", "chem", "-p", partition, "-t", "10", "-H"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--wrap", "sleep 2"]);
    let id = submitted_id(&site.cluster.sbatch_as(USER, &all));
    (id, site.token_of(id))
}

/// Releases a held job, waits for its end and checks that SLURM gave it `cpus` CPUs
/// and that it was held for its whole 10-minute limit at the rate it was charged.
fn release_and_check_rate(site: &Site, id: u32, token: &str, cpus: &str) {
    assert!(site.cluster.run_as(USER, "scontrol", &["release", &id.to_string()]).status.success());
    assert_eq!(site.cluster.wait_done(id), "COMPLETED");
    assert_eq!(site.wait_settled(token), "settled");
    assert_eq!(site.cluster.job_field(id, "NumCPUs").as_deref(), Some(cpus), "job {id}");
    let charged = site.sql_i64("SELECT charged_micros FROM jobs WHERE token = ?1", token);
    let held = site.sql_i64("SELECT hold_placed_micros FROM jobs WHERE token = ?1", token);
    let elapsed_s = site.elapsed_s(id);
    assert!(charged > 0 && elapsed_s > 0, "job {id}: charged {charged} in {elapsed_s} s");
    assert_eq!(held * elapsed_s, charged * 600, "job {id}: held for 600 s at the rate charged");
}

#[test]
fn short_account_is_held_and_owner_release_is_rechecked() {
    let Some(mut site) = Site::start("e2ehold", ASBB_TOML, &[]) else { return };
    site.admin_ok(&["account", "create", "tight", "--limit", "0.10", "--start", "2020-01-01"]);
    let soon = chrono::Utc::now().date_naive() + chrono::Days::new(10);
    site.admin_ok(&["deposit", "tight", "10", "--valid-from", &soon.to_string(), "--memo", "next quarter"]);
    let out = site.cluster.sbatch_as(USER, &["-A", "tight", "-p", "debug", "-t", "10", "--wrap", "true"]);
    let id = submitted_id(&out);
    let reason = format!(
        "asbb: account 'tight' is short of funds (needs $0.60, $0.10 available); held until the allocation starting {soon}"
    );
    assert_eq!(text(&out.stderr), format!("sbatch: {reason}\n"));
    let rec = site.cluster.job_info(id).unwrap();
    assert_eq!(rec["JobState"], "PENDING");
    assert_eq!(rec["Priority"], "0");
    // The reason stays readable in `scontrol show job`.
    assert_eq!(rec["Comment"], format!("[asbb hold] {reason}"));
    let token = site.token_of(id);
    assert_eq!(site.held_by(&token), 0);

    // The owner cannot release it past the budget.
    let out = site.cluster.run_as(USER, "scontrol", &["release", &id.to_string()]);
    assert!(!out.status.success(), "release should be refused: {}", cluster::show(&out));
    if cluster::slurm_release() >= (23, 2) {
        // job_modify's err_msg reaches the user (22.05 has none).
        assert!(text(&out.stderr).contains(&reason), "{}", cluster::show(&out));
    }
    assert_eq!(site.cluster.job_field(id, "Priority").as_deref(), Some("0"));
    assert!(site.cluster.ctld_log().contains("release refused, stays held"));

    // Once money arrives, the owner's release goes through and the job runs.
    site.admin_ok(&["deposit", "tight", "5"]);
    let out = site.cluster.run_as(USER, "scontrol", &["release", &id.to_string()]);
    assert!(out.status.success(), "{}", cluster::show(&out));
    assert_eq!(site.cluster.wait_done(id), "COMPLETED");
    assert_eq!(site.wait_settled(&token), "settled");
    site.assert_clean();
}

#[test]
fn ledger_errors_and_panics_leave_slurmctld_running() {
    let Some(mut site) = Site::start("e2efault", ASBB_TOML, &[("ASBB_TEST_PANIC_JOB_NAME", "asbb-panic-test")]) else {
        return;
    };
    // A panic inside the plugin refuses the job; slurmctld lives. Only plugins built
    // with the test-only hook can be made to panic (`make test` builds them and says so
    // with ASBB_TEST_HOOKS=1); installed and packaged plugins have no such hook.
    if std::env::var("ASBB_TEST_HOOKS").as_deref() == Ok("1") {
        let out = site
            .cluster
            .sbatch_as(USER, &["-A", "chem", "-p", "debug", "-t", "1", "-J", "asbb-panic-test", "--wrap", "true"]);
        assert_eq!(out.status.code(), Some(1), "{}", cluster::show(&out));
        assert!(
            text(&out.stderr).starts_with("sbatch: error: asbb: internal error; job not submitted"),
            "{}",
            cluster::show(&out)
        );
        assert!(site.cluster.ctld_alive());
    } else {
        eprintln!("ledger_errors_and_panics_leave_slurmctld_running: no panic case (plugins without test hooks)");
    }
    // The ledger gone: policy reject, one clear message.
    let moved = site.cluster.dir().join("ledger.moved");
    std::fs::rename(site.ledger(), &moved).unwrap();
    let out = site.cluster.sbatch_as(USER, &["-A", "chem", "-p", "debug", "-t", "1", "--wrap", "true"]);
    assert_eq!(
        text(&out.stderr),
        "sbatch: error: asbb: the budget ledger is unavailable, so the job cannot be priced; try again shortly or contact your admins\n\
         sbatch: error: Batch job submission failed: Slurm internal error, contact system administrator\n"
    );
    assert!(site.cluster.ctld_alive());
    // Back again: the next job is handled normally.
    std::fs::rename(&moved, site.ledger()).unwrap();
    let id = submitted_id(&site.cluster.sbatch_as(USER, &["-A", "chem", "-p", "debug", "-t", "1", "--wrap", "true"]));
    let token = site.token_of(id);
    assert_eq!(site.cluster.wait_done(id), "COMPLETED");
    assert_eq!(site.wait_settled(&token), "settled");
    site.assert_clean();
}

#[test]
fn timed_out_job_is_charged_for_its_minute() {
    let Some(mut site) = Site::start("e2etimeout", ASBB_TOML, &[]) else { return };
    let id =
        submitted_id(&site.cluster.sbatch_as(USER, &["-A", "chem", "-p", "debug", "-t", "1", "--wrap", "sleep 300"]));
    let token = site.token_of(id);
    assert_eq!(site.cluster.wait_done_timeout(id, Duration::from_secs(150)), "TIMEOUT");
    assert_eq!(site.wait_settled(&token), "settled");
    let cpus: i64 = site.cluster.job_field(id, "NumCPUs").unwrap().parse().unwrap();
    let elapsed = site.elapsed_s(id);
    assert!(elapsed >= 60, "ran {elapsed} s");
    assert_eq!(
        site.sql_i64("SELECT charged_micros FROM jobs WHERE token = ?1", &token),
        cpus * elapsed * MICROS_PER_CPU_S
    );
    assert_eq!(site.sql_i64("SELECT count(*) FROM runs WHERE token = ?1 AND end_state = 'TIMEOUT'", &token), 1);
    site.assert_clean();
}

#[test]
fn node_failure_is_charged_and_released() {
    let Some(mut site) = Site::start("e2enodefail", ASBB_TOML, &[]) else { return };
    let id = submitted_id(
        &site.cluster.sbatch_as(USER, &["-A", "chem", "-p", "debug", "-t", "5", "--no-requeue", "--wrap", "sleep 300"]),
    );
    let token = site.token_of(id);
    site.cluster.wait_state(id, |s| s == "RUNNING", Duration::from_secs(30));
    std::thread::sleep(Duration::from_secs(2));
    let slurmd = site.cluster.slurmd_pid().expect("slurmd pid");
    assert!(Command::new("kill").args(["-9", &slurmd.to_string()]).status().unwrap().success());
    // SlurmdTimeout=10: the node is declared down and its job ends NODE_FAIL.
    assert_eq!(site.cluster.wait_done_timeout(id, Duration::from_secs(120)), "NODE_FAIL");
    assert_eq!(site.wait_settled(&token), "settled");
    assert!(site.sql_i64("SELECT charged_micros FROM jobs WHERE token = ?1", &token) > 0);
    assert_eq!(site.sql_i64("SELECT count(*) FROM runs WHERE token = ?1 AND end_state = 'NODE_FAIL'", &token), 1);
    site.assert_clean();
}

#[test]
fn job_metadata_reaches_the_ledger_and_is_enforced() {
    let Some(mut site) = Site::start("e2emeta", ASBB_TOML, &[]) else { return };
    let job = |args: &[&str]| site.token_of(submitted_id(&site.cluster.sbatch_as(USER, args)));
    let from_comment = job(&[
        "-A",
        "chem",
        "-t",
        "10",
        "-H",
        "--comment",
        "run 7 asbb:domain=climate,project=p42,max_cost=1",
        "--wrap",
        "true",
    ]);
    let from_env =
        job(&["-A", "chem", "-t", "10", "-H", "--export=ALL,ASBB_DOMAIN=bio,ASBB_HINT_IO=heavy", "--wrap", "true"]);
    let from_wckey = job(&["-A", "chem", "-t", "10", "-H", "--wckey=w7", "--wrap", "true"]);
    let field = |token: &str, col: &str| -> String {
        let conn =
            rusqlite::Connection::open_with_flags(site.ledger(), rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
        conn.query_row(&format!("SELECT coalesce({col}, '') FROM jobs WHERE token = ?1"), [token], |r| r.get(0))
            .unwrap()
    };
    assert_eq!(field(&from_comment, "research_domain"), "climate");
    assert_eq!(field(&from_comment, "project_code"), "p42");
    assert_eq!(field(&from_env, "research_domain"), "bio");
    assert!(field(&from_env, "metadata_json").contains("\"io\":\"heavy\""));
    assert_eq!(field(&from_wckey, "project_code"), "w7");

    let policy = "sbatch: error: Batch job submission failed: Job violates accounting/QOS policy (job submit limit, user's size and/or time limits)\n";
    // A grant too small for the job: a job that names it is refused, though the account could pay.
    site.admin_ok(&[
        "grant",
        "create",
        "--number",
        "NSF-TINY",
        "--agency",
        "NSF",
        "--pi",
        "Ada",
        "--amount",
        "0.50",
        "--start",
        "2020-01-01",
        "--end",
        "2099-12-31",
        "--indirect-rate",
        "0",
        "--account",
        "chem",
    ]);
    let cases: &[(&str, &str)] = &[
        ("asbb:grant_number=NSF-TINY", "sbatch: error: asbb: grant 'NSF-TINY' cannot cover this job: needs $0.60, $0.50 of it available to account 'chem'; ask your PI for funds or request less time or fewer resources\n"),
        ("asbb:max_cost=0.10", "sbatch: error: asbb: estimate $0.60 is above your max_cost $0.10; request less time or fewer resources, or raise max_cost\n"),
        ("asbb:colour=blue", "sbatch: error: asbb: bad job metadata 'colour=blue' in --comment: unknown key; use grant, project, domain, mpi, max_cost or hint.<key>\n"),
        ("asbb:grant=NSF-0", "sbatch: error: asbb: grant 'NSF-0' is not known to asbb; check the grant number\n"),
    ];
    for (comment, first_line) in cases {
        let out = site.cluster.sbatch_as(USER, &["-A", "chem", "-t", "10", "--comment", comment, "--wrap", "true"]);
        assert_eq!(out.status.code(), Some(1), "{}", cluster::show(&out));
        assert_eq!(text(&out.stderr), format!("{first_line}{policy}"), "{comment}");
    }
    // A job that names a grant with money runs and is charged to that grant only: every
    // charge of it lands on the grant's allocation, and the grant shows it spent.
    site.admin_ok(&[
        "grant",
        "create",
        "--number",
        "NIH-R01",
        "--agency",
        "NIH",
        "--pi",
        "Ada",
        "--amount",
        "100",
        "--start",
        "2020-01-01",
        "--end",
        "2099-12-31",
        "--account",
        "chem",
    ]);
    let directed = submitted_id(
        &site
            .cluster
            .sbatch_as(USER, &["-A", "chem", "-t", "1", "--comment", "asbb:grant=NIH-R01", "--wrap", "sleep 2"]),
    );
    let directed_token = site.token_of(directed);
    assert_eq!(site.cluster.wait_done(directed), "COMPLETED");
    assert_eq!(site.wait_settled(&directed_token), "settled");
    let charged = site.sql_i64("SELECT charged_micros FROM jobs WHERE token = ?1", &directed_token);
    assert!(charged > 0);
    let on_grant = site.sql_i64(
        "SELECT coalesce(sum(j.amount_micros), 0) FROM journal j JOIN allocations al ON al.id = j.allocation_id
         JOIN grant_accounts g ON g.id = al.grant_id
         WHERE j.token = ?1 AND j.kind = 'charge' AND g.grant_number = 'NIH-R01'",
        &directed_token,
    );
    assert_eq!(on_grant, charged, "the whole charge is on NIH-R01's allocation");
    let show = |n: &str| -> serde_json::Value {
        serde_json::from_str(&site.admin_ok(&["grant", "show", n, "--format", "json"])).unwrap()
    };
    assert_eq!(show("NIH-R01")["direct_spent"], asbb::core::money::Money::from_micros(charged).to_decimal_string());
    assert_eq!(show("NSF-TINY")["direct_spent"], "0.00");

    let out = site.cluster.run("scancel", &["-u", USER]);
    assert!(out.status.success());
    for token in [from_comment, from_env, from_wckey] {
        assert_eq!(site.wait_settled(&token), "settled");
    }
    site.assert_clean();
}

#[test]
fn held_jobs_are_approved_denied_or_released_by_a_deposit() {
    let toml = format!("{ASBB_TOML}[accounts.chem]\napproval_threshold = \"0.50\"\n");
    let Some(mut site) = Site::start("e2eapprove", &toml, &[]) else { return };
    let submit = |account: &str| site.cluster.sbatch_as(USER, &["-A", account, "-t", "10", "--wrap", "sleep 1"]);
    let out = submit("chem");
    let approved = submitted_id(&out);
    assert_eq!(text(&out.stderr), "sbatch: asbb: needs approval, estimate $0.60 > $0.50\n");
    let denied = submitted_id(&submit("chem"));
    let list = site.admin_ok(&["job", "list", "--held", "--format", "csv"]);
    let lines: Vec<&str> = list.lines().collect();
    assert_eq!(lines[0], "jobid,user,account,partition,estimate,submitted,state,reason");
    assert!(lines[1].starts_with(&format!("{approved},{USER},chem,debug,0.60,")), "{list}");
    assert!(lines[1].ends_with(",awaiting_approval,\"asbb: needs approval, estimate $0.60 > $0.50\""), "{list}");
    assert_eq!(lines.len(), 3);

    // The owner cannot release it; an admin approves it.
    assert!(!site.cluster.run_as(USER, "scontrol", &["release", &approved.to_string()]).status.success());
    assert_eq!(
        site.admin_ok(&["job", "approve", &approved.to_string()]),
        format!("approved job {approved}: holding $0.60; released\n")
    );
    assert_eq!(site.cluster.wait_done(approved), "COMPLETED");
    assert_eq!(site.wait_settled(&site.token_of(approved)), "settled");

    assert_eq!(
        site.admin_ok(&["job", "deny", &denied.to_string(), "--reason", "too big for this month"]),
        format!("denied job {denied}: cancelled (too big for this month)\n")
    );
    assert_eq!(site.cluster.wait_done(denied), "CANCELLED");
    assert_eq!(site.cluster.job_field(denied, "Comment").as_deref(), Some("asbb: denied: too big for this month"));
    let token = site.token_of(denied);
    assert_eq!(site.wait_settled(&token), "denied");
    // Its owner requeues it: the re-run stays held, and its owner cannot release it.
    let out = site.cluster.run_as(USER, "scontrol", &["requeue", &denied.to_string()]);
    assert!(out.status.success(), "{}", cluster::show(&out));
    let rec = site.cluster.job_info(denied).unwrap();
    assert_eq!((rec["JobState"].as_str(), rec["Priority"].as_str()), ("PENDING", "0"), "{rec:?}");
    let reason = format!("asbb: job {denied} was denied by an admin; requeueing it does not let it run");
    assert_eq!(rec["Comment"], format!("asbb: denied: too big for this month [asbb hold] {reason}"));
    assert!(!site.cluster.run_as(USER, "scontrol", &["release", &denied.to_string()]).status.success());
    assert_eq!(site.cluster.job_field(denied, "Priority").as_deref(), Some("0"));
    assert!(site.cluster.run("scancel", &[&denied.to_string()]).status.success());
    assert_eq!(site.wait_settled(&site.token_of(denied)), "denied");

    // Short of funds with money coming: held; a deposit with --release-held lets it run.
    site.admin_ok(&["account", "create", "tight", "--limit", "0.10", "--start", "2020-01-01"]);
    let soon = chrono::Utc::now().date_naive() + chrono::Days::new(10);
    site.admin_ok(&["deposit", "tight", "10", "--valid-from", &soon.to_string()]);
    let waiting = submitted_id(&submit("tight"));
    let out = site.admin_ok(&["deposit", "tight", "1", "--release-held"]);
    assert_eq!(out, format!("deposited $1.00 to tight; available $0.50\nreleased job {waiting}: holding $0.60\n"));
    assert_eq!(site.cluster.wait_done(waiting), "COMPLETED");
    assert_eq!(site.wait_settled(&site.token_of(waiting)), "settled");
    site.assert_clean();
}

#[test]
fn each_user_sees_only_their_own_accounts_through_the_service() {
    let Some(mut site) = Site::start("e2eusers", ASBB_TOML, &[]) else { return };
    const OTHER: &str = "asbbuser2";
    cluster::ensure_user(OTHER);
    site.admin_ok(&["account", "create", "phys", "--limit", "50", "--start", "2020-01-01"]);
    // Membership follows from the accounts a user has run jobs in.
    for (user, account) in [(USER, "chem"), (OTHER, "phys")] {
        let id = submitted_id(&site.cluster.sbatch_as(user, &["-A", account, "-t", "1", "--wrap", "true"]));
        let token = site.token_of(id);
        assert_eq!(site.wait_settled(&token), "settled");
    }
    let socket = site.cluster.dir().join("asbb.sock");
    let mut server = Command::new(env!("CARGO_BIN_EXE_asbb-admin"))
        .args(["serve", "--socket", socket.to_str().unwrap()])
        .env("ASBB_CONFIG", site.cluster.etc_dir().join("asbb.toml"))
        .env_remove("ASBB_LEDGER")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !socket.exists() {
        assert!(Instant::now() < deadline, "asbb-admin serve made no socket");
        std::thread::sleep(Duration::from_millis(100));
    }
    let config = format!("ASBB_CONFIG={}", site.cluster.etc_dir().join("asbb.toml").display());
    let sock = format!("ASBB_SOCKET={}", socket.display());
    let asbb = |user: &str, args: &[&str]| {
        let mut full = vec![config.as_str(), sock.as_str(), env!("CARGO_BIN_EXE_asbb")];
        full.extend_from_slice(args);
        let out = site.cluster.run_as(user, "env", &full);
        assert!(out.status.success(), "asbb {args:?} as {user}: {}", cluster::show(&out));
        text(&out.stdout)
    };
    let mine = asbb(USER, &["status"]);
    assert!(mine.lines().nth(1).is_some_and(|l| l.starts_with("chem ")), "{mine}");
    assert!(!mine.contains("phys"), "{USER} sees phys: {mine}");
    let theirs = asbb(OTHER, &["status"]);
    assert!(theirs.lines().nth(1).is_some_and(|l| l.starts_with("phys ")), "{theirs}");
    assert!(!theirs.contains("chem"), "{OTHER} sees chem: {theirs}");
    assert_eq!(asbb(OTHER, &["remaining"]).lines().count(), 1);
    // Asking for someone else's account is refused.
    let out = site.cluster.run_as(OTHER, "env", &[&config, &sock, env!("CARGO_BIN_EXE_asbb"), "status", "-A", "chem"]);
    assert!(!out.status.success(), "{}", cluster::show(&out));
    let _ = server.kill();
    let _ = server.wait();
    site.assert_clean();
}

// ----- what ordinary and hostile users can do with SLURM's own verbs --------

/// A second unprivileged user, for attacks on someone else's job.
const OTHER: &str = "asbbother";

/// `scontrol update` as `user`, tried again while slurmctld answers "Resource
/// temporarily unavailable" (24.11 does while its scheduler holds the job).
fn update_as(site: &Site, user: &str, args: &[&str]) -> std::process::Output {
    let args: Vec<&str> = std::iter::once("update").chain(args.iter().copied()).collect();
    for _ in 0..20 {
        let out = site.cluster.run_as(user, "scontrol", &args);
        if !text(&out.stderr).contains("Resource temporarily unavailable") {
            return out;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    site.cluster.run_as(user, "scontrol", &args)
}

fn held_on(site: &Site, account: &str) -> i64 {
    site.sql_i64("SELECT held_micros FROM accounts WHERE name = ?1", account)
}

#[test]
fn only_the_owner_and_operators_move_a_hold_and_refused_updates_change_nothing() {
    let Some(mut site) = Site::start("e2eauth", ASBB_TOML, &[]) else { return };
    cluster::ensure_user(OTHER);
    let pending =
        submitted_id(&site.cluster.sbatch_as(USER, &["-A", "chem", "-p", "debug", "-t", "10", "-H", "--wrap", "true"]));
    let token = site.token_of(pending);
    assert_eq!(site.held_by(&token), 600_000);

    // Another user's update of a pending job: slurmctld refuses it after job_modify ran.
    let job = format!("JobId={pending}");
    let out = site.cluster.run_as(OTHER, "scontrol", &["update", &job, "TimeLimit=3-00:00:00", "NumCPUs=2"]);
    assert!(!out.status.success(), "{}", cluster::show(&out));
    assert_eq!(site.held_by(&token), 600_000, "someone else's refused update moved the hold");
    if cluster::slurm_release() < (23, 2) {
        // 22.05 calls job_modify before it checks who asks (24.11 refuses first): asbb
        // refuses a cost change from anyone but the owner or an operator (an account
        // coordinator would get past slurmctld).
        assert!(site.cluster.ctld_log().contains(&format!(
            "job {pending}: update refused: asbb: only the owner of job {pending} or an operator can change what it costs"
        )));
        // What changes no cost goes on to slurmctld, which refuses it.
        let out = site.cluster.run_as(OTHER, "scontrol", &["update", &job, "Comment=mine"]);
        assert!(text(&out.stderr).contains("Invalid user id"), "{}", cluster::show(&out));
        assert!(site.cluster.ctld_log().contains(&format!(
            "job {pending}: update from a user who is neither its owner nor an operator; ledger unchanged"
        )));
    } else {
        assert!(text(&out.stderr).contains("Invalid user id"), "{}", cluster::show(&out));
    }

    // The owner may not lengthen a running job; slurmctld refuses, the hold stays.
    let running =
        submitted_id(&site.cluster.sbatch_as(USER, &["-A", "chem", "-p", "debug", "-t", "5", "--wrap", "sleep 60"]));
    let running_token = site.token_of(running);
    site.cluster.wait_state(running, |s| s == "RUNNING", Duration::from_secs(30));
    let out = site.cluster.run_as(USER, "scontrol", &["update", &format!("JobId={running}"), "TimeLimit=50"]);
    assert!(!out.status.success(), "{}", cluster::show(&out));
    assert_eq!(text(&out.stderr), "Access/permission denied for job ".to_string() + &running.to_string() + "\n");
    assert_eq!(site.held_by(&running_token), 300_000);
    // Nor move it to another partition.
    let out = site.cluster.run_as(USER, "scontrol", &["update", &format!("JobId={running}"), "Partition=batch"]);
    assert!(!out.status.success(), "{}", cluster::show(&out));
    assert_eq!(site.held_by(&running_token), 300_000);

    for id in [pending, running] {
        assert!(site.cluster.run_as(USER, "scancel", &[&id.to_string()]).status.success());
    }
    assert_eq!(site.wait_settled(&token), "settled");
    assert_eq!(site.wait_settled(&running_token), "settled");
    site.assert_clean();
}

#[test]
fn holds_for_jobs_slurm_never_creates_are_released_by_the_plugin() {
    let Some(mut site) = Site::start("e2eunborn", ASBB_TOML, &[]) else { return };
    // --test-only reaches job_submit exactly like a submission (proc_req.c, will_run):
    // the plugin holds, then releases once SLURM has no such job.
    let probed = Instant::now();
    let out = site.cluster.sbatch_as(USER, &["--test-only", "-A", "chem", "-p", "debug", "-t", "10", "--wrap", "true"]);
    assert!(out.status.success(), "{}", cluster::show(&out));
    assert!(text(&out.stderr).starts_with("sbatch: Job "), "{}", cluster::show(&out));
    assert_eq!(held_on(&site, "chem"), 600_000, "the provisional hold");

    // The plugin's own thread releases it once the grace has passed, with no hook call
    // (every 2 s, so 5 to 7 s after the probe, later on a loaded machine).
    let held_sql = "SELECT held_micros FROM accounts WHERE name = ?1";
    site.wait_sql_i64(held_sql, "chem", 0, Duration::from_secs(30));
    let released_after_s = probed.elapsed().as_secs_f64();
    println!("test_only_hold_released_after_s={released_after_s:.1}");
    // (The grace counts whole seconds: 5 of them pass 4 to 5 s after the hold, which
    // came after `probed`.)
    assert!(released_after_s >= 4.0, "released within the grace: {released_after_s:.1} s");
    assert!(site.cluster.ctld_log().contains("released $0.60 of "));
    assert_eq!(
        site.sql_i64("SELECT count(*) FROM jobs WHERE state = 'released' AND reason LIKE ?1", "SLURM never created%"),
        1
    );
    // A real job (`-A CHEM`: SLURM lowercases account names after job_submit) is
    // priced on chem and confirmed (its job id recorded) by the thread, never released.
    let out = site.cluster.sbatch_as(USER, &["-A", "CHEM", "-p", "debug", "-t", "1", "-H", "--wrap", "true"]);
    let real = submitted_id(&out);
    assert_eq!(site.cluster.job_field(real, "Account").as_deref(), Some("chem"));
    assert_eq!(held_on(&site, "chem"), 60_000, "only the real job's hold");
    let real_token = site.token_of(real);
    site.wait_sql_i64(
        "SELECT ifnull(job_id, 0) FROM jobs WHERE token = ?1",
        &real_token,
        real as i64,
        Duration::from_secs(30),
    );
    assert!(site.cluster.ctld_log().contains("confirmed 1 hold(s): SLURM has their jobs"));
    assert_eq!(site.held_by(&real_token), 60_000);
    assert!(site.cluster.run_as(USER, "scancel", &[&real.to_string()]).status.success());
    assert_eq!(site.wait_settled(&real_token), "settled");
    let out = site.admin_ok(&["reconcile", "--grace", "0"]);
    assert!(out.contains("reconcile: 0 released, 0 charged"), "{out}");
    site.assert_clean();
}

#[test]
fn arrays_are_counted_fast_and_a_split_task_never_shrinks_the_rest() {
    let Some(mut site) = Site::start("e2earray", ASBB_TOML, &[]) else { return };
    let id = submitted_id(
        &site.cluster.sbatch_as(USER, &["-A", "chem", "-p", "debug", "-t", "5", "-H", "--array=0-3", "--wrap", "true"]),
    );
    let token = site.token_of(id);
    // Refused before anything is counted (timed on a warm plugin: the job above came first).
    let out =
        site.cluster.sbatch_as(USER, &["-A", "chem", "-p", "debug", "-t", "5", "--array=0-9999999", "--wrap", "true"]);
    assert_eq!(
        text(&out.stderr),
        "sbatch: error: asbb: request too large: array index 9999999 (this cluster's MaxArraySize is 1001)\n\
         sbatch: error: Batch job submission failed: Invalid Trackable RESource (TRES) specification\n"
    );
    let log = site.cluster.ctld_log();
    let line = log.lines().find(|l| l.contains("array index 9999999")).unwrap();
    let us = line.rsplit_once('(').and_then(|(_, t)| t.split_once(" us, cpu ")).unwrap().0;
    println!("array_0_9999999_job_submit_us={us}");

    assert_eq!(site.held_by(&token), 1_200_000, "4 tasks x 5 CPU-minutes");
    // Updating one task splits it off; the update reaches job_modify as that task alone.
    let out = site.cluster.run_as(USER, "scontrol", &["update", &format!("JobId={id}_1"), "TimeLimit=2"]);
    assert!(out.status.success(), "{}", cluster::show(&out));
    assert_eq!(site.held_by(&token), 1_200_000, "a split task must not shrink the other tasks' hold");
    let out = site.cluster.run("scontrol", &["update", &format!("JobId={id}_2"), "TimeLimit=10"]);
    assert!(out.status.success(), "{}", cluster::show(&out));
    assert_eq!(site.held_by(&token), 1_500_000, "one task grew by 5 CPU-minutes");
    assert!(site.cluster.run_as(USER, "scancel", &[&id.to_string()]).status.success());
    assert_eq!(site.wait_settled(&token), "settled");
    site.assert_clean();
}

/// An array waiting for approval is one hold for all its tasks. An operator who splits
/// one task off (an update of `<id>_2`) and releases that task places the hold for
/// every task: the rest of the array must not run later on one task's hold.
#[test]
fn a_waiting_array_released_through_one_split_task_holds_for_every_task() {
    let toml = format!("{ASBB_TOML}[accounts.chem]\napproval_threshold = \"0.50\"\n");
    let Some(mut site) = Site::start("e2esplitrel", &toml, &[]) else { return };
    // 4 tasks of 1 CPU for 10 minutes: $0.60 a task, $2.40 in all.
    let out =
        site.cluster.sbatch_as(USER, &["-A", "chem", "-p", "debug", "-t", "10", "--array=0-3", "--wrap", "sleep 1"]);
    let id = submitted_id(&out);
    assert_eq!(text(&out.stderr), "sbatch: asbb: needs approval, estimate $2.40 > $0.50\n");
    let token = site.token_of(id);
    assert_eq!(site.held_by(&token), 0);
    let out = site.cluster.run("scontrol", &["update", &format!("JobId={id}_2"), "TimeLimit=10"]);
    assert!(out.status.success(), "{}", cluster::show(&out));
    assert_eq!(site.held_by(&token), 0, "an update does not release a waiting job");
    let out = site.cluster.run("scontrol", &["release", &format!("{id}_2")]);
    assert!(out.status.success(), "{}", cluster::show(&out));
    assert_eq!(site.held_by(&token), 2_400_000, "the hold covers all 4 tasks, not the one released");
    assert!(site.cluster.run("scancel", &[&id.to_string()]).status.success());
    site.wait_settled(&token);
    assert_eq!(site.held_by(&token), 0);
    site.assert_clean();
}

/// An array some of whose tasks have run is still repriced when the rest grows: its
/// owner's update of a task still pending holds what it adds, or the rest would run
/// on the hold of the smaller tasks it was submitted as.
#[test]
fn an_array_with_tasks_done_holds_for_what_an_update_adds() {
    let Some(mut site) = Site::start("e2earraydone", ASBB_TOML, &[]) else { return };
    // 2 tasks of 1 CPU for 5 minutes, held by their owner: $0.30 a task.
    let id = submitted_id(
        &site.cluster.sbatch_as(USER, &["-A", "chem", "-p", "debug", "-t", "5", "-H", "--array=0-1", "--wrap", "true"]),
    );
    let token = site.token_of(id);
    assert_eq!(site.held_by(&token), 600_000);
    // Task 0 runs and ends; task 1 stays held.
    let out = site.cluster.run_as(USER, "scontrol", &["release", &format!("{id}_0")]);
    assert!(out.status.success(), "{}", cluster::show(&out));
    site.wait_sql_i64("SELECT tasks_done FROM jobs WHERE token = ?1", &token, 1, Duration::from_secs(60));
    assert_eq!(site.held_by(&token), 300_000, "task 0 released its share");
    // Its owner grows task 1 to 2 CPUs: $0.60 instead of $0.30.
    let out = site.cluster.run_as(USER, "scontrol", &["update", &format!("JobId={id}_1"), "NumCPUs=2"]);
    assert!(out.status.success(), "{}", cluster::show(&out));
    assert_eq!(site.held_by(&token), 600_000, "the task still to run holds what the update adds");
    assert!(site.cluster.run_as(USER, "scancel", &[&id.to_string()]).status.success());
    assert_eq!(site.wait_settled(&token), "settled");
    site.assert_clean();
}

/// A task its owner split off an array and grew keeps its whole hold while the other
/// tasks end: each completion gives back the array's first per-task share, never an
/// average that the grown task's money went into.
#[test]
fn a_grown_task_keeps_its_hold_while_the_rest_of_its_array_ends() {
    let Some(mut site) = Site::start("e2egrown", ASBB_TOML, &[]) else { return };
    // 2 tasks of 1 CPU for 5 minutes, held by their owner: $0.30 a task.
    let id = submitted_id(
        &site.cluster.sbatch_as(USER, &["-A", "chem", "-p", "debug", "-t", "5", "-H", "--array=0-1", "--wrap", "true"]),
    );
    let token = site.token_of(id);
    // Its owner splits task 0 off and grows it to 2 CPUs: $0.60, $0.30 more.
    let out = site.cluster.run_as(USER, "scontrol", &["update", &format!("JobId={id}_0"), "NumCPUs=2"]);
    assert!(out.status.success(), "{}", cluster::show(&out));
    assert_eq!(site.held_by(&token), 900_000);
    // Task 1 runs and ends first: it gives back its own $0.30.
    let out = site.cluster.run_as(USER, "scontrol", &["release", &format!("{id}_1")]);
    assert!(out.status.success(), "{}", cluster::show(&out));
    site.wait_sql_i64("SELECT tasks_done FROM jobs WHERE token = ?1", &token, 1, Duration::from_secs(60));
    assert_eq!(site.held_by(&token), 600_000, "task 0, still to run, keeps its whole $0.60");
    assert!(site.cluster.run_as(USER, "scancel", &[&id.to_string()]).status.success());
    assert_eq!(site.wait_settled(&token), "settled");
    site.assert_clean();
}

/// A minimum charge, an approval threshold, a dearer partition, an exempt one, and a
/// default time limit for jobs that give none.
const SHAPES_TOML: &str = r#"
ledger = "{dir}/ledger.db"
[policy]
on_ledger_error = "reject"
ledger_busy_timeout_ms = 50
minimum_charge = "0.05"
low_balance_hold_days = 30
approval_threshold = "2.00"
exempt_partitions = ["free"]
[partitions.debug]
default_time_limit_min = 7
[partitions.debug.rates]
cpu = 3.6
mem_gb = 0.036
[partitions.batch.rates]
cpu = 7.2
"#;

#[test]
fn shapes_that_were_under_priced_and_approval_shortcuts() {
    let Some(mut site) = Site::start_with("e2eshapes", SHAPES_TOML, &[], |o| o.partition("free")) else { return };

    // A run that starts and ends within the same second pays the minimum charge.
    let instant =
        submitted_id(&site.cluster.sbatch_as(USER, &["-A", "chem", "-p", "debug", "-t", "1", "--wrap", "true"]));
    let instant_token = site.token_of(instant);
    assert_eq!(site.cluster.wait_done(instant), "COMPLETED");
    assert_eq!(site.wait_settled(&instant_token), "settled");
    assert_eq!(site.sql_i64("SELECT charged_micros FROM jobs WHERE token = ?1", &instant_token), 50_000);

    // No --time on a partition without DefaultTime: priced at asbb's default, and the
    // job gets that limit, so it cannot run past its hold.
    // Without --mem where no DefMemPerCPU applies, SLURM gives the job all of the
    // node's memory (and charges it): priced so.
    let node = cluster::parse_oneliner(&text(&site.cluster.run("scontrol", &["-o", "show", "node"]).stdout));
    let (node_cpus, node_mem_mb): (u32, u64) = (node["CPUTot"].parse().unwrap(), node["RealMemory"].parse().unwrap());
    let config = asbb::core::config::Config::parse(SHAPES_TOML, "shapes.toml").unwrap();
    let priced_for = |cpus: u32, mem_mb: u64, time_limit_min: u32| {
        let resources = asbb::core::pricing::job::Resources { nodes: 1, cpus, mem_mb, gpus: Default::default() };
        let req = asbb::core::pricing::job::JobRequest {
            user: USER.into(),
            uid: 0,
            account: "chem".into(),
            partition: "debug".into(),
            resources,
            time_limit_min,
            array_tasks: 1,
            qos: None,
            job_id: None,
            job_name: None,
        };
        asbb::core::pricing::cost::estimate(&config, &req).unwrap().micros()
    };
    let untimed = submitted_id(&site.cluster.sbatch_as(USER, &["-A", "chem", "-p", "debug", "-H", "--wrap", "true"]));
    assert_eq!(site.cluster.job_field(untimed, "TimeLimit").as_deref(), Some("00:07:00"));
    assert_eq!(site.held_by(&site.token_of(untimed)), priced_for(1, node_mem_mb, 7));
    assert!(priced_for(1, node_mem_mb, 7) > 420_000, "more than the CPU alone");

    // `--mem=0` is all of a node's memory, `--exclusive` all of its CPUs: priced so.
    let price = |cpus: u32, mem_mb: u64| priced_for(cpus, mem_mb, 10);
    let all_mem = submitted_id(
        &site.cluster.sbatch_as(USER, &["-A", "chem", "-p", "debug", "-t", "10", "--mem=0", "-H", "--wrap", "true"]),
    );
    assert_eq!(site.held_by(&site.token_of(all_mem)), price(1, node_mem_mb), "{node_mem_mb} MB");
    let whole = submitted_id(
        &site
            .cluster
            .sbatch_as(USER, &["-A", "chem", "-p", "debug", "-t", "10", "--exclusive", "-H", "--wrap", "true"]),
    );
    // (Without --mem either: all of its memory too.)
    assert_eq!(site.held_by(&site.token_of(whole)), price(node_cpus, node_mem_mb), "{node_cpus} CPUs");

    // A job that passed without a hold cannot be moved where asbb charges.
    let free =
        submitted_id(&site.cluster.sbatch_as(USER, &["-A", "chem", "-p", "free", "-t", "10", "-H", "--wrap", "true"]));
    let held_before = held_on(&site, "chem");
    let out = update_as(&site, USER, &[&format!("JobId={free}"), "Partition=debug"]);
    assert!(!out.status.success(), "{}", cluster::show(&out));
    let reason = format!(
        "asbb: job {free} has no budget hold (partition free is exempt); it cannot be moved where asbb charges for jobs: cancel it and submit it again"
    );
    if cluster::slurm_release() >= (23, 2) {
        assert!(text(&out.stderr).contains(&reason), "{}", cluster::show(&out));
    }
    assert!(site.cluster.ctld_log().contains(&format!("job {free}: update refused: {reason}")));
    assert_eq!(site.cluster.job_field(free, "Partition").as_deref(), Some("free"));
    assert_eq!(held_on(&site, "chem"), held_before);
    // Anything that keeps it exempt goes through.
    let out = update_as(&site, USER, &[&format!("JobId={free}"), "TimeLimit=20"]);
    assert!(out.status.success(), "{}", cluster::show(&out));
    assert!(site.cluster.run_as(USER, "scancel", &[&free.to_string()]).status.success());

    // Several partitions: priced at the dearest.
    let both = submitted_id(
        &site.cluster.sbatch_as(USER, &["-A", "chem", "-p", "debug,batch", "-t", "10", "-H", "--wrap", "true"]),
    );
    assert_eq!(site.held_by(&site.token_of(both)), 1_200_000);
    // Exempt only when all are: free,batch is priced at batch.
    let half_free = submitted_id(
        &site.cluster.sbatch_as(USER, &["-A", "chem", "-p", "free,batch", "-t", "10", "-H", "--wrap", "true"]),
    );
    assert_eq!(site.held_by(&site.token_of(half_free)), 1_200_000);

    // Waiting for funds, grown past the approval threshold, released by its owner once
    // money came: the threshold is re-checked, so it stays held.
    site.admin_ok(&["account", "create", "tight", "--limit", "0.10", "--start", "2020-01-01"]);
    let soon = chrono::Utc::now().date_naive() + chrono::Days::new(10);
    site.admin_ok(&["deposit", "tight", "10", "--valid-from", &soon.to_string()]);
    let short =
        submitted_id(&site.cluster.sbatch_as(USER, &["-A", "tight", "-p", "debug", "-t", "10", "--wrap", "true"]));
    let out = site.cluster.run_as(USER, "scontrol", &["update", &format!("JobId={short}"), "TimeLimit=60"]);
    assert!(out.status.success(), "{}", cluster::show(&out));
    site.admin_ok(&["deposit", "tight", "10"]);
    let out = site.cluster.run_as(USER, "scontrol", &["release", &short.to_string()]);
    assert!(!out.status.success(), "{}", cluster::show(&out));
    assert_eq!(site.cluster.job_field(short, "Priority").as_deref(), Some("0"));
    // (An hour of 1 CPU and, without --mem, all of the node's memory.)
    let estimate = asbb::core::money::Money::from_micros(priced_for(1, node_mem_mb, 60));
    assert_eq!(
        site.cluster.job_field(short, "Reason").unwrap(),
        format!("asbb:_needs_approval,_estimate_{estimate}_>_$2.00")
    );
    assert_eq!(held_on(&site, "tight"), 0);

    // Waiting for approval, moved to an exempt partition and released: still held.
    let big = submitted_id(&site.cluster.sbatch_as(USER, &["-A", "chem", "-p", "debug", "-t", "60", "--wrap", "true"]));
    let out = update_as(&site, USER, &[&format!("JobId={big}"), "Partition=free"]);
    assert!(out.status.success(), "{}", cluster::show(&out));
    let out = site.cluster.run_as(USER, "scontrol", &["release", &big.to_string()]);
    assert!(!out.status.success(), "{}", cluster::show(&out));
    assert_eq!(site.cluster.job_field(big, "Priority").as_deref(), Some("0"));
    assert!(site.cluster.ctld_log().contains("an exempt partition does not release it"));

    for id in [all_mem, whole, untimed, both, half_free, short, big] {
        assert!(site.cluster.run("scancel", &[&id.to_string()]).status.success());
    }
    for id in [all_mem, whole, untimed, both, half_free, short, big] {
        site.wait_settled(&site.token_of(id));
    }
    site.assert_clean();
}

#[test]
fn a_finished_job_requeued_by_its_owner_is_priced_again() {
    let Some(mut site) = Site::start("e2ererun", ASBB_TOML, &[]) else { return };
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

    // The owner requeues the finished job: no job_submit call happens in SLURM, so
    // jobcomp prices the re-run and holds the job instead of letting it run unbudgeted.
    let out = site.cluster.run_as(USER, "scontrol", &["requeue", &first.to_string()]);
    assert!(out.status.success(), "{}", cluster::show(&out));
    let reason = format!(
        "asbb: account 'once' cannot cover this job: needs $0.30, {} available; ask your PI for funds or request less time or fewer resources",
        asbb::core::money::Money::from_micros(available)
    );
    let rec = site.cluster.job_info(first).unwrap();
    assert_eq!((rec["JobState"].as_str(), rec["Priority"].as_str()), ("PENDING", "0"), "{rec:?}");
    assert_eq!(rec["Comment"], format!("[asbb hold] {reason}"));
    let rerun_token = site.token_of(first);
    assert_ne!(rerun_token, first_token, "the re-run has a hold of its own");
    assert_eq!(
        site.sql_i64("SELECT count(*) FROM jobs WHERE token = ?1 AND state = 'awaiting_funds'", &rerun_token),
        1
    );
    assert!(site
        .cluster
        .ctld_log()
        .contains(&format!("job {first} (REQUEUED): requeued after it finished; held, not run: {reason}")));

    // Its owner's release is re-checked like any held job's.
    let out = site.cluster.run_as(USER, "scontrol", &["release", &first.to_string()]);
    assert!(!out.status.success(), "{}", cluster::show(&out));
    assert_eq!(site.cluster.job_field(first, "Priority").as_deref(), Some("0"));
    site.admin_ok(&["deposit", "once", "1"]);
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

#[test]
fn hetjob_components_srun_and_salloc_are_each_held_and_charged() {
    let Some(mut site) = Site::start("e2ehet", ASBB_TOML, &[]) else { return };
    site.admin_ok(&["account", "create", "tight", "--limit", "0.50", "--start", "2020-01-01"]);
    let het = |account: &str| -> Vec<String> {
        let component = ["-A", account, "-p", "debug", "-n", "1", "--mem=100"];
        let mut args: Vec<String> = component.iter().chain(&["-t", "5", "-H", ":"]).map(|a| a.to_string()).collect();
        args.extend(component.iter().chain(&["-t", "10", "--wrap", "true"]).map(|a| a.to_string()));
        args
    };
    let sbatch = |args: &[String]| site.cluster.sbatch_as(USER, &args.iter().map(String::as_str).collect::<Vec<_>>());
    // Each component of a hetjob reaches job_submit on its own
    // (_slurm_rpc_submit_batch_het_job) and becomes a job record of its own: each is
    // held for itself, the second judged after the first's hold.
    let id = submitted_id(&sbatch(&het("chem")));
    let tokens: Vec<String> = site
        .cluster
        .job_records(id)
        .iter()
        .map(|r| r["AdminComment"].strip_prefix("asbb:hold=").expect("a hold token").to_string())
        .collect();
    assert_eq!(tokens.len(), 2);
    assert_eq!((site.held_by(&tokens[0]), site.held_by(&tokens[1])), (300_000, 600_000));
    assert!(site.cluster.run_as(USER, "scancel", &[&id.to_string()]).status.success());
    for token in &tokens {
        assert_eq!(site.wait_settled(token), "settled");
    }
    assert_eq!(held_on(&site, "chem"), 0);

    // One the account cannot cover as a whole is refused, naming the component; the
    // hold of the component asbb had accepted goes once SLURM has created no job.
    let out = sbatch(&het("tight"));
    assert!(!out.status.success());
    assert_eq!(
        text(&out.stderr),
        "sbatch: error: 1: asbb: account 'tight' cannot cover this job: needs $0.60, $0.20 available; ask your PI for funds or request less time or fewer resources\n\
         sbatch: error: Batch job submission failed: Job violates accounting/QOS policy (job submit limit, user's size and/or time limits)\n"
    );
    site.wait_sql_i64("SELECT held_micros FROM accounts WHERE name = ?1", "tight", 0, Duration::from_secs(30));

    // srun and salloc ask for their allocations through job_submit too: held, then
    // charged when they end; refused with the same message.
    let latest_job = |site: &Site| -> (String, i64) {
        let conn =
            rusqlite::Connection::open_with_flags(site.ledger(), rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
        conn.query_row("SELECT token, estimate_micros FROM jobs ORDER BY token DESC LIMIT 1", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap()
    };
    for (client, args) in [("srun", ["-t", "5", "true"]), ("salloc", ["-t", "5", "true"])] {
        let mut all = vec!["-A", "chem", "-p", "debug", "-n", "1"];
        all.extend(args);
        let out = site.cluster.run_as(USER, client, &all);
        assert!(out.status.success(), "{client}: {}", cluster::show(&out));
        let (token, estimate) = latest_job(&site);
        assert_eq!(estimate, 300_000, "{client}");
        assert_eq!(site.wait_settled(&token), "settled", "{client}");
        assert_eq!(site.held_by(&token), 0);
    }
    let out = site.cluster.run_as(USER, "srun", &["-A", "tight", "-p", "debug", "-t", "60", "-n", "1", "true"]);
    assert!(!out.status.success());
    assert_eq!(
        text(&out.stderr),
        "srun: error: asbb: account 'tight' cannot cover this job: needs $3.60, $0.50 available; ask your PI for funds or request less time or fewer resources\n\
         srun: error: Unable to allocate resources: Job violates accounting/QOS policy (job submit limit, user's size and/or time limits)\n"
    );
    site.assert_clean();
}

/// Two clusters (two slurmctlds on one host) pricing jobs against one account in one
/// ledger: concurrent bursts from both never hold more than the account has, each
/// job row names its cluster, each cluster's reconcile settles only its own holds
/// (the other's jobs are unknown to its SLURM, and were released before ledgers named
/// clusters), and usage reports split the cost by cluster.
#[test]
fn two_clusters_sharing_one_ledger_never_overdraw_an_account() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let Some(mut a) = Site::start("e2esharea", ASBB_TOML, &[]) else { return };
    let shared = ASBB_TOML.replace("{dir}/ledger.db", &a.ledger().display().to_string());
    let Some(mut b) = Site::start_sharing("e2eshareb", &shared, &a) else { return };
    // $3.00: ten one-CPU 5-minute jobs at $0.30, from either cluster.
    a.admin_ok(&["account", "create", "pool", "--limit", "3.00", "--start", "2020-01-01"]);

    // What the account holds, sampled while both clusters submit: never above $3.00.
    let running = Arc::new(AtomicBool::new(true));
    let sampler = {
        let (running, ledger) = (running.clone(), a.ledger());
        std::thread::spawn(move || {
            let conn =
                rusqlite::Connection::open_with_flags(&ledger, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
            conn.busy_timeout(Duration::from_secs(5)).unwrap();
            let (mut samples, mut most) = (0, 0_i64);
            while running.load(Ordering::SeqCst) {
                let (cached, rows): (i64, i64) = conn
                    .query_row(
                        "SELECT a.held_micros, (SELECT coalesce(sum(j.held_micros), 0) FROM jobs j
                            WHERE j.account_id = a.id AND j.state = 'held')
                         FROM accounts a WHERE a.name = 'pool'",
                        [],
                        |r| Ok((r.get(0)?, r.get(1)?)),
                    )
                    .unwrap();
                assert_eq!(cached, rows, "the account's total is its jobs' holds");
                assert!(cached <= 3_000_000, "the pool holds {cached} µ$, more than its $3.00");
                (samples, most) = (samples + 1, most.max(cached));
                std::thread::sleep(Duration::from_millis(2));
            }
            (samples, most)
        })
    };
    let burst = |site: &Site| support::site::sbatch_burst(site, "pool", 10);
    let (on_a, on_b) = (burst(&a), burst(&b));
    let (ids_a, refused_a) = on_a.join().unwrap();
    let (ids_b, refused_b) = on_b.join().unwrap();
    running.store(false, Ordering::SeqCst);
    let (samples, most) = sampler.join().unwrap();
    eprintln!("accepted {} on a, {} on b; {samples} samples, most held {most}", ids_a.len(), ids_b.len());
    assert_eq!(ids_a.len() + ids_b.len(), 10, "exactly what $3.00 covers, whichever cluster asked");
    for refusal in refused_a.iter().chain(&refused_b) {
        assert_eq!(
            refusal,
            "sbatch: error: asbb: account 'pool' cannot cover this job: needs $0.30, $0.00 available; ask your PI for funds or request less time or fewer resources\n\
             sbatch: error: Batch job submission failed: Job violates accounting/QOS policy (job submit limit, user's size and/or time limits)\n"
        );
    }
    assert_eq!(a.sql_i64("SELECT held_micros FROM accounts WHERE name = ?1", "pool"), 3_000_000);
    let tokens = |site: &Site, ids: &[u32]| -> Vec<String> { ids.iter().map(|&id| site.token_of(id)).collect() };
    let (tokens_a, tokens_b) = (tokens(&a, &ids_a), tokens(&b, &ids_b));
    for (site, tokens, name) in [(&a, &tokens_a, "e2esharea"), (&b, &tokens_b, "e2eshareb")] {
        for t in tokens {
            let named = site.sql_i64(
                "SELECT count(*) FROM jobs WHERE token = ?1 AND cluster = 'CLUSTER'".replace("CLUSTER", name).as_str(),
                t,
            );
            assert_eq!(named, 1, "job row {t} names cluster {name}");
        }
    }

    // Each cluster's reconcile, with no grace, leaves the other's held jobs alone: its
    // SLURM has never heard of them.
    for (site, mine, theirs, other) in [(&a, &ids_a, &ids_b, "e2eshareb"), (&b, &ids_b, &ids_a, "e2esharea")] {
        let out = site.admin_ok(&["reconcile", "--grace", "0"]);
        let left = if theirs.is_empty() {
            String::new()
        } else {
            format!("left {} hold(s) of cluster {other} to its own reconcile\n", theirs.len())
        };
        assert_eq!(
            out,
            format!(
                "note: accounting is off (AccountingStorageType=accounting_storage/none): slurmctld's records only; jobs it has forgotten (MinJobAge) are released, not charged\n\
                 {left}reconcile: 0 released, 0 charged, 0 left (younger than 0 s), {} still in SLURM\n",
                mine.len()
            )
        );
    }
    assert_eq!(a.sql_i64("SELECT held_micros FROM accounts WHERE name = ?1", "pool"), 3_000_000);

    // Cancelled on each cluster, each job's hold comes back through that cluster's jobcomp.
    for (site, ids) in [(&a, &ids_a), (&b, &ids_b)] {
        if !ids.is_empty() {
            let ids: Vec<String> = ids.iter().map(u32::to_string).collect();
            let args: Vec<&str> = ids.iter().map(String::as_str).collect();
            assert!(site.cluster.run_as(USER, "scancel", &args).status.success());
        }
    }
    for (site, tokens) in [(&a, &tokens_a), (&b, &tokens_b)] {
        for t in tokens {
            assert_eq!(site.wait_settled(t), "settled");
            assert_eq!(site.held_by(t), 0);
        }
    }

    // One short run on each: the usage report splits the cost by cluster.
    let ran_a = a.cluster.submit_ok_as(USER, &["-A", "pool", "-p", "debug", "-t", "1", "--wrap", "sleep 1"]);
    let ran_b = b.cluster.submit_ok_as(USER, &["-A", "pool", "-p", "debug", "-t", "1", "--wrap", "sleep 1"]);
    let mut costs = Vec::new();
    for (site, id) in [(&a, ran_a), (&b, ran_b)] {
        let token = site.token_of(id);
        assert_eq!(site.cluster.wait_done(id), "COMPLETED");
        assert_eq!(site.wait_settled(&token), "settled");
        costs.push(site.sql_i64("SELECT charged_micros FROM jobs WHERE token = ?1", &token));
    }
    let today = chrono::Utc::now().format("%Y-%m-%d").to_string();
    let report =
        b.admin_ok(&["report", "usage", "--from", &today, "--to", &today, "--by", "cluster", "--format", "csv"]);
    let cost_of = |name: &str| -> i64 {
        let line = report.lines().find(|l| l.starts_with(&format!("{name},"))).unwrap_or_else(|| panic!("{report}"));
        asbb::core::money::Money::parse(line.split(',').nth(1).unwrap()).unwrap().micros()
    };
    assert_eq!((cost_of("e2esharea"), cost_of("e2eshareb")), (costs[0], costs[1]), "{report}");
    assert!(costs.iter().all(|&c| c > 0));

    // A job waiting on cluster b for funds: a deposit with --release-held on a cannot
    // release it (a's SLURM does not have it) and says where it waits; b's admin does.
    let soon = chrono::Utc::now().date_naive() + chrono::Days::new(10);
    a.admin_ok(&["account", "create", "later", "--limit", "0.10", "--start", "2020-01-01"]);
    a.admin_ok(&["deposit", "later", "10", "--valid-from", &soon.to_string()]);
    let waiting = b.cluster.submit_ok_as(USER, &["-A", "later", "-p", "debug", "-t", "5", "--wrap", "true"]);
    assert_eq!(b.cluster.job_field(waiting, "Priority").as_deref(), Some("0"));
    let out = a.admin_ok(&["deposit", "later", "1", "--release-held"]);
    assert!(
        out.contains("account=later estimate=$0.30")
            && out.contains("it waits on cluster e2eshareb; `asbb-admin job approve` there releases it"),
        "{out}"
    );
    assert_eq!(b.cluster.job_field(waiting, "Priority").as_deref(), Some("0"));
    // Job ids repeat across the clusters: a's list of held jobs says whose each is.
    let list = a.admin_ok(&["job", "list", "--held", "--format", "csv"]);
    let lines: Vec<&str> = list.lines().collect();
    assert_eq!(lines[0], "jobid,cluster,user,account,partition,estimate,submitted,state,reason", "{list}");
    assert!(lines[1].contains(&format!(",e2eshareb,{USER},later,debug,0.30,")), "{list}");
    assert_eq!(lines.len(), 2, "{list}");
    let out = b.admin_ok(&["job", "approve", &waiting.to_string()]);
    assert_eq!(out, format!("approved job {waiting}: holding $0.30; released\n"));
    assert_eq!(b.cluster.wait_done(waiting), "COMPLETED");
    assert_eq!(b.wait_settled(&b.token_of(waiting)), "settled");
    b.assert_clean();
    a.assert_clean();
}
