//! The Losse encoder: random projection → sigmoid → multilinear soft-binning per group.
//!
//! For an input `x` (length `d_in`) and a fixed projection `P` (`d_in × F·b`), `h = B · sigmoid(x P)` lies in
//! `(0, B)`. The `F·b` values form `F` groups of `b`. In a group with values `h_0..h_{b-1}`, each `h_j` falls in
//! the cell `l_j = min(floor(h_j), B − 1)` with fraction `t_j = h_j − l_j ∈ [0, 1]`; the `2^b` corners
//! `c ∈ {0,1}^b` of that cell are the active grid points `Σ_j (l_j + c_j)(B+1)^j` with weights
//! `Π_j (c_j ? t_j : 1 − t_j)`, which sum to 1. Group `f` owns feature ids `f·(B+1)^b .. (f+1)·(B+1)^b`.
//! Every row therefore has exactly `F·2^b` stored entries, in increasing order (a corner weight can be exactly 0
//! when `h_j` is a grid point; the entry is kept so that the structure never changes).

use ndarray::ArrayView2;
use rayon::prelude::*;

use crate::sparse::Csr;
use crate::SparseError;

/// Largest `bin_dim`: a group then has `2^12 = 4096` active cells, already far beyond the paper's settings.
pub const MAX_BIN_DIM: usize = 12;

/// Rows per parallel task: a row costs ~`d_in·F·b + F·2^b` flops, a few µs at the usual sizes.
const ROW_CHUNK: usize = 64;

/// Shape of a Losse encoder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LsseParams {
    /// Number of groups `F`.
    pub num_groups: usize,
    /// Projected values per group `b` (the grid's dimension).
    pub bin_dim: usize,
    /// Bins per projected value `B` (a group's grid has `B + 1` points per axis).
    pub num_bins: usize,
}

impl LsseParams {
    /// Check the shape and return the feature dimension `F·(B+1)^b`.
    ///
    /// Errors: a zero count, `bin_dim > MAX_BIN_DIM`, or a dimension above `2**32 - 1`.
    pub fn validate(&self) -> Result<u64, SparseError> {
        if self.num_groups == 0 {
            return Err(SparseError::invalid("num_groups", "must be >= 1, got 0"));
        }
        if self.bin_dim == 0 || self.bin_dim > MAX_BIN_DIM {
            return Err(SparseError::invalid(
                "bin_dim",
                format!("must be between 1 and {MAX_BIN_DIM}, got {}", self.bin_dim),
            ));
        }
        if self.num_bins == 0 {
            return Err(SparseError::invalid("num_bins", "must be >= 1, got 0"));
        }
        let dim = (self.num_bins as u128 + 1).checked_pow(self.bin_dim as u32).map(|g| g * self.num_groups as u128);
        match dim {
            Some(d) if d <= u128::from(u32::MAX) => Ok(d as u64),
            _ => Err(SparseError::invalid(
                "num_bins",
                format!(
                    "num_groups * (num_bins + 1) ** bin_dim = {} * {}**{} exceeds the largest dim, 2**32 - 1",
                    self.num_groups,
                    self.num_bins + 1,
                    self.bin_dim
                ),
            )),
        }
    }

    /// Stored entries per encoded row, `F·2^b`.
    pub fn active(&self) -> usize {
        self.num_groups << self.bin_dim
    }

    /// Feature ids owned by one group, `(B+1)^b`.
    fn group_size(&self) -> u64 {
        (self.num_bins as u64 + 1).pow(self.bin_dim as u32)
    }
}

