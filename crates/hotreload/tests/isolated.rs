//! Isolated mode (`--isolate`): plugin code runs only in worker processes,
//! on state in shared memory the server owns. Everything that ends a
//! process — a raw exit system call, SIGKILL, a wrecked heap, a thread that
//! vanishes, a worker killed from outside — costs a worker and a rollback,
//! never the session, and the state goes on from where it was.

mod support;

use std::fs;
use std::path::Path;
use std::process::Command;

use nix::sys::signal::Signal;
use support::plugin::{Counter, Extended, counter};
use support::{Server, editor, field, workdir};

/// The usual server, isolated.
fn isolated(dir: &Path, extra: &[&str]) -> Server {
    let mut args = vec!["--isolate"];
    args.extend_from_slice(extra);
    Server::start_default(dir, &args)
}

/// A counter whose tick at its `at`th call runs `code`, with the headers
/// the cases below need.
fn faulting(tag: &str, step: i32, at: u32, code: &str) -> String {
    Counter {
        fault_at: Some((at, code)),
        ..Counter::new(tag, step)
    }
    .source()
    .replace(
        "#include <unistd.h>",
        "#include <unistd.h>\n#include <pthread.h>\n#include <signal.h>\n#include <string.h>\n#include <sys/syscall.h>",
    )
}

/// The largest score `tag` printed.
fn last_score(s: &Server, tag: &str) -> i64 {
    let needle = format!("tag={tag} score=");
    s.lines()
        .iter()
        .filter(|l| l.contains(&needle))
        .filter_map(|l| field(l, "score"))
        .max()
        .unwrap_or_else(|| panic!("{tag} never ticked:\n{}", s.transcript()))
}

/// v1 counts; v2 runs `code` at its third tick, in its worker (no trial, so
/// that the live worker meets it). The server lives and says one of
/// `said`; v1 ticks on from the state before that tick; the run ends in
/// order, with shutdown, and the exit code says a fault happened.
fn survives(code: &str, said: &[&str], extra: &[&str]) {
    let dir = workdir();
    let src = dir.path().join("logic.c");
    fs::write(&src, counter("one", 1)).expect("write");
    let mut args = vec!["--trial-ticks", "0"];
    args.extend_from_slice(extra);
    let mut s = isolated(dir.path(), &args);
    s.expect_contains("tag=one score=3 ");
    editor::in_place(&src, &faulting("two", 100, 3, code));
    s.expect_prefix("[reload] swapped logic.so (api=1, v2");
    let fault = s.expect_prefix("[fault] v2 tick ");
    assert!(
        said.iter().any(|w| fault.contains(w)) && fault.contains("rolled back to v1"),
        "{code}: {fault}\n{}",
        s.transcript()
    );
    let before = last_score(&s, "two");
    let next = s.expect_contains("tag=one score=");
    assert_eq!(
        field(&next, "score"),
        Some(before + 1),
        "{}",
        s.transcript()
    );
    s.signal(Signal::SIGTERM);
    s.expect_contains("tag=one shutdown score=");
    s.expect_prefix("[exit] code=14");
    assert_eq!(s.exit_code(), 14, "{}", s.transcript());
}

#[test]
fn a_raw_exit_group_system_call_costs_a_worker_not_the_server() {
    survives(
        "syscall(SYS_exit_group, 7);",
        &["plugin code ended the worker process (exit status 7)"],
        &[],
    );
}

/// A worker killed from outside (the OOM killer, `kill -9`; plugin code
/// cannot send its own worker SIGKILL) costs that worker: the state goes
/// back, the version before takes over, and the build is not banned: asked
/// again, the same source loads.
#[test]
fn a_worker_killed_from_outside_costs_it_and_does_not_ban_its_build() {
    let dir = workdir();
    let src = dir.path().join("logic.c");
    fs::write(&src, counter("one", 1)).expect("write");
    let mut s = isolated(dir.path(), &["--trial-ticks", "0"]);
    s.expect_contains("tag=one score=3 ");
    editor::in_place(&src, &counter("two", 100));
    let pid = worker_pid(&s.expect_prefix("[reload] swapped logic.so (api=1, v2"));
    s.expect_contains("tag=two score=");
    stop_worker(pid, Signal::SIGKILL);
    let fault = s.expect_prefix("[fault] v2 ");
    assert!(
        fault.contains("the worker process was killed by SIGKILL")
            && fault.contains("rolled back to v1"),
        "{fault}"
    );
    s.expect_contains("tag=one score=");
    s.signal(Signal::SIGUSR1);
    let again = s.expect_prefix("[reload] ");
    assert!(
        again.starts_with("[reload] swapped logic.so (api=1, v3"),
        "{again}\n{}",
        s.transcript()
    );
    s.expect_contains("tag=two score=");
    // The last reload succeeded.
    assert_eq!(s.stop(), 0, "{}", s.transcript());
}

