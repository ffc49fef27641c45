//! The engine embedded with a host's own table, called from many threads:
//! real plugins built by the C compiler, real threads, the lines read.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hotreload_engine::embed::{
    CallError, Entered, Function, FunctionTable, Notice, Notices, Options, Plugin, Refusal,
    TableHeader,
};

#[repr(C)]
#[derive(Clone, Copy)]
struct TestApi {
    header: TableHeader,
    first: Option<unsafe extern "C" fn(u64) -> u64>,
    second: Option<unsafe extern "C" fn(u64) -> u64>,
    block: Option<unsafe extern "C" fn(i32) -> i32>,
    spin: Option<unsafe extern "C" fn() -> i32>,
    start_thread: Option<unsafe extern "C" fn(i32) -> i32>,
    crash: Option<unsafe extern "C" fn() -> i32>,
}

// SAFETY: `#[repr(C)]`, a header first, then nullable function pointers.
unsafe impl FunctionTable for TestApi {
    const ENTRY: &'static str = "test_get_api";
    const VERSION: u32 = 1;
    fn functions(&self) -> Vec<Function> {
        let f = |name, address: Option<usize>| Function {
            name,
            address: address.unwrap_or(0),
            required: true,
        };
        vec![
            f("first", self.first.map(|p| p as usize)),
            f("second", self.second.map(|p| p as usize)),
            f("block", self.block.map(|p| p as usize)),
            f("spin", self.spin.map(|p| p as usize)),
            f("start_thread", self.start_thread.map(|p| p as usize)),
            f("crash", self.crash.map(|p| p as usize)),
        ]
    }
}

/// The safe face a host gives its table.
trait TestCalls {
    fn first(&self, x: u64) -> Result<u64, CallError>;
    fn second(&self, x: u64) -> Result<u64, CallError>;
    fn block(&self, fd: i32) -> Result<i32, CallError>;
    fn spin(&self) -> Result<i32, CallError>;
    fn start_thread(&self, fd: i32) -> Result<i32, CallError>;
    fn crash(&self) -> Result<i32, CallError>;
}

impl TestCalls for Entered<'_, TestApi> {
    fn first(&self, x: u64) -> Result<u64, CallError> {
        // SAFETY: declared as worker.c defines it; integers only.
        unsafe { self.call(self.table().first, (x,)) }
    }
    fn second(&self, x: u64) -> Result<u64, CallError> {
        // SAFETY: as above.
        unsafe { self.call(self.table().second, (x,)) }
    }
    fn block(&self, fd: i32) -> Result<i32, CallError> {
        // SAFETY: as above.
        unsafe { self.call(self.table().block, (fd,)) }
    }
    fn spin(&self) -> Result<i32, CallError> {
        // SAFETY: as above.
        unsafe { self.call(self.table().spin, ()) }
    }
    fn start_thread(&self, fd: i32) -> Result<i32, CallError> {
        // SAFETY: as above.
        unsafe { self.call(self.table().start_thread, (fd,)) }
    }
    fn crash(&self) -> Result<i32, CallError> {
        // SAFETY: as above.
        unsafe { self.call(self.table().crash, ()) }
    }
}

/// Builds worker.c with `-DLIB=lib` (and extra flags) into `dir`.
fn build(dir: &Path, name: &str, lib: u32, extra: &[&str]) -> PathBuf {
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/embed/worker.c");
    let out = dir.join(name);
    let status = Command::new("cc")
        .args(["-shared", "-fPIC", "-O1", "-g", "-pthread"])
        .arg(format!("-DLIB={lib}"))
        .args(extra)
        .arg("-o")
        .arg(&out)
        .arg(&source)
        .status()
        .expect("run cc");
    assert!(status.success(), "cc failed for {name}");
    out
}