/// Encode the rows of `x` (`n × d_in`) with projection `proj` (`d_in × F·b`) into a CSR batch.
///
/// Errors: bad [`LsseParams`]; `proj` not `d_in × F·b`; a non-finite entry in `x` or `proj`.
pub fn encode<T>(x: ArrayView2<'_, T>, proj: ArrayView2<'_, f64>, p: &LsseParams) -> Result<Csr, SparseError>
where
    T: Copy + Into<f64> + Sync,
{
    p.validate()?;
    let (n, d_in) = x.dim();
    let width = p.num_groups * p.bin_dim;
    if proj.dim() != (d_in, width) {
        return Err(SparseError::ShapeMismatch(format!(
            "X has {d_in} columns, so the projection must be ({d_in}, num_groups * bin_dim = {width}), got {:?}",
            proj.dim()
        )));
    }
    if let Some(((r, c), v)) = proj.indexed_iter().find(|(_, v)| !v.is_finite()) {
        return Err(SparseError::invalid("projection", format!("entry [{r}, {c}] is not finite: {v}")));
    }
    if let Some(((row, col), v)) = x.indexed_iter().find(|(_, v)| !(**v).into().is_finite()) {
        return Err(SparseError::NonFiniteDense { row, col, value: (*v).into() as f32 });
    }
    let active = p.active();
    let nnz = n.checked_mul(active).ok_or(SparseError::TooLarge { what: "the encoded batch", bytes: u64::MAX })?;
    let mut indices = try_zeroed::<u32>(nnz, "the encoded batch's indices")?;
    let mut data = try_zeroed::<f32>(nnz, "the encoded batch's values")?;
    // Row-major copy of the projection (d_in·F·b values, tiny next to the output).
    let pm: Vec<f64> = proj.iter().copied().collect();
    let encode_chunk = |c: usize, (idx, val): (&mut [u32], &mut [f32])| {
        let mut z = vec![0.0f64; width];
        let mut w = vec![0.0f64; 1 << p.bin_dim];
        let mut cell = vec![0u64; 1 << p.bin_dim];
        for (i, (idx, val)) in idx.chunks_mut(active).zip(val.chunks_mut(active)).enumerate() {
            let r = c * ROW_CHUNK + i;
            z.fill(0.0);
            for (xi, pr) in x.row(r).iter().zip(pm.chunks_exact(width)) {
                let xi: f64 = (*xi).into();
                z.iter_mut().zip(pr.iter()).for_each(|(zv, pv)| *zv += xi * pv);
            }
            encode_row(&z, p, &mut w, &mut cell, idx, val);
        }
    };
    let chunk = ROW_CHUNK * active;
    if n <= ROW_CHUNK {
        indices.chunks_mut(chunk.max(1)).zip(data.chunks_mut(chunk.max(1))).enumerate().for_each(|(c, s)| {
            encode_chunk(c, s);
        });
    } else {
        indices.par_chunks_mut(chunk).zip(data.par_chunks_mut(chunk)).enumerate().for_each(|(c, s)| {
            encode_chunk(c, s);
        });
    }
    let indptr = (0..=n).map(|i| (i * active) as i64).collect();
    Ok(Csr { indptr, indices, data })
}

/// Soft-bin one row's projected values `z` (length `F·b`) into `idx`/`val` (length `F·2^b`).
fn encode_row(z: &[f64], p: &LsseParams, w: &mut [f64], cell: &mut [u64], idx: &mut [u32], val: &mut [f32]) {
    let (b, bins) = (p.bin_dim, p.num_bins as f64);
    let stride_base = p.num_bins as u64 + 1;
    let group = p.group_size();
    let corners = 1usize << b;
    for (f, zg) in z.chunks_exact(b).enumerate() {
        // Build corner weights and ids by doubling over the axes: after axis j, entries [0, 2^j) have c_j = 0
        // and [2^j, 2^(j+1)) have c_j = 1, so the final order is the corner mask order, which is also the
        // increasing order of feature ids because (B+1)^j exceeds the sum of all lower strides.
        w[0] = 1.0;
        cell[0] = f as u64 * group;
        let mut stride = 1u64;
        for (j, &zj) in zg.iter().enumerate() {
            let h = bins / (1.0 + (-zj).exp());
            let l = h.floor().min(bins - 1.0).max(0.0);
            let t = h - l;
            let half = 1usize << j;
            for m in 0..half {
                let (wm, cm) = (w[m], cell[m] + l as u64 * stride);
                w[m] = wm * (1.0 - t);
                cell[m] = cm;
                w[m + half] = wm * t;
                cell[m + half] = cm + stride;
            }
            stride *= stride_base;
        }
        let out = f * corners..(f + 1) * corners;
        for ((o, v), (&c, &wc)) in idx[out.clone()].iter_mut().zip(&mut val[out]).zip(cell.iter().zip(w.iter())) {
            *o = c as u32;
            *v = wc as f32;
        }
    }
}

