//! Compiles the C side of the crash guard: the trampoline that runs plugin
//! calls (see `src/guard/trampoline.c` for why it must be C) and the
//! interposers that turn a plugin's `exit()` into a fault
//! (`src/guard/exits.c`), keep it from changing the signal handlers and
//! masks the host relies on (`src/guard/process.c`), keep track of the
//! threads it starts (`src/guard/threads.c`) and open a large state's
//! read-only pages before the kernel writes them (`src/guard/buffers.c`);
//! the page tracking behind the exact snapshot (`src/guard/pages.c`); and
//! the handler that says
//! what an isolated worker's confinement refused
//! (`src/plugin/isolate/refusals.c`).

/// Every function the guard interposes (`src/guard/interposed.txt`).
const INTERPOSED: &str = include_str!("src/guard/interposed.txt");

fn main() {
    println!("cargo:rerun-if-changed=src/guard/interposed.txt");
    // The integration tests (`tests/`) embed the engine as a host would,
    // and export the interposers as a host must for plugin code's calls to
    // reach them (the threads a plugin starts, among others).
    for symbol in INTERPOSED.lines().map(str::trim).filter(|l| !l.is_empty()) {
        println!("cargo:rustc-link-arg-tests=-Wl,--export-dynamic-symbol={symbol}");
    }
    println!("cargo:rerun-if-changed=src/guard/trampoline.c");
    println!("cargo:rerun-if-changed=src/guard/exits.c");
    println!("cargo:rerun-if-changed=src/guard/process.c");
    println!("cargo:rerun-if-changed=src/guard/threads.c");
    println!("cargo:rerun-if-changed=src/guard/pages.c");
    println!("cargo:rerun-if-changed=src/guard/buffers.c");
    println!("cargo:rerun-if-changed=src/plugin/isolate/refusals.c");
    cc::Build::new()
        .file("src/guard/trampoline.c")
        .file("src/guard/exits.c")
        .file("src/guard/process.c")
        .file("src/guard/threads.c")
        .file("src/guard/pages.c")
        .file("src/guard/buffers.c")
        .file("src/plugin/isolate/refusals.c")
        .opt_level(2)
        .warnings(true)
        .extra_warnings(true)
        .flag_if_supported("-fno-omit-frame-pointer")
        // The exit interposers are alike; folded into one, they would report
        // each other's return address as the plugin's call site.
        .flag_if_supported("-fno-ipa-icf")
        .compile("hotreload_trampoline");
}