/// Builds `<prefix>_a.so` (LIB=1) and `<prefix>_b.so` (LIB=2) in a new
/// folder.
fn two_builds(prefix: &str) -> (tempfile::TempDir, PathBuf, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = build(dir.path(), &format!("{prefix}_a.so"), 1, &[]);
    let b = build(dir.path(), &format!("{prefix}_b.so"), 2, &[]);
    (dir, a, b)
}

/// Notices into a channel (and echoed, for the test's output).
fn notices() -> (Notices, Receiver<Notice>) {
    let (tx, rx) = channel();
    let tx = Mutex::new(tx);
    let sink = Notices::to(move |n: &Notice| {
        eprintln!("{n}");
        let _ = tx.lock().map(|t| t.send(n.clone()));
    });
    (sink, rx)
}

/// Waits for the first notice `wanted` accepts; panics naming `what` after
/// `within`.
fn wait_for(
    rx: &Receiver<Notice>,
    within: Duration,
    what: &str,
    wanted: impl Fn(&Notice) -> bool,
) -> Notice {
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(n) if wanted(&n) => return n,
            Ok(_) => continue,
            Err(_) => panic!("no notice of {what} within {within:?}"),
        }
    }
}

/// This process's mappings of files whose name ends with `suffix`, by path.
fn mapped_paths(suffix: &str) -> Vec<String> {
    let maps = std::fs::read_to_string("/proc/self/maps").expect("maps");
    let mut paths: Vec<String> = maps
        .lines()
        .filter_map(|l| l.split_whitespace().nth(5).map(str::to_owned))
        .filter(|p| p.ends_with(suffix))
        .collect();
    paths.sort();
    paths.dedup();
    paths
}

/// Waits for v1's close, and checks that its library `name` is unmapped.
fn closed_and_unmapped(rx: &Receiver<Notice>, name: &str) {
    wait_for(rx, Duration::from_secs(5), "v1 closed", |n| {
        matches!(n, Notice::Closed { version: 1, .. })
    });
    assert!(mapped_paths(name).is_empty(), "v1 is unmapped");
}

fn pipe() -> (i32, i32) {
    let mut fds = [0i32; 2];
    // SAFETY: `fds` has room for the two descriptors.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    (fds[0], fds[1])
}

fn release(fd: i32) {
    // SAFETY: writes one byte from a live buffer to our own pipe.
    assert_eq!(unsafe { libc::write(fd, b"x".as_ptr().cast(), 1) }, 1);
}

