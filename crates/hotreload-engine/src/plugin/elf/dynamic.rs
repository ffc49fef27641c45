//! The dynamic section, as `elf_get_dynamic_info` reads it: entries up to
//! `DT_NULL`, the last of each tag winning. The loader dereferences the
//! size entry that goes with a table without asking whether it is there
//! (`DT_RELASZ` for `DT_RELA`, `DT_PLTRELSZ` for `DT_JMPREL`, ...) and
//! asserts on a few values: each such pair and value is checked here;
//! the tables themselves in their own modules.

use std::collections::BTreeMap;

use super::relocs::{Effect, Relocations};
use super::segments::{Layout, Special};
use super::symbols::{Strings, Symbols};
use super::{Code, HR_FINI, HR_FINI_ARRAY, HR_INIT, HR_INIT_ARRAY, u64_at};

pub(super) const DT_NEEDED: u64 = 1;
pub(super) const DT_PLTRELSZ: u64 = 2;
pub(super) const DT_PLTGOT: u64 = 3;
pub(super) const DT_HASH: u64 = 4;
pub(super) const DT_STRTAB: u64 = 5;
pub(super) const DT_SYMTAB: u64 = 6;
pub(super) const DT_RELA: u64 = 7;
pub(super) const DT_RELASZ: u64 = 8;
pub(super) const DT_RELAENT: u64 = 9;
pub(super) const DT_STRSZ: u64 = 10;
pub(super) const DT_SYMENT: u64 = 11;
pub(super) const DT_INIT: u64 = 12;
pub(super) const DT_FINI: u64 = 13;
pub(super) const DT_SONAME: u64 = 14;
pub(super) const DT_RPATH: u64 = 15;
pub(super) const DT_REL: u64 = 17;
pub(super) const DT_RELSZ: u64 = 18;
pub(super) const DT_RELENT: u64 = 19;
pub(super) const DT_PLTREL: u64 = 20;
pub(super) const DT_TEXTREL: u64 = 22;
pub(super) const DT_JMPREL: u64 = 23;
pub(super) const DT_INIT_ARRAY: u64 = 25;
pub(super) const DT_FINI_ARRAY: u64 = 26;
pub(super) const DT_INIT_ARRAYSZ: u64 = 27;
pub(super) const DT_FINI_ARRAYSZ: u64 = 28;
pub(super) const DT_RUNPATH: u64 = 29;
pub(super) const DT_FLAGS: u64 = 30;
pub(super) const DT_RELRSZ: u64 = 35;
pub(super) const DT_RELR: u64 = 36;
pub(super) const DT_RELRENT: u64 = 37;
pub(super) const DT_GNU_HASH: u64 = 0x6fff_fef5;
pub(super) const DT_TLSDESC_PLT: u64 = 0x6fff_fef6;
pub(super) const DT_TLSDESC_GOT: u64 = 0x6fff_fef7;
pub(super) const DT_VERSYM: u64 = 0x6fff_fff0;
pub(super) const DT_RELACOUNT: u64 = 0x6fff_fff9;
pub(super) const DT_RELCOUNT: u64 = 0x6fff_fffa;
pub(super) const DT_FLAGS_1: u64 = 0x6fff_fffb;
pub(super) const DT_VERDEF: u64 = 0x6fff_fffc;
pub(super) const DT_VERDEFNUM: u64 = 0x6fff_fffd;
pub(super) const DT_VERNEED: u64 = 0x6fff_fffe;
pub(super) const DT_VERNEEDNUM: u64 = 0x6fff_ffff;
pub(super) const DT_AUXILIARY: u64 = 0x7fff_fffd;
pub(super) const DT_FILTER: u64 = 0x7fff_ffff;

const DF_TEXTREL: u64 = 0x4;
const DF_1_NODELETE: u64 = 0x8;
const DF_1_NOOPEN: u64 = 0x40;
const DF_1_PIE: u64 = 0x0800_0000;

/// More constructors than any plugin has.
const MAX_ARRAY: u64 = 4096;

/// Tags that may appear more than once.
const REPEATABLE: [u64; 3] = [DT_NEEDED, DT_AUXILIARY, DT_FILTER];

