//! The state's values as JSON, by field path (`{"score": 10, "pos.x":
//! 1.5, "grid": [[1, 2], [3, 4]], "name": "ada"}`), for `state --json`: the
//! same paths `get` and `set` take, every element of every array (nothing
//! cut, unlike the compact state line).

use serde_json::{Map, Value, json};

use super::show::{format_value, read_float, read_int};
use super::{Field, Layout, Scalar, Shown};

/// Every field of `layout` in `state`, by its path.
pub fn state_values(layout: &Layout, state: &[u8]) -> Value {
    let mut out = Map::new();
    for field in &layout.fields {
        if let Some(bytes) = state.get(field.offset..field.offset + field.size()) {
            out.insert(field.name.clone(), elements(field, bytes, &field.dims));
        }
    }
    Value::Object(out)
}

fn elements(field: &Field, bytes: &[u8], dims: &[usize]) -> Value {
    let one = field.scalar.size();
    let Some((_, inner)) = dims.split_first() else {
        return element(field, bytes);
    };
    if inner.is_empty() && field.shown == Shown::Text && one == 1 {
        let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
        return json!(String::from_utf8_lossy(&bytes[..end]));
    }
    let stride = (inner.iter().product::<usize>() * one).max(1);
    Value::Array(
        bytes
            .chunks(stride)
            .map(|item| elements(field, item, inner))
            .collect(),
    )
}

fn element(field: &Field, bytes: &[u8]) -> Value {
    match field.scalar {
        Scalar::Int { signed, bytes: n } => {
            let Some(v) = read_int(bytes, signed, n) else {
                return Value::Null;
            };
            if let Shown::Enum(names) = &field.shown
                && let Some(e) = names.iter().find(|e| e.value == v)
            {
                return json!(e.name);
            }
            match (i64::try_from(v), u64::try_from(v)) {
                (Ok(i), _) => json!(i),
                (_, Ok(u)) => json!(u),
                _ => Value::Null,
            }
        }
        Scalar::Float { bytes: n } => match read_float(bytes, n) {
            // JSON has no NaN or infinity: those go as text.
            Some(v) if !v.is_finite() => json!(format_value(field.scalar, bytes)),
            // The shortest text of the float's own width reads back to it
            // (0.1f, not 0.10000000149011612).
            Some(_) => {
                serde_json::from_str(&format_value(field.scalar, bytes)).unwrap_or(Value::Null)
            }
            None => Value::Null,
        },
        Scalar::Bool => json!(bytes.first().is_some_and(|&b| b != 0)),
        Scalar::Pointer => json!(format_value(field.scalar, bytes)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::Field;

    #[test]
    fn every_kind_of_field_becomes_its_json_value() {
        let layout = Layout {
            size: 32,
            source: crate::layout::Source::Schema,
            fields: vec![
                Field::new(
                    "score",
                    0,
                    Scalar::Int {
                        signed: true,
                        bytes: 4,
                    },
                    1,
                ),
                Field::new("speed", 4, Scalar::Float { bytes: 4 }, 1),
                Field::array(
                    "grid",
                    8,
                    Scalar::Int {
                        signed: false,
                        bytes: 1,
                    },
                    vec![2, 2],
                ),
                Field::new("alive", 12, Scalar::Bool, 1),
                Field::new(
                    "big",
                    16,
                    Scalar::Int {
                        signed: false,
                        bytes: 8,
                    },
                    1,
                ),
                Field::new("odd", 24, Scalar::Float { bytes: 8 }, 1),
            ],
        };
        let mut state = vec![0u8; 32];
        state[..4].copy_from_slice(&(-7i32).to_ne_bytes());
        state[4..8].copy_from_slice(&0.1f32.to_ne_bytes());
        state[8..12].copy_from_slice(&[1, 2, 3, 4]);
        state[12] = 1;
        state[16..24].copy_from_slice(&u64::MAX.to_ne_bytes());
        state[24..32].copy_from_slice(&f64::NAN.to_ne_bytes());
        let v = state_values(&layout, &state);
        assert_eq!(v["score"], -7);
        assert_eq!(v["speed"].to_string(), "0.1");
        assert_eq!(v["grid"], json!([[1, 2], [3, 4]]));
        assert_eq!(v["alive"], true);
        assert_eq!(v["big"], json!(u64::MAX));
        assert_eq!(v["odd"], "NaN");
    }
}
