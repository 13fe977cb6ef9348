"""Seismic side of ``benches/bench_index.py``, run by the Python of a separate virtualenv holding pyseismic-lsr.

Seismic (PyPI ``pyseismic-lsr==0.5.4``) lives outside the project virtualenv so it can never leak into CI, and its
thread count can only be set through ``RAYON_NUM_THREADS`` before its first parallel call (its ``num_threads``
arguments build a rayon pool and drop it; everything runs on the global pool). So ``bench_index.py`` starts this
script once per data set as a long-lived subprocess, with ``RAYON_NUM_THREADS`` in its environment, and drives it:

- requests: one JSON object per line on stdin, ``{"cmd": ..., ...}``;
- replies: one JSON object per line on the *original* stdout, ``{"ok": true, ...}`` or ``{"ok": false, "error"}``;
- arrays (documents, queries, result ids, per-query latencies) travel as ``.npz`` files named in the messages.

Everything else this process prints (Seismic's Rust ``println!`` build log, Python prints) goes to stderr, because
fd 1 is pointed at fd 2 once the protocol has its own copy of the original stdout.

Commands: ``hello``; ``load`` (path of an npz with ``docs_*``/``queries_*`` CSR arrays and ``dim``); ``build``
(name, params for ``SeismicIndex.build_from_dataset``); ``batch`` (name, k, query_cut, heap_factor, out): one
``batch_search`` over all queries, results put back in query order; ``single`` (same, one ``search`` call per
query, per-query wall times); ``drop`` (name); ``quit``.

This file uses numpy and the standard library only (it runs under the Seismic virtualenv's interpreter).
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.metadata
import json
import os
import platform
import re
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TextIO

import numpy as np
from numpy.typing import NDArray

_SPACE_LINE = re.compile(r"^\s*(?:[├└]─\s*)?([A-Za-z_ ]+):\s*(\d+)\s*Bytes", re.MULTILINE)


#: Documents handed to Seismic per ``add_documents_by_id`` call.
ADD_CHUNK = 500_000

Arrays = tuple[NDArray[Any], NDArray[Any], NDArray[Any]]


def load_exchange(path: str) -> tuple[Arrays, Arrays, int]:
    """Documents (CSR), queries (CSR) and ``dim`` of an exchange ``.npz`` (``docs_*``, ``queries_*``, ``dim``) or
    of a collection directory (``docs_indptr.npy`` / ``docs_indices.npy`` / ``docs_data.npy``, memory-mapped, with
    ``queries.npz`` and ``params.json``, as ``_synthetic.generate_to_disk`` writes it)."""
    p = Path(path)
    if p.is_dir():
        dim = int(json.loads((p / "params.json").read_text())["dim"])
        docs = tuple(np.load(p / f"docs_{f}.npy", mmap_mode="r") for f in ("indptr", "indices", "data"))
        with np.load(p / "queries.npz") as z:
            queries = (z["indptr"], z["indices"], z["data"])
        return (docs[0], docs[1], docs[2]), queries, dim
    with np.load(p) as z:
        dim = int(z["dim"])
        docs = (z["docs_indptr"], z["docs_indices"], z["docs_data"])
        queries = (z["queries_indptr"], z["queries_indices"], z["queries_data"])
    return docs, queries, dim


def _eprint(msg: str) -> None:
    print(f"[seismic-worker] {msg}", file=sys.stderr, flush=True)


def _proc_status_kb(key: str) -> int:
    """A ``kB`` field of /proc/self/status (VmRSS, VmHWM), 0 where there is none."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        return 0
    return 0


@contextlib.contextmanager
def _capture_fd1() -> Iterator[list[str]]:
    """Capture what native code writes to fd 1 inside the block (Rust ``println!`` bypasses ``sys.stdout``)."""
    out: list[str] = []
    sys.stdout.flush()
    with tempfile.TemporaryFile(mode="w+b") as tmp:
        saved = os.dup(1)
        os.dup2(tmp.fileno(), 1)
        try:
            yield out
        finally:
            sys.stdout.flush()
            os.dup2(saved, 1)
            os.close(saved)
            tmp.seek(0)
            out.append(tmp.read().decode("utf-8", "replace"))


