"""SDR memory: sparse distributed codes, coding fields with single-trial learning, hierarchies, a readout.

A *coding field* is ``Q`` competitive modules of ``K`` binary cells; a *code* is one winner per module. The Code
Selection Algorithm (CSA) of Rinkus makes similar inputs get overlapping codes, gives a familiar input its old
code back, learns each input in a single trial (binary Hebbian weights from the active inputs to the winners)
and recognises in time independent of the number of stored items:

1. ``V_i`` = fraction of the input's active bits with a weight of 1 onto cell ``i`` (times, in sequence mode,
   the fraction of the previous code's cells with a horizontal weight onto ``i``).
2. Familiarity ``G`` = mean over modules of ``max V``.
3. Expansivity ``η = 1 + max(0, (G - G⁻)/(1 - G⁻))^gamma · χ · K``.
4. Win weights ``μ_i = 1 + (η - 1) / (1 + exp(-λ (V_i - sigma)))``.
5. One winner per module drawn with probability ``μ_i / Σ μ`` (novel input → near-uniform → a new code;
   familiar → its old code); recognition takes the argmax of ``V`` instead.

References
----------
- G. Rinkus (2010), "A cortical sparse distributed coding model linking mini- and macrocolumn-scale
  functionality", *Frontiers in Neuroanatomy* 4:17.
- G. Rinkus (2014), "Sparsey™: event recognition via deep hierarchical sparse distributed codes", *Frontiers in
  Computational Neuroscience* 8:160.
- G. Rinkus (2017), "Superposed episodic and semantic memory via sparse distributed representation",
  arXiv:1710.07829.

The model's name is a trademark of its author; the API is named for what it is. Written from the formulas of
those papers. Everything runs in Rust; random draws come from a counter-based stream keyed by (seed, field, item,
module), so results are identical for any ``num_threads``.

Also here: batched SDR utilities (:class:`SDRBatch`: overlap, union, intersection, sparsity, noise, random SDRs)
and encoders (:class:`ScalarEncoder`, :class:`CategoryEncoder`, :class:`GridEncoder`).

Examples
--------
>>> import numpy as np
>>> from sparsecore import sdr
>>> field = sdr.CodingField(64, n_modules=8, cells_per_module=16, seed=0)
>>> x = sdr.SDRBatch.random(3, 64, 8, seed=1)
>>> codes = field.learn(x)
>>> bool((field.recognize(x) == codes).all()), float(field.familiarity(x).min())
(True, 1.0)
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, ClassVar, NoReturn, overload

import numpy as np
from numpy.typing import ArrayLike, NDArray

from sparsecore import _core
from sparsecore._base import BaseEstimator
from sparsecore._container import read_container, sniff, write_container
from sparsecore._io import open_regular_file, read_regular_file, regular_file_size
from sparsecore._progress import progress as _progress_iter
from sparsecore._progress import want_progress
from sparsecore._validate import (
    check_choice,
    check_float,
    check_int,
    check_num_threads,
    check_seed,
    is_int,
    nonnegative_float,
    positive_float,
    refuse_sparse,
)
from sparsecore.exceptions import (
    DTypeError,
    IndexFormatError,
    InvalidArgumentError,
    NotFittedError,
    ShapeMismatchError,
)
from sparsecore.sparse import MAX_DIM, SparseBatch

__all__ = [
    "CategoryEncoder",
    "CodingField",
    "GridEncoder",
    "Level",
    "SDRBatch",
    "SDRClassifier",
    "SDRNetwork",
    "ScalarEncoder",
    "add_noise",
    "intersection",
    "overlap",
    "sparsity",
    "union",
]

_CHUNK = 512  # inputs per Rust call while learning, so the progress bar moves (the call overhead is ~µs)


# ---------------------------------------------------------------------------------------------------------------
# SDR batches and utilities
# ---------------------------------------------------------------------------------------------------------------


class SDRBatch:
    """A batch of SDRs: for each row, the sorted set of active bits out of ``dim``.

    Stored as CSR without values (``indptr`` int64, ``indices`` uint32), like :class:`sparsecore.SparseBatch`.

    Examples
    --------
    >>> from sparsecore.sdr import SDRBatch
    >>> a = SDRBatch.from_indices([[1, 5, 9], [2, 3]], dim=16)
    >>> b = SDRBatch.from_indices([[1, 9, 10]], dim=16)
    >>> a.overlap(b).tolist()
    [2, 0]
    """

    __slots__ = ("_dim", "_indices", "_indptr")

    def __init__(self, indptr: ArrayLike, indices: ArrayLike, dim: int) -> None:
        self._dim = check_int(dim, "dim", low=1, high=MAX_DIM)
        ip = np.ascontiguousarray(indptr, dtype=np.int64)
        idx = np.asarray(indices)
        if idx.size and (idx.dtype.kind not in "iu" or int(idx.min()) < 0 or int(idx.max()) >= self._dim):
            raise InvalidArgumentError(f"indices: must be integers in [0, {self._dim})")
        self._indptr, self._indices = ip, np.ascontiguousarray(idx, dtype=np.uint32)
        if ip.ndim != 1 or ip.size == 0 or ip[0] != 0 or ip[-1] != self._indices.size or (np.diff(ip) < 0).any():
            raise InvalidArgumentError("indptr: must start at 0, not decrease and end at len(indices)")
        rows = np.repeat(np.arange(ip.size - 1), np.diff(ip))
        if self._indices.size > 1:
            same_row = rows[1:] == rows[:-1]
            if (same_row & (self._indices[1:] <= self._indices[:-1])).any():
                raise InvalidArgumentError("indices: active bits must be strictly increasing within each row")

    @classmethod
    def _trusted(cls, indptr: NDArray[np.int64], indices: NDArray[np.uint32], dim: int) -> SDRBatch:
        obj = cls.__new__(cls)
        obj._indptr, obj._indices, obj._dim = indptr, indices, dim
        return obj

    @classmethod
    def from_indices(cls, rows: Sequence[ArrayLike], dim: int) -> SDRBatch:
        """Build from one list of active bits per row (sorted and deduplicated here)."""
        parts = [np.unique(np.asarray(r, dtype=np.int64)) for r in rows]
        indptr = np.zeros(len(parts) + 1, dtype=np.int64)
        indptr[1:] = np.cumsum([p.size for p in parts])
        flat = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
        if flat.size and (flat.min() < 0 or flat.max() >= dim):
            raise InvalidArgumentError(f"rows: active bits must be in [0, {dim})")
        return cls(indptr, flat.astype(np.uint32), dim)

    @classmethod
    def from_dense(cls, x: ArrayLike) -> SDRBatch:
        """Active bits are the non-zero entries of a 2-D array (or a 1-D array for one SDR)."""
        a = np.asarray(x)
        if a.ndim == 1:
            a = a[None, :]
        if a.ndim != 2:
            raise ShapeMismatchError(f"x: must be 1-D or 2-D, got shape {a.shape}")
        if a.dtype.kind not in "biuf":
            raise DTypeError(f"x: must be a boolean or numeric array, got dtype {a.dtype}")
        if a.dtype.kind == "f" and not np.isfinite(a).all():
            from sparsecore.exceptions import NonFiniteError

            raise NonFiniteError("x: contains NaN or infinite values")
        mask = a != 0
        indptr = np.zeros(a.shape[0] + 1, dtype=np.int64)
        indptr[1:] = np.cumsum(mask.sum(axis=1))
        return cls._trusted(
            indptr, np.nonzero(mask)[1].astype(np.uint32), check_int(a.shape[1], "dim", low=1, high=MAX_DIM)
        )

    @classmethod
    def random(cls, n: int, dim: int, n_active: int, *, seed: int = 0, num_threads: int | None = None) -> SDRBatch:
        """``n`` uniformly random SDRs with ``n_active`` of ``dim`` bits (row ``r`` uses the stream (seed, r))."""
        ip, idx = _core.sdr_random(
            check_int(n, "n", low=0, high=2**40),
            check_int(dim, "dim", low=1, high=MAX_DIM),
            check_int(n_active, "n_active", low=0, high=MAX_DIM),
            check_seed(seed),
            num_threads=check_num_threads(num_threads),
        )
        return cls._trusted(ip, idx, int(dim))

    @property
    def indptr(self) -> NDArray[np.int64]:
        """Row offsets into :attr:`indices` (``n_rows + 1``)."""
        return self._indptr

    @property
    def indices(self) -> NDArray[np.uint32]:
        """Active bits of all rows, concatenated."""
        return self._indices

    @property
    def dim(self) -> int:
        """Bits per SDR."""
        return self._dim

    @property
    def n_rows(self) -> int:
        """Number of SDRs."""
        return int(self._indptr.size - 1)

    def __len__(self) -> int:
        return self.n_rows

    @overload
    def __getitem__(self, i: int) -> NDArray[np.uint32]: ...
    @overload
    def __getitem__(self, i: slice) -> SDRBatch: ...
    def __getitem__(self, i: int | slice) -> NDArray[np.uint32] | SDRBatch:
        """``batch[r]``: the active bits of row ``r``; ``batch[a:b]``: the rows as a new batch."""
        n = self.n_rows
        if isinstance(i, slice):
            lo, hi, step = i.indices(n)
            if step != 1:
                raise InvalidArgumentError("SDRBatch slices must have step 1")
            hi = max(hi, lo)
            ip = self._indptr[lo : hi + 1]
            return SDRBatch._trusted(ip - ip[0], self._indices[ip[0] : ip[-1]], self._dim)
        j = int(i) + n if int(i) < 0 else int(i)
        if not 0 <= j < n:
            raise IndexError(f"row {i} out of range for {n} SDRs")
        return self._indices[self._indptr[j] : self._indptr[j + 1]]

    def __repr__(self) -> str:
        return f"SDRBatch(n_rows={self.n_rows}, dim={self._dim}, active={self._indices.size})"

    def n_active(self) -> NDArray[np.int64]:
        """Active bits per row."""
        return np.diff(self._indptr)

    def sparsity(self) -> NDArray[np.float64]:
        """Fraction of active bits per row."""
        return self.n_active() / float(self._dim)

    def _pair(self, other: SDRBatch) -> None:
        if not isinstance(other, SDRBatch):
            raise DTypeError(f"other: must be an SDRBatch, got {type(other).__name__}")

    def overlap(self, other: SDRBatch, *, num_threads: int | None = None) -> NDArray[np.uint32]:
        """``|self_r ∩ other_r|`` per row (``other`` may have one row, compared with every row)."""
        self._pair(other)
        if self._dim != other._dim:
            _dim_mismatch(self, other)
        return _core.sdr_overlap(
            self._indptr,
            self._indices,
            other._indptr,
            other._indices,
            self._dim,
            num_threads=check_num_threads(num_threads),
        )

    def _setop(self, op: str, other: SDRBatch, num_threads: int | None) -> SDRBatch:
        self._pair(other)
        if self._dim != other._dim:
            _dim_mismatch(self, other)
        ip, idx = _core.sdr_setop(
            op,
            self._indptr,
            self._indices,
            other._indptr,
            other._indices,
            self._dim,
            num_threads=check_num_threads(num_threads),
        )
        return SDRBatch._trusted(ip, idx, self._dim)

    def union(self, other: SDRBatch, *, num_threads: int | None = None) -> SDRBatch:
        """Row-wise union (``other`` may have one row)."""
        return self._setop("union", other, num_threads)

    def intersection(self, other: SDRBatch, *, num_threads: int | None = None) -> SDRBatch:
        """Row-wise intersection (``other`` may have one row)."""
        return self._setop("intersection", other, num_threads)

    def add_noise(self, fraction: float, *, seed: int = 0, num_threads: int | None = None) -> SDRBatch:
        """Move ``round(fraction · n_active)`` active bits of each row to random inactive bits (sparsity kept)."""
        f = check_float(fraction, "fraction", low=0.0, high=1.0)
        ip, idx = _core.sdr_add_noise(
            self._indptr, self._indices, self._dim, f, check_seed(seed), num_threads=check_num_threads(num_threads)
        )
        return SDRBatch._trusted(ip, idx, self._dim)

    def to_dense(self) -> NDArray[np.bool_]:
        """``(n_rows, dim)`` boolean array."""
        out = np.zeros((self.n_rows, self._dim), dtype=bool)
        rows = np.repeat(np.arange(self.n_rows), np.diff(self._indptr))
        out[rows, self._indices] = True
        return out

    def to_sparse_batch(self) -> SparseBatch:
        """The SDRs as a :class:`sparsecore.SparseBatch` with value 1.0 at every active bit."""
        return SparseBatch._trusted(
            self._indptr.copy(), self._indices.copy(), np.ones(self._indices.size, dtype=np.float32), self._dim
        )


SDRInput = SDRBatch | SparseBatch | ArrayLike
"""What the models accept: an :class:`SDRBatch`, a :class:`sparsecore.SparseBatch` (non-zeros are active) or a
dense array (non-zero = active; 1-D for one input)."""


def _dim_mismatch(a: SDRBatch, b: SDRBatch) -> NoReturn:
    raise ShapeMismatchError(f"other: dim {b.dim} differs from this batch's dim {a.dim}")


def overlap(a: SDRBatch, b: SDRBatch, *, num_threads: int | None = None) -> NDArray[np.uint32]:
    """Row-wise overlap of two SDR batches (see :meth:`SDRBatch.overlap`)."""
    return _as_batch(a, "a").overlap(b, num_threads=num_threads)


def union(a: SDRBatch, b: SDRBatch, *, num_threads: int | None = None) -> SDRBatch:
    """Row-wise union of two SDR batches."""
    return _as_batch(a, "a").union(b, num_threads=num_threads)


def intersection(a: SDRBatch, b: SDRBatch, *, num_threads: int | None = None) -> SDRBatch:
    """Row-wise intersection of two SDR batches."""
    return _as_batch(a, "a").intersection(b, num_threads=num_threads)


def sparsity(a: SDRBatch) -> NDArray[np.float64]:
    """Fraction of active bits per row."""
    return _as_batch(a, "a").sparsity()


def add_noise(a: SDRBatch, fraction: float, *, seed: int = 0, num_threads: int | None = None) -> SDRBatch:
    """Move a fraction of each row's active bits to random inactive bits (see :meth:`SDRBatch.add_noise`)."""
    return _as_batch(a, "a").add_noise(fraction, seed=seed, num_threads=num_threads)


