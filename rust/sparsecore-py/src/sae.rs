//! Binding of `sparsecore_core::sae`: `SaeEncoderCore`, the weights of a TopK / JumpReLU SAE copied once into
//! Rust-owned buffers, with a fused encoder (GIL released, explicit `num_threads`) and a sparse decoder; and the
//! sparse kernels of a TopK training step (`sae_topk_rows`, `sae_gather_sum`, `sae_gather_dot`,
//! `sae_scatter_outer`).

use numpy::{PyArray2, PyReadonlyArray1, PyReadonlyArray2, PyUntypedArrayMethods};
use pyo3::prelude::*;
use sparsecore_core::sae::{train, SaeWeights, Tiles, TILE_COLS, TILE_ROWS};

use crate::convert::{contiguous, csr_out, matrix, CsrArrays};
use crate::detach::run;
use crate::errors::to_py;
use crate::sparse::CsrArg;

fn tiles(tile_rows: Option<usize>, tile_cols: Option<usize>) -> Tiles {
    Tiles { rows: tile_rows.unwrap_or(TILE_ROWS), cols: tile_cols.unwrap_or(TILE_COLS) }
}

/// The weights of a TopK / JumpReLU sparse autoencoder (private; use `sparsecore.sae_cpu.CpuSAE`).
#[pyclass(frozen, module = "sparsecore._core")]
pub struct SaeEncoderCore {
    inner: SaeWeights,
}

#[pymethods]
impl SaeEncoderCore {
    /// Copy and check the weights: W_enc (d_in, d_sae), b_enc (d_sae,), W_dec (d_sae, d_in), b_dec (d_in,),
    /// optional JumpReLU thresholds (d_sae,), all float32 and C-contiguous.
    #[new]
    #[pyo3(signature = (w_enc, b_enc, w_dec, b_dec, threshold=None, act_scale=1.0, apply_b_dec_to_input=true))]
    fn new(
        py: Python<'_>,
        w_enc: PyReadonlyArray2<'_, f32>,
        b_enc: PyReadonlyArray1<'_, f32>,
        w_dec: PyReadonlyArray2<'_, f32>,
        b_dec: PyReadonlyArray1<'_, f32>,
        threshold: Option<PyReadonlyArray1<'_, f32>>,
        act_scale: f32,
        apply_b_dec_to_input: bool,
    ) -> PyResult<Self> {
        let [d_in, d_sae] = [w_enc.shape()[0], w_enc.shape()[1]];
        let we = contiguous(&w_enc, "W_enc")?;
        let be = contiguous(&b_enc, "b_enc")?;
        let wd = contiguous(&w_dec, "W_dec")?;
        let bd = contiguous(&b_dec, "b_dec")?;
        let th = match &threshold {
            Some(t) => Some(contiguous(t, "threshold")?),
            None => None,
        };
        if w_dec.shape() != [d_sae, d_in] {
            return Err(to_py(sparsecore_core::SparseError::ShapeMismatch(format!(
                "W_dec: expected shape (d_sae, d_in) = ({d_sae}, {d_in}), got {:?}",
                w_dec.shape()
            ))));
        }
        let inner = py
            .detach(|| {
                SaeWeights::new(
                    d_in,
                    d_sae,
                    we.to_vec(),
                    be.to_vec(),
                    wd.to_vec(),
                    bd.to_vec(),
                    th.map(<[f32]>::to_vec),
                    act_scale,
                    apply_b_dec_to_input,
                )
            })
            .map_err(to_py)?;
        Ok(Self { inner })
    }

