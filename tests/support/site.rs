// SPDX-License-Identifier: GPL-2.0-or-later
//! A site: a test cluster with asbb's plugins and a ledger, and the ledger reads the
//! end-to-end tests assert.

use super::cluster::{self, Cluster, ClusterOptions};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// The unprivileged user every test job runs as (root's jobs pass untouched).
pub const USER: &str = "asbbuser";

/// Which hook settles ended jobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hook {
    /// `JobCompType=jobcomp/asbb`.
    Jobcomp,
    /// `PrEpPlugins=asbb` beside the site's own `JobCompType=jobcomp/filetxt`
    /// (its records in `{dir}/jobcomp.txt`).
    Prep,
}

impl Hook {
    pub fn conf_lines(self) -> &'static [&'static str] {
        match self {
            Hook::Jobcomp => &["JobCompType=jobcomp/asbb"],
            Hook::Prep => &["PrEpPlugins=asbb", "JobCompType=jobcomp/filetxt", "JobCompLoc={dir}/jobcomp.txt"],
        }
    }
}

pub struct Site {
    pub cluster: Cluster,
    /// The ledger its plugins use (its own, or another site's it shares).
    ledger: PathBuf,
}

impl Site {
    /// A cluster with job_submit/asbb and jobcomp/asbb and a ledger; None when the
    /// environment cannot run it.
    pub fn start(name: &str, toml: &str, ctld_env: &[(&str, &str)]) -> Option<Site> {
        Site::start_with(name, toml, ctld_env, |opts| opts)
    }

    /// `start` with more cluster options (partitions, slurm.conf lines).
    pub fn start_with(
        name: &str,
        toml: &str,
        ctld_env: &[(&str, &str)],
        more: impl FnOnce(ClusterOptions) -> ClusterOptions,
    ) -> Option<Site> {
        Site::start_hooked(name, toml, Hook::Jobcomp, ctld_env, more)
    }

    /// A cluster whose ended jobs are settled by `hook`.
    pub fn start_hooked(
        name: &str,
        toml: &str,
        hook: Hook,
        ctld_env: &[(&str, &str)],
        more: impl FnOnce(ClusterOptions) -> ClusterOptions,
    ) -> Option<Site> {
        if !cluster::require_root_and_slurm() {
            return None;
        }
        let plugins = super::plugin_dir()?;
        cluster::ensure_user(USER);
        let mut opts =
            ClusterOptions::new(name).plugin_dir(plugins).conf("JobSubmitPlugins=asbb").file("asbb.toml", toml);
        for line in hook.conf_lines() {
            opts = opts.conf(line);
        }
        for (k, v) in ctld_env {
            opts = opts.ctld_env(k, v);
        }
        opts = more(opts);
        let cluster = Cluster::start(opts);
        let site = Site { ledger: cluster.dir().join("ledger.db"), cluster };
        // The ledger exists before the first job (the plugins never create it).
        site.admin_ok(&["account", "create", "chem", "--limit", "100", "--start", "2020-01-01"]);
        Some(site)
    }

    /// A second cluster whose plugins use `other`'s ledger (`toml` names it): two
    /// controllers on one host sharing one ledger.
    pub fn start_sharing(name: &str, toml: &str, other: &Site) -> Option<Site> {
        if !cluster::require_root_and_slurm() {
            return None;
        }
        let plugins = super::plugin_dir()?;
        let mut opts =
            ClusterOptions::new(name).plugin_dir(plugins).conf("JobSubmitPlugins=asbb").file("asbb.toml", toml);
        for line in Hook::Jobcomp.conf_lines() {
            opts = opts.conf(line);
        }
        Some(Site { cluster: Cluster::start(opts), ledger: other.ledger() })
    }

    pub fn ledger(&self) -> PathBuf {
        self.ledger.clone()
    }

    pub fn admin(&self, args: &[&str]) -> std::process::Output {
        super::admin_command(&self.cluster).args(args).output().unwrap()
    }

    pub fn admin_ok(&self, args: &[&str]) -> String {
        let out = self.admin(args);
        assert!(out.status.success(), "asbb-admin {args:?}: {}", cluster::show(&out));
        String::from_utf8(out.stdout).unwrap()
    }

