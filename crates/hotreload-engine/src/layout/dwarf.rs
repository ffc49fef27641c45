//! The state's layout from the plugin's own debug info (`cc -g`).
//!
//! A plugin built with `-g` already says, in its DWARF, what every byte of
//! its state is; reading it costs the author nothing, where a schema has to
//! be written and kept in step by hand. This module finds the state's type
//! in a shared object's `.debug_info` (and `.debug_types`) and flattens it
//! into a [`Layout`].
//!
//! Finding the type. `--state-type NAME` wins (a typedef name first, then a
//! struct/union/enum tag; `struct NAME` asks for the tag only), because only
//! the user knows when the conventions are wrong. Otherwise a type named
//! `state_t` (the name every example and the header's comments use), and
//! failing that the one named struct whose size is the plugin's
//! `state_size`: the size is the one thing the ABI guarantees about the
//! state, so a unique match is very likely right, and two matches are an
//! error rather than a guess. The types of `hotreload.h` (`logic_api_t`,
//! `hotreload_*`) are never chosen by size: every plugin has them. Only
//! file-scope types count; a type local to a function is not a state.
//! The same type appears once per compilation unit that uses it; the first
//! definition is used and the others are taken to be the same (C gives no
//! way to tell a different same-named type apart from debug info alone).
//!
//! What becomes a field, and why the odd cases go the way they do:
//! - Scalars map one to one; enums are integers of their size, unsigned
//!   only when the DWARF says so (gcc does for enums without negative
//!   values), as that is how the bytes compare and widen.
//! - `float _Complex`/`double _Complex` are two floats/doubles (C defines
//!   them as such an array), so they keep their values across versions.
//! - Unions become `uint8 × size` named after the member: which member is
//!   live is not in the bytes, so only the bytes can be kept faithfully. An
//!   anonymous union is named after its members, `i|f`.
//! - Anonymous struct members are flattened without a prefix, as C code
//!   names them (`s->x`, not `s->.x`).
//! - Arrays of scalars (and of unions, enums, pointers) stay one field; a
//!   multi-dimensional one becomes one count. Arrays of structs are
//!   flattened per element with C's indices (`cells[1][2].hp`) so that a
//!   migration can match elements by name.
//! - Skipped, with no field: bitfields (a field cannot describe bits), and
//!   scalars no [`Scalar`] describes (`long double`, `__int128`,
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
//!   refused with the reason.
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

use std::borrow::Cow;
use std::collections::HashMap;

use gimli::{
    AttributeValue, DwAte, DwTag, EndianSlice, Operation, RunTimeEndian, SectionId, UnitType,
};
use object::{CompressionFormat, Object, ObjectSection};

use super::{Field, Layout, Scalar, Source};

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
    let Some(types) = Types::read(library)? else {
        return Ok(None);
    };
    let (chosen, name, chosen_by) = types.choose(state_size, type_name)?;
    types.layout(chosen, name, chosen_by, state_size).map(Some)
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

/// What is kept of one DIE: the attributes a layout needs.
#[derive(Debug)]
struct Die {
    tag: DwTag,
    name: Option<String>,
    /// A child of the unit's root: a type C code can name anywhere.
    file_scope: bool,
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
    children: Vec<usize>,
}

impl Die {
    fn new(tag: DwTag) -> Die {
        Die {
            tag,
            name: None,
            file_scope: false,
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
            children: Vec::new(),
        }
    }
}

/// The DIEs a layout can need, from every unit of the library.
#[derive(Default)]
struct Types {
    dies: Vec<Die>,
    by_key: HashMap<Key, usize>,
    by_signature: HashMap<u64, Key>,
    /// File-scope struct/union/enum definitions by tag and name (the first
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

/// How the types of `hotreload.h` are named; never the state by size.
fn is_abi_type(name: &str) -> bool {
    let bare = name.strip_prefix("struct ").unwrap_or(name);
    bare.starts_with("logic_api") || bare.starts_with("hotreload_")
}

fn section_data<'a>(file: &object::File<'a>, id: SectionId) -> Result<Cow<'a, [u8]>, String> {
    let Some(section) = file.section_by_name(id.name()) else {
        return Ok(Cow::Borrowed(&[]));
    };
    if section
        .compressed_file_range()
        .is_ok_and(|range| range.format != CompressionFormat::None)
    {
        return Err(format!(
            "the debug info is compressed ({} built with -gz), which this reader does not \
             decompress; build without -gz",
            id.name()
        ));
    }
    section
        .uncompressed_data()
        .map_err(|e| format!("cannot read the library's {}: {e}", id.name()))
}

