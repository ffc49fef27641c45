//! What an embedded plugin says: one line per thing that happened, gave up
//! or was kept.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Notice {
    /// A version went live (`replaced` the one before it, if any).
    Loaded {
        version: u64,
        path: PathBuf,
        replaced: Option<u64>,
    },
    /// A library was refused; the running version stays.
    Refused { path: PathBuf, refusal: String },
    /// A call faulted or timed out on thread `tid`.
    Fault {
        version: u64,
        tid: i32,
        report: String,
    },
    /// A replaced version was closed: `since_replaced` after it stopped
    /// being current, and at most `since_last_left` after the last thread
    /// in it left (`None`: none was in it at the first look).
    Closed {
        version: u64,
        since_replaced: Duration,
        since_last_left: Option<Duration>,
    },
    /// A replaced version is still entered by a thread, past the patience
    /// set: it stays mapped for it. Said once per version.
    Stuck {
        version: u64,
        tid: i32,
        inside_at_least: Duration,
    },
    /// A replaced version is kept mapped for threads it started that still
    /// run its code.
    KeptForThreads {
        version: u64,
        tids: Vec<i32>,
        count: usize,
    },
    /// `dlclose` left a closed version mapped (a thread-local destructor,
    /// `-z nodelete`).
    StillMapped { version: u64, bytes: u64 },
    /// A library destructor faulted, or `dlclose` failed.
    CloseTrouble { version: u64, what: String },
    /// Versions left mapped when the plugin's last handle went.
    LeftMapped { version: u64, why: String },
    /// The expedited membarrier is not available.
    NoMembarrier(String),
    /// The writer's barrier failed: nothing retired is freed from now on.
    BarrierFailed(String),
    /// A call faulted in the current version `from`: the kept build of
    /// `to` was loaded again and published as `version`.
    RolledBack { from: u64, to: u64, version: u64 },
    /// Version `version`'s build could not be kept on disk: one build fewer
    /// to roll back to.
    NotKept { version: u64, why: String },
    /// A rollback from `from` could not be made; it stays current.
    RollbackFailed { from: u64, why: String },
    /// A call faulted in the current version and no earlier build is kept
    /// (`Options::keep_versions`): it stays current.
    NoRollback { version: u64 },
    /// Sources changed ([`super::rebuild`]): a build starts.
    ChangeDetected { paths: Vec<PathBuf> },
    /// The build succeeded in `took`; its library is loaded next.
    Built { took: Duration },
    /// The build failed; the running version stays.
    BuildFailed { status: String, first_line: String },
    /// Sources changed while the build ran: its library is not loaded, and
    /// another build follows.
    BuildStale { paths: Vec<PathBuf> },
    /// Something about watching the sources (a fallback to polling, a
    /// folder that cannot be watched, a lost event stream).
    Watch(String),
}

/// `a.c, b.h` (the file names), for lines.
fn names(paths: &[PathBuf]) -> String {
    let shown: Vec<String> = paths
        .iter()
        .take(5)
        .map(|p| {
            p.file_name().map_or_else(
                || p.display().to_string(),
                |n| n.to_string_lossy().into_owned(),
            )
        })
        .collect();
    match paths.len() {
        n if n > 5 => format!("{} and {} more", shown.join(", "), n - 5),
        _ => shown.join(", "),
    }
}

