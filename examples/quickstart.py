"""Quick tour of sparsecore on SPLADE-like vectors made here (no data files needed).

Sparse batches first (pruning, exact top-k, quantization), then an inverted index with approximate and exact
search.

Run with ``make demo`` (sets everything up) or ``python examples/quickstart.py``.
"""

from __future__ import annotations

import time

import numpy as np
import sparsecore as sc


def splade_like(n_rows: int, dim: int, nnz: int, rng: np.random.Generator) -> sc.SparseBatch:
    """Rows of ``nnz`` distinct Zipf-popular terms with log-normal weights."""
    popularity = 1.0 / np.arange(1, dim + 1) ** 1.1
    popularity /= popularity.sum()
    rows = []
    for _ in range(n_rows):
        cols = np.unique(rng.choice(dim, size=nnz, p=popularity))
        rows.append((cols, rng.lognormal(0.0, 0.6, size=cols.size)))
    return sc.SparseBatch.from_pairs(rows, dim)


def main() -> None:
    """Build documents and queries, prune and quantize them, search them exactly, then through an index."""
    rng = np.random.default_rng(0)
    docs = splade_like(20_000, 30_522, 120, rng)
    queries = splade_like(200, 30_522, 40, rng)
    print(f"documents: {docs}\nqueries:   {queries}")

    pruned = docs.prune_mass(0.9)
    print(f"prune_mass(0.9) keeps {pruned.nnz / docs.nnz:.1%} of the entries ({pruned.nnz:,} of {docs.nnz:,})")

    t0 = time.perf_counter()
    ids, scores = queries.scores_top_k(docs, k=10)
    t_ours = time.perf_counter() - t0
    exact = queries.scores(docs)
    best = np.sort(exact, axis=1)[:, ::-1][:, :10]
    print(
        f"scores_top_k: {t_ours * 1e3 / queries.n_rows:.3f} ms/query, matches the dense oracle: "
        f"{bool(np.allclose(scores, best, rtol=1e-5, atol=1e-6))}"
    )

    _, pscores = queries.scores_top_k(pruned, k=10)
    print(f"top-10 score kept after pruning docs to 90% mass: {float(pscores.sum() / scores.sum()):.3f}")

    q8 = docs.quantize(8)
    err = float(np.abs(q8.dequantize().data - docs.data).max())
    print(f"8-bit quantization: {q8}, max error {err:.4f} (bound {q8.max_error:.4f})")
    print("first query's best document:", int(ids[0, 0]), f"score {scores[0, 0]:.3f}")

    t0 = time.perf_counter()
    index = sc.InvertedIndex.build(docs)
    print(f"\n{index} built in {time.perf_counter() - t0:.1f} s")
    for target in (0.9, 0.95, 1.0):
        t0 = time.perf_counter()
        got = [index.search_one(*queries.row(r), k=10, recall_target=target)[0] for r in range(queries.n_rows)]
        ms = (time.perf_counter() - t0) * 1e3 / queries.n_rows
        recall = np.mean([len(set(g) & set(w)) / 10 for g, w in zip(got, ids, strict=True)])
        print(f"recall_target={target}: {ms:.3f} ms/query, recall@10 vs exact {recall:.3f}")


if __name__ == "__main__":
    main()
