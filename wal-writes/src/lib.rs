// SPDX-License-Identifier: GPL-2.0-or-later
//! A VFS that hands every call to SQLite's default one, except that it gathers a
//! transaction's WAL frames and writes them with one `pwrite`.
//!
//! SQLite writes each WAL frame as two writes, its 24-byte header and its page, so a
//! submission's commit (about 5 frames) was 10 system calls and a completion's (16
//! frames) 32. Inside slurmctld the CPU caches are cold at every call, and those calls
//! were a quarter of job_submit's time (`perf`, the ledger bench's cold phase). The
//! frames of one commit are contiguous in the WAL file, so they go out in one write.
//!
//! What stays as it was: the frames reach the file (the kernel's page cache, as
//! before: `synchronous = NORMAL`) before SQLite marks them committed in the WAL
//! index, because the buffer is written when the commit frame's page arrives, inside
//! SQLite's own write of the frames, and a write error is that write's error. Only a
//! frame header followed by its page, and the frames after it, are gathered (a header
//! SQLite rewrites right after reading its frame goes straight through); any other call
//! on the WAL file (a read, a sync, its size, a truncate, a file control, a write that
//! does not continue the buffer) writes the buffer first, so SQLite never reads a file
//! that differs from what it wrote, and nothing of a commit is left waiting.
//! Locks and shared memory are the default VFS's, so other processes (the command
//! lines, the other plugin) see nothing different.
//!
//! A transaction that spills pages to the WAL and then rolls back leaves frames that
//! were never committed; they are dropped when the write lock is released (the
//! database file's `xShmLock`), never written later over frames another connection has
//! committed at the same place. That needs the database's handle from the WAL's,
//! `sqlite3_database_file_object` (SQLite 3.31, 2020); a WAL whose database is not
//! opened through this VFS gathers nothing.

pub mod busy;

use rusqlite::ffi;
use std::ffi::{c_char, c_int, c_void, CString};
use std::sync::OnceLock;

/// A WAL frame's header (SQLite's `WAL_FRAME_HDRSIZE`).
const FRAME_HEADER_BYTES: usize = 24;
/// Past this the buffer is written even mid-transaction (a large import's spill):
/// the default VFS writes at most 128 KiB - 1 per call (`seekAndWriteFd` masks the
/// length with 0x1ffff, so a longer write would come back short, as a full disk).
const MAX_BUFFER_BYTES: usize = 120 << 10;

/// This VFS's name, registered on first use; `None` when registration failed (the
/// default VFS is used then: the buffer is a speed-up, nothing depends on it). The name
/// carries the address of this copy's code: each plugin is its own shared object
/// inside slurmctld, with one SQLite between them, and each must use its own VFS.
pub fn vfs_name() -> Option<&'static str> {
    static NAME: OnceLock<Option<&'static str>> = OnceLock::new();
    *NAME.get_or_init(|| unsafe { register() })
}

/// One open file: SQLite's handle (first, as SQLite requires), then the default
/// VFS's handle for the same file, which lives in the bytes after this struct.
#[repr(C)]
struct File {
    base: ffi::sqlite3_file,
    real: *mut ffi::sqlite3_file,
    is_wal: bool,
    pending: Vec<u8>,
    pending_offset: i64,
    /// The last header gathered is a commit frame's: its page ends the commit.
    commit_header: bool,
    /// Where the last call read, when the last call was a read. SQLite reads a frame
    /// before it rewrites that frame's header (`walRewriteChecksums`, after the commit
    /// frame), and such a write must not wait in the buffer: no commit frame follows it.
    read_at: Option<i64>,
    /// A database file: its WAL's handle, while open. A WAL: its database's handle.
    /// Only a WAL linked to its database gathers writes (see [`shm_lock`]).
    other: *mut File,
}

