// SPDX-License-Identifier: GPL-2.0-or-later
//! Reading slurmctld's job list: which provisional hold tokens belong to jobs that
//! SLURM has, and which held jobs ended without ever being allocated. Call only under
//! slurmctld's job lock (a plugin thread takes it; see `sweeper`), never from inside
//! one of slurmctld's own walks of the list.

use crate::adapter::fields::CompletionFields;
use crate::core::pricing::job::EndState;
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
type Visitor<'v> = &'v mut dyn FnMut(*mut sys::job_record_t) -> bool;

/// Most records one look settles or prices (the rest wait for the next look).
const MAX_PER_LOOK: usize = 1000;

/// Calls `visit` on every job record slurmctld has, until `visit` says stop. The
/// caller holds slurmctld's job lock and is not inside one of slurmctld's own walks of
/// the job list. False when the list could not be walked (no list: outside slurmctld,
/// or before slurmctld made it or after it freed it) or a visit panicked: then what
/// was not seen says nothing about which jobs exist.
fn for_each_job(mut visit: impl FnMut(*mut sys::job_record_t) -> bool) -> bool {
    let Some(list_loc) = symbol(c"job_list") else {
        return false;
    };
    // SAFETY: `job_list` is slurmctld's `List job_list` global (a pointer).
    let list = unsafe { *(list_loc as *const *mut c_void) };
    if list.is_null() {
        return false;
    }
    let mut complete = true;
    {
        let mut guarded = |job| {
            catch_unwind(AssertUnwindSafe(|| visit(job))).unwrap_or_else(|_| {
                complete = false;
                false
            })
        };
        let mut visitor: Visitor<'_> = &mut guarded;
        // SAFETY: the caller holds slurmctld's job lock, so the list and its records
        // live for the walk; `visit_one` hands each record to `visit` and nothing keeps it.
        unsafe { slurm_list_for_each_ro(list, visit_one, &mut visitor as *mut Visitor<'_> as *mut c_void) };
    }
    complete
}

/// One job record of the walk. Never unwinds into C.
unsafe extern "C" fn visit_one(item: *mut c_void, arg: *mut c_void) -> c_int {
    let body = AssertUnwindSafe(|| {
        // SAFETY: `arg` is the `Visitor` passed by `for_each_job`.
        let visitor = unsafe { &mut *(arg as *mut Visitor<'_>) };
        let job = item as *mut sys::job_record_t;
        if job.is_null() || visitor(job) {
            0
        } else {
            -1
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
/// job's id. None when the job list could not be walked whole (see `for_each_job`):
/// a token not found then does not mean SLURM never created its job.
pub fn jobs_with_tokens(tokens: &[String]) -> Option<Vec<(String, u32)>> {
    let mut wanted: HashSet<&str> = tokens.iter().map(String::as_str).collect();
    let mut found = Vec::new();
    let complete = for_each_job(|job| {
        // SAFETY: a live record of the walk, only read.
        let job = unsafe { &*job };
        if let Some(token) = token_of(job) {
            if wanted.remove(token) {
                found.push((token.to_string(), job.job_id));
            }
        }
        !wanted.is_empty()
    });
    complete.then_some(found)
}

/// The completion of every job with an asbb hold whose last run ended without an
/// allocation (cancelled, or failed, while pending; also after a requeue): no PrEp
/// hook sees those. Its allocation is left out (a requeued job keeps its previous
/// run's TRES string). Skips the (job id, submit time) pairs in `settled`.
pub fn ended_unallocated(settled: &HashSet<(u32, i64)>) -> Vec<CompletionFields> {
    let mut found = Vec::new();
    for_each_job(|ptr| {
        // SAFETY: a live record of the walk, only read.
        let job = unsafe { &*ptr };
        let ended = end_state(job.job_state).is_some_and(|s| s != EndState::Requeued);
        // Never allocated, or not this time: no nodes, and a start equal to the end
        // (slurmctld sets both when it ends a pending job).
        let unallocated = job.node_bitmap.is_null() && (job.tres_alloc_str.is_null() || job.start_time == job.end_time);
        // SAFETY: details is NULL or owned by the live record.
        let submit_time = unsafe { job.details.as_ref() }.map_or(0, |d| d.submit_time);
        if ended && unallocated && !settled.contains(&(job.job_id, submit_time)) && token_of(job).is_some() {
            // SAFETY: the live record of this walk, under slurmctld's job lock.
            if let Some(record) = unsafe { JobRecord::from_ptr(ptr) } {
                let mut fields = record.completion_fields();
                fields.tres_alloc = None;
                found.push(fields);
            }
        }
        found.len() < MAX_PER_LOOK
    });
    found
}

/// Every pending job with an asbb hold that has run before (restart count above 0):
/// it was requeued. Skips the (job id, restart count) pairs in `checked`.
pub fn requeued_pending(checked: &HashSet<(u32, u32)>) -> Vec<CompletionFields> {
    let mut found = Vec::new();
    for_each_job(|ptr| {
        // SAFETY: a live record of the walk, only read.
        let job = unsafe { &*ptr };
        let pending = job.job_state & sys::JOB_STATE_BASE == sys::JOB_PENDING;
        if pending
            && job.restart_cnt > 0
            && !checked.contains(&(job.job_id, job.restart_cnt as u32))
            && token_of(job).is_some()
        {
            // SAFETY: the live record of this walk, under slurmctld's job lock.
            if let Some(record) = unsafe { JobRecord::from_ptr(ptr) } {
                found.push(record.completion_fields());
            }
        }
        found.len() < MAX_PER_LOOK
    });
    found
}

/// Runs `f` on job `job_id`'s record, if slurmctld has it. Only under slurmctld's job
/// write lock, since `f` may change the record.
pub fn with_job(job_id: u32, f: impl FnOnce(&mut JobRecord<'_>)) {
    let mut f = Some(f);
    for_each_job(|ptr| {
        // SAFETY: a live record of the walk; the caller holds the job write lock.
        if unsafe { (*ptr).job_id } != job_id {
            return true;
        }
        // SAFETY: as above; no other reference to this record is alive here.
        if let (Some(mut record), Some(f)) = (unsafe { JobRecord::from_ptr(ptr) }, f.take()) {
            f(&mut record);
        }
        false
    });
}
