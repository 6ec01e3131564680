// SPDX-License-Identifier: GPL-2.0-or-later
//! A real single-node SLURM cluster for end-to-end tests.
//!
//! Include it from an integration test with
//! `mod support;` and `support::cluster`.
//!
//! ```ignore
//! if !cluster::require_root_and_slurm() { return; }
//! let c = cluster::Cluster::start(cluster::ClusterOptions::new("smoke"));
//! let id = c.submit_ok(&["--wrap", "sleep 1", "-t", "1"]);
//! assert_eq!(c.wait_done(id), "COMPLETED");
//! ```
//!
//! Each cluster lives in its own temp dir (`etc/slurm.conf` and any extra files beside it,
//! `state/`, `spool/`, `log/`, `work/` = the clients' working directory, where job output
//! lands) and uses its own pair of TCP ports, so several clusters (in one test binary or in
//! parallel binaries) run side by side; they share one `munged`, which is started if it is
//! not running and then left running. Dropping a [`Cluster`] stops its daemons (SIGTERM,
//! then SIGKILL after a bounded wait), kills leftover job steps that carry its
//! `SLURM_CONF`, and removes the temp dir unless `ASBB_KEEP_CLUSTER=1` is set — also when a
//! test panics. The daemons are identified by PID; nothing else is ever signalled.
//!
//! Strings in `ClusterOptions::{extra_conf, extra_partitions, ctld_env, slurmd_env, files}`
//! may contain `{dir}` (the cluster's temp dir) and `{etc}` (the directory of slurm.conf),
//! replaced before use, e.g. `("ASBB_LEDGER", "{dir}/ledger.db")`.
#![allow(dead_code)]

mod host;
mod options;
mod ports;
mod process;

pub use self::host::*;
pub use self::options::*;
use self::ports::*;
pub use self::process::*;

use std::collections::HashMap;
use std::fmt::Write as _;
use std::fs;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// Job states after which a job does not run again (unless requeued).
pub const TERMINAL_STATES: &[&str] = &[
    "COMPLETED",
    "FAILED",
    "CANCELLED",
    "TIMEOUT",
    "NODE_FAIL",
    "PREEMPTED",
    "BOOT_FAIL",
    "DEADLINE",
    "OUT_OF_MEMORY",
    "REVOKED",
];

/// True for a terminal `JobState` value (see [`TERMINAL_STATES`]).
pub fn is_terminal(state: &str) -> bool {
    TERMINAL_STATES.contains(&state)
}

/// Default bound for a client command (sbatch, scontrol, ...).
const CLIENT_TIMEOUT: Duration = Duration::from_secs(60);
/// Default bound for `wait_done`.
const WAIT_DONE_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a daemon gets between SIGTERM and SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// A running single-node cluster (slurmctld + slurmd) in its own temp dir.
pub struct Cluster {
    name: String,
    tmp: Option<tempfile::TempDir>,
    dir: PathBuf,
    conf: PathBuf,
    ctld_port: u16,
    slurmd_port: u16,
    node: String,
    ctld_env: Vec<(String, String)>,
    slurmd_env: Vec<(String, String)>,
    ctld: Option<Child>,
    slurmd: Option<Child>,
    start_timeout: Duration,
    _port_lock: Option<PortLock>,
    accounting: Option<Accounting>,
    stopped: bool,
}

/// slurmdbd and its MariaDB, private to one cluster.
pub(super) struct Accounting {
    dbd_port: u16,
    mysql_port: u16,
    /// `sacctmgr -i` commands run once the cluster is registered.
    setup: Vec<String>,
    mysql: Option<Child>,
    dbd: Option<Child>,
    _port_lock: PortLock,
}

pub(super) fn subst(s: &str, dir: &Path, etc: &Path) -> String {
    s.replace("{dir}", &dir.to_string_lossy()).replace("{etc}", &etc.to_string_lossy())
}

pub(super) fn conf_key(line: &str) -> Option<String> {
    let l = line.trim();
    if l.is_empty() || l.starts_with('#') {
        return None;
    }
    let k = l.split('=').next()?.trim();
    Some(k.to_ascii_lowercase())
}

/// `slurmd -C`'s node line with the `Key=value` words of `layout` in place of its own.
fn with_layout(line: &str, layout: &str) -> String {
    let key = |w: &str| w.split('=').next().unwrap_or(w).to_ascii_lowercase();
    let mut words: Vec<String> = line.split_whitespace().map(str::to_string).collect();
    for new in layout.split_whitespace() {
        match words.iter_mut().find(|w| key(w) == key(new)) {
            Some(w) => *w = new.to_string(),
            None => words.push(new.to_string()),
        }
    }
    words.join(" ")
}

