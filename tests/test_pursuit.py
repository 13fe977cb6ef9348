"""Sparse coding (``sparsecore.pursuit``) against independent oracles.

OMP is compared with scikit-learn's ``orthogonal_mp_gram``, the Lasso with scikit-learn's ``Lasso`` and its
KKT conditions, non-negative OMP with ``scipy.optimize.nnls``; MP, gradient pursuit and thresholding with
naive numpy implementations written here that work on the residual in feature space (the library works in
"Gram form" on correlations, so the two share no arithmetic). Layout: ``X`` is ``(n_signals, n_features)``,
``D`` is ``(n_atoms, n_features)``, codes ``Z`` are ``(n_signals, n_atoms)`` and ``X ≈ Z @ D``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import partial
from typing import Any

import numpy as np
import pytest
import scipy.linalg
import scipy.optimize
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.typing import NDArray
from sklearn.linear_model import Lasso, orthogonal_mp_gram
from sparsecore import SparseBatch, _core
from sparsecore.exceptions import (
    ConvergenceWarning,
    DTypeError,
    InvalidArgumentError,
    NonFiniteError,
    ShapeMismatchError,
)
from sparsecore.pursuit import (
    LassoMethod,
    gradient_pursuit,
    lasso,
    mp,
    omp,
    release_cached_outputs,
    threshold,
)

Arr = NDArray[Any]
F64 = NDArray[np.float64]
Greedy = Callable[..., Any]

GREEDY: dict[str, Greedy] = {"omp": omp, "mp": mp, "gp": gradient_pursuit}
LASSO_METHODS: tuple[LassoMethod, ...] = ("fista", "ista", "cd")
THREADS = (1, 2, 3)

# ---------------------------------------------------------------------------------------------------------------
# Problem generators and numpy oracles
# ---------------------------------------------------------------------------------------------------------------


def unit_dict(rng: np.random.Generator, n_atoms: int, n_features: int) -> F64:
    """Gaussian atoms scaled to unit norm."""
    d = rng.standard_normal((n_atoms, n_features))
    out: F64 = d / np.linalg.norm(d, axis=1, keepdims=True)
    return out


def scaled_dict(rng: np.random.Generator, n_atoms: int, n_features: int) -> F64:
    """Gaussian atoms with norms in [0.5, 2] (exercises the division by ``||d_j||²``)."""
    out: F64 = unit_dict(rng, n_atoms, n_features) * rng.uniform(0.5, 2.0, size=(n_atoms, 1))
    return out


def sq_residual(x: Arr, d: Arr, z: Arr) -> F64:
    """Squared residual norm of every row, ``||x - z D||²``, in float64."""
    r = np.atleast_2d(np.asarray(x, np.float64)) - np.atleast_2d(np.asarray(z, np.float64)) @ np.asarray(d, np.float64)
    return np.asarray(np.einsum("ij,ij->i", r, r), dtype=np.float64)


def sklearn_omp(x: F64, d: F64, *, k: int | None = None, tol: float | None = None) -> F64:
    """``orthogonal_mp_gram`` codes, ``(n_signals, n_atoms)``."""
    gram = d @ d.T
    xy = (x @ d.T).T
    if tol is None:
        coef = orthogonal_mp_gram(Gram=gram, Xy=xy, n_nonzero_coefs=k)
    else:
        coef = orthogonal_mp_gram(Gram=gram, Xy=xy, tol=tol, norms_squared=np.einsum("ij,ij->i", x, x))
    out: F64 = np.asarray(coef, dtype=np.float64).reshape(d.shape[0], x.shape[0]).T
    return out


def naive_mp(x: F64, d: F64, k: int, tol: float | None = None) -> F64:
    """Matching pursuit on the explicit residual: ``k`` steps, atom ``argmax |D r|`` (first on ties)."""
    z = np.zeros((x.shape[0], d.shape[0]))
    norms_sq = np.einsum("ij,ij->i", d, d)
    for i, xi in enumerate(x):
        r = xi.copy()
        for _ in range(k):
            if tol is not None and r @ r <= tol:
                break
            corr = d @ r
            j = int(np.argmax(np.abs(corr)))
            if corr[j] == 0:
                break
            a = corr[j] / norms_sq[j]
            z[i, j] += a
            r = r - a * d[j]
    return z


def naive_gp(x: F64, d: F64, k: int, tol: float | None = None) -> F64:
    """Gradient pursuit (Blumensath & Davies 2008) on the explicit residual.

    Each step adds ``argmax |D r|`` to the support, takes the direction ``g = (D r)[support]`` and the exact
    line-search step ``gᵀg / ||D[support]ᵀ g||²``.
    """
    z = np.zeros((x.shape[0], d.shape[0]))
    for i, xi in enumerate(x):
        r = xi.copy()
        support: list[int] = []
        for _ in range(k):
            if tol is not None and r @ r <= tol:
                break
            corr = d @ r
            j = int(np.argmax(np.abs(corr)))
            if corr[j] == 0:
                break
            if j not in support:
                support.append(j)
            g = corr[support]
            dg = d[support].T @ g
            step = (g @ g) / (dg @ dg)
            z[i, support] += step * g
            r = r - step * dg
    return z


def soft(c: F64, alpha: float, nonneg: bool) -> F64:
    if nonneg:
        return np.maximum(c - alpha, 0.0)
    return np.asarray(np.sign(c) * np.maximum(np.abs(c) - alpha, 0.0), dtype=np.float64)


def lasso_objective(x: F64, d: F64, z: F64, alpha: float) -> F64:
    """scikit-learn's ``1/(2 n_features) ||x - Dᵀz||² + alpha ||z||₁`` of every row."""
    return np.asarray(sq_residual(x, d, z) / (2 * d.shape[1]) + alpha * np.abs(z).sum(axis=1), dtype=np.float64)


def lasso_problem(seed: int, n_signals: int = 5, n_atoms: int = 30, n_features: int = 20) -> tuple[F64, F64]:
    """Unit-norm Gaussian dictionary and signals made of 4 atoms plus a little noise."""
    rng = np.random.default_rng(seed)
    d = unit_dict(rng, n_atoms, n_features)
    z = np.zeros((n_signals, n_atoms))
    for i in range(n_signals):
        z[i, rng.choice(n_atoms, 4, replace=False)] = rng.standard_normal(4) + np.sign(rng.standard_normal(4))
    x = z @ d + 0.05 * rng.standard_normal((n_signals, n_features))
    return x, d


def alpha_max(x: F64, d: F64, nonneg: bool) -> F64:
    """Per-signal smallest ``alpha`` with an all-zero Lasso code: ``||D x||_∞ / n_features``."""
    c = x @ d.T
    m = c.max(axis=1) if nonneg else np.abs(c).max(axis=1)
    return np.asarray(np.maximum(m, 0.0) / d.shape[1], dtype=np.float64)


def sparse_noiseless(n_signals: int, seed: int = 3) -> tuple[F64, F64, F64]:
    """3-sparse noiseless signals over 80 unit Gaussian atoms in R^40: ``(x, d, z)`` with ``x = z @ d``.

    Coefficients have magnitudes in [1, 2] and random signs; OMP with ``k = 3`` recovers every one of them.
    """
    rng = np.random.default_rng(seed)
    d = unit_dict(rng, 80, 40)
    z = np.zeros((n_signals, 80))
    for i in range(n_signals):
        z[i, rng.choice(80, 3, replace=False)] = rng.uniform(1.0, 2.0, 3) * rng.choice([-1.0, 1.0], 3)
    return z @ d, d, z


