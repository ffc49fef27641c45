//! What the hostile-plugin matrix (`tests/matrix.rs`) found that is not a
//! documented limit of the in-process host, each as a focused test of what
//! must hold: process-wide state plugin code changes around the guard (the
//! raw system calls, constructors and destructors, timers, threads, fork and
//! exec, descriptors, limits, the working folder, the environment).
//! RELIABILITY.md ("Hostile plugins") has the matrix's cells behind each.

mod support;

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use support::hostile::{Place, Plugin, behaviour};
use support::{CC_BUILD, Server, Waited, editor, field, workdir};

/// A counter (`tag`, `step`) that does behaviour `name` at `place`.
fn hostile(tag: &'static str, step: i32, place: Place, name: &str) -> Plugin {
    Plugin {
        hostile: Some((place, behaviour(name))),
        ..Plugin::good(tag, step)
    }
}

/// A server on `plugin` in a fresh folder: cc builds, 10 ms ticks, `extra`.
fn serve(plugin: &Plugin, extra: &[&str]) -> (tempfile::TempDir, Server) {
    let dir = workdir();
    fs::write(dir.path().join("logic.c"), plugin.source()).expect("write logic.c");
    let server = Server::start_default(dir.path(), extra);
    (dir, server)
}

/// Saves `plugin` as the new source, as an editor does.
fn edit(dir: &Path, plugin: &Plugin) {
    editor::in_place(&dir.join("logic.c"), &plugin.source());
}

/// Waits for `n` more ticks of `tag` and returns the last score.
fn ticks_of(s: &mut Server, tag: &str, n: usize) -> i64 {
    let prefix = format!("[plugin] tag={tag} score=");
    let mut last = 0;
    for _ in 0..n {
        let line = s.expect_prefix(&prefix);
        last = field(&line, "score").expect("a score");
    }
    last
}

/// The line that satisfies `pred` within `within`, or a panic saying what
/// did not come.
fn within(s: &mut Server, within: Duration, what: &str, pred: impl Fn(&str) -> bool) -> String {
    match s.wait_line(within, pred) {
        Waited::Line(line) => line,
        Waited::Ended => panic!("the server ended before {what}:\n{}", s.transcript()),
        Waited::TimedOut => panic!("no {what} within {within:?}:\n{}", s.transcript()),
    }
}

/// SIGTERM, and the stop must be graceful: an exit code, not a signal.
fn stops_gracefully(s: &mut Server) -> i32 {
    s.signal(Signal::SIGTERM);
    let status = s.wait();
    status
        .code()
        .unwrap_or_else(|| panic!("died at the stop ({status:?}):\n{}", s.transcript()))
}

// The state.

#[test]
fn a_fault_in_on_reload_keeps_the_state_the_swap_had() {
    let (dir, mut s) = serve(&Plugin::good("one", 1), &["--trial-ticks", "0"]);
    ticks_of(&mut s, "one", 3);
    edit(dir.path(), &hostile("two", 10, Place::OnReload, "segv"));
    s.expect_prefix("[fault] v2 on_reload");
    let next = ticks_of(&mut s, "one", 1);
    let before: i64 = s
        .lines()
        .iter()
        .take_while(|l| !l.starts_with("[fault] v2 on_reload"))
        .filter(|l| l.starts_with("[plugin] tag=one score="))
        .filter_map(|l| field(l, "score"))
        .last()
        .expect("v1 ticked");
    assert_eq!(
        next,
        before + 1,
        "v1 goes on from the state it handed over:\n{}",
        s.transcript()
    );
    assert_eq!(stops_gracefully(&mut s), 14);
}

