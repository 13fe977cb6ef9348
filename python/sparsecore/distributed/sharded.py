"""A sharded inverted index: shards are ordinary index files, served by Ray actors or local threads.

Dot-product scores need no corpus-wide statistics, so every shard is an independent
:class:`~sparsecore.index.InvertedIndex`; a search sends the whole query batch to every shard once and merges the
per-shard top-k exactly (score descending, then global id ascending: the single index's order).
"""

from __future__ import annotations

import os
import shutil
import time
import uuid
import warnings
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

from sparsecore import exceptions
from sparsecore._validate import check_bool, check_choice, check_num_threads, nonnegative_int, positive_int
from sparsecore.distributed._backends import (
    PENDING,
    LocalBackend,
    PartialResultWarning,
    RayBackend,
    ShardTimeoutError,
    ShardUnavailableError,
    make_backend,
)
from sparsecore.distributed._shard import (
    MANIFEST_NAME,
    PARTITIONS,
    Manifest,
    ShardEntry,
    build_shard,
    build_shard_from_spool,
    read_manifest,
    route_ids,
    unpack_result,
    write_manifest,
    write_spool_chunk,
)
from sparsecore.exceptions import (
    DTypeError,
    InvalidArgumentError,
    ShapeMismatchError,
    SparsecoreError,
    UnknownIdError,
)
from sparsecore.index import _delete_ids_arg, _ids_arg
from sparsecore.sparse import SparseBatch

__all__ = ["BUILD_PARAMS", "SEARCH_PARAMS", "SearchResult", "ShardedIndex"]

BackendName = Literal["ray", "local"]
Partition = Literal["round_robin", "range"]

#: Keyword arguments of :meth:`InvertedIndex.build` a sharded build passes on to every shard.
BUILD_PARAMS = frozenset({"mode", "block_size", "reorder", "num_threads"})
#: Keyword arguments of :meth:`InvertedIndex.search` a sharded search passes on to every shard.
SEARCH_PARAMS = frozenset({"recall_target", "alpha", "beta", "patience", "filter", "num_threads"})


#: Local backend: batches of at most this many queries search the shards one after the other on the calling
#: thread (without a timeout); larger ones in parallel on threads. See ``LocalBackend.start_all``.
SEQUENTIAL_MAX_QUERIES = 1


class SearchResult(tuple[NDArray[np.int64], NDArray[np.float32]]):
    """``(ids, scores)`` as :meth:`InvertedIndex.search` returns them, plus which shards are missing.

    Unpacks like the single index's result (``ids, scores = index.search(...)``).

    Attributes
    ----------
    missing_shards : tuple of int
        Shards whose results are not included (only with ``allow_partial=True``; empty otherwise).
    errors : dict of int to str
        Why each missing shard is missing (``"timed out after 0.5 s"``, or the error it raised).
    """

    missing_shards: tuple[int, ...]
    errors: dict[int, str]

    def __new__(
        cls,
        ids: NDArray[np.int64],
        scores: NDArray[np.float32],
        missing_shards: tuple[int, ...] = (),
        errors: Mapping[int, str] | None = None,
    ) -> SearchResult:
        """Wrap ``(ids, scores)`` with the missing shards and their reasons."""
        self = super().__new__(cls, (ids, scores))
        self.missing_shards = missing_shards
        self.errors = dict(errors or {})
        return self

    @property
    def ids(self) -> NDArray[np.int64]:
        """Global ids, ``(n_queries, width)``, ``-1`` padding."""
        return self[0]

    @property
    def scores(self) -> NDArray[np.float32]:
        """Dot products, ``-inf`` padding."""
        return self[1]

    @property
    def complete(self) -> bool:
        """Whether every shard answered."""
        return not self.missing_shards

    def __repr__(self) -> str:
        return f"SearchResult(shape={self[0].shape}, missing_shards={self.missing_shards})"


def merge_top_k(
    parts: list[tuple[NDArray[np.int64], NDArray[np.float32]]], n_queries: int, width: int
) -> tuple[NDArray[np.int64], NDArray[np.float32]]:
    """Merge per-shard top-k lists exactly: score descending, then id ascending; ``width`` columns.

    Padding (``-1`` / ``-inf``) sorts last, and real hits always have positive scores.
    """
    if not parts or width == 0:
        return np.full((n_queries, width), -1, np.int64), np.full((n_queries, width), -np.inf, np.float32)
    ids = np.concatenate([p[0] for p in parts], axis=1)
    scores = np.concatenate([p[1] for p in parts], axis=1)
    if ids.shape[1] < width:
        pad = width - ids.shape[1]
        ids = np.pad(ids, ((0, 0), (0, pad)), constant_values=-1)
        scores = np.pad(scores, ((0, 0), (0, pad)), constant_values=-np.inf)
    # lexsort: the last key is the primary one. -inf padding -> +inf, after every real hit.
    order = np.lexsort((ids, -scores), axis=1)[:, :width]
    return np.take_along_axis(ids, order, axis=1), np.take_along_axis(scores, order, axis=1)


