"""Losse encoding and follow-the-leader ridge regression (``sparsecore.lsse``) against numpy oracles.

The encoder is compared entry by entry with a per-corner numpy transcription of the definition; the regression
with batch ridge regression by ``numpy.linalg.lstsq`` on the stacked features ``[Φ; √λ I]``, which shares no
arithmetic with the library's hash-row normal equations and conjugate gradients.
"""

from __future__ import annotations

import io
import itertools
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.typing import NDArray
from sparsecore import SparseBatch
from sparsecore.exceptions import (
    DTypeError,
    IndexFormatError,
    IndexOutOfRangeError,
    InvalidArgumentError,
    NonFiniteError,
    NotFittedError,
    ShapeMismatchError,
    SparseFormatError,
)
from sparsecore.lsse import ConvergenceWarning, LsseEncoder, LsseRegressor, OnlineRidge

F64 = NDArray[np.float64]

# ---------------------------------------------------------------------------------------------------------------
# Oracles
# ---------------------------------------------------------------------------------------------------------------


def reference_encode(x: NDArray[Any], p: F64, f: int, b: int, bins: int) -> tuple[NDArray[np.int64], F64]:
    """Per-corner transcription of the encoder: ids ``(n, F*2^b)`` and float64 weights."""
    x = np.atleast_2d(np.asarray(x, dtype=np.float64))
    n, d_in = x.shape
    z = np.zeros((n, p.shape[1]))
    for i in range(d_in):  # the same summation order as the library (exact equality of z)
        z += x[:, i : i + 1] * p[i]
    h = bins / (1.0 + np.exp(-z))
    ids = np.zeros((n, f << b), dtype=np.int64)
    wts = np.zeros((n, f << b))
    group = (bins + 1) ** b
    for r in range(n):
        col = 0
        for g in range(f):
            hg = h[r, g * b : (g + 1) * b]
            low = np.minimum(np.floor(hg), bins - 1)
            t = hg - low
            for mask in range(1 << b):
                cid, w = g * group, 1.0
                for j in range(b):
                    bit = (mask >> j) & 1
                    cid += int(low[j] + bit) * (bins + 1) ** j
                    w *= t[j] if bit else 1.0 - t[j]
                ids[r, col], wts[r, col] = cid, w
                col += 1
    return ids, wts


def ridge_lstsq(phi: F64, y: F64, lam: float) -> F64:
    """Batch ridge regression ``argmin ‖ΦW - Y‖² + λ‖W‖²`` by least squares on ``[Φ; √λ I]``."""
    dim = phi.shape[1]
    a = np.vstack([phi, np.sqrt(lam) * np.eye(dim)])
    rhs = np.vstack([y, np.zeros((dim, y.shape[1]))])
    w: F64 = np.linalg.lstsq(a, rhs, rcond=None)[0]
    return w


def random_batch(rng: np.random.Generator, n: int, dim: int, max_nnz: int) -> SparseBatch:
    rows = []
    for _ in range(n):
        k = int(rng.integers(0, max_nnz + 1))
        cols = np.sort(rng.choice(dim, size=k, replace=False))
        rows.append({int(c): float(rng.uniform(0.05, 1.0)) for c in cols})
    return SparseBatch.from_dicts(rows, dim)


def identity_probe(dim: int) -> SparseBatch:
    return SparseBatch.from_dense(np.eye(dim, dtype=np.float32))


# ---------------------------------------------------------------------------------------------------------------
# Encoder
# ---------------------------------------------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(
    f=st.integers(1, 5),
    b=st.integers(1, 4),
    bins=st.integers(1, 9),
    d_in=st.integers(1, 5),
    n=st.integers(0, 6),
    seed=st.integers(0, 2**32),
    scale=st.sampled_from([0.1, 1.0, 5.0, 100.0]),
    dtype=st.sampled_from([np.float32, np.float64]),
)
def test_encoder_matches_reference(
    f: int, b: int, bins: int, d_in: int, n: int, seed: int, scale: float, dtype: type
) -> None:
    enc = LsseEncoder(d_in, num_groups=f, bin_dim=b, num_bins=bins, seed=seed % 1000)
    x: NDArray[Any] = (np.random.default_rng(seed).standard_normal((n, d_in)) * scale).astype(dtype)
    out = enc.encode(x)
    ids, wts = reference_encode(x, enc.projection, f, b, bins)
    assert out.shape == (n, f * (bins + 1) ** b) == (n, enc.dim)
    assert np.array_equal(out.row_nnz, np.full(n, enc.n_active))
    got_ids = out.indices.reshape(n, enc.n_active).astype(np.int64)
    assert np.array_equal(got_ids, ids)
    np.testing.assert_allclose(out.data.reshape(n, enc.n_active), wts, rtol=0, atol=1e-6)
    assert (np.diff(got_ids, axis=1) > 0).all()
    np.testing.assert_allclose(out.data.reshape(n, enc.n_active).sum(axis=1, dtype=np.float64), f, rtol=1e-5)
    assert (out.data >= 0).all()


