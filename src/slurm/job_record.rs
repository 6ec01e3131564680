// SPDX-License-Identifier: GPL-2.0-or-later
//! `job_record_t` (slurmctld's live job) to plain Rust.

use crate::adapter::fields::{CompletionFields, GpuDefaults, SubmitFields, NO_DEFAULT_MEMORY};
use crate::core::pricing::job::EndState;
use crate::slurm::host::{conf, free_str, read_str, set_str, user_name};
use crate::slurm::job_desc::{partition, JobDesc, PartInfo};
use crate::slurm::sys;
use std::ffi::c_char;

extern "C" {
    // libslurmfull (bitstring.c, renamed by slurm_xlator.h).
    fn slurm_bit_set_count(b: *mut sys::bitstr_t) -> i32;

}

/// A job record slurmctld passed to job_modify or jobcomp.
pub struct JobRecord<'a>(&'a mut sys::job_record_t);

/// `EndState` for a job's state word (flags such as COMPLETING masked off).
pub fn end_state(job_state: u32) -> Option<EndState> {
    Some(match job_state & sys::JOB_STATE_BASE {
        sys::JOB_COMPLETE => EndState::Completed,
        sys::JOB_FAILED => EndState::Failed,
        sys::JOB_TIMEOUT => EndState::Timeout,
        sys::JOB_CANCELLED => EndState::Cancelled,
        sys::JOB_NODE_FAIL => EndState::NodeFail,
        sys::JOB_PREEMPTED => EndState::Preempted,
        sys::JOB_BOOT_FAIL => EndState::BootFail,
        sys::JOB_DEADLINE => EndState::Deadline,
        sys::JOB_OOM => EndState::OutOfMemory,
        _ if job_state & sys::ASBB_JOB_REQUEUE != 0 => EndState::Requeued,
        _ => return None,
    })
}

