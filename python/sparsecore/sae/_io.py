"""Sparse autoencoder folders: written in the SAELens layout, read from SAELens or EleutherAI sparsify layouts.

SAELens folder (written by :func:`save`, read by :func:`load`)
    ``cfg.json`` with SAELens' field names (``architecture``, ``d_in``, ``d_sae``, ``dtype``, ``device``,
    ``apply_b_dec_to_input``, ``normalize_activations``, ``reshape_activations``, ``metadata``, and ``k`` /
    ``rescale_acts_by_decoder_norm`` / ``max_iterations`` / ``residual_threshold`` /
    ``stop_on_duplicate_support`` where the architecture has them) and ``sae_weights.safetensors`` with ``W_enc``
    ``(d_in, d_sae)``, ``b_enc`` ``(d_sae,)``, ``W_dec`` ``(d_sae, d_in)``, ``b_dec`` ``(d_in,)`` and, for
    JumpReLU / BatchTopK, ``threshold`` (float32). Architectures are named as SAELens names them: ``"topk"``,
    ``"batchtopk"``, ``"jumprelu"``, ``"standard"`` (our ReLU SAE) and ``"matching_pursuit"`` (our MP-SAE, tied: no
    ``W_enc`` or ``b_enc`` is written).

    The activation scale is *folded* into the weights, as SAELens does for inference (``W_enc · s``, ``W_dec / s``,
    ``b_dec / s``; for the tied MP-SAE only ``b_dec / s``, which scales its codes by ``1 / s``), and
    ``normalize_activations`` is ``"none"``, so SAELens computes the same reconstructions from raw activations.
    ``metadata.sparsecore`` records ``act_scale`` and the hyperparameters SAELens has no field for; :func:`load`
    unfolds the scale again, giving back the saved model up to float rounding.

eai-sparsify folder (read by :func:`load`)
    ``cfg.json`` (``d_in``, ``k``, ``num_latents`` or ``expansion_factor``, ``activation``, ...) and
    ``sae.safetensors`` with ``encoder.weight`` ``(d_sae, d_in)``, ``encoder.bias`` ``(d_sae,)``, ``W_dec``
    ``(d_sae, d_in)``, ``b_dec`` ``(d_in,)``: a TopK SAE that encodes ``x - b_dec``. Only the ``"topk"`` activation
    without skip connection or transcoding is read.

Only safetensors is used to read tensors (never pickle); every tensor's presence, shape, dtype and finiteness is
checked, and problems raise :class:`~sparsecore.exceptions.IndexFormatError` naming the file.
"""

from __future__ import annotations

import json
import math
import os
import secrets
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors
from torch import Tensor

from sparsecore._io import fsync_dir, read_json_file, read_regular_file
from sparsecore.exceptions import IndexFormatError, InvalidArgumentError
from sparsecore.sae._models import (
    BatchTopKSAE,
    JumpReLUSAE,
    MatchingPursuitSAE,
    ReLUSAE,
    SparseAutoencoder,
    TopKSAE,
    dtype_name,
)

__all__ = ["load", "save"]

SAELENS_CFG = "cfg.json"
SAELENS_WEIGHTS = "sae_weights.safetensors"
SPARSIFY_WEIGHTS = "sae.safetensors"
# A cfg.json is a few hundred bytes; refuse anything absurd before parsing it.
_MAX_CFG_BYTES = 16 * 2**20
_TO_SAELENS = {
    "topk": "topk",
    "batchtopk": "batchtopk",
    "jumprelu": "jumprelu",
    "relu": "standard",
    "mp": "matching_pursuit",
}


# -- writing -----------------------------------------------------------------------------------------------------


