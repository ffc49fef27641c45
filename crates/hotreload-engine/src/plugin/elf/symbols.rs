//! The string table, the symbol table and the hash tables over it, walked
//! the way the loader's lookups walk them (`_dl_setup_hash`, `do_lookup_x`,
//! `check_match`), and the host's entry points found from them.
//!
//! The loader has no symbol count: it takes the hash table's word for
//! which indices exist. So the count comes from the hash tables (the
//! highest index a GNU chain reaches, or `nchain`), both must agree, every
//! chain must end inside its table, and every symbol a chain reaches must
//! hash to that chain, so that a name the loader looks up is found where
//! the host finds it.

use hotreload_abi::GET_API_NAME;

use super::dynamic::{DT_GNU_HASH, DT_HASH, DT_STRTAB, DT_SYMTAB, Dynamic};
use super::segments::{Layout, Special};
use super::versions::Versions;
use super::{gnu_hash, show, u16_at, u32_at, u64_at};

/// More symbols than any library has; bounds every walk.
const MAX_SYMBOLS: u64 = 1 << 20;
const STB_GLOBAL: u8 = 1;
const STB_WEAK: u8 = 2;
const STB_GNU_UNIQUE: u8 = 10;
const STT_OBJECT: u8 = 1;
const STT_FUNC: u8 = 2;
const STT_NOTYPE: u8 = 0;
const STT_TLS: u8 = 6;
const STT_GNU_IFUNC: u8 = 10;
const SHN_UNDEF: u16 = 0;
const SHN_ABS: u16 = 0xfff1;

pub(super) const GET_API_EXT_NAME: &str = "logic_get_api_ext";

/// The string table (`DT_STRTAB`, `DT_STRSZ`).
pub(super) struct Strings<'a> {
    table: &'a [u8],
}

impl<'a> Strings<'a> {
    pub fn new(bytes: &'a [u8], layout: &Layout, dynamic: &Dynamic) -> Result<Strings<'a>, String> {
        let Some((at, size)) = dynamic.strtab() else {
            return Ok(Strings { table: &[] });
        };
        let table = layout.file_bytes(bytes, at, size).map_err(|found| {
            format!(
                "the string table (DT_STRTAB {at:#x}, DT_STRSZ {size:#x}): expected it inside a loaded segment's file bytes, {found}"
            )
        })?;
        Ok(Strings { table })
    }

    /// The string at `offset`: it must start inside the table and end with
    /// a NUL inside it (the loader reads it up to the NUL).
    pub fn get(&self, offset: u64) -> Option<&'a [u8]> {
        let start = usize::try_from(offset).ok()?;
        super::c_string(self.table.get(start..)?)
    }

    pub fn describe(&self) -> String {
        format!("DT_STRSZ {:#x} bytes", self.table.len())
    }
}

#[derive(Clone, Debug)]
struct Sym {
    info: u8,
    other: u8,
    shndx: u16,
    value: u64,
}

impl Sym {
    fn bind(&self) -> u8 {
        self.info >> 4
    }
    fn kind(&self) -> u8 {
        self.info & 0xf
    }
    fn defined(&self) -> bool {
        self.shndx != SHN_UNDEF
    }
}

pub(super) struct Symbols<'a> {
    /// How many symbols the loader can reach: the table's length.
    pub count: u64,
    syms: Vec<Sym>,
    names: Vec<&'a [u8]>,
    /// Which symbols the loader's lookups can find (they are in the hash
    /// table it uses: GNU when there is one, else SysV).
    findable: Vec<bool>,
    /// Name, address and size of each hash table.
    pub hash_tables: Vec<(&'static str, u64, u64)>,
    /// A `STB_GNU_UNIQUE` definition makes the loader pin the library.
    pub has_unique: bool,
}

