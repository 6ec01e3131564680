// SPDX-License-Identifier: GPL-2.0-or-later
//! `job_desc_msg_t` (a submission or an update) to and from plain Rust.

use crate::adapter::fields::{GpuDefaults, SubmitFields, NO_DEFAULT_MEMORY};
use crate::slurm::host::{conf, function, gpu_defaults, read_str, set_str, symbol, user_name};
use crate::slurm::sys;
use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::sync::Mutex;

/// Most environment entries copied out of a submission.
const MAX_ENV_ENTRIES: usize = 4096;

/// Appended to a held job's `comment` so the user can read why in `scontrol show job`.
pub const HELD_COMMENT_TAG: &str = "[asbb hold] ";

/// A partition's name, default/maximum time limits and largest node, copied out of
/// its record.
#[derive(Debug, Clone)]
pub struct PartInfo {
    pub name: Option<String>,
    pub default_time: u32,
    pub max_time: u32,
    /// CPUs and memory (MB) of the partition's largest node; 0 when unknown.
    pub node_max_cpus: u32,
    pub node_max_mem_mb: u64,
    /// Nodes in the partition (the most of any partition the job lists).
    pub node_count: u32,
    /// Its `DefCpuPerGPU` / `DefMemPerGPU`, else slurm.conf's (the most of any
    /// partition the job lists).
    pub gpu_defaults: GpuDefaults,
    /// `OverSubscribe=EXCLUSIVE`: every job gets whole nodes, as with `--exclusive`
    /// (any partition the job lists).
    pub whole_nodes: bool,
    /// The memory a job without `--mem` gets, raw as `pn_min_memory` (0: all of each
    /// node's).
    pub default_memory: u64,
    /// The CPUs a node hands out together (its largest node's): a core's threads
    /// under CR_Core, a socket's under CR_Socket, 1 under CR_CPU.
    pub cpu_alloc_unit: u32,
    /// The threads of its nodes' cores (the most of any) where whole cores are
    /// allocated (CR_Core, CR_Socket); 1 under CR_CPU.
    pub core_threads: u32,
    /// Its MaxMemPerCPU / MaxMemPerNode, else slurm.conf's, raw (MEM_PER_CPU flags a
    /// per-CPU cap); with several partitions the least per-CPU cap of any.
    pub max_mem_per_cpu: u64,
}

impl PartInfo {
    /// Copies what asbb reads out of a live partition record.
    /// Call only under slurmctld's partition and node read locks (every hook has them).
    /// `pn_min_memory`: the job's, raw (NO_VAL64 when it gave none). A job asking for
    /// all of a node's memory (`--mem=0`, or no `--mem` where no DefMemPerCPU or
    /// DefMemPerNode applies) has the partition's largest node looked for (a walk over
    /// the node table that other jobs do not pay for).
    pub fn of(part: &sys::part_record_t, pn_min_memory: u64) -> PartInfo {
        // slurmctld's `_validate_job_desc`: a job without --mem gets the partition's
        // DefMemPerCPU/DefMemPerNode, else slurm.conf's (MEM_PER_CPU flags per CPU).
        let default_memory = match part.def_mem_per_cpu {
            0 => conf::default_memory(),
            own => own,
        };
        let all_memory = wants_all_memory(if pn_min_memory == sys::NO_VAL64 { default_memory } else { pn_min_memory });
        let granule = cpu_granule(part);
        let nodes = if all_memory || granule != Granule::Cpu { node_facts(part) } else { NodeFacts::default() };
        PartInfo {
            // SAFETY: the record's name is NULL or a C string.
            name: unsafe { read_str(part.name) },
            default_time: part.default_time,
            max_time: part.max_time,
            node_max_cpus: part.max_cpu_cnt,
            node_max_mem_mb: if all_memory { nodes.max_mem_mb } else { 0 },
            node_count: part.total_nodes,
            gpu_defaults: partition_gpu_defaults(part),
            // select/cons_tres `_get_job_node_req`: max_share 0 reserves whole nodes;
            // select/linear allocates nothing but whole nodes.
            whole_nodes: part.max_share == 0 || conf::select_linear(),
            cpu_alloc_unit: nodes.alloc_unit(granule),
            core_threads: match granule {
                Granule::Cpu => 1,
                Granule::Core | Granule::Socket => nodes.alloc_unit(Granule::Core),
            },
            max_mem_per_cpu: memory_cap(part),
            default_memory,
        }
    }

