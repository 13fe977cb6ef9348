"""Training of sparse autoencoders on a stream of activations.

The recipe follows Gao et al. (2024), "Scaling and evaluating sparse autoencoders": Adam (eps 6.25e-10) with a
linear warm-up and a linear decay to zero, the loss ``FVU + sparsity penalty + AuxK``, a unit-norm decoder whose
gradient parallel to each atom is removed before every step, ``b_dec`` initialised to the geometric median of the
first batch, and inputs scaled so their mean norm is ``sqrt(d_in)``.

Checkpoints are one container file (:mod:`sparsecore._container`, kind ``"sae-checkpoint"``; atomic, checksummed)
holding the model's state, Adam's moments, the step, the token count, the dead-latent counters and the stats
history, so that ``resume=True`` continues exactly where a run stopped.
"""

from __future__ import annotations

import math
import os
import sys
import time
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from torch import Tensor

from sparsecore import _core
from sparsecore._container import read_container, write_container
from sparsecore._progress import want_progress
from sparsecore._validate import check_bool, check_choice, check_float, check_seed, optional_positive_int, positive_int
from sparsecore.exceptions import IndexFormatError, InvalidArgumentError, TruncationWarning
from sparsecore.sae._models import BatchTopKSAE, SparseAutoencoder, TopKSAE

__all__ = ["CHECKPOINT_NAME", "train"]

#: File name of the checkpoint inside ``checkpoint_dir``.
CHECKPOINT_NAME = "checkpoint.sparsecore"
_KIND = "sae-checkpoint"
_VERSION = 1
# Adam's epsilon in Gao et al. 2024 (their activations are scaled like ours, so gradients are of similar size).
_ADAM_EPS = 6.25e-10
# Weiszfeld iterations for the geometric median of the first batch; it converges to ~1e-3 relative in a handful.
_WEISZFELD_STEPS = 8
_INIT_B_DEC = ("geometric_median", "mean", "zeros")


def default_lr(d_sae: int) -> float:
    """The TopK paper's learning-rate scaling ``2e-4 / sqrt(d_sae / 2**14)``."""
    return 2e-4 / math.sqrt(d_sae / 2**14)


def geometric_median(x: Tensor, steps: int = _WEISZFELD_STEPS) -> Tensor:
    """Geometric median of the rows of ``x`` by Weiszfeld's iterations, started at the mean (float32)."""
    x = x.float()
    y = x.mean(dim=0)
    for _ in range(steps):
        w = 1.0 / (x - y).norm(dim=1).clamp_min(1e-8)
        y = (w[:, None] * x).sum(dim=0) / w.sum()
    return y


def _token_batches(source: Iterable[Tensor], d_in: int, batch_size: int, skip: int) -> Iterator[Tensor]:
    """Re-chunk ``source`` into ``(batch_size, d_in)`` batches (the last may be shorter), skipping ``skip`` tokens."""
    pending: list[Tensor] = []
    have = 0
    for chunk in source:
        if not isinstance(chunk, Tensor):
            raise InvalidArgumentError(f"source: must yield torch.Tensor batches, got {type(chunk).__name__}")
        # a wrong width or a 0-d tensor is left to the model's check, which names x
        rows = chunk.reshape(-1, chunk.shape[-1]) if chunk.dim() >= 1 else chunk.reshape(1, 1)
        if skip:
            drop = min(skip, rows.shape[0])
            rows, skip = rows[drop:], skip - drop
        if rows.shape[0] == 0:
            continue
        pending.append(rows)
        have += rows.shape[0]
        while have >= batch_size:
            flat = torch.cat(pending) if len(pending) > 1 else pending[0]
            yield flat[:batch_size]
            rest = flat[batch_size:]
            pending, have = ([rest], rest.shape[0]) if rest.shape[0] else ([], 0)
    if have:
        yield torch.cat(pending)


def _passes(source: Iterable[Tensor]) -> Iterator[Tensor]:
    """``source`` pass after pass while it can be iterated anew; a one-shot iterator is read once.

    A sequence or an ``ActivationSource`` starts over at each pass; a pass that yields nothing ends the stream.
    """
    while True:
        it = iter(source)
        empty = True
        for chunk in it:
            empty = False
            yield chunk
        if empty or it is source:
            return


