"""Triton kernel and launcher of the masked gather-GEMV ``y = W (x * m)`` that reads only the active columns.

The host turns the mask into the list of active input columns (the union over the batch rows, one
``nonzero``), so the kernel's loop runs over ``n_active`` columns, not ``d_in``: one program per (block of
``BLOCK_O`` outputs, batch row) loads ``BLOCK_A`` active column ids at a time, the masked inputs at those ids
and the matching ``(BLOCK_O, BLOCK_A)`` tile of ``W``, accumulating in float32 after ``tl.load``.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

__all__ = ["sparse_gemv_triton"]

# Outputs per program and active columns per step (a 64 x 64 fp32 tile stays in registers).
_BLOCK_O = 64
_BLOCK_A = 64


@triton.jit
def _sparse_gemv_kernel(
    x_ptr,
    w_ptr,
    act_ptr,
    y_ptr,
    D_OUT,
    D_IN,
    N_ACTIVE,
    stride_wo,
    stride_wi,
    BLOCK_O: tl.constexpr,
    BLOCK_A: tl.constexpr,
):
    outs = (tl.program_id(0) * BLOCK_O + tl.arange(0, BLOCK_O)).to(tl.int64)
    omask = outs < D_OUT
    row = tl.program_id(1).to(tl.int64)
    acc = tl.zeros((BLOCK_O,), dtype=tl.float32)
    for a0 in range(0, N_ACTIVE, BLOCK_A):
        aa = a0 + tl.arange(0, BLOCK_A)
        amask = aa < N_ACTIVE
        cols = tl.load(act_ptr + aa, mask=amask, other=0)
        xv = tl.load(x_ptr + row * D_IN + cols, mask=amask, other=0.0).to(tl.float32)
        w = tl.load(
            w_ptr + outs[:, None] * stride_wo + cols[None, :] * stride_wi,
            mask=omask[:, None] & amask[None, :],
            other=0.0,
        ).to(tl.float32)
        acc += tl.sum(w * xv[None, :], axis=1)
    tl.store(y_ptr + row * D_OUT + outs, acc.to(y_ptr.dtype.element_ty), mask=omask)


def sparse_gemv_triton(x: Tensor, W: Tensor, mask: Tensor) -> Tensor:
    """``y[b] = W @ (x[b] * mask[b])`` for contiguous 2-D ``x`` ``(B, d_in)`` and ``W`` ``(d_out, d_in)``."""
    rows, d_in = x.shape
    d_out = W.shape[0]
    y = torch.empty((rows, d_out), dtype=x.dtype, device=x.device)
    if rows == 0 or d_out == 0:
        return y
    xm = torch.where(mask, x, torch.zeros((), dtype=x.dtype, device=x.device)).contiguous()
    active = torch.nonzero(mask.any(0)).reshape(-1).contiguous()
    grid = (triton.cdiv(d_out, _BLOCK_O), rows)
    _sparse_gemv_kernel[grid](
        xm, W, active, y, d_out, d_in, active.numel(), W.stride(0), W.stride(1), BLOCK_O=_BLOCK_O, BLOCK_A=_BLOCK_A
    )
    return y