def _check_index_params(params: Mapping[str, Any]) -> dict[str, Any]:
    for key in params:
        if key not in BUILD_PARAMS:
            raise InvalidArgumentError(
                f"{key}: not a build parameter of a sharded index (accepted: {', '.join(sorted(BUILD_PARAMS))})"
            )
    out = dict(params)
    if "mode" in out:
        out["mode"] = check_choice(out["mode"], "mode", ("approx", "exact"))
    if out.get("block_size") is not None:
        out["block_size"] = positive_int(out["block_size"], "block_size")
    if "reorder" in out:
        out["reorder"] = check_bool(out["reorder"], "reorder")
    if "num_threads" in out:
        out["num_threads"] = check_num_threads(out["num_threads"])
    return out


def _task_threads(params: Mapping[str, Any], n_shards: int, be: LocalBackend | RayBackend) -> int:
    """Threads of each shard's build: ``num_threads`` if given, else the cores shared among concurrent builds."""
    given = params.get("num_threads")
    if given is not None:
        return int(given)
    return _default_threads(be, n_shards)


def _default_threads(be: LocalBackend | RayBackend, n_shards: int) -> int:
    """Threads per shard call: on Ray the cluster's cores divided among the shards, locally all the cores.

    Each Ray actor or task is a process with its own thread pools. The Rust core keeps one rayon pool per thread
    count per process, and ``pool.install`` from outside a pool queues on it, so local shards asking for
    ``cores // n_shards`` threads each would share one small pool and run one after the other. Asking for all the
    cores puts them on one pool of that size, which runs their work side by side. (On the busy 2-core machine
    of the benchmarks the two settings measured within each other's noise: ``benches/probe_distributed.py
    --probe threads`` gave 0.78x against 0.72x the single index's 2-thread QPS in one run, an earlier ad-hoc run
    0.39-0.51x against 0.65-0.71x.)
    """
    cores = be.cpus()
    return cores if isinstance(be, LocalBackend) else max(1, cores // min(n_shards, cores))


def _is_ray_dataset(obj: object) -> bool:
    """Whether ``obj`` is a ``ray.data.Dataset`` (told without importing Ray)."""
    return any(c.__module__.startswith("ray.data") and c.__name__ == "Dataset" for c in type(obj).__mro__)


def _dataset_batch(batch: Mapping[str, Any], dim: int) -> tuple[SparseBatch, NDArray[np.int64]]:
    """One numpy batch of a ``ray.data.Dataset`` (columns ``id``, ``indices``, ``values``) as documents and ids."""
    for col in ("id", "indices", "values"):
        if col not in batch:
            raise InvalidArgumentError(f"docs: the dataset has no column {col!r} (needs id, indices, values)")
    rows_i = [np.asarray(r) for r in batch["indices"]]
    rows_v = [np.asarray(r) for r in batch["values"]]
    indptr = np.zeros(len(rows_i) + 1, np.int64)
    np.cumsum([len(r) for r in rows_i], out=indptr[1:])
    ind = np.concatenate(rows_i) if rows_i else np.zeros(0, np.uint32)
    val = np.concatenate(rows_v) if rows_v else np.zeros(0, np.float32)
    docs = SparseBatch.from_arrays(indptr, ind, val, dim)
    ids = _ids_arg(np.asarray(batch["id"]), docs.n_rows)
    assert ids is not None
    return docs, ids


def _spool_batch(
    spool: Path, name: str, docs: SparseBatch, ids: NDArray[np.int64], partition: str, n: int, bounds: list[int]
) -> list[tuple[int, str]]:
    """Route one batch's rows to shards and write each shard's part as ``spool/shard_<s>/<name>.spc``.

    Returns the ``(shard, path)`` pairs written (shards the batch does not touch get no file).
    """
    route = route_ids(ids, partition, n, bounds)
    written = []
    for s in range(n):
        rows = np.flatnonzero(route == s)
        if len(rows) == 0:
            continue
        path = spool / f"shard_{s}" / f"{name}.spc"
        path.parent.mkdir(parents=True, exist_ok=True)
        write_spool_chunk(path, docs[rows], ids[rows])
        written.append((s, str(path)))
    return written


#: Columns of the ingestion tasks' output rows (a spooled chunk with its batch's largest id, or an error) and their
#: numpy dtypes.
_SPOOL_COLUMNS = {"shard": np.int64, "path": object, "max_id": np.int64, "error_type": object, "error": object}


def _spool_dataset(
    ds: Any, dim: int | None, spool: Path, n: int, partition: str, bounds: list[int], batch_size: int
) -> tuple[list[list[str]], int, int]:
    """Route and spool a ``ray.data.Dataset`` in parallel Ray Data tasks; per shard its chunk files, the max id, dim.

    Each task converts its batch, routes the rows to shards and writes one spool chunk per shard it touches
    (``write_spool_chunk``, atomic, under ``spool`` — a directory every node sees, like the shard files). A
    sparsecore error inside a task comes back as a row and is raised here with its own type (Ray Data would wrap
    it in a generic ``UserCodeException``).
    """
    if dim is None:
        raise InvalidArgumentError("dim: required when docs is a ray.data.Dataset (the vectors' dimension)")
    folder = str(spool)
    shard_bounds = list(bounds)

    def write(batch: Mapping[str, Any]) -> dict[str, NDArray[Any]]:
        try:
            docs, ids = _dataset_batch(batch, dim)
            name = f"chunk_{uuid.uuid4().hex}"
            written = _spool_batch(Path(folder), name, docs, ids, partition, n, shard_bounds)
            rows = [(s, path, int(ids.max()), "", "") for s, path in written]
        except SparsecoreError as exc:
            rows = [(-1, "", -1, type(exc).__name__, str(exc))]
        cols = list(zip(*rows, strict=True)) if rows else [()] * len(_SPOOL_COLUMNS)
        return {c: np.asarray(v, dtype=t) for (c, t), v in zip(_SPOOL_COLUMNS.items(), cols, strict=True)}

    chunks: list[list[str]] = [[] for _ in range(n)]
    max_id = -1
    for row in ds.map_batches(write, batch_size=batch_size, batch_format="numpy").iter_rows():
        if row["error_type"]:
            kind = getattr(exceptions, str(row["error_type"]), None)
            cls = kind if isinstance(kind, type) and issubclass(kind, SparsecoreError) else InvalidArgumentError
            raise cls(str(row["error"]))
        chunks[int(row["shard"])].append(str(row["path"]))
        max_id = max(max_id, int(row["max_id"]))
    if not any(chunks):
        raise InvalidArgumentError("docs: the dataset holds no rows")
    for files in chunks:
        files.sort()  # the same documents give the same shard files, whatever order the tasks finished in
    return chunks, max_id, dim


def _spool_items(
    items: Iterator[tuple[SparseBatch, NDArray[np.int64]]], spool: Path, n: int, partition: str, bounds: list[int]
) -> tuple[list[list[str]], int, int]:
    """Route and spool ``(batch, ids)`` items in this process; per shard its chunk files, the max id and dim."""
    chunks: list[list[str]] = [[] for _ in range(n)]
    dim: int | None = None
    max_id = -1
    for j, (batch, ids) in enumerate(items):
        if dim is None:
            dim = batch.dim
        elif batch.dim != dim:
            raise ShapeMismatchError(f"docs: batch {j} has dim {batch.dim}, the first has {dim}")
        if len(ids):
            max_id = max(max_id, int(ids.max()))
        for shard, path in _spool_batch(spool, f"chunk_{j:08d}", batch, ids, partition, n, bounds):
            chunks[shard].append(path)
    if dim is None:
        raise InvalidArgumentError("docs: the iterable yielded no batches")
    return chunks, max_id, dim


def _stream_items(docs: Iterable[Any], ids: ArrayLike | None) -> Iterator[tuple[SparseBatch, NDArray[np.int64]]]:
    """``(batch, ids)`` pairs of an iterator of batches or of ``(batch, ids)`` pairs (consecutive ids if none)."""
    if ids is not None:
        raise InvalidArgumentError("ids: pass ids inside the iterator, as (SparseBatch, ids) pairs, not separately")
    next_id = 0
    explicit: bool | None = None
    for n, item in enumerate(docs):
        if isinstance(item, tuple) and len(item) == 2:
            batch, item_ids = item
            has_ids = True
        else:
            batch, item_ids, has_ids = item, None, False
        if explicit is None:
            explicit = has_ids
        elif explicit != has_ids:
            raise InvalidArgumentError(f"docs: batch {n} {'has' if has_ids else 'lacks'} ids, unlike the first")
        if not isinstance(batch, SparseBatch):
            raise DTypeError(f"docs: batch {n} must be a SparseBatch, got {type(batch).__name__}")
        arr = _ids_arg(item_ids, batch.n_rows)
        if arr is None:
            arr = np.arange(next_id, next_id + batch.n_rows, dtype=np.int64)
            next_id += batch.n_rows
        yield batch, arr


class ShardedIndex:
    """An inverted index split into shards, each an :class:`~sparsecore.index.InvertedIndex` file.

    Build with :meth:`build`, open with :meth:`open`; :meth:`search` fans a query batch out to every shard and
    merges exactly, so in exact mode it returns what one ``InvertedIndex`` over all the documents returns (same
    ids, scores, order and padding). With ``backend="ray"`` every shard replica is a Ray actor that memory-maps its
    file and is restarted by Ray if it dies; with ``backend="local"`` the same code runs on threads of this
    process, with no Ray installed.

    Examples
    --------
    >>> import tempfile
    >>> import sparsecore as sc
    >>> from sparsecore.distributed import ShardedIndex
    >>> docs = sc.SparseBatch.from_dicts([{1: 1.0}, {1: 2.0, 3: 1.0}, {3: 0.5}, {2: 1.0}], dim=5)
    >>> with ShardedIndex.build(docs, tempfile.mkdtemp(), 2, backend="local", mode="exact") as idx:
    ...     ids, scores = idx.search(sc.SparseBatch.from_dicts([{1: 1.0, 3: 1.0}], dim=5), k=3)
    >>> ids.tolist(), scores.tolist()
    ([[1, 0, 2]], [[3.0, 1.0, 0.5]])
    """

    def __init__(
        self,
        out_dir: Path,
        manifest: Manifest,
        backend: LocalBackend | RayBackend,
        replicas: int,
        n_docs: list[int],
    ) -> None:
        self._dir = out_dir
        self._manifest = manifest
        self._backend = backend
        self._replicas = replicas
        self._n_docs = n_docs
        self._turn = 0
        self._closed = False

    def _check_open(self) -> None:
        if self._closed:
            raise ShardUnavailableError(f"the sharded index of {str(self._dir)!r} is closed")

    # -- building -------------------------------------------------------------------------------------------------

    @classmethod
    def build(
        cls,
        docs: SparseBatch | Iterable[SparseBatch] | Iterable[tuple[SparseBatch, ArrayLike]] | Any,
        out_dir: str | os.PathLike[str],
        n_shards: int,
        *,
        ids: ArrayLike | None = None,
        backend: BackendName = "ray",
        partition: Partition = "round_robin",
        boundaries: ArrayLike | None = None,
        dim: int | None = None,
        max_retries: int = 3,
        overwrite: bool = False,
        replicas: int = 1,
        **index_params: Any,
    ) -> ShardedIndex:
        """Split ``docs`` into ``n_shards`` shards, build each (a Ray task or a thread), write them and a manifest.

        Shard files are written atomically (unique temporary, fsync, rename) and the manifest last, so a build
        that dies part-way leaves no directory that opens and no shard file that loads half-written.

        Parameters
        ----------
        docs
            A :class:`SparseBatch`; or an iterable of batches, or of ``(batch, ids)`` pairs, for corpora larger
            than memory (each batch is routed and spooled to disk under ``out_dir``; one shard at a time must fit
            in a builder's memory); or a ``ray.data.Dataset`` with columns ``id``, ``indices``, ``values`` (one
            array per row; pass ``dim``), whose blocks Ray Data tasks convert, route and spool in parallel (the
            data never passes through this process; the spool lies under ``out_dir``).
        out_dir
            Directory to write (created if needed). Must be reachable by every Ray node at the same path.
        n_shards
            Number of shards (1 or more).
        ids
            int64 ids of a :class:`SparseBatch`'s rows (default ``0..n-1``); for iterables pass ``(batch, ids)``
            pairs instead (default: consecutive ids across batches).
        backend
            ``"ray"`` (tasks and actors on the current Ray cluster, or a local one) or ``"local"`` (threads).
        partition
            ``"round_robin"``: shard ``id mod n_shards`` (with default ids, row ``i`` goes to shard
            ``i mod n_shards``). ``"range"``: contiguous id ranges, cut at ``boundaries`` (default: equal counts
            of a :class:`SparseBatch`'s ids; required for iterables).
        boundaries
            ``n_shards - 1`` increasing ids: shard ``i`` holds ids in ``[boundaries[i-1], boundaries[i])``.
        dim
            Dimension of a ``ray.data.Dataset``'s vectors.
        max_retries
            Ray retries of a build task whose worker died.
        overwrite
            Replace a sharded index already in ``out_dir``.
        replicas
            Replicas of every shard in the returned, opened index.
        **index_params
            :meth:`InvertedIndex.build` parameters for every shard: ``mode``, ``block_size``, ``reorder``,
            ``num_threads``.

        Returns
        -------
        ShardedIndex
            The new index, opened on ``backend``.

        Raises
        ------
        InvalidArgumentError
            Bad ``n_shards``, ``backend``, ``partition``, ``boundaries`` or parameter, repeated ids, an
            ``out_dir`` that already holds an index (without ``overwrite``).
        DTypeError
            ``docs`` (or an item of it) is not a SparseBatch.
        MissingExtraError
            ``backend="ray"`` without Ray installed.
        """
        n = positive_int(n_shards, "n_shards")
        check_choice(backend, "backend", ("ray", "local"))
        check_choice(partition, "partition", PARTITIONS)
        retries = nonnegative_int(max_retries, "max_retries")
        params = _check_index_params(index_params)
        replicas = positive_int(replicas, "replicas")
        if dim is not None:
            dim = positive_int(dim, "dim")
        bounds = cls._check_boundaries(boundaries, n, partition)
        root = Path(out_dir)
        if root.exists() and not root.is_dir():
            raise InvalidArgumentError(f"out_dir: {root} exists and is not a directory")
        if (root / MANIFEST_NAME).exists():
            if not check_bool(overwrite, "overwrite"):
                raise InvalidArgumentError(f"out_dir: {root} already holds a sharded index; pass overwrite=True")
            (root / MANIFEST_NAME).unlink()  # from here on the directory is not an index until the build ends
        root.mkdir(parents=True, exist_ok=True)
        be = make_backend(backend)
        try:
            if isinstance(docs, SparseBatch):
                entries, bounds, next_id, vdim = cls._build_batch(
                    docs, root, n, ids, partition, bounds, params, be, retries
                )
            else:
                if partition == "range" and bounds is None:
                    raise InvalidArgumentError("boundaries: required for partition='range' when docs is an iterable")
                spool = root / f".spool-{os.getpid()}-{uuid.uuid4().hex[:8]}"
                try:
                    if _is_ray_dataset(docs):
                        if ids is not None:
                            raise InvalidArgumentError("ids: a ray.data.Dataset carries its ids in its 'id' column")
                        chunks, max_id, vdim = _spool_dataset(docs, dim, spool, n, partition, bounds or [], 4096)
                    elif isinstance(docs, Iterable):
                        chunks, max_id, vdim = _spool_items(_stream_items(docs, ids), spool, n, partition, bounds or [])
                    else:
                        raise DTypeError(
                            f"docs: must be a SparseBatch, an iterable of batches or a ray.data.Dataset, "
                            f"got {type(docs).__name__}"
                        )
                    entries = cls._build_spooled(root, chunks, vdim, params, be, retries)
                finally:
                    shutil.rmtree(spool, ignore_errors=True)
                next_id = max_id + 1
            manifest = Manifest(vdim, partition, bounds or [], next_id, params, entries)
            write_manifest(root, manifest)
            keep = {f for e in entries for f in e.files} | {MANIFEST_NAME}
            for old in root.glob("shard_*.spc"):
                if old.name not in keep:
                    old.unlink()
        except BaseException:
            be.close()
            raise
        be.close()
        return cls.open(root, backend=backend, replicas=replicas)

    @staticmethod
    def _check_boundaries(boundaries: ArrayLike | None, n: int, partition: str) -> list[int] | None:
        if boundaries is None:
            return None
        if partition != "range":
            raise InvalidArgumentError("boundaries: only for partition='range'")
        b = np.asarray(boundaries)
        if b.ndim != 1 or len(b) != n - 1:
            raise ShapeMismatchError(f"boundaries: must be 1-D with n_shards - 1 = {n - 1} ids, got shape {b.shape}")
        if b.size and b.dtype.kind not in "iu":
            raise DTypeError(f"boundaries: must be integers, got dtype {b.dtype}")
        if np.any(np.diff(b.astype(np.int64)) <= 0):
            raise InvalidArgumentError(f"boundaries: must be strictly increasing, got {b.tolist()}")
        return [int(x) for x in b]

    @staticmethod
    def _build_batch(
        docs: SparseBatch,
        root: Path,
        n: int,
        ids: ArrayLike | None,
        partition: str,
        bounds: list[int] | None,
        params: dict[str, Any],
        be: LocalBackend | RayBackend,
        retries: int,
    ) -> tuple[list[ShardEntry], list[int] | None, int, int]:
        all_ids = _ids_arg(ids, docs.n_rows)
        if all_ids is None:
            all_ids = np.arange(docs.n_rows, dtype=np.int64)
        if partition == "range" and bounds is None and n > 1:
            if docs.n_rows < n:
                raise InvalidArgumentError(f"n_shards: {n} id ranges need at least {n} documents, got {docs.n_rows}")
            srt = np.sort(all_ids)
            bounds = [int(srt[(docs.n_rows * i) // n]) for i in range(1, n)]
            if len(set(bounds)) != len(bounds):
                raise InvalidArgumentError("ids: repeated ids")
        route = route_ids(all_ids, partition, n, bounds or [])
        threads = _task_threads(params, n, be)
        args = []
        for s in range(n):
            rows = np.flatnonzero(route == s)
            part = docs[rows]
            arrays = be.share((part.indptr, part.indices, part.data, docs.dim))
            args.append((str(root), s, arrays, all_ids[rows], {**params, "num_threads": threads}))
        entries = be.run_tasks(build_shard, args, retries, _task_threads(params, n, be))
        next_id = int(all_ids.max()) + 1 if len(all_ids) else 0
        return entries, bounds, next_id, docs.dim

    @staticmethod
    def _build_spooled(
        root: Path,
        chunks: list[list[str]],
        dim: int,
        params: dict[str, Any],
        be: LocalBackend | RayBackend,
        retries: int,
    ) -> list[ShardEntry]:
        """One build task per shard over its spooled chunks."""
        threads = _task_threads(params, len(chunks), be)
        task_params = {**params, "num_threads": threads}
        args = [(str(root), s, files, dim, task_params) for s, files in enumerate(chunks)]
        entries: list[ShardEntry] = be.run_tasks(build_shard_from_spool, args, retries, threads)
        return entries

    # -- opening --------------------------------------------------------------------------------------------------

    @classmethod
    def open(
        cls,
        out_dir: str | os.PathLike[str],
        *,
        backend: BackendName = "ray",
        replicas: int = 1,
        num_threads: int | None = None,
        verify: bool = True,
        compiled_graphs: bool = False,
    ) -> ShardedIndex:
        """Open a sharded index directory: one shard server (Ray actor or local object) per shard replica.

        Parameters
        ----------
        out_dir
            Directory written by :meth:`build`.
        backend
            ``"ray"`` or ``"local"``.
        replicas
            Servers per shard; searches rotate over them and fall back to another when one is dead.
        num_threads
            Threads of every shard's searches (default: the cores of this machine divided among the shards,
            at least 1; a search's own ``num_threads`` wins).
        verify
            Check every shard file's SHA-256 against the manifest when it is (re)loaded.
        compiled_graphs
            Ray only: send small query batches (under 96 KiB) through a Ray Compiled Graph instead of one actor
            call per shard, for one-query latency (``make bench-distributed``: 0.14 ms of fan-out overhead with
            one shard instead of 0.90 ms).
            While a graph lives each shard actor keeps a core busy polling for work, so it suits nodes with a
            core to spare per shard; graphs are torn down after 2 s without such a search. Updates tear them down
            too, and a dead or failing actor sends the search back to classic calls (same answers).

        Raises
        ------
        FileNotFoundError
            ``out_dir`` has no manifest.
        IndexFormatError
            A corrupted manifest, or a shard file that is missing, corrupted or not the one the manifest names
            (the message names the shard).
        MissingExtraError
            ``backend="ray"`` without Ray installed.
        """
        check_choice(backend, "backend", ("ray", "local"))
        reps = positive_int(replicas, "replicas")
        threads = check_num_threads(num_threads)
        root = Path(out_dir)
        manifest = read_manifest(root)
        n = manifest.n_shards
        be = make_backend(backend, compiled=check_bool(compiled_graphs, "compiled_graphs"))
        if threads is None:
            threads = _default_threads(be, n)
        be.open_shards(str(root), n, reps, threads, check_bool(verify, "verify"))
        try:
            pings = [[be.start(s, r, "ping") for r in range(reps)] for s in range(n)]
            answers = [[be.result(h) for h in row] for row in pings]  # raises a replica's load error
            n_docs = [int(row[0]["n_docs"]) for row in answers]
        except BaseException:
            be.close()
            raise
        return cls(root, manifest, be, reps, n_docs)

    # -- searching ------------------------------------------------------------------------------------------------

    def search(
        self,
        queries: SparseBatch,
        k: int = 10,
        *,
        k_per_shard: int | None = None,
        timeout: float | None = None,
        allow_partial: bool = False,
        **search_params: Any,
    ) -> SearchResult:
        """Top-``k`` over all shards for every query: what one :class:`InvertedIndex` would return.

        The whole batch goes to every shard in one call; the per-shard lists are merged by score, then by
        global id, so in exact mode (``recall_target=1.0``, or an index built with ``mode="exact"``) the ids,
        scores, order, ties and ``-1`` / ``-inf`` padding equal a single index's over the same documents.

        Parameters
        ----------
        queries
            Query vectors, same ``dim`` as the index.
        k
            Results per query.
        k_per_shard
            Results asked of each shard (default ``k``). Smaller is cheaper but no longer exact; larger gives
            approximate searches more candidates.
        timeout
            Seconds to wait for the shards (default: no limit).
        allow_partial
            When shards time out or have no live replica: return the merge of the others, name the missing
            shards in ``result.missing_shards`` and warn with :class:`PartialResultWarning`. Otherwise raise.
        **search_params
            :meth:`InvertedIndex.search` parameters: ``recall_target``, ``alpha``, ``beta``, ``patience``,
            ``filter`` (global ids or a mask by global id), ``num_threads``.

        Returns
        -------
        SearchResult
            ``(ids, scores)``, shape ``(n_queries, min(k, len(self)))``.

        Raises
        ------
        ShardTimeoutError
            Shards did not answer within ``timeout`` (without ``allow_partial``); ``exc.shards`` names them.
        ShardUnavailableError
            A shard has no live replica (without ``allow_partial``), or the index is closed.
        IndexFormatError
            A shard's file failed its checks when its server (re)loaded it (names the shard).
        """
        if not isinstance(queries, SparseBatch):
            raise DTypeError(f"queries: must be a SparseBatch, got {type(queries).__name__}")
        if queries.dim != self.dim:
            raise ShapeMismatchError(f"queries: dim {queries.dim} differs from the index's {self.dim}")
        k = positive_int(k, "k")
        kps = k if k_per_shard is None else positive_int(k_per_shard, "k_per_shard")
        if timeout is not None and (
            isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout >= 0
        ):
            raise InvalidArgumentError(f"timeout: must be a number >= 0 or None, got {timeout!r}")
        partial = check_bool(allow_partial, "allow_partial")
        for key in search_params:
            if key not in SEARCH_PARAMS:
                raise InvalidArgumentError(
                    f"{key}: not a search parameter (accepted: {', '.join(sorted(SEARCH_PARAMS))})"
                )
        self._check_open()
        be = self._backend
        shared = be.share((queries.indptr, queries.indices, queries.data, queries.dim))
        deadline = None if timeout is None else time.monotonic() + float(timeout)
        n = self.n_shards
        self._turn += 1
        tried = [0] * n
        answers: dict[int, tuple[NDArray[np.int64], NDArray[np.float32]]] = {}
        errors: dict[int, BaseException] = {}
        todo = list(range(n))
        fast = None
        if deadline is None and isinstance(be, RayBackend):
            fast = be.fast_search(self._turn % self._replicas, shared, kps, search_params)
        if fast is not None:
            for s, out in enumerate(fast):
                ids, scores, count = unpack_result(out)
                answers[s] = (ids, scores)
                self._n_docs[s] = int(count)
            todo = []
        while todo:
            calls = [(s, (self._turn + s + tried[s]) % self._replicas) for s in todo]
            handles = be.start_all(
                calls,
                be.search_method,
                shared,
                kps,
                search_params,
                inline=deadline is None,
                sequential=queries.n_rows <= SEQUENTIAL_MAX_QUERIES,
            )
            for s in todo:
                tried[s] += 1
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            retry = []
            for s, out in zip(todo, be.gather(handles, left), strict=True):
                if out is PENDING:
                    errors[s] = ShardTimeoutError(f"shard {s} timed out after {timeout} s", [s])
                elif isinstance(out, ShardUnavailableError):
                    if tried[s] < self._replicas:
                        retry.append(s)
                    else:
                        errors[s] = ShardUnavailableError(f"shard {s}: {out}")
                elif isinstance(out, OSError):  # IndexFormatError: the shard's file failed its checks on (re)load
                    errors[s] = out
                elif isinstance(out, BaseException):
                    raise out
                else:
                    ids, scores, count = unpack_result(out) if isinstance(out, bytes) else out
                    answers[s] = (ids, scores)
                    self._n_docs[s] = int(count)
            todo = retry
        missing = tuple(sorted(errors))
        if missing and not partial:
            timed_out = [s for s in missing if isinstance(errors[s], ShardTimeoutError)]
            if len(timed_out) < len(missing):
                raise errors[next(s for s in missing if s not in timed_out)]
            raise ShardTimeoutError(f"shards {timed_out} did not answer within {timeout} s", timed_out)
        width = min(k, len(self))
        ids, scores = merge_top_k([answers[s] for s in sorted(answers)], queries.n_rows, width)
        reasons = {s: str(errors[s]) for s in missing}
        if missing:
            warnings.warn(
                PartialResultWarning(f"search results without shards {list(missing)}: " + "; ".join(reasons.values())),
                stacklevel=2,
            )
        return SearchResult(ids, scores, missing, reasons)

    # -- updates --------------------------------------------------------------------------------------------------

    def _call_all(self, calls: dict[int, tuple[str, tuple[Any, ...]]], replica: int = 0) -> dict[int, Any]:
        handles = {s: self._backend.start(s, replica, m, *a) for s, (m, a) in calls.items()}
        self._backend.wait(list(handles.values()), None)
        return {s: self._backend.result(h) for s, h in handles.items()}

    def _live_mask(self, ids: NDArray[np.int64], route: NDArray[np.int64]) -> NDArray[np.bool_]:
        live = np.zeros(len(ids), np.bool_)
        calls = {int(s): ("contains", (ids[route == s],)) for s in np.unique(route)}
        for s, mask in self._call_all(calls).items():
            live[route == s] = mask
        return live

    def _commit(self, entries: dict[int, ShardEntry]) -> None:
        """Write the manifest naming the new files, bring every replica of those shards up to date, drop old files.

        Replicas holding the same base replay only the new delta (see ``ShardServer.reload``).
        """
        old = {f for s in entries for f in self._manifest.shards[s].files}
        for s, e in entries.items():
            self._manifest.shards[s] = e
            self._n_docs[s] = e.n_docs
        write_manifest(self._dir, self._manifest)
        for r in range(self._replicas):
            self._call_all({s: ("reload", ()) for s in entries}, replica=r)
            self._call_all({s: ("ping", ()) for s in entries}, replica=r)  # raises if a reload failed
        for f in old - {f for e in entries.values() for f in e.files}:
            (self._dir / f).unlink(missing_ok=True)

    def add(self, docs: SparseBatch, ids: ArrayLike | None = None) -> NDArray[np.int64]:
        """Add documents, each to the shard its id routes to; written to disk before this returns.

        Parameters
        ----------
        docs
            New documents (same ``dim``).
        ids
            Their ids (default: consecutive after the largest id ever used). An id that is live is an error;
            a deleted one may be reused.

        Returns
        -------
        ndarray of int64
            The ids given to the documents.

        Raises
        ------
        InvalidArgumentError
            An id is live already, or repeated; nothing is added then.
        ShardUnavailableError
            The index is closed.
        """
        self._check_open()
        if not isinstance(docs, SparseBatch):
            raise DTypeError(f"docs: must be a SparseBatch, got {type(docs).__name__}")
        if docs.dim != self.dim:
            raise ShapeMismatchError(f"docs: dim {docs.dim} differs from the index's {self.dim}")
        arr = _ids_arg(ids, docs.n_rows)
        if arr is None:
            arr = np.arange(self._manifest.next_id, self._manifest.next_id + docs.n_rows, dtype=np.int64)
        if len(np.unique(arr)) != len(arr):
            raise InvalidArgumentError("ids: repeated ids")
        if docs.n_rows == 0:
            return arr
        route = self._manifest.route(arr)
        live = self._live_mask(arr, route)
        if live.any():
            raise InvalidArgumentError(f"ids: already in the index: {arr[live][:10].tolist()}")
        calls = {}
        for s in np.unique(route).tolist():
            rows = np.flatnonzero(route == s)
            part = docs[rows]
            calls[s] = ("add", ((part.indptr, part.indices, part.data, part.dim), arr[rows]))
        entries = self._call_all(calls)
        self._manifest.next_id = max(self._manifest.next_id, int(arr.max()) + 1)
        self._commit(entries)
        return arr

    def delete(self, ids: ArrayLike, *, ignore_missing: bool = False) -> int:
        """Delete documents by id from the shards they route to; written to disk before this returns.

        Returns
        -------
        int
            How many were deleted.

        Raises
        ------
        UnknownIdError
            An id is not in the index (unless ``ignore_missing``); nothing is deleted then.
        ShardUnavailableError
            The index is closed.
        """
        self._check_open()
        arr = np.unique(_delete_ids_arg(ids))
        if arr.size == 0:
            return 0
        route = self._manifest.route(arr)
        live = self._live_mask(arr, route)
        if not live.all() and not check_bool(ignore_missing, "ignore_missing"):
            raise UnknownIdError(f"ids: not in the index: {arr[~live][:10].tolist()}")
        arr, route = arr[live], route[live]
        if arr.size == 0:
            return 0
        calls = {s: ("delete", (arr[route == s],)) for s in np.unique(route).tolist()}
        results = self._call_all(calls)
        self._commit({s: e for s, (_, e) in results.items() if e is not None})
        return int(sum(c for c, _ in results.values()))

    # -- introspection --------------------------------------------------------------------------------------------

    def stats(self, *, timeout: float = 30.0) -> dict[str, Any]:
        """What every shard replica reports (within ``timeout`` seconds), and totals.

        Returns
        -------
        dict
            ``n_docs``, ``n_shards``, ``replicas``, ``backend``, ``partition``, ``memory_bytes`` (all replicas),
            ``file_bytes`` (bases and deltas), and ``shards``: per shard its base ``file``, its ``deltas`` (the
            files of the updates since), ``file_bytes``, id range, ``n_docs`` and one dict per replica
            (``n_docs``, ``memory_bytes``, ``generation``, ``n_deltas``, ``pid``, or ``error``).
        """
        self._check_open()
        handles = [[self._backend.start(s, r, "stats") for r in range(self._replicas)] for s in range(self.n_shards)]
        shards = []
        memory = 0
        for s, row in enumerate(handles):
            reps: list[dict[str, Any]] = []
            for out in self._backend.gather(row, timeout):
                if out is PENDING:
                    reps.append({"error": f"no answer within {timeout} s"})
                elif isinstance(out, BaseException):
                    reps.append({"error": f"{type(out).__name__}: {out}"})
                else:
                    memory += int(out["memory_bytes"])
                    reps.append(dict(out))
            e = self._manifest.shards[s]
            shards.append(
                {
                    "file": e.file,
                    "deltas": [d.file for d in e.deltas],
                    "file_bytes": e.size + sum(d.size for d in e.deltas),
                    "id_lo": e.id_lo,
                    "id_hi": e.id_hi,
                    "n_docs": e.n_docs,
                    "replicas": reps,
                }
            )
        return {
            "n_docs": len(self),
            "n_shards": self.n_shards,
            "replicas": self._replicas,
            "backend": self._backend.name,
            "partition": self._manifest.partition,
            "memory_bytes": memory,
            "file_bytes": sum(e.size + sum(d.size for d in e.deltas) for e in self._manifest.shards),
            "shards": shards,
        }

    @property
    def backend(self) -> LocalBackend | RayBackend:
        """The backend running the shards (its ``actor(shard, replica)`` / ``server(...)`` give the servers)."""
        return self._backend

    @property
    def manifest(self) -> Manifest:
        """The manifest as last written."""
        return self._manifest

    @property
    def n_shards(self) -> int:
        """Number of shards."""
        return self._manifest.n_shards

    @property
    def replicas(self) -> int:
        """Servers per shard."""
        return self._replicas

    @property
    def dim(self) -> int:
        """Dimension of documents and queries."""
        return self._manifest.dim

    @property
    def path(self) -> Path:
        """The index directory."""
        return self._dir

    def __len__(self) -> int:
        return int(sum(self._n_docs))

    def close(self) -> None:
        """Stop the shard servers (Ray: kill the actors); later calls raise ``ShardUnavailableError``."""
        self._closed = True
        self._backend.close()

    def __enter__(self) -> ShardedIndex:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"ShardedIndex(n_docs={len(self)}, n_shards={self.n_shards}, replicas={self._replicas}, "
            f"backend={self._backend.name!r}, dim={self.dim}, path={str(self._dir)!r})"
        )

    def __getstate__(self) -> Any:
        raise TypeError("ShardedIndex is not picklable; pass its directory and ShardedIndex.open() it")
