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
    state
        .chunks_exact(8)
        .enumerate()
        .filter_map(|(i, word)| {
            let mut raw = [0u8; 8];
            raw.copy_from_slice(word);
            let value = u64::from_ne_bytes(raw) as usize;
            (value != 0 && points_in(value)).then_some(i * 8)
        })
        .collect()
}

/// The library's own writable data symbols (`.data`, `.bss`) with their
/// sizes, except those at `except` (addresses as linked: the tables the
/// plugin hands the host live in writable data too, and are meant to).
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
        .filter_map(|s| Some((s.name().ok()?.to_owned(), s.size())))
        .filter(|(name, _)| !name.is_empty() && !name.starts_with("__") && !from_start_files(name))
        .collect();
    found.sort();
    found.dedup();
    found
}

/// Data the C runtime's start files (crtstuff) put in every shared object.
fn from_start_files(name: &str) -> bool {
    ["completed.", "dtor_idx."]
        .iter()
        .any(|p| name.starts_with(p))
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
}
