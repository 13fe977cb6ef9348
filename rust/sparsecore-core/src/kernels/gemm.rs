//! Dense matrix products: matrixmultiply's kernels (through ndarray), or a portable loop when SIMD is off.
//!
//! matrixmultiply picks its AVX-512 / AVX2 / AVX kernels at run time by itself and offers no run-time switch,
//! so with `SPARSECORE_SIMD=off` the products take a plain loop instead: each entry is one dot product of a row
//! and a column (ndarray's unrolled loop), the code every target compiles. The sums are then added in another
//! order than matrixmultiply's, so results differ from the SIMD path's by rounding only.

use ndarray::linalg::general_mat_mul;
use ndarray::{ArrayBase, Data, DataMut, Ix2, LinalgScalar};

use super::simd_allowed;

/// `c = alpha · a · b + beta · c` (shapes `(m, k)`, `(k, n)`, `(m, n)`; panics on mismatched shapes, like
/// ndarray's `general_mat_mul`). With `beta` zero, `c`'s previous contents are never read.
#[inline]
pub fn mat_mul<A, S1, S2, S3>(
    alpha: A,
    a: &ArrayBase<S1, Ix2>,
    b: &ArrayBase<S2, Ix2>,
    beta: A,
    c: &mut ArrayBase<S3, Ix2>,
) where
    A: LinalgScalar + PartialEq,
    S1: Data<Elem = A>,
    S2: Data<Elem = A>,
    S3: DataMut<Elem = A>,
{
    if simd_allowed() {
        general_mat_mul(alpha, a, b, beta, c);
    } else {
        portable_mat_mul(alpha, a, b, beta, c);
    }
}

/// The loop of [`mat_mul`] without SIMD kernels.
fn portable_mat_mul<A, S1, S2, S3>(
    alpha: A,
    a: &ArrayBase<S1, Ix2>,
    b: &ArrayBase<S2, Ix2>,
    beta: A,
    c: &mut ArrayBase<S3, Ix2>,
) where
    A: LinalgScalar + PartialEq,
    S1: Data<Elem = A>,
    S2: Data<Elem = A>,
    S3: DataMut<Elem = A>,
{
    assert!(
        a.ncols() == b.nrows() && c.nrows() == a.nrows() && c.ncols() == b.ncols(),
        "mat_mul: shapes {:?} x {:?} -> {:?} do not match",
        a.shape(),
        b.shape(),
        c.shape()
    );
    let zero = A::zero();
    for (arow, mut crow) in a.rows().into_iter().zip(c.rows_mut()) {
        for (bcol, cij) in b.columns().into_iter().zip(crow.iter_mut()) {
            let s = alpha * arow.dot(&bcol);
            *cij = if beta == zero { s } else { s + beta * *cij };
        }
    }
}

#[cfg(test)]
mod tests {
    use ndarray::Array2;

    use super::portable_mat_mul;

    #[test]
    fn portable_matches_matrixmultiply() {
        let a = Array2::from_shape_fn((7, 5), |(i, j)| (i * 5 + j) as f64 * 0.25 - 3.0);
        let b = Array2::from_shape_fn((9, 5), |(i, j)| ((i * 3 + j * 7) % 11) as f64 - 5.0);
        // b transposed: the strided view the pursuits pass.
        let mut want = Array2::from_elem((7, 9), 2.0);
        ndarray::linalg::general_mat_mul(1.5, &a, &b.t(), 0.5, &mut want);
        let mut got = Array2::from_elem((7, 9), 2.0);
        portable_mat_mul(1.5, &a, &b.t(), 0.5, &mut got);
        // Small integers and quarters: every sum is exact in f64, so both orders agree exactly.
        assert_eq!(got, want);
        let mut fresh = Array2::from_elem((7, 9), f64::NAN);
        portable_mat_mul(1.0, &a, &b.t(), 0.0, &mut fresh);
        assert_eq!(fresh, a.dot(&b.t()));
    }
}
