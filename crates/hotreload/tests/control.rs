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
    assert!(stdout.contains("last reload: loaded"), "{stdout}");
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

    // `step` returns once its ticks have run: the next request sees them.
    let (code, stdout, stderr) = ctl(dir.path(), &["step", "3"]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(
        stdout.trim(),
        format!(
            "stepped 3 tick(s): from tick {at} to tick {}; paused",
            at + 3
        )
    );
    assert_eq!(
        status_json(dir.path())["result"]["tick"].as_u64(),
        Some(at as u64 + 3)
    );
    let stepped = s.expect_prefix("[tick] stepped 3 ticks; paused after tick ");
    assert!(stepped.ends_with(&format!("tick {}", at + 3)), "{stepped}");
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        s.count(|l| l.contains("tag=one score=")),
        scores_before + 3,
        "{}",
        s.transcript()
    );

    // A step while another runs is refused, not merged or lost.
    let long = std::thread::spawn({
        let dir = dir.path().to_path_buf();
        move || ctl(&dir, &["step", "50"])
    });
    let deadline = Instant::now() + Duration::from_secs(5);
    while status_json(dir.path())["result"]["steps_left"]
        .as_u64()
        .unwrap_or(0)
        == 0
    {
        assert!(Instant::now() < deadline, "the step of 50 never started");
        std::thread::sleep(Duration::from_millis(5));
    }
    let (code, _, stderr) = ctl(dir.path(), &["step", "5"]);
    assert_eq!(code, 5, "{stderr}");
    assert!(
        stderr.contains("found a step in progress with "),
        "{stderr}"
    );
    let (code, stdout, stderr) = long.join().expect("the long step");
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains(&format!("to tick {}", at + 53)), "{stdout}");

    let (code, stdout, _) = ctl(dir.path(), &["pause"]);
    assert_eq!(code, 0);
    assert!(stdout.starts_with("already paused"), "{stdout}");
    assert_eq!(ctl(dir.path(), &["resume"]).0, 0);
    s.expect_prefix("[tick] resumed after tick ");
    let (_, stdout, _) = ctl(dir.path(), &["resume"]);
    assert!(stdout.starts_with("already ticking"), "{stdout}");
    s.expect_contains(&format!("tag=one score={} ", at + 60));
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
    // Said when done, as the save at exit is.
    s.expect_prefix("[state] saved to st.bin at tick ");
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

fn connect(dir: &Path) -> (UnixStream, BufReader<UnixStream>) {
    let path: PathBuf = hotreload_control::socket_path(dir);
    let stream = UnixStream::connect(&path).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut reader = BufReader::new(stream.try_clone().expect("clone"));
    let mut hello = String::new();
    reader.read_line(&mut hello).expect("hello");
    assert!(hello.starts_with("{\"hello\":{"), "{hello}");
    assert!(hello.contains("\"protocol\":1"), "{hello}");
    (stream, reader)
}

