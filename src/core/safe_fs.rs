// SPDX-License-Identifier: GPL-2.0-or-later
//! Files asbb creates, writes or reads, often as root, without being tricked by other
//! local users:
//!
//! - no symlink is followed: new files are opened `O_EXCL | O_NOFOLLOW`, an existing
//!   file is replaced by renaming a new one over it, and files are checked with `lstat`
//!   and, once open, `fstat`;
//! - nothing is written in a folder others can write to, except a file created new
//!   there when the folder has the sticky bit (the /tmp rule); the ledger, whose -wal
//!   and -shm files SQLite opens by name beside it, needs a folder only its owner can
//!   write to, owned by root, SlurmUser or the caller;
//! - a new ledger and its folders are given to SlurmUser through their descriptors;
//! - only regular files owned by root, SlurmUser or the caller are read, each up to a
//!   size limit.
//!
//! Errors are reasons without the path; callers say which file and what they were doing.

use std::fs::{File, FileType, Metadata, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Who may own a file asbb trusts, as messages say it.
pub const TRUSTED_OWNERS: &str = "root, SlurmUser or the caller";

/// The effective uid of this process (the owner of /proc/self).
pub fn caller_uid() -> u32 {
    std::fs::metadata("/proc/self").map(|m| m.uid()).unwrap_or(u32::MAX)
}

/// The value of `key` in slurm.conf text (keys are case-insensitive; `#` starts a comment).
pub fn slurm_conf_value(text: &str, key: &str) -> Option<String> {
    text.lines().find_map(|line| {
        let line = line.split('#').next()?.trim();
        let (k, v) = line.split_once('=')?;
        k.trim().eq_ignore_ascii_case(key).then(|| v.trim().to_string()).filter(|v| !v.is_empty())
    })
}

/// The first /etc/passwd entry `matches(name, uid)` accepts: (name, uid, gid).
pub fn passwd_find(matches: impl Fn(&str, u32) -> bool) -> Option<(String, u32, u32)> {
    let text = std::fs::read_to_string("/etc/passwd").ok()?;
    text.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        let (uid, gid) = (f.get(2)?.parse().ok()?, f.get(3)?.parse().ok()?);
        matches(f[0], uid).then(|| (f[0].to_string(), uid, gid))
    })
}

/// slurm.conf: `$SLURM_CONF`, else /etc/slurm/slurm.conf.
pub fn slurm_conf_path() -> PathBuf {
    std::env::var_os("SLURM_CONF").map(PathBuf::from).unwrap_or_else(|| "/etc/slurm/slurm.conf".into())
}

/// ClusterName from slurm.conf (quotes taken off, lower case as SLURM makes it).
pub fn slurm_cluster_name() -> Option<String> {
    let text = std::fs::read_to_string(slurm_conf_path()).ok()?;
    let name = slurm_conf_value(&text, "ClusterName")?;
    let name = name.trim_matches(|c| c == '"' || c == '\'').trim().to_ascii_lowercase();
    (!name.is_empty()).then_some(name)
}

/// SlurmUser from slurm.conf as (name, uid, gid); `None` without slurm.conf or a
/// SlurmUser line, an error when that user does not exist on this machine.
pub fn slurm_user() -> Result<Option<(String, u32, u32)>, String> {
    let conf = slurm_conf_path();
    let Some(user) = std::fs::read_to_string(&conf).ok().and_then(|t| slurm_conf_value(&t, "SlurmUser")) else {
        return Ok(None);
    };
    match passwd_find(|n, _| n == user) {
        Some(found) => Ok(Some(found)),
        None => Err(format!("SlurmUser {user} (from {}) is not a user on this machine", conf.display())),
    }
}

/// Root, the caller, or SlurmUser (slurm.conf is read only when the first two fail).
pub fn is_trusted_owner(uid: u32) -> bool {
    uid == 0 || uid == caller_uid() || matches!(slurm_user(), Ok(Some((_, u, _))) if u == uid)
}

