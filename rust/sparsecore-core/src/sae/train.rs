//! Sparse kernels of a TopK SAE training step on the CPU: everything after the encoder's dense product.
//!
//! With the codes of a batch given as `(indices, values)`, `k` per row, a step needs three shapes of work, each
//! `O(B · k · d)` rather than the `O(B · d_sae · d)` of a dense product with the `B × d_sae` code matrix:
//!
//! - [`gather_sum`]: `out[r] = Σ_j values[r, j] · table[indices[r, j]]` — the decoder's forward pass (table
//!   `W_dec`), and the encoder's input gradient (table `W_encᵀ`, values the code gradients);
//! - [`gather_dot`]: `out[r, j] = g[r] · table[indices[r, j]]` — the gradient of the code values;
//! - [`scatter_outer`]: `out[l] = Σ_{(r, j): indices[r, j] = l} coef[r, j] · src[r]` — the weight gradients
//!   (`W_dec` from the output gradient, `W_encᵀ` from the centred input);
//! - [`topk_rows`]: the `k` largest positive entries of each row of the pre-activations (the selection of the
//!   fused encoder, applied to a matrix that the caller's BLAS computed).
//!
//! Determinism: every output element is one sum in a fixed order — `j` increasing in [`gather_sum`] and
//! [`gather_dot`]'s lanes, and `(r, j)` increasing in [`scatter_outer`], whose entries are bucketed by latent
//! with a stable counting sort — so results do not depend on the thread count, and no atomics are used.

use rayon::prelude::*;

use super::select::TopKRow;
use crate::kernels::{axpy_f32, dot_f32};
use crate::SparseError;

/// Rows (or latents) per rayon task: enough work per task to amortise the scheduling.
const MIN_LEN: usize = 16;

fn check_shape(name: &str, len: usize, rows: usize, cols: usize, shape: &str) -> Result<(), SparseError> {
    if rows.checked_mul(cols) == Some(len) {
        Ok(())
    } else {
        Err(SparseError::ShapeMismatch(format!(
            "{name}: expected shape {shape} = ({rows}, {cols}), got {len} elements"
        )))
    }
}

/// Every index in `[0, n_table)`, else an error naming the first offending position.
fn check_indices(indices: &[i64], k: usize, n_table: usize) -> Result<(), SparseError> {
    let bad = indices.par_iter().position_first(|&i| i < 0 || i as u64 >= n_table as u64);
    match bad {
        None => Ok(()),
        Some(p) => Err(SparseError::invalid(
            "indices",
            format!("entry [{}, {}] = {} is outside [0, {n_table})", p / k.max(1), p % k.max(1), indices[p]),
        )),
    }
}

/// The number of rows of `indices`, read as `(n, k)` with `k >= 1`.
fn index_rows(indices: &[i64], k: usize) -> Result<usize, SparseError> {
    if k == 0 {
        return Err(SparseError::invalid("indices", "must have at least one column, got 0"));
    }
    if !indices.len().is_multiple_of(k) {
        return Err(SparseError::ShapeMismatch(format!(
            "indices: {} elements is not a whole number of rows of {k}",
            indices.len()
        )));
    }
    Ok(indices.len() / k)
}

/// Shared argument checks: `indices (n, k)`, `table (n_table, d)`; returns `n`.
fn check_common(indices: &[i64], k: usize, table: &[f32], n_table: usize, d: usize) -> Result<usize, SparseError> {
    let n = index_rows(indices, k)?;
    check_shape("table", table.len(), n_table, d, "(n_table, d)")?;
    check_indices(indices, k, n_table)?;
    Ok(n)
}

/// `out[r] = Σ_j values[r, j] · table[indices[r, j]]`, row-major `(n, d)`.
///
/// `indices` and `values` are `(n, k)` row-major; `table` is `(n_table, d)`.
///
/// Errors: shapes that disagree (`ShapeMismatch`), `k == 0` or an index outside `[0, n_table)`
/// (`InvalidArgument`), an output too large to allocate (`TooLarge`).
pub fn gather_sum(
    indices: &[i64],
    values: &[f32],
    k: usize,
    table: &[f32],
    n_table: usize,
    d: usize,
) -> Result<Vec<f32>, SparseError> {
    let n = check_common(indices, k, table, n_table, d)?;
    check_shape("values", values.len(), n, k, "(n, k)")?;
    let mut out = SparseError::try_zeroed::<f32>("gathered sums", SparseError::checked_area("gathered sums", n, d)?)?;
    if d == 0 {
        return Ok(out);
    }
    out.par_chunks_mut(d).with_min_len(MIN_LEN).enumerate().for_each(|(r, o)| {
        for (&i, &v) in indices[r * k..(r + 1) * k].iter().zip(&values[r * k..(r + 1) * k]) {
            let i = i as usize; // checked above
            axpy_f32(o, v, &table[i * d..(i + 1) * d]);
        }
    });
    Ok(out)
}

