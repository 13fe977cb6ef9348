//! Run core work with the GIL released, inside the requested thread pool.

use pyo3::prelude::*;
use sparsecore_core::{parallel, SparseError};

use crate::errors::to_py;

/// Release the GIL, run `f` in a pool of `num_threads` (see `sparsecore_core::parallel`), map errors.
pub fn run<T, F>(py: Python<'_>, num_threads: Option<usize>, f: F) -> PyResult<T>
where
    T: Send,
    F: FnOnce() -> Result<T, SparseError> + Send,
{
    py.detach(|| parallel::install(num_threads, f)).map_err(to_py)?.map_err(to_py)
}
