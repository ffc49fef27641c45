//! What a state type looks like to the host: a tree of [`Shape`]s that
//! `#[derive(State)]` writes from the struct, flattened here into the
//! extended ABI's field table (`pos.x`, `enemies[2].hp`, `grid` with its
//! row length) exactly as the host's debug-info reader names the same
//! fields, and hashed at compile time for the host to check.

use core::ffi::c_char;
use std::ffi::CString;

use hotreload_abi::{FIELD_ROW_SHIFT, FIELD_TRANSIENT, FieldDesc, LayoutHash, field_type};

/// How one type is laid out.
#[derive(Debug)]
pub enum Shape {
    /// A number or a bool: a `HOTRELOAD_*` field type.
    Scalar { field_type: u32 },
    /// `[T; len]`, each element `stride` bytes after the one before.
    Array {
        len: usize,
        stride: usize,
        element: &'static Shape,
    },
    /// A `#[derive(State)]` struct.
    Struct {
        size: usize,
        members: &'static [Member],
    },
}

/// One field of a struct, as the derive saw it.
#[derive(Debug)]
pub struct Member {
    pub name: &'static str,
    pub offset: usize,
    pub shape: &'static Shape,
    /// `#[state(transient)]`: zeroed on every reload.
    pub transient: bool,
    /// `#[state(text)]`: a byte array shown as a string.
    pub text: bool,
}

/// A type that can live in a hot-reloaded state: numbers, `bool`, arrays of
/// them, and `#[derive(State)]` structs.
///
/// # Safety
/// `SHAPE` must describe the type's layout truthfully, and every byte
/// pattern the host can write into it (zeroes, a migrated number, a bool
/// of 0 or 1) must be a valid value of it. The derive guarantees both; do
/// not implement it by hand.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be part of a hot-reloaded state",
    label = "not a number, bool, array of them, or #[derive(State)] struct",
    note = "the state lives in the host's memory across reloads: references, pointers, String, Vec, Box and other heap types would dangle or be misread; keep numbers, bools, fixed-size arrays and #[repr(C)] structs of them"
)]
pub unsafe trait StateField: Sized + 'static {
    const SHAPE: Shape;
}

/// The type the host's state block holds: a `#[derive(State)]` struct.
///
/// # Safety
/// As for [`StateField`]; `LAYOUT_HASH` must be [`layout_hash`] of it.
pub unsafe trait State: StateField {
    /// [`hotreload_abi::LayoutHash`] of the flattened schema, size and alignment.
    const LAYOUT_HASH: u64;
}

macro_rules! scalars {
    ($($t:ty => $code:expr),* $(,)?) => {$(
        // SAFETY: a primitive number or bool is one scalar of its size;
        // every bit pattern is valid for the numbers, and the host only
        // ever writes 0 or 1 into a BOOL field.
        unsafe impl StateField for $t {
            const SHAPE: Shape = Shape::Scalar { field_type: $code };
        }
    )*};
}

scalars! {
    i8 => field_type::I8, i16 => field_type::I16, i32 => field_type::I32, i64 => field_type::I64,
    u8 => field_type::U8, u16 => field_type::U16, u32 => field_type::U32, u64 => field_type::U64,
    f32 => field_type::F32, f64 => field_type::F64, bool => field_type::BOOL,
}

#[cfg(target_pointer_width = "64")]
scalars! { isize => field_type::I64, usize => field_type::U64 }

// SAFETY: an array's elements follow each other at their size.
unsafe impl<T: StateField, const N: usize> StateField for [T; N] {
    const SHAPE: Shape = Shape::Array {
        len: N,
        stride: core::mem::size_of::<T>(),
        element: &T::SHAPE,
    };
}

/// An array of scalars is one field with its dimensions: the element type,
/// the dimensions outermost first (at most two), and how many there are.
/// `None` when the shape holds a struct.
const fn scalar_leaf(shape: &Shape) -> Option<(u32, [usize; 2], usize)> {
    let mut dims = [1usize; 2];
    let mut depth = 0;
    let mut at = shape;
    loop {
        match at {
            Shape::Scalar { field_type } => return Some((*field_type, dims, depth)),
            Shape::Array { len, element, .. } => {
                if depth >= 2 {
                    // The schema's row flags say two dimensions, no more.
                    if scalar_leaf(element).is_some() {
                        panic!(
                            "#[derive(State)]: an array of numbers with more than two dimensions \
                             cannot be described in a schema; flatten it (e.g. [[T; W * H]; D]) or wrap a dimension in a struct"
                        );
                    }
                    return None;
                }
                dims[depth] = *len;
                depth += 1;
                at = element;
            }
            Shape::Struct { .. } => return None,
        }
    }
}

/// The field type, flags and element count of a scalar field.
const fn entry(leaf: (u32, [usize; 2], usize), transient: bool, text: bool) -> (u32, u32, usize) {
    let (mut ty, dims, depth) = leaf;
    if text && ty & 0xff == 1 {
        ty = field_type::CHAR;
    }
    let mut flags = if transient { FIELD_TRANSIENT } else { 0 };
    if depth == 2 {
        flags |= (dims[1] as u32) << FIELD_ROW_SHIFT;
    }
    let count = match depth {
        0 => 1,
        1 => dims[0],
        _ => dims[0] * dims[1],
    };
    (ty, flags, count)
}

