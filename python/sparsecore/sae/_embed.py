"""SAE embeddings of texts: max-pooled latents as sparse vectors, their dataset-level differences, top documents.

:func:`embed` turns every text into one sparse vector of dimension ``d_sae``: the SAE's codes at the hooked
module, max-pooled over the text's real tokens (all its windows; BOS excluded by default), zeros dropped. The
result is a :class:`~sparsecore.sparse.SparseBatch`, ready for :meth:`sparsecore.InvertedIndex.build` (a query
holding latent ``j`` retrieves the texts where ``j`` fires most).

:func:`dataset_diff` compares two sets of embeddings by how often each latent fires (fraction of rows holding
it): a two-sided two-proportion z-test, or Fisher's exact test where an expected cell count is below 5, then the
Benjamini-Hochberg correction over the latents that fired in either set. No scipy: the normal tail is
``erfc(|z| / √2)`` and Fisher's hypergeometric probabilities come from ``math.lgamma``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from torch import Tensor, nn

from sparsecore._validate import check_bool, check_float, check_int, check_texts, positive_int
from sparsecore.exceptions import InvalidArgumentError, ShapeMismatchError
from sparsecore.llm.hooks import capture, resolve_module
from sparsecore.sae._data import pad_windows, tokenize_windows
from sparsecore.sae._eval import check_sae
from sparsecore.sparse import SparseBatch

__all__ = ["dataset_diff", "embed", "fisher_exact", "top_documents", "two_proportion_p"]

# Cochran's rule: the normal approximation is used when every expected cell count is at least 5.
_MIN_EXPECTED = 5.0


def embed(
    sae: nn.Module,
    model: nn.Module,
    tokenizer: Any,
    texts: Sequence[str],
    *,
    hook: str,
    context_size: int = 128,
    batch_size: int = 8,
    drop_bos: bool = True,
) -> SparseBatch:
    """One sparse vector per text: the SAE's latents at ``hook``, max-pooled over the text's tokens.

    Parameters
    ----------
    sae
        An SAE module (``encode(x) -> codes``, attributes ``d_in``, ``d_sae``).
    model, tokenizer
        The language model and its tokenizer.
    texts
        The texts; a text longer than ``context_size`` tokens is read as several windows, pooled together.
    hook
        The module the SAE reads (see :func:`sparsecore.llm.hooks.resolve_module`).
    context_size
        Tokens per window (>= 2).
    batch_size
        Windows per forward pass.
    drop_bos
        Leave each window's first position (BOS, or the first token where the tokenizer adds none) out of the
        pooling: the model treats it as an attention sink, so its latents say little about the text.

    Returns
    -------
    SparseBatch
        ``len(texts)`` rows of dimension ``d_sae``; a text without tokens is an empty row.

    Raises
    ------
    DTypeError
        ``sae`` is not an SAE module, or ``texts`` not a sequence of str.
    InvalidArgumentError
        Unknown ``hook`` or an argument outside its domain.
    """
    check_sae(sae)
    docs = check_texts(texts)
    resolve_module(model, hook)
    size = check_int(context_size, "context_size", low=2)
    per_pass = positive_int(batch_size, "batch_size")
    skip_bos = check_bool(drop_bos, "drop_bos")
    d_sae = int(sae.d_sae)  # type: ignore[arg-type]
    windows = tokenize_windows(tokenizer, docs, size)
    pad = getattr(tokenizer, "pad_token_id", None)
    pad_id = int(pad) if pad is not None else 0
    device = next(model.parameters()).device
    sae_param = next(sae.parameters(), None)
    sae_device, sae_dtype = (
        (sae_param.device, sae_param.dtype) if sae_param is not None else (torch.device("cpu"), torch.float32)
    )
    rows_indices: list[NDArray[np.int64]] = []
    rows_values: list[NDArray[np.float32]] = []
    current: tuple[int, Tensor] | None = None  # (text, running maximum): one text is pooled at a time
    done = 0

    def flush(upto: int, last: tuple[int, Tensor] | None) -> int:
        """Emit rows ``done .. upto - 1`` (empty unless ``last`` is one of them)."""
        for t in range(done, upto):
            if last is not None and last[0] == t:
                vec = last[1]
                nz = torch.nonzero(vec).reshape(-1)
                rows_indices.append(nz.numpy().astype(np.int64))
                rows_values.append(vec[nz].numpy().astype(np.float32))
            else:
                rows_indices.append(np.zeros(0, np.int64))
                rows_values.append(np.zeros(0, np.float32))
        return upto

    for start in range(0, len(windows), per_pass):
        group = windows[start : start + per_pass]
        ids, attn = pad_windows([w for _, w in group], pad_id)
        mask = attn != 0
        if skip_bos:  # BOS, or the first token where the tokenizer adds none (an attention sink)
            mask[:, 0] = False
        with torch.no_grad(), capture(model, hook) as cap:
            cap(input_ids=ids.to(device), attention_mask=attn.to(device))
            hidden = cap[hook]
        with torch.no_grad():
            encode: Any = sae.encode
            codes = encode(hidden.to(sae_device, sae_dtype)).float().cpu()
        codes = codes.masked_fill(~mask[..., None], -math.inf)
        window_max = codes.amax(dim=1)
        has_tokens = mask.any(dim=1)
        for i, (t, _) in enumerate(group):
            if not bool(has_tokens[i]):
                continue
            vec = window_max[i]
            if current is not None and current[0] == t:
                current = (t, torch.maximum(current[1], vec))
                continue
            if current is not None:
                done = flush(current[0] + 1, current)
            current = (t, vec)
    if current is not None:
        done = flush(current[0] + 1, current)
    flush(len(docs), None)
    lengths = np.array([len(r) for r in rows_indices], dtype=np.int64)
    indptr = np.zeros(len(docs) + 1, dtype=np.int64)
    np.cumsum(lengths, out=indptr[1:])
    indices = np.concatenate(rows_indices) if rows_indices else np.zeros(0, np.int64)
    values = np.concatenate(rows_values) if rows_values else np.zeros(0, np.float32)
    return SparseBatch.from_arrays(indptr, indices, values, d_sae)


def _frequencies(batch: SparseBatch) -> NDArray[np.int64]:
    """Rows holding each column (stored zeros excluded)."""
    return np.bincount(batch.indices[batch.data != 0].astype(np.int64), minlength=batch.dim).astype(np.int64)


def two_proportion_p(c_a: int, n_a: int, c_b: int, n_b: int) -> float:
    """Two-sided p-value of the pooled two-proportion z-test of ``c_a / n_a`` against ``c_b / n_b``."""
    pooled = (c_a + c_b) / (n_a + n_b)
    var = pooled * (1.0 - pooled) * (1.0 / n_a + 1.0 / n_b)
    if var <= 0.0:
        return 1.0
    z = (c_a / n_a - c_b / n_b) / math.sqrt(var)
    return math.erfc(abs(z) / math.sqrt(2.0))


def fisher_exact(c_a: int, n_a: int, c_b: int, n_b: int) -> float:
    """Two-sided p-value of Fisher's exact test on the table ``[[c_a, n_a - c_a], [c_b, n_b - c_b]]``.

    The p-value sums the hypergeometric probabilities of every table with the same margins that is no more
    likely than the observed one (with a relative tolerance of 1e-7, as scipy does).
    """
    k = c_a + c_b
    n = n_a + n_b
    if k > n - k:  # count the rarer outcome: fewer tables to enumerate
        c_a, c_b, k = n_a - c_a, n_b - c_b, n - k
    lo, hi = max(0, k - n_b), min(k, n_a)
    x = np.arange(lo, hi + 1, dtype=np.float64)
    lg = np.vectorize(math.lgamma, otypes=[np.float64])
    logp = (lg(k + 1) - lg(x + 1) - lg(k - x + 1) + lg(n - k + 1) - lg(n_a - x + 1) - lg(n - k - n_a + x + 1)) - (
        math.lgamma(n + 1) - math.lgamma(n_a + 1) - math.lgamma(n_b + 1)
    )
    observed = logp[c_a - lo]
    p = float(np.exp(logp[logp <= observed + 1e-7]).sum())
    return min(1.0, p)


def _benjamini_hochberg(p: NDArray[np.float64]) -> NDArray[np.float64]:
    """BH-adjusted p-values (q-values), same order as ``p``."""
    m = p.size
    if m == 0:
        return np.zeros(0, dtype=np.float64)
    order = np.argsort(p, kind="stable")
    scaled = p[order] * m / np.arange(1, m + 1)
    q = np.minimum.accumulate(scaled[::-1])[::-1]
    out = np.empty(m, dtype=np.float64)
    out[order] = np.minimum(q, 1.0)
    return out


def dataset_diff(
    a: SparseBatch, b: SparseBatch, *, top: int = 20, alpha: float = 0.05
) -> list[tuple[int, float, float, float]]:
    """Latents whose firing frequency differs between two sets of embeddings.

    For every latent that fired in ``a`` or ``b``, the fractions of rows holding it are compared with a two-sided
    two-proportion z-test, or Fisher's exact test when an expected cell count is below 5; p-values are adjusted
    with Benjamini-Hochberg over those latents (false discovery rate ``alpha``).

    Parameters
    ----------
    a, b
        Embeddings of two datasets (:func:`embed`), same ``dim``, at least one row each.
    top
        Return at most this many latents.
    alpha
        False discovery rate, in (0, 1).

    Returns
    -------
    list of (latent, freq_a, freq_b, p_value)
        The significant latents, smallest adjusted p-value first (ties: larger frequency difference first);
        ``p_value`` is BH-adjusted.

    Raises
    ------
    ShapeMismatchError
        ``a`` and ``b`` differ in ``dim``, or one has no rows.
    InvalidArgumentError
        ``top`` or ``alpha`` out of range.
    """
    n_top = positive_int(top, "top")
    level = check_float(alpha, "alpha", low=0.0, high=1.0, low_open=True, high_open=True)
    if not isinstance(a, SparseBatch) or not isinstance(b, SparseBatch):
        raise InvalidArgumentError("a, b: must be SparseBatch objects")
    if a.dim != b.dim:
        raise ShapeMismatchError(f"a, b: must have the same dim, got {a.dim} and {b.dim}")
    if a.n_rows == 0 or b.n_rows == 0:
        raise ShapeMismatchError(f"a, b: need at least one row each, got {a.n_rows} and {b.n_rows}")
    n_a, n_b = a.n_rows, b.n_rows
    ca, cb = _frequencies(a), _frequencies(b)
    tested = np.flatnonzero((ca + cb) > 0)
    pvals = np.empty(tested.size, dtype=np.float64)
    n = n_a + n_b
    for i, j in enumerate(tested.tolist()):
        k = int(ca[j] + cb[j])
        expected = min(n_a, n_b) * min(k, n - k) / n
        test = fisher_exact if expected < _MIN_EXPECTED else two_proportion_p
        pvals[i] = test(int(ca[j]), n_a, int(cb[j]), n_b)
    q = _benjamini_hochberg(pvals)
    fa, fb = ca / n_a, cb / n_b
    hits = [(int(j), float(fa[j]), float(fb[j]), float(q[i])) for i, j in enumerate(tested.tolist()) if q[i] <= level]
    hits.sort(key=lambda h: (h[3], -abs(h[1] - h[2]), h[0]))
    return hits[:n_top]


def top_documents(batch: SparseBatch, latent: int, n: int = 10) -> tuple[NDArray[np.int64], NDArray[np.float32]]:
    """The rows where ``latent`` is largest, and its values there (largest first; ties by row).

    Parameters
    ----------
    batch
        Embeddings (:func:`embed`).
    latent
        A column in ``[0, dim)``.
    n
        At most this many rows (only rows holding the latent are returned).

    Returns
    -------
    (row indices int64, values float32)

    Raises
    ------
    InvalidArgumentError
        ``latent`` out of range or ``n`` not positive.
    """
    if not isinstance(batch, SparseBatch):
        raise InvalidArgumentError(f"batch: must be a SparseBatch, got {type(batch).__name__}")
    j = check_int(latent, "latent", low=0, high=batch.dim - 1)
    k = positive_int(n, "n")
    hit = batch.indices == j
    rows = np.repeat(np.arange(batch.n_rows, dtype=np.int64), batch.row_nnz)[hit]
    vals = batch.data[hit]
    order = np.lexsort((rows, -vals.astype(np.float64)))[:k]
    return rows[order], vals[order].astype(np.float32)
