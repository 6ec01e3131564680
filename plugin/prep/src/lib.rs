// SPDX-License-Identifier: GPL-2.0-or-later
//! prep/asbb: settles every ended job run, like jobcomp/asbb, for sites whose one
//! `JobCompType` slot is taken by their own records (`PrEpPlugins=asbb,...`). The
//! logic lives in `asbb::adapter::hooks`; this file only crosses the C boundary.
//!
//! slurmctld calls `prep_p_epilog_slurmctld` when a job that had an allocation ends.
//! Jobs that ended without one (cancelled while pending) and finished jobs requeued
//! by their owner reach no PrEp hook: the plugin's own thread looks for those in
//! slurmctld's job list every 2 s (`asbb::slurm::sweeper`). slurmd loads PrEp plugins
//! too: there `init` does nothing and `prep_p_required` asks for no call.

use asbb::slurm::job_record::JobRecord;
use asbb::slurm::plugin::{self as p, SLURM_ERROR, SLURM_SUCCESS};
use asbb::slurm::sys::job_record_t;
use libc::{c_int, c_void};

asbb::asbb_plugin!("asbb: money budgets for SLURM jobs", "prep/asbb");

/// `prep_call_type_t`'s PREP_EPILOG_SLURMCTLD (the same in every supported release).
const PREP_EPILOG_SLURMCTLD: c_int = 4;

#[no_mangle]
pub extern "C" fn init() -> c_int {
    guard("init", SLURM_ERROR, || p::init_prep(PLUGIN_TYPE))
}

#[no_mangle]
pub extern "C" fn fini() -> c_int {
    guard("fini", SLURM_SUCCESS, p::fini_threaded)
}

/// Which calls this plugin needs: only slurmctld's epilog (slurmd calls nothing).
///
/// # Safety
/// `required` is NULL or points to a bool slurmctld or slurmd owns.
#[no_mangle]
pub unsafe extern "C" fn prep_p_required(call: c_int, required: *mut bool) {
    guard("prep_p_required", (), || {
        // SAFETY: per this function's contract.
        if let Some(required) = unsafe { required.as_mut() } {
            *required = call == PREP_EPILOG_SLURMCTLD && p::in_slurmctld();
        }
    })
}

/// asbb answers at once and never calls back.
#[no_mangle]
pub extern "C" fn prep_p_register_callbacks(_callbacks: *mut c_void) -> c_int {
    SLURM_SUCCESS
}

/// slurmd's prolog: nothing to do (never asked for, see `prep_p_required`).
#[no_mangle]
pub extern "C" fn prep_p_prolog(_job_env: *mut c_void, _cred: *mut c_void) -> c_int {
    SLURM_SUCCESS
}

/// slurmd's epilog: nothing to do.
#[no_mangle]
pub extern "C" fn prep_p_epilog(_job_env: *mut c_void, _cred: *mut c_void) -> c_int {
    SLURM_SUCCESS
}

/// slurmctld's prolog: asbb placed its hold at submit.
#[no_mangle]
pub extern "C" fn prep_p_prolog_slurmctld(_job: *mut job_record_t, _async: *mut bool) -> c_int {
    SLURM_SUCCESS
}

/// A job's allocation ends: settle the run (charge it, release the rest of the hold),
/// as jobcomp/asbb would. `*async` stays false (true would leave the job COMPLETING
/// until a callback). Always SLURM_SUCCESS: slurmctld skips the PrEp plugins after one
/// that fails, and asbb's own failures are logged and left to `asbb-admin reconcile`.
/// No walk of the job list here: slurmctld calls this from inside its own walks.
///
/// # Safety
/// Called by slurmctld with the ended job's record, under its job write lock.
#[no_mangle]
pub unsafe extern "C" fn prep_p_epilog_slurmctld(job: *mut job_record_t, _async: *mut bool) -> c_int {
    let start = p::CallTimer::start();
    guard("prep_p_epilog_slurmctld", SLURM_SUCCESS, || {
        // SAFETY: per this function's contract.
        let Some(mut job) = (unsafe { JobRecord::from_ptr(job) }) else {
            return SLURM_SUCCESS;
        };
        let fields = job.epilog_completion_fields();
        let completed = p::with_hooks(PLUGIN_TYPE, |h| h.on_complete(&fields, p::unix_now()));
        if let Some(action) = completed {
            p::apply_complete(PLUGIN_TYPE, action, &mut job, start);
        }
        SLURM_SUCCESS
    })
}