/// The host's entry points, as linked.
pub(super) struct EntryPoints {
    pub get_api: Option<u64>,
    pub get_api_ext: Option<u64>,
    /// `hotreload_plugin`, the record of a library built with the
    /// `hotreload-plugin` crate.
    pub plugin_record: Option<u64>,
    pub refused: Option<String>,
    /// The entry point a host named for its own function table
    /// (`crate::embed`), when asked for one and exported.
    pub named: Option<u64>,
    /// Why the named entry point does not count as exported.
    pub named_refused: Option<String>,
}

/// A GNU hash table's header and where its parts are.
struct GnuHash {
    at: u64,
    nbuckets: u64,
    symoffset: u64,
    bloom_words: u64,
    shift: u32,
    /// Which bucket reached each symbol, by index.
    reached: Vec<(u64, u64)>,
    count: u64,
}

fn word32(bytes: &[u8], layout: &Layout, vaddr: u64) -> Option<u32> {
    u32_at(layout.file_bytes(bytes, vaddr, 4).ok()?, 0)
}

fn gnu_table(bytes: &[u8], layout: &Layout, at: u64) -> Result<GnuHash, String> {
    let what = format!("DT_GNU_HASH at {at:#x}");
    let header = layout.file_bytes(bytes, at, 16).map_err(|found| {
        format!("{what}: expected its 16-byte header inside a loaded segment's file bytes, {found}")
    })?;
    let (Some(nbuckets), Some(symoffset), Some(bloom_words), Some(shift)) = (
        u32_at(header, 0),
        u32_at(header, 4),
        u32_at(header, 8),
        u32_at(header, 12),
    ) else {
        return Err(format!("{what}: expected a 16-byte header, found less"));
    };
    let (nbuckets, symoffset, bloom_words) = (
        u64::from(nbuckets),
        u64::from(symoffset),
        u64::from(bloom_words),
    );
    if nbuckets == 0 || nbuckets > MAX_SYMBOLS {
        return Err(format!(
            "{what}: expected between 1 and {MAX_SYMBOLS} buckets, found {nbuckets}"
        ));
    }
    if !bloom_words.is_power_of_two() || bloom_words > MAX_SYMBOLS {
        // The loader masks with (bloom size - 1): anything else reads
        // outside the filter.
        return Err(format!(
            "{what}: expected a bloom filter size that is a power of two up to {MAX_SYMBOLS}, found {bloom_words}"
        ));
    }
    if shift >= 32 {
        return Err(format!(
            "{what}: expected a bloom shift below 32, found {shift}"
        ));
    }
    if symoffset > MAX_SYMBOLS {
        return Err(format!(
            "{what}: expected a first hashed symbol (symoffset) below {MAX_SYMBOLS}, found {symoffset}"
        ));
    }
    let buckets_at = at + 16 + bloom_words * 8;
    layout
        .file_bytes(bytes, at + 16, bloom_words * 8 + nbuckets * 4)
        .map_err(|found| {
            format!(
                "{what}: expected its bloom filter ({bloom_words} words) and {nbuckets} buckets inside a loaded segment's file bytes, {found}"
            )
        })?;
    let chains_at = buckets_at + nbuckets * 4;
    // The chains run to the last symbol: at most to the segment's end.
    let chains = layout.file_rest(bytes, chains_at).unwrap_or(&[]);
    let mut reached: Vec<(u64, u64)> = Vec::new();
    let mut count = symoffset;
    let mut seen_by: std::collections::HashMap<u64, u64> = std::collections::HashMap::new();
    for b in 0..nbuckets {
        let first = u64::from(word32(bytes, layout, buckets_at + b * 4).unwrap_or(0));
        if first == 0 {
            continue;
        }
        if first < symoffset {
            return Err(format!(
                "{what} bucket {b}: expected 0 or a symbol index of at least symoffset {symoffset}, found {first}"
            ));
        }
        let mut i = first;
        loop {
            if i - symoffset >= MAX_SYMBOLS {
                return Err(format!(
                    "{what} bucket {b}: expected its chain to end within {MAX_SYMBOLS} symbols, found no end"
                ));
            }
            let Some(word) = u32_at(chains, (i - symoffset) * 4) else {
                return Err(format!(
                    "{what} bucket {b}: expected its chain (from symbol {first}) to end inside the table, found it running to symbol {i}, past the end of the segment's file bytes"
                ));
            };
            if let Some(other) = seen_by.insert(i, b) {
                return Err(format!(
                    "{what}: expected each symbol in one chain, found symbol {i} in the chains of buckets {other} and {b}"
                ));
            }
            reached.push((i, b));
            if word & 1 == 1 {
                break;
            }
            i += 1;
        }
        count = count.max(i + 1);
    }
    Ok(GnuHash {
        at,
        nbuckets,
        symoffset,
        bloom_words,
        shift,
        reached,
        count,
    })
}