/// Tags the validator reads; the loader ignores the rest or leaves them to
/// executables (`DT_DEBUG`, `DT_PREINIT_ARRAY`, audit and prelink tags).
const KNOWN: [u64; 39] = [
    DT_NEEDED,
    DT_PLTRELSZ,
    DT_PLTGOT,
    DT_HASH,
    DT_STRTAB,
    DT_SYMTAB,
    DT_RELA,
    DT_RELASZ,
    DT_RELAENT,
    DT_STRSZ,
    DT_SYMENT,
    DT_INIT,
    DT_FINI,
    DT_SONAME,
    DT_RPATH,
    DT_REL,
    DT_RELSZ,
    DT_RELENT,
    DT_PLTREL,
    DT_TEXTREL,
    DT_JMPREL,
    DT_INIT_ARRAY,
    DT_FINI_ARRAY,
    DT_INIT_ARRAYSZ,
    DT_FINI_ARRAYSZ,
    DT_RUNPATH,
    DT_FLAGS,
    DT_RELRSZ,
    DT_RELR,
    DT_RELRENT,
    DT_GNU_HASH,
    DT_TLSDESC_PLT,
    DT_TLSDESC_GOT,
    DT_VERSYM,
    DT_RELACOUNT,
    DT_FLAGS_1,
    DT_VERDEF,
    DT_VERDEFNUM,
    DT_VERNEED,
];

pub(super) fn tag_name(tag: u64) -> String {
    let name = match tag {
        DT_NEEDED => "DT_NEEDED",
        DT_PLTRELSZ => "DT_PLTRELSZ",
        DT_PLTGOT => "DT_PLTGOT",
        DT_HASH => "DT_HASH",
        DT_STRTAB => "DT_STRTAB",
        DT_SYMTAB => "DT_SYMTAB",
        DT_RELA => "DT_RELA",
        DT_RELASZ => "DT_RELASZ",
        DT_RELAENT => "DT_RELAENT",
        DT_STRSZ => "DT_STRSZ",
        DT_SYMENT => "DT_SYMENT",
        DT_INIT => "DT_INIT",
        DT_FINI => "DT_FINI",
        DT_SONAME => "DT_SONAME",
        DT_RPATH => "DT_RPATH",
        DT_REL => "DT_REL",
        DT_RELSZ => "DT_RELSZ",
        DT_RELENT => "DT_RELENT",
        DT_PLTREL => "DT_PLTREL",
        DT_TEXTREL => "DT_TEXTREL",
        DT_JMPREL => "DT_JMPREL",
        DT_INIT_ARRAY => "DT_INIT_ARRAY",
        DT_FINI_ARRAY => "DT_FINI_ARRAY",
        DT_INIT_ARRAYSZ => "DT_INIT_ARRAYSZ",
        DT_FINI_ARRAYSZ => "DT_FINI_ARRAYSZ",
        DT_RUNPATH => "DT_RUNPATH",
        DT_FLAGS => "DT_FLAGS",
        DT_RELRSZ => "DT_RELRSZ",
        DT_RELR => "DT_RELR",
        DT_RELRENT => "DT_RELRENT",
        DT_GNU_HASH => "DT_GNU_HASH",
        DT_TLSDESC_PLT => "DT_TLSDESC_PLT",
        DT_TLSDESC_GOT => "DT_TLSDESC_GOT",
        DT_VERSYM => "DT_VERSYM",
        DT_RELACOUNT => "DT_RELACOUNT",
        DT_RELCOUNT => "DT_RELCOUNT",
        DT_FLAGS_1 => "DT_FLAGS_1",
        DT_VERDEF => "DT_VERDEF",
        DT_VERDEFNUM => "DT_VERDEFNUM",
        DT_VERNEED => "DT_VERNEED",
        DT_VERNEEDNUM => "DT_VERNEEDNUM",
        DT_AUXILIARY => "DT_AUXILIARY",
        DT_FILTER => "DT_FILTER",
        _ => return format!("tag {tag:#x}"),
    };
    name.to_owned()
}

