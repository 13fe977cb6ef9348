//! Products: row-wise dot, all-pairs scores (dense or top-k), sparse x dense, and dense conversions.

use std::cmp::Ordering;

use rayon::prelude::*;

use super::{map_row_ids, Csr, CsrView};
use crate::SparseError;

/// Term-major copy of a batch (its transpose), so scoring walks the other side's terms.
struct Postings {
    lookup: Lookup,
    rows: Vec<u32>,
    vals: Vec<f32>,
}

enum Lookup {
    /// `offsets[t]..offsets[t + 1]` for every term `t < dim`.
    Dense(Vec<usize>),
    /// Terms that occur, sorted, with their offsets (`offsets.len() == terms.len() + 1`).
    Sparse { terms: Vec<u32>, offsets: Vec<usize> },
}

impl Postings {
    /// Transpose `b`; rows of every posting list come out in increasing order. `b` must be bounds-checked.
    fn build(b: &CsrView<'_>) -> Result<Self, SparseError> {
        if b.n_rows() > u32::MAX as usize {
            return Err(SparseError::invalid("other", "more than 2**32 - 1 rows cannot be scored against"));
        }
        let nnz = b.nnz();
        let dim = b.dim() as usize;
        // A dense offset table costs 8 B per column: use it unless it would dwarf the postings themselves.
        if dim <= 4 * nnz + (1 << 16) {
            let (offsets, rows, vals) = transpose_dense(b);
            Ok(Self { lookup: Lookup::Dense(offsets), rows, vals })
        } else {
            let mut triples: Vec<(u32, u32, f32)> = (0..b.n_rows())
                .flat_map(|r| {
                    let (idx, val) = b.row(r);
                    idx.iter().zip(val).map(move |(&t, &v)| (t, r as u32, v))
                })
                .collect();
            triples.par_sort_by_key(|x| x.0); // stable: rows stay increasing within a term
            let mut terms = Vec::new();
            let mut offsets = Vec::new();
            for (p, x) in triples.iter().enumerate() {
                if terms.last() != Some(&x.0) {
                    terms.push(x.0);
                    offsets.push(p);
                }
            }
            offsets.push(triples.len());
            let rows = triples.iter().map(|x| x.1).collect();
            let vals = triples.iter().map(|x| x.2).collect();
            Ok(Self { lookup: Lookup::Sparse { terms, offsets }, rows, vals })
        }
    }

    #[inline]
    fn get(&self, t: u32) -> (&[u32], &[f32]) {
        let rg = match &self.lookup {
            Lookup::Dense(off) => off[t as usize]..off[t as usize + 1],
            Lookup::Sparse { terms, offsets } => match terms.binary_search(&t) {
                Ok(i) => offsets[i]..offsets[i + 1],
                Err(_) => 0..0,
            },
        };
        (&self.rows[rg.clone()], &self.vals[rg])
    }
}

/// Entries below which the transpose runs on one thread (the per-chunk tables would cost more than they save).
const PARALLEL_TRANSPOSE_MIN_NNZ: usize = 1 << 17;

