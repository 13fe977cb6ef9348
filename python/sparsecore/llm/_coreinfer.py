"""CoreInfer: decode with each FFN sliced to the sentence-wise core neurons found at the prompt's prefill.

For a gated FFN ``down(act(gate(h)) * up(h))`` (Llama, Qwen, Mistral, SmolLM2...) the *neurons* are the
``d_ff`` intermediate features, whose activations are the input of ``down_proj``. What is implemented:

1. **Token-wise core neurons.** For a token with activations ``a`` (length ``d_ff``) and ``P`` positive entries,
   its core neurons are the ``k = n_kept(token_sparsity, P)`` largest activations (``round(token_sparsity * P)``,
   halves up, at least 1; none when ``P = 0``), ties to the lower index. They are all positive.
2. **Sentence-wise core neurons.** Over the prompt's real tokens (padding excluded, every row of a batch
   together), ``f_i`` counts the tokens in which neuron ``i`` is token-wise core. The sentence-wise core neurons
   are the ``K = n_kept(sparsity, d_ff)`` neurons with the largest ``f_i``; ties go to the larger summed positive
   activation over those tokens, then to the lower index. ``sparsity`` is thus the fraction of each FFN's
   neurons that is *kept* (the paper's sentence-wise ratio beta; 0.4 keeps 40 %), as ``token_sparsity`` is the
   fraction of each token's positive activations kept (the paper's token-wise ratio alpha). Both names and defaults
   follow the paper's reference code.

   ``criterion="magnitude"`` ranks ``|a|`` instead (``P`` then counts the non-zero entries, the mass sums ``|a|``):
   in SwiGLU FFNs a large negative ``silu(gate) * up`` matters as much as a large positive one, which the paper's
   ReLU-era rule ignores (measured on SmolLM2-135M, ``benches/bench_llm.py``).
3. **Sliced decoding.** :meth:`CoreNeurons.generate` runs the prefill with the dense model (capturing the
   activations and filling the KV cache), selects the core neurons per decoder layer, replaces each FFN's
   ``gate_proj`` / ``up_proj`` by new ``nn.Linear`` holding only the core rows and ``down_proj`` by one holding
   only the core columns (``K / d_ff`` of the FFN's weights and FLOPs), decodes, and puts the original modules
   back. The prompt's last token is run again as the first decode step (through the sliced FFNs), because
   ``generate`` needs one uncached token to start from.

The sliced FFN computes exactly the dense FFN with the non-core activations set to zero (the tests check this).

References
----------
- Q. Wang et al. "CoreInfer: Accelerating Large Language Model Inference with Semantics-Inspired Adaptive
  Sparse Activation" (2024).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from sparsecore._validate import check_choice, check_float
from sparsecore.exceptions import DTypeError, InvalidArgumentError, ShapeMismatchError
from sparsecore.llm._calib import model_device, run_with_input_hooks
from sparsecore.llm._layers import decoder_layers
from sparsecore.llm._steering import n_kept
from sparsecore.llm.hooks import resolve_module

__all__ = ["CoreNeurons", "core_neurons", "gated_ffns", "token_core_counts"]

#: How token-wise core neurons are ranked: the largest positive activations (the paper) or the largest |a|.
CRITERIA = ("positive", "magnitude")
#: Child names of a gated FFN (transformers' Llama / Qwen / Mistral / SmolLM2 MLPs).
FFN_NAMES = ("gate_proj", "up_proj", "down_proj")


def _fraction(value: object, name: str) -> float:
    return check_float(value, name, low=0.0, high=1.0, low_open=True)


def gated_ffns(model: nn.Module, layers: Sequence[str] | None = None) -> list[str]:
    """Names of the gated FFNs (modules with ``gate_proj``, ``up_proj``, ``down_proj`` Linear children).

    Parameters
    ----------
    model
        A causal LM.
    layers
        Decoder-layer names (default :func:`~sparsecore.llm.decoder_layers`); each must hold exactly one gated
        FFN.

    Returns
    -------
    list of str
        One FFN name per layer, e.g. ``"model.layers.0.mlp"``.

    Raises
    ------
    InvalidArgumentError
        A model without decoder layers, unknown layer names, or a layer without (or with several) gated FFNs.
    """
    if layers is None:
        names = decoder_layers(model)
    elif isinstance(layers, str) or not isinstance(layers, Sequence) or not layers:
        raise InvalidArgumentError(f"layers: must be a non-empty sequence of module names, got {layers!r}")
    else:
        names = list(dict.fromkeys(layers))
    out: list[str] = []
    for layer in names:
        block = resolve_module(model, layer)
        found = [
            f"{layer}.{sub}" if sub else layer
            for sub, mod in block.named_modules()
            if all(isinstance(getattr(mod, child, None), nn.Linear) for child in FFN_NAMES)
        ]
        if len(found) != 1:
            what = "no" if not found else f"{len(found)}"
            raise InvalidArgumentError(
                f"layers: {layer!r} holds {what} gated FFN (a module with Linear {', '.join(FFN_NAMES)}); "
                "CoreNeurons needs exactly one per layer"
            )
        out.append(found[0])
    return out


def token_core_counts(activations: Tensor, token_sparsity: float, criterion: str = "positive") -> tuple[Tensor, Tensor]:
    """Per neuron, in how many tokens it is token-wise core, and its summed positive activation.

    Parameters
    ----------
    activations
        ``(n_tokens, d_ff)`` FFN intermediate activations (the input of ``down_proj``).
    token_sparsity
        Fraction of each token's positive activations kept, in (0, 1] (see the module docstring).
    criterion
        ``"positive"`` (the paper: the largest positive activations) or ``"magnitude"`` (the largest ``|a|``).

    Returns
    -------
    counts : Tensor
        ``(d_ff,)`` int64.
    mass : Tensor
        ``(d_ff,)`` float64, the sum of ``max(a, 0)`` (``|a|`` for ``"magnitude"``) over the tokens.

    Raises
    ------
    InvalidArgumentError
        ``token_sparsity`` outside (0, 1] or an unknown criterion.
    ShapeMismatchError
        ``activations`` is not 2-D.
    """
    alpha = _fraction(token_sparsity, "token_sparsity")
    if not isinstance(activations, Tensor) or activations.dim() != 2:
        shape = tuple(activations.shape) if isinstance(activations, Tensor) else type(activations).__name__
        raise ShapeMismatchError(f"activations: must be a 2-D tensor (n_tokens, d_ff), got {shape}")
    a = activations.detach().float()
    if check_choice(criterion, "criterion", CRITERIA) == "magnitude":
        a = a.abs()
    n_tokens, d_ff = a.shape
    positive = (a > 0).sum(dim=1)
    # n_kept per token in float64, as the Python n_kept computes it: round(alpha * P) halves up, in [1, P]
    k = torch.floor(alpha * positive.double() + 0.5).long().clamp(min=1)
    k = torch.minimum(k, positive)
    order = a.argsort(dim=1, descending=True, stable=True)
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(d_ff, device=a.device).expand(n_tokens, d_ff))
    core = rank < k[:, None]
    return core.sum(dim=0).cpu(), a.clamp(min=0).double().sum(dim=0).cpu()


def _pick(counts: Tensor, mass: Tensor, sparsity: float) -> Tensor:
    """The ``n_kept(sparsity, d_ff)`` neurons by (count desc, mass desc, index asc), sorted ascending."""
    by_mass = mass.argsort(descending=True, stable=True)
    order = by_mass[counts[by_mass].argsort(descending=True, stable=True)]
    keep = n_kept(sparsity, counts.numel())
    return order[:keep].sort().values


def core_neurons(
    activations: Tensor, token_sparsity: float = 0.2, sparsity: float = 0.4, criterion: str = "positive"
) -> Tensor:
    """The sentence-wise core neurons of one FFN from its activations over a prompt's tokens.

    Parameters
    ----------
    activations
        ``(n_tokens, d_ff)`` intermediate activations at the prompt's real tokens.
    token_sparsity
        Fraction of each token's positive activations that are token-wise core, in (0, 1].
    sparsity
        Fraction of the ``d_ff`` neurons kept, in (0, 1].
    criterion
        ``"positive"`` or ``"magnitude"`` (see :func:`token_core_counts`).

    Returns
    -------
    Tensor
        ``(n_kept(sparsity, d_ff),)`` int64 neuron ids, ascending.

    Raises
    ------
    InvalidArgumentError
        A fraction outside (0, 1] or an unknown criterion.
    ShapeMismatchError
        ``activations`` is not 2-D.
    """
    beta = _fraction(sparsity, "sparsity")
    counts, mass = token_core_counts(activations, token_sparsity, criterion)
    return _pick(counts, mass, beta)


def _child(ffn: nn.Module, name: str) -> nn.Linear:
    lin = getattr(ffn, name, None)
    if not isinstance(lin, nn.Linear):
        raise InvalidArgumentError(f"model: the FFN's {name!r} is a {type(lin).__name__}, not a torch.nn.Linear")
    return lin


def _sliced_linear(lin: nn.Linear, idx: Tensor, dim: int) -> nn.Linear:
    """A new Linear holding the rows (``dim=0``) or columns (``dim=1``) ``idx`` of ``lin``'s weight."""
    w = lin.weight.detach().index_select(dim, idx.to(lin.weight.device)).contiguous()
    out_f, in_f = w.shape
    bias = lin.bias is not None
    new = nn.Linear(in_f, out_f, bias=bias, device="meta", dtype=w.dtype)
    new.weight = nn.Parameter(w, requires_grad=False)
    if lin.bias is not None:
        b = lin.bias.detach()
        new.bias = nn.Parameter(b.index_select(0, idx.to(b.device)).contiguous() if dim == 0 else b, False)
    return new


