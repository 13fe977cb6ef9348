"""Round-trip and zero-copy properties of SparseBatch's converters (numpy arrays, scipy, torch, dicts, pairs)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from typing import Any

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from hypothesis import given
from hypothesis import strategies as st
from numpy.typing import NDArray
from sparsecore import MAX_DIM, SparseBatch
from sparsecore.testing.strategies import csr_arrays, sparse_batches

# torch warns once per process that sparse CSR support is in beta; that is torch talking, not sparsecore, and
# the test code itself builds CSR tensors. (Whether sparsecore lets it escape is checked in a subprocess below.)
pytestmark = pytest.mark.filterwarnings("ignore:Sparse CSR tensor support is in beta state:UserWarning")

Arr = NDArray[Any]
CsrTuple = tuple[Arr, Arr, Arr, int]

HUGE_DIMS = [MAX_DIM, MAX_DIM - 1, 2**31 + 1, 2**31, 2**31 - 1]

# Batches small enough to densify (dims <= 64).
small_batches = sparse_batches(include_huge_dims=False)
small_csr = csr_arrays(include_huge_dims=False)
# Batches whose dims are near 2**32 - 1 (never densified).
huge_csr = st.sampled_from(HUGE_DIMS).flatmap(lambda d: csr_arrays(dim=d))
# Values whose sums are exact in float32 whatever the order (multiples of 1/4 in [-8, 8]).
exact_values = st.integers(-32, 32).map(lambda v: v / 4)


def reference_dense(indptr: Arr, indices: Arr, data: Arr, dim: int) -> NDArray[np.float32]:
    """Dense matrix of CSR arrays, repeated entries added in input order (float32), computed with numpy."""
    n_rows = len(indptr) - 1
    out = np.zeros((n_rows, dim), dtype=np.float32)
    counts = np.asarray(np.diff(np.asarray(indptr, dtype=np.int64)), dtype=np.int64)
    rows = np.repeat(np.arange(n_rows), counts)
    cols = np.asarray(indices).tolist()
    for r, c, v in zip(rows.tolist(), cols, np.asarray(data, dtype=np.float32).tolist(), strict=True):
        out[r, c] = np.float32(out[r, c] + np.float32(v))
    return out


def reference_dicts(indptr: Arr, indices: Arr, data: Arr) -> list[dict[int, float]]:
    """One ``{column: value}`` dict per row, repeats added in input order in float32 (sparsecore's rule)."""
    ip = np.asarray(indptr).tolist()
    idx = np.asarray(indices).tolist()
    val = np.asarray(data, dtype=np.float32)
    out: list[dict[int, float]] = []
    for r in range(len(ip) - 1):
        acc: dict[int, np.float32] = {}
        for p in range(ip[r], ip[r + 1]):
            acc[idx[p]] = np.float32(acc.get(idx[p], np.float32(0.0)) + val[p])
        out.append({c: float(acc[c]) for c in sorted(acc)})
    return out


def assert_same_batch(a: SparseBatch, b: SparseBatch) -> None:
    assert a.dim == b.dim
    assert a.shape == b.shape
    assert a.indptr.dtype == np.int64
    assert a.indices.dtype == np.uint32
    assert a.data.dtype == np.float32
    np.testing.assert_array_equal(a.indptr, b.indptr)
    np.testing.assert_array_equal(a.indices, b.indices)
    np.testing.assert_array_equal(a.data, b.data)
    assert a.equals(b)


def is_strictly_sorted_rows(b: SparseBatch) -> bool:
    return all(bool(np.all(np.diff(b.row(r)[0].astype(np.int64)) > 0)) for r in range(b.n_rows))


# ---------------------------------------------------------------------------------------------------------------
# from_arrays and the array properties
# ---------------------------------------------------------------------------------------------------------------


@given(csr_arrays())
def test_from_arrays_exposes_the_given_arrays(arrs: CsrTuple) -> None:
    ip, idx, val, dim = arrs
    b = SparseBatch.from_arrays(ip, idx, val, dim)
    assert b.dim == dim
    assert b.n_rows == len(ip) - 1 == len(b)
    assert b.shape == (len(ip) - 1, dim)
    assert b.nnz == len(idx)
    assert b.indptr.dtype == np.int64
    assert b.indices.dtype == np.uint32
    assert b.data.dtype == np.float32
    np.testing.assert_array_equal(b.indptr, ip)
    np.testing.assert_array_equal(b.indices, idx)
    np.testing.assert_array_equal(b.data, val)
    np.testing.assert_array_equal(b.row_nnz, np.diff(ip))
    assert b.is_canonical()
    assert b.to_dicts() == reference_dicts(ip, idx, val)
    for r in range(b.n_rows):
        ri, rv = b.row(r)
        np.testing.assert_array_equal(ri, idx[ip[r] : ip[r + 1]])
        np.testing.assert_array_equal(rv, val[ip[r] : ip[r + 1]])
    b.check()


@given(csr_arrays())
def test_array_properties_are_read_only(arrs: CsrTuple) -> None:
    b = SparseBatch.from_arrays(*arrs)
    for a in (b.indptr, b.indices, b.data):
        assert not a.flags.writeable
        with pytest.raises(ValueError, match="read-only"):
            a[...] = 0


@given(csr_arrays(canonical=False))
def test_canonicalize_sorts_and_sums_in_input_order(arrs: CsrTuple) -> None:
    ip, idx, val, dim = arrs
    before = (ip.copy(), idx.copy(), val.copy())
    b = SparseBatch.from_arrays(ip, idx, val, dim, canonicalize=True)
    assert is_strictly_sorted_rows(b)
    assert b.to_dicts() == reference_dicts(ip, idx, val)
    # canonicalising never rewrites the caller's arrays
    for x, y in zip((ip, idx, val), before, strict=True):
        np.testing.assert_array_equal(x, y)
    # "sum" is the meaning of True
    assert_same_batch(SparseBatch.from_arrays(ip, idx, val, dim, canonicalize="sum"), b)


@given(csr_arrays(canonical=False))
def test_canonicalize_max_keeps_the_largest_repeat(arrs: CsrTuple) -> None:
    ip, idx, val, dim = arrs
    b = SparseBatch.from_arrays(ip, idx, val, dim, canonicalize="max")
    expected: list[dict[int, float]] = []
    for r in range(len(ip) - 1):
        acc: dict[int, float] = {}
        for p in range(int(ip[r]), int(ip[r + 1])):
            c, v = int(idx[p]), float(val[p])
            acc[c] = max(acc[c], v) if c in acc else v
        expected.append({c: acc[c] for c in sorted(acc)})
    assert b.to_dicts() == expected


def test_edge_batches() -> None:
    empty = SparseBatch.from_arrays(np.zeros(1, np.int64), np.zeros(0, np.uint32), np.zeros(0, np.float32), 5)
    assert empty.shape == (0, 5)
    assert empty.nnz == 0
    assert empty.to_dicts() == []
    assert empty.to_dense().shape == (0, 5)
    assert_same_batch(SparseBatch.empty(0, 5), empty)

    rows = SparseBatch.from_arrays([0, 0, 0, 0], [], [], 1)  # plain lists; empty lists are float64 in numpy
    assert rows.shape == (3, 1)
    assert rows.to_dicts() == [{}, {}, {}]
    np.testing.assert_array_equal(rows.to_dense(), np.zeros((3, 1), np.float32))
    assert_same_batch(SparseBatch.empty(3, 1), rows)

    one = SparseBatch.from_arrays([0, 1, 1, 2], [0, 0], [2.5, -1.0], 1)
    np.testing.assert_array_equal(one.to_dense(), np.array([[2.5], [0.0], [-1.0]], np.float32))
    assert one.to_dicts() == [{0: 2.5}, {}, {0: -1.0}]


@given(huge_csr)
def test_indices_near_the_uint32_limit(arrs: CsrTuple) -> None:
    ip, idx, val, dim = arrs
    b = SparseBatch.from_arrays(ip, idx.astype(np.int64), val, dim)
    np.testing.assert_array_equal(b.indices, idx)
    assert b.to_dicts() == reference_dicts(ip, idx, val)
    via_u64 = SparseBatch.from_arrays(ip.astype(np.uint64), idx.astype(np.uint64), val.astype(np.float64), dim)
    assert_same_batch(via_u64, b)


def test_largest_index_is_accepted() -> None:
    b = SparseBatch.from_arrays([0, 3], np.array([0, 2**31, MAX_DIM - 1], np.int64), [1.0, 2.0, 3.0], MAX_DIM)
    assert b.to_dicts() == [{0: 1.0, 2**31: 2.0, MAX_DIM - 1: 3.0}]
    assert int(b.indices[-1]) == 2**32 - 2


# ---------------------------------------------------------------------------------------------------------------
# dtypes
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.int32, np.int64, np.uint64, np.uint16, np.uint32, np.int16, np.uint8, np.int8])
@given(arrs=csr_arrays(max_dim=100, include_huge_dims=False))
def test_index_dtypes_are_accepted(dtype: type[np.integer[Any]], arrs: CsrTuple) -> None:
    ip, idx, val, dim = arrs
    ref = SparseBatch.from_arrays(ip, idx, val, dim)
    b = SparseBatch.from_arrays(ip, idx.astype(dtype), val, dim)
    assert_same_batch(b, ref)


