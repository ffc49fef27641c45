//! Everything glibc's loader reads when it maps, relocates, looks up in and
//! unloads a library, checked on the file's bytes before it does.
//!
//! `dlopen` trusts the file: a corrupt dynamic section, hash table, symbol
//! or version index, or relocation makes it read or write outside the
//! library, or fail an assertion, with the loader's lock held, where no
//! crash guard can safely jump out. So the validator walks the same
//! structures the same way, each read bounds-checked against the file,
//! and refuses a library with a reason that names the structure, the index,
//! and what was expected and found. Only a file that passes is mapped.
//!
//! The stages, each in its own file: [`header`] (the ELF header and the
//! section table), [`segments`] (program headers: what gets mapped where,
//! and how addresses translate to file offsets), [`notes`], [`dynamic`]
//! (the dynamic section's entries), [`symbols`] (string table, symbol
//! table, GNU and SysV hash tables, the entry points), [`versions`]
//! (version needs, definitions and the per-symbol indices) and [`relocs`].
//!
//! Two things the loader would do are kept from it. Its own constructors
//! and destructors: the host runs them itself, under the crash guard (see
//! [`Image::neutralized`]). And indirect-function resolvers, which run
//! inside the loader: a library with any is refused.
//!
//! Complete for x86-64, the only host architecture validated; on another
//! architecture relocations are refused (their types are not known here).

mod dynamic;
mod header;
mod notes;
mod relocs;
mod segments;
mod symbols;
mod versions;

#[cfg(test)]
mod tests;

use segments::Layout;

/// The loader ignores dynamic tags it does not know. The host retags a
/// library's constructor and destructor entries to these before it maps
/// the copy, so that the loader runs none of them and the host can run
/// them under the crash guard; a copy keeps saying where they are. In the
/// operating-system-specific range, which glibc leaves alone.
pub const HR_INIT: u64 = 0x6068_7200;
pub const HR_FINI: u64 = 0x6068_7201;
pub const HR_INIT_ARRAY: u64 = 0x6068_7202;
pub const HR_FINI_ARRAY: u64 = 0x6068_7203;

/// A library that passed: what the host needs to load it and call it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Image {
    /// Every loadable segment's addresses, as linked: `[start, end)`.
    pub spans: Vec<(u64, u64)>,
    /// The executable segments' file-backed addresses, as linked.
    pub code: Vec<(u64, u64)>,
    /// Where the dynamic section is, as linked: the loader's `l_ld` must be
    /// the load base plus this.
    pub dynamic: u64,
    /// `logic_get_api`, as linked, when the library exports it.
    pub get_api: Option<u64>,
    /// `logic_get_api_ext`, as linked, when the library exports it.
    pub get_api_ext: Option<u64>,
    /// `hotreload_plugin` (the record of a library built with the
    /// `hotreload-plugin` crate), as linked, when the library exports it.
    pub plugin_record: Option<u64>,
    /// Why `logic_get_api` does not count as exported, when a symbol of
    /// that name is there but is not an exported function.
    pub get_api_refused: Option<String>,
    /// The entry point named to [`validate_with_entry`] (a host's own
    /// table, see `crate::embed`), as linked, when the library exports it.
    pub entry: Option<u64>,
    /// Why that entry point does not count as exported, when a symbol of
    /// its name is there but is not an exported function.
    pub entry_refused: Option<String>,
    /// The constructors, in the order the loader would run them.
    pub init: Vec<Code>,
    /// The destructors, in the order the loader would run them.
    pub fini: Vec<Code>,
    /// `DF_1_NODELETE`: `dlclose` never unmaps it.
    pub nodelete: bool,
    /// File offsets of the `d_tag`s to retag, and their new tags.
    retag: Vec<(usize, u64)>,
}

/// A constructor or destructor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Code {
    /// `DT_INIT` or `DT_FINI`: the function's address, as linked.
    Function(u64),
    /// One slot of `DT_INIT_ARRAY` or `DT_FINI_ARRAY`, as linked: the
    /// function's address is what the slot holds once relocated.
    Slot {
        array: &'static str,
        index: usize,
        at: u64,
    },
}

impl Image {
    /// The bytes to map: `bytes` with the constructor and destructor
    /// entries retagged (see [`HR_INIT`]), so that the loader runs none of
    /// them. A copy made from these validates to the same image.
    pub fn neutralized(&self, bytes: &[u8]) -> Vec<u8> {
        let mut out = bytes.to_vec();
        for &(at, tag) in &self.retag {
            if let Some(field) = out.get_mut(at..at.saturating_add(8)) {
                field.copy_from_slice(&tag.to_le_bytes());
            }
        }
        out
    }

    /// Whether `[address, address + len)` (as linked) lies in code.
    pub fn in_code(&self, address: u64, len: u64) -> bool {
        within(&self.code, address, len)
    }
}

