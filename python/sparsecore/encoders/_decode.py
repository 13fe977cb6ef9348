"""Turn sparse vectors back into readable ``(token, weight)`` lists."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from sparsecore.exceptions import InvalidArgumentError, UnknownTokenError
from sparsecore.sparse import SparseBatch

__all__ = ["decode_rows", "vocabulary_tokens"]


def decode_rows(batch: SparseBatch, id_to_token: Sequence[str], top_k: int | None) -> list[list[tuple[str, float]]]:
    """``(token, weight)`` pairs of each row, heaviest first (ties: smaller id first).

    Raises
    ------
    InvalidArgumentError
        ``top_k`` < 1.
    UnknownTokenError
        A column id has no token.
    """
    if not isinstance(batch, SparseBatch):
        raise InvalidArgumentError(f"batch: expected a SparseBatch, got {type(batch).__name__}")
    if top_k is not None and top_k < 1:
        raise InvalidArgumentError(f"top_k: must be >= 1 or None, got {top_k}")
    if batch.dim > len(id_to_token) and batch.nnz and int(batch.indices.max()) >= len(id_to_token):
        raise UnknownTokenError(
            f"batch: column id {int(batch.indices.max())} has no token (vocabulary size {len(id_to_token)})"
        )
    out: list[list[tuple[str, float]]] = []
    for r in range(batch.n_rows):
        idx, val = batch.row(r)
        order = np.lexsort((idx, -val))
        if top_k is not None:
            order = order[:top_k]
        out.append([(id_to_token[int(idx[j])], float(val[j])) for j in order])
    return out


def vocabulary_tokens(tokenizer: Any, size: int) -> list[str]:
    """Token string of every id below ``size`` (``"<id N>"`` where the tokenizer has none, e.g. padded vocabularies)."""
    toks = tokenizer.convert_ids_to_tokens(list(range(size)))
    return [t if isinstance(t, str) else f"<id {i}>" for i, t in enumerate(toks)]
