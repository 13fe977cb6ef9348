"""BM25 as a sparse impact encoder: the index's dot product of a query vector and a document vector *is* BM25.

A document's weight for term t is ``idf(t) · tf / (tf + k1 · (1 - b + b · |d| / avgdl))`` with Lucene's idf
``ln(1 + (N - df + 0.5) / (df + 0.5))`` (Kamphuis et al., ECIR 2020, "Which BM25 do you mean?"); a query's weight
is the number of times the term occurs in the query (``query_weights="count"``, what Lucene and bm25s do with a
repeated term) or 1 (``"binary"``). No torch needed.
"""

from __future__ import annotations

import itertools
import math
import os
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Literal, Protocol

import numpy as np
from numpy.typing import NDArray

from sparsecore._io import read_checked_json, write_checked_json
from sparsecore.encoders._text import WordTokenizer
from sparsecore.exceptions import DTypeError, IndexFormatError, InvalidArgumentError
from sparsecore.sparse import SparseBatch

__all__ = ["BM25Encoder"]

_FORMAT = "sparsecore.bm25"
_VERSION = 1


class _HFTokenizer(Protocol):
    def tokenize(self, text: str) -> list[str]: ...


TextOrTokens = str | Sequence[str]
Tokenizer = WordTokenizer | Callable[[str], list[str]] | _HFTokenizer


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
        if not (isinstance(k1, (int, float)) and math.isfinite(k1) and k1 >= 0):
            raise InvalidArgumentError(f"k1: must be a finite number >= 0, got {k1!r}")
        if not (isinstance(b, (int, float)) and 0 <= b <= 1):
            raise InvalidArgumentError(f"b: must be in [0, 1], got {b!r}")
        if query_weights not in ("count", "binary"):
            raise InvalidArgumentError(f'query_weights: must be "count" or "binary", got {query_weights!r}')
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
        return SparseBatch.from_arrays(indptr, ids, data.astype(np.float32), self.dim)

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
        """Write the fitted statistics and settings to a checked JSON file, atomically.

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
        payload: dict[str, Any] = {
            "k1": self.k1,
            "b": self.b,
            "query_weights": self.query_weights,
            "tokenizer": self.tokenizer.config(),
            "tokens": self.id_to_token,
            "doc_freq": self.doc_freq.tolist(),
            "n_docs": self.n_docs,
            "avg_doc_len": self.avg_doc_len,
        }
        write_checked_json(path, _FORMAT, _VERSION, payload)

    @classmethod
    def load(cls, path: str | os.PathLike[str], *, tokenizer: Tokenizer | None = None) -> BM25Encoder:
        """Read an encoder written by :meth:`save`.

        Parameters
        ----------
        path
            The file.
        tokenizer
            Override the saved tokenizer (needed when it was a custom one).

        Raises
        ------
        IndexFormatError
            Not a BM25 encoder file, an unsupported version, or corrupted.
        """
        _, p = read_checked_json(path, _FORMAT, _VERSION)
        try:
            tok = tokenizer if tokenizer is not None else WordTokenizer.from_config(p["tokenizer"])
            enc = cls(k1=p["k1"], b=p["b"], tokenizer=tok, query_weights=p["query_weights"])
            tokens = [str(t) for t in p["tokens"]]
            enc.vocab = {t: i for i, t in enumerate(tokens)}
            enc.doc_freq = np.asarray(p["doc_freq"], dtype=np.int64)
            enc.n_docs = int(p["n_docs"])
            enc.avg_doc_len = float(p["avg_doc_len"])
        except (KeyError, TypeError, ValueError, AttributeError) as exc:  # AttributeError: a non-dict tokenizer
            raise IndexFormatError(f"{path}: malformed BM25 encoder file ({exc!r})") from None
        if len(enc.vocab) != len(tokens) or enc.doc_freq.shape != (len(tokens),) or enc.n_docs < 1:
            raise IndexFormatError(f"{path}: malformed BM25 encoder file (inconsistent vocabulary)")
        return enc

    def __repr__(self) -> str:
        state = f"vocab={len(self.vocab)}, n_docs={self.n_docs}" if self.n_docs else "not fitted"
        return f"BM25Encoder(k1={self.k1}, b={self.b}, {state})"
