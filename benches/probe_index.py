"""Small, deterministic probes of the inverted index that the notes and README quote.

1. Per-call overhead of ``InvertedIndex.search_one`` (Python facade + binding) on a one-document index, against
   the bare binding call: the fastest of 5 runs of 20,000 calls each.
2. Work per query on the real SPLADE vectors (``../shared/data/lsr-dev``, skipped when absent) from
   ``InvertedIndex.explain``: blocks bounded, blocks visited and documents scored (means over all queries), for
   exact search and for each recall preset. These counts do not depend on the machine's load.

Run: ``.venv/bin/python benches/probe_index.py``.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import sparsecore as sc

LSR_DEV = Path(__file__).resolve().parents[2] / "shared" / "data" / "lsr-dev"


def best_per_call(fn: object, calls: int = 20_000, runs: int = 5) -> float:
    assert callable(fn)
    best = float("inf")
    for _ in range(runs):
        t0 = time.perf_counter()
        for _ in range(calls):
            fn()
        best = min(best, (time.perf_counter() - t0) / calls)
    return best


def overhead() -> None:
    idx = sc.InvertedIndex.build(sc.SparseBatch.from_dicts([{1: 1.0}], dim=30522))
    ind = np.array([5], np.uint32)
    val = np.array([1.0], np.float32)
    core = idx._core
    facade = best_per_call(lambda: idx.search_one(ind, val, 10))
    binding = best_per_call(lambda: core.search_one(ind, val, 10, 0.9, 0.9))
    print(f"search_one per call: facade {facade * 1e6:.2f} us, bare binding {binding * 1e6:.2f} us")


def load(name: str) -> sc.SparseBatch:
    z = np.load(LSR_DEV / f"{name}.npz")
    return sc.SparseBatch(z["indptr"], z["indices"], z["data"], int(z["shape"][1]))


def work_on_lsr_dev() -> None:
    if not (LSR_DEV / "docs.npz").exists():
        print(f"skipped: {LSR_DEV} not found")
        return
    docs, queries = load("docs"), load("queries")
    idx = sc.InvertedIndex.build(docs)
    n_blocks = -(-docs.n_rows // idx._core.block_size)
    print(f"lsr-dev: {idx}, {n_blocks} blocks")
    for target in (1.0, 0.99, 0.95, 0.9):
        tot = {"blocks_bounded": 0, "blocks_visited": 0, "docs_scored": 0}
        for r in range(queries.n_rows):
            e = idx.explain(*queries.row(r), k=10, recall_target=target)
            for key in tot:
                tot[key] += e[key]
        means = ", ".join(f"{k} {v / queries.n_rows:.0f}" for k, v in tot.items())
        print(f"  recall_target {target}: {means} (of {n_blocks} blocks, {docs.n_rows} documents)")


if __name__ == "__main__":
    overhead()
    work_on_lsr_dev()
