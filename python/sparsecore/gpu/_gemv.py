"""``sparsecore::sparse_gemv``: activation-sparse GEMV (CATS / R-Sparse style) as a torch custom op."""

from __future__ import annotations

import torch
from torch import Tensor

from sparsecore._validate import nonnegative_float
from sparsecore.exceptions import DTypeError, InvalidArgumentError, ShapeMismatchError
from sparsecore.gpu._common import acc_dtype, check_float_tensor, check_tensor, use_triton

__all__ = ["sparse_gemv", "sparse_gemv_reference"]


def sparse_gemv_reference(x: Tensor, W: Tensor, mask: Tensor) -> Tensor:
    """The torch reference on 2-D ``x``: a dense matmul on the masked input, in float32 (or 64)."""
    acc = acc_dtype(x, W)
    xm = torch.where(mask, x.to(acc), torch.zeros((), dtype=acc, device=x.device))
    return (xm @ W.to(acc).t()).to(x.dtype)


@torch.library.custom_op("sparsecore::sparse_gemv", mutates_args=())
def _sparse_gemv_op(x: Tensor, W: Tensor, mask: Tensor) -> Tensor:
    if use_triton(x, W):
        from sparsecore.gpu._gemv_kernels import sparse_gemv_triton

        return sparse_gemv_triton(x, W, mask)
    return sparse_gemv_reference(x, W, mask)


@_sparse_gemv_op.register_fake
def _(x: Tensor, W: Tensor, mask: Tensor) -> Tensor:
    return x.new_empty((x.shape[0], W.shape[0]))


def _setup_context(ctx: torch.autograd.function.FunctionCtx, inputs: tuple[Tensor, ...], output: Tensor) -> None:
    x, W, mask = inputs
    ctx.save_for_backward(x, W, mask)


def _backward(ctx: torch.autograd.function.FunctionCtx, grad: Tensor) -> tuple[Tensor | None, ...]:
    # The mask is a constant: d x = m * (W^T g), d W = g (x * m)^T (dense; training is not the target).
    x, W, mask = ctx.saved_tensors  # type: ignore[attr-defined]
    acc = acc_dtype(x, W, grad)
    zero = torch.zeros((), dtype=acc, device=x.device)
    g = grad.to(acc)
    dx = torch.where(mask, g @ W.to(acc), zero).to(x.dtype)
    dw = (g.t() @ torch.where(mask, x.to(acc), zero)).to(W.dtype)
    return dx, dw, None


_sparse_gemv_op.register_autograd(_backward, setup_context=_setup_context)


def sparse_gemv(
    x: object, W: object, *, threshold: object = None, active: object = None, lowrank: object = None
) -> Tensor:
    """Checked entry point of :func:`sparsecore.gpu.sparse_gemv` (see its docstring)."""
    xt = check_float_tensor(x, "x")
    if xt.ndim not in (1, 2):
        raise ShapeMismatchError(f"x: must have 1 or 2 dimensions, got shape {tuple(xt.shape)}")
    w = check_float_tensor(W, "W", ndim=2)
    d_out, d_in = w.shape
    if xt.shape[-1] != d_in:
        raise ShapeMismatchError(f"x: last dimension must be d_in = W.shape[1] = {d_in}, got {xt.shape[-1]}")
    rows = xt.shape[0] if xt.ndim == 2 else 1
    x2 = xt.reshape(rows, d_in)
    if (threshold is None) == (active is None):
        raise InvalidArgumentError("threshold, active: give exactly one of them")
    if active is not None:
        mask = check_tensor(active, "active")
        if mask.dtype != torch.bool:
            raise DTypeError(f"active: must be a bool tensor, got {mask.dtype}")
        if mask.shape != xt.shape:
            raise ShapeMismatchError(f"active: must have the shape of x {tuple(xt.shape)}, got {tuple(mask.shape)}")
        mask = mask.reshape(rows, d_in)
    else:
        mask = x2.abs() > nonnegative_float(threshold, "threshold")
    y: Tensor = _sparse_gemv_op(x2, w, mask)
    if lowrank is not None:
        y = y + _lowrank_residual(x2, mask, lowrank, d_out, d_in)
    return y.reshape(*xt.shape[:-1], d_out)


def _lowrank_residual(x2: Tensor, mask: Tensor, lowrank: object, d_out: int, d_in: int) -> Tensor:
    """``U diag(S) V^T (x * (1 - m))`` (R-Sparse's low-rank path for the inactive inputs), in x's dtype."""
    if not isinstance(lowrank, (tuple, list)) or len(lowrank) != 3:
        raise InvalidArgumentError(f"lowrank: must be a tuple (U, S, V), got {type(lowrank).__name__}")
    u = check_float_tensor(lowrank[0], "lowrank U", ndim=2)
    s = check_float_tensor(lowrank[1], "lowrank S", ndim=1)
    v = check_float_tensor(lowrank[2], "lowrank V", ndim=2)
    r = s.shape[0]
    if u.shape != (d_out, r) or v.shape != (d_in, r):
        raise ShapeMismatchError(
            f"lowrank: U must be ({d_out}, {r}) and V ({d_in}, {r}) for S of length {r}, "
            f"got U {tuple(u.shape)} and V {tuple(v.shape)}"
        )
    acc = acc_dtype(x2, u, s, v)
    rest = torch.where(mask, torch.zeros((), dtype=acc, device=x2.device), x2.to(acc))
    return (((rest @ v.to(acc)) * s.to(acc)) @ u.to(acc).t()).to(x2.dtype)
