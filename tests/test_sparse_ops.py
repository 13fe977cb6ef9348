"""Property tests of every SparseBatch operation against naive numpy/scipy oracles written here.

The oracles never call sparsecore: they read the input batch's raw arrays (or the arrays the batch was built
from) and compute the expected result with numpy loops, dense float64 algebra or scipy.sparse.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from numpy.typing import NDArray
from sparsecore import MAX_DIM, QuantizedBatch, SparseBatch
from sparsecore.testing.strategies import csr_arrays, dims, sparse_batches, values

Row = tuple[NDArray[np.uint32], NDArray[np.float32]]
Arrays = tuple[NDArray[Any], NDArray[Any], NDArray[Any], int]
F64 = NDArray[np.float64]

THREADS = (1, 2, 3)
RTOL = 1e-5
# float32 products of subnormal values underflow to 0 where float64 does not: allow that much absolute error
ATOL = 1e-40

# ---------------------------------------------------------------------------------------------------------------
# Helpers (pure numpy / scipy)
# ---------------------------------------------------------------------------------------------------------------


def rows_of_arrays(indptr: NDArray[Any], indices: NDArray[Any], data: NDArray[Any]) -> list[Row]:
    ip = np.asarray(indptr, dtype=np.int64)
    idx = np.asarray(indices, dtype=np.uint32)
    val = np.asarray(data, dtype=np.float32)
    return [(idx[ip[r] : ip[r + 1]], val[ip[r] : ip[r + 1]]) for r in range(len(ip) - 1)]


def rows_of(b: SparseBatch) -> list[Row]:
    return rows_of_arrays(np.asarray(b.indptr), np.asarray(b.indices), np.asarray(b.data))


def assemble(rows: Sequence[Row]) -> tuple[NDArray[np.int64], NDArray[np.uint32], NDArray[np.float32]]:
    ip = np.zeros(len(rows) + 1, dtype=np.int64)
    ip[1:] = np.cumsum([len(i) for i, _ in rows], dtype=np.int64)
    idx = np.concatenate([np.asarray(i, np.uint32) for i, _ in rows] + [np.zeros(0, np.uint32)])
    val = np.concatenate([np.asarray(v, np.float32) for _, v in rows] + [np.zeros(0, np.float32)])
    return ip, idx.astype(np.uint32), np.ascontiguousarray(val, dtype=np.float32)


def assert_batch(got: object, rows: Sequence[Row], dim: int, *, bits: bool = True) -> None:
    """``got`` holds exactly ``rows`` (values compared bit for bit unless ``bits=False``)."""
    assert isinstance(got, SparseBatch)
    ip, idx, val = assemble(rows)
    assert got.dim == dim
    assert got.indptr.dtype == np.int64
    assert got.indices.dtype == np.uint32
    assert got.data.dtype == np.float32
    np.testing.assert_array_equal(got.indptr, ip)
    np.testing.assert_array_equal(got.indices, idx)
    if bits:
        np.testing.assert_array_equal(np.ascontiguousarray(got.data).view(np.uint32), val.view(np.uint32))
    else:
        np.testing.assert_array_equal(got.data, val)


def bit_identical(x: NDArray[Any], y: NDArray[Any]) -> bool:
    same_bytes = np.ascontiguousarray(x).tobytes() == np.ascontiguousarray(y).tobytes()
    return x.dtype == y.dtype and x.shape == y.shape and same_bytes


def batch_arrays(b: SparseBatch) -> tuple[NDArray[Any], NDArray[Any], NDArray[Any]]:
    return (np.asarray(b.indptr), np.asarray(b.indices), np.asarray(b.data))


def dense_on(b: SparseBatch, cols: NDArray[np.uint32]) -> F64:
    """float64 dense copy of ``b`` restricted to the sorted columns ``cols`` (duplicates summed)."""
    ip = np.asarray(b.indptr)
    n = len(ip) - 1
    out = np.zeros((n, len(cols)), dtype=np.float64)
    r = np.repeat(np.arange(n), np.diff(ip))
    np.add.at(out, (r, np.searchsorted(cols, np.asarray(b.indices))), np.asarray(b.data, dtype=np.float64))
    return out


def scipy_dense(ip: NDArray[Any], idx: NDArray[Any], val: NDArray[Any], dim: int) -> F64:
    arrs = (np.asarray(val, np.float64), np.asarray(idx, np.int64), np.asarray(ip, np.int64))
    m = sp.csr_array(arrs, shape=(len(ip) - 1, dim))
    return np.asarray(m.toarray(), dtype=np.float64)


def oracle_scores(a: SparseBatch, b: SparseBatch) -> tuple[F64, F64]:
    """Exact-ish ``a @ b.T`` in float64 and ``|a| @ |b|.T`` (the error scale), over the union of used columns."""
    cols = np.union1d(np.asarray(a.indices), np.asarray(b.indices)).astype(np.uint32)
    da, db = dense_on(a, cols), dense_on(b, cols)
    return da @ db.T, np.abs(da) @ np.abs(db).T


def assert_close(got: NDArray[Any], want: F64, scale: F64, rtol: float = RTOL) -> None:
    assert got.shape == want.shape
    err = np.abs(got.astype(np.float64) - want)
    bound = rtol * np.abs(want) + rtol * scale + ATOL
    bad = np.argwhere(err > bound)
    assert bad.size == 0, f"first mismatch at {tuple(bad[0])}: got {got[tuple(bad[0])]!r}, want {want[tuple(bad[0])]!r}"


def quarter(arrs: Arrays) -> Arrays:
    """Round values to multiples of 0.25 (still in [-8, 8]): then every sum/product here is exact in float32."""
    ip, idx, val, d = arrs
    return ip, idx, (np.round(np.asarray(val, np.float64) * 4) / 4).astype(np.float32), d


def make(arrs: Arrays) -> SparseBatch:
    return SparseBatch(*arrs)


# ---------------------------------------------------------------------------------------------------------------
# Oracles
# ---------------------------------------------------------------------------------------------------------------


def oracle_top_k(rows: Sequence[Row], k: int, by_magnitude: bool) -> list[Row]:
    out: list[Row] = []
    for idx, val in rows:
        key = np.abs(val.astype(np.float64)) if by_magnitude else val.astype(np.float64)
        order = np.lexsort((idx, -key))  # key desc, then index asc; -0.0 == 0.0 compares equal
        keep = np.sort(order[:k])
        out.append((idx[keep], val[keep]))
    return out


def oracle_threshold(rows: Sequence[Row], t: float, by_magnitude: bool) -> list[Row]:
    out: list[Row] = []
    for idx, val in rows:
        key = np.abs(val.astype(np.float64)) if by_magnitude else val.astype(np.float64)
        keep = key >= np.float64(t)  # exact comparison of the float32 value with the float t
        out.append((idx[keep], val[keep]))
    return out


def oracle_prune_mass(rows: Sequence[Row], fraction: float) -> list[Row]:
    out: list[Row] = []
    for idx, val in rows:
        mag = np.abs(val.astype(np.float64))
        order = np.lexsort((idx, -mag))
        cum = np.cumsum(mag[order])  # sequential float64 sum in ranking order
        if len(cum) == 0 or cum[-1] <= 0.0:
            out.append((idx[:0], val[:0]))
            continue
        target = np.float64(fraction) * cum[-1]
        n_keep = int(np.argmax(cum >= target)) + 1
        keep = np.sort(order[:n_keep])
        out.append((idx[keep], val[keep]))
    return out


def oracle_canonical_max(rows: Sequence[Row], drop_zeros: bool) -> list[Row]:
    out: list[Row] = []
    for idx, val in rows:
        best: dict[int, float] = {}
        for c, v in zip(idx.tolist(), val.tolist(), strict=True):
            best[c] = max(best[c], v) if c in best else v
        items = sorted((c, v) for c, v in best.items() if not (drop_zeros and v == 0.0))
        out.append((np.array([c for c, _ in items], np.uint32), np.array([v for _, v in items], np.float32)))
    return out


def scipy_sum_duplicates(
    ip: NDArray[Any], idx: NDArray[Any], val: NDArray[Any], dim: int
) -> tuple[list[Row], list[F64], list[F64]]:
    """Per row: (sorted unique indices, float32 placeholder), float64 sums, float64 sums of |v| (error scale)."""
    shape = (len(ip) - 1, dim)
    ip64, idx64 = np.asarray(ip, np.int64), np.asarray(idx, np.int64)
    m = sp.csr_array((np.asarray(val, np.float64), idx64.copy(), ip64.copy()), shape=shape)
    m.sum_duplicates()
    a = sp.csr_array((np.abs(np.asarray(val, np.float64)), idx64.copy(), ip64.copy()), shape=shape)
    a.sum_duplicates()
    assert np.array_equal(m.indices, a.indices)
    rows: list[Row] = []
    sums: list[F64] = []
    scales: list[F64] = []
    for r in range(shape[0]):
        s, e = int(m.indptr[r]), int(m.indptr[r + 1])
        rows.append((m.indices[s:e].astype(np.uint32), m.data[s:e].astype(np.float32)))
        sums.append(np.asarray(m.data[s:e], np.float64))
        scales.append(np.asarray(a.data[s:e], np.float64))
    return rows, sums, scales


def check_canonical_sum(got: SparseBatch, arrs: Arrays, drop_zeros: bool) -> None:
    ip, idx, val, dim = arrs
    want_rows, sums, scales = scipy_sum_duplicates(ip, idx, val, dim)
    assert got.dim == dim
    assert got.n_rows == len(want_rows)
    for r, (gi, gv) in enumerate(rows_of(got)):
        wi = want_rows[r][0]
        tol = RTOL * scales[r]  # float32 sums of up to 16 terms, in any order
        if not drop_zeros:
            np.testing.assert_array_equal(gi, wi)
            assert np.all(np.abs(gv.astype(np.float64) - sums[r]) <= tol), (r, gv, sums[r])
        else:
            assert np.all(gv != 0.0), f"row {r} keeps a zero"
            pos = np.searchsorted(wi, gi)
            assert np.all(pos < len(wi))
            assert np.array_equal(wi[pos], gi), f"row {r}: {gi} is not a subset of {wi}"
            assert np.all(np.abs(gv.astype(np.float64) - sums[r][pos]) <= tol[pos])
            dropped = np.setdiff1d(np.arange(len(wi)), pos)
            assert np.all(np.abs(sums[r][dropped]) <= tol[dropped]), f"row {r} dropped non-zero sums"


def check_top_k(b: SparseBatch, k: int, by_magnitude: bool) -> None:
    assert_batch(b.top_k(k, by_magnitude=by_magnitude), oracle_top_k(rows_of(b), k, by_magnitude), b.dim)


def check_threshold(b: SparseBatch, t: float, by_magnitude: bool) -> None:
    assert_batch(b.threshold(t, by_magnitude=by_magnitude), oracle_threshold(rows_of(b), t, by_magnitude), b.dim)


def check_prune_mass(b: SparseBatch, fraction: float) -> None:
    assert_batch(b.prune_mass(fraction), oracle_prune_mass(rows_of(b), fraction), b.dim)


def check_dot(a: SparseBatch, b: SparseBatch) -> None:
    got = a.dot(b)
    assert got.dtype == np.float32
    assert got.shape == (a.n_rows,)
    s, scale = oracle_scores(a, b)
    assert_close(got, np.diagonal(s).copy(), np.diagonal(scale).copy())


def check_scores(a: SparseBatch, b: SparseBatch) -> None:
    got = a.scores(b)
    assert got.dtype == np.float32
    s, scale = oracle_scores(a, b)
    assert_close(got, s, scale)


def check_scores_top_k(a: SparseBatch, b: SparseBatch, k: int, *, exact: bool) -> None:
    ids, sc = a.scores_top_k(b, k)
    m, n = a.n_rows, b.n_rows
    assert ids.dtype == np.int64
    assert sc.dtype == np.float32
    assert ids.shape == (m, k)
    assert sc.shape == (m, k)
    s, scale = oracle_scores(a, b)
    kk = min(k, n)
    assert np.all(ids[:, kk:] == -1), "padding ids must be -1 exactly when other has fewer than k rows"
    assert np.all(np.isneginf(sc[:, kk:])), "padding scores must be -inf"
    for i in range(m):
        row_ids, row_sc = ids[i, :kk], sc[i, :kk].astype(np.float64)
        assert np.all((row_ids >= 0) & (row_ids < n)), row_ids
        assert len(np.unique(row_ids)) == kk, f"row {i}: repeated ids {row_ids}"
        assert np.all(np.isfinite(row_sc))
        assert np.all(np.diff(row_sc) <= 0), f"row {i}: scores not best first {row_sc}"
        want_at = s[i, row_ids]
        tol_at = RTOL * (np.abs(want_at) + scale[i, row_ids]) + ATOL
        assert np.all(np.abs(row_sc - want_at) <= tol_at), (i, row_sc, want_at)
        best = np.sort(s[i])[::-1][:kk]
        row_tol = RTOL * (np.abs(s[i]).max(initial=0.0) + scale[i].max(initial=0.0)) + ATOL
        assert np.all(np.abs(row_sc - best) <= row_tol), (i, row_sc, best)
        if exact:
            order = np.lexsort((np.arange(n), -s[i]))[:kk]  # score desc, id asc
            np.testing.assert_array_equal(row_ids, order)
            np.testing.assert_array_equal(sc[i, :kk], s[i, order].astype(np.float32))


def check_matmul(b: SparseBatch, mat: NDArray[np.float32]) -> None:
    got = b.matmul_dense(mat)
    assert got.dtype == np.float32
    assert got.shape == (b.n_rows, mat.shape[1])
    d = scipy_dense(*batch_arrays(b), b.dim)
    m64 = mat.astype(np.float64)
    assert_close(got, d @ m64, np.abs(d) @ np.abs(m64))


def check_quantize(b: SparseBatch, bits: int) -> None:
    assert bits in (8, 16)
    q = b.quantize(8) if bits == 8 else b.quantize(16)
    assert isinstance(q, QuantizedBatch)
    assert q.bits == bits
    assert q.codes.dtype == (np.uint8 if bits == 8 else np.uint16)
    assert q.codes.shape == (b.nnz,)
    np.testing.assert_array_equal(q.indptr, b.indptr)
    np.testing.assert_array_equal(q.indices, b.indices)
    data = np.asarray(b.data, dtype=np.float64)
    lo = min(0.0, float(data.min(initial=0.0)))
    hi = max(0.0, float(data.max(initial=0.0)))
    levels = 2**bits - 1
    assert q.offset == lo
    assert q.scale >= 0.0
    assert abs(q.scale - (hi - lo) / levels) <= 1e-6 * (hi - lo) / levels + 1e-38
    deq = q.dequantize()
    assert isinstance(deq, SparseBatch)
    assert deq.dim == b.dim
    np.testing.assert_array_equal(deq.indptr, b.indptr)
    np.testing.assert_array_equal(deq.indices, b.indices)
    assert deq.data.dtype == np.float32
    err = np.abs(deq.data.astype(np.float64) - data)
    eps = 2.0**-22 * (float(np.abs(data).max(initial=0.0)) + (hi - lo)) + 1e-37
    assert np.all(err <= q.scale / 2 + eps), f"max error {err.max()} > scale/2 = {q.scale / 2}"
    if lo == 0.0:  # non-negative data: offset 0 and zeros exact
        assert q.offset == 0.0
        assert np.all(deq.data[data == 0.0] == 0.0)


# ---------------------------------------------------------------------------------------------------------------
# Strategies
# ---------------------------------------------------------------------------------------------------------------


@st.composite
def batch_pairs(draw: st.DrawFn, *, exact: bool = False) -> tuple[SparseBatch, SparseBatch]:
    """Two batches of one dim (possibly huge), with independent row counts."""
    d = draw(dims(40))
    a = draw(csr_arrays(max_rows=10, max_row_nnz=12, dim=d))
    b = draw(csr_arrays(max_rows=10, max_row_nnz=12, dim=d))
    if exact:
        a, b = quarter(a), quarter(b)
    return make(a), make(b)


@st.composite
def same_row_pairs(draw: st.DrawFn, *, exact: bool = False) -> tuple[SparseBatch, SparseBatch]:
    """Two batches with equal dims and row counts (the second's rows truncated or padded with empty rows)."""
    d = draw(dims(40))
    a = draw(csr_arrays(max_rows=10, max_row_nnz=12, dim=d))
    n = len(a[0]) - 1
    other = rows_of_arrays(*draw(csr_arrays(max_rows=10, max_row_nnz=12, dim=d))[:3])[:n]
    empty: Row = (np.zeros(0, np.uint32), np.zeros(0, np.float32))
    ip, idx, val = assemble(other + [empty] * (n - len(other)))
    b: Arrays = (ip, idx, val, d)
    if exact:
        a, b = quarter(a), quarter(b)
    return make(a), make(b)


small_batches = sparse_batches(max_rows=10, max_row_nnz=12)
small_dense_batches = sparse_batches(max_rows=10, max_dim=40, max_row_nnz=12, include_huge_dims=False)
f32_thresholds = st.one_of(values(), st.sampled_from([0.0, -0.0, 8.0, -8.0, 1e-45, 100.0, -100.0]))


# ---------------------------------------------------------------------------------------------------------------
# Row selection
# ---------------------------------------------------------------------------------------------------------------


@given(small_batches, st.integers(1, 14), st.booleans())
def test_top_k_matches_lexsort_oracle(b: SparseBatch, k: int, by_magnitude: bool) -> None:
    check_top_k(b, k, by_magnitude)


@pytest.mark.parametrize("by_magnitude", [False, True])
def test_top_k_signed_zeros_tie_by_index(by_magnitude: bool) -> None:
    b = SparseBatch([0, 5], [1, 2, 5, 7, 9], np.array([-0.0, 1.0, 0.0, 1.0, -1.0], np.float32), 10)
    got = b.top_k(3, by_magnitude=by_magnitude)
    # by value: 1.0@2, 1.0@7, then -0.0@1 ties with 0.0@5 -> smaller index 1; by magnitude: the three 1s
    want = [2, 7, 9] if by_magnitude else [1, 2, 7]
    np.testing.assert_array_equal(got.indices, want)
    check_top_k(b, 3, by_magnitude)


@given(small_batches, f32_thresholds, st.booleans())
def test_threshold_matches_oracle(b: SparseBatch, t: float, by_magnitude: bool) -> None:
    check_threshold(b, t, by_magnitude)


@given(small_batches, st.floats(-9.0, 9.0, allow_nan=False), st.booleans())
def test_threshold_with_float64_t_matches_exact_comparison(b: SparseBatch, t: float, by_magnitude: bool) -> None:
    # ``t`` need not be representable in float32: "value >= t" must still hold for every kept entry.
    check_threshold(b, t, by_magnitude)


@pytest.mark.parametrize(("t", "by_magnitude"), [(1e-50, False), (1e-50, True), (0.7, False)])
def test_threshold_does_not_round_t_to_float32(t: float, by_magnitude: bool) -> None:
    data = np.array([0.0, 0.7, -0.0, 1.0], np.float32)  # float32(0.7) = 0.699999988 < 0.7
    b = SparseBatch([0, 4], [0, 1, 2, 3], data, 4)
    check_threshold(b, t, by_magnitude)


@given(small_batches, st.floats(0.0, 1.0, exclude_min=True) | st.sampled_from([1.0, 0.5, 1e-9]))
def test_prune_mass_matches_oracle(b: SparseBatch, fraction: float) -> None:
    check_prune_mass(b, fraction)


@given(csr_arrays(max_rows=8, max_row_nnz=12).map(quarter), st.floats(0.0, 1.0, exclude_min=True))
def test_prune_mass_exact_ties(arrs: Arrays, fraction: float) -> None:
    check_prune_mass(make(arrs), fraction)


# ---------------------------------------------------------------------------------------------------------------
# Canonicalisation
# ---------------------------------------------------------------------------------------------------------------

non_canonical = csr_arrays(max_rows=10, max_row_nnz=16, canonical=False)


@given(non_canonical)
def test_constructor_canonicalize_sum_matches_scipy(arrs: Arrays) -> None:
    got = SparseBatch(*arrs, canonicalize="sum")
    check_canonical_sum(got, arrs, drop_zeros=False)
    assert got.is_canonical()


@given(non_canonical)
def test_from_arrays_canonicalize_max_matches_dict_oracle(arrs: Arrays) -> None:
    got = SparseBatch.from_arrays(*arrs, canonicalize="max")
    assert_batch(got, oracle_canonical_max(rows_of_arrays(*arrs[:3]), drop_zeros=False), arrs[3], bits=False)


@given(non_canonical, st.booleans())
def test_canonicalize_method_sum(arrs: Arrays, drop_zeros: bool) -> None:
    raw = SparseBatch(*arrs, check=False)  # structure-checked only: rows may be unsorted / repeated
    check_canonical_sum(raw.canonicalize("sum", drop_zeros=drop_zeros), arrs, drop_zeros)


@given(non_canonical, st.booleans())
def test_canonicalize_method_max(arrs: Arrays, drop_zeros: bool) -> None:
    raw = SparseBatch(*arrs, check=False)
    want = oracle_canonical_max(rows_of_arrays(*arrs[:3]), drop_zeros)
    assert_batch(raw.canonicalize("max", drop_zeros=drop_zeros), want, arrs[3], bits=False)


@given(non_canonical.map(quarter), st.booleans())
def test_canonicalize_sum_exact_values(arrs: Arrays, drop_zeros: bool) -> None:
    # Quarter values: every partial sum is exact, so the result is exact whatever the summation order.
    ip, idx, val, dim = arrs
    got = SparseBatch(*arrs, check=False).canonicalize("sum", drop_zeros=drop_zeros)
    rows, sums, _ = scipy_sum_duplicates(ip, idx, val, dim)
    want: list[Row] = []
    for (wi, _), s in zip(rows, sums, strict=True):
        keep = s != 0.0 if drop_zeros else np.ones(len(s), bool)
        want.append((wi[keep], s[keep].astype(np.float32)))
    assert_batch(got, want, dim, bits=False)
    base = SparseBatch(*arrs, canonicalize=True).canonicalize(drop_zeros=drop_zeros)
    assert_batch(base, want, dim, bits=False)


@given(small_batches)
def test_canonicalize_of_canonical_batch_is_identity_or_drops_zeros(b: SparseBatch) -> None:
    assert b.is_canonical()
    assert_batch(b.canonicalize("sum"), rows_of(b), b.dim)
    assert_batch(b.canonicalize("max"), rows_of(b), b.dim)
    assert_batch(b.canonicalize(drop_zeros=True), [(i[v != 0], v[v != 0]) for i, v in rows_of(b)], b.dim)


# ---------------------------------------------------------------------------------------------------------------
# Products
# ---------------------------------------------------------------------------------------------------------------


@given(same_row_pairs())
def test_dot_matches_dense_oracle(pair: tuple[SparseBatch, SparseBatch]) -> None:
    check_dot(*pair)


@given(same_row_pairs(exact=True))
def test_dot_exact_values(pair: tuple[SparseBatch, SparseBatch]) -> None:
    a, b = pair
    s, _ = oracle_scores(a, b)
    np.testing.assert_array_equal(a.dot(b), np.diagonal(s).astype(np.float32))


@given(batch_pairs())
def test_scores_matches_dense_oracle(pair: tuple[SparseBatch, SparseBatch]) -> None:
    check_scores(*pair)


@given(batch_pairs(), st.integers(1, 14))
def test_scores_top_k_matches_dense_oracle(pair: tuple[SparseBatch, SparseBatch], k: int) -> None:
    check_scores_top_k(*pair, k, exact=False)


@given(batch_pairs(exact=True), st.integers(1, 14))
def test_scores_top_k_exact_ids_with_ties(pair: tuple[SparseBatch, SparseBatch], k: int) -> None:
    a, b = pair
    check_scores_top_k(a, b, k, exact=True)
    check_scores(a, b)
    s, _ = oracle_scores(a, b)
    np.testing.assert_array_equal(a.scores(b), s.astype(np.float32))  # exact data: exact scores


def test_scores_top_k_zero_score_rows_and_negative_scores() -> None:
    q = SparseBatch.from_dicts([{0: 1.0}, {1: 1.0, 2: -1.0}, {}], dim=6)
    d = SparseBatch.from_dicts([{3: 2.0}, {0: -1.0}, {2: 1.0}, {5: 1.0}, {0: 0.5, 1: 1.0}], dim=6)
    ids, sc = q.scores_top_k(d, 4)
    # row 0: scores [0, -1, 0, 0, 0.5] -> 4 (0.5), then zero-score rows 0, 2, 3 by id
    np.testing.assert_array_equal(ids[0], [4, 0, 2, 3])
    np.testing.assert_array_equal(sc[0], [0.5, 0.0, 0.0, 0.0])
    # row 1: scores [0, 0, -1, 0, 1] -> 4, 0, 1, 3
    np.testing.assert_array_equal(ids[1], [4, 0, 1, 3])
    np.testing.assert_array_equal(sc[1], [1.0, 0.0, 0.0, 0.0])
    # row 2 (empty): all score 0 -> smallest ids
    np.testing.assert_array_equal(ids[2], [0, 1, 2, 3])
    ids, sc = q.scores_top_k(d, 7)  # more than other.n_rows: padded
    np.testing.assert_array_equal(ids[0], [4, 0, 2, 3, 1, -1, -1])
    assert np.isneginf(sc[:, 5:]).all()
    check_scores_top_k(q, d, 7, exact=True)


@given(small_dense_batches, st.data())
def test_matmul_dense_matches_numpy(b: SparseBatch, data: st.DataObject) -> None:
    p = data.draw(st.integers(0, 4))
    mat = data.draw(arrays(np.float32, (b.dim, p), elements=st.floats(-4.0, 4.0, width=32)))
    check_matmul(b, mat)


def test_matmul_dense_accepts_other_dtypes_and_layouts() -> None:
    b = SparseBatch.from_dicts([{0: 1.5, 2: -2.0}, {}, {1: 4.0}], dim=3)
    mat = np.arange(12, dtype=np.float64).reshape(4, 3).T  # (3, 4) Fortran-ordered float64
    want = scipy_dense(*batch_arrays(b), 3) @ mat
    np.testing.assert_array_equal(b.matmul_dense(mat), want.astype(np.float32))


# ---------------------------------------------------------------------------------------------------------------
# Quantization
# ---------------------------------------------------------------------------------------------------------------


@given(small_batches, st.sampled_from([8, 16]), st.sampled_from([1.0, 1e-3, 1e4]))
def test_quantize_roundtrip_within_half_step(b: SparseBatch, bits: int, mult: float) -> None:
    ip, idx, val = batch_arrays(b)
    check_quantize(SparseBatch(ip, idx, (val.astype(np.float64) * mult).astype(np.float32), b.dim), bits)


@given(sparse_batches(max_rows=10, max_row_nnz=12, nonneg=True), st.sampled_from([8, 16]))
def test_quantize_nonneg_keeps_offset_zero_and_zeros_exact(b: SparseBatch, bits: int) -> None:
    check_quantize(b, bits)
    q = b.quantize(8) if bits == 8 else b.quantize(16)
    assert q.offset == 0.0
    deq = q.dequantize()
    zero = np.asarray(b.data) == 0.0
    assert np.all(deq.data[zero] == 0.0)
    assert np.all(deq.data >= 0.0)


# ---------------------------------------------------------------------------------------------------------------
# Rows: indexing, slicing, concat, attributes
# ---------------------------------------------------------------------------------------------------------------

raw_arrays = csr_arrays(max_rows=12, max_row_nnz=10)


@given(raw_arrays)
def test_attributes_and_construction_without_copy(arrs: Arrays) -> None:
    ip, idx, val, d = arrs
    b = SparseBatch(*arrs)
    rows = rows_of_arrays(ip, idx, val)
    assert len(b) == b.n_rows == len(ip) - 1
    assert b.shape == (len(ip) - 1, d)
    assert b.nnz == len(idx)
    np.testing.assert_array_equal(b.row_nnz, [len(i) for i, _ in rows])
    assert b.row_nnz.sum() == b.nnz
    assert_batch(b, rows, d)
    if len(val):
        assert np.shares_memory(b.data, val)
        assert np.shares_memory(b.indices, idx)


@given(raw_arrays, st.data())
def test_getitem_int(arrs: Arrays, data: st.DataObject) -> None:
    ip, idx, val, d = arrs
    n = len(ip) - 1
    b = SparseBatch(*arrs)
    rows = rows_of_arrays(ip, idx, val)
    if n:
        i = data.draw(st.integers(-n, n - 1))
        assert_batch(b[i], [rows[i]], d)
        assert_batch(b[np.int64(i)], [rows[i]], d)
    with pytest.raises(IndexError):
        b[n]
    with pytest.raises(IndexError):
        b[-n - 1]


@given(raw_arrays, st.data())
def test_getitem_contiguous_slice_is_zero_copy(arrs: Arrays, data: st.DataObject) -> None:
    ip, idx, val, d = arrs
    n = len(ip) - 1
    b = SparseBatch(*arrs)
    rows = rows_of_arrays(ip, idx, val)
    start = data.draw(st.none() | st.integers(-n - 2, n + 2))
    stop = data.draw(st.none() | st.integers(-n - 2, n + 2))
    s = b[start:stop]
    sel = rows[start:stop]
    assert_batch(s, sel, d)
    if sum(len(i) for i, _ in sel):
        assert np.shares_memory(s.data, b.data)
        assert np.shares_memory(s.indices, b.indices)
        assert np.shares_memory(s.data, val)


@given(raw_arrays, st.data())
def test_getitem_strided_slice(arrs: Arrays, data: st.DataObject) -> None:
    ip, idx, val, d = arrs
    n = len(ip) - 1
    b = SparseBatch(*arrs)
    rows = rows_of_arrays(ip, idx, val)
    assert_batch(b[::2], rows[::2], d)
    assert_batch(b[::-1], rows[::-1], d)
    start = data.draw(st.none() | st.integers(-n - 2, n + 2))
    stop = data.draw(st.none() | st.integers(-n - 2, n + 2))
    step = data.draw(st.integers(-4, 4).filter(lambda x: x != 0))
    assert_batch(b[start:stop:step], rows[start:stop:step], d)


@given(raw_arrays, st.data())
def test_getitem_int_array_with_negatives(arrs: Arrays, data: st.DataObject) -> None:
    ip, idx, val, d = arrs
    n = len(ip) - 1
    b = SparseBatch(*arrs)
    rows = rows_of_arrays(ip, idx, val)
    sel = data.draw(st.lists(st.integers(-n, n - 1), max_size=15)) if n else []
    dtype = data.draw(st.sampled_from([np.int64, np.int32, np.int16]))
    assert_batch(b[np.array(sel, dtype=dtype)], [rows[i] for i in sel], d)
    assert_batch(b[sel] if sel else b[np.zeros(0, np.int64)], [rows[i] for i in sel], d)
    with pytest.raises(IndexError):
        b[np.array([0, n])]
    with pytest.raises(IndexError):
        b[np.array([-n - 1])]


@given(raw_arrays, st.data())
def test_getitem_bool_mask(arrs: Arrays, data: st.DataObject) -> None:
    ip, idx, val, d = arrs
    n = len(ip) - 1
    b = SparseBatch(*arrs)
    rows = rows_of_arrays(ip, idx, val)
    mask = np.array(data.draw(st.lists(st.booleans(), min_size=n, max_size=n)), dtype=bool)
    assert_batch(b[mask], [r for r, m in zip(rows, mask, strict=True) if m], d)
    with pytest.raises(IndexError):
        b[np.ones(n + 1, dtype=bool)]


@st.composite
def same_dim_arrays(draw: st.DrawFn, *, huge: bool = True) -> list[Arrays]:
    d = draw(dims(40, include_huge=huge))
    return draw(st.lists(csr_arrays(max_rows=6, max_row_nnz=8, dim=d), min_size=1, max_size=4))


@given(same_dim_arrays())
def test_concat_matches_row_concatenation(parts: list[Arrays]) -> None:
    d = parts[0][3]
    got = SparseBatch.concat([SparseBatch(*p) for p in parts])
    rows = [r for p in parts for r in rows_of_arrays(*p[:3])]
    assert_batch(got, rows, d)
    assert got.n_rows == sum(len(p[0]) - 1 for p in parts)


@given(same_dim_arrays(huge=False))
def test_concat_matches_dense_vstack(parts: list[Arrays]) -> None:
    d = parts[0][3]
    got = SparseBatch.concat([SparseBatch(*p) for p in parts])
    want = np.vstack([scipy_dense(p[0], p[1], p[2], d) for p in parts])
    np.testing.assert_array_equal(scipy_dense(*batch_arrays(got), d), want)
    np.testing.assert_array_equal(got.to_dense(), want.astype(np.float32))


@given(raw_arrays, st.data())
def test_concat_of_slices(arrs: Arrays, data: st.DataObject) -> None:
    ip, idx, val, d = arrs
    n = len(ip) - 1
    b = SparseBatch(*arrs)
    rows = rows_of_arrays(ip, idx, val)
    cut = data.draw(st.integers(0, n))
    got = SparseBatch.concat([b[cut:], b[:cut], b[::-1]])
    assert_batch(got, rows[cut:] + rows[:cut] + rows[::-1], d)


# ---------------------------------------------------------------------------------------------------------------
# Dense conversions
# ---------------------------------------------------------------------------------------------------------------


@given(csr_arrays(max_rows=10, max_dim=40, max_row_nnz=12, include_huge_dims=False))
def test_to_dense_matches_scipy(arrs: Arrays) -> None:
    b = SparseBatch(*arrs)
    got = b.to_dense()
    assert got.dtype == np.float32
    assert got.shape == (len(arrs[0]) - 1, arrs[3])
    np.testing.assert_array_equal(got, scipy_dense(*arrs).astype(np.float32))


@given(small_dense_batches)
def test_from_dense_of_to_dense_drops_zeros(b: SparseBatch) -> None:
    back = SparseBatch.from_dense(b.to_dense())
    assert back.equals(b.canonicalize(drop_zeros=True))
    assert_batch(back, [(i[v != 0], v[v != 0]) for i, v in rows_of(b)], b.dim, bits=False)


@given(st.sampled_from([np.float32, np.float64, np.int32, np.uint8, np.bool_]), st.data())
def test_from_dense_matches_nonzero_oracle(dtype: type[np.generic], data: st.DataObject) -> None:
    kind = np.dtype(dtype).kind
    pool: list[Any] = [0.0, 0.0, 0.0, -0.0, 1.0, -2.5, 3.0, 0.25, 1e-40] if kind == "f" else [0, 0, 1, 3]
    if kind == "b":
        pool = [False, False, True]
    shape = data.draw(st.tuples(st.integers(0, 8), st.integers(1, 12)))
    x = data.draw(arrays(dtype, shape, elements=st.sampled_from(pool)))
    got = SparseBatch.from_dense(x)
    x32 = x.astype(np.float32)
    rows: list[Row] = []
    for r in range(x.shape[0]):
        nz = np.flatnonzero(x32[r] != 0)
        rows.append((nz.astype(np.uint32), x32[r, nz]))
    assert_batch(got, rows, x.shape[1])


# ---------------------------------------------------------------------------------------------------------------
# Thread-count invariance
# ---------------------------------------------------------------------------------------------------------------


def _random_batch(seed: int, n_rows: int, dim: int, max_nnz: int, *, canonical: bool = True) -> Arrays:
    rng = np.random.default_rng(seed)
    lens = rng.integers(0, max_nnz + 1, n_rows)
    lens[rng.random(n_rows) < 0.1] = 0
    idx_parts: list[NDArray[Any]] = []
    for n in lens.tolist():
        if canonical:
            idx_parts.append(np.sort(rng.choice(dim, n, replace=False)))
        else:
            idx_parts.append(rng.integers(0, min(dim, max(1, n)), n))  # unsorted, many repeats
    ip = np.concatenate([[0], np.cumsum(lens)]).astype(np.int64)
    idx = np.concatenate([*idx_parts, np.zeros(0, np.int64)]).astype(np.uint32)
    val = rng.standard_normal(len(idx)).astype(np.float32)
    ties = rng.random(len(idx)) < 0.4
    val[ties] = rng.integers(-8, 9, int(ties.sum())) / 4  # many exact ties and zeros
    return ip, idx, val, dim


@pytest.fixture(scope="module")
def big() -> dict[str, Any]:
    dim = 2000
    a = _random_batch(1, 1500, dim, 40)
    return {
        "a": make(a),
        "a_same_rows": make(_random_batch(2, 1500, dim, 40)),
        "b": make(_random_batch(3, 300, dim, 40)),
        "raw": _random_batch(4, 1300, dim, 30, canonical=False),
        "mat": np.random.default_rng(5).standard_normal((dim, 3)).astype(np.float32),
        "dense": make(_random_batch(6, 700, 300, 40)).to_dense(),
    }


Op = Callable[[dict[str, Any], int], tuple[NDArray[Any], ...]]

THREAD_OPS: dict[str, Op] = {
    "top_k": lambda g, t: batch_arrays(g["a"].top_k(5, num_threads=t)),
    "top_k_mag": lambda g, t: batch_arrays(g["a"].top_k(7, by_magnitude=True, num_threads=t)),
    "threshold": lambda g, t: batch_arrays(g["a"].threshold(0.25, num_threads=t)),
    "threshold_mag": lambda g, t: batch_arrays(g["a"].threshold(0.5, by_magnitude=True, num_threads=t)),
    "prune_mass": lambda g, t: batch_arrays(g["a"].prune_mass(0.7, num_threads=t)),
    "canonicalize_sum": lambda g, t: batch_arrays(
        SparseBatch(*g["raw"], check=False).canonicalize("sum", drop_zeros=True, num_threads=t)
    ),
    "canonicalize_max": lambda g, t: batch_arrays(
        SparseBatch(*g["raw"], check=False).canonicalize("max", num_threads=t)
    ),
    "dot": lambda g, t: (g["a"].dot(g["a_same_rows"], num_threads=t),),
    "scores": lambda g, t: (g["a"].scores(g["b"], num_threads=t),),
    "scores_top_k": lambda g, t: g["a"].scores_top_k(g["b"], 10, num_threads=t),
    "matmul_dense": lambda g, t: (g["a"].matmul_dense(g["mat"], num_threads=t),),
    "to_dense": lambda g, t: (g["a"].to_dense(num_threads=t),),
    "from_dense": lambda g, t: batch_arrays(SparseBatch.from_dense(g["dense"], num_threads=t)),
    "quantize8": lambda g, t: (g["a"].quantize(8, num_threads=t).codes,),
    "quantize16": lambda g, t: (g["a"].quantize(16, num_threads=t).codes,),
    "dequantize": lambda g, t: batch_arrays(g["a"].quantize(8).dequantize(num_threads=t)),
}


@pytest.mark.parametrize("op", sorted(THREAD_OPS))
def test_results_do_not_depend_on_thread_count(big: dict[str, Any], op: str) -> None:
    results = [THREAD_OPS[op](big, t) for t in THREADS]
    for t, res in zip(THREADS[1:], results[1:], strict=True):
        assert len(res) == len(results[0])
        for x, y in zip(results[0], res, strict=True):
            assert bit_identical(x, y), f"{op}: num_threads=1 and num_threads={t} differ"


def test_quantize_scale_offset_do_not_depend_on_thread_count(big: dict[str, Any]) -> None:
    qs = [big["a"].quantize(16, num_threads=t) for t in THREADS]
    assert len({(q.scale, q.offset) for q in qs}) == 1


def test_big_batch_matches_oracles(big: dict[str, Any]) -> None:
    # Rows span several 256-row chunks: check the stitched results, not just their invariance.
    a, b = big["a"], big["b"]
    for t in THREADS:
        rows = rows_of(a)
        assert_batch(a.top_k(5, num_threads=t), oracle_top_k(rows, 5, False), a.dim)
        assert_batch(a.threshold(0.5, by_magnitude=True, num_threads=t), oracle_threshold(rows, 0.5, True), a.dim)
        assert_batch(a.prune_mass(0.7, num_threads=t), oracle_prune_mass(rows, 0.7), a.dim)
    check_dot(a, big["a_same_rows"])
    check_scores(a, b)
    check_scores_top_k(a[:400], b, 10, exact=False)
    check_matmul(a, big["mat"])
    check_quantize(a, 8)
    check_canonical_sum(SparseBatch(*big["raw"], check=False).canonicalize("sum"), big["raw"], drop_zeros=False)
    np.testing.assert_array_equal(a.to_dense(num_threads=3), scipy_dense(*batch_arrays(a), a.dim).astype(np.float32))


@given(batch_pairs(), st.integers(1, 12), f32_thresholds, st.floats(0.0, 1.0, exclude_min=True))
def test_small_batches_thread_invariance(
    pair: tuple[SparseBatch, SparseBatch], k: int, t: float, fraction: float
) -> None:
    a, b = pair
    ops: list[Callable[[int], tuple[NDArray[Any], ...]]] = [
        lambda n: batch_arrays(a.top_k(k, num_threads=n)),
        lambda n: batch_arrays(a.threshold(t, by_magnitude=True, num_threads=n)),
        lambda n: batch_arrays(a.prune_mass(fraction, num_threads=n)),
        lambda n: batch_arrays(a.canonicalize(drop_zeros=True, num_threads=n)),
        lambda n: (a.scores(b, num_threads=n),),
        lambda n: a.scores_top_k(b, k, num_threads=n),
        lambda n: (a.quantize(8, num_threads=n).codes,),
    ]
    for op in ops:
        base = op(1)
        for n in THREADS[1:]:
            assert all(bit_identical(x, y) for x, y in zip(base, op(n), strict=True))


# ---------------------------------------------------------------------------------------------------------------
# Edge cases
# ---------------------------------------------------------------------------------------------------------------

H = MAX_DIM
EDGE: dict[str, Callable[[], SparseBatch]] = {
    "no_rows": lambda: SparseBatch(np.zeros(1, np.int64), np.zeros(0, np.uint32), np.zeros(0, np.float32), 5),
    "no_rows_huge": lambda: SparseBatch.empty(0, H),
    "all_rows_empty": lambda: SparseBatch.empty(4, 7),
    "some_rows_empty": lambda: SparseBatch(
        [0, 0, 2, 2, 5, 5], [1, 4, 0, 2, 3], np.array([2, -1, 0, 0.5, -0.5], np.float32), 5
    ),
    "dim_1": lambda: SparseBatch([0, 1, 1, 2, 3], [0, 0, 0], np.array([-2.5, 0.0, 4.0], np.float32), 1),
    "dim_max": lambda: SparseBatch(
        [0, 3, 3, 5, 6],
        np.array([0, H - 3, H - 1, H - 2, H - 1, H - 1], np.uint32),
        np.array([1.0, -2.0, 3.0, 3.0, -1.0, 0.5], np.float32),
        H,
    ),
    "dim_2**31": lambda: SparseBatch(
        [0, 2, 4], np.array([2**31 - 1, 2**31, 0, 2**31], np.uint32), np.array([1, 2, 3, -4], np.float32), 2**31 + 1
    ),
}
EDGE_NAMES = sorted(EDGE)
SMALL_EDGE = [n for n in EDGE_NAMES if EDGE[n]().dim <= 64]


@pytest.mark.parametrize("name", EDGE_NAMES)
@pytest.mark.parametrize("k", [1, 2, 10_000])
def test_edge_top_k(name: str, k: int) -> None:
    b = EDGE[name]()
    for mag in (False, True):
        check_top_k(b, k, mag)
    if k == 10_000:  # k larger than every row: nothing dropped
        assert_batch(b.top_k(k), rows_of(b), b.dim)


@pytest.mark.parametrize("name", EDGE_NAMES)
def test_edge_threshold_prune_canonicalize(name: str) -> None:
    b = EDGE[name]()
    for t in (-10.0, -0.0, 0.0, 0.5, 3.0, 100.0):
        check_threshold(b, t, False)
        check_threshold(b, t, True)
    for f in (1e-9, 0.5, 1.0):
        check_prune_mass(b, f)
    assert_batch(b.canonicalize(drop_zeros=True), [(i[v != 0], v[v != 0]) for i, v in rows_of(b)], b.dim)
    assert_batch(b.canonicalize("max"), rows_of(b), b.dim)


@pytest.mark.parametrize("name", EDGE_NAMES)
@pytest.mark.parametrize("k", [1, 3, 50])
def test_edge_products(name: str, k: int) -> None:
    b = EDGE[name]()
    check_dot(b, b)
    check_scores(b, b)
    check_scores_top_k(b, b, k, exact=True)
    none = SparseBatch.empty(0, b.dim)
    ids, sc = b.scores_top_k(none, k)
    assert ids.shape == (b.n_rows, k)
    assert np.all(ids == -1)
    assert np.all(np.isneginf(sc))
    assert b.scores(none).shape == (b.n_rows, 0)
    check_scores_top_k(none, b, k, exact=True)
    assert b.matmul_dense(np.zeros((b.dim, 0), np.float32)).shape == (b.n_rows, 0)


@pytest.mark.parametrize("name", SMALL_EDGE)
def test_edge_dense(name: str) -> None:
    b = EDGE[name]()
    want = scipy_dense(*batch_arrays(b), b.dim)
    np.testing.assert_array_equal(b.to_dense(), want.astype(np.float32))
    check_matmul(b, np.arange(b.dim * 3, dtype=np.float32).reshape(b.dim, 3) - 2)
    back = SparseBatch.from_dense(b.to_dense())
    assert_batch(back, [(i[v != 0], v[v != 0]) for i, v in rows_of(b)], b.dim, bits=False)


@pytest.mark.parametrize("name", EDGE_NAMES)
@pytest.mark.parametrize("bits", [8, 16])
def test_edge_quantize(name: str, bits: int) -> None:
    check_quantize(EDGE[name](), bits)


@pytest.mark.parametrize("name", EDGE_NAMES)
def test_edge_rows(name: str) -> None:
    b = EDGE[name]()
    rows = rows_of(b)
    n = len(rows)
    assert len(b) == n
    assert b.shape == (n, b.dim)
    assert b.nnz == sum(len(i) for i, _ in rows)
    np.testing.assert_array_equal(b.row_nnz, [len(i) for i, _ in rows])
    assert_batch(b[:], rows, b.dim)
    assert_batch(b[1:], rows[1:], b.dim)
    assert_batch(b[::2], rows[::2], b.dim)
    assert_batch(b[np.zeros(n, bool)], [], b.dim)
    assert_batch(b[np.ones(n, bool)], rows, b.dim)
    assert_batch(b[np.arange(-n, n)], rows + rows, b.dim)
    assert_batch(SparseBatch.concat([b, b[:0], b]), rows + rows, b.dim)
    if n:
        assert_batch(b[-1], rows[-1:], b.dim)


def test_edge_huge_dim_indices_roundtrip_through_scipy_products() -> None:
    b = EDGE["dim_max"]()
    m = sp.csr_array(
        (np.asarray(b.data, np.float64), np.asarray(b.indices, np.int64), np.asarray(b.indptr)), shape=b.shape
    )
    # scipy's m @ m.T would build a CSC with dim + 1 offsets; elementwise row products stay O(nnz)
    n = b.n_rows
    want = np.array([[float(m[[i]].multiply(m[[j]]).sum()) for j in range(n)] for i in range(n)])
    assert want[0, 2] == -3.0  # rows 0 and 2 share only column H - 1: 3.0 * -1.0
    np.testing.assert_array_equal(b.scores(b), want.astype(np.float32))
    np.testing.assert_array_equal(b.dot(b), np.diagonal(want).astype(np.float32))
    ids, _ = b.scores_top_k(b, 2)
    for i in range(b.n_rows):
        np.testing.assert_array_equal(ids[i], np.lexsort((np.arange(b.n_rows), -want[i]))[:2])
