"""``sparsecore::topk_decode``: the sparse TopK SAE decoder as a torch custom op (Triton on CUDA, torch elsewhere)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from sparsecore.exceptions import ShapeMismatchError
from sparsecore.gpu._common import (
    acc_dtype,
    check_float_tensor,
    check_index_tensor,
    check_indices_in_range,
    use_triton,
)

__all__ = ["topk_decode", "topk_decode_reference"]


def topk_decode_reference(indices: Tensor, values: Tensor, W_dec: Tensor, bias: Tensor | None = None) -> Tensor:
    """The torch reference: ``F.embedding_bag(..., per_sample_weights=values, mode="sum")`` in float32 (or 64).

    ``indices`` and ``values`` are 2-D ``(rows, k)``; returns ``(rows, d)`` in ``values``' dtype.
    """
    acc = acc_dtype(values, W_dec)
    rows, k = indices.shape
    if rows == 0 or k == 0:
        out = torch.zeros((rows, W_dec.shape[1]), dtype=acc, device=values.device)
    else:
        out = F.embedding_bag(indices, W_dec.to(acc), per_sample_weights=values.to(acc), mode="sum")
    if bias is not None:
        out = out + bias.to(acc)
    return out.to(values.dtype)


def _decode_backward_reference(
    grad: Tensor, indices: Tensor, values: Tensor, W_dec: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    acc = acc_dtype(values, W_dec, grad)
    g, w, v = grad.to(acc), W_dec.to(acc), values.to(acc)
    d_values = (w[indices] @ g.unsqueeze(-1)).squeeze(-1)
    contrib = (v.unsqueeze(-1) * g.unsqueeze(1)).reshape(-1, g.shape[1])
    d_w = torch.zeros(W_dec.shape, dtype=acc, device=W_dec.device).index_add_(0, indices.reshape(-1), contrib)
    return d_values, d_w, g.sum(0)


@torch.library.custom_op("sparsecore::topk_decode", mutates_args=())
def _topk_decode_op(indices: Tensor, values: Tensor, W_dec: Tensor, bias: Tensor | None) -> Tensor:
    if use_triton(values, W_dec, *([] if bias is None else [bias])):
        from sparsecore.gpu._decode_kernels import gather_rows

        return gather_rows(indices, values, W_dec, bias, values.dtype)
    return topk_decode_reference(indices, values, W_dec, bias)


@_topk_decode_op.register_fake
def _(indices: Tensor, values: Tensor, W_dec: Tensor, bias: Tensor | None) -> Tensor:
    return values.new_empty((indices.shape[0], W_dec.shape[1]))


@torch.library.custom_op("sparsecore::topk_decode_backward", mutates_args=())
def _topk_decode_backward_op(
    grad: Tensor, indices: Tensor, values: Tensor, W_dec: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    if use_triton(grad, values, W_dec):
        from sparsecore.gpu._decode_kernels import row_dots, segment_scatter

        g = grad.contiguous()
        d_values = row_dots(indices, g, W_dec)
        d_w = torch.empty(W_dec.shape, dtype=torch.float32, device=W_dec.device)
        segment_scatter(indices, values, g, d_w)
        d_bias = g.float().sum(0)
        return d_values.to(values.dtype), d_w.to(W_dec.dtype), d_bias.to(grad.dtype)
    d_values, d_w, d_bias = _decode_backward_reference(grad, indices, values, W_dec)
    return d_values.to(values.dtype), d_w.to(W_dec.dtype), d_bias.to(grad.dtype)


@_topk_decode_backward_op.register_fake
def _(grad: Tensor, indices: Tensor, values: Tensor, W_dec: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    return values.new_empty(values.shape), W_dec.new_empty(W_dec.shape), grad.new_empty((W_dec.shape[1],))


def _setup_context(ctx: torch.autograd.function.FunctionCtx, inputs: tuple[Tensor, ...], output: Tensor) -> None:
    indices, values, W_dec, bias = inputs
    ctx.save_for_backward(indices, values, W_dec)
    ctx.bias_dtype = None if bias is None else bias.dtype  # type: ignore[attr-defined]


def _backward(ctx: torch.autograd.function.FunctionCtx, grad: Tensor) -> tuple[Tensor | None, ...]:
    indices, values, W_dec = ctx.saved_tensors  # type: ignore[attr-defined]
    d_values, d_w, d_bias = torch.ops.sparsecore.topk_decode_backward(grad.contiguous(), indices, values, W_dec)
    bias_dtype = ctx.bias_dtype  # type: ignore[attr-defined]
    return None, d_values, d_w, None if bias_dtype is None else d_bias.to(bias_dtype)


_topk_decode_op.register_autograd(_backward, setup_context=_setup_context)


def topk_decode(indices: object, values: object, W_dec: object, bias: object = None) -> Tensor:
    """Checked entry point of :func:`sparsecore.gpu.topk_decode` (see its docstring)."""
    idx = check_index_tensor(indices, "indices")
    vals = check_float_tensor(values, "values", min_ndim=1)
    w = check_float_tensor(W_dec, "W_dec", ndim=2)
    if vals.shape != idx.shape:
        raise ShapeMismatchError(f"values: must have the shape of indices {tuple(idx.shape)}, got {tuple(vals.shape)}")
    b = None
    if bias is not None:
        b = check_float_tensor(bias, "bias", ndim=1)
        if b.shape[0] != w.shape[1]:
            raise ShapeMismatchError(f"bias: must have length d = W_dec.shape[1] = {w.shape[1]}, got {b.shape[0]}")
    check_indices_in_range(idx, w.shape[0], "indices")
    lead, k = idx.shape[:-1], idx.shape[-1]
    rows = math.prod(lead)
    out: Tensor = _topk_decode_op(idx.reshape(rows, k), vals.reshape(rows, k), w, b)
    return out.reshape(*lead, w.shape[1])
