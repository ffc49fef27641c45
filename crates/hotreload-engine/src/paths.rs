//! Path helpers shared by the watcher and the build stage.

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
