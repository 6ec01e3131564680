// SPDX-License-Identifier: GPL-2.0-or-later
//! jobcomp/asbb: reconciles every ended job run (charges the actual cost, releases
//! the rest of the hold). The logic lives in `asbb::adapter::hooks`; this file only
//! crosses the C boundary.

use asbb::slurm::job_record::JobRecord;
use asbb::slurm::plugin::{self as p, SLURM_ERROR, SLURM_SUCCESS};
use asbb::slurm::sys::job_record_t;
use libc::{c_int, c_void};

asbb::asbb_plugin!("asbb: money budgets for SLURM jobs", "jobcomp/asbb");

#[no_mangle]
pub extern "C" fn init() -> c_int {
    guard("init", SLURM_ERROR, || p::init_hooks(PLUGIN_TYPE))
}

#[no_mangle]
pub extern "C" fn fini() -> c_int {
    guard("fini", SLURM_SUCCESS, p::fini_hooks)
}

fn set_location() -> c_int {
    guard("jobcomp_p_set_location", SLURM_SUCCESS, || p::reload_hooks(PLUGIN_TYPE))
}

// Re-reads asbb.toml if it changed.
asbb::asbb_jobcomp_set_location!(set_location);

/// # Safety
/// Called by slurmctld with the ended job's record, under its job write lock.
#[no_mangle]
pub unsafe extern "C" fn jobcomp_p_log_record(job: *mut job_record_t) -> c_int {
    let start = p::CallTimer::start();
    guard("jobcomp_p_log_record", SLURM_ERROR, || {
        // SAFETY: per this function's contract.
        let Some(mut job) = (unsafe { JobRecord::from_ptr(job) }) else {
            return SLURM_ERROR;
        };
        let fields = job.completion_fields();
        let completed = p::with_hooks(PLUGIN_TYPE, |h| h.on_complete(&fields, p::unix_now()));
        match completed {
            Some(action) => {
                p::apply_complete(PLUGIN_TYPE, action, &mut job, start);
                SLURM_SUCCESS
            }
            None => SLURM_ERROR,
        }
    })
}

/// 25.05+ reports a job's end here (with an event code) instead of
/// `jobcomp_p_log_record`; older releases never call it.
///
/// # Safety
/// As `jobcomp_p_log_record`.
#[no_mangle]
pub unsafe extern "C" fn jobcomp_p_record_job_end(job: *mut job_record_t, _event: u32) -> c_int {
    // SAFETY: the same contract.
    unsafe { jobcomp_p_log_record(job) }
}

/// 25.05+ reports a job's start; asbb settles at the end only.
#[no_mangle]
pub extern "C" fn jobcomp_p_record_job_start(_job: *mut job_record_t, _event: u32) -> c_int {
    SLURM_SUCCESS
}

/// `sacct --completion` reads job records back from a jobcomp plugin; asbb keeps
/// none (use `asbb-admin` reports), so it returns no list.
#[no_mangle]
pub extern "C" fn jobcomp_p_get_jobs(_job_cond: *mut c_void) -> *mut c_void {
    std::ptr::null_mut()
}
