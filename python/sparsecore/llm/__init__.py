"""Hooks into language models from transformers (or any ``torch.nn.Module``), extra ``torch``.

:mod:`sparsecore.llm.hooks` is the one place for hook machinery: :func:`resolve_module` finds a submodule by its
dotted name, :func:`capture` records module outputs (optionally stopping the forward after the last one),
:func:`edit` replaces a module's output during forward passes and generation, and :func:`token_mask` /
:func:`select_tokens` drop padding (and the first token) using the attention mask.
"""

from __future__ import annotations

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
    "capture",
    "edit",
    "output_tensor",
    "replace_output",
    "resolve_module",
    "select_tokens",
    "token_mask",
]
