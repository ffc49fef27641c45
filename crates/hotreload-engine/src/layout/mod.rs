//! What the state's bytes mean: its fields, their types and offsets.
//!
//! A layout is known from the library's debug info ([`dwarf`], for builds
//! with `-g`) or from a schema the plugin declares through the extended ABI.
//! It is what lets the host show the state by field (`score=10 time=1.0`,
//! [`show`]), migrate it field by field when a new version changes it, save
//! it to a self-describing file, and name the field that holds a dangling
//! pointer.
//!
//! A layout is a flat list of leaf fields with dotted paths (`pos.x`,
//! `enemies[2].hp`): nested structs are flattened, arrays of scalars stay
//! one field with their shape (`int grid[2][3]` is one field of dimensions
//! `[2, 3]`), arrays of structs are flattened per element.

pub mod dwarf;
pub mod edit;
pub mod json;
pub mod show;

use std::fmt;
use std::sync::Arc;

pub use show::format_state;

/// The type of one scalar.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Scalar {
    /// Signed or unsigned integer of 1, 2, 4 or 8 bytes (C `char` included).
    Int {
        signed: bool,
        bytes: u8,
    },
    /// `float` (4) or `double` (8).
    Float {
        bytes: u8,
    },
    Bool,
    /// A pointer: 8 bytes whose value means nothing across versions (and may
    /// point into a library that is about to go).
    Pointer,
}

impl Scalar {
    pub fn size(self) -> usize {
        match self {
            Scalar::Int { bytes, .. } | Scalar::Float { bytes } => bytes as usize,
            Scalar::Bool => 1,
            Scalar::Pointer => 8,
        }
    }

    /// Whether every value of `self` fits in `to` unchanged: the same type,
    /// or a numeric widening (int8 → int32, uint16 → int32, float → double,
    /// an integer of up to 4 bytes → double, bool → any number).
    pub fn widens_to(self, to: Scalar) -> bool {
        use Scalar::*;
        match (self, to) {
            (a, b) if a == b => true,
            (
                Int {
                    signed: false,
                    bytes: a,
                },
                Int {
                    signed: false,
                    bytes: b,
                },
            ) => a <= b,
            (
                Int {
                    signed: true,
                    bytes: a,
                },
                Int {
                    signed: true,
                    bytes: b,
                },
            ) => a <= b,
            (
                Int {
                    signed: false,
                    bytes: a,
                },
                Int {
                    signed: true,
                    bytes: b,
                },
            ) => a < b,
            (Float { bytes: a }, Float { bytes: b }) => a <= b,
            (Int { bytes: a, .. }, Float { bytes: 8 }) => a <= 4,
            (Int { bytes: a, .. }, Float { bytes: 4 }) => a <= 2,
            (Bool, Int { .. } | Float { .. }) => true,
            _ => false,
        }
    }
}

impl fmt::Display for Scalar {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scalar::Int {
                signed: true,
                bytes,
            } => write!(f, "int{}", bytes * 8),
            Scalar::Int {
                signed: false,
                bytes,
            } => write!(f, "uint{}", bytes * 8),
            Scalar::Float { bytes: 4 } => f.write_str("float"),
            Scalar::Float { .. } => f.write_str("double"),
            Scalar::Bool => f.write_str("bool"),
            Scalar::Pointer => f.write_str("pointer"),
        }
    }
}

/// One named value of an enum.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Enumerator {
    pub value: i128,
    pub name: String,
}

/// How a field's values read best. Only the display uses it: a migration
/// carries an enum as its integer and a `char` array element by element.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub enum Shown {
    #[default]
    Number,
    /// A C `char` array: a string up to its first NUL.
    Text,
    /// An enum: its enumerators, shared by every element that has the type.
    Enum(Arc<[Enumerator]>),
}

/// One leaf field.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Field {
    /// Dotted path from the state's root: `score`, `pos.x`, `enemies[2].hp`.
    pub name: String,
    pub offset: usize,
    pub scalar: Scalar,
    /// Elements in all: the product of `dims`, 1 for a plain scalar.
    pub count: usize,
    /// An array's extent in each dimension, outermost first (`int
    /// grid[2][3]` is `[2, 3]`); empty for a plain scalar.
    pub dims: Vec<usize>,
    /// Reset to zero on every reload (declared by the plugin's schema).
    pub transient: bool,
    pub shown: Shown,
}

impl Field {
    /// A plain scalar, or a one-dimensional array of `count` of them.
    pub fn new(name: impl Into<String>, offset: usize, scalar: Scalar, count: usize) -> Field {
        let dims = if count == 1 { Vec::new() } else { vec![count] };
        Field::array(name, offset, scalar, dims)
    }

    /// An array of the given dimensions (none: a plain scalar).
    pub fn array(
        name: impl Into<String>,
        offset: usize,
        scalar: Scalar,
        dims: Vec<usize>,
    ) -> Field {
        Field {
            name: name.into(),
            offset,
            scalar,
            count: dims.iter().product(),
            dims,
            transient: false,
            shown: Shown::Number,
        }
    }

    pub fn size(&self) -> usize {
        self.scalar.size() * self.count
    }

    /// The dimensions as C writes them after the name: `[2][3]`, or nothing.
    pub fn extent(&self) -> String {
        self.dims.iter().map(|d| format!("[{d}]")).collect()
    }
}

/// Where a layout came from, for the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// Debug info: the type's name, and how it was chosen.
    Dwarf {
        type_name: String,
        chosen_by: String,
    },
    /// The plugin's declared schema (extended ABI).
    Schema,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    pub size: usize,
    pub fields: Vec<Field>,
    pub source: Source,
}

