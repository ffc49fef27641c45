//! The command line: flags, their documentation, and their translation into an
//! engine [`Config`]. Every flag is documented in `--help`; a bad flag or value
//! exits with code 2.

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Parser, ValueEnum};
use hotreload_engine::{Config, WatchMode};

const EXIT_CODES: &str = "\
A running server is driven with `hotreload ctl COMMAND` (status, pause, step,
set, rollback, events, ...; see `hotreload ctl --help`).

Exit codes (the outcome of the last reload attempt):
  0   success
  1   the host could not start (a watch or the private copy folder failed)
  2   bad command-line flag or value
  9   the build command failed
  10  ABI mismatch: api_version or state_size differ from the host's (or cannot be allocated),
      or the state cannot be carried to the new version's layout (see --reset-field)
  11  not a loadable library: missing, not ELF, wrong machine, truncated, malformed
      where the loader would read it, or refused by dlopen
  12  the library does not export logic_get_api
  13  logic_get_api returned NULL, or init, tick or shutdown is NULL
  14  plugin code crashed, aborted or hung (the host recovered)
  15  the state file cannot be used: corrupt, truncated, not a state file, of a
      newer format (left untouched; --fresh-state starts over), its folder
      cannot be written, or another server holds it
  16  the state could not be saved at exit (the line before says where it went)
  17  stopped before any version was loaded
  18  another live server answers on this folder's control socket (see --control)
  130 a second Ctrl-C while stopping: exited without waiting for plugin code

Signals:
  SIGINT, SIGTERM, SIGHUP  stop: finish the tick, call shutdown, save the state, exit
  second SIGINT            exit at once, saving the last completed tick's state
  SIGUSR1                  rebuild and reload now, as if a source had changed
  SIGUSR2                  print the state now

Example:
  hotreload --watch logic.c --build \"cc -shared -fPIC -o logic.so logic.c\"";

#[derive(Parser, Debug)]
#[command(
    name = "hotreload",
    version,
    about = "Watch a plugin's sources, rebuild on change, and swap the new library into a running tick loop without losing its state.",
    after_help = EXIT_CODES
)]
pub struct Args {
    /// File or folder to watch (repeatable). A folder is watched recursively,
    /// ignoring editor temp files, build outputs, .git/, target/, build
    /// trees (a folder holding CMakeCache.txt) and what its .gitignore and
    /// .ignore files list. It may not exist yet; it is watched as a file or
    /// a folder when it appears, and again when it is deleted and made anew.
    #[arg(long, value_name = "PATH", required_unless_present = "replay")]
    pub watch: Vec<PathBuf>,

