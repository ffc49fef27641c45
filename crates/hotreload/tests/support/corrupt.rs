//! A corpus of corrupted plugin libraries: real plugins built by `cc` in
//! several flavours (with and without debug info, GNU and SysV hash tables,
//! version definitions, packed relative relocations), each damaged in
//! thousands of deterministic ways: truncations, byte flips in every region
//! of the file, and targeted edits of the fields the loader reads.
//!
//! A variant is stored as an edit of its base, so the corpus costs a few
//! bytes per case until a case's bytes are asked for.

use std::collections::HashSet;
use std::hash::{Hash, Hasher};
use std::path::Path;
use std::process::Command;

/// The plugin every base is built from. It exercises what the loader
/// handles: a constructor and a destructor (`.init_array`, `.fini_array`),
/// pointers in data (RELATIVE relocations), a thread-local (PT_TLS and TLS
/// relocations), calls into the C library (PLT and GLOB_DAT relocations,
/// versioned symbols), and both entry points. It prints nothing per tick.
pub const SOURCE: &str = r#"#include <stdio.h>
#include <string.h>
#include "hotreload.h"

typedef struct { long ticks; long sum; } state_t;

static int ready;
static long weights[4] = { 1, 2, 3, 4 };
static const char* names[] = { "alpha", "beta", "gamma" };
static __thread long per_thread;

__attribute__((constructor)) static void corpus_ctor(void) { ready = 1; }
__attribute__((destructor)) static void corpus_dtor(void) { ready = 0; }

static void corpus_init(void* p) { state_t* s = p; s->ticks = 0; s->sum = 0; }
static void corpus_tick(void* p, double dt) {
    state_t* s = p;
    per_thread += 1;
    s->ticks += 1;
    s->sum += weights[s->ticks & 3] + (long)strlen(names[s->ticks % 3]) + ready;
    (void)dt;
}
static void corpus_shutdown(void* p) {
    state_t* s = p;
    printf("[plugin] corpus shutdown ticks=%ld\n", s->ticks);
}

static logic_api_t api = {
    .api_version = HOTRELOAD_API_VERSION,
    .state_size = sizeof(state_t),
    .init = corpus_init, .tick = corpus_tick, .shutdown = corpus_shutdown,
};
static logic_api_ext_t ext = {
    .ext_version = HOTRELOAD_EXT_VERSION, .size = sizeof(logic_api_ext_t),
    .state_version = 1,
};

HOTRELOAD_EXPORT logic_api_t* logic_get_api(void) { return &api; }
HOTRELOAD_EXPORT logic_api_ext_t* logic_get_api_ext(void) { return &ext; }
"#;

/// For the flavour with version definitions (`.gnu.version_d`).
const VERSION_SCRIPT: &str = "CORPUS_1 { global: logic_get_api; logic_get_api_ext; local: *; };\n";

/// The flavours: a name and the extra `cc` flags.
pub const FLAVOURS: [(&str, &[&str]); 5] = [
    ("plain", &["-O1"]),
    ("debug", &["-g", "-O0"]),
    (
        "both-hash",
        &[
            "-O2",
            "-Wl,--hash-style=both",
            "-Wl,--version-script=corpus.map",
        ],
    ),
    ("sysv", &["-O1", "-Wl,--hash-style=sysv", "-Wl,-z,now"]),
    ("relr", &["-O1", "-Wl,-z,pack-relative-relocs"]),
];

/// One uncorrupted library.
pub struct Base {
    pub name: &'static str,
    pub bytes: Vec<u8>,
}