def _fsync_write(path: Path, data: bytes) -> None:
    with open(path, "xb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def _folded_tensors(sae: SparseAutoencoder) -> dict[str, Tensor]:
    """The tensors of the SAELens file, with ``act_scale`` folded in (float32 arithmetic, stored in the model dtype)."""
    s = float(sae.act_scale)
    dt = sae.dtype

    def out(t: Tensor) -> Tensor:
        return t.detach().to(dtype=dt, device="cpu").contiguous()

    tensors: dict[str, Tensor] = {}
    if isinstance(sae, MatchingPursuitSAE):
        tensors["W_dec"] = out(sae.W_dec)
        tensors["b_dec"] = out(sae.b_dec.float() / s)
        return tensors
    tensors["W_enc"] = out(sae.W_enc.float() * s)
    tensors["b_enc"] = out(sae.b_enc)
    tensors["W_dec"] = out(sae.W_dec.float() / s)
    tensors["b_dec"] = out(sae.b_dec.float() / s)
    if isinstance(sae, JumpReLUSAE):
        tensors["threshold"] = sae.threshold.detach().float().cpu().contiguous()
    elif isinstance(sae, BatchTopKSAE):
        tensors["threshold"] = sae.threshold.detach().float().cpu().expand(sae.d_sae).contiguous()
    return tensors


def _saelens_cfg(sae: SparseAutoencoder) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "architecture": _TO_SAELENS[sae.architecture],
        "d_in": sae.d_in,
        "d_sae": sae.d_sae,
        "dtype": dtype_name(sae.dtype),
        "device": "cpu",
        "apply_b_dec_to_input": True,
        "normalize_activations": "none",
        "reshape_activations": "none",
    }
    own = sae.config()
    if isinstance(sae, (TopKSAE, BatchTopKSAE)):
        cfg["k"] = sae.k
        cfg["rescale_acts_by_decoder_norm"] = False
    if isinstance(sae, MatchingPursuitSAE):
        # SAELens stops on a residual *norm* below residual_threshold; ours compares inner products. Writing 0 and
        # exactly k iterations makes SAELens run our k steps (a non-positive best inner product adds nothing).
        cfg["max_iterations"] = sae.k
        cfg["residual_threshold"] = 0.0
        cfg["stop_on_duplicate_support"] = False
    cfg["metadata"] = {"sparsecore": own}
    return cfg


def save(sae: SparseAutoencoder, path: str | os.PathLike[str]) -> None:
    """Write ``sae`` as a SAELens folder (``cfg.json`` + ``sae_weights.safetensors``), atomically.

    The folder is written under a temporary name next to ``path``, each file fsynced, then renamed into place; an
    existing folder at ``path`` is replaced (it is moved aside first and removed after the rename, so ``path``
    never holds a half-written model). See the module docstring for the layout.

    Parameters
    ----------
    sae
        The model.
    path
        The folder to write.

    Raises
    ------
    InvalidArgumentError
        ``sae`` is not a :class:`SparseAutoencoder`.
    NotADirectoryError
        ``path`` exists and is not a folder.
    """
    if not isinstance(sae, SparseAutoencoder):
        raise InvalidArgumentError(f"sae: must be a SparseAutoencoder, got {type(sae).__name__}")
    target = Path(path)
    if target.exists() and not target.is_dir():
        raise NotADirectoryError(f"{target}: exists and is not a folder")
    parent = target.parent if str(target.parent) else Path(".")
    parent.mkdir(parents=True, exist_ok=True)
    tmp = parent / f".{target.name}.tmp-{os.getpid()}-{secrets.token_hex(8)}"
    tmp.mkdir()
    try:
        meta = {"format": "saelens", "architecture": sae.architecture}
        _fsync_write(tmp / SAELENS_WEIGHTS, save_safetensors(_folded_tensors(sae), metadata=meta))
        text = json.dumps(_saelens_cfg(sae), indent=2, allow_nan=False)
        _fsync_write(tmp / SAELENS_CFG, text.encode("utf-8"))
        old: Path | None = None
        if target.exists():
            old = parent / f".{target.name}.old-{os.getpid()}-{secrets.token_hex(8)}"
            os.replace(target, old)
        os.replace(tmp, target)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    fsync_dir(parent)


# -- reading -----------------------------------------------------------------------------------------------------


