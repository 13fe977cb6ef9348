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

The block-table builders (:func:`minference_blocks`, :func:`sparsed_blocks`, :func:`routing_blocks`) are plain
torch; :func:`register_attention` plugs block-sparse attention into transformers' ``AttentionInterface``.

Tests set ``SPARSECORE_FORCE_TRITON=1`` (and ``TRITON_INTERPRET=1`` before triton is imported) to run the
Triton launchers on CPU tensors under Triton's interpreter; the variable is for tests only (without
``TRITON_INTERPRET=1`` Triton refuses CPU tensors).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Hashable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torch import Tensor

__all__ = [
    "SparsedMaskCache",
    "block_sparse_attention",
    "minference_blocks",
    "register_attention",
    "routing_blocks",
    "sparse_gemv",
    "sparsed_blocks",
    "splade_head",
    "topk_decode",
    "topk_encode",
    "triton_available",
]


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
    key_padding_mask: Tensor | None = None,
) -> Tensor:
    """Block-sparse attention: ``softmax(q k^T * scale)`` restricted to the kept ``block_size`` x ``block_size`` tiles.

    ``block_mask[b, h, i, j]`` says whether query block ``i`` of head ``h`` attends to key block ``j`` (one table
    per head, as MInference / MoBA-style selection produces). The Triton kernel turns the mask into a look-up
    table of kept key blocks per query block and runs an online softmax over those blocks only (float32, inputs
    upcast after load). With ``causal`` keys after the query are masked as well. A query row that sees no key
    gets a zero output. On the Triton path the backward is Triton too (FlashAttention-2's scheme on the same
    tables: the forward keeps each row's log-sum-exp, the backward recomputes the probabilities of the kept tiles
    only, and the key / value gradients of grouped heads are summed without atomics); the reference path's
    backward is dense torch (it recomputes the ``T x T`` probabilities).

    Parameters
    ----------
    q : Tensor
        ``(B, H, T, d_head)``; float32, float16, bfloat16 (or float64 on the reference path).
    k, v : Tensor
        ``(B, H_kv, T, d_head)`` with ``H_kv`` dividing ``H`` (self-attention; ``H_kv < H`` is grouped-query
        attention: query head ``h`` reads kv head ``h // (H / H_kv)``, without repeating the kv heads in memory).
    block_mask : Tensor
        Bool ``(B or 1, H or 1, n_blocks, n_blocks)`` with ``n_blocks = ceil(T / block_size)``.
    block_size : int
        Tile edge, a power of two ``>= 16``.
    causal : bool
        Also mask keys after the query position.
    scale : float, optional
        Score scale; ``1 / sqrt(d_head)`` by default.
    key_padding_mask : Tensor, optional
        Bool ``(B, T)``, True at real tokens: padding keys are masked in every head (the kernel reads this mask,
        so a padded batch keeps the sparse cost). Queries at padding positions that see no real key get zeros.

    Returns
    -------
    Tensor
        ``(B, H, T, d_head)`` in ``q``'s dtype; differentiable in ``q``, ``k``, ``v``.

    Raises
    ------
    DTypeError
        ``q``, ``k``, ``v`` are not float tensors, or ``block_mask`` or ``key_padding_mask`` is not bool.
    ShapeMismatchError
        ``q``, ``k``, ``v`` are not 4-D, ``k`` does not match ``q`` (batch, length, head width, a number of heads
        dividing ``q``'s), ``v`` differs from ``k``, or ``block_mask`` or ``key_padding_mask`` has the wrong shape.
    InvalidArgumentError
        ``block_size`` is not a power of two ``>= 16``, ``causal`` is not a bool, or ``scale`` is not positive.
    """
    from sparsecore.gpu import _attention

    return _attention.block_sparse_attention(
        q, k, v, block_mask, block_size=block_size, causal=causal, scale=scale, key_padding_mask=key_padding_mask
    )


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
    """MInference-style block table: the best blocks by mean-pooled ``q`` / ``k`` scores, plus sink and local blocks.

    ``q`` and ``k`` are mean-pooled per block of ``block_size`` positions; the block scores are
    ``pooled_q @ pooled_k^T``. Per query block ``i`` the first ``sink_blocks`` key blocks (attention sinks) and the
    ``local_blocks`` blocks ending at the diagonal (``i - local_blocks < j <= i``) are always kept, and the
    best-scoring remaining blocks fill the row up to its budget: ``ceil(density * n_allowed)`` or
    ``min(top_k, n_allowed)``, where ``n_allowed`` is ``i + 1`` under ``causal`` and ``nb`` otherwise. A row keeps
    ``max(budget, n_forced)`` blocks; under ``causal`` no block above the diagonal is ever kept.

    Parameters
    ----------
    q, k : Tensor
        ``(B, H, T, D)`` float queries and keys of the same shape (repeat grouped key heads first).
    block_size : int
        Positions per block.
    density : float, optional
        Fraction of the allowed blocks kept per query block, in ``(0, 1]``; 0.1 when neither it nor ``top_k``
        is given.
    top_k : int, optional
        Blocks kept per query block (instead of ``density``).
    sink_blocks : int
        Leading key blocks always kept (``>= 0``).
    local_blocks : int
        Blocks ending at the diagonal always kept (``>= 1``: the diagonal block itself is always kept).
    causal : bool
        Keep no block above the diagonal.
    key_padding_mask : Tensor, optional
        Bool ``(B, T)``, True at real tokens: block means are over real positions only, key blocks holding only
        padding are never kept, and the sink blocks are the first ones holding a real token (left padding moves
        them).

    Returns
    -------
    Tensor
        Bool ``(B, H, nb, nb)`` on ``q``'s device, ``nb = ceil(T / block_size)``.

    Raises
    ------
    DTypeError
        ``q`` or ``k`` is not a float tensor, or ``key_padding_mask`` is not bool.
    ShapeMismatchError
        ``q`` is not 4-D, ``k`` has another shape, or ``key_padding_mask`` is not ``(B, T)``.
    InvalidArgumentError
        A size is not a positive (non-negative) integer, ``density`` is outside ``(0, 1]``, both ``density`` and
        ``top_k`` are given, or ``causal`` is not a bool.

    Examples
    --------
    >>> mask = minference_blocks(q, k, block_size=64, density=0.1)          # doctest: +SKIP
    >>> out = block_sparse_attention(q, k, v, mask, block_size=64, causal=True)  # doctest: +SKIP
    """
    from sparsecore.gpu import _blocks

    return _blocks.minference_blocks(
        q,
        k,
        block_size=block_size,
        density=density,
        top_k=top_k,
        sink_blocks=sink_blocks,
        local_blocks=local_blocks,
        causal=causal,
        key_padding_mask=key_padding_mask,
    )


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
    """SparseD-style block table: the blocks holding the most attention mass under full attention.

    The full (causal) attention probabilities ``softmax(q k^T * scale)`` are computed once, a chunk of query
    blocks at a time so that at most about ``memory_budget_mb`` of scores live at once whatever ``T``; the mass of
    block ``(i, j)`` is the mean over the queries of block ``i`` of their probability summed over the keys of
    block ``j`` (each row of blocks sums to 1). Per query block the diagonal block is always kept, then either
    the heaviest blocks up to the budget (``density`` / ``top_k`` as in :func:`minference_blocks`) or, with
    ``mass``, the fewest heaviest blocks whose mass reaches ``mass``.

    This costs a full attention pass, so it is meant to be computed once, at an early step (SparseD computes it
    at an early denoising step of a diffusion language model, where every step attends over the same
    sequence), and reused by later steps: :class:`SparsedMaskCache` keeps one mask per key.

    Parameters
    ----------
    q, k : Tensor
        ``(B, H, T, D)`` float queries and keys of the same shape.
    block_size : int
        Positions per block.
    density : float, optional
        Fraction of the allowed blocks kept per query block, in ``(0, 1]`` (0.1 when no criterion is given).
    top_k : int, optional
        Blocks kept per query block.
    mass : float, optional
        Keep the heaviest blocks until their mass reaches this fraction, in ``(0, 1]``.
    causal : bool
        Causal attention (and no block above the diagonal).
    scale : float, optional
        Score scale, ``1 / sqrt(D)`` by default.
    memory_budget_mb : float
        Bound on the scores held at once (one block of query rows at least).
    key_padding_mask : Tensor, optional
        Bool ``(B, T)``, True at real tokens: padding keys get no attention mass (a query that sees no real key
        adds none) and key blocks holding only padding are never kept.

    Returns
    -------
    Tensor
        Bool ``(B, H, nb, nb)`` on ``q``'s device.

    Raises
    ------
    DTypeError
        ``q`` or ``k`` is not a float tensor, or ``key_padding_mask`` is not bool.
    ShapeMismatchError
        ``q`` is not 4-D, ``k`` has another shape, or ``key_padding_mask`` is not ``(B, T)``.
    InvalidArgumentError
        More than one of ``density``, ``top_k``, ``mass``; a value out of range; ``causal`` not a bool.
    """
    from sparsecore.gpu import _blocks

    return _blocks.sparsed_blocks(
        q,
        k,
        block_size=block_size,
        density=density,
        top_k=top_k,
        mass=mass,
        causal=causal,
        scale=scale,
        memory_budget_mb=memory_budget_mb,
        key_padding_mask=key_padding_mask,
    )


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
    """Routing-Transformer-style block table: blocks whose queries and keys share a k-means cluster.

    Queries and keys of each (batch, head) are normalised to unit length and clustered together by spherical
    k-means (``n_clusters`` shared centroids, seeded from rows chosen with ``seed``, ``iters`` Lloyd steps of
    cosine assignment and renormalised means). Block ``(i, j)`` is kept when some query of block ``i`` and some key
    of block ``j`` fall in the same cluster; the diagonal is always kept, so no row is empty; under ``causal`` no
    block above the diagonal is kept. With large blocks most blocks meet most clusters, so the table is sparse
    only when ``n_clusters`` is large compared with the clusters one block touches.

    Parameters
    ----------
    q, k : Tensor
        ``(B, H, T, D)`` float queries and keys of the same shape.
    block_size : int
        Positions per block.
    n_clusters : int
        Shared centroids per (batch, head), ``<= 2 T`` is not required (capped at ``2 T``).
    iters : int
        Lloyd iterations (``>= 0``; 0 assigns to the seed centroids).
    seed : int
        Seeds the choice of the initial centroids; the same seed gives the same mask.
    causal : bool
        Keep no block above the diagonal.
    key_padding_mask : Tensor, optional
        Bool ``(B, T)``, True at real tokens: padding positions join no cluster and move no centroid, and key
        blocks holding only padding are never kept.

    Returns
    -------
    Tensor
        Bool ``(B, H, nb, nb)`` on ``q``'s device.

    Raises
    ------
    DTypeError
        ``q`` or ``k`` is not a float tensor, or ``key_padding_mask`` is not bool.
    ShapeMismatchError
        ``q`` is not 4-D, ``k`` has another shape, or ``key_padding_mask`` is not ``(B, T)``.
    InvalidArgumentError
        A bad size, seed or ``causal``.
    """
    from sparsecore.gpu import _blocks

    return _blocks.routing_blocks(
        q,
        k,
        block_size=block_size,
        n_clusters=n_clusters,
        iters=iters,
        seed=seed,
        causal=causal,
        key_padding_mask=key_padding_mask,
    )