impl<'a> JobRecord<'a> {
    /// # Safety
    /// `p` is NULL or the job record of the current call, and slurmctld holds the
    /// job lock (write, for the setters) for the duration of the call.
    pub unsafe fn from_ptr(p: *mut sys::job_record_t) -> Option<JobRecord<'a>> {
        // SAFETY: per the contract.
        unsafe { p.as_mut() }.map(JobRecord)
    }

    pub fn raw(&self) -> &sys::job_record_t {
        self.0
    }

    fn str(&self, field: fn(&sys::job_record_t) -> *mut c_char) -> Option<String> {
        // SAFETY: job record string fields are NULL or C strings owned by slurmctld.
        unsafe { read_str(field(self.0)) }
    }

    fn user(&self) -> Option<String> {
        self.str(|j| j.user_name).or_else(|| user_name(self.0.user_id))
    }

    /// Array tasks this record still stands for: 1, or for an array's meta record
    /// holding unsplit tasks, how many remain.
    pub fn task_count(&self) -> u32 {
        // SAFETY: array_recs is NULL or owned by the live job record.
        let Some(recs) = (unsafe { self.0.array_recs.as_ref() }) else {
            return 1;
        };
        let n = if recs.task_cnt > 0 {
            recs.task_cnt
        } else if !recs.task_id_bitmap.is_null() {
            // SAFETY: a live bitmap owned by the record.
            unsafe { slurm_bit_set_count(recs.task_id_bitmap) }.max(0) as u32
        } else {
            0
        };
        n.max(1)
    }

    /// What jobcomp reports for one ended run.
    pub fn completion_fields(&self) -> CompletionFields {
        let j = &*self.0;
        CompletionFields {
            cluster: conf::cluster_name().unwrap_or_default(),
            job_id: j.job_id,
            uid: j.user_id,
            user_name: self.user(),
            account: self.str(|j| j.account),
            partition: self.str(|j| j.partition),
            state: end_state(j.job_state),
            start_time: j.start_time,
            end_time: j.end_time,
            admin_comment: self.str(|j| j.admin_comment),
            tres_alloc: self.str(|j| j.tres_fmt_alloc_str),
            total_cpus: j.total_cpus,
            node_cnt: j.node_cnt,
            task_count: self.task_count(),
            // SAFETY: details is NULL or owned by the live record.
            submit_time: unsafe { j.details.as_ref() }.map(|d| d.submit_time).unwrap_or(0),
            restart_cnt: j.restart_cnt as u32,
            qos: self.qos(),
        }
    }

    /// What prep/asbb's epilog reports for the run that just ended. A requeue counts
    /// the next run (restart count + 1) and makes the job PENDING before slurmctld
    /// calls the epilog, after jobcomp has logged the run: the run is reported as
    /// jobcomp saw it, with its own restart count, as REQUEUED (`scontrol requeue`)
    /// or NODE_FAIL (requeued by slurmctld after a node failure), so both hooks give
    /// it the same run key.
    pub fn epilog_completion_fields(&self) -> CompletionFields {
        let mut fields = self.completion_fields();
        if self.0.job_state & sys::JOB_STATE_BASE == sys::JOB_PENDING {
            fields.restart_cnt = fields.restart_cnt.saturating_sub(1);
            fields.state.get_or_insert(EndState::NodeFail);
        }
        fields
    }

    /// The job as it is (`update` None) or as it would be after `update`: the
    /// record's values overlaid with whatever the update sets. The requested
    /// (`orig_*`) sizes are used, so an unchanged job prices as it did at submission.
    pub fn fields(&self, update: Option<&JobDesc>) -> SubmitFields {
        let j = &*self.0;
        let ustr = |field: fn(&sys::job_desc_msg_t) -> *mut c_char| update.and_then(|d| d.str(field));
        // A number the update sets, else "not given".
        let unum = |field: fn(&sys::job_desc_msg_t) -> u32| update.map_or(sys::NO_VAL, |d| field(d.raw()));
        let unum16 = |field: fn(&sys::job_desc_msg_t) -> u16| update.map_or(sys::NO_VAL16, |d| field(d.raw()));
        let mem = update.map_or(sys::NO_VAL64, |d| d.raw().pn_min_memory);
        // SAFETY: details is NULL or owned by the live record.
        let det = unsafe { j.details.as_ref() };
        let pick = |new: u32, old: u32| if new != sys::NO_VAL { new } else { old };
        let pick16 = |new: u16, old: u16| {
            if new != sys::NO_VAL16 {
                new
            } else {
                old
            }
        };
        let or_str = |new: Option<String>, old: Option<String>| new.or(old);
        let pn_min_memory: u64 = match (mem, det) {
            (sys::NO_VAL64, Some(d)) if j.bit_flags & sys::ASBB_JOB_MEM_SET as u64 != 0 => d.orig_pn_min_memory,
            // slurmctld fills in the default when the user gave none: price it as at
            // submit, where memory was "not given" (and the default applied there).
            (sys::NO_VAL64, _) => sys::NO_VAL64,
            (m, _) => m,
        };
        let new_partition = ustr(|d| d.partition);
        let part = match new_partition.as_deref() {
            Some(name) => partition(Some(name), pn_min_memory),
            // SAFETY: part_ptr is NULL or a live partition record (partition lock held).
            None => unsafe { j.part_ptr.as_ref() }.map(|p| {
                let mut info = PartInfo::of(p, pn_min_memory);
                let list = self.str(|j| j.partition).unwrap_or_default();
                info.widen_to_listed(&list);
                info
            }),
        };
        // A job record keeps no task list string for an array's remaining tasks
        // (and an update's array_inx is a throttle), so give the core their count.
        let array_inx = (!j.array_recs.is_null()).then(|| format!("0-{}", self.task_count() - 1));
        let qos = self.qos();
        SubmitFields {
            uid: j.user_id,
            user_name: self.user(),
            account: or_str(ustr(|d| d.account), self.str(|j| j.account)),
            partition: or_str(new_partition, self.str(|j| j.partition)),
            partition_default_time: part.as_ref().map_or(sys::NO_VAL, |p| p.default_time),
            partition_max_time: part.as_ref().map_or(sys::NO_VAL, |p| p.max_time),
            time_limit: pick(unum(|d| d.time_limit), j.time_limit),
            min_nodes: pick(unum(|d| d.min_nodes), det.map_or(sys::NO_VAL, |d| d.min_nodes)),
            max_nodes: pick(unum(|d| d.max_nodes), det.map_or(sys::NO_VAL, |d| d.max_nodes)),
            num_tasks: pick(unum(|d| d.num_tasks), det.map_or(sys::NO_VAL, |d| d.num_tasks)),
            ntasks_per_node: pick16(unum16(|d| d.ntasks_per_node), det.map_or(sys::NO_VAL16, |d| d.ntasks_per_node)),
            ntasks_per_tres: pick16(unum16(|d| d.ntasks_per_tres), det.map_or(sys::NO_VAL16, |d| d.ntasks_per_tres)),
            // SAFETY: mc_ptr is NULL or owned by the live record's details. slurmctld
            // wrote CR_ONE_TASK_PER_CORE's 1 in when it made the record.
            ntasks_per_core: crate::slurm::host::conf::ntasks_per_core(pick16(
                unum16(|d| d.ntasks_per_core),
                det.and_then(|d| unsafe { d.mc_ptr.as_ref() }).map_or(sys::NO_VAL16, |m| m.ntasks_per_core),
            )),
            // SAFETY: as above.
            threads_per_core: pick16(
                unum16(|d| d.threads_per_core),
                det.and_then(|d| unsafe { d.mc_ptr.as_ref() }).map_or(sys::NO_VAL16, |m| m.threads_per_core),
            ),
            cpus_per_task: pick16(unum16(|d| d.cpus_per_task), det.map_or(sys::NO_VAL16, |d| d.orig_cpus_per_task)),
            min_cpus: pick(unum(|d| d.min_cpus), det.map_or(sys::NO_VAL, |d| d.orig_min_cpus)),
            // SAFETY: details is NULL or owned by the live record; req_nodes is NULL or a C string.
            req_node_count: crate::slurm::job_desc::node_list_count(
                or_str(ustr(|d| d.req_nodes), det.and_then(|d| unsafe { read_str(d.req_nodes) })).as_deref(),
            ),
            pn_min_cpus: pick16(
                unum16(|d| d.pn_min_cpus),
                det.map_or(sys::NO_VAL16, |d| u16::try_from(d.orig_pn_min_cpus).unwrap_or(u16::MAX)),
            ),
            pn_min_memory,
            tres_per_node: or_str(ustr(|d| d.tres_per_node), self.str(|j| j.tres_per_node)),
            tres_per_job: or_str(ustr(|d| d.tres_per_job), self.str(|j| j.tres_per_job)),
            tres_per_task: or_str(ustr(|d| d.tres_per_task), self.str(|j| j.tres_per_task)),
            tres_per_socket: or_str(ustr(|d| d.tres_per_socket), self.str(|j| j.tres_per_socket)),
            // SAFETY: mc_ptr is NULL or owned by the live record's details.
            sockets_per_node: pick16(
                unum16(|d| d.sockets_per_node),
                det.and_then(|d| unsafe { d.mc_ptr.as_ref() }).map_or(sys::NO_VAL16, |m| m.sockets_per_node),
            ),
            cpus_per_tres: or_str(ustr(|d| d.cpus_per_tres), self.str(|j| j.cpus_per_tres)),
            mem_per_tres: or_str(ustr(|d| d.mem_per_tres), self.str(|j| j.mem_per_tres)),
            array_inx,
            qos: or_str(ustr(|d| d.qos), qos),
            job_id: j.job_id,
            name: or_str(ustr(|d| d.name), self.str(|j| j.name)),
            admin_comment: or_str(ustr(|d| d.admin_comment), self.str(|j| j.admin_comment)),
            comment: or_str(ustr(|d| d.comment), self.str(|j| j.comment)),
            wckey: or_str(ustr(|d| d.wckey), self.str(|j| j.wckey)),
            environment: Vec::new(),
            max_array_size: 0,
            exclusive: det.is_some_and(|d| d.whole_node & 1 != 0) || part.as_ref().is_some_and(|p| p.whole_nodes),
            node_max_cpus: part.as_ref().map_or(0, |p| p.node_max_cpus),
            node_max_mem_mb: part.as_ref().map_or(0, |p| p.node_max_mem_mb),
            cpu_alloc_unit: part.as_ref().map_or(1, |p| p.cpu_alloc_unit),
            core_threads: part.as_ref().map_or(1, |p| p.core_threads),
            max_mem_per_cpu: part.as_ref().map_or(0, |p| p.max_mem_per_cpu),
            partition_nodes: part.as_ref().map_or(0, |p| p.node_count),
            partition_gpu_defaults: part.as_ref().map_or(GpuDefaults::default(), |p| p.gpu_defaults),
            partition_default_memory: part.as_ref().map_or(NO_DEFAULT_MEMORY, |p| p.default_memory),
            default_qos: None,
            association_missing: false,
        }
    }

    /// The name of the job's QOS record, if it has one.
    pub fn qos(&self) -> Option<String> {
        // SAFETY: qos_ptr is NULL or the job's live QOS record.
        let q = unsafe { self.0.qos_ptr.as_ref() }?;
        // SAFETY: the QOS name is NULL or a C string.
        unsafe { read_str(q.name) }
    }

    pub fn priority(&self) -> u32 {
        self.0.priority
    }

    pub fn comment(&self) -> Option<String> {
        self.str(|j| j.comment)
    }

    /// Sets the job's `comment`; an empty text removes it.
    pub fn set_comment(&mut self, text: &str) {
        if text.is_empty() {
            // SAFETY: the field is NULL or xmalloc'd; slurmctld holds the job write lock
            // during job_modify.
            unsafe { free_str(&mut self.0.comment) }
        } else {
            // SAFETY: as above.
            unsafe { set_str(&mut self.0.comment, text) }
        }
    }

    /// Sets the reason `scontrol show job` prints (`Reason=`, blanks shown as `_`).
    pub fn set_state_desc(&mut self, text: &str) {
        // SAFETY: the field is NULL or xmalloc'd; slurmctld holds the job write lock
        // during job_modify.
        unsafe { set_str(&mut self.0.state_desc, text) }
    }

    /// Holds a requeued job instead of letting it run again without a budget: a user
    /// hold (priority 0, `JobHeldUser`), so its owner's `scontrol release` reaches
    /// job_modify and is re-checked; the reason goes into its comment, as at submit.
    /// Call only from jobcomp during a requeue (`_job_requeue_op` keeps both).
    pub fn hold_for_rerun(&mut self, reason: &str) {
        self.0.priority = 0;
        self.0.state_reason = sys::WAIT_HELD_USER;
        let comment = crate::slurm::job_desc::with_held_reason(self.comment().as_deref(), reason);
        self.set_comment(&comment);
        self.set_state_desc(reason);
    }

    /// Sets `admin_comment` on the record itself. job_modify must use this rather
    /// than the update for a non-admin's update: 22.05 re-checks the update's
    /// admin_comment after the plugin and refuses it (`Access/permission denied`).
    pub fn set_admin_comment(&mut self, text: &str) {
        // SAFETY: as in `set_state_desc`.
        unsafe { set_str(&mut self.0.admin_comment, text) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn end_states_mask_flags() {
        assert_eq!(end_state(sys::JOB_COMPLETE), Some(EndState::Completed));
        assert_eq!(end_state(sys::JOB_CANCELLED | 0x8000), Some(EndState::Cancelled));
        assert_eq!(end_state(sys::JOB_NODE_FAIL), Some(EndState::NodeFail));
        assert_eq!(end_state(sys::JOB_OOM), Some(EndState::OutOfMemory));
        assert_eq!(end_state(sys::JOB_PENDING | sys::ASBB_JOB_REQUEUE), Some(EndState::Requeued));
        assert_eq!(end_state(sys::JOB_RUNNING), None);
    }
}