def test_encoder_is_deterministic_and_seeded() -> None:
    x = np.random.default_rng(1).standard_normal((50, 3))
    a = LsseEncoder(3, num_groups=8, bin_dim=2, num_bins=6, seed=5).encode(x)
    b = LsseEncoder(3, num_groups=8, bin_dim=2, num_bins=6, seed=5).encode(x)
    c = LsseEncoder(3, num_groups=8, bin_dim=2, num_bins=6, seed=6).encode(x)
    assert a.equals(b)
    assert not a.equals(c)
    assert LsseEncoder(3, seed=5).encode(x, num_threads=1).equals(LsseEncoder(3, seed=5).encode(x, num_threads=2))


def test_projection_is_truncated_normal() -> None:
    enc = LsseEncoder(4, num_groups=500, bin_dim=4, num_bins=2, seed=0)
    p = enc.projection * np.sqrt(4)
    assert np.abs(p).max() <= 2.0
    assert 0.7 < p.std() < 0.95  # the std of N(0,1) truncated at ±2 is 0.88
    assert not enc.projection.flags.writeable


def test_standardisation_is_applied_before_projection() -> None:
    x = np.random.default_rng(2).uniform(10, 20, size=(20, 2))
    center, scale = np.array([15.0, 15.0]), np.array([2.0, 4.0])
    a = LsseEncoder(2, seed=3, input_center=center, input_scale=scale).encode(x)
    b = LsseEncoder(2, seed=3).encode((x - center) / scale)
    assert a.equals(b)


def overlap(a: SparseBatch, b: SparseBatch) -> F64:
    """Shared mass per row, ``Σ min(φ_a, φ_b) / F`` (1 for equal codes, 0 for disjoint)."""
    da, db = a.to_dense().astype(np.float64), b.to_dense().astype(np.float64)
    return np.asarray(np.minimum(da, db).sum(axis=1))


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**31), d_in=st.integers(1, 4))
def test_nearby_inputs_share_more_features(seed: int, d_in: int) -> None:
    enc = LsseEncoder(d_in, num_groups=30, bin_dim=2, num_bins=8, seed=seed % 97)
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((64, d_in))
    u = rng.standard_normal((64, d_in))
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    base = enc.encode(x)
    np.testing.assert_allclose(overlap(base, base), 30, rtol=1e-5)
    means = [overlap(base, enc.encode(x + r * u)).mean() / 30 for r in (0.01, 0.1, 0.5, 2.0)]
    assert all(a > b for a, b in itertools.pairwise(means)), means
    assert means[0] > 0.9


def test_encoder_rejects_bad_input() -> None:
    with pytest.raises(InvalidArgumentError, match="num_groups"):
        LsseEncoder(2, num_groups=0)
    with pytest.raises(InvalidArgumentError, match="bin_dim"):
        LsseEncoder(2, bin_dim=13)
    with pytest.raises(InvalidArgumentError, match="num_bins"):
        LsseEncoder(2, num_groups=1000, bin_dim=4, num_bins=1000)
    with pytest.raises(InvalidArgumentError, match="d_in"):
        LsseEncoder(0)
    with pytest.raises(InvalidArgumentError, match="input_scale"):
        LsseEncoder(2, input_scale=[1.0, 0.0])
    enc = LsseEncoder(2)
    with pytest.raises(ShapeMismatchError, match="X"):
        enc.encode(np.zeros((3, 3)))
    with pytest.raises(NonFiniteError, match=r"X\[1, 0\]"):
        enc.encode(np.array([[0.0, 1.0], [np.nan, 0.0]]))
    with pytest.raises(DTypeError, match="X"):
        enc.encode(np.array([["a", "b"]]))
    assert enc.encode(np.array([0.5, -0.5])).n_rows == 1  # one input as a vector
    assert enc.encode(np.array([[1, 2]])).equals(enc.encode(np.array([[1.0, 2.0]])))
    assert "dim=6050" in repr(enc)


