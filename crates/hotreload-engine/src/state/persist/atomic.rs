//! Writing the state file so that a crash at any moment leaves the previous
//! file or the new one, never a torn one (the steps and their reasons are in
//! the parent module's documentation), and opening it for reading without
//! ever blocking on something that is not a file.
//!
//! The temporary file's name is `.NAME.tmp-PID-RANDOM`: the pid says whose
//! it is, so a later save can remove the leftovers of a writer that died;
//! the random part makes the name unpredictable, so that another user of a
//! shared folder cannot block saves by creating the next name first. It is
//! created with `O_EXCL` (a file or symlink planted at that name is never
//! opened) and with the mode the state file already has, or 0600 for a new
//! one: a save never widens who can read the state.

use std::ffi::{OsStr, OsString};
use std::fs::{self, File, OpenOptions, Permissions};
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::sys::signal::kill;
use nix::unistd::Pid;

use super::PersistError;

/// Names tried before giving up on creating a temporary file.
const TEMP_ATTEMPTS: u32 = 64;
/// Random characters in a temporary file's name (about 71 bits).
const RANDOM_CHARS: usize = 12;
/// The mode of a state file that did not exist before.
const NEW_FILE_MODE: u32 = 0o600;

/// Writes `parts` (in order) to `path` crash-safely: a temporary file in the
/// same folder, written, fsynced, renamed over `path`, the folder fsynced.
pub(super) fn replace(path: &Path, parts: &[&[u8]]) -> Result<(), PersistError> {
    let (dir, name) = split_path(path)?;
    remove_stray_temps(&dir, name);
    let mode = kept_mode(path);
    let (tmp, mut file) = create_temp(&dir, name, mode)?;
    let written = parts
        .iter()
        .try_for_each(|part| file.write_all(part))
        .map_err(|e| format!("cannot write the temporary file {}: {e}", tmp.display()))
        .and_then(|()| {
            // The umask may have taken bits off at creation.
            file.set_permissions(Permissions::from_mode(mode))
                .map_err(|e| format!("cannot set the mode of {}: {e}", tmp.display()))
        })
        .and_then(|()| {
            file.sync_all()
                .map_err(|e| format!("cannot fsync the temporary file {}: {e}", tmp.display()))
        });
    drop(file);
    if let Err(why) = written {
        let _ = fs::remove_file(&tmp);
        return Err(PersistError::Io(why));
    }
    if let Err(e) = fs::rename(&tmp, path) {
        let _ = fs::remove_file(&tmp);
        return Err(PersistError::Io(format!(
            "cannot rename {} over {}: {e}",
            tmp.display(),
            path.display()
        )));
    }
    sync_dir(&dir, path)
}

/// The permission bits the state file has now (a regular file at `path`,
/// not through a symlink), or 0600 for a new one.
fn kept_mode(path: &Path) -> u32 {
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.is_file() => meta.mode() & 0o777,
        _ => NEW_FILE_MODE,
    }
}

/// Opens the state file for reading without blocking on what is not a
/// regular file (a FIFO would block `open` until a writer came; a device
/// would be read without end), and checks that it is one. `Ok(None)` when
/// there is no file.
pub(super) fn open_for_reading(path: &Path) -> Result<Option<File>, PersistError> {
    let io_error = |e: io::Error| {
        PersistError::Io(format!(
            "cannot read the state file {}: {e}",
            path.display()
        ))
    };
    let file = match OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
    {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_error(e)),
    };
    let kind = file.metadata().map_err(io_error)?.file_type();
    if !kind.is_file() {
        let found = if kind.is_fifo() {
            "a FIFO"
        } else if kind.is_char_device() || kind.is_block_device() {
            "a device"
        } else if kind.is_dir() {
            "a folder"
        } else {
            "something other than a file"
        };
        return Err(PersistError::NotAStateFile {
            found: format!("{found}, not a regular file"),
        });
    }
    Ok(Some(file))
}