/// Builds every flavour in `dir` (which must hold `hotreload.h`). A flavour
/// the linker does not support (packed relocations need binutils 2.38) is
/// left out, and said on stderr.
pub fn build_bases(dir: &Path) -> Vec<Base> {
    std::fs::write(dir.join("corpus.c"), SOURCE).expect("write corpus.c");
    std::fs::write(dir.join("corpus.map"), VERSION_SCRIPT).expect("write corpus.map");
    let mut bases = Vec::new();
    for (name, flags) in FLAVOURS {
        let out = format!("corpus-{name}.so");
        let status = Command::new("cc")
            .args(["-shared", "-fPIC", "-o", &out])
            .args(flags)
            .arg("corpus.c")
            .current_dir(dir)
            .status()
            .expect("run cc");
        if !status.success() {
            assert_ne!(name, "plain", "cc cannot build the corpus plugin");
            eprintln!("corpus: flavour {name} not built (cc {flags:?} failed); left out");
            continue;
        }
        let bytes = std::fs::read(dir.join(&out)).expect("read the built library");
        bases.push(Base { name, bytes });
    }
    bases
}

/// How a variant differs from its base.
#[derive(Clone, Debug)]
pub enum Edit {
    /// The first `n` bytes only.
    Truncate(usize),
    /// `bytes` written over the base at `at`.
    Write { at: usize, bytes: Vec<u8> },
}

/// One corrupted library: which base, what was done, and a name that says
/// both (`sysv: .gnu.hash bucket 2 = 0xffffffff`).
#[derive(Clone, Debug)]
pub struct Variant {
    pub base: usize,
    pub name: String,
    pub edit: Edit,
}

impl Variant {
    pub fn bytes(&self, bases: &[Base]) -> Vec<u8> {
        let base = &bases[self.base].bytes;
        match &self.edit {
            Edit::Truncate(n) => base[..*n].to_vec(),
            Edit::Write { at, bytes } => {
                let mut out = base.clone();
                out[*at..*at + bytes.len()].copy_from_slice(bytes);
                out
            }
        }
    }

    /// What kind of damage: `truncate`, `flip`, `field`.
    pub fn kind(&self) -> &'static str {
        match &self.edit {
            Edit::Truncate(_) => "truncate",
            Edit::Write { .. } if self.name.contains(" flip ") => "flip",
            Edit::Write { .. } => "field",
        }
    }
}

/// SplitMix64: small, seeded, the same on every machine.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    /// A byte that changes what it is XORed into.
    fn nonzero_byte(&mut self) -> u8 {
        (self.next() % 255) as u8 + 1
    }
}

/// The whole corpus over `bases`, the same for the same bases and seed.
/// Variants whose bytes equal their base or an earlier variant's are
/// dropped.
pub fn corpus(bases: &[Base], seed: u64) -> Vec<Variant> {
    let mut out = Vec::new();
    for (index, base) in bases.iter().enumerate() {
        let mut rng = Rng::new(seed ^ (index as u64).wrapping_mul(0x1000_0000_0001));
        let elf = Elf::parse(&base.bytes);
        let mut maker = Generator {
            base: index,
            prefix: base.name,
            elf: &elf,
            rng: &mut rng,
            out: Vec::new(),
        };
        maker.truncations();
        maker.flips();
        maker.fields();
        out.extend(maker.out);
    }
    let mut seen = HashSet::new();
    out.retain(|v| {
        let bytes = v.bytes(bases);
        let mut h = std::collections::hash_map::DefaultHasher::new();
        bytes.hash(&mut h);
        bytes != bases[v.base].bytes && seen.insert(h.finish())
    });
    out
}

/// A deterministic subset of about `n` variants, spread over the corpus
/// (every kth one), for the runs that must stay quick.
pub fn subset(corpus: &[Variant], n: usize) -> Vec<Variant> {
    let step = corpus.len().div_ceil(n.max(1)).max(1);
    corpus.iter().step_by(step).cloned().collect()
}

// ---------------------------------------------------------------------------
// Reading the (well-formed) base: a test tool, so a malformed base panics.

struct Section {
    name: String,
    kind: u32,
    offset: usize,
    size: usize,
    entsize: usize,
}

