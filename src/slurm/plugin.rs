// SPDX-License-Identifier: GPL-2.0-or-later
//! Being a SLURM plugin: the exported identity symbols, panic guards, the hooks'
//! state, and applying the core's actions to SLURM's structs.

use crate::adapter::fields::Caller;
use crate::adapter::hooks::{
    completion_setup, config_path_for, confirmed_line, CompleteAction, CompletionHooksLoaded, Hooks, LogLevel, LogLine,
    ModifyAction, Refusal, SubmitAction, UpdateCall, CONFIRM_CHUNK,
};
use crate::core::config::{CompletionHook, Config};
use crate::slurm::host::{self, conf, ErrMsg};
use crate::slurm::job_desc::{without_held_reason, JobDesc};
use crate::slurm::job_record::JobRecord;
use crate::slurm::sys;
use std::collections::HashSet;
use std::ffi::c_int;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::Instant;

/// The SLURM release the plugin is built for, from the installed `slurm_version.h`.
/// slurmctld refuses a plugin whose version differs.
pub const SLURM_VERSION: u32 = sys::SLURM_VERSION_NUMBER;
pub const SLURM_SUCCESS: c_int = sys::SLURM_SUCCESS;
pub const SLURM_ERROR: c_int = sys::SLURM_ERROR;
/// Returned when the plugin itself failed (panic, not initialised): sbatch prints
/// "Slurm internal error, contact system administrator".
pub const INTERNAL_ERROR: c_int = sys::ESLURM_INTERNAL as c_int;
/// What the user reads above that line when job_submit failed.
pub const INTERNAL_ERROR_MSG: &str =
    "asbb: internal error; job not submitted. Please tell your admins (details are in the slurmctld log)";

/// Emits `plugin_name`, `plugin_type`, `plugin_version`, a `PLUGIN_TYPE` constant
/// and a `guard(name, default, || body)` that runs `body` under `catch_unwind`.
#[macro_export]
macro_rules! asbb_plugin {
    ($name:literal, $plugin_type:literal) => {
        /// The plugin type, as slurmctld's log lines are prefixed.
        pub const PLUGIN_TYPE: &str = $plugin_type;

        #[no_mangle]
        #[allow(non_upper_case_globals)]
        pub static plugin_name: [u8; $name.len() + 1] = $crate::slurm::plugin::c_bytes($name);

        #[no_mangle]
        #[allow(non_upper_case_globals)]
        pub static plugin_type: [u8; $plugin_type.len() + 1] = $crate::slurm::plugin::c_bytes($plugin_type);

        #[no_mangle]
        #[allow(non_upper_case_globals)]
        pub static plugin_version: u32 = $crate::slurm::plugin::SLURM_VERSION;

        /// Runs an exported function's body; a panic is logged and becomes `default`.
        fn guard<T>(name: &str, default: T, body: impl FnOnce() -> T) -> T {
            $crate::slurm::plugin::guard(PLUGIN_TYPE, name, default, body)
        }
    };
}

/// `text` as a NUL-terminated byte array (checked at compile time in statics).
pub const fn c_bytes<const N: usize>(text: &str) -> [u8; N] {
    let bytes = text.as_bytes();
    assert!(bytes.len() + 1 == N, "array length must be the text's length + 1");
    let mut out = [0u8; N];
    let mut i = 0;
    while i < bytes.len() {
        assert!(bytes[i] != 0, "no NUL inside the text");
        out[i] = bytes[i];
        i += 1;
    }
    out
}

/// See [`asbb_plugin!`]: SLURM is C, so no panic may unwind out of an export.
pub fn guard<T>(plugin_type: &str, name: &str, default: T, body: impl FnOnce() -> T) -> T {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(value) => value,
        Err(payload) => {
            let what = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            // Logging itself must not panic again here.
            let _ = catch_unwind(|| host::error(plugin_type, &format!("{name}: panicked: {what}")));
            default
        }
    }
}

/// The core's state, one per plugin .so, set by `init` and dropped by `fini`.
struct Loaded {
    /// `None` while the config file is invalid (and no valid one was read before).
    hooks: Option<Hooks>,
    /// The config file and what it looked like when last read (or found invalid).
    config_path: PathBuf,
    config_stamp: Option<FileStamp>,
}