/// A SysV hash table's symbol count, which bucket reached each symbol, and
/// its size in bytes.
struct SysvHash {
    nchain: u64,
    reached: Vec<(u64, u64)>,
    size: u64,
}

/// A SysV hash table: `nchain` is the symbol count; every bucket and chain
/// link is an index below it, and no chain loops.
fn sysv_table(bytes: &[u8], layout: &Layout, at: u64) -> Result<SysvHash, String> {
    let what = format!("DT_HASH at {at:#x}");
    let header = layout.file_bytes(bytes, at, 8).map_err(|found| {
        format!("{what}: expected its 8-byte header inside a loaded segment's file bytes, {found}")
    })?;
    let (Some(nbucket), Some(nchain)) = (u32_at(header, 0), u32_at(header, 4)) else {
        return Err(format!("{what}: expected an 8-byte header, found less"));
    };
    let (nbucket, nchain) = (u64::from(nbucket), u64::from(nchain));
    if nbucket == 0 || nbucket > MAX_SYMBOLS || nchain > MAX_SYMBOLS {
        return Err(format!(
            "{what}: expected between 1 and {MAX_SYMBOLS} buckets and at most {MAX_SYMBOLS} chain entries, found {nbucket} and {nchain}"
        ));
    }
    let words = layout
        .file_bytes(bytes, at + 8, (nbucket + nchain) * 4)
        .map_err(|found| {
            format!(
                "{what}: expected its {nbucket} buckets and {nchain} chain entries inside a loaded segment's file bytes, {found}"
            )
        })?;
    let word = |i: u64| u64::from(u32_at(words, i * 4).unwrap_or(0));
    let mut visited = vec![false; nchain as usize];
    let mut reached = Vec::new();
    for b in 0..nbucket {
        let mut i = word(b);
        let mut from = format!("bucket {b}");
        while i != 0 {
            let Some(seen) = visited.get_mut(i as usize) else {
                return Err(format!(
                    "{what} {from}: expected a symbol index below nchain {nchain}, found {i}"
                ));
            };
            if *seen {
                return Err(format!(
                    "{what} {from}: expected the chain to end, found it reaching symbol {i} a second time (a loop, or two chains joined)"
                ));
            }
            *seen = true;
            reached.push((i, b));
            from = format!("chain entry {i}");
            i = word(nbucket + i);
        }
    }
    Ok(SysvHash {
        nchain,
        reached,
        size: 8 + (nbucket + nchain) * 4,
    })
}