/// "a FIFO", "a symbolic link", ... for messages.
pub fn describe(t: FileType) -> &'static str {
    if t.is_symlink() {
        "a symbolic link"
    } else if t.is_dir() {
        "a folder"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_socket() {
        "a socket"
    } else if t.is_char_device() {
        "a character device"
    } else if t.is_block_device() {
        "a block device"
    } else {
        "a regular file"
    }
}

fn mode_text(m: &Metadata) -> String {
    format!("{:04o}", m.mode() & 0o7777)
}

/// The folder a path is in ("." for a bare file name).
pub fn folder_of(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Who can add, remove and rename files in a folder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Folder {
    /// Only its owner (no group or other write bit).
    Private,
    /// Others too, but the sticky bit keeps them off files they do not own (/tmp).
    Sticky,
}

/// Refuses a folder that group or others can write to without the sticky bit: anyone
/// could put a symlink or a file of theirs in place of what asbb writes there.
pub fn check_folder(dir: &Path) -> Result<Folder, String> {
    let m = std::fs::metadata(dir).map_err(|e| e.to_string())?;
    if m.mode() & 0o022 == 0 {
        Ok(Folder::Private)
    } else if m.mode() & 0o1000 != 0 {
        Ok(Folder::Sticky)
    } else {
        Err(format!(
            "its folder {} can be written by others (mode {}) and has no sticky bit",
            dir.display(),
            mode_text(&m)
        ))
    }
}

/// Creates a new file: never opens one that exists, never through a symlink.
pub fn create_new(path: &Path, mode: u32) -> std::io::Result<File> {
    OpenOptions::new().write(true).create_new(true).mode(mode).custom_flags(libc::O_NOFOLLOW).open(path)
}

/// Writes `contents` to `path` (`--output`) without following a symlink. A new file is
/// created `O_EXCL | O_NOFOLLOW`; an existing regular file is replaced by a new one
/// renamed over it (keeping its permission bits), except in a folder others can write
/// to, where only new files are made. A symlink or anything but a regular file is
/// refused.
pub fn write_file(path: &Path, contents: &[u8]) -> Result<(), String> {
    let dir = folder_of(path);
    let folder = check_folder(dir)?;
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut f = create_new(path, 0o666).map_err(|e| e.to_string())?;
            f.write_all(contents).map_err(|e| e.to_string())
        }
        Err(e) => Err(e.to_string()),
        Ok(m) if m.file_type().is_symlink() => Err("it is a symbolic link; asbb does not write through one".into()),
        Ok(m) if !m.is_file() => Err(format!("it is {}, not a regular file", describe(m.file_type()))),
        Ok(_) if folder == Folder::Sticky => Err(format!(
            "it already exists in {}, which others can write to; asbb only creates new files there",
            dir.display()
        )),
        Ok(m) => replace_file(path, dir, &m, contents),
    }
}

/// A new file beside `path`, filled, then renamed over it (rename replaces the name, it
/// follows nothing).
fn replace_file(path: &Path, dir: &Path, old: &Metadata, contents: &[u8]) -> Result<(), String> {
    let name = path.file_name().ok_or_else(|| "it is not a file name".to_string())?.to_string_lossy().into_owned();
    let mut n = 0;
    let (tmp, mut f) = loop {
        let tmp = dir.join(format!(".{name}.{}-{n}.asbb-tmp", std::process::id()));
        match create_new(&tmp, 0o600) {
            Ok(f) => break (tmp, f),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && n < 100 => n += 1,
            Err(e) => return Err(format!("cannot create a new file in {}: {e}", dir.display())),
        }
    };
    let done = f
        .set_permissions(std::fs::Permissions::from_mode(old.mode() & 0o777))
        .and_then(|()| f.write_all(contents))
        .and_then(|()| f.sync_all())
        .and_then(|()| std::fs::rename(&tmp, path));
    if let Err(e) = done {
        let _ = std::fs::remove_file(&tmp);
        return Err(e.to_string());
    }
    Ok(())
}

