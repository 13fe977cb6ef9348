"""Training losses for learned sparse retrieval (SPLADE and inference-free models).

All functions are differentiable torch operations on ``(batch, vocab)`` weight tensors.

References
----------
- T. Formal, B. Piwowarski, S. Clinchant. "SPLADE: Sparse Lexical and Expansion Model for First Stage Ranking".
  SIGIR 2021. (FLOPS regularisation with a quadratic warm-up of its weight.)
- B. Paria, C.-K. Yeh, I. E. H. Yen, N. Xu, P. Ravikumar, B. Póczos. "Minimizing FLOPs to Learn Efficient Sparse
  Representations". ICLR 2020. (The FLOPS regulariser.)
- OpenSearch neural-sparse "doc-only" (inference-free) models: queries are bags of token ids weighted by IDF.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F  # noqa: N812
from torch import Tensor

from sparsecore._validate import nonnegative_float, nonnegative_int, positive_float
from sparsecore.exceptions import DTypeError, InvalidArgumentError, NonFiniteError, ShapeMismatchError

__all__ = ["RegularizationWarmup", "contrastive_loss", "flops_loss", "idf_weighted_scores", "l1_loss"]

_SPARSE_LAYOUTS = (torch.sparse_coo, torch.sparse_csr)


def _check_weights(name: str, t: object, *, allow_sparse: bool) -> Tensor:
    """Validate a 2-D floating-point tensor with at least one row."""
    if not isinstance(t, Tensor):
        raise DTypeError(f"{name}: must be a torch.Tensor, got {type(t).__name__}")
    if t.layout != torch.strided and not (allow_sparse and t.layout in _SPARSE_LAYOUTS):
        kinds = "strided, sparse_coo or sparse_csr" if allow_sparse else "strided (dense)"
        raise DTypeError(f"{name}: unsupported layout {t.layout}; use {kinds}")
    if t.dim() != 2:
        raise ShapeMismatchError(f"{name}: must be 2-D (batch, vocab), got shape {tuple(t.shape)}")
    if not t.is_floating_point():
        raise DTypeError(f"{name}: must have a floating-point dtype, got {t.dtype}")
    if t.shape[0] == 0:
        raise ShapeMismatchError(f"{name}: must have at least one row, got shape {tuple(t.shape)}")
    return t


def _column_abs_sums(weights: Tensor) -> Tensor:
    """Dense ``(vocab,)`` tensor of ``Σ_i |w_ij|``, for dense, COO or CSR ``weights``."""
    if weights.layout == torch.strided:
        return weights.abs().sum(dim=0)
    coo = weights.to_sparse() if weights.layout == torch.sparse_csr else weights
    return torch.sparse.sum(coo.abs(), dim=0).to_dense()


def flops_loss(weights: Tensor) -> Tensor:
    r"""FLOPS regulariser of Paria et al. (2020) as used by SPLADE (Formal et al., 2021).

    .. math::

        \mathcal{L}_\mathrm{FLOPS}(W) = \sum_{j=1}^{V} \Bigl(\frac{1}{n} \sum_{i=1}^{n} |w_{ij}|\Bigr)^2

    It estimates the expected number of floating-point operations of a sparse dot product between two
    representations drawn from the batch, and so pushes the model to spread activations thinly over the vocabulary
    (penalising frequently-activated terms more than L1 does). Its gradient is
    :math:`\partial \mathcal{L} / \partial w_{ij} = \tfrac{2}{n} \bar a_j \operatorname{sign}(w_{ij})` with
    :math:`\bar a_j = \tfrac{1}{n}\sum_i |w_{ij}|`.

    Parameters
    ----------
    weights
        ``(n, V)`` floating-point tensor of term weights (one row per query or document); dense, or a torch sparse
        COO/CSR tensor (differentiable through its values).

    Returns
    -------
    Tensor
        0-d tensor of ``weights``'s dtype and device.

    Raises
    ------
    DTypeError
        ``weights`` is not a torch tensor, has an integer dtype or an unsupported layout.
    ShapeMismatchError
        ``weights`` is not 2-D or has no rows.
    """
    w = _check_weights("weights", weights, allow_sparse=True)
    mean_abs = _column_abs_sums(w) / w.shape[0]
    return (mean_abs * mean_abs).sum()


def l1_loss(weights: Tensor) -> Tensor:
    r"""L1 sparsity penalty: the mean over rows of each row's L1 norm.

    .. math::

        \mathcal{L}_{\ell_1}(W) = \frac{1}{n} \sum_{i=1}^{n} \sum_{j=1}^{V} |w_{ij}|

    Parameters
    ----------
    weights
        ``(n, V)`` floating-point tensor of term weights; dense, or a torch sparse COO/CSR tensor.

    Returns
    -------
    Tensor
        0-d tensor of ``weights``'s dtype and device.

    Raises
    ------
    DTypeError
        ``weights`` is not a torch tensor, has an integer dtype or an unsupported layout.
    ShapeMismatchError
        ``weights`` is not 2-D or has no rows.
    """
    w = _check_weights("weights", weights, allow_sparse=True)
    return _column_abs_sums(w).sum() / w.shape[0]


@dataclass(frozen=True)
class RegularizationWarmup:
    r"""Quadratic warm-up of a regularisation weight, as in SPLADE (Formal et al., 2021).

    .. math::

        \lambda(t) = \lambda_\mathrm{max} \cdot \min\bigl(1, t / T\bigr)^2

    for training step :math:`t \ge 0` and :math:`T` warm-up steps; with ``warmup_steps=0`` there is no warm-up and
    :math:`\lambda(t) = \lambda_\mathrm{max}` for every step. Typical use::

        reg = RegularizationWarmup(lambda_max=5e-4, warmup_steps=50_000)
        loss = ranking_loss + reg(step) * flops_loss(doc_weights)

    Parameters
    ----------
    lambda_max
        Final weight, finite and ``>= 0``.
    warmup_steps
        Number of steps :math:`T` over which the weight grows quadratically from 0; an int ``>= 0``.

    Raises
    ------
    InvalidArgumentError
        ``lambda_max`` is negative or not finite, or ``warmup_steps`` is not a non-negative int.
    """

    lambda_max: float
    warmup_steps: int

    def __post_init__(self) -> None:
        object.__setattr__(self, "lambda_max", nonnegative_float(self.lambda_max, "lambda_max"))
        object.__setattr__(self, "warmup_steps", nonnegative_int(self.warmup_steps, "warmup_steps"))

    def __call__(self, step: int) -> float:
        """Weight at training step ``step``.

        Parameters
        ----------
        step
            Training step, an int ``>= 0``.

        Returns
        -------
        float
            ``lambda_max * min(1, step / warmup_steps) ** 2`` (``lambda_max`` when ``warmup_steps == 0``).

        Raises
        ------
        InvalidArgumentError
            ``step`` is not a non-negative int.
        """
        t = nonnegative_int(step, "step")
        if self.warmup_steps == 0 or t >= self.warmup_steps:
            return self.lambda_max
        frac = t / self.warmup_steps
        return self.lambda_max * frac * frac


def idf_weighted_scores(query: Tensor, doc_weights: Tensor, idf: Tensor) -> Tensor:
    r"""Inference-free relevance scores: IDF-weighted query bags against learned document weights.

    In inference-free ("doc-only") learned sparse retrieval, as in OpenSearch's neural-sparse models, queries are
    not encoded by a network: a query is the set of its token ids, each weighted by a fixed IDF table, and only the
    document encoder is trained. With :math:`Q \in \{0, 1\}^{B_q \times V}`, :math:`D \in \mathbb{R}^{B_d \times V}`
    and :math:`\mathrm{idf} \in \mathbb{R}^V`:

    .. math::

        S = (Q \odot \mathrm{idf})\, D^\top, \qquad
        S_{ab} = \sum_{j=1}^{V} Q_{aj}\, \mathrm{idf}_j\, D_{bj}

    Differentiable with respect to ``doc_weights`` and ``idf``.

    Parameters
    ----------
    query
        ``(Bq, V)`` binary bag-of-token-ids tensor (bool, or numbers that are all 0 or 1); dense or torch sparse
        COO/CSR (densified).
    doc_weights
        ``(Bd, V)`` dense floating-point document term weights.
    idf
        ``(V,)`` finite floating-point IDF table.

    Returns
    -------
    Tensor
        ``(Bq, Bd)`` scores in ``doc_weights``'s dtype.

    Raises
    ------
    DTypeError
        An argument is not a torch tensor, ``doc_weights`` or ``idf`` is not floating-point, or a layout is
        unsupported.
    ShapeMismatchError
        ``query`` or ``doc_weights`` is not 2-D, ``idf`` is not 1-D, or their vocabulary sizes differ.
    InvalidArgumentError
        ``query`` has a value other than 0 or 1.
    NonFiniteError
        ``idf`` has a NaN or infinite entry.
    """
    if not isinstance(query, Tensor):
        raise DTypeError(f"query: must be a torch.Tensor, got {type(query).__name__}")
    if query.layout in _SPARSE_LAYOUTS:
        query = query.to_dense()
    elif query.layout != torch.strided:
        raise DTypeError(f"query: unsupported layout {query.layout}; use strided, sparse_coo or sparse_csr")
    if query.dim() != 2:
        raise ShapeMismatchError(f"query: must be 2-D (Bq, V), got shape {tuple(query.shape)}")
    if query.is_complex():
        raise DTypeError(f"query: must have real values, got {query.dtype}")
    if not isinstance(doc_weights, Tensor):
        raise DTypeError(f"doc_weights: must be a torch.Tensor, got {type(doc_weights).__name__}")
    if doc_weights.layout != torch.strided:
        raise DTypeError(f"doc_weights: unsupported layout {doc_weights.layout}; use a dense (strided) tensor")
    if doc_weights.dim() != 2:
        raise ShapeMismatchError(f"doc_weights: must be 2-D (Bd, V), got shape {tuple(doc_weights.shape)}")
    if not doc_weights.is_floating_point():
        raise DTypeError(f"doc_weights: must have a floating-point dtype, got {doc_weights.dtype}")
    if not isinstance(idf, Tensor):
        raise DTypeError(f"idf: must be a torch.Tensor, got {type(idf).__name__}")
    if idf.dim() != 1:
        raise ShapeMismatchError(f"idf: must be 1-D (V,), got shape {tuple(idf.shape)}")
    if not idf.is_floating_point():
        raise DTypeError(f"idf: must have a floating-point dtype, got {idf.dtype}")
    v = doc_weights.shape[1]
    if query.shape[1] != v or idf.shape[0] != v:
        raise ShapeMismatchError(
            f"query, doc_weights, idf: vocabulary sizes differ: query has {query.shape[1]} columns, "
            f"doc_weights has {v}, idf has {idf.shape[0]} entries"
        )
    bad = ~torch.isfinite(idf.detach())
    if bool(bad.any()):
        pos = int(bad.nonzero()[0, 0])
        raise NonFiniteError(f"idf[{pos}] = {float(idf[pos])!r} is not finite")
    if query.dtype != torch.bool:
        q = query.detach()
        non_binary = (q != 0) & (q != 1)
        if bool(non_binary.any()):
            r, c = (int(x) for x in non_binary.nonzero()[0])
            raise InvalidArgumentError(f"query[{r}, {c}] = {q[r, c].item()!r}: query must be a 0/1 bag of token ids")
    q_weighted = query.to(doc_weights.dtype) * idf.to(doc_weights.dtype)
    return q_weighted @ doc_weights.transpose(0, 1)


def contrastive_loss(query_weights: Tensor, doc_weights: Tensor, *, temperature: float = 1.0) -> Tensor:
    r"""In-batch-negatives cross-entropy over dot-product scores (the ranking loss of SPLADE training).

    Query :math:`i` has document :math:`i` as its positive; every other document in the batch (including extra
    hard negatives appended after the first :math:`B_q` rows of ``doc_weights``) is a negative:

    .. math::

        \mathcal{L} = -\frac{1}{B_q} \sum_{i=1}^{B_q}
        \log \frac{\exp(s_{ii} / \tau)}{\sum_{k=1}^{B_d} \exp(s_{ik} / \tau)}, \qquad S = Q D^\top

    Parameters
    ----------
    query_weights
        ``(Bq, V)`` dense floating-point query term weights.
    doc_weights
        ``(Bd, V)`` dense floating-point document term weights, ``Bd >= Bq``; row ``i < Bq`` is query ``i``'s positive.
    temperature
        Softmax temperature :math:`\tau`, finite and ``> 0``.

    Returns
    -------
    Tensor
        0-d tensor.

    Raises
    ------
    DTypeError
        An argument is not a dense floating-point torch tensor.
    ShapeMismatchError
        A tensor is not 2-D or has no rows, vocabulary sizes differ, or ``Bd < Bq``.
    InvalidArgumentError
        ``temperature`` is not a finite number ``> 0``.
    """
    q = _check_weights("query_weights", query_weights, allow_sparse=False)
    d = _check_weights("doc_weights", doc_weights, allow_sparse=False)
    if q.shape[1] != d.shape[1]:
        raise ShapeMismatchError(
            f"query_weights, doc_weights: vocabulary sizes differ ({q.shape[1]} vs {d.shape[1]} columns)"
        )
    if d.shape[0] < q.shape[0]:
        raise ShapeMismatchError(
            f"doc_weights: needs at least one row per query (a positive each), got {d.shape[0]} rows "
            f"for {q.shape[0]} queries"
        )
    scores = (q @ d.transpose(0, 1)) / positive_float(temperature, "temperature")
    targets = torch.arange(q.shape[0], device=scores.device)
    return F.cross_entropy(scores, targets)
