use super::*;
use crate::layout::{Scalar, Shown, Source};
use object::{Object, ObjectSection};
use std::path::Path;
use std::process::Command;

/// Compiles `source` into a shared object with `flags` and returns its bytes.
fn build(dir: &Path, name: &str, source: &str, flags: &[&str]) -> Vec<u8> {
    build_units(dir, name, &[(name, source)], flags)
}

/// Compiles several C files (`(name, source)`, one unit each) into one
/// shared object `name.so` and returns its bytes.
fn build_units(dir: &Path, name: &str, units: &[(&str, &str)], flags: &[&str]) -> Vec<u8> {
    let lib = dir.join(format!("{name}.so"));
    let mut cc = Command::new("cc");
    cc.args(["-shared", "-fPIC", "-o"]).arg(&lib);
    for (unit, source) in units {
        let src = dir.join(format!("{unit}.c"));
        std::fs::write(&src, source).expect("write the C source");
        cc.arg(src);
    }
    let out = cc.args(flags).current_dir(dir).output().expect("run cc");
    assert!(
        out.status.success(),
        "cc {flags:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::read(&lib).expect("read the library")
}

/// Compiles `source`, saved as `file`, with `compiler` and `flags` into a
/// library (`-o` follows the flags) and returns its bytes.
fn compile_with(compiler: &str, flags: &[&str], file: &str, source: &str) -> Vec<u8> {
    let dir = tempfile::tempdir().expect("tempdir");
    let src = dir.path().join(file);
    std::fs::write(&src, source).expect("write the source");
    let lib = dir.path().join("lib.so");
    let out = Command::new(compiler)
        .args(flags)
        .arg("-o")
        .arg(&lib)
        .arg(&src)
        .output()
        .unwrap_or_else(|e| panic!("run {compiler}: {e}"));
    assert!(
        out.status.success(),
        "{compiler} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::read(&lib).expect("read the library")
}

fn lib(source: &str, flags: &[&str]) -> Vec<u8> {
    let dir = tempfile::tempdir().expect("tempdir");
    build(dir.path(), "plugin", source, flags)
}

/// Reads a layout that must be found, and checks it.
fn read(bytes: &[u8], size: usize, name: Option<&str>) -> Layout {
    let layout = read_layout(bytes, size, name)
        .expect("the type is found")
        .expect("the library has debug info");
    layout.validate().expect("the layout validates");
    assert_eq!(layout.size, size);
    layout
}

fn int(signed: bool, bytes: u8) -> Scalar {
    Scalar::Int { signed, bytes }
}

fn shape(layout: &Layout) -> Vec<(String, usize, Scalar, usize)> {
    layout
        .fields
        .iter()
        .map(|f| (f.name.clone(), f.offset, f.scalar, f.count))
        .collect()
}

const STATE: &str = r#"
#include <stdint.h>
#include <stdbool.h>
#include <stddef.h>
enum mode { MODE_IDLE, MODE_RUN };
enum delta { DOWN = -1, UP = 1 };
typedef struct { float x, y; } vec2;
struct item { int16_t hp; uint8_t kind; double weight; };
typedef struct {
int score;
float speed;
double time;
char letter;
bool alive;
uint8_t flags;
int64_t big;
unsigned short us;
vec2 pos;
int grid[3][4];
struct item items[3];
enum mode mode;
enum delta delta;
const char *label;
void (*callback)(void);
volatile uint32_t ticks;
const double limits[2];
struct { vec2 a, b; } box;
} state_t;
state_t *the_state;
"#;

/// The leaves of `STATE`, as C names them.
const STATE_LEAVES: &[&str] = &[
    "score",
    "speed",
    "time",
    "letter",
    "alive",
    "flags",
    "big",
    "us",
    "pos.x",
    "pos.y",
    "grid",
    "items[0].hp",
    "items[0].kind",
    "items[0].weight",
    "items[1].hp",
    "items[1].kind",
    "items[1].weight",
    "items[2].hp",
    "items[2].kind",
    "items[2].weight",
    "mode",
    "delta",
    "label",
    "callback",
    "ticks",
    "limits",
    "box.a.x",
    "box.a.y",
    "box.b.x",
    "box.b.y",
];

/// What the compiler says of `state_t` in `source`: `(field, offsetof,
/// sizeof)` for each `(field, C member expression)`, and its sizeof.
fn compiler_offsets(
    dir: &Path,
    source: &str,
    members: &[(&str, &str)],
) -> (Vec<(String, usize, usize)>, usize) {
    let mut main = String::from("#include <stdio.h>\n#include <stddef.h>\nint main(void) {\n");
    for (_, member) in members {
        main.push_str(&format!(
            "    printf(\"%zu %zu\\n\", offsetof(state_t, {member}), \
             sizeof(((state_t *)0)->{member}));\n"
        ));
    }
    main.push_str("    printf(\"%zu\\n\", sizeof(state_t));\n    return 0;\n}\n");
    let src = dir.join("offsets.c");
    let exe = dir.join("offsets");
    std::fs::write(&src, format!("{source}\n{main}")).expect("write offsets.c");
    let out = Command::new("cc")
        .arg("-o")
        .arg(&exe)
        .arg(&src)
        .output()
        .expect("run cc");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = Command::new(&exe).output().expect("run offsets");
    let numbers: Vec<Vec<usize>> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.split(' ').map(|n| n.parse().expect("a number")).collect())
        .collect();
    assert_eq!(numbers.len(), members.len() + 1);
    let rows = members
        .iter()
        .zip(&numbers)
        .map(|((field, _), n)| (field.to_string(), n[0], n[1]))
        .collect();
    (rows, numbers[members.len()][0])
}

/// Checks `layout` has exactly the fields `expected`, in order, at the
/// compiler's offsets and sizes.
fn assert_offsets(layout: &Layout, expected: &[(String, usize, usize)], context: &str) {
    let names: Vec<&str> = layout.fields.iter().map(|f| f.name.as_str()).collect();
    let want: Vec<&str> = expected.iter().map(|(n, _, _)| n.as_str()).collect();
    assert_eq!(names, want, "{context}");
    for (name, offset, bytes) in expected {
        let field = layout.field(name).expect("field");
        assert_eq!(
            (field.offset, field.size()),
            (*offset, *bytes),
            "{name} {context}"
        );
    }
}

fn check_state(flags: &[&str]) {
    let dir = tempfile::tempdir().expect("tempdir");
    let members: Vec<(&str, &str)> = STATE_LEAVES.iter().map(|m| (*m, *m)).collect();
    let (expected, size) = compiler_offsets(dir.path(), STATE, &members);
    let bytes = build(dir.path(), "state", STATE, flags);
    let layout = read(&bytes, size, None);
    assert_eq!(
        layout.source,
        Source::Dwarf {
            type_name: "state_t".into(),
            chosen_by: "the name state_t".into()
        },
        "{flags:?}"
    );
    assert_offsets(&layout, &expected, &format!("{flags:?}"));
    let scalar = |name: &str| layout.field(name).expect(name).scalar;
    let count = |name: &str| layout.field(name).expect(name).count;
    assert_eq!(scalar("score"), int(true, 4));
    assert_eq!(scalar("speed"), Scalar::Float { bytes: 4 });
    assert_eq!(scalar("time"), Scalar::Float { bytes: 8 });
    assert_eq!(scalar("letter").size(), 1);
    assert_eq!(scalar("alive"), Scalar::Bool);
    assert_eq!(scalar("flags"), int(false, 1));
    assert_eq!(scalar("big"), int(true, 8));
    assert_eq!(scalar("us"), int(false, 2));
    assert_eq!(scalar("pos.y"), Scalar::Float { bytes: 4 });
    assert_eq!((scalar("grid"), count("grid")), (int(true, 4), 12));
    assert_eq!(scalar("items[2].hp"), int(true, 2));
    assert_eq!(scalar("items[1].weight"), Scalar::Float { bytes: 8 });
    // gcc gives an enum without negative values an unsigned type.
    assert_eq!(scalar("mode"), int(false, 4));
    assert_eq!(scalar("delta"), int(true, 4));
    assert_eq!(scalar("label"), Scalar::Pointer);
    assert_eq!(scalar("callback"), Scalar::Pointer);
    assert_eq!(scalar("ticks"), int(false, 4));
    assert_eq!(
        (scalar("limits"), count("limits")),
        (Scalar::Float { bytes: 8 }, 2)
    );
    let dims = |name: &str| layout.field(name).expect(name).dims.clone();
    assert_eq!(dims("grid"), vec![3, 4]);
    assert_eq!(dims("limits"), vec![2]);
    assert_eq!(dims("score"), Vec::<usize>::new());
    let enumerators = |name: &str| match &layout.field(name).expect(name).shown {
        Shown::Enum(e) => e
            .iter()
            .map(|e| (e.value, e.name.clone()))
            .collect::<Vec<_>>(),
        other => panic!("{name} shown as {other:?}"),
    };
    assert_eq!(
        enumerators("mode"),
        [(0, "MODE_IDLE".to_owned()), (1, "MODE_RUN".to_owned())]
    );
    assert_eq!(
        enumerators("delta"),
        [(-1, "DOWN".to_owned()), (1, "UP".to_owned())]
    );
}

#[test]
fn shapes_text_and_enumerators_come_from_the_debug_info() {
    let source = r#"
#include <stdint.h>
typedef int row_t[3];
enum big { SMALL = 1, HUGE = 4000000000u };
typedef struct {
char name[16];
char names[2][8];
signed char sc[4];
unsigned char uc[4];
int8_t i8s[4];
uint8_t u8s[4];
char letter;
row_t rows[2];
int cube[2][3][4];
enum big big;
} state_t;
state_t *s;
"#;
    let bytes = lib(source, &["-g"]);
    let dir = tempfile::tempdir().expect("tempdir");
    let (_, size) = compiler_offsets(dir.path(), source, &[]);
    let layout = read(&bytes, size, None);
    let field = |name: &str| layout.field(name).expect(name).clone();
    assert_eq!(
        (field("name").dims, field("name").shown),
        (vec![16], Shown::Text)
    );
    assert_eq!(
        (field("names").dims, field("names").shown),
        (vec![2, 8], Shown::Text)
    );
    for numbers in ["sc", "uc", "i8s", "u8s"] {
        assert_eq!(field(numbers).shown, Shown::Number, "{numbers}");
    }
    assert_eq!(field("letter").dims, Vec::<usize>::new());
    assert_eq!(field("rows").dims, vec![2, 3]);
    assert_eq!(
        (field("cube").dims, field("cube").count),
        (vec![2, 3, 4], 24)
    );
    match field("big").shown {
        Shown::Enum(e) => assert_eq!(e[1].value, 4_000_000_000),
        other => panic!("{other:?}"),
    }
}

#[test]
fn types_in_namespaces_are_found_by_name_and_by_path() {
    let source = r#"
namespace game { namespace v2 { struct State { int score; float speed; }; } }
namespace other { struct State { double a; }; }
namespace game { struct Grid { int cells[2][2]; }; }
game::v2::State *a; other::State *b; game::Grid *c;
"#;
    let bytes = compile_with("c++", &["-g", "-shared", "-fPIC"], "ns.cc", source);
    for asked in ["v2::State", "game::v2::State", "struct game::v2::State"] {
        let layout = read(&bytes, 8, Some(asked));
        assert_eq!(
            layout.source,
            Source::Dwarf {
                type_name: "struct game::v2::State".into(),
                chosen_by: "--state-type".into()
            },
            "{asked}"
        );
        assert_eq!(
            shape(&layout),
            [
                ("score".into(), 0, int(true, 4), 1),
                ("speed".into(), 4, Scalar::Float { bytes: 4 }, 1)
            ]
        );
    }
    let err = read_layout(&bytes, 8, Some("State")).expect_err("two States");
    assert!(
        err.contains("ambiguous")
            && err.contains("game::v2::State")
            && err.contains("other::State"),
        "{err}"
    );
    // By size, a namespaced struct counts like a C one.
    let grid = read(&bytes, 16, None);
    assert_eq!(grid.fields[0].dims, vec![2, 2]);
}

/// A Rust `cdylib` built by `rustc` with `-g`: its types live in the
/// crate's and its modules' namespaces, next to thousands of the standard
/// library's.
#[test]
fn a_rust_state_inside_a_module_is_found() {
    let source = r#"
pub mod game {
    #[repr(C)]
    #[derive(Clone, Copy)]
    pub enum Mode { Idle = 0, Run = 1 }
    #[repr(C)]
    pub struct State { pub score: i32, pub speed: f32, pub grid: [[i32; 3]; 2], pub mode: Mode, pub target: Option<u32> }
}
#[unsafe(no_mangle)]
pub extern "C" fn state_size() -> usize { std::mem::size_of::<game::State>() }
#[unsafe(no_mangle)]
pub extern "C" fn touch(s: *mut game::State) { unsafe { (*s).score += 1; (*s).mode = game::Mode::Run; } }
"#;
    let flags = ["--crate-type", "cdylib", "-g", "--edition", "2021"];
    let bytes = compile_with("rustc", &flags, "rsplug.rs", source);
    for asked in ["State", "game::State", "rsplug::game::State"] {
        let layout = read(&bytes, 44, Some(asked));
        assert_eq!(
            layout.source,
            Source::Dwarf {
                type_name: "struct rsplug::game::State".into(),
                chosen_by: "--state-type".into()
            }
        );
        let names: Vec<&str> = layout.fields.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["score", "speed", "grid", "mode", "target"]);
        // An enum with data is its bytes, discriminant included.
        assert_eq!(
            layout.field("target").map(|f| f.dims.clone()),
            Some(vec![8])
        );
        assert_eq!(
            layout.field("grid").map(|f| f.dims.clone()),
            Some(vec![2, 3])
        );
        match &layout.field("mode").expect("mode").shown {
            Shown::Enum(e) => assert_eq!(e[1].name, "Run"),
            other => panic!("{other:?}"),
        }
    }
    // The only 44-byte struct the crate wrote; the standard library's are
    // never candidates.
    let by_size = read(&bytes, 44, None);
    assert_eq!(
        by_size.source,
        Source::Dwarf {
            type_name: "struct rsplug::game::State".into(),
            chosen_by: "its size (the only 44-byte struct)".into()
        }
    );
}

