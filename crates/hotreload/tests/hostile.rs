//! Plugin code that attacks the host: through the trial's back door,
//! through every hook the host calls, through process-wide state it changes,
//! through stopping the process. Each test is one way through that a
//! careful tester found, and what holds now.

mod support;

use std::fs;
use std::process::Command;
use std::time::Duration;

use nix::sys::signal::Signal;
use support::plugin::{Extended, counter};
use support::{CC_BUILD, Server, editor, field, workdir};

/// A plugin with the extended table whose `describe` and `on_unload` run
/// `describe` and `on_unload`, C statements of the caller's.
fn with_hooks(tag: &str, describe: &str, on_unload: &str) -> String {
    Extended {
        describe,
        on_unload,
        ..Extended::new(tag)
    }
    .source()
}

// Data loss first: nothing a user types turns the server into a probe.

#[test]
fn a_stray_probe_variable_changes_nothing_and_loses_nothing() {
    let dir = workdir();
    let source = counter("one", 1);
    fs::write(dir.path().join("logic.c"), &source).expect("write");
    for value in ["0", "", "1"] {
        let out = Command::new(support::binary())
            .args([
                "--watch",
                "logic.c",
                "--build",
                CC_BUILD,
                "--lib",
                "logic.so",
                "--ticks",
                "5",
                "--tick-ms",
                "5",
            ])
            .env("HOTRELOAD_PROBE", value)
            .current_dir(dir.path())
            .output()
            .expect("run");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(
            out.status.code(),
            Some(0),
            "HOTRELOAD_PROBE={value:?}: {stdout}"
        );
        assert!(stdout.contains("[plugin] tag=one score=5 "), "{stdout}");
        assert_eq!(
            fs::read_to_string(dir.path().join("logic.c")).expect("read"),
            source,
            "logic.c untouched"
        );
    }
}

#[test]
fn the_probe_subcommand_typed_by_hand_refuses_and_touches_nothing() {
    let dir = workdir();
    let source = counter("one", 1);
    fs::write(dir.path().join("logic.c"), &source).expect("write");
    // With and without descriptors 3 to 5 open on files of the user's: a
    // probe takes its orders only from a sealed memfd and a pipe.
    for script in [
        "exec \"$0\" __hotreload-probe",
        "exec \"$0\" __hotreload-probe logic.c logic.c report",
        "exec \"$0\" __hotreload-probe 3<logic.c 4<logic.c 5>>logic.c",
    ] {
        let out = Command::new("sh")
            .args(["-c", script])
            .arg(support::binary())
            .current_dir(dir.path())
            .output()
            .expect("run");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{script}: {stderr}");
        assert!(
            stderr.contains("internal to hotreload's trials"),
            "{script}: {stderr}"
        );
        assert_eq!(
            fs::read_to_string(dir.path().join("logic.c")).expect("read"),
            source,
            "{script}: logic.c untouched"
        );
        assert!(
            !dir.path().join("report").exists(),
            "{script}: nothing created"
        );
    }
}

// Every hook the host will call is tried first, under the watchdog.

#[test]
fn a_hanging_describe_is_caught_by_the_trial() {
    let dir = workdir();
    let src = dir.path().join("logic.c");
    fs::write(&src, with_hooks("one", "", "")).expect("write");
    let mut s = Server::start_default(dir.path(), &["--tick-timeout-ms", "300"]);
    s.expect_contains("[state] one says 0 (initial; v1)");
    editor::in_place(&src, &with_hooks("two", "for (;;) {}", ""));
    let rejected = s.expect_prefix("[reload] rejected: ");
    assert_eq!(
        rejected,
        "[reload] rejected: trial: hung in describe for 300 ms (keeping v1)"
    );
    s.expect_contains("tag=one score=");
    assert_eq!(s.stop(), 14);
}

#[test]
fn a_crashing_on_unload_is_caught_by_the_trial() {
    let dir = workdir();
    let src = dir.path().join("logic.c");
    fs::write(&src, with_hooks("one", "", "")).expect("write");
    let mut s = Server::start_default(dir.path(), &[]);
    s.expect_prefix("[plugin] tag=one score=2");
    editor::in_place(&src, &with_hooks("two", "", "*(volatile int*)0 = 1;"));
    let rejected = s.expect_prefix("[reload] rejected: ");
    assert!(
        rejected.starts_with(
            "[reload] rejected: trial on_unload: SIGSEGV (address not mapped) at 0x0 in on_unload"
        ) && rejected.ends_with("(keeping v1)"),
        "{rejected}"
    );
    assert_eq!(s.stop(), 14);
}

