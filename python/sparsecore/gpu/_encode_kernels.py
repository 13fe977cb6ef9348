"""Triton kernel and launcher of the fused SAE encoder: ``(x - b_dec) @ W_enc + b_enc``, activation, per-row top-k.

One program owns ``BLOCK_B`` rows and walks over the latents in tiles of ``BLOCK_N``. For each tile it computes
the pre-activations in registers with ``tl.dot`` over ``BLOCK_D`` chunks of ``d``: float32 inputs in ``ieee``
precision; float16/bfloat16 inputs of one dtype natively (tensor cores, float32 accumulator; their products are
exact in float32), with ``b_dec`` folded into the bias on the host (``b_enc - b_dec @ W_enc``) so that ``x`` is
not rounded after centring. It applies ReLU or JumpReLU and merges the tile into a running top-k kept in
registers (``(BLOCK_B, K_PAD)`` values and latent ids): rounds that take each row's largest remaining tile entry
(lowest latent id among ties) and let it replace the row's smallest kept entry when strictly larger, until no row
has such an entry (at most ``k`` rounds; few once the kept entries are large).
Because tiles arrive in increasing latent order and replacement needs a strict ``>``, ties keep the lower latent
id, the same rule as the reference (a stable descending sort). After the last tile the kept entries are written
sorted by value (descending; ties by latent id). The ``B x d_sae`` pre-activations never reach global memory:
extra memory is the ``(B, k)`` output only.
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl
from torch import Tensor

__all__ = ["topk_encode_triton"]

# Rows per program: 16 is tl.dot's minimum tile edge.
_BLOCK_B = 16
# Latents per tile and the reduction chunk; small enough that tile + running top-k stay in registers.
_BLOCK_N = 64
_BLOCK_D = 32


@triton.jit
def _topk_encode_kernel(
    x_ptr,
    w_ptr,
    benc_ptr,
    bdec_ptr,
    thr_ptr,
    idx_ptr,
    val_ptr,
    B,
    D,
    N,
    stride_wd,
    stride_wn,
    K: tl.constexpr,
    K_PAD: tl.constexpr,
    HAS_BDEC: tl.constexpr,
    JUMP: tl.constexpr,
    NATIVE_DOT: tl.constexpr,
    BLOCK_B: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    big = 2147483647
    rows = (tl.program_id(0) * BLOCK_B + tl.arange(0, BLOCK_B)).to(tl.int64)
    rmask = rows < B
    slot = tl.arange(0, K_PAD)
    slot_ok = slot < K
    # Padding slots hold +inf so that they are never the smallest kept entry.
    best_v = tl.where(slot_ok[None, :], float("-inf"), float("inf")) + tl.zeros((BLOCK_B, K_PAD), tl.float32)
    best_i = tl.full((BLOCK_B, K_PAD), big, tl.int32)
    for n0 in range(0, N, BLOCK_N):
        cols = n0 + tl.arange(0, BLOCK_N)
        cmask = cols < N
        acc = tl.zeros((BLOCK_B, BLOCK_N), dtype=tl.float32)
        for d0 in range(0, D, BLOCK_D):
            dd = d0 + tl.arange(0, BLOCK_D)
            dmask = dd < D
            x = tl.load(x_ptr + rows[:, None] * D + dd[None, :], mask=rmask[:, None] & dmask[None, :], other=0.0)
            w = tl.load(
                w_ptr + dd[:, None].to(tl.int64) * stride_wd + cols[None, :] * stride_wn,
                mask=dmask[:, None] & cmask[None, :],
                other=0.0,
            )
            if NATIVE_DOT:
                # fp16/bf16 products are exact in float32: the tensor cores with a float32 accumulator.
                acc += tl.dot(x, w)
            else:
                x = x.to(tl.float32)
                if HAS_BDEC:
                    x -= tl.load(bdec_ptr + dd, mask=dmask, other=0.0).to(tl.float32)[None, :]
                acc += tl.dot(x, w.to(tl.float32), input_precision="ieee")
        pre = acc + tl.load(benc_ptr + cols, mask=cmask, other=0.0).to(tl.float32)[None, :]
        if JUMP:
            thr = tl.load(thr_ptr + cols, mask=cmask, other=0.0).to(tl.float32)
            z = tl.where(pre > thr[None, :], pre, 0.0)
        else:
            z = tl.maximum(pre, 0.0)
        z = tl.where(rmask[:, None] & cmask[None, :], z, float("-inf"))
        ci = cols[None, :] + tl.zeros((BLOCK_B, BLOCK_N), tl.int32)
        m = tl.max(z, axis=1)
        bmin = tl.min(best_v, axis=1)
        # Insert while some row's best remaining tile entry beats its smallest kept entry (at most K rounds; once
        # the running top-k has filled up, most tiles need none).
        while tl.max((m > bmin).to(tl.int32), axis=0) > 0:
            sel = tl.min(tl.where(z == m[:, None], ci, big), axis=1)
            at_min = best_v == bmin[:, None]
            imax = tl.max(tl.where(at_min, best_i, -1), axis=1)
            eslot = tl.min(tl.where(at_min & (best_i == imax[:, None]), slot[None, :], K_PAD), axis=1)
            put = (slot[None, :] == eslot[:, None]) & (m > bmin)[:, None]
            best_v = tl.where(put, m[:, None], best_v)
            best_i = tl.where(put, sel[:, None], best_i)
            z = tl.where(ci == sel[:, None], float("-inf"), z)
            m = tl.max(z, axis=1)
            bmin = tl.min(best_v, axis=1)
    live = tl.where(slot_ok[None, :], best_v, float("-inf"))
    for t in range(0, K):
        m = tl.max(live, axis=1)
        sel = tl.min(tl.where((live == m[:, None]) & slot_ok[None, :], best_i, big), axis=1)
        tl.store(val_ptr + rows * K + t, m.to(val_ptr.dtype.element_ty), mask=rmask)
        tl.store(idx_ptr + rows * K + t, sel.to(tl.int64), mask=rmask)
        live = tl.where(best_i == sel[:, None], float("-inf"), live)


def topk_encode_triton(
    x: Tensor,
    W_enc: Tensor,
    b_enc: Tensor,
    k: int,
    threshold: Tensor | None,
    b_dec: Tensor | None,
) -> tuple[Tensor, Tensor]:
    """Launch the fused encoder on contiguous 2-D ``x`` ``(B, d)``; returns ``(indices int64, values)`` ``(B, k)``."""
    rows, d = x.shape
    n = W_enc.shape[1]
    # Half inputs of one dtype multiply natively (b_dec folded into the bias: b_enc - b_dec @ W_enc, in float32,
    # so x is never rounded after centring); the interpreter gets bf16 dots wrong, so it upcasts bf16 instead.
    native = x.dtype in (torch.float16, torch.bfloat16) and W_enc.dtype == x.dtype
    native = native and not (x.dtype == torch.bfloat16 and os.environ.get("TRITON_INTERPRET") == "1")
    if native and b_dec is not None:
        b_enc = (b_enc.float() - b_dec.float() @ W_enc.float()).contiguous()
        b_dec = None
    indices = torch.empty((rows, k), dtype=torch.int64, device=x.device)
    values = torch.empty((rows, k), dtype=x.dtype, device=x.device)
    if rows == 0 or k == 0:
        return indices, values
    grid = (triton.cdiv(rows, _BLOCK_B),)
    _topk_encode_kernel[grid](
        x,
        W_enc,
        b_enc,
        b_dec if b_dec is not None else b_enc,
        threshold if threshold is not None else b_enc,
        indices,
        values,
        rows,
        d,
        n,
        W_enc.stride(0),
        W_enc.stride(1),
        K=k,
        K_PAD=triton.next_power_of_2(k),
        HAS_BDEC=b_dec is not None,
        JUMP=threshold is not None,
        NATIVE_DOT=native,
        BLOCK_B=_BLOCK_B,
        BLOCK_N=_BLOCK_N,
        BLOCK_D=_BLOCK_D,
    )
    return indices, values