/// Why a streamed checksum check failed.
pub(super) enum StreamCheck {
    Io(io::Error),
    /// A stop signal (SIGINT, SIGTERM, SIGHUP) is waiting: reading stopped
    /// so that it is answered.
    Interrupted(&'static str),
    Mismatch {
        stored: u32,
        computed: u32,
    },
}

/// Computes the CRC-32 of the first `total - checksum_len` bytes of `file`
/// a chunk at a time, holding none of them, and compares it with the one
/// stored after them. Between chunks it looks for a pending stop signal
/// (the server blocks them in every thread, so they wait rather than kill):
/// a long read is never deaf to Ctrl-C.
pub(super) fn check_checksum_streaming(
    file: &File,
    total: usize,
    checksum_len: usize,
) -> Result<(), StreamCheck> {
    use std::os::unix::fs::FileExt;
    const CHUNK: usize = 1 << 20;
    let body = total - checksum_len;
    let mut crc = super::crc::Crc32::new();
    let mut chunk = vec![0u8; CHUNK];
    let mut at = 0usize;
    while at < body {
        if let Some(signal) = pending_stop_signal() {
            return Err(StreamCheck::Interrupted(signal));
        }
        let n = CHUNK.min(body - at);
        file.read_exact_at(&mut chunk[..n], at as u64)
            .map_err(StreamCheck::Io)?;
        crc.update(&chunk[..n]);
        at += n;
    }
    let mut stored = [0u8; 4];
    file.read_exact_at(&mut stored, body as u64)
        .map_err(StreamCheck::Io)?;
    let (stored, computed) = (u32::from_le_bytes(stored), crc.finish());
    if stored != computed {
        return Err(StreamCheck::Mismatch { stored, computed });
    }
    Ok(())
}

/// SIGINT, SIGTERM or SIGHUP, if one is pending for this process.
fn pending_stop_signal() -> Option<&'static str> {
    let mut pending = std::mem::MaybeUninit::<libc::sigset_t>::uninit();
    // SAFETY: `sigpending` fills the set it is given.
    if unsafe { libc::sigpending(pending.as_mut_ptr()) } != 0 {
        return None;
    }
    // SAFETY: filled by the successful call above.
    let pending = unsafe { pending.assume_init() };
    [
        (libc::SIGINT, "SIGINT"),
        (libc::SIGTERM, "SIGTERM"),
        (libc::SIGHUP, "SIGHUP"),
    ]
    .into_iter()
    // SAFETY: `sigismember` reads the set.
    .find(|(sig, _)| unsafe { libc::sigismember(&pending, *sig) } == 1)
    .map(|(_, name)| name)
}

/// The directory `path` is in (`.` for a bare name) and its file name.
pub(crate) fn split_path(path: &Path) -> Result<(PathBuf, &OsStr), PersistError> {
    let name = path.file_name().ok_or_else(|| {
        PersistError::Io(format!(
            "cannot save the state to {}: expected a path naming a file, found none",
            path.display()
        ))
    })?;
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => PathBuf::from("."),
    };
    Ok((dir, name))
}

/// `.NAME.tmp-`: what every temporary file for `NAME` starts with.
pub(crate) fn temp_prefix(name: &OsStr) -> OsString {
    let mut prefix = OsString::from(".");
    prefix.push(name);
    prefix.push(".tmp-");
    prefix
}

/// The writer's process id in a temporary file's name after the prefix
/// (`PID-RANDOM`, or `PID-SEQ` as earlier versions named them), or `None`
/// if the rest is not that.
fn temp_owner(rest: &[u8]) -> Option<u32> {
    let dash = rest.iter().position(|&b| b == b'-')?;
    let (pid, tag) = (rest.get(..dash)?, rest.get(dash + 1..)?);
    if pid.is_empty() || !pid.iter().all(u8::is_ascii_digit) {
        return None;
    }
    if tag.is_empty() || !tag.iter().all(u8::is_ascii_alphanumeric) {
        return None;
    }
    std::str::from_utf8(pid).ok()?.parse().ok()
}

/// Whether `pid` names a live process (or one we may not signal, which is
/// alive too). A zombie counts as alive until it is reaped.
fn process_alive(pid: u32) -> bool {
    match i32::try_from(pid) {
        // 0 and negative ids mean process groups to kill(2): never ask.
        Ok(pid) if pid > 0 => !matches!(kill(Pid::from_raw(pid), None), Err(Errno::ESRCH)),
        _ => false,
    }
}

/// Removes the temporary files that killed writers left for `name` in
/// `dir`. Best effort: a file that cannot be removed is left (and ignored).
/// Only files of this user are touched: in a shared folder another user's
/// are theirs.
fn remove_stray_temps(dir: &Path, name: &OsStr) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    let prefix = temp_prefix(name);
    let me = std::process::id();
    // SAFETY: `geteuid` has no preconditions.
    let uid = unsafe { libc::geteuid() };
    for entry in entries.flatten() {
        let file_name = entry.file_name();
        let Some(rest) = file_name.as_bytes().strip_prefix(prefix.as_bytes()) else {
            continue;
        };
        let mine = fs::symlink_metadata(entry.path()).is_ok_and(|m| m.uid() == uid);
        match temp_owner(rest) {
            Some(pid) if mine && pid != me && !process_alive(pid) => {
                let _ = fs::remove_file(entry.path());
            }
            _ => {}
        }
    }
}

