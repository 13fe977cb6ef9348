"""Triton kernel and launcher of the SPLADE head's forward: vocabulary projection, max over tokens, argmax.

One program per (batch row, vocabulary tile of ``BLOCK_V`` terms) loops over the row's tokens ``BLOCK_L`` at a
time, computes the ``(BLOCK_L, BLOCK_V)`` logits tile (``hidden @ W^T``, float32 accumulator; float16/bfloat16
inputs of one dtype use the tensor cores, anything else is upcast right after ``tl.load``), adds the bias, drops
padded tokens and keeps a running maximum and the first token reaching it. Only ``(B, V)`` maxima and argmaxes
are written: the ``B x L x V`` logits never reach global memory. ``log1p(relu(.))`` is monotone, so it is applied
once to the maximum.

Imports triton at module level; only the torch layer imports this module, on the first Triton call.
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl
from torch import Tensor

__all__ = ["splade_head_triton"]


@triton.jit
def _splade_head_kernel(
    h_ptr,
    w_ptr,
    b_ptr,
    m_ptr,
    out_ptr,
    arg_ptr,
    L,
    D,
    V,
    stride_wv,
    stride_wd,
    HAS_BIAS: tl.constexpr,
    NATIVE_DOT: tl.constexpr,
    BLOCK_L: tl.constexpr,
    BLOCK_V: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    vs = tl.program_id(1) * BLOCK_V + tl.arange(0, BLOCK_V)
    vmask = vs < V
    best = tl.full((BLOCK_V,), float("-inf"), tl.float32)
    arg = tl.full((BLOCK_V,), -1, tl.int32)
    bias = tl.zeros((BLOCK_V,), tl.float32)
    if HAS_BIAS:
        bias += tl.load(b_ptr + vs, mask=vmask, other=0.0).to(tl.float32)
    for l0 in range(0, L, BLOCK_L):
        ls = l0 + tl.arange(0, BLOCK_L)
        lmask = ls < L
        valid = (tl.load(m_ptr + row * L + ls, mask=lmask, other=0) != 0) & lmask
        acc = tl.zeros((BLOCK_L, BLOCK_V), tl.float32)
        for d0 in range(0, D, BLOCK_D):
            ds = d0 + tl.arange(0, BLOCK_D)
            dmask = ds < D
            h = tl.load(
                h_ptr + row * L * D + ls[:, None] * D + ds[None, :], mask=lmask[:, None] & dmask[None, :], other=0.0
            )
            w = tl.load(
                w_ptr + vs[None, :] * stride_wv + ds[:, None] * stride_wd,
                mask=dmask[:, None] & vmask[None, :],
                other=0.0,
            )
            if NATIVE_DOT:
                acc = tl.dot(h, w, acc)
            else:
                acc += tl.dot(h.to(tl.float32), w.to(tl.float32), input_precision="ieee")
        logits = tl.where(valid[:, None], acc + bias[None, :], float("-inf"))
        tile_max = tl.max(logits, axis=0)
        # The first token of the tile that reaches the maximum (L where none is valid).
        cand = tl.where((logits == tile_max[None, :]) & valid[:, None], ls[:, None], L)
        tile_arg = tl.min(cand, axis=0)
        better = tile_max > best  # strict: an earlier tile keeps a tie
        best = tl.where(better, tile_max, best)
        arg = tl.where(better, tile_arg, arg)
    out = tl.log(1.0 + tl.maximum(best, 0.0))
    tl.store(out_ptr + row * V + vs, out, mask=vmask)
    tl.store(arg_ptr + row * V + vs, arg, mask=vmask)


def splade_head_triton(hidden: Tensor, W: Tensor, bias: Tensor | None, mask: Tensor) -> tuple[Tensor, Tensor]:
    """Launch on contiguous ``hidden`` ``(B, L, d)``, ``W`` ``(V, d)`` (any strides), ``mask`` ``(B, L)`` int8.

    Returns the float32 ``(B, V)`` weights ``log1p(relu(max logit))`` and the int32 argmax tokens (-1 where a row
    has no valid token).
    """
    b, length, d = hidden.shape
    v = W.shape[0]
    out = torch.empty((b, v), dtype=torch.float32, device=hidden.device)
    arg = torch.empty((b, v), dtype=torch.int32, device=hidden.device)
    if b == 0 or v == 0:
        return out, arg
    native = hidden.dtype == W.dtype and hidden.dtype in (torch.float16, torch.bfloat16)
    # The interpreter gets bf16 dots wrong (DESIGN.md 3.7): upcast there.
    interpret = os.environ.get("TRITON_INTERPRET") == "1"
    native = native and not (interpret and hidden.dtype == torch.bfloat16)
    block_l, block_v, block_d = (16, 32, 16) if interpret else (32, 128, 64)
    _splade_head_kernel[(b, triton.cdiv(v, block_v))](
        hidden,
        W,
        bias if bias is not None else W,
        mask,
        out,
        arg,
        length,
        d,
        v,
        W.stride(0),
        W.stride(1),
        HAS_BIAS=bias is not None,
        NATIVE_DOT=native,
        BLOCK_L=block_l,
        BLOCK_V=block_v,
        BLOCK_D=block_d,
    )
    return out, arg
