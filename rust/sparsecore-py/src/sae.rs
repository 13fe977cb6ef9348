//! Binding of `sparsecore_core::sae`: `SaeEncoderCore`, the weights of a TopK / JumpReLU SAE copied once into
//! Rust-owned buffers, with a fused encoder (GIL released, explicit `num_threads`) and a sparse decoder.

use numpy::{PyArray2, PyReadonlyArray1, PyReadonlyArray2, PyUntypedArrayMethods};
use pyo3::prelude::*;
use sparsecore_core::sae::{SaeWeights, Tiles, TILE_COLS, TILE_ROWS};

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