@pytest.mark.parametrize("dtype", [np.int32, np.int64, np.uint64, np.uint32, np.uint16])
def test_indptr_dtypes_are_accepted(dtype: type[np.integer[Any]]) -> None:
    b = SparseBatch.from_arrays(np.array([0, 2, 2, 3], dtype=dtype), [1, 4, 0], [1.0, 2.0, 3.0], 5)
    assert b.indptr.dtype == np.int64
    np.testing.assert_array_equal(b.indptr, [0, 2, 2, 3])
    assert b.to_dicts() == [{1: 1.0, 4: 2.0}, {}, {0: 3.0}]


@pytest.mark.parametrize(
    "dtype", [np.float64, np.float16, np.float32, np.int32, np.int64, np.uint8, np.int8, np.uint64, np.bool_]
)
def test_data_dtypes_are_accepted(dtype: type[np.generic]) -> None:
    raw = np.array([3, 0, 1, 2, 1, 0], dtype=np.float64) if dtype is not np.bool_ else np.array([1, 0, 1, 1, 0, 1])
    data = raw.astype(dtype)
    b = SparseBatch.from_arrays([0, 2, 6], [0, 3, 1, 2, 5, 7], data, 8)
    assert b.data.dtype == np.float32
    np.testing.assert_array_equal(b.data, data.astype(np.float32))
    assert b.nnz == 6  # zeros are stored entries, not dropped


