"""Forward hooks on any ``torch.nn.Module``: find a submodule, capture its output, or replace it.

A module is named as in ``model.named_modules()``, e.g. ``"model.layers.6"`` for the seventh decoder layer of a
transformers Llama model. A module's *output tensor* is its output when that is a Tensor, element 0 when it is a
tuple or list (decoder layers of many models return ``(hidden_states, ...)``), and the first field of a
transformers ``ModelOutput`` (``last_hidden_state``, ``logits``...).

:func:`capture` records output tensors; with ``stop_after_last=True`` (the default) it also stops the forward
pass right after the last hooked module ran, so the layers above it cost nothing. It does so by raising a private
exception from the hook, which :meth:`Capture.forward` (and the ``with`` block itself) catch. :func:`edit`
replaces a module's output tensor by ``fn(output)`` in every forward pass, so also at prefill and at every decode
step of ``model.generate``. Every hook is removed when its ``with`` block exits, also on error.

Padding: :func:`token_mask` and :func:`select_tokens` turn an attention mask into the positions of real tokens
(left or right padding), optionally without each row's first token (the BOS / attention-sink position).
"""

from __future__ import annotations

import contextlib
import difflib
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from sparsecore._validate import check_bool
from sparsecore.exceptions import DTypeError, InvalidArgumentError, ShapeMismatchError

__all__ = [
    "Capture",
    "capture",
    "edit",
    "output_tensor",
    "replace_output",
    "resolve_module",
    "select_tokens",
    "token_mask",
]

# How many close names an unknown-module error lists.
_N_SUGGESTIONS = 5