/// A field's name, built up while walking (a chain from the root, so that
/// the compile-time walk needs no allocation).
enum Name<'a> {
    Root,
    Member(&'a Name<'a>, &'static str),
    Index(&'a Name<'a>, usize),
}

const fn feed_name(h: LayoutHash, name: &Name<'_>) -> LayoutHash {
    match name {
        Name::Root => h,
        Name::Member(Name::Root, member) => h.bytes(member.as_bytes()),
        Name::Member(parent, member) => feed_name(h, parent).bytes(b".").bytes(member.as_bytes()),
        Name::Index(parent, i) => feed_name(h, parent).bytes(b"[").decimal(*i).bytes(b"]"),
    }
}

/// [`hotreload_abi::LayoutHash`] of `S` as the host will compute it from
/// the table [`flatten`] makes. Evaluated at compile time by the derive, so
/// that a shape no schema can hold is a compile error.
pub const fn layout_hash<S: StateField>() -> u64 {
    let h = match &S::SHAPE {
        Shape::Struct { members, .. } => hash_members(LayoutHash::new(), &Name::Root, members, 0),
        _ => panic!("#[derive(State)]: the state must be a struct"),
    };
    h.finish(core::mem::size_of::<S>(), core::mem::align_of::<S>())
}

const fn hash_members(
    mut h: LayoutHash,
    prefix: &Name<'_>,
    members: &[Member],
    base: usize,
) -> LayoutHash {
    let mut i = 0;
    while i < members.len() {
        let m = &members[i];
        let name = Name::Member(prefix, m.name);
        h = hash_value(h, &name, m.shape, base + m.offset, m.transient, m.text);
        i += 1;
    }
    h
}

const fn hash_value(
    h: LayoutHash,
    name: &Name<'_>,
    shape: &Shape,
    offset: usize,
    transient: bool,
    text: bool,
) -> LayoutHash {
    if let Some(leaf) = scalar_leaf(shape) {
        let (ty, flags, count) = entry(leaf, transient, text);
        return feed_name(h, name).field(ty, flags, offset, count);
    }
    match shape {
        Shape::Array {
            len,
            stride,
            element,
        } => {
            let mut h = h;
            let mut i = 0;
            while i < *len {
                let at = Name::Index(name, i);
                h = hash_value(h, &at, element, offset + i * *stride, transient, text);
                i += 1;
            }
            h
        }
        Shape::Struct { members, .. } => hash_members(h, name, members, offset),
        Shape::Scalar { .. } => h,
    }
}

/// One field of the flattened schema.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FlatField {
    pub name: String,
    pub field_type: u32,
    pub flags: u32,
    pub offset: usize,
    pub count: usize,
}

/// The schema of `S` as the extended ABI's table lists it, in the order the
/// layout hash covers it.
pub fn flatten<S: StateField>() -> Vec<FlatField> {
    let mut out = Vec::new();
    if let Shape::Struct { members, .. } = &S::SHAPE {
        flatten_members(&mut out, "", members, 0);
    }
    out
}

fn flatten_members(out: &mut Vec<FlatField>, prefix: &str, members: &[Member], base: usize) {
    for m in members {
        let name = if prefix.is_empty() {
            m.name.to_owned()
        } else {
            format!("{prefix}.{}", m.name)
        };
        flatten_value(out, name, m.shape, base + m.offset, m);
    }
}

fn flatten_value(out: &mut Vec<FlatField>, name: String, shape: &Shape, offset: usize, m: &Member) {
    if let Some(leaf) = scalar_leaf(shape) {
        let (field_type, flags, count) = entry(leaf, m.transient, m.text);
        out.push(FlatField {
            name,
            field_type,
            flags,
            offset,
            count,
        });
        return;
    }
    match shape {
        Shape::Array {
            len,
            stride,
            element,
        } => {
            for i in 0..*len {
                flatten_value(out, format!("{name}[{i}]"), element, offset + i * stride, m);
            }
        }
        Shape::Struct { members, .. } => flatten_members(out, &name, members, offset),
        Shape::Scalar { .. } => {}
    }
}

/// The flattened schema in the ABI's form, with the names it points to.
pub struct Table {
    /// Owned here: `descs` points into them.
    _names: Vec<CString>,
    pub descs: Vec<FieldDesc>,
}

impl Table {
    pub fn of<S: StateField>() -> Table {
        let flat = flatten::<S>();
        // Field names come from Rust identifiers and indices: no NUL inside.
        let names: Vec<CString> = flat
            .iter()
            .map(|f| CString::new(f.name.replace('\0', "")).unwrap_or_default())
            .collect();
        let descs = flat
            .iter()
            .zip(&names)
            .map(|(f, name)| FieldDesc {
                name: name.as_ptr().cast::<c_char>(),
                field_type: f.field_type,
                flags: f.flags,
                offset: f.offset,
                count: f.count,
            })
            .collect();
        Table {
            _names: names,
            descs,
        }
    }
}

/// Whether `bytes` holds a valid `S`: of its size, every bool 0 or 1.
pub fn valid_bytes<S: StateField>(bytes: &[u8]) -> bool {
    bytes.len() == core::mem::size_of::<S>()
        && flatten::<S>()
            .iter()
            .filter(|f| f.field_type == field_type::BOOL)
            .all(|f| {
                bytes
                    .get(f.offset..f.offset + f.count)
                    .is_some_and(|b| b.iter().all(|&v| v <= 1))
            })
}