def _lr_at(step: int, total: int, peak: float, warmup: int, decay: int) -> float:
    factor = 1.0
    if warmup > 0 and step < warmup:
        factor = (step + 1) / warmup
    if decay > 0 and step >= total - decay:
        factor = min(factor, (total - step) / decay)
    return peak * factor


# -- checkpoints -------------------------------------------------------------------------------------------------


def _to_numpy(t: Tensor) -> tuple[NDArray[Any], str]:
    t = t.detach().cpu().contiguous()
    if t.dtype == torch.bfloat16:
        return t.view(torch.int16).numpy(), "bfloat16"
    return t.numpy(), str(t.dtype).removeprefix("torch.")


def _from_numpy(a: NDArray[Any], dtype: str, path: Path) -> Tensor:
    t = torch.from_numpy(np.array(a))
    if dtype == "bfloat16":
        if t.dtype != torch.int16:
            raise IndexFormatError(f"{path}: a bfloat16 array must be stored as int16 bits")
        return t.view(torch.bfloat16)
    if str(t.dtype).removeprefix("torch.") != dtype:
        raise IndexFormatError(f"{path}: array stored as {t.dtype}, recorded as {dtype}")
    return t


def _write_checkpoint(
    path: Path,
    sae: SparseAutoencoder,
    opt: torch.optim.Adam,
    since_fired: Tensor,
    meta: dict[str, Any],
) -> None:
    arrays: dict[str, NDArray[Any]] = {}
    dtypes: dict[str, str] = {}
    for name, t in sae.state_dict().items():
        arrays[f"model/{name}"], dtypes[f"model/{name}"] = _to_numpy(t)
    names = [n for n, _ in sae.named_parameters()]
    state = opt.state_dict()["state"]
    for i, name in enumerate(names):
        for key, t in state.get(i, {}).items():
            arrays[f"adam/{name}/{key}"], dtypes[f"adam/{name}/{key}"] = _to_numpy(t)
    arrays["since_fired"], dtypes["since_fired"] = _to_numpy(since_fired)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_container(path, _KIND, _VERSION, {**meta, "dtypes": dtypes, "config": sae.config()}, arrays)


def _read_checkpoint(path: Path, sae: SparseAutoencoder, opt: torch.optim.Adam, since_fired: Tensor) -> dict[str, Any]:
    contents = read_container(path, _KIND, [_VERSION])
    meta = contents.meta
    dtypes = meta.get("dtypes")
    saved = meta.get("config")
    if not isinstance(dtypes, dict) or not isinstance(saved, dict):
        raise IndexFormatError(f"{path}: the metadata lacks 'dtypes' or 'config'")
    mine = sae.config()
    for key in ("architecture", "d_in", "d_sae", "k", "dtype"):
        if saved.get(key) != mine.get(key):
            raise InvalidArgumentError(
                f"resume: the checkpoint {path} holds a model with {key}={saved.get(key)!r}, this one has "
                f"{mine.get(key)!r}"
            )

    def get(name: str) -> Tensor:
        if name not in contents.arrays or name not in dtypes:
            raise IndexFormatError(f"{path}: missing array {name!r}")
        return _from_numpy(contents.arrays[name], str(dtypes[name]), path)

    device = sae.device
    model_state = {name: get(f"model/{name}").to(device) for name in sae.state_dict()}
    sae.load_state_dict(model_state)
    names = [n for n, _ in sae.named_parameters()]
    opt_state: dict[int, dict[str, Tensor]] = {}
    for i, name in enumerate(names):
        keys = [k.split("/")[-1] for k in contents.arrays if k.startswith(f"adam/{name}/")]
        if keys:
            opt_state[i] = {key: get(f"adam/{name}/{key}").to(device) for key in keys}
            opt_state[i]["step"] = opt_state[i]["step"].cpu()
    opt.load_state_dict({"state": opt_state, "param_groups": opt.state_dict()["param_groups"]})
    since_fired.copy_(get("since_fired"))
    return meta