/// One test at a time: the stuck-thread tests below count on nothing else
/// reloading or holding plugins in the process meanwhile (watchdog and
/// reclaimer timings, the mappings listed in `/proc/self/maps`).
fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// Eight threads call two functions of the same entered version in a loop
/// while the library is swapped for three seconds, 2 ms apart (each swap
/// copies, validates and loads a library: a few ms more in a debug build
/// on a busy machine): every call answers, both answers come from the
/// version entered, and every replaced version is closed and unmapped.
#[test]
fn eight_threads_call_through_three_seconds_of_reloads() {
    let _serial = one_at_a_time();
    let (_dir, a, b) = two_builds("stress");
    let (sink, rx) = notices();
    let closed = Arc::new(AtomicU64::new(0));
    let counted = Arc::clone(&closed);
    let quiet = Notices::to(move |n: &Notice| match n {
        Notice::Closed { .. } => {
            counted.fetch_add(1, Ordering::Relaxed);
        }
        Notice::Loaded { .. } => {}
        other => sink.say(other),
    });
    let options = Options {
        notices: quiet,
        ..Options::default()
    };
    let plugin: Plugin<TestApi> = Plugin::load(&a, options).expect("load v1");
    let stop = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..8)
        .map(|i| {
            let plugin = plugin.clone();
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                let (mut calls, mut versions) = (0u64, std::collections::BTreeSet::new());
                let mut x = i as u64;
                while !stop.load(Ordering::Relaxed) {
                    let api = plugin.enter();
                    // Odd versions are build a (LIB=1), even ones build b.
                    let lib = if api.version() % 2 == 1 { 1 } else { 2 };
                    let one = api.first(x).expect("first");
                    let two = api.second(x).expect("second");
                    assert_eq!(one, lib * 1_000_000 + x, "v{}: a torn call", api.version());
                    assert_eq!(
                        two,
                        lib * 1_000_000 + x + 1,
                        "v{}: a torn call",
                        api.version()
                    );
                    versions.insert(api.version());
                    drop(api);
                    calls += 2;
                    x = (x + 1) % 1000;
                }
                (calls, versions.len())
            })
        })
        .collect();
    let started = Instant::now();
    let mut reloads = 0u64;
    while started.elapsed() < Duration::from_secs(3) {
        let from = if reloads.is_multiple_of(2) { &b } else { &a };
        plugin.reload_from(from).expect("reload");
        reloads += 1;
        std::thread::sleep(Duration::from_millis(2));
    }
    stop.store(true, Ordering::Relaxed);
    let mut total = 0;
    for w in workers {
        let (calls, seen) = w.join().expect("a worker failed");
        assert!(seen > 1, "a worker saw only {seen} version");
        total += calls;
    }
    assert!(
        plugin.wait_retired(Duration::from_secs(5)),
        "versions still open: {:?}",
        plugin.retained()
    );
    assert_eq!(plugin.faults(), 0);
    assert_eq!(
        closed.load(Ordering::Relaxed),
        reloads,
        "every replaced version closed"
    );
    let mapped = [mapped_paths("stress_a.so"), mapped_paths("stress_b.so")].concat();
    assert_eq!(
        mapped.len(),
        1,
        "only the current version is mapped: {mapped:?}"
    );
    eprintln!("{reloads} reloads, {total} calls, 0 failed");
    assert!(rx.try_recv().is_err(), "nothing else was said");
}

/// A thread blocked inside a version that is replaced is named once the
/// patience is over; the version stays mapped for it, new calls run the
/// new version meanwhile, and it is closed once the thread is out.
#[test]
fn a_thread_stuck_in_a_replaced_version_is_named_and_the_version_stays_mapped() {
    let _serial = one_at_a_time();
    let (_dir, a, b) = two_builds("stuck");
    let (sink, rx) = notices();
    let options = Options {
        call_timeout: None,
        stuck_after: Duration::from_millis(100),
        notices: sink,
        ..Options::default()
    };
    let plugin: Plugin<TestApi> = Plugin::load(&a, options).expect("load");
    let (read, write) = pipe();
    let (entered_tx, entered) = channel();
    let stuck = {
        let plugin = plugin.clone();
        std::thread::spawn(move || {
            let api = plugin.enter();
            // SAFETY: no preconditions.
            let _ = entered_tx.send(unsafe { libc::gettid() });
            api.block(read)
        })
    };
    let tid = entered.recv().expect("entered");
    plugin.reload_from(&b).expect("reload");
    let said = wait_for(&rx, Duration::from_secs(5), "the stuck thread", |n| {
        matches!(n, Notice::Stuck { .. })
    });
    let line = said.to_string();
    assert!(
        line.contains("v1 stays mapped") && line.contains(&format!("thread {tid}")),
        "{line}"
    );
    assert_eq!(plugin.retained(), vec![1]);
    assert_eq!(mapped_paths("stuck_a.so").len(), 1, "v1 is still mapped");
    assert_eq!(plugin.enter().first(5).expect("v2 answers"), 2_000_005);
    release(write);
    assert_eq!(stuck.join().expect("thread").expect("the call returned"), 1);
    closed_and_unmapped(&rx, "stuck_a.so");
}

/// Two plugins' two builds each: `<a>_a.so`, `<a>_b.so`, `<b>_a.so`,
/// `<b>_b.so`.
fn four_builds(a: &str, b: &str) -> ([tempfile::TempDir; 2], [PathBuf; 4]) {
    let (dir_a, a1, a2) = two_builds(a);
    let (dir_b, b1, b2) = two_builds(b);
    ([dir_a, dir_b], [a1, a2, b1, b2])
}

