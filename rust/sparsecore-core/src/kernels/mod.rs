//! Inner loops shared by the pursuits, Losse's ridge regression and the index, compiled twice: once for the
//! baseline target and once with AVX2 (+ FMA where the rounding allows it), chosen at run time
//! (`is_x86_feature_detected!`, cached by std). The wheel stays runnable on any x86-64 CPU while recent CPUs get
//! 4-wide fused multiply-adds (measured 1.6-2x on OMP, benches/bench_pursuit.py). The index's document scoring
//! ([`gather_dot_u16`]) has an AVX-512 path written with intrinsics, so that the gathers and the lane order (which
//! the truncated and the exact scores must share) are spelled out rather than left to the auto-vectorizer.
//!
//! - [`dense`]: `y ∓= a·x` and its fused variants, dot products, largest magnitudes, sums of scaled u8 code rows;
//! - [`gather`]: the index's document scores, query entries gathered at term ids;
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
pub mod prefetch;

pub use dense::{
    add_scaled_codes, axpy4_neg_f64, axpy_f32, axpy_neg_f32, axpy_neg_f64, dot_f32, max_key_f32, max_key_f64,
    omp_step_f32, omp_step_f64,
};
pub use gather::{gather_dot, gather_dot_u16, U16_IDS};
pub use prefetch::{prefetch, prefetch_range};

/// Whether the CPU has AVX2, the feature of the `_avx2` variants.
#[cfg(target_arch = "x86_64")]
#[inline]
fn has_avx2() -> bool {
    std::is_x86_feature_detected!("avx2")
}

/// Whether the CPU has AVX2 and FMA, the features of the `_fma` variants.
#[cfg(target_arch = "x86_64")]
#[inline]
fn has_avx2_fma() -> bool {
    std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma")
}

/// Whether the CPU has AVX-512 F, the feature of the `_avx512` variants.
#[cfg(target_arch = "x86_64")]
#[inline]
fn has_avx512f() -> bool {
    std::is_x86_feature_detected!("avx512f")
}