impl Layout {
    pub fn field(&self, name: &str) -> Option<&Field> {
        self.fields.iter().find(|f| f.name == name)
    }

    /// The same fields at the same places with the same types and shapes
    /// (not where the layout came from, nor how values are shown).
    pub fn same_shape(&self, other: &Layout) -> bool {
        self.size == other.size
            && self.fields.len() == other.fields.len()
            && self.fields.iter().zip(&other.fields).all(|(a, b)| {
                a.name == b.name
                    && a.offset == b.offset
                    && a.scalar == b.scalar
                    && a.count == b.count
                    && a.dims == b.dims
            })
    }

    /// The field whose bytes include `offset`.
    pub fn field_at(&self, offset: usize) -> Option<&Field> {
        self.fields
            .iter()
            .find(|f| f.offset <= offset && offset < f.offset + f.size())
    }

    /// Checks that every field's shape agrees with its count, every field
    /// lies inside the state and fields do not overlap; a layout that fails
    /// this is not used.
    pub fn validate(&self) -> Result<(), String> {
        for f in &self.fields {
            let product = f
                .dims
                .iter()
                .try_fold(1usize, |n, &d| n.checked_mul(d).filter(|_| d > 0));
            if product != Some(f.count) {
                return Err(format!(
                    "field {}: expected {} elements from its dimensions {}, found a count of {}",
                    f.name,
                    product.map_or("a whole number of".to_owned(), |p| p.to_string()),
                    if f.dims.is_empty() {
                        "(none: a scalar)".to_owned()
                    } else {
                        f.extent()
                    },
                    f.count
                ));
            }
        }
        let mut spans: Vec<(usize, usize, &str)> = self
            .fields
            .iter()
            .map(|f| (f.offset, f.offset.saturating_add(f.size()), f.name.as_str()))
            .collect();
        spans.sort();
        for (_, end, name) in &spans {
            if *end > self.size {
                return Err(format!(
                    "field {name} ends at byte {end}, past the {}-byte state",
                    self.size
                ));
            }
        }
        for pair in spans.windows(2) {
            if pair[1].0 < pair[0].1 {
                return Err(format!("fields {} and {} overlap", pair[0].2, pair[1].2));
            }
        }
        Ok(())
    }
}

/// `n` and the noun, pluralised: `1 field`, `3 fields`.
pub fn plural(n: usize, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

/// What the tests of layouts, displays and migrations share.
#[cfg(test)]
pub(crate) mod testing {
    use super::{Field, Layout, Scalar, Source};

    pub const I8: Scalar = Scalar::Int {
        signed: true,
        bytes: 1,
    };
    pub const I32: Scalar = Scalar::Int {
        signed: true,
        bytes: 4,
    };
    pub const U32: Scalar = Scalar::Int {
        signed: false,
        bytes: 4,
    };
    pub const I64: Scalar = Scalar::Int {
        signed: true,
        bytes: 8,
    };
    pub const F32: Scalar = Scalar::Float { bytes: 4 };
    pub const F64: Scalar = Scalar::Float { bytes: 8 };

    /// A schema layout of `size` bytes.
    pub fn layout(size: usize, fields: Vec<Field>) -> Layout {
        Layout {
            size,
            fields,
            source: Source::Schema,
        }
    }

    pub fn ints(values: &[i32]) -> Vec<u8> {
        values.iter().flat_map(|v| v.to_ne_bytes()).collect()
    }

    pub fn read_ints(bytes: &[u8]) -> Vec<i32> {
        bytes
            .chunks_exact(4)
            .map(|c| i32::from_ne_bytes([c[0], c[1], c[2], c[3]]))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::testing::I32;
    use super::*;

    #[test]
    fn widening() {
        use super::testing::{I8, I64, U32};
        assert!(I8.widens_to(I32));
        assert!(!I32.widens_to(I8));
        assert!(U32.widens_to(I64));
        assert!(!U32.widens_to(I32));
        assert!(I32.widens_to(Scalar::Float { bytes: 8 }));
        assert!(!I64.widens_to(Scalar::Float { bytes: 8 }));
        assert!(Scalar::Float { bytes: 4 }.widens_to(Scalar::Float { bytes: 8 }));
        assert!(!Scalar::Float { bytes: 8 }.widens_to(Scalar::Float { bytes: 4 }));
        assert!(Scalar::Bool.widens_to(Scalar::Float { bytes: 4 }));
    }

    #[test]
    fn validate_rejects_overlap_overflow_and_a_shape_that_disagrees() {
        let overlap = Layout {
            size: 8,
            fields: vec![Field::new("a", 0, I32, 1), Field::new("b", 2, I32, 1)],
            source: Source::Schema,
        };
        assert!(overlap.validate().unwrap_err().contains("overlap"));
        let past = Layout {
            size: 4,
            fields: vec![Field::new("a", 2, I32, 1)],
            source: Source::Schema,
        };
        assert!(
            past.validate()
                .unwrap_err()
                .contains("past the 4-byte state")
        );
        let mut grid = Field::array("grid", 0, I32, vec![2, 3]);
        assert_eq!((grid.count, grid.extent()), (6, "[2][3]".to_owned()));
        grid.count = 5;
        let wrong = Layout {
            size: 24,
            fields: vec![grid],
            source: Source::Schema,
        };
        assert_eq!(
            wrong.validate().unwrap_err(),
            "field grid: expected 6 elements from its dimensions [2][3], found a count of 5"
        );
    }

    #[test]
    fn plurals() {
        assert_eq!(plural(1, "field"), "1 field");
        assert_eq!(plural(0, "field"), "0 fields");
        assert_eq!(plural(5, "field"), "5 fields");
    }
}
