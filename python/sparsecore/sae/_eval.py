"""Evaluation of a sparse autoencoder on activations and in the live model.

:func:`evaluate` reports, for any SAE module (``forward(x) -> (reconstruction, codes)``, attributes ``d_in`` and
``d_sae``):

Reconstruction
    ``fvu`` (fraction of variance unexplained, ``Σ‖x - x̂‖² / Σ‖x - x̄‖²`` over all tokens), ``explained_variance``
    (``1 - fvu``) and ``mse`` (mean squared error per entry).
Sparsity
    ``l0`` (mean number of nonzero latents per token), ``dead_fraction`` (latents that never fired),
    ``dense_fraction`` (latents firing on more than :data:`DENSE_FREQUENCY` of the tokens), ``latent_frequency``
    (per latent) and ``frequency_histogram`` (counts of ``log10`` firing frequencies, optionally drawn to a PNG).
Downstream loss
    The model is run on texts three times: clean, with the SAE reconstruction spliced in at the hook, and with the
    hook's output zeroed (both at the positions the SAE is trained on: real tokens, without BOS when the source
    drops it). ``ce_clean``, ``ce_sae``, ``ce_zero`` are mean next-token cross-entropies, ``ce_recovered =
    (ce_zero - ce_sae) / (ce_zero - ce_clean)`` (1: as good as the model, 0: as bad as zero-ablation) and
    ``kl_sae`` / ``kl_zero`` the mean ``KL(p_clean ‖ p_spliced)`` per scored position.
Dark matter (Engels et al., "Decomposing the Dark Matter of Sparse Autoencoders", 2024)
    A linear map from ``x`` to the SAE error ``x - x̂`` is fitted by ridge least squares on half of the tokens and
    evaluated on the other half: ``dark_matter_linear_fraction`` is the fraction of the error's variance it
    predicts, ``dark_matter_nonlinear_fraction`` the rest ("nonlinear error"), and ``error_norm_r2`` the R² of
    predicting the per-token norm ``‖x - x̂‖`` linearly from ``x``.
"""

from __future__ import annotations

import importlib.util
import io
import math
import os
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812
from torch import Tensor, nn

from sparsecore._io import atomic_write_bytes
from sparsecore._validate import check_texts, nonnegative_float, optional_positive_int, positive_int
from sparsecore.exceptions import DTypeError, InvalidArgumentError, ShapeMismatchError
from sparsecore.llm.hooks import edit
from sparsecore.sae._data import ActivationSource, pad_windows, tokenize_windows

__all__ = ["DARK_MATTER_MAX_TOKENS", "DARK_MATTER_RIDGE", "DENSE_FREQUENCY", "dark_matter", "evaluate"]

#: A latent firing on more than this fraction of tokens counts as dense.
DENSE_FREQUENCY = 0.1
#: Ridge of the dark-matter fits, relative to the mean eigenvalue of ``XᵀX`` (small: only guards ill-conditioning).
DARK_MATTER_RIDGE = 1e-6
#: Tokens kept for the dark-matter fits (two halves; 16k rows of d_in = 4096 in float32 are 256 MiB for x + error).
DARK_MATTER_MAX_TOKENS = 16384
# Texts of the source scored for the downstream loss when ``texts`` is not given (three forward passes each).
_DEFAULT_EVAL_TEXTS = 128
_HISTOGRAM_BINS = 50


def check_sae(sae: object) -> nn.Module:
    """``sae`` if it is a torch module with ``encode``, ``decode``, ``d_in`` and ``d_sae``.

    Raises
    ------
    DTypeError
        Otherwise.
    """
    missing = [a for a in ("encode", "decode", "d_in", "d_sae") if not hasattr(sae, a)]
    if not isinstance(sae, nn.Module) or missing:
        raise DTypeError(
            f"sae: must be a torch.nn.Module with encode, decode, d_in and d_sae, got {type(sae).__name__}"
            + (f" (missing {', '.join(missing)})" if missing else "")
        )
    return sae


def _param_of(module: nn.Module) -> tuple[torch.device, torch.dtype]:
    p = next(module.parameters(), None)
    return (p.device, p.dtype) if p is not None else (torch.device("cpu"), torch.float32)


def _r2(target: Tensor, pred: Tensor) -> float | None:
    """``1 - Σ(target - pred)² / Σ(target - mean)²`` over all entries (None for a constant target)."""
    total = float(((target - target.mean(dim=0)) ** 2).sum())
    if total <= 0.0:
        return None
    return 1.0 - float(((target - pred) ** 2).sum()) / total