/// Loads `path` with no call timeout, its notices into the channel
/// returned.
fn load(path: &Path, stuck_after: Duration) -> (Plugin<TestApi>, Receiver<Notice>) {
    let (sink, rx) = notices();
    let options = Options {
        call_timeout: None,
        stuck_after,
        notices: sink,
        ..Options::default()
    };
    (Plugin::load(path, options).expect("load"), rx)
}

/// Two plugins in one process: a thread that stays inside plugin A holds
/// back only A's versions; B's replaced version closes at once, and
/// nothing about B names the thread.
#[test]
fn a_thread_stuck_in_one_plugin_does_not_hold_another_plugins_versions() {
    let _serial = one_at_a_time();
    let (_builds, [a1, _, b1, b2]) = four_builds("heldA", "freeB");
    let ((plugin_a, _rx_a), (plugin_b, rx_b)) = (
        load(&a1, Duration::from_millis(50)),
        load(&b1, Duration::from_millis(50)),
    );
    let (read, write) = pipe();
    let (entered_tx, entered) = channel();
    let stuck = {
        let plugin_a = plugin_a.clone();
        std::thread::spawn(move || {
            let api = plugin_a.enter();
            let _ = entered_tx.send(());
            api.block(read)
        })
    };
    entered.recv().expect("entered A");
    plugin_b.reload_from(&b2).expect("reload B");
    let closed = wait_for(&rx_b, Duration::from_secs(5), "B's v1 closed", |n| {
        matches!(n, Notice::Closed { version: 1, .. }) || matches!(n, Notice::Stuck { .. })
    });
    assert!(
        matches!(closed, Notice::Closed { .. }),
        "B's v1 is held by a thread that is only in A: {closed}"
    );
    assert!(mapped_paths("freeB_a.so").is_empty(), "B's v1 is unmapped");
    release(write);
    assert_eq!(stuck.join().expect("thread").expect("the call returned"), 1);
}

/// A thread inside plugin A that enters plugin B too (nested) holds B's
/// version until it leaves, however far A's reloads have moved on: A is
/// reloaded several times first, so that a count of A's own (rather than
/// one shared by both) would be ahead of B's retirement and let B's
/// version be closed under the thread.
#[test]
fn a_nested_entry_into_another_plugin_keeps_that_version_mapped() {
    let _serial = one_at_a_time();
    let (_builds, [a1, a2, b1, b2]) = four_builds("outerA", "innerB");
    let ((plugin_a, _rx_a), (plugin_b, rx_b)) = (
        load(&a1, Duration::from_secs(60)),
        load(&b1, Duration::from_secs(60)),
    );
    for i in 0..4 {
        plugin_a
            .reload_from(if i % 2 == 0 { &a2 } else { &a1 })
            .expect("reload A");
    }
    assert!(
        plugin_a.wait_retired(Duration::from_secs(5)),
        "A's old versions closed"
    );
    let (read, write) = pipe();
    let (entered_tx, entered) = channel();
    let inside = {
        let (plugin_a, plugin_b) = (plugin_a.clone(), plugin_b.clone());
        std::thread::spawn(move || {
            let outer = plugin_a.enter();
            let inner = plugin_b.enter();
            let before = inner.first(5).expect("B v1 answers");
            let _ = entered_tx.send(before);
            let blocked = outer.block(read);
            // B's v1 is still mapped: its code runs.
            let after = inner.first(6).expect("B v1 still answers");
            (before, blocked, after, inner.version())
        })
    };
    assert_eq!(entered.recv().expect("entered both"), 1_000_005);
    plugin_b.reload_from(&b2).expect("reload B");
    assert_eq!(plugin_b.enter().first(5).expect("B v2 answers"), 2_000_005);
    // The reclaimer looks every 20-200 µs: hundreds of looks in which it
    // must not close B's v1.
    let until = Instant::now() + Duration::from_millis(200);
    while let Ok(n) = rx_b.recv_timeout(until.saturating_duration_since(Instant::now())) {
        assert!(
            !matches!(n, Notice::Closed { version: 1, .. }),
            "B's v1 closed while a thread is inside it: {n}"
        );
    }
    assert_eq!(
        plugin_b.retained(),
        vec![1],
        "B's v1 is held by the nested entry"
    );
    assert_eq!(
        mapped_paths("innerB_a.so").len(),
        1,
        "B's v1 is still mapped"
    );
    release(write);
    let (before, blocked, after, version) = inside.join().expect("thread");
    assert_eq!(
        (before, blocked.expect("A's call returned"), after, version),
        (1_000_005, 1, 1_000_006, 1)
    );
    closed_and_unmapped(&rx_b, "innerB_a.so");
}