/// A constant array bound in any of its forms.
fn bound(value: AttributeValue<Slice>) -> Bound {
    match value {
        AttributeValue::Data1(v) => Bound::Const(v.into()),
        AttributeValue::Data2(v) => Bound::Const(v.into()),
        AttributeValue::Data4(v) => Bound::Const(v.into()),
        // All ones in 8 bytes is how -1 (an empty array) is written.
        AttributeValue::Data8(v) => Bound::Const((v as i64).into()),
        AttributeValue::Sdata(v) => Bound::Const(v.into()),
        AttributeValue::Udata(v) => Bound::Const(v.into()),
        _ => Bound::Dynamic,
    }
}

fn member_location(value: AttributeValue<Slice>, encoding: gimli::Encoding) -> Location {
    if let Some(offset) = value.udata_value() {
        return Location::Offset(offset);
    }
    let AttributeValue::Exprloc(expression) = value else {
        return Location::Unsupported("neither a constant nor an expression");
    };
    let mut ops = Vec::new();
    let mut iter = expression.operations(encoding);
    loop {
        let op = match iter.next() {
            Ok(Some(op)) => op,
            Ok(None) => break,
            Err(_) => return Location::Unsupported("a malformed DWARF expression"),
        };
        if ops.len() == 2 {
            return Location::Unsupported("a DWARF expression of more than two operations");
        }
        ops.push(op);
    }
    match ops.as_slice() {
        [Operation::PlusConstant { value }]
        | [Operation::UnsignedConstant { value }, Operation::Plus] => Location::Offset(*value),
        _ => Location::Unsupported("a DWARF expression other than DW_OP_plus_uconst"),
    }
}

impl Types {
    /// Reads every unit's type DIEs; `None` when there is no debug info.
    fn read(library: &[u8]) -> Result<Option<Types>, String> {
        let file = object::File::parse(library).map_err(|e| {
            format!(
                "cannot read debug info: not a readable object file ({} bytes): {e}",
                library.len()
            )
        })?;
        let present = |name: &str| file.section_by_name(name).is_some_and(|s| s.size() > 0);
        if !present(".debug_info") && !present(".debug_types") {
            return Ok(None);
        }
        let endian = if file.is_little_endian() {
            RunTimeEndian::Little
        } else {
            RunTimeEndian::Big
        };
        let sections = gimli::DwarfSections::load(|id| section_data(&file, id))?;
        let dwarf = sections.borrow(|data| EndianSlice::new(data, endian));
        let mut types = Types::default();
        let mut units = dwarf.units();
        while let Some(header) = units.next().map_err(malformed)? {
            types.read_unit(&dwarf, header)?;
        }
        let mut units = dwarf.type_units();
        while let Some(header) = units.next().map_err(malformed)? {
            types.read_unit(&dwarf, header)?;
        }
        for (index, die) in types.dies.iter().enumerate() {
            if let (true, false, Some(name)) = (die.file_scope, die.declaration, &die.name)
                && is_aggregate(die.tag)
            {
                types
                    .definitions
                    .entry((die.tag, name.clone()))
                    .or_insert(index);
            }
        }
        Ok(Some(types))
    }

