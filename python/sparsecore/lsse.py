"""Locality-sensitive sparse encoding (Losse) and exact online ridge regression on its features.

After Z. Liu, C. Du, W. S. Lee and M. Lin, "Locality Sensitive Sparse Encoding for Learning World Models
Online", ICLR 2024. A world model (or any regressor learned from a stream) is a linear map on very wide, very
sparse random features, fitted follow-the-leader: after every sample the weights are the ridge solution on
*everything* seen so far, so the model neither forgets old regions of the input space when the input
distribution shifts nor needs to revisit old data.

- :class:`LsseEncoder` maps dense inputs to :class:`~sparsecore.SparseBatch` rows with exactly
  ``num_groups * 2**bin_dim`` non-zeros summing to ``num_groups``; nearby inputs share most active features.
- :class:`OnlineRidge` keeps the normal equations ``A = Σ φφᵀ``, ``B = Σ φ yᵀ`` over co-active feature pairs only
  (memory grows with the pairs ever seen together, never with ``dim²``) and updates the active weights per
  sample; :meth:`OnlineRidge.solve_exact` is the full solve.
- :class:`LsseRegressor` puts the two together behind scikit-learn's ``fit`` / ``partial_fit`` / ``predict``.

Examples
--------
>>> import numpy as np
>>> from sparsecore.lsse import LsseRegressor
>>> rng = np.random.default_rng(0)
>>> X = rng.uniform(-1, 1, size=(2000, 2))
>>> y = np.sin(3 * X[:, 0]) * np.cos(2 * X[:, 1])
>>> model = LsseRegressor(num_groups=20, bin_dim=2, num_bins=8, ridge=0.1).partial_fit(X, y)
>>> float(np.mean((model.predict(X) - y) ** 2)) < 0.01
True
"""

from __future__ import annotations

import hashlib
import io
import math
import os
import struct
import warnings
from typing import Any, ClassVar, Literal, NamedTuple

import numpy as np
from numpy.typing import ArrayLike, NDArray

from sparsecore import _core
from sparsecore._base import BaseEstimator
from sparsecore._container import read_container, sniff, write_container
from sparsecore._io import open_regular_file, read_npz, regular_file_size
from sparsecore._progress import progress as _progress
from sparsecore._progress import want_progress
from sparsecore._validate import (
    check_choice,
    check_num_threads,
    check_random_state,
    check_seed,
    is_int,
    nonnegative_int,
    positive_float,
    positive_int,
    refuse_sparse,
)
from sparsecore.exceptions import (
    ConvergenceWarning,
    DTypeError,
    IndexFormatError,
    InvalidArgumentError,
    NonFiniteError,
    NotFittedError,
    ShapeMismatchError,
)
from sparsecore.sparse import MAX_DIM, SparseBatch

__all__ = ["ConvergenceWarning", "LsseEncoder", "LsseRegressor", "OnlineRidge", "SolveInfo"]

Update = Literal["block", "exact"]

# A group of 2**12 active cells is already far beyond the paper's settings (the core's limit).
_MAX_BIN_DIM = 12
# Projection entries are drawn from N(0, 1) truncated at ±2 standard deviations, then divided by sqrt(d_in).
_TRUNCATE_AT = 2.0

# Rows per progress-bar step (about a second of updates at 200 active features).
_PROGRESS_CHUNK = 1000

_KIND = "lsse.ridge"
_KIND_VERSION = 1
_STATE_SCALARS = ("dim", "n_outputs", "ridge", "update", "n_seen")
# The format of sparsecore 0.1.0: magic, version 1, payload length, SHA-256 of a numpy ``.npz`` payload.
_LEGACY_MAGIC = b"SCRIDGE\x00"
_LEGACY_HEADER = struct.Struct("<8sIQ32s")


class SolveInfo(NamedTuple):
    """What :meth:`OnlineRidge.solve_exact` did."""

    iterations: int
    """Conjugate-gradient iterations (the most over outputs)."""
    rel_residual: float
    """Final ``‖B - (A + λI) W‖ / ‖B‖`` (the largest over outputs)."""


# ---------------------------------------------------------------------------------------------------------------
# Argument checks
# ---------------------------------------------------------------------------------------------------------------


