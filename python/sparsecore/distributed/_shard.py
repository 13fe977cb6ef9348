"""One shard: its file, the checked manifest that lists every shard, and the object that serves a shard.

Everything here is plain Python over :class:`~sparsecore.index.InvertedIndex` and never imports Ray: the Ray
backend turns :class:`ShardServer` into an actor class and :func:`build_shard` / :func:`build_shard_from_spool`
into tasks, the local backend calls them on threads.

Files of a sharded index directory:

- ``manifest.spc``: a checked container (kind ``"shards"``) whose metadata lists, per shard, its file, SHA-256,
  size, document count, id range and generation, plus the partition scheme, the build parameters and the next
  free id. Written last, atomically: a directory without it is not an index.
- ``shard_<i>.spc`` (generation 0) or ``shard_<i>.g<n>.spc`` (after ``n`` compactions): ordinary index files
  (:meth:`InvertedIndex.save`, atomic, CRC-checked), the shard's base.
- ``shard_<i>.g<n>.d<k>.spc``: the ``k``-th update since base generation ``n`` (a checked container of kind
  ``"shard-delta"``: the added documents and their ids, or the deleted ids). An update writes only its delta, so
  its cost follows its own size, not the shard's; a shard server loads its base by memory map and replays the
  deltas in order. Once a shard's deltas hold more than :data:`COMPACT_FRACTION` of its base's documents (or
  :data:`MAX_DELTAS` files), the next update writes a new base generation instead and the deltas go.

Every update writes its files first and the manifest last, so the manifest always names complete files.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import re
import threading
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from sparsecore._container import read_container, write_container
from sparsecore.exceptions import IndexFormatError, SparsecoreError
from sparsecore.index import InvertedIndex
from sparsecore.sparse import SparseBatch

__all__ = [
    "COMPACT_FRACTION",
    "MANIFEST_NAME",
    "MAX_DELTAS",
    "DeltaFile",
    "Manifest",
    "ShardEntry",
    "ShardServer",
    "build_shard",
    "build_shard_from_spool",
    "file_sha256",
    "pack_queries",
    "pack_result",
    "read_manifest",
    "route_ids",
    "shard_file_name",
    "unpack_queries",
    "unpack_result",
    "write_manifest",
    "write_spool_chunk",
]

MANIFEST_NAME = "manifest.spc"
_MANIFEST_KIND = "shards"
_MANIFEST_VERSION = 2  # 2: shard entries list their delta files (version 1 manifests, without any, still load)
_SPOOL_KIND = "shard-spool"
_DELTA_KIND = "shard-delta"
_FILE_RE = re.compile(r"shard_[0-9]+(\.g[0-9]+)?\.spc")
#: An update writes a new base generation instead of a delta once the shard's deltas would hold more documents
#: (added plus deleted) than this fraction of the base's.
COMPACT_FRACTION = 0.25
#: ... or more delta files than this.
MAX_DELTAS = 64
PARTITIONS = ("round_robin", "range")

#: Queries as they travel to a shard: ``(indptr, indices, data, dim)``.
QueryArrays = tuple[NDArray[np.int64], NDArray[np.uint32], NDArray[np.float32], int]


def shard_file_name(shard: int, generation: int) -> str:
    """``shard_<i>.spc`` for the built file, ``shard_<i>.g<n>.spc`` for the ``n``-th update."""
    return f"shard_{shard}.spc" if generation == 0 else f"shard_{shard}.g{generation}.spc"


def delta_file_name(shard: int, generation: int, k: int) -> str:
    """``shard_<i>.g<n>.d<k>.spc``: the ``k``-th update (from 1) on base generation ``n`` of shard ``i``."""
    return f"shard_{shard}.g{generation}.d{k}.spc"


def file_sha256(path: str | os.PathLike[str]) -> str:
    """Hex SHA-256 of a file, read in 8 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(8 << 20):
            h.update(chunk)
    return h.hexdigest()


@dataclass(frozen=True)
class DeltaFile:
    """One update of a shard since its base file.

    Attributes
    ----------
    file, sha256, size
        File name inside the index directory, its hex SHA-256, its bytes.
    op
        ``"add"`` (documents and their ids) or ``"delete"`` (ids).
    n
        Documents added or deleted.
    """

    file: str
    sha256: str
    size: int
    op: str
    n: int


