//! Sparse coding: `pursuit_greedy` (OMP, MP, GP), `pursuit_lasso`, `pursuit_threshold`.
//!
//! Arrays arrive already C-contiguous and of one float dtype (the facade checks and never converts between
//! float32 and float64); each function runs natively in that dtype and returns codes as CSR arrays
//! `(indptr int64, indices uint32, data, n_atoms)` or as a dense `(n_signals, n_atoms)` array.

use numpy::{Element, IntoPyArray, PyReadonlyArray2};
use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::IntoPyObjectExt;
use sparsecore_core::pursuit::greedy::{gradient_pursuit, mp, omp, GreedyParams};
use sparsecore_core::pursuit::lasso::{lasso, LassoMethod, LassoParams};
use sparsecore_core::pursuit::{threshold, Codes, Real};
use sparsecore_core::recycle;
use sparsecore_core::SparseError;

use crate::detach::run;
use crate::recycled;

/// Codes on their way to Python: CSR arrays, or a dense `(rows, cols)` array in a buffer from `recycle`.
enum Out<T> {
    Sparse(Codes<T>),
    Dense(Vec<u64>, usize, usize),
}

/// The requested form of `codes`. Called inside [`run`]: the dense array is written on the pool with the GIL
/// released, into a buffer from [`recycle::take`] (the memory of a freed earlier output when one fits: fresh
/// pages cost a fault each, ~15 ms per 40 MB on the test VM). Not an array from `numpy.zeros`: those get huge
/// pages, and after another library's large allocations their first touch stalled on memory compaction (an OMP
/// call on the bench problem, alternating with SPAMS, took 465-557 ms that way against 350-390 ms).
fn shaped<T: Real>(codes: Codes<T>, dense: bool) -> Result<Out<T>, SparseError> {
    if !dense {
        return Ok(Out::Sparse(codes));
    }
    let (rows, cols) = (codes.n_rows(), codes.n_atoms);
    let n = SparseError::checked_area("dense codes", rows, cols)?;
    let mut words = recycle::take::<T>("dense codes", n)?;
    codes.fill_dense(&mut recycle::as_elems_mut::<T>(&mut words)[..n])?;
    Ok(Out::Dense(words, rows, cols))
}

fn codes_out<T: Real + Element>(py: Python<'_>, out: Out<T>) -> PyResult<Bound<'_, PyAny>> {
    match out {
        Out::Dense(words, rows, cols) => recycled::dense_array::<T>(py, words, rows, cols),
        Out::Sparse(codes) => {
            let n_atoms = codes.n_atoms;
            (codes.indptr.into_pyarray(py), codes.indices.into_pyarray(py), codes.data.into_pyarray(py), n_atoms)
                .into_bound_py_any(py)
        }
    }
}

fn greedy_typed<'py, T: Real + Element>(
    py: Python<'py>,
    method: &str,
    x: PyReadonlyArray2<'py, T>,
    d: PyReadonlyArray2<'py, T>,
    gram: Option<PyReadonlyArray2<'py, T>>,
    k: usize,
    tol: Option<f64>,
    nonneg: bool,
    dense: bool,
    num_threads: Option<usize>,
) -> PyResult<Bound<'py, PyAny>> {
    let (xv, dv) = (x.as_array(), d.as_array());
    let gv = gram.as_ref().map(PyReadonlyArray2::as_array);
    let p = GreedyParams { k, tol: tol.map(T::of), nonneg };
    let out = run(py, num_threads, || {
        let codes = match method {
            "omp" => omp(xv, dv, gv, &p),
            "mp" => mp(xv, dv, gv, &p),
            "gp" => gradient_pursuit(xv, dv, gv, &p),
            other => Err(SparseError::invalid("method", format!("unknown greedy method {other:?}"))),
        }?;
        shaped(codes, dense)
    })?;
    codes_out(py, out)
}

/// OMP / MP / gradient pursuit (`method` = "omp" | "mp" | "gp") of the rows of `x` over the rows of `d`.
#[pyfunction]
#[pyo3(signature = (method, x, d, k, tol=None, gram=None, nonneg=false, dense=false, *, num_threads=None))]
pub fn pursuit_greedy<'py>(
    py: Python<'py>,
    method: &str,
    x: &Bound<'py, PyAny>,
    d: &Bound<'py, PyAny>,
    k: usize,
    tol: Option<f64>,
    gram: Option<&Bound<'py, PyAny>>,
    nonneg: bool,
    dense: bool,
    num_threads: Option<usize>,
) -> PyResult<Bound<'py, PyAny>> {
    if let Ok(x64) = x.extract::<PyReadonlyArray2<'py, f64>>() {
        let d64 = d.extract::<PyReadonlyArray2<'py, f64>>()?;
        let g64 = gram.map(PyAnyMethods::extract::<PyReadonlyArray2<'py, f64>>).transpose()?;
        return greedy_typed(py, method, x64, d64, g64, k, tol, nonneg, dense, num_threads);
    }
    if let Ok(x32) = x.extract::<PyReadonlyArray2<'py, f32>>() {
        let d32 = d.extract::<PyReadonlyArray2<'py, f32>>()?;
        let g32 = gram.map(PyAnyMethods::extract::<PyReadonlyArray2<'py, f32>>).transpose()?;
        return greedy_typed(py, method, x32, d32, g32, k, tol, nonneg, dense, num_threads);
    }
    Err(PyTypeError::new_err("X: expected a 2-D float32 or float64 array"))
}