#[test]
fn state_t_matches_offsetof_dwarf5() {
    check_state(&["-g"]);
    check_state(&["-gdwarf-5"]);
}

#[test]
fn state_t_matches_offsetof_dwarf4() {
    check_state(&["-gdwarf-4"]);
}

#[test]
fn type_units_are_followed() {
    // Types in .debug_types (DWARF 4) or in type units (DWARF 5),
    // referred to by signature.
    check_state(&["-gdwarf-4", "-fdebug-types-section"]);
    check_state(&["-gdwarf-5", "-fdebug-types-section"]);
}

#[test]
fn optimised_builds_read_the_same() {
    check_state(&["-g", "-O2"]);
}

const NAMED: &str = r#"
typedef struct game { int level; float hp; } game_t;
struct other { double a; };
typedef struct other other_t;
game_t *g; other_t *o;
"#;

#[test]
fn state_type_by_typedef_and_by_tag() {
    for flags in [&["-g"][..], &["-gdwarf-4"]] {
        let bytes = lib(NAMED, flags);
        for (asked, name) in [
            ("game_t", "game_t"),
            ("game", "struct game"),
            ("struct game", "struct game"),
        ] {
            let layout = read(&bytes, 8, Some(asked));
            assert_eq!(
                layout.source,
                Source::Dwarf {
                    type_name: name.into(),
                    chosen_by: "--state-type".into()
                }
            );
            assert_eq!(
                shape(&layout),
                [
                    ("level".into(), 0, int(true, 4), 1),
                    ("hp".into(), 4, Scalar::Float { bytes: 4 }, 1)
                ]
            );
        }
        let other = read(&bytes, 8, Some("other"));
        assert_eq!(other.fields[0].scalar, Scalar::Float { bytes: 8 });
    }
}

