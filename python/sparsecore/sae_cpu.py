"""Torch-free CPU inference of TopK and JumpReLU sparse autoencoders (SAEs).

A trained SAE maps activations ``x`` (``(B, d_in)`` float32) to sparse codes::

    pre   = (x * act_scale - b_dec) @ W_enc + b_enc            # (B, d_sae), never stored whole
    TopK:     keep the k largest of relu(pre) per row
    JumpReLU: keep pre[j] where pre[j] > threshold[j] (and > 0)

and decodes codes back with ``(codes @ W_dec + b_dec) / act_scale``. :class:`CpuSAE` does both with numpy and the
Rust core only (no torch): the encoder tiles rows and latents, computes each tile with a small sgemm and merges it
into per-row selections right away, so its extra memory is a few MiB rather than the ``B x d_sae`` float32 matrix
a dense ``topk(relu(x @ W_enc + b_enc))`` allocates. Codes come back as a :class:`~sparsecore.SparseBatch`
(indices increasing within each row, zeros dropped); among equal values at the k-th place the lower latent index
wins, and the result does not depend on ``num_threads``.

:meth:`CpuSAE.load` reads a folder in SAELens' format (``cfg.json`` + ``sae_weights.safetensors``), which needs
the small numpy-only ``safetensors`` package.

Examples
--------
>>> import numpy as np
>>> from sparsecore.sae_cpu import CpuSAE
>>> rng = np.random.default_rng(0)
>>> W_enc = rng.standard_normal((8, 64)).astype(np.float32)
>>> sae = CpuSAE.from_arrays(W_enc, np.zeros(64), W_enc.T, np.zeros(8), k=4)
>>> codes = sae.encode(rng.standard_normal((3, 8)))
>>> codes.shape, int(codes.row_nnz.max())
((3, 64), 4)
>>> sae.decode(codes).shape
(3, 8)
"""

from __future__ import annotations

import json
import operator
import os
from pathlib import Path
from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

from sparsecore import _core
from sparsecore._validate import check_bool, check_num_threads, is_int, positive_float
from sparsecore.exceptions import DTypeError, IndexFormatError, InvalidArgumentError, ShapeMismatchError
from sparsecore.sparse import MAX_DIM, SparseBatch

__all__ = ["CFG_FILENAME", "WEIGHTS_FILENAME", "CpuSAE"]

Architecture = Literal["topk", "jumprelu"]

#: File names of a SAELens SAE folder (``sae_lens.constants``).
CFG_FILENAME = "cfg.json"
WEIGHTS_FILENAME = "sae_weights.safetensors"

# SAELens' ``normalize_activations`` values that need no per-call statistics (others rescale each row).
_STATIC_NORMALIZATION = ("none", "expected_average_only_in")


def _f32(a: ArrayLike, name: str, shape: tuple[int | None, ...], what: str) -> NDArray[np.float32]:
    """``a`` as a C-contiguous float32 array of ``shape`` (None: any length), or a typed error naming ``name``."""
    arr = np.asarray(a)
    if arr.dtype.kind not in "biuf":
        raise DTypeError(f"{name}: expected a real-valued array, got dtype {arr.dtype}")
    if arr.ndim != len(shape) or any(
        want is not None and got != want for got, want in zip(arr.shape, shape, strict=True)
    ):
        spelled = ", ".join("n" if s is None else str(s) for s in shape)
        raise ShapeMismatchError(
            f"{name}: expected shape {what} = ({spelled}{',' if len(shape) == 1 else ''}), got {arr.shape}"
        )
    with np.errstate(over="ignore"):  # float64 beyond float32 becomes inf, which the core reports by position
        return np.ascontiguousarray(arr, dtype=np.float32)


def _check_k(k: object, d_sae: int) -> int:
    if not is_int(k) or not 1 <= operator.index(k) <= d_sae:  # type: ignore[arg-type]
        raise InvalidArgumentError(f"k: must be an integer in [1, d_sae = {d_sae}], got {k!r}")
    return operator.index(k)  # type: ignore[arg-type]


def _safetensors_load(path: Path) -> dict[str, NDArray[Any]]:
    try:
        from safetensors.numpy import load_file  # optional, numpy-only dependency
    except ImportError as exc:
        raise ImportError(
            "reading SAELens weights needs the 'safetensors' package (small, numpy-only): pip install safetensors"
        ) from exc
    try:
        return dict(load_file(str(path)))
    except Exception as exc:  # a foreign or damaged file, or a dtype numpy lacks (bfloat16)
        raise IndexFormatError(f"{path}: cannot read safetensors weights: {exc}") from exc