def exact_gram_dict(rng: np.random.Generator, n_atoms: int) -> F64:
    """Atoms with entries ±1/4 in R^16: every entry of ``D @ D.T`` is a multiple of 1/16, so any summation order
    gives the same bits and a precomputed Gram matrix equals the library's own exactly."""
    out: F64 = rng.choice([-0.25, 0.25], size=(n_atoms, 16))
    return out


# ---------------------------------------------------------------------------------------------------------------
# Hypothesis strategies
# ---------------------------------------------------------------------------------------------------------------

seeds = st.integers(0, 2**32 - 1)


@st.composite
def omp_problems(draw: st.DrawFn) -> tuple[F64, F64, int]:
    """Well-conditioned random problems: unit Gaussian atoms, ``n_atoms ≤ 2 n_features``, ``k ≤ n_features/2``."""
    n_features = draw(st.integers(4, 24))
    n_atoms = draw(st.integers(2, 2 * n_features))
    k = draw(st.integers(1, min(n_features // 2, n_atoms)))
    n_signals = draw(st.integers(1, 6))
    rng = np.random.default_rng(draw(seeds))
    return rng.standard_normal((n_signals, n_features)), unit_dict(rng, n_atoms, n_features), k


@st.composite
def step_problems(draw: st.DrawFn) -> tuple[F64, F64, int]:
    """Problems for MP / GP: atoms of unequal norms, up to ``2 n_features`` atoms and ``k ≤ n_atoms`` steps."""
    n_features = draw(st.integers(2, 16))
    n_atoms = draw(st.integers(1, 2 * n_features))
    k = draw(st.integers(1, n_atoms))  # k is capped at n_atoms for every greedy method
    n_signals = draw(st.integers(1, 5))
    rng = np.random.default_rng(draw(seeds))
    return rng.standard_normal((n_signals, n_features)), scaled_dict(rng, n_atoms, n_features), k


# ---------------------------------------------------------------------------------------------------------------
# Every encoder with fixed parameters: ``encode(X, D, **options)``; ids end in ``+`` for ``nonneg=True``
# ---------------------------------------------------------------------------------------------------------------

ENCODERS: list[tuple[str, Callable[..., Any]]] = [
    *[(f"{name}{'+' * nn}", partial(fn, k=3, nonneg=nn)) for name, fn in GREEDY.items() for nn in (False, True)],
    *[
        (f"lasso-{m}{'+' * nn}", partial(lasso, alpha=0.02, method=m, tol=1e-6, max_iter=10_000, nonneg=nn))
        for m in LASSO_METHODS
        for nn in (False, True)
    ],
    *[(f"threshold{'+' * nn}", partial(threshold, alpha=0.3, nonneg=nn)) for nn in (False, True)],
]
ENCODER_IDS = [name for name, _ in ENCODERS]
ENCODER_FNS = [fn for _, fn in ENCODERS]
GREEDY_ENCODERS = [(name, fn) for name, fn in ENCODERS if name.rstrip("+") in GREEDY]


# ---------------------------------------------------------------------------------------------------------------
# OMP
# ---------------------------------------------------------------------------------------------------------------


def assert_same_codes(got: F64, want: F64, rtol: float = 1e-6) -> None:
    """Same support row by row, and coefficients within ``rtol`` of the row's largest coefficient."""
    assert got.shape == want.shape
    for i, (g, w) in enumerate(zip(got, want, strict=True)):
        np.testing.assert_array_equal(np.flatnonzero(g), np.flatnonzero(w), err_msg=f"support of signal {i}")
        scale = max(float(np.abs(w).max(initial=0.0)), 1e-300)
        np.testing.assert_allclose(g, w, rtol=rtol, atol=rtol * scale, err_msg=f"coefficients of signal {i}")


@given(omp_problems())
def test_omp_matches_sklearn_orthogonal_mp_gram(problem: tuple[F64, F64, int]) -> None:
    x, d, k = problem
    got = omp(x, d, k=k)
    assert got.dtype == np.float64
    assert got.shape == (x.shape[0], d.shape[0])
    assert_same_codes(got, sklearn_omp(x, d, k=k))
    assert (np.count_nonzero(got, axis=1) == k).all()


@given(omp_problems(), st.floats(0.05, 0.9))
def test_omp_with_tol_matches_sklearn(problem: tuple[F64, F64, int], frac: float) -> None:
    x, d, _ = problem
    if d.shape[0] < d.shape[1]:  # sklearn would run out of atoms before reaching a small tolerance
        d = np.vstack([d, np.eye(d.shape[1])])
    norms = np.einsum("ij,ij->i", x, x)
    tol = frac * float(norms.min())  # every signal needs at least one atom, as sklearn always takes one
    got = omp(x, d, tol=tol)
    assert_same_codes(got, sklearn_omp(x, d, tol=tol))
    assert (sq_residual(x, d, got) <= tol * (1 + 1e-9)).all()


def test_omp_tol_and_k_stop_at_whichever_comes_first() -> None:
    rng = np.random.default_rng(1)
    d = unit_dict(rng, 40, 20)
    # half the signals are 2 atoms plus a little noise (reach tol within 3 atoms), half are dense
    z = np.zeros((15, 40))
    for i in range(15):
        z[i, rng.choice(40, 2, replace=False)] = rng.uniform(1.0, 2.0, 2)
    x = np.vstack([z @ d + 0.02 * rng.standard_normal((15, 20)), rng.standard_normal((15, 20))])
    tol = 0.5
    free = omp(x, d, tol=tol)
    capped = omp(x, d, tol=tol, k=3)
    for i in range(x.shape[0]):
        n_free = np.count_nonzero(free[i])
        if n_free <= 3:
            np.testing.assert_array_equal(capped[i], free[i])
        else:
            np.testing.assert_allclose(capped[i], omp(x[i], d, k=3), rtol=1e-12, atol=1e-14)
    assert (np.count_nonzero(free, axis=1) > 3).any()
    assert (np.count_nonzero(free, axis=1) <= 3).any()


def test_omp_tol_zero_signal_and_small_residual_need_no_atom() -> None:
    rng = np.random.default_rng(2)
    d = unit_dict(rng, 12, 6)
    x = np.vstack([np.zeros(6), 0.01 * rng.standard_normal(6), rng.standard_normal(6)])
    got = omp(x, d, tol=0.01)
    assert np.count_nonzero(got[0]) == 0
    assert np.count_nonzero(got[1]) == 0  # ||x||² ≈ 6e-4 is already below tol
    assert np.count_nonzero(got[2]) >= 1
    assert (sq_residual(x, d, got) <= 0.01).all()
    # the zero signal without a tolerance has the zero code too
    np.testing.assert_array_equal(omp(np.zeros((2, 6)), d, k=3), np.zeros((2, 12)))


@given(st.integers(1, 4), seeds)
def test_omp_recovers_sparse_signals_exactly_with_low_coherence(k: int, seed: int) -> None:
    # Identity union Hadamard/8 in R^64 has coherence 1/8, so OMP provably recovers every k-sparse signal with
    # k < (1 + 8) / 2 (Tropp 2004): k <= 4.
    n = 64
    d = np.vstack([np.eye(n), scipy.linalg.hadamard(n) / np.sqrt(n)])
    rng = np.random.default_rng(seed)
    z = np.zeros((6, 2 * n))
    for i in range(6):
        z[i, rng.choice(2 * n, k, replace=False)] = rng.uniform(0.5, 2.0, k) * rng.choice([-1.0, 1.0], k)
    x = z @ d
    got = omp(x, d, k=k)
    for i in range(6):
        np.testing.assert_array_equal(np.flatnonzero(got[i]), np.flatnonzero(z[i]))
    np.testing.assert_allclose(got, z, rtol=0, atol=1e-10)
    np.testing.assert_allclose(sq_residual(x, d, got), 0.0, atol=1e-18)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_omp_with_more_atoms_than_features_fits_exactly(dtype: type[np.floating[Any]]) -> None:
    rng = np.random.default_rng(30)
    d = unit_dict(rng, 24, 12)
    x = rng.standard_normal((200, 12))
    eps = 1e-20 if dtype == np.float64 else 1e-10
    # (float32 with tol=0.0 stops early: see test_omp_float32_tol_stops_at_the_true_residual)
    for kw in ({"k": 24}, {"k": 12}, {"tol": 0.0}) if dtype == np.float64 else ({"k": 24}, {"k": 12}):
        z = omp(x.astype(dtype), d.astype(dtype), **kw)
        assert (sq_residual(x, d, z) <= eps * np.einsum("ij,ij->i", x, x)).all()
    assert (np.count_nonzero(omp(x, d, tol=0.0), axis=1) <= 12).all()  # tol alone allows min(n_atoms, n_features)


def test_omp_stops_when_the_residual_vanishes() -> None:
    x, d, z = sparse_noiseless(20)
    got = omp(x, d, k=6)
    np.testing.assert_allclose(got, z, rtol=0, atol=1e-12)  # the values are right...
    np.testing.assert_array_equal(np.count_nonzero(got, axis=1), 3)  # ...and no atom is fit to rounding noise


def test_omp_float32_agrees_with_float64() -> None:
    rng = np.random.default_rng(5)
    d = unit_dict(rng, 60, 30)
    x = rng.standard_normal((200, 30))
    z64 = omp(x, d, k=5)
    z32 = omp(x.astype(np.float32), d.astype(np.float32), k=5)
    assert z32.dtype == np.float32
    assert z32.shape == z64.shape
    same = np.array([np.array_equal(np.flatnonzero(a), np.flatnonzero(b)) for a, b in zip(z32, z64, strict=True)])
    assert same.mean() >= 0.95  # a near-tie in the correlations may go the other way in float32
    np.testing.assert_allclose(z32[same], z64[same], rtol=0, atol=1e-3)
    r32 = sq_residual(x[same], d, z32[same])
    np.testing.assert_allclose(r32, sq_residual(x[same], d, z64[same]), rtol=1e-3, atol=1e-5)


@pytest.mark.parametrize("tol", [1e-6, 1e-7], ids=["early", "late"])
def test_omp_float32_tol_stops_at_the_true_residual(tol: float) -> None:
    # The true residual after the 3 right atoms is ~(eps ||x||)², far below tol; a running float32
    # ||x||² - Σ v² is only accurate to ~eps ||x||² ≈ 1e-6, so it must not decide on its own. "early": a tol the
    # running difference can reach; "late": one below its accuracy, where only the vanishing correlation stops.
    x, d, z = sparse_noiseless(50)
    x32, d32 = x.astype(np.float32), d.astype(np.float32)
    got = omp(x32, d32, tol=tol)
    np.testing.assert_array_equal(np.count_nonzero(got, axis=1), 3)
    for i in range(x.shape[0]):
        np.testing.assert_array_equal(np.flatnonzero(got[i]), np.flatnonzero(z[i]))
    np.testing.assert_allclose(got, z, rtol=0, atol=1e-5)
    np.testing.assert_array_equal(got, omp(x32, d32, k=3))
    assert (sq_residual(x32, d32, got) <= tol).all()
    # float64 stops at the same 3 atoms
    np.testing.assert_array_equal(np.count_nonzero(omp(x, d, tol=tol), axis=1), 3)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_omp_never_selects_more_atoms_than_features(dtype: type[np.floating[Any]]) -> None:
    # After n_features atoms the residual is rounding noise: a further atom would only be fit to that noise.
    rng = np.random.default_rng(30)
    d = unit_dict(rng, 24, 12).astype(dtype)
    x = rng.standard_normal((200, 12)).astype(dtype)
    full = omp(x, d, k=24)
    assert full.dtype == dtype
    assert (np.count_nonzero(full, axis=1) <= 12).all()
    np.testing.assert_array_equal(full, omp(x, d, k=12))


def test_first_atom_wins_ties() -> None:
    eye = np.eye(4)
    x = np.array([[1.0, 1.0, 0.0, 0.0], [0.0, -2.0, 2.0, 0.0], [0.0, 0.0, 0.0, 3.0]])
    # atom 4 duplicates atom 3: on the tie, atom 3 (the first) is chosen
    d = np.vstack([eye, eye[3]])
    for name, fn in GREEDY.items():
        got = fn(x, d, k=1)
        want = np.zeros((3, 5))
        want[0, 0], want[1, 1], want[2, 3] = 1.0, -2.0, 3.0
        np.testing.assert_array_equal(got, want, err_msg=name)
        np.testing.assert_array_equal(got, naive_mp(x, d, 1), err_msg=name)
        # nonneg: the positive one of the two equal magnitudes
        pos = fn(x[1:2], d, k=1, nonneg=True)
        np.testing.assert_array_equal(pos, [[0.0, 0.0, 2.0, 0.0, 0.0]], err_msg=name)
    # OMP never takes the duplicate: it is in the span of the support
    np.testing.assert_array_equal(np.flatnonzero(omp(x[2], d, k=2)), [3])


# ---------------------------------------------------------------------------------------------------------------
# Non-negative OMP and the residual along k
# ---------------------------------------------------------------------------------------------------------------


def test_nonneg_omp_is_nnls_on_its_support_and_residual_never_grows() -> None:
    rng = np.random.default_rng(6)
    d = unit_dict(rng, 60, 20)
    x = rng.standard_normal((20, 20))
    prev = np.full(x.shape[0], np.inf)
    for k in range(1, 16):
        z = omp(x, d, k=k, nonneg=True)
        assert (z >= 0).all()
        assert (np.count_nonzero(z, axis=1) <= k).all()
        for i in range(x.shape[0]):
            s = np.flatnonzero(z[i])
            assert s.size >= 1  # a Gaussian signal always has a positive correlation
            coef, _ = scipy.optimize.nnls(d[s].T, x[i])
            np.testing.assert_allclose(z[i, s], coef, rtol=0, atol=1e-6, err_msg=f"k={k}, signal {i}")
        res = sq_residual(x, d, z)
        assert (res <= prev * (1 + 1e-12) + 1e-12).all()
        prev = res


def test_nonneg_omp_of_anticorrelated_signal_is_empty() -> None:
    rng = np.random.default_rng(7)
    d = np.abs(unit_dict(rng, 30, 10))  # non-negative atoms ...
    x = -np.abs(rng.standard_normal((5, 10)))  # ... and non-positive signals: every correlation is negative
    assert (x @ d.T < 0).all()
    for name, fn in GREEDY.items():
        for kw in ({"k": 3}, {"tol": 0.0}):
            z = fn(x, d, nonneg=True, **kw)
            np.testing.assert_array_equal(z, 0.0, err_msg=name)
            assert fn(x, d, nonneg=True, output="csr", **kw).nnz == 0
        assert (np.count_nonzero(fn(x, d, k=3), axis=1) >= 1).all()  # the signed codes are not empty
    np.testing.assert_array_equal(threshold(x, d, alpha=0.0, nonneg=True), 0.0)
    for method in LASSO_METHODS:
        np.testing.assert_array_equal(lasso(x, d, alpha=1e-3, method=method, nonneg=True), 0.0)


@given(st.integers(1, 3), seeds)
def test_nonneg_omp_recovers_nonnegative_sparse_signals(k: int, seed: int) -> None:
    # The identity/Hadamard pair of test_omp_recovers_sparse_signals_exactly_with_low_coherence (coherence 1/8)
    # with positive coefficients: the largest correlation is positive and on the support at every step.
    n = 64
    d = np.vstack([np.eye(n), scipy.linalg.hadamard(n) / np.sqrt(n)])
    rng = np.random.default_rng(seed)
    z = np.zeros((6, 2 * n))
    for i in range(6):
        z[i, rng.choice(2 * n, k, replace=False)] = rng.uniform(0.5, 2.0, k)
    x = z @ d
    got = omp(x, d, k=k, nonneg=True)
    for i in range(6):
        np.testing.assert_array_equal(np.flatnonzero(got[i]), np.flatnonzero(z[i]))
    np.testing.assert_allclose(got, z, rtol=0, atol=1e-10)
    np.testing.assert_allclose(omp(x, d, k=k), got, rtol=0, atol=1e-10)  # the signed code is the same


@pytest.mark.parametrize("method", list(GREEDY))
@pytest.mark.parametrize("nonneg", [False, True], ids=["signed", "nonneg"])
def test_residual_never_increases_with_k(nonneg: bool, method: str) -> None:
    rng = np.random.default_rng(8)
    d = scaled_dict(rng, 60, 20)
    x = rng.standard_normal((12, 20))
    fn = GREEDY[method]
    prev = np.einsum("ij,ij->i", x, x)
    for k in range(1, 25):
        z = fn(x, d, k=k, nonneg=nonneg)
        if nonneg:
            assert (z >= 0).all()
        assert (np.count_nonzero(z, axis=1) <= k).all()
        res = sq_residual(x, d, z)
        assert (res <= prev * (1 + 1e-12) + 1e-12).all(), f"k={k}"
        prev = res
    assert (prev < 0.5 * np.einsum("ij,ij->i", x, x)).all()  # and it does decrease


# ---------------------------------------------------------------------------------------------------------------
# Matching pursuit and gradient pursuit
# ---------------------------------------------------------------------------------------------------------------

fracs = st.none() | st.floats(0.05, 0.9)


def tol_of(x: F64, frac: float | None) -> float | None:
    """``frac`` of the smallest squared signal norm (every signal then needs at least one step), or None."""
    return None if frac is None else frac * float(np.einsum("ij,ij->i", x, x).min())


@given(step_problems(), fracs)
def test_mp_matches_naive_numpy_mp(problem: tuple[F64, F64, int], frac: float | None) -> None:
    x, d, k = problem
    tol = tol_of(x, frac)
    got = mp(x, d, k=k, tol=tol)
    want = naive_mp(x, d, k, tol)
    assert got.shape == want.shape
    assert (np.count_nonzero(got, axis=1) <= k).all()
    scale = max(float(np.abs(want).max(initial=0.0)), 1.0)
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-9 * scale)


@given(step_problems(), fracs)
def test_gradient_pursuit_matches_naive_numpy_gp(problem: tuple[F64, F64, int], frac: float | None) -> None:
    x, d, k = problem
    tol = tol_of(x, frac)
    got = gradient_pursuit(x, d, k=k, tol=tol)
    want = naive_gp(x, d, k, tol)
    assert (np.count_nonzero(got, axis=1) <= k).all()
    scale = max(float(np.abs(want).max(initial=0.0)), 1.0)
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-9 * scale)


def test_mp_and_gp_with_tol_stop_at_the_tolerance() -> None:
    rng = np.random.default_rng(9)
    d = unit_dict(rng, 60, 20)
    x = rng.standard_normal((12, 20))
    x[::2] *= 0.4  # small signals reach the tolerance within 3 steps, the others need more
    tol = 0.5 * float(np.einsum("ij,ij->i", x, x).min())
    for name, fn in (("mp", mp), ("gp", gradient_pursuit)):
        by_k = [fn(x, d, k=k) for k in range(1, 61)]
        res = np.array([sq_residual(x, d, z) for z in by_k])  # (k, signal)
        assert (res[-1] <= tol).all()
        k_needed = np.argmax(res <= tol, axis=0)  # index into by_k of the first code within tol
        free = fn(x, d, k=60, tol=tol)
        assert (sq_residual(x, d, free) <= tol * (1 + 1e-9)).all()
        capped = fn(x, d, k=3, tol=tol)
        for i in range(x.shape[0]):
            # exactly the steps up to the first one that reaches tol
            np.testing.assert_allclose(free[i], by_k[k_needed[i]][i], rtol=1e-12, atol=1e-14, err_msg=name)
            np.testing.assert_allclose(capped[i], by_k[min(k_needed[i], 2)][i], rtol=1e-12, atol=1e-14, err_msg=name)
        assert (k_needed > 2).any()
        assert (k_needed <= 2).any()


def test_mp_picks_an_atom_repeatedly() -> None:
    # x lies in the plane of atoms 0 and 1, which are 0.3 rad apart; the six other atoms are nearly orthogonal to
    # that plane. MP alternates between atoms 0 and 1 and converges only geometrically (k is capped at n_atoms).
    rng = np.random.default_rng(11)
    others = np.hstack([rng.uniform(-0.1, 0.1, (6, 2)), np.ones((6, 1))])
    d = np.vstack([[1.0, 0.0, 0.0], [np.cos(0.3), np.sin(0.3), 0.0], others / np.linalg.norm(others, axis=1)[:, None]])
    x = np.array([[0.2, 1.0, 0.0]])
    prev = float(x[0] @ x[0])
    for k in range(1, 9):
        z = mp(x, d, k=k)
        np.testing.assert_allclose(z, naive_mp(x, d, k), rtol=1e-12, atol=1e-14)
        np.testing.assert_array_equal(np.flatnonzero(z[0]), [1] if k == 1 else [0, 1])
        res = float(sq_residual(x, d, z)[0])
        assert 0 < res < prev
        prev = res
    # the least-squares fit on both atoms is exact; 8 MP steps are not
    np.testing.assert_allclose(omp(x, d, k=2) @ d, x, rtol=0, atol=1e-12)
    assert prev > 0.1


def test_mp_with_orthonormal_dictionary_gives_the_projection() -> None:
    rng = np.random.default_rng(10)
    q, _ = np.linalg.qr(rng.standard_normal((12, 12)))
    d = q.T  # orthonormal atoms
    x = rng.standard_normal((7, 12))
    proj = x @ d.T
    for name, fn in GREEDY.items():
        got = fn(x, d, k=12)
        np.testing.assert_allclose(got, proj, rtol=0, atol=1e-12, err_msg=name)
        np.testing.assert_allclose(got @ d, x, rtol=0, atol=1e-12, err_msg=name)
        # fewer steps keep the largest projections
        five = fn(x, d, k=5)
        np.testing.assert_allclose(
            five,
            np.where(np.abs(proj) >= np.sort(np.abs(proj))[:, [-5]], proj, 0.0),
            rtol=0,
            atol=1e-12,
            err_msg=name,
        )


# ---------------------------------------------------------------------------------------------------------------
# Lasso
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", LASSO_METHODS)
@pytest.mark.parametrize("nonneg", [False, True], ids=["signed", "nonneg"])
@pytest.mark.parametrize("frac", [0.05, 0.3])
def test_lasso_satisfies_kkt_and_matches_sklearn(frac: float, nonneg: bool, method: LassoMethod) -> None:
    x, d = lasso_problem(11, n_signals=5)
    n_features = d.shape[1]
    alpha = frac * float(alpha_max(x, d, nonneg).min())
    z, (_, n_bad) = lasso(
        x, d, alpha=alpha, method=method, nonneg=nonneg, tol=1e-12, max_iter=100_000, return_n_iter=True
    )
    assert n_bad == 0
    assert (z != 0).any()
    assert (z == 0).any()
    if nonneg:
        assert (z >= 0).all()
    for i, xi in enumerate(x):
        sk = Lasso(alpha=alpha, fit_intercept=False, tol=1e-12, max_iter=100_000, positive=nonneg).fit(d.T, xi)
        want = np.asarray(sk.coef_, dtype=np.float64)
        np.testing.assert_allclose(z[i], want, rtol=0, atol=1e-5, err_msg=f"signal {i}")
        np.testing.assert_allclose(
            lasso_objective(x[i : i + 1], d, z[i : i + 1], alpha),
            lasso_objective(x[i : i + 1], d, want[None], alpha),
            rtol=1e-8,
        )
    # KKT: D(x - Dᵀz)/n_features equals alpha·sign(z) on the support and is at most alpha elsewhere
    g = (x - z @ d) @ d.T / n_features
    on = z != 0
    np.testing.assert_allclose(g[on], alpha * np.sign(z[on]), rtol=0, atol=1e-7 * alpha)
    off = g if nonneg else np.abs(g)
    assert (off[~on] <= alpha * (1 + 1e-7)).all()


@settings(max_examples=30)
@given(
    seeds,
    st.integers(2, 12),
    st.integers(1, 24),
    st.floats(0.05, 1.5),
    st.booleans(),
    st.sampled_from(LASSO_METHODS),
)
def test_lasso_kkt_on_random_problems(
    seed: int, n_features: int, n_atoms: int, frac: float, nonneg: bool, method: LassoMethod
) -> None:
    rng = np.random.default_rng(seed)
    d = scaled_dict(rng, n_atoms, n_features)
    x = rng.standard_normal((3, n_features))
    amax = alpha_max(x, d, nonneg)
    alpha = max(frac * float(amax.max()), 1e-6)
    z, (_, n_bad) = lasso(
        x, d, alpha=alpha, method=method, nonneg=nonneg, tol=1e-12, max_iter=200_000, return_n_iter=True
    )
    assert n_bad == 0
    if nonneg:
        assert (z >= 0).all()
    # rows whose alpha_max is below alpha have the zero code (at alpha == alpha_max, e.g. frac = 1, numpy's and the
    # library's D x may differ in the last bit, and a code of rounding size is as right as zero)
    np.testing.assert_array_equal(z[amax < alpha * (1 - 1e-12)], 0.0)
    g = (x - z @ d) @ d.T / n_features
    on = z != 0
    scale = max(float(amax.max()), alpha)
    assert (np.abs(g - alpha * np.sign(z))[on] <= 1e-5 * scale).all()
    off = g if nonneg else np.abs(g)
    assert (off[~on] <= alpha + 1e-5 * scale).all()


@pytest.mark.parametrize("nonneg", [False, True], ids=["signed", "nonneg"])
def test_lasso_methods_reach_the_same_objective(nonneg: bool) -> None:
    x, d = lasso_problem(12, n_signals=8, n_atoms=40)
    alpha = 0.02
    objs = [
        lasso_objective(x, d, lasso(x, d, alpha=alpha, method=m, nonneg=nonneg, tol=1e-10, max_iter=100_000), alpha)
        for m in LASSO_METHODS
    ]
    for o in objs[1:]:
        np.testing.assert_allclose(o, objs[0], rtol=1e-8)


@pytest.mark.parametrize("method", LASSO_METHODS)
def test_lasso_with_orthonormal_dictionary_is_soft_thresholding(method: LassoMethod) -> None:
    rng = np.random.default_rng(13)
    q, _ = np.linalg.qr(rng.standard_normal((10, 10)))
    x = rng.standard_normal((6, 10))
    alpha = 0.03
    for nonneg in (False, True):
        got = lasso(x, q.T, alpha=alpha, method=method, nonneg=nonneg, tol=1e-12, max_iter=100_000)
        want = soft(x @ q, alpha * 10, nonneg)
        assert (want == 0).any()
        assert (want != 0).any()
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-9)


