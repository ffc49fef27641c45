//! Exports the crash guard's interposers from the `hotreload` executable, so
//! that plugin code calling these C library functions reaches the guard
//! first: the ways out (`exit`, `_exit`, `_Exit`, `quick_exit`,
//! `pthread_exit`), which become a fault of that version instead of the end
//! of the host (`hotreload-engine/src/guard/exits.c`), and the signal
//! handler and mask functions, whose changes to what the host relies on are
//! refused or undone (`hotreload-engine/src/guard/process.c`), and
//! `pthread_create`, so that a version is never unmapped under a thread it
//! started (`hotreload-engine/src/guard/threads.c`), and the calls that have
//! the kernel write into a buffer, which must open a large state's
//! read-only pages first (`hotreload-engine/src/guard/buffers.c`).

/// Every function the guard interposes, one per line (the engine's list,
/// which it also checks at start).
const INTERPOSED: &str = include_str!("../hotreload-engine/src/guard/interposed.txt");

fn main() {
    println!("cargo:rerun-if-changed=../hotreload-engine/src/guard/interposed.txt");
    for symbol in INTERPOSED.lines().map(str::trim).filter(|l| !l.is_empty()) {
        println!("cargo:rustc-link-arg-bins=-Wl,--export-dynamic-symbol={symbol}");
    }
}
