//! Document scoring of the index's forward index: `Σ q[terms[i]] · w[i]` over weights split into 16-bit halves.

#[cfg(target_arch = "x86_64")]
use super::has_avx512f;

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
        if has_avx512f() {
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
