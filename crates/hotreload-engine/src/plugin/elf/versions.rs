//! Symbol versions, as `_dl_check_map_versions` and the relocation loop
//! use them. The version-need and version-definition records are chained
//! by forward offsets the loader follows until a zero, without a bound;
//! their highest index sizes the array that every symbol's version index
//! (`DT_VERSYM`) then indexes without a check, and a version need naming a
//! library that is not among the dependencies fails an assertion.

use super::dynamic::{DT_VERDEF, DT_VERDEFNUM, DT_VERNEED, DT_VERNEEDNUM, DT_VERSYM, Dynamic};
use super::segments::Layout;
use super::symbols::{Strings, Symbols};
use super::{elf_hash, show, u16_at, u32_at};

/// More version records than any library has; bounds every walk.
const MAX_RECORDS: u64 = 4096;
const VER_FLG_BASE: u16 = 1;

pub(super) struct Versions {
    versym: Vec<u16>,
    /// The records' places, which relocations must not overwrite.
    pub ranges: Vec<(&'static str, u64, u64)>,
}

impl Versions {
    /// A hidden version (`sym@V`, not `sym@@V`): `dlsym` skips it.
    pub fn hidden(&self, index: u64) -> bool {
        self.versym
            .get(index as usize)
            .is_some_and(|v| v & 0x8000 != 0 && v & 0x7fff >= 2)
    }
}

/// Walks a chain of `len`-byte records linked by forward offsets, as the
/// loader does: from `start`, `visit(index, address, record)` checks one
/// and returns the offset of the next from it (0 ends the chain). Every
/// record must be aligned and inside a segment's file bytes, and the chain
/// must end within [`MAX_RECORDS`]. Returns how many records it holds.
fn walk<'a>(
    bytes: &'a [u8],
    layout: &Layout,
    start: u64,
    len: u64,
    what: &dyn Fn(u64) -> String,
    mut visit: impl FnMut(u64, u64, &'a [u8]) -> Result<u32, String>,
) -> Result<u64, String> {
    let mut at = start;
    for n in 0..MAX_RECORDS {
        if !at.is_multiple_of(4) {
            return Err(format!(
                "{}: expected a 4-byte aligned record, found it at {at:#x}",
                what(n)
            ));
        }
        let rec = layout.file_bytes(bytes, at, len).map_err(|found| {
            format!(
                "{}: expected its {len} bytes inside a loaded segment's file bytes, {found}",
                what(n)
            )
        })?;
        match visit(n, at, rec)? {
            0 => return Ok(n + 1),
            next => at = at.saturating_add(u64::from(next)),
        }
    }
    Err(format!(
        "{}: expected the chain to end within {MAX_RECORDS} records, found no end",
        what(MAX_RECORDS)
    ))
}

/// A field of a record that [`walk`] has read whole.
fn field16(rec: &[u8], at: u64) -> u16 {
    u16_at(rec, at).unwrap_or(0)
}

fn field32(rec: &[u8], at: u64) -> u32 {
    u32_at(rec, at).unwrap_or(0)
}

/// The name at a record's string offset, whose ELF hash must be `hash`.
fn named<'a>(
    strings: &Strings<'a>,
    offset: u32,
    hash: Option<u32>,
    what: &str,
) -> Result<&'a [u8], String> {
    let Some(name) = strings.get(u64::from(offset)) else {
        return Err(format!(
            "{what}: expected its name to be a NUL-terminated string inside the string table ({}), found offset {offset:#x}",
            strings.describe()
        ));
    };
    if let Some(hash) = hash
        && elf_hash(name) != hash
    {
        return Err(format!(
            "{what} ({}): expected the hash of its name {:#x}, found {hash:#x}",
            show(name),
            elf_hash(name)
        ));
    }
    Ok(name)
}

/// A record count from a `*NUM` entry must be the chain's.
fn counted(dynamic: &Dynamic, tag: u64, what: &str, found: u64) -> Result<(), String> {
    match dynamic.get(tag) {
        Some(count) if count != found => Err(format!(
            "{}: expected the {found} {what} the chain holds, found {count}",
            super::dynamic::tag_name(tag)
        )),
        _ => Ok(()),
    }
}

