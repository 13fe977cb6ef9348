"""Find the decoder layers of a causal LM and the ``nn.Linear`` modules inside them."""

from __future__ import annotations

from torch import nn

from sparsecore.exceptions import InvalidArgumentError

__all__ = ["decoder_layers", "linear_layers"]

# Where transformers keeps the decoder stack (Llama/Mistral/Qwen/SmolLM, OPT, GPT-2, GPT-NeoX, MPT, multimodal
# wrappers); tried in order before the generic search.
_KNOWN_STACKS = (
    "model.layers",
    "model.decoder.layers",
    "model.language_model.layers",
    "language_model.model.layers",
    "transformer.h",
    "gpt_neox.layers",
    "transformer.blocks",
    "layers",
    "h",
    "blocks",
)


def _is_stack(module: nn.Module | None) -> bool:
    """A non-empty ModuleList of modules of one class that hold parameters."""
    if not isinstance(module, nn.ModuleList) or len(module) == 0:
        return False
    kinds = {type(m) for m in module}
    return len(kinds) == 1 and any(True for _ in module[0].parameters())


def decoder_layers(model: nn.Module) -> list[str]:
    """The names of the decoder layers of ``model``, in order (e.g. ``["model.layers.0", ...]``).

    The stack is the first of the usual transformers places (``model.layers``, ``transformer.h``,
    ``gpt_neox.layers``...) that holds a non-empty ``nn.ModuleList`` of same-class modules with parameters, else the
    first such list in ``model.named_modules()`` order (the outermost one, so not a mixture-of-experts list).

    Parameters
    ----------
    model
        A causal LM, e.g. ``transformers.AutoModelForCausalLM.from_pretrained(...)``.

    Returns
    -------
    list of str
        Module names for :func:`sparsecore.llm.hooks.resolve_module`.

    Raises
    ------
    InvalidArgumentError
        ``model`` is not a torch module, or has no decoder layers.
    """
    if not isinstance(model, nn.Module):
        raise InvalidArgumentError(f"model: must be a torch.nn.Module, got {type(model).__name__}")
    modules = dict(model.named_modules())
    stack = next((name for name in _KNOWN_STACKS if _is_stack(modules.get(name))), None)
    if stack is None:
        stack = next((name for name, mod in modules.items() if _is_stack(mod)), None)
    if stack is None:
        raise InvalidArgumentError(
            f"model: {type(model).__name__} has no decoder layers (no nn.ModuleList of same-class blocks); "
            "pass the layer names explicitly"
        )
    return [f"{stack}.{i}" if stack else str(i) for i in range(len(modules[stack]))]


def linear_layers(model: nn.Module, within: list[str]) -> list[str]:
    """Names of the ``nn.Linear`` modules inside the modules ``within`` (in ``named_modules`` order).

    Parameters
    ----------
    model
        Any torch module.
    within
        Names of container modules, e.g. :func:`decoder_layers`.

    Returns
    -------
    list of str
    """
    prefixes = tuple(f"{name}." for name in within)
    return [name for name, mod in model.named_modules() if isinstance(mod, nn.Linear) and name.startswith(prefixes)]