@dataclass(frozen=True)
class ShardEntry:
    """What the manifest records about one shard.

    Attributes
    ----------
    file
        File name inside the index directory.
    sha256
        Hex SHA-256 of the file.
    size
        Bytes.
    n_docs
        Live documents.
    id_lo, id_hi
        Smallest and largest live id (``-1, -1`` for an empty shard).
    generation
        0 for the built file, +1 per compaction (a new base written).
    deltas
        The updates since the base, in order.
    base_docs
        Documents of the base file (live ones count in ``n_docs``).
    """

    file: str
    sha256: str
    size: int
    n_docs: int
    id_lo: int
    id_hi: int
    generation: int
    deltas: tuple[DeltaFile, ...] = ()
    base_docs: int = -1

    @property
    def files(self) -> list[str]:
        """The base file and the delta files."""
        return [self.file, *(d.file for d in self.deltas)]

    def needs_compaction(self, n_update: int) -> bool:
        """Whether an update of ``n_update`` documents should write a new base instead of a delta."""
        pending = sum(d.n for d in self.deltas) + n_update
        return len(self.deltas) >= MAX_DELTAS or pending > COMPACT_FRACTION * max(self.base_docs, 1)


@dataclass
class Manifest:
    """The manifest of a sharded index directory (see the module docstring).

    Attributes
    ----------
    dim
        Dimension of documents and queries.
    partition
        ``"round_robin"`` (shard ``id mod n_shards``) or ``"range"`` (shard ``i`` holds ids in
        ``[boundaries[i-1], boundaries[i])``).
    boundaries
        ``n_shards - 1`` increasing ids for ``"range"``; empty for ``"round_robin"``.
    next_id
        The id :meth:`ShardedIndex.add` gives next when none are passed (one past the largest id ever used).
    index_params
        Keyword arguments every shard was built with (``mode``, ``block_size``, ...).
    shards
        One entry per shard.
    """

    dim: int
    partition: str
    boundaries: list[int]
    next_id: int
    index_params: dict[str, Any]
    shards: list[ShardEntry] = field(default_factory=list)

    @property
    def n_shards(self) -> int:
        """Number of shards."""
        return len(self.shards)

    def route(self, ids: NDArray[np.int64]) -> NDArray[np.int64]:
        """The shard of every id."""
        return route_ids(ids, self.partition, self.n_shards, self.boundaries)


def route_ids(ids: NDArray[np.int64], partition: str, n_shards: int, boundaries: list[int]) -> NDArray[np.int64]:
    """The shard of every id: ``id mod n_shards`` (round robin) or its range among ``boundaries``."""
    if partition == "round_robin":
        return np.mod(ids, n_shards).astype(np.int64)
    return np.searchsorted(np.asarray(boundaries, dtype=np.int64), ids, side="right").astype(np.int64)


def write_manifest(out_dir: str | os.PathLike[str], manifest: Manifest) -> None:
    """Write ``manifest.spc`` into ``out_dir`` atomically (a checked container)."""
    meta = {
        "format": "sparsecore.sharded-index",
        "dim": manifest.dim,
        "partition": manifest.partition,
        "boundaries": list(manifest.boundaries),
        "next_id": manifest.next_id,
        "index_params": manifest.index_params,
        "shards": [asdict(e) for e in manifest.shards],
    }
    write_container(Path(out_dir) / MANIFEST_NAME, _MANIFEST_KIND, _MANIFEST_VERSION, meta, {})


def _bad(path: Path, what: str) -> IndexFormatError:
    return IndexFormatError(f"{path}: {what}")


def _int(meta: dict[str, Any], key: str, path: Path) -> int:
    v = meta.get(key)
    if type(v) is not int:
        raise _bad(path, f"manifest field {key!r} must be an integer, got {v!r}")
    return v


