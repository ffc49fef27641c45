//! Where a server's control socket is, so that `hotreload ctl` run in the
//! same folder finds it without being told.
//!
//! The socket lives in a folder private to the user: `$XDG_RUNTIME_DIR/
//! hotreload` when that is set (a per-user tmpfs on systemd machines), else
//! `/tmp/hotreload-UID`; the server creates it with mode 0700 and refuses
//! one that is not the user's own or that others can enter. The socket's
//! name is a hash of the server's working folder, as an absolute path with
//! symlinks resolved: two servers in two folders never meet, and a client
//! in the same folder (reached by any path) finds its server.

use std::path::{Path, PathBuf};

/// The folder control sockets of this user live in.
pub fn runtime_folder() -> PathBuf {
    match std::env::var_os("XDG_RUNTIME_DIR") {
        Some(dir) if !dir.is_empty() && Path::new(&dir).is_absolute() => {
            PathBuf::from(dir).join("hotreload")
        }
        _ => PathBuf::from(format!("/tmp/hotreload-{}", effective_uid())),
    }
}

/// This process's effective user id.
pub fn effective_uid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// The socket of a server started in `folder`.
pub fn socket_path(folder: &Path) -> PathBuf {
    let resolved = folder
        .canonicalize()
        .unwrap_or_else(|_| folder.to_path_buf());
    runtime_folder().join(format!(
        "{:016x}.sock",
        fnv1a(resolved.as_os_str().as_encoded_bytes())
    ))
}

/// FNV-1a, 64 bits: stable across builds and machines, which a path's
/// name must be (`std`'s hasher is not).
fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash = 0xcbf2_9ce4_8422_2325_u64;
    for &b in bytes {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_folder_one_socket_by_any_path() {
        let dir = std::env::temp_dir();
        let a = socket_path(&dir);
        let b = socket_path(&dir.join("."));
        assert_eq!(a, b);
        assert_ne!(a, socket_path(Path::new("/")));
        assert!(a.starts_with(runtime_folder()));
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
    }
}
