//! Per-row selection: top-k, threshold, mass pruning. Kept entries stay in their input (index) order.

use std::cmp::Ordering;

use super::{map_rows, Csr, CsrView};
use crate::SparseError;

/// Ranking key of a value: the value or its magnitude, with -0.0 folded into 0.0 so the order is total and
/// agrees with IEEE equality (NaN, which validation rejects, still sorts consistently).
#[inline]
fn rank_key(v: f32, by_magnitude: bool) -> f32 {
    (if by_magnitude { v.abs() } else { v }) + 0.0
}

/// Larger key first, then smaller column id.
#[inline]
fn by_key_then_index(a: (f32, u32), b: (f32, u32)) -> Ordering {
    b.0.total_cmp(&a.0).then(a.1.cmp(&b.1))
}

/// Keep the `k` largest entries of every row (by value, or by magnitude with `by_magnitude`); ties are broken
/// by the smaller column id. Rows with at most `k` entries are kept whole.
///
/// Errors: `k == 0`.
pub fn top_k(a: &CsrView<'_>, k: usize, by_magnitude: bool) -> Result<Csr, SparseError> {
    if k == 0 {
        return Err(SparseError::invalid("k", "must be >= 1, got 0"));
    }
    Ok(map_rows(a, |idx, val, oi, ov| {
        if idx.len() <= k {
            oi.extend_from_slice(idx);
            ov.extend_from_slice(val);
            return;
        }
        let mut pos: Vec<u32> = (0..idx.len() as u32).collect();
        let key = |p: &u32| (rank_key(val[*p as usize], by_magnitude), idx[*p as usize]);
        pos.select_nth_unstable_by(k - 1, |a, b| by_key_then_index(key(a), key(b)));
        let kept = &mut pos[..k];
        kept.sort_unstable();
        for &p in kept.iter() {
            oi.push(idx[p as usize]);
            ov.push(val[p as usize]);
        }
    }))
}

/// Keep the entries with `value >= t` (or `|value| >= t` with `by_magnitude`), compared exactly in f64 (so a
/// threshold between two f32 values is not rounded onto one of them).
///
/// Errors: `t` is NaN.
pub fn threshold(a: &CsrView<'_>, t: f64, by_magnitude: bool) -> Result<Csr, SparseError> {
    if t.is_nan() {
        return Err(SparseError::invalid("t", "must not be NaN"));
    }
    Ok(map_rows(a, |idx, val, oi, ov| {
        for (&c, &v) in idx.iter().zip(val) {
            if f64::from(if by_magnitude { v.abs() } else { v }) >= t {
                oi.push(c);
                ov.push(v);
            }
        }
    }))
}

/// Keep, per row, the fewest largest-magnitude entries whose L1 mass reaches `fraction` of the row's mass
/// (ties by the smaller column id; sums in f64 in that order). Zero-mass rows become empty.
///
/// Errors: `fraction` outside `(0, 1]`.
pub fn prune_mass(a: &CsrView<'_>, fraction: f64) -> Result<Csr, SparseError> {
    if fraction.is_nan() || fraction <= 0.0 || fraction > 1.0 {
        return Err(SparseError::invalid("fraction", format!("must be in (0, 1], got {fraction}")));
    }
    Ok(map_rows(a, |idx, val, oi, ov| {
        let mut pos: Vec<u32> = (0..idx.len() as u32).collect();
        let key = |p: &u32| (rank_key(val[*p as usize], true), idx[*p as usize]);
        pos.sort_unstable_by(|a, b| by_key_then_index(key(a), key(b)));
        let total: f64 = pos.iter().map(|&p| f64::from(val[p as usize].abs())).sum();
        if total <= 0.0 {
            return;
        }
        let target = fraction * total;
        let mut cum = 0.0f64;
        let mut n_keep = 0;
        for &p in &pos {
            cum += f64::from(val[p as usize].abs());
            n_keep += 1;
            if cum >= target {
                break;
            }
        }
        let kept = &mut pos[..n_keep];
        kept.sort_unstable();
        for &p in kept.iter() {
            oi.push(idx[p as usize]);
            ov.push(val[p as usize]);
        }
    }))
}

