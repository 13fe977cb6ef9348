"""Probe: an index grown by ``add`` (several segments) against the same documents in one segment.

Builds the synthetic collection of ``bench_index.py`` (cached under ``benches/data/``) twice: once from its first
half plus ``--adds`` equal ``add`` calls, once in one ``build``. Reports, per recall preset, recall@10, the
single-thread ``search_one`` time per query (median of ``--passes`` passes over the 1,000 queries) and the mean
number of blocks visited (``explain``). The README and ``InvertedIndex.compact`` quote its output.

Run: ``.venv/bin/python benches/probe_segments.py --docs 1000000`` (about 3 minutes at 1M).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_index
import sparsecore as sc

TARGETS = (0.90, 0.95, 0.99)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--docs", type=int, default=200_000, help="synthetic documents (default 200000)")
    ap.add_argument("--adds", type=int, default=5, help="add() calls after building the first half (default 5)")
    ap.add_argument("--passes", type=int, default=3, help="timed passes over the queries (default 3)")
    args = ap.parse_args()
    data = bench_index.load_synthetic(args.docs, 1000, seed=0)
    d, q = data.docs, data.queries

    def part(lo: int, hi: int) -> sc.SparseBatch:
        a, b = d.indptr[lo], d.indptr[hi]
        return sc.SparseBatch.from_arrays(d.indptr[lo : hi + 1] - a, d.indices[a:b], d.data[a:b], d.dim)

    half = args.docs // 2
    grown = sc.InvertedIndex.build(part(0, half))
    step = (args.docs - half) // args.adds
    for lo in range(half, args.docs, step):
        hi = min(lo + step, args.docs)
        grown.add(part(lo, hi), np.arange(lo, hi))
    whole = sc.InvertedIndex.build(part(0, args.docs))
    rows = [(q.indices[q.indptr[i] : q.indptr[i + 1]], q.data[q.indptr[i] : q.indptr[i + 1]]) for i in range(q.n_rows)]
    gt = data.gt_ids[:, :10]
    print(f"{args.docs} documents: {grown.n_segments} segments (first half + {args.adds} adds) against 1")
    for t in TARGETS:
        for name, idx in (("segments", grown), ("one segment", whole)):
            ids = np.array([idx.search_one(a, b, k=10, recall_target=t)[0] for a, b in rows])
            recall = float(np.mean([len(set(ids[i]) & set(gt[i])) / 10 for i in range(len(rows))]))
            times = []
            for _ in range(args.passes):
                t0 = time.perf_counter()
                for a, b in rows:
                    idx.search_one(a, b, k=10, recall_target=t)
                times.append((time.perf_counter() - t0) / len(rows) * 1e3)
            blocks = np.mean([idx.explain(a, b, k=10, recall_target=t)["blocks_visited"] for a, b in rows[:200]])
            print(
                f"  recall_target {t:.2f}, {name:11s}: recall@10 {recall:.3f}, "
                f"{float(np.median(times)):.3f} ms, {blocks:.1f} blocks visited"
            )


if __name__ == "__main__":
    main()
