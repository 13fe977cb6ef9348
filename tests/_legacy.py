"""Helpers that write files in the formats of sparsecore 0.1.0 (which still load), for tests of their checks."""

from __future__ import annotations

from typing import Any

from sparsecore.encoders import BM25Encoder, WordTokenizer


def legacy_bm25_payload(enc: BM25Encoder) -> dict[str, Any]:
    """The payload of the checked JSON file that sparsecore 0.1.0 wrote for a fitted ``enc`` (format
    ``sparsecore.bm25``, version 1); write it with ``sparsecore._io.write_checked_json``."""
    assert isinstance(enc.tokenizer, WordTokenizer)
    return {
        "k1": enc.k1,
        "b": enc.b,
        "query_weights": enc.query_weights,
        "tokenizer": enc.tokenizer.config(),
        "tokens": enc.id_to_token,
        "doc_freq": enc.doc_freq.tolist(),
        "n_docs": enc.n_docs,
        "avg_doc_len": enc.avg_doc_len,
    }