    /// Shell command that builds the library, run with `sh -c` in the current
    /// folder at start and after every change.
    #[arg(
        long,
        value_name = "CMD",
        required_unless_present = "replay",
        default_value = ""
    )]
    pub build: String,

    /// Run the ticks a recording holds (`hotreload ctl record`) again with
    /// the library `--lib`, in a throwaway process, say at which tick and in
    /// which field the result first differs from the recorded run (exit
    /// code 1) or that nothing does (0), and exit. Nothing is watched or
    /// built.
    #[arg(long, value_name = "FILE", requires = "lib")]
    pub replay: Option<PathBuf>,

    /// The library the build writes. If omitted, taken from `-o FILE` in the
    /// build command.
    #[arg(long, value_name = "PATH")]
    pub lib: Option<PathBuf>,

    /// Seconds a build may run before it is killed, with everything it
    /// started, and counted as failed; 0 lets builds run for ever.
    #[arg(long, value_name = "SECONDS", default_value_t = 600)]
    pub build_timeout: u64,

    /// Milliseconds between ticks; plugins get dt = tick-ms / 1000.
    #[arg(long, value_name = "N", default_value_t = 100, value_parser = at_least_one)]
    pub tick_ms: u64,

    /// Seed for deterministic plugins (delivered to plugin code by the
    /// extended ABI).
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub seed: u64,

    /// How changes are noticed: inotify (kernel events) or poll (stat every
    /// --poll-ms, comparing nanosecond mtime, size and inode).
    #[arg(long, value_name = "MODE", value_enum, default_value_t = ModeArg::Inotify)]
    pub watch_mode: ModeArg,

    /// Shorthand for --watch-mode poll.
    #[arg(long)]
    pub poll: bool,

    /// Poll interval in milliseconds.
    #[arg(long, value_name = "N", default_value_t = 250, value_parser = at_least_one)]
    pub poll_ms: u64,

    /// Quiet period in milliseconds: a build starts once the sources have
    /// been still this long. Every editor's save sequence fits well inside
    /// the default. The full period: after a complete save the adaptive
    /// settle (--settle-ms) waits less, never longer than this.
    #[arg(long, value_name = "N", default_value_t = 20)]
    pub debounce_ms: u64,

    /// Adaptive quiet period, in milliseconds: after a save that completed
    /// (closed after writing, or renamed into place) with no watched file
    /// still open for writing or gone, a build starts once the sources have
    /// been still this long instead of --debounce-ms (longer while saves
    /// keep coming, never longer than --debounce-ms). 0 turns it off: always
    /// --debounce-ms. Inotify only.
    #[arg(long, value_name = "N", default_value_t = 8)]
    pub settle_ms: u64,

    /// Build ahead, in milliseconds: a change that waits the settle
    /// (--settle-ms) starts its build once the sources have been still this
    /// long, so that the build and its trial run while the settle passes.
    /// The result is used only once the settle has passed; a change before
    /// that stops the build, and the change then waits and builds as usual.
    /// 0, or not shorter than --settle-ms, turns it off.
    #[arg(long, value_name = "N", default_value_t = 2)]
    pub build_ahead_ms: u64,

    /// Pattern to ignore inside watched folders (repeatable): a gitignore
    /// glob on the path below the watched folder, such as `build/`,
    /// `**/gen/**` or `*.log`. A name without `/` matches at any depth;
    /// `!GLOB` keeps what other rules would ignore.
    #[arg(long, value_name = "GLOB")]
    pub ignore: Vec<String>,

    /// Milliseconds a plugin call (init, tick, shutdown) may run before it is
    /// interrupted and handled as a fault [default: 10 ticks, at least 1000].
    #[arg(long, value_name = "N", value_parser = at_least_one)]
    pub tick_timeout_ms: Option<u64>,

    /// Good versions kept loaded, the running one included, to roll back to
    /// when a newer one faults.
    #[arg(long, value_name = "N", default_value_t = 5, value_parser = keep_versions_range)]
    pub keep_versions: u64,

    /// Good versions whose library stays on disk, in the private folder,
    /// for `hotreload ctl rollback`: the newest N, loaded or not. One no
    /// longer loaded is loaded again from its copy. 0 keeps none.
    #[arg(long, value_name = "N", default_value_t = 20, value_parser = keep_on_disk_range)]
    pub keep_on_disk: u64,

    /// Ticks of the state's past kept for `hotreload ctl rewind`, `replay`
    /// and `loop`: what each tick changed, page by page. 0 keeps none.
    #[arg(long, value_name = "N", default_value_t = 1000, value_parser = history_range)]
    pub history_ticks: u64,

    /// The most memory the history may take, in MiB; past it the oldest
    /// ticks go first (said once, and `ctl status` shows what is kept).
    #[arg(long, value_name = "MIB", default_value_t = 64, value_parser = history_mb_range)]
    pub history_mb: u64,

    /// Ticks a new build runs in a throwaway process, on a copy of the
    /// state, before it is loaded (its constructors, logic_get_api, init or
    /// on_reload, describe, on_unload and shutdown run there first too); 0
    /// calls none of its functions there, for plugins with side effects, but
    /// still loads it there first.
    #[arg(long, value_name = "N", default_value_t = 3)]
    pub trial_ticks: u64,

    /// Run no probe process at all: a new build is loaded straight into the
    /// server, whose crash guard runs its constructors and `logic_get_api`.
    /// For plugins whose constructors must not run twice. (`--trial-ticks 0`
    /// still loads each build once in a probe first.)
    #[arg(long, conflicts_with = "trial_ticks")]
    pub no_probe: bool,

    /// Run plugin code only in worker processes, never in the server: a
    /// plugin that ends its process (a raw _exit system call, SIGKILL, a
    /// corrupted heap) costs a worker and a rollback, not the session. The
    /// state lives in memory the server shares with the worker; a call costs
    /// a few microseconds instead of a few nanoseconds.
    #[arg(long)]
    pub isolate: bool,

    /// The control socket to listen on (`hotreload ctl` drives the server
    /// through it). By default a socket named after this folder in
    /// $XDG_RUNTIME_DIR/hotreload (or /tmp/hotreload-UID), so `hotreload
    /// ctl` run in the same folder finds it.
    #[arg(long, value_name = "PATH", conflicts_with = "no_control")]
    pub control: Option<std::path::PathBuf>,

    /// Listen on no control socket.
    #[arg(long)]
    pub no_control: bool,

    /// How events are printed: `text`, tagged lines; `json`, one JSON
    /// object per event, as the control socket sends them (then plugin
    /// output goes to standard error, so standard output stays JSON).
    #[arg(long, value_name = "FORMAT", default_value = "text", value_parser = ["text", "json"])]
    pub events: String,

    /// The state's type in the plugin's debug info (built with -g), when it
    /// is not `state_t` or the only struct of the state's size. A type in a
    /// Rust module or C++ namespace matches by its plain name (`State`) or
    /// by its path (`game::State`, `mycrate::game::State`).
    #[arg(long, value_name = "NAME")]
    pub state_type: Option<String>,

    /// A field that a migration cannot carry (its new type cannot hold its
    /// values, or a value does not fit a narrower type at the swap) starts
    /// at zero in the new version instead of the version being refused
    /// (repeatable; `*` and `?` wildcards, `enemies[*].hp`; `enemies` names
    /// every field inside it). A field that can be carried is carried.
    #[arg(long, value_name = "NAME")]
    pub reset_field: Vec<String>,

    /// Show these fields whole in [state] lines, every array element
    /// included, instead of the compact line (repeatable; `*` and `?`
    /// wildcards: `'*'` for all, `'enemies[*].hp'`, `grid`).
    #[arg(long, value_name = "PATTERN")]
    pub state_fields: Vec<String>,

    /// Print the state every N ticks (besides at start, after every reload
    /// and at exit).
    #[arg(long, value_name = "N", value_parser = at_least_one)]
    pub state_every: Option<u64>,

    /// Save the state to PATH at exit (and every --save-every ticks), and
    /// restore it from there at start, migrating it if the layout changed.
    #[arg(long, value_name = "PATH")]
    pub state_file: Option<PathBuf>,

    /// Also save the state every N ticks (needs --state-file).
    #[arg(long, value_name = "N", value_parser = at_least_one)]
    pub save_every: Option<u64>,

    /// Do not restore --state-file: start with a fresh state and overwrite
    /// the file at the next save.
    #[arg(long)]
    pub fresh_state: bool,

    /// Let other servers use the same --state-file. By default the file is
    /// locked while this server runs and a second server on it is refused
    /// (each would overwrite the other's state at every save).
    #[arg(long)]
    pub no_state_lock: bool,

    /// Stop after N ticks.
    #[arg(long, value_name = "N", value_parser = at_least_one)]
    pub ticks: Option<u64>,

    /// Stop after N reload attempts (the start-up build does not count); the
    /// exit code is the last attempt's outcome.
    #[arg(long, value_name = "N", value_parser = at_least_one)]
    pub reloads: Option<u64>,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum ModeArg {
    Inotify,
    Poll,
}

