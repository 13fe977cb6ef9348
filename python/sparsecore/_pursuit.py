"""The sparse coding functions behind :mod:`sparsecore.pursuit` (see there; import them from there).

A module of its own so that :mod:`sparsecore._estimators` can import the functions at the top while
:mod:`sparsecore.pursuit` re-exports the estimators: no import cycle.
"""

from __future__ import annotations

import warnings
from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

from sparsecore import _core
from sparsecore._validate import (
    check_choice,
    check_ndim,
    check_num_threads,
    float_array,
    nonnegative_float,
    positive_float,
    positive_int,
)
from sparsecore.exceptions import ConvergenceWarning, DTypeError, InvalidArgumentError, ShapeMismatchError
from sparsecore.sparse import SparseBatch

Output = Literal["dense", "sparse", "csr"]
LassoMethod = Literal["fista", "ista", "cd"]


class _Prepared:
    """Checked, C-contiguous inputs of one call."""

    __slots__ = ("d", "dtype", "keep", "one_signal", "x")

    def __init__(self, x: NDArray[Any], d: NDArray[Any], keep: NDArray[np.intp] | None, one_signal: bool) -> None:
        self.x, self.d, self.keep, self.one_signal = x, d, keep, one_signal
        self.dtype = x.dtype


def _prepare(x: ArrayLike, d: ArrayLike, normalize: bool) -> _Prepared:
    xa = float_array(x, "X")
    da = float_array(d, "D")
    one = xa.ndim == 1
    if one:
        xa = xa[None, :]
    if xa.ndim != 2:
        raise ShapeMismatchError(f"X: must be 1-D (one signal) or 2-D (n_signals, n_features), got shape {xa.shape}")
    check_ndim(da, "D", 2, "(n_atoms, n_features)")
    if xa.dtype != da.dtype:
        raise DTypeError(
            f"X is {xa.dtype} but D is {da.dtype}; convert one of them explicitly (sparsecore never changes "
            "the precision of your data)"
        )
    if xa.shape[1] != da.shape[1]:
        raise ShapeMismatchError(
            f"X has {xa.shape[1]} features per signal but D's atoms have {da.shape[1]} "
            "(X is (n_signals, n_features), D is (n_atoms, n_features))"
        )
    keep = None
    if normalize:
        bad = np.argwhere(~np.isfinite(da))
        if bad.size:
            r, c = (int(v) for v in bad[0])
            raise InvalidArgumentError(f"D: D[{r}, {c}] = {da[r, c]} is not finite")
        norms = np.sqrt(np.einsum("ij,ij->i", da, da))
        nz = norms > 0
        if not nz.all():
            keep = np.flatnonzero(nz)
            da = da[keep]
            norms = norms[keep]
        da = da / norms[:, None].astype(da.dtype)
    return _Prepared(np.ascontiguousarray(xa), np.ascontiguousarray(da), keep, one)


def _output(raw: Any, prep: _Prepared, n_atoms_user: int, output: Output) -> NDArray[Any] | SparseBatch | Any:
    """Codes in the requested form, atom ids mapped back when zero atoms were dropped by ``normalize``."""
    if output == "dense":
        dense = np.asarray(raw)
        if prep.keep is not None:
            full = np.zeros((dense.shape[0], n_atoms_user), dtype=dense.dtype)
            full[:, prep.keep] = dense
            dense = full
        return dense[0] if prep.one_signal else dense
    indptr, indices, data, _ = raw
    if prep.keep is not None:
        indices = prep.keep[indices].astype(np.uint32)
    if output == "sparse":
        return SparseBatch._trusted(indptr, indices, np.asarray(data, dtype=np.float32), n_atoms_user)
    from sparsecore._optional import require

    sp = require("scipy.sparse")
    return sp.csr_matrix((data, indices.astype(np.int64), indptr), shape=(len(indptr) - 1, n_atoms_user))


def _check_output(output: object) -> Output:
    return check_choice(output, "output", ("dense", "sparse", "csr"))


