//! Events as log lines: one event per line, tagged by stage (`[watch]`,
//! `[build]`, `[reload]`, `[state]`, `[tick]`, `[exit]`). A build's full output
//! follows its `[build] failed` line, each line indented with `  | `.

use std::path::{Path, PathBuf};
use std::time::Duration;

use hotreload_engine::event::{FaultReport, Recovery, StateMoment, StateReport};
use hotreload_engine::guard::signal_name;
use hotreload_engine::{Event, StopReason};

pub struct Renderer {
    /// Paths are shown relative to the folder the server runs in.
    cwd: PathBuf,
    /// Some version ran: "none loaded yet" would be wrong after that.
    ever_loaded: std::sync::atomic::AtomicBool,
}

impl Renderer {
    pub fn new() -> Renderer {
        Renderer {
            cwd: std::env::current_dir().unwrap_or_default(),
            ever_loaded: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// What runs when no version does: nothing yet (`yet`), or nothing any
    /// more.
    fn none_running(&self, yet: &'static str) -> &'static str {
        if self.ever_loaded.load(std::sync::atomic::Ordering::Relaxed) {
            "no version running (the last one faulted)"
        } else {
            yet
        }
    }

    /// The text for one event, possibly several lines, each ending in `\n`;
    /// empty for events that are not shown.
    pub fn render(&self, event: &Event) -> String {
        if matches!(event, Event::Swapped(..)) {
            self.ever_loaded
                .store(true, std::sync::atomic::Ordering::Relaxed);
        }
        match event {
            Event::Running { .. } => "[server] running\n".into(),
            Event::ServerNotice(text) => format!("[server] {text}\n"),
            Event::RebuildRequested => "[watch] rebuild requested; building now\n".into(),
            Event::WatchNotice(text) => format!("[watch] {text}\n"),
            Event::ChangeDetected { paths, rescan } => {
                if *rescan {
                    "[watch] change detected (events may have been missed; assuming every file changed)\n".into()
                } else {
                    format!("[watch] change detected ({})\n", self.list(paths))
                }
            }
            Event::BuildSkipped { paths } => {
                format!(
                    "[watch] {} unchanged since the last build was asked for (same mtime, size and \
                     inode); build skipped\n",
                    self.list(paths)
                )
            }
            Event::BuildStarted { .. } | Event::FirstTick { .. } => String::new(),
            Event::BuildSucceeded { duration, output } => {
                // Warnings are worth seeing; the rest of a successful build's
                // chatter ("Compiling ...") is not.
                if output.to_ascii_lowercase().contains("warning") {
                    let mut out = format!("[build] success ({}) with warnings:\n", ms(*duration));
                    indent(&mut out, output);
                    out
                } else {
                    format!("[build] success ({})\n", ms(*duration))
                }
            }
            Event::Unchanged { version } => {
                format!("[reload] the build is byte for byte the running v{version}; nothing to swap\n")
            }
            Event::SwapSkipped { version, by } => format!(
                "[reload] v{version} skipped: v{by} was ready before v{version}'s swap could be installed; v{by} goes live instead\n"
            ),
            Event::BuildFailed(failure) => {
                let mut out = format!("[build] failed: {}\n", failure.first_error);
                indent(&mut out, &failure.output);
                out.push_str(&format!(
                    "[build] {} after {}\n",
                    failure.status,
                    ms(failure.duration)
                ));
                out.push_str(&match failure.keeping {
                    Some(v) => format!("[reload] rejected, keeping old plugin (v{v}); waiting for the next change\n"),
                    None => format!("[reload] rejected, {}; waiting for the next change\n", self.none_running("no plugin loaded yet")),
                });
                out
            }
            Event::BuildCancelled { ran } => format!(
                "[build] a source changed while the build had run {}: stopping it (SIGTERM, then SIGKILL) to build again\n",
                ms(*ran)
            ),
            Event::BuildSuperseded { paths } if paths.is_empty() => {
                "[build] a rebuild was asked for during the build; discarding its output and building again\n".into()
            }
            Event::BuildSuperseded { paths } => format!(
                "[build] a source changed during the build ({}); discarding its output and building again\n",
                self.list(paths)
            ),
            Event::WrittenByBuild { paths, builds, ignore_pattern } => {
                let (them, make) = if paths.len() == 1 { ("it", "it") } else { ("them", "that") };
                let permanent = match ignore_pattern {
                    Some(pattern) => format!("--ignore '{pattern}' or a line in .gitignore"),
                    None => "--ignore or .gitignore".to_owned(),
                };
                format!(
                    "[watch] {} changed during each of the last {builds} builds, which were discarded for it; treating {them} as written by the build and ignoring {them} from now on (to make {make} permanent: {permanent})\n",
                    self.collapse(paths)
                )
            }
            Event::KeptDiscarding { paths, builds } => format!(
                "[watch] the last {builds} builds were all discarded because files changed while they ran, different ones each time ({}); if the build writes them, --ignore them or list them in .gitignore\n",
                self.collapse(paths)
            ),
            Event::Swapped(swap) if swap.first_load => format!(
                "[reload] loaded {} (api={}, v{}{})\n",
                swap.lib_name,
                swap.api_version,
                swap.version,
                worker(swap.worker_pid)
            ),
            Event::Swapped(swap) => format!(
                "[reload] swapped {} (api={}, v{}, {} after the build{}{})\n",
                swap.lib_name,
                swap.api_version,
                swap.version,
                ms(swap.since_build_exit),
                worker(swap.worker_pid),
                swap.migrated.as_ref().map(|m| format!("; migrated: {m}")).unwrap_or_default()
            ),
            Event::Rejected { reason, keeping, detail } => {
                let mut out = match keeping {
                    Some(v) => format!("[reload] rejected: {reason} (keeping v{v})\n"),
                    None => format!(
                        "[reload] rejected: {reason} ({})\n",
                        self.none_running("no version running yet")
                    ),
                };
                indent(&mut out, detail);
                out
            }
            Event::TrialsOff(why) => format!("[reload] {why}\n"),
            Event::State(report) => format!("[state] {}\n", state(report)),
            Event::Fault(report) => format!("[fault] {}\n", fault(report)),
            Event::PluginLog(text) => format!("[plugin] {text}\n"),
            Event::LayoutNotice(text) => format!("[state] {text}\n"),
            Event::StateSaved { path, tick } => {
                format!("[state] saved to {} at tick {tick}\n", self.show(path))
            }
            Event::Dangling { version, offset, field } => format!(
                "[state] warning: {} points into v{version}'s library: it dangles once v{version} is unloaded (keep an index or a copy in the state, not a pointer)\n",
                match field {
                    Some(name) => format!("field {name} (offset {offset})"),
                    None => format!("the word at offset {offset}"),
                }
            ),
            Event::StaticData { version, symbols } => {
                let list: Vec<String> = symbols.iter().take(6).map(|(n, size)| format!("{n} ({size} bytes)")).collect();
                let more = if symbols.len() > 6 { format!(" and {} more", symbols.len() - 6) } else { String::new() };
                format!(
                    "[reload] warning: v{version} keeps writable static data ({}{more}): it starts afresh on every reload; keep what must survive in the state\n",
                    list.join(", ")
                )
            }
            Event::StayedMapped { version, lib, bytes, pinned, pinned_bytes } => format!(
                    "[reload] v{version} of {} is still mapped after dlclose ({}; a thread-local destructor, such as a Rust panic leaves, or -z nodelete keeps it); {} stayed so far, {} in all\n",
                    self.show(lib),
                    megabytes(*bytes),
                    plural(*pinned as u64, "retired version"),
                    megabytes(*pinned_bytes),
            ),
            Event::PinnedWarning { pinned, pinned_bytes } => format!(
                "[reload] warning: {pinned} retired versions hold {} that only a restart of hotreload gives back; restart it when convenient (--state-file keeps the state across it)\n",
                megabytes(*pinned_bytes)
            ),
            Event::KeptForThreads { version, tids, count } => format!(
                "[reload] v{version} stays loaded: {} it started still {} its code ({}); unmapping that code would kill the host; it is closed once {} ended\n",
                plural(*count as u64, "thread"),
                if *count == 1 { "runs" } else { "run" },
                tids.iter().map(|t| if *t == 0 { "starting".to_owned() } else { format!("tid {t}") }).collect::<Vec<_>>().join(", "),
                if *count == 1 { "it has" } else { "they have" },
            ),
            Event::PinnedAtExit { pinned, pinned_bytes } => format!(
                "[reload] {} stayed mapped until exit ({})\n",
                plural(*pinned as u64, "retired version"),
                megabytes(*pinned_bytes)
            ),
            Event::WorkerStopped { version, pid } => format!(
                "[guard] v{version}'s worker (pid {pid}) is stopped in the middle of a call (a debugger at a breakpoint, or SIGSTOP); the call waits for it to go on (kill -CONT {pid}), and ticking waits with it\n"
            ),
            Event::ProcessStateRepaired { version, call, repair } => {
                let mut out = String::new();
                if repair.mask_restored || repair.mask_calls > 0 {
                    out.push_str(&format!(
                        "[guard] v{version} changed the signal mask in {call}; the host's mask is put back after every call (a blocked signal would make a fault or Ctrl-C fatal)\n"
                    ));
                }
                for fd in &repair.std_closed {
                    out.push_str(&format!(
                        "[guard] v{version} closed descriptor {fd} ({}) in {call}; /dev/null stands in for it, so that no file of the server's takes its number (what the plugin writes there goes nowhere)\n",
                        ["standard input", "standard output", "standard error"][*fd as usize]
                    ));
                }
                if repair.altstack_restored {
                    out.push_str(&format!(
                        "[guard] v{version} disabled or replaced the alternate signal stack in {call}; the host's is put back (without it a stack overflow would be fatal)\n"
                    ));
                }
                if !repair.refused.is_empty() {
                    let names: Vec<String> = repair.refused.iter().map(|s| signal_name(*s)).collect();
                    out.push_str(&format!(
                        "[guard] v{version} tried to change how {} {} handled in {call}; refused: the crash guard and the server rely on {}\n",
                        names.join(", "),
                        if names.len() == 1 { "is" } else { "are" },
                        if names.len() == 1 { "it" } else { "them" },
                    ));
                }
                out
            }
            Event::ProcessDrift { version, during, drift } => {
                let who = match version {
                    Some(v) => format!("v{v}"),
                    None => "plugin code".to_owned(),
                };
                drift
                    .iter()
                    .map(|d| {
                        format!(
                            "[guard] {who} changed {} ({during}); {}\n",
                            d.what,
                            if d.restored {
                                "the server's is put back"
                            } else {
                                "it could not be put back"
                            }
                        )
                    })
                    .collect()
            }
            Event::Rewound {
                from,
                to,
                version,
                looping: None,
            } => format!(
                "[history] rewound from tick {from} to tick {to}{}; paused\n",
                version.map_or(String::new(), |v| format!(" (v{v} runs)"))
            ),
            Event::Rewound {
                from,
                to,
                version,
                looping: Some(pass),
            } => format!(
                "[loop] tick {from} reached the end of ticks {}..{}: back to tick {to}, pass {}{}\n",
                pass.from,
                pass.to,
                pass.pass,
                version.map_or(String::new(), |v| format!(" with v{v}"))
            ),
            Event::LoopSet {
                window: Some((from, to)),
                ..
            } => format!(
                "[loop] looping ticks {from}..{to}: at tick {to} the state goes back to tick {from} (ctl loop off stops)\n"
            ),
            Event::LoopSet { window: None, .. } => "[loop] stopped\n".to_owned(),
            Event::Replayed(r) => format!(
                "[replay] {}\n",
                hotreload_engine::pipeline::replay::describe(r)
            ),
            Event::RolledBackOnRequest {
                from,
                to,
                tick,
                carried,
                reloaded,
                from_kept,
                from_faulted,
                on_request,
            } => format!(
                "[reload] rolled back from v{from} to v{to} {}{}, after tick {tick}{}; {}\n",
                if *on_request {
                    "on request".to_owned()
                } else {
                    format!("to take over after v{from}'s fault")
                },
                if *reloaded {
                    " (loaded again from its kept copy)"
                } else {
                    ""
                },
                carried.as_ref().map_or(String::new(), |c| format!(", state carried: {c}")),
                if *from_faulted {
                    format!("the state is the one restored when v{from} faulted")
                } else if *from_kept {
                    format!("v{from} stays loaded (`rollback v{from}` brings it back)")
                } else {
                    format!("v{from} unloaded (beyond --keep-versions); `hotreload ctl versions` shows what is kept on disk")
                }
            ),
            Event::FieldSet {
                path,
                old,
                new,
                tick,
                undone,
            } => format!(
                "[state] {} {path}: {old} -> {new} (after tick {tick})\n",
                if *undone { "undid the set of" } else { "set" }
            ),
            Event::Paused {
                tick,
                running: true,
            } => format!(
                "[tick] paused after tick {tick}; `hotreload ctl resume` goes on, `hotreload ctl step N` runs N ticks\n"
            ),
            Event::Paused {
                tick,
                running: false,
            } => format!(
                "[tick] paused after tick {tick}; no version runs now: the next one to go live starts paused\n"
            ),
            Event::Resumed { tick } => format!(
                "[tick] resumed after tick {tick}; deadlines start again from now\n"
            ),
            Event::Stepped { ticks, tick } => format!(
                "[tick] stepped {}; paused after tick {tick}\n",
                plural(*ticks, "tick")
            ),
            Event::KeptWorkerDied { version, pid, cause } => format!(
                "[guard] v{version}'s worker (pid {pid}), kept for a rollback, ended: {cause}; v{version} is given up, and the processes of its worker are ended with it\n"
            ),
            Event::WorkerStoppedAtExit { version, pid } => format!(
                "[guard] the server is stopping while v{version}'s worker (pid {pid}) is stopped mid-call; it is ended, as a hung one would be\n"
            ),
            Event::PluginThreadStopped {
                tid,
                version,
                cause,
                exited,
            } => {
                let what = if *exited {
                    format!("{cause}; only that thread ended, not the server")
                } else {
                    format!("crashed: {cause}; that thread is stopped for good (its code stays mapped)")
                };
                match version {
                    Some(v) => format!(
                        "[guard] a thread v{v} started (tid {tid}) {what}, and v{v} is treated as faulted\n"
                    ),
                    None => format!(
                        "[guard] a thread plugin code started (tid {tid}) {what}; the running version is not blamed\n"
                    ),
                }
            }
            Event::HandlersReasserted { signals } => {
                let names: Vec<String> = signals.iter().map(|s| signal_name(*s)).collect();
                format!(
                    "[guard] the crash guard's handler for {} had been replaced (plugin code went around its interposers); it is back\n",
                    names.join(", ")
                )
            }
            Event::Stalled { behind, skipped } => {
                format!("[tick] fell {} behind; skipped {skipped} ticks\n", ms(*behind))
            }
            Event::TickStats(s) => format!(
                "[tick] {} in {} (period {}; latest start {} after its deadline; {} skipped)\n",
                plural(s.ticks, "tick"),
                ms(s.elapsed),
                ms(s.period),
                ms(s.max_late),
                s.skipped
            ),
            Event::Stopping { reason } => format!(
                "[server] stopping ({}): finishing the tick in progress, then shutdown and the final save{}\n",
                match reason {
                    StopReason::Signal(n) => signal_name(*n),
                    StopReason::Requested => "requested".to_owned(),
                },
                if matches!(reason, StopReason::Signal(libc::SIGINT)) {
                    "; Ctrl-C again to exit at once (the last completed tick's state is still saved)"
                } else {
                    ""
                }
            ),
            Event::SaveRecovered { path, tick } => format!(
                "[state] saved to {} again at tick {tick}, after failed saves\n",
                self.show(path)
            ),
            Event::SaveFailed { path, why, at_exit: false, .. } => format!(
                "[state] cannot save the state to {}: {why}; trying again at the next save and at exit\n",
                self.show(path)
            ),
            Event::SaveFailed { path, why, at_exit: true, rescued_to } => format!(
                "[state] cannot save the state to {} at exit (tried 3 times): {why}; {}\n",
                self.show(path),
                match rescued_to {
                    Some(rescue) => format!(
                        "saved it to {} instead (copy it over {} to restore it next time)",
                        self.show(rescue),
                        self.show(path)
                    ),
                    None => "it could not be written anywhere else either: this session's state is lost".to_owned(),
                }
            ),
            Event::Exited { code } => format!("[exit] code={code} ({})\n", exit_reason(*code)),
        }
    }

    fn show(&self, path: &Path) -> String {
        path.strip_prefix(&self.cwd)
            .unwrap_or(path)
            .display()
            .to_string()
    }

    /// Many paths as the folder they share and a count
    /// (`build/CMakeFiles/… (37 files)`); a few, or ones that share no
    /// folder below the current one, as a list.
    fn collapse(&self, paths: &[PathBuf]) -> String {
        const LISTED: usize = 3;
        let shared = paths.first().and_then(|first| {
            first
                .ancestors()
                .skip(1)
                .find(|dir| paths.iter().all(|p| p.starts_with(dir)))
        });
        match shared.map(|dir| self.show(dir)) {
            Some(dir) if paths.len() > LISTED && !dir.is_empty() && !dir.starts_with('/') => {
                format!("{dir}/… ({} files)", paths.len())
            }
            _ => self.list(paths),
        }
    }

    fn list(&self, paths: &[PathBuf]) -> String {
        const SHOWN: usize = 3;
        let mut names: Vec<String> = paths.iter().take(SHOWN).map(|p| self.show(p)).collect();
        if paths.len() > SHOWN {
            names.push(format!("and {} more", paths.len() - SHOWN));
        }
        names.join(", ")
    }
}

/// Appends `text` as detail lines: indented and marked, so that nothing in
/// it can pass for a line of the host's or a live tick's.
fn indent(out: &mut String, text: &str) {
    for line in text.lines() {
        out.push_str("  | ");
        out.push_str(line);
        out.push('\n');
    }
}

/// `4.1 MB`, `72 KB`.
fn megabytes(bytes: u64) -> String {
    if bytes >= 1_000_000 {
        format!("{:.1} MB", bytes as f64 / 1e6)
    } else {
        format!("{} KB", bytes.div_ceil(1000))
    }
}

fn plural(n: u64, what: &str) -> String {
    if n == 1 {
        format!("1 {what}")
    } else {
        format!("{n} {what}s")
    }
}

/// Why the exit code is what it is: the last reload attempt's outcome.
fn exit_reason(code: i32) -> &'static str {
    use hotreload_engine::exit_code as c;
    match code {
        c::SUCCESS => "the last reload succeeded, or none was attempted",
        c::BUILD_FAILED => "the last build failed",
        c::ABI_MISMATCH => "the last build was refused: ABI mismatch",
        c::NOT_LOADABLE => "the last build was refused: not a loadable library",
        c::MISSING_ENTRY_POINT => "the last build was refused: no logic_get_api",
        c::INCOMPLETE_API => "the last build was refused: incomplete logic_api_t",
        c::FAULT => "plugin code faulted last",
        c::STATE_FILE => "the state file could not be used",
        c::STATE_NOT_SAVED => "the state could not be saved to the state file",
        c::NOTHING_LOADED => "stopped before any version was loaded",
        _ => "the host could not run",
    }
}

fn fault(r: &FaultReport) -> String {
    let place = r
        .symbol
        .as_ref()
        .map(|s| format!(" in {s}"))
        .unwrap_or_default();
    let restored = |tick: &Option<u64>| match tick {
        Some(t) => format!("state restored to tick {t}"),
        None => "state unchanged".to_owned(),
    };
    let recovery = match &r.recovery {
        Recovery::RolledBack {
            to,
            restored_to_tick,
            carried_back,
        } => {
            let carried = carried_back
                .as_ref()
                .map(|c| format!(" and carried back to v{to}'s layout ({c})"))
                .unwrap_or_default();
            format!(
                "rolled back to v{to}, {}{carried}",
                restored(restored_to_tick)
            )
        }
        Recovery::Paused {
            restored_to_tick,
            cannot_roll_back: None,
            from_disk: None,
        } => format!(
            "no earlier version to roll back to: ticking paused until the next good build, {}",
            restored(restored_to_tick)
        ),
        Recovery::Paused {
            restored_to_tick,
            cannot_roll_back: None,
            from_disk: Some(kept),
        } => format!(
            "no earlier version loaded: v{kept} is loaded again from its kept copy to take over, {}",
            restored(restored_to_tick)
        ),
        Recovery::Paused {
            restored_to_tick,
            cannot_roll_back: Some((version, why)),
            from_disk,
        } => format!(
            "v{version} cannot take the state back ({why}): {}, {}",
            from_disk.map_or(
                "ticking paused until the next good build".to_owned(),
                |kept| { format!("v{kept} is loaded again from its kept copy to try instead") }
            ),
            restored(restored_to_tick)
        ),
        Recovery::Exiting {
            restored_to_tick: Some(t),
        } => format!("state restored to tick {t}, as before shutdown; exiting as planned"),
        Recovery::Exiting {
            restored_to_tick: None,
        } => "exiting as planned".to_owned(),
        Recovery::SwapWentAhead => "the swap went ahead".to_owned(),
        Recovery::DescribeOff => format!(
            "describe is not called again for v{}; the state is shown by field",
            r.version
        ),
        Recovery::Refused { keeping: Some(v) } => {
            format!("not swapped in; v{v} keeps running on its state")
        }
        Recovery::Refused { keeping: None } => "not swapped in".to_owned(),
        Recovery::Unloaded => {
            "its other destructors were skipped, and it was unloaded anyway".to_owned()
        }
    };
    // "v2 tick 37", "v1 init", "v3 shutdown after tick 120".
    let when = match r.call {
        "tick" => format!("tick {}", r.tick),
        "init" => "init".to_owned(),
        "destructor" => "destructor (unloading it)".to_owned(),
        call => format!("{call} after tick {}", r.tick),
    };
    format!("v{} {when}: {}{place}; {recovery}", r.version, r.cause)
}

fn state(r: &StateReport) -> String {
    // While ticking is paused no version runs: the state is the one that
    // faulted, as its snapshot had it.
    let v = if r.paused {
        format!("v{}'s, ticking paused", r.version)
    } else {
        format!("v{}", r.version)
    };
    let when = match r.moment {
        StateMoment::Absent => return "none: no version was ever loaded".into(),
        StateMoment::Initial => format!("(initial; {v})"),
        StateMoment::Restored => {
            format!("({}; {v})", r.note.as_deref().unwrap_or("restored"))
        }
        StateMoment::Preserved => format!("(preserved; {v}, tick {})", r.tick),
        StateMoment::Migrated => format!("(migrated; {v}, tick {})", r.tick),
        StateMoment::Final => format!("(final; {v}, tick {})", r.tick),
        StateMoment::Periodic => format!("({v}, tick {})", r.tick),
        StateMoment::Requested => format!("(on request; {v}, tick {})", r.tick),
    };
    if let Some(fields) = &r.fields {
        return format!("{fields} {when}");
    }
    // Without a layout the fields cannot be named: show the size and the
    // first bytes, which is enough to read a small state off the log.
    let mut bytes: Vec<String> = r.head.iter().map(|b| format!("{b:02x}")).collect();
    if r.size > r.head.len() {
        bytes.push("…".into());
    }
    format!(
        "{} bytes, layout unknown: [{}] {when}",
        r.size,
        bytes.join(" ")
    )
}

/// `, worker pid 4242` for a version in isolated mode.
fn worker(pid: Option<u32>) -> String {
    pid.map(|pid| format!(", worker pid {pid}"))
        .unwrap_or_default()
}

/// Milliseconds with precision that suits the magnitude.
fn ms(d: Duration) -> String {
    let ms = d.as_secs_f64() * 1000.0;
    if ms >= 100.0 {
        format!("{ms:.0} ms")
    } else if ms >= 1.0 {
        format!("{ms:.1} ms")
    } else {
        format!("{ms:.2} ms")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_line_shows_fields_or_size_and_bytes() {
        let r = StateReport {
            moment: StateMoment::Preserved,
            size: 4,
            tick: 10,
            version: 2,
            paused: false,
            head: vec![10, 0, 0, 0],
            fields: None,
            values: None,
            note: None,
        };
        assert_eq!(
            state(&r),
            "4 bytes, layout unknown: [0a 00 00 00] (preserved; v2, tick 10)"
        );
        let r = StateReport {
            fields: Some("score=10".into()),
            ..r
        };
        assert_eq!(state(&r), "score=10 (preserved; v2, tick 10)");
        let r = StateReport {
            moment: StateMoment::Final,
            paused: true,
            ..r
        };
        assert_eq!(state(&r), "score=10 (final; v2's, ticking paused, tick 10)");
    }

    #[test]
    fn durations() {
        assert_eq!(ms(Duration::from_micros(110)), "0.11 ms");
        assert_eq!(ms(Duration::from_micros(21_400)), "21.4 ms");
        assert_eq!(ms(Duration::from_millis(1999)), "1999 ms");
    }
}