/// A thread the plugin started that still runs its code keeps the replaced
/// version mapped, with a line naming it; when it ends, the version goes.
#[test]
fn a_thread_the_plugin_started_keeps_its_version_mapped_until_it_ends() {
    let _serial = one_at_a_time();
    let (_dir, a, b) = two_builds("spawn");
    let (sink, rx) = notices();
    let options = Options {
        notices: sink,
        ..Options::default()
    };
    let plugin: Plugin<TestApi> = Plugin::load(&a, options).expect("load");
    let (read, write) = pipe();
    assert_eq!(plugin.enter().start_thread(read).expect("started"), 0);
    plugin.reload_from(&b).expect("reload");
    let said = wait_for(&rx, Duration::from_secs(5), "the plugin's thread", |n| {
        matches!(n, Notice::KeptForThreads { .. })
    });
    assert!(
        said.to_string()
            .starts_with("[reload] v1 stays loaded: 1 thread it started still runs its code"),
        "{said}"
    );
    assert_eq!(mapped_paths("spawn_a.so").len(), 1, "v1 is still mapped");
    release(write);
    closed_and_unmapped(&rx, "spawn_a.so");
}

/// Hung calls on three threads at once are each interrupted by the one
/// watchdog, as a timeout on that thread, and so is a hung call made after
/// a long stay in the host's own code; a crash is a fault with its place;
/// the version keeps answering.
#[test]
fn hangs_on_many_threads_and_crashes_come_back_as_faults() {
    let _serial = one_at_a_time();
    let dir = tempfile::tempdir().expect("tempdir");
    let a = build(dir.path(), "hang_a.so", 1, &[]);
    let (sink, _rx) = notices();
    let options = Options {
        call_timeout: Some(Duration::from_millis(200)),
        notices: sink,
        ..Options::default()
    };
    let plugin: Plugin<TestApi> = Plugin::load(&a, options).expect("load");
    let started = Instant::now();
    let hung: Vec<_> = (0..3)
        .map(|_| {
            let plugin = plugin.clone();
            std::thread::spawn(move || plugin.enter().spin())
        })
        .collect();
    for h in hung {
        match h.join().expect("thread") {
            Err(CallError::Fault { report, fault, .. }) => {
                assert!(fault.is_timeout(), "{report}");
                assert!(
                    report.starts_with("timeout after 200 ms in spin"),
                    "{report}"
                );
            }
            other => panic!("expected a timeout, found {other:?}"),
        }
    }
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    // Entered, then a while in the host's own code past the timeout (the
    // watchdog's signal finds no call to end), then a call that hangs: it
    // is still cut off.
    let api = plugin.enter();
    std::thread::sleep(Duration::from_millis(400));
    match api.spin() {
        Err(CallError::Fault { fault, .. }) => assert!(fault.is_timeout()),
        other => panic!("expected a timeout, found {other:?}"),
    }
    drop(api);
    match plugin.enter().crash() {
        Err(CallError::Fault { report, .. }) => {
            assert!(
                report.starts_with("SIGSEGV (address not mapped) at 0x8 in crash"),
                "{report}"
            )
        }
        other => panic!("expected a crash, found {other:?}"),
    }
    assert_eq!(plugin.enter().first(1).expect("still answers"), 1_000_001);
    assert_eq!(plugin.faults(), 5);
}