impl Cluster {
    /// Starts a cluster and waits until its node is idle; panics with the daemons' log
    /// tails if it does not come up.
    pub fn start(opts: ClusterOptions) -> Cluster {
        match Cluster::try_start(opts) {
            Ok(c) => c,
            Err(e) => panic!("{e}"),
        }
    }

    /// Like [`Cluster::start`] but returns the error (with log tails) instead of panicking.
    /// Retries with other ports when a port turns out to be taken.
    pub fn try_start(opts: ClusterOptions) -> Result<Cluster, String> {
        ensure_munged()?;
        let mut last = String::new();
        for _attempt in 0..3 {
            let (ctld_port, slurmd_port, lock) = match opts.ports {
                Some((a, b)) => (a, b, None),
                None => {
                    let (a, b, l) = reserve_ports()?;
                    (a, b, Some(l))
                }
            };
            let mut c = Cluster::prepare(&opts, ctld_port, slurmd_port, lock)?;
            match c.boot() {
                Ok(()) => return Ok(c),
                Err(e) => {
                    let port_clash = e.contains("Address already in use");
                    last = e;
                    c.stop();
                    if !port_clash || opts.ports.is_some() {
                        break;
                    }
                    // dropping c frees its dir and port lock; try another pair
                }
            }
        }
        Err(last)
    }

    fn prepare(
        opts: &ClusterOptions,
        ctld_port: u16,
        slurmd_port: u16,
        lock: Option<PortLock>,
    ) -> Result<Cluster, String> {
        let name = opts.name.to_ascii_lowercase();
        let tmp = tempfile::Builder::new()
            .prefix(&format!("asbb-cluster-{name}-"))
            .tempdir()
            .map_err(|e| format!("temp dir: {e}"))?;
        let dir = tmp.path().to_path_buf();
        // Jobs of non-root users run in work/ and write their output there.
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).map_err(|e| e.to_string())?;
        let etc = dir.join("etc");
        for sub in ["etc", "state", "spool", "log", "work"] {
            fs::create_dir_all(dir.join(sub)).map_err(|e| format!("mkdir {sub}: {e}"))?;
        }
        fs::set_permissions(dir.join("work"), fs::Permissions::from_mode(0o1777)).map_err(|e| e.to_string())?;

        let facts = node_facts();
        let node = facts.name.clone();
        let d = dir.to_string_lossy();
        let mut plugin_dir = debian_plugin_dir();
        if let Some(p) = &opts.plugin_dir {
            if !p.is_dir() {
                return Err(format!("plugin dir {} does not exist", p.display()));
            }
            let abs = fs::canonicalize(p).unwrap_or_else(|_| p.clone());
            plugin_dir.push(':');
            plugin_dir.push_str(&abs.to_string_lossy());
        }

