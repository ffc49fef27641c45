//! The process-wide settings the server relies on, as they were when it
//! started, and putting them back when plugin code changed them.
//!
//! In-process plugin code shares the server's process: its `umask(0777)`
//! makes every private library copy unreadable, a lowered `RLIMIT_NOFILE`
//! or `RLIMIT_NPROC` stops every build, a lowered `RLIMIT_FSIZE` kills the
//! server at its next save, a `chdir` moves every relative path of the
//! server, and a `close(1)` hands the number of standard output to the next
//! file the server opens, where the plugin's `printf` then lands. None of
//! these go through a call the guard can refuse at the time (interposing
//! them would refuse plugins their own legitimate use inside a call), so
//! [`settle`] compares them with the [`capture`]d baseline at the points
//! where the server depends on them (before a build, after code of a new or
//! retired version ran, about once a second while ticking) and puts back
//! what differs, saying what it found. The environment is not put back:
//! plugin code may keep using what it set; the server's children get the
//! environment it started with (see [`environment`]).

use std::ffi::{CString, OsString};
use std::os::unix::ffi::OsStringExt;
use std::sync::OnceLock;

/// The limits whose lowering breaks the server, with their names.
const LIMITS: &[(libc::__rlimit_resource_t, &str, &str)] = &[
    (libc::RLIMIT_NOFILE, "RLIMIT_NOFILE", "open descriptors"),
    (libc::RLIMIT_NPROC, "RLIMIT_NPROC", "processes"),
    (libc::RLIMIT_AS, "RLIMIT_AS", "address space"),
    (libc::RLIMIT_FSIZE, "RLIMIT_FSIZE", "file size"),
    (libc::RLIMIT_DATA, "RLIMIT_DATA", "data size"),
    (libc::RLIMIT_STACK, "RLIMIT_STACK", "stack size"),
];

struct Baseline {
    umask: libc::mode_t,
    limits: Vec<libc::rlimit>,
    /// The working folder, as a path (to say it) and as a C string (to go
    /// back to it without allocating).
    cwd: Option<(String, CString)>,
    /// The standard descriptors that were open.
    std_open: [bool; 3],
    environment: Vec<(OsString, OsString)>,
}

static BASELINE: OnceLock<Baseline> = OnceLock::new();

/// Drifts that could not be put back, said once: they would be found again
/// at every check (a lowered hard limit; a working folder that is gone).
static SAID_UNRESTORED: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

/// One setting plugin code changed, and what was done about it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Drift {
    /// What it was and what was found, for a line: `the umask (0777, the
    /// server's is 0022)`.
    pub what: String,
    /// Whether the server's value is back.
    pub restored: bool,
}

/// Records the baseline, once per process (later calls keep the first).
/// Called when the crash guard is installed, before any plugin code runs.
pub fn capture() {
    BASELINE.get_or_init(|| {
        // SAFETY: umask only sets and returns the process's mask; it is put
        // straight back.
        let umask = unsafe {
            let m = libc::umask(0o022);
            libc::umask(m);
            m
        };
        let limits = LIMITS.iter().map(|&(r, _, _)| get_limit(r)).collect();
        let cwd = std::env::current_dir().ok().and_then(|p| {
            let text = p.display().to_string();
            CString::new(p.into_os_string().into_vec())
                .ok()
                .map(|c| (text, c))
        });
        Baseline {
            umask,
            limits,
            cwd,
            std_open: [0, 1, 2].map(is_open),
            environment: std::env::vars_os().collect(),
        }
    });
}

/// The environment the server started with: what its builds, probes and
/// workers get, whatever plugin code did to the process's own since (a
/// changed `PATH`, or an entry `putenv` left pointing into a library that
/// is unmapped by now, which `execve` would fault on).
pub fn environment() -> Vec<(OsString, OsString)> {
    match BASELINE.get() {
        Some(b) => b.environment.clone(),
        None => std::env::vars_os().collect(),
    }
}

fn get_limit(resource: libc::__rlimit_resource_t) -> libc::rlimit {
    let mut limit = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: getrlimit writes one rlimit into `limit`.
    unsafe { libc::getrlimit(resource, &mut limit) };
    limit
}

fn is_open(fd: libc::c_int) -> bool {
    // SAFETY: F_GETFD only reads the descriptor's flags.
    unsafe { libc::fcntl(fd, libc::F_GETFD) != -1 }
}

