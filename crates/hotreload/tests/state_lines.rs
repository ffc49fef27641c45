//! What the server says about the state while it runs, through the real
//! binary: warnings for pointers into a library (found by the scan, in
//! slices for a large state) and for writable static data, byte-identical
//! state files for the same seed and ticks, and periodic state lines.
//!
//! Every plugin here is real C built by a real `cc`; every assertion is on
//! what the real binary prints or writes.

mod support;

use support::state_plugin::{
    CC_DEBUG, Plugin, counter_plugin, expect_score, index_of, run, start, two_places,
};
use support::{editor, workdir};

// ---------------------------------------------------------------------------
// 8. Warnings: pointers into a library, static data.
// ---------------------------------------------------------------------------

#[test]
fn a_pointer_into_the_old_library_is_warned_about_by_field() {
    let v1 = Plugin {
        fields: "int score; const char* name;",
        init: "s->score = 0; s->name = \"player one\";",
        tick: "s->score += 1; printf(\"[plugin] tag=one score=%d\\n\", s->score);",
        ..Plugin::default()
    };
    // v2 never reads the name: it only carries the pointer on.
    let v2 = Plugin {
        tick: "s->score += 1; printf(\"[plugin] tag=two score=%d\\n\", s->score);",
        ..v1
    };
    let dir = workdir();
    let src = dir.path().join("logic.c");
    std::fs::write(&src, v1.source()).expect("write v1");
    let mut s = start(dir.path(), CC_DEBUG, &[]);
    expect_score(&mut s, "one", 2);
    assert_eq!(
        s.count(|l| l.contains("warning")),
        0,
        "no warning before a swap"
    );
    editor::rename_over(&src, &v2.source());
    s.expect_prefix("[reload] swapped logic.so (api=1, v2");
    s.expect_contains("tag=two score=");
    let warning = "[state] warning: field name (offset 8) points into v1's library: it dangles \
                   once v1 is unloaded (keep an index or a copy in the state, not a pointer)";
    assert_eq!(s.count(|l| l.contains("warning")), 1, "{}", s.transcript());
    assert_eq!(s.count(|l| l == warning), 1, "{}", s.transcript());
    assert_eq!(s.stop(), 0);
}

/// In a large state the scan goes a slice per tick, so no tick waits for
/// it, and still finds a pointer at the far end; with `--keep-versions 1`
/// the version swapped out is unloaded at once, and is still the one named.
#[test]
fn a_pointer_at_the_end_of_a_large_state_is_found_by_the_scan_in_slices() {
    let v1 = Plugin {
        fields: "int score; char pad[8 << 20]; const char* name;",
        init: "s->score = 0; s->name = \"player one\";",
        tick: "s->score += 1; printf(\"[plugin] tag=one score=%d\\n\", s->score);",
        ..Plugin::default()
    };
    let v2 = Plugin {
        tick: "s->score += 1; printf(\"[plugin] tag=two score=%d\\n\", s->score);",
        ..v1
    };
    let dir = workdir();
    let src = dir.path().join("logic.c");
    std::fs::write(&src, v1.source()).expect("write v1");
    let mut s = start(dir.path(), CC_DEBUG, &["--keep-versions", "1"]);
    expect_score(&mut s, "one", 2);
    editor::rename_over(&src, &v2.source());
    let swapped = s.expect_prefix("[reload] swapped logic.so (api=1, v2");
    let warning =
        s.expect_prefix("[state] warning: field name (offset 8388616) points into v1's library");
    // Found after some of v2's ticks, not before the first one.
    let lines = s.lines();
    let at = |l: &String| lines.iter().position(|x| x == l).expect("a line");
    assert!(
        lines[at(&swapped)..at(&warning)]
            .iter()
            .any(|l| l.contains("tag=two score=")),
        "{}",
        s.transcript()
    );
    assert_eq!(s.stop(), 0);
}

#[test]
fn writable_static_data_is_warned_about_once() {
    let plugin = |tag: &str| {
        let tick = format!(
            "s->score += 1; calls += 1; printf(\"[plugin] tag={tag} score=%d calls=%d\\n\", s->score, calls);"
        );
        Plugin {
            fields: "int score;",
            init: "s->score = 0;",
            tick: &tick,
            top: "static int calls;",
            ..Plugin::default()
        }
        .source()
    };
    let dir = workdir();
    let src = dir.path().join("logic.c");
    std::fs::write(&src, plugin("one")).expect("write v1");
    let mut s = start(dir.path(), support::CC_BUILD, &[]);
    // The warning is said once the version is handed over, off the swap's
    // path, by another thread than the load line: in either order.
    s.expect_contains("tag=one score=3 calls=3");
    let expected = "[reload] warning: v1 keeps writable static data (calls (4 bytes)): it starts \
                    afresh on every reload; keep what must survive in the state";
    assert_eq!(s.count(|l| l == expected), 1, "{}", s.transcript());
    assert_eq!(s.count(|l| l == "[reload] loaded logic.so (api=1, v1)"), 1);
    for (n, tag) in [(2, "two"), (3, "three")] {
        editor::rename_over(&src, &plugin(tag));
        s.expect_prefix(&format!("[reload] swapped logic.so (api=1, v{n}"));
        // The static starts afresh; the state does not.
        let first = s.expect_contains(&format!("tag={tag} score="));
        assert!(first.ends_with(" calls=1"), "{first}");
        s.expect_contains(&format!("tag={tag} score="));
    }
    assert_eq!(
        s.count(|l| l.contains("writable static data")),
        1,
        "{}",
        s.transcript()
    );
    assert_eq!(s.stop(), 0);
}

