// SPDX-License-Identifier: GPL-2.0-or-later
//! Reading slurmctld's job list: which provisional hold tokens belong to jobs that
//! SLURM has. Call only from a hook, which runs under slurmctld's job lock.

use crate::core::text::hold_token_str;
use crate::slurm::host::symbol;
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

struct Search<'a> {
    wanted: HashSet<&'a str>,
    found: Vec<(String, u32)>,
}

/// Which of `tokens` appear in the admin comment of a job slurmctld has, with that
/// job's id. Empty outside slurmctld.
pub fn jobs_with_tokens(tokens: &[String]) -> Vec<(String, u32)> {
    let Some(list_loc) = symbol(c"job_list") else {
        return Vec::new();
    };
    // SAFETY: `job_list` is slurmctld's `List job_list` global (a pointer).
    let list = unsafe { *(list_loc as *const *mut c_void) };
    if list.is_null() {
        return Vec::new();
    }
    let mut search = Search { wanted: tokens.iter().map(String::as_str).collect(), found: Vec::new() };
    // SAFETY: the caller holds slurmctld's job lock, so the list and its records live
    // for the walk; `visit` only reads each record.
    unsafe { slurm_list_for_each_ro(list, visit, &mut search as *mut Search as *mut c_void) };
    search.found
}

/// One job record of the walk. Never unwinds into C.
unsafe extern "C" fn visit(item: *mut c_void, arg: *mut c_void) -> c_int {
    let body = AssertUnwindSafe(|| {
        // SAFETY: `arg` is the `Search` passed above; `item` a live `job_record_t`.
        let (search, job) = unsafe { (&mut *(arg as *mut Search), (item as *const sys::job_record_t).as_ref()) };
        let Some(job) = job else { return 0 };
        if job.admin_comment.is_null() {
            return 0;
        }
        // SAFETY: a non-NULL admin_comment is a C string owned by the record.
        let text = unsafe { CStr::from_ptr(job.admin_comment) }.to_string_lossy();
        if let Some(token) = hold_token_str(&text) {
            if search.wanted.remove(token) {
                search.found.push((token.to_string(), job.job_id));
            }
        }
        if search.wanted.is_empty() {
            -1
        } else {
            0
        }
    });
    catch_unwind(body).unwrap_or(-1)
}