@given(csr_arrays(include_huge_dims=False))
def test_float64_and_float16_data_round_to_float32(arrs: CsrTuple) -> None:
    ip, idx, val, dim = arrs
    wide = val.astype(np.float64) + 1e-9  # not representable in float32: must be rounded, not rejected
    b = SparseBatch.from_arrays(ip, idx, wide, dim)
    np.testing.assert_array_equal(b.data, wide.astype(np.float32))
    half = val.astype(np.float16)
    h = SparseBatch.from_arrays(ip, idx, half, dim)
    np.testing.assert_array_equal(h.data, half.astype(np.float32))


# ---------------------------------------------------------------------------------------------------------------
# zero-copy guarantees
# ---------------------------------------------------------------------------------------------------------------


def test_from_arrays_uses_canonical_dtypes_in_place() -> None:
    ip = np.array([0, 2, 3], dtype=np.int64)
    idx = np.array([1, 4, 0], dtype=np.uint32)
    val = np.array([1.0, 2.0, 3.0], dtype=np.float32)
    b = SparseBatch.from_arrays(ip, idx, val, 5)
    assert np.shares_memory(b.indptr, ip)
    assert np.shares_memory(b.indices, idx)
    assert np.shares_memory(b.data, val)
    # shared, so a change to the caller's array shows (documented: don't modify them)
    val[1] = 7.0
    assert float(b.data[1]) == 7.0


