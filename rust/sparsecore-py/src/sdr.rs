//! Binding of `sparsecore_core::sdr`: batched SDR utilities and encoders, and handles to coding fields
//! (`FieldCore`), networks (`NetworkCore`) and the overlap kNN readout (`KnnCore`).
//!
//! SDR batches travel as `(indptr int64, indices uint32)` plus `dim`; codes as `(n, Q)` int32 winners (-1 for
//! silent modules). Handles are thread-safe (RwLock): recognition takes a read lock and runs concurrently;
//! learning takes the write lock. Locks are taken with the GIL released.

use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

use numpy::{IntoPyArray, PyArray1, PyArray2, PyReadonlyArray1, PyReadonlyArray2, PyUntypedArrayMethods};
use pyo3::prelude::*;
use pyo3::types::PyBytes;
use sparsecore_core::sdr::classifier::{KnnParams, OverlapKnn};
use sparsecore_core::sdr::field::{CodingField, FieldParams, Step};
use sparsecore_core::sdr::network::{LevelCodes, Network};
use sparsecore_core::sdr::utils::{self, SdrView, Sdrs};
use sparsecore_core::SparseError;

use crate::convert::{contiguous, matrix_by_cols};
use crate::detach::run;
use crate::errors::to_py;

type SdrArrays<'py> = (Bound<'py, PyArray1<i64>>, Bound<'py, PyArray1<u32>>);

fn sdr_out(py: Python<'_>, s: Sdrs) -> SdrArrays<'_> {
    (s.indptr.into_pyarray(py), s.indices.into_pyarray(py))
}

/// Borrowed SDR batch arguments.
struct Batch<'a> {
    indptr: &'a [i64],
    indices: &'a [u32],
}

impl<'a> Batch<'a> {
    fn new(indptr: &'a PyReadonlyArray1<'_, i64>, indices: &'a PyReadonlyArray1<'_, u32>) -> PyResult<Self> {
        Ok(Self { indptr: contiguous(indptr, "indptr")?, indices: contiguous(indices, "indices")? })
    }
    fn view(&self, arg: &'static str, dim: usize) -> Result<SdrView<'a>, SparseError> {
        SdrView::new(arg, self.indptr, self.indices, dim)
    }
}

/// Row-wise overlap |a ∩ b| (b may have one row).
#[pyfunction]
#[pyo3(signature = (a_indptr, a_indices, b_indptr, b_indices, dim, num_threads=None))]
pub fn sdr_overlap<'py>(
    py: Python<'py>,
    a_indptr: PyReadonlyArray1<'py, i64>,
    a_indices: PyReadonlyArray1<'py, u32>,
    b_indptr: PyReadonlyArray1<'py, i64>,
    b_indices: PyReadonlyArray1<'py, u32>,
    dim: usize,
    num_threads: Option<usize>,
) -> PyResult<Bound<'py, PyArray1<u32>>> {
    let (a, b) = (Batch::new(&a_indptr, &a_indices)?, Batch::new(&b_indptr, &b_indices)?);
    let out = run(py, num_threads, || utils::overlap(&a.view("a", dim)?, &b.view("b", dim)?))?;
    Ok(out.into_pyarray(py))
}

/// Row-wise union (`op = "union"`) or intersection (`op = "intersection"`).
#[pyfunction]
#[pyo3(signature = (op, a_indptr, a_indices, b_indptr, b_indices, dim, num_threads=None))]
pub fn sdr_setop<'py>(
    py: Python<'py>,
    op: &str,
    a_indptr: PyReadonlyArray1<'py, i64>,
    a_indices: PyReadonlyArray1<'py, u32>,
    b_indptr: PyReadonlyArray1<'py, i64>,
    b_indices: PyReadonlyArray1<'py, u32>,
    dim: usize,
    num_threads: Option<usize>,
) -> PyResult<SdrArrays<'py>> {
    let (a, b) = (Batch::new(&a_indptr, &a_indices)?, Batch::new(&b_indptr, &b_indices)?);
    let union = match op {
        "union" => true,
        "intersection" => false,
        other => return Err(to_py(SparseError::invalid("op", format!("unknown set operation {other:?}")))),
    };
    let out = run(py, num_threads, || {
        let (va, vb) = (a.view("a", dim)?, b.view("b", dim)?);
        if union {
            utils::union(&va, &vb)
        } else {
            utils::intersection(&va, &vb)
        }
    })?;
    Ok(sdr_out(py, out))
}