static HOOKS: Mutex<Option<Loaded>> = Mutex::new(None);

fn hooks() -> MutexGuard<'static, Option<Loaded>> {
    // A panic in a hook (caught by `guard`) poisons the lock; the ledger's own
    // transactions keep it consistent, so keep going.
    HOOKS.lock().unwrap_or_else(|e| e.into_inner())
}

/// Device, inode, size and modification time: a changed or replaced file differs.
type FileStamp = (u64, u64, u64, i64, i64);

fn file_stamp(path: &Path) -> Option<FileStamp> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino(), m.size(), m.mtime(), m.mtime_nsec()))
}

/// `init`: reads the config (`ASBB_CONFIG`, else asbb.toml beside slurm.conf). An
/// invalid or missing file does not fail `init`: since 23.11 `scontrol reconfigure`
/// starts a new slurmctld, and a plugin that refused to load would take the
/// controller down over a typo. Until the file is fixed (noticed at the next call),
/// job_submit refuses jobs and jobcomp leaves runs to `asbb-admin reconcile`.
pub fn init_hooks(plugin_type: &str) -> c_int {
    let path = config_path_for(conf::slurm_conf_path().as_deref());
    let stamp = file_stamp(&path);
    let state = match Config::load(&path) {
        Ok(config) => {
            host::info(plugin_type, &format!("loaded {} (SLURM {SLURM_VERSION:#x})", path.display()));
            let loaded =
                CompletionHooksLoaded::from_conf(conf::job_comp_type().as_deref(), conf::prep_plugins().as_deref());
            if let Some(line) = completion_setup(config.policy.completion_hook, loaded) {
                log_line(plugin_type, &line);
            }
            Some(new_hooks(config))
        }
        Err(e) => {
            host::error(plugin_type, &format!("no valid config, every job is refused until it is fixed: {e}"));
            None
        }
    };
    *hooks() = Some(Loaded { hooks: state, config_path: path, config_stamp: stamp });
    SLURM_SUCCESS
}

/// Hooks for `config`, in this slurmctld's cluster (slurm.conf's ClusterName).
fn new_hooks(config: Config) -> Hooks {
    let mut hooks = Hooks::new(config);
    if let Some(cluster) = conf::cluster_name() {
        hooks.set_cluster(&cluster);
    }
    hooks
}

/// Re-reads the config if the file changed since it was last read. A bad file keeps
/// the old config and is logged once (until it changes again).
fn reload_if_changed(plugin_type: &str, loaded: &mut Loaded) {
    let stamp = file_stamp(&loaded.config_path);
    if stamp == loaded.config_stamp {
        return;
    }
    loaded.config_stamp = stamp;
    match (Config::load(&loaded.config_path), loaded.hooks.as_mut()) {
        (Ok(config), Some(hooks)) if &config != hooks.config() => {
            hooks.set_config(config);
            host::info(plugin_type, &format!("reloaded {}", loaded.config_path.display()));
        }
        (Ok(_), Some(_)) => {}
        (Ok(config), None) => {
            loaded.hooks = Some(new_hooks(config));
            host::info(plugin_type, &format!("reloaded {}", loaded.config_path.display()));
        }
        (Err(e), Some(_)) => host::error(plugin_type, &format!("kept the previous config: {e}")),
        (Err(e), None) => host::error(plugin_type, &format!("still no valid config: {e}")),
    }
}

/// `scontrol reconfigure` (22.05 calls only jobcomp's `jobcomp_p_set_location`; job_submit
/// gets no call): re-reads the config when it changed, like every hook call does.
pub fn reload_hooks(plugin_type: &str) -> c_int {
    if let Some(loaded) = hooks().as_mut() {
        reload_if_changed(plugin_type, loaded);
    }
    SLURM_SUCCESS
}

/// True inside slurmctld; false in slurmd, which loads PrEp plugins too.
pub fn in_slurmctld() -> bool {
    host::symbol(c"slurmctld_config").is_some()
}

