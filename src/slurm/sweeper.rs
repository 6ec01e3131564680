// SPDX-License-Identifier: GPL-2.0-or-later
//! prep/asbb's own thread inside slurmctld: every 2 s it looks at the job list under
//! slurmctld's read locks (`needed`), and only when there is something to do takes the
//! job write lock, as slurmctld's own threads do, to do what no PrEp hook reports
//! (`look`: see `plugin::sweep_needed` and `plugin::sweep`). It runs outside every hook, so it never walks the job list from
//! inside one of slurmctld's own walks, and it works on a quiet cluster too.
//!
//! Lock order is slurmctld's locks, then the plugin's hooks mutex: the same order as
//! every hook call. `fini` only tells the thread to stop and does not wait for it (it
//! may be called while slurmctld holds the very lock the thread waits for); the
//! plugin's code stays loaded for the process's life (RTLD_NODELETE), so a thread
//! that wakes after `fini` finds its code and leaves.

use crate::slurm::host::function;
use std::ffi::c_int;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// slurmctld's `slurmctld_lock_t` (locks.h, the same in every supported release):
/// config, job, node, partition and federation lock levels.
#[repr(C)]
#[derive(Clone, Copy)]
struct LockLevels {
    conf: c_int,
    job: c_int,
    node: c_int,
    part: c_int,
    fed: c_int,
}

const NO_LOCK: c_int = 0;
const READ_LOCK: c_int = 1;
const WRITE_LOCK: c_int = 2;
/// The look for work: everything read.
const READ: LockLevels = LockLevels { conf: READ_LOCK, job: READ_LOCK, node: READ_LOCK, part: READ_LOCK, fed: NO_LOCK };
/// The work: the jobs written; their partitions and nodes and the config read.
const WRITE: LockLevels =
    LockLevels { conf: READ_LOCK, job: WRITE_LOCK, node: READ_LOCK, part: READ_LOCK, fed: NO_LOCK };

type LockFn = unsafe extern "C" fn(LockLevels);

/// The thread generation that may run; a thread of an older one leaves.
static GENERATION: AtomicU64 = AtomicU64::new(0);

/// How often the thread looks.
const EVERY: Duration = Duration::from_secs(2);

/// Starts the thread (inside slurmctld only): every 2 s `needed(plugin_type)` under
/// slurmctld's read locks, then, when it says so, `look(plugin_type)` under the job
/// write lock. Logs and returns false when it cannot.
pub fn start(plugin_type: &'static str, needed: fn(&'static str) -> bool, look: fn(&'static str)) -> bool {
    // SAFETY: locks.h: `extern void lock_slurmctld(slurmctld_lock_t lock_levels)`, and
    // the same for unlock_slurmctld.
    let (Some(lock), Some(unlock)) =
        (unsafe { function::<LockFn>(c"lock_slurmctld") }, unsafe { function::<LockFn>(c"unlock_slurmctld") })
    else {
        return false;
    };
    if !pin_this_library() {
        crate::slurm::host::error(plugin_type, "cannot keep the plugin loaded for its thread; no sweep thread");
        return false;
    }
    let generation = GENERATION.fetch_add(1, Ordering::SeqCst) + 1;
    let spawned = std::thread::Builder::new().name("asbb-prep".into()).spawn(move || {
        // Runs `f` under `levels` unless this thread's generation has ended; a panic
        // is caught, so the locks are always released.
        let locked = |levels: LockLevels, f: &dyn Fn() -> bool| {
            // SAFETY: the functions looked up above, with slurmctld's lock levels.
            unsafe { lock(levels) };
            let out = GENERATION.load(Ordering::SeqCst) == generation
                && std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or(false);
            // SAFETY: as above; the same levels as the lock.
            unsafe { unlock(levels) };
            out
        };
        while GENERATION.load(Ordering::SeqCst) == generation {
            std::thread::sleep(EVERY);
            if locked(READ, &|| needed(plugin_type)) {
                locked(WRITE, &|| {
                    look(plugin_type);
                    true
                });
            }
        }
    });
    spawned.is_ok()
}

/// Tells the thread to stop at its next wake-up (see the module doc: no join).
pub fn stop() {
    GENERATION.fetch_add(1, Ordering::SeqCst);
}

/// Keeps this plugin's code mapped until the process exits, so `dlclose` after `fini`
/// cannot pull it from under the thread.
fn pin_this_library() -> bool {
    let mut info: libc::Dl_info = unsafe { std::mem::zeroed() };
    // SAFETY: dladdr with the address of a function of this library and a valid out-pointer.
    if unsafe { libc::dladdr(pin_this_library as *const libc::c_void, &mut info) } == 0 || info.dli_fname.is_null() {
        return false;
    }
    // SAFETY: dli_fname is the loaded library's path (a C string owned by the loader);
    // RTLD_NOLOAD only takes another reference to the already-loaded library.
    let handle = unsafe { libc::dlopen(info.dli_fname, libc::RTLD_NOW | libc::RTLD_NOLOAD | libc::RTLD_NODELETE) };
    !handle.is_null()
}