# ---------------------------------------------------------------------------------------------------------------
# OnlineRidge against batch ridge
# ---------------------------------------------------------------------------------------------------------------


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**31),
    n=st.integers(1, 40),
    dim=st.integers(1, 25),
    n_out=st.integers(1, 3),
    lam=st.sampled_from([0.01, 0.3, 1.0, 10.0]),
)
def test_solve_exact_equals_batch_ridge(seed: int, n: int, dim: int, n_out: int, lam: float) -> None:
    rng = np.random.default_rng(seed)
    phi = random_batch(rng, n, dim, max_nnz=min(dim, 6))
    y = rng.standard_normal((n, n_out))
    model = OnlineRidge(dim, n_out, ridge=lam).partial_fit(phi, y)
    info = model.solve_exact(tol=1e-13, max_iter=5000)
    assert info.rel_residual <= 1e-13
    want = ridge_lstsq(phi.to_dense().astype(np.float64), y, lam)
    got = model.predict(identity_probe(dim))
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-9 * max(1.0, np.abs(want).max()))
    assert model.n_seen == n


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**31), n=st.integers(1, 20), dim=st.integers(1, 15), lam=st.sampled_from([0.1, 1.0]))
def test_exact_rule_is_follow_the_leader_after_every_step(seed: int, n: int, dim: int, lam: float) -> None:
    rng = np.random.default_rng(seed)
    phi = random_batch(rng, n, dim, max_nnz=min(dim, 5))
    y = rng.standard_normal((n, 2))
    model = OnlineRidge(dim, 2, ridge=lam, update="exact")
    dense = phi.to_dense().astype(np.float64)
    probe = identity_probe(dim)
    for t in range(n):
        model.partial_fit(phi[t : t + 1], y[t : t + 1])
        want = ridge_lstsq(dense[: t + 1], y[: t + 1], lam)
        np.testing.assert_allclose(model.predict(probe), want, rtol=1e-6, atol=1e-8)
    assert model._core.n_unconverged == 0  # every full solve reached its tolerance (else a ConvergenceWarning)


def block_condition_residual(model: OnlineRidge, active: NDArray[np.uint32]) -> float:
    """How far the weights are from ``(A_SS + λI) W_S = B_S - A_{S,S̄} W_S̄`` for the active set S."""
    st_ = model.state_dict()
    feats = st_["features"]
    dense_a = np.zeros((len(feats), len(feats)))
    pos = {int(f): i for i, f in enumerate(feats)}
    for r in range(len(feats)):
        lo, hi = st_["a_indptr"][r], st_["a_indptr"][r + 1]
        for c, v in zip(st_["a_indices"][lo:hi], st_["a_data"][lo:hi], strict=True):
            dense_a[r, pos[int(c)]] = v
    s = np.array([pos[int(f)] for f in active])
    lhs = (dense_a[np.ix_(s, s)] + model.ridge * np.eye(len(s))) @ st_["w"][s]
    rest = np.setdiff1d(np.arange(len(feats)), s)
    rhs = st_["b"][s] - dense_a[np.ix_(s, rest)] @ st_["w"][rest]
    return float(np.abs(lhs - rhs).max() / max(1.0, np.abs(rhs).max()))