        let accounting = match &opts.accounting {
            Some(setup) => {
                let (dbd_port, mysql_port, lock) = reserve_ports()?;
                Some(Accounting {
                    dbd_port,
                    mysql_port,
                    setup: setup.clone(),
                    mysql: None,
                    dbd: None,
                    _port_lock: lock,
                })
            }
            None => None,
        };
        let mut lines: Vec<String> = vec![
            format!("ClusterName={name}"),
            format!("SlurmctldHost={node}(127.0.0.1)"),
            format!("SlurmctldPort={ctld_port}"),
            format!("SlurmdPort={slurmd_port}"),
            "SlurmUser=root".into(),
            "SlurmdUser=root".into(),
            "AuthType=auth/munge".into(),
            "CredType=cred/munge".into(),
            format!("StateSaveLocation={d}/state"),
            format!("SlurmdSpoolDir={d}/spool"),
            format!("SlurmctldPidFile={d}/slurmctld.pid"),
            format!("SlurmdPidFile={d}/slurmd.pid"),
            format!("SlurmctldLogFile={d}/log/slurmctld.log"),
            format!("SlurmdLogFile={d}/log/slurmd.log"),
            "SlurmctldDebug=info".into(),
            "SlurmdDebug=info".into(),
            format!("PluginDir={plugin_dir}"),
            "ProctrackType=proctrack/linuxproc".into(),
            "TaskPlugin=task/none".into(),
            "JobAcctGatherType=jobacct_gather/none".into(),
            "AccountingStorageType=accounting_storage/none".into(),
            "JobCompType=jobcomp/none".into(),
            "SelectType=select/cons_tres".into(),
            "SelectTypeParameters=CR_Core".into(),
            "SchedulerType=sched/backfill".into(),
            "SchedulerParameters=batch_sched_delay=0,sched_min_interval=0".into(),
            "MpiDefault=none".into(),
            "ReturnToService=2".into(),
            "SlurmdTimeout=10".into(),
            "MinJobAge=3600".into(),
            "KillWait=2".into(),
            "OverTimeLimit=0".into(),
            "JobRequeue=1".into(),
            "MailProg=/bin/true".into(),
            // A requeued job may start again after cred_expire + 1 s (default 1201 s).
            "AuthInfo=cred_expire=5".into(),
        ];
        if let Some(a) = &accounting {
            let pos = lines.iter().position(|l| l.starts_with("AccountingStorageType=")).unwrap();
            lines[pos] = "AccountingStorageType=accounting_storage/slurmdbd".into();
            lines.push("AccountingStorageHost=127.0.0.1".into());
            lines.push(format!("AccountingStoragePort={}", a.dbd_port));
            lines.push("AccountingStorageEnforce=associations".into());
        }
        for extra in &opts.extra_conf {
            let extra = subst(extra, &dir, &etc);
            match conf_key(&extra) {
                Some(k) => {
                    if let Some(pos) = lines.iter().position(|l| conf_key(l).as_deref() == Some(&k)) {
                        lines[pos] = extra;
                    } else {
                        lines.push(extra);
                    }
                }
                None => lines.push(extra),
            }
        }
        // NodeName from `slurmd -C` (its CPUs, sockets, cores and RealMemory), reachable on
        // loopback whatever the host name resolves to.
        let node_line = match &opts.node_layout {
            Some(layout) => {
                lines.push("SlurmdParameters=config_overrides".into());
                with_layout(&facts.line, layout)
            }
            None => facts.line.clone(),
        };
        lines.push(format!("{node_line} NodeAddr=127.0.0.1 State=UNKNOWN"));
        lines.push(format!("PartitionName=debug Nodes={node} Default=YES MaxTime=INFINITE State=UP"));
        lines.push(format!("PartitionName=batch Nodes={node} MaxTime=INFINITE State=UP"));
        for p in &opts.extra_partitions {
            let p = subst(p, &dir, &etc).replace("{node}", &node);
            if p.contains('=') {
                lines.push(p);
            } else {
                lines.push(format!("PartitionName={p} Nodes={node} MaxTime=INFINITE State=UP"));
            }
        }
        let mut text = String::from("# written by tests/support/cluster.rs\n");
        for l in &lines {
            let _ = writeln!(text, "{l}");
        }
        let conf = etc.join("slurm.conf");
        fs::write(&conf, text).map_err(|e| format!("write slurm.conf: {e}"))?;
        // SLURM 23.02+ slurmd sets up cgroups unless told not to; the test clusters
        // track processes without them (proctrack/linuxproc, task/none). 22.05 has no
        // `disabled` and needs no cgroup.conf.
        if slurm_release() >= (23, 2) {
            fs::write(etc.join("cgroup.conf"), "CgroupPlugin=disabled\n")
                .map_err(|e| format!("write cgroup.conf: {e}"))?;
        }
        if let Some(a) = &accounting {
            // slurmdbd reads slurmdbd.conf from beside $SLURM_CONF and refuses one that
            // others can read (it holds the database password).
            let dbd_conf = format!(
                "AuthType=auth/munge\nDbdHost=localhost\nDbdAddr=127.0.0.1\nDbdPort={}\nSlurmUser=root\n\
                 PidFile={d}/slurmdbd.pid\nLogFile={d}/log/slurmdbd.log\nDebugLevel=info\n\
                 StorageType=accounting_storage/mysql\nStorageHost=127.0.0.1\nStoragePort={}\n\
                 StorageUser=slurm\nStorageLoc=slurm_acct_db\n",
                a.dbd_port, a.mysql_port
            );
            let path = etc.join("slurmdbd.conf");
            fs::write(&path, dbd_conf).map_err(|e| format!("write slurmdbd.conf: {e}"))?;
            fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).map_err(|e| e.to_string())?;
        }
        for (fname, contents) in &opts.files {
            let path = etc.join(fname);
            if let Some(parent) = path.parent() {
                let _ = fs::create_dir_all(parent);
            }
            fs::write(&path, subst(contents, &dir, &etc)).map_err(|e| format!("write {}: {e}", path.display()))?;
        }
        let env = |v: &Vec<(String, String)>| {
            v.iter().map(|(k, val)| (k.clone(), subst(val, &dir, &etc))).collect::<Vec<_>>()
        };
        Ok(Cluster {
            name,
            ctld_env: env(&opts.ctld_env),
            slurmd_env: env(&opts.slurmd_env),
            tmp: Some(tmp),
            conf,
            ctld_port,
            slurmd_port,
            node,
            ctld: None,
            slurmd: None,
            start_timeout: opts.start_timeout,
            _port_lock: lock,
            accounting,
            stopped: false,
            dir,
        })
    }

    fn daemon_command(&self, bin: &str, extra_env: &[(String, String)], out_name: &str) -> Result<Command, String> {
        let mut cmd = self.logged_command(bin, extra_env, out_name)?;
        cmd.arg("-D").arg("-f").arg(&self.conf);
        Ok(cmd)
    }

    /// `bin` with the cluster's SLURM_CONF, stdout and stderr appended to `log/<out_name>.*`.
    fn logged_command(&self, bin: &str, extra_env: &[(String, String)], out_name: &str) -> Result<Command, String> {
        let path = find_binary(bin).ok_or_else(|| format!("{bin} not installed"))?;
        let mut cmd = Command::new(path);
        strip_slurm_env(&mut cmd);
        cmd.env("SLURM_CONF", &self.conf);
        for (k, v) in extra_env {
            cmd.env(k, v);
        }
        let log = |suffix: &str| {
            fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(self.dir.join("log").join(format!("{out_name}.{suffix}")))
                .map_err(|e| e.to_string())
        };
        cmd.stdin(Stdio::null()).stdout(log("stdout")?).stderr(log("stderr")?);
        cmd.current_dir(&self.dir);
        Ok(cmd)
    }

    fn spawn_ctld(&mut self) -> Result<(), String> {
        // A new daemon kills whatever PID its PidFile names: after a kill -9 that PID may
        // belong to someone else by now.
        let _ = fs::remove_file(self.dir.join("slurmctld.pid"));
        let env = self.ctld_env.clone();
        let mut cmd = self.daemon_command("slurmctld", &env, "slurmctld")?;
        self.ctld = Some(cmd.spawn().map_err(|e| format!("spawn slurmctld: {e}"))?);
        Ok(())
    }

    fn spawn_slurmd(&mut self) -> Result<(), String> {
        let _ = fs::remove_file(self.dir.join("slurmd.pid"));
        let env = self.slurmd_env.clone();
        let mut cmd = self.daemon_command("slurmd", &env, "slurmd")?;
        self.slurmd = Some(cmd.spawn().map_err(|e| format!("spawn slurmd: {e}"))?);
        Ok(())
    }

    fn boot(&mut self) -> Result<(), String> {
        if self.accounting.is_some() {
            self.start_accounting()?;
        }
        self.spawn_ctld()?;
        self.spawn_slurmd()?;
        self.wait_ready(self.start_timeout, true)
    }

    /// MariaDB on a fresh data dir, then slurmdbd, then the cluster and the setup
    /// commands registered through sacctmgr (before slurmctld, which loads them at start).
    fn start_accounting(&mut self) -> Result<(), String> {
        let (dbd_port, mysql_port) = {
            let a = self.accounting.as_ref().unwrap();
            (a.dbd_port, a.mysql_port)
        };
        let d = self.dir.to_string_lossy().into_owned();
        let data = format!("--datadir={d}/mysql");
        // A tmpdir of its own: with the default /tmp, two installs at once (the tests run
        // in parallel) failed about once in 20 (`Could not remove temporary table:
        // '/tmp/#sql-temptable-…'`, then `Unknown table 'mysql.tmp_user_sys'`).
        fs::create_dir_all(self.dir.join("mysql-tmp")).map_err(|e| format!("mkdir mysql-tmp: {e}"))?;
        let tmp = format!("--tmpdir={d}/mysql-tmp");
        let mut install = self.logged_command("mariadb-install-db", &[], "mariadb-install")?;
        install.args(["--no-defaults", &data, &tmp, "--user=root", "--auth-root-authentication-method=normal"]);
        install.args(["--skip-test-db", "--innodb-log-file-size=8M"]);
        let st = install.status().map_err(|e| format!("mariadb-install-db: {e}"))?;
        if !st.success() {
            let log = self.dir.join("log");
            return Err(format!(
                "{}\n=== mariadb-install.stdout (tail)\n{}\n=== mariadb-install.stderr (tail)\n{}",
                self.failure(&format!("mariadb-install-db failed ({st})")),
                tail(&log.join("mariadb-install.stdout"), 40),
                tail(&log.join("mariadb-install.stderr"), 40)
            ));
        }
        // No grant tables: slurmdbd may log in as any user; the server listens on
        // loopback only and lives as long as the cluster. Durability is not wanted here.
        let mut mysqld = self.logged_command("mariadbd", &[], "mariadb")?;
        mysqld.args(["--no-defaults", &data, &tmp, "--user=root", "--bind-address=127.0.0.1", "--skip-grant-tables"]);
        mysqld.arg(format!("--port={mysql_port}"));
        mysqld.arg(format!("--socket={d}/mysql.sock")).arg(format!("--pid-file={d}/mysql.pid"));
        mysqld.arg(format!("--log-error={d}/log/mariadb.log"));
        mysqld.args(["--skip-log-bin", "--innodb-buffer-pool-size=32M", "--innodb-log-file-size=8M"]);
        mysqld.args(["--innodb-flush-log-at-trx-commit=0", "--innodb-doublewrite=0"]);
        let child = mysqld.spawn().map_err(|e| format!("spawn mariadbd: {e}"))?;
        self.accounting.as_mut().unwrap().mysql = Some(child);
        self.wait_mysql(mysql_port, Duration::from_secs(30))?;

        let mut dbd = self.logged_command("slurmdbd", &[], "slurmdbd")?;
        dbd.arg("-D");
        let child = dbd.spawn().map_err(|e| format!("spawn slurmdbd: {e}"))?;
        self.accounting.as_mut().unwrap().dbd = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let out = self.run_timeout("sacctmgr", &["-n", "list", "cluster"], Duration::from_secs(10));
            if out.status.success() {
                break;
            }
            if Instant::now() >= deadline {
                return Err(self.failure(&format!(
                    "slurmdbd on port {dbd_port} not answering:\n{}\n=== slurmdbd.log\n{}",
                    show(&out),
                    tail(&self.dir.join("log/slurmdbd.log"), 30)
                )));
            }
            thread::sleep(Duration::from_millis(100));
        }
        let name = self.name.clone();
        let mut commands = vec![format!("add cluster {name}")];
        commands.extend(self.accounting.as_ref().unwrap().setup.iter().cloned());
        for c in commands {
            let mut args = vec!["-i"];
            args.extend(c.split_whitespace());
            let out = self.run_timeout("sacctmgr", &args, Duration::from_secs(30));
            if !out.status.success() {
                return Err(self.failure(&format!("sacctmgr {c}: {}", show(&out))));
            }
        }
        Ok(())
    }

    /// Waits for MariaDB's greeting on its port (it sends one as soon as it serves).
    fn wait_mysql(&mut self, port: u16, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) {
                let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
                let mut b = [0u8; 1];
                if matches!(s.read(&mut b), Ok(1)) {
                    return Ok(());
                }
            }
            let exited =
                self.accounting.as_mut().and_then(|a| a.mysql.as_mut()).map(|c| matches!(c.try_wait(), Ok(Some(_))));
            if exited == Some(true) || Instant::now() >= deadline {
                return Err(self.failure(&format!(
                    "mariadbd not serving on port {port}\n=== mariadb.log\n{}",
                    tail(&self.dir.join("log/mariadb.log"), 30)
                )));
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Polls until slurmctld answers and (if `need_idle`) every node line is `idle`.
    fn wait_ready(&mut self, timeout: Duration, need_idle: bool) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        let mut last = String::new();
        let mut poked = false;
        loop {
            let mut died = None;
            for (what, child) in [("slurmctld", &mut self.ctld), ("slurmd", &mut self.slurmd)] {
                if let Some(c) = child.as_mut() {
                    if let Ok(Some(status)) = c.try_wait() {
                        *child = None;
                        died = Some(format!("{what} exited during startup ({status})"));
                        break;
                    }
                }
            }
            if let Some(what) = died {
                return Err(self.failure(&what));
            }
            // `scontrol ping` answers at once (sinfo retries for 9 s while the controller
            // is down, and a bare TCP probe fills the log with "Zero Bytes" errors).
            let ping = self.run_timeout("scontrol", &["ping"], Duration::from_secs(10));
            let port_open = ping.status.success() && String::from_utf8_lossy(&ping.stdout).contains(" is UP");
            if port_open && !need_idle && !poked {
                // A restarted controller shows the node as `unk` until slurmd registers
                // again (about 4 s); SIGHUP makes our slurmd re-register at once.
                poked = true;
                if let Some(pid) = self.slurmd_pid() {
                    signal(pid, "HUP");
                }
            }
            if port_open {
                let out = self.run_timeout("sinfo", &["-h", "-o", "%t"], Duration::from_secs(10));
                let text = String::from_utf8_lossy(&out.stdout).to_string();
                last = show(&out);
                if std::env::var_os("ASBB_CLUSTER_DEBUG").is_some() {
                    eprintln!("[{:?}] sinfo: {}", Instant::now(), text.trim());
                }
                if out.status.success() {
                    let states: Vec<&str> = text.split_whitespace().collect();
                    let ok = if need_idle {
                        !states.is_empty() && states.iter().all(|s| *s == "idle")
                    } else {
                        !states.is_empty() && states.iter().all(|s| !s.ends_with('*') && !s.starts_with("unk"))
                    };
                    if ok {
                        return Ok(());
                    }
                }
            }
            if Instant::now() >= deadline {
                return Err(self.failure(&format!(
                    "cluster {} not ready after {timeout:?} (ctld port {} answers ping: {port_open}); last sinfo:\n{last}",
                    self.name, self.ctld_port
                )));
            }
            thread::sleep(Duration::from_millis(100));
        }
    }

    fn failure(&self, what: &str) -> String {
        let log = self.dir.join("log");
        format!(
            "{what}\ncluster dir: {}\n=== slurm.conf\n{}\n=== slurmctld.log (tail)\n{}\n=== slurmctld stderr\n{}\n=== slurmd.log (tail)\n{}\n=== slurmd stderr\n{}",
            self.dir.display(),
            fs::read_to_string(&self.conf).unwrap_or_default(),
            tail(&log.join("slurmctld.log"), 40),
            tail(&log.join("slurmctld.stderr"), 20),
            tail(&log.join("slurmd.log"), 40),
            tail(&log.join("slurmd.stderr"), 20),
        )
    }

    // --- facts ---------------------------------------------------------------------------

    /// The cluster's slurm.conf.
    pub fn conf_path(&self) -> &Path {
        &self.conf
    }
    /// The directory of slurm.conf (where `files` were written).
    pub fn etc_dir(&self) -> PathBuf {
        self.dir.join("etc")
    }
    /// The cluster's temp dir.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
    /// Clients' working directory (mode 1777); `slurm-<id>.out` files land here.
    pub fn work_dir(&self) -> PathBuf {
        self.dir.join("work")
    }
    /// Environment a client needs to talk to this cluster: `[("SLURM_CONF", path)]`.
    pub fn env(&self) -> Vec<(String, String)> {
        vec![("SLURM_CONF".to_string(), self.conf.to_string_lossy().into_owned())]
    }
    pub fn name(&self) -> &str {
        &self.name
    }
    pub fn node_name(&self) -> &str {
        &self.node
    }
    pub fn ports(&self) -> (u16, u16) {
        (self.ctld_port, self.slurmd_port)
    }
    pub fn ctld_pid(&self) -> Option<u32> {
        self.ctld.as_ref().map(|c| c.id())
    }
    pub fn slurmd_pid(&self) -> Option<u32> {
        self.slurmd.as_ref().map(|c| c.id())
    }

    // --- clients -------------------------------------------------------------------------

    fn client_command(&self, cmd: &str, args: &[&str]) -> Command {
        let mut c = Command::new(cmd);
        c.args(args);
        strip_slurm_env(&mut c);
        c.env("SLURM_CONF", &self.conf);
        c.current_dir(self.work_dir());
        c
    }

    /// Runs a SLURM client (`sbatch`, `scontrol`, ...) as root against this cluster.
    pub fn run(&self, cmd: &str, args: &[&str]) -> Output {
        self.run_timeout(cmd, args, CLIENT_TIMEOUT)
    }

    /// [`Cluster::run`] with an explicit bound (the command is killed after `timeout`).
    pub fn run_timeout(&self, cmd: &str, args: &[&str], timeout: Duration) -> Output {
        output_with_timeout(self.client_command(cmd, args), timeout).unwrap_or_else(|e| panic!("cannot run {cmd}: {e}"))
    }

    /// Runs a client as `user` (via `runuser`), in the work dir, with SLURM_CONF set.
    pub fn run_as(&self, user: &str, cmd: &str, args: &[&str]) -> Output {
        let conf = format!("SLURM_CONF={}", self.conf.display());
        let mut full: Vec<&str> = vec!["-u", user, "--", "env", &conf, cmd];
        full.extend_from_slice(args);
        output_with_timeout(self.client_command("runuser", &full), CLIENT_TIMEOUT)
            .unwrap_or_else(|e| panic!("cannot run {cmd} as {user}: {e}"))
    }

    /// Runs any command (not only SLURM clients) with this cluster's environment.
    pub fn command(&self, cmd: &str, args: &[&str]) -> Command {
        self.client_command(cmd, args)
    }

    /// `sbatch args...` as root.
    pub fn sbatch(&self, args: &[&str]) -> Output {
        self.run("sbatch", args)
    }

    /// `sbatch args...` as `user`.
    pub fn sbatch_as(&self, user: &str, args: &[&str]) -> Output {
        self.run_as(user, "sbatch", args)
    }

    /// Submits as root and returns the job id; panics (with output and log tail) on failure.
    pub fn submit_ok(&self, args: &[&str]) -> u32 {
        let out = self.sbatch(args);
        self.parse_submitted(&out, args)
    }

    /// Submits as `user` and returns the job id; panics on failure.
    pub fn submit_ok_as(&self, user: &str, args: &[&str]) -> u32 {
        let out = self.sbatch_as(user, args);
        self.parse_submitted(&out, args)
    }

    /// The job id `sbatch` printed; panics (with output and log tail) on a failure.
    pub fn parse_submitted(&self, out: &Output, args: &[&str]) -> u32 {
        let text = String::from_utf8_lossy(&out.stdout);
        let id = text
            .lines()
            .find_map(|l| l.trim().strip_prefix("Submitted batch job "))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse().ok());
        match (out.status.success(), id) {
            (true, Some(id)) => id,
            _ => panic!("sbatch {args:?} failed:\n{}\n=== slurmctld.log (tail)\n{}", show(out), self.ctld_log_tail(30)),
        }
    }

    /// Every line of `scontrol show job -o <id>` (array jobs have several), parsed.
    /// Empty when the job is unknown.
    pub fn job_records(&self, job_id: u32) -> Vec<HashMap<String, String>> {
        let out = self.run("scontrol", &["show", "job", "-o", &job_id.to_string()]);
        if !out.status.success() {
            return Vec::new();
        }
        String::from_utf8_lossy(&out.stdout).lines().filter(|l| l.contains("JobId=")).map(parse_oneliner).collect()
    }

    /// The (first) record of `scontrol show job -o <id>`, or None when unknown.
    pub fn job_info(&self, job_id: u32) -> Option<HashMap<String, String>> {
        self.job_records(job_id).into_iter().next()
    }

    /// One field of `scontrol show job -o <id>`, e.g. `job_field(7, "JobState")`.
    pub fn job_field(&self, job_id: u32, field: &str) -> Option<String> {
        self.job_info(job_id)?.get(field).cloned()
    }

    /// Polls the job's `JobState` until `pred(state)` holds; returns that state. Panics on
    /// timeout with the job record and the log tail.
    pub fn wait_state(&self, job_id: u32, pred: impl Fn(&str) -> bool, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        let mut last: Option<HashMap<String, String>> = None;
        loop {
            if let Some(info) = self.job_info(job_id) {
                if let Some(state) = info.get("JobState") {
                    if pred(state) {
                        return state.clone();
                    }
                }
                last = Some(info);
            }
            if Instant::now() >= deadline {
                panic!(
                    "job {job_id} on cluster {}: state condition not met after {timeout:?}; last record: {:?}\n=== slurmctld.log (tail)\n{}\n=== slurmd.log (tail)\n{}",
                    self.name,
                    last,
                    self.ctld_log_tail(30),
                    tail(&self.dir.join("log/slurmd.log"), 20)
                );
            }
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits (60 s at most) for a terminal state and returns it (e.g. "COMPLETED").
    pub fn wait_done(&self, job_id: u32) -> String {
        self.wait_state(job_id, is_terminal, WAIT_DONE_TIMEOUT)
    }

    /// [`Cluster::wait_done`] with an explicit bound.
    pub fn wait_done_timeout(&self, job_id: u32, timeout: Duration) -> String {
        self.wait_state(job_id, is_terminal, timeout)
    }

    /// Contents of `work/slurm-<id>.out` (default sbatch output), if any.
    pub fn job_output(&self, job_id: u32) -> Option<String> {
        fs::read_to_string(self.work_dir().join(format!("slurm-{job_id}.out"))).ok()
    }

    // --- logs ----------------------------------------------------------------------------

    /// The whole slurmctld log.
    pub fn ctld_log(&self) -> String {
        fs::read_to_string(self.dir.join("log/slurmctld.log")).unwrap_or_default()
    }
    pub fn ctld_log_tail(&self, lines: usize) -> String {
        tail(&self.dir.join("log/slurmctld.log"), lines)
    }
    /// The whole slurmd log.
    pub fn slurmd_log(&self) -> String {
        fs::read_to_string(self.dir.join("log/slurmd.log")).unwrap_or_default()
    }

    // --- daemon control ------------------------------------------------------------------

    /// True while slurmctld (as started by this cluster) is running.
    pub fn ctld_alive(&mut self) -> bool {
        match self.ctld.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// True while slurmd is running.
    pub fn slurmd_alive(&mut self) -> bool {
        match self.slurmd.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// The exit status of slurmctld if it has exited (e.g. a crash: signal 6/11).
    pub fn ctld_exit_status(&mut self) -> Option<ExitStatus> {
        self.ctld.as_mut().and_then(|c| c.try_wait().ok().flatten())
    }

    /// SIGKILLs slurmctld (no state save beyond what it already wrote).
    pub fn kill_ctld(&mut self) {
        if let Some(mut c) = self.ctld.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Stops slurmctld gracefully (SIGTERM, SIGKILL after a bounded wait).
    pub fn stop_ctld(&mut self) {
        if let Some(mut c) = self.ctld.take() {
            stop_child(&mut c, STOP_GRACE);
        }
    }

    /// Starts slurmctld again on the same conf and state dir (jobs are recovered) and
    /// waits until it answers. Panics with the log tail if it does not.
    pub fn start_ctld(&mut self) {
        if self.ctld_alive() {
            return;
        }
        let r = self.spawn_ctld().and_then(|_| self.wait_ready(self.start_timeout, false));
        if let Err(e) = r {
            panic!("{e}");
        }
    }

    /// Graceful stop + start of slurmctld (state kept). Needed after replacing a plugin.
    pub fn restart_ctld(&mut self) {
        self.stop_ctld();
        self.start_ctld();
    }

    /// kill -9 + start of slurmctld (simulates a crash of the controller).
    pub fn restart_ctld_hard(&mut self) {
        self.kill_ctld();
        self.start_ctld();
    }

    /// Stops both daemons and kills leftover job processes of this cluster. Idempotent.
    pub fn stop(&mut self) {
        if self.stopped {
            return;
        }
        self.stopped = true;
        let mut ctld = self.ctld.take();
        let mut slurmd = self.slurmd.take();
        for c in [ctld.as_mut(), slurmd.as_mut()].into_iter().flatten() {
            if let Ok(None) = c.try_wait() {
                signal(c.id(), "TERM");
            }
        }
        let deadline = Instant::now() + STOP_GRACE;
        for c in [ctld.as_mut(), slurmd.as_mut()].into_iter().flatten() {
            loop {
                match c.try_wait() {
                    Ok(Some(_)) | Err(_) => break,
                    Ok(None) if Instant::now() >= deadline => {
                        let _ = c.kill();
                        let _ = c.wait();
                        break;
                    }
                    Ok(None) => thread::sleep(Duration::from_millis(20)),
                }
            }
        }
        self.kill_leftovers();
        if let Some(a) = self.accounting.as_mut() {
            // slurmdbd first: it flushes to the database on the way out.
            for c in [a.dbd.as_mut(), a.mysql.as_mut()].into_iter().flatten() {
                stop_child(c, STOP_GRACE);
            }
        }
    }

    /// slurmstepd and job processes outlive slurmd; they carry our SLURM_CONF in their
    /// environment, or run in this cluster's directory, which no process outside this
    /// cluster does (slurmstepd of SLURM 24.11 writes its title over its environment,
    /// so only its working directory tells).
    fn kill_leftovers(&self) {
        let marker = format!("SLURM_CONF={}", self.conf.display());
        let ours = |pid: u32| {
            fs::read_link(format!("/proc/{pid}/cwd")).is_ok_and(|cwd| cwd.starts_with(&self.dir))
                || fs::read(format!("/proc/{pid}/environ"))
                    .is_ok_and(|env| env.split(|b| *b == 0).any(|kv| kv == marker.as_bytes()))
        };
        let me = std::process::id();
        for _round in 0..3 {
            let mut found = false;
            let Ok(entries) = fs::read_dir("/proc") else {
                return;
            };
            for e in entries.flatten() {
                let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                    continue;
                };
                if pid != me && ours(pid) {
                    signal(pid, "KILL");
                    found = true;
                }
            }
            if !found {
                return;
            }
            thread::sleep(Duration::from_millis(50));
        }
    }
}

pub(super) fn strip_slurm_env(cmd: &mut Command) {
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy();
        if k.starts_with("SLURM_")
            || k.starts_with("SBATCH_")
            || k.starts_with("SALLOC_")
            || k.starts_with("SRUN_")
            || k.starts_with("SQUEUE_")
            || k.starts_with("SINFO_")
            || k.starts_with("SCONTROL_")
        {
            cmd.env_remove(k.as_ref());
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.stop();
        let keep = std::env::var("ASBB_KEEP_CLUSTER").map(|v| v == "1").unwrap_or(false);
        if let Some(tmp) = self.tmp.take() {
            if keep {
                eprintln!("ASBB_KEEP_CLUSTER=1: kept cluster {} in {}", self.name, self.dir.display());
                std::mem::forget(tmp);
            } else {
                drop(tmp);
            }
        }
    }
}
