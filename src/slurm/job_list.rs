// SPDX-License-Identifier: GPL-2.0-or-later
//! Reading slurmctld's job list: which provisional hold tokens belong to jobs that
//! SLURM has, and which held jobs ended without ever being allocated. Call only from
//! a hook, which runs under slurmctld's job lock.

use crate::adapter::fields::CompletionFields;
use crate::core::text::hold_token_str;
use crate::slurm::host::symbol;
use crate::slurm::job_record::{end_state, JobRecord};
use crate::slurm::sys;
use std::collections::HashSet;
use std::ffi::{c_int, c_void, CStr};
use std::panic::{catch_unwind, AssertUnwindSafe};

extern "C" {
    // libslurmfull (list.c): calls `f(item, arg)` for each item under the list's
    // read lock; a negative return stops the walk.
    fn slurm_list_for_each_ro(
        list: *mut c_void,
        f: unsafe extern "C" fn(*mut c_void, *mut c_void) -> c_int,
        arg: *mut c_void,
    ) -> c_int;
}

/// What one walk does with each record: `false` stops the walk.
type Visitor<'v> = &'v mut dyn FnMut(&mut sys::job_record_t) -> bool;

/// Calls `visit` on every job record slurmctld has (nothing outside slurmctld).
fn for_each_job(mut visit: impl FnMut(&mut sys::job_record_t) -> bool) {
    let Some(list_loc) = symbol(c"job_list") else {
        return;
    };
    // SAFETY: `job_list` is slurmctld's `List job_list` global (a pointer).
    let list = unsafe { *(list_loc as *const *mut c_void) };
    if list.is_null() {
        return;
    }
    let mut visitor: Visitor<'_> = &mut visit;
    // SAFETY: the caller holds slurmctld's job lock, so the list and its records live
    // for the walk; `visit_one` hands each record to `visit` and nothing keeps it.
    unsafe { slurm_list_for_each_ro(list, visit_one, &mut visitor as *mut Visitor<'_> as *mut c_void) };
}

/// One job record of the walk. Never unwinds into C.
unsafe extern "C" fn visit_one(item: *mut c_void, arg: *mut c_void) -> c_int {
    let body = AssertUnwindSafe(|| {
        // SAFETY: `arg` is the `Visitor` passed by `for_each_job`; `item` a live
        // `job_record_t` of the list.
        let (visitor, job) = unsafe { (&mut *(arg as *mut Visitor<'_>), (item as *mut sys::job_record_t).as_mut()) };
        match job {
            Some(job) => {
                if visitor(job) {
                    0
                } else {
                    -1
                }
            }
            None => 0,
        }
    });
    catch_unwind(body).unwrap_or(-1)
}

/// The hold token in a record's admin comment.
fn token_of(job: &sys::job_record_t) -> Option<&str> {
    if job.admin_comment.is_null() {
        return None;
    }
    // SAFETY: a non-NULL admin_comment is a C string owned by the live record.
    let text = unsafe { CStr::from_ptr(job.admin_comment) }.to_str().ok()?;
    hold_token_str(text)
}

/// Which of `tokens` appear in the admin comment of a job slurmctld has, with that
/// job's id. Empty outside slurmctld.
pub fn jobs_with_tokens(tokens: &[String]) -> Vec<(String, u32)> {
    let mut wanted: HashSet<&str> = tokens.iter().map(String::as_str).collect();
    let mut found = Vec::new();
    for_each_job(|job| {
        if let Some(token) = token_of(job) {
            if wanted.remove(token) {
                found.push((token.to_string(), job.job_id));
            }
        }
        !wanted.is_empty()
    });
    found
}

/// The completion of every job with an asbb hold that ended without ever being
/// allocated (cancelled, or failed, while pending): no PrEp hook sees those. Skips
/// the (job id, submit time) pairs in `settled`.
pub fn ended_unallocated(settled: &HashSet<(u32, i64)>) -> Vec<CompletionFields> {
    let mut found = Vec::new();
    for_each_job(|job| {
        let ended = end_state(job.job_state).is_some_and(|s| s != crate::core::pricing::job::EndState::Requeued);
        if ended && job.tres_alloc_str.is_null() && token_of(job).is_some() {
            // SAFETY: the live record of this walk, under slurmctld's job lock.
            if let Some(record) = unsafe { JobRecord::from_ptr(job) } {
                let fields = record.completion_fields();
                if !settled.contains(&(fields.job_id, fields.submit_time)) {
                    found.push(fields);
                }
            }
        }
        true
    });
    found
}

/// Every pending job with an asbb hold that has run before (restart count above 0):
/// it was requeued. Skips the (job id, restart count) pairs in `checked`.
pub fn requeued_pending(checked: &HashSet<(u32, u32)>) -> Vec<CompletionFields> {
    let mut found = Vec::new();
    for_each_job(|job| {
        let pending = job.job_state & sys::JOB_STATE_BASE == sys::JOB_PENDING;
        if pending
            && job.restart_cnt > 0
            && !checked.contains(&(job.job_id, job.restart_cnt as u32))
            && token_of(job).is_some()
        {
            // SAFETY: the live record of this walk, under slurmctld's job lock.
            if let Some(record) = unsafe { JobRecord::from_ptr(job) } {
                found.push(record.completion_fields());
            }
        }
        true
    });
    found
}

/// Runs `f` on job `job_id`'s record, if slurmctld has it. Only under slurmctld's job
/// write lock (a PrEp epilog), since `f` may change the record.
pub fn with_job(job_id: u32, f: impl FnOnce(&mut JobRecord<'_>)) {
    let mut f = Some(f);
    for_each_job(|job| {
        if job.job_id != job_id {
            return true;
        }
        // SAFETY: the live record of this walk, under slurmctld's job write lock.
        if let (Some(mut record), Some(f)) = (unsafe { JobRecord::from_ptr(job) }, f.take()) {
            f(&mut record);
        }
        false
    });
}
