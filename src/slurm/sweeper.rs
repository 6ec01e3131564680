// SPDX-License-Identifier: GPL-2.0-or-later
//! A plugin's own thread inside slurmctld, waking every 2 s to do what no hook should
//! do under slurmctld's locks:
//! - prep/asbb looks at the job list under slurmctld's read locks, and only when there
//!   is something to do takes the job write lock, as slurmctld's own threads do, to do
//!   what no PrEp hook reports (`plugin::sweep_needed` and `plugin::sweep`);
//! - job_submit/asbb confirms its provisional holds (`plugin::confirm_tick`): it finds
//!   their jobs under the read locks and writes the ledger under none, so no
//!   submission waits on that batch.
//!
//! It runs outside every hook, so it never walks the job list from inside one of
//! slurmctld's own walks, and it works on a quiet cluster too.
//!
//! Lock order is slurmctld's locks, then the plugin's hooks mutex: the same order as
//! every hook call (a tick may also take the hooks mutex alone). `fini` only tells the
//! thread to stop and does not wait for it (it may be called while slurmctld holds the
//! very lock the thread waits for); the plugin's code stays loaded for the process's
//! life (RTLD_NODELETE), so a thread that wakes after `fini` finds its code and leaves.

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
/// A look: everything read.
const READ: LockLevels = LockLevels { conf: READ_LOCK, job: READ_LOCK, node: READ_LOCK, part: READ_LOCK, fed: NO_LOCK };
/// A change of jobs: the jobs written; their partitions and nodes and the config read.
const WRITE: LockLevels =
    LockLevels { conf: READ_LOCK, job: WRITE_LOCK, node: READ_LOCK, part: READ_LOCK, fed: NO_LOCK };

type LockFn = unsafe extern "C" fn(LockLevels);

/// The thread generation that may run; a thread of an older one leaves.
static GENERATION: AtomicU64 = AtomicU64::new(0);

/// How often the thread wakes.
const EVERY: Duration = Duration::from_secs(2);

/// What a tick may take: slurmctld's read or write locks around a closure. Each
/// returns `None`, without running it, once the thread's generation has ended.
pub struct Locks {
    lock: LockFn,
    unlock: LockFn,
    generation: u64,
}

impl Locks {
    /// Whether this thread may still run (its plugin has not been finished).
    pub fn alive(&self) -> bool {
        GENERATION.load(Ordering::SeqCst) == self.generation
    }

    /// `f` under slurmctld's read locks (config, job, node, partition).
    pub fn read<T>(&self, f: impl FnOnce() -> T) -> Option<T> {
        self.under(READ, f)
    }

    /// `f` under the job write lock (config, node, partition read).
    pub fn write<T>(&self, f: impl FnOnce() -> T) -> Option<T> {
        self.under(WRITE, f)
    }

    /// A panic in `f` is caught here, so the locks are always released.
    fn under<T>(&self, levels: LockLevels, f: impl FnOnce() -> T) -> Option<T> {
        // SAFETY: slurmctld's own lock functions, with its lock levels.
        unsafe { (self.lock)(levels) };
        let out = if self.alive() { std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).ok() } else { None };
        // SAFETY: as above; the same levels as the lock.
        unsafe { (self.unlock)(levels) };
        out
    }
}

/// Starts the thread (inside slurmctld only), named `name`: every 2 s `tick(plugin_type,
/// locks)`, outside every lock of slurmctld's. A panic in a tick is caught and the
/// next tick runs. Returns false when it cannot start it.
pub fn start(plugin_type: &'static str, name: &str, tick: fn(&'static str, &Locks)) -> bool {
    // SAFETY: locks.h: `extern void lock_slurmctld(slurmctld_lock_t lock_levels)`, and
    // the same for unlock_slurmctld.
    let (Some(lock), Some(unlock)) =
        (unsafe { function::<LockFn>(c"lock_slurmctld") }, unsafe { function::<LockFn>(c"unlock_slurmctld") })
    else {
        return false;
    };
    if !pin_this_library() {
        crate::slurm::host::error(plugin_type, "cannot keep the plugin loaded for its thread; no thread started");
        return false;
    }
    let generation = GENERATION.fetch_add(1, Ordering::SeqCst) + 1;
    let locks = Locks { lock, unlock, generation };
    let spawned = std::thread::Builder::new().name(name.into()).spawn(move || {
        while locks.alive() {
            std::thread::sleep(EVERY);
            if locks.alive()
                && std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| tick(plugin_type, &locks))).is_err()
            {
                crate::slurm::host::error(
                    plugin_type,
                    "a round of the plugin's thread panicked; the next one runs in 2 s",
                );
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
