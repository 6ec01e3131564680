// SPDX-License-Identifier: GPL-2.0-or-later
//! `cargo bench --bench slurm_throughput` (root, SLURM installed, plugins built):
//! sbatch throughput of a real test cluster without and with the asbb plugins, in one
//! run (both clusters up, submissions alternating between them in rounds), and
//! slurmctld's memory, its CPU time per submission, and the plugins' own time per
//! call. Prints one `name=value` per figure.
//!
//! `ASBB_BENCH_SUBMISSIONS` (default 2000) jobs are submitted held (`-H`, so nothing
//! runs and only the submit path is measured) from `ASBB_BENCH_CLIENTS` (default 8)
//! parallel clients, as an unprivileged user (root's jobs bypass asbb).

#[path = "../tests/support/mod.rs"]
mod support;

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;
use support::cluster::{self, Cluster, ClusterOptions};

const USER: &str = "asbbbench";
/// Submissions alternate between the two clusters in this many rounds.
const ROUNDS: usize = 8;

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// The CPU time (user + system) a process has used so far, in microseconds, from
/// `/proc/<pid>/stat` (fields 14 and 15, in clock ticks).
fn cpu_us(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The command name (field 2) may hold spaces; the fields after it are plain.
    let fields: Vec<&str> =
        stat.rsplit_once(')').map(|(_, rest)| rest.split_whitespace().collect()).unwrap_or_default();
    let ticks: f64 = fields.get(11..13).map_or(0.0, |f| f.iter().filter_map(|t| t.parse::<f64>().ok()).sum());
    // SAFETY: sysconf has no preconditions.
    let per_s = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    ticks * 1e6 / per_s.max(1.0)
}

/// Submits `n` held jobs from `clients` threads; returns submissions per second.
fn burst(c: &Cluster, n: usize, clients: usize, account: &str) -> f64 {
    let t = Instant::now();
    std::thread::scope(|s| {
        for k in 0..clients {
            let count = n / clients + usize::from(k < n % clients);
            s.spawn(move || {
                for _ in 0..count {
                    let out = c.sbatch_as(USER, &["-H", "-A", account, "-t", "10", "--wrap", "true"]);
                    assert!(out.status.success(), "{}", cluster::show(&out));
                }
            });
        }
    });
    n as f64 / t.elapsed().as_secs_f64()
}

