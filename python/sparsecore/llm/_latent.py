"""Steer a model with sparse-autoencoder latents: add decoder directions, or clamp latents with the error kept."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Mapping
from typing import Any

import torch
from torch import Tensor, nn

from sparsecore._validate import check_choice, check_float, is_int
from sparsecore.exceptions import DTypeError, InvalidArgumentError, ShapeMismatchError
from sparsecore.llm.hooks import edit, resolve_module

__all__ = ["latent_steering"]

MODES = ("add", "clamp")
# Dtypes the sparsecore SAEs encode directly (float64 is encoded as float32).
_NATIVE_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def _sae_matrices(sae: Any) -> tuple[Tensor, float]:
    """``(W_dec (d_sae, d_in), act_scale)`` of an SAE-like module."""
    w_dec = getattr(sae, "W_dec", None)
    if not isinstance(w_dec, Tensor) or w_dec.dim() != 2 or not callable(getattr(sae, "encode", None)):
        raise DTypeError(
            "sae: must have encode() and a 2-D W_dec (d_sae, d_in) like sparsecore.sae models, got "
            f"{type(sae).__name__}"
        )
    scale = getattr(sae, "act_scale", 1.0)
    scale = float(scale) if isinstance(scale, (Tensor, float, int)) else 1.0
    if not math.isfinite(scale) or scale <= 0:
        raise InvalidArgumentError(f"sae: act_scale must be a finite number > 0, got {scale!r}")
    return w_dec, scale


def _check_edits(edits: object, d_sae: int) -> tuple[list[int], list[float]]:
    if not isinstance(edits, Mapping):
        raise InvalidArgumentError(f"latents: must be a mapping {{latent: strength}}, got {type(edits).__name__}")
    idx: list[int] = []
    vals: list[float] = []
    for latent, value in edits.items():
        if not is_int(latent) or not 0 <= int(latent) < d_sae:
            raise InvalidArgumentError(f"latents: keys must be latent indices in [0, {d_sae - 1}], got {latent!r}")
        idx.append(int(latent))
        vals.append(check_float(value, f"latents[{int(latent)}]"))
    return idx, vals


@contextlib.contextmanager
def latent_steering(
    model: nn.Module,
    sae: nn.Module,
    hook: str,
    latents: Mapping[int, float],
    *,
    mode: str = "add",
) -> Iterator[None]:
    """Edit the output of module ``hook`` through SAE latents inside the ``with`` block, at every token.

    ``mode="add"`` adds ``sum_i strength_i * W_dec[i] / act_scale`` (decoder rows in the model's units: the SAE
    divides its reconstruction by ``act_scale``). ``mode="clamp"`` encodes the output ``x`` with the SAE, sets the
    given latents' codes to the given values and splices ``decode(edited) + (x - decode(codes))``: the SAE's error
    term is kept, so clamping latents to their current values (``sae.encode`` of the output, in the output's
    dtype), or an empty mapping, leaves ``x`` unchanged. It is computed (in float32) as
    ``x + (edited - codes) @ W_dec / act_scale``, which is that formula for the affine decoders of
    :mod:`sparsecore.sae` and exactly ``x`` where no code changes.

    Works at prefill and each decode step of ``generate``, on outputs of any leading shape and of dtype float32,
    bfloat16 or float16 (the result keeps the output's dtype). The hook is removed on exit, also on error.

    Parameters
    ----------
    model
        Any torch module (e.g. a transformers causal LM).
    sae
        A sparse autoencoder trained on that module's outputs: a :class:`sparsecore.sae.SparseAutoencoder` (TopK,
        JumpReLU, ...) or any module with ``encode`` and ``W_dec`` ``(d_sae, d_in)`` (``act_scale`` optional).
    hook
        The module's name, e.g. ``"model.layers.6"``.
    latents
        ``{latent index: strength}`` (``"add"``) or ``{latent index: code value}`` (``"clamp"``).
    mode
        ``"add"`` or ``"clamp"``.

    Raises
    ------
    InvalidArgumentError
        Unknown module or mode, latent indices outside ``[0, d_sae)``, non-finite strengths.
    DTypeError
        ``sae`` has no ``encode`` / ``W_dec``.
    ShapeMismatchError
        (During a forward) the module's output is not ``d_in`` wide.
    """
    resolve_module(model, hook)
    how = check_choice(mode, "mode", MODES)
    w_dec, scale = _sae_matrices(sae)
    d_sae, d_in = (int(s) for s in w_dec.shape)
    idx, vals = _check_edits(latents, d_sae)

    def check_width(h: Tensor) -> None:
        if h.shape[-1] != d_in:
            raise ShapeMismatchError(f"sae: d_in is {d_in}, the output of {hook!r} is {h.shape[-1]} wide")

    if not idx:
        fn = lambda h: h  # noqa: E731 (nothing to edit)
    elif how == "add":
        strengths = torch.tensor(vals, dtype=torch.float32, device=w_dec.device)
        with torch.no_grad():
            vector = (strengths @ w_dec.detach().float()[idx]) / scale

        def fn(h: Tensor) -> Tensor:
            check_width(h)
            return h + vector.to(dtype=h.dtype, device=h.device)

    else:
        encode: Any = sae.encode
        index = torch.tensor(idx, dtype=torch.long, device=w_dec.device)
        values = torch.tensor(vals, dtype=torch.float32, device=w_dec.device)

        def fn(h: Tensor) -> Tensor:
            check_width(h)
            x = h.float()
            # encode the output in its own dtype (float64 as float32), as a user calling sae.encode on it would
            native = h if h.dtype in _NATIVE_DTYPES else x
            codes: Tensor = encode(native.to(w_dec.device)).float()
            change = values - codes[..., index]  # (..., n_edits)
            delta = (change @ w_dec.detach().float()[index]) / scale
            return (x + delta.to(x.device)).to(h.dtype)

    with edit(model, hook, fn):
        yield
