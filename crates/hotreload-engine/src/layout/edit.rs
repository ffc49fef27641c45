//! Naming one value of the state by its path (`hp`, `pos.x`,
//! `enemies[2].hp`, `grid[1][2]`) and turning a value typed by a person
//! into its bytes, checked against the layout: the name, the type, the
//! range, the array bounds. What `get`, `set` and `undo` on the control
//! socket stand on.

use super::show::{format_value, read_int};
use super::{Layout, Scalar, Shown};

/// One value of the state: where its bytes are and how to read them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// The path as the layout names it, with the indices given.
    pub path: String,
    pub offset: usize,
    pub scalar: Scalar,
    /// Elements: 1, or a whole `char` array taken as a string.
    pub count: usize,
    pub shown: Shown,
}

impl Target {
    pub fn size(&self) -> usize {
        self.scalar.size() * self.count
    }

    /// The value these bytes hold, as a person reads it.
    pub fn format(&self, bytes: &[u8]) -> String {
        if self.count > 1 {
            let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
            return format!("{:?}", String::from_utf8_lossy(&bytes[..end]));
        }
        if let (Shown::Enum(names), Scalar::Int { signed, bytes: n }) = (&self.shown, self.scalar)
            && let Some(v) = read_int(bytes, signed, n)
            && let Some(e) = names.iter().find(|e| e.value == v)
        {
            return e.name.clone();
        }
        format_value(self.scalar, bytes)
    }
}

/// The value at `path` in `layout`.
pub fn resolve(layout: &Layout, path: &str) -> Result<Target, String> {
    let path = path.trim();
    if let Some(field) = layout.field(path) {
        let text = field.shown == Shown::Text && field.dims.len() == 1;
        if field.count != 1 && !text {
            return Err(format!(
                "expected one value, found {path} to be an array {}{}: name an element, e.g. {path}{}",
                field.name,
                field.extent(),
                "[0]".repeat(field.dims.len())
            ));
        }
        return Ok(Target {
            path: path.to_owned(),
            offset: field.offset,
            scalar: field.scalar,
            count: if text { field.count } else { 1 },
            shown: field.shown.clone(),
        });
    }
    // Trailing indices into an array of scalars: `grid[1][2]`.
    let mut base = path;
    let mut indices = Vec::new();
    while let Some(open) = base.rfind('[') {
        if !base.ends_with(']') {
            break;
        }
        let inside = &base[open + 1..base.len() - 1];
        let index: usize = inside
            .trim()
            .parse()
            .map_err(|_| format!("expected an index (a number) in {path}, found [{inside}]"))?;
        indices.push(index);
        base = &base[..open];
        if let Some(field) = layout.field(base) {
            indices.reverse();
            if indices.len() != field.dims.len() {
                return Err(format!(
                    "expected {} {} for {base}{}, found {}",
                    field.dims.len(),
                    if field.dims.len() == 1 {
                        "index"
                    } else {
                        "indices"
                    },
                    field.extent(),
                    indices.len()
                ));
            }
            let mut element = 0usize;
            for (i, (&index, &extent)) in indices.iter().zip(&field.dims).enumerate() {
                if index >= extent {
                    return Err(format!(
                        "expected index {} of {base}{} to be below {extent}, found {index}",
                        i + 1,
                        field.extent()
                    ));
                }
                element = element * extent + index;
            }
            return Ok(Target {
                path: path.to_owned(),
                offset: field.offset + element * field.scalar.size(),
                scalar: field.scalar,
                count: 1,
                shown: field.shown.clone(),
            });
        }
    }
    if let Some(why) = struct_path_refusal(layout, path) {
        return Err(why);
    }
    let names: Vec<&str> = layout
        .fields
        .iter()
        .take(12)
        .map(|f| f.name.as_str())
        .collect();
    Err(format!(
        "expected a field of the state, found no {path:?}; the fields are {}{}",
        names.join(", "),
        if layout.fields.len() > names.len() {
            ", …"
        } else {
            ""
        }
    ))
}