#[test]
fn a_hanging_describe_in_the_server_is_interrupted_and_ctrl_c_still_works() {
    let dir = workdir();
    let src = dir.path().join("logic.c");
    // Hangs from its second call on: the first state line is fine.
    let hang = "static int calls; if (++calls > 1) for (;;) {}";
    fs::write(&src, with_hooks("one", hang, "")).expect("write");
    let mut s = Server::start_default(
        dir.path(),
        &[
            "--tick-timeout-ms",
            "300",
            "--trial-ticks",
            "0",
            "--state-every",
            "5",
        ],
    );
    s.expect_contains("[state] one says 0 (initial; v1)");
    let fault = s.expect_prefix("[fault] v1 describe after tick 5: ");
    assert!(
        fault.contains("timeout after 300 ms")
            && fault.ends_with("describe is not called again for v1; the state is shown by field"),
        "{fault}"
    );
    // The loop goes on, and the next state line does without describe.
    let next = s.expect_contains("(v1, tick 10)");
    assert!(
        next.starts_with("[state] 4 bytes, layout unknown: "),
        "{next}"
    );
    s.signal(Signal::SIGINT);
    s.expect_prefix("[server] stopping (SIGINT)");
    s.expect_prefix("[exit] code=");
    assert_eq!(s.wait().code(), Some(0));
}

// Stopping the process is not a hang.

#[test]
fn a_process_stopped_during_a_tick_is_not_a_hang_when_it_continues() {
    let dir = workdir();
    // Every tick takes 80 ms, so the process is nearly always inside one.
    let slow = counter("one", 1).replace(
        "    state_t* s = p;\n    s->score += 1;",
        "    state_t* s = p;\n    usleep(80000);\n    s->score += 1;",
    );
    assert!(slow.contains("usleep(80000)"));
    fs::write(dir.path().join("logic.c"), slow).expect("write");
    let mut s = Server::start_default(
        dir.path(),
        &["--tick-timeout-ms", "500", "--trial-ticks", "0"],
    );
    s.expect_contains("tag=one score=2 ");
    s.signal(Signal::SIGSTOP);
    std::thread::sleep(Duration::from_millis(1500));
    s.signal(Signal::SIGCONT);
    let before = s.lines().len();
    s.expect(&format!("two ticks after line {before}"), |l| {
        l.contains("tag=one score=") && field(l, "score").is_some_and(|n| n >= 5)
    });
    assert_eq!(
        s.count(|l| l.starts_with("[fault]")),
        0,
        "a stop is not a hang:\n{}",
        s.transcript()
    );
    assert_eq!(s.stop(), 0);
}

// Process-wide state: the signal mask, the handlers, timers.

/// A counter whose tick runs `at_2` at its second call and `at_4` at its
/// fourth; trials off, so the host itself meets it.
fn changes_process_state(at_2: &str, at_4: &str, extra: &[&str]) -> (tempfile::TempDir, Server) {
    let dir = workdir();
    let source = counter("one", 1)
        .replace(
            "#include <unistd.h>",
            "#include <unistd.h>\n#include <signal.h>\n#include <sys/time.h>\n#include <sys/syscall.h>",
        )
        .replace(
            "    state_t* s = p;\n    s->score += 1;",
            &format!(
                "    state_t* s = p;\n    static int n;\n    ++n;\n    if (n == 2) {{ {at_2} }}\n    if (n == 4) {{ {at_4} }}\n    s->score += 1;"
            ),
        );
    assert!(source.contains("static int n;"), "the code was injected");
    fs::write(dir.path().join("logic.c"), source).expect("write");
    let mut args = vec!["--trial-ticks", "0"];
    args.extend_from_slice(extra);
    let server = Server::start_default(dir.path(), &args);
    (dir, server)
}

const SEGV: &str = "*(volatile int*)0 = 1;";