extern "C" {
    /// SQLite 3.31 and later: the database file a WAL file name (as xOpen got it) belongs to.
    fn sqlite3_database_file_object(name: *const c_char) -> *mut ffi::sqlite3_file;
}

unsafe fn register() -> Option<&'static str> {
    let default = ffi::sqlite3_vfs_find(std::ptr::null());
    if default.is_null() {
        return None;
    }
    static THIS_COPY: u8 = 0;
    let name = format!("asbb-wal-{:x}", &THIS_COPY as *const u8 as usize);
    // Leaked on purpose: SQLite keeps pointers to both for the life of the process.
    let c_name: &'static CString = Box::leak(Box::new(CString::new(name.clone()).ok()?));
    let existing = ffi::sqlite3_vfs_find(c_name.as_ptr());
    if !existing.is_null() {
        // Registered by this same code (a plugin loaded again at the same address);
        // another build's VFS under this name is not ours to use.
        let same = (*existing).xOpen.map(|f| f as *const () as usize) == Some(open as *const () as usize);
        return same.then(|| &*Box::leak(name.into_boxed_str()));
    }
    let mut vfs: ffi::sqlite3_vfs = std::ptr::read(default);
    vfs.szOsFile = (std::mem::size_of::<File>() as c_int).checked_add((*default).szOsFile)?;
    vfs.pNext = std::ptr::null_mut();
    vfs.zName = c_name.as_ptr();
    vfs.pAppData = default as *mut c_void;
    vfs.xOpen = Some(open);
    vfs.xDelete = Some(delete);
    vfs.xAccess = Some(access);
    vfs.xFullPathname = Some(full_pathname);
    let vfs: &'static mut ffi::sqlite3_vfs = Box::leak(Box::new(vfs));
    (ffi::sqlite3_vfs_register(vfs, 0) == ffi::SQLITE_OK).then(|| &*Box::leak(name.into_boxed_str()))
}

unsafe fn default_of(vfs: *mut ffi::sqlite3_vfs) -> *mut ffi::sqlite3_vfs {
    (*vfs).pAppData as *mut ffi::sqlite3_vfs
}

unsafe extern "C" fn open(
    vfs: *mut ffi::sqlite3_vfs,
    name: *const c_char,
    file: *mut ffi::sqlite3_file,
    flags: c_int,
    out_flags: *mut c_int,
) -> c_int {
    let default = default_of(vfs);
    let me = file as *mut File;
    let real = (file as *mut u8).add(std::mem::size_of::<File>()) as *mut ffi::sqlite3_file;
    let Some(x_open) = (*default).xOpen else { return ffi::SQLITE_ERROR };
    let rc = x_open(default, name, real, flags, out_flags);
    if rc != ffi::SQLITE_OK {
        // No xClose follows a failed open (SQLite reads pMethods to tell), so the
        // default VFS's handle is closed here if it was left open.
        if !(*real).pMethods.is_null() {
            if let Some(x_close) = (*(*real).pMethods).xClose {
                x_close(real);
            }
        }
        (*file).pMethods = std::ptr::null();
        return rc;
    }
    std::ptr::write(
        me,
        File {
            base: ffi::sqlite3_file { pMethods: &METHODS },
            real,
            is_wal: flags & ffi::SQLITE_OPEN_WAL != 0,
            pending: Vec::new(),
            pending_offset: 0,
            commit_header: false,
            read_at: None,
            other: std::ptr::null_mut(),
        },
    );
    if (*me).is_wal {
        // The database's handle, so that releasing the write lock there drops what a
        // rolled-back transaction left here. Without it this WAL gathers nothing.
        let db = sqlite3_database_file_object(name);
        if !db.is_null() && std::ptr::eq((*db).pMethods, &METHODS) {
            (*(db as *mut File)).other = me;
            (*me).other = db as *mut File;
        } else {
            (*me).is_wal = false;
        }
    }
    ffi::SQLITE_OK
}

