"""The other anchors of the index benchmark (issue 29): bmp, pyterrier-pisa, kannolo, splade-index, one per process.

Each engine lives in its own virtualenv (``make anchor-venvs``), so this script runs under that venv's interpreter,
``python _anchor_worker.py ENGINE``, and speaks the protocol of ``_seismic_worker.py`` (whose ``serve`` loop and
``/proc/self/status`` reader it imports): one JSON request per line on stdin, one JSON reply per line on the original
stdout, arrays in ``.npz`` files named in the messages, and everything else the process prints on stderr.

Commands:

- ``hello``: engine, package version, Python and numpy versions;
- ``load`` (``path``): an npz with ``docs_indptr``/``docs_indices``/``docs_data``, ``queries_*`` and ``dim``, as the
  Seismic worker's exchange file, or a collection directory of ``_synthetic.generate_to_disk``;
- ``build`` (``name``, ``params``): build time (wall and process CPU), index bytes (``index_bytes`` with
  ``index_bytes_kind`` saying whether they are on disk or in memory), RSS growth and peak RSS growth over the RSS
  before the build (VmHWM is reset through ``/proc/self/clear_refs`` first where the kernel allows it);
- ``batch`` (``name``, ``k``, ``params``, ``threads``, ``out``): all queries in one call with the engine's own
  threading (``threads_used`` says what it could use); ``out`` gets ``ids`` (n_queries x k, -1 padded);
- ``single`` (``name``, ``k``, ``params``, ``out``, optional ``n``): one call per query (the first ``n``) on this
  thread, per-query wall times in ``lat_ns`` next to ``ids``;
- ``drop`` (``name``), ``quit``.

Engines and the calls used (public API unless said otherwise):

- ``bmp``: ``bmp.Indexer(path, bsize, compress_range)``, ``add_document(docno, {term: int})`` per document,
  ``finish()``; ``bmp.Searcher(path).search({term: int}, k, alpha, beta)``. Weights are u8: documents are scaled by
  ``255 / max weight`` (or ``scale``) and clipped to 1..255 (larger values wrap silently), queries scaled to a
  maximum of ``query_max`` (default 255; the searcher rescales larger ones itself). Query terms absent from the
  index are dropped (BMP panics on them, a ``PanicException`` that is no ``Exception``). ``alpha = beta = 1`` is
  BMP's safe mode, yet on the synthetic data about 1.5 % of its top-10 score below the exact k-th score over the
  same u8 weights. Search is single-threaded and holds the GIL, so ``batch`` is a loop on one thread; the build
  uses rayon (``RAYON_NUM_THREADS``) and needs ~11 KB of memory per document (120 nnz) before the searcher loads.
- ``pisa``: ``PisaIndex(path, stemmer="none", stops="none").toks_indexer(scale=...).index(docs)`` (a pure-Python
  inversion; ``{"route": "collection"}`` writes the same files with numpy, all in memory, and the private
  ``_pisathon.build_binlex``; identical index and results), then ``PisaRetrieve(index, "quantized", ...)``, whose
  constructor compiles the index (wand data + ``block_simdbp`` compression), timed as part of the build. Searches
  call the private ``pyterrier_pisa._pisathon.retrieve`` that ``PisaRetrieve.transform`` wraps, with the
  retriever's context, to skip the pandas layer (``params={"api": "transformer"}`` makes ``single`` time
  ``transform`` on a one-row DataFrame instead). Query weights become ``floor(weight * toks_scale)`` repeats of the
  term. Exact (safe) over the quantised impacts for every ``query_algorithm``. No Java is started.
- ``kannolo``: ``kannolo.SparsePlainHNSW.build_from_arrays(components, values, offsets, m, ef_construction)`` (or
  ``SparseFlatIndex``, exhaustive, with ``{"kind": "flat"}``); ``search(components, values, k, ef_search)`` and
  ``batch_search(..., offsets, k, ef_search, num_threads)``. Build threads come from ``RAYON_NUM_THREADS``. The
  graph stores values in 16 bits (scores differ from float32 in the 4th digit); no exact mode besides the flat index.
- ``splade-index``: it builds only from text with a sentence-transformers model, so the worker writes the index it
  would save (``csc.index.npz`` with data/indices/indptr/document_ids, ``params.index.json``) from the CSR arrays and
  opens it with ``SPLADE.load(dir, model, mmap=..., load_corpus=False, load_vocab=False)``; search is the public
  ``SPLADE.retrieve(queries, k, return_as="doc_ids", n_threads, backend_selection="numba")`` with a stand-in
  ``model`` whose ``encode_query`` hands over the query vectors. Exact, float32.

This file uses numpy and the standard library only, besides the engine itself.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import json
import os
import platform
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _seismic_worker import _proc_status_kb, load_exchange, serve

I64 = NDArray[np.int64]
F32 = NDArray[np.float32]


def _eprint(msg: str) -> None:
    print(f"[anchor-worker] {msg}", file=sys.stderr, flush=True)


def _reset_peak_rss() -> bool:
    """Set VmHWM back to the current RSS (``5`` into /proc/self/clear_refs, Linux >= 4.0); False where refused."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def _dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