@pytest.mark.parametrize("method", LASSO_METHODS)
def test_lasso_return_n_iter_reports_convergence(method: LassoMethod) -> None:
    x, d = lasso_problem(14, n_signals=6)
    z, (n_iter, n_bad) = lasso(x, d, alpha=1e-3, method=method, max_iter=2, tol=1e-10, return_n_iter=True)
    assert (n_iter, n_bad) == (2, 6)
    _, (n_iter2, n_bad2) = lasso(x, d, alpha=1e-3, method=method, max_iter=100_000, tol=1e-6, return_n_iter=True)
    assert n_bad2 == 0
    assert 2 < n_iter2 < 100_000
    # a looser tolerance converges in no more iterations
    _, (n_iter3, n_bad3) = lasso(x, d, alpha=1e-3, method=method, max_iter=100_000, tol=1e-2, return_n_iter=True)
    assert n_bad3 == 0
    assert n_iter3 <= n_iter2
    # alpha above alpha_max: every code is zero and no iteration runs
    big = 1.0001 * float(alpha_max(x, d, False).max())
    z3, stats = lasso(x, d, alpha=big, method=method, return_n_iter=True)
    assert stats == (0, 0)
    np.testing.assert_array_equal(z3, np.zeros_like(z3))
    # without return_n_iter the codes alone come back, with a warning naming the unconverged signals
    with pytest.warns(ConvergenceWarning, match=r"6 of 6 signals reached max_iter=2 .* tol=1e-10"):
        np.testing.assert_array_equal(lasso(x, d, alpha=1e-3, method=method, max_iter=2, tol=1e-10), z)


