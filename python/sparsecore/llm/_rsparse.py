"""R-Sparse: activation sparsity with a low-rank path for the inactive inputs; TEAL's magnitude threshold as rank 0.

Per ``nn.Linear`` of the decoder layers (attention and MLP projections), with weight ``W`` (``d_out x d_in``):

- offline, the rank-``r`` truncated SVD ``U S V^T`` of ``W`` (``torch.linalg.svd`` in float32, the ``r`` largest
  singular values; skipped for ``r = 0``);
- a threshold ``tau`` calibrated on the layer's inputs over the real tokens of calibration data: with the
  ``|x|`` values sorted ascending ``v_1 <= ... <= v_N``, ``tau = v_k`` for ``k = n_kept(sparsity, N)``
  (``round(sparsity * N)``, halves up, at least 1), so a ``k / N`` fraction (``sparsity`` to within ``1 / 2N``)
  of the calibration entries has ``|x| <= tau``; above ``max_samples`` values per layer, ``tau`` is the same
  statistic of a uniform random sample of them;
- the forward ``y = W (x * m) + U S V^T (x * (1 - m)) + b`` with ``m = |x| > tau``: large inputs use the exact
  weight, small ones its low-rank approximation. ``r = min(W.shape)`` is the dense layer (to rounding), ``r = 0``
  is TEAL's magnitude sparsity (:func:`magnitude_sparsity`).

How the forward runs: on CUDA, for up to :data:`GEMV_MAX_ROWS` tokens, through :func:`sparsecore.gpu.sparse_gemv`
(which reads only the active columns of ``W``); on CPU with one token (batch-1 decoding), as a gather of the
active columns (``F.embedding_bag`` over the rows of a transposed copy of ``W``, which reads only the active ones;
the copy is made at the first :meth:`RSparse.apply` and kept by the object, so CPU use holds the weights twice
until the object is dropped; a changed weight is copied again); otherwise as the masked dense formula.
:meth:`RSparse.apply` installs the forward on the layers (an instance ``forward``; the weights, module tree and
state dict are untouched) and :meth:`RSparse.remove` (or leaving the ``with`` block, also on error) deletes it.

R-Sparse also searches a per-layer sparsity / rank allocation. Here ``sparsity`` is one fraction for every layer or
a mapping from layer names (or their last component, e.g. ``"down_proj"``) to fractions, so an allocation found
elsewhere can be applied; one ``rank`` serves every layer. :attr:`RSparse.sparsity` is then the mean weighted by
each layer's weight size (``d_in * d_out``, the multiply-adds of a token), i.e. the fraction of the weight columns
a token skips.

References
----------
- Z. Zhang et al. "R-Sparse: Rank-Aware Activation Sparsity for Efficient LLM Inference" (ICLR 2025).
- J. Liu et al. "Training-Free Activation Sparsity in Large Language Models" (TEAL, ICLR 2025).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from types import TracebackType
from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812
from torch import Tensor, nn

from sparsecore._validate import check_bool, check_float, is_int, positive_int
from sparsecore.exceptions import InvalidArgumentError
from sparsecore.llm._calib import calibration_batches, run_with_input_hooks
from sparsecore.llm._nm import _targets
from sparsecore.llm._steering import n_kept

__all__ = ["GEMV_MAX_ROWS", "RSparse", "magnitude_sparsity", "rsparse_reference"]

#: Up to this many tokens per call the CUDA path uses sparse_gemv (meant for decoding; prefill is dense-shaped).
GEMV_MAX_ROWS = 8
# embedding_bag offsets of a single bag (the CPU gather path).
_OFFSET0 = torch.zeros(1, dtype=torch.long)
# Calibration |x| values kept per layer for the threshold: the sample quantile's standard error is
# sqrt(p (1 - p) / n) <= 0.1 % at n = 2^18, and at most 2n float32 (2 MiB) per layer are held while sampling.
_MAX_SAMPLES = 1 << 18


def rsparse_reference(x: Tensor, weight: Tensor, bias: Tensor | None, tau: float, lowrank: Any = None) -> Tensor:
    """The masked dense formula ``W (x * m) + U diag(S) V^T (x * (1 - m)) + b``, ``m = |x| > tau``.

    Parameters
    ----------
    x
        ``(..., d_in)`` input.
    weight
        ``(d_out, d_in)``.
    bias
        ``(d_out,)`` or None.
    tau
        The threshold.
    lowrank
        ``(U, S, V)`` with shapes ``(d_out, r)``, ``(r,)``, ``(d_in, r)``, or None for rank 0.

    Returns
    -------
    Tensor
        ``(..., d_out)`` in ``x``'s dtype.
    """
    active = x.abs() > tau
    zero = torch.zeros((), dtype=x.dtype, device=x.device)
    y = F.linear(torch.where(active, x, zero), weight)
    if lowrank is not None:
        u, s, v = lowrank
        y = y + ((torch.where(active, zero, x) @ v) * s) @ u.t()
    return y if bias is None else y + bias


class _Layer:
    """One layer's calibrated state."""

    def __init__(
        self, linear: nn.Linear, tau: float, lowrank: tuple[Tensor, Tensor, Tensor] | None, sparsity: float = 0.0
    ) -> None:
        self.linear = linear
        self.tau = tau
        self.sparsity = sparsity
        self.lowrank = lowrank
        # U diag(S) and V for the CPU gather path (one addmv instead of a matmul, a scale and a matmul)
        self.us_v = None if lowrank is None else ((lowrank[0] * lowrank[1]).contiguous(), lowrank[2])
        self.weight_t: Tensor | None = None  # the transposed copy for the CPU gather (cached across apply calls)
        self.weight_key: tuple[int, int] = (0, -1)  # (data_ptr, _version) of the weight it was copied from
        self.inactive = 0  # tracked counts
        self.total = 0