def _float_matrix(x: ArrayLike, name: str, n_cols: int | None = None) -> NDArray[np.floating[Any]]:
    """``x`` as a C-contiguous float32/float64 matrix (1-D means one row); integers become float64."""
    refuse_sparse(x, name)
    arr = np.asarray(x)
    if arr.dtype.kind in "biu":
        arr = arr.astype(np.float64)
    elif arr.dtype not in (np.float32, np.float64):
        if arr.dtype.kind == "f":  # float16, longdouble
            arr = arr.astype(np.float64)
        else:
            raise DTypeError(f"{name}: expected a real-valued array, got dtype {arr.dtype}")
    if arr.ndim == 1:
        arr = arr.reshape(1, -1)
    if arr.ndim != 2:
        raise ShapeMismatchError(f"{name}: expected a 2-D array (n_samples, n_features), got shape {arr.shape}")
    if n_cols is not None and arr.shape[1] != n_cols:
        raise ShapeMismatchError(f"{name}: expected {n_cols} columns, got shape {arr.shape}")
    if not np.isfinite(arr).all():
        r, c = np.argwhere(~np.isfinite(arr))[0]
        raise NonFiniteError(f"{name}[{r}, {c}] is not finite: {arr[r, c]}")
    return np.ascontiguousarray(arr)


def _targets(y: ArrayLike, n_rows: int, n_outputs: int) -> NDArray[np.float64]:
    arr = np.asarray(y)
    if arr.dtype.kind not in "biuf":
        raise DTypeError(f"Y: expected a real-valued array, got dtype {arr.dtype}")
    arr = arr.astype(np.float64, copy=False)
    if arr.ndim == 1 and n_outputs == 1:
        arr = arr.reshape(-1, 1)
    if arr.shape != (n_rows, n_outputs):
        raise ShapeMismatchError(
            f"Y: expected shape ({n_rows}, {n_outputs}) (one row per sample of phi, one column per output), "
            f"got {arr.shape}"
        )
    if not np.isfinite(arr).all():
        r, c = np.argwhere(~np.isfinite(arr))[0]
        raise NonFiniteError(f"Y[{r}, {c}] is not finite: {arr[r, c]}")
    return np.ascontiguousarray(arr)


def _vector(value: ArrayLike | float, name: str, d_in: int, *, positive: bool) -> NDArray[np.float64]:
    arr = np.broadcast_to(np.asarray(value, dtype=np.float64), (d_in,)) if np.ndim(value) <= 1 else None
    if arr is None:
        raise ShapeMismatchError(f"{name}: expected a number or an array of length d_in = {d_in}")
    if not np.isfinite(arr).all() or (positive and (arr <= 0).any()):
        want = "finite and > 0" if positive else "finite"
        raise InvalidArgumentError(f"{name}: every entry must be {want}")
    return np.array(arr)


# ---------------------------------------------------------------------------------------------------------------
# Encoder
# ---------------------------------------------------------------------------------------------------------------