def dark_matter(x: Tensor, error: Tensor, *, ridge: float = DARK_MATTER_RIDGE) -> dict[str, float | None]:
    """How much of an SAE's error is linearly predictable from its input (Engels et al. 2024).

    Even rows fit, odd rows evaluate. Both fits are ridge least squares with an intercept in float64; the ridge is
    ``ridge`` times the mean diagonal of ``XᵀX`` (the intercept is not penalised).

    Parameters
    ----------
    x
        Inputs ``(n, d_in)``.
    error
        SAE errors ``x - x̂``, ``(n, d_in)`` (any ``(n, m)`` target works).
    ridge
        Relative ridge, >= 0.

    Returns
    -------
    dict
        ``linear_fraction`` (held-out R² of predicting ``error`` from ``x``: the fraction of the error's variance
        that is linear in ``x``), ``nonlinear_fraction`` (``1 - linear_fraction``) and ``norm_r2`` (held-out R² of
        predicting ``‖error‖`` per row). None where the fit half has no more rows than ``d_in + 1`` or the
        target is constant.

    Raises
    ------
    ShapeMismatchError
        ``x`` and ``error`` are not 2-D with the same number of rows.
    """
    lam = nonnegative_float(ridge, "ridge")
    if x.dim() != 2 or error.dim() != 2 or x.shape[0] != error.shape[0]:
        raise ShapeMismatchError(
            f"x, error: must be 2-D with the same number of rows, got {tuple(x.shape)} and {tuple(error.shape)}"
        )
    out: dict[str, float | None] = {"linear_fraction": None, "nonlinear_fraction": None, "norm_r2": None}
    xa = torch.cat([x.double(), torch.ones(x.shape[0], 1, dtype=torch.float64, device=x.device)], dim=1)
    e = error.double()
    train, test = slice(0, None, 2), slice(1, None, 2)
    d = x.shape[1]
    if xa[train].shape[0] <= d + 1 or xa[test].shape[0] < 2:
        return out
    gram = xa[train].T @ xa[train]
    scale = float(gram.diagonal()[:d].mean()) if d else 0.0
    gram[:d, :d] += lam * max(scale, 1e-30) * torch.eye(d, dtype=torch.float64, device=x.device)
    norms = e.norm(dim=1, keepdim=True)
    coef = torch.linalg.solve(gram, xa[train].T @ torch.cat([e[train], norms[train]], dim=1))
    pred = xa[test] @ coef
    linear = _r2(e[test], pred[:, :-1])
    out["linear_fraction"] = linear
    out["nonlinear_fraction"] = None if linear is None else 1.0 - linear
    out["norm_r2"] = _r2(norms[test], pred[:, -1:])
    return out


def _histogram(freq: np.ndarray[Any, Any]) -> dict[str, list[float] | list[int]]:
    """Counts of ``log10`` firing frequencies of the latents that fired (dead latents are not in it)."""
    alive = freq[freq > 0]
    if alive.size == 0:
        return {"bin_edges": [], "counts": []}
    logf = np.log10(alive)
    lo = math.floor(float(logf.min()))
    counts, edges = np.histogram(logf, bins=_HISTOGRAM_BINS, range=(lo, 0.0))
    return {"bin_edges": edges.tolist(), "counts": counts.tolist()}


def _draw_histogram(path: str | os.PathLike[str], hist: dict[str, Any], dead: int) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 3.5))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    edges = np.asarray(hist["bin_edges"], dtype=np.float64)
    if edges.size:
        ax.stairs(hist["counts"], edges, fill=True)
    ax.set_xlabel("log10 firing frequency")
    ax.set_ylabel("latents")
    ax.set_title(f"latent frequencies ({dead} dead latents not shown)")
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    atomic_write_bytes(path, buf.getvalue())


def _scored_positions(mask: Tensor) -> Tensor:
    """``(batch, seq - 1)`` positions whose next token is real (predictions that are scored)."""
    return (mask[:, :-1] != 0) & (mask[:, 1:] != 0)


