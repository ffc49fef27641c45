//! Stage three: copy each build into a private folder before loading it.
//!
//! The build output is never opened in place. glibc hands back the library
//! already loaded when the same path is opened again; a compiler rewriting a
//! mapped library makes the host run half-new bytes; a truncated file mapped
//! by the loader raises SIGBUS. Each build is copied under a unique name into
//! a folder created exclusively with mode 0700 at a random path, so no other
//! user can plant a file or symlink there. The folder and its copies are
//! removed when the engine stops.
//!
//! A server that dies (SIGKILL, a crash, a power cut) cannot remove its
//! folder. Each folder holds an `owner` file that its server keeps locked
//! (`flock`) while it runs, with its pid; a new server removes every folder
//! of the same user whose lock it can take — their owners are gone — and
//! says how many. A temporary folder that other users can write without the
//! sticky bit is refused: any of them could rename the private folder away
//! and put one of theirs in its place.

use std::fs::{self, File, OpenOptions, Permissions};
use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use tempfile::TempDir;

/// What every private folder's name starts with.
pub const PREFIX: &str = "hotreload-";
/// The file inside that its server keeps locked.
const OWNER_FILE: &str = "owner";
/// A folder from before owner files existed is taken as abandoned once
/// nothing in it changed for this long.
const LEGACY_AGE: Duration = Duration::from_secs(24 * 3600);

pub struct ShadowDir {
    // Fields drop in order: the folder goes first, and only then the lock
    // that says a live server owns it.
    dir: TempDir,
    /// The next copy's file, made while its build runs (see
    /// [`ShadowDir::make_ready`]).
    ready: Mutex<Option<Ready>>,
    _owner: Flock<File>,
    /// Folders of dead servers removed at start.
    pub reaped: usize,
}

impl ShadowDir {
    /// Creates the folder under `$TMPDIR` (or `/tmp`), after removing those
    /// that dead servers of this user left there.
    pub fn create() -> Result<ShadowDir, String> {
        let base = std::env::temp_dir();
        check_base(&base)?;
        let reaped = reap_abandoned(&base);
        let dir = tempfile::Builder::new()
            .prefix(PREFIX)
            .permissions(Permissions::from_mode(0o700))
            .tempdir_in(&base)
            .map_err(|e| {
                format!(
                    "cannot create a private folder for library copies in {}: {e}",
                    base.display()
                )
            })?;
        // Locked before it has its name: another server starting now reaps
        // every folder whose `owner` it can lock, and must never find this
        // one's unlocked. Until the rename the folder has no `owner` at
        // all, which the reaper takes for a folder from before owner files,
        // abandoned only once it is a day old.
        let owner_path = dir.path().join(OWNER_FILE);
        let unnamed = dir.path().join(".owner-new");
        let owner = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&unnamed)
            .map_err(|e| format!("cannot create {}: {e}", unnamed.display()))?;
        let mut owner = Flock::lock(owner, FlockArg::LockExclusiveNonblock)
            .map_err(|(_, e)| format!("cannot lock {}: {e}", unnamed.display()))?;
        fs::rename(&unnamed, &owner_path).map_err(|e| {
            format!(
                "cannot name {} {}: {e}",
                unnamed.display(),
                owner_path.display()
            )
        })?;
        // For a person looking at the folder; the lock is what counts.
        let _ = writeln!(owner, "{}", std::process::id());
        Ok(ShadowDir {
            dir,
            ready: Mutex::new(None),
            _owner: owner,
            reaped,
        })
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Where the copies go: not `owner`.
    fn copy_path(&self, serial: u64, lib_name: &str) -> PathBuf {
        self.dir.path().join(format!("{serial}-{lib_name}"))
    }

    /// Writes `bytes` as a new file, failing rather than overwriting, and
    /// returns a guard that removes it when dropped. The file made ready for
    /// this copy is written if there is one.
    pub fn store(&self, serial: u64, lib_name: &str, bytes: &[u8]) -> Result<ShadowFile, String> {
        let path = self.copy_path(serial, lib_name);
        let ready = self.lock_ready().take();
        match ready {
            Some(ready) if ready.guard.path == path => {
                write_all(ready.file, ready.guard, bytes, "library copy")
            }
            // Made for another copy: removed as `ready` drops.
            _ => write_new(&path, bytes, "library copy"),
        }
    }

