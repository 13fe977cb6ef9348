"""Hypothesis strategies for sparse vectors, reusable by anyone property-testing sparse code.

Examples
--------
>>> from hypothesis import given
>>> from sparsecore.testing.strategies import sparse_batches
>>> @given(sparse_batches(max_rows=8, max_dim=50))
... def test_top_k_keeps_at_most_k(b):
...     assert (b.top_k(3).row_nnz <= 3).all()
"""

from __future__ import annotations

from typing import Any

import numpy as np

from sparsecore._optional import require
from sparsecore.sparse import MAX_DIM, SparseBatch

require("hypothesis")

from hypothesis import strategies as st  # noqa: E402

__all__ = ["csr_arrays", "dims", "sparse_batches", "values"]


def dims(max_dim: int = 64, *, include_huge: bool = True) -> st.SearchStrategy[int]:
    """Dimensions from 1 to ``max_dim``, plus (with ``include_huge``) values near ``2**32 - 1``."""
    small = st.integers(1, max_dim)
    if not include_huge:
        return small
    return st.one_of(small, st.integers(MAX_DIM - 3, MAX_DIM), st.sampled_from([2**31 - 1, 2**31, 2**31 + 1]))


def values(*, nonneg: bool = False, allow_zero: bool = True, ties: bool = True) -> st.SearchStrategy[float]:
    """Finite float32 values; with ``ties`` many repeat (multiples of 0.25), which exercises tie-breaking."""
    lo = 0.0 if nonneg else -8.0
    exact = st.integers(int(lo * 4), 32).map(lambda v: v / 4)
    wide = st.floats(lo, 8.0, width=32, allow_nan=False, allow_infinity=False)
    s = st.one_of(exact, wide) if ties else wide
    return s if allow_zero else s.filter(lambda v: v != 0.0)


@st.composite
def csr_arrays(
    draw: st.DrawFn,
    *,
    max_rows: int = 12,
    max_dim: int = 64,
    max_row_nnz: int = 16,
    dim: int | None = None,
    nonneg: bool = False,
    canonical: bool = True,
    include_huge_dims: bool = True,
) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any], np.ndarray[Any, Any], int]:
    """Raw CSR arrays ``(indptr int64, indices uint32, data float32, dim)``.

    With ``canonical=False`` rows may be unsorted and repeat indices (input for ``canonicalize``). Rows may be
    empty, batches may have zero rows, and indices cluster near both ends of ``[0, dim)``.
    """
    d = dim if dim is not None else draw(dims(max_dim, include_huge=include_huge_dims))
    n_rows = draw(st.integers(0, max_rows))
    index = st.one_of(st.integers(0, min(d - 1, 2 * max_row_nnz)), st.integers(max(0, d - 1 - max_row_nnz), d - 1))
    indptr = [0]
    idx: list[int] = []
    val: list[float] = []
    for _ in range(n_rows):
        if canonical:
            cols = sorted(draw(st.sets(index, max_size=min(max_row_nnz, d))))
        else:
            cols = draw(st.lists(index, max_size=max_row_nnz))
        idx.extend(cols)
        val.extend(draw(st.lists(values(nonneg=nonneg), min_size=len(cols), max_size=len(cols))))
        indptr.append(len(idx))
    return (
        np.asarray(indptr, dtype=np.int64),
        np.asarray(idx, dtype=np.uint32),
        np.asarray(val, dtype=np.float32),
        d,
    )


@st.composite
def sparse_batches(
    draw: st.DrawFn,
    *,
    max_rows: int = 12,
    max_dim: int = 64,
    max_row_nnz: int = 16,
    dim: int | None = None,
    nonneg: bool = False,
    include_huge_dims: bool = True,
) -> SparseBatch:
    """Valid :class:`~sparsecore.SparseBatch` objects (see :func:`csr_arrays` for the knobs)."""
    ip, idx, val, d = draw(
        csr_arrays(
            max_rows=max_rows,
            max_dim=max_dim,
            max_row_nnz=max_row_nnz,
            dim=dim,
            nonneg=nonneg,
            include_huge_dims=include_huge_dims,
        )
    )
    return SparseBatch(ip, idx, val, d)