class RSparse:
    """Calibrated R-Sparse (or TEAL, rank 0) state of a model's linear layers; see the module docstring.

    Build it with :meth:`calibrate` (or :func:`magnitude_sparsity`), then ``with rs.apply(): ...`` (or
    ``rs.apply()`` ... ``rs.remove()``).

    Attributes
    ----------
    model : torch.nn.Module
    sparsity : float
        The calibrated fraction of inputs below the threshold; with per-layer fractions, their mean weighted by
        each layer's weight size (see :attr:`layer_sparsity`).
    rank : int
        The rank of the low-rank path (0: none).
    thresholds : dict of str to float
        Layer name -> ``tau``.
    factors : dict of str to tuple of Tensor
        Layer name -> ``(U, S, V)`` in the weight's dtype and device (empty when ``rank == 0``).
    applied : bool
        Whether the sparse forward is installed.
    """

    def __init__(self, model: nn.Module, sparsity: float, rank: int, layers: dict[str, _Layer]) -> None:
        self.model = model
        self.sparsity = sparsity
        self.rank = rank
        self._layers = layers
        self.applied = False
        self._track = False

    def __repr__(self) -> str:
        return (
            f"RSparse(sparsity={self.sparsity:g}, rank={self.rank}, layers={len(self._layers)}, applied={self.applied})"
        )

    @property
    def layer_sparsity(self) -> dict[str, float]:
        """Layer name -> the fraction of its inputs calibrated to the low-rank path."""
        return {name: layer.sparsity for name, layer in self._layers.items()}

    @property
    def thresholds(self) -> dict[str, float]:
        """Layer name -> calibrated threshold ``tau``."""
        return {name: layer.tau for name, layer in self._layers.items()}

    @property
    def factors(self) -> dict[str, tuple[Tensor, Tensor, Tensor]]:
        """Layer name -> ``(U, S, V)`` of the rank-``rank`` truncation (empty for rank 0)."""
        return {name: layer.lowrank for name, layer in self._layers.items() if layer.lowrank is not None}

    @classmethod
    @torch.no_grad()
    def calibrate(
        cls,
        model: nn.Module,
        calibration: object,
        sparsity: float | Mapping[str, float] = 0.5,
        *,
        rank: int,
        tokenizer: Any = None,
        layers: Sequence[str] | None = None,
        max_samples: int = _MAX_SAMPLES,
        seed: int = 0,
    ) -> RSparse:
        """Compute the SVDs and calibrate the per-layer thresholds on ``calibration``.

        Parameters
        ----------
        model
            A causal LM (any module when ``layers`` is given).
        calibration
            A list of texts (with ``tokenizer``), input ids, a tokenizer output, or a list of those; padding is
            skipped through the attention mask.
        sparsity
            Target fraction of input entries on the low-rank path (``|x| <= tau``), in (0, 1]: one for every layer,
            or a mapping from layer names, or the last component of their names (``"down_proj"``), to fractions;
            a full name takes precedence over a last component, and every layer needs one.
        rank
            Rank of the low-rank path, in ``[0, min(W.shape)]`` for every layer.
        tokenizer
            Needed for texts.
        layers
            ``nn.Linear`` names; default every one inside the decoder layers.
        max_samples
            Calibration values kept per layer for the threshold (a uniform sample beyond that).
        seed
            Seeds that sample.

        Returns
        -------
        RSparse
            Not applied yet.

        Raises
        ------
        InvalidArgumentError
            ``sparsity`` outside (0, 1] (or a mapping that misses a layer, names none, or holds such a value), a
            ``rank`` out of range for some layer, unknown or non-Linear layer names, a model without decoder
            layers, or bad calibration input.
        """
        if not is_int(rank) or int(rank) < 0:
            raise InvalidArgumentError(f"rank: must be a non-negative integer, got {rank!r}")
        r = int(rank)
        cap = positive_int(max_samples, "max_samples")
        targets = _targets(model, layers, 1)
        for name, lin in targets.items():
            if r > min(lin.weight.shape):
                raise InvalidArgumentError(
                    f"rank: must be in [0, {min(lin.weight.shape)}] (min of the weight shape {tuple(lin.weight.shape)} "
                    f"of {name!r}), got {r}"
                )
        fracs = _layer_fractions(sparsity, targets)
        batches = calibration_batches(calibration, tokenizer)
        taus = _thresholds(model, targets, batches, fracs, cap, seed)
        state = {name: _Layer(lin, taus[name], _svd(lin.weight, r), fracs[name]) for name, lin in targets.items()}
        sizes = {name: float(lin.weight.numel()) for name, lin in targets.items()}
        if len(set(fracs.values())) == 1:  # one fraction everywhere: exactly it, not a rounded weighted mean
            mean = next(iter(fracs.values()))
        else:
            mean = sum(fracs[n] * sizes[n] for n in targets) / sum(sizes.values())
        return cls(model, mean, r, state)

    def apply(self, *, track: bool = False) -> RSparse:
        """Install the sparse forward on every calibrated layer; returns self (usable as a context manager).

        Parameters
        ----------
        track
            Count the inactive inputs seen (see :meth:`observed_sparsity`); costs a reduction per call.

        Returns
        -------
        RSparse
            ``self``; ``with rs.apply(): ...`` removes the forward when the block exits.

        Raises
        ------
        InvalidArgumentError
            Already applied, or a layer already has an instance ``forward`` (another patch).
        """
        tracking = check_bool(track, "track")
        if self.applied:
            raise InvalidArgumentError("RSparse: already applied (call remove() first)")
        for name, layer in self._layers.items():
            if "forward" in vars(layer.linear):
                raise InvalidArgumentError(f"layers: {name!r} already has a patched forward")
        self._track = tracking
        installed: list[_Layer] = []
        try:
            for layer in self._layers.values():
                layer.inactive = layer.total = 0
                _refresh_transposed(layer)
                layer.linear.forward = self._forward(layer)  # type: ignore[method-assign, assignment]
                installed.append(layer)
        except BaseException:
            for layer in installed:
                _uninstall(layer)
            raise
        self.applied = True
        return self

    def remove(self) -> None:
        """Restore every layer's own forward (a no-op when not applied)."""
        for layer in self._layers.values():
            _uninstall(layer)
        self.applied = False

    def __enter__(self) -> RSparse:
        if not self.applied:
            self.apply()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.remove()

    def observed_sparsity(self) -> dict[str, float]:
        """Per layer, the fraction of inputs on the low-rank path since :meth:`apply` with ``track=True``.

        Returns
        -------
        dict of str to float
            NaN for layers that have not run.
        """
        return {n: (s.inactive / s.total if s.total else float("nan")) for n, s in self._layers.items()}

    def _forward(self, layer: _Layer) -> Callable[[Tensor], Tensor]:
        lin = layer.linear
        tau = layer.tau

        def forward(x: Tensor) -> Tensor:
            w = lin.weight
            d_in = w.shape[1]
            x2 = x.reshape(-1, d_in)
            active = x2.abs() > tau
            if self._track:
                layer.inactive += int(active.numel() - active.sum())
                layer.total += active.numel()
            rows = x2.shape[0]
            if _gemv_path(x2):
                from sparsecore.gpu import sparse_gemv

                y = sparse_gemv(x2, w, active=active, lowrank=layer.lowrank)
                if lin.bias is not None:
                    y = y + lin.bias
            elif rows == 1 and x2.device.type == "cpu" and x2.dtype == w.dtype and not torch.is_grad_enabled():
                _refresh_transposed(layer)  # a no-op unless the weight changed since the copy
                assert layer.weight_t is not None
                y = _gather_row(x2[0], active[0], layer.weight_t, layer.us_v)
                if lin.bias is not None:
                    y = y + lin.bias
            else:
                y = rsparse_reference(x2, w, lin.bias, tau, layer.lowrank)
            return y.reshape(*x.shape[:-1], w.shape[0])

        return forward


