//! What a toolchain puts into every library it builds, which the plugin's
//! author never wrote: the Rust standard library and the crates it is built
//! from, and the `hotreload-plugin` crate's glue (its own statics, and what
//! its `export!` writes into the plugin's crate). Such types are never the
//! state, and such statics are not the plugin's to warn about.

/// The crates of a Rust toolchain's `lib/rustlib/<target>/lib`: the
/// standard library and what it is built from.
const RUST_RUNTIME_CRATES: &[&str] = &[
    "std",
    "core",
    "alloc",
    "addr2line",
    "adler",
    "adler2",
    "cfg_if",
    "compiler_builtins",
    "gimli",
    "hashbrown",
    "libc",
    "memchr",
    "miniz_oxide",
    "object",
    "panic_abort",
    "panic_unwind",
    "proc_macro",
    "rustc_demangle",
    "std_detect",
    "unwind",
];

/// The crate plugins are written with, and the module its `export!` macro
/// writes into a plugin's crate.
const PLUGIN_CRATE: &str = "hotreload_plugin";
const PLUGIN_GLUE_MODULE: &str = "::__hotreload_plugin_glue::";

/// Whether a Rust path (`std::io::stdio::STDOUT`, `<core::fmt::Arguments as
/// …>::X`) belongs to the toolchain's own crates or the plugin crate's glue.
pub fn rust_runtime_path(path: &str) -> bool {
    let path = path.trim_start_matches(['<', '&', '*']);
    let Some((root, _)) = path.split_once("::") else {
        return false;
    };
    RUST_RUNTIME_CRATES.contains(&root) || root == PLUGIN_CRATE || path.contains(PLUGIN_GLUE_MODULE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_toolchains_crates_and_not_the_users() {
        assert!(rust_runtime_path("std::io::stdio::STDOUT"));
        assert!(rust_runtime_path("<core::fmt::Arguments as x::Y>::Z"));
        assert!(!rust_runtime_path("rsplug::game::State"));
        assert!(!rust_runtime_path("state_t"));
        assert!(!rust_runtime_path("stdlib::x"));
        assert!(rust_runtime_path("hotreload_plugin::boundary::HOOK"));
        assert!(rust_runtime_path(
            "rust_counter::__hotreload_plugin_glue::__HR_EXT"
        ));
        assert!(!rust_runtime_path("rust_counter::CALLS"));
    }
}
