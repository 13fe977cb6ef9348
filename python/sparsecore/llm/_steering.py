"""Jailbreak Antidote: a sparse safety direction added to the residual stream of chosen decoder layers.

Fit (:meth:`SafetySteering.fit`): run paired harmful / harmless instructions through the model, take each decoder
layer's output at the last real token of every prompt, and per layer take the principal direction of the paired
differences ``harmful - harmless`` (:func:`paired_direction`), signed so that harmful prompts project higher. A
layer's score is its pair-classification accuracy (the fraction of pairs whose harmful state projects higher);
the best ``top_layers`` fraction of layers is kept. Apply (:meth:`SafetySteering.apply`): inside a ``with`` block
every kept layer's output gets ``alpha * d_sparse`` added at every token, at prefill and at each decode step, where
``d_sparse`` keeps only the ``sparsity`` fraction of the direction's entries with the largest magnitude (or a
random subset of the same size, the paper's ablation). ``alpha`` and ``sparsity`` can change inside the block
without refitting; ``alpha > 0`` pushes towards the harmful-prompt side of the direction, which is where the
paper's safety behaviour (refusals) sits, ``alpha < 0`` away from it.

References
----------
- G. Shen et al. "Jailbreak Antidote: Runtime Safety-Utility Balance via Sparse Representation Adjustment in
  Large Language Models" (ICLR 2025).
"""

from __future__ import annotations

import contextlib
import importlib.resources
import json
import math
import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any, NamedTuple

import numpy as np
import torch
from numpy.typing import ArrayLike, NDArray
from torch import Tensor, nn

from sparsecore._container import read_container, write_container
from sparsecore._validate import check_choice, check_float, check_ndim, check_seed, check_texts, float_array
from sparsecore._validate import positive_int as _positive_int
from sparsecore.exceptions import (
    IndexFormatError,
    InvalidArgumentError,
    NonFiniteError,
    ShapeMismatchError,
)
from sparsecore.llm._layers import decoder_layers
from sparsecore.llm.hooks import capture, edit, resolve_module

__all__ = ["PairedDirection", "SafetySteering", "Steering", "n_kept", "paired_direction", "safety_pairs"]

_KIND = "llm-safety-steer"
_VERSION = 1
#: Selectors of the kept entries: the largest magnitudes (the method) or a random subset (the paper's ablation).
SELECTORS = ("abs_max", "random")


def safety_pairs() -> tuple[list[str], list[str]]:
    """The package's 40 hand-written pairs of harmful and harmless instructions (same topic, similar form).

    Meant for fitting :class:`SafetySteering` in demos and tests; the wording is mild and the set is small, so a
    direction fitted on it is a starting point, not a vetted safety filter.

    Returns
    -------
    harmful : list of str
    harmless : list of str
        ``harmless[i]`` is the counterpart of ``harmful[i]``.
    """
    text = importlib.resources.files("sparsecore.llm").joinpath("data").joinpath("safety_pairs.json").read_text("utf-8")
    pairs = json.loads(text)["pairs"]
    return [str(p[0]) for p in pairs], [str(p[1]) for p in pairs]


class PairedDirection(NamedTuple):
    """What :func:`paired_direction` found for one layer.

    Attributes
    ----------
    direction
        Unit vector ``(d,)`` float64, signed so that the mean projection of the differences is >= 0.
    accuracy
        Fraction of pairs whose difference projects strictly above 0 (harmful above harmless).
    separation
        Mean over standard deviation of the projected differences (ranks layers of equal accuracy).
    """

    direction: NDArray[np.float64]
    accuracy: float
    separation: float


