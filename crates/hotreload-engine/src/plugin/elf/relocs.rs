//! Relocations, as `_dl_relocate_object` applies them: packed relative
//! ones (`DT_RELR`) first, then `DT_RELA`, then the PLT's (`DT_JMPREL`).
//! Each writes where `r_offset` says and reads the symbol and version its
//! index says, unchecked: every target must be in the library's writable
//! memory and outside the tables the loader still reads afterwards, every
//! symbol index inside the symbol table. Relative ones must point into the
//! library. The first `DT_RELACOUNT` are applied as relative whatever
//! their type says.
//!
//! Types: complete for x86-64. Elsewhere types are not validated (only
//! their targets and symbols), and just the relative type is recognised.

use std::collections::HashMap;

use super::dynamic::{
    DT_JMPREL, DT_PLTRELSZ, DT_RELA, DT_RELACOUNT, DT_RELASZ, DT_RELR, DT_RELRSZ, DT_SYMTAB,
    Dynamic,
};
use super::segments::{Layout, Special};
use super::symbols::Symbols;
use super::u64_at;

const MAX_RELOCATIONS: u64 = 1 << 22;

const NONE: u32 = 0;
const R_64: u32 = 1;
const COPY: u32 = 5;
const GLOB_DAT: u32 = 6;
const JUMP_SLOT: u32 = 7;
const RELATIVE: u32 = 8;
const DTPMOD64: u32 = 16;
const DTPOFF64: u32 = 17;
const TPOFF64: u32 = 18;
const SIZE64: u32 = 33;
const TLSDESC: u32 = 36;
const IRELATIVE: u32 = 37;
const RELATIVE64: u32 = 38;

/// The relative type on the machines whose types are not validated.
const OTHER_RELATIVE: u32 = if cfg!(target_arch = "aarch64") {
    1027
} else if cfg!(target_arch = "riscv64") {
    3
} else {
    RELATIVE
};
const VALIDATED: bool = cfg!(target_arch = "x86_64");

/// What a relocation leaves in a word, when that matters (the constructor
/// arrays): a link-time address to add the base to, or a symbol's value.
#[derive(Clone, Copy, Debug)]
pub(super) enum Effect {
    Relative(u64),
    Symbol(u64, u64),
    Other(u32),
}

pub(super) struct Relocations {
    by_target: HashMap<u64, Effect>,
}

impl Relocations {
    /// The last relocation's effect on the word at `at`.
    pub fn effect(&self, at: u64) -> Option<Effect> {
        self.by_target.get(&at).copied()
    }
}

fn type_name(kind: u32) -> String {
    let name = match kind {
        NONE => "R_X86_64_NONE",
        R_64 => "R_X86_64_64",
        2 => "R_X86_64_PC32",
        COPY => "R_X86_64_COPY",
        GLOB_DAT => "R_X86_64_GLOB_DAT",
        JUMP_SLOT => "R_X86_64_JUMP_SLOT",
        RELATIVE => "R_X86_64_RELATIVE",
        10 => "R_X86_64_32",
        11 => "R_X86_64_32S",
        DTPMOD64 => "R_X86_64_DTPMOD64",
        DTPOFF64 => "R_X86_64_DTPOFF64",
        TPOFF64 => "R_X86_64_TPOFF64",
        32 => "R_X86_64_SIZE32",
        SIZE64 => "R_X86_64_SIZE64",
        TLSDESC => "R_X86_64_TLSDESC",
        IRELATIVE => "R_X86_64_IRELATIVE",
        RELATIVE64 => "R_X86_64_RELATIVE64",
        other => return format!("type {other}"),
    };
    name.to_owned()
}

/// `Ok(width)` of what the loader writes for an accepted type.
fn accepted(kind: u32) -> Result<u64, String> {
    if !VALIDATED {
        return Ok(8);
    }
    match kind {
        NONE => Ok(0),
        R_64 | GLOB_DAT | JUMP_SLOT | RELATIVE | RELATIVE64 | DTPMOD64 | DTPOFF64 | TPOFF64 => Ok(8),
        TLSDESC => Ok(16),
        COPY => Err("R_X86_64_COPY, which belongs in executables, not libraries".into()),
        IRELATIVE => Err(
            "R_X86_64_IRELATIVE: its resolver would run inside the loader, where a crash cannot be caught"
                .into(),
        ),
        SIZE64 => Err("R_X86_64_SIZE64 (the loader dereferences its symbol even when it is missing)".into()),
        2 | 10 | 11 | 12..=15 | 32 => Err(format!(
            "{}, a text relocation (build every object with -fPIC)",
            type_name(kind)
        )),
        other => Err(format!("{}, which the x86-64 loader does not apply", type_name(other))),
    }
}

