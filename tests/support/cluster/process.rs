// SPDX-License-Identifier: GPL-2.0-or-later
//! Running commands with a bound, stopping daemons, and showing their output.
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

// ----- Running commands with a bound

/// Runs `cmd` to completion, capturing output; kills it after `timeout` (then the status
/// is the killed one and stderr ends with a note).
pub(super) fn output_with_timeout(mut cmd: Command, timeout: Duration) -> std::io::Result<Output> {
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn()?;
    let mut so = child.stdout.take().unwrap();
    let mut se = child.stderr.take().unwrap();
    let t_out = thread::spawn(move || {
        let mut v = Vec::new();
        let _ = so.read_to_end(&mut v);
        v
    });
    let t_err = thread::spawn(move || {
        let mut v = Vec::new();
        let _ = se.read_to_end(&mut v);
        v
    });
    let deadline = Instant::now() + timeout;
    let mut timed_out = false;
    let status = loop {
        if let Some(s) = child.try_wait()? {
            break s;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            timed_out = true;
            break child.wait()?;
        }
        thread::sleep(Duration::from_millis(10));
    };
    let stdout = t_out.join().unwrap_or_default();
    let mut stderr = t_err.join().unwrap_or_default();
    if timed_out {
        stderr.extend_from_slice(format!("\n[killed after {timeout:?}]\n").as_bytes());
    }
    Ok(Output { status, stdout, stderr })
}

pub(super) fn signal(pid: u32, sig: &str) {
    let _ = Command::new("kill")
        .args([&format!("-{sig}"), &pid.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// SIGTERM, wait up to `grace`, then SIGKILL. Returns the exit status if reaped.
pub(super) fn stop_child(child: &mut Child, grace: Duration) -> Option<ExitStatus> {
    if let Ok(Some(s)) = child.try_wait() {
        return Some(s);
    }
    signal(child.id(), "TERM");
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if let Ok(Some(s)) = child.try_wait() {
            return Some(s);
        }
        thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    child.wait().ok()
}

pub(super) fn tail(path: &Path, lines: usize) -> String {
    match fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let all: Vec<&str> = text.lines().collect();
            all[all.len().saturating_sub(lines)..].join("\n")
        }
        Err(e) => format!("<cannot read {}: {e}>", path.display()),
    }
}

/// Output as text, for messages.
pub fn show(out: &Output) -> String {
    format!(
        "status {}\n--- stdout\n{}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout).trim_end(),
        String::from_utf8_lossy(&out.stderr).trim_end()
    )
}

/// Parses one line of `scontrol show ... -o` into key → value. Values may contain spaces
/// (a new key starts at a space followed by `Key=`).
pub fn parse_oneliner(line: &str) -> HashMap<String, String> {
    let mut map = HashMap::new();
    let mut key: Option<String> = None;
    let mut val = String::new();
    for tok in line.split(' ') {
        let new_key = tok.find('=').and_then(|i| {
            let k = &tok[..i];
            let ok = !k.is_empty()
                && k.chars().next().unwrap().is_ascii_alphabetic()
                && k.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | ':' | '/' | '.'));
            ok.then(|| (k.to_string(), tok[i + 1..].to_string()))
        });
        match new_key {
            Some((k, v)) => {
                if let Some(old) = key.take() {
                    map.insert(old, std::mem::take(&mut val).trim().to_string());
                }
                key = Some(k);
                val = v;
            }
            None => {
                if key.is_some() {
                    val.push(' ');
                    val.push_str(tok);
                }
            }
        }
    }
    if let Some(k) = key {
        map.insert(k, val.trim_end().to_string());
    }
    map
}