def _parse_space_usage(text: str) -> dict[str, int]:
    """``print_space_usage_byte`` lines -> ``{"forward_index": ..., "summaries": ..., "total": ...}``."""
    return {m.group(1).strip().lower().replace(" ", "_"): int(m.group(2)) for m in _SPACE_LINE.finditer(text)}


class Worker:
    def __init__(self) -> None:
        self.seismic: Any = importlib.import_module("seismic")
        self.string_type: Any = self.seismic.get_seismic_string()
        self.dataset: Any = None
        self.indexes: dict[str, Any] = {}
        self.query_ids: Any = None
        self.components: list[Any] = []
        self.values: list[NDArray[np.float32]] = []
        self.n_docs = 0

    # -- commands ------------------------------------------------------------------------------------------------

    def hello(self, _req: dict[str, Any]) -> dict[str, Any]:
        return {
            "python": platform.python_version(),
            "numpy": np.__version__,
            "pyseismic_lsr": importlib.metadata.version("pyseismic-lsr"),
            "rayon_num_threads": os.environ.get("RAYON_NUM_THREADS"),
            "string_type": str(self.string_type),
        }

    def load(self, req: dict[str, Any]) -> dict[str, Any]:
        self.indexes.clear()
        self.dataset = None
        (d_indptr, d_indices, d_data), (q_indptr, q_indices, q_data), dim = load_exchange(req["path"])
        self.n_docs = len(d_indptr) - 1
        t0 = time.perf_counter()
        ds = self.seismic.SeismicDataset(dim=dim)
        # Component ids are used as they are; queries address component 42 as the string "42". Documents go in
        # chunks, so a memory-mapped collection is never copied whole (Seismic wants int64 components).
        added = 0
        for lo in range(0, self.n_docs, ADD_CHUNK):
            hi = min(lo + ADD_CHUNK, self.n_docs)
            a, b = int(d_indptr[lo]), int(d_indptr[hi])
            added += ds.add_documents_by_id(
                [str(i) for i in range(lo, hi)],
                np.asarray(d_indices[a:b], dtype=np.int64),
                np.asarray(d_data[a:b], dtype=np.float32),
                np.asarray(d_indptr[lo : hi + 1], dtype=np.int64) - a,
            )
        load_s = time.perf_counter() - t0
        if added != self.n_docs:
            raise ValueError(f"Seismic kept {added} of {self.n_docs} documents (empty rows are skipped)")
        self.dataset = ds
        nq = len(q_indptr) - 1
        self.query_ids = np.array([str(i) for i in range(nq)], dtype=self.string_type)
        self.components = [
            q_indices[q_indptr[i] : q_indptr[i + 1]].astype(str).astype(self.string_type) for i in range(nq)
        ]
        self.values = [np.ascontiguousarray(q_data[q_indptr[i] : q_indptr[i + 1]]) for i in range(nq)]
        return {"n_docs": self.n_docs, "n_queries": nq, "nnz": len(d_indices), "dataset_load_s": load_s}

    def build(self, req: dict[str, Any]) -> dict[str, Any]:
        name = str(req["name"])
        params: dict[str, Any] = dict(req["params"])
        self.indexes.pop(name, None)
        rss0, hwm0 = _proc_status_kb("VmRSS"), _proc_status_kb("VmHWM")
        c0, t0 = time.process_time(), time.perf_counter()
        index = self.seismic.SeismicIndex.build_from_dataset(self.dataset, **params)
        build_s = time.perf_counter() - t0
        build_cpu_s = time.process_time() - c0
        rss1, hwm1 = _proc_status_kb("VmRSS"), _proc_status_kb("VmHWM")
        with _capture_fd1() as captured:
            index.print_space_usage_byte()
        space = _parse_space_usage("".join(captured))
        self.indexes[name] = index
        return {
            "build_s": build_s,
            "build_cpu_s": build_cpu_s,
            "space_usage": space,
            "index_bytes": space.get("total"),
            "rss_delta_bytes": (rss1 - rss0) * 1024,
            "peak_rss_delta_bytes": (hwm1 - hwm0) * 1024,
            "len": int(index.len),
            "nnz": int(index.nnz),
        }

    def _search_args(self, req: dict[str, Any]) -> tuple[Any, int, int, float]:
        return self.indexes[str(req["name"])], int(req["k"]), int(req["query_cut"]), float(req["heap_factor"])

    def _to_arrays(self, results: list[Any], k: int) -> tuple[NDArray[np.int64], NDArray[np.float32]]:
        ids = np.full((len(results), k), -1, dtype=np.int64)
        scores = np.full((len(results), k), -np.inf, dtype=np.float32)
        for row, res in enumerate(results):
            for j, (_qid, score, doc) in enumerate(res[:k]):
                ids[row, j] = int(doc)
                scores[row, j] = score
        return ids, scores

    def batch(self, req: dict[str, Any]) -> dict[str, Any]:
        index, k, query_cut, heap_factor = self._search_args(req)
        c0, t0 = time.process_time(), time.perf_counter()
        results = index.batch_search(
            self.query_ids, self.components, self.values, k=k, query_cut=query_cut, heap_factor=heap_factor
        )
        wall = time.perf_counter() - t0
        cpu = time.process_time() - c0
        # batch_search returns the queries in whatever order its threads finished (rayon par_bridge): put them back
        # by the query id carried in every hit; queries with no hit at all take the remaining rows (all empty).
        nq = len(self.components)
        ordered: list[Any] = [[] for _ in range(nq)]
        for res in results:
            if res:
                ordered[int(res[0][0])] = res
        ids, scores = self._to_arrays(ordered, k)
        np.savez(req["out"], ids=ids, scores=scores)
        return {"wall_s": wall, "cpu_s": cpu, "in_order": [int(r[0][0]) for r in results if r] == list(range(nq))}

    def single(self, req: dict[str, Any]) -> dict[str, Any]:
        index, k, query_cut, heap_factor = self._search_args(req)
        nq = min(len(self.components), int(req.get("n") or len(self.components)))  # the first n queries
        lat = np.empty(nq, dtype=np.int64)
        results: list[Any] = []
        search = index.search
        comps, vals, qids = self.components, self.values, [str(i) for i in range(nq)]
        search(qids[0], comps[0], vals[0], k=k, query_cut=query_cut, heap_factor=heap_factor)  # warm-up
        c0, t_all = time.process_time(), time.perf_counter()
        for i in range(nq):
            t0 = time.perf_counter_ns()
            res = search(qids[i], comps[i], vals[i], k=k, query_cut=query_cut, heap_factor=heap_factor)
            lat[i] = time.perf_counter_ns() - t0
            results.append(res)
        wall = time.perf_counter() - t_all
        cpu = time.process_time() - c0
        ids, scores = self._to_arrays(results, k)
        np.savez(req["out"], ids=ids, scores=scores, lat_ns=lat)
        return {"wall_s": wall, "cpu_s": cpu}

    def drop(self, req: dict[str, Any]) -> dict[str, Any]:
        self.indexes.pop(str(req["name"]), None)
        return {}