#[cfg(test)]
#[allow(clippy::float_cmp)] // the test data make every compared value exact
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::sparse::testutil::canonical_csr;
    use crate::sparse::Csr;

    fn naive_rank(idx: &[u32], val: &[f32], mag: bool) -> Vec<usize> {
        let mut order: Vec<usize> = (0..idx.len()).collect();
        let k = |i: usize| if mag { f64::from(val[i].abs()) } else { f64::from(val[i]) };
        order.sort_by(|&x, &y| k(y).partial_cmp(&k(x)).unwrap().then(idx[x].cmp(&idx[y])));
        order
    }

    fn rows_of(a: &Csr) -> Vec<Vec<(u32, f32)>> {
        (0..a.indptr.len() - 1)
            .map(|r| {
                let rg = a.indptr[r] as usize..a.indptr[r + 1] as usize;
                a.indices[rg.clone()].iter().copied().zip(a.data[rg].iter().copied()).collect()
            })
            .collect()
    }

    proptest! {
        #[test]
        fn top_k_matches_naive(a in canonical_csr(20, 30), k in 1usize..8, mag: bool, threads in 1usize..4) {
            let v = a.view(30).unwrap();
            let got = crate::parallel::install(Some(threads), || top_k(&v, k, mag)).unwrap().unwrap();
            for (r, row) in rows_of(&got).into_iter().enumerate() {
                let (idx, val) = v.row(r);
                let mut want: Vec<usize> = naive_rank(idx, val, mag).into_iter().take(k).collect();
                want.sort_unstable();
                let want: Vec<(u32, f32)> = want.into_iter().map(|i| (idx[i], val[i])).collect();
                prop_assert_eq!(row, want);
            }
        }

        #[test]
        fn threshold_matches_naive(a in canonical_csr(20, 30), t in -4.0f64..4.0, mag: bool) {
            let v = a.view(30).unwrap();
            let got = threshold(&v, t, mag).unwrap();
            for (r, row) in rows_of(&got).into_iter().enumerate() {
                let (idx, val) = v.row(r);
                let want: Vec<(u32, f32)> = idx.iter().copied().zip(val.iter().copied())
                    .filter(|&(_, x)| f64::from(if mag { x.abs() } else { x }) >= t).collect();
                prop_assert_eq!(row, want);
            }
        }

        #[test]
        fn prune_mass_keeps_fewest_reaching_fraction(a in canonical_csr(20, 30), f in 0.01f64..=1.0) {
            let v = a.view(30).unwrap();
            let got = prune_mass(&v, f).unwrap();
            for (r, row) in rows_of(&got).into_iter().enumerate() {
                let (idx, val) = v.row(r);
                let order = naive_rank(idx, val, true);
                let total: f64 = order.iter().map(|&i| f64::from(val[i].abs())).sum();
                let mut want = Vec::new();
                let mut cum = 0.0;
                if total > 0.0 {
                    for &i in &order {
                        cum += f64::from(val[i].abs());
                        want.push(i);
                        if cum >= f * total { break; }
                    }
                }
                want.sort_unstable();
                let want: Vec<(u32, f32)> = want.into_iter().map(|i| (idx[i], val[i])).collect();
                prop_assert_eq!(row, want);
            }
        }
    }

    #[test]
    fn ties_prefer_smaller_index_and_signed_zero_is_zero() {
        let (ip, idx, val) = (vec![0i64, 4], vec![1u32, 2, 5, 7], vec![-0.0f32, 1.0, 0.0, 1.0]);
        let v = CsrView::new(&ip, &idx, &val, 8).unwrap();
        let got = top_k(&v, 3, false).unwrap();
        assert_eq!(got.indices, vec![1, 2, 7]);
        assert!(top_k(&v, 0, false).is_err());
        assert!(prune_mass(&v, 0.0).is_err());
        assert!(prune_mass(&v, 1.5).is_err());
        assert!(threshold(&v, f64::NAN, false).is_err());
    }
}