def test_int32_indices_are_viewed_not_copied() -> None:
    idx32 = np.array([1, 4, 0, 2], dtype=np.int32)
    b = SparseBatch.from_arrays([0, 2, 4], idx32, np.ones(4, np.float32), 5)
    assert b.indices.dtype == np.uint32
    assert np.shares_memory(b.indices, idx32)
    np.testing.assert_array_equal(b.indices, [1, 4, 0, 2])


@pytest.mark.parametrize("dtype", [np.int64, np.uint64, np.uint16])
def test_other_index_dtypes_are_copied(dtype: type[np.integer[Any]]) -> None:
    idx = np.array([1, 4, 0], dtype=dtype)
    b = SparseBatch.from_arrays([0, 2, 3], idx, np.ones(3, np.float32), 5)
    assert not np.shares_memory(b.indices, idx)
    np.testing.assert_array_equal(b.indices, [1, 4, 0])


def test_non_contiguous_inputs_are_copied_to_contiguous() -> None:
    idx = np.array([1, 99, 4, 99, 0, 99], dtype=np.uint32)[::2]
    val = np.array([1.0, -1.0, 2.0, -1.0, 3.0, -1.0], dtype=np.float32)[::2]
    b = SparseBatch.from_arrays([0, 2, 3], idx, val, 5)
    assert b.indices.flags.c_contiguous
    assert b.data.flags.c_contiguous
    assert b.to_dicts() == [{1: 1.0, 4: 2.0}, {0: 3.0}]


def test_to_scipy_shares_data() -> None:
    val = np.array([1.0, 2.0, 3.0], dtype=np.float32)
    b = SparseBatch.from_arrays(np.array([0, 2, 3]), np.array([1, 4, 0], np.uint32), val, 5)
    m = b.to_scipy()
    assert np.shares_memory(m.data, val)
    assert np.shares_memory(m.data, b.data)
    op = b.top_k(1)  # arrays owned by numpy after an operation
    assert np.shares_memory(op.to_scipy().data, op.data)


def test_from_scipy_uses_canonical_csr_in_place() -> None:
    m = sp.csr_array(
        (np.array([1.0, 2.0, 3.0], np.float32), np.array([1, 4, 0], np.int32), np.array([0, 2, 3], np.int32)),
        shape=(2, 5),
    )
    b = SparseBatch.from_scipy(m)
    assert np.shares_memory(b.data, m.data)
    assert np.shares_memory(b.indices, m.indices)
    assert b.to_dicts() == [{1: 1.0, 4: 2.0}, {0: 3.0}]


def test_to_torch_shares_writable_values_and_copies_read_only_ones() -> None:
    val = np.array([1.0, 2.0, 3.0], dtype=np.float32)
    b = SparseBatch.from_arrays(np.array([0, 2, 3]), np.array([1, 4, 0], np.uint32), val, 5)
    for layout in ("coo", "csr"):
        t = b.to_torch(layout)
        assert np.shares_memory(t.values().numpy(), val)
    ro = val.copy()
    ro.flags.writeable = False
    t = SparseBatch.from_arrays(np.array([0, 2, 3]), np.array([1, 4, 0], np.uint32), ro, 5).to_torch()
    assert not np.shares_memory(t.values().numpy(), ro)
    np.testing.assert_array_equal(t.values().numpy(), ro)


@given(sparse_batches())
def test_to_pairs_are_read_only_views(b: SparseBatch) -> None:
    pairs = b.to_pairs()
    assert len(pairs) == b.n_rows
    for r, (ix, vs) in enumerate(pairs):
        assert ix.dtype == np.uint32
        assert vs.dtype == np.float32
        assert not ix.flags.writeable
        assert not vs.flags.writeable
        if ix.size:
            assert np.shares_memory(ix, b.indices)
            assert np.shares_memory(vs, b.data)
        s, e = int(b.indptr[r]), int(b.indptr[r + 1])
        np.testing.assert_array_equal(ix, b.indices[s:e])
        np.testing.assert_array_equal(vs, b.data[s:e])


# ---------------------------------------------------------------------------------------------------------------
# scipy
# ---------------------------------------------------------------------------------------------------------------


