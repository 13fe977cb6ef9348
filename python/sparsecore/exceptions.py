"""Typed exceptions raised by sparsecore.

Every exception derives from :class:`SparsecoreError` *and* from the builtin that describes the problem, so
``except ValueError`` keeps working for users who do not know about sparsecore's types. Messages name the
argument and, for per-entry problems, the row and flat position.
"""

from __future__ import annotations

__all__ = [
    "ConvergenceWarning",
    "DTypeError",
    "IndexFormatError",
    "IndexOutOfRangeError",
    "InvalidArgumentError",
    "MissingExtraError",
    "NonFiniteError",
    "NotFittedError",
    "ResourceError",
    "ShapeMismatchError",
    "SparseFormatError",
    "SparsecoreError",
    "ThreadPoolError",
    "TruncationWarning",
    "UnknownIdError",
    "UnknownTokenError",
]


class SparsecoreError(Exception):
    """Base class of every error sparsecore raises on purpose."""


class SparseFormatError(SparsecoreError, ValueError):
    """Malformed sparse structure: bad ``indptr``, length mismatch, unsorted or duplicate indices."""


class NonFiniteError(SparseFormatError):
    """A stored value is NaN or infinite (or overflows float32)."""


class IndexOutOfRangeError(SparsecoreError, IndexError):
    """A column index is negative or not below ``dim``."""


class ShapeMismatchError(SparsecoreError, ValueError):
    """Operands disagree in shape (dimension, number of rows, dense matrix shape)."""


class InvalidArgumentError(SparsecoreError, ValueError):
    """A scalar argument is outside its domain (e.g. ``k <= 0``, ``fraction > 1``, ``dim > 2**32 - 1``)."""


class DTypeError(SparsecoreError, TypeError):
    """An array has a dtype that cannot be converted safely (e.g. float indices, complex values)."""


class UnknownTokenError(SparsecoreError, KeyError):
    """A token string is not in the vocabulary, or a token id has no string."""

    def __str__(self) -> str:
        # KeyError quotes its argument; show the message as written.
        return str(self.args[0]) if self.args else ""


class UnknownIdError(SparsecoreError, KeyError):
    """A document id is not in the index."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class ResourceError(SparsecoreError, MemoryError):
    """An output would be too large to allocate."""


class ThreadPoolError(SparsecoreError, RuntimeError):
    """The worker thread pool could not be started."""


class MissingExtraError(SparsecoreError, ImportError):
    """An optional dependency is not installed; the message names the extra that provides it."""


class NotFittedError(SparsecoreError, ValueError, AttributeError):
    """An estimator was used before ``fit`` (same bases as scikit-learn's ``NotFittedError``)."""


class IndexFormatError(SparsecoreError, OSError):
    """A saved file is truncated, corrupted, of another version, or not a sparsecore file."""


class TruncationWarning(UserWarning):
    """Input was longer than a model accepts and was cut (only when truncation was asked for explicitly)."""


class ConvergenceWarning(UserWarning):
    """An iterative solver stopped at its iteration cap before meeting its tolerance on some inputs."""