fn try_zeroed<T: Clone + Default>(n: usize, what: &'static str) -> Result<Vec<T>, SparseError> {
    let mut v = Vec::new();
    v.try_reserve_exact(n).map_err(|_| SparseError::TooLarge {
        what,
        bytes: (n as u64).saturating_mul(std::mem::size_of::<T>() as u64),
    })?;
    v.resize(n, T::default());
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array2;
    use proptest::prelude::*;

    /// The definition, written out per corner: product over axes in order, ids from the corner's bits.
    fn naive_row(z: &[f64], p: &LsseParams) -> Vec<(u32, f32)> {
        let mut out = Vec::new();
        let group = (p.num_bins as u64 + 1).pow(p.bin_dim as u32);
        for f in 0..p.num_groups {
            for mask in 0..(1usize << p.bin_dim) {
                let (mut id, mut wt, mut stride) = (f as u64 * group, 1.0f64, 1u64);
                for j in 0..p.bin_dim {
                    let h = p.num_bins as f64 / (1.0 + (-z[f * p.bin_dim + j]).exp());
                    let l = h.floor().min(p.num_bins as f64 - 1.0);
                    let t = h - l;
                    let bit = (mask >> j) & 1;
                    id += (l as u64 + bit as u64) * stride;
                    wt *= if bit == 1 { t } else { 1.0 - t };
                    stride *= p.num_bins as u64 + 1;
                }
                out.push((id as u32, wt as f32));
            }
        }
        out
    }

    proptest! {
        #[test]
        fn matches_naive(
            f in 1usize..4, b in 1usize..4, bins in 1usize..6, d_in in 1usize..4, n in 0usize..5,
            seed in proptest::collection::vec(-3.0f64..3.0, 64),
        ) {
            let p = LsseParams { num_groups: f, bin_dim: b, num_bins: bins };
            let width = f * b;
            let proj = Array2::from_shape_fn((d_in, width), |(i, j)| seed[(i * width + j) % 64] * 0.7);
            let x = Array2::from_shape_fn((n, d_in), |(i, j)| seed[(7 * i + 3 * j + 5) % 64]);
            let csr = encode(x.view(), proj.view(), &p).map_err(|e| TestCaseError::fail(e.to_string()))?;
            let dim = p.validate().map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(csr.indptr.len(), n + 1);
            for r in 0..n {
                let z: Vec<f64> = (0..width).map(|c| (0..d_in).map(|i| x[(r, i)] * proj[(i, c)]).sum()).collect();
                let want = naive_row(&z, &p);
                let (lo, hi) = (csr.indptr[r] as usize, csr.indptr[r + 1] as usize);
                prop_assert_eq!(hi - lo, p.active());
                let got: Vec<(u32, f32)> = (lo..hi).map(|k| (csr.indices[k], csr.data[k])).collect();
                for (g, w) in got.iter().zip(&want) {
                    prop_assert_eq!(g.0, w.0);
                    prop_assert!((g.1 - w.1).abs() <= 1e-6, "{:?} vs {:?}", g, w);
                }
                prop_assert!(got.windows(2).all(|w| w[0].0 < w[1].0));
                prop_assert!(got.iter().all(|g| u64::from(g.0) < dim));
                let total: f32 = got.iter().map(|g| g.1).sum();
                prop_assert!((total - f as f32).abs() <= 1e-5 * f as f32);
            }
        }
    }

    #[test]
    fn rejects_bad_shapes() {
        let p = LsseParams { num_groups: 2, bin_dim: 2, num_bins: 4 };
        let x = Array2::<f64>::zeros((3, 2));
        assert!(matches!(encode(x.view(), Array2::zeros((3, 4)).view(), &p), Err(SparseError::ShapeMismatch(_))));
        let mut bad = Array2::<f64>::zeros((3, 2));
        bad[(1, 1)] = f64::NAN;
        assert!(matches!(
            encode(bad.view(), Array2::zeros((2, 4)).view(), &p),
            Err(SparseError::NonFiniteDense { row: 1, col: 1, .. })
        ));
        let huge = LsseParams { num_groups: 1000, bin_dim: 4, num_bins: 1000 };
        assert!(huge.validate().is_err());
        assert!(LsseParams { num_groups: 1, bin_dim: 13, num_bins: 1 }.validate().is_err());
    }

    #[test]
    fn saturated_sigmoid_lands_on_the_last_cell() {
        let p = LsseParams { num_groups: 1, bin_dim: 1, num_bins: 4 };
        let proj = Array2::from_elem((1, 1), 1.0);
        let x = Array2::from_elem((1, 1), 1e3);
        let csr = encode(x.view(), proj.view(), &p).expect("encode");
        assert_eq!(csr.indices, vec![3, 4]);
        assert_eq!(csr.data, vec![0.0, 1.0]);
    }
}
