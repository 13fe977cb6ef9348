//! Inner loops of the pursuits (and a few of Losse and the index), compiled twice: once for the baseline target
//! and once with AVX2 (+ FMA where the rounding allows it), chosen at run time (`is_x86_feature_detected!`, cached
//! by std). The wheel stays runnable on any x86-64 CPU while recent CPUs get 4-wide fused multiply-adds (measured
//! 1.6-2x on OMP, benches/bench_pursuit.py). The index's document scoring ([`gather_dot_u16`]) has an AVX-512
//! path written with intrinsics, so that the gathers and the lane order (which the truncated and the exact
//! scores must share) are spelled out rather than left to the auto-vectorizer.
//!
//! This is the crate's one exception to `unsafe_code = "deny"`: calling a `#[target_feature]` function is
//! `unsafe` because it is undefined behaviour on a CPU without those features; every call below sits right
//! behind the run-time check of exactly the features the function enables. The bodies are plain safe Rust,
//! except the AVX-512 scoring step's loads and gather (raw-pointer intrinsics; each read's bounds are argued at
//! the call). [`prefetch`] is the other use: a cache hint, which cannot fault.
#![allow(unsafe_code)]

/// `y -= a * x` (element-wise over the shorter length).
#[inline]
pub fn axpy_neg_f64(y: &mut [f64], a: f64, x: &[f64]) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
            // SAFETY: the CPU supports AVX2 and FMA, the only features the function enables.
            unsafe { axpy_neg_f64_fma(y, a, x) };
            return;
        }
    }
    for (yi, &xi) in y.iter_mut().zip(x) {
        *yi -= a * xi;
    }
}

/// `y -= a * x` (element-wise over the shorter length).
#[inline]
pub fn axpy_neg_f32(y: &mut [f32], a: f32, x: &[f32]) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
            // SAFETY: the CPU supports AVX2 and FMA, the only features the function enables.
            unsafe { axpy_neg_f32_fma(y, a, x) };
            return;
        }
    }
    for (yi, &xi) in y.iter_mut().zip(x) {
        *yi -= a * xi;
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn axpy_neg_f64_fma(y: &mut [f64], a: f64, x: &[f64]) {
    let na = -a;
    for (yi, &xi) in y.iter_mut().zip(x) {
        *yi = na.mul_add(xi, *yi);
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn axpy_neg_f32_fma(y: &mut [f32], a: f32, x: &[f32]) {
    let na = -a;
    for (yi, &xi) in y.iter_mut().zip(x) {
        *yi = na.mul_add(xi, *yi);
    }
}

/// `y -= a[0]·x[0]; y -= a[1]·x[1]; …` for four rows in one pass over `y` (the same rounding as four
/// [`axpy_neg_f64`] calls in that order; over the shortest length).
#[inline]
pub fn axpy4_neg_f64(y: &mut [f64], a: [f64; 4], x: [&[f64]; 4]) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
            // SAFETY: the CPU supports AVX2 and FMA, the only features the function enables.
            unsafe { axpy4_neg_f64_fma(y, a, x) };
            return;
        }
    }
    for ((((yi, &x0), &x1), &x2), &x3) in y.iter_mut().zip(x[0]).zip(x[1]).zip(x[2]).zip(x[3]) {
        *yi = (((*yi - a[0] * x0) - a[1] * x1) - a[2] * x2) - a[3] * x3;
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn axpy4_neg_f64_fma(y: &mut [f64], a: [f64; 4], x: [&[f64]; 4]) {
    let [a0, a1, a2, a3] = [-a[0], -a[1], -a[2], -a[3]];
    for ((((yi, &x0), &x1), &x2), &x3) in y.iter_mut().zip(x[0]).zip(x[1]).zip(x[2]).zip(x[3]) {
        *yi = a3.mul_add(x3, a2.mul_add(x2, a1.mul_add(x1, a0.mul_add(x0, *yi))));
    }
}

/// Largest `|v_i|` (or `v_i` when `signed`), at least 0.
#[inline]
pub fn max_key_f64(v: &[f64], signed: bool) -> f64 {
    #[cfg(target_arch = "x86_64")]
    {
        if std::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU supports AVX2, the only feature the function enables.
            return unsafe { max_key_f64_avx2(v, signed) };
        }
    }
    max_key_f64_any(v, signed)
}

/// Largest `|v_i|` (or `v_i` when `signed`), at least 0.
#[inline]
pub fn max_key_f32(v: &[f32], signed: bool) -> f32 {
    #[cfg(target_arch = "x86_64")]
    {
        if std::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU supports AVX2, the only feature the function enables.
            return unsafe { max_key_f32_avx2(v, signed) };
        }
    }
    max_key_f32_any(v, signed)
}

