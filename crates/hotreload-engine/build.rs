//! Compiles the C trampoline that runs plugin calls under the crash guard
//! (see `src/guard/trampoline.c` for why it must be C).

fn main() {
    println!("cargo:rerun-if-changed=src/guard/trampoline.c");
    cc::Build::new()
        .file("src/guard/trampoline.c")
        .opt_level(2)
        .warnings(true)
        .extra_warnings(true)
        .flag_if_supported("-fno-omit-frame-pointer")
        .compile("hotreload_trampoline");
}