/// Counting-sort transpose with a dense per-term offset table: (offsets, rows, values), rows increasing
/// within each term. Large inputs are split into row chunks that are sorted in parallel and then copied,
/// term by term and in chunk order, into their places: the same result for any thread count.
fn transpose_dense(b: &CsrView<'_>) -> (Vec<usize>, Vec<u32>, Vec<f32>) {
    let dim = b.dim() as usize;
    let n = b.n_rows();
    let n_chunks = if b.nnz() < PARALLEL_TRANSPOSE_MIN_NNZ { 1 } else { rayon::current_num_threads().clamp(1, 8) };
    let chunk_rows = n.div_ceil(n_chunks).max(1);
    // Per chunk: local offsets (dim + 1), rows and values sorted by term.
    let locals: Vec<(Vec<usize>, Vec<u32>, Vec<f32>)> = (0..n.div_ceil(chunk_rows))
        .into_par_iter()
        .map(|c| {
            let rows = c * chunk_rows..((c + 1) * chunk_rows).min(n);
            let mut off = vec![0usize; dim + 1];
            for r in rows.clone() {
                for &t in b.row(r).0 {
                    off[t as usize + 1] += 1;
                }
            }
            for t in 0..dim {
                off[t + 1] += off[t];
            }
            let mut fill = off.clone();
            let mut out_rows = vec![0u32; off[dim]];
            let mut out_vals = vec![0f32; off[dim]];
            for r in rows {
                let (idx, val) = b.row(r);
                for (&t, &v) in idx.iter().zip(val) {
                    let p = &mut fill[t as usize];
                    out_rows[*p] = r as u32;
                    out_vals[*p] = v;
                    *p += 1;
                }
            }
            (off, out_rows, out_vals)
        })
        .collect();
    if locals.len() == 1 {
        if let Some(only) = locals.into_iter().next() {
            return only;
        }
        return (vec![0; dim + 1], Vec::new(), Vec::new());
    }
    let mut offsets = vec![0usize; dim + 1];
    for t in 0..dim {
        offsets[t + 1] = offsets[t] + locals.iter().map(|l| l.0[t + 1] - l.0[t]).sum::<usize>();
    }
    let mut rows = vec![0u32; offsets[dim]];
    let mut vals = vec![0f32; offsets[dim]];
    // One disjoint output slice per term, filled in parallel from every chunk in order.
    let mut row_parts: Vec<&mut [u32]> = Vec::with_capacity(dim);
    let mut val_parts: Vec<&mut [f32]> = Vec::with_capacity(dim);
    let (mut rest_r, mut rest_v) = (&mut rows[..], &mut vals[..]);
    for t in 0..dim {
        let len = offsets[t + 1] - offsets[t];
        let (hr, tr) = rest_r.split_at_mut(len);
        let (hv, tv) = rest_v.split_at_mut(len);
        row_parts.push(hr);
        val_parts.push(hv);
        rest_r = tr;
        rest_v = tv;
    }
    row_parts.par_iter_mut().zip(val_parts.par_iter_mut()).enumerate().for_each(|(t, (rp, vp))| {
        let mut at = 0;
        for (off, lr, lv) in &locals {
            let rg = off[t]..off[t + 1];
            let len = rg.len();
            rp[at..at + len].copy_from_slice(&lr[rg.clone()]);
            vp[at..at + len].copy_from_slice(&lv[rg]);
            at += len;
        }
    });
    (offsets, rows, vals)
}

fn same_dim(a: &CsrView<'_>, b: &CsrView<'_>) -> Result<(), SparseError> {
    if a.dim() == b.dim() {
        Ok(())
    } else {
        Err(SparseError::ShapeMismatch(format!("other: dim {} does not match this batch's dim {}", b.dim(), a.dim())))
    }
}

/// Row-wise dot products `a[i] . b[i]` (both canonical), accumulated in f64.
///
/// Errors: different row counts or dims.
pub fn row_dot(a: &CsrView<'_>, b: &CsrView<'_>) -> Result<Vec<f32>, SparseError> {
    same_dim(a, b)?;
    if a.n_rows() != b.n_rows() {
        return Err(SparseError::ShapeMismatch(format!(
            "other: {} rows do not match this batch's {} rows",
            b.n_rows(),
            a.n_rows()
        )));
    }
    Ok((0..a.n_rows())
        .into_par_iter()
        .map(|r| {
            let ((ai, av), (bi, bv)) = (a.row(r), b.row(r));
            let (mut i, mut j, mut acc) = (0, 0, 0.0f64);
            while i < ai.len() && j < bi.len() {
                match ai[i].cmp(&bi[j]) {
                    Ordering::Less => i += 1,
                    Ordering::Greater => j += 1,
                    Ordering::Equal => {
                        acc += f64::from(av[i]) * f64::from(bv[j]);
                        i += 1;
                        j += 1;
                    }
                }
            }
            acc as f32
        })
        .collect())
}

/// All-pairs dot products `a @ b.T` as a dense row-major `(a.n_rows, b.n_rows)` f32 matrix.
///
/// Errors: different dims; an index `>= dim`; an output too large to allocate.
pub fn scores_dense(a: &CsrView<'_>, b: &CsrView<'_>) -> Result<Vec<f32>, SparseError> {
    same_dim(a, b)?;
    a.check_bounds()?;
    b.check_bounds()?;
    let (m, n) = (a.n_rows(), b.n_rows());
    let mut out = SparseError::try_zeroed::<f32>("scores matrix", SparseError::checked_area("scores", m, n)?)?;
    if n == 0 {
        return Ok(out);
    }
    let post = Postings::build(b)?;
    out.par_chunks_mut(n).enumerate().for_each(|(r, acc)| {
        let (idx, val) = a.row(r);
        for (&t, &x) in idx.iter().zip(val) {
            let (rows, vals) = post.get(t);
            for (&j, &y) in rows.iter().zip(vals) {
                acc[j as usize] += x * y;
            }
        }
    });
    Ok(out)
}