/// Twelve unpredictable letters and digits, from the kernel's generator.
fn random_tag() -> Result<String, PersistError> {
    const ALPHABET: &[u8; 62] = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
    let mut raw = [0u8; RANDOM_CHARS];
    let mut filled = 0;
    while filled < raw.len() {
        // SAFETY: writes at most the remaining bytes of `raw`.
        let n =
            unsafe { libc::getrandom(raw[filled..].as_mut_ptr().cast(), raw.len() - filled, 0) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(PersistError::Io(format!(
                "cannot draw a random name for the temporary file: {e}"
            )));
        }
        filled += n as usize;
    }
    // 256 is not a multiple of 62: a slight bias, irrelevant for a name.
    Ok(raw
        .iter()
        .map(|b| char::from(ALPHABET[usize::from(*b) % ALPHABET.len()]))
        .collect())
}

/// Creates a new temporary file next to the state file, never opening an
/// existing one (`O_EXCL`), with `mode`.
pub(crate) fn create_temp(
    dir: &Path,
    name: &OsStr,
    mode: u32,
) -> Result<(PathBuf, File), PersistError> {
    let pid = std::process::id();
    let mut taken = None;
    for _ in 0..TEMP_ATTEMPTS {
        let mut tmp_name = temp_prefix(name);
        tmp_name.push(format!("{pid}-{}", random_tag()?));
        let tmp = dir.join(tmp_name);
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)
        {
            Ok(file) => return Ok((tmp, file)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => taken = Some(tmp),
            Err(e) => {
                return Err(PersistError::Io(format!(
                    "cannot create the temporary file {}: {e}",
                    tmp.display()
                )));
            }
        }
    }
    Err(PersistError::Io(format!(
        "cannot create a temporary file in {}: expected a free name, found {TEMP_ATTEMPTS} taken \
         (the last {})",
        dir.display(),
        taken.as_deref().unwrap_or(dir).display()
    )))
}

/// Makes the rename durable. File systems that cannot sync a directory say
/// so with `EINVAL` or `ENOTSUP`; there is nothing more to do on those.
fn sync_dir(dir: &Path, path: &Path) -> Result<(), PersistError> {
    match File::open(dir).and_then(|d| d.sync_all()) {
        Ok(()) => Ok(()),
        Err(e) if matches!(e.raw_os_error(), Some(libc::EINVAL | libc::ENOTSUP)) => Ok(()),
        Err(e) => Err(PersistError::Io(format!(
            "{} was replaced, but cannot fsync its directory {}: {e}; \
             a power loss could bring back the previous state",
            path.display(),
            dir.display()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owners_are_read_from_both_name_forms() {
        assert_eq!(temp_owner(b"4242-AbC012xyz789"), Some(4242));
        assert_eq!(temp_owner(b"4242-17"), Some(4242), "an earlier version's");
        assert_eq!(temp_owner(b"4242-"), None);
        assert_eq!(temp_owner(b"x-17"), None);
        assert_eq!(temp_owner(b"4242-a.b"), None);
        assert_eq!(temp_owner(b"-4"), None);
        assert_eq!(temp_owner(b"12a-4"), None);
        assert_eq!(temp_owner(b"12-4-5"), None);
        assert!(process_alive(std::process::id()));
        assert!(!process_alive(999_999_999));
        assert!(!process_alive(0));
        assert!(!process_alive(u32::MAX));
    }

    #[test]
    fn names_are_unpredictable_and_modes_kept() {
        let a = random_tag().expect("random");
        let b = random_tag().expect("random");
        assert_eq!(a.len(), RANDOM_CHARS);
        assert_ne!(a, b);
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("st.bin");
        replace(&path, &[b"one"]).expect("first save");
        assert_eq!(fs::metadata(&path).expect("stat").mode() & 0o777, 0o600);
        fs::set_permissions(&path, Permissions::from_mode(0o640)).expect("chmod");
        replace(&path, &[b"two"]).expect("second save");
        assert_eq!(fs::metadata(&path).expect("stat").mode() & 0o777, 0o640);
        assert_eq!(fs::read(&path).expect("read"), b"two");
    }
}