def paired_direction(harmful: ArrayLike, harmless: ArrayLike) -> PairedDirection:
    """The principal direction of paired differences, its sign, and how well it separates the pairs.

    The direction is the first right singular vector of the (uncentred) difference matrix
    ``D = harmful - harmless``, i.e. the unit ``v`` maximising ``sum_i (D_i . v)**2``: a shift shared by the pairs
    dominates it (centring would remove exactly that shift). Its sign makes the mean of ``D @ v`` non-negative.

    Parameters
    ----------
    harmful, harmless
        ``(n_pairs, d)`` states; row ``i`` of each forms pair ``i``.

    Returns
    -------
    PairedDirection

    Raises
    ------
    ShapeMismatchError
        The arrays are not 2-D of the same shape, or hold no pair.
    DTypeError
        Not float32/float64/integer arrays.
    NonFiniteError
        A state is NaN or infinite.
    """
    a = check_ndim(float_array(harmful, "harmful"), "harmful", 2, "(n_pairs, d)")
    b = check_ndim(float_array(harmless, "harmless"), "harmless", 2, "(n_pairs, d)")
    if a.shape != b.shape or a.shape[0] == 0 or a.shape[1] == 0:
        raise ShapeMismatchError(
            f"harmless: must have the shape of harmful {a.shape} with at least one pair, got {b.shape}"
        )
    diffs = a.astype(np.float64) - b.astype(np.float64)
    if not np.isfinite(diffs).all():
        raise NonFiniteError("harmful, harmless: contain NaN or infinite values")
    _, _, vt = np.linalg.svd(diffs, full_matrices=False)
    direction = vt[0]
    proj = diffs @ direction
    if proj.mean() < 0:
        direction, proj = -direction, -proj
    std = float(proj.std())
    separation = float(proj.mean()) / std if std > 0 else (math.inf if proj.mean() > 0 else 0.0)
    return PairedDirection(direction, float(np.mean(proj > 0)), separation)


def n_kept(sparsity: float, d: int) -> int:
    """How many of ``d`` entries a sparsity fraction keeps: ``round(sparsity * d)`` (halves up), at least 1.

    Parameters
    ----------
    sparsity
        Fraction of entries kept, in (0, 1] (not checked here).
    d
        Number of entries.

    Returns
    -------
    int
        In ``[1, d]``.
    """
    return min(d, max(1, math.floor(sparsity * d + 0.5)))


def _check_sparsity(sparsity: object) -> float:
    return check_float(sparsity, "sparsity", low=0.0, high=1.0, low_open=True)


