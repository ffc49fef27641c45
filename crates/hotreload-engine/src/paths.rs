//! Path helpers shared by the watcher, the build stage and the state file.

use std::io::Read;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// The folder a path lives in, `.` for a bare file name.
pub fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// The form in which paths are compared with watcher events: a folder is
/// canonicalized; for anything else the folder is canonicalized and the file
/// name appended as is. The file itself is not resolved because editors
/// replace it (a new inode under the same name) and because events name the
/// entry in its folder, not what a symlink points to. Works for files that do
/// not exist yet.
pub fn absolute(path: &Path) -> PathBuf {
    if path.is_dir()
        && let Ok(p) = path.canonicalize()
    {
        return p;
    }
    let parent = parent_dir(path);
    let parent = parent.canonicalize().unwrap_or_else(|_| {
        std::env::current_dir()
            .map(|cwd| cwd.join(&parent))
            .unwrap_or(parent)
    });
    match path.file_name() {
        Some(name) => parent.join(name),
        None => parent,
    }
}

/// Reads a whole regular file, at most `limit` bytes, without ever
/// blocking on what is not one: a FIFO put where a library or a state file
/// should be would block an ordinary `open` forever, and a symlink to
/// `/dev/zero` would be read without end. The file is opened non-blocking,
/// checked to be a regular file (symlinks are followed to what they name),
/// and read no further than the size it had when checked. The error says
/// what was expected and what was found.
pub fn read_regular_file(path: &Path, limit: u64) -> Result<Vec<u8>, std::io::Error> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)?;
    let meta = file.metadata()?;
    let kind = meta.file_type();
    if !kind.is_file() {
        let found = if kind.is_fifo() {
            "a FIFO"
        } else if kind.is_char_device() {
            "a character device"
        } else if kind.is_block_device() {
            "a block device"
        } else if kind.is_socket() {
            "a socket"
        } else if kind.is_dir() {
            "a folder"
        } else {
            "not a regular file"
        };
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("expected a regular file, found {found}"),
        ));
    }
    let size = meta.len();
    if size > limit {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("expected at most {limit} bytes, found a {size}-byte file"),
        ));
    }
    let mut bytes = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
    // A file that grows while it is read (a build still writing) is read
    // as far as it was when checked; the caller's checks see it as it is.
    file.take(size).read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// A path as a line shows it: relative to the current folder when inside it
/// (the folder the user started the server in), as it is otherwise.
pub fn shown(path: &Path) -> String {
    std::env::current_dir()
        .ok()
        .and_then(|cwd| path.strip_prefix(cwd).ok().map(Path::to_path_buf))
        .filter(|rel| !rel.as_os_str().is_empty())
        .unwrap_or_else(|| path.to_path_buf())
        .display()
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_regular_files_are_read_and_never_past_their_size() {
        let dir = tempfile::tempdir().expect("tempdir");
        let fifo = dir.path().join("fifo");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .expect("mkfifo");
        assert!(made.success());
        let err = read_regular_file(&fifo, 1 << 30).expect_err("a FIFO");
        assert!(err.to_string().contains("found a FIFO"), "{err}");
        let zero = dir.path().join("zero");
        std::os::unix::fs::symlink("/dev/zero", &zero).expect("symlink");
        let err = read_regular_file(&zero, 1 << 30).expect_err("a device");
        assert!(
            err.to_string().contains("found a character device"),
            "{err}"
        );
        let file = dir.path().join("f");
        std::fs::write(&file, b"12345").expect("write");
        assert_eq!(read_regular_file(&file, 5).expect("read"), b"12345");
        let err = read_regular_file(&file, 4).expect_err("too big");
        assert!(
            err.to_string()
                .contains("at most 4 bytes, found a 5-byte file"),
            "{err}"
        );
    }

    #[test]
    fn absolute_keeps_a_missing_file_name_under_its_canonical_folder() {
        let dir = tempfile::tempdir().expect("tempdir");
        let missing = dir.path().join("not-yet.c");
        let abs = absolute(&missing);
        assert_eq!(abs.file_name().and_then(|n| n.to_str()), Some("not-yet.c"));
        assert_eq!(
            abs.parent(),
            Some(dir.path().canonicalize().expect("canon").as_path())
        );
    }

    #[test]
    fn parent_of_a_bare_name_is_the_current_folder() {
        assert_eq!(parent_dir(Path::new("logic.c")), PathBuf::from("."));
    }
}