def read_manifest(out_dir: str | os.PathLike[str]) -> Manifest:
    """Read and check ``manifest.spc`` of ``out_dir``.

    Raises
    ------
    FileNotFoundError
        ``out_dir`` has no manifest (not a sharded index, or a build that did not finish).
    IndexFormatError
        A corrupted, truncated or foreign manifest, or one whose fields are inconsistent.
    """
    path = Path(out_dir) / MANIFEST_NAME
    if not path.exists():
        raise FileNotFoundError(
            f"{out_dir}: no {MANIFEST_NAME}; not a sharded index directory, or its build did not finish"
        )
    meta = read_container(path, _MANIFEST_KIND, (1, _MANIFEST_VERSION)).meta
    if meta.get("format") != "sparsecore.sharded-index":
        raise _bad(path, "not the manifest of a sharded index")
    partition = meta.get("partition")
    if partition not in PARTITIONS:
        raise _bad(path, f"unknown partition {partition!r}")
    params = meta.get("index_params")
    raw_shards = meta.get("shards")
    bounds = meta.get("boundaries")
    if not isinstance(params, dict) or not isinstance(raw_shards, list) or not raw_shards:
        raise _bad(path, "manifest without index parameters or shards")
    if not isinstance(bounds, list) or any(type(b) is not int for b in bounds):
        raise _bad(path, "boundaries must be a list of integers")
    shards: list[ShardEntry] = []
    fields = set(ShardEntry.__dataclass_fields__)
    for i, raw in enumerate(raw_shards):
        # Version 1 entries have no deltas and no base_docs.
        if not isinstance(raw, dict) or set(raw) not in (fields, fields - {"deltas", "base_docs"}):
            raise _bad(path, f"shard {i}: malformed entry")
        f, digest = raw["file"], raw["sha256"]
        if not isinstance(f, str) or not _FILE_RE.fullmatch(f) or not f.startswith(f"shard_{i}."):
            raise _bad(path, f"shard {i}: bad file name {f!r}")
        _check_digest(digest, path, f"shard {i}")
        nums = {k: _int(raw, k, path) for k in ("size", "n_docs", "id_lo", "id_hi", "generation")}
        deltas = _read_deltas(raw.get("deltas", []), i, nums["generation"], path)
        base = _int(raw, "base_docs", path) if "base_docs" in raw else nums["n_docs"]
        shards.append(ShardEntry(file=f, sha256=digest, **nums, deltas=deltas, base_docs=base))
    expected = len(shards) - 1 if partition == "range" else 0
    if len(bounds) != expected or any(a >= b for a, b in itertools.pairwise(bounds)):
        raise _bad(path, f"{partition} partition of {len(shards)} shards with boundaries {bounds}")
    return Manifest(
        dim=_int(meta, "dim", path),
        partition=str(partition),
        boundaries=[int(b) for b in bounds],
        next_id=_int(meta, "next_id", path),
        index_params=params,
        shards=shards,
    )


def _check_digest(digest: object, path: Path, what: str) -> None:
    if not isinstance(digest, str) or not re.fullmatch(r"[0-9a-f]{64}", digest):
        raise _bad(path, f"{what}: bad checksum {digest!r}")


def _read_deltas(raw: object, shard: int, generation: int, path: Path) -> tuple[DeltaFile, ...]:
    """The checked delta entries of shard ``shard`` (named for its base generation, numbered 1, 2, ...)."""
    if not isinstance(raw, list):
        raise _bad(path, f"shard {shard}: deltas must be a list")
    out = []
    for k, d in enumerate(raw, 1):
        what = f"shard {shard} delta {k}"
        if not isinstance(d, dict) or set(d) != set(DeltaFile.__dataclass_fields__):
            raise _bad(path, f"{what}: malformed entry")
        if d["file"] != delta_file_name(shard, generation, k):
            raise _bad(path, f"{what}: bad file name {d['file']!r}")
        _check_digest(d["sha256"], path, what)
        if d["op"] not in ("add", "delete"):
            raise _bad(path, f"{what}: unknown operation {d['op']!r}")
        size, n = _int(d, "size", path), _int(d, "n", path)
        out.append(DeltaFile(d["file"], d["sha256"], size, d["op"], n))
    return tuple(out)


def _entry(out_dir: Path, shard: int, generation: int, index: InvertedIndex) -> ShardEntry:
    """Save ``index`` as the given generation of ``shard`` (atomically) and describe the file."""
    name = shard_file_name(shard, generation)
    path = out_dir / name
    index.save(path)
    lo, hi = _id_range(index)
    return ShardEntry(name, file_sha256(path), path.stat().st_size, len(index), lo, hi, generation, (), len(index))