/// The wall and CPU microseconds a plugin log line ends with: `(123 us, cpu 45 us)`.
fn call_times_us(line: &str) -> Option<(f64, f64)> {
    let (_, times) = line.rsplit_once('(')?;
    let (wall, cpu) = times.strip_suffix(" us)")?.split_once(" us, cpu ")?;
    Some((wall.parse().ok()?, cpu.parse().ok()?))
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn main() {
    if !cluster::require_root_and_slurm() {
        return;
    }
    let plugins = std::env::var_os("ASBB_PLUGIN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/plugins"));
    assert!(plugins.join("job_submit_asbb.so").exists(), "build the plugins first (make build)");
    let n = env_or("ASBB_BENCH_SUBMISSIONS", 2000);
    let clients = env_or("ASBB_BENCH_CLIENTS", 8);
    cluster::ensure_user(USER);

    let conf = ["MaxJobCount=100000", "SlurmctldDebug=info"];
    let mut plain_opts = ClusterOptions::new("benchplain");
    for l in conf {
        plain_opts = plain_opts.conf(l);
    }
    let plain = Cluster::start(plain_opts);

    // ASBB_BENCH_POSTGRES: an empty PostgreSQL database's ledger URL, used instead of
    // the SQLite file beside the cluster.
    // The bound the README advises for PostgreSQL (a commit waits for its WAL on disk).
    let (ledger, bound_ms) = match std::env::var("ASBB_BENCH_POSTGRES") {
        Ok(url) => (url, 500),
        Err(_) => ("{dir}/ledger.db".to_string(), 50),
    };
    let toml = format!(
        "ledger = \"{ledger}\"\n[policy]\nminimum_charge = \"0\"\nledger_busy_timeout_ms = {bound_ms}\n[partitions.debug.rates]\ncpu = 0.02\n"
    );
    let mut asbb_opts = ClusterOptions::new("benchasbb")
        .plugin_dir(&plugins)
        .conf("JobSubmitPlugins=asbb")
        .conf("JobCompType=jobcomp/asbb")
        .file("asbb.toml", &toml);
    for l in conf {
        asbb_opts = asbb_opts.conf(l);
    }
    let asbb = Cluster::start(asbb_opts);
    let admin = Command::new(env!("CARGO_BIN_EXE_asbb-admin"))
        .args(["account", "create", "chem", "--limit", "1000000"])
        .env("ASBB_CONFIG", asbb.etc_dir().join("asbb.toml"))
        .env_remove("ASBB_LEDGER")
        .output()
        .unwrap();
    assert!(admin.status.success(), "{}", cluster::show(&admin));

    // Both clusters are up (held jobs never run, so the idle one costs nothing); the
    // submissions alternate between them in rounds, so a machine that speeds up or slows
    // down during the run moves both figures alike.
    // slurmctld's own CPU time is counted around each burst only, so the idle
    // cluster's background work (and the other cluster's bursts) stay out of it.
    let (plain_pid, asbb_pid) = (plain.ctld_pid().unwrap_or(0), asbb.ctld_pid().unwrap_or(0));
    let (mut plain_s, mut asbb_s) = (0.0, 0.0);
    let (mut plain_cpu_us, mut asbb_cpu_us) = (0.0, 0.0);
    // asbb's extra CPU per job in each round: the machine's load moves both clusters of
    // one round alike, so the median of these moves less than the totals do.
    let mut round_diffs_us = Vec::new();
    for round in 0..ROUNDS {
        let count = n / ROUNDS + usize::from(round < n % ROUNDS);
        let before = cpu_us(plain_pid);
        plain_s += count as f64 / burst(&plain, count, clients, "chem");
        let plain_round_us = cpu_us(plain_pid) - before;
        plain_cpu_us += plain_round_us;
        let before = cpu_us(asbb_pid);
        asbb_s += count as f64 / burst(&asbb, count, clients, "chem");
        let asbb_round_us = cpu_us(asbb_pid) - before;
        asbb_cpu_us += asbb_round_us;
        round_diffs_us.push((asbb_round_us - plain_round_us) / count as f64);
    }
    round_diffs_us.sort_by(f64::total_cmp);
    let (per_s_plain, per_s_asbb) = (n as f64 / plain_s, n as f64 / asbb_s);
    let plain_rss = rss_kib(plain.ctld_pid().unwrap_or(0));
    drop(plain);
    let asbb_rss = rss_kib(asbb.ctld_pid().unwrap_or(0));

    // The plugin logs its own wall and CPU time per call: "... (123 us, cpu 45 us)".
    let (mut submit_us, mut submit_cpu_us) = (Vec::new(), Vec::new());
    for line in asbb.ctld_log().lines().filter(|l| l.contains("job_submit/asbb: accepted")) {
        if let Some((wall, cpu)) = call_times_us(line) {
            submit_us.push(wall);
            submit_cpu_us.push(cpu);
        }
    }
    submit_us.sort_by(f64::total_cmp);
    submit_cpu_us.sort_by(f64::total_cmp);
    // job_submit's own thread confirms the holds in rounds: "confirmed 812 hold(s) ... (5123 us, cpu 4012 us)".
    let (mut confirmed, mut confirm_cpu_us) = (0.0, 0.0);
    for line in asbb.ctld_log().lines().filter(|l| l.contains("job_submit/asbb: confirmed ")) {
        let count =
            line.split("confirmed ").nth(1).and_then(|t| t.split(' ').next()).and_then(|c| c.parse::<f64>().ok());
        if let (Some(count), Some((_, cpu))) = (count, call_times_us(line)) {
            confirmed += count;
            confirm_cpu_us += cpu;
        }
    }

    println!("submissions={n}");
    println!("clients={clients}");
    println!("sbatch_per_s_plain={per_s_plain:.1}");
    println!("sbatch_per_s_asbb={per_s_asbb:.1}");
    println!("sbatch_throughput_ratio={:.3}", per_s_asbb / per_s_plain);
    println!("ctld_cpu_us_per_job_plain={:.0}", plain_cpu_us / n as f64);
    println!("ctld_cpu_us_per_job_asbb={:.0}", asbb_cpu_us / n as f64);
    println!("ctld_cpu_us_per_job_diff_median={:.0}", percentile(&round_diffs_us, 0.5));
    println!("job_submit_p50_us={:.0}", percentile(&submit_us, 0.5));
    println!("job_submit_p99_us={:.0}", percentile(&submit_us, 0.99));
    println!("job_submit_cpu_p50_us={:.0}", percentile(&submit_cpu_us, 0.5));
    println!("job_submit_cpu_p99_us={:.0}", percentile(&submit_cpu_us, 0.99));
    println!("job_submit_max_us={:.0}", submit_us.last().copied().unwrap_or(0.0));
    println!("confirm_thread_cpu_us_per_hold={:.1}", confirm_cpu_us / confirmed.max(1.0));
    println!("slurmctld_rss_plain_mib={:.1}", plain_rss as f64 / 1024.0);
    println!("slurmctld_rss_asbb_mib={:.1}", asbb_rss as f64 / 1024.0);
    println!("slurmctld_rss_delta_mib={:.1}", (asbb_rss as f64 - plain_rss as f64) / 1024.0);
    // The plugins' checkpointer keeps the WAL short while submissions keep coming.
    let wal = std::fs::metadata(asbb.dir().join("ledger.db-wal")).map(|m| m.len()).unwrap_or(0);
    println!("ledger_wal_mib={:.1}", wal as f64 / (1024.0 * 1024.0));
}