impl<'a> Symbols<'a> {
    pub fn read(
        bytes: &'a [u8],
        layout: &Layout,
        dynamic: &Dynamic,
        strings: &Strings<'a>,
        special: &Special,
    ) -> Result<Symbols<'a>, String> {
        let mut symbols = Symbols {
            count: 0,
            syms: Vec::new(),
            names: Vec::new(),
            findable: Vec::new(),
            hash_tables: Vec::new(),
            has_unique: false,
        };
        let Some(symtab) = dynamic.get(DT_SYMTAB) else {
            return Ok(symbols);
        };
        let gnu = dynamic
            .get(DT_GNU_HASH)
            .map(|at| gnu_table(bytes, layout, at))
            .transpose()?;
        let sysv = dynamic
            .get(DT_HASH)
            .map(|at| sysv_table(bytes, layout, at).map(|t| (at, t)))
            .transpose()?;
        let count = match (&gnu, &sysv) {
            (Some(g), Some((_, s))) if g.count != s.nchain => {
                return Err(format!(
                    "expected DT_GNU_HASH and DT_HASH to count the same symbols, found {} and {}",
                    g.count, s.nchain
                ));
            }
            (Some(g), None) if g.reached.is_empty() => {
                // No symbol is hashed (a library that exports nothing): the
                // GNU table then says nothing of the unhashed ones below
                // `symoffset` (ld writes 1 there), which relocations still
                // name. The table runs to the string table, which the
                // linker puts right after it.
                let to_strings = dynamic
                    .get(DT_STRTAB)
                    .filter(|&strtab| strtab > symtab)
                    .map_or(0, |strtab| ((strtab - symtab) / 24).min(MAX_SYMBOLS));
                g.count.max(to_strings)
            }
            (Some(g), _) => g.count,
            (None, Some((_, s))) => s.nchain,
            (None, None) => 0,
        };
        let table = layout.file_bytes(bytes, symtab, count * 24).map_err(|found| {
            format!(
                "the symbol table (DT_SYMTAB {symtab:#x}, {count} symbols by its hash table): expected it inside a loaded segment's file bytes, {found}"
            )
        })?;
        for i in 0..count {
            let at = i * 24;
            let (Some(name), Some(info), Some(other), Some(shndx), Some(value)) = (
                u32_at(table, at),
                table.get(at as usize + 4).copied(),
                table.get(at as usize + 5).copied(),
                u16_at(table, at + 6),
                u64_at(table, at + 8),
            ) else {
                return Err(format!("symbol {i}: expected 24 bytes, found fewer"));
            };
            let sym = Sym {
                info,
                other,
                shndx,
                value,
            };
            let Some(text) = strings.get(u64::from(name)) else {
                return Err(format!(
                    "symbol {i}: expected its name (st_name) to be a NUL-terminated string inside the string table ({}), found offset {name:#x}",
                    strings.describe()
                ));
            };
            if !matches!(sym.bind(), 0 | STB_GLOBAL | STB_WEAK | STB_GNU_UNIQUE)
                || !matches!(sym.kind(), 0..=6 | STT_GNU_IFUNC)
            {
                return Err(format!(
                    "symbol {i} ({}): expected a known binding and type, found st_info {info:#04x}",
                    show(text)
                ));
            }
            if sym.defined() && sym.kind() == STT_GNU_IFUNC {
                return Err(format!(
                    "symbol {i} ({}): expected no indirect functions (STT_GNU_IFUNC), found one: its resolver would run inside the loader, where a crash cannot be caught",
                    show(text)
                ));
            }
            if sym.defined() && sym.kind() == STT_TLS && !special.has_tls {
                return Err(format!(
                    "symbol {i} ({}): expected a PT_TLS segment for this thread-local symbol, found none",
                    show(text)
                ));
            }
            symbols.has_unique |= sym.defined() && sym.bind() == STB_GNU_UNIQUE;
            symbols.syms.push(sym);
            symbols.names.push(text);
        }
        symbols.count = count;
        symbols.findable = vec![false; count as usize];
        if let Some(g) = &gnu {
            symbols.check_gnu(bytes, layout, g)?;
        }
        if let Some((at, table)) = &sysv {
            symbols.check_sysv(bytes, layout, *at, &table.reached, gnu.is_none())?;
            symbols
                .hash_tables
                .push(("the SysV hash table", *at, table.size));
        }
        Ok(symbols)
    }

    /// Every symbol a GNU chain reaches hashes to that bucket, with the
    /// chain's copy of its hash and both of its bloom bits.
    fn check_gnu(&mut self, bytes: &[u8], layout: &Layout, g: &GnuHash) -> Result<(), String> {
        let chains_at = g.at + 16 + g.bloom_words * 8 + g.nbuckets * 4;
        let chains = layout.file_rest(bytes, chains_at).unwrap_or(&[]);
        let bloom_words = layout.file_rest(bytes, g.at + 16).unwrap_or(&[]);
        for &(i, b) in &g.reached {
            let name = self.names.get(i as usize).copied().unwrap_or_default();
            let h = gnu_hash(name);
            let stored = u32_at(chains, (i - g.symoffset) * 4).unwrap_or(0);
            let bloom = u64_at(bloom_words, (u64::from(h / 64) % g.bloom_words) * 8).unwrap_or(0);
            let bits = (1u64 << (h % 64)) | (1u64 << ((h >> g.shift) % 64));
            let problem = if u64::from(h) % g.nbuckets != b {
                Some(format!(
                    "expected its name to hash to bucket {b}, found bucket {}",
                    u64::from(h) % g.nbuckets
                ))
            } else if stored | 1 != h | 1 {
                Some(format!(
                    "expected the chain's hash {:#010x}, found {stored:#010x}",
                    h | 1
                ))
            } else if bloom & bits != bits {
                Some(format!(
                    "expected bloom bits {bits:#x} set, found word {bloom:#x}"
                ))
            } else {
                None
            };
            if let Some(problem) = problem {
                return Err(format!(
                    "DT_GNU_HASH, symbol {i} ({}): {problem}",
                    show(name)
                ));
            }
            if let Some(f) = self.findable.get_mut(i as usize) {
                *f = true;
            }
        }
        let size = 16 + g.bloom_words * 8 + g.nbuckets * 4 + (g.count - g.symoffset) * 4;
        self.hash_tables.push(("the GNU hash table", g.at, size));
        Ok(())
    }

    fn check_sysv(
        &mut self,
        bytes: &[u8],
        layout: &Layout,
        at: u64,
        reached: &[(u64, u64)],
        used: bool,
    ) -> Result<(), String> {
        let nbucket = u64::from(word32(bytes, layout, at).unwrap_or(1)).max(1);
        for &(i, b) in reached {
            let name = self.names.get(i as usize).copied().unwrap_or_default();
            let bucket = u64::from(super::elf_hash(name)) % nbucket;
            if bucket != b {
                return Err(format!(
                    "DT_HASH, symbol {i} ({}): expected its name to hash to bucket {b}, found bucket {bucket}",
                    show(name)
                ));
            }
            if used && let Some(f) = self.findable.get_mut(i as usize) {
                *f = true;
            }
        }
        Ok(())
    }

    /// The address (as linked) of symbol `index` when this library defines
    /// it.
    pub fn local_value(&self, index: u64) -> Option<u64> {
        let sym = self.syms.get(usize::try_from(index).ok()?)?;
        (sym.defined() && sym.shndx != SHN_ABS).then_some(sym.value)
    }

    /// `symbol 5 (printf)`.
    pub fn describe(&self, index: u64) -> String {
        match self.names.get(index as usize) {
            Some(name) if !name.is_empty() => format!("symbol {index} ({})", show(name)),
            _ => format!("symbol {index}"),
        }
    }

    pub fn is_tls(&self, index: u64) -> bool {
        self.syms
            .get(index as usize)
            .is_some_and(|s| s.kind() == STT_TLS)
    }

    /// `logic_get_api` and `logic_get_api_ext` as `dlsym` would find them:
    /// defined, global or weak, visible, in the hash table, not a hidden
    /// version; and each must be a function in this library's code. With
    /// `named`, the same for a host's own entry point.
    pub fn entry_points(
        &self,
        layout: &Layout,
        versions: &Versions,
        named: Option<&str>,
    ) -> Result<EntryPoints, String> {
        let (named_at, named_refused) = match named {
            Some(name) => match self.find(name, layout, versions)? {
                Found::Exported(at) => (Some(at), None),
                Found::Refused(why) => (None, Some(why)),
                Found::Absent => (None, None),
            },
            None => (None, None),
        };
        let (get_api, refused) = match self.find(GET_API_NAME, layout, versions)? {
            Found::Exported(at) => (Some(at), None),
            Found::Refused(why) => (None, Some(why)),
            Found::Absent => (None, None),
        };
        let get_api_ext = match self.find(GET_API_EXT_NAME, layout, versions)? {
            Found::Exported(at) => Some(at),
            Found::Refused(why) => {
                return Err(format!("{GET_API_EXT_NAME}: expected a function, {why}"));
            }
            Found::Absent => None,
        };
        Ok(EntryPoints {
            get_api,
            get_api_ext,
            plugin_record: self.plugin_record(layout, versions)?,
            refused,
            named: named_at,
            named_refused,
        })
    }

    /// `hotreload_plugin`, when exported: a data object whose first 8 bytes
    /// (its size and ABI version) lie in writable memory of this library.
    fn plugin_record(&self, layout: &Layout, versions: &Versions) -> Result<Option<u64>, String> {
        let name = hotreload_abi::PLUGIN_RECORD_NAME;
        let Some((i, sym)) = self.exported(name, versions)? else {
            return Ok(None);
        };
        if !matches!(sym.kind(), STT_OBJECT | STT_NOTYPE) {
            return Err(format!(
                "{name} (symbol {i}): expected a data object, found st_info {:#04x}",
                sym.info
            ));
        }
        match layout.in_memory(sym.value, 8) {
            Some(segment) if segment.writable() => Ok(Some(sym.value)),
            _ => Err(format!(
                "{name} (symbol {i}): expected an address in this library's writable data, found {}",
                layout.describe(sym.value)
            )),
        }
    }

    /// The one exported definition of `wanted`, as `dlsym` would see it.
    fn exported(&self, wanted: &str, versions: &Versions) -> Result<Option<(usize, &Sym)>, String> {
        let exported: Vec<usize> = (0..self.syms.len())
            .filter(|&i| {
                self.names.get(i).is_some_and(|n| *n == wanted.as_bytes())
                    && self.syms.get(i).is_some_and(|s| {
                        s.defined()
                            && matches!(s.bind(), STB_GLOBAL | STB_WEAK)
                            && matches!(s.other & 3, 0 | 3)
                    })
                    && !versions.hidden(i as u64)
            })
            .collect();
        match exported.as_slice() {
            [] => Ok(None),
            [i] => Ok(self.syms.get(*i).map(|sym| (*i, sym))),
            [a, b, ..] => Err(format!(
                "expected one exported {wanted}, found symbols {a} and {b}"
            )),
        }
    }

    fn find(&self, wanted: &str, layout: &Layout, versions: &Versions) -> Result<Found, String> {
        let Some((i, sym)) = self.exported(wanted, versions)? else {
            return Ok(Found::Absent);
        };
        if !matches!(sym.kind(), STT_FUNC | STT_NOTYPE) {
            return Ok(Found::Refused(format!(
                "found symbol {i} of that name, but not a function (st_info {:#04x})",
                sym.info
            )));
        }
        if !self.findable.get(i).copied().unwrap_or(false) {
            return Ok(Found::Refused(format!(
                "found symbol {i} of that name, but its hash table does not lead to it (the loader could not find it)"
            )));
        }
        if !layout.is_code(sym.value, 1) {
            return Err(format!(
                "{wanted} (symbol {i}): expected an address in this library's code, found {}",
                layout.describe(sym.value)
            ));
        }
        Ok(Found::Exported(sym.value))
    }
}

enum Found {
    Exported(u64),
    Refused(String),
    Absent,
}