@given(sparse_batches())
def test_to_scipy_csr_matches_the_batch(b: SparseBatch) -> None:
    m = b.to_scipy()
    assert isinstance(m, sp.csr_array)
    assert m.shape == b.shape
    assert m.dtype == np.float32
    assert m.nnz == b.nnz  # explicit zeros are kept
    np.testing.assert_array_equal(m.indptr, b.indptr)
    np.testing.assert_array_equal(m.indices.astype(np.int64), b.indices.astype(np.int64))
    np.testing.assert_array_equal(m.data, b.data)


@given(sparse_batches())
def test_scipy_round_trip_csr_and_coo(b: SparseBatch) -> None:
    assert_same_batch(SparseBatch.from_scipy(b.to_scipy()), b)
    coo = b.to_scipy("coo")
    assert isinstance(coo, sp.coo_array)
    assert coo.nnz == b.nnz
    rows = np.repeat(np.arange(b.n_rows), b.row_nnz)
    np.testing.assert_array_equal(coo.coords[0], rows)
    np.testing.assert_array_equal(coo.coords[1].astype(np.int64), b.indices.astype(np.int64))
    assert_same_batch(SparseBatch.from_scipy(coo), b)
    assert_same_batch(SparseBatch.from_scipy(sp.csr_matrix(b.to_scipy())), b)


@given(small_batches)
def test_scipy_round_trip_csc_and_dense(b: SparseBatch) -> None:
    csc = b.to_scipy("csc")
    assert isinstance(csc, sp.csc_array)
    np.testing.assert_array_equal(csc.toarray(), b.to_dense())
    np.testing.assert_array_equal(b.to_scipy().toarray(), b.to_dense())
    assert_same_batch(SparseBatch.from_scipy(csc), b)
    assert_same_batch(SparseBatch.from_scipy(sp.csc_matrix(csc)), b)


@st.composite
def messy_scipy_csr(draw: st.DrawFn) -> tuple[Arr, Arr, Arr, int]:
    """scipy CSR parts with unsorted rows, repeated columns and explicit zeros; values sum exactly."""
    dim = draw(st.integers(1, 40))
    n_rows = draw(st.integers(0, 8))
    indptr = [0]
    idx: list[int] = []
    val: list[float] = []
    for _ in range(n_rows):
        cols = draw(st.lists(st.integers(0, dim - 1), max_size=12))
        idx.extend(cols)
        val.extend(draw(st.lists(exact_values, min_size=len(cols), max_size=len(cols))))
        indptr.append(len(idx))
    return np.array(indptr, np.int32), np.array(idx, np.int32), np.array(val, np.float32), dim


@given(messy_scipy_csr(), st.sampled_from(["csr_array", "csr_matrix", "coo_array", "coo_matrix", "csc_array"]))
def test_from_scipy_sums_duplicates_like_scipy(parts: tuple[Arr, Arr, Arr, int], kind: str) -> None:
    indptr, idx, val, dim = parts
    n_rows = len(indptr) - 1
    m: Any = sp.csr_array((val, idx, indptr), shape=(n_rows, dim))
    original = (m.indptr.copy(), m.indices.copy(), m.data.copy())
    if kind == "csr_matrix":
        m = sp.csr_matrix((val, idx, indptr), shape=(n_rows, dim))
    elif kind.startswith("coo"):
        rows = np.repeat(np.arange(n_rows), np.diff(indptr))
        cls = sp.coo_array if kind == "coo_array" else sp.coo_matrix
        m = cls((val, (rows, idx)), shape=(n_rows, dim))
    elif kind == "csc_array":
        m = sp.csr_array((val, idx, indptr), shape=(n_rows, dim)).tocsc()

    b = SparseBatch.from_scipy(m)

    expected = sp.csr_array((val.copy(), idx.copy(), indptr.copy()), shape=(n_rows, dim))
    expected.sum_duplicates()  # sorts, adds repeats, keeps explicit zeros
    assert b.is_canonical()
    assert b.shape == (n_rows, dim)
    np.testing.assert_array_equal(b.indptr, expected.indptr)
    np.testing.assert_array_equal(b.indices, expected.indices)
    np.testing.assert_array_equal(b.data, expected.data)
    np.testing.assert_array_equal(b.to_dense(), m.toarray())
    if kind == "csr_array":  # the caller's matrix is left as it was (not sorted in place)
        for x, y in zip((m.indptr, m.indices, m.data), original, strict=True):
            np.testing.assert_array_equal(x, y)


