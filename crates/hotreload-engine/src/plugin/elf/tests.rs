//! The validator on real libraries: plugins built by `cc` in every flavour
//! the corpus uses, the system's own libraries, and targeted damage to each
//! structure, each refused with its reason.

use std::path::Path;
use std::process::Command;

use super::*;

const PLUGIN: &str = r#"
#include <stdio.h>
#include <string.h>
#include <stddef.h>
typedef struct { int api_version; size_t state_size; void (*init)(void*);
                 void (*tick)(void*, double); void (*shutdown)(void*); } logic_api_t;
typedef struct { long ticks; } state_t;
static int ready;
static const char* names[] = { "a", "bb" };
static __thread long per_thread;
__attribute__((constructor)) static void ctor(void) { ready = 1; }
__attribute__((destructor)) static void dtor(void) { ready = 0; }
static void t_init(void* p) { ((state_t*)p)->ticks = 0; }
static void t_tick(void* p, double dt) {
    per_thread++; ((state_t*)p)->ticks += (long)strlen(names[ready & 1]); (void)dt; }
static void t_shutdown(void* p) { printf("%ld\n", ((state_t*)p)->ticks); }
static logic_api_t api = { 1, sizeof(state_t), t_init, t_tick, t_shutdown };
__attribute__((visibility("default"))) logic_api_t* logic_get_api(void) { return &api; }
"#;

/// Builds `source` with `cc -shared -fPIC` and `flags`; `None` when this
/// toolchain cannot (packed relocations need binutils 2.38).
fn build(source: &str, flags: &[&str]) -> Option<Vec<u8>> {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("p.c"), source).expect("write");
    std::fs::write(
        dir.path().join("v.map"),
        "V1 { global: logic_get_api; local: *; };\n",
    )
    .expect("write");
    let ok = Command::new("cc")
        .args(["-shared", "-fPIC", "-o", "p.so", "p.c"])
        .args(flags)
        .current_dir(dir.path())
        .status()
        .expect("run cc")
        .success();
    ok.then(|| std::fs::read(dir.path().join("p.so")).expect("read"))
}

fn plugin() -> Vec<u8> {
    build(PLUGIN, &[]).expect("cc builds the test plugin")
}

const FLAVOURS: [&[&str]; 6] = [
    &[],
    &["-g", "-O2"],
    &["-Wl,--hash-style=both", "-Wl,--version-script=v.map"],
    &["-Wl,--hash-style=sysv"],
    &["-Wl,-z,now", "-Wl,-z,relro"],
    &["-Wl,-z,pack-relative-relocs"],
];

#[test]
fn real_plugins_pass_in_every_flavour() {
    for flags in FLAVOURS {
        let Some(bytes) = build(PLUGIN, flags) else {
            assert!(!flags.is_empty(), "cc cannot build the plain plugin");
            continue;
        };
        let image = validate(&bytes).unwrap_or_else(|e| panic!("{flags:?}: {e}"));
        assert!(
            image.get_api.is_some_and(|a| image.in_code(a, 1)),
            "{flags:?}"
        );
        assert!(image.get_api_ext.is_none(), "{flags:?}");
        // frame_dummy and the plugin's constructor; its destructor and the
        // C start files' __do_global_dtors_aux.
        assert!(image.init.len() >= 2, "{flags:?}: {:?}", image.init);
        assert!(image.fini.len() >= 2, "{flags:?}: {:?}", image.fini);
        assert!(!image.retag.is_empty(), "{flags:?}");
        assert!(!image.nodelete, "{flags:?}");
    }
}

/// A library that exports nothing (an empty source file) hashes no symbol:
/// its GNU hash table then says nothing of the undefined ones its
/// relocations name. It is read whole, and it has no entry point, which is
/// what the host then says (not a relocation naming a symbol past the
/// table, as before).
#[test]
fn a_library_that_exports_nothing_is_read_and_has_no_entry_point() {
    for flags in [&[][..], &["-Wl,--hash-style=gnu"][..]] {
        let bytes = build("", flags).expect("cc builds an empty library");
        let image = validate(&bytes).unwrap_or_else(|e| panic!("{flags:?}: {e}"));
        assert!(image.get_api.is_none(), "{flags:?}");
    }
}

#[test]
fn the_neutralized_copy_validates_to_the_same_image() {
    let bytes = plugin();
    let image = validate(&bytes).expect("valid");
    let copy = image.neutralized(&bytes);
    assert_ne!(copy, bytes);
    let again = validate(&copy).expect("the copy is valid");
    assert!(again.retag.is_empty());
    assert_eq!(again.neutralized(&copy), copy);
    assert_eq!(
        Image {
            retag: Vec::new(),
            ..image
        },
        again
    );
}

