//! Binding of `sparsecore_core::lsse`: `lsse_encode` and `OnlineRidgeCore`, a thread-safe handle (RwLock) to an
//! online ridge model (updates take the write lock, predictions the read lock).

use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

use ndarray::Array2;
use numpy::{IntoPyArray, PyArray2, PyReadonlyArray1, PyReadonlyArray2};
use pyo3::exceptions::{PyRuntimeError, PyTypeError};
use pyo3::prelude::*;
use pyo3::types::PyDict;
use sparsecore_core::lsse::{encode, LsseParams, OnlineRidge, RidgeState, UpdateRule};
use sparsecore_core::SparseError;

use crate::convert::{contiguous, csr_out, CsrArrays};
use crate::detach::run;
use crate::errors::to_py;
use crate::sparse::CsrArg;

/// Losse features of the rows of `x` (float32 or float64, (n, d_in)) with projection `proj` ((d_in, F*b)
/// float64): CSR arrays (indptr, indices, data) with exactly F * 2**b entries per row.
#[pyfunction]
#[pyo3(signature = (x, proj, num_groups, bin_dim, num_bins, *, num_threads=None))]
pub fn lsse_encode<'py>(
    py: Python<'py>,
    x: &Bound<'py, PyAny>,
    proj: PyReadonlyArray2<'py, f64>,
    num_groups: usize,
    bin_dim: usize,
    num_bins: usize,
    num_threads: Option<usize>,
) -> PyResult<CsrArrays<'py>> {
    let p = LsseParams { num_groups, bin_dim, num_bins };
    let pv = proj.as_array();
    let csr = if let Ok(x64) = x.extract::<PyReadonlyArray2<'py, f64>>() {
        let xv = x64.as_array();
        run(py, num_threads, || encode(xv, pv, &p))?
    } else if let Ok(x32) = x.extract::<PyReadonlyArray2<'py, f32>>() {
        let xv = x32.as_array();
        run(py, num_threads, || encode(xv, pv, &p))?
    } else {
        return Err(PyTypeError::new_err("X: expected a 2-D float32 or float64 array"));
    };
    Ok(csr_out(py, csr))
}

fn rule_of(update: &str) -> PyResult<UpdateRule> {
    match update {
        "block" => Ok(UpdateRule::Block),
        "exact" => Ok(UpdateRule::Exact),
        other => Err(to_py(SparseError::invalid("update", format!("must be 'block' or 'exact', got {other:?}")))),
    }
}

fn rule_name(rule: UpdateRule) -> &'static str {
    match rule {
        UpdateRule::Block => "block",
        UpdateRule::Exact => "exact",
    }
}

fn poisoned<T>(_: T) -> SparseError {
    SparseError::ThreadPool("the model lock is poisoned by an earlier panic".into())
}

/// A handle to an online ridge model (private; use `sparsecore.lsse.OnlineRidge`).
#[pyclass(frozen, module = "sparsecore._core")]
pub struct OnlineRidgeCore {
    inner: RwLock<OnlineRidge>,
}

impl OnlineRidgeCore {
    fn read(&self) -> Result<RwLockReadGuard<'_, OnlineRidge>, SparseError> {
        self.inner.read().map_err(poisoned)
    }
    fn write(&self) -> Result<RwLockWriteGuard<'_, OnlineRidge>, SparseError> {
        self.inner.write().map_err(poisoned)
    }
}

#[pymethods]
impl OnlineRidgeCore {
    /// An empty model over `dim` features with `n_outputs` outputs.
    #[new]
    #[pyo3(signature = (dim, n_outputs, ridge, update="block"))]
    fn new(dim: u64, n_outputs: usize, ridge: f64, update: &str) -> PyResult<Self> {
        let m = OnlineRidge::new(dim, n_outputs, ridge, rule_of(update)?).map_err(to_py)?;
        Ok(Self { inner: RwLock::new(m) })
    }

    /// Learn from CSR features `phi` and targets `y` (float64, (n, n_outputs)), one update per row in order.
    #[pyo3(signature = (phi, y, num_threads=None))]
    fn partial_fit(
        &self,
        py: Python<'_>,
        phi: CsrArg<'_>,
        y: PyReadonlyArray2<'_, f64>,
        num_threads: Option<usize>,
    ) -> PyResult<()> {
        let view = phi.view("phi")?;
        let yv = y.as_array();
        run(py, num_threads, || self.write()?.partial_fit(&view, yv))
    }

