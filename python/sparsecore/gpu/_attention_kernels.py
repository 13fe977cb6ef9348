"""Triton kernels and launchers of LUT-driven block-sparse attention (forward and backward).

The host turns the per-head block mask ``(B, H, n_q_blocks, n_k_blocks)`` into a look-up table: for every query
block, the ids of its key blocks in increasing order and their count. One program per (batch x head, query
block) loads its ``(BLOCK, d_head)`` query tile once (and reads the keys and values of kv head ``h // groups``:
grouped-query attention without repeating the kv heads) and runs an online softmax (running max, running sum,
float32 accumulator; inputs upcast right after ``tl.load``) over the listed key blocks only, so the cost is
proportional to the number of kept blocks. With ``causal`` the diagonal block is masked per element. Query rows
that see no key get a zero output. The forward also stores each row's log-sum-exp of the scaled scores (``+inf``
for a row that sees no key), so the backward recomputes the probabilities block by block instead of keeping them.

Backward (FlashAttention-2's scheme on the same look-up tables): ``delta = rowsum(dO * O)`` on the host; one
program per (query head, query block) walks its key blocks and accumulates ``dQ``; one program per (query head, key
block) walks the query blocks that list it (the LUT of the transposed mask) and accumulates ``dK`` and ``dV``. Per
query head the key and value gradients are written in float32 and summed over the heads of a kv group on the host
(no atomics, deterministic). Work and memory stay proportional to the kept blocks: no ``(T, T)`` matrix is formed.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

__all__ = ["block_lut", "block_sparse_attention_backward_triton", "block_sparse_attention_triton"]


@triton.jit
def _kv_block(k_ptr, v_ptr, kv_base, kb, T, DH, dd, dmask, kpm_ptr, bh, HAS_KPM: tl.constexpr, BLOCK: tl.constexpr):
    """Key block ``kb`` of one kv head: positions, in-range mask, real-token mask, keys and values in float32.

    A key is real when it is in range and, with a key padding mask (``HAS_KPM``), not padding in row ``bh`` of it.
    """
    cols = kb * BLOCK + tl.arange(0, BLOCK)
    cmask = cols < T
    kv_off = kv_base + cols[:, None] * DH + dd[None, :]
    kv_mask = cmask[:, None] & dmask[None, :]
    k = tl.load(k_ptr + kv_off, mask=kv_mask, other=0.0).to(tl.float32)
    v = tl.load(v_ptr + kv_off, mask=kv_mask, other=0.0).to(tl.float32)
    valid = cmask
    if HAS_KPM:
        valid = valid & (tl.load(kpm_ptr + bh * T + cols, mask=cmask, other=0) != 0)
    return cols, cmask, valid, k, v


@triton.jit
def _query_rows(qb, T, DH, base, dd, dmask, BLOCK: tl.constexpr):
    """Query block ``qb`` of one head: positions, in-range mask, element offsets and element mask of its tile."""
    rows = qb * BLOCK + tl.arange(0, BLOCK)
    rmask = rows < T
    return rows, rmask, base + rows[:, None] * DH + dd[None, :], rmask[:, None] & dmask[None, :]


@triton.jit
def _query_grad_tile(q_ptr, do_ptr, lse_ptr, delta_ptr, bh, qb, T, DH, base, dd, dmask, BLOCK: tl.constexpr):
    """What the backward needs of query block ``qb``: its rows, ``q`` and ``dO`` in float32, ``lse`` and ``delta``."""
    rows, rmask, row_off, row_mask = _query_rows(qb, T, DH, base, dd, dmask, BLOCK)
    q = tl.load(q_ptr + row_off, mask=row_mask, other=0.0).to(tl.float32)
    do = tl.load(do_ptr + row_off, mask=row_mask, other=0.0).to(tl.float32)
    lse = tl.load(lse_ptr + bh * T + rows, mask=rmask, other=float("inf"))
    delta = tl.load(delta_ptr + bh * T + rows, mask=rmask, other=0.0)
    return rows, rmask, row_off, row_mask, q, do, lse, delta


@triton.jit
def _tile_keep(rows, cols, rmask, valid, CAUSAL: tl.constexpr):
    """Which (query, key) pairs of a tile count: a real key, a query in range, and (``CAUSAL``) not in the future."""
    keep = valid[None, :] & rmask[:, None]
    if CAUSAL:
        keep = keep & (cols[None, :] <= rows[:, None])
    return keep


@triton.jit
def _block_sparse_attention_kernel(
    q_ptr,
    k_ptr,
    v_ptr,
    lut_ptr,
    count_ptr,
    out_ptr,
    lse_ptr,
    kpm_ptr,
    T,
    DH,
    N_QB,
    N_KB,
    scale,
    GROUPS,
    CAUSAL: tl.constexpr,
    HAS_KPM: tl.constexpr,
    BLOCK: tl.constexpr,
    BLOCK_DH: tl.constexpr,
):
    bh = tl.program_id(0).to(tl.int64)
    qb = tl.program_id(1)
    dd = tl.arange(0, BLOCK_DH)
    dmask = dd < DH
    base = bh * T * DH
    kv_base = (bh // GROUPS) * T * DH  # grouped-query attention: query head h reads kv head h // GROUPS
    rows, rmask, row_off, row_mask = _query_rows(qb, T, DH, base, dd, dmask, BLOCK)
    q = tl.load(q_ptr + row_off, mask=row_mask, other=0.0).to(tl.float32)
    m_i = tl.full((BLOCK,), float("-inf"), tl.float32)
    l_i = tl.zeros((BLOCK,), tl.float32)
    acc = tl.zeros((BLOCK, BLOCK_DH), tl.float32)
    lut_row = (bh * N_QB + qb) * N_KB
    n = tl.load(count_ptr + bh * N_QB + qb)
    for i in range(0, n):
        kb = tl.load(lut_ptr + lut_row + i)
        cols, _cmask, valid, k, v = _kv_block(k_ptr, v_ptr, kv_base, kb, T, DH, dd, dmask, kpm_ptr, bh, HAS_KPM, BLOCK)
        s = tl.dot(q, tl.trans(k), input_precision="ieee") * scale
        s = tl.where(_tile_keep(rows, cols, rmask, valid, CAUSAL), s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, axis=1))
        # Rows that have seen no key yet keep m = -inf; shift by 0 there to avoid inf - inf.
        shift = tl.where(m_new == float("-inf"), 0.0, m_new)
        p = tl.exp(s - shift[:, None])
        alpha = tl.exp(m_i - shift)
        l_i = l_i * alpha + tl.sum(p, axis=1)
        acc = acc * alpha[:, None] + tl.dot(p, v, input_precision="ieee")
        m_i = m_new
    out = acc / tl.where(l_i > 0, l_i, 1.0)[:, None]
    tl.store(out_ptr + row_off, out.to(out_ptr.dtype.element_ty), mask=row_mask)
    lse = tl.where(l_i > 0, m_i + tl.log(tl.where(l_i > 0, l_i, 1.0)), float("inf"))
    tl.store(lse_ptr + bh * T + rows, lse, mask=rmask)


@triton.jit
def _probs_and_dscores(q, k, v, do, lse, delta, rows, cols, rmask, valid, scale, CAUSAL: tl.constexpr):
    """One (query block, key block) tile: the probabilities ``p`` and ``dS = p * (dO V^T - delta)`` (unscaled)."""
    s = tl.dot(q, tl.trans(k), input_precision="ieee") * scale
    keep = _tile_keep(rows, cols, rmask, valid, CAUSAL)
    p = tl.where(keep, tl.exp(tl.where(keep, s, 0.0) - lse[:, None]), 0.0)
    dp = tl.dot(do, tl.trans(v), input_precision="ieee")
    return p, p * (dp - delta[:, None])


@triton.jit
def _attention_dq_kernel(
    q_ptr,
    k_ptr,
    v_ptr,
    do_ptr,
    lse_ptr,
    delta_ptr,
    lut_ptr,
    count_ptr,
    dq_ptr,
    kpm_ptr,
    T,
    DH,
    N_QB,
    N_KB,
    scale,
    GROUPS,
    CAUSAL: tl.constexpr,
    HAS_KPM: tl.constexpr,
    BLOCK: tl.constexpr,
    BLOCK_DH: tl.constexpr,
):
    bh = tl.program_id(0).to(tl.int64)
    qb = tl.program_id(1)
    dd = tl.arange(0, BLOCK_DH)
    dmask = dd < DH
    base = bh * T * DH
    kv_base = (bh // GROUPS) * T * DH
    rows, rmask, row_off, row_mask, q, do, lse, delta = _query_grad_tile(
        q_ptr, do_ptr, lse_ptr, delta_ptr, bh, qb, T, DH, base, dd, dmask, BLOCK
    )
    dq = tl.zeros((BLOCK, BLOCK_DH), tl.float32)
    lut_row = (bh * N_QB + qb) * N_KB
    n = tl.load(count_ptr + bh * N_QB + qb)
    for i in range(0, n):
        kb = tl.load(lut_ptr + lut_row + i)
        cols, _cmask, valid, k, v = _kv_block(k_ptr, v_ptr, kv_base, kb, T, DH, dd, dmask, kpm_ptr, bh, HAS_KPM, BLOCK)
        _p, ds = _probs_and_dscores(q, k, v, do, lse, delta, rows, cols, rmask, valid, scale, CAUSAL)
        dq += tl.dot(ds, k, input_precision="ieee")
    tl.store(dq_ptr + row_off, (dq * scale).to(dq_ptr.dtype.element_ty), mask=row_mask)


@triton.jit
def _attention_dkv_kernel(
    q_ptr,
    k_ptr,
    v_ptr,
    do_ptr,
    lse_ptr,
    delta_ptr,
    lut_t_ptr,
    count_t_ptr,
    dk_ptr,
    dv_ptr,
    kpm_ptr,
    T,
    DH,
    N_QB,
    N_KB,
    scale,
    GROUPS,
    CAUSAL: tl.constexpr,
    HAS_KPM: tl.constexpr,
    BLOCK: tl.constexpr,
    BLOCK_DH: tl.constexpr,
):
    bh = tl.program_id(0).to(tl.int64)  # the query head: its dK / dV rows are summed over a kv group on the host
    kb = tl.program_id(1)
    dd = tl.arange(0, BLOCK_DH)
    dmask = dd < DH
    base = bh * T * DH
    kv_base = (bh // GROUPS) * T * DH
    cols, cmask, valid, k, v = _kv_block(k_ptr, v_ptr, kv_base, kb, T, DH, dd, dmask, kpm_ptr, bh, HAS_KPM, BLOCK)
    dk = tl.zeros((BLOCK, BLOCK_DH), tl.float32)
    dv = tl.zeros((BLOCK, BLOCK_DH), tl.float32)
    lut_row = (bh * N_KB + kb) * N_QB
    n = tl.load(count_t_ptr + bh * N_KB + kb)
    for i in range(0, n):
        qb = tl.load(lut_t_ptr + lut_row + i)
        rows, rmask, _off, _mask, q, do, lse, delta = _query_grad_tile(
            q_ptr, do_ptr, lse_ptr, delta_ptr, bh, qb, T, DH, base, dd, dmask, BLOCK
        )
        p, ds = _probs_and_dscores(q, k, v, do, lse, delta, rows, cols, rmask, valid, scale, CAUSAL)
        dv += tl.dot(tl.trans(p), do, input_precision="ieee")
        dk += tl.dot(tl.trans(ds), q, input_precision="ieee")
    out_off = base + cols[:, None] * DH + dd[None, :]
    out_mask = cmask[:, None] & dmask[None, :]
    tl.store(dk_ptr + out_off, dk * scale, mask=out_mask)
    tl.store(dv_ptr + out_off, dv, mask=out_mask)


def block_lut(block_mask: Tensor) -> tuple[Tensor, Tensor]:
    """Per query block, the kept key-block ids in increasing order (padded) and their count, both int32."""
    bh, n_qb, n_kb = block_mask.shape
    keys = torch.arange(n_kb, device=block_mask.device, dtype=torch.int32).expand(bh, n_qb, n_kb)
    # Kept blocks first, in increasing id order: sort by (not kept, id).
    order = torch.argsort((~block_mask).to(torch.int32) * n_kb + keys, dim=-1, stable=True)
    return order.to(torch.int32).contiguous(), block_mask.sum(-1).to(torch.int32).contiguous()


def block_sparse_attention_triton(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    block_mask: Tensor,
    block_size: int,
    causal: bool,
    scale: float,
    groups: int = 1,
    key_mask: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Launch the forward kernel on contiguous inputs; the output and the float32 row log-sum-exp ``(BH, T)``.

    ``q`` is ``(BH, T, d_head)``, ``k`` and ``v`` ``(BH / groups, T, d_head)``, ``block_mask`` a ``(BH, n_q_blocks,
    n_k_blocks)`` bool tensor, ``key_mask`` an optional ``(BH, T)`` bool tensor of the real (not padding) keys.
    """
    bh, t, dh = q.shape
    out = torch.empty_like(q)
    lse = torch.empty(bh, t, dtype=torch.float32, device=q.device)
    if bh == 0 or t == 0:
        return out, lse
    lut, count = block_lut(block_mask)
    n_qb, n_kb = block_mask.shape[1], block_mask.shape[2]
    _block_sparse_attention_kernel[(bh, n_qb)](
        q,
        k,
        v,
        lut,
        count,
        out,
        lse,
        _kpm(key_mask, lse),
        t,
        dh,
        n_qb,
        n_kb,
        scale,
        groups,
        CAUSAL=causal,
        HAS_KPM=key_mask is not None,
        BLOCK=block_size,
        BLOCK_DH=max(16, triton.next_power_of_2(dh)),
    )
    return out, lse


