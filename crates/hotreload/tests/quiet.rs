//! The quiet period, adaptive: a complete save reaches new code well before
//! the full quiet period, while a burst of saves still builds once (with
//! inotify, and with polling across a poll boundary), vim's saves build once,
//! and a file still being written is never built. Real binary, real
//! compiler, real edits; every wait is on printed lines. Sleeps only space
//! the saves of a burst and the pieces of a slow write.

mod support;

use std::fs;
use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use support::plugin::counter;
use support::{Server, compile, editor, workdir};

/// The full quiet period at defaults (`--debounce-ms`).
const QUIET: Duration = Duration::from_millis(20);

/// The tests here measure time: each runs alone, so that the others'
/// compilers do not stretch the pauses it makes.
fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// Lines from `from` on that start with `prefix`.
fn count_from(s: &Server, from: usize, prefix: &str) -> usize {
    s.lines()[from..]
        .iter()
        .filter(|l| l.starts_with(prefix))
        .count()
}

/// A server on `logic.c` whose build copies a prebuilt `next.so` into
/// place (a trivial build), ticking every 2 ms, with `extra` flags; running
/// the code tagged `v0`. `variants` libraries `v0.so`… are prebuilt.
fn start_trivial(dir: &Path, variants: usize, extra: &[&str]) -> Server {
    for i in 0..variants {
        compile(dir, &counter(&format!("v{i}"), 1), &format!("v{i}.so"));
    }
    fs::copy(dir.join("v0.so"), dir.join("next.so")).expect("stage v0");
    fs::write(dir.join("logic.c"), "/* save 0 */\n").expect("write logic.c");
    let mut args = vec![
        "--watch",
        "logic.c",
        "--build",
        "cp next.so logic.so",
        "--lib",
        "logic.so",
        "--tick-ms",
        "2",
    ];
    args.extend_from_slice(extra);
    let mut s = Server::start(dir, &args);
    s.expect_contains("[plugin] tag=v0 score=");
    s
}

/// Stages variant `i`, saves `logic.c`, and returns how long the save took
/// to be seen (the `[watch] change detected` line) and to run (the first
/// line of the variant's code).
fn timed_save(s: &mut Server, i: usize) -> (Duration, Duration) {
    let dir = s.dir.clone();
    fs::copy(dir.join(format!("v{i}.so")), dir.join("next.so")).expect("stage the variant");
    let saved = Instant::now();
    editor::in_place(&dir.join("logic.c"), &format!("/* save {i} */\n"));
    s.expect_prefix("[watch] change detected (logic.c)");
    let seen = saved.elapsed();
    s.expect_contains(&format!("[plugin] tag=v{i} score="));
    (seen, saved.elapsed())
}

/// Saves both servers in turn, so that whatever the machine does falls on
/// both alike: the adaptive period (defaults) sees a save before the full
/// quiet period could even have passed (which the fixed period,
/// `--settle-ms 0`, never does), and its code runs soon after.
#[test]
fn a_save_reaches_new_code_sooner_than_the_fixed_quiet_period_allows() {
    let _one = one_at_a_time();
    const SAVES: usize = 7;
    let (a_dir, f_dir) = (workdir(), workdir());
    let mut adaptive = start_trivial(a_dir.path(), SAVES + 1, &[]);
    let mut fixed = start_trivial(f_dir.path(), SAVES + 1, &["--settle-ms", "0"]);
    let (mut a, mut f) = (Vec::new(), Vec::new());
    for i in 1..=SAVES {
        // Apart from the previous save's reload, as a person saves.
        thread::sleep(Duration::from_millis(30));
        a.push(timed_save(&mut adaptive, i));
        thread::sleep(Duration::from_millis(30));
        f.push(timed_save(&mut fixed, i));
    }
    let seen = |v: &[(Duration, Duration)]| median(v.iter().map(|x| x.0).collect());
    let ran = |v: &[(Duration, Duration)]| median(v.iter().map(|x| x.1).collect());
    eprintln!(
        "medians over {SAVES} saves: adaptive: seen {:?}, new code {:?}; fixed: seen {:?}, new code {:?}",
        seen(&a),
        ran(&a),
        seen(&f),
        ran(&f)
    );
    assert!(
        f.iter().all(|x| x.0 >= QUIET),
        "the fixed period cannot see a save in under {QUIET:?}: {f:?}"
    );
    assert!(seen(&a) < QUIET, "adaptive: {a:?}");
    // The rest (build, trial, swap, a debug binary on a shared machine) is
    // the same for both and noisier than the gain: only a generous bound,
    // the figures are the bench's.
    assert!(ran(&a) < Duration::from_millis(250), "adaptive: {a:?}");
    for s in [&mut adaptive, &mut fixed] {
        // One build per save, the start-up build included.
        assert_eq!(s.count(|l| l.starts_with("[build] success")), SAVES + 1);
        assert_eq!(s.stop(), 0, "{}", s.transcript());
    }
}