def _as_batch(a: object, name: str) -> SDRBatch:
    if not isinstance(a, SDRBatch):
        raise DTypeError(f"{name}: must be an SDRBatch, got {type(a).__name__}")
    return a


def _inputs(x: object, dim: int, name: str = "x") -> tuple[SDRBatch, bool]:
    """Any supported input as an SDR batch of ``dim`` bits, and whether it was a single input (1-D)."""
    if isinstance(x, SDRBatch):
        b, one = x, False
    elif isinstance(x, SparseBatch):
        keep = x.data != 0
        kept_before = np.concatenate([[0], np.cumsum(keep, dtype=np.int64)])
        ip = np.ascontiguousarray(kept_before[x.indptr], dtype=np.int64)  # explicit zeros are not active
        b, one = SDRBatch(ip, x.indices[keep], x.dim), False
    else:
        a = np.asarray(x)
        one = a.ndim == 1
        b = SDRBatch.from_dense(a)
    if b.dim != dim:
        raise ShapeMismatchError(f"{name}: inputs have {b.dim} bits but the model expects {dim}")
    return b, one


# ---------------------------------------------------------------------------------------------------------------
# Encoders
# ---------------------------------------------------------------------------------------------------------------


class ScalarEncoder:
    """Encode numbers as a run of ``n_active`` contiguous bits out of ``size``; nearby values share bits.

    Non-periodic: the run starts at ``round((v - minimum)/(maximum - minimum) · (size - n_active))``; values
    outside the range raise :class:`InvalidArgumentError` unless ``clip=True``. Periodic (angles, time of day):
    the run starts at ``floor(frac · size)`` and wraps around.
    """

    def __init__(
        self, minimum: float, maximum: float, *, size: int, n_active: int, periodic: bool = False, clip: bool = False
    ) -> None:
        self.minimum, self.maximum = check_float(minimum, "minimum"), check_float(maximum, "maximum")
        if not self.minimum < self.maximum:
            raise InvalidArgumentError(f"maximum: must exceed minimum = {self.minimum}, got {self.maximum}")
        self.size = check_int(size, "size", low=1, high=MAX_DIM)
        self.n_active = check_int(n_active, "n_active", low=1, high=self.size)
        self.periodic, self.clip = bool(periodic), bool(clip)

    def encode(self, values: ArrayLike, *, num_threads: int | None = None) -> SDRBatch:
        """One SDR per value."""
        v = np.ascontiguousarray(np.asarray(values, dtype=np.float64).reshape(-1))
        ip, idx = _core.sdr_scalar_encode(
            v,
            self.minimum,
            self.maximum,
            self.size,
            self.n_active,
            self.periodic,
            self.clip,
            num_threads=check_num_threads(num_threads),
        )
        return SDRBatch._trusted(ip, idx, self.size)

    def __repr__(self) -> str:
        return (
            f"ScalarEncoder([{self.minimum}, {self.maximum}], size={self.size}, n_active={self.n_active}, "
            f"periodic={self.periodic})"
        )