#[test]
fn a_mask_change_is_undone_so_faults_and_ctrl_c_keep_working() {
    // Tick 2 blocks SIGSEGV and unblocks everything else; tick 4 faults.
    let (_dir, mut s) = changes_process_state(
        "sigset_t all; sigfillset(&all); sigprocmask(SIG_UNBLOCK, &all, 0); \
         sigset_t segv; sigemptyset(&segv); sigaddset(&segv, SIGSEGV); \
         sigprocmask(SIG_BLOCK, &segv, 0);",
        SEGV,
        &[],
    );
    let guard = s.expect_prefix("[guard] v1 changed the signal mask in tick");
    assert!(guard.contains("put back after every call"), "{guard}");
    let fault = s.expect_prefix("[fault] v1 tick 3: SIGSEGV");
    assert!(fault.contains("ticking paused"), "{fault}");
    s.signal(Signal::SIGINT);
    s.expect_prefix("[server] stopping (SIGINT)");
    s.expect_prefix("[exit] code=14");
    assert_eq!(
        s.wait().code(),
        Some(14),
        "a graceful stop, not death by SIGINT"
    );
}

#[test]
fn a_handler_change_is_refused_and_the_guard_keeps_catching() {
    let (_dir, mut s) = changes_process_state(
        "signal(SIGSEGV, SIG_DFL); signal(SIGTERM, SIG_IGN); signal(SIGCHLD, SIG_IGN); \
         struct sigaction sa = {0}; sa.sa_handler = SIG_DFL; sigaction(SIGBUS, &sa, 0);",
        SEGV,
        &[],
    );
    let refused = s.expect_prefix("[guard] v1 tried to change how ");
    for signal in ["SIGSEGV", "SIGTERM", "SIGCHLD", "SIGBUS"] {
        assert!(refused.contains(signal), "{signal} in {refused}");
    }
    s.expect_prefix("[fault] v1 tick 3: SIGSEGV");
    // SIGTERM still stops the server.
    assert_eq!(s.stop(), 14);
}

#[test]
fn a_handler_replaced_with_the_raw_system_call_is_put_back() {
    // Around the interposers: the kernel's rt_sigaction, SIG_DFL for SIGSEGV
    // (struct kernel_sigaction: handler, flags, restorer, mask).
    let (_dir, mut s) = changes_process_state(
        "unsigned long ksa[4] = {0}; syscall(SYS_rt_sigaction, SIGSEGV, ksa, 0, 8);",
        "",
        &[],
    );
    let back = s.expect_prefix("[guard] the crash guard's handler for SIGSEGV had been replaced");
    assert!(back.ends_with("it is back"), "{back}");
    assert_eq!(s.stop(), 0);
}

#[test]
fn a_timer_plugin_code_arms_is_a_fault_of_its_version_not_the_end() {
    for arm in [
        "alarm(1);",
        "struct itimerval t = {{0, 0}, {0, 200000}}; setitimer(ITIMER_REAL, &t, 0);",
        // A millisecond of CPU time, spent in the same call: it fires inside
        // plugin code.
        "struct itimerval t = {{0, 0}, {0, 1000}}; setitimer(ITIMER_PROF, &t, 0); \
         for (volatile long i = 0; i < 4000000000L; i++) {}",
        // The same with SIGPROF blocked on the calling thread (the raw
        // system call, around the interposers): the kernel gives the signal
        // to another thread, the call runs on until the watchdog, and the
        // fault is still the timer's.
        "unsigned long m = 1UL << (SIGPROF - 1); syscall(SYS_rt_sigprocmask, SIG_BLOCK, &m, 0, 8); \
         struct itimerval t = {{0, 0}, {0, 1000}}; setitimer(ITIMER_PROF, &t, 0); \
         for (volatile long i = 0; i < 4000000000L; i++) {}",
    ] {
        let (_dir, mut s) = changes_process_state(arm, "", &[]);
        let fault = s.expect_prefix("[fault] v1 ");
        assert!(
            fault.contains("from a timer plugin code armed (alarm, setitimer)")
                && fault.contains("ticking paused"),
            "{arm}: {fault}"
        );
        assert_eq!(s.stop(), 14, "{arm}");
    }
}

// What a dead server leaves, and a temporary folder others control.

