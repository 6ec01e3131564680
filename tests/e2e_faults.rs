// SPDX-License-Identifier: GPL-2.0-or-later
//! End-to-end faults: slurmctld killed with SIGKILL in the middle of a
//! burst of submissions and again in the middle of completions; the ledger made
//! unavailable (locked, disk full, read-only, corrupt, missing) under both
//! `on_ledger_error` policies; an invalid asbb.toml, then a valid change; a job
//! array of 1,000 tasks. After each, `asbb-admin reconcile` settles what the plugins
//! could not, `asbb-admin verify` is clean, no hold is left open for a job SLURM no
//! longer has, and no run is charged twice.
//!
//! Needs root, SLURM and the built plugins (`make build`); `make test` runs these
//! with ASBB_E2E=1. Each test starts its own cluster with an oversubscribed
//! partition `burst`, so hundreds of one-second jobs finish in seconds.

mod support;

use asbb::adapter::snapshot::{parse_squeue_json, SlurmJob};
use rusqlite::{Connection, OpenFlags};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::cluster::{self, Cluster, ClusterOptions};

/// The unprivileged user every job runs as (root's jobs pass the submit hook untouched).
const USER: &str = "asbbuser";
/// $0.001 per CPU-second: a run's cost is CPUs × elapsed s × 1000 micro-dollars.
const MICROS_PER_CPU_S: i64 = 1_000;
/// A one-minute, one-CPU job holds $0.06.
const ONE_MINUTE_HOLD: i64 = 60_000;

const REJECT_MSG: &str =
    "asbb: the budget ledger is unavailable, so the job cannot be priced; try again shortly or contact your admins";
const ACCEPT_NOTE: &str =
    "asbb: the budget ledger is unavailable; job accepted without a budget check and will be charged when it ends";