impl Args {
    /// The engine configuration these flags describe, or why they describe
    /// none.
    pub fn to_config(&self) -> Result<Config, String> {
        let lib = match &self.lib {
            Some(lib) => lib.clone(),
            None => library_from_build_command(&self.build).ok_or_else(|| {
                format!(
                    "cannot tell which library `{}` builds: expected `-o FILE` in the build command, found none; pass --lib PATH",
                    self.build
                )
            })?,
        };
        let mut config = Config::new(self.watch.clone(), self.build.clone(), lib);
        config.build_timeout =
            (self.build_timeout > 0).then(|| Duration::from_secs(self.build_timeout));
        config.tick_period = Duration::from_millis(self.tick_ms);
        config.seed = self.seed;
        config.watch_mode = match (self.poll, self.watch_mode) {
            (true, _) | (false, ModeArg::Poll) => WatchMode::Poll,
            (false, ModeArg::Inotify) => WatchMode::Inotify,
        };
        config.poll_interval = Duration::from_millis(self.poll_ms);
        config.debounce = Duration::from_millis(self.debounce_ms);
        config.settle = Duration::from_millis(self.settle_ms);
        config.build_ahead = Duration::from_millis(self.build_ahead_ms);
        config.ignore = self.ignore.clone();
        config.call_timeout = self.tick_timeout_ms.map(Duration::from_millis);
        config.keep_versions = self.keep_versions as usize;
        config.keep_on_disk = self.keep_on_disk as usize;
        config.history = hotreload_engine::state::history::Bound {
            ticks: self.history_ticks as usize,
            bytes: (self.history_mb as usize) << 20,
        };
        config.trial_ticks = self.trial_ticks;
        config.probe = !self.no_probe;
        config.isolate = self.isolate;
        config.state_type = self.state_type.clone();
        config.reset_fields = self.reset_field.clone();
        config.state_fields = self.state_fields.clone();
        config.state_every = self.state_every;
        config.state_file = self.state_file.clone();
        config.save_every = self.save_every;
        config.fresh_state = self.fresh_state;
        config.state_lock = !self.no_state_lock;
        config.max_ticks = self.ticks;
        config.max_reloads = self.reloads;
        config.validate()?;
        Ok(config)
    }
}

