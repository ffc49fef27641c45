//! The state's layout from the plugin's own debug info (`cc -g`, `rustc -g`).
//!
//! A plugin built with `-g` already says, in its DWARF, what every byte of
//! its state is; reading it costs the author nothing, where a schema has to
//! be written and kept in step by hand. This module finds the state's type
//! in a shared object's `.debug_info` (and `.debug_types`) and flattens it
//! into a [`Layout`]. Reading the entries is `read`, finding the state's
//! type among them `choose`, turning it into fields `flatten`.
//!
//! Finding the type. `--state-type NAME` wins (a typedef name first, then a
//! struct/union/enum tag; `struct NAME` asks for the tag only), because only
//! the user knows when the conventions are wrong. Types inside namespaces
//! (Rust modules, C++ namespaces) count as file-scope types and are known
//! by their path: `--state-type State` matches by the plain name, and
//! `--state-type game::State` or `rsplug::game::State` by the path (its
//! last segments); two different types the name matches are an error that
//! names both. Otherwise a type named `state_t` (the name every example and
//! the header's comments use), and failing that the one named struct whose
//! size is the plugin's `state_size`: the size is the one thing the ABI
//! guarantees about the state, so a unique match is very likely right, and
//! two matches are an error rather than a guess. The types of `hotreload.h`
//! (`logic_api_t`, `hotreload_*`), those of the Rust standard library's
//! crates and compiler-made ones (closures, `{impl#0}`) are never chosen by
//! size: every plugin has them. Only file-scope types count; a type local
//! to a function is not a state. The same type appears once per compilation
//! unit that uses it; the first definition is used and the others are taken
//! to be the same (C gives no way to tell a different same-named type apart
//! from debug info alone).
//!
//! What becomes a field, and why the odd cases go the way they do:
//! - Scalars map one to one; enums are integers of their size, unsigned
//!   only when the DWARF says so (gcc does for enums without negative
//!   values), as that is how the bytes compare and widen. Their
//!   enumerators come along for the display (`mode=RUN`); a migration
//!   carries the integer.
//! - `float _Complex`/`double _Complex` are two floats/doubles (C defines
//!   them as such an array), so they keep their values across versions.
//! - Unions become `uint8 × size` named after the member: which member is
//!   live is not in the bytes, so only the bytes can be kept faithfully. An
//!   anonymous union is named after its members, `i|f`. So does a Rust enum
//!   with data (`Option<u32>`, a struct with a `DW_TAG_variant_part`): its
//!   discriminant is among the bytes, so they are its value.
//! - Anonymous struct members are flattened without a prefix, as C code
//!   names them (`s->x`, not `s->.x`).
//! - Arrays of scalars (and of unions, enums, pointers) stay one field
//!   with one dimension per `DW_TAG_subrange_type` (and per nested array
//!   type: `row_t rows[2]` with `typedef int row_t[3]` is `[2][3]`), so
//!   that a migration can copy them index by index. An array of plain
//!   `char` is shown as a string (`signed char`, `unsigned char`,
//!   `int8_t`, `uint8_t` and Rust's `u8` stay numbers). Arrays of structs
//!   are flattened per element with C's indices (`cells[1][2].hp`) so that
//!   a migration can match elements by name.
//! - Skipped, with no field: bitfields (a field cannot describe bits), and
//!   scalars no [`Scalar`](super::Scalar) describes (`long double`, `__int128`,
//!   `_Float16`, decimal floats, 4-byte pointers). Their bytes are in no
//!   field, so a migration that changes the layout does not carry them
//!   over; a layout without them is still right about every other byte.
//!   Zero-length and flexible array members have no bytes and no field.
//! - A state type that is not a struct (`typedef double state_t[4]`) is
//!   one field named after the type, so that it still shows and migrates.
//! - There is no per-array cap: a game state of 1,000 entities is
//!   ordinary, and refusing it would leave most real states without a
//!   layout. Instead the whole layout is capped at 65,536 fields (and
//!   262,144 members visited, fields or not), which bounds the time and
//!   memory an absurd or hostile debug info can cost; past it the layout is
//!   refused with the reason. An enum's first 4,096 enumerators are kept.
//!
//! Limits: member offsets are read as constants or the simple
//! `DW_OP_plus_uconst N` / `DW_OP_constu N; DW_OP_plus` expressions (all
//! that C compilers emit); anything else is an error naming the member.
//! Type units (`-fdebug-types-section`, DWARF 4 and 5) are followed by
//! signature. Split DWARF (`-gsplit-dwarf`), compressed sections (`-gz`)
//! and supplementary files (`dwz`) are not read: each is an error saying
//! so, since the library does have debug info (as is a library whose debug
//! info has no types, `-g1`); only a library without any `.debug_info` is
//! `Ok(None)`. Malformed debug info is an error, never a panic: every
//! count, offset and reference from the file is checked, and nesting and
//! typedef chains are cut at 64 levels, which C never reaches and a cycle
//! always does.