macro_rules! max_key_body {
    ($t:ty, $v:expr, $signed:expr) => {{
        const LANES: usize = 16;
        let mut lanes = [0.0 as $t; LANES];
        let chunks = $v.chunks_exact(LANES);
        let tail = chunks.remainder();
        for ch in chunks {
            for l in 0..LANES {
                let a = if $signed { ch[l] } else { ch[l].abs() };
                lanes[l] = if a > lanes[l] { a } else { lanes[l] };
            }
        }
        let mut best = 0.0 as $t;
        for a in lanes.iter().copied().chain(tail.iter().map(|&a| if $signed { a } else { a.abs() })) {
            if a > best {
                best = a;
            }
        }
        best
    }};
}

fn max_key_f64_any(v: &[f64], signed: bool) -> f64 {
    max_key_body!(f64, v, signed)
}

fn max_key_f32_any(v: &[f32], signed: bool) -> f32 {
    max_key_body!(f32, v, signed)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn max_key_f64_avx2(v: &[f64], signed: bool) -> f64 {
    max_key_body!(f64, v, signed)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn max_key_f32_avx2(v: &[f32], signed: bool) -> f32 {
    max_key_body!(f32, v, signed)
}

macro_rules! sub_rows_body {
    ($t:ty, $y:expr, $coefs:expr, $rows:expr, $fma:expr) => {{
        let n = $y.len();
        let mut s = 0;
        while s + 4 <= $coefs.len() {
            let (a, b, c, d) = ($coefs[s], $coefs[s + 1], $coefs[s + 2], $coefs[s + 3]);
            let r0 = &$rows[s * n..(s + 1) * n];
            let r1 = &$rows[(s + 1) * n..(s + 2) * n];
            let r2 = &$rows[(s + 2) * n..(s + 3) * n];
            let r3 = &$rows[(s + 3) * n..(s + 4) * n];
            for ((((yi, &x0), &x1), &x2), &x3) in $y.iter_mut().zip(r0).zip(r1).zip(r2).zip(r3) {
                *yi = if $fma {
                    (-d).mul_add(x3, (-c).mul_add(x2, (-b).mul_add(x1, (-a).mul_add(x0, *yi))))
                } else {
                    *yi - a * x0 - b * x1 - c * x2 - d * x3
                };
            }
            s += 4;
        }
        while s < $coefs.len() {
            let a = $coefs[s];
            for (yi, &x0) in $y.iter_mut().zip(&$rows[s * n..(s + 1) * n]) {
                *yi = if $fma { (-a).mul_add(x0, *yi) } else { *yi - a * x0 };
            }
            s += 1;
        }
    }};
}

macro_rules! omp_step_body {
    ($t:ty, $out:expr, $base:expr, $coefs:expr, $rows:expr, $scale:expr, $alpha:expr, $vt:expr, $fma:expr) => {{
        const LANES: usize = 16;
        let n = $out.len();
        let first = $coefs.len().min(4);
        let coef = |s: usize| if s < first { $coefs[s] } else { 0.0 as $t };
        let row = |s: usize| if s < first { &$rows[s * n..(s + 1) * n] } else { $base };
        let (a, b, c, d) = (coef(0), coef(1), coef(2), coef(3));
        let (r0, r1, r2, r3) = (row(0), row(1), row(2), row(3));
        for (((((o, &x), &x0), &x1), &x2), &x3) in $out.iter_mut().zip($base).zip(r0).zip(r1).zip(r2).zip(r3) {
            *o = if $fma {
                (-d).mul_add(x3, (-c).mul_add(x2, (-b).mul_add(x1, (-a).mul_add(x0, x))))
            } else {
                x - a * x0 - b * x1 - c * x2 - d * x3
            };
        }
        let rest = &$coefs[first..];
        sub_rows_body!($t, $out, rest, &$rows[first * n..], $fma);
        // One pass scales the new row, updates the correlations and finds their largest magnitude.
        let mut lanes = [0.0 as $t; LANES];
        let mut oc = $out.chunks_exact_mut(LANES);
        let mut ac = $alpha.chunks_exact_mut(LANES);
        for (o, al) in (&mut oc).zip(&mut ac) {
            for l in 0..LANES {
                let w = o[l] * $scale;
                o[l] = w;
                let v = if $fma { (-$vt).mul_add(w, al[l]) } else { al[l] - $vt * w };
                al[l] = v;
                let m = v.abs();
                lanes[l] = if m > lanes[l] { m } else { lanes[l] };
            }
        }
        let mut best = 0.0 as $t;
        for (o, al) in oc.into_remainder().iter_mut().zip(ac.into_remainder().iter_mut()) {
            let w = *o * $scale;
            *o = w;
            let v = if $fma { (-$vt).mul_add(w, *al) } else { *al - $vt * w };
            *al = v;
            if v.abs() > best {
                best = v.abs();
            }
        }
        for m in lanes {
            if m > best {
                best = m;
            }
        }
        best
    }};
}

/// One OMP step: `out = (base − Σ_s coefs[s] · rows[s]) · scale`, then `alpha −= vt · out`; returns the largest
/// `|alpha_i|` afterwards. The same arithmetic as `out = base − Σ_s coefs[s] · rows[s]` (4 rows per pass), a
/// scaling, then [`axpy_neg_f64`], in fewer passes
/// (`base` is read in the first pass, no separate copy).
#[inline]
pub fn omp_step_f64(
    out: &mut [f64],
    base: &[f64],
    coefs: &[f64],
    rows: &[f64],
    scale: f64,
    alpha: &mut [f64],
    vt: f64,
) -> f64 {
    #[cfg(target_arch = "x86_64")]
    {
        if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
            // SAFETY: the CPU supports AVX2 and FMA, the only features the function enables.
            return unsafe { omp_step_f64_fma(out, base, coefs, rows, scale, alpha, vt) };
        }
    }
    omp_step_body!(f64, out, base, coefs, rows, scale, alpha, vt, false)
}

/// One OMP step (see [`omp_step_f64`]).
#[inline]
pub fn omp_step_f32(
    out: &mut [f32],
    base: &[f32],
    coefs: &[f32],
    rows: &[f32],
    scale: f32,
    alpha: &mut [f32],
    vt: f32,
) -> f32 {
    #[cfg(target_arch = "x86_64")]
    {
        if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
            // SAFETY: the CPU supports AVX2 and FMA, the only features the function enables.
            return unsafe { omp_step_f32_fma(out, base, coefs, rows, scale, alpha, vt) };
        }
    }
    omp_step_body!(f32, out, base, coefs, rows, scale, alpha, vt, false)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn omp_step_f64_fma(
    out: &mut [f64],
    base: &[f64],
    coefs: &[f64],
    rows: &[f64],
    scale: f64,
    alpha: &mut [f64],
    vt: f64,
) -> f64 {
    omp_step_body!(f64, out, base, coefs, rows, scale, alpha, vt, true)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn omp_step_f32_fma(
    out: &mut [f32],
    base: &[f32],
    coefs: &[f32],
    rows: &[f32],
    scale: f32,
    alpha: &mut [f32],
    vt: f32,
) -> f32 {
    omp_step_body!(f32, out, base, coefs, rows, scale, alpha, vt, true)
}

/// `y[i] += a[0]·c[0][i]; y[i] += a[1]·c[1][i]; …` for the first `min(a.len(), c.len())` rows of u8 codes (over
/// the shortest length): four rows share one pass over `y`, fewer take one pass each. The same rounding as one
/// pass per row in order: a multiply, then an add, never fused.
#[inline]
pub fn add_scaled_codes(y: &mut [f32], a: &[f32], c: &[&[u8]]) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU supports AVX2, the only feature the function enables.
            unsafe { add_scaled_codes_avx2(y, a, c) };
            return;
        }
    }
    add_scaled_codes_any(y, a, c);
}

