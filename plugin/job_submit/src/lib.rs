// SPDX-License-Identifier: GPL-2.0-or-later
//! job_submit/asbb: prices each submission and holds its estimated cost in the
//! budget ledger (or holds or refuses the job), and re-checks updates. The logic
//! lives in `asbb::adapter::hooks`; this file only crosses the C boundary. A thread
//! of its own confirms provisional holds every 2 s (`asbb::slurm::sweeper`).

use asbb::slurm::host::ErrMsg;
use asbb::slurm::job_desc::JobDesc;
use asbb::slurm::job_record::JobRecord;
use asbb::slurm::plugin::{self as p, INTERNAL_ERROR, SLURM_ERROR, SLURM_SUCCESS};
use asbb::slurm::sys::{job_desc_msg_t, job_record_t};
use libc::{c_char, c_int};

asbb::asbb_plugin!("asbb: money budgets for SLURM jobs", "job_submit/asbb");

#[no_mangle]
pub extern "C" fn init() -> c_int {
    guard("init", SLURM_ERROR, || p::init_job_submit(PLUGIN_TYPE))
}

#[no_mangle]
pub extern "C" fn fini() -> c_int {
    guard("fini", SLURM_SUCCESS, p::fini_threaded)
}

/// # Safety
/// Called by slurmctld with this submission's descriptor and `err_msg`, under its
/// config/job/node/partition read locks.
#[no_mangle]
pub unsafe extern "C" fn job_submit(desc: *mut job_desc_msg_t, _submit_uid: u32, err_msg: *mut *mut c_char) -> c_int {
    let start = p::CallTimer::start();
    // SAFETY: per this function's contract.
    let (desc, mut err) = unsafe { (JobDesc::from_ptr(desc), ErrMsg::from_ptr(err_msg)) };
    let done = guard("job_submit", None, || {
        let mut desc = desc?;
        let fields = desc.submit_fields();
        let action = p::with_hooks(PLUGIN_TYPE, |h| h.on_submit(&fields, p::unix_now()))?;
        Some(p::apply_submit(PLUGIN_TYPE, action, &mut desc, &mut err, start))
    });
    done.unwrap_or_else(|| p::refuse_internal(&mut err))
}

asbb::asbb_job_modify!(job_modify_body);

/// job_modify, whatever the release's signature (see `asbb_job_modify!`).
///
/// # Safety
/// Called from job_modify with slurmctld's arguments (`err_msg` NULL or live).
unsafe fn job_modify_body(
    desc: *mut job_desc_msg_t,
    job: *mut job_record_t,
    submit_uid: u32,
    err_msg: *mut *mut c_char,
) -> c_int {
    let start = p::CallTimer::start();
    // SAFETY: per this function's contract.
    let mut err = unsafe { ErrMsg::from_ptr(err_msg) };
    guard("job_modify", INTERNAL_ERROR, || {
        // SAFETY: per this function's contract.
        let (Some(mut desc), Some(mut job)) = (unsafe { JobDesc::from_ptr(desc) }, unsafe { JobRecord::from_ptr(job) })
        else {
            return INTERNAL_ERROR;
        };
        let call = p::update_call(&desc, &job, submit_uid);
        let modified = p::with_hooks(PLUGIN_TYPE, |h| {
            // May give the job a new hold token: read its fields after.
            p::price_if_requeued(PLUGIN_TYPE, h, &mut job, p::unix_now());
            let (record, merged) = (job.fields(None), job.fields(Some(&desc)));
            h.on_modify(&record, &merged, call, p::unix_now())
        });
        match modified {
            Some(action) => p::apply_modify(PLUGIN_TYPE, action, &mut desc, &mut job, &call, &mut err, start),
            None => INTERNAL_ERROR,
        }
    })
}