/// 10,000 random, truncated and oversized lines on a live server: each gets
/// exactly one error reply, the server keeps ticking, and a good request
/// after them is answered.
#[test]
fn garbage_lines_each_get_a_reply_and_the_server_stays_up() {
    let dir = workdir();
    let mut s = serve(dir.path(), &[]);
    let (mut stream, mut reader) = connect(dir.path());
    let mut seed = 0x5eed_u64;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let valid = b"{\"id\":7,\"cmd\":\"step\",\"n\":3}";
    let mut sent = 0;
    let mut batch = Vec::new();
    while sent < 10_000 {
        let line: Vec<u8> = match sent % 4 {
            0 => valid[..(next() as usize % valid.len())].to_vec(),
            1 => (0..(next() % 80))
                .map(|_| (next() % 94 + 32) as u8)
                .collect(),
            2 => {
                let mut v = valid.to_vec();
                let at = next() as usize % v.len();
                v[at] = (next() % 94 + 32) as u8;
                v
            }
            _ => format!("{{\"id\":{sent},\"cmd\":\"nope{}\"}}", next() % 1000).into_bytes(),
        };
        let line: Vec<u8> = line.into_iter().filter(|&b| b != b'\n').collect();
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        batch.extend_from_slice(&line);
        batch.push(b'\n');
        sent += 1;
        if sent % 500 == 0 {
            stream.write_all(&batch).expect("send");
            batch.clear();
            for _ in 0..500 {
                let mut reply = String::new();
                reader.read_line(&mut reply).expect("a reply");
                let v: serde_json::Value = serde_json::from_str(&reply).expect("a JSON reply");
                assert!(v.get("id").is_some() && v["ok"].is_boolean(), "{reply}");
                if v["ok"] == false {
                    assert!(
                        v["error"]["message"]
                            .as_str()
                            .is_some_and(|m| m.contains("expected")),
                        "{reply}"
                    );
                }
            }
        }
    }
    // One longer than the cap.
    let mut long = vec![b'x'; hotreload_control::MAX_LINE + 10];
    long.push(b'\n');
    stream.write_all(&long).expect("send");
    let mut reply = String::new();
    reader.read_line(&mut reply).expect("a reply");
    assert!(reply.contains("too_long"), "{reply}");
    stream
        .write_all(b"{\"id\":99,\"cmd\":\"status\"}\n")
        .expect("send");
    let mut reply = String::new();
    reader.read_line(&mut reply).expect("a reply");
    let v: serde_json::Value = serde_json::from_str(&reply).expect("a JSON reply");
    assert_eq!(
        (v["id"].as_u64(), v["ok"].as_bool()),
        (Some(99), Some(true)),
        "{reply}"
    );
    let before = s.count(|l| l.contains("tag=one score="));
    s.expect_contains(&format!("tag=one score={} ", before + 3));
    assert_eq!(s.stop(), 0);
}

/// Events: from seq 0 the whole kept history comes first, numbered in
/// order, then new ones as they happen.
#[test]
fn events_from_a_seq_resend_what_was_missed() {
    let dir = workdir();
    let mut s = serve(dir.path(), &[]);
    let (mut stream, mut reader) = connect(dir.path());
    stream
        .write_all(b"{\"id\":1,\"cmd\":\"events\",\"from\":0}\n")
        .expect("send");
    let mut reply = String::new();
    reader.read_line(&mut reply).expect("reply");
    let v: serde_json::Value = serde_json::from_str(&reply).expect("a JSON reply");
    assert_eq!(
        (v["id"].as_u64(), v["ok"].as_bool()),
        (Some(1), Some(true)),
        "{reply}"
    );
    let mut seqs = Vec::new();
    let mut kinds = Vec::new();
    for _ in 0..4 {
        let mut line = String::new();
        reader.read_line(&mut line).expect("an event");
        let v: serde_json::Value = serde_json::from_str(&line).expect("JSON");
        seqs.push(v["event"]["seq"].as_u64().expect("seq"));
        kinds.push(v["event"]["kind"].as_str().unwrap_or("").to_owned());
    }
    assert_eq!(seqs, vec![0, 1, 2, 3]);
    assert_eq!(kinds[0], "running", "{kinds:?}");
    // A new event arrives as it happens.
    assert_eq!(ctl(dir.path(), &["reload"]).0, 0);
    let mut found = false;
    for _ in 0..50 {
        let mut line = String::new();
        reader.read_line(&mut line).expect("an event");
        if line.contains("\"kind\":\"rebuild_requested\"") {
            found = true;
            break;
        }
    }
    assert!(found);
    assert_eq!(s.stop(), 0);
}

/// Only the server's own user may drive it: a server run as another user
/// refuses root's connection (root passes the folder's permissions, not the
/// peer check) and says so.
#[test]
fn another_user_is_refused_with_a_line() {
    let dir = workdir();
    std::fs::write(dir.path().join("logic.c"), counter("one", 1)).expect("write");
    let control = dir.path().join("ctl").join("s.sock");
    let arg = control.to_str().expect("utf-8");
    let args = ["--watch", "logic.c", "--build", CC_BUILD, "--control", arg];
    let Some(mut s) = support::start_as_nobody(dir.path(), &args) else {
        return;
    };
    s.expect_contains("tag=one score=2 ");
    let (code, _, stderr) = ctl(dir.path(), &["--control", arg, "status"]);
    assert_ne!(code, 0, "{stderr}");
    let refused = s.expect_prefix("[control] refused a control connection from uid 0");
    assert!(refused.contains("only uid 65534"), "{refused}");
    s.signal(nix::sys::signal::Signal::SIGTERM);
    assert_eq!(s.exit_code(), 0);
}