/// Which relocation, for a message: `DT_RELA[3]`. Formatted only when a
/// message is made (there are thousands of relocations).
#[derive(Clone, Copy)]
struct Place<'n>(&'n str, u64);

impl std::fmt::Display for Place<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}[{}]", self.0, self.1)
    }
}

struct Checker<'a, 'b> {
    bytes: &'a [u8],
    layout: &'b Layout,
    symbols: &'b Symbols<'a>,
    special: &'b Special,
    tables: &'b [(&'static str, u64, u64)],
    bounds: (u64, u64),
    /// The words whose relocated values matter afterwards (the constructor
    /// and destructor arrays).
    watched: Vec<(u64, u64)>,
    out: Relocations,
    count: u64,
}

impl Checker<'_, '_> {
    /// `[at, at + width)` may be written: writable library memory, outside
    /// the loader's tables.
    fn target(&self, what: Place<'_>, at: u64, width: u64) -> Result<(), String> {
        // The loader writes whole words; a misaligned one straddles two.
        if !at.is_multiple_of(8) {
            return Err(format!(
                "{what}: expected r_offset aligned to 8 bytes, found {at:#x}"
            ));
        }
        if !self
            .layout
            .in_memory(at, width)
            .is_some_and(|s| s.writable())
        {
            return Err(format!(
                "{what}: expected r_offset inside a writable segment ({width} bytes), found {}",
                self.layout.describe(at)
            ));
        }
        let end = at + width;
        if let Some((name, start, size)) = self
            .tables
            .iter()
            .find(|(_, s, len)| at < s.saturating_add(*len) && *s < end)
        {
            return Err(format!(
                "{what}: expected r_offset outside {name} ({start:#x}..{:#x}), which the loader reads after relocating, found {at:#x}",
                start.saturating_add(*size)
            ));
        }
        Ok(())
    }

    /// A relative relocation's result must be an address of the library.
    fn relative(&self, what: Place<'_>, value: u64) -> Result<(), String> {
        let (lo, hi) = self.bounds;
        if value < lo || value > hi {
            return Err(format!(
                "{what}: expected a relative value inside the library's addresses {lo:#x}..={hi:#x}, found {value:#x}"
            ));
        }
        Ok(())
    }

    fn remember(&mut self, at: u64, effect: Effect) {
        if self.watched.iter().any(|&(s, e)| s <= at && at < e) {
            self.out.by_target.insert(at, effect);
        }
    }

    fn count(&mut self, what: Place<'_>) -> Result<(), String> {
        self.count += 1;
        if self.count > MAX_RELOCATIONS {
            return Err(format!(
                "{what}: expected at most {MAX_RELOCATIONS} relocations, found more"
            ));
        }
        Ok(())
    }

    fn rela(&mut self, name: &str, at: u64, size: u64, relative_first: u64) -> Result<(), String> {
        let table = self.layout.file_bytes(self.bytes, at, size).map_err(|found| {
            format!("{name} ({at:#x}, {size:#x} bytes): expected the relocations inside a loaded segment's file bytes, {found}")
        })?;
        let entries = size / 24;
        if relative_first > entries {
            return Err(format!(
                "DT_RELACOUNT: expected at most the {entries} relocations of DT_RELA, found {relative_first}"
            ));
        }
        for i in 0..entries {
            let what = Place(name, i);
            self.count(what)?;
            let (Some(offset), Some(info), Some(addend)) = (
                u64_at(table, i * 24),
                u64_at(table, i * 24 + 8),
                u64_at(table, i * 24 + 16),
            ) else {
                return Err(format!("{what}: expected 24 bytes, found fewer"));
            };
            let (sym, kind) = (info >> 32, info as u32);
            // The loader reads this symbol's version entry for every
            // relocation it looks at, whatever the type.
            if sym >= self.symbols.count && (sym > 0 || self.symbols.count > 0) {
                return Err(format!(
                    "{what}: expected a symbol index below the {} symbols, found {sym}",
                    self.symbols.count
                ));
            }
            if i < relative_first && kind != OTHER_RELATIVE {
                return Err(format!(
                    "{what}: expected {}, as DT_RELACOUNT says of the first {relative_first}, found {}",
                    type_name(RELATIVE),
                    type_name(kind)
                ));
            }
            let width = accepted(kind).map_err(|found| {
                format!("{what}: expected a relocation a library may have, found {found}")
            })?;
            if width == 0 {
                continue;
            }
            self.target(what, offset, width)?;
            let effect = if kind == OTHER_RELATIVE || VALIDATED && kind == RELATIVE64 {
                self.relative(what, addend)?;
                Effect::Relative(addend)
            } else if VALIDATED && matches!(kind, DTPMOD64 | DTPOFF64 | TPOFF64 | TLSDESC) {
                self.tls(what, sym)?;
                Effect::Other(kind)
            } else if VALIDATED && matches!(kind, R_64 | GLOB_DAT | JUMP_SLOT) && sym > 0 {
                Effect::Symbol(sym, if kind == R_64 { addend } else { 0 })
            } else {
                Effect::Other(kind)
            };
            self.remember(offset, effect);
        }
        Ok(())
    }