/// job_submit/asbb's `init`: `init_hooks`, and the thread that confirms provisional
/// holds ([`confirm_tick`]) off the submission path.
pub fn init_job_submit(plugin_type: &'static str) -> c_int {
    let rc = init_hooks(plugin_type);
    if in_slurmctld() && !crate::slurm::sweeper::start(plugin_type, "asbb-confirm", confirm_tick) {
        host::error(
            plugin_type,
            "no confirm thread: holds of jobs SLURM never creates stay until `asbb-admin reconcile`",
        );
    }
    rc
}

/// prep/asbb's `init`: in slurmctld as `init_hooks`, and the sweep thread ([`sweep`]);
/// in slurmd nothing (asbb does its work in slurmctld; `prep_p_required` tells slurmd
/// it has nothing to call).
pub fn init_prep(plugin_type: &'static str) -> c_int {
    if !in_slurmctld() {
        return SLURM_SUCCESS;
    }
    let rc = init_hooks(plugin_type);
    if !crate::slurm::sweeper::start(plugin_type, "asbb-prep", sweep_tick) {
        host::error(
            plugin_type,
            "no sweep thread: jobs cancelled while pending keep their holds until `asbb-admin reconcile`",
        );
    }
    rc
}

/// `fini` of a plugin with a thread (job_submit/asbb, prep/asbb): stops the thread,
/// then drops the hooks.
pub fn fini_threaded() -> c_int {
    crate::slurm::sweeper::stop();
    fini_hooks()
}

/// prep/asbb's thread, every 2 s: looks under the read locks, and takes the job write
/// lock only when there is work.
fn sweep_tick(plugin_type: &'static str, locks: &crate::slurm::sweeper::Locks) {
    let needed = || with_loaded_hooks(plugin_type, sweep_needed).unwrap_or(false);
    if locks.read(needed) == Some(true) {
        locks.write(|| with_loaded_hooks(plugin_type, |h| sweep(plugin_type, h, unix_now())));
    }
}

/// One ledger transaction of the confirm thread: holds whose job SLURM has (token, job
/// id), and holds whose job it never created.
type ConfirmChunk<'a> = (&'a [(String, u32)], &'a [String]);

/// job_submit/asbb's thread, every 2 s: the provisional holds past their grace are
/// looked for in slurmctld's job list under its read locks, then confirmed (their job
/// id recorded) or released (SLURM never created their job) in the ledger under no
/// lock of slurmctld's, [`CONFIRM_CHUNK`] at a time, so a submission waits for the
/// hooks no longer than one chunk takes. Holds the job list or the ledger could not
/// answer for go back to the queue for the next round.
fn confirm_tick(plugin_type: &'static str, locks: &crate::slurm::sweeper::Locks) {
    let now = unix_now();
    let tokens = with_loaded_hooks(plugin_type, |h| h.ripe_unconfirmed(now)).unwrap_or_default();
    if tokens.is_empty() {
        return;
    }
    let start = CallTimer::start();
    let requeue = |rest: &[String]| {
        with_loaded_hooks(plugin_type, |h| h.requeue_unconfirmed(rest, now));
    };
    // None: the plugin is finishing, or the list could not be walked whole.
    let Some(Some(found)) = locks.read(|| crate::slurm::job_list::jobs_with_tokens(&tokens)) else {
        requeue(&tokens);
        return;
    };
    let seen: HashSet<&str> = found.iter().map(|(t, _)| t.as_str()).collect();
    let never: Vec<String> = tokens.iter().filter(|t| !seen.contains(t.as_str())).cloned().collect();
    let chunks: Vec<ConfirmChunk<'_>> = found
        .chunks(CONFIRM_CHUNK)
        .map(|f| (f, &[][..]))
        .chain(never.chunks(CONFIRM_CHUNK).map(|n| (&[][..], n)))
        .collect();
    let (mut confirmed, mut released, mut failed) = (0, Vec::new(), None);
    for (i, (found, never)) in chunks.iter().enumerate() {
        match with_loaded_hooks(plugin_type, |h| h.settle_provisional(found, never, now)) {
            Some(Ok(Some(r))) => {
                confirmed += found.len();
                released.extend(r);
            }
            outcome => {
                let rest: Vec<String> = chunks[i..]
                    .iter()
                    .flat_map(|(f, n)| f.iter().map(|(t, _)| t.clone()).chain(n.iter().cloned()))
                    .collect();
                requeue(&rest);
                failed = Some((rest.len(), outcome.and_then(Result::err)));
                break;
            }
        }
    }
    if confirmed > 0 || !released.is_empty() {
        log_timed(plugin_type, &confirmed_line(confirmed, &released), start);
    }
    if let Some((kept, Some(e))) = failed {
        let line = LogLine::error(format!("could not check provisional holds: {e}; {kept} kept for the next check"));
        log_timed(plugin_type, &line, start);
    }
}