#[test]
fn a_raw_exit_of_the_calling_thread_is_noticed_at_once() {
    survives(
        "syscall(SYS_exit, 0);",
        &["plugin code ended the worker's calling thread"],
        &[],
    );
}

#[test]
fn a_wrecked_heap_costs_a_worker_not_the_server() {
    // glibc notices the damage at `free` and aborts, or the write itself
    // lands on something unmapped.
    survives(
        "char* p = malloc(32); memset(p - 32, 0x5a, 4096); free(p); free(malloc(64));",
        &["SIGABRT", "SIGSEGV"],
        &[],
    );
}

#[test]
fn faults_the_guard_catches_in_the_worker_name_their_place() {
    survives(
        "*(volatile int*)0 = 1;",
        &["SIGSEGV (address not mapped) at 0x0 in counter_tick+"],
        &[],
    );
    survives("exit(7);", &["exit(7) called in counter_tick+"], &[]);
    survives("_exit(7);", &["_exit(7) called in counter_tick+"], &[]);
    survives("abort();", &["SIGABRT (abort)"], &[]);
}

#[test]
fn a_hang_in_the_worker_is_interrupted_where_it_is() {
    survives(
        "for (;;) {}",
        &["timeout after 300 ms in counter_tick+"],
        &["--tick-timeout-ms", "300"],
    );
}

/// Plugin code that goes for the server from outside: signals to it, its
/// process group or every process, and its memory. All refused; the
/// plugin sees the errors, and the server ticks on.
#[test]
fn a_worker_cannot_signal_stop_or_write_into_the_server() {
    let dir = workdir();
    let src = dir.path().join("logic.c");
    // Signal 0 asks only whether a signal would be allowed: where a failing
    // filter would let a real one through to the test's own process group
    // or to every process of the user, the question is asked instead.
    let attack = r#"
        pid_t host = getppid();
        int k = kill(host, SIGKILL), s = kill(host, SIGSTOP), g = kill(-getpgid(host), 0);
        int all = kill(-1, 0), t = (int)syscall(SYS_tgkill, host, host, SIGKILL);
        int q = (int)syscall(SYS_tkill, host, SIGKILL);
        int p = (int)syscall(SYS_ptrace, 16 /* PTRACE_ATTACH */, host, 0, 0);
        char path[64]; snprintf(path, sizeof path, "/proc/%d/mem", (int)host);
        int mem = open(path, O_RDWR);
        printf("[plugin] attacks: kill=%d stop=%d group=%d all=%d tgkill=%d tkill=%d ptrace=%d mem=%d\n",
               k, s, g, all, t, q, p, mem);
        fflush(stdout);
    "#;
    // Run as root, only the host's non-dumpable flag keeps /proc/PID/mem
    // open to the attack (root may open it anyway): the other refusals hold.
    fs::write(&src, faulting("one", 1, 3, attack)).expect("write");
    let mut s = isolated(dir.path(), &[]);
    let said = s.expect_prefix("[plugin] attacks: ");
    for refused in [
        "kill=-1",
        "stop=-1",
        "group=-1",
        "all=-1",
        "tgkill=-1",
        "tkill=-1",
        "ptrace=-1",
    ] {
        assert!(said.contains(refused), "{refused}: {said}");
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        assert!(said.contains("mem=-1"), "{said}");
    }
    s.expect_contains("tag=one score=10 ");
    assert_eq!(s.stop(), 0, "{}", s.transcript());
}

