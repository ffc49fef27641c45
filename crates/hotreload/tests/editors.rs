//! Every way editors save a file, in both watch modes: the new code is loaded
//! with the state kept, and the watch survives the save (a second save the
//! same way reloads again). Plus what only polling or only folder watches
//! must get right: two same-size saves within one second, a subfolder created
//! after start, and a whole tree moved in while files land in it.

mod support;

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use support::editor::{self, Save};
use support::plugin::{counter, tagged_by_header};
use support::{Mode, Server, field, workdir};

fn pattern(name: &str) -> Save {
    editor::ALL
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, save)| *save)
        .unwrap_or_else(|| panic!("no save pattern named {name:?} in editor::ALL"))
}

/// The highest score printed so far by the code tagged `tag`.
fn last_score(s: &Server, tag: &str) -> i64 {
    let prefix = format!("[plugin] tag={tag} score=");
    s.lines()
        .iter()
        .filter(|l| l.starts_with(&prefix))
        .filter_map(|l| field(l, "score"))
        .max()
        .unwrap_or_else(|| panic!("{tag} never ticked:\n{}", s.transcript()))
}

/// Saves `src` with `save` as the code tagged `new` (which adds `step` per
/// tick), then waits for it to be swapped in and checks that its first tick
/// continued from the last score of the code tagged `old`.
fn save_and_expect_reload(s: &mut Server, src: &Path, save: Save, old: &str, new: &str, step: i32) {
    save(src, &counter(new, step));
    s.expect_prefix("[watch] change detected (logic.c)");
    s.expect_prefix("[reload] swapped logic.so (api=1, ");
    let first_new = s.expect_contains(&format!("[plugin] tag={new} score="));
    // The tick thread prints in order: every tick of the old code is in the
    // output before the first tick of the new one.
    let last_old = last_score(s, old);
    assert_eq!(
        field(&first_new, "score"),
        Some(last_old + i64::from(step)),
        "the new code did not continue from the old score:\n{}",
        s.transcript()
    );
}

fn two_saves_both_reload(name: &str, mode: Mode) {
    let save = pattern(name);
    let dir = workdir();
    let src = dir.path().join("logic.c");
    fs::write(&src, counter("one", 1)).expect("write v1");
    let mut s = Server::start_default(dir.path(), mode.flags());
    s.expect_prefix("[reload] loaded logic.so (api=1, v1)");
    s.expect_contains("[plugin] tag=one score=2 ");

    save_and_expect_reload(&mut s, &src, save, "one", "two", 100);
    // The same save again: a watch on the replaced inode would be silent now.
    save_and_expect_reload(&mut s, &src, save, "two", "three", 10_000);

    assert_eq!(s.stop(), 0, "{}", s.transcript());
    let transcript = s.transcript();
    assert_eq!(
        s.count(|l| l.contains("[reload] rejected") || l.contains("[build] failed")),
        0,
        "{name} ({mode:?}):\n{transcript}"
    );
    assert_eq!(s.count(|l| l.contains(" init")), 1, "{transcript}");
}

/// One `#[test]` per save pattern and mode, named after both, so that a
/// failure names its case.
macro_rules! save_cases {
    ($($test:ident: $pattern:literal, $mode:ident;)*) => {
        $(
            #[test]
            fn $test() {
                two_saves_both_reload($pattern, Mode::$mode);
            }
        )*

        /// The patterns covered above.
        const COVERED: &[&str] = &[$($pattern),*];
    };
}

save_cases! {
    in_place_inotify: "in place", Inotify;
    in_place_poll: "in place", Poll;
    rename_over_inotify: "rename over", Inotify;
    rename_over_poll: "rename over", Poll;
    vim_backup_rename_inotify: "vim backup rename", Inotify;
    vim_backup_rename_poll: "vim backup rename", Poll;
    jetbrains_safe_write_inotify: "JetBrains safe write", Inotify;
    jetbrains_safe_write_poll: "JetBrains safe write", Poll;
    delete_and_recreate_inotify: "delete and re-create", Inotify;
    delete_and_recreate_poll: "delete and re-create", Poll;
}

/// A pattern added to `editor::ALL` without a case above fails here.
#[test]
fn every_save_pattern_has_a_case_in_both_modes() {
    for (name, _) in editor::ALL {
        assert_eq!(
            COVERED.iter().filter(|c| *c == name).count(),
            2,
            "save pattern {name:?} needs an inotify and a poll case"
        );
    }
}

/// Sets the modification time of `path` to `secs` seconds plus `nanos`.
fn set_mtime(path: &Path, secs: u64, nanos: u32) {
    let f = fs::OpenOptions::new()
        .write(true)
        .open(path)
        .expect("open to set mtime");
    f.set_modified(UNIX_EPOCH + Duration::new(secs, nanos))
        .expect("set mtime");
}

/// Two in-place saves of the same size, both stamped within the same whole
/// second: only the nanoseconds of the mtime tell them apart (same size, same
/// inode). A poller comparing whole seconds misses the second one.
#[test]
fn poll_sees_two_same_size_saves_within_one_second() {
    let dir = workdir();
    let src = dir.path().join("logic.c");
    let (v1, v2, v3) = (counter("aa", 1), counter("bb", 1), counter("cc", 1));
    assert!(v1.len() == v2.len() && v2.len() == v3.len());
    fs::write(&src, &v1).expect("write v1");
    let second = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs();
    set_mtime(&src, second, 0);
    let inode = fs::metadata(&src).expect("stat").ino();
    let mut s = Server::start_default(dir.path(), Mode::Poll.flags());
    s.expect_contains("[plugin] tag=aa score=2 ");

    editor::in_place(&src, &v2);
    set_mtime(&src, second, 100_000_000);
    s.expect_contains("[plugin] tag=bb score=");

    editor::in_place(&src, &v3);
    set_mtime(&src, second, 200_000_000);
    s.expect_contains("[plugin] tag=cc score=");

    let meta = fs::metadata(&src).expect("stat");
    assert_eq!((meta.ino(), meta.len()), (inode, v1.len() as u64));
    assert_eq!(meta.mtime(), second as i64, "both saves in one second");
    assert_eq!(s.stop(), 0, "{}", s.transcript());
}