/// `out[r, j] = g[r] · table[indices[r, j]]`, row-major `(n, k)`.
///
/// `indices` is `(n, k)`, `g` is `(n, d)`, `table` is `(n_table, d)`.
///
/// Errors: as [`gather_sum`].
pub fn gather_dot(
    indices: &[i64],
    k: usize,
    g: &[f32],
    table: &[f32],
    n_table: usize,
    d: usize,
) -> Result<Vec<f32>, SparseError> {
    let n = check_common(indices, k, table, n_table, d)?;
    check_shape("g", g.len(), n, d, "(n, d)")?;
    let mut out = SparseError::try_zeroed::<f32>("gathered dots", SparseError::checked_area("gathered dots", n, k)?)?;
    if d == 0 {
        return Ok(out);
    }
    out.par_chunks_mut(k).with_min_len(MIN_LEN).enumerate().for_each(|(r, o)| {
        let gr = &g[r * d..(r + 1) * d];
        for (oj, &i) in o.iter_mut().zip(&indices[r * k..(r + 1) * k]) {
            let i = i as usize;
            *oj = dot_f32(gr, &table[i * d..(i + 1) * d]);
        }
    });
    Ok(out)
}

/// `out[l] = Σ_{(r, j): indices[r, j] = l} coef[r, j] · src[r]`, row-major `(n_out, d)`, summed in increasing
/// `(r, j)` order.
///
/// `indices` and `coef` are `(n, k)`, `src` is `(n, d)`.
///
/// Errors: as [`gather_sum`] (indices must lie in `[0, n_out)`).
pub fn scatter_outer(
    indices: &[i64],
    coef: &[f32],
    k: usize,
    src: &[f32],
    d: usize,
    n_out: usize,
) -> Result<Vec<f32>, SparseError> {
    let n = index_rows(indices, k)?;
    check_shape("coef", coef.len(), n, k, "(n, k)")?;
    check_shape("src", src.len(), n, d, "(n, d)")?;
    check_indices(indices, k, n_out)?;
    if u32::try_from(indices.len()).is_err() {
        return Err(SparseError::TooLarge { what: "scatter entries", bytes: indices.len() as u64 * 4 });
    }
    let mut out =
        SparseError::try_zeroed::<f32>("scattered sums", SparseError::checked_area("scattered sums", n_out, d)?)?;
    if d == 0 || n == 0 {
        return Ok(out);
    }
    // stable counting sort of the entries by latent: starts[l]..starts[l + 1] lists latent l's entries in order
    let mut starts = vec![0usize; n_out + 1];
    for &i in indices {
        starts[i as usize + 1] += 1;
    }
    for l in 0..n_out {
        starts[l + 1] += starts[l];
    }
    let mut fill = starts.clone();
    let mut order = vec![0u32; indices.len()];
    for (p, &i) in indices.iter().enumerate() {
        let slot = &mut fill[i as usize];
        order[*slot] = p as u32; // fits: checked above
        *slot += 1;
    }
    out.par_chunks_mut(d).with_min_len(MIN_LEN).enumerate().for_each(|(l, o)| {
        for &p in &order[starts[l]..starts[l + 1]] {
            let p = p as usize;
            let r = p / k;
            axpy_f32(o, coef[p], &src[r * d..(r + 1) * d]);
        }
    });
    Ok(out)
}

/// Lanes of [`block_max`]'s running maxima.
const LANES: usize = 16;

/// The largest value of `x` (NaN-free input; `-inf` for an empty slice), lane-wise so that it vectorises.
fn block_max(x: &[f32]) -> f32 {
    let mut m = [f32::NEG_INFINITY; LANES];
    let chunks = x.chunks_exact(LANES);
    let rest = chunks.remainder();
    for c in chunks {
        for l in 0..LANES {
            m[l] = if c[l] > m[l] { c[l] } else { m[l] };
        }
    }
    rest.iter().chain(&m).fold(f32::NEG_INFINITY, |a, &v| if v > a { v } else { a })
}