    /// Widens what a job is priced for to the most of any partition in `list` (a
    /// job listing several may run in the largest, in one that gives whole nodes, or
    /// in the one with the most CPUs and memory per GPU). A single name changes nothing: the partition's own record
    /// answered, with no second look-up on every submission. Call only under
    /// slurmctld's partition read lock.
    pub fn widen_to_listed(&mut self, list: &str) {
        if !list.contains(',') {
            return;
        }
        for part in list.split(',').filter_map(|name| find_partition(name.trim())) {
            // SAFETY: NULL or a live partition record, protected by the partition read lock.
            let Some(part) = (unsafe { part.as_ref() }) else { continue };
            let defaults = partition_gpu_defaults(part);
            self.node_count = self.node_count.max(part.total_nodes);
            self.node_max_cpus = self.node_max_cpus.max(part.max_cpu_cnt);
            self.whole_nodes |= part.max_share == 0;
            self.max_mem_per_cpu = least_per_cpu_cap(self.max_mem_per_cpu, memory_cap(part));
            let granule = cpu_granule(part);
            if granule != Granule::Cpu {
                let facts = node_facts(part);
                self.cpu_alloc_unit = self.cpu_alloc_unit.max(facts.alloc_unit(granule));
                self.core_threads = self.core_threads.max(facts.alloc_unit(Granule::Core));
            }
            self.gpu_defaults.cpus_per_gpu = self.gpu_defaults.cpus_per_gpu.max(defaults.cpus_per_gpu);
            self.gpu_defaults.mem_per_gpu_mb = self.gpu_defaults.mem_per_gpu_mb.max(defaults.mem_per_gpu_mb);
        }
    }
}

/// A partition's GPU defaults; each it does not set is slurm.conf's (select/cons_tres,
/// `_set_gpu_defaults`).
fn partition_gpu_defaults(part: &sys::part_record_t) -> GpuDefaults {
    // SAFETY: a live partition record's list (partition read lock held by the caller).
    let own = unsafe { gpu_defaults(part.job_defaults_list as *mut c_void) };
    if own.cpus_per_gpu != 0 && own.mem_per_gpu_mb != 0 {
        return own;
    }
    let global = conf::gpu_defaults();
    GpuDefaults {
        cpus_per_gpu: if own.cpus_per_gpu != 0 { own.cpus_per_gpu } else { global.cpus_per_gpu },
        mem_per_gpu_mb: if own.mem_per_gpu_mb != 0 { own.mem_per_gpu_mb } else { global.mem_per_gpu_mb },
    }
}

extern "C" {
    // libslurmfull (bitstring.c, renamed by slurm_xlator.h).
    fn slurm_bit_test(b: *mut sys::bitstr_t, bit: i64) -> c_int;
}

/// A partition's MaxMemPerCPU or MaxMemPerNode, else slurm.conf's (`_valid_pn_min_mem`).
fn memory_cap(part: &sys::part_record_t) -> u64 {
    match part.max_mem_per_cpu {
        0 => conf::max_mem_per_cpu(),
        own => own,
    }
}

/// Of two raw caps, the one that gives a job the most CPUs: the lesser per-CPU cap
/// (a per-node cap or none gives no CPUs).
fn least_per_cpu_cap(a: u64, b: u64) -> u64 {
    let per_cpu = |m: u64| (m & sys::MEM_PER_CPU != 0 && m & !sys::MEM_PER_CPU != 0).then_some(m & !sys::MEM_PER_CPU);
    match (per_cpu(a), per_cpu(b)) {
        (Some(x), Some(y)) => x.min(y) | sys::MEM_PER_CPU,
        (Some(_), None) => a,
        (None, _) => b,
    }
}

/// What select/cons_tres allocates a partition's CPUs by (`_setup_cr_type`): the
/// partition's `SelectTypeParameters` where slurm.conf's is CR_Core or CR_Socket,
/// else slurm.conf's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Granule {
    Cpu,
    Core,
    Socket,
}