def _downstream(
    sae: nn.Module,
    model: nn.Module,
    tokenizer: Any,
    texts: Sequence[str],
    hook: str,
    context_size: int,
    batch_size: int,
    drop_bos: bool,
) -> dict[str, float | None]:
    windows = [w for _, w in tokenize_windows(tokenizer, texts, context_size)]
    windows = [w for w in windows if len(w) >= 2]
    if not windows:
        raise InvalidArgumentError("texts: no text has two tokens, so no next-token loss can be measured")
    device = next(model.parameters()).device
    sae_device, sae_dtype = _param_of(sae)
    pad = getattr(tokenizer, "pad_token_id", None)
    pad_id = int(pad) if pad is not None else 0
    sums = {"ce_clean": 0.0, "ce_sae": 0.0, "ce_zero": 0.0, "kl_sae": 0.0, "kl_zero": 0.0}
    n_scored = 0
    for start in range(0, len(windows), batch_size):
        group = windows[start : start + batch_size]
        ids, mask = pad_windows(group, pad_id)
        keep = mask != 0
        if drop_bos:  # as the source: BOS, or the first token where the tokenizer adds none
            keep[:, 0] = False
        ids, mask, keep = ids.to(device), mask.to(device), keep.to(device)
        scored = _scored_positions(mask)
        targets = ids[:, 1:][scored]

        def splice(h: Tensor, keep: Tensor = keep) -> Tensor:
            recon = sae(h.to(sae_device, sae_dtype))[0].to(h.device, h.dtype)
            return torch.where(keep[..., None], recon, h)

        def zero(h: Tensor, keep: Tensor = keep) -> Tensor:
            return torch.where(keep[..., None], torch.zeros_like(h), h)

        logps: dict[str, Tensor] = {}
        with torch.no_grad():
            for name, fn in (("clean", None), ("sae", splice), ("zero", zero)):
                if fn is None:
                    logits = model(input_ids=ids, attention_mask=mask, use_cache=False).logits
                else:
                    with edit(model, hook, fn):
                        logits = model(input_ids=ids, attention_mask=mask, use_cache=False).logits
                logps[name] = F.log_softmax(logits[:, :-1][scored].double(), dim=-1)
        for name, lp in logps.items():
            sums[f"ce_{name}"] += float(F.nll_loss(lp, targets, reduction="sum"))
        p_clean = logps["clean"].exp()
        for name in ("sae", "zero"):
            sums[f"kl_{name}"] += float((p_clean * (logps["clean"] - logps[name])).sum())
        n_scored += int(targets.numel())
    out: dict[str, float | None] = {k: v / n_scored for k, v in sums.items()}
    gap = sums["ce_zero"] - sums["ce_clean"]
    out["ce_recovered"] = (sums["ce_zero"] - sums["ce_sae"]) / gap if abs(gap) > 1e-12 * n_scored else None
    return out


