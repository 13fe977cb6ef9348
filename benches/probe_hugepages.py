"""Probe: single-thread ``search_one`` latency with and without transparent huge pages for the index.

The index asks Linux for huge pages (``MADV_HUGEPAGE``) for its large arrays and search scratch;
``SPARSECORE_HUGE_PAGES=0`` turns that off. This script builds the synthetic collection of ``bench_index.py``
(cached under ``benches/data/``) in fresh processes, alternating the two settings (off, on, off, on, ...), and
reports per setting the median over processes of each process's median time per query at the recall presets,
plus how much memory the kernel backed with huge pages (``AnonHugePages`` of the process). Fresh processes,
because one process holding both indexes measured 2-4 % in favour of whichever index was built first.
The effect depends on the system's THP setting (``/sys/kernel/mm/transparent_hugepage/enabled``): with
``madvise`` the advice decides, with ``always`` both settings get huge pages, with ``never`` neither does.

Run: ``.venv/bin/python benches/probe_hugepages.py --docs 1000000 --rounds 2`` (about 4 minutes at 1M).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

BENCH_DIR = Path(__file__).resolve().parent
TARGETS = (0.90, 0.95, 0.99)


def child(n_docs: int, passes: int) -> None:
    import time

    sys.path.insert(0, str(BENCH_DIR))
    import bench_index
    import sparsecore as sc

    def huge_kb() -> int:
        rollup = Path("/proc/self/smaps_rollup")
        for line in rollup.read_text().splitlines() if rollup.exists() else []:
            if line.startswith("AnonHugePages:"):
                return int(line.split()[1])
        return 0

    data = bench_index.load_synthetic(n_docs, 1000, seed=0)
    d, q = data.docs, data.queries
    docs = sc.SparseBatch.from_arrays(d.indptr, d.indices, d.data, d.dim)
    before = huge_kb()
    idx = sc.InvertedIndex.build(docs)
    rows = [(q.indices[q.indptr[i] : q.indptr[i + 1]], q.data[q.indptr[i] : q.indptr[i + 1]]) for i in range(q.n_rows)]
    out: dict[str, float] = {"huge_pages_mb": (huge_kb() - before) / 1024}
    for t in TARGETS:
        times = []
        for _ in range(passes):
            t0 = time.perf_counter()
            for ind, val in rows:
                idx.search_one(ind, val, k=10, recall_target=t)
            times.append((time.perf_counter() - t0) / len(rows) * 1e3)
        out[f"{t:.2f}"] = float(np.median(times))
    print(json.dumps(out))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--docs", type=int, default=200_000, help="synthetic documents (default 200000)")
    ap.add_argument("--rounds", type=int, default=2, help="processes per setting (default 2)")
    ap.add_argument("--passes", type=int, default=5, help="passes over the 1,000 queries per preset (default 5)")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.docs, args.passes)
        return
    results: dict[str, list[dict[str, float]]] = {"0": [], "1": []}
    for r in range(args.rounds):
        for setting in ("0", "1"):
            env = dict(os.environ, SPARSECORE_HUGE_PAGES=setting)
            cmd = [sys.executable, __file__, "--child", "--docs", str(args.docs), "--passes", str(args.passes)]
            res = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True)
            row = json.loads(res.stdout.strip().splitlines()[-1])
            results[setting].append(row)
            print(f"round {r + 1}, SPARSECORE_HUGE_PAGES={setting}: {row}", flush=True)
    print(f"{args.docs} documents, median over {args.rounds} processes, ms per query (off -> on):")
    for t in TARGETS:
        off = float(np.median([x[f"{t:.2f}"] for x in results["0"]]))
        on = float(np.median([x[f"{t:.2f}"] for x in results["1"]]))
        print(f"  recall_target {t:.2f}: {off:.4f} -> {on:.4f} ({(on / off - 1) * 100:+.1f} %)")
    mb = [x["huge_pages_mb"] for x in results["1"]]
    print(f"  huge pages granted with the advice: {min(mb):.0f}-{max(mb):.0f} MB per process")


if __name__ == "__main__":
    main()