/// Move a fraction of each row's active bits to random inactive bits.
#[pyfunction]
#[pyo3(signature = (indptr, indices, dim, fraction, seed, num_threads=None))]
pub fn sdr_add_noise<'py>(
    py: Python<'py>,
    indptr: PyReadonlyArray1<'py, i64>,
    indices: PyReadonlyArray1<'py, u32>,
    dim: usize,
    fraction: f64,
    seed: u64,
    num_threads: Option<usize>,
) -> PyResult<SdrArrays<'py>> {
    let a = Batch::new(&indptr, &indices)?;
    let out = run(py, num_threads, || utils::add_noise(&a.view("sdrs", dim)?, fraction, seed))?;
    Ok(sdr_out(py, out))
}

/// `n` random SDRs with `n_active` of `dim` bits.
#[pyfunction]
#[pyo3(signature = (n, dim, n_active, seed, num_threads=None))]
pub fn sdr_random(
    py: Python<'_>,
    n: usize,
    dim: usize,
    n_active: usize,
    seed: u64,
    num_threads: Option<usize>,
) -> PyResult<SdrArrays<'_>> {
    let out = run(py, num_threads, || utils::random(n, dim, n_active, seed))?;
    Ok(sdr_out(py, out))
}

/// Scalar encoder (see sparsecore_core::sdr::utils::scalar_encode).
#[pyfunction]
#[pyo3(signature = (values, minimum, maximum, size, n_active, periodic, clip, num_threads=None))]
pub fn sdr_scalar_encode<'py>(
    py: Python<'py>,
    values: PyReadonlyArray1<'py, f64>,
    minimum: f64,
    maximum: f64,
    size: usize,
    n_active: usize,
    periodic: bool,
    clip: bool,
    num_threads: Option<usize>,
) -> PyResult<SdrArrays<'py>> {
    let v = contiguous(&values, "values")?;
    let out = run(py, num_threads, || utils::scalar_encode(v, minimum, maximum, size, n_active, periodic, clip))?;
    Ok(sdr_out(py, out))
}

/// Category encoder: disjoint blocks of `n_active` bits per category.
#[pyfunction]
#[pyo3(signature = (labels, n_categories, n_active, num_threads=None))]
pub fn sdr_category_encode<'py>(
    py: Python<'py>,
    labels: PyReadonlyArray1<'py, i64>,
    n_categories: usize,
    n_active: usize,
    num_threads: Option<usize>,
) -> PyResult<SdrArrays<'py>> {
    let v = contiguous(&labels, "labels")?;
    let out = run(py, num_threads, || utils::category_encode(v, n_categories, n_active))?;
    Ok(sdr_out(py, out))
}

/// Grid-cell encoder of 2-D positions (`positions` is `(n, 2)` float64).
#[pyfunction]
#[pyo3(signature = (positions, periods, side, seed, num_threads=None))]
pub fn sdr_grid_encode<'py>(
    py: Python<'py>,
    positions: PyReadonlyArray2<'py, f64>,
    periods: PyReadonlyArray1<'py, f64>,
    side: usize,
    seed: u64,
    num_threads: Option<usize>,
) -> PyResult<SdrArrays<'py>> {
    let pos = contiguous(&positions, "positions")?;
    let per = contiguous(&periods, "periods")?;
    let out = run(py, num_threads, || utils::grid_encode(pos, per, side, seed))?;
    Ok(sdr_out(py, out))
}

fn poisoned<T>(_: T) -> SparseError {
    SparseError::ThreadPool("the SDR lock is poisoned by an earlier panic".into())
}

/// CSA parameters as passed from Python:
/// (n_modules, cells_per_module, g_min, gamma, chi, sigmoid_slope, sigmoid_center, min_active, freeze_at).
type ParamTuple = (usize, usize, f64, f64, f64, f64, f64, usize, f64);