def evaluate(
    sae: nn.Module,
    model: nn.Module | None,
    source: Iterable[Tensor],
    *,
    n_batches: int | None = None,
    tokenizer: Any = None,
    texts: Sequence[str] | None = None,
    hook: str | None = None,
    histogram_path: str | os.PathLike[str] | None = None,
    context_size: int | None = None,
    batch_size: int = 8,
) -> dict[str, Any]:
    """Reconstruction, sparsity, downstream-loss and dark-matter metrics of ``sae`` (see the module docs).

    Parameters
    ----------
    sae
        An SAE module: ``forward(x) -> (reconstruction, codes)``, attributes ``d_in``, ``d_sae``.
    model
        The language model, for the downstream loss; None to skip it.
    source
        Batches ``(n, d_in)`` of activations: an :class:`ActivationSource` or any iterable of tensors.
    n_batches
        Use at most this many batches (default: all).
    tokenizer, texts, hook
        For the downstream loss; each defaults to the source's (an :class:`ActivationSource` built on a model;
        its first 128 texts). Without texts or a model the downstream keys are None.
    histogram_path
        Also draw the frequency histogram to this PNG file (needs matplotlib).
    context_size
        Window length for the downstream loss (default: the source's, else 128).
    batch_size
        Windows per forward pass for the downstream loss.

    Returns
    -------
    dict
        ``n_tokens``, ``fvu``, ``explained_variance``, ``mse``, ``l0``, ``dead_fraction``, ``dense_fraction``,
        ``latent_frequency`` (float64 array, ``(d_sae,)``), ``frequency_histogram`` (``bin_edges``, ``counts``),
        ``ce_clean``, ``ce_sae``, ``ce_zero``, ``ce_recovered``, ``kl_sae``, ``kl_zero``,
        ``dark_matter_linear_fraction``, ``dark_matter_nonlinear_fraction``, ``error_norm_r2``.

    Raises
    ------
    DTypeError
        ``sae`` is not an SAE module, or a batch is not a tensor.
    ShapeMismatchError
        A batch is not ``(n, d_in)``.
    InvalidArgumentError
        The source yields no rows, ``histogram_path`` without matplotlib, a bad ``n_batches``, an unknown hook.
    """
    check_sae(sae)
    limit = optional_positive_int(n_batches, "n_batches")
    window_batch = positive_int(batch_size, "batch_size")
    if histogram_path is not None and importlib.util.find_spec("matplotlib") is None:
        raise InvalidArgumentError(
            "histogram_path: drawing the frequency histogram needs matplotlib, which is not installed "
            "(pip install matplotlib), or pass histogram_path=None"
        )
    device, dtype = _param_of(sae)
    d_in, d_sae = int(sae.d_in), int(sae.d_sae)  # type: ignore[arg-type]
    n = 0
    sum_x = torch.zeros(d_in, dtype=torch.float64, device=device)
    sum_sq = sse = l0_sum = 0.0
    counts = torch.zeros(d_sae, dtype=torch.int64, device=device)
    kept_x: list[Tensor] = []
    kept_err: list[Tensor] = []
    n_kept = 0
    with torch.no_grad():
        for i, batch in enumerate(source):
            if limit is not None and i >= limit:
                break
            if not isinstance(batch, Tensor):
                raise DTypeError(f"source: batches must be tensors, got {type(batch).__name__}")
            if batch.dim() != 2 or batch.shape[1] != d_in:
                raise ShapeMismatchError(f"source: batches must be (n, {d_in}), got shape {tuple(batch.shape)}")
            x = batch.to(device, dtype)
            recon, codes = sae(x)
            x64 = x.double()
            err = x64 - recon.double()
            n += x.shape[0]
            sum_x += x64.sum(dim=0)
            sum_sq += float((x64**2).sum())
            sse += float((err**2).sum())
            active = codes != 0
            counts += active.sum(dim=0)
            l0_sum += float(active.sum())
            if n_kept < DARK_MATTER_MAX_TOKENS:
                take = min(x.shape[0], DARK_MATTER_MAX_TOKENS - n_kept)
                kept_x.append(x[:take].float().cpu())
                kept_err.append(err[:take].float().cpu())
                n_kept += take
    if n == 0:
        raise InvalidArgumentError("source: yielded no activations")
    total = sum_sq - float((sum_x**2).sum()) / n
    fvu = sse / total if total > 0 else math.inf
    freq = (counts.double() / n).cpu().numpy()
    hist = _histogram(freq)
    n_dead = int((counts == 0).sum())
    if histogram_path is not None:
        _draw_histogram(histogram_path, hist, n_dead)
    dm = dark_matter(torch.cat(kept_x), torch.cat(kept_err))
    result: dict[str, Any] = {
        "n_tokens": n,
        "fvu": fvu,
        "explained_variance": 1.0 - fvu,
        "mse": sse / (n * d_in),
        "l0": l0_sum / n,
        "dead_fraction": n_dead / d_sae,
        "dense_fraction": float((freq > DENSE_FREQUENCY).mean()),
        "latent_frequency": freq,
        "frequency_histogram": hist,
        "dark_matter_linear_fraction": dm["linear_fraction"],
        "dark_matter_nonlinear_fraction": dm["nonlinear_fraction"],
        "error_norm_r2": dm["norm_r2"],
    }
    result.update(dict.fromkeys(("ce_clean", "ce_sae", "ce_zero", "ce_recovered", "kl_sae", "kl_zero")))
    src = source if isinstance(source, ActivationSource) else None
    tok = tokenizer if tokenizer is not None else (src.tokenizer if src is not None else None)
    if texts is not None:
        eval_texts: list[str] | None = check_texts(texts)
    else:
        eval_texts = src.texts[:_DEFAULT_EVAL_TEXTS] if src is not None and src.texts else None
    where = hook if hook is not None else (src.hook if src is not None and src.hook else None)
    if model is not None and tok is not None and eval_texts and where is not None:
        size = context_size if context_size is not None else (src.context_size if src and src.context_size else 128)
        drop_bos = src.drop_bos if src is not None and src.model is not None else True
        result.update(_downstream(sae, model, tok, eval_texts, where, size, window_batch, drop_bos))
    return result
