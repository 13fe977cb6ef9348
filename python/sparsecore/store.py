"""Files of encoded texts: vector files, text collections and index directories.

These are what the ``sparsecore`` command reads and writes, usable from Python without the command.

Text files: ``.jsonl`` (one object per line with ``"id"`` and ``"text"``, optional ``"title"``), ``.tsv``
(``id<TAB>text``) or ``.txt`` (one text per line, ids are line numbers). Vector files are checked containers
(the package's one file format) holding CSR arrays, ids and the encoder's description. An index directory holds
an index, its encoder's state, the texts and a checked manifest.

Examples
--------
>>> import tempfile, os
>>> from sparsecore import SparseBatch
>>> from sparsecore.store import load_vectors, save_vectors
>>> vecs = SparseBatch.from_dicts([{0: 1.0}, {2: 0.5}], dim=4)
>>> path = os.path.join(tempfile.mkdtemp(), "v.vec")
>>> save_vectors(path, vecs, ["a", "b"], {"encoder": "bm25"})
>>> batch, ids, info = load_vectors(path)
>>> ids, batch.nnz, info
(['a', 'b'], 2, {'encoder': 'bm25'})
"""

from __future__ import annotations

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

from sparsecore._container import MAGIC as CONTAINER_MAGIC
from sparsecore._container import pack_strings, read_container, sniff, unpack_strings, write_container
from sparsecore._io import atomic_write_bytes, open_regular_file, read_checked_json, read_npz, write_checked_json
from sparsecore._validate import check_choice
from sparsecore.exceptions import IndexFormatError, InvalidArgumentError, SparsecoreError, SparseFormatError
from sparsecore.sparse import SparseBatch

__all__ = [
    "ENCODERS",
    "Corpus",
    "IndexDir",
    "TextEncoder",
    "build_index_dir",
    "load_index_dir",
    "load_vectors",
    "make_encoder",
    "read_texts",
    "save_vectors",
    "snippet",
]

ENCODERS = ("bm25", "splade", "inference-free")
"""Encoders an index directory can hold."""
_VECTORS_KIND = "vectors"
_LEGACY_VECTORS_FORMAT = "sparsecore.vectors"  # the checked .npz of sparsecore 0.1.0, still read
_MANIFEST_FORMAT = "sparsecore.index-dir"
_MANIFEST_MAX_BYTES = 2**20


class TextEncoder(Protocol):
    """What an index directory needs of an encoder: sparse vectors of queries and of documents."""

    def encode_query(self, texts: Sequence[str], **kw: Any) -> SparseBatch:
        """Sparse vectors of queries, one row per text."""
        ...

    def encode_document(self, texts: Sequence[str], **kw: Any) -> SparseBatch:
        """Sparse vectors of documents, one row per text."""
        ...


@dataclass
class Corpus:
    """Texts with their ids and optional titles (three lists of the same length).

    Attributes
    ----------
    ids : list of str
    texts : list of str
    titles : list of str
        Empty strings where there is no title.
    """

    ids: list[str]
    texts: list[str]
    titles: list[str]


