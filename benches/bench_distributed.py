"""Sharded index (``sparsecore.distributed``) against the single-process index, on this machine.

On synthetic SPLADE-like documents (``_synthetic.py``, 1M by default) split into 1, 2 and 4 shards, for the
``local`` backend (threads) and the ``ray`` backend (one actor per shard, a local Ray cluster of 2 CPUs):

- build time of the shards (tasks in parallel) against one ``InvertedIndex.build`` with 2 threads;
- batch throughput: 1000 queries in one ``search`` call against the single index's ``search(num_threads=2)``;
  target: 2 shards on 2 cores >= 0.8x the single index's queries per second;
- latency one query at a time (every shard and the single index with 1 thread): the fan-out overhead is the
  sharded search's time minus the slowest shard's own time for the same query, measured query by query with each
  shard's file loaded in this process; target <= 0.3 ms;
- quality: exact-mode results of the sharded index equal the single index's (ids and scores), recall@10 of the
  default approximate search against exact.

It ends with a written scaling estimate for 100M documents from the measured per-shard figures (bytes per
document, per-shard latency against shard size, the fan-out overhead).

Run: ``python benches/bench_distributed.py [--docs N] [--backends local ray] [--shards 1 2 4] [--repeats N]``
(Ray needs ``pip install 'ray[serve]'``; without it only ``local`` runs). Writes
``benches/results/distributed.json`` and regenerates ``benches/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import json
import math
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import _synthetic
import numpy as np
import sparsecore as sc
from _common import CaseResult, log, machine_info, regenerate_results_md, write_results
from numpy.typing import NDArray
from sparsecore.distributed import ShardedIndex

DATA_DIR = Path(__file__).resolve().parent / "data"
TARGET_OVERHEAD_MS = 0.3
TARGET_QPS_RATIO = 0.8
#: Recall target of the extra sharded run compared with the single index's default (0.95): merging s shard lists
#: gives a higher recall than one index at the same target, so the sharded index reaches the single index's
#: recall at a lower target.
LOW_RECALL_TARGET = 0.9


def load_data(n_docs: int, n_queries: int, seed: int) -> tuple[sc.SparseBatch, sc.SparseBatch, str]:
    """Synthetic docs and queries, generated once and cached under ``benches/data/``."""
    key = hashlib.sha256(
        json.dumps([n_docs, n_queries, seed]).encode() + Path(_synthetic.__file__).read_bytes()
    ).hexdigest()[:10]
    path = DATA_DIR / f"distributed_{n_docs}x{n_queries}_s{seed}_{key}.npz"
    if not path.exists():
        log(f"generating {n_docs:,} documents and {n_queries:,} queries")
        syn = _synthetic.generate(n_docs, n_queries, seed=seed)
        DATA_DIR.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp.npz")
        d, q = syn.docs, syn.queries
        np.savez(tmp, di=d.indptr, dx=d.indices, dv=d.data, qi=q.indptr, qx=q.indices, qv=q.data, dim=d.dim)
        tmp.replace(path)
    with np.load(path) as z:
        dim = int(z["dim"])
        docs = sc.SparseBatch.from_arrays(z["di"], z["dx"], z["dv"], dim)
        queries = sc.SparseBatch.from_arrays(z["qi"], z["qx"], z["qv"], dim)
    desc = (
        f"synthetic SPLADE-like (benches/_synthetic.py): {queries.n_rows} queries x {docs.n_rows} docs, "
        f"vocab {dim}, {docs.nnz / docs.n_rows:.0f} nnz/doc, {queries.nnz / queries.n_rows:.0f} nnz/query, "
        f"seed {seed}"
    )
    return docs, queries, desc


def recall(found: NDArray[np.int64], truth: NDArray[np.int64]) -> float:
    """Mean fraction of the true top-k found (padding ignored)."""
    hits = [
        len(set(f[f >= 0].tolist()) & set(t[t >= 0].tolist())) / max(1, int((t >= 0).sum()))
        for f, t in zip(found, truth, strict=True)
    ]
    return float(np.mean(hits))


def p99(xs: list[float]) -> float:
    """99th percentile."""
    return float(np.percentile(xs, 99))


def run_config(
    backend: str,
    n_shards: int,
    docs: sc.SparseBatch,
    queries: sc.SparseBatch,
    single: sc.InvertedIndex,
    exact: tuple[NDArray[np.int64], NDArray[np.float32]],
    args: argparse.Namespace,
    workdir: Path,
) -> dict[str, Any]:
    """Build, check and time one (backend, n_shards) configuration."""
    out = workdir / f"sharded-{n_shards}"
    t0 = time.perf_counter()
    idx = ShardedIndex.build(docs, out, n_shards, backend=backend, overwrite=True)  # type: ignore[arg-type]
    build_s = time.perf_counter() - t0
    log(f"{backend} {n_shards} shards: built in {build_s:.1f} s")
    try:
        k = args.k
        ex = idx.search(queries, k, recall_target=1.0)
        identical = bool(np.array_equal(ex.ids, exact[0]) and np.array_equal(ex.scores, exact[1]))
        approx = idx.search(queries, k)
        rec = recall(approx.ids, exact[0])
        single_approx = single.search(queries, k, num_threads=2)[0]
        rec_single = recall(single_approx, exact[0])
        # Per-shard indexes in this process, for the slowest-shard time of every query.
        shards = [sc.InvertedIndex.load(out / e.file, mmap=True) for e in idx.manifest.shards]
        stats = idx.stats()
        nq = min(args.latency_queries, queries.n_rows)
        rows = [queries[i : i + 1] for i in range(nq)]
        med, med_slow, med_single = latency_loop(idx, shards, single, rows, k, args.repeats)
        overhead = [a - b for a, b in zip(med, med_slow, strict=True)]
        compiled: dict[str, Any] = {}
        if backend == "ray":  # the same loop through Ray Compiled Graphs (opt-in: their actors poll a busy core)
            with ShardedIndex.open(out, backend="ray", compiled_graphs=True) as cidx:
                c_med, c_slow, _ = latency_loop(cidx, shards, single, rows, k, args.repeats)
                be = cidx.backend
                n_compiled = getattr(be, "compiled_searches", 0)
            c_over = [a - b for a, b in zip(c_med, c_slow, strict=True)]
            compiled = {
                "latency_ms_median": statistics.median(c_med),
                "latency_ms_p99": p99(c_med),
                "slowest_shard_ms_median": statistics.median(c_slow),
                "overhead_ms_median": statistics.median(c_over),
                "overhead_ms_p99": p99(c_over),
                "compiled_searches": n_compiled,
                "searches": (args.repeats * nq) + 1,
            }
        batch_sharded: list[float] = []
        batch_single: list[float] = []
        for _ in range(args.repeats):
            t = time.perf_counter()
            idx.search(queries, k)
            batch_sharded.append(time.perf_counter() - t)
            t = time.perf_counter()
            single.search(queries, k, num_threads=2)
            batch_single.append(time.perf_counter() - t)
        # Exact mode, and the shards at a lower recall target (their merge has a higher recall than one shard's).
        batch_exact: list[float] = []
        batch_single_exact: list[float] = []
        batch_low: list[float] = []
        for _ in range(args.repeats):
            t = time.perf_counter()
            idx.search(queries, k, recall_target=1.0)
            batch_exact.append(time.perf_counter() - t)
            t = time.perf_counter()
            single.search(queries, k, recall_target=1.0, num_threads=2)
            batch_single_exact.append(time.perf_counter() - t)
            t = time.perf_counter()
            low = idx.search(queries, k, recall_target=LOW_RECALL_TARGET)
            batch_low.append(time.perf_counter() - t)
        rec_low = recall(low.ids, exact[0])
        del shards
    finally:
        idx.close()
    qps = queries.n_rows / statistics.median(batch_sharded)
    qps_single = queries.n_rows / statistics.median(batch_single)
    res = {
        "backend": backend,
        "n_shards": n_shards,
        "build_s": build_s,
        "exact_identical": identical,
        "recall_at_10": rec,
        "recall_at_10_single": rec_single,
        "latency_ms_median": statistics.median(med),
        "latency_ms_p99": p99(med),
        "latency_single_ms_median": statistics.median(med_single),
        "latency_single_ms_p99": p99(med_single),
        "slowest_shard_ms_median": statistics.median(med_slow),
        "slowest_shard_ms_p99": p99(med_slow),
        "overhead_ms_median": statistics.median(overhead),
        "overhead_ms_mean": float(np.mean(overhead)),
        "overhead_ms_p99": p99(overhead),
        "batch_s": batch_sharded,
        "batch_single_s": batch_single,
        "qps": qps,
        "qps_single_2t": qps_single,
        "qps_ratio": qps / qps_single,
        "batch_exact_s": batch_exact,
        "batch_single_exact_s": batch_single_exact,
        "batch_low_s": batch_low,
        "recall_at_10_low": rec_low,
        "shard_docs": [s["n_docs"] for s in stats["shards"]],
        "shard_file_bytes": stats["file_bytes"],
        "shard_memory_bytes": stats["memory_bytes"],
        "latency_samples_sharded_ms": med,
        "latency_samples_slowest_ms": med_slow,
    }
    if compiled:
        res["compiled_graphs"] = compiled
    log(
        f"{backend} {n_shards} shards: exact identical {identical}; recall@10 {rec:.3f}; "
        f"QPS {qps:.0f} vs {qps_single:.0f} ({qps / qps_single:.2f}x); latency median {res['latency_ms_median']:.3f} "
        f"ms (slowest shard {res['slowest_shard_ms_median']:.3f}, overhead {res['overhead_ms_median']:.3f}, "
        f"single {res['latency_single_ms_median']:.3f})"
        + (
            f"; with compiled graphs latency median {compiled['latency_ms_median']:.3f} ms, overhead "
            f"{compiled['overhead_ms_median']:.3f} ms ({compiled['compiled_searches']} compiled searches)"
            if compiled
            else ""
        )
    )
    return res


def latency_case(c: dict[str, Any], how: str, extra: str) -> CaseResult:
    """The one-query-at-a-time row of a configuration's latency figures ``c`` (sharded search vs slowest shard)."""
    met = "met" if c["overhead_ms_median"] <= TARGET_OVERHEAD_MS else "missed"
    return CaseResult(
        case=f"one query at a time, {c['n_shards']} shard(s), {how} vs its slowest shard alone (1 thread each)",
        dataset="synth",
        threads=1,
        ours_ms=round(c["latency_ms_median"], 4),
        anchor_ms=round(c["slowest_shard_ms_median"], 4),
        ratio=round(c["latency_ms_median"] / c["slowest_shard_ms_median"], 4),
        quality=f"fan-out overhead median {c['overhead_ms_median']:.3f} ms, p99 {c['overhead_ms_p99']:.3f} "
        f"(target <= 0.3: {met}); {extra}",
        quality_metrics={k: c[k] for k in ("overhead_ms_median", "overhead_ms_p99", "latency_ms_p99")},
    )