fn cpu_granule(part: &sys::part_record_t) -> Granule {
    let mut cr_type = conf::select_type_param();
    let core_or_socket = sys::CR_CORE | sys::CR_SOCKET;
    if part.cr_type != 0 && cr_type & core_or_socket != 0 {
        cr_type = (cr_type & !core_or_socket) | part.cr_type;
    }
    if cr_type & sys::CR_SOCKET != 0 {
        Granule::Socket
    } else if cr_type & sys::CR_CORE != 0 {
        Granule::Core
    } else {
        Granule::Cpu
    }
}

/// The most of each of a partition's nodes: memory (MB, `--mem=0` asks for it all),
/// the threads of a core SLURM schedules (`tpc`: 1 where a node's CPUs count its
/// cores) and the CPUs of a socket (cores × tpc).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct NodeFacts {
    max_mem_mb: u64,
    max_core_cpus: u32,
    max_socket_cpus: u32,
}

impl NodeFacts {
    /// How many CPUs a job is allocated at a time on the partition's nodes
    /// (select/cons_tres `cpu_alloc_size`).
    fn alloc_unit(&self, granule: Granule) -> u32 {
        match granule {
            Granule::Cpu => 1,
            Granule::Core => self.max_core_cpus.max(1),
            Granule::Socket => self.max_socket_cpus.max(1),
        }
    }
}

/// [`NodeFacts`] of a partition: a walk over the node table, kept per partition
/// record while slurmctld's `last_node_update` and `last_part_update` stay as they
/// were (a second old at least: a change in the same second bears the same stamp),
/// so a burst of submissions walks it once.
fn node_facts(part: &sys::part_record_t) -> NodeFacts {
    type Stamps = (libc::time_t, libc::time_t);
    static KNOWN: Mutex<Vec<(usize, Stamps, NodeFacts)>> = Mutex::new(Vec::new());
    let stamp = |name: &'static CStr| {
        // SAFETY: libslurmfull's / slurmctld's `time_t last_node_update` /
        // `last_part_update`, written under the node / partition write locks; the
        // caller holds the read locks.
        symbol(name).map(|p| unsafe { *(p as *const libc::time_t) })
    };
    let stamps = match (stamp(c"last_node_update"), stamp(c"last_part_update")) {
        (Some(n), Some(p)) if n.max(p) < crate::slurm::plugin::unix_now() => Some((n, p)),
        _ => None,
    };
    let key = part as *const sys::part_record_t as usize;
    let mut known = KNOWN.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(stamps) = stamps {
        if let Some((_, _, facts)) = known.iter().find(|(k, s, _)| *k == key && *s == stamps) {
            return *facts;
        }
    }
    let facts = walk_nodes(part);
    known.retain(|(k, _, _)| *k != key);
    if let Some(stamps) = stamps {
        // A few dozen partitions at most; a reconfigure makes new records.
        if known.len() >= 256 {
            known.clear();
        }
        known.push((key, stamps, facts));
    }
    facts
}

fn walk_nodes(part: &sys::part_record_t) -> NodeFacts {
    let mut facts = NodeFacts::default();
    let (Some(table), Some(count)) = (symbol(c"node_record_table_ptr"), symbol(c"node_record_count")) else {
        return facts;
    };
    if part.node_bitmap.is_null() {
        return facts;
    }
    // SAFETY: libslurmfull's `node_record_t **node_record_table_ptr` and
    // `int node_record_count` (node_conf.h), stable under the node read lock.
    let (table, count) = unsafe { (*(table as *const *mut *mut sys::node_record_t), *(count as *const c_int)) };
    if table.is_null() {
        return facts;
    }
    for i in 0..count.max(0) {
        // SAFETY: `i` is below node_record_count; entries are NULL or live records, and
        // the partition's bitmap has a bit per node record.
        unsafe {
            if slurm_bit_test(part.node_bitmap, i as i64) != 0 {
                if let Some(node) = (*table.add(i as usize)).as_ref() {
                    let tpc = node.tpc.max(1) as u32;
                    facts.max_mem_mb = facts.max_mem_mb.max(node.real_memory);
                    facts.max_core_cpus = facts.max_core_cpus.max(tpc);
                    facts.max_socket_cpus = facts.max_socket_cpus.max(tpc * node.cores.max(1) as u32);
                }
            }
        }
    }
    facts
}

