"""BM25 as a sparse impact encoder: the index's dot product of a query vector and a document vector *is* BM25.

A document's weight for term t is ``idf(t) · tf / (tf + k1 · (1 - b + b · |d| / avgdl))`` with Lucene's idf
``ln(1 + (N - df + 0.5) / (df + 0.5))`` (Kamphuis et al., ECIR 2020, "Which BM25 do you mean?"); a query's weight
is the number of times the term occurs in the query (``query_weights="count"``, what Lucene and bm25s do with a
repeated term) or 1 (``"binary"``). No torch needed.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Literal, Protocol

import numpy as np
from numpy.typing import NDArray

from sparsecore._container import MAGIC as CONTAINER_MAGIC
from sparsecore._container import pack_strings, read_container, sniff, unpack_strings, write_container
from sparsecore._io import read_checked_json
from sparsecore._validate import check_choice, check_float, check_int, nonnegative_float
from sparsecore.encoders._text import WordTokenizer
from sparsecore.exceptions import DTypeError, IndexFormatError, InvalidArgumentError
from sparsecore.sparse import SparseBatch

__all__ = ["BM25Encoder"]

_KIND = "bm25"
_KIND_VERSION = 1
_LEGACY_FORMAT = "sparsecore.bm25"  # the checked JSON file of sparsecore 0.1.0, still read
_FIELDS = ("k1", "b", "query_weights", "tokenizer", "tokens", "doc_freq", "n_docs", "avg_doc_len")
_MAX_DOCS = 2**53  # document counts beyond this are not exact in the float64 idf


class _HFTokenizer(Protocol):
    def tokenize(self, text: str) -> list[str]: ...


TextOrTokens = str | Sequence[str]
Tokenizer = WordTokenizer | Callable[[str], list[str]] | _HFTokenizer


def _check_settings(k1: object, b: object, query_weights: object) -> None:
    """The constructor's checks of the settings (also applied to a loaded file)."""
    nonnegative_float(k1, "k1")
    check_float(b, "b", low=0.0, high=1.0)
    check_choice(query_weights, "query_weights", ("count", "binary"))


def _check_statistics(n_tokens: int, doc_freq: object, n_docs: object, avg_doc_len: object) -> NDArray[np.int64]:
    """Check corpus statistics for a vocabulary of ``n_tokens`` terms; returns ``doc_freq`` as int64.

    They are what :meth:`BM25Encoder.fit` produces: ``n_docs`` an int >= 1, every document frequency an int in
    ``[0, n_docs]``, ``avg_doc_len`` finite, > 0 unless the vocabulary is empty, and the documents at least as long
    in total as their distinct terms (``sum(doc_freq) <= n_docs · avg_doc_len``). Anything else would give NaN,
    infinite or negative weights, or scores that no corpus can produce.
    """
    n_docs = check_int(n_docs, "n_docs", low=1, high=_MAX_DOCS)
    if not isinstance(doc_freq, list) or len(doc_freq) != n_tokens:
        got = len(doc_freq) if isinstance(doc_freq, list) else type(doc_freq).__name__
        raise InvalidArgumentError(f"doc_freq: must be a list of {n_tokens} ints (one per token), got {got}")
    if not set(map(type, doc_freq)) <= {int}:  # C-speed check: no bool, float or string
        bad = next(x for x in doc_freq if type(x) is not int)
        raise InvalidArgumentError(f"doc_freq: must hold ints, got {bad!r}")
    if doc_freq and (min(doc_freq) < 0 or max(doc_freq) > n_docs):
        bad = next(x for x in doc_freq if not 0 <= x <= n_docs)
        raise InvalidArgumentError(f"doc_freq: a document frequency must be in [0, n_docs={n_docs}], got {bad}")
    avg = nonnegative_float(avg_doc_len, "avg_doc_len")
    if n_tokens and avg == 0:
        raise InvalidArgumentError("avg_doc_len: must be > 0 when the vocabulary is not empty, got 0")
    total_df = sum(doc_freq)
    if total_df > n_docs * avg * (1 + 1e-9):
        raise InvalidArgumentError(
            f"avg_doc_len: {avg_doc_len!r} is too small: {n_docs} documents of that length cannot hold "
            f"{total_df} (document, term) pairs"
        )
    return np.asarray(doc_freq, dtype=np.int64)