/// Result of a top-k search: row-major `(n_rows, k)` ids and scores, padded with `-1` / `-inf`.
#[derive(Debug, Clone, PartialEq)]
pub struct TopK {
    /// Row ids of the other batch, best first.
    pub ids: Vec<i64>,
    /// Their scores.
    pub scores: Vec<f32>,
    /// `k`, the row length of `ids` and `scores`.
    pub k: usize,
}

/// For every row of `a`, the `k` rows of `b` with the largest dot product, best first, ties by smaller id —
/// exactly what sorting the dense `a @ b.T` row by (score desc, id asc) gives, including zero-score rows when
/// fewer than `k` overlap — without materialising the matrix. Rows are padded with `-1` / `-inf` when `b`
/// has fewer than `k` rows.
///
/// Errors: `k == 0`; different dims; an index `>= dim`; an output too large to allocate.
pub fn scores_top_k(a: &CsrView<'_>, b: &CsrView<'_>, k: usize) -> Result<TopK, SparseError> {
    if k == 0 {
        return Err(SparseError::invalid("k", "must be >= 1, got 0"));
    }
    same_dim(a, b)?;
    a.check_bounds()?;
    b.check_bounds()?;
    let (m, n) = (a.n_rows(), b.n_rows());
    let area = SparseError::checked_area("top-k output", m, k)?;
    let mut ids = SparseError::try_zeroed::<i64>("top-k ids", area)?;
    let mut scores = SparseError::try_zeroed::<f32>("top-k scores", area)?;
    let post = Postings::build(b)?;
    ids.par_chunks_mut(k).zip(scores.par_chunks_mut(k)).enumerate().for_each_init(
        || (vec![0f32; n], vec![0usize; n], Vec::<u32>::new(), Vec::<(f32, u32)>::new()),
        |(acc, stamp, touched, cand), (r, (out_ids, out_scores))| {
            let mark = r + 1;
            let (idx, val) = a.row(r);
            for (&t, &x) in idx.iter().zip(val) {
                let (rows, vals) = post.get(t);
                for (&j, &y) in rows.iter().zip(vals) {
                    let j = j as usize;
                    if stamp[j] != mark {
                        stamp[j] = mark;
                        touched.push(j as u32);
                    }
                    acc[j] += x * y;
                }
            }
            cand.clear();
            for &j in touched.iter() {
                // `+ 0.0` folds -0.0 into 0.0 so exact zeros tie with untouched rows and break by id.
                cand.push((acc[j as usize] + 0.0, j));
                acc[j as usize] = 0.0;
            }
            touched.clear();
            // Untouched rows score exactly 0; only the k smallest ids among them can make the top k.
            cand.extend((0..n).filter(|&j| stamp[j] != mark).take(k).map(|j| (0.0, j as u32)));
            let best = |x: &(f32, u32), y: &(f32, u32)| y.0.total_cmp(&x.0).then(x.1.cmp(&y.1));
            let kk = k.min(cand.len());
            if cand.len() > kk && kk > 0 {
                cand.select_nth_unstable_by(kk - 1, best);
            }
            cand[..kk].sort_unstable_by(best);
            for (slot, (s, j)) in out_ids.iter_mut().zip(out_scores.iter_mut()).enumerate() {
                if let Some(&(score, id)) = cand.get(slot).filter(|_| slot < kk) {
                    *j = score;
                    *s = i64::from(id);
                } else {
                    *j = f32::NEG_INFINITY;
                    *s = -1;
                }
            }
        },
    );
    Ok(TopK { ids, scores, k })
}

/// Sparse x dense: `a @ m` with `m` a row-major `(dim, p)` f32 matrix; returns row-major `(a.n_rows, p)`.
///
/// Errors: `m.len() != dim * p`; an index `>= dim`; an output too large to allocate.
pub fn matmul_dense(a: &CsrView<'_>, m: &[f32], p: usize) -> Result<Vec<f32>, SparseError> {
    let dim = a.dim() as usize;
    if Some(m.len()) != dim.checked_mul(p) {
        return Err(SparseError::ShapeMismatch(format!(
            "m: expected shape ({dim}, {p}) to match this batch's dim {dim}, got {} elements",
            m.len()
        )));
    }
    a.check_bounds()?;
    let mut out = SparseError::try_zeroed::<f32>("matmul output", SparseError::checked_area("matmul", a.n_rows(), p)?)?;
    if p == 0 {
        return Ok(out);
    }
    out.par_chunks_mut(p).enumerate().for_each(|(r, acc)| {
        let (idx, val) = a.row(r);
        for (&t, &x) in idx.iter().zip(val) {
            let src = &m[t as usize * p..(t as usize + 1) * p];
            for (o, &y) in acc.iter_mut().zip(src) {
                *o += x * y;
            }
        }
    });
    Ok(out)
}