class Data:
    """The documents and queries of one ``load``, as CSR arrays."""

    def __init__(self, path: str) -> None:
        (d_indptr, d_indices, d_data), (q_indptr, q_indices, q_data), self.dim = load_exchange(path)
        # copy=False: the exchange file's own dtypes (int64 / int32 / float32) pass through without a second copy
        # (a collection directory's uint32 term ids are converted once).
        self.d_indptr = np.asarray(d_indptr).astype(np.int64, copy=False)
        self.d_indices = np.asarray(d_indices).astype(np.int32, copy=False)
        self.d_data = np.asarray(d_data).astype(np.float32, copy=False)
        self.q_indptr = np.asarray(q_indptr).astype(np.int64, copy=False)
        self.q_indices = np.asarray(q_indices).astype(np.int32, copy=False)
        self.q_data = np.asarray(q_data).astype(np.float32, copy=False)
        self.n_docs = len(self.d_indptr) - 1
        self.n_queries = len(self.q_indptr) - 1

    def query(self, i: int) -> tuple[NDArray[np.int32], F32]:
        s, e = int(self.q_indptr[i]), int(self.q_indptr[i + 1])
        return self.q_indices[s:e], self.q_data[s:e]

    def doc_rows(self, data: NDArray[Any]) -> Iterator[tuple[list[int], list[Any]]]:
        """Every document as (term ids, values) lists, values taken from ``data`` (the weights or a quantisation)."""
        ptr = self.d_indptr.tolist()
        for i in range(self.n_docs):
            s, e = ptr[i], ptr[i + 1]
            yield self.d_indices[s:e].tolist(), data[s:e].tolist()


