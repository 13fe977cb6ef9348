"""Text to sparse vectors.

* :class:`BM25Encoder` and :class:`WordTokenizer` need numpy only (stemming needs ``PyStemmer``, extra ``text``).
* :class:`SpladeEncoder`, :class:`InferenceFreeEncoder` and :class:`PromptRepsEncoder` need torch and transformers
  (extra ``torch``); they are imported on first use, so ``import sparsecore.encoders`` stays light.

Every encoder returns :class:`~sparsecore.SparseBatch` and has ``decode()`` back to ``(token, weight)`` lists.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sparsecore.encoders._text import ENGLISH_STOPWORDS, WordTokenizer
from sparsecore.encoders.bm25 import BM25Encoder

if TYPE_CHECKING:
    from sparsecore.encoders.promptreps import PromptRepsEncoder
    from sparsecore.encoders.splade import InferenceFreeEncoder, SpladeEncoder

__all__ = [
    "ENGLISH_STOPWORDS",
    "BM25Encoder",
    "InferenceFreeEncoder",
    "PromptRepsEncoder",
    "SpladeEncoder",
    "WordTokenizer",
]

_LAZY = {
    "SpladeEncoder": "sparsecore.encoders.splade",
    "InferenceFreeEncoder": "sparsecore.encoders.splade",
    "PromptRepsEncoder": "sparsecore.encoders.promptreps",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'sparsecore.encoders' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
