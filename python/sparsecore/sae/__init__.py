"""Sparse autoencoders for model activations, importable as ``sparsecore.sae`` (``pip install 'sparsecore[torch]'``).

Models (:class:`TopKSAE`, :class:`BatchTopKSAE`, :class:`JumpReLUSAE`, :class:`ReLUSAE`,
:class:`MatchingPursuitSAE`, all :class:`SparseAutoencoder`), their files (:func:`load` reads SAELens and
EleutherAI sparsify folders; :meth:`SparseAutoencoder.save` writes SAELens folders), :func:`train` (Adam with
warm-up and decay, AuxK for dead latents, unit-norm decoder, activation scaling, checkpoints and exact resume),
activations of any transformers model (:class:`ActivationSource`: forward hooks, shuffle buffer, on-disk cache),
:func:`evaluate` in the live model (FVU, L0, dead latents, CE loss recovered, KL, dark matter) and SAE embeddings
(:func:`embed`, :func:`dataset_diff`, :func:`top_documents`). The command line: ``sparsecore sae train|eval|embed``.

This subpackage needs torch; importing it without torch raises :class:`~sparsecore.exceptions.MissingExtraError`
(an ImportError) naming the extra to install.
"""

from __future__ import annotations

from sparsecore._optional import require

require("torch")
require("safetensors")

from sparsecore.sae._cli import demo_texts, load_causal_lm  # noqa: E402
from sparsecore.sae._data import ActivationSource  # noqa: E402
from sparsecore.sae._embed import dataset_diff, embed, top_documents  # noqa: E402
from sparsecore.sae._eval import dark_matter, evaluate  # noqa: E402
from sparsecore.sae._io import load, save  # noqa: E402
from sparsecore.sae._models import (  # noqa: E402
    BatchTopKSAE,
    JumpReLUSAE,
    MatchingPursuitSAE,
    ReLUSAE,
    SparseAutoencoder,
    TopKSAE,
)
from sparsecore.sae._train import train  # noqa: E402

__all__ = [
    "ActivationSource",
    "BatchTopKSAE",
    "JumpReLUSAE",
    "MatchingPursuitSAE",
    "ReLUSAE",
    "SparseAutoencoder",
    "TopKSAE",
    "dark_matter",
    "dataset_diff",
    "demo_texts",
    "embed",
    "evaluate",
    "load",
    "load_causal_lm",
    "save",
    "top_documents",
    "train",
]