    /// A thread-local relocation needs this library's thread-local block
    /// when it refers to it (no symbol, or a symbol defined here).
    fn tls(&self, what: Place<'_>, sym: u64) -> Result<(), String> {
        let local = sym == 0 || self.symbols.local_value(sym).is_some();
        if local && !self.special.has_tls {
            return Err(format!(
                "{what}: expected a PT_TLS segment for this thread-local relocation, found none"
            ));
        }
        if sym > 0 && self.symbols.local_value(sym).is_some() && !self.symbols.is_tls(sym) {
            return Err(format!(
                "{what}: expected a thread-local symbol, found {}",
                self.symbols.describe(sym)
            ));
        }
        Ok(())
    }

    /// Packed relative relocations: an even word is an address, an odd one
    /// a bitmap of the 63 words after the last address.
    fn relr(&mut self, at: u64, size: u64) -> Result<(), String> {
        let table = self.layout.file_bytes(self.bytes, at, size).map_err(|found| {
            format!("DT_RELR ({at:#x}, {size:#x} bytes): expected the packed relocations inside a loaded segment's file bytes, {found}")
        })?;
        let mut next: Option<u64> = None;
        for k in 0..size / 8 {
            let word = u64_at(table, k * 8).unwrap_or(0);
            let what = Place("DT_RELR", k);
            let targets: Vec<u64> = if word & 1 == 0 {
                vec![word]
            } else {
                let Some(base) = next else {
                    return Err(format!(
                        "{what}: expected an address before the first bitmap, found bitmap {word:#x}"
                    ));
                };
                (1..64u64)
                    .filter(|bit| word >> bit & 1 == 1)
                    .map(|bit| base + (bit - 1) * 8)
                    .collect()
            };
            for target in targets {
                self.count(what)?;
                self.target(what, target, 8)?;
                // The link-time address is the word already there.
                let value = self
                    .layout
                    .file_bytes(self.bytes, target, 8)
                    .ok()
                    .and_then(|w| u64_at(w, 0))
                    .unwrap_or(0);
                self.relative(what, value)?;
                self.remember(target, Effect::Relative(value));
            }
            next = Some(if word & 1 == 0 {
                word.saturating_add(8)
            } else {
                next.unwrap_or(0).saturating_add(63 * 8)
            });
        }
        Ok(())
    }
}

pub(super) fn check(
    bytes: &[u8],
    layout: &Layout,
    dynamic: &Dynamic,
    symbols: &Symbols,
    special: &Special,
    tables: &[(&'static str, u64, u64)],
) -> Result<Relocations, String> {
    let any = [DT_RELA, DT_JMPREL, DT_RELR]
        .iter()
        .any(|t| dynamic.has(*t));
    if any && !dynamic.has(DT_SYMTAB) && (dynamic.has(DT_RELA) || dynamic.has(DT_JMPREL)) {
        return Err(
            "the relocations: expected a symbol table (DT_SYMTAB) with them, found none".into(),
        );
    }
    let mut checker = Checker {
        bytes,
        layout,
        symbols,
        special,
        tables,
        bounds: layout.bounds(),
        watched: dynamic.arrays(),
        out: Relocations {
            by_target: HashMap::new(),
        },
        count: 0,
    };
    if let (Some(at), Some(size)) = (dynamic.get(DT_RELR), dynamic.get(DT_RELRSZ)) {
        checker.relr(at, size)?;
    }
    if let (Some(at), Some(size)) = (dynamic.get(DT_RELA), dynamic.get(DT_RELASZ)) {
        let relative = dynamic.get(DT_RELACOUNT).unwrap_or(0);
        checker.rela("DT_RELA", at, size, relative)?;
    }
    if let (Some(at), Some(size)) = (dynamic.get(DT_JMPREL), dynamic.get(DT_PLTRELSZ)) {
        checker.rela("DT_JMPREL", at, size, 0)?;
    }
    Ok(checker.out)
}