fn asbb_toml(policy: &str, cpu_rate: &str) -> String {
    format!(
        r#"
ledger = "{{dir}}/ledger/ledger.db"
[policy]
on_ledger_error = "{policy}"
ledger_busy_timeout_ms = 50
minimum_charge = "0"
[partitions.debug.rates]
cpu = {cpu_rate}
[partitions.burst.rates]
cpu = {cpu_rate}
"#
    )
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn run_quiet(cmd: &str, args: &[&str]) -> bool {
    Command::new(cmd).args(args).stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok_and(|s| s.success())
}

struct Site {
    /// The ledger's folder is a small tmpfs (so the disk can be filled), when mounting works.
    tmpfs: bool,
    cluster: Cluster,
}

impl Drop for Site {
    fn drop(&mut self) {
        // Daemons first (they hold the ledger open), then the mount and any immutable
        // flag, so the cluster's temp dir can be removed.
        self.cluster.stop();
        let dir = self.ledger_dir();
        let mut paths = vec![dir.clone()];
        if let Ok(entries) = std::fs::read_dir(&dir) {
            paths.extend(entries.flatten().map(|e| e.path()));
        }
        for p in &paths {
            run_quiet("chattr", &["-i", &p.to_string_lossy()]);
        }
        if self.tmpfs && std::env::var("ASBB_KEEP_CLUSTER").as_deref() == Ok("1") {
            let kept = self.cluster.dir().join("ledger-kept");
            run_quiet("cp", &["-a", &dir.to_string_lossy(), &kept.to_string_lossy()]);
        }
        if self.tmpfs && !run_quiet("umount", &[&dir.to_string_lossy()]) {
            run_quiet("umount", &["-l", &dir.to_string_lossy()]);
        }
    }
}

impl Site {
    /// A cluster with both plugins, an oversubscribed `burst` partition and a ledger
    /// with account `chem` ($100). `tmpfs` puts the ledger's folder on a 16 MB tmpfs.
    fn start(name: &str, toml: &str, tmpfs: bool) -> Option<Site> {
        if !cluster::require_root_and_slurm() {
            return None;
        }
        let plugins = support::plugin_dir()?;
        cluster::ensure_user(USER);
        let opts = ClusterOptions::new(name)
            .plugin_dir(plugins)
            .conf("JobSubmitPlugins=asbb")
            .conf("JobCompType=jobcomp/asbb")
            .partition("PartitionName=burst Nodes=ALL MaxTime=INFINITE State=UP OverSubscribe=FORCE:32")
            .file("asbb.toml", toml);
        let cluster = Cluster::start(opts);
        let dir = cluster.dir().join("ledger");
        std::fs::create_dir_all(&dir).unwrap();
        let tmpfs =
            tmpfs && run_quiet("mount", &["-t", "tmpfs", "-o", "size=16m,mode=0755", "tmpfs", &dir.to_string_lossy()]);
        let site = Site { tmpfs, cluster };
        site.admin_ok(&["account", "create", "chem", "--limit", "100", "--start", "2020-01-01"]);
        Some(site)
    }

    fn ledger_dir(&self) -> PathBuf {
        self.cluster.dir().join("ledger")
    }

    fn ledger(&self) -> PathBuf {
        self.ledger_dir().join("ledger.db")
    }

    fn admin_env(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut c = support::admin_command(&self.cluster);
        c.args(args);
        for (k, v) in env {
            c.env(k, v);
        }
        c.output().unwrap()
    }

    fn admin_ok(&self, args: &[&str]) -> String {
        let out = self.admin_env(args, &[]);
        assert!(out.status.success(), "asbb-admin {args:?}: {}", cluster::show(&out));
        text(&out.stdout)
    }

    /// `asbb-admin reconcile --grace 0`; returns its text output.
    fn reconcile(&self) -> String {
        let out = self.admin_ok(&["reconcile", "--grace", "0"]);
        eprintln!("{}: {out}", self.cluster.name());
        out
    }

    fn conn(&self) -> Connection {
        let c = Connection::open_with_flags(self.ledger(), OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
        c.busy_timeout(Duration::from_secs(5)).unwrap();
        c
    }

    fn sql_i64(&self, sql: &str, param: &str) -> i64 {
        self.conn().query_row(sql, [param], |r| r.get(0)).unwrap()
    }

    fn sbatch(&self, args: &[&str]) -> Output {
        self.cluster.sbatch_as(USER, args)
    }

    fn submit(&self, args: &[&str]) -> u32 {
        let out = self.sbatch(args);
        submitted_id(&out).unwrap_or_else(|| panic!("not submitted: {}", cluster::show(&out)))
    }

    /// Every job slurmctld has, read the way reconcile reads them.
    fn slurm_jobs(&self) -> Vec<SlurmJob> {
        let out = self.cluster.run("squeue", &["--json", "--all", "--states=all"]);
        assert!(out.status.success(), "squeue --json: {}", cluster::show(&out));
        parse_squeue_json(&text(&out.stdout)).unwrap()
    }

    /// Waits until SLURM has no job of USER that is not finished.
    fn wait_all_ended(&self, timeout: Duration) -> Vec<SlurmJob> {
        let deadline = Instant::now() + timeout;
        loop {
            let jobs = self.slurm_jobs();
            let alive: Vec<u32> =
                jobs.iter().filter(|j| j.user.as_deref() == Some(USER) && !j.is_terminal()).map(|j| j.job_id).collect();
            if alive.is_empty() {
                return jobs;
            }
            if Instant::now() >= deadline {
                let q = self.cluster.run("squeue", &["-h", "-o", "%i %T %r %S %M"]);
                panic!(
                    "jobs {alive:?} still not ended:\n{}\nlog:\n{}",
                    text(&q.stdout),
                    self.cluster.ctld_log_tail(40)
                );
            }
            std::thread::sleep(Duration::from_millis(300));
        }
    }

    fn token_of(&self, job_id: u32) -> Option<String> {
        let comment = self.cluster.job_field(job_id, "AdminComment")?;
        comment.strip_prefix("asbb:hold=").map(str::to_string)
    }

    fn held_by(&self, token: &str) -> i64 {
        self.sql_i64("SELECT held_micros FROM jobs WHERE token = ?1", token)
    }

    fn wait_settled(&self, token: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let state: String =
                self.conn().query_row("SELECT state FROM jobs WHERE token = ?1", [token], |r| r.get(0)).unwrap();
            if !matches!(state.as_str(), "held" | "awaiting_funds" | "awaiting_approval") {
                return;
            }
            assert!(Instant::now() < deadline, "hold {token} still {state}; log:\n{}", self.cluster.ctld_log_tail(30));
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Waits until jobcomp has logged that it could not reconcile this job.
    fn wait_log(&self, needle: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !self.cluster.ctld_log().contains(needle) {
            assert!(Instant::now() < deadline, "no `{needle}` in the log:\n{}", self.cluster.ctld_log_tail(30));
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Submits a one-CPU, one-minute job that must be accepted with a hold, waits
    /// for it to end and be settled, and checks its charge against SLURM's record.
    fn normal_job(&self) {
        let id = self.submit(&["-A", "chem", "-p", "debug", "-t", "1", "-n", "1", "--wrap", "true"]);
        let token = self
            .token_of(id)
            .unwrap_or_else(|| panic!("job {id} has no hold token; log:\n{}", self.cluster.ctld_log_tail(20)));
        assert!(self.cluster.wait_done(id) == "COMPLETED");
        self.wait_settled(&token, Duration::from_secs(30));
        assert_eq!(self.held_by(&token), 0);
        let charged = self.sql_i64("SELECT charged_micros FROM jobs WHERE token = ?1", &token);
        assert_eq!(charged, self.expected_cost(id));
    }

    /// CPUs × elapsed seconds × rate, from SLURM's own record of the job.
    fn expected_cost(&self, job_id: u32) -> i64 {
        let jobs = self.slurm_jobs();
        let Some(j) = jobs.iter().find(|j| j.job_id == job_id) else {
            let raw = self.cluster.run("squeue", &["--json", "--all", "--states=all"]);
            panic!(
                "job {job_id} not in squeue --json ({jobs:?}):\n{}",
                text(&raw.stdout).chars().take(3000).collect::<String>()
            );
        };
        j.cpus as i64 * (j.end_time - j.start_time) * MICROS_PER_CPU_S
    }

    fn assert_ctld_answers(&mut self) {
        assert!(self.cluster.ctld_alive(), "slurmctld died; log:\n{}", self.cluster.ctld_log_tail(40));
        let ping = self.cluster.run("scontrol", &["ping"]);
        assert!(text(&ping.stdout).contains(" is UP"), "{}", cluster::show(&ping));
    }

    /// verify clean, nothing left open or held, slurmctld alive; every run SLURM
    /// reports is charged exactly once.
    fn assert_settled_and_clean(&mut self) {
        let out = self.admin_env(&["verify"], &[]);
        assert!(out.status.success(), "verify: {}", cluster::show(&out));
        let open = self.sql_i64(
            "SELECT count(*) FROM jobs WHERE state IN ('held', 'awaiting_funds', 'awaiting_approval') AND ?1 = ?1",
            "",
        );
        assert_eq!(open, 0, "holds left open");
        assert_eq!(self.sql_i64("SELECT coalesce(sum(held_micros), 0) FROM accounts WHERE ?1 = ?1", ""), 0);
        let conn = self.conn();
        // No run charged twice: a replayed end has the same run key and is a duplicate;
        // a job SLURM really ran again (requeued after a failed launch) has a new one.
        let restarts: BTreeMap<u32, u32> =
            self.slurm_jobs().iter().map(|j| (j.job_id, j.restart_cnt.unwrap_or(0))).collect();
        let runs: Vec<(u32, i64)> = conn
            .prepare("SELECT job_id, count(*) FROM runs GROUP BY job_id")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        for (job_id, n) in runs {
            let allowed = restarts.get(&job_id).map_or(1, |r| *r as i64 + 1);
            assert!(n <= allowed, "job {job_id}: {n} runs charged, SLURM ran it {allowed} times");
        }
        // Every run SLURM reports as ended is in the ledger under its run key (a replay
        // of a run is charged once, with the times of its first end).
        let keys: std::collections::BTreeSet<String> = conn
            .prepare("SELECT run_key FROM runs")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        let cluster = self.cluster.name().to_string();
        for j in self.slurm_jobs().iter().filter(|j| j.user.as_deref() == Some(USER) && j.is_terminal() && j.ran()) {
            let key = j.to_completion(&cluster).unwrap().run_key();
            assert!(
                keys.contains(&key),
                "job {} ran ({} s) but run {key} is not charged",
                j.job_id,
                j.end_time - j.start_time
            );
        }
        self.assert_ctld_answers();
    }
}

fn submitted_id(out: &Output) -> Option<u32> {
    text(&out.stdout).trim().strip_prefix("Submitted batch job ").and_then(|s| s.parse().ok())
}

/// `reconcile: R released, C charged, L left ...` → (R, C, L).
fn summary_counts(output: &str) -> (usize, usize, usize) {
    let line = output.lines().find(|l| l.starts_with("reconcile")).unwrap_or_else(|| panic!("no summary: {output}"));
    let nums: Vec<usize> =
        line.split(|c: char| !c.is_ascii_digit()).filter(|s| !s.is_empty()).filter_map(|s| s.parse().ok()).collect();
    (nums[0], nums[1], nums[2])
}

// ----- kill -9 during submissions and completions --------------------------------------

#[test]
fn ctld_killed_during_submissions_and_completions() {
    let Some(mut site) = Site::start("e2ekill", &asbb_toml("reject", "3.6"), false) else { return };
    let started = Instant::now();
    let conf = site.cluster.conf_path().to_path_buf();
    let work = site.cluster.work_dir();
    let submitted = Arc::new(AtomicUsize::new(0));
    let mut threads = Vec::new();
    for _ in 0..2 {
        let (conf, work, submitted) = (conf.clone(), work.clone(), submitted.clone());
        threads.push(std::thread::spawn(move || {
            let mut ids = Vec::new();
            let mut failed = 0;
            for _ in 0..100 {
                let out = Command::new("timeout")
                    .args(["60", "runuser", "-u", USER, "--", "env"])
                    .arg(format!("SLURM_CONF={}", conf.display()))
                    .args(["sbatch", "-A", "chem", "-p", "burst", "-t", "1", "-o", "/dev/null", "--wrap", "true"])
                    .current_dir(&work)
                    .stdin(Stdio::null())
                    .output()
                    .unwrap();
                match submitted_id(&out) {
                    Some(id) => ids.push(id),
                    None => failed += 1,
                }
                submitted.fetch_add(1, Ordering::SeqCst);
            }
            (ids, failed)
        }));
    }
    // SIGKILL slurmctld once a third of the submissions are in.
    while submitted.load(Ordering::SeqCst) < 60 {
        std::thread::sleep(Duration::from_millis(5));
    }
    site.cluster.kill_ctld();
    std::thread::sleep(Duration::from_millis(500));
    site.cluster.start_ctld();
    let mut ids = Vec::new();
    let mut failed = 0;
    for t in threads {
        let (i, f) = t.join().unwrap();
        ids.extend(i);
        failed += f;
    }
    eprintln!("burst: {} submitted, {failed} refused while slurmctld was down ({:?})", ids.len(), started.elapsed());
    // And again while they complete: once a third of the known jobs have ended.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let ended = site.slurm_jobs().iter().filter(|j| j.is_terminal()).count();
        if ended * 3 >= ids.len() {
            break;
        }
        assert!(Instant::now() < deadline, "jobs do not end");
        std::thread::sleep(Duration::from_millis(50));
    }
    site.cluster.kill_ctld();
    std::thread::sleep(Duration::from_millis(500));
    site.cluster.start_ctld();
    eprintln!("second kill done ({:?})", started.elapsed());
    // A job whose launch failed across the crash is requeued and held by SLURM
    // ("launch failed requeued held"); an admin would release it: so do we.
    let deadline = Instant::now() + Duration::from_secs(150);
    let mut next_report = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        if Instant::now() >= next_report {
            // What the wait is on, for the test's log.
            next_report += Duration::from_secs(15);
            let q = site.cluster.run("squeue", &["-h", "-o", "%T %r"]);
            let mut counts: BTreeMap<String, usize> = BTreeMap::new();
            for l in text(&q.stdout).lines() {
                *counts.entry(l.to_string()).or_default() += 1;
            }
            let node = site.cluster.run("sinfo", &["-h", "-N", "-o", "%T %E"]);
            eprintln!("waiting ({:?}): jobs {counts:?}; node {}", started.elapsed(), text(&node.stdout).trim());
        }
        let q = site.cluster.run("squeue", &["-h", "-t", "PD", "-o", "%i %r"]);
        let held: Vec<String> = text(&q.stdout)
            .lines()
            .filter(|l| l.to_ascii_lowercase().contains("held"))
            .filter_map(|l| l.split_whitespace().next().map(str::to_string))
            .collect();
        // The node can be left DOWN ("not responding" across the crash); an admin
        // would resume it: so do we.
        if text(&q.stdout).contains("DOWN") || text(&q.stdout).contains("Nodes_required") {
            site.cluster
                .run("scontrol", &["update", &format!("NodeName={}", site.cluster.node_name()), "State=RESUME"]);
        }
        if !held.is_empty() {
            eprintln!("releasing jobs SLURM held after the crash: {held:?}");
            let mut args = vec!["release"];
            args.extend(held.iter().map(String::as_str));
            site.cluster.run("scontrol", &args);
        }
        let alive = site.slurm_jobs().iter().any(|j| j.user.as_deref() == Some(USER) && !j.is_terminal());
        if !alive {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    site.wait_all_ended(Duration::from_secs(1));
    eprintln!("all ended ({:?})", started.elapsed());

    // What SLURM lost (holds of jobs it never saved) is still open until reconcile.
    let dry = site.admin_ok(&["reconcile", "--grace", "0", "--dry-run"]);
    let journal_before = site.sql_i64("SELECT count(*) FROM journal WHERE ?1 = ?1", "");
    let out = site.reconcile();
    let (released, charged, left) = summary_counts(&out);
    assert_eq!(summary_counts(&dry), (released, charged, left), "a dry run predicts the real run:\n{dry}\n{out}");
    assert_eq!(left, 0);
    assert!(site.sql_i64("SELECT count(*) FROM journal WHERE ?1 = ?1", "") >= journal_before);
    site.assert_settled_and_clean();
    // No hold is left open for a job SLURM no longer has (many jobs that ran, were
    // charged and settled were then forgotten by the killed slurmctld: that is fine).
    let known: std::collections::BTreeSet<String> = site.slurm_jobs().iter().filter_map(|j| j.hold_token()).collect();
    let conn = site.conn();
    let states: Vec<(String, String)> = conn
        .prepare("SELECT token, state FROM jobs")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let open_unknown: Vec<&(String, String)> =
        states.iter().filter(|(t, s)| !known.contains(t) && !matches!(s.as_str(), "released" | "settled")).collect();
    assert!(open_unknown.is_empty(), "holds of jobs SLURM does not have, still open: {open_unknown:?}");
    let forgotten = states.iter().filter(|(t, _)| !known.contains(t)).count();
    // A second run does nothing.
    assert_eq!(summary_counts(&site.reconcile()), (0, 0, 0));
    let replays = site.cluster.ctld_log().matches("already reconciled").count();
    eprintln!(
        "kill test: {} jobs, {forgotten} of their holds belong to jobs the killed slurmctld forgot; reconcile released {released} and charged {charged}; {replays} replayed completions were duplicates; {:?}",
        ids.len(),
        started.elapsed()
    );
}

// ----- the ledger made unavailable -----------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    /// Another writer holds the lock past the bounded wait.
    Locked,
    /// The ledger's file system is full.
    DiskFull,
    /// The files are immutable (`chattr +i`; root ignores plain file modes).
    ReadOnly,
    /// Bytes in the middle of the file overwritten (a copy is restored afterwards).
    Corrupt,
    /// The file is gone.
    Missing,
}

/// What to undo.
enum Injected {
    Lock(Connection),
    Filler(PathBuf),
    Immutable(Vec<PathBuf>),
    Backup(PathBuf),
    Moved(PathBuf),
    Nothing,
}

impl Site {
    fn checkpoint(&self) {
        let c = Connection::open(self.ledger()).unwrap();
        c.busy_timeout(Duration::from_secs(5)).unwrap();
        let busy: i64 = c.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| r.get(0)).unwrap();
        assert_eq!(busy, 0, "checkpoint blocked");
    }

    /// Puts the fault in place. Faults that change the file under an open connection
    /// (read-only, corrupt, missing) are followed by a restart of slurmctld, so the
    /// plugins meet them when they next open the ledger: an open SQLite connection
    /// keeps using the inode it opened.
    fn inject(&mut self, fault: Fault) -> Injected {
        let injected = match fault {
            Fault::Locked => {
                let c = Connection::open(self.ledger()).unwrap();
                c.execute_batch("BEGIN EXCLUSIVE").unwrap();
                Injected::Lock(c)
            }
            Fault::DiskFull => {
                if !self.tmpfs {
                    eprintln!("disk-full fault skipped: cannot mount a tmpfs here");
                    return Injected::Nothing;
                }
                self.checkpoint();
                let filler = self.ledger_dir().join("filler");
                let mut f = std::fs::File::create(&filler).unwrap();
                let chunk = vec![0u8; 64 * 1024];
                while std::io::Write::write_all(&mut f, &chunk).is_ok() {}
                let _ = std::io::Write::write_all(&mut f, &[0u8; 512]);
                Injected::Filler(filler)
            }
            Fault::ReadOnly => {
                let mut paths = vec![self.ledger_dir()];
                for suffix in ["", "-wal", "-shm"] {
                    let p = PathBuf::from(format!("{}{suffix}", self.ledger().display()));
                    if p.exists() {
                        paths.push(p);
                    }
                }
                for p in &paths {
                    assert!(run_quiet("chattr", &["+i", &p.to_string_lossy()]), "chattr +i {}", p.display());
                }
                // Root ignores modes but not the immutable flag.
                assert!(std::fs::OpenOptions::new().append(true).open(self.ledger()).is_err());
                Injected::Immutable(paths)
            }
            Fault::Corrupt => {
                self.checkpoint();
                let backup = self.cluster.dir().join("ledger.backup");
                std::fs::copy(self.ledger(), &backup).unwrap();
                let len = std::fs::metadata(self.ledger()).unwrap().len();
                assert!(len >= 4 * 4096, "ledger too small to corrupt ({len} bytes)");
                // Every page but the first and the last.
                let garbage = vec![0x5a_u8; (len - 2 * 4096) as usize];
                let f = std::fs::OpenOptions::new().write(true).open(self.ledger()).unwrap();
                std::os::unix::fs::FileExt::write_all_at(&f, &garbage, 4096).unwrap();
                f.sync_all().unwrap();
                Injected::Backup(backup)
            }
            Fault::Missing => {
                let away = self.ledger_dir().join("ledger.db.away");
                std::fs::rename(self.ledger(), &away).unwrap();
                Injected::Moved(away)
            }
        };
        if matches!(fault, Fault::ReadOnly | Fault::Corrupt | Fault::Missing) {
            self.cluster.restart_ctld();
        }
        injected
    }

    fn remove(&self, injected: Injected) {
        match injected {
            Injected::Lock(c) => c.execute_batch("ROLLBACK").unwrap(),
            Injected::Filler(p) => std::fs::remove_file(p).unwrap(),
            Injected::Immutable(paths) => {
                for p in paths {
                    assert!(run_quiet("chattr", &["-i", &p.to_string_lossy()]));
                }
            }
            Injected::Backup(b) => {
                // In place (same inode), like restoring from a backup.
                std::fs::write(self.ledger(), std::fs::read(&b).unwrap()).unwrap();
            }
            Injected::Moved(away) => std::fs::rename(away, self.ledger()).unwrap(),
            Injected::Nothing => {}
        }
    }
}

const FAULTS: [Fault; 5] = [Fault::Locked, Fault::DiskFull, Fault::ReadOnly, Fault::Corrupt, Fault::Missing];

#[test]
fn ledger_faults_with_reject_policy() {
    let Some(mut site) = Site::start("e2efrej", &asbb_toml("reject", "3.6"), true) else { return };
    site.normal_job();
    for fault in FAULTS {
        let injected = site.inject(fault);
        if matches!(injected, Injected::Nothing) {
            continue;
        }
        let out = site.sbatch(&["-A", "chem", "-p", "debug", "-t", "1", "--wrap", "true"]);
        assert_eq!(out.status.code(), Some(1), "{fault:?}: {}", cluster::show(&out));
        assert_eq!(
            text(&out.stderr),
            format!("sbatch: error: {REJECT_MSG}\nsbatch: error: Batch job submission failed: Slurm internal error, contact system administrator\n"),
            "{fault:?}"
        );
        site.assert_ctld_answers();
        site.remove(injected);
        site.normal_job();
        eprintln!("reject policy, {fault:?}: refused with the message; the next job was handled normally");
    }

    // A completion the ledger could not take (locked while the job ended, and while a
    // held job was cancelled) is settled by reconcile from SLURM's record.
    let ran = site.submit(&["-A", "chem", "-p", "debug", "-t", "1", "--wrap", "sleep 1"]);
    let pending = site.submit(&["-A", "chem", "-p", "debug", "-t", "1", "-H", "--wrap", "true"]);
    let (ran_token, pending_token) = (site.token_of(ran).unwrap(), site.token_of(pending).unwrap());
    site.cluster.wait_state(ran, |s| s == "RUNNING", Duration::from_secs(30));
    let lock = site.inject(Fault::Locked);
    assert!(site.cluster.run_as(USER, "scancel", &[&pending.to_string()]).status.success());
    assert_eq!(site.cluster.wait_done(ran), "COMPLETED");
    site.wait_log(&format!("job {ran} (COMPLETED): not reconciled"));
    site.wait_log(&format!("job {pending} (CANCELLED): not reconciled"));
    site.remove(lock);
    assert_eq!(site.held_by(&ran_token), ONE_MINUTE_HOLD);
    let out = site.reconcile();
    assert_eq!(summary_counts(&out), (1, 1, 0), "{out}");
    assert!(out.contains(&format!("charged job {ran} (COMPLETED, run 0, ")), "{out}");
    assert!(out.contains(&format!("released $0.06 held for job {pending} (hold {pending_token}")), "{out}");
    assert_eq!(site.sql_i64("SELECT charged_micros FROM jobs WHERE token = ?1", &ran_token), site.expected_cost(ran));
    assert_eq!(summary_counts(&site.reconcile()), (0, 0, 0));

    // A hold slurmctld never made a job for: the plugin accepted the job, then
    // slurmctld refused it (job_allocate runs after job_submit; here an unknown node).
    // Within the grace period it is left; after it, released.
    let out = site.sbatch(&["-A", "chem", "-p", "debug", "-t", "1", "-w", "nosuchnode", "--wrap", "true"]);
    assert!(text(&out.stderr).contains("Invalid node name specified"), "{}", cluster::show(&out));
    let orphan: String =
        site.conn().query_row("SELECT token FROM jobs WHERE state = 'held'", [], |r| r.get(0)).unwrap();
    let out = site.admin_ok(&["reconcile"]);
    assert_eq!(summary_counts(&out), (0, 0, 1), "{out}");
    assert!(out.contains(&format!("left $0.06 held for hold {orphan} (account chem): submitted ")), "{out}");
    let later = (chrono::Utc::now().timestamp() + 301).to_string();
    let out = site.admin_env(&["reconcile"], &[("ASBB_NOW", &later)]);
    let out = text(&out.stdout);
    assert_eq!(summary_counts(&out), (1, 0, 0), "{out}");
    assert!(out.contains(&format!("released $0.06 held for hold {orphan} (account chem): SLURM has no job")), "{out}");
    let audit =
        site.sql_i64("SELECT count(*) FROM audit_log WHERE command = 'reconcile' AND detail LIKE ?1", "%released%");
    assert!(audit >= 2, "reconcile's actions are in the audit log");

    // An invalid asbb.toml: the last good config stays, and each plugin says why once:
    // jobcomp at `scontrol reconfigure`, job_submit (which 22.05 does not tell) at its
    // next call, which notices the file changed.
    let toml_path = site.cluster.etc_dir().join("asbb.toml");
    let good = std::fs::read_to_string(&toml_path).unwrap();
    std::fs::write(&toml_path, format!("bogus_key = 1\n{good}")).unwrap();
    assert!(site.cluster.run("scontrol", &["reconfigure"]).status.success());
    if cluster::slurm_release() < (23, 11) {
        site.wait_log("jobcomp/asbb: kept the previous config:");
        site.assert_ctld_answers();
        site.normal_job();
        site.wait_log("job_submit/asbb: kept the previous config:");
    } else {
        // 23.11+ reconfigures by starting a new slurmctld: its plugins have no earlier
        // config to keep, so they load, say why, and refuse jobs until the file is fixed.
        site.wait_log("job_submit/asbb: no valid config, every job is refused until it is fixed:");
        site.assert_ctld_answers();
        let out = site.sbatch(&["-A", "chem", "-p", "debug", "-t", "1", "--wrap", "true"]);
        assert_eq!(
            text(&out.stderr),
            "sbatch: error: asbb: internal error; job not submitted. Please tell your admins (details are in the slurmctld log)\n\
             sbatch: error: Batch job submission failed: Slurm internal error, contact system administrator\n"
        );
    }
    assert!(site.cluster.ctld_log().contains("unknown field `bogus_key`"));
    // A valid change reaches both plugins at their next call, with no reconfigure and
    // no restart: the hold and the charge both use the new rate.
    std::fs::write(&toml_path, good.replace("cpu = 3.6", "cpu = 7.2")).unwrap();
    let id = site.submit(&["-A", "chem", "-p", "debug", "-t", "1", "--wrap", "true"]);
    site.wait_log("job_submit/asbb: reloaded");
    let token = site.token_of(id).unwrap();
    assert_eq!(site.held_by(&token), 2 * ONE_MINUTE_HOLD, "job_submit prices with the new rate");
    assert_eq!(site.cluster.wait_done(id), "COMPLETED");
    site.wait_settled(&token, Duration::from_secs(30));
    site.wait_log("jobcomp/asbb: reloaded");
    assert_eq!(site.sql_i64("SELECT charged_micros FROM jobs WHERE token = ?1", &token), 2 * site.expected_cost(id));
    site.assert_settled_and_clean();
}

#[test]
fn ledger_faults_with_accept_policy_are_charged_by_reconcile() {
    let Some(mut site) = Site::start("e2efacc", &asbb_toml("accept", "3.6"), true) else { return };
    site.normal_job();
    for fault in FAULTS {
        let injected = site.inject(fault);
        if matches!(injected, Injected::Nothing) {
            continue;
        }
        let out = site.sbatch(&["-A", "chem", "-p", "debug", "-t", "1", "--wrap", "sleep 1"]);
        let id = submitted_id(&out).unwrap_or_else(|| panic!("{fault:?}: {}", cluster::show(&out)));
        assert_eq!(text(&out.stderr), format!("sbatch: {ACCEPT_NOTE}\n"), "{fault:?}");
        assert_eq!(site.token_of(id), None, "{fault:?}: no hold was placed");
        assert_eq!(site.cluster.wait_done(id), "COMPLETED");
        // The completion could not be written either.
        site.wait_log(&format!("job {id} (COMPLETED): not reconciled"));
        site.assert_ctld_answers();
        site.remove(injected);
        let out = site.reconcile();
        assert_eq!(summary_counts(&out), (0, 1, 0), "{fault:?}: {out}");
        assert!(out.contains(&format!("charged job {id} (COMPLETED, run 0, ")), "{out}");
        assert!(out.contains("it had no hold"), "{out}");
        let cost = site.sql_i64("SELECT cost_micros FROM runs WHERE job_id = CAST(?1 AS INTEGER)", &id.to_string());
        assert_eq!(cost, site.expected_cost(id), "{fault:?}");
        assert_eq!(summary_counts(&site.reconcile()), (0, 0, 0), "{fault:?}: a second reconcile does nothing");
        site.normal_job();
        eprintln!("accept policy, {fault:?}: ran unchecked, reconcile charged it ${}", cost as f64 / 1e6);
    }
    site.assert_settled_and_clean();
}

// ----- a job array of 1,000 tasks ------------------------------------------------------

#[test]
fn array_of_1000_tasks_is_charged_1000_times() {
    let Some(mut site) = Site::start("e2earray", &asbb_toml("reject", "3.6"), false) else { return };
    let started = Instant::now();
    let id =
        site.submit(&["-A", "chem", "-p", "burst", "-t", "1", "-o", "/dev/null", "--array=1-1000", "--wrap", "true"]);
    let token = site.token_of(id).unwrap();
    assert_eq!(site.held_by(&token), 1000 * ONE_MINUTE_HOLD);
    site.wait_all_ended(Duration::from_secs(240));
    site.wait_settled(&token, Duration::from_secs(60));
    let elapsed = started.elapsed();
    assert_eq!(site.sql_i64("SELECT count(*) FROM runs WHERE token = ?1", &token), 1000);
    assert_eq!(site.held_by(&token), 0);
    let expected: i64 = site
        .slurm_jobs()
        .iter()
        .filter(|j| j.hold_token().as_deref() == Some(token.as_str()))
        .map(|j| j.cpus as i64 * (j.end_time - j.start_time).max(0) * MICROS_PER_CPU_S)
        .sum();
    assert_eq!(site.sql_i64("SELECT charged_micros FROM jobs WHERE token = ?1", &token), expected);
    assert_eq!(summary_counts(&site.reconcile()), (0, 0, 0));
    site.assert_settled_and_clean();
    eprintln!("array of 1,000 tasks: submitted, run, charged and settled in {elapsed:?}");
}