#[test]
fn chosen_by_size_without_state_t() {
    let bytes_one = lib(
        "typedef struct game { int level; float hp; } game_t;\n\
         struct other { double a, b; };\ngame_t *g; struct other *o;\n",
        &["-g"],
    );
    let layout = read(&bytes_one, 8, None);
    assert_eq!(
        layout.source,
        Source::Dwarf {
            type_name: "game_t".into(),
            chosen_by: "its size (the only 8-byte struct)".into()
        }
    );
    let other = read(&bytes_one, 16, None);
    assert_eq!(
        other.source,
        Source::Dwarf {
            type_name: "struct other".into(),
            chosen_by: "its size (the only 16-byte struct)".into()
        }
    );
    // In NAMED, game_t and other_t are both 8 bytes.
    let bytes = lib(NAMED, &["-g"]);
    let err = read_layout(&bytes, 8, None).expect_err("ambiguous");
    assert!(
        err.contains("2 structs") && err.contains("game_t") && err.contains("other_t"),
        "{err}"
    );
}

#[test]
fn hotreload_types_are_not_chosen_by_size() {
    let source = r#"
#include <stddef.h>
typedef struct { int api_version; size_t state_size; void (*init)(void*);
             void (*tick)(void*, double); void (*shutdown)(void*); } logic_api_t;
typedef struct { double a[5]; } world_t;
static world_t *w;
logic_api_t api = { 1, sizeof(world_t), 0, 0, 0 };
void *use(void) { return &w; }
"#;
    let bytes = lib(source, &["-g"]);
    let layout = read(&bytes, 40, None);
    assert_eq!(
        layout.source,
        Source::Dwarf {
            type_name: "world_t".into(),
            chosen_by: "its size (the only 40-byte struct)".into()
        }
    );
}