class CategoryEncoder:
    """Encode category ids ``0 .. n_categories - 1`` as disjoint blocks of ``n_active`` bits."""

    def __init__(self, n_categories: int, *, n_active: int) -> None:
        self.n_categories = check_int(n_categories, "n_categories", low=1, high=MAX_DIM)
        self.n_active = check_int(n_active, "n_active", low=1, high=MAX_DIM)
        self.size = check_int(self.n_categories * self.n_active, "n_categories * n_active", low=1, high=MAX_DIM)

    def encode(self, labels: ArrayLike, *, num_threads: int | None = None) -> SDRBatch:
        """One SDR per label."""
        a = np.asarray(labels)
        if a.dtype.kind not in "iu":
            raise DTypeError(f"labels: must be integers, got dtype {a.dtype}")
        ip, idx = _core.sdr_category_encode(
            np.ascontiguousarray(a.reshape(-1), dtype=np.int64),
            self.n_categories,
            self.n_active,
            num_threads=check_num_threads(num_threads),
        )
        return SDRBatch._trusted(ip, idx, self.size)

    def __repr__(self) -> str:
        return f"CategoryEncoder({self.n_categories}, n_active={self.n_active})"


class GridEncoder:
    """Grid-cell-like encoder of 2-D positions: one module per period, each a ``side x side`` tile of cells.

    Module ``m`` rotates the position by an angle drawn from ``seed``, takes its phase modulo ``periods[m]`` in
    both axes and activates the one cell holding the phase, so ``size = len(periods) · side²`` with one active bit
    per module. Nearby positions share most bits; distant ones about ``1/side²`` of them.
    """

    def __init__(self, periods: Sequence[float], *, side: int = 8, seed: int = 0) -> None:
        per = np.ascontiguousarray(np.asarray(periods, dtype=np.float64).reshape(-1))
        if per.size == 0 or not (np.isfinite(per).all() and (per > 0).all()):
            raise InvalidArgumentError("periods: must be a non-empty list of finite positive numbers")
        self.periods, self.side, self.seed = per, check_int(side, "side", low=1, high=65536), check_seed(seed)
        self.size = check_int(per.size * self.side * self.side, "size", low=1, high=MAX_DIM)

    def encode(self, positions: ArrayLike, *, num_threads: int | None = None) -> SDRBatch:
        """One SDR per row of ``positions`` (shape ``(n, 2)``)."""
        p = np.ascontiguousarray(np.asarray(positions, dtype=np.float64))
        if p.ndim == 1 and p.size == 2:
            p = p[None, :]
        if p.ndim != 2 or p.shape[1] != 2:
            raise ShapeMismatchError(f"positions: must have shape (n, 2), got {p.shape}")
        ip, idx = _core.sdr_grid_encode(
            p, self.periods, self.side, self.seed, num_threads=check_num_threads(num_threads)
        )
        return SDRBatch._trusted(ip, idx, self.size)

    def __repr__(self) -> str:
        return f"GridEncoder(periods={self.periods.tolist()}, side={self.side})"