/// Whether anything (a symlink too) is at `path`.
pub fn exists(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok()
}

/// The first symlink on the way to `path` (itself included), from `/` down, and
/// whether it is `path` itself.
fn symlink_on_path(path: &Path) -> Option<(PathBuf, bool)> {
    let abs = if path.is_absolute() { path.to_path_buf() } else { std::env::current_dir().ok()?.join(path) };
    let mut steps: Vec<&Path> = abs.ancestors().collect();
    steps.reverse();
    let found = steps.into_iter().find(|p| std::fs::symlink_metadata(p).is_ok_and(|m| m.file_type().is_symlink()))?;
    Some((found.to_path_buf(), found == abs))
}

/// The ledger's folder: only its owner may write to it (SQLite opens the -wal and -shm
/// files beside the ledger by name), and that owner is root, SlurmUser or the caller.
fn check_ledger_folder(path: &Path) -> Result<(), String> {
    let dir = folder_of(path);
    let m = std::fs::metadata(dir).map_err(|e| format!("its folder {}: {e}", dir.display()))?;
    if m.mode() & 0o022 != 0 {
        return Err(format!(
            "its folder {} can be written by others (mode {}); keep the ledger in a folder only its owner can write to",
            dir.display(),
            mode_text(&m)
        ));
    }
    if !is_trusted_owner(m.uid()) {
        return Err(format!("its folder {} belongs to uid {}, not {TRUSTED_OWNERS}", dir.display(), m.uid()));
    }
    Ok(())
}

fn no_symlink_to_ledger(path: &Path) -> Result<(), String> {
    match symlink_on_path(path) {
        Some((_, true)) => Err("it is a symbolic link; asbb does not follow one to the ledger".into()),
        Some((p, false)) => Err(format!("{} is a symbolic link; name the ledger by its real path", p.display())),
        None => Ok(()),
    }
}

/// Checks an existing ledger before SQLite opens it: no symlink anywhere on its path, a
/// regular file owned by root, SlurmUser or the caller, in a folder only its owner can
/// write to.
pub fn check_ledger(path: &Path) -> Result<(), String> {
    no_symlink_to_ledger(path)?;
    let m = std::fs::symlink_metadata(path).map_err(|e| e.to_string())?;
    if !m.is_file() {
        return Err(format!("it is {}, not a regular file", describe(m.file_type())));
    }
    if !is_trusted_owner(m.uid()) {
        return Err(format!("it is owned by uid {}, not {TRUSTED_OWNERS}", m.uid()));
    }
    check_ledger_folder(path)
}

/// Opens a folder without following a symlink (to change it through its descriptor).
fn open_folder(dir: &Path) -> std::io::Result<File> {
    OpenOptions::new().read(true).custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW).open(dir)
}

/// Creates a new, empty ledger file (mode 0600) and the folders it needs (mode 0755),
/// each new and given to `owner` (uid, gid) through its descriptor when one is named.
/// A folder is made only where others cannot swap it (see [`check_folder`]); the
/// ledger only in a folder that passes the ledger's rules.
pub fn create_ledger(path: &Path, owner: Option<(u32, u32)>) -> Result<(), String> {
    let mut missing: Vec<&Path> =
        path.ancestors().skip(1).take_while(|d| !d.as_os_str().is_empty() && !exists(d)).collect();
    missing.reverse();
    for dir in missing {
        let fail = |e: String| format!("cannot create folder {}: {e}", dir.display());
        check_folder(folder_of(dir)).map_err(fail)?;
        std::fs::DirBuilder::new().mode(0o755).create(dir).map_err(|e| fail(e.to_string()))?;
        if let Some((uid, gid)) = owner {
            let d = open_folder(dir).map_err(|e| fail(e.to_string()))?;
            std::os::unix::fs::fchown(&d, Some(uid), Some(gid)).map_err(|e| fail(e.to_string()))?;
        }
    }
    no_symlink_to_ledger(path)?;
    check_ledger_folder(path)?;
    let f = create_new(path, 0o600).map_err(|e| format!("cannot create: {e}"))?;
    if let Some((uid, gid)) = owner {
        std::os::unix::fs::fchown(&f, Some(uid), Some(gid)).map_err(|e| format!("cannot give it to uid {uid}: {e}"))?;
    }
    Ok(())
}