    fn read_unit(
        &mut self,
        dwarf: &gimli::Dwarf<Slice>,
        header: gimli::UnitHeader<Slice>,
    ) -> Result<(), String> {
        let unit = dwarf.unit(header).map_err(malformed)?;
        let types_section = unit.header.section() == SectionId::DebugTypes;
        let base = unit.header.offset().0;
        let key = |offset: usize| {
            base.checked_add(offset).map(|offset| Key {
                types_section,
                offset,
            })
        };
        match unit.header.type_() {
            UnitType::Type {
                type_signature,
                type_offset,
            }
            | UnitType::SplitType {
                type_signature,
                type_offset,
            } => {
                if let Some(k) = key(type_offset.0) {
                    self.by_signature.entry(type_signature.0).or_insert(k);
                }
            }
            UnitType::Skeleton(_) | UnitType::SplitCompilation(_) => {
                self.split.get_or_insert_with(|| "a .dwo file".into());
            }
            _ => {}
        }
        let address_size = u64::from(unit.header.address_size());
        // The kept DIE at each depth above the current one (None: not kept).
        let mut parents: Vec<Option<usize>> = Vec::new();
        let mut cursor = unit.entries();
        while let Some(entry) = cursor.next_dfs().map_err(malformed)? {
            let depth = usize::try_from(entry.depth())
                .map_err(|_| "malformed debug info: an entry above its unit".to_string())?;
            if depth == 0 {
                for at in [gimli::DW_AT_dwo_name, gimli::DW_AT_GNU_dwo_name] {
                    if let Some(value) = entry.attr_value(at) {
                        let name = dwarf
                            .attr_string(&unit, value)
                            .map(|s| String::from_utf8_lossy(s.slice()).into_owned())
                            .unwrap_or_else(|_| "a .dwo file".into());
                        self.split = Some(name);
                    }
                }
            }
            parents.truncate(depth);
            parents.resize(depth, None);
            let parent = parents.last().copied().flatten();
            let mut kept = None;
            if KEPT.contains(&entry.tag()) {
                let mut die = Die::new(entry.tag());
                die.file_scope = depth == 1;
                let type_ref = |value| match value {
                    AttributeValue::UnitRef(o) => key(o.0).map_or(TypeRef::Elsewhere, TypeRef::Die),
                    AttributeValue::DebugInfoRef(o) => TypeRef::Die(Key {
                        types_section: false,
                        offset: o.0,
                    }),
                    AttributeValue::DebugTypesRef(signature) => TypeRef::Signature(signature.0),
                    _ => TypeRef::Elsewhere,
                };
                for attr in entry.attrs() {
                    let value = attr.value();
                    match attr.name() {
                        gimli::DW_AT_name => {
                            let name = dwarf.attr_string(&unit, value).map_err(malformed)?;
                            die.name = Some(String::from_utf8_lossy(name.slice()).into_owned());
                        }
                        gimli::DW_AT_byte_size => die.byte_size = value.udata_value(),
                        gimli::DW_AT_type => die.ty = Some(type_ref(value)),
                        gimli::DW_AT_signature => {
                            if let TypeRef::Signature(s) = type_ref(value) {
                                die.signature = Some(s);
                            }
                        }
                        gimli::DW_AT_encoding => {
                            if let AttributeValue::Encoding(e) = value {
                                die.encoding = Some(e);
                            }
                        }
                        gimli::DW_AT_declaration => {
                            die.declaration = matches!(value, AttributeValue::Flag(true));
                        }
                        gimli::DW_AT_data_member_location => {
                            die.location = member_location(value, unit.encoding());
                        }
                        gimli::DW_AT_data_bit_offset => die.data_bit_offset = value.udata_value(),
                        gimli::DW_AT_bit_size => die.bitfield = true,
                        gimli::DW_AT_count => die.count = Some(bound(value)),
                        gimli::DW_AT_upper_bound => die.upper = Some(bound(value)),
                        gimli::DW_AT_lower_bound => die.lower = Some(bound(value)),
                        gimli::DW_AT_byte_stride => die.stride = value.udata_value(),
                        _ => {}
                    }
                }
                if die.byte_size.is_none() && die.tag == gimli::DW_TAG_pointer_type {
                    die.byte_size = Some(address_size);
                }
                let index = self.dies.len();
                if let Some(k) = key(entry.offset().0) {
                    self.by_key.insert(k, index);
                }
                if let Some(parent) = parent
                    && let Some(p) = self.dies.get_mut(parent)
                {
                    p.children.push(index);
                }
                self.dies.push(die);
                kept = Some(index);
            }
            parents.push(kept);
        }
        Ok(())
    }

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
                    .name
                    .as_ref()
                    .and_then(|name| self.definitions.get(&(die.tag, name.clone())));
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
        match (&die.name, kind) {
            (Some(name), "") => name.clone(),
            (Some(name), kind) => format!("{kind} {name}"),
            (None, "") => "an unnamed type".into(),
            (None, kind) => format!("an anonymous {kind}"),
        }
    }

    /// The type `name` names: a typedef, else a tag (only a tag for
    /// `struct NAME` and the like). Returns it and how to call it.
    fn lookup(&self, name: &str) -> Option<(usize, String)> {
        let name = name.trim();
        let kinds: [(&str, &[DwTag]); 4] = [
            (
                "struct ",
                &[gimli::DW_TAG_structure_type, gimli::DW_TAG_class_type],
            ),
            (
                "class ",
                &[gimli::DW_TAG_class_type, gimli::DW_TAG_structure_type],
            ),
            ("union ", &[gimli::DW_TAG_union_type]),
            ("enum ", &[gimli::DW_TAG_enumeration_type]),
        ];
        let tagged = kinds
            .iter()
            .find_map(|(prefix, tags)| Some((name.strip_prefix(prefix)?.trim(), *tags)));
        let (bare, tags) = match tagged {
            Some(t) => t,
            None => {
                let typedef = self.dies.iter().position(|d| {
                    d.file_scope
                        && d.tag == gimli::DW_TAG_typedef
                        && d.name.as_deref() == Some(name)
                });
                if let Some(index) = typedef {
                    return Some((index, name.to_owned()));
                }
                (
                    name,
                    &[
                        gimli::DW_TAG_structure_type,
                        gimli::DW_TAG_class_type,
                        gimli::DW_TAG_union_type,
                        gimli::DW_TAG_enumeration_type,
                    ][..],
                )
            }
        };
        tags.iter().find_map(|&tag| {
            let index = *self.definitions.get(&(tag, bare.to_owned()))?;
            Some((index, self.describe(index)))
        })
    }

    /// Every named file-scope struct: (how to call it, its size, index).
    /// A struct is called by its first typedef, else `struct tag`; the
    /// copies from several units count once.
    fn structs(&self) -> Vec<(String, u64, usize)> {
        let mut typedef_names: HashMap<usize, &str> = HashMap::new();
        for die in &self.dies {
            if let (true, gimli::DW_TAG_typedef, Some(name), Some(ty)) =
                (die.file_scope, die.tag, &die.name, die.ty)
                && let Ok(target) = self.target(ty, name)
                && let Ok(target) = self.strip(target, name)
            {
                typedef_names.entry(target).or_insert(name);
            }
        }
        // One entry per tag (per typedef for an anonymous struct): (key,
        // typedef name, size, index).
        let mut groups: Vec<(String, Option<&str>, u64, usize)> = Vec::new();
        for (index, die) in self.dies.iter().enumerate() {
            if !die.file_scope || die.declaration || !is_struct(die.tag) {
                continue;
            }
            let Some(size) = die.byte_size else {
                continue;
            };
            let typedef = typedef_names.get(&index).copied();
            let key = match (&die.name, typedef) {
                (Some(_), _) => self.describe(index),
                (None, Some(typedef)) => typedef.to_owned(),
                (None, None) => continue,
            };
            match groups.iter_mut().find(|g| g.0 == key) {
                Some(group) => group.1 = group.1.or(typedef),
                None => groups.push((key, typedef, size, index)),
            }
        }
        groups
            .into_iter()
            .map(|(key, typedef, size, index)| (typedef.map_or(key, str::to_owned), size, index))
            .collect()
    }

    /// "structs of 16 bytes: a_t, b_t", or what there is instead.
    fn structs_of(&self, size: usize) -> String {
        const SHOWN: usize = 12;
        let all = self.structs();
        let fit: Vec<&str> = all
            .iter()
            .filter(|(_, s, _)| *s == size as u64)
            .map(|(n, _, _)| n.as_str())
            .collect();
        let list = |items: Vec<String>| {
            let more = items.len().saturating_sub(SHOWN);
            let mut shown: Vec<String> = items.into_iter().take(SHOWN).collect();
            if more > 0 {
                shown.push(format!("and {more} more"));
            }
            shown.join(", ")
        };
        if !fit.is_empty() {
            return format!(
                "structs of {size} bytes: {}",
                list(fit.iter().map(|s| s.to_string()).collect())
            );
        }
        if all.is_empty() {
            return "the debug info describes no structs".into();
        }
        format!(
            "no struct is {size} bytes; structs: {}",
            list(
                all.iter()
                    .map(|(n, s, _)| format!("{n} ({s} bytes)"))
                    .collect()
            )
        )
    }

    /// The state's type: (DIE, its name, why it was chosen).
    fn choose(
        &self,
        state_size: usize,
        wanted: Option<&str>,
    ) -> Result<(usize, String, String), String> {
        let has_types = self
            .dies
            .iter()
            .any(|d| d.file_scope && (d.tag == gimli::DW_TAG_typedef || is_aggregate(d.tag)));
        if !has_types {
            return Err(match &self.split {
                Some(dwo) => format!(
                    "the debug info is split (-gsplit-dwarf): the types are in {dwo}, which \
                     this reader does not open; build without -gsplit-dwarf"
                ),
                None => "the library's debug info describes no types (built with -g1, or \
                         only some of its objects with -g?)"
                    .into(),
            });
        }
        if let Some(wanted) = wanted {
            return match self.lookup(wanted) {
                Some((index, name)) => Ok((index, name, "--state-type".into())),
                None => Err(format!(
                    "no type named {wanted} (--state-type) in the debug info; {}",
                    self.structs_of(state_size)
                )),
            };
        }
        if let Some((index, name)) = self.lookup(CONVENTIONAL_NAME) {
            return Ok((index, name, format!("the name {CONVENTIONAL_NAME}")));
        }
        let fit: Vec<(String, u64, usize)> = self
            .structs()
            .into_iter()
            .filter(|(name, size, _)| *size == state_size as u64 && !is_abi_type(name))
            .collect();
        match fit.as_slice() {
            [(name, _, index)] => Ok((
                *index,
                name.clone(),
                format!("its size (the only {state_size}-byte struct)"),
            )),
            [] => Err(format!(
                "no type named {CONVENTIONAL_NAME} in the debug info and no struct of the \
                 state's {state_size} bytes; {}; name the state's type with --state-type",
                self.structs_of(state_size)
            )),
            many => Err(format!(
                "no type named {CONVENTIONAL_NAME} in the debug info, and {} structs of the \
                 state's {state_size} bytes: {}; choose one with --state-type",
                many.len(),
                many.iter()
                    .map(|(n, _, _)| n.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
        }
    }

    /// The element counts of an array's dimensions.
    fn dimensions(&self, array: usize, what: &str) -> Result<Vec<u64>, String> {
        let mut dims = Vec::new();
        for &child in &self.die(array)?.children {
            let sub = self.die(child)?;
            if sub.tag != gimli::DW_TAG_subrange_type {
                continue;
            }
            let count = match (sub.count, sub.upper) {
                (Some(Bound::Const(count)), _) => count,
                (Some(Bound::Dynamic), _) | (None, Some(Bound::Dynamic)) => {
                    return Err(format!("{what} is a variable-length array"));
                }
                (None, Some(Bound::Const(upper))) => {
                    let lower = match sub.lower {
                        Some(Bound::Const(lower)) => lower,
                        Some(Bound::Dynamic) => {
                            return Err(format!("{what} is a variable-length array"));
                        }
                        None => 0,
                    };
                    upper - lower + 1
                }
                // A flexible array member: no elements in the struct.
                (None, None) => 0,
            };
            dims.push(
                u64::try_from(count.max(0))
                    .map_err(|_| format!("malformed debug info: {what} has {count} elements"))?,
            );
        }
        Ok(dims)
    }

    /// Bytes of a (stripped) type.
    fn size_of(&self, index: usize, what: &str, depth: usize) -> Result<u64, String> {
        if depth > MAX_DEPTH {
            return Err(format!(
                "{what} nests more than {MAX_DEPTH} deep (a cycle in malformed debug info?)"
            ));
        }
        let die = self.die(index)?;
        if let Some(size) = die.byte_size {
            return Ok(size);
        }
        if die.tag == gimli::DW_TAG_array_type {
            let element = self.element(index, what)?;
            let each = self.size_of(element, what, depth + 1)?;
            return self
                .dimensions(index, what)?
                .iter()
                .try_fold(each, |n, d| n.checked_mul(*d))
                .ok_or_else(|| format!("malformed debug info: {what} overflows"));
        }
        Err(format!(
            "the debug info does not give the size of {what} ({})",
            self.describe(index)
        ))
    }

    /// An array's element type, stripped.
    fn element(&self, array: usize, what: &str) -> Result<usize, String> {
        let Some(ty) = self.die(array)?.ty else {
            return Err(format!("malformed debug info: {what} has no element type"));
        };
        self.strip(self.target(ty, what)?, what)
    }

    /// What a (stripped) type becomes.
    fn shape(&self, index: usize, what: &str, depth: usize) -> Result<Shape, String> {
        if depth > MAX_DEPTH {
            return Err(format!(
                "{what} nests more than {MAX_DEPTH} deep (a cycle in malformed debug info?)"
            ));
        }
        let die = self.die(index)?;
        let bytes = die.byte_size.and_then(|b| u8::try_from(b).ok());
        Ok(match die.tag {
            gimli::DW_TAG_base_type => match (die.encoding, bytes) {
                (Some(gimli::DW_ATE_boolean), Some(1)) => Shape::Leaf(Scalar::Bool, 1),
                (Some(gimli::DW_ATE_float), Some(bytes @ (4 | 8))) => {
                    Shape::Leaf(Scalar::Float { bytes }, 1)
                }
                (Some(gimli::DW_ATE_complex_float), Some(bytes @ (8 | 16))) => {
                    Shape::Leaf(Scalar::Float { bytes: bytes / 2 }, 2)
                }
                (
                    Some(gimli::DW_ATE_signed | gimli::DW_ATE_signed_char),
                    Some(bytes @ (1 | 2 | 4 | 8)),
                ) => Shape::Leaf(
                    Scalar::Int {
                        signed: true,
                        bytes,
                    },
                    1,
                ),
                (
                    Some(
                        gimli::DW_ATE_unsigned
                        | gimli::DW_ATE_unsigned_char
                        | gimli::DW_ATE_UTF
                        | gimli::DW_ATE_boolean,
                    ),
                    Some(bytes @ (1 | 2 | 4 | 8)),
                ) => Shape::Leaf(
                    Scalar::Int {
                        signed: false,
                        bytes,
                    },
                    1,
                ),
                _ => Shape::Skip,
            },
            gimli::DW_TAG_enumeration_type => {
                let underlying = die
                    .ty
                    .and_then(|ty| self.target(ty, what).ok())
                    .and_then(|t| self.strip(t, what).ok())
                    .and_then(|t| self.dies.get(t));
                let encoding = die.encoding.or(underlying.and_then(|u| u.encoding));
                let bytes = bytes.or(underlying
                    .and_then(|u| u.byte_size)
                    .and_then(|b| u8::try_from(b).ok()));
                let signed = !matches!(
                    encoding,
                    Some(gimli::DW_ATE_unsigned | gimli::DW_ATE_unsigned_char)
                );
                match bytes {
                    Some(bytes @ (1 | 2 | 4 | 8)) => Shape::Leaf(Scalar::Int { signed, bytes }, 1),
                    _ => Shape::Skip,
                }
            }
            gimli::DW_TAG_pointer_type
            | gimli::DW_TAG_reference_type
            | gimli::DW_TAG_rvalue_reference_type => match die.byte_size {
                Some(8) => Shape::Leaf(Scalar::Pointer, 1),
                _ => Shape::Skip,
            },
            gimli::DW_TAG_union_type => match die.byte_size {
                Some(size) if size > 0 => Shape::Leaf(
                    Scalar::Int {
                        signed: false,
                        bytes: 1,
                    },
                    size,
                ),
                _ => Shape::Skip,
            },
            gimli::DW_TAG_structure_type | gimli::DW_TAG_class_type => Shape::Struct,
            gimli::DW_TAG_array_type => {
                let element = self.element(index, what)?;
                let dims = self.dimensions(index, what)?;
                let total = dims
                    .iter()
                    .try_fold(1u64, |n, d| n.checked_mul(*d))
                    .ok_or_else(|| format!("malformed debug info: {what} overflows"))?;
                let stride = die.stride;
                match self.shape(element, what, depth + 1)? {
                    Shape::Skip => Shape::Skip,
                    Shape::Leaf(scalar, count) => {
                        // A stride other than the element's size leaves
                        // holes one field cannot describe.
                        if stride
                            .is_some_and(|s| Some(s) != (scalar.size() as u64).checked_mul(count))
                        {
                            Shape::Skip
                        } else {
                            Shape::Leaf(
                                scalar,
                                count.checked_mul(total).ok_or_else(|| {
                                    format!("malformed debug info: {what} overflows")
                                })?,
                            )
                        }
                    }
                    Shape::Struct | Shape::Array { .. } => Shape::Array {
                        element,
                        dims,
                        stride,
                    },
                }
            }
            _ => Shape::Skip,
        })
    }

    /// The layout of `chosen`, checked against the state's size.
    fn layout(
        &self,
        chosen: usize,
        name: String,
        chosen_by: String,
        state_size: usize,
    ) -> Result<Layout, String> {
        let root = self.strip(chosen, &name)?;
        let size = self.size_of(root, &name, 0)?;
        if size != state_size as u64 {
            return Err(format!(
                "{name} (chosen by {chosen_by}) is {size} bytes but the plugin's state_size is \
                 {state_size}"
            ));
        }
        let mut builder = Builder {
            types: self,
            fields: Vec::new(),
            size,
            visited: 0,
        };
        let bare = name
            .rsplit(' ')
            .next()
            .filter(|n| !n.is_empty())
            .unwrap_or("state");
        match self.shape(root, &name, 0)? {
            Shape::Struct => builder.members(root, "", 0, 1)?,
            _ => builder.value(root, bare.to_owned(), 0, 1)?,
        }
        let layout = Layout {
            size: state_size,
            fields: builder.fields,
            source: Source::Dwarf {
                type_name: name,
                chosen_by,
            },
        };
        layout
            .validate()
            .map_err(|e| format!("malformed debug info: the layout read is inconsistent: {e}"))?;
        Ok(layout)
    }
}

/// What a type becomes in a layout.
enum Shape {
    /// A scalar, or `count` of them in a row.
    Leaf(Scalar, u64),
    /// Its members, each under the type's name.
    Struct,
    /// An array of structs (or of arrays of them): one entry per element.
    Array {
        element: usize,
        dims: Vec<u64>,
        stride: Option<u64>,
    },
    /// No field (see the module's rules).
    Skip,
}

/// Collects the fields of one layout.
struct Builder<'a> {
    types: &'a Types,
    fields: Vec<Field>,
    /// The root type's size: every field lies below it.
    size: u64,
    /// Values visited so far, fields or not: bounds the work when members
    /// that give no field (long doubles, empty structs) are repeated.
    visited: usize,
}

fn join(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_owned()
    } else {
        format!("{prefix}.{name}")
    }
}