def _tokenize_fn(tokenizer: Tokenizer | None) -> Callable[[str], list[str]]:
    if tokenizer is None:
        return WordTokenizer()
    if hasattr(tokenizer, "tokenize") and hasattr(tokenizer, "convert_tokens_to_ids"):  # a transformers tokenizer
        return tokenizer.tokenize
    if callable(tokenizer):
        return tokenizer
    raise InvalidArgumentError(
        f"tokenizer: expected a WordTokenizer, a callable str -> list[str] or a transformers tokenizer, "
        f"got {type(tokenizer).__name__}"
    )


class BM25Encoder:
    """Encodes texts into BM25 document impact vectors and query term-count vectors.

    Parameters
    ----------
    k1
        Term-frequency saturation, ``k1 >= 0`` (Lucene's default 1.2).
    b
        Length normalisation, ``0 <= b <= 1``.
    tokenizer
        A :class:`~sparsecore.encoders.WordTokenizer` (default: regex words, English stop words, no stemming), any
        callable ``str -> list[str]``, or a transformers tokenizer (its ``tokenize`` method is used).
    query_weights
        ``"count"``: a query term weighs its number of occurrences (Lucene/bm25s behaviour); ``"binary"``: 1.

    Examples
    --------
    >>> enc = BM25Encoder().fit(["heat flow in slabs", "supersonic flow", "wing flutter"])
    >>> docs = enc.encode_documents(["heat flow in slabs", "supersonic flow", "wing flutter"])
    >>> q = enc.encode_queries(["flow of heat"])
    >>> q.scores(docs).round(3)
    array([[0.59 , 0.227, 0.   ]], dtype=float32)
    """

    def __init__(
        self,
        *,
        k1: float = 1.2,
        b: float = 0.75,
        tokenizer: Tokenizer | None = None,
        query_weights: Literal["count", "binary"] = "count",
    ) -> None:
        _check_settings(k1, b, query_weights)
        self.k1 = float(k1)
        self.b = float(b)
        self.query_weights: Literal["count", "binary"] = query_weights
        self.tokenizer = tokenizer if tokenizer is not None else WordTokenizer()
        self._tokenize = _tokenize_fn(self.tokenizer)
        self.vocab: dict[str, int] = {}
        self.doc_freq: NDArray[np.int64] = np.zeros(0, np.int64)
        self.n_docs = 0
        self.avg_doc_len = 0.0

    # -- fitting ----------------------------------------------------------------------------------------------

    def tokenize(self, items: Iterable[TextOrTokens], name: str = "texts") -> list[list[str]]:
        """Tokens of each item: a string is tokenised, a sequence of strings is taken as its tokens."""
        if isinstance(items, str):
            raise DTypeError(f"{name}: expected a sequence of texts, got a single str (wrap it in a list)")
        out: list[list[str]] = []
        for i, item in enumerate(items):
            if isinstance(item, str):
                out.append(self._tokenize(item))
            elif isinstance(item, Sequence) and set(map(type, item)) <= {str}:  # C-speed check of every token
                out.append(item if isinstance(item, list) else list(item))
            else:
                raise DTypeError(f"{name}[{i}]: expected str or a sequence of str tokens, got {type(item).__name__}")
        return out

    def fit(self, corpus: Iterable[TextOrTokens]) -> BM25Encoder:
        """Learn the vocabulary, document frequencies and average length from a corpus.

        Parameters
        ----------
        corpus
            Texts, or lists of tokens already produced by your tokenizer.

        Returns
        -------
        BM25Encoder
            ``self``.

        Raises
        ------
        InvalidArgumentError
            The corpus is empty.
        """
        docs = self.tokenize(corpus, "corpus")
        if not docs:
            raise InvalidArgumentError("corpus: is empty; BM25 statistics need at least one document")
        # Ids in first-seen order (reproducible); document frequencies from the distinct (row, term) pairs.
        self.vocab = {t: i for i, t in enumerate(dict.fromkeys(itertools.chain.from_iterable(docs)))}
        _, ids, _ = self._counts(docs)
        self.doc_freq = np.bincount(ids, minlength=len(self.vocab)).astype(np.int64)
        total = int(sum(len(t) for t in docs))
        self.n_docs = len(docs)
        self.avg_doc_len = total / len(docs)
        return self

    def _require_fit(self) -> None:
        if self.n_docs == 0:
            raise InvalidArgumentError("encoder: not fitted; call fit(corpus) or BM25Encoder.load(path) first")

    @property
    def dim(self) -> int:
        """Vector dimension: the vocabulary size (at least 1)."""
        return max(len(self.vocab), 1)

    @property
    def idf(self) -> NDArray[np.float64]:
        """Lucene idf of every vocabulary term, in id order."""
        n, df = self.n_docs, self.doc_freq.astype(np.float64)
        return np.log1p((n - df + 0.5) / (df + 0.5))

    @property
    def id_to_token(self) -> list[str]:
        """Token of each column id."""
        out = [""] * len(self.vocab)
        for t, i in self.vocab.items():
            out[i] = t
        return out

    # -- encoding ---------------------------------------------------------------------------------------------

    def _counts(self, docs: list[list[str]]) -> tuple[NDArray[np.int64], NDArray[np.uint32], NDArray[np.float64]]:
        """CSR of in-vocabulary term counts, rows sorted by term id."""
        get = self.vocab.get
        n_tokens = sum(len(t) for t in docs)
        flat = np.fromiter(map(get, itertools.chain.from_iterable(docs), itertools.repeat(-1)), np.int64, n_tokens)
        rows = np.repeat(np.arange(len(docs), dtype=np.int64), [len(t) for t in docs])
        known = flat >= 0
        # One sort of (row, term) keys gives every row's distinct terms in id order and their counts.
        keys, tf = np.unique(rows[known] * self.dim + flat[known], return_counts=True)
        indptr = np.zeros(len(docs) + 1, np.int64)
        np.cumsum(np.bincount(keys // self.dim, minlength=len(docs)), out=indptr[1:])
        return indptr, (keys % self.dim).astype(np.uint32), tf.astype(np.float64)

    def encode_documents(self, texts: Iterable[TextOrTokens]) -> SparseBatch:
        """BM25 impact vectors of documents (terms outside the fitted vocabulary are dropped: no query has them).

        Parameters
        ----------
        texts
            Texts, or lists of tokens.

        Returns
        -------
        SparseBatch
            One row per document, ``dim == self.dim``; ``query_vector · doc_vector`` is the BM25 score.
        """
        self._require_fit()
        docs = self.tokenize(texts)
        lengths = np.array([len(t) for t in docs], dtype=np.float64)
        indptr, ids, tf = self._counts(docs)
        rows = np.repeat(np.arange(len(docs)), np.diff(indptr))
        norm = self.k1 * (1.0 - self.b + self.b * lengths[rows] / self.avg_doc_len) if self.avg_doc_len > 0 else 0.0
        weights = self.idf[ids] * tf / (tf + norm)
        return SparseBatch.from_arrays(indptr, ids, weights.astype(np.float32), self.dim)

    def encode_queries(self, texts: Iterable[TextOrTokens]) -> SparseBatch:
        """Query vectors: term counts (or 1s) over the fitted vocabulary; unknown terms are dropped.

        Parameters
        ----------
        texts
            Texts, or lists of tokens.

        Returns
        -------
        SparseBatch
            One row per query.
        """
        self._require_fit()
        indptr, ids, tf = self._counts(self.tokenize(texts))
        data = np.ones_like(tf) if self.query_weights == "binary" else tf
        # Valid by construction (_counts: ids sorted and distinct per row, below dim; counts >= 1): no validation
        # pass, whose hand-off to the thread pool put a millisecond tail on one-query latency (bench_edge.py).
        return SparseBatch._trusted(indptr, ids, data.astype(np.float32), self.dim)

    def encode_document(self, texts: Iterable[TextOrTokens], **_: Any) -> SparseBatch:
        """Same as :meth:`encode_documents` (the sentence-transformers method name shared by all encoders)."""
        return self.encode_documents(texts)

    def encode_query(self, texts: Iterable[TextOrTokens], **_: Any) -> SparseBatch:
        """Same as :meth:`encode_queries` (the sentence-transformers method name shared by all encoders)."""
        return self.encode_queries(texts)

    def decode(self, batch: SparseBatch, *, top_k: int | None = None) -> list[list[tuple[str, float]]]:
        """``(token, weight)`` lists of each row, heaviest first.

        Parameters
        ----------
        batch
            Vectors made by this encoder.
        top_k
            Keep only the ``top_k`` heaviest tokens per row.
        """
        from sparsecore.encoders._decode import decode_rows

        return decode_rows(batch, self.id_to_token, top_k)

    # -- persistence ------------------------------------------------------------------------------------------

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the fitted statistics and settings atomically, as a checked container of kind ``bm25``.

        Raises
        ------
        InvalidArgumentError
            The encoder is not fitted, or its tokenizer is a custom callable that cannot be written down.
        """
        self._require_fit()
        if not isinstance(self.tokenizer, WordTokenizer):
            raise InvalidArgumentError("tokenizer: only a WordTokenizer can be saved; pass yours again to load()")
        if self.tokenizer.stemmer_name not in (None, "english"):
            raise InvalidArgumentError("tokenizer: a custom stemmer cannot be saved; pass the tokenizer to load()")
        meta: dict[str, Any] = {
            "k1": self.k1,
            "b": self.b,
            "query_weights": self.query_weights,
            "tokenizer": self.tokenizer.config(),
            "n_docs": self.n_docs,
            "avg_doc_len": self.avg_doc_len,
        }
        tokens = pack_strings(self.id_to_token)
        arrays = {"token_offsets": tokens["offsets"], "token_utf8": tokens["utf8"], "doc_freq": self.doc_freq}
        write_container(path, _KIND, _KIND_VERSION, meta, arrays)

    @classmethod
    def load(cls, path: str | os.PathLike[str], *, tokenizer: Tokenizer | None = None) -> BM25Encoder:
        """Read an encoder written by :meth:`save` (also the JSON format of sparsecore 0.1.0).

        Parameters
        ----------
        path
            The file.
        tokenizer
            Override the saved tokenizer (needed when it was a custom one).

        Raises
        ------
        IndexFormatError
            Not a BM25 encoder file (or not a regular file), an unsupported version, corrupted, or statistics that
            no corpus produces (the message names the field): settings out of the constructor's range, a
            document count or frequency that is not an int, a frequency outside ``[0, n_docs]``, an average
            length that is not finite and positive, repeated tokens.
        """
        if sniff(path) == CONTAINER_MAGIC:
            c = read_container(path, _KIND, {_KIND_VERSION})
            p: dict[str, Any] = dict(c.meta)
            offsets, utf8 = c.array("token_offsets", np.int64, 1, path), c.array("token_utf8", np.uint8, 1, path)
            p["tokens"] = unpack_strings(offsets, utf8, path, "tokens")
            p["doc_freq"] = c.array("doc_freq", np.int64, 1, path).tolist()
        else:
            _, p = read_checked_json(path, _LEGACY_FORMAT, 1)
        try:
            missing = [f for f in _FIELDS if f not in p]
            if missing:
                raise InvalidArgumentError(f"{missing[0]}: missing")
            _check_settings(p["k1"], p["b"], p["query_weights"])
            if tokenizer is None:
                if not isinstance(p["tokenizer"], dict):
                    raise InvalidArgumentError(f"tokenizer: expected an object, got {type(p['tokenizer']).__name__}")
                tokenizer = WordTokenizer.from_config(p["tokenizer"])
            tokens = p["tokens"]
            if not isinstance(tokens, list) or not set(map(type, tokens)) <= {str}:
                raise InvalidArgumentError("tokens: must be a list of strings")
            if len(set(tokens)) != len(tokens):
                raise InvalidArgumentError("tokens: a token appears more than once")
            doc_freq = _check_statistics(len(tokens), p["doc_freq"], p["n_docs"], p["avg_doc_len"])
        except InvalidArgumentError as exc:
            raise IndexFormatError(f"{path}: malformed BM25 encoder file ({exc})") from None
        enc = cls(k1=p["k1"], b=p["b"], tokenizer=tokenizer, query_weights=p["query_weights"])
        enc.vocab = {t: i for i, t in enumerate(tokens)}
        enc.doc_freq = doc_freq
        enc.n_docs = p["n_docs"]
        enc.avg_doc_len = float(p["avg_doc_len"])
        return enc

    def __repr__(self) -> str:
        state = f"vocab={len(self.vocab)}, n_docs={self.n_docs}" if self.n_docs else "not fitted"
        return f"BM25Encoder(k1={self.k1}, b={self.b}, {state})"
