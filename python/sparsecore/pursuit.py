"""Sparse coding over a dictionary: OMP, matching pursuit, gradient pursuit, the Lasso and thresholding.

Layout as in scikit-learn: signals ``X`` are rows ``(n_signals, n_features)``; the dictionary ``D`` holds one atom
per row ``(n_atoms, n_features)``; codes ``Z`` are ``(n_signals, n_atoms)`` with ``X ~ Z @ D``.

Everything runs in Rust, in parallel over signals with the GIL released, natively in float32 or float64 (``X``
and ``D`` must share the dtype; nothing is silently converted between the two). The correlations ``D x`` of a
chunk of signals come from one matrix product and the Gram matrix ``D Dᵀ`` is computed once per call (pass
``gram=`` to reuse one), so the per-signal iterations touch only small buffers (Batch-OMP).

Algorithms: OMP (Pati et al. 1993; progressive Cholesky as in Rubinstein, Zibulevsky & Elad 2008), MP (Mallat &
Zhang 1993), gradient pursuit (Blumensath & Davies 2008), Lasso by coordinate descent, ISTA or FISTA (Beck &
Teboulle 2009) with scikit-learn's objective ``1/(2 n_features) ||x - Dᵀz||² + alpha ||z||₁`` and duality-gap
stopping, and soft thresholding of the correlations.
"""

from __future__ import annotations

from sparsecore._estimators import DictionaryLearner, SparseCoder
from sparsecore._pursuit import LassoMethod, Output, gradient_pursuit, lasso, mp, omp, release_cached_outputs, threshold

__all__ = [
    "DictionaryLearner",
    "LassoMethod",
    "Output",
    "SparseCoder",
    "gradient_pursuit",
    "lasso",
    "mp",
    "omp",
    "release_cached_outputs",
    "threshold",
]

for _fn in (gradient_pursuit, lasso, mp, omp, release_cached_outputs, threshold):
    _fn.__module__ = __name__  # documented (and shown in reprs) as sparsecore.pursuit.<name>
del _fn
