"""Batches of sparse vectors in CSR form, validated in Rust, with parallel row operations.

A :class:`SparseBatch` holds ``indptr`` (int64, ``n_rows + 1`` offsets), ``indices`` (uint32 column ids,
strictly increasing within each row), ``data`` (float32, finite) and ``dim`` (``1 <= dim <= 2**32 - 1``).

Memory: arrays that already have these dtypes and are C-contiguous are used without copying (the batch then
shares memory with the caller's arrays; do not modify them afterwards). int32 indices that are non-negative are
reinterpreted as uint32 without copying. Every other dtype conversion copies once. Operations return new
batches whose arrays are owned by numpy (moved out of Rust, no copy).
"""

from __future__ import annotations

import itertools
import operator
import warnings
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal, SupportsIndex, cast

import numpy as np
from numpy.typing import ArrayLike, NDArray

from sparsecore import _core
from sparsecore._optional import require
from sparsecore._validate import check_int, check_num_threads, is_int, nonnegative_int, positive_int
from sparsecore.exceptions import (
    DTypeError,
    IndexOutOfRangeError,
    InvalidArgumentError,
    NonFiniteError,
    SparseFormatError,
    UnknownTokenError,
)

if TYPE_CHECKING:
    import torch

__all__ = ["MAX_DIM", "QuantizedBatch", "SparseBatch"]

#: Largest supported dimension: column ids are stored as uint32.
MAX_DIM = 2**32 - 1
_F32_MAX = float(np.finfo(np.float32).max)
_MAX_COUNT = 2**63 - 1

Duplicates = Literal["sum", "max"]


# ---------------------------------------------------------------------------------------------------------------
# Argument coercion (cheap checks here; O(nnz) validation happens in Rust)
# ---------------------------------------------------------------------------------------------------------------


def _check_dim(dim: object) -> int:
    if isinstance(dim, bool):
        raise DTypeError(f"dim: must be an int, got {dim!r}")
    try:
        d = operator.index(cast(SupportsIndex, dim))
    except TypeError:
        raise DTypeError(f"dim: must be an int, got {type(dim).__name__}") from None
    return check_int(d, "dim", low=1, high=MAX_DIM)


def _positive_int(value: object, name: str, *, clamp: bool = False) -> int:
    """Check a count; with ``clamp`` (where any count above the data size means "all") cap it at 2**63 - 1."""
    if clamp and is_int(value) and operator.index(value) > _MAX_COUNT:  # type: ignore[arg-type]
        return _MAX_COUNT
    return positive_int(value, name, high=_MAX_COUNT)


def _one_d(arr: ArrayLike, name: str) -> NDArray[Any]:
    a = np.asarray(arr)
    if a.ndim != 1:
        raise SparseFormatError(f"{name}: must be 1-D, got shape {a.shape}")
    return a


def _where(indptr: NDArray[np.int64] | None, pos: int) -> str:
    """`` (row r)`` for flat position ``pos`` when the row is known, else nothing (for error messages)."""
    if indptr is None:
        return ""
    row = int(np.searchsorted(indptr, pos, side="right")) - 1
    return f" (row {row})" if row >= 0 else ""


def _as_indptr(arr: ArrayLike) -> NDArray[np.int64]:
    a = _one_d(arr, "indptr")
    if a.size == 0 and a.dtype.kind == "f":
        a = a.astype(np.int64)
    if a.dtype.kind not in "iu":
        raise DTypeError(f"indptr: must be an integer array, got dtype {a.dtype}")
    if a.dtype == np.uint64 and a.size and a.max() > np.iinfo(np.int64).max:
        raise SparseFormatError("indptr: values exceed the int64 range")
    return np.ascontiguousarray(a, dtype=np.int64)


def _as_indices(arr: ArrayLike, indptr: NDArray[np.int64] | None = None) -> NDArray[np.uint32]:
    a = _one_d(arr, "indices")
    if a.size == 0 and a.dtype.kind == "f":
        return np.zeros(0, dtype=np.uint32)
    if a.dtype.kind not in "iu":
        raise DTypeError(f"indices: must be an integer array, got dtype {a.dtype}")
    if a.dtype == np.uint32:
        return np.ascontiguousarray(a)
    if a.dtype.kind == "i" and a.size:
        neg = np.flatnonzero(a < 0)
        if neg.size:
            pos = int(neg[0])
            raise IndexOutOfRangeError(f"indices[{pos}]{_where(indptr, pos)} = {int(a[pos])} is negative")
    if a.dtype == np.int32:
        return np.ascontiguousarray(a).view(np.uint32)  # non-negative int32 has the same bits as uint32
    if a.size and a.dtype.itemsize > 4:
        big = np.flatnonzero(a > MAX_DIM)
        if big.size:
            pos = int(big[0])
            raise IndexOutOfRangeError(
                f"indices[{pos}]{_where(indptr, pos)} = {int(a[pos])} exceeds the largest dim 2**32 - 1"
            )
    return np.ascontiguousarray(a, dtype=np.uint32)


