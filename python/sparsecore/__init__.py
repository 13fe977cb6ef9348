"""sparsecore: Rust-accelerated sparse representations.

The core needs numpy only. Optional extras are imported lazily: ``sparsecore[scipy]`` for scipy converters,
``sparsecore[torch]`` for torch converters and models, ``sparsecore[gpu]`` for Triton kernels
(``sparsecore.gpu``).

Threads: every parallel operation takes ``num_threads``; the default is the ``SPARSECORE_NUM_THREADS``
environment variable, else all cores. Results never depend on the thread count.

SIMD: the kernels pick AVX-512 / AVX2+FMA paths at run time; ``SPARSECORE_SIMD=off`` (read once per process) runs
the portable loops that every other CPU runs, and :func:`simd_level` says which is active.

Submodules (``sparsecore.pursuit``, ``sparsecore.lsse``, ``sparsecore.sdr``, ``sparsecore.encoders``, ...) are
attributes of the package, imported on first use (PEP 562), so ``import sparsecore`` stays light.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import TYPE_CHECKING

from sparsecore import exceptions
from sparsecore._core import __version__, default_num_threads, simd_level
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
    "simd_level",
]

#: Submodules loaded on first attribute access (``sparsecore.pursuit.omp(...)`` works after ``import sparsecore``).
#: ``torch`` and ``gpu`` need their extras only when their functions run, or, for ``torch`` and ``sae``, when imported.
_LAZY_SUBMODULES = frozenset(
    {
        "cli",
        "datasets",
        "distributed",
        "encoders",
        "eval",
        "fusion",
        "gpu",
        "llm",
        "lsse",
        "pursuit",
        "sae",
        "sae_cpu",
        "sdr",
        "testing",
        "torch",
    }
)

if TYPE_CHECKING:
    from sparsecore import (  # noqa: F401
        cli,
        datasets,
        distributed,
        encoders,
        eval,
        fusion,
        gpu,
        llm,
        lsse,
        pursuit,
        sae,
        sae_cpu,
        sdr,
        testing,
        torch,
    )


def __getattr__(name: str) -> ModuleType:
    """Import a submodule on first access (PEP 562)."""
    if name in _LAZY_SUBMODULES:
        module = importlib.import_module(f"{__name__}.{name}")
        globals()[name] = module
        return module
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | _LAZY_SUBMODULES)
