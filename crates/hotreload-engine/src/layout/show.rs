//! The state as text, for `[state]` lines: `score=10 time=1.5
//! mode=RUN name="ada" grid=[[0, 1], [2, 3]]`.
//!
//! Without a selection a line stays short: the first [`COMPACT_FIELDS`]
//! fields, [`COMPACT_ELEMENTS`] elements per dimension, strings cut at
//! [`COMPACT_TEXT`] characters, each cut saying so. With `--state-fields
//! PATTERN` every field the patterns select is shown whole, every element of
//! every array. Values read as the program means them: floats in the
//! shortest form that reads back to the same value (`0.004`, `1.0`,
//! `1e-7`), enums by enumerator (`RUN`, or the number when none has that
//! value), C `char` arrays as a quoted string up to the first NUL with
//! anything unprintable escaped.

use std::fmt::Write as _;

use super::{Field, Layout, Scalar, Shown};
use crate::pattern::selects_field;

/// Fields shown without a selection.
pub const COMPACT_FIELDS: usize = 12;
/// Elements shown per dimension without a selection.
pub const COMPACT_ELEMENTS: usize = 4;
/// Characters of a string shown without a selection.
pub const COMPACT_TEXT: usize = 40;

/// The fields of `state` as `name=value` pairs: the compact line when
/// `patterns` is empty, else every field they select, whole.
pub fn format_state(layout: &Layout, state: &[u8], patterns: &[String]) -> String {
    let full = !patterns.is_empty();
    let mut parts = Vec::new();
    let mut chosen = layout
        .fields
        .iter()
        .filter(|f| !full || patterns.iter().any(|p| selects_field(p, &f.name)));
    for field in chosen.by_ref() {
        if !full && parts.len() == COMPACT_FIELDS {
            parts.push(format!(
                "… ({} in all; --state-fields '*' shows them)",
                super::plural(layout.fields.len(), "field")
            ));
            break;
        }
        let Some(bytes) = state.get(field.offset..field.offset + field.size()) else {
            continue;
        };
        let mut value = String::new();
        elements(field, bytes, &field.dims, full, &mut value);
        parts.push(format!("{}={value}", field.name));
    }
    parts.join(" ")
}

/// Appends the value of an array of `dims` (or of one scalar) in `bytes`.
fn elements(field: &Field, bytes: &[u8], dims: &[usize], full: bool, out: &mut String) {
    let one = field.scalar.size();
    let Some((&outer, inner)) = dims.split_first() else {
        out.push_str(&element(field, bytes));
        return;
    };
    if inner.is_empty() && field.shown == Shown::Text && one == 1 {
        text(bytes, full, out);
        return;
    }
    let stride = inner.iter().product::<usize>() * one;
    let shown = if full {
        outer
    } else {
        outer.min(COMPACT_ELEMENTS)
    };
    out.push('[');
    for (i, item) in bytes.chunks(stride.max(1)).take(shown).enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        elements(field, item, inner, full, out);
    }
    if shown < outer {
        let _ = write!(out, ", … {outer} in all");
    }
    out.push(']');
}

fn element(field: &Field, bytes: &[u8]) -> String {
    if let (Shown::Enum(names), Scalar::Int { signed, bytes: n }) = (&field.shown, field.scalar)
        && let Some(value) = read_int(bytes, signed, n)
        && let Some(e) = names.iter().find(|e| e.value == value)
    {
        return e.name.clone();
    }
    format_value(field.scalar, bytes)
}

/// An integer of `bytes` bytes (native endianness), sign- or zero-extended.
pub fn read_int(raw: &[u8], signed: bool, bytes: u8) -> Option<i128> {
    let n = bytes as usize;
    if !(1..=8).contains(&n) {
        return None;
    }
    let mut word = [0u8; 8];
    word[..n].copy_from_slice(raw.get(..n)?);
    let unsigned = u64::from_ne_bytes(word);
    let shift = 64 - 8 * n as u32;
    Some(if signed {
        i128::from(((unsigned << shift) as i64) >> shift)
    } else {
        i128::from(unsigned)
    })
}

/// A float of 4 or 8 bytes (native endianness), as an `f64`.
pub fn read_float(raw: &[u8], bytes: u8) -> Option<f64> {
    match bytes {
        4 => Some(f64::from(f32::from_ne_bytes(
            raw.get(..4)?.try_into().ok()?,
        ))),
        8 => Some(f64::from_ne_bytes(raw.get(..8)?.try_into().ok()?)),
        _ => None,
    }
}

/// Reads one scalar from `bytes` (native endianness) as text; floats in the
/// shortest form that reads back to the same value of their own width.
pub fn format_value(scalar: Scalar, bytes: &[u8]) -> String {
    let text = match scalar {
        Scalar::Int { signed, bytes: n } => read_int(bytes, signed, n).map(|v| v.to_string()),
        Scalar::Float { bytes: 4 } => bytes
            .get(..4)
            .and_then(|b| b.try_into().ok())
            .map(|b| format!("{:?}", f32::from_ne_bytes(b))),
        Scalar::Float { bytes: n } => read_float(bytes, n).map(|v| format!("{v:?}")),
        Scalar::Bool => bytes.first().map(|&b| (b != 0).to_string()),
        Scalar::Pointer => read_int(bytes, false, 8).map(|v| format!("{v:#x}")),
    };
    text.unwrap_or_else(|| "?".into())
}

