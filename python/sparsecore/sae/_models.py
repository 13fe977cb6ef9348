"""Sparse autoencoder models: TopK, BatchTopK, JumpReLU, ReLU (L1) and matching-pursuit SAEs.

Every model maps activations ``x (..., d_in)`` to codes ``(..., d_sae)`` and back. The common computation is

    x_c  = x * act_scale - b_dec                 (inputs scaled, then centred by the decoder bias)
    pre  = x_c @ W_enc + b_enc                   (pre-activations, float32)
    z    = activation(pre)                       (the architecture's sparsifying non-linearity)
    x̂    = (z @ W_dec + b_dec) / act_scale       (reconstruction, back in the units of x)

so users always pass raw activations; ``act_scale`` (a float32 scalar buffer, 1.0 unless training set it) only
conditions the optimisation. Arithmetic is float32 whatever the parameter and input dtypes (bfloat16 is upcast
after loading); results come back in the input's dtype.

References
----------
- L. Gao et al. "Scaling and evaluating sparse autoencoders" (OpenAI, 2024): TopK, AuxK, unit-norm decoder.
- B. Bussmann, P. Leask, N. Nanda. "BatchTopK Sparse Autoencoders" (2024).
- S. Rajamanoharan et al. "Jumping Ahead: Improving Reconstruction Fidelity with JumpReLU Sparse Autoencoders"
  (DeepMind, 2024): Heaviside with rectangle-kernel straight-through estimators.
- V. Costa et al. "From Flat to Hierarchical: Extracting Sparse Representations with Matching Pursuit" (2025).
"""

from __future__ import annotations

import abc
import math
import os
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from sparsecore._validate import check_float, is_int, nonnegative_float, positive_float, positive_int
from sparsecore.exceptions import DTypeError, InvalidArgumentError, NonFiniteError, ShapeMismatchError

__all__ = [
    "BatchTopKSAE",
    "JumpReLUSAE",
    "MatchingPursuitSAE",
    "ReLUSAE",
    "SparseAutoencoder",
    "TopKSAE",
]

#: Model parameter dtypes: float32, or bfloat16 for memory (arithmetic is float32 either way).
MODEL_DTYPES = (torch.float32, torch.bfloat16)
#: Input dtypes accepted by encode / forward (float16 is upcast too; float64 is refused rather than downcast).
INPUT_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
_DTYPE_NAMES = {torch.float32: "float32", torch.bfloat16: "bfloat16"}
# Momentum of BatchTopK's running threshold once 100 batches have been averaged (SAELens uses the same 0.01).
_THRESHOLD_MOMENTUM = 0.01
# Smallest decoder-row norm divided by when normalising (a zero row stays zero instead of becoming NaN).
_NORM_EPS = 1e-12


def dtype_name(dtype: torch.dtype) -> str:
    """``"float32"`` or ``"bfloat16"``."""
    return _DTYPE_NAMES[dtype]


def _check_dtype(dtype: object) -> torch.dtype:
    if dtype not in MODEL_DTYPES:
        raise DTypeError(f"dtype: must be torch.float32 or torch.bfloat16, got {dtype!r}")
    assert isinstance(dtype, torch.dtype)
    return dtype


def _init_generator(seed: object, generator: torch.Generator | None) -> torch.Generator | None:
    if seed is not None and generator is not None:
        raise InvalidArgumentError("seed: must be None when generator is given, got both")
    if generator is not None:
        if not isinstance(generator, torch.Generator):
            raise InvalidArgumentError(f"generator: must be a torch.Generator or None, got {generator!r}")
        return generator
    if seed is None:
        return None
    if not is_int(seed) or int(seed) < 0:  # type: ignore[call-overload]
        raise InvalidArgumentError(f"seed: must be None or an integer >= 0, got {seed!r}")
    g = torch.Generator()
    g.manual_seed(int(seed))  # type: ignore[call-overload]
    return g


