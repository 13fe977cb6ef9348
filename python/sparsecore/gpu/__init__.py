"""GPU kernels of sparsecore (Triton), importable as ``sparsecore.gpu``.

The sources live in ``python/sparsecore/gpu/`` so that maturin ships them in the wheel as ``sparsecore.gpu``
(maturin does not follow links); the top-level ``gpu/`` of the repository is a link to this folder. Importing
it needs nothing beyond numpy; the kernels import torch and triton lazily (``pip install 'sparsecore[gpu]'``)
and fall back to torch reference paths on tensors that are not on a CUDA device.

Each kernel follows one layout: a private ``@triton.jit`` kernel (``_*_kernels.py``) -> its launcher -> a
``torch.library.custom_op`` (``sparsecore::<name>``, with ``register_fake`` and ``register_autograd``, so it
traces under ``torch.compile``) that dispatches on the tensors' device: CUDA -> Triton, anything else -> the
torch reference (what CPU users get; float64 always takes it, and so do CUDA tensors when triton is not
installed). Inputs are made contiguous (a copy when they are not). Index checks run on the host for CPU tensors;
on CUDA the indices are trusted (a check would synchronise).

Tests set ``SPARSECORE_FORCE_TRITON=1`` (and ``TRITON_INTERPRET=1`` before triton is imported) to run the
Triton launchers on CPU tensors under Triton's interpreter; the variable is for tests only (without
``TRITON_INTERPRET=1`` Triton refuses CPU tensors).
"""

from __future__ import annotations

import importlib.util
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from torch import Tensor

__all__ = ["block_sparse_attention", "sparse_gemv", "topk_decode", "topk_encode", "triton_available"]


def triton_available() -> bool:
    """Whether Triton kernels can run here: triton and torch are installed and torch sees a CUDA device.

    Returns
    -------
    bool
        ``False`` on CPU-only machines; kernels then use their torch reference paths.
    """
    if importlib.util.find_spec("triton") is None or importlib.util.find_spec("torch") is None:
        return False
    import torch

    return bool(torch.cuda.is_available())


def topk_decode(indices: Tensor, values: Tensor, W_dec: Tensor, bias: Tensor | None = None) -> Tensor:
    """Sparse TopK decoder: ``out[..., :] = sum_j values[..., j] * W_dec[indices[..., j]] (+ bias)``.

    The Triton kernel gathers the ``k`` selected rows of ``W_dec`` per output row and accumulates in float32; its
    backward computes ``d values[b, j] = <d out[b], W_dec[indices[b, j]]>`` and ``d W_dec`` without float
    atomics: the ``(b, j)`` pairs are sorted by latent (stable) and each latent sums its own segment in a fixed
    order, so ``d W_dec`` is bitwise reproducible; ``d bias = sum_b d out[b]``. Elsewhere the reference is
    ``F.embedding_bag(indices, W_dec, per_sample_weights=values, mode="sum")`` in float32.

    Parameters
    ----------
    indices : Tensor
        ``(..., k)`` int32 or int64 latent ids in ``[0, d_sae)``; any leading batch dimensions. Checked on the
        host for CPU tensors; trusted on CUDA (an out-of-range id there reads out of bounds).
    values : Tensor
        ``(..., k)`` float32, float16, bfloat16 (or float64, reference path only) code values.
    W_dec : Tensor
        ``(d_sae, d)`` decoder rows.
    bias : Tensor, optional
        ``(d,)`` added to every output row (e.g. ``b_dec``).

    Returns
    -------
    Tensor
        ``(..., d)`` in ``values``' dtype (accumulated in float32). Differentiable in ``values``, ``W_dec`` and
        ``bias``.

    Raises
    ------
    DTypeError
        An argument is not a tensor, ``indices`` is not int32/int64 or a float argument has another dtype.
    ShapeMismatchError
        ``values`` and ``indices`` differ in shape, ``W_dec`` is not 2-D or ``bias`` is not ``(d,)``.
    IndexOutOfRangeError
        An index is negative or ``>= d_sae`` (CPU tensors).
    """
    from sparsecore.gpu import _decode

    return _decode.topk_decode(indices, values, W_dec, bias)


