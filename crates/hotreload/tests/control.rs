//! The control socket through the real binary: a real server, `hotreload
//! ctl` as the client (and raw sockets where the test needs lines no client
//! would send).

mod support;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use support::ctl::{ctl, status_json, versions_json};
use support::plugin::{Counter, counter};
use support::{CC_BUILD, Server, field, workdir};

fn serve(dir: &Path, extra: &[&str]) -> Server {
    std::fs::write(dir.join("logic.c"), counter("one", 1)).expect("write");
    let mut s = Server::start_default(dir, extra);
    s.expect_contains("tag=one score=2 ");
    s
}

#[test]
fn ctl_in_the_same_folder_finds_the_server_and_reads_its_status() {
    let dir = workdir();
    let mut s = serve(dir.path(), &[]);
    let (code, stdout, stderr) = ctl(dir.path(), &["status"]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.starts_with("v1 running, ticking, tick "), "{stdout}");
    assert!(stdout.contains("last reload: swapped"), "{stdout}");
    let status = status_json(dir.path());
    assert_eq!(status["result"]["version"], 1);
    assert_eq!(status["result"]["paused"], false);
    assert!(status["result"]["tick"].as_u64().is_some_and(|t| t >= 2));
    assert_eq!(s.stop(), 0);
    // The socket goes with the server.
    let (code, _, stderr) = ctl(dir.path(), &["status"]);
    assert_eq!(code, 3, "{stderr}");
    assert!(stderr.contains("no hotreload server answers"), "{stderr}");
}

/// Pause holds between two ticks; `step 3` runs exactly three ticks and
/// holds again; resume goes on with no burst of the ticks the pause took.
#[test]
fn pause_step_and_resume_count_exact_ticks() {
    let dir = workdir();
    let mut s = serve(dir.path(), &[]);
    let (code, _, stderr) = ctl(dir.path(), &["step", "2"]);
    assert_eq!(code, 5, "step while ticking is refused: {stderr}");
    assert!(stderr.contains("not_paused"), "{stderr}");

    assert_eq!(ctl(dir.path(), &["pause"]).0, 0);
    let paused = s.expect_prefix("[tick] paused after tick ");
    let at = field(&paused.replace("tick ", "tick="), "tick").expect("the tick");
    std::thread::sleep(Duration::from_millis(300));
    let status = status_json(dir.path());
    assert_eq!(status["result"]["paused"], true);
    assert_eq!(
        status["result"]["tick"].as_u64(),
        Some(at as u64),
        "no tick while paused"
    );
    let scores_before = s.count(|l| l.contains("tag=one score="));

    assert_eq!(ctl(dir.path(), &["step", "3"]).0, 0);
    let stepped = s.expect_prefix("[tick] stepped 3 ticks; paused after tick ");
    assert!(stepped.ends_with(&format!("tick {}", at + 3)), "{stepped}");
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        s.count(|l| l.contains("tag=one score=")),
        scores_before + 3,
        "{}",
        s.transcript()
    );

    assert_eq!(ctl(dir.path(), &["resume"]).0, 0);
    s.expect_prefix("[tick] resumed after tick ");
    s.expect_contains(&format!("tag=one score={} ", at + 10));
    assert_eq!(
        s.count(|l| l.starts_with("[tick] fell")),
        0,
        "{}",
        s.transcript()
    );
    assert_eq!(s.stop(), 0);
}

#[test]
fn stop_reload_and_save_through_the_socket() {
    let dir = workdir();
    let mut s = serve(dir.path(), &[]);
    let (code, _, stderr) = ctl(dir.path(), &["save"]);
    assert_eq!(code, 6, "no --state-file: {stderr}");
    assert!(stderr.contains("--state-file"), "{stderr}");
    assert_eq!(ctl(dir.path(), &["reload"]).0, 0);
    s.expect_prefix("[watch] rebuild requested");
    assert_eq!(ctl(dir.path(), &["stop"]).0, 0);
    s.expect_prefix("[server] stopping (requested)");
    assert_eq!(s.exit_code(), 0);

    let dir = workdir();
    let mut s = serve(dir.path(), &["--state-file", "st.bin"]);
    assert_eq!(ctl(dir.path(), &["save"]).0, 0);
    support::wait_for_file(&dir.path().join("st.bin"));
    assert_eq!(s.stop(), 0);
}