def test_from_scipy_keeps_explicit_zeros_and_adds_repeats() -> None:
    m = sp.csr_array(
        (np.array([0.0, 1.5, 2.0, -2.0, 0.5], np.float64), np.array([3, 1, 1, 0, 0]), np.array([0, 3, 5])),
        shape=(2, 4),
    )
    b = SparseBatch.from_scipy(m)
    assert b.to_dicts() == [{1: 3.5, 3: 0.0}, {0: -1.5}]
    assert b.nnz == 3
    back = b.to_scipy()
    assert back.nnz == 3  # the explicit zero survives the way back
    np.testing.assert_array_equal(back.toarray(), m.toarray())


@given(huge_csr)
def test_scipy_with_huge_dims(arrs: CsrTuple) -> None:
    ip, idx, val, dim = arrs
    b = SparseBatch.from_arrays(ip, idx, val, dim)
    m = b.to_scipy()
    assert m.shape == (len(ip) - 1, dim)
    if dim > 2**31 - 1:
        assert m.indices.dtype == np.int64
    np.testing.assert_array_equal(m.indices.astype(np.int64), idx.astype(np.int64))
    assert_same_batch(SparseBatch.from_scipy(m), b)
    scipy_made = sp.csr_array((val.astype(np.float64), idx.astype(np.int64), ip), shape=(len(ip) - 1, dim))
    assert_same_batch(SparseBatch.from_scipy(scipy_made), b)


# ---------------------------------------------------------------------------------------------------------------
# torch
# ---------------------------------------------------------------------------------------------------------------


@given(small_batches, st.sampled_from(["coo", "csr"]))
def test_to_torch_matches_dense(b: SparseBatch, layout: str) -> None:
    t = b.to_torch(layout)  # type: ignore[arg-type]
    assert t.layout == (torch.sparse_coo if layout == "coo" else torch.sparse_csr)
    assert tuple(t.shape) == b.shape
    assert t.dtype == torch.float32
    assert t.device.type == "cpu"
    np.testing.assert_array_equal(t.to_dense().numpy(), b.to_dense())
    if layout == "coo":
        assert t.is_coalesced()
        assert t.indices().dtype == torch.int64
        assert t._nnz() == b.nnz
    else:
        np.testing.assert_array_equal(t.crow_indices().numpy(), b.indptr)
        np.testing.assert_array_equal(t.col_indices().numpy(), b.indices.astype(np.int64))


@given(sparse_batches(), st.sampled_from(["coo", "csr"]))
def test_torch_round_trip(b: SparseBatch, layout: str) -> None:
    back = SparseBatch.from_torch(b.to_torch(layout))  # type: ignore[arg-type]
    assert_same_batch(back, b)  # includes explicit zeros and dims near 2**32 - 1


@given(huge_csr)
def test_to_torch_coo_indices_with_huge_dims(arrs: CsrTuple) -> None:
    ip, idx, val, dim = arrs
    b = SparseBatch.from_arrays(ip, idx, val, dim)
    t = b.to_torch("coo")
    assert tuple(t.shape) == (len(ip) - 1, dim)
    ind = t.indices().numpy()
    np.testing.assert_array_equal(ind[0], np.repeat(np.arange(len(ip) - 1), np.diff(ip)))
    np.testing.assert_array_equal(ind[1], idx.astype(np.int64))
    np.testing.assert_array_equal(t.values().numpy(), val)


@given(small_csr, st.sampled_from([torch.float32, torch.float64, torch.bfloat16, torch.float16]))
def test_from_torch_dense_strided(arrs: CsrTuple, dtype: torch.dtype) -> None:
    dense = reference_dense(*arrs)
    t = torch.from_numpy(dense).to(dtype)
    b = SparseBatch.from_torch(t)
    expected = t.float().numpy()
    np.testing.assert_array_equal(b.to_dense(), expected)
    assert b.nnz == int(np.count_nonzero(expected))  # dense zeros are not stored
    assert b.is_canonical()