class LsseEncoder:
    """Locality-sensitive sparse encoder: dense inputs → very wide, very sparse, non-negative features.

    An input ``x`` (after ``(x - input_center) / input_scale``) is projected by a fixed random matrix ``P``
    (``d_in x num_groups·bin_dim``, truncated normal / √d_in) and squashed, ``h = num_bins · sigmoid(x P)``.
    The projected values form ``num_groups`` groups of ``bin_dim``; each group soft-bins its point on a
    ``(num_bins + 1)^bin_dim`` grid by multilinear interpolation, activating the ``2^bin_dim`` corners of its
    cell with weights that sum to 1. Nearby inputs fall in the same or adjacent cells, so they share most active
    features.

    Parameters
    ----------
    d_in
        Input dimension.
    num_groups
        Number of groups ``F``.
    bin_dim
        Projected values per group ``b`` (1..12); each group has ``2^b`` active features.
    num_bins
        Bins per projected value ``B``; resolution grows with it, and so does ``dim``.
    seed
        Seed of the projection; equal seeds give equal encoders.
    input_center, input_scale
        Inputs are standardised as ``(x - input_center) / input_scale`` first (scalars or length-``d_in``
        arrays). The projection works best when standardised inputs are of order 1.

    Attributes
    ----------
    dim : int
        Feature dimension, ``num_groups * (num_bins + 1) ** bin_dim``.
    n_active : int
        Non-zeros per encoded row, ``num_groups * 2 ** bin_dim``.
    projection : numpy.ndarray
        ``P``, float64 ``(d_in, num_groups * bin_dim)``, read-only.

    Raises
    ------
    InvalidArgumentError
        A count out of range, or ``dim`` above ``2**32 - 1``.
    """

    def __init__(
        self,
        d_in: int,
        *,
        num_groups: int = 50,
        bin_dim: int = 2,
        num_bins: int = 10,
        seed: int = 0,
        input_center: ArrayLike | float = 0.0,
        input_scale: ArrayLike | float = 1.0,
    ) -> None:
        self.d_in = positive_int(d_in, "d_in")
        self.num_groups = positive_int(num_groups, "num_groups")
        self.bin_dim = positive_int(bin_dim, "bin_dim", high=_MAX_BIN_DIM)
        self.num_bins = positive_int(num_bins, "num_bins")
        self.seed = check_seed(seed)
        dim = self.num_groups * (self.num_bins + 1) ** self.bin_dim
        if dim > MAX_DIM:
            raise InvalidArgumentError(
                f"num_bins: num_groups * (num_bins + 1) ** bin_dim = {dim} exceeds the largest dim, 2**32 - 1"
            )
        self.dim = dim
        self.n_active = self.num_groups * 2**self.bin_dim
        self.input_center = _vector(input_center, "input_center", self.d_in, positive=False)
        self.input_scale = _vector(input_scale, "input_scale", self.d_in, positive=True)
        self._standardise = bool((self.input_center != 0).any() or (self.input_scale != 1).any())
        rng = np.random.default_rng(self.seed)
        p = rng.standard_normal((self.d_in, self.num_groups * self.bin_dim))
        bad = np.abs(p) > _TRUNCATE_AT
        while bad.any():
            p[bad] = rng.standard_normal(int(bad.sum()))
            bad = np.abs(p) > _TRUNCATE_AT
        p /= math.sqrt(self.d_in)
        p.setflags(write=False)
        self.projection: NDArray[np.float64] = p

    def encode(self, X: ArrayLike, *, num_threads: int | None = None) -> SparseBatch:  # noqa: N803
        """Encode the rows of ``X``.

        Parameters
        ----------
        X
            ``(n, d_in)`` real array (float32 and float64 are used as they are), or one input of length ``d_in``.
        num_threads
            Worker threads (default: ``SPARSECORE_NUM_THREADS``, else all cores); the output does not depend on it.

        Returns
        -------
        SparseBatch
            ``n`` rows of dimension :attr:`dim`, exactly :attr:`n_active` stored entries each (in increasing
            order; an entry can be exactly 0 when a projected value sits on a grid line), each row summing to
            ``num_groups``.

        Raises
        ------
        ShapeMismatchError
            ``X`` does not have ``d_in`` columns.
        NonFiniteError
            ``X`` holds NaN or infinity.
        DTypeError
            ``X`` is not real-valued.
        """
        x = _float_matrix(X, "X", self.d_in)
        if self._standardise:
            x = np.ascontiguousarray((x - self.input_center) / self.input_scale)
        indptr, indices, data = _core.lsse_encode(
            x, self.projection, self.num_groups, self.bin_dim, self.num_bins, num_threads=check_num_threads(num_threads)
        )
        return SparseBatch._trusted(indptr, indices, data, self.dim)

    def get_params(self) -> dict[str, Any]:
        """Constructor arguments: an encoder built from them is identical to this one.

        Returns
        -------
        dict
            ``d_in``, ``num_groups``, ``bin_dim``, ``num_bins``, ``seed``, ``input_center``, ``input_scale``.
        """
        return {
            "d_in": self.d_in,
            "num_groups": self.num_groups,
            "bin_dim": self.bin_dim,
            "num_bins": self.num_bins,
            "seed": self.seed,
            "input_center": self.input_center.copy(),
            "input_scale": self.input_scale.copy(),
        }

    def __repr__(self) -> str:
        return (
            f"LsseEncoder(d_in={self.d_in}, num_groups={self.num_groups}, bin_dim={self.bin_dim}, "
            f"num_bins={self.num_bins}, seed={self.seed}; dim={self.dim}, n_active={self.n_active})"
        )


# ---------------------------------------------------------------------------------------------------------------
# Online ridge regression
# ---------------------------------------------------------------------------------------------------------------

