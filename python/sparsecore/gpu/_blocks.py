"""Block-table builders for :func:`sparsecore.gpu.block_sparse_attention`: MInference, SparseD and Routing styles.

Each builder returns a bool block mask ``(B, H, nb, nb)`` (``nb = ceil(T / block_size)``) on the device of its
inputs, in pure torch. The per-row selection is shared: every row of candidate scores gets its forced blocks
(priority ``+inf``), the blocks causality forbids get ``-inf``, and the ``count`` best blocks of the row are kept
(a stable sort: ties go to the lower block id).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from sparsecore._validate import (
    check_bool,
    check_float,
    check_seed,
    nonnegative_int,
    positive_float,
    positive_int,
)
from sparsecore.exceptions import InvalidArgumentError, ShapeMismatchError
from sparsecore.gpu._common import check_float_tensor, check_key_padding

__all__ = ["minference_blocks", "routing_blocks", "sparsed_blocks"]

#: Default fraction of the allowed blocks kept per query block.
DEFAULT_DENSITY = 0.1


def _check_qk(q: object, k: object) -> tuple[Tensor, Tensor]:
    qt = check_float_tensor(q, "q", ndim=4)
    kt = check_float_tensor(k, "k", ndim=4)
    if kt.shape != qt.shape:
        raise ShapeMismatchError(f"k: must have the shape of q {tuple(qt.shape)}, got {tuple(kt.shape)}")
    return qt, kt


def _allowed(nb: int, causal: bool, device: torch.device) -> Tensor:
    full = torch.ones(nb, nb, dtype=torch.bool, device=device)
    return full.tril() if causal else full


def _budget(density: object, top_k: object) -> tuple[float | None, int | None]:
    """``(density, top_k)`` with exactly one set; neither given means ``density = DEFAULT_DENSITY``."""
    if density is not None and top_k is not None:
        raise InvalidArgumentError(f"density, top_k: must give at most one of them, got {density!r} and {top_k!r}")
    if top_k is not None:
        return None, positive_int(top_k, "top_k")
    if density is None:
        return DEFAULT_DENSITY, None
    return check_float(density, "density", low=0.0, high=1.0, low_open=True), None


def _row_counts(allowed: Tensor, density: float | None, top_k: int | None) -> Tensor:
    """Blocks to keep per query block ``(nb,)``: ``ceil(density * allowed)`` or ``min(top_k, allowed)``, >= 1."""
    n_allowed = allowed.sum(-1)
    if top_k is not None:
        return n_allowed.clamp(max=top_k)
    assert density is not None
    return torch.ceil(n_allowed.double() * density).long().clamp(min=1)


def _select(scores: Tensor, allowed: Tensor, forced: Tensor, count: Tensor) -> Tensor:
    """Keep the forced blocks and the best allowed ones, ``max(count, n_forced)`` per row in all.

    ``scores`` ``(..., nb, nb)`` (float), ``allowed`` / ``forced`` broadcastable bool, ``count`` broadcastable to
    ``(..., nb)``. Disallowed blocks are never kept.
    """
    forced = forced & allowed
    prio = (scores if scores.dtype == torch.float64 else scores.float()).nan_to_num(nan=float("-inf"))
    prio = prio.masked_fill(~allowed, float("-inf")).masked_fill(forced, float("inf"))
    order = torch.argsort(-prio, dim=-1, stable=True)
    nb = scores.shape[-1]
    ranks = torch.empty_like(order).scatter_(-1, order, torch.arange(nb, device=order.device).expand_as(order))
    n = torch.maximum(count.expand(prio.shape[:-1]), forced.expand(prio.shape).sum(-1))
    return (ranks < n.unsqueeze(-1)) & allowed


def _acc(x: Tensor) -> torch.dtype:
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def _block_mean(x: Tensor, block_size: int, real: Tensor | None = None) -> Tensor:
    """Mean of ``x`` ``(B, H, T, D)`` over each block of ``block_size`` positions (the last one may be short).

    With ``real`` ``(B, T)`` bool, the mean is over a block's real (not padding) positions; 0 for a block of padding.
    """
    b, h, t, d = x.shape
    nb = -(-t // block_size)
    pad = nb * block_size - t
    acc = _acc(x)
    if real is None:
        xs = torch.nn.functional.pad(x.to(acc), (0, 0, 0, pad)).reshape(b, h, nb, block_size, d).sum(3)
        sizes = torch.full((nb,), float(block_size), dtype=acc, device=x.device)
        sizes[-1] = t - (nb - 1) * block_size
        return xs / sizes[:, None]
    w = real.to(acc)[:, None, :, None]
    xs = torch.nn.functional.pad(x.to(acc) * w, (0, 0, 0, pad)).reshape(b, h, nb, block_size, d).sum(3)
    counts = torch.nn.functional.pad(real.to(acc), (0, pad)).reshape(b, nb, block_size).sum(-1)
    return xs / counts.clamp(min=1)[:, None, :, None]


def _real_blocks(real: Tensor, block_size: int) -> Tensor:
    """``(B, nb)``: which blocks hold at least one real token of ``real`` ``(B, T)``."""
    b, t = real.shape
    nb = -(-t // block_size)
    return torch.nn.functional.pad(real, (0, nb * block_size - t)).reshape(b, nb, block_size).any(-1)


def minference_blocks(
    q: Tensor,
    k: Tensor,
    *,
    block_size: int = 64,
    density: float | None = None,
    top_k: int | None = None,
    sink_blocks: int = 1,
    local_blocks: int = 1,
    causal: bool = True,
    key_padding_mask: Tensor | None = None,
) -> Tensor:
    """Checked implementation of :func:`sparsecore.gpu.minference_blocks` (see its docstring)."""
    qt, kt = _check_qk(q, k)
    bs = positive_int(block_size, "block_size")
    dens, top = _budget(density, top_k)
    sinks = nonnegative_int(sink_blocks, "sink_blocks")
    local = positive_int(local_blocks, "local_blocks")
    is_causal = check_bool(causal, "causal")
    b, h, t, _ = qt.shape
    nb = -(-t // bs)
    if t == 0:
        return torch.zeros(b, h, 0, 0, dtype=torch.bool, device=qt.device)
    real = check_key_padding(key_padding_mask, b, t, qt.device)
    scores = _block_mean(qt, bs, real) @ _block_mean(kt, bs, real).transpose(-1, -2)
    allowed = _allowed(nb, is_causal, qt.device)
    ids = torch.arange(nb, device=qt.device)
    diff = ids[:, None] - ids[None, :]
    local_band = (diff >= 0) & (diff < local)
    if real is None:
        forced = (ids[None, :] < sinks) | local_band
    else:
        # Key blocks of padding only are never kept; the sinks are the first blocks holding a real token.
        has_real = _real_blocks(real, bs)  # (B, nb)
        allowed = allowed & has_real[:, None, None, :]
        first = torch.where(has_real.any(-1), has_real.int().argmax(-1), nb)  # (B,)
        sink = (ids[None, :] >= first[:, None]) & (ids[None, :] < first[:, None] + sinks)  # (B, nb)
        forced = sink[:, None, None, :] | local_band
    return _select(scores, allowed, forced, _row_counts(allowed, dens, top))


def _block_mass(
    q: Tensor, k: Tensor, bs: int, causal: bool, scale: float, budget_bytes: int, real: Tensor | None = None
) -> Tensor:
    """Mean attention mass per query row of every (query block, key block) pair, ``(B, H, nb, nb)`` float32.

    The probabilities are computed for chunks of whole query blocks, at most ``budget_bytes`` of float32 scores at
    a time (at least one block of rows). With ``real`` ``(B, T)``, padding keys get no mass and a query that sees
    no real key contributes none.
    """
    b, h, t, _ = q.shape
    nb = -(-t // bs)
    pad = nb * bs - t
    per_row = b * h * t * 4 * 3  # scores, probabilities and the padded copy
    rows = max(bs, (budget_bytes // max(per_row, 1)) // bs * bs)
    acc = _acc(q)
    kf = k.to(acc)
    out = torch.empty(b, h, nb, nb, dtype=acc, device=q.device)
    for s in range(0, t, rows):
        e = min(t, s + rows)
        sc = (q[:, :, s:e].to(acc) @ kf.transpose(-1, -2)) * scale
        if causal:
            pos = torch.arange(s, e, device=q.device)[:, None] >= torch.arange(t, device=q.device)[None, :]
            sc = sc.masked_fill(~pos, float("-inf"))
        if real is not None:
            sc = sc.masked_fill(~real[:, None, None, :], float("-inf"))
        p = torch.softmax(sc, dim=-1)
        del sc
        if real is not None:
            p = p.nan_to_num(nan=0.0)  # rows that see no real key
        p = torch.nn.functional.pad(p, (0, pad)).reshape(b, h, e - s, nb, bs).sum(-1)  # (B, H, rows, nb)
        qb0 = s // bs
        nqb = -(-(e - s) // bs)
        p = torch.nn.functional.pad(p, (0, 0, 0, nqb * bs - (e - s))).reshape(b, h, nqb, bs, nb).sum(3)
        out[:, :, qb0 : qb0 + nqb] = p
    sizes = torch.full((nb,), float(bs), dtype=acc, device=q.device)
    sizes[-1] = t - (nb - 1) * bs
    return out / sizes[:, None]


def sparsed_blocks(
    q: Tensor,
    k: Tensor,
    *,
    block_size: int = 64,
    density: float | None = None,
    top_k: int | None = None,
    mass: float | None = None,
    causal: bool = True,
    scale: float | None = None,
    memory_budget_mb: float = 256.0,
    key_padding_mask: Tensor | None = None,
) -> Tensor:
    """Checked implementation of :func:`sparsecore.gpu.sparsed_blocks` (see its docstring)."""
    qt, kt = _check_qk(q, k)
    bs = positive_int(block_size, "block_size")
    if mass is not None and (density is not None or top_k is not None):
        raise InvalidArgumentError(
            f"density, top_k, mass: must give at most one of them, got {density!r}, {top_k!r} and {mass!r}"
        )
    dens, top = _budget(density, top_k)
    tau = None if mass is None else check_float(mass, "mass", low=0.0, high=1.0, low_open=True)
    is_causal = check_bool(causal, "causal")
    budget = int(positive_float(memory_budget_mb, "memory_budget_mb") * 2**20)
    b, h, t, dh = qt.shape
    sc = 1.0 / math.sqrt(dh) if scale is None else positive_float(scale, "scale")
    nb = -(-t // bs)
    if t == 0:
        return torch.zeros(b, h, 0, 0, dtype=torch.bool, device=qt.device)
    real = check_key_padding(key_padding_mask, b, t, qt.device)
    m = _block_mass(qt, kt, bs, is_causal, sc, budget, real)
    allowed = _allowed(nb, is_causal, qt.device)
    if real is not None:  # key blocks holding only padding are never kept
        allowed = allowed & _real_blocks(real, bs)[:, None, None, :]
    forced = torch.eye(nb, dtype=torch.bool, device=qt.device)
    if tau is None:
        return _select(m, allowed, forced, _row_counts(allowed, dens, top))
    # The order _select keeps blocks in: the diagonal first, then by mass; count how many reach ``mass``.
    prio = m.masked_fill(~allowed, float("-inf")).masked_fill(forced, float("inf"))
    order = torch.argsort(-prio, dim=-1, stable=True)
    ordered = torch.gather(m.masked_fill(~allowed, 0.0), -1, order)
    before = ordered.cumsum(-1) - ordered  # mass of the blocks kept before this one
    count = (before < tau * (1 - 1e-6)).sum(-1).clamp(min=1)
    return _select(m, allowed, forced, count)


def _spherical_kmeans(x: Tensor, n_clusters: int, iters: int, seed: int) -> Tensor:
    """Cluster ids ``(G, N)`` of the unit rows of ``x`` ``(G, N, D)``; centroids seeded from rows picked by ``seed``."""
    g_, n, _ = x.shape
    gen = torch.Generator().manual_seed(seed)
    picks = torch.stack([torch.randperm(n, generator=gen)[:n_clusters] for _ in range(g_)]).to(x.device)
    cent = torch.gather(x, 1, picks[:, :, None].expand(-1, -1, x.shape[2]))
    assign = torch.zeros(g_, n, dtype=torch.long, device=x.device)
    for _ in range(iters + 1):
        assign = torch.argmax(x @ cent.transpose(-1, -2), dim=-1)
        onehot = torch.nn.functional.one_hot(assign, n_clusters).to(x.dtype)
        sums = onehot.transpose(-1, -2) @ x  # (G, C, D); a matmul, deterministic (no scatter atomics)
        norms = sums.norm(dim=-1, keepdim=True)
        cent = torch.where(norms > 0, sums / norms.clamp_min(1e-30), cent)  # an empty cluster keeps its centroid
    return assign


def routing_blocks(
    q: Tensor,
    k: Tensor,
    *,
    block_size: int = 64,
    n_clusters: int = 8,
    iters: int = 10,
    seed: int = 0,
    causal: bool = True,
    key_padding_mask: Tensor | None = None,
) -> Tensor:
    """Checked implementation of :func:`sparsecore.gpu.routing_blocks` (see its docstring)."""
    qt, kt = _check_qk(q, k)
    bs = positive_int(block_size, "block_size")
    nc = positive_int(n_clusters, "n_clusters")
    n_iter = nonnegative_int(iters, "iters")
    sd = check_seed(seed)
    is_causal = check_bool(causal, "causal")
    b, h, t, d = qt.shape
    nb = -(-t // bs)
    if t == 0:
        return torch.zeros(b, h, 0, 0, dtype=torch.bool, device=qt.device)
    real = check_key_padding(key_padding_mask, b, t, qt.device)
    acc = _acc(qt)
    x = torch.cat([qt.to(acc), kt.to(acc)], dim=2)
    if real is not None:  # padding rows are zero: they move no centroid
        x = x * real.repeat(1, 2).to(acc)[:, None, :, None]
    x = torch.nn.functional.normalize(x.reshape(b * h, 2 * t, d), dim=-1)
    nc = min(nc, 2 * t)
    assign = _spherical_kmeans(x, nc, n_iter, sd).reshape(b, h, 2 * t)
    pad = nb * bs - t

    def members(ids: Tensor) -> Tensor:  # (B, H, T) cluster ids -> (B, H, nb, C) "block touches cluster"
        oh = torch.nn.functional.one_hot(ids, nc).to(torch.float32)
        if real is not None:  # a padding position touches no cluster
            oh = oh * real[:, None, :, None]
        oh = torch.nn.functional.pad(oh, (0, 0, 0, pad)).reshape(b, h, nb, bs, nc)
        return oh.amax(3)

    keep = (members(assign[:, :, :t]) @ members(assign[:, :, t:]).transpose(-1, -2)) > 0
    keep |= torch.eye(nb, dtype=torch.bool, device=qt.device)
    allowed = _allowed(nb, is_causal, qt.device)
    if real is not None:  # key blocks holding only padding are never kept
        allowed = allowed & _real_blocks(real, bs)[:, None, None, :]
    return keep & allowed