/// `"ada"`: up to the first NUL, quoted, with quotes, backslashes, control
/// characters and bytes that are not UTF-8 escaped.
fn text(bytes: &[u8], full: bool, out: &mut String) {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    let mut left = if full { usize::MAX } else { COMPACT_TEXT };
    out.push('"');
    'chunks: for chunk in bytes[..end].utf8_chunks() {
        for c in chunk.valid().chars() {
            if left == 0 {
                out.push('…');
                break 'chunks;
            }
            left -= 1;
            match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                '\n' => out.push_str("\\n"),
                '\t' => out.push_str("\\t"),
                '\r' => out.push_str("\\r"),
                c if c.is_control() => {
                    let _ = write!(out, "\\u{{{:x}}}", c as u32);
                }
                c => out.push(c),
            }
        }
        for b in chunk.invalid() {
            if left == 0 {
                out.push('…');
                break 'chunks;
            }
            left -= 1;
            let _ = write!(out, "\\x{b:02x}");
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::layout::Enumerator;
    use crate::layout::testing::{I8 as CHAR, I32, ints};

    fn layout(fields: Vec<Field>) -> Layout {
        let size = fields
            .iter()
            .map(|f| f.offset + f.size())
            .max()
            .unwrap_or(0);
        crate::layout::testing::layout(size, fields)
    }

    #[test]
    fn fields_by_name_with_floats_in_their_shortest_form() {
        let l = layout(vec![
            Field::new("score", 0, I32, 1),
            Field::new("time", 8, Scalar::Float { bytes: 8 }, 1),
            Field::new("tiny", 16, Scalar::Float { bytes: 4 }, 1),
            Field::new("rate", 20, Scalar::Float { bytes: 4 }, 1),
        ]);
        let mut state = vec![0u8; 24];
        state[..4].copy_from_slice(&10i32.to_ne_bytes());
        state[8..16].copy_from_slice(&1.0f64.to_ne_bytes());
        state[16..20].copy_from_slice(&0.004f32.to_ne_bytes());
        state[20..24].copy_from_slice(&1e-7f32.to_ne_bytes());
        assert_eq!(
            format_state(&l, &state, &[]),
            "score=10 time=1.0 tiny=0.004 rate=1e-7"
        );
        assert_eq!(
            format_value(Scalar::Float { bytes: 8 }, &0.1f64.to_ne_bytes()),
            "0.1"
        );
        assert_eq!(
            format_value(Scalar::Float { bytes: 4 }, &0.0f32.to_ne_bytes()),
            "0.0"
        );
    }

    #[test]
    fn enums_by_name_and_unknown_values_as_numbers() {
        let names: Arc<[Enumerator]> = Arc::from(vec![
            Enumerator {
                value: 0,
                name: "IDLE".into(),
            },
            Enumerator {
                value: -1,
                name: "RUN".into(),
            },
        ]);
        let mut mode = Field::new("mode", 0, I32, 1);
        mode.shown = Shown::Enum(names);
        let l = layout(vec![mode]);
        assert_eq!(format_state(&l, &ints(&[-1]), &[]), "mode=RUN");
        assert_eq!(format_state(&l, &ints(&[7]), &[]), "mode=7");
    }

    #[test]
    fn char_arrays_are_strings_up_to_the_first_nul() {
        let mut name = Field::new("name", 0, CHAR, 16);
        name.shown = Shown::Text;
        let l = layout(vec![name]);
        let mut state = b"ada \"the\" \\\n".to_vec();
        state.resize(16, 0);
        state[14] = b'x';
        assert_eq!(format_state(&l, &state, &[]), r#"name="ada \"the\" \\\n""#);
        let odd = [
            b'o', 0xff, b'k', 0x01, 0xc3, 0xa9, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        ];
        assert_eq!(format_state(&l, &odd, &[]), r#"name="o\xffk\u{1}é""#);
        let mut names = Field::array("names", 0, CHAR, vec![2, 4]);
        names.shown = Shown::Text;
        assert_eq!(
            format_state(&layout(vec![names]), b"ab\0\0cdef", &[]),
            r#"names=["ab", "cdef"]"#
        );
    }

    #[test]
    fn compact_lines_cut_and_say_so_and_patterns_show_everything() {
        let grid = Field::array("grid", 0, I32, vec![2, 6]);
        let l = layout(vec![grid]);
        let state = ints(&[0, 1, 2, 3, 4, 5, 10, 11, 12, 13, 14, 15]);
        assert_eq!(
            format_state(&l, &state, &[]),
            "grid=[[0, 1, 2, 3, … 6 in all], [10, 11, 12, 13, … 6 in all]]"
        );
        assert_eq!(
            format_state(&l, &state, &["grid".into()]),
            "grid=[[0, 1, 2, 3, 4, 5], [10, 11, 12, 13, 14, 15]]"
        );
        let many: Vec<Field> = (0..14)
            .map(|i| Field::new(format!("f{i}"), i * 4, I32, 1))
            .collect();
        let l = layout(many);
        let state = ints(&(0..14).collect::<Vec<_>>());
        let compact = format_state(&l, &state, &[]);
        assert!(
            compact.ends_with("f11=11 … (14 fields in all; --state-fields '*' shows them)"),
            "{compact}"
        );
        let all = format_state(&l, &state, &["*".into()]);
        assert!(all.ends_with("f12=12 f13=13"), "{all}");
        assert_eq!(
            format_state(&l, &state, &["f1?".into()]),
            "f10=10 f11=11 f12=12 f13=13"
        );
    }
}