    /// Predictions (float64, (n, n_outputs)) for CSR features `phi`.
    #[pyo3(signature = (phi, num_threads=None))]
    fn predict<'py>(
        &self,
        py: Python<'py>,
        phi: CsrArg<'py>,
        num_threads: Option<usize>,
    ) -> PyResult<Bound<'py, PyArray2<f64>>> {
        let view = phi.view("phi")?;
        let (out, no) = run(py, num_threads, || {
            let m = self.read()?;
            Ok((m.predict(&view)?, m.n_outputs()))
        })?;
        let arr =
            Array2::from_shape_vec((view.n_rows(), no), out).map_err(|e| PyRuntimeError::new_err(e.to_string()))?;
        Ok(arr.into_pyarray(py))
    }

    /// Conjugate gradients on the whole system: (iterations, relative residual).
    #[pyo3(signature = (tol=1e-10, max_iter=10_000, num_threads=None))]
    fn solve_exact(
        &self,
        py: Python<'_>,
        tol: f64,
        max_iter: usize,
        num_threads: Option<usize>,
    ) -> PyResult<(usize, f64)> {
        let rep = run(py, num_threads, || self.write()?.solve_exact(tol, max_iter))?;
        Ok((rep.iterations, rep.rel_residual))
    }

    /// Set the ridge penalty (weights are stale until the next update or solve_exact).
    fn set_ridge(&self, ridge: f64) -> PyResult<()> {
        self.write().and_then(|mut m| m.set_ridge(ridge)).map_err(to_py)
    }

    /// An independent copy.
    fn copy(&self) -> PyResult<Self> {
        let m = self.read().map_err(to_py)?.clone();
        Ok(Self { inner: RwLock::new(m) })
    }

    /// The whole state as a dict of scalars and numpy arrays (rows by increasing feature id).
    fn state<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let st = py.detach(|| self.read().map(|m| m.state())).map_err(to_py)?;
        let n = st.features.len();
        let no = st.n_outputs;
        let d = PyDict::new(py);
        d.set_item("dim", st.dim)?;
        d.set_item("n_outputs", no)?;
        d.set_item("ridge", st.ridge)?;
        d.set_item("update", rule_name(st.rule))?;
        d.set_item("n_seen", st.n_seen)?;
        d.set_item("features", st.features.into_pyarray(py))?;
        d.set_item("a_indptr", st.a_indptr.into_pyarray(py))?;
        d.set_item("a_indices", st.a_indices.into_pyarray(py))?;
        d.set_item("a_data", st.a_data.into_pyarray(py))?;
        let b = Array2::from_shape_vec((n, no), st.b).map_err(|e| PyRuntimeError::new_err(e.to_string()))?;
        let w = Array2::from_shape_vec((n, no), st.w).map_err(|e| PyRuntimeError::new_err(e.to_string()))?;
        d.set_item("b", b.into_pyarray(py))?;
        d.set_item("w", w.into_pyarray(py))?;
        Ok(d)
    }

    /// Rebuild a model from the arrays of `state()`, checking them all.
    #[staticmethod]
    #[pyo3(signature = (dim, n_outputs, ridge, update, n_seen, features, a_indptr, a_indices, a_data, b, w))]
    fn from_state(
        py: Python<'_>,
        dim: u64,
        n_outputs: usize,
        ridge: f64,
        update: &str,
        n_seen: u64,
        features: PyReadonlyArray1<'_, u32>,
        a_indptr: PyReadonlyArray1<'_, i64>,
        a_indices: PyReadonlyArray1<'_, u32>,
        a_data: PyReadonlyArray1<'_, f64>,
        b: PyReadonlyArray2<'_, f64>,
        w: PyReadonlyArray2<'_, f64>,
    ) -> PyResult<Self> {
        let st = RidgeState {
            dim,
            n_outputs,
            ridge,
            rule: rule_of(update)?,
            n_seen,
            features: contiguous(&features, "features")?.to_vec(),
            a_indptr: contiguous(&a_indptr, "a_indptr")?.to_vec(),
            a_indices: contiguous(&a_indices, "a_indices")?.to_vec(),
            a_data: contiguous(&a_data, "a_data")?.to_vec(),
            b: b.as_array().iter().copied().collect(),
            w: w.as_array().iter().copied().collect(),
        };
        let m = py.detach(|| OnlineRidge::from_state(&st)).map_err(to_py)?;
        Ok(Self { inner: RwLock::new(m) })
    }

    /// Bytes held, by component.
    fn memory_usage(&self) -> PyResult<Vec<(&'static str, usize)>> {
        Ok(self.read().map_err(to_py)?.memory_usage())
    }

    /// Feature dimension.
    #[getter]
    fn dim(&self) -> PyResult<u64> {
        Ok(self.read().map_err(to_py)?.dim())
    }

    /// Outputs per sample.
    #[getter]
    fn n_outputs(&self) -> PyResult<usize> {
        Ok(self.read().map_err(to_py)?.n_outputs())
    }

    /// Ridge penalty.
    #[getter]
    fn ridge(&self) -> PyResult<f64> {
        Ok(self.read().map_err(to_py)?.ridge())
    }

    /// Update rule, "block" or "exact".
    #[getter]
    fn update(&self) -> PyResult<&'static str> {
        Ok(rule_name(self.read().map_err(to_py)?.rule()))
    }

    /// Samples seen.
    #[getter]
    fn n_seen(&self) -> PyResult<u64> {
        Ok(self.read().map_err(to_py)?.n_seen())
    }

    /// Exact-rule updates whose solve stopped above its tolerance.
    #[getter]
    fn n_unconverged(&self) -> PyResult<u64> {
        Ok(self.read().map_err(to_py)?.n_unconverged())
    }

    /// Features active at least once.
    #[getter]
    fn n_active_features(&self) -> PyResult<usize> {
        Ok(self.read().map_err(to_py)?.n_active_features())
    }

    /// Stored entries of A (ordered co-active pairs, diagonal included).
    #[getter]
    fn nnz(&self) -> PyResult<usize> {
        Ok(self.read().map_err(to_py)?.nnz())
    }
}
