//! Moving the state from one layout to another, field by field.
//!
//! When a new version changes the state (adds, removes, reorders, widens
//! fields), the host copies every field the two layouts share by name into a
//! fresh zeroed block of the new size, converting where a numeric widening
//! allows (int32 → int64, float → double), leaves new fields zero, and
//! reports the ones dropped. The plugin's own `migrate` hook, if any, runs
//! afterwards to fix up what names alone cannot say. A shared name whose type
//! changed in a way that could lose values (int64 → int32, double → int) is
//! refused: the new version is rejected, saying which field and why.

use crate::layout::{Field, Layout, Scalar};

/// How to turn one state into the other.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    copies: Vec<Copy>,
    /// Fields only the new layout has (they start at zero).
    pub added: Vec<String>,
    /// Fields only the old layout has (their values are gone).
    pub dropped: Vec<String>,
    /// Shared fields whose type was widened: `score (int32 → int64)`.
    pub widened: Vec<String>,
    /// Shared fields that moved to another offset.
    pub moved: Vec<String>,
    pub old_size: usize,
    pub new_size: usize,
}

#[derive(Clone, Debug, PartialEq)]
struct Copy {
    from: usize,
    to: usize,
    from_scalar: Scalar,
    to_scalar: Scalar,
    count: usize,
}

/// Why two layouts cannot be migrated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Incompatible {
    pub field: String,
    pub from: String,
    pub to: String,
}

impl std::fmt::Display for Incompatible {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "field {}: expected its type to stay {} or widen, found {} (values could be lost)",
            self.field, self.from, self.to
        )
    }
}

fn describe(field: &Field) -> String {
    if field.count == 1 {
        field.scalar.to_string()
    } else {
        format!("{}[{}]", field.scalar, field.count)
    }
}

pub fn plan(old: &Layout, new: &Layout) -> Result<Plan, Incompatible> {
    let mut plan = Plan {
        copies: Vec::new(),
        added: Vec::new(),
        dropped: Vec::new(),
        widened: Vec::new(),
        moved: Vec::new(),
        old_size: old.size,
        new_size: new.size,
    };
    for n in &new.fields {
        let Some(o) = old.field(&n.name) else {
            plan.added.push(n.name.clone());
            continue;
        };
        if !o.scalar.widens_to(n.scalar) {
            return Err(Incompatible {
                field: n.name.clone(),
                from: describe(o),
                to: describe(n),
            });
        }
        if o.scalar != n.scalar {
            plan.widened
                .push(format!("{} ({} → {})", n.name, o.scalar, n.scalar));
        }
        if o.offset != n.offset {
            plan.moved.push(n.name.clone());
        }
        if n.transient {
            // Reset on every reload anyway: nothing to carry over.
            continue;
        }
        plan.copies.push(Copy {
            from: o.offset,
            to: n.offset,
            from_scalar: o.scalar,
            to_scalar: n.scalar,
            // An array that shrinks keeps its first elements; one that grows
            // gets zeroes at the end.
            count: o.count.min(n.count),
        });
    }
    plan.dropped = old
        .fields
        .iter()
        .filter(|o| new.field(&o.name).is_none())
        .map(|o| o.name.clone())
        .collect();
    Ok(plan)
}

impl Plan {
    /// Whether anything changes at all.
    pub fn is_identity(&self) -> bool {
        self.old_size == self.new_size
            && self.added.is_empty()
            && self.dropped.is_empty()
            && self.widened.is_empty()
            && self.moved.is_empty()
    }

    /// Copies what the plan says from `old` into `new`, which must be zeroed
    /// and `new_size` long.
    pub fn apply(&self, old: &[u8], new: &mut [u8]) {
        for c in &self.copies {
            let (from_size, to_size) = (c.from_scalar.size(), c.to_scalar.size());
            for i in 0..c.count {
                let src = old.get(c.from + i * from_size..c.from + (i + 1) * from_size);
                let dst = new.get_mut(c.to + i * to_size..c.to + (i + 1) * to_size);
                if let (Some(src), Some(dst)) = (src, dst) {
                    convert(c.from_scalar, src, c.to_scalar, dst);
                }
            }
        }
    }

    /// `+lives -bonus ~score (int32 → int64)`, for the reload line.
    pub fn summary(&self) -> String {
        let mut parts: Vec<String> = self.added.iter().map(|n| format!("+{n}")).collect();
        parts.extend(self.dropped.iter().map(|n| format!("-{n}")));
        parts.extend(self.widened.iter().map(|n| format!("~{n}")));
        if parts.is_empty() && !self.moved.is_empty() {
            parts.push(format!("reordered {}", self.moved.join(", ")));
        }
        parts.join(" ")
    }
}

