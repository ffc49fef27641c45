//! Exports the crash guard's interposers for the C library's ways out
//! (`exit`, `_exit`, `_Exit`, `quick_exit`, `pthread_exit`) from the
//! `hotreload` executable, so that plugin code calling them reaches the
//! guard, which turns the call into a fault of that version instead of the
//! end of the host. See `hotreload-engine/src/guard/exits.c`.

fn main() {
    for symbol in ["exit", "_exit", "_Exit", "quick_exit", "pthread_exit"] {
        println!("cargo:rustc-link-arg-bins=-Wl,--export-dynamic-symbol={symbol}");
    }
}
