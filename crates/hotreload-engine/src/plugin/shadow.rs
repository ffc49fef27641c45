//! Stage three: copy each build into a private folder before loading it.
//!
//! The build output is never opened in place. glibc hands back the library
//! already loaded when the same path is opened again; a compiler rewriting a
//! mapped library makes the host run half-new bytes; a truncated file mapped
//! by the loader raises SIGBUS. Each build is copied under a unique name into
//! a folder created exclusively with mode 0700 at a random path, so no other
//! user can plant a file or symlink there. The folder and its copies are
//! removed when the engine stops.

use std::fs::{self, OpenOptions, Permissions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use tempfile::TempDir;

pub struct ShadowDir {
    dir: TempDir,
}

impl ShadowDir {
    /// Creates the folder under `$TMPDIR` (or `/tmp`).
    pub fn create() -> Result<ShadowDir, String> {
        let base = std::env::temp_dir();
        let dir = tempfile::Builder::new()
            .prefix("hotreload-")
            .permissions(Permissions::from_mode(0o700))
            .tempdir_in(&base)
            .map_err(|e| {
                format!(
                    "cannot create a private folder for library copies in {}: {e}",
                    base.display()
                )
            })?;
        Ok(ShadowDir { dir })
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Writes `bytes` as a new file, failing rather than overwriting, and
    /// returns a guard that removes it when dropped.
    pub fn store(&self, serial: u64, lib_name: &str, bytes: &[u8]) -> Result<ShadowFile, String> {
        let path = self.dir.path().join(format!("{serial}-{lib_name}"));
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o700)
            .open(&path)
            .map_err(|e| format!("cannot create the library copy {}: {e}", path.display()))?;
        file.write_all(bytes)
            .map_err(|e| format!("cannot write the library copy {}: {e}", path.display()))?;
        Ok(ShadowFile { path, owned: true })
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

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