/// Saves `src` as a distinct `marker` tag and waits for it to run; checks
/// that what came from line `from` up to the marker's change line was one
/// change, built once (not started and then overtaken, not failed), and
/// returns those lines.
fn built_once_before_a_marker(
    s: &mut Server,
    src: &Path,
    from: usize,
    marker: &str,
) -> Vec<String> {
    editor::in_place(src, &counter(marker, 1));
    s.expect_contains(&format!("[plugin] tag={marker} score="));
    let lines = s.lines();
    let end = lines
        .iter()
        .enumerate()
        .skip(from)
        .filter(|(_, l)| l.starts_with("[watch] change detected"))
        .map(|(i, _)| i)
        .nth(1)
        .unwrap_or_else(|| panic!("no change line for the marker:\n{}", s.transcript()));
    let window = lines[from..end].to_vec();
    let count = |p: &str| window.iter().filter(|l| l.starts_with(p)).count();
    let shown = window.join("\n");
    assert_eq!(count("[watch] change detected"), 1, "one change:\n{shown}");
    assert_eq!(count("[build] success"), 1, "one build:\n{shown}");
    assert_eq!(count("[build] a source changed"), 0, "{shown}");
    assert_eq!(count("[build] failed"), 0, "{shown}");
    window
}

/// 20 in-place saves 5 ms apart build once: only the last one's code runs,
/// no build is started and then overtaken. The saves are spaced by a busy
/// wait (a sleep on a loaded machine often wakes milliseconds late), and
/// the pauses the machine actually made are measured: a run in which one
/// was longer than `covered` allows is not the burst under test (the
/// machine was too busy to save every 5 ms), and is tried again.
fn twenty_saves_5_ms_apart_build_once(extra: &[&str], covered: fn(&[Duration]) -> bool) {
    let _one = one_at_a_time();
    const ATTEMPTS: usize = 8;
    for attempt in 1..=ATTEMPTS {
        let dir = workdir();
        let src = dir.path().join("logic.c");
        fs::write(&src, counter("one", 1)).expect("write");
        let mut s = Server::start_default(dir.path(), extra);
        s.expect_contains("[plugin] tag=one score=2 ");

        let from = s.lines().len();
        let mut pauses = Vec::new();
        let mut closing: Option<Instant> = None;
        for i in 0..20 {
            if let Some(closing) = closing {
                while closing.elapsed() < Duration::from_millis(5) {
                    std::hint::spin_loop();
                }
            }
            // An in-place save, timed so that each pause measured is at
            // least the real one: from before one save's close to after the
            // next one's open (which truncates: its first event).
            let mut file = fs::OpenOptions::new()
                .write(true)
                .truncate(true)
                .open(&src)
                .expect("open in place");
            if let Some(closing) = closing {
                pauses.push(closing.elapsed());
            }
            file.write_all(counter(&format!("burst{i:02}"), 1).as_bytes())
                .expect("write");
            file.sync_all().expect("sync");
            closing = Some(Instant::now());
            drop(file);
        }
        s.expect_contains("[plugin] tag=burst19 score=");
        if !covered(&pauses) {
            eprintln!(
                "attempt {attempt}: pauses between the saves of {pauses:?}: the machine was \
                 too busy to save every 5 ms; trying again"
            );
            continue;
        }
        let burst = built_once_before_a_marker(&mut s, &src, from, "marker");
        let shown = burst.join("\n");
        assert!(
            burst
                .iter()
                .all(|l| !l.contains("tag=burst") || l.contains("tag=burst19")),
            "only the last save of the burst ran:\n{shown}"
        );
        assert_eq!(s.stop(), 0);
        return;
    }
    panic!("in {ATTEMPTS} attempts the machine never saved 20 times about 5 ms apart");
}

