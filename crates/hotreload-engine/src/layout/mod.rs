//! What the state's bytes mean: its fields, their types and offsets.
//!
//! A layout is known from the library's debug info ([`dwarf`], for builds
//! with `-g`) or from a schema the plugin declares through the extended ABI.
//! It is what lets the host show the state by field (`score=10 time=1.00`),
//! migrate it field by field when a new version changes it, save it to a
//! self-describing file, and name the field that holds a dangling pointer.
//!
//! A layout is a flat list of leaf fields with dotted paths (`pos.x`,
//! `enemies[2].hp`): nested structs are flattened, arrays of scalars stay
//! one field with a count, arrays of structs are flattened per element.

pub mod dwarf;

use std::fmt;

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
    /// an integer of up to 4 bytes → double).
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
            (Bool, Int { .. }) => true,
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

/// One leaf field.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Field {
    /// Dotted path from the state's root: `score`, `pos.x`, `enemies[2].hp`.
    pub name: String,
    pub offset: usize,
    pub scalar: Scalar,
    /// Elements, for an array of scalars; 1 otherwise.
    pub count: usize,
    /// Reset to zero on every reload (declared by the plugin's schema).
    pub transient: bool,
}

impl Field {
    pub fn size(&self) -> usize {
        self.scalar.size() * self.count
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

    /// The same fields at the same places with the same types (names,
    /// offsets, types, counts; not where the layout came from).
    pub fn same_shape(&self, other: &Layout) -> bool {
        self.size == other.size
            && self.fields.len() == other.fields.len()
            && self.fields.iter().zip(&other.fields).all(|(a, b)| {
                a.name == b.name
                    && a.offset == b.offset
                    && a.scalar == b.scalar
                    && a.count == b.count
            })
    }

    /// The field whose bytes include `offset`.
    pub fn field_at(&self, offset: usize) -> Option<&Field> {
        self.fields
            .iter()
            .find(|f| f.offset <= offset && offset < f.offset + f.size())
    }

    /// Checks that every field lies inside the state and fields do not
    /// overlap; a layout that fails this is not used.
    pub fn validate(&self) -> Result<(), String> {
        let mut spans: Vec<(usize, usize, &str)> = self
            .fields
            .iter()
            .map(|f| (f.offset, f.offset + f.size(), f.name.as_str()))
            .collect();
        spans.sort();
        for (start, end, name) in &spans {
            if *end > self.size {
                return Err(format!(
                    "field {name} ends at byte {end}, past the {}-byte state",
                    self.size
                ));
            }
            let _ = start;
        }
        for pair in spans.windows(2) {
            if pair[1].0 < pair[0].1 {
                return Err(format!("fields {} and {} overlap", pair[0].2, pair[1].2));
            }
        }
        Ok(())
    }
}

/// Reads one scalar from `bytes` (native endianness) as text.
pub fn format_value(scalar: Scalar, bytes: &[u8]) -> String {
    fn arr<const N: usize>(b: &[u8]) -> [u8; N] {
        let mut a = [0u8; N];
        a.copy_from_slice(&b[..N]);
        a
    }
    match scalar {
        Scalar::Int {
            signed: true,
            bytes: 1,
        } => (bytes[0] as i8).to_string(),
        Scalar::Int {
            signed: true,
            bytes: 2,
        } => i16::from_ne_bytes(arr(bytes)).to_string(),
        Scalar::Int {
            signed: true,
            bytes: 4,
        } => i32::from_ne_bytes(arr(bytes)).to_string(),
        Scalar::Int { signed: true, .. } => i64::from_ne_bytes(arr(bytes)).to_string(),
        Scalar::Int {
            signed: false,
            bytes: 1,
        } => bytes[0].to_string(),
        Scalar::Int {
            signed: false,
            bytes: 2,
        } => u16::from_ne_bytes(arr(bytes)).to_string(),
        Scalar::Int {
            signed: false,
            bytes: 4,
        } => u32::from_ne_bytes(arr(bytes)).to_string(),
        Scalar::Int { signed: false, .. } => u64::from_ne_bytes(arr(bytes)).to_string(),
        Scalar::Float { bytes: 4 } => format!("{:.2}", f32::from_ne_bytes(arr(bytes))),
        Scalar::Float { .. } => format!("{:.2}", f64::from_ne_bytes(arr(bytes))),
        Scalar::Bool => (bytes[0] != 0).to_string(),
        Scalar::Pointer => format!("{:#x}", u64::from_ne_bytes(arr(bytes))),
    }
}

/// `score=10 time=1.00 pos.x=3.50 items=[1, 2, 3]`, at most `max_fields`
/// fields (then `…`).
pub fn format_state(layout: &Layout, state: &[u8], max_fields: usize) -> String {
    let mut parts = Vec::new();
    for field in layout.fields.iter().take(max_fields) {
        let one = field.scalar.size();
        let Some(bytes) = state.get(field.offset..field.offset + field.size()) else {
            continue;
        };
        let value = if field.count == 1 {
            format_value(field.scalar, bytes)
        } else {
            const SHOWN: usize = 4;
            let mut items: Vec<String> = bytes
                .chunks(one)
                .take(SHOWN)
                .map(|b| format_value(field.scalar, b))
                .collect();
            if field.count > SHOWN {
                items.push(format!("… {} in all", field.count));
            }
            format!("[{}]", items.join(", "))
        };
        parts.push(format!("{}={value}", field.name));
    }
    if layout.fields.len() > max_fields {
        parts.push("…".into());
    }
    parts.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn int(name: &str, offset: usize) -> Field {
        Field {
            name: name.into(),
            offset,
            scalar: Scalar::Int {
                signed: true,
                bytes: 4,
            },
            count: 1,
            transient: false,
        }
    }

    #[test]
    fn widening() {
        let i8s = Scalar::Int {
            signed: true,
            bytes: 1,
        };
        let i32s = Scalar::Int {
            signed: true,
            bytes: 4,
        };
        let u32s = Scalar::Int {
            signed: false,
            bytes: 4,
        };
        let i64s = Scalar::Int {
            signed: true,
            bytes: 8,
        };
        assert!(i8s.widens_to(i32s));
        assert!(!i32s.widens_to(i8s));
        assert!(u32s.widens_to(i64s));
        assert!(!u32s.widens_to(i32s));
        assert!(i32s.widens_to(Scalar::Float { bytes: 8 }));
        assert!(!i64s.widens_to(Scalar::Float { bytes: 8 }));
        assert!(Scalar::Float { bytes: 4 }.widens_to(Scalar::Float { bytes: 8 }));
        assert!(!Scalar::Float { bytes: 8 }.widens_to(Scalar::Float { bytes: 4 }));
    }

    #[test]
    fn formats_fields_by_name() {
        let layout = Layout {
            size: 16,
            fields: vec![
                int("score", 0),
                Field {
                    name: "time".into(),
                    offset: 8,
                    scalar: Scalar::Float { bytes: 8 },
                    count: 1,
                    transient: false,
                },
            ],
            source: Source::Schema,
        };
        let mut state = vec![0u8; 16];
        state[..4].copy_from_slice(&10i32.to_ne_bytes());
        state[8..].copy_from_slice(&1.0f64.to_ne_bytes());
        assert_eq!(format_state(&layout, &state, 8), "score=10 time=1.00");
        assert!(layout.validate().is_ok());
    }

    #[test]
    fn validate_rejects_overlap_and_overflow() {
        let overlap = Layout {
            size: 8,
            fields: vec![int("a", 0), int("b", 2)],
            source: Source::Schema,
        };
        assert!(overlap.validate().unwrap_err().contains("overlap"));
        let past = Layout {
            size: 4,
            fields: vec![int("a", 2)],
            source: Source::Schema,
        };
        assert!(
            past.validate()
                .unwrap_err()
                .contains("past the 4-byte state")
        );
    }
}
