//! `sparsecore._core`: the thin PyO3 binding over `sparsecore-core`.
//!
//! Every function borrows numpy arrays without copying, validates cheaply, releases the GIL for the work, and
//! hands results back as numpy arrays that own the Rust buffers (no copy). The typed Python facade lives in
//! `python/sparsecore/`; these functions are private API.

mod container;
mod convert;
mod detach;
mod errors;
mod index;
mod lsse;
mod pursuit;
mod recycled;
mod sae;
mod sdr;
mod sparse;

use pyo3::prelude::*;

/// The extension module.
#[pymodule]
mod _core {
    #[pymodule_export]
    use crate::sparse::{
        canonicalize, check, concat, dequantize, from_dense, is_canonical, matmul_dense, prune_mass, quantize, row_dot,
        scores_dense, scores_top_k, take_rows, threshold, to_dense, top_k,
    };

    #[pymodule_export]
    use crate::sparse::{default_num_threads, simd_level};

    #[pymodule_export]
    use crate::container::{container_read, container_write};

    #[pymodule_export]
    use crate::index::{BuildProgress, IndexCore};

    #[pymodule_export]
    use crate::lsse::{lsse_encode, OnlineRidgeCore};

    #[pymodule_export]
    use crate::pursuit::{pursuit_greedy, pursuit_lasso, pursuit_threshold};

    #[pymodule_export]
    use crate::recycled::{recycle_kept_bytes, recycle_release, DenseBuffer};

    #[pymodule_export]
    use crate::sae::{sae_gather_dot, sae_gather_sum, sae_scatter_outer, sae_topk_rows, SaeEncoderCore};

    #[pymodule_export]
    use crate::sdr::{
        sdr_add_noise, sdr_category_encode, sdr_grid_encode, sdr_overlap, sdr_random, sdr_scalar_encode, sdr_setop,
        FieldCore, KnnCore, NetworkCore,
    };

    use super::{Bound, PyModule, PyModuleMethods, PyResult};

    #[pymodule_init]
    fn init(m: &Bound<'_, PyModule>) -> PyResult<()> {
        m.add("__version__", env!("CARGO_PKG_VERSION"))
    }
}