struct Elf<'a> {
    bytes: &'a [u8],
    phoff: usize,
    phnum: usize,
    shoff: usize,
    shnum: usize,
    sections: Vec<Section>,
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes(b[at..at + 2].try_into().unwrap())
}
fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}
fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

impl<'a> Elf<'a> {
    fn parse(bytes: &'a [u8]) -> Elf<'a> {
        assert!(bytes.starts_with(b"\x7fELF\x02\x01"), "a 64-bit LE base");
        let phoff = u64_at(bytes, 0x20) as usize;
        let shoff = u64_at(bytes, 0x28) as usize;
        let phnum = u16_at(bytes, 0x38) as usize;
        let shnum = u16_at(bytes, 0x3c) as usize;
        let shstrndx = u16_at(bytes, 0x3e) as usize;
        let header = |i: usize| shoff + i * 64;
        let names_at = u64_at(bytes, header(shstrndx) + 0x18) as usize;
        let sections = (0..shnum)
            .map(|i| {
                let h = header(i);
                let name_off = names_at + u32_at(bytes, h) as usize;
                let end = bytes[name_off..].iter().position(|&b| b == 0).unwrap();
                Section {
                    name: String::from_utf8_lossy(&bytes[name_off..name_off + end]).into_owned(),
                    kind: u32_at(bytes, h + 4),
                    offset: u64_at(bytes, h + 0x18) as usize,
                    size: u64_at(bytes, h + 0x20) as usize,
                    entsize: u64_at(bytes, h + 0x38) as usize,
                }
            })
            .collect();
        Elf {
            bytes,
            phoff,
            phnum,
            shoff,
            shnum,
            sections,
        }
    }

    fn section(&self, name: &str) -> Option<&Section> {
        self.sections.iter().find(|s| s.name == name && s.size > 0)
    }

    /// Every region worth damaging: the three headers and each section with
    /// bytes in the file.
    fn regions(&self) -> Vec<(String, usize, usize)> {
        let mut regions = vec![
            ("ELF header".to_owned(), 0, 64),
            ("program headers".to_owned(), self.phoff, self.phnum * 56),
            ("section headers".to_owned(), self.shoff, self.shnum * 64),
        ];
        for s in &self.sections {
            // SHT_NOBITS (.bss, .tbss) has no bytes in the file.
            if s.kind != 8 && s.size > 0 && s.offset + s.size <= self.bytes.len() {
                regions.push((s.name.clone(), s.offset, s.size));
            }
        }
        regions
    }
}

// ---------------------------------------------------------------------------

struct Generator<'a, 'r> {
    base: usize,
    prefix: &'static str,
    elf: &'a Elf<'a>,
    rng: &'r mut Rng,
    out: Vec<Variant>,
}

/// Values a field is set to: the edges, off-by-ones, wild ones.
fn field_values(old: u64, width: usize, rng: &mut Rng) -> Vec<u64> {
    let mask = if width == 8 {
        u64::MAX
    } else {
        (1u64 << (width * 8)) - 1
    };
    let mut values = vec![
        0,
        1,
        old.wrapping_add(1),
        old.wrapping_sub(1),
        old.wrapping_add(8),
        old.wrapping_add(0x1000),
        old.wrapping_shl(4),
        0xffff_ffff,
        u64::MAX,
        old ^ (1 << (rng.next() % (width as u64 * 8))),
        rng.next(),
    ];
    for v in &mut values {
        *v &= mask;
    }
    values.retain(|&v| v != old);
    values.sort_unstable();
    values.dedup();
    values
}

impl Generator<'_, '_> {
    fn push(&mut self, name: String, edit: Edit) {
        self.out.push(Variant {
            base: self.base,
            name: format!("{}: {name}", self.prefix),
            edit,
        });
    }

    fn write(&mut self, name: String, at: usize, bytes: Vec<u8>) {
        if at + bytes.len() <= self.elf.bytes.len() {
            self.push(name, Edit::Write { at, bytes });
        }
    }