fn params_of(t: ParamTuple, horizontal: bool) -> FieldParams {
    let (n_modules, cells_per_module, g_min, gamma, chi, sigmoid_slope, sigmoid_center, min_active, freeze_at) = t;
    FieldParams {
        n_modules,
        cells_per_module,
        g_min,
        gamma,
        chi,
        sigmoid_slope,
        sigmoid_center,
        min_active,
        freeze_at,
        horizontal,
    }
}

fn params_tuple(p: &FieldParams) -> ParamTuple {
    (
        p.n_modules,
        p.cells_per_module,
        p.g_min,
        p.gamma,
        p.chi,
        p.sigmoid_slope,
        p.sigmoid_center,
        p.min_active,
        p.freeze_at,
    )
}

/// A coding field (private; use `sparsecore.sdr.CodingField`).
#[pyclass(frozen, module = "sparsecore._core")]
pub struct FieldCore {
    inner: RwLock<CodingField>,
}

impl FieldCore {
    fn read(&self) -> Result<RwLockReadGuard<'_, CodingField>, SparseError> {
        self.inner.read().map_err(poisoned)
    }
    fn write(&self) -> Result<RwLockWriteGuard<'_, CodingField>, SparseError> {
        self.inner.write().map_err(poisoned)
    }
}

#[pymethods]
impl FieldCore {
    /// A new field with all weights 0.
    #[new]
    #[pyo3(signature = (input_dim, params, sequence, seed))]
    fn new(input_dim: usize, params: ParamTuple, sequence: bool, seed: u64) -> PyResult<Self> {
        let f = CodingField::new(input_dim, params_of(params, sequence), seed, 0).map_err(to_py)?;
        Ok(Self { inner: RwLock::new(f) })
    }