#[test]
fn names_not_found_say_what_exists() {
    let bytes = lib(NAMED, &["-g"]);
    let err = read_layout(&bytes, 8, Some("foo_t")).expect_err("no foo_t");
    assert!(
        err.contains("no type named foo_t") && err.contains("structs of 8 bytes: game_t, other_t"),
        "{err}"
    );
    let err = read_layout(&bytes, 12, Some("foo_t")).expect_err("no foo_t");
    assert!(
        err.contains("no struct is 12 bytes") && err.contains("game_t (8 bytes)"),
        "{err}"
    );
    let err = read_layout(&bytes, 12, None).expect_err("nothing of 12 bytes");
    assert!(
        err.contains("no type named state_t") && err.contains("--state-type"),
        "{err}"
    );
}

#[test]
fn size_mismatch_says_both() {
    let bytes = lib(NAMED, &["-g"]);
    let err = read_layout(&bytes, 12, Some("game_t")).expect_err("8 != 12");
    assert!(
        err.contains("game_t") && err.contains("8 bytes") && err.contains("state_size is 12"),
        "{err}"
    );
}

#[test]
fn no_debug_info_is_none() {
    let bytes = lib(NAMED, &[]);
    assert_eq!(read_layout(&bytes, 8, None), Ok(None));
    assert_eq!(read_layout(&bytes, 8, Some("game_t")), Ok(None));
}

