//! The state file through the real binary: saved at exit and every N
//! ticks, restored at start (across a layout change too), an unusable file
//! refused and left untouched, `--fresh-state`, and `kill -9` during saves
//! never leaving a file the next run cannot restore.
//!
//! Every plugin here is real C built by a real `cc`; every assertion is on
//! what the real binary prints or writes.

mod support;

use support::state_plugin::{
    CC_DEBUG, Plugin, counter_plugin, expect_score, run, start, two_places,
};
use support::{field, workdir};

// ---------------------------------------------------------------------------
// 7. The state file.
// ---------------------------------------------------------------------------

#[test]
fn the_state_file_round_trips_across_runs() {
    let dir = workdir();
    std::fs::write(dir.path().join("logic.c"), counter_plugin("one")).expect("write");
    let args = ["--state-file", "state.bin", "--ticks", "5"];
    let (code, first) = run(dir.path(), CC_DEBUG, &args);
    assert_eq!(code, 0, "{}", first.transcript());
    assert_eq!(first.count(|l| l == "[plugin] init"), 1);
    assert_eq!(
        first.count(|l| two_places(l) == "[state] score=15 time=1.05 (final; v1, tick 5)"),
        1,
        "{}",
        first.transcript()
    );
    assert_eq!(
        first.count(|l| l == "[state] saved to state.bin at tick 5"),
        1
    );

    let (code, second) = run(dir.path(), CC_DEBUG, &args);
    assert_eq!(code, 0, "{}", second.transcript());
    assert_eq!(
        second
            .count(|l| two_places(l) == "[state] score=15 time=1.05 (restored from state.bin; v1)"),
        1,
        "{}",
        second.transcript()
    );
    assert_eq!(second.count(|l| l == "[plugin] init"), 0, "no init");
    assert_eq!(second.count(|l| l.contains("tag=one score=16")), 1);
    assert_eq!(
        second.count(|l| two_places(l) == "[state] score=20 time=1.10 (final; v1, tick 5)"),
        1,
        "{}",
        second.transcript()
    );
}

#[test]
fn the_state_file_migrates_across_a_layout_change_between_runs() {
    let dir = workdir();
    let src = dir.path().join("logic.c");
    std::fs::write(&src, counter_plugin("one")).expect("write");
    let args = ["--state-file", "state.bin", "--ticks", "4"];
    let (code, first) = run(dir.path(), CC_DEBUG, &args);
    assert_eq!(code, 0, "{}", first.transcript());

    let v2 = Plugin {
        fields: "int lives; double time; int score;",
        init: "s->score = 10; s->time = 1.0; printf(\"[plugin] init\\n\");",
        tick: "s->score += 1; s->lives += 2; printf(\"[plugin] tag=two score=%d lives=%d\\n\", s->score, s->lives);",
        ..Plugin::default()
    };
    std::fs::write(&src, v2.source()).expect("write v2");
    let (code, second) = run(dir.path(), CC_DEBUG, &args);
    assert_eq!(code, 0, "{}", second.transcript());
    assert_eq!(
        second.count(|l| two_places(l)
            == "[state] lives=0 time=1.04 score=14 (restored from state.bin (migrated: +lives); v1)"),
        1,
        "{}",
        second.transcript()
    );
    assert_eq!(second.count(|l| l == "[plugin] init"), 0);
    assert_eq!(
        second.count(|l| l == "[plugin] tag=two score=15 lives=2"),
        1
    );

    // And the file now holds the new layout: a third run restores it as is.
    let (code, third) = run(dir.path(), CC_DEBUG, &args);
    assert_eq!(code, 0, "{}", third.transcript());
    assert_eq!(
        third
            .count(|l| two_places(l)
                == "[state] lives=8 time=1.04 score=18 (restored from state.bin; v1)"),
        1,
        "{}",
        third.transcript()
    );
}

/// Saves a good state file in a fresh work folder and returns the folder.
fn saved_state() -> tempfile::TempDir {
    let dir = workdir();
    std::fs::write(dir.path().join("logic.c"), counter_plugin("one")).expect("write");
    let (code, s) = run(
        dir.path(),
        support::CC_BUILD,
        &["--state-file", "state.bin", "--ticks", "3"],
    );
    assert_eq!(code, 0, "{}", s.transcript());
    assert!(dir.path().join("state.bin").exists());
    dir
}

#[test]
fn an_unusable_state_file_stops_the_start_and_is_left_untouched() {
    let dir = saved_state();
    let path = dir.path().join("state.bin");
    let good = std::fs::read(&path).expect("read the state file");
    let mut flipped = good.clone();
    // A byte of the state itself (the file ends with its 16 bytes and a
    // 4-byte checksum).
    let at = flipped.len() - 10;
    flipped[at] ^= 0x5a;
    let cases: [(&str, Vec<u8>, &str); 3] = [
        ("corrupt", flipped, "corrupt state file: checksum mismatch"),
        (
            "truncated",
            good[..good.len() - 7].to_vec(),
            "truncated state file: expected",
        ),
        (
            "foreign",
            b"score = 15\nthis is my notes file\n".to_vec(),
            "not a hotreload state file",
        ),
    ];
    for (what, bytes, message) in cases {
        std::fs::write(&path, &bytes).expect("write the bad file");
        // The server stops before anything starts; read its stderr whole
        // (--ticks ends a server that wrongly starts anyway).
        let out = std::process::Command::new(support::binary())
            .args(["--watch", "logic.c", "--build", support::CC_BUILD])
            .args([
                "--tick-ms",
                "10",
                "--state-file",
                "state.bin",
                "--ticks",
                "3",
            ])
            .current_dir(dir.path())
            .stdin(std::process::Stdio::null())
            .output()
            .expect("run hotreload");
        let (stdout, stderr) = (
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
        );
        assert_eq!(out.status.code(), Some(15), "{what}: {stdout}{stderr}");
        let error = stderr.trim_end();
        assert!(
            error.starts_with("hotreload: error: cannot restore the state from state.bin: ")
                && error.contains(message)
                && error.contains("the file was left untouched")
                && error.contains("--fresh-state")
                && !error.contains('\n'),
            "{what}: {error}"
        );
        assert_eq!(stdout, "", "{what}: nothing ran");
        assert_eq!(
            std::fs::read(&path).expect("read back"),
            bytes,
            "{what}: the file is byte for byte as it was"
        );
    }
}