    /// TopK codes of x (float32, (n, d_in)): CSR arrays (indptr, indices, data) of dimension d_sae, at most k
    /// positive entries per row, indices increasing.
    #[pyo3(signature = (x, k, num_threads=None, tile_rows=None, tile_cols=None))]
    fn encode_topk<'py>(
        &self,
        py: Python<'py>,
        x: PyReadonlyArray2<'py, f32>,
        k: usize,
        num_threads: Option<usize>,
        tile_rows: Option<usize>,
        tile_cols: Option<usize>,
    ) -> PyResult<CsrArrays<'py>> {
        let n = x.shape()[0];
        let xs = contiguous(&x, "x")?;
        let t = tiles(tile_rows, tile_cols);
        let csr = run(py, num_threads, || self.inner.encode_topk(xs, n, k, t))?;
        Ok(csr_out(py, csr))
    }

    /// JumpReLU codes of x (float32, (n, d_in)): the pre-activations above their threshold and above 0.
    #[pyo3(signature = (x, num_threads=None, tile_rows=None, tile_cols=None))]
    fn encode_jumprelu<'py>(
        &self,
        py: Python<'py>,
        x: PyReadonlyArray2<'py, f32>,
        num_threads: Option<usize>,
        tile_rows: Option<usize>,
        tile_cols: Option<usize>,
    ) -> PyResult<CsrArrays<'py>> {
        let n = x.shape()[0];
        let xs = contiguous(&x, "x")?;
        let t = tiles(tile_rows, tile_cols);
        let csr = run(py, num_threads, || self.inner.encode_jumprelu(xs, n, t))?;
        Ok(csr_out(py, csr))
    }

    /// (codes @ W_dec + b_dec) / act_scale as float32 (n, d_in), for CSR codes of dimension d_sae.
    #[pyo3(signature = (codes, num_threads=None))]
    fn decode<'py>(
        &self,
        py: Python<'py>,
        codes: CsrArg<'py>,
        num_threads: Option<usize>,
    ) -> PyResult<Bound<'py, PyArray2<f32>>> {
        let view = codes.view("codes")?;
        let out = run(py, num_threads, || self.inner.decode(&view))?;
        matrix(py, view.n_rows(), self.inner.d_in(), out)
    }

    /// Input width.
    #[getter]
    fn d_in(&self) -> usize {
        self.inner.d_in()
    }

    /// Number of latents.
    #[getter]
    fn d_sae(&self) -> usize {
        self.inner.d_sae()
    }

    /// The activation scale.
    #[getter]
    fn act_scale(&self) -> f32 {
        self.inner.act_scale()
    }

    /// Whether inputs are centred by b_dec before encoding.
    #[getter]
    fn apply_b_dec_to_input(&self) -> bool {
        self.inner.apply_b_dec_to_input()
    }

    /// Whether JumpReLU thresholds are held.
    #[getter]
    fn has_threshold(&self) -> bool {
        self.inner.has_threshold()
    }

    /// Bytes of weights held.
    #[getter]
    fn nbytes(&self) -> usize {
        self.inner.nbytes()
    }
}

/// `(rows, cols)` of a 2-D array, for the training kernels' shape arguments.
fn dims<T: numpy::Element>(a: &PyReadonlyArray2<'_, T>) -> (usize, usize) {
    (a.shape()[0], a.shape()[1])
}

/// out[r] = sum_j values[r, j] * table[indices[r, j]]: indices int64 (n, k), values float32 (n, k), table
/// float32 (n_table, d) → float32 (n, d). Summed in increasing j; GIL released.
#[pyfunction]
#[pyo3(signature = (indices, values, table, num_threads=None))]
pub fn sae_gather_sum<'py>(
    py: Python<'py>,
    indices: PyReadonlyArray2<'py, i64>,
    values: PyReadonlyArray2<'py, f32>,
    table: PyReadonlyArray2<'py, f32>,
    num_threads: Option<usize>,
) -> PyResult<Bound<'py, PyArray2<f32>>> {
    let (n, k) = dims(&indices);
    let (n_table, d) = dims(&table);
    if values.shape() != [n, k] {
        return Err(to_py(sparsecore_core::SparseError::ShapeMismatch(format!(
            "values: expected shape ({n}, {k}) like indices, got {:?}",
            values.shape()
        ))));
    }
    let (i, v, t) = (contiguous(&indices, "indices")?, contiguous(&values, "values")?, contiguous(&table, "table")?);
    let out = run(py, num_threads, || train::gather_sum(i, v, k, t, n_table, d))?;
    matrix(py, n, d, out)
}