unsafe extern "C" fn delete(vfs: *mut ffi::sqlite3_vfs, name: *const c_char, sync_dir: c_int) -> c_int {
    let default = default_of(vfs);
    (*default).xDelete.map_or(ffi::SQLITE_ERROR, |f| f(default, name, sync_dir))
}

unsafe extern "C" fn access(vfs: *mut ffi::sqlite3_vfs, name: *const c_char, flags: c_int, out: *mut c_int) -> c_int {
    let default = default_of(vfs);
    (*default).xAccess.map_or(ffi::SQLITE_ERROR, |f| f(default, name, flags, out))
}

unsafe extern "C" fn full_pathname(
    vfs: *mut ffi::sqlite3_vfs,
    name: *const c_char,
    n: c_int,
    out: *mut c_char,
) -> c_int {
    let default = default_of(vfs);
    (*default).xFullPathname.map_or(ffi::SQLITE_ERROR, |f| f(default, name, n, out))
}

static METHODS: ffi::sqlite3_io_methods = ffi::sqlite3_io_methods {
    iVersion: 3,
    xClose: Some(close),
    xRead: Some(read),
    xWrite: Some(write),
    xTruncate: Some(truncate),
    xSync: Some(sync),
    xFileSize: Some(file_size),
    xLock: Some(lock),
    xUnlock: Some(unlock),
    xCheckReservedLock: Some(check_reserved_lock),
    xFileControl: Some(file_control),
    xSectorSize: Some(sector_size),
    xDeviceCharacteristics: Some(device_characteristics),
    xShmMap: Some(shm_map),
    xShmLock: Some(shm_lock),
    xShmBarrier: Some(shm_barrier),
    xShmUnmap: Some(shm_unmap),
    xFetch: Some(fetch),
    xUnfetch: Some(unfetch),
};

unsafe fn me<'a>(file: *mut ffi::sqlite3_file) -> &'a mut File {
    &mut *(file as *mut File)
}

/// The default VFS's method `$m` of `$real`, or `$missing` when it has none.
macro_rules! real_call {
    ($real:expr, $m:ident, $missing:expr $(, $arg:expr)*) => {{
        let real = $real;
        match (*(*real).pMethods).$m {
            Some(f) => f(real $(, $arg)*),
            None => $missing,
        }
    }};
}

/// `real_call!` on `$file`'s default handle after writing what was gathered (a failure
/// there is that call's error; see [`File::flush_before_call`]).
macro_rules! flushed_call {
    ($file:expr, $m:ident, $missing:expr $(, $arg:expr)*) => {{
        let me = me($file);
        match me.flush_before_call() {
            ffi::SQLITE_OK => real_call!(me.real, $m, $missing $(, $arg)*),
            rc => rc,
        }
    }};
}

impl File {
    /// Writes what was gathered, in one call.
    unsafe fn flush(&mut self) -> c_int {
        if self.pending.is_empty() {
            return ffi::SQLITE_OK;
        }
        let (ptr, len, offset) = (self.pending.as_ptr(), self.pending.len() as c_int, self.pending_offset);
        let rc = real_call!(self.real, xWrite, ffi::SQLITE_IOERR_WRITE, ptr as *const c_void, len, offset);
        self.pending.clear();
        self.commit_header = false;
        rc
    }

    /// Drops what was gathered. Called when the write lock is released and at close:
    /// a commit's frames were written when its commit frame's page came, so what is
    /// left belongs to a transaction that rolled back (pages it spilled). SQLite never
    /// reads those frames again, and writing them later could land on frames another
    /// connection has committed at the same place since.
    fn discard(&mut self) {
        self.pending.clear();
        self.commit_header = false;
    }

    /// [`Self::flush`] before a call other than a write: a failure is an error of the
    /// write SQLite made earlier, which it must treat as one (a full rollback).
    unsafe fn flush_before_call(&mut self) -> c_int {
        match self.flush() {
            ffi::SQLITE_OK => ffi::SQLITE_OK,
            _ => ffi::SQLITE_IOERR_WRITE,
        }
    }