#[test]
fn a_state_saved_while_ticking_is_paused_restores() {
    let faults = Plugin {
        fault_later: true,
        ..Plugin::good("one", 1)
    };
    let dir = workdir();
    fs::write(dir.path().join("logic.c"), faults.source()).expect("write");
    // The only version faults at its 5th tick: ticking pauses, and the run
    // ends by itself (--ticks), saving.
    let mut s = Server::start_default(
        dir.path(),
        &[
            "--trial-ticks",
            "0",
            "--state-file",
            "st.bin",
            "--ticks",
            "50",
        ],
    );
    assert_eq!(s.exit_code(), 14, "{}", s.transcript());
    fs::write(dir.path().join("logic.c"), Plugin::good("two", 1).source()).expect("write");
    let mut next = Server::start_default(dir.path(), &["--state-file", "st.bin"]);
    let restored = within(&mut next, support::WAIT, "a state line", |l| {
        (l.starts_with("[state] ") && l.contains("; v1)")) || l.starts_with("[reload] rejected")
    });
    assert!(
        restored.starts_with("[state] score=4 (restored from st.bin"),
        "{restored}\n{}",
        next.transcript()
    );
    assert_eq!(stops_gracefully(&mut next), 0);
}

// Process-wide state the guard does not put back.

/// v1 does `name` at its 2nd tick and overflows its stack at its 5th: the
/// overflow must still be a fault, rolled back or paused, never the end.
fn then_a_fault_is_still_caught(name: &str) {
    let plugin = Plugin {
        fault_later: true,
        ..hostile("one", 1, Place::TickTrial, name)
    };
    let (_dir, mut s) = serve(&plugin, &["--trial-ticks", "0"]);
    let fault = within(&mut s, support::WAIT, "the fault line", |l| {
        l.starts_with("[fault] v1 tick ")
    });
    assert!(fault.contains("ticking paused"), "{name}: {fault}");
    assert_eq!(stops_gracefully(&mut s), 14, "{name}");
}

#[test]
fn a_mask_changed_with_the_raw_system_call_is_put_back() {
    then_a_fault_is_still_caught("mask-raw");
}

#[test]
fn a_disabled_alternate_signal_stack_is_put_back() {
    then_a_fault_is_still_caught("sigaltstack-off");
}

#[test]
fn a_handler_replaced_by_a_destructor_is_put_back_before_the_next_fault() {
    let (dir, mut s) = serve(
        &Plugin::good("one", 1),
        &["--no-probe", "--keep-versions", "1"],
    );
    ticks_of(&mut s, "one", 2);
    edit(
        dir.path(),
        &hostile("two", 10, Place::Destructor, "sigaction-raw"),
    );
    ticks_of(&mut s, "two", 2);
    // v2 is retired as v3 comes: its destructor runs, and v3 overflows its
    // stack three ticks later.
    let v3 = Plugin {
        fault_later: true,
        ..Plugin::good("three", 100)
    };
    edit(dir.path(), &v3);
    within(&mut s, support::WAIT, "v3's fault", |l| {
        l.starts_with("[fault] v3 tick ")
    });
    assert_eq!(stops_gracefully(&mut s), 14);
}

#[test]
fn a_handler_change_refused_in_a_constructor_does_not_refuse_later_builds() {
    let (dir, mut s) = serve(&Plugin::good("one", 1), &["--no-probe"]);
    ticks_of(&mut s, "one", 2);
    edit(
        dir.path(),
        &hostile("two", 10, Place::Constructor, "signal-dfl"),
    );
    let outcome = s.expect("the reload's outcome", |l| {
        l.starts_with("[reload] swapped") || l.starts_with("[reload] rejected")
    });
    edit(dir.path(), &Plugin::good("three", 100));
    ticks_of(&mut s, "three", 2);
    assert!(
        !outcome.contains("signal 0") && s.count(|l| l.contains("signal 0")) == 0,
        "a refused change is not a fault of signal 0:\n{}",
        s.transcript()
    );
    assert_eq!(stops_gracefully(&mut s), 0);
}

#[test]
fn a_posix_timer_is_stopped_with_the_version_that_armed_it() {
    let (dir, mut s) = serve(&Plugin::good("one", 1), &["--trial-ticks", "0"]);
    ticks_of(&mut s, "one", 2);
    edit(
        dir.path(),
        &hostile("two", 10, Place::TickTrial, "timer-signal"),
    );
    let fault = s.expect_prefix("[fault] v2 ");
    assert!(fault.contains("SIGALRM"), "{fault}");
    // The timer fires every 100 ms: half a second of v1 shows whether it
    // still does.
    for _ in 0..50 {
        let line = within(&mut s, Duration::from_secs(2), "a tick of v1", |l| {
            l.starts_with("[plugin] tag=one score=") || l.starts_with("[fault] v1 ")
        });
        assert!(
            !line.starts_with("[fault]"),
            "v1 is blamed for v2's timer: {line}"
        );
    }
    assert_eq!(stops_gracefully(&mut s), 14);
}