#[test]
fn odd_members_follow_the_rules() {
    let source = r#"
#include <complex.h>
typedef int row_t[3];
struct cell { char c; };
typedef struct {
int a;
unsigned f1 : 3, f2 : 5;          /* bitfields: skipped */
struct { int ax; int ay; };       /* anonymous struct: no prefix */
union { int ui; float uf; };      /* anonymous union: bytes, named by members */
union { int i; double d; } u;     /* union: bytes */
long double ld;                   /* no Scalar: skipped */
float complex fc;                 /* two floats */
double complex dcs[2];            /* four doubles */
int zero[0];                      /* no bytes */
row_t rows[2];                    /* array of typedef'd arrays: one count */
struct cell cells[2][2];          /* per element, C's indices */
union { short s; char b[3]; } us[2];
int tail[];                       /* flexible: no bytes */
} state_t;
state_t *s;
"#;
    let dir = tempfile::tempdir().expect("tempdir");
    let u8s = int(false, 1);
    // (field, C member expression, scalar, count)
    let want = [
        ("a", "a", int(true, 4), 1),
        ("ax", "ax", int(true, 4), 1),
        ("ay", "ay", int(true, 4), 1),
        ("ui|uf", "ui", u8s, 4),
        ("u", "u", u8s, 8),
        ("fc", "fc", Scalar::Float { bytes: 4 }, 2),
        ("dcs", "dcs", Scalar::Float { bytes: 8 }, 4),
        ("rows", "rows", int(true, 4), 6),
        ("cells[0][0].c", "cells[0][0].c", int(true, 1), 1),
        ("cells[0][1].c", "cells[0][1].c", int(true, 1), 1),
        ("cells[1][0].c", "cells[1][0].c", int(true, 1), 1),
        ("cells[1][1].c", "cells[1][1].c", int(true, 1), 1),
        ("us", "us", u8s, 8),
    ];
    let members: Vec<(&str, &str)> = want.iter().map(|w| (w.0, w.1)).collect();
    let (expected, size) = compiler_offsets(dir.path(), source, &members);
    for flags in [&["-g"][..], &["-gdwarf-4"]] {
        let bytes = build(dir.path(), "odd", source, flags);
        let layout = read(&bytes, size, None);
        assert_offsets(&layout, &expected, &format!("{flags:?}"));
        let (_, skipped) = read_layout_noting(&bytes, size, None)
            .expect("found")
            .expect("debug info");
        assert_eq!(
            skipped,
            ["f1 (a bitfield)", "f2 (a bitfield)", "ld (long double)"],
            "{flags:?}"
        );
        for (name, _, scalar, count) in want {
            let field = layout.field(name).expect(name);
            assert_eq!(
                (field.scalar, field.count),
                (scalar, count),
                "{name} {flags:?}"
            );
        }
    }
}

