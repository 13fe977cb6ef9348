"""The ``sparsecore`` command: encode texts, build and search an index, evaluate runs, run the demo.

    sparsecore encode  --input docs.jsonl --encoder bm25 --output docs.npz
    sparsecore index   --input docs.jsonl --encoder splade --output my-index/
    sparsecore search  my-index/ --query "who wrote the republic"
    sparsecore search  my-index/ --queries queries.jsonl --trec run.txt
    sparsecore eval    --run run.txt --qrels qrels.txt
    sparsecore demo

Text files: ``.jsonl`` (one object per line with ``"id"`` and ``"text"``, optional ``"title"``), ``.tsv``
(``id<TAB>text``) or ``.txt`` (one text per line, ids are line numbers). Vector files (``.npz``) hold CSR arrays,
ids and the encoder's description, with a checksum.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray

from sparsecore._io import atomic_write_bytes, open_regular_file, read_checked_json, read_npz, write_checked_json
from sparsecore.exceptions import IndexFormatError, InvalidArgumentError, SparsecoreError, SparseFormatError
from sparsecore.sparse import SparseBatch

__all__ = ["Corpus", "load_index_dir", "load_vectors", "main", "read_texts", "save_vectors"]

ENCODERS = ("bm25", "splade", "inference-free")
_VECTORS_FORMAT = "sparsecore.vectors"
_MANIFEST_FORMAT = "sparsecore.index-dir"
_MANIFEST_MAX_BYTES = 2**20


class _Encoder(Protocol):
    def encode_query(self, texts: Sequence[str], **kw: Any) -> SparseBatch: ...
    def encode_document(self, texts: Sequence[str], **kw: Any) -> SparseBatch: ...


@dataclass
class Corpus:
    """Texts with their ids and optional titles."""

    ids: list[str]
    texts: list[str]
    titles: list[str]


def read_texts(path: str | os.PathLike[str]) -> Corpus:
    """Read a ``.jsonl``, ``.tsv`` or ``.txt`` file of texts.

    Raises
    ------
    FileNotFoundError
        No such file.
    IndexFormatError
        ``path`` is not a regular file (a directory, a FIFO, a device).
    SparseFormatError
        A malformed line (the message gives the file and line number) or repeated ids.
    """
    p = Path(path)
    try:
        raw = open_regular_file(p)
    except FileNotFoundError:
        raise FileNotFoundError(f"{p}: no such file") from None
    ids: list[str] = []
    texts: list[str] = []
    titles: list[str] = []
    suffix = p.suffix.lower()
    with io.TextIOWrapper(raw, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            line = line.rstrip("\n")
            if suffix == ".jsonl":
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise SparseFormatError(f"{p}:{lineno}: not JSON ({exc.msg})") from None
                if not isinstance(obj, dict) or not isinstance(obj.get("text"), str) or "id" not in obj:
                    raise SparseFormatError(f'{p}:{lineno}: expected an object with "id" and "text" (a string)')
                ids.append(str(obj["id"]))
                texts.append(obj["text"])
                titles.append(str(obj.get("title", "")))
            elif suffix == ".tsv":
                if not line.strip():
                    continue
                parts = line.split("\t", 1)
                if len(parts) != 2:
                    raise SparseFormatError(f"{p}:{lineno}: expected id<TAB>text")
                ids.append(parts[0])
                texts.append(parts[1])
                titles.append("")
            elif suffix == ".txt":
                ids.append(str(lineno))
                texts.append(line)
                titles.append("")
            else:
                raise SparseFormatError(f"{p}: unknown text format {suffix!r} (use .jsonl, .tsv or .txt)")
    if len(set(ids)) != len(ids):
        seen: set[str] = set()
        dup = next(i for i in ids if i in seen or seen.add(i))  # type: ignore[func-returns-value]
        raise SparseFormatError(f"{p}: id {dup!r} appears more than once")
    return Corpus(ids, texts, titles)


def _arrays_digest(arrays: dict[str, NDArray[Any]]) -> str:
    h = hashlib.sha256()
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        h.update(name.encode())
        h.update(str(a.dtype).encode())
        h.update(a.tobytes())
    return h.hexdigest()


def save_vectors(path: str | os.PathLike[str], batch: SparseBatch, ids: Sequence[str], info: dict[str, Any]) -> None:
    """Write vectors, their ids and a description of the encoder to a checked ``.npz``, atomically."""
    if len(ids) != batch.n_rows:
        raise InvalidArgumentError(f"ids: {len(ids)} ids for {batch.n_rows} vectors")
    arrays: dict[str, NDArray[Any]] = {
        "indptr": batch.indptr,
        "indices": batch.indices,
        "data": batch.data,
        "ids": np.asarray(list(ids), dtype=np.str_),
    }
    meta = {"format": _VECTORS_FORMAT, "version": 1, "dim": batch.dim, "info": info, "sha256": _arrays_digest(arrays)}
    buf = io.BytesIO()
    np.savez(buf, meta=np.asarray(json.dumps(meta)), **arrays)  # type: ignore[arg-type]
    atomic_write_bytes(path, buf.getvalue())


def load_vectors(path: str | os.PathLike[str]) -> tuple[SparseBatch, list[str], dict[str, Any]]:
    """Read a file written by :func:`save_vectors`: ``(vectors, ids, encoder info)``.

    Raises
    ------
    FileNotFoundError
        ``path`` does not exist.
    IndexFormatError
        Not a regular file, not a sparsecore vectors file, another version, or corrupted.
    """
    with open_regular_file(path) as fh:
        arrays = read_npz(fh, path, ("meta", "indptr", "indices", "data", "ids"))
    try:
        meta = json.loads(str(arrays.pop("meta")))
    except (json.JSONDecodeError, RecursionError) as exc:
        raise IndexFormatError(f"{path}: not a sparsecore vectors file (its description is not JSON: {exc})") from None
    if not isinstance(meta, dict) or meta.get("format") != _VECTORS_FORMAT or meta.get("version") != 1:
        raise IndexFormatError(f"{path}: not a sparsecore vectors file of version 1")
    if meta.get("sha256") != _arrays_digest(arrays):
        raise IndexFormatError(f"{path}: checksum mismatch, the file is corrupted")
    dim, info = meta.get("dim"), meta.get("info", {})
    if isinstance(dim, bool) or not isinstance(dim, int) or not isinstance(info, dict):
        raise IndexFormatError(f"{path}: malformed description (dim {dim!r}, info of type {type(info).__name__})")
    batch = SparseBatch.from_arrays(arrays["indptr"], arrays["indices"], arrays["data"], dim)
    return batch, [str(x) for x in arrays["ids"].tolist()], dict(info)


# -- encoders ---------------------------------------------------------------------------------------------------


def _make_encoder(
    kind: str, model: str | None, corpus: Sequence[str] | None, max_length: int
) -> tuple[_Encoder, dict[str, Any]]:
    """A fresh encoder (BM25 fitted on ``corpus``) and the description needed to rebuild it."""
    if kind == "bm25":
        from sparsecore.encoders import BM25Encoder, WordTokenizer
        from sparsecore.encoders._text import english_stemmer_if_available

        if corpus is None:
            raise InvalidArgumentError("--encoder bm25 needs the document collection to fit on")
        enc = BM25Encoder(tokenizer=WordTokenizer(stemmer=english_stemmer_if_available())).fit(corpus)
        return enc, {"encoder": "bm25"}
    from sparsecore.encoders.splade import InferenceFreeEncoder, SpladeEncoder

    splade = (
        SpladeEncoder.bundled(max_length=max_length)
        if model in (None, "bundled")
        else SpladeEncoder.from_pretrained(model, max_length=max_length)
    )
    info = {"encoder": kind, "model": model or "bundled", "max_length": max_length}
    if kind == "splade":
        return splade, info
    if kind == "inference-free":
        if corpus is None:
            raise InvalidArgumentError("--encoder inference-free needs the document collection for its IDF table")
        return InferenceFreeEncoder(splade).fit_idf(corpus), info
    raise InvalidArgumentError(f"--encoder: must be one of {', '.join(ENCODERS)}, got {kind!r}")


# -- index directories ------------------------------------------------------------------------------------------


@dataclass
class IndexDir:
    """A saved index with its encoder and texts, as written by ``sparsecore index``."""

    index: Any
    encoder: _Encoder
    corpus: Corpus
    info: dict[str, Any]


def _write_corpus(path: Path, corpus: Corpus) -> None:
    lines = (
        json.dumps({"id": i, "text": t, "title": h}, ensure_ascii=False)
        for i, t, h in zip(corpus.ids, corpus.texts, corpus.titles, strict=True)
    )
    atomic_write_bytes(path, ("\n".join(lines) + "\n").encode("utf-8"))


def build_index_dir(
    out: Path, corpus: Corpus, encoder_kind: str, *, model: str | None, mode: str, max_length: int
) -> IndexDir:
    """Encode ``corpus``, build the index and save everything under ``out``.

    The directory is self-contained: a model other than the bundled one is saved into ``out/model`` (safetensors
    weights and its tokenizer), since :func:`load_index_dir` loads only models inside the directory.
    """
    from sparsecore.index import InvertedIndex

    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    enc, info = _make_encoder(encoder_kind, model, corpus.texts, max_length)
    docs = enc.encode_document(corpus.texts, show_progress=sys.stderr.isatty())
    t1 = time.perf_counter()
    index = InvertedIndex.build(docs, mode=mode)  # type: ignore[arg-type]
    t2 = time.perf_counter()
    files = {"index": "index.bin", "docs": "docs.jsonl"}
    index.save(out / files["index"])
    if encoder_kind == "bm25":
        files["encoder_state"] = "encoder.json"
        enc.save(out / files["encoder_state"])  # type: ignore[attr-defined]
    elif encoder_kind == "inference-free":
        files["idf"] = "idf.json"
        enc.save_idf(out / files["idf"])  # type: ignore[attr-defined]
    if info.get("model", "bundled") != "bundled":
        splade: Any = getattr(enc, "doc_encoder", enc)  # an inference-free encoder's documents side
        splade.model.save_pretrained(out / "model")  # safetensors weights
        splade.tokenizer.save_pretrained(out / "model")
        info = {**info, "model": "model"}
    _write_corpus(out / files["docs"], corpus)
    info = {**info, "mode": mode, "n_docs": len(corpus.ids), "nnz": docs.nnz, "dim": docs.dim, "files": files}
    write_checked_json(out / "manifest.json", _MANIFEST_FORMAT, 1, info)
    print(
        f"indexed {len(corpus.ids):,} documents ({docs.nnz / max(docs.n_rows, 1):.0f} terms each) with {encoder_kind} "
        f"in {t2 - t0:.1f} s (encode {t1 - t0:.1f} s, build {t2 - t1:.1f} s) -> {out}",
        file=sys.stderr,
    )
    return IndexDir(index, enc, corpus, info)


def _inside(root: Path, name: object, field: str) -> Path:
    """``root / name`` with symbolic links resolved; refused unless it lies strictly inside ``root`` (resolved)."""
    where = f"{root / 'manifest.json'}: {field}"
    if not isinstance(name, str) or not name or "\x00" in name:
        raise IndexFormatError(f"{where}: expected a path relative to the index directory, got {name!r}")
    rel = Path(name)
    if rel.is_absolute() or rel.anchor:
        raise IndexFormatError(f"{where}: {name!r} is absolute; paths must be relative to the index directory")
    try:
        resolved = (root / rel).resolve()
    except (OSError, RuntimeError, ValueError) as exc:  # RuntimeError: a symbolic link loop (Python < 3.13)
        raise IndexFormatError(f"{where}: {name!r} cannot be resolved ({exc})") from None
    if resolved == root or not resolved.is_relative_to(root):
        raise IndexFormatError(f"{where}: {name!r} leads to {resolved}, outside the index directory {root}")
    return resolved


def _index_file(root: Path, files: dict[str, Any], key: str, default: str) -> Path:
    """The file ``key`` of the manifest's ``files`` (or ``default``), inside ``root`` and a regular file."""
    path = _inside(root, files.get(key, default), f"files.{key}")
    if path.exists() and not path.is_file():
        raise IndexFormatError(f"{path}: is not a regular file; sparsecore reads only regular files")
    return path