class CoreNeurons:
    """CoreInfer's sentence-wise core neurons of a model's gated FFNs, and decoding with the FFNs sliced to them.

    See the module docstring for the exact selection rule. Typical use is :meth:`generate`; :meth:`select` and
    :meth:`sliced` are its two halves.

    Parameters
    ----------
    model
        A transformers causal LM with gated FFNs (``gate_proj`` / ``up_proj`` / ``down_proj``).
    token_sparsity
        Fraction of each token's positive activations that are token-wise core, in (0, 1] (paper: alpha).
    sparsity
        Fraction of each FFN's neurons kept for decoding, in (0, 1] (paper: beta).
    criterion
        ``"positive"`` (the paper) or ``"magnitude"`` (rank ``|a|``; see the module docstring).
    layers
        Decoder-layer names (default all of them).

    Attributes
    ----------
    ffns : list of str
        The FFN module names, one per decoder layer.
    core : dict of str to Tensor or None
        FFN name -> kept neuron ids (int64, ascending) from the latest :meth:`select`; None before.

    Raises
    ------
    InvalidArgumentError
        A fraction outside (0, 1], an unknown criterion, a model without decoder layers, unknown layers, or a layer
        without a gated FFN.
    """

    def __init__(
        self,
        model: nn.Module,
        token_sparsity: float = 0.2,
        sparsity: float = 0.4,
        *,
        criterion: str = "positive",
        layers: Sequence[str] | None = None,
    ) -> None:
        self.token_sparsity = _fraction(token_sparsity, "token_sparsity")
        self.sparsity = _fraction(sparsity, "sparsity")
        self.criterion = check_choice(criterion, "criterion", CRITERIA)
        self.model = model
        self.ffns = gated_ffns(model, layers)
        self._d_ff = {name: _child(resolve_module(model, name), "down_proj").in_features for name in self.ffns}
        self.core: dict[str, Tensor] | None = None
        self._slicing = False

    def __repr__(self) -> str:
        state = "unselected" if self.core is None else "selected"
        return (
            f"CoreNeurons(token_sparsity={self.token_sparsity:g}, sparsity={self.sparsity:g}, "
            f"criterion={self.criterion!r}, "
            f"ffns={len(self.ffns)}, {state})"
        )

    def _down_projs(self) -> dict[str, nn.Module]:
        """The FFNs' down projections, checked to be the full-width modules (not sliced by anyone)."""
        out: dict[str, nn.Module] = {}
        for name in self.ffns:
            down = _child(resolve_module(self.model, name), "down_proj")
            if down.in_features != self._d_ff[name]:
                raise InvalidArgumentError(
                    f"model: the FFN {name!r} is sliced ({down.in_features} of {self._d_ff[name]} neurons); "
                    "leave the sliced() block first"
                )
            out[name] = down
        return out

    @torch.no_grad()
    def select(self, input_ids: Tensor, attention_mask: Tensor | None = None, **kwargs: Any) -> Any:
        """Run the dense model on a prompt and set :attr:`core` from its activations; returns the model output.

        Parameters
        ----------
        input_ids
            ``(batch, seq)`` prompt ids; with ``batch > 1`` one core set is chosen from all rows' real tokens.
        attention_mask
            ``(batch, seq)``; padding positions are left out of the counts.
        **kwargs
            Passed to the model (e.g. ``use_cache=True``, ``position_ids``).

        Returns
        -------
        Any
            The model's output (its KV cache can seed decoding).

        Raises
        ------
        ShapeMismatchError
            ``input_ids`` is not 2-D.
        InvalidArgumentError
            The FFNs are sliced (inside a :meth:`sliced` block).
        """
        if not isinstance(input_ids, Tensor) or input_ids.dim() != 2:
            shape = tuple(input_ids.shape) if isinstance(input_ids, Tensor) else type(input_ids).__name__
            raise ShapeMismatchError(f"input_ids: must be a 2-D tensor (batch, seq), got {shape}")
        counts: dict[str, Tensor] = {}
        mass: dict[str, Tensor] = {}

        def visit(name: str, x: Tensor) -> None:
            c, m = token_core_counts(x, self.token_sparsity, self.criterion)
            counts[name] = counts[name] + c if name in counts else c
            mass[name] = mass[name] + m if name in mass else m

        batch: dict[str, Any] = {"input_ids": input_ids, **kwargs}
        if attention_mask is not None:
            batch["attention_mask"] = attention_mask
        out = run_with_input_hooks(self.model, self._down_projs(), [batch], visit)
        self.core = {name: _pick(counts[name], mass[name], self.sparsity) for name in self.ffns}
        return out

    @contextlib.contextmanager
    def sliced(self, core: Mapping[str, Tensor] | None = None) -> Iterator[dict[str, Tensor]]:
        """Within the block every FFN runs only its core neurons (smaller Linear modules); restored on exit.

        Parameters
        ----------
        core
            FFN name -> neuron ids to keep; default :attr:`core`.

        Yields
        ------
        dict of str to Tensor
            The neuron ids in use.

        Raises
        ------
        InvalidArgumentError
            No core selected yet, an FFN missing from ``core``, ids out of range or repeated, or already sliced.
        """
        if self._slicing:
            raise InvalidArgumentError("CoreNeurons: the FFNs are already sliced (nested sliced() blocks)")
        use = self._checked_core(core)
        self._down_projs()  # the FFNs must be whole (not sliced by another CoreNeurons)
        originals: list[tuple[nn.Module, str, nn.Module]] = []
        self._slicing = True
        try:
            for name, idx in use.items():
                ffn = resolve_module(self.model, name)
                gate, up, down = (_child(ffn, child) for child in FFN_NAMES)
                replacements = (_sliced_linear(gate, idx, 0), _sliced_linear(up, idx, 0), _sliced_linear(down, idx, 1))
                for child, old, new in zip(FFN_NAMES, (gate, up, down), replacements, strict=True):
                    originals.append((ffn, child, old))
                    setattr(ffn, child, new)
            yield use
        finally:
            for owner, child, module in reversed(originals):
                setattr(owner, child, module)
            self._slicing = False

    def _checked_core(self, core: Mapping[str, Tensor] | None) -> dict[str, Tensor]:
        if core is None:
            if self.core is None:
                raise InvalidArgumentError("core: no core neurons selected yet (call select() or pass core)")
            core = self.core
        if not isinstance(core, Mapping):
            raise InvalidArgumentError(f"core: must map FFN names to neuron ids, got {type(core).__name__}")
        out: dict[str, Tensor] = {}
        for name in self.ffns:
            idx = core.get(name)
            if not isinstance(idx, Tensor) or idx.dim() != 1 or idx.dtype not in (torch.int32, torch.int64):
                raise InvalidArgumentError(f"core: must hold a 1-D integer tensor for {name!r}, got {idx!r}")
            d_ff = self._d_ff[name]
            if (
                idx.numel() == 0
                or int(idx.min()) < 0
                or int(idx.max()) >= d_ff
                or torch.unique(idx).numel() != idx.numel()
            ):
                raise InvalidArgumentError(f"core: the ids for {name!r} must be distinct and in [0, {d_ff})")
            out[name] = idx.long()
        return out

    @torch.no_grad()
    def generate(self, input_ids: Tensor, attention_mask: Tensor | None = None, **generate_kwargs: Any) -> Any:
        """Prefill densely, select the core neurons, decode with the FFNs sliced, restore; returns ``generate``'s.

        The dense prefill's KV cache is kept (less the last prompt token, which ``generate`` re-runs as its first
        step) so the prompt is not processed twice. Position ids follow the attention mask as ``generate`` sets
        them (left padding works).

        Parameters
        ----------
        input_ids
            ``(batch, seq)`` prompt ids.
        attention_mask
            ``(batch, seq)``; default all ones.
        **generate_kwargs
            Passed to ``model.generate`` (``max_new_tokens``, ``do_sample``...); not ``cache`` /
            ``past_key_values``.

        Returns
        -------
        Any
            What ``model.generate`` returns (the ids, prompt included, by default).

        Raises
        ------
        DTypeError
            The model has no ``generate`` method.
        InvalidArgumentError
            ``cache``, ``past_key_values`` or ``use_cache=False`` among the keyword arguments.
        ShapeMismatchError
            ``input_ids`` not 2-D, or an attention mask of another shape.
        """
        gen = getattr(self.model, "generate", None)
        if not callable(gen):
            raise DTypeError(f"model: {type(self.model).__name__} has no generate() method")
        if {"cache", "past_key_values"} & set(generate_kwargs) or generate_kwargs.get("use_cache", True) is False:
            raise InvalidArgumentError("generate_kwargs: CoreNeurons.generate manages the KV cache itself")
        if not isinstance(input_ids, Tensor) or input_ids.dim() != 2:
            shape = tuple(input_ids.shape) if isinstance(input_ids, Tensor) else type(input_ids).__name__
            raise ShapeMismatchError(f"input_ids: must be a 2-D tensor (batch, seq), got {shape}")
        device = model_device(self.model)
        input_ids = input_ids.to(device)
        mask = torch.ones_like(input_ids) if attention_mask is None else attention_mask.to(device)
        if mask.shape != input_ids.shape:
            raise ShapeMismatchError(
                f"attention_mask: shape {tuple(mask.shape)} does not match input_ids {tuple(input_ids.shape)}"
            )
        # generate's position ids: the count of real tokens before each position (1 at padding)
        position_ids = (mask.long().cumsum(-1) - 1).masked_fill(mask == 0, 1)
        out = self.select(input_ids, mask, position_ids=position_ids, use_cache=True)
        cache = getattr(out, "cache", None) or getattr(out, "past_key_values", None)
        if cache is None or not callable(getattr(cache, "crop", None)):
            raise DTypeError(f"model: {type(self.model).__name__} returned no croppable KV cache (past_key_values)")
        cache.crop(-1)  # drop the last prompt token: generate runs it as its first step (a negative count in all
        # transformers versions that have crop)
        with self.sliced():
            return gen(input_ids=input_ids, attention_mask=mask, **{_cache_kwarg(): cache}, **generate_kwargs)


def _cache_kwarg() -> str:
    """The name ``generate`` takes a KV cache under: ``cache`` in newer transformers, else ``past_key_values``."""
    try:
        from transformers.generation import utils
    except ImportError:  # pragma: no cover - transformers is how generate() exists at all
        return "past_key_values"
    return "cache" if "cache" in getattr(utils, "ALL_CACHE_NAMES", ()) else "past_key_values"