/// A client that asks for events and never reads them is dropped once it
/// falls behind, with a line; the tick loop never waits for it.
#[test]
fn a_follower_that_stops_reading_is_dropped_and_never_slows_ticks() {
    let dir = workdir();
    std::fs::write(dir.path().join("logic.c"), counter("one", 1)).expect("write");
    let mut s = Server::start(
        dir.path(),
        &[
            "--watch",
            "logic.c",
            "--build",
            CC_BUILD,
            "--tick-ms",
            "1",
            "--state-every",
            "1",
        ],
    );
    s.expect_contains("tag=one score=2 ");
    let (mut stream, _reader) = connect(dir.path());
    stream
        .write_all(b"{\"id\":1,\"cmd\":\"events\"}\n")
        .expect("send");
    // Never read: the socket's buffer, then the follower's queue, fill.
    let dropped = s.wait_line(Duration::from_secs(30), |l| {
        l.starts_with("[control] dropped a control client that")
    });
    assert!(
        matches!(dropped, support::Waited::Line(_)),
        "{}",
        s.transcript()
    );
    s.signal(nix::sys::signal::Signal::SIGTERM);
    let stats = s.expect_prefix("[tick] ");
    assert!(stats.contains("; 0 skipped)"), "{stats}");
    assert_eq!(s.exit_code(), 0);
}

/// `ctl wait KIND` returns at the next event of that kind, for scripts:
/// here, the swap after an edit; and gives up with its own code.
#[test]
fn wait_returns_at_the_next_event_of_a_kind() {
    let dir = workdir();
    let mut s = serve(dir.path(), &[]);
    let (code, _, stderr) = ctl(dir.path(), &["wait", "fault", "--timeout", "0.5"]);
    assert_eq!(code, 9, "{stderr}");
    // A kind no event has is a mistake, said at once.
    let (code, _, stderr) = ctl(dir.path(), &["wait", "swaped"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("expected an event kind (server_notice, running"),
        "{stderr}"
    );
    let folder = dir.path().to_path_buf();
    let waiter = std::thread::spawn(move || ctl(&folder, &["wait", "swapped", "--timeout", "20"]));
    // Events without a line of their own come on the channel too.
    let folder = dir.path().to_path_buf();
    let started = std::thread::spawn(move || {
        ctl(
            &folder,
            &["wait", "build_started", "--json", "--timeout", "20"],
        )
    });
    // Give the waiter time to start and follow before the change (it waits
    // for the next swap, so one before it follows would be missed).
    std::thread::sleep(Duration::from_secs(1));
    std::fs::write(dir.path().join("logic.c"), counter("two", 10)).expect("write");
    let (code, stdout, stderr) = waiter.join().expect("the waiter");
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.starts_with("[reload] swapped logic.so (api=1, v2"),
        "{stdout}"
    );
    let (code, stdout, stderr) = started.join().expect("the other waiter");
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("\"kind\":\"build_started\""), "{stdout}");
    assert_eq!(s.stop(), 0);
}

/// `--events json`: standard output is one JSON event per line, the same
/// objects the socket sends; plugin output goes to standard error.
#[test]
fn events_json_keeps_standard_output_to_json_lines() {
    let dir = workdir();
    std::fs::write(dir.path().join("logic.c"), counter("one", 1)).expect("write");
    let out = Command::new(support::binary())
        .args(["--watch", "logic.c", "--build", CC_BUILD, "--tick-ms", "10"])
        .args(["--ticks", "5", "--events", "json", "--no-control"])
        .current_dir(dir.path())
        .output()
        .expect("run");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
    let mut kinds = Vec::new();
    let mut events = Vec::new();
    for (i, line) in stdout.lines().enumerate() {
        let v: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("line {i} is not JSON ({e}): {line}"));
        assert_eq!(v["event"]["seq"].as_u64(), Some(i as u64), "{line}");
        kinds.push(v["event"]["kind"].as_str().unwrap_or("").to_owned());
        events.push(v["event"].clone());
    }
    // The facts of an event come as fields, not only in its text.
    let of = |kind: &str| {
        events
            .iter()
            .find(|e| e["kind"] == kind)
            .unwrap_or_else(|| panic!("no {kind} event: {stdout}"))
            .clone()
    };
    let swapped = of("swapped");
    assert_eq!(swapped["fields"]["version"], 1, "{swapped}");
    assert_eq!(swapped["fields"]["lib"], "logic.so", "{swapped}");
    assert!(of("build_succeeded")["fields"]["duration_ms"].is_number());
    assert_eq!(of("exited")["fields"]["code"], 0);
    assert_eq!(of("tick_stats")["fields"]["ticks"], 5);
    assert_eq!(
        kinds.first().map(String::as_str),
        Some("running"),
        "{kinds:?}"
    );
    assert_eq!(
        kinds.last().map(String::as_str),
        Some("exited"),
        "{kinds:?}"
    );
    assert!(stderr.contains("[plugin] tag=one score=5"), "{stderr}");
}

