"""Deterministic recipes for the files in ``tests/data/legacy/``, written by sparsecore 0.1.0 (commit 0e48403).

``tests/test_container.py`` loads each legacy file with the current code and compares it with the same recipe
built now, so files of the release before the one container format keep loading. To regenerate the files one
needs that release: ``git worktree add /tmp/old 0e48403``, build it, then run this module with it on the path:
``PYTHONPATH=<old build> python tests/legacy_recipes.py tests/data/legacy``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
import sparsecore as sc
from sparsecore.encoders.bm25 import BM25Encoder
from sparsecore.lsse import OnlineRidge
from sparsecore.sdr import CodingField, Level, SDRNetwork

CORPUS = [
    "sparse vectors make search fast",
    "the inverted index stores postings",
    "learned sparse retrieval uses splade",
    "a fast index for sparse vectors",
]


def index_batch() -> sc.SparseBatch:
    rng = np.random.default_rng(7)
    dense = (rng.random((40, 30)) < 0.2) * rng.random((40, 30)).astype(np.float32)
    return sc.SparseBatch.from_dense(dense.astype(np.float32))


def make_index() -> sc.InvertedIndex:
    idx = sc.InvertedIndex.build(index_batch(), ids=np.arange(100, 140))
    idx.delete([103, 117])
    return idx


def ridge_data() -> tuple[sc.SparseBatch, np.ndarray]:
    rng = np.random.default_rng(3)
    dense = (rng.random((25, 12)) < 0.3) * rng.random((25, 12))
    return sc.SparseBatch.from_dense(dense.astype(np.float32)), rng.standard_normal((25, 2))


def make_ridge() -> OnlineRidge:
    phi, y = ridge_data()
    model = OnlineRidge(12, 2, ridge=0.5, update="exact")
    model.partial_fit(phi, y)
    return model


def sdr_inputs() -> np.ndarray:
    rng = np.random.default_rng(5)
    return (rng.random((6, 64)) < 0.15).astype(np.uint8)


def make_field() -> CodingField:
    field = CodingField(64, n_modules=4, cells_per_module=8, seed=11)
    field.learn(sdr_inputs())
    return field


def network_images() -> np.ndarray:
    rng = np.random.default_rng(9)
    return (rng.random((3, 64)) < 0.3).astype(np.uint8)


def make_network() -> SDRNetwork:
    net = SDRNetwork((8, 8), [Level(patch=4, stride=4, n_modules=4, cells_per_module=4)], seed=2)
    net.learn(network_images())
    return net


def make_bm25() -> BM25Encoder:
    return BM25Encoder().fit(CORPUS)


def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    make_index().save(out / "index_v3.bin")
    make_ridge().save(out / "ridge_v1.bin")
    make_field().save(out / "field_v1.bin")
    make_network().save(out / "network_v1.bin")
    make_bm25().save(out / "bm25_v1.json")
    from sparsecore.cli import save_vectors

    enc = make_bm25()
    info: dict[str, Any] = {"encoder": "bm25"}
    save_vectors(out / "vectors_v1.npz", enc.encode_document(CORPUS), [f"d{i}" for i in range(len(CORPUS))], info)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