/// out[r, j] = g[r] . table[indices[r, j]]: indices int64 (n, k), g float32 (n, d), table float32 (n_table, d)
/// → float32 (n, k). GIL released.
#[pyfunction]
#[pyo3(signature = (indices, g, table, num_threads=None))]
pub fn sae_gather_dot<'py>(
    py: Python<'py>,
    indices: PyReadonlyArray2<'py, i64>,
    g: PyReadonlyArray2<'py, f32>,
    table: PyReadonlyArray2<'py, f32>,
    num_threads: Option<usize>,
) -> PyResult<Bound<'py, PyArray2<f32>>> {
    let (n, k) = dims(&indices);
    let (n_table, d) = dims(&table);
    if g.shape() != [n, d] {
        return Err(to_py(sparsecore_core::SparseError::ShapeMismatch(format!(
            "g: expected shape ({n}, {d}) (rows of indices, width of table), got {:?}",
            g.shape()
        ))));
    }
    let (i, gs, t) = (contiguous(&indices, "indices")?, contiguous(&g, "g")?, contiguous(&table, "table")?);
    let out = run(py, num_threads, || train::gather_dot(i, k, gs, t, n_table, d))?;
    matrix(py, n, k, out)
}

/// out[l] = sum over (r, j) with indices[r, j] = l of coef[r, j] * src[r]: indices int64 (n, k), coef float32
/// (n, k), src float32 (n, d) → float32 (n_out, d), summed in increasing (r, j) without atomics. GIL released.
#[pyfunction]
#[pyo3(signature = (indices, coef, src, n_out, num_threads=None))]
pub fn sae_scatter_outer<'py>(
    py: Python<'py>,
    indices: PyReadonlyArray2<'py, i64>,
    coef: PyReadonlyArray2<'py, f32>,
    src: PyReadonlyArray2<'py, f32>,
    n_out: usize,
    num_threads: Option<usize>,
) -> PyResult<Bound<'py, PyArray2<f32>>> {
    let (n, k) = dims(&indices);
    let d = src.shape()[1];
    if coef.shape() != [n, k] || src.shape()[0] != n {
        return Err(to_py(sparsecore_core::SparseError::ShapeMismatch(format!(
            "coef, src: expected shapes ({n}, {k}) and ({n}, d) to match indices, got {:?} and {:?}",
            coef.shape(),
            src.shape()
        ))));
    }
    let (i, c, s) = (contiguous(&indices, "indices")?, contiguous(&coef, "coef")?, contiguous(&src, "src")?);
    let out = run(py, num_threads, || train::scatter_outer(i, c, k, s, d, n_out))?;
    matrix(py, n_out, d, out)
}

/// `(indices int64, values float32)` of a per-row selection, on their way to Python.
type Selection<'py> = (Bound<'py, PyArray2<i64>>, Bound<'py, PyArray2<f32>>);

/// The k largest positive entries of each row of pre (float32 (n, d)): (indices int64 (n, k), values float32
/// (n, k)), by increasing index in a row, ties to the lower index, rows with fewer positives padded with (0, 0).
#[pyfunction]
#[pyo3(signature = (pre, k, num_threads=None))]
pub fn sae_topk_rows<'py>(
    py: Python<'py>,
    pre: PyReadonlyArray2<'py, f32>,
    k: usize,
    num_threads: Option<usize>,
) -> PyResult<Selection<'py>> {
    let (n, d) = dims(&pre);
    let p = contiguous(&pre, "pre")?;
    let (i, v) = run(py, num_threads, || train::topk_rows(p, d, k))?;
    Ok((matrix(py, n, k, i)?, matrix(py, n, k, v)?))
}
