//! Dense output arrays over recycled buffers (`sparsecore_core::recycle`): numpy arrays whose base object
//! gives the memory back for the next output when numpy frees it.
//!
//! The one place in the binding with `unsafe`: numpy is handed a pointer into a Rust buffer whose lifetime it
//! then controls through the base object.
#![allow(unsafe_code)]

use ndarray::ArrayViewMut2;
use numpy::{Element, PyArray2};
use pyo3::prelude::*;
use sparsecore_core::pursuit::Real;
use sparsecore_core::recycle;

/// The memory behind a dense output array, its numpy base object. Numpy drops it with the array's last view;
/// the buffer then goes back to `recycle`.
#[pyclass(frozen, module = "sparsecore._core")]
pub struct DenseBuffer {
    words: Vec<u64>,
}

impl Drop for DenseBuffer {
    fn drop(&mut self) {
        recycle::give_back(std::mem::take(&mut self.words));
    }
}

/// A writeable C-ordered `(rows, cols)` numpy array over the first `rows * cols` elements of `words`, which it
/// takes over.
///
/// Errors: `words` too short for `rows * cols` elements of `T`.
pub fn dense_array<T: Element + Real>(
    py: Python<'_>,
    mut words: Vec<u64>,
    rows: usize,
    cols: usize,
) -> PyResult<Bound<'_, PyAny>> {
    let elems = recycle::as_elems_mut::<T>(&mut words);
    if rows.checked_mul(cols).is_none_or(|n| n > elems.len()) {
        return Err(pyo3::exceptions::PyValueError::new_err(format!(
            "dense output: a buffer of {} elements cannot hold {rows} x {cols}",
            elems.len()
        )));
    }
    let ptr = elems.as_mut_ptr();
    // SAFETY: `ptr` starts `rows * cols` initialised elements of `T` (checked above), aligned for `T` (a
    // `Vec<u64>` is 8-byte aligned, `T` is f32 or f64); moving the Vec into `owner` does not move its heap buffer.
    let view = unsafe { ArrayViewMut2::from_shape_ptr((rows, cols), ptr) };
    let owner = Bound::new(py, DenseBuffer { words })?;
    // SAFETY: the array's data is `owner`'s buffer, which `owner` never reads, writes or moves while alive; numpy
    // holds `owner` as the array's base object, so the buffer outlives the array and every view of it.
    let arr = unsafe { PyArray2::borrow_from_array(&view, owner.into_any()) };
    Ok(arr.into_any())
}

/// Free the memory kept from freed dense outputs; returns its bytes.
#[pyfunction]
pub fn recycle_release() -> usize {
    recycle::release()
}

/// Bytes kept now from freed dense outputs.
#[pyfunction]
pub fn recycle_kept_bytes() -> usize {
    recycle::kept_bytes()
}
