//! Watching never goes deaf, and builds that write into the watched tree end.
//!
//! Folders deleted and re-created (by hand, by `git checkout`, by `git stash`),
//! folders that appear after start, sources reached through symlinks: a later
//! edit is always seen. A build that writes into the watched folder (a CMake
//! in-tree build, a generated file) ends with a loaded build and a line that
//! explains it, never with a rebuild loop. The server's own files are never
//! sources. Every case waits on printed lines.

mod support;

use std::fs;
use std::os::unix::fs::{DirBuilderExt, symlink};
use std::path::Path;
use std::process::Command;

use support::editor;
use support::plugin::{counter, tagged_by_header};
use support::{Mode, Server, wait_for_file, workdir};

/// Runs `script` with `sh -c` in `dir`, with git kept away from the
/// machine's and the user's configuration.
fn sh(dir: &Path, script: &str) {
    let out = Command::new("sh")
        .args(["-c", script])
        .current_dir(dir)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_AUTHOR_NAME", "hotreload")
        .env("GIT_AUTHOR_EMAIL", "hotreload@localhost")
        .env("GIT_COMMITTER_NAME", "hotreload")
        .env("GIT_COMMITTER_EMAIL", "hotreload@localhost")
        .output()
        .expect("run sh");
    assert!(
        out.status.success(),
        "`{script}` failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A line that ends the server's reaction to a change: a load, swap,
/// refusal, no-op or failed build.
fn is_outcome(line: &str) -> bool {
    line.starts_with("[reload] ") || line.starts_with("[build] failed")
}

/// Saves `path` as the code tagged `tag` and waits for that code to tick.
fn edit_and_expect(s: &mut Server, path: &Path, content: &str, tag: &str) {
    editor::in_place(path, content);
    s.expect_contains(&format!("[plugin] tag={tag} score="));
}

/// Two edits of `file`, each loaded, then a clean stop. Two: a build still
/// running from what came before could pick up the first one by chance;
/// nothing but a watch on the folder as it is now sees the second.
fn later_edits_are_seen(s: &mut Server, file: &Path) {
    edit_and_expect(s, file, &counter("two", 100), "two");
    edit_and_expect(s, file, &counter("three", 10_000), "three");
    assert_eq!(s.stop(), 0, "{}", s.transcript());
}

/// Asserts that exactly `builds` builds succeeded and none was discarded.
fn builds_and_no_discards(s: &Server, builds: usize) {
    let transcript = s.transcript();
    assert_eq!(
        s.count(|l| l.starts_with("[build] success")),
        builds,
        "{transcript}"
    );
    assert_eq!(
        s.count(|l| l.contains("a source changed during the build")),
        0,
        "{transcript}"
    );
}

/// The build for a plugin whose source is `src/logic.c`.
const SRC_BUILD: &str = "cc -shared -fPIC -I. -o logic.so src/logic.c";

fn start_on_src(dir: &Path, mode: Mode) -> Server {
    let mut args = vec![
        "--watch",
        "src",
        "--build",
        SRC_BUILD,
        "--lib",
        "logic.so",
        "--tick-ms",
        "10",
    ];
    args.extend_from_slice(mode.flags());
    Server::start(dir, &args)
}

/// `--watch src`, then `rm -rf src && git checkout -- src`: the folder that
/// holds the watch is gone and a new one takes its place.
fn checkout_of_a_deleted_root(mode: Mode) {
    let dir = workdir();
    let src = dir.path().join("src");
    fs::create_dir(&src).expect("mkdir src");
    fs::write(src.join("logic.c"), counter("one", 1)).expect("write");
    sh(
        dir.path(),
        "git init -q && git add src && git commit -q -m one",
    );
    let mut s = start_on_src(dir.path(), mode);
    s.expect_contains("[plugin] tag=one score=2 ");

    sh(dir.path(), "rm -rf src && git checkout -- src");
    s.expect("the reaction to the checkout", is_outcome);
    later_edits_are_seen(&mut s, &src.join("logic.c"));
}

/// `git stash -u` removes a folder of untracked sources; `git stash pop`
/// brings it back.
fn stash_and_pop(mode: Mode) {
    let dir = workdir();
    fs::write(dir.path().join("README"), "a project\n").expect("write");
    sh(
        dir.path(),
        "git init -q && git add README && git commit -q -m readme",
    );
    let src = dir.path().join("src");
    fs::create_dir(&src).expect("mkdir src");
    fs::write(src.join("logic.c"), counter("one", 1)).expect("write");
    let mut s = start_on_src(dir.path(), mode);
    s.expect_contains("[plugin] tag=one score=2 ");

    sh(dir.path(), "git stash -q -u");
    assert!(!src.exists(), "git stash -u removes the untracked folder");
    s.expect_prefix("[build] failed");
    sh(dir.path(), "git stash pop -q");
    s.expect("the reaction to the pop", |l| l.starts_with("[reload] "));
    later_edits_are_seen(&mut s, &src.join("logic.c"));
}

/// `mv src src.old`, then a new `src`: the watch on the moved folder must
/// go with it (its edits are not sources any more), and the new one be
/// watched.
fn root_moved_away_and_replaced(mode: Mode) {
    let dir = workdir();
    let src = dir.path().join("src");
    fs::create_dir(&src).expect("mkdir src");
    fs::write(src.join("logic.c"), counter("one", 1)).expect("write");
    let mut s = start_on_src(dir.path(), mode);
    s.expect_contains("[plugin] tag=one score=2 ");

    let old = dir.path().join("src.old");
    fs::rename(&src, &old).expect("mv src src.old");
    fs::create_dir(&src).expect("mkdir src");
    fs::write(src.join("logic.c"), counter("two", 100)).expect("write");
    s.expect_contains("[plugin] tag=two score=");
    // Only a watch on the new folder sees this.
    let file = src.join("logic.c");
    edit_and_expect(&mut s, &file, &counter("three", 10_000), "three");
    // A watch left on the old folder would still report as `src/logic.c`:
    // a line before the next save's.
    editor::in_place(&old.join("logic.c"), &counter("stale", 1));
    edit_and_expect(&mut s, &file, &counter("four", 1), "four");
    let only_changes = "[watch] change detected (src/logic.c)";
    assert_eq!(
        s.count(|l| l.starts_with("[watch]") && l != only_changes),
        0,
        "{}",
        s.transcript()
    );
    assert_eq!(s.stop(), 0, "{}", s.transcript());
}

/// `--watch src/logic.c`, and `src` itself is deleted and made again.
fn recreated_folder_of_a_watched_file(mode: Mode) {
    let dir = workdir();
    let src = dir.path().join("src");
    fs::create_dir(&src).expect("mkdir src");
    let file = src.join("logic.c");
    fs::write(&file, counter("one", 1)).expect("write");
    let mut args = vec![
        "--watch",
        "src/logic.c",
        "--build",
        SRC_BUILD,
        "--lib",
        "logic.so",
        "--tick-ms",
        "10",
    ];
    args.extend_from_slice(mode.flags());
    let mut s = Server::start(dir.path(), &args);
    s.expect_contains("[plugin] tag=one score=2 ");

    fs::remove_dir_all(&src).expect("rm -rf src");
    fs::create_dir(&src).expect("mkdir src");
    fs::write(&file, counter("two", 100)).expect("write");
    s.expect_contains("[plugin] tag=two score=");
    edit_and_expect(&mut s, &file, &counter("three", 10_000), "three");
    assert_eq!(s.stop(), 0, "{}", s.transcript());
}

/// A plugin tagged by `sub/tag.h`, with `--watch .`: the server is running
/// the code tagged `sub1`.
fn start_tagged_by_sub(mode: Mode) -> (tempfile::TempDir, Server) {
    let dir = workdir();
    fs::write(dir.path().join("logic.c"), tagged_by_header("sub/tag.h")).expect("write");
    let sub = dir.path().join("sub");
    fs::create_dir(&sub).expect("mkdir sub");
    fs::write(sub.join("tag.h"), "#define TAG \"sub1\"\n").expect("write");
    let mut s = Server::start_watching(dir.path(), ".", mode.flags());
    s.expect_contains("[plugin] tag=sub1 score=2");
    (dir, s)
}

/// `rm -rf sub`, then `mkdir sub` and a new header: at once (the new folder
/// may exist before the server has even seen the old one go), or `later`,
/// once the deletion has been seen and built (the header is gone: the code
/// is tagged `base`).
fn subfolder_recreated(mode: Mode, later: bool) {
    let (dir, mut s) = start_tagged_by_sub(mode);
    let sub = dir.path().join("sub");
    let header = sub.join("tag.h");
    fs::remove_dir_all(&sub).expect("rm -rf sub");
    if later {
        s.expect_contains("[plugin] tag=base score=");
    }
    fs::create_dir(&sub).expect("mkdir sub");
    fs::write(&header, "#define TAG \"sub2\"\n").expect("write");
    s.expect_contains("[plugin] tag=sub2 score=");
    edit_and_expect(&mut s, &header, "#define TAG \"sub3\"\n", "sub3");
    assert_eq!(s.stop(), 0, "{}", s.transcript());
}

/// `--watch later` names nothing at start; it appears as a folder.
fn folder_created_after_start(mode: Mode) {
    let dir = workdir();
    fs::write(dir.path().join("logic.c"), tagged_by_header("later/tag.h")).expect("write");
    let mut args = vec![
        "--watch",
        "logic.c",
        "--watch",
        "later",
        "--build",
        support::CC_BUILD,
        "--tick-ms",
        "10",
    ];
    args.extend_from_slice(mode.flags());
    let mut s = Server::start(dir.path(), &args);
    s.expect_prefix("[watch] later does not exist (yet)");
    s.expect_contains("[plugin] tag=base score=2");

    let later = dir.path().join("later");
    fs::create_dir(&later).expect("mkdir later");
    let header = later.join("tag.h");
    fs::write(&header, "#define TAG \"later1\"\n").expect("write");
    s.expect_contains("[plugin] tag=later1 score=");
    edit_and_expect(&mut s, &header, "#define TAG \"later2\"\n", "later2");
    assert_eq!(s.stop(), 0, "{}", s.transcript());
}

/// One `#[test]` per watch mode for each scenario, named after both, so
/// that a failure names its case.
macro_rules! in_both_modes {
    ($($inotify:ident, $poll:ident => $scenario:expr;)*) => {
        $(
            #[test]
            fn $inotify() {
                ($scenario)(Mode::Inotify);
            }

            #[test]
            fn $poll() {
                ($scenario)(Mode::Poll);
            }
        )*
    };
}

in_both_modes! {
    checkout_of_a_deleted_root_folder_inotify, checkout_of_a_deleted_root_folder_poll
        => checkout_of_a_deleted_root;
    git_stash_and_pop_of_the_watched_folder_inotify, git_stash_and_pop_of_the_watched_folder_poll
        => stash_and_pop;
    recreated_folder_of_a_watched_file_inotify, recreated_folder_of_a_watched_file_poll
        => recreated_folder_of_a_watched_file;
    subfolder_deleted_and_recreated_at_once_inotify, subfolder_deleted_and_recreated_at_once_poll
        => |mode| subfolder_recreated(mode, false);
    subfolder_deleted_then_recreated_after_the_deletion_was_seen_inotify,
    subfolder_deleted_then_recreated_after_the_deletion_was_seen_poll
        => |mode| subfolder_recreated(mode, true);
    a_watched_folder_created_after_start_inotify, a_watched_folder_created_after_start_poll
        => folder_created_after_start;
    a_watched_folder_moved_away_and_replaced_inotify, a_watched_folder_moved_away_and_replaced_poll
        => root_moved_away_and_replaced;
}

/// `w/logic.c -> ../real/logic.c`, watched as `watch`: edits of the target
/// are seen, and so is pointing the link elsewhere.
fn symlinked_source(watch: &str) {
    let dir = workdir();
    let real = dir.path().join("real");
    let w = dir.path().join("w");
    fs::create_dir(&real).expect("mkdir real");
    fs::create_dir(&w).expect("mkdir w");
    fs::copy(dir.path().join("hotreload.h"), w.join("hotreload.h")).expect("header");
    fs::copy(dir.path().join("hotreload.h"), real.join("hotreload.h")).expect("header");
    let target = real.join("logic.c");
    fs::write(&target, counter("one", 1)).expect("write");
    let link = w.join("logic.c");
    symlink("../real/logic.c", &link).expect("symlink");
    let mut s = Server::start(
        dir.path(),
        &[
            "--watch",
            watch,
            "--build",
            "cc -shared -fPIC -o logic.so w/logic.c",
            "--lib",
            "logic.so",
            "--tick-ms",
            "10",
        ],
    );
    s.expect_contains("[plugin] tag=one score=2 ");

    edit_and_expect(&mut s, &target, &counter("two", 100), "two");
    editor::rename_over(&target, &counter("three", 10_000));
    s.expect_contains("[plugin] tag=three score=");

    // The link now points to another file: that file's edits count, the
    // old target's no longer matter.
    let other = real.join("other.c");
    fs::write(&other, counter("four", 1)).expect("write");
    fs::remove_file(&link).expect("rm link");
    symlink("../real/other.c", &link).expect("symlink");
    s.expect_contains("[plugin] tag=four score=");
    edit_and_expect(&mut s, &other, &counter("five", 1), "five");
    assert_eq!(s.stop(), 0, "{}", s.transcript());
}

#[test]
fn edits_of_a_symlinked_source_in_a_watched_folder_are_seen() {
    symlinked_source("w");
}

#[test]
fn edits_of_a_watched_symlink_target_are_seen() {
    symlinked_source("w/logic.c");
}

/// A link to a folder inside a watched folder is not followed (it may lead
/// anywhere, or in a loop), and that is said, for one there at start as
/// for one made later.
#[test]
fn a_link_to_a_folder_is_not_followed_and_said_so() {
    let dir = workdir();
    fs::write(dir.path().join("logic.c"), counter("one", 1)).expect("write");
    fs::create_dir(dir.path().join("elsewhere")).expect("mkdir");
    let w = dir.path().join("w");
    fs::create_dir(&w).expect("mkdir w");
    symlink("../elsewhere", w.join("first")).expect("symlink");
    let mut s = Server::start(
        dir.path(),
        &[
            "--watch",
            "w",
            "--watch",
            "logic.c",
            "--build",
            support::CC_BUILD,
            "--tick-ms",
            "10",
        ],
    );
    s.expect_prefix("[watch] not following w/first -> elsewhere: a link to a folder");
    s.expect_contains("[plugin] tag=one score=2 ");
    symlink("../elsewhere", w.join("second")).expect("symlink");
    s.expect_prefix("[watch] not following w/second -> elsewhere: a link to a folder");
    assert_eq!(s.stop(), 0, "{}", s.transcript());
}

/// Makes `path` a folder only its owner (root) can read, in one step: the
/// server may watch it the moment it exists, and inotify checks permission
/// only then.
fn private_folder(path: &Path) {
    fs::DirBuilder::new()
        .mode(0o700)
        .create(path)
        .expect("mkdir");
}

/// A folder that cannot be watched (there at start, or made later) is named
/// with why, and everything else is still watched.
#[test]
fn a_folder_that_cannot_be_watched_is_said_and_the_rest_still_is() {
    let dir = workdir();
    let src = dir.path().join("logic.c");
    fs::write(&src, counter("one", 1)).expect("write");
    private_folder(&dir.path().join("secret"));
    let args = [
        "--watch",
        ".",
        "--build",
        support::CC_BUILD,
        "--tick-ms",
        "10",
    ];
    let Some(mut s) = support::start_as_nobody(dir.path(), &args) else {
        return;
    };
    let said = s.expect_prefix("[watch] cannot watch secret: ");
    assert!(said.ends_with("; changes in it go unseen"), "{said}");
    s.expect_contains("[plugin] tag=one score=2 ");
    private_folder(&dir.path().join("later"));
    s.expect_prefix("[watch] cannot watch later: ");
    edit_and_expect(&mut s, &src, &counter("two", 100), "two");
    assert_eq!(s.stop(), 0, "{}", s.transcript());
}

const CMAKE_LISTS: &str = "cmake_minimum_required(VERSION 3.10)
project(logic C)
add_library(logic SHARED logic.c)
set_target_properties(logic PROPERTIES PREFIX \"\")
";

/// A CMake project configured in-tree (`cmake -S . -B build`), with
/// `extra` written beside it first (a `.gitignore`, say).
fn cmake_project(extra: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = workdir();
    fs::write(dir.path().join("CMakeLists.txt"), CMAKE_LISTS).expect("write");
    fs::write(dir.path().join("logic.c"), counter("one", 1)).expect("write");
    for (name, content) in extra {
        fs::write(dir.path().join(name), content).expect("write");
    }
    let cmake = Command::new("cmake")
        .args(["-S", ".", "-B", "build"])
        .current_dir(dir.path())
        .output()
        .expect("cmake is needed for this test (apt-get install cmake)");
    assert!(
        cmake.status.success(),
        "cmake -S . -B build failed: {}",
        String::from_utf8_lossy(&cmake.stderr)
    );
    dir
}

/// `--watch . --build "cmake --build build"`: loads, then reloads exactly
/// once per save, and stops after the second reload (a rebuild loop never
/// gets there). Returns the transcript.
fn cmake_reloads_once_per_save(dir: &Path, extra: &[&str]) -> Server {
    let mut args = vec![
        "--watch",
        ".",
        "--build",
        "cmake --build build",
        "--lib",
        "build/logic.so",
        "--tick-ms",
        "10",
        "--reloads",
        "2",
    ];
    args.extend_from_slice(extra);
    let mut s = Server::start(dir, &args);
    s.expect_prefix("[reload] loaded logic.so (api=1, v1)");
    s.expect_contains("[plugin] tag=one score=2 ");
    let src = dir.join("logic.c");
    editor::in_place(&src, &counter("two", 100));
    s.expect_prefix("[reload] swapped logic.so (api=1, v2,");
    s.expect_contains("[plugin] tag=two score=");
    editor::in_place(&src, &counter("three", 10_000));
    s.expect_prefix("[reload] swapped logic.so (api=1, v3,");
    assert_eq!(s.exit_code(), 0, "{}", s.transcript());

    // One at start and one per save.
    builds_and_no_discards(&s, 3);
    let transcript = s.transcript();
    let changes: Vec<String> = s
        .lines()
        .into_iter()
        .filter(|l| l.starts_with("[watch] change detected"))
        .collect();
    assert_eq!(
        changes,
        vec!["[watch] change detected (logic.c)"; 2],
        "{transcript}"
    );
    s
}

#[test]
fn cmake_in_tree_build_with_a_gitignore() {
    let dir = cmake_project(&[(".gitignore", "build/\n")]);
    let s = cmake_reloads_once_per_save(dir.path(), &[]);
    assert_eq!(
        s.count(|l| l.starts_with("[watch]") && !l.contains("change detected")),
        0,
        "{}",
        s.transcript()
    );
}

#[test]
fn cmake_in_tree_build_with_an_ignore_flag() {
    let dir = cmake_project(&[]);
    cmake_reloads_once_per_save(dir.path(), &["--ignore", "build/"]);
}

/// With no rule at all, the folder holding `CMakeCache.txt` is recognised
/// as a build tree, ignored, and said so once.
#[test]
fn cmake_in_tree_build_without_rules() {
    let dir = cmake_project(&[]);
    let s = cmake_reloads_once_per_save(dir.path(), &[]);
    assert_eq!(
        s.count(|l| l.starts_with("[watch] ignoring build/ (it holds CMakeCache.txt")),
        1,
        "{}",
        s.transcript()
    );
}

/// A build that writes 37 files into `out/gen/` of the watched folder every
/// time it runs.
const GENERATING_BUILD: &str = "cc -shared -fPIC -o logic.so logic.c && mkdir -p out/gen && \
     for i in $(seq 1 37); do date +%N > out/gen/f$i.txt; done";

/// A server on `--watch .` whose build is [`GENERATING_BUILD`], with
/// `extra` flags, stopping after one reload; and the source's path.
fn start_generating(dir: &Path, extra: &[&str]) -> (std::path::PathBuf, Server) {
    let src = dir.join("logic.c");
    fs::write(&src, counter("one", 1)).expect("write");
    let mut args = vec![
        "--watch",
        ".",
        "--build",
        GENERATING_BUILD,
        "--tick-ms",
        "10",
        "--lib",
        "logic.so",
        "--reloads",
        "1",
    ];
    args.extend_from_slice(extra);
    (src, Server::start(dir, &args))
}

/// Nothing tells the server that `out/gen/` is the build's: after three
/// builds discarded for the same files, it says so, treats them as the
/// build's own, and the loop ends with a loaded build.
#[test]
fn a_build_that_writes_into_the_watched_folder_is_reported_and_the_loop_ends() {
    let dir = workdir();
    let (src, mut s) = start_generating(dir.path(), &[]);
    let report =
        s.expect_prefix("[watch] out/gen/… (37 files) changed during each of the last 3 builds");
    assert!(
        report.contains("--ignore 'out/gen/'"),
        "the line says how to make it permanent: {report}"
    );
    s.expect_prefix("[reload] loaded logic.so (api=1, v1)");
    s.expect_contains("[plugin] tag=one score=2 ");
    let after_report = s.lines().len();
    editor::in_place(&src, &counter("two", 100));
    s.expect_prefix("[reload] swapped logic.so (api=1, v2,");
    assert_eq!(s.exit_code(), 0, "{}", s.transcript());
    let lines = s.lines();
    assert!(
        lines[after_report..]
            .iter()
            .all(|l| !l.contains("a source changed during the build")),
        "{}",
        s.transcript()
    );
    assert_eq!(
        s.count(|l| l.contains("changed during each of the last")),
        1,
        "{}",
        s.transcript()
    );
}

/// `--ignore '**/gen/**'` takes a whole folder out, wherever it is.
#[test]
fn an_ignore_glob_excludes_a_folder() {
    let dir = workdir();
    let (src, mut s) = start_generating(dir.path(), &["--ignore", "**/gen/**"]);
    s.expect_prefix("[reload] loaded logic.so (api=1, v1)");
    s.expect_contains("[plugin] tag=one score=2 ");
    editor::in_place(&src, &counter("two", 100));
    s.expect_prefix("[reload] swapped logic.so (api=1, v2,");
    assert_eq!(s.exit_code(), 0, "{}", s.transcript());
    builds_and_no_discards(&s, 2);
    assert_eq!(s.count(|l| l.contains("gen/")), 0, "{}", s.transcript());
}

/// A `.gitignore` written while the server runs counts from then on.
#[test]
fn a_gitignore_written_while_running_is_honoured() {
    let dir = workdir();
    let src = dir.path().join("logic.c");
    fs::write(&src, counter("one", 1)).expect("write");
    let notes = dir.path().join("notes");
    fs::create_dir(&notes).expect("mkdir notes");
    let mut s = Server::start_watching(dir.path(), ".", &[]);
    s.expect_contains("[plugin] tag=one score=2 ");

    fs::write(dir.path().join(".gitignore"), "notes/\n*.log\n").expect("write");
    s.expect_prefix("[watch] change detected (.gitignore)");
    s.expect("the reaction to the .gitignore", is_outcome);
    fs::write(notes.join("todo.txt"), "later\n").expect("write");
    fs::write(dir.path().join("run.log"), "log\n").expect("write");
    // Anything noticed of the two writes above comes before, or in, the
    // line for this save.
    editor::in_place(&src, &counter("two", 100));
    let line = s.expect_prefix("[watch] change detected");
    assert_eq!(
        line,
        "[watch] change detected (logic.c)",
        "{}",
        s.transcript()
    );
    s.expect_contains("[plugin] tag=two score=");
    assert_eq!(s.stop(), 0, "{}", s.transcript());
}

/// The state file (and its temporary files) inside `--watch .`, saved every
/// tick: no save is a source change.
#[test]
fn the_state_file_inside_the_watched_folder_triggers_no_build() {
    let dir = workdir();
    let src = dir.path().join("logic.c");
    fs::write(&src, counter("one", 1)).expect("write");
    let mut s = Server::start_watching(
        dir.path(),
        ".",
        &["--state-file", "st.bin", "--save-every", "1"],
    );
    s.expect_prefix("[reload] loaded logic.so (api=1, v1)");
    // Thirty saves.
    s.expect_contains("[plugin] tag=one score=30 ");
    assert!(dir.path().join("st.bin").exists());
    assert_eq!(
        s.count(|l| l.starts_with("[watch]")),
        0,
        "{}",
        s.transcript()
    );
    editor::in_place(&src, &counter("two", 100));
    let line = s.expect_prefix("[watch] ");
    assert_eq!(
        line,
        "[watch] change detected (logic.c)",
        "{}",
        s.transcript()
    );
    s.expect_prefix("[reload] swapped logic.so (api=1, v2,");
    assert_eq!(s.stop(), 0, "{}", s.transcript());
    builds_and_no_discards(&s, 2);
}

/// An event during a build whose file turns out unchanged (opened for
/// writing, closed without a write) is skipped, and the build it came
/// during is still loaded.
#[test]
fn an_event_that_changes_nothing_does_not_discard_the_running_build() {
    let dir = workdir();
    let src = dir.path().join("logic.c");
    let flag = dir.path().join("building.flag");
    let mut s = support::start_with_slow_builds(dir.path());

    editor::in_place(&src, &counter("two", 100));
    s.expect_prefix("[watch] change detected (logic.c)");
    wait_for_file(&flag);
    drop(
        fs::OpenOptions::new()
            .write(true)
            .open(&src)
            .expect("open for write"),
    );
    s.expect_prefix("[watch] logic.c unchanged since the last build was asked for (same mtime, size and inode); build skipped");
    s.expect_prefix("[reload] swapped logic.so (api=1, v2,");
    s.expect_contains("[plugin] tag=two score=");
    assert_eq!(s.stop(), 0, "{}", s.transcript());
    builds_and_no_discards(&s, 2);
}
