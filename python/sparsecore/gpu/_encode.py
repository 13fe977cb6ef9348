"""``sparsecore::topk_encode``: the fused TopK / JumpReLU SAE encoder as a torch custom op."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from sparsecore._validate import check_choice, nonnegative_int
from sparsecore.exceptions import InvalidArgumentError, ShapeMismatchError
from sparsecore.gpu._common import acc_dtype, check_float_tensor, use_triton

__all__ = ["topk_encode", "topk_encode_reference"]


def _activations(
    x: Tensor, W_enc: Tensor, b_enc: Tensor, threshold: Tensor | None, b_dec: Tensor | None
) -> tuple[Tensor, Tensor]:
    """``(xc, z)``: the centred input and the activations (ReLU, or JumpReLU when ``threshold`` is given)."""
    acc = acc_dtype(x, W_enc)
    xc = x.to(acc) if b_dec is None else x.to(acc) - b_dec.to(acc)
    pre = xc @ W_enc.to(acc) + b_enc.to(acc)
    z = torch.relu(pre) if threshold is None else torch.where(pre > threshold.to(acc), pre, torch.zeros_like(pre))
    return xc, z


def topk_encode_reference(
    x: Tensor, W_enc: Tensor, b_enc: Tensor, k: int, threshold: Tensor | None = None, b_dec: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """The torch reference on 2-D ``x``: dense pre-activations, then a stable descending sort (ties: lower id)."""
    _, z = _activations(x, W_enc, b_enc, threshold, b_dec)
    vals, idx = torch.sort(z, dim=-1, descending=True, stable=True)
    return idx[:, :k].contiguous(), vals[:, :k].to(x.dtype).contiguous()


@torch.library.custom_op("sparsecore::topk_encode", mutates_args=())
def _topk_encode_op(
    x: Tensor, W_enc: Tensor, b_enc: Tensor, k: int, threshold: Tensor | None, b_dec: Tensor | None
) -> tuple[Tensor, Tensor]:
    extra = [t for t in (threshold, b_dec) if t is not None]
    if use_triton(x, W_enc, b_enc, *extra):
        from sparsecore.gpu._encode_kernels import topk_encode_triton

        return topk_encode_triton(x, W_enc, b_enc, k, threshold, b_dec)
    return topk_encode_reference(x, W_enc, b_enc, k, threshold, b_dec)


@_topk_encode_op.register_fake
def _(
    x: Tensor, W_enc: Tensor, b_enc: Tensor, k: int, threshold: Tensor | None, b_dec: Tensor | None
) -> tuple[Tensor, Tensor]:
    return x.new_empty((x.shape[0], k), dtype=torch.int64), x.new_empty((x.shape[0], k))


@torch.library.custom_op("sparsecore::topk_encode_backward", mutates_args=())
def _topk_encode_backward_op(
    grad: Tensor, x: Tensor, W_enc: Tensor, b_dec: Tensor | None, indices: Tensor, values: Tensor
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    # Only selected, non-zero entries pass gradient (ReLU' = 1 there; JumpReLU: straight through the value).
    acc = acc_dtype(x, W_enc, grad)
    gm = torch.where(values != 0, grad.to(acc), torch.zeros((), dtype=acc, device=grad.device)).contiguous()
    xc = (x.to(acc) if b_dec is None else x.to(acc) - b_dec.to(acc)).contiguous()
    n = W_enc.shape[1]
    extra = [] if b_dec is None else [b_dec]
    if use_triton(grad, x, W_enc, *extra):
        from sparsecore.gpu._decode_kernels import gather_rows, segment_scatter

        dxc = gather_rows(indices, gm, W_enc.t(), None, torch.float32)  # sum_j g[r, j] * W_enc[:, idx[r, j]]
        d_w = torch.empty(W_enc.shape, dtype=torch.float32, device=W_enc.device)
        d_benc = torch.empty((n,), dtype=torch.float32, device=W_enc.device)
        segment_scatter(indices, gm, xc, d_w.t(), d_benc)
    else:
        dpre = torch.zeros((x.shape[0], n), dtype=acc, device=x.device).scatter_(1, indices, gm)
        dxc = dpre @ W_enc.to(acc).t()
        d_w = xc.t() @ dpre
        d_benc = dpre.sum(0)
    return dxc.to(x.dtype), d_w.to(W_enc.dtype), d_benc, -dxc.sum(0)


@_topk_encode_backward_op.register_fake
def _(
    grad: Tensor, x: Tensor, W_enc: Tensor, b_dec: Tensor | None, indices: Tensor, values: Tensor
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    acc = acc_dtype(x, W_enc, grad)
    return (
        x.new_empty(x.shape),
        W_enc.new_empty(W_enc.shape),
        x.new_empty((W_enc.shape[1],), dtype=acc),
        x.new_empty((x.shape[1],), dtype=acc),
    )


def _setup_context(
    ctx: torch.autograd.function.FunctionCtx, inputs: tuple[Any, ...], output: tuple[Tensor, Tensor]
) -> None:
    x, W_enc, b_enc, _k, _threshold, b_dec = inputs
    indices, values = output
    ctx.save_for_backward(x, W_enc, indices, values, b_dec)
    ctx.dtypes = (b_enc.dtype, None if b_dec is None else b_dec.dtype)  # type: ignore[attr-defined]
    ctx.mark_non_differentiable(indices)


def _backward(
    ctx: torch.autograd.function.FunctionCtx, grad_indices: Tensor | None, grad_values: Tensor
) -> tuple[Tensor | None, ...]:
    x, W_enc, indices, values, b_dec = ctx.saved_tensors  # type: ignore[attr-defined]
    benc_dtype, bdec_dtype = ctx.dtypes  # type: ignore[attr-defined]
    dx, d_w, d_benc, d_bdec = torch.ops.sparsecore.topk_encode_backward(
        grad_values.contiguous(), x, W_enc, b_dec, indices, values
    )
    return dx, d_w, d_benc.to(benc_dtype), None, None, None if bdec_dtype is None else d_bdec.to(bdec_dtype)


_topk_encode_op.register_autograd(_backward, setup_context=_setup_context)


def topk_encode(
    x: object,
    W_enc: object,
    b_enc: object,
    k: object,
    *,
    activation: object = "relu",
    threshold: object = None,
    b_dec: object = None,
) -> tuple[Tensor, Tensor]:
    """Checked entry point of :func:`sparsecore.gpu.topk_encode` (see its docstring)."""
    xt = check_float_tensor(x, "x", min_ndim=1)
    w = check_float_tensor(W_enc, "W_enc", ndim=2)
    d, n = w.shape
    if xt.shape[-1] != d:
        raise ShapeMismatchError(f"x: last dimension must be d = W_enc.shape[0] = {d}, got {xt.shape[-1]}")
    benc = check_float_tensor(b_enc, "b_enc", ndim=1)
    if benc.shape[0] != n:
        raise ShapeMismatchError(f"b_enc: must have length d_sae = W_enc.shape[1] = {n}, got {benc.shape[0]}")
    kk = nonnegative_int(k, "k", high=n)
    act = check_choice(activation, "activation", ("relu", "jumprelu"))
    thr = None
    if act == "jumprelu":
        if threshold is None:
            raise InvalidArgumentError("threshold: must be a tensor of length d_sae for activation='jumprelu'")
        thr = check_float_tensor(threshold, "threshold", ndim=1)
        if thr.shape[0] != n:
            raise ShapeMismatchError(f"threshold: must have length d_sae = {n}, got {thr.shape[0]}")
    elif threshold is not None:
        raise InvalidArgumentError("threshold: must be None for activation='relu'")
    bdec = None
    if b_dec is not None:
        bdec = check_float_tensor(b_dec, "b_dec", ndim=1)
        if bdec.shape[0] != d:
            raise ShapeMismatchError(f"b_dec: must have length d = {d}, got {bdec.shape[0]}")
    lead = xt.shape[:-1]
    indices, values = _topk_encode_op(xt.reshape(math.prod(lead), d), w, benc, kk, thr, bdec)
    return indices.reshape(*lead, kk), values.reshape(*lead, kk)