pub(super) fn check(
    bytes: &[u8],
    layout: &Layout,
    dynamic: &Dynamic,
    strings: &Strings,
    symbols: &Symbols,
) -> Result<Versions, String> {
    let mut ranges = Vec::new();
    let mut highest = 0u16;
    if let Some(start) = dynamic.get(DT_VERNEED) {
        let libraries = dynamic.library_names(strings);
        let need = |n: u64| format!("version need {n}");
        let count = walk(bytes, layout, start, 16, &need, |n, at, rec| {
            let (version, cnt, file) = (field16(rec, 0), field16(rec, 2), field32(rec, 4));
            if version != 1 {
                return Err(format!(
                    "{}: expected vn_version 1, found {version}",
                    need(n)
                ));
            }
            let library = named(strings, file, None, &need(n))?;
            if !libraries.contains(&library) {
                // The loader asserts that it is one of them.
                return Err(format!(
                    "{}: expected vn_file to name one of the libraries in DT_NEEDED, found \"{}\"",
                    need(n),
                    show(library)
                ));
            }
            ranges.push(("the version needs", at, 16));
            let entry = |k: u64| format!("version need {n} ({}), entry {k}", show(library));
            let aux_at = at.saturating_add(u64::from(field32(rec, 8)));
            let entries = walk(bytes, layout, aux_at, 16, &entry, |k, aux_at, aux| {
                named(strings, field32(aux, 8), Some(field32(aux, 0)), &entry(k))?;
                let index = field16(aux, 6) & 0x7fff;
                if index < 2 {
                    return Err(format!(
                        "{}: expected a version index of at least 2 (vna_other), found {index}",
                        entry(k)
                    ));
                }
                highest = highest.max(index);
                ranges.push(("the version needs", aux_at, 16));
                Ok(field32(aux, 12))
            })?;
            if entries != u64::from(cnt) {
                return Err(format!(
                    "{} ({}): expected {cnt} entries (vn_cnt), found {entries}",
                    need(n),
                    show(library)
                ));
            }
            Ok(field32(rec, 12))
        })?;
        counted(dynamic, DT_VERNEEDNUM, "version needs", count)?;
    }
    if let Some(start) = dynamic.get(DT_VERDEF) {
        let def = |n: u64| format!("version definition {n}");
        let count = walk(bytes, layout, start, 20, &def, |n, at, rec| {
            let (version, flags, ndx, cnt, hash) = (
                field16(rec, 0),
                field16(rec, 2),
                field16(rec, 4),
                field16(rec, 6),
                field32(rec, 8),
            );
            if version != 1 {
                return Err(format!(
                    "{}: expected vd_version 1, found {version}",
                    def(n)
                ));
            }
            let index = ndx & 0x7fff;
            let least = if flags & VER_FLG_BASE != 0 { 1 } else { 2 };
            if index < least {
                return Err(format!(
                    "{}: expected a version index (vd_ndx) of at least {least}, found {index}",
                    def(n)
                ));
            }
            highest = highest.max(index);
            ranges.push(("the version definitions", at, 20));
            let name = |k: u64| format!("version definition {n}, name {k}");
            let aux_at = at.saturating_add(u64::from(field32(rec, 12)));
            let names = walk(bytes, layout, aux_at, 8, &name, |k, aux_at, aux| {
                // The first name is the version's; later ones its parents'.
                named(strings, field32(aux, 0), (k == 0).then_some(hash), &name(k))?;
                ranges.push(("the version definitions", aux_at, 8));
                Ok(field32(aux, 4))
            })?;
            if names != u64::from(cnt) {
                return Err(format!(
                    "{}: expected {cnt} names (vd_cnt), found {names}",
                    def(n)
                ));
            }
            Ok(field32(rec, 16))
        })?;
        counted(dynamic, DT_VERDEFNUM, "version definitions", count)?;
    }
    let mut versym = Vec::new();
    if let Some(at) = dynamic.get(DT_VERSYM) {
        let table = layout
            .file_bytes(bytes, at, symbols.count * 2)
            .map_err(|found| {
                format!(
                    "the symbol versions (DT_VERSYM {at:#x}, {} symbols): expected them inside a loaded segment's file bytes, {found}",
                    symbols.count
                )
            })?;
        for i in 0..symbols.count {
            let v = u16_at(table, i * 2).unwrap_or(0);
            let index = v & 0x7fff;
            // With no version records the loader has no array at all, and
            // only index 0 stays clear of it.
            let ok = if highest == 0 {
                index == 0
            } else {
                index <= highest
            };
            if !ok {
                return Err(format!(
                    "the symbol versions, entry {i} ({}): expected a version index up to {highest} (the highest the version records define), found {index}",
                    symbols.describe(i)
                ));
            }
            versym.push(v);
        }
    }
    Ok(Versions { versym, ranges })
}