/// The host's retagged constructor entries stand for the loader's own.
fn canonical(tag: u64) -> u64 {
    match tag {
        HR_INIT => DT_INIT,
        HR_FINI => DT_FINI,
        HR_INIT_ARRAY => DT_INIT_ARRAY,
        HR_FINI_ARRAY => DT_FINI_ARRAY,
        other => other,
    }
}

#[derive(Clone, Debug)]
pub(super) struct Entry {
    pub index: usize,
    /// The file offset of its `d_tag`.
    pub file_at: u64,
    pub tag: u64,
    pub value: u64,
}

pub(super) struct Dynamic {
    single: BTreeMap<u64, Entry>,
    repeated: Vec<Entry>,
    pub nodelete: bool,
}

pub(super) fn read(bytes: &[u8], layout: &Layout, special: &Special) -> Result<Dynamic, String> {
    let (vaddr, size) = special.dynamic;
    let table = layout.file_bytes(bytes, vaddr, size).map_err(|found| {
        format!("the dynamic section: expected it inside a loaded segment's file bytes, {found}")
    })?;
    let base = layout.file_offset(vaddr).unwrap_or(0);
    let count = size / 16;
    let mut single: BTreeMap<u64, Entry> = BTreeMap::new();
    let mut repeated = Vec::new();
    let mut ended = false;
    for i in 0..count {
        let (Some(tag), Some(value)) = (u64_at(table, i * 16), u64_at(table, i * 16 + 8)) else {
            break;
        };
        if tag == 0 {
            ended = true;
            break;
        }
        let entry = Entry {
            index: i as usize,
            file_at: base + i * 16,
            tag,
            value,
        };
        let key = canonical(tag);
        if REPEATABLE.contains(&key) {
            repeated.push(entry);
        } else if KNOWN.contains(&key) || key == DT_VERNEEDNUM || key == DT_RELCOUNT {
            if let Some(first) = single.get(&key) {
                return Err(format!(
                    "the dynamic section: expected one {}, found entries {} and {i}",
                    tag_name(key),
                    first.index
                ));
            }
            single.insert(key, entry);
        }
    }
    if !ended {
        return Err(format!(
            "the dynamic section: expected a DT_NULL entry to end its {count} entries, found none"
        ));
    }
    let dynamic = Dynamic {
        single,
        repeated,
        nodelete: false,
    };
    dynamic.check_pairs(layout)
}

impl Dynamic {
    pub fn get(&self, tag: u64) -> Option<u64> {
        self.single.get(&tag).map(|e| e.value)
    }

    pub fn has(&self, tag: u64) -> bool {
        self.single.contains_key(&tag)
    }

    fn entry_name(&self, tag: u64) -> String {
        match self.single.get(&tag) {
            Some(e) => format!("{} (dynamic entry {})", tag_name(tag), e.index),
            None => tag_name(tag),
        }
    }

    /// `tag` must come with `with`; `Err` names both.
    fn needs(&self, tag: u64, with: u64) -> Result<(), String> {
        if self.has(tag) && !self.has(with) {
            return Err(format!(
                "{}: expected a {} entry with it, found none",
                self.entry_name(tag),
                tag_name(with)
            ));
        }
        Ok(())
    }

    fn equals(&self, tag: u64, expected: u64, why: &str) -> Result<(), String> {
        match self.get(tag) {
            Some(found) if found != expected => Err(format!(
                "{}: expected {expected}{why}, found {found}",
                self.entry_name(tag)
            )),
            _ => Ok(()),
        }
    }