    /// Gathers one of SQLite's writes to the WAL; whether it was kept (else the
    /// caller writes it through, after the buffer).
    fn gather(&mut self, data: &[u8], offset: i64) -> bool {
        let continues = self.pending.is_empty() || offset == self.pending_offset + self.pending.len() as i64;
        if !continues || self.pending.len() + data.len() > MAX_BUFFER_BYTES {
            return false;
        }
        if self.pending.is_empty() {
            self.pending_offset = offset;
        }
        if data.len() == FRAME_HEADER_BYTES {
            // Bytes 4..8 of a frame header: the database size after a commit, 0 otherwise.
            self.commit_header = data[4..8] != [0, 0, 0, 0];
        }
        self.pending.extend_from_slice(data);
        true
    }
}

unsafe extern "C" fn close(file: *mut ffi::sqlite3_file) -> c_int {
    let me = me(file);
    // Whatever is still gathered was never committed (see `File::discard`).
    me.discard();
    if let Some(other) = me.other.as_mut() {
        // A WAL closes before its database; should a database close first, its WAL
        // stops gathering, as it could no longer drop a rolled-back transaction's frames.
        other.other = std::ptr::null_mut();
        other.discard();
        other.is_wal = false;
    }
    let rc = real_call!(me.real, xClose, ffi::SQLITE_OK);
    std::ptr::drop_in_place(me as *mut File);
    rc
}

unsafe extern "C" fn read(file: *mut ffi::sqlite3_file, buf: *mut c_void, amount: c_int, offset: i64) -> c_int {
    let me = me(file);
    let rc = me.flush_before_call();
    if rc != ffi::SQLITE_OK {
        return rc;
    }
    me.read_at = Some(offset);
    real_call!(me.real, xRead, ffi::SQLITE_IOERR_READ, buf, amount, offset)
}

unsafe extern "C" fn write(file: *mut ffi::sqlite3_file, buf: *const c_void, amount: c_int, offset: i64) -> c_int {
    let me = me(file);
    let rewrite = me.read_at.take() == Some(offset);
    if me.is_wal && amount > 0 && !rewrite {
        let data = std::slice::from_raw_parts(buf as *const u8, amount as usize);
        // A frame header, or the page after one: everything else goes straight through.
        let frame_part = data.len() == FRAME_HEADER_BYTES || !me.pending.is_empty();
        let ends_commit = data.len() != FRAME_HEADER_BYTES && me.commit_header;
        if frame_part && me.gather(data, offset) {
            return if ends_commit { me.flush() } else { ffi::SQLITE_OK };
        }
    }
    let rc = me.flush();
    if rc != ffi::SQLITE_OK {
        return rc;
    }
    real_call!(me.real, xWrite, ffi::SQLITE_IOERR_WRITE, buf, amount, offset)
}

unsafe extern "C" fn truncate(file: *mut ffi::sqlite3_file, size: i64) -> c_int {
    flushed_call!(file, xTruncate, ffi::SQLITE_IOERR_TRUNCATE, size)
}

unsafe extern "C" fn sync(file: *mut ffi::sqlite3_file, flags: c_int) -> c_int {
    flushed_call!(file, xSync, ffi::SQLITE_IOERR_FSYNC, flags)
}

unsafe extern "C" fn file_size(file: *mut ffi::sqlite3_file, size: *mut i64) -> c_int {
    flushed_call!(file, xFileSize, ffi::SQLITE_IOERR_FSTAT, size)
}

unsafe extern "C" fn lock(file: *mut ffi::sqlite3_file, level: c_int) -> c_int {
    real_call!(me(file).real, xLock, ffi::SQLITE_IOERR_LOCK, level)
}