def latency_loop(
    idx: ShardedIndex,
    shards: list[sc.InvertedIndex],
    single: sc.InvertedIndex,
    rows: list[sc.SparseBatch],
    k: int,
    repeats: int,
) -> tuple[list[float], list[float], list[float]]:
    """One query at a time: per query the median ms of the sharded search, of its slowest shard, of one index."""
    nq = len(rows)
    lat_sharded: list[list[float]] = [[] for _ in range(nq)]
    lat_slowest: list[list[float]] = [[] for _ in range(nq)]
    lat_single: list[list[float]] = [[] for _ in range(nq)]
    idx.search(rows[0], k, num_threads=1)  # warm-up (a compiled graph is compiled here)
    for _ in range(repeats):
        for i, q in enumerate(rows):
            t = time.perf_counter()
            idx.search(q, k, num_threads=1)
            lat_sharded[i].append(time.perf_counter() - t)
            worst = 0.0
            for sh in shards:
                t = time.perf_counter()
                sh.search(q, k, num_threads=1)
                worst = max(worst, time.perf_counter() - t)
            lat_slowest[i].append(worst)
            t = time.perf_counter()
            single.search(q, k, num_threads=1)
            lat_single[i].append(time.perf_counter() - t)
    return (
        [1e3 * statistics.median(x) for x in lat_sharded],
        [1e3 * statistics.median(x) for x in lat_slowest],
        [1e3 * statistics.median(x) for x in lat_single],
    )