/// Why a path that names no leaf field is wrong, when it goes through an
/// array of structs or stops at a struct: an index past the array's end
/// (`enemies[3].hp` of three), or a struct where a value is wanted
/// (`enemies[1]`, `pos`).
fn struct_path_refusal(layout: &Layout, path: &str) -> Option<String> {
    let inside = format!("{path}.");
    if let Some(first) = layout.fields.iter().find(|f| f.name.starts_with(&inside)) {
        return Some(format!(
            "expected one value, found {path} to be a struct: name one of its fields, e.g. {}",
            first.name
        ));
    }
    let element = format!("{path}[");
    if let Some(first) = layout.fields.iter().find(|f| f.name.starts_with(&element)) {
        return Some(format!(
            "expected one value, found {path} to be an array of structs: name a field of one element, e.g. {}",
            first.name
        ));
    }
    let mut from = 0;
    while let Some(open) = path[from..].find('[').map(|i| from + i) {
        let close = path[open..].find(']').map(|i| open + i)?;
        let index: usize = path[open + 1..close].trim().parse().ok()?;
        let prefix = &path[..open];
        let extent = (0..)
            .take_while(|n| {
                let element = format!("{prefix}[{n}]");
                layout.fields.iter().any(|f| {
                    f.name
                        .strip_prefix(&element)
                        .is_some_and(|rest| rest.is_empty() || rest.starts_with(['.', '[']))
                })
            })
            .count();
        if extent > 0 && index >= extent {
            return Some(format!(
                "expected an index of {prefix} below {extent} (it has {extent} elements), found {index}"
            ));
        }
        from = close + 1;
    }
    None
}

/// The bytes `value` (as typed) stands for at `target`.
pub fn encode(target: &Target, value: &str) -> Result<Vec<u8>, String> {
    let value = value.trim();
    let path = &target.path;
    if target.count > 1 {
        let text = value
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .unwrap_or(value);
        if text.len() >= target.count {
            return Err(format!(
                "expected at most {} bytes for {path} (a char[{}] with its NUL), found {}",
                target.count - 1,
                target.count,
                text.len()
            ));
        }
        let mut bytes = vec![0u8; target.count];
        bytes[..text.len()].copy_from_slice(text.as_bytes());
        return Ok(bytes);
    }
    match target.scalar {
        Scalar::Int { signed, bytes } => {
            let n = match (&target.shown, value.parse::<i128>()) {
                (_, Ok(n)) => n,
                (Shown::Enum(names), Err(_)) => names
                    .iter()
                    .find(|e| e.name == value)
                    .map(|e| e.value)
                    .ok_or_else(|| {
                        let all: Vec<&str> = names.iter().map(|e| e.name.as_str()).collect();
                        format!(
                            "expected a number or one of {} for {path}, found {value:?}",
                            all.join(", ")
                        )
                    })?,
                (_, Err(_)) => {
                    return Err(format!(
                        "expected an integer for {path} ({}), found {value:?}",
                        type_name(target.scalar)
                    ));
                }
            };
            let bits = 8 * u32::from(bytes);
            let (lo, hi) = if signed {
                (-(1i128 << (bits - 1)), (1i128 << (bits - 1)) - 1)
            } else {
                (0, (1i128 << bits) - 1)
            };
            if n < lo || n > hi {
                return Err(format!(
                    "expected {lo} to {hi} for {path} ({}), found {n}",
                    type_name(target.scalar)
                ));
            }
            Ok((n as i64).to_ne_bytes()[..usize::from(bytes)].to_vec())
        }
        Scalar::Float { bytes } => {
            let v: f64 = value.parse().map_err(|_| {
                format!(
                    "expected a number for {path} ({}), found {value:?}",
                    type_name(target.scalar)
                )
            })?;
            if bytes == 4 {
                if v.is_finite() && v.abs() > f64::from(f32::MAX) {
                    return Err(format!(
                        "expected at most {:e} in magnitude for {path} (float), found {value}",
                        f32::MAX
                    ));
                }
                Ok((v as f32).to_ne_bytes().to_vec())
            } else {
                Ok(v.to_ne_bytes().to_vec())
            }
        }
        Scalar::Bool => match value {
            "true" | "1" => Ok(vec![1]),
            "false" | "0" => Ok(vec![0]),
            _ => Err(format!(
                "expected true, false, 1 or 0 for {path} (bool), found {value:?}"
            )),
        },
        Scalar::Pointer => Err(format!(
            "expected a field that holds a value, found {path} to be a pointer, which set does not write"
        )),
    }
}