/// A library with another table version, or without the entry point, is
/// refused with what was expected and found; the running version stays.
#[test]
fn a_library_with_the_wrong_table_is_refused_and_the_running_version_stays() {
    let _serial = one_at_a_time();
    let dir = tempfile::tempdir().expect("tempdir");
    let a = build(dir.path(), "table_a.so", 1, &[]);
    let wrong = build(dir.path(), "table_9.so", 2, &["-DTABLE_VERSION=9"]);
    let unnamed = build(
        dir.path(),
        "table_x.so",
        2,
        &["-Dtest_get_api=other_get_api"],
    );
    let (sink, _rx) = notices();
    let options = Options {
        notices: sink,
        ..Options::default()
    };
    let plugin: Plugin<TestApi> = Plugin::load(&a, options).expect("load");
    match plugin.reload_from(&wrong) {
        Err(Refusal::Table(why)) => {
            assert_eq!(why, "test_get_api: expected table version 1, found 9")
        }
        other => panic!("expected a table refusal, found {other:?}"),
    }
    let why = plugin
        .reload_from(&unnamed)
        .expect_err("no entry point")
        .to_string();
    assert!(
        why.contains("expected an exported function test_get_api, found no such symbol"),
        "{why}"
    );
    let api = plugin.enter();
    assert_eq!((api.version(), api.first(0).expect("v1")), (1, 1_000_000));
}