unsafe extern "C" fn unlock(file: *mut ffi::sqlite3_file, level: c_int) -> c_int {
    // Only the database file is locked this way, and it gathers nothing.
    real_call!(me(file).real, xUnlock, ffi::SQLITE_IOERR_UNLOCK, level)
}

unsafe extern "C" fn check_reserved_lock(file: *mut ffi::sqlite3_file, out: *mut c_int) -> c_int {
    real_call!(me(file).real, xCheckReservedLock, ffi::SQLITE_IOERR_CHECKRESERVEDLOCK, out)
}

unsafe extern "C" fn file_control(file: *mut ffi::sqlite3_file, op: c_int, arg: *mut c_void) -> c_int {
    flushed_call!(file, xFileControl, ffi::SQLITE_NOTFOUND, op, arg)
}

unsafe extern "C" fn sector_size(file: *mut ffi::sqlite3_file) -> c_int {
    real_call!(me(file).real, xSectorSize, 4096)
}

unsafe extern "C" fn device_characteristics(file: *mut ffi::sqlite3_file) -> c_int {
    real_call!(me(file).real, xDeviceCharacteristics, 0)
}

/// The default VFS's methods of version `v` or later (shared memory: 2, mmap: 3).
unsafe fn has_version(file: *mut ffi::sqlite3_file, v: c_int) -> bool {
    (*(*me(file).real).pMethods).iVersion >= v
}

unsafe extern "C" fn shm_map(
    file: *mut ffi::sqlite3_file,
    page: c_int,
    page_size: c_int,
    extend: c_int,
    out: *mut *mut c_void,
) -> c_int {
    if !has_version(file, 2) {
        return ffi::SQLITE_IOERR_SHMMAP;
    }
    real_call!(me(file).real, xShmMap, ffi::SQLITE_IOERR_SHMMAP, page, page_size, extend, out)
}

/// SQLite's `WAL_WRITE_LOCK`, the first of the shared-memory locks.
const WAL_WRITE_LOCK: c_int = 0;

unsafe extern "C" fn shm_lock(file: *mut ffi::sqlite3_file, offset: c_int, n: c_int, flags: c_int) -> c_int {
    if !has_version(file, 2) {
        return ffi::SQLITE_IOERR_SHMLOCK;
    }
    let wal = me(file).other;
    if flags & ffi::SQLITE_SHM_UNLOCK != 0 && offset == WAL_WRITE_LOCK && !wal.is_null() {
        // The transaction is over: what its WAL still holds was never committed.
        (*wal).discard();
    }
    real_call!(me(file).real, xShmLock, ffi::SQLITE_IOERR_SHMLOCK, offset, n, flags)
}

unsafe extern "C" fn shm_barrier(file: *mut ffi::sqlite3_file) {
    if has_version(file, 2) {
        let real = me(file).real;
        if let Some(f) = (*(*real).pMethods).xShmBarrier {
            f(real)
        }
    }
}

unsafe extern "C" fn shm_unmap(file: *mut ffi::sqlite3_file, delete: c_int) -> c_int {
    if !has_version(file, 2) {
        return ffi::SQLITE_OK;
    }
    real_call!(me(file).real, xShmUnmap, ffi::SQLITE_OK, delete)
}

unsafe extern "C" fn fetch(file: *mut ffi::sqlite3_file, offset: i64, amount: c_int, out: *mut *mut c_void) -> c_int {
    if !has_version(file, 3) {
        *out = std::ptr::null_mut();
        return ffi::SQLITE_OK;
    }
    real_call!(me(file).real, xFetch, ffi::SQLITE_OK, offset, amount, out)
}

unsafe extern "C" fn unfetch(file: *mut ffi::sqlite3_file, offset: i64, page: *mut c_void) -> c_int {
    if !has_version(file, 3) {
        return ffi::SQLITE_OK;
    }
    real_call!(me(file).real, xUnfetch, ffi::SQLITE_OK, offset, page)
}