    /// Learn the rows in order (single trial each); returns (n, Q) int32 codes.
    #[pyo3(signature = (indptr, indices, num_threads=None))]
    fn learn<'py>(
        &self,
        py: Python<'py>,
        indptr: PyReadonlyArray1<'py, i64>,
        indices: PyReadonlyArray1<'py, u32>,
        num_threads: Option<usize>,
    ) -> PyResult<Bound<'py, PyArray2<i32>>> {
        let b = Batch::new(&indptr, &indices)?;
        let (codes, q) = run(py, num_threads, || {
            let mut f = self.write()?;
            let v = b.view("x", f.input_dim())?;
            Ok((f.learn_batch(&v, None)?, f.params().n_modules))
        })?;
        matrix_by_cols(py, codes, q)
    }

    /// Recognise the rows (argmax per module) in parallel; (n, Q) int32 codes.
    #[pyo3(signature = (indptr, indices, num_threads=None))]
    fn recognize<'py>(
        &self,
        py: Python<'py>,
        indptr: PyReadonlyArray1<'py, i64>,
        indices: PyReadonlyArray1<'py, u32>,
        num_threads: Option<usize>,
    ) -> PyResult<Bound<'py, PyArray2<i32>>> {
        let b = Batch::new(&indptr, &indices)?;
        let (codes, q) = run(py, num_threads, || {
            let f = self.read()?;
            Ok((f.recognize_batch(&b.view("x", f.input_dim())?)?, f.params().n_modules))
        })?;
        matrix_by_cols(py, codes, q)
    }

    /// Familiarity G of each row, in parallel.
    #[pyo3(signature = (indptr, indices, num_threads=None))]
    fn familiarity<'py>(
        &self,
        py: Python<'py>,
        indptr: PyReadonlyArray1<'py, i64>,
        indices: PyReadonlyArray1<'py, u32>,
        num_threads: Option<usize>,
    ) -> PyResult<Bound<'py, PyArray1<f64>>> {
        let b = Batch::new(&indptr, &indices)?;
        let g = run(py, num_threads, || {
            let f = self.read()?;
            f.familiarity_batch(&b.view("x", f.input_dim())?)
        })?;
        Ok(g.into_pyarray(py))
    }

    /// Normalised input sums V of every cell for one input, (Q, K) float64 (all 0 when the field is silent).
    fn support<'py>(&self, py: Python<'py>, x: PyReadonlyArray1<'py, u32>) -> PyResult<Bound<'py, PyArray2<f64>>> {
        let xs = contiguous(&x, "x")?;
        let (v, k) = py
            .detach(|| {
                let f = self.read()?;
                let step = Step { input: Some(xs), prev: None };
                f.familiarity(&step)?;
                let v = f.support(&step).unwrap_or_else(|| vec![0.0; f.params().n_cells()]);
                Ok::<_, SparseError>((v, f.params().cells_per_module))
            })
            .map_err(to_py)?;
        matrix_by_cols(py, v, k)
    }

    /// Learn the rows as one sequence; (n, Q) codes.
    fn learn_sequence<'py>(
        &self,
        py: Python<'py>,
        indptr: PyReadonlyArray1<'py, i64>,
        indices: PyReadonlyArray1<'py, u32>,
    ) -> PyResult<Bound<'py, PyArray2<i32>>> {
        let b = Batch::new(&indptr, &indices)?;
        let (codes, q) = run(py, Some(1), || {
            let mut f = self.write()?;
            let v = b.view("x", f.input_dim())?;
            Ok((f.learn_sequence(&v)?, f.params().n_modules))
        })?;
        matrix_by_cols(py, codes, q)
    }

    /// Replay a stored sequence from its first element; (n_steps, Q) codes.
    fn recall_sequence<'py>(
        &self,
        py: Python<'py>,
        first: PyReadonlyArray1<'py, u32>,
        n_steps: usize,
    ) -> PyResult<Bound<'py, PyArray2<i32>>> {
        let x = contiguous(&first, "first")?;
        let (codes, q) = run(py, Some(1), || {
            let f = self.read()?;
            Ok((f.recall_sequence(x, n_steps)?, f.params().n_modules))
        })?;
        matrix_by_cols(py, codes, q)
    }

    /// Expansivity η(G).
    fn eta(&self, g: f64) -> PyResult<f64> {
        Ok(self.read().map_err(to_py)?.params().eta(g))
    }

    /// Win weight μ(V) at familiarity G.
    fn mu(&self, v: f64, g: f64) -> PyResult<f64> {
        let f = self.read().map_err(to_py)?;
        let p = f.params();
        Ok(p.mu(v, p.eta(g)))
    }

    /// Freeze (True) or unfreeze (False) learning.
    fn set_frozen(&self, frozen: bool) -> PyResult<()> {
        self.write().map_err(to_py)?.set_frozen(frozen);
        Ok(())
    }

    /// (input_dim, params tuple, sequence, n_learned, frozen, weight_fill).
    fn info(&self) -> PyResult<(usize, ParamTuple, bool, u64, bool, f64)> {
        let f = self.read().map_err(to_py)?;
        let p = f.params();
        Ok((f.input_dim(), params_tuple(p), p.horizontal, f.n_learned(), f.frozen(), f.weight_fill()))
    }

    /// The field's state as checked bytes (magic, version, CRC-32).
    fn to_bytes<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyBytes>> {
        let b = py.detach(|| self.read().map(|f| f.to_bytes())).map_err(to_py)?;
        Ok(PyBytes::new(py, &b))
    }

    /// Rebuild a field from `to_bytes` output.
    #[staticmethod]
    fn from_bytes(py: Python<'_>, data: &[u8]) -> PyResult<Self> {
        let f = py.detach(|| CodingField::from_bytes(data)).map_err(to_py)?;
        Ok(Self { inner: RwLock::new(f) })
    }
}

/// A hierarchy of coding fields (private; use `sparsecore.sdr.SDRNetwork`).
#[pyclass(frozen, module = "sparsecore._core")]
pub struct NetworkCore {
    inner: RwLock<Network>,
}

impl NetworkCore {
    fn read(&self) -> Result<RwLockReadGuard<'_, Network>, SparseError> {
        self.inner.read().map_err(poisoned)
    }
    fn write(&self) -> Result<RwLockWriteGuard<'_, Network>, SparseError> {
        self.inner.write().map_err(poisoned)
    }
}

/// What `NetworkCore.info` returns.
type NetworkInfo = (usize, Vec<usize>, u64, Vec<f64>, Vec<bool>);

fn level_codes<'py>(py: Python<'py>, codes: LevelCodes, lens: &[usize]) -> PyResult<Vec<Bound<'py, PyArray2<i32>>>> {
    codes.into_iter().zip(lens).map(|(c, &len)| matrix_by_cols(py, c, len)).collect()
}