use std::collections::HashMap;

use gimli::{DwAte, DwTag, EndianSlice, RunTimeEndian};

use super::Layout;

mod choose;
mod flatten;
mod read;

/// The state type's conventional name.
const CONVENTIONAL_NAME: &str = "state_t";

/// At most this many fields in a layout.
const MAX_FIELDS: usize = 65_536;

/// At most this many members visited in all (fields, and members that
/// give none), so that no debug info can make the reading take long.
const MAX_VISITS: usize = 4 * MAX_FIELDS;

/// At most this many nested structs/arrays, or typedefs and qualifiers in a
/// row; C code never comes near it, a cycle in malformed DWARF always does.
const MAX_DEPTH: usize = 64;

/// At most this many enumerators of one enum are kept for the display.
const MAX_ENUMERATORS: usize = 4096;

/// Reads the layout of the state type from `library` (the bytes of an ELF shared object).
/// `type_name`: `--state-type NAME` if given. Otherwise by convention: a type named `state_t`
/// (typedef or struct tag), else the one struct whose size equals `state_size`.
/// Ok(None) when the library has no debug info at all; Err(why) when it has debug info but
/// the type cannot be found or used (say what was looked for and what was found, e.g.
/// "no type named foo_t; structs of 16 bytes: a_t, b_t").
pub fn read_layout(
    library: &[u8],
    state_size: usize,
    type_name: Option<&str>,
) -> Result<Option<Layout>, String> {
    read_layout_noting(library, state_size, type_name).map(|found| found.map(|(l, _)| l))
}

/// [`read_layout`], with the members that have bytes but no field
/// (`flags (a bitfield)`, `ld (long double)`), once per pattern of element
/// indices: their bytes are not carried when the layout changes.
pub fn read_layout_noting(
    library: &[u8],
    state_size: usize,
    type_name: Option<&str>,
) -> Result<Option<(Layout, Vec<String>)>, String> {
    let Some(types) = Types::read(library)? else {
        return Ok(None);
    };
    let (chosen, name, chosen_by) = types.choose(state_size, type_name)?;
    types
        .layout_noting(chosen, name, chosen_by, state_size)
        .map(Some)
}

type Slice<'a> = EndianSlice<'a, RunTimeEndian>;

/// Where a DIE is: its section and offset in it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct Key {
    types_section: bool,
    offset: usize,
}

/// A `DW_AT_type` (or `DW_AT_signature`) reference.
#[derive(Clone, Copy, Debug)]
enum TypeRef {
    Die(Key),
    Signature(u64),
    /// Into a supplementary file, or an offset that does not fit.
    Elsewhere,
}

/// An array bound: a constant, or computed at run time (a VLA).
#[derive(Clone, Copy, Debug)]
enum Bound {
    Const(i128),
    Dynamic,
}