def _read_tensors(file: Path) -> dict[str, Tensor]:
    raw = read_regular_file(file)
    try:
        return load_safetensors(raw)
    except (SafetensorError, ValueError, RuntimeError) as exc:
        raise IndexFormatError(f"{file}: not a readable safetensors file ({exc})") from None


def _tensor(tensors: dict[str, Tensor], name: str, shape: tuple[int, ...], file: Path) -> Tensor:
    t = tensors.get(name)
    if t is None:
        raise IndexFormatError(f"{file}: missing tensor {name!r}")
    if tuple(t.shape) != shape:
        raise IndexFormatError(f"{file}: tensor {name!r} has shape {tuple(t.shape)}, expected {shape}")
    if not t.is_floating_point():
        raise IndexFormatError(f"{file}: tensor {name!r} has dtype {t.dtype}, expected a float dtype")
    if not bool(torch.isfinite(t).all()):
        raise IndexFormatError(f"{file}: tensor {name!r} contains NaN or infinite values")
    return t.float()


def _read_cfg(file: Path, layout: str) -> dict[str, Any]:
    cfg = read_json_file(file, f"a {layout} cfg.json", _MAX_CFG_BYTES)
    if not isinstance(cfg, dict):
        raise IndexFormatError(f"{file}: not a JSON object")
    return cfg


def _cfg_int(cfg: dict[str, Any], name: str, file: Path, *, optional: bool = False) -> int | None:
    v = cfg.get(name)
    if v is None and optional:
        return None
    if isinstance(v, float) and v.is_integer():  # SAELens' BatchTopK declares k as a float
        v = int(v)
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise IndexFormatError(f"{file}: field {name!r} must be a positive integer, got {v!r}")
    return v


def _cfg_float(value: object, file: Path) -> float:
    if value is None:
        return 0.0
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise IndexFormatError(f"{file}: l1_coefficient must be a non-negative number, got {value!r}")
    return float(value)


def _model_dtype(tensors: dict[str, Tensor], dtype: torch.dtype | None) -> torch.dtype:
    if dtype is not None:
        return dtype
    return torch.bfloat16 if any(t.dtype == torch.bfloat16 for t in tensors.values()) else torch.float32


def _fill(sae: SparseAutoencoder, values: dict[str, Tensor]) -> None:
    with torch.no_grad():
        for name, value in values.items():
            getattr(sae, name).copy_(value)


