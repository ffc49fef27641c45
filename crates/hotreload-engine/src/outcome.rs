//! How a reload attempt ended, and the exit code each ending maps to.
//!
//! The process exit code is the outcome of the last reload attempt, so that a
//! script running `hotreload --reloads 1` can tell a compile error from an ABI
//! mismatch without parsing output. Every code is documented in the README and
//! in `hotreload --help`; they never change meaning once published.

use std::fmt;

/// Exit codes. `0`, `9` and `10` are fixed by the product's first transcript;
/// the others number on from there.
pub mod exit_code {
    /// The last reload succeeded, or none was attempted.
    pub const SUCCESS: i32 = 0;
    /// The host could not start (a watch or the shadow folder failed).
    pub const HOST_ERROR: i32 = 1;
    /// Bad command-line flag or value (clap's convention).
    pub const USAGE: i32 = 2;
    /// The build command failed.
    pub const BUILD_FAILED: i32 = 9;
    /// `api_version` or `state_size` differ from the host's, or the first
    /// version's `state_size` cannot be allocated.
    pub const ABI_MISMATCH: i32 = 10;
    /// The build output is not a loadable shared library for this machine
    /// (missing, not ELF, wrong architecture, truncated, malformed where the
    /// loader would read it, or refused by dlopen).
    pub const NOT_LOADABLE: i32 = 11;
    /// The library loads but does not export `logic_get_api`.
    pub const MISSING_ENTRY_POINT: i32 = 12;
    /// `logic_get_api` returned NULL, or a table with a NULL function pointer.
    pub const INCOMPLETE_API: i32 = 13;
    /// Plugin code crashed, aborted or hung (in the host, in a trial run, or
    /// in `shutdown` at exit); the host recovered.
    pub const FAULT: i32 = 14;
    /// The state file exists but cannot be used (corrupt, truncated, not a
    /// state file, a newer format); it was left untouched.
    pub const STATE_FILE: i32 = 15;
    /// The state could not be saved to the state file at exit (after
    /// retries): the file holds an older state, or none.
    pub const STATE_NOT_SAVED: i32 = 16;
    /// The server stopped before any version was ever loaded (the first
    /// build was still running), so no code ran on any state.
    pub const NOTHING_LOADED: i32 = 17;
    /// Another live server answers on this folder's control socket (or the
    /// one `--control` names); nothing was started.
    pub const CONTROL_TAKEN: i32 = 18;
}

/// Why a built library was not swapped in. Each variant's message says what
/// was expected and what was found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Rejection {
    /// Not a shared object this host can map: the message says what it is.
    NotLoadable(String),
    /// No `logic_get_api` among the library's exports.
    MissingEntryPoint(String),
    /// `api_version` differs from the host's.
    ApiVersion { expected: i32, found: i32 },
    /// `state_size` differs from the size of the state the host owns.
    StateSize { expected: usize, found: usize },
    /// The state's layout or version changed and cannot be carried over
    /// (no layout for one side and no hook, or a lossy type change).
    StateChange(String),
    /// The first version asks for more state than can be allocated.
    StateUnallocatable { size: usize, why: String },
    /// `logic_get_api` returned NULL.
    NullTable,
    /// A required function pointer is NULL; the names of the missing ones.
    NullFunctions(Vec<&'static str>),
    /// A library built with the `hotreload-plugin` crate that this host
    /// cannot use: another version of that crate's ABI, or a layout hash
    /// that does not match the schema it hands over.
    PluginCrate(String),
    /// Plugin code faulted before the version went live (`logic_get_api`, a
    /// trial tick), or the build is the one that faulted last time.
    Faulted(String),
}