fn lasso_typed<'py, T: Real + Element>(
    py: Python<'py>,
    x: PyReadonlyArray2<'py, T>,
    d: PyReadonlyArray2<'py, T>,
    gram: Option<PyReadonlyArray2<'py, T>>,
    p: LassoParams<T>,
    dense: bool,
    num_threads: Option<usize>,
) -> PyResult<(Bound<'py, PyAny>, usize, usize)> {
    let (xv, dv) = (x.as_array(), d.as_array());
    let gv = gram.as_ref().map(PyReadonlyArray2::as_array);
    let (out, n_iter_max, n_not_converged) = run(py, num_threads, || {
        let out = lasso(xv, dv, gv, &p)?;
        Ok((shaped(out.codes, dense)?, out.n_iter_max, out.n_not_converged))
    })?;
    Ok((codes_out(py, out)?, n_iter_max, n_not_converged))
}

fn lasso_method(method: &str) -> PyResult<LassoMethod> {
    match method {
        "cd" => Ok(LassoMethod::Cd),
        "ista" => Ok(LassoMethod::Ista),
        "fista" => Ok(LassoMethod::Fista),
        other => Err(crate::errors::to_py(SparseError::invalid(
            "method",
            format!("must be \"fista\", \"ista\" or \"cd\", got {other:?}"),
        ))),
    }
}

/// Lasso codes: returns `(codes, n_iter_max, n_not_converged)`.
#[pyfunction]
#[pyo3(signature = (x, d, alpha, method, max_iter, tol, gram=None, nonneg=false, dense=false, *, num_threads=None))]
pub fn pursuit_lasso<'py>(
    py: Python<'py>,
    x: &Bound<'py, PyAny>,
    d: &Bound<'py, PyAny>,
    alpha: f64,
    method: &str,
    max_iter: usize,
    tol: f64,
    gram: Option<&Bound<'py, PyAny>>,
    nonneg: bool,
    dense: bool,
    num_threads: Option<usize>,
) -> PyResult<(Bound<'py, PyAny>, usize, usize)> {
    let m = lasso_method(method)?;
    if let Ok(x64) = x.extract::<PyReadonlyArray2<'py, f64>>() {
        let d64 = d.extract::<PyReadonlyArray2<'py, f64>>()?;
        let g64 = gram.map(PyAnyMethods::extract::<PyReadonlyArray2<'py, f64>>).transpose()?;
        let p = LassoParams { alpha, method: m, max_iter, tol, nonneg };
        return lasso_typed(py, x64, d64, g64, p, dense, num_threads);
    }
    if let Ok(x32) = x.extract::<PyReadonlyArray2<'py, f32>>() {
        let d32 = d.extract::<PyReadonlyArray2<'py, f32>>()?;
        let g32 = gram.map(PyAnyMethods::extract::<PyReadonlyArray2<'py, f32>>).transpose()?;
        let p = LassoParams { alpha: alpha as f32, method: m, max_iter, tol: tol as f32, nonneg };
        return lasso_typed(py, x32, d32, g32, p, dense, num_threads);
    }
    Err(PyTypeError::new_err("X: expected a 2-D float32 or float64 array"))
}

/// Thresholding encoder `soft(D x, alpha)`.
#[pyfunction]
#[pyo3(signature = (x, d, alpha, nonneg=false, dense=false, *, num_threads=None))]
pub fn pursuit_threshold<'py>(
    py: Python<'py>,
    x: &Bound<'py, PyAny>,
    d: &Bound<'py, PyAny>,
    alpha: f64,
    nonneg: bool,
    dense: bool,
    num_threads: Option<usize>,
) -> PyResult<Bound<'py, PyAny>> {
    if let Ok(x64) = x.extract::<PyReadonlyArray2<'py, f64>>() {
        let d64 = d.extract::<PyReadonlyArray2<'py, f64>>()?;
        let (xv, dv) = (x64.as_array(), d64.as_array());
        let out = run(py, num_threads, || shaped(threshold(xv, dv, alpha, nonneg)?, dense))?;
        return codes_out(py, out);
    }
    if let Ok(x32) = x.extract::<PyReadonlyArray2<'py, f32>>() {
        let d32 = d.extract::<PyReadonlyArray2<'py, f32>>()?;
        let (xv, dv) = (x32.as_array(), d32.as_array());
        let out = run(py, num_threads, || shaped(threshold(xv, dv, alpha as f32, nonneg)?, dense))?;
        return codes_out(py, out);
    }
    Err(PyTypeError::new_err("X: expected a 2-D float32 or float64 array"))
}