/// A worker stopped from outside (SIGSTOP here; a debugger at a breakpoint
/// looks the same) is waited for, not killed as hung: the server says so
/// once, and when the worker goes on, so does ticking, with no fault and
/// nothing lost.
#[test]
fn a_stopped_worker_is_waited_for_not_killed() {
    let dir = workdir();
    let src = dir.path().join("logic.c");
    fs::write(&src, faulting("one", 1, 1000, "")).expect("write");
    let mut s = isolated(
        dir.path(),
        &["--tick-timeout-ms", "300", "--trial-ticks", "0"],
    );
    let pid = worker_pid(&s.expect_prefix("[reload] loaded"));
    s.expect_contains("tag=one score=2 ");
    stop_worker(pid, Signal::SIGSTOP);
    let said = s.expect_prefix(&format!("[guard] v1's worker (pid {pid}) "));
    assert!(
        said.contains("is stopped in the middle of a call"),
        "{said}"
    );
    stop_worker(pid, Signal::SIGCONT);
    s.expect_contains("tag=one score=8 ");
    assert_eq!(
        s.count(|l| l.starts_with("[fault]")),
        0,
        "{}",
        s.transcript()
    );
    assert_eq!(s.stop(), 0, "{}", s.transcript());
}

/// Asked to stop while a worker is stopped, the server does not wait for
/// it: the worker is ended as hung and the state saved.
#[test]
fn a_stop_request_ends_a_stopped_worker() {
    let dir = workdir();
    let src = dir.path().join("logic.c");
    fs::write(&src, faulting("one", 1, 1000, "")).expect("write");
    let mut s = isolated(
        dir.path(),
        &[
            "--tick-timeout-ms",
            "300",
            "--trial-ticks",
            "0",
            "--state-file",
            "st.bin",
        ],
    );
    let pid = worker_pid(&s.expect_prefix("[reload] loaded"));
    s.expect_contains("tag=one score=2 ");
    stop_worker(pid, Signal::SIGSTOP);
    s.expect_prefix(&format!("[guard] v1's worker (pid {pid}) "));
    s.signal(Signal::SIGTERM);
    s.expect_prefix(&format!(
        "[guard] the server is stopping while v1's worker (pid {pid})"
    ));
    s.expect_prefix("[state] saved");
    let status = s.wait();
    assert!(status.code().is_some(), "{}", s.transcript());
}

/// Plugin code may not stop or kill its own worker (that would look like a
/// debugger, or like the OOM killer): the call fails with EPERM, and the
/// worker says what was refused.
#[test]
fn a_worker_cannot_stop_or_kill_itself_and_says_so() {
    let dir = workdir();
    let src = dir.path().join("logic.c");
    let attempt = r#"
        int st = raise(SIGSTOP), k = kill(getpid(), SIGKILL);
        printf("[plugin] self: stop=%d kill=%d\n", st, k);
        fflush(stdout);
    "#;
    fs::write(&src, faulting("one", 1, 3, attempt)).expect("write");
    let mut s = isolated(dir.path(), &["--trial-ticks", "0"]);
    s.expect_contains("tag=one score=6 ");
    // The plugin's line (its standard output) and the guard's (the
    // worker's standard error) reach the server on two pipes: either may
    // be printed first.
    let lines = s.lines();
    let said = lines
        .iter()
        .find(|l| l.starts_with("[plugin] self: "))
        .unwrap_or_else(|| panic!("the plugin's line:\n{}", s.transcript()));
    assert!(said.contains("stop=-1 kill=-1"), "{said}");
    let refused = lines
        .iter()
        .find(|l| l.starts_with("[guard] plugin code in the worker (pid ") && l.contains("SIGSTOP"))
        .unwrap_or_else(|| panic!("the guard's line:\n{}", s.transcript()));
    assert!(refused.contains("refused"), "{refused}");
    assert_eq!(
        s.count(|l| l.starts_with("[fault]")),
        0,
        "{}",
        s.transcript()
    );
    assert_eq!(s.stop(), 0, "{}", s.transcript());
}

/// A kept version's worker that dies (here killed from outside) is noticed
/// while it is kept, not at the next rollback: said, and given up.
#[test]
fn a_kept_worker_that_dies_is_said_and_given_up() {
    let dir = workdir();
    let src = dir.path().join("logic.c");
    fs::write(&src, counter("one", 1)).expect("write");
    let mut s = isolated(dir.path(), &["--trial-ticks", "0"]);
    let v1 = worker_pid(&s.expect_prefix("[reload] loaded"));
    s.expect_contains("tag=one score=3 ");
    editor::in_place(&src, &counter("two", 100));
    s.expect_prefix("[reload] swapped logic.so (api=1, v2");
    stop_worker(v1, Signal::SIGKILL);
    let said = s.expect_prefix(&format!(
        "[guard] v1's worker (pid {v1}), kept for a rollback, ended"
    ));
    assert!(said.contains("killed by SIGKILL"), "{said}");
    assert_eq!(
        s.count(|l| l.starts_with("[fault]")),
        0,
        "{}",
        s.transcript()
    );
    assert_eq!(s.stop(), 0, "{}", s.transcript());
}

