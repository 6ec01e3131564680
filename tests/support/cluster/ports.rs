// SPDX-License-Identifier: GPL-2.0-or-later
//! Ports: a free pair per cluster, reserved against other test binaries with a lock directory.
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

// ----- Ports: a free pair, reserved against other test binaries with a lock directory

pub(super) const PORT_LOCK_DIR: &str = "/tmp/asbb-cluster-ports";
pub(super) const PORT_RANGE: (u16, u16) = (20000, 29000); // below the kernel's ephemeral range

pub(super) struct PortLock {
    path: PathBuf,
}

impl Drop for PortLock {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.path);
    }
}

pub(super) fn pid_alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

pub(super) fn try_lock_port(port: u16) -> Option<PortLock> {
    let base = Path::new(PORT_LOCK_DIR);
    let _ = fs::create_dir_all(base);
    let path = base.join(port.to_string());
    for _ in 0..2 {
        match fs::create_dir(&path) {
            Ok(()) => {
                let _ = fs::write(path.join("pid"), std::process::id().to_string());
                return Some(PortLock { path });
            }
            Err(_) => {
                // Held. Stale if its owner is gone (or it never wrote a pid and is old).
                let owner = fs::read_to_string(path.join("pid")).ok().and_then(|s| s.trim().parse::<u32>().ok());
                let stale = match owner {
                    Some(pid) => !pid_alive(pid),
                    None => fs::metadata(&path)
                        .and_then(|m| m.modified())
                        .map(|t| t.elapsed().unwrap_or_default() > Duration::from_secs(30))
                        .unwrap_or(false),
                };
                if !stale {
                    return None;
                }
                // Move it aside atomically so only one reclaimer wins.
                let nanos = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos())
                    .unwrap_or(0);
                let aside = base.join(format!("stale-{port}-{}-{nanos}", std::process::id()));
                if fs::rename(&path, &aside).is_ok() {
                    let _ = fs::remove_dir_all(&aside);
                }
            }
        }
    }
    None
}

pub(super) fn port_free(port: u16) -> bool {
    TcpListener::bind(("0.0.0.0", port)).is_ok()
}

pub(super) fn reserve_ports() -> Result<(u16, u16, PortLock), String> {
    static SEQ: AtomicU32 = AtomicU32::new(0);
    let seq = SEQ.fetch_add(1, Ordering::SeqCst);
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    let slots = u32::from(PORT_RANGE.1 - PORT_RANGE.0) / 2;
    let start = (std::process::id().wrapping_mul(131) ^ nanos ^ seq.wrapping_mul(7919)) % slots;
    for i in 0..400u32 {
        let slot = (start + i) % slots;
        let ctld = PORT_RANGE.0 + (slot * 2) as u16;
        let slurmd = ctld + 1;
        if !port_free(ctld) || !port_free(slurmd) {
            continue;
        }
        if let Some(lock) = try_lock_port(ctld) {
            if port_free(ctld) && port_free(slurmd) {
                return Ok((ctld, slurmd, lock));
            }
        }
    }
    Err("no free port pair in 20000..29000".to_string())
}