def _gram_arg(gram: ArrayLike | None, prep: _Prepared) -> NDArray[Any] | None:
    if gram is None:
        return None
    if prep.keep is not None:
        raise InvalidArgumentError("gram: cannot be combined with normalize=True when D has zero atoms")
    g = np.asarray(gram)
    n = prep.d.shape[0]
    if g.shape != (n, n):
        raise ShapeMismatchError(f"gram: must be D @ D.T of shape ({n}, {n}), got shape {g.shape}")
    if g.dtype != prep.dtype:
        raise DTypeError(f"gram: must have X's dtype {prep.dtype}, got {g.dtype}")
    return np.ascontiguousarray(g)


def _k_default(k: int | None, tol: float | None, n_features: int, n_atoms: int) -> int:
    if k is None:
        # scikit-learn's default (10% of the features) without a tolerance; with one, allow every atom.
        return min(n_atoms, max(int(0.1 * n_features), 1)) if tol is None else min(n_atoms, n_features)
    kk = positive_int(k, "k")
    if kk > n_atoms:
        raise InvalidArgumentError(f"k: is {kk} but the dictionary has only {n_atoms} atoms")
    return kk


def _tol(tol: float | None) -> float | None:
    if tol is None:
        return None
    return nonnegative_float(tol, "tol")


def _greedy(
    method: str,
    X: ArrayLike,
    D: ArrayLike,
    k: int | None,
    tol: float | None,
    gram: ArrayLike | None,
    nonneg: bool,
    normalize: bool,
    output: Output,
    num_threads: int | None,
) -> Any:
    out = _check_output(output)
    n_atoms_user = int(np.shape(D)[0]) if np.ndim(D) == 2 else 0
    prep = _prepare(X, D, normalize)
    kk = _k_default(k, tol, prep.d.shape[1], prep.d.shape[0])
    raw = _core.pursuit_greedy(
        method,
        prep.x,
        prep.d,
        kk,
        _tol(tol),
        _gram_arg(gram, prep),
        bool(nonneg),
        out == "dense",
        num_threads=check_num_threads(num_threads),
    )
    return _output(raw, prep, n_atoms_user, out)


_COMMON_DOC = """
    Parameters
    ----------
    X
        Signals ``(n_signals, n_features)`` (or one signal, 1-D), float32 or float64.
    D
        Dictionary ``(n_atoms, n_features)``, same dtype as ``X``; atoms must have non-zero norm.
    {k_doc}
    tol
        Stop once the squared residual norm ``||x - Dᵀz||²`` is at most ``tol``.
    gram
        Precomputed ``D @ D.T`` to reuse across calls (checked: shape, finite, symmetric, diagonal equal to the
        atoms' squared norms); with ``normalize=True`` it must be the Gram matrix of the normalised atoms.
    nonneg
        Only non-negative coefficients.
    normalize
        Scale atoms to unit norm first (zero atoms are then skipped); codes refer to the scaled atoms.
    output
        ``"dense"`` (array of ``X``'s dtype), ``"sparse"`` (:class:`~sparsecore.SparseBatch`, float32 values)
        or ``"csr"`` (``scipy.sparse.csr_matrix`` of ``X``'s dtype). A dense array's memory is reused by a later
        dense output once the array and all its views are freed (see :func:`release_cached_outputs`).
    num_threads
        Worker threads (signals run in parallel; results do not depend on it).

    Returns
    -------
    numpy.ndarray | SparseBatch | scipy.sparse.csr_matrix
        Codes ``(n_signals, n_atoms)``.

    Raises
    ------
    ShapeMismatchError
        ``X`` and ``D`` disagree in ``n_features``.
    DTypeError
        ``X`` and ``D`` have different float dtypes, or a non-numeric dtype.
    InvalidArgumentError
        Non-finite input, a zero-norm atom (without ``normalize``), ``k`` outside ``1..n_atoms``, bad ``tol``,
        a ``gram`` that is not ``D @ D.T`` (non-finite, asymmetric, or a diagonal that differs from the norms).
"""


