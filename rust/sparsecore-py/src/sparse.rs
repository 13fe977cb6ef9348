//! Bindings of `sparsecore_core::sparse`. A CSR operand is passed as the tuple `(indptr, indices, data, dim)`
//! with dtypes int64 / uint32 / float32 and C-contiguous arrays (the facade guarantees both).

use numpy::{IntoPyArray, PyArray1, PyArray2, PyReadonlyArray1, PyReadonlyArray2, PyUntypedArrayMethods};
use pyo3::prelude::*;
use sparsecore_core::sparse::{self as core, CsrView, Duplicates};
use sparsecore_core::{parallel, SparseError};

use crate::convert::{contiguous, csr_out, matrix, CsrArrays};
use crate::detach::run;
use crate::errors::{to_py, to_py_for};

/// A borrowed CSR operand: `(indptr, indices, data, dim)`.
#[derive(FromPyObject)]
pub struct CsrArg<'py>(PyReadonlyArray1<'py, i64>, PyReadonlyArray1<'py, u32>, PyReadonlyArray1<'py, f32>, u64);

impl CsrArg<'_> {
    /// Borrow as a structure-checked view; errors are attributed to `arg`.
    pub(crate) fn view(&self, arg: &str) -> PyResult<CsrView<'_>> {
        let indptr = contiguous(&self.0, "indptr")?;
        let indices = contiguous(&self.1, "indices")?;
        let data = contiguous(&self.2, "data")?;
        CsrView::new(indptr, indices, data, self.3).map_err(|e| to_py_for(arg, e))
    }
}

type TopKArrays<'py> = (Bound<'py, PyArray2<i64>>, Bound<'py, PyArray2<f32>>);

/// The thread count used when `num_threads` is None (`SPARSECORE_NUM_THREADS`, else the core count).
#[pyfunction]
pub fn default_num_threads() -> PyResult<usize> {
    parallel::resolve_threads(None).map_err(to_py)
}

/// The widest instruction set the kernels use: `"avx512"`, `"avx2+fma"`, `"avx2"` or `"scalar"` (the portable
/// loops; also what `SPARSECORE_SIMD=off` gives). The variable is read once per process.
#[pyfunction]
pub fn simd_level() -> PyResult<&'static str> {
    sparsecore_core::simd_level().map_err(to_py)
}

/// Validate the structure (indptr, lengths, dim; O(rows)) and, with `content`, every entry: indices < dim,
/// finite data, and (with `sorted`) strictly increasing indices per row.
#[pyfunction]
#[pyo3(signature = (a, sorted=true, content=true, num_threads=None))]
pub fn check(py: Python<'_>, a: CsrArg<'_>, sorted: bool, content: bool, num_threads: Option<usize>) -> PyResult<()> {
    let v = a.view("")?;
    if !content {
        return Ok(());
    }
    run(py, num_threads, || v.check(sorted))
}

/// Whether every row's indices are strictly increasing.
#[pyfunction]
#[pyo3(signature = (a, num_threads=None))]
pub fn is_canonical(py: Python<'_>, a: CsrArg<'_>, num_threads: Option<usize>) -> PyResult<bool> {
    let v = a.view("")?;
    run(py, num_threads, || Ok(core::is_canonical(&v)))
}

/// Sort rows and merge duplicates ("sum" or "max"), optionally dropping stored zeros.
#[pyfunction]
#[pyo3(signature = (a, duplicates="sum", drop_zeros=false, num_threads=None))]
pub fn canonicalize<'py>(
    py: Python<'py>,
    a: CsrArg<'py>,
    duplicates: &str,
    drop_zeros: bool,
    num_threads: Option<usize>,
) -> PyResult<CsrArrays<'py>> {
    let dup: Duplicates = duplicates.parse().map_err(to_py)?;
    let v = a.view("")?;
    let out = run(py, num_threads, || Ok(core::canonicalize(&v, dup, drop_zeros)))?;
    Ok(csr_out(py, out))
}

/// Keep the k largest entries of each row.
#[pyfunction]
#[pyo3(signature = (a, k, by_magnitude=false, num_threads=None))]
pub fn top_k<'py>(
    py: Python<'py>,
    a: CsrArg<'py>,
    k: usize,
    by_magnitude: bool,
    num_threads: Option<usize>,
) -> PyResult<CsrArrays<'py>> {
    let v = a.view("")?;
    let out = run(py, num_threads, || core::top_k(&v, k, by_magnitude))?;
    Ok(csr_out(py, out))
}