/// The worker pid a `[reload]` line names.
fn worker_pid(line: &str) -> i32 {
    line.split("worker pid ")
        .nth(1)
        .and_then(|rest| rest.split(')').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no worker pid in: {line}"))
}

fn stop_worker(pid: i32, signal: Signal) {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), signal).expect("signal the worker");
}

/// The worker processes of the server `host`: its children started with
/// the worker subcommand.
fn workers_of(host: i32) -> Vec<i32> {
    let mut found = Vec::new();
    for entry in fs::read_dir("/proc").expect("read /proc").flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // The parent pid is the second field after the command in parentheses.
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<i32>().ok());
        let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if ppid == Some(host) && String::from_utf8_lossy(&cmdline).contains("__hotreload-worker") {
            found.push(pid);
        }
    }
    found
}

/// Whether process `pid` has a library of the server's private copies
/// mapped (they are the only `.so` files in its `hotreload-` folders).
fn maps_plugin_code(pid: i32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/maps"))
        .unwrap_or_default()
        .lines()
        .any(|l| l.contains("logic.so") || (l.contains("hotreload-") && l.contains(".so")))
}

#[test]
fn the_server_never_maps_plugin_code_and_a_killed_worker_is_a_fault() {
    let dir = workdir();
    let src = dir.path().join("logic.c");
    fs::write(&src, counter("one", 1)).expect("write");
    let mut s = isolated(dir.path(), &[]);
    s.expect_contains("tag=one score=3 ");
    assert!(!maps_plugin_code(s.pid()), "the server maps plugin code");
    let workers = workers_of(s.pid());
    assert_eq!(workers.len(), 1, "one live worker: {workers:?}");
    assert!(maps_plugin_code(workers[0]), "the worker maps the plugin");

    // Killed from outside between two ticks: a fault of v1, with nothing
    // to roll back to; the state stays, and the next build goes on from it.
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(workers[0]), Signal::SIGKILL)
        .expect("kill the worker");
    let fault = s.expect_prefix("[fault] v1 ");
    assert!(
        fault.contains("the worker process was killed by SIGKILL")
            && fault.contains("ticking paused until the next good build"),
        "{fault}"
    );
    // The kill may land after a tick printed its score and before it
    // returned: the state is that of the tick the line names (one point a
    // tick, from 0).
    let restored: i64 = fault
        .rsplit_once("state restored to tick ")
        .and_then(|(_, t)| t.parse().ok())
        .unwrap_or_else(|| panic!("{fault}"));
    editor::in_place(&src, &counter("two", 1));
    s.expect_prefix("[reload] ");
    let next = s.expect_contains("tag=two score=");
    assert_eq!(
        field(&next, "score"),
        Some(restored + 1),
        "{}",
        s.transcript()
    );
    assert!(!maps_plugin_code(s.pid()), "the server maps plugin code");
    // The last reload succeeded: the exit code says so.
    assert_eq!(s.stop(), 0, "{}", s.transcript());
}

#[test]
fn a_trial_runs_in_a_throwaway_worker_and_shows_what_it_printed() {
    let dir = workdir();
    let src = dir.path().join("logic.c");
    fs::write(&src, counter("one", 1)).expect("write");
    let mut s = isolated(dir.path(), &[]);
    s.expect_contains("tag=one score=3 ");
    editor::in_place(&src, &faulting("two", 100, 2, "*(volatile int*)8 = 1;"));
    let rejected = s.expect_prefix("[reload] rejected: trial tick 2: ");
    assert!(
        rejected.contains("SIGSEGV (address not mapped) at 0x8 in counter_tick+")
            && rejected.ends_with("(keeping v1)"),
        "{rejected}"
    );
    // What the trial printed is shown under the rejection, never as ticks.
    s.expect_contains("  | [plugin] tag=two score=");
    let live = s.expect_contains("tag=one score=");
    assert!(!live.starts_with("  |"), "{live}");
    assert_eq!(s.stop(), 14, "{}", s.transcript());
}

const DEBUG_BUILD: &str = "cc -g -shared -fPIC -o logic.so logic.c";