    /// Makes the file of copy `serial` now, empty, so that storing it
    /// later is only a write: creating a file costs 15-40 µs, which a
    /// build's run hides and a swap would not. Best effort: a file that
    /// cannot be made now is made (and its failure said) when stored.
    pub fn make_ready(&self, serial: u64, lib_name: &str) {
        let path = self.copy_path(serial, lib_name);
        let mut ready = self.lock_ready();
        if ready.as_ref().is_some_and(|r| r.guard.path == path) {
            return;
        }
        // One made for another copy goes first (its guard removes it).
        *ready = None;
        *ready = create_new(&path).ok().map(|file| Ready {
            file,
            guard: ShadowFile { path, owned: true },
        });
    }

    fn lock_ready(&self) -> std::sync::MutexGuard<'_, Option<Ready>> {
        // An open file and its name hold no invariant a panic could break.
        self.ready.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Writes the library of a good version as it was built (not the
    /// loader's copy made from it), kept on disk so that `rollback` can
    /// load it again once it is no longer loaded.
    pub fn keep(&self, version: u64, lib_name: &str, bytes: &[u8]) -> Result<ShadowFile, String> {
        let path = self
            .dir
            .path()
            .join(format!("{KEPT_PREFIX}{version}-{lib_name}"));
        write_new(&path, bytes, "kept library")
    }

    /// The library's own name in a kept copy's path ([`ShadowDir::keep`]).
    pub fn kept_lib_name(kept: &Path) -> String {
        let name = kept
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        match name
            .strip_prefix(KEPT_PREFIX)
            .and_then(|rest| rest.split_once('-'))
        {
            Some((_, lib)) => lib.to_owned(),
            None => name,
        }
    }
}

/// How a kept copy's name starts: `kept-v12-logic.so`.
const KEPT_PREFIX: &str = "kept-v";

/// A copy's file made ahead of its bytes; removed if dropped unused.
struct Ready {
    file: File,
    guard: ShadowFile,
}

/// Creates `path` (never an existing file) with `bytes` in it.
fn write_new(path: &Path, bytes: &[u8], what: &str) -> Result<ShadowFile, String> {
    let file = create_new(path)
        .map_err(|e| format!("cannot create the {what} {}: {e}", path.display()))?;
    let guard = ShadowFile {
        path: path.to_owned(),
        owned: true,
    };
    write_all(file, guard, bytes, what)
}

/// An empty file at `path`, which must not exist, writable by its owner
/// only.
fn create_new(path: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o700)
        .open(path)
}

/// Writes `bytes` into the new, empty file `guard` names.
fn write_all(
    mut file: File,
    guard: ShadowFile,
    bytes: &[u8],
    what: &str,
) -> Result<ShadowFile, String> {
    match file.write_all(bytes) {
        Ok(()) => Ok(guard),
        // A half-written file goes with the guard.
        Err(e) => Err(format!(
            "cannot write the {what} {}: {e}",
            guard.path.display()
        )),
    }
}

/// One copy of a library; removed from disk when dropped, unless borrowed.
#[derive(Debug)]
pub struct ShadowFile {
    path: PathBuf,
    owned: bool,
}

