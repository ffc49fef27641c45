//! The derive's schema, read the way the host reads a plugin's table, is
//! the layout the host's debug-info reader finds for the same type in the
//! same build: field by field, name, offset, type and shape.

use hotreload_abi::{LayoutHash, LogicApiExt};
use hotreload_engine::layout::{Layout, Scalar, dwarf};
use hotreload_plugin::schema::{Table, flatten};
use hotreload_plugin::{State, StateField};

#[derive(State, Clone, Copy)]
#[repr(C)]
pub struct Vec2 {
    x: f32,
    y: f32,
}

#[derive(State, Clone, Copy)]
#[repr(C)]
pub struct Enemy {
    pos: Vec2,
    hp: i16,
    alive: bool,
    path: [Vec2; 2],
}

#[derive(State)]
#[repr(C)]
pub struct ArenaForSchemaTest {
    score: i64,
    ticks: u32,
    pos: Vec2,
    enemies: [Enemy; 3],
    grid: [[u8; 5]; 3],
    samples: [f64; 4],
    #[state(transient)]
    cache: [u32; 2],
    #[state(text)]
    name: [u8; 12],
    big: [[Vec2; 2]; 2],
    flags: [bool; 3],
    signed: isize,
}

/// What the host makes of the derive's table: the extended ABI's reader.
fn schema_as_the_host_reads_it<S: StateField>() -> Layout {
    let table = Table::of::<S>();
    let ext = LogicApiExt {
        ext_version: hotreload_abi::EXT_VERSION,
        size: size_of::<LogicApiExt>() as u32,
        state_version: 1,
        field_count: table.descs.len() as u32,
        fields: table.descs.as_ptr(),
        init: None,
        on_reload: None,
        on_unload: None,
        migrate: None,
        describe: None,
        tick: None,
    };
    // SAFETY: the table and its names live in `table` for the call.
    let checked = unsafe { hotreload_engine::plugin::ext::check(&ext, size_of::<S>()) }
        .expect("the host accepts the derive's schema");
    (*checked.schema.expect("a schema")).clone()
}

#[test]
fn the_derived_schema_is_the_debug_info_layout() {
    let schema = schema_as_the_host_reads_it::<ArenaForSchemaTest>();
    let exe = std::fs::read(std::env::current_exe().expect("the test's path")).expect("read it");
    let debug = dwarf::read_layout(
        &exe,
        size_of::<ArenaForSchemaTest>(),
        Some("ArenaForSchemaTest"),
    )
    .expect("the debug info is readable")
    .expect("the test is built with debug info");
    let names = |l: &Layout| l.fields.iter().map(|f| f.name.clone()).collect::<Vec<_>>();
    assert_eq!(
        names(&schema),
        names(&debug),
        "the same fields, in the same order"
    );
    for (s, d) in schema.fields.iter().zip(&debug.fields) {
        assert_eq!(s.offset, d.offset, "{}: offset", s.name);
        assert_eq!(s.dims, d.dims, "{}: dimensions", s.name);
        assert_eq!(s.count, d.count, "{}: count", s.name);
        if s.name == "name" {
            // #[state(text)] makes a C char (8 bits, signed) of any byte.
            assert_eq!(
                s.scalar,
                Scalar::Int {
                    signed: true,
                    bytes: 1
                },
                "text"
            );
            assert_eq!(
                d.scalar,
                Scalar::Int {
                    signed: false,
                    bytes: 1
                },
                "u8"
            );
        } else {
            assert_eq!(s.scalar, d.scalar, "{}: type", s.name);
        }
    }
    // Nested structs, arrays of structs two deep, a 2-D array by row.
    for name in ["pos.x", "enemies[2].path[1].y", "big[1][0].x", "grid"] {
        assert!(
            schema.field(name).is_some(),
            "{name} in {:?}",
            names(&schema)
        );
    }
    assert_eq!(
        schema.field("grid").map(|f| f.dims.clone()),
        Some(vec![3, 5])
    );
    assert_eq!(
        schema.field("signed").map(|f| f.scalar),
        Some(Scalar::Int {
            signed: true,
            bytes: 8
        })
    );
    assert!(schema.field("cache").is_some_and(|f| f.transient));
    assert!(!debug.field("cache").is_some_and(|f| f.transient));
}

/// The hash the derive computed at compile time is the one the host
/// computes from the table it reads (the definition both share).
#[test]
fn the_compile_time_hash_is_the_tables() {
    let mut h = LayoutHash::new();
    for f in flatten::<ArenaForSchemaTest>() {
        h = h
            .bytes(f.name.as_bytes())
            .field(f.field_type, f.flags, f.offset, f.count);
    }
    let recomputed = h.finish(
        size_of::<ArenaForSchemaTest>(),
        align_of::<ArenaForSchemaTest>(),
    );
    assert_eq!(<ArenaForSchemaTest as State>::LAYOUT_HASH, recomputed);
    assert_ne!(<Enemy as State>::LAYOUT_HASH, <Vec2 as State>::LAYOUT_HASH);
}