def _id_range(index: InvertedIndex) -> tuple[int, int]:
    """Smallest and largest live id (``-1, -1`` for an empty index)."""
    ids = index.ids()
    return (int(ids.min()), int(ids.max())) if len(ids) else (-1, -1)


def _with_delta(
    out_dir: Path, shard: int, entry: ShardEntry, index: InvertedIndex, op: str, arrays: dict[str, Any]
) -> ShardEntry:
    """Write the next delta file of ``entry`` (atomically) and describe the shard with it; ``index`` has it applied."""
    name = delta_file_name(shard, entry.generation, len(entry.deltas) + 1)
    path = out_dir / name
    write_container(path, _DELTA_KIND, 1, {"op": op, "dim": index.dim}, arrays)
    lo, hi = _id_range(index)
    delta = DeltaFile(name, file_sha256(path), path.stat().st_size, op, len(arrays["ids"]))
    return replace(entry, n_docs=len(index), id_lo=lo, id_hi=hi, deltas=(*entry.deltas, delta))


def _apply_delta(out_dir: Path, index: InvertedIndex, delta: DeltaFile, verify: bool) -> None:
    """Replay one delta file on ``index`` (size and, with ``verify``, SHA-256 checked against the manifest)."""
    path = out_dir / delta.file
    _check_file(path, delta.size, delta.sha256, verify)
    c = read_container(path, _DELTA_KIND, (1,))
    ids = c.array("ids", np.int64, 1, path)
    if len(ids) != delta.n or c.meta.get("op") != delta.op or c.meta.get("dim") != index.dim:
        raise IndexFormatError(f"{path}: does not match its manifest entry")
    if delta.op == "delete":
        index.delete(ids, ignore_missing=True)
        return
    docs = SparseBatch.from_arrays(
        c.array("indptr", np.int64, 1, path),
        c.array("indices", np.uint32, 1, path),
        c.array("data", np.float32, 1, path),
        index.dim,
    )
    index.add(docs, ids)


def _check_file(path: Path, size: int, sha256: str, verify: bool) -> None:
    actual = path.stat().st_size
    if actual != size:
        raise IndexFormatError(f"{path}: {actual} bytes, the manifest says {size}")
    if verify and file_sha256(path) != sha256:
        raise IndexFormatError(f"{path}: SHA-256 differs from the manifest's (corrupted or replaced)")


def build_shard(
    out_dir: str,
    shard: int,
    queries_like: QueryArrays,
    ids: NDArray[np.int64],
    index_params: dict[str, Any],
) -> ShardEntry:
    """Build shard ``shard`` from CSR arrays and their ids and write ``shard_<i>.spc`` atomically.

    The arrays come from a validated :class:`SparseBatch` (or a spool written from one), so only their structure
    is checked again.
    """
    indptr, indices, data, dim = queries_like
    docs = SparseBatch.from_arrays(indptr, indices, data, dim, check=False)
    index = InvertedIndex.build(docs, ids, progress=False, **index_params)
    return _entry(Path(out_dir), shard, 0, index)


def write_spool_chunk(path: Path, docs: SparseBatch, ids: NDArray[np.int64]) -> None:
    """Write one chunk of a shard's documents to its spool (a checked container, atomically)."""
    arrays: dict[str, NDArray[Any]] = {"indptr": docs.indptr, "indices": docs.indices, "data": docs.data, "ids": ids}
    write_container(path, _SPOOL_KIND, 1, {"dim": docs.dim}, arrays)


def build_shard_from_spool(
    out_dir: str, shard: int, chunk_files: list[str], dim: int, index_params: dict[str, Any]
) -> ShardEntry:
    """Build shard ``shard`` from the spool chunks :func:`write_spool_chunk` wrote (checked on read)."""
    batches: list[SparseBatch] = []
    ids: list[NDArray[np.int64]] = []
    for f in chunk_files:
        c = read_container(f, _SPOOL_KIND, (1,))
        batches.append(
            SparseBatch.from_arrays(
                c.array("indptr", np.int64, 1, f),
                c.array("indices", np.uint32, 1, f),
                c.array("data", np.float32, 1, f),
                dim,
                check=False,
            )
        )
        ids.append(c.array("ids", np.int64, 1, f))
    docs = SparseBatch.concat(batches) if batches else SparseBatch.empty(0, dim)
    all_ids = np.concatenate(ids) if ids else np.zeros(0, np.int64)
    return build_shard(out_dir, shard, (docs.indptr, docs.indices, docs.data, dim), all_ids, index_params)


