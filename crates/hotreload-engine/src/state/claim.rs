//! Claiming the state file for one server, before anything runs on it.
//!
//! A state file that cannot be written is found out at start, not at exit:
//! a server that ran for an hour and then could not save would have lost the
//! session's state with nothing said until the end. So [`StateClaim::acquire`]
//! creates (and removes) a temporary file in the state file's folder, the
//! same way every save does, and refuses to start if that fails.
//!
//! Two servers saving to one state file would overwrite each other's state
//! at every save. The claim takes an exclusive `flock` on a lock file beside
//! the state file (`.NAME.lock`, holding the owner's pid) for as long as the
//! server runs; a second server is refused with the first one's pid. The
//! state file itself cannot carry the lock: every save replaces it with a new
//! inode by `rename`, and a lock on the old inode would guard nothing.
//!
//! When the save at exit fails anyway (the folder was deleted, the disk
//! filled up), [`rescue`] writes the state somewhere else rather than lose
//! it, and says where.

use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

use super::persist::{self, SavedRef};

/// The lock file's name for a state file named `name`: hidden, beside it,
/// and starting with `.NAME.` like the state file's temporary files, so one
/// rule keeps all of them out of the watched sources.
pub fn lock_file_name(name: &std::ffi::OsStr) -> OsString {
    let mut lock = OsString::from(".");
    lock.push(name);
    lock.push(".lock");
    lock
}

/// This server's hold on its state file. Dropping it removes the lock file
/// and releases the lock.
#[derive(Debug)]
pub struct StateClaim {
    lock: Option<(PathBuf, Flock<File>)>,
}

impl StateClaim {
    /// Checks that `path` can be saved to and, if `exclusive`, takes the
    /// lock. The error says what is wrong and what to do about it.
    pub fn acquire(path: &Path, exclusive: bool) -> Result<StateClaim, String> {
        let (dir, name) = persist::split_path(path).map_err(|e| e.to_string())?;
        if !dir.is_dir() {
            return Err(format!(
                "cannot save the state to {}: expected its folder {} to exist, found {}",
                path.display(),
                dir.display(),
                if dir.exists() { "a file" } else { "nothing" }
            ));
        }
        // Exactly what a save does first: if this works, saves can work.
        let (tmp, file) = persist::create_temp(&dir, name, 0o600).map_err(|e| {
            format!(
                "cannot save the state to {}: {e} (is the folder writable?)",
                path.display()
            )
        })?;
        drop(file);
        let _ = fs::remove_file(&tmp);
        if !exclusive {
            return Ok(StateClaim { lock: None });
        }
        let lock_path = dir.join(lock_file_name(name));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&lock_path)
            .map_err(|e| format!("cannot create the lock file {}: {e}", lock_path.display()))?;
        let mut lock = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => lock,
            Err((mut file, Errno::EWOULDBLOCK)) => {
                let mut owner = String::new();
                let _ = file.read_to_string(&mut owner);
                let owner = owner.trim();
                let who = if owner.is_empty() {
                    "another hotreload".to_owned()
                } else {
                    format!("another hotreload (pid {owner})")
                };
                return Err(format!(
                    "the state file {} is in use by {who}: expected no other server on it, \
                     since each would overwrite the other's state; stop that one, choose \
                     another --state-file, or pass --no-state-lock to share it anyway",
                    path.display()
                ));
            }
            Err((_, e)) => {
                return Err(format!("cannot lock {}: {e}", lock_path.display()));
            }
        };
        // The pid is for the refusal message of the next server; the lock,
        // not the text, is what keeps it out.
        let pid = std::process::id().to_string();
        let written = lock
            .set_len(0)
            .and_then(|()| lock.write_all(pid.as_bytes()))
            .and_then(|()| lock.flush());
        if let Err(e) = written {
            return Err(format!(
                "cannot write the lock file {}: {e}",
                lock_path.display()
            ));
        }
        Ok(StateClaim {
            lock: Some((lock_path, lock)),
        })
    }
}

impl Drop for StateClaim {
    fn drop(&mut self) {
        if let Some((path, lock)) = self.lock.take() {
            // Removed while still held, so no other server can have locked
            // it in between; one that opened it before the removal holds a
            // lock on a nameless file and sees the next one's as free.
            let _ = fs::remove_file(&path);
            drop(lock);
        }
    }
}

/// Writes `saved` to a new file of its own when the state file cannot be
/// written: in the folder the server runs in, else the temporary folder,
/// else the home folder. The name is unique and unpredictable; the file is
/// readable by its owner only. Returns where it went, or `None` if nowhere
/// would take it.
pub fn rescue(path: &Path, saved: &SavedRef<'_>) -> Option<PathBuf> {
    let bytes = persist::encode(saved).ok()?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "state".into());
    let folders = [
        std::env::current_dir().ok(),
        Some(std::env::temp_dir()),
        std::env::var_os("HOME").map(PathBuf::from),
    ];
    folders.into_iter().flatten().find_map(|dir| {
        let mut file = tempfile::Builder::new()
            .prefix(&format!("{name}.rescued-"))
            .tempfile_in(&dir)
            .ok()?;
        file.write_all(&bytes).ok()?;
        file.as_file().sync_all().ok()?;
        file.keep().ok().map(|(_, path)| path)
    })
}