/// A host that hands the rebuilding to the engine: the header a build
/// includes is edited as an editor saves it, the engine's watcher sees it,
/// the build runs, the new library is published; two threads keep calling
/// throughout and never get an error. A build that fails says so in one
/// line and the running version keeps answering; the fix after it lands.
#[test]
fn edits_are_rebuilt_and_swapped_while_threads_keep_calling() {
    let dir = tempfile::tempdir().expect("tempdir");
    let header = dir.path().join("lib.h");
    std::fs::write(&header, "#define LIB 1\n").expect("write");
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/embed/worker.c");
    let build = format!(
        "cc -shared -fPIC -O1 -pthread -include lib.h -o libw.so {}",
        source.display()
    );
    let lib = dir.path().join("libw.so");
    let status = Command::new("sh")
        .args(["-c", &build])
        .current_dir(dir.path())
        .status()
        .expect("sh");
    assert!(status.success(), "the first build");
    let (sink, rx) = notices();
    let plugin: Plugin<TestApi> = Plugin::load(
        &lib,
        Options {
            notices: sink,
            ..Options::default()
        },
    )
    .expect("v1 loads");
    let mut rebuild = hotreload_engine::embed::Rebuild::new(vec![header.clone()], build, lib);
    rebuild.build_dir = dir.path().to_path_buf();
    let rebuilding = plugin.rebuild_on_change(rebuild).expect("watching");
    let stop = Arc::new(AtomicBool::new(false));
    let (calls, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let seen = Arc::new(AtomicU64::new(1));
    let callers: Vec<_> = (0..2)
        .map(|_| {
            let (plugin, stop) = (plugin.clone(), Arc::clone(&stop));
            let (calls, failed, seen) =
                (Arc::clone(&calls), Arc::clone(&failed), Arc::clone(&seen));
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match plugin.enter().first(7) {
                        Ok(v) => seen.fetch_max(v / 1_000_000, Ordering::Relaxed),
                        Err(_) => failed.fetch_add(1, Ordering::Relaxed),
                    };
                    calls.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    let answers = |lib: u64| {
        let deadline = Instant::now() + Duration::from_secs(30);
        while seen.load(Ordering::Relaxed) < lib {
            assert!(Instant::now() < deadline, "never answered as build {lib}");
            std::thread::sleep(Duration::from_millis(2));
        }
    };
    // A rename-style save, as vim and most editors make it.
    let save = |text: &str| {
        let aside = dir.path().join(".lib.h.swp");
        std::fs::write(&aside, text).expect("write aside");
        std::fs::rename(&aside, &header).expect("rename into place");
    };
    save("#define LIB 2\n");
    wait_for(&rx, Duration::from_secs(30), "the rebuilt v2", |n| {
        matches!(n, Notice::Loaded { version: 2, .. })
    });
    answers(2);
    save("#define LIB )\n");
    let failed_line = wait_for(&rx, Duration::from_secs(30), "the failed build", |n| {
        matches!(n, Notice::BuildFailed { .. })
    });
    assert!(
        failed_line.to_string().contains("error") && failed_line.to_string().contains("stays"),
        "{failed_line}"
    );
    assert_eq!(plugin.version(), 2, "the running version stays");
    save("#define LIB 3\n");
    wait_for(&rx, Duration::from_secs(30), "the fix as v3", |n| {
        matches!(n, Notice::Loaded { version: 3, .. })
    });
    answers(3);
    stop.store(true, Ordering::Relaxed);
    for caller in callers {
        caller.join().expect("caller");
    }
    drop(rebuilding);
    assert!(
        calls.load(Ordering::Relaxed) > 1000,
        "the threads kept calling"
    );
    assert_eq!(failed.load(Ordering::Relaxed), 0, "no call failed");
}

/// A crash in a new version rolls back to the build before it, loaded
/// again and published: the next calls answer as v1 did. A crash in that
/// one too has nothing earlier to go back to: it stays, and says so.
#[test]
fn a_crash_in_the_new_version_rolls_back_to_the_build_before_it() {
    let _serial = one_at_a_time();
    let (_dir, a, b) = two_builds("rollback");
    let (sink, rx) = notices();
    let plugin: Plugin<TestApi> = Plugin::load(
        &a,
        Options {
            notices: sink,
            ..Options::default()
        },
    )
    .expect("load");
    plugin.reload_from(&b).expect("v2");
    assert_eq!(plugin.enter().first(1).expect("v2 answers"), 2_000_001);
    assert!(matches!(
        plugin.enter().crash(),
        Err(CallError::Fault { version: 2, .. })
    ));
    let rolled = wait_for(&rx, Duration::from_secs(5), "the rollback", |n| {
        matches!(n, Notice::RolledBack { .. })
    });
    assert_eq!(
        rolled,
        Notice::RolledBack {
            from: 2,
            to: 1,
            version: 3
        },
        "{rolled}"
    );
    assert!(
        rolled
            .to_string()
            .contains("rolled back from v2 to v1's build"),
        "{rolled}"
    );
    assert_eq!(plugin.version(), 3);
    assert_eq!(
        plugin.enter().first(1).expect("v1's build answers"),
        1_000_001
    );
    // v1's build faults too: nothing earlier is kept.
    assert!(plugin.enter().crash().is_err());
    wait_for(&rx, Duration::from_secs(5), "no rollback", |n| {
        matches!(n, Notice::NoRollback { version: 3 })
    });
    assert_eq!(plugin.version(), 3, "it stays current");
    // With keep_versions 0 a fault changes nothing.
    let (sink, rx) = notices();
    let plain: Plugin<TestApi> = Plugin::load(
        &a,
        Options {
            notices: sink,
            keep_versions: 0,
            ..Options::default()
        },
    )
    .expect("load");
    plain.reload_from(&b).expect("v2");
    assert!(plain.enter().crash().is_err());
    assert_eq!(plain.version(), 2);
    assert!(
        rx.try_iter()
            .all(|n| !matches!(n, Notice::RolledBack { .. } | Notice::NoRollback { .. })),
        "keep_versions 0: no rollback"
    );
}