/// A folder watch covers folders created after start: the new folder gets a
/// watch of its own, so an edit inside it later is seen.
#[test]
fn folder_watch_sees_an_edit_in_a_subfolder_created_after_start() {
    let dir = workdir();
    fs::write(dir.path().join("logic.c"), tagged_by_header("sub/tag.h")).expect("write");
    let mut s = Server::start_watching(dir.path(), ".", &[]);
    s.expect_contains("[plugin] tag=base score=2");

    let sub = dir.path().join("sub");
    fs::create_dir(&sub).expect("mkdir sub");
    let header = sub.join("tag.h");
    fs::write(&header, "#define TAG \"sub1\"\n").expect("write header");
    s.expect_prefix("[watch] change detected (sub/tag.h)");
    s.expect_contains("[plugin] tag=sub1 score=");

    // An edit once the folder is settled: only a watch on `sub` sees this.
    editor::in_place(&header, "#define TAG \"sub2\"\n");
    s.expect_prefix("[watch] change detected (sub/tag.h)");
    s.expect_contains("[plugin] tag=sub2 score=");
    assert_eq!(s.stop(), 0, "{}", s.transcript());
}

/// How many inotify watches process `pid` holds now (from the fdinfo of its
/// inotify descriptors), if it has an inotify descriptor.
fn inotify_watches(pid: i32) -> Option<usize> {
    let mut total = None;
    for fd in fs::read_dir(format!("/proc/{pid}/fd")).ok()?.flatten() {
        let is_inotify =
            fs::read_link(fd.path()).is_ok_and(|target| target.as_os_str() == "anon_inode:inotify");
        if !is_inotify {
            continue;
        }
        let info = fs::read_to_string(format!(
            "/proc/{pid}/fdinfo/{}",
            fd.file_name().to_string_lossy()
        ))
        .unwrap_or_default();
        *total.get_or_insert(0) += info
            .lines()
            .filter(|l| l.starts_with("inotify wd:"))
            .count();
    }
    total
}

/// How many files a `[watch] change detected (a, b, c, and N more)` line
/// names.
fn files_named(line: &str) -> usize {
    let inner = line
        .strip_prefix("[watch] change detected (")
        .and_then(|l| l.strip_suffix(')'))
        .unwrap_or_else(|| panic!("not a change line: {line}"));
    inner
        .split(", ")
        .map(|item| {
            item.strip_prefix("and ")
                .and_then(|i| i.strip_suffix(" more"))
                .map_or(1, |n| n.parse().expect("count"))
        })
        .sum()
}

/// A folder tree moved into a watched folder (git checkout, `mv`, an unpacked
/// archive) gets its watches while files are already landing in it. Every
/// file must be seen: listed when its folder is adopted, or reported by the
/// folder's new watch. A file that lands after its folder was listed but
/// before the folder's watch exists would be lost.
#[test]
fn no_file_is_lost_while_a_moved_in_tree_gets_its_watches() {
    const DIRS: usize = 300;
    let dir = workdir();
    fs::write(dir.path().join("logic.c"), counter("one", 1)).expect("write");
    // Prepared outside the watched folder, on the same file system, so that
    // each arrives with one rename, complete.
    let staging = tempfile::Builder::new()
        .prefix("hotreload-staging-")
        .tempdir()
        .expect("staging");
    let tree = staging.path().join("tree");
    for i in 0..DIRS {
        fs::create_dir_all(tree.join(format!("d{i:04}"))).expect("mkdir");
        fs::write(staging.path().join(format!("f{i:04}")), format!("{i}\n")).expect("write");
    }
    fs::write(staging.path().join("aaa.c"), "marker\n").expect("write marker");
    let mut s = Server::start_watching(dir.path(), ".", &[]);
    s.expect_contains("[plugin] tag=one score=2 ");
    let before = inotify_watches(s.pid()).expect("the server uses inotify");
    let from = s.lines().len();

    let root = dir.path().join("tree");
    fs::rename(&tree, &root).expect("move the tree in");
    // Wait until the server is adding watches for the tree, then drop a file
    // into every folder while it is at it.
    let deadline = Instant::now() + support::WAIT;
    while inotify_watches(s.pid()).unwrap_or(0) <= before {
        assert!(Instant::now() < deadline, "no watch added for the tree");
        std::thread::yield_now();
    }
    for i in 0..DIRS {
        fs::rename(
            staging.path().join(format!("f{i:04}")),
            root.join(format!("d{i:04}/x.c")),
        )
        .expect("move a file in");
    }
    // The marker lands after every file of the tree and sorts first in a
    // change line: its line closes the count.
    fs::rename(staging.path().join("aaa.c"), dir.path().join("aaa.c")).expect("marker");
    s.expect_prefix("[watch] change detected (aaa.c");

    let lines = s.lines();
    let seen: usize = lines[from..]
        .iter()
        .filter(|l| l.starts_with("[watch] change detected ("))
        .map(|l| files_named(l))
        .sum();
    assert_eq!(
        seen,
        DIRS + 1,
        "{}",
        lines[from..]
            .iter()
            .filter(|l| l.starts_with("[watch]"))
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert_eq!(s.stop(), 0);
}