    /// Sets the `width`-byte field at `at` to up to `pick` of the values
    /// from [`field_values`].
    fn field(&mut self, what: &str, at: usize, width: usize, pick: usize) {
        if at + width > self.elf.bytes.len() {
            return;
        }
        let mut raw = [0u8; 8];
        raw[..width].copy_from_slice(&self.elf.bytes[at..at + width]);
        let old = u64::from_le_bytes(raw);
        let mut values = field_values(old, width, self.rng);
        while values.len() > pick {
            let drop = self.rng.below(values.len());
            values.remove(drop);
        }
        for v in values {
            self.write(
                format!("{what} = {v:#x} (was {old:#x})"),
                at,
                v.to_le_bytes()[..width].to_vec(),
            );
        }
    }

    fn truncations(&mut self) {
        let len = self.elf.bytes.len();
        let mut points: Vec<(usize, String)> = [0, 1, 4, 16, 52, 63, 64]
            .iter()
            .map(|&n| (n, "in the ELF header".to_owned()))
            .collect();
        for i in 0..self.elf.phnum {
            let at = self.elf.phoff + i * 56;
            points.push((at + 4, format!("inside program header {i}")));
            points.push((at + 40, format!("inside program header {i}")));
        }
        for s in &self.elf.sections {
            if s.kind == 8 || s.size == 0 {
                continue;
            }
            for (n, where_) in [
                (s.offset, "at the start of"),
                (s.offset + s.size / 2, "inside"),
                (s.offset + s.size - 1, "one byte short of"),
            ] {
                points.push((n, format!("{where_} {}", s.name)));
            }
        }
        for i in 1..12 {
            points.push((len * i / 12, "at an even split".to_owned()));
        }
        points.push((len - 1, "one byte short".to_owned()));
        points.sort_by_key(|p| p.0);
        points.dedup_by_key(|p| p.0);
        for (n, where_) in points {
            if n < len {
                self.push(
                    format!("truncate to {n} bytes ({where_})"),
                    Edit::Truncate(n),
                );
            }
        }
    }

    fn flips(&mut self) {
        for (name, start, size) in self.elf.regions() {
            let singles = (size / 48).clamp(3, 16);
            for _ in 0..singles {
                let at = start + self.rng.below(size);
                let mask = self.rng.nonzero_byte();
                let byte = self.elf.bytes[at] ^ mask;
                self.write(
                    format!("flip {name}+{:#x} ^{mask:#04x}", at - start),
                    at,
                    vec![byte],
                );
            }
            for _ in 0..2 {
                let at = start + self.rng.below(size);
                let bit = 1u8 << self.rng.below(8);
                let byte = self.elf.bytes[at] ^ bit;
                self.write(
                    format!("flip {name}+{:#x} bit {bit:#04x}", at - start),
                    at,
                    vec![byte],
                );
            }
            for _ in 0..2 {
                let run = 2 + self.rng.below(15).min(size.saturating_sub(1));
                let at = start + self.rng.below(size.saturating_sub(run).max(1));
                let bytes: Vec<u8> = (0..run).map(|_| self.rng.next() as u8).collect();
                self.write(
                    format!("flip {name}+{:#x} {run} random bytes", at - start),
                    at,
                    bytes,
                );
            }
        }
    }

    fn fields(&mut self) {
        self.header_fields();
        self.program_header_fields();
        self.dynamic_fields();
        self.hash_fields();
        self.symbol_fields();
        self.relocation_fields();
        self.version_fields();
        self.array_fields();
    }