def _gemv_path(x2: Tensor) -> bool:
    """Whether ``(rows, d_in)`` goes through :func:`sparsecore.gpu.sparse_gemv`: CUDA, at most GEMV_MAX_ROWS rows."""
    return x2.device.type == "cuda" and x2.shape[0] <= GEMV_MAX_ROWS


def _gather_row(x: Tensor, active: Tensor, weight_t: Tensor, us_v: tuple[Tensor, Tensor] | None) -> Tensor:
    """One token ``x`` (``(d_in,)``): the active columns of ``W`` times ``x`` plus the low-rank path, ``(1, d_out)``.

    ``sum_{j active} x_j W[:, j]`` comes from the rows of ``W^T`` (only those are read; an empty bag sums to zero),
    then ``U S (V^T (x * (1 - m)))`` is added, in as few torch calls as possible (each costs microseconds here).
    """
    idx = active.nonzero().squeeze(1)
    y = F.embedding_bag(idx, weight_t, _OFFSET0, mode="sum", per_sample_weights=x[idx])
    if us_v is not None:
        y = torch.addmv(y[0], us_v[0], x.masked_fill(active, 0) @ us_v[1])[None]
    return y


def _uninstall(layer: _Layer) -> None:
    vars(layer.linear).pop("forward", None)