def _kpm(key_mask: Tensor | None, like: Tensor) -> Tensor:
    """The key mask as contiguous int8 for the kernels (a 1-element placeholder when there is none)."""
    if key_mask is None:
        return torch.zeros(1, dtype=torch.int8, device=like.device)
    return key_mask.to(torch.int8).contiguous()


def block_sparse_attention_backward_triton(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    out: Tensor,
    lse: Tensor,
    grad: Tensor,
    block_mask: Tensor,
    block_size: int,
    causal: bool,
    scale: float,
    groups: int = 1,
    key_mask: Tensor | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """``(dq, dk, dv)`` in the dtypes of ``q``, ``k``, ``v`` from the forward's ``out`` and ``lse`` and ``grad``."""
    bh, t, dh = q.shape
    dq = torch.empty_like(q)
    dk_h = torch.zeros(bh, t, dh, dtype=torch.float32, device=q.device)
    dv_h = torch.zeros(bh, t, dh, dtype=torch.float32, device=q.device)
    if bh and t:
        grad = grad.contiguous()
        delta = (grad.float() * out.float()).sum(-1).contiguous()
        lut, count = block_lut(block_mask)
        lut_t, count_t = block_lut(block_mask.transpose(-1, -2))
        n_qb, n_kb = block_mask.shape[1], block_mask.shape[2]
        meta = {"CAUSAL": causal, "HAS_KPM": key_mask is not None, "BLOCK": block_size}
        meta["BLOCK_DH"] = max(16, triton.next_power_of_2(dh))
        sizes = (t, dh, n_qb, n_kb, scale, groups)
        kpm = _kpm(key_mask, lse)
        _attention_dq_kernel[(bh, n_qb)](q, k, v, grad, lse, delta, lut, count, dq, kpm, *sizes, **meta)
        _attention_dkv_kernel[(bh, n_kb)](q, k, v, grad, lse, delta, lut_t, count_t, dk_h, dv_h, kpm, *sizes, **meta)
    else:
        dq.zero_()
    if groups > 1:  # a kv head's gradient sums over the query heads that read it
        dk_h = dk_h.reshape(-1, groups, t, dh).sum(1)
        dv_h = dv_h.reshape(-1, groups, t, dh).sum(1)
    return dq, dk_h.to(k.dtype), dv_h.to(v.dtype)
