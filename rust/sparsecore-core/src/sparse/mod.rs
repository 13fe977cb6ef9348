//! CSR batches of sparse vectors and the parallel operations on them.
//!
//! A batch is `indptr` (i64, `n_rows + 1` offsets), `indices` (u32 column ids) and `data` (f32 values) with a
//! dimension `dim <= u32::MAX`. [`CsrView`] borrows such arrays after an O(rows) structural check; the O(nnz)
//! content check is [`CsrView::check`]. Operations never index out of bounds on unchecked content: those that
//! address columns check `indices < dim` first and return an error.

mod canon;
mod products;
mod quant;
mod rows;
mod select;

pub use canon::{canonicalize, is_canonical, Duplicates};
pub use products::{from_dense, matmul_dense, row_dot, scores_dense, scores_top_k, to_dense, TopK};
pub use quant::{dequantize, quantize, Quantized};
pub use rows::{concat, take_rows};
pub use select::{prune_mass, threshold, top_k};

use rayon::prelude::*;

use crate::SparseError;

/// Rows handled by one rayon task in row-parallel loops: large enough to amortise task overhead on rows of
/// ~100 non-zeros, small enough to balance 2–16 threads on batches of a few thousand rows.
const ROW_CHUNK: usize = 256;

/// Inputs with at most this many entries are checked on the calling thread: handing a job to a rayon pool
/// costs microseconds of wake-up and hand-back, more than checking a query of ~100 entries.
pub const SEQUENTIAL_MAX_NNZ: usize = 1 << 14;

/// An owned CSR batch, as returned by operations.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Csr {
    /// Row offsets, `n_rows + 1` entries starting at 0.
    pub indptr: Vec<i64>,
    /// Column ids.
    pub indices: Vec<u32>,
    /// Values.
    pub data: Vec<f32>,
}

impl Csr {
    /// Borrow as a view with the given dimension (the structure is valid by construction).
    pub fn view(&self, dim: u64) -> Result<CsrView<'_>, SparseError> {
        CsrView::new(&self.indptr, &self.indices, &self.data, dim)
    }
}

/// A borrowed CSR batch whose structure (`indptr` and lengths) has been checked.
#[derive(Debug, Clone, Copy)]
pub struct CsrView<'a> {
    indptr: &'a [i64],
    indices: &'a [u32],
    data: &'a [f32],
    dim: u64,
}

impl<'a> CsrView<'a> {
    /// Borrow CSR arrays after checking their structure in O(rows).
    ///
    /// Errors: `dim` outside `1..=u32::MAX`; `indptr` empty, not starting at 0, decreasing, or not ending at
    /// `len(indices)`; `indices` and `data` of different lengths.
    pub fn new(indptr: &'a [i64], indices: &'a [u32], data: &'a [f32], dim: u64) -> Result<Self, SparseError> {
        if dim == 0 || dim > u64::from(u32::MAX) {
            return Err(SparseError::invalid("dim", format!("must be between 1 and 2**32 - 1, got {dim}")));
        }
        if indices.len() != data.len() {
            return Err(SparseError::LengthMismatch { indices: indices.len(), data: data.len() });
        }
        let Some(&first) = indptr.first() else {
            return Err(SparseError::Indptr("must have n_rows + 1 >= 1 entries, got an empty array".into()));
        };
        if first != 0 {
            return Err(SparseError::Indptr(format!("indptr[0] must be 0, got {first}")));
        }
        if let Some(row) = indptr.windows(2).position(|w| w[1] < w[0]) {
            return Err(SparseError::Indptr(format!(
                "must be non-decreasing, but indptr[{row}] = {} > indptr[{}] = {}",
                indptr[row],
                row + 1,
                indptr[row + 1]
            )));
        }
        let last = indptr[indptr.len() - 1];
        if usize::try_from(last).ok() != Some(indices.len()) {
            return Err(SparseError::Indptr(format!(
                "indptr[-1] = {last} must equal len(indices) = {}",
                indices.len()
            )));
        }
        Ok(Self { indptr, indices, data, dim })
    }

    /// Number of rows.
    pub fn n_rows(&self) -> usize {
        self.indptr.len() - 1
    }

    /// Number of stored entries.
    pub fn nnz(&self) -> usize {
        self.indices.len()
    }

    /// The dimension (number of columns).
    pub fn dim(&self) -> u64 {
        self.dim
    }