_STATE_KEYS = ("features", "a_indptr", "a_indices", "a_data", "b", "w")
_STATE_DTYPES = {
    "features": np.uint32,
    "a_indptr": np.int64,
    "a_indices": np.uint32,
    "a_data": np.float64,
    "b": np.float64,
    "w": np.float64,
}


class OnlineRidge:
    """Follow-the-leader ridge regression on sparse features, storing only co-active feature pairs.

    After ``t`` samples the exact model is ``W = (A + ridge·I)⁻¹ B`` with ``A = Σ φφᵀ`` and ``B = Σ φ yᵀ`` over
    all of them. ``A`` is stored as one row per feature ever active, holding only the features it was active
    together with (column and value pairs in insertion order, or a dense row once two thirds of the columns are
    filled), so memory follows the co-active pairs (see :meth:`memory_usage`, about 12 bytes per pair), not
    ``dim²``.

    Parameters
    ----------
    dim
        Feature dimension (``1 .. 2**32 - 1``).
    n_outputs
        Outputs per sample.
    ridge
        Penalty ``λ > 0`` on ``‖W‖²``.
    update
        ``"block"`` (default; the paper's rule): each sample adds its outer product to the active block of ``A``
        and re-solves the active weights exactly with the others fixed (a block Gauss-Seidel step). Its cost
        depends on the number of active features and their co-active neighbours, never on ``dim``; predictions
        drift slightly from the full solution, which :meth:`solve_exact` restores at any time. ``"exact"``:
        predictions after every sample are the follow-the-leader solution. While the features seen so far number
        at most 5,792 (a dense inverse of 256 MiB), it keeps ``(A + ridge·I)⁻¹`` and updates it by
        Sherman-Morrison (recursive least squares, ``O(n²)`` per sample for ``n`` features seen; several times
        faster than the same update in numpy, see ``benches/RESULTS.md``); beyond that, the block step followed by
        conjugate gradients on the whole system (to a relative residual of 1e-10), much slower.

    Notes
    -----
    Samples are learned one after another (each update depends on the previous); within an update the active
    rows of ``A`` are updated on ``num_threads`` threads, and :meth:`predict`, :meth:`solve_exact` and the encoder
    are parallel. Results never depend on the thread count. The object may be shared by Python threads: updates
    take a write lock, predictions a read lock, and the GIL is released during both.
    """

    def __init__(self, dim: int, n_outputs: int = 1, *, ridge: float = 1.0, update: Update = "block") -> None:
        dim = positive_int(dim, "dim", high=MAX_DIM)
        n_outputs = positive_int(n_outputs, "n_outputs")
        ridge = positive_float(ridge, "ridge")
        check_choice(update, "update", ("block", "exact"))
        self._core = _core.OnlineRidgeCore(dim, n_outputs, ridge, update)

    @classmethod
    def _wrap(cls, core: _core.OnlineRidgeCore) -> OnlineRidge:
        obj = cls.__new__(cls)
        obj._core = core
        return obj

    # -- learning and prediction ------------------------------------------------------------------------------

    def _check_phi(self, phi: SparseBatch) -> None:
        if not isinstance(phi, SparseBatch):
            raise InvalidArgumentError(f"phi: expected a SparseBatch, got {type(phi).__name__}")
        if phi.dim != self.dim:
            raise ShapeMismatchError(f"phi: has dim {phi.dim} but the model has dim {self.dim}")

    def partial_fit(
        self,
        phi: SparseBatch,
        Y: ArrayLike,  # noqa: N803
        *,
        num_threads: int | None = None,
        progress: bool | None = None,
    ) -> OnlineRidge:
        """Learn from a batch of samples, one update per row, in order.

        Parameters
        ----------
        phi
            Features, ``dim`` columns; rows must be canonical (sorted, no duplicates) and finite.
        Y
            Targets ``(n, n_outputs)`` (or ``(n,)`` with one output).
        num_threads
            Threads for the ``"exact"`` rule's solves.
        progress
            Progress bar on stderr (default: for batches of more than one chunk of 1,000 rows on a terminal).

        Returns
        -------
        self

        Raises
        ------
        ShapeMismatchError
            ``phi`` of another dimension, or ``Y`` of the wrong shape.
        NonFiniteError, IndexOutOfRangeError, SparseFormatError, InvalidArgumentError
            Bad entries in ``phi`` or ``Y`` (or values so large that their products overflow); the batch, or with
            a progress bar the chunk of 1,000 rows, is checked before anything of it is learned.
        """
        self._check_phi(phi)
        y = _targets(Y, phi.n_rows, self.n_outputs)
        threads = check_num_threads(num_threads)
        n = phi.n_rows
        unconverged = self._core.n_unconverged
        starts = list(range(0, n, _PROGRESS_CHUNK))
        if not want_progress(progress, len(starts)):
            self._core.partial_fit(phi._csr, y, num_threads=threads)
        else:
            for s in _progress(starts, desc="OnlineRidge", unit="chunk", show=True):
                part = phi[s : s + _PROGRESS_CHUNK]
                self._core.partial_fit(part._csr, y[s : s + _PROGRESS_CHUNK], num_threads=threads)
        missed = self._core.n_unconverged - unconverged
        if missed:
            warnings.warn(
                f"update='exact': in {missed} of {n} updates the full solve stopped at its iteration limit above "
                "relative residual 1e-10 (ill-conditioned: raise ridge, or call solve_exact with more iterations)",
                ConvergenceWarning,
                stacklevel=2,
            )
        return self

    def predict(self, phi: SparseBatch, *, num_threads: int | None = None) -> NDArray[np.float64]:
        """Predictions ``φ W``; features never seen during training contribute 0.

        Parameters
        ----------
        phi
            Features, ``dim`` columns.
        num_threads
            Worker threads; the output does not depend on it.

        Returns
        -------
        numpy.ndarray
            float64 ``(n, n_outputs)``.
        """
        self._check_phi(phi)
        return self._core.predict(phi._csr, num_threads=check_num_threads(num_threads))

    def solve_exact(self, *, tol: float = 1e-10, max_iter: int = 10_000, num_threads: int | None = None) -> SolveInfo:
        """Solve the whole system ``(A + λI) W = B`` (conjugate gradients, Jacobi preconditioner, warm start).

        Afterwards predictions are the ridge solution on every sample seen — the oracle for the ``"block"`` rule.

        Parameters
        ----------
        tol
            Relative residual to reach.
        max_iter
            Iteration limit per output; reaching it issues a :class:`ConvergenceWarning`.
        num_threads
            Worker threads for the matrix products.

        Returns
        -------
        SolveInfo
            Iterations and the final relative residual.
        """
        tol = positive_float(tol, "tol")
        max_iter = positive_int(max_iter, "max_iter")
        it, res = self._core.solve_exact(tol, max_iter, num_threads=check_num_threads(num_threads))
        if res > tol:
            warnings.warn(
                f"solve_exact stopped after {it} iterations at relative residual {res:.3g} > tol = {tol:g}",
                ConvergenceWarning,
                stacklevel=2,
            )
        return SolveInfo(it, res)

    # -- state ------------------------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """The whole model as plain numbers and numpy arrays (a checkpoint; rows by increasing feature id).

        Returns
        -------
        dict
            ``dim``, ``n_outputs``, ``ridge``, ``update``, ``n_seen``; ``features`` (uint32, the features ever
            active, increasing); ``A`` over those features as CSR ``a_indptr`` (int64), ``a_indices`` (uint32
            feature ids), ``a_data`` (float64); ``b`` and ``w`` (float64, ``(len(features), n_outputs)``).
        """
        return dict(self._core.state())

    def load_state_dict(self, state: dict[str, Any]) -> OnlineRidge:
        """Replace this model's state with ``state`` (from :meth:`state_dict`), checking it completely.

        Returns
        -------
        self

        Raises
        ------
        InvalidArgumentError
            A missing key, a wrong dtype or length, an entry out of range, a non-finite value, or an ``A`` that
            is not symmetric.
        """
        self._core = _from_state(state)
        return self

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> OnlineRidge:
        """A new model from :meth:`state_dict`'s output (checked as in :meth:`load_state_dict`).

        Returns
        -------
        OnlineRidge
        """
        return cls._wrap(_from_state(state))

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the model to ``path`` atomically, as a checked container of kind ``lsse.ridge`` (no pickle).

        Parameters
        ----------
        path
            Destination file; replaced atomically (temporary file, fsync, rename).
        """
        st = self.state_dict()
        meta = {k: st[k] for k in _STATE_SCALARS}
        write_container(path, _KIND, _KIND_VERSION, meta, {k: v for k, v in st.items() if k not in _STATE_SCALARS})

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> OnlineRidge:
        """Read a model written by :meth:`save` (also the format of sparsecore 0.1.0).

        Returns
        -------
        OnlineRidge

        Raises
        ------
        FileNotFoundError
            ``path`` does not exist.
        IndexFormatError
            Not a regular file, not an OnlineRidge file, another version, truncated, corrupted, or inconsistent
            content.
        """
        if sniff(path) == _LEGACY_MAGIC:
            st = _read_legacy(path)
        else:
            c = read_container(path, _KIND, {_KIND_VERSION})
            st = {**c.arrays, **{k: c.meta.get(k) for k in _STATE_SCALARS}}
        try:
            return cls._wrap(_from_state(st))
        except InvalidArgumentError as exc:
            raise IndexFormatError(f"{path}: inconsistent content ({exc})") from None

    def copy(self) -> OnlineRidge:
        """An independent copy (same state, separate storage).

        Returns
        -------
        OnlineRidge
        """
        return self._wrap(self._core.copy())

    def __getstate__(self) -> dict[str, Any]:
        return self.state_dict()

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._core = _from_state(state)

    # -- introspection ----------------------------------------------------------------------------------------

    def memory_usage(self) -> dict[str, int]:
        """Bytes held, by component: ``index`` (feature → row), ``A``, ``B``, ``W``, ``scratch``, ``total``.

        Returns
        -------
        dict
        """
        usage = dict(self._core.memory_usage())
        usage["total"] = sum(usage.values())
        return usage

    @property
    def dim(self) -> int:
        """Feature dimension."""
        return self._core.dim

    @property
    def n_outputs(self) -> int:
        """Outputs per sample."""
        return self._core.n_outputs

    @property
    def ridge(self) -> float:
        """Ridge penalty; setting it leaves the weights stale until the next update or :meth:`solve_exact`."""
        return self._core.ridge

    @ridge.setter
    def ridge(self, value: float) -> None:
        self._core.set_ridge(positive_float(value, "ridge"))

    @property
    def update(self) -> str:
        """Update rule, ``"block"`` or ``"exact"``."""
        return self._core.update

    @property
    def n_seen(self) -> int:
        """Samples learned so far."""
        return self._core.n_seen

    @property
    def n_active_features(self) -> int:
        """Features active in at least one sample."""
        return self._core.n_active_features

    @property
    def nnz(self) -> int:
        """Stored entries of ``A``: ordered pairs of features active together, the diagonal included."""
        return self._core.nnz

    def __repr__(self) -> str:
        return (
            f"OnlineRidge(dim={self.dim}, n_outputs={self.n_outputs}, ridge={self.ridge:g}, update={self.update!r}; "
            f"n_seen={self.n_seen}, active features={self.n_active_features}, pairs={self.nnz})"
        )


