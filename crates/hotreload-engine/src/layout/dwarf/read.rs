//! Reading the DIEs a layout needs from every unit of a library: types,
//! their members and array ranges, enumerators, and the namespaces they are
//! declared in.

use std::borrow::Cow;

use gimli::{AttributeValue, EndianSlice, Operation, RunTimeEndian, SectionId, UnitType};
use object::{CompressionFormat, Object, ObjectSection};

use super::{
    Bound, Constant, Die, KEPT, Key, Location, Slice, TypeRef, Types, is_aggregate, malformed,
};

/// What encloses an entry at one depth: a namespace (by name, if it has
/// one), a kept DIE, or anything else.
enum Frame {
    Namespace(Option<String>),
    Kept(usize),
    Other,
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

/// An enumerator's value in any of its forms.
fn constant(value: AttributeValue<Slice>) -> Option<Constant> {
    Some(match value {
        AttributeValue::Data1(v) => Constant::Data {
            value: v.into(),
            bytes: 1,
        },
        AttributeValue::Data2(v) => Constant::Data {
            value: v.into(),
            bytes: 2,
        },
        AttributeValue::Data4(v) => Constant::Data {
            value: v.into(),
            bytes: 4,
        },
        AttributeValue::Data8(v) => Constant::Data { value: v, bytes: 8 },
        AttributeValue::Sdata(v) => Constant::Signed(v),
        AttributeValue::Udata(v) => Constant::Unsigned(v),
        _ => return None,
    })
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
    pub(super) fn read(library: &[u8]) -> Result<Option<Types>, String> {
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
            if let (true, false, Some(path)) = (die.file_scope, die.declaration, die.path())
                && is_aggregate(die.tag)
            {
                types.definitions.entry((die.tag, path)).or_insert(index);
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
        // What encloses the current entry, from the unit's root down.
        let mut frames: Vec<Frame> = Vec::new();
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
            frames.truncate(depth);
            while frames.len() < depth {
                frames.push(Frame::Other);
            }
            let parent = match frames.last() {
                Some(Frame::Kept(index)) => Some(*index),
                _ => None,
            };
            let mut frame = Frame::Other;
            if entry.tag() == gimli::DW_TAG_namespace {
                let name = match entry.attr_value(gimli::DW_AT_name) {
                    Some(value) => Some(dwarf.attr_string(&unit, value).map_err(malformed)?),
                    None => None,
                };
                frame =
                    Frame::Namespace(name.map(|n| String::from_utf8_lossy(n.slice()).into_owned()));
            } else if KEPT.contains(&entry.tag()) {
                let mut die = Die::new(entry.tag());
                // Namespaces do not hide a type: a Rust module's struct is
                // as nameable as a C file's.
                let enclosing = frames.get(1..).unwrap_or_default();
                die.file_scope =
                    depth >= 1 && enclosing.iter().all(|f| matches!(f, Frame::Namespace(_)));
                if die.file_scope {
                    let names: Vec<&str> = enclosing
                        .iter()
                        .filter_map(|f| match f {
                            Frame::Namespace(name) => name.as_deref(),
                            _ => None,
                        })
                        .collect();
                    die.scope = (!names.is_empty()).then(|| names.join("::"));
                }
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
                        gimli::DW_AT_const_value => die.constant = constant(value),
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
                frame = Frame::Kept(index);
            }
            frames.push(frame);
        }
        Ok(())
    }
}