    /// Row offsets.
    pub fn indptr(&self) -> &'a [i64] {
        self.indptr
    }

    /// All column ids.
    pub fn indices(&self) -> &'a [u32] {
        self.indices
    }

    /// All values.
    pub fn data(&self) -> &'a [f32] {
        self.data
    }

    /// Flat range of row `r` (structure is checked, so the casts are exact).
    #[inline]
    pub fn range(&self, r: usize) -> std::ops::Range<usize> {
        self.indptr[r] as usize..self.indptr[r + 1] as usize
    }

    /// Column ids and values of row `r`.
    #[inline]
    pub fn row(&self, r: usize) -> (&'a [u32], &'a [f32]) {
        let rg = self.range(r);
        (&self.indices[rg.clone()], &self.data[rg])
    }

    /// Row containing flat position `pos` (the last row whose start is `<= pos`, skipping empty rows).
    pub fn row_of(&self, pos: usize) -> usize {
        self.indptr.partition_point(|&p| p as usize <= pos).saturating_sub(1)
    }

    /// Check the content: indices `< dim`, finite values, and (with `sorted`) strictly increasing indices in
    /// every row. Reports the first problem in flat order, whatever the thread count.
    pub fn check(&self, sorted: bool) -> Result<(), SparseError> {
        if self.nnz() <= SEQUENTIAL_MAX_NNZ {
            return (0..self.n_rows()).try_for_each(|r| self.check_row(r, sorted));
        }
        let first = (0..self.n_rows().div_ceil(ROW_CHUNK))
            .into_par_iter()
            .filter_map(|c| {
                let rows = c * ROW_CHUNK..((c + 1) * ROW_CHUNK).min(self.n_rows());
                rows.into_iter().find_map(|r| self.check_row(r, sorted).err())
            })
            .find_first(|_| true);
        first.map_or(Ok(()), Err)
    }

    fn check_row(&self, r: usize, sorted: bool) -> Result<(), SparseError> {
        let rg = self.range(r);
        let (idx, val) = (&self.indices[rg.clone()], &self.data[rg.clone()]);
        for (i, (&c, &v)) in idx.iter().zip(val).enumerate() {
            let pos = rg.start + i;
            if u64::from(c) >= self.dim {
                return Err(SparseError::IndexOutOfRange { row: r, pos, index: c.into(), dim: self.dim });
            }
            if !v.is_finite() {
                return Err(SparseError::NonFinite { row: r, pos, value: v });
            }
            if sorted && i > 0 {
                let prev = idx[i - 1];
                if prev > c {
                    return Err(SparseError::Unsorted { row: r, pos: pos - 1, prev, next: c });
                }
                if prev == c {
                    return Err(SparseError::Duplicate { row: r, pos: pos - 1, index: c });
                }
            }
        }
        Ok(())
    }

    /// Check only that every index is `< dim` (what column-addressing operations need to be memory-safe).
    pub fn check_bounds(&self) -> Result<(), SparseError> {
        let dim = self.dim;
        let found = if self.nnz() <= SEQUENTIAL_MAX_NNZ {
            self.indices.iter().position(|&c| u64::from(c) >= dim)
        } else {
            self.indices.par_iter().position_first(|&c| u64::from(c) >= dim)
        };
        match found {
            None => Ok(()),
            Some(pos) => {
                Err(SparseError::IndexOutOfRange { row: self.row_of(pos), pos, index: self.indices[pos].into(), dim })
            }
        }
    }
}