macro_rules! add_scaled_codes_body {
    ($y:expr, $a:expr, $c:expr) => {{
        let (mut a, mut c) = ($a, $c);
        while let ([a0, a1, a2, a3, ar @ ..], [c0, c1, c2, c3, cr @ ..]) = (a, c) {
            for ((((yi, &x0), &x1), &x2), &x3) in $y.iter_mut().zip(*c0).zip(*c1).zip(*c2).zip(*c3) {
                *yi = (((*yi + a0 * f32::from(x0)) + a1 * f32::from(x1)) + a2 * f32::from(x2)) + a3 * f32::from(x3);
            }
            (a, c) = (ar, cr);
        }
        for (&ai, ci) in a.iter().zip(c) {
            for (yi, &x) in $y.iter_mut().zip(*ci) {
                *yi += ai * f32::from(x);
            }
        }
    }};
}

fn add_scaled_codes_any(y: &mut [f32], a: &[f32], c: &[&[u8]]) {
    add_scaled_codes_body!(y, a, c);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn add_scaled_codes_avx2(y: &mut [f32], a: &[f32], c: &[&[u8]]) {
    add_scaled_codes_body!(y, a, c);
}

/// Entries of a query array that any u16 term id indexes.
pub const U16_IDS: usize = 1 << 16;

/// `Σ q[terms[i]] · w[i]` over a forward-index document (over the shortest of the slices), its weights stored as
/// the upper (`hi`) and lower (`lo`) 16 bits of their f32 bits. Without `lo` the lower bits are taken as zero:
/// each weight truncated towards zero, never larger.
///
/// The order of the operations depends only on the length and the code path, and is the same with and without
/// `lo`: every step is monotone in the weights, so for `q >= 0` the truncated sum never exceeds the full one (the
/// index's search relies on it). Four accumulators (entry `i` of the first `4·⌊n/4⌋` in `i % 4`, the rest in the
/// first) take a multiply, then an add, and are summed pairwise. Ids must index `q` (else it panics); documents
/// with u16 ids and a query of 2^16 entries take [`gather_dot_u16`].
#[inline]
pub fn gather_dot<T: Copy + Into<u64>>(q: &[f32], terms: &[T], hi: &[u16], lo: Option<&[u16]>) -> f32 {
    let n = terms.len().min(hi.len()).min(lo.map_or(usize::MAX, <[u16]>::len));
    match lo {
        Some(lo) => gather_dot_any::<T, _, true>(q, &terms[..n], &hi[..n], &lo[..n]),
        None => gather_dot_any::<T, _, false>(q, &terms[..n], &hi[..n], &[]),
    }
}

/// [`gather_dot`] for u16 ids and a query array that any of them indexes, so the loop has no bounds checks. With
/// AVX-512 sixteen lanes gather the query entries and accumulate fused multiply-adds (entry `i` in lane `i % 16`),
/// then the lanes are summed (again one order with and without `lo`): exact search over 1M synthetic documents ran
/// 2-10 % faster than with the scalar loop (scoring there mostly waits on memory; `benches/probe_builds.py`).
#[inline]
pub fn gather_dot_u16(q: &[f32; U16_IDS], terms: &[u16], hi: &[u16], lo: Option<&[u16]>) -> f32 {
    let n = terms.len().min(hi.len()).min(lo.map_or(usize::MAX, <[u16]>::len));
    let (terms, hi) = (&terms[..n], &hi[..n]);
    #[cfg(target_arch = "x86_64")]
    {
        if std::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU supports AVX-512 F, the only feature the functions enable.
            return unsafe {
                match lo {
                    Some(lo) => gather_dot_u16_avx512::<true>(q, terms, hi, &lo[..n]),
                    None => gather_dot_u16_avx512::<false>(q, terms, hi, &[]),
                }
            };
        }
    }
    match lo {
        Some(lo) => gather_dot_any::<u16, _, true>(q, terms, hi, &lo[..n]),
        None => gather_dot_any::<u16, _, false>(q, terms, hi, &[]),
    }
}