@pytest.mark.parametrize("method", LASSO_METHODS)
def test_lasso_float32_agrees_with_float64(method: LassoMethod) -> None:
    x, d = lasso_problem(15, n_signals=10)
    alpha = 0.02
    z64 = lasso(x, d, alpha=alpha, method=method, tol=1e-10, max_iter=100_000)
    z32 = lasso(x.astype(np.float32), d.astype(np.float32), alpha=alpha, method=method, tol=1e-5, max_iter=100_000)
    assert z32.dtype == np.float32
    o64 = lasso_objective(x, d, z64, alpha)
    o32 = lasso_objective(x, d, z32.astype(np.float64), alpha)
    np.testing.assert_allclose(o32, o64, rtol=1e-4)


@pytest.mark.parametrize("method", LASSO_METHODS)
def test_lasso_given_gram_gives_identical_codes(method: LassoMethod) -> None:
    rng = np.random.default_rng(25)
    d = exact_gram_dict(rng, 40)
    x = rng.standard_normal((30, 16))
    g = d @ d.T
    for dtype in (np.float64, np.float32):
        xs, ds, gs = x.astype(dtype), d.astype(dtype), g.astype(dtype)
        tol = 1e-8 if dtype == np.float64 else 1e-5  # a float32 gap cannot get below ~1e-7 of ||x||²
        for nonneg in (False, True):
            want = lasso(xs, ds, alpha=0.02, method=method, nonneg=nonneg, tol=tol, max_iter=10_000)
            got = lasso(xs, ds, alpha=0.02, method=method, nonneg=nonneg, tol=tol, max_iter=10_000, gram=gs)
            assert got.dtype == dtype
            np.testing.assert_array_equal(got, want)
    # a Gaussian dictionary: a gram from numpy may differ from the library's in the last bits only
    d2 = unit_dict(rng, 40, 16)
    np.testing.assert_allclose(
        lasso(x, d2, alpha=0.02, method=method, tol=1e-10, max_iter=100_000, gram=d2 @ d2.T),
        lasso(x, d2, alpha=0.02, method=method, tol=1e-10, max_iter=100_000),
        rtol=1e-7,
        atol=1e-9,
    )


