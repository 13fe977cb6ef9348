"""Triton kernel and launcher of LUT-driven block-sparse attention (forward).

The host turns the per-head block mask ``(B, H, n_q_blocks, n_k_blocks)`` into a look-up table: for every query
block, the ids of its key blocks in increasing order and their count. One program per (batch x head, query
block) loads its ``(BLOCK, d_head)`` query tile once (and reads the keys and values of kv head ``h // groups``:
grouped-query attention without repeating the kv heads) and runs an online softmax (running max, running sum,
float32 accumulator; inputs upcast right after ``tl.load``) over the listed key blocks only, so the cost is
proportional to the number of kept blocks. With ``causal`` the diagonal block is masked per element. Query rows
that see no key get a zero output.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

__all__ = ["block_lut", "block_sparse_attention_triton"]


@triton.jit
def _block_sparse_attention_kernel(
    q_ptr,
    k_ptr,
    v_ptr,
    lut_ptr,
    count_ptr,
    out_ptr,
    T,
    DH,
    N_QB,
    N_KB,
    scale,
    GROUPS,
    CAUSAL: tl.constexpr,
    BLOCK: tl.constexpr,
    BLOCK_DH: tl.constexpr,
):
    bh = tl.program_id(0).to(tl.int64)
    qb = tl.program_id(1)
    rows = qb * BLOCK + tl.arange(0, BLOCK)
    rmask = rows < T
    dd = tl.arange(0, BLOCK_DH)
    dmask = dd < DH
    base = bh * T * DH
    kv_base = (bh // GROUPS) * T * DH  # grouped-query attention: query head h reads kv head h // GROUPS
    q = tl.load(q_ptr + base + rows[:, None] * DH + dd[None, :], mask=rmask[:, None] & dmask[None, :], other=0.0)
    q = q.to(tl.float32)
    m_i = tl.full((BLOCK,), float("-inf"), tl.float32)
    l_i = tl.zeros((BLOCK,), tl.float32)
    acc = tl.zeros((BLOCK, BLOCK_DH), tl.float32)
    lut_row = (bh * N_QB + qb) * N_KB
    n = tl.load(count_ptr + bh * N_QB + qb)
    for i in range(0, n):
        kb = tl.load(lut_ptr + lut_row + i)
        cols = kb * BLOCK + tl.arange(0, BLOCK)
        cmask = cols < T
        kv_off = kv_base + cols[:, None] * DH + dd[None, :]
        kv_mask = cmask[:, None] & dmask[None, :]
        k = tl.load(k_ptr + kv_off, mask=kv_mask, other=0.0).to(tl.float32)
        v = tl.load(v_ptr + kv_off, mask=kv_mask, other=0.0).to(tl.float32)
        s = tl.dot(q, tl.trans(k), input_precision="ieee") * scale
        keep = cmask[None, :] & rmask[:, None]
        if CAUSAL:
            keep = keep & (cols[None, :] <= rows[:, None])
        s = tl.where(keep, s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, axis=1))
        # Rows that have seen no key yet keep m = -inf; shift by 0 there to avoid inf - inf.
        shift = tl.where(m_new == float("-inf"), 0.0, m_new)
        p = tl.exp(s - shift[:, None])
        alpha = tl.exp(m_i - shift)
        l_i = l_i * alpha + tl.sum(p, axis=1)
        acc = acc * alpha[:, None] + tl.dot(p, v, input_precision="ieee")
        m_i = m_new
    out = acc / tl.where(l_i > 0, l_i, 1.0)[:, None]
    tl.store(
        out_ptr + base + rows[:, None] * DH + dd[None, :],
        out.to(out_ptr.dtype.element_ty),
        mask=rmask[:, None] & dmask[None, :],
    )


def block_lut(block_mask: Tensor) -> tuple[Tensor, Tensor]:
    """Per query block, the kept key-block ids in increasing order (padded) and their count, both int32."""
    bh, n_qb, n_kb = block_mask.shape
    keys = torch.arange(n_kb, device=block_mask.device, dtype=torch.int32).expand(bh, n_qb, n_kb)
    # Kept blocks first, in increasing id order: sort by (not kept, id).
    order = torch.argsort((~block_mask).to(torch.int32) * n_kb + keys, dim=-1, stable=True)
    return order.to(torch.int32).contiguous(), block_mask.sum(-1).to(torch.int32).contiguous()


def block_sparse_attention_triton(
    q: Tensor, k: Tensor, v: Tensor, block_mask: Tensor, block_size: int, causal: bool, scale: float, groups: int = 1
) -> Tensor:
    """Launch the kernel on contiguous inputs.

    ``q`` is ``(BH, T, d_head)``, ``k`` and ``v`` ``(BH / groups, T, d_head)``, ``block_mask`` a ``(BH, n_q_blocks,
    n_k_blocks)`` bool tensor.
    """
    bh, t, dh = q.shape
    out = torch.empty_like(q)
    if bh == 0 or t == 0:
        return out
    lut, count = block_lut(block_mask)
    n_qb, n_kb = block_mask.shape[1], block_mask.shape[2]
    _block_sparse_attention_kernel[(bh, n_qb)](
        q,
        k,
        v,
        lut,
        count,
        out,
        t,
        dh,
        n_qb,
        n_kb,
        scale,
        groups,
        CAUSAL=causal,
        BLOCK=block_size,
        BLOCK_DH=max(16, triton.next_power_of_2(dh)),
    )
    return out