def release_cached_outputs() -> int:
    """Free the memory kept for reuse from dense outputs that have been freed; return its size in bytes.

    A large array written for the first time costs a page fault per 4 KiB page (about 15 ms for the 40 MB output
    of 10,000 signals over 1,024 atoms on a virtual machine, against 6 ms to rewrite memory in use), so when a
    dense output of at least 1 MiB is freed (the array and every view of it), its buffer is kept and a later
    dense output of the same or a somewhat smaller size is written into it. At most 4 buffers and 256 MiB are
    kept, the most recently freed first. Call this to hand that memory back to the system, e.g. after the last
    batch of a loop.

    Returns
    -------
    int
        Bytes released (0 when nothing was kept).
    """
    return int(_core.recycle_release())


def omp(
    X: ArrayLike,
    D: ArrayLike,
    *,
    k: int | None = None,
    tol: float | None = None,
    gram: ArrayLike | None = None,
    nonneg: bool = False,
    normalize: bool = False,
    output: Output = "dense",
    num_threads: int | None = None,
) -> Any:
    """Orthogonal matching pursuit: at most ``k`` atoms per signal, coefficients re-fit by least squares.

    Same support and coefficients as ``sklearn.linear_model.orthogonal_mp_gram`` (``n_nonzero_coefs=k``,
    ``tol`` the squared residual norm). With ``nonneg`` the coefficients solve a non-negative least squares on
    the support: free while the least-squares solution stays non-negative, an active-set solve of cost
    ``O(k³)`` per step once it does not, so keep ``k`` moderate (tens of atoms) for non-negative codes.
    """
    return _greedy("omp", X, D, k, tol, gram, nonneg, normalize, output, num_threads)


def mp(
    X: ArrayLike,
    D: ArrayLike,
    *,
    k: int | None = None,
    tol: float | None = None,
    gram: ArrayLike | None = None,
    nonneg: bool = False,
    normalize: bool = False,
    output: Output = "dense",
    num_threads: int | None = None,
) -> Any:
    """Matching pursuit: ``k`` steps, each adding ``<r, d_j> / ||d_j||²`` to the most correlated atom ``j``.

    An atom can be chosen more than once, so a code has at most ``k`` non-zeros. The residual never grows; with
    an orthonormal dictionary and ``k = n_atoms`` the code is the projection ``D x``.
    """
    return _greedy("mp", X, D, k, tol, gram, nonneg, normalize, output, num_threads)


def gradient_pursuit(
    X: ArrayLike,
    D: ArrayLike,
    *,
    k: int | None = None,
    tol: float | None = None,
    gram: ArrayLike | None = None,
    nonneg: bool = False,
    normalize: bool = False,
    output: Output = "dense",
    num_threads: int | None = None,
) -> Any:
    """Gradient pursuit: ``k`` steps along the residual's correlations restricted to the support.

    Each step adds the most correlated atom and moves every selected coefficient with the exact line-search
    step (cheaper than OMP's re-fit, Blumensath & Davies 2008).
    """
    return _greedy("gp", X, D, k, tol, gram, nonneg, normalize, output, num_threads)


_K_DOCS = {
    omp: "k\n        Maximum number of atoms per signal (default: 10% of ``n_features``, or all with ``tol``).",
    mp: "k\n        Number of steps (default: 10% of ``n_features``, or ``min(n_atoms, n_features)`` with ``tol``).",
    gradient_pursuit: "k\n        Number of steps (default as for :func:`mp`).",
}
for _fn, _kd in _K_DOCS.items():
    _fn.__doc__ = (_fn.__doc__ or "") + "\n" + _COMMON_DOC.format(k_doc=_kd)


