"""Probes behind the design choices of ``sparsecore.distributed`` (figures quoted in its docstrings and guide).

- ``--probe threads``: batch search of 2 local shards with 1 thread each against all cores each (the Rust core keeps
  one rayon pool per thread count per process), and the work ratio of the shards against the single index;
- ``--probe fanout``: one-query fan-out overhead of the local backend with its shards searched one after the other
  (the default for a single query) and on threads;
- ``--probe ray``: round trip of a Ray actor call (ping), a call carrying a tuple of arrays against one carrying
  bytes, and two actors at once (needs Ray);
- ``--probe ingest``: ``ShardedIndex.build`` of 2 shards from an iterator of CSR batches (routed and spooled by the
  calling process), and from the same documents as a materialised ``ray.data.Dataset`` of 16 blocks, read either by
  the calling process (``iter_batches``, as ``build`` did before) or by parallel Ray Data tasks (as it does now);
  all three then build the shards with Ray tasks (needs ray[data]);
- ``--probe update``: ``add`` of 10 documents and ``delete`` of 10 ids on 2 local shards of ``--docs`` documents
  (each update writes a delta file; see ``sparsecore.distributed._shard``), median of 20 each, and the bytes
  written per update.

Run: ``python benches/probe_distributed.py --probe threads fanout ray ingest update [--docs N]``. Prints medians;
timings only mean something on an otherwise idle machine (run under ``flock /tmp/sparsecore-bench.lock``).
"""

from __future__ import annotations

import argparse
import importlib
import statistics
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import _synthetic
import numpy as np
import sparsecore as sc
from sparsecore.distributed import ShardedIndex, merge_top_k


def median_ms(fn: Callable[[], object], n: int, warmup: int = 10) -> float:
    """Median wall time of ``fn`` in milliseconds."""
    for _ in range(warmup):
        fn()
    ts = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return 1e3 * statistics.median(ts)


def data(n_docs: int, n_queries: int) -> tuple[sc.SparseBatch, sc.SparseBatch]:
    syn = _synthetic.generate(n_docs, n_queries, seed=0)
    d, q = syn.docs, syn.queries
    return (
        sc.SparseBatch.from_arrays(d.indptr, d.indices, d.data, d.dim),
        sc.SparseBatch.from_arrays(q.indptr, q.indices, q.data, q.dim),
    )


def probe_threads(docs: sc.SparseBatch, queries: sc.SparseBatch, repeats: int) -> None:
    single = sc.InvertedIndex.build(docs, num_threads=2)
    path = tempfile.mkdtemp()
    ShardedIndex.build(docs, path, 2, backend="local").close()
    for per_shard in (1, 2):
        with ShardedIndex.open(path, backend="local", num_threads=per_shard) as idx:
            shards = [sc.InvertedIndex.load(f"{path}/{e.file}") for e in idx.manifest.shards]
            sharded = median_ms(lambda: idx.search(queries, 10), repeats, 1)
            one = median_ms(lambda: single.search(queries, 10, num_threads=2), repeats, 1)

            def one_by_one(sh: list[sc.InvertedIndex] = shards) -> None:
                for s in sh:
                    s.search(queries, 10, num_threads=1)

            seq = median_ms(one_by_one, repeats, 1)
            one_1t = median_ms(lambda: single.search(queries, 10, num_threads=1), repeats, 1)
        print(
            f"threads: 2 local shards, {per_shard} thread(s) each: {sharded:.1f} ms per batch vs single index "
            f"2 threads {one:.1f} ms -> QPS ratio {one / sharded:.2f}; work ratio (shards one after the other, "
            f"1 thread, vs single 1 thread) {seq / one_1t:.2f}"
        )


def shard_search(shard: sc.InvertedIndex, q: sc.SparseBatch) -> None:
    """One shard's own search, as the sharded search runs it for one query."""
    shard.search(q, 10, num_threads=1)


def probe_fanout(docs: sc.SparseBatch, queries: sc.SparseBatch, repeats: int) -> None:
    q1 = queries[0:1]
    arrays = (q1.indptr, q1.indices, q1.data, q1.dim)
    for n in (1, 2, 4):
        path = tempfile.mkdtemp()
        with ShardedIndex.build(docs, path, n, backend="local") as idx:
            shards = [sc.InvertedIndex.load(f"{path}/{e.file}") for e in idx.manifest.shards]
            slowest = max(median_ms(partial(shard_search, s, q1), repeats) for s in shards)
            default = median_ms(lambda: idx.search(q1, 10, num_threads=1), repeats)
            be = idx.backend

            def threaded(n: int = n, be: Any = be) -> None:
                calls = [(s, 0) for s in range(n)]
                handles = be.start_all(calls, "search", arrays, 10, {"num_threads": 1}, inline=True)
                outs = be.gather(handles, None)
                merge_top_k([(o[0], o[1]) for o in outs], 1, 10)

            on_threads = median_ms(threaded, repeats)
        print(
            f"fanout: {n} shard(s), one query: overhead over the slowest shard {default - slowest:.3f} ms "
            f"(shards one after the other, the default) vs {on_threads - slowest:.3f} ms (on threads)"
        )