@given(small_csr, st.sampled_from([torch.float32, torch.float64, torch.bfloat16]), st.sampled_from(["coo", "csr"]))
def test_from_torch_sparse_values_dtypes(arrs: CsrTuple, dtype: torch.dtype, layout: str) -> None:
    ip, idx, val, dim = arrs
    n_rows = len(ip) - 1
    values = torch.from_numpy(val).to(dtype)
    if layout == "coo":
        rows = torch.from_numpy(np.repeat(np.arange(n_rows), np.diff(ip)))
        ind = torch.stack([rows, torch.from_numpy(idx.astype(np.int64))])
        t = torch.sparse_coo_tensor(ind, values, (n_rows, dim), check_invariants=True)
    else:
        t = torch.sparse_csr_tensor(
            torch.from_numpy(ip), torch.from_numpy(idx.astype(np.int64)), values, (n_rows, dim), check_invariants=True
        )
    b = SparseBatch.from_torch(t)
    np.testing.assert_array_equal(b.to_dense(), t.to_dense().float().numpy())
    np.testing.assert_array_equal(b.data, values.float().numpy())  # explicit zeros kept, order kept
    np.testing.assert_array_equal(b.indices, idx)


@given(messy_scipy_csr())
def test_from_torch_uncoalesced_coo_adds_repeats(parts: tuple[Arr, Arr, Arr, int]) -> None:
    indptr, idx, val, dim = parts
    n_rows = len(indptr) - 1
    rows = np.repeat(np.arange(n_rows), np.diff(indptr))
    ind = torch.from_numpy(np.stack([rows.astype(np.int64), idx.astype(np.int64)]))
    t = torch.sparse_coo_tensor(ind, torch.from_numpy(val), (n_rows, dim), check_invariants=True)
    b = SparseBatch.from_torch(t)
    np.testing.assert_array_equal(b.to_dense(), t.to_dense().numpy())
    assert b.to_dicts() == reference_dicts(indptr, idx, val)


def test_from_torch_detaches_grad_tensors() -> None:
    t = torch.tensor([[0.0, 1.5], [2.0, 0.0]], requires_grad=True)
    b = SparseBatch.from_torch(t)
    assert b.to_dicts() == [{1: 1.5}, {0: 2.0}]