# ---------------------------------------------------------------------------------------------------------------
# Thresholding
# ---------------------------------------------------------------------------------------------------------------


@given(seeds, st.floats(0.0, 2.0), st.booleans())
def test_threshold_is_soft_thresholded_correlations(seed: int, alpha: float, nonneg: bool) -> None:
    rng = np.random.default_rng(seed)
    d = scaled_dict(rng, 25, 10)
    x = rng.standard_normal((8, 10))
    c = x @ d.T
    want = soft(c, alpha, nonneg)
    got = threshold(x, d, alpha=alpha, nonneg=nonneg)
    near = np.abs(np.abs(c) - alpha) < 1e-9  # entries right at the threshold may go either way
    np.testing.assert_allclose(got[~near], want[~near], rtol=1e-12, atol=1e-12)
    assert (np.abs(got[near]) <= 1e-9).all()
    if nonneg:
        assert (got >= 0).all()


def test_threshold_float32() -> None:
    rng = np.random.default_rng(16)
    d = unit_dict(rng, 25, 10).astype(np.float32)
    x = rng.standard_normal((8, 10)).astype(np.float32)
    got = threshold(x, d, alpha=0.3)
    assert got.dtype == np.float32
    c = x.astype(np.float64) @ d.T.astype(np.float64)
    want = soft(c, 0.3, False)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)