/// Dense row-major `(n_rows, dim)` copy; repeated indices are summed.
///
/// Errors: an index `>= dim`; an output too large to allocate.
pub fn to_dense(a: &CsrView<'_>) -> Result<Vec<f32>, SparseError> {
    a.check_bounds()?;
    let dim = a.dim() as usize;
    let mut out = SparseError::try_zeroed::<f32>("dense array", SparseError::checked_area("dense", a.n_rows(), dim)?)?;
    out.par_chunks_mut(dim).enumerate().for_each(|(r, row)| {
        let (idx, val) = a.row(r);
        for (&t, &x) in idx.iter().zip(val) {
            row[t as usize] += x;
        }
    });
    Ok(out)
}

/// The non-zeros of a row-major `(n_rows, n_cols)` dense array as a canonical batch.
///
/// Errors: `n_cols` outside `1..=u32::MAX`; `x.len() != n_rows * n_cols`; a NaN or infinite entry.
pub fn from_dense(x: &[f32], n_rows: usize, n_cols: usize) -> Result<Csr, SparseError> {
    if n_cols == 0 || n_cols as u64 > u64::from(u32::MAX) {
        return Err(SparseError::invalid("dense", format!("needs 1 to 2**32 - 1 columns, got {n_cols}")));
    }
    if Some(x.len()) != n_rows.checked_mul(n_cols) {
        return Err(SparseError::ShapeMismatch(format!(
            "dense: {} elements do not form {n_rows} rows of {n_cols}",
            x.len()
        )));
    }
    if let Some(p) = x.par_iter().position_first(|v| !v.is_finite()) {
        return Err(SparseError::NonFiniteDense { row: p / n_cols, col: p % n_cols, value: x[p] });
    }
    Ok(map_row_ids(n_rows, |r, oi, ov| {
        for (c, &v) in x[r * n_cols..(r + 1) * n_cols].iter().enumerate() {
            if v != 0.0 {
                oi.push(c as u32);
                ov.push(v);
            }
        }
    }))
}

