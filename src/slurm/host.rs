// SPDX-License-Identifier: GPL-2.0-or-later
//! What slurmctld lends a plugin: its logger, its allocator, its symbols.

use crate::adapter::fields::{log_line, GpuDefaults};
use crate::slurm::sys;
use std::collections::BTreeMap;
use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::sync::Mutex;

// Exported by libslurmfull.so, which slurmctld loads before any plugin; no public
// header declares them (see SLURM-NOTES.md), so they are declared here.
extern "C" {
    fn slurm_info(fmt: *const c_char, ...);
    fn slurm_error(fmt: *const c_char, ...);
    fn slurm_xstrdup(s: *const c_char) -> *mut c_char;
    fn slurm_xfree(p: *mut *mut c_void);
}

/// Longest text handed to SLURM's logger or allocator from here.
const MAX_HOST_TEXT: usize = 4096;

fn c_string(text: &str) -> CString {
    let bytes: Vec<u8> = text.bytes().filter(|&b| b != 0).take(MAX_HOST_TEXT).collect();
    CString::new(bytes).unwrap_or_default()
}

/// Logs one line at info level in slurmctld's log, prefixed with the plugin type.
pub fn info(plugin_type: &str, msg: &str) {
    let line = c_string(&log_line(&format!("{plugin_type}: {msg}")));
    // SAFETY: constant format and one NUL-terminated string argument, as printf wants.
    unsafe { slurm_info(c"%s".as_ptr(), line.as_ptr()) }
}

/// Logs one line at error level in slurmctld's log, prefixed with the plugin type.
pub fn error(plugin_type: &str, msg: &str) {
    let line = c_string(&log_line(&format!("{plugin_type}: {msg}")));
    // SAFETY: as in `info`.
    unsafe { slurm_error(c"%s".as_ptr(), line.as_ptr()) }
}

/// Copies a C string SLURM owns into Rust (lossy UTF-8); `None` for NULL.
///
/// # Safety
/// `p` is NULL or points to a NUL-terminated string that stays valid during the call.
pub unsafe fn read_str(p: *const c_char) -> Option<String> {
    if p.is_null() {
        return None;
    }
    // SAFETY: non-NULL and NUL-terminated per this function's contract.
    Some(unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned())
}

/// Replaces a SLURM-owned string field: `xfree`s the old value, stores an
/// `xstrdup` of `value`, so slurmctld can later `xfree` it.
///
/// # Safety
/// `slot` is a field of a live SLURM struct that holds NULL or memory from SLURM's
/// allocator, and the caller holds whatever slurmctld lock protects that struct.
pub unsafe fn set_str(slot: &mut *mut c_char, value: &str) {
    let text = c_string(value);
    // SAFETY: `slot` holds NULL or an xmalloc'd pointer (contract); slurm_xfree frees it
    // and sets it to NULL; slurm_xstrdup returns fresh xmalloc'd memory.
    unsafe {
        slurm_xfree(slot as *mut *mut c_char as *mut *mut c_void);
        *slot = slurm_xstrdup(text.as_ptr());
    }
}

/// Frees a SLURM-owned string field and sets it to NULL.
///
/// # Safety
/// As for [`set_str`].
pub unsafe fn free_str(slot: &mut *mut c_char) {
    // SAFETY: `slot` holds NULL or an xmalloc'd pointer (contract).
    unsafe { slurm_xfree(slot as *mut *mut c_char as *mut *mut c_void) }
}

/// slurmctld's configuration (`slurm_conf`, a global of libslurmfull).
pub mod conf {
    use super::read_str;
    use crate::slurm::sys;

    /// `ClusterName`.
    pub fn cluster_name() -> Option<String> {
        // SAFETY: slurm_conf is initialised before plugins load and the caller runs
        // under slurmctld's config read lock; the field is NULL or a C string.
        unsafe { read_str((*std::ptr::addr_of!(sys::slurm_conf)).cluster_name) }
    }

    /// `SlurmUser`'s uid.
    pub fn slurm_user_id() -> u32 {
        // SAFETY: as in `cluster_name`; a plain integer.
        unsafe { (*std::ptr::addr_of!(sys::slurm_conf)).slurm_user_id }
    }

    /// `MaxArraySize`: array task ids must be below it.
    pub fn max_array_size() -> u32 {
        // SAFETY: as in `cluster_name`.
        unsafe { (*std::ptr::addr_of!(sys::slurm_conf)).max_array_sz }
    }

    /// `JobCompType`.
    pub fn job_comp_type() -> Option<String> {
        // SAFETY: as in `cluster_name`.
        unsafe { read_str((*std::ptr::addr_of!(sys::slurm_conf)).job_comp_type) }
    }