class SafetySteering:
    """Per-layer safety directions and the layers to steer (Jailbreak Antidote); see the module docstring.

    Build it with :meth:`fit` or :meth:`load`; the constructor takes fitted arrays.

    Parameters
    ----------
    layers
        Decoder-layer module names, one per row of ``directions``.
    directions
        ``(n_layers, d)`` directions (normalised to unit length here).
    accuracy
        ``(n_layers,)`` pair-classification accuracy of each layer's direction.
    separation
        ``(n_layers,)`` tie-breaker between layers of equal accuracy (larger is better).
    top_layers
        Fraction of layers kept, in (0, 1]: ``round(top_layers * n_layers)``, at least one.

    Attributes
    ----------
    layers : list of str
    directions : Tensor
        ``(n_layers, d)`` float32 unit rows.
    accuracy, separation : numpy.ndarray
        ``(n_layers,)`` float64.
    top_layers : float
    kept : list of str
        The steered layers, best first.

    Raises
    ------
    InvalidArgumentError
        ``top_layers`` outside (0, 1], no layers, or repeated layer names.
    ShapeMismatchError
        The arrays do not have one row / entry per layer.
    NonFiniteError
        A direction holds NaN or infinity.
    """

    def __init__(
        self,
        layers: Sequence[str],
        directions: ArrayLike | Tensor,
        accuracy: ArrayLike,
        separation: ArrayLike,
        *,
        top_layers: float = 0.375,
    ) -> None:
        self.top_layers = check_float(top_layers, "top_layers", low=0.0, high=1.0, low_open=True)
        names = list(layers) if not isinstance(layers, str) else None
        if not names or not all(isinstance(n, str) for n in names) or len(set(names)) != len(names):
            raise InvalidArgumentError(f"layers: must be a non-empty sequence of distinct module names, got {layers!r}")
        dirs = directions.detach().cpu().double().numpy() if isinstance(directions, Tensor) else directions
        d = check_ndim(float_array(dirs, "directions"), "directions", 2, "(n_layers, d)").astype(np.float64)
        acc = check_ndim(float_array(accuracy, "accuracy"), "accuracy", 1).astype(np.float64)
        sep = check_ndim(float_array(separation, "separation"), "separation", 1).astype(np.float64)
        if d.shape[0] != len(names) or acc.shape[0] != len(names) or sep.shape[0] != len(names) or d.shape[1] == 0:
            raise ShapeMismatchError(
                f"directions, accuracy, separation: must have {len(names)} rows (one per layer), got "
                f"{d.shape}, {acc.shape}, {sep.shape}"
            )
        if not np.isfinite(d).all():
            raise NonFiniteError("directions: contain NaN or infinite values")
        norms = np.linalg.norm(d, axis=1, keepdims=True)
        self.layers = names
        self.directions = torch.from_numpy(d / np.where(norms > 0, norms, 1.0)).float()
        self.accuracy = acc
        self.separation = sep
        n_top = min(len(names), max(1, math.floor(self.top_layers * len(names) + 0.5)))
        # best accuracy first, then best separation, then the earlier layer
        order = sorted(range(len(names)), key=lambda i: (-acc[i], -np.nan_to_num(sep[i], nan=-np.inf), i))
        self.kept = [names[i] for i in order[:n_top]]

    def __repr__(self) -> str:
        best = ", ".join(f"{n} ({self.accuracy[self.layers.index(n)]:.2f})" for n in self.kept)
        return f"SafetySteering(n_layers={len(self.layers)}, d={self.d}, kept=[{best}])"

    @property
    def d(self) -> int:
        """Width of the hidden states."""
        return int(self.directions.shape[1])

    @classmethod
    def fit(
        cls,
        model: nn.Module,
        tokenizer: Any,
        harmful: Sequence[str],
        harmless: Sequence[str],
        *,
        top_layers: float = 0.375,
        layers: Sequence[str] | None = None,
        batch_size: int = 16,
    ) -> SafetySteering:
        """Fit the per-layer directions from paired prompts (see the module docstring).

        Each prompt is tokenized as given (wrap it in a chat template first for a chat model) and run with right
        padding (the tokenizer's ``padding_side`` is set to ``"right"`` during the call and restored after); a
        layer's state for a prompt is its output at the prompt's last real token.

        Parameters
        ----------
        model
            A causal LM (any module whose decoder layers :func:`~sparsecore.llm.decoder_layers` finds).
        tokenizer
            Its tokenizer (a transformers tokenizer: called with ``return_tensors="pt"``).
        harmful, harmless
            Paired instructions, the same number of each (e.g. :func:`safety_pairs`).
        top_layers
            Fraction of layers to steer, in (0, 1].
        layers
            Module names to consider instead of every decoder layer.
        batch_size
            Prompts per forward pass.

        Returns
        -------
        SafetySteering

        Raises
        ------
        InvalidArgumentError
            ``top_layers`` outside (0, 1], unknown layer names, a model without decoder layers, or a bad
            ``batch_size``.
        ShapeMismatchError
            ``harmful`` and ``harmless`` differ in length or are empty.
        DTypeError
            The prompts are not a sequence of strings.
        """
        check_float(top_layers, "top_layers", low=0.0, high=1.0, low_open=True)
        harm = check_texts(harmful, "harmful")
        safe = check_texts(harmless, "harmless")
        if len(harm) != len(safe) or not harm:
            raise ShapeMismatchError(
                f"harmless: must pair up with harmful (same non-zero length), got {len(safe)} and {len(harm)}"
            )
        bs = _positive_int(batch_size, "batch_size")
        names = decoder_layers(model) if layers is None else _layer_names(model, layers)
        states_h = _last_token_states(model, tokenizer, harm, names, bs)
        states_s = _last_token_states(model, tokenizer, safe, names, bs)
        fits = [paired_direction(states_h[i], states_s[i]) for i in range(len(names))]
        return cls(
            names,
            np.stack([f.direction for f in fits]),
            [f.accuracy for f in fits],
            [f.separation for f in fits],
            top_layers=top_layers,
        )

    def sparse_direction(
        self, layer: str, sparsity: float = 0.05, *, selector: str = "abs_max", seed: int = 0
    ) -> Tensor:
        """The direction of ``layer`` with all but ``n_kept(sparsity, d)`` entries set to zero.

        Parameters
        ----------
        layer
            One of :attr:`layers`.
        sparsity
            Fraction of entries kept, in (0, 1]: ``round(sparsity * d)``, at least one.
        selector
            ``"abs_max"`` keeps the entries of largest magnitude; ``"random"`` a uniformly random subset of the
            same size (drawn from ``seed`` and the layer's position, so reproducible).
        seed
            Seed of the random selector.

        Returns
        -------
        Tensor
            ``(d,)`` float32; the kept entries are the direction's own values (no renormalisation).

        Raises
        ------
        InvalidArgumentError
            Unknown layer, ``sparsity`` outside (0, 1], unknown selector or bad seed.
        """
        if layer not in self.layers:
            raise InvalidArgumentError(f"layer: must be one of the fitted layers {self.layers!r}, got {layer!r}")
        s = _check_sparsity(sparsity)
        sel = check_choice(selector, "selector", SELECTORS)
        seed = check_seed(seed)
        i = self.layers.index(layer)
        direction = self.directions[i]
        k = n_kept(s, self.d)
        if sel == "abs_max":
            keep = direction.abs().topk(k).indices
        else:
            keep = torch.from_numpy(np.random.default_rng([seed, i]).choice(self.d, size=k, replace=False))
        out = torch.zeros_like(direction)
        out[keep] = direction[keep]
        return out

    @contextlib.contextmanager
    def apply(
        self,
        model: nn.Module,
        alpha: float,
        sparsity: float = 0.05,
        *,
        selector: str = "abs_max",
        seed: int = 0,
    ) -> Iterator[Steering]:
        """Add ``alpha * d_sparse`` to every kept layer's output, at every token, inside the ``with`` block.

        Applies to every forward pass, so to prefill and each decode step of ``generate``. The yielded
        :class:`Steering` changes ``alpha``, ``sparsity``, ``selector`` and ``seed`` at run time (the next forward
        uses them). The hooks are removed on exit, also on error.

        Parameters
        ----------
        model
            The model fitted on (or one with the same layer names and width).
        alpha
            Strength (finite; 0 is a no-op).
        sparsity
            Fraction of the direction's entries kept, in (0, 1] (see :meth:`sparse_direction`).
        selector
            ``"abs_max"`` or ``"random"``.
        seed
            Seed of the random selector.

        Yields
        ------
        Steering

        Raises
        ------
        InvalidArgumentError
            A bad argument, or a kept layer that ``model`` lacks.
        ShapeMismatchError
            (During a forward) a layer's output is not ``d`` wide.
        """
        steering = Steering(self, alpha, sparsity, selector=selector, seed=seed)
        for name in self.kept:
            resolve_module(model, name)
        with contextlib.ExitStack() as stack:
            for name in self.kept:
                stack.enter_context(edit(model, name, steering._adder(name)))
            yield steering

    @torch.no_grad()
    def shift(
        self,
        model: nn.Module,
        tokenizer: Any,
        prompts: Sequence[str],
        alpha: float,
        sparsity: float = 0.05,
        *,
        selector: str = "abs_max",
        seed: int = 0,
        layer: str | None = None,
        batch_size: int = 16,
    ) -> float:
        """The mean shift, along ``layer``'s direction, of ``layer``'s last-token state that :meth:`apply` causes.

        Runs ``prompts`` without and with ``apply(model, alpha, sparsity, selector=selector, seed=seed)`` and
        returns ``mean_i (h_steered_i - h_i) . d_layer`` over the prompts, where ``h_i`` is ``layer``'s output at
        prompt ``i``'s last real token (as in :meth:`fit`). Measured at the last layer, it is how far the steering
        moves the final state towards the harmful-prompt side; comparing ``sparsity=1.0`` (the full vector) with
        the top-5 % and a random 5 % at the same ``alpha`` is the paper's sparsity ablation. At the first kept
        layer it equals ``alpha * |d_sparse|^2`` exactly (nothing upstream is steered).

        Parameters
        ----------
        model, tokenizer
            As :meth:`fit`.
        prompts
            The prompts (wrapped in the chat template for a chat model).
        alpha, sparsity, selector, seed
            As :meth:`apply`.
        layer
            One of :attr:`layers` (default: the last one).
        batch_size
            Prompts per forward pass.

        Returns
        -------
        float

        Raises
        ------
        InvalidArgumentError
            Unknown ``layer`` or a bad argument of :meth:`apply`.
        DTypeError
            ``prompts`` is not a sequence of strings.
        """
        name = self.layers[-1] if layer is None else layer
        if name not in self.layers:
            raise InvalidArgumentError(f"layer: must be one of the fitted layers {self.layers!r}, got {name!r}")
        texts = check_texts(prompts, "prompts")
        bs = _positive_int(batch_size, "batch_size")
        base = _last_token_states(model, tokenizer, texts, [name], bs)[0]
        with self.apply(model, alpha, sparsity, selector=selector, seed=seed):
            steered = _last_token_states(model, tokenizer, texts, [name], bs)[0]
        direction = self.directions[self.layers.index(name)].double().numpy()
        return float(((steered - base) @ direction).mean())

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the fitted directions to ``path`` (a checked sparsecore container, kind ``"llm-safety-steer"``).

        Parameters
        ----------
        path
            Destination; replaced atomically.
        """
        meta = {"layers": self.layers, "top_layers": self.top_layers}
        arrays = {
            "directions": self.directions.numpy(),
            "accuracy": self.accuracy,
            "separation": self.separation,
        }
        write_container(path, _KIND, _VERSION, meta, arrays)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> SafetySteering:
        """Read directions written by :meth:`save`.

        Parameters
        ----------
        path
            The file.

        Returns
        -------
        SafetySteering

        Raises
        ------
        FileNotFoundError
            ``path`` does not exist.
        IndexFormatError
            Not such a file, or a corrupted / inconsistent one.
        """
        contents = read_container(path, _KIND, [_VERSION])
        layers = contents.meta.get("layers")
        top = contents.meta.get("top_layers")
        if not isinstance(layers, list) or not isinstance(top, float):
            raise IndexFormatError(f"{path}: the metadata lacks 'layers' or 'top_layers'")
        try:
            return cls(
                layers,
                contents.array("directions", np.float32, 2, path),
                contents.array("accuracy", np.float64, 1, path),
                contents.array("separation", np.float64, 1, path),
                top_layers=top,
            )
        except (InvalidArgumentError, ShapeMismatchError, NonFiniteError) as exc:
            raise IndexFormatError(f"{path}: inconsistent steering file ({exc})") from None


class Steering:
    """The live settings of a :meth:`SafetySteering.apply` block; changes apply from the next forward pass.

    Attributes
    ----------
    steer : SafetySteering
        The fitted directions.
    alpha, sparsity : float
    selector : str
    seed : int
    """

    def __init__(self, steer: SafetySteering, alpha: float, sparsity: float, *, selector: str, seed: int) -> None:
        self.steer = steer
        self._vectors: dict[str, Tensor] = {}
        self._cast: dict[tuple[str, torch.dtype, torch.device], Tensor] = {}
        self.alpha = 0.0
        self.sparsity = 1.0
        self.selector = "abs_max"
        self.seed = 0
        self.set(alpha=alpha, sparsity=sparsity, selector=selector, seed=seed)

    def __repr__(self) -> str:
        return (
            f"Steering(alpha={self.alpha:g}, sparsity={self.sparsity:g}, selector={self.selector!r}, "
            f"layers={self.steer.kept!r})"
        )

    def set(
        self,
        *,
        alpha: float | None = None,
        sparsity: float | None = None,
        selector: str | None = None,
        seed: int | None = None,
    ) -> None:
        """Change some settings (None keeps one); every kept layer uses them from the next forward pass on.

        Parameters
        ----------
        alpha
            New strength (finite).
        sparsity
            New fraction of kept entries, in (0, 1].
        selector
            ``"abs_max"`` or ``"random"``.
        seed
            New seed of the random selector.

        Raises
        ------
        InvalidArgumentError
            A non-finite ``alpha``, ``sparsity`` outside (0, 1], an unknown selector or a bad seed (nothing is
            changed then).
        """
        new_alpha = self.alpha if alpha is None else check_float(alpha, "alpha")
        new_sparsity = self.sparsity if sparsity is None else _check_sparsity(sparsity)
        new_selector = self.selector if selector is None else check_choice(selector, "selector", SELECTORS)
        new_seed = self.seed if seed is None else check_seed(seed)
        self.alpha, self.sparsity, self.selector, self.seed = new_alpha, new_sparsity, new_selector, new_seed
        vectors = {
            name: new_alpha * self.steer.sparse_direction(name, new_sparsity, selector=new_selector, seed=new_seed)
            for name in self.steer.kept
        }
        self._vectors, self._cast = vectors, {}

    def vector(self, layer: str) -> Tensor:
        """The float32 vector ``alpha * d_sparse`` added to ``layer``'s output now.

        Parameters
        ----------
        layer
            One of the steered layers (``steer.kept``).

        Returns
        -------
        Tensor
            ``(d,)`` float32.

        Raises
        ------
        InvalidArgumentError
            ``layer`` is not steered.
        """
        if layer not in self._vectors:
            raise InvalidArgumentError(f"layer: must be one of the steered layers {self.steer.kept!r}, got {layer!r}")
        return self._vectors[layer]

    def _adder(self, name: str) -> Callable[[Tensor], Tensor]:
        def add(h: Tensor) -> Tensor:
            vec = self._vectors[name]
            if h.shape[-1] != vec.shape[0]:
                raise ShapeMismatchError(
                    f"model: the output of {name!r} is {h.shape[-1]} wide, the steering direction {vec.shape[0]}"
                )
            key = (name, h.dtype, h.device)
            cast = self._cast.get(key)
            if cast is None:  # once per layer, dtype and device after each change (not at every decode step)
                cast = self._cast[key] = vec.to(dtype=h.dtype, device=h.device)
            return h + cast

        return add


def _layer_names(model: nn.Module, layers: Sequence[str]) -> list[str]:
    if isinstance(layers, str) or not isinstance(layers, Sequence) or not layers:
        raise InvalidArgumentError(f"layers: must be a non-empty sequence of module names, got {layers!r}")
    names = list(dict.fromkeys(layers))
    for name in names:
        resolve_module(model, name)
    return names


@contextlib.contextmanager
def _right_padding(tokenizer: Any) -> Iterator[None]:
    """Pad on the right while the block runs (left padding would shift the position ids of many models)."""
    side = getattr(tokenizer, "padding_side", None)
    if side is None or side == "right":
        yield
        return
    tokenizer.padding_side = "right"
    try:
        yield
    finally:
        tokenizer.padding_side = side


@torch.no_grad()
def _last_token_states(
    model: nn.Module, tokenizer: Any, texts: list[str], names: list[str], batch_size: int
) -> list[NDArray[np.float64]]:
    """Per layer, ``(n_texts, d)`` float64: each layer's output at each text's last real token."""
    device = next(model.parameters()).device
    pad = getattr(tokenizer, "pad_token_id", None) is not None
    step = batch_size if pad else 1  # without a pad token, one prompt per forward
    rows: dict[str, list[Tensor]] = {name: [] for name in names}
    with capture(model, names) as cap, _right_padding(tokenizer):
        for start in range(0, len(texts), step):
            chunk = texts[start : start + step]
            enc = tokenizer(chunk, return_tensors="pt", padding=pad)
            enc = {k: v.to(device) for k, v in enc.items() if isinstance(v, Tensor)}
            mask = enc.get("attention_mask")
            if mask is None:
                mask = torch.ones_like(enc["input_ids"])
            if bool((mask.sum(dim=1) == 0).any()):
                raise InvalidArgumentError("texts: a prompt tokenized to no tokens")
            # the last set position of each row
            last = mask.shape[1] - 1 - (mask.flip(1) != 0).int().argmax(dim=1)
            cap(**enc)
            batch = torch.arange(mask.shape[0], device=mask.device)
            for name in names:
                rows[name].append(cap[name][batch, last].double().cpu())
    return [torch.cat(rows[name]).numpy() for name in names]