def probe_ray(repeats: int) -> None:
    ray: Any = importlib.import_module("ray")
    ray.init(num_cpus=2, object_store_memory=200_000_000, include_dashboard=False, log_to_driver=False)
    try:

        class Echo:
            def ping(self) -> int:
                return 1

            def arrays(self, x: object) -> tuple[Any, Any, int]:
                return np.zeros((1, 10), np.int64), np.zeros((1, 10), np.float32), 5

            def blob(self, x: object) -> bytes:
                return np.zeros(30, np.int32).tobytes()

        cls = ray.remote(Echo)
        a, b = cls.remote(), cls.remote()
        ray.get([a.ping.remote(), b.ping.remote()])
        arrays = (np.zeros(2, np.int64), np.arange(40, dtype=np.uint32), np.ones(40, np.float32), 30522)
        blob = b"x" * 500
        ping = median_ms(lambda: ray.get(a.ping.remote()), repeats)
        arr = median_ms(lambda: ray.get(a.arrays.remote(arrays)), repeats)
        byt = median_ms(lambda: ray.get(a.blob.remote(blob)), repeats)
        two = median_ms(lambda: ray.get([a.blob.remote(blob), b.blob.remote(blob)]), repeats)
        print(
            f"ray: ping {ping:.2f} ms; arrays in and out {arr:.2f} ms; bytes in and out {byt:.2f} ms; "
            f"two actors at once (bytes) {two:.2f} ms"
        )
    finally:
        ray.shutdown()


def probe_ingest(docs: sc.SparseBatch) -> None:
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    ids = np.arange(docs.n_rows, dtype=np.int64)
    rows = [{"id": int(i), "indices": docs.row(i)[0], "values": docs.row(i)[1]} for i in range(docs.n_rows)]
    ds = ray.data.from_items(rows).repartition(16).materialize()
    step = 4096

    def batches() -> Any:
        for lo in range(0, docs.n_rows, step):
            hi = min(lo + step, docs.n_rows)
            yield docs[np.arange(lo, hi)], ids[lo:hi]

    def dataset_by_caller() -> Any:  # how build() read a Dataset before: iter_batches in the calling process
        from sparsecore.distributed.sharded import _dataset_batch

        for batch in ds.iter_batches(batch_size=step, batch_format="numpy"):
            yield _dataset_batch(batch, docs.dim)

    sources: list[tuple[str, Callable[[], Any]]] = [
        ("iterator of CSR batches, spooled by the caller", batches),
        ("ray.data.Dataset iterated and spooled by the caller", dataset_by_caller),
        ("ray.data.Dataset spooled by Ray Data tasks", lambda: ds),
    ]
    for name, source in sources:
        times = []
        for _ in range(3):
            out = tempfile.mkdtemp()
            t0 = time.perf_counter()
            arg = source()
            if arg is ds:
                ShardedIndex.build(ds, out, 2, backend="ray", overwrite=True, dim=docs.dim).close()
            else:
                ShardedIndex.build(arg, out, 2, backend="ray", overwrite=True).close()
            times.append(time.perf_counter() - t0)
        print(f"ingest {docs.n_rows} docs, 2 shards, {name}: median {statistics.median(times):.2f} s over 3 builds")
    ray.shutdown()


def probe_update(docs: sc.SparseBatch) -> None:
    out = tempfile.mkdtemp()
    half = docs.n_rows // 2
    with ShardedIndex.build(docs[np.arange(half)], out, 2, backend="local") as idx:
        size0 = sum(f.stat().st_size for f in Path(out).glob("shard_*"))
        adds, deletes = [], []
        for i in range(20):
            batch = docs[np.arange(half + 10 * i, half + 10 * i + 10)]
            t0 = time.perf_counter()
            idx.add(batch)
            adds.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            idx.delete(np.arange(10 * i, 10 * i + 10))
            deletes.append(time.perf_counter() - t0)
        grown = sum(f.stat().st_size for f in Path(out).glob("shard_*")) - size0
        print(
            f"update, 2 shards of {half // 2} docs: add 10 docs median {1e3 * statistics.median(adds):.1f} ms, "
            f"delete 10 ids median {1e3 * statistics.median(deletes):.1f} ms; index files {size0 / 1e6:.1f} MB, "
            f"{grown / 40 / 1e3:.1f} kB written per update on average"
        )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument(
        "--probe", nargs="+", choices=["threads", "fanout", "ray", "ingest", "update"], default=["threads", "fanout"]
    )
    ap.add_argument("--docs", type=int, default=200_000)
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=300, help="calls per one-query timing (batches: 3)")
    args = ap.parse_args(argv)
    if "threads" in args.probe or "fanout" in args.probe:
        docs, queries = data(args.docs, args.queries)
        if "threads" in args.probe:
            probe_threads(docs, queries, 3)
        if "fanout" in args.probe:
            probe_fanout(docs, queries, args.repeats)
    if "ray" in args.probe:
        probe_ray(args.repeats)
    if "update" in args.probe:
        probe_update(data(args.docs, 1)[0])
    if "ingest" in args.probe:
        probe_ingest(data(args.docs, 1)[0])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