# -- progress ----------------------------------------------------------------------------------------------------


class _Bar:
    """A progress bar on stderr (tqdm when installed, else a one-line counter) showing FVU, L0 and dead %."""

    def __init__(self, show: bool, total: int, initial: int) -> None:
        self.show, self.total, self.n = show, total, initial
        self.start = time.monotonic()
        self.tqdm: Any = None
        if show:
            try:
                from tqdm.auto import tqdm
            except ImportError:
                tqdm = None
            if tqdm is not None:
                self.tqdm = tqdm(total=total, initial=initial, desc="train SAE", unit="step", file=sys.stderr)

    def update(self, stats: dict[str, float] | None) -> None:
        self.n += 1
        if not self.show:
            return
        text = (
            ""
            if stats is None
            else (f"fvu={stats['fvu']:.4f} l0={stats['l0']:.1f} dead={100 * stats['dead_fraction']:.1f}%")
        )
        if self.tqdm is not None:
            if text:
                self.tqdm.set_postfix_str(text, refresh=False)
            self.tqdm.update(1)
        else:
            sys.stderr.write(f"\rtrain SAE: {self.n}/{self.total} steps, {time.monotonic() - self.start:6.1f} s {text}")
            sys.stderr.flush()

    def close(self) -> None:
        if self.tqdm is not None:
            self.tqdm.close()
        elif self.show:
            sys.stderr.write("\n")


# -- training ----------------------------------------------------------------------------------------------------