/// The weight of entry `i`: upper half `hi[i]`, lower half `lo[i]` when `FULL`, else zero.
#[inline]
fn half_weight<const FULL: bool>(hi: &[u16], lo: &[u16], i: usize) -> f32 {
    let low = if FULL { u32::from(lo[i]) } else { 0 };
    f32::from_bits((u32::from(hi[i]) << 16) | low)
}

/// The scalar loop of [`gather_dot`]: `terms` and `hi` (and `lo` when `FULL`) have the same length; `q` is a
/// slice, or an array of 2^16 entries for u16 ids.
#[inline]
fn gather_dot_any<T: Copy + Into<u64>, Q: std::ops::Index<usize, Output = f32> + ?Sized, const FULL: bool>(
    q: &Q,
    terms: &[T],
    hi: &[u16],
    lo: &[u16],
) -> f32 {
    let n = terms.len();
    let head = n / 4 * 4;
    let mut acc = [0f32; 4];
    for c in (0..head).step_by(4) {
        for j in 0..4 {
            acc[j] += q[terms[c + j].into() as usize] * half_weight::<FULL>(hi, lo, c + j);
        }
    }
    for i in head..n {
        acc[0] += q[terms[i].into() as usize] * half_weight::<FULL>(hi, lo, i);
    }
    (acc[0] + acc[1]) + (acc[2] + acc[3])
}