# ---------------------------------------------------------------------------------------------------------------
# Coding field
# ---------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Params:
    n_modules: int
    cells_per_module: int
    g_min: float
    gamma: float
    chi: float
    sigmoid_slope: float
    sigmoid_center: float
    min_active: int
    freeze_at: float

    @classmethod
    def checked(
        cls,
        n_modules: int,
        cells_per_module: int,
        g_min: float,
        gamma: float,
        chi: float,
        sigmoid_slope: float,
        sigmoid_center: float,
        min_active: int,
        freeze_at: float | None,
    ) -> _Params:
        g = check_float(g_min, "g_min", low=0.0, high=1.0, high_open=True)
        vals = {
            name: nonnegative_float(v, name)
            for name, v in (("gamma", gamma), ("chi", chi), ("sigmoid_slope", sigmoid_slope))
        }
        fz = 2.0 if freeze_at is None else positive_float(freeze_at, "freeze_at")
        return cls(
            check_int(n_modules, "n_modules", low=1, high=65536),
            check_int(cells_per_module, "cells_per_module", low=2, high=65536),
            g,
            vals["gamma"],
            vals["chi"],
            vals["sigmoid_slope"],
            check_float(sigmoid_center, "sigmoid_center"),
            check_int(min_active, "min_active", low=0, high=MAX_DIM),
            fz,
        )

    def as_tuple(self) -> tuple[int, int, float, float, float, float, float, int, float]:
        return (
            self.n_modules,
            self.cells_per_module,
            self.g_min,
            self.gamma,
            self.chi,
            self.sigmoid_slope,
            self.sigmoid_center,
            self.min_active,
            self.freeze_at,
        )


def _chunks(n: int, show: bool, desc: str) -> list[tuple[int, int]]:
    spans = [(s, min(n, s + _CHUNK)) for s in range(0, n, _CHUNK)]
    return list(_progress_iter(spans, desc=desc, unit="chunk", show=show)) if show else spans


def _rows(b: SDRBatch, lo: int, hi: int) -> tuple[NDArray[np.int64], NDArray[np.uint32]]:
    ip = b.indptr[lo : hi + 1]
    return np.ascontiguousarray(ip - ip[0]), b.indices[ip[0] : ip[-1]]


