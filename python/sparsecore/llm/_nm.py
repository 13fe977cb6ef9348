"""N:M weight masks on the linear layers of a model, applied as parametrizations, with a progressive schedule.

An N:M mask keeps exactly ``n`` weights in every group of ``m`` consecutive input weights of each output row
(2:4 is what sparse tensor cores run). :func:`nm_masks` scores the weights, by magnitude ``|W|`` or by Wanda's
``|W_ij| * ||x_j||_2`` (the norm of input feature ``j`` over calibration tokens), keeps the ``n`` best of each
group, and installs the mask with :func:`torch.nn.utils.parametrize.register_parametrization`, so the dense
weight stays in ``parametrizations.weight.original`` and :func:`remove_nm_masks` restores it bit for bit (or bakes
the sparse weight in). :class:`ProgressiveNM` anneals the mask during training in the spirit of Progressive
Gradient Flow: the density ``n_t / m`` decays from 1 to ``n / m`` along a cosine (``n_t`` from ``m`` down to ``n``),
and each update re-selects the kept weights from the current dense weights.

References
----------
- A. Mishra et al. "Accelerating Sparse Deep Neural Networks" (NVIDIA, 2021): 2:4 sparsity.
- M. Sun et al. "A Simple and Effective Pruning Approach for Large Language Models" (Wanda, ICLR 2024).
- A. R. Bambhaniya et al. "Progressive Gradient Flow for Robust N:M Sparsity Training in Transformers" (2024).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, cast

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from sparsecore._validate import check_bool, check_choice, nonnegative_int, positive_int
from sparsecore.exceptions import DTypeError, InvalidArgumentError
from sparsecore.llm._calib import calibration_batches, run_with_input_hooks
from sparsecore.llm._layers import decoder_layers, linear_layers
from sparsecore.llm.hooks import resolve_module

__all__ = [
    "NMMask",
    "ProgressiveNM",
    "input_norms",
    "nm_density",
    "nm_mask",
    "nm_masks",
    "remove_nm_masks",
    "to_semi_structured",
]

CRITERIA = ("magnitude", "wanda")


class NMMask(nn.Module):
    """A parametrization that multiplies a weight by a fixed 0/1 mask (``register_parametrization`` target).

    Parameters
    ----------
    mask
        Boolean tensor of the weight's shape.

    Attributes
    ----------
    mask : Tensor
        The boolean buffer; :func:`nm_masks` and :class:`ProgressiveNM` update it in place.
    """

    mask: Tensor

    def __init__(self, mask: Tensor) -> None:
        super().__init__()
        self.register_buffer("mask", mask.bool())

    def forward(self, weight: Tensor) -> Tensor:
        """``weight`` with the masked-out entries set to zero.

        Parameters
        ----------
        weight
            The dense weight (the parametrization's ``original``).

        Returns
        -------
        Tensor
            ``weight * mask`` in the weight's dtype.
        """
        return weight * self.mask.to(weight.dtype)


def nm_mask(score: Tensor, n: int, m: int) -> Tensor:
    """The boolean mask keeping the ``n`` largest scores of every ``m`` consecutive entries of each row.

    Parameters
    ----------
    score
        ``(out_features, in_features)`` scores (larger is kept); ``in_features`` divisible by ``m``.
    n, m
        Kept entries per group, group size; ``1 <= n <= m``.

    Returns
    -------
    Tensor
        Boolean, the shape of ``score``, with exactly ``n`` True per group (ties go to the earlier entry).

    Raises
    ------
    InvalidArgumentError
        ``n`` or ``m`` not positive, ``n > m``, ``score`` not 2-D, or ``m`` not dividing its width.
    """
    n, m = _check_nm(n, m)
    if score.dim() != 2:
        raise InvalidArgumentError(f"score: must be 2-D (out_features, in_features), got shape {tuple(score.shape)}")
    rows, width = score.shape
    if width % m:
        raise InvalidArgumentError(f"m: must divide the input width {width}, got {m}")
    groups = score.detach().float().reshape(rows, width // m, m)
    # stable descending sort: among equal scores the earlier entry wins, so the mask is deterministic
    keep = groups.argsort(dim=-1, descending=True, stable=True)[..., :n]
    mask = torch.zeros(groups.shape, dtype=torch.bool, device=score.device)
    mask.scatter_(-1, keep, True)
    return mask.reshape(rows, width)


def _check_nm(n: object, m: object) -> tuple[int, int]:
    nn_, mm = positive_int(n, "n"), positive_int(m, "m")
    if nn_ > mm:
        raise InvalidArgumentError(f"n: must be an integer <= m = {mm}, got {nn_}")
    return nn_, mm


def _linear(model: nn.Module, name: str) -> nn.Linear:
    module = resolve_module(model, name)
    if not isinstance(module, nn.Linear):
        raise InvalidArgumentError(f"layers: {name!r} is a {type(module).__name__}, not a torch.nn.Linear")
    return module


def _targets(model: nn.Module, layers: Sequence[str] | None, m: int) -> dict[str, nn.Linear]:
    if layers is None:
        names = linear_layers(model, decoder_layers(model))
        if not names:
            raise InvalidArgumentError(f"model: the decoder layers of {type(model).__name__} hold no nn.Linear")
    elif isinstance(layers, str) or not isinstance(layers, Sequence) or not layers:
        raise InvalidArgumentError(f"layers: must be a non-empty sequence of module names, got {layers!r}")
    else:
        names = list(dict.fromkeys(layers))
    targets = {name: _linear(model, name) for name in names}
    for name, lin in targets.items():
        if lin.in_features % m:
            raise InvalidArgumentError(f"m: must divide the input width {lin.in_features} of {name!r}, got {m}")
    return targets


def _weight_parametrizations(lin: nn.Linear) -> Any:
    """The ``ParametrizationList`` of ``lin.weight`` (torch types ``parametrizations`` loosely)."""
    return cast(Any, lin).parametrizations["weight"]


def _dense_weight(lin: nn.Linear) -> Tensor:
    """The unmasked weight (the parametrization's original when one is installed)."""
    if parametrize.is_parametrized(lin, "weight"):
        original = _weight_parametrizations(lin).original
        assert isinstance(original, Tensor)
        return original
    return lin.weight


def _own_mask(lin: nn.Linear) -> NMMask | None:
    if not parametrize.is_parametrized(lin, "weight"):
        return None
    return next((p for p in _weight_parametrizations(lin) if isinstance(p, NMMask)), None)


def _install(lin: nn.Linear, mask: Tensor) -> None:
    own = _own_mask(lin)
    if own is None:
        parametrize.register_parametrization(lin, "weight", NMMask(mask))
    else:
        own.mask.copy_(mask)


@torch.no_grad()
def input_norms(model: nn.Module, layers: Mapping[str, nn.Linear], calibration: object) -> dict[str, Tensor]:
    """Per linear layer, the L2 norm of each input feature over the real tokens of the calibration batches.

    Parameters
    ----------
    model
        The model, run on each batch with forward pre-hooks on the layers (removed afterwards, also on error).
    layers
        Name -> ``nn.Linear``.
    calibration
        Input ids ``(batch, seq)``, a tokenizer output (padding tokens are skipped through its
        ``attention_mask``), or a list of either.

    Returns
    -------
    dict of str to Tensor
        ``(in_features,)`` float32 norms.
    """
    batches = calibration_batches(calibration)
    sums = {name: torch.zeros(lin.in_features, dtype=torch.float64) for name, lin in layers.items()}

    def accumulate(name: str, x: Tensor) -> None:
        sums[name] += x.double().square().sum(dim=0).cpu()

    run_with_input_hooks(model, layers, batches, accumulate)
    return {name: s.sqrt().float() for name, s in sums.items()}


def _scores(lin: nn.Linear, criterion: str, norms: Tensor | None) -> Tensor:
    w = _dense_weight(lin).detach().float().abs()
    if criterion == "wanda":
        assert norms is not None
        w = w * norms.to(w.device)[None, :]
    return w


def nm_masks(
    model: nn.Module,
    n: int = 2,
    m: int = 4,
    criterion: str = "magnitude",
    *,
    calibration: object = None,
    layers: Sequence[str] | None = None,
) -> dict[str, Tensor]:
    """Mask the linear layers of ``model`` to N:M sparsity (see the module docstring); returns the masks.

    A layer that already carries an N:M mask gets a new one, scored from its dense (unmasked) weight (Wanda's
    calibration pass then runs the model with the current masks in place).

    Parameters
    ----------
    model
        A causal LM or any module.
    n, m
        Kept weights per group of ``m`` consecutive input weights, ``1 <= n <= m``; ``m`` must divide every
        masked layer's input width.
    criterion
        ``"magnitude"`` (``|W|``) or ``"wanda"`` (``|W| * ||x_j||``, needs ``calibration``).
    calibration
        For Wanda: input ids, a tokenizer output (with ``attention_mask``: padding is skipped) or a list of those.
    layers
        Names of ``nn.Linear`` modules; default every ``nn.Linear`` inside the decoder layers (attention and MLP
        projections; not the embeddings or the LM head).

    Returns
    -------
    dict of str to Tensor
        Layer name -> boolean mask ``(out_features, in_features)`` (the buffers in use: later calls update them).

    Raises
    ------
    InvalidArgumentError
        ``n > m``, non-positive ``n`` / ``m``, ``m`` not dividing an input width, an unknown criterion, Wanda
        without calibration, unknown or non-Linear layer names, or a model without decoder layers.
    """
    n, m = _check_nm(n, m)
    how = check_choice(criterion, "criterion", CRITERIA)
    targets = _targets(model, layers, m)
    norms = _norms_for(model, targets, how, calibration)
    out: dict[str, Tensor] = {}
    for name, lin in targets.items():
        _install(lin, nm_mask(_scores(lin, how, norms.get(name)), n, m))
        own = _own_mask(lin)
        assert own is not None
        out[name] = own.mask
    return out


def _norms_for(
    model: nn.Module, targets: Mapping[str, nn.Linear], criterion: str, calibration: object
) -> dict[str, Tensor]:
    if criterion == "magnitude":
        return {}
    if calibration is None:
        raise InvalidArgumentError('calibration: must be given with criterion="wanda", got None')
    return input_norms(model, targets, calibration)


def remove_nm_masks(model: nn.Module, *, keep_mask: bool = False) -> list[str]:
    """Remove every N:M mask from ``model``.

    Parameters
    ----------
    model
        A model masked by :func:`nm_masks` or :class:`ProgressiveNM`.
    keep_mask
        False restores the dense weights bit for bit; True bakes the masked (sparse) weights in.

    Returns
    -------
    list of str
        The names of the layers unmasked.

    Raises
    ------
    InvalidArgumentError
        ``keep_mask`` is not a bool, or a masked weight carries other parametrizations too (removing ours
        would remove them as well).
    """
    keep = check_bool(keep_mask, "keep_mask")
    done: list[str] = []
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear) and _own_mask(module) is not None:
            if len(_weight_parametrizations(module)) != 1:
                raise InvalidArgumentError(
                    f"model: the weight of {name!r} carries other parametrizations besides its N:M mask"
                )
            parametrize.remove_parametrizations(module, "weight", leave_parametrized=keep)
            done.append(name)
    return done


def nm_density(step: int, total_steps: int, n: int, m: int) -> float:
    """The mask density ``n_t / m`` of the progressive schedule at ``step`` (1 at step 0, ``n / m`` from the end).

    ``n_t = round(m * rho)`` with the cosine decay ``rho = n/m + (1 - n/m) * (1 + cos(pi * t)) / 2``,
    ``t = min(step / total_steps, 1)``: non-increasing in ``step``.

    Parameters
    ----------
    step
        Current step, ``>= 0``.
    total_steps
        Steps over which the density decays, ``>= 1``.
    n, m
        The target pattern, ``1 <= n <= m``.

    Returns
    -------
    float

    Raises
    ------
    InvalidArgumentError
        A negative ``step``, a non-positive ``total_steps``, or a bad ``n`` / ``m``.
    """
    return _n_at(step, total_steps, n, m) / m


def _n_at(step: object, total_steps: object, n: int, m: int) -> int:
    n, m = _check_nm(n, m)
    s = nonnegative_int(step, "step")
    total = positive_int(total_steps, "total_steps")
    t = min(s / total, 1.0)
    rho = n / m + (1 - n / m) * (1 + math.cos(math.pi * t)) / 2
    return min(m, max(n, math.floor(m * rho + 0.5)))


class ProgressiveNM:
    """A progressive N:M schedule for training: masks of density ``n_t / m`` decaying from 1 to ``n / m``.

    Construction installs all-ones masks (density 1); call :meth:`update` with the step number (e.g. every
    optimizer step, or every few): it sets each layer's mask to the ``n_t``:``m`` mask of the current dense
    weights (magnitude or Wanda with input norms computed once at construction), ``n_t`` given by
    :func:`nm_density`. Gradients reach the dense weights through the mask, so more of them train while the
    density is high.

    Parameters
    ----------
    model
        The model being trained.
    n, m
        Target pattern (see :func:`nm_masks`).
    total_steps
        Steps over which the density decays.
    criterion
        ``"magnitude"`` or ``"wanda"``.
    calibration
        Wanda's calibration input (see :func:`nm_masks`).
    layers
        The ``nn.Linear`` names (default: those in the decoder layers).

    Attributes
    ----------
    masks : dict of str to Tensor
        The live boolean masks.
    density : float
        The density of the masks now.

    Raises
    ------
    InvalidArgumentError
        As :func:`nm_masks`, or a non-positive ``total_steps``.
    """

    def __init__(
        self,
        model: nn.Module,
        n: int = 2,
        m: int = 4,
        *,
        total_steps: int,
        criterion: str = "magnitude",
        calibration: object = None,
        layers: Sequence[str] | None = None,
    ) -> None:
        self.n, self.m = _check_nm(n, m)
        self.total_steps = positive_int(total_steps, "total_steps")
        self.criterion = check_choice(criterion, "criterion", CRITERIA)
        self.model = model
        self._targets = _targets(model, layers, self.m)
        self._norms = _norms_for(model, self._targets, self.criterion, calibration)
        self.masks: dict[str, Tensor] = {}
        for name, lin in self._targets.items():
            _install(lin, torch.ones(lin.weight.shape, dtype=torch.bool, device=lin.weight.device))
            own = _own_mask(lin)
            assert own is not None
            self.masks[name] = own.mask
        self.density = 1.0

    def __repr__(self) -> str:
        return (
            f"ProgressiveNM({self.n}:{self.m}, total_steps={self.total_steps}, criterion={self.criterion!r}, "
            f"layers={len(self.masks)}, density={self.density:g})"
        )

    @torch.no_grad()
    def update(self, step: int) -> float:
        """Set every mask to the schedule's density at ``step``; returns that density.

        Parameters
        ----------
        step
            The training step, ``>= 0`` (steps past ``total_steps`` keep the final ``n:m``).

        Returns
        -------
        float
            ``n_t / m``, as :func:`nm_density`.

        Raises
        ------
        InvalidArgumentError
            A negative ``step``.
        """
        n_t = _n_at(step, self.total_steps, self.n, self.m)
        for name, lin in self._targets.items():
            self.masks[name].copy_(nm_mask(_scores(lin, self.criterion, self._norms.get(name)), n_t, self.m))
        self.density = n_t / self.m
        return self.density

    def remove(self, *, keep_mask: bool = False) -> list[str]:
        """Remove the masks from the model (see :func:`remove_nm_masks`).

        Parameters
        ----------
        keep_mask
            Bake the sparse weights in instead of restoring the dense ones.

        Returns
        -------
        list of str
            The layers unmasked.
        """
        return remove_nm_masks(self.model, keep_mask=keep_mask)


def to_semi_structured(model: nn.Module) -> list[str]:
    """Bake 2:4 masks in and hand the weights to ``torch.sparse.to_sparse_semi_structured`` (CUDA only).

    Every ``nn.Linear`` carrying a 2:4 :class:`NMMask` on a CUDA device in float16 or bfloat16 gets its masked
    weight replaced by a semi-structured sparse parameter (sparse tensor-core matmuls). This path needs an
    Ampere-or-newer GPU and is not exercised by the CPU test suite; only its argument checks are.

    Parameters
    ----------
    model
        A model masked by :func:`nm_masks` with ``n=2, m=4``.

    Returns
    -------
    list of str
        The converted layers.

    Raises
    ------
    InvalidArgumentError
        No 2:4-masked layer, or one that is not 2:4.
    DTypeError
        A masked weight is not on CUDA in float16 / bfloat16.
    """
    todo: list[tuple[str, nn.Linear]] = []
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear) and (own := _own_mask(module)) is not None:
            groups = own.mask.reshape(own.mask.shape[0], -1, 4) if own.mask.shape[1] % 4 == 0 else None
            if groups is None or not bool((groups.sum(-1) == 2).all()):
                raise InvalidArgumentError(f"model: the mask of {name!r} is not 2:4")
            w = _dense_weight(module)
            if w.device.type != "cuda" or w.dtype not in (torch.float16, torch.bfloat16):
                raise DTypeError(f"model: {name!r} must be on CUDA in float16/bfloat16, got {w.device} {w.dtype}")
            todo.append((name, module))
    if not todo:
        raise InvalidArgumentError("model: has no 2:4-masked nn.Linear (run nm_masks(model, 2, 4) first)")
    from torch.sparse import to_sparse_semi_structured

    for _, module in todo:
        parametrize.remove_parametrizations(module, "weight", leave_parametrized=True)
        module.weight = nn.Parameter(to_sparse_semi_structured(module.weight.detach()), requires_grad=False)
    return [name for name, _ in todo]