def _load_saelens(folder: Path, dtype: torch.dtype | None, device: torch.device | str | None) -> SparseAutoencoder:
    cfg_file, weights_file = folder / SAELENS_CFG, folder / SAELENS_WEIGHTS
    cfg = _read_cfg(cfg_file, "SAELens")
    arch = cfg.get("architecture", "standard")
    d_in = _cfg_int(cfg, "d_in", cfg_file)
    d_sae = _cfg_int(cfg, "d_sae", cfg_file)
    assert d_in is not None
    assert d_sae is not None
    norm = cfg.get("normalize_activations", "none")
    if norm not in ("none", None):
        raise IndexFormatError(
            f"{cfg_file}: normalize_activations={norm!r} needs a scaling factor stored outside the folder; "
            "only 'none' is read"
        )
    if cfg.get("reshape_activations", "none") not in ("none", None):
        raise IndexFormatError(f"{cfg_file}: reshape_activations={cfg.get('reshape_activations')!r} is not supported")
    meta = cfg.get("metadata")
    ours = meta.get("sparsecore") if isinstance(meta, dict) else None
    ours = ours if isinstance(ours, dict) else {}
    tensors = _read_tensors(weights_file)
    mdt = _model_dtype(tensors, dtype)
    common: dict[str, Any] = {"dtype": mdt, "device": device, "seed": 0}
    W_dec = _tensor(tensors, "W_dec", (d_sae, d_in), weights_file)  # noqa: N806
    b_dec = _tensor(tensors, "b_dec", (d_in,), weights_file)
    apply_b_dec = cfg.get("apply_b_dec_to_input", True) is not False
    try:
        scale = float(ours.get("act_scale", 1.0))
    except (TypeError, ValueError):
        scale = math.nan
    if not math.isfinite(scale) or scale <= 0:
        raise IndexFormatError(f"{cfg_file}: metadata.sparsecore.act_scale must be a positive number")

    sae: SparseAutoencoder
    if arch == "matching_pursuit":
        steps = _cfg_int(cfg, "max_iterations", cfg_file, optional=True) or min(d_in, d_sae)
        sae = MatchingPursuitSAE(
            d_in, d_sae, min(steps, d_sae), residual_threshold=float(ours.get("residual_threshold", 0.0)), **common
        )
        _fill(sae, {"W_dec": W_dec, "b_dec": b_dec * scale if apply_b_dec else torch.zeros_like(b_dec)})
        sae.act_scale.fill_(scale)
        return sae

    W_enc = _tensor(tensors, "W_enc", (d_in, d_sae), weights_file)  # noqa: N806
    b_enc = _tensor(tensors, "b_enc", (d_sae,), weights_file)
    if not apply_b_dec:  # encode x, not x - b_dec: fold b_dec @ W_enc into the encoder bias
        b_enc = b_enc + b_dec @ W_enc
    if arch in ("topk", "batchtopk"):
        k = _cfg_int(cfg, "k", cfg_file)
        assert k is not None
        if k > d_sae:
            raise IndexFormatError(f"{cfg_file}: k = {k} exceeds d_sae = {d_sae}")
        if arch == "topk" and cfg.get("rescale_acts_by_decoder_norm", False):
            # top-k of pre * ‖W_dec[i]‖, decoded with W_dec / ‖W_dec[i]‖: fold the norms into the weights
            norms = W_dec.norm(dim=1)
            W_enc, b_enc, W_dec = W_enc * norms, b_enc * norms, W_dec / norms[:, None]  # noqa: N806
        if arch == "topk":
            sae = TopKSAE(d_in, d_sae, k, **common)
        else:
            sae = BatchTopKSAE(d_in, d_sae, k, **common)
            thr = tensors.get("threshold", tensors.get("topk_threshold"))
            if thr is None:
                raise IndexFormatError(f"{weights_file}: missing tensor 'threshold'")
            thr = _tensor({"threshold": thr.reshape(-1)}, "threshold", (thr.numel(),), weights_file)
            if thr.numel() not in (1, d_sae) or not bool((thr == thr[0]).all()):
                raise IndexFormatError(f"{weights_file}: BatchTopK needs one threshold shared by every latent")
            _fill(sae, {"threshold": thr[0]})
            sae.threshold_updates.fill_(1)
            sae.eval()
    elif arch == "jumprelu":
        thr = _tensor(tensors, "threshold", (d_sae,), weights_file)
        if not bool((thr > 0).all()):
            raise IndexFormatError(f"{weights_file}: JumpReLU thresholds must be positive")
        sae = JumpReLUSAE(
            d_in,
            d_sae,
            bandwidth=float(ours.get("bandwidth", 0.001)),
            l0_coefficient=float(ours.get("l0_coefficient", 1e-3)),
            **common,
        )
        _fill(sae, {"log_threshold": thr.log()})
    elif arch == "standard":
        l1 = _cfg_float(ours.get("l1_coefficient", cfg.get("l1_coefficient")), cfg_file)
        sae = ReLUSAE(d_in, d_sae, l1, **common)
    else:
        raise IndexFormatError(
            f"{cfg_file}: unknown architecture {arch!r}; sparsecore reads topk, batchtopk, jumprelu, standard and "
            "matching_pursuit"
        )
    _fill(sae, {"W_enc": W_enc / scale, "b_enc": b_enc, "W_dec": W_dec * scale, "b_dec": b_dec * scale})
    sae.act_scale.fill_(scale)
    return sae