/// `fini`: drops the hooks (closing the ledger).
pub fn fini_hooks() -> c_int {
    *hooks() = None;
    SLURM_SUCCESS
}

/// Runs `f` on the hooks, after re-reading the config if its file changed (one
/// `stat`); `None` (logged) before `init`, after `fini`, or while the config is invalid.
pub fn with_hooks<T>(plugin_type: &str, f: impl FnOnce(&mut Hooks) -> T) -> Option<T> {
    let mut guard = hooks();
    match guard.as_mut() {
        Some(loaded) => {
            reload_if_changed(plugin_type, loaded);
            match loaded.hooks.as_mut() {
                Some(hooks) => Some(f(hooks)),
                None => {
                    host::error(plugin_type, &format!("no valid config in {}", loaded.config_path.display()));
                    None
                }
            }
        }
        None => {
            host::error(plugin_type, "called before init or after fini");
            None
        }
    }
}

/// [`with_hooks`] without logging when there are none (for a thread that asks every 2 s).
pub fn with_loaded_hooks<T>(plugin_type: &str, f: impl FnOnce(&mut Hooks) -> T) -> Option<T> {
    let mut guard = hooks();
    let loaded = guard.as_mut()?;
    reload_if_changed(plugin_type, loaded);
    loaded.hooks.as_mut().map(f)
}

/// In PrEp mode, a finished job its owner requeued is priced before an update of it
/// can go through (`scontrol update StartTime=now` would let it start before
/// prep/asbb's thread looks again). job_modify holds the job write lock. slurmctld
/// calls job_modify before it checks who is asking, so anyone's update (even one it
/// then refuses) may trigger this: it writes only what the thread would write within
/// 2 s anyway, once per run (the re-run's hold, on the job owner's account).
pub fn price_if_requeued(plugin_type: &str, hooks: &mut Hooks, job: &mut JobRecord, now: i64) {
    let raw = job.raw();
    if hooks.config().policy.completion_hook != CompletionHook::Prep
        || raw.job_state & sys::JOB_STATE_BASE != sys::JOB_PENDING
        || raw.restart_cnt == 0
    {
        return;
    }
    let start = CallTimer::start();
    let fields = job.completion_fields();
    let key = (fields.job_id, fields.restart_cnt);
    let priced = hooks.price_requeued(now, |checked| if checked.contains(&key) { Vec::new() } else { vec![fields] });
    for (_, action) in priced {
        apply_complete(plugin_type, action, job, start);
    }
}

/// Whether SLURM's job list has anything for [`sweep`]: one read-only walk for each
/// kind, so the job write lock is taken only when there is work.
pub fn sweep_needed(hooks: &mut Hooks) -> bool {
    let (settled, checked) = hooks.sweep_marks();
    !crate::slurm::job_list::ended_unallocated(settled).is_empty()
        || !crate::slurm::job_list::requeued_pending(checked).is_empty()
}

/// What PrEp does not report: held jobs that ended unallocated are settled
/// (`Hooks::settle_unallocated`), and finished jobs requeued by their owner have their
/// re-run priced (`Hooks::price_requeued`), the ledger and the job record changed
/// under one lock. Only from prep/asbb's thread (`sweeper`), which holds slurmctld's
/// job write lock: never from inside a hook, which slurmctld may call from inside its
/// own walk of the job list (a nested walk of that list aborts slurmctld).
pub fn sweep(plugin_type: &str, hooks: &mut Hooks, now: i64) {
    let start = CallTimer::start();
    for line in hooks.settle_unallocated(now, crate::slurm::job_list::ended_unallocated) {
        log_timed(plugin_type, &line, start);
    }
    for (job_id, action) in hooks.price_requeued(now, crate::slurm::job_list::requeued_pending) {
        let mut action = Some(action);
        crate::slurm::job_list::with_job(job_id, |job| {
            if let Some(action) = action.take() {
                apply_complete(plugin_type, action, job, start);
            }
        });
        if let Some(action) = action {
            log_timed(plugin_type, &action.log, start);
        }
    }
}