@pytest.mark.parametrize("n_out", [1, 2, 3, 4, 5])
def test_block_rule_solves_the_active_block_and_solve_exact_closes_the_gap(n_out: int) -> None:
    # One to five outputs: the sweeps have a path for one output, one each for two to four, and a general one.
    rng = np.random.default_rng(7)
    x = rng.uniform(-2, 2, size=(300, 2))
    y = np.sin(2 * x[:, :1] + np.arange(n_out)) + 0.1 * rng.standard_normal((300, n_out))
    enc = LsseEncoder(2, num_groups=6, bin_dim=2, num_bins=5, seed=1)
    phi = enc.encode(x)
    model = OnlineRidge(enc.dim, n_out, ridge=0.5)
    for t in range(300):
        model.partial_fit(phi[t : t + 1], y[t : t + 1])
        if t % 50 == 49:
            active = phi.row(t)[0]
            assert block_condition_residual(model, active) < 1e-9
    want = ridge_lstsq(phi.to_dense().astype(np.float64), y, 0.5)
    probe = identity_probe(enc.dim)
    gap_block = np.abs(model.predict(probe) - want).max()
    model.solve_exact(tol=1e-12)
    gap_exact = np.abs(model.predict(probe) - want).max()
    assert gap_exact < 1e-7
    assert gap_exact < gap_block


def wave(x: F64) -> F64:
    out: F64 = np.sin(3 * x[:, 0]) * np.cos(2 * x[:, 1])
    return out


def test_no_forgetting_under_covariate_shift() -> None:
    """Regions arrive one after another; the error on the first region stays low after learning the others."""
    rng = np.random.default_rng(3)
    regions = [rng.uniform([lo, -1], [lo + 0.5, 1], size=(600, 2)) for lo in (-1.0, -0.5, 0.0, 0.5)]
    model = LsseRegressor(num_groups=30, bin_dim=2, num_bins=10, ridge=0.05, input_scale=0.4, random_state=0)
    first_errors = []
    for xr in regions:
        model.partial_fit(xr, wave(xr))
        first_errors.append(float(np.mean((model.predict(regions[0]) - wave(regions[0])) ** 2)))
    assert first_errors[0] < 5e-3
    assert first_errors[-1] < 2 * first_errors[0] + 1e-3, first_errors
    all_x = np.vstack(regions)
    assert float(np.mean((model.predict(all_x) - wave(all_x)) ** 2)) < 1e-2


def test_memory_grows_with_pairs_not_dim() -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((200, 3))
    y = rng.standard_normal(200)
    totals, pairs = [], []
    for bins in (40, 400, 4000):
        enc = LsseEncoder(3, num_groups=10, bin_dim=2, num_bins=bins, seed=0)
        model = OnlineRidge(enc.dim, ridge=1.0).partial_fit(enc.encode(x), y)
        usage = model.memory_usage()
        assert usage["total"] == sum(v for k, v in usage.items() if k != "total")
        assert model.nnz <= 200 * 40**2  # at most |S|² new pairs per sample, whatever dim is
        totals.append(usage["total"])
        pairs.append(model.nnz)
    # dim grows 10,000-fold (16,810 → 160M); the pairs saturate and memory stays within a small factor of them
    # (about 12 bytes per stored pair plus table slack), nowhere near dim².
    assert totals[2] < 2 * totals[0], totals
    assert all(t < 64 * p for t, p in zip(totals, pairs, strict=True)), (totals, pairs)


def test_state_dict_round_trip_and_continuation() -> None:
    rng = np.random.default_rng(4)
    phi = random_batch(rng, 30, 20, 5)
    y = rng.standard_normal((30, 2))
    a = OnlineRidge(20, 2, ridge=0.3).partial_fit(phi[:15], y[:15])
    b = OnlineRidge.from_state_dict(a.state_dict())
    c = OnlineRidge(20, 2).load_state_dict(a.state_dict())
    d = pickle.loads(pickle.dumps(a))
    for m in (b, c, d):
        assert m.ridge == 0.3
        assert m.n_seen == 15
        m.partial_fit(phi[15:], y[15:])
    a.partial_fit(phi[15:], y[15:])
    # Continuing from a restored state gives the same model up to summation order (hash rows are rebuilt).
    for m in (b, c, d):
        np.testing.assert_allclose(m.predict(phi), a.predict(phi), rtol=1e-12, atol=1e-13)
        for k, v in a.state_dict().items():
            if isinstance(v, str):
                assert m.state_dict()[k] == v
            else:
                np.testing.assert_allclose(np.asarray(m.state_dict()[k]), np.asarray(v), rtol=1e-12, atol=1e-13)
    e = a.copy()
    e.partial_fit(phi[:1], y[:1])
    assert e.n_seen == a.n_seen + 1


