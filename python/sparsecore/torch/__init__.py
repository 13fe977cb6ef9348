"""Torch-only parts of sparsecore, importable as ``sparsecore.torch`` (``pip install 'sparsecore[torch]'``).

This subpackage imports torch at import time; ``import sparsecore`` itself never does. It holds the training losses
for learned sparse retrieval (SPLADE, inference-free models): :func:`flops_loss`, :func:`l1_loss`,
:class:`RegularizationWarmup`, :func:`idf_weighted_scores` and :func:`contrastive_loss`.
"""

from __future__ import annotations

from sparsecore.torch.losses import (
    RegularizationWarmup,
    contrastive_loss,
    flops_loss,
    idf_weighted_scores,
    l1_loss,
)

__all__ = ["RegularizationWarmup", "contrastive_loss", "flops_loss", "idf_weighted_scores", "l1_loss"]