    fn header_fields(&mut self) {
        for (what, at, width) in [
            ("e_ident[EI_CLASS]", 4, 1),
            ("e_ident[EI_DATA]", 5, 1),
            ("e_ident[EI_VERSION]", 6, 1),
            ("e_ident[EI_OSABI]", 7, 1),
            ("e_ident[EI_ABIVERSION]", 8, 1),
            ("e_ident[EI_PAD]", 9, 1),
            ("e_type", 0x10, 2),
            ("e_machine", 0x12, 2),
            ("e_version", 0x14, 4),
            ("e_entry", 0x18, 8),
            ("e_phoff", 0x20, 8),
            ("e_shoff", 0x28, 8),
            ("e_flags", 0x30, 4),
            ("e_ehsize", 0x34, 2),
            ("e_phentsize", 0x36, 2),
            ("e_phnum", 0x38, 2),
            ("e_shentsize", 0x3a, 2),
            ("e_shnum", 0x3c, 2),
            ("e_shstrndx", 0x3e, 2),
        ] {
            self.field(what, at, width, 3);
        }
    }

    fn program_header_fields(&mut self) {
        for i in 0..self.elf.phnum {
            let at = self.elf.phoff + i * 56;
            for (what, off, width) in [
                ("p_type", 0, 4),
                ("p_flags", 4, 4),
                ("p_offset", 8, 8),
                ("p_vaddr", 16, 8),
                ("p_filesz", 32, 8),
                ("p_memsz", 40, 8),
                ("p_align", 48, 8),
            ] {
                self.field(&format!("program header {i} {what}"), at + off, width, 2);
            }
        }
    }

    fn dynamic_fields(&mut self) {
        let Some(dynamic) = self.elf.section(".dynamic") else {
            return;
        };
        let (start, count) = (dynamic.offset, dynamic.size / 16);
        for i in 0..count {
            let at = start + i * 16;
            let tag = u64_at(self.elf.bytes, at);
            if tag == 0 {
                // The terminator: overwrite it once, and stop.
                self.field(&format!(".dynamic[{i}] DT_NULL d_tag"), at, 8, 2);
                break;
            }
            self.field(&format!(".dynamic[{i}] (tag {tag:#x}) d_val"), at + 8, 8, 4);
            self.field(&format!(".dynamic[{i}] d_tag {tag:#x}"), at, 8, 1);
        }
    }

    fn hash_fields(&mut self) {
        if let Some(gnu) = self.elf.section(".gnu.hash") {
            let (at, b) = (gnu.offset, self.elf.bytes);
            let nbuckets = u32_at(b, at) as usize;
            let bloom = u32_at(b, at + 8) as usize;
            for (what, off) in [
                ("nbuckets", 0),
                ("symoffset", 4),
                ("bloom size", 8),
                ("bloom shift", 12),
            ] {
                self.field(&format!(".gnu.hash {what}"), at + off, 4, 3);
            }
            for w in 0..bloom.min(2) {
                self.field(&format!(".gnu.hash bloom word {w}"), at + 16 + w * 8, 8, 2);
            }
            let buckets = at + 16 + bloom * 8;
            for k in 0..nbuckets.min(4) {
                self.field(&format!(".gnu.hash bucket {k}"), buckets + k * 4, 4, 3);
            }
            let chains = buckets + nbuckets * 4;
            let chain_words = (gnu.offset + gnu.size).saturating_sub(chains) / 4;
            for c in 0..chain_words.min(6) {
                self.field(&format!(".gnu.hash chain {c}"), chains + c * 4, 4, 2);
            }
        }
        if let Some(sysv) = self.elf.section(".hash") {
            let (at, b) = (sysv.offset, self.elf.bytes);
            let nbucket = u32_at(b, at) as usize;
            self.field(".hash nbucket", at, 4, 3);
            self.field(".hash nchain", at + 4, 4, 3);
            for k in 0..nbucket.min(4) {
                self.field(&format!(".hash bucket {k}"), at + 8 + k * 4, 4, 3);
            }
            let chains = at + 8 + nbucket * 4;
            let words = (sysv.offset + sysv.size).saturating_sub(chains) / 4;
            for c in 0..words.min(6) {
                self.field(&format!(".hash chain {c}"), chains + c * 4, 4, 2);
            }
        }
    }