class SparseAutoencoder(nn.Module, abc.ABC):
    """Base class of the sparse autoencoders (see the module docstring for the computation).

    Attributes
    ----------
    d_in : int
        Width of the activations.
    d_sae : int
        Number of latents (dictionary atoms).
    k : int or None
        Active latents per token for the top-k variants (TopK, BatchTopK on average, MP steps); None otherwise.
    architecture : str
        ``"topk"``, ``"batchtopk"``, ``"jumprelu"``, ``"relu"`` or ``"mp"``.
    W_enc : Tensor
        Encoder ``(d_in, d_sae)``.
    b_enc : Tensor
        Encoder bias ``(d_sae,)``.
    W_dec : Tensor
        Decoder ``(d_sae, d_in)``, one atom per row.
    b_dec : Tensor
        Decoder bias ``(d_in,)``, also subtracted from the (scaled) input before encoding.
    act_scale : Tensor
        Float32 scalar buffer: inputs are multiplied by it before encoding, reconstructions divided by it.

    Notes
    -----
    Initialisation (Gao et al.): decoder rows are random unit vectors, the encoder is the decoder's transpose,
    biases are zero. For TopK and BatchTopK the encoder is scaled by ``1/sqrt(3)`` (the row norm of a default
    ``nn.Linear`` of any width, as eai-sparsify starts), which trains to a lower FVU than a unit-norm encoder;
    the selection at step 0 is the same, only the encoder's relative step size differs. ``seed`` or
    ``generator`` make it reproducible; with neither, torch's global generator is used.
    """

    architecture: ClassVar[str] = ""
    _needs_k: ClassVar[bool] = False
    # The encoder starts as the decoder's transpose times this (see the class notes).
    _encoder_init_scale: ClassVar[float] = 1.0
    W_enc: Tensor
    b_enc: Tensor
    W_dec: nn.Parameter
    b_dec: nn.Parameter
    act_scale: Tensor

    def __init__(
        self,
        d_in: int,
        d_sae: int,
        k: int | None,
        *,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
        seed: int | None = None,
        generator: torch.Generator | None = None,
        tied: bool = False,
    ) -> None:
        super().__init__()
        self.d_in = positive_int(d_in, "d_in")
        self.d_sae = positive_int(d_sae, "d_sae")
        if k is not None or self._needs_k:
            k = positive_int(k, "k")
            if k > self.d_sae:
                raise InvalidArgumentError(f"k: must be an integer <= d_sae = {self.d_sae}, got {k}")
        self.k: int | None = k
        dtype = _check_dtype(dtype)
        gen = _init_generator(seed, generator)
        w = torch.randn(self.d_sae, self.d_in, generator=gen, dtype=torch.float32)
        w /= w.norm(dim=1, keepdim=True).clamp_min(_NORM_EPS)
        self.W_dec = nn.Parameter(w.to(device=device, dtype=dtype))
        if not tied:
            self.W_enc = nn.Parameter((w.T * self._encoder_init_scale).contiguous().to(device=device, dtype=dtype))
            self.b_enc = nn.Parameter(torch.zeros(self.d_sae, device=device, dtype=dtype))
        self.b_dec = nn.Parameter(torch.zeros(self.d_in, device=device, dtype=dtype))
        self.register_buffer("act_scale", torch.tensor(1.0, dtype=torch.float32, device=device))

    # -- properties ----------------------------------------------------------------------------------------------

    @property
    def dtype(self) -> torch.dtype:
        """Dtype of the weights (float32 or bfloat16)."""
        return self.W_dec.dtype

    @property
    def device(self) -> torch.device:
        """Device of the weights."""
        return self.W_dec.device

    def extra_repr(self) -> str:
        k = "" if self.k is None else f", k={self.k}"
        return f"d_in={self.d_in}, d_sae={self.d_sae}{k}, dtype={dtype_name(self.dtype)}"

    # -- checks --------------------------------------------------------------------------------------------------

    def _check_x(self, x: object, name: str = "x", width: int | None = None) -> Tensor:
        width = self.d_in if width is None else width
        if not isinstance(x, Tensor):
            raise DTypeError(f"{name}: must be a torch.Tensor, got {type(x).__name__}")
        if x.dtype not in INPUT_DTYPES:
            raise DTypeError(f"{name}: must be float32, bfloat16 or float16, got {x.dtype}")
        if x.dim() < 1 or x.shape[-1] != width:
            raise ShapeMismatchError(f"{name}: last dimension must be {width}, got shape {tuple(x.shape)}")
        if not bool(torch.isfinite(x).all()):
            raise NonFiniteError(f"{name}: contains NaN or infinite values")
        return x

    # -- the computation -----------------------------------------------------------------------------------------

    def _center(self, x: Tensor) -> Tensor:
        """``x * act_scale - b_dec`` in float32."""
        return x.float() * self.act_scale - self.b_dec.float()

    def _pre(self, xc: Tensor) -> Tensor:
        """Pre-activations of centred, scaled inputs (float32)."""
        return xc @ self.W_enc.float() + self.b_enc.float()

    @abc.abstractmethod
    def _codes(self, xc: Tensor) -> tuple[Tensor, Tensor]:
        """``(codes, pre)`` of centred, scaled inputs, float32: the architecture's encoding."""

    def _decode_scaled(self, codes: Tensor) -> Tensor:
        """Reconstruction in the scaled units (before dividing by ``act_scale``), float32."""
        return codes.float() @ self.W_dec.float() + self.b_dec.float()

    def pre_acts(self, x: Tensor) -> Tensor:
        """Pre-activations ``(x * act_scale - b_dec) @ W_enc + b_enc``, computed and returned in float32.

        Parameters
        ----------
        x
            Activations ``(..., d_in)``, float32, bfloat16 or float16.

        Returns
        -------
        Tensor
            ``(..., d_sae)`` float32.

        Raises
        ------
        DTypeError
            ``x`` is not a float32/bfloat16/float16 tensor.
        ShapeMismatchError
            The last dimension of ``x`` is not ``d_in``.
        NonFiniteError
            ``x`` holds NaN or infinity.
        """
        x = self._check_x(x)
        return self._pre(self._center(x))

    def encode(self, x: Tensor) -> Tensor:
        """Dense codes of ``x`` (zeros where a latent is inactive).

        Parameters
        ----------
        x
            Activations ``(..., d_in)``.

        Returns
        -------
        Tensor
            ``(..., d_sae)`` in the dtype of ``x``.

        Raises
        ------
        DTypeError, ShapeMismatchError, NonFiniteError
            As :meth:`pre_acts`.
        """
        x = self._check_x(x)
        codes, _ = self._codes(self._center(x))
        return codes.to(x.dtype)

    def encode_sparse(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """The active latents of each row of ``x`` as ``(indices, values)``.

        For TopK, each row has exactly ``k`` entries (the top-k, largest first; a value may be 0 when fewer than
        ``k`` pre-activations are positive). For the other variants the number of active latents varies per row:
        the width is the largest count in the batch, rows are sorted by value (largest first) and padded with
        index 0 and value 0.

        Parameters
        ----------
        x
            Activations ``(..., d_in)``.

        Returns
        -------
        indices : Tensor
            ``(..., width)`` int64.
        values : Tensor
            ``(..., width)`` in the dtype of ``x``.

        Raises
        ------
        DTypeError, ShapeMismatchError, NonFiniteError
            As :meth:`pre_acts`.
        """
        codes = self.encode(x)
        width = int((codes != 0).sum(dim=-1).max()) if codes.numel() else 0
        values, indices = codes.float().topk(width, dim=-1)
        indices = torch.where(values != 0, indices, torch.zeros_like(indices))
        return indices, values.to(codes.dtype)

    def decode(self, codes: Tensor) -> Tensor:
        """Reconstruct activations from codes: ``(codes @ W_dec + b_dec) / act_scale``.

        Parameters
        ----------
        codes
            ``(..., d_sae)`` float32/bfloat16/float16.

        Returns
        -------
        Tensor
            ``(..., d_in)`` in the dtype of ``codes``.

        Raises
        ------
        DTypeError, ShapeMismatchError, NonFiniteError
            ``codes`` has another dtype, a last dimension other than ``d_sae``, or non-finite values.
        """
        codes = self._check_x(codes, "codes", self.d_sae)
        return (self._decode_scaled(codes) / self.act_scale).to(codes.dtype)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Encode and decode ``x``.

        Parameters
        ----------
        x
            Activations ``(..., d_in)``.

        Returns
        -------
        recon : Tensor
            ``(..., d_in)`` reconstruction, dtype of ``x``.
        codes : Tensor
            ``(..., d_sae)`` dense codes, dtype of ``x``.

        Raises
        ------
        DTypeError, ShapeMismatchError, NonFiniteError
            As :meth:`pre_acts`.
        """
        x = self._check_x(x)
        codes, _ = self._codes(self._center(x))
        recon = self._decode_scaled(codes) / self.act_scale
        return recon.to(x.dtype), codes.to(x.dtype)

    def sparsity_loss(self, codes: Tensor, pre_acts: Tensor) -> Tensor:
        """The architecture's sparsity penalty (already multiplied by its coefficient), averaged over tokens.

        Zero for the top-k variants (TopK, BatchTopK, MP), whose sparsity is structural.

        Parameters
        ----------
        codes
            ``(..., d_sae)`` codes.
        pre_acts
            ``(..., d_sae)`` pre-activations.

        Returns
        -------
        Tensor
            A float32 scalar.
        """
        return codes.new_zeros((), dtype=torch.float32)

    # -- decoder geometry ----------------------------------------------------------------------------------------

    @torch.no_grad()
    def set_decoder_norm_to_unit_norm_(self) -> None:
        """Rescale every decoder row to unit L2 norm, in place (an all-zero row stays zero)."""
        w = self.W_dec.float()
        self.W_dec.copy_(w / w.norm(dim=1, keepdim=True).clamp_min(_NORM_EPS))

    @torch.no_grad()
    def remove_gradient_parallel_to_decoder_directions_(self) -> None:
        """Project out of ``W_dec.grad`` the component parallel to each decoder row, in place.

        With unit-norm rows, the remaining gradient is tangent to the sphere, so a step followed by
        renormalisation does not waste the update on the row's length. Does nothing without a gradient.
        """
        grad = self.W_dec.grad
        if grad is None:
            return
        w = self.W_dec.float()
        w = w / w.norm(dim=1, keepdim=True).clamp_min(_NORM_EPS)
        g = grad.float()
        g -= (g * w).sum(dim=1, keepdim=True) * w
        grad.copy_(g)

    # -- files ---------------------------------------------------------------------------------------------------

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write this model as a SAELens folder (``cfg.json`` + ``sae_weights.safetensors``), atomically.

        See :func:`sparsecore.sae.save`, which this calls, for the layout.

        Parameters
        ----------
        path
            The folder to write (replaced if it exists).
        """
        from sparsecore.sae._io import save  # the file module imports this one

        save(self, path)

    # -- description ---------------------------------------------------------------------------------------------

    def _extra_config(self) -> dict[str, Any]:
        return {}

    def config(self) -> dict[str, Any]:
        """A JSON-serialisable description: architecture, sizes, hyperparameters, dtype and ``act_scale``.

        Returns
        -------
        dict
            ``{"architecture", "d_in", "d_sae", "k", "dtype", "act_scale", ...}`` plus the architecture's own
            hyperparameters (``bandwidth``, ``l1_coefficient``, ...).
        """
        return {
            "architecture": self.architecture,
            "d_in": self.d_in,
            "d_sae": self.d_sae,
            "k": self.k,
            "dtype": dtype_name(self.dtype),
            "act_scale": float(self.act_scale),
            **self._extra_config(),
        }


class _PreActivationSAE(SparseAutoencoder):
    """An SAE whose codes are a non-linearity of the pre-activations ``xc @ W_enc + b_enc`` (all but MP)."""

    @abc.abstractmethod
    def _activate(self, pre: Tensor) -> Tensor:
        """Codes (float32) from pre-activations (float32); the architecture's non-linearity."""

    def _codes(self, xc: Tensor) -> tuple[Tensor, Tensor]:
        pre = self._pre(xc)
        return self._activate(pre), pre


class TopKSAE(_PreActivationSAE):
    """TopK sparse autoencoder (Gao et al. 2024): keep the ``k`` largest pre-activations, then ReLU.

    Parameters
    ----------
    d_in
        Width of the activations.
    d_sae
        Number of latents.
    k
        Active latents per token, ``1 <= k <= d_sae``.
    dtype
        ``torch.float32`` or ``torch.bfloat16`` parameters.
    device
        Where the parameters live.
    seed, generator
        Reproducible initialisation (at most one of them).

    Raises
    ------
    InvalidArgumentError
        A size is not a positive integer, or ``k > d_sae``.
    DTypeError
        ``dtype`` is neither float32 nor bfloat16.
    """

    architecture: ClassVar[str] = "topk"
    _needs_k: ClassVar[bool] = True
    _encoder_init_scale: ClassVar[float] = 1 / math.sqrt(3)
    k: int

    def __init__(
        self,
        d_in: int,
        d_sae: int,
        k: int,
        *,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
        seed: int | None = None,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__(d_in, d_sae, k, dtype=dtype, device=device, seed=seed, generator=generator)

    def _activate(self, pre: Tensor) -> Tensor:
        values, indices = pre.topk(self.k, dim=-1)
        return torch.zeros_like(pre).scatter(-1, indices, values.relu())

    def encode_sparse(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """The top-``k`` latents of each row: ``(indices int64 (..., k), values (..., k))``, largest first.

        A value is 0 where fewer than ``k`` pre-activations are positive (its index is still the latent's).

        Raises
        ------
        DTypeError, ShapeMismatchError, NonFiniteError
            As :meth:`pre_acts`.
        """
        x = self._check_x(x)
        values, indices = self._pre(self._center(x)).topk(self.k, dim=-1)
        return indices, values.relu().to(x.dtype)


class BatchTopKSAE(_PreActivationSAE):
    """BatchTopK sparse autoencoder (Bussmann et al. 2024).

    In training mode the ``k * n_tokens`` largest (positive) pre-activations of the whole batch are kept, over
    all leading dimensions flattened, so the number of active latents per token averages ``k`` while varying from
    token to token. Each training batch updates a running threshold, the mean (then an exponential average with
    momentum 0.01 after 100 batches) of the smallest kept activation. In eval mode the model is a JumpReLU with that
    one threshold for every latent: ``z = pre * (pre > threshold)``, independent of the batch.

    Parameters
    ----------
    d_in, d_sae, k, dtype, device, seed, generator
        As :class:`TopKSAE`; ``k`` is the average number of active latents per token.

    Attributes
    ----------
    threshold : Tensor
        Float32 scalar buffer, the running threshold used in eval mode (0 before any training batch).
    """

    architecture: ClassVar[str] = "batchtopk"
    _needs_k: ClassVar[bool] = True
    _encoder_init_scale: ClassVar[float] = 1 / math.sqrt(3)
    k: int
    threshold: Tensor
    threshold_updates: Tensor

    def __init__(
        self,
        d_in: int,
        d_sae: int,
        k: int,
        *,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
        seed: int | None = None,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__(d_in, d_sae, k, dtype=dtype, device=device, seed=seed, generator=generator)
        self.register_buffer("threshold", torch.tensor(0.0, dtype=torch.float32, device=device))
        self.register_buffer("threshold_updates", torch.tensor(0, dtype=torch.int64, device=device))

    def _activate(self, pre: Tensor) -> Tensor:
        if not self.training:
            return pre * (pre > self.threshold)
        flat = pre.relu().reshape(-1)
        n_tokens = flat.numel() // self.d_sae
        values, indices = flat.topk(min(self.k * n_tokens, flat.numel()))
        codes = torch.zeros_like(flat).scatter(0, indices, values).reshape(pre.shape)
        self._update_threshold(values)
        return codes

    @torch.no_grad()
    def _update_threshold(self, kept: Tensor) -> None:
        positive = kept[kept > 0]
        if positive.numel() == 0:
            return
        smallest = positive.min().float()
        n = int(self.threshold_updates)
        rate = max(_THRESHOLD_MOMENTUM, 1.0 / (n + 1))
        self.threshold.copy_(self.threshold + rate * (smallest - self.threshold))
        self.threshold_updates.add_(1)

    def export_jumprelu(self) -> JumpReLUSAE:
        """An equivalent :class:`JumpReLUSAE` (the eval-mode behaviour of this model).

        The JumpReLU gets the same weights, ``act_scale`` and, for every latent, this model's running threshold
        (raised to the smallest positive float32 where it is 0, which only matters for pre-activations below
        1e-38).

        Returns
        -------
        JumpReLUSAE
            In eval mode, on the same device and dtype.
        """
        out = JumpReLUSAE(self.d_in, self.d_sae, dtype=self.dtype, device=self.device, seed=0)
        thr = max(float(self.threshold), torch.finfo(torch.float32).tiny)
        with torch.no_grad():
            out.W_enc.copy_(self.W_enc)
            out.b_enc.copy_(self.b_enc)
            out.W_dec.copy_(self.W_dec)
            out.b_dec.copy_(self.b_dec)
            out.act_scale.copy_(self.act_scale)
            out.log_threshold.fill_(math.log(thr))
        return out.eval()


class _JumpReLUFn(torch.autograd.Function):
    """``pre * H(pre - θ)``; straight-through gradient for ``pre``, rectangle-kernel pseudo-gradient for ``θ``."""

    @staticmethod
    def forward(ctx: Any, pre: Tensor, threshold: Tensor, bandwidth: float) -> Tensor:
        ctx.save_for_backward(pre, threshold)
        ctx.bandwidth = bandwidth
        return pre * (pre > threshold)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, Tensor, None]:
        pre, threshold = ctx.saved_tensors
        eps = ctx.bandwidth
        grad_pre = grad * (pre > threshold)
        kernel = ((pre - threshold).abs() < eps / 2).to(grad.dtype)
        grad_thr = (-(threshold / eps) * kernel * grad).reshape(-1, pre.shape[-1]).sum(0)
        return grad_pre, grad_thr, None


class _StepFn(torch.autograd.Function):
    """``H(pre - θ)``; no gradient for ``pre``, ``-K((pre - θ) / ε) / ε`` for ``θ`` (K the unit rectangle)."""

    @staticmethod
    def forward(ctx: Any, pre: Tensor, threshold: Tensor, bandwidth: float) -> Tensor:
        ctx.save_for_backward(pre, threshold)
        ctx.bandwidth = bandwidth
        return (pre > threshold).to(pre.dtype)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, Tensor, None]:
        pre, threshold = ctx.saved_tensors
        eps = ctx.bandwidth
        kernel = ((pre - threshold).abs() < eps / 2).to(grad.dtype)
        grad_thr = (-(1.0 / eps) * kernel * grad).reshape(-1, pre.shape[-1]).sum(0)
        return torch.zeros_like(pre), grad_thr, None


class JumpReLUSAE(_PreActivationSAE):
    """JumpReLU sparse autoencoder (Rajamanoharan et al. 2024): ``z = pre * H(pre - θ)``, one ``θ`` per latent.

    The thresholds are learned as ``log_threshold`` (a float32 parameter whatever the model dtype, so ``θ > 0``).
    The Heaviside step has no useful gradient; training uses straight-through estimators with a rectangle kernel
    of width ``bandwidth``: pre-activations within ``bandwidth / 2`` of ``θ`` give ``θ`` a pseudo-gradient, both in
    the reconstruction (through ``z``) and in the L0 sparsity loss :meth:`sparsity_loss`.

    Parameters
    ----------
    d_in, d_sae, dtype, device, seed, generator
        As :class:`TopKSAE`.
    bandwidth
        Width ``ε > 0`` of the rectangle kernel, in pre-activation units.
    init_threshold
        Initial ``θ > 0`` of every latent.
    l0_coefficient
        Weight ``λ >= 0`` of the L0 penalty in :meth:`sparsity_loss` (the training loss is normalised MSE + λ·L0).

    Attributes
    ----------
    threshold : Tensor
        ``exp(log_threshold)``, float32 ``(d_sae,)``.
    """

    architecture: ClassVar[str] = "jumprelu"
    log_threshold: nn.Parameter

    def __init__(
        self,
        d_in: int,
        d_sae: int,
        *,
        bandwidth: float = 0.001,
        init_threshold: float = 0.001,
        l0_coefficient: float = 1e-3,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
        seed: int | None = None,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__(d_in, d_sae, None, dtype=dtype, device=device, seed=seed, generator=generator)
        self.bandwidth = positive_float(bandwidth, "bandwidth")
        init = positive_float(init_threshold, "init_threshold")
        self.l0_coefficient = nonnegative_float(l0_coefficient, "l0_coefficient")
        self.log_threshold = nn.Parameter(torch.full((self.d_sae,), math.log(init), dtype=torch.float32, device=device))

    @property
    def threshold(self) -> Tensor:
        """Per-latent thresholds ``exp(log_threshold)``, float32 ``(d_sae,)``."""
        return self.log_threshold.exp()

    def _activate(self, pre: Tensor) -> Tensor:
        out: Tensor = _JumpReLUFn.apply(pre, self.threshold, self.bandwidth)
        return out

    def sparsity_loss(self, codes: Tensor, pre_acts: Tensor) -> Tensor:
        """``l0_coefficient`` * the mean number of active latents per token, with a pseudo-gradient for ``θ``.

        Parameters
        ----------
        codes
            Unused (the L0 is taken from ``pre_acts`` so that its gradient reaches the thresholds).
        pre_acts
            ``(..., d_sae)`` float32 pre-activations.

        Returns
        -------
        Tensor
            A float32 scalar.
        """
        step: Tensor = _StepFn.apply(pre_acts.float(), self.threshold, self.bandwidth)
        return self.l0_coefficient * step.sum(dim=-1).mean()

    def _extra_config(self) -> dict[str, Any]:
        return {"bandwidth": self.bandwidth, "l0_coefficient": self.l0_coefficient}


class ReLUSAE(_PreActivationSAE):
    """ReLU sparse autoencoder with an L1 penalty weighted by decoder norms (Anthropic, April 2024 update).

    Parameters
    ----------
    d_in, d_sae, dtype, device, seed, generator
        As :class:`TopKSAE`.
    l1_coefficient
        Weight ``λ >= 0`` of the penalty ``Σ_i z_i ‖W_dec[i]‖`` (mean over tokens) in :meth:`sparsity_loss`.
    """

    architecture: ClassVar[str] = "relu"

    def __init__(
        self,
        d_in: int,
        d_sae: int,
        l1_coefficient: float,
        *,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
        seed: int | None = None,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__(d_in, d_sae, None, dtype=dtype, device=device, seed=seed, generator=generator)
        self.l1_coefficient = nonnegative_float(l1_coefficient, "l1_coefficient")

    def _activate(self, pre: Tensor) -> Tensor:
        return pre.relu()

    def sparsity_loss(self, codes: Tensor, pre_acts: Tensor) -> Tensor:
        """``l1_coefficient * mean over tokens of Σ_i |z_i| ‖W_dec[i]‖``.

        Returns
        -------
        Tensor
            A float32 scalar.
        """
        norms = self.W_dec.float().norm(dim=1)
        penalty: Tensor = (codes.float().abs() * norms).sum(dim=-1).mean()
        return self.l1_coefficient * penalty

    def _extra_config(self) -> dict[str, Any]:
        return {"l1_coefficient": self.l1_coefficient}


class MatchingPursuitSAE(SparseAutoencoder):
    """Matching-pursuit sparse autoencoder (Costa et al. 2025): a tied dictionary encoded greedily.

    Encoding runs ``k`` steps of matching pursuit on the centred, scaled input ``r = x * act_scale - b_dec``: pick
    the atom ``i`` with the largest inner product ``c = ⟨r, W_dec[i]⟩``, add ``c`` to ``z_i``, subtract
    ``c · W_dec[i]`` from ``r``. A row stops early once its largest inner product is ``<= residual_threshold``
    (so codes are never negative). An atom may be picked twice; its code is the sum. Memory is
    ``O(batch * d_sae)``: each step's inner products are discarded once the atom is chosen.

    Parameters
    ----------
    d_in, d_sae, k, dtype, device, seed, generator
        As :class:`TopKSAE`; ``k`` is the number of pursuit steps (so at most ``k`` active latents).
    residual_threshold
        Stop a row when no atom's inner product with its residual exceeds this (``>= 0``).

    Notes
    -----
    The encoder is tied: ``W_enc`` is a property returning ``W_dec.T`` (a view, not a separate parameter), and
    ``b_enc`` is a constant zero vector (matching pursuit has no encoder bias). :meth:`pre_acts` returns the
    first step's inner products ``(x * act_scale - b_dec) @ W_dec.T``. Atoms should stay unit-norm
    (:meth:`set_decoder_norm_to_unit_norm_`, which training calls every step).
    """

    architecture: ClassVar[str] = "mp"
    _needs_k: ClassVar[bool] = True
    k: int

    def __init__(
        self,
        d_in: int,
        d_sae: int,
        k: int,
        *,
        residual_threshold: float = 0.0,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
        seed: int | None = None,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__(d_in, d_sae, k, dtype=dtype, device=device, seed=seed, generator=generator, tied=True)
        self.residual_threshold = check_float(residual_threshold, "residual_threshold", low=0.0)

    @property
    def W_enc(self) -> Tensor:  # type: ignore[override]  # noqa: N802
        """The tied encoder ``W_dec.T``, ``(d_in, d_sae)`` (a view sharing the decoder's storage)."""
        return self.W_dec.T

    @property
    def b_enc(self) -> Tensor:  # type: ignore[override]
        """Zeros ``(d_sae,)``: matching pursuit has no encoder bias."""
        return torch.zeros(self.d_sae, dtype=self.dtype, device=self.device)

    def _pre(self, xc: Tensor) -> Tensor:
        return xc @ self.W_dec.float().T

    def _codes(self, xc: Tensor) -> tuple[Tensor, Tensor]:
        shape = xc.shape
        residual = xc.reshape(-1, self.d_in)
        atoms = self.W_dec.float()
        n = residual.shape[0]
        picked: list[Tensor] = []
        amounts: list[Tensor] = []
        active = torch.ones(n, dtype=torch.bool, device=xc.device)
        first: Tensor | None = None
        for _ in range(self.k):
            with torch.no_grad():
                inner = residual @ atoms.T
                if first is None:
                    first = inner
                best, index = inner.max(dim=1)
                active = active & (best > self.residual_threshold)
            if not bool(active.any()):
                break
            chosen = atoms[index]
            amount = (residual * chosen).sum(dim=1) * active
            residual = residual - amount[:, None] * chosen
            picked.append(index)
            amounts.append(amount)
        codes = residual.new_zeros(n, self.d_sae)
        if picked:
            codes = codes.scatter_add(1, torch.stack(picked, dim=1), torch.stack(amounts, dim=1))
        pre = first if first is not None else residual.new_zeros(n, self.d_sae)
        return codes.reshape(*shape[:-1], self.d_sae), pre.reshape(*shape[:-1], self.d_sae)

    def _extra_config(self) -> dict[str, Any]:
        return {"residual_threshold": self.residual_threshold}


#: Model class of each ``architecture`` string.
ARCHITECTURES: dict[str, type[SparseAutoencoder]] = {
    cls.architecture: cls for cls in (TopKSAE, BatchTopKSAE, JumpReLUSAE, ReLUSAE, MatchingPursuitSAE)
}


def from_config(cfg: dict[str, Any], *, device: torch.device | str | None = None) -> SparseAutoencoder:
    """A freshly initialised model described by ``cfg`` (as :meth:`SparseAutoencoder.config` returns).

    Raises
    ------
    InvalidArgumentError
        Unknown architecture or bad hyperparameters.
    """
    arch = cfg.get("architecture")
    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}.get(str(cfg.get("dtype", "float32")))
    if dtype is None:
        raise DTypeError(f"dtype: must be 'float32' or 'bfloat16', got {cfg.get('dtype')!r}")
    common: dict[str, Any] = {"dtype": dtype, "device": device, "seed": 0}
    sae: SparseAutoencoder
    if arch == "topk":
        sae = TopKSAE(cfg["d_in"], cfg["d_sae"], cfg["k"], **common)
    elif arch == "batchtopk":
        sae = BatchTopKSAE(cfg["d_in"], cfg["d_sae"], cfg["k"], **common)
    elif arch == "jumprelu":
        sae = JumpReLUSAE(
            cfg["d_in"],
            cfg["d_sae"],
            bandwidth=cfg.get("bandwidth", 0.001),
            l0_coefficient=cfg.get("l0_coefficient", 1e-3),
            **common,
        )
    elif arch == "relu":
        sae = ReLUSAE(cfg["d_in"], cfg["d_sae"], cfg.get("l1_coefficient", 0.0), **common)
    elif arch == "mp":
        sae = MatchingPursuitSAE(
            cfg["d_in"], cfg["d_sae"], cfg["k"], residual_threshold=cfg.get("residual_threshold", 0.0), **common
        )
    else:
        raise InvalidArgumentError(f"architecture: must be one of {', '.join(map(repr, ARCHITECTURES))}, got {arch!r}")
    with torch.no_grad():
        sae.act_scale.fill_(float(cfg.get("act_scale", 1.0)))
    return sae