/// `ctl state` shows the fields, read between two ticks, also while paused.
#[test]
fn state_shows_the_fields_between_two_ticks() {
    let dir = workdir();
    std::fs::write(
        dir.path().join("logic.c"),
        support::plugin::Extended::new("one").source(),
    )
    .expect("write");
    let mut s = Server::start_default(dir.path(), &[]);
    s.expect_contains("one says ");
    assert_eq!(ctl(dir.path(), &["pause"]).0, 0);
    s.expect_prefix("[tick] paused after tick ");
    let (code, stdout, stderr) = ctl(dir.path(), &["state"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.starts_with("[state] "), "{stdout}");
    assert!(
        stdout.contains("one says ") && stdout.contains("on request"),
        "{stdout}"
    );
    assert_eq!(s.stop(), 0);
}

/// `get`, `set` and `undo` on the example counter (which declares its
/// fields): values checked against the layout, applied between two ticks,
/// said with the old and the new value, and undone.
#[test]
fn set_checks_against_the_layout_applies_between_ticks_and_undoes() {
    let dir = workdir();
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/counter/logic.c");
    std::fs::copy(&example, dir.path().join("logic.c")).expect("copy the example");
    let mut s = Server::start_default(dir.path(), &[]);
    s.expect_prefix("[reload] loaded logic.so");
    assert_eq!(ctl(dir.path(), &["pause"]).0, 0);
    s.expect_prefix("[tick] paused after tick ");
    let (code, stdout, stderr) = ctl(dir.path(), &["get", "score"]);
    assert_eq!(code, 0, "{stderr}");
    let before: i64 = stdout
        .trim()
        .strip_prefix("score = ")
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{stdout}"));

    let (code, stdout, stderr) = ctl(dir.path(), &["set", "score", "1000"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.starts_with(&format!("score: {before} -> 1000")),
        "{stdout}"
    );
    s.expect_prefix(&format!("[state] set score: {before} -> 1000 (after tick "));
    assert_eq!(ctl(dir.path(), &["step", "1"]).0, 0);
    s.expect_prefix("[tick] stepped 1 tick;");
    let (_, stdout, _) = ctl(dir.path(), &["get", "score"]);
    assert_eq!(
        stdout.trim(),
        "score = 1001",
        "the plugin ticked from the value set"
    );

    let (code, stdout, stderr) = ctl(dir.path(), &["undo"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.starts_with(&format!("undid the set of score: 1001 -> {before}")),
        "{stdout}"
    );
    s.expect_prefix(&format!("[state] undid the set of score: 1001 -> {before}"));
    let (code, _, stderr) = ctl(dir.path(), &["undo"]);
    assert_eq!(code, 8, "nothing left to undo: {stderr}");

    for (args, says) in [
        (
            &["set", "score", "abc"][..],
            "expected an integer for score (int32), found \"abc\"",
        ),
        (
            &["set", "score", "3000000000"][..],
            "expected -2147483648 to 2147483647 for score",
        ),
        (
            &["set", "lives", "3"][..],
            "found no \"lives\"; the fields are score",
        ),
        (
            &["set", "@4000:i32", "1"][..],
            "to lie inside the 4-byte state",
        ),
        (&["set", "@0:int", "1"][..], "expected a type of i8"),
    ] {
        let (code, _, stderr) = ctl(dir.path(), args);
        assert_eq!(code, 8, "{args:?}: {stderr}");
        assert!(stderr.contains(says), "{args:?}: {stderr}");
    }
    let (code, stdout, stderr) = ctl(dir.path(), &["set", "@0:i32", "-7"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("-> -7"), "{stdout}");
    assert_eq!(s.stop(), 0);
}

/// `versions` lists every build that reached the loader, with what became
/// of it: the live one, the good ones it replaced, a rejected one (no
/// version number), a faulted one; and which are loaded.
#[test]
fn versions_list_every_build_and_what_became_of_it() {
    let dir = workdir();
    let src = dir.path().join("logic.c");
    std::fs::write(&src, counter("one", 1)).expect("write");
    let mut s = Server::start_default(dir.path(), &["--trial-ticks", "0"]);
    s.expect_contains("tag=one score=2 ");
    std::fs::write(&src, counter("two", 10)).expect("write");
    s.expect_prefix("[reload] swapped logic.so (api=1, v2");
    let wrong_api = Counter {
        api: 99,
        ..Counter::new("bad", 1)
    }
    .source();
    std::fs::write(&src, wrong_api).expect("write");
    s.expect_prefix("[reload] rejected");
    let faults = Counter {
        fault_at: Some((2, "*(volatile int*)0 = 1;")),
        ..Counter::new("three", 100)
    }
    .source();
    std::fs::write(&src, faults).expect("write");
    s.expect_prefix("[fault] v3 ");
    let (v, stdout) = versions_json(dir.path());
    let rows = v["result"]["versions"]
        .as_array()
        .expect("versions")
        .clone();
    let outcome = |i: usize| rows[i]["outcome"].as_str().unwrap_or("").to_owned();
    assert_eq!(rows.len(), 4, "{stdout}");
    assert_eq!(
        (rows[0]["version"].as_u64(), outcome(0)),
        (Some(1), "good".to_owned())
    );
    assert_eq!(
        (rows[1]["version"].as_u64(), outcome(1)),
        (Some(2), "live".to_owned()),
        "{stdout}"
    );
    assert!(
        rows[2]["version"].is_null() && outcome(2).starts_with("rejected: "),
        "{stdout}"
    );
    assert_eq!(rows[3]["version"].as_u64(), Some(3));
    assert!(outcome(3).starts_with("faulted: SIGSEGV"), "{stdout}");
    assert_eq!(rows[1]["loaded"], true);
    assert_eq!(rows[3]["loaded"], false);
    let (_, text, _) = ctl(dir.path(), &["versions"]);
    assert!(text.lines().count() == 5 && text.contains("live"), "{text}");
    // The last reload faulted.
    assert_eq!(s.stop(), 14);
}

/// `hotreload ctl events | head -1`: the reader goes away, and ctl ends
/// quietly with 0, not with a panic about a broken pipe.
#[test]
fn events_end_quietly_when_the_reader_goes_away() {
    let dir = workdir();
    let mut s = serve(dir.path(), &[]);
    let mut child = Command::new(support::binary())
        .args(["ctl", "events", "--from", "0"])
        .current_dir(dir.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run ctl events");
    let mut out = BufReader::new(child.stdout.take().expect("stdout"));
    let mut first = String::new();
    out.read_line(&mut first).expect("a line");
    assert!(first.starts_with('['), "{first}");
    drop(out);
    // Events keep coming (a state line per tick would be enough; a reload
    // makes sure).
    assert_eq!(ctl(dir.path(), &["reload"]).0, 0);
    let status = child.wait().expect("ctl ends");
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().expect("stderr"), &mut stderr)
        .expect("read stderr");
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(s.stop(), 0);
}

/// `hotreload ctl status | true`: the reader is gone before the reply is
/// written (`true` reads nothing and exits while ctl still waits for the
/// server). The reply ends quietly with the command's own code, not with a
/// panic about a broken pipe.
#[test]
fn a_reply_ends_quietly_when_the_reader_is_gone() {
    let dir = workdir();
    let mut s = serve(dir.path(), &[]);
    for command in ["status", "versions"] {
        let out = Command::new("bash")
            .arg("-c")
            .arg(format!(
                "\"$0\" ctl {command} | true; echo \"ctl exit ${{PIPESTATUS[0]}}\""
            ))
            .arg(support::binary())
            .current_dir(dir.path())
            .output()
            .expect("run bash");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stdout.contains("ctl exit 0"), "{command}: {stdout}{stderr}");
        assert!(!stderr.contains("panicked"), "{command}: {stderr}");
    }
    assert_eq!(s.stop(), 0);
}