class Engine:
    """One engine's build and search calls; ``build`` returns the index object and what to report about it."""

    package = ""

    def __init__(self, data: Data, workdir: Path) -> None:
        self.data = data
        self.workdir = workdir
        self.terms = [str(t) for t in range(data.dim)]

    def build(self, name: str, params: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
        raise NotImplementedError

    def one(self, index: Any, i: int, k: int, params: dict[str, Any]) -> list[int]:
        raise NotImplementedError

    def batch(self, index: Any, k: int, params: dict[str, Any], threads: int) -> tuple[I64, int]:
        """All queries: (ids, threads used). The default is the single-query loop on this thread."""
        return _rows(self.one(index, i, k, params) for i in range(self.data.n_queries)), 1

    def close(self, index: Any) -> None:
        """Release what ``build`` left on disk (the index object itself is dropped by the worker)."""


def _rows(rows: Iterator[list[int]] | list[list[int]], k: int = 0) -> I64:
    rows = list(rows)
    width = k or max((len(r) for r in rows), default=0)
    ids = np.full((len(rows), width), -1, dtype=np.int64)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = r[:width]
    return ids


def _quantise(values: F32, scale: float, hi: int) -> NDArray[np.int64]:
    out: NDArray[np.int64] = np.clip(np.rint(values * scale), 1, hi).astype(np.int64)
    return out


# ---------------------------------------------------------------------------------------------------------------
# bmp
# ---------------------------------------------------------------------------------------------------------------


class Bmp(Engine):
    package = "bmp"

    def __init__(self, data: Data, workdir: Path) -> None:
        super().__init__(data, workdir)
        self.bmp: Any = importlib.import_module("bmp")
        self.present = np.zeros(data.dim, dtype=bool)
        self.present[data.d_indices] = True

    def _queries(self, query_max: int) -> list[dict[str, int]]:
        """Queries as {term: weight}, scaled so the heaviest term is ``query_max``; terms no document has left out."""
        out: list[dict[str, int]] = []
        for i in range(self.data.n_queries):
            idx, val = self.data.query(i)
            keep = self.present[idx]
            idx, val = idx[keep], val[keep]
            q = _quantise(val, query_max / float(val.max()), query_max) if len(val) else val.astype(np.int64)
            out.append(dict(zip(map(self.terms.__getitem__, idx.tolist()), q.tolist(), strict=True)))
        return out

    def build(self, name: str, params: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
        bsize = int(params.get("bsize", 32))
        scale = float(params.get("scale") or 255.0 / float(self.data.d_data.max()))
        query_max = int(params.get("query_max", 255))
        path = self.workdir / f"{name}.bmp"
        path.unlink(missing_ok=True)
        quant = _quantise(self.data.d_data, scale, 255)
        indexer = self.bmp.Indexer(str(path), bsize=bsize, compress_range=bool(params.get("compress_range", False)))
        terms = self.terms
        for doc, (idx, val) in enumerate(self.data.doc_rows(quant)):
            indexer.add_document(str(doc), dict(zip(map(terms.__getitem__, idx), val, strict=True)))
        indexer.finish()
        finish_rss, finish_hwm = _proc_status_kb("VmRSS") * 1024, _proc_status_kb("VmHWM") * 1024
        t0 = time.perf_counter()
        searcher = self.bmp.Searcher(str(path))
        load_s = time.perf_counter() - t0
        info = {
            "rss_after_finish_bytes": finish_rss,  # the indexer's peak, before the searcher loads the file
            "hwm_after_finish_bytes": finish_hwm,
            "index_bytes": path.stat().st_size,
            "index_bytes_kind": "file on disk; Searcher reads all of it into memory",
            "searcher_load_s": load_s,
            "doc_scale": scale,
            "query_max": query_max,
            "clipped_fraction": float(np.mean(self.data.d_data * scale > 255.5)),
            "raised_to_1_fraction": float(np.mean(self.data.d_data * scale < 0.5)),
        }
        return (searcher, path, self._queries(query_max)), info

    def one(self, index: Any, i: int, k: int, params: dict[str, Any]) -> list[int]:
        q = index[2][i]
        if not q:
            return []
        docnos, _ = index[0].search(q, k=k, alpha=float(params.get("alpha", 1.0)), beta=float(params.get("beta", 1.0)))
        return [int(d) for d in docnos]

    def close(self, index: Any) -> None:
        index[1].unlink(missing_ok=True)


# ---------------------------------------------------------------------------------------------------------------
# pyterrier-pisa
# ---------------------------------------------------------------------------------------------------------------


class Pisa(Engine):
    package = "pyterrier-pisa"

    def __init__(self, data: Data, workdir: Path) -> None:
        super().__init__(data, workdir)
        self.pp: Any = importlib.import_module("pyterrier_pisa")
        self.pisathon: Any = importlib.import_module("pyterrier_pisa._pisathon")
        self.pd: Any = importlib.import_module("pandas")
        self.q_dicts: list[dict[str, float]] = []
        for i in range(data.n_queries):
            idx, val = data.query(i)
            self.q_dicts.append(dict(zip(map(self.terms.__getitem__, idx.tolist()), val.tolist(), strict=True)))

    def _docs(self) -> Iterator[dict[str, Any]]:
        terms = self.terms
        for doc, (idx, val) in enumerate(self.data.doc_rows(self.data.d_data)):
            yield {"docno": str(doc), "toks": dict(zip(map(terms.__getitem__, idx), val, strict=True))}

    def build(self, name: str, params: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
        import shutil

        path = self.workdir / f"{name}.pisa"
        shutil.rmtree(path, ignore_errors=True)
        scale = float(params.get("scale", 100.0))
        toks_scale = float(params.get("toks_scale", scale))
        route = str(params.get("route", "toks_indexer"))
        t0 = time.perf_counter()
        index = self.pp.PisaIndex(str(path), stemmer="none", stops="none")
        if route == "collection":
            self._write_collection(path, scale)
        else:
            index.toks_indexer(scale=scale).index(self._docs())
        index_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        extra = {"block_size": int(params["block_size"])} if "block_size" in params else {}
        retr = self.pp.PisaRetrieve(index, "quantized", num_results=10, threads=1, toks_scale=toks_scale, **extra)
        compile_s = time.perf_counter() - t0
        # Queries as PISA gets them from PisaRetrieve.transform: weights times toks_scale (floored to repeats there).
        queries = [(i, {t: v * toks_scale for t, v in q.items()}) for i, q in enumerate(self.q_dicts)]
        served = [
            p for p in path.iterdir() if p.name.startswith("quantized.") or p.name in ("fwd.doclex", "fwd.termlex")
        ]
        info = {
            "index_bytes": sum(p.stat().st_size for p in served),
            "index_bytes_kind": "files on disk (compressed index, block-max data, lexicons), memory-mapped",
            "dir_bytes": _dir_bytes(path),
            "files": sorted(p.name for p in served),
            "route": route,
            "inversion_s": index_s,
            "compile_s": compile_s,
            "java_started": _java_started(),
        }
        return {"retr": retr, "queries": queries, "path": path}, info

    def _write_collection(self, path: Path, scale: float) -> None:
        """What ``toks_indexer`` leaves on disk, written with numpy instead of a per-posting Python loop.

        PISA's binary collection: ``inv.docs`` = ``[1, n_docs]`` then ``[len, doc ids...]`` per term, ``inv.freqs`` =
        ``[len, impacts...]`` per term, ``inv.sizes`` = ``[n_docs, doc lengths...]`` (all u32), terms in the
        lexicographic order of their strings (``fwd.terms``), impacts ``floor(weight * scale)`` with zeros dropped,
        as the toks indexer does; then the binary lexicons (``_pisathon.build_binlex``) and ``pt_meta.json``.
        """
        d = self.data
        path.mkdir(parents=True, exist_ok=True)
        impact = np.floor(d.d_data.astype(np.float64) * scale).astype(np.uint32)  # int(weight * scale) per posting
        doc_of = np.repeat(np.arange(d.n_docs, dtype=np.uint32), np.diff(d.d_indptr))
        keep = impact > 0
        terms, docs, impact = d.d_indices[keep], doc_of[keep], impact[keep]
        present = np.flatnonzero(np.bincount(terms, minlength=d.dim))
        names = sorted(self.terms[t] for t in present)
        rank = np.zeros(d.dim, dtype=np.int64)
        rank[[int(n) for n in names]] = np.arange(len(names))
        order = np.lexsort((docs, rank[terms]))
        counts = np.bincount(rank[terms], minlength=len(names)).astype(np.uint32)
        heads = np.concatenate(([0], np.cumsum(counts[:-1], dtype=np.int64))) + np.arange(len(names))
        body = np.ones(len(order) + len(names), dtype=bool)
        body[heads] = False
        for fname, values, first in (
            ("inv.docs", docs[order], np.array([1, d.n_docs], dtype=np.uint32)),
            ("inv.freqs", impact[order], np.zeros(0, dtype=np.uint32)),
        ):
            out = np.empty(len(body), dtype=np.uint32)
            out[heads] = counts
            out[body] = values
            (path / fname).write_bytes(first.tobytes() + out.tobytes())
        lengths = np.bincount(docs, weights=impact, minlength=d.n_docs).astype(np.uint32)
        (path / "inv.sizes").write_bytes(np.concatenate(([d.n_docs], lengths)).astype(np.uint32).tobytes())
        (path / "fwd.terms").write_text("".join(n + "\n" for n in names))
        (path / "fwd.documents").write_text("".join(f"{i}\n" for i in range(d.n_docs)))
        self.pisathon.build_binlex(str(path / "fwd.documents"), str(path / "fwd.doclex"))
        self.pisathon.build_binlex(str(path / "fwd.terms"), str(path / "fwd.termlex"))
        meta = {"type": "sparse_index", "format": "pisa", "package_hint": "pyterrier-pisa", "stemmer": "none"}
        (path / "pt_meta.json").write_text(json.dumps(meta))

    def _retrieve(self, h: dict[str, Any], queries: list[Any], k: int, algo: str, threads: int) -> list[list[int]]:
        n = len(queries) * k
        qidx = np.empty(n, dtype=np.int32)
        docnos = np.empty(n, dtype=object)
        ranks = np.empty(n, dtype=np.int32)
        scores = np.empty(n, dtype=np.float32)
        size = self.pisathon.retrieve(
            h["retr"]._ctxt,
            algo,
            queries,
            k=k,
            threads=threads,
            query_weighted=1,
            pretokenised=True,
            result_qidxs=qidx,
            result_docnos=docnos,
            result_ranks=ranks,
            result_scores=scores,
        )
        out: list[list[int]] = [[] for _ in queries]
        first = queries[0][0] if queries else 0
        for j in range(size):
            out[int(qidx[j]) - first].append(int(docnos[j]))
        return out

    def one(self, index: Any, i: int, k: int, params: dict[str, Any]) -> list[int]:
        algo = str(params.get("query_algorithm", "block_max_maxscore"))
        if params.get("api") == "transformer":
            retr = index["retr"]
            retr.num_results, retr.query_algorithm = k, self.pp.PisaQueryAlgorithm(algo)
            frame = self.pd.DataFrame({"qid": [str(i)], "query_toks": [self.q_dicts[i]]})
            return [int(d) for d in retr.transform(frame)["docno"]]
        return self._retrieve(index, [index["queries"][i]], k, algo, 1)[0]

    def batch(self, index: Any, k: int, params: dict[str, Any], threads: int) -> tuple[I64, int]:
        algo = str(params.get("query_algorithm", "block_max_maxscore"))
        return _rows(self._retrieve(index, index["queries"], k, algo, threads), k), threads

    def close(self, index: Any) -> None:
        import shutil

        shutil.rmtree(index["path"], ignore_errors=True)


def _java_started() -> bool | None:
    """Whether PyTerrier started a JVM in this process (None when pyterrier cannot say)."""
    pt: Any = sys.modules.get("pyterrier")
    try:
        return bool(pt.java.started()) if pt is not None else False
    except AttributeError:
        return "jnius" in sys.modules or None


# ---------------------------------------------------------------------------------------------------------------
# kannolo
# ---------------------------------------------------------------------------------------------------------------


class Kannolo(Engine):
    package = "kannolo"

    def __init__(self, data: Data, workdir: Path) -> None:
        super().__init__(data, workdir)
        self.kannolo: Any = importlib.import_module("kannolo")

    def build(self, name: str, params: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
        d = self.data
        if params.get("kind", "hnsw") == "flat":
            index = self.kannolo.SparseFlatIndex.build_from_arrays(d.d_indices, d.d_data, d.d_indptr)
            return (index, False), {"index_bytes": int(d.d_indices.nbytes + d.d_data.nbytes + d.d_indptr.nbytes)}
        index = self.kannolo.SparsePlainHNSW.build_from_arrays(
            d.d_indices,
            d.d_data,
            d.d_indptr,
            m=int(params.get("m", 32)),
            ef_construction=int(params.get("ef_construction", 200)),
        )
        info = {"index_bytes": int(index.space_usage_bytes()), "index_bytes_kind": "in memory (space_usage_bytes)"}
        return (index, True), info

    def _search_kw(self, index: Any, params: dict[str, Any]) -> dict[str, Any]:
        return {"ef_search": int(params.get("ef_search", 100))} if index[1] else {}

    def one(self, index: Any, i: int, k: int, params: dict[str, Any]) -> list[int]:
        idx, val = self.data.query(i)
        _, ids = index[0].search(idx, val, k, **self._search_kw(index, params))
        return [int(x) for x in ids]

    def batch(self, index: Any, k: int, params: dict[str, Any], threads: int) -> tuple[I64, int]:
        d = self.data
        _, ids = index[0].batch_search(
            d.q_indices, d.q_data, d.q_indptr, k, num_threads=threads, **self._search_kw(index, params)
        )
        return np.asarray(ids, dtype=np.int64).reshape(d.n_queries, k), threads


# ---------------------------------------------------------------------------------------------------------------
# splade-index
# ---------------------------------------------------------------------------------------------------------------


class _Arr:
    """Stands in for a torch tensor where splade-index calls ``.numpy()``."""

    def __init__(self, a: NDArray[Any]) -> None:
        self.a = a

    def numpy(self) -> NDArray[Any]:
        return self.a


class _SparseQuery:
    """Stands in for a sentence-transformers sparse query embedding (``coalesce().indices()[0]``, ``values()``)."""

    def __init__(self, idx: NDArray[np.int32], val: F32) -> None:
        self.idx, self.val = idx, val

    def coalesce(self) -> _SparseQuery:
        return self

    def indices(self) -> list[_Arr]:
        return [_Arr(self.idx)]

    def values(self) -> _Arr:
        return _Arr(self.val)


class _QueryModel:
    """The ``model`` splade-index asks to encode queries: here a "query" is its row number in the loaded queries."""

    def __init__(self, data: Data) -> None:
        self.rows = [_SparseQuery(*data.query(i)) for i in range(data.n_queries)]

    def encode_query(self, queries: list[int], **_kw: Any) -> list[_SparseQuery]:
        return [self.rows[i] for i in queries]


class SpladeIndex(Engine):
    package = "splade-index"

    def __init__(self, data: Data, workdir: Path) -> None:
        super().__init__(data, workdir)
        self.si: Any = importlib.import_module("splade_index")
        self.model = _QueryModel(data)

    def build(self, name: str, params: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
        import shutil

        d = self.data
        path = self.workdir / f"{name}.splade"
        shutil.rmtree(path, ignore_errors=True)
        path.mkdir(parents=True)
        # The CSC (term-major) matrix splade-index keeps: per term, the documents holding it and their weights.
        order = np.argsort(d.d_indices, kind="stable")
        doc_of = np.repeat(np.arange(d.n_docs, dtype=np.int32), np.diff(d.d_indptr))
        indptr = np.zeros(d.dim + 1, dtype=np.int32)
        np.cumsum(np.bincount(d.d_indices, minlength=d.dim), out=indptr[1:])
        np.savez(
            path / "csc.index.npz",
            data=d.d_data[order],
            indices=doc_of[order],
            indptr=indptr,
            document_ids=np.arange(d.n_docs),
        )
        meta = {"dtype": "float32", "int_dtype": "int32", "num_docs": d.n_docs, "version": self.si.__version__}
        (path / "params.index.json").write_text(json.dumps({**meta, "backend": "numba"}))
        t0 = time.perf_counter()
        mmap = bool(params.get("mmap", True))
        index = self.si.SPLADE.load(str(path), self.model, mmap=mmap, load_corpus=False, load_vocab=False)
        load_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        self._retrieve(index, [0], 10, 1)  # numba compiles here, not in the first timed query
        scores = index.scores
        info = {
            "index_bytes": int(sum(scores[key].nbytes for key in ("data", "indices", "indptr"))),
            "index_bytes_kind": f"arrays ({'memory-mapped from disk' if mmap else 'in memory'})",
            "dir_bytes": _dir_bytes(path),
            "load_s": load_s,
            "jit_s": time.perf_counter() - t0,
        }
        return (index, path), info

    def _retrieve(self, splade: Any, queries: list[int], k: int, threads: int) -> I64:
        ids = splade.retrieve(
            queries, k=k, return_as="doc_ids", show_progress=False, n_threads=threads, backend_selection="numba"
        )
        return np.asarray(ids, dtype=np.int64).reshape(len(queries), k)

    def one(self, index: Any, i: int, k: int, params: dict[str, Any]) -> list[int]:
        return [int(x) for x in self._retrieve(index[0], [i], k, 1)[0]]

    def batch(self, index: Any, k: int, params: dict[str, Any], threads: int) -> tuple[I64, int]:
        return self._retrieve(index[0], list(range(self.data.n_queries)), k, threads), threads

    def close(self, index: Any) -> None:
        import shutil

        shutil.rmtree(index[1], ignore_errors=True)


ENGINES: dict[str, type[Engine]] = {"bmp": Bmp, "pisa": Pisa, "kannolo": Kannolo, "splade-index": SpladeIndex}


# ---------------------------------------------------------------------------------------------------------------
# The protocol's commands
# ---------------------------------------------------------------------------------------------------------------


class Worker:
    def __init__(self, engine: str, workdir: Path) -> None:
        self.engine_name = engine
        self.engine_cls = ENGINES[engine]
        self.workdir = workdir
        self.engine: Engine | None = None
        self.indexes: dict[str, Any] = {}

    def handlers(self) -> dict[str, Callable[[dict[str, Any]], dict[str, Any]]]:
        return {
            "hello": self.hello,
            "load": self.load,
            "build": self.build,
            "batch": self.batch,
            "single": self.single,
            "drop": self.drop,
        }

    def hello(self, _req: dict[str, Any]) -> dict[str, Any]:
        return {
            "engine": self.engine_name,
            "package": self.engine_cls.package,
            "version": importlib.metadata.version(self.engine_cls.package),
            "python": platform.python_version(),
            "numpy": np.__version__,
            "rayon_num_threads": os.environ.get("RAYON_NUM_THREADS"),
        }

    def _engine(self) -> Engine:
        if self.engine is None:
            raise RuntimeError("no data loaded")
        return self.engine

    def load(self, req: dict[str, Any]) -> dict[str, Any]:
        for name in list(self.indexes):
            self.drop({"name": name})
        t0 = time.perf_counter()
        data = Data(str(req["path"]))
        self.engine = self.engine_cls(data, self.workdir)
        return {
            "n_docs": data.n_docs,
            "n_queries": data.n_queries,
            "nnz": len(data.d_indices),
            "load_s": time.perf_counter() - t0,
        }

    def build(self, req: dict[str, Any]) -> dict[str, Any]:
        engine = self._engine()
        name = str(req["name"])
        self.drop({"name": name})
        reset = _reset_peak_rss()
        rss0, hwm0 = _proc_status_kb("VmRSS"), _proc_status_kb("VmHWM")
        c0, t0 = time.process_time(), time.perf_counter()
        index, info = engine.build(name, dict(req.get("params") or {}))
        build_s = time.perf_counter() - t0
        build_cpu_s = time.process_time() - c0
        rss1, hwm1 = _proc_status_kb("VmRSS"), _proc_status_kb("VmHWM")
        self.indexes[name] = index
        n = engine.data.n_docs
        return {
            "build_s": build_s,
            "build_cpu_s": build_cpu_s,
            "rss_delta_bytes": (rss1 - rss0) * 1024,
            "peak_rss_delta_bytes": (hwm1 - rss0) * 1024,
            "peak_rss_reset": reset,
            "rss_before_bytes": rss0 * 1024,
            "hwm_before_bytes": hwm0 * 1024,
            "index_bytes_per_doc": info["index_bytes"] / n if info.get("index_bytes") else None,
            **info,
        }

    def _args(self, req: dict[str, Any]) -> tuple[Engine, Any, int, dict[str, Any]]:
        return self._engine(), self.indexes[str(req["name"])], int(req["k"]), dict(req.get("params") or {})

    def batch(self, req: dict[str, Any]) -> dict[str, Any]:
        engine, index, k, params = self._args(req)
        c0, t0 = time.process_time(), time.perf_counter()
        ids, used = engine.batch(index, k, params, int(req.get("threads", 1)))
        wall = time.perf_counter() - t0
        cpu = time.process_time() - c0
        np.savez(req["out"], ids=ids)
        return {"wall_s": wall, "cpu_s": cpu, "threads_used": used}

    def single(self, req: dict[str, Any]) -> dict[str, Any]:
        engine, index, k, params = self._args(req)
        nq = min(engine.data.n_queries, int(req.get("n") or engine.data.n_queries))  # the first n queries
        lat = np.empty(nq, dtype=np.int64)
        rows: list[list[int]] = []
        one = engine.one
        one(index, 0, k, params)  # warm-up
        c0, t_all = time.process_time(), time.perf_counter()
        for i in range(nq):
            t0 = time.perf_counter_ns()
            r = one(index, i, k, params)
            lat[i] = time.perf_counter_ns() - t0
            rows.append(r)
        wall = time.perf_counter() - t_all
        cpu = time.process_time() - c0
        np.savez(req["out"], ids=_rows(rows, k), lat_ns=lat)
        return {"wall_s": wall, "cpu_s": cpu}

    def drop(self, req: dict[str, Any]) -> dict[str, Any]:
        index = self.indexes.pop(str(req["name"]), None)
        if index is not None and self.engine is not None:
            self.engine.close(index)
        return {}


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[1] not in ENGINES:
        print(f"usage: {argv[0]} {{{','.join(ENGINES)}}}", file=sys.stderr)
        return 2
    import tempfile

    if "RAYON_NUM_THREADS" not in os.environ and argv[1] in ("bmp", "kannolo"):
        _eprint("warning: RAYON_NUM_THREADS is not set; the build will use one thread per core")
    proto = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # from here on, anything written to fd 1 (native prints, progress bars) lands on stderr
    with tempfile.TemporaryDirectory(prefix=f"anchor-{argv[1]}-", dir=os.environ.get("ANCHOR_WORKDIR")) as tmp:
        worker = Worker(argv[1], Path(tmp))
        serve(proto, worker.handlers())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