#[test]
fn private_folders_of_dead_servers_are_removed_and_a_live_ones_kept() {
    use std::os::unix::process::ExitStatusExt;
    let tmp = tempfile::tempdir().expect("private TMPDIR");
    let start = |dir: &std::path::Path| {
        Server::start_with_env(
            dir,
            &["--watch", "logic.c", "--build", CC_BUILD, "--tick-ms", "10"],
            &[("TMPDIR", tmp.path())],
        )
    };
    let folders = || -> Vec<std::path::PathBuf> {
        fs::read_dir(tmp.path())
            .expect("read TMPDIR")
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with("hotreload-"))
            .map(|e| e.path())
            .collect()
    };
    let alive_dir = workdir();
    fs::write(alive_dir.path().join("logic.c"), counter("alive", 1)).expect("write");
    let mut alive = start(alive_dir.path());
    alive.expect_contains("tag=alive score=1 ");
    // A server killed without a chance to clean up.
    let dir = workdir();
    fs::write(dir.path().join("logic.c"), counter("dead", 1)).expect("write");
    let mut dead = start(dir.path());
    dead.expect_contains("tag=dead score=1 ");
    dead.signal(Signal::SIGKILL);
    assert_eq!(dead.wait().signal(), Some(9));
    // A folder from before owner files, untouched for two days, and one
    // that is recent (perhaps an old server still running): only the old
    // one goes.
    for (name, age) in [
        ("hotreload-legacyOld", "2 days ago"),
        ("hotreload-legacyNew", "now"),
    ] {
        let legacy = tmp.path().join(name);
        fs::create_dir(&legacy).expect("mkdir");
        fs::write(legacy.join("1-logic.so"), "x").expect("write");
        let touched = Command::new("touch")
            .args(["-d", age])
            .arg(legacy.join("1-logic.so"))
            .arg(&legacy)
            .status()
            .expect("touch");
        assert!(touched.success());
    }
    assert_eq!(folders().len(), 4, "{:?}", folders());

    let dir = workdir();
    fs::write(dir.path().join("logic.c"), counter("new", 1)).expect("write");
    let mut s = start(dir.path());
    let said = s.expect_prefix("[server] removed 2 private folders");
    assert!(said.contains("ended abnormally"), "{said}");
    s.expect_contains("tag=new score=1 ");
    assert_eq!(
        folders().len(),
        3,
        "the live server's, the new one's and the recent legacy one: {:?}",
        folders()
    );
    assert!(tmp.path().join("hotreload-legacyNew").exists());
    alive.expect_contains("tag=alive score=");
    assert_eq!(s.stop(), 0);
    assert_eq!(alive.stop(), 0);
    assert_eq!(folders().len(), 1, "both removed their own at exit");
}

#[test]
fn a_temporary_folder_others_can_write_without_the_sticky_bit_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let dir = workdir();
    fs::write(dir.path().join("logic.c"), counter("one", 1)).expect("write");
    let open = tempfile::tempdir().expect("tmp");
    fs::set_permissions(open.path(), fs::Permissions::from_mode(0o777)).expect("chmod 777");
    let out = Command::new(support::binary())
        .args(["--watch", "logic.c", "--build", CC_BUILD])
        .env("TMPDIR", open.path())
        .current_dir(dir.path())
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("refusing the temporary folder") && stderr.contains("found mode 777"),
        "{stderr}"
    );
    // With the sticky bit, as /tmp has it, it is fine.
    fs::set_permissions(open.path(), fs::Permissions::from_mode(0o1777)).expect("chmod 1777");
    let mut s = Server::start_with_env(
        dir.path(),
        &["--watch", "logic.c", "--build", CC_BUILD, "--ticks", "3"],
        &[("TMPDIR", open.path())],
    );
    assert_eq!(s.exit_code(), 0, "{}", s.transcript());
}

// Threads plugin code starts.

/// A counter whose `init` starts a thread running `body` in a loop.
fn with_thread(tag: &str, body: &str) -> String {
    counter(tag, 1)
        .replace(
            "#include <unistd.h>",
            &format!(
                "#include <unistd.h>\n#include <pthread.h>\n\
                 static volatile long spins;\n\
                 static void* spin(void* arg) {{ (void)arg; {body} return 0; }}"
            ),
        )
        .replace(
            "    state_t* s = p;\n    s->score = 0;",
            "    state_t* s = p;\n    s->score = 0;\n    pthread_t t; pthread_create(&t, 0, spin, 0); pthread_detach(t);",
        )
}

#[test]
fn a_version_whose_thread_still_runs_is_never_unmapped_under_it() {
    let dir = workdir();
    let src = dir.path().join("logic.c");
    let forever = "for (;;) { spins++; usleep(1000); }";
    fs::write(&src, with_thread("one", forever)).expect("write");
    let mut s = Server::start_default(dir.path(), &["--keep-versions", "1", "--trial-ticks", "0"]);
    s.expect_contains("tag=one score=3 ");
    editor::in_place(&src, &counter("two", 1));
    let kept =
        s.expect_prefix("[reload] v1 stays loaded: 1 thread it started still runs its code (tid ");
    assert!(
        kept.contains("unmapping that code would kill the host"),
        "{kept}"
    );
    s.expect_contains("tag=two score=");
    // And at exit, where every version is closed, too.
    s.signal(Signal::SIGTERM);
    s.expect_prefix("[exit] code=0");
    assert_eq!(s.wait().code(), Some(0), "{}", s.transcript());
}