#[test]
fn a_posix_timer_thread_never_calls_into_an_unmapped_version() {
    let (dir, mut s) = serve(
        &hostile("one", 1, Place::TickTrial, "timer-thread"),
        &["--trial-ticks", "0", "--keep-versions", "1"],
    );
    ticks_of(&mut s, "one", 4);
    // v1 is retired (and unmapped) as v2 comes; its timer fires every 20 ms.
    edit(dir.path(), &Plugin::good("two", 10));
    ticks_of(&mut s, "two", 30);
    assert_eq!(stops_gracefully(&mut s), 0);
}

#[test]
fn a_crash_in_a_thread_plugin_code_started_is_said_and_does_not_spin() {
    let (_dir, mut s) = serve(
        &hostile("one", 1, Place::Init, "thread-segv"),
        &["--trial-ticks", "0"],
    );
    // The thread writes through NULL 20 ms after init.
    within(
        &mut s,
        Duration::from_secs(5),
        "a line naming the crash",
        |l| l.starts_with("[guard] a thread v1 started") && l.contains("SIGSEGV"),
    );
    // The crash is v1's fault, as one in a call would be: with nothing to
    // roll back to, ticking pauses; the thread is stopped, not spinning.
    let fault = within(&mut s, support::WAIT, "v1's fault", |l| {
        l.starts_with("[fault] v1 thread")
    });
    assert!(fault.contains("ticking paused"), "{fault}");
    assert_eq!(stops_gracefully(&mut s), 14);
}

#[test]
fn exit_on_a_thread_plugin_code_started_ends_only_that_thread() {
    let (_dir, mut s) = serve(
        &hostile("one", 1, Place::Init, "thread-exit"),
        &["--trial-ticks", "0"],
    );
    // The thread calls exit(3) 20 ms after init.
    let line = within(&mut s, Duration::from_secs(5), "a line naming it", |l| {
        l.starts_with("[guard] a thread v1 started")
    });
    assert!(line.contains("exit(3)"), "{line}");
    let fault = within(&mut s, support::WAIT, "v1's fault", |l| {
        l.starts_with("[fault] v1 thread")
    });
    assert!(fault.contains("ticking paused"), "{fault}");
    assert_eq!(stops_gracefully(&mut s), 14);
}

#[test]
fn a_thread_started_by_a_destructor_keeps_its_version_mapped() {
    let (dir, mut s) = serve(
        &Plugin::good("one", 1),
        &["--no-probe", "--keep-versions", "1"],
    );
    ticks_of(&mut s, "one", 2);
    edit(dir.path(), &hostile("two", 10, Place::Destructor, "thread"));
    ticks_of(&mut s, "two", 2);
    edit(dir.path(), &Plugin::good("three", 100));
    within(&mut s, Duration::from_secs(5), "v2 kept mapped", |l| {
        l.starts_with("[reload] v2 stays loaded: 1 thread")
    });
    assert_eq!(stops_gracefully(&mut s), 0);
}

#[test]
fn a_fork_without_exec_leaves_no_second_server() {
    use std::os::unix::process::CommandExt;
    let dir = workdir();
    let plugin = hostile("one", 1, Place::TickTrial, "fork");
    fs::write(dir.path().join("logic.c"), plugin.source()).expect("write");
    let mut command = std::process::Command::new(support::binary());
    command
        .args(["--watch", "logic.c", "--build", CC_BUILD, "--tick-ms", "10"])
        .args(["--trial-ticks", "0"])
        .process_group(0);
    let mut s = Server::start_command(dir.path(), command);
    let group = s.pid();
    ticks_of(&mut s, "one", 10);
    s.signal(Signal::SIGTERM);
    // Not Server::wait, which waits for the output to close too: a child
    // holds it open.
    let deadline = Instant::now() + support::WAIT;
    let status = loop {
        if let Some(status) = s.try_status() {
            break status;
        }
        assert!(Instant::now() < deadline, "the server did not stop");
        std::thread::sleep(Duration::from_millis(10));
    };
    // The group is the server's own: whatever is left in it is the child.
    let left = support::running_in_group(group);
    let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(group), Signal::SIGKILL);
    assert!(
        left.is_empty(),
        "processes {left:?} outlived the server:\n{}",
        s.transcript()
    );
    assert_eq!(status.code(), Some(0));
}