def serve(proto: TextIO, handlers: dict[str, Callable[[dict[str, Any]], dict[str, Any]]]) -> None:
    """Answer requests from stdin on ``proto`` until ``quit`` or end of input (``_anchor_worker.py`` uses it too)."""
    for line in sys.stdin:
        if not line.strip():
            continue
        req: dict[str, Any] = json.loads(line)
        cmd = req.get("cmd")
        if cmd == "quit":
            proto.write(json.dumps({"ok": True}) + "\n")
            proto.flush()
            return
        try:
            reply = {"ok": True, **handlers[str(cmd)](req)}
        except Exception as exc:  # every failure goes back to the driver as a message, the worker keeps serving
            reply = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        proto.write(json.dumps(reply) + "\n")
        proto.flush()


def main() -> int:
    if "RAYON_NUM_THREADS" not in os.environ:
        _eprint("warning: RAYON_NUM_THREADS is not set; Seismic will use one thread per core")
    proto = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # from here on, anything written to fd 1 (Rust println!, print) lands on stderr
    worker = Worker()
    handlers = {
        "hello": worker.hello,
        "load": worker.load,
        "build": worker.build,
        "batch": worker.batch,
        "single": worker.single,
        "drop": worker.drop,
    }
    serve(proto, handlers)
    return 0


if __name__ == "__main__":
    sys.exit(main())