#[test]
fn a_version_whose_thread_has_ended_is_closed_at_the_next_retirement() {
    let dir = workdir();
    let src = dir.path().join("logic.c");
    // The thread runs until told to stop, and says when it has.
    let briefly = "while (access(\"stop-thread\", F_OK) != 0) { spins++; usleep(1000); } \
                   close(creat(\"thread-done\", 0600));";
    fs::write(&src, with_thread("one", briefly)).expect("write");
    let mut s = Server::start(
        dir.path(),
        &[
            "--watch",
            "logic.c",
            "--build",
            "cc -shared -fPIC -Wl,-z,nodelete -o logic.so logic.c",
            "--lib",
            "logic.so",
            "--tick-ms",
            "10",
            "--keep-versions",
            "1",
            "--trial-ticks",
            "0",
        ],
    );
    s.expect_contains("tag=one score=1 ");
    editor::in_place(&src, &counter("two", 1));
    s.expect_prefix("[reload] v1 stays loaded: 1 thread");
    fs::write(dir.path().join("stop-thread"), "").expect("tell the thread");
    support::wait_for_file(&dir.path().join("thread-done"));
    // Once the thread has ended, the next retirement closes v1 too (the
    // -z nodelete link makes its dlclose say so).
    editor::in_place(&src, &counter("three", 1));
    s.expect_prefix("[reload] v1 of logic.so is still mapped after dlclose");
    assert_eq!(s.stop(), 0);
}

// What the host reads: never a FIFO, never a device.

#[test]
fn a_fifo_or_a_device_as_the_build_output_is_refused_without_blocking() {
    for (make, found) in [
        ("mkfifo logic.so", "found a FIFO"),
        ("ln -s /dev/zero logic.so", "found a character device"),
    ] {
        let dir = workdir();
        let made = Command::new("sh")
            .args(["-c", make])
            .current_dir(dir.path())
            .status()
            .expect("make it");
        assert!(made.success());
        fs::write(dir.path().join("logic.c"), counter("one", 1)).expect("write");
        let mut s = Server::start(
            dir.path(),
            &["--watch", "logic.c", "--build", "true", "--lib", "logic.so"],
        );
        let rejected = s.expect_prefix("[reload] rejected: ");
        assert!(
            rejected.contains("expected the build to write logic.so")
                && rejected.contains(&format!("expected a regular file, {found}")),
            "{make}: {rejected}"
        );
        s.signal(Signal::SIGINT);
        s.expect_prefix("[exit] code=11");
        assert_eq!(s.wait().code(), Some(11), "{make}");
    }
}

#[test]
fn a_save_keeps_the_state_files_mode_and_a_new_one_is_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = workdir();
    fs::write(dir.path().join("logic.c"), counter("one", 1)).expect("write");
    let mut s = Server::start_default(dir.path(), &["--state-file", "st.bin", "--ticks", "3"]);
    assert_eq!(s.exit_code(), 0, "{}", s.transcript());
    let mode = |p: &str| {
        fs::metadata(dir.path().join(p))
            .expect("stat")
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(
        mode("st.bin"),
        0o600,
        "a new state file is its owner's only"
    );
    for kept in [0o600, 0o640] {
        fs::set_permissions(dir.path().join("st.bin"), fs::Permissions::from_mode(kept))
            .expect("chmod");
        let mut s = Server::start_default(
            dir.path(),
            &[
                "--state-file",
                "st.bin",
                "--ticks",
                "3",
                "--save-every",
                "1",
            ],
        );
        assert_eq!(s.exit_code(), 0, "{}", s.transcript());
        assert_eq!(mode("st.bin"), kept, "saves keep the mode {kept:o}");
    }
}

