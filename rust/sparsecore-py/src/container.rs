//! The checked container format (`sparsecore_core::container`) for the Python savers: write named arrays and a
//! JSON description to a file atomically, read them back checked. Arrays cross as raw bytes plus a dtype code
//! and a shape; `sparsecore._container` maps them to and from numpy.

use std::path::PathBuf;

use numpy::{IntoPyArray, PyArray1};
use pyo3::prelude::*;
use pyo3::pybacked::PyBackedBytes;
use sparsecore_core::container::{self, Dtype, Section};
use sparsecore_core::SparseError;

use crate::errors::to_py;

/// One section as the Python side passes it: name, dtype code, shape, bytes.
type PySection = (String, u32, Vec<u64>, PyBackedBytes);
/// One section as handed back: name, dtype code, shape, bytes as a uint8 array.
type PyArraySection<'py> = (String, u32, Vec<u64>, Bound<'py, PyArray1<u8>>);

/// Write a container of `kind` (version `kind_version`) with `meta` (JSON text) and `sections` to `path`,
/// atomically (temporary file, fsync, rename, fsync of the folder).
#[pyfunction]
pub fn container_write(
    py: Python<'_>,
    path: PathBuf,
    kind: &str,
    kind_version: u32,
    meta: &str,
    sections: Vec<PySection>,
) -> PyResult<()> {
    let mut out = Vec::with_capacity(sections.len());
    for (name, code, shape, bytes) in &sections {
        let dtype = Dtype::from_code(*code).ok_or_else(|| {
            to_py(SparseError::InvalidArgument { arg: "sections", msg: format!("{name:?}: unknown dtype code {code}") })
        })?;
        out.push(Section { name: name.clone(), dtype, shape: shape.clone(), bytes: bytes.as_ref() });
    }
    py.detach(|| container::write(&path, kind, kind_version, meta, &out)).map_err(to_py)
}

/// Read a container of `kind` from `path`, checking everything (see `sparsecore_core::container`). Returns
/// `(kind_version, meta, [(name, dtype code, shape, uint8 bytes)])`.
#[pyfunction]
#[allow(clippy::type_complexity)]
pub fn container_read<'py>(
    py: Python<'py>,
    path: PathBuf,
    kind: &str,
) -> PyResult<(u32, String, Vec<PyArraySection<'py>>)> {
    let (version, meta, parts) = py
        .detach(|| {
            let c = container::open(&path, kind, false)?;
            let parts: Vec<(String, u32, Vec<u64>, Vec<u8>)> = c
                .entries
                .iter()
                .map(|e| (e.name.clone(), e.dtype as u32, e.shape.clone(), c.bytes(e).to_vec()))
                .collect();
            Ok::<_, SparseError>((c.kind_version, c.meta.clone(), parts))
        })
        .map_err(to_py)?;
    let parts = parts.into_iter().map(|(n, d, s, b)| (n, d, s, b.into_pyarray(py))).collect();
    Ok((version, meta, parts))
}