#[test]
fn exec_in_plugin_code_is_a_fault_of_its_version() {
    let (dir, mut s) = serve(&Plugin::good("one", 1), &["--trial-ticks", "0"]);
    ticks_of(&mut s, "one", 2);
    edit(dir.path(), &hostile("two", 10, Place::TickTrial, "exec"));
    let fault = within(&mut s, support::WAIT, "the fault line", |l| {
        l.starts_with("[fault] v2 tick ")
    });
    assert!(fault.contains("exec"), "{fault}");
    ticks_of(&mut s, "one", 2);
    assert_eq!(stops_gracefully(&mut s), 14);
}

#[test]
fn the_plugin_stack_has_an_inaccessible_page_above_its_top_too() {
    // A plugin frame tells where it is; the top of the stack it is on must
    // be followed by a page nothing can write, as its bottom is.
    let plugin = support::plugin::Counter {
        fault_at: Some((
            1,
            "volatile char here = 0; printf(\"[plugin] sp=%p\\n\", (void*)&here); fflush(stdout);",
        )),
        ..support::plugin::Counter::new("one", 1)
    };
    let dir = workdir();
    fs::write(dir.path().join("logic.c"), plugin.source()).expect("write");
    let mut s = Server::start_default(dir.path(), &["--trial-ticks", "0"]);
    let line = s.expect_prefix("[plugin] sp=");
    let sp =
        u64::from_str_radix(line.trim_start_matches("[plugin] sp=0x"), 16).expect("an address");
    let maps = fs::read_to_string(format!("/proc/{}/maps", s.pid())).expect("read maps");
    let ranges: Vec<(u64, u64, String)> = maps
        .lines()
        .filter_map(|l| {
            let mut parts = l.split_whitespace();
            let (start, end) = parts.next()?.split_once('-')?;
            let perms = parts.next()?.to_owned();
            Some((
                u64::from_str_radix(start, 16).ok()?,
                u64::from_str_radix(end, 16).ok()?,
                perms,
            ))
        })
        .collect();
    let stack = ranges
        .iter()
        .position(|(start, end, _)| (*start..*end).contains(&sp))
        .expect("the plugin's stack is mapped");
    let top = ranges[stack].1;
    let above = ranges.get(stack + 1).filter(|(start, _, _)| *start == top);
    assert!(
        above.is_none_or(|(_, _, perms)| perms.starts_with("---")),
        "above the plugin stack's top ({top:#x}) lies {:?}: a frame smashed upward writes into it",
        above.map(|(start, end, perms)| format!("{start:#x}-{end:#x} {perms}"))
    );
    assert_eq!(stops_gracefully(&mut s), 0);
}

// Descriptors.

#[test]
fn a_descriptor_plugin_code_closes_is_taken_by_nothing_of_the_hosts() {
    let (dir, mut s) = serve(
        &hostile("one", 1, Place::TickTrial, "close-1"),
        &[
            "--trial-ticks",
            "0",
            "--state-file",
            "st.bin",
            "--save-every",
            "1",
            "--state-every",
            "1",
        ],
    );
    // The plugin's own lines stop at its 2nd tick; the host's go on, and it
    // has saved (opened files) since.
    within(&mut s, support::WAIT, "tick 10", |l| {
        l.starts_with("[state] score=10 ")
    });
    let fd1 = fs::read_link(format!("/proc/{}/fd/1", s.pid()));
    assert!(
        fd1.as_ref().is_ok_and(|t| {
            let t = t.to_string_lossy();
            t.starts_with("pipe:") || t == "/dev/null"
        }),
        "descriptor 1 is {fd1:?}: the plugin's next printf goes there"
    );
    edit(dir.path(), &Plugin::good("two", 1));
    s.expect_prefix("[reload] swapped");
    assert_eq!(stops_gracefully(&mut s), 0);
}

// Limits, folders, the environment: what builds, trials and saves need.