/// `DW_AT_data_member_location`.
#[derive(Clone, Debug)]
enum Location {
    Absent,
    Offset(u64),
    Unsupported(&'static str),
}

/// An enumerator's `DW_AT_const_value`: a fixed-size constant means
/// nothing about its sign until the enum's type says.
#[derive(Clone, Copy, Debug)]
enum Constant {
    Signed(i64),
    Unsigned(u64),
    Data { value: u64, bytes: u8 },
}

impl Constant {
    fn value(self, signed: bool) -> i128 {
        match self {
            Constant::Signed(v) => v.into(),
            Constant::Unsigned(v) => v.into(),
            Constant::Data { value, bytes } if signed && bytes < 8 => {
                let shift = 64 - 8 * u32::from(bytes);
                (((value << shift) as i64) >> shift).into()
            }
            Constant::Data { value, bytes: 8 } if signed => (value as i64).into(),
            Constant::Data { value, .. } => value.into(),
        }
    }
}

/// What is kept of one DIE: the attributes a layout needs.
#[derive(Debug)]
struct Die {
    tag: DwTag,
    name: Option<String>,
    /// A child of the unit's root, or of namespaces only: a type code can
    /// name anywhere (by its path).
    file_scope: bool,
    /// The namespaces it is declared in, outermost first (`rsplug::game`).
    scope: Option<String>,
    declaration: bool,
    byte_size: Option<u64>,
    ty: Option<TypeRef>,
    signature: Option<u64>,
    encoding: Option<DwAte>,
    location: Location,
    data_bit_offset: Option<u64>,
    bitfield: bool,
    count: Option<Bound>,
    upper: Option<Bound>,
    lower: Option<Bound>,
    stride: Option<u64>,
    constant: Option<Constant>,
    children: Vec<usize>,
}

impl Die {
    fn new(tag: DwTag) -> Die {
        Die {
            tag,
            name: None,
            file_scope: false,
            scope: None,
            declaration: false,
            byte_size: None,
            ty: None,
            signature: None,
            encoding: None,
            location: Location::Absent,
            data_bit_offset: None,
            bitfield: false,
            count: None,
            upper: None,
            lower: None,
            stride: None,
            constant: None,
            children: Vec::new(),
        }
    }

    /// Its name with the namespaces it is in: `rsplug::game::State`, or the
    /// plain name outside any.
    fn path(&self) -> Option<String> {
        let name = self.name.as_deref()?;
        Some(match &self.scope {
            Some(scope) => format!("{scope}::{name}"),
            None => name.to_owned(),
        })
    }
}

/// The DIEs a layout can need, from every unit of the library.
#[derive(Default)]
struct Types {
    dies: Vec<Die>,
    by_key: HashMap<Key, usize>,
    by_signature: HashMap<u64, Key>,
    /// File-scope struct/union/enum definitions by tag and path (the first
    /// of each), to complete a declaration.
    definitions: HashMap<(DwTag, String), usize>,
    /// Set when a unit is a split-DWARF skeleton: the `.dwo` it names.
    split: Option<String>,
}

/// The tags kept: types, and what types are made of.
const KEPT: &[DwTag] = &[
    gimli::DW_TAG_base_type,
    gimli::DW_TAG_typedef,
    gimli::DW_TAG_structure_type,
    gimli::DW_TAG_class_type,
    gimli::DW_TAG_union_type,
    gimli::DW_TAG_enumeration_type,
    gimli::DW_TAG_pointer_type,
    gimli::DW_TAG_reference_type,
    gimli::DW_TAG_rvalue_reference_type,
    gimli::DW_TAG_ptr_to_member_type,
    gimli::DW_TAG_array_type,
    gimli::DW_TAG_subrange_type,
    gimli::DW_TAG_member,
    gimli::DW_TAG_inheritance,
    gimli::DW_TAG_unspecified_type,
    gimli::DW_TAG_subroutine_type,
    gimli::DW_TAG_const_type,
    gimli::DW_TAG_volatile_type,
    gimli::DW_TAG_restrict_type,
    gimli::DW_TAG_atomic_type,
    gimli::DW_TAG_immutable_type,
    gimli::DW_TAG_packed_type,
    gimli::DW_TAG_shared_type,
    gimli::DW_TAG_enumerator,
    gimli::DW_TAG_variant_part,
];

/// Tags that name or qualify another type without changing its bytes.
const TRANSPARENT: &[DwTag] = &[
    gimli::DW_TAG_typedef,
    gimli::DW_TAG_const_type,
    gimli::DW_TAG_volatile_type,
    gimli::DW_TAG_restrict_type,
    gimli::DW_TAG_atomic_type,
    gimli::DW_TAG_immutable_type,
    gimli::DW_TAG_packed_type,
    gimli::DW_TAG_shared_type,
];

fn is_struct(tag: DwTag) -> bool {
    tag == gimli::DW_TAG_structure_type || tag == gimli::DW_TAG_class_type
}

fn is_aggregate(tag: DwTag) -> bool {
    is_struct(tag) || tag == gimli::DW_TAG_union_type || tag == gimli::DW_TAG_enumeration_type
}

fn malformed(e: gimli::Error) -> String {
    format!("malformed debug info: {e}")
}

/// Types every plugin has, which are never the state by size: those of
/// `hotreload.h`, of the Rust standard library's crates, and the ones a
/// compiler makes (`{closure_env#0}`, `{impl#0}`, `<T as Trait>`).
fn never_by_size(name: &str) -> bool {
    let bare = ["struct ", "class "]
        .iter()
        .find_map(|kind| name.strip_prefix(kind))
        .unwrap_or(name);
    bare.starts_with("logic_api")
        || bare.starts_with("hotreload_")
        || crate::toolchain::rust_runtime_path(bare)
        || bare
            .split("::")
            .any(|s| s.starts_with(['{', '<', '(', '[', '&', '*']))
}

impl Types {
    fn die(&self, index: usize) -> Result<&Die, String> {
        self.dies
            .get(index)
            .ok_or_else(|| "internal error: a type index out of range".to_string())
    }

