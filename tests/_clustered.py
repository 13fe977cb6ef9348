"""Topic-structured sparse data for the sharded-index tests (a realistic mix of shared and rare terms)."""

from __future__ import annotations

import numpy as np
import sparsecore as sc


def clustered(
    n_docs: int,
    n_queries: int,
    seed: int,
    *,
    dim: int,
    n_topics: int,
    topic_size: int,
    doc_nnz: int,
    query_nnz: int,
) -> tuple[sc.SparseBatch, sc.SparseBatch]:
    """Non-negative documents and queries that draw most of their terms from one of ``n_topics`` random topics."""
    rng = np.random.default_rng(seed)
    topics = [rng.choice(dim, size=topic_size, replace=False) for _ in range(n_topics)]

    def rows(n: int, nnz: int) -> sc.SparseBatch:
        dicts = []
        for _ in range(n):
            t = topics[rng.integers(len(topics))]
            terms = np.unique(np.concatenate([rng.choice(t, nnz), rng.integers(0, dim, nnz // 4)]))
            dicts.append({int(j): float(rng.lognormal(-0.3, 0.9)) for j in terms})
        return sc.SparseBatch.from_dicts(dicts, dim=dim)

    return rows(n_docs, doc_nnz), rows(n_queries, query_nnz)