def _refresh_transposed(layer: _Layer) -> None:
    """(Re)make the CPU gather's ``W^T`` copy unless the cached one is of the current weight.

    The cache is keyed by the weight's storage and version counter, so an in-place update or a new parameter
    invalidates it.
    """
    w = layer.linear.weight
    if w.device.type != "cpu":
        layer.weight_t = None
        return
    key = (w.data_ptr(), w._version)
    if layer.weight_t is None or key != layer.weight_key:
        layer.weight_t = w.detach().t().contiguous()
        layer.weight_key = key


def _svd(weight: Tensor, rank: int) -> tuple[Tensor, Tensor, Tensor] | None:
    """The rank-``rank`` truncated SVD ``(U (d_out, r), S (r,), V (d_in, r))`` in the weight's dtype, or None."""
    if rank == 0:
        return None
    u, s, vh = torch.linalg.svd(weight.detach().float(), full_matrices=False)
    dtype = weight.dtype
    return (
        u[:, :rank].contiguous().to(dtype),
        s[:rank].contiguous().to(dtype),
        vh[:rank].t().contiguous().to(dtype),
    )


def _layer_fractions(sparsity: object, targets: dict[str, nn.Linear]) -> dict[str, float]:
    """Each target layer's sparsity: the one value, or its entry of the mapping (full name, else last component)."""
    if not isinstance(sparsity, Mapping):
        frac = check_float(sparsity, "sparsity", low=0.0, high=1.0, low_open=True)
        return dict.fromkeys(targets, frac)
    values = {
        str(key): check_float(value, f"sparsity[{key!r}]", low=0.0, high=1.0, low_open=True)
        for key, value in sparsity.items()
    }
    out: dict[str, float] = {}
    used: set[str] = set()
    for name in targets:
        key = name if name in values else name.rsplit(".", 1)[-1]
        if key not in values:
            raise InvalidArgumentError(f"sparsity: the mapping has no entry for layer {name!r} (nor for {key!r})")
        out[name] = values[key]
        used.add(key)
    unused = sorted(set(values) - used)
    if unused:
        raise InvalidArgumentError(f"sparsity: the mapping's keys {unused!r} match no calibrated layer")
    return out