    fn symbol_fields(&mut self) {
        let Some(dynsym) = self.elf.section(".dynsym") else {
            return;
        };
        let (start, count) = (dynsym.offset, dynsym.size / 24);
        for i in 1..count {
            let at = start + i * 24;
            for (what, off, width, pick) in [
                ("st_name", 0, 4, 2),
                ("st_info", 4, 1, 2),
                ("st_other", 5, 1, 1),
                ("st_shndx", 6, 2, 2),
                ("st_value", 8, 8, 3),
                ("st_size", 16, 8, 1),
            ] {
                self.field(&format!(".dynsym[{i}] {what}"), at + off, width, pick);
            }
        }
    }

    fn relocation_fields(&mut self) {
        for name in [".rela.dyn", ".rela.plt"] {
            let Some(rela) = self.elf.section(name) else {
                continue;
            };
            let (start, count) = (rela.offset, rela.size / 24);
            // Every entry is a near copy of its neighbours: a spread of them.
            for i in (0..count).step_by(count.div_ceil(6).max(1)) {
                let at = start + i * 24;
                self.field(&format!("{name}[{i}] r_offset"), at, 8, 3);
                self.field(&format!("{name}[{i}] r_info type"), at + 8, 4, 3);
                self.field(&format!("{name}[{i}] r_info symbol"), at + 12, 4, 3);
                self.field(&format!("{name}[{i}] r_addend"), at + 16, 8, 3);
            }
        }
        if let Some(relr) = self.elf.section(".relr.dyn") {
            for i in 0..(relr.size / 8).min(4) {
                self.field(&format!(".relr.dyn[{i}]"), relr.offset + i * 8, 8, 3);
            }
        }
    }

    fn version_fields(&mut self) {
        if let Some(versym) = self.elf.section(".gnu.version") {
            for i in 1..(versym.size / 2).min(8) {
                self.field(&format!(".gnu.version[{i}]"), versym.offset + i * 2, 2, 2);
            }
        }
        if let Some(need) = self.elf.section(".gnu.version_r") {
            let at = need.offset;
            for (what, off, width) in [
                ("vn_version", 0, 2),
                ("vn_cnt", 2, 2),
                ("vn_file", 4, 4),
                ("vn_aux", 8, 4),
                ("vn_next", 12, 4),
            ] {
                self.field(&format!(".gnu.version_r[0] {what}"), at + off, width, 2);
            }
            let aux = at + u32_at(self.elf.bytes, at + 8) as usize;
            for (what, off, width) in [
                ("vna_hash", 0, 4),
                ("vna_flags", 4, 2),
                ("vna_other", 6, 2),
                ("vna_name", 8, 4),
                ("vna_next", 12, 4),
            ] {
                self.field(&format!(".gnu.version_r aux 0 {what}"), aux + off, width, 2);
            }
        }
        if let Some(def) = self.elf.section(".gnu.version_d") {
            let at = def.offset;
            for (what, off, width) in [
                ("vd_version", 0, 2),
                ("vd_flags", 2, 2),
                ("vd_ndx", 4, 2),
                ("vd_cnt", 6, 2),
                ("vd_hash", 8, 4),
                ("vd_aux", 12, 4),
                ("vd_next", 16, 4),
            ] {
                self.field(&format!(".gnu.version_d[0] {what}"), at + off, width, 2);
            }
            let aux = at + u32_at(self.elf.bytes, at + 12) as usize;
            self.field(".gnu.version_d aux 0 vda_name", aux, 4, 2);
            self.field(".gnu.version_d aux 0 vda_next", aux + 4, 4, 2);
        }
    }

    fn array_fields(&mut self) {
        for name in [".init_array", ".fini_array"] {
            if let Some(array) = self.elf.section(name) {
                let width = array.entsize.max(8);
                for i in 0..(array.size / width).min(2) {
                    self.field(&format!("{name}[{i}]"), array.offset + i * width, 8, 2);
                }
            }
        }
    }
}
