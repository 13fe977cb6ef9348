"""Hooks into language models from transformers (or any ``torch.nn.Module``) and sparse edits of them, extra ``torch``.

:mod:`sparsecore.llm.hooks` is the one place for hook machinery: :func:`resolve_module` finds a submodule by its
dotted name, :func:`capture` records module outputs (optionally stopping the forward after the last one),
:func:`edit` replaces a module's output during forward passes and generation, and :func:`token_mask` /
:func:`select_tokens` drop padding (and the first token) using the attention mask.

Edits built on it: :class:`SafetySteering` (Jailbreak Antidote: a sparse safety direction added to the best
separating decoder layers, fitted on paired prompts such as :func:`safety_pairs`), :func:`latent_steering` (add
SAE decoder directions, or clamp SAE latents with the error term kept), :func:`nm_masks` /
:class:`ProgressiveNM` (N:M weight masks through parametrizations, removable with :func:`remove_nm_masks`),
:class:`CoreNeurons` (CoreInfer: decode with each FFN sliced to the prompt's sentence-wise core neurons) and
:class:`RSparse` (R-Sparse: inputs below a calibrated threshold go through a low-rank SVD path;
:func:`magnitude_sparsity` is the TEAL-style rank-0 baseline; :func:`sparsity_sensitivity` and
:func:`allocate_sparsity` find a per-layer-group allocation for a target mean sparsity).
:func:`steering_demo` (the ``sparsecore llm`` command) prints greedy generations with and without the safety
steering.
"""

from __future__ import annotations

from sparsecore.llm._allocate import SparsitySensitivity, allocate_sparsity, sparsity_sensitivity
from sparsecore.llm._coreinfer import CoreNeurons, core_neurons, gated_ffns, token_core_counts
from sparsecore.llm._demo import SteeredGeneration, chat_prompt, steering_demo
from sparsecore.llm._latent import latent_steering
from sparsecore.llm._layers import decoder_layers, linear_layers
from sparsecore.llm._nm import (
    NMMask,
    ProgressiveNM,
    input_norms,
    nm_density,
    nm_mask,
    nm_masks,
    remove_nm_masks,
    to_semi_structured,
)
from sparsecore.llm._rsparse import RSparse, magnitude_sparsity, rsparse_reference
from sparsecore.llm._steering import (
    PairedDirection,
    SafetySteering,
    Steering,
    n_kept,
    paired_direction,
    safety_pairs,
)
from sparsecore.llm.hooks import (
    Capture,
    capture,
    edit,
    output_tensor,
    replace_output,
    resolve_module,
    select_tokens,
    token_mask,
)

__all__ = [
    "Capture",
    "CoreNeurons",
    "NMMask",
    "PairedDirection",
    "ProgressiveNM",
    "RSparse",
    "SafetySteering",
    "SparsitySensitivity",
    "SteeredGeneration",
    "Steering",
    "allocate_sparsity",
    "capture",
    "chat_prompt",
    "core_neurons",
    "decoder_layers",
    "edit",
    "gated_ffns",
    "input_norms",
    "latent_steering",
    "linear_layers",
    "magnitude_sparsity",
    "n_kept",
    "nm_density",
    "nm_mask",
    "nm_masks",
    "output_tensor",
    "paired_direction",
    "remove_nm_masks",
    "replace_output",
    "resolve_module",
    "rsparse_reference",
    "safety_pairs",
    "select_tokens",
    "sparsity_sensitivity",
    "steering_demo",
    "to_semi_structured",
    "token_core_counts",
    "token_mask",
]