def test_state_dict_is_checked() -> None:
    rng = np.random.default_rng(5)
    model = OnlineRidge(10, ridge=1.0).partial_fit(random_batch(rng, 10, 10, 4), rng.standard_normal(10))
    good = model.state_dict()
    cases: list[tuple[str, Any]] = [
        ("features", good["features"][::-1].copy()),
        ("features", good["features"].astype(np.int64)),
        ("a_data", np.where(np.arange(len(good["a_data"])) == 1, 9.0, good["a_data"])),
        ("a_indices", np.full_like(good["a_indices"], 9999)),
        ("w", good["w"][:-1]),
        ("b", np.full_like(good["b"], np.nan)),
        ("ridge", 0.0),
        ("update", "fast"),
    ]
    for key, value in cases:
        bad = dict(good, **{key: value})
        with pytest.raises(InvalidArgumentError):
            OnlineRidge.from_state_dict(bad)
    with pytest.raises(InvalidArgumentError, match="missing"):
        OnlineRidge.from_state_dict({k: v for k, v in good.items() if k != "w"})


def test_save_load_and_corruption(tmp_path: Path) -> None:
    rng = np.random.default_rng(6)
    phi = random_batch(rng, 12, 8, 3)
    model = OnlineRidge(8, ridge=0.7).partial_fit(phi, rng.standard_normal(12))
    path = tmp_path / "ridge.bin"
    model.save(path)
    loaded = OnlineRidge.load(path)
    assert np.array_equal(loaded.predict(phi), model.predict(phi))
    raw = path.read_bytes()
    bad = tmp_path / "bad.bin"
    for cut in range(0, len(raw), max(1, len(raw) // 97)):
        bad.write_bytes(raw[:cut])
        with pytest.raises(IndexFormatError):
            OnlineRidge.load(bad)
    flip_rng = np.random.default_rng(0)
    for pos in flip_rng.integers(0, len(raw), size=60):
        data = bytearray(raw)
        data[pos] ^= 1 << int(flip_rng.integers(0, 8))
        bad.write_bytes(bytes(data))
        with pytest.raises(IndexFormatError):
            OnlineRidge.load(bad)
    bad.write_bytes(b"PK\x03\x04" + raw[4:])
    with pytest.raises(IndexFormatError, match="magic"):
        OnlineRidge.load(bad)
    with pytest.raises(FileNotFoundError):
        OnlineRidge.load(tmp_path / "missing.bin")
    buf = io.BytesIO()
    np.savez(buf, x=np.zeros(3))
    bad.write_bytes(buf.getvalue())
    with pytest.raises(IndexFormatError):
        OnlineRidge.load(bad)


def test_progress_chunks_learn_the_same_model(capsys: pytest.CaptureFixture[str]) -> None:
    rng = np.random.default_rng(13)
    phi = random_batch(rng, 2500, 30, 6)
    y = rng.standard_normal(2500)
    plain = OnlineRidge(30).partial_fit(phi, y, progress=False)
    shown = OnlineRidge(30).partial_fit(phi, y, progress=True)
    assert np.array_equal(plain.predict(phi), shown.predict(phi))
    assert "OnlineRidge" in capsys.readouterr().err


def test_overflowing_or_ill_conditioned_values_are_errors() -> None:
    m = OnlineRidge(4)
    with pytest.raises(InvalidArgumentError, match="row 1"):
        m.partial_fit(SparseBatch.from_dicts([{0: 1.0}, {1: 3e38}], 4), np.array([1.0, 1e300]))
    assert m.n_seen == 0
    m.partial_fit(SparseBatch.from_dicts([{0: 1.0}], 4), np.array([2.0]))
    # |φ|² = 1.8e77 next to ridge 1: the active block is numerically singular.
    huge = SparseBatch.from_dicts([{0: 1.0}, {1: 3e38, 2: 3e38}], 4)
    with pytest.raises(InvalidArgumentError, match="ridge"):
        m.partial_fit(huge, np.array([2.0, 1.0]))
    assert m.n_seen == 2  # the first row of the batch was learned, the failing one taken back out
    # Feature 0 learned y = 2 twice: w0 = 4 / (2 + ridge); the rolled-back features contribute ~0.
    np.testing.assert_allclose(m.predict(huge)[:, 0], [4 / 3, 0.0], atol=1e-12)


def test_ridge_rejects_bad_input() -> None:
    with pytest.raises(InvalidArgumentError, match="ridge"):
        OnlineRidge(10, ridge=0.0)
    with pytest.raises(InvalidArgumentError, match="ridge"):
        OnlineRidge(10, ridge=float("nan"))
    with pytest.raises(InvalidArgumentError, match="dim"):
        OnlineRidge(0)
    with pytest.raises(InvalidArgumentError, match="n_outputs"):
        OnlineRidge(5, 0)
    with pytest.raises(InvalidArgumentError, match="update"):
        OnlineRidge(5, update="fast")  # type: ignore[arg-type]
    m = OnlineRidge(5, 2)
    phi = SparseBatch.from_dicts([{0: 1.0}, {3: 0.5}], 5)
    with pytest.raises(ShapeMismatchError, match="Y"):
        m.partial_fit(phi, np.zeros(2))
    with pytest.raises(NonFiniteError, match=r"Y\[1, 0\]"):
        m.partial_fit(phi, np.array([[0.0, 0.0], [np.inf, 0.0]]))
    with pytest.raises(ShapeMismatchError, match="phi"):
        m.partial_fit(SparseBatch.from_dicts([{0: 1.0}], 6), np.zeros((1, 2)))
    with pytest.raises(InvalidArgumentError, match="phi"):
        m.predict(np.zeros((1, 5)))  # type: ignore[arg-type]
    unsorted = SparseBatch(np.array([0, 2]), np.array([3, 1], dtype=np.uint32), np.ones(2, np.float32), 5, check=False)
    with pytest.raises(SparseFormatError):
        m.partial_fit(unsorted, np.zeros((1, 2)))
    nan_phi = SparseBatch(np.array([0, 1]), np.array([1], np.uint32), np.array([np.nan], np.float32), 5, check=False)
    with pytest.raises(NonFiniteError):
        m.partial_fit(nan_phi, np.zeros((1, 2)))
    oob = SparseBatch(np.array([0, 1]), np.array([7], dtype=np.uint32), np.ones(1, np.float32), 5, check=False)
    with pytest.raises(IndexOutOfRangeError):
        m.predict(oob)
    assert m.n_seen == 0
    with pytest.raises(InvalidArgumentError, match="tol"):
        m.solve_exact(tol=-1.0)


def test_solve_exact_warns_when_it_stops_early() -> None:
    rng = np.random.default_rng(8)
    m = OnlineRidge(30, ridge=1e-3).partial_fit(random_batch(rng, 60, 30, 8), rng.standard_normal(60))
    with pytest.warns(ConvergenceWarning, match="max_iter|residual"):
        info = m.solve_exact(tol=1e-14, max_iter=2)
    assert info.iterations == 2


def test_empty_rows_and_unseen_features() -> None:
    m = OnlineRidge(6, ridge=1.0)
    phi = SparseBatch.from_dicts([{}, {2: 1.0}, {}], 6)
    m.partial_fit(phi, np.array([5.0, 2.0, -1.0]))
    assert m.n_seen == 3
    assert m.n_active_features == 1
    pred = m.predict(SparseBatch.from_dicts([{2: 1.0}, {4: 1.0}, {}], 6))
    np.testing.assert_allclose(pred[:, 0], [1.0, 0.0, 0.0])  # 2 / (1 + λ)


def test_results_are_thread_invariant() -> None:
    rng = np.random.default_rng(9)
    enc = LsseEncoder(3, num_groups=20, bin_dim=2, num_bins=6)
    x = rng.standard_normal((5000, 3))
    model = OnlineRidge(enc.dim, 2).partial_fit(enc.encode(x[:500]), rng.standard_normal((500, 2)))
    phi = enc.encode(x, num_threads=2)
    assert np.array_equal(model.predict(phi, num_threads=1), model.predict(phi, num_threads=2))
    y = rng.standard_normal((300, 2))
    one = OnlineRidge(enc.dim, 2).partial_fit(phi[:300], y, num_threads=1)
    two = OnlineRidge(enc.dim, 2).partial_fit(phi[:300], y, num_threads=2)  # active rows updated in parallel
    assert np.array_equal(one.predict(phi), two.predict(phi))
    assert phi.equals(enc.encode(x, num_threads=1))
    # 200 active features whose rows soon hold hundreds of entries: past the thresholds at which a sample's rows
    # are updated on the pool (in chunks, each prefetching its next row), with one and with two outputs.
    big = LsseEncoder(3, num_groups=50, bin_dim=2, num_bins=7, seed=3)
    phi_big = big.encode(x[:400])
    for n_out in (1, 2):
        yb = rng.standard_normal((400, n_out))
        one = OnlineRidge(big.dim, n_out).partial_fit(phi_big, yb, num_threads=1)
        two = OnlineRidge(big.dim, n_out).partial_fit(phi_big, yb, num_threads=2)
        assert one.nnz > 500 * one.n_active_features  # rows average over 500 entries: the parallel path ran
        assert np.array_equal(one.predict(phi_big), two.predict(phi_big))
        assert np.array_equal(one.state_dict()["a_data"], two.state_dict()["a_data"])
        # Conjugate gradients run their products on the pool for a model this size (over 100k stored entries).
        one.solve_exact(tol=1e-8, num_threads=1)
        two.solve_exact(tol=1e-8, num_threads=2)
        assert np.array_equal(one.predict(phi_big), two.predict(phi_big))


# ---------------------------------------------------------------------------------------------------------------
# LsseRegressor
# ---------------------------------------------------------------------------------------------------------------


def test_regressor_partial_fit_in_chunks_equals_one_pass() -> None:
    rng = np.random.default_rng(10)
    x = rng.uniform(-1, 1, size=(400, 2))
    y = x[:, 0] ** 2 - x[:, 1]
    one = LsseRegressor(num_groups=10, num_bins=6, ridge=0.1).fit(x, y)
    chunked = LsseRegressor(num_groups=10, num_bins=6, ridge=0.1)
    for s in range(0, 400, 37):
        chunked.partial_fit(x[s : s + 37], y[s : s + 37])
    assert np.array_equal(one.predict(x), chunked.predict(x))
    assert one.predict(x).shape == (400,)
    assert one.score(x, y) > 0.95
    restored = pickle.loads(pickle.dumps(one))  # a fitted regressor pickles through OnlineRidge.state_dict
    assert np.array_equal(restored.predict(x), one.predict(x))
    refit = one.fit(x[:10], y[:10])
    assert refit.model_.n_seen == 10


def test_regressor_multi_output_and_errors() -> None:
    rng = np.random.default_rng(11)
    x = rng.standard_normal((100, 3))
    y = np.stack([x[:, 0], -x[:, 1]], axis=1)
    model = LsseRegressor(num_groups=8, ridge=0.1, update="exact").fit(x, y)
    assert model.predict(x).shape == (100, 2)
    with pytest.raises(ShapeMismatchError, match="y"):
        model.partial_fit(x, y[:, 0])
    with pytest.raises(ShapeMismatchError, match="X"):
        model.predict(x[:, :2])
    with pytest.raises(ShapeMismatchError, match="y"):
        LsseRegressor().fit(x, y[:50])
    with pytest.raises(NotFittedError):
        LsseRegressor().predict(x)


def test_regressor_works_with_scikit_learn() -> None:
    sklearn_base = pytest.importorskip("sklearn.base")
    pipeline = pytest.importorskip("sklearn.pipeline")
    preprocessing = pytest.importorskip("sklearn.preprocessing")
    rng = np.random.default_rng(12)
    x = rng.uniform(0, 10, size=(300, 2))
    y = np.sin(x[:, 0]) + 0.1 * x[:, 1]
    est = LsseRegressor(num_groups=20, num_bins=8, ridge=0.05, random_state=3)
    clone = sklearn_base.clone(est)
    assert clone.get_params() == est.get_params()
    assert sklearn_base.is_regressor(est)
    pipe = pipeline.make_pipeline(preprocessing.StandardScaler(), est).fit(x, y)
    assert pipe.score(x, y) > 0.9
    assert "num_groups=20" in repr(est)