# ---------------------------------------------------------------------------------------------------------------
# normalize
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "encode"), ENCODERS, ids=ENCODER_IDS)
def test_normalize_skips_zero_atoms_and_scales_the_rest(name: str, encode: Callable[..., Any]) -> None:
    rng = np.random.default_rng(17)
    d_unit = unit_dict(rng, 30, 12)
    d = d_unit * rng.uniform(0.3, 3.0, size=(30, 1))
    zero = [4, 17]
    d_with_zero = np.insert(d, [z - i for i, z in enumerate(zero)], 0.0, axis=0)
    assert d_with_zero.shape == (32, 12)
    assert not d_with_zero[zero].any()
    x = rng.standard_normal((9, 12))
    with pytest.raises(InvalidArgumentError, match=r"atom 4 has zero norm"):
        encode(x, d_with_zero)
    got = encode(x, d_with_zero, normalize=True)
    assert got.shape == (9, 32)
    np.testing.assert_array_equal(got[:, zero], 0.0)
    keep = np.setdiff1d(np.arange(32), zero)
    scaled = d_with_zero[keep] / np.linalg.norm(d_with_zero[keep], axis=1, keepdims=True)
    np.testing.assert_allclose(got[:, keep], encode(x, scaled), rtol=1e-9, atol=1e-12)
    # the sparse outputs map atom ids back too
    np.testing.assert_array_equal(encode(x, d_with_zero, normalize=True, output="csr").toarray(), got)
    batch = encode(x, d_with_zero, normalize=True, output="sparse")
    assert batch.shape == (9, 32)
    np.testing.assert_array_equal(batch.to_dense(), got.astype(np.float32))
    if name.startswith("threshold"):
        return  # takes no gram
    # a given gram cannot describe the reduced dictionary
    with pytest.raises(InvalidArgumentError, match=r"^gram"):
        encode(x, d_with_zero, normalize=True, gram=d_with_zero @ d_with_zero.T)


def test_normalize_matches_unit_dictionary() -> None:
    rng = np.random.default_rng(18)
    d = unit_dict(rng, 30, 12)
    x = rng.standard_normal((9, 12))
    np.testing.assert_allclose(omp(x, 5.0 * d, k=4, normalize=True), omp(x, d, k=4), rtol=1e-12, atol=1e-14)


