//! Cells of the matrix known not to be clean, and why: a limit the README
//! documents (the behaviour's `limit`), or a bug that has a focused test
//! in `tests/hostile_found.rs`, or a limit that is not documented yet.
//! Everything else must be clean: a cell outside this list that is not
//! fails the matrix. A known cell that comes out clean is said, so the
//! list can shrink as the engine is fixed. None of it excuses the isolated
//! mode, whose target is every cell clean: plugin code in a worker process
//! can take down only the worker.

use super::cell::{Cell, Mode};
use crate::support::hostile::{Kind, Place};

/// Cells that match: every list that is empty matches all.
pub struct Known {
    pub behaviours: &'static [&'static str],
    pub places: &'static [Place],
    pub modes: &'static [Mode],
    /// Behaviours of this kind only, if set.
    pub kind: Option<Kind>,
    pub why: &'static str,
}

const fn all(behaviours: &'static [&'static str], why: &'static str) -> Known {
    Known {
        behaviours,
        places: &[],
        modes: &[],
        kind: None,
        why,
    }
}

const IN_THE_SERVER: &[Mode] = &[Mode::LoadProbe, Mode::NoProbe];

pub const KNOWN: &[Known] = &[
    Known {
        behaviours: &[],
        places: &[Place::OnReload],
        modes: IN_THE_SERVER,
        kind: Some(Kind::Ends),
        why: "bug: a fault in on_reload restores the snapshot from before the last tick, losing it \
              (a_fault_in_on_reload_keeps_the_state_the_swap_had)",
    },
    all(
        &["mask-raw"],
        "bug: a mask set with the raw rt_sigprocmask outlives the call; the next fault is fatal (a_mask_changed_with_the_raw_system_call_is_put_back)",
    ),
    all(
        &["sigaltstack-off"],
        "bug: sigaltstack(SS_DISABLE) outlives the call; the next stack overflow is fatal (a_disabled_alternate_signal_stack_is_put_back)",
    ),
    Known {
        behaviours: &["sigaction-raw"],
        places: &[Place::Destructor],
        modes: &[],
        kind: None,
        why: "bug: a handler replaced with the raw rt_sigaction in a destructor is not put back before the next fault \
              (a_handler_replaced_by_a_destructor_is_put_back_before_the_next_fault)",
    },
    Known {
        behaviours: &[
            "mask-block-segv",
            "mask-unblock-all",
            "signal-dfl",
            "sigchld-ign",
        ],
        places: &[Place::Constructor, Place::Destructor],
        modes: &[],
        kind: None,
        why: "bug: a mask change or a refused handler change in a constructor or destructor makes every later one \
              \"fault\" with signal 0 (a_handler_change_refused_in_a_constructor_does_not_refuse_later_builds)",
    },
    all(
        &["timer-signal"],
        "bug: a POSIX timer is not stopped, so every later version is blamed for its SIGALRM and ticking pauses; the state saved while paused has no layout (a_posix_timer_is_stopped_with_the_version_that_armed_it, a_state_saved_while_ticking_is_paused_restores)",
    ),
    all(
        &["timer-thread"],
        "bug: a POSIX timer's thread calls into its library after it was unmapped (a_posix_timer_thread_never_calls_into_an_unmapped_version)",
    ),
    all(
        &["thread-segv"],
        "bug: a crash on a thread plugin code started spins for ever in the crash guard's handler, silently (a_crash_in_a_thread_plugin_code_started_is_said_and_does_not_spin)",
    ),
    Known {
        behaviours: &["thread"],
        places: &[Place::Destructor],
        modes: &[],
        kind: None,
        why: "bug: a thread started by a destructor is not seen; its library is unmapped under it and it spins \
              (a_thread_started_by_a_destructor_keeps_its_version_mapped)",
    },
    all(
        &["fork"],
        "bug: the child of a fork without exec runs the host's tick loop: a second server printing lines and outliving the first (a_fork_without_exec_leaves_no_second_server)",
    ),
    all(
        &["exec"],
        "bug: exec replaces the host; exec is not interposed as exit is (exec_in_plugin_code_is_a_fault_of_its_version)",
    ),
    all(
        &["stack-smash"],
        "bug: the plugin stack has no inaccessible page above its top; a smash that runs past it can hit a malloc arena (the_plugin_stack_has_an_inaccessible_page_above_its_top_too)",
    ),
    all(
        &["close-1"],
        "bug: the host's next file takes descriptor 1, and the plugin's printf lands in it (a private library copy was found holding plugin output) (a_descriptor_plugin_code_closes_is_taken_by_nothing_of_the_hosts)",
    ),
    all(
        &["close-fds"],
        "bug: the server's own descriptors closed: it goes silent or dies, without a line (closing_the_servers_descriptors_is_said)",
    ),
    all(
        &["rlimit-nofile", "rlimit-as", "rlimit-nproc"],
        "bug: a lowered soft limit outlives the call; no build, probe or thread can start again and no line names it (a_lowered_descriptor_limit_does_not_stop_builds, a_lowered_process_limit_does_not_stop_builds)",
    ),
    all(
        &["rlimit-fsize"],
        "bug: SIGXFSZ at the next save kills the host (a_lowered_file_size_limit_does_not_kill_the_host_at_the_next_save)",
    ),
    all(
        &["chdir"],
        "bug: the server's relative paths move with the plugin's chdir: builds unreadable, the state saved nowhere (a_chdir_in_plugin_code_does_not_move_the_server)",
    ),
    all(
        &["umask"],
        "bug: the plugin's umask applies to the host's copies and to builds: mode 000, unreadable (a_umask_in_plugin_code_does_not_refuse_later_builds)",
    ),
    all(
        &["setenv-path"],
        "bug: builds run with the PATH plugin code set (a_changed_path_does_not_stop_builds)",
    ),
    all(
        &["putenv-literal"],
        "bug: the environment keeps a pointer into a retired library; spawning a build then fails with EFAULT (an_environment_entry_into_a_retired_library_does_not_stop_builds)",
    ),
    all(
        &["sigstop"],
        "not a documented limit yet: SIGSTOP can be neither caught nor blocked; the in-process host stops with the plugin (a probe that stops is a hang, and is said)",
    ),
];

impl Known {
    fn matches(&self, cell: &Cell) -> bool {
        (self.behaviours.is_empty() || self.behaviours.contains(&cell.behaviour.name))
            && (self.places.is_empty() || self.places.contains(&cell.place))
            && (self.modes.is_empty() || self.modes.contains(&cell.mode))
            && self.kind.is_none_or(|k| k == cell.behaviour.kind)
    }
}

/// Why `cell` may be other than clean, if it may.
pub fn why(cell: &Cell) -> Option<&'static str> {
    if cell.mode == Mode::Isolated {
        return None;
    }
    if let Some(limit) = cell.behaviour.limit {
        return Some(limit);
    }
    KNOWN.iter().find(|k| k.matches(cell)).map(|k| k.why)
}