    fn check_pairs(mut self, layout: &Layout) -> Result<Dynamic, String> {
        for tag in [DT_REL, DT_RELSZ, DT_RELENT, DT_RELCOUNT] {
            if self.has(tag) {
                return Err(format!(
                    "{}: expected RELA relocations only (x86-64 has no REL), found this entry",
                    self.entry_name(tag)
                ));
            }
        }
        let flags = self.get(DT_FLAGS).unwrap_or(0);
        if self.has(DT_TEXTREL) || flags & DF_TEXTREL != 0 {
            return Err(format!(
                "{}: expected no text relocations, found some (build every object with -fPIC)",
                if self.has(DT_TEXTREL) {
                    self.entry_name(DT_TEXTREL)
                } else {
                    self.entry_name(DT_FLAGS)
                }
            ));
        }
        let flags_1 = self.get(DT_FLAGS_1).unwrap_or(0);
        if flags_1 & DF_1_PIE != 0 {
            return Err(format!(
                "{}: expected a shared library, found a position-independent executable (DF_1_PIE; was it linked with -shared?)",
                self.entry_name(DT_FLAGS_1)
            ));
        }
        if flags_1 & DF_1_NOOPEN != 0 {
            return Err(format!(
                "{}: expected a library that may be opened with dlopen, found DF_1_NOOPEN",
                self.entry_name(DT_FLAGS_1)
            ));
        }
        self.nodelete = flags_1 & DF_1_NODELETE != 0;
        // The loader reads the size entry of every table it finds, and
        // asserts on the entry sizes and DT_PLTREL.
        self.needs(DT_STRTAB, DT_STRSZ)?;
        self.needs(DT_SYMTAB, DT_STRTAB)?;
        self.needs(DT_RELA, DT_RELASZ)?;
        self.needs(DT_RELA, DT_RELAENT)?;
        self.equals(DT_RELAENT, 24, " (the size of an Elf64_Rela)")?;
        self.equals(DT_SYMENT, 24, " (the size of an Elf64_Sym)")?;
        self.equals(DT_PLTREL, DT_RELA, " (DT_RELA)")?;
        self.needs(DT_PLTREL, DT_JMPREL)?;
        self.needs(DT_JMPREL, DT_PLTREL)?;
        self.needs(DT_JMPREL, DT_PLTRELSZ)?;
        self.needs(DT_RELR, DT_RELRSZ)?;
        self.needs(DT_RELR, DT_RELRENT)?;
        self.equals(DT_RELRENT, 8, " (the size of an Elf64_Relr)")?;
        self.needs(DT_INIT_ARRAY, DT_INIT_ARRAYSZ)?;
        self.needs(DT_FINI_ARRAY, DT_FINI_ARRAYSZ)?;
        for tag in [DT_HASH, DT_GNU_HASH, DT_VERSYM, DT_VERNEED, DT_VERDEF] {
            self.needs(tag, DT_SYMTAB)?;
        }
        // With version records the loader takes the symbols' versions from
        // DT_VERSYM without asking whether it is there.
        self.needs(DT_VERNEED, DT_VERSYM)?;
        self.needs(DT_VERDEF, DT_VERSYM)?;
        if self.has(DT_SYMTAB) && !self.has(DT_GNU_HASH) && !self.has(DT_HASH) {
            return Err(format!(
                "{}: expected a hash table with it (DT_GNU_HASH or DT_HASH), found neither",
                self.entry_name(DT_SYMTAB)
            ));
        }
        for (tag, unit) in [
            (DT_RELASZ, 24),
            (DT_PLTRELSZ, 24),
            (DT_RELRSZ, 8),
            (DT_INIT_ARRAYSZ, 8),
            (DT_FINI_ARRAYSZ, 8),
        ] {
            if let Some(size) = self.get(tag)
                && size % unit != 0
            {
                return Err(format!(
                    "{}: expected a multiple of {unit} bytes, found {size:#x}",
                    self.entry_name(tag)
                ));
            }
        }
        for tag in [DT_INIT_ARRAYSZ, DT_FINI_ARRAYSZ] {
            if let Some(size) = self.get(tag)
                && size / 8 > MAX_ARRAY
            {
                return Err(format!(
                    "{}: expected at most {MAX_ARRAY} functions, found {size:#x} bytes",
                    self.entry_name(tag)
                ));
            }
        }
        // Written by lazy binding and lazy TLS descriptors; RTLD_NOW does
        // neither, but the pointers must still mean something.
        for (tag, len) in [(DT_PLTGOT, 24), (DT_TLSDESC_GOT, 8)] {
            if let Some(at) = self.get(tag)
                && !layout.in_memory(at, len).is_some_and(|s| s.writable())
            {
                return Err(format!(
                    "{}: expected an address in writable data, found {}",
                    self.entry_name(tag),
                    layout.describe(at)
                ));
            }
        }
        if let Some(at) = self.get(DT_TLSDESC_PLT)
            && !layout.is_code(at, 1)
        {
            return Err(format!(
                "{}: expected an address of code, found {}",
                self.entry_name(DT_TLSDESC_PLT),
                layout.describe(at)
            ));
        }
        self.check_relocation_ranges()?;
        Ok(self)
    }

