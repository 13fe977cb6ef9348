"""Calibration input for the sparse edits: texts or token batches, run through the model with input hooks."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor, nn

from sparsecore.exceptions import InvalidArgumentError
from sparsecore.llm.hooks import token_mask

__all__ = ["calibration_batches", "model_device", "run_with_input_hooks"]


def calibration_batches(calibration: object, tokenizer: Any = None) -> list[dict[str, Any]]:
    """Calibration input as a list of model keyword arguments.

    Parameters
    ----------
    calibration
        Input ids ``(batch, seq)``, a tokenizer output (a mapping with ``input_ids`` and optionally
        ``attention_mask``), a list of those, or a list of texts (then ``tokenizer`` is needed; each text becomes
        its own unpadded batch). A bare ``str`` is refused.
    tokenizer
        A transformers tokenizer, called as ``tokenizer(text, return_tensors="pt")``.

    Returns
    -------
    list of dict
        One ``{"input_ids": ..., ["attention_mask": ...]}`` per forward pass.

    Raises
    ------
    InvalidArgumentError
        Anything else, an empty list, texts without a tokenizer, or a text that tokenizes to no tokens.
    """
    if isinstance(calibration, str):  # a bare text: refused like any other non-batch (texts come in a list)
        raise InvalidArgumentError(
            "calibration: must be input ids (a Tensor), a tokenizer output (a mapping with 'input_ids'), or a list "
            "of those or of texts, got str"
        )
    items = calibration if isinstance(calibration, list) else [calibration]
    batches: list[dict[str, Any]] = []
    for item in items:
        if isinstance(item, str):
            if tokenizer is None:
                raise InvalidArgumentError("tokenizer: must be given when the calibration input holds texts")
            enc = tokenizer(item, return_tensors="pt")
            if enc["input_ids"].numel() == 0:
                raise InvalidArgumentError(f"calibration: the text {item[:40]!r} tokenized to no tokens")
            batches.append({k: v for k, v in enc.items() if isinstance(v, Tensor)})
        elif isinstance(item, Tensor):
            batches.append({"input_ids": item})
        elif isinstance(item, Mapping) and isinstance(item.get("input_ids"), Tensor):
            batches.append(dict(item))
        else:
            raise InvalidArgumentError(
                "calibration: must be input ids (a Tensor), a tokenizer output (a mapping with 'input_ids'), texts "
                f"(with a tokenizer) or a list of those, got {type(item).__name__}"
            )
    if not batches:
        raise InvalidArgumentError("calibration: must hold at least one batch, got an empty list")
    return batches


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter (CPU for a model without parameters)."""
    return next((p.device for p in model.parameters()), torch.device("cpu"))


@torch.no_grad()
def run_with_input_hooks(
    model: nn.Module,
    modules: Mapping[str, nn.Module],
    batches: list[dict[str, Any]],
    visit: Callable[[str, Tensor], None],
) -> Any:
    """Run ``model`` on every batch and call ``visit(name, x)`` with each module's input at the real tokens.

    ``x`` is the module's first positional input reshaped to ``(n_tokens, features)``; when the batch has an
    ``attention_mask`` and the input is ``(batch, seq, features)``, padding positions are dropped. The forward
    pre-hooks are removed afterwards, also on error.

    Parameters
    ----------
    model
        The model; each batch's tensors are moved to its device.
    modules
        Name -> submodule of ``model`` to hook.
    batches
        From :func:`calibration_batches`.
    visit
        Called once per module and forward pass, in execution order.

    Returns
    -------
    Any
        The model's output on the last batch.
    """
    current: dict[str, Tensor | None] = {"mask": None}

    def hook_for(name: str) -> Callable[[nn.Module, tuple[Any, ...]], None]:
        def hook(_module: nn.Module, args: tuple[Any, ...]) -> None:
            x = args[0]
            mask = current["mask"]
            if mask is not None and x.dim() == 3 and tuple(x.shape[:2]) == tuple(mask.shape):
                x = x[mask.to(x.device)]
            visit(name, x.detach().reshape(-1, x.shape[-1]))

        return hook

    device = model_device(model)
    out: Any = None
    with contextlib.ExitStack() as stack:
        for name, module in modules.items():
            stack.callback(module.register_forward_pre_hook(hook_for(name)).remove)
        for batch in batches:
            kwargs = {k: v.to(device) if isinstance(v, Tensor) else v for k, v in batch.items()}
            attn = kwargs.get("attention_mask")
            current["mask"] = token_mask(attn) if isinstance(attn, Tensor) else None
            out = model(**kwargs)
    return out