def _load_sparsify(folder: Path, dtype: torch.dtype | None, device: torch.device | str | None) -> SparseAutoencoder:
    cfg_file, weights_file = folder / SAELENS_CFG, folder / SPARSIFY_WEIGHTS
    cfg = _read_cfg(cfg_file, "sparsify")
    activation = cfg.get("activation", "topk")
    if activation != "topk":
        raise IndexFormatError(f"{cfg_file}: unknown architecture (activation {activation!r}); only 'topk' is read")
    for flag in ("skip_connection", "transcode"):
        if cfg.get(flag):
            raise IndexFormatError(f"{cfg_file}: {flag}=true is not supported")
    d_in = _cfg_int(cfg, "d_in", cfg_file)
    k = _cfg_int(cfg, "k", cfg_file)
    assert d_in is not None
    assert k is not None
    d_sae = _cfg_int(cfg, "num_latents", cfg_file, optional=True) if cfg.get("num_latents") else None
    if d_sae is None:
        factor = _cfg_int(cfg, "expansion_factor", cfg_file)
        assert factor is not None
        d_sae = d_in * factor
    if k > d_sae:
        raise IndexFormatError(f"{cfg_file}: k = {k} exceeds the number of latents {d_sae}")
    tensors = _read_tensors(weights_file)
    enc = _tensor(tensors, "encoder.weight", (d_sae, d_in), weights_file)
    values = {
        "W_enc": enc.T,
        "b_enc": _tensor(tensors, "encoder.bias", (d_sae,), weights_file),
        "W_dec": _tensor(tensors, "W_dec", (d_sae, d_in), weights_file),
        "b_dec": _tensor(tensors, "b_dec", (d_in,), weights_file),
    }
    sae = TopKSAE(d_in, d_sae, k, dtype=_model_dtype(tensors, dtype), device=device, seed=0)
    _fill(sae, values)
    return sae


def load(
    path: str | os.PathLike[str], *, dtype: torch.dtype | None = None, device: torch.device | str | None = None
) -> SparseAutoencoder:
    """Load a sparse autoencoder from a SAELens folder or an eai-sparsify folder.

    The layout is recognised by its weights file (``sae_weights.safetensors``: SAELens; ``sae.safetensors``:
    sparsify) and the class chosen from ``cfg.json``: SAELens ``topk``, ``batchtopk`` (in eval mode),
    ``jumprelu``, ``standard`` (:class:`ReLUSAE`; its L1 coefficient is 0 unless the file records one) and
    ``matching_pursuit`` (``k = max_iterations``, else ``min(d_in, d_sae)``; SAELens' own stopping rules on the
    residual norm and on a repeated support are not reproduced: this MP-SAE stops after ``k`` steps or when no
    inner product is positive). SAELens TopK files with ``rescale_acts_by_decoder_norm`` and files with
    ``apply_b_dec_to_input = false`` are folded into equivalent weights. Files written by :func:`save` come back
    with their ``act_scale`` and hyperparameters.

    Parameters
    ----------
    path
        The folder.
    dtype
        Parameter dtype of the model (float32 or bfloat16); default: bfloat16 if the file stores bfloat16, else
        float32.
    device
        Where to put the model.

    Returns
    -------
    SparseAutoencoder

    Raises
    ------
    FileNotFoundError
        ``path`` or its ``cfg.json`` does not exist.
    IndexFormatError
        Neither weights file is there, an unknown architecture, a missing tensor, a wrong shape, NaN or infinite
        values, or a malformed ``cfg.json``; the message names the file.
    """
    folder = Path(path)
    if not folder.is_dir():
        if not folder.exists():
            raise FileNotFoundError(f"{folder}: no such folder")
        raise IndexFormatError(f"{folder}: not a folder (a sparse autoencoder is a folder with cfg.json)")
    if (folder / SAELENS_WEIGHTS).exists():
        return _load_saelens(folder, dtype, device)
    if (folder / SPARSIFY_WEIGHTS).exists():
        return _load_sparsify(folder, dtype, device)
    raise IndexFormatError(
        f"{folder}: neither {SAELENS_WEIGHTS} (SAELens) nor {SPARSIFY_WEIGHTS} (sparsify) is in the folder"
    )