/// What slurmctld's association manager says of a user and an account.
#[derive(Debug, Clone, Default)]
pub struct Association {
    /// slurmctld enforces associations and there is none for this user and account.
    pub missing: bool,
    /// The association's default QOS.
    pub default_qos: Option<String>,
}

/// Looks the user's association with `account` (and `partition`) up the way
/// job_submit/lua does (`_get_default_qos`). Without accounting: nothing known.
pub fn association(uid: u32, account: Option<&str>, partition: Option<&str>) -> Association {
    type FillAssoc =
        unsafe extern "C" fn(*mut c_void, *mut sys::slurmdb_assoc_rec_t, c_int, *mut c_void, bool) -> c_int;
    type FillQos = unsafe extern "C" fn(*mut c_void, *mut sys::slurmdb_qos_rec_t, c_int, *mut c_void, bool) -> c_int;
    let Some(account) = account else { return Association::default() };
    // SAFETY: the declarations in src/common/assoc_mgr.h and slurmctld.h.
    let (fill_assoc, fill_qos, db_conn, enforce) = unsafe {
        let (Some(fa), Some(fq), Some(db), Some(en)) = (
            function::<FillAssoc>(c"assoc_mgr_fill_in_assoc"),
            function::<FillQos>(c"assoc_mgr_fill_in_qos"),
            symbol(c"acct_db_conn"),
            symbol(c"accounting_enforce"),
        ) else {
            return Association::default();
        };
        (fa, fq, *(db as *const *mut c_void), *(en as *const u16))
    };
    // slurmctld lowercases the account after job_submit; the lookup must match it.
    let (Ok(c_account), c_partition) =
        (CString::new(account.to_ascii_lowercase()), partition.and_then(|p| CString::new(p).ok()))
    else {
        return Association::default();
    };
    // SAFETY: all-zero is a valid empty record (integers and NULL pointers), as
    // job_submit/lua's memset; the strings outlive the calls, which only read them.
    let mut assoc: sys::slurmdb_assoc_rec_t = unsafe { std::mem::zeroed() };
    assoc.uid = uid;
    assoc.acct = c_account.as_ptr() as *mut c_char;
    assoc.partition = c_partition.as_ref().map_or(std::ptr::null_mut(), |p| p.as_ptr() as *mut c_char);
    // SAFETY: `locked = false`: the association manager takes its own locks.
    let rc = unsafe { fill_assoc(db_conn, &mut assoc, enforce as c_int, std::ptr::null_mut(), false) };
    if rc != sys::SLURM_SUCCESS as c_int {
        return Association { missing: enforce as u32 & sys::ASBB_ENFORCE_ASSOCS != 0, default_qos: None };
    }
    let default_qos = (assoc.def_qos_id != 0)
        .then(|| {
            // SAFETY: as above; the QOS name points into the manager's list and is
            // copied at once (job_submit/lua reads it the same way).
            let mut qos: sys::slurmdb_qos_rec_t = unsafe { std::mem::zeroed() };
            qos.id = assoc.def_qos_id;
            let rc = unsafe { fill_qos(db_conn, &mut qos, enforce as c_int, std::ptr::null_mut(), false) };
            // SAFETY: NULL or a C string owned by the association manager.
            (rc == sys::SLURM_SUCCESS as c_int).then(|| unsafe { read_str(qos.name) }).flatten()
        })
        .flatten();
    Association { missing: false, default_qos }
}

/// Finds a partition record by name (the first of a comma list), or the default
/// partition for `None`. slurmctld-only symbols are looked up at run time.
/// Call only under slurmctld's partition read lock (job_submit/job_modify hold it).
pub fn partition(name: Option<&str>, pn_min_memory: u64) -> Option<PartInfo> {
    let part: *mut sys::part_record_t = match name.map(|n| n.split(',').next().unwrap_or(n).trim()) {
        Some(first) => find_partition(first)?,
        None => {
            let loc = symbol(c"default_part_loc")? as *const *mut sys::part_record_t;
            // SAFETY: `default_part_loc` is slurmctld's `part_record_t *` global.
            unsafe { *loc }
        }
    };
    // SAFETY: NULL or a live partition record, protected by the partition read lock.
    let part = unsafe { part.as_ref() }?;
    let mut info = PartInfo::of(part, pn_min_memory);
    if let Some(list) = name {
        info.widen_to_listed(list);
    }
    Some(info)
}