/// Reads one scalar and writes it as another; `plan` only pairs scalars
/// where this loses nothing.
fn convert(from: Scalar, src: &[u8], to: Scalar, dst: &mut [u8]) {
    if from == to {
        dst.copy_from_slice(src);
        return;
    }
    enum Value {
        Int(i128),
        Float(f64),
    }
    let value = match from {
        Scalar::Int { signed, bytes } => {
            let mut raw = [0u8; 8];
            raw[..bytes as usize].copy_from_slice(&src[..bytes as usize]);
            let unsigned = u64::from_ne_bytes(raw) as i128;
            let shift = 64 - 8 * bytes as u32;
            Value::Int(if signed {
                (((unsigned as u64) << shift) as i64 >> shift) as i128
            } else {
                unsigned
            })
        }
        Scalar::Float { bytes: 4 } => {
            Value::Float(f32::from_ne_bytes([src[0], src[1], src[2], src[3]]) as f64)
        }
        Scalar::Float { .. } => {
            let mut raw = [0u8; 8];
            raw.copy_from_slice(&src[..8]);
            Value::Float(f64::from_ne_bytes(raw))
        }
        Scalar::Bool => Value::Int(i128::from(src[0] != 0)),
        Scalar::Pointer => return,
    };
    match (to, value) {
        (Scalar::Int { bytes, .. }, Value::Int(v)) => {
            dst.copy_from_slice(&(v as i64).to_ne_bytes()[..bytes as usize]);
        }
        (Scalar::Float { bytes: 4 }, Value::Int(v)) => {
            dst.copy_from_slice(&(v as f32).to_ne_bytes())
        }
        (Scalar::Float { .. }, Value::Int(v)) => dst.copy_from_slice(&(v as f64).to_ne_bytes()),
        (Scalar::Float { bytes: 4 }, Value::Float(v)) => {
            dst.copy_from_slice(&(v as f32).to_ne_bytes())
        }
        (Scalar::Float { .. }, Value::Float(v)) => dst.copy_from_slice(&v.to_ne_bytes()),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::Source;

    fn f(name: &str, offset: usize, scalar: Scalar) -> Field {
        Field {
            name: name.into(),
            offset,
            scalar,
            count: 1,
            transient: false,
        }
    }
    const I32: Scalar = Scalar::Int {
        signed: true,
        bytes: 4,
    };
    const I64: Scalar = Scalar::Int {
        signed: true,
        bytes: 8,
    };
    const I8: Scalar = Scalar::Int {
        signed: true,
        bytes: 1,
    };
    const F64: Scalar = Scalar::Float { bytes: 8 };

    fn layout(size: usize, fields: Vec<Field>) -> Layout {
        Layout {
            size,
            fields,
            source: Source::Schema,
        }
    }

    #[test]
    fn adds_keeps_drops_reorders_and_widens() {
        let old = layout(
            12,
            vec![f("score", 0, I32), f("bonus", 4, I32), f("level", 8, I8)],
        );
        let new = layout(
            24,
            vec![f("lives", 0, I32), f("score", 8, I64), f("level", 16, I32)],
        );
        let plan = plan(&old, &new).expect("compatible");
        assert_eq!(plan.added, vec!["lives"]);
        assert_eq!(plan.dropped, vec!["bonus"]);
        assert_eq!(
            plan.summary(),
            "+lives -bonus ~score (int32 → int64) ~level (int8 → int32)"
        );
        let mut old_bytes = vec![0u8; 12];
        old_bytes[..4].copy_from_slice(&(-7i32).to_ne_bytes());
        old_bytes[4..8].copy_from_slice(&99i32.to_ne_bytes());
        old_bytes[8] = (-3i8) as u8;
        let mut new_bytes = vec![0u8; 24];
        plan.apply(&old_bytes, &mut new_bytes);
        assert_eq!(
            i32::from_ne_bytes(new_bytes[..4].try_into().expect("4")),
            0,
            "new field zero"
        );
        assert_eq!(
            i64::from_ne_bytes(new_bytes[8..16].try_into().expect("8")),
            -7,
            "sign kept"
        );
        assert_eq!(
            i32::from_ne_bytes(new_bytes[16..20].try_into().expect("4")),
            -3
        );
    }

    #[test]
    fn int_to_double_and_reorder_only() {
        let old = layout(16, vec![f("a", 0, I32), f("b", 8, F64)]);
        let new = layout(16, vec![f("b", 0, F64), f("a", 8, F64)]);
        let plan = plan(&old, &new).expect("compatible");
        let mut old_bytes = vec![0u8; 16];
        old_bytes[..4].copy_from_slice(&5i32.to_ne_bytes());
        old_bytes[8..].copy_from_slice(&2.5f64.to_ne_bytes());
        let mut new_bytes = vec![0u8; 16];
        plan.apply(&old_bytes, &mut new_bytes);
        assert_eq!(
            f64::from_ne_bytes(new_bytes[..8].try_into().expect("8")),
            2.5
        );
        assert_eq!(
            f64::from_ne_bytes(new_bytes[8..].try_into().expect("8")),
            5.0
        );
        let same = super::plan(&old, &old).expect("same");
        assert!(same.is_identity());
    }

    #[test]
    fn narrowing_is_refused_saying_why() {
        let old = layout(8, vec![f("score", 0, I64)]);
        let new = layout(4, vec![f("score", 0, I32)]);
        let err = plan(&old, &new).expect_err("narrowing");
        assert_eq!(
            err.to_string(),
            "field score: expected its type to stay int64 or widen, found int32 (values could be lost)"
        );
    }
}
