//! Exports the crash guard's interposers from the host executable (and its
//! tests), as every host that embeds the engine must: plugin code's calls
//! to `pthread_create`, `exit` and the others bind to the executable's
//! definitions first, which is how the guard sees them.

const INTERPOSED: &str = include_str!("../../crates/hotreload-engine/src/guard/interposed.txt");

fn main() {
    println!("cargo:rerun-if-changed=../../crates/hotreload-engine/src/guard/interposed.txt");
    for symbol in INTERPOSED.lines().map(str::trim).filter(|l| !l.is_empty()) {
        println!("cargo:rustc-link-arg-bins=-Wl,--export-dynamic-symbol={symbol}");
    }
}