/// Keep entries with value (or magnitude) >= t.
#[pyfunction]
#[pyo3(signature = (a, t, by_magnitude=false, num_threads=None))]
pub fn threshold<'py>(
    py: Python<'py>,
    a: CsrArg<'py>,
    t: f64,
    by_magnitude: bool,
    num_threads: Option<usize>,
) -> PyResult<CsrArrays<'py>> {
    let v = a.view("")?;
    let out = run(py, num_threads, || core::threshold(&v, t, by_magnitude))?;
    Ok(csr_out(py, out))
}

/// Keep the fewest largest-magnitude entries reaching `fraction` of each row's L1 mass.
#[pyfunction]
#[pyo3(signature = (a, fraction, num_threads=None))]
pub fn prune_mass<'py>(
    py: Python<'py>,
    a: CsrArg<'py>,
    fraction: f64,
    num_threads: Option<usize>,
) -> PyResult<CsrArrays<'py>> {
    let v = a.view("")?;
    let out = run(py, num_threads, || core::prune_mass(&v, fraction))?;
    Ok(csr_out(py, out))
}

/// Row-wise dot products of two canonical batches with equal row counts.
#[pyfunction]
#[pyo3(signature = (a, b, num_threads=None))]
pub fn row_dot<'py>(
    py: Python<'py>,
    a: CsrArg<'py>,
    b: CsrArg<'py>,
    num_threads: Option<usize>,
) -> PyResult<Bound<'py, PyArray1<f32>>> {
    let (va, vb) = (a.view("")?, b.view("other")?);
    Ok(run(py, num_threads, || core::row_dot(&va, &vb))?.into_pyarray(py))
}

/// All-pairs dot products as a dense (a_rows, b_rows) float32 matrix.
#[pyfunction]
#[pyo3(signature = (a, b, num_threads=None))]
pub fn scores_dense<'py>(
    py: Python<'py>,
    a: CsrArg<'py>,
    b: CsrArg<'py>,
    num_threads: Option<usize>,
) -> PyResult<Bound<'py, PyArray2<f32>>> {
    let (va, vb) = (a.view("")?, b.view("other")?);
    let out = run(py, num_threads, || core::scores_dense(&va, &vb))?;
    matrix(py, va.n_rows(), vb.n_rows(), out)
}

/// Top-k rows of `b` per row of `a` by dot product: (ids int64, scores float32), both (a_rows, k).
#[pyfunction]
#[pyo3(signature = (a, b, k, num_threads=None))]
pub fn scores_top_k<'py>(
    py: Python<'py>,
    a: CsrArg<'py>,
    b: CsrArg<'py>,
    k: usize,
    num_threads: Option<usize>,
) -> PyResult<TopKArrays<'py>> {
    let (va, vb) = (a.view("")?, b.view("other")?);
    let top = run(py, num_threads, || core::scores_top_k(&va, &vb, k))?;
    let rows = va.n_rows();
    Ok((matrix(py, rows, k, top.ids)?, matrix(py, rows, k, top.scores)?))
}

/// Sparse @ dense: `m` is a C-contiguous float32 (dim, p) matrix.
#[pyfunction]
#[pyo3(signature = (a, m, num_threads=None))]
pub fn matmul_dense<'py>(
    py: Python<'py>,
    a: CsrArg<'py>,
    m: PyReadonlyArray2<'py, f32>,
    num_threads: Option<usize>,
) -> PyResult<Bound<'py, PyArray2<f32>>> {
    let va = a.view("")?;
    let shape = m.shape();
    let (rows, p) = (shape[0], shape[1]);
    if rows as u64 != va.dim() {
        return Err(to_py(SparseError::ShapeMismatch(format!(
            "m: has {rows} rows but this batch has dim {}",
            va.dim()
        ))));
    }
    let ms = contiguous(&m, "dense")?;
    let out = run(py, num_threads, || core::matmul_dense(&va, ms, p))?;
    matrix(py, va.n_rows(), p, out)
}