def read_texts(path: str | os.PathLike[str]) -> Corpus:
    """Read a ``.jsonl``, ``.tsv`` or ``.txt`` file of texts.

    Parameters
    ----------
    path
        The file; its suffix gives the format.

    Returns
    -------
    Corpus
        Ids, texts and titles (empty where the file has none), in file order.

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
    """Write vectors, their ids and a description of their encoder atomically, as a checked ``vectors`` container.

    Parameters
    ----------
    path
        Destination; replaced atomically (readers see the old file or the new one, never a mix).
    batch
        The vectors, one row per id.
    ids
        One id per row of ``batch``.
    info
        JSON-serialisable description of how the vectors were made (e.g. ``{"encoder": "bm25"}``).

    Raises
    ------
    InvalidArgumentError
        ``ids`` and ``batch`` differ in length.
    """
    if len(ids) != batch.n_rows:
        raise InvalidArgumentError(f"ids: {len(ids)} ids for {batch.n_rows} vectors")
    if not isinstance(info, dict):
        raise InvalidArgumentError(f"info: must be a dict, got {type(info).__name__}")
    strings = pack_strings([str(i) for i in ids])
    arrays: dict[str, NDArray[Any]] = {"indptr": batch.indptr, "indices": batch.indices, "data": batch.data}
    arrays |= {"id_offsets": strings["offsets"], "id_utf8": strings["utf8"]}
    write_container(path, _VECTORS_KIND, 1, {"dim": batch.dim, "info": info}, arrays)


def load_vectors(path: str | os.PathLike[str]) -> tuple[SparseBatch, list[str], dict[str, Any]]:
    """Read a file written by :func:`save_vectors`.

    Parameters
    ----------
    path
        The file (also the ``.npz`` of sparsecore 0.1.0).

    Returns
    -------
    tuple of (SparseBatch, list of str, dict)
        The vectors, their ids and the encoder's description.

    Raises
    ------
    FileNotFoundError
        ``path`` does not exist.
    IndexFormatError
        Not a regular file, not a sparsecore vectors file, another version, or corrupted.
    """
    if sniff(path) != CONTAINER_MAGIC:
        return _load_legacy_vectors(path)
    c = read_container(path, _VECTORS_KIND, {1})
    dim, info = c.meta.get("dim"), c.meta.get("info")
    if isinstance(dim, bool) or not isinstance(dim, int) or not isinstance(info, dict):
        raise IndexFormatError(f"{path}: malformed description (dim {dim!r}, info of type {type(info).__name__})")
    ids = unpack_strings(c.array("id_offsets", np.int64, 1, path), c.array("id_utf8", np.uint8, 1, path), path, "ids")
    parts = [c.array(n, t, 1, path) for n, t in (("indptr", np.int64), ("indices", np.uint32), ("data", np.float32))]
    return _checked_vectors(path, parts, dim, ids, info)


def _checked_vectors(
    path: str | os.PathLike[str], parts: list[NDArray[Any]], dim: int, ids: list[str], info: dict[str, Any]
) -> tuple[SparseBatch, list[str], dict[str, Any]]:
    try:
        batch = SparseBatch.from_arrays(parts[0], parts[1], parts[2], dim)
    except SparsecoreError as exc:
        raise IndexFormatError(f"{path}: malformed vectors ({exc})") from None
    if len(ids) != batch.n_rows:
        raise IndexFormatError(f"{path}: {len(ids)} ids for {batch.n_rows} vectors")
    return batch, ids, dict(info)


def _load_legacy_vectors(path: str | os.PathLike[str]) -> tuple[SparseBatch, list[str], dict[str, Any]]:
    """Vectors in the checked ``.npz`` of sparsecore 0.1.0 (a JSON description with the arrays' SHA-256)."""
    with open_regular_file(path) as fh:
        arrays = read_npz(fh, path, ("meta", "indptr", "indices", "data", "ids"))
    try:
        meta = json.loads(str(arrays.pop("meta")))
    except (json.JSONDecodeError, RecursionError) as exc:
        raise IndexFormatError(f"{path}: not a sparsecore vectors file (its description is not JSON: {exc})") from None
    if not isinstance(meta, dict) or meta.get("format") != _LEGACY_VECTORS_FORMAT or meta.get("version") != 1:
        raise IndexFormatError(f"{path}: not a sparsecore vectors file of version 1")
    if meta.get("sha256") != _arrays_digest(arrays):
        raise IndexFormatError(f"{path}: checksum mismatch, the file is corrupted")
    dim, info = meta.get("dim"), meta.get("info", {})
    if isinstance(dim, bool) or not isinstance(dim, int) or not isinstance(info, dict):
        raise IndexFormatError(f"{path}: malformed description (dim {dim!r}, info of type {type(info).__name__})")
    parts = [arrays["indptr"], arrays["indices"], arrays["data"]]
    return _checked_vectors(path, parts, dim, [str(x) for x in arrays["ids"].tolist()], info)


# -- encoders ---------------------------------------------------------------------------------------------------


def make_encoder(
    kind: str, model: str | None, corpus: Sequence[str] | None, max_length: int, *, stem: bool | None = None
) -> tuple[TextEncoder, dict[str, Any]]:
    """A fresh encoder (BM25 fitted on ``corpus``) and the description needed to rebuild it.

    Parameters
    ----------
    kind
        One of :data:`ENCODERS`.
    model
        A transformers model name or folder for ``"splade"`` / ``"inference-free"`` (None: the bundled model).
    corpus
        The document texts: required by ``"bm25"`` (fitted on them) and ``"inference-free"`` (its IDF table).
    max_length
        Token limit of the SPLADE encoders.
    stem
        BM25 only: stem English words (needs PyStemmer, also wherever the index is searched); ``None``: when
        PyStemmer is installed.

    Returns
    -------
    tuple of (TextEncoder, dict)
        The encoder and its JSON-serialisable description.

    Raises
    ------
    InvalidArgumentError
        An unknown ``kind``, or no ``corpus`` where one is needed.
    """
    check_choice(kind, "--encoder", ENCODERS)
    if kind == "bm25":
        from sparsecore.encoders import BM25Encoder, WordTokenizer
        from sparsecore.encoders._text import english_stemmer_if_available

        if corpus is None:
            raise InvalidArgumentError("--encoder bm25 needs the document collection to fit on")
        stemmer = english_stemmer_if_available() if stem is None else ("english" if stem else None)
        enc = BM25Encoder(tokenizer=WordTokenizer(stemmer=stemmer)).fit(corpus)
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
    if corpus is None:
        raise InvalidArgumentError("--encoder inference-free needs the document collection for its IDF table")
    return InferenceFreeEncoder(splade).fit_idf(corpus), info


# -- index directories ------------------------------------------------------------------------------------------


@dataclass
class IndexDir:
    """A saved index with its encoder and texts, as written by ``sparsecore index``.

    Attributes
    ----------
    index : InvertedIndex
        The index.
    encoder
        The encoder of its documents and queries (``encode_query`` / ``encode_document``).
    corpus : Corpus
        The indexed texts, in document order.
    info : dict
        The manifest (encoder, model, mode, sizes, file names).
    """

    index: Any
    encoder: TextEncoder
    corpus: Corpus
    info: dict[str, Any]


def _write_corpus(path: Path, corpus: Corpus) -> None:
    lines = (
        json.dumps({"id": i, "text": t, "title": h}, ensure_ascii=False)
        for i, t, h in zip(corpus.ids, corpus.texts, corpus.titles, strict=True)
    )
    atomic_write_bytes(path, ("\n".join(lines) + "\n").encode("utf-8"))


def build_index_dir(
    out: Path,
    corpus: Corpus,
    encoder_kind: str,
    *,
    model: str | None,
    mode: str,
    max_length: int,
    stem: bool | None = None,
) -> IndexDir:
    """Encode ``corpus``, build the index and save everything under ``out``.

    The directory is self-contained: a model other than the bundled one is saved into ``out/model`` (safetensors
    weights and its tokenizer), since :func:`load_index_dir` loads only models inside the directory.

    Parameters
    ----------
    out
        The directory (created if missing).
    corpus
        The documents.
    encoder_kind
        One of :data:`ENCODERS`.
    model
        A transformers model name or folder for the SPLADE encoders (None: the bundled model).
    mode
        The index's search mode, ``"approx"`` or ``"exact"``.
    max_length
        Token limit of the SPLADE encoders.
    stem
        BM25 only: stem English words (``None``: when PyStemmer is installed); an index searched where PyStemmer
        is absent needs ``False``.

    Returns
    -------
    IndexDir
        The index, encoder, texts and manifest just written.

    Raises
    ------
    InvalidArgumentError
        An unknown ``encoder_kind``.
    """
    from sparsecore.index import InvertedIndex

    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    enc, info = make_encoder(encoder_kind, model, corpus.texts, max_length, stem=stem)
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
        backend = getattr(enc.doc_encoder.tokenizer, "backend_tokenizer", None)  # type: ignore[attr-defined]
        if backend is not None:  # a fast tokenizer: queries can then be encoded with no torch (load_index_dir)
            files["tokenizer"] = "tokenizer.json"
            tmp = out / "tokenizer.json.tmp"
            backend.save(str(tmp))
            os.replace(tmp, out / files["tokenizer"])
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


def load_index_dir(path: str | os.PathLike[str], *, documents: bool = False) -> IndexDir:
    """Open a directory written by ``sparsecore index`` (the index is memory-mapped).

    An inference-free directory holds its tokenizer (``tokenizer.json``): its encoder is then query-only, made
    with the ``tokenizers`` package and nothing else (no torch, no transformers, no model), unless ``documents``
    asks for the SPLADE model too.

    The directory is treated as untrusted: every file it names (index, texts, encoder state, model) must resolve,
    symbolic links followed, to a regular file or folder inside it; a model is the bundled one or a folder inside
    the directory, loaded without running any code shipped with it (no ``trust_remote_code``, safetensors weights
    only); the manifest is at most 1 MiB.

    Parameters
    ----------
    path
        The directory.
    documents
        Load the document side of an inference-free encoder (the SPLADE model: torch and transformers) even when
        the directory's tokenizer would do for queries.

    Returns
    -------
    IndexDir
        The index (memory-mapped), its encoder, the texts and the manifest.

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
    enc: TextEncoder
    if kind == "bm25":
        from sparsecore.encoders import BM25Encoder

        enc = BM25Encoder.load(_index_file(root, files, "encoder_state", "encoder.json"))
    elif kind == "inference-free" and "tokenizer" in files and not documents:
        from sparsecore.encoders.splade import InferenceFreeEncoder

        dim = info.get("dim")
        if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
            raise IndexFormatError(f"{manifest}: dim must be a positive int, got {dim!r}")
        enc = InferenceFreeEncoder.from_tokenizer_file(_index_file(root, files, "tokenizer", "tokenizer.json"), dim=dim)
        enc.load_idf(_index_file(root, files, "idf", "idf.json"))
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
    mode = info.get("mode", "approx")
    if mode not in ("approx", "exact"):
        raise IndexFormatError(f"{manifest}: mode must be 'approx' or 'exact', got {mode!r}")
    index = InvertedIndex.load(_index_file(root, files, "index", "index.bin"), mmap=True, mode=mode)
    if len(index) != len(corpus.ids):
        raise IndexFormatError(f"{root}: the index holds {len(index)} documents but docs.jsonl {len(corpus.ids)}")
    return IndexDir(index, enc, corpus, info)


def snippet(text: str, width: int = 160) -> str:
    """The first ``width`` characters of a text on one line, cut at a word boundary.

    Parameters
    ----------
    text
        Any text; runs of whitespace become one space.
    width
        Longest result before the ``" ..."`` marking a cut.

    Returns
    -------
    str
    """
    flat = " ".join(text.split())
    if len(flat) <= width:
        return flat
    return flat[:width].rsplit(" ", 1)[0] + " ..."
