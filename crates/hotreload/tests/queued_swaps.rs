//! Swaps that come faster than one is installed: an overdue tick runs
//! before the next queued swap, and swaps that pile up behind a slow one
//! collapse to the newest (the skipped ones said, never installed).

mod support;

use support::plugin::Extended;
use support::{Server, workdir};

#[test]
fn an_overdue_tick_goes_first_and_queued_swaps_collapse_to_the_newest() {
    let dir = workdir();
    let src = dir.path().join("logic.c");
    let with_include = |source: String| format!("#include <unistd.h>\n{source}");
    std::fs::write(&src, Extended::new("one").source()).expect("write");
    let mut s = Server::start(
        dir.path(),
        &[
            "--watch",
            "logic.c",
            "--build",
            support::CC_BUILD,
            "--tick-ms",
            "10",
            "--trial-ticks",
            "0",
            "--debounce-ms",
            "5",
            "--tick-timeout-ms",
            "5000",
        ],
    );
    s.expect_contains("tag=one score=3");
    // v2's on_reload takes 2 s (the watchdog allows 5): the swaps of v3 and
    // v4 queue behind it.
    let slow = Extended {
        on_reload: "usleep(2000000);",
        ..Extended::new("two")
    };
    std::fs::write(&src, with_include(slow.source())).expect("write");
    s.expect_prefix("[reload] swapped logic.so (api=1, v2");
    std::fs::write(&src, Extended::new("three").source()).expect("write");
    s.expect_prefix("[build] success");
    std::fs::write(&src, Extended::new("four").source()).expect("write");
    let skipped =
        s.expect_prefix("[reload] v3 skipped: v4 was ready before v3's swap could be installed");
    let four = s.expect_prefix("[reload] swapped logic.so (api=1, v4");
    s.expect_contains("tag=four score=");
    let lines = s.lines();
    let at = |l: &String| lines.iter().position(|x| x == l).expect("a line");
    // v2 ticked between its slow swap and v4's.
    assert!(
        lines[..at(&four)]
            .iter()
            .rev()
            .take_while(|l| !l.starts_with("[reload] swapped logic.so (api=1, v2"))
            .any(|l| l.contains("tag=two score=")),
        "{}",
        s.transcript()
    );
    assert!(at(&skipped) < at(&four));
    assert_eq!(
        s.count(|l| l.contains("tag=three score=")),
        0,
        "{}",
        s.transcript()
    );
    assert_eq!(s.stop(), 0);
}
