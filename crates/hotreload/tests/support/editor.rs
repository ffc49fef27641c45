//! Saving a file the way real editors and tools do. Each function leaves
//! `path` holding `content`; what differs is the sequence of file-system
//! operations, which is what a watcher sees.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.file_name().expect("file name").to_os_string();
    name.push(suffix);
    path.with_file_name(name)
}

/// Truncate and write the same inode (VS Code, nano, `echo >`).
pub fn in_place(path: &Path, content: &str) {
    let mut f = fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(path)
        .expect("open in place");
    f.write_all(content.as_bytes()).expect("write");
    f.sync_all().expect("sync");
}

/// Write a temporary file, then rename it over the original (sed -i, many
/// editors' atomic save, git checkout of a single file).
pub fn rename_over(path: &Path, content: &str) {
    let tmp = path.with_file_name("sedAb12xZ");
    fs::write(&tmp, content).expect("write temp");
    fs::rename(&tmp, path).expect("rename over");
}

/// vim with `backupcopy=no`: probe file 4913, rename the original to
/// `file~`, write a new file, delete the backup.
pub fn vim_backup_rename(path: &Path, content: &str) {
    let probe = path.with_file_name("4913");
    fs::write(&probe, "").expect("probe");
    fs::remove_file(&probe).expect("remove probe");
    let backup = sibling(path, "~");
    fs::rename(path, &backup).expect("rename to backup");
    fs::write(path, content).expect("write new");
    fs::remove_file(&backup).expect("remove backup");
}

/// JetBrains "safe write": write `file___jb_tmp___`, rename the original to
/// `file___jb_old___`, rename the temp into place, delete the old one.
pub fn jetbrains_safe_write(path: &Path, content: &str) {
    let tmp = sibling(path, "___jb_tmp___");
    let old = sibling(path, "___jb_old___");
    fs::write(&tmp, content).expect("write tmp");
    fs::rename(path, &old).expect("rename to old");
    fs::rename(&tmp, path).expect("rename tmp into place");
    fs::remove_file(&old).expect("remove old");
}

/// Delete, then create anew (git checkout switching branches, some tools).
pub fn delete_and_recreate(path: &Path, content: &str) {
    fs::remove_file(path).expect("delete");
    fs::write(path, content).expect("re-create");
}

pub type Save = fn(&Path, &str);

/// Every pattern, by name.
pub const ALL: &[(&str, Save)] = &[
    ("in place", in_place),
    ("rename over", rename_over),
    ("vim backup rename", vim_backup_rename),
    ("JetBrains safe write", jetbrains_safe_write),
    ("delete and re-create", delete_and_recreate),
];