class CpuSAE:
    """A TopK or JumpReLU sparse autoencoder for CPU inference without torch.

    Build one with :meth:`from_arrays` or :meth:`load`. The weights are copied once, as float32, into memory
    owned by the Rust core.

    Parameters
    ----------
    core
        The core handle (private).
    architecture
        ``"topk"`` or ``"jumprelu"``.
    k
        Latents kept per row (TopK), None for JumpReLU.

    Examples
    --------
    >>> import numpy as np
    >>> from sparsecore.sae_cpu import CpuSAE
    >>> W = np.eye(4, 6, dtype=np.float32)
    >>> sae = CpuSAE.from_arrays(W, np.zeros(6), W.T, np.zeros(4), threshold=np.full(6, 0.5))
    >>> sae
    CpuSAE(architecture='jumprelu', d_in=4, d_sae=6, k=None, act_scale=1.0)
    >>> sae.encode([[1.0, 0.2, 0.0, 0.7]]).to_dicts()
    [{0: 1.0, 3: 0.699999988079071}]
    """

    __slots__ = ("_architecture", "_core", "_k")

    def __init__(self, core: _core.SaeEncoderCore, architecture: Architecture, k: int | None) -> None:
        self._core = core
        self._architecture: Architecture = architecture
        self._k = k

    # -- construction -----------------------------------------------------------------------------------------

    @classmethod
    def from_arrays(
        cls,
        W_enc: ArrayLike,  # noqa: N803 - the SAE literature's (and SAELens') names
        b_enc: ArrayLike,
        W_dec: ArrayLike,  # noqa: N803
        b_dec: ArrayLike,
        *,
        k: int | None = None,
        threshold: ArrayLike | None = None,
        act_scale: float = 1.0,
        apply_b_dec_to_input: bool = True,
    ) -> CpuSAE:
        """Build an SAE from its weights; ``k`` makes it TopK, ``threshold`` JumpReLU (give exactly one).

        Parameters
        ----------
        W_enc
            Encoder, ``(d_in, d_sae)``.
        b_enc
            Encoder bias, ``(d_sae,)``.
        W_dec
            Decoder, ``(d_sae, d_in)``.
        b_dec
            Decoder bias, ``(d_in,)``; subtracted from the (scaled) input before encoding unless
            ``apply_b_dec_to_input`` is False, added back after decoding.
        k
            TopK: latents kept per row, ``1 <= k <= d_sae``.
        threshold
            JumpReLU: per-latent thresholds, ``(d_sae,)``; a latent fires when its pre-activation exceeds its
            threshold (and 0).
        act_scale
            Inputs are multiplied by it before encoding, outputs divided by it after decoding (a finite number
            ``> 0``; SAELens' folded ``norm_scaling_factor``).
        apply_b_dec_to_input
            SAELens' option of that name.

        Returns
        -------
        CpuSAE

        Raises
        ------
        ShapeMismatchError
            The arrays' shapes disagree.
        NonFiniteError
            A weight is NaN or infinite (the message gives its position).
        InvalidArgumentError
            ``k`` and ``threshold`` both or neither given, ``k`` outside ``[1, d_sae]``, a bad ``act_scale``.
        DTypeError
            A non-numeric array.
        """
        if (k is None) == (threshold is None):
            raise InvalidArgumentError(
                "k, threshold: give exactly one (k for a TopK SAE, threshold for a JumpReLU SAE), "
                f"got k={k!r} and threshold={'None' if threshold is None else 'an array'}"
            )
        w_enc = _f32(W_enc, "W_enc", (None, None), "(d_in, d_sae)")
        d_in, d_sae = w_enc.shape
        if d_in == 0 or d_sae == 0 or d_sae > MAX_DIM:
            raise ShapeMismatchError(f"W_enc: d_in and d_sae must be between 1 and 2**32 - 1, got {w_enc.shape}")
        b_e = _f32(b_enc, "b_enc", (d_sae,), "(d_sae,)")
        w_dec = _f32(W_dec, "W_dec", (d_sae, d_in), "(d_sae, d_in)")
        b_d = _f32(b_dec, "b_dec", (d_in,), "(d_in,)")
        thr = None if threshold is None else _f32(threshold, "threshold", (d_sae,), "(d_sae,)")
        kk = None if k is None else _check_k(k, d_sae)
        scale = positive_float(act_scale, "act_scale")
        core = _core.SaeEncoderCore(
            w_enc, b_e, w_dec, b_d, thr, scale, check_bool(apply_b_dec_to_input, "apply_b_dec_to_input")
        )
        return cls(core, "topk" if kk is not None else "jumprelu", kk)

    @classmethod
    def load(cls, path: str | os.PathLike[str], *, act_scale: float | None = None) -> CpuSAE:
        """Load a SAELens SAE folder: ``cfg.json`` and ``sae_weights.safetensors``.

        ``cfg.json`` must have ``architecture`` (``"topk"`` or ``"jumprelu"``), ``d_in`` and ``d_sae``, and for
        TopK ``k``; ``apply_b_dec_to_input`` (default true) and ``rescale_acts_by_decoder_norm`` (TopK; default
        false) are honoured (the latter by folding the decoder row norms into the encoder, which selects the same
        latents with the values SAELens reports). The weights are ``W_enc``, ``b_enc``, ``W_dec``, ``b_dec``
        and, for JumpReLU, ``threshold`` (or ``log_threshold``). Weights in float16 or float64 are converted to
        float32.

        Parameters
        ----------
        path
            The folder.
        act_scale
            Activation scale (default 1.0). SAELens keeps ``normalize_activations="expected_average_only_in"``
            scaling factors outside the folder; pass the factor here.

        Returns
        -------
        CpuSAE

        Raises
        ------
        FileNotFoundError
            A file is missing.
        IndexFormatError
            ``cfg.json`` is not valid JSON or lacks a field, or the weights cannot be read.
        InvalidArgumentError
            An architecture or option this class does not implement (e.g. ``"standard"``, ``"gated"``,
            ``normalize_activations="layer_norm"``).
        ShapeMismatchError, NonFiniteError
            Weights inconsistent with ``d_in`` / ``d_sae``, or not finite.
        ImportError
            ``safetensors`` is not installed.
        """
        root = Path(path)
        cfg_path, weights_path = root / CFG_FILENAME, root / WEIGHTS_FILENAME
        for p in (cfg_path, weights_path):
            if not p.is_file():
                raise FileNotFoundError(
                    f"{p}: no such file (a SAELens folder has {CFG_FILENAME} and {WEIGHTS_FILENAME})"
                )
        try:
            cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise IndexFormatError(f"{cfg_path}: not valid JSON: {exc}") from exc
        if not isinstance(cfg, dict):
            raise IndexFormatError(f"{cfg_path}: expected a JSON object, got {type(cfg).__name__}")
        missing = [f for f in ("architecture", "d_in", "d_sae") if f not in cfg]
        if missing:
            raise IndexFormatError(f"{cfg_path}: missing field(s) {', '.join(missing)}")
        arch = cfg["architecture"]
        if arch not in ("topk", "jumprelu"):
            raise InvalidArgumentError(
                f"architecture: must be 'topk' or 'jumprelu' for CpuSAE, got {arch!r} (from {cfg_path})"
            )
        norm = cfg.get("normalize_activations", "none")
        if norm not in _STATIC_NORMALIZATION:
            raise InvalidArgumentError(
                f"normalize_activations: CpuSAE supports {', '.join(map(repr, _STATIC_NORMALIZATION))}, got {norm!r}"
            )
        weights = _safetensors_load(weights_path)
        if arch == "jumprelu" and "threshold" not in weights and "log_threshold" in weights:
            weights["threshold"] = np.exp(weights.pop("log_threshold").astype(np.float64))
        need = ["W_enc", "b_enc", "W_dec", "b_dec"] + (["threshold"] if arch == "jumprelu" else [])
        absent = [n for n in need if n not in weights]
        if absent:
            raise IndexFormatError(f"{weights_path}: missing tensor(s) {', '.join(absent)}")
        d_in, d_sae = cfg["d_in"], cfg["d_sae"]
        if np.shape(weights["W_enc"]) != (d_in, d_sae):
            raise ShapeMismatchError(
                f"W_enc: cfg.json says (d_in, d_sae) = ({d_in}, {d_sae}), the weights have {np.shape(weights['W_enc'])}"
            )
        w_enc = weights["W_enc"].astype(np.float32)
        b_enc = weights["b_enc"].astype(np.float32)
        w_dec = weights["W_dec"].astype(np.float32)
        k = None
        if arch == "topk":
            if "k" not in cfg:
                raise IndexFormatError(f"{cfg_path}: a topk SAE needs the field k")
            k = cfg["k"]
            if cfg.get("rescale_acts_by_decoder_norm", False):
                # SAELens scales pre-activations by ||W_dec[j]|| and codes by 1/||W_dec[j]|| before decoding.
                norms = np.linalg.norm(w_dec.astype(np.float64), axis=1)
                w_enc = (w_enc * norms[None, :]).astype(np.float32)
                b_enc = (b_enc * norms).astype(np.float32)
                with np.errstate(divide="ignore", invalid="ignore"):
                    w_dec = (w_dec / norms[:, None]).astype(np.float32)
        return cls.from_arrays(
            w_enc,
            b_enc,
            w_dec,
            weights["b_dec"],
            k=k,
            threshold=weights.get("threshold") if arch == "jumprelu" else None,
            act_scale=1.0 if act_scale is None else act_scale,
            apply_b_dec_to_input=bool(cfg.get("apply_b_dec_to_input", True)),
        )

    # -- properties -------------------------------------------------------------------------------------------

    @property
    def architecture(self) -> Architecture:
        """``"topk"`` or ``"jumprelu"``."""
        return self._architecture

    @property
    def d_in(self) -> int:
        """Input width."""
        return self._core.d_in

    @property
    def d_sae(self) -> int:
        """Number of latents (the codes' ``dim``)."""
        return self._core.d_sae

    @property
    def k(self) -> int | None:
        """Latents kept per row (TopK), None for JumpReLU."""
        return self._k

    @property
    def act_scale(self) -> float:
        """The activation scale."""
        return float(self._core.act_scale)

    @property
    def nbytes(self) -> int:
        """Bytes of weights held by the core."""
        return self._core.nbytes

    def __repr__(self) -> str:
        return (
            f"CpuSAE(architecture={self._architecture!r}, d_in={self.d_in}, d_sae={self.d_sae}, k={self._k}, "
            f"act_scale={self.act_scale!r})"
        )

    # -- inference --------------------------------------------------------------------------------------------

    def _input(self, x: ArrayLike) -> NDArray[np.float32]:
        arr = np.asarray(x)
        if arr.dtype.kind not in "biuf":
            raise DTypeError(f"x: expected a real-valued array, got dtype {arr.dtype}")
        if arr.ndim == 1:
            arr = arr.reshape(1, -1)
        if arr.ndim != 2 or arr.shape[1] != self.d_in:
            raise ShapeMismatchError(f"x: expected shape (n, d_in) = (n, {self.d_in}), got {np.shape(x)}")
        with np.errstate(over="ignore"):  # float64 beyond float32 becomes inf, reported by position
            return np.ascontiguousarray(arr, dtype=np.float32)

    def encode(self, x: ArrayLike, *, num_threads: int | None = None) -> SparseBatch:
        """Sparse codes of the rows of ``x``.

        Parameters
        ----------
        x
            Activations, ``(n, d_in)`` (a 1-D array is one row); converted to float32.
        num_threads
            Worker threads (None: ``SPARSECORE_NUM_THREADS``, else all cores). The codes do not depend on it.

        Returns
        -------
        SparseBatch
            ``(n, d_sae)``, indices increasing within each row, only non-zero values: at most ``k`` per row
            (TopK; ties at the k-th value go to the lower latent index) or the latents above their threshold
            (JumpReLU).

        Raises
        ------
        ShapeMismatchError
            ``x`` is not ``(n, d_in)``.
        NonFiniteError
            ``x`` holds NaN or inf (the message gives the position), or a pre-activation overflows float32.
        DTypeError
            ``x`` is not real-valued.
        InvalidArgumentError
            Bad ``num_threads``.
        """
        xs = self._input(x)
        threads = check_num_threads(num_threads)
        if self._k is not None:
            arrays = self._core.encode_topk(xs, self._k, num_threads=threads)
        else:
            arrays = self._core.encode_jumprelu(xs, num_threads=threads)
        return SparseBatch._trusted(*arrays, self.d_sae)

    def decode(self, codes: SparseBatch, *, num_threads: int | None = None) -> NDArray[np.float32]:
        """Reconstruct activations: ``(codes @ W_dec + b_dec) / act_scale``.

        Parameters
        ----------
        codes
            A :class:`~sparsecore.SparseBatch` of dimension ``d_sae`` (e.g. from :meth:`encode`).
        num_threads
            Worker threads.

        Returns
        -------
        numpy.ndarray
            float32, ``(codes.n_rows, d_in)``.

        Raises
        ------
        ShapeMismatchError
            ``codes.dim != d_sae``.
        InvalidArgumentError
            ``codes`` is not a SparseBatch, or bad ``num_threads``.
        """
        if not isinstance(codes, SparseBatch):
            raise InvalidArgumentError(f"codes: must be a SparseBatch, got {type(codes).__name__}")
        if codes.dim != self.d_sae:
            raise ShapeMismatchError(f"codes: dim = {codes.dim} does not match d_sae = {self.d_sae}")
        return self._core.decode(codes._csr, num_threads=check_num_threads(num_threads))
