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

/// What is known about the state on one side of a swap.
#[derive(Clone, Copy)]
pub struct Side<'a> {
    pub size: usize,
    /// The plugin's declared state version (0 without the extended ABI).
    pub version: u32,
    pub layout: Option<&'a Layout>,
    /// The incoming version has a `migrate` hook.
    pub has_hook: bool,
}

/// What a swap does to the state.
#[derive(Clone, Debug, PartialEq)]
pub enum Decision {
    /// The new code runs on the very same bytes.
    Keep,
    /// A new block is made: by `plan` (when both layouts are known), then by
    /// the new version's hook (when it has one).
    Migrate { plan: Option<Plan>, summary: String },
}

/// Decides how the state crosses from `old` to `new`. `Err` says why it
/// cannot: the new version is then refused (exit code 10).
pub fn decide(old: Side, new: Side) -> Result<Decision, String> {
    let both = old.layout.zip(new.layout);
    let changed_shape = old.size != new.size || both.is_some_and(|(o, n)| !o.same_shape(n));
    let changed_version = old.version != new.version;
    if !changed_shape && !changed_version {
        return Ok(Decision::Keep);
    }
    if let Some((o, n)) = both {
        let plan = plan(o, n).map_err(|e| e.to_string())?;
        let mut summary = plan.summary();
        if changed_version {
            let v = format!("state version {} → {}", old.version, new.version);
            summary = if summary.is_empty() {
                v
            } else {
                format!("{summary}; {v}")
            };
        }
        if summary.is_empty() {
            summary = format!("{} → {} bytes", old.size, new.size);
        }
        return Ok(Decision::Migrate {
            plan: Some(plan),
            summary,
        });
    }
    if new.has_hook {
        return Ok(Decision::Migrate {
            plan: None,
            summary: format!(
                "by the plugin's migrate hook ({} → {} bytes)",
                old.size, new.size
            ),
        });
    }
    let what = if changed_shape {
        format!("the state changed from {} to {} bytes", old.size, new.size)
    } else {
        format!(
            "state_version changed from {} to {}",
            old.version, new.version
        )
    };
    let unknown = match (old.layout.is_some(), new.layout.is_some()) {
        (false, false) => "neither version's layout is known",
        (true, false) => "the new version's layout is not known",
        _ => "the running version's layout is not known",
    };
    Err(format!(
        "{what}, but {unknown} and there is no migrate hook: build with -g or declare a schema \
         (or restart hotreload to start over with the new state)"
    ))
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
    fn decide_keeps_migrates_or_refuses() {
        let a = layout(4, vec![f("score", 0, I32)]);
        let b = layout(8, vec![f("score", 0, I32), f("lives", 4, I32)]);
        fn side(layout: Option<&Layout>, size: usize, version: u32, has_hook: bool) -> Side<'_> {
            Side {
                size,
                version,
                layout,
                has_hook,
            }
        }
        assert_eq!(
            decide(side(Some(&a), 4, 0, false), side(Some(&a), 4, 0, false)),
            Ok(Decision::Keep)
        );
        assert_eq!(
            decide(side(None, 4, 0, false), side(None, 4, 0, false)),
            Ok(Decision::Keep)
        );
        match decide(side(Some(&a), 4, 0, false), side(Some(&b), 8, 0, false)) {
            Ok(Decision::Migrate {
                plan: Some(_),
                summary,
            }) => assert_eq!(summary, "+lives"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            decide(side(None, 4, 0, false), side(None, 8, 0, true)),
            Ok(Decision::Migrate { plan: None, .. })
        ));
        let refused =
            decide(side(None, 4, 0, false), side(Some(&b), 8, 0, false)).expect_err("refused");
        assert!(
            refused.contains("4 to 8 bytes")
                && refused.contains("running version's layout is not known"),
            "{refused}"
        );
        let version =
            decide(side(None, 4, 1, false), side(None, 4, 2, false)).expect_err("refused");
        assert!(
            version.contains("state_version changed from 1 to 2"),
            "{version}"
        );
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