#[test]
fn a_state_that_is_not_a_struct_is_one_field() {
    let bytes = lib("typedef double state_t[4];\nstate_t *s;\n", &["-g"]);
    let layout = read(&bytes, 32, None);
    assert_eq!(
        shape(&layout),
        [("state_t".into(), 0, Scalar::Float { bytes: 8 }, 4)]
    );
}

#[test]
fn large_struct_arrays_are_flattened_up_to_the_cap() {
    let thousand = lib(
        "typedef struct { struct { int hp; float x; } enemies[1000]; } state_t;\nstate_t *s;\n",
        &["-g"],
    );
    let layout = read(&thousand, 8000, None);
    assert_eq!(layout.fields.len(), 2000);
    assert_eq!(layout.field("enemies[999].x").map(|f| f.offset), Some(7996));
    let too_many = lib(
        "typedef struct { struct { char c; } many[70000]; } state_t;\nstate_t *s;\n",
        &["-g"],
    );
    let err = read_layout(&too_many, 70000, None).expect_err("past the cap");
    assert!(
        err.contains("more than 65536 fields") && err.contains("many"),
        "{err}"
    );
}

#[test]
fn split_and_compressed_debug_info_are_clear_errors() {
    for flags in [
        &["-g", "-gsplit-dwarf"][..],
        &["-gdwarf-4", "-gsplit-dwarf"],
    ] {
        let bytes = lib(NAMED, flags);
        let err = read_layout(&bytes, 8, None).expect_err("split");
        assert!(
            err.contains("-gsplit-dwarf") && err.contains(".dwo"),
            "{err}"
        );
        let err = read_layout(&bytes, 8, Some("game_t")).expect_err("split");
        assert!(err.contains("-gsplit-dwarf"), "{err}");
    }
    let bytes = lib(NAMED, &["-g", "-gz"]);
    let err = read_layout(&bytes, 8, None).expect_err("compressed");
    assert!(err.contains("-gz"), "{err}");
}

