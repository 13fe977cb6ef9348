//! Inner loops shared by the pursuits, Losse's ridge regression and the index, compiled twice: once for the
//! baseline target and once with AVX2 (+ FMA where the rounding allows it), chosen at run time
//! (`is_x86_feature_detected!`, cached by std; `SPARSECORE_SIMD=off` forces the portable loops, see [`SIMD_ENV`]). The wheel stays runnable on any x86-64 CPU while recent CPUs get
//! 4-wide fused multiply-adds (measured 1.6-2x on OMP, benches/bench_pursuit.py). The index's document scoring
//! ([`gather_dot_u16`]) has an AVX-512 path written with intrinsics, so that the gathers and the lane order (which
//! the truncated and the exact scores must share) are spelled out rather than left to the auto-vectorizer.
//!
//! - [`dense`]: `y ∓= a·x` and its fused variants, dot products, largest magnitudes, sums of scaled u8 code rows;
//! - [`gather`]: the index's document scores, query entries gathered at term ids;
//! - [`gemm`]: dense matrix products (matrixmultiply, or a portable loop when SIMD is off);
//! - [`prefetch`]: cache hints.
//!
//! This is the crate's one exception to `unsafe_code = "deny"`: calling a `#[target_feature]` function is
//! `unsafe` because it is undefined behaviour on a CPU without those features; every call sits right behind the
//! run-time check (below) of exactly the features the function enables. The bodies are plain safe Rust, except
//! the AVX-512 scoring step's loads and gather (raw-pointer intrinsics; each read's bounds are argued at the
//! call). [`prefetch()`] is the other use: a cache hint, which cannot fault.
#![allow(unsafe_code)]

pub mod dense;
pub mod gather;
pub mod gemm;
pub mod prefetch;

use std::sync::OnceLock;

use crate::SparseError;

pub use dense::{
    add_scaled_codes, axpy4_neg_f64, axpy_f32, axpy_neg_f32, axpy_neg_f64, dot_f32, max_key_f32, max_key_f64,
    omp_step_f32, omp_step_f64,
};
pub use gather::{gather_dot, gather_dot_u16, U16_IDS};
pub use gemm::mat_mul;
pub use prefetch::{prefetch, prefetch_range};

/// Environment variable that turns the SIMD code paths off: `off` (also `scalar`, `none`, `0`, `false`) runs the
/// portable loops everywhere, `auto` (also `on`, `1`, `true`, empty or unset) picks by CPU. Read once per process.
pub const SIMD_ENV: &str = "SPARSECORE_SIMD";

/// The `SPARSECORE_SIMD` setting: `Ok(true)` when SIMD paths may run, or the message for an unknown value.
fn simd_setting() -> &'static Result<bool, String> {
    static SETTING: OnceLock<Result<bool, String>> = OnceLock::new();
    SETTING.get_or_init(|| parse_simd(std::env::var(SIMD_ENV).ok().as_deref()))
}

/// Parse a `SPARSECORE_SIMD` value (`None`: unset).
fn parse_simd(value: Option<&str>) -> Result<bool, String> {
    let Some(v) = value else { return Ok(true) };
    match v.trim().to_ascii_lowercase().as_str() {
        "" | "auto" | "on" | "1" | "true" => Ok(true),
        "off" | "scalar" | "none" | "0" | "false" => Ok(false),
        _ => Err(format!("must be 'auto' or 'off', got {v:?}")),
    }
}

/// Whether the SIMD paths may run at all (`SPARSECORE_SIMD` is not `off`). An unknown value counts as `off`, the
/// safe reading; [`simd_level`] reports it as an error.
#[inline]
pub(crate) fn simd_allowed() -> bool {
    matches!(simd_setting(), Ok(true))
}

/// The widest instruction set the kernels use in this process: `"avx512"` (the index's scoring with AVX-512 F,
/// the dense kernels with AVX2 + FMA), `"avx2+fma"`, `"avx2"`, or `"scalar"` (the portable loops: on a CPU without
/// those features, on a non-x86 target, or with `SPARSECORE_SIMD=off`, which also routes the dense matrix products
/// of the pursuits and the SAE encoder around matrixmultiply's run-time-selected kernels).
///
/// Errors: `SPARSECORE_SIMD` holds an unknown value (the kernels then run the portable loops).
pub fn simd_level() -> Result<&'static str, SparseError> {
    if let Err(msg) = simd_setting() {
        return Err(SparseError::invalid(SIMD_ENV, msg.clone()));
    }
    #[cfg(target_arch = "x86_64")]
    {
        if has_avx512f() && has_avx2_fma() {
            return Ok("avx512");
        }
        if has_avx2_fma() {
            return Ok("avx2+fma");
        }
        if has_avx2() {
            return Ok("avx2");
        }
    }
    Ok("scalar")
}

/// Whether the CPU has AVX2, the feature of the `_avx2` variants (and SIMD is not turned off).
#[cfg(target_arch = "x86_64")]
#[inline]
fn has_avx2() -> bool {
    simd_allowed() && std::is_x86_feature_detected!("avx2")
}

/// Whether the CPU has AVX2 and FMA, the features of the `_fma` variants (and SIMD is not turned off).
#[cfg(target_arch = "x86_64")]
#[inline]
fn has_avx2_fma() -> bool {
    simd_allowed() && std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma")
}

/// Whether the CPU has AVX-512 F, the feature of the `_avx512` variants (and SIMD is not turned off).
#[cfg(target_arch = "x86_64")]
#[inline]
fn has_avx512f() -> bool {
    simd_allowed() && std::is_x86_feature_detected!("avx512f")
}

#[cfg(test)]
mod tests {
    use super::parse_simd;

    #[test]
    fn simd_values() {
        for v in [None, Some(""), Some("auto"), Some(" AUTO "), Some("on"), Some("1"), Some("true")] {
            assert_eq!(parse_simd(v), Ok(true), "{v:?}");
        }
        for v in ["off", "OFF", "scalar", "none", "0", "false"] {
            assert_eq!(parse_simd(Some(v)), Ok(false), "{v:?}");
        }
        let err = parse_simd(Some("avx9")).unwrap_err();
        assert!(err.contains("\"avx9\""), "{err}");
    }
}