/// [`gather_dot_u16`] with AVX-512: `terms` and `hi` (and `lo` when `FULL`) have the same length.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn gather_dot_u16_avx512<const FULL: bool>(q: &[f32; U16_IDS], terms: &[u16], hi: &[u16], lo: &[u16]) -> f32 {
    use std::arch::x86_64::{
        __m256i, __m512, __mmask16, _mm256_loadu_si256, _mm512_castsi512_ps, _mm512_cvtepu16_epi32, _mm512_fmadd_ps,
        _mm512_mask_i32gather_ps, _mm512_or_si512, _mm512_reduce_add_ps, _mm512_setzero_ps, _mm512_slli_epi32,
    };
    // One step over sixteen entries; lanes outside `mask` gather nothing and carry weight zero, so `acc` keeps
    // its value there.
    #[inline]
    #[target_feature(enable = "avx512f")]
    #[allow(clippy::cast_ptr_alignment)] // unaligned loads (`loadu`)
    fn step<const FULL: bool>(
        q: &[f32; U16_IDS],
        t: &[u16; 16],
        h: &[u16; 16],
        l: &[u16; 16],
        mask: __mmask16,
        acc: __m512,
    ) -> __m512 {
        // SAFETY: each load reads the 32 bytes of a `[u16; 16]`. The gather reads `q` at zero-extended u16
        // indices, all below `q.len() = 2^16`, and only in the lanes of `mask`.
        unsafe {
            let idx = _mm512_cvtepu16_epi32(_mm256_loadu_si256(t.as_ptr().cast::<__m256i>()));
            let mut w = _mm512_slli_epi32::<16>(_mm512_cvtepu16_epi32(_mm256_loadu_si256(h.as_ptr().cast())));
            if FULL {
                w = _mm512_or_si512(w, _mm512_cvtepu16_epi32(_mm256_loadu_si256(l.as_ptr().cast())));
            }
            let g = _mm512_mask_i32gather_ps::<4>(_mm512_setzero_ps(), mask, idx, q.as_ptr());
            _mm512_fmadd_ps(g, _mm512_castsi512_ps(w), acc)
        }
    }
    const ZERO: [u16; 16] = [0; 16];
    let n = terms.len();
    let mut acc = _mm512_setzero_ps();
    let (mut tc, mut hc) = (terms.chunks_exact(16), hi.chunks_exact(16));
    let mut lc = lo.chunks_exact(16);
    for (t, h) in (&mut tc).zip(&mut hc) {
        let (Ok(t), Ok(h)) = (<&[u16; 16]>::try_from(t), <&[u16; 16]>::try_from(h)) else { break };
        let l = if FULL { lc.next().and_then(|l| <&[u16; 16]>::try_from(l).ok()).unwrap_or(&ZERO) } else { &ZERO };
        acc = step::<FULL>(q, t, h, l, u16::MAX, acc);
    }
    let rem = n % 16;
    if rem > 0 {
        let (mut t, mut h, mut l) = (ZERO, ZERO, ZERO);
        t[..rem].copy_from_slice(tc.remainder());
        h[..rem].copy_from_slice(hc.remainder());
        if FULL {
            l[..rem].copy_from_slice(lc.remainder());
        }
        acc = step::<FULL>(q, &t, &h, &l, (1u16 << rem) - 1, acc);
    }
    _mm512_reduce_add_ps(acc)
}