/// A whole number of at least 1: a count, a period or an interval.
fn at_least_one(text: &str) -> Result<u64, String> {
    whole_number_in(text, 1, u64::MAX)
}

fn keep_versions_range(text: &str) -> Result<u64, String> {
    whole_number_in(text, 1, 999)
}

fn history_range(text: &str) -> Result<u64, String> {
    whole_number_in(text, 0, 10_000_000)
}

fn history_mb_range(text: &str) -> Result<u64, String> {
    whole_number_in(text, 1, 1 << 20)
}

fn keep_on_disk_range(text: &str) -> Result<u64, String> {
    whole_number_in(text, 0, 10_000)
}

/// Says what was expected in words (clap's own range error prints
/// `0 is not in 1..18446744073709551615`).
fn whole_number_in(text: &str, min: u64, max: u64) -> Result<u64, String> {
    let expected = if max == u64::MAX {
        format!("a whole number of at least {min}")
    } else {
        format!("a whole number from {min} to {max}")
    };
    match text.trim().parse::<u64>() {
        Ok(n) if (min..=max).contains(&n) => Ok(n),
        Ok(n) => Err(format!("expected {expected}, found {n}")),
        Err(_) => Err(format!("expected {expected}, found {text:?}")),
    }
}

/// The file after the last `-o` (or `-oFILE`) in a shell command, with simple
/// quoting undone. Good enough for compiler command lines; anything more
/// involved (make, cargo, scripts) needs `--lib`.
pub fn library_from_build_command(command: &str) -> Option<PathBuf> {
    let words = shell_words(command);
    let mut found = None;
    for (i, word) in words.iter().enumerate() {
        if word == "-o" {
            found = words.get(i + 1).cloned();
        } else if let Some(rest) = word.strip_prefix("-o")
            && !rest.is_empty()
            && !rest.starts_with('-')
        {
            found = Some(rest.to_owned());
        }
    }
    found
        .filter(|f| !f.is_empty())
        .map(|f| Path::new(&f).to_path_buf())
}

/// Splits a command line the way `sh` would for plain words, single and
/// double quotes, and backslash escapes; other shell syntax is kept as text.
fn shell_words(command: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = command.chars();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                in_word = true;
                word.extend(chars.by_ref().take_while(|&c| c != '\''));
            }
            '"' => {
                in_word = true;
                while let Some(c) = chars.next() {
                    match c {
                        '"' => break,
                        '\\' => word.extend(chars.next()),
                        c => word.push(c),
                    }
                }
            }
            '\\' => {
                in_word = true;
                word.extend(chars.next());
            }
            c if c.is_whitespace() || c == ';' || c == '&' || c == '|' => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            c => {
                in_word = true;
                word.push(c);
            }
        }
    }
    if in_word {
        words.push(word);
    }
    words
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn library_is_found_after_dash_o() {
        let lib = |cmd| library_from_build_command(cmd).map(|p| p.display().to_string());
        assert_eq!(
            lib("cc -shared -fPIC -o logic.so logic.c").as_deref(),
            Some("logic.so")
        );
        assert_eq!(
            lib("cc -shared -ologic.so logic.c").as_deref(),
            Some("logic.so")
        );
        assert_eq!(
            lib("cc -o 'my lib.so' -shared x.c").as_deref(),
            Some("my lib.so")
        );
        assert_eq!(
            lib("cc -c -o x.o x.c && cc -shared -o out/liblogic.so x.o").as_deref(),
            Some("out/liblogic.so")
        );
        assert_eq!(lib("make"), None);
        assert_eq!(lib("cc -o"), None);
    }
}