impl ShadowFile {
    /// A copy owned by another process (a trial probe loading the host's
    /// copy): never removed by this one.
    pub fn borrowed(path: PathBuf) -> ShadowFile {
        ShadowFile { path, owned: false }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for ShadowFile {
    fn drop(&mut self) {
        // Removing a file that is still mapped is fine: the mapping keeps the
        // inode alive until it goes.
        if self.owned {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// Refuses a base folder where another user could swap the private folder
/// for one of theirs: writable by group or others, without the sticky bit
/// (which lets only an entry's owner rename or remove it).
fn check_base(base: &Path) -> Result<(), String> {
    let meta = fs::metadata(base).map_err(|e| {
        format!(
            "cannot use the temporary folder {}: {e} (set TMPDIR to a folder of your own)",
            base.display()
        )
    })?;
    let mode = meta.mode();
    let shared = mode & 0o022 != 0;
    let sticky = mode & 0o1000 != 0;
    if shared && !sticky {
        return Err(format!(
            "refusing the temporary folder {}: expected one only you can write, or one with the sticky bit \
             (like /tmp, mode 1777), found mode {:o}: another user could put a library of theirs where \
             hotreload loads its copies; set TMPDIR to a folder of your own",
            base.display(),
            mode & 0o7777
        ));
    }
    Ok(())
}

/// Removes the private folders of this user's servers that are gone;
/// returns how many. Never follows a symlink, never touches another user's
/// folder, and leaves a folder whose owner file is still locked.
fn reap_abandoned(base: &Path) -> usize {
    let Ok(entries) = fs::read_dir(base) else {
        return 0;
    };
    // SAFETY: `geteuid` has no preconditions.
    let me = unsafe { libc::geteuid() };
    let mut reaped = 0;
    for entry in entries.flatten() {
        let name = entry.file_name();
        if !name.to_string_lossy().starts_with(PREFIX) {
            continue;
        }
        let path = entry.path();
        let Ok(meta) = fs::symlink_metadata(&path) else {
            continue;
        };
        if !meta.is_dir() || meta.uid() != me {
            continue;
        }
        if abandoned(&path) && fs::remove_dir_all(&path).is_ok() {
            reaped += 1;
        }
    }
    reaped
}

fn abandoned(dir: &Path) -> bool {
    match OpenOptions::new().read(true).open(dir.join(OWNER_FILE)) {
        // Taken: its server is gone (the lock dies with the process).
        Ok(owner) => match Flock::lock(owner, FlockArg::LockExclusiveNonblock) {
            Ok(_) => true,
            Err((_, Errno::EWOULDBLOCK)) => false,
            Err(_) => false,
        },
        // A folder from before owner files: abandoned once it is old.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let newest = fs::read_dir(dir)
                .into_iter()
                .flatten()
                .flatten()
                .filter_map(|e| e.metadata().ok()?.modified().ok())
                .chain(fs::metadata(dir).ok().and_then(|m| m.modified().ok()))
                .max();
            newest.is_some_and(|t| {
                SystemTime::now()
                    .duration_since(t)
                    .is_ok_and(|age| age > LEGACY_AGE)
            })
        }
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    /// Servers starting at once each reap the others' folders they can
    /// lock: none may find a folder that is being made unlocked.
    #[test]
    fn folders_made_at_once_are_never_reaped_by_each_other() {
        let threads: Vec<_> = (0..4)
            .map(|_| {
                std::thread::spawn(|| {
                    for _ in 0..150 {
                        let dir = ShadowDir::create().expect("a private folder");
                        assert!(
                            dir.path().join(OWNER_FILE).is_file(),
                            "{} was reaped while it was made",
                            dir.path().display()
                        );
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("no folder lost");
        }
    }

    #[test]
    fn a_copy_made_ready_is_written_in_place_and_one_made_for_another_is_removed() {
        let shadow = ShadowDir::create().expect("create");
        shadow.make_ready(1, "logic.so");
        let ready = shadow.copy_path(1, "logic.so");
        let made = fs::metadata(&ready).expect("made ready, empty");
        assert_eq!((made.len(), made.mode() & 0o777), (0, 0o700));
        let copy = shadow.store(1, "logic.so", b"library").expect("store");
        assert_eq!(copy.path(), ready);
        assert_eq!(fs::read(copy.path()).expect("read"), b"library");
        assert_eq!(
            fs::metadata(&ready).expect("stat").ino(),
            made.ino(),
            "the same file"
        );

        // Made for copy 2, stored as copy 3 (a build that gave no file):
        // the unused one goes, and 3 is written as a new file.
        shadow.make_ready(2, "logic.so");
        let unused = shadow.copy_path(2, "logic.so");
        assert!(unused.exists());
        let third = shadow.store(3, "logic.so", b"third").expect("store");
        assert!(!unused.exists(), "a file made for another copy is removed");
        assert_eq!(fs::read(third.path()).expect("read"), b"third");
        // Asking twice for the same copy makes it once.
        shadow.make_ready(4, "logic.so");
        shadow.make_ready(4, "logic.so");
        drop(shadow.store(4, "logic.so", b"fourth").expect("store"));
        assert!(
            !shadow.copy_path(4, "logic.so").exists(),
            "removed with its guard"
        );
    }

    #[test]
    fn private_folder_unique_copies_removed_on_drop() {
        let shadow = ShadowDir::create().expect("create");
        let mode = fs::metadata(shadow.path()).expect("stat").mode() & 0o777;
        assert_eq!(mode, 0o700);
        let a = shadow.store(1, "logic.so", b"one").expect("store");
        assert!(
            shadow.store(1, "logic.so", b"two").is_err(),
            "never overwrites"
        );
        assert_eq!(fs::read(a.path()).expect("read"), b"one");
        let path = a.path().to_path_buf();
        drop(a);
        assert!(!path.exists());
        let dir = shadow.path().to_path_buf();
        drop(shadow);
        assert!(!dir.exists());
    }
}