/// How many nodes a node list names (`n[1-8],gpu01`), by SLURM's own hostlist
/// parser; 0 for none, or for one it cannot read (slurmctld refuses that job).
pub fn node_list_count(list: Option<&str>) -> u32 {
    type Create = unsafe extern "C" fn(*const c_char) -> *mut c_void;
    type Count = unsafe extern "C" fn(*mut c_void) -> c_int;
    type Destroy = unsafe extern "C" fn(*mut c_void);
    let Some(list) = list.map(str::trim).filter(|l| !l.is_empty()) else { return 0 };
    let Ok(c_list) = CString::new(list) else { return 0 };
    // SAFETY: slurm.h: `hostlist_t slurm_hostlist_create(const char *)` (a pointer
    // since 23.11), `int slurm_hostlist_count(hostlist_t)`, `void
    // slurm_hostlist_destroy(hostlist_t)`.
    let (Some(create), Some(count), Some(destroy)) = (unsafe {
        (
            function::<Create>(c"slurm_hostlist_create"),
            function::<Count>(c"slurm_hostlist_count"),
            function::<Destroy>(c"slurm_hostlist_destroy"),
        )
    }) else {
        return 0;
    };
    // SAFETY: the list is a C string that outlives the call; the hostlist is ours
    // until destroyed, once.
    unsafe {
        let hostlist = create(c_list.as_ptr());
        if hostlist.is_null() {
            return 0;
        }
        let n = count(hostlist);
        destroy(hostlist);
        n.max(0) as u32
    }
}

/// slurmctld's record of the partition called `name` (NULL when there is none).
/// Call only under slurmctld's partition read lock.
fn find_partition(name: &str) -> Option<*mut sys::part_record_t> {
    type Find = unsafe extern "C" fn(*mut c_char) -> *mut sys::part_record_t;
    // SAFETY: slurmctld.h: `part_record_t *find_part_record(char *name)`.
    let find = unsafe { function::<Find>(c"find_part_record") }?;
    let c_name = CString::new(name).ok()?;
    // SAFETY: find_part_record only reads the name; the partition lock is held.
    Some(unsafe { find(c_name.as_ptr() as *mut c_char) })
}

/// `pn_min_memory` asks for all of each node's memory (`--mem=0`, `--mem-per-cpu=0`).
pub fn wants_all_memory(pn_min_memory: u64) -> bool {
    use crate::adapter::fields::{MEM_PER_CPU, NO_VAL64};
    pn_min_memory != NO_VAL64 && pn_min_memory & !MEM_PER_CPU == 0
}

/// The user's default account from slurmctld's association manager (like
/// job_submit/lua), or `None` without accounting or outside slurmctld.
pub fn default_account(uid: u32) -> Option<String> {
    type Lock = unsafe extern "C" fn(*mut sys::assoc_mgr_lock_t);
    type FillUser = unsafe extern "C" fn(*mut c_void, *mut sys::slurmdb_user_rec_t, c_int, *mut c_void, bool) -> c_int;
    // SAFETY: the declarations in src/common/assoc_mgr.h of the tree built against.
    let (fill, lock, unlock) = unsafe {
        (
            function::<FillUser>(c"assoc_mgr_fill_in_user")?,
            function::<Lock>(c"assoc_mgr_lock")?,
            function::<Lock>(c"assoc_mgr_unlock")?,
        )
    };
    // SAFETY: all-zero is a valid assoc_mgr_lock_t (NO_LOCK everywhere) and a valid
    // empty slurmdb_user_rec_t (integers and NULL pointers).
    let (mut locks, mut user): (sys::assoc_mgr_lock_t, sys::slurmdb_user_rec_t) =
        unsafe { (std::mem::zeroed(), std::mem::zeroed()) };
    locks.user = sys::READ_LOCK;
    user.uid = uid;
    // SAFETY: with the user read lock held, `locked = true` makes fill_in_user only read
    // the in-memory user list (no database call); enforce 0 asks for no association
    // checks. default_acct points into that list, so it is copied before unlocking.
    unsafe {
        lock(&mut locks);
        let rc = fill(std::ptr::null_mut(), &mut user, 0, std::ptr::null_mut(), true);
        let account = if rc == sys::SLURM_SUCCESS as c_int { read_str(user.default_acct) } else { None };
        unlock(&mut locks);
        account
    }
}