/// A second server in the same folder is refused before it builds
/// anything, naming the first; a dead server's socket is replaced.
#[test]
fn a_live_socket_is_kept_and_a_stale_one_replaced() {
    let dir = workdir();
    let mut first = serve(dir.path(), &[]);
    let out = Command::new(support::binary())
        .args(["--watch", "logic.c", "--build", CC_BUILD])
        .current_dir(dir.path())
        .output()
        .expect("run a second server");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(18), "{stderr}");
    assert!(
        stderr.contains(&format!("another hotreload server (pid {})", first.pid())),
        "{stderr}"
    );
    assert!(
        first
            .lines()
            .iter()
            .all(|l| !l.starts_with("[control] refused"))
    );
    assert_eq!(first.stop(), 0);

    // A socket nobody listens on, as a killed server leaves it.
    let control = dir.path().join("ctl").join("s.sock");
    std::fs::create_dir_all(control.parent().expect("folder")).expect("mkdir");
    std::fs::set_permissions(
        control.parent().expect("folder"),
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )
    .expect("chmod");
    drop(UnixListener::bind(&control).expect("bind"));
    assert!(control.exists());
    let arg = control.to_str().expect("utf-8 path");
    let mut s = serve(dir.path(), &["--control", arg]);
    let (code, stdout, stderr) = ctl(dir.path(), &["--control", arg, "status"]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert_eq!(s.stop(), 0);
}

/// `status` is answered from what the engine's threads wrote, never by
/// waiting for them: here the tick thread is stuck in a hung call.
#[test]
fn status_answers_while_a_plugin_call_hangs() {
    let dir = workdir();
    let src = dir.path().join("logic.c");
    std::fs::write(&src, counter("one", 1)).expect("write");
    let mut s = Server::start_default(
        dir.path(),
        &["--tick-timeout-ms", "4000", "--trial-ticks", "0"],
    );
    s.expect_contains("tag=one score=2 ");
    let hangs = Counter {
        fault_at: Some((2, "for (;;) {}")),
        ..Counter::new("two", 10)
    }
    .source();
    std::fs::write(&src, hangs).expect("write the hanging one");
    s.expect_prefix("[reload] swapped logic.so (api=1, v2");
    s.expect_contains("tag=two score=");
    std::thread::sleep(Duration::from_millis(300));
    let asked = Instant::now();
    let status = status_json(dir.path());
    assert!(
        asked.elapsed() < Duration::from_millis(1500),
        "status took {:?}",
        asked.elapsed()
    );
    assert_eq!(status["result"]["version"], 2);
    // Requests that need the tick thread are answered at once too: busy,
    // and nothing done (never later, behind the client's back).
    for args in [
        &["rollback", "v1"][..],
        &["set", "@0:i32", "5"][..],
        &["get", "@0:i32"][..],
        &["state"][..],
    ] {
        let asked = Instant::now();
        let (code, _, stderr) = ctl(dir.path(), args);
        assert!(
            asked.elapsed() < Duration::from_millis(1000),
            "{args:?} took {:?}",
            asked.elapsed()
        );
        assert_eq!(code, 6, "{args:?}: {stderr}");
        assert!(
            stderr.contains("found it inside v2's plugin code for "),
            "{args:?}: {stderr}"
        );
    }
    let asked = Instant::now();
    assert_eq!(ctl(dir.path(), &["pause"]).0, 0);
    assert!(asked.elapsed() < Duration::from_millis(1000));
    s.expect_prefix("[fault] v2 tick ");
    // The pause was taken once the call was cut off; the set was not.
    s.expect_prefix("[tick] paused after tick ");
    assert!(
        !s.transcript().contains("[state] set "),
        "{}",
        s.transcript()
    );
    assert_eq!(s.stop(), 14);
}

/// While a build runs (here one that sleeps for 3 s), rollback is answered
/// and done at once: builds never hold the control channel.
#[test]
fn rollback_answers_while_a_build_runs() {
    let dir = workdir();
    let src = dir.path().join("logic.c");
    std::fs::write(&src, counter("one", 1)).expect("write");
    let build = format!(
        "if [ -e slow ]; then touch building.flag; sleep 3; fi; {CC_BUILD}; status=$?; rm -f building.flag; exit $status"
    );
    let mut s = Server::start(
        dir.path(),
        &["--watch", "logic.c", "--build", &build, "--tick-ms", "10"],
    );
    s.expect_contains("tag=one score=2 ");
    std::fs::write(&src, counter("two", 10)).expect("write");
    s.expect_prefix("[reload] swapped logic.so (api=1, v2");
    std::fs::write(dir.path().join("slow"), "").expect("write");
    std::fs::write(&src, counter("three", 100)).expect("write");
    support::wait_for_file(&dir.path().join("building.flag"));
    let asked = Instant::now();
    let (code, stdout, stderr) = ctl(dir.path(), &["rollback", "v1"]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(
        asked.elapsed() < Duration::from_millis(1000),
        "rollback took {:?}",
        asked.elapsed()
    );
    s.expect_prefix("[reload] rolled back from v2 to v1 on request");
    assert!(
        dir.path().join("building.flag").exists(),
        "the build still runs"
    );
    s.expect_prefix("[reload] swapped logic.so (api=1, v3");
    assert_eq!(s.stop(), 0);
}
