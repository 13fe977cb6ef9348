//! numpy arrays to and from Rust buffers: input arrays borrowed as slices (an error naming the argument when one
//! is not C-contiguous), output vectors handed to numpy without a copy.

use numpy::ndarray::{Array2, Dimension};
use numpy::{Element, IntoPyArray, PyArray1, PyArray2, PyReadonlyArray};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use sparsecore_core::sparse::Csr;

/// CSR arrays on their way to Python: `(indptr int64, indices uint32, data float32)`.
pub type CsrArrays<'py> = (Bound<'py, PyArray1<i64>>, Bound<'py, PyArray1<u32>>, Bound<'py, PyArray1<f32>>);

/// The elements of the array `name` in memory order, borrowed without a copy (any number of dimensions).
///
/// Errors: `ValueError` `"{name}: array must be C-contiguous"` (the facade passes contiguous arrays, so this
/// guards direct calls into `_core`).
pub fn contiguous<'a, T: Element, D: Dimension>(a: &'a PyReadonlyArray<'_, T, D>, name: &str) -> PyResult<&'a [T]> {
    a.as_slice().map_err(|_| PyValueError::new_err(format!("{name}: array must be C-contiguous")))
}

/// The arrays of `c`, handed to numpy without a copy.
pub fn csr_out(py: Python<'_>, c: Csr) -> CsrArrays<'_> {
    (c.indptr.into_pyarray(py), c.indices.into_pyarray(py), c.data.into_pyarray(py))
}

/// A `(rows, cols)` numpy array that takes over `v` (row-major, no copy).
///
/// Errors: `ValueError` when `v` does not hold `rows * cols` values (a bug in the caller).
pub fn matrix<T: Element>(py: Python<'_>, rows: usize, cols: usize, v: Vec<T>) -> PyResult<Bound<'_, PyArray2<T>>> {
    Array2::from_shape_vec((rows, cols), v)
        .map(|a| a.into_pyarray(py))
        .map_err(|e| PyValueError::new_err(format!("internal shape error: {e}")))
}

/// [`matrix`] with `cols` columns and as many rows as `v` fills (none when `cols` is 0).
pub fn matrix_by_cols<T: Element>(py: Python<'_>, v: Vec<T>, cols: usize) -> PyResult<Bound<'_, PyArray2<T>>> {
    let rows = v.len().checked_div(cols).unwrap_or(0);
    matrix(py, rows, cols, v)
}