#[test]
fn units_that_share_a_type_count_it_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let header = "typedef struct game { int level; float hp; } game_t;\n";
    let a = format!("{header}game_t *a;\n");
    // b.c sees the same struct by its tag only: still one candidate.
    let b = format!("{header}struct game *b;\n");
    // c.c only declares it, and names that declaration state_t.
    let c = "typedef struct game state_t;\nstate_t *c;\n";
    for flags in [&["-g"][..], &["-gdwarf-4"]] {
        let by_size = build_units(dir.path(), "two", &[("b", &b), ("a", &a)], flags);
        let layout = read(&by_size, 8, None);
        assert_eq!(
            layout.source,
            Source::Dwarf {
                type_name: "game_t".into(),
                chosen_by: "its size (the only 8-byte struct)".into()
            }
        );
        let declared = build_units(dir.path(), "three", &[("c", c), ("a", &a)], flags);
        let layout = read(&declared, 8, None);
        assert_eq!(
            layout.source,
            Source::Dwarf {
                type_name: "state_t".into(),
                chosen_by: "the name state_t".into()
            }
        );
        assert_eq!(
            shape(&layout),
            [
                ("level".into(), 0, int(true, 4), 1),
                ("hp".into(), 4, Scalar::Float { bytes: 4 }, 1)
            ]
        );
        let opaque = build_units(dir.path(), "opaque", &[("c", c)], flags);
        let err = read_layout(&opaque, 8, None).expect_err("never defined");
        assert!(err.contains("only declared"), "{err}");
    }
}

fn hand_made(dies: Vec<Die>) -> Types {
    let mut types = Types::default();
    for (index, die) in dies.into_iter().enumerate() {
        types.by_key.insert(
            Key {
                types_section: false,
                offset: index,
            },
            index,
        );
        types.dies.push(die);
    }
    types
}

fn to(index: usize) -> Option<TypeRef> {
    Some(TypeRef::Die(Key {
        types_section: false,
        offset: index,
    }))
}

fn member(name: &str, ty: usize, at: u64) -> Die {
    Die {
        name: Some(name.into()),
        ty: to(ty),
        location: Location::Offset(at),
        ..Die::new(gimli::DW_TAG_member)
    }
}

