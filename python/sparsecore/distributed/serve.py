"""A JSON search endpoint over a sharded index, on the standard library's HTTP server (no dependency).

``sparsecore serve INDEX_DIR --port N`` runs it; :func:`make_server` gives the server object for embedding.

Endpoints:

- ``POST /search`` with a JSON object::

      {"queries": [{"indices": [3, 17], "values": [0.5, 1.25]}, ...],   # or "query": {...} for one
       "k": 10, "k_per_shard": 20, "recall_target": 0.95, "timeout": 1.0, "allow_partial": false}

  Only ``queries`` (or ``query``) is required. The answer::

      {"results": [{"ids": [...], "scores": [...]}, ...], "missing_shards": [], "took_ms": 1.9}

  one entry per query holding its hits only (no padding), best first.
- ``GET /stats``: :meth:`ShardedIndex.stats`. ``GET /health``: ``{"status": "ok", "n_docs": ...}``.

Errors are JSON too, ``{"error": {"type": ..., "field": ..., "message": ...}}``: 400 for a malformed request
(``field`` names the offending one, e.g. ``"queries[2].indices"``), 404 for an unknown path, 413
for a body over :data:`MAX_BODY_BYTES`, 503 when shards time out or are unavailable, 500 otherwise.
"""

from __future__ import annotations

import itertools
import json
import math
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np

from sparsecore.distributed._backends import ShardTimeoutError, ShardUnavailableError
from sparsecore.distributed.sharded import ShardedIndex
from sparsecore.exceptions import SparsecoreError
from sparsecore.sparse import SparseBatch

__all__ = ["MAX_BODY_BYTES", "MAX_K", "MAX_QUERIES", "RequestError", "make_server", "parse_search_request"]

MAX_BODY_BYTES = 16 << 20  # 16 MiB: thousands of SPLADE queries
MAX_QUERIES = 10_000
MAX_K = 10_000


class RequestError(SparsecoreError, ValueError):
    """A malformed search request; ``field`` names the offending field.

    Attributes
    ----------
    field
        The field, as a path into the request (``"k"``, ``"queries[1].values"``).
    """

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


def _int_field(body: dict[str, Any], name: str, default: int | None, low: int, high: int) -> int | None:
    v = body.get(name, default)
    if v is None:
        return None
    if type(v) is not int or not low <= v <= high:
        raise RequestError(name, f"must be an integer in [{low}, {high}], got {v!r}")
    return v


def _float_field(body: dict[str, Any], name: str, low: float, high: float, low_open: bool = False) -> float | None:
    v = body.get(name)
    if v is None:
        return None
    if type(v) not in (int, float) or not math.isfinite(v) or not (low < v if low_open else low <= v) or v > high:
        raise RequestError(name, f"must be a number in {'(' if low_open else '['}{low}, {high}], got {v!r}")
    return float(v)


def _query_rows(body: dict[str, Any], dim: int) -> SparseBatch:
    if ("query" in body) == ("queries" in body):
        raise RequestError("queries", "give exactly one of 'queries' (a list) or 'query' (one object)")
    name = "queries" if "queries" in body else "query"
    items = body[name] if name == "queries" else [body[name]]
    if not isinstance(items, list) or not items:
        raise RequestError(name, "must be a non-empty list of {indices, values} objects")
    if len(items) > MAX_QUERIES:
        raise RequestError(name, f"at most {MAX_QUERIES} queries per request, got {len(items)}")
    indptr = [0]
    all_idx: list[int] = []
    all_val: list[float] = []
    for i, q in enumerate(items):
        where = f"{name}[{i}]" if name == "queries" else name
        if not isinstance(q, dict) or set(q) != {"indices", "values"}:
            raise RequestError(where, "must be an object with exactly the keys 'indices' and 'values'")
        idx, val = q["indices"], q["values"]
        if not isinstance(idx, list) or any(type(x) is not int for x in idx):
            raise RequestError(f"{where}.indices", "must be a list of integers")
        if not isinstance(val, list) or any(type(x) not in (int, float) for x in val):
            raise RequestError(f"{where}.values", "must be a list of numbers")
        if len(idx) != len(val):
            raise RequestError(f"{where}.values", f"has {len(val)} entries, indices has {len(idx)}")
        if any(not 0 <= x < dim for x in idx):
            raise RequestError(f"{where}.indices", f"term ids must be in [0, {dim})")
        if any(b <= a for a, b in itertools.pairwise(idx)):
            raise RequestError(f"{where}.indices", "must be strictly increasing")
        if any(not math.isfinite(x) or x < 0 for x in val):
            raise RequestError(f"{where}.values", "weights must be finite and non-negative")
        all_idx.extend(idx)
        all_val.extend(float(x) for x in val)
        indptr.append(len(all_idx))
    return SparseBatch.from_arrays(
        np.asarray(indptr, np.int64), np.asarray(all_idx, np.uint32), np.asarray(all_val, np.float32), dim
    )


