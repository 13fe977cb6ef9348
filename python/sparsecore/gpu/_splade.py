"""``sparsecore::splade_head``: SPLADE's vocabulary projection + ``log1p(relu)`` + max over tokens, bounded memory."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from sparsecore.exceptions import DTypeError, ShapeMismatchError
from sparsecore.gpu._common import acc_dtype, check_float_tensor, check_tensor, use_triton

__all__ = ["splade_head", "splade_head_reference"]

#: Bound on the temporary buffers of the torch reference and of the backward (per chunk of vocabulary terms).
CHUNK_BYTES = 64 * 2**20


def _chunk(rows: int, width: int, itemsize: int) -> int:
    return max(1, CHUNK_BYTES // max(1, rows * width * itemsize))


def splade_head_reference(hidden: Tensor, W: Tensor, bias: Tensor | None, mask: Tensor) -> tuple[Tensor, Tensor]:
    """The torch reference: ``(weights, argmax)`` in float32 (or 64) and int32, chunked over the vocabulary.

    Holds at most about :data:`CHUNK_BYTES` of logits at once (``B x L x chunk``), never ``B x L x V``.
    """
    acc = acc_dtype(hidden, W)
    b, length, _ = hidden.shape
    v = W.shape[0]
    h = hidden.to(acc)
    valid = mask.bool()[:, :, None]
    out = torch.empty((b, v), dtype=acc, device=hidden.device)
    arg = torch.empty((b, v), dtype=torch.int32, device=hidden.device)
    step = _chunk(b, length, torch.finfo(acc).bits // 8)
    for s in range(0, v, step):
        e = min(v, s + step)
        logits = h @ W[s:e].to(acc).t()
        if bias is not None:
            logits = logits + bias[s:e].to(acc)
        logits = logits.masked_fill(~valid, float("-inf"))
        if length:
            best, where = logits.max(dim=1)  # the first token reaching the maximum
        else:
            best = torch.full((b, e - s), float("-inf"), dtype=acc, device=hidden.device)
            where = torch.zeros((b, e - s), dtype=torch.int64, device=hidden.device)
        out[:, s:e] = torch.log1p(torch.relu(best))
        arg[:, s:e] = torch.where(best == float("-inf"), -1, where).to(torch.int32)
    return out, arg


@torch.library.custom_op("sparsecore::splade_head", mutates_args=())
def _splade_head_op(hidden: Tensor, W: Tensor, bias: Tensor | None, mask: Tensor) -> tuple[Tensor, Tensor]:
    if use_triton(hidden, W, *([] if bias is None else [bias])):
        from sparsecore.gpu._splade_kernels import splade_head_triton

        return splade_head_triton(hidden, W, bias, mask.to(torch.int8).contiguous())
    return splade_head_reference(hidden, W, bias, mask)


@_splade_head_op.register_fake
def _(hidden: Tensor, W: Tensor, bias: Tensor | None, mask: Tensor) -> tuple[Tensor, Tensor]:
    acc = acc_dtype(hidden, W)
    shape = (hidden.shape[0], W.shape[0])
    return hidden.new_empty(shape, dtype=acc), hidden.new_empty(shape, dtype=torch.int32)


def _setup_context(ctx: torch.autograd.function.FunctionCtx, inputs: tuple[Any, ...], output: Any) -> None:
    hidden, W, bias, _ = inputs
    out, arg = output
    ctx.save_for_backward(hidden, W, out, arg)
    ctx.bias_dtype = None if bias is None else bias.dtype  # type: ignore[attr-defined]


def _backward(ctx: torch.autograd.function.FunctionCtx, grad: Tensor, _grad_arg: Tensor | None) -> tuple[Any, ...]:
    # Torch on both paths, chunked over the vocabulary (bounded memory), deterministic: scatter into distinct
    # slots, then matmuls; no float atomics. Only the argmax token of each (row, term) gets gradient.
    hidden, W, out, arg = ctx.saved_tensors  # type: ignore[attr-defined]
    acc = acc_dtype(hidden, W, grad)
    b, length, d = hidden.shape
    v = W.shape[0]
    # d out / d max-logit = 1 / (1 + m) where m > 0, else 0; exp(-out) = 1 / (1 + m).
    o = out.to(acc)
    coef = grad.to(acc) * torch.exp(-o) * (o > 0)
    coef = torch.where(arg >= 0, coef, torch.zeros((), dtype=acc, device=coef.device))
    h = hidden.to(acc)
    d_hidden = torch.zeros((b, length, d), dtype=acc, device=hidden.device)
    d_w = torch.empty((v, d), dtype=acc, device=W.device)
    step = _chunk(b, max(length, d, 1), torch.finfo(acc).bits // 8)
    for s in range(0, v, step):
        e = min(v, s + step)
        c = coef[:, s:e]
        a = arg[:, s:e].long().clamp(min=0)
        if length:
            # Each (row, term) column has exactly one slot: a scatter without collisions.
            spread = torch.zeros((b, length, e - s), dtype=acc, device=hidden.device)
            spread.scatter_(1, a[:, None, :], c[:, None, :])
            d_hidden += spread @ W[s:e].to(acc)
            picked = torch.gather(h, 1, a[:, :, None].expand(-1, -1, d))  # (B, chunk, d)
            d_w[s:e] = torch.einsum("bv,bvd->vd", c, picked)
        else:
            d_w[s:e] = 0
    bias_dtype = ctx.bias_dtype  # type: ignore[attr-defined]
    d_bias = None if bias_dtype is None else coef.sum(0).to(bias_dtype)
    return d_hidden.to(hidden.dtype), d_w.to(W.dtype), d_bias, None


_splade_head_op.register_autograd(_backward, setup_context=_setup_context)


def splade_head(hidden: object, W_vocab: object, b_vocab: object, attention_mask: object) -> Tensor:
    """Checked entry point of :func:`sparsecore.gpu.splade_head` (see its docstring)."""
    h = check_float_tensor(hidden, "hidden", ndim=3)
    w = check_float_tensor(W_vocab, "W_vocab", ndim=2)
    bsz, length, d = h.shape
    if w.shape[1] != d:
        raise ShapeMismatchError(f"W_vocab: must be (V, {d}) for hidden of width {d}, got {tuple(w.shape)}")
    bias = None
    if b_vocab is not None:
        bias = check_float_tensor(b_vocab, "b_vocab", ndim=1)
        if bias.shape[0] != w.shape[0]:
            raise ShapeMismatchError(f"b_vocab: must have length V = {w.shape[0]}, got {bias.shape[0]}")
    if attention_mask is None:
        mask = torch.ones((bsz, length), dtype=torch.bool, device=h.device)
    else:
        mask = check_tensor(attention_mask, "attention_mask")
        if mask.dtype.is_floating_point or mask.dtype.is_complex:
            raise DTypeError(f"attention_mask: must be a bool or integer tensor, got {mask.dtype}")
        if mask.shape != (bsz, length):
            raise ShapeMismatchError(f"attention_mask: must be ({bsz}, {length}), got {tuple(mask.shape)}")
        mask = mask.to(device=h.device, dtype=torch.bool)
    out, _ = _splade_head_op(h, w, bias, mask)
    result: Tensor = out.to(h.dtype)
    return result
