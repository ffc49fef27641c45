//! One scalar into another: which pairs a migration may convert, and the
//! conversion itself, checked value by value.
//!
//! A widening (int8 → int32, float → double) holds every value. A narrowing
//! between numbers (int64 → int32, a change of signedness, int64 → double,
//! double → float, an integer → bool) is allowed too, because the values a
//! state holds at the moment of a swap usually fit: each value is checked
//! as it is copied, and the first that does not fit refuses the migration,
//! naming it. What "fits" means:
//! - into an integer or a bool: the same number exactly (`300` does not fit
//!   `int8`, `-1` does not fit `uint32`, `2` does not fit `bool`);
//! - an integer into a float: the same number exactly (`2^53 + 1` does not
//!   fit `double`);
//! - a float into a narrower float: a finite value stays finite and a
//!   non-zero value stays non-zero, rounded to the nearest `float` (that a
//!   `float` holds fewer digits is what narrowing to it asks for; turning
//!   `1e300` into infinity or `1e-50` into zero is not). Infinities and NaN
//!   carry over as themselves.
//!
//! A float never becomes an integer (its fractions are its point, and
//! whether the values of the moment happen to be whole is chance), and a
//! pointer never becomes anything else nor anything else a pointer.

use crate::layout::Scalar;
use crate::layout::show::{read_float, read_int};

/// How a pair of scalars converts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Kind {
    /// The same type: bytes are copied as they are.
    Same,
    /// Every value fits.
    Widen,
    /// Each value is checked.
    Narrow,
}

/// How `from` converts to `to`, or why it cannot.
pub(super) fn classify(from: Scalar, to: Scalar) -> Result<Kind, &'static str> {
    use Scalar::*;
    if from == to {
        return Ok(Kind::Same);
    }
    if from.widens_to(to) {
        return Ok(Kind::Widen);
    }
    match (from, to) {
        (Int { .. } | Bool, Int { .. } | Bool | Float { .. }) | (Float { .. }, Float { .. }) => {
            Ok(Kind::Narrow)
        }
        (Float { .. }, Int { .. } | Bool) => Err("a float's fractions would be lost"),
        (Pointer, _) => Err("an address means nothing as a number"),
        (_, Pointer) => Err("a number is not an address"),
    }
}

/// A value read from a field, for converting and for messages.
#[derive(Clone, Copy)]
enum Value {
    Int(i128),
    Float(f64),
}

impl Value {
    fn text(self) -> String {
        match self {
            Value::Int(v) => v.to_string(),
            Value::Float(v) => format!("{v:?}"),
        }
    }
}

fn read(scalar: Scalar, src: &[u8]) -> Option<Value> {
    match scalar {
        Scalar::Int { signed, bytes } => read_int(src, signed, bytes).map(Value::Int),
        Scalar::Float { bytes } => read_float(src, bytes).map(Value::Float),
        Scalar::Bool => src.first().map(|&b| Value::Int(i128::from(b != 0))),
        Scalar::Pointer => None,
    }
}

/// Writes `src` (a `from`) into `dst` as a `to`, for a pair [`classify`]
/// allows. `Err` is the value, as text, when it does not fit; `dst` is then
/// left as it was.
pub(super) fn convert(from: Scalar, src: &[u8], to: Scalar, dst: &mut [u8]) -> Result<(), String> {
    if from == to {
        if let Some(src) = src.get(..dst.len()) {
            dst.copy_from_slice(src);
        }
        return Ok(());
    }
    let Some(value) = read(from, src) else {
        return Ok(());
    };
    // The new value's bytes (the first `len` of `raw`), and whether it is
    // the same value.
    let (fits, raw, len): (bool, [u8; 8], u8) = match (to, value) {
        (Scalar::Int { signed, bytes }, Value::Int(v)) => {
            let bits = 8 * u32::from(bytes);
            let (low, high) = if signed {
                (-(1i128 << (bits - 1)), (1i128 << (bits - 1)) - 1)
            } else {
                (0, (1i128 << bits) - 1)
            };
            ((low..=high).contains(&v), (v as i64).to_ne_bytes(), bytes)
        }
        (Scalar::Bool, Value::Int(v)) => (v == 0 || v == 1, [v as u8, 0, 0, 0, 0, 0, 0, 0], 1),
        (Scalar::Float { bytes: 8 }, Value::Int(v)) => {
            let f = v as f64;
            (f as i128 == v, f.to_ne_bytes(), 8)
        }
        (Scalar::Float { .. }, Value::Int(v)) => {
            let f = v as f32;
            (f as i128 == v, eight(f.to_ne_bytes()), 4)
        }
        (Scalar::Float { bytes: 8 }, Value::Float(v)) => (true, v.to_ne_bytes(), 8),
        (Scalar::Float { .. }, Value::Float(v)) => {
            let f = v as f32;
            let stays_finite = f.is_finite() || !v.is_finite();
            let stays_non_zero = f != 0.0 || v == 0.0;
            let kept = stays_finite && stays_non_zero;
            (kept, eight(f.to_ne_bytes()), 4)
        }
        // `classify` pairs nothing else.
        _ => return Ok(()),
    };
    if !fits {
        return Err(value.text());
    }
    if let Some(dst) = dst.get_mut(..len as usize) {
        dst.copy_from_slice(&raw[..len as usize]);
    }
    Ok(())
}