# ---------------------------------------------------------------------------------------------------------------
# Behaviour shared by every encoder: gram, output forms, 1-D signals, dtypes, layouts, threads
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "encode"), GREEDY_ENCODERS, ids=[name for name, _ in GREEDY_ENCODERS])
def test_given_gram_gives_identical_codes(name: str, encode: Callable[..., Any]) -> None:
    rng = np.random.default_rng(26)
    d = exact_gram_dict(rng, 40)
    x = rng.standard_normal((30, 16))
    g = d @ d.T
    for dtype in (np.float64, np.float32):
        xs, ds = x.astype(dtype), d.astype(dtype)
        want = encode(xs, ds)
        for gram in (g.astype(dtype), np.asfortranarray(g.astype(dtype))):
            got = encode(xs, ds, gram=gram)
            assert got.dtype == dtype
            np.testing.assert_array_equal(got, want)
        np.testing.assert_array_equal(encode(xs, ds, gram=g.astype(dtype), tol=0.5), encode(xs, ds, tol=0.5))
    # a Gaussian dictionary: a gram from numpy may differ from the library's in the last bits only
    d2 = unit_dict(rng, 40, 16)
    np.testing.assert_allclose(encode(x, d2, gram=d2 @ d2.T), encode(x, d2), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize(("name", "encode"), ENCODERS, ids=ENCODER_IDS)
def test_sparse_csr_and_dense_outputs_agree(name: str, encode: Callable[..., Any]) -> None:
    rng = np.random.default_rng(27)
    d = unit_dict(rng, 40, 16)
    x = rng.standard_normal((70, 16))  # more than one chunk of 64 signals
    for dtype in (np.float64, np.float32):
        xs, ds = x.astype(dtype), d.astype(dtype)
        dense = encode(xs, ds)
        assert isinstance(dense, np.ndarray)
        assert dense.dtype == dtype
        assert dense.shape == (70, 40)
        assert (dense != 0).any()
        csr = encode(xs, ds, output="csr")
        assert isinstance(csr, sp.csr_matrix)
        assert csr.dtype == dtype
        assert csr.shape == (70, 40)
        assert csr.has_sorted_indices
        assert csr.nnz == np.count_nonzero(dense)  # no explicit zeros
        np.testing.assert_array_equal(csr.toarray(), dense)
        batch = encode(xs, ds, output="sparse")
        assert isinstance(batch, SparseBatch)
        assert batch.shape == (70, 40)
        np.testing.assert_array_equal(batch.to_dense(), dense.astype(np.float32))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dense_output_memory_is_reused_only_once_every_view_is_freed(dtype: type[np.floating[Any]]) -> None:
    rng = np.random.default_rng(40)
    d = unit_dict(rng, 1024, 16).astype(dtype)
    x = rng.standard_normal((300, 16)).astype(dtype)  # codes of 1.2 / 2.4 MB: big enough to be kept
    release_cached_outputs()
    a = omp(x, d, k=4)
    want = omp(x, d, k=4, output="csr").toarray()
    np.testing.assert_array_equal(a, want)
    assert a.flags.writeable
    assert a.flags.c_contiguous
    view = a[::3]
    a[:] = 7.0  # a recycled buffer holds whatever its last user left
    del a
    assert _core.recycle_kept_bytes() == 0  # the view still uses the memory
    b = omp(x, d, k=4)
    assert not np.shares_memory(b, view)
    assert (view == 7.0).all()
    np.testing.assert_array_equal(b, want)
    del view
    assert _core.recycle_kept_bytes() == want.nbytes
    small = omp(x[:100], d, k=4)  # a third of the size: a fresh array, the kept buffer would waste too much
    assert _core.recycle_kept_bytes() == want.nbytes
    np.testing.assert_array_equal(small, want[:100])
    c = omp(x, d, k=4)  # written into the freed memory: every element overwritten
    assert _core.recycle_kept_bytes() == 0
    np.testing.assert_array_equal(c, want)
    del b, c, small  # small is under 1 MiB: not kept
    assert release_cached_outputs() == 2 * want.nbytes
    assert release_cached_outputs() == 0


@settings(max_examples=25, deadline=None)
@given(
    calls=st.lists(
        st.tuples(st.integers(100, 700), st.sampled_from(["float32", "float64"]), st.booleans(), st.booleans()),
        min_size=1,
        max_size=8,
    )
)
def test_dense_outputs_in_recycled_memory_equal_the_csr_codes(calls: list[tuple[int, str, bool, bool]]) -> None:
    # A sequence of calls of mixed sizes and dtypes; each result is dirtied, then kept alive or freed, so later
    # calls get recycled buffers of other sizes (at least 1 MiB each: 1,024 atoms) or fresh ones.
    rng = np.random.default_rng(41)
    d = unit_dict(rng, 1024, 8)
    x = rng.standard_normal((700, 8))
    alive = []
    for n, dtype, use_omp, keep in calls:
        xs, ds = x[:n].astype(dtype), d.astype(dtype)
        enc = partial(omp, k=2) if use_omp else partial(threshold, alpha=0.5)
        got = enc(xs, ds)
        np.testing.assert_array_equal(got, enc(xs, ds, output="csr").toarray())
        got.fill(np.nan)
        if keep:
            alive.append(got)
    assert all(np.isnan(a).all() for a in alive)  # no kept array was handed out again


@pytest.mark.parametrize(("name", "encode"), ENCODERS, ids=ENCODER_IDS)
def test_one_dimensional_signal_gives_one_dimensional_code(name: str, encode: Callable[..., Any]) -> None:
    x, d = err_problem()
    for dtype in (np.float64, np.float32):
        xs, ds = x.astype(dtype), d.astype(dtype)
        one = encode(xs[1], ds)
        assert one.shape == (10,)
        assert one.dtype == dtype
        np.testing.assert_array_equal(one, encode(xs, ds)[1])
        np.testing.assert_array_equal(one, encode(xs[1:2], ds)[0])
    # the sparse forms have one row
    np.testing.assert_array_equal(encode(x[1], d, output="csr").toarray(), encode(x[1:2], d))
    assert encode(x[1], d, output="sparse").shape == (1, 10)


@pytest.mark.parametrize(("name", "encode"), ENCODERS, ids=ENCODER_IDS)
def test_integer_inputs_are_float64(name: str, encode: Callable[..., Any]) -> None:
    rng = np.random.default_rng(28)
    x = rng.integers(-3, 4, size=(5, 6))
    d = rng.integers(-2, 3, size=(10, 6))
    d[~d.any(axis=1), 0] = 1  # no zero atom
    want = encode(x.astype(np.float64), d.astype(np.float64))
    for xi, di in ((x, d), (x.astype(np.int32), d.astype(np.int8))):
        got = encode(xi, di)
        assert got.dtype == np.float64
        np.testing.assert_array_equal(got, want)
    assert (want != 0).any()
    # booleans count as integers too
    mask = d != 0
    np.testing.assert_array_equal(encode(x, mask), encode(x.astype(np.float64), mask.astype(np.float64)))
    # integers combine with float64, never with float32
    np.testing.assert_array_equal(encode(x, d.astype(np.float64)), want)


def test_non_contiguous_inputs() -> None:
    rng = np.random.default_rng(29)
    d = unit_dict(rng, 30, 12)
    x = rng.standard_normal((9, 12))
    wide_x = np.zeros((9, 24))
    wide_x[:, ::2] = x
    wide_d = np.zeros((60, 12))
    wide_d[::2] = d
    layouts = [
        (np.asfortranarray(x), np.asfortranarray(d)),
        (wide_x[:, ::2], wide_d[::2]),  # strided views
        (x.T.copy().T, d[::-1].copy()[::-1]),  # Fortran order, negative strides
    ]
    for xs, ds in layouts:
        assert not (xs.flags.c_contiguous and ds.flags.c_contiguous)
    g = d @ d.T
    for name, encode in ENCODERS:
        want = encode(x, d)
        for xs, ds in layouts:
            np.testing.assert_array_equal(encode(xs, ds), want, err_msg=name)
        np.testing.assert_array_equal(encode(np.asfortranarray(x)[3], d), encode(x[3], d), err_msg=name)
        if not name.startswith("threshold"):
            want_g = encode(x, d, gram=g)
            np.testing.assert_array_equal(encode(x, d, gram=np.asfortranarray(g)), want_g, err_msg=name)
            wide_g = np.zeros((30, 60))
            wide_g[:, ::2] = g
            np.testing.assert_array_equal(encode(x, d, gram=wide_g[:, ::2]), want_g, err_msg=name)


@pytest.mark.parametrize(("name", "encode"), ENCODERS, ids=ENCODER_IDS)
def test_thread_count_does_not_change_the_codes(name: str, encode: Callable[..., Any]) -> None:
    rng = np.random.default_rng(31)
    d = unit_dict(rng, 50, 20)
    x = rng.standard_normal((300, 20))  # four full chunks of 64 signals and a partial one
    for dtype in (np.float64, np.float32):
        xs, ds = x.astype(dtype), d.astype(dtype)
        ref = encode(xs, ds, num_threads=1)
        assert ref.dtype == dtype
        assert (ref != 0).any()
        ref_csr = encode(xs, ds, output="csr", num_threads=1)
        for t in (*THREADS[1:], None):
            got = encode(xs, ds, num_threads=t)
            assert got.tobytes() == ref.tobytes(), f"{dtype.__name__}, num_threads={t}"
            csr = encode(xs, ds, output="csr", num_threads=t)
            for part in ("indptr", "indices", "data"):
                assert getattr(csr, part).tobytes() == getattr(ref_csr, part).tobytes()


# ---------------------------------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------------------------------


def err_problem() -> tuple[F64, F64]:
    rng = np.random.default_rng(19)
    return rng.standard_normal((3, 6)), unit_dict(rng, 10, 6)


@pytest.mark.parametrize("encode", ENCODER_FNS, ids=ENCODER_IDS)
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_input_is_rejected(encode: Callable[..., Any], bad: float) -> None:
    x, d = err_problem()
    xb = x.copy()
    xb[1, 2] = bad
    with pytest.raises(InvalidArgumentError, match=r"^X: X\[1, 2\]"):
        encode(xb, d)
    db = d.copy()
    db[7, 3] = bad
    with pytest.raises(InvalidArgumentError, match=r"^D: D\[7, 3\]"):
        encode(x, db)


def test_non_finite_dictionary_raises_the_same_type_with_normalize() -> None:
    x, d = err_problem()
    d[7, 3] = np.nan
    with pytest.raises(InvalidArgumentError, match=r"dictionary|D"):
        omp(x, d, k=2, normalize=True)


def test_non_finite_dictionary_with_normalize_is_still_rejected() -> None:
    x, d = err_problem()
    d[7, 3] = np.nan
    for encode in ENCODER_FNS:
        with pytest.raises((InvalidArgumentError, NonFiniteError), match=r"^(D|dictionary)"):
            encode(x, d, normalize=True)


@pytest.mark.parametrize("encode", ENCODER_FNS, ids=ENCODER_IDS)
def test_shape_errors(encode: Callable[..., Any]) -> None:
    x, d = err_problem()
    with pytest.raises(ShapeMismatchError, match=r"X has 5 features .* atoms have 6"):
        encode(x[:, :5], d)
    with pytest.raises(ShapeMismatchError, match=r"X has 6 features .* atoms have 5"):
        encode(x, d[:, :5])
    with pytest.raises(ShapeMismatchError, match=r"^X: must be 1-D .* got shape \(1, 3, 6\)"):
        encode(x[None], d)
    with pytest.raises(ShapeMismatchError, match=r"^D: must be 2-D"):
        encode(x, d[0])
    with pytest.raises(ShapeMismatchError, match=r"^D: must be 2-D"):
        encode(x, d[None])


@pytest.mark.parametrize("encode", ENCODER_FNS, ids=ENCODER_IDS)
def test_mixed_and_bad_dtypes(encode: Callable[..., Any]) -> None:
    x, d = err_problem()
    with pytest.raises(DTypeError, match=r"X is float32 but D is float64"):
        encode(x.astype(np.float32), d)
    with pytest.raises(DTypeError, match=r"X is float64 but D is float32"):
        encode(x, d.astype(np.float32))
    with pytest.raises(DTypeError, match=r"^X: must be float32 or float64"):
        encode(x.astype(np.complex128), d)
    with pytest.raises(DTypeError, match=r"^D: must be float32 or float64"):
        encode(x, d.astype(np.float16))
    with pytest.raises(DTypeError, match=r"X is float64 but D is float32"):
        encode(np.ones((2, 6), dtype=np.int64), d.astype(np.float32))  # integers become float64


@pytest.mark.parametrize("encode", ENCODER_FNS, ids=ENCODER_IDS)
def test_bad_output_and_threads(encode: Callable[..., Any]) -> None:
    x, d = err_problem()
    for bad in ("coo", "Dense", None):
        with pytest.raises(InvalidArgumentError, match=r"^output"):
            encode(x, d, output=bad)
    for bad_t in (0, -1, True, 1.5):
        with pytest.raises(InvalidArgumentError, match=r"^num_threads"):
            encode(x, d, num_threads=bad_t)


@pytest.mark.parametrize("fn", list(GREEDY.values()), ids=list(GREEDY))
def test_greedy_argument_errors(fn: Greedy) -> None:
    x, d = err_problem()
    with pytest.raises(InvalidArgumentError, match=r"^k: is 11 but the dictionary has only 10 atoms"):
        fn(x, d, k=11)
    for bad_k in (0, -1):
        with pytest.raises(InvalidArgumentError, match=rf"^k: must be a positive integer, got {bad_k}"):
            fn(x, d, k=bad_k)
    for bad_type in (2.0, True, "3"):
        with pytest.raises(InvalidArgumentError, match=r"^k: must be a positive int"):
            fn(x, d, k=bad_type)
    for bad_tol in (-1e-9, -1.0, float("nan"), float("inf")):
        with pytest.raises(InvalidArgumentError, match=r"^tol:"):
            fn(x, d, k=2, tol=bad_tol)
    fn(x, d, k=10)  # k = n_atoms is fine
    fn(x, d, k=np.int64(2), tol=0.0)


@pytest.mark.parametrize("method", LASSO_METHODS)
def test_lasso_argument_errors(method: LassoMethod) -> None:
    x, d = err_problem()
    for bad in (0.0, -0.1, float("nan"), float("inf")):
        with pytest.raises(InvalidArgumentError, match=r"^alpha: must be a finite number > 0"):
            lasso(x, d, alpha=bad, method=method)
    for bad_tol in (0.0, -1.0, float("nan")):
        with pytest.raises(InvalidArgumentError, match=r"^tol:"):
            lasso(x, d, alpha=0.1, method=method, tol=bad_tol)
    bad_iters: list[Any] = [0, -5, 2.5, True]
    for bad_it in bad_iters:
        with pytest.raises(InvalidArgumentError, match=r"^max_iter"):
            lasso(x, d, alpha=0.1, method=method, max_iter=bad_it)


def test_lasso_bad_method() -> None:
    x, d = err_problem()
    bad_methods: list[Any] = ["lars", "FISTA", "omp", None]
    for bad in bad_methods:
        with pytest.raises(InvalidArgumentError, match=r"^method: must be one of 'fista', 'ista', 'cd'"):
            lasso(x, d, alpha=0.1, method=bad)


def test_threshold_argument_errors() -> None:
    x, d = err_problem()
    for bad in (-0.1, float("nan"), float("inf")):
        with pytest.raises(InvalidArgumentError, match=r"^alpha: must be a finite number >= 0"):
            threshold(x, d, alpha=bad)
    np.testing.assert_allclose(threshold(x, d, alpha=0.0), x @ d.T, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("fn_name", ["omp", "mp", "gp", "lasso"])
def test_gram_errors(fn_name: str) -> None:
    x, d = err_problem()

    def call(gram: Any) -> Any:
        if fn_name == "lasso":
            return lasso(x, d, alpha=0.01, gram=gram)
        return GREEDY[fn_name](x, d, k=2, gram=gram)

    g = d @ d.T
    with pytest.raises(ShapeMismatchError, match=r"gram: must be D @ D.T of shape \(10, 10\), got shape \(9, 9\)"):
        call(g[:9, :9])
    with pytest.raises(ShapeMismatchError, match=r"gram: .*got shape \(10, 9\)"):
        call(g[:, :9])
    with pytest.raises(InvalidArgumentError, match=r"^gram: gram\[0, 0\]"):
        call(2.0 * g)
    bad = g.copy()
    bad[6, 6] = 0.5
    with pytest.raises(InvalidArgumentError, match=r"^gram: gram\[6, 6\]"):
        call(bad)
    bad[6, 6] = np.nan
    with pytest.raises(InvalidArgumentError, match=r"^gram: gram\[6, 6\]"):
        call(bad)
    with pytest.raises(DTypeError, match=r"^gram: must have X's dtype float64, got float32"):
        call(g.astype(np.float32))


def test_gram_of_wrong_ndim_is_a_shape_error() -> None:
    x, d = err_problem()
    with pytest.raises(ShapeMismatchError, match=r"gram"):
        omp(x, d, k=2, gram=(d @ d.T).ravel())


@pytest.mark.parametrize("fn_name", ["omp", "lasso"])
def test_gram_with_nan_off_the_diagonal_is_rejected(fn_name: str) -> None:
    x, d = err_problem()
    g = d @ d.T
    g[3, 5] = g[5, 3] = np.nan
    call: Callable[[], Any] = (
        (lambda: lasso(x, d, alpha=0.01, gram=g)) if fn_name == "lasso" else (lambda: omp(x, d, k=4, gram=g))
    )
    with pytest.raises(InvalidArgumentError, match=r"^gram"):
        call()


def test_empty_batch_gives_empty_codes() -> None:
    _, d = err_problem()
    for encode in ENCODER_FNS:
        assert encode(np.zeros((0, 6)), d).shape == (0, 10)
        assert encode(np.zeros((0, 6)), d, output="csr").shape == (0, 10)
        assert encode(np.zeros((0, 6)), d, output="sparse").shape == (0, 10)


def test_error_types_are_value_and_type_errors() -> None:
    # the typed exceptions keep the builtin they describe
    x, d = err_problem()
    with pytest.raises(ValueError, match=re.escape("k: must be a positive integer")):
        omp(x, d, k=0)
    with pytest.raises(TypeError, match=r"X is float32"):
        omp(x.astype(np.float32), d, k=2)
