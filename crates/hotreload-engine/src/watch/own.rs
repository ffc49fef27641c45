//! Paths the server itself writes: never sources, whatever the rules say.
//!
//! A state file saved every tick inside `--watch .` would otherwise start a
//! build on every save, and so would its temporary files. Whoever adds a file
//! the server writes (the state file, its lock, the private copy folder, a
//! control socket) registers it here, in [`crate::engine`], and every backend
//! and the build stage leave it alone.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::paths;

#[derive(Clone, Debug, Default)]
pub struct OwnFiles {
    files: Vec<PathBuf>,
    /// A folder and a name prefix: every entry of the folder whose name
    /// starts with it.
    prefixed: Vec<(PathBuf, OsString)>,
    folders: Vec<PathBuf>,
}

impl OwnFiles {
    pub fn new() -> OwnFiles {
        OwnFiles::default()
    }

    /// One file the server writes.
    pub fn file(&mut self, path: &Path) -> &mut OwnFiles {
        self.files.push(paths::absolute(path));
        self
    }

    /// A file the server writes and its companions beside it: every entry
    /// of its folder named `.<name>.…` (the temporary files a save writes
    /// before renaming, `.<name>.tmp-…`, and a lock, `.<name>.lock`).
    pub fn file_and_companions(&mut self, path: &Path) -> &mut OwnFiles {
        let abs = paths::absolute(path);
        if let Some(name) = abs.file_name() {
            let mut prefix = OsString::from(".");
            prefix.push(name);
            prefix.push(".");
            self.prefixed.push((paths::parent_dir(&abs), prefix));
        }
        self.files.push(abs);
        self
    }

    /// A folder the server owns, with everything in it.
    pub fn folder(&mut self, path: &Path) -> &mut OwnFiles {
        self.folders.push(paths::absolute(path));
        self
    }

    /// Whether `path` (in [`paths::absolute`] form) is one of the server's.
    pub fn contains(&self, path: &Path) -> bool {
        self.files.iter().any(|f| f == path)
            || self.folders.iter().any(|d| path.starts_with(d))
            || self.prefixed.iter().any(|(dir, prefix)| {
                path.parent() == Some(dir.as_path())
                    && path
                        .file_name()
                        .is_some_and(|name| starts_with(name, prefix))
            })
    }
}

fn starts_with(name: &OsStr, prefix: &OsStr) -> bool {
    name.as_bytes().starts_with(prefix.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_state_file_its_temporaries_and_its_lock_are_the_servers() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().canonicalize().expect("canon");
        let mut own = OwnFiles::new();
        own.file_and_companions(&root.join("st.bin"))
            .folder(&root.join("shadow"));
        for ours in [
            "st.bin",
            ".st.bin.tmp-123-4",
            ".st.bin.lock",
            "shadow/v1.so",
        ] {
            assert!(own.contains(&root.join(ours)), "{ours}");
        }
        for theirs in ["st.bin2", ".st.bin", "st.binx", "sub/st.bin", "logic.c"] {
            assert!(!own.contains(&root.join(theirs)), "{theirs}");
        }
    }
}