    /// `PrEpPlugins`.
    pub fn prep_plugins() -> Option<String> {
        // SAFETY: as in `cluster_name`.
        unsafe { read_str((*std::ptr::addr_of!(sys::slurm_conf)).prep_plugins) }
    }

    /// slurm.conf's `DefCpuPerGPU` and `DefMemPerGPU`, the defaults of partitions
    /// that set none.
    pub fn gpu_defaults() -> super::GpuDefaults {
        // SAFETY: as in `cluster_name`; the list is NULL or a live SLURM list.
        unsafe { super::gpu_defaults((*std::ptr::addr_of!(sys::slurm_conf)).job_defaults_list as *mut _) }
    }

    /// slurm.conf's DefMemPerCPU (MEM_PER_CPU set) or DefMemPerNode; 0 when neither.
    pub fn default_memory() -> u64 {
        // SAFETY: as in `cluster_name`.
        unsafe { (*std::ptr::addr_of!(sys::slurm_conf)).def_mem_per_cpu }
    }

    /// `SelectTypeParameters` (the CR_* flags).
    pub fn select_type_param() -> u16 {
        // SAFETY: as in `cluster_name`.
        unsafe { (*std::ptr::addr_of!(sys::slurm_conf)).select_type_param }
    }

    /// A job's `--ntasks-per-core` (raw) as select/cons_tres takes it: one that does
    /// not say gets 1 where `SelectTypeParameters` has CR_ONE_TASK_PER_CORE.
    pub fn ntasks_per_core(raw: u16) -> u16 {
        match raw {
            sys::NO_VAL16 | sys::INFINITE16 if select_type_param() & sys::CR_ONE_TASK_PER_CORE != 0 => 1,
            n => n,
        }
    }

    /// `SelectType` is select/linear: every job is allocated whole nodes.
    pub fn select_linear() -> bool {
        // SAFETY: as in `cluster_name`; read in place, no copy on the submit path.
        let select_type = unsafe { (*std::ptr::addr_of!(sys::slurm_conf)).select_type };
        // SAFETY: NULL or a C string owned by slurm_conf.
        !select_type.is_null() && unsafe { std::ffi::CStr::from_ptr(select_type) }.to_bytes().ends_with(b"/linear")
    }

    /// slurm.conf's MaxMemPerCPU (MEM_PER_CPU set) or MaxMemPerNode; 0 when neither.
    pub fn max_mem_per_cpu() -> u64 {
        // SAFETY: as in `cluster_name`.
        unsafe { (*std::ptr::addr_of!(sys::slurm_conf)).max_mem_per_cpu }
    }

    /// `AllowSpecResourcesUsage=YES`: jobs may ask for `--core-spec`, and get whole
    /// nodes (`CTL_CONF_ASRU` in 22.05, `CONF_FLAG_ASRU` since: bit 3 of conf_flags).
    pub fn allow_spec_resources() -> bool {
        // SAFETY: as in `cluster_name`.
        let flags = unsafe { (*std::ptr::addr_of!(sys::slurm_conf)).conf_flags } as u64;
        flags & (1 << 3) != 0
    }

    /// The path of the slurm.conf slurmctld runs with.
    pub fn slurm_conf_path() -> Option<String> {
        // SAFETY: as in `cluster_name`.
        unsafe { read_str((*std::ptr::addr_of!(sys::slurm_conf)).slurm_conf) }
    }
}

/// The GPU defaults in a `job_defaults_list` (a list of `job_defaults_t`; NULL when
/// the partition or slurm.conf sets none), read with SLURM's `slurm_list_for_each`.
///
/// # Safety
/// `list` is NULL or a live `job_defaults_list`, read under slurmctld's config
/// (slurm.conf's) or partition (a partition's) read lock.
pub unsafe fn gpu_defaults(list: *mut c_void) -> GpuDefaults {
    type ForEach = unsafe extern "C" fn(
        *mut c_void,
        unsafe extern "C" fn(*mut c_void, *mut c_void) -> c_int,
        *mut c_void,
    ) -> c_int;
    unsafe extern "C" fn read(item: *mut c_void, arg: *mut c_void) -> c_int {
        // SAFETY: slurm_list_for_each passes each element (a `job_defaults_t *`) and our
        // `&mut GpuDefaults`.
        let (Some(item), Some(found)) =
            (unsafe { (item as *const sys::job_defaults_t).as_ref() }, unsafe { (arg as *mut GpuDefaults).as_mut() })
        else {
            return 0;
        };
        match item.type_ as u32 {
            sys::JOB_DEF_CPU_PER_GPU => found.cpus_per_gpu = item.value,
            sys::JOB_DEF_MEM_PER_GPU => found.mem_per_gpu_mb = item.value,
            _ => {}
        }
        0
    }
    let mut found = GpuDefaults::default();
    if list.is_null() {
        return found;
    }
    // SAFETY: slurm.h: `int slurm_list_for_each(List l, ListForF f, void *arg)`.
    let Some(for_each) = (unsafe { function::<ForEach>(c"slurm_list_for_each") }) else { return found };
    // SAFETY: a live list (contract); `read` matches ListForF and `found` outlives the call.
    unsafe { for_each(list, read, &mut found as *mut GpuDefaults as *mut c_void) };
    found
}