def _from_state(state: dict[str, Any]) -> _core.OnlineRidgeCore:
    if not isinstance(state, dict):
        raise InvalidArgumentError(f"state: expected a dict from state_dict(), got {type(state).__name__}")
    missing = [k for k in ("dim", "n_outputs", "ridge", "update", "n_seen", *_STATE_KEYS) if k not in state]
    if missing:
        raise InvalidArgumentError(f"state: missing keys {missing}")
    arrays = {}
    for key in _STATE_KEYS:
        arr = np.asarray(state[key])
        want = np.dtype(_STATE_DTYPES[key])
        if arr.dtype != want:
            raise InvalidArgumentError(f"state: {key} must have dtype {want}, got {arr.dtype}")
        arrays[key] = np.ascontiguousarray(arr)
    try:
        dim = positive_int(int(state["dim"]), "state: dim", high=MAX_DIM)
        n_out = positive_int(int(state["n_outputs"]), "state: n_outputs")
        ridge = positive_float(float(state["ridge"]), "state: ridge")
        n_seen = nonnegative_int(int(state["n_seen"]), "state: n_seen")
        update = str(state["update"])
    except (TypeError, ValueError) as exc:
        raise InvalidArgumentError(f"state: bad scalar ({exc})") from None
    for key in ("b", "w"):
        if arrays[key].ndim != 2 or arrays[key].shape[1] != n_out:
            raise InvalidArgumentError(f"state: {key} must have shape (n_features, {n_out}), got {arrays[key].shape}")
    for key in ("features", "a_indptr", "a_indices", "a_data"):
        if arrays[key].ndim != 1:
            raise InvalidArgumentError(f"state: {key} must be 1-D, got shape {arrays[key].shape}")
    return _core.OnlineRidgeCore.from_state(
        dim,
        n_out,
        ridge,
        update,
        n_seen,
        arrays["features"],
        arrays["a_indptr"],
        arrays["a_indices"],
        arrays["a_data"],
        arrays["b"],
        arrays["w"],
    )