class CodingField:
    """A field of ``n_modules`` (Q) modules of ``cells_per_module`` (K) binary cells, learning in a single trial.

    Codes are chosen by Rinkus' Code Selection Algorithm (Rinkus 2010, 2014, 2017; see the module docstring).

    Parameters
    ----------
    input_dim
        Input bits.
    n_modules, cells_per_module
        ``Q`` and ``K``; a code is one winner per module.
    g_min, gamma, chi
        Expansivity ``η = 1 + max(0, (G - g_min)/(1 - g_min))^gamma · chi · K`` (defaults 0.1, 2, 100).
    sigmoid_slope, sigmoid_center
        ``μ = 1 + (η - 1)/(1 + exp(-sigmoid_slope (V - sigmoid_center)))`` (defaults 12, 0.5). At ``G = 1`` with
        K = 8 a cell of ``V = 1`` gets ``μ ≈ 799`` and one of ``V = 0`` about 3, so a stored input's cells win each
        module with probability ≈ 0.975; at ``G ≤ g_min`` all ``μ = 1`` (uniform). The slope is soft enough that
        the code overlap already rises at 20 % input overlap (slope 28 left it flat up to 20 %, with the same
        MNIST accuracy).
    min_active
        Fewest active input bits for the field to respond; fewer → the field stays silent (code of -1s).
    freeze_at
        Freeze learning once this fraction of the bottom-up weights is 1 (a capacity limit); ``None``: never.
    sequence
        Keep horizontal weights from each code to the next (:meth:`learn_sequence`, :meth:`recall_sequence`).
    seed
        Seed of the random streams (one per item and module).

    Examples
    --------
    >>> from sparsecore import sdr
    >>> f = sdr.CodingField(32, n_modules=4, cells_per_module=8, seed=3)
    >>> x = sdr.SDRBatch.from_indices([[1, 4, 7, 20]], dim=32)
    >>> code = f.learn(x)
    >>> (f.recognize(x) == code).all(), f.familiarity(x)[0]
    (np.True_, np.float64(1.0))
    """

    def __init__(
        self,
        input_dim: int,
        *,
        n_modules: int = 8,
        cells_per_module: int = 16,
        g_min: float = 0.1,
        gamma: float = 2.0,
        chi: float = 100.0,
        sigmoid_slope: float = 12.0,
        sigmoid_center: float = 0.5,
        min_active: int = 1,
        freeze_at: float | None = None,
        sequence: bool = False,
        seed: int = 0,
    ) -> None:
        p = _Params.checked(
            n_modules, cells_per_module, g_min, gamma, chi, sigmoid_slope, sigmoid_center, min_active, freeze_at
        )
        self._core = _core.FieldCore(
            check_int(input_dim, "input_dim", low=1, high=MAX_DIM), p.as_tuple(), bool(sequence), check_seed(seed)
        )

    @classmethod
    def _wrap(cls, core: _core.FieldCore) -> CodingField:
        obj = cls.__new__(cls)
        obj._core = core
        return obj

    # -- properties ---------------------------------------------------------------------------------------------
    @property
    def input_dim(self) -> int:
        """Input bits."""
        return int(self._core.info()[0])

    @property
    def n_modules(self) -> int:
        """``Q``: winners per code."""
        return int(self._core.info()[1][0])

    @property
    def cells_per_module(self) -> int:
        """``K``: cells per module."""
        return int(self._core.info()[1][1])

    @property
    def params(self) -> dict[str, Any]:
        """The CSA parameters."""
        info = self._core.info()
        d = asdict(_Params(*info[1]))
        d["freeze_at"] = None if d["freeze_at"] > 1.0 else d["freeze_at"]
        d["sequence"] = info[2]
        return d

    @property
    def n_learned(self) -> int:
        """Inputs learned so far (codes stored)."""
        return int(self._core.info()[3])

    @property
    def frozen(self) -> bool:
        """Whether learning is off (by :meth:`freeze` or because ``freeze_at`` was reached)."""
        return bool(self._core.info()[4])

    @property
    def weight_fill(self) -> float:
        """Fraction of bottom-up weights set to 1: the field's capacity used."""
        return float(self._core.info()[5])

    def freeze(self) -> None:
        """Switch learning off: :meth:`learn` then only recognises."""
        self._core.set_frozen(True)

    def unfreeze(self) -> None:
        """Switch learning back on."""
        self._core.set_frozen(False)

    def __repr__(self) -> str:
        return (
            f"CodingField(input_dim={self.input_dim}, n_modules={self.n_modules}, "
            f"cells_per_module={self.cells_per_module}, n_learned={self.n_learned}, "
            f"weight_fill={self.weight_fill:.3f}, frozen={self.frozen})"
        )

    # -- formulas -----------------------------------------------------------------------------------------------
    def eta(self, g: float) -> float:
        """Expansivity ``η(G)``."""
        return float(self._core.eta(check_float(g, "g")))

    def mu(self, v: float, g: float) -> float:
        """Win weight ``μ(V)`` at familiarity ``G``."""
        return float(self._core.mu(check_float(v, "v"), check_float(g, "g")))

    # -- learning and recognition -------------------------------------------------------------------------------
    def learn(self, x: SDRInput, *, progress: bool | None = None, num_threads: int | None = None) -> NDArray[np.int32]:
        """Learn each input once, in order (CSA with sampling, then the binary Hebbian update).

        Parameters
        ----------
        x
            An :class:`SDRBatch`, a :class:`sparsecore.SparseBatch` or a dense array (non-zero = active); 1-D for
            one input.
        progress
            Show a progress bar (default: on a terminal for more than one chunk of inputs).
        num_threads
            Threads (learning is sequential over inputs; kept for a uniform signature).

        Returns
        -------
        ndarray of int32, shape ``(n, Q)`` (``(Q,)`` for one input)
            The codes: one winner per module, -1 where the field stayed silent.
        """
        b, one = _inputs(x, self.input_dim)
        th = check_num_threads(num_threads)
        spans = _chunks(b.n_rows, want_progress(progress, b.n_rows // _CHUNK), "learning")
        parts = [self._core.learn(*_rows(b, lo, hi), num_threads=th) for lo, hi in spans]
        out = np.concatenate(parts) if parts else np.zeros((0, self.n_modules), dtype=np.int32)
        return out[0] if one else out

    def recognize(self, x: SDRInput, *, num_threads: int | None = None) -> NDArray[np.int32]:
        """Deterministic codes: per module the cell of largest ``V``, parallel over inputs.

        Ties go to the most specific cell (fewest weights set), then the lowest index; -1 where no cell of a
        module has any input. The cost per input is independent of the number of stored items.
        """
        b, one = _inputs(x, self.input_dim)
        out = self._core.recognize(b.indptr, b.indices, num_threads=check_num_threads(num_threads))
        return out[0] if one else out

    def familiarity(self, x: SDRInput, *, num_threads: int | None = None) -> NDArray[np.float64]:
        """Familiarity ``G`` ∈ [0, 1] of each input (1 for an input stored exactly)."""
        b, one = _inputs(x, self.input_dim)
        g = self._core.familiarity(b.indptr, b.indices, num_threads=check_num_threads(num_threads))
        return g[:1] if one else g

    def support(self, x: SDRInput) -> NDArray[np.float64]:
        """Normalised input sums ``V`` of every cell for one input, shape ``(Q, K)``."""
        b, _ = _inputs(x, self.input_dim)
        if b.n_rows != 1:
            raise ShapeMismatchError(f"x: support takes one input, got {b.n_rows}")
        return self._core.support(b[0])

    def learn_sequence(self, xs: SDRInput) -> NDArray[np.int32]:
        """Learn the rows of ``xs`` as one sequence (needs ``sequence=True``); returns ``(n, Q)`` codes."""
        b, _ = _inputs(xs, self.input_dim, "xs")
        return self._core.learn_sequence(b.indptr, b.indices)

    def recall_sequence(self, first: SDRInput, n_steps: int) -> NDArray[np.int32]:
        """Replay a stored sequence: recognise ``first``, then follow the horizontal weights alone.

        Returns ``(n_steps, Q)`` codes (``n_steps - 1`` steps after ``first``).
        """
        b, _ = _inputs(first, self.input_dim, "first")
        if b.n_rows != 1:
            raise ShapeMismatchError(f"first: must be one input, got {b.n_rows}")
        return self._core.recall_sequence(b[0], check_int(n_steps, "n_steps", low=1, high=2**31))

    def codes_to_sdrs(self, codes: ArrayLike) -> SDRBatch:
        """Codes as SDRs over the field's ``Q · K`` cells (bit ``m · K + winner``; silent modules omitted)."""
        return codes_to_sdrs(codes, self.cells_per_module)

    # -- persistence --------------------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the field atomically, as a checked container of kind ``sdr.field``."""
        write_container(path, _FIELD_KIND, 1, {}, {"state": _state_array(self._core.to_bytes())})

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> CodingField:
        """Read a field written by :meth:`save` (also the format of sparsecore 0.1.0).

        Raises
        ------
        FileNotFoundError
            ``path`` does not exist.
        IndexFormatError
            Not a regular file, not a coding field file, another version, truncated or corrupted.
        """
        if sniff(path) == _LEGACY_FIELD_MAGIC:
            return cls._wrap(_core.FieldCore.from_bytes(read_regular_file(path)))
        c = read_container(path, _FIELD_KIND, {1})
        return cls._wrap(_core.FieldCore.from_bytes(c.array("state", np.uint8, 1, path).tobytes()))


def codes_to_sdrs(codes: ArrayLike, cells_per_module: int) -> SDRBatch:
    """Codes ``(n, Q)`` (winners or -1) as SDRs over ``Q · cells_per_module`` bits."""
    c = np.asarray(codes)
    if c.ndim == 1:
        c = c[None, :]
    if c.ndim != 2 or c.dtype.kind not in "iu":
        raise ShapeMismatchError(f"codes: must be a 2-D integer array, got shape {c.shape} dtype {c.dtype}")
    k = check_int(cells_per_module, "cells_per_module", low=1, high=MAX_DIM)
    if c.size and (c.min() < -1 or c.max() >= k):
        raise InvalidArgumentError(f"codes: winners must be in [-1, {k})")
    active = c >= 0
    bits = (np.arange(c.shape[1])[None, :] * k + c)[active]
    ip = np.zeros(c.shape[0] + 1, dtype=np.int64)
    ip[1:] = np.cumsum(active.sum(axis=1))
    return SDRBatch._trusted(ip, bits.astype(np.uint32), check_int(c.shape[1] * k, "dim", low=1, high=MAX_DIM))


# ---------------------------------------------------------------------------------------------------------------
# Networks
# ---------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Level:
    """Geometry and CSA parameters of one level of an :class:`SDRNetwork`.

    Level 0's fields tile the input image with ``patch``-sized windows every ``stride`` pixels; a higher level's
    fields tile the grid of the fields below (``patch`` and ``stride`` in fields). Other fields are the CSA
    parameters of :class:`CodingField`.
    """

    patch: int | tuple[int, int]
    stride: int | tuple[int, int]
    n_modules: int = 8
    cells_per_module: int = 16
    g_min: float = 0.1
    gamma: float = 2.0
    chi: float = 100.0
    sigmoid_slope: float = 12.0
    sigmoid_center: float = 0.5
    min_active: int = 1
    freeze_at: float | None = None

    def params(self) -> _Params:
        """The checked CSA parameters."""
        return _Params.checked(
            self.n_modules,
            self.cells_per_module,
            self.g_min,
            self.gamma,
            self.chi,
            self.sigmoid_slope,
            self.sigmoid_center,
            self.min_active,
            self.freeze_at,
        )


def _pair_of(v: object, name: str) -> tuple[int, int]:
    if is_int(v):
        return (check_int(v, name, low=1, high=1 << 20),) * 2
    if isinstance(v, (tuple, list)) and len(v) == 2:
        return (check_int(v[0], name, low=1, high=1 << 20), check_int(v[1], name, low=1, high=1 << 20))
    raise InvalidArgumentError(f"{name}: must be an int or a pair of ints, got {v!r}")


def _tiles(shape: tuple[int, int], patch: tuple[int, int], stride: tuple[int, int], lvl: int) -> list[tuple[int, int]]:
    for d in (0, 1):
        if patch[d] > shape[d]:
            raise InvalidArgumentError(f"levels[{lvl}].patch: {patch} does not fit a grid of {shape}")
    rows = range(0, shape[0] - patch[0] + 1, stride[0])
    cols = range(0, shape[1] - patch[1] + 1, stride[1])
    return [(r, c) for r in rows for c in cols]


class SDRNetwork:
    """A hierarchy of coding fields with receptive fields over an image grid (Rinkus 2014).

    Optionally learns sequences through horizontal weights between consecutive codes (Rinkus 2010, 2017).

    Parameters
    ----------
    image_shape
        ``(height, width)`` of the input grid; inputs are flattened row-major (``(h · W + w) · channels + c``).
    levels
        At least one :class:`Level`; level 0 reads the image, level ``l`` reads the codes of level ``l - 1``.
    channels
        Input bits per grid position (e.g. several binarisation thresholds).
    sequence
        Keep horizontal weights from each field's previous code (:meth:`learn_sequence`, :meth:`recall_sequence`).
    seed
        Seed; field ``f`` of level ``l`` draws from its own streams, so results do not depend on ``num_threads``.

    Examples
    --------
    >>> from sparsecore import sdr
    >>> net = sdr.SDRNetwork((8, 8), [sdr.Level(patch=4, stride=4), sdr.Level(patch=2, stride=1)], seed=0)
    >>> codes = net.learn(np.eye(8, dtype=bool).reshape(1, 64))
    >>> [c.shape for c in codes]
    [(1, 32), (1, 8)]
    """

    def __init__(
        self,
        image_shape: tuple[int, int],
        levels: Sequence[Level],
        *,
        channels: int = 1,
        sequence: bool = False,
        seed: int = 0,
    ) -> None:
        shape = _pair_of(image_shape, "image_shape")
        ch = check_int(channels, "channels", low=1, high=1 << 16)
        if not levels or not all(isinstance(lv, Level) for lv in levels):
            raise InvalidArgumentError("levels: must be a non-empty list of sdr.Level")
        self._meta: dict[str, Any] = {
            "image_shape": list(shape),
            "channels": ch,
            "sequence": bool(sequence),
            "levels": [],
            "grids": [],
        }
        spec = []
        grid = shape
        for li, lv in enumerate(levels):
            patch, stride = _pair_of(lv.patch, f"levels[{li}].patch"), _pair_of(lv.stride, f"levels[{li}].stride")
            p = lv.params()
            tiles = _tiles(grid, patch, stride, li)
            if li == 0:
                rfs = [
                    [
                        ((r + i) * grid[1] + (c + j)) * ch + k
                        for i in range(patch[0])
                        for j in range(patch[1])
                        for k in range(ch)
                    ]
                    for r, c in tiles
                ]
            else:
                prev = levels[li - 1]
                cells = prev.n_modules * prev.cells_per_module
                rfs = [
                    [
                        ((r + i) * grid[1] + (c + j)) * cells + b
                        for i in range(patch[0])
                        for j in range(patch[1])
                        for b in range(cells)
                    ]
                    for r, c in tiles
                ]
            spec.append((p.as_tuple(), rfs))
            new_grid = (
                (grid[0] - patch[0]) // stride[0] + 1,
                (grid[1] - patch[1]) // stride[1] + 1,
            )
            d = asdict(lv)
            d["patch"], d["stride"] = list(patch), list(stride)
            self._meta["levels"].append(d)
            self._meta["grids"].append(list(new_grid))
            grid = new_grid
        self._core = _core.NetworkCore(shape[0] * shape[1] * ch, spec, bool(sequence), check_seed(seed))

    @property
    def input_dim(self) -> int:
        """Input bits (``height · width · channels``)."""
        return int(self._core.info()[0])

    @property
    def code_lengths(self) -> list[int]:
        """Winners per input at each level (``fields · Q``)."""
        return [int(v) for v in self._core.info()[1]]

    @property
    def grids(self) -> list[tuple[int, int]]:
        """Grid of fields at each level."""
        return [(int(a), int(b)) for a, b in self._meta["grids"]]

    @property
    def n_learned(self) -> int:
        """Inputs learned so far."""
        return int(self._core.info()[2])

    @property
    def weight_fill(self) -> NDArray[np.float64]:
        """Fraction of bottom-up weights set, per field (all levels, in order)."""
        return np.asarray(self._core.info()[3], dtype=np.float64)

    @property
    def frozen(self) -> NDArray[np.bool_]:
        """Whether each field has stopped learning."""
        return np.asarray(self._core.info()[4], dtype=bool)

    def freeze(self) -> None:
        """Switch learning off in every field."""
        self._core.set_frozen(True)

    def unfreeze(self) -> None:
        """Switch learning back on in every field."""
        self._core.set_frozen(False)

    def __repr__(self) -> str:
        return (
            f"SDRNetwork(image_shape={tuple(self._meta['image_shape'])}, grids={self.grids}, "
            f"code_lengths={self.code_lengths}, n_learned={self.n_learned})"
        )

    def learn(
        self, x: SDRInput, *, progress: bool | None = None, num_threads: int | None = None
    ) -> list[NDArray[np.int32]]:
        """Learn each input once, in order (the fields of a level in parallel).

        Returns one ``(n, code_length)`` int32 array per level (-1 for silent modules).
        """
        b, _ = _inputs(x, self.input_dim)
        th = check_num_threads(num_threads)
        spans = _chunks(b.n_rows, want_progress(progress, b.n_rows // _CHUNK), "learning")
        parts = [self._core.learn(*_rows(b, lo, hi), num_threads=th) for lo, hi in spans]
        return self._stack(parts)

    def _stack(self, parts: list[list[NDArray[np.int32]]]) -> list[NDArray[np.int32]]:
        if not parts:
            return [np.zeros((0, n), dtype=np.int32) for n in self.code_lengths]
        return [np.concatenate([p[li] for p in parts]) for li in range(len(parts[0]))]

    def recognize(
        self, x: SDRInput, *, progress: bool | None = None, num_threads: int | None = None
    ) -> list[NDArray[np.int32]]:
        """Recognise (argmax per module, every level), parallel over inputs; one array per level."""
        b, _ = _inputs(x, self.input_dim)
        th = check_num_threads(num_threads)
        spans = _chunks(b.n_rows, want_progress(progress, b.n_rows // (8 * _CHUNK)), "recognising")
        parts = [self._core.recognize(*_rows(b, lo, hi), num_threads=th) for lo, hi in spans]
        return self._stack(parts)

    def familiarity(self, x: SDRInput, *, num_threads: int | None = None) -> NDArray[np.float64]:
        """Mean familiarity ``G`` of the fields that respond, per input and level: ``(n, n_levels)``."""
        b, _ = _inputs(x, self.input_dim)
        return self._core.familiarity(b.indptr, b.indices, num_threads=check_num_threads(num_threads))

    def learn_sequence(self, xs: SDRInput, *, num_threads: int | None = None) -> list[NDArray[np.int32]]:
        """Learn the rows of ``xs`` as one sequence (needs ``sequence=True``)."""
        b, _ = _inputs(xs, self.input_dim, "xs")
        return self._core.learn_sequence(b.indptr, b.indices, num_threads=check_num_threads(num_threads))

    def recall_sequence(self, first: SDRInput, n_steps: int) -> list[NDArray[np.int32]]:
        """Replay a stored sequence from its first element (no bottom-up input after it).

        Returns one ``(n_steps, code_length)`` array per level.
        """
        b, _ = _inputs(first, self.input_dim, "first")
        if b.n_rows != 1:
            raise ShapeMismatchError(f"first: must be one input, got {b.n_rows}")
        return self._core.recall_sequence(b[0], check_int(n_steps, "n_steps", low=1, high=2**31))

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the network atomically, as a checked container of kind ``sdr.network`` (geometry as metadata)."""
        write_container(path, _NETWORK_KIND, 1, self._meta, {"state": _state_array(self._core.to_bytes())})

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> SDRNetwork:
        """Read a network written by :meth:`save` (also the format of sparsecore 0.1.0).

        Raises
        ------
        FileNotFoundError
            ``path`` does not exist.
        IndexFormatError
            Not a regular file, not an SDR network file, another version, truncated or corrupted.
        """
        if sniff(path) == _LEGACY_NETWORK_MAGIC:
            meta, state = _read_legacy_network(path)
        else:
            c = read_container(path, _NETWORK_KIND, {1})
            meta, state = c.meta, c.array("state", np.uint8, 1, path).tobytes()
        obj = cls.__new__(cls)
        obj._meta = meta
        obj._core = _core.NetworkCore.from_bytes(state)
        return obj


_FIELD_KIND = "sdr.field"
_NETWORK_KIND = "sdr.network"
# Formats of sparsecore 0.1.0: the field's Rust bytes as they are; a network as magic, geometry length, its
# SHA-256, the geometry as JSON, then the Rust bytes. Both still load.
_LEGACY_FIELD_MAGIC = b"SCSDRFLD"
_LEGACY_NETWORK_MAGIC = b"SCSDRNPY"


def _state_array(state: bytes) -> NDArray[np.uint8]:
    return np.frombuffer(state, dtype=np.uint8)


def _read_legacy_network(path: str | os.PathLike[str]) -> tuple[dict[str, Any], bytes]:
    """Geometry and Rust state of a network file of sparsecore 0.1.0 (length and SHA-256 checked)."""
    magic = _LEGACY_NETWORK_MAGIC
    head = len(magic) + 8 + 32
    with open_regular_file(path) as fh:
        size = regular_file_size(fh)
        start = fh.read(head)
        if len(start) < head or not start.startswith(magic):
            raise IndexFormatError(f"{path}: not a sparsecore SDR network file")
        (n,) = struct.unpack("<Q", start[len(magic) : len(magic) + 8])
        if n > size - head:  # checked before reading: the header cannot make us read more than the file
            raise IndexFormatError(f"{path}: truncated (the header declares {n} bytes of geometry)")
        meta_raw = fh.read(n)
        fields = fh.read()
    if len(meta_raw) != n or hashlib.sha256(meta_raw).digest() != start[len(magic) + 8 :]:
        raise IndexFormatError(f"{path}: checksum mismatch, the file is corrupted")
    try:
        meta = json.loads(meta_raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise IndexFormatError(f"{path}: the geometry is not JSON ({exc})") from None
    if not isinstance(meta, dict):
        raise IndexFormatError(f"{path}: the geometry is not a JSON object")
    return meta, fields


# ---------------------------------------------------------------------------------------------------------------
# Readout
# ---------------------------------------------------------------------------------------------------------------


def _codes_matrix(codes: ArrayLike | Sequence[NDArray[np.int32]], name: str = "codes") -> NDArray[np.int32]:
    refuse_sparse(codes, name)
    if isinstance(codes, (list, tuple)) and codes and all(isinstance(c, np.ndarray) and c.ndim == 2 for c in codes):
        c = np.hstack(codes)
    else:
        c = np.asarray(codes)
    if c.ndim != 2:
        raise ShapeMismatchError(f"{name}: must be 2-D (n, n_slots) or a list of such arrays, got shape {c.shape}")
    if c.dtype.kind not in "iu":
        raise DTypeError(f"{name}: must be integer winners, got dtype {c.dtype}")
    if c.size and int(c.min()) < -1:
        raise InvalidArgumentError(f"{name}: winners must be >= -1")
    return np.ascontiguousarray(c, dtype=np.int32)


class SDRClassifier(BaseEstimator):
    """Readout from codes to labels, scikit-learn style: ``fit(codes, y)``, ``predict(codes)``.

    ``method="knn"`` (default): the ``n_neighbors`` stored codes of largest overlap vote for their labels. The
    overlap of two codes is the number of module slots where both have the same winner (a code may concatenate
    several fields and levels). Stored codes sit in an inverted index keyed by (slot, winner), so a query only
    touches the codes it shares a winner with (in Rust, parallel over queries). With ``cosine=True`` overlaps are
    divided by ``sqrt(active_query · active_stored)``; votes are ``score ** power``. Its cost grows with the
    number of stored codes (``n_slots · n_stored / K`` per query).

    ``method="bayes"``: per class and slot, the frequency of each winner (Laplace smoothing ``alpha``; a silent
    module is one more symbol), and the class of largest ``log prior + Σ_slots log P(winner | class)``: a linear
    readout on code bits whose cost does not depend on the number of stored codes (for 60k+ items).

    Examples
    --------
    >>> from sparsecore.sdr import SDRClassifier
    >>> clf = SDRClassifier(n_neighbors=1).fit([[0, 1, 2], [3, 3, 3]], ["a", "b"])
    >>> clf.predict([[0, 1, 3]]).tolist()
    ['a']
    """

    _estimator_type: ClassVar[str | None] = "classifier"

    def __init__(
        self,
        n_neighbors: int = 1,
        *,
        method: str = "knn",
        cosine: bool = True,
        power: float = 1.0,
        alpha: float = 1.0,
        num_threads: int | None = None,
    ) -> None:
        self.n_neighbors = n_neighbors
        self.method = method
        self.cosine = cosine
        self.power = power
        self.alpha = alpha
        self.num_threads = num_threads

    def fit(self, codes: ArrayLike | Sequence[NDArray[np.int32]], y: ArrayLike) -> SDRClassifier:
        """Store the training codes ``(n, n_slots)`` (or a list of per-level code arrays) with labels ``y``."""
        check_choice(self.method, "method", ("knn", "bayes"))
        c = _codes_matrix(codes)
        labels = np.asarray(y)
        if labels.ndim != 1 or labels.shape[0] != c.shape[0]:
            raise ShapeMismatchError(f"y: must be 1-D with {c.shape[0]} labels, got shape {labels.shape}")
        if c.shape[0] == 0 or c.shape[1] == 0:
            raise InvalidArgumentError("codes: need at least one code of at least one slot")
        self.classes_, inv = np.unique(labels, return_inverse=True)
        self.n_slots_ = int(c.shape[1])
        self.n_features_in_ = self.n_slots_
        self._knn: _core.KnnCore | None = None
        self._logp: NDArray[np.float32] | None = None
        if self.method == "knn":
            self._knn = _core.KnnCore(c, np.ascontiguousarray(inv, dtype=np.uint32), int(self.classes_.size))
        else:
            self._fit_bayes(c, inv)
        return self

    def _fit_bayes(self, c: NDArray[np.int32], inv: NDArray[np.intp]) -> None:
        alpha = positive_float(self.alpha, "alpha")
        n_classes, s = int(self.classes_.size), c.shape[1]
        self._symbols = int(c.max()) + 3  # "silent", winners 0..max, "a winner never seen in training"
        counts = np.zeros((n_classes, s * self._symbols), dtype=np.int64)
        base = (np.arange(s, dtype=np.int64) * self._symbols)[None, :]
        step = max(1, 2**22 // s)
        for lo in range(0, c.shape[0], step):
            flat = base + c[lo : lo + step].astype(np.int64) + 1
            lab = inv[lo : lo + step]
            for k in range(n_classes):
                counts[k] += np.bincount(flat[lab == k].ravel(), minlength=s * self._symbols)
        n_c = np.bincount(inv, minlength=n_classes).astype(np.float64)
        logp = np.log(counts + alpha) - np.log(n_c + alpha * self._symbols)[:, None]
        self._logp = logp.astype(np.float32)
        self._log_prior = np.log(n_c / n_c.sum())

    def _check_fitted(self) -> None:
        if not hasattr(self, "classes_"):
            raise NotFittedError("this SDRClassifier is not fitted yet; call fit(codes, y) first")

    def predict_proba(self, codes: ArrayLike | Sequence[NDArray[np.int32]]) -> NDArray[np.float64]:
        """Class probabilities ``(n, n_classes)``.

        Vote shares for ``knn`` (rows of 0 when no stored code overlaps the query), the posterior for ``bayes``.
        """
        self._check_fitted()
        c = _codes_matrix(codes)
        if c.shape[1] != self.n_slots_:
            raise ShapeMismatchError(f"codes: {c.shape[1]} slots, but the classifier was fitted on {self.n_slots_}")
        if self._knn is not None:
            k = check_int(self.n_neighbors, "n_neighbors", low=1, high=2**31)
            power = nonnegative_float(self.power, "power")
            return self._knn.predict_scores(
                c, k, bool(self.cosine), power, num_threads=check_num_threads(self.num_threads)
            )
        return self._bayes_proba(c)

    def _bayes_proba(self, c: NDArray[np.int32]) -> NDArray[np.float64]:
        assert self._logp is not None
        s = c.shape[1]
        sym = self._symbols
        base = (np.arange(s, dtype=np.int64) * sym)[None, :]
        out = np.empty((c.shape[0], self.classes_.size))
        step = max(1, 2**21 // (s * self.classes_.size))
        for lo in range(0, c.shape[0], step):
            w = c[lo : lo + step].astype(np.int64) + 1
            w[w >= sym - 1] = sym - 1  # never seen in training: the smoothing floor of every class
            flat = base + w
            out[lo : lo + step] = self._logp[:, flat].sum(axis=2).T
        out += self._log_prior[None, :]
        out -= out.max(axis=1, keepdims=True)
        np.exp(out, out=out)
        out /= out.sum(axis=1, keepdims=True)
        return out

    def predict(self, codes: ArrayLike | Sequence[NDArray[np.int32]]) -> NDArray[Any]:
        """Most probable label per query (ties → the first class in sorted order)."""
        proba = self.predict_proba(codes)
        labels: NDArray[Any] = self.classes_[np.argmax(proba, axis=1)]
        return labels

    def score(self, codes: ArrayLike | Sequence[NDArray[np.int32]], y: ArrayLike) -> float:
        """Accuracy of :meth:`predict` against ``y``."""
        return float(np.mean(self.predict(codes) == np.asarray(y)))