    /// The DIE a reference points to.
    fn target(&self, r: TypeRef, what: &str) -> Result<usize, String> {
        let found = match r {
            TypeRef::Die(key) => self.by_key.get(&key),
            TypeRef::Signature(s) => self.by_signature.get(&s).and_then(|k| self.by_key.get(k)),
            TypeRef::Elsewhere => {
                return Err(format!(
                    "the type of {what} is in another file (a dwz supplementary or .dwo file), \
                     which is not read"
                ));
            }
        };
        found.copied().ok_or_else(|| {
            format!(
                "malformed debug info: the type of {what} refers to an entry that is not a type"
            )
        })
    }

    /// `index` without typedefs and qualifiers, a declaration replaced by
    /// its definition.
    fn strip(&self, mut index: usize, what: &str) -> Result<usize, String> {
        for _ in 0..MAX_DEPTH {
            let die = self.die(index)?;
            if TRANSPARENT.contains(&die.tag) {
                let Some(ty) = die.ty else {
                    return Err(format!("{what} is void"));
                };
                index = self.target(ty, what)?;
                continue;
            }
            if let Some(signature) = die.signature {
                index = self.target(TypeRef::Signature(signature), what)?;
                continue;
            }
            if die.declaration {
                let definition = die
                    .path()
                    .and_then(|path| self.definitions.get(&(die.tag, path)));
                match definition {
                    Some(&d) if d != index => {
                        index = d;
                        continue;
                    }
                    _ => {
                        return Err(format!(
                            "{what} is {}, which is only declared in the debug info, never defined",
                            self.describe(index)
                        ));
                    }
                }
            }
            return Ok(index);
        }
        Err(format!(
            "the type of {what} is a chain of more than {MAX_DEPTH} typedefs (a cycle in \
             malformed debug info?)"
        ))
    }

    /// `struct foo`, `foo_t`, `int`, `an anonymous struct`: for messages.
    fn describe(&self, index: usize) -> String {
        let Some(die) = self.dies.get(index) else {
            return "an unknown type".into();
        };
        let kind = match die.tag {
            gimli::DW_TAG_structure_type => "struct",
            gimli::DW_TAG_class_type => "class",
            gimli::DW_TAG_union_type => "union",
            gimli::DW_TAG_enumeration_type => "enum",
            gimli::DW_TAG_array_type => return "an array".into(),
            gimli::DW_TAG_pointer_type => return "a pointer".into(),
            _ => "",
        };
        match (die.path(), kind) {
            (Some(name), "") => name,
            (Some(name), kind) => format!("{kind} {name}"),
            (None, "") => "an unnamed type".into(),
            (None, kind) => format!("an anonymous {kind}"),
        }
    }
}

#[cfg(test)]
mod tests;
