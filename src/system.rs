// SPDX-License-Identifier: GPL-2.0-or-later
//! What the machine says, for the command lines and the API alike: the time they act
//! at, the local user database, and SLURM's client commands.

use crate::core::safe_fs::passwd_find;
use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Longest a SLURM client command may run.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(120);

/// Where a long-running server reads the time (tests give a fixed one).
pub type Clock = fn() -> Result<i64, String>;

/// The time commands act at: now, or `ASBB_NOW` (unix seconds or RFC 3339), which
/// makes reports and tests reproducible.
pub fn now() -> Result<i64, String> {
    match std::env::var("ASBB_NOW") {
        Ok(v) if !v.is_empty() => {
            if let Ok(n) = v.parse::<i64>() {
                return Ok(n);
            }
            chrono::DateTime::parse_from_rfc3339(&v)
                .map(|t| t.timestamp())
                .map_err(|_| format!("ASBB_NOW '{v}' is not unix seconds or RFC 3339"))
        }
        _ => Ok(chrono::Utc::now().timestamp()),
    }
}

/// Looks a uid up in /etc/passwd.
pub fn user_name(uid: u32) -> Option<String> {
    passwd_find(|_, u| u == uid).map(|(name, _, _)| name)
}

/// A user's uid and primary gid from /etc/passwd.
pub fn passwd_ids(name: &str) -> Option<(u32, u32)> {
    passwd_find(|n, _| n == name).map(|(_, uid, gid)| (uid, gid))
}

/// `alice` → (alice, uid of alice); `1001` → (name of 1001 or "1001", 1001).
pub fn resolve_user(text: &str) -> (String, Option<u32>) {
    let t = text.trim();
    if let Ok(uid) = t.parse::<u32>() {
        return (user_name(uid).unwrap_or_else(|| t.to_string()), Some(uid));
    }
    (t.to_string(), passwd_ids(t).map(|(uid, _)| uid))
}

/// Runs a SLURM client (`squeue`, `scontrol`, `sacct`, ...) for at most
/// [`COMMAND_TIMEOUT`]; its stdout, or one line saying why not (its stderr, cleaned).
pub fn run_slurm(cmd: &str, args: &[&str], env: &[(&str, &str)]) -> Result<String, String> {
    run_command(cmd, args, env, None, COMMAND_TIMEOUT)
}

/// Runs a program (no shell) with `input` on its stdin for at most `timeout`; its
/// stdout, or one line saying why not (its stderr, cleaned).
pub fn run_command(
    cmd: &str,
    args: &[&str],
    env: &[(&str, &str)],
    input: Option<Vec<u8>>,
    timeout: Duration,
) -> Result<String, String> {
    let mut c = Command::new(cmd);
    let stdin = if input.is_some() { Stdio::piped() } else { Stdio::null() };
    c.args(args).stdin(stdin).stdout(Stdio::piped()).stderr(Stdio::piped());
    for (k, v) in env {
        c.env(k, v);
    }
    let shown = format!("{cmd} {}", args.join(" ")).trim_end().to_string();
    let mut child = c.spawn().map_err(|e| format!("cannot run `{shown}`: {e}"))?;
    // Written from a thread: a program that reads nothing, or writes much before it
    // reads, must not block us (the deadline below still holds).
    if let (Some(bytes), Some(mut w)) = (input, child.stdin.take()) {
        std::thread::spawn(move || {
            use std::io::Write;
            let _ = w.write_all(&bytes);
        });
    }
    let mut so = child.stdout.take().ok_or("no stdout")?;
    let mut se = child.stderr.take().ok_or("no stderr")?;
    // Read on threads that hand their bytes over a channel: a program that leaves a
    // child holding its stdout open must not keep us past the deadline.
    let (out_tx, out_rx) = std::sync::mpsc::channel();
    let (err_tx, err_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = so.read_to_end(&mut v);
        let _ = out_tx.send(v);
    });
    std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = se.read_to_end(&mut v);
        let _ = err_tx.send(v);
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break s,
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("`{shown}` did not finish within {} ms", timeout.as_millis()));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(10)),
            Err(e) => return Err(format!("`{shown}`: {e}")),
        }
    };
    let left = || deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(100));
    let stdout = match out_rx.recv_timeout(left()) {
        Ok(v) => String::from_utf8_lossy(&v).into_owned(),
        Err(_) => return Err(format!("`{shown}` exited but something it started kept its output open")),
    };
    let stderr = String::from_utf8_lossy(&err_rx.recv_timeout(left()).unwrap_or_default()).into_owned();
    if !status.success() {
        let why = stderr.lines().chain(stdout.lines()).find(|l| !l.trim().is_empty()).unwrap_or("no output");
        return Err(format!("`{shown}` failed ({status}): {}", crate::core::text::clean_text(why)));
    }
    Ok(stdout)
}