def work_notes(configs: list[dict[str, Any]]) -> list[str]:
    """Why more shards cost throughput: the CPU time a query needs over all shards against the single index."""
    local = [c for c in configs if c["backend"] == "local"]
    if not local:
        return []
    parts = []
    for c in local:
        n, slow, one = c["n_shards"], c["slowest_shard_ms_median"], c["latency_single_ms_median"]
        parts.append(f"{n} shards {n} x {slow:.3f} ms (single index {one:.3f} ms, {n * slow / one:.2f}x)")
    return [
        "Work per query over all shards (the slowest shard's median one-query time times the number of shards, an "
        "upper bound of their sum): " + "; ".join(parts) + ". A shard of n/s documents costs more than 1/s of the "
        "whole index's time, so on a fixed number of cores the batch throughput falls with the shard count; "
        "sharding pays when shards get cores (or machines) of their own."
    ]


def scaling_estimate(configs: list[dict[str, Any]], n_docs: int) -> list[str]:
    """A written estimate for 100M documents from the measured per-shard figures."""
    local = [c for c in configs if c["backend"] == "local"] or configs
    per_doc = statistics.median(c["shard_file_bytes"] / n_docs for c in local)
    mem_per_doc = statistics.median(c["shard_memory_bytes"] / n_docs for c in local)
    # Per-shard latency against shard size: the slowest shard's median time at each shard size.
    sizes = np.array([n_docs / c["n_shards"] for c in local], dtype=np.float64)
    lats = np.array([c["slowest_shard_ms_median"] for c in local], dtype=np.float64)
    if len(set(sizes.tolist())) >= 2:
        slope, icpt = np.polyfit(np.log(sizes), np.log(lats), 1)
    else:
        slope, icpt = 1.0, math.log(lats[0] / sizes[0])
    shard_docs = 5_000_000
    n_shards = 100_000_000 // shard_docs
    shard_lat = math.exp(icpt) * shard_docs**slope
    ray = [c for c in configs if c["backend"] == "ray"]
    over = statistics.median(c["overhead_ms_median"] for c in (ray or local))
    mem_gb = per_doc * shard_docs / 1e9
    node_gb = 64
    per_node = int(node_gb * 0.75 // mem_gb)
    return [
        f"Scaling estimate for 100M documents (from this run): a shard file takes {per_doc:.0f} bytes per document "
        f"and the loaded shard reports {mem_per_doc:.0f} bytes per document (memory_usage(), memory-mapped from the "
        f"file, so mostly page cache), so a shard of {shard_docs / 1e6:.0f}M documents "
        f"needs {mem_gb:.1f} GB and a 64 GB node holds {per_node} shards with a quarter of its memory left for the "
        f"page cache and Ray; 100M documents are {n_shards} shards, {math.ceil(n_shards / per_node)} such nodes "
        f"(x replicas).",
        f"Per-shard latency grows as shard_size^{slope:.2f} here (slowest shard's median one-query time at "
        f"{', '.join(f'{s / 1e3:.0f}k' for s in sizes)} documents: {', '.join(f'{x:.3f}' for x in lats)} ms), "
        f"which puts a 5M-document shard at about {shard_lat:.2f} ms per query on one core of this machine; with "
        f"every shard on its own core the expected one-query latency is that plus the fan-out overhead measured "
        f"here ({over:.2f} ms median{' for Ray' if ray else ''}), plus network time between nodes (not measured). "
        f"Batch throughput scales with the cores: every query costs about {n_shards} x {shard_lat:.2f} ms of CPU "
        f"in total.",
    ]


def make_notes(configs: list[dict[str, Any]], latency_queries: int, n_docs: int) -> list[str]:
    """The notes under the results table."""
    return [
        "Threads: each shard searches with cores // n_shards threads (at least 1) in batch mode, 1 thread in the "
        "one-query loop; the Ray cluster has 2 CPUs (ray.init(num_cpus=2)), one actor per shard. With 4 shards "
        "on 2 cores the shards share the cores. The local backend searches the shards of a single query one after "
        "the other on the calling thread, larger batches on threads (one shard on the calling thread). The Ray "
        "backend makes one actor call per shard; its one-query loop runs a second time with "
        "ShardedIndex.open(compiled_graphs=True), which sends query batches under 96 KiB through a Ray Compiled "
        "Graph (shared-memory channels set up once; each actor then polls a busy core, here competing with the "
        "other shards and the driver for the 2 cores).",
        "Fan-out overhead = sharded search time minus the slowest shard's own search time for the same query "
        "(each shard's file loaded in the benchmark process), medians over the repeats, then the median over "
        f"{latency_queries} queries.",
        *work_notes(configs),
        *scaling_estimate(configs, n_docs),
    ]


def rewrite_notes(path: Path) -> int:
    """Recompute the notes of a results file from the configurations it stores; regenerate RESULTS.md."""
    payload = json.loads(path.read_text())
    cfg = payload["config"]
    payload["notes"] = make_notes(payload["configs"], min(cfg["latency_queries"], cfg["queries"]), cfg["docs"])
    path.write_text(json.dumps(payload, indent=2) + "\n")
    if path.resolve().parent == (Path(__file__).resolve().parent / "results"):
        regenerate_results_md()
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--docs", type=int, default=1_000_000)
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--latency-queries", type=int, default=300, help="queries timed one at a time")
    ap.add_argument("--shards", type=int, nargs="+", default=[1, 2, 4])
    ap.add_argument("--backends", nargs="+", default=["local", "ray"], choices=["local", "ray"])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workdir", default=None, help="where shard files go (default: a temporary folder)")
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results" / "distributed.json")
    ap.add_argument(
        "--notes-from", type=Path, default=None, help="only recompute the notes of this results file from its configs"
    )
    args = ap.parse_args(argv)
    if args.notes_from is not None:
        return rewrite_notes(args.notes_from)
    machine = machine_info(["ray"])
    docs, queries, desc = load_data(args.docs, args.queries, args.seed)
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="sparsecore-bench-distributed-"))
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        t0 = time.perf_counter()
        built = sc.InvertedIndex.build(docs, num_threads=2, progress=False)
        single_build_s = time.perf_counter() - t0
        built.save(workdir / "single.spc")
        del built
        single = sc.InvertedIndex.load(workdir / "single.spc", mmap=True)
        log(f"single index: built in {single_build_s:.1f} s")
        exact = single.search(queries, args.k, recall_target=1.0, num_threads=2)
        configs = []
        for backend in args.backends:
            if backend == "ray":
                ray: Any = importlib.import_module("ray")  # optional; untyped calls stay here
                ray.init(num_cpus=2, object_store_memory=3_000_000_000, include_dashboard=False)
            try:
                for n in args.shards:
                    configs.append(run_config(backend, n, docs, queries, single, exact, args, workdir))
            finally:
                if backend == "ray":
                    ray.shutdown()
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    cases: list[CaseResult] = []
    for c in configs:
        be, n = c["backend"], c["n_shards"]
        ms_q = 1e3 * statistics.median(c["batch_s"]) / queries.n_rows
        ms_q1 = 1e3 * statistics.median(c["batch_single_s"]) / queries.n_rows
        met = "met" if c["qps_ratio"] >= TARGET_QPS_RATIO else "missed"
        cases.append(
            CaseResult(
                case=f"batch search ({queries.n_rows} queries, k={args.k}, default approx) {n} shard(s), {be} "
                f"backend vs single index, 2 threads",
                dataset="synth",
                threads=2,
                ours_ms=round(ms_q, 4),
                anchor_ms=round(ms_q1, 4),
                ratio=round(ms_q / ms_q1, 4),
                quality=f"QPS {c['qps']:.0f} vs {c['qps_single_2t']:.0f} = {c['qps_ratio']:.2f}x"
                + (f" (target >= 0.8x: {met})" if n == 2 else "")
                + f"; recall@10 {c['recall_at_10']:.3f} vs {c['recall_at_10_single']:.3f}; "
                f"exact mode identical to the single index: {c['exact_identical']}",
                quality_metrics={"qps": c["qps"], "qps_single": c["qps_single_2t"], "recall": c["recall_at_10"]},
                ours_samples_ms=[round(1e3 * x / queries.n_rows, 4) for x in c["batch_s"]],
                anchor_samples_ms=[round(1e3 * x / queries.n_rows, 4) for x in c["batch_single_s"]],
            )
        )
        if "batch_exact_s" in c:
            ms_e = 1e3 * statistics.median(c["batch_exact_s"]) / queries.n_rows
            ms_e1 = 1e3 * statistics.median(c["batch_single_exact_s"]) / queries.n_rows
            cases.append(
                CaseResult(
                    case=f"batch search ({queries.n_rows} queries, k={args.k}, exact) {n} shard(s), {be} backend vs "
                    f"single index exact, 2 threads",
                    dataset="synth",
                    threads=2,
                    ours_ms=round(ms_e, 4),
                    anchor_ms=round(ms_e1, 4),
                    ratio=round(ms_e / ms_e1, 4),
                    quality=f"QPS ratio {ms_e1 / ms_e:.2f}x; identical results: {c['exact_identical']}",
                    ours_samples_ms=[round(1e3 * x / queries.n_rows, 4) for x in c["batch_exact_s"]],
                    anchor_samples_ms=[round(1e3 * x / queries.n_rows, 4) for x in c["batch_single_exact_s"]],
                )
            )
            ms_l = 1e3 * statistics.median(c["batch_low_s"]) / queries.n_rows
            cases.append(
                CaseResult(
                    case=f"batch search ({queries.n_rows} queries, k={args.k}) {n} shard(s), {be} backend at "
                    f"recall_target {LOW_RECALL_TARGET} vs single index at its default (0.95), 2 threads",
                    dataset="synth",
                    threads=2,
                    ours_ms=round(ms_l, 4),
                    anchor_ms=round(ms_q1, 4),
                    ratio=round(ms_l / ms_q1, 4),
                    quality=f"QPS ratio {ms_q1 / ms_l:.2f}x at recall@10 {c['recall_at_10_low']:.3f} vs "
                    f"{c['recall_at_10_single']:.3f}",
                    ours_samples_ms=[round(1e3 * x / queries.n_rows, 4) for x in c["batch_low_s"]],
                )
            )
        cases.append(
            latency_case(
                c,
                f"{be} backend",
                f"p99 latency {c['latency_ms_p99']:.3f} ms vs single index {c['latency_single_ms_p99']:.3f} (median "
                f"{c['latency_single_ms_median']:.3f})",
            )
        )
        cg = c.get("compiled_graphs")
        if cg:
            cases.append(
                latency_case(
                    {**cg, "n_shards": n},
                    f"{be} backend with compiled graphs (ShardedIndex.open(compiled_graphs=True))",
                    f"{cg['compiled_searches']} of {cg['searches']} searches through the graph",
                )
            )
        cases.append(
            CaseResult(
                case=f"build {n} shard(s), {be} backend (tasks in parallel, 2 cores) vs one InvertedIndex.build",
                dataset="synth",
                threads=2,
                ours_ms=round(1e3 * c["build_s"], 1),
                anchor_ms=round(1e3 * single_build_s, 1),
                ratio=round(c["build_s"] / single_build_s, 4),
                quality=f"shard files {c['shard_file_bytes'] / 1e6:.0f} MB in all; documents per shard "
                f"{c['shard_docs']}",
            )
        )
    notes = make_notes(configs, min(args.latency_queries, queries.n_rows), docs.n_rows)
    write_results(
        args.out,
        benchmark="distributed",
        script="benches/bench_distributed.py",
        mode="full" if args.docs >= 1_000_000 else "quick",
        machine=machine,
        config={k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
        | {"single_build_s": single_build_s},
        datasets={"synth": {"description": desc}},
        cases=cases,
        notes=notes,
    )
    payload = json.loads(args.out.read_text())
    payload["configs"] = configs
    args.out.write_text(json.dumps(payload, indent=2) + "\n")
    if args.out.resolve().parent == (Path(__file__).resolve().parent / "results"):
        regenerate_results_md()
    for n in notes:
        log(n)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    raise SystemExit(main())
