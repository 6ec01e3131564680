// SPDX-License-Identifier: GPL-2.0-or-later
//! The machine under the clusters: root and SLURM present, test users, the one shared `munged`, and the node's facts.
#![allow(unused_imports)]

use super::*;
use std::collections::HashMap;
use std::fmt::Write as _;
use std::fs;
use std::io::Read;
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

// ----- Environment checks

pub(super) fn effective_uid() -> Option<u32> {
    let status = fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    line.split_whitespace().nth(2)?.parse().ok()
}

pub(super) fn find_binary(name: &str) -> Option<PathBuf> {
    for dir in ["/usr/sbin", "/usr/bin", "/sbin", "/bin", "/usr/local/sbin", "/usr/local/bin"] {
        let p = Path::new(dir).join(name);
        if p.is_file() {
            return Some(p);
        }
    }
    None
}

/// The installed SLURM's release (major, minor), from `slurmctld -V` ("slurm 24.11.5").
pub fn slurm_release() -> (u32, u32) {
    static RELEASE: std::sync::OnceLock<(u32, u32)> = std::sync::OnceLock::new();
    *RELEASE.get_or_init(|| {
        let out = find_binary("slurmctld").and_then(|p| Command::new(p).arg("-V").output().ok());
        let text = out.map(|o| String::from_utf8_lossy(&o.stdout).into_owned()).unwrap_or_default();
        let mut nums = text.split_whitespace().nth(1).unwrap_or("").split('.').map(|n| n.parse().unwrap_or(0));
        (nums.next().unwrap_or(0), nums.next().unwrap_or(0))
    })
}

/// True when end-to-end tests can run here (root, SLURM daemons and clients, munge).
/// Otherwise prints why and returns false, so a test can `return` — except when
/// `ASBB_E2E=1` is set (CI), where a missing piece panics instead of skipping.
pub fn require_root_and_slurm() -> bool {
    let mut missing = Vec::new();
    if effective_uid() != Some(0) {
        missing.push("not running as root".to_string());
    }
    for bin in ["slurmctld", "slurmd", "sbatch", "scontrol", "sinfo", "munged", "munge", "runuser"] {
        if find_binary(bin).is_none() {
            missing.push(format!("{bin} not installed"));
        }
    }
    if missing.is_empty() {
        return true;
    }
    let why = missing.join(", ");
    if std::env::var("ASBB_E2E").map(|v| v == "1").unwrap_or(false) {
        panic!("ASBB_E2E=1 but the end-to-end environment is broken: {why} (run scripts/install-deps.sh as root)");
    }
    eprintln!("skipped: {why} (set ASBB_E2E=1 to make this an error)");
    false
}

/// Like [`require_root_and_slurm`], for clusters with accounting: also needs slurmdbd,
/// MariaDB's server, sacctmgr and sacct.
pub fn require_accounting() -> bool {
    if !require_root_and_slurm() {
        return false;
    }
    let missing: Vec<&str> = ["slurmdbd", "mariadbd", "mariadb-install-db", "sacctmgr", "sacct"]
        .into_iter()
        .filter(|b| find_binary(b).is_none())
        .collect();
    if missing.is_empty() {
        return true;
    }
    let why = format!("not installed: {}", missing.join(", "));
    if std::env::var("ASBB_E2E").map(|v| v == "1").unwrap_or(false) {
        panic!("ASBB_E2E=1 but the accounting environment is broken: {why} (run scripts/install-deps.sh as root)");
    }
    eprintln!("skipped: {why} (set ASBB_E2E=1 to make this an error)");
    false
}

/// Makes sure a local user exists (for `run_as`); returns its uid.
pub fn ensure_user(name: &str) -> u32 {
    static LOCK: Mutex<()> = Mutex::new(());
    let _g = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let uid = || -> Option<u32> {
        let out = Command::new("id").args(["-u", name]).output().ok()?;
        if !out.status.success() {
            return None;
        }
        String::from_utf8_lossy(&out.stdout).trim().parse().ok()
    };
    for _ in 0..20 {
        if let Some(u) = uid() {
            return u;
        }
        // Another test binary may hold /etc/passwd's lock; retry.
        let _ = Command::new("useradd")
            .args(["--no-create-home", "--shell", "/bin/sh", name])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        if let Some(u) = uid() {
            return u;
        }
        thread::sleep(Duration::from_millis(100));
    }
    panic!("could not create user {name}");
}

// ----- Host facts

pub(super) struct NodeFacts {
    /// `NodeName=... CPUs=... RealMemory=...` (first line of `slurmd -C`).
    pub(super) line: String,
    pub(super) name: String,
}

pub(super) fn node_facts() -> &'static NodeFacts {
    static FACTS: OnceLock<NodeFacts> = OnceLock::new();
    FACTS.get_or_init(|| {
        let out = Command::new("slurmd").arg("-C").output().expect("run slurmd -C");
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let line = text
            .lines()
            .find(|l| l.starts_with("NodeName="))
            .unwrap_or_else(|| panic!("slurmd -C printed no NodeName line: {text}"))
            .trim()
            .to_string();
        let name = line.split_whitespace().next().and_then(|t| t.strip_prefix("NodeName=")).unwrap().to_string();
        NodeFacts { line, name }
    })
}

pub(super) fn debian_plugin_dir() -> String {
    if let Ok(entries) = fs::read_dir("/usr/lib") {
        for e in entries.flatten() {
            let p = e.path().join("slurm-wlm");
            if p.join("select_cons_tres.so").exists() {
                return p.to_string_lossy().into_owned();
            }
        }
    }
    for p in ["/usr/lib/slurm-wlm", "/usr/lib64/slurm", "/usr/lib/slurm", "/usr/local/lib/slurm"] {
        if Path::new(p).join("select_cons_tres.so").exists() {
            return p.to_string();
        }
    }
    "/usr/lib/x86_64-linux-gnu/slurm-wlm".to_string()
}

// ----- munged (shared by every cluster; started once, left running)

pub(super) fn munge_works() -> bool {
    Command::new("munge")
        .arg("-n")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// Starts munged as the munge user unless a working one is already there.
pub fn ensure_munged() -> Result<(), String> {
    static LOCK: Mutex<()> = Mutex::new(());
    let _g = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    if munge_works() {
        return Ok(());
    }
    let _ = fs::create_dir_all("/run/munge");
    let _ = Command::new("chown").args(["munge:munge", "/run/munge"]).status();
    let _ = fs::set_permissions("/run/munge", fs::Permissions::from_mode(0o755));
    // munged daemonizes itself; a second one started at the same moment by another test
    // binary just fails, and the first serves both. Retry a couple of times to cover
    // a lost race against a dying instance.
    let mut last = String::new();
    for attempt in 0..3 {
        // Later attempts add --force (run despite a stale socket left by a killed munged);
        // we only get here when no munged answers.
        let mut args = vec!["-u", "munge", "--", "/usr/sbin/munged"];
        if attempt > 0 {
            args.push("--force");
        }
        let out = Command::new("runuser")
            .args(&args)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run munged: {e}"))?;
        last = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if munge_works() {
                return Ok(());
            }
            thread::sleep(Duration::from_millis(50));
        }
    }
    Err(format!("munged did not come up: {last}"))
}