impl fmt::Display for Notice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Notice::Loaded {
                version,
                path,
                replaced: None,
            } => write!(f, "[reload] loaded {} (v{version})", path.display()),
            Notice::Loaded {
                version,
                path,
                replaced: Some(old),
            } => write!(
                f,
                "[reload] swapped {} (v{version}; calls already in v{old} finish there)",
                path.display()
            ),
            Notice::Refused { path, refusal } => write!(
                f,
                "[reload] refused {}: {refusal}; the running version stays",
                path.display()
            ),
            Notice::Fault {
                version,
                tid,
                report,
            } => write!(f, "[fault] v{version} thread {tid}: {report}"),
            Notice::Closed {
                version,
                since_replaced,
                since_last_left,
            } => {
                write!(
                    f,
                    "[reload] v{version} closed ({:.2} ms after it was replaced",
                    since_replaced.as_secs_f64() * 1e3
                )?;
                match since_last_left {
                    Some(d) => write!(
                        f,
                        ", at most {:.2} ms after the last thread in it left)",
                        d.as_secs_f64() * 1e3
                    ),
                    None => f.write_str(")"),
                }
            }
            Notice::Stuck {
                version,
                tid,
                inside_at_least,
            } => write!(
                f,
                "[reload] v{version} stays mapped: thread {tid} has been inside plugin code for at least {:.2} s (since before v{version} was replaced); nothing waits for it",
                inside_at_least.as_secs_f64()
            ),
            Notice::KeptForThreads {
                version,
                tids,
                count,
            } => {
                let ids: Vec<String> = tids.iter().map(|t| t.to_string()).collect();
                // A deleted thread timer's last thread has no id to give.
                let named = if ids.is_empty() {
                    String::new()
                } else {
                    format!(" (tid {})", ids.join(", "))
                };
                write!(
                    f,
                    "[reload] v{version} stays loaded: {count} thread{} it started still run{} its code{named}; closed once they end",
                    if *count == 1 { "" } else { "s" },
                    if *count == 1 { "s" } else { "" },
                )
            }
            Notice::StillMapped { version, bytes } => write!(
                f,
                "[reload] v{version} closed, but the loader kept {bytes} bytes of it mapped (a thread-local destructor, or -z nodelete)"
            ),
            Notice::CloseTrouble { version, what } => {
                write!(f, "[reload] closing v{version}: {what}")
            }
            Notice::LeftMapped { version, why } => {
                write!(f, "[reload] v{version} left mapped at exit: {why}")
            }
            Notice::NoMembarrier(why) => write!(f, "[embed] {why}"),
            Notice::BarrierFailed(why) => write!(
                f,
                "[embed] {why}; replaced versions are no longer closed (they stay mapped)"
            ),
            Notice::ChangeDetected { paths } => {
                write!(f, "[watch] change detected ({})", names(paths))
            }
            Notice::Built { took } => write!(f, "[build] success ({} ms)", took.as_millis()),
            Notice::BuildFailed { status, first_line } => write!(
                f,
                "[build] failed ({status}): {first_line}; the running version stays"
            ),
            Notice::BuildStale { paths } => write!(
                f,
                "[build] {} changed while the build ran: its library is not loaded; building again",
                names(paths)
            ),
            Notice::Watch(what) => write!(f, "[watch] {what}"),
            Notice::RolledBack { from, to, version } => write!(
                f,
                "[reload] rolled back from v{from} to v{to}'s build, loaded again as v{version} (calls already in v{from} finish there)"
            ),
            Notice::NotKept { version, why } => write!(
                f,
                "[reload] v{version}'s build is not kept to roll back to: {why}"
            ),
            Notice::RollbackFailed { from, why } => write!(
                f,
                "[reload] cannot roll back from v{from}: {why}; v{from} stays current"
            ),
            Notice::NoRollback { version } => write!(
                f,
                "[reload] no earlier build kept to roll back to: v{version} stays current"
            ),
        }
    }
}

/// Where a plugin's notices go.
#[derive(Clone)]
pub struct Notices(Arc<dyn Fn(&Notice) + Send + Sync>);

impl Notices {
    /// Each notice as one line on the host's stderr, one write each.
    pub fn stderr() -> Notices {
        Notices(Arc::new(|notice: &Notice| {
            use std::io::Write;
            let line = format!("{notice}\n");
            let mut err = crate::console::host_stderr();
            let _ = err.write_all(line.as_bytes());
        }))
    }

    /// Each notice to `f` (on the thread where it happens).
    pub fn to(f: impl Fn(&Notice) + Send + Sync + 'static) -> Notices {
        Notices(Arc::new(f))
    }

    pub fn say(&self, notice: &Notice) {
        (self.0)(notice)
    }
}