/// With inotify, the settle (8 ms) must cover the first pause, 1 ms to
/// spare; it then grows to twice the longest pause seen (here taken as 1.8
/// times), and a pause must stay under the full 20 ms.
#[test]
fn twenty_saves_5_ms_apart_build_once_inotify() {
    twenty_saves_5_ms_apart_build_once(&[], |pauses| {
        let mut covers = Duration::from_millis(7);
        pauses.iter().all(|p| {
            let ok = *p <= covers && *p < Duration::from_millis(15);
            covers = covers.max(p.mul_f64(1.8));
            ok
        })
    });
}

/// Polling every 100 ms, the burst (about 100 ms long) spans a poll
/// boundary: the poll that finds the burst going on confirms nothing, and a
/// poll that finds nothing new releases it. Pauses must stay under the
/// 20 ms quiet period.
#[test]
fn twenty_saves_5_ms_apart_build_once_polling_across_a_poll_boundary() {
    twenty_saves_5_ms_apart_build_once(&["--poll", "--poll-ms", "100"], |pauses| {
        pauses.iter().all(|p| *p < Duration::from_millis(15))
    });
}

/// Saves `path` with the real vim (`backupcopy` as given), as `content`.
/// `false` if there is no vim.
fn vim_save(path: &Path, content: &str, backupcopy: &str) -> bool {
    let staging = tempfile::tempdir().expect("tempdir");
    let text = staging.path().join("new.txt");
    fs::write(&text, content).expect("write the new text");
    let status = Command::new("vim")
        .args(["-u", "NONE", "-i", "NONE", "-N", "-n", "-es"])
        .arg("-c")
        .arg(format!("set backupcopy={backupcopy} writebackup"))
        .arg("-c")
        .arg(format!("%d | r {} | 1d | wq", text.display()))
        .arg(path)
        .status();
    match status {
        Ok(status) => {
            assert!(status.success(), "vim failed: {status}");
            true
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
        Err(e) => panic!("cannot run vim: {e}"),
    }
}

/// vim's saves, by renaming the original to a backup and writing a new file
/// (`backupcopy=no`) or by copying it to a backup and writing in place
/// (`backupcopy=yes`): each save builds once and its code runs.
fn vim_saves_build_once(backupcopy: &str) {
    let _one = one_at_a_time();
    let dir = workdir();
    let src = dir.path().join("logic.c");
    fs::write(&src, counter("one", 1)).expect("write");
    let mut s = Server::start_watching(dir.path(), ".", &[]);
    s.expect_contains("[plugin] tag=one score=2 ");
    for (i, tag) in ["two", "three", "four"].into_iter().enumerate() {
        let from = s.lines().len();
        if !vim_save(&src, &counter(tag, 1), backupcopy) {
            eprintln!("SKIPPED: no vim on this machine");
            return;
        }
        s.expect_contains(&format!("[plugin] tag={tag} score="));
        // A save after vim's closes the window: whatever vim's last steps
        // (the backup's removal) caused is in it.
        built_once_before_a_marker(&mut s, &src, from, &format!("marker{i}"));
    }
    assert_eq!(s.stop(), 0, "{}", s.transcript());
}

#[test]
fn vims_backup_rename_builds_once() {
    vim_saves_build_once("no");
}

#[test]
fn vims_backup_copy_builds_once() {
    vim_saves_build_once("yes");
}

/// The first half of `source`, cut inside its first function: it does not
/// compile.
fn first_half(source: &str) -> &str {
    let cut = source.find("s->score = 0;").expect("a cut point") + 4;
    &source[..cut]
}

/// Writes `content` to the open `file` in two pieces `pause` apart, doing
/// `meanwhile` during the pause, then closes it.
fn write_slowly(mut file: fs::File, content: &str, pause: Duration, meanwhile: impl FnOnce()) {
    let half = first_half(content);
    file.write_all(half.as_bytes())
        .expect("write the first half");
    file.flush().expect("flush");
    meanwhile();
    thread::sleep(pause);
    file.write_all(&content.as_bytes()[half.len()..])
        .expect("write the rest");
    drop(file);
}

/// Checks that since line `from` the change was built once, from the whole
/// file: a build of the half-written file would print a failure.
fn built_once_whole(s: &mut Server, from: usize, tag: &str) {
    s.expect_contains(&format!("[plugin] tag={tag} score="));
    let shown = s.lines()[from..].join("\n");
    assert_eq!(count_from(s, from, "[build] failed"), 0, "{shown}");
    assert_eq!(count_from(s, from, "[build] success"), 1, "{shown}");
    assert_eq!(s.stop(), 0, "{}", s.transcript());
}

/// A file deleted and created anew, then written in two pieces 200 ms apart
/// (ten quiet periods): its creation and the deletion before it would have
/// released a build of the empty or half file; it is open for writing, so
/// the build waits for its close.
#[test]
fn a_new_file_written_slowly_is_built_only_once_complete() {
    let _one = one_at_a_time();
    let dir = workdir();
    let src = dir.path().join("logic.c");
    fs::write(&src, counter("one", 1)).expect("write");
    let mut s = Server::start_default(dir.path(), &[]);
    s.expect_contains("[plugin] tag=one score=2 ");

    let from = s.lines().len();
    fs::remove_file(&src).expect("delete");
    let file = fs::File::create(&src).expect("create anew");
    write_slowly(file, &counter("two", 1), Duration::from_millis(200), || {});
    built_once_whole(&mut s, from, "two");
}

/// A file rewritten in place in two pieces 200 ms apart, while another
/// watched file is saved (complete) during the pause: that save opens a
/// batch, which waits for the slow file's close.
#[test]
fn a_file_written_slowly_in_place_holds_a_batch_another_save_opened() {
    let _one = one_at_a_time();
    let dir = workdir();
    let src = dir.path().join("logic.c");
    fs::write(&src, counter("one", 1)).expect("write");
    let notes = dir.path().join("notes.h");
    fs::write(&notes, "/* notes */\n").expect("write notes.h");
    let mut s = Server::start_watching(dir.path(), ".", &[]);
    s.expect_contains("[plugin] tag=one score=2 ");

    let from = s.lines().len();
    let file = fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(&src)
        .expect("open in place");
    write_slowly(file, &counter("two", 1), Duration::from_millis(200), || {
        editor::in_place(&notes, "/* notes, edited */\n")
    });
    built_once_whole(&mut s, from, "two");
}

/// Saves that come while the server is busy with the last one (here a
/// library whose constructor takes 400 ms to load) are one change when it
/// gets to them: one `change detected`, one build, and never a line calling
/// the file unchanged (each batch after the first used to find the file as
/// the first had read it).
#[test]
fn saves_that_queue_while_a_load_is_busy_are_one_change() {
    let _one = one_at_a_time();
    let tmp = workdir();
    let dir = tmp.path();
    let mut s = start_trivial(dir, 1, &["--trial-ticks", "0"]);
    let slow = counter("slow", 1).replace(
        "#include \"hotreload.h\"",
        "#include \"hotreload.h\"\n#include <unistd.h>\n\
         __attribute__((constructor)) static void slow_to_load(void) { usleep(400000); }",
    );
    assert_ne!(slow, counter("slow", 1), "the constructor was added");
    compile(dir, &slow, "slow.so");
    compile(dir, &counter("v2", 1), "v2.so");
    fs::copy(dir.join("slow.so"), dir.join("next.so")).expect("stage the slow variant");
    editor::in_place(&dir.join("logic.c"), "/* save 1 */\n");
    s.expect_prefix("[watch] change detected (logic.c)");
    s.expect_prefix("[build] success");
    let from = s.lines().len();
    // The load has begun (nothing else runs between the build and it):
    // three saves while it runs.
    fs::copy(dir.join("v2.so"), dir.join("next.so")).expect("stage v2");
    for i in 2..5 {
        editor::in_place(&dir.join("logic.c"), &format!("/* save {i} */\n"));
        thread::sleep(Duration::from_millis(30));
    }
    s.expect_contains("[plugin] tag=v2 score=");
    let lines = s.lines();
    let later = &lines[from..];
    let said = |prefix: &str| later.iter().filter(|l| l.starts_with(prefix)).count();
    assert!(
        later
            .iter()
            .any(|l| l.starts_with("[reload] swapped logic.so"))
            && lines.iter().any(|l| l.contains("tag=slow score=")),
        "the slow variant ran first\n{}",
        s.transcript()
    );
    assert_eq!(
        later
            .iter()
            .filter(|l| l.contains("unchanged since"))
            .count(),
        0,
        "{}",
        s.transcript()
    );
    assert_eq!(said("[watch] change detected"), 1, "{}", s.transcript());
    assert_eq!(said("[build] success"), 1, "{}", s.transcript());
    assert_eq!(s.stop(), 0, "{}", s.transcript());
}