def _model_dir(root: Path, name: object) -> Path:
    """The model folder a manifest names: inside ``root``, holding only regular files and folders inside it."""
    folder = _inside(root, name, "model")
    if not folder.is_dir():
        raise IndexFormatError(
            f"{root / 'manifest.json'}: model {name!r} is not a folder inside the index directory (models are "
            "loaded only from the index directory or the bundled one; rebuild the index to copy the model in)"
        )
    for dirpath, dirnames, filenames in os.walk(folder):  # links to folders are not walked: they are refused
        for entry in (*dirnames, *filenames):
            item = Path(dirpath) / entry
            target = item.resolve()
            if not target.is_relative_to(root):
                raise IndexFormatError(f"{item}: leads to {target}, outside the index directory {root}")
            if not (target.is_file() or (target.is_dir() and not item.is_symlink())):
                raise IndexFormatError(f"{item}: is not a regular file or a folder (links to folders are refused)")
    return folder


def load_index_dir(path: str | os.PathLike[str]) -> IndexDir:
    """Open a directory written by ``sparsecore index`` (the index is memory-mapped).

    The directory is treated as untrusted: every file it names (index, texts, encoder state, model) must resolve,
    symbolic links followed, to a regular file or folder inside it; a model is the bundled one or a folder inside
    the directory, loaded without running any code shipped with it (no ``trust_remote_code``, safetensors weights
    only); the manifest is at most 1 MiB.

    Raises
    ------
    FileNotFoundError
        ``path`` is not such a directory, or a file of it is missing.
    IndexFormatError
        A file of it is corrupted or of another version, or the manifest names a path outside the directory.
    """
    from sparsecore.index import InvertedIndex

    if not (Path(path) / "manifest.json").is_file():
        raise FileNotFoundError(
            f"{path}: not an index directory (no manifest.json); create one with 'sparsecore index'"
        )
    root = Path(path).resolve()
    manifest = _inside(root, "manifest.json", "manifest.json")
    _, info = read_checked_json(manifest, _MANIFEST_FORMAT, 1, max_bytes=_MANIFEST_MAX_BYTES)
    files = info.get("files", {})
    if not isinstance(files, dict):
        raise IndexFormatError(f"{manifest}: files must be an object, got {type(files).__name__}")
    kind = info.get("encoder")
    enc: _Encoder
    if kind == "bm25":
        from sparsecore.encoders import BM25Encoder

        enc = BM25Encoder.load(_index_file(root, files, "encoder_state", "encoder.json"))
    elif kind in ("splade", "inference-free"):
        from sparsecore.encoders.splade import InferenceFreeEncoder, SpladeEncoder

        max_length = info.get("max_length", 256)
        if isinstance(max_length, bool) or not isinstance(max_length, int):
            raise IndexFormatError(f"{manifest}: max_length must be an int, got {max_length!r}")
        model = info.get("model", "bundled")
        splade = (
            SpladeEncoder.bundled(max_length=max_length)
            if model in (None, "bundled")
            else SpladeEncoder.from_pretrained(_model_dir(root, model), max_length=max_length, use_safetensors=True)
        )
        enc = splade
        if kind == "inference-free":
            enc = InferenceFreeEncoder(splade).load_idf(_index_file(root, files, "idf", "idf.json"))
    else:
        raise IndexFormatError(f"{manifest}: unknown encoder {kind!r}")
    corpus = read_texts(_index_file(root, files, "docs", "docs.jsonl"))
    index = InvertedIndex.load(_index_file(root, files, "index", "index.bin"), mmap=True)
    if len(index) != len(corpus.ids):
        raise IndexFormatError(f"{root}: the index holds {len(index)} documents but docs.jsonl {len(corpus.ids)}")
    return IndexDir(index, enc, corpus, info)


def snippet(text: str, width: int = 160) -> str:
    """The first ``width`` characters of a text on one line, cut at a word boundary."""
    flat = " ".join(text.split())
    if len(flat) <= width:
        return flat
    return flat[:width].rsplit(" ", 1)[0] + " ..."


# -- commands ---------------------------------------------------------------------------------------------------


def _cmd_encode(args: argparse.Namespace) -> int:
    if args.kind == "query" and args.encoder != "splade":
        raise InvalidArgumentError(
            "--kind query: only the splade encoder encodes queries on its own; bm25 and inference-free queries "
            "need the collection's statistics, so search an index directory instead ('sparsecore search')"
        )
    corpus = read_texts(args.input)
    enc, info = _make_encoder(
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
        "encode", help="texts -> sparse vectors file (.npz)", description="Encode texts into sparse vectors."
    )
    e.add_argument("--input", required=True, help=".jsonl (id, text), .tsv (id<TAB>text) or .txt")
    e.add_argument("--output", required=True, help="vectors file to write (.npz)")
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