#[pymethods]
impl NetworkCore {
    /// A network: `levels[l] = (params tuple, receptive fields as lists of bit ids of the level below)`.
    #[new]
    #[pyo3(signature = (input_dim, levels, sequence, seed))]
    fn new(
        py: Python<'_>,
        input_dim: usize,
        levels: Vec<(ParamTuple, Vec<Vec<u32>>)>,
        sequence: bool,
        seed: u64,
    ) -> PyResult<Self> {
        let levels = levels.into_iter().map(|(p, rf)| (params_of(p, sequence), rf)).collect();
        let n = py.detach(|| Network::new(input_dim, levels, seed)).map_err(to_py)?;
        Ok(Self { inner: RwLock::new(n) })
    }

    /// Learn every row once, in order; one (n, code_len(l)) array per level.
    #[pyo3(signature = (indptr, indices, num_threads=None))]
    fn learn<'py>(
        &self,
        py: Python<'py>,
        indptr: PyReadonlyArray1<'py, i64>,
        indices: PyReadonlyArray1<'py, u32>,
        num_threads: Option<usize>,
    ) -> PyResult<Vec<Bound<'py, PyArray2<i32>>>> {
        let b = Batch::new(&indptr, &indices)?;
        let (codes, lens) = run(py, num_threads, || {
            let mut n = self.write()?;
            let v = b.view("x", n.input_dim())?;
            let lens: Vec<usize> = (0..n.n_levels()).map(|l| n.code_len(l)).collect();
            Ok((n.learn_batch(&v, None)?, lens))
        })?;
        level_codes(py, codes, &lens)
    }

    /// Recognise every row, in parallel over rows; one (n, code_len(l)) array per level.
    #[pyo3(signature = (indptr, indices, num_threads=None))]
    fn recognize<'py>(
        &self,
        py: Python<'py>,
        indptr: PyReadonlyArray1<'py, i64>,
        indices: PyReadonlyArray1<'py, u32>,
        num_threads: Option<usize>,
    ) -> PyResult<Vec<Bound<'py, PyArray2<i32>>>> {
        let b = Batch::new(&indptr, &indices)?;
        let (codes, lens) = run(py, num_threads, || {
            let n = self.read()?;
            let lens: Vec<usize> = (0..n.n_levels()).map(|l| n.code_len(l)).collect();
            Ok((n.recognize_batch(&b.view("x", n.input_dim())?, None)?, lens))
        })?;
        level_codes(py, codes, &lens)
    }

    /// Mean familiarity of the responding fields per input and level, (n, n_levels) float64.
    #[pyo3(signature = (indptr, indices, num_threads=None))]
    fn familiarity<'py>(
        &self,
        py: Python<'py>,
        indptr: PyReadonlyArray1<'py, i64>,
        indices: PyReadonlyArray1<'py, u32>,
        num_threads: Option<usize>,
    ) -> PyResult<Bound<'py, PyArray2<f64>>> {
        let b = Batch::new(&indptr, &indices)?;
        let (g, n_levels) = run(py, num_threads, || {
            let n = self.read()?;
            Ok((n.familiarity_batch(&b.view("x", n.input_dim())?)?, n.n_levels()))
        })?;
        matrix_by_cols(py, g, n_levels)
    }

    /// Learn the rows as one sequence; one (n, code_len(l)) array per level.
    #[pyo3(signature = (indptr, indices, num_threads=None))]
    fn learn_sequence<'py>(
        &self,
        py: Python<'py>,
        indptr: PyReadonlyArray1<'py, i64>,
        indices: PyReadonlyArray1<'py, u32>,
        num_threads: Option<usize>,
    ) -> PyResult<Vec<Bound<'py, PyArray2<i32>>>> {
        let b = Batch::new(&indptr, &indices)?;
        let (codes, lens) = run(py, num_threads, || {
            let mut n = self.write()?;
            let v = b.view("x", n.input_dim())?;
            let lens: Vec<usize> = (0..n.n_levels()).map(|l| n.code_len(l)).collect();
            Ok((n.learn_sequence(&v)?, lens))
        })?;
        level_codes(py, codes, &lens)
    }

    /// Replay a stored sequence from its first element; one (n_steps, code_len(l)) array per level.
    fn recall_sequence<'py>(
        &self,
        py: Python<'py>,
        first: PyReadonlyArray1<'py, u32>,
        n_steps: usize,
    ) -> PyResult<Vec<Bound<'py, PyArray2<i32>>>> {
        let x = contiguous(&first, "first")?;
        let (codes, lens) = run(py, Some(1), || {
            let n = self.read()?;
            let lens: Vec<usize> = (0..n.n_levels()).map(|l| n.code_len(l)).collect();
            Ok((n.recall_sequence(x, n_steps)?, lens))
        })?;
        level_codes(py, codes, &lens)
    }

    /// Freeze (True) or unfreeze (False) every field.
    fn set_frozen(&self, frozen: bool) -> PyResult<()> {
        self.write().map_err(to_py)?.set_frozen(frozen);
        Ok(())
    }

    /// (input_dim, code length per level, n_learned of the first field, weight_fill per field, frozen per field).
    fn info(&self) -> PyResult<NetworkInfo> {
        let n = self.read().map_err(to_py)?;
        let lens: Vec<usize> = (0..n.n_levels()).map(|l| n.code_len(l)).collect();
        let first = n.fields().next().map_or(0, CodingField::n_learned);
        let fill = n.fields().map(CodingField::weight_fill).collect();
        let frozen = n.fields().map(CodingField::frozen).collect();
        Ok((n.input_dim(), lens, first, fill, frozen))
    }

    /// The network's state as checked bytes (magic, version, CRC-32).
    fn to_bytes<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyBytes>> {
        let b = py.detach(|| self.read().map(|n| n.to_bytes())).map_err(to_py)?;
        Ok(PyBytes::new(py, &b))
    }

    /// Rebuild a network from `to_bytes` output.
    #[staticmethod]
    fn from_bytes(py: Python<'_>, data: &[u8]) -> PyResult<Self> {
        let n = py.detach(|| Network::from_bytes(data)).map_err(to_py)?;
        Ok(Self { inner: RwLock::new(n) })
    }
}