def resolve_module(model: nn.Module, name: str) -> nn.Module:
    """The submodule of ``model`` called ``name`` (``""`` is ``model`` itself).

    Parameters
    ----------
    model
        Any torch module, e.g. a transformers model.
    name
        A dotted name from ``model.named_modules()``, e.g. ``"model.layers.6"``.

    Returns
    -------
    torch.nn.Module

    Raises
    ------
    InvalidArgumentError
        ``name`` is not a string, or ``model`` has no such module (the message lists close names).
    """
    if not isinstance(model, nn.Module):
        raise InvalidArgumentError(f"model: must be a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(name, str):
        raise InvalidArgumentError(f"hook: must be a module name (str), got {name!r}")
    modules: dict[str, nn.Module] = dict(model.named_modules())
    module = modules.get(name)
    if module is not None:
        return module
    close = difflib.get_close_matches(name, list(modules), n=_N_SUGGESTIONS, cutoff=0.5)
    if not close:
        close = [n for n in modules if n][:_N_SUGGESTIONS]
    raise InvalidArgumentError(
        f"hook: {type(model).__name__} has no module {name!r}; close names: {', '.join(map(repr, close))}"
    )


def output_tensor(output: Any) -> Tensor:
    """The tensor a module's output stands for: itself, element 0 of a tuple/list, or a ModelOutput's first field.

    Raises
    ------
    DTypeError
        The output holds no tensor in that place.
    """
    if isinstance(output, Tensor):
        return output
    first: Any = None
    if (isinstance(output, (tuple, list)) and output) or _is_model_output(output):
        first = output[0]
    if isinstance(first, Tensor):
        return first
    raise DTypeError(
        f"hook: the module's output is {type(output).__name__}, not a Tensor, a tuple/list starting with one or "
        "a ModelOutput"
    )


def replace_output(output: Any, new: Tensor) -> Any:
    """``output`` with its output tensor (see :func:`output_tensor`) replaced by ``new``, same structure."""
    if isinstance(output, Tensor):
        return new
    if isinstance(output, list):
        return [new, *output[1:]]
    if isinstance(output, tuple):
        rest = tuple(output[1:])
        return type(output)(new, *rest) if hasattr(output, "_fields") else (new, *rest)  # namedtuple or tuple
    if _is_model_output(output):
        key = next(iter(output.keys()))
        output[key] = new  # ModelOutput.__setitem__ sets the attribute too
        return output
    raise DTypeError(f"hook: cannot replace the output of type {type(output).__name__}")


def _is_model_output(output: Any) -> bool:
    """Whether ``output`` is a transformers ``ModelOutput`` (an ordered dict that also indexes by position)."""
    return hasattr(output, "to_tuple") and hasattr(output, "keys")


def _hook_names(hooks: str | Sequence[str]) -> list[str]:
    names = [hooks] if isinstance(hooks, str) else list(hooks) if isinstance(hooks, Sequence) else None
    if not names or not all(isinstance(n, str) for n in names):
        raise InvalidArgumentError(f"hooks: must be a module name or a non-empty sequence of names, got {hooks!r}")
    return list(dict.fromkeys(names))  # in order, without repeats


class _StopForward(Exception):  # noqa: N818 (a control-flow signal, not an error)
    """Raised by a capture hook to end the forward pass early; caught by the :class:`Capture` that raised it."""

    def __init__(self, owner: Capture) -> None:
        super().__init__("forward stopped after the last captured module")
        self.owner = owner


class Capture:
    """The outputs recorded by :func:`capture`, by module name (those of the latest forward pass).

    Attributes
    ----------
    model
        The hooked model.
    names
        The hooked module names, in the order given.
    outputs
        Module name -> output tensor (not detached: it carries autograd history when the forward did).
    stop_after_last
        Whether the forward stops once every hooked module ran.
    """

    def __init__(self, model: nn.Module, names: list[str], stop_after_last: bool) -> None:
        self.model = model
        self.names = names
        self.stop_after_last = stop_after_last
        self.outputs: dict[str, Tensor] = {}
        self._fired: set[str] = set()

    def __getitem__(self, name: str) -> Tensor:
        """The latest output tensor of module ``name``.

        Raises
        ------
        KeyError
            ``name`` is not hooked or has not run yet.
        """
        return self.outputs[name]

    def __repr__(self) -> str:
        return f"Capture(names={self.names!r}, recorded={sorted(self.outputs)!r})"

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """Run ``model(*args, **kwargs)``; the model's output, or None when the forward was stopped early."""
        try:
            return self.model(*args, **kwargs)
        except _StopForward as exc:
            if exc.owner is not self:
                raise
            return None

    __call__ = forward

    def tokens(self, name: str, attention_mask: Tensor | None, *, drop_first: bool = False) -> Tensor:
        """The output of ``name`` at real tokens only, ``(n_tokens, d)`` (see :func:`select_tokens`)."""
        return select_tokens(self[name], attention_mask, drop_first=drop_first)

    def _record(self, name: str, module: nn.Module, output: Any) -> None:
        self.outputs[name] = output_tensor(output)
        self._fired.add(name)
        if len(self._fired) == len(self.names):
            self._fired.clear()
            if self.stop_after_last and module is not self.model:
                raise _StopForward(self)


@contextlib.contextmanager
def capture(model: nn.Module, hooks: str | Sequence[str], *, stop_after_last: bool = True) -> Iterator[Capture]:
    """Record the output tensors of the modules ``hooks`` during forward passes in the ``with`` block.

    Run the model with the yielded object (``cap(input_ids=...)``), or call ``model`` directly inside the block.
    With ``stop_after_last``, the forward pass ends right after every hooked module ran once: the hook raises a
    private exception that :meth:`Capture.forward` catches (returning None), as does the ``with`` block when the
    model was called directly (the rest of the block is then skipped). The model's later layers never run.

    Parameters
    ----------
    model
        Any torch module.
    hooks
        One module name or several (see :func:`resolve_module`).
    stop_after_last
        Stop the forward once all hooked modules ran (not when the last one is ``model`` itself).

    Yields
    ------
    Capture
        ``cap[name]`` is the latest output tensor of module ``name``.

    Raises
    ------
    InvalidArgumentError
        An unknown module name, an empty ``hooks``, or a non-bool ``stop_after_last``.
    """
    stop = check_bool(stop_after_last, "stop_after_last")
    names = _hook_names(hooks)
    modules = [resolve_module(model, n) for n in names]
    cap = Capture(model, names, stop)
    handles: list[torch.utils.hooks.RemovableHandle] = []
    try:
        handles.append(model.register_forward_pre_hook(lambda _m, _a: cap._fired.clear()))
        for name, module in zip(names, modules, strict=True):
            handles.append(module.register_forward_hook(_recorder(cap, name)))
        yield cap
    except _StopForward as exc:
        if exc.owner is not cap:
            raise
    finally:
        for h in handles:
            h.remove()


def _recorder(cap: Capture, name: str) -> Callable[[nn.Module, Any, Any], None]:
    def hook(module: nn.Module, _args: Any, output: Any) -> None:
        cap._record(name, module, output)

    return hook


@contextlib.contextmanager
def edit(model: nn.Module, hook: str, fn: Callable[[Tensor], Tensor]) -> Iterator[None]:
    """Replace the output tensor of module ``hook`` by ``fn(output)`` in every forward pass of the block.

    Tuple, list and ModelOutput outputs keep their structure (only the output tensor is replaced). Applies to
    every forward, so during ``model.generate`` at prefill and at each decode step (where the tensor holds only
    the new positions when a KV cache is used). The hook is removed on exit, also on error.

    Parameters
    ----------
    model
        Any torch module.
    hook
        The module's name (see :func:`resolve_module`).
    fn
        Maps the output tensor ``(..., d)`` to a tensor of the same shape.

    Raises
    ------
    InvalidArgumentError
        Unknown module, or ``fn`` not callable.
    ShapeMismatchError
        (During a forward) ``fn`` returned another shape.
    DTypeError
        (During a forward) ``fn`` returned something else than a Tensor.
    """
    module = resolve_module(model, hook)
    if not callable(fn):
        raise InvalidArgumentError(f"fn: must be callable, got {type(fn).__name__}")

    def replace(_module: nn.Module, _args: Any, output: Any) -> Any:
        old = output_tensor(output)
        new = fn(old)
        if not isinstance(new, Tensor):
            raise DTypeError(f"fn: must return a Tensor, got {type(new).__name__}")
        if new.shape != old.shape:
            raise ShapeMismatchError(f"fn: must keep the shape {tuple(old.shape)}, got {tuple(new.shape)}")
        return replace_output(output, new)

    handle = module.register_forward_hook(replace)
    try:
        yield
    finally:
        handle.remove()


def token_mask(attention_mask: Tensor, *, drop_first: bool = False) -> Tensor:
    """Boolean ``(batch, seq)`` mask of real tokens, optionally without each row's first real token.

    Works for left and right padding: the first real token is the first position where the mask is set.

    Parameters
    ----------
    attention_mask
        ``(batch, seq)``, nonzero at real tokens.
    drop_first
        Also clear each row's first real token (BOS, attention sink).

    Raises
    ------
    ShapeMismatchError
        ``attention_mask`` is not 2-D.
    """
    if attention_mask.dim() != 2:
        raise ShapeMismatchError(f"attention_mask: must be 2-D (batch, seq), got shape {tuple(attention_mask.shape)}")
    mask = attention_mask != 0
    if drop_first and mask.shape[1] > 0:
        first = mask.int().argmax(dim=1)  # first set position (0 for an all-padding row, which is cleared anyway)
        mask = mask.clone()
        mask[torch.arange(mask.shape[0], device=mask.device), first] = False
    return mask


def select_tokens(hidden: Tensor, attention_mask: Tensor | None, *, drop_first: bool = False) -> Tensor:
    """Rows of ``hidden`` ``(batch, seq, d)`` at real tokens, as ``(n_tokens, d)`` in row-major order.

    Parameters
    ----------
    hidden
        A captured output tensor.
    attention_mask
        ``(batch, seq)``; None keeps every position.
    drop_first
        Drop each row's first real token (see :func:`token_mask`).

    Raises
    ------
    ShapeMismatchError
        ``hidden`` is not 3-D or the mask's shape is not its first two dimensions.
    """
    if hidden.dim() != 3:
        raise ShapeMismatchError(f"hidden: must be 3-D (batch, seq, d), got shape {tuple(hidden.shape)}")
    if attention_mask is None:
        attention_mask = torch.ones(hidden.shape[:2], dtype=torch.long, device=hidden.device)
    if tuple(attention_mask.shape) != tuple(hidden.shape[:2]):
        raise ShapeMismatchError(
            f"attention_mask: shape {tuple(attention_mask.shape)} does not match hidden {tuple(hidden.shape)}"
        )
    return hidden[token_mask(attention_mask, drop_first=drop_first).to(hidden.device)]