class SparsedMaskCache:
    """Compute a :func:`sparsed_blocks` mask once per key (e.g. a layer index) and reuse it at later steps.

    A cached mask is recomputed when the shape of ``q`` changes. ``clear()`` forgets every mask (call it when a
    new sequence starts).

    Parameters
    ----------
    **kwargs
        Passed to :func:`sparsed_blocks` (``block_size``, ``density`` / ``top_k`` / ``mass``, ``causal``, ...).

    Examples
    --------
    >>> cache = SparsedMaskCache(block_size=64, mass=0.9)                       # doctest: +SKIP
    >>> mask = cache.get(layer_idx, q, k)   # full attention at the first step, then reused   # doctest: +SKIP

    Raises
    ------
    InvalidArgumentError
        A keyword that :func:`sparsed_blocks` does not take.
    """

    def __init__(self, **kwargs: object) -> None:
        import inspect

        from sparsecore.exceptions import InvalidArgumentError

        known = set(inspect.signature(sparsed_blocks).parameters) - {"q", "k"}
        unknown = sorted(set(kwargs) - known)
        if unknown:
            raise InvalidArgumentError(f"kwargs: must be arguments of sparsed_blocks, got {', '.join(unknown)}")
        self.kwargs = dict(kwargs)
        self._masks: dict[Hashable, tuple[tuple[int, ...], Tensor]] = {}
        self.computed = 0  #: how many masks were computed (not taken from the cache)

    def get(self, key: Hashable, q: Tensor, k: Tensor) -> Tensor:
        """The cached mask of ``key``, computed from ``q`` and ``k`` when missing or when ``q``'s shape changed."""
        hit = self._masks.get(key)
        shape = tuple(getattr(q, "shape", ()))
        if hit is not None and hit[0] == shape:
            return hit[1]
        mask = sparsed_blocks(q, k, **self.kwargs)  # type: ignore[arg-type]
        self._masks[key] = (shape, mask)
        self.computed += 1
        return mask

    def clear(self) -> None:
        """Forget every cached mask."""
        self._masks.clear()

    def __len__(self) -> int:
        return len(self._masks)