/// Dense (n_rows, dim) float32 copy; duplicates are summed.
#[pyfunction]
#[pyo3(signature = (a, num_threads=None))]
pub fn to_dense<'py>(
    py: Python<'py>,
    a: CsrArg<'py>,
    num_threads: Option<usize>,
) -> PyResult<Bound<'py, PyArray2<f32>>> {
    let va = a.view("")?;
    let out = run(py, num_threads, || core::to_dense(&va))?;
    matrix(py, va.n_rows(), va.dim() as usize, out)
}

/// The non-zeros of a C-contiguous float32 2-D array, as canonical CSR arrays.
#[pyfunction]
#[pyo3(signature = (x, num_threads=None))]
pub fn from_dense<'py>(
    py: Python<'py>,
    x: PyReadonlyArray2<'py, f32>,
    num_threads: Option<usize>,
) -> PyResult<CsrArrays<'py>> {
    let shape = x.shape();
    let (rows, cols) = (shape[0], shape[1]);
    let xs = contiguous(&x, "dense")?;
    let out = run(py, num_threads, || core::from_dense(xs, rows, cols))?;
    Ok(csr_out(py, out))
}

/// Quantize values to `bits` (8 or 16): (codes uint8/uint16, scale, offset).
#[pyfunction]
#[pyo3(signature = (a, bits, num_threads=None))]
pub fn quantize<'py>(
    py: Python<'py>,
    a: CsrArg<'py>,
    bits: u32,
    num_threads: Option<usize>,
) -> PyResult<(Bound<'py, PyAny>, f32, f32)> {
    let va = a.view("")?;
    match bits {
        8 => {
            let q = run(py, num_threads, || core::quantize::<u8>(&va))?;
            Ok((q.codes.into_pyarray(py).into_any(), q.scale, q.offset))
        }
        16 => {
            let q = run(py, num_threads, || core::quantize::<u16>(&va))?;
            Ok((q.codes.into_pyarray(py).into_any(), q.scale, q.offset))
        }
        other => Err(to_py(SparseError::invalid("bits", format!("must be 8 or 16, got {other}")))),
    }
}

/// Values back from uint8 or uint16 codes: offset + code * scale.
#[pyfunction]
#[pyo3(signature = (codes, scale, offset, num_threads=None))]
pub fn dequantize<'py>(
    py: Python<'py>,
    codes: &Bound<'py, PyAny>,
    scale: f32,
    offset: f32,
    num_threads: Option<usize>,
) -> PyResult<Bound<'py, PyArray1<f32>>> {
    if let Ok(c) = codes.extract::<PyReadonlyArray1<'py, u8>>() {
        let cs = contiguous(&c, "codes")?;
        return Ok(run(py, num_threads, || core::dequantize(cs, scale, offset))?.into_pyarray(py));
    }
    let c = codes
        .extract::<PyReadonlyArray1<'py, u16>>()
        .map_err(|_| pyo3::exceptions::PyTypeError::new_err("codes: must be a 1-D uint8 or uint16 array"))?;
    let cs = contiguous(&c, "codes")?;
    Ok(run(py, num_threads, || core::dequantize(cs, scale, offset))?.into_pyarray(py))
}

/// Gather rows by id (uint64, in range) into a new batch.
#[pyfunction]
#[pyo3(signature = (a, rows, num_threads=None))]
pub fn take_rows<'py>(
    py: Python<'py>,
    a: CsrArg<'py>,
    rows: PyReadonlyArray1<'py, u64>,
    num_threads: Option<usize>,
) -> PyResult<CsrArrays<'py>> {
    let va = a.view("")?;
    let rs = contiguous(&rows, "rows")?;
    let out = run(py, num_threads, || core::take_rows(&va, rs))?;
    Ok(csr_out(py, out))
}

/// Stack batches of one dim vertically.
#[pyfunction]
pub fn concat<'py>(py: Python<'py>, parts: Vec<CsrArg<'py>>) -> PyResult<CsrArrays<'py>> {
    let views =
        parts.iter().enumerate().map(|(i, p)| p.view(&format!("batches[{i}]"))).collect::<PyResult<Vec<_>>>()?;
    let out = run(py, Some(1), || core::concat(&views))?;
    Ok(csr_out(py, out))
}