/// The first library in the system folder that exists, of `names`.
fn system_library(names: &[&str]) -> Option<Vec<u8>> {
    names
        .iter()
        .map(|n| Path::new("/usr/lib/x86_64-linux-gnu").join(n))
        .find_map(|p| std::fs::read(p).ok())
}

#[test]
fn system_libraries_are_read_without_a_panic_and_judged_with_reasons() {
    let Ok(dir) = std::fs::read_dir("/usr/lib/x86_64-linux-gnu") else {
        return;
    };
    let (mut passed, mut refused) = (0, Vec::new());
    // Enough to meet every linker and layout the system uses, in a second.
    for entry in dir.flatten().take(300) {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.contains(".so") || entry.path().is_symlink() {
            continue;
        }
        let Ok(bytes) = std::fs::read(entry.path()) else {
            continue;
        };
        if !bytes.starts_with(b"\x7fELF") {
            continue; // linker scripts (libc.so)
        }
        match validate(&bytes) {
            Ok(_) => passed += 1,
            Err(why) => {
                assert!(
                    why.contains("expected") && why.contains("found"),
                    "{name}: {why}"
                );
                refused.push(format!("{name}: {why}"));
            }
        }
    }
    if std::env::var_os("HOTRELOAD_ELF_VERBOSE").is_some() {
        eprintln!("{passed} passed");
        for r in &refused {
            eprintln!("{r}");
        }
    }
    // Plain libraries without indirect functions load.
    if let Some(z) = system_library(&["libz.so.1", "libexpat.so.1"]) {
        validate(&z).expect("a plain system library passes");
    }
}

/// Patches `bytes` at `at` with `with`.
fn patched(bytes: &[u8], at: usize, with: &[u8]) -> Vec<u8> {
    let mut out = bytes.to_vec();
    out[at..at + with.len()].copy_from_slice(with);
    out
}

/// The file offset of the dynamic entry with `tag`.
fn dynamic_entry(bytes: &[u8], tag: u64) -> usize {
    let image = validate(bytes).expect("valid");
    let layout_at = |vaddr: u64| {
        let header = header::read(bytes).expect("header");
        let phdrs = segments::program_headers(bytes, &header).expect("phdrs");
        let layout = Layout::new(&phdrs, bytes.len() as u64).expect("layout");
        layout.file_offset(vaddr).expect("mapped") as usize
    };
    let start = layout_at(image.dynamic);
    (0..)
        .map(|i| start + i * 16)
        .find(|&at| u64_at(bytes, at as u64) == Some(tag))
        .expect("the tag is there")
}

fn refused(bytes: &[u8], needle: &str) {
    match validate(bytes) {
        Ok(_) => panic!("accepted; expected a refusal containing {needle:?}"),
        Err(why) => assert!(
            why.contains(needle) && why.contains("expected") && why.contains("found"),
            "{why}"
        ),
    }
}

#[test]
fn the_dynamic_section_must_hold_what_the_loader_dereferences() {
    let bytes = plugin();
    // DT_RELAENT gone: the loader reads it unconditionally for DT_RELA.
    let at = dynamic_entry(&bytes, 9);
    refused(
        &patched(&bytes, at, &0x6000_0042u64.to_le_bytes()),
        "DT_RELAENT",
    );
    // DT_PLTREL must say RELA (an assertion in the loader).
    let at = dynamic_entry(&bytes, 20);
    refused(&patched(&bytes, at + 8, &17u64.to_le_bytes()), "DT_PLTREL");
    // The terminator gone.
    let mut no_end = bytes.clone();
    let start = dynamic_entry(&bytes, 1);
    for at in (start..).step_by(16).take(64) {
        if u64_at(&no_end, at as u64) == Some(0) {
            no_end[at..at + 8].copy_from_slice(&0x6000_0042u64.to_le_bytes());
        }
        if at as u64 >= start as u64 + 0x300 {
            break;
        }
    }
    refused(&no_end, "DT_NULL");
}

#[test]
fn a_gnu_hash_table_is_checked_bucket_by_bucket() {
    let bytes = plugin();
    let at = dynamic_entry(&bytes, 0x6fff_fef5);
    let table = u64_at(&bytes, at as u64 + 8).expect("value") as usize;
    // The bloom size (third word) 0: the loader would mask with 0xffffffff.
    refused(
        &patched(&bytes, table + 8, &0u32.to_le_bytes()),
        "bloom filter size",
    );
    refused(
        &patched(&bytes, table + 8, &3u32.to_le_bytes()),
        "power of two",
    );
    // No buckets.
    refused(&patched(&bytes, table, &0u32.to_le_bytes()), "buckets");
}