def _as_data(arr: ArrayLike, indptr: NDArray[np.int64] | None = None) -> NDArray[np.float32]:
    a = _one_d(arr, "data")
    if a.dtype == np.float32:
        return np.ascontiguousarray(a)
    if a.dtype.kind not in "fiub":
        raise DTypeError(f"data: must be a real numeric array, got dtype {a.dtype}")
    if a.dtype.kind == "f" and a.dtype.itemsize > 4 and a.size:
        big = np.flatnonzero(np.isfinite(a) & (np.abs(a) > _F32_MAX))
        if big.size:
            pos = int(big[0])
            raise NonFiniteError(f"data[{pos}]{_where(indptr, pos)} = {a[pos]!r} overflows float32")
    return np.ascontiguousarray(a, dtype=np.float32)


def _readonly(a: NDArray[Any]) -> NDArray[Any]:
    v: NDArray[Any] = a.view()
    v.flags.writeable = False
    return v


# ---------------------------------------------------------------------------------------------------------------
# SparseBatch
# ---------------------------------------------------------------------------------------------------------------


class SparseBatch:
    """A batch of sparse vectors in CSR form.

    Construct with :meth:`from_arrays` or one of the converters (:meth:`from_scipy`, :meth:`from_torch`,
    :meth:`from_dicts`, :meth:`from_token_dicts`, :meth:`from_pairs`, :meth:`from_dense`). The constructor
    validates everything in Rust: indices in ``[0, dim)``, strictly increasing within each row (or
    canonicalised when asked), finite values, a well-formed ``indptr``.

    Parameters
    ----------
    indptr, indices, data, dim
        As for :meth:`from_arrays`.
    canonicalize
        ``False`` (reject unsorted or repeated indices), ``True``/``"sum"`` (sort rows, add repeats) or
        ``"max"`` (sort rows, keep the largest repeat).
    check
        Skip the O(nnz) content validation when ``False`` (only for arrays produced by sparsecore itself).

    Examples
    --------
    >>> import numpy as np, sparsecore as sc
    >>> b = sc.SparseBatch.from_dicts([{3: 0.5, 10: 2.0}, {}, {7: 1.0}], dim=16)
    >>> b
    SparseBatch(n_rows=3, dim=16, nnz=3)
    >>> b.top_k(1).to_dicts()
    [{10: 2.0}, {}, {7: 1.0}]
    """

    __slots__ = ("_data", "_dim", "_indices", "_indptr")

    def __init__(
        self,
        indptr: ArrayLike,
        indices: ArrayLike,
        data: ArrayLike,
        dim: int,
        *,
        canonicalize: bool | Duplicates = False,
        check: bool = True,
    ) -> None:
        ip = _as_indptr(indptr)
        self._indptr = ip
        self._indices = _as_indices(indices, ip)
        self._data = _as_data(data, ip)
        self._dim = _check_dim(dim)
        if canonicalize is not False:
            dup: Duplicates = "sum" if canonicalize is True else canonicalize
            if dup not in ("sum", "max"):
                raise InvalidArgumentError(f'canonicalize: must be a bool, "sum" or "max", got {canonicalize!r}')
            _core.check(self._csr, sorted=False)
            if not _core.is_canonical(self._csr):
                self._indptr, self._indices, self._data = _core.canonicalize(self._csr, dup)
        elif check:
            _core.check(self._csr, sorted=True)
        else:
            _core.check(self._csr, content=False)  # structure only, O(rows)

    @classmethod
    def _trusted(
        cls, indptr: NDArray[np.int64], indices: NDArray[np.uint32], data: NDArray[np.float32], dim: int
    ) -> SparseBatch:
        obj = cls.__new__(cls)
        obj._indptr, obj._indices, obj._data, obj._dim = indptr, indices, data, dim
        return obj

    @property
    def _csr(self) -> tuple[NDArray[np.int64], NDArray[np.uint32], NDArray[np.float32], int]:
        return (self._indptr, self._indices, self._data, self._dim)

    # -- construction ---------------------------------------------------------------------------------------------

    @classmethod
    def from_arrays(
        cls,
        indptr: ArrayLike,
        indices: ArrayLike,
        data: ArrayLike,
        dim: int,
        *,
        canonicalize: bool | Duplicates = False,
        check: bool = True,
    ) -> SparseBatch:
        """Build a batch from CSR arrays, validating them.

        Parameters
        ----------
        indptr
            ``n_rows + 1`` non-decreasing offsets starting at 0 and ending at ``len(indices)``; any integer dtype.
        indices
            Column ids in ``[0, dim)``; any integer dtype (non-negative int32 and uint32 are used without copy).
        data
            Finite values; float32 is used without copy, other real dtypes are converted.
        dim
            Number of columns, ``1 <= dim <= 2**32 - 1``.
        canonicalize
            ``False`` rejects unsorted/repeated indices; ``True`` or ``"sum"`` sorts rows and adds repeats;
            ``"max"`` keeps the largest repeat.
        check
            Validate content (O(nnz), parallel). Leave on unless the arrays come from sparsecore.

        Returns
        -------
        SparseBatch

        Raises
        ------
        SparseFormatError
            Malformed ``indptr``, mismatched lengths, unsorted or duplicate indices.
        IndexOutOfRangeError
            An index is negative or ``>= dim``.
        NonFiniteError
            A value is NaN, infinite, or overflows float32.
        DTypeError
            Non-integer indices or non-numeric data.
        InvalidArgumentError
            ``dim`` out of range.
        """
        return cls(indptr, indices, data, dim, canonicalize=canonicalize, check=check)

    @classmethod
    def empty(cls, n_rows: int, dim: int) -> SparseBatch:
        """Return a batch of ``n_rows`` empty rows of dimension ``dim``."""
        rows = nonnegative_int(n_rows, "n_rows")
        return cls._trusted(
            np.zeros(rows + 1, np.int64), np.zeros(0, np.uint32), np.zeros(0, np.float32), _check_dim(dim)
        )

    @classmethod
    def from_dense(cls, x: ArrayLike, *, num_threads: int | None = None) -> SparseBatch:
        """Build a batch from the non-zeros of a 2-D dense array (copies; float32 conversion if needed).

        Raises
        ------
        NonFiniteError
            ``x`` holds NaN or infinity, or values overflowing float32.
        SparseFormatError
            ``x`` is not 2-D.
        InvalidArgumentError
            ``x`` has no columns.
        """
        a = np.asarray(x)
        if a.ndim != 2:
            raise SparseFormatError(f"dense: must be 2-D, got shape {a.shape}")
        if a.dtype.kind not in "fiub":
            raise DTypeError(f"dense: must be a real numeric array, got dtype {a.dtype}")
        if a.dtype.kind == "f" and a.dtype.itemsize > 4 and a.size:
            big = np.argwhere(np.isfinite(a) & (np.abs(a) > _F32_MAX))
            if big.size:
                r, c = (int(v) for v in big[0])
                raise NonFiniteError(f"dense[{r}, {c}] = {a[r, c]!r} overflows float32")
        a32 = np.ascontiguousarray(a, dtype=np.float32)
        ip, idx, val = _core.from_dense(a32, num_threads=check_num_threads(num_threads))
        return cls._trusted(ip, idx, val, a.shape[1])

    @classmethod
    def from_scipy(cls, m: Any) -> SparseBatch:
        """Build a batch from any scipy.sparse matrix or array (CSR used in place when dtypes allow).

        CSC, COO and the other formats are converted with ``m.tocsr()`` (a copy). Repeated entries are added,
        as scipy does; explicit zeros are kept.

        Raises
        ------
        DTypeError
            ``m`` is not a scipy sparse matrix, or has complex values.
        """
        sp = require("scipy.sparse")
        if not sp.issparse(m):
            raise DTypeError(f"m: must be a scipy.sparse matrix or array, got {type(m).__name__}")
        if len(m.shape) != 2:
            raise SparseFormatError(f"m: must be 2-D, got shape {m.shape}")
        csr = m if m.format == "csr" else m.tocsr()
        return cls(csr.indptr, csr.indices, csr.data, int(m.shape[1]), canonicalize="sum")

    @classmethod
    def from_torch(cls, t: torch.Tensor) -> SparseBatch:
        """Build a batch from a 2-D torch tensor: sparse COO, sparse CSR or dense (strided).

        The tensor is detached and moved to CPU; COO is coalesced (repeats added). Copies once.

        Raises
        ------
        MissingExtraError
            torch is not installed.
        """
        torch = require("torch")
        if not isinstance(t, torch.Tensor):
            raise DTypeError(f"t: must be a torch.Tensor, got {type(t).__name__}")
        if t.dim() != 2:
            raise SparseFormatError(f"t: must be 2-D, got shape {tuple(t.shape)}")
        if t.is_complex():
            raise DTypeError(f"t: must have real values, got {t.dtype}")
        t = t.detach().cpu()
        n_rows, dim = (int(s) for s in t.shape)
        if t.layout == torch.sparse_coo:
            c = t.coalesce()
            rc = c.indices().numpy()
            counts = np.bincount(rc[0], minlength=n_rows)
            indptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
            return cls(indptr, rc[1], _torch_values(c.values()), dim)
        if t.layout == torch.sparse_csr:
            return cls(
                t.crow_indices().numpy(), t.col_indices().numpy(), _torch_values(t.values()), dim, canonicalize="sum"
            )
        if t.layout == torch.strided:
            return cls.from_dense(_torch_values(t))
        raise DTypeError(f"t: unsupported layout {t.layout}; use sparse_coo, sparse_csr or strided")

    @classmethod
    def from_dicts(cls, rows: Iterable[Mapping[int, float]], dim: int) -> SparseBatch:
        """Build a batch from one ``{column_id: value}`` mapping per row (copies).

        Raises
        ------
        DTypeError
            A key is not an integer (use :meth:`from_token_dicts` for strings).
        """
        rows = list(rows)
        lengths = np.fromiter((len(r) for r in rows), dtype=np.int64, count=len(rows))
        indptr = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        try:
            keys = np.fromiter(itertools.chain.from_iterable(r.keys() for r in rows), dtype=np.int64)
        except OverflowError:
            raise IndexOutOfRangeError("rows: a key exceeds the largest dim 2**32 - 1") from None
        except (TypeError, ValueError) as exc:
            raise DTypeError(
                f"rows: keys must be integer column ids ({exc}); use from_token_dicts for token strings"
            ) from None
        try:
            vals = np.fromiter(itertools.chain.from_iterable(r.values() for r in rows), dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise DTypeError(f"rows: values must be real numbers ({exc})") from None
        return cls(indptr, keys, vals, dim, canonicalize="sum")

    @classmethod
    def from_token_dicts(
        cls,
        rows: Iterable[Mapping[str, float]],
        vocab: Mapping[str, int],
        *,
        dim: int | None = None,
        unknown: Literal["error", "ignore"] = "error",
    ) -> SparseBatch:
        """Build a batch from ``{token: weight}`` mappings through a vocabulary ``{token: id}``.

        Parameters
        ----------
        rows
            One mapping per row.
        vocab
            Token string to column id.
        dim
            Dimension; defaults to ``max(vocab.values()) + 1``.
        unknown
            ``"error"`` raises :class:`UnknownTokenError` for a token not in ``vocab``; ``"ignore"`` drops it.
        """
        if unknown not in ("error", "ignore"):
            raise InvalidArgumentError(f'unknown: must be "error" or "ignore", got {unknown!r}')
        if not isinstance(vocab, Mapping):
            raise DTypeError(f"vocab: must be a mapping from token to id, got {type(vocab).__name__}")
        if dim is None:
            if not vocab:
                raise InvalidArgumentError("vocab: is empty; pass dim explicitly")
            dim = max(vocab.values()) + 1
        id_rows: list[dict[int, float]] = []
        for r, row in enumerate(rows):
            out: dict[int, float] = {}
            for tok, w in row.items():
                tid = vocab.get(tok)
                if tid is None:
                    if unknown == "error":
                        raise UnknownTokenError(f"rows[{r}]: token {tok!r} is not in the vocabulary")
                    continue
                out[tid] = out.get(tid, 0.0) + float(w)
            id_rows.append(out)
        return cls.from_dicts(id_rows, dim)

    @classmethod
    def from_pairs(
        cls, pairs: Iterable[tuple[ArrayLike, ArrayLike]], dim: int, *, canonicalize: bool | Duplicates = False
    ) -> SparseBatch:
        """Build a batch from one ``(indices, values)`` pair of 1-D arrays per row (copies).

        Raises
        ------
        SparseFormatError
            A pair's arrays differ in length (the message names the pair), or rows are unsorted and
            ``canonicalize`` is False.
        """
        idx_parts: list[NDArray[Any]] = []
        val_parts: list[NDArray[Any]] = []
        for i, (ix, vs) in enumerate(pairs):
            a, b = np.asarray(ix).reshape(-1), np.asarray(vs).reshape(-1)
            if a.size == 0:  # np.asarray([]) is float64; an empty row must not turn other rows' ids into floats
                a, b = a.astype(np.uint32), b.astype(np.float32)
            if a.shape != b.shape:
                raise SparseFormatError(f"pairs[{i}]: indices has {a.size} entries but values has {b.size}")
            idx_parts.append(a)
            val_parts.append(b)
        lengths = np.array([p.size for p in idx_parts], dtype=np.int64)
        indptr = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        indices = np.concatenate(idx_parts) if idx_parts else np.zeros(0, np.uint32)
        data = np.concatenate(val_parts) if val_parts else np.zeros(0, np.float32)
        return cls(indptr, indices, data, dim, canonicalize=canonicalize)

    @classmethod
    def concat(cls, batches: Sequence[SparseBatch]) -> SparseBatch:
        """Stack batches of one dimension vertically (copies once).

        Raises
        ------
        ShapeMismatchError
            The batches have different dims.
        InvalidArgumentError
            ``batches`` is empty.
        """
        batches = list(batches)
        if not batches:
            raise InvalidArgumentError("batches: needs at least one batch")
        for i, b in enumerate(batches):
            if not isinstance(b, SparseBatch):
                raise DTypeError(f"batches[{i}]: must be a SparseBatch, got {type(b).__name__}")
        ip, idx, val = _core.concat([b._csr for b in batches])
        return cls._trusted(ip, idx, val, batches[0].dim)

    # -- attributes -----------------------------------------------------------------------------------------------

    @property
    def indptr(self) -> NDArray[np.int64]:
        """Row offsets (read-only view), ``n_rows + 1`` int64."""
        return _readonly(self._indptr)

    @property
    def indices(self) -> NDArray[np.uint32]:
        """Column ids (read-only view), uint32, strictly increasing within each row."""
        return _readonly(self._indices)

    @property
    def data(self) -> NDArray[np.float32]:
        """Values (read-only view), float32."""
        return _readonly(self._data)

    @property
    def dim(self) -> int:
        """Number of columns."""
        return self._dim

    @property
    def n_rows(self) -> int:
        """Number of rows (vectors)."""
        return len(self._indptr) - 1

    @property
    def shape(self) -> tuple[int, int]:
        """``(n_rows, dim)``."""
        return (self.n_rows, self._dim)

    @property
    def nnz(self) -> int:
        """Number of stored entries."""
        return len(self._indices)

    @property
    def row_nnz(self) -> NDArray[np.int64]:
        """Stored entries per row."""
        return np.diff(self._indptr)

    def __len__(self) -> int:
        return self.n_rows

    def __repr__(self) -> str:
        return f"SparseBatch(n_rows={self.n_rows}, dim={self._dim}, nnz={self.nnz})"

    def row(self, i: int) -> tuple[NDArray[np.uint32], NDArray[np.float32]]:
        """Column ids and values of row ``i`` (read-only views; negative ``i`` counts from the end)."""
        n = self.n_rows
        j = operator.index(i)
        if not -n <= j < n:
            raise IndexOutOfRangeError(f"row {j} is out of range for {n} rows")
        j %= n
        s, e = int(self._indptr[j]), int(self._indptr[j + 1])
        return _readonly(self._indices[s:e]), _readonly(self._data[s:e])

    def __getitem__(self, key: int | slice | ArrayLike) -> SparseBatch:
        """Select rows: an int (one-row batch), a slice (zero-copy for step 1), an int array or a boolean mask."""
        n = self.n_rows
        if isinstance(key, (int, np.integer)) and not isinstance(key, bool):
            j = int(key)
            if not -n <= j < n:
                raise IndexOutOfRangeError(f"row {j} is out of range for {n} rows")
            key = slice(j % n, j % n + 1)
        if isinstance(key, slice):
            start, stop, step = key.indices(n)
            if step == 1:
                stop = max(stop, start)
                s, e = int(self._indptr[start]), int(self._indptr[stop])
                return SparseBatch._trusted(
                    self._indptr[start : stop + 1] - s, self._indices[s:e], self._data[s:e], self._dim
                )
            rows = np.arange(start, stop, step, dtype=np.int64)
        else:
            sel = np.asarray(key)
            if sel.dtype == np.bool_:
                if sel.shape != (n,):
                    raise IndexOutOfRangeError(f"boolean row mask must have shape ({n},), got {sel.shape}")
                rows = np.flatnonzero(sel)
            elif sel.dtype.kind in "iu":
                flat = sel.reshape(-1)
                # Compare before any cast so that huge uint64 ids cannot wrap around to valid rows.
                bad = np.flatnonzero(flat >= n) if flat.dtype.kind == "u" else np.flatnonzero((flat < -n) | (flat >= n))
                if bad.size:
                    raise IndexOutOfRangeError(
                        f"rows[{int(bad[0])}] = {int(flat[bad[0]])} is out of range for {n} rows"
                    )
                rows = flat.astype(np.int64)
                rows = np.where(rows < 0, rows + n, rows)
            else:
                raise IndexOutOfRangeError(
                    f"rows must be an int, a slice, an int array or a boolean mask, got dtype {sel.dtype}"
                )
        ip, idx, val = _core.take_rows(self._csr, np.ascontiguousarray(rows, dtype=np.uint64))
        return SparseBatch._trusted(ip, idx, val, self._dim)

    def equals(self, other: SparseBatch) -> bool:
        """Whether ``other`` has the same dim, rows, indices and values (exactly)."""
        return (
            isinstance(other, SparseBatch)
            and self._dim == other._dim
            and np.array_equal(self._indptr, other._indptr)
            and np.array_equal(self._indices, other._indices)
            and np.array_equal(self._data, other._data)
        )

    # -- validation -----------------------------------------------------------------------------------------------

    def check(self, full: bool = True, *, num_threads: int | None = None) -> None:
        """Validate the batch again (e.g. after its source arrays may have been modified).

        Parameters
        ----------
        full
            Also check per-entry content (indices in range, sorted and unique; finite values), O(nnz) in
            parallel; with ``False`` only the structure (``indptr`` and lengths), O(rows).
        num_threads
            Worker threads for the content check.
        """
        if full:
            _core.check(self._csr, sorted=True, num_threads=check_num_threads(num_threads))
        else:
            _core.check(self._csr, content=False)

    def is_canonical(self) -> bool:
        """Whether every row's indices are strictly increasing (always true for a validated batch)."""
        return bool(_core.is_canonical(self._csr))

    def canonicalize(
        self, duplicates: Duplicates = "sum", *, drop_zeros: bool = False, num_threads: int | None = None
    ) -> SparseBatch:
        """Return a batch with sorted rows, repeats merged, and (optionally) stored zeros dropped."""
        ip, idx, val = _core.canonicalize(self._csr, duplicates, drop_zeros, num_threads=check_num_threads(num_threads))
        return SparseBatch._trusted(ip, idx, val, self._dim)

    # -- row operations -------------------------------------------------------------------------------------------

    def top_k(self, k: int, *, by_magnitude: bool = False, num_threads: int | None = None) -> SparseBatch:
        """Keep the ``k`` largest entries of each row; ties go to the smaller column id.

        Parameters
        ----------
        k
            Entries to keep per row (rows with fewer keep all).
        by_magnitude
            Rank by ``|value|`` instead of value.
        num_threads
            Worker threads (default: ``SPARSECORE_NUM_THREADS`` or all cores). Results do not depend on it.
        """
        k = _positive_int(k, "k", clamp=True)
        ip, idx, val = _core.top_k(self._csr, k, by_magnitude, num_threads=check_num_threads(num_threads))
        return SparseBatch._trusted(ip, idx, val, self._dim)

    def threshold(self, t: float, *, by_magnitude: bool = False, num_threads: int | None = None) -> SparseBatch:
        """Keep the entries with ``value >= t`` (``|value| >= t`` with ``by_magnitude``)."""
        t = float(t)
        if np.isnan(t):
            raise InvalidArgumentError("t: must not be NaN")
        ip, idx, val = _core.threshold(self._csr, t, by_magnitude, num_threads=check_num_threads(num_threads))
        return SparseBatch._trusted(ip, idx, val, self._dim)

    def prune_mass(self, fraction: float, *, num_threads: int | None = None) -> SparseBatch:
        """Keep, per row, the fewest largest-magnitude entries holding ``fraction`` of the row's L1 mass.

        Ties go to the smaller column id; sums run in float64 from the largest entry down. Rows whose mass is
        zero become empty.

        Parameters
        ----------
        fraction
            In ``(0, 1]``.
        num_threads
            Worker threads (results do not depend on it).
        """
        f = float(fraction)
        if not 0.0 < f <= 1.0:
            raise InvalidArgumentError(f"fraction: must be in (0, 1], got {fraction!r}")
        ip, idx, val = _core.prune_mass(self._csr, f, num_threads=check_num_threads(num_threads))
        return SparseBatch._trusted(ip, idx, val, self._dim)

    # -- products -------------------------------------------------------------------------------------------------

    def _check_other(self, other: SparseBatch) -> None:
        if not isinstance(other, SparseBatch):
            raise DTypeError(f"other: must be a SparseBatch, got {type(other).__name__}")

    def dot(self, other: SparseBatch, *, num_threads: int | None = None) -> NDArray[np.float32]:
        """Row-wise dot products ``self[i] . other[i]`` (accumulated in float64), shape ``(n_rows,)``.

        Raises
        ------
        ShapeMismatchError
            Different dims or row counts.
        """
        self._check_other(other)
        return _core.row_dot(self._csr, other._csr, num_threads=check_num_threads(num_threads))

    def scores(self, other: SparseBatch, *, num_threads: int | None = None) -> NDArray[np.float32]:
        """All-pairs dot products ``self @ other.T`` as a dense float32 ``(n_rows, other.n_rows)`` matrix.

        Raises
        ------
        ShapeMismatchError
            Different dims.
        ResourceError
            The matrix cannot be allocated (use :meth:`scores_top_k`).
        """
        self._check_other(other)
        return _core.scores_dense(self._csr, other._csr, num_threads=check_num_threads(num_threads))

    def scores_top_k(
        self, other: SparseBatch, k: int, *, num_threads: int | None = None
    ) -> tuple[NDArray[np.int64], NDArray[np.float32]]:
        """The ``k`` best rows of ``other`` for every row of ``self`` by dot product, without the full matrix.

        Matches sorting each row of :meth:`scores` by (score descending, row id ascending): rows of ``other``
        that share no column score 0 and can appear when fewer than ``k`` rows overlap (or scores are negative).

        Returns
        -------
        ids : ndarray of int64, shape (n_rows, k)
            Row ids into ``other``, best first; ``-1`` pads when ``other`` has fewer than ``k`` rows.
        scores : ndarray of float32, shape (n_rows, k)
            Their scores; ``-inf`` pads.
        """
        self._check_other(other)
        k = _positive_int(k, "k")
        return _core.scores_top_k(self._csr, other._csr, k, num_threads=check_num_threads(num_threads))

    def matmul_dense(self, m: ArrayLike, *, num_threads: int | None = None) -> NDArray[np.float32]:
        """Sparse x dense product ``self @ m`` for a ``(dim, p)`` matrix; float32 ``(n_rows, p)``.

        ``m`` is converted to C-contiguous float32 (a copy unless it already is).
        """
        a = np.asarray(m)
        if a.ndim != 2:
            raise SparseFormatError(f"m: must be 2-D, got shape {a.shape}")
        if a.dtype.kind not in "fiub":
            raise DTypeError(f"m: must be a real numeric array, got dtype {a.dtype}")
        m32 = np.ascontiguousarray(a, dtype=np.float32)
        if not np.isfinite(m32).all():
            r, c = (int(v) for v in np.argwhere(~np.isfinite(m32))[0])
            raise NonFiniteError(f"m[{r}, {c}] = {a[r, c]!r} is not finite in float32")
        return _core.matmul_dense(self._csr, m32, num_threads=check_num_threads(num_threads))

    # -- quantization ---------------------------------------------------------------------------------------------

    def quantize(self, bits: Literal[8, 16] = 8, *, num_threads: int | None = None) -> QuantizedBatch:
        """Quantize values to uint8 or uint16 with one affine map for the batch.

        ``offset = min(0, min(data))``, ``scale = (max(0, max(data)) - offset) / (2**bits - 1)``; every value
        comes back from :meth:`QuantizedBatch.dequantize` within ``scale / 2``. Non-negative data keeps
        ``offset = 0`` so zeros stay exact.
        """
        if type(bits) is not int or bits not in (8, 16):
            raise InvalidArgumentError(f"bits: must be the int 8 or 16, got {bits!r}")
        codes, scale, offset = _core.quantize(self._csr, bits, num_threads=check_num_threads(num_threads))
        return QuantizedBatch(self._indptr, self._indices, codes, float(scale), float(offset), self._dim)

    # -- export ---------------------------------------------------------------------------------------------------

    def to_dense(self, *, num_threads: int | None = None) -> NDArray[np.float32]:
        """Dense float32 ``(n_rows, dim)`` copy.

        Raises
        ------
        ResourceError
            ``n_rows * dim`` floats cannot be allocated.
        """
        return _core.to_dense(self._csr, num_threads=check_num_threads(num_threads))

    def to_scipy(self, format: Literal["csr", "csc", "coo"] = "csr") -> Any:
        """Return a ``scipy.sparse.csr_array`` (or ``csc``/``coo``) with the same entries.

        scipy has no uint32 index type: indices are handed over as an int32 view when ``dim <= 2**31 - 1``, but
        scipy converts ``indices`` and ``indptr`` to one common index dtype, which usually copies them. Values
        are shared with this batch for CSR.
        """
        sp = require("scipy.sparse")
        if format not in ("csr", "csc", "coo"):
            raise InvalidArgumentError(f'format: must be "csr", "csc" or "coo", got {format!r}')
        idx = self._indices.view(np.int32) if self._dim <= 2**31 - 1 else self._indices.astype(np.int64)
        m = sp.csr_array((self._data, idx, self._indptr), shape=self.shape)
        return m if format == "csr" else m.asformat(format)

    def to_torch(self, layout: Literal["coo", "csr"] = "coo") -> torch.Tensor:
        """Return a CPU torch sparse tensor (``sparse_coo`` coalesced, or ``sparse_csr``) of float32 values.

        torch needs int64 indices, so indices are copied; values share memory when this batch's array is
        writable.
        """
        th = require("torch")
        data = self._data if self._data.flags.writeable else self._data.copy()
        values = th.from_numpy(data)
        out: torch.Tensor
        if layout == "csr":
            with warnings.catch_warnings():
                # torch flags its CSR layout as beta on every construction; that is torch's notice, not ours.
                warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta", category=UserWarning)
                out = th.sparse_csr_tensor(
                    th.from_numpy(self._indptr.copy()),
                    th.from_numpy(self._indices.astype(np.int64)),
                    values,
                    size=self.shape,
                    check_invariants=False,  # valid by construction; checking would cost a pass over the data
                )
            return out
        if layout == "coo":
            rows = np.repeat(np.arange(self.n_rows, dtype=np.int64), self.row_nnz)
            ind = th.from_numpy(np.stack([rows, self._indices.astype(np.int64)]))
            out = th.sparse_coo_tensor(ind, values, size=self.shape, is_coalesced=True, check_invariants=False)
            return out
        raise InvalidArgumentError(f'layout: must be "coo" or "csr", got {layout!r}')

    def to_dicts(self) -> list[dict[int, float]]:
        """One ``{column_id: value}`` dict per row."""
        ip = self._indptr.tolist()
        idx = self._indices.tolist()
        val = self._data.tolist()
        return [dict(zip(idx[ip[r] : ip[r + 1]], val[ip[r] : ip[r + 1]], strict=True)) for r in range(self.n_rows)]

    def to_token_dicts(self, vocab: Sequence[str] | Mapping[str, int]) -> list[dict[str, float]]:
        """One ``{token: value}`` dict per row, given id-to-token (a sequence) or token-to-id (a mapping).

        Raises
        ------
        UnknownTokenError
            A stored column id has no token.
        """
        if isinstance(vocab, Mapping):
            id_to_tok: dict[int, str] | Sequence[str] = {int(v): k for k, v in vocab.items()}
        else:
            id_to_tok = vocab
        out: list[dict[str, float]] = []
        for r, row in enumerate(self.to_dicts()):
            d: dict[str, float] = {}
            for c, v in row.items():
                try:
                    d[id_to_tok[c]] = v
                except (KeyError, IndexError):
                    raise UnknownTokenError(f"row {r}: column id {c} has no token in the vocabulary") from None
            out.append(d)
        return out

    def to_pairs(self) -> list[tuple[NDArray[np.uint32], NDArray[np.float32]]]:
        """One ``(indices, values)`` pair of read-only views per row (no copy)."""
        return [self.row(r) for r in range(self.n_rows)]


def _torch_values(t: Any) -> NDArray[Any]:
    """A torch tensor's values as numpy, with dtypes numpy lacks (bfloat16) widened to float32."""
    torch = require("torch")
    if t.dtype in (torch.bfloat16, torch.float16):
        t = t.float()
    return np.asarray(t.numpy())


class QuantizedBatch:
    """A :class:`SparseBatch` whose values are stored as uint8/uint16 codes: ``value ~= offset + code * scale``.

    Attributes
    ----------
    indptr, indices, dim
        The structure, shared with the source batch.
    codes
        uint8 or uint16 codes, one per stored entry.
    scale, offset
        The affine map back to values; the error of every value is at most ``scale / 2`` (plus float32
        rounding).
    """

    __slots__ = ("codes", "dim", "indices", "indptr", "offset", "scale")

    def __init__(
        self,
        indptr: NDArray[np.int64],
        indices: NDArray[np.uint32],
        codes: NDArray[np.uint8] | NDArray[np.uint16],
        scale: float,
        offset: float,
        dim: int,
    ) -> None:
        self.indptr, self.indices, self.codes = indptr, indices, codes
        self.scale, self.offset, self.dim = scale, offset, dim

    @property
    def bits(self) -> int:
        """8 or 16."""
        return 8 * int(self.codes.dtype.itemsize)

    @property
    def max_error(self) -> float:
        """Bound on ``|dequantized - original|`` per value (before float32 rounding)."""
        return self.scale / 2

    def __repr__(self) -> str:
        n = len(self.indptr) - 1
        return (
            f"QuantizedBatch(n_rows={n}, dim={self.dim}, nnz={len(self.codes)}, bits={self.bits}, "
            f"scale={self.scale:.3g})"
        )

    def dequantize(self, *, num_threads: int | None = None) -> SparseBatch:
        """Values back as a float32 :class:`SparseBatch` (same structure)."""
        data = _core.dequantize(self.codes, self.scale, self.offset, num_threads=check_num_threads(num_threads))
        return SparseBatch(self.indptr, self.indices, data, self.dim)