    pub fn sql_i64(&self, sql: &str, param: &str) -> i64 {
        let conn =
            rusqlite::Connection::open_with_flags(self.ledger(), rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
        conn.busy_timeout(Duration::from_secs(5)).unwrap();
        conn.query_row(sql, [param], |r| r.get(0)).unwrap()
    }

    /// Waits (up to `timeout`) until `sql_i64(sql, param)` is `want`.
    pub fn wait_sql_i64(&self, sql: &str, param: &str, want: i64, timeout: Duration) {
        let started = Instant::now();
        loop {
            let got = self.sql_i64(sql, param);
            if got == want {
                return;
            }
            assert!(
                started.elapsed() < timeout,
                "{sql} ({param}) is {got}, not {want}; log:\n{}",
                self.cluster.ctld_log_tail(30)
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    pub fn token_of(&self, job_id: u32) -> String {
        let comment = self.cluster.job_field(job_id, "AdminComment").unwrap_or_default();
        comment
            .strip_prefix("asbb:hold=")
            .unwrap_or_else(|| panic!("job {job_id} AdminComment={comment:?}"))
            .to_string()
    }

    pub fn held_by(&self, token: &str) -> i64 {
        self.sql_i64("SELECT held_micros FROM jobs WHERE token = ?1", token)
    }

    /// Waits until jobcomp has reconciled every task of the token's job.
    pub fn wait_settled(&self, token: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let conn = rusqlite::Connection::open_with_flags(self.ledger(), rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
                .unwrap();
            conn.busy_timeout(Duration::from_secs(5)).unwrap();
            let state: String =
                conn.query_row("SELECT state FROM jobs WHERE token = ?1", [token], |r| r.get(0)).unwrap();
            if state != "held" && state != "awaiting_funds" && state != "awaiting_approval" {
                return state;
            }
            assert!(Instant::now() < deadline, "job {token} still {state}; log:\n{}", self.cluster.ctld_log_tail(30));
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Seconds the job ran, from SLURM's own record.
    pub fn elapsed_s(&self, job_id: u32) -> i64 {
        let rec = self.cluster.job_info(job_id).unwrap();
        let t = |k: &str| {
            chrono::NaiveDateTime::parse_from_str(&rec[k], "%Y-%m-%dT%H:%M:%S").unwrap().and_utc().timestamp()
        };
        t("EndTime") - t("StartTime")
    }

    pub fn assert_clean(&mut self) {
        let out = self.admin(&["verify"]);
        assert!(out.status.success(), "verify: {}", cluster::show(&out));
        assert_eq!(
            self.sql_i64("SELECT coalesce(sum(held_micros), 0) FROM accounts WHERE name <> ?1", ""),
            0,
            "money still held"
        );
        assert!(self.cluster.ctld_alive(), "slurmctld died; log:\n{}", self.cluster.ctld_log_tail(40));
    }
}

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

pub fn submitted_id(out: &std::process::Output) -> u32 {
    let stdout = text(&out.stdout);
    stdout
        .trim()
        .strip_prefix("Submitted batch job ")
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not submitted: {}", cluster::show(out)))
}

/// `n` held (`-H`) one-CPU five-minute jobs on account `account` submitted to `site` as
/// the test user, one after another, in a thread: (ids accepted, refusals' texts).
pub fn sbatch_burst(site: &Site, account: &str, n: usize) -> std::thread::JoinHandle<(Vec<u32>, Vec<String>)> {
    let (conf, work, account) = (site.cluster.conf_path().to_path_buf(), site.cluster.work_dir(), account.to_string());
    std::thread::spawn(move || {
        let (mut ids, mut refusals) = (Vec::new(), Vec::new());
        for _ in 0..n {
            let out = std::process::Command::new("runuser")
                .args(["-u", USER, "--", "env"])
                .arg(format!("SLURM_CONF={}", conf.display()))
                .args(["sbatch", "-H", "-A", &account, "-p", "debug", "-t", "5", "-n", "1", "--wrap", "true"])
                .current_dir(&work)
                .output()
                .unwrap();
            match out.status.success() {
                true => ids.push(submitted_id(&out)),
                false => refusals.push(text(&out.stderr)),
            }
        }
        (ids, refusals)
    })
}
