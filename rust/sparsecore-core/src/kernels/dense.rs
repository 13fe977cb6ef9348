//! Kernels over dense float slices: `y -= a·x` (one row or four per pass), the largest magnitude, the fused
//! OMP step of the pursuits, and the sums of scaled u8 code rows behind the index's block bounds.

#[cfg(target_arch = "x86_64")]
use super::{has_avx2, has_avx2_fma};

/// `y -= a * x` (element-wise over the shorter length).
#[inline]
pub fn axpy_neg_f64(y: &mut [f64], a: f64, x: &[f64]) {
    #[cfg(target_arch = "x86_64")]
    {
        if has_avx2_fma() {
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
        if has_avx2_fma() {
            // SAFETY: the CPU supports AVX2 and FMA, the only features the function enables.
            unsafe { axpy_neg_f32_fma(y, a, x) };
            return;
        }
    }
    for (yi, &xi) in y.iter_mut().zip(x) {
        *yi -= a * xi;
    }
}

/// `y += a * x` (element-wise over the shorter length; one fused multiply-add per element where the CPU has FMA).
#[inline]
pub fn axpy_f32(y: &mut [f32], a: f32, x: &[f32]) {
    #[cfg(target_arch = "x86_64")]
    {
        if has_avx2_fma() {
            // SAFETY: the CPU supports AVX2 and FMA, the only features the function enables.
            unsafe { axpy_f32_fma(y, a, x) };
            return;
        }
    }
    for (yi, &xi) in y.iter_mut().zip(x) {
        *yi += a * xi;
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn axpy_f32_fma(y: &mut [f32], a: f32, x: &[f32]) {
    for (yi, &xi) in y.iter_mut().zip(x) {
        *yi = a.mul_add(xi, *yi);
    }
}

/// Lanes of [`dot_f32`]'s partial sums (two AVX2 registers).
const DOT_LANES: usize = 16;

macro_rules! dot_f32_body {
    ($a:expr, $b:expr, $fma:expr) => {{
        let n = $a.len().min($b.len());
        let (a, b) = (&$a[..n], &$b[..n]);
        let mut acc = [0f32; DOT_LANES];
        let (ac, bc) = (a.chunks_exact(DOT_LANES), b.chunks_exact(DOT_LANES));
        let (ar, br) = (ac.remainder(), bc.remainder());
        for (x, y) in ac.zip(bc) {
            for l in 0..DOT_LANES {
                acc[l] = if $fma { x[l].mul_add(y[l], acc[l]) } else { acc[l] + x[l] * y[l] };
            }
        }
        for (l, (x, y)) in ar.iter().zip(br).enumerate() {
            acc[l] = if $fma { x.mul_add(*y, acc[l]) } else { acc[l] + x * y };
        }
        // pairwise reduction of the lanes, in a fixed order
        let mut w = DOT_LANES;
        while w > 1 {
            w /= 2;
            for l in 0..w {
                acc[l] += acc[l + w];
            }
        }
        acc[0]
    }};
}

/// `Σ a_i b_i` over the shorter length, in 16 interleaved partial sums reduced pairwise (a fixed order, so the
/// result does not depend on the caller; it differs from a sequential sum by rounding).
#[inline]
pub fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    {
        if has_avx2_fma() {
            // SAFETY: the CPU supports AVX2 and FMA, the only features the function enables.
            return unsafe { dot_f32_fma(a, b) };
        }
    }
    dot_f32_body!(a, b, false)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn dot_f32_fma(a: &[f32], b: &[f32]) -> f32 {
    dot_f32_body!(a, b, true)
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
        if has_avx2_fma() {
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
        if has_avx2() {
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
        if has_avx2() {
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
        if has_avx2_fma() {
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
        if has_avx2_fma() {
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
        if has_avx2() {
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