#[test]
fn a_fifo_as_the_state_file_is_refused_at_once() {
    let dir = workdir();
    fs::write(dir.path().join("logic.c"), counter("one", 1)).expect("write");
    let made = Command::new("mkfifo")
        .arg(dir.path().join("st.bin"))
        .status()
        .expect("mkfifo");
    assert!(made.success());
    let out = Command::new(support::binary())
        .args([
            "--watch",
            "logic.c",
            "--build",
            CC_BUILD,
            "--state-file",
            "st.bin",
        ])
        .current_dir(dir.path())
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(15), "{stderr}");
    assert!(stderr.contains("a FIFO, not a regular file"), "{stderr}");
}

// Builds that never end.

#[test]
fn a_build_past_its_timeout_is_killed_and_the_next_change_builds() {
    let dir = workdir();
    let src = dir.path().join("logic.c");
    fs::write(&src, counter("one", 1)).expect("write");
    let build = "if test -f slow; then sleep 60; fi; cc -shared -fPIC -o logic.so logic.c";
    let mut s = Server::start(
        dir.path(),
        &[
            "--watch",
            "logic.c",
            "--build",
            build,
            "--lib",
            "logic.so",
            "--tick-ms",
            "10",
            "--build-timeout",
            "1",
        ],
    );
    s.expect_contains("tag=one score=2 ");
    fs::write(dir.path().join("slow"), "").expect("make the build hang");
    editor::in_place(&src, &counter("two", 1));
    let status =
        s.expect_prefix("[build] killed after running 1 s, the build timeout (--build-timeout)");
    assert!(status.contains(" after "), "{status}");
    s.expect_prefix("[reload] rejected, keeping old plugin (v1)");
    s.expect_contains("tag=one score=");
    fs::remove_file(dir.path().join("slow")).expect("unhang");
    editor::in_place(&src, &counter("three", 1));
    s.expect_prefix("[reload] swapped logic.so (api=1, v2");
    assert_eq!(s.stop(), 0);
}

#[test]
fn a_newer_change_stops_a_hung_build_and_builds_again() {
    let dir = workdir();
    let src = dir.path().join("logic.c");
    fs::write(&src, counter("one", 1)).expect("write");
    let build =
        "if test -f hang; then touch hanging; sleep 60; fi; cc -shared -fPIC -o logic.so logic.c";
    let mut s = Server::start(
        dir.path(),
        &[
            "--watch",
            "logic.c",
            "--build",
            build,
            "--lib",
            "logic.so",
            "--tick-ms",
            "10",
        ],
    );
    s.expect_contains("tag=one score=2 ");
    fs::write(dir.path().join("hang"), "").expect("make the next build hang");
    editor::in_place(&src, &counter("two", 1));
    support::wait_for_file(&dir.path().join("hanging"));
    // Long enough for the build to count as long.
    std::thread::sleep(Duration::from_millis(2200));
    fs::remove_file(dir.path().join("hang")).expect("unhang");
    editor::in_place(&src, &counter("three", 1));
    let stopped = s.expect_prefix("[build] a source changed while the build had run ");
    assert!(
        stopped.contains("stopping it (SIGTERM, then SIGKILL)"),
        "{stopped}"
    );
    s.expect_prefix("[reload] swapped logic.so (api=1, v2");
    s.expect_contains("tag=three score=");
    assert_eq!(s.stop(), 0);
}

/// A fault in the new version's `on_reload` rolls back to the state as it
/// was handed over, not to the snapshot from before the last tick: the
/// running version goes on from where it was.
#[test]
fn a_fault_in_on_reload_keeps_the_state_the_swap_had() {
    let dir = workdir();
    let src = dir.path().join("logic.c");
    fs::write(&src, counter("one", 1)).expect("write");
    let mut s = Server::start_default(dir.path(), &["--trial-ticks", "0"]);
    s.expect_contains("tag=one score=3 ");
    let v2 = Extended {
        on_reload: "*(volatile int*)0 = 1;",
        ..Extended::new("two")
    };
    editor::in_place(&src, &v2.source());
    let fault = s.expect_prefix("[fault] v2 on_reload");
    assert!(fault.contains("rolled back to v1"), "{fault}");
    let before = s
        .lines()
        .iter()
        .take_while(|l| !l.starts_with("[fault] v2 on_reload"))
        .filter(|l| l.starts_with("[plugin] tag=one score="))
        .filter_map(|l| field(l, "score"))
        .last()
        .expect("v1 ticked");
    let next = s.expect_contains("tag=one score=");
    assert_eq!(
        field(&next, "score"),
        Some(before + 1),
        "{}",
        s.transcript()
    );
    assert_eq!(s.stop(), 14, "{}", s.transcript());
}