/// Stored codes for the overlap kNN readout (private; use `sparsecore.sdr.SDRClassifier`).
#[pyclass(frozen, module = "sparsecore._core")]
pub struct KnnCore {
    inner: OverlapKnn,
}

#[pymethods]
impl KnnCore {
    /// Store (n, S) int32 codes with uint32 labels below `n_classes`.
    #[new]
    fn new(
        py: Python<'_>,
        codes: PyReadonlyArray2<'_, i32>,
        labels: PyReadonlyArray1<'_, u32>,
        n_classes: usize,
    ) -> PyResult<Self> {
        let s = codes.shape()[1];
        let c = contiguous(&codes, "codes")?;
        let l = contiguous(&labels, "y")?;
        let inner = py.detach(|| OverlapKnn::fit(c, s, l, n_classes)).map_err(to_py)?;
        Ok(Self { inner })
    }

    /// Class scores (n, n_classes) float64 of the query codes.
    #[pyo3(signature = (codes, k, cosine, power, num_threads=None))]
    fn predict_scores<'py>(
        &self,
        py: Python<'py>,
        codes: PyReadonlyArray2<'py, i32>,
        k: usize,
        cosine: bool,
        power: f64,
        num_threads: Option<usize>,
    ) -> PyResult<Bound<'py, PyArray2<f64>>> {
        if codes.shape()[1] != self.inner.n_slots() {
            return Err(to_py(SparseError::ShapeMismatch(format!(
                "codes have {} slots but the stored codes have {}",
                codes.shape()[1],
                self.inner.n_slots()
            ))));
        }
        let c = contiguous(&codes, "codes")?;
        let p = KnnParams { k, cosine, power };
        let n_rows = codes.shape()[0];
        let scores = run(py, num_threads, || self.inner.predict_scores(c, &p))?;
        let cols = scores.len().checked_div(n_rows).unwrap_or(0);
        matrix_by_cols(py, scores, cols)
    }

    /// Number of stored codes.
    fn __len__(&self) -> usize {
        self.inner.n_stored()
    }
}
