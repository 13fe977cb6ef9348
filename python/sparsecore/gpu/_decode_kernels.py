"""Triton kernels and launchers of the sparse TopK decoder (forward and backward) and its gather/segment parts.

Three kernels, each reading any float dtype and accumulating in float32 right after ``tl.load``:

* ``_gather_rows_kernel``: ``out[r] = sum_j values[r, j] * W[indices[r, j]] (+ bias)``; one program per (row,
  column block). ``W`` is read through strides, so ``W_enc.T`` (the encoder's backward) needs no copy.
* ``_row_dots_kernel``: ``out[r, j] = <G[r], W[indices[r, j]]>`` (the gradient on the values).
* ``_segment_kernel``: ``out[n] = sum over the (r, j) with indices[r, j] == n of values[r, j] * G[r]`` (the
  gradient on the dictionary). The (r, j) pairs are sorted by latent on the host (stable sort) and every latent
  reduces its own segment in a fixed order: no atomics, bitwise deterministic, every output row written once.

Imports triton at module level; only the torch layer imports this module, on the first Triton call.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

__all__ = ["gather_rows", "row_dots", "segment_scatter", "sort_pairs"]

# Columns per program: 128 fp32 lanes keep a row block in registers and give enough programs at d=2304.
_BLOCK_D = 128


@triton.jit
def _gather_rows_kernel(
    idx_ptr,
    val_ptr,
    w_ptr,
    bias_ptr,
    out_ptr,
    K,
    D,
    stride_wr,
    stride_wc,
    HAS_BIAS: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    cols = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
    cmask = cols < D
    acc = tl.zeros((BLOCK_D,), dtype=tl.float32)
    for j in range(0, K):
        i = tl.load(idx_ptr + row * K + j).to(tl.int64)
        v = tl.load(val_ptr + row * K + j).to(tl.float32)
        w = tl.load(w_ptr + i * stride_wr + cols * stride_wc, mask=cmask, other=0.0).to(tl.float32)
        acc += v * w
    if HAS_BIAS:
        acc += tl.load(bias_ptr + cols, mask=cmask, other=0.0).to(tl.float32)
    tl.store(out_ptr + row * D + cols, acc.to(out_ptr.dtype.element_ty), mask=cmask)


@triton.jit
def _row_dots_kernel(idx_ptr, g_ptr, w_ptr, out_ptr, K, D, stride_wr, stride_wc, BLOCK_D: tl.constexpr):
    pair = tl.program_id(0).to(tl.int64)
    row = pair // K
    i = tl.load(idx_ptr + pair).to(tl.int64)
    acc = tl.zeros((BLOCK_D,), dtype=tl.float32)
    for c0 in range(0, D, BLOCK_D):
        cols = c0 + tl.arange(0, BLOCK_D)
        cmask = cols < D
        g = tl.load(g_ptr + row * D + cols, mask=cmask, other=0.0).to(tl.float32)
        w = tl.load(w_ptr + i * stride_wr + cols * stride_wc, mask=cmask, other=0.0).to(tl.float32)
        acc += g * w
    tl.store(out_ptr + pair, tl.sum(acc, axis=0))


@triton.jit
def _segment_kernel(
    order_ptr,
    starts_ptr,
    val_ptr,
    g_ptr,
    out_ptr,
    sum_ptr,
    K,
    D,
    stride_or,
    stride_oc,
    WITH_SUM: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    lat = tl.program_id(0).to(tl.int64)
    cols = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
    cmask = cols < D
    start = tl.load(starts_ptr + lat)
    end = tl.load(starts_ptr + lat + 1)
    acc = tl.zeros((BLOCK_D,), dtype=tl.float32)
    total = tl.zeros((1,), dtype=tl.float32)
    for p in range(start, end):
        pair = tl.load(order_ptr + p)
        row = pair // K
        v = tl.load(val_ptr + pair).to(tl.float32)
        g = tl.load(g_ptr + row * D + cols, mask=cmask, other=0.0).to(tl.float32)
        acc += v * g
        total += v
    tl.store(out_ptr + lat * stride_or + cols * stride_oc, acc, mask=cmask)
    if WITH_SUM and tl.program_id(1) == 0:
        tl.store(sum_ptr + lat + tl.arange(0, 1), total)


def gather_rows(indices: Tensor, values: Tensor, W: Tensor, bias: Tensor | None, out_dtype: torch.dtype) -> Tensor:
    """``out[r] = sum_j values[r, j] * W[indices[r, j]] (+ bias)`` for 2-D contiguous ``indices``/``values``."""
    rows, k = indices.shape
    d = W.shape[1]
    out = torch.empty((rows, d), dtype=out_dtype, device=values.device)
    if rows == 0 or d == 0:
        return out
    grid = (rows, triton.cdiv(d, _BLOCK_D))
    _gather_rows_kernel[grid](
        indices,
        values,
        W,
        bias if bias is not None else values,
        out,
        k,
        d,
        W.stride(0),
        W.stride(1),
        HAS_BIAS=bias is not None,
        BLOCK_D=_BLOCK_D,
    )
    return out


def row_dots(indices: Tensor, G: Tensor, W: Tensor) -> Tensor:
    """``out[r, j] = <G[r], W[indices[r, j]]>`` in float32, for contiguous 2-D ``indices`` and ``G``."""
    rows, k = indices.shape
    out = torch.zeros((rows, k), dtype=torch.float32, device=G.device)
    if rows * k == 0:
        return out
    _row_dots_kernel[(rows * k,)](indices, G, W, out, k, W.shape[1], W.stride(0), W.stride(1), BLOCK_D=_BLOCK_D)
    return out


def sort_pairs(indices: Tensor, n_latents: int) -> tuple[Tensor, Tensor]:
    """The flat (row, slot) positions sorted by latent (stable) and each latent's segment bounds (``n + 1``)."""
    flat = indices.reshape(-1).to(torch.int64)
    sorted_lat, order = torch.sort(flat, stable=True)
    bounds = torch.arange(n_latents + 1, device=flat.device, dtype=torch.int64)
    starts = torch.searchsorted(sorted_lat, bounds)
    return order.contiguous(), starts.contiguous()


def segment_scatter(
    indices: Tensor, values: Tensor, G: Tensor, out: Tensor, sums: Tensor | None = None
) -> tuple[Tensor, Tensor | None]:
    """Write ``out[n] = sum_{indices[r, j] == n} values[r, j] * G[r]`` (float32, every row of ``out`` written).

    ``out`` may be a strided view (e.g. the transpose of a contiguous buffer); with ``sums``, also writes
    ``sums[n] = sum_{indices[r, j] == n} values[r, j]``. The order of the sum is fixed by a stable sort, so the
    result is bitwise reproducible.
    """
    n, d = out.shape
    k = indices.shape[1] if indices.ndim == 2 else 1
    order, starts = sort_pairs(indices, n)
    if n == 0:
        return out, sums
    grid = (n, max(1, triton.cdiv(d, _BLOCK_D)))
    _segment_kernel[grid](
        order,
        starts,
        values,
        G,
        out,
        sums if sums is not None else out,
        k,
        d,
        out.stride(0),
        out.stride(1),
        WITH_SUM=sums is not None,
        BLOCK_D=_BLOCK_D,
    )
    return out, sums