def pack_queries(queries: QueryArrays) -> bytes:
    """CSR query arrays as one little-endian byte string (a Ray call carries bytes much faster than arrays)."""
    indptr, indices, data, dim = queries
    head = np.array([len(indptr), len(indices), dim], dtype="<i8")
    return b"".join(a.tobytes() for a in (head, indptr.astype("<i8"), indices.astype("<u4"), data.astype("<f4")))


def unpack_queries(blob: bytes) -> QueryArrays:
    """The arrays :func:`pack_queries` packed (views into ``blob``)."""
    n_ptr, nnz, dim = (int(x) for x in np.frombuffer(blob, "<i8", 3))
    at = 24
    indptr = np.frombuffer(blob, "<i8", n_ptr, at)
    at += 8 * n_ptr
    indices = np.frombuffer(blob, "<u4", nnz, at)
    data = np.frombuffer(blob, "<f4", nnz, at + 4 * nnz)
    return indptr.astype(np.int64), indices.astype(np.uint32), data.astype(np.float32), dim


def pack_result(ids: NDArray[np.int64], scores: NDArray[np.float32], count: int) -> bytes:
    """A shard's answer as one byte string: ``(n, width, count)`` then the ids and the scores."""
    head = np.array([ids.shape[0], ids.shape[1], count], dtype="<i8")
    return head.tobytes() + ids.astype("<i8").tobytes() + scores.astype("<f4").tobytes()


def unpack_result(blob: bytes) -> tuple[NDArray[np.int64], NDArray[np.float32], int]:
    """The answer :func:`pack_result` packed."""
    n, w, count = (int(x) for x in np.frombuffer(blob, "<i8", 3))
    ids = np.frombuffer(blob, "<i8", n * w, 24).reshape(n, w).astype(np.int64)
    scores = np.frombuffer(blob, "<f4", n * w, 24 + 8 * n * w).reshape(n, w).astype(np.float32)
    return ids, scores, count


