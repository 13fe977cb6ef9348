//! Affine u8/u16 quantization of stored values with one scale and offset per batch.
//!
//! `offset = min(0, min(data))`, `scale = (max(0, max(data)) - offset) / (2^bits - 1)`, and
//! `code = round((v - offset) / scale)`; so non-negative data (SPLADE weights) keeps `offset = 0` and zero maps
//! to code 0, and every value is recovered within `scale / 2` (plus f32 rounding).

use rayon::prelude::*;

use super::CsrView;
use crate::SparseError;

/// An unsigned integer code type.
pub trait Code: Copy + Send + Sync + Default {
    /// Largest code, `2^bits - 1`.
    const LEVELS: u32;
    /// Narrowing from a value already clamped to `0..=LEVELS`.
    fn from_clamped(x: u32) -> Self;
    /// Widening to f64.
    fn widen(self) -> f64;
}

impl Code for u8 {
    const LEVELS: u32 = u8::MAX as u32;
    fn from_clamped(x: u32) -> Self {
        x as u8
    }
    fn widen(self) -> f64 {
        f64::from(self)
    }
}

impl Code for u16 {
    const LEVELS: u32 = u16::MAX as u32;
    fn from_clamped(x: u32) -> Self {
        x as u16
    }
    fn widen(self) -> f64 {
        f64::from(self)
    }
}

/// Quantized values with their affine map back: `value ~= offset + code * scale`.
#[derive(Debug, Clone, PartialEq)]
pub struct Quantized<T> {
    /// One code per stored value.
    pub codes: Vec<T>,
    /// Step between codes.
    pub scale: f32,
    /// Value of code 0.
    pub offset: f32,
}

/// Quantize the values of `a`.
///
/// Errors: a non-finite value.
pub fn quantize<T: Code>(a: &CsrView<'_>) -> Result<Quantized<T>, SparseError> {
    let data = a.data();
    if let Some(pos) = data.par_iter().position_first(|v| !v.is_finite()) {
        return Err(SparseError::NonFinite { row: a.row_of(pos), pos, value: data[pos] });
    }
    let lo = data.par_iter().copied().reduce(|| 0.0f32, f32::min);
    let hi = data.par_iter().copied().reduce(|| 0.0f32, f32::max);
    let offset = f64::from(lo);
    let scale = (f64::from(hi) - offset) / f64::from(T::LEVELS);
    let codes = if scale > 0.0 {
        let levels = f64::from(T::LEVELS);
        data.par_iter()
            .map(|&v| T::from_clamped(((f64::from(v) - offset) / scale).round().clamp(0.0, levels) as u32))
            .collect()
    } else {
        vec![T::default(); data.len()]
    };
    Ok(Quantized { codes, scale: scale as f32, offset: lo })
}

/// Values back from codes: `offset + code * scale` (computed in f64, rounded to f32).
///
/// Errors: `scale` negative or non-finite, `offset` non-finite.
pub fn dequantize<T: Code>(codes: &[T], scale: f32, offset: f32) -> Result<Vec<f32>, SparseError> {
    if !scale.is_finite() || scale < 0.0 {
        return Err(SparseError::invalid("scale", format!("must be finite and >= 0, got {scale}")));
    }
    if !offset.is_finite() {
        return Err(SparseError::invalid("offset", format!("must be finite, got {offset}")));
    }
    let (s, o) = (f64::from(scale), f64::from(offset));
    Ok(codes.par_iter().map(|&c| (o + c.widen() * s) as f32).collect())
}

#[cfg(test)]
#[allow(clippy::float_cmp)] // the test data make every compared value exact
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn roundtrip<T: Code>(vals: &[f32]) -> (Vec<f32>, f32) {
        let ip = [0, vals.len() as i64];
        let idx: Vec<u32> = (0..vals.len() as u32).collect();
        let v = CsrView::new(&ip, &idx, vals, vals.len().max(1) as u64).unwrap();
        let q = quantize::<T>(&v).unwrap();
        (dequantize(&q.codes, q.scale, q.offset).unwrap(), q.scale)
    }

    proptest! {
        #[test]
        fn error_within_half_step(vals in proptest::collection::vec(-1e3f32..1e3, 0..50)) {
            for (back, scale) in [roundtrip::<u8>(&vals), roundtrip::<u16>(&vals)] {
                for (b, v) in back.iter().zip(&vals) {
                    let tol = f64::from(scale) * 0.5 + 1e-6 * f64::from(v.abs().max(1.0)) * 1e3;
                    prop_assert!((f64::from(*b) - f64::from(*v)).abs() <= tol, "{b} vs {v}, scale {scale}");
                }
            }
        }
    }

    #[test]
    fn zeros_and_constants_are_exact() {
        assert_eq!(roundtrip::<u8>(&[0.0, 0.0]).0, vec![0.0, 0.0]);
        assert_eq!(roundtrip::<u8>(&[0.0, 2.0]).0, vec![0.0, 2.0]);
        assert_eq!(roundtrip::<u16>(&[-3.0, -3.0]).0, vec![-3.0, -3.0]);
        assert!(dequantize::<u8>(&[1], -1.0, 0.0).is_err());
    }
}