def lasso(
    X: ArrayLike,
    D: ArrayLike,
    *,
    alpha: float,
    method: LassoMethod = "fista",
    max_iter: int = 1000,
    tol: float = 1e-4,
    gram: ArrayLike | None = None,
    nonneg: bool = False,
    normalize: bool = False,
    output: Output = "dense",
    num_threads: int | None = None,
    return_n_iter: bool = False,
) -> Any:
    """Lasso codes: minimise ``1/(2 n_features) ||x - Dᵀz||² + alpha ||z||₁`` for every signal.

    The objective is scikit-learn's ``Lasso(alpha, fit_intercept=False).fit(D.T, x)``.

    Parameters
    ----------
    X, D
        Signals and dictionary, as for :func:`omp`.
    alpha
        Regularisation strength, ``> 0``.
    method
        ``"fista"`` (the default: accelerated proximal gradient on a working set of atoms that grows until the
        duality gap over all atoms meets ``tol``; about 1.8x faster than coordinate descent to the same objective
        in ``benches/bench_pursuit.py``), ``"ista"`` (the same without momentum) or ``"cd"`` (cyclic coordinate
        descent with covariance updates, scikit-learn's algorithm).
    max_iter
        Iteration cap per signal (sweeps for ``"cd"``).
    tol
        Stop when the duality gap of the objective above is at most ``tol · ||x||² / (2 n_features)``: twice as
        strict as scikit-learn's ``Lasso`` at the same ``tol`` (its coordinate descent stops at
        ``tol · ||x||² / n_features``).
    gram, nonneg, normalize, output, num_threads
        As for :func:`omp`.
    return_n_iter
        Also return ``(n_iter_max, n_not_converged)``: the largest iteration count over the signals and how many
        signals hit ``max_iter``. Without it, signals that hit ``max_iter`` raise a
        :class:`~sparsecore.exceptions.ConvergenceWarning`.

    Returns
    -------
    codes, or (codes, (n_iter_max, n_not_converged))
    """
    out = _check_output(output)
    a = positive_float(alpha, "alpha")
    check_choice(method, "method", ("fista", "ista", "cd"))
    iters = positive_int(max_iter, "max_iter")
    t = positive_float(tol, "tol")
    n_atoms_user = int(np.shape(D)[0]) if np.ndim(D) == 2 else 0
    prep = _prepare(X, D, normalize)
    raw, n_iter, n_bad = _core.pursuit_lasso(
        prep.x,
        prep.d,
        a,
        method,
        iters,
        t,
        _gram_arg(gram, prep),
        bool(nonneg),
        out == "dense",
        num_threads=check_num_threads(num_threads),
    )
    codes = _output(raw, prep, n_atoms_user, out)
    if return_n_iter:
        return codes, (int(n_iter), int(n_bad))
    if n_bad:
        warnings.warn(
            f"lasso: {n_bad} of {prep.x.shape[0]} signals reached max_iter={max_iter} with the duality gap above "
            f"tol={t:g}; their codes are not optimal (raise max_iter or tol, or pass return_n_iter=True)",
            ConvergenceWarning,
            stacklevel=2,
        )
    return codes


def threshold(
    X: ArrayLike,
    D: ArrayLike,
    *,
    alpha: float,
    nonneg: bool = False,
    normalize: bool = False,
    output: Output = "dense",
    num_threads: int | None = None,
) -> Any:
    """Thresholding encoder: ``sign(D x) · max(|D x| - alpha, 0)`` (scikit-learn ``SparseCoder`` "threshold").

    Parameters
    ----------
    X, D, nonneg, normalize, output, num_threads
        As for :func:`omp`.
    alpha
        Threshold, ``>= 0``.
    """
    out = _check_output(output)
    a = nonnegative_float(alpha, "alpha")
    n_atoms_user = int(np.shape(D)[0]) if np.ndim(D) == 2 else 0
    prep = _prepare(X, D, normalize)
    raw = _core.pursuit_threshold(
        prep.x, prep.d, a, bool(nonneg), out == "dense", num_threads=check_num_threads(num_threads)
    )
    return _output(raw, prep, n_atoms_user, out)