#[cfg(test)]
#[allow(clippy::float_cmp)] // the test data make every compared value exact
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::sparse::testutil::{canonical_csr, dense};

    /// Spread column ids over the whole u32 range, forcing the sparse posting lookup.
    fn spread(a: &Csr) -> Csr {
        Csr { indices: a.indices.iter().map(|&c| c * 100_000_007).collect(), ..a.clone() }
    }

    fn naive_scores(a: &Csr, b: &Csr, dim: usize) -> Vec<Vec<f64>> {
        let (da, db) = (dense(a, dim), dense(b, dim));
        da.iter().map(|x| db.iter().map(|y| x.iter().zip(y).map(|(p, q)| p * q).sum()).collect()).collect()
    }

    proptest! {
        // Values are multiples of 0.5 in [-4, 4], so every product and sum here is exact in f32.
        #[test]
        fn scores_match_naive(a in canonical_csr(12, 25), b in canonical_csr(12, 25), k in 1usize..15,
                              wide: bool, threads in 1usize..4) {
            // Spreading ids is a bijection of columns, so the naive scores of the originals still hold.
            let want = naive_scores(&a, &b, 25);
            let (a, b, dim) = if wide { (spread(&a), spread(&b), u64::from(u32::MAX)) } else { (a, b, 25) };
            let (va, vb) = (a.view(dim).unwrap(), b.view(dim).unwrap());
            let got = crate::parallel::install(Some(threads), || scores_dense(&va, &vb)).unwrap().unwrap();
            let n = vb.n_rows();
            for (r, row) in want.iter().enumerate() {
                for (j, w) in row.iter().enumerate() {
                    prop_assert_eq!(f64::from(got[r * n + j]), *w);
                }
            }
            let top = crate::parallel::install(Some(threads), || scores_top_k(&va, &vb, k)).unwrap().unwrap();
            for r in 0..va.n_rows() {
                let mut order: Vec<usize> = (0..n).collect();
                order.sort_by(|&x, &y| got[r * n + y].partial_cmp(&got[r * n + x]).unwrap().then(x.cmp(&y)));
                for slot in 0..k {
                    let (id, s) = (top.ids[r * k + slot], top.scores[r * k + slot]);
                    if slot < n {
                        prop_assert_eq!(id, order[slot] as i64);
                        prop_assert_eq!(s, got[r * n + order[slot]]);
                    } else {
                        prop_assert_eq!(id, -1);
                        prop_assert_eq!(s, f32::NEG_INFINITY);
                    }
                }
            }
            let rows_b: Vec<u64> = (0..vb.n_rows() as u64).rev().chain(0..vb.n_rows() as u64).collect();
            let b2 = crate::sparse::take_rows(&vb, &rows_b).unwrap();
            let vb2 = b2.view(dim).unwrap();
            if va.n_rows() == vb2.n_rows() {
                let d = row_dot(&va, &vb2).unwrap();
                for r in 0..va.n_rows() {
                    prop_assert_eq!(d[r], got[r * n + rows_b[r] as usize]);
                }
            }
        }

        #[test]
        fn matmul_and_dense_roundtrip(a in canonical_csr(12, 9), p in 0usize..4) {
            let va = a.view(9).unwrap();
            let m: Vec<f32> = (0..9 * p).map(|i| (i % 7) as f32 - 3.0).collect();
            let got = matmul_dense(&va, &m, p).unwrap();
            let da = dense(&a, 9);
            for (r, row) in da.iter().enumerate() {
                for c in 0..p {
                    let w: f64 = (0..9).map(|t| row[t] * f64::from(m[t * p + c])).sum();
                    prop_assert_eq!(f64::from(got[r * p + c]), w);
                }
            }
            let d = to_dense(&va).unwrap();
            let back = from_dense(&d, va.n_rows(), 9).unwrap();
            let nz = crate::sparse::canonicalize(&va, crate::sparse::Duplicates::Sum, true);
            prop_assert_eq!(back, nz);
        }
    }

    #[test]
    fn parallel_transpose_equals_sequential() {
        // Above PARALLEL_TRANSPOSE_MIN_NNZ: 1 thread sorts in one chunk, 3 threads in three.
        let (mut indptr, mut idx, mut val) = (vec![0i64], Vec::new(), Vec::new());
        let mut x = 12345u64;
        for _ in 0..3000 {
            let mut row: Vec<u32> = (0..60)
                .map(|_| {
                    x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
                    ((x >> 33) % 5000) as u32
                })
                .collect();
            row.sort_unstable();
            row.dedup();
            for t in row {
                idx.push(t);
                val.push(t as f32 * 0.5);
            }
            indptr.push(idx.len() as i64);
        }
        assert!(idx.len() >= PARALLEL_TRANSPOSE_MIN_NNZ);
        let b = CsrView::new(&indptr, &idx, &val, 5000).unwrap();
        let one = crate::parallel::install(Some(1), || transpose_dense(&b)).unwrap();
        let three = crate::parallel::install(Some(3), || transpose_dense(&b)).unwrap();
        assert_eq!(one, three);
        assert_eq!(one.0[5000], idx.len());
        assert!((0..5000).all(|t| one.1[one.0[t]..one.0[t + 1]].windows(2).all(|w| w[0] < w[1])));
    }

    #[test]
    fn errors_instead_of_panics() {
        let ip = [0i64, 1];
        let a = CsrView::new(&ip, &[7], &[1.0], 5).unwrap();
        assert!(matches!(to_dense(&a), Err(SparseError::IndexOutOfRange { .. })));
        assert!(matches!(scores_dense(&a, &a), Err(SparseError::IndexOutOfRange { .. })));
        let ok = CsrView::new(&ip, &[1], &[1.0], 6).unwrap();
        assert!(matches!(scores_dense(&ok, &a), Err(SparseError::ShapeMismatch(_))));
        assert!(matches!(matmul_dense(&ok, &[0.0; 5], 1), Err(SparseError::ShapeMismatch(_))));
        assert!(matches!(from_dense(&[f32::NAN], 1, 1), Err(SparseError::NonFiniteDense { row: 0, col: 0, .. })));
        assert!(from_dense(&[], 0, 0).is_err());
        assert!(scores_top_k(&ok, &ok, 0).is_err());
    }
}