#[test]
fn fresh_state_starts_over_and_overwrites_the_file() {
    let dir = saved_state();
    let path = dir.path().join("state.bin");
    let junk = b"not a state at all".to_vec();
    std::fs::write(&path, &junk).expect("write junk");
    let (code, s) = run(
        dir.path(),
        support::CC_BUILD,
        &["--state-file", "state.bin", "--fresh-state", "--ticks", "2"],
    );
    assert_eq!(code, 0, "{}", s.transcript());
    assert_eq!(
        s.count(|l| l == "[plugin] init"),
        1,
        "a fresh start runs init"
    );
    assert_eq!(s.count(|l| l == "[state] saved to state.bin at tick 2"), 1);
    assert_ne!(std::fs::read(&path).expect("read"), junk, "overwritten");
    // What it wrote is a good state file.
    let (code, s) = run(
        dir.path(),
        support::CC_BUILD,
        &["--state-file", "state.bin", "--ticks", "1"],
    );
    assert_eq!(code, 0, "{}", s.transcript());
    assert_eq!(
        s.count(
            |l| l.starts_with("[state] 16 bytes, layout unknown: [0c 00 00 00")
                && l.ends_with("(restored from state.bin; v1)")
        ),
        1,
        "{}",
        s.transcript()
    );
    assert_eq!(s.count(|l| l.contains("tag=one score=13")), 1);
}

#[test]
fn sigkill_during_saves_leaves_a_file_the_next_run_restores() {
    use std::collections::hash_map::RandomState;
    use std::hash::{BuildHasher, Hasher};
    use std::os::unix::process::ExitStatusExt;

    // 256 KiB of state, every byte rewritten each tick from the score, so
    // that a file mixing two saves would be seen by the plugin as well as
    // by the checksum.
    let plugin = Plugin {
        fields: "int score; unsigned char pad[256 * 1024];",
        init: "s->score = 0; memset(s->pad, 0, sizeof s->pad);",
        tick: "for (size_t i = 0; i < sizeof s->pad; i++) {
                   if (s->pad[i] != (unsigned char)s->score) {
                       printf(\"[plugin] torn state at byte %zu\\n\", i);
                       break;
                   }
               }
               s->score += 1;
               memset(s->pad, (unsigned char)s->score, sizeof s->pad);
               printf(\"[plugin] tag=big score=%d\\n\", s->score);",
        ..Plugin::default()
    };
    let dir = workdir();
    std::fs::write(dir.path().join("logic.c"), plugin.source()).expect("write");
    let args = [
        "--tick-ms",
        "2",
        "--state-file",
        "state.bin",
        "--save-every",
        "1",
        "--trial-ticks",
        "0",
    ];
    let mut random = RandomState::new().build_hasher();
    let mut last_restored = 0;
    for round in 0..5 {
        let mut s = start(dir.path(), support::CC_BUILD, &args);
        if round > 0 {
            let restored = s.expect_contains("(restored from state.bin; v1)");
            let score = s.expect_contains("tag=big score=");
            let restored_score = field(&score, "score").expect("a score") - 1;
            assert!(
                restored.starts_with("[state] 262148 bytes, layout unknown: "),
                "{restored}"
            );
            assert!(
                restored_score >= last_restored,
                "round {round}: restored {restored_score}, earlier {last_restored}"
            );
            last_restored = restored_score;
        }
        // Kill it after a random number of ticks, when saves are under way.
        random.write_usize(round);
        let ticks = 5 + random.finish() % 40;
        expect_score(&mut s, "big", last_restored + ticks as i64);
        if round == 0 {
            support::wait_for_file(&dir.path().join("state.bin"));
        }
        s.signal(nix::sys::signal::Signal::SIGKILL);
        let status = s.wait();
        assert_eq!(status.signal(), Some(9), "round {round}: {status:?}");
        assert_eq!(
            s.count(|l| l.contains("torn state")),
            0,
            "{}",
            s.transcript()
        );
    }
    // The last kill's file restores too, and a clean run clears what the
    // killed writers left behind.
    let mut s = start(
        dir.path(),
        support::CC_BUILD,
        &[
            "--tick-ms",
            "2",
            "--state-file",
            "state.bin",
            "--ticks",
            "2",
        ],
    );
    s.expect_contains("(restored from state.bin; v1)");
    assert_eq!(s.exit_code(), 0, "{}", s.transcript());
    assert_eq!(
        s.count(|l| l.contains("torn state")),
        0,
        "{}",
        s.transcript()
    );
    let leftovers: Vec<String> = std::fs::read_dir(dir.path())
        .expect("read the work folder")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".state.bin.tmp-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}