def topk_encode(
    x: Tensor,
    W_enc: Tensor,
    b_enc: Tensor,
    k: int,
    *,
    activation: str = "relu",
    threshold: Tensor | None = None,
    b_dec: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Fused SAE encoder: ``pre = (x - b_dec) @ W_enc + b_enc``, activation, and the top ``k`` per row.

    ``"relu"`` keeps the top ``k`` of ``relu(pre)``; ``"jumprelu"`` keeps the top ``k`` of ``pre`` where
    ``pre > threshold[j]`` and 0 elsewhere. Ties go to the lower latent id; a row with fewer than ``k`` positive
    entries is filled with zeros at the lowest ids. Codes come back sorted by value (descending).

    The Triton kernel tiles over the latents and keeps a running per-row top-``k`` in registers, so the
    ``B x d_sae`` pre-activations are never written to global memory (extra memory: the ``(B, k)`` output). Its
    matmul runs in float32 (``ieee``) for float32 inputs and on the tensor cores with a float32 accumulator for
    float16/bfloat16 inputs of one dtype. The backward gives gradient to the selected,
    non-zero entries only: ReLU's derivative is 1 there; JumpReLU passes the value's gradient straight through
    (nothing flows to ``threshold``); it reuses the decoder's gather and sorted-segment kernels (no atomics).

    Parameters
    ----------
    x : Tensor
        ``(..., d)`` inputs, float32, float16, bfloat16 (float64 on the reference path).
    W_enc : Tensor
        ``(d, d_sae)`` encoder.
    b_enc : Tensor
        ``(d_sae,)`` encoder bias.
    k : int
        Codes per row, ``0 <= k <= d_sae`` (any value, not only powers of two).
    activation : {"relu", "jumprelu"}
        The activation.
    threshold : Tensor, optional
        ``(d_sae,)`` JumpReLU thresholds; required for ``"jumprelu"`` and refused for ``"relu"``.
    b_dec : Tensor, optional
        ``(d,)`` subtracted from ``x`` before encoding.

    Returns
    -------
    indices : Tensor
        ``(..., k)`` int64 latent ids.
    values : Tensor
        ``(..., k)`` activations in ``x``'s dtype; differentiable in ``x``, ``W_enc``, ``b_enc`` and ``b_dec``.

    Raises
    ------
    DTypeError
        A tensor argument is not a float tensor.
    ShapeMismatchError
        ``x``'s last dimension, ``b_enc``, ``threshold`` or ``b_dec`` do not match ``W_enc``.
    InvalidArgumentError
        ``k`` is not an integer in ``[0, d_sae]``, ``activation`` is unknown, or ``threshold`` is missing for
        JumpReLU / given for ReLU.
    """
    from sparsecore.gpu import _encode

    return _encode.topk_encode(x, W_enc, b_enc, k, activation=activation, threshold=threshold, b_dec=b_dec)


def sparse_gemv(
    x: Tensor,
    W: Tensor,
    *,
    threshold: float | None = None,
    active: Tensor | None = None,
    lowrank: tuple[Tensor, Tensor, Tensor] | None = None,
) -> Tensor:
    """Activation-sparse GEMV: ``y = W (x * m)`` reading only the columns of ``W`` whose input is active.

    ``m = |x| > threshold`` or the given boolean ``active`` mask (exactly one of the two). With
    ``lowrank=(U, S, V)`` adds R-Sparse's residual ``U diag(S) V^T (x * (1 - m))`` (computed in torch). For a
    2-D ``x`` the kernel reads the union of the rows' active columns (meant for small batches). Finding the
    active columns synchronises with the host once per call (``nonzero``). The backward treats the mask as a
    constant and is dense: ``d x = m * (W^T d y)``, ``d W = d y (x * m)^T``.

    Parameters
    ----------
    x : Tensor
        ``(d_in,)`` or ``(B, d_in)``; float32, float16, bfloat16 (float64 on the reference path).
    W : Tensor
        ``(d_out, d_in)`` weight, as in ``nn.Linear``.
    threshold : float, optional
        Inputs with ``|x| > threshold`` are active.
    active : Tensor, optional
        Bool mask of ``x``'s shape.
    lowrank : tuple of Tensor, optional
        ``(U, S, V)`` with shapes ``(d_out, r)``, ``(r,)``, ``(d_in, r)``.

    Returns
    -------
    Tensor
        ``(d_out,)`` or ``(B, d_out)`` in ``x``'s dtype (accumulated in float32).

    Raises
    ------
    DTypeError
        ``x``, ``W`` or the low-rank factors are not float tensors, or ``active`` is not bool.
    ShapeMismatchError
        ``x`` is not 1-D/2-D, its last dimension is not ``d_in``, or ``active`` / the factors do not fit.
    InvalidArgumentError
        Neither or both of ``threshold`` and ``active``, a negative threshold, or a malformed ``lowrank``.
    """
    from sparsecore.gpu import _gemv

    return _gemv.sparse_gemv(x, W, threshold=threshold, active=active, lowrank=lowrank)


def block_sparse_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    block_mask: Tensor,
    *,
    block_size: int = 64,
    causal: bool = False,
    scale: float | None = None,
) -> Tensor:
    """Block-sparse attention: ``softmax(q k^T * scale)`` restricted to the kept ``block_size`` x ``block_size`` tiles.

    ``block_mask[b, h, i, j]`` says whether query block ``i`` of head ``h`` attends to key block ``j`` (one table
    per head, as MInference / MoBA-style selection produces). The Triton kernel turns the mask into a look-up
    table of kept key blocks per query block and runs an online softmax over those blocks only (float32, inputs
    upcast after load). With ``causal`` keys after the query are masked as well. A query row that sees no key
    gets a zero output. The backward is dense torch on both paths for now (it recomputes the ``T x T``
    probabilities).

    Parameters
    ----------
    q, k, v : Tensor
        ``(B, H, T, d_head)``, the same shape (self-attention); float32, float16, bfloat16 (or float64 on the
        reference path).
    block_mask : Tensor
        Bool ``(B or 1, H or 1, n_blocks, n_blocks)`` with ``n_blocks = ceil(T / block_size)``.
    block_size : int
        Tile edge, a power of two ``>= 16``.
    causal : bool
        Also mask keys after the query position.
    scale : float, optional
        Score scale; ``1 / sqrt(d_head)`` by default.

    Returns
    -------
    Tensor
        ``(B, H, T, d_head)`` in ``q``'s dtype; differentiable in ``q``, ``k``, ``v``.

    Raises
    ------
    DTypeError
        ``q``, ``k``, ``v`` are not float tensors or ``block_mask`` is not bool.
    ShapeMismatchError
        ``q``, ``k``, ``v`` differ in shape or are not 4-D, or ``block_mask`` has the wrong shape.
    InvalidArgumentError
        ``block_size`` is not a power of two ``>= 16``, ``causal`` is not a bool, or ``scale`` is not positive.
    """
    from sparsecore.gpu import _attention

    return _attention.block_sparse_attention(q, k, v, block_mask, block_size=block_size, causal=causal, scale=scale)