/// Row-parallel map producing a new CSR batch: `f(indices, values, out_indices, out_values)` appends the
/// output row. Rows are processed in chunks and stitched in order, so the result is thread-count invariant.
pub(crate) fn map_rows<F>(a: &CsrView<'_>, f: F) -> Csr
where
    F: Fn(&[u32], &[f32], &mut Vec<u32>, &mut Vec<f32>) + Sync,
{
    map_row_ids(a.n_rows(), |r, oi, ov| {
        let (idx, val) = a.row(r);
        f(idx, val, oi, ov);
    })
}

/// Build `n_rows` output rows in parallel: `f(row, out_indices, out_values)` appends row `row`.
pub(crate) fn map_row_ids<F>(n_rows: usize, f: F) -> Csr
where
    F: Fn(usize, &mut Vec<u32>, &mut Vec<f32>) + Sync,
{
    let parts: Vec<(Vec<i64>, Vec<u32>, Vec<f32>)> = (0..n_rows.div_ceil(ROW_CHUNK))
        .into_par_iter()
        .map(|c| {
            let rows = c * ROW_CHUNK..((c + 1) * ROW_CHUNK).min(n_rows);
            let mut lens = Vec::with_capacity(rows.len());
            let (mut oi, mut ov) = (Vec::new(), Vec::new());
            for r in rows {
                let before = oi.len();
                f(r, &mut oi, &mut ov);
                lens.push((oi.len() - before) as i64);
            }
            (lens, oi, ov)
        })
        .collect();
    stitch(n_rows, parts)
}

/// Concatenate per-chunk outputs (row lengths, indices, values) into one CSR batch.
fn stitch(n_rows: usize, parts: Vec<(Vec<i64>, Vec<u32>, Vec<f32>)>) -> Csr {
    let nnz: usize = parts.iter().map(|p| p.1.len()).sum();
    let mut out =
        Csr { indptr: Vec::with_capacity(n_rows + 1), indices: Vec::with_capacity(nnz), data: Vec::with_capacity(nnz) };
    out.indptr.push(0);
    let mut acc = 0i64;
    for (lens, idx, val) in parts {
        for l in lens {
            acc += l;
            out.indptr.push(acc);
        }
        out.indices.extend_from_slice(&idx);
        out.data.extend_from_slice(&val);
    }
    out
}

#[cfg(test)]
pub(crate) mod testutil {
    //! Proptest strategies shared by the op tests: small random CSR batches, sorted and unique per row.
    use proptest::prelude::*;

    use super::Csr;

    /// A canonical batch with up to `max_rows` rows over `dim` columns, values in [-4, 4] with repeats.
    pub fn canonical_csr(max_rows: usize, dim: u32) -> impl Strategy<Value = Csr> {
        let row = proptest::collection::btree_map(0..dim, -8i32..=8, 0..(dim as usize).min(12));
        proptest::collection::vec(row, 0..=max_rows).prop_map(|rows| {
            let mut out = Csr { indptr: vec![0], ..Csr::default() };
            for r in rows {
                for (c, v) in r {
                    out.indices.push(c);
                    out.data.push(v as f32 * 0.5);
                }
                out.indptr.push(out.indices.len() as i64);
            }
            out
        })
    }

    /// Dense row-major copy of a batch, summing duplicates.
    pub fn dense(a: &Csr, dim: usize) -> Vec<Vec<f64>> {
        (0..a.indptr.len() - 1)
            .map(|r| {
                let mut row = vec![0.0; dim];
                for p in a.indptr[r] as usize..a.indptr[r + 1] as usize {
                    row[a.indices[p] as usize] += f64::from(a.data[p]);
                }
                row
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn structure_errors_name_the_problem() {
        let e = CsrView::new(&[], &[], &[], 3).unwrap_err();
        assert!(matches!(e, SparseError::Indptr(_)));
        let e = CsrView::new(&[1, 1], &[0], &[1.0], 3).unwrap_err();
        assert!(e.to_string().contains("indptr[0] must be 0"));
        let e = CsrView::new(&[0, 2, 1], &[0], &[1.0], 3).unwrap_err();
        assert!(e.to_string().contains("non-decreasing"));
        let e = CsrView::new(&[0, 2], &[0], &[1.0], 3).unwrap_err();
        assert!(e.to_string().contains("must equal len(indices)"));
        let e = CsrView::new(&[0, 1], &[0], &[1.0, 2.0], 3).unwrap_err();
        assert!(matches!(e, SparseError::LengthMismatch { indices: 1, data: 2 }));
        assert!(CsrView::new(&[0], &[], &[], 0).is_err());
        assert!(CsrView::new(&[0], &[], &[], 1 << 32).is_err());
        assert!(CsrView::new(&[0], &[], &[], u64::from(u32::MAX)).is_ok());
    }

    #[test]
    fn content_errors_report_first_problem() {
        let ip = [0, 2, 4];
        let v = CsrView::new(&ip, &[0, 5, 3, 3], &[1.0, f32::NAN, 1.0, 1.0], 4).unwrap();
        assert_eq!(v.check(true), Err(SparseError::IndexOutOfRange { row: 0, pos: 1, index: 5, dim: 4 }));
        let v = CsrView::new(&ip, &[0, 1, 3, 3], &[1.0, f32::NAN, 1.0, 1.0], 4).unwrap();
        assert!(matches!(v.check(true), Err(SparseError::NonFinite { row: 0, pos: 1, .. })));
        let v = CsrView::new(&ip, &[0, 1, 3, 3], &[1.0, 1.0, 1.0, 1.0], 4).unwrap();
        assert_eq!(v.check(true), Err(SparseError::Duplicate { row: 1, pos: 2, index: 3 }));
        assert_eq!(v.check(false), Ok(()));
        let v = CsrView::new(&ip, &[1, 0, 2, 3], &[1.0, 1.0, 1.0, 1.0], 4).unwrap();
        assert_eq!(v.check(true), Err(SparseError::Unsorted { row: 0, pos: 0, prev: 1, next: 0 }));
        let v = CsrView::new(&[0, 0, 0, 1], &[9], &[1.0], 4).unwrap();
        assert_eq!(v.check_bounds(), Err(SparseError::IndexOutOfRange { row: 2, pos: 0, index: 9, dim: 4 }));
    }
}