def train(
    sae: SparseAutoencoder,
    source: Iterable[Tensor],
    n_tokens: int,
    *,
    batch_size: int = 4096,
    lr: float | None = None,
    lr_warmup_steps: int | None = None,
    lr_decay_steps: int | None = None,
    auxk_k: int | None = None,
    auxk_coefficient: float = 1 / 32,
    dead_tokens_threshold: int = 10_000_000,
    scale_activations: bool = True,
    init_b_dec: str = "geometric_median",
    checkpoint_dir: str | os.PathLike[str] | None = None,
    checkpoint_every: int | None = None,
    resume: bool = False,
    progress: bool | None = None,
    log_every: int = 100,
    seed: int = 0,
    _sparse: bool | None = None,
) -> list[dict[str, float]]:
    """Train ``sae`` in place on ``n_tokens`` activations drawn from ``source``.

    Each step takes ``batch_size`` tokens (``source``'s tensors are flattened to ``(n, d_in)`` and re-chunked),
    minimises ``FVU + sae.sparsity_loss + auxk_coefficient * AuxK`` with Adam, removes the decoder gradient parallel
    to each atom and renormalises the atoms. FVU is the squared error over the batch's total variance, in scaled
    units. AuxK (TopK and BatchTopK only): the residual ``x - x̂`` is reconstructed, without ``b_dec``, from the
    ``auxk_k`` largest pre-activations of the *dead* latents (those that have not fired for
    ``dead_tokens_threshold`` tokens), and its FVU is added, so dead latents get gradient toward what the live
    ones miss.

    A float32 :class:`TopKSAE` on the CPU trains with a sparse step: the encoder's product is the one dense
    operation, and the decoder and every gradient after it touch only the ``k`` selected latents per token (the
    Rust core's gather / scatter kernels, deterministic and thread-count independent); the gradients are
    autograd's through the dense codes up to float rounding. Other models and devices use autograd. Adam is
    torch's fused kernel on CPU and CUDA.

    Before the first step (not on resume), ``act_scale`` is set so that the first batch's mean norm becomes
    ``sqrt(d_in)`` (``scale_activations``), and ``b_dec`` to that batch's geometric median (Weiszfeld), mean, or
    zeros (``init_b_dec``).

    Parameters
    ----------
    sae
        The model, trained in place (its training / eval mode is restored at the end).
    source
        An iterable of activation tensors ``(..., d_in)``, e.g. ``x.split(1024)`` or an activation source; it is
        iterated once. Training stops early if it runs out.
    n_tokens
        Tokens to train on in total (including those of a resumed run); steps = ``ceil(n_tokens / batch_size)``.
    batch_size
        Tokens per step.
    lr
        Peak learning rate; default ``2e-4 / sqrt(d_sae / 2**14)`` (Gao et al.).
    lr_warmup_steps
        Linear warm-up from 0; default ``min(1000, steps // 10)``.
    lr_decay_steps
        Linear decay to 0 over the last steps; default ``steps // 5``.
    auxk_k
        Dead latents used by AuxK; default ``d_in // 2`` (at least 1).
    auxk_coefficient
        Weight of the AuxK loss.
    dead_tokens_threshold
        A latent is dead once it has not fired for this many tokens.
    scale_activations
        Set ``act_scale`` from the first batch (otherwise the model's ``act_scale`` is kept).
    init_b_dec
        ``"geometric_median"``, ``"mean"`` or ``"zeros"``.
    checkpoint_dir
        Folder for ``checkpoint.sparsecore``; written every ``checkpoint_every`` steps and at the end.
    checkpoint_every
        Steps between checkpoints (default: only at the end).
    resume
        Continue from the checkpoint in ``checkpoint_dir`` if there is one (model, Adam state, step, dead counters
        and history are restored, and the first ``tokens`` tokens of ``source`` are skipped, so pass the same
        source); starts afresh when there is none.
    progress
        Show a progress bar with FVU, L0 and dead %; default: only on an interactive terminal.
    log_every
        Steps per row of the returned history (the last step always gets one).
    seed
        Seeds torch's CPU generator inside a forked RNG state (the global state is restored afterwards), so any
        stochastic operation in the model is reproducible; the recipe itself is deterministic.

    Returns
    -------
    list of dict
        History rows ``{"step", "tokens", "loss", "fvu", "l0", "dead_fraction", "lr"}``, the loss, FVU and L0
        averaged over the steps since the previous row.

    Raises
    ------
    InvalidArgumentError
        A bad argument, ``resume`` without ``checkpoint_dir``, or a checkpoint of another model.
    ShapeMismatchError, DTypeError, NonFiniteError
        A batch of ``source`` has the wrong width, dtype, or NaN / infinite values (named ``x``).
    IndexFormatError
        The checkpoint is corrupted.
    """
    if not isinstance(sae, SparseAutoencoder):
        raise InvalidArgumentError(f"sae: must be a SparseAutoencoder, got {type(sae).__name__}")
    n_tokens = positive_int(n_tokens, "n_tokens")
    batch_size = positive_int(batch_size, "batch_size")
    steps = -(-n_tokens // batch_size)
    peak = default_lr(sae.d_sae) if lr is None else check_float(lr, "lr", low=0.0, low_open=True)
    warmup = min(1000, steps // 10) if lr_warmup_steps is None else _nonneg(lr_warmup_steps, "lr_warmup_steps")
    decay = steps // 5 if lr_decay_steps is None else _nonneg(lr_decay_steps, "lr_decay_steps")
    k_aux = max(1, sae.d_in // 2) if auxk_k is None else positive_int(auxk_k, "auxk_k")
    auxk_coefficient = check_float(auxk_coefficient, "auxk_coefficient", low=0.0)
    dead_tokens_threshold = positive_int(dead_tokens_threshold, "dead_tokens_threshold")
    scale_activations = check_bool(scale_activations, "scale_activations")
    init_b_dec = check_choice(init_b_dec, "init_b_dec", _INIT_B_DEC)
    checkpoint_every = optional_positive_int(checkpoint_every, "checkpoint_every")
    resume = check_bool(resume, "resume")
    log_every = positive_int(log_every, "log_every")
    seed = check_seed(seed)
    if resume and checkpoint_dir is None:
        raise InvalidArgumentError("checkpoint_dir: must be a folder when resume=True, got None")
    if _sparse and not _sparse_topk_supported(sae):
        raise InvalidArgumentError("_sparse: the sparse step needs a float32 TopKSAE on the CPU")
    ckpt = None if checkpoint_dir is None else Path(checkpoint_dir) / CHECKPOINT_NAME

    was_training = sae.training
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        try:
            sae.train()
            return _run(
                sae, source, n_tokens, batch_size, steps, peak, warmup, decay, k_aux, auxk_coefficient,
                dead_tokens_threshold, scale_activations, init_b_dec, ckpt, checkpoint_every, resume,
                want_progress(progress, steps), log_every, _sparse,
            )  # fmt: skip
        finally:
            sae.train(was_training)


def _nonneg(value: object, name: str) -> int:
    from sparsecore._validate import nonnegative_int

    return nonnegative_int(value, name)


def _run(
    sae: SparseAutoencoder,
    source: Iterable[Tensor],
    n_tokens: int,
    batch_size: int,
    steps: int,
    peak: float,
    warmup: int,
    decay: int,
    k_aux: int,
    auxk_coefficient: float,
    dead_tokens_threshold: int,
    scale_activations: bool,
    init_b_dec: str,
    ckpt: Path | None,
    checkpoint_every: int | None,
    resume: bool,
    show: bool,
    log_every: int,
    sparse: bool | None,
) -> list[dict[str, float]]:
    device = sae.device
    # the fused kernel (one pass over each parameter) exists for CPU and CUDA tensors
    opt = torch.optim.Adam(sae.parameters(), lr=peak, eps=_ADAM_EPS, fused=device.type in ("cpu", "cuda"))
    since_fired = torch.zeros(sae.d_sae, dtype=torch.int64, device=device)
    step, tokens = 0, 0
    history: list[dict[str, float]] = []
    if resume and ckpt is not None and ckpt.exists():
        meta = _read_checkpoint(ckpt, sae, opt, since_fired)
        step, tokens = int(meta.get("step", 0)), int(meta.get("tokens", 0))
        history = list(meta.get("history", []))
    uses_auxk = isinstance(sae, (TopKSAE, BatchTopKSAE)) and auxk_coefficient > 0
    sparse_step = _sparse_topk_supported(sae) if sparse is None else sparse
    window: list[tuple[float, float, float]] = []

    def save() -> None:
        if ckpt is not None:
            _write_checkpoint(ckpt, sae, opt, since_fired, {"step": step, "tokens": tokens, "history": history})

    bar = _Bar(show, steps, step)
    try:
        for batch in _token_batches(_passes(source), sae.d_in, batch_size, tokens):
            if step >= steps or tokens >= n_tokens:
                break
            batch = batch[: n_tokens - tokens]
            x = sae._check_x(batch).to(device=device).float()
            if step == 0:
                _initialise(sae, x, scale_activations, init_b_dec)
            lr = _lr_at(step, steps, peak, warmup, decay)
            for group in opt.param_groups:
                group["lr"] = lr

            dead = since_fired >= dead_tokens_threshold
            k_dead = min(k_aux, int(dead.sum())) if uses_auxk else 0
            opt.zero_grad(set_to_none=True)
            step_fn = _sparse_topk_step if sparse_step else _dense_step
            loss, fvu, fired, l0 = step_fn(sae, x * sae.act_scale, dead, k_dead, auxk_coefficient)
            sae.remove_gradient_parallel_to_decoder_directions_()
            opt.step()
            sae.set_decoder_norm_to_unit_norm_()
            since_fired += x.shape[0]
            since_fired[fired] = 0
            step += 1
            tokens += x.shape[0]
            window.append((loss, fvu, l0))
            row = None
            if step % log_every == 0 or step >= steps or tokens >= n_tokens:
                row = {
                    "step": step,
                    "tokens": tokens,
                    "loss": sum(w[0] for w in window) / len(window),
                    "fvu": sum(w[1] for w in window) / len(window),
                    "l0": sum(w[2] for w in window) / len(window),
                    "dead_fraction": float((since_fired >= dead_tokens_threshold).float().mean()),
                    "lr": lr,
                }
                history.append(row)
                window = []
            bar.update(row)
            if checkpoint_every is not None and step % checkpoint_every == 0:
                save()
        if tokens < n_tokens:
            warnings.warn(
                f"source: ran out after {tokens:,} of n_tokens = {n_tokens:,} tokens (a one-shot iterator is read "
                "once; pass a sequence or an ActivationSource to train over several passes)",
                TruncationWarning,
                stacklevel=3,
            )
        if window:  # the source ran out between two rows
            history.append(
                {
                    "step": step,
                    "tokens": tokens,
                    "loss": sum(w[0] for w in window) / len(window),
                    "fvu": sum(w[1] for w in window) / len(window),
                    "l0": sum(w[2] for w in window) / len(window),
                    "dead_fraction": float((since_fired >= dead_tokens_threshold).float().mean()),
                    "lr": _lr_at(step - 1, steps, peak, warmup, decay),
                }
            )
        save()
    finally:
        bar.close()
    return history


def _dense_step(
    sae: SparseAutoencoder, xs: Tensor, dead: Tensor, k_dead: int, auxk_coefficient: float
) -> tuple[float, float, Tensor, float]:
    """One step's loss and gradients by autograd through the dense ``(B, d_sae)`` codes (any architecture).

    Returns ``(loss, fvu, fired, l0)``: the loss and FVU values, the latents that fired in the batch and the mean
    number of active latents per token.
    """
    codes, pre = sae._codes(xs - sae.b_dec.float())
    recon = sae._decode_scaled(codes)
    fvu = (recon - xs).pow(2).sum() / _total_variance(xs)
    loss = fvu + sae.sparsity_loss(codes, pre)
    if k_dead > 0:
        values, indices = pre.masked_fill(~dead, -math.inf).topk(k_dead, dim=-1)
        aux_codes = torch.zeros_like(pre).scatter(-1, indices, values.relu())
        residual = (xs - recon).detach()
        aux_recon = aux_codes @ sae.W_dec.float()
        aux = (aux_recon - residual).pow(2).sum() / _total_variance(residual)
        loss = loss + auxk_coefficient * aux
    torch.autograd.backward(loss)
    with torch.no_grad():
        active = codes != 0
        fired = active.any(dim=0)
        l0 = float(active.sum(dim=-1).float().mean())
    return float(loss.detach()), float(fvu.detach()), fired, l0


def _total_variance(x: Tensor) -> Tensor:
    """Sum of squared deviations of the rows of ``x`` from their mean (at least 1e-12)."""
    return (x - x.mean(dim=0)).pow(2).sum().clamp_min(1e-12)


def _sparse_topk_supported(sae: SparseAutoencoder) -> bool:
    """Whether :func:`_sparse_topk_step` computes ``sae``'s gradients: a float32 TopK SAE on the CPU."""
    return (
        isinstance(sae, TopKSAE)
        and type(sae)._codes is TopKSAE._codes
        and type(sae)._activate is TopKSAE._activate
        and type(sae).sparsity_loss is SparseAutoencoder.sparsity_loss
        and sae.device.type == "cpu"
        and sae.dtype == torch.float32
    )


def _np(t: Tensor) -> NDArray[Any]:
    return t.detach().contiguous().numpy()


@torch.no_grad()
def _sparse_topk_step(
    sae: SparseAutoencoder, xs: Tensor, dead: Tensor, k_dead: int, auxk_coefficient: float
) -> tuple[float, float, Tensor, float]:
    """:func:`_dense_step` for a float32 TopK SAE on the CPU, touching only the active latents after the encoder.

    The encoder's product ``xc @ W_enc`` is the one dense operation; the decoder, the gradients of the code
    values and of ``W_dec``, ``W_enc``, ``b_enc`` and ``b_dec`` are sums over the ``k`` (plus the AuxK
    ``k_dead``) selected latents per token, computed by the Rust core's gather / scatter kernels (deterministic,
    GIL released). The gradients equal autograd's through the dense codes up to float rounding
    (``tests/test_sae.py`` compares them).
    """
    threads = torch.get_num_threads()
    d_sae = sae.d_sae
    w_dec = _np(sae.W_dec)
    xc = xs - sae.b_dec.detach()
    pre = torch.addmm(sae.b_enc.detach(), xc, sae.W_enc.detach())
    assert sae.k is not None  # a TopK SAE
    idx_np, act_np = _core.sae_topk_rows(pre.numpy(), sae.k, num_threads=threads)  # ReLU, then top k
    idx, act = torch.from_numpy(idx_np), torch.from_numpy(act_np)
    recon = torch.from_numpy(_core.sae_gather_sum(idx_np, act_np, w_dec, num_threads=threads)) + sae.b_dec.detach()
    err = recon - xs
    inv_var = 1.0 / float(_total_variance(xs))
    fvu = float(err.pow(2).sum()) * inv_var
    loss = fvu
    grad_out = err * (2.0 * inv_var)  # d fvu / d recon
    grad_dec = torch.from_numpy(_core.sae_scatter_outer(idx_np, act_np, _np(grad_out), d_sae, num_threads=threads))
    grad_top = torch.from_numpy(_core.sae_gather_dot(idx_np, _np(grad_out), w_dec, num_threads=threads))
    positive = act > 0
    grad_top.mul_(positive)
    enc_idx, enc_grad = idx, grad_top
    if k_dead > 0:
        aux_top, aux_idx = pre.masked_fill_(~dead, -math.inf).topk(k_dead, dim=-1)
        aux_act = aux_top.relu()
        aux_np = _np(aux_idx)
        residual = err.neg_()  # xs - recon
        aux_err = torch.from_numpy(_core.sae_gather_sum(aux_np, _np(aux_act), w_dec, num_threads=threads)) - residual
        aux_inv_var = 1.0 / float(_total_variance(residual))
        loss += auxk_coefficient * float(aux_err.pow(2).sum()) * aux_inv_var
        grad_aux_out = aux_err.mul_(2.0 * auxk_coefficient * aux_inv_var)
        grad_dec += torch.from_numpy(
            _core.sae_scatter_outer(aux_np, _np(aux_act), _np(grad_aux_out), d_sae, num_threads=threads)
        )
        grad_aux = torch.from_numpy(_core.sae_gather_dot(aux_np, _np(grad_aux_out), w_dec, num_threads=threads))
        grad_aux.mul_(aux_top > 0)
        enc_idx, enc_grad = torch.cat([idx, aux_idx], dim=1), torch.cat([grad_top, grad_aux], dim=1)
    enc_np, enc_grad_np = _np(enc_idx), _np(enc_grad)
    grad_enc_t = _core.sae_scatter_outer(enc_np, enc_grad_np, _np(xc), d_sae, num_threads=threads)
    w_enc_t = _np(sae.W_enc.t())
    grad_xc = torch.from_numpy(_core.sae_gather_sum(enc_np, enc_grad_np, w_enc_t, num_threads=threads))
    sae.W_dec.grad = grad_dec
    sae.W_enc.grad = torch.from_numpy(grad_enc_t).t().contiguous()
    sae.b_enc.grad = torch.zeros(d_sae).index_add_(0, enc_idx.reshape(-1), enc_grad.reshape(-1))
    sae.b_dec.grad = grad_out.sum(dim=0) - grad_xc.sum(dim=0)
    fired = torch.zeros(d_sae, dtype=torch.bool)
    fired[idx[positive]] = True
    return loss, fvu, fired, float(positive.sum(dim=-1).float().mean())


@torch.no_grad()
def _initialise(sae: SparseAutoencoder, x: Tensor, scale_activations: bool, init_b_dec: str) -> None:
    """Set ``act_scale`` (mean norm → sqrt(d_in)) and ``b_dec`` from the first batch (float32 ``x``)."""
    if scale_activations:
        mean_norm = float(x.norm(dim=1).mean())
        if mean_norm > 0:
            sae.act_scale.fill_(math.sqrt(sae.d_in) / mean_norm)
    xs = x * sae.act_scale
    if init_b_dec == "geometric_median":
        sae.b_dec.copy_(geometric_median(xs))
    elif init_b_dec == "mean":
        sae.b_dec.copy_(xs.mean(dim=0))
    else:
        sae.b_dec.zero_()