// ---------------------------------------------------------------------------
// 9. Determinism.
// ---------------------------------------------------------------------------

#[test]
fn the_same_seed_and_ticks_give_byte_identical_state_files() {
    let plugin = Plugin {
        fields: "uint64_t rng; int64_t sum; uint32_t hist[16];",
        top: r#"static const hotreload_field_t fields[] = {
    HOTRELOAD_FIELD(state_t, rng, HOTRELOAD_U64),
    HOTRELOAD_FIELD(state_t, sum, HOTRELOAD_I64),
    HOTRELOAD_FIELD(state_t, hist, HOTRELOAD_U32),
};
static void seeded_init(void* p, const hotreload_host_t* host) {
    state_t* s = p;
    memset(s, 0, sizeof *s);
    s->rng = host->seed * 0x9E3779B97F4A7C15ull + 1;
}"#,
        // xorshift64
        tick: "s->rng ^= s->rng << 13; s->rng ^= s->rng >> 7; s->rng ^= s->rng << 17;
               s->sum += (int64_t)(s->rng % 1000); s->hist[s->rng % 16] += 1;",
        ext: Some(
            ".fields = fields, .field_count = HOTRELOAD_FIELD_COUNT(fields), .init = seeded_init,",
        ),
        ..Plugin::default()
    };
    let dir = workdir();
    std::fs::write(dir.path().join("logic.c"), plugin.source()).expect("write");
    let mut files = Vec::new();
    for (name, seed) in [("a.bin", "7"), ("b.bin", "7"), ("c.bin", "8")] {
        let (code, s) = run(
            dir.path(),
            support::CC_BUILD,
            &["--seed", seed, "--ticks", "50", "--state-file", name],
        );
        assert_eq!(code, 0, "{}", s.transcript());
        assert_eq!(
            s.count(|l| l == format!("[state] saved to {name} at tick 50")),
            1,
            "{}",
            s.transcript()
        );
        files.push(std::fs::read(dir.path().join(name)).expect("read the state file"));
    }
    assert!(files[0] == files[1], "same seed, same ticks: the same file");
    assert!(files[0] != files[2], "another seed: another file");
    assert_eq!(files[0].len(), files[2].len());
}

// ---------------------------------------------------------------------------
// 10. Periodic state lines.
// ---------------------------------------------------------------------------

#[test]
fn state_every_prints_the_state_every_n_ticks() {
    let dir = workdir();
    std::fs::write(dir.path().join("logic.c"), counter_plugin("one")).expect("write");
    let (code, s) = run(
        dir.path(),
        CC_DEBUG,
        &["--state-every", "5", "--ticks", "17"],
    );
    assert_eq!(code, 0, "{}", s.transcript());
    let states: Vec<String> = s
        .lines()
        .into_iter()
        .filter(|l| l.starts_with("[state] score="))
        .map(|l| two_places(&l))
        .collect();
    assert_eq!(
        states,
        [
            "[state] score=10 time=1.00 (initial; v1)",
            "[state] score=15 time=1.05 (v1, tick 5)",
            "[state] score=20 time=1.10 (v1, tick 10)",
            "[state] score=25 time=1.15 (v1, tick 15)",
            "[state] score=27 time=1.17 (final; v1, tick 17)",
        ],
        "{}",
        s.transcript()
    );
    // Each periodic line comes right after the tick it reports.
    let lines = s.lines();
    for (tick, score) in [(5, 15), (10, 20), (15, 25)] {
        let at = index_of(&s, "periodic", |l| {
            l.ends_with(&format!("(v1, tick {tick})"))
        });
        assert_eq!(lines[at - 1], format!("[plugin] tag=one score={score}"));
    }
}

#[test]
fn state_every_without_a_layout_prints_the_bytes() {
    let plugin = Plugin {
        fields: "int score;",
        init: "s->score = 10;",
        tick: "s->score += 1; printf(\"[plugin] tag=one score=%d\\n\", s->score);",
        ..Plugin::default()
    };
    let dir = workdir();
    std::fs::write(dir.path().join("logic.c"), plugin.source()).expect("write");
    let (code, s) = run(
        dir.path(),
        support::CC_BUILD,
        &["--state-every", "3", "--ticks", "7"],
    );
    assert_eq!(code, 0, "{}", s.transcript());
    let states: Vec<String> = s
        .lines()
        .into_iter()
        .filter(|l| l.starts_with("[state] "))
        .collect();
    assert_eq!(
        states,
        [
            "[state] 4 bytes, layout unknown: [0a 00 00 00] (initial; v1)",
            "[state] 4 bytes, layout unknown: [0d 00 00 00] (v1, tick 3)",
            "[state] 4 bytes, layout unknown: [10 00 00 00] (v1, tick 6)",
            "[state] 4 bytes, layout unknown: [11 00 00 00] (final; v1, tick 7)",
        ],
        "{}",
        s.transcript()
    );
}

// ---------------------------------------------------------------------------
// Gaps these tests once found in the engine: each asserts the behaviour the
// ABI documents.
// ---------------------------------------------------------------------------