impl Builder<'_> {
    fn push(
        &mut self,
        name: String,
        offset: u64,
        scalar: Scalar,
        count: u64,
    ) -> Result<(), String> {
        if count == 0 {
            return Ok(());
        }
        let end = count
            .checked_mul(scalar.size() as u64)
            .and_then(|bytes| bytes.checked_add(offset));
        if end.is_none_or(|end| end > self.size) {
            return Err(format!(
                "malformed debug info: {name} ({count} × {scalar} at byte {offset}) does not fit \
                 in the {}-byte state",
                self.size
            ));
        }
        if self.fields.len() >= MAX_FIELDS {
            return Err(format!(
                "the state has more than {MAX_FIELDS} fields (at {name}); a layout this large is \
                 not used"
            ));
        }
        let (Ok(offset), Ok(count)) = (usize::try_from(offset), usize::try_from(count)) else {
            return Err(format!(
                "{name} does not fit in this machine's address space"
            ));
        };
        self.fields.push(Field {
            name,
            offset,
            scalar,
            count,
            transient: false,
        });
        Ok(())
    }

    /// Counts one value or struct visited against [`MAX_VISITS`].
    fn visit(&mut self, at: &str) -> Result<(), String> {
        self.visited += 1;
        if self.visited > MAX_VISITS {
            return Err(format!(
                "the state has more than {MAX_VISITS} members in all (at {at}); a layout this \
                 large is not used"
            ));
        }
        Ok(())
    }

    /// The fields of a value of type `ty` (not yet stripped) named `name`.
    fn value(&mut self, ty: usize, name: String, offset: u64, depth: usize) -> Result<(), String> {
        self.visit(&name)?;
        let ty = self.types.strip(ty, &name)?;
        match self.types.shape(ty, &name, depth)? {
            Shape::Leaf(scalar, count) => self.push(name, offset, scalar, count),
            Shape::Skip => Ok(()),
            Shape::Struct => self.members(ty, &name, offset, depth + 1),
            Shape::Array {
                element,
                dims,
                stride,
            } => self.elements(element, &dims, stride, &name, offset, depth + 1),
        }
    }

    /// One entry per element of an array of structs: `name[i][j]…`.
    fn elements(
        &mut self,
        element: usize,
        dims: &[u64],
        stride: Option<u64>,
        name: &str,
        offset: u64,
        depth: usize,
    ) -> Result<(), String> {
        let stride = match stride {
            Some(stride) => stride,
            None => self.types.size_of(element, name, depth)?,
        };
        let total = dims.iter().try_fold(1u64, |n, d| n.checked_mul(*d));
        let end = total
            .and_then(|t| t.checked_mul(stride))
            .and_then(|b| b.checked_add(offset));
        let (Some(total), Some(end)) = (total, end) else {
            return Err(format!("malformed debug info: {name} overflows"));
        };
        if end > self.size {
            return Err(format!(
                "malformed debug info: {name} ({total} × {stride} bytes at byte {offset}) does not \
                 fit in the {}-byte state",
                self.size
            ));
        }
        if total > MAX_FIELDS as u64 {
            return Err(format!(
                "the state has more than {MAX_FIELDS} fields ({name} alone has {total} structs); \
                 a layout this large is not used"
            ));
        }
        for flat in 0..total {
            let mut index = String::new();
            let mut rest = flat;
            for &d in dims.iter().rev() {
                // d > 0: total would be 0 otherwise.
                index.insert_str(0, &format!("[{}]", rest % d.max(1)));
                rest /= d.max(1);
            }
            self.value(
                element,
                format!("{name}{index}"),
                offset + flat * stride,
                depth,
            )?;
        }
        Ok(())
    }

    /// The fields of struct `ty`'s members, under `prefix`.
    fn members(
        &mut self,
        ty: usize,
        prefix: &str,
        offset: u64,
        depth: usize,
    ) -> Result<(), String> {
        let types = self.types;
        let what = if prefix.is_empty() {
            types.describe(ty)
        } else {
            prefix.to_owned()
        };
        self.visit(&what)?;
        if depth > MAX_DEPTH {
            return Err(format!(
                "{what} nests more than {MAX_DEPTH} deep (a cycle in malformed debug info?)"
            ));
        }
        for &child in &types.die(ty)?.children {
            let member = types.die(child)?;
            let base_class = member.tag == gimli::DW_TAG_inheritance;
            if (member.tag != gimli::DW_TAG_member && !base_class)
                || member.declaration
                || member.bitfield
            {
                continue;
            }
            let label = member.name.as_deref().unwrap_or("an unnamed member");
            let at = match &member.location {
                Location::Offset(at) => *at,
                Location::Absent => match member.data_bit_offset {
                    Some(bits) if bits % 8 == 0 => bits / 8,
                    Some(_) => continue,
                    None => 0,
                },
                Location::Unsupported(why) => {
                    return Err(format!(
                        "the offset of {label} in {what} is {why}, which this reader does not \
                         evaluate"
                    ));
                }
            };
            let Some(offset) = offset.checked_add(at) else {
                return Err(format!("malformed debug info: {label} in {what} overflows"));
            };
            let Some(member_type) = member.ty else {
                return Err(format!(
                    "malformed debug info: {label} in {what} has no type"
                ));
            };
            let member_type = types.target(member_type, label)?;
            match (&member.name, base_class) {
                (Some(name), false) => {
                    self.value(member_type, join(prefix, name), offset, depth)?
                }
                _ => {
                    let stripped = types.strip(member_type, label)?;
                    let inner = types.die(stripped)?;
                    if is_struct(inner.tag) {
                        self.members(stripped, prefix, offset, depth + 1)?;
                    } else if inner.tag == gimli::DW_TAG_union_type {
                        let mut names = Vec::new();
                        for &c in &inner.children {
                            if let Some(n) = types.die(c)?.name.as_deref() {
                                names.push(n);
                            }
                        }
                        let name = if names.is_empty() {
                            "union".to_owned()
                        } else {
                            names.join("|")
                        };
                        self.value(stripped, join(prefix, &name), offset, depth)?;
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
