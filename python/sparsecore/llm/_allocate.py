"""Per-layer sparsity allocation for R-Sparse / TEAL: where a model tolerates sparsity, measured on calibration data.

R-Sparse searches a per-layer allocation rather than using one fraction everywhere. Here the layers are grouped
(by default by the last component of their names, so ``q_proj`` of every decoder layer is one group) and
:func:`sparsity_sensitivity` measures, for every group and every fraction of a grid, the calibration loss when
only that group is sparsified (mean next-token negative log-likelihood over the calibration tokens, minus the
dense model's). :func:`allocate_sparsity` then picks one grid fraction per group so that the weight-size-weighted
mean reaches the target while the summed loss increases are smallest (a Lagrangian search: each group takes the
fraction minimising ``increase - lam * size * fraction``, with ``lam`` bisected to the smallest value that meets
the target). Treating the groups' increases as additive is the approximation; the result is a mapping that
:meth:`RSparse.calibrate` takes as its ``sparsity``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from sparsecore._validate import check_float, is_int, positive_int
from sparsecore.exceptions import InvalidArgumentError
from sparsecore.llm._calib import calibration_batches, model_device
from sparsecore.llm._nm import _targets
from sparsecore.llm._rsparse import _MAX_SAMPLES, RSparse, _Layer, _samples, _svd, _tau

__all__ = ["DEFAULT_GRID", "SparsitySensitivity", "allocate_sparsity", "sparsity_sensitivity"]

#: Fractions tried per group by default.
DEFAULT_GRID = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


class SparsitySensitivity(NamedTuple):
    """What :func:`sparsity_sensitivity` measured.

    Attributes
    ----------
    groups : dict of str to list of str
        Group key -> the layer names in it.
    sizes : dict of str to int
        Group key -> the summed weight sizes (``d_in * d_out``) of its layers.
    grid : tuple of float
        The fractions tried.
    rank : int
        The R-Sparse rank used (0: TEAL).
    dense_nll : float
        Mean next-token NLL of the dense model on the calibration tokens.
    increase : dict of str to list of float
        Group key -> NLL increase (sparse minus dense) at each grid fraction, only that group sparsified.
    """

    groups: dict[str, list[str]]
    sizes: dict[str, int]
    grid: tuple[float, ...]
    rank: int
    dense_nll: float
    increase: dict[str, list[float]]


@torch.no_grad()
def _mean_nll(model: nn.Module, batches: list[dict[str, Any]]) -> float:
    """Mean next-token negative log-likelihood over the real tokens of ``batches`` (float64 sum)."""
    device = model_device(model)
    total, count = 0.0, 0
    for batch in batches:
        kwargs = {k: v.to(device) if isinstance(v, Tensor) else v for k, v in batch.items()}
        out = model(**kwargs)
        logits = getattr(out, "logits", None)
        if not isinstance(logits, Tensor):
            raise InvalidArgumentError(f"model: must return logits (a causal LM), got {type(out).__name__}")
        ids = kwargs["input_ids"]
        logp = logits[:, :-1].float().log_softmax(-1).gather(-1, ids[:, 1:, None])[..., 0]
        mask = kwargs.get("attention_mask")
        valid = (
            torch.ones_like(ids[:, 1:], dtype=torch.bool) if mask is None else (mask[:, 1:] != 0) & (mask[:, :-1] != 0)
        )
        total -= float(logp[valid].double().sum())
        count += int(valid.sum())
    if count == 0:
        raise InvalidArgumentError("calibration: must hold at least one sequence of two or more tokens")
    return total / count


def _groups(names: list[str], groups: Mapping[str, Sequence[str]] | None) -> dict[str, list[str]]:
    """Group key -> layer names: by last name component, or the given key -> last components (or full names)."""
    if groups is None:
        out: dict[str, list[str]] = {}
        for name in names:
            out.setdefault(name.rsplit(".", 1)[-1], []).append(name)
        return out
    if not isinstance(groups, Mapping) or not groups:
        raise InvalidArgumentError(f"groups: must be a non-empty mapping of group -> layer name parts, got {groups!r}")
    owner: dict[str, str] = {}
    out = {str(g): [] for g in groups}
    for g, parts in groups.items():
        if isinstance(parts, str) or not isinstance(parts, Sequence) or not parts:
            raise InvalidArgumentError(f"groups[{g!r}]: must be a non-empty sequence of names, got {parts!r}")
        for name in names:
            if name in parts or name.rsplit(".", 1)[-1] in parts:
                if name in owner:
                    raise InvalidArgumentError(f"groups: layer {name!r} is in both {owner[name]!r} and {g!r}")
                owner[name] = str(g)
                out[str(g)].append(name)
    missing = [n for n in names if n not in owner]
    if missing:
        raise InvalidArgumentError(
            f"groups: no group holds the layers {missing[:3]!r}{' ...' if len(missing) > 3 else ''}"
        )
    empty = [g for g, members in out.items() if not members]
    if empty:
        raise InvalidArgumentError(f"groups: {empty!r} match no layer")
    return out


@torch.no_grad()
def sparsity_sensitivity(
    model: nn.Module,
    calibration: object,
    *,
    rank: int,
    tokenizer: Any = None,
    layers: Sequence[str] | None = None,
    groups: Mapping[str, Sequence[str]] | None = None,
    grid: Sequence[float] = DEFAULT_GRID,
    max_samples: int = _MAX_SAMPLES,
    seed: int = 0,
) -> SparsitySensitivity:
    """Calibration loss increase of each layer group at each grid fraction, the other layers dense.

    Costs one calibration pass for the thresholds (all fractions at once), one SVD per layer and one calibration
    forward per (group, fraction) pair.

    Parameters
    ----------
    model
        A causal LM (its output has ``logits``).
    calibration, tokenizer, layers, max_samples, seed
        As :meth:`RSparse.calibrate`.
    rank
        R-Sparse rank for every layer (0: TEAL's magnitude sparsity).
    groups
        Group key -> layer names or last name components (every calibrated layer in exactly one group); default:
        one group per last name component.
    grid
        Fractions to try, each in (0, 1].

    Returns
    -------
    SparsitySensitivity

    Raises
    ------
    InvalidArgumentError
        As :meth:`RSparse.calibrate`, a bad grid or grouping, or a model without logits.
    """
    if not is_int(rank) or int(rank) < 0:
        raise InvalidArgumentError(f"rank: must be a non-negative integer, got {rank!r}")
    r = int(rank)
    if isinstance(grid, str) or not isinstance(grid, Sequence) or not grid:
        raise InvalidArgumentError(f"grid: must be a non-empty sequence of fractions, got {grid!r}")
    fracs = tuple(sorted({check_float(g, "grid", low=0.0, high=1.0, low_open=True) for g in grid}))
    cap = positive_int(max_samples, "max_samples")
    targets = _targets(model, layers, 1)
    for name, lin in targets.items():
        if r > min(lin.weight.shape):
            raise InvalidArgumentError(f"rank: must be in [0, {min(lin.weight.shape)}] for {name!r}, got {r}")
    members = _groups(list(targets), groups)
    batches = calibration_batches(calibration, tokenizer)
    values = _samples(model, targets, batches, cap, seed)
    factors = {name: _svd(lin.weight, r) for name, lin in targets.items()}
    dense = _mean_nll(model, batches)
    increase: dict[str, list[float]] = {}
    for g, names in members.items():
        row = []
        for f in fracs:
            state = {n: _Layer(targets[n], _tau(values[n], f), factors[n], f) for n in names}
            with RSparse(model, f, r, state).apply():
                row.append(_mean_nll(model, batches) - dense)
        increase[g] = row
    sizes = {g: sum(int(targets[n].weight.numel()) for n in names) for g, names in members.items()}
    return SparsitySensitivity(members, sizes, fracs, r, dense, increase)


def allocate_sparsity(sensitivity: SparsitySensitivity, sparsity: float) -> dict[str, float]:
    """One grid fraction per group: weight-size-weighted mean ``>= sparsity``, smallest summed loss increase.

    Parameters
    ----------
    sensitivity
        From :func:`sparsity_sensitivity`.
    sparsity
        Target mean fraction, in (0, 1]; above the grid's largest fraction every group gets that one.

    Returns
    -------
    dict of str to float
        Group key -> fraction; with the default grouping the keys are last name components, so the mapping goes
        straight to :meth:`RSparse.calibrate` (for custom groups, map each group's layers yourself).

    Raises
    ------
    InvalidArgumentError
        ``sparsity`` outside (0, 1].
    """
    target = check_float(sparsity, "sparsity", low=0.0, high=1.0, low_open=True)
    grid = sensitivity.grid
    total = float(sum(sensitivity.sizes.values()))
    weight = {g: sensitivity.sizes[g] / total for g in sensitivity.groups}

    def pick(lam: float) -> dict[str, float]:
        out = {}
        for g in sensitivity.groups:
            costs = [inc - lam * weight[g] * f for inc, f in zip(sensitivity.increase[g], grid, strict=True)]
            out[g] = grid[min(range(len(grid)), key=lambda i: (costs[i], -grid[i] if lam > 0 else grid[i]))]
        return out

    def mean(choice: dict[str, float]) -> float:
        return sum(weight[g] * choice[g] for g in choice)

    if mean(pick(0.0)) >= target - 1e-12:  # the cheapest choice already meets the target
        return pick(0.0)
    if target >= grid[-1]:
        return dict.fromkeys(sensitivity.groups, grid[-1])
    lo, hi = 0.0, 1.0
    while mean(pick(hi)) < target - 1e-12:  # grow until the target is met (finite: the increases are finite)
        hi *= 2.0
        if not math.isfinite(hi):
            return dict.fromkeys(sensitivity.groups, grid[-1])
    for _ in range(100):
        mid = 0.5 * (lo + hi)
        if mean(pick(mid)) >= target - 1e-12:
            hi = mid
        else:
            lo = mid
    return pick(hi)
