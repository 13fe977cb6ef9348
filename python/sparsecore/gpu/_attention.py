"""``sparsecore::block_sparse_attention``: LUT-driven block-sparse attention as a torch custom op."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from sparsecore._validate import check_bool, positive_float, positive_int
from sparsecore.exceptions import DTypeError, InvalidArgumentError, ShapeMismatchError
from sparsecore.gpu._common import acc_dtype, check_float_tensor, check_tensor, use_triton

__all__ = ["block_sparse_attention", "block_sparse_attention_reference"]


def _probabilities(q: Tensor, k: Tensor, block_mask: Tensor, block_size: int, causal: bool, scale: float) -> Tensor:
    """Dense attention probabilities ``(BH, T, T)`` under the expanded block mask; rows with no key are 0."""
    t = q.shape[1]
    keep = block_mask.repeat_interleave(block_size, -1).repeat_interleave(block_size, -2)[:, :t, :t]
    if causal:
        keep = keep & torch.ones(t, t, dtype=torch.bool, device=q.device).tril()
    s = (q @ k.transpose(-1, -2)) * scale
    s = s.masked_fill(~keep, float("-inf"))
    p = torch.softmax(s, dim=-1)
    return torch.where(keep.any(-1, keepdim=True), p, torch.zeros((), dtype=p.dtype, device=p.device))


def block_sparse_attention_reference(
    q: Tensor, k: Tensor, v: Tensor, block_mask: Tensor, block_size: int, causal: bool, scale: float
) -> Tensor:
    """The torch reference on ``(BH, T, d_head)`` inputs: dense attention with the block mask, float32 (or 64)."""
    acc = acc_dtype(q, k, v)
    p = _probabilities(q.to(acc), k.to(acc), block_mask, block_size, causal, scale)
    return (p @ v.to(acc)).to(q.dtype)


@torch.library.custom_op("sparsecore::block_sparse_attention", mutates_args=())
def _attention_op(
    q: Tensor, k: Tensor, v: Tensor, block_mask: Tensor, block_size: int, causal: bool, scale: float
) -> Tensor:
    if use_triton(q, k, v):
        from sparsecore.gpu._attention_kernels import block_sparse_attention_triton

        return block_sparse_attention_triton(q, k, v, block_mask, block_size, causal, scale)
    return block_sparse_attention_reference(q, k, v, block_mask, block_size, causal, scale)


@_attention_op.register_fake
def _(q: Tensor, k: Tensor, v: Tensor, block_mask: Tensor, block_size: int, causal: bool, scale: float) -> Tensor:
    return torch.empty_like(q)


def _setup_context(ctx: torch.autograd.function.FunctionCtx, inputs: tuple[Any, ...], output: Tensor) -> None:
    q, k, v, block_mask, block_size, causal, scale = inputs
    ctx.save_for_backward(q, k, v, block_mask)
    ctx.args = (block_size, causal, scale)  # type: ignore[attr-defined]


def _backward(ctx: torch.autograd.function.FunctionCtx, grad: Tensor) -> tuple[Tensor | None, ...]:
    # Dense torch backward on both paths (recomputes the (BH, T, T) probabilities; no Triton backward yet).
    q, k, v, block_mask = ctx.saved_tensors  # type: ignore[attr-defined]
    block_size, causal, scale = ctx.args  # type: ignore[attr-defined]
    acc = acc_dtype(q, k, v, grad)
    qf, kf, vf, g = q.to(acc), k.to(acc), v.to(acc), grad.to(acc)
    p = _probabilities(qf, kf, block_mask, block_size, causal, scale)
    dv = p.transpose(-1, -2) @ g
    dp = g @ vf.transpose(-1, -2)
    ds = p * (dp - (dp * p).sum(-1, keepdim=True)) * scale
    return (ds @ kf).to(q.dtype), (ds.transpose(-1, -2) @ qf).to(k.dtype), dv.to(v.dtype), None, None, None, None


_attention_op.register_autograd(_backward, setup_context=_setup_context)


def block_sparse_attention(
    q: object,
    k: object,
    v: object,
    block_mask: object,
    *,
    block_size: object = 64,
    causal: object = False,
    scale: object = None,
) -> Tensor:
    """Checked entry point of :func:`sparsecore.gpu.block_sparse_attention` (see its docstring)."""
    qt = check_float_tensor(q, "q", ndim=4)
    kt = check_float_tensor(k, "k", ndim=4)
    vt = check_float_tensor(v, "v", ndim=4)
    for name, other in (("k", kt), ("v", vt)):
        if other.shape != qt.shape:
            raise ShapeMismatchError(f"{name}: must have the shape of q {tuple(qt.shape)}, got {tuple(other.shape)}")
    bs = positive_int(block_size, "block_size")
    if bs < 16 or bs & (bs - 1):
        raise InvalidArgumentError(f"block_size: must be a power of two >= 16, got {bs}")
    is_causal = check_bool(causal, "causal")
    b, h, t, dh = qt.shape
    sc = 1.0 / math.sqrt(dh) if scale is None else positive_float(scale, "scale")
    mask = check_tensor(block_mask, "block_mask")
    if mask.dtype != torch.bool:
        raise DTypeError(f"block_mask: must be a bool tensor, got {mask.dtype}")
    nb = -(-t // bs)
    if mask.ndim != 4 or mask.shape[2:] != (nb, nb) or mask.shape[0] not in (1, b) or mask.shape[1] not in (1, h):
        raise ShapeMismatchError(
            f"block_mask: must be ({b} or 1, {h} or 1, {nb}, {nb}) for T={t} and block_size={bs}, "
            f"got {tuple(mask.shape)}"
        )
    mask = mask.expand(b, h, nb, nb).reshape(b * h, nb, nb).contiguous()
    out: Tensor = _attention_op(
        qt.reshape(b * h, t, dh), kt.reshape(b * h, t, dh), vt.reshape(b * h, t, dh), mask, bs, is_causal, sc
    )
    return out.reshape(b, h, t, dh)