fn type_name(scalar: Scalar) -> String {
    match scalar {
        Scalar::Int { signed, bytes } => {
            format!("{}int{}", if signed { "" } else { "u" }, 8 * bytes)
        }
        Scalar::Float { bytes: 4 } => "float".into(),
        Scalar::Float { .. } => "double".into(),
        Scalar::Bool => "bool".into(),
        Scalar::Pointer => "pointer".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::{Field, Source};

    fn layout() -> Layout {
        let mut name = Field::new(
            "name",
            24,
            Scalar::Int {
                signed: true,
                bytes: 1,
            },
            8,
        );
        name.shown = Shown::Text;
        Layout {
            size: 64,
            fields: vec![
                Field::new(
                    "hp",
                    0,
                    Scalar::Int {
                        signed: true,
                        bytes: 4,
                    },
                    1,
                ),
                Field::new("pos.x", 4, Scalar::Float { bytes: 4 }, 1),
                Field::array(
                    "grid",
                    8,
                    Scalar::Int {
                        signed: false,
                        bytes: 1,
                    },
                    vec![2, 3],
                ),
                Field::new("alive", 14, Scalar::Bool, 1),
                Field::new(
                    "enemies[1].hp",
                    16,
                    Scalar::Int {
                        signed: false,
                        bytes: 2,
                    },
                    1,
                ),
                name,
            ],
            source: Source::Schema,
        }
    }

    #[test]
    fn paths_name_scalars_elements_and_strings() {
        let l = layout();
        assert_eq!(resolve(&l, "hp").map(|t| t.offset), Ok(0));
        assert_eq!(resolve(&l, "pos.x").map(|t| t.offset), Ok(4));
        assert_eq!(resolve(&l, "grid[1][2]").map(|t| t.offset), Ok(8 + 5));
        assert_eq!(resolve(&l, "enemies[1].hp").map(|t| t.offset), Ok(16));
        assert_eq!(resolve(&l, "name").map(|t| t.count), Ok(8));
        let refused = |p: &str| resolve(&l, p).expect_err(p);
        assert!(refused("grid").contains("name an element, e.g. grid[0][0]"));
        assert!(refused("grid[2][0]").contains("below 2, found 2"));
        assert!(refused("grid[1]").contains("expected 2 indices"));
        assert!(refused("mana").contains("the fields are hp, pos.x"));
        assert!(refused("grid[x][0]").contains("expected an index"));
    }

    #[test]
    fn values_are_checked_against_the_type_and_range() {
        let l = layout();
        let t = |p: &str| resolve(&l, p).expect(p);
        assert_eq!(encode(&t("hp"), "-5"), Ok((-5i32).to_ne_bytes().to_vec()));
        assert!(
            encode(&t("hp"), "3000000000")
                .expect_err("range")
                .contains("-2147483648 to 2147483647")
        );
        assert!(
            encode(&t("hp"), "1.5")
                .expect_err("type")
                .contains("expected an integer")
        );
        assert!(
            encode(&t("grid[0][0]"), "256")
                .expect_err("range")
                .contains("0 to 255")
        );
        assert_eq!(
            encode(&t("pos.x"), "0.25"),
            Ok(0.25f32.to_ne_bytes().to_vec())
        );
        assert!(
            encode(&t("pos.x"), "1e39")
                .expect_err("float range")
                .contains("magnitude")
        );
        assert_eq!(encode(&t("alive"), "true"), Ok(vec![1]));
        assert!(encode(&t("alive"), "yes").is_err());
        assert_eq!(encode(&t("name"), "\"ada\""), Ok(b"ada\0\0\0\0\0".to_vec()));
        assert!(
            encode(&t("name"), "abcdefgh")
                .expect_err("too long")
                .contains("at most 7")
        );
        assert_eq!(t("name").format(b"ada\0\0\0\0\0"), "\"ada\"");
    }

    #[test]
    fn paths_into_arrays_of_structs_say_the_bound_or_the_fields() {
        let int = Scalar::Int {
            signed: true,
            bytes: 4,
        };
        let l = Layout {
            size: 24,
            fields: (0..3)
                .flat_map(|i| {
                    [
                        Field::new(format!("enemies[{i}].hp"), i * 8, int, 1),
                        Field::new(format!("enemies[{i}].pos.x"), i * 8 + 4, int, 1),
                    ]
                })
                .collect(),
            source: Source::Schema,
        };
        let refused = |p: &str| resolve(&l, p).expect_err(p);
        assert!(
            refused("enemies[3].hp")
                .contains("an index of enemies below 3 (it has 3 elements), found 3"),
            "{}",
            refused("enemies[3].hp")
        );
        assert!(
            refused("enemies[1]")
                .contains("to be a struct: name one of its fields, e.g. enemies[1].hp")
        );
        assert!(refused("enemies[2].pos").contains("e.g. enemies[2].pos.x"));
        assert!(refused("enemies").contains(
            "to be an array of structs: name a field of one element, e.g. enemies[0].hp"
        ));
        assert_eq!(resolve(&l, "enemies[2].pos.x").map(|t| t.offset), Ok(20));
    }
}