fn within(ranges: &[(u64, u64)], address: u64, len: u64) -> bool {
    address
        .checked_add(len)
        .is_some_and(|end| ranges.iter().any(|&(s, e)| s <= address && end <= e))
}

/// Checks `bytes` as the loader will read them. `Err` says what is wrong,
/// naming what was expected and what was found.
pub fn validate(bytes: &[u8]) -> Result<Image, String> {
    validate_with_entry(bytes, None)
}

/// [`validate`], also looking for the exported function `entry` (a host's
/// own entry point) as the loader would find it.
pub fn validate_with_entry(bytes: &[u8], entry: Option<&str>) -> Result<Image, String> {
    if !cfg!(all(target_endian = "little", target_pointer_width = "64")) {
        return Err("not validated: this host is not a 64-bit little-endian machine".into());
    }
    let header = header::read(bytes)?;
    header::check_sections(bytes)?;
    let phdrs = segments::program_headers(bytes, &header)?;
    let layout = Layout::new(&phdrs, bytes.len() as u64)?;
    let special = segments::check_special(bytes, &header, &phdrs, &layout)?;
    notes::check(bytes, &phdrs, &layout)?;
    let dynamic = dynamic::read(bytes, &layout, &special)?;
    let strings = symbols::Strings::new(bytes, &layout, &dynamic)?;
    dynamic.check_strings(&strings)?;
    let symbols = symbols::Symbols::read(bytes, &layout, &dynamic, &strings, &special)?;
    let versions = versions::check(bytes, &layout, &dynamic, &strings, &symbols)?;
    let mut tables = dynamic.tables(&symbols);
    tables.push(("the dynamic section", special.dynamic.0, special.dynamic.1));
    tables.extend(special.phdrs_in_memory);
    tables.extend(versions.ranges.iter().copied());
    let relocations = relocs::check(bytes, &layout, &dynamic, &symbols, &special, &tables)?;
    let (init, fini) = dynamic.code(&layout, &relocations, &symbols)?;
    let found = symbols.entry_points(&layout, &versions, entry)?;
    Ok(Image {
        spans: layout.spans(),
        code: layout.code(),
        dynamic: special.dynamic.0,
        get_api: found.get_api,
        get_api_ext: found.get_api_ext,
        plugin_record: found.plugin_record,
        get_api_refused: found.refused,
        entry: found.named,
        entry_refused: found.named_refused,
        init,
        fini,
        nodelete: dynamic.nodelete || symbols.has_unique,
        retag: dynamic.retag(),
    })
}

// ---------------------------------------------------------------------------
// Bounds-checked reads. Offsets come from the file, so every one is checked;
// `None` means "outside the bytes".

pub(crate) fn slice(bytes: &[u8], at: u64, len: u64) -> Option<&[u8]> {
    let start = usize::try_from(at).ok()?;
    let end = start.checked_add(usize::try_from(len).ok()?)?;
    bytes.get(start..end)
}

pub(crate) fn u16_at(bytes: &[u8], at: u64) -> Option<u16> {
    slice(bytes, at, 2)?.try_into().ok().map(u16::from_le_bytes)
}

pub(crate) fn u32_at(bytes: &[u8], at: u64) -> Option<u32> {
    slice(bytes, at, 4)?.try_into().ok().map(u32::from_le_bytes)
}

pub(crate) fn u64_at(bytes: &[u8], at: u64) -> Option<u64> {
    slice(bytes, at, 8)?.try_into().ok().map(u64::from_le_bytes)
}

/// The NUL-terminated string at the start of `bytes`, if it ends there.
pub(crate) fn c_string(bytes: &[u8]) -> Option<&[u8]> {
    bytes
        .iter()
        .position(|&b| b == 0)
        .and_then(|n| bytes.get(..n))
}

/// The ELF (SysV) hash of a name, as `DT_HASH` and version records use it.
pub(crate) fn elf_hash(name: &[u8]) -> u32 {
    let mut h: u32 = 0;
    for &c in name {
        h = (h << 4).wrapping_add(u32::from(c));
        let g = h & 0xf000_0000;
        h ^= g >> 24;
        h &= !g;
    }
    h
}

/// The GNU hash of a name (`DT_GNU_HASH`).
pub(crate) fn gnu_hash(name: &[u8]) -> u32 {
    name.iter().fold(5381u32, |h, &c| {
        h.wrapping_mul(33).wrapping_add(u32::from(c))
    })
}

/// A name from the file, for messages: lossy, and cut short.
pub(crate) fn show(name: &[u8]) -> String {
    let text = String::from_utf8_lossy(name);
    if text.chars().count() > 40 {
        format!("{}…", text.chars().take(40).collect::<String>())
    } else {
        text.into_owned()
    }
}