    /// The loader merges `DT_RELA` and `DT_JMPREL` into one walk when they
    /// touch, and subtracts the PLT part when it ends where the rest ends:
    /// any other overlap makes it walk a range of the wrong size.
    fn check_relocation_ranges(&self) -> Result<(), String> {
        let (Some(rela), Some(jmprel)) = (self.get(DT_RELA), self.get(DT_JMPREL)) else {
            return Ok(());
        };
        let relasz = self.get(DT_RELASZ).unwrap_or(0);
        let pltrelsz = self.get(DT_PLTRELSZ).unwrap_or(0);
        let (Some(rela_end), Some(jmprel_end)) =
            (rela.checked_add(relasz), jmprel.checked_add(pltrelsz))
        else {
            return Err(format!(
                "DT_RELA/DT_JMPREL: expected addresses below 2^64, found {rela:#x} + {relasz:#x} and {jmprel:#x} + {pltrelsz:#x}"
            ));
        };
        let disjoint = rela_end <= jmprel || jmprel_end <= rela;
        let tail = jmprel_end == rela_end && jmprel >= rela;
        if !disjoint && !tail {
            return Err(format!(
                "DT_JMPREL: expected the PLT relocations {jmprel:#x}..{jmprel_end:#x} apart from DT_RELA's {rela:#x}..{rela_end:#x}, or at their end, found them overlapping"
            ));
        }
        Ok(())
    }

    /// The constructor and destructor arrays, `[start, end)`.
    pub fn arrays(&self) -> Vec<(u64, u64)> {
        [
            (DT_INIT_ARRAY, DT_INIT_ARRAYSZ),
            (DT_FINI_ARRAY, DT_FINI_ARRAYSZ),
        ]
        .iter()
        .filter_map(|&(at, size)| {
            let start = self.get(at)?;
            Some((start, start.saturating_add(self.get(size)?)))
        })
        .collect()
    }

    /// The string table's address and size.
    pub fn strtab(&self) -> Option<(u64, u64)> {
        Some((self.get(DT_STRTAB)?, self.get(DT_STRSZ)?))
    }

    /// Entries naming strings (`DT_NEEDED`, `DT_SONAME`, search paths,
    /// filters): each a NUL-terminated string inside the table.
    pub fn check_strings(&self, strings: &Strings) -> Result<(), String> {
        let named = self.repeated.iter().chain(
            [DT_SONAME, DT_RPATH, DT_RUNPATH]
                .iter()
                .filter_map(|t| self.single.get(t)),
        );
        for entry in named {
            if strings.get(entry.value).is_none() {
                return Err(format!(
                    "{} (dynamic entry {}): expected an offset of a NUL-terminated string inside the string table ({}), found {:#x}",
                    tag_name(entry.tag),
                    entry.index,
                    strings.describe(),
                    entry.value
                ));
            }
        }
        Ok(())
    }