/// job_submit's answer when the plugin failed: the job is refused with a message.
pub fn refuse_internal(err: &mut ErrMsg) -> c_int {
    err.set(INTERNAL_ERROR_MSG);
    INTERNAL_ERROR
}

/// Seconds since the epoch, for the core's clock.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

/// A hook call's clock: wall time, and the CPU time of the calling thread (the
/// difference is time spent waiting: for a lock, for the CPU, on a busy ledger).
#[derive(Clone, Copy)]
pub struct CallTimer {
    wall: Instant,
    cpu_ns: u64,
}

impl CallTimer {
    pub fn start() -> CallTimer {
        CallTimer { wall: Instant::now(), cpu_ns: thread_cpu_ns() }
    }

    /// `123 us, cpu 45 us`: the wall and CPU microseconds since `start`.
    pub fn elapsed_text(&self) -> String {
        let cpu_us = thread_cpu_ns().saturating_sub(self.cpu_ns) / 1000;
        format!("{} us, cpu {cpu_us} us", self.wall.elapsed().as_micros())
    }
}

/// The calling thread's CPU time (user + system) in nanoseconds (a system call: the
/// vDSO does not serve this clock).
fn thread_cpu_ns() -> u64 {
    let mut t = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `t` is a valid timespec to write to.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut t) };
    if rc != 0 {
        return 0;
    }
    t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
}

/// Logs a hook's line, at its level, with the wall and CPU time since `start`:
/// `... (123 us, cpu 45 us)`.
pub fn log_timed(plugin_type: &str, line: &LogLine, start: CallTimer) {
    log_line(plugin_type, &LogLine { level: line.level, text: format!("{} ({})", line.text, start.elapsed_text()) });
}

/// Logs a line at its level.
pub fn log_line(plugin_type: &str, line: &LogLine) {
    match line.level {
        LogLevel::Error => host::error(plugin_type, &line.text),
        LogLevel::Info => host::info(plugin_type, &line.text),
    }
}

/// The ESLURM code returned for a refusal.
pub fn refuse_code(refusal: Refusal) -> c_int {
    (match refusal {
        Refusal::BudgetRule => sys::ESLURM_ACCOUNTING_POLICY,
        Refusal::UnknownAccount => sys::ESLURM_INVALID_ACCOUNT,
        Refusal::BadTimeLimit => sys::ESLURM_INVALID_TIME_LIMIT,
        Refusal::BadPartition => sys::ESLURM_INVALID_PARTITION_NAME,
        Refusal::BadRequest => sys::ESLURM_INVALID_TRES,
        Refusal::LedgerUnavailable => sys::ESLURM_INTERNAL,
    }) as c_int
}

/// Applies job_submit's action to the submission; returns job_submit's result.
pub fn apply_submit(
    plugin_type: &str,
    action: SubmitAction,
    desc: &mut JobDesc,
    err: &mut ErrMsg,
    start: CallTimer,
) -> c_int {
    let (rc, log) = match action {
        SubmitAction::Pass { log } => (SLURM_SUCCESS, log),
        SubmitAction::Accept { admin_comment, note, time_limit_min, log } => {
            set_admin_comment(desc, &admin_comment);
            desc.set_time_limit(time_limit_min);
            if let Some(note) = note {
                err.set(&note);
            }
            (SLURM_SUCCESS, Some(log))
        }
        SubmitAction::Hold { admin_comment, reason, time_limit_min, log } => {
            set_admin_comment(desc, &admin_comment);
            desc.set_time_limit(time_limit_min);
            desc.hold(&reason);
            err.set(&reason);
            (SLURM_SUCCESS, Some(log))
        }
        SubmitAction::Refuse { err_msg, refusal, log } => {
            err.set(&err_msg);
            (refuse_code(refusal), Some(log))
        }
    };
    if let Some(line) = log {
        log_timed(plugin_type, &line, start);
    }
    rc
}

