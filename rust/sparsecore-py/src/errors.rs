//! Core errors → the typed exceptions of `sparsecore.exceptions` (defined in Python so that they can subclass
//! both a sparsecore base and the builtin that fits: ValueError, IndexError, TypeError, OSError, ...).

use pyo3::import_exception;
use pyo3::PyErr;
use sparsecore_core::SparseError;

import_exception!(sparsecore.exceptions, SparseFormatError);
import_exception!(sparsecore.exceptions, NonFiniteError);
import_exception!(sparsecore.exceptions, IndexOutOfRangeError);
import_exception!(sparsecore.exceptions, ShapeMismatchError);
import_exception!(sparsecore.exceptions, InvalidArgumentError);
import_exception!(sparsecore.exceptions, ResourceError);
import_exception!(sparsecore.exceptions, ThreadPoolError);
import_exception!(sparsecore.exceptions, IndexFormatError);
import_exception!(sparsecore.exceptions, UnknownIdError);

/// Map a core error to its Python exception, the message unchanged.
pub fn to_py(e: SparseError) -> PyErr {
    let msg = e.to_string();
    match e {
        SparseError::Indptr(_)
        | SparseError::LengthMismatch { .. }
        | SparseError::Unsorted { .. }
        | SparseError::Duplicate { .. } => SparseFormatError::new_err(msg),
        SparseError::NonFinite { .. } | SparseError::NonFiniteDense { .. } | SparseError::NonFiniteValue { .. } => {
            NonFiniteError::new_err(msg)
        }
        SparseError::IndexOutOfRange { .. } => IndexOutOfRangeError::new_err(msg),
        SparseError::ShapeMismatch(_) => ShapeMismatchError::new_err(msg),
        SparseError::InvalidArgument { .. } => InvalidArgumentError::new_err(msg),
        SparseError::TooLarge { .. } => ResourceError::new_err(msg),
        SparseError::ThreadPool(_) => ThreadPoolError::new_err(msg),
        SparseError::Format(_) => IndexFormatError::new_err(msg),
        SparseError::Io { not_found: true, .. } => pyo3::exceptions::PyFileNotFoundError::new_err(msg),
        SparseError::Io { .. } => pyo3::exceptions::PyOSError::new_err(msg),
        SparseError::UnknownId(_) => UnknownIdError::new_err(msg),
    }
}

/// Like [`to_py`], prefixing the message with the argument it concerns (e.g. `other`), for binary ops where
/// the core's `indices`/`data` could mean either operand. An empty `arg` means the batch itself (no prefix).
pub fn to_py_for(arg: &str, e: SparseError) -> PyErr {
    if arg.is_empty() {
        return to_py(e);
    }
    match e {
        SparseError::Indptr(_)
        | SparseError::LengthMismatch { .. }
        | SparseError::NonFinite { .. }
        | SparseError::NonFiniteDense { .. }
        | SparseError::IndexOutOfRange { .. }
        | SparseError::Unsorted { .. }
        | SparseError::Duplicate { .. } => {
            let err = to_py(e);
            pyo3::Python::attach(|py| {
                let msg = format!("{arg}: {}", err.value(py));
                PyErr::from_type(err.get_type(py), msg)
            })
        }
        other => to_py(other),
    }
}