def register_attention(
    name: str = "sparsecore_block_sparse",
    *,
    builder: str | Callable[..., Tensor] = "minference",
    block_size: int = 64,
    **builder_kwargs: Any,
) -> str:
    """Register block-sparse attention with transformers' ``AttentionInterface`` under ``name``.

    Afterwards ``AutoModelForCausalLM.from_config(cfg, attn_implementation=name)``, ``from_pretrained(...,
    attn_implementation=name)`` or ``model.set_attn_implementation(name)`` use it in every attention layer. Its
    masks are the ones transformers builds for ``"sdpa"`` (padding and causality), registered under the same name
    with ``AttentionMaskInterface``.

    At prefill (as many queries as keys, more than one block) the builder makes a block table per head from the
    layer's queries and keys (grouped key/value heads are repeated first) and attention is restricted to it: on
    CUDA without a padding mask, :func:`block_sparse_attention` (Triton) visits only the kept blocks; on any other
    device, or with a padding mask, dense SDPA runs on the expanded token mask combined with the causal and padding
    masks (the same result at dense cost; a padding position that sees no key attends everywhere rather than
    produce NaN). Decode steps (fewer queries than keys), sequences of at most one block and dropout in training
    run transformers' own dense SDPA with the given mask.

    Parameters
    ----------
    name : str
        The ``attn_implementation`` name.
    builder : {"minference", "sparsed", "routing"} or callable
        :func:`minference_blocks`, :func:`sparsed_blocks`, :func:`routing_blocks`, or any callable
        ``builder(q, k, *, block_size, causal, **builder_kwargs) -> (B, H, nb, nb) bool``.
    block_size : int
        Positions per block (a power of two ``>= 16`` for the Triton path).
    **builder_kwargs
        Passed to the builder (e.g. ``density=0.2``); the layer's ``scaling`` goes to builders that take
        ``scale``.

    Returns
    -------
    str
        ``name``.

    Raises
    ------
    InvalidArgumentError
        An empty name, an unknown builder, a bad ``block_size``, or keywords the builder does not take (or
        ``causal``, which comes from the model).
    MissingExtraError
        transformers is not installed.

    Examples
    --------
    >>> name = register_attention(builder="minference", density=0.2)                     # doctest: +SKIP
    >>> model = AutoModelForCausalLM.from_pretrained(path, attn_implementation=name)     # doctest: +SKIP
    """
    from sparsecore._optional import require

    require("transformers")
    from sparsecore.gpu import _hf

    return _hf.register_attention(name, builder=builder, block_size=block_size, **builder_kwargs)


