//! Flattening the state's type into leaf fields: structs by member,
//! arrays of structs by element, arrays of scalars as one field with a
//! shape.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use super::super::{Enumerator, Field, Layout, Scalar, Shown, Source};
use super::{
    Bound, Location, MAX_DEPTH, MAX_ENUMERATORS, MAX_FIELDS, MAX_VISITS, Types, is_struct,
};

impl Types {
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
        let leaf = |scalar, dims: &[u64], look| Shape::Leaf {
            scalar,
            dims: dims.to_vec(),
            look,
        };
        let whole = |size: Option<u64>| match size {
            Some(size) if size > 0 => leaf(
                Scalar::Int {
                    signed: false,
                    bytes: 1,
                },
                &[size],
                Look::Number,
            ),
            _ => Shape::Skip,
        };
        Ok(match die.tag {
            gimli::DW_TAG_base_type => match (die.encoding, bytes) {
                (Some(gimli::DW_ATE_boolean), Some(1)) => leaf(Scalar::Bool, &[], Look::Number),
                (Some(gimli::DW_ATE_float), Some(bytes @ (4 | 8))) => {
                    leaf(Scalar::Float { bytes }, &[], Look::Number)
                }
                (Some(gimli::DW_ATE_complex_float), Some(bytes @ (8 | 16))) => {
                    leaf(Scalar::Float { bytes: bytes / 2 }, &[2], Look::Number)
                }
                (
                    Some(encoding @ (gimli::DW_ATE_signed_char | gimli::DW_ATE_unsigned_char)),
                    Some(1),
                ) if die.name.as_deref() == Some("char") => {
                    // Plain `char` only: its arrays hold text, where
                    // `signed char`, `unsigned char` and (u)int8_t hold numbers.
                    let signed = encoding == gimli::DW_ATE_signed_char;
                    leaf(Scalar::Int { signed, bytes: 1 }, &[], Look::Text)
                }
                (
                    Some(gimli::DW_ATE_signed | gimli::DW_ATE_signed_char),
                    Some(bytes @ (1 | 2 | 4 | 8)),
                ) => leaf(
                    Scalar::Int {
                        signed: true,
                        bytes,
                    },
                    &[],
                    Look::Number,
                ),
                (
                    Some(
                        gimli::DW_ATE_unsigned
                        | gimli::DW_ATE_unsigned_char
                        | gimli::DW_ATE_UTF
                        | gimli::DW_ATE_boolean,
                    ),
                    Some(bytes @ (1 | 2 | 4 | 8)),
                ) => leaf(
                    Scalar::Int {
                        signed: false,
                        bytes,
                    },
                    &[],
                    Look::Number,
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
                    Some(bytes @ (1 | 2 | 4 | 8)) => {
                        leaf(Scalar::Int { signed, bytes }, &[], Look::Enum(index))
                    }
                    _ => Shape::Skip,
                }
            }
            gimli::DW_TAG_pointer_type
            | gimli::DW_TAG_reference_type
            | gimli::DW_TAG_rvalue_reference_type => match die.byte_size {
                Some(8) => leaf(Scalar::Pointer, &[], Look::Number),
                _ => Shape::Skip,
            },
            // A union's bytes, whichever member is live; and a Rust enum with
            // data, whose discriminant is among them.
            gimli::DW_TAG_union_type => whole(die.byte_size),
            gimli::DW_TAG_structure_type | gimli::DW_TAG_class_type
                if die
                    .children
                    .iter()
                    .filter_map(|&c| self.dies.get(c))
                    .any(|c| c.tag == gimli::DW_TAG_variant_part) =>
            {
                whole(die.byte_size)
            }
            gimli::DW_TAG_structure_type | gimli::DW_TAG_class_type => Shape::Struct,
            gimli::DW_TAG_array_type => {
                let element = self.element(index, what)?;
                let mut dims = self.dimensions(index, what)?;
                let stride = die.stride;
                match self.shape(element, what, depth + 1)? {
                    Shape::Skip => Shape::Skip,
                    Shape::Leaf {
                        scalar,
                        dims: inner,
                        look,
                    } => {
                        let each = inner
                            .iter()
                            .try_fold(scalar.size() as u64, |n, d| n.checked_mul(*d));
                        // A stride other than the element's size leaves
                        // holes one field cannot describe.
                        if stride.is_some_and(|s| Some(s) != each) {
                            Shape::Skip
                        } else {
                            dims.extend(inner);
                            if dims
                                .iter()
                                .try_fold(1u64, |n, d| n.checked_mul(*d))
                                .is_none()
                            {
                                return Err(format!("malformed debug info: {what} overflows"));
                            }
                            Shape::Leaf { scalar, dims, look }
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

    /// The enumerators of enum `index`, for the display: the first
    /// [`MAX_ENUMERATORS`] with a name and a value.
    fn enumerators(&self, index: usize, signed: bool) -> Arc<[Enumerator]> {
        let Some(die) = self.dies.get(index) else {
            return Arc::from(Vec::new());
        };
        die.children
            .iter()
            .filter_map(|&c| self.dies.get(c))
            .filter(|e| e.tag == gimli::DW_TAG_enumerator)
            .filter_map(|e| {
                Some(Enumerator {
                    value: e.constant?.value(signed),
                    name: e.name.clone()?,
                })
            })
            .take(MAX_ENUMERATORS)
            .collect::<Vec<_>>()
            .into()
    }

    /// The layout of `chosen`, checked against the state's size.
    #[cfg(test)]
    pub(super) fn layout(
        &self,
        chosen: usize,
        name: String,
        chosen_by: String,
        state_size: usize,
    ) -> Result<Layout, String> {
        self.layout_noting(chosen, name, chosen_by, state_size)
            .map(|(layout, _)| layout)
    }

    /// The layout of `chosen`, and the members that have bytes but no
    /// field (`flags (a bitfield)`), collapsed by element.
    pub(super) fn layout_noting(
        &self,
        chosen: usize,
        name: String,
        chosen_by: String,
        state_size: usize,
    ) -> Result<(Layout, Vec<String>), String> {
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
            enums: HashMap::new(),
            skipped: Vec::new(),
            skipped_seen: HashSet::new(),
            skipped_more: false,
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
        let mut skipped = builder.skipped;
        if builder.skipped_more {
            skipped.push("others".into());
        }
        Ok((layout, skipped))
    }
}

/// What a type becomes in a layout.
enum Shape {
    /// A scalar, or an array of them (`dims` outermost first; none for a
    /// plain scalar).
    Leaf {
        scalar: Scalar,
        dims: Vec<u64>,
        look: Look,
    },
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

/// How a leaf's values read: [`Shown`], with an enum by its DIE until the
/// builder reads its enumerators (once per enum, however many fields have
/// it).
#[derive(Clone, Copy)]
enum Look {
    Number,
    Text,
    Enum(usize),
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
    /// The enumerators of each enum met so far, by its DIE.
    enums: HashMap<usize, Arc<[Enumerator]>>,
    /// Members with bytes but no field, each once per pattern
    /// (`items[*].flags (a bitfield)`).
    skipped: Vec<String>,
    skipped_seen: HashSet<String>,
    /// More were skipped than are listed.
    skipped_more: bool,
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
        dims: Vec<u64>,
        look: Look,
    ) -> Result<(), String> {
        let Some(count) = dims.iter().try_fold(1u64, |n, d| n.checked_mul(*d)) else {
            return Err(format!("malformed debug info: {name} overflows"));
        };
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
        let Ok(offset) = usize::try_from(offset) else {
            return Err(format!(
                "{name} does not fit in this machine's address space"
            ));
        };
        // Each dimension is at most `count`, which fits below the state's size.
        let dims = dims.into_iter().map(|d| d as usize).collect();
        let shown = match look {
            Look::Number => Shown::Number,
            Look::Text => Shown::Text,
            Look::Enum(index) => {
                let signed = matches!(scalar, Scalar::Int { signed: true, .. });
                let types = self.types;
                Shown::Enum(Arc::clone(
                    self.enums
                        .entry(index)
                        .or_insert_with(|| types.enumerators(index, signed)),
                ))
            }
        };
        self.fields.push(Field {
            shown,
            ..Field::array(name, offset, scalar, dims)
        });
        Ok(())
    }

    /// Notes a member that has bytes but gets no field: they are not
    /// carried when the layout changes, which the layout notice says.
    fn skip(&mut self, name: &str, what: &str) {
        // Enough to say what is missing; hostile debug info can have as
        // many of them as it has members.
        const MOST: usize = 64;
        if self.skipped.len() >= MOST {
            self.skipped_more = true;
            return;
        }
        let note = format!("{} ({what})", crate::pattern::any_index(name));
        if self.skipped_seen.insert(note.clone()) {
            self.skipped.push(note);
        }
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
            Shape::Leaf { scalar, dims, look } => self.push(name, offset, scalar, dims, look),
            Shape::Skip => {
                let what = self.types.describe(ty);
                self.skip(&name, &what);
                Ok(())
            }
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
            if (member.tag != gimli::DW_TAG_member && !base_class) || member.declaration {
                continue;
            }
            let label = member.name.as_deref().unwrap_or("an unnamed member");
            if member.bitfield {
                self.skip(&join(prefix, label), "a bitfield");
                continue;
            }
            let at = match &member.location {
                Location::Offset(at) => *at,
                Location::Absent => match member.data_bit_offset {
                    Some(bits) if bits % 8 == 0 => bits / 8,
                    Some(_) => {
                        self.skip(&join(prefix, label), "not at a whole byte");
                        continue;
                    }
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
