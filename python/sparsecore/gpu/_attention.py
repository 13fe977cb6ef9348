"""``sparsecore::block_sparse_attention``: LUT-driven block-sparse attention as a torch custom op."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from sparsecore._validate import check_bool, positive_float, positive_int
from sparsecore.exceptions import DTypeError, InvalidArgumentError, ShapeMismatchError
from sparsecore.gpu._common import acc_dtype, check_float_tensor, check_key_padding, check_tensor, use_triton

__all__ = ["block_sparse_attention", "block_sparse_attention_reference"]


def token_mask(block_mask: Tensor, t: int, block_size: int, causal: bool) -> Tensor:
    """The ``(..., T, T)`` bool token mask of a ``(..., nb, nb)`` block mask (and of causality)."""
    keep = block_mask.repeat_interleave(block_size, -1).repeat_interleave(block_size, -2)[..., :t, :t]
    if causal:
        keep = keep & torch.ones(t, t, dtype=torch.bool, device=keep.device).tril()
    return keep


def _masked_scores(
    q: Tensor,
    k: Tensor,
    block_mask: Tensor,
    block_size: int,
    causal: bool,
    scale: float,
    key_mask: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """The masked scaled scores ``(BH, T, T)`` and which rows keep a key.

    Scores are ``-inf`` outside the expanded block mask, after the query with ``causal``, and at padding keys
    (where ``key_mask`` ``(BH, T)`` is False).
    """
    keep = token_mask(block_mask, q.shape[1], block_size, causal)
    if key_mask is not None:
        keep = keep & key_mask[:, None, :]
    s = ((q @ k.transpose(-1, -2)) * scale).masked_fill(~keep, float("-inf"))
    return s, keep.any(-1, keepdim=True)


def _probabilities(
    q: Tensor,
    k: Tensor,
    block_mask: Tensor,
    block_size: int,
    causal: bool,
    scale: float,
    key_mask: Tensor | None = None,
) -> Tensor:
    """Dense attention probabilities ``(BH, T, T)`` under the expanded block mask; rows with no key are 0."""
    s, has_key = _masked_scores(q, k, block_mask, block_size, causal, scale, key_mask)
    p = torch.softmax(s, dim=-1)
    return torch.where(has_key, p, torch.zeros((), dtype=p.dtype, device=p.device))


def _expand_kv(x: Tensor, groups: int) -> Tensor:
    """``(B * H_kv, T, d)`` -> ``(B * H_kv * groups, T, d)``: each kv head repeated for its ``groups`` query heads."""
    return x if groups == 1 else x.repeat_interleave(groups, dim=0)


def block_sparse_attention_reference(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    block_mask: Tensor,
    block_size: int,
    causal: bool,
    scale: float,
    groups: int = 1,
    key_mask: Tensor | None = None,
) -> Tensor:
    """The torch reference: dense attention with the block mask, float32 (or 64).

    ``q`` is ``(BH, T, d_head)``, ``k`` and ``v`` are ``(BH / groups, T, d_head)``; query head ``h`` reads kv head
    ``h // groups`` of the same batch row. ``key_mask`` ``(BH, T)`` (optional) is False at padding keys.
    """
    return _reference(q, k, v, block_mask, block_size, causal, scale, groups, key_mask)[0]


def _reference(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    block_mask: Tensor,
    block_size: int,
    causal: bool,
    scale: float,
    groups: int,
    key_mask: Tensor | None,
) -> tuple[Tensor, Tensor]:
    """:func:`block_sparse_attention_reference` and the float32 row log-sum-exp (``+inf`` where no key is seen)."""
    acc = acc_dtype(q, k, v)
    kf, vf = _expand_kv(k.to(acc), groups), _expand_kv(v.to(acc), groups)
    s, has_key = _masked_scores(q.to(acc), kf, block_mask, block_size, causal, scale, key_mask)
    zero = torch.zeros((), dtype=s.dtype, device=s.device)
    out = (torch.where(has_key, torch.softmax(s, dim=-1), zero) @ vf).to(q.dtype)
    lse = torch.where(has_key[..., 0], torch.logsumexp(s, dim=-1), torch.full_like(zero, float("inf")))
    return out, lse.float()


@torch.library.custom_op("sparsecore::block_sparse_attention", mutates_args=())
def _attention_op(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    block_mask: Tensor,
    block_size: int,
    causal: bool,
    scale: float,
    groups: int,
    key_mask: Tensor | None,
) -> tuple[Tensor, Tensor]:
    """The output and the float32 row log-sum-exp ``(BH, T)`` (what the Triton backward recomputes from)."""
    if use_triton(q, k, v):
        from sparsecore.gpu._attention_kernels import block_sparse_attention_triton

        return block_sparse_attention_triton(q, k, v, block_mask, block_size, causal, scale, groups, key_mask)
    return _reference(q, k, v, block_mask, block_size, causal, scale, groups, key_mask)


@_attention_op.register_fake
def _(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    block_mask: Tensor,
    block_size: int,
    causal: bool,
    scale: float,
    groups: int,
    key_mask: Tensor | None,
) -> tuple[Tensor, Tensor]:
    return torch.empty_like(q), q.new_empty(q.shape[:2], dtype=torch.float32)


def _setup_context(ctx: torch.autograd.function.FunctionCtx, inputs: tuple[Any, ...], output: Any) -> None:
    q, k, v, block_mask, block_size, causal, scale, groups, key_mask = inputs
    ctx.save_for_backward(q, k, v, block_mask, output[0], output[1], key_mask)
    ctx.args = (block_size, causal, scale, groups)  # type: ignore[attr-defined]


def _backward(ctx: torch.autograd.function.FunctionCtx, grad: Tensor, _grad_lse: Tensor | None) -> tuple[Any, ...]:
    # The log-sum-exp output is internal (the public function returns the attention output only): no gradient.
    q, k, v, block_mask, out, lse, key_mask = ctx.saved_tensors  # type: ignore[attr-defined]
    block_size, causal, scale, groups = ctx.args  # type: ignore[attr-defined]
    if use_triton(q, k, v, grad):
        from sparsecore.gpu._attention_kernels import block_sparse_attention_backward_triton

        dq, dk, dv = block_sparse_attention_backward_triton(
            q, k, v, out, lse, grad, block_mask, block_size, causal, scale, groups, key_mask
        )
        return dq, dk, dv, None, None, None, None, None, None
    # The torch reference: dense, recomputes the (BH, T, T) probabilities.
    acc = acc_dtype(q, k, v, grad)
    qf, g = q.to(acc), grad.to(acc)
    kf, vf = _expand_kv(k.to(acc), groups), _expand_kv(v.to(acc), groups)
    p = _probabilities(qf, kf, block_mask, block_size, causal, scale, key_mask)
    dv = p.transpose(-1, -2) @ g
    dp = g @ vf.transpose(-1, -2)
    ds = p * (dp - (dp * p).sum(-1, keepdim=True)) * scale
    dk = ds.transpose(-1, -2) @ qf
    if groups > 1:  # a kv head's gradient sums over the query heads that read it
        dk = dk.reshape(-1, groups, *dk.shape[1:]).sum(1)
        dv = dv.reshape(-1, groups, *dv.shape[1:]).sum(1)
    return (ds @ kf).to(q.dtype), dk.to(k.dtype), dv.to(v.dtype), None, None, None, None, None, None


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
    key_padding_mask: object = None,
) -> Tensor:
    """Checked entry point of :func:`sparsecore.gpu.block_sparse_attention` (see its docstring)."""
    qt = check_float_tensor(q, "q", ndim=4)
    kt = check_float_tensor(k, "k", ndim=4)
    vt = check_float_tensor(v, "v", ndim=4)
    b, h, t, dh = qt.shape
    h_kv = kt.shape[1]
    if kt.shape != (b, h_kv, t, dh) or h_kv == 0 or h % h_kv:
        raise ShapeMismatchError(
            f"k: must be (B, H_kv, T, d_head) = ({b}, H_kv, {t}, {dh}) with H_kv dividing H={h}, got {tuple(kt.shape)}"
        )
    if vt.shape != kt.shape:
        raise ShapeMismatchError(f"v: must have the shape of k {tuple(kt.shape)}, got {tuple(vt.shape)}")
    bs = positive_int(block_size, "block_size")
    if bs < 16 or bs & (bs - 1):
        raise InvalidArgumentError(f"block_size: must be a power of two >= 16, got {bs}")
    is_causal = check_bool(causal, "causal")
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
    key_mask = None
    kpm = check_key_padding(key_padding_mask, b, t, qt.device)
    if kpm is not None:
        key_mask = kpm.repeat_interleave(h, dim=0).contiguous()
    out: tuple[Tensor, Tensor] = _attention_op(
        qt.reshape(b * h, t, dh),
        kt.reshape(b * h_kv, t, dh),
        vt.reshape(b * h_kv, t, dh),
        mask,
        bs,
        is_causal,
        sc,
        h // h_kv,
        key_mask,
    )
    return out[0].reshape(b, h, t, dh)
