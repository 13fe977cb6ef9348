"""Where shards run: threads of this process (``"local"``) or Ray actors and tasks (``"ray"``).

Both backends offer the same small interface (:class:`Backend`), so :class:`~sparsecore.distributed.ShardedIndex`
is one piece of code. This module is the only one that imports Ray, lazily, and keeps Ray's untyped calls behind
typed methods.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import os
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from sparsecore.distributed._shard import ShardServer, pack_queries
from sparsecore.exceptions import MissingExtraError, SparsecoreError

__all__ = [
    "PENDING",
    "Backend",
    "LocalBackend",
    "PartialResultWarning",
    "RayBackend",
    "ShardTimeoutError",
    "ShardUnavailableError",
    "make_backend",
]


#: Query batches smaller than this go inside each actor call; larger ones go to the object store once per search.
#: Ray inlines arguments below 100 KiB itself; an explicit put costs more per search (measured ad hoc here:
#: 2-shard one-query search 6.6 ms with a put against 2.4 ms inline, on a busy machine).
INLINE_BYTES = 96 * 1024

#: Seconds a Ray backend waits, after a compiled-graph search failed (a shard actor died or raised), before it
#: compiles the graph again; searches in between take the classic actor-call path, which waits for restarts.
GRAPH_RETRY_S = 2.0

#: Seconds without a compiled-graph search after which the graphs are torn down: while a graph lives, each of its
#: actors keeps a core busy polling its input channel (Ray's design, for latency), idle or not.
GRAPH_IDLE_S = 2.0


class ShardTimeoutError(SparsecoreError, TimeoutError):
    """Some shards did not answer within ``timeout``; ``shards`` lists them.

    Attributes
    ----------
    shards
        The shards that did not answer, ascending.
    """

    def __init__(self, message: str, shards: Sequence[int]) -> None:
        super().__init__(message)
        self.shards = tuple(shards)

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (str(self), self.shards))


class ShardUnavailableError(SparsecoreError, ConnectionError):
    """A shard has no live replica (its actors died and will not restart, or were closed)."""


class PartialResultWarning(UserWarning):
    """A search with ``allow_partial=True`` returned without some shards (they are named in the message)."""


class _Pending:
    """Marks a call that did not finish within the timeout."""

    def __repr__(self) -> str:
        return "PENDING"


#: What :meth:`Backend.gather` gives for a call still running at the timeout.
PENDING = _Pending()


class Backend(Protocol):
    """What a sharded index needs from where its shards run."""

    name: str
    search_method: str

    def start(self, shard: int, replica: int, method: str, *args: Any) -> Any:
        """Call ``method`` of a shard replica; returns a handle at once."""
        ...

    def start_all(
        self, calls: Sequence[tuple[int, int]], method: str, *args: Any, inline: bool, sequential: bool = False
    ) -> list[Any]:
        """Call ``method`` of every ``(shard, replica)``; handles in order.

        With ``inline`` the backend may run one of them on the calling thread, with ``sequential`` as well all of
        them one after the other (no timeout applies to calls run inline).
        """
        ...

    def wait(self, handles: Sequence[Any], timeout: float | None) -> list[bool]:
        """Wait until every handle is done or ``timeout`` seconds passed; which are done."""
        ...

    def result(self, handle: Any) -> Any:
        """The value of a done handle, or its exception (typed: the shard's own, or ShardUnavailableError)."""
        ...

    def gather(self, handles: Sequence[Any], timeout: float | None) -> list[Any]:
        """Wait at most ``timeout`` seconds; per handle its value, the exception it raised, or :data:`PENDING`."""
        ...

    def share(self, value: tuple[Any, ...]) -> Any:
        """``value`` in a form every shard call may take without copying it again (Ray: the object store)."""
        ...

    def run_tasks(
        self, fn: Callable[..., Any], arg_lists: Sequence[tuple[Any, ...]], max_retries: int, threads: int
    ) -> list[Any]:
        """Run ``fn(*args)`` for every argument tuple in parallel, each on ``threads`` cores; results in order.

        The first failure is raised.
        """
        ...

    def cpus(self) -> int:
        """Cores available to shards (this machine's, or the Ray cluster's)."""
        ...

    def open_shards(self, out_dir: str, n_shards: int, replicas: int, num_threads: int | None, verify: bool) -> None:
        """Start one :class:`ShardServer` per shard replica."""
        ...

    def close(self) -> None:
        """Stop the shard servers."""
        ...


class LocalBackend:
    """Shards as objects of this process, called on a thread pool (no Ray needed).

    Parameters
    ----------
    max_workers
        Threads of the pool (default: enough for every replica to run at once).
    """

    name = "local"
    #: The shard method a search calls, and whether its answer is packed bytes.
    search_method = "search"

    def __init__(self, max_workers: int | None = None) -> None:
        self._max_workers = max_workers
        self._pool: cf.ThreadPoolExecutor | None = None
        self._servers: list[list[ShardServer]] = []

    def _executor(self, workers: int) -> cf.ThreadPoolExecutor:
        if self._pool is None:
            self._pool = cf.ThreadPoolExecutor(self._max_workers or workers, thread_name_prefix="sparsecore-shard")
        return self._pool

    def open_shards(self, out_dir: str, n_shards: int, replicas: int, num_threads: int | None, verify: bool) -> None:
        """Load every shard replica (in parallel, each checks and maps its file)."""
        pool = self._executor(n_shards * replicas)
        futures = [
            [pool.submit(ShardServer, out_dir, s, num_threads, verify) for _ in range(replicas)]
            for s in range(n_shards)
        ]
        self._servers = [[f.result() for f in row] for row in futures]

    def server(self, shard: int, replica: int = 0) -> ShardServer:
        """The server object of a shard replica."""
        return self._servers[shard][replica]

    def start(self, shard: int, replica: int, method: str, *args: Any) -> cf.Future[Any]:
        """Submit ``method`` of the replica to the pool."""
        if not self._servers:
            raise ShardUnavailableError("the sharded index is closed")
        return self._executor(1).submit(getattr(self._servers[shard][replica], method), *args)

    def start_all(
        self, calls: Sequence[tuple[int, int]], method: str, *args: Any, inline: bool, sequential: bool = False
    ) -> list[Any]:
        """Submit calls to the pool, running the last one on this thread (``inline``) or all of them here.

        Running one shard here saves a thread hand-off per search. For a single query, running every shard here
        one after the other (``sequential``) was as fast or faster than waking pool threads on the busy 2-core
        machine of the benchmarks (``benches/probe_distributed.py --probe fanout``, 200k documents: overhead over
        the slowest shard 0.12 / 0.34 ms for 2 / 4 shards against 0.14 / 0.36 ms on threads, noise about 0.05 ms).
        """
        if not inline or not calls:
            return [self.start(s, r, method, *args) for s, r in calls]
        n_pool = 0 if sequential else len(calls) - 1
        handles: list[Any] = [self.start(s, r, method, *args) for s, r in calls[:n_pool]]
        for s, r in calls[n_pool:]:
            done: cf.Future[Any] = cf.Future()
            try:
                done.set_result(getattr(self._servers[s][r], method)(*args))
            except Exception as exc:
                done.set_exception(exc)
            handles.append(done)
        return handles

    def wait(self, handles: Sequence[Any], timeout: float | None) -> list[bool]:
        """Wait for the futures."""
        done, _ = cf.wait(handles, timeout=timeout)
        return [h in done for h in handles]

    def result(self, handle: Any) -> Any:
        """The future's value (its exception re-raised as it is)."""
        return handle.result()

    def gather(self, handles: Sequence[Any], timeout: float | None) -> list[Any]:
        """Values, exceptions or :data:`PENDING` of the futures."""
        done, _ = cf.wait(handles, timeout=timeout)
        return [(h.exception() or h.result()) if h in done else PENDING for h in handles]

    def share(self, value: tuple[Any, ...]) -> Any:
        """Local calls share memory already."""
        return value

    def run_tasks(
        self, fn: Callable[..., Any], arg_lists: Sequence[tuple[Any, ...]], max_retries: int, threads: int
    ) -> list[Any]:
        """Run the tasks on a pool of threads, up to ``cores`` at a time (local tasks are not retried).

        Their Rust work shares the process's rayon pool of ``threads`` threads, so running them side by side never
        uses more than that many cores.
        """
        del max_retries, threads  # a local task that raises has failed for a reason a retry would not change
        workers = max(1, min(len(arg_lists), self.cpus()))
        with cf.ThreadPoolExecutor(workers, thread_name_prefix="sparsecore-build") as pool:
            futures = [pool.submit(fn, *args) for args in arg_lists]
            return [f.result() for f in futures]

    def cpus(self) -> int:
        """Cores of this machine."""
        return os.cpu_count() or 1

    def close(self) -> None:
        """Drop the servers (their maps close when unreferenced) and the pool."""
        self._servers = []
        if self._pool is not None:
            self._pool.shutdown(wait=False)
            self._pool = None


def _import_ray() -> Any:
    try:
        import ray
    except ImportError as exc:
        raise MissingExtraError(
            "backend='ray' needs Ray: pip install 'sparsecore[distributed]' (or backend='local')"
        ) from exc
    return ray


class RayBackend:
    """Shards as Ray actors (``max_restarts=-1``, ``max_task_retries=-1``), builds as Ray tasks.

    Connects to the running Ray cluster, or starts a local one (``ray.init()``) when none is initialised.
    Actor calls of a replica that is restarting wait for the restart and are retried by Ray, so a killed actor
    costs latency, not answers.
    """

    name = "ray"
    search_method = "search_packed"

    def __init__(self, compiled: bool = False) -> None:
        self._ray = _import_ray()
        if not self._ray.is_initialized():
            self._ray.init()
        self._actors: list[list[Any]] = []
        #: Whether small searches go through Ray Compiled Graphs (see :meth:`fast_search`).
        self.compiled = bool(compiled)
        self._graphs: dict[int, Any] = {}
        self._graph_lock = threading.Lock()
        self._graph_retry_at = 0.0
        self._graph_used_at = 0.0
        self._reaper: threading.Thread | None = None
        #: Searches answered through a compiled graph (the rest took classic actor calls).
        self.compiled_searches = 0

    def actor(self, shard: int, replica: int = 0) -> Any:
        """The actor handle of a shard replica (for fault injection and inspection)."""
        return self._actors[shard][replica]

    def open_shards(self, out_dir: str, n_shards: int, replicas: int, num_threads: int | None, verify: bool) -> None:
        """Start the actors and wait until each has loaded (or failed to load) its file."""
        cls = self._ray.remote(max_restarts=-1, max_task_retries=-1)(ShardServer)
        self._actors = [[cls.remote(out_dir, s, num_threads, verify) for _ in range(replicas)] for s in range(n_shards)]

    def start(self, shard: int, replica: int, method: str, *args: Any) -> Any:
        """Call the actor method; an ObjectRef.

        Updates (``add``, ``delete``) first tear the compiled graphs down, so no compiled search runs on an
        actor's background thread while the update changes its index.
        """
        if not self._actors:
            raise ShardUnavailableError("the sharded index is closed")
        if method in ("add", "delete"):
            with self._graph_lock:
                self._drop_graphs()
        return getattr(self._actors[shard][replica], method).remote(*args)

    def fast_search(self, replica: int, queries: Any, k: int, params: dict[str, Any]) -> list[Any] | None:
        """Every shard's packed answer through a Ray Compiled Graph, or ``None`` to take the classic path.

        Only with ``compiled=True``. A compiled graph (one per replica row: replica ``replica`` of every shard)
        sends the query bytes to the actors through shared-memory channels set up once, instead of scheduling one
        actor task per shard: ``make bench-distributed`` measured a one-shard fan-out overhead of 0.14 ms
        against 0.90 ms with classic calls on a 2-core machine. The price: while a graph lives, each of its
        actors keeps a core busy polling, so graphs are torn down after :data:`GRAPH_IDLE_S` seconds without a
        compiled search (and compiled again by the next one). Used only for query batches small enough to travel
        inline (:data:`INLINE_BYTES`) and when no other thread is using it; anything unusual (a dead or
        restarting actor, an error raised by a shard) tears the graph down and returns ``None``, so the caller
        repeats the search on the classic path, which retries after restarts and reports errors per shard. The
        graph is compiled again :data:`GRAPH_RETRY_S` seconds later.
        """
        if not self.compiled or not self._actors or not isinstance(queries, bytes):
            return None
        if not self._graph_lock.acquire(blocking=False):
            return None
        try:
            if time.monotonic() < self._graph_retry_at:
                return None
            graph = self._graphs.get(replica)
            if graph is None:
                graph = self._graphs[replica] = self._compile(replica)
                self._start_reaper()
            answers = list(self._ray.get(graph.execute(queries, k, params)))
            self.compiled_searches += 1
            self._graph_used_at = time.monotonic()
            return answers
        except Exception:
            self._drop_graphs()
            self._graph_retry_at = time.monotonic() + GRAPH_RETRY_S
            return None
        finally:
            self._graph_lock.release()

    def _compile(self, replica: int) -> Any:
        from ray.dag import InputNode, MultiOutputNode

        with InputNode() as inp:
            outs = [row[replica].search_packed.bind(inp[0], inp[1], inp[2]) for row in self._actors]
            dag = MultiOutputNode(outs)
        return dag.experimental_compile()

    def _start_reaper(self) -> None:
        """A daemon thread that tears idle graphs down (their actors stop polling) and then ends."""
        if self._reaper is not None and self._reaper.is_alive():
            return
        self._graph_used_at = time.monotonic()

        def reap() -> None:
            while True:
                time.sleep(min(0.25, GRAPH_IDLE_S / 4))
                if time.monotonic() - self._graph_used_at < GRAPH_IDLE_S:
                    continue
                with self._graph_lock:
                    if time.monotonic() - self._graph_used_at >= GRAPH_IDLE_S:
                        self._drop_graphs()
                    if not self._graphs:
                        return

        self._reaper = threading.Thread(target=reap, name="sparsecore-graph-reaper", daemon=True)
        self._reaper.start()

    def _drop_graphs(self) -> None:
        """Tear every compiled graph down (the actors stay; the caller holds the graph lock)."""
        graphs, self._graphs = self._graphs, {}
        for graph in graphs.values():
            # A graph whose actor died has torn itself down already; nothing is left to release.
            with contextlib.suppress(Exception):
                graph.teardown()

    def start_all(
        self, calls: Sequence[tuple[int, int]], method: str, *args: Any, inline: bool, sequential: bool = False
    ) -> list[Any]:
        """Call every actor (never inline: the shards live in other processes)."""
        del inline, sequential
        return [self.start(s, r, method, *args) for s, r in calls]

    def wait(self, handles: Sequence[Any], timeout: float | None) -> list[bool]:
        """``ray.wait`` for all of them, at most ``timeout`` seconds."""
        ready, _ = self._ray.wait(list(handles), num_returns=len(handles), timeout=timeout, fetch_local=True)
        done = {r.hex() for r in ready}
        return [h.hex() in done for h in handles]

    def result(self, handle: Any) -> Any:
        """``ray.get``, with the shard's own exception re-raised and a dead actor as ShardUnavailableError."""
        exc_mod = self._ray.exceptions
        try:
            return self._ray.get(handle)
        except exc_mod.RayTaskError as exc:
            cause = getattr(exc, "cause", None)
            if isinstance(cause, BaseException):
                raise cause from None
            raise
        except exc_mod.RayActorError as exc:
            raise ShardUnavailableError(f"shard actor is dead: {exc}") from None

    def gather(self, handles: Sequence[Any], timeout: float | None) -> list[Any]:
        """Values, exceptions (translated as in :meth:`result`) or :data:`PENDING`; one ``ray.get`` if all answered."""
        refs = list(handles)
        if timeout is None:
            ready = refs
        else:
            ready, _ = self._ray.wait(refs, num_returns=len(refs), timeout=timeout, fetch_local=True)
        if len(ready) == len(refs):
            try:
                return list(self._ray.get(refs))
            except Exception:
                pass
        done = {r.hex() for r in ready}
        out: list[Any] = []
        for r in refs:
            if r.hex() not in done and timeout is not None:
                out.append(PENDING)
                continue
            try:
                out.append(self.result(r))
            except Exception as exc:
                out.append(exc)
        return out

    def share(self, value: tuple[Any, ...]) -> Any:
        """Put ``value`` in the object store once, so every actor reads it without another copy.

        Small query batches (below :data:`INLINE_BYTES`) travel inside the calls instead, packed into one byte
        string (:func:`~sparsecore.distributed._shard.pack_queries`): a Ray call carries bytes faster than a
        tuple of arrays (0.65 against 0.92 ms per round trip, ``benches/probe_distributed.py --probe ray``).
        """
        size = sum(int(getattr(v, "nbytes", 0)) for v in value)
        return pack_queries(value) if size < INLINE_BYTES else self._ray.put(value)

    def run_tasks(
        self, fn: Callable[..., Any], arg_lists: Sequence[tuple[Any, ...]], max_retries: int, threads: int
    ) -> list[Any]:
        """One Ray task per argument tuple (``num_cpus=threads``), retried ``max_retries`` times if its worker dies."""
        task = self._ray.remote(max_retries=max_retries, num_cpus=threads)(fn)
        refs = [task.remote(*args) for args in arg_lists]
        return [self.result(r) for r in refs]

    def cpus(self) -> int:
        """CPUs of the Ray cluster."""
        return max(1, int(self._ray.cluster_resources().get("CPU", 1)))

    def close(self) -> None:
        """Tear the compiled graphs down, then kill the actors (no restart)."""
        with self._graph_lock:
            self._drop_graphs()
        for row in self._actors:
            for a in row:
                self._ray.kill(a, no_restart=True)
        self._actors = []


def make_backend(backend: str, *, compiled: bool = False) -> LocalBackend | RayBackend:
    """A backend by name (the name is checked by the caller); ``compiled`` is the Ray backend's."""
    return RayBackend(compiled) if backend == "ray" else LocalBackend()