/// A `job_desc_msg_t` slurmctld passed to job_submit or job_modify.
pub struct JobDesc<'a>(&'a mut sys::job_desc_msg_t);

impl<'a> JobDesc<'a> {
    /// # Safety
    /// `p` is NULL or the descriptor of the current job_submit/job_modify call.
    pub unsafe fn from_ptr(p: *mut sys::job_desc_msg_t) -> Option<JobDesc<'a>> {
        // SAFETY: per the contract, NULL or valid and exclusively ours for the call.
        unsafe { p.as_mut() }.map(JobDesc)
    }

    pub fn raw(&self) -> &sys::job_desc_msg_t {
        self.0
    }

    /// One string field of the descriptor.
    pub fn str(&self, field: fn(&sys::job_desc_msg_t) -> *mut c_char) -> Option<String> {
        // SAFETY: job_desc string fields are NULL or C strings owned by slurmctld.
        unsafe { read_str(field(self.0)) }
    }

    /// The fields of a new submission, with the default partition and default
    /// account resolved.
    pub fn submit_fields(&self) -> SubmitFields {
        let d = &*self.0;
        let partition_arg = self.str(|d| d.partition);
        let part = partition(partition_arg.as_deref(), d.pn_min_memory);
        let account = self.str(|d| d.account).or_else(|| default_account(d.user_id));
        let partition_name = partition_arg.clone().or_else(|| part.as_ref().and_then(|p| p.name.clone()));
        let first_partition = partition_name.as_deref().map(|p| p.split(',').next().unwrap_or(p));
        let assoc = association(d.user_id, account.as_deref(), first_partition);
        SubmitFields {
            uid: d.user_id,
            user_name: user_name(d.user_id),
            account,
            partition: partition_name,
            partition_default_time: part.as_ref().map_or(sys::NO_VAL, |p| p.default_time),
            partition_max_time: part.as_ref().map_or(sys::NO_VAL, |p| p.max_time),
            time_limit: d.time_limit,
            min_nodes: d.min_nodes,
            max_nodes: d.max_nodes,
            num_tasks: d.num_tasks,
            ntasks_per_node: d.ntasks_per_node,
            ntasks_per_core: conf::ntasks_per_core(d.ntasks_per_core),
            threads_per_core: d.threads_per_core,
            ntasks_per_tres: d.ntasks_per_tres,
            cpus_per_task: d.cpus_per_task,
            min_cpus: d.min_cpus,
            pn_min_cpus: d.pn_min_cpus,
            req_node_count: node_list_count(self.str(|d| d.req_nodes).as_deref()),
            pn_min_memory: d.pn_min_memory,
            tres_per_node: self.str(|d| d.tres_per_node),
            tres_per_job: self.str(|d| d.tres_per_job),
            tres_per_task: self.str(|d| d.tres_per_task),
            tres_per_socket: self.str(|d| d.tres_per_socket),
            sockets_per_node: d.sockets_per_node,
            cpus_per_tres: self.str(|d| d.cpus_per_tres),
            mem_per_tres: self.str(|d| d.mem_per_tres),
            array_inx: self.str(|d| d.array_inx),
            qos: self.str(|d| d.qos),
            // 26.05 moved the requested id into `step_id` (a `slurm_step_id_t`).
            #[cfg(not(slurm_desc_no_job_id))]
            job_id: d.job_id,
            #[cfg(slurm_desc_no_job_id)]
            job_id: d.step_id.job_id,
            name: self.str(|d| d.name),
            admin_comment: self.str(|d| d.admin_comment),
            comment: self.str(|d| d.comment),
            wckey: self.str(|d| d.wckey),
            environment: self.environment(),
            max_array_size: conf::max_array_size(),
            // JOB_SHARED_NONE: `--exclusive` (not `=user` or `=mcs`). `--core-spec` /
            // `--thread-spec` where slurm.conf allows them: slurmctld gives whole nodes.
            exclusive: d.shared == 0
                || part.as_ref().is_some_and(|p| p.whole_nodes)
                || (d.core_spec != sys::NO_VAL16 && conf::allow_spec_resources()),
            node_max_cpus: part.as_ref().map_or(0, |p| p.node_max_cpus),
            node_max_mem_mb: part.as_ref().map_or(0, |p| p.node_max_mem_mb),
            cpu_alloc_unit: part.as_ref().map_or(1, |p| p.cpu_alloc_unit),
            core_threads: part.as_ref().map_or(1, |p| p.core_threads),
            max_mem_per_cpu: part.as_ref().map_or(0, |p| p.max_mem_per_cpu),
            partition_nodes: part.as_ref().map_or(0, |p| p.node_count),
            partition_gpu_defaults: part.as_ref().map_or(GpuDefaults::default(), |p| p.gpu_defaults),
            partition_default_memory: part.as_ref().map_or(NO_DEFAULT_MEMORY, |p| p.default_memory),
            default_qos: assoc.default_qos,
            association_missing: assoc.missing,
        }
    }

    fn environment(&self) -> Vec<String> {
        let d = &*self.0;
        if d.environment.is_null() {
            return Vec::new();
        }
        let n = (d.env_size as usize).min(MAX_ENV_ENTRIES);
        // Only asbb's own variables carry metadata: the rest are skipped in place, not
        // copied (an environment has a hundred entries or more).
        (0..n)
            .filter_map(|i| {
                // SAFETY: `environment` holds `env_size` entries, each NULL or a C string.
                let p = unsafe { *d.environment.add(i) };
                // SAFETY: as above; `p` is checked for NULL first.
                let asbb = !p.is_null() && unsafe { CStr::from_ptr(p) }.to_bytes().starts_with(b"ASBB_");
                // SAFETY: as above.
                asbb.then(|| unsafe { read_str(p) }).flatten()
            })
            .collect()
    }

    pub fn set_admin_comment(&mut self, text: &str) {
        // SAFETY: the field is NULL or xmalloc'd; slurmctld holds its locks for the call.
        unsafe { set_str(&mut self.0.admin_comment, text) }
    }

    pub fn set_comment(&mut self, text: &str) {
        // SAFETY: as in `set_admin_comment`.
        unsafe { set_str(&mut self.0.comment, text) }
    }

    /// Writes the time limit the job was priced for, if asbb chose it.
    pub fn set_time_limit(&mut self, time_limit_min: Option<u32>) {
        if let Some(t) = time_limit_min {
            self.0.time_limit = t;
        }
    }

    /// Submits the job held (a user hold: `JobHeldUser`, releasable with
    /// `scontrol release`, which reaches job_modify). A job_submit plugin cannot set
    /// the job's reason text in 22.05 (there is no job record yet and
    /// `job_desc_msg_t` has no reason field), so the reason goes at the end of the
    /// user-visible `comment`, after [`HELD_COMMENT_TAG`].
    pub fn hold(&mut self, reason: &str) {
        self.0.priority = 0;
        let comment = with_held_reason(self.str(|d| d.comment).as_deref(), reason);
        self.set_comment(&comment);
    }
}

/// `comment` with asbb's hold reason (replacing an earlier one) at the end.
pub fn with_held_reason(comment: Option<&str>, reason: &str) -> String {
    let base = without_held_reason(comment).or_else(|| comment.map(str::to_string));
    match base.filter(|c| !c.is_empty()) {
        Some(c) => format!("{c} {HELD_COMMENT_TAG}{reason}"),
        None => format!("{HELD_COMMENT_TAG}{reason}"),
    }
}

/// `comment` without asbb's hold reason; `None` when there was none to remove.
pub fn without_held_reason(comment: Option<&str>) -> Option<String> {
    let c = comment?;
    let at = c.find(HELD_COMMENT_TAG)?;
    Some(c[..at].trim_end().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn held_reason_in_comment() {
        assert_eq!(with_held_reason(None, "short"), "[asbb hold] short");
        assert_eq!(with_held_reason(Some("mine"), "short"), "mine [asbb hold] short");
        assert_eq!(with_held_reason(Some("mine [asbb hold] old"), "new"), "mine [asbb hold] new");
        assert_eq!(without_held_reason(Some("mine [asbb hold] old")), Some("mine".into()));
        assert_eq!(without_held_reason(Some("mine")), None);
    }
}