/// Ask the CPU to bring the cache line holding `x[i]` into L1 ahead of a later read: a hint that never faults,
/// and does nothing when `i` is past the end or the CPU is not x86-64.
#[inline]
pub fn prefetch<T>(x: &[T], i: usize) {
    #[cfg(target_arch = "x86_64")]
    {
        if i < x.len() {
            // SAFETY: a prefetch only hints the cache and cannot fault; the address is inside `x`; SSE, the
            // instruction's one requirement, is part of the x86-64 baseline.
            unsafe {
                std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(x.as_ptr().add(i).cast());
            }
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (x, i);
}

/// [`prefetch`] every cache line holding `x[lo..hi]` (clipped to `x`).
#[inline]
pub fn prefetch_range<T>(x: &[T], lo: usize, hi: usize) {
    let hi = hi.min(x.len());
    let step = (64 / std::mem::size_of::<T>().max(1)).max(1);
    let mut i = lo;
    while i < hi {
        prefetch(x, i);
        i += step;
    }
    if lo < hi {
        prefetch(x, hi - 1);
    }
}

#[cfg(test)]
#[allow(clippy::float_cmp)] // maxima are exact: they are elements of the input
mod tests {
    use super::*;

    #[test]
    fn scaled_codes_match_one_pass_per_row() {
        let rows: Vec<Vec<u8>> = (0..5).map(|r| (0..45).map(|i| ((i * 37 + r * 11) % 256) as u8).collect()).collect();
        let a = [0.37f32, 1.9e-3, 7.5, 0.011, 3.0];
        let y0: Vec<f32> = (0..45).map(|i| (i as f32 * 0.31).sin().abs()).collect();
        for n in 1..=5 {
            let mut want = y0.clone();
            for r in 0..n {
                for (w, &x) in want.iter_mut().zip(&rows[r]) {
                    *w += a[r] * f32::from(x);
                }
            }
            let c: Vec<&[u8]> = rows[..n].iter().map(Vec::as_slice).collect();
            let (mut got, mut plain, mut extra) = (y0.clone(), y0.clone(), y0.clone());
            add_scaled_codes(&mut got, &a[..n], &c);
            add_scaled_codes_any(&mut plain, &a[..n], &c);
            // Scales beyond the rows given are ignored.
            let more = [a.as_slice(), &[1.0; 3]].concat();
            add_scaled_codes(&mut extra, &more, &c);
            assert_eq!(got, want);
            assert_eq!(plain, want);
            assert_eq!(extra, want);
        }
    }

    #[test]
    fn gather_dot_paths_agree_and_truncation_is_a_lower_bound() {
        let mut qv = vec![0f32; U16_IDS];
        for (i, v) in qv.iter_mut().enumerate().step_by(7) {
            *v = ((i as f32) * 0.013).sin().abs() * 3.0;
        }
        let q: &[f32; U16_IDS] = qv.as_slice().try_into().unwrap();
        for n in [0usize, 1, 3, 4, 5, 15, 16, 17, 31, 32, 33, 123, 200] {
            let terms: Vec<u16> = (0..n).map(|i| ((i * 7919 + 13) % U16_IDS) as u16).collect();
            let w: Vec<f32> = (0..n).map(|i| 0.1 + ((i as f32) * 0.77).cos().abs()).collect();
            let hi: Vec<u16> = w.iter().map(|x| (x.to_bits() >> 16) as u16).collect();
            let lo: Vec<u16> = w.iter().map(|x| x.to_bits() as u16).collect();
            let want: f64 = terms.iter().zip(&w).map(|(&t, &x)| f64::from(q[usize::from(t)]) * f64::from(x)).sum();
            let full = gather_dot_u16(q, &terms, &hi, Some(&lo));
            let trunc = gather_dot_u16(q, &terms, &hi, None);
            let (full_any, trunc_any) = (
                gather_dot_any::<u16, _, true>(q, &terms, &hi, &lo),
                gather_dot_any::<u16, _, false>(q, &terms, &hi, &[]),
            );
            for (f, t) in [(full, trunc), (full_any, trunc_any)] {
                assert!((f64::from(f) - want).abs() <= 1e-5 * want.max(1e-30), "n {n}: {f} vs {want}");
                assert!(t <= f, "n {n}: truncated {t} above full {f}");
                // Truncation loses at most 2^-7 of each weight.
                assert!(f64::from(t) >= want * (1.0 - 2f64.powi(-7)) - 1e-5 * want, "n {n}");
            }
            // Extra entries of a longer slice are ignored.
            let longer_hi = [hi.as_slice(), &[0x3F80; 3]].concat();
            assert_eq!(gather_dot_u16(q, &terms, &longer_hi, Some(&lo)).to_bits(), full.to_bits());
            // The plain path keeps the four-accumulator order: entry i of the head in i % 4, the rest in the first.
            let mut acc = [0f32; 4];
            for i in 0..n {
                acc[if i < n / 4 * 4 { i % 4 } else { 0 }] += q[usize::from(terms[i])] * w[i];
            }
            assert_eq!(full_any.to_bits(), ((acc[0] + acc[1]) + (acc[2] + acc[3])).to_bits());
        }
    }

    #[test]
    fn kernels_match_plain_loops() {
        let x: Vec<f64> = (0..37).map(|i| (f64::from(i) * 0.7).sin()).collect();
        let mut y: Vec<f64> = (0..37).map(|i| (f64::from(i) * 1.3).cos()).collect();
        let want: Vec<f64> = y.iter().zip(&x).map(|(a, b)| a - 0.25 * b).collect();
        axpy_neg_f64(&mut y, 0.25, &x);
        for (a, b) in y.iter().zip(&want) {
            assert!((a - b).abs() < 1e-15);
        }
        let mut y32: Vec<f32> = want.iter().map(|&v| v as f32).collect();
        let x32: Vec<f32> = x.iter().map(|&v| v as f32).collect();
        let want32: Vec<f32> = y32.iter().zip(&x32).map(|(a, b)| a - 2.0 * b).collect();
        axpy_neg_f32(&mut y32, 2.0, &x32);
        for (a, b) in y32.iter().zip(&want32) {
            assert!((a - b).abs() < 1e-6);
        }
        // Four rows in one pass equal four axpy_neg_f64 calls in order, bit for bit.
        let rows: Vec<Vec<f64>> =
            (0..4).map(|r| (0..40).map(|i| (f64::from(i * 3 + r) * 0.37).cos()).collect()).collect();
        let a = [0.3, -1.7, 0.0, 2.5];
        let mut one_pass = y.clone();
        axpy4_neg_f64(&mut one_pass, a, [&rows[0], &rows[1], &rows[2], &rows[3]]);
        let mut four = y.clone();
        for (r, &ar) in rows.iter().zip(&a) {
            axpy_neg_f64(&mut four, ar, r);
        }
        assert_eq!(one_pass, four);
        let m = x.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        assert_eq!(max_key_f64(&x, false), m);
        let ms = x.iter().fold(0.0f64, |m, &v| m.max(v));
        assert_eq!(max_key_f64(&x, true), ms);
        assert_eq!(max_key_f32(&x32, false), x32.iter().fold(0.0f32, |m, v| m.max(v.abs())));
        assert_eq!(max_key_f64(&[-1.0, -2.0], true), 0.0);
        for m in 0..7 {
            let rows: Vec<f64> = (0..m * 37).map(|i| (f64::from(i as u32) * 0.11).sin()).collect();
            let coefs: Vec<f64> = (0..m).map(|i| 0.5 - f64::from(i as u32) * 0.3).collect();
            let mut want = x.clone();
            for s in 0..m {
                for i in 0..37 {
                    want[i] -= coefs[s] * rows[s * 37 + i];
                }
            }
            // The OMP step: (x - sum coefs * rows) * 0.5, then alpha -= 0.3 * that row, and the largest |alpha_i|.
            let mut step = vec![0.0; 37];
            let mut alpha: Vec<f64> = (0..37).map(|i| (f64::from(i) * 0.37).cos()).collect();
            let alpha_want: Vec<f64> = alpha.iter().zip(&want).map(|(a, w)| a - 0.3 * (0.5 * w)).collect();
            let best = omp_step_f64(&mut step, &x, &coefs, &rows, 0.5, &mut alpha, 0.3);
            for ((a, b), (al, aw)) in step.iter().zip(&want).zip(alpha.iter().zip(&alpha_want)) {
                assert!((a - 0.5 * b).abs() < 1e-12 && (al - aw).abs() < 1e-12);
            }
            assert_eq!(best, alpha.iter().fold(0.0f64, |m, v| m.max(v.abs())));
            let (x32, rows32, coefs32): (Vec<f32>, Vec<f32>, Vec<f32>) = (
                x.iter().map(|&v| v as f32).collect(),
                rows.iter().map(|&v| v as f32).collect(),
                coefs.iter().map(|&v| v as f32).collect(),
            );
            let mut step32 = vec![0.0f32; 37];
            let mut alpha32: Vec<f32> = alpha_want.iter().map(|&v| v as f32).collect();
            let before = alpha32.clone();
            let best32 = omp_step_f32(&mut step32, &x32, &coefs32, &rows32, 0.5, &mut alpha32, 0.3);
            for (i, (a, b)) in step32.iter().zip(&want).enumerate() {
                assert!((f64::from(*a) - 0.5 * b).abs() < 1e-4);
                assert!((alpha32[i] - (before[i] - 0.3 * step32[i])).abs() < 1e-5);
            }
            assert_eq!(best32, alpha32.iter().fold(0.0f32, |m, v| m.max(v.abs())));
        }
    }
}