fn show_limit(value: libc::rlim_t) -> String {
    if value == libc::RLIM_INFINITY {
        "unlimited".into()
    } else {
        value.to_string()
    }
}

const STD_NAMES: [&str; 3] = ["standard input", "standard output", "standard error"];

/// Compares the process's settings with the baseline and puts back what
/// differs; what it found. Cheap when nothing changed: about a dozen
/// system calls.
pub fn settle() -> Vec<Drift> {
    let Some(base) = BASELINE.get() else {
        return Vec::new();
    };
    let mut found = Vec::new();
    // SAFETY: as in `capture`; the server's mask is what is left set.
    let umask = unsafe { libc::umask(base.umask) };
    if umask != base.umask {
        found.push(Drift {
            what: format!(
                "the umask ({umask:04o}; the server's is {:04o})",
                base.umask
            ),
            restored: true,
        });
    }
    for (&(resource, name, meaning), was) in LIMITS.iter().zip(&base.limits) {
        let now = get_limit(resource);
        if now.rlim_cur == was.rlim_cur && now.rlim_max == was.rlim_max {
            continue;
        }
        // A soft limit can go back up to the hard one; a lowered hard limit
        // cannot be raised again by an unprivileged process.
        let wanted = libc::rlimit {
            rlim_cur: was.rlim_cur.min(now.rlim_max),
            rlim_max: now.rlim_max,
        };
        // SAFETY: setrlimit reads one rlimit.
        let set = unsafe { libc::setrlimit(resource, &wanted) } == 0;
        let restored = set && wanted.rlim_cur == was.rlim_cur;
        found.push(Drift {
            what: format!(
                "{name} ({meaning}: soft {}, hard {}; the server's was soft {}, hard {}){}",
                show_limit(now.rlim_cur),
                show_limit(now.rlim_max),
                show_limit(was.rlim_cur),
                show_limit(was.rlim_max),
                if restored || now.rlim_max >= was.rlim_cur {
                    ""
                } else {
                    "; the hard limit cannot be raised again, so the soft one stays lowered"
                }
            ),
            restored,
        });
    }
    if let Some((text, path)) = &base.cwd {
        // A folder removed and made again (a fresh checkout) counts as
        // changed too: going back to its path is what the server's relative
        // paths need.
        let now = std::env::current_dir().ok();
        if now
            .as_ref()
            .is_none_or(|p| p.as_os_str().as_encoded_bytes() != path.as_bytes())
        {
            // SAFETY: `path` is a NUL-terminated string.
            let restored = unsafe { libc::chdir(path.as_ptr()) } == 0;
            found.push(Drift {
                what: format!(
                    "the working folder ({}; the server's is {text}, which its relative paths need)",
                    now.map_or("gone".into(), |p| p.display().to_string())
                ),
                restored,
            });
        }
    }
    found.retain(|d| {
        if d.restored {
            return true;
        }
        let Ok(mut said) = SAID_UNRESTORED.lock() else {
            return true;
        };
        // The kind of drift (up to its first parenthesis), not its values.
        let kind = d.what.split(" (").next().unwrap_or(&d.what).to_owned();
        if said.contains(&kind) {
            return false;
        }
        said.push(kind);
        true
    });
    for fd in 0..3 {
        if !base.std_open[fd as usize] || is_open(fd) {
            continue;
        }
        // Put /dev/null in its place, so that the next file the server
        // opens does not take the number (and plugin output with it).
        let restored = reopen_null(fd);
        found.push(Drift {
            what: format!(
                "descriptor {fd} ({}) closed; /dev/null is in its place, so no file of the server's takes its number",
                STD_NAMES[fd as usize]
            ),
            restored,
        });
    }
    found
}

fn reopen_null(fd: libc::c_int) -> bool {
    // SAFETY: opens /dev/null; the path is a NUL-terminated literal.
    let null = unsafe { libc::open(c"/dev/null".as_ptr(), libc::O_RDWR) };
    if null < 0 {
        return false;
    }
    if null == fd {
        return true;
    }
    // SAFETY: dup2 onto a descriptor that is closed (checked above); the
    // temporary one is closed after.
    let done = unsafe { libc::dup2(null, fd) } == fd;
    // SAFETY: `null` is the descriptor opened above, not used after.
    unsafe { libc::close(null) };
    done
}