# ---------------------------------------------------------------------------------------------------------------
# scikit-learn style regressor
# ---------------------------------------------------------------------------------------------------------------


class LsseRegressor(BaseEstimator):
    """Losse features + follow-the-leader ridge regression, with scikit-learn's regressor API.

    ``partial_fit`` learns from a stream in a single pass (each call continues the same model); ``fit`` starts
    over. Works without scikit-learn; with it, ``clone``, pipelines and ``score`` behave as for any regressor.

    Parameters
    ----------
    num_groups, bin_dim, num_bins, input_center, input_scale
        The encoder's (see :class:`LsseEncoder`).
    ridge
        Penalty on ``‖W‖²`` (see :class:`OnlineRidge`).
    update
        ``"block"`` or ``"exact"`` (see :class:`OnlineRidge`).
    random_state
        Seed of the encoder's random projection: an int ``>= 0`` (the default 0 makes every model with the same
        parameters identical), None (a fresh random seed at each ``fit``) or a ``numpy.random.Generator`` (one
        seed drawn from it at each ``fit``). The encoder itself (:class:`LsseEncoder`) keeps ``seed``, the
        Rust core's name.
    num_threads
        Worker threads for encoding and prediction.
    progress
        Progress bar while learning (see :meth:`OnlineRidge.partial_fit`).
    seed
        Deprecated alias of ``random_state`` (a ``FutureWarning`` at ``fit``); when given it wins.

    Attributes
    ----------
    encoder_ : LsseEncoder
    model_ : OnlineRidge
    n_features_in_ : int

    Notes
    -----
    scikit-learn's ``check_estimator`` passes on this class except for the checks listed in
    ``tests/test_sklearn_checks.py`` with their reasons.
    """

    _estimator_type: ClassVar[str | None] = "regressor"

    def __init__(
        self,
        num_groups: int = 50,
        bin_dim: int = 2,
        num_bins: int = 10,
        ridge: float = 1.0,
        update: Update = "block",
        random_state: int | np.random.Generator | None = 0,
        input_center: ArrayLike | float = 0.0,
        input_scale: ArrayLike | float = 1.0,
        num_threads: int | None = None,
        progress: bool | None = None,
        seed: int | None = None,
    ) -> None:
        self.num_groups = num_groups
        self.bin_dim = bin_dim
        self.num_bins = num_bins
        self.ridge = ridge
        self.update = update
        self.random_state = random_state
        self.input_center = input_center
        self.input_scale = input_scale
        self.num_threads = num_threads
        self.progress = progress
        self.seed = seed

    def _projection_seed(self) -> int:
        if self.seed is not None:
            warnings.warn(
                "LsseRegressor(seed=...) is deprecated; use random_state=... (same meaning)",
                FutureWarning,
                stacklevel=4,
            )
            return check_seed(self.seed)
        if is_int(self.random_state):
            return check_seed(self.random_state, "random_state")
        return int(check_random_state(self.random_state).integers(2**63))

    def _start(self, d_in: int, n_outputs: int) -> None:
        self.encoder_ = LsseEncoder(
            d_in,
            num_groups=self.num_groups,
            bin_dim=self.bin_dim,
            num_bins=self.num_bins,
            seed=self._projection_seed(),
            input_center=self.input_center,
            input_scale=self.input_scale,
        )
        self.model_ = OnlineRidge(self.encoder_.dim, n_outputs, ridge=self.ridge, update=self.update)
        self.n_features_in_ = d_in
        self._y_1d = True

    def partial_fit(self, X: ArrayLike, y: ArrayLike) -> LsseRegressor:  # noqa: N803
        """Continue learning from ``(X, y)`` in a single pass, in row order.

        Parameters
        ----------
        X
            ``(n, d_in)`` inputs (fixed by the first call).
        y
            ``(n,)`` or ``(n, n_outputs)`` targets.

        Returns
        -------
        self
        """
        x = _float_matrix(X, "X", getattr(self, "n_features_in_", None))
        y_arr = np.asarray(y)
        n_out = 1 if y_arr.ndim == 1 else (y_arr.shape[1] if y_arr.ndim == 2 else -1)
        if n_out < 1:
            raise ShapeMismatchError(f"y: expected shape (n,) or (n, n_outputs), got {y_arr.shape}")
        if not hasattr(self, "model_"):
            self._start(x.shape[1], n_out)
            self._y_1d = y_arr.ndim == 1
        elif n_out != self.model_.n_outputs:
            raise ShapeMismatchError(f"y: the model has {self.model_.n_outputs} outputs, got shape {y_arr.shape}")
        if y_arr.shape[0] != x.shape[0]:
            raise ShapeMismatchError(f"y: expected {x.shape[0]} rows (one per row of X), got {y_arr.shape[0]}")
        phi = self.encoder_.encode(x, num_threads=self.num_threads)
        self.model_.partial_fit(phi, y_arr, num_threads=self.num_threads, progress=self.progress)
        return self

    def fit(self, X: ArrayLike, y: ArrayLike) -> LsseRegressor:  # noqa: N803
        """Start over and learn from ``(X, y)`` in a single pass.

        Returns
        -------
        self
        """
        for attr in ("encoder_", "model_", "n_features_in_"):
            if hasattr(self, attr):
                delattr(self, attr)
        return self.partial_fit(X, y)

    def predict(self, X: ArrayLike) -> NDArray[np.float64]:  # noqa: N803
        """Predictions for ``X``.

        Returns
        -------
        numpy.ndarray
            ``(n,)`` if the model was fitted on 1-D ``y``, else ``(n, n_outputs)``.

        Raises
        ------
        NotFittedError
            Before the first ``fit`` / ``partial_fit``.
        """
        if not hasattr(self, "model_"):
            raise NotFittedError("LsseRegressor: call fit or partial_fit before predict")
        x = _float_matrix(X, "X", self.n_features_in_)
        out = self.model_.predict(self.encoder_.encode(x, num_threads=self.num_threads), num_threads=self.num_threads)
        return out[:, 0] if self._y_1d else out

    def score(self, X: ArrayLike, y: ArrayLike) -> float:  # noqa: N803
        """Coefficient of determination R² of the predictions (averaged over outputs).

        Returns
        -------
        float
        """
        y_true = np.asarray(y, dtype=np.float64)
        pred = self.predict(X).reshape(y_true.shape)
        ss_res = ((y_true - pred) ** 2).sum(axis=0)
        ss_tot = ((y_true - y_true.mean(axis=0)) ** 2).sum(axis=0)
        r2 = np.where(ss_tot > 0, 1 - ss_res / np.where(ss_tot > 0, ss_tot, 1.0), 0.0)
        return float(np.mean(r2))

    def __sklearn_is_fitted__(self) -> bool:
        return hasattr(self, "model_")

    def _more_sklearn_tags(self, tags: Any, utils: Any) -> Any:
        tags.target_tags.single_output = True
        tags.target_tags.multi_output = True
        return tags


def _read_legacy(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The state in a file of sparsecore 0.1.0's OnlineRidge format (checked: length, version, SHA-256)."""
    with open_regular_file(path) as fh:
        size = regular_file_size(fh)
        head = fh.read(_LEGACY_HEADER.size)
        if len(head) < _LEGACY_HEADER.size or head[:8] != _LEGACY_MAGIC:
            raise IndexFormatError(f"{path}: not a sparsecore OnlineRidge file (bad magic)")
        _, version, length, digest = _LEGACY_HEADER.unpack(head)
        if version != 1:
            raise IndexFormatError(f"{path}: OnlineRidge file version {version} is not supported (reads 1)")
        if length != size - _LEGACY_HEADER.size:  # checked before reading: the header cannot make us read more
            raise IndexFormatError(
                f"{path}: truncated or extended ({size - _LEGACY_HEADER.size} payload bytes, the header says {length})"
            )
        payload = fh.read(length)
        if len(payload) != length or fh.read(1):
            raise IndexFormatError(f"{path}: the file changed while it was read")
    if hashlib.sha256(payload).digest() != digest:
        raise IndexFormatError(f"{path}: checksum mismatch, the file is corrupted")
    return read_npz(io.BytesIO(payload), path)
