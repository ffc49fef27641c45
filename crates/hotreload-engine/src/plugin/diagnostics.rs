//! Habits that break hot reloading, found and named.
//!
//! Two things survive a reload badly and fail far from their cause: a value
//! in the state that points into the library (a string literal, a function,
//! a static), which dangles once that version is unloaded; and data the
//! plugin keeps in its own writable statics, which every new version starts
//! afresh. Both are found mechanically and reported once, with names.

use object::{Object, ObjectSection, ObjectSymbol, SectionKind, SymbolKind};

/// The offsets of 8-byte-aligned words in `state` whose value satisfies
/// `points_in` (an address inside some library).
pub fn pointers_into(state: &[u8], points_in: impl Fn(usize) -> bool) -> Vec<usize> {
    pointers_within(state, 0, usize::MAX, points_in)
}

/// [`pointers_into`] for addresses in `low..high` only (the span of the
/// libraries asked about): nearly every word fails that test alone, which
/// keeps the scan of a large state to two comparisons a word.
pub fn pointers_within(
    state: &[u8],
    low: usize,
    high: usize,
    points_in: impl Fn(usize) -> bool,
) -> Vec<usize> {
    let mut found = Vec::new();
    for (i, word) in state.chunks_exact(8).enumerate() {
        let value = u64::from_ne_bytes([
            word[0], word[1], word[2], word[3], word[4], word[5], word[6], word[7],
        ]) as usize;
        if value >= low && value < high && value != 0 && points_in(value) {
            found.push(i * 8);
        }
    }
    found
}

/// The library's own writable data symbols (`.data`, `.bss`) with their
/// sizes, except those at `except` (addresses as linked: the tables the
/// plugin hands the host live in writable data too, and are meant to).
/// Only what the plugin's own code owns is named: the C runtime's start
/// files, the Rust standard library and the crates it is built from, and
/// linker-made symbols (`DW.ref.rust_eh_personality`) are not. Rust names
/// are demangled (`rsplug::CALLS`, not `_ZN6rsplug5CALLS17h…E`).
pub fn writable_statics(library: &[u8], except: &[u64]) -> Vec<(String, u64)> {
    let Ok(file) = object::File::parse(library) else {
        return Vec::new();
    };
    let mut found: Vec<(String, u64)> = file
        .symbols()
        .filter(|s| s.kind() == SymbolKind::Data && s.is_definition() && s.size() > 0)
        .filter(|s| !except.contains(&s.address()))
        .filter(|s| {
            s.section_index()
                .and_then(|i| file.section_by_index(i).ok())
                .is_some_and(|sec| {
                    matches!(
                        sec.kind(),
                        SectionKind::Data | SectionKind::UninitializedData
                    ) && !sec.name().is_ok_and(|n| n.starts_with(".data.rel.ro"))
                })
        })
        .filter_map(|s| Some((s.name().ok()?, s.size())))
        .filter(|(name, _)| !name.is_empty() && !name.starts_with("__") && !made_for_it(name))
        .map(|(name, size)| (demangled(name), size))
        .filter(|(name, _)| !crate::toolchain::rust_runtime_path(name))
        .collect();
    found.sort();
    found.dedup();
    found
}

/// Data the toolchain puts in every shared object: the C runtime's start
/// files (crtstuff), the linker's references to a personality routine,
/// and the Rust compiler's linkage shims.
fn made_for_it(name: &str) -> bool {
    [
        "completed.",
        "dtor_idx.",
        "DW.ref.",
        "_rust_extern_with_linkage_",
    ]
    .iter()
    .any(|p| name.starts_with(p))
}

/// A Rust symbol's path without its hash; any other name as it is.
fn demangled(name: &str) -> String {
    match rustc_demangle::try_demangle(name) {
        Ok(d) => format!("{d:#}"),
        Err(_) => name.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_aligned_words_in_range() {
        let mut state = vec![0u8; 32];
        state[8..16].copy_from_slice(&0x5000usize.to_ne_bytes());
        state[24..32].copy_from_slice(&0x9000usize.to_ne_bytes());
        let hits = pointers_into(&state, |a| (0x4000..0x6000).contains(&a));
        assert_eq!(hits, vec![8]);
    }

    #[test]
    fn rust_names_are_demangled_and_c_names_kept() {
        assert_eq!(
            demangled("_ZN6rsplug5CALLS17h36154d57503c6aa5E"),
            "rsplug::CALLS"
        );
        assert_eq!(
            demangled("_RNvNtNtCsjrHSEGnQ3l9_3std2io5stdio6STDOUT"),
            "std::io::stdio::STDOUT"
        );
        assert_eq!(demangled("calls"), "calls");
        assert!(made_for_it("DW.ref.rust_eh_personality"));
        assert!(!made_for_it("calls"));
    }
}