def test_to_torch_csr_emits_no_warning() -> None:
    # torch warns once per process about beta CSR support; a clean interpreter with -W error shows whether
    # sparsecore lets that warning reach its users.
    code = textwrap.dedent(
        """
        import numpy as np
        from sparsecore import SparseBatch
        b = SparseBatch.from_dicts([{1: 1.0}, {}], dim=3)
        t = b.to_torch("csr")
        assert t.to_dense().tolist() == [[0.0, 1.0, 0.0], [0.0, 0.0, 0.0]]
        """
    )
    proc = subprocess.run(
        [sys.executable, "-W", "error", "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == 0, proc.stderr[-2000:]


# ---------------------------------------------------------------------------------------------------------------
# dicts, pairs, dense, token dicts
# ---------------------------------------------------------------------------------------------------------------


@given(sparse_batches())
def test_dicts_round_trip(b: SparseBatch) -> None:
    dicts = b.to_dicts()
    assert len(dicts) == b.n_rows
    assert all(all(isinstance(k, int) and isinstance(v, float) for k, v in d.items()) for d in dicts)
    assert_same_batch(SparseBatch.from_dicts(dicts, b.dim), b)
    shuffled = [dict(reversed(list(d.items()))) for d in dicts]  # key order does not matter
    assert_same_batch(SparseBatch.from_dicts(shuffled, b.dim), b)
    assert_same_batch(SparseBatch.from_dicts(iter(dicts), b.dim), b)  # any iterable


@given(sparse_batches())
def test_pairs_round_trip(b: SparseBatch) -> None:
    assert_same_batch(SparseBatch.from_pairs(b.to_pairs(), b.dim), b)
    wide = [(ix.astype(np.int64), vs.astype(np.float64)) for ix, vs in b.to_pairs()]
    assert_same_batch(SparseBatch.from_pairs(wide, b.dim), b)


def test_from_pairs_accepts_python_lists_with_empty_rows() -> None:
    # np.asarray([]) is float64; an empty row must not turn the other rows' integer indices into floats
    b = SparseBatch.from_pairs([([1, 3], [1.0, 2.0]), ([], []), ([0], [-1.0])], 4)
    assert b.to_dicts() == [{1: 1.0, 3: 2.0}, {}, {0: -1.0}]


@given(csr_arrays(canonical=False))
def test_from_pairs_canonicalizes_when_asked(arrs: CsrTuple) -> None:
    ip, idx, val, dim = arrs
    pairs = [(idx[ip[r] : ip[r + 1]], val[ip[r] : ip[r + 1]]) for r in range(len(ip) - 1)]
    b = SparseBatch.from_pairs(pairs, dim, canonicalize=True)
    assert b.to_dicts() == reference_dicts(ip, idx, val)


@given(small_batches)
def test_dense_round_trip(b: SparseBatch) -> None:
    dense = b.to_dense()
    assert dense.dtype == np.float32
    assert dense.shape == b.shape
    np.testing.assert_array_equal(dense, reference_dense(b.indptr, b.indices, b.data, b.dim))
    back = SparseBatch.from_dense(dense)
    assert_same_batch(back, b.canonicalize(drop_zeros=True))  # dense cannot carry explicit zeros
    np.testing.assert_array_equal(SparseBatch.from_dense(dense.astype(np.float64)).to_dense(), dense)


@given(small_csr)
def test_from_dense_stores_exactly_the_non_zeros(arrs: CsrTuple) -> None:
    dense = reference_dense(*arrs)
    b = SparseBatch.from_dense(dense)
    assert b.shape == dense.shape
    assert b.nnz == int(np.count_nonzero(dense))
    assert not np.any(b.data == 0)
    np.testing.assert_array_equal(b.to_dense(), dense)
    rows, cols = np.nonzero(dense)
    np.testing.assert_array_equal(b.indices, cols)
    np.testing.assert_array_equal(np.repeat(np.arange(b.n_rows), b.row_nnz), rows)


@given(small_batches)
def test_token_dicts_round_trip_with_sequence_and_mapping(b: SparseBatch) -> None:
    tokens = [f"tok{i}" for i in range(b.dim)]
    vocab = {t: i for i, t in enumerate(tokens)}
    by_seq = b.to_token_dicts(tokens)
    by_map = b.to_token_dicts(vocab)
    assert by_seq == by_map
    assert by_seq == [{tokens[c]: v for c, v in d.items()} for d in b.to_dicts()]
    assert_same_batch(SparseBatch.from_token_dicts(by_seq, vocab, dim=b.dim), b)
    default_dim = SparseBatch.from_token_dicts(by_seq, vocab)
    assert default_dim.dim == b.dim  # max(vocab.values()) + 1
    assert_same_batch(default_dim, b)


@given(small_batches, st.lists(st.text(min_size=1, max_size=5).map(lambda s: "unk_" + s), min_size=1, max_size=3))
def test_from_token_dicts_ignores_unknown_tokens(b: SparseBatch, unknown: list[str]) -> None:
    vocab = {f"tok{i}": i for i in range(b.dim)}
    rows = b.to_token_dicts(vocab)
    noisy = [{**row, **{u: 1.0 + j for j, u in enumerate(unknown)}} for row in rows]
    got = SparseBatch.from_token_dicts(noisy, vocab, dim=b.dim, unknown="ignore")
    assert_same_batch(got, b)


def test_from_token_dicts_adds_tokens_sharing_an_id() -> None:
    vocab = {"run": 2, "running": 2, "dog": 0}
    b = SparseBatch.from_token_dicts([{"running": 1.0, "run": 0.5, "dog": -1.0}, {}], vocab)
    assert b.dim == 3
    assert b.to_dicts() == [{0: -1.0, 2: 1.5}, {}]
