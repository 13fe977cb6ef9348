"""A JSON search endpoint over a sharded index: the standard library's HTTP server, an ASGI app, or Ray Serve.

Three transports answer the same requests through :func:`respond`:

- :func:`make_server`: the standard library's threaded HTTP server (no dependency); ``sparsecore serve INDEX_DIR
  --port N`` runs it for ``--backend local``;
- :func:`asgi_app`: a plain ASGI 3 application (no framework) for any ASGI server (uvicorn, hypercorn, ...);
- :func:`ray_serve_app`: a Ray Serve application whose replicas each open the index on Ray actors and answer
  through :func:`asgi_app`; ``sparsecore serve INDEX_DIR --backend ray`` runs it (:func:`run_ray_serve`).

Endpoints:

- ``POST /search`` with a JSON object::

      {"queries": [{"indices": [3, 17], "values": [0.5, 1.25]}, ...],   # or "query": {...} for one
       "k": 10, "k_per_shard": 20, "recall_target": 0.95, "timeout": 1.0, "allow_partial": false}

  Only ``queries`` (or ``query``) is required. The answer::

      {"results": [{"ids": [...], "scores": [...]}, ...], "missing_shards": [], "took_ms": 1.9}

  one entry per query holding its hits only (no padding), best first.
- ``GET /stats``: :meth:`ShardedIndex.stats`. ``GET /health``: ``{"status": "ok", "n_docs": ...}``.

Errors are JSON too, ``{"error": {"type": ..., "field": ..., "message": ...}}``: 400 for a malformed request
(``field`` names the offending one, e.g. ``"queries[2].indices"``), 404 for an unknown path, 405 for a method other
than GET and POST, 413 for a body over :data:`MAX_BODY_BYTES`, 503 when shards time out or are unavailable, 500
otherwise.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import math
import os
import signal
import socket
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine, MutableMapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np

from sparsecore._validate import positive_int
from sparsecore.distributed._backends import ShardTimeoutError, ShardUnavailableError
from sparsecore.distributed.sharded import ShardedIndex
from sparsecore.exceptions import InvalidArgumentError, MissingExtraError, SparsecoreError
from sparsecore.sparse import SparseBatch

__all__ = [
    "MAX_BODY_BYTES",
    "MAX_K",
    "MAX_QUERIES",
    "RequestError",
    "asgi_app",
    "free_port",
    "make_server",
    "parse_search_request",
    "ray_serve_app",
    "respond",
    "run_ray_serve",
]

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


def _error(status: int, kind: str, message: str, field: str | None = None) -> tuple[int, dict[str, Any]]:
    return status, {"error": {"type": kind, "field": field, "message": message}}


def respond(index: ShardedIndex, method: str, path: str, body: bytes = b"") -> tuple[int, dict[str, Any]]:
    """Answer one request: the HTTP status and the JSON payload (every transport of this module calls it).

    Parameters
    ----------
    index
        The opened sharded index.
    method
        ``"GET"`` or ``"POST"`` (anything else gets 405).
    path
        The request path without the query string (``"/search"``, ``"/stats"``, ``"/health"``).
    body
        The request body (``POST /search``).

    Returns
    -------
    tuple of (int, dict)
        The status (200, 400, 404, 405, 500 or 503, see the module docstring) and the payload.
    """
    if method == "GET":
        if path == "/health":
            return 200, {"status": "ok", "n_docs": len(index), "n_shards": index.n_shards}
        if path == "/stats":
            try:
                return 200, index.stats()
            except ShardUnavailableError as exc:  # a closed index
                return _error(503, type(exc).__name__, str(exc))
        return _error(404, "NotFound", f"no endpoint {path}; use POST /search, GET /stats, GET /health")
    if method != "POST":
        return _error(
            405, "MethodNotAllowed", f"method {method} not allowed; use POST /search, GET /stats, GET /health"
        )
    if path != "/search":
        return _error(404, "NotFound", f"no endpoint {path}; use POST /search")
    t0 = time.perf_counter()
    try:
        queries, kw = parse_search_request(body, index.dim)
        k = kw.pop("k")
        result = index.search(queries, k, **kw)
    except RequestError as exc:
        return _error(400, type(exc).__name__, str(exc), exc.field)
    except (ShardTimeoutError, ShardUnavailableError) as exc:
        return _error(503, type(exc).__name__, str(exc))
    except SparsecoreError as exc:
        return _error(500, type(exc).__name__, str(exc))
    rows = []
    for ids, scores in zip(result.ids.tolist(), result.scores.tolist(), strict=True):
        n = sum(1 for i in ids if i >= 0)
        rows.append({"ids": ids[:n], "scores": scores[:n]})
    return 200, {
        "results": rows,
        "missing_shards": list(result.missing_shards),
        "errors": {str(s): m for s, m in result.errors.items()},
        "took_ms": round(1e3 * (time.perf_counter() - t0), 3),
    }


def _json_bytes(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload, allow_nan=False).encode("utf-8")


def _handler(index: ShardedIndex, log: Callable[[str], None] | None) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "sparsecore-serve"
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            if log is not None:
                log(f"{self.address_string()} {format % args}")

        def _send(self, answer: tuple[int, dict[str, Any]]) -> None:
            data = _json_bytes(answer[1])
            self.send_response(answer[0])
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            self._send(respond(index, "GET", self.path))

        def do_POST(self) -> None:
            header = self.headers.get("Content-Length")
            length = int(header) if header is not None and header.isdigit() else None
            if length is None and self.path == "/search":
                self._send(_error(411, "LengthRequired", "Content-Length is required", "body"))
            elif length is not None and length > MAX_BODY_BYTES:
                self._send(_error(413, "RequestTooLarge", f"body over {MAX_BODY_BYTES} bytes", "body"))
                self.close_connection = True
            else:
                self._send(respond(index, "POST", self.path, self.rfile.read(length) if length else b""))

    return Handler


#: An ASGI 3 application: ``await app(scope, receive, send)``.
ASGIApp = Callable[
    [MutableMapping[str, Any], Callable[[], Awaitable[MutableMapping[str, Any]]], Callable[[Any], Awaitable[None]]],
    Coroutine[Any, Any, None],
]


def asgi_app(index: ShardedIndex, *, close_on_shutdown: bool = False) -> ASGIApp:
    """The endpoint as a plain ASGI 3 application (HTTP and lifespan scopes; no framework needed).

    Searches run on the event loop's default executor, so a slow search does not block other requests.
    Bodies over :data:`MAX_BODY_BYTES` get 413 without being read further.

    Parameters
    ----------
    index
        An opened sharded index.
    close_on_shutdown
        Close ``index`` when the server sends the lifespan shutdown event.

    Returns
    -------
    callable
        ``async app(scope, receive, send)``, e.g. ``uvicorn.run(asgi_app(index))``.
    """

    async def lifespan(
        receive: Callable[[], Awaitable[MutableMapping[str, Any]]], send: Callable[[Any], Awaitable[None]]
    ) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if close_on_shutdown:
                    index.close()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def app(
        scope: MutableMapping[str, Any],
        receive: Callable[[], Awaitable[MutableMapping[str, Any]]],
        send: Callable[[Any], Awaitable[None]],
    ) -> None:
        if scope["type"] == "lifespan":
            await lifespan(receive, send)
            return
        if scope["type"] != "http":
            raise InvalidArgumentError(f"scope: only 'http' and 'lifespan' are served, got {scope['type']!r}")
        path = str(scope["path"])
        root = str(scope.get("root_path") or "")
        if root and path.startswith(root):  # mounted under a prefix: route on the rest
            path = path[len(root) :] or "/"
        body = bytearray()
        answer: tuple[int, dict[str, Any]] | None = None
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            more = bool(message.get("more_body", False))
            if len(body) > MAX_BODY_BYTES:
                answer = _error(413, "RequestTooLarge", f"body over {MAX_BODY_BYTES} bytes", "body")
                break
        if answer is None:
            loop = asyncio.get_running_loop()
            answer = await loop.run_in_executor(None, respond, index, str(scope["method"]), path, bytes(body))
        data = _json_bytes(answer[1])
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]
        await send({"type": "http.response.start", "status": answer[0], "headers": headers})
        await send({"type": "http.response.body", "body": data})

    return app


def _import_serve() -> Any:
    try:
        from ray import serve
    except ImportError as exc:
        raise MissingExtraError("Ray Serve is needed: pip install 'sparsecore[distributed]' (ray[serve])") from exc
    return serve


def ray_serve_app(
    index_dir: str | os.PathLike[str],
    *,
    replicas: int = 1,
    http_replicas: int = 1,
    verify: bool = True,
    num_threads: int | None = None,
) -> Any:
    """A Ray Serve application answering the endpoint's requests on a sharded index directory.

    Each of the ``http_replicas`` Serve replicas (0 CPUs reserved: they parse, fan out and merge) opens the index
    with ``backend="ray"`` (shard actors of its own, which memory-map the same files) and serves :func:`asgi_app`.
    Deploy it with ``serve.run(app, route_prefix="/")`` on a running Ray cluster, or use :func:`run_ray_serve`.

    Parameters
    ----------
    index_dir
        Directory written by :meth:`ShardedIndex.build`.
    replicas, verify, num_threads
        As :meth:`ShardedIndex.open`.
    http_replicas
        Serve replicas of the HTTP deployment.

    Returns
    -------
    ray.serve.Application
        The bound application.

    Raises
    ------
    MissingExtraError
        Ray Serve is not installed.
    InvalidArgumentError
        ``index_dir`` holds no manifest, or a count is not a positive integer.
    """
    from sparsecore.distributed._shard import read_manifest

    serve = _import_serve()
    path = os.fspath(index_dir)
    read_manifest(path)  # fail here, not in a replica, when the directory is wrong
    n_http = positive_int(http_replicas, "http_replicas")
    n_rep = positive_int(replicas, "replicas")

    def build() -> ASGIApp:
        index = ShardedIndex.open(path, backend="ray", replicas=n_rep, verify=verify, num_threads=num_threads)
        return asgi_app(index, close_on_shutdown=True)

    deployment = serve.deployment(name="sparsecore_search", num_replicas=n_http, ray_actor_options={"num_cpus": 0})(
        serve.ingress(build)()
    )
    return deployment.bind()


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on ``host`` right now (for servers that cannot take port 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def run_ray_serve(
    index_dir: str | os.PathLike[str],
    host: str = "127.0.0.1",
    port: int = 8000,
    *,
    address: str | None = None,
    replicas: int = 1,
    http_replicas: int = 1,
    ready: Callable[[str], None] | None = None,
) -> None:
    """Serve ``index_dir`` through Ray Serve until interrupted (Ctrl-C or SIGTERM), then shut Serve down.

    Parameters
    ----------
    index_dir
        Directory written by :meth:`ShardedIndex.build`.
    host, port
        Where Serve's HTTP proxy listens (port 0 picks a free one).
    address
        Ray cluster to join (``"auto"``, ``"ray://..."``); default: the initialised one, else a new local one.
    replicas, http_replicas
        As :func:`ray_serve_app`.
    ready
        Called with the endpoint's URL once the application is running.
    """
    import ray

    serve = _import_serve()
    app = ray_serve_app(index_dir, replicas=replicas, http_replicas=http_replicas)
    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False)
    chosen = free_port(host) if port == 0 else port
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        serve.start(http_options={"host": host, "port": chosen})
        serve.run(app, name="sparsecore", route_prefix="/")
        if ready is not None:
            ready(f"http://{host}:{chosen}")
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
        serve.shutdown()


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


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
