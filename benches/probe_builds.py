"""Probe: the same workload under two builds of sparsecore, in fresh processes taken in turns (A, B, A, B, ...).

For changes that have no run-time switch (a SIMD kernel, a scan order, a dependency's features): build the
package at two commits, copy each build's ``python/sparsecore`` folder aside, and point this script at the two
copies. Each process imports one copy, runs one workload and prints its medians; the script reports per build the
median over its processes and the change from A to B. Results (ids and scores) are not compared here: the tests
do that; recall is printed for the index workloads.

Workloads:

- ``index``: ``search_one`` over the 1,000 queries of the synthetic collection of ``bench_index.py`` (``--docs``,
  cached under ``benches/data/``) at the recall presets and exact, median of ``--passes`` passes. The index is
  built once by build A and saved to ``--index`` (both builds must read the file format), then loaded
  (``mmap=False``) by every process.
- ``lsr``: the same on the real SPLADE vectors (``../shared/data/lsr-dev``), an index built in each process.
- ``omp``: ``sparsecore.pursuit.omp`` on the problem of ``bench_pursuit.py`` (``--signals``, default 10,000;
  ``--k``, ``--dtype``, ``--threads``, ``--output``; with ``--gram`` the Gram matrix is passed in), median of
  ``--passes`` calls, ``--settle`` idle seconds before each (the pursuit benchmark idles 0.15 s). ``--signals 1``
  measures the fixed cost of a call: the Gram matrix (or, with ``--gram``, its check).

Example (what the notes quote for the AVX-512 scoring kernel, commit 865d9a9 against its parent)::

    git checkout 865d9a9~1 && .venv/bin/maturin develop --release && cp -r python/sparsecore /tmp/a/
    git checkout 865d9a9 && .venv/bin/maturin develop --release && cp -r python/sparsecore /tmp/b/
    .venv/bin/python benches/probe_builds.py /tmp/a /tmp/b --workload index --docs 1000000 --rounds 3
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

BENCH_DIR = Path(__file__).resolve().parent
TARGETS = (0.90, 0.95, 0.99, 1.0)


def _index_times(idx: Any, queries: Any, gt: Any, passes: int) -> dict[str, list[float]]:
    ptr = queries.indptr
    rows = [(queries.indices[ptr[i] : ptr[i + 1]], queries.data[ptr[i] : ptr[i + 1]]) for i in range(queries.n_rows)]
    out: dict[str, list[float]] = {}
    for t in TARGETS:
        times, hits = [], []
        for _ in range(passes):
            t0 = time.perf_counter()
            hits = [idx.search_one(ind, val, k=10, recall_target=t)[0] for ind, val in rows]
            times.append((time.perf_counter() - t0) / len(rows) * 1e3)
        recall = np.mean([len(set(h.tolist()) & set(gt[i, :10].tolist())) / 10 for i, h in enumerate(hits)])
        out[f"{t:.2f}"] = [float(np.median(times)), float(recall)]
    return out


def child(args: argparse.Namespace) -> None:
    sys.path.insert(0, str(args.build))
    sys.path.insert(1, str(BENCH_DIR))
    import sparsecore as sc

    if not Path(sc.__file__).resolve().is_relative_to(Path(args.build).resolve()):
        raise SystemExit(f"imported {sc.__file__}, not the build under {args.build}")
    if args.workload == "index":
        import bench_index

        data = bench_index.load_synthetic(args.docs, 1000, seed=0)
        index_path = Path(args.index)
        if not index_path.exists():
            d = data.docs
            sc.InvertedIndex.build(sc.SparseBatch.from_arrays(d.indptr, d.indices, d.data, d.dim)).save(index_path)
        idx = sc.InvertedIndex.load(index_path, mmap=False)
        out: dict[str, Any] = _index_times(idx, data.queries, data.gt_ids, args.passes)
    elif args.workload == "lsr":
        import bench_index

        lsr = bench_index.load_lsr_dev(Path(tempfile.mkdtemp()))
        if lsr is None:
            raise SystemExit("lsr-dev not found under ../shared/data")
        d = lsr.docs
        idx = sc.InvertedIndex.build(sc.SparseBatch.from_arrays(d.indptr, d.indices, d.data, d.dim))
        out = _index_times(idx, lsr.queries, lsr.gt_ids, args.passes)
    else:
        import bench_pursuit
        from sparsecore import pursuit

        x, dic, _ = bench_pursuit.make_problem(args.signals, args.k, 0)
        x, dic = x.astype(args.dtype), dic.astype(args.dtype)
        gram = dic @ dic.T if args.gram else None
        times = []
        for _ in range(args.passes):
            time.sleep(args.settle)
            t0 = time.perf_counter()
            pursuit.omp(x, dic, k=args.k, gram=gram, output=args.output, num_threads=args.threads)
            times.append(time.perf_counter() - t0)
        out = {"seconds": [float(np.median(times))]}
    print(json.dumps(out))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("builds", nargs="*", type=Path, help="two folders, each holding a built `sparsecore` package")
    ap.add_argument("--workload", choices=("index", "lsr", "omp"), default="index")
    ap.add_argument("--docs", type=int, default=1_000_000, help="synthetic documents for `index` (default 1000000)")
    ap.add_argument("--index", default=None, help="index file for `index` (default: a temporary file)")
    ap.add_argument("--k", type=int, default=16, help="atoms per signal for `omp` (default 16)")
    ap.add_argument("--dtype", choices=("float32", "float64"), default="float64")
    ap.add_argument("--threads", type=int, default=1, help="threads for `omp` (default 1)")
    ap.add_argument("--signals", type=int, default=10_000, help="signals for `omp` (default 10000)")
    ap.add_argument("--gram", action="store_true", help="pass the Gram matrix to `omp`")
    ap.add_argument("--output", choices=("dense", "csr"), default="dense", help="output of `omp` (default dense)")
    ap.add_argument("--settle", type=float, default=0.0, help="idle seconds before each `omp` call (default 0)")
    ap.add_argument("--rounds", type=int, default=3, help="processes per build (default 3)")
    ap.add_argument("--passes", type=int, default=5, help="passes (or calls) per process (default 5)")
    ap.add_argument("--build", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.build is not None:
        child(args)
        return
    if len(args.builds) != 2:
        ap.error("give two build folders")
    with tempfile.TemporaryDirectory() as tmp:
        index = args.index or str(Path(tmp) / "probe.scx")
        results: list[list[dict[str, list[float]]]] = [[], []]
        for r in range(args.rounds):
            for b, build in enumerate(args.builds):
                cmd = [sys.executable, __file__, "--build", str(build), "--workload", args.workload, "--index", index]
                cmd += ["--docs", str(args.docs), "--k", str(args.k), "--dtype", args.dtype]
                cmd += ["--threads", str(args.threads), "--passes", str(args.passes), "--signals", str(args.signals)]
                cmd += ["--output", args.output, "--settle", str(args.settle)] + (["--gram"] if args.gram else [])
                res = subprocess.run(cmd, check=True, capture_output=True, text=True)
                row = json.loads(res.stdout.strip().splitlines()[-1])
                results[b].append(row)
                print(f"round {r + 1}, build {'AB'[b]} ({build}): {row}", flush=True)
    unit = "s per call" if args.workload == "omp" else "ms per query (recall@10)"
    print(f"{args.workload}: median over {args.rounds} processes, {unit}, A -> B:")
    for key in results[0][0]:
        med_a = float(np.median([x[key][0] for x in results[0]]))
        med_b = float(np.median([x[key][0] for x in results[1]]))
        first = (results[0][0][key], results[1][0][key])
        extra = f" (recall {first[0][1]:.4f} / {first[1][1]:.4f})" if len(first[0]) > 1 else ""
        print(f"  {key}: {med_a:.4f} -> {med_b:.4f} ({(med_b / med_a - 1) * 100:+.1f} %){extra}")


if __name__ == "__main__":
    main()