    /// The names of the libraries it needs (`DT_NEEDED`), and its own
    /// (`DT_SONAME`): what version needs may refer to.
    pub fn library_names<'a>(&self, strings: &Strings<'a>) -> Vec<&'a [u8]> {
        self.repeated
            .iter()
            .filter(|e| e.tag == DT_NEEDED)
            .chain(self.single.get(&DT_SONAME))
            .filter_map(|e| strings.get(e.value))
            .collect()
    }

    /// The tables the loader reads after it starts relocating (a relocation
    /// must not write into them): name, address, size.
    pub fn tables(&self, symbols: &Symbols) -> Vec<(&'static str, u64, u64)> {
        let mut out = Vec::new();
        for (name, at, size) in [
            ("the string table", DT_STRTAB, self.get(DT_STRSZ)),
            ("the relocations", DT_RELA, self.get(DT_RELASZ)),
            ("the PLT relocations", DT_JMPREL, self.get(DT_PLTRELSZ)),
            ("the packed relocations", DT_RELR, self.get(DT_RELRSZ)),
            ("the symbol table", DT_SYMTAB, Some(symbols.count * 24)),
            ("the symbol versions", DT_VERSYM, Some(symbols.count * 2)),
        ] {
            if let (Some(at), Some(size)) = (self.get(at), size) {
                out.push((name, at, size));
            }
        }
        out.extend(symbols.hash_tables.iter().copied());
        out
    }

    /// The constructors and destructors, in the loader's order: `DT_INIT`,
    /// then `DT_INIT_ARRAY` in order; `DT_FINI_ARRAY` backwards, then
    /// `DT_FINI`. Each must land in this library's code.
    pub fn code(
        &self,
        layout: &Layout,
        relocations: &Relocations,
        symbols: &Symbols,
    ) -> Result<(Vec<Code>, Vec<Code>), String> {
        let function = |tag: u64| -> Result<Option<Code>, String> {
            match self.get(tag) {
                None => Ok(None),
                Some(at) if layout.is_code(at, 1) => Ok(Some(Code::Function(at))),
                Some(at) => Err(format!(
                    "{}: expected the address of a function in this library's code, found {}",
                    self.entry_name(tag),
                    layout.describe(at)
                )),
            }
        };
        let array = |tag: u64, size_tag: u64, name: &'static str| -> Result<Vec<Code>, String> {
            let (Some(start), Some(size)) = (self.get(tag), self.get(size_tag)) else {
                return Ok(Vec::new());
            };
            if !start.is_multiple_of(8) {
                return Err(format!(
                    "{}: expected an array aligned to 8 bytes, found {start:#x}",
                    self.entry_name(tag)
                ));
            }
            if size > 0 && layout.in_memory(start, size).is_none() {
                return Err(format!(
                    "{}: expected {size:#x} bytes of function pointers inside a loaded segment, found {}",
                    self.entry_name(tag),
                    layout.describe(start)
                ));
            }
            (0..size / 8)
                .map(|i| {
                    let at = start + i * 8;
                    let target = match relocations.effect(at) {
                        Some(Effect::Relative(addend)) => Ok(addend),
                        Some(Effect::Symbol(index, addend)) => symbols
                            .local_value(index)
                            .map(|v| v.wrapping_add(addend))
                            .ok_or_else(|| format!("a reference to symbol {index} of another library")),
                        Some(Effect::Other(kind)) => Err(format!("relocation type {kind}")),
                        None => Err("no relocation (an unrelocated link-time address)".to_owned()),
                    };
                    match target {
                        Ok(target) if layout.is_code(target, 1) => Ok(Code::Slot {
                            array: name,
                            index: i as usize,
                            at,
                        }),
                        Ok(target) => Err(format!(
                            "{name}[{i}]: expected the address of a function in this library's code, found {}",
                            layout.describe(target)
                        )),
                        Err(found) => Err(format!(
                            "{name}[{i}]: expected a relative relocation to a function of this library, found {found}"
                        )),
                    }
                })
                .collect()
        };
        let mut init: Vec<Code> = function(DT_INIT)?.into_iter().collect();
        init.extend(array(DT_INIT_ARRAY, DT_INIT_ARRAYSZ, "DT_INIT_ARRAY")?);
        let mut fini = array(DT_FINI_ARRAY, DT_FINI_ARRAYSZ, "DT_FINI_ARRAY")?;
        fini.reverse();
        fini.extend(function(DT_FINI)?);
        Ok((init, fini))
    }

    /// Where to retag the loader's constructor entries (see [`HR_INIT`]).
    pub fn retag(&self) -> Vec<(usize, u64)> {
        [
            (DT_INIT, HR_INIT),
            (DT_FINI, HR_FINI),
            (DT_INIT_ARRAY, HR_INIT_ARRAY),
            (DT_FINI_ARRAY, HR_FINI_ARRAY),
        ]
        .iter()
        .filter_map(|&(tag, to)| {
            let entry = self.single.get(&tag)?;
            // Already retagged in a copy: nothing to do.
            (entry.tag == tag)
                .then(|| usize::try_from(entry.file_at).ok())
                .flatten()
                .map(|at| (at, to))
        })
        .collect()
    }
}