impl Rejection {
    pub fn exit_code(&self) -> i32 {
        match self {
            Rejection::NotLoadable(_) => exit_code::NOT_LOADABLE,
            Rejection::MissingEntryPoint(_) => exit_code::MISSING_ENTRY_POINT,
            Rejection::ApiVersion { .. }
            | Rejection::StateSize { .. }
            | Rejection::StateChange(_)
            | Rejection::StateUnallocatable { .. }
            | Rejection::PluginCrate(_) => exit_code::ABI_MISMATCH,
            Rejection::NullTable | Rejection::NullFunctions(_) => exit_code::INCOMPLETE_API,
            Rejection::Faulted(_) => exit_code::FAULT,
        }
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rejection::NotLoadable(why) => write!(f, "not a loadable library: {why}"),
            Rejection::MissingEntryPoint(why) => f.write_str(why),
            Rejection::ApiVersion { expected, found } => {
                write!(
                    f,
                    "api_version mismatch: expected {expected}, found {found}"
                )
            }
            Rejection::StateSize { expected, found } => write!(
                f,
                "state_size mismatch: expected {expected} bytes (the state the host owns), found {found}; \
                 keep the state's layout, or restart hotreload to start over with the new one"
            ),
            Rejection::StateChange(why) => write!(f, "cannot carry the state over: {why}"),
            Rejection::StateUnallocatable { size, why } => write!(
                f,
                "state_size: expected a size this host can allocate, found {size} bytes ({why})"
            ),
            Rejection::Faulted(what) | Rejection::PluginCrate(what) => f.write_str(what),
            Rejection::NullTable => {
                f.write_str("logic_get_api returned NULL: expected a pointer to a logic_api_t")
            }
            Rejection::NullFunctions(names) => write!(
                f,
                "incomplete logic_api_t: expected non-NULL init, tick and shutdown, found NULL {}",
                names.join(", ")
            ),
        }
    }
}

/// Why an engine could not start, and the exit code that says so.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StartError {
    pub code: i32,
    pub message: String,
}

impl From<String> for StartError {
    fn from(message: String) -> StartError {
        StartError {
            code: exit_code::HOST_ERROR,
            message,
        }
    }
}

impl fmt::Display for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for StartError {}

/// The outcome of one attempt, as recorded for the exit code.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Swapped,
    /// A live version faulted (and was rolled back, or ticking paused).
    Faulted,
    BuildFailed,
    Rejected(Rejection),
}

impl Outcome {
    pub fn exit_code(&self) -> i32 {
        match self {
            Outcome::Swapped => exit_code::SUCCESS,
            Outcome::Faulted => exit_code::FAULT,
            Outcome::BuildFailed => exit_code::BUILD_FAILED,
            Outcome::Rejected(r) => r.exit_code(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_rejection_has_its_documented_code() {
        let cases = [
            (Rejection::NotLoadable("x".into()), 11),
            (Rejection::MissingEntryPoint("x".into()), 12),
            (
                Rejection::ApiVersion {
                    expected: 1,
                    found: 2,
                },
                10,
            ),
            (
                Rejection::StateSize {
                    expected: 4,
                    found: 8,
                },
                10,
            ),
            (
                Rejection::StateUnallocatable {
                    size: usize::MAX,
                    why: "too large".into(),
                },
                10,
            ),
            (Rejection::NullTable, 13),
            (Rejection::Faulted("x".into()), 14),
            (Rejection::NullFunctions(vec!["tick"]), 13),
        ];
        for (rejection, code) in cases {
            assert_eq!(rejection.exit_code(), code, "{rejection}");
        }
        assert_eq!(Outcome::BuildFailed.exit_code(), 9);
        assert_eq!(Outcome::Swapped.exit_code(), 0);
    }

    #[test]
    fn messages_name_expected_and_found() {
        let msg = Rejection::StateSize {
            expected: 4,
            found: 8,
        }
        .to_string();
        assert!(
            msg.contains("expected 4") && msg.contains("found 8"),
            "{msg}"
        );
        let msg = Rejection::NullFunctions(vec!["tick"]).to_string();
        assert!(msg.contains("found NULL tick"), "{msg}");
    }
}