#[test]
fn hostile_debug_info_is_refused_quickly() {
    let named = |tag, name: &str, ty| Die {
        name: Some(name.into()),
        file_scope: true,
        ty,
        ..Die::new(tag)
    };
    // Typedefs in a cycle.
    let cycle = hand_made(vec![
        named(gimli::DW_TAG_typedef, "state_t", to(1)),
        named(gimli::DW_TAG_typedef, "b_t", to(0)),
    ]);
    let (index, name, by) = cycle.choose(8, None).expect("state_t is there");
    let err = cycle.layout(index, name, by, 8).expect_err("a cycle");
    assert!(err.contains("cycle"), "{err}");
    // A struct that holds itself.
    let mut itself = named(gimli::DW_TAG_structure_type, "state_t", None);
    itself.byte_size = Some(8);
    itself.children = vec![1];
    let types = hand_made(vec![itself, member("again", 0, 0)]);
    let err = types
        .layout(0, "state_t".into(), "test".into(), 8)
        .expect_err("a cycle");
    assert!(err.contains("deep"), "{err}");
    // Two members of the next struct at each of 60 levels, all long
    // doubles at the bottom: 2^60 members and not one field.
    let mut dies = Vec::new();
    let levels = 60;
    for level in 0..levels {
        let base = dies.len();
        let mut s = Die::new(gimli::DW_TAG_structure_type);
        s.byte_size = Some(16);
        s.children = vec![base + 1, base + 2];
        dies.push(s);
        dies.push(member("a", base + 3, 0));
        dies.push(member("b", base + 3, 0));
        if level == levels - 1 {
            let mut ld = Die::new(gimli::DW_TAG_base_type);
            ld.encoding = Some(gimli::DW_ATE_float);
            ld.byte_size = Some(16);
            dies.push(ld);
        }
    }
    let types = hand_made(dies);
    let started = std::time::Instant::now();
    let err = types
        .layout(0, "state_t".into(), "test".into(), 16)
        .expect_err("too many");
    assert!(err.contains("members in all"), "{err}");
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    // An array of 2^62 structs claimed to fit in 16 bytes.
    let mut s = Die::new(gimli::DW_TAG_structure_type);
    s.byte_size = Some(16);
    s.children = vec![1];
    let mut array = Die::new(gimli::DW_TAG_array_type);
    array.ty = to(3);
    array.children = vec![2];
    let mut range = Die::new(gimli::DW_TAG_subrange_type);
    range.count = Some(Bound::Const(1 << 62));
    let mut inner = Die::new(gimli::DW_TAG_structure_type);
    inner.byte_size = Some(0);
    let types = hand_made(vec![s, member("many", 4, 0), range, inner, array]);
    let err = types
        .layout(0, "state_t".into(), "test".into(), 16)
        .expect_err("too many");
    assert!(err.contains("65536"), "{err}");
    // A reference to nothing.
    let mut s = Die::new(gimli::DW_TAG_structure_type);
    s.byte_size = Some(4);
    s.children = vec![1];
    let types = hand_made(vec![s, member("x", 99, 0)]);
    let err = types
        .layout(0, "state_t".into(), "test".into(), 4)
        .expect_err("dangling");
    assert!(err.contains("malformed"), "{err}");
    // A member past the end.
    let mut s = Die::new(gimli::DW_TAG_structure_type);
    s.byte_size = Some(4);
    s.children = vec![1];
    let mut i32s = Die::new(gimli::DW_TAG_base_type);
    i32s.encoding = Some(gimli::DW_ATE_signed);
    i32s.byte_size = Some(4);
    let types = hand_made(vec![s, member("x", 2, u64::MAX - 1), i32s]);
    let err = types
        .layout(0, "state_t".into(), "test".into(), 4)
        .expect_err("past the end");
    assert!(err.contains("does not fit"), "{err}");
}

#[test]
fn malformed_bytes_are_errors_not_panics() {
    assert!(read_layout(b"", 4, None).is_err());
    assert!(read_layout(b"not an elf at all", 4, None).is_err());
    assert!(read_layout(&[0x7f, b'E', b'L', b'F', 2, 1, 1], 4, None).is_err());
    let dir = tempfile::tempdir().expect("tempdir");
    let (_, size) = compiler_offsets(dir.path(), STATE, &[]);
    let bytes = build(dir.path(), "state", STATE, &["-g"]);
    assert!(read_layout(&bytes, size, None).is_ok_and(|l| l.is_some()));
    // Truncated anywhere: the section headers are at the end.
    for len in (0..bytes.len()).step_by(97) {
        assert!(read_layout(&bytes[..len], 4, None).is_err(), "{len}");
    }
    // Garbage inside the debug info: any answer but a panic, and a
    // layout that is returned must still validate.
    let file = object::File::parse(&*bytes).expect("parse");
    let range = file
        .section_by_name(".debug_info")
        .and_then(|s| s.file_range())
        .expect(".debug_info");
    let (start, len) = (range.0 as usize, range.1 as usize);
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for round in 0..400 {
        let mut corrupt = bytes.clone();
        for _ in 0..(1 + round % 8) {
            let at = start + (next() as usize) % len;
            corrupt[at] = next() as u8;
        }
        for size in [0, 8, size] {
            if let Ok(Some(layout)) = read_layout(&corrupt, size, None) {
                layout.validate().expect("a returned layout validates");
            }
            let _ = read_layout(&corrupt, size, Some("struct item"));
        }
    }
    for section in [".debug_abbrev", ".debug_str", ".debug_line_str"] {
        let Some((start, len)) = file.section_by_name(section).and_then(|s| s.file_range()) else {
            continue;
        };
        for round in 0..100 {
            let mut corrupt = bytes.clone();
            for i in 0..(1 + round % 4) {
                let at = start as usize + (next() as usize + i) % len as usize;
                corrupt[at] = next() as u8;
            }
            let _ = read_layout(&corrupt, 8, None);
        }
    }
}