/// A new folder (mode 0700) of the caller's in the temporary folder, removed with
/// everything in it when dropped: for scratch files no one else may touch.
pub struct PrivateDir {
    path: PathBuf,
}

impl PrivateDir {
    pub fn new(prefix: &str) -> Result<PrivateDir, String> {
        let base = std::env::temp_dir();
        check_folder(&base).map_err(|e| format!("{}: {e}", base.display()))?;
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
        let mut n = 0;
        loop {
            let path = base.join(format!("{prefix}-{}-{nanos}-{n}", std::process::id()));
            match std::fs::DirBuilder::new().mode(0o700).create(&path) {
                Ok(()) => return Ok(PrivateDir { path }),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && n < 100 => n += 1,
                Err(e) => return Err(format!("cannot create {}: {e}", path.display())),
            }
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for PrivateDir {
    fn drop(&mut self) {
        // remove_dir_all follows no symlink inside.
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// Reads a file someone else may have placed (a cost file): only a regular file, not a
/// symlink, owned by root, SlurmUser or the caller, at most `cap` bytes. Opened
/// `O_NOFOLLOW | O_NONBLOCK` (a FIFO swapped in after the check cannot stall the open)
/// and checked again on the open descriptor.
pub fn read_trusted_file(path: &Path, cap: u64) -> Result<Vec<u8>, String> {
    let check = |m: &Metadata| -> Result<(), String> {
        if !m.is_file() {
            return Err(format!("it is {}, not a regular file", describe(m.file_type())));
        }
        if !is_trusted_owner(m.uid()) {
            return Err(format!("it is owned by uid {}, not {TRUSTED_OWNERS}", m.uid()));
        }
        if m.len() > cap {
            return Err(format!("{} bytes is over the limit of {cap} bytes", m.len()));
        }
        Ok(())
    };
    let m = std::fs::symlink_metadata(path).map_err(|e| format!("cannot read: {e}"))?;
    check(&m)?;
    let f = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| format!("cannot read: {e}"))?;
    check(&f.metadata().map_err(|e| format!("cannot read: {e}"))?)?;
    let mut bytes = Vec::new();
    f.take(cap + 1).read_to_end(&mut bytes).map_err(|e| format!("cannot read: {e}"))?;
    if bytes.len() as u64 > cap {
        return Err(format!("it grew over the limit of {cap} bytes while being read"));
    }
    Ok(bytes)
}

/// Binds a unix socket at `path` without following a symlink, and opens it to every
/// local user (mode 0666). A stale socket (nothing answering) of the caller's is
/// replaced; a symlink, anything that is not a socket, another user's socket and a live
/// server's are not. The folder is made (mode 0755) if missing and must pass
/// [`check_folder`].
pub fn bind_unix_socket(path: &Path) -> Result<std::os::unix::net::UnixListener, String> {
    let dir = folder_of(path);
    if !exists(dir) {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    check_folder(dir).map_err(|e| format!("cannot listen on {}: {e}", path.display()))?;
    if let Ok(m) = std::fs::symlink_metadata(path) {
        if m.file_type().is_symlink() {
            return Err(format!("{} is a symbolic link; not replacing it", path.display()));
        }
        if !m.file_type().is_socket() {
            return Err(format!("{} exists and is not a socket; not replacing it", path.display()));
        }
        if m.uid() != caller_uid() {
            return Err(format!("{} is a socket of uid {}; not replacing it", path.display(), m.uid()));
        }
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(format!("{} is in use by a running server", path.display()));
        }
        std::fs::remove_file(path).map_err(|e| format!("cannot remove stale {}: {e}", path.display()))?;
    }
    // bind() creates the name and fails on anything already there, a symlink included.
    let listener = std::os::unix::net::UnixListener::bind(path)
        .map_err(|e| format!("cannot listen on {}: {e}", path.display()))?;
    open_socket_to_users(path).map_err(|e| format!("cannot open {} to users: {e}", path.display()))?;
    Ok(listener)
}

/// chmod 0666 on the socket just bound, through an `O_PATH | O_NOFOLLOW` descriptor
/// (chmod by name would follow a symlink put in its place).
fn open_socket_to_users(path: &Path) -> Result<(), String> {
    use std::os::fd::AsRawFd;
    let f = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_NOFOLLOW)
        .open(path)
        .map_err(|e| e.to_string())?;
    let m = f.metadata().map_err(|e| e.to_string())?;
    if !m.file_type().is_socket() || m.uid() != caller_uid() {
        return Err(format!("it was replaced by {}", describe(m.file_type())));
    }
    std::fs::set_permissions(format!("/proc/self/fd/{}", f.as_raw_fd()), std::fs::Permissions::from_mode(0o666))
        .map_err(|e| e.to_string())
}

/// Removes the socket at `path` if it is one and the caller's (never a file or a
/// symlink someone put there).
pub fn remove_own_socket(path: &Path) {
    if std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket() && m.uid() == caller_uid()) {
        let _ = std::fs::remove_file(path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn mode(p: &Path, m: u32) {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap();
    }

    #[test]
    fn write_file_creates_replaces_and_refuses_symlinks() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("r.txt");
        write_file(&out, b"one").unwrap();
        assert_eq!(std::fs::read(&out).unwrap(), b"one");
        mode(&out, 0o640);
        write_file(&out, b"two").unwrap();
        assert_eq!(std::fs::read(&out).unwrap(), b"two");
        assert_eq!(std::fs::metadata(&out).unwrap().mode() & 0o777, 0o640);
        // No temporary file left behind.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);

        let victim = dir.path().join("victim");
        std::fs::write(&victim, b"keep").unwrap();
        let link = dir.path().join("link.txt");
        symlink(&victim, &link).unwrap();
        assert_eq!(write_file(&link, b"x").unwrap_err(), "it is a symbolic link; asbb does not write through one");
        let dangling = dir.path().join("dangling.txt");
        symlink(dir.path().join("new"), &dangling).unwrap();
        assert_eq!(write_file(&dangling, b"x").unwrap_err(), "it is a symbolic link; asbb does not write through one");
        assert!(!dir.path().join("new").exists());
        assert_eq!(std::fs::read(&victim).unwrap(), b"keep");
        assert_eq!(write_file(dir.path(), b"x").unwrap_err(), "it is a folder, not a regular file");
    }

    #[test]
    fn shared_folders_take_only_new_files_and_need_the_sticky_bit() {
        let dir = tempfile::tempdir().unwrap();
        let shared = dir.path().join("shared");
        std::fs::create_dir(&shared).unwrap();
        mode(&shared, 0o777);
        assert_eq!(
            write_file(&shared.join("r.txt"), b"x").unwrap_err(),
            format!("its folder {} can be written by others (mode 0777) and has no sticky bit", shared.display())
        );
        assert!(!shared.join("r.txt").exists());
        mode(&shared, 0o1777);
        write_file(&shared.join("r.txt"), b"x").unwrap();
        assert_eq!(
            write_file(&shared.join("r.txt"), b"y").unwrap_err(),
            format!(
                "it already exists in {}, which others can write to; asbb only creates new files there",
                shared.display()
            )
        );
        assert_eq!(std::fs::read(shared.join("r.txt")).unwrap(), b"x");
    }

    #[test]
    fn ledger_paths() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = dir.path().join("l.db");
        create_ledger(&ledger, None).unwrap();
        assert_eq!(std::fs::metadata(&ledger).unwrap().mode() & 0o777, 0o600);
        check_ledger(&ledger).unwrap();
        assert_eq!(create_ledger(&ledger, None).unwrap_err(), "cannot create: File exists (os error 17)");
        // A symlink to the ledger, or on the way to it.
        let link = dir.path().join("link.db");
        symlink(&ledger, &link).unwrap();
        assert_eq!(check_ledger(&link).unwrap_err(), "it is a symbolic link; asbb does not follow one to the ledger");
        let dangling = dir.path().join("dangling.db");
        symlink(dir.path().join("elsewhere.db"), &dangling).unwrap();
        assert_eq!(
            create_ledger(&dangling, None).unwrap_err(),
            "it is a symbolic link; asbb does not follow one to the ledger"
        );
        assert!(!dir.path().join("elsewhere.db").exists());
        let linked_dir = dir.path().join("ld");
        symlink(dir.path(), &linked_dir).unwrap();
        assert_eq!(
            check_ledger(&linked_dir.join("l.db")).unwrap_err(),
            format!("{} is a symbolic link; name the ledger by its real path", linked_dir.display())
        );
        // A folder others can write to, sticky or not.
        let shared = dir.path().join("shared");
        std::fs::create_dir(&shared).unwrap();
        mode(&shared, 0o1777);
        assert_eq!(
            create_ledger(&shared.join("l.db"), None).unwrap_err(),
            format!(
                "its folder {} can be written by others (mode 1777); keep the ledger in a folder only its owner can write to",
                shared.display()
            )
        );
        assert!(!shared.join("l.db").exists());
        // Not a regular file.
        let fifo = dir.path().join("fifo.db");
        assert!(std::process::Command::new("mkfifo").arg(&fifo).status().unwrap().success());
        assert_eq!(check_ledger(&fifo).unwrap_err(), "it is a FIFO, not a regular file");
    }

    #[test]
    fn read_trusted_file_refuses_what_is_not_a_small_regular_file() {
        let dir = tempfile::tempdir().unwrap();
        let ok = dir.path().join("ok");
        std::fs::write(&ok, b"12345").unwrap();
        assert_eq!(read_trusted_file(&ok, 5).unwrap(), b"12345");
        assert_eq!(read_trusted_file(&ok, 4).unwrap_err(), "5 bytes is over the limit of 4 bytes");
        let link = dir.path().join("link");
        symlink("/dev/zero", &link).unwrap();
        assert_eq!(read_trusted_file(&link, 4).unwrap_err(), "it is a symbolic link, not a regular file");
        let fifo = dir.path().join("fifo");
        assert!(std::process::Command::new("mkfifo").arg(&fifo).status().unwrap().success());
        assert_eq!(read_trusted_file(&fifo, 4).unwrap_err(), "it is a FIFO, not a regular file");
    }

    #[test]
    fn sockets_are_bound_fresh_and_only_ours_removed() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("run/api.sock");
        let l = bind_unix_socket(&sock).unwrap();
        assert_eq!(std::fs::metadata(&sock).unwrap().mode() & 0o777, 0o666);
        assert_eq!(bind_unix_socket(&sock).unwrap_err(), format!("{} is in use by a running server", sock.display()));
        drop(l);
        // Stale: replaced.
        let l = bind_unix_socket(&sock).unwrap();
        drop(l);
        remove_own_socket(&sock);
        assert!(!exists(&sock));
        let victim = dir.path().join("victim");
        std::fs::write(&victim, b"keep").unwrap();
        mode(&victim, 0o600);
        symlink(&victim, &sock).unwrap();
        assert_eq!(
            bind_unix_socket(&sock).unwrap_err(),
            format!("{} is a symbolic link; not replacing it", sock.display())
        );
        remove_own_socket(&sock);
        assert!(exists(&sock), "a symlink is not removed as a socket");
        assert_eq!(std::fs::metadata(&victim).unwrap().mode() & 0o777, 0o600);
        std::fs::remove_file(&sock).unwrap();
        std::fs::write(&sock, b"").unwrap();
        assert_eq!(
            bind_unix_socket(&sock).unwrap_err(),
            format!("{} exists and is not a socket; not replacing it", sock.display())
        );
    }
}