/// `char **err_msg` handed to job_submit: written with SLURM's allocator.
pub struct ErrMsg(*mut *mut c_char);

impl ErrMsg {
    /// # Safety
    /// `p` is NULL or the `err_msg` argument slurmctld passed to the current call.
    pub unsafe fn from_ptr(p: *mut *mut c_char) -> ErrMsg {
        ErrMsg(p)
    }

    /// Sets the message the user sees, replacing one an earlier plugin set.
    pub fn set(&mut self, msg: &str) {
        if self.0.is_null() {
            return;
        }
        // SAFETY: `from_ptr`'s contract: a live `char **` whose target is NULL or xmalloc'd.
        unsafe { set_str(&mut *self.0, msg) }
    }
}

/// Looks up a symbol in the process (slurmctld and the libraries it loaded) at run
/// time, so a plugin still loads where the symbol is missing (e.g. in slurmd).
/// Each name is resolved once per load of the plugin: slurmctld's symbols never move,
/// and a dlsym walks every loaded library's table on each call.
pub fn symbol(name: &'static CStr) -> Option<*mut c_void> {
    // (name, address or 0): a dozen names at most, so a list beats a map.
    static RESOLVED: Mutex<Vec<(&'static CStr, usize)>> = Mutex::new(Vec::new());
    let mut resolved = RESOLVED.lock().unwrap_or_else(|e| e.into_inner());
    let address = match resolved.iter().find(|(n, _)| *n == name) {
        Some(&(_, address)) => address,
        None => {
            // SAFETY: dlsym with RTLD_DEFAULT and a NUL-terminated name has no preconditions.
            let address = unsafe { libc::dlsym(libc::RTLD_DEFAULT, name.as_ptr()) } as usize;
            resolved.push((name, address));
            address
        }
    };
    (address != 0).then_some(address as *mut c_void)
}

/// A function looked up with [`symbol`], as the function pointer type `F`.
///
/// # Safety
/// `F` must be the `unsafe extern "C" fn` type matching the symbol's C declaration.
pub unsafe fn function<F: Copy>(name: &'static CStr) -> Option<F> {
    assert!(std::mem::size_of::<F>() == std::mem::size_of::<*mut c_void>(), "F must be a function pointer");
    let p = symbol(name)?;
    // SAFETY: same size (checked); the type is right per this function's contract.
    Some(unsafe { std::mem::transmute_copy::<*mut c_void, F>(&p) })
}

/// Most uids whose names are remembered (the cache is emptied when full).
const MAX_CACHED_USERS: usize = 4096;

/// The user name for `uid`, from the system's user database, remembered so the
/// hooks do not ask NSS (possibly LDAP) again under slurmctld's locks.
pub fn user_name(uid: u32) -> Option<String> {
    static CACHE: Mutex<BTreeMap<u32, String>> = Mutex::new(BTreeMap::new());
    let mut cache = CACHE.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(name) = cache.get(&uid) {
        return Some(name.clone());
    }
    let name = lookup_user_name(uid)?;
    if cache.len() >= MAX_CACHED_USERS {
        cache.clear();
    }
    cache.insert(uid, name.clone());
    Some(name)
}

fn lookup_user_name(uid: u32) -> Option<String> {
    let mut buf = vec![0 as c_char; 1024];
    // SAFETY: all-zero is a valid `passwd` (plain integers and NULL pointers).
    let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
    let mut result: *mut libc::passwd = std::ptr::null_mut();
    loop {
        // SAFETY: pwd, buf and result are valid for the call; buf.len() is its size.
        let rc = unsafe { libc::getpwuid_r(uid, &mut pwd, buf.as_mut_ptr(), buf.len(), &mut result) };
        if rc == libc::ERANGE && buf.len() < 1 << 20 {
            buf.resize(buf.len() * 4, 0);
            continue;
        }
        if rc != 0 || result.is_null() {
            return None;
        }
        // SAFETY: on success pw_name points into `buf`, NUL-terminated.
        return unsafe { read_str(pwd.pw_name) };
    }
}