class ShardServer:
    """Serves one shard's file: the body of a Ray actor (one per replica) or of a local backend's shard.

    The constructor reads the manifest, checks the file's size and SHA-256 against it, and memory-maps it. A
    restarted actor runs the constructor again and so maps the file the manifest names *now*. When that fails
    (a corrupted, truncated or replaced file, a missing manifest), the server stays up and every call raises
    the :class:`IndexFormatError` (or ``OSError``) that the load raised, naming the shard, so the caller sees the
    cause instead of a dead actor.

    Parameters
    ----------
    out_dir
        The sharded index directory.
    shard
        Which shard.
    num_threads
        Worker threads of every search (default: the index's default).
    verify
        Check the SHA-256 of the file against the manifest (one extra read of the file).
    """

    def __init__(self, out_dir: str, shard: int, num_threads: int | None = None, verify: bool = True) -> None:
        self._dir = Path(out_dir)
        self._shard = shard
        self._num_threads = num_threads
        self._verify = verify
        self._lock = threading.Lock()  # updates one at a time (the local backend calls from several threads)
        self._index: InvertedIndex | None = None
        self._entry: ShardEntry | None = None
        self._error: OSError | None = None
        self.reload()

    def reload(self) -> None:
        """Load what the manifest names now: its base file by memory map, then its deltas replayed in order.

        A server already holding the same base and a prefix of the deltas (after an update, another replica's or
        its own) replays only the new ones.
        """
        try:
            shards = read_manifest(self._dir).shards
            if self._shard >= len(shards):
                raise IndexFormatError(f"{self._dir / MANIFEST_NAME}: no shard {self._shard}")
            entry = shards[self._shard]
            with self._lock:
                cur = self._entry if self._error is None else None
                if (
                    cur is not None
                    and self._index is not None
                    and cur.file == entry.file
                    and entry.deltas[: len(cur.deltas)] == cur.deltas
                ):
                    index, todo = self._index, entry.deltas[len(cur.deltas) :]
                else:
                    path = self._dir / entry.file
                    _check_file(path, entry.size, entry.sha256, self._verify)
                    index = InvertedIndex.load(path, mmap=True, mode=self._mode())
                    todo = entry.deltas
                for delta in todo:
                    try:
                        _apply_delta(self._dir, index, delta, self._verify)
                    except OSError:
                        raise
                    except SparsecoreError as exc:  # e.g. an unverified delta whose contents do not apply
                        raise IndexFormatError(f"{self._dir / delta.file}: {exc}") from exc
                self._index = index
                self._entry = entry
                self._error = None
        except OSError as exc:  # IndexFormatError is an OSError
            self._error = type(exc)(f"shard {self._shard}: {exc}") if isinstance(exc, IndexFormatError) else exc

    def _mode(self) -> Any:
        mode = read_manifest(self._dir).index_params.get("mode", "approx")
        return mode if mode in ("approx", "exact") else "approx"

    def _live(self) -> InvertedIndex:
        if self._error is not None:
            raise self._error
        assert self._index is not None
        return self._index

    def ping(self) -> dict[str, Any]:
        """``{"shard", "pid", "n_docs", "generation"}``; raises the load error of a shard that failed to load."""
        index = self._live()
        gen = self._entry.generation if self._entry else -1
        return {"shard": self._shard, "pid": os.getpid(), "n_docs": len(index), "generation": gen}

    def search(
        self, queries: QueryArrays, k: int, params: dict[str, Any]
    ) -> tuple[NDArray[np.int64], NDArray[np.float32], int]:
        """Top-``k`` of this shard for every query, and the shard's live document count."""
        index = self._live()
        indptr, indices, data, dim = queries
        q = SparseBatch.from_arrays(indptr, indices, data, dim, check=False)
        kw = dict(params)
        if self._num_threads is not None:
            kw.setdefault("num_threads", self._num_threads)
        ids, scores = index.search(q, k, **kw)
        return ids, scores, len(index)

    def search_packed(self, queries: QueryArrays | bytes, k: int, params: dict[str, Any]) -> bytes:
        """:meth:`search` with the answer packed by :func:`pack_result`: what the Ray backend calls.

        ``queries`` may be packed by :func:`pack_queries`.
        """
        q = unpack_queries(queries) if isinstance(queries, bytes) else queries
        return pack_result(*self.search(q, k, params))

    def add(self, docs: QueryArrays, ids: NDArray[np.int64]) -> ShardEntry:
        """Add documents, then write them as the next delta file, or as a new base when it is time to compact.

        Returns the shard's new manifest entry (the caller writes the manifest), which this server then holds.
        """
        with self._lock:
            index = self._live()
            indptr, indices, data, dim = docs
            index.add(SparseBatch.from_arrays(indptr, indices, data, dim, check=False), ids)
            arrays = {"indptr": indptr, "indices": indices, "data": data, "ids": ids}
            return self._write_update(index, "add", arrays, len(ids))

    def delete(self, ids: NDArray[np.int64]) -> tuple[int, ShardEntry | None]:
        """Delete ids (all present, checked by the caller's routing), then write them as the next delta file."""
        with self._lock:
            index = self._live()
            n = index.delete(ids, ignore_missing=True)
            return n, (self._write_update(index, "delete", {"ids": ids}, n) if n else None)

    def _write_update(self, index: InvertedIndex, op: str, arrays: dict[str, Any], n: int) -> ShardEntry:
        assert self._entry is not None
        cur = self._entry
        if cur.needs_compaction(n):
            entry = _entry(self._dir, self._shard, cur.generation + 1, index)
        else:
            entry = _with_delta(self._dir, self._shard, cur, index, op, arrays)
        self._entry = entry
        return entry

    def contains(self, ids: NDArray[np.int64]) -> NDArray[np.bool_]:
        """Which of ``ids`` are live in this shard."""
        index = self._live()
        return np.fromiter((int(i) in index for i in ids), dtype=np.bool_, count=len(ids))

    def stats(self) -> dict[str, Any]:
        """Documents, memory by component, file and generation, process id."""
        index = self._live()
        entry = self._entry
        return {
            "shard": self._shard,
            "n_docs": len(index),
            "n_segments": index.n_segments,
            "memory_bytes": int(sum(index.memory_usage().values())),
            "file": entry.file if entry else None,
            "file_bytes": (entry.size + sum(d.size for d in entry.deltas)) if entry else None,
            "n_deltas": len(entry.deltas) if entry else None,
            "generation": entry.generation if entry else None,
            "pid": os.getpid(),
        }