def _samples(
    model: nn.Module, targets: dict[str, nn.Linear], batches: list[dict[str, Any]], cap: int, seed: int
) -> dict[str, Tensor]:
    """Per layer, the calibration ``|x|`` values (a uniform sample of ``cap`` of them beyond that), float32."""
    gen = torch.Generator().manual_seed(seed)
    samples: dict[str, list[Tensor]] = {name: [] for name in targets}
    sizes = dict.fromkeys(targets, 0)

    def visit(name: str, x: Tensor) -> None:
        values = x.abs().float().reshape(-1).cpu()
        samples[name].append(values)
        sizes[name] += values.numel()
        if sizes[name] > 2 * cap:  # keep memory bounded: subsample what we have to cap values
            merged = _subsample(torch.cat(samples[name]), cap, gen)
            samples[name] = [merged]
            sizes[name] = merged.numel()

    run_with_input_hooks(model, targets, batches, visit)
    out: dict[str, Tensor] = {}
    for name in targets:
        if not sizes[name]:
            raise InvalidArgumentError(f"calibration: layer {name!r} never ran on the calibration data")
        out[name] = _subsample(torch.cat(samples[name]), cap, gen)
    return out


def _tau(values: Tensor, sparsity: float) -> float:
    """``v_k`` of the sorted values with ``k = n_kept(sparsity, N)``."""
    return float(values.kthvalue(n_kept(sparsity, values.numel())).values)


def _thresholds(
    model: nn.Module,
    targets: dict[str, nn.Linear],
    batches: list[dict[str, Any]],
    sparsity: dict[str, float],
    cap: int,
    seed: int,
) -> dict[str, float]:
    """Per layer, ``tau = v_k`` of the sorted calibration ``|x|`` with ``k = n_kept(sparsity[layer], N)``."""
    values = _samples(model, targets, batches, cap, seed)
    return {name: _tau(values[name], sparsity[name]) for name in targets}


def _subsample(values: Tensor, cap: int, gen: torch.Generator) -> Tensor:
    if values.numel() <= cap:
        return values
    return values[torch.randperm(values.numel(), generator=gen)[:cap]]


def magnitude_sparsity(
    model: nn.Module,
    calibration: object,
    sparsity: float | Mapping[str, float] = 0.5,
    *,
    tokenizer: Any = None,
    layers: Sequence[str] | None = None,
    max_samples: int = _MAX_SAMPLES,
) -> RSparse:
    """TEAL-style magnitude activation sparsity: :meth:`RSparse.calibrate` with ``rank=0`` (``y = W (x * m) + b``).

    Parameters
    ----------
    model, calibration, sparsity, tokenizer, layers, max_samples
        As :meth:`RSparse.calibrate`.

    Returns
    -------
    RSparse
        Not applied yet.

    Raises
    ------
    InvalidArgumentError
        As :meth:`RSparse.calibrate`.
    """
    return RSparse.calibrate(
        model, calibration, sparsity, rank=0, tokenizer=tokenizer, layers=layers, max_samples=max_samples
    )