#[test]
fn state_carries_across_a_layout_change_and_back_through_a_rollback() {
    let dir = workdir();
    let src = dir.path().join("logic.c");
    fs::write(&src, counter("one", 1)).expect("write");
    let mut s = Server::start(
        dir.path(),
        &[
            "--isolate",
            "--watch",
            "logic.c",
            "--build",
            DEBUG_BUILD,
            "--tick-ms",
            "10",
            "--trial-ticks",
            "0",
        ],
    );
    s.expect_contains("tag=one score=3 ");
    // A bigger state (a new block, migrated field by field), whose version
    // then faults: the state goes back to v1's layout, in yet another block.
    let v2 = Counter {
        state_extra: 64,
        fault_at: Some((5, "*(volatile int*)0 = 1;")),
        ..Counter::new("two", 10)
    }
    .source();
    editor::in_place(&src, &v2);
    let swapped = s.expect_prefix("[reload] swapped logic.so (api=1, v2");
    assert!(swapped.contains("migrated"), "{swapped}");
    let first = s.expect_contains("tag=two score=");
    let carried = last_score(&s, "one");
    assert_eq!(
        field(&first, "score"),
        Some(carried + 10),
        "{}",
        s.transcript()
    );
    let fault = s.expect_prefix("[fault] v2 tick ");
    assert!(fault.contains("rolled back to v1"), "{fault}");
    let before = last_score(&s, "two");
    let next = s.expect_contains("tag=one score=");
    assert_eq!(
        field(&next, "score"),
        Some(before + 1),
        "{}",
        s.transcript()
    );
    assert_eq!(s.stop(), 14, "{}", s.transcript());
}

/// An extended-ABI plugin of state version `version` whose `on_reload`
/// and `migrate` say they ran; `migrate` multiplies the score by 10.
fn with_hooks(tag: &str, version: u32) -> String {
    let on_reload = format!("h->log(\"{tag} on_reload\");");
    let migrate = format!(
        "printf(\"[plugin] {tag} migrate from version %u\\n\", old_version);\n    \
         ((state_t*)new_state)->score = ((const state_t*)old)->score * 10;"
    );
    Extended {
        state_version: version,
        on_reload: &on_reload,
        migrate: Some(&migrate),
        ..Extended::new(tag)
    }
    .source()
}

#[test]
fn hooks_describe_and_migrate_run_in_the_worker() {
    let dir = workdir();
    let src = dir.path().join("logic.c");
    fs::write(&src, with_hooks("one", 1)).expect("write");
    let mut s = isolated(dir.path(), &["--state-every", "5"]);
    let described = s.expect_contains("one says ");
    assert!(described.starts_with("[state] "), "{described}");
    editor::in_place(&src, &with_hooks("two", 2));
    s.expect_contains("two migrate from version 1");
    s.expect_prefix("[reload] swapped logic.so (api=1, v2");
    s.expect_contains("[plugin] two on_reload");
    let carried = last_score(&s, "one");
    let first = s.expect_contains("tag=two score=");
    assert_eq!(
        field(&first, "score"),
        Some(carried * 10 + 1),
        "{}",
        s.transcript()
    );
    s.expect_contains("two says ");
    assert_eq!(s.stop(), 0, "{}", s.transcript());
}

#[test]
fn the_state_file_saves_and_restores_in_isolated_mode() {
    let dir = workdir();
    fs::write(dir.path().join("logic.c"), counter("one", 1)).expect("write");
    let mut s = isolated(dir.path(), &["--state-file", "state.bin"]);
    s.expect_contains("tag=one score=5 ");
    assert_eq!(s.stop(), 0, "{}", s.transcript());
    let saved = field(&s.expect_contains("shutdown score="), "score").expect("a score");

    let mut s = isolated(dir.path(), &["--state-file", "state.bin"]);
    s.expect_contains("restored from state.bin");
    let first = s.expect_contains("tag=one score=");
    assert_eq!(
        field(&first, "score"),
        Some(saved + 1),
        "{}",
        s.transcript()
    );
    assert_eq!(s.stop(), 0, "{}", s.transcript());
}

#[test]
fn the_worker_subcommand_typed_by_hand_refuses_and_touches_nothing() {
    let dir = workdir();
    let before = fs::read_dir(dir.path()).expect("list").count();
    let out = Command::new(support::binary())
        .arg("__hotreload-worker")
        .current_dir(dir.path())
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("internal to hotreload's isolated mode")
            && stderr.contains(
                "expected the host's socket on standard input, found another kind of file"
            ),
        "{stderr}"
    );
    assert_eq!(fs::read_dir(dir.path()).expect("list").count(), before);
}