def parse_search_request(raw: bytes, dim: int) -> tuple[SparseBatch, dict[str, Any]]:
    """Check a ``POST /search`` body; the queries and the keyword arguments of :meth:`ShardedIndex.search`.

    Raises
    ------
    RequestError
        Naming the first field that is missing, of the wrong type or out of range, or an unknown field.
    """
    try:
        body = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise RequestError("body", f"not JSON ({exc})") from None
    if not isinstance(body, dict):
        raise RequestError("body", "must be a JSON object")
    known = {"query", "queries", "k", "k_per_shard", "recall_target", "timeout", "allow_partial"}
    for key in body:
        if key not in known:
            raise RequestError(key, f"unknown field (accepted: {', '.join(sorted(known))})")
    queries = _query_rows(body, dim)
    kw: dict[str, Any] = {"k": _int_field(body, "k", 10, 1, MAX_K)}
    if (kps := _int_field(body, "k_per_shard", None, 1, MAX_K)) is not None:
        kw["k_per_shard"] = kps
    if (rt := _float_field(body, "recall_target", 0.0, 1.0, low_open=True)) is not None:
        kw["recall_target"] = rt
    if (to := _float_field(body, "timeout", 0.0, 3600.0)) is not None:
        kw["timeout"] = to
    partial = body.get("allow_partial", False)
    if type(partial) is not bool:
        raise RequestError("allow_partial", f"must be true or false, got {partial!r}")
    kw["allow_partial"] = partial
    return queries, kw


def _handler(index: ShardedIndex, log: Callable[[str], None] | None) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "sparsecore-serve"
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            if log is not None:
                log(f"{self.address_string()} {format % args}")

        def _send(self, status: int, payload: dict[str, Any]) -> None:
            data = json.dumps(payload, allow_nan=False).encode("utf-8")
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _error(self, status: int, kind: str, message: str, field: str | None = None) -> None:
            self._send(status, {"error": {"type": kind, "field": field, "message": message}})

        def do_GET(self) -> None:
            if self.path == "/health":
                self._send(200, {"status": "ok", "n_docs": len(index), "n_shards": index.n_shards})
            elif self.path == "/stats":
                self._send(200, index.stats())
            else:
                self._error(404, "NotFound", f"no endpoint {self.path}; use POST /search, GET /stats, GET /health")

        def do_POST(self) -> None:
            if self.path != "/search":
                self._error(404, "NotFound", f"no endpoint {self.path}; use POST /search")
                return
            length = self.headers.get("Content-Length")
            if length is None or not length.isdigit():
                self._error(411, "LengthRequired", "Content-Length is required", "body")
                return
            if int(length) > MAX_BODY_BYTES:
                self._error(413, "RequestTooLarge", f"body over {MAX_BODY_BYTES} bytes", "body")
                self.close_connection = True
                return
            raw = self.rfile.read(int(length))
            t0 = time.perf_counter()
            try:
                queries, kw = parse_search_request(raw, index.dim)
                k = kw.pop("k")
                result = index.search(queries, k, **kw)
            except RequestError as exc:
                self._error(400, type(exc).__name__, str(exc), exc.field)
                return
            except (ShardTimeoutError, ShardUnavailableError) as exc:
                self._error(503, type(exc).__name__, str(exc))
                return
            except SparsecoreError as exc:
                self._error(500, type(exc).__name__, str(exc))
                return
            rows = []
            for ids, scores in zip(result.ids.tolist(), result.scores.tolist(), strict=True):
                n = sum(1 for i in ids if i >= 0)
                rows.append({"ids": ids[:n], "scores": scores[:n]})
            self._send(
                200,
                {
                    "results": rows,
                    "missing_shards": list(result.missing_shards),
                    "errors": {str(s): m for s, m in result.errors.items()},
                    "took_ms": round(1e3 * (time.perf_counter() - t0), 3),
                },
            )

    return Handler


def make_server(
    index: ShardedIndex, host: str = "127.0.0.1", port: int = 8000, *, log: Callable[[str], None] | None = None
) -> ThreadingHTTPServer:
    """An HTTP server answering searches on ``index`` (call ``serve_forever()``; port 0 picks a free port).

    Parameters
    ----------
    index
        An opened sharded index; requests search it from the server's threads.
    host, port
        Where to listen; ``server.server_address`` tells the port chosen for 0.
    log
        Called with one line per request (default: silent).
    """
    server = ThreadingHTTPServer((host, port), _handler(index, log))
    server.daemon_threads = True
    return server


def serve_in_thread(server: ThreadingHTTPServer) -> threading.Thread:
    """Run ``server.serve_forever()`` on a daemon thread (stop it with ``server.shutdown()``)."""
    t = threading.Thread(target=server.serve_forever, name="sparsecore-serve", daemon=True)
    t.start()
    return t
