"""sparsecore: Rust-accelerated sparse representations.

The core needs numpy only. Optional extras are imported lazily: ``sparsecore[scipy]`` for scipy converters,
``sparsecore[torch]`` for torch converters and models, ``sparsecore[gpu]`` for Triton kernels
(``sparsecore.gpu``).

Threads: every parallel operation takes ``num_threads``; the default is the ``SPARSECORE_NUM_THREADS``
environment variable, else all cores. Results never depend on the thread count.
"""

from __future__ import annotations

from sparsecore import exceptions
from sparsecore._core import __version__, default_num_threads
from sparsecore.index import RECALL_PRESETS, InvertedIndex
from sparsecore.sparse import MAX_DIM, QuantizedBatch, SparseBatch

__all__ = [
    "MAX_DIM",
    "RECALL_PRESETS",
    "InvertedIndex",
    "QuantizedBatch",
    "SparseBatch",
    "__version__",
    "default_num_threads",
    "exceptions",
]