#[test]
fn a_sysv_hash_chain_that_loops_is_refused() {
    let bytes = build(PLUGIN, &["-Wl,--hash-style=sysv"]).expect("cc");
    let at = dynamic_entry(&bytes, 4);
    let table = u64_at(&bytes, at as u64 + 8).expect("value") as usize;
    let nbucket = u32_at(&bytes, table as u64).expect("nbucket") as usize;
    // Point every chain link back at symbol 1, itself included.
    let nchain = u32_at(&bytes, table as u64 + 4).expect("nchain") as usize;
    let mut looped = bytes.clone();
    for i in 1..nchain {
        let at = table + 8 + (nbucket + i) * 4;
        looped[at..at + 4].copy_from_slice(&1u32.to_le_bytes());
    }
    refused(&looped, "DT_HASH");
}

#[test]
fn thread_local_images_and_stacks_are_checked() {
    let bytes = plugin();
    let header = header::read(&bytes).expect("header");
    let phdrs = segments::program_headers(&bytes, &header).expect("phdrs");
    let at = |kind: u32| {
        let ph = phdrs.iter().find(|p| p.kind == kind).expect("present");
        header.phoff as usize + ph.index * 56
    };
    // PT_TLS p_filesz above p_memsz: every thread's block would overflow.
    let tls = at(segments::PT_TLS);
    refused(
        &patched(&bytes, tls + 32, &0x8_0000u64.to_le_bytes()),
        "PT_TLS",
    );
    // An executable stack.
    let stack = at(segments::PT_GNU_STACK);
    refused(
        &patched(&bytes, stack + 4, &7u32.to_le_bytes()),
        "non-executable stack",
    );
    // A segment past the end of the file.
    let load = at(segments::PT_LOAD);
    let past = (bytes.len() as u64 + 0x1000).to_le_bytes();
    let longer = patched(&bytes, load + 40, &past);
    refused(&patched(&longer, load + 32, &past), "truncated");
}

#[test]
fn relocations_must_write_inside_writable_memory() {
    let bytes = plugin();
    let at = dynamic_entry(&bytes, 7);
    let rela = u64_at(&bytes, at as u64 + 8).expect("value") as usize;
    // The first relocation's r_offset into the ELF header (read-only).
    refused(&patched(&bytes, rela, &0x10u64.to_le_bytes()), "writable");
    // Its symbol index far past the table.
    refused(
        &patched(&bytes, rela + 12, &0x7fffu32.to_le_bytes()),
        "symbol index",
    );
    // A type the loader does not apply.
    refused(
        &patched(&bytes, rela + 8, &2u32.to_le_bytes()),
        "R_X86_64_PC32",
    );
}

#[test]
fn symbol_versions_must_index_the_version_records() {
    let bytes = plugin();
    let at = dynamic_entry(&bytes, 0x6fff_fff0);
    let versym = u64_at(&bytes, at as u64 + 8).expect("value") as usize;
    refused(
        &patched(&bytes, versym + 2, &0x7777u16.to_le_bytes()),
        "version index",
    );
    let at = dynamic_entry(&bytes, 0x6fff_fffe);
    let verneed = u64_at(&bytes, at as u64 + 8).expect("value") as usize;
    // vn_cnt off by one.
    let cnt = u16_at(&bytes, verneed as u64 + 2).expect("vn_cnt");
    refused(
        &patched(&bytes, verneed + 2, &(cnt + 1).to_le_bytes()),
        "vn_cnt",
    );
}

#[test]
fn indirect_functions_are_refused() {
    let source = format!(
        "{PLUGIN}\nstatic int impl(void) {{ return 1; }}\n\
         static int (*resolve(void))(void) {{ return impl; }}\n\
         int chosen(void) __attribute__((ifunc(\"resolve\")));\n\
         int use_it(void) {{ return chosen(); }}\n"
    );
    let bytes = build(&source, &[]).expect("cc builds an ifunc");
    let why = validate(&bytes).expect_err("refused");
    assert!(
        why.contains("STT_GNU_IFUNC") || why.contains("R_X86_64_IRELATIVE"),
        "{why}"
    );
}

/// Every single-byte change to the loader's structures is judged without a
/// panic, and every refusal names what was expected and what was found.
#[test]
fn every_byte_of_the_loader_structures_flipped() {
    let bytes = plugin();
    let start = dynamic_entry(&bytes, 1) & !0xf;
    let header = header::read(&bytes).expect("header");
    let regions = [
        (0usize, 64usize),
        (header.phoff as usize, header.phnum as usize * 56),
        (start.saturating_sub(0x200), 0x400),
        (0x200, 0x600),
    ];
    for (from, len) in regions {
        for at in from..(from + len).min(bytes.len()) {
            for mask in [0x01u8, 0x80, 0xff] {
                let mut damaged = bytes.clone();
                damaged[at] ^= mask;
                if let Err(why) = validate(&damaged) {
                    assert!(
                        why.contains("expected") && why.contains("found"),
                        "byte {at:#x} ^ {mask:#x}: {why}"
                    );
                }
            }
        }
    }
}