/// v1 does `name` at its 2nd tick; then a good build must load, and the
/// stop save the state.
fn then_a_build_still_loads(name: &str, extra: &[&str]) {
    let (dir, mut s) = serve(&hostile("one", 1, Place::TickTrial, name), extra);
    ticks_of(&mut s, "one", 4);
    edit(dir.path(), &Plugin::good("two", 10));
    within(&mut s, support::WAIT, "the swap", |l| {
        l.starts_with("[reload] swapped")
            || l.starts_with("[reload] rejected")
            || l.starts_with("[build] failed")
    });
    assert!(
        s.count(|l| l.starts_with("[reload] swapped")) == 1,
        "{name}: the next build did not load:\n{}",
        s.transcript()
    );
    ticks_of(&mut s, "two", 2);
    assert_eq!(stops_gracefully(&mut s), 0, "{name}");
}

#[test]
fn a_lowered_descriptor_limit_does_not_stop_builds() {
    then_a_build_still_loads("rlimit-nofile", &["--trial-ticks", "0"]);
}

#[test]
fn a_lowered_process_limit_does_not_stop_builds() {
    // Enforced only for users other than root.
    if let Some((dir, mut s)) =
        start_nobody_on(&hostile("one", 1, Place::TickTrial, "rlimit-nproc"))
    {
        ticks_of(&mut s, "one", 4);
        edit(dir.path(), &Plugin::good("two", 10));
        s.expect_contains("tag=two score=");
        assert_eq!(stops_gracefully(&mut s), 0);
    }
}

#[test]
fn a_chdir_in_plugin_code_does_not_move_the_server() {
    then_a_build_still_loads("chdir", &["--trial-ticks", "0", "--state-file", "st.bin"]);
}

#[test]
fn a_changed_path_does_not_stop_builds() {
    then_a_build_still_loads("setenv-path", &["--trial-ticks", "0"]);
}

#[test]
fn a_umask_in_plugin_code_does_not_refuse_later_builds() {
    if let Some((dir, mut s)) = start_nobody_on(&hostile("one", 1, Place::TickTrial, "umask")) {
        ticks_of(&mut s, "one", 4);
        edit(dir.path(), &Plugin::good("two", 10));
        s.expect_contains("tag=two score=");
        assert_eq!(stops_gracefully(&mut s), 0);
    }
}

/// The usual server on `plugin` as `nobody`, without trials; `None` when
/// this test is not root.
fn start_nobody_on(plugin: &Plugin) -> Option<(tempfile::TempDir, Server)> {
    let dir = workdir();
    fs::write(dir.path().join("logic.c"), plugin.source()).expect("write");
    let server = support::start_as_nobody(
        dir.path(),
        &[
            "--watch",
            "logic.c",
            "--build",
            CC_BUILD,
            "--tick-ms",
            "10",
            "--trial-ticks",
            "0",
        ],
    )?;
    Some((dir, server))
}

#[test]
fn an_environment_entry_into_a_retired_library_does_not_stop_builds() {
    let (dir, mut s) = serve(
        &hostile("one", 1, Place::TickTrial, "putenv-literal"),
        &["--trial-ticks", "0", "--keep-versions", "1"],
    );
    ticks_of(&mut s, "one", 4);
    // v1 is unmapped as v2 comes; v3's build starts after that.
    edit(dir.path(), &Plugin::good("two", 10));
    ticks_of(&mut s, "two", 2);
    edit(dir.path(), &Plugin::good("three", 100));
    ticks_of(&mut s, "three", 2);
    assert_eq!(stops_gracefully(&mut s), 0);
}

#[test]
fn a_lowered_file_size_limit_does_not_kill_the_host_at_the_next_save() {
    let (_dir, mut s) = serve(
        &hostile("one", 1, Place::TickTrial, "rlimit-fsize"),
        &[
            "--trial-ticks",
            "0",
            "--state-file",
            "st.bin",
            "--save-every",
            "5",
        ],
    );
    let started = Instant::now();
    ticks_of(&mut s, "one", 20);
    assert!(started.elapsed() < support::WAIT);
    let code = stops_gracefully(&mut s);
    assert!(code == 0 || code == 16, "{code}:\n{}", s.transcript());
}