/// Standard input a socket from its parent, as a host hands over, but
/// carrying something else than a hand-over (or descriptors meant for
/// numbers a host never uses): the worker refuses, says what it expected,
/// and opens nothing.
#[test]
fn the_worker_subcommand_refuses_a_hand_over_that_is_not_a_hosts() {
    use nix::sys::socket::{
        AddressFamily, ControlMessage, MsgFlags, SockFlag, SockType, sendmsg, socketpair,
    };
    use std::io::IoSlice;
    use std::os::fd::AsRawFd;
    let dir = workdir();
    let before = fs::read_dir(dir.path()).expect("list").count();
    let file = fs::File::open(dir.path()).expect("open the folder");
    let mut magic = b"hotreload-hand-over\0".to_vec();
    magic.extend_from_slice(&1i32.to_le_bytes());
    let cases: [(&[u8], bool, &str); 3] = [
        (
            b"garbage",
            false,
            "expected the host's hand-over, found 7 other bytes",
        ),
        (
            &magic,
            true,
            "expected a number from 3 to 9 for each of the 1 descriptors",
        ),
        (
            &magic[..magic.len() - 4],
            true,
            "for each of the 1 descriptors handed over, found []",
        ),
    ];
    for (message, with_fd, expected) in cases {
        let (ours, theirs) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .expect("socketpair");
        let child = Command::new(support::binary())
            .arg("__hotreload-worker")
            .stdin(std::process::Stdio::from(theirs))
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .current_dir(dir.path())
            .spawn()
            .expect("run the worker subcommand");
        let fds = [file.as_raw_fd()];
        let rights = [ControlMessage::ScmRights(&fds)];
        sendmsg::<()>(
            ours.as_raw_fd(),
            &[IoSlice::new(message)],
            if with_fd { &rights } else { &[] },
            MsgFlags::empty(),
            None,
        )
        .expect("send");
        let out = child.wait_with_output().expect("wait");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert!(
            stderr.contains("internal to hotreload's isolated mode") && stderr.contains(expected),
            "expected {expected:?} in: {stderr}"
        );
    }
    assert_eq!(fs::read_dir(dir.path()).expect("list").count(), before);
}

/// A version that left a thread timer calling its code every 20 ms is
/// unloaded from its worker without the timer firing into unmapped code:
/// the worker deletes it first and says so; no destructor fault, no dead
/// worker, and the next version runs.
#[test]
fn a_thread_timer_left_armed_is_deleted_before_its_worker_unloads_it() {
    let dir = workdir();
    let src = dir.path().join("logic.c");
    fs::write(&src, counter("one", 1)).expect("write");
    let mut s = isolated(dir.path(), &["--trial-ticks", "0", "--keep-versions", "1"]);
    s.expect_contains("tag=one score=3 ");
    let arm = "timer_t t; struct sigevent ev; memset(&ev, 0, sizeof ev); \
               ev.sigev_notify = SIGEV_THREAD; ev.sigev_notify_function = hr_timer_cb; \
               timer_create(CLOCK_MONOTONIC, &ev, &t); \
               struct itimerspec its = {{0, 20000000}, {0, 20000000}}; timer_settime(t, 0, &its, 0);";
    let two = faulting("two", 1, 2, arm).replace(
        "#include <sys/syscall.h>",
        "#include <sys/syscall.h>\n#include <time.h>\nstatic volatile int hr_fired;\nstatic void hr_timer_cb(union sigval v) { (void)v; hr_fired++; }",
    );
    editor::in_place(&src, &two);
    s.expect_prefix("[reload] swapped logic.so (api=1, v2");
    s.expect_contains("tag=two score=");
    // Long enough for the timer to have fired a few times.
    std::thread::sleep(std::time::Duration::from_millis(100));
    editor::in_place(&src, &counter("three", 1));
    s.expect_prefix("[reload] swapped logic.so (api=1, v3");
    let said = s.expect("the timer named", |l| {
        l.contains("v2 left a POSIX timer armed in its worker")
    });
    assert!(said.contains("deleted"), "{said}");
    s.expect_contains("tag=three score=");
    s.signal(Signal::SIGTERM);
    assert_eq!(s.exit_code(), 0, "{}", s.transcript());
    let out = s.transcript();
    assert!(
        !out.contains("[fault] v2"),
        "no fault of v2 at its unload:\n{out}"
    );
}
