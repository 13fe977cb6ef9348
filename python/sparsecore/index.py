"""Inverted index for learned sparse retrieval (SPLADE-style vectors): exact and approximate top-k.

Documents are laid out in blocks of similar documents; for every term the index keeps, per block, a
quantized upper bound of the term's weight (rounded up). A query visits blocks in decreasing order of their
bound and stops when no remaining block can beat the current k-th score — exact, because the bounds are safe
(block-max pruning, after Mallia, Suel & Tonellotto, SIGIR 2024). Approximate search stops earlier: bounds are
scaled by ``alpha < 1`` and computed from the heaviest query terms holding a ``beta`` fraction of its mass.
Candidates are always scored exactly from a forward index, so returned scores are true dot products.
Segments of at most 65,536 documents (small collections, and the segments ``add`` creates) also keep term-major
postings in memory (rebuilt on load, 6 bytes per stored weight); exact search there accumulates the query's
postings term at a time instead, which beats block bounds that are too coarse to prune at that size.
Approximate searches take that exact path too when the query has at most 300k postings in the segment, where it
is also the faster one.

Weights must be non-negative (as in SPLADE); documents with score 0 are never returned, and rows are padded
with ``-1`` / ``-inf`` when fewer than ``k`` documents match.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Mapping
from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

from sparsecore import _core
from sparsecore._validate import check_bool, check_choice, check_float, check_num_threads
from sparsecore.exceptions import DTypeError, InvalidArgumentError, ShapeMismatchError
from sparsecore.sparse import SparseBatch, _as_data, _as_indices, _positive_int

__all__ = ["AUTO_BLOCK_SIZE_SPLIT", "RECALL_PRESETS", "InvertedIndex", "presets_for"]

#: ``largest block size of the tier -> {recall_target: (alpha, beta, patience)}``. From grids (alpha 0.5..1 by
#: 0.1, beta 0.8, 0.9, 1) on the real SPLADE vectors (../shared/data/lsr-dev) and on 200k and 1M synthetic
#: SPLADE-like documents (benches/_synthetic.py): each setting is the cheapest that reached its mean recall@10 on
#: every set of its tier (small tier: blocks of 8 and 16 on lsr-dev, 16 on synthetic; large tier: 32 on 200k and
#: 1M). The large tier's settings come from finer grids (alpha 0.5..1, beta 0.8..1, patience 0..0.004), checked on
#: a held-out set (300k documents, another seed; patience 0.002 gave 0.990 there, so 0.99 takes 0.0025), then
#: raised for 0.90 and 0.95 where the 8.8M collection of benches/bench_index_8m.py fell short (0.842 and 0.944 with
#: the earlier (0.6, 0.85, 0.0005) and (0.7, 0.8, 0.001)): every knob is at least the earlier one's, so recall
#: does not drop on the sets above. Recall@10 at 100k / 1M / 8.8M synthetic documents: 0.950 / 0.944 / 0.925
#: for 0.90, 0.956 / 0.968 / 0.967 for 0.95, 0.998 / 0.995 / 0.999 for 0.99 (``benches/bench_index_8m.py --docs
#: N --engines ours``, the ``recall_target`` rows; 300 queries at 100k). Larger blocks have looser bounds, so the
#: same recall needs a smaller alpha; on large segments most blocks a search visits at high recall add nothing,
#: which ``patience`` cuts short. 1.0 is exact.
RECALL_PRESETS: Mapping[int, Mapping[float, tuple[float, float, float]]] = {
    16: {0.90: (0.9, 0.8, 0.0), 0.95: (0.9, 0.9, 0.0), 0.99: (0.95, 1.0, 0.0), 1.0: (1.0, 1.0, 0.0)},
    1 << 16: {
        0.90: (0.65, 0.85, 0.0005),
        0.95: (0.7, 0.85, 0.001),
        0.99: (1.0, 0.9, 0.0025),
        1.0: (1.0, 1.0, 0.0),
    },
}

#: The knobs of an approximate search: ``(alpha, beta, patience)``.
Knobs = tuple[float, float, float]


def presets_for(block_size: int) -> Mapping[float, Knobs]:
    """The ``recall_target -> (alpha, beta, patience)`` presets for an index with this block size."""
    return next(p for bs, p in sorted(RECALL_PRESETS.items()) if block_size <= bs)


#: Default block size by corpus size: 8 below this many documents, 32 from it on. Measured (CPU time per
#: query, exact search): 11.6k real SPLADE passages 465 us with blocks of 8, 786 us with 16, 1222 us with 32;
#: on 200k synthetic documents 32 beats 16 (the bound pass over more blocks costs more than tighter bounds save).
AUTO_BLOCK_SIZE_SPLIT = 50_000

Mode = Literal["approx", "exact"]
Filter = ArrayLike | None


def _search_params(
    presets: Mapping[float, Knobs],
    mode: Mode,
    recall_target: float | None,
    alpha: float | None,
    beta: float | None,
    patience: float | None = None,
) -> Knobs:
    """Resolve (alpha, beta, patience) from explicit values, a recall target, or the index mode."""
    if recall_target is not None:
        if alpha is not None or beta is not None or patience is not None:
            raise InvalidArgumentError("recall_target: pass either recall_target or alpha/beta/patience, not both")
        target = check_float(recall_target, "recall_target", low=0.0, high=1.0, low_open=True)
        return presets[next((c for c in sorted(presets) if c >= target), 1.0)]
    if mode == "exact":
        a, b, p = 1.0, 1.0, 0.0
    else:
        a, b, p = presets[0.95]
    if alpha is not None or beta is not None:
        # Explicit bounds knobs without an explicit patience: no stagnation stop.
        p = 0.0
    a = a if alpha is None else check_float(alpha, "alpha", low=0.0, high=1.0, low_open=True)
    b = b if beta is None else check_float(beta, "beta", low=0.0, high=1.0, low_open=True)
    p = p if patience is None else check_float(patience, "patience", low=0.0, high=1.0)
    return a, b, p


def _filter_args(flt: Filter) -> tuple[NDArray[np.int64] | None, NDArray[np.bool_] | None]:
    """Split a filter into (allowed ids, allowed mask)."""
    if flt is None:
        return None, None
    a = np.asarray(flt)
    if a.ndim != 1:
        raise ShapeMismatchError(f"filter: must be 1-D (ids or a boolean mask), got shape {a.shape}")
    if a.dtype == np.bool_:
        return None, np.ascontiguousarray(a)
    if a.size == 0:
        return np.zeros(0, np.int64), None
    if a.dtype.kind not in "iu":
        raise DTypeError(f"filter: must be integer ids or a boolean mask, got dtype {a.dtype}")
    return np.ascontiguousarray(a, dtype=np.int64), None


def _ids_arg(ids: ArrayLike | None, n: int) -> NDArray[np.int64] | None:
    if ids is None:
        return None
    a = np.asarray(ids)
    if a.ndim != 1 or a.size != n:
        raise ShapeMismatchError(f"ids: must be 1-D with one id per document ({n}), got shape {a.shape}")
    if a.size and a.dtype.kind not in "iu":
        raise DTypeError(f"ids: must be integers, got dtype {a.dtype}")
    if a.dtype == np.uint64 and a.size and a.max() > np.iinfo(np.int64).max:
        raise InvalidArgumentError("ids: values exceed the int64 range")
    return np.ascontiguousarray(a, dtype=np.int64)


def _delete_ids_arg(ids: ArrayLike) -> NDArray[np.int64]:
    """The ids of a ``delete`` call as a flat contiguous int64 array (a scalar is one id); non-integers refused."""
    a = np.atleast_1d(np.asarray(ids))
    if a.size and a.dtype.kind not in "iu":
        raise DTypeError(f"ids: must be integers, got dtype {a.dtype}")
    return np.ascontiguousarray(a.reshape(-1), dtype=np.int64)


def _build_with_progress(
    docs: SparseBatch, ids: NDArray[np.int64] | None, block_size: int, num_threads: int | None
) -> _core.IndexCore:
    """Run the build on a worker thread (it releases the GIL) and draw its progress on stderr."""
    tracker = _core.BuildProgress()
    result: list[_core.IndexCore] = []
    failure: list[BaseException] = []

    def work() -> None:
        try:
            result.append(
                _core.IndexCore.build(docs._csr, ids, block_size, True, num_threads=num_threads, progress=tracker)
            )
        except BaseException as exc:  # re-raised on the calling thread
            failure.append(exc)

    worker = threading.Thread(target=work, name="sparsecore-build", daemon=True)
    start = time.monotonic()
    worker.start()
    while True:
        worker.join(0.25)
        done, total = tracker.get()
        frac = done / total if total else 0.0
        if not worker.is_alive():
            frac = 1.0 if result else frac
        bar = "#" * int(30 * frac)
        sys.stderr.write(
            f"\rbuilding index over {docs.n_rows:,} documents: [{bar:<30}] {100 * frac:5.1f}% "
            f"{time.monotonic() - start:6.1f} s"
        )
        sys.stderr.flush()
        if not worker.is_alive():
            break
    sys.stderr.write("\n")
    if failure:
        raise failure[0]
    return result[0]


class InvertedIndex:
    """Top-k retrieval by dot product over non-negative sparse vectors.

    Build with :meth:`build`, query with :meth:`search` (batches, parallel) or :meth:`search_one` (one query,
    lowest latency). Update with :meth:`add` / :meth:`delete`, fold updates in with :meth:`compact`.

    Concurrency: any number of Python threads may search, update and save at once (the GIL is released). A
    search works on a snapshot of the index, so it sees it entirely before or entirely after an update, and
    updates never hold searches up: :meth:`add` and :meth:`compact` do their work on the side and swap the new
    version in. Updates run one at a time.

    Examples
    --------
    >>> import sparsecore as sc
    >>> docs = sc.SparseBatch.from_dicts([{1: 1.0, 5: 0.5}, {5: 2.0}, {7: 1.0}], dim=10)
    >>> idx = sc.InvertedIndex.build(docs, mode="exact")
    >>> ids, scores = idx.search(sc.SparseBatch.from_dicts([{5: 1.0}], dim=10), k=2)
    >>> ids.tolist(), scores.tolist()
    ([[1, 0]], [[2.0, 0.5]])
    """

    __slots__ = ("_core", "_default", "_mode", "_presets")

    def __init__(self, core: _core.IndexCore, mode: Mode) -> None:
        self._core = core
        self._mode: Mode = mode
        self._presets = presets_for(int(core.block_size))
        self._default: Knobs = (1.0, 1.0, 0.0) if mode == "exact" else self._presets[0.95]

    @classmethod
    def build(
        cls,
        docs: SparseBatch,
        ids: ArrayLike | None = None,
        *,
        mode: Mode = "approx",
        block_size: int | None = None,
        reorder: bool = True,
        num_threads: int | None = None,
        progress: bool | None = None,
    ) -> InvertedIndex:
        """Index ``docs``.

        Parameters
        ----------
        docs
            Documents, non-negative weights.
        ids
            External int64 ids, one per document (default ``0..n-1``); returned by searches.
        mode
            Default search mode: ``"approx"`` (the 0.95 recall preset) or ``"exact"``. Both modes use the same
            structure; every search can override it.
        block_size
            Documents per block, the unit of pruning (default: 8 below 50k documents, else 32; see
            :data:`AUTO_BLOCK_SIZE_SPLIT`).
        reorder
            Lay out similar documents together (recursive graph bisection); tighter bounds, faster queries,
            slower build.
        num_threads
            Worker threads for the build.
        progress
            Show a progress line on stderr while documents are reordered (the bulk of a long build). Default:
            only for at least 100,000 documents and when stderr is a terminal.

        Raises
        ------
        InvalidArgumentError
            Negative weights, repeated ids, a bad ``block_size`` or ``mode``.
        """
        if not isinstance(docs, SparseBatch):
            raise DTypeError(f"docs: must be a SparseBatch, got {type(docs).__name__}")
        check_choice(mode, "mode", ("approx", "exact"))
        if block_size is None:
            block_size = 8 if docs.n_rows < AUTO_BLOCK_SIZE_SPLIT else 32
        bs = _positive_int(block_size, "block_size")
        ids_arr = _ids_arg(ids, docs.n_rows)
        threads = check_num_threads(num_threads)
        show = progress if progress is not None else docs.n_rows >= 100_000 and sys.stderr.isatty()
        if not (show and reorder):
            return cls(_core.IndexCore.build(docs._csr, ids_arr, bs, bool(reorder), num_threads=threads), mode)
        return cls(_build_with_progress(docs, ids_arr, bs, threads), mode)

    # -- search ---------------------------------------------------------------------------------------------------

    def search(
        self,
        queries: SparseBatch,
        k: int = 10,
        *,
        recall_target: float | None = None,
        alpha: float | None = None,
        beta: float | None = None,
        patience: float | None = None,
        filter: Filter = None,
        num_threads: int | None = None,
    ) -> tuple[NDArray[np.int64], NDArray[np.float32]]:
        """Top-``k`` documents for every query row, in query order.

        Parameters
        ----------
        queries
            Query vectors (non-negative weights), same ``dim`` as the index.
        k
            Results per query.
        recall_target
            Pick ``alpha``/``beta``/``patience`` from :data:`RECALL_PRESETS` for this index's block size (the
            smallest preset ``>=`` the target); 1.0 is exact.
        alpha, beta
            Explicit approximation knobs in ``(0, 1]`` (1, 1 is exact): block bounds are scaled by ``alpha``
            before the stopping test, and computed from the heaviest query terms holding ``beta`` of its L1 mass.
            Default from the index mode.
        patience
            Early termination in ``[0, 1]``: a segment's search stops once ``ceil(patience * n_blocks)`` (at least
            16) blocks visited in a row added nothing to the top ``k``. 0 (the default with explicit
            ``alpha``/``beta``) turns it off; exact search needs 0.
        filter
            Allowed documents: an array of external ids, or a boolean mask indexed by external id (it must have
            an entry for every live id, so at least ``max(ids()) + 1`` entries). Other documents are never
            returned, and in exact mode the result is the exact top-k among the allowed.
        num_threads
            Worker threads (queries run in parallel; results do not depend on it). A single query runs on the
            calling thread, as :meth:`search_one` does.

        Returns
        -------
        ids : ndarray of int64, shape (n_queries, min(k, len(self)))
            External ids, best first (ties by smaller id), ``-1`` padding. No query can have more hits than
            the index has documents, so a larger ``k`` gives ``len(self)`` columns.
        scores : ndarray of float32, same shape
            Dot products, ``-inf`` padding.

        Raises
        ------
        ShapeMismatchError
            ``queries`` of another ``dim``, or a boolean ``filter`` mask without an entry for some live id.
        IndexFormatError
            The index was memory-mapped from a file that has been changed or truncated since (load it again).
        """
        if not isinstance(queries, SparseBatch):
            raise DTypeError(f"queries: must be a SparseBatch, got {type(queries).__name__}")
        a, b, p = _search_params(self._presets, self._mode, recall_target, alpha, beta, patience)
        ai, am = _filter_args(filter)
        k, threads = _positive_int(k, "k"), check_num_threads(num_threads)
        if queries.n_rows == 1 and queries.dim == self.dim:
            # One query runs on the calling thread, as search_one: handing it to a pool thread costs a wake-up,
            # which on a busy machine takes milliseconds (p99 of one-query searches on the demo corpus 4 ms through
            # the pool, 60 us on the calling thread with 2 cores under load: benches/bench_edge.py).
            hit_ids, hit_scores = self._core.search_one(*queries.row(0), k, a, b, p, ai, am)
            width = min(k, len(self))
            ids = np.full((1, width), -1, dtype=np.int64)
            scores = np.full((1, width), -np.inf, dtype=np.float32)
            ids[0, : hit_ids.size] = hit_ids
            scores[0, : hit_scores.size] = hit_scores
            return ids, scores
        return self._core.search(queries._csr, k, a, b, p, ai, am, num_threads=threads)

    def search_one(
        self,
        indices: ArrayLike,
        values: ArrayLike,
        k: int = 10,
        *,
        recall_target: float | None = None,
        alpha: float | None = None,
        beta: float | None = None,
        patience: float | None = None,
        filter: Filter = None,
    ) -> tuple[NDArray[np.int64], NDArray[np.float32]]:
        """Top-``k`` for a single query given as sorted term ids and weights, with minimal overhead.

        Runs on the calling thread. Returns 1-D ``(ids, scores)`` holding only real hits (no padding), best
        first. uint32 ids and float32 weights are used without conversion. The knobs are those of
        :meth:`search`.
        """
        idx = indices if isinstance(indices, np.ndarray) and indices.dtype == np.uint32 else _as_indices(indices)
        val = values if isinstance(values, np.ndarray) and values.dtype == np.float32 else _as_data(values)
        if type(k) is not int or k < 1:
            k = _positive_int(k, "k")
        if recall_target is None and alpha is None and beta is None and patience is None:
            a, b, p = self._default
        else:
            a, b, p = _search_params(self._presets, self._mode, recall_target, alpha, beta, patience)
        if filter is None:
            return self._core.search_one(idx, val, k, a, b, p)
        ai, am = _filter_args(filter)
        return self._core.search_one(idx, val, k, a, b, p, ai, am)

    def explain(
        self,
        indices: ArrayLike,
        values: ArrayLike,
        k: int = 10,
        *,
        recall_target: float | None = None,
        alpha: float | None = None,
        beta: float | None = None,
        patience: float | None = None,
    ) -> dict[str, int]:
        """Work a single query does: blocks bounded, blocks visited, documents scored, hits returned.

        Keys: ``blocks_bounded``, ``blocks_visited``, ``docs_scored`` (documents of visited blocks),
        ``docs_rescored`` (those of them scored a second time, exactly: a visited document is first scored from
        the upper 16 bits of its f32 weights, and only one that may still enter the top ``k`` reads the rest),
        ``n_hits``. Deterministic (unlike timings), so it is the right measure when tuning
        ``alpha``/``beta``/``patience``/``block_size``.
        """
        a, b, p = _search_params(self._presets, self._mode, recall_target, alpha, beta, patience)
        return dict(self._core.explain_one(_as_indices(indices), _as_data(values), _positive_int(k, "k"), a, b, p))

    # -- updates --------------------------------------------------------------------------------------------------

    def add(
        self, docs: SparseBatch, ids: ArrayLike | None = None, *, num_threads: int | None = None
    ) -> NDArray[np.int64]:
        """Add documents; they are searchable when this returns.

        Parameters
        ----------
        docs
            New documents (same ``dim``).
        ids
            Their external ids (default: consecutive after the largest id ever used). An id of a live document
            is an error; an id that was deleted may be reused.
        num_threads
            Worker threads.

        Returns
        -------
        ndarray of int64
            The ids given to the new documents.
        """
        if not isinstance(docs, SparseBatch):
            raise DTypeError(f"docs: must be a SparseBatch, got {type(docs).__name__}")
        return self._core.add(docs._csr, _ids_arg(ids, docs.n_rows), num_threads=check_num_threads(num_threads))

    def delete(self, ids: ArrayLike, *, ignore_missing: bool = False) -> int:
        """Delete documents by external id; they are never returned again. Returns how many were deleted.

        Raises
        ------
        UnknownIdError
            An id is not in the index (unless ``ignore_missing``); nothing is deleted then.
        """
        return int(self._core.delete(_delete_ids_arg(ids), ignore_missing))

    def compact(self, *, num_threads: int | None = None) -> None:
        """Fold added segments and deletions into one freshly laid-out segment (searches go on meanwhile).

        Every ``add`` makes a segment of its own, searched with its own block bounds, so an index grown by many
        ``add`` calls answers slower than the same documents in one segment (1.4-1.6x for 500k documents plus
        five segments of 100k, ``benches/probe_segments.py``); ``compact`` restores the single-segment speed.
        """
        self._core.compact(num_threads=check_num_threads(num_threads))

    # -- persistence ----------------------------------------------------------------------------------------------

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the index to ``path`` atomically (temporary file, fsync, rename).

        The temporary file ``.NAME.tmp-PID-THREAD-RANDOM`` is unique to the call, so threads and processes may
        save to the same path at once (the last one wins; the file is always whole), and temporaries left by
        a process killed mid-save are removed by the next save to that path. The format is versioned and
        checksummed (magic ``SPCOREIX``, 64-byte-aligned arrays); see ``rust/sparsecore-core/src/index/format.rs``.
        The search mode is not stored: pass it to :meth:`load`.
        """
        self._core.save(os.fspath(path))

    @classmethod
    def load(
        cls,
        path: str | os.PathLike[str],
        *,
        mmap: bool = True,
        mode: Mode = "approx",
        num_threads: int | None = None,
        verify: bool = True,
    ) -> InvertedIndex:
        """Load an index written by :meth:`save`.

        Parameters
        ----------
        path
            The file.
        mmap
            Map the file instead of reading it into memory: opening costs one checksum pass through the page
            cache and the arrays are never copied to the heap (only ids, ~33 bytes per document, are). The file
            must not be modified or truncated while the index is in use (:meth:`save` never does: it writes a
            new file and renames it over the old one). Every search first checks the file's size and
            modification time and raises :class:`IndexFormatError` if another program changed it; a change
            during a search can still crash the process (a truncated mapping raises SIGBUS), so load with
            ``mmap=False`` when other programs may rewrite the file.
        mode
            Default search mode of the loaded index.
        num_threads
            Worker threads for checking.
        verify
            Check every array's checksum and every element the search relies on (sorted, in-range terms; finite,
            non-negative weights; in-range blocks): one pass over the file. ``False`` checks the header, the
            table, the layout and the per-document arrays only, so a memory-mapped index of millions of
            documents opens in a fraction of a second and its pages are read when searches need them. For files
            you trust (written by :meth:`save`, not changed since): a corrupted array is then found only if a
            search trips over it, as :class:`IndexFormatError`, or gives wrong results. Never a crash either way.

        Raises
        ------
        IndexFormatError
            The file is not a sparsecore index, has another format version, is truncated or corrupted.
            Also when ``path`` is not a regular file (a directory, device or pipe).
        FileNotFoundError
            ``path`` does not exist.
        """
        check_choice(mode, "mode", ("approx", "exact"))
        core = _core.IndexCore.load(
            os.fspath(path), bool(mmap), num_threads=check_num_threads(num_threads), verify=check_bool(verify, "verify")
        )
        return cls(core, mode)

    @property
    def is_file_backed(self) -> bool:
        """Whether the main arrays live in a loaded (possibly memory-mapped) file."""
        return bool(self._core.is_file_backed)

    # -- introspection --------------------------------------------------------------------------------------------

    @property
    def dim(self) -> int:
        """Dimension of documents and queries."""
        return int(self._core.dim)

    @property
    def mode(self) -> Mode:
        """Default search mode."""
        return self._mode

    @property
    def n_segments(self) -> int:
        """Segments (1 after build or compact, one more per :meth:`add`)."""
        return int(self._core.n_segments)

    def ids(self) -> NDArray[np.int64]:
        """External ids of the live documents, in insertion order."""
        return self._core.ids()

    def __contains__(self, doc_id: object) -> bool:
        return isinstance(doc_id, (int, np.integer)) and bool(self._core.contains(int(doc_id)))

    def __len__(self) -> int:
        return len(self._core)

    def memory_usage(self) -> dict[str, int]:
        """Bytes held by each component (forward index, block bounds, ids, ...)."""
        return dict(self._core.memory_usage())

    def __repr__(self) -> str:
        total = sum(self.memory_usage().values())
        return (
            f"InvertedIndex(n_docs={len(self)}, dim={self.dim}, mode={self._mode!r}, "
            f"segments={self.n_segments}, block_size={self._core.block_size}, memory={total / 2**20:.1f} MiB)"
        )

    def __getstate__(self) -> Any:
        raise TypeError("InvertedIndex is not picklable; use save() and InvertedIndex.load()")