def splade_head(hidden: Tensor, W_vocab: Tensor, b_vocab: Tensor | None, attention_mask: Tensor | None) -> Tensor:
    """SPLADE head: ``out[b, v] = max over real tokens l of log1p(relu(hidden[b, l] . W_vocab[v] + b_vocab[v]))``.

    The ``B x L x V`` logits are never materialised. The Triton kernel (CUDA) runs one program per (row, tile of
    vocabulary terms), loops over the tokens with a running maximum and keeps the first token reaching it; the
    torch reference (elsewhere) computes the logits a chunk of terms at a time (about 64 MiB at once). The
    backward sends each term's gradient to its argmax token only, ``d hidden[b, l*] += g * W_vocab[v] / (1 +
    relu(m))`` (nothing where ``m <= 0``), with ``d W_vocab`` and ``d b_vocab`` from the same coefficients; it is
    torch on both paths, chunked over the vocabulary, and deterministic (a scatter into distinct slots, then
    matmuls; no atomics).

    Parameters
    ----------
    hidden : Tensor
        ``(B, L, d)`` final hidden states (after the MLM head's transform, before the vocabulary projection);
        float32, float16, bfloat16 (float64 on the reference path).
    W_vocab : Tensor
        ``(V, d)`` vocabulary projection in ``nn.Linear`` layout (``model.get_output_embeddings().weight``).
    b_vocab : Tensor, optional
        ``(V,)`` its bias.
    attention_mask : Tensor, optional
        ``(B, L)`` bool or integer, non-zero for real tokens; ``None``: every token is real. A row with no real
        token gives zeros.

    Returns
    -------
    Tensor
        ``(B, V)`` in ``hidden``'s dtype (computed in float32), ``>= 0``; differentiable in ``hidden``,
        ``W_vocab`` and ``b_vocab``.

    Raises
    ------
    DTypeError
        A float argument is not a float tensor, or ``attention_mask`` is a float tensor.
    ShapeMismatchError
        ``hidden`` is not 3-D, ``W_vocab`` is not ``(V, d)``, ``b_vocab`` is not ``(V,)`` or ``attention_mask`` is
        not ``(B, L)``.

    Examples
    --------
    >>> head = model.get_output_embeddings()                                          # doctest: +SKIP
    >>> w = splade_head(transform(hidden), head.weight, head.bias, batch["attention_mask"])  # doctest: +SKIP
    """
    from sparsecore.gpu import _splade

    return _splade.splade_head(hidden, W_vocab, b_vocab, attention_mask)