fn set_admin_comment(desc: &mut JobDesc, text: &str) {
    let current = desc.str(|d| d.admin_comment);
    if current.as_deref() != Some(text) && !(text.is_empty() && current.is_none()) {
        desc.set_admin_comment(text);
    }
}

/// How job_modify was called: who asks (judged as slurmctld will judge it), whether
/// the job is pending, and whether the update releases a held job.
pub fn update_call(update: &JobDesc, job: &JobRecord, submit_uid: u32) -> UpdateCall {
    let caller = if is_operator(submit_uid) {
        Caller::Operator
    } else if submit_uid == job.raw().user_id {
        Caller::Owner
    } else {
        Caller::Other
    };
    UpdateCall {
        caller,
        pending: job.raw().job_state & sys::JOB_STATE_BASE == sys::JOB_PENDING,
        releasing: update.raw().priority == sys::INFINITE && job.priority() == 0,
    }
}

/// root, SlurmUser, or a SLURM operator/administrator: slurmctld's own
/// `validate_operator` (looked up at run time: slurmctld-only), else root/SlurmUser.
fn is_operator(uid: u32) -> bool {
    type ValidateOperator = unsafe extern "C" fn(libc_uid: u32) -> bool;
    if uid == 0 || uid == conf::slurm_user_id() {
        return true;
    }
    // SAFETY: slurmctld.h: `extern bool validate_operator(uid_t uid)`; it reads the
    // association manager under its own locks.
    match unsafe { host::function::<ValidateOperator>(c"validate_operator") } {
        // SAFETY: as above.
        Some(validate) => unsafe { validate(uid) },
        None => false,
    }
}

/// Applies jobcomp's action to the ended run's record and logs it.
pub fn apply_complete(plugin_type: &str, action: CompleteAction, job: &mut JobRecord, start: CallTimer) {
    if let Some(rerun) = &action.rerun {
        job.set_admin_comment(&rerun.admin_comment);
        if let Some(reason) = &rerun.hold_reason {
            job.hold_for_rerun(reason);
        }
    }
    log_timed(plugin_type, &action.log, start);
}

/// Applies job_modify's action; returns job_modify's result. `err` is job_modify's
/// `err_msg` where the release has one (23.02+): the user reads why in scontrol's
/// error; in 22.05 a refused release sets the job's Reason instead.
pub fn apply_modify(
    plugin_type: &str,
    action: ModifyAction,
    update: &mut JobDesc,
    job: &mut JobRecord,
    call: &UpdateCall,
    err: &mut ErrMsg,
    start: CallTimer,
) -> c_int {
    let (rc, log) = match action {
        ModifyAction::Allow { admin_comment, log } => {
            if let Some(text) = admin_comment {
                // 22.05 refuses an update's admin_comment from a non-admin even when
                // the plugin set it, so then the record itself is changed.
                if update.raw().admin_comment.is_null() {
                    job.set_admin_comment(&text);
                } else {
                    update.set_admin_comment(&text);
                }
            }
            if call.releasing {
                // The hold reason asbb put in the comment at submission goes.
                match update.str(|d| d.comment) {
                    Some(c) => without_held_reason(Some(&c)).into_iter().for_each(|c| update.set_comment(&c)),
                    None => without_held_reason(job.comment().as_deref()).into_iter().for_each(|c| job.set_comment(&c)),
                }
            }
            (SLURM_SUCCESS, log)
        }
        ModifyAction::KeepHeld { reason, refusal, log } => {
            job.set_state_desc(&reason);
            err.set(&reason);
            (refuse_code(refusal), Some(log))
        }
        ModifyAction::Refuse { reason, refusal, log } => {
            err.set(&reason);
            (refuse_code(refusal), Some(log))
        }
    };
    if let Some(line) = log {
        log_timed(plugin_type, &line, start);
    }
    rc
}

