"""Every kind of bad input raises its typed exception, with a message that names the argument and position.

No input may make the Rust extension panic: pyo3 turns a panic into ``PanicException``, which derives from
``BaseException`` and would slip past ``except Exception``; every check below catches ``BaseException`` and
asserts that it is not one.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from hypothesis import given
from hypothesis import strategies as st
from numpy.typing import NDArray
from sparsecore import MAX_DIM, QuantizedBatch, SparseBatch
from sparsecore.exceptions import (
    DTypeError,
    IndexOutOfRangeError,
    InvalidArgumentError,
    NonFiniteError,
    ResourceError,
    ShapeMismatchError,
    SparsecoreError,
    SparseFormatError,
    UnknownTokenError,
)
from sparsecore.testing.strategies import csr_arrays, sparse_batches

Arr = NDArray[Any]

# torch warns (once per process) that sparse CSR/CSC support is in beta when the test code builds such tensors.
pytestmark = pytest.mark.filterwarnings("ignore:Sparse CS[RC] tensor support is in beta state:UserWarning")

# The builtin each exception must also be, so that ``except ValueError`` etc. keep working.
BUILTIN: dict[type[SparsecoreError], type[Exception]] = {
    SparseFormatError: ValueError,
    NonFiniteError: ValueError,
    IndexOutOfRangeError: IndexError,
    DTypeError: TypeError,
    InvalidArgumentError: ValueError,
    ShapeMismatchError: ValueError,
    UnknownTokenError: KeyError,
    ResourceError: MemoryError,
}


def is_panic(e: BaseException) -> bool:
    return type(e).__name__ == "PanicException" or type(e).__module__ == "pyo3_runtime"


def mentions(msg: str, fragment: str) -> bool:
    """``fragment`` occurs in ``msg`` and is not the prefix of a longer number ("row 2" is not in "row 21")."""
    return re.search(re.escape(fragment) + r"(?!\d)", msg) is not None


def outcome(fn: Callable[[], object]) -> BaseException | None:
    """What ``fn`` raised (anything, panics included), or None."""
    try:
        fn()
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as e:
        return e
    return None


def raised(fn: Callable[[], object], exc: type[Exception]) -> BaseException:
    e = outcome(fn)
    assert e is not None, f"expected {exc.__name__}, but nothing was raised"
    assert not is_panic(e), f"Rust panicked: {e!r}"
    assert isinstance(e, Exception), f"{type(e).__name__} is not an Exception: {e!r}"
    return e


def check_message(e: BaseException, fragments: tuple[str, ...]) -> str:
    msg = str(e)
    for f in fragments:
        assert mentions(msg, f), f"message {msg!r} does not mention {f!r}"
    return msg


def expect(fn: Callable[[], object], exc: type[SparsecoreError], *fragments: str) -> str:
    """Call ``fn``; assert it raises exactly ``exc`` (not a panic), which is also its builtin; check the message."""
    e = raised(fn, exc)
    assert type(e) is exc, f"expected {exc.__name__}, got {type(e).__module__}.{type(e).__name__}: {e}"
    assert isinstance(e, SparsecoreError)
    assert isinstance(e, BUILTIN[exc])
    return check_message(e, fragments)


def expect_builtin(fn: Callable[[], object], exc: type[Exception], *fragments: str) -> str:
    """Like :func:`expect` for errors that are (only required to be) a builtin type."""
    e = raised(fn, exc)
    assert isinstance(e, exc), f"expected {exc.__name__}, got {type(e).__name__}: {e}"
    return check_message(e, fragments)


def test_exception_hierarchy() -> None:
    assert issubclass(SparseFormatError, ValueError)
    assert issubclass(NonFiniteError, ValueError)
    assert issubclass(NonFiniteError, SparseFormatError)
    assert issubclass(IndexOutOfRangeError, IndexError)
    assert issubclass(DTypeError, TypeError)
    assert issubclass(InvalidArgumentError, ValueError)
    assert issubclass(ShapeMismatchError, ValueError)
    assert issubclass(UnknownTokenError, KeyError)
    for cls in BUILTIN:
        assert issubclass(cls, SparsecoreError)
    assert str(UnknownTokenError("row 1: column id 3 has no token")) == "row 1: column id 3 has no token"


# ---------------------------------------------------------------------------------------------------------------
# from_arrays: one valid batch, broken one way at a time
# ---------------------------------------------------------------------------------------------------------------

# Rows: 0 -> positions 0..1, 1 -> empty, 2 -> positions 2..5, 3 -> position 6.
IP = np.array([0, 2, 2, 6, 7], dtype=np.int64)
IDX = np.array([1, 4, 0, 2, 3, 6, 5], dtype=np.uint32)
VAL = np.array([1.0, -2.0, 0.5, 3.0, -1.0, 2.0, 4.0], dtype=np.float32)
DIM = 8


def build(
    indptr: Any = None, indices: Any = None, data: Any = None, dim: Any = DIM, **kw: Any
) -> Callable[[], SparseBatch]:
    ip = IP if indptr is None else indptr
    ix = IDX if indices is None else indices
    dv = VAL if data is None else data
    return lambda: SparseBatch.from_arrays(ip, ix, dv, dim, **kw)


def with_value(pos: int, v: float, dtype: type[np.floating[Any]] = np.float32) -> Arr:
    d = VAL.astype(dtype)
    d[pos] = v
    return d


def with_index(pos: int, v: int, dtype: type[np.integer[Any]]) -> Arr:
    i = IDX.astype(dtype)
    i[pos] = v
    return i


def test_the_base_batch_is_valid() -> None:
    b = build()()
    assert b.to_dicts() == [{1: 1.0, 4: -2.0}, {}, {0: 0.5, 2: 3.0, 3: -1.0, 6: 2.0}, {5: 4.0}]


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf], ids=["nan", "+inf", "-inf"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16])
@pytest.mark.parametrize("canonicalize", [False, True])
def test_non_finite_values(value: float, dtype: type[np.floating[Any]], canonicalize: bool) -> None:
    expect(build(data=with_value(5, value, dtype), canonicalize=canonicalize), NonFiniteError, "data[5]", "row 2")
    expect(build(data=with_value(6, value, dtype), canonicalize=canonicalize), NonFiniteError, "data[6]", "row 3")
    expect(build(data=with_value(0, value, dtype), canonicalize=canonicalize), NonFiniteError, "data[0]", "row 0")


@pytest.mark.parametrize("value", [1e39, -1e39, 3.5e38, np.finfo(np.float64).max])
def test_float64_overflowing_float32(value: float) -> None:
    msg = expect(build(data=with_value(5, value, np.float64)), NonFiniteError, "data[5]", "row 2")
    assert "float32" in msg
    # the largest float32 itself is fine
    ok = build(data=with_value(5, float(np.finfo(np.float32).max), np.float64))()
    assert float(ok.data[5]) == float(np.finfo(np.float32).max)


@pytest.mark.parametrize("dtype", [np.int32, np.int64, np.int16, np.int8])
@pytest.mark.parametrize("value", [-1, -100])
def test_negative_indices(dtype: type[np.integer[Any]], value: int) -> None:
    msg = expect(build(indices=with_index(5, value, dtype)), IndexOutOfRangeError, "indices[5]", "row 2")
    assert "negative" in msg
    expect(build(indices=with_index(0, value, dtype)), IndexOutOfRangeError, "indices[0]", "row 0")


@pytest.mark.parametrize("dtype", [np.uint32, np.int64, np.int32, np.uint64, np.uint16])
@pytest.mark.parametrize("canonicalize", [False, True])
def test_index_not_below_dim(dtype: type[np.integer[Any]], canonicalize: bool) -> None:
    # position 5 is the last entry of row 2; position 6 the only one of row 3
    msg = expect(
        build(indices=with_index(5, DIM, dtype), canonicalize=canonicalize),
        IndexOutOfRangeError,
        "indices[5]",
        "row 2",
        "= 8",
    )
    assert "dim = 8" in msg
    expect(build(indices=with_index(6, 200, dtype)), IndexOutOfRangeError, "indices[6]", "row 3", "= 200")


@pytest.mark.parametrize(
    ("value", "dtype"), [(2**32, np.int64), (2**32 + 7, np.int64), (2**63 - 1, np.int64), (2**40, np.uint64)]
)
def test_index_beyond_uint32(value: int, dtype: type[np.integer[Any]]) -> None:
    # int64 indices that do not fit uint32 must be rejected, not wrapped (2**32 + 7 would wrap to a valid 7)
    for dim in (DIM, MAX_DIM):
        expect(
            build(indices=with_index(5, value, dtype), dim=dim), IndexOutOfRangeError, "indices[5]", "row 2", str(value)
        )


def test_index_equal_to_the_largest_dim() -> None:
    idx = IDX.copy()
    idx[6] = MAX_DIM  # 2**32 - 1 is a valid uint32 but not below dim = 2**32 - 1
    expect(build(indices=idx, dim=MAX_DIM), IndexOutOfRangeError, "indices[6]", "row 3", str(MAX_DIM))


def test_unsorted_indices_in_a_row() -> None:
    idx = IDX.copy()
    idx[3], idx[4] = idx[4], idx[3]  # row 2: [0, 3, 2, 6]
    msg = expect(build(indices=idx), SparseFormatError, "row 2", "indices[3]", "indices[4]")
    assert "canonicalize" in msg


def test_unsorted_indices_are_fixed_by_canonicalize() -> None:
    idx = IDX.copy()
    idx[3], idx[4] = idx[4], idx[3]  # row 2 becomes [0, 3, 2, 6] with values [0.5, 3.0, -1.0, 2.0]
    b = build(indices=idx, canonicalize=True)()
    assert b.to_dicts() == [{1: 1.0, 4: -2.0}, {}, {0: 0.5, 2: -1.0, 3: 3.0, 6: 2.0}, {5: 4.0}]
    assert b.is_canonical()


def test_duplicate_indices_in_a_row() -> None:
    idx = IDX.copy()
    idx[4] = idx[3]  # row 2: [0, 2, 2, 6]
    expect(build(indices=idx), SparseFormatError, "row 2", "positions 3 and 4", "index 2")
    summed = build(indices=idx, canonicalize=True)()
    assert summed.to_dicts()[2] == {0: 0.5, 2: 2.0, 6: 2.0}
    kept = build(indices=idx, canonicalize="max")()
    assert kept.to_dicts()[2] == {0: 0.5, 2: 3.0, 6: 2.0}


def test_a_repeat_across_rows_is_fine() -> None:
    # the same column in two different rows is not a duplicate
    b = SparseBatch.from_arrays([0, 1, 2], [3, 3], [1.0, 2.0], 4)
    assert b.to_dicts() == [{3: 1.0}, {3: 2.0}]


@pytest.mark.parametrize(
    ("indptr", "fragments"),
    [
        ([1, 2, 2, 6, 7], ("indptr[0]", "got 1")),
        ([0, 3, 2, 6, 7], ("indptr[1] = 3", "indptr[2] = 2")),
        ([0, 2, 2, 6, 5], ("indptr[3] = 6", "indptr[4] = 5")),
        ([0, 2, 2, 6, 6], ("indptr[-1] = 6", "len(indices) = 7")),
        ([0, 2, 2, 6, 8], ("indptr[-1] = 8", "len(indices) = 7")),
        ([0, -1, 2, 6, 7], ("indptr[0] = 0", "indptr[1] = -1")),
        (np.zeros(0, np.int64), ("indptr", "empty")),
        ([], ("indptr", "empty")),
        ([0], ("indptr[-1] = 0", "len(indices) = 7")),
    ],
    ids=["start1", "decreasing", "decreasing-end", "last-short", "last-long", "negative", "empty", "empty-list", "one"],
)
def test_bad_indptr(indptr: Any, fragments: tuple[str, ...]) -> None:
    msg = expect(build(indptr=indptr), SparseFormatError, *fragments)
    assert "indptr" in msg
    expect(build(indptr=indptr, canonicalize=True), SparseFormatError, *fragments)
    expect(build(indptr=indptr, check=False), SparseFormatError, *fragments)  # structure is always checked


def test_indptr_beyond_int64() -> None:
    expect(build(indptr=np.array([0, 2, 2, 6, 2**63], np.uint64)), SparseFormatError, "indptr")


@pytest.mark.parametrize("which", ["indptr", "indices", "data"])
def test_two_dimensional_arrays(which: str) -> None:
    arrays: dict[str, Arr] = {"indptr": IP, "indices": IDX, "data": VAL}
    a = arrays[which]
    arrays[which] = np.stack([a, a])
    msg = expect(build(**arrays), SparseFormatError, which, "1-D")
    assert str(arrays[which].shape) in msg
    arrays[which] = np.zeros((1, 0))
    expect(build(**arrays), SparseFormatError, which, "1-D")


def test_length_mismatch() -> None:
    expect(build(data=VAL[:6]), SparseFormatError, "len(indices) = 7", "len(data) = 6")
    expect(build(indices=IDX[:6], indptr=[0, 2, 2, 6, 6]), SparseFormatError, "len(indices) = 6", "len(data) = 7")


@pytest.mark.parametrize(
    ("which", "array", "fragment"),
    [
        ("indices", IDX.astype(np.float64), "float64"),
        ("indices", IDX.astype(np.float32), "float32"),
        ("indices", IDX.astype(bool), "bool"),
        ("indices", IDX.astype(str), "indices"),
        ("indices", IDX.astype(object), "object"),
        ("indices", IDX.astype(np.complex64), "complex64"),
        ("data", VAL.astype(np.complex128), "complex128"),
        ("data", VAL.astype(np.complex64), "complex64"),
        ("data", VAL.astype(str), "data"),
        ("data", VAL.astype(object), "object"),
        ("data", np.array([b"x"] * 7), "data"),
        ("data", np.arange(7).astype("m8[s]"), "timedelta64"),
        ("indptr", IP.astype(np.float64), "float64"),
        ("indptr", IP.astype(object), "object"),
        ("indptr", IP.astype(str), "indptr"),
    ],
)
def test_bad_dtypes(which: str, array: Arr, fragment: str) -> None:
    msg = expect(build(**{which: array}), DTypeError, which, fragment)
    assert msg.startswith(which)


def test_python_ints_too_large_for_any_dtype() -> None:
    expect(build(indices=[1, 4, 0, 2, 3, 2**70, 5]), DTypeError, "indices")
    expect(build(data=[1.0, 2.0, 3.0, 4.0, 5.0, 10**400, 6.0]), DTypeError, "data")


@pytest.mark.parametrize("dim", [0, -1, -(2**40), 2**32, 2**64, 2**100])
def test_dim_out_of_range(dim: int) -> None:
    msg = expect(build(dim=dim), InvalidArgumentError, "dim", str(dim))
    assert "2**32 - 1" in msg
    expect(lambda: SparseBatch.empty(2, dim), InvalidArgumentError, "dim")


@pytest.mark.parametrize("dim", [8.0, 8.5, True, False, np.True_, "8", None, [8], np.float64(8)])
def test_dim_of_the_wrong_type(dim: object) -> None:
    msg = expect(build(dim=dim), DTypeError, "dim")
    assert msg.startswith("dim")


def test_dim_as_numpy_integer_is_fine() -> None:
    assert build(dim=np.int64(8))().dim == 8
    assert build(dim=np.uint32(MAX_DIM))().dim == MAX_DIM


# ---------------------------------------------------------------------------------------------------------------
# the other constructors
# ---------------------------------------------------------------------------------------------------------------


def test_from_scipy_on_non_sparse_objects() -> None:
    for obj in (np.ones((2, 2)), [[1.0]], None, "csr", torch.ones(2, 2)):
        expect(functools.partial(SparseBatch.from_scipy, obj), DTypeError, "m", type(obj).__name__)


def test_from_scipy_bad_content() -> None:
    m = sp.csr_array(np.array([[0.0, 1.0], [2.0, np.nan]]))
    expect(lambda: SparseBatch.from_scipy(m), NonFiniteError, "data[2]", "row 1")
    expect(lambda: SparseBatch.from_scipy(sp.csr_array(np.ones((2, 2), complex))), DTypeError, "complex128")
    expect(lambda: SparseBatch.from_scipy(sp.coo_array(np.ones(3))), SparseFormatError, "m", "2-D")
    expect(lambda: SparseBatch.from_scipy(sp.csr_array((2, 0))), InvalidArgumentError, "dim")
    big = sp.csr_array((np.ones(1), np.array([0]), np.array([0, 1])), shape=(1, 2**32))
    expect(lambda: SparseBatch.from_scipy(big), InvalidArgumentError, "dim", str(2**32))


def test_from_torch_on_non_tensors() -> None:
    objs: tuple[Any, ...] = (np.ones((2, 2)), [[1.0]], None, sp.csr_array(np.eye(2)))
    for obj in objs:
        expect(functools.partial(SparseBatch.from_torch, obj), DTypeError, "t", type(obj).__name__)


def test_from_torch_bad_content() -> None:
    expect(lambda: SparseBatch.from_torch(torch.ones(3)), SparseFormatError, "t", "2-D")
    expect(lambda: SparseBatch.from_torch(torch.ones(2, 2, 2)), SparseFormatError, "t", "2-D")
    expect(lambda: SparseBatch.from_torch(torch.ones(2, 2, dtype=torch.complex64)), DTypeError, "t", "complex64")
    expect(lambda: SparseBatch.from_torch(torch.eye(2).to_sparse_csc()), DTypeError, "t", "sparse_csc")
    dense_nan = torch.tensor([[0.0, 1.0], [2.0, float("nan")]])
    expect(lambda: SparseBatch.from_torch(dense_nan), NonFiniteError, "dense[1, 1]")
    coo_inf = torch.sparse_coo_tensor(
        torch.tensor([[0, 1, 1], [1, 0, 1]]), torch.tensor([1.0, 2.0, float("inf")]), (2, 2), check_invariants=True
    )
    expect(lambda: SparseBatch.from_torch(coo_inf), NonFiniteError, "data[2]", "row 1")
    expect(lambda: SparseBatch.from_torch(torch.tensor([[1e300, 0.0]], dtype=torch.float64)), NonFiniteError, "[0, 0]")


def test_from_dense_bad_input() -> None:
    expect(lambda: SparseBatch.from_dense(np.array([[0.0, 1.0], [2.0, np.nan]])), NonFiniteError, "dense[1, 1]")
    expect(lambda: SparseBatch.from_dense(np.array([[0.0, -np.inf]], np.float32)), NonFiniteError, "dense[0, 1]")
    msg = expect(lambda: SparseBatch.from_dense(np.array([[0.0, 1.0], [1e39, 0.0]])), NonFiniteError, "dense[1, 0]")
    assert "float32" in msg
    expect(lambda: SparseBatch.from_dense(np.ones(3)), SparseFormatError, "dense", "2-D")
    expect(lambda: SparseBatch.from_dense(np.ones((2, 2, 2))), SparseFormatError, "dense", "2-D")
    expect(lambda: SparseBatch.from_dense(np.ones((2, 2), complex)), DTypeError, "dense", "complex128")
    expect(lambda: SparseBatch.from_dense(np.array([["a"]])), DTypeError, "dense")
    expect(lambda: SparseBatch.from_dense(np.ones((3, 0))), InvalidArgumentError, "dense", "columns")


def test_from_dicts_bad_input() -> None:
    expect(lambda: SparseBatch.from_dicts([{0: 1.0}, {"a": 1.0}], 4), DTypeError, "rows", "from_token_dicts")  # type: ignore[dict-item]
    expect(lambda: SparseBatch.from_dicts([{0: "x"}], 4), DTypeError, "rows", "values")  # type: ignore[dict-item]
    expect(lambda: SparseBatch.from_dicts([{0: 1.0}, {1: 1.0, -1: 2.0}], 4), IndexOutOfRangeError, "row 1")
    expect(lambda: SparseBatch.from_dicts([{0: 1.0}, {}, {1: 1.0, 4: 2.0}], 4), IndexOutOfRangeError, "row 2", "= 4")
    expect(lambda: SparseBatch.from_dicts([{0: 1.0}, {}, {3: float("nan")}], 4), NonFiniteError, "data[1]", "row 2")
    expect(lambda: SparseBatch.from_dicts([{0: 1.0}], 0), InvalidArgumentError, "dim")


def test_from_pairs_bad_input() -> None:
    pairs = [(np.array([0, 1]), np.array([1.0, 2.0])), (np.array([0, 1, 2]), np.array([1.0, 2.0]))]
    expect(lambda: SparseBatch.from_pairs(pairs, 4), SparseFormatError, "pairs[1]", "3", "2")
    unsorted = [(np.array([0, 1]), np.array([1.0, 2.0])), (np.array([3, 1]), np.array([1.0, 2.0]))]
    expect(lambda: SparseBatch.from_pairs(unsorted, 4), SparseFormatError, "row 1", "indices[2]")
    assert SparseBatch.from_pairs(unsorted, 4, canonicalize=True).to_dicts() == [{0: 1.0, 1: 2.0}, {1: 2.0, 3: 1.0}]
    nan = [(np.array([0, 1]), np.array([1.0, np.nan]))]
    expect(lambda: SparseBatch.from_pairs(nan, 4), NonFiniteError, "data[1]", "row 0")


def test_unknown_token() -> None:
    vocab = {"a": 0, "b": 1}
    msg = expect(
        lambda: SparseBatch.from_token_dicts([{"a": 1.0}, {"b": 1.0, "zz": 2.0}], vocab), UnknownTokenError, "rows[1]"
    )
    assert "'zz'" in msg
    expect(lambda: SparseBatch.from_token_dicts([{"a": 1.0}], vocab, unknown="drop"), InvalidArgumentError, "unknown")  # type: ignore[arg-type]
    expect(lambda: SparseBatch.from_token_dicts([{"a": 1.0}], {}), InvalidArgumentError, "vocab")
    expect(lambda: SparseBatch.from_token_dicts([{"b": 1.0}], vocab, dim=1), IndexOutOfRangeError, "row 0")


def test_missing_token_id() -> None:
    b = SparseBatch.from_dicts([{1: 1.0}, {}, {0: 2.0, 3: 1.0}], 4)
    msg = expect(lambda: b.to_token_dicts({"a": 0, "b": 1, "c": 2}), UnknownTokenError, "row 2", "column id 3")
    assert msg == "row 2: column id 3 has no token in the vocabulary"
    expect(lambda: b.to_token_dicts(["a", "b", "c"]), UnknownTokenError, "row 2", "column id 3")
    expect(lambda: b.to_token_dicts(["a"]), UnknownTokenError, "row 0", "column id 1")


def test_other_bad_arguments() -> None:
    expect(build(canonicalize="min"), InvalidArgumentError, "canonicalize")
    b = build()()
    expect(lambda: b.canonicalize("min"), InvalidArgumentError, "duplicates")  # type: ignore[arg-type]
    expect(lambda: b.to_scipy("dok"), InvalidArgumentError, "format")  # type: ignore[arg-type]
    expect(lambda: b.to_torch("csc"), InvalidArgumentError, "layout")  # type: ignore[arg-type]
    expect(lambda: SparseBatch.empty(-1, 4), InvalidArgumentError, "n_rows")
    expect(lambda: SparseBatch.empty(1.5, 4), InvalidArgumentError, "n_rows")  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------------------------
# operation arguments
# ---------------------------------------------------------------------------------------------------------------


def batch() -> SparseBatch:
    return build()()


@pytest.mark.parametrize("k", [0, -1, 1.5, "2", None, True, np.int64(0), np.float64(2.0)])
def test_bad_k(k: Any) -> None:
    b = batch()
    expect(lambda: b.top_k(k), InvalidArgumentError, "k")
    expect(lambda: b.scores_top_k(b, k), InvalidArgumentError, "k")


def test_k_larger_than_any_row_keeps_everything() -> None:
    b = batch()
    for k in (7, 100, 2**40, 2**64 - 1):
        assert b.top_k(k).equals(b)


def test_k_beyond_uint64_is_typed() -> None:
    # top_k documents that rows with fewer than k entries keep all; a k that does not fit a machine word must
    # either do that or be a typed InvalidArgumentError, never a bare OverflowError from the binding.
    b = batch()

    def keeps_everything(k: int) -> None:
        assert b.top_k(k).equals(b), "top_k with a huge k changed the batch"

    for k in (2**64, 2**70):
        e = outcome(functools.partial(keeps_everything, k))
        assert e is None or (type(e) is InvalidArgumentError and "k" in str(e)), f"{type(e).__name__}: {e}"


def test_scores_top_k_with_an_unallocatable_k() -> None:
    b = batch()
    expect(lambda: b.scores_top_k(b, 2**61), ResourceError, "top-k")


@pytest.mark.parametrize("fraction", [0, 0.0, -0.1, 1.5, 1.0000001, float("nan"), float("inf"), -float("inf")])
def test_bad_fraction(fraction: float) -> None:
    msg = expect(lambda: batch().prune_mass(fraction), InvalidArgumentError, "fraction")
    assert "(0, 1]" in msg


def test_bad_threshold() -> None:
    msg = expect(lambda: batch().threshold(float("nan")), InvalidArgumentError, "t")
    assert "NaN" in msg
    expect(lambda: batch().threshold(np.float32("nan")), InvalidArgumentError, "t")


@pytest.mark.parametrize("bits", [4, 0, 1, 32, -8, "8", None, True, 8.0])
def test_bad_bits(bits: Any) -> None:
    expect(lambda: batch().quantize(bits), InvalidArgumentError, "bits")


OPS: dict[str, Callable[[SparseBatch, Any], object]] = {
    "top_k": lambda b, n: b.top_k(2, num_threads=n),
    "threshold": lambda b, n: b.threshold(0.0, num_threads=n),
    "prune_mass": lambda b, n: b.prune_mass(0.5, num_threads=n),
    "dot": lambda b, n: b.dot(b, num_threads=n),
    "scores": lambda b, n: b.scores(b, num_threads=n),
    "scores_top_k": lambda b, n: b.scores_top_k(b, 2, num_threads=n),
    "matmul_dense": lambda b, n: b.matmul_dense(np.ones((DIM, 2)), num_threads=n),
    "quantize": lambda b, n: b.quantize(8, num_threads=n),
    "to_dense": lambda b, n: b.to_dense(num_threads=n),
    "canonicalize": lambda b, n: b.canonicalize(num_threads=n),
    "check": lambda b, n: b.check(num_threads=n),
    "from_dense": lambda b, n: SparseBatch.from_dense(np.eye(3), num_threads=n),
}


@pytest.mark.parametrize("op", sorted(OPS))
@pytest.mark.parametrize("num_threads", [0, -1, "2", 2.0, np.float64(2.0), True, 10**6, 2**64 - 1])
def test_bad_num_threads(op: str, num_threads: Any) -> None:
    b = batch()
    expect(lambda: OPS[op](b, num_threads), InvalidArgumentError, "num_threads")


def test_num_threads_beyond_uint64_is_typed() -> None:
    # 10**6 and 2**64 - 1 give InvalidArgumentError ("must be between 1 and 4096"); a larger int must too,
    # not a bare OverflowError from the binding's usize conversion.
    b = batch()
    wrong: dict[str, str] = {}
    for op, fn in sorted(OPS.items()):
        e = outcome(functools.partial(fn, b, 2**70))
        if not (type(e) is InvalidArgumentError and "num_threads" in str(e)):
            wrong[op] = f"{type(e).__name__}: {e}"
    assert not wrong, wrong


@pytest.mark.parametrize("op", sorted(OPS))
def test_good_num_threads_give_the_same_result(op: str) -> None:
    b = batch()

    def run(n: int | None) -> Any:
        out = OPS[op](b, n)
        if isinstance(out, SparseBatch):
            return (out.indptr.tolist(), out.indices.tolist(), out.data.tolist())
        if isinstance(out, tuple):
            return [np.asarray(x).tolist() for x in out]
        if out is None:
            return None
        if isinstance(out, QuantizedBatch):
            return (out.codes.tolist(), out.scale, out.offset)
        return np.asarray(out).tolist()

    ref = run(None)
    for n in (1, 2, np.int64(3), 8):
        assert run(int(n)) == ref


def test_mismatched_dims() -> None:
    b = batch()
    other = SparseBatch.from_dicts([{1: 1.0}] * b.n_rows, DIM + 1)
    for fn in (lambda: b.dot(other), lambda: b.scores(other), lambda: b.scores_top_k(other, 2)):
        expect(fn, ShapeMismatchError, "other", f"dim {DIM + 1}", f"dim {DIM}")
    wide = SparseBatch.from_dicts([{9: 1.0}], 10)
    expect(lambda: SparseBatch.concat([b, b, wide]), ShapeMismatchError, "batches[2]", "dim 10", "dim 8")


def test_mismatched_row_counts_in_dot() -> None:
    b = batch()
    expect(lambda: b.dot(b[:3]), ShapeMismatchError, "other", "3 rows", "4 rows")
    expect(lambda: b[:0].dot(b), ShapeMismatchError, "other", "4 rows", "0 rows")


def test_non_batch_operands() -> None:
    b = batch()
    for fn, arg in (
        (lambda: b.dot(b.to_scipy()), "other"),
        (lambda: b.scores(np.ones((4, 8))), "other"),  # type: ignore[arg-type]
        (lambda: b.scores_top_k(None, 1), "other"),  # type: ignore[arg-type]
        (lambda: SparseBatch.concat([b, b.to_dicts()]), "batches[1]"),  # type: ignore[list-item]
    ):
        expect(fn, DTypeError, arg)
    expect(lambda: SparseBatch.concat([]), InvalidArgumentError, "batches")


@pytest.mark.parametrize("shape", [(DIM - 1, 2), (DIM + 1, 2), (2, DIM), (0, 1)])
def test_matmul_dense_wrong_shape(shape: tuple[int, int]) -> None:
    b = batch()
    msg = expect(lambda: b.matmul_dense(np.ones(shape)), ShapeMismatchError, f"{shape[0]} rows", f"dim {DIM}")
    # the argument is `m`; the message calls it "dense" (see the report), either name is accepted here
    assert re.match(r"(m|dense)\b", msg)


def test_matmul_dense_bad_matrix() -> None:
    b = batch()
    expect(lambda: b.matmul_dense(np.ones(DIM)), SparseFormatError, "m", "2-D")
    expect(lambda: b.matmul_dense(np.ones((DIM, 2, 1))), SparseFormatError, "m", "2-D")
    expect(lambda: b.matmul_dense(np.ones((DIM, 2), complex)), DTypeError, "m", "complex128")
    expect(lambda: b.matmul_dense(np.full((DIM, 2), "x")), DTypeError, "m")


# ---------------------------------------------------------------------------------------------------------------
# row selection
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "fragments"),
    [
        (4, ("row 4", "4 rows")),
        (-5, ("row -5", "4 rows")),
        (np.int64(10), ("row 10",)),
        ([0, 4], ("rows[1] = 4", "4 rows")),
        (np.array([1, -5]), ("rows[1] = -5", "4 rows")),
        (np.array([3, 2, 9], np.uint32), ("rows[2] = 9",)),
    ],
)
def test_out_of_range_row_selection(key: Any, fragments: tuple[str, ...]) -> None:
    b = batch()
    expect_builtin(lambda: b[key], IndexError, *fragments)


def test_out_of_range_row() -> None:
    b = batch()
    expect_builtin(lambda: b.row(4), IndexError, "row 4", "4 rows")
    expect_builtin(lambda: b.row(-5), IndexError, "row -5")
    expect_builtin(lambda: SparseBatch.empty(0, 3)[0], IndexError, "row 0", "0 rows")


def test_uint64_row_ids_do_not_wrap() -> None:
    # 2**64 - 1 as uint64 must be out of range, not reinterpreted as -1 (the last row)
    b = batch()
    big = np.array([2**64 - 1], dtype=np.uint64)
    expect_builtin(lambda: b[big], IndexError, str(2**64 - 1))
    expect_builtin(lambda: b[np.array([2**63], dtype=np.uint64)], IndexError, str(2**63))


@pytest.mark.parametrize("mask_len", [0, 3, 5])
def test_bad_boolean_mask(mask_len: int) -> None:
    b = batch()
    mask = np.ones(mask_len, dtype=bool)
    expect_builtin(lambda: b[mask], IndexError, "mask", "(4,)", f"({mask_len},)")
    expect_builtin(lambda: b[np.ones((4, 1), dtype=bool)], IndexError, "mask", "(4, 1)")
    expect_builtin(lambda: b[np.array([0.5, 1.0])], IndexError, "float64")


def test_row_selection_errors_are_sparsecore_errors() -> None:
    # exceptions.py: SparsecoreError is "the base class of every error sparsecore raises on purpose", and every
    # exception also derives from the fitting builtin: a bad row selection should be both IndexError and
    # SparsecoreError (as IndexOutOfRangeError is), so callers can catch sparsecore's errors in one place.
    b = batch()
    for fn in (lambda: b[4], lambda: b.row(4), lambda: b[[0, 9]], lambda: b[np.ones(2, bool)]):
        with pytest.raises(IndexError) as info:
            fn()
        assert isinstance(info.value, SparsecoreError), f"{type(info.value).__name__}: {info.value}"


# ---------------------------------------------------------------------------------------------------------------
# property: corrupt one entry of a valid batch
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class Corruption:
    indptr: Arr
    indices: Arr
    data: Arr
    dim: int
    kind: str
    exc: type[SparsecoreError]
    fragments: tuple[str, ...]
    checked_in_rust: bool  # found by the O(nnz) check (so check=False + .check() finds it too)


def _row_of(indptr: Arr, pos: int) -> int:
    return int(np.searchsorted(indptr, pos, side="right")) - 1


@st.composite
def corruptions(draw: st.DrawFn) -> Corruption:
    ip, idx, val, dim = draw(csr_arrays().filter(lambda a: len(a[1]) > 0))
    multi = [r for r in range(len(ip) - 1) if ip[r + 1] - ip[r] >= 2]
    kinds = ["nan", "+inf", "-inf", "overflow", "high", "negative"] + (["swap", "duplicate"] if multi else [])
    kind = draw(st.sampled_from(kinds))
    pos = draw(st.integers(0, len(idx) - 1))
    row = _row_of(ip, pos)
    idx, val = idx.copy(), val.copy()
    indices: Arr = idx
    data: Arr = val
    if kind in ("nan", "+inf", "-inf"):
        data[pos] = {"nan": np.nan, "+inf": np.inf, "-inf": -np.inf}[kind]
        return Corruption(ip, indices, data, dim, kind, NonFiniteError, (f"data[{pos}]", f"row {row}"), True)
    if kind == "overflow":
        data = val.astype(np.float64)
        data[pos] = draw(st.sampled_from([1e39, -1e39, 1e300, -4e38]))
        return Corruption(ip, indices, data, dim, kind, NonFiniteError, (f"data[{pos}]", f"row {row}"), False)
    if kind == "high":
        bad = draw(st.one_of(st.integers(dim, dim + 3), st.integers(dim, 2**40), st.just(2**63 - 1)))
        fits = bad <= MAX_DIM
        indices = idx.astype(np.uint32 if fits and draw(st.booleans()) else np.int64)
        indices[pos] = bad
        return Corruption(ip, indices, data, dim, kind, IndexOutOfRangeError, (f"indices[{pos}]", f"row {row}"), fits)
    if kind == "negative":
        small = len(idx) == 0 or int(idx.max()) < 2**31  # int32 cannot hold larger (valid) indices
        indices = idx.astype(draw(st.sampled_from([np.int32, np.int64])) if small else np.int64)
        indices[pos] = draw(st.integers(-(2**31), -1))
        return Corruption(ip, indices, data, dim, kind, IndexOutOfRangeError, (f"indices[{pos}]", f"row {row}"), False)
    r = draw(st.sampled_from(multi))
    p = draw(st.integers(int(ip[r]), int(ip[r + 1]) - 2))
    if kind == "swap":
        indices[p], indices[p + 1] = indices[p + 1], indices[p]
        frags: tuple[str, ...] = (f"row {r}", f"indices[{p}]", f"indices[{p + 1}]")
    else:
        indices[p + 1] = indices[p]
        frags = (f"row {r}", f"positions {p} and {p + 1}")
    return Corruption(ip, indices, data, dim, kind, SparseFormatError, frags, True)


@given(corruptions())
def test_one_corrupted_entry_is_reported_with_its_position(c: Corruption) -> None:
    def make(**kw: Any) -> Callable[[], SparseBatch]:
        return lambda: SparseBatch.from_arrays(c.indptr, c.indices, c.data, c.dim, **kw)

    msg = expect(make(), c.exc, *c.fragments)
    if c.kind in ("swap", "duplicate"):
        fixed = make(canonicalize=True)()
        assert fixed.is_canonical()
        assert fixed.nnz == len(c.indices) - (c.kind == "duplicate")
    else:
        assert expect(make(canonicalize=True), c.exc, *c.fragments) == msg
    if c.checked_in_rust:
        unchecked = make(check=False)()  # structure is fine, content is not checked
        for n in (None, 1, 3):
            assert expect(functools.partial(unchecked.check, num_threads=n), c.exc, *c.fragments) == msg
        unchecked.check(full=False)  # structure only: passes


def test_first_bad_entry_wins_whatever_the_thread_count() -> None:
    n_rows = 3000  # several 256-row chunks, so several threads see a problem
    ip = np.arange(0, 2 * n_rows + 1, 2, dtype=np.int64)
    idx = np.tile(np.array([1, 5], np.uint32), n_rows)
    val = np.ones(2 * n_rows, np.float32)
    idx[2 * 700 + 1] = 9  # row 700, position 1401: out of range for dim 8
    val[2 * 2500] = np.nan  # row 2500, position 5000
    idx[2 * 2900], idx[2 * 2900 + 1] = 5, 1  # row 2900: unsorted
    b = SparseBatch.from_arrays(ip, idx, val, 8, check=False)
    for n in (1, 2, 3, 4, 8, 16):
        expect(functools.partial(b.check, num_threads=n), IndexOutOfRangeError, "indices[1401]", "row 700")
    expect(lambda: SparseBatch.from_arrays(ip, idx, val, 8), IndexOutOfRangeError, "indices[1401]", "row 700")


# ---------------------------------------------------------------------------------------------------------------
# property: arbitrary garbage never panics
# ---------------------------------------------------------------------------------------------------------------

int_dtypes = st.sampled_from([np.int64, np.int32, np.uint32, np.uint64, np.int8, np.float64, np.float32])
float_dtypes = st.sampled_from([np.float32, np.float64, np.float16, np.int64, np.complex64, np.bool_])


@st.composite
def garbage_arrays(draw: st.DrawFn) -> tuple[Any, Any, Any, Any, Any]:
    indptr = draw(st.lists(st.integers(-3, 12), max_size=6))
    indices = draw(st.lists(st.integers(-3, 2**33), max_size=10))
    data = draw(st.lists(st.floats(allow_nan=True, allow_infinity=True), max_size=10))

    def cast(values: list[Any], dtype: Any) -> Any:
        try:
            return np.array(values, dtype=dtype)
        except (OverflowError, ValueError):
            return np.array(values)

    ip = cast(indptr, draw(int_dtypes)) if draw(st.booleans()) else indptr
    ix = cast(indices, draw(int_dtypes)) if draw(st.booleans()) else indices
    with np.errstate(all="ignore"):
        dv = cast(data, draw(float_dtypes)) if draw(st.booleans()) else data
    dim = draw(st.one_of(st.sampled_from([0, 1, 5, 13, MAX_DIM, 2**32, -1, 2**64]), st.integers(1, 20)))
    canon = draw(st.sampled_from([False, True, "sum", "max"]))
    return ip, ix, dv, dim, canon


@given(garbage_arrays())
def test_garbage_never_panics(args: tuple[Any, Any, Any, Any, Any]) -> None:
    ip, ix, dv, dim, canon = args
    made: list[SparseBatch] = []
    e = outcome(lambda: made.append(SparseBatch.from_arrays(ip, ix, dv, dim, canonicalize=canon)))
    if e is not None:
        assert not is_panic(e), f"Rust panicked: {e!r}"
        assert isinstance(e, SparsecoreError), f"untyped {type(e).__name__}: {e}"
        return
    # accepted: then it is valid, and operations on it work
    b = made[0]
    b.check()
    assert b.is_canonical()
    assert bool(np.all(b.indices.astype(np.int64) < b.dim))
    assert bool(np.all(np.isfinite(b.data)))
    assert b.top_k(1).nnz <= b.n_rows
    b.threshold(0.0)
    b.prune_mass(0.5)
    b.scores_top_k(b, 2)
    b.quantize(8).dequantize()


@given(
    sparse_batches(),
    st.sampled_from(["top_k", "threshold", "prune_mass", "quantize", "scores_top_k", "getitem", "row"]),
    st.one_of(
        st.integers(-3, 3),
        st.floats(allow_nan=True, allow_infinity=True),
        st.sampled_from([None, "1", True, [], np.int64(-1), np.float32("nan")]),
    ),
)
def test_operation_arguments_never_panic(b: SparseBatch, op: str, arg: Any) -> None:
    fns: dict[str, Callable[[], object]] = {
        "top_k": lambda: b.top_k(arg),
        "threshold": lambda: b.threshold(arg),
        "prune_mass": lambda: b.prune_mass(arg),
        "quantize": lambda: b.quantize(arg),
        "scores_top_k": lambda: b.scores_top_k(b, arg),
        "getitem": lambda: b[arg],
        "row": lambda: b.row(arg),
    }
    e = outcome(fns[op])
    assert e is None or not is_panic(e), f"Rust panicked: {e!r}"
    assert e is None or isinstance(e, Exception), repr(e)