/// A float's four bytes at the start of eight.
fn eight(four: [u8; 4]) -> [u8; 8] {
    let mut raw = [0u8; 8];
    raw[..4].copy_from_slice(&four);
    raw
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::testing::{F32, F64, I8, I32, I64, U32};

    fn narrow(from: Scalar, src: &[u8], to: Scalar) -> Result<Vec<u8>, String> {
        assert_eq!(classify(from, to), Ok(Kind::Narrow), "{from} → {to}");
        let mut dst = vec![0u8; to.size()];
        convert(from, src, to, &mut dst).map(|()| dst)
    }

    #[test]
    fn narrowing_integers_checks_each_value() {
        assert_eq!(
            narrow(I64, &365i64.to_ne_bytes(), I32),
            Ok(365i32.to_ne_bytes().to_vec())
        );
        assert_eq!(
            narrow(I64, &(-7i64).to_ne_bytes(), I32),
            Ok((-7i32).to_ne_bytes().to_vec())
        );
        assert_eq!(
            narrow(I64, &3_000_000_000i64.to_ne_bytes(), I32),
            Err("3000000000".into())
        );
        assert_eq!(narrow(I32, &(-1i32).to_ne_bytes(), U32), Err("-1".into()));
        assert_eq!(
            narrow(U32, &u32::MAX.to_ne_bytes(), I32),
            Err("4294967295".into())
        );
        assert_eq!(narrow(I32, &300i32.to_ne_bytes(), I8), Err("300".into()));
        assert_eq!(narrow(I32, &(-128i32).to_ne_bytes(), I8), Ok(vec![0x80]));
        assert_eq!(
            narrow(I32, &2i32.to_ne_bytes(), Scalar::Bool),
            Err("2".into())
        );
        assert_eq!(narrow(I32, &1i32.to_ne_bytes(), Scalar::Bool), Ok(vec![1]));
    }

    #[test]
    fn integers_into_floats_must_be_exact() {
        let big = (1i64 << 53) + 1;
        assert_eq!(narrow(I64, &big.to_ne_bytes(), F64), Err(big.to_string()));
        assert_eq!(
            narrow(I64, &(1i64 << 53).to_ne_bytes(), F64),
            Ok(((1i64 << 53) as f64).to_ne_bytes().to_vec())
        );
        assert_eq!(
            narrow(I32, &16_777_217i32.to_ne_bytes(), F32),
            Err("16777217".into())
        );
    }

    #[test]
    fn doubles_into_floats_round_but_never_overflow_or_vanish() {
        assert_eq!(
            narrow(F64, &0.1f64.to_ne_bytes(), F32),
            Ok(0.1f32.to_ne_bytes().to_vec())
        );
        assert_eq!(
            narrow(F64, &1e300f64.to_ne_bytes(), F32),
            Err("1e300".into())
        );
        assert_eq!(
            narrow(F64, &1e-50f64.to_ne_bytes(), F32),
            Err("1e-50".into())
        );
        assert_eq!(
            narrow(F64, &f64::INFINITY.to_ne_bytes(), F32),
            Ok(f32::INFINITY.to_ne_bytes().to_vec())
        );
        let nan = narrow(F64, &f64::NAN.to_ne_bytes(), F32).expect("NaN carries over");
        assert!(f32::from_ne_bytes(nan.try_into().expect("4 bytes")).is_nan());
    }

    #[test]
    fn what_never_converts_says_why() {
        assert_eq!(classify(F64, I32), Err("a float's fractions would be lost"));
        assert_eq!(
            classify(Scalar::Pointer, I64),
            Err("an address means nothing as a number")
        );
        assert_eq!(
            classify(I64, Scalar::Pointer),
            Err("a number is not an address")
        );
        assert_eq!(classify(I32, I64), Ok(Kind::Widen));
        assert_eq!(classify(I32, I32), Ok(Kind::Same));
    }
}