/// Exports `job_modify` with the signature of the SLURM release built against, calling
/// `$body(desc, job, submit_uid, err_msg)` (`err_msg` NULL where the release has none).
#[cfg(slurm_modify_err_msg)]
#[macro_export]
macro_rules! asbb_job_modify {
    ($body:path) => {
        /// # Safety
        /// Called by slurmctld with an update's descriptor, the job it updates and
        /// `err_msg`, under its job write lock.
        #[no_mangle]
        pub unsafe extern "C" fn job_modify(
            desc: *mut $crate::slurm::sys::job_desc_msg_t,
            job: *mut $crate::slurm::sys::job_record_t,
            submit_uid: u32,
            err_msg: *mut *mut std::ffi::c_char,
        ) -> std::ffi::c_int {
            // SAFETY: per this function's contract.
            unsafe { $body(desc, job, submit_uid, err_msg) }
        }
    };
}

/// See the other `asbb_job_modify`: before 23.02 job_modify has no `err_msg`.
#[cfg(not(slurm_modify_err_msg))]
#[macro_export]
macro_rules! asbb_job_modify {
    ($body:path) => {
        /// # Safety
        /// Called by slurmctld with an update's descriptor and the job it updates,
        /// under its job write lock.
        #[no_mangle]
        pub unsafe extern "C" fn job_modify(
            desc: *mut $crate::slurm::sys::job_desc_msg_t,
            job: *mut $crate::slurm::sys::job_record_t,
            submit_uid: u32,
        ) -> std::ffi::c_int {
            // SAFETY: per this function's contract; no err_msg in this release.
            unsafe { $body(desc, job, submit_uid, std::ptr::null_mut()) }
        }
    };
}

/// Exports `jobcomp_p_set_location` with the release's signature, calling `$body()`.
#[cfg(slurm_jobcomp_location_void)]
#[macro_export]
macro_rules! asbb_jobcomp_set_location {
    ($body:path) => {
        /// Called after init and on every `scontrol reconfigure`.
        #[no_mangle]
        pub extern "C" fn jobcomp_p_set_location() -> std::ffi::c_int {
            $body()
        }
    };
}

/// See the other `asbb_jobcomp_set_location`: before 24.11 it takes `JobCompLoc`.
#[cfg(not(slurm_jobcomp_location_void))]
#[macro_export]
macro_rules! asbb_jobcomp_set_location {
    ($body:path) => {
        /// Called after init and on every `scontrol reconfigure`. `JobCompLoc` is not
        /// used (the ledger's path is in asbb.toml).
        #[no_mangle]
        pub extern "C" fn jobcomp_p_set_location(_location: *mut std::ffi::c_char) -> std::ffi::c_int {
            $body()
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_call_timer_gives_wall_and_cpu_microseconds() {
        let timer = CallTimer::start();
        // Spins until this thread has used 2 ms of CPU (however long that takes on a
        // loaded machine).
        let cpu_start = thread_cpu_ns();
        while thread_cpu_ns() - cpu_start < 2_000_000 {}
        let text = timer.elapsed_text();
        let (wall, cpu) = text.strip_suffix(" us").and_then(|t| t.split_once(" us, cpu ")).expect(&text);
        let (wall, cpu): (u64, u64) = (wall.parse().unwrap(), cpu.parse().unwrap());
        assert!(cpu >= 2000, "{text}");
        // (Give the two clocks 100 us of slack between them.)
        assert!(wall + 100 >= cpu, "a thread's CPU time within a call is at most the call's wall time: {text}");
    }

    #[test]
    fn identity_strings_are_nul_terminated() {
        const NAME: [u8; 16] = c_bytes("job_submit/asbb");
        assert_eq!(&NAME, b"job_submit/asbb\0");
        assert_eq!(SLURM_VERSION >> 16, 22, "built against SLURM 22.x here");
    }

    #[test]
    fn refusals_map_to_eslurm_codes() {
        assert_eq!(refuse_code(Refusal::BudgetRule), 2050);
        assert_eq!(refuse_code(Refusal::UnknownAccount), 2045);
        assert_eq!(refuse_code(Refusal::BadTimeLimit), 2051);
        assert_eq!(refuse_code(Refusal::BadRequest), 2115);
        assert_eq!(refuse_code(Refusal::LedgerUnavailable), 2090);
    }

    #[test]
    fn guard_passes_the_value_through() {
        // A panic is tested inside slurmctld: logging it needs libslurmfull.
        assert_eq!(guard("t", "ok", 1, || 2), 2);
    }
}