/// The `k` largest positive entries of each row of the row-major `(n, d)` matrix `pre`, as `(indices, values)`,
/// each `(n, k)` row-major: by increasing index within a row, ties going to the lower index; a row with fewer
/// than `k` positive entries is padded with index 0 and value 0.
///
/// Errors: `k == 0` or `k > d` (`InvalidArgument`), `pre.len()` not a multiple of `d` (`ShapeMismatch`).
pub fn topk_rows(pre: &[f32], d: usize, k: usize) -> Result<(Vec<i64>, Vec<f32>), SparseError> {
    if k == 0 || k > d {
        return Err(SparseError::invalid("k", format!("must be in [1, {d}], got {k}")));
    }
    if !pre.len().is_multiple_of(d) {
        return Err(SparseError::ShapeMismatch(format!(
            "pre: {} elements is not a whole number of rows of {d}",
            pre.len()
        )));
    }
    let n = pre.len() / d;
    let area = SparseError::checked_area("top-k selection", n, k)?;
    let mut indices = SparseError::try_zeroed::<i64>("top-k selection", area)?;
    let mut values = SparseError::try_zeroed::<f32>("top-k selection", area)?;
    let zeros = vec![0f32; d];
    // The maxima of k disjoint blocks of a row are k distinct entries, so the k-th largest block maximum is a
    // lower bound of the row's k-th largest value: seeding the selection with it skips almost every entry.
    let block = (d / (4 * k) / LANES * LANES).max(1);
    indices.par_chunks_mut(k).zip(values.par_chunks_mut(k)).enumerate().with_min_len(MIN_LEN).for_each_init(
        || (TopKRow::new(k), vec![0u32; k], Vec::with_capacity(d / block + 1)),
        |(row, slots, maxima), (r, (oi, ov))| {
            let x = &pre[r * d..(r + 1) * d];
            maxima.clear();
            maxima.extend(x.chunks(block).map(block_max));
            if maxima.len() >= k {
                let (_, kth, _) = maxima.select_nth_unstable_by(k - 1, |a, b| b.total_cmp(a));
                row.seed(*kth);
            }
            row.absorb(k, 0, x, &zeros);
            let kept = row.finish(k, slots, ov);
            for (o, &j) in oi.iter_mut().zip(&slots[..kept]) {
                *o = i64::from(j);
            }
        },
    );
    Ok((indices, values))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn naive_sum(idx: &[i64], val: &[f32], k: usize, table: &[f32], d: usize) -> Vec<f64> {
        let n = idx.len() / k;
        let mut out = vec![0f64; n * d];
        for r in 0..n {
            for j in 0..k {
                let i = idx[r * k + j] as usize;
                for c in 0..d {
                    out[r * d + c] += f64::from(val[r * k + j]) * f64::from(table[i * d + c]);
                }
            }
        }
        out
    }

    fn close(got: &[f32], want: &[f64], tol: f64) {
        assert_eq!(got.len(), want.len());
        for (g, w) in got.iter().zip(want) {
            assert!((f64::from(*g) - w).abs() <= tol * (1.0 + w.abs()), "{g} vs {w}");
        }
    }

    fn case(n: usize, k: usize, n_table: usize, d: usize, seed: u64) -> (Vec<i64>, Vec<f32>, Vec<f32>, Vec<f32>) {
        let mut s = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        let mut next = move || {
            s = s.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            (s >> 33) as u32
        };
        let idx = (0..n * k).map(|_| i64::from(next() % n_table as u32)).collect();
        let val = (0..n * k).map(|_| (next() % 17) as f32 - 8.0).collect();
        let table = (0..n_table * d).map(|_| (next() % 9) as f32 - 4.0).collect();
        let g = (0..n * d).map(|_| (next() % 7) as f32 - 3.0).collect();
        (idx, val, table, g)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(40))]
        #[test]
        fn kernels_match_naive(n in 0usize..40, k in 1usize..6, n_table in 1usize..30, d in 0usize..37, seed: u64) {
            let (idx, val, table, g) = case(n, k, n_table, d, seed);
            // integer data: every sum is exact in f32, so the comparison is exact
            let s = gather_sum(&idx, &val, k, &table, n_table, d).unwrap();
            close(&s, &naive_sum(&idx, &val, k, &table, d), 0.0);
            let dots = gather_dot(&idx, k, &g, &table, n_table, d).unwrap();
            for r in 0..n {
                for j in 0..k {
                    let i = idx[r * k + j] as usize;
                    let want: f64 = (0..d).map(|c| f64::from(g[r * d + c]) * f64::from(table[i * d + c])).sum();
                    prop_assert!((f64::from(dots[r * k + j]) - want).abs() == 0.0);
                }
            }
            let sc = scatter_outer(&idx, &val, k, &g, d, n_table).unwrap();
            let mut want = vec![0f64; n_table * d];
            for r in 0..n {
                for j in 0..k {
                    let i = idx[r * k + j] as usize;
                    for c in 0..d {
                        want[i * d + c] += f64::from(val[r * k + j]) * f64::from(g[r * d + c]);
                    }
                }
            }
            close(&sc, &want, 0.0);
        }
    }

    #[test]
    fn float_results_do_not_depend_on_threads() {
        let (idx, _, _, _) = case(300, 8, 50, 70, 3);
        let val: Vec<f32> = (0..idx.len()).map(|p| ((p * 7919) % 1000) as f32 / 997.0 - 0.4).collect();
        let table: Vec<f32> = (0..50 * 70_usize).map(|p| ((p * 104_729) % 1000) as f32 / 991.0 - 0.5).collect();
        let src: Vec<f32> = (0..300 * 70_usize).map(|p| ((p * 15_485_863) % 1000) as f32 / 983.0 - 0.5).collect();
        let run = |t: usize| {
            crate::parallel::install(Some(t), || {
                (
                    gather_sum(&idx, &val, 8, &table, 50, 70).unwrap(),
                    gather_dot(&idx, 8, &src, &table, 50, 70).unwrap(),
                    scatter_outer(&idx, &val, 8, &src, 70, 50).unwrap(),
                )
            })
            .unwrap()
        };
        let one = run(1);
        assert_eq!(one, run(3));
        close(&one.0, &naive_sum(&idx, &val, 8, &table, 70), 1e-5);
    }

    #[test]
    fn topk_rows_keeps_the_largest_positive_entries() {
        // row 0: ties at 5 go to the lower index; row 1: only two positive entries, padded
        let pre = [1.0, 5.0, 3.0, 5.0, 5.0, -1.0, 0.0, 2.0, -3.0, 4.0, -2.0, -9.0];
        let (idx, val) = topk_rows(&pre, 6, 3).unwrap();
        assert_eq!(idx, vec![1, 3, 4, 1, 3, 0]);
        assert_eq!(val, vec![5.0, 5.0, 5.0, 2.0, 4.0, 0.0]);
        let (idx, val) = topk_rows(&pre, 6, 2).unwrap();
        assert_eq!((idx, val), (vec![1, 3, 1, 3], vec![5.0, 5.0, 2.0, 4.0]));
        assert!(matches!(topk_rows(&pre, 6, 0), Err(SparseError::InvalidArgument { .. })));
        assert!(matches!(topk_rows(&pre, 6, 7), Err(SparseError::InvalidArgument { .. })));
        assert!(matches!(topk_rows(&pre, 5, 2), Err(SparseError::ShapeMismatch(_))));
        assert_eq!(topk_rows(&[], 4, 2).unwrap(), (vec![], vec![]));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(60))]
        #[test]
        fn topk_rows_matches_a_sort(n in 0usize..20, d in 1usize..300, kk in 1usize..70, seed: u64) {
            let k = kk.min(d);
            let (_, _, _, g) = case(n, 1, 1, d, seed); // small integers in [-3, 3]: many ties
            let (idx, val) = topk_rows(&g, d, k).unwrap();
            for r in 0..n {
                let row = &g[r * d..(r + 1) * d];
                let mut order: Vec<usize> = (0..d).filter(|&j| row[j] > 0.0).collect();
                order.sort_by(|&a, &b| row[b].total_cmp(&row[a]).then(a.cmp(&b)));
                order.truncate(k);
                order.sort_unstable();
                let mut want_i: Vec<i64> = order.iter().map(|&j| j as i64).collect();
                let mut want_v: Vec<f32> = order.iter().map(|&j| row[j]).collect();
                want_i.resize(k, 0);
                want_v.resize(k, 0.0);
                prop_assert_eq!(&idx[r * k..(r + 1) * k], &want_i[..]);
                prop_assert_eq!(&val[r * k..(r + 1) * k], &want_v[..]);
            }
        }
    }

    #[test]
    fn typed_errors() {
        let table = vec![0f32; 6];
        assert!(matches!(gather_sum(&[0, 3], &[1.0, 1.0], 2, &table, 3, 2), Err(SparseError::InvalidArgument { .. })));
        assert!(matches!(gather_sum(&[0, -1], &[1.0, 1.0], 2, &table, 3, 2), Err(SparseError::InvalidArgument { .. })));
        assert!(matches!(gather_sum(&[0, 1], &[1.0], 2, &table, 3, 2), Err(SparseError::ShapeMismatch(_))));
        assert!(matches!(gather_sum(&[0, 1, 2], &[1.0; 3], 2, &table, 3, 2), Err(SparseError::ShapeMismatch(_))));
        assert!(matches!(gather_dot(&[0, 1], 2, &[0.0; 3], &table, 3, 2), Err(SparseError::ShapeMismatch(_))));
        assert!(matches!(gather_dot(&[], 0, &[], &table, 3, 2), Err(SparseError::InvalidArgument { .. })));
        assert!(matches!(
            scatter_outer(&[0, 5], &[1.0; 2], 2, &[0.0; 2], 2, 5),
            Err(SparseError::InvalidArgument { .. })
        ));
        assert!(matches!(scatter_outer(&[0, 1], &[1.0; 2], 2, &[0.0; 3], 2, 5), Err(SparseError::ShapeMismatch(_))));
        let err = gather_sum(&[0, 1, 2, 7], &[1.0; 4], 2, &table, 3, 2).unwrap_err().to_string();
        assert!(err.contains("[1, 1] = 7"), "{err}");
    }
}
