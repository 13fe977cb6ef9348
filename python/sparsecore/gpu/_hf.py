"""A transformers ``AttentionInterface`` implementation that runs block-sparse attention at prefill."""

from __future__ import annotations

import inspect
import weakref
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from sparsecore._validate import positive_int
from sparsecore.exceptions import InvalidArgumentError
from sparsecore.gpu._attention import token_mask
from sparsecore.gpu._blocks import minference_blocks, routing_blocks, sparsed_blocks

__all__ = ["BUILDERS", "make_attention", "register_attention"]

BUILDERS: dict[str, Callable[..., Tensor]] = {
    "minference": minference_blocks,
    "sparsed": sparsed_blocks,
    "routing": routing_blocks,
}


def _kernel_path(query: Tensor, block_size: int) -> bool:
    """Whether :func:`block_sparse_attention` can run (CUDA, a block size the kernel takes)."""
    return query.is_cuda and block_size >= 16 and block_size & (block_size - 1) == 0


def _key_padding(attention_mask: Tensor, t: int, causal: bool) -> Tensor | None:
    """The ``(B, T)`` real-key mask when ``attention_mask`` is exactly key padding (and causality), else None.

    transformers' boolean ``(B, 1, T, T)`` masks for a padded batch are "key is real" (and causal); rows of
    padding queries see no key. Any other mask (float, per head, sliding windows, ...) returns None: the layer then
    runs dense SDPA with it.
    """
    if attention_mask.dtype != torch.bool or attention_mask.ndim != 4 or attention_mask.shape[1] != 1:
        return None
    m = attention_mask[:, 0, :t, :t]
    real = m.any(-2)
    expected = real[:, None, :].expand(-1, t, -1)
    if causal:
        expected = expected & torch.ones(t, t, dtype=torch.bool, device=m.device).tril()
    return real if torch.equal(m, expected) else None


def make_attention(
    builder: Callable[..., Tensor], block_size: int, builder_kwargs: dict[str, Any]
) -> Callable[..., Any]:
    """The attention function registered by :func:`register_attention` (see its docstring)."""
    takes_scale = "scale" in inspect.signature(builder).parameters
    takes_padding = "key_padding_mask" in inspect.signature(builder).parameters
    # Every decoder layer of a forward gets the same mask object: recognise it once (an O(T^2) comparison), not per
    # layer. A weak reference keeps no mask alive and cannot be fooled by a later mask at the same address.
    seen: dict[str, Any] = {"ref": lambda: None}

    def key_padding(mask: Tensor, t: int, causal: bool) -> Tensor | None:
        key = (mask._version, t, causal)
        if seen["ref"]() is not mask or seen["key"] != key:
            seen.update(ref=weakref.ref(mask), key=key, padding=_key_padding(mask, t, causal))
        padding: Tensor | None = seen["padding"]
        return padding

    def attention(
        module: torch.nn.Module,
        query: Tensor,
        key: Tensor,
        value: Tensor,
        attention_mask: Tensor | None,
        scaling: float | None = None,
        dropout: float = 0.0,
        **kwargs: Any,
    ) -> tuple[Tensor, None]:
        from transformers.integrations.sdpa_attention import sdpa_attention_forward

        t, s = query.shape[2], key.shape[2]
        causal = kwargs.get("is_causal")
        causal = bool(getattr(module, "is_causal", True) if causal is None else causal)
        if t != s or t <= block_size or (dropout > 0.0 and module.training):
            # Decode steps, short sequences, dropout: dense SDPA with the mask transformers built.
            out, _ = sdpa_attention_forward(
                module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs
            )
            return out, None
        groups = query.shape[1] // key.shape[1]
        # the builders score query heads against their kv head (repeated); the kernel reads the kv heads as they are
        key_per_q = key.repeat_interleave(groups, dim=1) if groups > 1 else key
        extra = dict(builder_kwargs)
        if takes_scale and scaling is not None:
            extra.setdefault("scale", scaling)
        padding = None if attention_mask is None else key_padding(attention_mask, t, causal)
        if padding is not None and takes_padding:
            extra["key_padding_mask"] = padding
        block_mask = builder(query, key_per_q, block_size=block_size, causal=causal, **extra)
        scale = query.shape[-1] ** -0.5 if scaling is None else scaling
        if _kernel_path(query, block_size) and (attention_mask is None or padding is not None):
            from sparsecore.gpu._attention import block_sparse_attention

            out = block_sparse_attention(
                query,
                key,
                value,
                block_mask,
                block_size=block_size,
                causal=causal,
                scale=scale,
                key_padding_mask=padding,
            )
            return out.transpose(1, 2).contiguous(), None
        key = key_per_q
        value = value.repeat_interleave(groups, dim=1) if groups > 1 else value
        # CPU, or a mask the kernel does not take: dense SDPA on the expanded token mask (same result, dense cost).
        keep = token_mask(block_mask, t, block_size, causal)
        if attention_mask is None:
            mask: Tensor = keep
        elif attention_mask.dtype == torch.bool:
            mask = keep & attention_mask[..., :t, :s]
        else:
            mask = attention_mask[..., :t, :s].masked_fill(~keep, float("-inf"))
        if mask.dtype == torch.bool:
            # A query that sees no key (a padding position): attend everywhere rather than produce NaN.
            mask = mask | ~mask.any(-1, keepdim=True)
        out = torch.nn.functional.scaled_dot_product_attention(query, key, value, attn_mask=mask, scale=scale)
        return out.transpose(1, 2).contiguous(), None

    return attention


def register_attention(
    name: str = "sparsecore_block_sparse",
    *,
    builder: str | Callable[..., Tensor] = "minference",
    block_size: int = 64,
    **builder_kwargs: Any,
) -> str:
    """Checked entry point of :func:`sparsecore.gpu.register_attention` (see its docstring)."""
    if not isinstance(name, str) or not name:
        raise InvalidArgumentError(f"name: must be a non-empty string, got {name!r}")
    if isinstance(builder, str):
        if builder not in BUILDERS:
            raise InvalidArgumentError(
                f"builder: must be one of {', '.join(map(repr, BUILDERS))} or a callable, got {builder!r}"
            )
        fn = BUILDERS[builder]
    elif callable(builder):
        fn = builder
    else:
        raise InvalidArgumentError(
            f"builder: must be one of {', '.join(map(repr, BUILDERS))} or a callable, got {builder!r}"
        )
    bs = positive_int(block_size, "block_size")
    params = inspect.signature(fn).parameters
    if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
        unknown = sorted(set(builder_kwargs) - set(params))
        if unknown:
            raise InvalidArgumentError(f"builder_kwargs: must be arguments of the builder, got {', '.join(unknown)}")
    for fixed in ("causal", "key_padding_mask"):
        if fixed in builder_kwargs:
            raise InvalidArgumentError(f"builder_kwargs: must not set {fixed!r} (it comes from the model), got {fixed}")
    from transformers import AttentionInterface, AttentionMaskInterface
    from transformers.masking_utils import sdpa_mask

    AttentionInterface.register(name, make_attention(fn, bs, dict(builder_kwargs)))
    # The same boolean masks as "sdpa" (padding and causality; None when causality alone suffices).
    AttentionMaskInterface.register(name, sdpa_mask)
    return name
